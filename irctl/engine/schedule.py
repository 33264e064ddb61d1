"""Step scheduling: which step runs next, and the steps that run side by side.

Owns :class:`Schedule`: a sequence of steps in order (a compensating ``on_failure``
sequence goes on past a failed step), ``when`` decided before a step starts, ``parallel``
blocks and ``for_each`` fan-outs on daemon threads (at most ``max_parallel`` items at a
time; no new item starts once one has failed), one approval for all of a for_each's items,
and the outcome of a block from the outcomes of its parts.  Each action is run by
:class:`irctl.engine.action.ActionSteps`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from irctl.engine.call import context
from irctl.engine.live import FAIL, OK, STOP, WAIT, Live, finished_outcome, worst
from irctl.engine.plan import SECRET_ITEM, resolve_policy, step_digest
from irctl.errors import IrctlError
from irctl.journal import events as ev
from irctl.journal.state import (
    FINISHED,
    INTERRUPTED,
    PENDING,
    REPEATING,
    RUNNING,
    WAITING,
    step_key,
)  # fmt: skip
from irctl.runbook.render import RenderError, mentions, render, render_shown, texts
from irctl.runbook.render import digest as digest_of

if TYPE_CHECKING:
    from irctl.engine.action import ActionSteps
    from irctl.engine.gate import Gate
    from irctl.engine.writer import JournalWriter
    from irctl.runbook.model import Config, Step


class Schedule:
    """Runs the steps of the execution in progress, in the runbook's order."""

    def __init__(
        self, writer: JournalWriter, *, actions: ActionSteps, gate: Gate, config: Config
    ) -> None:
        self._writer = writer
        self._actions = actions
        self._gate = gate
        self._config = config

    def sequence(self, steps: list[Step], *, compensating: bool = False) -> str:
        live = self._writer.require_live()
        for step in steps:
            if live.cancelled.is_set():
                return STOP
            outcome = self._step(step)
            if outcome == FAIL and compensating:
                continue  # a failed compensation step is recorded; the others still run
            if outcome != OK:
                return outcome
        return OK

    def _step(self, step: Step) -> str:
        live = self._writer.require_live()
        known = live.state.steps.get(step.id)
        if known is not None and (done := finished_outcome(step, known)) is not None:
            return done
        if live.by_alert and step.parallel is None and not step.auto and not self._adopted(live):
            with self._writer.lock:
                live.unadopted = live.unadopted or step.id
            return WAIT  # nothing of it runs, and nothing is recorded of it, until adopted
        if step.id in live.left_out and (known is None or known.status == PENDING):
            chosen = live.state.selection or {}
            how = "--only" if "only" in chosen else "--skip"
            who = live.state.initiator
            reason = {"reason": f"left out at the start by {who} ({how})", "by": who}
            self._writer.emit_step(ev.STEP_SKIPPED, step.id, reason, defer=True)
            return OK
        if known is None or known.status not in (RUNNING, INTERRUPTED, WAITING, REPEATING):
            try:
                if not self._when(live, step):
                    reason = {"reason": "'when' is false"}
                    self._writer.emit_step(ev.STEP_SKIPPED, step.id, reason, defer=True)
                    return OK
            except RenderError as exc:
                self._writer.emit_step(ev.STEP_FAILED, step.id, {"error": str(exc), "attempt": 0})
                return OK if step.on_failure == "continue" else FAIL
        if step.parallel is not None:
            return self._parallel(step)
        if step.for_each is not None:
            return self._fan_out(step)
        return self._actions.run(step, step.id)

    def _adopted(self, live: Live) -> bool:
        """Has an operator adopted this alert-started run?  Derived now, from the signed
        ``run.adopted`` events verified so far (never from a folded status)."""
        from irctl.engine.adoption import adopter

        with self._writer.lock:
            adoptions = list(live.adoptions)
        found = adopter(
            live.state.run_id, adoptions, live.state.operators, self._config, live.runbook
        )
        return found is not None

    def _when(self, live: Live, step: Step) -> bool:
        if step.when is None:
            return True
        if isinstance(step.when, bool):
            return step.when
        value = render(step.when, context(live, self._config))
        if isinstance(value, str):
            return value.strip().lower() not in ("", "false", "no", "0", "none")
        return bool(value)

    def _block_outcome(self, step: Step, outcomes: list[str], outputs: dict[str, Any]) -> str:
        found = worst(outcomes)
        if found == OK:
            self._writer.emit_step(ev.STEP_SUCCEEDED, step.id, {"outputs": outputs}, defer=True)
            return OK
        if found == FAIL:
            self._writer.emit_step(ev.STEP_FAILED, step.id, {"error": "a step inside it failed"})
            return OK if step.on_failure == "continue" else FAIL
        return found

    def _parallel(self, step: Step) -> str:
        live = self._writer.require_live()
        if step.parallel is None:  # pragma: no cover - the model guarantees it
            raise IrctlError(f"step '{step.id}' is not a parallel block")
        known = live.state.steps.get(step.id)
        if known is None or known.status not in (RUNNING, INTERRUPTED, WAITING):
            self._writer.emit_step(ev.STEP_STARTED, step.id, {"kind": "parallel", "attempt": 1})
        outcomes = run_concurrently(
            self._writer.concurrently(self._step), step.parallel, len(step.parallel), live
        )
        return self._block_outcome(step, outcomes, {})

    def _fan_out(self, step: Step) -> str:
        live = self._writer.require_live()
        if step.action is None:  # pragma: no cover - the model guarantees it
            raise IrctlError(f"step '{step.id}' has no action")
        give_up = OK if step.on_failure == "continue" else FAIL
        try:
            items = render(step.for_each, context(live, self._config))
            if not isinstance(items, list):
                raise RenderError(f"for_each must give a list, got {type(items).__name__}")
        except RenderError as exc:
            self._writer.emit_step(ev.STEP_FAILED, step.id, {"error": str(exc), "attempt": 0})
            return give_up
        gate = self._gate_items(live, step, step.action, items)
        if gate == FAIL:
            return give_up
        if gate != OK:
            return gate
        known = live.state.steps.get(step.id)
        if known is None or known.status not in (RUNNING, INTERRUPTED):
            self._writer.emit_step(
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
            outcome = self._actions.run(step, key, item=items[index], index=index, gated=True)
            if outcome == FAIL:
                stop.set()
            return outcome

        outcomes = run_concurrently(
            self._writer.concurrently(one), list(range(len(items))), step.max_parallel, live
        )
        collected = [
            live.outputs.get(step_key(step.id, i), live.state.step(step_key(step.id, i)).outputs)
            for i in range(len(items))
        ]
        if worst(outcomes) == OK:
            live.outputs[step.id] = {"items": collected}
        return self._block_outcome(step, outcomes, {"items": live.redactor(collected)})

    def _gate_items(self, live: Live, step: Step, action: str, items: list[Any]) -> str:
        """The gate of a for_each step with an approval policy (OK without one): one approval
        covers every item, given for the digest of all the items' digests."""
        name, policy = resolve_policy(live.runbook, step)
        if policy is None:
            return OK
        tainted = SECRET_ITEM if mentions(step.for_each, "secrets") else frozenset()
        try:
            shown = []
            for value in items:
                found = context(live, self._config, value, has_item=True)
                _, masked, hidden = render_shown(step.with_, found, tainted=tainted)
                live.redactor.add(*texts(hidden))
                shown.append(masked)
        except RenderError as exc:
            self._writer.emit_step(ev.STEP_FAILED, step.id, {"error": str(exc), "attempt": 0})
            return FAIL
        recorded = live.redactor(shown)
        combined = digest_of(
            [step_digest(step.id, action, inputs, i) for i, inputs in enumerate(recorded)]
        )
        return self._gate.check(step, step.id, name or "inline", policy, recorded, combined)


def run_concurrently(
    fn: Callable[[Any], str], items: list[Any], workers: int, live: Live
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
