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
from irctl.errors import CorruptEvent, IrctlError
from irctl.journal import events as ev
from irctl.journal.events import parse_ts

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.journal.events import Event
    from irctl.journal.filereader import Reading
    from irctl.journal.state import RunState
    from irctl.journal.store import Store
    from irctl.runbook.policy import Policy

# The approval events, as the journal names them.
REQUESTED = ev.APPROVAL_REQUESTED
GRANTED = ev.APPROVAL_GRANTED
DENIED = ev.APPROVAL_DENIED
QUORUM = ev.APPROVAL_QUORUM
CANCELLED = ev.APPROVAL_CANCELLED
LAPSED = ev.APPROVAL_LAPSED
REVIEW_ITEM = ev.REVIEW_ITEM
DECISIONS = (GRANTED, DENIED)

STATEMENT_FIELDS = (
    "run", "step", "item", "digest", "decision", "operator", "time", "reason", "break_glass",
)  # fmt: skip
ASSURANCE_RANK = {"slack": 1, "key": 2}
START_FIELDS = ("run", "runbook_digest", "params", "mode", "incident", "initiator")


class ApprovalRejected(IrctlError):
    """An approval or denial that cannot be accepted (wrong person, wrong time, wrong key)."""

    exit_code = 2


def statement(data: Mapping[str, Any]) -> bytes:
    """The exact bytes an operator signs for a decision."""
    body = {name: data.get(name) for name in STATEMENT_FIELDS}
    return ("irctl-approval:v1:" + canonical_json(body)).encode("utf-8")


def start_statement(data: Mapping[str, Any]) -> bytes:
    """The exact bytes the initiator signs to start a live run (in a workspace with operators)."""
    body = {name: data.get(name) for name in START_FIELDS}
    if data.get("selection") is not None:  # a run of part of the runbook (--only/--skip)
        body["selection"] = data["selection"]
    return ("irctl-start:v1:" + canonical_json(body)).encode("utf-8")


def start_problem(
    start: Mapping[str, Any] | None,
    created: Mapping[str, Any],
    run_id: str,
    allowed: Iterable[str] | None,
    roles: Iterable[str],
    key: str | None,
) -> str | None:
    """Why a run's recorded start does not prove that its initiator, holding ``key`` (as
    irctl.yaml lists it) and ``roles``, started it under a ``start:`` that ``allowed`` them
    (``allowed`` None: the runbook names no roles, and any operator may start it)."""
    from irctl.identity import load_public_key, verify

    who = created.get("initiator")
    if allowed is not None and not set(roles) & set(allowed):
        return (
            f"{who} (roles: {', '.join(sorted(roles)) or 'none'}) may not start this runbook: "
            f"start.roles allows {', '.join(sorted(allowed))}"
        )
    if not key:
        return f"{who} has no key in irctl.yaml, and starting this runbook needs one"
    if not isinstance(start, Mapping):
        return (
            f"the start of run {run_id} is not signed by {who}'s key: its record was rewritten, "
            "or the run was started by an older irctl, before starts were signed"
        )
    if start.get("key") != key:
        return f"the start of run {run_id} is not signed by {who}'s key"
    signature = start.get("sig")
    body = {**created, "run": run_id}  # start_statement takes the fields it signs
    try:
        public = load_public_key(key)
    except IrctlError:
        return f"{who}'s key in irctl.yaml is not a valid Ed25519 public key"
    if not isinstance(signature, str) or not verify(public, start_statement(body), signature):
        return f"the start of run {run_id} is not signed by {who}'s key (the signature fails)"
    return None


# -- a run an alert started: the trigger's start, sealed by the installation key -------------

TRIGGER_PREFIX = "trigger:"


def trigger_statement(data: Mapping[str, Any]) -> bytes:
    """The exact bytes the installation key signs to start a run for an alert: the fields a
    person's start covers, and the trigger (its name, the alert's id and detection time)."""
    body: dict[str, Any] = {name: data.get(name) for name in START_FIELDS}
    body["trigger"] = data.get("trigger")
    return ("irctl-trigger-start:v1:" + canonical_json(body)).encode("utf-8")


