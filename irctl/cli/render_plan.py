"""How ``irctl plan`` shows a plan in a terminal."""

from __future__ import annotations

import json

from rich.console import Console
from rich.panel import Panel

from irctl.cli._app import escape
from irctl.engine.plan import Plan
from irctl.runbook.model import Policy, format_duration


def describe_policy(policy: Policy) -> str:
    """``2 of treasury AND security-lead/cfo-delegate, not the initiator, expires 30m``."""
    if policy.groups:
        who = " AND ".join(
            (f"{g.min} of " if g.min > 1 else "") + "/".join(g.roles) for g in policy.groups
        )
        text = f"{policy.quorum} approvers: {who}"
    else:
        roles = policy.allowed_roles()
        text = f"{policy.quorum} of {', '.join(sorted(roles)) if roles else 'any operator'}"
    if policy.exclude_initiator:
        text += ", not the initiator"
    if policy.expires is not None:
        text += f", expires {format_duration(policy.expires)}"
    if policy.deny_count > 1:
        text += f", {policy.deny_count} denials cancel"
    return text


def render_plan(console: Console, plan: Plan) -> None:
    rb = plan.runbook
    head = f"[bold]{escape(rb.title)}[/bold] ({escape(rb.id)}, {rb.severity})  mode {plan.mode}"
    console.print(head)
    console.print(f"runbook {plan.runbook_digest}")
    if plan.params:
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in plan.params.items())
        console.print(f"params: {escape(shown)}")
    if rb.objectives:
        objectives = ", ".join(f"{k} ≤ {format_duration(v)}" for k, v in rb.objectives.items())
        console.print(f"objectives: {escape(objectives)}")
    console.print()
    number = 0
    section = "steps"
    for step in plan.steps:
        if step.section != section:
            section = step.section
            console.print("[bold]on failure:[/bold]")
        indent = "    " * step.depth
        if step.depth == 0:
            number += 1
            label = f"{number}."
        else:
            label = "‖"
        title = f" — {escape(step.title)}" if step.title else ""
        what = escape(step.action) if step.action else "parallel block"
        console.print(f"{indent}[bold]{label} {escape(step.id)}[/bold]{title}  [cyan]{what}[/cyan]")
        facts = []
        if step.integration:
            facts.append(f"integration {step.integration}")
        if step.approval is not None:
            facts.append(f"[magenta]approval {escape(str(step.approval_name))}: "
                         f"{escape(describe_policy(step.approval))}[/magenta]")  # fmt: skip
        if step.when is not None:
            verdict = {True: "runs", False: "skipped", None: "decided at run time"}[step.will_run]
            facts.append(f"when {escape(str(step.when))} → {verdict}")
        if step.for_each is not None:
            count = len(step.for_each) if isinstance(step.for_each, list) else "?"
            facts.append(f"for each of {count} items, {step.max_parallel} at a time")
        if step.timeout is not None:
            facts.append(f"timeout {format_duration(step.timeout)}")
        if step.retry:
            facts.append(f"retry {step.retry}")
        if step.on_failure != "abort":
            facts.append(f"on failure {step.on_failure}")
        if step.action:
            facts.append("idempotent" if step.idempotent else "not idempotent")
            if step.probe:
                facts.append("probe")
        if facts:
            console.print(f"{indent}   " + " · ".join(facts))
        if step.action:
            if step.waits_for:
                console.print(
                    f"{indent}   inputs resolved at run time (read {', '.join(step.waits_for)})"
                )
            if step.inputs is not None:
                text = json.dumps(step.inputs, indent=2, ensure_ascii=False)
                console.print(Panel(escape(text), expand=False, padding=(0, 1)), style="dim")
            if step.digest:
                console.print(f"{indent}   digest {step.digest}")
        if step.note:
            console.print(f"{indent}   [yellow]{escape(step.note)}[/yellow]")
