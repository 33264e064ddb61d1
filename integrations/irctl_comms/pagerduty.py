"""Paging through PagerDuty's Events API v2: the ``page.*`` actions.

::

    - id: page-oncall
      action: page.trigger
      with:
        summary: "Hot wallet outflow with no matching withdrawal ({{ params.chain }})"
        severity: critical
        source: irctl
        dedup_key: "{{ run.incident or run.id }}"
        custom_details: {runbook: "{{ run.runbook }}", run: "{{ run.id }}"}
    # ... once contained
    - id: page-resolved
      action: page.resolve
      with: {dedup_key: "{{ run.incident or run.id }}"}

The settings are ``integrations.page`` in irctl.yaml::

    integrations:
      page:
        routing_key: env:PAGERDUTY_ROUTING_KEY   # a secret reference: the service's integration key
        base_url: https://events.pagerduty.com   # the default; a stand-in on 127.0.0.1 in tests
        timeout: 10                 # seconds per request (never more than the step has left)
        rate_limit_retries: 3       # 429s (and 503s with Retry-After) waited out, at most
        max_retry_wait: 30          # the longest Retry-After waited for, in seconds

A step may name another service's key (``routing_key: env:PAGERDUTY_TREASURY_KEY``): always a
reference, never the key, which is never recorded (not in outputs, notes or errors).

Every event is ``POST {base_url}/v2/enqueue``; PagerDuty answers 202 with ``{status, message,
dedup_key}``.  The events are idempotent by their ``dedup_key`` (PagerDuty applies a second
trigger with the same key to the open alert, and acknowledging or resolving twice changes
nothing), so the actions are declared idempotent: a retry, or a step in doubt after a crash,
sends the event again.  They have no probe: the Events API has no way to read an alert back
(that takes PagerDuty's REST API and another credential).  ``dedup_key`` defaults to the run
id, the same for every ``page.*`` step of a run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from irctl.actions import ActionContext, action, preflight
from irctl.errors import ActionError
from irctl_comms._http import (
    Answer,
    JsonApi,
    base_url,
    configured_secret,
    reference_secret,
)

SECTION = "page"
SERVICE = "PagerDuty"
DEFAULT_BASE_URL = "https://events.pagerduty.com"
ENQUEUE = "/v2/enqueue"
KEY_LENGTH = 32  # "the 32 character Integration Key"

Outputs = dict[str, Any]
Severity = Literal["critical", "error", "warning", "info"]
Reference = Annotated[
    str,
    Field(
        pattern=r"^(env|file|aws-sm):\S+$",
        description="a secret reference to the routing key (env:VAR, file:PATH, aws-sm:NAME); "
        "default: integrations.page.routing_key",
    ),
]


class _Inputs(BaseModel):
    """Unknown fields are errors, values frozen, and a refused value is never repeated (a
    routing key pasted where its reference belongs must not reach the record)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _Event(_Inputs):
    routing_key: Reference | None = None
    dedup_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="the alert's key (at most 255 characters); default: the run id",
    )


class Trigger(_Event):
    """Open an alert (or add to the open one with the same dedup_key)."""

    summary: str = Field(min_length=1, max_length=1024, description="the alert's title")
    severity: Severity = Field(description="critical, error, warning or info")
    source: str = Field(
        min_length=1, max_length=255, description="the affected system, e.g. a host or 'irctl'"
    )
    component: str | None = Field(default=None, min_length=1, max_length=255)
    group: str | None = Field(default=None, min_length=1, max_length=255)
    custom_details: dict[str, Any] | None = Field(
        default=None, description="free-form details shown with the alert"
    )


class Acknowledge(_Event):
    """Acknowledge the open alert with this dedup_key: someone is on it."""


class Resolve(_Event):
    """Resolve the open alert with this dedup_key."""


def dedup_key(inputs: _Event, ctx: ActionContext) -> str:
    """The step's dedup key: the one given, else the run id (the same for the whole run)."""
    return inputs.dedup_key or ctx.run_id


def _routing_key(inputs: _Event, ctx: ActionContext, name: str) -> str:
    if inputs.routing_key is not None:
        key = reference_secret(ctx.config, "routing_key", inputs.routing_key, name)
        where = f"the routing key behind {inputs.routing_key}"
    else:
        key = configured_secret(
            ctx.config, SECTION, "routing_key", name, example="env:PAGERDUTY_ROUTING_KEY"
        )
        where = "the routing key behind integrations.page.routing_key"
    if len(key) != KEY_LENGTH or not key.isascii() or not key.isprintable():
        # its length only: a wrong value must still not be repeated
        raise ActionError(
            f"{name}: {where} is {len(key)} characters; a PagerDuty Events API v2 "
            f"integration key is {KEY_LENGTH} (the service's Integrations tab)",
            retryable=False,
        )
    return key


def _reason(answer: Answer) -> str:
    body = answer.body if isinstance(answer.body, dict) else {}
    parts = [str(body.get("message") or body.get("status") or "").strip()]
    errors = body.get("errors")
    if isinstance(errors, list):
        parts.extend(str(error) for error in errors)
    found = "; ".join(part for part in parts if part)
    return found or answer.text[:200].strip() or "no reason given"


