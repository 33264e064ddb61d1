"""Approval policies, and the durations every model writes as ``30s``, ``5m``, ``2h``, ``1d``.

Owns :class:`Policy` (who must approve a step, who can stop it) with :func:`eligible` and
:func:`impossible`, which the runbook checks, the engine's gate and the record all use.  In a
module of its own, beside :mod:`irctl.runbook.config`, so that counting the approvals a run
holds (``irctl status``) builds these two models and not every model of a runbook.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)


class _Model(BaseModel):
    """The base of every model of a runbook, a drill and the config: unknown fields refused,
    instances immutable.  Here, beside the policy models, so that counting approvals (``irctl
    status``) builds two models and not the config's."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

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

#: The most approvers a policy may ask for (quorum, a group's min, deny).
MAX_APPROVERS = 100


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