def trigger_start_problem(
    created: Mapping[str, Any],
    run_id: str,
    keys: Iterable[str] | None,
    triggers: Mapping[str, str] | None = None,
) -> str | None:
    """Why a run whose initiator is ``trigger:NAME`` was not started by irctl for an alert:
    its start is not signed by one of the installation ``keys`` (None: the key it names, a
    weaker check), or ``triggers`` (name -> runbook id, as irctl.yaml has them) has no such
    trigger for this runbook."""
    from irctl.identity import load_public_key, verify

    who = str(created.get("initiator"))
    name = who.removeprefix(TRIGGER_PREFIX)
    trigger, start = created.get("trigger"), created.get("start")
    if not isinstance(trigger, Mapping) or trigger.get("name") != name:
        return f"run {run_id} names {who} as its initiator but records no such trigger"
    if triggers is not None and triggers.get(name) != created.get("runbook"):
        return (
            f"run {run_id} was started by trigger {name!r}, which irctl.yaml does not list for "
            f"runbook {created.get('runbook')!r}"
        )
    if not isinstance(start, Mapping) or start.get("trigger") != name:
        return f"the start of run {run_id} is not signed for trigger {name!r}"
    key, signature = start.get("key"), start.get("sig")
    allowed = list(keys) if keys is not None else [key]
    if not isinstance(key, str) or key not in allowed:
        return f"the start of run {run_id} is not signed by the installation key"
    try:
        public = load_public_key(key)
    except IrctlError:
        return f"the start of run {run_id} names a key that is not a valid Ed25519 public key"
    body = {**created, "run": run_id}
    if not isinstance(signature, str) or not verify(public, trigger_statement(body), signature):
        return f"the start of run {run_id} does not verify with the installation key"
    return None


# -- a person's acts in a live run: answers, marks and aborts --------------------------------

#: The events that record a person's act, and the name each act has in its statement.
ACTS = {  # ev.ACTS
    "step.answered": "answer", "step.resolved": "mark", "run.aborted": "abort",
    "run.retried": "retry", "step.waived": "skip", "run.adopted": "adopt",
}  # fmt: skip
ACT_FIELDS = ("run", "act", "step", "item", "value", "by", "time", "reason")
#: ``run.created`` records ``acts: "signed"``: in a live run with operators, each answer,
#: mark and abort is then signed with the key of the operator who made it.
SIGNED_ACTS = "signed"


def act_statement(run_id: str, kind: str, data: Mapping[str, Any]) -> bytes:
    """The exact bytes an operator signs for an answer, a mark or an abort."""
    value = {"step.answered": data.get("answer"), "run.retried": data.get("steps")}.get(
        kind, data.get("mark")
    )
    body = {
        "run": run_id, "act": ACTS[kind], "step": data.get("step"), "item": data.get("item"),
        "value": value, "by": data.get("by"), "time": data.get("time"),
        "reason": data.get("reason"),
    }  # fmt: skip
    return ("irctl-act:v1:" + canonical_json(body)).encode("utf-8")


def sign_act(
    key: Ed25519PrivateKey, run_id: str, kind: str, data: Mapping[str, Any]
) -> dict[str, Any]:
    """``data`` (already masked: the signature covers what is kept) signed by ``key``."""
    from irctl.identity import public_key_text, sign
    from irctl.journal.events import utcnow

    signed = {**data, "time": data.get("time") or utcnow()}
    signed["key"] = public_key_text(key)
    signed["sig"] = sign(key, act_statement(run_id, kind, signed))
    return signed


def acts_must_be_signed(created: Mapping[str, Any]) -> bool:
    """Does the run (its ``run.created`` data) demand signed answers, marks and aborts?

    A live run started with operators configured: a person's word there lets a step go on
    (or stops the run), so it must prove who gave it.  Tabletop and sandbox runs stay open
    to anyone listed as an operator; a workspace without operators has nobody's key to
    check (its acts are sealed by the installation key, as every event is).
    """
    return (
        created.get("acts") == SIGNED_ACTS
        and created.get("mode") == "live"
        and isinstance(created.get("operators"), Mapping)
        and bool(created.get("operators"))
    )


