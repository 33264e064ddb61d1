"""Views of a transcript for people: the timeline, JSONL and Markdown exports.

Every view is made from the recorded events only; secrets were redacted when
they were recorded, so nothing here resolves or reveals one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any

from irctl import events as ev
from irctl.errors import UsageError
from irctl.events import Event, parse_ts

if TYPE_CHECKING:
    from irctl.transcript import VerifyReport


@dataclass(frozen=True)
class TimelineRow:
    """One event as a person reads it."""

    seq: int
    ts: str
    elapsed: float  # seconds since the run was created
    type: str
    step: str | None
    summary: str  # what happened, in words
    detail: str  # inputs, outputs, error ... (secrets were redacted when recorded)
    digest: str | None  # of the resolved step (what approvers approved)
    duration: float | None  # for an outcome: seconds since the step started
    actor: str | None  # who, when a person did it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _compact(value: Any, limit: int = 160) -> str:
    if value is None or value in ({}, []):
        return ""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_APPROVAL_KEYS = frozenset({"by", "operator", "approver", "decision", "step", "sig", "digest"})


def _step_key(data: dict[str, Any]) -> str | None:
    step = data.get("step")
    if not isinstance(step, str):
        return None
    item = data.get("item")
    return f"{step}[{item}]" if item is not None else str(step)


def format_values(value: Any, limit: int = 160) -> str:
    """``key=value, ...`` for a mapping (values as compact JSON unless plain text)."""
    if not isinstance(value, dict):
        return _compact(value, limit)
    parts = [
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)}"
        for k, v in sorted(value.items())
    ]
    return _compact(", ".join(parts), limit)


def describe(event: Event) -> tuple[str, str, str | None]:
    """(summary, detail, actor) of an event."""
    d, kind = event.data, event.type
    actor = d.get("by") or d.get("operator") or d.get("approver")
    actor = str(actor) if actor is not None else None
    if kind == ev.RUN_CREATED:
        summary = f"run created from runbook {d.get('runbook', '?')} ({d.get('mode', 'live')})"
        detail = "; ".join(
            part for part in (
                f"incident {d['incident']}" if d.get("incident") else "",
                f"params {format_values(d.get('params'))}" if d.get("params") else "",
            ) if part
        )  # fmt: skip
        return summary, detail, str(d.get("initiator") or "") or None
    if kind == ev.CHECKPOINT:
        return f"checkpoint sealing event {d.get('seq')}", f"signed by {d.get('key', '?')}", None
    if kind == ev.STEP_STARTED:
        detail = "; ".join(
            part for part in (
                f"attempt {d['attempt']}" if d.get("attempt", 1) != 1 else "",
                format_values(d.get("inputs")),
            ) if part
        )  # fmt: skip
        return f"started {d.get('action', '')}".strip(), detail, actor
    if kind == ev.STEP_SUCCEEDED:
        return "succeeded", format_values(d.get("outputs")), actor
    if kind == ev.STEP_FAILED:
        return "failed", _compact(d.get("error")), actor
    if kind == ev.STEP_RETRYING:
        return "will retry", _compact(d.get("error")), actor
    if kind == ev.STEP_SKIPPED:
        return "skipped", _compact(d.get("reason")), actor
    if kind == ev.STEP_WAITING:
        return f"waiting for {d.get('for') or 'a person'}", _compact(d.get("prompt")), actor
    if kind == ev.STEP_ANSWERED:
        return "answered", _compact(d.get("answer")), actor
    if kind == ev.STEP_IN_DOUBT:
        return "in doubt (started, no outcome recorded)", _compact(d.get("reason")), actor
    if kind == ev.STEP_RESOLVED:
        return f"resolved as {d.get('mark', '?')}", _compact(d.get("reason")), actor
    if kind == ev.STEP_INTERRUPTED:
        return "interrupted", _compact(d.get("reason")), actor
    if kind in (ev.STEP_NOTE, ev.RUN_NOTE):
        return "note", _compact(d.get("text")), actor
    if kind in ev.TERMINAL:
        detail = "; ".join(
            part for part in (
                f"failed step {d['failed_step']}" if d.get("failed_step") else "",
                _compact(d.get("reason")),
            ) if part
        )  # fmt: skip
        return f"run {kind.split('.', 1)[1]}", detail, actor
    if kind in (ev.RUN_STARTED, ev.RUN_RESUMED, ev.RUN_WAITING, ev.RUN_INTERRUPTED):
        rest = {k: v for k, v in d.items() if k not in {"by", "operator"}}
        return f"run {kind.split('.', 1)[1]}", format_values(rest), actor
    if "approv" in kind:
        decision = d.get("decision") or kind.rsplit(".", 1)[-1]
        rest = {k: v for k, v in d.items() if k not in _APPROVAL_KEYS}
        return f"approval {decision}", format_values(rest), actor
    rest = {k: v for k, v in d.items() if k not in {"step", "by"}}
    return kind, format_values(rest), actor


def timeline(events: Sequence[Event]) -> list[TimelineRow]:
    """The events of a run as rows: time, step, what happened, duration."""
    rows: list[TimelineRow] = []
    if not events:
        return rows
    start = parse_ts(events[0].ts)
    started: dict[str, Any] = {}
    for event in events:
        at = parse_ts(event.ts)
        key = _step_key(event.data)
        duration: float | None = None
        if event.type == ev.STEP_STARTED and key is not None:
            started[key] = at
        elif key is not None and event.type in {
            ev.STEP_SUCCEEDED, ev.STEP_FAILED, ev.STEP_RESOLVED, ev.STEP_INTERRUPTED,
        } and key in started:  # fmt: skip
            duration = (at - started[key]).total_seconds()
        elif event.type in ev.TERMINAL:
            duration = (at - start).total_seconds()
        summary, detail, actor = describe(event)
        rows.append(TimelineRow(
            seq=event.seq, ts=event.ts, elapsed=(at - start).total_seconds(), type=event.type,
            step=key, summary=summary, detail=detail, duration=duration, actor=actor,
            digest=str(event.data["digest"]) if event.data.get("digest") else None,
        ))  # fmt: skip
    return rows


def format_seconds(seconds: float) -> str:
    """``0.25s``, ``12.0s``, ``4m05s``, ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def export_jsonl(lines: Iterable[str], out: IO[str]) -> int:
    """Write exactly the stored lines, one per line; returns how many were written."""
    count = 0
    for line in lines:
        out.write(line)
        out.write("\n")
        count += 1
    return count


