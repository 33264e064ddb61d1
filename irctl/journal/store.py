"""The event store: an append-only, hash-chained journal per run.

SQLAlchemy Core over SQLite (the default, a file in the workspace, WAL mode,
``synchronous=FULL`` so a commit survives a power cut) or PostgreSQL (for
teams).  Several processes — responders, ``irctl serve`` replicas — may append
to the same run; the database keeps the journal a gap-free, unbroken chain:

* SQLite: each append is one ``BEGIN IMMEDIATE`` transaction (the database's
  single writer lock) that reads the run's head, inserts and commits.
* PostgreSQL: each append is one committed ``INSERT`` of the events after the
  head this store knows.  The primary key ``(run_id, seq)`` rejects the insert
  if anyone appended in between (sequence numbers are contiguous, so a stale
  head always collides on ``seq``); the store then re-reads the head and
  rebuilds the events.  No lock is held across round trips, and the common case
  — this store made the last append — costs one round trip.

The hot path (``append``) runs on one dedicated DBAPI connection per store,
taken out of the pool on first use, with fixed SQL text (no statement compiling
per call); everything else goes through SQLAlchemy Core.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import CorruptEvent, NoStore, RunBusy, StoreError, UsageError
from irctl.journal.events import CHECKPOINT, GENESIS, RUN_CREATED, Event

# seal(run_id, seq, hash) -> the data of a checkpoint sealing that event
Seal = Callable[[str, int, str], dict[str, Any]]
#: An event to append: ``(type, data)``, or ``(type, data, ts)`` for one that happened earlier
#: than it is appended (the engine's outcomes committed with the next event).
Item = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import PoolProxiedConnection

SCHEMA_VERSION = 1
_SCHEMA_LOCK = 0x697263746C  # the PostgreSQL advisory lock held while creating the tables

# How long an append may keep losing races to other writers of the same run.
_CONTENTION_TIMEOUT = 60.0

_COLUMNS = "(run_id, seq, ts, type, line, hash)"
_HEAD_SQL = {
    "sqlite": "SELECT seq, hash FROM irctl_events WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
    "postgresql": "SELECT seq, hash FROM irctl_events WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
}
_INSERT_SQLITE = f"INSERT INTO irctl_events {_COLUMNS} VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608


_SQLITE_ROWS_PER_STATEMENT = 500  # 6 variables a row, far below SQLite's limit


def _insert_sqlite(count: int) -> str:
    """One multi-row INSERT: a single statement, so atomic in autocommit."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * count)
    return f"INSERT INTO irctl_events {_COLUMNS} VALUES {values}"  # noqa: S608 - fixed text


def _insert_pg(count: int) -> str:
    """One multi-row INSERT: a single statement, so atomic even in autocommit."""
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * count)
    return f"INSERT INTO irctl_events {_COLUMNS} VALUES {values}"  # noqa: S608 - fixed text


class HeadMoved(Exception):  # a signal to the engine, never shown to a user
    """Someone appended after the head the caller verified: read and check their events,
    then append again (the store never chains the caller's events onto rows it has not seen)."""


@dataclass(frozen=True)
class RunRow:
    id: str
    runbook: str
    created_at: str
    initiator: str
    mode: str
    incident: str | None


