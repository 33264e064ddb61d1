"""Copying a whole store into an empty one (``irctl store migrate``): SQLite to PostgreSQL.

Owns what a copy takes — every run row, every event row as stored (the same line, seq, ts,
type and hash: the chain is not rebuilt, so it verifies on the copy exactly as on the
original), ``irctl_meta`` (the runs' salts; the schema version is the target's own), the
used-once keys, and any other ``irctl_`` table beside them (the drill scheduler's jobs) —
and how: the source read in one snapshot, the target written in one transaction, committed
only if the source did not change meanwhile, so a copy is whole or not there at all.

The run executor locks are not copied: they are held by live processes (an OS file lock, a
PostgreSQL session), never stored, and a process that exits leaves none behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from irctl.errors import StoreError
from irctl.journal.store.schema import brief
from irctl.journal.store.versions import VERSION_KEY

#: Events inserted per statement batch.
BATCH = 2000

# progress(runs copied, runs in all)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Copied:
    """What :func:`copy_store` wrote to the target."""

    runs: list[str]  # every run id copied, oldest first
    events: int
    tables: dict[str, int] = field(default_factory=dict)  # other tables: rows copied


def copy_store(source: Any, writer: Any, meta: Any, *, progress: Progress | None = None) -> Copied:
    """Copy everything in ``source`` (an engine) through ``writer`` (the target's engine
    whose transactions take the write lock), tables ``meta``, in one transaction."""
    from sqlalchemy import func, inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    runs_t, events_t = meta.tables["irctl_runs"], meta.tables["irctl_events"]
    try:
        with _snapshot(source) as read, writer.begin() as write:
            existing = write.execute(select(func.count()).select_from(runs_t)).scalar_one()
            if existing:  # checked again inside the transaction that writes
                raise StoreError(f"the target holds {existing} runs already; nothing was copied")
            runs = read.execute(select(runs_t).order_by(runs_t.c.created_at, runs_t.c.id)).all()
            ids = [str(row.id) for row in runs]
            if runs:
                write.execute(runs_t.insert(), [dict(row._mapping) for row in runs])
            events = 0
            for done, run_id in enumerate(ids, start=1):
                query = (
                    select(events_t)
                    .where(events_t.c.run_id == run_id)
                    .order_by(events_t.c.seq)
                    .execution_options(yield_per=BATCH)
                )
                for batch in _batches(read.execute(query), BATCH):
                    write.execute(events_t.insert(), batch)
                    events += len(batch)
                if progress is not None:
                    progress(done, len(ids))
            tables = {
                "irctl_meta": _copy_meta(read, write, meta.tables["irctl_meta"]),
                "irctl_used_once": _copy_rows(read, write, meta.tables["irctl_used_once"]),
            }
            known = set(meta.tables)
            others = sorted(
                name for name in inspect(read).get_table_names()
                if name.startswith("irctl_") and name not in known
            )  # fmt: skip
            for name in others:
                tables[name] = _copy_other(read, write, name)
            _unchanged(source, meta, len(ids), events)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot copy the store: {brief(exc)}; nothing was copied") from exc
    return Copied(ids, events, tables)


@contextmanager
def _snapshot(engine: Any) -> Iterator[Any]:
    """One read transaction on the source: every table read as of one moment."""
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with engine.connect() as conn:
        tx = conn.begin()  # SQLite: BEGIN, a WAL snapshot from the first read on
        try:
            yield conn
        finally:
            tx.rollback()


def _batches(rows: Any, size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(row._mapping))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _copy_rows(read: Any, write: Any, table: Any, into: Any = None) -> int:
    from sqlalchemy import select

    copied = 0
    for batch in _batches(read.execute(select(table)), BATCH):
        write.execute((into if into is not None else table).insert(), batch)
        copied += len(batch)
    return copied


def _copy_meta(read: Any, write: Any, table: Any) -> int:
    """Every key but the schema version: the target was made at this irctl's version."""
    from sqlalchemy import select

    rows = read.execute(select(table).where(table.c.key != VERSION_KEY)).all()
    if rows:
        write.execute(table.insert(), [dict(row._mapping) for row in rows])
    return len(rows)


def _copy_other(read: Any, write: Any, name: str) -> int:
    """A table irctl does not define itself (the scheduler's jobs): its columns as the
    source has them, in the target's own types, created there if it is missing."""
    from sqlalchemy import Column, MetaData, Table, inspect

    found = Table(name, MetaData(), autoload_with=read)
    into = Table(
        name, MetaData(),
        *(Column(c.name, c.type.as_generic(), primary_key=c.primary_key, nullable=c.nullable)
          for c in found.columns),
    )  # fmt: skip
    if name not in inspect(write).get_table_names():
        into.create(write)
    return _copy_rows(read, write, found, into)


def _unchanged(source: Any, meta: Any, runs: int, events: int) -> None:
    """Refuse to commit a copy of a source someone wrote to while it was read."""
    from sqlalchemy import func, select

    with source.connect() as conn:
        now_runs = conn.execute(
            select(func.count()).select_from(meta.tables["irctl_runs"])
        ).scalar_one()
        now_events = conn.execute(
            select(func.count()).select_from(meta.tables["irctl_events"])
        ).scalar_one()
    if (now_runs, now_events) != (runs, events):
        raise StoreError(
            f"the store changed while it was copied ({now_runs - runs} runs and "
            f"{now_events - events} events more): stop every irctl process using it "
            "(runs, irctl serve, the scheduler), then migrate again; nothing was copied"
        )
