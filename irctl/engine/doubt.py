"""In-doubt resolution: a step that started but has no recorded outcome is never silently repeated.

Owns :class:`InDoubt`, which settles such a step when the run goes on: by an operator's
recorded mark (done, retry, failed), by the action's ``probe`` (did the key get disabled?),
by running it again when the action is idempotent (or the run is a tabletop drill), and
otherwise by asking a person to check by hand and mark it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from irctl.actions import Action, ActionContext
from irctl.engine.call import facts, integration_config
from irctl.engine.live import FAIL, OK, WAIT, Live
from irctl.errors import ActionError
from irctl.journal import events as ev
from irctl.journal.state import StepState

if TYPE_CHECKING:
    from irctl.engine.writer import JournalWriter
    from irctl.runbook.model import Config, Step


class InDoubt:
    """Settles the steps a run left in doubt (``step.started`` without an outcome)."""

    def __init__(self, writer: JournalWriter, *, config: Config, workspace: Path | None) -> None:
        self._writer = writer
        self._config = config
        self._workspace = workspace

    def settle(
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
        writer = self._writer
        live = writer.require_live()
        if known.mark is not None and known.resolved_by not in (None, *ev.ENGINES_OWN):
            return self._marked(key, known)
        if known.digest is not None and known.digest != digest:
            why = "its inputs changed since it started"
        elif act.has_probe and live.state.mode != "tabletop":
            probed, why = self._probe(live, key, act, inputs, known)
            if probed != WAIT:
                return probed
        elif idempotent or live.state.mode == "tabletop":
            writer.emit_step(ev.STEP_RESOLVED, key, {"by": "idempotent", "mark": "retry"})
            return None
        else:
            why = f"{act.name} is not idempotent and has no probe"
        writer.emit_step(
            ev.STEP_WAITING, key,
            {"for": "operator", "prompt": (
                f"step '{key}' started but its outcome is unknown ({why}); check by hand, then "
                f"irctl resume {live.state.run_id} --step {key} --mark done|retry|failed"
            )},
        )  # fmt: skip
        return WAIT

    def _marked(self, key: str, known: StepState) -> str | None:
        """What an operator's mark (``irctl resume --mark``) says of the step."""
        mark = known.mark
        if mark == "done":
            self._writer.emit_step(
                ev.STEP_SUCCEEDED, key, {"outputs": {}, "resolved_by": known.resolved_by}
            )
            return OK
        if mark == "failed":
            self._writer.emit_step(
                ev.STEP_FAILED, key,
                {"error": f"marked failed by {known.resolved_by}", "attempt": known.attempt},
            )  # fmt: skip
            return FAIL
        return None  # retry

    def _probe(
        self, live: Live, key: str, act: Action[Any], inputs: dict[str, Any], known: StepState
    ) -> tuple[str | None, str]:
        """Ask the action whether its effect has happened: OK (done, recorded), None (not
        done: run it again), or WAIT with the reason it could not tell."""
        ctx = ActionContext(
            run_id=live.state.run_id, step_id=key, attempt=known.attempt,
            mode=live.state.mode,
            config=integration_config(live, self._config, self._workspace, act.namespace),
            vars=self._config.vars, cancelled=live.cancelled, facts=facts(live, key),
        )  # fmt: skip
        why = ""
        try:
            found = act.call_probe(act.parse(inputs), ctx)
        except (ActionError, ValidationError) as exc:
            found = None
            why = f"probe failed: {exc}"
        if found is not None and found.state == "done":
            self._writer.emit_step(ev.STEP_RESOLVED, key, {"by": "probe", "mark": "done"})
            live.outputs[key] = found.outputs
            self._writer.emit_step(
                ev.STEP_SUCCEEDED, key, {"outputs": found.outputs, "probe": True}
            )
            return OK, why
        if found is not None and found.state == "not_done":
            self._writer.emit_step(ev.STEP_RESOLVED, key, {"by": "probe", "mark": "retry"})
            return None, why
        if found is not None:
            why = f"probe could not tell: {found.reason}"
        return WAIT, why