def _tables() -> Any:
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text

    meta = MetaData()
    Table(
        "irctl_meta", meta,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )  # fmt: skip
    Table(
        "irctl_runs", meta,
        Column("id", String(64), primary_key=True),
        Column("runbook", String(200), nullable=False),
        Column("created_at", String(32), nullable=False),
        Column("initiator", String(200), nullable=False),
        Column("mode", String(16), nullable=False),
        Column("incident", String(200), nullable=True),
    )  # fmt: skip
    Table(
        "irctl_events", meta,
        Column("run_id", String(64), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("ts", String(32), nullable=False),
        Column("type", String(64), nullable=False),
        Column("line", Text, nullable=False),
        Column("hash", String(64), nullable=False),
    )  # fmt: skip
    Table(
        "irctl_used_once", meta,  # nonces, request signatures: see Store.claim_once
        Column("key", String(200), primary_key=True),
        Column("expires", Float, nullable=False),
    )  # fmt: skip
    return meta


class Store:
    """Open with :meth:`open`; every method is safe to call from several threads."""

    def __init__(self, engine: Engine, *, dedicated: bool = True, create: bool = True) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._meta = _tables()
        self._runs = self._meta.tables["irctl_runs"]
        self._events = self._meta.tables["irctl_events"]
        self._used_once = self._meta.tables["irctl_used_once"]
        self._lock = threading.Lock()
        self._insert_sql = self._events.insert()
        # SQLite: BEGIN IMMEDIATE for transactions opened through this engine.
        self._writer = engine.execution_options(irctl_write=True)
        # The append connection; ``dedicated`` takes it out of the pool (False for
        # SQLite :memory:, whose single pooled connection *is* the database).
        self._dedicated = dedicated
        self._wconn: PoolProxiedConnection | None = None
        self._wdriver: Any = None  # its sqlite3 / psycopg connection
        self._wpid = 0
        # PostgreSQL: run id -> (seq, hash) of the last event this store saw.
        self._heads: dict[str, tuple[int, str]] = {}
        # Run executor locks (see run_lock): the lock folder of a SQLite file store;
        # in-memory SQLite uses the set of runs held by this Store instead.
        self._lock_dir = _sqlite_lock_dir(engine) if self.dialect == "sqlite" else None
        self._held_guard = threading.Lock()
        self._held: set[str] = set()
        #: Opened to read only (``Store.open(..., create=False)``): nothing was created or written.
        self.readonly = not create
        if create:
            self._create()
        else:
            self._check()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        workspace: Path | None = None,
        create: bool = True,
        origin: str | None = None,
    ) -> Store:
        """Open (creating if needed) the store at a SQLAlchemy URL.

        A relative SQLite path is relative to ``workspace``.

        With ``create=False`` the store is opened to read only: a store that does not
        exist (no SQLite file; a database without irctl's tables) is :class:`NoStore`,
        and nothing is created or written — no folder, no file, no table, no schema row,
        no PRAGMA that writes — so a copy of a store on read-only media can be read.
        ``origin`` says where ``url`` came from (``from IRCTL_STORE``), for messages.
        """
        try:
            from sqlalchemy import create_engine, event
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError
        except ImportError as exc:  # pragma: no cover - SQLAlchemy is a core dependency
            raise StoreError(f"SQLAlchemy is not installed: {exc}") from exc
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise UsageError(
                f"store: {url!r} is not a database URL "
                "(expected e.g. sqlite:///.irctl/irctl.db or postgresql://user@host/db)"
            ) from exc
        backend = parsed.get_backend_name()
        dedicated = True
        origin_note = f" ({origin})" if origin else ""
        where = parsed.render_as_string(hide_password=True)  # the store, for messages
        a_file = False  # a SQLite database in a file (not in memory)
        if backend == "sqlite":
            database = parsed.database or ""
            kwargs: dict[str, Any] = {}
            if database and database != ":memory:" and not database.startswith("file:"):
                path = Path(database)
                if not path.is_absolute() and workspace is not None:
                    path = workspace / path
                where, a_file = str(path.absolute()), True
                if not create:
                    uri = _sqlite_reader_uri(path.absolute(), origin_note)
                    kwargs["creator"] = lambda: _sqlite3_connect(uri)
                else:
                    try:
                        path.parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise StoreError(
                            f"cannot create the store directory {path.parent}: {exc}"
                        ) from exc
                parsed = parsed.set(database=str(path))
            elif not database or database == ":memory:":
                from sqlalchemy.pool import StaticPool

                kwargs["poolclass"] = StaticPool  # one connection, or each sees its own database
                dedicated = False
            elif not create:  # a SQLite URI filename (sqlite:///file:NAME?...&uri=true)
                named = Path(database[len("file:") :].split("?", 1)[0])
                a_file = "mode=memory" not in database
                if a_file and not named.exists():
                    raise _no_file(named.absolute(), origin_note)
            try:
                engine = create_engine(
                    parsed, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs
                )
            except (ImportError, NoSuchModuleError, ArgumentError) as exc:
                raise UsageError(f"store: cannot use {url!r}: {exc}") from exc

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cursor = dbapi_conn.cursor()
                if create:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=FULL")
                else:
                    # A reader sets nothing that is stored in the file (journal_mode needs
                    # write access) and refuses to write, whatever the URI allows.
                    cursor.execute("PRAGMA query_only=1")
                cursor.execute("PRAGMA busy_timeout=60000")
                # Checkpoint every 100 pages (SQLite's default: 1,000): the log is then
                # rewritten in place instead of growing for hundreds of commits, and a
                # commit's fsync that need not also record a longer file is ~40 µs cheaper.
                cursor.execute("PRAGMA wal_autocheckpoint=100")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Any) -> None:
                # Writers take the write lock up front (no deadlock-prone lock upgrade);
                # readers use a plain deferred transaction, which in WAL mode never blocks.
                write = conn.get_execution_options().get("irctl_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        elif backend == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")  # irctl[postgres] ships it
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = 10  # an unreachable server fails, never hangs
            try:
                engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
            except (ImportError, NoSuchModuleError) as exc:
                raise StoreError(
                    f"the PostgreSQL driver for {parsed.drivername!r} is not installed; "
                    "fix: pip install 'irctl[postgres]' (and use a postgresql+psycopg:// URL)"
                ) from exc
            except ArgumentError as exc:
                raise UsageError(f"store: cannot use {url!r}: {exc}") from exc
            if not create:

                @event.listens_for(engine, "connect")
                def _read_only(dbapi_conn: Any, _record: Any) -> None:
                    # Every transaction of a reader's session is READ ONLY: a write fails.
                    autocommit = dbapi_conn.autocommit
                    dbapi_conn.autocommit = True
                    dbapi_conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                    dbapi_conn.autocommit = autocommit

        else:
            raise UsageError(f"store: unsupported database '{backend}' (use sqlite or postgresql)")
        try:
            return cls(engine, dedicated=dedicated, create=create)
        except _NoTables:
            engine.dispose()
            if a_file:
                raise NoStore(
                    f"{where}{origin_note} is not an irctl store: it has no irctl tables; "
                    "check the path (a copy of a store needs the -wal file beside the original "
                    "copied with it, if there was one)",
                    location=where,
                    absent=False,
                ) from None
            raise NoStore(
                f"no irctl store in {where}{origin_note}: the database has no irctl tables, "
                "so nothing has been recorded there; check the URL",
                location=where,
                absent=False,
            ) from None
        except BaseException:
            engine.dispose()
            raise

    def _create(self) -> None:
        from sqlalchemy import inspect, select
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._writer.begin() as conn:
                if self.dialect == "postgresql":
                    # Several processes opening a new store at once: one creates the tables,
                    # the others wait here, then find them (SQLite's BEGIN IMMEDIATE does this).
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                present = set(inspect(conn).get_table_names())
                lost = {"irctl_runs", "irctl_events"} - present
                if "irctl_meta" in present and lost:
                    # A store that was set up has lost its journal: never start an empty one
                    # over it, which would hide that every recorded run is gone.
                    raise StoreError(
                        f"the store has lost its {' and '.join(sorted(lost))} table: it was "
                        "damaged or edited; restore it from a backup"
                    )
                self._meta.create_all(conn, checkfirst=True)
                meta = self._meta.tables["irctl_meta"]
                row = conn.execute(select(meta.c.value).where(meta.c.key == "schema")).first()
                if row is None:
                    conn.execute(meta.insert().values(key="schema", value=str(SCHEMA_VERSION)))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(
                        f"the store uses schema {row[0]}, newer than this irctl "
                        f"({SCHEMA_VERSION}); upgrade irctl"
                    )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store: {_brief(exc)}") from exc

    def _check(self) -> None:
        """What ``_create`` checks, by reading only: the tables are there, the schema is known."""
        from sqlalchemy import inspect, select
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                present = set(inspect(conn).get_table_names())
                if not present & {"irctl_meta", "irctl_runs", "irctl_events"}:
                    raise _NoTables
                lost = {"irctl_runs", "irctl_events"} - present
                if lost:
                    raise StoreError(
                        f"the store has lost its {' and '.join(sorted(lost))} table: it was "
                        "damaged or edited; restore it from a backup"
                    )
                if "irctl_meta" in present:
                    meta = self._meta.tables["irctl_meta"]
                    row = conn.execute(
                        select(meta.c.value).where(meta.c.key == "schema")
                    ).first()
                    if row is not None and int(row[0]) > SCHEMA_VERSION:
                        raise StoreError(
                            f"the store uses schema {row[0]}, newer than this irctl "
                            f"({SCHEMA_VERSION}); upgrade irctl"
                        )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store: {_brief(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            self._drop_wconn()
        self.engine.dispose()

    # -- the run executor lock ---------------------------------------------------

    @contextmanager
    def run_lock(self, run_id: str) -> Iterator[None]:
        """Hold the run's executor lock, or raise RunBusy at once if another process holds it.

        Only the holder may execute the run's steps.  The lock belongs to the
        process (an OS file lock or a database session), so a process that dies,
        even by SIGKILL, leaves no stale lock behind:

        * SQLite file: an exclusive ``flock`` on ``<db file>.locks/<run>.lock``,
          which also names the holder (pid, host) for the message.
        * PostgreSQL: a session-level ``pg_try_advisory_lock`` on a connection of
          its own, held open for the duration.
        * SQLite in memory: the run is marked held in this Store.

        Two holders conflict even inside one process (other thread, other Store),
        except for in-memory stores, which no one else can see.  Not re-entrant.
        """
        if self.dialect == "postgresql":
            with self._pg_run_lock(run_id):
                yield
        elif self._lock_dir is not None:
            with self._file_run_lock(run_id, self._lock_dir):
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
    def _file_run_lock(self, run_id: str, folder: Path) -> Iterator[None]:
        import fcntl

        path = folder / f"{_lock_name(run_id)}.lock"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StoreError(
                f"cannot open the executor lock of run {run_id} ({path}): {exc.strerror or exc}"
            ) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusy(_busy_message(run_id, _read_holder(fd))) from None
            except OSError as exc:
                raise StoreError(
                    f"cannot lock run {run_id} ({path}): {exc.strerror or exc}"
                ) from exc
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

    @contextmanager
    def _pg_run_lock(self, run_id: str) -> Iterator[None]:
        import psycopg

        key = _advisory_key(run_id)
        try:
            cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
            cparams.setdefault("connect_timeout", 10)
            # Names the holder in pg_stat_activity for whoever finds the run busy.
            cparams["application_name"] = f"irctl run lock pid={os.getpid()} host={_HOST}"[:63]
            conn: Any = self.engine.dialect.connect(*cargs, **cparams)  # new, never pooled
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot take the executor lock of run {run_id}: cannot reach the store: "
                f"{_first_line(exc)}"
            ) from exc
        try:
            try:
                conn.autocommit = True
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if not (row and row[0]):
                    raise RunBusy(_busy_message(run_id, *_pg_holder(conn, key)))
            except psycopg.Error as exc:
                raise StoreError(
                    f"cannot take the executor lock of run {run_id}: {_first_line(exc)}"
                ) from exc
            try:
                yield
            finally:
                with suppress(psycopg.Error):  # closing the session frees the lock anyway
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            with suppress(Exception):  # a broken connection may fail to close; nothing to do
                conn.close()

    # -- writing ---------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        runbook: str,
        initiator: str,
        mode: str,
        incident: str | None,
        data: dict[str, Any],
    ) -> Event:
        """Record a new run and its ``run.created`` event in one transaction."""
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        first = Event.make(run_id, 1, RUN_CREATED, data, GENESIS)
        try:
            with self._lock, self._writer.begin() as conn:
                run = {
                    "id": run_id, "runbook": runbook, "created_at": first.ts,
                    "initiator": initiator, "mode": mode, "incident": incident,
                }  # fmt: skip
                conn.execute(self._runs.insert().values(**run))
                conn.execute(self._insert_sql, [_row(first)])
        except IntegrityError as exc:
            raise StoreError(f"run {run_id} already exists") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record run {run_id}: {_brief(exc)}") from exc
        self._remember(run_id, first)
        return first

    def append(
        self,
        run_id: str,
        items: Sequence[Item],
        *,
        seal: Seal | None = None,
        expect: tuple[int, str] | None = None,
    ) -> list[Event]:
        """Append events to a run, durably, in one transaction; returns them hashed.

        With ``seal``, a ``checkpoint`` event is added in the same transaction:
        ``seal(run_id, seq, hash)`` of the event it follows gives its data, so a
        checkpoint always seals the true head even while others append.

        With ``expect`` (the seq and hash of the last event the caller verified), the events
        are chained onto exactly that event: if someone appended after it, nothing is written
        and :class:`HeadMoved` is raised, so a caller never signs rows it has not checked.
        """
        if not items and seal is None:
            return []
        with self._lock:
            if self.dialect == "sqlite":
                return self._append_sqlite(run_id, items, seal, expect)
            return self._append_pg(run_id, items, seal, expect)

    def _append_sqlite(
        self, run_id: str, items: Sequence[Item], seal: Seal | None, expect: tuple[int, str] | None
    ) -> list[Event]:
        """One INSERT statement, committed on its own (autocommit), from the head last seen.

        If another process appended since, the (run_id, seq) primary key refuses
        the insert: re-read the head and chain again.  One statement instead of
        BEGIN / SELECT / INSERT / COMMIT keeps a durable append near one fsync.
        """
        import sqlite3

        deadline = 0.0
        conflicts = 0
        try:
            conn = self._driver()
            while True:
                head = expect or self._known_head(conn, run_id)
                made = _chain(run_id, head[0], head[1], items, seal)
                try:
                    if len(made) <= _SQLITE_ROWS_PER_STATEMENT:
                        conn.execute(
                            _insert_sqlite(len(made)), [v for e in made for v in _values(e)]
                        )
                    else:
                        with conn:  # a larger batch: one explicit transaction
                            conn.execute("BEGIN IMMEDIATE")
                            conn.executemany(_INSERT_SQLITE, [_values(e) for e in made])
                except sqlite3.IntegrityError:
                    if expect is not None:
                        self._heads.pop(run_id, None)
                        raise HeadMoved(run_id) from None
                    conflicts, deadline = self._lost_race(run_id, conflicts, deadline)
                    continue
                self._remember(run_id, made[-1])
                return made
        except sqlite3.Error as exc:
            self._heads.pop(run_id, None)
            self._drop_wconn()
            raise StoreError(f"cannot append to run {run_id}: {exc}") from exc

    def last_seq(self, run_id: str) -> int:
        """The seq of the run's last event as the store has it now (0: no events)."""
        with self._lock:
            try:
                row = self._driver().execute(_HEAD_SQL[self.dialect], (run_id,)).fetchone()
            except StoreError:
                raise
            except Exception as exc:  # the driver's own error classes (sqlite3, psycopg)
                self._drop_wconn()
                raise StoreError(f"cannot read run {run_id}: {exc}") from exc
        return int(row[0]) if row else 0

    def _known_head(self, conn: Any, run_id: str) -> tuple[int, str]:
        """The (seq, hash) this store last saw at the end of a run, read if it saw none."""
        head = self._heads.get(run_id)
        if head is None:
            row = conn.execute(_HEAD_SQL[self.dialect], (run_id,)).fetchone()
            if row is None:
                raise UsageError(f"no run {run_id}")
            head = (int(row[0]), str(row[1]))
        return head

    def _lost_race(self, run_id: str, conflicts: int, deadline: float) -> tuple[int, float]:
        """Someone appended after the head we chained on: forget it, maybe wait, try again."""
        self._heads.pop(run_id, None)
        conflicts += 1
        if conflicts == 1:
            deadline = time.monotonic() + _CONTENTION_TIMEOUT
        elif time.monotonic() > deadline:
            raise StoreError(
                f"cannot append to run {run_id}: other writers kept winning for "
                f"{_CONTENTION_TIMEOUT:.0f} s"
            )
        if conflicts > 2:  # heavy contention: step aside briefly, at random
            time.sleep(random.uniform(0, min(0.001 * conflicts, 0.05)))  # noqa: S311
        return conflicts, deadline

    def _append_pg(
        self, run_id: str, items: Sequence[Item], seal: Seal | None, expect: tuple[int, str] | None
    ) -> list[Event]:
        import psycopg
        from psycopg import errors

        deadline = 0.0
        conflicts = 0
        try:
            conn = self._driver()
            while True:
                head = expect or self._known_head(conn, run_id)
                made = _chain(run_id, head[0], head[1], items, seal)
                try:
                    # Autocommit: this one statement is the transaction, committed on return.
                    conn.execute(_insert_pg(len(made)), [v for e in made for v in _values(e)])
                except errors.UniqueViolation:
                    if expect is not None:
                        self._heads.pop(run_id, None)
                        raise HeadMoved(run_id) from None
                    conflicts, deadline = self._lost_race(run_id, conflicts, deadline)
                    continue
                self._remember(run_id, made[-1])
                return made
        except psycopg.Error as exc:
            self._heads.pop(run_id, None)
            if self._wconn is not None and self._driver_closed():
                self._drop_wconn()
            raise StoreError(f"cannot append to run {run_id}: {_first_line(exc)}") from exc

    def _remember(self, run_id: str, event: Event) -> None:
        if len(self._heads) > 4096:
            self._heads.clear()
        self._heads[run_id] = (event.seq, event.hash)

    def _driver(self) -> Any:
        """The raw DBAPI connection used for appends (call with ``self._lock`` held)."""
        if self._wconn is not None and self._wpid != os.getpid():
            # Inherited across fork: never touch (or close) the parent's connection.
            self._wconn, self._wdriver = None, None
            self._heads.clear()
        if self._wconn is None:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                proxied = self.engine.raw_connection()
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot reach the store: {_brief(exc)}") from exc
            driver: Any = proxied.driver_connection
            if self._dedicated:
                proxied.detach()  # ours alone, closed by close()
            if self.dialect == "postgresql":
                driver.autocommit = True
            self._wconn, self._wdriver, self._wpid = proxied, driver, os.getpid()
        return self._wdriver

    def _driver_closed(self) -> bool:
        conn = self._wdriver
        return conn is None or bool(conn.closed or conn.broken)  # psycopg

    def _drop_wconn(self) -> None:
        conn, self._wconn, self._wdriver = self._wconn, None, None
        self._heads.clear()
        if conn is None:
            return
        try:
            if not self._dedicated:
                return  # the shared pooled connection stays with the pool
            conn.close()
        except Exception:  # noqa: S110 - closing a broken connection may fail; nothing to do
            pass

    # -- things that may be used only once ----------------------------------------

    def claim_once(self, key: str, *, until: float, now: float | None = None) -> bool:
        """Mark ``key`` used until ``until`` (Unix time); False if it already is.

        Shared by every process on the store, so a Slack request replayed to
        another ``irctl serve`` replica, or after a restart, is still refused.
        Expired keys are forgotten on the way.
        """
        from sqlalchemy import delete
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        table = self._used_once
        now = time.time() if now is None else now
        try:
            with self._lock, self._writer.begin() as conn:
                conn.execute(delete(table).where(table.c.expires < now))
                conn.execute(table.insert().values(key=key[:200], expires=until))
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record a used request: {_brief(exc)}") from exc
        return True

    # -- reading ---------------------------------------------------------------

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {what}: {_brief(exc)}") from exc

    def lines(self, run_id: str, *, after: int = 0) -> Iterator[str]:
        """The stored canonical lines of a run, in order."""
        from sqlalchemy import select

        ev = self._events
        query = (
            select(ev.c.line)
            .where(ev.c.run_id == run_id, ev.c.seq > after)
            .order_by(ev.c.seq)
            .execution_options(yield_per=2000)
        )
        with self._reading(f"run {run_id}"), self.engine.connect() as conn:
            for row in conn.execute(query):
                yield str(row[0])

    def events(self, run_id: str, *, after: int = 0) -> list[Event]:
        events = []
        for number, line in enumerate(self.lines(run_id, after=after), start=after + 1):
            try:
                events.append(Event.from_line(line))
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise CorruptEvent(
                    f"run {run_id}: stored event {number} cannot be read ({exc}); "
                    f"'irctl transcript verify {run_id}' shows what is wrong"
                ) from None
        if not events and after == 0 and self.get_run(run_id) is None:
            raise UsageError(f"no run {run_id}")
        return events

    def get_run(self, run_id: str) -> RunRow | None:
        from sqlalchemy import select

        with self._reading(f"run {run_id}"), self.engine.connect() as conn:
            row = conn.execute(select(self._runs).where(self._runs.c.id == run_id)).first()
        return RunRow(*row) if row is not None else None

    def find_run(self, prefix: str) -> RunRow:
        """A run by id or unambiguous id prefix."""
        from sqlalchemy import select

        if not prefix.strip():
            raise UsageError("no run id given (an empty id would match every run)")
        if len(prefix) > 64 or not prefix.isprintable() or not _encodable(prefix):
            raise UsageError(f"no run {prefix[:80]!r}; see 'irctl runs list'")
        with self._reading("runs"), self.engine.connect() as conn:
            rows = conn.execute(
                select(self._runs).where(self._runs.c.id.startswith(prefix, autoescape=True))
            ).all()
        rows = [r for r in rows if r[0].startswith(prefix)]  # SQLite's LIKE ignores case
        exact = [r for r in rows if r[0] == prefix]
        if exact:
            return RunRow(*exact[0])
        if not rows:
            raise UsageError(f"no run {prefix!r}; see 'irctl runs list'")
        if len(rows) > 1:
            raise UsageError(f"run id {prefix!r} is ambiguous ({len(rows)} runs match)")
        return RunRow(*rows[0])

    def runs(self, *, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first (ties in ``created_at`` broken by id, descending)."""
        from sqlalchemy import select

        query = select(self._runs).order_by(self._runs.c.created_at.desc(), self._runs.c.id.desc())
        if limit:
            query = query.limit(limit)
        with self._reading("runs"), self.engine.connect() as conn:
            return [RunRow(*row) for row in conn.execute(query)]


class _NoTables(Exception):  # an internal signal, never reaches a user
    """Raised by ``Store._check``: the database holds none of irctl's tables."""


def _no_file(path: Path, origin_note: str) -> NoStore:
    return NoStore(
        f"no irctl store at {path}{origin_note}: nothing has been recorded there; "
        "check the path, or run the command from the workspace folder",
        location=str(path),
        absent=True,
    )


def _sqlite3_connect(uri: str) -> Any:
    import sqlite3

    return sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)


