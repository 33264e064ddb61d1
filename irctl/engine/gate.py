"""The approval gate: the one place the engine decides whether a gated step may run.

Owns :class:`Gate`, whose :meth:`Gate.check` the engine calls before it runs a step with an
approval policy (or, for a for_each step, before its first item).  The verdict is derived
every time from the operators' signed decisions on the request for the digest the step's
inputs have *now*, as this process verified them (``approval.quorum`` is a summary the gate
writes, never a reason to open): quorum reached, break-glass by a permitted role (which
leaves an item to review after the incident), denial, or still waiting.  The statements,
signatures and counting rules live in :mod:`irctl.record.approvals`, shared with the CLI
and the transcript; which decisions count for a run (by operators as the run recorded them
*and* as irctl.yaml lists them now, each signature checked again) is decided only here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from irctl.engine.guard import Tampering
from irctl.engine.live import FAIL, OK, STOP, WAIT, Live, split_key
from irctl.journal import events as ev
from irctl.journal.events import Event
from irctl.journal.state import WAITING
from irctl.runbook.policy import eligible

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.engine.writer import JournalWriter
    from irctl.record.approvals import Verdict
    from irctl.runbook.model import Config, Policy, Step


class Gate:
    """Decides, from the signed decisions in the journal, whether a gated step may run."""

    def __init__(
        self,
        writer: JournalWriter,
        *,
        config: Config,
        signing_key: Ed25519PrivateKey | None,
        attach: bool,
        poll: float,
    ) -> None:
        self._writer = writer
        self._config = config
        self._signing_key = signing_key  # attests the decisions made in Slack
        self._attach = attach  # wait here for the decisions instead of stopping the run
        self._poll = poll

    def check(
        self, step: Step, key: str, name: str, policy: Policy, inputs: Any, digest: str
    ) -> str:
        """OK when the step's current inputs are approved; WAIT, or FAIL when denied (STOP:
        the run was tampered with or aborted meanwhile).

        Decisions are read from the store each time (other processes record them)
        and counted only for the digest of the inputs the step has now.
        """
        while True:
            outcome = self._once(step, key, name, policy, inputs, digest)
            if outcome != WAIT or not self._attach:
                return outcome
            live = self._writer.require_live()
            if live.cancelled.wait(self._poll):
                return STOP

    def _once(
        self, step: Step, key: str, name: str, policy: Policy, inputs: Any, digest: str
    ) -> str:
        from irctl.record import approvals as ap

        writer = self._writer
        live = writer.require_live()
        writer.flush()
        with writer.lock:  # decisions recorded elsewhere: into the state, the view and Slack
            writer.fold_foreign(live, live.state.last_seq + 1)
        if live.tampered is not None or live.cancelled.is_set():
            return STOP  # tampered with, or aborted meanwhile: the step does not run
        request, decisions, opened, closed = _latest_request(live, key)
        now = ev.utcnow()
        current = request is not None and request.data.get("digest") == digest and not closed
        if request is not None and current and opened is not None:
            return self._opened_before(live, key, policy, decisions, opened)
        expires = request.data.get("expires_at") if request is not None else None
        if current and expires is not None and expires <= now:
            writer.emit_step(ap.LAPSED, key, {"digest": digest, "expired_at": expires})
            current = False
        if not current:
            previous = request.data if request is not None else None
            self._request(step, key, name, policy, inputs, digest, previous, now)
            return WAIT
        return self._count(key, name, policy, digest, decisions)

    def _opened_before(
        self,
        live: Live,
        key: str,
        policy: Policy,
        decisions: list[dict[str, Any]],
        opened: Event,
    ) -> str:
        """Approved before a crash or an interruption: that record is a summary, so the
        signed decisions must still give the same verdict now."""
        again = self._verdict(policy, decisions)
        if again.state != "approved":
            self._writer.tamper(live, Tampering(
                opened.seq,
                f"approval.quorum for '{key}' (event {opened.seq}) is not backed by signed "
                f"decisions of operators irctl.yaml lists: {again.missing or again.state}",
            ))  # fmt: skip
            return STOP
        return OK

    def _request(
        self,
        step: Step,
        key: str,
        name: str,
        policy: Policy,
        inputs: Any,
        digest: str,
        previous: dict[str, Any] | None,
        now: str,
    ) -> None:
        """Ask for approval of the step's inputs as they are now, and wait for it."""
        from irctl.record import approvals as ap

        state = self._writer.require_live().state
        changed = (
            ap.changed_inputs(previous.get("inputs"), inputs) or None
            if previous is not None and previous.get("digest") != digest
            else None
        )
        roles_of = {n: o.get("roles", []) for n, o in state.operators.items()}
        self._writer.emit_step(
            ap.REQUESTED, key,
            {"digest": digest, "action": step.action, "inputs": inputs, "policy": name,
             "rules": policy.model_dump(mode="json"),
             "eligible": eligible(policy, roles_of, state.lead),
             "requested_at": now, "expires_at": ap.expires_at(now, policy),
             "replaces": previous.get("digest") if previous and changed else None,
             "changed": changed},
        )  # fmt: skip
        self._writer.emit_step(
            ev.STEP_WAITING, key,
            {"for": "approval", "policy": name, "digest": digest,
             "prompt": self._prompt(key, name, policy)},
        )  # fmt: skip

    def _count(
        self, key: str, name: str, policy: Policy, digest: str, decisions: list[dict[str, Any]]
    ) -> str:
        """The verdict of the decisions on the open request, recorded: the gate opens
        (quorum, or break-glass to review afterwards), closes (denied), or still waits."""
        from irctl.record import approvals as ap

        writer = self._writer
        verdict = self._verdict(policy, decisions)
        if verdict.state == "approved":
            writer.emit_step(
                ap.QUORUM, key,
                {"digest": digest, "approvers": verdict.approvers,
                 "break_glass": verdict.break_glass},
            )  # fmt: skip
            if verdict.break_glass:
                why = next((d.get("reason") for d in decisions if d.get("break_glass")), "")
                writer.emit(
                    ap.REVIEW_ITEM,
                    {"step": key, "by": ", ".join(verdict.approvers),
                     "text": f"break-glass approval of '{key}' by {', '.join(verdict.approvers)}"
                             f" ({why}): review after the incident"},
                )  # fmt: skip
            return OK
        if verdict.state == "denied":
            reasons = "; ".join(
                f"{d.get('operator')}: {d.get('reason') or 'no reason'}"
                for d in decisions
                if d.get("decision") == "deny"
            )
            writer.emit_step(ap.CANCELLED, key, {"digest": digest, "denied_by": verdict.deniers})
            writer.emit_step(ev.STEP_FAILED, key, {"error": f"denied ({reasons})", "attempt": 0})
            return FAIL
        known = writer.require_live().state.steps.get(key)
        prompt = self._prompt(key, name, policy, verdict.missing)
        if known is None or known.status != WAITING or known.prompt != prompt:
            writer.emit_step(
                ev.STEP_WAITING, key,
                {"for": "approval", "policy": name, "digest": digest, "prompt": prompt},
            )  # fmt: skip
        return WAIT

    def _lead(self, live: Live) -> str:
        """Who leads the run (a policy's ``exclude_initiator``): its initiator, or for a run an
        alert started the operator whose signed adoption verifies (never a folded name)."""
        if not live.by_alert:
            return live.state.initiator
        from irctl.engine.adoption import adopter

        with self._writer.lock:
            adoptions = list(live.adoptions)
        state = live.state
        found = adopter(state.run_id, adoptions, state.operators, self._config, live.runbook)
        return found or state.initiator

    def _verdict(self, policy: Policy, decisions: list[dict[str, Any]]) -> Verdict:
        """The verdict of the signed decisions on one request, by operators as both the run
        recorded them and irctl.yaml lists them now (a role only one of them grants does not
        count)."""
        from irctl.record import approvals as ap

        live = self._writer.require_live()
        state = live.state
        configured = self._config.operators
        roles_of: dict[str, list[str]] = {}
        for name, recorded in state.operators.items():
            now = configured.get(name)
            if now is None:
                continue
            roles_of[name] = [r for r in recorded.get("roles", []) if r in now.roles]
        glass = [r for r in state.break_glass_roles if r in self._config.break_glass.roles]
        return ap.evaluate(
            policy,
            [ap.decision_from(d) for d in decisions if self._signed_by_operator(d)],
            roles_of=roles_of,
            initiator=self._lead(live),
            break_glass_roles=glass,
            excluded=live.excluded,
        )

    def _prompt(self, key: str, name: str, policy: Policy, missing: str = "") -> str:
        live = self._writer.require_live()
        roles = policy.allowed_roles()
        who = ", ".join(sorted(roles)) if roles else "any operator"
        need = missing or f"{policy.quorum} approval(s)"
        return (
            f"approval '{name}' needed: {need} ({who}"
            f"{', not the initiator' if policy.exclude_initiator else ''}); "
            f"irctl approve {live.state.run_id} {key} --as OPERATOR"
        )

    def _signed_by_operator(self, data: dict[str, Any]) -> bool:
        """The engine's own check of a decision before it counts.

        Assurance ``key``: signed by the operator's key as recorded at run start.
        Assurance ``slack``: attested by this installation's key (``irctl serve``
        verified Slack's signed request) for the operator's recorded Slack id.
        """
        from irctl.identity import public_key_text
        from irctl.record.approvals import signature_ok

        live = self._writer.require_live()
        name = str(data.get("operator"))
        operator = live.state.operators.get(name)
        configured = self._config.operators.get(name)
        if operator is None or configured is None or data.get("run") != live.state.run_id:
            return False  # the operator must be both recorded at run start and in irctl.yaml
        if data.get("assurance") == "key":
            recorded = operator.get("key")
            return bool(recorded) and recorded == configured.key and signature_ok(data, recorded)
        if data.get("assurance") == "slack" and self._signing_key is not None:
            slack = operator.get("slack")
            if not slack or data.get("slack_user") != slack or slack != configured.slack:
                return False
            return signature_ok(data, public_key_text(self._signing_key))
        return False


def _latest_request(
    live: Live, key: str
) -> tuple[Event | None, list[dict[str, Any]], Event | None, bool]:
    """The step's latest approval request, the decisions on its digest, the quorum that
    opened it (if one did) and whether it was closed (lapsed, or cancelled by denials).

    Only events the guard verified are read (the journal as this process proved it); the
    verdict is derived from the operators' signed decisions every time, never from an
    ``approval.quorum`` row.
    """
    from irctl.record import approvals as ap

    request: Event | None = None
    decisions: list[dict[str, Any]] = []
    opened: Event | None = None
    closed = False
    for event in live.approvals.get(split_key(key), ()):
        data = event.data
        if event.type == ap.REQUESTED:
            request, decisions, opened, closed = event, [], None, False
        elif request is None or data.get("digest") != request.data.get("digest"):
            continue
        elif event.type in ap.DECISIONS:
            if ap.signed_for(data, request.data):
                decisions.append(data)
        elif event.type == ap.QUORUM:
            opened = opened or event
        elif event.type in (ap.LAPSED, ap.CANCELLED):
            closed = True
    return request, decisions, opened, closed
