"""``exclude_operators``: a suspect can neither start, approve, deny, answer nor abort the run
that answers their abuse, even with break-glass, even writing rows around irctl.

Mallory is a security lead with a key and a role that may break glass: everything she could
do in any other run.  The runbook names her (through a param) as the suspect.  The attacks
are made as an insider would: holding the installation key and her own operator key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.errors import UsageError
from irctl.identity import generate_private_key, public_key_text
from irctl.journal import events as ev
from irctl.journal.store import Store
from irctl.record.approvals import ApprovalRejected, sign_act
from irctl.record.transcript import verify_run
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.testing import recorded_keys
from tests.helpers import irctl, keyed_operators, make_workspace

RUNBOOK = """\
irctl: 1
kind: runbook
id: insider
title: Insider withdrawal abuse
params:
  suspect: {type: string}
  out: {type: string}
exclude_operators: ["{{ params.suspect }}"]
approvals:
  lead:
    quorum: 1
    roles: [security-lead]
    break_glass: true
steps:
  - id: evidence
    action: testing.record
    with: {path: "{{ params.out }}", key: evidence}
  - id: freeze
    action: testing.record
    approval: lead
    with: {path: "{{ params.out }}", key: freeze}
  - id: confirm
    action: manual.confirm
    with: {prompt: "Confirm the suspect's sessions are gone"}
"""


@pytest.fixture
def store(store_url: str) -> Any:
    opened = Store.open(store_url)
    yield opened
    opened.close()


class Team:
    def __init__(self, tmp_path: Path) -> None:
        self.installation = generate_private_key(tmp_path / "installation.key")
        self.keys = {
            name: generate_private_key(tmp_path / f"{name}.key")
            for name in ("oncall", "alice", "mallory")
        }
        roles = {"oncall": ["security-oncall"], "alice": ["security-lead"],
                 "mallory": ["security-lead"]}  # fmt: skip
        self.out = tmp_path / "effects.txt"
        self.config = Config.model_validate({
            "installation_key": public_key_text(self.installation),
            "operators": {
                name: {"roles": roles[name], "key": public_key_text(key)}
                for name, key in self.keys.items()
            },
            "break_glass": {"roles": ["security-lead"]},
        })  # fmt: skip
        self.model = load_runbook_text(RUNBOOK, "insider.yaml")

    def engine(self, store: Store) -> Engine:
        return Engine(store, config=self.config, signing_key=self.installation, cancel_grace=0.1)

    def start(self, store: Store, initiator: str = "oncall", suspect: str = "mallory") -> str:
        return self.engine(store).create_run(
            self.model, RUNBOOK, {"suspect": suspect, "out": str(self.out)},
            initiator=initiator, starter_key=self.keys[initiator],
        )  # fmt: skip

    def decide(self, store: Store, run_id: str, who: str, **kw: Any) -> None:
        kw.setdefault("reason", None)
        self.engine(store).decide(run_id, "freeze", operator=who, approve=True,
                                  private_key=self.keys[who], **kw)  # fmt: skip

    def effects(self) -> list[str]:
        return recorded_keys(str(self.out))


def test_the_suspect_cannot_start_approve_break_glass_or_abort(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    with pytest.raises(UsageError, match="mallory may not start this run"):
        team.start(store, initiator="mallory")
    assert store.runs() == []  # nothing recorded
    run_id = team.start(store)
    state = team.engine(store).execute(run_id)
    assert state.steps["freeze"].waiting_for == "approval"
    with pytest.raises(ApprovalRejected, match="runbook excludes them"):
        team.decide(store, run_id, "mallory")
    with pytest.raises(ApprovalRejected, match="even with break-glass"):
        team.decide(store, run_id, "mallory", break_glass=True, reason="it cannot wait")
    with pytest.raises(UsageError, match="mallory may not abort"):
        team.engine(store).abort(run_id, reason="false alarm", operator="mallory",
                                 private_key=team.keys["mallory"])  # fmt: skip
    assert "freeze" not in team.effects()
    # Anyone else may act as in any run.
    team.decide(store, run_id, "alice")
    state = team.engine(store).execute(run_id)
    assert state.steps["confirm"].waiting_for == "answer"
    with pytest.raises(UsageError, match="mallory may not answer"):
        team.engine(store).answer(run_id, "confirm", "done", operator="mallory",
                                  private_key=team.keys["mallory"])  # fmt: skip
    assert team.effects() == ["evidence", "freeze"]


def test_a_forged_approval_by_the_suspect_never_counts(store: Store, tmp_path: Path) -> None:
    """Her signed approval and break-glass, written around the CLI with the installation key,
    are ignored by the gate: only alice's approval opens it."""
    from irctl.journal.events import utcnow
    from irctl.journal.state import fold
    from irctl.record.approvals import open_request, sign_decision

    team = Team(tmp_path)
    run_id = team.start(store)
    team.engine(store).execute(run_id)
    request = open_request(fold(store.events(run_id)), "freeze")
    for glass in (False, True):
        fields = {
            "run": run_id, "step": "freeze", "item": None, "digest": request["digest"],
            "decision": "approve", "operator": "mallory", "time": utcnow(),
            "reason": "urgent" if glass else None, "break_glass": glass,
        }  # fmt: skip
        data = {**sign_decision(team.keys["mallory"], fields), "assurance": "key",
                "channel": "cli"}  # fmt: skip
        team.engine(store).record(run_id, ev.APPROVAL_GRANTED, data)
    state = team.engine(store).execute(run_id)
    assert state.steps["freeze"].status == "waiting"
    assert "freeze" not in team.effects()
    team.decide(store, run_id, "alice")
    state = team.engine(store).execute(run_id)
    assert "freeze" in team.effects()


