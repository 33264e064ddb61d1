"""A PostgreSQL store that goes away under a run, with the real ``irctl`` command: every
backend of the database terminated mid-run (the run reconnects, takes its lock again and
finishes, each step started once), and the server stopped for longer than ``store_retry``
(``store unavailable``, exit 74, and ``irctl resume`` finishes the run once it is back)."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from irctl.errors import RunBusy, StoreError, StoreUnavailable
from irctl.journal.store import Store
from irctl.testing import recorded_keys
from tests.helpers import IRCTL, irctl, make_workspace
from tests.pg_proxy import PgProxy
from tests.postgres import PostgresServer

STEPS = 16
SLOW = """\
irctl: 1
kind: runbook
id: slow
title: Steps that take a moment each
params:
  out: {type: string}
steps:
""" + "".join(
    f"  - id: s{n:02d}\n"
    "    action: testing.record\n"
    f'    with: {{path: "{{{{ params.out }}}}", key: s{n:02d}, delay: 0.15}}\n'
    for n in range(STEPS)
)
KEYS = [f"s{n:02d}" for n in range(STEPS)]


def _events(dsn: str) -> list[tuple[int, str, str]]:
    """(seq, type, line) of every event, read on a connection of the test's own."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT seq, type, line FROM irctl_events ORDER BY run_id, seq")
        return [(int(seq), str(kind), str(line)) for seq, kind, line in rows]


def _wait_for_events(dsn: str, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"irctl ended early: {proc.communicate()}")
        try:
            if len(_events(dsn)) >= count:
                return
        except psycopg.Error:
            pass  # the tables are not there yet
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} events after 60 s")


