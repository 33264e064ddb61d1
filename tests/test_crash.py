"""Crash safety: SIGKILL the real ``irctl`` process at many points, resume, and check
that every step's side effect happened exactly once and no event was lost."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from irctl.journal.state import fold
from irctl.journal.store import Store
from irctl.testing import recorded_keys
from tests.helpers import IRCTL, irctl, make_workspace

MAIN = [f"s{n:02d}" for n in range(1, 13)]
TAIL = [f"t{n:02d}" for n in range(1, 7)]
FAN = [f"fan-{n}" for n in range(6)]


def crash_runbook() -> str:
    lines = [
        "irctl: 1",
        "kind: runbook",
        "id: crashy",
        "title: Crash test",
        "params:",
        "  out: {type: string}",
        "steps:",
    ]
    for key in MAIN:
        lines += [
            f"  - id: {key}",
            "    action: testing.record",
            f'    with: {{path: "{{{{ params.out }}}}", key: {key}}}',
        ]
    lines += [
        "  - id: block",
        "    parallel:",
        '      - {id: p1, action: testing.record, with: {path: "{{ params.out }}", key: p1}}',
        '      - {id: p2, action: testing.record, with: {path: "{{ params.out }}", key: p2}}',
        "  - id: fan",
        "    for_each: [0, 1, 2, 3, 4, 5]",
        "    max_parallel: 2",
        "    action: testing.record",
        '    with: {path: "{{ params.out }}", key: "fan-{{ item }}"}',
        "  - id: unprobed",
        "    action: testing.record_noprobe",
        '    with: {path: "{{ params.out }}", key: unprobed}',
    ]
    for key in TAIL:
        lines += [
            f"  - id: {key}",
            "    action: testing.record",
            f'    with: {{path: "{{{{ params.out }}}}", key: {key}}}',
        ]
    return "\n".join(lines) + "\n"


EXPECTED = sorted([*MAIN, "p1", "p2", *FAN, "unprobed", *TAIL])


def _count(db: Path, run_id: str | None) -> int:
    if run_id is None or not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM irctl_events WHERE run_id = ?", (run_id,)
        ).fetchone()
    return int(row[0])


def _run_id(db: Path) -> str | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT id FROM irctl_runs ORDER BY created_at DESC").fetchone()
    except sqlite3.OperationalError:
        return None
    return str(row[0]) if row else None


def _status(db: Path, run_id: str) -> tuple[str, list[str], bool]:
    """How the run stands, as the journal proves it (read with the real store and fold)."""
    store = Store.open(f"sqlite:///{db}")
    try:
        state = fold(store.events(run_id))
    finally:
        store.close()
    return state.status, [s.key for s in state.waiting()], state.sealed_seq == state.last_seq - 1


def _kill_somewhere(proc: subprocess.Popen[bytes], db: Path, run_id: str | None, out: Path,
                    rng: random.Random) -> None:  # fmt: skip
    """SIGKILL ``proc`` at a chosen kind of instant (or let it end by itself)."""
    strategy = rng.choice(["events", "events", "effect", "delay"])
    start_events = _count(db, run_id)
    start_effects = len(recorded_keys(str(out)))
    target = start_events + rng.randint(1, 8)
    delay_until = time.monotonic() + rng.uniform(0.0, 0.6)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        run_id = run_id or _run_id(db)
        if strategy == "events" and _count(db, run_id) >= target:
            break
        if strategy == "effect" and len(recorded_keys(str(out))) > start_effects:
            break  # the side effect happened; its success may not be recorded yet
        if strategy == "delay" and time.monotonic() >= delay_until:
            break
        time.sleep(0.0005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_at_many_points_never_repeats_a_step(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    points: set[tuple[int, int, int]] = set()
    kills = 0
    runs = 0
    while len(points) < 100 and runs < 40:  # stops as soon as 100 distinct points are hit
        runs += 1
        ws = make_workspace(tmp_path / f"ws{runs}", {"crashy": crash_runbook()})
        db = ws / ".irctl" / "irctl.db"
        out = ws / "effects.txt"
        env = {**os.environ, "IRCTL_WORKSPACE": str(ws)}
        argv = [IRCTL, "run", "crashy", "-p", f"out={out}", "--yes", "--unattended"]
        run_id: str | None = None
        for _cycle in range(200):
            proc = subprocess.Popen(
                argv, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _kill_somewhere(proc, db, run_id, out, rng)
            run_id = run_id or _run_id(db)
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                points.add((runs, _count(db, run_id), len(recorded_keys(str(out)))))
            if run_id is None:
                continue  # killed before the run was recorded: start it again
            status, waiting, sealed = _status(db, run_id)
            if status in ("succeeded", "failed", "aborted") and sealed:
                break
            argv = [IRCTL, "resume", run_id, "--unattended"]
            if waiting:
                # An operator settles the in-doubt step by looking at the world, as a person would.
                (step,) = waiting
                key = step
                mark = "done" if key in recorded_keys(str(out)) else "retry"
                argv += ["--step", step, "--mark", mark, "--as", "tester"]
        assert run_id is not None
        status, _, sealed = _status(db, run_id)
        assert status == "succeeded"
        assert sealed
        effects = [k for k in recorded_keys(str(out)) if not k.startswith("fail ")]
        assert sorted(effects) == EXPECTED, f"run {runs}: a step ran twice or never"
        verified = irctl("transcript", "verify", run_id, cwd=ws)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    print(f"{kills} kills at {len(points)} distinct points over {runs} runs")
    assert kills >= 100, f"only {kills} kills"
    assert len(points) >= 100, f"only {len(points)} distinct kill points"


IN_DOUBT = """\
irctl: 1
id: doubtful
title: In doubt
steps:
  - id: slow
    action: shell.exec
    with: {argv: [sleep, "30"]}
  - id: ask
    action: manual.confirm
    with: {prompt: "Is the wallet drained?"}
