"""Operator acts: what a person records in a run — decisions, answers, marks and aborts.

Owns :class:`OperatorActs`.  Each act is checked against the run as the journal has it (is
the step waiting for an answer? is it in doubt?), masked where a person's words hold a
secret, and, in a live run with operators, signed with the key the run pinned for the
operator at its start and irctl.yaml lists now (:func:`act_key_needed`), then sealed and
anchored.  An answer given at the terminal of an attached run (the interactive prompt) is
recorded the same way, at once.  Decisions on approvals are checked by
:func:`irctl.record.approvals.decision` here and counted by :mod:`irctl.engine.gate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from irctl.actions import Asker
from irctl.engine.live import Live, split_key
from irctl.errors import UsageError
from irctl.journal import events as ev
from irctl.journal.events import Event
from irctl.journal.state import FAILED, INTERRUPTED, RUNNING, WAITING, RunState, fold
from irctl.record.approvals import acts_must_be_signed, sign_act

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.engine.writer import JournalWriter
    from irctl.journal.store import Store
    from irctl.runbook.model import Config

MARKS = ("done", "retry", "failed")
MAX_ANSWER = 16 * 1024  # bytes of a person's answer to a manual step


def act_key_needed(events: list[Event]) -> bool:
    """Must answers, marks and aborts in this run be signed (a live run with operators)?"""
    return bool(events) and acts_must_be_signed(events[0].data)


class OperatorActs:
    """Records a person's acts in a run, checked and signed."""

    def __init__(
        self,
        writer: JournalWriter,
        *,
        store: Store,
        config: Config,
        interactive: Asker | None,
        operator: str | None,
        operator_key: Ed25519PrivateKey | None,
    ) -> None:
        self._writer = writer
        self._store = store
        self._config = config
        self._interactive = interactive
        self._operator = operator  # who answers at this terminal
        self._operator_key = operator_key  # signs the answers given at this terminal

    def decide(
        self,
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
    ) -> Event:
        """Record an operator's signed decision on a step (:func:`irctl.record.approvals.decision`
        checks it), sealed and anchored like any other event from outside an execution."""
        from irctl.record.approvals import decision, still_undecided

        if reason is not None:  # masked before it is signed: the signature covers what is kept
            reason = self._writer.masked(run_id, {"reason": reason})["reason"]
        kind, data = decision(
            self._store, run_id, key, operator=operator, approve=approve, reason=reason,
            private_key=private_key, break_glass=break_glass, channel=channel,
            slack_user=slack_user, digest=digest,
        )  # fmt: skip
        decided = str(data.get("digest"))
        return self._writer.record(
            run_id, kind, data,
            check=lambda events: still_undecided(events, key, operator, decided),
        )  # fmt: skip

    def answer(
        self,
        run_id: str,
        key: str,
        answer: str,
        *,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """Record a person's answer to a manual step that waits for one."""
        events = self._store.events(run_id)
        state = fold(events)
        step = state.steps.get(key)
        if step is None or step.status != WAITING or step.waiting_for != "answer":
            waiting = [s.key for s in state.waiting() if s.waiting_for == "answer"]
            hint = f"; waiting for an answer: {', '.join(waiting)}" if waiting else ""
            raise UsageError(f"step '{key}' of run {run_id} is not waiting for an answer{hint}")
        if len(answer.encode("utf-8", "surrogateescape")) > MAX_ANSWER:
            raise UsageError(
                f"the answer to '{key}' is longer than {MAX_ANSWER // 1024} KiB; an answer is a "
                "value for the step, not a document: put the detail in a ticket and refer to it"
            )
        if step.choices and answer.strip().lower() not in {c.lower() for c in step.choices}:
            raise UsageError(  # nothing recorded: a typo is not an answer
                f"{answer.strip()!r} is not an answer to '{key}': answer "
                f"{' or '.join(step.choices)} (nothing was recorded)"
            )
        if step.answer is not None:  # two people answering at once: the first answer stands
            raise UsageError(
                f"step '{key}' of run {run_id} already has an answer from "
                f"{step.answered_by or 'someone'}, used when the run goes on "
                f"(irctl resume {run_id}); if the step asks again, answer then"
            )
        signer = self._act_signer(events, state, operator, private_key, "answer")
        step_id, item = split_key(key)
        data: dict[str, Any] = {"step": step_id, "answer": answer, "by": operator}
        if item is not None:
            data["item"] = item
        self._record_act(run_id, ev.STEP_ANSWERED, data, signer)

    def mark(
        self,
        run_id: str,
        key: str,
        mark: str,
        *,
        operator: str,
        reason: str | None,
        private_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """Record an operator's decision on an in-doubt step: done, retry or failed."""
        if mark not in MARKS:
            raise UsageError(f"--mark must be one of {', '.join(MARKS)}, not {mark!r}")
        events = self._store.events(run_id)
        state = fold(events)
        if state.finished:
            raise UsageError(f"run {run_id} has already {state.status}")
        step = state.steps.get(key)
        if step is None or step.status not in (RUNNING, INTERRUPTED, WAITING):
            doubtful = [s.key for s in state.unresolved() + state.waiting()]
            hint = f"; in doubt: {', '.join(doubtful)}" if doubtful else ""
            raise UsageError(f"step '{key}' of run {run_id} is not in doubt{hint}")
        signer = self._act_signer(events, state, operator, private_key, "mark")
        step_id, item = split_key(key)
        data: dict[str, Any] = {"step": step_id, "mark": mark, "by": operator}
        if item is not None:
            data["item"] = item
        if reason:
            data["reason"] = reason
        self._record_act(run_id, ev.STEP_RESOLVED, data, signer)

    def abort(
        self,
        run_id: str,
        *,
        reason: str,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> RunState:
        """Record that ``operator`` stopped the run; the run as it stands then."""
        writer = self._writer
        events = self._store.events(run_id)
        state = fold(events)
        if state.finished:
            raise UsageError(f"run {run_id} has already {state.status}")
        signer = self._act_signer(events, state, operator, private_key, "abort")
        data = writer.masked(run_id, {"reason": reason, "by": operator})
        if signer is not None:
            data = sign_act(signer, run_id, ev.RUN_ABORTED, data)
        if writer.live_for(run_id) is not None:
            with writer.lock:
                made = writer.append(run_id, [(ev.RUN_ABORTED, data)], locked=True, seal=True)
        else:
            made = writer.record_outside(run_id, [(ev.RUN_ABORTED, data)])
        writer.anchor(made)
        return fold(self._store.events(run_id))

    def retry(
        self,
        run_id: str,
        *,
        step: str | None,
        reason: str | None,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> list[str]:
        """Record that ``operator`` takes a failed or aborted run up again at its failed steps
        (``step``: only that one, and the blocks around it); the steps to run again.

        Nothing else is undone: what succeeded stays done, an approval counts again only for
        the digest it was given, and a step whose inputs changed asks again."""
        events = self._store.events(run_id)
        state = fold(events)
        if state.status not in ("failed", "aborted"):
            hint = (
                f"; continue it with irctl resume {run_id}"
                if not state.finished
                else ""
            )
            raise UsageError(f"run {run_id} is {state.status}, not failed or aborted: nothing "
                             f"to retry{hint}")  # fmt: skip
        failed = _stopping(state)
        if step is not None:
            if step not in failed:
                shown = ", ".join(failed) or "none"
                raise UsageError(f"step '{step}' of run {run_id} did not stop it (failed: {shown})")
            failed = [k for k in failed if k == step or _encloses(state, k, step)]
        if not failed and state.status == "failed":
            raise UsageError(f"run {run_id} failed before any step did: start a new run")
        signer = self._act_signer(events, state, operator, private_key, "retry")
        data: dict[str, Any] = {"steps": failed, "by": operator}
        if reason:
            data["reason"] = reason
        self._record_act(run_id, ev.RUN_RETRIED, data, signer)
        return failed

    def skip(
        self,
        run_id: str,
        key: str,
        *,
        reason: str,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """Record that ``operator`` skips step ``key`` by hand (waiting, failed or in doubt),
        as the runbook's ``skip:`` allows; the run goes on past it when resumed."""
        events = self._store.events(run_id)
        state = fold(events)
        if state.status in ("succeeded", "aborted", "tampered"):
            raise UsageError(f"run {run_id} has {state.status}: no step of it can be skipped")
        found = state.steps.get(key)
        stuck = found is not None and (
            found.status in (WAITING, FAILED) or found.in_doubt
        )
        if not stuck:
            raise UsageError(
                f"step '{key}' of run {run_id} is not waiting, failed or in doubt: only such a "
                "step can be skipped"
            )
        runbook = _runbook(state)
        problem = skip_problem(runbook, state.operators, key, operator)
        if problem is not None:
            raise UsageError(problem)
        signer = self._act_signer(events, state, operator, private_key, "skip")
        step_id, item = split_key(key)
        blocks = [k for k, s in state.steps.items() if s.status == FAILED and k != key
                  and _encloses(state, k, key)]  # fmt: skip
        data: dict[str, Any] = {"step": step_id, "by": operator, "reason": reason}
        if item is not None:
            data["item"] = item
        if blocks:
            data["blocks"] = blocks
        self._record_act(run_id, ev.STEP_WAIVED, data, signer)

    def adopt(
        self, run_id: str, *, operator: str, private_key: Ed25519PrivateKey | None
    ) -> Event:
        """Record that ``operator`` takes over a run an alert started (signed with their own
        key, always): its steps that are not ``auto`` may then run (``irctl resume``)."""
        from irctl.engine.adoption import adopter, adoption_problem, started_by_alert
        from irctl.runbook.loader import load_runbook_text

        events = self._store.events(run_id)
        state = fold(events)
        if not events or not started_by_alert(events[0].data):
            raise UsageError(
                f"run {run_id} was started by {state.initiator}, not by an alert: there is "
                "nothing to adopt"
            )
        if state.finished:
            raise UsageError(f"run {run_id} has already {state.status}")
        runbook = load_runbook_text(state.runbook_text, f"{run_id}:runbook")
        adoptions = [e for e in events if e.type == ev.RUN_ADOPTED]
        already = adopter(run_id, adoptions, state.operators, self._config, runbook)
        if already is not None:
            raise UsageError(
                f"run {run_id} was already adopted by {already}; continue with: "
                f"irctl resume {run_id}"
            )
        if private_key is None:
            raise UsageError(
                f"adopting run {run_id} is signed with {operator}'s own key: give --key FILE, "
                f"or keep it where 'irctl keys generate {operator}' put it"
            )
        signer = self._act_signer(events, state, operator, private_key, "adopt")
        if signer is None:  # pragma: no cover - a key was given, so it is checked and returned
            raise UsageError(f"adopting run {run_id} needs {operator}'s key")
        trigger = state.trigger or {}
        data: dict[str, Any] = {"by": operator, "trigger": trigger.get("name")}
        data = sign_act(signer, run_id, ev.RUN_ADOPTED, self._writer.masked(run_id, data))
        problem = adoption_problem(run_id, data, state.operators, self._config, runbook)
        if problem is not None:  # start.roles: who may start a run may adopt one
            raise UsageError(f"{problem}; nothing was recorded")
        made = self._writer.record_outside(run_id, [(ev.RUN_ADOPTED, data)])
        self._writer.anchor(made)
        return made[0]

    def _act_signer(
        self,
        events: list[Event],
        state: RunState,
        operator: str,
        private_key: Ed25519PrivateKey | None,
        what: str,
    ) -> Ed25519PrivateKey | None:
        """The key that signs ``operator``'s act, checked against the key the run pinned for
        them and the one irctl.yaml lists now; None where the run asks for no signature.
        An operator the runbook excludes may not act at all."""
        from irctl.record.approvals import ApprovalRejected, excluded_in, excluded_message

        try:
            barred = excluded_in(state)
        except ApprovalRejected as exc:
            raise UsageError(exc.message) from exc
        if operator in barred:
            raise UsageError(excluded_message(operator, state.run_id, what))
        required = act_key_needed(events)
        if private_key is None and not required:
            return None
        pinned = state.operators.get(operator)
        configured = self._config.operators.get(operator)
        recorded = pinned.get("key") if isinstance(pinned, dict) else None
        if pinned is None:
            known = ", ".join(sorted(state.operators)) or "none configured"
            raise UsageError(
                f"'{operator}' was not an operator when run {state.run_id} started "
                f"(operators: {known}): only they may {what} in it"
            )
        if not recorded:
            raise UsageError(
                f"{operator} had no public key in irctl.yaml when run {state.run_id} started, "
                f"and to {what} in a live run is signed with the operator's own key"
            )
        if private_key is None:
            raise UsageError(
                f"to {what} in live run {state.run_id} is signed with {operator}'s own key: "
                f"give --key FILE, or keep it where 'irctl keys generate {operator}' put it"
            )
        from irctl.identity import public_key_text

        given = public_key_text(private_key)
        if given != recorded or (configured is not None and configured.key != given):
            raise UsageError(
                f"the private key given is not {operator}'s key as irctl.yaml lists it and as "
                f"run {state.run_id} recorded it at its start"
            )
        return private_key

    def _record_act(
        self, run_id: str, kind: str, data: dict[str, Any], signer: Ed25519PrivateKey | None
    ) -> None:
        """Record a person's answer or mark: masked, then signed (the signature covers what
        is kept), sealed and anchored."""
        data = self._writer.masked(run_id, data)
        if signer is not None:
            data = sign_act(signer, run_id, kind, data)
        self._writer.anchor(self._writer.record_outside(run_id, [(kind, data)]))

    # -- at the terminal of an attached run -------------------------------------------------

    def asker(self, key: str) -> Asker | None:
        """The interactive prompt, recording who answered what (a person's word is evidence)."""
        interactive = self._interactive
        if interactive is None:
            return None
        writer = self._writer

        def ask(prompt: str, kind: str, choices: list[str] | None) -> str | None:
            live = writer.require_live()
            who = self._operator or live.state.initiator
            can_sign, signer = self._terminal_signer(live, who)
            if not can_sign:  # the answer must be signed, and this terminal has no key
                return None  # the step waits for 'irctl answer' (which asks for the key)
            answer = interactive(prompt, kind, choices)
            if answer is not None:
                step_id, item = split_key(key)
                data: dict[str, Any] = {"step": step_id, "answer": answer, "by": who}
                if item is not None:
                    data["item"] = item
                data = live.redactor(data)
                if signer is not None:
                    data = sign_act(signer, live.state.run_id, ev.STEP_ANSWERED, data)
                # Sealed at once, as irctl answer seals one: an answer in an unsealed tail is
                # not irctl's (irctl.engine.guard).
                made = writer.append(
                    live.state.run_id, [(ev.STEP_ANSWERED, data)],
                    seal=writer.signing_key is not None,
                )  # fmt: skip
                writer.anchor(made)
            return answer

        return ask

    def _terminal_signer(self, live: Live, who: str) -> tuple[bool, Ed25519PrivateKey | None]:
        """Can an answer given at this terminal be recorded, and the key that signs it
        (None: the run needs no signature).  It cannot when the run needs a signature this
        terminal cannot give: no key, or not the key the run pinned for ``who``."""
        from irctl.identity import public_key_text

        if not live.acts_signed:
            return True, None
        pinned = live.state.operators.get(who)
        recorded = pinned.get("key") if isinstance(pinned, dict) else None
        key = self._operator_key
        if key is None or not recorded or public_key_text(key) != recorded:
            return False, None
        return True, key


def _stopping(state: RunState) -> list[str]:
    """The failed steps that stopped the run: not its on_failure (compensation) steps, nor a
    step whose failure the runbook lets the run go on past (``on_failure: continue``).  With
    the blocks (parallel, for_each) around them, which failed with them."""
    from irctl.runbook.loader import load_runbook_text

    runbook = load_runbook_text(state.runbook_text, f"{state.run_id}:runbook",
                                check_integrations=False)  # fmt: skip
    compensating = {s.id for top in runbook.on_failure for s in top.walk()}
    going_on = {s.id for s in runbook.all_steps() if s.on_failure == "continue"}
    return [
        key for key, found in state.steps.items()
        if found.status == FAILED and key.split("[", 1)[0] not in compensating | going_on
    ]  # fmt: skip


def _encloses(state: RunState, key: str, chosen: str) -> bool:
    """Whether failed step ``key`` is a block around ``chosen`` (or ``chosen``'s for_each)."""
    from irctl.runbook.loader import load_runbook_text

    root = chosen.split("[", 1)[0]
    if key == root:
        return True
    runbook = load_runbook_text(state.runbook_text, f"{state.run_id}:runbook",
                                check_integrations=False)  # fmt: skip
    for top in runbook.steps:
        for block in top.walk():
            if block.id == key and block.parallel is not None:
                return any(inner.id == root for inner in block.walk()[1:])
    return False


def _runbook(state: RunState) -> Any:
    from irctl.runbook.loader import load_runbook_text

    return load_runbook_text(state.runbook_text, f"{state.run_id}:runbook",
                             check_integrations=False)  # fmt: skip


def skip_problem(
    runbook: Any, operators: dict[str, dict[str, Any]], key: str, operator: str
) -> str | None:
    """Why ``operator`` (with the roles the run recorded) may not skip step ``key`` by hand:
    the runbook names no one who may (``skip:``), not them, or the step is ``skip: never``."""
    step_id = key.split("[", 1)[0]
    step = next((s for s in runbook.all_steps() if s.id == step_id), None)
    if step is None:
        return f"the runbook has no step '{step_id}'"
    if step.skip == "never":
        return f"step '{step_id}' is marked skip: never; it cannot be skipped by anyone"
    if runbook.skip is None:
        return (f"{runbook.id} names nobody who may skip a step (add skip: {{roles: [...]}} to "
                "the runbook)")  # fmt: skip
    roles = set((operators.get(operator) or {}).get("roles") or [])
    if not roles & set(runbook.skip.roles):
        return (f"{operator} (roles: {', '.join(sorted(roles)) or 'none'}) may not skip steps "
                f"of {runbook.id}: skip.roles allows {', '.join(runbook.skip.roles)}")  # fmt: skip
    return None
