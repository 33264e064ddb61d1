"""Reading a SQLite store file with the standard library's ``sqlite3`` alone.

The commands people type most under stress (``irctl status``, ``runs list``, ``approvals
pending``) only read, and SQLAlchemy costs more to import (~130 ms) than everything they
do on a store of a thousand runs.  :class:`FileReader` reads the same tables with the same
SQL and the same checks as :class:`~irctl.journal.store.Store` opened to read only
(``create=False``): the same read-only URI (:func:`_sqlite_reader_uri`, which the store
uses too), ``query_only`` set, the tables checked and a newer schema refused, a damaged event
told as :class:`~irctl.errors.CorruptEvent`.  It never writes, creates or migrates anything.
It sits beside :mod:`irctl.journal.store`, not in it, and needs only :mod:`.rows` and the
standard library: importing the store package would cost its commands ~20 ms more.

It reads what the database holds, as the store does: a run's state is only ever what its
events, folded, verified where it matters, say — never a column of the database.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from irctl.errors import CorruptEvent, NoStore, StoreError, UsageError
from irctl.journal.events import Event
from irctl.journal.rows import RunRow, first_line, refuse_newer, version_of

_SELECT_RUNS = "SELECT id, runbook, created_at, initiator, mode, incident FROM irctl_runs"
_NEWEST_FIRST = " ORDER BY created_at DESC, id DESC"

#: Runs that may have an approval pending: they asked for one, and the last of the events
#: that end a run (succeeded, failed, aborted) or make it anything else again is not one
#: that ends it.  :func:`irctl.journal.state.fold` decides; this only leaves out runs that
#: are over.  The same text runs on SQLite and PostgreSQL.
UNFINISHED_SQL = """
SELECT r.id, r.runbook, r.created_at, r.initiator, r.mode, r.incident FROM irctl_runs r
WHERE EXISTS (SELECT 1 FROM irctl_events a WHERE a.run_id = r.id
              AND a.type = 'approval.requested')
  AND COALESCE((SELECT e.type FROM irctl_events e WHERE e.run_id = r.id
                AND e.type IN ('run.succeeded', 'run.failed', 'run.aborted', 'run.started',
                               'run.resumed', 'run.waiting', 'run.interrupted', 'run.retried',
                               'run.tampered', 'step.waived')
                ORDER BY e.seq DESC LIMIT 1), '')
      NOT IN ('run.succeeded', 'run.failed', 'run.aborted')
