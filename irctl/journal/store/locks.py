"""The run executor lock: only the process that holds it executes a run's steps.

Owns :class:`RunLocks`.  The lock belongs to the process — an exclusive ``flock`` on a file
beside a SQLite store, a session-level advisory lock on a PostgreSQL connection of its own
— so a process that dies, even by SIGKILL, leaves no stale lock behind; whoever finds a run
busy is told who holds it (pid, host, PostgreSQL backend).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import RunBusy, StoreError, StoreUnavailable
from irctl.journal.store.faults import RETRY_FOR, Patience, lost
from irctl.journal.store.schema import first_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class RunLocks:
    """The executor locks of one store's runs (:meth:`irctl.journal.store.Store.run_lock`)."""

    def __init__(self, engine: Engine, *, retry: float = RETRY_FOR, where: str = "") -> None:
        self._engine = engine
        self._retry = retry  # how long a lost session's lock is tried for again
        self._where = where
        self._dialect = engine.dialect.name
        # The lock folder of a SQLite file store; in-memory SQLite uses the set of runs held
        # by this store instead.
        self._folder = _sqlite_lock_dir(engine) if self._dialect == "sqlite" else None
        self._held_guard = threading.Lock()
        self._held: set[str] = set()
        # PostgreSQL: run id -> the session holding its advisory lock (see check()).
        self._sessions: dict[str, Any] = {}

    @contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        """Hold the run's executor lock, or raise RunBusy at once if another holds it."""
        if self._dialect == "postgresql":
            with self._pg_run_lock(run_id):
                yield
        elif self._folder is not None:
            with _file_run_lock(run_id, self._folder):
                yield
        else:
            with self._held_guard:
                if run_id in self._held:
                    raise RunBusy(
                        f"run {run_id} is already being executed in this process "
                        f"(pid {os.getpid()}); wait for it or stop it"
                    )
                self._held.add(run_id)
            try:
                yield
            finally:
                with self._held_guard:
                    self._held.discard(run_id)

    @contextmanager
    def _pg_run_lock(self, run_id: str) -> Iterator[None]:
        import psycopg

        conn = self._pg_lock_session(run_id)
        try:
            with self._held_guard:
                self._sessions[run_id] = conn
            try:
                yield
            finally:
                with self._held_guard:
                    conn = self._sessions.pop(run_id, conn)
                with suppress(psycopg.Error):  # closing the session frees the lock anyway
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_advisory_key(run_id),))
        finally:
            with suppress(Exception):  # a broken connection may fail to close; nothing to do
                conn.close()

    def _pg_lock_session(self, run_id: str) -> Any:
        """A new session (never pooled) holding the run's advisory lock; RunBusy if another
        session holds it."""
        import psycopg

        engine = self._engine
        key = _advisory_key(run_id)
        try:
            cargs, cparams = engine.dialect.create_connect_args(engine.url)
            cparams.setdefault("connect_timeout", 10)
            # Names the holder in pg_stat_activity for whoever finds the run busy.
            cparams["application_name"] = f"irctl run lock pid={os.getpid()} host={_HOST}"[:63]
            conn: Any = engine.dialect.connect(*cargs, **cparams)  # new, never pooled
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot take the executor lock of run {run_id}: cannot reach the store: "
                f"{first_line(exc)}"
            ) from exc
        try:
            conn.autocommit = True
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not (row and row[0]):
                raise RunBusy(_busy_message(run_id, *_pg_holder(conn, key)))
        except psycopg.Error as exc:
            with suppress(Exception):
                conn.close()
            raise StoreError(
                f"cannot take the executor lock of run {run_id}: {first_line(exc)}"
            ) from exc
        except BaseException:
            with suppress(Exception):
                conn.close()
            raise
        return conn

    def check(self) -> None:
        """Make sure every run lock this store holds on PostgreSQL is still held.

        The lock lives as long as its session: a restarted server or a terminated backend
        takes it away, and another process may then take the run.  Called before each
        append to a held run (a look at the socket, no round trip, unless the server sent
        something) and when the append connection came back: a lost session is replaced
        by a new one that takes the lock again, and if someone else has it now, this
        process must not go on executing the run (StoreUnavailable; the run stays with the
        other process, or is resumed).
        """
        if not self._sessions:
            return
        with self._held_guard:
            held = list(self._sessions.items())
        for run_id, conn in held:
            if _session_alive(conn):
                continue
            with suppress(Exception):
                conn.close()
            try:
                again = self._lock_again(run_id)
            except RunBusy as exc:
                raise StoreUnavailable(
                    f"store unavailable: the executor lock of run {run_id} was lost with its "
                    f"database session, and another process holds it now ({exc.message}); "
                    "this process stops executing the run"
                ) from None
            except StoreError as exc:
                raise StoreUnavailable(
                    f"store unavailable: the executor lock of run {run_id} was lost with its "
                    f"database session and cannot be taken again: {exc.message}"
                ) from None
            with self._held_guard:
                if run_id in self._sessions:
                    self._sessions[run_id] = again
                    continue
            with suppress(Exception):  # let go meanwhile: the new session is not needed
                again.close()

    def _lock_again(self, run_id: str) -> Any:
        """A new session holding the run's lock, waiting out a server that is not back yet."""
        patience: Patience | None = None
        while True:
            try:
                return self._pg_lock_session(run_id)
            except StoreError as exc:
                if exc.__cause__ is None or not lost(exc.__cause__):
                    raise
                if patience is None:
                    what = f"cannot take the executor lock of run {run_id} again"
                    patience = Patience(self._retry, what, self._where)
                patience.pause(exc.__cause__)


