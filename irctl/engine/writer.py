"""Writing a run's journal as the engine does: appends, the group commit, seals and anchors.

Owns :class:`JournalWriter`, through which every event the engine records goes.  During an
execution it chains onto the last event this process verified (events other processes
appended meanwhile are checked by the guard and folded in first), defers a step's outcome
to commit with whatever is recorded next (one durable commit per step), seals the head with
a checkpoint signed by the installation key and writes it to the anchor.  From outside an
execution (answers, marks, notes) it appends only onto a journal it has just verified, with
a person's words masked where they hold a secret.  It holds the execution in progress
(:class:`irctl.engine.live.Live`) for the engine's other parts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from irctl.engine.guard import JournalGuard, Tampering
from irctl.engine.live import Listener, Live, pinned, quietly, split_key, summary
from irctl.errors import CorruptEvent, IrctlError, StoreError, UsageError
from irctl.journal import events as ev
from irctl.journal.events import Event, utcnow

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.actions import Registry
    from irctl.journal.store import Item, Seal, Store
    from irctl.runbook.model import Config


class JournalWriter:
    """Appends a run's events for the engine; safe to call from the threads of a block."""

    def __init__(
        self,
        store: Store,
        *,
        config: Config,
        registry: Registry,
        signing_key: Ed25519PrivateKey | None,
        listener: Listener | None,
    ) -> None:
        self.store = store
        self.config = config
        self.registry = registry
        self.signing_key = signing_key
        self.listener = listener
        self.live: Live | None = None  # the execution in progress, if any
        self.lock = threading.Lock()
        # Group commit: the outcome of a step run on the engine's own thread is committed in
        # the same transaction as whatever the engine records next (the next step's
        # `step.started`, a skip, the run's end), so each step costs one durable commit.  It is
        # still durable before anything else happens: nothing runs in between but rendering.
        self.deferred: list[Item] = []
        self._local = threading.local()

    def require_live(self) -> Live:
        if self.live is None:  # pragma: no cover - internal misuse
            raise IrctlError("the engine is not executing a run")
        return self.live

    def live_for(self, run_id: str) -> Live | None:
        """The execution in progress if it is of ``run_id``."""
        live = self.live
        return live if live is not None and live.state.run_id == run_id else None

    # -- from outside an execution ------------------------------------------------------

    def record(
        self,
        run_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        check: Callable[[list[Event]], None] | None = None,
    ) -> Event:
        """Append one event from outside an execution (answers, marks, notes), sealed; a
        secret the run resolved is masked in its text, answer or reason.  ``check`` (see
        :meth:`record_outside`) raises if the event no longer applies to the journal."""
        data = self.masked(run_id, data)
        made = self.record_outside(run_id, [(kind, data)], check=check)
        self.anchor(made)
        return made[0]

    def record_outside(
        self,
        run_id: str,
        items: list[tuple[str, dict[str, Any]]],
        *,
        check: Callable[[list[Event]], None] | None = None,
    ) -> list[Event]:
        """Append from outside an execution, sealed with the installation key, only onto a
        journal this process has just verified: a checkpoint signed here never vouches for a
        row nobody checked (someone's forgery sealed by an honest ``irctl note``, say).

        ``check`` is called with that verified journal before each attempt and raises when
        what is appended no longer applies to it: the same operator's approval, made at the
        same moment in another process, is then refused here, not recorded twice."""
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
            guard = JournalGuard(run_id, self.trusted_keys())
            opened = guard.open(events, pinned=pinned(events), configured=self.configured_keys())
            if opened.tampering is not None:
                raise RunTampered(describe(opened.tampering, run_id))
            if check is not None:
                check(events)
            try:
                return self.store.append(
                    run_id, items, seal=self.sealer(), expect=(guard.seq, guard.head)
                )
            except HeadMoved:
                continue
        raise StoreError(f"cannot append to run {run_id}: other writers kept winning")

    def masked(self, run_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with a person's words (``text``, ``answer``, ``reason``) masked wherever
        they hold a secret value the run resolved, recognised by the run's commitments
        (:func:`irctl.secrets.recogniser`): this process need not have resolved them."""
        words = [k for k in ("text", "answer", "reason") if isinstance(data.get(k), str)]
        if not words:
            return data
        from irctl.secrets import recogniser

        mask = recogniser(self.store, run_id, self.store.events(run_id))
        live = self.live_for(run_id)
        masked = dict(data)
        for k in words:
            masked[k] = mask(live.redactor.text(data[k]) if live is not None else data[k])
        return masked

    # -- verifying before appending (irctl.engine.guard) ---------------------------------

    def trusted_keys(self) -> list[str] | None:
        """The installation keys whose checkpoints this engine believes (None: no trust root,
        only the chain's continuity is checked)."""
        from irctl.identity import public_key_text

        keys = [self.config.installation_key] if self.config.installation_key else []
        if self.signing_key is not None and public_key_text(self.signing_key) not in keys:
            keys.append(public_key_text(self.signing_key))
        return keys or None

    def configured_keys(self) -> dict[str, str | None] | None:
        """Operator keys as irctl.yaml lists them now (None when it lists no operators)."""
        if not self.config.operators:
            return None
        return {name: op.key for name, op in self.config.operators.items()}

    @staticmethod
    def tamper(live: Live, tampering: Tampering) -> None:
        """Something read back did not verify: no new step starts; the run stops."""
        if live.tampered is None:
            live.tampered = tampering
        live.cancelled.set()
        for flag in list(live.active):
            flag.set()

    # -- sealing -------------------------------------------------------------------------

    def sealer(self) -> Seal | None:
        if self.signing_key is None:
            return None
        from irctl.record.transcript import sealer

        return sealer(self.signing_key)

    def checkpoint(self, run_id: str) -> None:
        """Commit anything deferred and seal the run's head, in one transaction."""
        with self.lock:
            if not self.deferred:
                known = self.live.state.last_seq if self.live is not None else 1
                tail = self.store.events(run_id, after=max(0, known - 1))
                if tail and tail[-1].type == ev.CHECKPOINT:
                    return  # already sealed (by an abort from another process, say)
            made = self.append(run_id, [], locked=True, seal=True)
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

    # -- during an execution ---------------------------------------------------------------

    def emit(self, kind: str, data: dict[str, Any], *, defer: bool = False) -> None:
        live = self.require_live()
        self.append(live.state.run_id, [(kind, live.redactor.event(data))], defer=defer)

    def emit_step(self, kind: str, key: str, data: dict[str, Any], *, defer: bool = False) -> None:
        step_id, item = split_key(key)
        body = {"step": step_id, **data}
        if item is not None:
            body["item"] = item
        self.emit(kind, body, defer=defer)

    def flush(self) -> None:
        """Commit a deferred outcome now (before a checkpoint, on the way out)."""
        with self.lock:
            if self.deferred and self.live is not None:
                self.append(self.live.state.run_id, [], locked=True)

    def concurrently(self, fn: Callable[[Any], str]) -> Callable[[Any], str]:
        """Mark the worker threads of a block: their outcomes are committed at once."""

        def wrapped(arg: Any) -> str:
            self._local.concurrent = True
            return fn(arg)

        return wrapped

    def append(
        self,
        run_id: str,
        items: list[tuple[str, dict[str, Any]]],
        *,
        locked: bool = False,
        defer: bool = False,
        seal: bool = False,
    ) -> list[Event]:
        if not locked:
            with self.lock:
                return self.append(run_id, items, locked=True, defer=defer, seal=seal)
        live = self.live
        if defer and live is not None and not getattr(self._local, "concurrent", False):
            for kind, data in items:  # the state sees it now; the journal with the next append
                now = utcnow()  # recorded as the time it happened, not the time of the commit
                self.deferred.append((kind, data, now))
                live.state.apply(Event(run_id, live.state.last_seq, now, kind, data, "", "", ""))
            return []
        applied = len(self.deferred)  # already folded into the state when deferred
        batch: list[Item] = [*self.deferred, *items]
        self.deferred = []
        expected = live.state.last_seq + 1 if live is not None else 0
        guarded = live is not None and live.guard is not None and live.state.run_id == run_id
        if guarded and live is not None and live.guard is not None:
            made = self._append_verified(live, live.guard, run_id, batch, seal)
        else:
            made = self.store.append(run_id, batch, seal=self.sealer() if seal else None)
        if live is not None and live.state.run_id == run_id:
            if made and made[0].seq > expected and not guarded:
                self.fold_foreign(live, expected, made[0].seq)
            if live.guard is not None and live.tampered is None:
                problem = live.guard.own(made)
                if problem is not None:
                    self.tamper(live, problem)
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
            told = summary(live)
            for event in made:
                for _, started in live.notifiers:
                    quietly(started.notify, event, told)
        return made

    def _append_verified(
        self, live: Live, guard: JournalGuard, run_id: str, batch: list[Item], seal: bool
    ) -> list[Event]:
        """Chain onto the last event this process verified; if others appended since, check
        their events first (a checkpoint signed here covers nothing unchecked)."""
        from irctl.journal.store import HeadMoved

        while live.tampered is None:
            try:
                return self.store.append(
                    run_id, batch, seal=self.sealer() if seal else None,
                    expect=(guard.seq, guard.head),
                )  # fmt: skip
            except HeadMoved:
                self.fold_foreign(live, guard.seq + 1)
        # Tampered with: what is recorded from now on is evidence, never sealed.
        return self.store.append(run_id, batch)

    def fold_foreign(self, live: Live, first: int, upto: int | None = None) -> None:
        """Fold events other processes appended (approvals, notes, an abort) into the state,
        and tell the view and the notifiers about them."""
        guard = live.guard
        if live.tampered is not None:
            return
        try:
            found = self.store.events(live.state.run_id, after=first - 1)
        except CorruptEvent as exc:
            self.tamper(live, Tampering(None, exc.message))
            return
        batch = [e for e in found if upto is None or e.seq < upto]
        # Checked whole before any of it is folded in, shown or sent to Slack.
        for event in batch:
            if guard is not None and (problem := guard.foreign(event)) is not None:
                self.tamper(live, problem)
                return
        if guard is not None and (problem := guard.settled()) is not None:
            self.tamper(live, problem)
            return
        for event in batch:
            live.refold = True
            try:
                live.state.apply(event)
            except Exception as exc:  # a sealed event irctl cannot fold: never act on it
                self.tamper(live, Tampering(event.seq, f"event {event.seq} ({event.type}) "
                                            f"does not make sense: {type(exc).__name__}"))
                return
            live.index(event)
            if self.listener:
                self.listener(event)
            if live.notifiers:
                told = summary(live)
                for _, started in live.notifiers:
                    quietly(started.notify, event, told)
            if event.type == ev.RUN_ABORTED:
                live.cancelled.set()  # no new step starts; steps in flight finish
