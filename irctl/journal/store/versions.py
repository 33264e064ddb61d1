"""The store's schema version, and the steps that bring an older store up to this irctl's.

Owns where the version is kept (``irctl_meta``, key ``schema``: the key every release has
read, so an older irctl refuses a store upgraded past it instead of writing into it), what
counts as which version (irctl's tables with no version row: version 1, a store made before
the version was kept), the refusals (a store older than the code is not written to until
``irctl store upgrade``; one newer than the code is not opened at all) and the upgrade steps,
each run inside the one transaction :func:`upgrade` holds.  A read never upgrades.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from irctl.errors import StoreError
from irctl.journal.rows import SCHEMA_VERSION
from irctl.journal.rows import VERSION_KEY as VERSION_KEY  # noqa: PLC0414
from irctl.journal.rows import refuse_newer as refuse_newer  # noqa: PLC0414
from irctl.journal.rows import refuse_other as refuse_other  # noqa: PLC0414
from irctl.journal.rows import version_of as version_of  # noqa: PLC0414

JOURNAL = frozenset({"irctl_runs", "irctl_events"})
IRCTL_TABLES = frozenset({"irctl_meta", *JOURNAL})


def stored_version(conn: Any, present: set[str], meta: Any) -> int | None:
    """The schema version of the store ``conn`` is in; None when it holds none of irctl's
    tables (a new store).  ``present``: the tables the database has."""
    from sqlalchemy import select

    if not present & IRCTL_TABLES:
        return None
    lost = JOURNAL - present
    if lost:
        # A store that was set up has lost its journal: never start an empty one over it,
        # which would hide that every recorded run is gone.
        raise StoreError(
            f"the store has lost its {' and '.join(sorted(lost))} table: it was "
            "damaged or edited; restore it from a backup"
        )
    if "irctl_meta" not in present:
        return 1
    table = meta.tables["irctl_meta"]
    row = conn.execute(select(table.c.value).where(table.c.key == VERSION_KEY)).first()
    return version_of(None if row is None else str(row[0]))


def write_version(conn: Any, meta: Any, version: int) -> None:
    from sqlalchemy import update

    table = meta.tables["irctl_meta"]
    done = conn.execute(update(table).where(table.c.key == VERSION_KEY).values(value=str(version)))
    if not done.rowcount:
        conn.execute(table.insert().values(key=VERSION_KEY, value=str(version)))


@dataclass(frozen=True)
class Step:
    """One upgrade step: brings a store at ``version - 1`` to ``version``."""

    version: int
    does: str
    apply: Callable[[Any, Any], None]  # (connection, tables)


def _keep_the_version(conn: Any, meta: Any) -> None:
    # Stores made before the version was kept may lack irctl_meta (and irctl_used_once):
    # create whatever table of version 2 is missing; the version row is written after.
    meta.create_all(conn, checkfirst=True)


STEPS = (
    Step(
        2, "keep the schema version in irctl_meta, creating the tables it lacked", _keep_the_version
    ),
)


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` found and did."""

    before: int
    after: int
    done: list[str]  # one line per step run: "1 -> 2: what it did"


def upgrade(writer: Any, dialect: str, meta: Any, *, lock: int) -> Upgrade:
    """Run every step the store is missing, in one transaction (all of them, or none).

    ``writer``: an engine whose transactions take the write lock (SQLite ``BEGIN
    IMMEDIATE``); on PostgreSQL the advisory lock ``lock`` keeps other processes opening the
    store waiting until the upgrade is committed.
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from irctl.journal.store.schema import brief

    try:
        with writer.begin() as conn:
            if dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({lock})")
            present = set(inspect(conn).get_table_names())
            version = stored_version(conn, present, meta)
            if version is None:
                raise StoreError("the database holds no irctl store: there is nothing to upgrade")
            refuse_newer(version)
            done = []
            for step in STEPS:
                if step.version <= version:
                    continue
                step.apply(conn, meta)
                write_version(conn, meta, step.version)
                done.append(f"{step.version - 1} -> {step.version}: {step.does}")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot upgrade the store: {brief(exc)}") from exc
    return Upgrade(version, max(version, SCHEMA_VERSION), done)
