"""Approvals: policies, separation of duties, and signed decisions.

An approval is a statement signed with the operator's own Ed25519 key over
exactly what runs — the run, the step, the digest of the step's fully resolved
inputs — and the decision, its time and reason.  The engine counts a decision
only if it is for the digest the step has *now*: if the inputs change, earlier
approvals do not count.

Events (data fields)::

    approval.requested  step, [item], digest, action, inputs, policy, rules, eligible,
                        requested_at, expires_at, replaces, changed
    approval.granted    the signed statement + key, sig, assurance, channel
    approval.denied     the same, decision "deny"
    approval.quorum     step, [item], digest, approvers, break_glass   (the gate opened)
    approval.cancelled  step, [item], digest, denied_by                (denials reached deny)
    approval.lapsed     step, [item], digest, expired_at
    run.review_item     step, text, by                                 (after break-glass)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from irctl.canonical import canonical_json
from irctl.errors import IrctlError
from irctl.events import parse_ts
from irctl.model import Policy

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REQUESTED = "approval.requested"
GRANTED = "approval.granted"
DENIED = "approval.denied"
QUORUM = "approval.quorum"
CANCELLED = "approval.cancelled"
LAPSED = "approval.lapsed"
REVIEW_ITEM = "run.review_item"
DECISIONS = (GRANTED, DENIED)

STATEMENT_FIELDS = (
    "run", "step", "item", "digest", "decision", "operator", "time", "reason", "break_glass",
)  # fmt: skip
ASSURANCE_RANK = {"slack": 1, "key": 2}


class ApprovalRejected(IrctlError):
    """An approval or denial that cannot be accepted (wrong person, wrong time, wrong key)."""

    exit_code = 2


def statement(data: Mapping[str, Any]) -> bytes:
    """The exact bytes an operator signs for a decision."""
    body = {name: data.get(name) for name in STATEMENT_FIELDS}
    return ("irctl-approval:v1:" + canonical_json(body)).encode("utf-8")


def sign_decision(key: Ed25519PrivateKey, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The event data of a decision signed with the operator's key (assurance ``key``)."""
    from irctl.identity import public_key_text, sign

    data = {name: fields.get(name) for name in STATEMENT_FIELDS}
    data.update(
        key=public_key_text(key),
        sig=sign(key, statement(data)),
        assurance="key",
        channel=fields.get("channel", "cli"),
    )
    return data


def signature_ok(data: Mapping[str, Any], public_key: str | None = None) -> bool:
    """Does ``data`` carry a valid signature by ``public_key`` (default: the key it names)?"""
    from irctl.identity import load_public_key, verify

    key_text = public_key or data.get("key")
    signature = data.get("sig")
    if not isinstance(key_text, str) or not isinstance(signature, str):
        return False
    if public_key is not None and data.get("key") != public_key:
        return False
    try:
        key = load_public_key(key_text)
    except IrctlError:
        return False
    return verify(key, statement(data), signature)


@dataclass(frozen=True)
class Decision:
    operator: str
    approve: bool
    time: str
    assurance: str
    break_glass: bool
    reason: str | None


@dataclass
class Verdict:
    state: str  # "approved", "denied", "pending"
    approvers: list[str] = field(default_factory=list)
    deniers: list[str] = field(default_factory=list)
    break_glass: bool = False
    missing: str = ""  # what is still needed, in words


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
    policy: Policy, roles_of: Mapping[str, Iterable[str]], initiator: str | None
) -> str | None:
    """Why no set of operators could ever satisfy ``policy``, or None if some could."""
    who = eligible(policy, roles_of, initiator)
    if len(who) < policy.quorum:
        excluded = " with the initiator excluded" if policy.exclude_initiator and initiator else ""
        return (
            f"quorum {policy.quorum} cannot be reached: only {len(who)} operator(s) may approve"
            f"{excluded} ({', '.join(who) or 'none'})"
        )
    for group in policy.groups:
        members = [n for n in who if set(roles_of[n]) & set(group.roles)]
        if len(members) < group.min:
            return (
                f"the group {'/'.join(group.roles)} needs {group.min} approver(s) but only "
                f"{len(members)} operator(s) hold those roles"
            )
    return None


def evaluate(
    policy: Policy,
    decisions: Iterable[Decision],
    *,
    roles_of: Mapping[str, Iterable[str]],
    initiator: str | None,
    break_glass_roles: Iterable[str] = (),
) -> Verdict:
    """Whether the decisions recorded for one digest open the gate, close it, or not yet.

    Decisions from people who may not decide are ignored (the CLI refuses them
    first; this is the second check).  Each operator counts once: their first
    decision stands.
    """
    allowed = policy.allowed_roles()
    glass = set(break_glass_roles)
    first: dict[str, Decision] = {}
    for decision in decisions:
        first.setdefault(decision.operator, decision)
    approvers: list[str] = []
    deniers: list[str] = []
    glass_by: list[str] = []
    for name, decision in first.items():
        roles = set(roles_of.get(name, ()))
        if name not in roles_of or (policy.exclude_initiator and name == initiator):
            continue
        if decision.approve and decision.break_glass:
            if policy.break_glass and roles & glass and decision.assurance == "key":
                glass_by.append(name)
            continue
        if allowed is not None and not roles & allowed:
            continue
        if ASSURANCE_RANK.get(decision.assurance, 0) < ASSURANCE_RANK[policy.min_assurance]:
            continue
        (approvers if decision.approve else deniers).append(name)
    if len(deniers) >= policy.deny_count:
        return Verdict("denied", approvers, deniers)
    if glass_by:
        return Verdict("approved", glass_by, deniers, break_glass=True)
    missing: list[str] = []
    if len(approvers) < policy.quorum:
        missing.append(f"{policy.quorum - len(approvers)} more approval(s)")
    for group in policy.groups:
        have = sum(1 for n in approvers if set(roles_of.get(n, ())) & set(group.roles))
        if have < group.min:
            missing.append(f"{group.min - have} from {'/'.join(group.roles)}")
    if missing:
        return Verdict("pending", approvers, deniers, missing="; ".join(missing))
    return Verdict("approved", approvers, deniers)


def expires_at(requested_at: str, policy: Policy) -> str | None:
    if policy.expires is None:
        return None
    moment = parse_ts(requested_at) + timedelta(seconds=policy.expires)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def changed_inputs(old: Any, new: Any, path: str = "") -> dict[str, list[Any]]:
    """What differs between two rendered inputs: {path: [old, new]}."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: dict[str, list[Any]] = {}
        for name in sorted(set(old) | set(new)):
            found.update(
                changed_inputs(old.get(name), new.get(name), f"{path}.{name}" if path else name)
            )
        return found
    if old != new:
        return {path or "(inputs)": [old, new]}
    return {}


def decision_from(data: Mapping[str, Any]) -> Decision:
    return Decision(
        operator=str(data.get("operator")),
        approve=data.get("decision") == "approve",
        time=str(data.get("time")),
        assurance=str(data.get("assurance", "")),
        break_glass=bool(data.get("break_glass")),
        reason=data.get("reason"),
    )