def _session_alive(conn: Any) -> bool:
    """Is the lock's session still there?  An idle session the server has said nothing to
    is; anything on its socket (the notice of a terminated backend, the end of the
    connection) is looked at with a round trip."""
    import select

    import psycopg

    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    if not readable:
        return True
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@contextmanager
def _file_run_lock(run_id: str, folder: Path) -> Iterator[None]:
    import fcntl

    path = folder / f"{_lock_name(run_id)}.lock"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        kind = StoreUnavailable if exc.errno == errno.ENOSPC else StoreError  # a full disk: 74
        raise kind(
            f"cannot open the executor lock of run {run_id} ({path}): {exc.strerror or exc}"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(_busy_message(run_id, _read_holder(fd))) from None
        except OSError as exc:
            raise StoreError(f"cannot lock run {run_id} ({path}): {exc.strerror or exc}") from exc
        try:
            holder = json.dumps({"pid": os.getpid(), "host": _HOST, "since": _now()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode() + b"\n", 0)
        except OSError:
            pass  # the note is informative only; the flock is what counts
        try:
            yield
        finally:
            # Clear the note, then let go.  The file stays: unlinking a lock file
            # races with a process that has just opened it.
            with suppress(OSError):  # closing the descriptor releases the lock anyway
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


_HOST = socket.gethostname()
_SAFE_LOCK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _sqlite_lock_dir(engine: Engine) -> Path | None:
    """``<db file>.locks`` for a SQLite file database; None for an in-memory one."""
    url = engine.url
    database = url.database or ""
    if database.startswith("file:"):  # a SQLite URI filename
        if url.query.get("mode") == "memory" or "mode=memory" in database:
            return None
        database = database[len("file:") :].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    path = Path(database).absolute()  # fixed now: later chdir() calls change nothing
    return path.with_name(path.name + ".locks")


def _lock_name(run_id: str) -> str:
    """A file name for the run: its id when that is a plain name, else a digest of it."""
    if _SAFE_LOCK_NAME.fullmatch(run_id) and not run_id.endswith(".lock"):
        return run_id
    return "sha256-" + hashlib.sha256(run_id.encode()).hexdigest()


def _advisory_key(run_id: str) -> int:
    """A stable signed 64-bit PostgreSQL advisory lock key for a run."""
    digest = hashlib.sha256(b"irctl run executor\0" + run_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read_holder(fd: int) -> tuple[int, str] | None:
    """(pid, host) of a run lock file's holder, from the note it wrote (None if unknown)."""
    try:
        note = json.loads(os.pread(fd, 4096, 0) or b"null")
        return int(note["pid"]), str(note["host"])
    except (OSError, ValueError, TypeError, KeyError):
        return None  # not written yet, or being rewritten


def _pg_holder(conn: Any, key: int) -> tuple[tuple[int, str] | None, str]:
    """(pid, host) of the irctl process whose session holds an advisory lock, if
    known, and that session's PostgreSQL backend, from pg_locks / pg_stat_activity."""
    import psycopg

    try:
        row = conn.execute(
            "SELECT l.pid, a.application_name, host(a.client_addr) "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
    except psycopg.Error:
        return None, ""
    if row is None:
        return None, ""  # released in the meantime
    backend, app, addr = row
    found = re.fullmatch(r"irctl run lock pid=(\d+) host=(.*)", app or "")
    where = f" from {addr}" if addr else ""
    return (int(found[1]), found[2]) if found else None, f"PostgreSQL backend {backend}{where}"


def _busy_message(run_id: str, holder: tuple[int, str] | None, session: str = "") -> str:
    if holder is not None:
        pid, host = holder
        if pid == os.getpid() and host and _HOST.startswith(host):  # PG truncates the host
            return (
                f"run {run_id} is already being executed in this process (pid {pid}, "
                "by another thread or Store); wait for it or stop it"
            )
        who = f"pid {pid} on host {host}"
        if session:
            who += f"; {session}"
    else:
        who = f"another session: {session}" if session else ""
    by = f" ({who})" if who else ""
    return f"run {run_id} is being executed by another process{by}; wait for it or stop it"