"""


def _in_doubt(ws: Path, run_id: str) -> dict[str, tuple[str, str | None, bool]]:
    done = irctl("status", run_id, "--json", cwd=ws)
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)["steps"]
    return {s["step"]: (s["status"], s["waiting_for"], s["in_doubt"]) for s in steps}


def test_status_json_says_which_steps_are_in_doubt_after_a_crash(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"doubtful": IN_DOUBT})
    db = ws / ".irctl" / "irctl.db"
    proc = subprocess.Popen(
        [IRCTL, "run", "doubtful", "--yes", "--unattended"],
        cwd=ws, env={**os.environ, "IRCTL_WORKSPACE": str(ws)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            run_id = _run_id(db)
            if run_id is not None and _count(db, run_id) >= 3:  # created, started, step started
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                    lines = [r[0] for r in conn.execute("SELECT line FROM irctl_events")]
                if any('"step.started"' in line for line in lines):
                    break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # irctl and the sleep it started
        proc.wait(timeout=30)
    run_id = _run_id(db)
    assert run_id is not None
    # the process died while the step ran: it started and has no outcome
    assert _in_doubt(ws, run_id) == {"slow": ("running", None, True)}
    # shell.exec has no probe and is not idempotent: resuming waits for an operator's --mark
    resumed = irctl("resume", run_id, "--unattended", cwd=ws)
    assert resumed.returncode == 3, resumed.stderr
    assert _in_doubt(ws, run_id) == {"slow": ("waiting", "operator", True)}
    # marked done, the run goes on to a manual step, which waits for an answer: not in doubt
    marked = irctl(
        "resume", run_id, "--step", "slow", "--mark", "done", "--reason", "checked by hand",
        "--unattended", cwd=ws,
    )  # fmt: skip
    assert marked.returncode == 3, marked.stderr
    assert _in_doubt(ws, run_id) == {
        "slow": ("succeeded", None, False),
        "ask": ("waiting", "answer", False),
    }
