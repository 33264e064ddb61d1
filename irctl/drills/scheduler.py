"""The drill scheduler: APScheduler 3.11 jobs kept in the irctl store, one leader per store.

``irctl drill schedule`` stores one job per drill (id ``drill:<id>``, and
``drill:<id>:at`` for a one-off ``--at`` run) in APScheduler's SQLAlchemy job
store, in its own table (``irctl_scheduler_jobs``) of the irctl store: cron in
the drill's time zone, a misfire grace period, coalescing (a scheduler that was
down fires a missed drill once, not once per missed time), and
``replace_existing`` so scheduling again or restarting never duplicates a job.

``irctl scheduler run`` fires them.  APScheduler's job stores must never be
shared between running schedulers, so exactly one scheduler leads per store:

* SQLite file store: an exclusive ``flock`` on ``<db file>.scheduler.lock``
  beside the database (it names the holder: pid, host, since);
* PostgreSQL: a session-level advisory lock on a connection of its own.

Both belong to the process: when the leader dies, even by SIGKILL, the lock
goes with it and a standby (polling every ``poll`` seconds) takes over.  A
leader that loses its PostgreSQL session stops leading at once.  Each fired
drill runs as its own process (``irctl drill run ID --scheduled``), so a drill
outlives the scheduler that started it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import StoreError, UsageError
from irctl.runbook.model import Drill, parse_duration

if TYPE_CHECKING:
    from irctl.journal.store import Store

TABLE = "irctl_scheduler_jobs"
MISFIRE_GRACE = 3600  # seconds a missed drill may still start late
FIRE = "irctl.drills.scheduler:fire_drill"
#: The same function as jobs stored before the drill scheduler moved into irctl.drills name it.
_FORMER_FIRE = "irctl.scheduler:fire_drill"
_HOST = socket.gethostname()
_LEADER_KEY = int.from_bytes(
    hashlib.sha256(b"irctl scheduler leader").digest()[:8], "big", signed=True
)

Say = Callable[[str], None]


def job_id(drill_id: str, *, once: bool = False) -> str:
    return f"drill:{drill_id}:at" if once else f"drill:{drill_id}"


def _carry_over(store: Store) -> None:
    """Point jobs stored by an earlier irctl at :data:`FIRE`, before APScheduler reads them.

    APScheduler stores the function a job fires by its import path, and removes a job whose
    function it cannot import: without this, drills scheduled while the scheduler was
    ``irctl.scheduler`` would be dropped, silently, the first time the jobs are read.
    """
    import pickle

    from sqlalchemy import MetaData, Table, inspect, select, update
    from sqlalchemy.exc import SQLAlchemyError

    former = _FORMER_FIRE.encode()
    try:
        if not inspect(store.engine).has_table(TABLE):
            return
        table = Table(TABLE, MetaData(), autoload_with=store.engine)
        with store.engine.connect() as conn:
            rows = conn.execute(select(table.c.id, table.c.job_state)).all()
        stale = [(row.id, data) for row in rows if former in (data := bytes(row.job_state))]
        if not stale:
            return
        with store.engine.execution_options(irctl_write=True).begin() as conn:
            for job, data in stale:
                # the job store's own pickle (APScheduler reads it back the same way)
                state = pickle.loads(data)  # noqa: S301
                if state.get("func") != _FORMER_FIRE:
                    continue
                state["func"] = FIRE
                conn.execute(
                    update(table)
                    .where(table.c.id == job)
                    .values(job_state=pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
                )
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the scheduler's jobs in the store: {exc}") from exc


def _scheduler(store: Store, *, workers: int = 4) -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    _carry_over(store)
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=store.engine, tablename=TABLE)},
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults={"coalesce": True, "misfire_grace_time": MISFIRE_GRACE, "max_instances": 1},
        timezone=UTC,
    )


class _Paused:
    """A scheduler started paused: reads and writes the job store, fires nothing."""

    def __init__(self, store: Store) -> None:
        self.scheduler = _scheduler(store, workers=1)

    def __enter__(self) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self.scheduler.start(paused=True)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the scheduler's jobs in the store: {exc}") from exc
        return self.scheduler

    def __exit__(self, *_: object) -> None:
        self.scheduler.shutdown(wait=False)


def _trigger(drill: Drill, at: str | None) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger

    if at is not None:
        return DateTrigger(run_date=parse_at(at), timezone=UTC)
    if drill.schedule is None:
        raise UsageError(
            f"drill '{drill.id}' has no schedule: add schedule: {{cron: ..., timezone: ...}} "
            "to it, or give --at for a one-off run"
        )
    try:
        zone = ZoneInfo(drill.schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(
            f"drill '{drill.id}': unknown time zone {drill.schedule.timezone!r}"
        ) from exc
    try:
        return CronTrigger.from_crontab(drill.schedule.cron, timezone=zone)
    except ValueError as exc:
        raise UsageError(
            f"drill '{drill.id}': cron {drill.schedule.cron!r} is not valid: {exc}"
        ) from exc


def parse_at(text: str) -> datetime:
    """``+10s`` (from now) or an ISO 8601 time (UTC when it names no zone)."""
    text = text.strip()
    if text.startswith("+"):
        try:
            return datetime.now(UTC) + timedelta(seconds=parse_duration(text[1:]))
        except ValueError as exc:
            raise UsageError(f"--at {text!r}: {exc}") from None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not a time: write 2026-12-01T14:00:00Z or +10m"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _describe(job: Any) -> dict[str, Any]:
    nxt = job.next_run_time
    return {
        "id": job.id,
        "drill": job.kwargs.get("drill"),
        "trigger": str(job.trigger),
        "timezone": str(getattr(job.trigger, "timezone", "UTC")),
        "next_run": nxt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if nxt else None,
        "time_scale": job.kwargs.get("time_scale", 1.0),
        "misfire_grace_time": job.misfire_grace_time,
        "coalesce": job.coalesce,
    }


def schedule_drill(
    store: Store,
    workspace: Path,
    drill: Drill,
    *,
    at: str | None = None,
    time_scale: float = 1.0,
    sandbox: str | None = None,
) -> dict[str, Any]:
    """Store (or replace) the drill's job; returns what was stored."""
    if not time_scale > 0:
        raise UsageError(f"the time scale must be above 0, not {time_scale:g}")
    trigger = _trigger(drill, at)
    kwargs = {
        "workspace": str(workspace.resolve()), "drill": drill.id, "time_scale": time_scale,
        "sandbox": sandbox,
    }  # fmt: skip
    with _Paused(store) as scheduler:
        job = scheduler.add_job(
            FIRE, trigger=trigger, id=job_id(drill.id, once=at is not None),
            name=f"drill {drill.id}", kwargs=kwargs, replace_existing=True,
            coalesce=True, misfire_grace_time=MISFIRE_GRACE, max_instances=1,
        )  # fmt: skip
        stored = scheduler.get_job(job.id)
        return _describe(stored if stored is not None else job)


