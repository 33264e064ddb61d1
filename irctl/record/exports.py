"""Views of a transcript for people: the timeline, JSONL and Markdown exports.

Every view is made from the recorded events only; secrets were redacted when
they were recorded, so nothing here resolves or reveals one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from irctl.errors import UsageError
from irctl.journal import events as ev
from irctl.journal.events import Event, parse_ts

if TYPE_CHECKING:
    from irctl.record.transcript import ApprovalCheck, VerifyReport


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


# The approval events, as the journal names them.
REQUESTED = ev.APPROVAL_REQUESTED
GRANTED = ev.APPROVAL_GRANTED
DENIED = ev.APPROVAL_DENIED
QUORUM = ev.APPROVAL_QUORUM
CANCELLED = ev.APPROVAL_CANCELLED
LAPSED = ev.APPROVAL_LAPSED
REVIEW_ITEM = ev.REVIEW_ITEM
APPROVAL_EVENTS = ev.APPROVAL_EVENTS


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


def describe_selection(created: Mapping[str, Any]) -> str | None:
    """A run of part of its runbook (``irctl run --only/--skip``), in words; None for a run of
    all of it."""
    chosen = created.get("selection")
    if not isinstance(chosen, Mapping):
        return None
    who = created.get("initiator") or "?"
    if isinstance(chosen.get("only"), list):
        names = ", ".join(str(s) for s in chosen["only"])
        return f"only {names} (chosen by {who} at the start; the other steps were left out)"
    if isinstance(chosen.get("skip"), list):
        names = ", ".join(str(s) for s in chosen["skip"])
        return f"all but {names} (left out by {who} at the start)"
    return "part of the runbook (an unreadable selection)"


def format_values(value: Any, limit: int = 160) -> str:
    """``key=value, ...`` for a mapping (values as compact JSON unless plain text)."""
    if not isinstance(value, dict):
        return _compact(value, limit)
    parts = [
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)}"
        for k, v in sorted(value.items())
    ]
    return _compact(", ".join(parts), limit)



def _clock(ts: Any) -> str:
    """``00:30`` of ``2026-11-21T00:30:00.000000Z`` (UTC), or the text as it is."""
    text = str(ts)
    return text[11:16] if len(text) >= 16 and text[10:11] == "T" else text


def policy_words(rules: Any) -> str:
    """``2 of treasury/security-lead`` for a recorded policy (``rules``)."""
    if not isinstance(rules, dict):
        return "approval"
    roles = [str(r) for r in rules.get("roles") or []]
    if not roles:
        for group in rules.get("groups") or []:
            if isinstance(group, dict):
                roles += [str(r) for r in group.get("roles") or [] if str(r) not in roles]
    return f"{rules.get('quorum', 1)} of {'/'.join(roles) if roles else 'any operator'}"


def _signed_words(d: dict[str, Any]) -> str:
    assurance = d.get("assurance")
    if assurance == "key":
        return "signed"
    if assurance == "slack":
        return "via Slack, not signed"
    return "unsigned"


def _describe_approval(kind: str, d: dict[str, Any]) -> tuple[str, str] | None:
    """(summary, detail) of an approval event; None for one in an older, unsigned form."""
    if kind == REQUESTED:
        summary = f"approval requested: {policy_words(d.get('rules'))}"
        if d.get("expires_at"):
            summary += f", expires {_clock(d['expires_at'])}"
        if d.get("replaces"):
            summary += " (inputs changed: earlier approvals no longer count)"
        changed = d.get("changed")
        detail = "; ".join(
            part for part in (
                f"policy {d['policy']}" if d.get("policy") else "",
                format_values(d.get("inputs")),
                "changed " + ", ".join(
                    f"{where}: {_compact(pair[0], 40)} → {_compact(pair[1], 40)}"
                    for where, pair in changed.items() if isinstance(pair, list) and len(pair) == 2
                ) if isinstance(changed, dict) and changed else "",
                f"may approve: {', '.join(map(str, d['eligible']))}" if d.get("eligible") else "",
            ) if part
        )  # fmt: skip
        return summary, detail
    if kind in (GRANTED, DENIED):
        if "decision" not in d:
            return None
        who, reason = d.get("operator", "?"), d.get("reason")
        detail = "; ".join(
            part for part in (
                _compact(reason) if reason else "",
                f"via {d['channel']}" if d.get("channel") else "",
            ) if part
        )  # fmt: skip
        via = f"via {d['channel']}" if d.get("channel") else ""
        if d.get("decision") == "approve" and d.get("break_glass"):
            summary = f"BREAK-GLASS APPROVAL by {who} ({_signed_words(d)})"
            return summary + (f": {_compact(reason, 80)}" if reason else ""), via
        if d.get("decision") == "approve":
            return f"approved by {who} ({_signed_words(d)})", detail
        summary = f"denied by {who}" + (f": {_compact(reason, 80)}" if reason else "")
        return summary + f" ({_signed_words(d)})", via
    if kind == QUORUM:
        names = ", ".join(map(str, d.get("approvers") or [])) or "?"
        if d.get("break_glass"):
            return f"QUORUM BY BREAK-GLASS: {names}", "to be reviewed after the incident"
        return f"quorum reached: {names}", ""
    if kind == CANCELLED:
        names = ", ".join(map(str, d.get("denied_by") or [])) or "?"
        return f"approval cancelled: denied by {names}", ""
    if kind == LAPSED:
        when = f" at {_clock(d['expired_at'])}" if d.get("expired_at") else ""
        return f"approval lapsed unused{when}", "a new request is needed"
    return None


def describe(event: Event) -> tuple[str, str, str | None]:
    """(summary, detail, actor) of an event."""
    d, kind = event.data, event.type
    actor = d.get("by") or d.get("operator") or d.get("approver")
    actor = str(actor) if actor is not None else None
    if kind in APPROVAL_EVENTS and (words := _describe_approval(kind, d)) is not None:
        return words[0], words[1], actor
    if kind == REVIEW_ITEM:
        return f"REVIEW ITEM: {_compact(d.get('text'), 120)}", "", actor
    if kind == ev.RUN_CREATED:
        summary = f"run created from runbook {d.get('runbook', '?')} ({d.get('mode', 'live')})"
        detail = "; ".join(
            part for part in (
                f"incident {d['incident']}" if d.get("incident") else "",
                f"params {format_values(d.get('params'))}" if d.get("params") else "",
                describe_selection(d) or "",
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
    if kind == ev.STEP_REPEATING:
        detail = "; ".join(
            part for part in (f"next at {d['next_at']}" if d.get("next_at") else "",
                              format_values(d.get("outputs"))) if part
        )  # fmt: skip
        return f"round {d.get('round', '?')} done, not yet finished", detail, actor
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
    if kind == ev.STEP_WAIVED:
        return f"skipped by {d.get('by', '?')}", _compact(d.get("reason")), actor
    if kind == ev.RUN_ADOPTED:
        return f"adopted by {d.get('by', '?')}", "the run's other steps may run", actor
    if kind == ev.ALERT_RECEIVED:
        detail = "; ".join(part for part in (
            f"detected {d['detected_at']}" if d.get("detected_at") else "",
            _compact(d.get("summary")),
        ) if part)  # fmt: skip
        what = f"alert {d.get('alert', '?')} received (trigger {d.get('trigger', '?')})"
        return what, detail, actor
    if kind == ev.RUN_RETRIED:
        steps = ", ".join(str(k) for k in d.get("steps") or []) or "no step"
        why = f"; {_compact(d.get('reason'))}" if d.get("reason") else ""
        return f"taken up again at {steps}", f"by {d.get('by', '?')}{why}", actor
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


def _auto_steps(text: Any) -> list[str]:
    """The ids of the steps the recorded runbook marks ``auto: true`` (nested ones included)."""
    import yaml

    try:
        doc = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return []
    found: list[str] = []

    def walk(steps: Any) -> None:
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict):
                if step.get("auto") is True and isinstance(step.get("id"), str):
                    found.append(step["id"])
                walk(step.get("parallel"))

    walk(doc.get("steps") if isinstance(doc, dict) else None)
    return found


def detected_at(created: Mapping[str, Any]) -> datetime | None:
    """When the alert that started a run says it was detected (None: no alert, or unreadable)."""
    trigger = created.get("trigger")
    text = trigger.get("detected_at") if isinstance(trigger, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def detection_times(events: Sequence[Event]) -> dict[str, Any]:
    """For a run an alert started: ``detected_at``, ``time_to_start`` (seconds from detection
    to ``run.created``) and ``time_to_contain`` (to the last of its ``auto`` steps done, once
    all of them are: succeeded, or skipped by their ``when``), with ``contained_at``; {} for a
    run a person started."""
    if not events:
        return {}
    created = events[0]
    detected = detected_at(created.data)
    if detected is None:
        return {}
    found: dict[str, Any] = {
        "detected_at": created.data["trigger"]["detected_at"],
        "time_to_start": (parse_ts(created.ts) - detected).total_seconds(),
        "time_to_contain": None, "contained_at": None,
    }  # fmt: skip
    auto = set(_auto_steps(created.data.get("runbook_text")))
    done: dict[str, str] = {}
    for event in events:
        step = event.data.get("step")
        if step in auto and "item" not in event.data:
            if event.type in (ev.STEP_SUCCEEDED, ev.STEP_SKIPPED):
                done[str(step)] = event.ts
            elif event.type in (ev.STEP_STARTED, ev.STEP_FAILED, ev.STEP_WAIVED):
                done.pop(str(step), None)  # failed, or done by a person's skip: not contained
    if auto and set(done) == auto:
        last = max(done.values(), key=parse_ts)
        found["contained_at"] = last
        found["time_to_contain"] = (parse_ts(last) - detected).total_seconds()
    return found


def detection_rows(events: Sequence[Event]) -> list[tuple[str, str]]:
    """Header rows of an export for a run an alert started: the trigger, detection, and the
    times from it (nothing for a run a person started)."""
    times = detection_times(events)
    if not times:
        return []
    trigger = events[0].data.get("trigger") or {}
    contain = times["time_to_contain"]
    return [
        ("Alert", f"{trigger.get('alert', '?')} (trigger {trigger.get('name', '?')}, "
                  f"{trigger.get('source', '?')})"),
        ("Detected", str(times["detected_at"])),
        ("Time to start", format_seconds(max(0.0, times["time_to_start"]))),
        ("Time to contain", format_seconds(max(0.0, contain)) if contain is not None
         else "not contained (its auto steps have not all succeeded)"),
    ]  # fmt: skip


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
        *((name, _md(value)) for name, value in detection_rows(events)),
        *([("Steps", _md(chosen))] if (chosen := describe_selection(created)) else []),
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
    checks = {c.seq: c for c in report.decisions} if report is not None else None
    out += _break_glass_markdown(events, checks)
    if created.get("params"):
        out += ["", "## Parameters", "", _fence(
            json.dumps(created["params"], indent=2, sort_keys=True, ensure_ascii=False), "json"
        )]  # fmt: skip
    out += _approvals_markdown(events, checks)
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


def _signature_status(event: Event, checks: dict[int, ApprovalCheck] | None) -> str:
    """Whether verification accepted a decision, in words."""
    if checks is None:
        return "not checked (export without verification)"
    check = checks.get(event.seq)
    if check is None:
        return "not checked"
    if check.problem:
        return "NOT VERIFIED: " + check.problem
    if not check.verified:
        return "not checked (" + (check.note or "recorded before approvals were signed") + ")"
    if check.assurance == "key":
        status = f"verified: signed by {check.operator}'s key as recorded at run start"
    else:
        status = "accepted on a verified Slack identity (not signed by the operator)"
    return status + (f"; {check.note}" if check.note else "")


def _break_glass_markdown(
    events: Sequence[Event], checks: dict[int, ApprovalCheck] | None
) -> list[str]:
    """A loud section listing every break-glass approval and review item (empty if none)."""
    lines: list[str] = []
    for event in events:
        d = event.data
        if event.type == GRANTED and d.get("break_glass") and d.get("decision") == "approve":
            reason = _md(d.get("reason") or "no reason given")
            lines.append(
                f"- **BREAK-GLASS approval** of `{_md(_step_key(d) or '?')}` by "
                f"**{_md(d.get('operator', '?'))}** at {_md(d.get('time') or event.ts)} "
                f"(event {event.seq}): {reason} — {_md(_signature_status(event, checks))}"
            )
        elif event.type == QUORUM and d.get("break_glass"):
            names = ", ".join(map(str, d.get("approvers") or []))
            lines.append(
                f"- **Gate opened by break-glass**: `{_md(_step_key(d) or '?')}` ran on the "
                f"approval of {_md(names)} alone (event {event.seq})"
            )
        elif event.type == REVIEW_ITEM:
            lines.append(
                f"- **Review item** (event {event.seq}, {_md(d.get('by') or '?')}): "
                f"{_md(d.get('text', ''))}"
            )
    if not lines:
        return []
    return [
        "", "## ⚠ BREAK-GLASS USED — review required", "",
        "The normal approval policy was bypassed. Each use below must be reviewed after "
        "the incident.", "", *lines,
    ]  # fmt: skip


def _approvals_markdown(
    events: Sequence[Event], checks: dict[int, ApprovalCheck] | None
) -> list[str]:
    """Per step: each request, the digest put to the approvers, every decision, the outcome."""
    steps: dict[str, list[Event]] = {}
    for event in events:
        if event.type in APPROVAL_EVENTS:
            steps.setdefault(_step_key(event.data) or "?", []).append(event)
    if not steps:
        return []
    out = ["", "## Approvals"]
    for key, found in steps.items():
        out += ["", f"### {_md(key)}"]
        table: list[str] = []
        for event in found:
            d = event.data
            if event.type == REQUESTED:
                _flush_decisions(out, table)
                expires = f", expires {_md(d['expires_at'])}" if d.get("expires_at") else ""
                out += [
                    "",
                    f"Requested at {_md(d.get('requested_at') or event.ts)} (event {event.seq}) "
                    f"under policy {_md(d.get('policy') or 'inline')} "
                    f"({_md(policy_words(d.get('rules')))}){expires}.",
                    "",
                    f"Digest put to the approvers: `{_md(d.get('digest', '?'))}` "
                    f"(action `{_md(d.get('action', '?'))}`, inputs "
                    f"{_md(format_values(d.get('inputs'), 300))})",
                ]
                if d.get("replaces"):
                    out += ["", f"Replaces digest `{_md(d['replaces'])}`: the inputs changed, "
                                "earlier approvals no longer count."]  # fmt: skip
            elif event.type in (GRANTED, DENIED):
                decision = d.get("decision") or ("approve" if event.type == GRANTED else "deny")
                if decision == "approve" and d.get("break_glass"):
                    decision = "**BREAK-GLASS approve**"
                table.append(
                    f"| {event.seq} | {_md(d.get('time') or event.ts)} | "
                    f"{_md(d.get('operator') or d.get('by') or '?')} | {decision} | "
                    f"{_md(d.get('reason') or '')} | {_md(d.get('channel') or '')} | "
                    f"{_md(_signature_status(event, checks))} |"
                )
            else:
                _flush_decisions(out, table)
                summary, _, _ = describe(event)
                digest = f" for `{_md(d['digest'])}`" if d.get("digest") else ""
                out += ["", f"Event {event.seq}, {event.ts}: **{_md(summary)}**{digest}."]
        _flush_decisions(out, table)
    return out


def _flush_decisions(out: list[str], table: list[str]) -> None:
    if table:
        out += ["", "| # | Time (UTC) | Operator | Decision | Reason | Via | Signature |",
                "|---:|---|---|---|---|---|---|", *table]  # fmt: skip
        table.clear()


# -- PDF ----------------------------------------------------------------------------------------

#: Browsers tried, in order, when ``IRCTL_CHROMIUM`` does not name one.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    """The headless browser that prints PDFs: ``$IRCTL_CHROMIUM``, else one on ``PATH``."""
    import os
    import shutil

    from irctl.errors import IntegrationError

    explicit = os.environ.get("IRCTL_CHROMIUM")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise IntegrationError(
                f"IRCTL_CHROMIUM={explicit} is not an executable; fix the variable or unset it"
            )
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise IntegrationError(
        "PDF export prints the HTML transcript with headless Chromium, which is not installed; "
        "fix: install it (apt-get install chromium) or set IRCTL_CHROMIUM to its path; "
        "meanwhile export --format html"
    )


def chromium_command(browser: str, profile: str) -> list[str]:
    """Headless Chromium that loads nothing from the network and keeps no state."""
    return [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--mute-audio",
        f"--user-data-dir={profile}",
    ]  # fmt: skip


def export_pdf(html_text: str, *, timeout: float = 120.0) -> bytes:
    """The PDF of an HTML transcript (see :mod:`irctl.record.report_html`), printed by Chromium."""
    import subprocess
    import tempfile
    from pathlib import Path

    from irctl.errors import IrctlError

    browser = find_chromium()
    with tempfile.TemporaryDirectory(prefix="irctl-pdf-") as tmp:
        folder = Path(tmp)
        source = folder / "transcript.html"
        source.write_text(html_text, encoding="utf-8")
        target = folder / "transcript.pdf"
        command = [
            *chromium_command(browser, str(folder / "profile")),
            "--no-pdf-header-footer", f"--print-to-pdf={target}", source.as_uri(),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise IrctlError(f"Chromium did not print the PDF within {timeout:g}s") from exc
        except OSError as exc:
            raise IrctlError(f"cannot start Chromium ({browser}): {exc.strerror}") from exc
        data = target.read_bytes() if target.is_file() else b""
        if not data.startswith(b"%PDF"):
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise IrctlError(
                f"Chromium (exit {done.returncode}) did not write a PDF: " + " | ".join(tail)
            )
        return data
