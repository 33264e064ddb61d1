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

:class:`Store` is the store's one face, and reads; its parts are modules of their own:
opening a database, creating and checking its tables (:mod:`.opening`), its schema
version and the upgrade steps (:mod:`.versions`), copying it whole into an empty store
(:mod:`.copying`), a full disk and a lost connection told apart and waited out
(:mod:`.faults`), appending (:mod:`.appending`), the run executor lock (:mod:`.locks`),
and the tables and the shapes of what is stored (:mod:`.schema`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from irctl.errors import NoStore, StoreError, UsageError
from irctl.journal.events import GENESIS, RUN_CREATED, Event
from irctl.journal.filereader import UNFINISHED_SQL, RunReads
from irctl.journal.store.appending import Appender, row_of
from irctl.journal.store.appending import HeadMoved as HeadMoved
from irctl.journal.store.copying import Copied as Copied
from irctl.journal.store.copying import Progress as Progress
from irctl.journal.store.copying import copy_store
from irctl.journal.store.faults import (
    RETRY_FOR,
    Patience,
    conflict,
    failure,
    lost,
    restarting,
)
from irctl.journal.store.locks import RunLocks
from irctl.journal.store.locks import _advisory_key as _advisory_key  # the lock's tests read it
from irctl.journal.store.opening import (
    SCHEMA_LOCK,
    NoTables,
    check_tables,
    connect,
    create_tables,
)
from irctl.journal.store.schema import SCHEMA_VERSION as SCHEMA_VERSION
from irctl.journal.store.schema import Item as Item
from irctl.journal.store.schema import RunRow as RunRow
from irctl.journal.store.schema import Seal as Seal
from irctl.journal.store.schema import tables
from irctl.journal.store.versions import Upgrade as Upgrade
from irctl.journal.store.versions import upgrade

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

T = TypeVar("T")


class Store(RunReads):
    """Open with :meth:`open`; every method is safe to call from several threads."""

    def __init__(
        self,
        engine: Engine,
        *,
        dedicated: bool = True,
        create: bool = True,
        where: str = "",
        retry: float = RETRY_FOR,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        #: The store for messages: its URL or file, never its password.
        self.where = where or engine.url.render_as_string(hide_password=True)
        #: How long a lost database connection is waited out before ``store unavailable``.
        self.retry = retry
        self._meta = tables()
        self._runs = self._meta.tables["irctl_runs"]
        self._events = self._meta.tables["irctl_events"]
        self._used_once = self._meta.tables["irctl_used_once"]
        self._lock = threading.Lock()
        self._insert_sql = self._events.insert()
        # SQLite: BEGIN IMMEDIATE for transactions opened through this engine.
        self._writer = engine.execution_options(irctl_write=True)
        self._locks = RunLocks(engine, retry=retry, where=self.where)  # run_lock
        self._appender = Appender(
            engine, dedicated=dedicated, where=self.where, retry=retry,
            reconnected=self._locks.check,
        )  # fmt: skip  # called with _lock held
        #: Opened to read only (``Store.open(..., create=False)``): nothing was created or written.
        self.readonly = not create
        #: The schema version of the store as opened (older than the code's only for a reader).
        self.schema_version = SCHEMA_VERSION
        if create:
            self._patiently("cannot open the store", lambda: create_tables(
                self._writer, self.dialect, self._meta, self.where
            ), opening=True)  # fmt: skip
        else:
            self.schema_version = self._patiently(
                "cannot open the store",
                lambda: check_tables(self.engine, self._meta, self.where),
                opening=True,
            )

    def _patiently(self, what: str, attempt: Callable[[], T], *, opening: bool = False) -> T:
        """``attempt()``, tried again while the database cannot be reached (or PostgreSQL
        aborted it to resolve a conflict), for up to ``retry`` seconds; a database error is
        a :class:`StoreError` saying ``what`` failed (exit 74 for a full disk, or a database
        that stayed away).  ``opening``: the store was never reached yet, so only a server
        that is restarting is waited for; one that refuses the connection is told at once."""
        from sqlalchemy.exc import SQLAlchemyError

        patience: Patience | None = None
        while True:
            try:
                return attempt()
            except (SQLAlchemyError, StoreError) as exc:
                cause = exc.__cause__ if isinstance(exc, StoreError) else exc
                again = self.dialect == "postgresql" and cause is not None
                waits = restarting if opening else lost
                if not (again and cause is not None and (waits(cause) or conflict(cause))):
                    if isinstance(exc, StoreError):
                        raise
                    raise failure(what, exc, self.where) from exc
                if patience is None:
                    patience = Patience(self.retry, what, self.where)
                patience.pause(cause)

    def _read(self, what: str, query: Any) -> list[Any]:
        """Every row of a query, read patiently."""

        def attempt() -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(query).all())

        return self._patiently(what, attempt)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        workspace: Path | None = None,
        create: bool = True,
        origin: str | None = None,
        retry: float = RETRY_FOR,
    ) -> Store:
        """Open (creating if needed) the store at a SQLAlchemy URL.

        A relative SQLite path is relative to ``workspace``.

        With ``create=False`` the store is opened to read only: a store that does not
        exist (no SQLite file; a database without irctl's tables) is :class:`NoStore`,
        and nothing is created or written — no folder, no file, no table, no schema row,
        no PRAGMA that writes — so a copy of a store on read-only media can be read.
        ``origin`` says where ``url`` came from (``from IRCTL_STORE``), for messages.
        ``retry``: for how many seconds a lost PostgreSQL connection is waited out.
        """
        database = connect(url, workspace=workspace, create=create, origin=origin)
        try:
            return cls(
                database.engine, dedicated=database.dedicated, create=create,
                where=database.where, retry=retry,
            )  # fmt: skip
        except NoTables:
            database.engine.dispose()
            raise database.no_store() from None
        except BaseException:
            database.engine.dispose()
            raise

    @staticmethod
    def upgrade(url: str, *, workspace: Path | None = None, origin: str | None = None) -> Upgrade:
        """Bring the store at ``url`` to this irctl's schema version, in one transaction.

        A store that does not exist is :class:`NoStore` (nothing is created); one at this
        version is left as it is (``Upgrade.done`` is empty); one newer is refused.
        """
        Store.open(url, workspace=workspace, create=False, origin=origin).close()
        database = connect(url, workspace=workspace, create=True, origin=origin)
        try:
            writer = database.engine.execution_options(irctl_write=True)
            return upgrade(writer, database.engine.dialect.name, tables(), lock=SCHEMA_LOCK)
        finally:
            database.engine.dispose()

    @staticmethod
    def open_empty(url: str, *, workspace: Path | None = None, origin: str | None = None) -> Store:
        """Open the store at ``url`` to copy a store into: one that holds no run (made at this
        irctl's schema version if it does not exist).  One that holds runs is refused before
        anything is created or written."""
        try:
            existing = Store.open(url, workspace=workspace, create=False, origin=origin)
        except NoStore:
            pass
        except StoreError as exc:
            raise StoreError(f"cannot copy into {_shown(url, workspace)}: {exc.message}") from exc
        else:
            try:
                runs, _ = existing.counts()
            finally:
                existing.close()
            if runs:
                raise UsageError(
                    f"the target {existing.where} already holds {runs} run"
                    f"{'s' if runs != 1 else ''}: migrate only into a store with none "
                    "(a new database); nothing was written"
                )
        try:
            return Store.open(url, workspace=workspace, origin=origin)
        except StoreError as exc:
            raise StoreError(f"cannot copy into {_shown(url, workspace)}: {exc.message}") from exc

    def copy_to(self, target: Store, *, progress: Progress | None = None) -> Copied:
        """Copy every run, every event as stored, and the other tables into ``target``,
        which holds no run, in one transaction (see :mod:`.copying`)."""
        return copy_store(self.engine, target._writer, self._meta, progress=progress)

    def close(self) -> None:
        with self._lock:
            self._appender.drop()
        self.engine.dispose()

    # -- the run executor lock ---------------------------------------------------

    def run_lock(self, run_id: str) -> AbstractContextManager[None]:
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
        return self._locks.hold(run_id)

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
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        first = Event.make(run_id, 1, RUN_CREATED, data, GENESIS)
        sent = False
        ev = self._events

        def attempt() -> None:
            nonlocal sent
            try:
                with self._lock, self._writer.begin() as conn:
                    run = {
                        "id": run_id, "runbook": runbook, "created_at": first.ts,
                        "initiator": initiator, "mode": mode, "incident": incident,
                    }  # fmt: skip
                    sent = True
                    conn.execute(self._runs.insert().values(**run))
                    conn.execute(self._insert_sql, [row_of(first)])
            except IntegrityError as exc:
                if sent and self._read(
                    f"cannot record run {run_id}",
                    select(ev.c.hash).where(ev.c.run_id == run_id, ev.c.seq == 1),
                ) == [(first.hash,)]:
                    return  # committed before the connection broke, then tried again
                raise StoreError(f"run {run_id} already exists") from exc

        self._patiently(f"cannot record run {run_id}", attempt)
        self._appender.remember(run_id, first)
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
                return self._appender.append_sqlite(run_id, items, seal, expect)
            self._locks.check()  # never append as the executor of a run whose lock was lost
            return self._appender.append_pg(run_id, items, seal, expect)

    def last_seq(self, run_id: str) -> int:
        """The seq of the run's last event as the store has it now (0: no events)."""
        with self._lock:
            return self._appender.last_seq(run_id)

    # -- things that may be used only once ----------------------------------------

    def claim_once(self, key: str, *, until: float, now: float | None = None) -> bool:
        """Mark ``key`` used until ``until`` (Unix time); False if it already is.

        Shared by every process on the store, so a Slack request replayed to
        another ``irctl serve`` replica, or after a restart, is still refused.
        Expired keys are forgotten on the way.
        """
        from sqlalchemy import delete
        from sqlalchemy.exc import IntegrityError

        table = self._used_once
        now = time.time() if now is None else now

        def attempt() -> bool:
            try:
                with self._lock, self._writer.begin() as conn:
                    conn.execute(delete(table).where(table.c.expires < now))
                    conn.execute(table.insert().values(key=key[:200], expires=until))
            except IntegrityError:
                # Used already (also when an insert committed just before the connection
                # broke and is tried again: refused, never accepted twice).
                return False
            return True

        return self._patiently("cannot record a used request", attempt)

    def release(self, key: str) -> None:
        """Forget a claim of :meth:`claim_once` whose use did not happen after all (a run that
        could not be created for the incident it claimed)."""
        from sqlalchemy import delete

        table = self._used_once

        def attempt() -> None:
            with self._lock, self._writer.begin() as conn:
                conn.execute(delete(table).where(table.c.key == key[:200]))

        self._patiently("cannot release a used request", attempt)

    # -- reading ---------------------------------------------------------------

    def lines(self, run_id: str, *, after: int = 0) -> Iterator[str]:
        """The stored canonical lines of a run, in order.

        A connection lost on the way is waited out (see :meth:`_patiently`) and the reading
        goes on after the last line already given, so no line is given twice or missed.
        """
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        ev = self._events
        last = after
        patience: Patience | None = None
        while True:
            query = (
                select(ev.c.seq, ev.c.line)
                .where(ev.c.run_id == run_id, ev.c.seq > last)
                .order_by(ev.c.seq)
                .execution_options(yield_per=2000)
            )
            try:
                with self.engine.connect() as conn:
                    for seq, line in conn.execute(query):
                        last = int(seq)
                        yield str(line)
                return
            except SQLAlchemyError as exc:
                what = f"cannot read run {run_id}"
                if not (self.dialect == "postgresql" and (lost(exc) or conflict(exc))):
                    raise failure(what, exc, self.where) from exc
                if patience is None:
                    patience = Patience(self.retry, what, self.where)
                patience.pause(exc)

    def get_run(self, run_id: str) -> RunRow | None:
        from sqlalchemy import select

        rows = self._read(
            f"cannot read run {run_id}", select(self._runs).where(self._runs.c.id == run_id)
        )
        return RunRow(*rows[0]) if rows else None

    def _starting(self, prefix: str) -> list[Any]:
        from sqlalchemy import select

        return self._read(
            "cannot read runs",
            select(self._runs).where(self._runs.c.id.startswith(prefix, autoescape=True)),
        )

    def counts(self) -> tuple[int, int]:
        """How many runs and events the store holds."""
        from sqlalchemy import func, select

        counted = select(
            select(func.count()).select_from(self._runs).scalar_subquery(),
            select(func.count()).select_from(self._events).scalar_subquery(),
        )
        ((runs, events),) = self._read("cannot read the store", counted)
        return int(runs), int(events)

    def runs_for_incident(self, incident: str, *, limit: int = 20) -> list[RunRow]:
        """The runs recorded for ``incident``, newest first (as the rows say: check each run's
        own ``run.created`` before believing it)."""
        from sqlalchemy import select

        runs = self._runs
        query = (
            select(runs)
            .where(runs.c.incident == incident)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit)
        )
        return [RunRow(*row) for row in self._read("cannot read runs", query)]

    def runs(self, *, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first (ties in ``created_at`` broken by id, descending)."""
        from sqlalchemy import select

        query = select(self._runs).order_by(self._runs.c.created_at.desc(), self._runs.c.id.desc())
        if limit:
            query = query.limit(limit)
        return [RunRow(*row) for row in self._read("cannot read runs", query)]

    def meta_value(self, key: str) -> str | None:
        """A value of the store's ``irctl_meta`` table (its schema version, runs' salts)."""
        from sqlalchemy import select

        table = self._meta.tables["irctl_meta"]
        rows = self._read(
            "cannot read the store's settings", select(table.c.value).where(table.c.key == key)
        )
        return str(rows[0][0]) if rows else None

    def unfinished_runs(self) -> list[RunRow]:
        """Runs, newest first, that may have an approval pending (see
        :meth:`.filereader.FileReader.unfinished_runs`)."""
        from sqlalchemy import text

        return [RunRow(*row) for row in self._read("cannot read runs", text(UNFINISHED_SQL))]


def _shown(url: str, workspace: Path | None) -> str:
    """A store's URL for a message: its password hidden, a relative SQLite path made whole."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database and not database.startswith("file:"):
        path = Path(database)
        return str(path if path.is_absolute() or workspace is None else workspace / path)
    return parsed.render_as_string(hide_password=True)
