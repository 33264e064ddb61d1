"""The Slack Web API stand-in, driven by the real slack-sdk."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from urllib.error import URLError

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from irctl.testing import SlackStandIn

TOKEN = "xoxb-standin-secret"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(token=TOKEN) as stand_in:
        yield stand_in


def web(slack: SlackStandIn, token: str | None = TOKEN, **kwargs: object) -> WebClient:
    # no retry handlers: the stand-in's raw answers reach the test
    return WebClient(token=token, base_url=slack.url, retry_handlers=[], **kwargs)  # type: ignore[arg-type]


def refused(call: object) -> str:
    assert isinstance(call, SlackApiError)
    return str(call.response["error"])


def test_url_is_a_base_url_on_localhost(slack: SlackStandIn) -> None:
    assert slack.url == f"http://127.0.0.1:{slack.port}/api/"
    assert web(slack).auth_test()["user_id"] == "UIRCTLBOT"


def test_missing_and_wrong_tokens_are_refused_and_never_recorded(slack: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as none:
        web(slack, token=None).auth_test()
    assert refused(none.value) == "not_authed"
    with pytest.raises(SlackApiError) as wrong:
        web(slack, token="xoxb-wrong").chat_postMessage(channel="#x", text="t")
    assert refused(wrong.value) == "invalid_auth"
    form = urllib.parse.urlencode({"token": TOKEN, "name": "inc-1"}).encode()
    with urllib.request.urlopen(slack.url + "conversations.create", data=form) as answer:
        assert json.load(answer)["ok"] is True  # a token in a form body, as old clients send it
    calls = slack.requests
    assert [c.authorized for c in calls] == [False, False, True]
    assert calls[2].params == {"name": "inc-1"}
    assert calls[2].body == "form"
    assert [c.error for c in calls] == ["not_authed", "invalid_auth", None]
    assert TOKEN not in repr(calls)
    assert "xoxb-wrong" not in repr(calls)
    assert all("token" not in c.params for c in calls)


def test_post_by_name_and_id_with_blocks_json_body(slack: SlackStandIn) -> None:
    channel = slack.add_channel("incidents")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*halted*"}}]
    first = web(slack).chat_postMessage(channel="#incidents", text="halted", blocks=blocks)
    second = web(slack).chat_postMessage(channel=channel, text="reply", thread_ts=first["ts"])
    assert first["channel"] == second["channel"] == channel
    assert first["ts"] != second["ts"]
    messages = slack.messages("#incidents")
    assert [(m.text, m.blocks, m.thread_ts) for m in messages] == [
        ("halted", blocks, None),
        ("reply", None, first["ts"]),
    ]
    call = slack.calls("chat.postMessage")[0]
    assert call.body == "json"
    assert call.params["blocks"] == blocks
    assert "*halted*" in slack.render()


def test_post_errors(slack: SlackStandIn) -> None:
    slack.add_channel("incidents")
    slack.add_channel("old", archived=True)
    slack.add_channel("secret", private=True)
    client = web(slack)
    cases = {
        "channel_not_found": {"channel": "#nope", "text": "t"},
        "is_archived": {"channel": "#old", "text": "t"},
        "no_text": {"channel": "#incidents", "text": ""},
        "thread_not_found": {"channel": "#incidents", "text": "t", "thread_ts": "1.000001"},
    }
    for error, params in cases.items():
        with pytest.raises(SlackApiError) as raised:
            client.api_call("chat.postMessage", json=params)
        assert refused(raised.value) == error
    with pytest.raises(SlackApiError) as hidden:  # a private channel the bot is not in
        client.chat_postMessage(channel="#secret", text="t")
    assert refused(hidden.value) == "channel_not_found"
    assert slack.messages("#incidents") == []


def test_update_keeps_history(slack: SlackStandIn) -> None:
    channel = slack.add_channel("incidents")
    sent = web(slack).chat_postMessage(channel=channel, text="step 1 running")
    web(slack).chat_update(channel=channel, ts=sent["ts"], text="step 1 done")
    [message] = slack.messages(channel)
    assert message.text == "step 1 done"
    assert message.edits == [{"text": "step 1 running", "blocks": None}]
    with pytest.raises(SlackApiError) as missing:
        web(slack).chat_update(channel=channel, ts="1.000009", text="x")
    assert refused(missing.value) == "message_not_found"


def test_create_is_form_encoded_and_follows_name_rules(slack: SlackStandIn) -> None:
    made = web(slack).conversations_create(name="inc-42", is_private=True)
    channel = slack.channel("inc-42")
    assert made["channel"]["id"] == channel.id
    assert channel.is_private
    assert channel.members == ["UIRCTLBOT"]
    assert slack.calls("conversations.create")[0].body == "form"
    bad = {
        "Inc-42": "invalid_name_specials",
        "inc 42": "invalid_name_specials",
        "x" * 81: "invalid_name_maxlength",
        "---": "invalid_name_punctuation",
        "inc-42": "name_taken",
    }
    for name, error in bad.items():
        with pytest.raises(SlackApiError) as raised:
            web(slack).conversations_create(name=name)
        assert refused(raised.value) == error, name
    assert len(slack.channels) == 1
    web(slack).conversations_create(name="x" * 80)


def test_list_pages_and_hides_private_channels(slack: SlackStandIn) -> None:
    for number in range(5):
        slack.add_channel(f"c{number}")
    slack.add_channel("hidden", private=True)
    slack.add_channel("mine", private=True, bot_member=True)
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = web(slack).conversations_list(
            types="public_channel,private_channel", limit=2, cursor=cursor
        )
        pages += 1
        names += [c["name"] for c in page["channels"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert names == ["c0", "c1", "c2", "c3", "c4", "mine"]
    public = web(slack).conversations_list()["channels"]
    assert [c["name"] for c in public] == ["c0", "c1", "c2", "c3", "c4"]


def test_join_invite_topic_info(slack: SlackStandIn) -> None:
    slack.add_user("U0ALICE", name="alice")
    slack.add_user("U0BOB", name="bob")
    channel = slack.add_channel("incidents")
    client = web(slack)
    with pytest.raises(SlackApiError) as outside:
        client.conversations_invite(channel=channel, users="U0ALICE")
    assert refused(outside.value) == "not_in_channel"
    with pytest.raises(SlackApiError) as by_name:  # conversations.* take ids, as Slack's do
        client.conversations_join(channel="#incidents")
    assert refused(by_name.value) == "channel_not_found"
    client.conversations_join(channel=channel)
    client.conversations_invite(channel=channel, users=["U0ALICE", "U0BOB"])
    assert slack.channel(channel).members == ["UIRCTLBOT", "U0ALICE", "U0BOB"]
    for users, error in [("U0ALICE", "already_in_channel"), ("U0NOBODY", "user_not_found")]:
        with pytest.raises(SlackApiError) as raised:
            client.conversations_invite(channel=channel, users=users)
        assert refused(raised.value) == error
    client.conversations_setTopic(channel=channel, topic="SEV1 · IC alice")
    info = client.conversations_info(channel=channel)["channel"]
    assert info["topic"]["value"] == "SEV1 · IC alice"
    assert info["is_member"] is True
    with pytest.raises(SlackApiError) as long_topic:
        client.conversations_setTopic(channel=channel, topic="x" * 251)
    assert refused(long_topic.value) == "too_long"


def test_users(slack: SlackStandIn) -> None:
    slack.add_user("U0ALICE", name="alice", real_name="Alice A.")
    assert web(slack).users_info(user="U0ALICE")["user"]["real_name"] == "Alice A."
    with pytest.raises(SlackApiError) as raised:
        web(slack).users_info(user="U0NOBODY")
    assert refused(raised.value) == "user_not_found"
    names = [u["name"] for u in web(slack).users_list()["members"]]
    assert names == ["irctl", "alice"]


def test_connections_open_needs_the_app_token(slack: SlackStandIn) -> None:
    opened = WebClient(base_url=slack.url).apps_connections_open(app_token="xapp-test")
    assert opened["url"].startswith(f"ws://127.0.0.1:{slack.port}/")
    with pytest.raises(SlackApiError) as bot:
        WebClient(base_url=slack.url).apps_connections_open(app_token=TOKEN)
    assert refused(bot.value) == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as app_elsewhere:
        web(slack, token="xapp-test").auth_test()
    assert refused(app_elsewhere.value) == "not_allowed_token_type"


def test_unknown_method(slack: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as raised:
        web(slack).api_call("admin.nothing")
    assert refused(raised.value) == "unknown_method"


def test_rate_limit_answers_429_with_retry_after(slack: SlackStandIn) -> None:
    slack.rate_limit(2, retry_after=7)
    for _ in range(2):
        with pytest.raises(SlackApiError) as raised:
            web(slack).auth_test()
        assert raised.value.response.status_code == 429
        assert raised.value.response.headers["Retry-After"] == "7"
    assert web(slack).auth_test()["ok"] is True
    assert [c.status for c in slack.requests] == [429, 429, 200]


def test_faults_for_one_method_leave_others_alone(slack: SlackStandIn) -> None:
    slack.add_channel("incidents")
    slack.fail_next(1, status=503, method="chat.postMessage")
    assert web(slack).auth_test()["ok"] is True
    with pytest.raises(SlackApiError) as raised:
        web(slack).chat_postMessage(channel="#incidents", text="t")
    assert raised.value.response.status_code == 503
    assert slack.messages("#incidents") == []
    web(slack).chat_postMessage(channel="#incidents", text="t")
    assert len(slack.messages("#incidents")) == 1


def test_down_refuses_then_up_listens_on_the_same_port(slack: SlackStandIn) -> None:
    port = slack.port
    slack.down()
    with pytest.raises(URLError) as raised:
        web(slack).auth_test()
    assert isinstance(raised.value.reason, ConnectionRefusedError)
    slack.up()
    assert slack.port == port
    assert web(slack).auth_test()["ok"] is True


def test_down_drop_and_hang(slack: SlackStandIn) -> None:
    slack.down("drop")
    with pytest.raises((ConnectionError, URLError)):
        web(slack).auth_test()
    assert slack.requests[-1].status == 0
    slack.down("hang")
    started = time.monotonic()
    with pytest.raises((TimeoutError, URLError)):
        web(slack, timeout=1).auth_test()
    assert time.monotonic() - started < 3
    slack.up()
    assert web(slack).auth_test()["ok"] is True


def test_reset_forgets_everything_but_the_bot(slack: SlackStandIn) -> None:
    slack.add_channel("incidents")
    slack.rate_limit(5)
    slack.reset()
    assert slack.channels == []
    assert slack.requests == []
    assert web(slack).auth_test()["ok"] is True