def act_problem(
    run_id: str,
    kind: str,
    data: Mapping[str, Any],
    operators: Mapping[str, Any],
    *,
    required: bool,
) -> str | None:
    """Why a recorded answer, mark or abort is not the signed act of the operator it names
    (checked against their key as ``operators`` — the run's pinned operators — hold it)."""
    from irctl.identity import load_public_key, verify
    from irctl.journal.events import ENGINES_OWN

    if kind == "step.resolved" and data.get("by") in ENGINES_OWN:
        return None
    who = data.get("by")
    what = ACTS[kind]
    if "sig" not in data and "key" not in data:
        if not required:
            return None
        return (
            f"the {what} by {who} is not signed: in a live run each answer, mark and abort is "
            "signed with the key of the operator who gave it"
        )
    operator = operators.get(who) if isinstance(who, str) else None
    if not isinstance(operator, Mapping):
        return f"the {what} is by {who!r}, who is not one of the operators recorded at run start"
    recorded = operator.get("key")
    if not isinstance(recorded, str):
        return f"the {what} claims {who}'s signature, but {who} had no key recorded at run start"
    if data.get("key") != recorded:
        return f"the {what} by {who} is signed with a key other than {who}'s at run start"
    signature = data.get("sig")
    try:
        public = load_public_key(recorded)
    except IrctlError:
        return f"{who}'s key recorded at run start is not a valid Ed25519 public key"
    if not isinstance(signature, str) or not verify(
        public, act_statement(run_id, kind, data), signature
    ):
        return (
            f"the {what} by {who} does not verify with {who}'s key (the signed statement was "
            "altered, or the signature forged)"
        )
    return None


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


def evaluate(
    policy: Policy,
    decisions: Iterable[Decision],
    *,
    roles_of: Mapping[str, Iterable[str]],
    initiator: str | None,
    break_glass_roles: Iterable[str] = (),
    excluded: Iterable[str] = (),
) -> Verdict:
    """Whether the decisions recorded for one digest open the gate, close it, or not yet.

    Decisions from people who may not decide are ignored (the CLI refuses them
    first; this is the second check): among them the runbook's ``exclude_operators``
    (``excluded``), whose approvals, denials and break-glass never count.  Each operator
    counts once: their first decision stands.
    """
    allowed = policy.allowed_roles()
    glass = set(break_glass_roles)
    barred = set(excluded)
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
        if name in barred:
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


def open_request(state: RunState, key: str) -> dict[str, Any]:
    """The approval request step ``key`` of the run waits on; ApprovalRejected if none is open."""
    if state.finished:
        raise ApprovalRejected(f"run {state.run_id} has already {state.status}")
    step = state.steps.get(key)
    request = step.approval if step is not None else None
    if step is None or request is None or step.approved or request.get("closed"):
        waiting = [
            s.key for s in state.steps.values()
            if s.approval is not None and not s.approved and not s.approval.get("closed")
        ]  # fmt: skip
        hint = f"; waiting for approval: {', '.join(waiting)}" if waiting else ""
        raise ApprovalRejected(
            f"step '{key}' of run {state.run_id} is not waiting for approval{hint}"
        )
    return request


#: Seconds an operator's clock may be behind the engine's.  A decision signed earlier than
#: that before the request it follows belongs to an earlier request and never counts for
#: this one (:func:`signed_for`); ``irctl approve`` on a machine whose
#: clock is that far behind is refused with a word about the clock.
CLOCK_SKEW = 2.0