def unschedule_drill(store: Store, drill_id: str) -> int:
    """Remove the drill's jobs; how many there were."""
    removed = 0
    with _Paused(store) as scheduler:
        for once in (False, True):
            if scheduler.get_job(job_id(drill_id, once=once)) is not None:
                scheduler.remove_job(job_id(drill_id, once=once))
                removed += 1
    return removed


def scheduled_jobs(store: Store) -> list[dict[str, Any]]:
    with _Paused(store) as scheduler:
        return [_describe(job) for job in scheduler.get_jobs()]


# -- firing -------------------------------------------------------------------------------------


def fire_drill(
    workspace: str, drill: str, time_scale: float = 1.0, sandbox: str | None = None
) -> int:
    """Start ``irctl drill run`` for a drill as a process of its own; its pid.

    The job APScheduler stores (``irctl.drills.scheduler:fire_drill``).
    """
    root = Path(workspace)
    logs = root / ".irctl" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    argv = [
        sys.executable, "-c", "from irctl.cli import main; main()",
        "drill", "run", drill, "--scheduled", "--unattended", "--time-scale", str(time_scale),
    ]  # fmt: skip
    if sandbox:
        argv += ["--sandbox", sandbox]
    with (logs / f"drill-{drill}-{stamp}.log").open("ab") as log:
        child = subprocess.Popen(  # our own interpreter and command, no shell
            argv, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, env={**os.environ, "IRCTL_WORKSPACE": str(root)},
        )  # fmt: skip
    sys.stderr.write(f"irctl scheduler: fired drill {drill} (pid {child.pid})\n")
    sys.stderr.flush()
    return child.pid


