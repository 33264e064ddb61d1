"""A person's word in a live run is theirs only if their key signed it.

In a live run started with operators configured, an answer to a manual step, a mark on an
in-doubt step and an abort each let the run go on (or end it) on one person's word.  Each is
signed with the key of the operator who gave it, checked against the key the run pinned at
its start, and checked again whenever the run is opened and by ``transcript verify``.  The
attacks are made as an insider would: holding the installation key (which seals every
event) but not the operator's own key.  Tabletop drills stay open to anyone listed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.engine.guard import RunTampered
from irctl.errors import UsageError
from irctl.identity import generate_private_key, public_key_text
from irctl.journal import events as ev
from irctl.journal.events import GENESIS, Event
from irctl.journal.store import Store
from irctl.record.approvals import sign_act
from irctl.record.transcript import checkpoint_data, verify_run
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.testing import recorded_keys
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
id: confirm-sweep
title: Sweep once the custodian confirms
params:
  out: {type: string}
steps:
  - id: halt
    action: testing.record
    with: {path: "{{ params.out }}", key: halt}
  - id: custody
    action: manual.confirm
    with: {prompt: "Call the custodian and confirm the cold address"}
  - id: sweep
    action: testing.record
    with: {path: "{{ params.out }}", key: sweep}
"""

# A step that outlives its timeout and is not idempotent: in doubt, a person marks it.
IN_DOUBT = """\
irctl: 1
kind: runbook
id: doubtful
title: A step whose outcome only a person can tell
params:
  out: {type: string}
steps:
  - id: slow
    action: shell.exec
    with: {argv: [sleep, "3"]}
    timeout: 200ms
  - id: sweep
    action: testing.record
    with: {path: "{{ params.out }}", key: sweep}
"""


@pytest.fixture
def store(store_url: str) -> Any:
    opened = Store.open(store_url)
    yield opened
    opened.close()


class Team:
    """An installation key, an on-call engineer and a treasury operator, each with a key."""

    def __init__(self, tmp_path: Path) -> None:
        self.installation = generate_private_key(tmp_path / "installation.key")
        self.oncall = generate_private_key(tmp_path / "keys" / "oncall.key")
        self.t1 = generate_private_key(tmp_path / "keys" / "t1.key")
        self.mallory = generate_private_key(tmp_path / "mallory.key")
        self.out = tmp_path / "effects.txt"
        self.config = Config.model_validate({
            "installation_key": public_key_text(self.installation),
            "operators": {
                "oncall": {"roles": ["security-oncall"], "key": public_key_text(self.oncall)},
                "t1": {"roles": ["treasury"], "key": public_key_text(self.t1)},
            },
        })  # fmt: skip

    def engine(self, store: Store, **kwargs: Any) -> Engine:
        return Engine(
            store, config=self.config, signing_key=self.installation, cancel_grace=0.1, **kwargs
        )

    def start(self, store: Store, text: str = RUNBOOK, mode: str = "live", **kw: Any) -> str:
        model = load_runbook_text(text, "runbook.yaml")
        engine = self.engine(store, **kw)
        run_id = engine.create_run(
            model, text, {"out": str(self.out)}, initiator="oncall", mode=mode,
            starter_key=self.oncall,
        )
        state = engine.execute(run_id)
        assert state.status == "waiting", (state.status, state.reason)
        return run_id

    def effects(self) -> list[str]:
        return recorded_keys(str(self.out))


def _of(store: Store, run_id: str, kind: str) -> list[Event]:
    return [e for e in store.events(run_id) if e.type == kind]


def _stopped_before_the_sweep(team: Team, store: Store, run_id: str, bad: Event) -> str:
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", (state.status, state.reason)
    assert "sweep" not in team.effects()
    (record,) = _of(store, run_id, "run.tampered")
    assert record.data["first_bad"] == bad.seq, record.data
    return str(state.reason)


# -- answers -------------------------------------------------------------------------------


