"""The run executor lock (``Store.run_lock``): one executor per run, across threads, Store
objects and processes, on SQLite and a real PostgreSQL server; a killed holder leaves no
stale lock behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from irctl.errors import RunBusy, StoreError
from irctl.journal.store import Store, _advisory_key
from tests.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[1]

# Generous: the machine may be loaded; the lock normally frees within milliseconds.
RELEASE_TIMEOUT = 20.0


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[Store, Store]]:
    """Two Store objects on one database, as two processes would have."""
    a, b = Store.open(store_url), Store.open(store_url)
    yield a, b
    a.close()
    b.close()


def test_a_second_holder_gets_run_busy_until_the_first_lets_go(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    with a.run_lock("r-1"):
        with pytest.raises(RunBusy) as busy, b.run_lock("r-1"):
            pytest.fail("two holders of one run lock")  # pragma: no cover
        message = str(busy.value)
        assert message == (
            f"run r-1 is already being executed in this process (pid {os.getpid()}, "
            "by another thread or Store); wait for it or stop it"
        )
        # Another run is independent.
        with b.run_lock("r-2"):
            pass
        # So is the same Store from another thread: no re-entrancy, no sharing.
        seen: list[BaseException] = []

        def other_thread() -> None:
            try:
                with a.run_lock("r-1"):
                    pass  # pragma: no cover
            except BaseException as exc:
                seen.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=60)
        assert len(seen) == 1
        assert isinstance(seen[0], RunBusy)
    # Released: either store can take it again, and again.
    with b.run_lock("r-1"):
        pass
    with a.run_lock("r-1"):
        pass


def test_the_lock_is_released_when_the_block_raises(stores: tuple[Store, Store]) -> None:
    a, b = stores
    with pytest.raises(ZeroDivisionError), a.run_lock("r-1"):
        _ = 1 / 0
    with b.run_lock("r-1"):
        pass
    with pytest.raises(KeyboardInterrupt), b.run_lock("r-1"):
        raise KeyboardInterrupt
    with a.run_lock("r-1"):
        pass


def test_run_ids_that_are_not_file_names_still_lock_separately(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    odd = ["../../escape", "r/1", "", "x" * 300, "r-1.lock", "ünï"]
    for run_id in odd:
        with a.run_lock(run_id), pytest.raises(RunBusy), b.run_lock(run_id):
            pass  # pragma: no cover
    with a.run_lock("r/1"), b.run_lock("r-1"), b.run_lock("../../escape"):
        pass


HOLDER = """
import subprocess, sys, time
from irctl.journal.store import Store

store = Store.open(sys.argv[1])
with store.run_lock(sys.argv[2]):
    # A child outliving its parent (an action's command) must not keep the lock.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("locked", child.pid, flush=True)
    time.sleep(600)
