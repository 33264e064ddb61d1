"""What the store holds, in plain Python: a run's row, what is appended, the schema version,
and a database error told in one line.  The standard library only, so that reading a store
(:mod:`irctl.journal.filereader`) needs nothing of :mod:`irctl.journal.store`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from irctl.errors import StoreError

#: The schema this irctl reads and writes (see :mod:`.versions` for the steps up to it).
SCHEMA_VERSION = 2

#: The key of ``irctl_meta`` that holds the schema version (the key older releases read).
VERSION_KEY = "schema"

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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def brief(exc: Exception) -> str:
    return first_line(getattr(exc, "orig", None) or exc)


def version_of(value: str | None) -> int:
    """The schema version a stored ``irctl_meta`` value says (None: no row, version 1)."""
    if value is None:
        return 1
    try:
        version = int(value)
    except ValueError:
        raise StoreError(
            f"the store's schema version {value[:40]!r} is not a number: irctl_meta was "
            "damaged or edited; restore it from a backup"
        ) from None
    if version < 1:
        raise StoreError(f"the store's schema version {version} is not one irctl ever made")
    return version


def refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store is at schema version {version}, made by a newer irctl (this one knows "
            f"up to {SCHEMA_VERSION}): upgrade irctl"
        )


def refuse_other(version: int) -> None:
    """Refuse to write to a store at any version but the code's."""
    refuse_newer(version)
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"the store is at schema version {version}; this irctl needs {SCHEMA_VERSION}: "
            "run irctl store upgrade"
        )
