"""The engine verifies before it acts: rows written into the store by anyone but irctl
(every responder holds the database password in team mode) never open a gate.

Each attack is made as an attacker would make it — with SQL against the real store, or
holding the installation key and rebuilding the whole chain — and each must stop the
run before the gated step: ``run.tampered`` names the first bad event and the sweep's
side effect (a line in a file) never happens.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal import events as ev
from irctl.journal.events import GENESIS, Event
from irctl.journal.state import fold
from irctl.journal.store import Store
from irctl.record.approvals import sign_decision
from irctl.record.transcript import verify_run
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.testing import SlackStandIn, recorded_keys
from tests.helpers import (
    irctl,
    keyed_operators,
    make_workspace,
    rebuild_run,
    resign_start,
    run_id_from,
)

RUNBOOK = """\
irctl: 1
kind: runbook
id: sweep
title: Sweep the hot wallet
params:
  out: {type: string}
approvals:
  treasury:
    quorum: 2
    roles: [treasury]
steps:
  - id: halt
    action: testing.record
    with: {path: "{{ params.out }}", key: halt}
  - id: sweep
    action: testing.record
    approval: treasury
    with: {path: "{{ params.out }}", key: sweep}
"""

TREASURY = ("t1", "t2", "t3")


@pytest.fixture
def store(store_url: str) -> Any:
    opened = Store.open(store_url)
    yield opened
    opened.close()


class Team:
    """An installation: its key, three treasury operators with keys, and irctl.yaml."""

    def __init__(self, tmp_path: Path, extra: dict[str, Any] | None = None) -> None:
        self.installation = generate_private_key(tmp_path / "installation.key")
        self.keys = {n: generate_private_key(tmp_path / "keys" / f"{n}.key") for n in TREASURY}
        self.oncall = generate_private_key(tmp_path / "keys" / "oncall.key")
        self.out = tmp_path / "effects.txt"
        self.config = Config.model_validate({
            "installation_key": public_key_text(self.installation),
            "operators": {
                "oncall": {"roles": ["security-oncall"], "key": public_key_text(self.oncall)},
                **{n: {"roles": ["treasury"], "key": public_key_text(k)}
                   for n, k in self.keys.items()},
            },
            **(extra or {}),
        })  # fmt: skip

    def engine(self, store: Store, **kwargs: Any) -> Engine:
        return Engine(store, config=self.config, signing_key=self.installation, **kwargs)

    def start(self, store: Store, **kwargs: Any) -> tuple[Engine, str]:
        engine = self.engine(store, **kwargs)
        model = load_runbook_text(RUNBOOK, "sweep.yaml")
        run_id = engine.create_run(
            model, RUNBOOK, {"out": str(self.out)}, initiator="oncall", starter_key=self.oncall
        )
        state = engine.execute(run_id)
        assert state.status == "waiting", state
        assert state.steps["sweep"].waiting_for == "approval"
        return engine, run_id

    def decide(self, store: Store, run_id: str, who: str, *, approve: bool = True) -> None:
        """A real decision, as `irctl approve` records it (signed, sealed)."""
        self.engine(store).decide(
            run_id, "sweep", operator=who, approve=approve, reason="checked",
            private_key=self.keys[who],
        )  # fmt: skip

    def effects(self) -> list[str]:
        return recorded_keys(str(self.out))


def digest(store: Store, run_id: str) -> str:
    return str(fold(store.events(run_id)).steps["sweep"].approval["digest"])  # type: ignore[index]


def insert(store: Store, event: Event) -> None:
    """Write one row straight into the store, as anyone with the database password can."""
    with store.engine.begin() as conn:
        conn.execute(store._events.insert().values(  # the attacker's way in
            run_id=event.run, seq=event.seq, ts=event.ts, type=event.type, line=event.line,
            hash=event.hash,
        ))  # fmt: skip


def forge(store: Store, run_id: str, kind: str, data: dict[str, Any], *, prev: str | None = None
          ) -> Event:  # fmt: skip
    head = store.events(run_id)[-1]
    event = Event.make(run_id, head.seq + 1, kind, data, head.hash if prev is None else prev)
    insert(store, event)
    return event


def delete(store: Store, run_id: str, seq: int) -> None:
    with store.engine.begin() as conn:
        table = store._events
        conn.execute(table.delete().where(table.c.run_id == run_id, table.c.seq == seq))


def tampered(store: Store, run_id: str) -> list[Event]:
    return [e for e in store.events(run_id) if e.type == "run.tampered"]


def assert_stopped(team: Team, store: Store, run_id: str, state: Any, first_bad: int) -> None:
    assert state.status == "tampered", (state.status, state.reason)
    assert "sweep" not in team.effects()
    assert team.effects() == ["halt"]
    (record,) = tampered(store, run_id)
    assert record.data["first_bad"] == first_bad, record.data
    assert not [e for e in store.events(run_id) if e.type == ev.STEP_STARTED
                and e.data["step"] == "sweep"]  # fmt: skip


# -- the store is not trusted ------------------------------------------------------------------


def test_a_forged_quorum_row_does_not_open_the_gate(store: Store, tmp_path: Path) -> None:
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    row = forge(store, run_id, "approval.quorum", {
        "step": "sweep", "digest": digest(store, run_id), "approvers": ["t1", "t2"],
        "break_glass": False,
    })  # fmt: skip
    state = engine.execute(run_id)
    assert_stopped(team, store, run_id, state, row.seq)
    assert "approval quorum" in str(state.reason)


def test_a_forged_quorum_with_a_zero_prev_hash_does_not_open_the_gate(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    row = forge(store, run_id, "approval.quorum", {
        "step": "sweep", "digest": digest(store, run_id), "approvers": ["t1", "t2"],
        "break_glass": False,
    }, prev="0" * 64)  # fmt: skip
    state = engine.execute(run_id)
    assert_stopped(team, store, run_id, state, row.seq)


def test_forged_approvals_signed_with_other_keys_stop_the_run(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    want = digest(store, run_id)
    first = None
    for who in ("t1", "t2"):
        mine = generate_private_key(tmp_path / f"mallory-as-{who}.key")
        data = sign_decision(mine, {
            "run": run_id, "step": "sweep", "digest": want, "decision": "approve",
            "operator": who, "time": ev.utcnow(), "reason": "looks fine", "break_glass": False,
        })  # fmt: skip
        data.pop("item", None)
        row = forge(store, run_id, "approval.granted", data)
        first = first or row.seq
    state = engine.execute(run_id)
    assert_stopped(team, store, run_id, state, first or 0)


def test_a_broken_prev_hash_anywhere_stops_the_run(store: Store, tmp_path: Path) -> None:
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    team.decide(store, run_id, "t1")
    team.decide(store, run_id, "t2")
    row = forge(store, run_id, "run.note", {"text": "harmless", "by": "t3"}, prev="0" * 64)
    state = engine.execute(run_id)
    assert_stopped(team, store, run_id, state, row.seq)


def test_a_deleted_denial_stops_the_run(store: Store, tmp_path: Path) -> None:
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    team.decide(store, run_id, "t3", approve=False)
    team.decide(store, run_id, "t1")
    team.decide(store, run_id, "t2")
    (denial,) = [e for e in store.events(run_id) if e.type == "approval.denied"]
    delete(store, run_id, denial.seq)
    state = engine.execute(run_id)
    assert_stopped(team, store, run_id, state, denial.seq)  # "event N is missing"


def test_a_forged_end_is_not_sealed_by_the_next_resume(store: Store, tmp_path: Path) -> None:
    """A run that ended but died before its last checkpoint is sealed by the next resume:
    only once its journal verifies, so a forged end is never sealed as irctl's own."""
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    row = forge(store, run_id, "run.succeeded", {}, prev="0" * 64)
    state = engine.execute(run_id)
    assert state.status == "tampered", state.status
    assert tampered(store, run_id)[0].data["first_bad"] == row.seq
    assert not [e for e in store.events(run_id) if e.type == ev.CHECKPOINT and e.seq > row.seq]