def signed_for(decision: Mapping[str, Any], request: Mapping[str, Any]) -> bool:
    """Was this signed decision made for this request, by its signed time?

    An earlier request for the same digest (one that lapsed, or was asked again) has its own
    decisions; a copy of one appended after a later request — by anyone who can write the
    database, no key needed — must not count for it.  The decision's ``time`` is covered by
    the operator's signature; the request's ``requested_at`` and ``expires_at`` by the
    journal.  A time that cannot be read counts for nothing.  The engine's gate and
    ``irctl transcript verify`` both apply it.
    """
    from irctl.journal.events import parse_ts

    try:
        signed = parse_ts(str(decision.get("time"))).timestamp()
        asked = parse_ts(str(request.get("requested_at"))).timestamp()
        expires = request.get("expires_at")
        until = parse_ts(str(expires)).timestamp() if expires is not None else None
    except (TypeError, ValueError):
        return False
    if signed < asked - CLOCK_SKEW:
        return False
    return until is None or signed <= until + CLOCK_SKEW


def still_undecided(events: list[Event], key: str, operator: str, digest: str) -> None:
    """ApprovalRejected unless ``key`` still has an open request of ``digest`` on which
    ``operator`` has not decided, in ``events`` as they are now: checked again just before
    a decision is appended, so one made meanwhile by the same person elsewhere (a second
    terminal, a Slack click) is refused instead of recorded twice."""
    from irctl.journal.state import fold

    state = fold(events)
    request = open_request(state, key)
    if request.get("digest") != digest:
        raise ApprovalRejected(
            f"the inputs of '{key}' changed while you decided (now digest "
            f"{request.get('digest')}); see the new request"
        )
    step = state.steps[key]
    if operator in step.approvers or operator in step.deniers:
        done = "approved" if operator in step.approvers else "denied"
        raise ApprovalRejected(f"{operator} already {done} '{key}' (digest {digest})")


