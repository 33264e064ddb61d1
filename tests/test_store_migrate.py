"""``irctl store migrate --to URL``: a SQLite workspace with real runs (approvals, a secret, a
scheduled drill) copied into the test PostgreSQL, every stored line identical, every run
verifying there with ``irctl transcript verify`` and continuing there; a target that holds
runs is refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from irctl.identity import generate_private_key
from irctl.testing import recorded_keys
from tests.helpers import irctl
from tests.test_approvals import OPERATORS, approve, env, start, workspace
from tests.test_drill_report import QUICK_DRILL, QUICK_RUNBOOK

SECRET = "Migrate-Tok-5qv/81x"
SECRET_RUNBOOK = """\
irctl: 1
kind: runbook
id: secretive
title: A step that reads a secret
secrets:
  tok: env:MIGRATE_TOKEN
steps:
  - id: tell
    action: notify.console
    with: {message: "token {{ secrets.tok }}"}
"""


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    for name in OPERATORS:
        generate_private_key(folder / f"{name}.key")
    return folder


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


EVENTS = "SELECT run_id, seq, ts, type, line, hash FROM irctl_events ORDER BY run_id, seq"
RUNS = "SELECT id, runbook, created_at, initiator, mode, incident FROM irctl_runs ORDER BY id"
META = "SELECT key, value FROM irctl_meta WHERE key <> 'schema' ORDER BY key"


def test_migrate_a_sqlite_workspace_to_postgresql(
    tmp_path: Path, keys: Path, fresh_pg_url: str
) -> None:
    ws = workspace(tmp_path, keys)
    (ws / "runbooks" / "secretive.yaml").write_text(SECRET_RUNBOOK)
    (ws / "runbooks" / "quick.yaml").write_text(QUICK_RUNBOOK)
    (ws / "drills").mkdir(exist_ok=True)
    (ws / "drills" / "quick-drill.yaml").write_text(QUICK_DRILL)
    team = env(keys)

    done = start(ws, keys)  # approved by both groups, then it runs to the end
    for who in ("bob", "alice"):
        assert approve(ws, keys, done, who, "--yes").returncode == 0
    assert irctl("resume", done, cwd=ws, env=team).returncode == 0
    waiting = start(ws, keys)  # one approval of two: it waits, and goes on after the move
    assert approve(ws, keys, waiting, "bob", "--yes").returncode == 0
    secretive = irctl("run", "secretive", "--yes", cwd=ws, env={**team, "MIGRATE_TOKEN": SECRET})
    assert secretive.returncode == 0, secretive.stderr
    scheduled = irctl("drill", "schedule", "quick-drill", "--at", "+1h", cwd=ws, env=team)
    assert scheduled.returncode == 0, scheduled.stderr

    sqlite_url = f"sqlite:///{ws / '.irctl' / 'irctl.db'}"
    source_events, source_runs = _rows(sqlite_url, EVENTS), _rows(sqlite_url, RUNS)
    assert len(source_runs) == 3
    assert _rows(sqlite_url, META), "the secret's run has a salt in irctl_meta"

    moved = irctl("store", "migrate", "--to", fresh_pg_url, "--json", cwd=ws, env=team)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    report = json.loads(moved.stdout)
    assert (report["runs"], report["events"], report["verified"]) == (3, len(source_events), 3)
    assert (report["broken"], report["unverified_in_source"], report["ok"]) == ({}, {}, True)
    assert report["tables"]["irctl_scheduler_jobs"] == 1
    assert "copied 3/3 runs" in moved.stderr
    assert "verified 3/3 runs" in moved.stderr
    assert _rows(fresh_pg_url, EVENTS) == source_events  # byte for byte, the same seqs and hashes
    assert _rows(fresh_pg_url, RUNS) == source_runs
    assert _rows(fresh_pg_url, META) == _rows(sqlite_url, META)
    assert _rows(fresh_pg_url, "SELECT value FROM irctl_meta WHERE key = 'schema'") == [("2",)]

    on_pg = {**team, "IRCTL_STORE": fresh_pg_url}
    for run_id in (done, waiting, run_id_of(sqlite_url, "secretive")):
        verified = irctl("transcript", "verify", run_id, cwd=ws, env=on_pg)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    checked = irctl("transcript", "check-secret", run_id_of(sqlite_url, "secretive"), "tok",
                    cwd=ws, env=on_pg, input=SECRET)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr  # the salt came across
    drills = json.loads(irctl("drill", "list", "--json", cwd=ws, env=on_pg).stdout)
    assert [d["next_run"] for d in drills if d["drill"] == "quick-drill"] != [None]

    # The waiting run goes on in PostgreSQL: the chain continues from the copied head.
    again = irctl("approve", waiting, "sweep-to-cold", "--as", "alice", "--yes", cwd=ws,
                  env=on_pg)  # fmt: skip
    assert again.returncode == 0, again.stderr
    resumed = irctl("resume", waiting, cwd=ws, env=on_pg)
    assert resumed.returncode == 0, resumed.stderr
    final = irctl("transcript", "verify", waiting, "--ended", cwd=ws, env=on_pg)
    assert final.returncode == 0, final.stdout + final.stderr
    assert recorded_keys(str(ws / "out.txt")).count("sweep to 0xC01D") == 2  # once per run

    before = _rows(fresh_pg_url, EVENTS)
    refused = irctl("store", "migrate", "--to", fresh_pg_url, cwd=ws, env=team)
    assert refused.returncode == 2, refused.stderr
    assert "already holds 3 runs: migrate only into a store with none" in refused.stderr
    assert "nothing was written" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _rows(fresh_pg_url, EVENTS) == before


def run_id_of(url: str, runbook: str) -> str:
    (row,) = _rows(url, f"SELECT id FROM irctl_runs WHERE runbook = '{runbook}'")  # noqa: S608
    return str(row[0])


def test_migrate_into_a_bad_target_writes_nothing(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    start(ws, keys)
    target = tmp_path / "copy.db"
    Path(target).write_text("not a database")
    broken = irctl("store", "migrate", "--to", f"sqlite:///{target}", cwd=ws, env=env(keys))
    assert broken.returncode in {1, 2}, broken.stderr
    assert "Traceback" not in broken.stderr
    assert target.read_text() == "not a database"


def test_a_run_that_does_not_verify_is_copied_as_it_is_and_named(
    tmp_path: Path, keys: Path
) -> None:
    """A run edited in the source (and a source still at schema version 1) is copied byte for
    byte; the copy is made at this irctl's version, and the run that does not verify in the
    source either is named, without failing the migration."""
    import sqlite3

    ws = workspace(tmp_path, keys)
    edited, intact = start(ws, keys), start(ws, keys)
    source = ws / ".irctl" / "irctl.db"
    with sqlite3.connect(source) as db:
        db.execute(
            "UPDATE irctl_events SET line = replace(line, 'sweep to 0xC01D', 'sweep to 0xBAD') "
            "WHERE run_id = ? AND type = 'approval.requested'",
            (edited,),
        )
        db.execute("UPDATE irctl_meta SET value = '1' WHERE key = 'schema'")
    db.close()
    target = tmp_path / "copy.db"
    moved = irctl("store", "migrate", "--to", f"sqlite:///{target}", "--json", cwd=ws,
                  env=env(keys))  # fmt: skip
    assert moved.returncode == 0, moved.stdout + moved.stderr
    report = json.loads(moved.stdout)
    assert (report["runs"], report["verified"], report["broken"]) == (2, 1, {})
    assert list(report["unverified_in_source"]) == [edited]
    target_url = f"sqlite:///{target}"
    assert _rows(target_url, EVENTS) == _rows(f"sqlite:///{source}", EVENTS)
    assert _rows(target_url, "SELECT value FROM irctl_meta WHERE key = 'schema'") == [("2",)]
    plain = irctl("store", "migrate", "--to", f"sqlite:///{tmp_path / 'again.db'}", cwd=ws,
                  env=env(keys))  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert f"warning: run {edited} does not verify in the source either" in " ".join(
        plain.stderr.split()
    )
    assert "verified on the target: 1 of 2 runs" in plain.stdout
    on_copy = {**env(keys), "IRCTL_STORE": target_url}
    assert irctl("transcript", "verify", intact, cwd=ws, env=on_copy).returncode == 0
    assert irctl("transcript", "verify", edited, cwd=ws, env=on_copy).returncode == 1


def test_a_source_written_to_during_the_copy_leaves_the_target_empty(tmp_path: Path) -> None:
    from irctl.errors import StoreError
    from irctl.journal.store import Store

    source = Store.open(f"sqlite:///{tmp_path / 'source.db'}")
    target = Store.open_empty(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        for n in range(3):
            source.create_run(f"r-{n}", runbook="x", initiator="alice", mode="live",
                              incident=None, data={})  # fmt: skip

        def someone_appends(done: int, total: int) -> None:
            if done == 1:  # another irctl process records while the copy is under way
                source.append("r-0", [("run.note", {"text": "late"})])

        with pytest.raises(StoreError, match=r"the store changed while it was copied \(0 runs "
                           r"and 1 events more\).*nothing was copied"):  # fmt: skip
            source.copy_to(target, progress=someone_appends)
        assert target.counts() == (0, 0)
        assert target.runs() == []
    finally:
        source.close()
        target.close()
