"""page.* against the PagerDuty Events API v2 stand-in: through the registry and the engine."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from irctl_comms.testing import PagerDutyStandIn
from pydantic import ValidationError

from irctl.actions import ActionContext, default_registry
from irctl.errors import ActionError
from irctl.testing import context, run_action
from tests.comms_run import run_steps

KEY = "HOTWALLETSERVICEKEY0000000000001"  # 32 characters, as PagerDuty's integration keys
OTHER = "TREASURYSERVICEKEY00000000000002"
TRIGGER = {"summary": "Hot wallet outflow", "severity": "critical", "source": "irctl"}

Ctx = Callable[..., ActionContext]


@pytest.fixture
def pagerduty(monkeypatch: pytest.MonkeyPatch) -> Iterator[PagerDutyStandIn]:
    monkeypatch.setenv("IRCTL_TEST_PD_KEY", KEY)
    monkeypatch.setenv("IRCTL_TEST_PD_OTHER", OTHER)
    with PagerDutyStandIn(routing_keys=[KEY, OTHER]) as standin:
        yield standin


@pytest.fixture
def ctx(pagerduty: PagerDutyStandIn) -> Ctx:
    def make(timeout: float | None = 10, run_id: str = "r-1", **settings: Any) -> ActionContext:
        config: dict[str, Any] = {
            "routing_key": "env:IRCTL_TEST_PD_KEY",
            "base_url": pagerduty.url,
            "timeout": 2,
            "max_retry_wait": 5,
        }
        config.update(settings)
        config = {k: v for k, v in config.items() if v is not None}
        return context(run_id=run_id, config=config, timeout=timeout)

    return make


def failure(name: str, inputs: dict[str, Any], ctx: ActionContext) -> ActionError:
    with pytest.raises(ActionError) as raised:
        run_action(name, inputs, ctx)
    assert KEY not in str(raised.value)
    assert OTHER not in str(raised.value)
    return raised.value


def test_trigger_sends_the_documented_event(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    out = run_action(
        "page.trigger",
        {**TRIGGER, "dedup_key": "INC-42", "component": "eth-hot", "custom_details": {"usd": 1}},
        ctx(),
    )
    assert out == {
        "event_action": "trigger",
        "dedup_key": "INC-42",
        "payload": {
            "summary": "Hot wallet outflow", "source": "irctl", "severity": "critical",
            "component": "eth-hot", "custom_details": {"usd": 1},
        },
        "client": "irctl",
        "status": "success",
        "message": "Event processed",
    }  # fmt: skip
    [sent] = pagerduty.requests
    assert (sent.method, sent.path, sent.status, sent.authorized) == (
        "POST", "/v2/enqueue", 202, True,
    )  # fmt: skip
    assert sent.body == {
        "routing_key": "(routing key)",  # the stand-in records that it came, never the key
        **{k: out[k] for k in ("event_action", "dedup_key", "payload", "client")},
    }
    alert = pagerduty.alert("INC-42")
    assert alert is not None
    assert (alert.status, alert.summary, alert.severity, alert.source) == (
        "triggered", "Hot wallet outflow", "critical", "irctl",
    )  # fmt: skip


def test_the_dedup_key_is_the_run_id_unless_given(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    first = run_action("page.trigger", TRIGGER, ctx(run_id="r-7"))
    again = run_action("page.trigger", TRIGGER, ctx(run_id="r-7"))  # a retry: the same alert
    assert first["dedup_key"] == again["dedup_key"] == "r-7"
    assert [(a.dedup_key, a.events) for a in pagerduty.alerts] == [("r-7", ["trigger", "trigger"])]
    run_action("page.acknowledge", {}, ctx(run_id="r-7"))
    assert pagerduty.alert("r-7").status == "acknowledged"
    out = run_action("page.resolve", {}, ctx(run_id="r-7"))
    assert out == {
        "event_action": "resolve", "dedup_key": "r-7", "status": "success",
        "message": "Event processed",
    }  # fmt: skip
    assert pagerduty.alert("r-7").status == "resolved"
    run_action("page.trigger", TRIGGER, ctx(run_id="r-7"))  # resolved: a new alert
    assert [a.status for a in pagerduty.alerts] == ["resolved", "triggered"]


def test_a_step_may_page_another_service(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    run_action("page.trigger", {**TRIGGER, "routing_key": "env:IRCTL_TEST_PD_OTHER"}, ctx())
    [alert] = pagerduty.alerts
    assert alert.routing_key_index == 1
    # acknowledging through the first service's key does not reach the other's alert
    run_action("page.acknowledge", {}, ctx(run_id="r-1"))
    assert alert.status == "triggered"
    assert pagerduty.dropped == [{"event_action": "acknowledge", "dedup_key": "r-1"}]


@pytest.mark.parametrize(
    "bad",
    [
        {**TRIGGER, "severity": "sev1"},
        {**TRIGGER, "summary": ""},
        {**TRIGGER, "summary": "x" * 1025},
        {**TRIGGER, "dedup_key": "k" * 256},
        {**TRIGGER, "priority": "P1"},
        {**TRIGGER, "custom_details": ["not", "an", "object"]},
        {**TRIGGER, "routing_key": KEY},  # the key itself where its reference belongs
    ],
)
def test_inputs_are_checked_without_repeating_them(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        default_registry.get("page.trigger").parse(bad)
    assert KEY not in str(refused.value)
    assert "input_value" not in str(refused.value)


def test_a_key_of_the_wrong_length_is_refused_before_sending(
    pagerduty: PagerDutyStandIn, ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRCTL_TEST_PD_KEY", "short-key-value")
    error = failure("page.trigger", TRIGGER, ctx())
    assert not error.retryable
    assert "integrations.page.routing_key is 15 characters" in error.message
    assert "short-key-value" not in error.message
    assert pagerduty.requests == []


def test_an_unknown_key_is_a_400_and_not_retried(
    pagerduty: PagerDutyStandIn, ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRCTL_TEST_PD_KEY", "Z" * 32)
    error = failure("page.trigger", TRIGGER, ctx())
    assert not error.retryable
    assert error.message == (
        "PagerDuty refused page.trigger (dedup_key r-1): HTTP 400 (Event object is invalid; "
        "Invalid routing key)"
    )
    assert "Z" * 32 not in error.message
    assert [r.status for r in pagerduty.requests] == [400]


def test_settings_that_are_not_references_or_not_set(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    pasted = failure("page.trigger", TRIGGER, ctx(routing_key=KEY))
    assert "must be a secret reference" in pasted.message
    unset = failure("page.trigger", TRIGGER, ctx(routing_key=None))
    assert "integrations.page.routing_key is not set" in unset.message
    assert pagerduty.requests == []


def test_plain_http_is_for_loopback_only(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    # refused before any connection is made: no request leaves for that host
    error = failure("page.trigger", TRIGGER, ctx(base_url="http://events.pagerduty.com"))
    assert "http:// to events.pagerduty.com would send the credential in the clear" in error.message
    error = failure("page.trigger", TRIGGER, ctx(base_url="https://u:p@example.invalid"))
    assert "user name or password" in error.message
    assert "u:p" not in error.message


def test_a_429_is_waited_out_as_retry_after_asks(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    pagerduty.rate_limit(1, retry_after=0.5)
    context_ = ctx()
    started = time.monotonic()
    run_action("page.trigger", TRIGGER, context_)
    assert 0.5 <= time.monotonic() - started < 2.5
    assert [r.status for r in pagerduty.requests] == [429, 202]
    assert len(pagerduty.alerts) == 1
    assert context_.notes == [
        "PagerDuty: page.trigger (dedup_key r-1) answered HTTP 429; waiting 0.5 s as "
        "Retry-After asks, then sending it again"
    ]


def test_a_429_storm_fails_retryable(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    pagerduty.rate_limit(10, retry_after=0.1)
    error = failure("page.trigger", TRIGGER, ctx(rate_limit_retries=2))
    assert error.retryable
    assert "rate-limited page.trigger (dedup_key r-1) (HTTP 429) and asks to wait 0.1 s" in (
        error.message
    )
    assert [r.status for r in pagerduty.requests] == [429, 429, 429]
    assert pagerduty.alerts == []


def test_a_retry_after_longer_than_the_step_is_not_waited(
    pagerduty: PagerDutyStandIn, ctx: Ctx
) -> None:
    pagerduty.rate_limit(1, retry_after=30)
    started = time.monotonic()
    error = failure("page.trigger", TRIGGER, ctx(timeout=3, max_retry_wait=60))
    assert time.monotonic() - started < 1
    assert error.retryable
    assert "30 s" in error.message


def test_server_errors_are_retryable(pagerduty: PagerDutyStandIn, ctx: Ctx) -> None:
    pagerduty.fail_next(503, retry_after=0.2)  # waited out: re-sending an event is harmless
    run_action("page.trigger", TRIGGER, ctx())
    assert [r.status for r in pagerduty.requests] == [503, 202]
    pagerduty.fail_next(502, retry_after=60)  # not waited for: the step's retry decides
    bad_gateway = failure("page.resolve", {}, ctx())
    assert bad_gateway.retryable
    assert bad_gateway.message.endswith(
        "HTTP 502 (injected fault); it asks to wait 60 s (Retry-After)"
    )
    pagerduty.fail_next(500)
    error = failure("page.resolve", {}, ctx())
    assert error.retryable
    assert (
        error.message == "PagerDuty failed page.resolve (dedup_key r-1): HTTP 500 (injected fault)"
    )


def test_pagerduty_unreachable_is_retryable(ctx: Ctx) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    error = failure("page.trigger", TRIGGER, ctx(base_url=f"http://127.0.0.1:{port}"))
    assert error.retryable
    assert error.message.startswith(f"PagerDuty is unreachable at http://127.0.0.1:{port}")


def test_simulate_needs_no_key_and_sends_nothing(
    pagerduty: PagerDutyStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRCTL_TEST_PD_KEY")
    drill = context(run_id="r-9", config={}, mode="tabletop")
    out = run_action("page.trigger", TRIGGER, drill, simulate=True)
    assert out["would"] == (
        "page PagerDuty (critical) from irctl: Hot wallet outflow (dedup_key r-9)"
    )
    assert (out["simulated"], out["status"], out["dedup_key"]) == (True, None, "r-9")
    resolved = run_action("page.resolve", {"dedup_key": "INC-1"}, drill, simulate=True)
    assert resolved["would"] == "resolve the PagerDuty alert with dedup_key INC-1"
    assert pagerduty.requests == []


RUNBOOK = """\
- id: page
  action: page.trigger
  with:
    summary: "Hot wallet outflow"
    severity: critical
    source: irctl
    dedup_key: "{{ run.incident or run.id }}"
