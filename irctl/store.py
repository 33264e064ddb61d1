"""The event store: an append-only, hash-chained journal per run.

SQLAlchemy Core over SQLite (the default, a file in the workspace, WAL mode,
``synchronous=FULL`` so a commit survives a power cut) or PostgreSQL (for
teams).  Appends to one run are serialised by the database itself
(``BEGIN IMMEDIATE`` on SQLite, a row lock on PostgreSQL), so several
processes — responders, ``irctl serve`` replicas — may append to the same run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import StoreError, UsageError
from irctl.events import GENESIS, RUN_CREATED, Event

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunRow:
    id: str
    runbook: str
    created_at: str
    initiator: str
    mode: str
    incident: str | None


def _tables() -> Any:
    from sqlalchemy import Column, Integer, MetaData, String, Table, Text

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
    return meta


class Store:
    """Open with :meth:`open`; every method is safe to call from several threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._meta = _tables()
        self._runs = self._meta.tables["irctl_runs"]
        self._events = self._meta.tables["irctl_events"]
        self._lock = threading.Lock()
        self._insert_sql = self._events.insert()
        self._create()

    @classmethod
    def open(cls, url: str, *, workspace: Path | None = None) -> Store:
        """Open (creating if needed) the store at a SQLAlchemy URL.

        A relative SQLite path is relative to ``workspace``.
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
            raise UsageError(f"store: {url!r} is not a database URL") from exc
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                path = Path(database)
                if not path.is_absolute() and workspace is not None:
                    path = workspace / path
                path.parent.mkdir(parents=True, exist_ok=True)
                parsed = parsed.set(database=str(path))
            engine = create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
                cursor.execute("PRAGMA busy_timeout=60000")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        elif backend == "postgresql":
            try:
                engine = create_engine(parsed, pool_pre_ping=True)
            except (ImportError, NoSuchModuleError) as exc:
                raise StoreError(
                    "the PostgreSQL driver is not installed; fix: pip install 'irctl[postgres]'"
                ) from exc
        else:
            raise UsageError(f"store: unsupported database '{backend}' (use sqlite or postgresql)")
        return cls(engine)

    def _create(self) -> None:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.begin() as conn:
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

    def close(self) -> None:
        self.engine.dispose()

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
            with self._lock, self.engine.begin() as conn:
                conn.execute(
                    self._runs.insert().values(
                        id=run_id, runbook=runbook, created_at=first.ts, initiator=initiator,
                        mode=mode, incident=incident,
                    )  # fmt: skip
                )
                conn.execute(self._insert_sql, [_row(first)])
        except IntegrityError as exc:
            raise StoreError(f"run {run_id} already exists") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record run {run_id}: {_brief(exc)}") from exc
        return first

    def append(self, run_id: str, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
        """Append events to a run, durably, in one transaction; returns them hashed."""
        from sqlalchemy.exc import SQLAlchemyError

        if not items:
            return []
        try:
            with self._lock, self.engine.begin() as conn:
                seq, prev = self._head(conn, run_id)
                made: list[Event] = []
                for kind, data in items:
                    seq += 1
                    event = Event.make(run_id, seq, kind, data, prev)
                    prev = event.hash
                    made.append(event)
                conn.execute(self._insert_sql, [_row(e) for e in made])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot append to run {run_id}: {_brief(exc)}") from exc
        return made

    def _head(self, conn: Connection, run_id: str) -> tuple[int, str]:
        from sqlalchemy import select

        if self.dialect == "postgresql":
            # Serialise appends to one run across processes: lock its row.
            locked = conn.execute(
                select(self._runs.c.id).where(self._runs.c.id == run_id).with_for_update()
            ).first()
            if locked is None:
                raise UsageError(f"no run {run_id}")
        ev = self._events
        row = conn.execute(
            select(ev.c.seq, ev.c.hash)
            .where(ev.c.run_id == run_id)
            .order_by(ev.c.seq.desc())
            .limit(1)
        ).first()
        if row is None:
            raise UsageError(f"no run {run_id}")
        return int(row[0]), str(row[1])

    # -- reading ---------------------------------------------------------------

    def lines(self, run_id: str, *, after: int = 0) -> Iterator[str]:
        """The stored canonical lines of a run, in order."""
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        ev = self._events
        query = (
            select(ev.c.line)
            .where(ev.c.run_id == run_id, ev.c.seq > after)
            .order_by(ev.c.seq)
            .execution_options(yield_per=2000)
        )
        try:
            with self.engine.connect() as conn:
                for row in conn.execute(query):
                    yield str(row[0])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read run {run_id}: {_brief(exc)}") from exc

    def events(self, run_id: str, *, after: int = 0) -> list[Event]:
        events = [Event.from_line(line) for line in self.lines(run_id, after=after)]
        if not events and after == 0 and self.get_run(run_id) is None:
            raise UsageError(f"no run {run_id}")
        return events

    def get_run(self, run_id: str) -> RunRow | None:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            row = conn.execute(select(self._runs).where(self._runs.c.id == run_id)).first()
        return RunRow(*row) if row is not None else None

    def find_run(self, prefix: str) -> RunRow:
        """A run by id or unambiguous id prefix."""
        from sqlalchemy import select

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(self._runs).where(self._runs.c.id.startswith(prefix, autoescape=True))
            ).all()
        exact = [r for r in rows if r[0] == prefix]
        if exact:
            return RunRow(*exact[0])
        if not rows:
            raise UsageError(f"no run {prefix!r}; see 'irctl runs list'")
        if len(rows) > 1:
            raise UsageError(f"run id {prefix!r} is ambiguous ({len(rows)} runs match)")
        return RunRow(*rows[0])

    def runs(self, *, limit: int | None = None) -> list[RunRow]:
        from sqlalchemy import select

        query = select(self._runs).order_by(self._runs.c.created_at.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [RunRow(*row) for row in conn.execute(query)]


def _row(event: Event) -> dict[str, Any]:
    return {
        "run_id": event.run, "seq": event.seq, "ts": event.ts, "type": event.type,
        "line": event.line, "hash": event.hash,
    }  # fmt: skip


def _brief(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
