"""The store's tables, its schema version, and a database error told in one line.

Owns the four tables (``irctl_meta`` with the schema version, ``irctl_runs``,
``irctl_events``: one row per event, its canonical line and hash, and ``irctl_used_once``),
the row of a run, the shapes of what is appended (:data:`Item`, :data:`Seal`), and the
first line of a driver's error, which is all a message about the store shows of it.
"""

from __future__ import annotations

from typing import Any

from irctl.journal.rows import SCHEMA_VERSION as SCHEMA_VERSION  # noqa: PLC0414
from irctl.journal.rows import Item as Item  # noqa: PLC0414
from irctl.journal.rows import RunRow as RunRow  # noqa: PLC0414
from irctl.journal.rows import Seal as Seal  # noqa: PLC0414
from irctl.journal.rows import brief as brief  # noqa: PLC0414
from irctl.journal.rows import first_line as first_line  # noqa: PLC0414


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
