"""Opening a store: a database URL made a database irctl can record in, or read.

Owns the SQLAlchemy engine for a URL — SQLite tuned for durable commits (WAL,
``synchronous=FULL``), or opened to read only without writing a byte, even on read-only
media; PostgreSQL through psycopg, its sessions read-only for a reader — and irctl's tables:
created (by one process at a time) when a store is opened to record, checked when it is
opened to read, a store that lost its journal or uses a newer schema refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import NoStore, StoreError, UsageError
from irctl.journal.filereader import _no_file, _not_a_store, _sqlite3_connect, _sqlite_reader_uri
from irctl.journal.store.faults import failure
from irctl.journal.store.schema import SCHEMA_VERSION
from irctl.journal.store.versions import refuse_newer, refuse_other, stored_version, write_version

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

SCHEMA_LOCK = 0x697263746C  # the PostgreSQL advisory lock held while creating the tables


_QUIET = logging.NullHandler()


class NoTables(Exception):  # an internal signal, never reaches a user
    """Raised by :func:`check_tables`: the database holds none of irctl's tables."""


@dataclass(frozen=True)
class Database:
    """A database URL made an SQLAlchemy engine, and how messages name it."""

    engine: Engine
    dedicated: bool  # appends may take a connection out of the pool (not SQLite :memory:)
    where: str  # the store, for messages (never its password)
    a_file: bool  # a SQLite database in a file (not in memory)
    origin_note: str  # where the URL came from, for messages: " (from IRCTL_STORE)"

    def no_store(self) -> NoStore:
        """The error for a database that holds none of irctl's tables."""
        if self.a_file:
            return _not_a_store(self.where, self.origin_note)
        return NoStore(
            f"no irctl store in {self.where}{self.origin_note}: the database has no irctl "
            "tables, so nothing has been recorded there; check the URL",
            location=self.where,
            absent=False,
        )


def _redacted(text: str) -> str:
    """``text`` with the password of any URL in it (``scheme://user:PASSWORD@host``) hidden."""
    import re

    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def connect(url: str, *, workspace: Path | None, create: bool, origin: str | None) -> Database:
    """The database at a SQLAlchemy URL (a relative SQLite path is relative to ``workspace``);
    with ``create=False``, set up to read only (see :meth:`irctl.journal.store.Store.open`)."""
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
    except ImportError as exc:  # pragma: no cover - SQLAlchemy is a core dependency
        raise StoreError(f"SQLAlchemy is not installed: {exc}") from exc
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UsageError(
            f"store: {_redacted(url)!r} is not a database URL "
            "(expected e.g. sqlite:///.irctl/irctl.db or postgresql://user@host/db)"
        ) from exc
    backend = parsed.get_backend_name()
    origin_note = f" ({origin})" if origin else ""
    where = parsed.render_as_string(hide_password=True)  # the store, for messages
    if backend == "sqlite":
        return _sqlite(parsed, url, workspace, create, where, origin_note)
    if backend == "postgresql":
        return Database(_postgresql(parsed, url, create), True, where, False, origin_note)
    raise UsageError(f"store: unsupported database '{backend}' (use sqlite or postgresql)")


def _sqlite(
    parsed: URL, url: str, workspace: Path | None, create: bool, where: str, origin_note: str
) -> Database:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    dedicated = True
    a_file = False  # a SQLite database in a file (not in memory)
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
                raise StoreError(f"cannot create the store directory {path.parent}: {exc}") from exc
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
        raise UsageError(f"store: cannot use {where!r}: {_redacted(str(exc))}") from exc
    _sqlite_settings(engine, create)
    return Database(engine, dedicated, where, a_file, origin_note)


def _sqlite_settings(engine: Engine, create: bool) -> None:
    """What every SQLite connection of the store is set to, and how its transactions begin."""
    from sqlalchemy import event

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


def _postgresql(parsed: URL, url: str, create: bool) -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # irctl[postgres] ships it
    # The pool logs a traceback when a connection that broke (a restarted server) fails to be
    # reset on its way back; the store itself waits that out or says what failed, in a line.
    logging.getLogger("sqlalchemy.pool").addHandler(_QUIET)
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
        where = parsed.render_as_string(hide_password=True)
        raise UsageError(f"store: cannot use {where!r}: {_redacted(str(exc))}") from exc
    if not create:

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: Any, _record: Any) -> None:
            # Every transaction of a reader's session is READ ONLY: a write fails.
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            dbapi_conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            dbapi_conn.autocommit = autocommit

    return engine


def create_tables(writer: Engine, dialect: str, meta: Any, where: str = "") -> None:
    """Create irctl's tables in a new store at this irctl's schema version; in one that
    exists, check that it is at that version (an older one: ``irctl store upgrade`` first)
    and create a table it lacks (``writer``: the engine whose transactions take the write
    lock)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with writer.begin() as conn:
            if dialect == "postgresql":
                # Several processes opening a new store at once: one creates the tables,
                # the others wait here, then find them (SQLite's BEGIN IMMEDIATE does this).
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            present = set(inspect(conn).get_table_names())
            version = stored_version(conn, present, meta)
            if version is not None:
                refuse_other(version)  # nothing is written to a store at another version
            meta.create_all(conn, checkfirst=True)
            if version is None:
                write_version(conn, meta, SCHEMA_VERSION)
    except SQLAlchemyError as exc:
        raise failure(
            "cannot open the store", exc, where or writer.url.render_as_string(hide_password=True)
        ) from exc


def check_tables(engine: Engine, meta: Any, where: str = "") -> int:
    """What :func:`create_tables` checks, by reading only: the tables are there, the schema
    is not newer than the code's (:class:`NoTables` when none of them is).  An older schema
    can be read; returns the version."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            version = stored_version(conn, present, meta)
            if version is None:
                raise NoTables
            refuse_newer(version)
    except SQLAlchemyError as exc:
        raise failure(
            "cannot open the store", exc, where or engine.url.render_as_string(hide_password=True)
        ) from exc
    return version