def test_a_signed_abort_by_the_suspect_written_around_irctl_stops_the_run(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    run_id = team.start(store)
    team.engine(store).execute(run_id)
    data = sign_act(team.keys["mallory"], run_id, ev.RUN_ABORTED,
                    {"reason": "false alarm", "by": "mallory"})  # fmt: skip
    bad = team.engine(store).record(run_id, ev.RUN_ABORTED, data)
    state = team.engine(store).execute(run_id)
    assert state.status in ("tampered", "aborted")
    events = store.events(run_id)
    (stopped,) = [e for e in events if e.type == "run.tampered"]
    assert "whom the runbook excludes" in str(stopped.data["problem"])
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert not report.ok
    assert any("whom the runbook excludes" in p for p in report.problems), report.problems
    assert bad.seq > 0


def test_validate_names_what_exclude_operators_may_read(tmp_path: Path) -> None:
    bad = RUNBOOK.replace('["{{ params.suspect }}"]', '["{{ vars.suspect }}", "{{ params.who }}"]')
    ws = make_workspace(tmp_path / "ws", {"insider": bad})
    found = irctl("validate", "runbooks/insider.yaml", cwd=ws)
    assert found.returncode != 0
    text = found.stdout + found.stderr
    assert "exclude_operators reads only params, not vars" in text, text
    assert "unknown param 'who'" in text, text


def test_irctl_run_refuses_the_suspect_as_initiator(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    extra = keyed_operators(keys, {"oncall": "security-oncall", "alice": "security-lead",
                                   "mallory": "security-lead"})  # fmt: skip
    ws = make_workspace(tmp_path / "ws", {"insider": RUNBOOK}, extra=extra)
    done = irctl(
        "run", "insider", "-p", "suspect=mallory", "-p", f"out={tmp_path / 'out.txt'}",
        "--as", "mallory", "--yes", "--unattended", cwd=ws, env={"IRCTL_KEY_DIR": str(keys)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "mallory may not start this run" in done.stderr
    assert "Traceback" not in done.stderr
    listed = irctl("runs", "list", "--json", cwd=ws)
    assert listed.stdout.strip() in ("[]", ""), listed.stdout
