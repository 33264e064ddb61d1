"""The event store against SQLite and a real PostgreSQL server (``store_url`` runs each
test once per backend): the hash chain, errors, durability, and several processes
appending to one run at the same time."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from irctl.errors import StoreError, StoreUnavailable, UsageError
from irctl.journal.events import GENESIS, RUN_CREATED, Event
from irctl.journal.store import SCHEMA_VERSION, Store
from irctl.runbook.render import sha256_hex
from tests.postgres import PostgresServer, free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    yield s
    s.close()


def new_run(store: Store, run_id: str = "r-1", **data: object) -> Event:
    return store.create_run(
        run_id, runbook="halt-withdrawals", initiator="alice", mode="live", incident=None,
        data=dict(data),
    )  # fmt: skip


def assert_chain(events: list[Event], run_id: str, count: int) -> None:
    """Seqs 1..count, each event's prev is the previous event's (recomputed) hash."""
    assert [e.seq for e in events] == list(range(1, count + 1))
    assert all(e.run == run_id for e in events)
    prev = GENESIS
    for event in events:
        assert event.prev == prev, f"chain broken at seq {event.seq}"
        assert event.hash == sha256_hex(event.line)
        prev = event.hash


# -- the journal ------------------------------------------------------------------


def test_append_and_read_back_a_hash_chain(store: Store) -> None:
    first = new_run(store, "r-1", runbook_digest="sha256:ab")
    assert (first.seq, first.type, first.prev) == (1, RUN_CREATED, GENESIS)
    made = store.append("r-1", [("run.started", {"attempt": 1})])
    made += store.append("r-1", [("step.started", {"step": "halt"}), ("step.succeeded", {})])
    made += store.append("r-1", [("run.succeeded", {"ünïcode": "✓"})])
    assert store.append("r-1", []) == []

    events = store.events("r-1")
    assert_chain(events, "r-1", 5)
    assert [e.type for e in events] == [
        RUN_CREATED, "run.started", "step.started", "step.succeeded", "run.succeeded",
    ]  # fmt: skip
    assert [e.line for e in events] == [first.line] + [e.line for e in made]
    assert [e.hash for e in events] == [first.hash] + [e.hash for e in made]
    assert events[2].data == {"step": "halt"}
    assert events[4].data == {"ünïcode": "✓"}
    assert list(store.lines("r-1", after=3)) == [events[3].line, events[4].line]
    assert store.events("r-1", after=5) == []


def test_from_line_recomputes_the_hash_from_the_bytes(store: Store) -> None:
    new_run(store)
    stored = store.events("r-1")[0]
    again = Event.from_line(stored.line)
    assert again == stored
    tampered = stored.line.replace('"type":"run.created"', '"type":"run.createe"')
    forged = Event.from_line(tampered)
    assert forged.hash == sha256_hex(tampered) != stored.hash


def test_runs_in_one_store_do_not_share_a_chain(store: Store) -> None:
    new_run(store, "r-a")
    new_run(store, "r-b")
    store.append("r-a", [("run.note", {"n": 1})])
    store.append("r-b", [("run.note", {"n": 2})])
    store.append("r-a", [("run.note", {"n": 3})])
    assert_chain(store.events("r-a"), "r-a", 3)
    assert_chain(store.events("r-b"), "r-b", 2)


# -- errors -------------------------------------------------------------------------


def test_duplicate_run_id_is_a_store_error(store: Store) -> None:
    new_run(store, "r-1")
    with pytest.raises(StoreError, match="run r-1 already exists"):
        new_run(store, "r-1")
    assert len(store.events("r-1")) == 1


def test_unknown_run_is_a_usage_error(store: Store) -> None:
    with pytest.raises(UsageError, match="no run r-404"):
        store.append("r-404", [("run.note", {})])
    with pytest.raises(UsageError, match="no run r-404"):
        store.events("r-404")
    assert store.get_run("r-404") is None


def test_find_run_by_id_or_prefix(store: Store) -> None:
    for run_id in ["r-abc1", "r-abc2", "r-abd", "r-ab"]:
        new_run(store, run_id)
    assert store.find_run("r-abd").id == "r-abd"
    assert store.find_run("r-abc1").id == "r-abc1"
    assert store.find_run("r-ab").id == "r-ab"  # exact match wins over prefixes
    assert store.find_run("r-abc2").runbook == "halt-withdrawals"
    with pytest.raises(UsageError, match="ambiguous"):
        store.find_run("r-abc")
    with pytest.raises(UsageError, match="no run 'r-x'"):
        store.find_run("r-x")
    with pytest.raises(UsageError, match="no run"):
        store.find_run("r-a%")  # LIKE wildcards are escaped
    with pytest.raises(UsageError, match="no run"):
        store.find_run("r-ab_1")


def test_runs_newest_first(store: Store) -> None:
    for run_id in ["r-1", "r-2", "r-3"]:
        new_run(store, run_id)
    rows = store.runs()
    assert [r.id for r in rows] == ["r-3", "r-2", "r-1"]
    assert [r.id for r in store.runs(limit=2)] == ["r-3", "r-2"]
    assert rows[0].initiator == "alice"
    assert rows[0].mode == "live"
    assert rows[0].incident is None
    assert store.get_run("r-2") == rows[1]


def test_durable_reopen(store_url: str) -> None:
    store = Store.open(store_url)
    new_run(store, "r-1")
    store.append("r-1", [("run.started", {}), ("step.started", {"step": "halt"})])
    before = store.events("r-1")
    store.close()

    again = Store.open(store_url)
    try:
        assert again.events("r-1") == before
        again.append("r-1", [("step.succeeded", {})])  # the chain continues after a reopen
        assert_chain(again.events("r-1"), "r-1", 4)
    finally:
        again.close()


def test_schema_newer_than_the_code_is_refused(store_url: str) -> None:
    Store.open(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE irctl_meta SET value = :v WHERE key = 'schema'"),
            {"v": str(SCHEMA_VERSION + 1)},
        )
    engine.dispose()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, made by a newer"):
        Store.open(store_url)


@pytest.mark.parametrize(
    "url", ["not a url", "://nowhere", "sqlite:/", "sqlite+nosuchdriver:///x.db"], ids=repr
)
def test_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match=r"store: (.* is not a database URL|cannot use)"):
        Store.open(url)


def test_unsupported_backend_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unsupported database 'mysql'"):
        Store.open("mysql://irctl@127.0.0.1/irctl")


def test_unreachable_postgres_is_a_clear_store_error_quickly() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        Store.open(f"postgresql+psycopg://irctl@127.0.0.1:{port}/irctl", retry=0.5)
    message = str(info.value)
    assert info.value.exit_code == 74
    assert message.startswith("store unavailable: cannot open the store: ")
    assert f"port {port} failed" in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert time.monotonic() - started < 30  # connect_timeout is 10 s; refused is immediate


def test_bare_postgresql_url_uses_psycopg(fresh_pg_url: str) -> None:
    store = Store.open(fresh_pg_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert store.engine.dialect.driver == "psycopg"
    finally:
        store.close()


def test_relative_sqlite_path_is_in_the_workspace(tmp_path: Path) -> None:
    store = Store.open("sqlite:///.irctl/irctl.db", workspace=tmp_path)
    try:
        new_run(store)
    finally:
        store.close()
    assert (tmp_path / ".irctl" / "irctl.db").is_file()


def test_in_memory_sqlite_works() -> None:
    store = Store.open("sqlite://")
    try:
        new_run(store)
        store.append("r-1", [("run.note", {})])
        assert_chain(store.events("r-1"), "r-1", 2)
    finally:
        store.close()


def test_a_lost_postgres_connection_is_waited_out_and_the_append_recorded_once(
    fresh_pg_url: str, pg_server: PostgresServer
) -> None:
    import psycopg

    store = Store.open(fresh_pg_url)
    try:
        new_run(store)
        store.append("r-1", [("run.note", {"n": 1})])
        database = fresh_pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
        store.append("r-1", [("run.note", {"n": 2})])  # reconnected, not refused
        store.append("r-1", [("run.note", {"n": 3})])
        events = store.events("r-1")
        assert_chain(events, "r-1", 4)
        assert [e.data for e in events[1:]] == [{"n": 1}, {"n": 2}, {"n": 3}]
    finally:
        store.close()


# -- several writers ------------------------------------------------------------------


def test_reading_while_appending_does_not_block(store: Store) -> None:
    new_run(store)
    store.append("r-1", [("run.note", {"n": i}) for i in range(5)])
    lines = store.lines("r-1")
    assert next(lines)  # a read transaction is open while we append
    store.append("r-1", [("run.note", {"n": 5})])
    assert len(list(lines)) >= 5
    assert_chain(store.events("r-1"), "r-1", 7)


def test_two_stores_on_one_database_interleave(store_url: str) -> None:
    one, two = Store.open(store_url), Store.open(store_url)
    try:
        new_run(one)
        for i in range(6):
            writer = one if i % 3 else two
            writer.append("r-1", [("run.note", {"i": i})] * (1 + i % 2))
        events = two.events("r-1")
        assert_chain(events, "r-1", 1 + 9)
    finally:
        one.close()
        two.close()


def test_threads_appending_to_one_run(store: Store) -> None:
    new_run(store)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                store.append("r-1", [("run.note", {"thread": n, "i": i})])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert_chain(store.events("r-1"), "r-1", 1 + 100)


WORKER = """
import sys
from irctl.journal.store import Store