"""


def wait_until_free(store: Store, run_id: str) -> float:
    """Seconds until the run lock could be taken (fails after RELEASE_TIMEOUT)."""
    start = time.monotonic()
    while True:
        try:
            with store.run_lock(run_id):
                return time.monotonic() - start
        except RunBusy:
            if time.monotonic() - start > RELEASE_TIMEOUT:
                raise
            time.sleep(0.05)


def test_a_killed_holder_process_leaves_no_stale_lock(store_url: str) -> None:
    store = Store.open(store_url)
    grandchild = 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url, "r-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().split()
        assert line[:1] == ["locked"], holder.stderr and holder.stderr.read()
        grandchild = int(line[1])

        with pytest.raises(RunBusy) as busy, store.run_lock("r-1"):
            pytest.fail("the run is held by the other process")  # pragma: no cover
        message = str(busy.value)
        assert message.startswith(
            f"run r-1 is being executed by another process (pid {holder.pid} on host "
        )
        assert message.endswith("); wait for it or stop it")
        with store.run_lock("r-2"):  # other runs stay free
            pass

        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.wait(timeout=60)
        wait_until_free(store, "r-1")
        with store.run_lock("r-1"):  # and it stays ours while held
            other = Store.open(store_url)
            try:
                with pytest.raises(RunBusy), other.run_lock("r-1"):
                    pass  # pragma: no cover
            finally:
                other.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if grandchild:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        store.close()


# -- SQLite specifics -----------------------------------------------------------


def test_sqlite_lock_files_sit_next_to_the_database_private_and_name_the_holder(
    tmp_path: Path,
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    try:
        folder = tmp_path / "irctl.db.locks"
        with store.run_lock("r-1"):
            lock = folder / "r-1.lock"
            assert stat.S_IMODE(lock.stat().st_mode) == 0o600
            assert f'"pid": {os.getpid()}' in lock.read_text()
        assert lock.read_text() == ""  # the note is cleared on release
        with store.run_lock("../x"):
            pass
        assert all(p.parent == folder for p in folder.iterdir())
        assert not (tmp_path / "x.lock").exists()
    finally:
        store.close()


def test_sqlite_relative_path_locks_next_to_the_database_in_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open("sqlite:///.irctl/irctl.db", workspace=tmp_path)
    monkeypatch.chdir(REPO)
    try:
        with store.run_lock("r-1"):
            assert (tmp_path / ".irctl" / "irctl.db.locks" / "r-1.lock").is_file()
    finally:
        store.close()


def test_sqlite_unusable_lock_folder_is_a_store_error(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    try:
        (tmp_path / "irctl.db.locks").write_text("not a folder")
        failing = pytest.raises(StoreError, match=r"cannot open the executor lock of run r-1")
        with failing, store.run_lock("r-1"):
            pass  # pragma: no cover
    finally:
        store.close()


def test_in_memory_store_locks_per_store(tmp_path: Path) -> None:
    store = Store.open("sqlite:///:memory:")
    try:
        with store.run_lock("r-1"):
            seen: list[BaseException] = []

            def other_thread() -> None:
                try:
                    with store.run_lock("r-1"):
                        pass  # pragma: no cover
                except BaseException as exc:
                    seen.append(exc)

            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join(timeout=60)
            assert len(seen) == 1
            assert isinstance(seen[0], RunBusy)
            assert "run r-1 is already being executed in this process" in str(seen[0])
            with store.run_lock("r-2"):
                pass
        with pytest.raises(ValueError, match="boom"), store.run_lock("r-1"):
            raise ValueError("boom")
        with store.run_lock("r-1"):
            pass
    finally:
        store.close()
    assert not list(tmp_path.iterdir())  # no lock files for an in-memory store


# -- PostgreSQL specifics ---------------------------------------------------------


def test_advisory_key_is_a_stable_signed_64_bit_int() -> None:
    keys = {_advisory_key(f"r-{n}") for n in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert any(k < 0 for k in keys)
    assert _advisory_key("r-1") == _advisory_key("r-1")


def test_postgresql_lock_is_a_session_of_its_own_closed_on_exit(fresh_pg_url: str) -> None:
    from sqlalchemy import create_engine, text

    store = Store.open(fresh_pg_url)
    watcher = create_engine(fresh_pg_url)
    advisory = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    lockers = text(
        "SELECT application_name FROM pg_stat_activity "
        "WHERE application_name LIKE 'irctl run lock%'"
    )
    try:
        store.create_run(
            "r-1", runbook="rb", initiator="me", mode="live", incident=None, data={}
        )  # fmt: skip
        with store.run_lock("r-1"):
            store.append("r-1", [("run.note", {"text": "appends go on"})])
            with watcher.connect() as conn:
                assert conn.execute(advisory).scalar() == 1
                names = conn.execute(lockers).scalars().all()
            assert names == [f"irctl run lock pid={os.getpid()} host={socket.gethostname()}"[:63]]
        deadline = time.monotonic() + RELEASE_TIMEOUT
        while True:  # the lock's session ends on exit
            with watcher.connect() as conn:
                if conn.execute(lockers).scalars().all() == []:
                    break
            assert time.monotonic() < deadline, "the run lock session is still open"
            time.sleep(0.05)
        assert len(store.events("r-1")) == 2
    finally:
        watcher.dispose()
        store.close()


def test_postgresql_unreachable_at_lock_time_is_a_store_error(
    fresh_pg_url: str, pg_server: PostgresServer
) -> None:
    store = Store.open(fresh_pg_url)
    try:
        pg_server.drop_database(fresh_pg_url)  # gone after the store opened
        failing = pytest.raises(StoreError, match=r"cannot take the executor lock of run r-1")
        with failing, store.run_lock("r-1"):
            pass  # pragma: no cover
    finally:
        store.close()