# -- leadership ---------------------------------------------------------------------------------


class _FileLeader:
    """An exclusive flock on a file beside the SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the scheduler lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        note = json.dumps({"pid": os.getpid(), "host": _HOST, "since": _now()})
        with suppress(OSError):  # informative only; the flock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode() + b"\n", 0)
        self.fd = fd
        return True

    def holder(self) -> str:
        try:
            note = json.loads(self.path.read_text(encoding="utf-8") or "null")
            return f"pid {note['pid']} on {note['host']} since {note['since']}"
        except (OSError, ValueError, TypeError, KeyError):
            return "another process"

    def healthy(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            with suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


class _PgLeader:
    """A session-level PostgreSQL advisory lock on a connection of its own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        engine = self.store.engine
        try:
            cargs, cparams = engine.dialect.create_connect_args(engine.url)
            cparams.setdefault("connect_timeout", 10)
            cparams["application_name"] = f"irctl scheduler pid={os.getpid()} host={_HOST}"[:63]
            conn = engine.dialect.connect(*cargs, **cparams)
            conn.autocommit = True
        except psycopg.Error as exc:
            raise StoreError(f"the scheduler cannot reach the store: {exc}") from exc
        return conn

    def try_acquire(self) -> bool:
        import psycopg

        try:
            if self.conn is None:
                self.conn = self._connect()
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_KEY,)).fetchone()
        except psycopg.Error:
            self.release()
            return False
        return bool(row and row[0])

    def holder(self) -> str:
        try:
            row = self.conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.objid = (%s::bigint & 4294967295)::oid",
                (_LEADER_KEY,),
            ).fetchone()
        except Exception:  # only a hint for the message
            return "another session"
        return str(row[0]) if row and row[0] else "another session"

    def healthy(self) -> bool:
        try:
            self.conn.execute("SELECT 1").fetchone()
        except Exception:  # a dead session has lost the lock with it
            return False
        return True

    def release(self) -> None:
        if self.conn is not None:
            with suppress(Exception):  # closing the session frees the lock anyway
                self.conn.close()
            self.conn = None


def leader_lock(store: Store) -> _FileLeader | _PgLeader:
    if store.dialect == "postgresql":
        return _PgLeader(store)
    database = store.engine.url.database or ""
    if not database or database == ":memory:" or "mode=memory" in database:
        raise UsageError(
            "the scheduler needs a store others can see: a SQLite file or PostgreSQL, "
            "not an in-memory database"
        )
    path = Path(database.removeprefix("file:").split("?", 1)[0]).absolute()
    return _FileLeader(path.with_name(path.name + ".scheduler.lock"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_scheduler(
    store: Store,
    workspace: Path,
    *,
    say: Say,
    poll: float = 1.0,
    stop: threading.Event | None = None,
) -> None:
    """Lead (or wait as standby, then lead) until ``stop`` is set, SIGTERM or Ctrl-C."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = leader_lock(store)
    del workspace  # each job names its own workspace
    while not stop.is_set():
        waited = False
        while not lock.try_acquire():
            if not waited:
                say(f"standby: {lock.holder()} leads the scheduler of this store; "
                    "taking over when it stops")  # fmt: skip
                waited = True
            if stop.wait(poll):
                return
        try:
            _lead(store, lock, say=say, poll=poll, stop=stop)
        finally:
            lock.release()


def _lead(store: Store, lock: _FileLeader | _PgLeader, *, say: Say, poll: float,
          stop: threading.Event) -> None:  # fmt: skip
    scheduler = _scheduler(store)
    scheduler.start()
    try:
        jobs = scheduler.get_jobs()
        say(f"leading the drill scheduler (pid {os.getpid()}): {len(jobs)} job(s)")
        for job in jobs:
            described = _describe(job)
            say(f"  {described['id']}: next run {described['next_run']}")
        while not stop.wait(poll):
            if not lock.healthy():
                say("lost the scheduler lock (store connection lost): standing down")
                return
            scheduler.wakeup()  # pick up jobs other processes stored meanwhile
    finally:
        scheduler.shutdown(wait=False)
