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
"""

from __future__ import annotations

import contextlib
import json
import secrets as _random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from irctl import __version__
from irctl.actions import (
    Action,
    ActionContext,
    Asker,
    Display,
    Notifier,
    Registry,
    WaitForOperator,
    default_registry,
)
from irctl.canonical import canonical_json
from irctl.engine.guard import RUN_TAMPERED, JournalGuard, Tampering
from irctl.engine.plan import SECRET_ITEM, resolve_policy, step_digest, template_context
from irctl.errors import (
    ActionError,
    ActionTimeout,
    CorruptEvent,
    IntegrationError,
    IrctlError,
    StoreError,
    UsageError,
)
from irctl.journal import events as ev
from irctl.journal.events import Event, utcnow
from irctl.journal.state import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    RunState,
    StepState,
    fold,
    step_key,
)
from irctl.record.approvals import SIGNED_ACTS, acts_must_be_signed, sign_act
from irctl.runbook.model import Config, Policy, Runbook, Step
from irctl.runbook.render import (
    REDACTED,
    Redactor,
    RenderError,
    mentions,
    render,
    render_shown,
    sha256_hex,
    template_strings,
    texts,
)
from irctl.runbook.render import digest as digest_of

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.journal.store import Item, Seal, Store

# Outcomes of executing a step or a sequence, in rising order of precedence.
OK = "ok"
WAIT = "waiting"
FAIL = "failed"
STOP = "interrupted"
_RANK = {OK: 0, WAIT: 1, FAIL: 2, STOP: 3}

Listener = Callable[[Event], None]
MARKS = ("done", "retry", "failed")


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"r-{stamp}-{_random.token_hex(3)}"


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


def _worst(outcomes: Iterable[str]) -> str:
    return max(outcomes, key=_RANK.__getitem__, default=OK)


MAX_ANSWER = 16 * 1024  # bytes of a person's answer to a manual step


@dataclass
class _Live:
    """What one execution of a run holds in memory (all of it derivable from the journal)."""

    state: RunState
    runbook: Runbook
    secrets: dict[str, str]
    redactor: Redactor
    cancelled: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # unredacted, this process
    active: set[threading.Event] = field(default_factory=set)
    notifiers: list[tuple[str, Notifier]] = field(default_factory=list)
    static: dict[str, bool] = field(default_factory=dict)  # step id -> inputs hold no template
    digests: dict[str, str] = field(default_factory=dict)  # step key -> digest of static inputs
    # The state may differ from a fold of the journal: events of other processes were
    # folded in out of order, or the run was interrupted between two records.
    refold: bool = False
    guard: JournalGuard | None = None  # the chain as this process verified it
    tampered: Tampering | None = None  # what did not verify: nothing more runs
    # Every approval event of the run, by (step, item), as verified: the gate counts from these.
    approvals: dict[tuple[str, int | None], list[Event]] = field(default_factory=dict)
    # The facts each step's attempts recorded (ActionContext.record), as verified.
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    acts_signed: bool = False  # answers, marks and aborts carry their operator's signature

    def index(self, event: Event) -> None:
        """Keep what the engine reads back of a verified event: approvals and facts."""
        data = event.data
        if event.type.startswith("approval."):
            self.approvals.setdefault(_gate_key(data), []).append(event)
        elif event.type == ev.STEP_NOTE and isinstance(data.get("facts"), dict):
            key = step_key(str(data.get("step")), _gate_key(data)[1])
            self.facts.setdefault(key, {}).update(data["facts"])


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
        self._sleep = sleep
        self._lock = threading.Lock()
        self._live: _Live | None = None
        # Group commit: the outcome of a step run on the engine's own thread is committed in
        # the same transaction as whatever the engine records next (the next step's
        # `step.started`, a skip, the run's end), so each step costs one durable commit.  It is
        # still durable before anything else happens: nothing runs in between but rendering.
        self._deferred: list[Item] = []
        self._local = threading.local()

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
    ) -> str:
        """Record a new run (``run.created``) with the exact runbook text; runs nothing.

        In a workspace with operators, a live run is started only by an operator, with
        ``starter_key`` their own key (the key irctl.yaml lists for them), and, for a runbook
        with ``start:``, only by one holding one of its roles: ``run.created`` carries their
        signed statement, which the engine checks again each time it opens the run.
        """
        if mode not in ("live", "tabletop", "sandbox"):
            raise UsageError(f"mode must be live, tabletop or sandbox, not {mode!r}")
        from irctl.record.approvals import impossible

        roles_of = {name: op.roles for name, op in self.config.operators.items()}
        for step in runbook.all_steps():
            _, policy = resolve_policy(runbook, step)
            keyed = [name for name, op in self.config.operators.items() if op.key]
            problem = (
                impossible(policy, roles_of, initiator, keyed=keyed) if policy is not None else None
            )
            if problem:
                raise UsageError(f"step '{step.id}' could never be approved: {problem}")
        run_id = run_id or new_run_id()
        start = self._signed_start(runbook, initiator, mode, starter_key)
        data: dict[str, Any] = {
            "runbook": runbook.id,
            "title": runbook.title,
            "runbook_digest": "sha256:" + sha256_hex(runbook_text),
            "runbook_text": runbook_text,
            "params": params,
            "initiator": initiator,
            "mode": mode,
            "incident": incident,
            "irctl": __version__,
            "operators": {
                name: {"roles": list(op.roles), "key": op.key, "slack": op.slack}
                for name, op in sorted(self.config.operators.items())
            },
            "break_glass_roles": list(self.config.break_glass.roles),
            "acts": SIGNED_ACTS,  # a live run's answers, marks and aborts are signed
        }
        if start is not None and starter_key is not None:  # _signed_start demands the key
            from irctl.identity import public_key_text, sign
            from irctl.record.approvals import start_statement

            body = {**data, "run": run_id}
            data["start"] = {
                "roles": list(start), "key": public_key_text(starter_key),
                "sig": sign(starter_key, start_statement(body)),
            }  # fmt: skip
        if self.signing_key is not None:  # a row nobody can forge without the key
            from irctl.engine.guard import seal_created

            data["sealed_by"] = seal_created(run_id, data, self.signing_key)
        first = self.store.create_run(
            run_id, runbook=runbook.id, initiator=initiator, mode=mode, incident=incident, data=data
        )
        if self.listener:
            self.listener(first)
        return run_id

    def _signed_start(
        self, runbook: Runbook, initiator: str, mode: str, key: Ed25519PrivateKey | None
    ) -> list[str] | None:
        """The roles allowed to start a live run of ``runbook`` (``[]``: any operator), or None
        when its start is not signed (not live, or no operators configured); UsageError when
        the initiator is not allowed or does not hold their own key."""
        if mode != "live" or not self.config.operators:
            return None
        from irctl.identity import public_key_text

        allowed = runbook.start.roles if runbook.start is not None else []
        operator = self.config.operators.get(initiator)
        roles = operator.roles if operator is not None else []
        if operator is None:
            raise UsageError(
                f"{initiator} is not an operator in irctl.yaml, and a live run is started by one"
            )
        if allowed and not set(roles) & set(allowed):
            raise UsageError(
                f"{initiator} (roles: {', '.join(sorted(roles)) or 'none'}) may not start a live "
                f"run of '{runbook.id}': its start.roles allows {', '.join(sorted(allowed))}"
            )
        if not operator.key:
            raise UsageError(
                f"a live run is started with the initiator's own key, and irctl.yaml has none "
                f"for {initiator}: run 'irctl keys generate {initiator}' and add the line it prints"
            )
        if key is None or public_key_text(key) != operator.key:
            raise UsageError(
                f"starting a live run of '{runbook.id}' needs {initiator}'s own private key "
                f"(the one irctl.yaml lists): give --key FILE, or keep it where "
                f"'irctl keys generate {initiator}' put it"
            )
        return list(allowed)

    def _acts_problem(self, state: RunState, created: Event) -> str | None:
        """Why a live run may not go on in a workspace with operators: its ``run.created``
        does not ask for signed answers, marks and aborts (or names no operators), so a
        person's word in it would be taken unsigned.  A record without the request was
        rewritten (the installation key's holder can re-seal it) or made by an older irctl."""
        if state.mode != "live" or not self.config.operators:
            return None
        if acts_must_be_signed(created.data):
            return None
        return (
            "run.created does not ask for the answers, marks and aborts of this live run to be "
            "signed by their operators (or records no operators), although irctl.yaml lists "
            "operators: its record was rewritten to take a person's word unsigned, or the run "
            "was started by an older irctl or before operators were configured; finish it with "
            "that irctl, or start a new run"
        )

    def _start_problem(self, runbook: Runbook, state: RunState, created: Event) -> str | None:
        """Why a live run may not go on in a workspace with operators: its recorded start is
        not the signed statement of its initiator, an operator irctl.yaml lists (holding one
        of the runbook's ``start.roles``, when it names them).  A run started by an irctl
        older than signed starts has none."""
        if state.mode != "live" or not self.config.operators:
            return None
        from irctl.record.approvals import start_problem

        operator = self.config.operators.get(state.initiator)
        pinned = state.operators.get(state.initiator) or {}
        roles = [r for r in (operator.roles if operator else []) if r in pinned.get("roles", [])]
        allowed = runbook.start.roles if runbook.start is not None else None
        if operator is None:
            return f"{state.initiator}, who started run {state.run_id}, is not in irctl.yaml"
        return start_problem(
            created.data.get("start"), created.data, state.run_id, allowed, roles, operator.key
        )

    def record(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        """Append one event from outside an execution (answers, marks, notes), sealed; a
        secret the run resolved is masked in its text, answer or reason."""
        data = self._masked(run_id, data)
        made = self._record_outside(run_id, [(kind, data)])
        self.anchor(made)
        return made[0]

    def _record_outside(self, run_id: str, items: list[tuple[str, dict[str, Any]]]) -> list[Event]:
        """Append from outside an execution, sealed with the installation key, only onto a
        journal this process has just verified: a checkpoint signed here never vouches for a
        row nobody checked (someone's forgery sealed by an honest ``irctl note``, say)."""
        from irctl.engine.guard import RunTampered, describe
        from irctl.journal.store import HeadMoved

        if self.signing_key is None:
            if self.config.installation_key:
                raise UsageError(
                    f"irctl.yaml names the installation key {self.config.installation_key}, but "
                    "this workspace has no key file (.irctl/installation.key): what it recorded "
                    "could not be sealed, and a run refuses unsealed events as tampering; copy "
                    "the installation key here first"
                )
            return self.store.append(run_id, items)
        for _ in range(20):  # others appending meanwhile: check their events, then again
            events = self.store.events(run_id)
            guard = JournalGuard(run_id, self._trusted_keys())
            opened = guard.open(events, pinned=_pinned(events), configured=self._configured_keys())
            if opened.tampering is not None:
                raise RunTampered(describe(opened.tampering, run_id))
            try:
                return self.store.append(
                    run_id, items, seal=self._sealer(), expect=(guard.seq, guard.head)
                )
            except HeadMoved:
                continue
        raise StoreError(f"cannot append to run {run_id}: other writers kept winning")

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
        from irctl.record.approvals import decision

        if reason is not None:  # masked before it is signed: the signature covers what is kept
            reason = self._masked(run_id, {"reason": reason})["reason"]
        kind, data = decision(
            self.store, run_id, key, operator=operator, approve=approve, reason=reason,
            private_key=private_key, break_glass=break_glass, channel=channel,
            slack_user=slack_user, digest=digest,
        )  # fmt: skip
        return self.record(run_id, kind, data)

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
        ``private_key``, which a live run with operators demands: :meth:`act_key`)."""
        events = self.store.events(run_id)
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
        if step.answer is not None:  # two people answering at once: the first answer stands
            raise UsageError(
                f"step '{key}' of run {run_id} already has an answer from "
                f"{step.answered_by or 'someone'}, used when the run goes on "
                f"(irctl resume {run_id}); if the step asks again, answer then"
            )
        signer = self._act_signer(events, state, operator, private_key, "answer")
        step_id, item = _split_key(key)
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
        events = self.store.events(run_id)
        state = fold(events)
        if state.finished:
            raise UsageError(f"run {run_id} has already {state.status}")
        step = state.steps.get(key)
        if step is None or step.status not in (RUNNING, INTERRUPTED, WAITING):
            doubtful = [s.key for s in state.unresolved() + state.waiting()]
            hint = f"; in doubt: {', '.join(doubtful)}" if doubtful else ""
            raise UsageError(f"step '{key}' of run {run_id} is not in doubt{hint}")
        signer = self._act_signer(events, state, operator, private_key, "mark")
        step_id, item = _split_key(key)
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
        events = self.store.events(run_id)
        state = fold(events)
        if state.finished:
            raise UsageError(f"run {run_id} has already {state.status}")
        signer = self._act_signer(events, state, operator, private_key, "abort")
        data = self._masked(run_id, {"reason": reason, "by": operator})
        if signer is not None:
            data = sign_act(signer, run_id, ev.RUN_ABORTED, data)
        if self._live is not None and self._live.state.run_id == run_id:
            with self._lock:
                made = self._append(run_id, [(ev.RUN_ABORTED, data)], locked=True, seal=True)
        else:
            made = self._record_outside(run_id, [(ev.RUN_ABORTED, data)])
        self.anchor(made)
        return self.state(run_id)

    @staticmethod
    def act_key_needed(events: list[Event]) -> bool:
        """Must answers, marks and aborts in this run be signed (a live run with operators)?"""
        return bool(events) and acts_must_be_signed(events[0].data)

    def _act_signer(
        self,
        events: list[Event],
        state: RunState,
        operator: str,
        private_key: Ed25519PrivateKey | None,
        what: str,
    ) -> Ed25519PrivateKey | None:
        """The key that signs ``operator``'s act, checked against the key the run pinned for
        them and the one irctl.yaml lists now; None where the run asks for no signature."""
        required = self.act_key_needed(events)
        if private_key is None and not required:
            return None
        pinned = state.operators.get(operator)
        configured = self.config.operators.get(operator)
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
        data = self._masked(run_id, data)
        if signer is not None:
            data = sign_act(signer, run_id, kind, data)
        self.anchor(self._record_outside(run_id, [(kind, data)]))

    def _masked(self, run_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with a person's words (``text``, ``answer``, ``reason``) masked wherever
        they hold a secret value the run resolved, recognised by the run's commitments
        (:func:`irctl.secrets.recogniser`): this process need not have resolved them."""
        words = [k for k in ("text", "answer", "reason") if isinstance(data.get(k), str)]
        if not words:
            return data
        from irctl.secrets import recogniser

        mask = recogniser(self.store, run_id, self.store.events(run_id))
        live = self._live if self._live is not None and self._live.state.run_id == run_id else None
        masked = dict(data)
        for k in words:
            masked[k] = mask(live.redactor.text(data[k]) if live is not None else data[k])
        return masked

    def _sealer(self) -> Seal | None:
        if self.signing_key is None:
            return None
        from irctl.record.transcript import sealer

        return sealer(self.signing_key)

    def _checkpoint(self, run_id: str) -> None:
        """Commit anything deferred and seal the run's head, in one transaction."""
        with self._lock:
            if not self._deferred:
                known = self._live.state.last_seq if self._live is not None else 1
                tail = self.store.events(run_id, after=max(0, known - 1))
                if tail and tail[-1].type == ev.CHECKPOINT:
                    return  # already sealed (by an abort from another process, say)
            made = self._append(run_id, [], locked=True, seal=True)
        self.anchor(made)

    def anchor(self, made: list[Event]) -> None:
        """Write a new checkpoint's head to WORM storage, if irctl.yaml configures an anchor.

        Not for tabletop drills: writing an anchor is an integration's ``run`` (S3 under
        Object Lock), which a drill never reaches.
        """
        if made and made[-1].type == ev.CHECKPOINT and self.config.integrations.get("anchor"):
            row = self.store.get_run(made[-1].run)
            if row is not None and row.mode == "tabletop":
                return
            from irctl.record.anchor import anchor_quietly

            anchor_quietly(made[-1], self.config, self.registry)

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

        events = self.store.events(run_id)
        guard = JournalGuard(run_id, self._trusted_keys())
        # Verified before it is folded: a crafted row is named as tampering, not a crash.
        opened = guard.open(events, pinned=_pinned(events), configured=self._configured_keys())
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
                self._checkpoint(run_id)
                return self.state(run_id)
            raise UsageError(f"run {run_id} has already {state.status}; nothing to resume")
        runbook = load_runbook_text(state.runbook_text, f"{run_id}:runbook", registry=self.registry)
        problem = self._start_problem(runbook, state, events[0]) or self._acts_problem(
            state, events[0]
        )
        if problem is not None:
            return self._refuse(run_id, state, guard, Tampering(1, problem))
        resolved = self._resolve_secrets(runbook, state.mode)
        live = _Live(state, runbook, resolved, Redactor(resolved.values()), guard=guard)
        live.acts_signed = self.act_key_needed(events)
        for event in events:
            live.index(event)
        self._live = live
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

            opening["secrets"] = commitments(self.store, run_id, runbook.secrets, resolved)
        self._emit(ev.RUN_STARTED if first else ev.RUN_RESUMED, opening)
        try:
            outcome = self._sequence(runbook.steps)
            if live.tampered is not None:
                pass  # recorded below, unsealed: nothing of the forgery is sealed
            elif state.status == "aborted":
                pass  # someone aborted the run meanwhile: it ends where they stopped it
            elif outcome == FAIL:
                failed = state.failed_step or _aborting_step(runbook.steps, state)
                state.failed_step = failed
                if runbook.on_failure:
                    self._sequence(runbook.on_failure, compensating=True)
                self._emit(ev.RUN_FAILED, {"failed_step": failed}, defer=True)
            elif outcome == WAIT:
                waiting = [{"step": s.key, "for": s.waiting_for} for s in state.waiting()]
                self._emit(ev.RUN_WAITING, {"steps": waiting}, defer=True)
            elif outcome == STOP:
                self._interrupted()
            else:
                self._emit(ev.RUN_SUCCEEDED, {}, defer=True)
        except KeyboardInterrupt:
            live.refold = True  # it may have come between changing the state and recording it
            if live.tampered is None:
                self._interrupted()
        finally:
            if live.tampered is not None:
                live.refold = True
                with self._lock:
                    self._deferred = []  # an outcome after the forgery is not recorded as one
                with contextlib.suppress(StoreError):
                    self._append(run_id, [(RUN_TAMPERED, live.tampered.as_data("while running"))])
            elif self.signing_key is not None:
                # The run's last word and the checkpoint sealing it are one transaction.
                self._checkpoint(run_id)
            else:
                self._flush()
            self._live = None
            for _, started in live.notifiers:
                _quietly(started.close, self.notify_grace)
        try:
            current = not live.refold and self.store.last_seq(run_id) == live.state.last_seq
        except StoreError:
            current = False  # the read below says what is wrong with the store
        # The fold of exactly this journal, kept up to date while it ran; else the journal as
        # it stands is the truth.
        return live.state if current else self.state(run_id)

    # -- verifying before acting (irctl.engine.guard) ------------------------------------------

    def _trusted_keys(self) -> list[str] | None:
        """The installation keys whose checkpoints this engine believes (None: no trust root,
        only the chain's continuity is checked)."""
        from irctl.identity import public_key_text

        keys = [self.config.installation_key] if self.config.installation_key else []
        if self.signing_key is not None and public_key_text(self.signing_key) not in keys:
            keys.append(public_key_text(self.signing_key))
        return keys or None

    def _configured_keys(self) -> dict[str, str | None] | None:
        """Operator keys as irctl.yaml lists them now (None when it lists no operators)."""
        if not self.config.operators:
            return None
        return {name: op.key for name, op in self.config.operators.items()}

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
        live = _Live(state, shell, {}, Redactor())
        self._live = live
        try:
            started = self._start_notifiers(live, [])
            for _, notifier in started:
                for event in made:
                    _quietly(notifier.notify, event, self._summary(live))
                _quietly(notifier.close, self.notify_grace)
        finally:
            self._live = None

    def _tamper(self, live: _Live, tampering: Tampering) -> None:
        """Something read back did not verify: no new step starts; the run stops."""
        if live.tampered is None:
            live.tampered = tampering
        live.cancelled.set()
        for flag in list(live.active):
            flag.set()

    def _interrupted(self) -> None:
        live = self._require_live()
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
                self._emit_step(ev.STEP_INTERRUPTED, step.key, {"reason": "stopped by operator"})
        self._emit(ev.RUN_INTERRUPTED, {"resume": f"irctl resume {live.state.run_id}"}, defer=True)

    def _resolve_secrets(self, runbook: Runbook, mode: str = "live") -> dict[str, str]:
        from irctl.secrets import resolve

        if mode == "tabletop":  # a drill reads no secret: nothing it runs for real needs one
            return {name: f"drill-placeholder-{name}" for name in runbook.secrets}
        if mode == "sandbox":  # the sandbox's own references, never the production ones
            missing = sorted(set(runbook.secrets) - set(self.config.secrets))
            if missing:
                raise UsageError(
                    f"a sandbox run never reads production secrets: give the sandbox's own "
                    f"reference for {', '.join(missing)} under 'secrets:' in the sandbox config "
                    "(e.g. secrets: {" + f"{missing[0]}: env:SANDBOX_{missing[0].upper()}" + "})"
                )
            aws = self.config.integrations.get("aws")
            return {
                name: resolve(name, self.config.secrets[name], base=self.workspace, aws=aws)
                for name in runbook.secrets
            }
        return {
            name: resolve(name, ref, base=self.workspace, aws=self.config.integrations.get("aws"))
            for name, ref in runbook.secrets.items()
        }

    def _require_live(self) -> _Live:
        if self._live is None:  # pragma: no cover - internal misuse
            raise IrctlError("the engine is not executing a run")
        return self._live

    def _append(
        self,
        run_id: str,
        items: list[tuple[str, dict[str, Any]]],
        *,
        locked: bool = False,
        defer: bool = False,
        seal: bool = False,
    ) -> list[Event]:
        if not locked:
            with self._lock:
                return self._append(run_id, items, locked=True, defer=defer, seal=seal)
        live = self._live
        if defer and live is not None and not getattr(self._local, "concurrent", False):
            for kind, data in items:  # the state sees it now; the journal with the next append
                now = utcnow()  # recorded as the time it happened, not the time of the commit
                self._deferred.append((kind, data, now))
                live.state.apply(Event(run_id, live.state.last_seq, now, kind, data, "", "", ""))
            return []
        applied = len(self._deferred)  # already folded into the state when deferred
        batch: list[Item] = [*self._deferred, *items]
        self._deferred = []
        expected = live.state.last_seq + 1 if live is not None else 0
        guarded = live is not None and live.guard is not None and live.state.run_id == run_id
        if guarded and live is not None and live.guard is not None:
            made = self._append_verified(live, live.guard, run_id, batch, seal)
        else:
            made = self.store.append(run_id, batch, seal=self._sealer() if seal else None)
        if live is not None and live.state.run_id == run_id:
            if made and made[0].seq > expected and not guarded:
                self._fold_foreign(live, expected, made[0].seq)
            if live.guard is not None and live.tampered is None:
                problem = live.guard.own(made)
                if problem is not None:
                    self._tamper(live, problem)
            for event in made[applied:]:
                live.state.apply(event)
            for event in made:
                live.index(event)
            if made:
                live.state.last_seq, live.state.head = made[-1].seq, made[-1].hash
        if self.listener:
            for event in made:
                self.listener(event)
        if live is not None and live.notifiers and made:
            summary = self._summary(live)
            for event in made:
                for _, started in live.notifiers:
                    _quietly(started.notify, event, summary)
        return made

    def _append_verified(
        self, live: _Live, guard: JournalGuard, run_id: str, batch: list[Item], seal: bool
    ) -> list[Event]:
        """Chain onto the last event this process verified; if others appended since, check
        their events first (a checkpoint signed here covers nothing unchecked)."""
        from irctl.journal.store import HeadMoved

        while live.tampered is None:
            try:
                return self.store.append(
                    run_id, batch, seal=self._sealer() if seal else None,
                    expect=(guard.seq, guard.head),
                )  # fmt: skip
            except HeadMoved:
                self._fold_foreign(live, guard.seq + 1)
        # Tampered with: what is recorded from now on is evidence, never sealed.
        return self.store.append(run_id, batch)

    # -- notifications -----------------------------------------------------------------

    def _start_notifiers(self, live: _Live, history: list[Event]) -> list[tuple[str, Notifier]]:
        """Notifiers of the configured integrations; one that cannot start is recorded."""
        from irctl.actions import NotifyContext

        started: list[tuple[str, Notifier]] = []
        try:
            factories = self.registry.notifiers(self.config.integrations)
        except IrctlError as exc:
            self._emit("notify.unavailable", {"error": str(exc)})
            return started
        run_id = live.state.run_id

        def record(kind: str, data: dict[str, Any]) -> None:
            body = live.redactor.event(data)
            if self._live is live:
                self._append(run_id, [(kind, body)])
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
                self._emit("notify.unavailable", {"integration": namespace, "error": str(exc)})
                continue
            if made is not None:
                started.append((namespace, made))
        return started

    def _integration_config(self, namespace: str) -> dict[str, Any]:
        """An action's ``ctx.config``: its integration's settings, plus ``_operators`` (the
        operators as recorded at run start: roles and Slack ids, never a secret) and
        ``_workspace`` (the folder relative paths in the settings are read from)."""
        live = self._require_live()
        found = {**self.config.integrations.get(namespace, {}), "_operators": live.state.operators}
        if self.workspace is not None:
            found["_workspace"] = str(self.workspace)
        return found

    def _summary(self, live: _Live) -> dict[str, Any]:
        state = live.state
        return {
            "run_id": state.run_id, "runbook": state.runbook, "title": state.title,
            "mode": state.mode, "incident": state.incident, "initiator": state.initiator,
            "status": state.status, "failed_step": state.failed_step,
            "steps": [
                {"step": s.key, "status": s.status, "error": s.error,
                 "waiting_for": s.waiting_for, "approvers": list(s.approvers)}
                for s in state.steps.values()
            ],
        }  # fmt: skip

    def _fold_foreign(self, live: _Live, first: int, upto: int | None = None) -> None:
        """Fold events other processes appended (approvals, notes, an abort) into the state,
        and tell the view and the notifiers about them."""
        guard = live.guard
        if live.tampered is not None:
            return
        try:
            found = self.store.events(live.state.run_id, after=first - 1)
        except CorruptEvent as exc:
            self._tamper(live, Tampering(None, exc.message))
            return
        batch = [e for e in found if upto is None or e.seq < upto]
        # Checked whole before any of it is folded in, shown or sent to Slack.
        for event in batch:
            if guard is not None and (problem := guard.foreign(event)) is not None:
                self._tamper(live, problem)
                return
        if guard is not None and (problem := guard.settled()) is not None:
            self._tamper(live, problem)
            return
        for event in batch:
            live.refold = True
            try:
                live.state.apply(event)
            except Exception as exc:  # a sealed event irctl cannot fold: never act on it
                self._tamper(live, Tampering(event.seq, f"event {event.seq} ({event.type}) "
                                             f"does not make sense: {type(exc).__name__}"))
                return
            live.index(event)
            if self.listener:
                self.listener(event)
            if live.notifiers:
                summary = self._summary(live)
                for _, started in live.notifiers:
                    _quietly(started.notify, event, summary)
            if event.type == ev.RUN_ABORTED:
                live.cancelled.set()  # no new step starts; steps in flight finish

    def _emit(self, kind: str, data: dict[str, Any], *, defer: bool = False) -> None:
        live = self._require_live()
        self._append(live.state.run_id, [(kind, live.redactor.event(data))], defer=defer)

    def _emit_step(self, kind: str, key: str, data: dict[str, Any], *, defer: bool = False) -> None:
        step_id, item = _split_key(key)
        body = {"step": step_id, **data}
        if item is not None:
            body["item"] = item
        self._emit(kind, body, defer=defer)

    def _flush(self) -> None:
        """Commit a deferred outcome now (before a checkpoint, on the way out)."""
        with self._lock:
            if self._deferred and self._live is not None:
                self._append(self._live.state.run_id, [], locked=True)

    def _context(self, item: Any = None, has_item: bool = False) -> dict[str, Any]:
        live = self._require_live()
        state = live.state
        run = {
            "id": state.run_id, "runbook": state.runbook, "mode": state.mode,
            "incident": state.incident, "initiator": state.initiator,
            "started_at": state.created_at, "failed_step": state.failed_step,
        }  # fmt: skip
        return template_context(
            params=state.params, secrets=live.secrets, vars=self.config.vars, run=run,
            steps=_StepsView(live), item=item, has_item=has_item,
        )  # fmt: skip

    def _sequence(self, steps: list[Step], *, compensating: bool = False) -> str:
        live = self._require_live()
        for step in steps:
            if live.cancelled.is_set():
                return STOP
            outcome = self._step(step)
            if outcome == FAIL and compensating:
                continue  # a failed compensation step is recorded; the others still run
            if outcome != OK:
                return outcome
        return OK

    def _finished_outcome(self, step: Step, state: StepState) -> str | None:
        if state.status in (SUCCEEDED, SKIPPED):
            return OK
        if state.status == FAILED:
            return OK if step.on_failure == "continue" else FAIL
        return None

    def _step(self, step: Step) -> str:
        live = self._require_live()
        known = live.state.steps.get(step.id)
        if known is not None and (done := self._finished_outcome(step, known)) is not None:
            return done
        if known is None or known.status not in (RUNNING, INTERRUPTED, WAITING):
            try:
                if not self._when(step):
                    reason = {"reason": "'when' is false"}
                    self._emit_step(ev.STEP_SKIPPED, step.id, reason, defer=True)
                    return OK
            except RenderError as exc:
                self._emit_step(ev.STEP_FAILED, step.id, {"error": str(exc), "attempt": 0})
                return OK if step.on_failure == "continue" else FAIL
        if step.parallel is not None:
            return self._parallel(step)
        if step.for_each is not None:
            return self._fan_out(step)
        return self._action_step(step, step.id)

    def _concurrently(self, fn: Callable[[Any], str]) -> Callable[[Any], str]:
        """Mark the worker threads of a block: their outcomes are committed at once."""

        def wrapped(arg: Any) -> str:
            self._local.concurrent = True
            return fn(arg)

        return wrapped

    def _when(self, step: Step) -> bool:
        if step.when is None:
            return True
        if isinstance(step.when, bool):
            return step.when
        value = render(step.when, self._context())
        if isinstance(value, str):
            return value.strip().lower() not in ("", "false", "no", "0", "none")
        return bool(value)

    def _block_outcome(self, step: Step, outcomes: list[str], outputs: dict[str, Any]) -> str:
        worst = _worst(outcomes)
        if worst == OK:
            self._emit_step(ev.STEP_SUCCEEDED, step.id, {"outputs": outputs}, defer=True)
            return OK
        if worst == FAIL:
            self._emit_step(ev.STEP_FAILED, step.id, {"error": "a step inside it failed"})
            return OK if step.on_failure == "continue" else FAIL
        return worst

    def _parallel(self, step: Step) -> str:
        live = self._require_live()
        if step.parallel is None:  # pragma: no cover - the model guarantees it
            raise IrctlError(f"step '{step.id}' is not a parallel block")
        known = live.state.steps.get(step.id)
        if known is None or known.status not in (RUNNING, INTERRUPTED, WAITING):
            self._emit_step(ev.STEP_STARTED, step.id, {"kind": "parallel", "attempt": 1})
        outcomes = _run_concurrently(
            self._concurrently(self._step), step.parallel, len(step.parallel), live
        )
        return self._block_outcome(step, outcomes, {})

    def _fan_out(self, step: Step) -> str:
        live = self._require_live()
        if step.action is None:  # pragma: no cover - the model guarantees it
            raise IrctlError(f"step '{step.id}' has no action")
        try:
            items = render(step.for_each, self._context())
            if not isinstance(items, list):
                raise RenderError(f"for_each must give a list, got {type(items).__name__}")
        except RenderError as exc:
            self._emit_step(ev.STEP_FAILED, step.id, {"error": str(exc), "attempt": 0})
            return OK if step.on_failure == "continue" else FAIL
        give_up = OK if step.on_failure == "continue" else FAIL
        name, policy = resolve_policy(live.runbook, step)
        if policy is not None:
            # One approval covers every item: the digest of all the items' digests.
            tainted = SECRET_ITEM if mentions(step.for_each, "secrets") else frozenset()
            try:
                shown = []
                for value in items:
                    context = self._context(value, has_item=True)
                    _, masked, hidden = render_shown(step.with_, context, tainted=tainted)
                    live.redactor.add(*texts(hidden))
                    shown.append(masked)
            except RenderError as exc:
                self._emit_step(ev.STEP_FAILED, step.id, {"error": str(exc), "attempt": 0})
                return give_up
            recorded = live.redactor(shown)
            combined = digest_of(
                [step_digest(step.id, step.action, inputs, i) for i, inputs in enumerate(recorded)]
            )
            gate = self._gate(step, step.id, name or "inline", policy, recorded, combined)
            if gate == FAIL:
                return give_up
            if gate != OK:
                return gate
        known = live.state.steps.get(step.id)
        if known is None or known.status not in (RUNNING, INTERRUPTED):
            self._emit_step(
                ev.STEP_STARTED, step.id,
                {"kind": "for_each", "action": step.action, "items": len(items), "attempt": 1},
            )  # fmt: skip
        stop = threading.Event()

        def one(index: int) -> str:
            key = step_key(step.id, index)
            if stop.is_set():
                state = live.state.steps.get(key)
                if state is None or state.status not in FINISHED:
                    return FAIL
            outcome = self._action_step(step, key, item=items[index], index=index, gated=True)
            if outcome == FAIL:
                stop.set()
            return outcome

        outcomes = _run_concurrently(
            self._concurrently(one), list(range(len(items))), step.max_parallel, live
        )
        collected = [
            live.outputs.get(step_key(step.id, i), live.state.step(step_key(step.id, i)).outputs)
            for i in range(len(items))
        ]
        if _worst(outcomes) == OK:
            live.outputs[step.id] = {"items": collected}
        return self._block_outcome(step, outcomes, {"items": live.redactor(collected)})

    # -- one action ------------------------------------------------------------------

    def _action_step(
        self,
        step: Step,
        key: str,
        *,
        item: Any = None,
        index: int | None = None,
        gated: bool = False,
    ) -> str:
        live = self._require_live()
        if step.action is None:  # pragma: no cover - the model guarantees it
            raise IrctlError(f"step '{step.id}' has no action")
        known = live.state.steps.get(key)
        if known is not None and (done := self._finished_outcome(step, known)) is not None:
            return done
        give_up = OK if step.on_failure == "continue" else FAIL
        try:
            act = self.registry.get(step.action)
            static = live.static.get(step.id)
            if static is None:  # inputs with no template are the same every time: hash once
                static = live.static[step.id] = not any(template_strings(step.with_))
            if static:
                inputs = shown = step.with_
            else:  # a field rendered from a secret is recorded as •••• (irctl.runbook.render)
                context = self._context(item, has_item=step.for_each is not None)
                tainted = SECRET_ITEM if mentions(step.for_each, "secrets") else frozenset()
                inputs, shown, hidden = render_shown(step.with_, context, tainted=tainted)
                live.redactor.add(*texts(hidden))
        except (IntegrationError, RenderError) as exc:
            self._emit_step(ev.STEP_FAILED, key, {"error": str(exc), "attempt": 0})
            return give_up
        if not isinstance(inputs, dict):
            inputs = shown = {}
        recorded = live.redactor(shown)
        cached = live.digests.get(key) if static else None
        digest = cached or step_digest(step.id, step.action, recorded, index)
        if static:
            live.digests[key] = digest
        idempotent = step.idempotent if step.idempotent is not None else act.idempotent
        answer: str | None = None
        if known is not None and known.status in (RUNNING, INTERRUPTED, WAITING):
            if known.status == WAITING and known.waiting_for == "answer":
                if known.answer is None:
                    return WAIT
                answer = known.answer
            elif known.status == WAITING and known.waiting_for == "approval":
                pass  # the gate below decides, with the inputs as they are now
            else:
                settled = self._settle(step, key, act, inputs, digest, known, idempotent)
                if settled is not None:
                    return settled if settled != FAIL else give_up
        name, policy = resolve_policy(live.runbook, step)
        if policy is not None and not gated:
            gate = self._gate(step, key, name or "inline", policy, recorded, digest)
            if gate == FAIL:
                return give_up
            if gate != OK:
                return gate
        attempts = step.retry.attempts if step.retry else 1
        attempt = known.attempt if known is not None else 0
        facts = self._facts(key) if known is not None else {}  # shared by the attempts
        while True:
            attempt += 1
            self._emit_step(
                ev.STEP_STARTED, key,
                {"action": step.action, "inputs": recorded, "digest": digest,
                 "attempt": attempt, "idempotent": idempotent},
            )  # fmt: skip
            if live.tampered is not None or live.cancelled.is_set():
                return STOP  # found while recording the start: the action is not called
            # A step with a timeout gets its own cancel flag; the others share the run's.
            flag = threading.Event() if step.timeout is not None else live.cancelled
            if live.cancelled.is_set():
                flag.set()
            ctx = ActionContext(
                run_id=live.state.run_id, step_id=key, attempt=attempt, mode=live.state.mode,
                config=self._integration_config(act.namespace), vars=self.config.vars,
                timeout=step.timeout, cancelled=flag,
                answers={key: answer} if answer is not None else {},
                interactive=self._asker(key), display=self.display,
                facts=facts,
            )  # fmt: skip
            ctx.recorder = self._recorder(key, ctx)
            if flag is not live.cancelled:
                live.active.add(flag)
            try:
                outputs = self._call(act, inputs, ctx, step.timeout)
            except WaitForOperator as wait:
                self._emit_step(
                    ev.STEP_WAITING, key,
                    {"for": "answer", "prompt": wait.prompt, "kind": wait.kind,
                     "choices": wait.choices},
                )  # fmt: skip
                return WAIT
            except KeyboardInterrupt:
                live.cancelled.set()
                self._emit_step(ev.STEP_INTERRUPTED, key, {"reason": "stopped by operator"})
                raise
            except ActionError as exc:
                self._notes(key, ctx)
                if flag.is_set() and live.cancelled.is_set():
                    self._emit_step(ev.STEP_INTERRUPTED, key, {"reason": "stopped by operator"})
                    return STOP
                if isinstance(exc, ActionTimeout) and not idempotent:
                    # It may have acted, or may still act (an abandoned attempt): never run it
                    # again on a guess.  A person checks and decides, as after a crash.
                    self._emit_step(
                        ev.STEP_WAITING, key,
                        {"for": "operator", "prompt": (
                            f"step '{key}' timed out ({exc}); {act.name} is not idempotent, so "
                            "its outcome is unknown and it is not retried: check by hand, then "
                            f"irctl resume {live.state.run_id} --step {key} "
                            "--mark done|retry|failed"
                        )},
                    )  # fmt: skip
                    return WAIT
                if exc.retryable and attempt < attempts and step.retry is not None:
                    delay = min(step.retry.backoff * 2 ** (attempt - 1), step.retry.max_backoff)
                    self._emit_step(
                        ev.STEP_RETRYING, key,
                        {"attempt": attempt, "error": str(exc), "delay": delay},
                    )  # fmt: skip
                    if self._pause(delay, live):
                        self._emit_step(ev.STEP_INTERRUPTED, key, {"reason": "stopped by operator"})
                        return STOP
                    continue
                self._emit_step(
                    ev.STEP_FAILED, key, {"error": str(exc), "attempt": attempt}, defer=True
                )
                return give_up
            finally:
                live.active.discard(flag)
            self._notes(key, ctx)
            if outputs:
                try:
                    canonical_json(outputs)
                except IrctlError as exc:  # an action's bug: record it, never wedge the run
                    error = f"{act.name} returned outputs that cannot be recorded: {exc}"
                    self._emit_step(ev.STEP_FAILED, key, {"error": error, "attempt": attempt})
                    return give_up
            live.outputs[key] = outputs
            if act.secret_outputs:  # masked whole, and searched for in what comes later
                live.redactor.add(*(str(outputs[k]) for k in act.secret_outputs if k in outputs))
                hide = act.secret_outputs
                outputs = {k: REDACTED if k in hide else v for k, v in outputs.items()}
            self._emit_step(
                ev.STEP_SUCCEEDED, key, {"outputs": outputs, "attempt": attempt}, defer=True
            )
            return OK

    # -- approvals -----------------------------------------------------------------

    def _gate(
        self, step: Step, key: str, name: str, policy: Policy, inputs: Any, digest: str
    ) -> str:
        """OK when the step's current inputs are approved; WAIT, or FAIL when denied.

        Decisions are read from the store each time (other processes record them)
        and counted only for the digest of the inputs the step has now.
        """
        while True:
            outcome = self._gate_once(step, key, name, policy, inputs, digest)
            if outcome != WAIT or not self.attach:
                return outcome
            live = self._require_live()
            if live.cancelled.wait(self.poll):
                return STOP

    def _gate_once(
        self, step: Step, key: str, name: str, policy: Policy, inputs: Any, digest: str
    ) -> str:
        from irctl.record import approvals as ap

        live = self._require_live()
        state = live.state
        self._flush()
        with self._lock:  # decisions recorded elsewhere: into the state, the view and Slack
            self._fold_foreign(live, state.last_seq + 1)
        if live.tampered is not None or live.cancelled.is_set():
            return STOP  # tampered with, or aborted meanwhile: the step does not run
        # Only events the guard verified are here (the journal as this process proved it);
        # the verdict is derived from the operators' signed decisions every time, never
        # from an approval.quorum row.
        request: Event | None = None
        decisions: list[dict[str, Any]] = []
        opened: Event | None = None
        closed = False
        for event in live.approvals.get(_split_key(key), ()):
            data = event.data
            if event.type == ap.REQUESTED:
                request, decisions, opened, closed = event, [], None, False
            elif request is None or data.get("digest") != request.data.get("digest"):
                continue
            elif event.type in ap.DECISIONS:
                decisions.append(data)
            elif event.type == ap.QUORUM:
                opened = opened or event
            elif event.type in (ap.LAPSED, ap.CANCELLED):
                closed = True
        now = ev.utcnow()
        current = request is not None and request.data.get("digest") == digest and not closed
        if request is not None and current and opened is not None:
            # Approved before a crash or an interruption: that record is a summary, so the
            # signed decisions must still give the same verdict now.
            again = self._verdict(policy, decisions)
            if again.state != "approved":
                self._tamper(live, Tampering(
                    opened.seq,
                    f"approval.quorum for '{key}' (event {opened.seq}) is not backed by signed "
                    f"decisions of operators irctl.yaml lists: {again.missing or again.state}",
                ))  # fmt: skip
                return STOP
            return OK
        expires = request.data.get("expires_at") if request is not None else None
        if current and expires is not None and expires <= now:
            self._emit_step(ap.LAPSED, key, {"digest": digest, "expired_at": expires})
            current = False
        if not current:
            previous = request.data if request is not None else None
            changed = (
                ap.changed_inputs(previous.get("inputs"), inputs) or None
                if previous is not None and previous.get("digest") != digest
                else None
            )
            roles_of = {n: o.get("roles", []) for n, o in state.operators.items()}
            self._emit_step(
                ap.REQUESTED, key,
                {"digest": digest, "action": step.action, "inputs": inputs, "policy": name,
                 "rules": policy.model_dump(mode="json"),
                 "eligible": ap.eligible(policy, roles_of, state.initiator),
                 "requested_at": now, "expires_at": ap.expires_at(now, policy),
                 "replaces": previous.get("digest") if previous and changed else None,
                 "changed": changed},
            )  # fmt: skip
            self._emit_step(
                ev.STEP_WAITING, key,
                {"for": "approval", "policy": name, "digest": digest,
                 "prompt": self._approval_prompt(key, name, policy)},
            )  # fmt: skip
            return WAIT
        verdict = self._verdict(policy, decisions)
        if verdict.state == "approved":
            self._emit_step(
                ap.QUORUM, key,
                {"digest": digest, "approvers": verdict.approvers,
                 "break_glass": verdict.break_glass},
            )  # fmt: skip
            if verdict.break_glass:
                why = next((d.get("reason") for d in decisions if d.get("break_glass")), "")
                self._emit(
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
            self._emit_step(ap.CANCELLED, key, {"digest": digest, "denied_by": verdict.deniers})
            self._emit_step(ev.STEP_FAILED, key, {"error": f"denied ({reasons})", "attempt": 0})
            return FAIL
        known = state.steps.get(key)
        prompt = self._approval_prompt(key, name, policy, verdict.missing)
        if known is None or known.status != WAITING or known.prompt != prompt:
            self._emit_step(
                ev.STEP_WAITING, key,
                {"for": "approval", "policy": name, "digest": digest, "prompt": prompt},
            )  # fmt: skip
        return WAIT

    def _verdict(self, policy: Policy, decisions: list[dict[str, Any]]) -> Any:
        """The verdict of the signed decisions on one request, by operators as both the run
        recorded them and irctl.yaml lists them now (a role only one of them grants does not
        count)."""
        from irctl.record import approvals as ap

        state = self._require_live().state
        configured = self.config.operators
        roles_of: dict[str, list[str]] = {}
        for name, recorded in state.operators.items():
            now = configured.get(name)
            if now is None:
                continue
            roles_of[name] = [r for r in recorded.get("roles", []) if r in now.roles]
        glass = [r for r in state.break_glass_roles if r in self.config.break_glass.roles]
        return ap.evaluate(
            policy,
            [ap.decision_from(d) for d in decisions if self._signed_by_operator(d)],
            roles_of=roles_of,
            initiator=state.initiator,
            break_glass_roles=glass,
        )

    def _approval_prompt(self, key: str, name: str, policy: Policy, missing: str = "") -> str:
        live = self._require_live()
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

        live = self._require_live()
        name = str(data.get("operator"))
        operator = live.state.operators.get(name)
        configured = self.config.operators.get(name)
        if operator is None or configured is None or data.get("run") != live.state.run_id:
            return False  # the operator must be both recorded at run start and in irctl.yaml
        if data.get("assurance") == "key":
            recorded = operator.get("key")
            return bool(recorded) and recorded == configured.key and signature_ok(data, recorded)
        if data.get("assurance") == "slack" and self.signing_key is not None:
            slack = operator.get("slack")
            if not slack or data.get("slack_user") != slack or slack != configured.slack:
                return False
            return signature_ok(data, public_key_text(self.signing_key))
        return False

    def _asker(self, key: str) -> Asker | None:
        """The interactive prompt, recording who answered what (a person's word is evidence)."""
        interactive = self.interactive
        if interactive is None:
            return None

        def ask(prompt: str, kind: str, choices: list[str] | None) -> str | None:
            live = self._require_live()
            who = self.operator or live.state.initiator
            can_sign, signer = self._terminal_signer(live, who)
            if not can_sign:  # the answer must be signed, and this terminal has no key
                return None  # the step waits for 'irctl answer' (which asks for the key)
            answer = interactive(prompt, kind, choices)
            if answer is not None:
                step_id, item = _split_key(key)
                data: dict[str, Any] = {"step": step_id, "answer": answer, "by": who}
                if item is not None:
                    data["item"] = item
                data = live.redactor(data)
                if signer is not None:
                    data = sign_act(signer, live.state.run_id, ev.STEP_ANSWERED, data)
                # Sealed at once, as irctl answer seals one: an answer in an unsealed tail is
                # not irctl's (irctl.engine.guard).
                made = self._append(
                    live.state.run_id, [(ev.STEP_ANSWERED, data)],
                    seal=self.signing_key is not None,
                )  # fmt: skip
                self.anchor(made)
            return answer

        return ask

    def _terminal_signer(self, live: _Live, who: str) -> tuple[bool, Ed25519PrivateKey | None]:
        """Can an answer given at this terminal be recorded, and the key that signs it
        (None: the run needs no signature).  It cannot when the run needs a signature this
        terminal cannot give: no key, or not the key the run pinned for ``who``."""
        from irctl.identity import public_key_text

        if not live.acts_signed:
            return True, None
        pinned = live.state.operators.get(who)
        recorded = pinned.get("key") if isinstance(pinned, dict) else None
        key = self.operator_key
        if key is None or not recorded or public_key_text(key) != recorded:
            return False, None
        return True, key

    def _pause(self, seconds: float, live: _Live) -> bool:
        """Sleep between retries; True if the run was cancelled meanwhile."""
        if self._sleep is not None:
            self._sleep(seconds)
            return live.cancelled.is_set()
        return live.cancelled.wait(seconds)

    def _recorder(self, key: str, ctx: ActionContext) -> Callable[[dict[str, Any]], None]:
        """ActionContext.record for step ``key``: the notes so far, then a ``step.note`` with
        the facts, committed before the action goes on."""

        def record(facts: dict[str, Any]) -> None:
            self._notes(key, ctx)
            text = "recorded " + ", ".join(sorted(facts))
            self._emit_step(ev.STEP_NOTE, key, {"text": text, "facts": facts})

        return record

    def _facts(self, key: str) -> dict[str, Any]:
        """The facts earlier attempts of step ``key`` recorded, as this process verified them
        (never a row read back unchecked: a forged nonce or transaction must not reach a probe)."""
        return dict(self._require_live().facts.get(key, {}))

    def _notes(self, key: str, ctx: ActionContext) -> None:
        for note in ctx.notes:
            self._emit_step(ev.STEP_NOTE, key, {"text": note})
        ctx.notes.clear()

    def _call(
        self, act: Action[Any], raw: dict[str, Any], ctx: ActionContext, timeout: float | None
    ) -> dict[str, Any]:
        try:
            parsed = act.parse(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'inputs'}: {e['msg']}"
                for e in exc.errors()
            )
            message = f"invalid inputs for {act.name}: {problems}"
            if ctx.mode == "tabletop" and not _rehearsed_for_real(act):
                # In a drill, inputs built from simulated outputs (a previous count nobody
                # read) cannot be whole; the step is rehearsed, not run, so say so and go on.
                return {"simulated": True, "action": act.name, "inputs_incomplete": problems}
            raise ActionError(message, retryable=False) from exc
        simulated = ctx.mode == "tabletop" and not _rehearsed_for_real(act)
        run = act.call_simulate if simulated else act.call_run
        if timeout is None:
            return _checked_outputs(act, _guard(run, parsed, ctx))
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = _guard(run, parsed, ctx)
            except BaseException as exc:  # handed to the engine's thread below
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"irctl-{ctx.step_id}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            ctx.cancelled.set()
            worker.join(min(1.0, self.cancel_grace))
            raise ActionTimeout(f"{act.name} did not finish within {timeout:g}s")
        if "error" in box:
            raise box["error"]
        return _checked_outputs(act, box["result"])

    def _settle(
        self,
        step: Step,
        key: str,
        act: Action[Any],
        inputs: dict[str, Any],
        digest: str,
        known: StepState,
        idempotent: bool,
    ) -> str | None:
        """Resolve an in-doubt step; None means: run it (again)."""
        live = self._require_live()
        if known.mark is not None and known.resolved_by not in (None, *ev.ENGINES_OWN):
            mark = known.mark
            if mark == "done":
                self._emit_step(
                    ev.STEP_SUCCEEDED, key, {"outputs": {}, "resolved_by": known.resolved_by}
                )
                return OK
            if mark == "failed":
                self._emit_step(
                    ev.STEP_FAILED, key,
                    {"error": f"marked failed by {known.resolved_by}", "attempt": known.attempt},
                )  # fmt: skip
                return FAIL
            return None  # retry
        if known.digest is not None and known.digest != digest:
            why = "its inputs changed since it started"
        elif act.has_probe and live.state.mode != "tabletop":
            ctx = ActionContext(
                run_id=live.state.run_id, step_id=key, attempt=known.attempt,
                mode=live.state.mode, config=self._integration_config(act.namespace),
                vars=self.config.vars, cancelled=live.cancelled, facts=self._facts(key),
            )  # fmt: skip
            try:
                found = act.call_probe(act.parse(inputs), ctx)
            except (ActionError, ValidationError) as exc:
                found = None
                why = f"probe failed: {exc}"
            if found is not None and found.state == "done":
                self._emit_step(ev.STEP_RESOLVED, key, {"by": "probe", "mark": "done"})
                live.outputs[key] = found.outputs
                self._emit_step(ev.STEP_SUCCEEDED, key, {"outputs": found.outputs, "probe": True})
                return OK
            if found is not None and found.state == "not_done":
                self._emit_step(ev.STEP_RESOLVED, key, {"by": "probe", "mark": "retry"})
                return None
            if found is not None:
                why = f"probe could not tell: {found.reason}"
        elif idempotent or live.state.mode == "tabletop":
            self._emit_step(ev.STEP_RESOLVED, key, {"by": "idempotent", "mark": "retry"})
            return None
        else:
            why = f"{act.name} is not idempotent and has no probe"
        self._emit_step(
            ev.STEP_WAITING, key,
            {"for": "operator", "prompt": (
                f"step '{key}' started but its outcome is unknown ({why}); check by hand, then "
                f"irctl resume {live.state.run_id} --step {key} --mark done|retry|failed"
            )},
        )  # fmt: skip
        return WAIT


class _StepsView(Mapping[str, dict[str, Any]]):
    """``steps`` in templates: each step's status and outputs, read from the run state."""

    def __init__(self, live: _Live) -> None:
        self._live = live

    def __getitem__(self, key: str) -> dict[str, Any]:
        step = self._live.state.steps.get(key)
        if step is None or "[" in key:
            raise KeyError(key)
        return {"status": step.status, "outputs": self._live.outputs.get(key, step.outputs)}

    def __iter__(self) -> Iterator[str]:
        return (k for k in list(self._live.state.steps) if "[" not in k)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    """Call a notifier: whatever it does wrong, the run goes on (it records its own failures)."""
    with contextlib.suppress(Exception):
        fn(*args)


# The only actions a tabletop drill runs for real: irctl's own, which change nothing outside
# irctl (ask a person, print a line).  An integration's `run` is never reached in a drill,
# whatever it declares (`drill_safe` of any other action is ignored).
_REHEARSED_MODULES = ("irctl.builtins.manual", "irctl.builtins.notify")


def _rehearsed_for_real(act: Action[Any]) -> bool:
    return act.drill_safe and getattr(act.run, "__module__", "") in _REHEARSED_MODULES


def _guard(
    run: Callable[[Any, ActionContext], dict[str, Any]], parsed: Any, ctx: ActionContext
) -> dict[str, Any]:
    """Call an action; an unexpected exception from it is a failed step, not a crash."""
    try:
        return run(parsed, ctx)
    except (ActionError, WaitForOperator, KeyboardInterrupt):
        raise
    except IrctlError as exc:
        raise ActionError(str(exc), retryable=False) from exc
    except Exception as exc:
        raise ActionError(f"{type(exc).__name__}: {exc}", retryable=False) from exc


def _checked_outputs(act: Action[Any], outputs: Any) -> dict[str, Any]:
    """The outputs as the journal will hold them; an ActionError if they cannot be recorded."""
    if outputs is None:
        return {}
    if not isinstance(outputs, dict):
        raise ActionError(f"{act.name} returned {type(outputs).__name__}, not a dict of outputs")
    if all(type(k) is str and k.isascii() and _plain(v) for k, v in outputs.items()):
        return outputs  # recorded exactly as they are
    from irctl.runbook.render import canonical_json

    try:
        text = canonical_json(outputs)
        text.encode("utf-8")  # a lone surrogate serialises, then fails to hash
    except (IrctlError, UnicodeEncodeError) as exc:  # it acted; what it returned cannot be kept
        why = exc.message if isinstance(exc, IrctlError) else f"not UTF-8 text ({exc.reason})"
        raise ActionError(
            f"{act.name} returned outputs that cannot be recorded: {why}", retryable=False
        ) from exc
    # As the journal holds them (tuples as lists, keys as strings), so that later steps read
    # the same values whether the run went straight through or was resumed.
    normal: dict[str, Any] = json.loads(text)
    return normal


def _plain(value: object) -> bool:
    """A value the journal records exactly as it is, checked without serialising it."""
    kind = type(value)
    if kind is bool or value is None:
        return True
    if kind is str and isinstance(value, str):
        return value.isascii()
    if kind is int and isinstance(value, int):
        return -(2**63) <= value < 2**63
    return False


def _pinned(events: list[Event]) -> dict[str, Any]:
    """The operators ``run.created`` recorded (as read: the guard checks them)."""
    found = events[0].data.get("operators") if events else None
    if not isinstance(found, dict):
        return {}
    return {n: o for n, o in found.items() if isinstance(o, dict)}


def _gate_key(data: Mapping[str, Any]) -> tuple[str, int | None]:
    item = data.get("item")
    return str(data.get("step")), item if isinstance(item, int) else None


def _split_key(key: str) -> tuple[str, int | None]:
    if key.endswith("]") and "[" in key:
        step_id, _, rest = key.partition("[")
        return step_id, int(rest[:-1])
    return key, None


def _run_concurrently(
    fn: Callable[[Any], str], items: list[Any], workers: int, live: _Live
) -> list[str]:
    """Run ``fn`` over ``items`` on at most ``workers`` daemon threads; results in order.

    Daemon threads, not a ThreadPoolExecutor: an action that ignores
    cancellation must not keep the process alive after Ctrl-C.
    """
    if not items:
        return []
    results: list[str | None] = [None] * len(items)
    errors: list[BaseException] = []
    lock = threading.Lock()
    next_index = [0]
    done = threading.Event()
    remaining = [len(items)]

    def worker() -> None:
        while True:
            with lock:
                index = next_index[0]
                if index >= len(items):
                    return
                next_index[0] += 1
            try:
                results[index] = STOP if live.cancelled.is_set() else fn(items[index])
            except BaseException as exc:  # reported to the caller's thread
                errors.append(exc)
                results[index] = FAIL
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

    for _ in range(min(workers, len(items))):
        threading.Thread(target=worker, name="irctl-step", daemon=True).start()
    try:
        while not done.wait(0.05):
            pass
    except KeyboardInterrupt:
        live.cancelled.set()
        for flag in list(live.active):
            flag.set()
        done.wait(10.0)
        raise
    if errors:
        raise errors[0]
    return [r if r is not None else STOP for r in results]