url, run_id, worker, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = Store.open(url)
print("ready", flush=True)
sys.stdin.readline()  # start together
for i in range(count):
    store.append(run_id, [("run.note", {"worker": worker, "i": i})])
store.close()
print("done", flush=True)
"""


def test_processes_appending_to_one_run(store_url: str) -> None:
    procs, count = 4, 50
    store = Store.open(store_url)
    try:
        new_run(store)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, store_url, "r-1", f"w{n}", str(count)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            for n in range(procs)
        ]
        try:
            for w in workers:
                assert w.stdout is not None
                assert w.stdout.readline().strip() == "ready", w.stderr and w.stderr.read()
            outputs = [w.communicate("go\n", timeout=180) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        for w, (out, err) in zip(workers, outputs, strict=True):
            assert w.returncode == 0, err
            assert out.strip() == "done", err

        events = store.events("r-1")
        assert_chain(events, "r-1", 1 + procs * count)
        for n in range(procs):
            mine = [e.data["i"] for e in events if e.data.get("worker") == f"w{n}"]
            assert mine == list(range(count)), f"worker w{n}'s appends are lost or out of order"
    finally:
        store.close()


def test_seal_adds_a_checkpoint_of_the_true_head_in_the_same_transaction(store_url: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.identity import public_key_text
    from irctl.record.transcript import seal_fields, verify_run

    key = Ed25519PrivateKey.generate()
    store = Store.open(store_url)
    try:
        store.create_run(
            "r-seal", runbook="rb", initiator="me", mode="live", incident=None,
            data={"runbook_text": "x", "runbook_digest": "sha256:" + sha256_hex("x")},
        )  # fmt: skip
        other = Store.open(store_url)  # another writer appends meanwhile
        other.append("r-seal", [("run.note", {"text": "from elsewhere", "by": "bob"})])
        other.close()
        made = store.append(
            "r-seal", [("run.succeeded", {})],
            seal=lambda run, seq, head: seal_fields(run, seq, head, key),
        )  # fmt: skip
        assert [e.type for e in made] == ["run.succeeded", "checkpoint"]
        assert made[1].data["seq"] == made[0].seq == 3
        assert made[1].data["head"] == made[0].hash
        report = verify_run(store, "r-seal", [public_key_text(key)])
        assert report.ok, report.problems
        sealed_only = store.append(
            "r-seal", [], seal=lambda run, seq, head: seal_fields(run, seq, head, key)
        )
        assert [e.type for e in sealed_only] == ["checkpoint"]
        assert store.append("r-seal", []) == []
    finally:
        store.close()


def test_processes_opening_a_new_store_at_once_all_succeed(store_url: str) -> None:
    """The first opening creates the tables; others opening the same empty store at the same
    moment wait for it instead of failing on a concurrent CREATE TABLE."""
    import subprocess
    import sys

    code = (
        "import sys, time; from irctl.journal.store import Store; import sqlalchemy, psycopg; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); Store.open(sys.argv[1]).close()"
    )
    at = str(time.time() + 3)  # every process imported and waiting: then all open at once
    started = [
        subprocess.Popen(
            [sys.executable, "-c", code, store_url, at], stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in started]
    assert [p.returncode for p in started] == [0] * 6, errors
