"""Run updates in Slack through the real slack-sdk and the local Slack stand-in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, load_private_key, public_key_text
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.testing import SlackStandIn, recorded_keys

TOKEN = "xoxb-notifier-test-token"

RUNBOOK = """\
irctl: 1
kind: runbook
id: contain
title: Contain the hot wallet
params:
  out: {type: string}
approvals:
  two:
    quorum: 2
    roles: [treasury, security-lead]
    min_assurance: MIN
steps:
  - id: war-room
    action: slack.create_channel
    with: {name: "inc {{ run.incident }}"}
  - id: invite
    action: slack.invite
    with: {channel: "{{ steps['war-room'].outputs.channel_id }}", roles: [treasury, security-lead]}
  - id: topic
    action: slack.update_topic
    with:
      channel: "{{ steps['war-room'].outputs.channel_id }}"
      topic: "INC {{ run.incident }}: containment"
  - id: halt
    action: testing.record
    with: {path: "{{ params.out }}", key: halt}
  - id: sweep
    action: testing.record
    approval: two
    with: {path: "{{ params.out }}", key: sweep}
"""


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    with SlackStandIn(token=TOKEN) as standin:
        standin.add_user("U0ALICE", name="alice")
        standin.add_user("U0BOB", name="bob")
        standin.add_channel("incidents", bot_member=True)
        yield standin


def _config(slack: Any, tmp_path: Path) -> tuple[Config, dict[str, Any]]:
    keys = {
        n: generate_private_key(tmp_path / "keys" / f"{n}.key") for n in ("oncall", "alice", "bob")
    }
    config = Config.model_validate({
        "operators": {
            "oncall": {"roles": ["security-oncall"], "key": public_key_text(keys["oncall"])},
            "alice": {"roles": ["security-lead"], "slack": "U0ALICE",
                      "key": public_key_text(keys["alice"])},
            "bob": {"roles": ["treasury"], "slack": "U0BOB", "key": public_key_text(keys["bob"])},
        },
        "integrations": {"slack": {
            "token": "env:SLACK_BOT_TOKEN", "base_url": slack.url, "channel": "#incidents",
        }},
    })  # fmt: skip
    return config, keys


def _start(store: Store, config: Config, tmp_path: Path, *, min_assurance: str = "key",
           mode: str = "live", **engine: Any) -> tuple[Engine, str]:  # fmt: skip
    text = RUNBOOK.replace("MIN", min_assurance)
    model = load_runbook_text(text, "contain.yaml")
    installation = generate_private_key(tmp_path / "installation.key")
    made = Engine(store, config=config, signing_key=installation, **engine)
    run_id = made.create_run(
        model, text, {"out": str(tmp_path / "out.txt")}, initiator="oncall", mode=mode,
        incident="INC-42", starter_key=load_private_key(tmp_path / "keys" / "oncall.key"),
    )  # fmt: skip
    return made, run_id


def test_a_full_run_keeps_one_message_up_to_date(slack: Any, tmp_path: Path) -> None:
    config, keys = _config(slack, tmp_path)
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine, run_id = _start(store, config, tmp_path)
    state = engine.execute(run_id)
    assert state.status == "waiting"

    room = slack.channel("#inc-inc-42")
    assert set(room.members) >= {"U0ALICE", "U0BOB"}
    assert room.topic == "INC INC-42: containment"

    header = next(m for m in slack.messages("#incidents") if m.thread_ts is None)
    assert run_id in header.text
    assert "waiting" in header.text  # updated as the run went on
    approval = [m for m in slack.messages("#incidents") if "Approval needed" in m.text]
    assert approval, slack.render()
    body = json.dumps(approval[0].blocks)
    assert "irctl approve" in body  # min_assurance key: no buttons, the CLI is named
    assert state.steps["sweep"].approval["digest"] in body

    for who in ("bob", "alice"):
        Engine(store).decide(
            run_id, "sweep", operator=who, approve=True, reason=None, private_key=keys[who]
        )
    state = engine.execute(run_id)  # a resumed run updates the same header message
    assert state.status == "succeeded"
    assert recorded_keys(str(tmp_path / "out.txt")) == ["halt", "sweep"]
    headers = [m for m in slack.messages("#incidents") if run_id in m.text and m.thread_ts is None]
    assert len(headers) == 1
    assert "succeeded" in headers[0].text
    posted = [e.data for e in store.events(run_id) if e.type == "notify.slack.posted"]
    assert [p["what"] for p in posted].count("header") == 1
    assert TOKEN not in "".join(store.lines(run_id))


def test_slack_approvals_get_buttons_when_the_policy_allows(slack: Any, tmp_path: Path) -> None:
    config, _ = _config(slack, tmp_path)
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine, run_id = _start(store, config, tmp_path, min_assurance="slack")
    engine.execute(run_id)
    approval = next(m for m in slack.messages("#incidents") if "Approval needed" in m.text)
    buttons = [e for b in approval.blocks if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == ["approve", "deny"]
    value = json.loads(buttons[0]["value"])
    assert value["run"] == run_id
    assert value["step"] == "sweep"


def test_drills_are_unmistakable(slack: Any, tmp_path: Path) -> None:
    config, _ = _config(slack, tmp_path)
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine, run_id = _start(store, config, tmp_path, mode="tabletop")
    engine.execute(run_id)
    header = slack.messages("#incidents")[0]
    assert header.text.startswith("[DRILL]")
    assert "DRILL" in json.dumps(header.blocks)



def test_every_thread_reply_of_a_drill_says_drill(slack: Any, tmp_path: Path) -> None:
    config, _ = _config(slack, tmp_path)
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    text = (
        "irctl: 1\nkind: runbook\nid: say\ntitle: Say\nsteps:\n"
        "  - {id: say, action: notify.console, with: {level: critical, message: NOBODY SIGNS}}\n"
    )
    engine = Engine(store, config=config)
    run_id = engine.create_run(load_runbook_text(text, "say.yaml"), text, {},
                               initiator="oncall", mode="tabletop")  # fmt: skip
    assert engine.execute(run_id).status == "succeeded"
    header = slack.messages("#incidents")[0]
    replies = [m.text for m in slack.messages("#incidents") if m.thread_ts == header.ts]
    assert any("NOBODY SIGNS" in reply for reply in replies), replies
    assert all(reply.startswith("🧪 DRILL — ") for reply in replies), replies


def test_slack_down_never_slows_or_fails_a_run(slack: Any, tmp_path: Path) -> None:
    config, _ = _config(slack, tmp_path)
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    text = (
        "irctl: 1\nkind: runbook\nid: quick\ntitle: Quick\nparams:\n  out: {type: string}\n"
        "steps:\n"
        + "".join(
            f'  - {{id: s{i}, action: testing.record, with: {{path: "{{{{ params.out }}}}", '
            f"key: s{i}}}}}\n"
            for i in range(20)
        )
    )
    model = load_runbook_text(text, "quick.yaml")
    engine = Engine(store, config=config, notify_grace=0.5)
    run_id = engine.create_run(
        model, text, {"out": str(tmp_path / "o.txt")}, initiator="oncall",
        starter_key=load_private_key(tmp_path / "keys" / "oncall.key"),
    )  # fmt: skip
    slack.down("hang")  # accepts nothing: every call waits for its timeout
    began = time.monotonic()
    state = engine.execute(run_id)
    elapsed = time.monotonic() - began
    slack.up()
    assert state.status == "succeeded"
    assert len(recorded_keys(str(tmp_path / "o.txt"))) == 20
    assert elapsed < 3.0  # the run did not wait for Slack (its timeouts are 5 s each)


def test_a_bad_token_is_recorded_never_a_failed_run(slack: Any, tmp_path: Path) -> None:
    config, _ = _config(slack, tmp_path)
    bad = config.model_copy(
        update={"integrations": {"slack": {**config.integrations["slack"], "token": "env:NOPE_X"}}}
    )
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    text = (
        "irctl: 1\nkind: runbook\nid: one\ntitle: One\n"
        "steps:\n  - {id: a, action: wait.sleep, with: {seconds: 0}}\n"
    )
    engine = Engine(store, config=bad, notify_grace=10)
    run_id = engine.create_run(
        load_runbook_text(text, "one.yaml"), text, {}, initiator="oncall",
        starter_key=load_private_key(tmp_path / "keys" / "oncall.key"),
    )  # fmt: skip
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    failed = [e.data for e in store.events(run_id) if e.type == "notify.failed"]
    assert failed
    assert "integrations.slack.token" in failed[0]["error"]
    assert failed[0]["attempts"] == 1  # a bad token is not retried
    assert any(e.type == "notify.paused" for e in store.events(run_id))