- id: ack
  action: page.acknowledge
  with: {dedup_key: "{{ steps.page.outputs.dedup_key }}"}
- id: other-service
  action: page.trigger
  on_failure: continue
  with: {summary: "Treasury", severity: warning, source: irctl, routing_key: env:IRCTL_TEST_PD_BAD}
- id: resolve
  action: page.resolve
  with: {dedup_key: "{{ steps.page.outputs.dedup_key }}"}
"""


def test_a_run_pages_and_resolves_and_records_no_key(
    pagerduty: PagerDutyStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "W" * 32  # a key PagerDuty refuses: its step fails, the run goes on
    monkeypatch.setenv("IRCTL_TEST_PD_BAD", wrong)
    settings = {"page": {"routing_key": "env:IRCTL_TEST_PD_KEY", "base_url": pagerduty.url}}
    ran = run_steps(tmp_path, settings, RUNBOOK, incident="INC-42")
    assert ran.state.status == "succeeded"
    assert ran.outputs("page")["dedup_key"] == "INC-42"
    assert "Invalid routing key" in (ran.state.steps["other-service"].error or "")
    assert [a.events for a in pagerduty.alerts] == [["trigger", "acknowledge", "resolve"]]
    for secret in (KEY, wrong):
        assert secret not in ran.journal


def test_a_tabletop_run_sends_nothing(
    pagerduty: PagerDutyStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRCTL_TEST_PD_KEY")
    settings = {"page": {"routing_key": "env:IRCTL_TEST_PD_KEY", "base_url": pagerduty.url}}
    ran = run_steps(tmp_path, settings, RUNBOOK, mode="tabletop")
    assert ran.state.status == "succeeded"
    assert ran.outputs("page")["would"].startswith("page PagerDuty (critical)")
    assert pagerduty.requests == []
