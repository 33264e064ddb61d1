"""What the store does when the machine or the database fails it: told apart, waited out, told.

Owns how a driver's error is read — a full disk (SQLite ``SQLITE_FULL``, ``ENOSPC``,
PostgreSQL ``53100``), a lost connection (the server restarted, the backend was terminated,
the network dropped: nothing to do but reconnect), a conflict PostgreSQL resolves by
aborting one side (serialization failure ``40001``, deadlock ``40P01``: try again) — and
:class:`Patience`, the bounded wait with backoff between tries.  A full disk is not waited
out: it is :class:`~irctl.errors.StoreUnavailable` (exit 74) at once, naming the file; a
database that stays away longer than the bound is ``store unavailable: ...`` (exit 74).
Either way everything committed before it stays, and the run can be resumed.
"""

from __future__ import annotations

import errno
import random
import time

from irctl.errors import StoreError, StoreUnavailable
from irctl.journal.store.schema import first_line

#: How long a lost database is waited for by default (irctl.yaml ``store_retry``).
RETRY_FOR = 30.0
_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 2.0

_LOST_SQLSTATES = {
    "57P01",  # admin_shutdown: the backend was terminated, or the server is shutting down
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the server is starting up
    "08000", "08003", "08006", "08001", "08004",  # connection exceptions
}  # fmt: skip
_CONFLICT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def _driver_error(exc: BaseException) -> BaseException:
    """The DBAPI error under a SQLAlchemy one."""
    return getattr(exc, "orig", None) or exc


def disk_full(exc: BaseException) -> bool:
    found = _driver_error(exc)
    if isinstance(found, OSError) and found.errno == errno.ENOSPC:
        return True
    if getattr(found, "sqlite_errorname", None) == "SQLITE_FULL":
        return True
    return getattr(found, "sqlstate", None) == "53100"  # PostgreSQL disk_full


def lost(exc: BaseException) -> bool:
    """The connection to the database is gone (or the server cannot take one right now)."""
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy saw a disconnect
        return True
    found = _driver_error(exc)
    sqlstate = getattr(found, "sqlstate", None)
    if sqlstate in _LOST_SQLSTATES:
        return True
    module = type(found).__module__
    if not module.startswith("psycopg"):
        return False
    import psycopg

    if isinstance(found, psycopg.OperationalError) and sqlstate is None:
        return True  # no SQLSTATE: the client could not reach or lost the server
    return isinstance(found, psycopg.InterfaceError) and "closed" in str(found)


def restarting(exc: BaseException) -> bool:
    """The server is there but starting up or shutting down (a restart): worth waiting for
    even by a command that has not reached it yet, unlike a refused connection (nothing
    listens there: more likely a wrong URL, told at once)."""
    return getattr(_driver_error(exc), "sqlstate", None) in {"57P01", "57P02", "57P03"} or (
        "the database system is" in str(_driver_error(exc))  # starting up / shutting down
    )


def conflict(exc: BaseException) -> bool:
    """PostgreSQL aborted this transaction to resolve a conflict: running it again is safe."""
    return getattr(_driver_error(exc), "sqlstate", None) in _CONFLICT_SQLSTATES


def failure(what: str, exc: BaseException, where: str, then: str = "try again") -> StoreError:
    """The error to raise for ``exc`` met while doing ``what`` (``cannot append to run X``);
    ``then``: what to do once the disk has room again."""
    found = _driver_error(exc)
    said = first_line(found)
    if disk_full(found):
        return StoreUnavailable(
            f"{what}: the disk is full: {where} ({said}); everything recorded before is "
            f"kept: free space there, then {then}"
        )
    if lost(exc):
        return StoreUnavailable(f"store unavailable: {what}: {said} ({where})")
    return StoreError(f"{what}: {said}")


class Patience:
    """The bounded wait between tries: ``pause`` sleeps a little longer each time (with
    jitter, so that many processes do not come back at once), until ``bound`` seconds have
    passed since the first failure; then it raises ``store unavailable`` (exit 74)."""

    def __init__(self, bound: float, what: str, where: str) -> None:
        self.bound = bound
        self.what = what
        self.where = where
        self.tries = 0
        self._deadline = time.monotonic() + bound
        self._next = _FIRST_PAUSE

    def pause(self, exc: BaseException) -> None:
        self.tries += 1
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailable(
                f"store unavailable: {self.what}: {first_line(_driver_error(exc))} "
                f"({self.where}; tried {self.tries} times over {self.bound:g} s); everything "
                "recorded before is kept: resume the run when the database is back"
            ) from exc
        time.sleep(min(left, self._next * random.uniform(0.5, 1.0)))  # noqa: S311 - jitter
        self._next = min(self._next * 2, _LONGEST_PAUSE)