def decision(
    store: Store,
    run_id: str,
    key: str,
    *,
    operator: str,
    approve: bool,
    reason: str | None,
    private_key: Ed25519PrivateKey,
    break_glass: bool = False,
    channel: str = "cli",
    slack_user: str | None = None,
    digest: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """One operator's signed decision on a step waiting for approval: the event to record
    (:meth:`irctl.engine.engine.Engine.decide` records it, sealed and anchored).

    Every check the engine makes again when it counts the decision is made
    here first, so a person learns at once why their approval would not count.

    From the CLI, ``private_key`` is the operator's own key (assurance ``key``).
    From Slack (``slack_user`` given), the person is identified by Slack's
    signed request, verified by ``irctl serve``, and ``private_key`` is the
    installation key that attests it (assurance ``slack``): such a decision
    counts only where the policy allows ``min_assurance: slack``.

    ``digest``, when given, is the digest the person saw: the decision is
    refused if the request has changed since.
    """
    from irctl.identity import public_key_text
    from irctl.journal.events import utcnow
    from irctl.journal.state import fold

    state = fold(store.events(run_id))
    request = open_request(state, key)
    step = state.steps[key]
    if digest is not None and digest != request.get("digest"):
        raise ApprovalRejected(
            f"the inputs of '{key}' changed since you looked (now digest {request.get('digest')}); "
            "see the new request"
        )
    now = utcnow()
    asked = request.get("requested_at")
    if isinstance(asked, str) and asked > now:
        from irctl.journal.events import parse_ts

        try:
            behind = (parse_ts(asked) - parse_ts(now)).total_seconds()
        except ValueError:
            behind = 0.0  # an unreadable time: the engine counts this decision for nothing
        if behind > CLOCK_SKEW:
            raise ApprovalRejected(
                f"this machine's clock is {behind:.0f} s behind the one that asked for approval "
                f"of '{key}' (asked at {asked}, here it is {now}): a decision signed before the "
                "request would not count; set the clock right (NTP) and decide again"
            )
    expires = request.get("expires_at")
    if expires is not None and expires <= now:
        raise ApprovalRejected(
            f"the approval request for '{key}' expired at {expires}; "
            f"'irctl resume {run_id}' asks for approval again"
        )
    from irctl.runbook.policy import Policy

    policy = Policy.model_validate(request.get("rules") or {})
    recorded = state.operators.get(operator)
    if recorded is None:
        known = ", ".join(sorted(state.operators)) or "none configured"
        raise ApprovalRejected(
            f"'{operator}' was not an operator when run {run_id} started (operators: {known})"
        )
    if policy.exclude_initiator and operator == state.lead:
        did = "adopted" if state.adopted_by == operator else "started"
        raise ApprovalRejected(
            f"{operator} {did} run {run_id} and cannot approve or deny its steps "
            "(separation of duties: someone else must decide)"
        )
    if operator in excluded_in(state):
        raise ApprovalRejected(excluded_message(operator, run_id, "approve or deny its steps"))
    roles = set(recorded.get("roles") or [])
    if break_glass:
        if not approve:
            raise ApprovalRejected("--break-glass is for approving; a denial needs no glass broken")
        if not reason:
            raise ApprovalRejected("--break-glass needs --reason: say why this cannot wait")
        if not policy.break_glass:
            raise ApprovalRejected(f"the policy of '{key}' does not allow break-glass approval")
        if not roles & set(state.break_glass_roles):
            allowed = ", ".join(state.break_glass_roles) or "no role (none configured)"
            raise ApprovalRejected(
                f"{operator} (roles: {', '.join(sorted(roles)) or 'none'}) may not break glass; "
                f"break_glass.roles allows {allowed}"
            )
    else:
        allowed_roles = policy.allowed_roles()
        if allowed_roles is not None and not roles & allowed_roles:
            raise ApprovalRejected(
                f"{operator} (roles: {', '.join(sorted(roles)) or 'none'}) may not decide on "
                f"'{key}': policy '{request.get('policy')}' needs one of "
                f"{', '.join(sorted(allowed_roles))}"
            )
    if operator in step.approvers or operator in step.deniers:
        done = "approved" if operator in step.approvers else "denied"
        raise ApprovalRejected(f"{operator} already {done} '{key}' (digest {request['digest']})")
    if slack_user is not None:
        if recorded.get("slack") != slack_user:
            raise ApprovalRejected(f"Slack user {slack_user} is not {operator}'s Slack identity")
        if policy.min_assurance == "key" or break_glass:
            raise ApprovalRejected(
                f"policy '{request.get('policy')}' needs an approval signed with the operator's "
                f"own key: irctl approve {run_id} {key} --as {operator}"
            )
    elif not recorded.get("key"):
        raise ApprovalRejected(
            f"{operator} has no public key in irctl.yaml: run 'irctl keys generate {operator}' "
            "and add the line it prints"
        )
    elif public_key_text(private_key) != recorded["key"]:
        raise ApprovalRejected(
            f"the private key given is not {operator}'s key as configured when the run started"
        )
    step_id, _, rest = key.partition("[")
    fields = {
        "run": run_id, "step": step_id, "item": int(rest[:-1]) if rest else None,
        "digest": request["digest"], "decision": "approve" if approve else "deny",
        "operator": operator, "time": now, "reason": reason, "break_glass": break_glass,
        "channel": channel,
    }  # fmt: skip
    data = sign_decision(private_key, fields)
    if slack_user is not None:
        data.update(assurance="slack", slack_user=slack_user)
    if data.get("item") is None:
        data.pop("item")
    return (GRANTED if approve else DENIED), data


def outlook(events: Iterable[Event], key: str) -> Verdict | None:
    """How the decisions recorded so far on the step's open request count; None without one.

    For telling the person who just decided what happens next.  The engine
    counts again, with its own signature checks, before the step runs.
    """
    from irctl.journal.state import fold

    events = list(events)
    state = fold(events)
    step_id, _, rest = key.partition("[")
    item = int(rest[:-1]) if rest else None
    request: dict[str, Any] | None = None
    decisions: list[Decision] = []
    for event in events:
        data = event.data
        if not event.type.startswith("approval.") or data.get("step") != step_id:
            continue
        if data.get("item") != item:
            continue
        if event.type == REQUESTED:
            request, decisions = data, []
        elif request is not None and data.get("digest") == request.get("digest"):
            if event.type in DECISIONS:
                decisions.append(decision_from(data))
            elif event.type in (QUORUM, LAPSED, CANCELLED):
                request = None
    if request is None:
        return None
    from irctl.runbook.policy import Policy

    return evaluate(
        Policy.model_validate(request.get("rules") or {}),
        decisions,
        roles_of={name: op.get("roles") or [] for name, op in state.operators.items()},
        initiator=state.lead,
        break_glass_roles=state.break_glass_roles,
        excluded=excluded_in(state, strict=False),
    )


def excluded_in(state: RunState, *, strict: bool = True) -> frozenset[str]:
    """The operators the run's runbook excludes (``exclude_operators``), derived from the
    runbook text and the params its ``run.created`` holds (those its signed start covers).

    Exclusions that cannot be read are an :class:`ApprovalRejected` (``strict``: nobody acts
    on a guess), or exclude nobody where the answer is only shown (the engine, which reads
    them again before it acts, stops the run instead).
    """
    if "exclude_operators" not in state.runbook_text:
        return frozenset()  # most runbooks: no parse (nor the loader's imports)
    from irctl.errors import InvalidDocument
    from irctl.runbook.loader import load_runbook_text
    from irctl.runbook.params import excluded_operators
    from irctl.runbook.render import RenderError

    try:
        runbook = load_runbook_text(
            state.runbook_text, f"{state.run_id}:runbook", check_integrations=False
        )
        return excluded_operators(runbook, state.params)
    except (InvalidDocument, RenderError) as exc:
        if strict:
            raise ApprovalRejected(
                f"the operators run {state.run_id} excludes cannot be read ({exc}): "
                "no one's act is taken in it"
            ) from exc
        return frozenset()


def excluded_message(operator: str, run_id: str, what: str) -> str:
    """Why ``operator`` may not ``what`` in run ``run_id``: the runbook excludes them."""
    return (
        f"{operator} may not {what} in run {run_id}: its runbook excludes them "
        "(exclude_operators: a suspect in the incident it answers), even with break-glass"
    )


def what_next(verdict: Verdict | None, run_id: str, key: str) -> str:
    """One sentence for the person who just decided: what their decision means for the run."""
    then = f"an attached run (--wait) goes on by itself; otherwise: irctl resume {run_id}"
    if verdict is None:
        return then[0].upper() + then[1:]
    if verdict.state == "approved":
        return f"'{key}' has the approvals it needs: {then}"
    if verdict.state == "denied":
        return (
            f"'{key}' is denied: it fails when the run goes on, and the runbook's failure "
            f"handling applies ({then})"
        )
    return f"'{key}' still needs {verdict.missing}"


def pending(store: Reading, *, unreadable: list[str] | None = None) -> list[dict[str, Any]]:
    """Steps waiting for approval, in every run that has not ended, newest run first.

    A request that has expired is listed with ``expired`` true: nobody can decide on it
    any more, and ``irctl resume RUN`` asks for approval again.

    A run whose journal cannot be read is left out (its error added to ``unreadable``), so one
    damaged run never hides the approvals others wait for.
    """
    from irctl.journal.events import utcnow
    from irctl.journal.state import fold

    now = utcnow()
    found: list[dict[str, Any]] = []
    for run in store.unfinished_runs():
        try:
            state = fold(store.events(run.id))
        except CorruptEvent as exc:
            if unreadable is not None:
                unreadable.append(exc.message)
            continue
        if state.finished:
            continue
        for step in state.steps.values():
            request = step.approval
            if request is None or step.approved or request.get("closed"):
                continue
            found.append({
                "run_id": run.id, "runbook": run.runbook, "step": step.key,
                "policy": request.get("policy"), "digest": request.get("digest"),
                "inputs": request.get("inputs"), "approvers": step.approvers,
                "deniers": step.deniers, "eligible": request.get("eligible"),
                "requested_at": request.get("requested_at"),
                "expires_at": request.get("expires_at"), "changed": request.get("changed"),
                "expired": request.get("expires_at") is not None and request["expires_at"] <= now,
                "initiator": state.initiator,
            })  # fmt: skip
    return found
