"""The drill scheduler: jobs in the irctl store, one leader per store, fail-over on SIGKILL.

The schedulers here are real ``irctl scheduler run`` processes; drills are
scheduled with ``irctl drill schedule --at +Ns`` (a one-off run, the documented
way to fire a drill now) so the tests take seconds, not a cron period.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from irctl.drills.drill import drill_runs
from irctl.drills.scheduler import _PgLeader, leader_lock, schedule_drill, scheduled_jobs
from irctl.errors import UsageError
from irctl.journal.state import fold
from irctl.journal.store import Store
from irctl.runbook.model import Drill
from irctl.testing import ExchangeAdminStub
from irctl.workspace import Workspace
from tests.helpers import IRCTL, irctl
from tests.test_drill_report import QUICK_DRILL, QUICK_RUNBOOK
from tests.test_drills import make_drill_workspace

ZURICH_DRILL = QUICK_DRILL.replace("id: quick-drill", "id: zurich").replace(
    "runbook: quick", 'runbook: quick\nschedule: {cron: "0 14 * * *", timezone: Europe/Zurich}'
)


def _workspace(tmp_path: Path, store: str | None) -> Iterator[Path]:
    with ExchangeAdminStub("tok") as exchange:
        made, _ = make_drill_workspace(
            tmp_path / "ws", exchange_url=exchange.url, store=store,
            runbooks={"quick": QUICK_RUNBOOK},
            drills={"quick-drill": QUICK_DRILL, "zurich": ZURICH_DRILL},
        )  # fmt: skip
        yield made.root


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Path]:
    """A SQLite workspace."""
    yield from _workspace(tmp_path, None)


@pytest.fixture
def any_ws(tmp_path: Path, store_url: str) -> Iterator[Path]:
    """A workspace on SQLite, then on PostgreSQL."""
    yield from _workspace(tmp_path, store_url)


class Scheduler:
    """An ``irctl scheduler run`` process, its output in a file."""

    def __init__(self, ws: Path, name: str) -> None:
        self.log = ws.parent / f"{name}.log"
        env = {**os.environ, "IRCTL_WORKSPACE": str(ws), "COLUMNS": "200"}
        env.pop("IRCTL_DEBUG", None)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [IRCTL, "scheduler", "run", "--poll", "0.2"], cwd=ws, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def _store(ws: Path) -> Store:
    return Store.open(Workspace.find(ws).config.store, workspace=ws)


def _runs(ws: Path, drill: str) -> list[str]:
    store = _store(ws)
    try:
        return drill_runs(store, drill)
    finally:
        store.close()


def _wait_runs(ws: Path, drill: str, count: int, timeout: float = 40) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = _runs(ws, drill)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} run(s) of {drill}, expected {count}"
        time.sleep(0.2)


def _wait_finished(ws: Path, run_id: str, timeout: float = 40) -> str:
    deadline = time.monotonic() + timeout
    store = _store(ws)
    try:
        while True:
            state = fold(store.events(run_id))
            if state.finished:
                return state.status
            assert time.monotonic() < deadline, f"run {run_id} is still {state.status}"
            time.sleep(0.2)
    finally:
        store.close()


def test_a_drill_fires_once_with_two_schedulers_and_again_after_the_leader_dies(
    any_ws: Path,
) -> None:
    ws = any_ws
    # Create the store's tables before two processes open it at once (see the report: two
    # first opens of an empty PostgreSQL store race on CREATE TABLE).
    _store(ws).close()
    first = Scheduler(ws, "first")
    second: Scheduler | None = None
    try:
        first.wait_for("leading the drill scheduler")
        second = Scheduler(ws, "second")
        second.wait_for("standby")
        assert "leading" not in second.output()

        scheduled = irctl("drill", "schedule", "quick-drill", "--at", "+2s", cwd=ws)
        assert scheduled.returncode == 0, scheduled.stderr
        runs = _wait_runs(ws, "quick-drill", 1)
        assert _wait_finished(ws, runs[0]) == "succeeded"
        time.sleep(1.5)  # a duplicate would have started by now
        assert _runs(ws, "quick-drill") == runs
        assert "fired drill quick-drill" in first.output()
        assert "fired drill" not in second.output()

        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        second.wait_for("leading the drill scheduler")
        again = irctl("drill", "schedule", "quick-drill", "--at", "+1s", cwd=ws)
        assert again.returncode == 0, again.stderr
        runs = _wait_runs(ws, "quick-drill", 2)
        assert _wait_finished(ws, runs[1]) == "succeeded"
        time.sleep(1.5)
        assert _runs(ws, "quick-drill") == runs  # exactly once more
        assert "fired drill quick-drill" in second.output()

        # the fired drill produces a scorecard
        report = irctl("drill", "report", runs[1], "--json", cwd=ws)
        assert report.returncode == 0, report.stderr
        card = json.loads(report.stdout)
        assert card["met"] == 2
        assert card["status"] == "succeeded"
        assert [row["run_id"] for row in card["trend"]] == runs
        assert Path(card["html"]).is_file()

        second.process.send_signal(signal.SIGTERM)  # a clean stop
        assert second.process.wait(15) == 0, second.output()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_missed_drill_fires_once_when_a_scheduler_starts_within_the_grace(ws: Path) -> None:
    scheduled = irctl("drill", "schedule", "quick-drill", "--at", "+1s", cwd=ws)
    assert scheduled.returncode == 0, scheduled.stderr
    time.sleep(2.5)  # no scheduler ran when it was due
    late = Scheduler(ws, "late")
    try:
        late.wait_for("leading the drill scheduler")
        runs = _wait_runs(ws, "quick-drill", 1)
        assert _wait_finished(ws, runs[0]) == "succeeded"
        time.sleep(1.0)
        assert _runs(ws, "quick-drill") == runs  # once, not once per missed poll
    finally:
        late.stop()


def test_schedule_stores_one_job_per_drill_with_its_time_zone(ws: Path) -> None:
    for _ in range(2):  # again: replaced, not duplicated
        done = irctl("drill", "schedule", "zurich", "--json", cwd=ws)
        assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["id"] == "drill:zurich"
    assert job["coalesce"] is True
    assert job["misfire_grace_time"] == 3600
    assert job["timezone"] == "Europe/Zurich"
    # 14:00 in Zurich is 13:00 or 12:00 UTC, depending on summer time
    assert job["next_run"].endswith(("T13:00:00Z", "T12:00:00Z")), job
    once = irctl("drill", "schedule", "zurich", "--at", "2030-01-01T09:00:00Z", cwd=ws)
    assert once.returncode == 0, once.stderr
    listed = json.loads(irctl("drill", "list", "--json", cwd=ws).stdout)
    by_id = {row["drill"]: row for row in listed}
    assert by_id["zurich"]["schedule"] == "0 14 * * * (Europe/Zurich)"
    store = Store.open(f"sqlite:///{ws / '.irctl' / 'irctl.db'}")
    try:
        jobs = sorted(j["id"] for j in scheduled_jobs(store))
    finally:
        store.close()
    assert jobs == ["drill:zurich", "drill:zurich:at"]
    gone = irctl("drill", "unschedule", "zurich", cwd=ws)
    assert gone.returncode == 0, gone.stderr
    assert "2 job(s) removed" in gone.stderr
    assert json.loads(irctl("drill", "list", "--json", cwd=ws).stdout)[1]["next_run"] is None


def test_a_drill_scheduled_before_the_scheduler_moved_is_kept(any_ws: Path) -> None:
    """A job stored while the scheduler was irctl.scheduler names irctl.scheduler:fire_drill;
    APScheduler drops a job whose function it cannot import, so irctl points it at the new
    name before reading the jobs, and the drill stays scheduled."""
    import pickle

    from sqlalchemy import MetaData, Table, select, update

    from irctl.drills.scheduler import FIRE, TABLE

    store = Workspace.find(any_ws).store
    drill = Drill.model_validate(
        {"irctl": 1, "kind": "drill", "id": "zurich", "title": "Z", "runbook": "quick",
         "schedule": {"cron": "0 14 * * *", "timezone": "Europe/Zurich"}}
    )  # fmt: skip
    stored = schedule_drill(store, any_ws, drill)
    table = Table(TABLE, MetaData(), autoload_with=store.engine)
    with store.engine.begin() as conn:  # as an earlier irctl stored it
        state = pickle.loads(conn.execute(select(table.c.job_state)).scalar_one())  # noqa: S301
        assert state["func"] == FIRE
        state["func"] = "irctl.scheduler:fire_drill"
        conn.execute(update(table).values(job_state=pickle.dumps(state)))
    assert scheduled_jobs(store) == [stored]
    with store.engine.connect() as conn:
        state = pickle.loads(conn.execute(select(table.c.job_state)).scalar_one())  # noqa: S301
    assert state["func"] == FIRE


def test_a_bad_cron_or_time_zone_is_a_clear_error(ws: Path) -> None:
    store = Workspace.find(ws).store
    base = {"irctl": 1, "kind": "drill", "id": "x", "title": "X", "runbook": "quick"}
    bad_cron = Drill.model_validate({**base, "schedule": {"cron": "61 * * * *"}})
    with pytest.raises(UsageError, match="cron '61 \\* \\* \\* \\*' is not valid"):
        schedule_drill(store, ws, bad_cron)
    bad_zone = Drill.model_validate(
        {**base, "schedule": {"cron": "0 14 * * *", "timezone": "Mars/Olympus"}}
    )
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Olympus'"):
        schedule_drill(store, ws, bad_zone)
    assert scheduled_jobs(store) == []


def test_an_in_memory_store_cannot_elect_a_scheduler() -> None:
    store = Store.open("sqlite://")
    with pytest.raises(UsageError, match="not an in-memory database"):
        leader_lock(store)


def test_postgresql_elects_one_leader_and_fails_over(fresh_pg_url: str, tmp_path: Path) -> None:
    store = Store.open(fresh_pg_url)
    other = Store.open(fresh_pg_url)
    leader, standby = leader_lock(store), leader_lock(other)
    assert isinstance(leader, _PgLeader)
    try:
        assert leader.try_acquire()
        assert not standby.try_acquire()
        assert "irctl scheduler" in standby.holder()
        assert leader.healthy()
        leader.conn.close()  # the leader's session dies: its lock goes with it
        assert not leader.healthy()
        # The server ends the dead session (and frees its lock) a moment after the client
        # hangs up; a standby retries as the scheduler's loop does.
        deadline = time.monotonic() + 10
        while not standby.try_acquire():
            assert time.monotonic() < deadline, "the standby never took over"
            time.sleep(0.05)
        # the job store lives in the same PostgreSQL database
        drill = Drill.model_validate({
            "irctl": 1, "kind": "drill", "id": "pg", "title": "PG", "runbook": "quick",
            "schedule": {"cron": "0 14 1 * *", "timezone": "UTC"},
        })  # fmt: skip
        job = schedule_drill(store, tmp_path, drill)
        assert job["next_run"].endswith("T14:00:00Z")
        assert [j["id"] for j in scheduled_jobs(other)] == ["drill:pg"]
    finally:
        leader.release()
        standby.release()
        store.close()
        other.close()
