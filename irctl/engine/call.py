"""Calling an action: what it is given, how it is called, and what is kept of its outputs.

Owns the template context of a step's inputs, an action's ``ctx.config`` and the facts its
earlier attempts recorded, and the call itself: simulated in a tabletop drill (only irctl's
own rehearsed actions run for real there), on a thread of its own when the step has a
timeout, an unexpected exception turned into a failed step, and the outputs checked to be
recordable exactly as the journal will hold them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from irctl.actions import Action, ActionContext, WaitForOperator
from irctl.engine.live import Live, StepsView
from irctl.engine.plan import template_context
from irctl.errors import ActionError, ActionTimeout, IrctlError

if TYPE_CHECKING:
    from irctl.runbook.model import Config


def context(live: Live, config: Config, item: Any = None, has_item: bool = False) -> dict[str, Any]:
    """What the templates of a step read: params, secrets, vars, the run, earlier steps."""
    state = live.state
    run = {
        "id": state.run_id, "runbook": state.runbook, "mode": state.mode,
        "incident": state.incident, "initiator": state.initiator,
        "started_at": state.created_at, "failed_step": state.failed_step,
    }  # fmt: skip
    return template_context(
        params=state.params, secrets=live.secrets, vars=config.vars, run=run,
        steps=StepsView(live), item=item, has_item=has_item,
    )  # fmt: skip


def integration_config(
    live: Live, config: Config, workspace: Path | None, namespace: str
) -> dict[str, Any]:
    """An action's ``ctx.config``: its integration's settings, plus ``_operators`` (the
    operators as recorded at run start: roles and Slack ids, never a secret) and
    ``_workspace`` (the folder relative paths in the settings are read from)."""
    found = {**config.integrations.get(namespace, {}), "_operators": live.state.operators}
    if workspace is not None:
        found["_workspace"] = str(workspace)
    return found


def facts(live: Live, key: str) -> dict[str, Any]:
    """The facts earlier attempts of step ``key`` recorded, as this process verified them
    (never a row read back unchecked: a forged nonce or transaction must not reach a probe)."""
    return dict(live.facts.get(key, {}))


def call(
    act: Action[Any],
    raw: dict[str, Any],
    ctx: ActionContext,
    timeout: float | None,
    cancel_grace: float,
) -> dict[str, Any]:
    """Run (or, in a drill, simulate) ``act`` with inputs ``raw``; its outputs, or ActionError."""
    try:
        parsed = act.parse(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'inputs'}: {e['msg']}" for e in exc.errors()
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
        worker.join(min(1.0, cancel_grace))
        raise ActionTimeout(f"{act.name} did not finish within {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return _checked_outputs(act, box["result"])


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
