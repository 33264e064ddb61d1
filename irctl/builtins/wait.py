"""``wait.*``: pause a run, or poll until something is true.

::

    - id: confirm-halted
      action: wait.until
      with:
        url: "{{ vars.exchange_admin_url }}/withdrawals/status?chain={{ params.chain }}"
        headers: {Authorization: "Bearer {{ secrets.admin_token }}"}
        json_path: halted
        equals: true
        interval: 2s
        timeout: 1m

Both wake at once when the run is cancelled.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from irctl.actions import ActionContext, Probe, action
from irctl.builtins._common import Inputs, Seconds, bounded, check_cancelled, excerpt
from irctl.builtins._http import Headers, Upper, Url, fetch, shown, status_ok
from irctl.errors import ActionError, ActionTimeout

#: Longest wait for one poll's response.
REQUEST_TIMEOUT = 10.0


class Sleep(Inputs):
    """A pause."""

    seconds: Seconds = Field(ge=0, description="how long: a number of seconds or 2s, 5m, 250ms")


@action("wait.sleep", idempotent=True)
def sleep(inputs: Sleep, ctx: ActionContext) -> dict[str, Any]:
    """Pause the run (wakes at once if the run is cancelled)."""
    left = ctx.remaining()
    if left is not None and inputs.seconds > left:
        raise ActionTimeout(
            f"wait.sleep: {inputs.seconds:g}s is longer than what is left of the step's "
            f"timeout ({left:.3g}s)",
            retryable=False,
        )
    ctx.sleep(inputs.seconds)
    return {"seconds": inputs.seconds}


@sleep.simulate
def _simulate_sleep(inputs: Sleep, ctx: ActionContext) -> dict[str, Any]:
    return {"simulated": True, "would": f"sleep {inputs.seconds:g}s", "seconds": inputs.seconds}


class Until(Inputs):
    """An HTTP condition polled until it holds."""

    url: Url = Field(description="absolute http:// or https:// URL polled")
    method: Annotated[Literal["GET", "HEAD"], Upper] = Field(
        default="GET", description="GET or HEAD"
    )
    headers: Headers = Field(
        default_factory=dict, description="request headers (never recorded in errors)"
    )
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(
        default=None,
        min_length=1,
        description="statuses that count (100-599); any 2xx when not given",
    )
    json_path: str | None = Field(
        default=None,
        description="dotted path into the JSON response (items of a list by index: a.0.b); "
        "the condition holds when the value there equals `equals`, or is truthy without it",
    )
    equals: Any = Field(default=None, description="the value expected at json_path")
    interval: Seconds = Field(default=5.0, gt=0, description="pause between polls")
    timeout: Seconds = Field(
        default=300.0, gt=0, description="give up after this long (capped by the step's timeout)"
    )

    @field_validator("json_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(not part for part in value.split("."))):
            raise ValueError(f"{value!r} is not a dotted path like 'data.halted'")
        return value

    def describe(self) -> str:
        expected = "2xx" if self.expect_status is None else str(self.expect_status)
        text = f"{self.method} {shown(self.url)} is {expected}"
        if self.json_path is not None:
            if "equals" in self.model_fields_set:
                text += f" with {self.json_path} == {self.equals!r}"
            else:
                text += f" with {self.json_path} truthy"
        return text


_MISSING = object()


def lookup(value: Any, path: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _equal(value: Any, expected: Any) -> bool:
    """JSON equality: true is not 1, 2 is 2.0."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    return bool(value == expected)


def check(inputs: Until, timeout: float) -> tuple[bool, str, dict[str, Any]]:
    """Poll once: (holds, what was seen, outputs)."""
    try:
        response = fetch(
            inputs.method,
            inputs.url,
            headers=inputs.headers,
            data=None,
            timeout=timeout,
            limit=64 * 1024,
        )
    except ActionError as exc:  # down, refused, slow: the condition does not hold yet
        return False, str(exc), {}
    outputs: dict[str, Any] = {"status": response.status}
    if response.status in (401, 403) and not status_ok(response.status, inputs.expect_status):
        raise ActionError(
            f"{inputs.method} {shown(inputs.url)} returned HTTP {response.status}: "
            "credentials rejected; polling will not fix that",
            retryable=False,
        )
    if not status_ok(response.status, inputs.expect_status):
        return False, f"HTTP {response.status} {excerpt(response.text(), 120)}".strip(), outputs
    if inputs.json_path is None:
        return True, f"HTTP {response.status}", outputs
    parsed, body = response.json()
    if not parsed:
        return False, f"HTTP {response.status}, response is not JSON", outputs
    value = lookup(body, inputs.json_path)
    if value is _MISSING:
        return False, f"HTTP {response.status}, no {inputs.json_path} in the response", outputs
    outputs["value"] = value
    holds = _equal(value, inputs.equals) if "equals" in inputs.model_fields_set else bool(value)
    return holds, f"HTTP {response.status}, {inputs.json_path} = {value!r}", outputs


@action("wait.until", idempotent=True)
def until(inputs: Until, ctx: ActionContext) -> dict[str, Any]:
    """Poll an HTTP endpoint until a condition holds."""
    check_cancelled(ctx)
    timeout = bounded(inputs.timeout, ctx, f"wait.until {shown(inputs.url)}")
    started = time.monotonic()
    deadline = started + timeout
    polls = 0
    while True:
        polls += 1
        left = deadline - time.monotonic()
        holds, seen, outputs = check(inputs, max(0.05, min(REQUEST_TIMEOUT, left)))
        if holds:
            elapsed = round((time.monotonic() - started) * 1000, 1)
            return {**outputs, "polls": polls, "elapsed_ms": elapsed}
        left = deadline - time.monotonic()
        if left <= 0:
            raise ActionTimeout(
                f"wait.until: {inputs.describe()} did not hold within {timeout:g}s "
                f"({polls} polls); last seen: {seen}"
            )
        ctx.sleep(min(inputs.interval, left))


@until.simulate
def _simulate_until(inputs: Until, ctx: ActionContext) -> dict[str, Any]:
    outputs: dict[str, Any] = {
        "simulated": True,
        "would": f"poll every {inputs.interval:g}s until {inputs.describe()} "
        f"(at most {inputs.timeout:g}s)",
        "status": inputs.expect_status[0] if inputs.expect_status else 200,
        "polls": 0,
        "elapsed_ms": 0.0,
    }
    if inputs.json_path is not None and "equals" in inputs.model_fields_set:
        outputs["value"] = inputs.equals
    return outputs


@until.probe
def _probe_until(inputs: Until, ctx: ActionContext) -> Probe:
    try:
        holds, seen, outputs = check(inputs, REQUEST_TIMEOUT)
    except ActionError as exc:  # credentials rejected: nobody can tell
        return Probe.unknown(str(exc))
    if holds:
        return Probe.done({**outputs, "polls": 1, "elapsed_ms": 0.0})
    return Probe.not_done(seen)
