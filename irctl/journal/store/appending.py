"""Appending to a run's chain: the store's hot path, one INSERT statement per append.

Owns :class:`Appender`: the DBAPI connection appends use (taken out of the pool on first
use, never shared with a forked child), the head of each run as this store last saw it,
the events chained onto that head and hashed, and what happens when another writer
appended first (chain again from the new head; or, for a caller that verified the head it
gave, :class:`HeadMoved`).  The SQL text is fixed: no statement is compiled per append.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from irctl.errors import StoreError, UsageError
from irctl.journal.events import CHECKPOINT, Event
from irctl.journal.store.faults import RETRY_FOR, Patience, conflict, failure, lost
from irctl.journal.store.schema import Item, Seal

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import PoolProxiedConnection

# How long an append may keep losing races to other writers of the same run.
_CONTENTION_TIMEOUT = 60.0

_COLUMNS = "(run_id, seq, ts, type, line, hash)"
_HEAD_SQL = {
    "sqlite": "SELECT seq, hash FROM irctl_events WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
    "postgresql": "SELECT seq, hash FROM irctl_events WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
}
_HASH_AT_SQL = "SELECT hash FROM irctl_events WHERE run_id = %s AND seq = %s"
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


class _Unreachable(Exception):  # an internal signal: a new connection could not be made
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class HeadMoved(Exception):  # a signal to the engine, never shown to a user
    """Someone appended after the head the caller verified: read and check their events,
    then append again (the store never chains the caller's events onto rows it has not seen)."""


class Appender:
    """The appends of one store; every method is called with the store's lock held."""

    def __init__(
        self,
        engine: Engine,
        *,
        dedicated: bool,
        where: str = "",
        retry: float = RETRY_FOR,
        reconnected: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._where = where  # the store, for messages
        self._retry = retry  # how long a lost PostgreSQL connection is waited out
        # Called once the append connection is back after it was lost (the run locks
        # check their own sessions then).
        self._reconnected = reconnected
        # The append connection; ``dedicated`` takes it out of the pool (False for
        # SQLite :memory:, whose single pooled connection *is* the database).
        self._dedicated = dedicated
        self._wconn: PoolProxiedConnection | None = None
        self._wdriver: Any = None  # its sqlite3 / psycopg connection
        self._wpid = 0
        # PostgreSQL: run id -> (seq, hash) of the last event this store saw.
        self._heads: dict[str, tuple[int, str]] = {}
        self._lost_once = False  # the append connection was dropped: check locks when back

    def append_sqlite(
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
                made = chain(run_id, head[0], head[1], items, seal)
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
                self.remember(run_id, made[-1])
                return made
        except sqlite3.Error as exc:
            self._heads.pop(run_id, None)
            self.drop()
            resume = f"'irctl resume {run_id}'"
            raise failure(f"cannot append to run {run_id}", exc, self._where, resume) from exc

    def append_pg(
        self, run_id: str, items: Sequence[Item], seal: Seal | None, expect: tuple[int, str] | None
    ) -> list[Event]:
        """One INSERT statement, committed on its own (autocommit), from the head last seen.

        A lost connection (a restart, a terminated backend) is waited out for the store's
        ``retry`` bound, reconnecting with backoff.  An insert whose commit was not
        acknowledged may have been committed: before anything is chained again, the event it
        would have put last is looked for, and if it is there (the same hash: these very
        events), the append is done — never recorded twice.
        """
        import psycopg
        from psycopg import errors

        deadline = 0.0
        conflicts = 0
        unknown: list[Event] | None = None  # sent, but the connection broke before the answer
        patience: Patience | None = None
        what = f"cannot append to run {run_id}"
        while True:
            try:
                conn = self._driver()
                if unknown is not None:
                    last = unknown[-1]
                    row = conn.execute(_HASH_AT_SQL, (run_id, last.seq)).fetchone()
                    if row is not None and str(row[0]) == last.hash:
                        self.remember(run_id, last)
                        return unknown  # it was committed before the connection broke
                    unknown = None
                head = expect or self._known_head(conn, run_id)
                made = chain(run_id, head[0], head[1], items, seal)
                try:
                    unknown = made
                    # Autocommit: this one statement is the transaction, committed on return.
                    conn.execute(_insert_pg(len(made)), [v for e in made for v in _values(e)])
                except errors.UniqueViolation:
                    unknown = None
                    if expect is not None:
                        self._heads.pop(run_id, None)
                        raise HeadMoved(run_id) from None
                    conflicts, deadline = self._lost_race(run_id, conflicts, deadline)
                    continue
                self.remember(run_id, made[-1])
                return made
            except (psycopg.Error, _Unreachable) as exc:
                self._heads.pop(run_id, None)
                cause = exc.cause if isinstance(exc, _Unreachable) else exc
                broken = self._wconn is not None and self._driver_closed()
                if not (lost(cause) or broken or conflict(cause)):
                    resume = f"'irctl resume {run_id}'"
                    raise failure(what, cause, self._where, resume) from cause
                if lost(cause) or broken:
                    self.drop()
                if patience is None:
                    patience = Patience(self._retry, what, self._where)
                patience.pause(cause)

    def reconnect_checked(self) -> None:
        """After the append connection came back: let the run locks check their sessions."""
        if self._reconnected is not None:
            self._reconnected()

    def last_seq(self, run_id: str) -> int:
        """The seq of the run's last event as the database has it now (0: no events)."""
        patience: Patience | None = None
        what = f"cannot read run {run_id}"
        while True:
            try:
                row = self._driver().execute(_HEAD_SQL[self._dialect], (run_id,)).fetchone()
                return int(row[0]) if row else 0
            except StoreError:
                raise
            except Exception as exc:  # the driver's own error classes (sqlite3, psycopg)
                cause = exc.cause if isinstance(exc, _Unreachable) else exc
                self.drop()
                if self._dialect != "postgresql" or not lost(cause):
                    raise failure(what, cause, self._where) from cause
                if patience is None:
                    patience = Patience(self._retry, what, self._where)
                patience.pause(cause)

    def _known_head(self, conn: Any, run_id: str) -> tuple[int, str]:
        """The (seq, hash) this store last saw at the end of a run, read if it saw none."""
        head = self._heads.get(run_id)
        if head is None:
            row = conn.execute(_HEAD_SQL[self._dialect], (run_id,)).fetchone()
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

    def remember(self, run_id: str, event: Event) -> None:
        if len(self._heads) > 4096:
            self._heads.clear()
        self._heads[run_id] = (event.seq, event.hash)

    def _driver(self) -> Any:
        """The raw DBAPI connection used for appends."""
        if self._wconn is not None and self._wpid != os.getpid():
            # Inherited across fork: never touch (or close) the parent's connection.
            self._wconn, self._wdriver = None, None
            self._heads.clear()
        if self._wconn is None:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                proxied = self._engine.raw_connection()
            except SQLAlchemyError as exc:
                if self._dialect == "postgresql" and lost(exc):
                    raise _Unreachable(exc) from exc  # waited out by append_pg
                raise failure("cannot reach the store", exc, self._where) from exc
            driver: Any = proxied.driver_connection
            if self._dedicated:
                proxied.detach()  # ours alone, closed by drop()
            if self._dialect == "postgresql":
                driver.autocommit = True
            self._wconn, self._wdriver, self._wpid = proxied, driver, os.getpid()
            if self._lost_once:
                self._lost_once = False
                self.reconnect_checked()
        return self._wdriver

    def _driver_closed(self) -> bool:
        conn = self._wdriver
        return conn is None or bool(conn.closed or conn.broken)  # psycopg

    def drop(self) -> None:
        """Let go of the append connection (closed, or left to the pool) and the heads."""
        conn, self._wconn, self._wdriver = self._wconn, None, None
        self._lost_once = conn is not None
        self._heads.clear()
        if conn is None:
            return
        try:
            if not self._dedicated:
                return  # the shared pooled connection stays with the pool
            conn.close()
        except Exception:  # noqa: S110 - closing a broken connection may fail; nothing to do
            pass


def chain(
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


def row_of(event: Event) -> dict[str, Any]:
    """An event as a row of ``irctl_events``."""
    return {
        "run_id": event.run, "seq": event.seq, "ts": event.ts, "type": event.type,
        "line": event.line, "hash": event.hash,
    }  # fmt: skip
