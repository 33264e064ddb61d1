"""One action step: its inputs resolved and hashed, its gate, its attempts and its outcome.

Owns :class:`ActionSteps`.  A step's inputs are rendered (a field rendered from a secret is
recorded as ``••••``) and hashed; a step the journal left in doubt is settled first
(:mod:`irctl.engine.doubt`); a step with an approval policy passes the gate
(:mod:`irctl.engine.gate`); then each attempt is recorded (``step.started``) before the
action is called, and its outcome after: succeeded (the outputs as the journal holds them,
secret outputs masked), retried with backoff, failed, waiting for a person's answer, or
waiting for an operator's mark when a step that is not idempotent timed out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.actions import Action, ActionContext, Display, WaitForOperator
from irctl.canonical import canonical_json
from irctl.engine.call import call, context, facts, integration_config
from irctl.engine.live import FAIL, OK, STOP, WAIT, Live, finished_outcome
from irctl.engine.plan import SECRET_ITEM, resolve_policy, step_digest
from irctl.errors import ActionError, ActionTimeout, IntegrationError, IrctlError
from irctl.journal import events as ev
from irctl.journal.events import parse_ts
from irctl.journal.state import INTERRUPTED, REPEATING, RUNNING, WAITING, StepState
from irctl.runbook.model import format_duration
from irctl.runbook.render import (
    REDACTED,
    RenderError,
    mentions,
    render,
    render_shown,
    template_strings,
)
from irctl.runbook.render import texts as secret_texts

if TYPE_CHECKING:
    from irctl.actions import Registry
    from irctl.engine.acts import OperatorActs
    from irctl.engine.doubt import InDoubt
    from irctl.engine.gate import Gate
    from irctl.engine.writer import JournalWriter
    from irctl.runbook.model import Config, Step


class ActionSteps:
    """Runs the action steps of the execution in progress (and each item of a for_each)."""

    def __init__(
        self,
        writer: JournalWriter,
        *,
        gate: Gate,
        doubt: InDoubt,
        acts: OperatorActs,
        registry: Registry,
        config: Config,
        workspace: Path | None,
        display: Display | None,
        sleep: Callable[[float], None] | None,
        cancel_grace: float,
    ) -> None:
        self._writer = writer
        self._gate = gate
        self._doubt = doubt
        self._acts = acts
        self._registry = registry
        self._config = config
        self._workspace = workspace
        self._display = display
        self._sleep = sleep
        self._cancel_grace = cancel_grace

    def run(
        self,
        step: Step,
        key: str,
        *,
        item: Any = None,
        index: int | None = None,
        gated: bool = False,
    ) -> str:
        """Execute (or continue) step ``key``: ``gated`` when a for_each's gate was passed."""
        live = self._writer.require_live()
        if step.action is None:  # pragma: no cover - the model guarantees it
            raise IrctlError(f"step '{step.id}' has no action")
        known = live.state.steps.get(key)
        if known is not None and (done := finished_outcome(step, known)) is not None:
            return done
        give_up = OK if step.on_failure == "continue" else FAIL
        prepared = self._inputs(live, step, step.action, key, item, index)
        if prepared is None:
            return give_up
        act, inputs, recorded, digest = prepared
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
                settled = self._doubt.settle(step, key, act, inputs, digest, known, idempotent)
                if settled is not None:
                    return settled if settled != FAIL else give_up
        name, policy = resolve_policy(live.runbook, step)
        if policy is not None and not gated:
            gate = self._gate.check(step, key, name or "inline", policy, recorded, digest)
            if gate == FAIL:
                return give_up
            if gate != OK:
                return gate
        return self._attempts(
            live, step, key, act, inputs, recorded, digest, idempotent, answer, known, give_up
        )

    def _inputs(
        self, live: Live, step: Step, action: str, key: str, item: Any, index: int | None
    ) -> tuple[Action[Any], dict[str, Any], Any, str] | None:
        """The action, its inputs, the inputs as recorded (secrets masked) and their digest;
        None when the action is unknown or the inputs cannot be rendered (recorded as the
        step's failure)."""
        try:
            act = self._registry.get(action)
            static = live.static.get(step.id)
            if static is None:  # inputs with no template are the same every time: hash once
                static = live.static[step.id] = not any(template_strings(step.with_))
            if static:
                inputs = shown = step.with_
            else:  # a field rendered from a secret is recorded as •••• (irctl.runbook.render)
                found = context(live, self._config, item, has_item=step.for_each is not None)
                tainted = SECRET_ITEM if mentions(step.for_each, "secrets") else frozenset()
                inputs, shown, hidden = render_shown(step.with_, found, tainted=tainted)
                live.redactor.add(*secret_texts(hidden))
        except (IntegrationError, RenderError) as exc:
            self._writer.emit_step(ev.STEP_FAILED, key, {"error": str(exc), "attempt": 0})
            return None
        if not isinstance(inputs, dict):
            inputs = shown = {}
        recorded = live.redactor(shown)
        cached = live.digests.get(key) if static else None
        digest = cached or step_digest(step.id, action, recorded, index)
        if static:
            live.digests[key] = digest
        return act, inputs, recorded, digest

    def _attempts(
        self,
        live: Live,
        step: Step,
        key: str,
        act: Action[Any],
        inputs: dict[str, Any],
        recorded: Any,
        digest: str,
        idempotent: bool,
        answer: str | None,
        known: StepState | None,
        give_up: str,
    ) -> str:
        """Call the action, recording each attempt before it and its outcome after."""
        writer = self._writer
        attempts = step.retry.attempts if step.retry else 1
        attempt = known.attempt if known is not None else 0
        shared = facts(live, key) if known is not None else {}  # shared by the attempts
        # A `repeat` step: the rounds ended so far, and the attempt the last one ended on
        # (retries count within a round).  Between rounds, the next is due at next_at.
        rounds = known.round if known is not None else 0
        base = known.round_attempt if known is not None else 0
        if known is not None and known.status == REPEATING and self._until_due(live, known):
            return STOP
        while True:
            attempt += 1
            writer.emit_step(
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
                config=integration_config(live, self._config, self._workspace, act.namespace),
                vars=self._config.vars, timeout=step.timeout, cancelled=flag,
                answers={key: answer} if answer is not None else {},
                interactive=self._acts.asker(key), display=self._display,
                facts=shared,
            )  # fmt: skip
            ctx.recorder = self._recorder(key, ctx)
            if flag is not live.cancelled:
                live.active.add(flag)
            try:
                outputs = call(act, inputs, ctx, step.timeout, self._cancel_grace)
            except WaitForOperator as wait:
                writer.emit_step(
                    ev.STEP_WAITING, key,
                    {"for": "answer", "prompt": wait.prompt, "kind": wait.kind,
                     "choices": wait.choices},
                )  # fmt: skip
                return WAIT
            except KeyboardInterrupt:
                live.cancelled.set()
                writer.emit_step(ev.STEP_INTERRUPTED, key, {"reason": "stopped by operator"})
                raise
            except ActionError as exc:
                failed = self._failed(
                    live, step, key, act, ctx, exc, flag, attempt, attempt - base, attempts,
                    idempotent,
                )
                if failed is not None:
                    return failed if failed != FAIL else give_up
                continue  # retried
            finally:
                live.active.discard(flag)
            if step.repeat is None:
                return self._succeeded(live, key, act, ctx, outputs, attempt, give_up)
            rounds += 1
            ended = self._round(live, step, key, act, ctx, outputs, attempt, rounds, give_up)
            if ended is not None:
                return ended
            base = attempt  # the next round's retries count from here

    def _round(
        self,
        live: Live,
        step: Step,
        key: str,
        act: Action[Any],
        ctx: ActionContext,
        outputs: dict[str, Any],
        attempt: int,
        rounds: int,
        give_up: str,
    ) -> str | None:
        """A round of a ``repeat`` step ended well: its outcome, or None for another round
        (recorded as ``step.repeating`` with the time it is due, then waited for)."""
        repeat = step.repeat
        if repeat is None:  # pragma: no cover - the caller checked
            raise IrctlError(f"step '{step.id}' does not repeat")
        problem = _unrecordable(act, outputs)
        if problem is not None:
            self._writer.emit_step(ev.STEP_FAILED, key, {"error": problem, "attempt": attempt})
            return give_up
        live.outputs[key] = outputs
        met = False
        if repeat.until is not None:
            found = {**context(live, self._config), "outputs": outputs, "round": rounds}
            try:
                met = _truthy(render(repeat.until, found))
            except RenderError as exc:
                error = f"'until' of step '{step.id}' cannot be read: {exc}"
                self._writer.emit_step(ev.STEP_FAILED, key, {"error": error, "attempt": attempt})
                return give_up
        if live.state.mode == "tabletop" and not met:
            # Simulated outputs do not change from round to round: one round stands for all.
            ctx.notes.append(
                f"tabletop: one simulated round stands for the repeat (every "
                f"{format_duration(repeat.every)}, at most {repeat.max} rounds)"
            )
            met = True
        if met or (repeat.until is None and rounds >= repeat.max):
            return self._succeeded(live, key, act, ctx, outputs, attempt, give_up, rounds=rounds)
        if rounds >= repeat.max:
            self._notes(key, ctx)
            error = (
                f"'until' was still false after {rounds} round(s), the most 'repeat' allows "
                f"(every {format_duration(repeat.every)}): {repeat.until}"
            )
            self._writer.emit_step(
                ev.STEP_FAILED, key, {"error": error, "attempt": attempt, "rounds": rounds},
                defer=True,
            )  # fmt: skip
            return give_up
        self._notes(key, ctx)
        due = datetime.now(UTC) + timedelta(seconds=repeat.every)
        self._writer.emit_step(
            ev.STEP_REPEATING, key,
            {"round": rounds, "of": repeat.max, "outputs": _shown(act, outputs),
             "next_at": due.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},  # as the journal writes times
        )  # fmt: skip
        if self._pause(repeat.every, live):
            return STOP  # the round is recorded: a resume waits out the rest, then goes on
        return None

    def _until_due(self, live: Live, known: StepState) -> bool:
        """Wait until the next round of a ``repeat`` step is due (as recorded, so a resume
        after a crash waits only what is left); True if the run was cancelled meanwhile."""
        if known.next_at is None:
            return False
        try:
            left = (parse_ts(known.next_at) - datetime.now(UTC)).total_seconds()
        except ValueError:
            return False  # unreadable: go on now rather than never
        return left > 0 and self._pause(left, live)

    def _failed(
        self,
        live: Live,
        step: Step,
        key: str,
        act: Action[Any],
        ctx: ActionContext,
        exc: ActionError,
        flag: threading.Event,
        attempt: int,
        tries: int,
        attempts: int,
        idempotent: bool,
    ) -> str | None:
        """Record what an attempt's ActionError means: STOP, WAIT, FAIL, or None to retry.

        ``tries`` counts the attempts of this round (of every attempt, without ``repeat``)."""
        writer = self._writer
        self._notes(key, ctx)
        if flag.is_set() and live.cancelled.is_set():
            writer.emit_step(ev.STEP_INTERRUPTED, key, {"reason": "stopped by operator"})
            return STOP
        if isinstance(exc, ActionTimeout) and not idempotent:
            # It may have acted, or may still act (an abandoned attempt): never run it
            # again on a guess.  A person checks and decides, as after a crash.
            writer.emit_step(
                ev.STEP_WAITING, key,
                {"for": "operator", "prompt": (
                    f"step '{key}' timed out ({exc}); {act.name} is not idempotent, so "
                    "its outcome is unknown and it is not retried: check by hand, then "
                    f"irctl resume {live.state.run_id} --step {key} "
                    "--mark done|retry|failed"
                )},
            )  # fmt: skip
            return WAIT
        if exc.retryable and tries < attempts and step.retry is not None:
            delay = min(step.retry.backoff * 2 ** (tries - 1), step.retry.max_backoff)
            writer.emit_step(
                ev.STEP_RETRYING, key,
                {"attempt": attempt, "error": str(exc), "delay": delay},
            )  # fmt: skip
            if self._pause(delay, live):
                writer.emit_step(ev.STEP_INTERRUPTED, key, {"reason": "stopped by operator"})
                return STOP
            return None
        writer.emit_step(ev.STEP_FAILED, key, {"error": str(exc), "attempt": attempt}, defer=True)
        return FAIL

    def _succeeded(
        self,
        live: Live,
        key: str,
        act: Action[Any],
        ctx: ActionContext,
        outputs: dict[str, Any],
        attempt: int,
        give_up: str,
        *,
        rounds: int | None = None,
    ) -> str:
        """Record the outputs of the attempt that succeeded (secret ones masked)."""
        self._notes(key, ctx)
        problem = _unrecordable(act, outputs)
        if problem is not None:  # an action's bug: record it, never wedge the run
            self._writer.emit_step(ev.STEP_FAILED, key, {"error": problem, "attempt": attempt})
            return give_up
        live.outputs[key] = outputs
        if act.secret_outputs:  # masked whole, and searched for in what comes later
            live.redactor.add(*(str(outputs[k]) for k in act.secret_outputs if k in outputs))
        data: dict[str, Any] = {"outputs": _shown(act, outputs), "attempt": attempt}
        if rounds is not None:
            data["rounds"] = rounds
        self._writer.emit_step(ev.STEP_SUCCEEDED, key, data, defer=True)
        return OK

    def _pause(self, seconds: float, live: Live) -> bool:
        """Sleep between retries; True if the run was cancelled meanwhile."""
        if self._sleep is not None:
            self._sleep(seconds)
            return live.cancelled.is_set()
        return live.cancelled.wait(seconds)

    def _recorder(self, key: str, ctx: ActionContext) -> Callable[[dict[str, Any]], None]:
        """ActionContext.record for step ``key``: the notes so far, then a ``step.note`` with
        the facts, committed before the action goes on."""

        def record(found: dict[str, Any]) -> None:
            self._notes(key, ctx)
            text = "recorded " + ", ".join(sorted(found))
            self._writer.emit_step(ev.STEP_NOTE, key, {"text": text, "facts": found})

        return record

    def _notes(self, key: str, ctx: ActionContext) -> None:
        for note in ctx.notes:
            self._writer.emit_step(ev.STEP_NOTE, key, {"text": note})
        ctx.notes.clear()


def _unrecordable(act: Action[Any], outputs: dict[str, Any]) -> str | None:
    """Why ``outputs`` cannot be recorded (None: they can)."""
    if not outputs:
        return None
    try:
        canonical_json(outputs)
    except IrctlError as exc:
        return f"{act.name} returned outputs that cannot be recorded: {exc}"
    return None


def _shown(act: Action[Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """``outputs`` as recorded: an output the action declares secret is masked whole."""
    hide = act.secret_outputs
    if not hide:
        return outputs
    return {k: REDACTED if k in hide else v for k, v in outputs.items()}


def _truthy(value: Any) -> bool:
    """A rendered ``until`` as a yes or no (as ``when`` reads it)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "none")
    return bool(value)