def _sqlite_reader_uri(path: Path, origin_note: str) -> str:
    """The SQLite URI that reads the store file ``path`` without writing to it.

    ``mode=ro``: SQLite opens the file read-only (and ``query_only`` is set on top).
    A store is in WAL mode, and a WAL reader needs the ``-shm`` index next to the file:
    SQLite uses the one there, or creates it (and an empty ``-wal``) when the folder
    can be written.  In a folder this process cannot write (read-only media, a copy
    given to an auditor as another user), without a ``-shm`` file, SQLite cannot open
    the file at all (``mode=ro`` fails with "attempt to write a readonly database").
    Then:

    * no ``-wal`` file, or an empty one: every committed event is in the main file, so
      it is opened ``immutable=1`` (no locks, no ``-shm``).  Immutable is safe only if
      nobody writes the file meanwhile: here neither the file nor its folder can be
      written by this process, nothing is pending in a log, and a store in use by a
      writer keeps its ``-wal`` and ``-shm`` files (so it takes the ``mode=ro`` path);
    * a non-empty ``-wal`` but no usable ``-shm``: the newest events are only in the
      log, which cannot be read without writing an index here; immutable would silently
      miss them, so this is an error that says what to do.
    """
    import sqlite3
    from urllib.parse import quote

    if not path.exists():
        raise _no_file(path, origin_note)
    if path.is_dir():
        raise UsageError(f"the store {path}{origin_note} is a folder, not a SQLite file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read the store {path}{origin_note}: permission denied")
    base = "file:" + quote(str(path))
    uri = base + "?mode=ro"
    if os.access(path.parent, os.W_OK):  # SQLite can make the -shm index it may need
        return uri
    try:  # read-only here: can SQLite open it as it is (its -wal and -shm beside it)?
        probe = _sqlite3_connect(uri)
        try:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return uri
        finally:
            probe.close()
    except sqlite3.Error:
        pass
    wal = Path(f"{path}-wal")
    try:
        pending = wal.stat().st_size > 0
    except FileNotFoundError:
        pending = False
    except OSError as exc:
        raise UsageError(f"cannot read {wal}: {exc.strerror or exc}") from exc
    if pending:
        raise UsageError(
            f"cannot read the store {path}{origin_note} where it is: its newest events are "
            f"still in {wal.name}, which SQLite reads only with an index file ({path.name}-shm) "
            f"that it must write beside it, and {path.parent} cannot be written; copy "
            f"{path.name} together with {wal.name} to a writable folder and read the copy "
            "(IRCTL_STORE=sqlite:////COPY/irctl.db), or checkpoint the original before copying "
            "it (sqlite3 ORIGINAL.db 'PRAGMA wal_checkpoint(TRUNCATE)')"
        )
    return base + "?mode=ro&immutable=1"


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


def _chain(
    run_id: str,
    seq: int,
    prev: str,
    items: Sequence[Item],
    seal: Seal | None = None,
) -> list[Event]:
    made: list[Event] = []
    for kind, data, *when in items:
        seq += 1
        event = Event.make(run_id, seq, kind, data, prev, *when)
        prev = event.hash
        made.append(event)
    if seal is not None:
        made.append(Event.make(run_id, seq + 1, CHECKPOINT, seal(run_id, seq, prev), prev))
    return made


def _values(event: Event) -> tuple[str, int, str, str, str, str]:
    return (event.run, event.seq, event.ts, event.type, event.line, event.hash)


def _row(event: Event) -> dict[str, Any]:
    return {
        "run_id": event.run, "seq": event.seq, "ts": event.ts, "type": event.type,
        "line": event.line, "hash": event.hash,
    }  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _brief(exc: Exception) -> str:
    return _first_line(getattr(exc, "orig", None) or exc)


def _encodable(text: str) -> bool:
    """False for text holding lone surrogates (bytes that were not UTF-8 on the command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
