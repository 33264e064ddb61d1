"""The slack.* actions, through the registry, against the stand-in with the real slack-sdk."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from irctl.actions import ActionContext, Probe, default_registry
from irctl.errors import ActionError
from irctl.testing import SlackStandIn

TOKEN = "xoxb-actions-secret"
OPERATORS = {
    "alice": {"roles": ["ciso", "approver"], "slack": "U0ALICE"},
    "bob": {"roles": ["oncall"], "slack": "U0BOB"},
    "carol": {"roles": ["oncall", "approver"], "slack": "U0CAROL"},
    "dave": {"roles": ["cfo"], "slack": None},
}

Ctx = Callable[..., ActionContext]


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStandIn]:
    monkeypatch.setenv("IRCTL_TEST_SLACK_TOKEN", TOKEN)
    with SlackStandIn(token=TOKEN) as stand_in:
        for user_id, name in [("U0ALICE", "alice"), ("U0BOB", "bob"), ("U0CAROL", "carol")]:
            stand_in.add_user(user_id, name=name)
        stand_in.add_channel("incidents")
        yield stand_in


@pytest.fixture
def ctx(slack: SlackStandIn) -> Ctx:
    def make(timeout: float | None = 10, **settings: Any) -> ActionContext:
        config: dict[str, Any] = {
            "token": "env:IRCTL_TEST_SLACK_TOKEN",
            "base_url": slack.url,
            "channel": "#incidents",
            "timeout": 2,
            "_operators": OPERATORS,
        }
        config.update(settings)
        config = {k: v for k, v in config.items() if v is not None}
        return ActionContext(run_id="r", step_id="s", config=config, timeout=timeout)

    return make


def run(name: str, inputs: dict[str, Any], context: ActionContext) -> dict[str, Any]:
    found = default_registry.get(name)
    return found.call_run(found.parse(inputs), context)


def simulate(name: str, inputs: dict[str, Any], context: ActionContext) -> dict[str, Any]:
    found = default_registry.get(name)
    return found.call_simulate(found.parse(inputs), context)


def probe(name: str, inputs: dict[str, Any], context: ActionContext) -> Probe:
    found = default_registry.get(name)
    return found.call_probe(found.parse(inputs), context)


def failure(name: str, inputs: dict[str, Any], context: ActionContext) -> ActionError:
    with pytest.raises(ActionError) as raised:
        run(name, inputs, context)
    assert TOKEN not in str(raised.value)
    return raised.value


# --- slack.post ---------------------------------------------------------------------------------


def test_post_to_the_default_channel(slack: SlackStandIn, ctx: Ctx) -> None:
    out = run("slack.post", {"text": "withdrawals halted"}, ctx())
    [message] = slack.messages("#incidents")
    assert out == {"channel": slack.channel("incidents").id, "ts": message.ts}
    assert message.text == "withdrawals halted"


def test_post_blocks_in_a_thread(slack: SlackStandIn, ctx: Ctx) -> None:
    war_room = slack.add_channel("inc-7")
    first = run("slack.post", {"channel": war_room, "text": "declared"}, ctx())
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Sweep* approved"}}]
    reply = run(
        "slack.post",
        {"channel": "#inc-7", "text": "sweep approved", "blocks": blocks, "thread_ts": first["ts"]},
        ctx(),
    )
    assert reply["channel"] == war_room
    assert [(m.blocks, m.thread_ts) for m in slack.messages(war_room)] == [
        (None, None),
        (blocks, first["ts"]),
    ]


def test_post_without_any_channel(slack: SlackStandIn, ctx: Ctx) -> None:
    error = failure("slack.post", {"text": "t"}, ctx(channel=None))
    assert not error.retryable
    assert "integrations.slack.channel" in str(error)
    assert slack.requests == []


def test_post_inputs_are_checked() -> None:
    post = default_registry.get("slack.post")
    bad_inputs: list[dict[str, Any]] = [
        {"text": ""},
        {"text": "t", "colour": "red"},
        {"text": "t", "blocks": [{"text": "no type"}]},
        {"text": "t", "thread_ts": "yesterday"},
        {"text": "t", "channel": "#"},
    ]
    for bad in bad_inputs:
        with pytest.raises(ValidationError):
            post.parse(bad)


def test_unknown_channel_is_a_clear_permanent_error(slack: SlackStandIn, ctx: Ctx) -> None:
    error = failure("slack.post", {"channel": "#nope", "text": "t"}, ctx())
    assert not error.retryable
    assert str(error).startswith(
        "Slack refused chat.postMessage: channel_not_found (channel #nope)"
    )


def test_missing_token_setting(slack: SlackStandIn, ctx: Ctx) -> None:
    error = failure("slack.post", {"text": "t"}, ctx(token=None))
    assert not error.retryable
    assert "integrations.slack.token is not set" in str(error)
    assert slack.requests == []


def test_unset_token_variable(
    slack: SlackStandIn, ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRCTL_TEST_SLACK_TOKEN")
    error = failure("slack.post", {"text": "t"}, ctx())
    assert not error.retryable
    assert "IRCTL_TEST_SLACK_TOKEN is not set" in str(error)
    assert slack.requests == []


def test_a_pasted_token_is_refused_without_repeating_it(slack: SlackStandIn, ctx: Ctx) -> None:
    error = failure("slack.post", {"text": "t"}, ctx(token=TOKEN))
    assert not error.retryable
    assert "must be a secret reference" in str(error)


def test_invalid_token(slack: SlackStandIn, ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRCTL_TEST_SLACK_TOKEN", "xoxb-revoked-value")
    error = failure("slack.post", {"text": "t"}, ctx())
    assert not error.retryable
    assert "invalid_auth" in str(error)
    assert "integrations.slack.token" in str(error)
    assert "xoxb-revoked-value" not in str(error)
    assert slack.messages("#incidents") == []


def test_a_429_is_waited_out(slack: SlackStandIn, ctx: Ctx) -> None:
    slack.rate_limit(1, retry_after=1)
    started = time.monotonic()
    run("slack.post", {"text": "t"}, ctx())
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 3
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]
    assert len(slack.messages("#incidents")) == 1


def test_a_429_storm_outlasts_the_bounded_retries(slack: SlackStandIn, ctx: Ctx) -> None:
    slack.rate_limit(50, retry_after=0.2)
    started = time.monotonic()
    error = failure("slack.post", {"text": "t"}, ctx(rate_limit_retries=2))
    assert time.monotonic() - started < 3
    assert error.retryable
    assert "rate-limited chat.postMessage" in str(error)
    assert len(slack.calls("chat.postMessage")) == 3
    assert slack.messages("#incidents") == []


def test_a_retry_after_longer_than_the_step_is_not_waited(slack: SlackStandIn, ctx: Ctx) -> None:
    slack.rate_limit(1, retry_after=60)
    started = time.monotonic()
    error = failure("slack.post", {"text": "t"}, ctx(timeout=5, max_retry_wait=120))
    assert time.monotonic() - started < 1
    assert error.retryable
    assert "60 s" in str(error)


def test_a_retry_after_longer_than_max_retry_wait_is_not_waited(
    slack: SlackStandIn, ctx: Ctx
) -> None:
    slack.rate_limit(1, retry_after=1)
    started = time.monotonic()
    error = failure("slack.post", {"text": "t"}, ctx(max_retry_wait=0.5))
    assert time.monotonic() - started < 0.9
    assert error.retryable
    assert len(slack.calls("chat.postMessage")) == 1


def test_a_cancelled_run_stops_waiting(slack: SlackStandIn, ctx: Ctx) -> None:
    slack.rate_limit(1, retry_after=5)
    context = ctx()
    timer = threading.Timer(0.3, context.cancelled.set)
    timer.start()
    started = time.monotonic()
    failure("slack.post", {"text": "t"}, context)
    assert time.monotonic() - started < 2
    assert slack.messages("#incidents") == []


def test_server_errors_are_retryable(slack: SlackStandIn, ctx: Ctx) -> None:
    slack.fail_next(1, status=503)
    error = failure("slack.post", {"text": "t"}, ctx())
    assert error.retryable
    assert "HTTP 503" in str(error)
    run("slack.post", {"text": "t"}, ctx())  # the retry the engine would make
    assert len(slack.messages("#incidents")) == 1


@pytest.mark.parametrize("how", ["refuse", "drop", "hang"])
def test_slack_down(slack: SlackStandIn, ctx: Ctx, how: Any) -> None:
    slack.down(how)
    started = time.monotonic()
    error = failure("slack.post", {"text": "t"}, ctx(timeout=1.5))
    assert time.monotonic() - started < 4
    assert error.retryable
    assert "Slack is unreachable at " + slack.url in str(error)
    assert ("timed out" in str(error)) is (how == "hang")
    slack.up()
    run("slack.post", {"text": "back"}, ctx())
    assert [m.text for m in slack.messages("#incidents")] == ["back"]


def test_simulations_touch_nothing(slack: SlackStandIn, ctx: Ctx) -> None:
    post = simulate("slack.post", {"text": "halted"}, ctx())
    create = simulate("slack.create_channel", {"name": "INC 9"}, ctx())
    invite = simulate("slack.invite", {"channel": "#inc-9", "roles": ["oncall"]}, ctx())
    topic = simulate("slack.update_topic", {"topic": "SEV1"}, ctx())
    assert slack.requests == []
    assert post["would"] == "post to #incidents: halted"
    assert create["name"] == "inc-9"
    assert "#inc-9" in create["would"]
    assert invite["invited"] == ["U0BOB", "U0CAROL"]
    assert topic["would"] == "set the topic of #incidents to 'SEV1'"
    assert all(out["simulated"] is True for out in (post, create, invite, topic))


# --- slack.create_channel -----------------------------------------------------------------------


def test_create_normalises_the_name_and_says_so(slack: SlackStandIn, ctx: Ctx) -> None:
    context = ctx()
    out = run("slack.create_channel", {"name": "INC 2024-07 Hot Wallet Café!"}, context)
    channel = slack.channel("inc-2024-07-hot-wallet-cafe")
    assert out == {"channel_id": channel.id, "name": channel.name, "created": True}
    assert not channel.is_private
    assert context.notes == [
        "slack.create_channel: 'INC 2024-07 Hot Wallet Café!' becomes "
        "#inc-2024-07-hot-wallet-cafe (Slack's name rules)"
    ]


def test_create_caps_the_name_at_80(slack: SlackStandIn, ctx: Ctx) -> None:
    out = run("slack.create_channel", {"name": "inc-" + "a" * 100}, ctx())
    assert len(out["name"]) == 80
    assert slack.channel(out["channel_id"]).name == out["name"]


def test_create_private(slack: SlackStandIn, ctx: Ctx) -> None:
    out = run("slack.create_channel", {"name": "inc-8", "private": True}, ctx())
    assert slack.channel(out["channel_id"]).is_private


def test_create_reuses_an_existing_channel(slack: SlackStandIn, ctx: Ctx) -> None:
    existing = slack.add_channel("inc-42", members=["U0ALICE"])
    out = run("slack.create_channel", {"name": "inc-42"}, ctx())
    assert out == {"channel_id": existing, "name": "inc-42", "created": False}
    assert len([c for c in slack.channels if c.name == "inc-42"]) == 1
    assert "UIRCTLBOT" in slack.channel(existing).members  # joined, to post and invite
    again = run("slack.create_channel", {"name": "inc-42"}, ctx())
    assert again == out


def test_create_will_not_reuse_an_archived_or_hidden_channel(slack: SlackStandIn, ctx: Ctx) -> None:
    slack.add_channel("inc-old", archived=True)
    slack.add_channel("inc-secret", private=True)
    archived = failure("slack.create_channel", {"name": "inc-old"}, ctx())
    assert not archived.retryable
    assert "archived" in str(archived)
    hidden = failure("slack.create_channel", {"name": "inc-secret"}, ctx())
    assert not hidden.retryable
    assert "cannot see it" in str(hidden)


def test_create_rejects_a_name_with_nothing_left() -> None:
    with pytest.raises(ValidationError, match="no letter or digit"):
        default_registry.get("slack.create_channel").parse({"name": "!!! ???"})


def test_create_probe(slack: SlackStandIn, ctx: Ctx) -> None:
    assert probe("slack.create_channel", {"name": "Inc 5"}, ctx()).state == "not_done"
    out = run("slack.create_channel", {"name": "Inc 5"}, ctx())
    found = probe("slack.create_channel", {"name": "Inc 5"}, ctx())
    assert found == Probe.done(out)
    assert default_registry.get("slack.create_channel").idempotent


# --- slack.invite -------------------------------------------------------------------------------


def test_invite_by_role_and_operator(slack: SlackStandIn, ctx: Ctx) -> None:
    room = run("slack.create_channel", {"name": "inc-1"}, ctx())["channel_id"]
    out = run(
        "slack.invite",
        {"channel": room, "roles": ["oncall"], "operators": ["alice", "carol"]},
        ctx(),
    )
    assert out == {"channel": room, "invited": ["U0ALICE", "U0CAROL", "U0BOB"], "already": []}
    assert sorted(slack.channel(room).members) == ["U0ALICE", "U0BOB", "U0CAROL", "UIRCTLBOT"]
    again = run("slack.invite", {"channel": room, "roles": ["approver"]}, ctx())
    assert again == {"channel": room, "invited": [], "already": ["U0ALICE", "U0CAROL"]}


def test_invite_by_name_joins_first_when_the_bot_is_not_in(slack: SlackStandIn, ctx: Ctx) -> None:
    out = run("slack.invite", {"users": ["U0BOB"]}, ctx())
    channel = slack.channel("incidents")
    assert out == {"channel": channel.id, "invited": ["U0BOB"], "already": []}
    assert channel.members == ["UIRCTLBOT", "U0BOB"]


def test_invite_unknown_operator_or_without_slack_id(slack: SlackStandIn, ctx: Ctx) -> None:
    unknown = failure("slack.invite", {"operators": ["alice", "mallory"]}, ctx())
    assert not unknown.retryable
    assert "'mallory'" in str(unknown)
    no_id = failure("slack.invite", {"roles": ["cfo"]}, ctx())
    assert not no_id.retryable
    assert "'dave'" in str(no_id)
    assert "operators.<name>.slack" in str(no_id)
    no_role = failure("slack.invite", {"roles": ["janitor"]}, ctx())
    assert "'janitor'" in str(no_role)
    assert slack.requests == []  # nothing is asked of Slack before everyone is known


def test_invite_without_operators_from_the_engine(slack: SlackStandIn, ctx: Ctx) -> None:
    error = failure("slack.invite", {"roles": ["oncall"]}, ctx(_operators=None))
    assert "_operators" in str(error)
    out = run("slack.invite", {"users": ["U0ALICE"]}, ctx(_operators=None))
    assert out["invited"] == ["U0ALICE"]


def test_invite_a_user_slack_does_not_know(slack: SlackStandIn, ctx: Ctx) -> None:
    operators = {**OPERATORS, "erin": {"roles": ["oncall"], "slack": "U0GONE"}}
    error = failure("slack.invite", {"roles": ["oncall"]}, ctx(_operators=operators))
    assert not error.retryable
    assert "U0GONE (operator erin (role oncall))" in str(error)
    assert "invited ['U0BOB', 'U0CAROL']" in str(error)


def test_invite_needs_someone() -> None:
    with pytest.raises(ValidationError, match="name someone"):
        default_registry.get("slack.invite").parse({"channel": "#x"})
    with pytest.raises(ValidationError, match="member ids"):
        default_registry.get("slack.invite").parse({"users": ["alice"]})


# --- slack.update_topic -------------------------------------------------------------------------


def test_update_topic(slack: SlackStandIn, ctx: Ctx) -> None:
    inputs = {"channel": "#incidents", "topic": "SEV1 · hot wallet · IC alice"}
    assert probe("slack.update_topic", inputs, ctx()).state == "not_done"
    out = run("slack.update_topic", inputs, ctx())
    channel = slack.channel("incidents")
    assert out == {"channel": channel.id, "topic": inputs["topic"]}
    assert channel.topic == inputs["topic"]
    assert "UIRCTLBOT" in channel.members
    assert probe("slack.update_topic", inputs, ctx()) == Probe.done(out)


def test_update_topic_of_an_unknown_channel(slack: SlackStandIn, ctx: Ctx) -> None:
    error = failure("slack.update_topic", {"channel": "#nope", "topic": "x"}, ctx())
    assert not error.retryable
    assert "#nope" in str(error)


# --- packaging ----------------------------------------------------------------------------------


def test_importing_the_integration_does_not_import_slack_sdk() -> None:
    code = "import sys, irctl_slack; print('slack_sdk' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
    assert set(default_registry.known("slack")) >= {
        "slack.post",
        "slack.create_channel",
        "slack.invite",
        "slack.update_topic",
    }
    assert not default_registry.get("slack.post").idempotent
