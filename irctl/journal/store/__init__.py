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
opening a database, creating and checking its tables (:mod:`.opening`), appending
(:mod:`.appending`), the run executor lock (:mod:`.locks`), and the tables and the
shapes of what is stored (:mod:`.schema`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import CorruptEvent, StoreError, UsageError
from irctl.journal.events import GENESIS, RUN_CREATED, Event
from irctl.journal.store.appending import Appender, row_of
from irctl.journal.store.appending import HeadMoved as HeadMoved
from irctl.journal.store.locks import RunLocks
from irctl.journal.store.locks import _advisory_key as _advisory_key  # the lock's tests read it
from irctl.journal.store.opening import NoTables, check_tables, connect, create_tables
from irctl.journal.store.schema import SCHEMA_VERSION as SCHEMA_VERSION
from irctl.journal.store.schema import Item as Item
from irctl.journal.store.schema import RunRow as RunRow
from irctl.journal.store.schema import Seal as Seal
from irctl.journal.store.schema import brief, tables

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class Store:
    """Open with :meth:`open`; every method is safe to call from several threads."""

    def __init__(self, engine: Engine, *, dedicated: bool = True, create: bool = True) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._meta = tables()
        self._runs = self._meta.tables["irctl_runs"]
        self._events = self._meta.tables["irctl_events"]
        self._used_once = self._meta.tables["irctl_used_once"]
        self._lock = threading.Lock()
        self._insert_sql = self._events.insert()
        # SQLite: BEGIN IMMEDIATE for transactions opened through this engine.
        self._writer = engine.execution_options(irctl_write=True)
        self._appender = Appender(engine, dedicated=dedicated)  # called with _lock held
        self._locks = RunLocks(engine)  # run_lock
        #: Opened to read only (``Store.open(..., create=False)``): nothing was created or written.
        self.readonly = not create
        if create:
            create_tables(self._writer, self.dialect, self._meta)
        else:
            check_tables(self.engine, self._meta)

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
        database = connect(url, workspace=workspace, create=create, origin=origin)
        try:
            return cls(database.engine, dedicated=database.dedicated, create=create)
        except NoTables:
            database.engine.dispose()
            raise database.no_store() from None
        except BaseException:
            database.engine.dispose()
            raise

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
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        first = Event.make(run_id, 1, RUN_CREATED, data, GENESIS)
        try:
            with self._lock, self._writer.begin() as conn:
                run = {
                    "id": run_id, "runbook": runbook, "created_at": first.ts,
                    "initiator": initiator, "mode": mode, "incident": incident,
                }  # fmt: skip
                conn.execute(self._runs.insert().values(**run))
                conn.execute(self._insert_sql, [row_of(first)])
        except IntegrityError as exc:
            raise StoreError(f"run {run_id} already exists") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record run {run_id}: {brief(exc)}") from exc
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
            raise StoreError(f"cannot record a used request: {brief(exc)}") from exc
        return True

    def release(self, key: str) -> None:
        """Forget a claim of :meth:`claim_once` whose use did not happen after all (a run that
        could not be created for the incident it claimed)."""
        from sqlalchemy import delete
        from sqlalchemy.exc import SQLAlchemyError

        table = self._used_once
        try:
            with self._lock, self._writer.begin() as conn:
                conn.execute(delete(table).where(table.c.key == key[:200]))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot release a claim: {brief(exc)}") from exc

    # -- reading ---------------------------------------------------------------

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {what}: {brief(exc)}") from exc

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
        with self._reading("runs"), self.engine.connect() as conn:
            return [RunRow(*row) for row in conn.execute(query)]

    def runs(self, *, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first (ties in ``created_at`` broken by id, descending)."""
        from sqlalchemy import select

        query = select(self._runs).order_by(self._runs.c.created_at.desc(), self._runs.c.id.desc())
        if limit:
            query = query.limit(limit)
        with self._reading("runs"), self.engine.connect() as conn:
            return [RunRow(*row) for row in conn.execute(query)]


def _encodable(text: str) -> bool:
    """False for text holding lone surrogates (bytes that were not UTF-8 on the command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