def test_an_answer_in_a_live_run_needs_the_answering_operators_own_key(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    run_id = team.start(store)
    engine = team.engine(store)
    with pytest.raises(UsageError, match="signed with oncall's own key: give --key FILE"):
        engine.answer(run_id, "custody", "done", operator="oncall")
    with pytest.raises(UsageError, match=r"not oncall's key as irctl\.yaml lists it"):
        engine.answer(run_id, "custody", "done", operator="oncall", private_key=team.t1)
    with pytest.raises(UsageError, match="'mallory' was not an operator"):
        engine.answer(run_id, "custody", "done", operator="mallory", private_key=team.mallory)
    assert not _of(store, run_id, ev.STEP_ANSWERED)  # nothing refused was recorded
    engine.answer(run_id, "custody", "done", operator="oncall", private_key=team.oncall)
    (answered,) = _of(store, run_id, ev.STEP_ANSWERED)
    assert answered.data["key"] == public_key_text(team.oncall)
    assert "sig" in answered.data
    state = team.engine(store).execute(run_id)
    assert state.status == "succeeded", state.reason
    assert team.effects() == ["halt", "sweep"]
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems
    assert report.signed_acts == 1
    assert "1 signed answer/mark/abort verified" in report.summary()


def test_an_unsigned_answer_sealed_with_the_installation_key_stops_the_run(
    store: Store, tmp_path: Path
) -> None:
    """The insider holds the installation key, so the row is sealed like any of irctl's;
    only the missing signature of the operator it names gives it away."""
    team = Team(tmp_path)
    run_id = team.start(store)
    bad = team.engine(store).record(
        run_id, ev.STEP_ANSWERED, {"step": "custody", "answer": "done", "by": "oncall"}
    )
    reason = _stopped_before_the_sweep(team, store, run_id, bad)
    assert "the answer by oncall is not signed" in reason
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert not report.ok
    assert report.first_bad == bad.seq


def test_an_answer_signed_with_another_key_stops_the_run(store: Store, tmp_path: Path) -> None:
    team = Team(tmp_path)
    run_id = team.start(store)
    data = sign_act(team.t1, run_id, ev.STEP_ANSWERED,
                    {"step": "custody", "answer": "done", "by": "oncall"})  # fmt: skip
    bad = team.engine(store).record(run_id, ev.STEP_ANSWERED, data)
    reason = _stopped_before_the_sweep(team, store, run_id, bad)
    assert "signed with a key other than oncall's at run start" in reason


def test_a_signed_answer_altered_afterwards_stops_the_run(store: Store, tmp_path: Path) -> None:
    """The real answer was "failed"; the insider rewrites it to "done" and re-seals."""
    team = Team(tmp_path)
    run_id = team.start(store)
    data = sign_act(team.oncall, run_id, ev.STEP_ANSWERED,
                    {"step": "custody", "answer": "failed", "by": "oncall"})  # fmt: skip
    bad = team.engine(store).record(run_id, ev.STEP_ANSWERED, {**data, "answer": "done"})
    reason = _stopped_before_the_sweep(team, store, run_id, bad)
    assert "does not verify with oncall's key" in reason


def test_an_answer_re_signed_after_swapping_the_operators_key_stops_the_run(
    store: Store, tmp_path: Path
) -> None:
    """The insider swaps oncall's pinned key for their own, answers with it and rebuilds
    and re-seals the chain: the journal is consistent, but irctl.yaml's key is not that."""
    team = Team(tmp_path)
    run_id = team.start(store)
    events = store.events(run_id)
    events[0].data["operators"]["oncall"]["key"] = public_key_text(team.mallory)
    resign_start(events[0].data, run_id, team.mallory)
    forged = sign_act(team.mallory, run_id, ev.STEP_ANSWERED,
                      {"step": "custody", "answer": "done", "by": "oncall"})  # fmt: skip
    last = events[-1]
    events.append(Event.make(run_id, last.seq + 1, ev.STEP_ANSWERED, forged, last.hash))
    events.append(Event.make(run_id, last.seq + 2, ev.CHECKPOINT, {}, ""))
    rebuild_run(store, run_id, events, team.installation)
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems  # the journal alone proves nothing wrong
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered"
    assert "operator oncall's key" in str(state.reason)
    assert "sweep" not in team.effects()


def test_an_answer_at_the_terminal_is_signed_or_not_asked(store: Store, tmp_path: Path) -> None:
    """Attached at a terminal without the operator's key, irctl does not ask (the answer
    could not be signed): the step waits for 'irctl answer --key'.  With it, it asks."""
    team = Team(tmp_path)
    asked: list[str] = []

    def terminal(prompt: str, kind: str, choices: list[str] | None) -> str | None:
        asked.append(prompt)
        return "done"

    for key in (None, team.t1):  # no key, or someone else's: not asked, the step waits
        run_id = team.start(store, interactive=terminal, operator="oncall", operator_key=key)
        assert asked == []
        assert not _of(store, run_id, ev.STEP_ANSWERED)
    model = load_runbook_text(RUNBOOK, "runbook.yaml")
    right = team.engine(store, interactive=terminal, operator="oncall", operator_key=team.oncall)
    run_id = right.create_run(
        model, RUNBOOK, {"out": str(team.out)}, initiator="oncall", starter_key=team.oncall
    )
    state = right.execute(run_id)
    assert state.status == "succeeded", state.reason
    assert len(asked) == 1
    (answered,) = _of(store, run_id, ev.STEP_ANSWERED)
    assert answered.data["key"] == public_key_text(team.oncall)
    assert verify_run(store, run_id, [public_key_text(team.installation)]).signed_acts == 1


def test_tabletop_answers_need_no_key(store: Store, tmp_path: Path) -> None:
    team = Team(tmp_path)
    run_id = team.start(store, mode="tabletop")
    team.engine(store).answer(run_id, "custody", "done", operator="t1")
    (answered,) = _of(store, run_id, ev.STEP_ANSWERED)
    assert "sig" not in answered.data
    assert team.engine(store).execute(run_id).status == "succeeded"
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems
    assert report.signed_acts == 0


def test_a_workspace_without_operators_answers_unsigned(store: Store, tmp_path: Path) -> None:
    """Nobody's key to check: the answer is sealed by the installation key, as every event."""
    installation = generate_private_key(tmp_path / "installation.key")
    engine = Engine(store, config=Config(), signing_key=installation)
    model = load_runbook_text(RUNBOOK, "runbook.yaml")
    out = tmp_path / "effects.txt"
    run_id = engine.create_run(model, RUNBOOK, {"out": str(out)}, initiator="root")
    assert engine.execute(run_id).status == "waiting"
    engine.answer(run_id, "custody", "done", operator="root")
    assert Engine(store, signing_key=installation).execute(run_id).status == "succeeded"
    assert verify_run(store, run_id, [public_key_text(installation)]).ok


# -- marks and aborts ------------------------------------------------------------------------


def test_a_mark_on_an_in_doubt_step_is_signed_and_a_forged_one_stops_the_run(
    store: Store, tmp_path: Path
) -> None:
    team = Team(tmp_path)
    run_id = team.start(store, IN_DOUBT)
    state = team.engine(store).state(run_id)
    assert state.steps["slow"].waiting_for == "operator"
    engine = team.engine(store)
    with pytest.raises(UsageError, match=r"to mark in live run .* signed with oncall's own key"):
        engine.mark(run_id, "slow", "done", operator="oncall", reason="seen")
    assert not _of(store, run_id, ev.STEP_RESOLVED)
    # The insider marks it done in oncall's name, sealed with the installation key.
    bad = engine.record(run_id, ev.STEP_RESOLVED,
                        {"step": "slow", "mark": "done", "by": "oncall"})  # fmt: skip
    reason = _stopped_before_the_sweep(team, store, run_id, bad)
    assert "the mark by oncall is not signed" in reason


def test_a_signed_mark_lets_the_run_go_on(store: Store, tmp_path: Path) -> None:
    team = Team(tmp_path)
    run_id = team.start(store, IN_DOUBT)
    team.engine(store).mark(
        run_id, "slow", "done", operator="oncall", reason="seen", private_key=team.oncall
    )
    state = team.engine(store).execute(run_id)
    assert state.status == "succeeded", state.reason
    assert team.effects() == ["sweep"]
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems
    assert report.signed_acts == 1


def test_an_abort_is_signed_and_a_forged_one_fails_verify(store: Store, tmp_path: Path) -> None:
    team = Team(tmp_path)
    run_id = team.start(store)
    engine = team.engine(store)
    with pytest.raises(UsageError, match=r"to abort in live run .* signed with oncall's own key"):
        engine.abort(run_id, reason="false alarm", operator="oncall")
    assert not _of(store, run_id, ev.RUN_ABORTED)
    state = engine.abort(run_id, reason="false alarm", operator="oncall", private_key=team.oncall)
    assert state.status == "aborted"
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems
    assert report.signed_acts == 1
    # The same abort, recorded unsigned in oncall's name in another run: verify says so.
    other = team.start(store)
    bad = engine.record(other, ev.RUN_ABORTED, {"reason": "false alarm", "by": "oncall"})
    report = verify_run(store, other, [public_key_text(team.installation)])
    assert not report.ok
    assert report.first_bad == bad.seq
    assert any("the abort by oncall is not signed" in p for p in report.problems)


# -- through the CLI -------------------------------------------------------------------------


def test_irctl_answer_signs_with_the_key_and_verify_trust_catches_a_swapped_one(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    operators = keyed_operators(keys, {"oncall": "security-oncall", "t1": "treasury"})
    ws = make_workspace(tmp_path / "ws", {"confirm-sweep": RUNBOOK}, extra=operators)
    out = tmp_path / "effects.txt"
    nowhere = {"IRCTL_KEY_DIR": str(tmp_path / "no-keys")}
    started = irctl("run", "confirm-sweep", "-p", f"out={out}", "--as", "oncall", "--yes",
                    "--key", str(keys / "oncall.key"), "--unattended", cwd=ws,
                    env=nowhere)  # fmt: skip
    assert started.returncode == 3, started.stderr
    run_id = run_id_from(started)

    refused = irctl("answer", run_id, "custody", "done", "--as", "oncall", cwd=ws, env=nowhere)
    assert refused.returncode == 2, refused.stderr
    assert "signed with oncall's own key" in refused.stderr
    assert "Traceback" not in refused.stderr
    wrong = irctl("answer", run_id, "custody", "done", "--as", "oncall",
                  "--key", str(keys / "t1.key"), cwd=ws, env=nowhere)  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    assert "not oncall's key" in wrong.stderr
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    assert status["status"] == "waiting"
    assert recorded_keys(str(out)) == ["halt"]

    done = irctl("answer", run_id, "custody", "done", "--as", "oncall",
                 "--key", str(keys / "oncall.key"), cwd=ws, env=nowhere)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert recorded_keys(str(out)) == ["halt", "sweep"]
    verified = irctl("transcript", "verify", run_id, cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 signed answer/mark/abort verified" in " ".join(verified.stdout.split())
    assert irctl("transcript", "verify", run_id, "--trust", "irctl.yaml", cwd=ws).returncode == 0

    # The insider swaps oncall's key for their own, re-signs the answer, re-chains, re-seals.
    db = ws / ".irctl" / "irctl.db"
    with sqlite3.connect(db) as conn:
        lines = [r[0] for r in conn.execute(
            "SELECT line FROM irctl_events WHERE run_id = ? ORDER BY seq", (run_id,))]  # fmt: skip
    from irctl.identity import load_private_key

    install = load_private_key(ws / ".irctl" / "installation.key")
    mallory = generate_private_key(tmp_path / "mallory.key")
    items = [json.loads(line) for line in lines]
    items[0]["data"]["operators"]["oncall"]["key"] = public_key_text(mallory)
    resign_start(items[0]["data"], run_id, mallory)
    rewritten, prev, last = [], GENESIS, None
    for seq, item in enumerate(items, 1):
        data = item["data"]
        if item["type"] == ev.STEP_ANSWERED:
            data = sign_act(
                mallory,
                run_id,
                ev.STEP_ANSWERED,
                {k: v for k, v in data.items() if k not in ("key", "sig")},
            )
        elif item["type"] == ev.CHECKPOINT:
            assert last is not None
            data = checkpoint_data(run_id, last, install)
        event = Event.make(run_id, seq, item["type"], data, prev, item["ts"])
        rewritten.append(event)
        prev = event.hash
        if item["type"] != ev.CHECKPOINT:
            last = event
    with sqlite3.connect(db) as conn:
        for event in rewritten:
            conn.execute("UPDATE irctl_events SET line = ?, hash = ? WHERE run_id = ? AND seq = ?",
                         (event.line, event.hash, run_id, event.seq))  # fmt: skip
    alone = irctl("transcript", "verify", run_id, cwd=ws)
    assert alone.returncode == 0, alone.stdout + alone.stderr  # consistent on its own word
    trusted = irctl("transcript", "verify", run_id, "--trust", "irctl.yaml", cwd=ws)
    assert trusted.returncode == 1, trusted.stdout + trusted.stderr
    assert "oncall" in trusted.stdout + trusted.stderr
    assert public_key_text(mallory) in trusted.stdout + trusted.stderr


def test_irctl_abort_in_a_live_run_needs_the_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    oncall = generate_private_key(keys / "oncall.key")
    operators = (
        f'operators:\n  oncall: {{roles: [security-oncall], key: "{public_key_text(oncall)}"}}\n'
    )
    ws = make_workspace(tmp_path / "ws", {"confirm-sweep": RUNBOOK}, extra=operators)
    out = tmp_path / "effects.txt"
    nowhere = {"IRCTL_KEY_DIR": str(tmp_path / "no-keys")}
    started = irctl("run", "confirm-sweep", "-p", f"out={out}", "--as", "oncall", "--yes",
                    "--key", str(keys / "oncall.key"), "--unattended", cwd=ws,
                    env=nowhere)  # fmt: skip
    run_id = run_id_from(started)
    refused = irctl("abort", run_id, "--reason", "drill over", "--as", "oncall", cwd=ws,
                    env=nowhere)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "to abort in live run" in refused.stderr
    # the key where 'irctl keys generate' puts it is found without --key
    aborted = irctl("abort", run_id, "--reason", "drill over", "--as", "oncall", cwd=ws,
                    env={"IRCTL_KEY_DIR": str(keys)})  # fmt: skip
    assert aborted.returncode == 0, aborted.stderr
    assert json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)["status"] == "aborted"


GATED = """\
irctl: 1
kind: runbook
id: gated-sweep
title: Sweep under one treasury approval
params:
  out: {type: string}
steps:
  - id: halt
    action: testing.record
    with: {path: "{{ params.out }}", key: halt}
  - id: sweep
    action: testing.record
    approval: {quorum: 1, roles: [treasury]}
    with: {path: "{{ params.out }}", key: sweep}
"""


def test_an_unsigned_act_written_while_an_attached_run_waits_stops_it(
    store: Store, tmp_path: Path
) -> None:
    """The attached process checks each event others append while it waits for an
    approval: a sealed but unsigned act in oncall's name stops it before the sweep, even
    when a real approval follows."""
    import threading
    import time

    team = Team(tmp_path)
    run_id = team.start(store, GATED)
    attached = team.engine(store, attach=True, poll=0.05)
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(state=attached.execute(run_id)))
    waiter.start()
    try:
        time.sleep(0.5)
        bad = team.engine(store).record(
            run_id, ev.STEP_RESOLVED, {"step": "halt", "mark": "done", "by": "oncall"}
        )
        time.sleep(0.3)
        with pytest.raises(RunTampered):  # every recording command verifies before it seals
            team.engine(store).decide(
                run_id, "sweep", operator="t1", approve=True, reason="checked",
                private_key=team.t1,
            )  # fmt: skip
    finally:
        waiter.join(30)
    assert not waiter.is_alive()
    state = result["state"]
    assert state.status == "tampered", (state.status, state.reason)
    assert "the mark by oncall is not signed" in str(state.reason)
    assert team.effects() == ["halt"]
    (record,) = _of(store, run_id, "run.tampered")
    assert record.data["first_bad"] == bad.seq


@pytest.mark.parametrize("strip", ["acts", "operators"])
def test_a_run_created_rewritten_to_take_answers_unsigned_is_refused(
    store: Store, tmp_path: Path, strip: str
) -> None:
    """The insider rewrites run.created so the run no longer asks for signed acts (or
    pins no operators), re-seals the chain and answers unsigned: the journal verifies on
    its own word, but irctl.yaml lists operators, so the engine refuses the run."""
    team = Team(tmp_path)
    run_id = team.start(store)
    events = store.events(run_id)
    if strip == "acts":
        del events[0].data["acts"]
    else:
        events[0].data["operators"] = {}
    events[0].data.pop("sealed_by", None)
    last = events[-1]
    unsigned = {"step": "custody", "answer": "done", "by": "oncall"}
    events.append(Event.make(run_id, last.seq + 1, ev.STEP_ANSWERED, unsigned, last.hash))
    events.append(Event.make(run_id, last.seq + 2, ev.CHECKPOINT, {}, ""))
    rebuild_run(store, run_id, events, team.installation)
    assert verify_run(store, run_id, [public_key_text(team.installation)]).ok
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", (state.status, state.reason)
    assert "does not ask for the answers, marks and aborts" in str(state.reason)
    assert team.effects() == ["halt"]
