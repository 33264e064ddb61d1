"""Test helpers for irctl and for integration authors.

:class:`ExchangeAdminStub` is a real HTTP server on 127.0.0.1 standing in for
an exchange's admin API (the endpoints the hot-wallet-compromise runbook
calls); it records what it received and keeps the state tests assert on::

    from irctl.testing import ExchangeAdminStub, run_action

    with ExchangeAdminStub(token="t0k3n") as exchange:
        run_action("http.request", {
            "method": "POST", "url": exchange.url + "/withdrawals/halt",
            "headers": {"Authorization": "Bearer t0k3n"}, "json": {"chain": "ethereum"},
        })
        assert exchange.halted == {"ethereum"}

This module is also the ``testing`` integration: ``testing.record`` (a side
effect with a probe, for crash and exactly-once tests), ``testing.record_noprobe``
and ``testing.fail``.  Run the stub on its own with::

    python -m irctl.testing serve-exchange --port 8099 --token t0k3n
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irctl.actions import ActionContext, Probe, action, default_registry
from irctl.errors import ActionError
from irctl.standins.exchange_admin import (  # the exchange admin API stand-in
    ExchangeAdminStub,
    ExchangeUser,
    FreezeRequest,
    RecordedRequest,
)

__all__ = [
    "ExchangeAdminStub",
    "ExchangeUser",
    "FreezeRequest",
    "RecordedRequest",
    "context",
    "recorded_keys",
    "run_action",
]

# --- driving actions -----------------------------------------------------------------------


def context(**overrides: Any) -> ActionContext:
    """An :class:`ActionContext` for calling an action directly (``run_id``/``step_id`` preset)."""
    values: dict[str, Any] = {"run_id": "test-run", "step_id": "test-step"}
    values.update(overrides)
    return ActionContext(**values)


def run_action(
    name: str,
    inputs: dict[str, Any],
    ctx: ActionContext | None = None,
    *,
    simulate: bool = False,
) -> dict[str, Any]:
    """Find an action by name as the engine does, validate ``inputs`` and run (or simulate) it."""
    found = default_registry.get(name)
    parsed = found.parse(inputs)
    ctx = ctx or context()
    return found.call_simulate(parsed, ctx) if simulate else found.call_run(parsed, ctx)


# --- the `testing` integration ----------------------------------------------------------------


class Record(BaseModel):
    """Append ``key`` as one line to a file: a side effect tests can count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, description="file the line is appended to")
    key: str = Field(min_length=1, description="the line written; no line breaks")
    delay: float = Field(default=0.0, ge=0, description="seconds to sleep before the side effect")
    fail_times: int = Field(
        default=0,
        ge=0,
        description="fail (retryable) until the file holds this many 'fail <key>' lines",
    )

    @field_validator("key")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("key must be one line")
        return value


class Fail(BaseModel):
    """Always fail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = Field(default="testing.fail failed, as asked", description="the error message")
    retryable: bool = Field(default=False, description="whether a retry may help")


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def recorded_keys(path: str) -> list[str]:
    """The lines of a ``testing.record`` file, without newlines (empty if it does not exist)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def _record(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    if inputs.delay:
        ctx.sleep(inputs.delay)
    failed = sum(1 for line in recorded_keys(inputs.path) if line == f"fail {inputs.key}")
    if failed < inputs.fail_times:
        _append(inputs.path, f"fail {inputs.key}")
        raise ActionError(
            f"testing.record {inputs.key}: failure {failed + 1} of {inputs.fail_times}, as asked",
            retryable=True,
        )
    _append(inputs.path, inputs.key)
    return {"key": inputs.key, "path": inputs.path}


def _simulate_record(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"append {inputs.key!r} to {inputs.path}",
        "key": inputs.key,
        "path": inputs.path,
    }


@action("testing.record")
def record(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    """Append a key to a file (probe: is the key in the file?)."""
    return _record(inputs, ctx)


record.simulate(_simulate_record)


@record.probe
def _probe_record(inputs: Record, ctx: ActionContext) -> Probe:
    if inputs.key in recorded_keys(inputs.path):
        return Probe.done({"key": inputs.key, "path": inputs.path})
    return Probe.not_done(f"{inputs.key!r} is not in {inputs.path}")


@action("testing.record_noprobe")
def record_noprobe(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    """Append a key to a file (no probe: a crash mid-way leaves the step in doubt)."""
    return _record(inputs, ctx)


record_noprobe.simulate(_simulate_record)


@action("testing.fail")
def fail(inputs: Fail, ctx: ActionContext) -> dict[str, Any]:
    """Always fail with the given message."""
    raise ActionError(inputs.message, retryable=inputs.retryable)


# --- python -m irctl.testing serve-exchange ---------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m irctl.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve-exchange", help="run the exchange admin API stand-in")
    serve.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    serve.add_argument("--token", required=True, help="the bearer token requests must carry")
    args = parser.parse_args(argv)
    stub = ExchangeAdminStub(args.token, port=args.port)
    print(f"exchange admin stub listening on {stub.url}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    finally:
        stub.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- the Slack Web API stand-in (irctl/standins/slack.py) -------------------------------------

from irctl.standins.slack import (  # noqa: E402  (kept apart: the stand-in has its own module)
    SlackCall,
    SlackChannel,
    SlackMessage,
    SlackResponse,
    SlackStandIn,
    SlackUser,
)

__all__ += [
    "SlackCall", "SlackChannel", "SlackMessage", "SlackResponse", "SlackStandIn", "SlackUser",
]  # fmt: skip
