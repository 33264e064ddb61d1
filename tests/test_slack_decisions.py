"""Decisions made on a Slack identity: attested by the installation key, counted only where the
policy allows it, and checked again by `transcript verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from irctl.canonical import canonical_json
from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.events import Event
from irctl.journal.store import Store
from irctl.record.approvals import ApprovalRejected
from irctl.record.transcript import verify_lines
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.testing import recorded_keys

RUNBOOK = """\
irctl: 1
kind: runbook
id: gated
title: Gated
params:
  out: {type: string}
approvals:
  two: {quorum: 2, roles: [treasury, security-lead], min_assurance: MIN}
steps:
  - id: sweep
    action: testing.record
    approval: two
    with: {path: "{{ params.out }}", key: sweep}
"""


def _run(tmp_path: Path, min_assurance: str) -> tuple[Store, Engine, str, Any]:
    installation = generate_private_key(tmp_path / "installation.key")
    keys = {n: generate_private_key(tmp_path / f"{n}.key") for n in ("oncall", "alice", "bob")}
    config = Config.model_validate({"operators": {
        "oncall": {"roles": ["security-oncall"], "key": public_key_text(keys["oncall"])},
        "alice": {"roles": ["security-lead"], "slack": "U0ALICE",
                  "key": public_key_text(keys["alice"])},
        "bob": {"roles": ["treasury"], "slack": "U0BOB", "key": public_key_text(keys["bob"])},
    }})  # fmt: skip
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    text = RUNBOOK.replace("MIN", min_assurance)
    engine = Engine(store, config=config, signing_key=installation)
    run_id = engine.create_run(
        load_runbook_text(text, "gated.yaml"), text, {"out": str(tmp_path / "out.txt")},
        initiator="oncall", starter_key=keys["oncall"],
    )  # fmt: skip
    assert engine.execute(run_id).status == "waiting"
    return store, engine, run_id, installation


def test_slack_decisions_count_where_the_policy_allows_and_verify(tmp_path: Path) -> None:
    store, engine, run_id, installation = _run(tmp_path, "slack")
    for who, user in (("alice", "U0ALICE"), ("bob", "U0BOB")):
        event = Engine(store).decide(
            run_id, "sweep", operator=who, approve=True, reason="ok",
            private_key=installation, slack_user=user, channel="slack",
        )  # fmt: skip
        assert event.data["assurance"] == "slack"
        assert event.data["key"] == public_key_text(installation)
    assert engine.execute(run_id).status == "succeeded"
    assert recorded_keys(str(tmp_path / "out.txt")) == ["sweep"]
    lines = list(store.lines(run_id))
    assert verify_lines(lines, public_keys=None).ok

    # A decision whose Slack identity was swapped afterwards no longer verifies.
    forged = []
    prev = lines[0]
    for number, line in enumerate(lines):
        raw = json.loads(line)
        if raw["type"] == "approval.granted" and raw["data"]["operator"] == "bob":
            raw["data"]["slack_user"] = "U0MALLORY"
        if number:
            raw["prev"] = Event.from_line(prev).hash
        prev = canonical_json(raw)
        forged.append(prev)
    report = verify_lines(forged, public_keys=None)
    assert not report.ok
    assert any("not bob's Slack identity" in p for p in report.problems)


def test_a_policy_needing_keys_refuses_slack(tmp_path: Path) -> None:
    store, _, run_id, installation = _run(tmp_path, "key")
    with pytest.raises(ApprovalRejected, match="needs an approval signed with the operator's own"):
        Engine(store).decide(
            run_id, "sweep", operator="alice", approve=True, reason=None,
            private_key=installation, slack_user="U0ALICE",
        )  # fmt: skip


def test_a_slack_user_that_is_not_the_operator_is_refused(tmp_path: Path) -> None:
    store, _, run_id, installation = _run(tmp_path, "slack")
    with pytest.raises(ApprovalRejected, match="is not alice's Slack identity"):
        Engine(store).decide(
            run_id, "sweep", operator="alice", approve=True, reason=None,
            private_key=installation, slack_user="U0BOB",
        )  # fmt: skip