def _start_run(ws: Path, effects: Path) -> subprocess.Popen[str]:
    import os

    env = {**os.environ, "IRCTL_WORKSPACE": str(ws), "COLUMNS": "200"}
    env.pop("IRCTL_DEBUG", None)
    return subprocess.Popen(
        [IRCTL, "run", "slow", "-p", f"out={effects}", "--yes"],
        cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _started_once(dsn: str) -> None:
    """No step was started twice: one step.started per step, each step's effect once."""
    started = Counter(
        json.loads(line)["data"]["step"] for _, kind, line in _events(dsn) if kind == "step.started"
    )
    assert started == Counter(KEYS), started


def test_terminated_backends_mid_run_are_reconnected_and_each_step_runs_once(
    fresh_pg_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    ws = make_workspace(tmp_path / "ws", {"slow": SLOW}, store=fresh_pg_url,
                        extra="store_retry: 20\n")  # fmt: skip
    effects = tmp_path / "effects.txt"
    database = fresh_pg_url.rsplit("/", 1)[1]
    dsn = pg_server.dsn(database)
    proc = _start_run(ws, effects)
    try:
        terminated = 0
        for count in (6, 14, 22):  # three times, each while a step is running
            _wait_for_events(dsn, count, proc)
            with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchall()
            terminated += sum(1 for (done,) in rows if done)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert terminated >= 3  # the append connection and the run lock's session, at least
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err
    assert recorded_keys(str(effects)) == KEYS
    _started_once(dsn)
    run_id = json.loads(irctl("runs", "list", "--json", cwd=ws).stdout)[0]["run_id"]
    verified = irctl("transcript", "verify", run_id, "--ended", cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start again."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_server_gone_longer_than_store_retry_is_74_and_the_run_resumes(
    own_server: PostgresServer, tmp_path: Path
) -> None:
    url = own_server.create_database()
    dsn = own_server.dsn(url.rsplit("/", 1)[1])
    ws = make_workspace(tmp_path / "ws", {"slow": SLOW}, store=url, extra="store_retry: 1\n")
    effects = tmp_path / "effects.txt"
    proc = _start_run(ws, effects)
    try:
        _wait_for_events(dsn, 8, proc)
        own_server.halt()
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            own_server.start_again()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 74, out + err
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert error.startswith("error: store unavailable: "), error
    assert "over 1 s" in error
    done = recorded_keys(str(effects))
    assert 0 < len(done) < STEPS

    resumed = irctl("resume", _run_id(dsn), cwd=ws)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(recorded_keys(str(effects))) == KEYS  # the rest, and nothing twice
    _started_once_or_probed(dsn)
    verified = irctl("transcript", "verify", _run_id(dsn), "--ended", cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _run_id(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        (row,) = conn.execute("SELECT id FROM irctl_runs").fetchall()
    return str(row[0])


def _started_once_or_probed(dsn: str) -> None:
    """A step whose outcome was lost with the server was started once and then settled by
    its probe on resume: never started a second time."""
    events = [(kind, json.loads(line)["data"]) for _, kind, line in _events(dsn)]
    started = Counter(data["step"] for kind, data in events if kind == "step.started")
    assert set(started) == set(KEYS)
    assert max(started.values()) == 1, started


def test_a_store_call_while_the_server_is_down_waits_then_says_unavailable(
    own_server: PostgresServer,
) -> None:
    url = own_server.create_database()
    store = Store.open(url, retry=0.6)
    try:
        store.create_run("r-1", runbook="slow", initiator="alice", mode="live", incident=None,
                         data={})  # fmt: skip
        own_server.halt()
        try:
            for call in (
                lambda: store.append("r-1", [("run.note", {"n": 1})]),
                lambda: store.events("r-1"),
                store.runs,
            ):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=r"^store unavailable: cannot "):
                    call()
                assert time.monotonic() - started >= 0.5  # it waited before giving up
        finally:
            own_server.start_again()
        store.append("r-1", [("run.note", {"n": 2})])  # back: the same store goes on
        assert [e.seq for e in store.events("r-1")] == [1, 2]
    finally:
        store.close()


# -- conflicts PostgreSQL resolves by aborting one side --------------------------------------


def _waiting_on_a_lock(dsn: str, database: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = "
            "'Lock' AND query LIKE 'DELETE FROM irctl_used_once%%'",
            (database,),
        ).fetchone()
    return bool(row and row[0])


def test_a_deadlock_the_store_loses_is_retried_inside_the_store(
    fresh_pg_url: str, pg_server: PostgresServer
) -> None:
    """claim_once deletes expired keys, then inserts: another transaction holding one expired
    row and then reaching for the one the store locked first makes a deadlock, which
    PostgreSQL breaks by aborting the store's transaction (it waited first).  The store
    tries again and the claim succeeds; nobody sees the deadlock."""
    import threading

    database = fresh_pg_url.rsplit("/", 1)[1]
    dsn = pg_server.dsn(database)
    store = Store.open(fresh_pg_url, retry=20)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO irctl_used_once (key, expires) VALUES ('A', 1), ('B', 1)")
            (before,) = conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone() or (0,)
        other = psycopg.connect(dsn)  # one transaction, held open by the test
        result: dict[str, object] = {}

        def claim() -> None:
            try:
                result["claimed"] = store.claim_once("new", until=time.time() + 60)
            except Exception as exc:  # the test reports it below
                result["error"] = exc

        try:
            other.execute("SELECT key FROM irctl_used_once WHERE key = 'B' FOR UPDATE")
            worker = threading.Thread(target=claim)
            worker.start()
            deadline = time.monotonic() + 30
            while not _waiting_on_a_lock(pg_server.dsn(), database):
                assert time.monotonic() < deadline, "the store's DELETE never waited on B"
                time.sleep(0.02)
            other.execute("DELETE FROM irctl_used_once WHERE key = 'A'")  # waits on the store
            other.commit()
            worker.join(60)
        finally:
            other.close()
        assert result == {"claimed": True}, result
        with psycopg.connect(dsn, autocommit=True) as conn:
            (after,) = conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone() or (0,)
            keys = [k for (k,) in conn.execute("SELECT key FROM irctl_used_once ORDER BY key")]
        assert after == before + 1  # there was a deadlock, and the store was its victim
        assert keys == ["new"]
    finally:
        store.close()


# -- the run executor lock's session ---------------------------------------------------------


def _terminate_lock_sessions(pg_server: PostgresServer, database: str) -> int:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name LIKE 'irctl run lock%%'",
            (database,),
        ).fetchall()
        deadline = time.monotonic() + 30
        while admin.execute(  # gone: its end has reached the client's socket
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name LIKE 'irctl run lock%%'",
            (database,),
        ).fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    return sum(1 for (done,) in rows if done)


def test_an_executor_whose_lock_session_was_lost_takes_it_again_or_stops(
    fresh_pg_url: str, pg_server: PostgresServer
) -> None:
    database = fresh_pg_url.rsplit("/", 1)[1]
    first, second = Store.open(fresh_pg_url, retry=5), Store.open(fresh_pg_url, retry=5)
    try:
        first.create_run("r-1", runbook="slow", initiator="alice", mode="live", incident=None,
                         data={})  # fmt: skip
        with first.run_lock("r-1"):
            assert _terminate_lock_sessions(pg_server, database) == 1
            first.append("r-1", [("run.note", {"n": 1})])  # nobody took it: taken again
            with pytest.raises(RunBusy), second.run_lock("r-1"):
                pass  # the lock is held again by the first store's new session
            assert _terminate_lock_sessions(pg_server, database) == 1
            with second.run_lock("r-1"):  # another process takes the run meanwhile
                with pytest.raises(StoreUnavailable, match="another process holds it now"):
                    first.append("r-1", [("step.started", {"step": "s00"})])
                second.append("r-1", [("run.note", {"n": 2})])
        assert [e.data for e in second.events("r-1")[1:]] == [{"n": 1}, {"n": 2}]
    finally:
        first.close()
        second.close()


# -- a commit the client never heard of ------------------------------------------------------


def test_an_append_committed_before_the_connection_broke_is_not_recorded_twice(
    fresh_pg_url: str, pg_server: PostgresServer
) -> None:
    """The server commits the INSERT, and the connection breaks before its answer reaches
    irctl: the store reconnects, finds its own events there (the same hash at that seq) and
    returns them, instead of chaining them again after themselves."""
    proxy = PgProxy(pg_server.port)
    store = Store.open(proxy.url(fresh_pg_url.rsplit("/", 1)[1]), retry=10)
    try:
        store.create_run("r-1", runbook="slow", initiator="alice", mode="live", incident=None,
                         data={})  # fmt: skip
        store.append("r-1", [("run.note", {"n": 1})])
        proxy.cut_after = b"INSERT 0 "
        (made,) = store.append("r-1", [("step.started", {"step": "s00"})])
        assert proxy.cuts == 1  # the answer to that INSERT was lost
        store.append("r-1", [("step.succeeded", {"step": "s00"})])
        events = store.events("r-1")
        assert [(e.seq, e.type) for e in events] == [
            (1, "run.created"), (2, "run.note"), (3, "step.started"), (4, "step.succeeded"),
        ]  # fmt: skip
        assert (made.seq, made.hash) == (events[2].seq, events[2].hash)
    finally:
        store.close()
        proxy.close()


def test_a_run_created_before_the_connection_broke_is_not_refused_as_existing(
    fresh_pg_url: str, pg_server: PostgresServer
) -> None:
    proxy = PgProxy(pg_server.port)
    store = Store.open(proxy.url(fresh_pg_url.rsplit("/", 1)[1]), retry=10)
    try:
        proxy.cut_after = b"COMMIT"
        first = store.create_run("r-1", runbook="slow", initiator="alice", mode="live",
                                 incident=None, data={})  # fmt: skip
        assert proxy.cuts == 1
        assert [(e.seq, e.hash) for e in store.events("r-1")] == [(1, first.hash)]
        with pytest.raises(StoreError, match="run r-1 already exists"):  # still refused twice
            store.create_run("r-1", runbook="slow", initiator="alice", mode="live",
                             incident=None, data={})  # fmt: skip
    finally:
        store.close()
        proxy.close()