def test_untouched_decisions_still_run_the_step_and_a_denial_still_fails_it(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    team.decide(store, run_id, "t1")
    team.decide(store, run_id, "t2")
    state = engine.execute(run_id)
    assert state.status == "succeeded", state.reason
    assert team.effects() == ["halt", "sweep"]
    assert not tampered(store, run_id)
    assert irctl_verify(store, run_id, team)

    other = Team(tmp_path / "other")
    engine, run_id = other.start(store)
    other.decide(store, run_id, "t3", approve=False)
    state = engine.execute(run_id)
    assert state.status == "failed"
    assert "sweep" not in other.effects()


def irctl_verify(store: Store, run_id: str, team: Team) -> bool:
    from irctl.record.transcript import verify_run

    return verify_run(store, run_id, [public_key_text(team.installation)]).ok


def test_a_swapped_operator_key_stops_the_run(store: Store, tmp_path: Path) -> None:
    """An insider with the database and the installation key swaps t1's recorded key for
    their own, approves as t1 with it, and rebuilds and re-seals the chain: every hash and
    signature in the journal checks out, but t1's key is not the one irctl.yaml lists."""
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    team.decide(store, run_id, "t2")  # one real approval; the second is forged
    mallory = generate_private_key(tmp_path / "mallory.key")
    events = store.events(run_id)
    created = events[0].data
    created["operators"]["t1"]["key"] = public_key_text(mallory)
    forged = sign_decision(mallory, {
        "run": run_id, "step": "sweep", "digest": digest(store, run_id), "decision": "approve",
        "operator": "t1", "time": ev.utcnow(), "reason": "ok", "break_glass": False,
    })  # fmt: skip
    forged.pop("item", None)
    last = events[-1]
    events.append(Event.make(run_id, last.seq + 1, "approval.granted", forged, last.hash))
    events.append(Event.make(run_id, last.seq + 2, ev.CHECKPOINT, {}, ""))
    rebuild_run(store, run_id, events, team.installation)
    assert irctl_verify(store, run_id, team)  # the journal alone proves nothing wrong
    state = engine.execute(run_id)
    assert_stopped(team, store, run_id, state, 1)
    assert "operator t1's key" in str(state.reason)


def test_a_row_forged_while_an_attached_run_waits_is_caught_before_the_step(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    _, run_id = team.start(store)
    attached = team.engine(store, attach=True, poll=0.05)
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(state=attached.execute(run_id)))
    waiter.start()
    try:
        time.sleep(0.5)
        team.decide(store, run_id, "t1")  # a real decision, sealed: the run keeps waiting
        time.sleep(0.3)
        row = forge(store, run_id, "approval.granted", {
            "run": run_id, "step": "sweep", "digest": digest(store, run_id),
            "decision": "approve", "operator": "t2", "time": ev.utcnow(), "reason": None,
            "break_glass": False, "assurance": "key", "key": "", "sig": "",
        })  # fmt: skip
    finally:
        waiter.join(30)
    assert not waiter.is_alive()
    assert_stopped(team, store, run_id, result["state"], row.seq)
    assert "without a checkpoint signed by the installation key" in str(result["state"].reason)


def test_decisions_from_other_processes_while_attached_still_open_the_gate(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    _, run_id = team.start(store)
    attached = team.engine(store, attach=True, poll=0.05)
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(state=attached.execute(run_id)))
    waiter.start()
    try:
        time.sleep(0.3)
        team.decide(store, run_id, "t1")
        team.decide(store, run_id, "t3")
    finally:
        waiter.join(30)
    assert result["state"].status == "succeeded", result["state"].reason
    assert team.effects() == ["halt", "sweep"]


def test_an_operator_removed_from_irctl_yaml_no_longer_counts(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    _, run_id = team.start(store)
    team.decide(store, run_id, "t1")
    team.decide(store, run_id, "t2")
    operators = {n: o for n, o in team.config.operators.items() if n != "t2"}
    team.config = team.config.model_copy(update={"operators": operators})
    state = team.engine(store).execute(run_id)
    assert state.status == "waiting"  # t2's approval does not count any more
    assert "sweep" not in team.effects()


def test_a_tampered_run_is_announced_loudly_in_slack(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-guard")
    with SlackStandIn(token="xoxb-guard") as slack:
        slack.add_channel("incidents", bot_member=True)
        team = Team(tmp_path, {"integrations": {"slack": {
            "token": "env:SLACK_BOT_TOKEN", "base_url": slack.url, "channel": "#incidents",
        }}})  # fmt: skip
        engine, run_id = team.start(store)
        forge(store, run_id, "approval.quorum", {
            "step": "sweep", "digest": digest(store, run_id), "approvers": ["t1", "t2"],
            "break_glass": False,
        })  # fmt: skip
        state = engine.execute(run_id)
        assert state.status == "tampered"
        alarms = [m for m in slack.messages("#incidents") if "TAMPERED" in m.text]
        assert alarms, slack.render()
        assert run_id in alarms[0].text
    assert "sweep" not in team.effects()


# -- through the CLI -----------------------------------------------------------------------------


def test_resume_of_a_forged_store_exits_1_and_status_says_why(tmp_path: Path) -> None:
    keys = {n: generate_private_key(tmp_path / "keys" / f"{n}.key") for n in TREASURY}
    oncall = generate_private_key(tmp_path / "keys" / "oncall.key")
    operators = (
        f'operators:\n  oncall: {{roles: [security-oncall], key: "{public_key_text(oncall)}"}}\n'
    ) + "".join(
        f'  {n}: {{roles: [treasury], key: "{public_key_text(k)}"}}\n' for n, k in keys.items()
    )
    ws = make_workspace(tmp_path / "ws", {"sweep": RUNBOOK}, extra=operators)
    out = tmp_path / "effects.txt"
    started = irctl("run", "sweep", "-p", f"out={out}", "--as", "oncall", "--yes",
                    "--unattended", "--no-wait", cwd=ws,
                    env={"IRCTL_KEY_DIR": str(tmp_path / "keys")})  # fmt: skip
    assert started.returncode == 3, started.stderr
    run_id = run_id_from(started)
    store = Store.open(f"sqlite:///{ws / '.irctl' / 'irctl.db'}")
    try:
        forge(store, run_id, "approval.quorum", {
            "step": "sweep", "digest": digest(store, run_id), "approvers": ["t1", "t2"],
            "break_glass": False,
        })  # fmt: skip
    finally:
        store.close()
    resumed = irctl("resume", run_id, "--unattended", "--no-wait", "--as", "oncall", cwd=ws)
    assert resumed.returncode == 1, resumed.stderr
    assert "was tampered with" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert recorded_keys(str(out)) == ["halt"]
    status = irctl("status", run_id, "--json", cwd=ws)
    assert json.loads(status.stdout)["status"] == "tampered"
    again = irctl("resume", run_id, "--unattended", "--no-wait", "--as", "oncall", cwd=ws)
    assert again.returncode == 1  # a resume never mends it
    assert recorded_keys(str(out)) == ["halt"]


# -- who may start what ----------------------------------------------------------------------

GUARDED = RUNBOOK.replace("steps:\n", "start: {roles: [security-oncall]}\nsteps:\n", 1)


def _create(team: Team, store: Store, **kwargs: Any) -> str:
    model = load_runbook_text(GUARDED, "sweep.yaml")
    args: dict[str, Any] = {"initiator": "oncall", **kwargs}
    return team.engine(store).create_run(model, GUARDED, {"out": str(team.out)}, **args)


def test_a_live_start_needs_an_allowed_role_and_that_operators_own_key(
    store: Store, tmp_path: Path
) -> None:
    from irctl.errors import UsageError

    team = Team(tmp_path)
    with pytest.raises(UsageError, match="needs oncall's own private key"):
        _create(team, store)  # a name is a claim, not a proof
    with pytest.raises(UsageError, match="needs oncall's own private key"):
        _create(team, store, starter_key=team.keys["t1"])  # someone else's key
    with pytest.raises(UsageError, match=r"t1 .roles: treasury. may not start a live run"):
        _create(team, store, initiator="t1", starter_key=team.keys["t1"])
    assert not store.runs()
    # A tabletop drill stays open to any operator, key or not.
    drill = _create(team, store, initiator="t1", mode="tabletop")
    assert team.engine(store).execute(drill).status == "waiting"
    run_id = _create(team, store, starter_key=team.oncall)
    state = team.engine(store).execute(run_id)
    assert state.status == "waiting", state.reason
    assert team.effects() == ["halt"]
    assert store.events(run_id)[0].data["start"]["key"] == public_key_text(team.oncall)


def test_a_start_rewritten_with_other_params_stops_the_run(
    store: Store, tmp_path: Path
) -> None:
    """An insider holding the installation key rewrites what a run was started with and
    re-seals it: the initiator's signed start no longer matches, so the run stops."""
    team = Team(tmp_path)
    run_id = _create(team, store, starter_key=team.oncall)
    events = store.events(run_id)
    events[0].data["params"] = {"out": str(tmp_path / "elsewhere.txt")}
    events.append(Event.make(run_id, 2, ev.CHECKPOINT, {}, ""))
    rebuild_run(store, run_id, events, team.installation)
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert [p for p in report.problems if "is not signed by oncall's key" in p], report.problems
    assert len(report.problems) == 1  # hashes and seals hold: only the start gives it away
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered"
    assert "is not signed by oncall's key" in str(state.reason)
    assert not (tmp_path / "elsewhere.txt").exists()
    assert team.effects() == []


def test_validate_refuses_a_start_nobody_could_make_and_run_needs_the_key(tmp_path: Path) -> None:
    oncall = generate_private_key(tmp_path / "keys" / "oncall.key")
    t1 = generate_private_key(tmp_path / "keys" / "t1.key")
    t2 = generate_private_key(tmp_path / "t2.key")
    operators = (
        "operators:\n"
        f'  oncall: {{roles: [security-oncall], key: "{public_key_text(oncall)}"}}\n'
        f'  t1: {{roles: [treasury], key: "{public_key_text(t1)}"}}\n'
        f'  t2: {{roles: [treasury], key: "{public_key_text(t2)}"}}\n'
        f'  t3: {{roles: [treasury], key: "{public_key_text(t2)}"}}\n'
    )
    nobody = GUARDED.replace("[security-oncall]}", "[ciso]}").replace("id: sweep", "id: nobody")
    ws = make_workspace(tmp_path / "ws", {"sweep": GUARDED, "nobody": nobody}, extra=operators)
    checked = irctl("validate", cwd=ws)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    report = checked.stdout + checked.stderr
    assert "nobody.yaml:" in report
    assert "start.roles" in report
    assert "no operator holds one of these roles" in report
    assert "sweep.yaml" not in report
    out = tmp_path / "effects.txt"
    env = {"IRCTL_KEY_DIR": str(tmp_path / "keys")}
    argv = ["run", "sweep", "-p", f"out={out}", "--yes", "--unattended", "--no-wait"]
    refused = irctl(*argv, "--as", "t1", cwd=ws, env=env)
    assert refused.returncode == 2, refused.stderr
    assert "may not start a live run of 'sweep'" in refused.stderr
    wrong = irctl(*argv, "--as", "oncall", "--key", str(tmp_path / "keys" / "t1.key"), cwd=ws)
    assert wrong.returncode == 2, wrong.stderr
    assert "needs oncall's own private key" in wrong.stderr
    missing = irctl(*argv, "--as", "oncall", cwd=ws, env={"IRCTL_KEY_DIR": str(tmp_path / "none")})
    assert missing.returncode == 2
    assert "no key for oncall" in missing.stderr
    assert not out.exists()
    started = irctl(*argv, "--as", "oncall", cwd=ws, env=env)
    assert started.returncode == 3, started.stderr
    assert recorded_keys(str(out)) == ["halt"]
    drill = irctl("run", "sweep", "-p", f"out={out}", "--mode", "tabletop", "--as", "t1",
                  "--unattended", "--no-wait", cwd=ws)  # fmt: skip
    assert drill.returncode == 3, drill.stderr  # a tabletop run is open to every operator


def test_every_live_run_with_operators_is_started_with_the_initiators_own_key(
    store: Store, tmp_path: Path
) -> None:
    """No ``start:`` in the runbook: any operator may start it, but only as themselves."""
    from irctl.errors import UsageError

    team = Team(tmp_path)
    model = load_runbook_text(RUNBOOK, "sweep.yaml")
    engine = team.engine(store)
    params = {"out": str(team.out)}
    with pytest.raises(UsageError, match="needs oncall's own private key"):
        engine.create_run(model, RUNBOOK, params, initiator="oncall")  # a name alone
    with pytest.raises(UsageError, match="needs oncall's own private key"):
        engine.create_run(model, RUNBOOK, params, initiator="oncall", starter_key=team.keys["t1"])
    with pytest.raises(UsageError, match="mallory is not an operator"):
        engine.create_run(model, RUNBOOK, params, initiator="mallory", starter_key=team.oncall)
    assert not store.runs()  # nothing recorded
    run_id = engine.create_run(model, RUNBOOK, params, initiator="t1", starter_key=team.keys["t1"])
    start = store.events(run_id)[0].data["start"]
    assert start["key"] == public_key_text(team.keys["t1"])
    assert start["roles"] == []
    assert team.engine(store).execute(run_id).status == "waiting"
    assert team.effects() == ["halt"]


@pytest.mark.parametrize("rewrite", ["start removed", "initiator renamed"])
def test_a_run_created_re_sealed_without_its_signed_start_stops_the_run(
    store: Store, tmp_path: Path, rewrite: str
) -> None:
    """The holder of the installation key rewrites ``run.created`` so that the run seems
    started by someone else, or by nobody's key, and re-seals it: the run stops before
    its first step."""
    team = Team(tmp_path)
    model = load_runbook_text(RUNBOOK, "sweep.yaml")
    run_id = team.engine(store).create_run(
        model, RUNBOOK, {"out": str(team.out)}, initiator="oncall", starter_key=team.oncall
    )
    events = store.events(run_id)
    if rewrite == "start removed":
        del events[0].data["start"]
    else:
        events[0].data["initiator"] = "t1"
    events.append(Event.make(run_id, 2, ev.CHECKPOINT, {}, ""))  # re-sealed
    rebuild_run(store, run_id, events, team.installation)
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert [p for p in report.problems if "is not signed by" in p], report.problems
    assert len(report.problems) == 1  # hashes and seals hold: only the start gives it away
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", state.reason
    assert "is not signed by" in str(state.reason)
    assert team.effects() == []  # not even the halt ran


def test_verify_trust_catches_a_start_re_signed_with_a_swapped_initiator_key(
    store: Store, tmp_path: Path
) -> None:
    """The installation key's holder swaps oncall's recorded key for their own and re-signs
    the start with it: the journal is consistent on its own word, but not against the keys
    irctl.yaml lists; the engine stops the run, and verify --trust names the start."""
    from irctl.record.keyring import Trust

    team = Team(tmp_path)
    model = load_runbook_text(RUNBOOK, "sweep.yaml")
    run_id = team.engine(store).create_run(
        model, RUNBOOK, {"out": str(team.out)}, initiator="oncall", starter_key=team.oncall
    )
    mallory = generate_private_key(tmp_path / "mallory.key")
    events = store.events(run_id)
    created = events[0].data
    created["operators"]["oncall"]["key"] = public_key_text(mallory)
    resign_start(created, run_id, mallory)
    events.append(Event.make(run_id, 2, ev.CHECKPOINT, {}, ""))
    rebuild_run(store, run_id, events, team.installation)
    own_word = verify_run(store, run_id, [public_key_text(team.installation)])
    assert own_word.ok, own_word.problems
    assert own_word.signed_start == "oncall"
    trusted = verify_run(
        store, run_id, [public_key_text(team.installation)],
        trust=Trust.of_config(team.config, "irctl.yaml"),
    )  # fmt: skip
    assert not trusted.ok
    assert [p for p in trusted.problems if "the start does not count" in p], trusted.problems
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", state.reason
    assert team.effects() == []


def test_irctl_run_as_someone_else_is_refused_and_detach_keeps_who_started(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    operators = keyed_operators(keys, {"oncall": "security-oncall", "t1": "treasury"})
    one = (
        "irctl: 1\nkind: runbook\nid: halt\ntitle: Halt\nparams:\n  out: {type: string}\n"
        'steps:\n  - {id: halt, action: testing.record, with: {path: "{{ params.out }}", '
        "key: halt}}\n"
    )
    ws = make_workspace(tmp_path / "ws", {"halt": one}, extra=operators)
    out = tmp_path / "effects.txt"
    argv = ["run", "halt", "-p", f"out={out}", "--yes", "--unattended"]
    claimed = irctl(*argv, "--as", "t1", "--key", str(keys / "oncall.key"), cwd=ws)
    assert claimed.returncode == 2, claimed.stderr
    assert "needs t1's own private key" in claimed.stderr
    assert "Traceback" not in claimed.stderr
    listed = irctl("runs", "list", "--json", cwd=ws)
    assert json.loads(listed.stdout) == []  # nothing recorded
    assert not out.exists()
    detached = irctl(*argv, "--as", "t1", "--key", str(keys / "t1.key"), "--detach", "--json",
                     cwd=ws, env={"IRCTL_OPERATOR": "nobody"})  # fmt: skip
    assert detached.returncode == 0, detached.stderr
    run_id = json.loads(detached.stdout)["run_id"]
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
        if status["status"] not in ("created", "running"):
            break
        time.sleep(0.2)
    log = (ws / ".irctl" / "logs" / f"{run_id}.log").read_text(encoding="utf-8")
    assert status["status"] == "succeeded", (status, log)
    assert recorded_keys(str(out)) == ["halt"]
    assert status["initiator"] == "t1", status


# -- what a review of the attacks above found --------------------------------------------------


def test_a_run_rewritten_from_its_first_row_without_the_gate_is_refused(
    store: Store, tmp_path: Path
) -> None:
    """Every row deleted, and run.created written again with the approval taken out of the
    recorded runbook: a journal with no checkpoint at all, which must not pass for a crash."""
    team = Team(tmp_path)
    _, run_id = team.start(store)
    created = store.events(run_id)[0].data
    text = created["runbook_text"].replace("    approval: treasury\n", "")
    from irctl.runbook.render import sha256_hex

    data = {**created, "runbook_text": text, "runbook_digest": "sha256:" + sha256_hex(text)}
    data.pop("sealed_by", None)
    with store.engine.begin() as conn:
        table = store._events
        conn.execute(table.delete().where(table.c.run_id == run_id))
    insert(store, Event.make(run_id, 1, ev.RUN_CREATED, data, GENESIS))
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", state.status
    assert "run.created is sealed neither" in str(state.reason)
    assert team.effects() == ["halt"]


def test_an_honest_write_never_seals_a_forged_row(store: Store, tmp_path: Path) -> None:
    """A forged mark lands in the store; the next honest approval must not vouch for it."""
    team = Team(tmp_path)
    _, run_id = team.start(store)
    row = forge(store, run_id, ev.STEP_RESOLVED, {"step": "sweep", "mark": "retry", "by": "t1"})
    from irctl.engine.guard import RunTampered

    with pytest.raises(RunTampered, match=f"event {row.seq}"):
        team.decide(store, run_id, "t1")
    assert not [e for e in store.events(run_id) if e.seq > row.seq]
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered"
    assert not [e for e in store.events(run_id) if e.type == ev.CHECKPOINT and e.seq > row.seq]
    assert team.effects() == ["halt"]


def test_a_row_forged_while_attached_is_never_sealed_and_the_run_stays_stopped(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    _, run_id = team.start(store)
    attached = team.engine(store, attach=True, poll=0.05)
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(state=attached.execute(run_id)))
    waiter.start()
    try:
        time.sleep(0.4)
        row = forge(store, run_id, "run.note", {"text": "nothing to see", "by": "t2"})
    finally:
        waiter.join(30)
    assert result["state"].status == "tampered"
    assert not [e for e in store.events(run_id) if e.type == ev.CHECKPOINT and e.seq > row.seq]
    again = team.engine(store).execute(run_id)  # the stop is for good
    assert again.status == "tampered"
    assert team.effects() == ["halt"]


def test_a_row_that_is_not_canonical_json_is_tampering_not_a_crash(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    engine, run_id = team.start(store)
    head = store.events(run_id)[-1]
    line = (
        '{"data":{"attempt":Infinity,"step":"sweep"},"prev":"' + head.hash + '","run":"'
        + run_id + f'","seq":{head.seq + 1},"ts":"2026-12-07T00:00:00.000000Z",'
        '"type":"step.started"}'
    )  # fmt: skip
    from irctl.runbook.render import sha256_hex

    insert(store, Event(run_id, head.seq + 1, "2026-12-07T00:00:00.000000Z", "step.started",
                        {}, head.hash, line, sha256_hex(line)))  # fmt: skip
    state = engine.execute(run_id)
    assert state.status == "tampered"
    assert team.effects() == ["halt"]


def test_rows_added_after_a_sealed_end_are_not_sealed_by_a_resume(
    store: Store, tmp_path: Path
) -> None:
    from irctl.errors import UsageError

    team = Team(tmp_path)
    engine, run_id = team.start(store)
    team.decide(store, run_id, "t1")
    team.decide(store, run_id, "t2")
    assert engine.execute(run_id).status == "succeeded"
    row = forge(store, run_id, "run.note", {"text": "added afterwards", "by": "t3"})
    with pytest.raises(UsageError, match="nothing to resume"):
        engine.execute(run_id)
    assert store.events(run_id)[-1].seq == row.seq  # nothing sealed it
