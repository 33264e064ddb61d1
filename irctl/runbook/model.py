"""Typed, immutable models of runbooks, drills and the workspace config.

YAML becomes these models once, in :mod:`irctl.runbook.loader`; nothing downstream
touches raw dictionaries.  The models also give the JSON Schema
(``irctl schema``) that editors use to check runbooks as people type.

The workspace config (:mod:`irctl.runbook.config`) and approval policies with durations
(:mod:`irctl.runbook.policy`) live in modules of their own, so that the commands that only
read build only the models they need; they are re-exported here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from irctl.runbook.config import BreakGlass as BreakGlass  # noqa: PLC0414
from irctl.runbook.config import Config as Config  # noqa: PLC0414
from irctl.runbook.config import Identifier as Identifier  # noqa: PLC0414
from irctl.runbook.config import Operator as Operator  # noqa: PLC0414
from irctl.runbook.config import SecretRef as SecretRef  # noqa: PLC0414
from irctl.runbook.config import Trigger as Trigger  # noqa: PLC0414
from irctl.runbook.config import _Model
from irctl.runbook.policy import MAX_APPROVERS as MAX_APPROVERS  # noqa: PLC0414
from irctl.runbook.policy import MAX_DURATION as MAX_DURATION  # noqa: PLC0414
from irctl.runbook.policy import Duration as Duration  # noqa: PLC0414
from irctl.runbook.policy import Policy as Policy  # noqa: PLC0414
from irctl.runbook.policy import RoleGroup as RoleGroup  # noqa: PLC0414
from irctl.runbook.policy import eligible as eligible  # noqa: PLC0414
from irctl.runbook.policy import format_duration as format_duration  # noqa: PLC0414
from irctl.runbook.policy import impossible as impossible  # noqa: PLC0414
from irctl.runbook.policy import parse_duration as parse_duration  # noqa: PLC0414

FORMAT_VERSION = 1

#: The actions that wait for a person (irctl.builtins.manual): never ``auto``.
MANUAL_PREFIX = "manual."


ParamType = Literal["string", "number", "integer", "boolean", "list"]


class Param(_Model):
    """A typed input given on the command line as ``-p name=value``."""

    type: ParamType = "string"
    description: str | None = None
    required: bool | None = Field(
        default=None, description="defaults to true unless a default is given"
    )
    default: Any = None
    enum: list[Any] | None = None
    pattern: str | None = None
    minimum: float | None = Field(default=None, allow_inf_nan=False)
    maximum: float | None = Field(default=None, allow_inf_nan=False)
    items: ParamType | None = Field(default=None, description="type of the items of a list")

    @property
    def is_required(self) -> bool:
        if self.required is not None:
            return self.required
        return "default" not in self.model_fields_set


class Retry(_Model):
    attempts: int = Field(default=1, ge=1, le=100, description="total attempts, the first included")
    backoff: Duration = Field(default=1.0, description="wait before the 2nd attempt; doubles after")
    max_backoff: Duration = 300.0


class Repeat(_Model):
    """Run the step again every ``every`` until ``until`` is true, at most ``max`` rounds.

    Without ``until`` the step succeeds after ``max`` rounds (a periodic update); with it,
    ``max`` rounds without ``until`` becoming true fail the step.  Each round is recorded
    (``step.repeating``), so a crash neither repeats a round nor restarts the wait.
    """

    every: Duration = Field(description="the wait between the end of a round and the next")
    until: str | None = Field(
        default=None,
        description="a template read after each round: 'outputs' is the round's outputs, "
        "'round' its number (from 1); the step succeeds when it is true",
    )
    max: int = Field(ge=1, le=10_000, description="rounds at most, the first included")

    @field_validator("every")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("'every' must be a positive duration, such as 15m")
        return value


class Step(_Model):
    """One step of a runbook: an action, or a ``parallel`` block of steps."""

    id: Identifier
    title: str | None = None
    description: str | None = None
    action: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", description="ns.name"
    )
    parallel: list[Step] | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | bool | None = None
    for_each: str | list[Any] | None = None
    max_parallel: int = Field(default=1, ge=1, le=1000)
    approval: str | Policy | None = None
    timeout: Duration | None = None
    retry: Retry | None = None
    repeat: Repeat | None = None
    on_failure: Literal["abort", "continue"] = "abort"
    tags: list[str] = Field(default_factory=list)
    idempotent: bool | None = None
    skip: Literal["allowed", "never"] = Field(
        default="allowed",
        description="never: nobody may skip this step by hand (irctl skip), whatever their role",
    )
    auto: bool = Field(
        default=False,
        description="true: a run started by an alert (triggers: in irctl.yaml) runs this step "
        "before anyone adopts the run; containment that needs no approval and no person",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if (self.action is None) == (self.parallel is None):
            raise ValueError("a step needs exactly one of 'action' or 'parallel'")
        if self.parallel is not None:
            if not self.parallel:
                raise ValueError("'parallel' needs at least one step")
            if self.for_each is not None or self.with_:
                raise ValueError("'for_each' and 'with' belong on an action step, not 'parallel'")
            if self.approval is not None:  # a block has no inputs to approve: never skip a gate
                raise ValueError(
                    "'approval' belongs on the action steps inside 'parallel', not on the block"
                )
        if self.repeat is not None:
            if self.parallel is not None or self.for_each is not None:
                raise ValueError(
                    "'repeat' belongs on a single action step, not on 'parallel' or 'for_each'"
                )
            if self.approval is not None:
                raise ValueError(
                    "a step with 'repeat' cannot carry an 'approval': each round "
                    "would act on one approval; approve a step of its own before it"
                )
        if self.auto:
            self._auto_allowed()
        return self

    def _auto_allowed(self) -> None:
        """``auto: true`` only where no person is needed: an alert starts it unattended."""
        if self.parallel is not None:
            raise ValueError("'auto' belongs on the action steps inside 'parallel', not on "
                             "the block")
        if self.approval is not None:
            raise ValueError("a step with 'auto: true' cannot carry an 'approval': an alert "
                             "starts it before anyone could approve; drop one of the two")
        if (self.action or "").startswith(MANUAL_PREFIX):
            raise ValueError(f"a manual step ({self.action}) cannot be 'auto: true': it waits "
                             "for a person, and an alert-started run has none until adopted")

    def walk(self) -> list[Step]:
        """This step and every step nested in it, in order."""
        found = [self]
        for child in self.parallel or []:
            found.extend(child.walk())
        return found


class Start(_Model):
    """Who may start a live run of a runbook: an operator holding one of ``roles``, proven
    by a statement signed with their own key (tabletop drills stay open to every operator)."""

    roles: list[str] = Field(min_length=1, description="any of these roles may start a live run")


class SkipRule(_Model):
    """Who may skip a step of a run by hand (``irctl skip``): an operator holding one of
    ``roles``, signed with their own key; never a step marked ``skip: never``."""

    roles: list[str] = Field(min_length=1, description="any of these roles may skip a step")


class Runbook(_Model):
    """A breach response, step by step."""

    irctl: Literal[1] = Field(description="format version")
    kind: Literal["runbook"] = "runbook"
    id: Identifier
    title: str
    summary: str | None = None
    description: str | None = None
    severity: Literal["sev1", "sev2", "sev3", "sev4"] = "sev2"
    owners: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    objectives: dict[str, Duration] = Field(default_factory=dict)
    params: dict[str, Param] = Field(default_factory=dict)
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    approvals: dict[str, Policy] = Field(default_factory=dict)
    start: Start | None = Field(
        default=None, description="who may start a live run (default: any operator)"
    )
    skip: SkipRule | None = Field(
        default=None,
        description="who may skip a waiting, failed or in-doubt step by hand (default: nobody)",
    )
    exclude_operators: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="operators who may not start, approve, deny, answer, mark or abort a run of "
        "this runbook, even with break-glass: names, or templates over params such as "
        "'{{ params.suspect_operator }}' (a suspect in the incident the run answers)",
    )
    steps: list[Step] = Field(min_length=1)
    on_failure: list[Step] = Field(default_factory=list)

    def all_steps(self) -> list[Step]:
        """Every step, nested ones included, in the order written (``on_failure`` last)."""
        found: list[Step] = []
        for step in [*self.steps, *self.on_failure]:
            found.extend(step.walk())
        return found


class Schedule(_Model):
    cron: str
    timezone: str = "UTC"


class Inject(_Model):
    at: Duration
    say: str


class Objective(_Model):
    step: str | None = None
    approval: str | None = None
    within: Duration

    @model_validator(mode="after")
    def _one_target(self) -> Objective:
        if (self.step is None) == (self.approval is None):
            raise ValueError("an objective names exactly one of 'step' or 'approval'")
        return self


class Drill(_Model):
    """A rehearsal of a runbook, on a schedule, scored against objectives."""

    irctl: Literal[1]
    kind: Literal["drill"]
    id: Identifier
    title: str
    runbook: Identifier
    mode: Literal["tabletop", "sandbox"] = "tabletop"
    schedule: Schedule | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    participants: list[str] = Field(default_factory=list)
    injects: list[Inject] = Field(default_factory=list)
    objectives: list[Objective] = Field(default_factory=list)


Document = Runbook | Drill
