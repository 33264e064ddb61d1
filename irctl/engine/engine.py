"""The engine: executes a runbook against the event store, durably.

Every transition is an event appended (and committed) to the store: a step's
``step.started`` before its action runs, its outcome after.  The engine's view
of a run is the fold of those events (:mod:`irctl.journal.state`), so a run that died
at any instant continues with :meth:`Engine.execute`: finished steps are not
repeated, and a step that started but has no outcome is *in doubt*.  An
in-doubt step is settled by the action's ``probe``, by running it again if the
action is idempotent, or by an operator's recorded decision — never silently
repeated.

The engine imports no integration: it finds actions by name in a
:class:`irctl.actions.Registry`.

:class:`Engine` is the entry point and opens, starts and ends an execution; it holds
its parts, each in a module of its own:

* :mod:`irctl.engine.start` — run creation and the signed start;
* :mod:`irctl.engine.schedule` — step scheduling: sequences, ``when``, parallel blocks,
  for_each fan-out;
* :mod:`irctl.engine.action` — one action step: inputs, attempts, retries, outcome;
* :mod:`irctl.engine.gate` — the approval gate;
* :mod:`irctl.engine.doubt` — in-doubt resolution;
* :mod:`irctl.engine.acts` — operator acts: decisions, answers, marks, aborts, adoptions;
* :mod:`irctl.engine.adoption` — a run an alert started: who may let its steps that are not
  ``auto`` run;
* :mod:`irctl.engine.writer` — writing the journal: the group commit, seals, anchors,
  masking;
* :mod:`irctl.engine.live` and :mod:`irctl.engine.call` — what an execution holds in
  memory, and how an action is called.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.actions import Asker, Display, Notifier, Registry, default_registry
from irctl.engine.action import ActionSteps
from irctl.engine.acts import OperatorActs, act_key_needed, skip_problem
from irctl.engine.adoption import adopt_command, started_by_alert
from irctl.engine.doubt import InDoubt
from irctl.engine.gate import Gate
from irctl.engine.guard import RUN_TAMPERED, JournalGuard, Tampering
from irctl.engine.live import FAIL, STOP, WAIT, Listener, Live, pinned, quietly, summary
from irctl.engine.schedule import Schedule
from irctl.engine.selection import left_out
from irctl.engine.start import RunStart
from irctl.engine.writer import JournalWriter
from irctl.errors import CorruptEvent, IrctlError, StoreError, UsageError
from irctl.journal import events as ev
from irctl.journal.events import Event
from irctl.journal.state import FAILED, RUNNING, RunState, fold
from irctl.runbook.model import Config, Runbook, Step
from irctl.runbook.render import Redactor

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.engine.guard import OpenReport
    from irctl.journal.store import Store


def _aborting_step(steps: list[Step], state: RunState) -> str | None:
    """The first failed step that stopped the run (not one whose failure it carried on past)."""
    definitions: dict[str, Step] = {}
    pending = list(steps)
    while pending:
        step = pending.pop()
        definitions[step.id] = step
        pending.extend(step.parallel or [])
    for key, step_state in state.steps.items():
        definition = definitions.get(key.split("[", 1)[0])
        if step_state.status == FAILED and (
            definition is None or definition.on_failure != "continue"
        ):
            return key
    return None


class Engine:
    """Runs runbooks.  Pass the collaborators in: the store, the registry, the clock."""

    def __init__(
        self,
        store: Store,
        *,
        registry: Registry | None = None,
        config: Config | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        listener: Listener | None = None,
        interactive: Asker | None = None,
        display: Display | None = None,
        operator: str | None = None,
        operator_key: Ed25519PrivateKey | None = None,
        workspace: Path | None = None,
        sleep: Callable[[float], None] | None = None,
        cancel_grace: float = 10.0,
        attach: bool = False,
        poll: float = 0.3,
        notify: bool = True,
        notify_grace: float = 2.0,
    ) -> None:
        self.store = store
        self.registry = registry or default_registry
        self.config = config or Config()
        self.signing_key = signing_key
        self.listener = listener
        self.interactive = interactive
        self.display = display  # the operator's terminal (ActionContext.show), never recorded
        self.operator = operator
        self.operator_key = operator_key  # signs the answers given at this terminal
        self.workspace = workspace
        self.cancel_grace = cancel_grace
        self.attach = attach  # wait for approvals in this process instead of stopping (exit 3)
        self.poll = poll
        self.notify = notify  # start the notifiers of configured integrations (Slack, ...)
        self.notify_grace = notify_grace  # at most this long to deliver queued notifications
        # The parts, given the settings above when the engine is made.
        self._writer = JournalWriter(
            store, config=self.config, registry=self.registry, signing_key=signing_key,
            listener=listener,
        )  # fmt: skip
        self._start = RunStart(
            store, config=self.config, signing_key=signing_key, listener=listener,
            workspace=workspace,
        )  # fmt: skip
        self._acts = OperatorActs(
            self._writer, store=store, config=self.config, interactive=interactive,
            operator=operator, operator_key=operator_key,
        )  # fmt: skip
        self._gate = Gate(
            self._writer, config=self.config, signing_key=signing_key, attach=attach, poll=poll
        )
        actions = ActionSteps(
            self._writer, gate=self._gate,
            doubt=InDoubt(self._writer, config=self.config, workspace=workspace),
            acts=self._acts, registry=self.registry, config=self.config, workspace=workspace,
            display=display, sleep=sleep, cancel_grace=cancel_grace,
        )  # fmt: skip
        self._schedule = Schedule(
            self._writer, actions=actions, gate=self._gate, config=self.config
        )

    # -- creating and recording ---------------------------------------------------

    def create_run(
        self,
        runbook: Runbook,
        runbook_text: str,
        params: dict[str, Any],
        *,
        initiator: str,
        mode: str = "live",
        incident: str | None = None,
        run_id: str | None = None,
        starter_key: Ed25519PrivateKey | None = None,
        selection: dict[str, list[str]] | None = None,
        trigger: dict[str, Any] | None = None,
    ) -> str:
        """Record a new run (``run.created``) with the exact runbook text; runs nothing.

        In a workspace with operators, a live run is started only by an operator, with
        ``starter_key`` their own key (the key irctl.yaml lists for them), and, for a runbook
        with ``start:``, only by one holding one of its roles: ``run.created`` carries their
        signed statement, which the engine checks again each time it opens the run
        (:class:`irctl.engine.start.RunStart`).  ``selection`` (``{only: […]}`` or
        ``{skip: […]}``) runs part of it (:mod:`irctl.engine.selection`).

        ``trigger`` (``{name, source, alert, detected_at}``, initiator ``trigger:NAME``) is a
        run an alert started: signed by the installation key, it runs only its ``auto: true``
        steps until an operator adopts it (:meth:`adopt`).
        """
        return self._start.create_run(
            runbook, runbook_text, params, initiator=initiator, mode=mode, incident=incident,
            run_id=run_id, starter_key=starter_key, selection=selection, trigger=trigger,
        )  # fmt: skip

    def record(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        """Append one event from outside an execution (answers, marks, notes), sealed; a
        secret the run resolved is masked in its text, answer or reason."""
        return self._writer.record(run_id, kind, data)

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
        return self._acts.decide(
            run_id, key, operator=operator, approve=approve, reason=reason,
            private_key=private_key, break_glass=break_glass, channel=channel,
            slack_user=slack_user, digest=digest,
        )  # fmt: skip

    def adopt(
        self, run_id: str, *, operator: str, private_key: Ed25519PrivateKey | None
    ) -> Event:
        """Record an operator's signed adoption of a run an alert started: its steps that are
        not ``auto`` run from the next :meth:`execute` on
        (:meth:`irctl.engine.acts.OperatorActs.adopt`)."""
        return self._acts.adopt(run_id, operator=operator, private_key=private_key)

    def state(self, run_id: str) -> RunState:
        return fold(self.store.events(run_id))

    def answer(
        self,
        run_id: str,
        key: str,
        answer: str,
        *,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """Record a person's answer to a manual step that waits for one (signed with their
        ``private_key``, which a live run with operators demands: :meth:`act_key_needed`)."""
        self._acts.answer(run_id, key, answer, operator=operator, private_key=private_key)

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
        self._acts.mark(
            run_id, key, mark, operator=operator, reason=reason, private_key=private_key
        )

    def retry(
        self,
        run_id: str,
        *,
        step: str | None = None,
        reason: str | None = None,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> list[str]:
        """Take a failed or aborted run up again at its failed steps; :meth:`execute` then
        runs them (:meth:`irctl.engine.acts.OperatorActs.retry`)."""
        return self._acts.retry(
            run_id, step=step, reason=reason, operator=operator, private_key=private_key
        )

    def skip(
        self,
        run_id: str,
        key: str,
        *,
        reason: str,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """Skip a waiting, failed or in-doubt step by hand, as the runbook's ``skip:`` allows
        (:meth:`irctl.engine.acts.OperatorActs.skip`); :meth:`execute` then goes on past it."""
        self._acts.skip(run_id, key, reason=reason, operator=operator, private_key=private_key)

    def abort(
        self,
        run_id: str,
        *,
        reason: str,
        operator: str,
        private_key: Ed25519PrivateKey | None = None,
    ) -> RunState:
        return self._acts.abort(run_id, reason=reason, operator=operator, private_key=private_key)

    @staticmethod
    def act_key_needed(events: list[Event]) -> bool:
        """Must answers, marks and aborts in this run be signed (a live run with operators)?"""
        return act_key_needed(events)

    def anchor(self, made: list[Event]) -> None:
        """Write a new checkpoint's head to WORM storage, if irctl.yaml configures an anchor
        (never for a tabletop drill)."""
        self._writer.anchor(made)

    # -- executing ---------------------------------------------------------------

    def execute(self, run_id: str) -> RunState:
        """Run (or continue) a run until it finishes, waits on people or is interrupted.

        Only one process executes a run at a time: the store's run lock is held
        throughout, and another process trying gets :class:`irctl.errors.RunBusy`.
        """
        with self.store.run_lock(run_id):
            return self._execute(run_id)

    def _execute(self, run_id: str) -> RunState:
        from irctl.runbook.loader import load_runbook_text

        writer = self._writer
        events = self.store.events(run_id)
        guard = JournalGuard(run_id, writer.trusted_keys())
        # Verified before it is folded: a crafted row is named as tampering, not a crash.
        opened = guard.open(events, pinned=pinned(events), configured=writer.configured_keys())
        if opened.tampering is not None:
            try:
                state = fold(events)
            except CorruptEvent:
                state = RunState(run_id=run_id)
            return self._refuse(run_id, state, guard, opened.tampering)
        state = fold(events)
        if state.finished:
            if self.signing_key is not None and events[-1].type in ev.TERMINAL:
                # It ended but died before its final checkpoint: seal it now (verified above).
                writer.checkpoint(run_id)
                return self.state(run_id)
            raise UsageError(f"run {run_id} has already {state.status}; nothing to resume")
        runbook = self._start.model(run_id, state.runbook_text) or load_runbook_text(
            state.runbook_text, f"{run_id}:runbook", registry=self.registry
        )
        problem = self._start.problem(runbook, state, events[0])
        if problem is not None:
            return self._refuse(run_id, state, guard, Tampering(1, problem))
        barred, problem = self._start.excluded(runbook, state, events)
        if problem is not None:
            return self._refuse(run_id, state, guard, Tampering(1, problem))
        waived = _waiver_check(runbook, state)
        for event in events:
            refused = waived(event) if event.type == ev.STEP_WAIVED else None
            if refused is not None:
                problem = f"event {event.seq} ({event.type}): {refused}"
                return self._refuse(run_id, state, guard, Tampering(event.seq, problem))
        guard.waivers = waived
        guard.excluded = barred  # and for every act another process records from now on
        live = self._begin(runbook, state, guard, events, opened)
        live.excluded = barred
        try:
            self._conclude(live, self._schedule.sequence(runbook.steps))
        except KeyboardInterrupt:
            live.refold = True  # it may have come between changing the state and recording it
            if live.tampered is None:
                self._interrupted()
        finally:
            self._close(live)
        try:
            current = not live.refold and self.store.last_seq(run_id) == live.state.last_seq
        except StoreError:
            current = False  # the read below says what is wrong with the store
        # The fold of exactly this journal, kept up to date while it ran; else the journal as
        # it stands is the truth.
        return live.state if current else self.state(run_id)

    def _begin(
        self,
        runbook: Runbook,
        state: RunState,
        guard: JournalGuard,
        events: list[Event],
        opened: OpenReport,
    ) -> Live:
        """Hold the run in memory as verified, start its notifiers, and record that it
        started (or resumed), with the commitments of the secrets it resolved."""
        resolved = self._start.secrets(runbook, state.mode)
        live = Live(state, runbook, resolved, Redactor(resolved.values()), guard=guard)
        live.left_out = left_out(runbook, state.selection)
        live.acts_signed = act_key_needed(events)
        live.by_alert = started_by_alert(events[0].data)
        for event in events:
            live.index(event)
        self._writer.live = live
        if self.notify:
            live.notifiers = self._start_notifiers(live, events)
        first = state.attempts == 0
        opening: dict[str, Any] = {"attempt": state.attempts + 1}
        if opened.unsealed is not None and not first:
            # What the last execution appended after its last checkpoint (it died before
            # sealing it): accepted on the store's word, and said so in the transcript.
            opening["unsealed"] = {"from": opened.unsealed[0], "to": opened.unsealed[1]}
        if resolved and state.mode != "tabletop":  # salted commitments (irctl.secrets)
            from irctl.secrets import commitments

            opening["secrets"] = commitments(self.store, state.run_id, runbook.secrets, resolved)
        self._writer.emit(ev.RUN_STARTED if first else ev.RUN_RESUMED, opening)
        return live

    def _conclude(self, live: Live, outcome: str) -> None:
        """Record how the run's steps ended: failed (after its on_failure steps), waiting,
        interrupted or succeeded."""
        state, runbook, writer = live.state, live.runbook, self._writer
        if live.tampered is not None:
            pass  # recorded on the way out, unsealed: nothing of the forgery is sealed
        elif state.status == "aborted":
            pass  # someone aborted the run meanwhile: it ends where they stopped it
        elif outcome == FAIL:
            failed = state.failed_step or _aborting_step(runbook.steps, state)
            state.failed_step = failed
            if runbook.on_failure:
                self._schedule.sequence(runbook.on_failure, compensating=True)
            writer.emit(ev.RUN_FAILED, {"failed_step": failed}, defer=True)
        elif outcome == WAIT:
            waiting = [{"step": s.key, "for": s.waiting_for} for s in state.waiting()]
            data: dict[str, Any] = {"steps": waiting}
            if live.unadopted is not None:  # an alert started it: a person must take it over
                data["adoption"] = {
                    "step": live.unadopted,
                    "command": adopt_command(state.run_id, "OPERATOR"),
                }
            writer.emit(ev.RUN_WAITING, data, defer=True)
        elif outcome == STOP:
            self._interrupted()
        else:
            writer.emit(ev.RUN_SUCCEEDED, {}, defer=True)

    def _close(self, live: Live) -> None:
        """Commit and seal the run's last word (or record the tampering found, unsealed),
        then let go of the run and its notifiers."""
        writer = self._writer
        run_id = live.state.run_id
        if live.tampered is not None:
            live.refold = True
            with writer.lock:
                writer.deferred = []  # an outcome after the forgery is not recorded as one
            with contextlib.suppress(StoreError):
                writer.append(run_id, [(RUN_TAMPERED, live.tampered.as_data("while running"))])
        elif self.signing_key is not None:
            # The run's last word and the checkpoint sealing it are one transaction.
            writer.checkpoint(run_id)
        else:
            writer.flush()
        writer.live = None
        for _, started in live.notifiers:
            quietly(started.close, self.notify_grace)

    def _refuse(
        self, run_id: str, state: RunState, guard: JournalGuard, tampering: Tampering
    ) -> RunState:
        """A run whose journal does not verify on opening: recorded, and nothing runs."""
        data = tampering.as_data("on opening the run")
        made = self.store.append(run_id, [(RUN_TAMPERED, data)])
        if self.listener:
            for event in made:
                self.listener(event)
        if self.notify:
            self._alert(run_id, state, made)
        state.apply(made[-1])
        return state

    def _alert(self, run_id: str, state: RunState, made: list[Event]) -> None:
        """Tell the configured notifiers (Slack) about a refused run, loudly."""
        shell = Runbook.model_construct(irctl=1, id=state.runbook, title=state.title, steps=[])
        live = Live(state, shell, {}, Redactor())
        self._writer.live = live
        try:
            started = self._start_notifiers(live, [])
            for _, notifier in started:
                for event in made:
                    quietly(notifier.notify, event, summary(live))
                quietly(notifier.close, self.notify_grace)
        finally:
            self._writer.live = None

    def _interrupted(self) -> None:
        live = self._writer.require_live()
        if live.state.status == "aborted":
            return
        live.cancelled.set()
        for flag in list(live.active):
            flag.set()
        deadline = time.monotonic() + self.cancel_grace
        while live.active and time.monotonic() < deadline:
            time.sleep(0.01)
        for step in live.state.unresolved():
            if step.status == RUNNING:
                self._writer.emit_step(
                    ev.STEP_INTERRUPTED, step.key, {"reason": "stopped by operator"}
                )
        self._writer.emit(
            ev.RUN_INTERRUPTED, {"resume": f"irctl resume {live.state.run_id}"}, defer=True
        )

    def _start_notifiers(self, live: Live, history: list[Event]) -> list[tuple[str, Notifier]]:
        """Notifiers of the configured integrations; one that cannot start is recorded."""
        from irctl.actions import NotifyContext

        writer = self._writer
        started: list[tuple[str, Notifier]] = []
        try:
            factories = self.registry.notifiers(self.config.integrations)
        except IrctlError as exc:
            writer.emit("notify.unavailable", {"error": str(exc)})
            return started
        run_id = live.state.run_id

        def record(kind: str, data: dict[str, Any]) -> None:
            body = live.redactor.event(data)
            if writer.live is live:
                writer.append(run_id, [(kind, body)])
            else:
                self.store.append(run_id, [(kind, body)])

        for namespace, factory in factories:
            context = NotifyContext(
                run_id=run_id, config=dict(self.config.integrations.get(namespace, {})),
                operators=dict(live.state.operators), mode=live.state.mode,
                history=list(history), record=record,
            )  # fmt: skip
            try:
                made = factory(context)
            except Exception as exc:  # a notifier never stops a run
                writer.emit("notify.unavailable", {"integration": namespace, "error": str(exc)})
                continue
            if made is not None:
                started.append((namespace, made))
        return started


def _waiver_check(runbook: Runbook, state: RunState) -> Callable[[Event], str | None]:
    """Why a recorded hand skip may not stand, checked against the runbook's ``skip:`` rule and
    the roles the run recorded (irctl skip refuses each first; only a row written around it
    can hold one)."""

    def check(event: Event) -> str | None:
        data = event.data
        item = data.get("item")
        key = f"{data.get('step')}" + (f"[{item}]" if item is not None else "")
        problem = skip_problem(runbook, state.operators, key, str(data.get("by")))
        return None if problem is None else f"a skip irctl would refuse: {problem}"

    return check