def _md(text: object) -> str:
    """Text safe inside a Markdown table cell: no markup, no HTML, no line breaks."""
    value = " ".join(str(text).split())
    for char in "\\`*_[]<>|#":
        value = value.replace(char, "\\" + char)
    return value


def _fence(text: str, lang: str = "") -> str:
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip(chr(10))}\n{fence}"


def export_markdown(events: Sequence[Event], report: VerifyReport | None = None) -> str:
    """A readable document of a run: header, timeline, seal (and the verification, if given)."""
    if not events:
        raise UsageError("the run has no events to export")
    first, last = events[0], events[-1]
    created = first.data
    end = next((e for e in reversed(events) if e.type in ev.TERMINAL), None)
    checkpoints = [e for e in events if e.type == ev.CHECKPOINT]
    header: list[tuple[str, str]] = [
        ("Run", f"`{first.run}`"),
        ("Runbook", f"{_md(created.get('runbook', '?'))} (`{created.get('runbook_digest', '?')}`)"),
    ]
    if created.get("title"):
        header.append(("Title", _md(created["title"])))
    header += [
        ("Incident", _md(created.get("incident") or "—")),
        ("Mode", _md(created.get("mode", "live"))),
        ("Initiator", _md(created.get("initiator", "?"))),
        ("Outcome", _md(end.type.split(".", 1)[1]) if end else "not ended"),
        ("Started", first.ts),
        ("Ended", end.ts if end else "—"),
    ]
    if end is not None:
        elapsed = (parse_ts(end.ts) - parse_ts(first.ts)).total_seconds()
        header.append(("Duration", format_seconds(elapsed)))
    header.append(("Events", f"{len(events)} ({len(checkpoints)} checkpoints)"))
    if report is not None:
        status = _md(report.summary())
        if not report.ok and report.problems:
            status += " — " + _md(report.problems[0])
        header.append(("Integrity", status))

    out = [f"# Transcript of run {_md(first.run)}", "", "| | |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in header]
    if created.get("params"):
        out += ["", "## Parameters", "", _fence(
            json.dumps(created["params"], indent=2, sort_keys=True, ensure_ascii=False), "json"
        )]  # fmt: skip
    out += ["", "## Timeline", "", "| # | Time (UTC) | Step | Event | Who | Detail | Duration |",
            "|---:|---|---|---|---|---|---:|"]  # fmt: skip
    for row in timeline(events):
        digest = f" `{row.digest}`" if row.digest else ""
        out.append(
            f"| {row.seq} | {row.ts} | {_md(row.step or '')} | {_md(row.summary)} | "
            f"{_md(row.actor or '')} | {_md(row.detail)}{digest} | "
            f"{format_seconds(row.duration) if row.duration is not None else ''} |"
        )
    out += ["", "## Seal", "", f"Last event: {last.seq} (`{last.type}`), hash `{last.hash}`.", ""]
    if checkpoints:
        out += ["| Checkpoint | Seals event | Head | Key | Signature |", "|---:|---:|---|---|---|"]
        for cp in checkpoints:
            d = cp.data
            out.append(
                f"| {cp.seq} | {_md(d.get('seq', '?'))} | `{_md(d.get('head', ''))}` | "
                f"`{_md(d.get('key', ''))}` | `{_md(d.get('sig', ''))}` |"
            )
    else:
        out.append("No checkpoints were recorded.")
    out += ["", "Verify offline with `irctl transcript verify <file.jsonl> --key <public key>`."]
    text = created.get("runbook_text")
    if isinstance(text, str) and text:
        out += ["", "## Runbook as run", "", _fence(text, "yaml")]
    return "\n".join(out) + "\n"
