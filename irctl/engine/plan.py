"""The plan: every step of a run, resolved, before anything runs.

Each step's inputs are rendered into their fully resolved form and hashed; that
digest is what an approver approves and what the transcript records.  Secrets
are never resolved for a plan, and a field rendered from a secret shows as ``••••``
as a whole, as the run records it (:func:`irctl.runbook.render.render_shown`).  Inputs that read an
earlier step's outputs can only be resolved when that step has run: the plan
says which steps they wait for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from irctl.actions import Registry, default_registry
from irctl.canonical import step_digest as step_digest  # noqa: PLC0414 - re-exported
from irctl.errors import IntegrationError, IrctlError
from irctl.runbook.model import Config, Policy, Runbook, Step, format_duration
from irctl.runbook.render import (
    REDACTED,
    RenderError,
    SecretValues,
    digest,
    mentions,
    referenced,
    render,
    render_shown,
    template_strings,
)

#: What a field may name besides ``secrets`` that makes it secret: the item of a for_each built
#: from secrets.
SECRET_ITEM = frozenset({"item"})

# Values that only exist once a run is created: a plan shows placeholders for them.
RUN_SPECIFIC = {"id", "initiator", "started_at", "failed_step"}


def template_context(
    *,
    params: dict[str, Any],
    secrets: dict[str, str],
    vars: dict[str, Any],
    run: dict[str, Any],
    steps: Mapping[str, dict[str, Any]],
    item: Any = None,
    has_item: bool = False,
) -> dict[str, Any]:
    context = {
        "params": params, "secrets": SecretValues(secrets), "vars": vars, "run": run,
        "steps": steps,
    }  # fmt: skip
    if has_item:
        context["item"] = item
    return context


def resolve_policy(runbook: Runbook, step: Step) -> tuple[str | None, Policy | None]:
    if step.approval is None:
        return None, None
    if isinstance(step.approval, Policy):
        return "inline", step.approval
    policy = runbook.approvals.get(step.approval)
    if policy is None:
        raise IrctlError(f"step '{step.id}': unknown approval policy '{step.approval}'")
    return step.approval, policy


@dataclass
class PlannedStep:
    id: str
    title: str | None
    depth: int
    section: str  # "steps" or "on_failure"
    action: str | None = None
    integration: str | None = None
    inputs: Any = None
    digest: str | None = None
    waits_for: list[str] = field(default_factory=list)  # steps whose outputs the inputs read
    when: str | bool | None = None
    will_run: bool | None = True  # False: `when` is false now; None: decided at run time
    for_each: list[Any] | str | None = None
    max_parallel: int = 1
    approval_name: str | None = None
    approval: Policy | None = None
    idempotent: bool | None = None
    probe: bool = False
    timeout: float | None = None
    retry: str | None = None
    on_failure: str = "abort"
    tags: list[str] = field(default_factory=list)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "depth": self.depth, "section": self.section,
            "action": self.action, "integration": self.integration, "inputs": self.inputs,
            "digest": self.digest, "waits_for": self.waits_for, "when": self.when,
            "will_run": self.will_run, "for_each": self.for_each,
            "max_parallel": self.max_parallel,
            "approval": (
                None if self.approval is None
                else {"policy": self.approval_name, **self.approval.model_dump(mode="json")}
            ),
            "idempotent": self.idempotent, "probe": self.probe,
            "timeout": format_duration(self.timeout) if self.timeout is not None else None,
            "retry": self.retry, "on_failure": self.on_failure, "tags": self.tags,
            "note": self.note,
        }  # fmt: skip


@dataclass
class Plan:
    runbook: Runbook
    runbook_digest: str
    params: dict[str, Any]
    mode: str
    steps: list[PlannedStep]

    def as_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook.id,
            "title": self.runbook.title,
            "runbook_digest": self.runbook_digest,
            "mode": self.mode,
            "params": self.params,
            "objectives": {k: format_duration(v) for k, v in self.runbook.objectives.items()},
            "steps": [s.as_dict() for s in self.steps],
        }


def make_plan(
    runbook: Runbook,
    params: dict[str, Any],
    *,
    runbook_digest: str,
    config: Config | None = None,
    registry: Registry | None = None,
    mode: str = "live",
    run: dict[str, Any] | None = None,
) -> Plan:
    """Resolve every step of ``runbook`` with ``params``; nothing runs, no secret is read."""
    registry = registry or default_registry
    config = config or Config()
    secrets = dict.fromkeys(runbook.secrets, REDACTED)
    shown = params
    run_info = run or {
        "id": "(new run)", "runbook": runbook.id, "mode": mode, "incident": None,
        "initiator": "(the initiator)", "started_at": "(its start)",
        "failed_step": "(the failed step)",
    }  # fmt: skip  # what a run fills in, named, never "None" in a planned text
    base = template_context(params=shown, secrets=secrets, vars=config.vars, run=run_info, steps={})
    planned: list[PlannedStep] = []

    def visit(step: Step, depth: int, section: str) -> None:
        planned.append(_planned(runbook, registry, base, step, depth, section))
        for child in step.parallel or []:
            visit(child, depth + 1, section)

    for step in runbook.steps:
        visit(step, 0, "steps")
    for step in runbook.on_failure:
        visit(step, 0, "on_failure")
    return Plan(runbook, runbook_digest, shown, mode, planned)


def _planned(
    runbook: Runbook,
    registry: Registry,
    base: dict[str, Any],
    step: Step,
    depth: int,
    section: str,
) -> PlannedStep:
    """One step of the plan, resolved as far as it can be before the run."""
    name, policy = resolve_policy(runbook, step)
    item = PlannedStep(
        id=step.id, title=step.title, depth=depth, section=section, action=step.action,
        when=step.when, max_parallel=step.max_parallel, approval_name=name,
        approval=policy, timeout=step.timeout, on_failure=step.on_failure,
        tags=list(step.tags),
    )  # fmt: skip
    if step.retry is not None:
        backoff = format_duration(step.retry.backoff)
        item.retry = f"{step.retry.attempts} attempts, backoff {backoff}"
    sources = [
        *template_strings(step.with_),
        *template_strings(step.when if isinstance(step.when, str) else None),
        *template_strings(step.for_each if isinstance(step.for_each, str) else None),
    ]
    item.waits_for = sorted({ref for src in sources for ref in referenced(src, "steps")})
    per_run = sorted({ref for src in sources for ref in referenced(src, "run")} & RUN_SPECIFIC)
    if step.action is not None:
        item.integration = step.action.split(".", 1)[0]
        try:
            act = registry.get(step.action)
            item.idempotent = step.idempotent if step.idempotent is not None else act.idempotent
            item.probe = act.has_probe
        except IntegrationError as exc:
            item.note = str(exc)
            item.idempotent = step.idempotent
    if not item.waits_for:
        _resolve_now(item, step, base)
    else:
        item.will_run = None
        item.inputs = step.with_
        if isinstance(step.for_each, str):
            item.for_each = step.for_each
    if per_run and item.digest is not None:
        fields = ", ".join(f"run.{name}" for name in per_run)
        item.note = f"inputs read {fields}: the digest is final when the run starts"
    return item


def _resolve_now(item: PlannedStep, step: Step, base: dict[str, Any]) -> None:
    """Render a step that reads no earlier step's outputs: whether it will run, its items,
    its inputs and their digest (a template that fails is noted, decided at run time)."""
    try:
        if isinstance(step.when, str):
            item.will_run = bool(render(step.when, base))
        elif isinstance(step.when, bool):
            item.will_run = step.when
        items: Any = None
        secret_items = mentions(step.for_each, "secrets")
        if step.for_each is not None:
            items = render(step.for_each, base)
            if not isinstance(items, list):
                raise RenderError(f"for_each must give a list, got {type(items).__name__}")
            item.for_each = [REDACTED] * len(items) if secret_items else items
        if step.action is not None and step.for_each is None:
            item.inputs = render_shown(step.with_, base)[1]
            item.digest = step_digest(step.id, step.action, item.inputs)
        elif step.action is not None and isinstance(items, list):
            tainted = SECRET_ITEM if secret_items else frozenset()
            rendered = [
                render_shown(step.with_, {**base, "item": value}, tainted=tainted)[1]
                for value in items
            ]
            item.inputs = rendered
            item.digest = digest(
                [
                    step_digest(step.id, step.action, inputs, index)
                    for index, inputs in enumerate(rendered)
                ]
            )
    except RenderError as exc:
        item.note = str(exc)
        item.will_run = None
