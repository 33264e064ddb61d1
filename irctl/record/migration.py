"""Moving a workspace's store to another database, and proving every run came across whole.

Owns ``irctl store migrate``: the copy (:meth:`irctl.journal.store.Store.copy_to`: every run,
every event as stored, the other tables, in one transaction into a store that holds no run)
and then, on the target, the check ``irctl transcript verify`` makes of each run
(:func:`~irctl.record.transcript.verify_run`), with the run's stored lines compared one by one
with the original's.  A run that does not verify on the target but does on the source is a
failed migration; one that does not verify on the source either was copied as it was, and is
named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from irctl.journal.store import Progress, Store
from irctl.record.transcript import verify_run


@dataclass
class Migrated:
    """What :func:`migrate` copied and what verifying the copy found."""

    source: str
    target: str
    runs: int
    events: int
    tables: dict[str, int]
    verified: int = 0
    #: run id -> the first problem, for runs that verify on the source but not on the copy
    broken: dict[str, str] = field(default_factory=dict)
    #: run id -> the first problem, for runs that do not verify on the source either
    as_they_were: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.broken

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source, "target": self.target, "runs": self.runs,
            "events": self.events, "tables": self.tables, "verified": self.verified,
            "broken": self.broken, "unverified_in_source": self.as_they_were, "ok": self.ok,
        }  # fmt: skip


def migrate(
    source: Store,
    target_url: str,
    *,
    workspace: Path | None,
    public_keys: list[str] | None,
    progress: Progress | None = None,
    verifying: Progress | None = None,
) -> Migrated:
    """Copy ``source`` into the store at ``target_url`` (which must hold no run), then verify
    every copied run there.  ``progress`` / ``verifying``: called after each run copied /
    verified with (done, total)."""
    target = Store.open_empty(target_url, workspace=workspace, origin="--to")
    try:
        copied = source.copy_to(target, progress=progress)
        found = Migrated(source.where, target.where, len(copied.runs), copied.events, copied.tables)
        for done, run_id in enumerate(copied.runs, start=1):
            same = list(source.lines(run_id)) == list(target.lines(run_id))
            report = verify_run(target, run_id, public_keys)
            if same and report.ok:
                found.verified += 1
            elif not same:
                found.broken[run_id] = "its stored lines differ from the original's"
            elif verify_run(source, run_id, public_keys).ok:
                found.broken[run_id] = report.problems[0]
            else:
                found.as_they_were[run_id] = report.problems[0]
            if verifying is not None:
                verifying(done, len(copied.runs))
    finally:
        target.close()
    return found
