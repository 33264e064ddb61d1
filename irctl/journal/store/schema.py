"""The store's tables, its schema version, and a database error told in one line.

Owns the four tables (``irctl_meta`` with the schema version, ``irctl_runs``,
``irctl_events``: one row per event, its canonical line and hash, and ``irctl_used_once``),
the row of a run, the shapes of what is appended (:data:`Item`, :data:`Seal`), and the
first line of a driver's error, which is all a message about the store shows of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The schema this irctl reads and writes (see :mod:`.versions` for the steps up to it).
SCHEMA_VERSION = 2

# seal(run_id, seq, hash) -> the data of a checkpoint sealing that event
Seal = Callable[[str, int, str], dict[str, Any]]
#: An event to append: ``(type, data)``, or ``(type, data, ts)`` for one that happened earlier
#: than it is appended (the engine's outcomes committed with the next event).
Item = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]


@dataclass(frozen=True)
class RunRow:
    id: str
    runbook: str
    created_at: str
    initiator: str
    mode: str
    incident: str | None


def tables() -> Any:
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def brief(exc: Exception) -> str:
    return first_line(getattr(exc, "orig", None) or exc)
