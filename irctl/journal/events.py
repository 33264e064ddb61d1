"""Journal events: the one typed stream a run is made of.

Each event is stored as one line of canonical JSON::

    {"data":{...},"prev":"<hash of the previous event>","run":"r-...","seq":7,
     "ts":"2026-11-21T03:00:00.000000Z","type":"step.started"}

and its hash is the SHA-256 of exactly those bytes, so the events of a run form
a chain that any edit, deletion, insertion or reordering breaks.  The first
event's ``prev`` is :data:`GENESIS`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from irctl.canonical import canonical_json, sha256_hex

GENESIS = "0" * 64

# Event types, in the order a run usually meets them.
RUN_CREATED = "run.created"  # runbook text + digest, params, initiator, mode, plan digests
RUN_STARTED = "run.started"  # an attempt to execute began (first run or resume)
RUN_RESUMED = "run.resumed"
STEP_SKIPPED = "step.skipped"  # `when` was false
STEP_WAIVED = "step.waived"  # an operator skipped the step by hand (irctl skip), with a reason
STEP_STARTED = "step.started"  # committed before the action runs
STEP_SUCCEEDED = "step.succeeded"
STEP_FAILED = "step.failed"
STEP_RETRYING = "step.retrying"
STEP_REPEATING = "step.repeating"  # a round of a `repeat` step ended; the next is due at next_at
STEP_INTERRUPTED = "step.interrupted"
STEP_IN_DOUBT = "step.in_doubt"  # started, no outcome, found on resume
STEP_RESOLVED = "step.resolved"  # in-doubt step resolved by probe, re-run or operator
STEP_WAITING = "step.waiting"  # waits for a person (manual step, in doubt)
STEP_ANSWERED = "step.answered"  # a person's answer to a manual step
STEP_NOTE = "step.note"  # a line an action asked to record
RUN_NOTE = "run.note"
RUN_WAITING = "run.waiting"
RUN_INTERRUPTED = "run.interrupted"
RUN_ABORTED = "run.aborted"
RUN_RETRIED = "run.retried"  # a failed or aborted run taken up again at its failed steps
RUN_ADOPTED = "run.adopted"  # an operator took over a run an alert started (irctl adopt)
ALERT_RECEIVED = "alert.received"  # a later alert for the incident of a run an alert started
RUN_SUCCEEDED = "run.succeeded"
RUN_FAILED = "run.failed"
CHECKPOINT = "checkpoint"  # head hash signed with the installation key
# The approval events (irctl.record.approvals signs and counts them).
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_GRANTED = "approval.granted"
APPROVAL_DENIED = "approval.denied"
APPROVAL_QUORUM = "approval.quorum"  # a summary: neither the engine nor verify trusts it
APPROVAL_CANCELLED = "approval.cancelled"
APPROVAL_LAPSED = "approval.lapsed"
REVIEW_ITEM = "run.review_item"
APPROVAL_EVENTS = frozenset({
    APPROVAL_REQUESTED, APPROVAL_GRANTED, APPROVAL_DENIED, APPROVAL_QUORUM, APPROVAL_CANCELLED,
    APPROVAL_LAPSED,
})  # fmt: skip

TERMINAL = {RUN_SUCCEEDED, RUN_FAILED, RUN_ABORTED}
#: A person's acts: signed by their operator in a live run (irctl.record.approvals).
ACTS = frozenset({
    STEP_ANSWERED, STEP_RESOLVED, RUN_ABORTED, RUN_RETRIED, STEP_WAIVED, RUN_ADOPTED,
})  # fmt: skip
#: The resolutions the engine records itself (a probe's finding, an idempotent re-run).
ENGINES_OWN = ("probe", "idempotent")


_second: list[Any] = [None, ""]  # the last whole second formatted, reused (strftime is slow)


def utcnow() -> str:
    """Now, UTC, to the microsecond: ``2026-11-21T03:00:00.000000Z``."""
    now = time.time()
    whole = int(now)
    if _second[0] != whole:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second[0] = whole
    return f"{_second[1]}.{int((now - whole) * 1_000_000):06d}Z"


def parse_ts(ts: str) -> datetime:
    """A recorded time, exactly as :func:`utcnow` writes it (ValueError otherwise)."""
    if len(ts) == 27 and ts[10] == "T" and ts[19] == "." and ts[26] == "Z" and ts.isascii():
        try:  # the C parser, ~20x faster than strptime, for the one shape utcnow writes
            return datetime.fromisoformat(ts[:26]).replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One journal event, with the exact bytes that were hashed."""

    run: str
    seq: int
    ts: str
    type: str
    data: dict[str, Any]
    prev: str
    line: str
    hash: str

    @classmethod
    def make(
        cls, run: str, seq: int, type: str, data: dict[str, Any], prev: str, ts: str | None = None
    ) -> Event:
        ts = ts or utcnow()
        line = canonical_json(
            {"data": data, "prev": prev, "run": run, "seq": seq, "ts": ts, "type": type}
        )
        return cls(run, seq, ts, type, data, prev, line, sha256_hex(line))

    @classmethod
    def from_line(cls, line: str) -> Event:
        """Parse a stored line; the hash is recomputed from the bytes, never trusted."""
        raw = json.loads(line)
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
            raise ValueError("not an event object")
        fields = (raw["run"], raw["seq"], raw["ts"], raw["type"], raw["data"], raw["prev"])
        if not all(isinstance(f, t) for f, t in zip(fields, _FIELD_TYPES, strict=True)):
            raise ValueError("an event field has the wrong type")
        if not _TS.match(raw["ts"]):
            raise ValueError(f"{raw['ts']!r} is not a timestamp")
        if not isinstance(raw["data"].get("step", ""), str):
            raise ValueError("its step is not a name")
        return cls(*fields, line, sha256_hex(line))


_FIELD_TYPES = (str, int, str, str, dict, str)
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")


def checkpoint_message(run: str, seq: int, head: str) -> bytes:
    """The bytes the installation key signs for a checkpoint after event ``seq``."""
    return f"irctl-checkpoint:v1:{run}:{seq}:{head}".encode()