def _send(name: str, inputs: _Event, ctx: ActionContext, event: dict[str, Any]) -> Answer:
    """``event`` with the routing key, to ``/v2/enqueue``; the 202 answer."""
    if ctx.cancelled.is_set():
        raise ActionError(f"{name}: cancelled", retryable=False)
    key = _routing_key(inputs, ctx, name)
    api = JsonApi(
        service=SERVICE,
        section=SECTION,
        config=ctx.config,
        base=base_url(ctx.config, SECTION, DEFAULT_BASE_URL),
        headers={},
        secrets=[key],
        credential=(
            f"routing_key {inputs.routing_key}"
            if inputs.routing_key
            else "integrations.page.routing_key"
        ),
        timeout=ctx.remaining(),
        cancelled=ctx.cancelled,
        note=ctx.note,
        reason=_reason,
    )
    what = f"{name} (dedup_key {event['dedup_key']})"
    answer = api.call("POST", ENQUEUE, {"routing_key": key, **event}, what=what)
    if answer.status != 202 or not isinstance(answer.body, dict):
        raise ActionError(
            f"{SERVICE} answered {what} with HTTP {answer.status} and no event status; "
            "the Events API v2 answers 202: check integrations.page.base_url",
            retryable=False,
        )
    if answer.body.get("status") != "success":
        raise ActionError(
            f"{SERVICE} did not take {what}: {_reason(answer)}",
            retryable=False,
        )
    if answer.body.get("dedup_key") not in (None, event["dedup_key"]):
        ctx.note(
            f"{SERVICE} answered dedup_key {answer.body.get('dedup_key')!r} for "
            f"{event['dedup_key']!r}"
        )
    return answer


def _outputs(event: dict[str, Any], answer: Answer | None) -> Outputs:
    """What was sent (never the routing key), and PagerDuty's answer."""
    body = answer.body if answer is not None and isinstance(answer.body, dict) else {}
    return {
        **event,
        "dedup_key": str(body.get("dedup_key") or event["dedup_key"]),
        "status": body.get("status"),
        "message": body.get("message"),
    }


# --- page.trigger -------------------------------------------------------------------------------


def _trigger_event(inputs: Trigger, ctx: ActionContext) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "summary": inputs.summary,
        "source": inputs.source,
        "severity": inputs.severity,
    }
    for name in ("component", "group", "custom_details"):
        value = getattr(inputs, name)
        if value is not None:
            payload[name] = value
    return {
        "event_action": "trigger",
        "dedup_key": dedup_key(inputs, ctx),
        "payload": payload,
        "client": "irctl",
    }


@action("page.trigger", idempotent=True)
def trigger(inputs: Trigger, ctx: ActionContext) -> Outputs:
    """Page the on-call of a PagerDuty service (one alert per dedup_key)."""
    event = _trigger_event(inputs, ctx)
    return _outputs(event, _send("page.trigger", inputs, ctx, event))


@trigger.simulate
def _simulate_trigger(inputs: Trigger, ctx: ActionContext) -> Outputs:
    event = _trigger_event(inputs, ctx)
    return {
        "simulated": True,
        "would": f"page PagerDuty ({inputs.severity}) from {inputs.source}: {inputs.summary} "
        f"(dedup_key {event['dedup_key']})",
        **_outputs(event, None),
    }


# --- page.acknowledge, page.resolve -------------------------------------------------------------


def _follow_up(action_name: str, event_action: str, inputs: _Event, ctx: ActionContext) -> Outputs:
    event = {"event_action": event_action, "dedup_key": dedup_key(inputs, ctx)}
    return _outputs(event, _send(action_name, inputs, ctx, event))


def _simulate_follow_up(event_action: str, inputs: _Event, ctx: ActionContext) -> Outputs:
    event = {"event_action": event_action, "dedup_key": dedup_key(inputs, ctx)}
    return {
        "simulated": True,
        "would": f"{event_action} the PagerDuty alert with dedup_key {event['dedup_key']}",
        **_outputs(event, None),
    }


@action("page.acknowledge", idempotent=True)
def acknowledge(inputs: Acknowledge, ctx: ActionContext) -> Outputs:
    """Acknowledge a PagerDuty alert by its dedup_key (its notifications stop)."""
    return _follow_up("page.acknowledge", "acknowledge", inputs, ctx)


@acknowledge.simulate
def _simulate_acknowledge(inputs: Acknowledge, ctx: ActionContext) -> Outputs:
    return _simulate_follow_up("acknowledge", inputs, ctx)


@action("page.resolve", idempotent=True)
def resolve(inputs: Resolve, ctx: ActionContext) -> Outputs:
    """Resolve a PagerDuty alert by its dedup_key."""
    return _follow_up("page.resolve", "resolve", inputs, ctx)


@resolve.simulate
def _simulate_resolve(inputs: Resolve, ctx: ActionContext) -> Outputs:
    return _simulate_follow_up("resolve", inputs, ctx)


# --- readiness ----------------------------------------------------------------------------------


@preflight("page")
def ready(config: dict[str, Any]) -> list[str]:
    """``irctl validate --check-integrations``: the settings and the routing key can be read.

    Nothing is sent: every Events API request is an event, and an event pages someone.
    """
    problems: list[str] = []
    try:
        base_url(config, SECTION, DEFAULT_BASE_URL)
    except ActionError as exc:
        problems.append(exc.message)
    if config.get("routing_key") not in (None, ""):
        try:
            key = configured_secret(
                config, SECTION, "routing_key", "page", example="env:PAGERDUTY_ROUTING_KEY"
            )
        except ActionError as exc:
            problems.append(exc.message)
        else:
            if len(key) != KEY_LENGTH:
                problems.append(
                    f"page: the routing key behind integrations.page.routing_key is {len(key)} "
                    f"characters; a PagerDuty integration key is {KEY_LENGTH}"
                )
    return problems
