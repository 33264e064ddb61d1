"""Typed, immutable models of runbooks, drills and the workspace config.

YAML becomes these models once, in :mod:`irctl.runbook.loader`; nothing downstream
touches raw dictionaries.  The models also give the JSON Schema
(``irctl schema``) that editors use to check runbooks as people type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

FORMAT_VERSION = 1

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


#: The longest duration a runbook, drill or config may give. Anything longer is a typo (and
#: would overflow the timers the engine hands it to), so it is refused when the file is checked.
MAX_DURATION = 366 * 86400.0


def parse_duration(value: object, *, longest: float = MAX_DURATION) -> float:
    """``30s``, ``5m``, ``2h``, ``1d`` (or a plain number of seconds) as seconds, at most
    ``longest`` (a timer's 366d; a retention period may be given a longer one)."""
    if isinstance(value, bool):
        raise ValueError("a duration is written like 30s, 5m, 2h or 1d")
    seconds: float | None = None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; give a finite number of seconds")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m, 2h or 1d")
    if seconds > longest:
        raise ValueError(
            f"{value!r} is longer than the longest allowed duration, {format_duration(longest)}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)$",
            "description": "a duration: 30s, 5m, 2h, 1d",
        }
    ),
]

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=100)]
SecretRef = Annotated[
    str,
    Field(
        pattern=r"^(env|file|aws-sm):.+$",
        description="where the secret lives: env:VAR, file:PATH or aws-sm:NAME[#key]",
    ),
]


#: The actions that wait for a person (irctl.builtins.manual): never ``auto``.
MANUAL_PREFIX = "manual."

#: The most approvers a policy may ask for (quorum, a group's min, deny).
MAX_APPROVERS = 100


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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


class RoleGroup(_Model):
    """At least ``min`` approvers holding any of ``roles``."""

    roles: list[str] = Field(min_length=1)
    min: int = Field(default=1, ge=1, le=MAX_APPROVERS)


class Policy(_Model):
    """Who must approve a step before it runs, and who can stop it."""

    quorum: int = Field(
        default=1, ge=1, le=MAX_APPROVERS, description="distinct operators who must approve"
    )
    roles: list[str] = Field(
        default_factory=list,
        description="any of these roles may approve (empty: the roles of the groups, or anyone)",
    )
    groups: list[RoleGroup] = Field(
        default_factory=list,
        description="every group must be met (AND); within a group any role will do (OR)",
    )
    exclude_initiator: bool = True
    expires: Duration | None = Field(default=None, description="an unused approval lapses")
    deny: Literal["any"] | Annotated[int, Field(ge=1, le=MAX_APPROVERS)] = Field(
        default="any", description="denials that cancel the step: 'any' (one) or a number"
    )
    min_assurance: Literal["key", "slack"] = Field(
        default="key",
        description="key: signed with the operator's own key; slack: a verified Slack identity",
    )
    break_glass: bool = Field(
        default=True, description="whether a break-glass approval may satisfy this policy"
    )
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.deny != "any" and self.deny > self.quorum:
            raise ValueError(
                f"deny ({self.deny}) must not need more people than quorum ({self.quorum}): "
                "cancelling a pending step must be easier than approving it"
            )
        needed = sum(group.min for group in self.groups)
        if needed > self.quorum:
            raise ValueError(f"the groups need {needed} approvers but quorum is {self.quorum}")
        return self

    @property
    def deny_count(self) -> int:
        return 1 if self.deny == "any" else int(self.deny)

    def allowed_roles(self) -> set[str] | None:
        """Roles that may approve; None means any operator."""
        if self.roles:
            return set(self.roles)
        if self.groups:
            return {role for group in self.groups for role in group.roles}
        return None


def eligible(
    policy: Policy, roles_of: Mapping[str, Iterable[str]], initiator: str | None
) -> list[str]:
    """Operators who may approve under ``policy`` (the initiator left out when excluded)."""
    allowed = policy.allowed_roles()
    names = []
    for name, roles in roles_of.items():
        if policy.exclude_initiator and name == initiator:
            continue
        if allowed is None or allowed & set(roles):
            names.append(name)
    return sorted(names)


