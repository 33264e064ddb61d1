"""``repeat: {every, until, max}``: a step run again until its outputs say it is done.

Real processes and the real SQLite store: each round is a ``shell.exec`` appending a line to a
ledger file, so a round run twice, or skipped, shows in the file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

from tests.helpers import IRCTL, irctl, make_workspace, run_id_from

APPEND = '[sh, -c, "echo round >> {ledger} && wc -l < {ledger}"]'


def _runbook(ledger: Path, repeat: str, *, after: str = "") -> str:
    return f"""\
irctl: 1
id: coverage
title: Hot-wallet coverage
steps:
  - id: check
    action: shell.exec
    with: {{argv: {APPEND.format(ledger=ledger)}}}
    repeat: {repeat}
{after}"""


def _events(ws: Path, run_id: str) -> list[dict[str, object]]:
    shown = irctl("transcript", "export", run_id, "--format", "jsonl", cwd=ws)
    assert shown.returncode == 0, shown.stderr
    found = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    return [e for e in found if "type" in e]


def _lines(ledger: Path) -> int:
    return len(ledger.read_text().splitlines()) if ledger.exists() else 0


def test_a_step_repeats_until_its_outputs_say_done(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    after = """\
  - id: report
    action: notify.console
    with: {message: "covered after {{ steps.check.outputs.stdout | trim }} rounds"}
"""
    text = _runbook(
        ledger, '{every: 0.2s, until: "{{ outputs.stdout | trim | int >= 3 }}", max: 10}',
        after=after,
    )  # fmt: skip
    ws = make_workspace(tmp_path / "ws", {"coverage": text})
    done = irctl("run", "coverage", "--yes", "--unattended", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert _lines(ledger) == 3  # rounds 1 and 2 were not enough; round 3 was, and the last
    run_id = run_id_from(done)
    events = _events(ws, run_id)
    rounds = [e for e in events if e["type"] == "step.repeating"]
    assert [r["data"]["round"] for r in rounds] == [1, 2]  # type: ignore[index]
    succeeded = [e for e in events if e["type"] == "step.succeeded" and
                 e["data"]["step"] == "check"]  # type: ignore[index]  # fmt: skip
    assert succeeded[0]["data"]["rounds"] == 3  # type: ignore[index]
    assert "covered after 3 rounds" in done.stderr + done.stdout
    shown = irctl("transcript", "show", run_id, cwd=ws)
    assert "round 1 done" in shown.stdout, shown.stdout


def test_until_never_true_fails_after_max_rounds(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    text = _runbook(ledger, '{every: 0.1s, until: "{{ outputs.exit_code == 7 }}", max: 3}')
    ws = make_workspace(tmp_path / "ws", {"coverage": text})
    done = irctl("run", "coverage", "--yes", "--unattended", cwd=ws)
    assert done.returncode == 1, done.stderr
    assert _lines(ledger) == 3
    status = json.loads(irctl("status", run_id_from(done), "--json", cwd=ws).stdout)
    check = next(s for s in status["steps"] if s["step"] == "check")
    assert check["status"] == "failed"
    assert "still false after 3 round(s)" in check["error"]


def test_without_until_a_step_runs_max_rounds_and_succeeds(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ws = make_workspace(tmp_path / "ws", {"coverage": _runbook(ledger, "{every: 0.1s, max: 2}")})
    done = irctl("run", "coverage", "--yes", "--unattended", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert _lines(ledger) == 2


def _repeating(db: Path) -> list[dict[str, object]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            lines = [r[0] for r in conn.execute("SELECT line FROM irctl_events ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    found = [json.loads(line) for line in lines]
    return [e for e in found if e.get("type") == "step.repeating"]


def test_a_crash_between_rounds_neither_repeats_a_round_nor_restarts_the_wait(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    text = _runbook(ledger, '{every: 3s, until: "{{ round >= 3 }}", max: 5}')
    ws = make_workspace(tmp_path / "ws", {"coverage": text})
    db = ws / ".irctl" / "irctl.db"
    proc = subprocess.Popen(
        [IRCTL, "run", "coverage", "--yes", "--unattended"],
        cwd=ws, env={**os.environ, "IRCTL_WORKSPACE": str(ws)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and not _repeating(db):
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # mid-wait, after round 1 was recorded
        proc.wait(timeout=30)
    first = _repeating(db)
    assert len(first) == 1
    assert _lines(ledger) == 1
    due = datetime.fromisoformat(str(first[0]["data"]["next_at"]))  # type: ignore[index]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        run_id = conn.execute("SELECT id FROM irctl_runs").fetchone()[0]
    resumed = irctl("resume", run_id, "--unattended", cwd=ws)
    assert resumed.returncode == 0, resumed.stderr
    assert _lines(ledger) == 3  # round 1 was not run again; rounds 2 and 3 ran once each
    events = _events(ws, run_id)
    starts = [e for e in events if e["type"] == "step.started"]
    assert len(starts) == 3
    # round 2 waited until the time round 1 recorded, not a fresh 'every' from the resume
    second = datetime.fromisoformat(str(starts[1]["ts"]))
    assert second >= due
    assert (second - due).total_seconds() < 2.5


def test_validate_refuses_repeat_where_it_cannot_work(tmp_path: Path) -> None:
    bad = """\
irctl: 1
id: bad
title: Bad repeats
approvals:
  two: {quorum: 2}
steps:
  - id: approved
    action: notify.console
    with: {message: hi}
    approval: two
    repeat: {every: 1m, max: 3}
"""
    names = """\
irctl: 1
id: names
title: Names in until
steps:
  - id: check
    action: notify.console
    with: {message: hi}
    repeat: {every: 1m, until: "{{ output.ok and round > 1 }}", max: 3}
"""
    never = """\
irctl: 1
id: never
title: No wait
steps:
  - id: check
    action: notify.console
    with: {message: hi}
    repeat: {every: 0s, max: 3}
"""
    ws = make_workspace(tmp_path / "ws", {"bad": bad, "names": names, "never": never})
    for name, expected in (
        ("bad", "cannot carry an 'approval'"),
        ("names", "unknown name 'output'"),
        ("never", "'every' must be a positive duration"),
    ):
        found = irctl("validate", f"runbooks/{name}.yaml", cwd=ws)
        assert found.returncode != 0, found.stdout
        assert expected in found.stdout + found.stderr, found.stdout + found.stderr
    good = names.replace("output.ok", "outputs.ok")
    (ws / "runbooks" / "names.yaml").write_text(good)
    found = irctl("validate", "runbooks/names.yaml", cwd=ws)
    assert found.returncode == 0, found.stdout + found.stderr


def test_a_tabletop_drill_simulates_one_round(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    text = _runbook(ledger, '{every: 1h, until: "{{ outputs.exit_code == 7 }}", max: 4}')
    ws = make_workspace(tmp_path / "ws", {"coverage": text})
    done = irctl("run", "coverage", "--mode", "tabletop", "--yes", "--unattended", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert _lines(ledger) == 0  # simulated: nothing ran
    events = _events(ws, run_id_from(done))
    notes = [e["data"]["text"] for e in events if e["type"] == "step.note"]  # type: ignore[index]
    assert any("one simulated round stands for the repeat" in str(n) for n in notes), notes