ORDER BY r.created_at DESC, r.id DESC
"""


def file_path(url: str, workspace: Path | None) -> Path | None:
    """The file of a plain SQLite URL (``sqlite:///.irctl/irctl.db``, ``sqlite:////abs``),
    relative to ``workspace``; None for anything else (memory, URI filenames, options,
    another database), which the SQLAlchemy store reads."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    database = url[len(prefix) :]
    if not database or "?" in database or database.startswith(("file:", ":memory:")):
        return None
    path = Path(unquote(database))
    if not path.is_absolute() and workspace is not None:
        path = workspace / path
    return path.absolute()


def parse_events(run_id: str, lines: Iterator[str], after: int) -> list[Event]:
    """Stored lines as events; a line that cannot be read is :class:`CorruptEvent`."""
    events = []
    for number, line in enumerate(lines, start=after + 1):
        try:
            events.append(Event.from_line(line))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise CorruptEvent(
                f"run {run_id}: stored event {number} cannot be read ({exc}); "
                f"'irctl transcript verify {run_id}' shows what is wrong"
            ) from None
    return events


def _encodable(text: str) -> bool:
    """False for text holding lone surrogates (bytes that were not UTF-8 on the command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RunReads:
    """What the store and the file reader read alike, over their own ``lines``, ``get_run``
    and ``_starting`` (the rows of the runs whose id starts with a prefix)."""

    def lines(self, run_id: str, *, after: int = 0) -> Iterator[str]:
        raise NotImplementedError

    def get_run(self, run_id: str) -> RunRow | None:
        raise NotImplementedError

    def _starting(self, prefix: str) -> list[Any]:
        raise NotImplementedError

    def events(self, run_id: str, *, after: int = 0) -> list[Event]:
        events = parse_events(run_id, self.lines(run_id, after=after), after)
        if not events and after == 0 and self.get_run(run_id) is None:
            raise UsageError(f"no run {run_id}")
        return events

    def find_run(self, prefix: str) -> RunRow:
        """A run by id or unambiguous id prefix."""
        if not prefix.strip():
            raise UsageError("no run id given (an empty id would match every run)")
        if len(prefix) > 64 or not prefix.isprintable() or not _encodable(prefix):
            raise UsageError(f"no run {prefix[:80]!r}; see 'irctl runs list'")
        rows = [r for r in self._starting(prefix) if r[0].startswith(prefix)]  # LIKE ignores case
        exact = [r for r in rows if r[0] == prefix]
        if exact:
            return RunRow(*exact[0])
        if not rows:
            raise UsageError(f"no run {prefix!r}; see 'irctl runs list'")
        if len(rows) > 1:
            raise UsageError(f"run id {prefix!r} is ambiguous ({len(rows)} runs match)")
        return RunRow(*rows[0])


class FileReader(RunReads):
    """A SQLite store file opened to read only; the read methods of the store."""

    dialect = "sqlite"
    readonly = True

    def __init__(self, path: Path, *, origin: str | None = None) -> None:
        note = f" ({origin})" if origin else ""
        self.path = path
        uri = _sqlite_reader_uri(path, note)
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
            self._conn.execute("PRAGMA query_only=1")
            self._conn.execute("PRAGMA busy_timeout=60000")
            self._check(note)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store: {first_line(exc)}") from exc

    def _check(self, note: str) -> None:
        """The checks of :func:`~.opening.check_tables`, in plain SQL."""
        present = {
            str(row[0])
            for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not present & {"irctl_meta", "irctl_runs", "irctl_events"}:
            self._conn.close()
            raise _not_a_store(self.path, note)
        lost = {"irctl_runs", "irctl_events"} - present
        if lost:
            raise StoreError(
                f"the store has lost its {' and '.join(sorted(lost))} table: it was "
                "damaged or edited; restore it from a backup"
            )
        self._has_meta = "irctl_meta" in present
        row = None
        if self._has_meta:
            row = self._conn.execute("SELECT value FROM irctl_meta WHERE key = 'schema'").fetchone()
        # An older store is read as it is (a read never upgrades); a newer one is refused.
        self.schema_version = version_of(None if row is None else str(row[0]))
        refuse_newer(self.schema_version)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {what}: {first_line(exc)}") from exc

    def _all(self, what: str, sql: str, *args: Any) -> list[Any]:
        with self._reading(what):
            return self._conn.execute(sql, args).fetchall()

    def lines(self, run_id: str, *, after: int = 0) -> Iterator[str]:
        """The stored canonical lines of a run, in order."""
        sql = "SELECT line FROM irctl_events WHERE run_id = ? AND seq > ? ORDER BY seq"
        with self._reading(f"run {run_id}"):
            for (line,) in self._conn.execute(sql, (run_id, after)):
                yield str(line)

    def get_run(self, run_id: str) -> RunRow | None:
        rows = self._all(f"run {run_id}", _SELECT_RUNS + " WHERE id = ?", run_id)
        return RunRow(*rows[0]) if rows else None

    def _starting(self, prefix: str) -> list[Any]:
        pattern = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        return self._all("runs", _SELECT_RUNS + " WHERE id LIKE ? ESCAPE '/'", pattern)

    def runs(self, *, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first (ties in ``created_at`` broken by id, descending)."""
        sql = _SELECT_RUNS + _NEWEST_FIRST
        if limit:
            return [RunRow(*r) for r in self._all("runs", sql + " LIMIT ?", int(limit))]
        return [RunRow(*r) for r in self._all("runs", sql)]

    def meta_value(self, key: str) -> str | None:
        """A value of the store's ``irctl_meta`` table (its schema version, runs' salts)."""
        if not self._has_meta:
            return None
        sql = "SELECT value FROM irctl_meta WHERE key = ?"
        rows = self._all("the store's settings", sql, key)
        return str(rows[0][0]) if rows else None

    def unfinished_runs(self) -> list[RunRow]:
        """Runs, newest first, that have not ended or were taken up again after ending, and
        have asked for an approval: the only runs an approval can be pending in.

        A row someone forged can hide a run from this list (as it would from a fold of the
        run's events); it never grants anything: deciding re-derives from signed events."""
        return [RunRow(*r) for r in self._all("runs", UNFINISHED_SQL)]


def _not_a_store(path: Path | str, note: str) -> NoStore:
    """The error for a SQLite file that holds none of irctl's tables."""
    return NoStore(
        f"{path}{note} is not an irctl store: it has no irctl tables; check the path (a copy "
        "of a store needs the -wal file beside the original copied with it, if there was one)",
        location=str(path),
        absent=False,
    )


class Reading(Protocol):
    """What commands that only read use of a store: :class:`~irctl.journal.store.Store`
    opened with ``create=False``, or a :class:`FileReader`."""

    dialect: str
    readonly: bool

    def close(self) -> None: ...
    def lines(self, run_id: str, *, after: int = 0) -> Iterator[str]: ...
    def events(self, run_id: str, *, after: int = 0) -> list[Event]: ...
    def get_run(self, run_id: str) -> RunRow | None: ...
    def find_run(self, prefix: str) -> RunRow: ...
    def runs(self, *, limit: int | None = None) -> list[RunRow]: ...
    def unfinished_runs(self) -> list[RunRow]: ...
    def meta_value(self, key: str) -> str | None: ...


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