def impossible(
    policy: Policy,
    roles_of: Mapping[str, Iterable[str]],
    initiator: str | None,
    *,
    keyed: Iterable[str] | None = None,
) -> str | None:
    """Why no set of operators could ever satisfy ``policy``, or None if some could.

    ``keyed`` names the operators with a public key: when the policy needs
    signed approvals, only they can count.
    """
    if keyed is not None and policy.min_assurance == "key":
        with_key = set(keyed)
        roles_of = {name: roles for name, roles in roles_of.items() if name in with_key}
    who = eligible(policy, roles_of, initiator)
    if len(who) < policy.quorum:
        excluded = " with the initiator excluded" if policy.exclude_initiator and initiator else ""
        keys = " with a key" if keyed is not None and policy.min_assurance == "key" else ""
        return (
            f"quorum {policy.quorum} cannot be reached: only {len(who)} operator(s){keys} may "
            f"approve{excluded} ({', '.join(who) or 'none'})"
        )
    for group in policy.groups:
        members = [n for n in who if set(roles_of[n]) & set(group.roles)]
        if len(members) < group.min:
            return (
                f"the group {'/'.join(group.roles)} needs {group.min} approver(s) but only "
                f"{len(members)} operator(s) hold those roles"
            )
    return None


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
                raise ValueError("'approval' belongs on the action steps inside 'parallel', "
                                 "not on the block")
        if self.repeat is not None:
            if self.parallel is not None or self.for_each is not None:
                raise ValueError("'repeat' belongs on a single action step, not on 'parallel' "
                                 "or 'for_each'")
            if self.approval is not None:
                raise ValueError("a step with 'repeat' cannot carry an 'approval': each round "
                                 "would act on one approval; approve a step of its own before it")
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


class Operator(_Model):
    roles: list[str] = Field(default_factory=list)
    slack: str | None = None
    key: str | None = Field(default=None, pattern=r"^ed25519:[A-Za-z0-9+/=]+$")


class BreakGlass(_Model):
    """Who may approve alone in an emergency (loudly recorded, reviewed afterwards)."""

    roles: list[str] = Field(default_factory=list)


TriggerSource = Literal["generic", "alertmanager", "pagerduty", "sns"]

#: The largest alert body ``irctl serve`` reads by default (a trigger's ``max_body``).
DEFAULT_MAX_BODY = 256 * 1024


class Trigger(_Model):
    """An alert that starts a runbook: ``POST /alerts/NAME`` on ``irctl serve``.

    Values in ``match``, ``params`` and ``incident`` are read from the alert: a
    template over ``alert`` (``{{ alert.labels.wallet }}``, sandboxed), or a plain
    field path (``labels.wallet``) for ``match`` keys.
    """

    source: TriggerSource = Field(description="who sends the alert and how it is authenticated")
    secret: SecretRef = Field(
        description="the shared secret: the HMAC key (generic, pagerduty) or the bearer token "
        "or user:password (alertmanager)"
    )
    runbook: Identifier = Field(description="the runbook a matching alert starts")
    match: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="field path (labels.severity, fields.chain, summary) -> the value it must "
        "equal; every entry must match (empty: every alert matches)",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the runbook's params, each a template over 'alert' or a constant",
    )
    incident: str = Field(
        default="{{ alert.id }}",
        min_length=1,
        max_length=500,
        description="a template over 'alert' giving the incident key: a second alert for the "
        "same incident is recorded on the first one's run instead of starting another",
    )
    max_body: int = Field(
        default=DEFAULT_MAX_BODY, ge=1024, le=16 * 1024 * 1024, description="bytes, at most"
    )
    description: str | None = None


class Config(_Model):
    """The workspace config, ``irctl.yaml``."""

    store: str = "sqlite:///.irctl/irctl.db"
    installation_key: str | None = Field(
        default=None,
        pattern=r"^ed25519:[A-Za-z0-9+/=]+$",
        description="public half of the key that signs transcript checkpoints",
    )
    operators: dict[Identifier, Operator] = Field(default_factory=dict)
    break_glass: BreakGlass = Field(default_factory=BreakGlass)
    integrations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="for sandbox runs only: references that replace the runbooks' secrets of "
        "the same name (a sandbox never reads a production secret)",
    )
    triggers: dict[Identifier, Trigger] = Field(
        default_factory=dict,
        description="alerts that start runbooks through irctl serve (POST /alerts/NAME)",
    )


Document = Runbook | Drill
