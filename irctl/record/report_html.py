"""The transcript as one self-contained HTML document (and the source of the PDF).

The document is made from the recorded events only: a summary (runbook and
digest, incident, mode, outcome, times against the runbook's objectives), the
break-glass approvals and in-doubt resolutions called out, every approval with
its signer, digest and signature check, the operators' notes, the secrets used
(as salted commitments, never values), the timeline, a verification section
that states which checks passed, and a control map pointing an auditor at
where each incident-response control is evidenced.

Nothing is fetched: the CSS is inline, the one chart is inline SVG, and a
Content-Security-Policy forbids every network load and every script.  All
recorded text (runbook text, notes, reasons, inputs) is untrusted and escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from irctl.canonical import sha256_hex
from irctl.journal import events as ev
from irctl.journal.events import Event, parse_ts
from irctl.record.exports import (
    APPROVAL_EVENTS,
    DENIED,
    GRANTED,
    QUORUM,
    REQUESTED,
    REVIEW_ITEM,
    describe,
    describe_selection,
    detected_at,
    detection_rows,
    detection_times,
    format_seconds,
    format_values,
    policy_words,
    timeline,
)

if TYPE_CHECKING:
    from irctl.record.transcript import ApprovalCheck, VerifyReport

__all__ = ["CONTROLS", "Check", "checks", "export_html", "objectives"]


def _e(value: object) -> str:
    """Escaped text for an element or an attribute."""
    return html.escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True)
class Check:
    """One line of the verification section: what was checked and whether it passed."""

    name: str
    passed: bool | None  # None: not checked (say why in detail)
    detail: str


@dataclass(frozen=True)
class Objective:
    """A time target of the runbook and how the run did against it."""

    tag: str
    target: float  # seconds from run start
    steps: list[str]
    finished: float | None  # seconds from run start when the last such step finished
    met: bool | None  # None: no such step finished
    chosen: list[str] = field(default_factory=list)  # "STEP skipped by OP: reason", a person's call


# Where each control is evidenced in a transcript.  Section ids are the HTML anchors.
CONTROLS: list[tuple[str, str, str, list[str]]] = [
    ("SOC 2", "CC7.3", "Security events are evaluated to decide whether they are incidents",
     ["summary", "timeline"]),
    ("SOC 2", "CC7.4", "Incidents are responded to with a defined program: contain, remediate, "
     "communicate", ["summary", "approvals", "timeline", "runbook"]),
    ("SOC 2", "CC7.5", "Recovery from incidents is identified, developed and carried out",
     ["objectives", "timeline", "breakglass", "notes"]),
    ("ISO/IEC 27001:2022", "A.5.24", "Incident management planning and preparation: "
     "roles, procedures", ["runbook", "approvals"]),
    ("ISO/IEC 27001:2022", "A.5.25", "Assessment and decision on information security events",
     ["summary", "approvals"]),
    ("ISO/IEC 27001:2022", "A.5.26", "Response to information security incidents per the "
     "documented procedure", ["timeline", "runbook", "breakglass"]),
    ("ISO/IEC 27001:2022", "A.5.27", "Learning from incidents (review items, notes, "
     "time against objectives)", ["objectives", "notes", "breakglass"]),
    ("ISO/IEC 27001:2022", "A.5.28", "Collection of evidence: integrity and chain of custody",
     ["verification", "secrets", "seal"]),
]  # fmt: skip

_SECTION_TITLES = {
    "summary": "Summary", "objectives": "Objectives", "breakglass": "Break-glass and in-doubt",
    "approvals": "Approvals", "notes": "Operator notes", "secrets": "Secrets used",
    "timeline": "Timeline", "verification": "Verification", "seal": "Seal",
    "runbook": "Runbook as run",
}  # fmt: skip


# -- what the document is made of -------------------------------------------------------------


def _runbook_doc(text: Any) -> dict[str, Any]:
    """The recorded runbook text parsed (for objectives and tags); {} if it does not parse."""
    if not isinstance(text, str):
        return {}
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _step_tags(steps: Any, found: dict[str, list[str]]) -> dict[str, list[str]]:
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        tags = step.get("tags")
        if isinstance(step.get("id"), str):
            found[step["id"]] = [str(t) for t in tags] if isinstance(tags, list) else []
        _step_tags(step.get("parallel"), found)
    return found


def objectives(events: Sequence[Event]) -> list[Objective]:
    """The runbook's ``objectives`` (tag: duration), each against when its steps finished."""
    from irctl.runbook.model import parse_duration

    if not events:
        return []
    doc = _runbook_doc(events[0].data.get("runbook_text"))
    wanted = doc.get("objectives")
    if not isinstance(wanted, dict):
        return []
    tags = _step_tags(doc.get("steps"), {})
    # a run an alert started is timed from the detection, as response targets are
    start = detected_at(events[0].data) or parse_ts(events[0].ts)
    finished: dict[str, float] = {}
    chosen: dict[str, str] = {}
    for event in events:
        # A step skipped by its rule (`when` false: nothing to contain there) is as done as
        # one that succeeded; the drill scorecard counts it the same way.  One a person
        # skipped (irctl skip, or left out at the start) counts too, and the objective says so.
        step, d = event.data.get("step"), event.data
        kinds = (ev.STEP_SUCCEEDED, ev.STEP_SKIPPED, ev.STEP_WAIVED)
        if event.type in kinds and "item" not in d and isinstance(step, str):
            finished[step] = (parse_ts(event.ts) - start).total_seconds()
            if event.type == ev.STEP_SUCCEEDED:
                chosen.pop(step, None)
            elif event.type == ev.STEP_WAIVED or d.get("by"):
                chosen[step] = f"{step} skipped by {d.get('by', '?')}: {d.get('reason') or '—'}"
    result: list[Objective] = []
    for tag, limit in wanted.items():
        try:
            target = parse_duration(limit)
        except ValueError:
            continue
        steps = [step for step, have in tags.items() if str(tag) in have]
        done = [finished[s] for s in steps if s in finished]
        last = max(done) if steps and len(done) == len(steps) else None
        met = None if last is None else last <= target
        notes = [chosen[s] for s in steps if s in chosen]
        result.append(Objective(str(tag), target, steps, last, met, notes))
    return result


def checks(
    events: Sequence[Event], report: VerifyReport, anchor: Check | None = None
) -> list[Check]:
    """The verification section: each check and whether it passed."""
    created = events[0].data if events else {}
    text = created.get("runbook_text")
    recorded = created.get("runbook_digest")
    runbook_ok = isinstance(text, str) and recorded == "sha256:" + sha256_hex(text)
    found: list[Check] = [
        Check(
            "Hash chain and order", report.ok or report.first_bad is None,
            f"{report.events} events, each linked by SHA-256 to the one before, seq 1..n"
            if report.first_bad is None
            else f"first bad event {report.first_bad} (line {report.first_bad_line})",
        ),
        Check(
            "Runbook text matches its digest", runbook_ok,
            f"{recorded}" if runbook_ok else "the recorded runbook text does not hash to "
            f"{recorded}",
        ),
        Check(
            "Checkpoints signed by a trusted installation key",
            (report.checkpoints > 0) if report.trusted else None,
            f"{report.checkpoints} valid checkpoint(s), keys {', '.join(report.keys) or 'none'}"
            if report.trusted else f"signatures checked with the keys the checkpoints carry "
            f"({', '.join(report.keys) or 'none'}) only: no trusted key was given",
        ),
        Check(
            "Transcript ends sealed (no cut or added tail)",
            report.unsealed == 0 and report.sealed_seq > 0,
            f"sealed through event {report.sealed_seq}; {report.unsealed} event(s) after the "
            "last seal",
        ),
    ]  # fmt: skip
    bad = [d for d in report.decisions if d.problem]
    found.append(Check(
        "Approvals: signatures, digests, quorums", not bad if report.decisions else None,
        f"{report.approvals} signed decision(s) verified"
        + (f", {report.slack_approvals} on a Slack identity" if report.slack_approvals else "")
        + (f"; {len(bad)} failed: {bad[0].problem}" if bad else "")
        if report.decisions else "no approval decisions in this run",
    ))  # fmt: skip
    if anchor is not None:
        found.append(anchor)
    if not report.ok:
        found.append(Check("Overall", False, "; ".join(report.problems[:5])))
    return found


# -- rendering --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1d232a;
margin:0;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 32px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:2px solid
#d6dde4;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border:1px solid #d6dde4;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef2f5;font-weight:600}
td.num{text-align:right;white-space:nowrap}
code,pre,.mono{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px}
.mono,code{overflow-wrap:anywhere}
pre{background:#f6f8fa;border:1px solid #d6dde4;padding:10px;white-space:pre-wrap;
overflow-wrap:anywhere}
.pass{color:#0a6b2d;font-weight:700}.fail{color:#b00020;font-weight:700}.na{color:#6a737d}
.alert{border:3px solid #b00020;background:#fff1f1;padding:8px 14px;margin:12px 0}
.ok{border:2px solid #0a6b2d;background:#effaf2;padding:8px 14px;margin:12px 0}
.summary th{width:200px}
.muted{color:#6a737d}
tr.bg td{background:#fff1f1}
@media print{main{padding:0}h2{break-after:avoid}tr{break-inside:avoid}}
"""


def _badge(passed: bool | None) -> str:
    if passed is None:
        return '<span class="na">NOT CHECKED</span>'
    return '<span class="pass">PASS</span>' if passed else '<span class="fail">FAIL</span>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table; ``rows`` cells are already HTML (escape before)."""
    attr = f' class="{cls}"' if cls else ""
    out = [f"<table{attr}><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _step_key(data: dict[str, Any]) -> str:
    step = data.get("step")
    item = data.get("item")
    return f"{step}[{item}]" if item is not None else str(step)


def _signature(check: ApprovalCheck | None) -> str:
    if check is None:
        return '<span class="na">not checked</span>'
    if check.problem:
        return f'<span class="fail">NOT VERIFIED</span>: {_e(check.problem)}'
    if not check.verified:
        return f'<span class="na">not checked</span> {_e(check.note or "")}'
    if check.assurance == "key":
        text = f"verified: signed by {check.operator}'s key as recorded at run start"
    else:
        text = "accepted on a verified Slack identity (not signed by the operator)"
    return f'<span class="pass">{_e(text)}</span>'


def _summary(events: Sequence[Event], report: VerifyReport) -> str:
    first = events[0]
    d = first.data
    end = next((e for e in reversed(events) if e.type in ev.TERMINAL), None)
    rows = [
        ("Run", f"<code>{_e(first.run)}</code>"),
        ("Runbook", f"{_e(d.get('runbook', '?'))} — {_e(d.get('title') or '')}"),
        ("Runbook digest", f"<code>{_e(d.get('runbook_digest', '?'))}</code>"),
        ("Incident", _e(d.get("incident") or "—")),
        ("Mode", _e(d.get("mode", "live"))),
        ("Started by", _e(d.get("initiator", "?"))),
        *((name, _e(value)) for name, value in detection_rows(events)),
        *([("Steps", _e(chosen))] if (chosen := describe_selection(d)) else []),
        ("Outcome", _e(end.type.split(".", 1)[1]) if end else "not ended"),
        ("Started (UTC)", _e(first.ts)),
        ("Ended (UTC)", _e(end.ts) if end else "—"),
    ]
    if end is not None:
        seconds = (parse_ts(end.ts) - parse_ts(first.ts)).total_seconds()
        rows.append(("Duration", _e(format_seconds(seconds))))
    if d.get("params"):
        rows.append(("Parameters", f"<span class='mono'>{_e(format_values(d['params'], 600))}"
                                   "</span>"))  # fmt: skip
    rows.append(("irctl version", _e(d.get("irctl") or "?")))
    verdict = (
        f'<div class="ok"><span class="pass">VERIFIED</span> {_e(report.summary())}</div>'
        if report.ok
        else f'<div class="alert"><span class="fail">NOT VERIFIED</span> '
        f"{_e(report.summary())}: {_e(report.problems[0] if report.problems else '')}</div>"
    )
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'{verdict}<table class="summary"><tbody>{body}</tbody></table>'


def _objectives(found: list[Objective], detected: str | None = None) -> str:
    if not found:
        return '<p class="muted">The runbook sets no time objectives.</p>'
    since = (
        f'<p class="muted">Timed from the detection of the alert that started the run '
        f"({_e(detected)}), not from the run's start.</p>"
        if detected else ""
    )  # fmt: skip
    rows = []
    for o in found:
        result = (
            '<span class="na">not reached</span>'
            if o.met is None
            else ('<span class="pass">MET</span>' if o.met else '<span class="fail">MISSED</span>')
        )
        if o.chosen:
            result += "<br>" + "<br>".join(_e(words) for words in o.chosen)
        rows.append([
            _e(o.tag), _e(format_seconds(o.target)),
            _e(", ".join(o.steps) or "no step carries this tag"),
            _e(format_seconds(o.finished)) if o.finished is not None else "—", result,
        ])  # fmt: skip
    head = ["objective (tag)", "target", "steps", "finished after", "result"]
    return since + _table(head, rows)


def _breakglass(events: Sequence[Event], by_seq: dict[int, ApprovalCheck]) -> str:
    items: list[str] = []
    for event in events:
        d = event.data
        if event.type == GRANTED and d.get("break_glass") and d.get("decision") == "approve":
            items.append(
                f"<li><b>BREAK-GLASS approval</b> of <code>{_e(_step_key(d))}</code> by "
                f"<b>{_e(d.get('operator', '?'))}</b> at {_e(d.get('time') or event.ts)} "
                f"(event {event.seq}): {_e(d.get('reason') or 'no reason given')} — "
                f"{_signature(by_seq.get(event.seq))}</li>"
            )
        elif event.type == QUORUM and d.get("break_glass"):
            items.append(
                f"<li><b>Gate opened by break-glass</b>: <code>{_e(_step_key(d))}</code> ran on "
                f"the approval of {_e(', '.join(map(str, d.get('approvers') or [])))} alone "
                f"(event {event.seq})</li>"
            )
        elif event.type == REVIEW_ITEM:
            items.append(
                f"<li><b>Review item</b> (event {event.seq}, {_e(d.get('by') or '?')}): "
                f"{_e(d.get('text', ''))}</li>"
            )
        elif event.type == ev.STEP_IN_DOUBT:
            items.append(
                f"<li><b>In doubt</b>: <code>{_e(_step_key(d))}</code> started but no outcome "
                f"was recorded (event {event.seq}): {_e(d.get('reason') or '')}</li>"
            )
        elif event.type == ev.STEP_RESOLVED:
            who = d.get("by") or "?"
            how = {"probe": "by the action's probe", "idempotent": "by re-running (idempotent)"}
            items.append(
                f"<li><b>In-doubt resolution</b>: <code>{_e(_step_key(d))}</code> marked "
                f"<b>{_e(d.get('mark', '?'))}</b> {_e(how.get(str(who), f'by operator {who}'))} "
                f"(event {event.seq})" + (f": {_e(d['reason'])}" if d.get("reason") else "")
                + "</li>"
            )
    if not items:
        return '<p class="muted">No break-glass approval, review item or in-doubt step.</p>'
    return (
        '<div class="alert"><b>Review required.</b> The normal path was left here: each item '
        "below must be reviewed after the incident.<ul>" + "".join(items) + "</ul></div>"
    )


def _approvals(events: Sequence[Event], by_seq: dict[int, ApprovalCheck]) -> str:
    steps: dict[str, list[Event]] = {}
    for event in events:
        if event.type in APPROVAL_EVENTS:
            steps.setdefault(_step_key(event.data), []).append(event)
    if not steps:
        return '<p class="muted">No step of this run needed an approval.</p>'
    out: list[str] = []
    for key, found in steps.items():
        out.append(f"<h3>Step <code>{_e(key)}</code></h3>")
        rows: list[list[str]] = []
        for event in found:
            d = event.data
            if event.type == REQUESTED:
                out.append(
                    f"<p>Requested at {_e(d.get('requested_at') or event.ts)} (event {event.seq})"
                    f" under policy <b>{_e(d.get('policy') or 'inline')}</b> "
                    f"({_e(policy_words(d.get('rules')))}). Digest put to the approvers: "
                    f"<code>{_e(d.get('digest', '?'))}</code>, action "
                    f"<code>{_e(d.get('action', '?'))}</code>, inputs "
                    f"<span class='mono'>{_e(format_values(d.get('inputs'), 600))}</span></p>"
                )
            elif event.type in (GRANTED, DENIED):
                decision = d.get("decision") or ("approve" if event.type == GRANTED else "deny")
                if decision == "approve" and d.get("break_glass"):
                    decision = "BREAK-GLASS approve"
                rows.append([
                    str(event.seq), _e(d.get("time") or event.ts),
                    f"<b>{_e(d.get('operator') or d.get('by') or '?')}</b>", _e(decision),
                    f"<code>{_e(d.get('digest') or '')}</code>", _e(d.get("reason") or ""),
                    _e(d.get("channel") or ""), _signature(by_seq.get(event.seq)),
                ])  # fmt: skip
            else:
                summary, _, _ = describe(event)
                digest = f" for <code>{_e(d['digest'])}</code>" if d.get("digest") else ""
                out.append(f"<p>Event {event.seq}, {_e(event.ts)}: <b>{_e(summary)}</b>"
                           f"{digest}</p>")  # fmt: skip
        if rows:
            out.append(_table(
                ["#", "time (UTC)", "signer", "decision", "digest approved", "reason", "via",
                 "signature"], rows,
            ))  # fmt: skip
    return "".join(out)


def _notes(events: Sequence[Event]) -> str:
    rows = [
        [str(e.seq), _e(e.ts), _e(e.data.get("by") or e.data.get("operator") or
                                  ("action" if e.type == ev.STEP_NOTE else "?")),
         _e(_step_key(e.data) if e.data.get("step") else ""), _e(e.data.get("text", ""))]
        for e in events if e.type in (ev.RUN_NOTE, ev.STEP_NOTE)
    ]  # fmt: skip
    if not rows:
        return '<p class="muted">No notes were recorded.</p>'
    return _table(["#", "time (UTC)", "by", "step", "note"], rows)


def _secrets(events: Sequence[Event]) -> str:
    rows: list[list[str]] = []
    for event in events:
        starts = (ev.RUN_STARTED, ev.RUN_RESUMED)
        found = event.data.get("secrets") if event.type in starts else None
        if not isinstance(found, dict):
            continue
        for name, recorded in sorted(found.items()):
            entry = recorded if isinstance(recorded, dict) else {}
            rows.append([
                str(event.seq), _e(name), _e(entry.get("ref") or ""),
                f"<code>{_e(entry.get('commitment') or '')}</code>",
            ])  # fmt: skip
    if not rows:
        return '<p class="muted">No secret was resolved for this run.</p>'
    return (
        "<p>Each secret is recorded as a salted commitment: the transcript alone reveals "
        "nothing about the value. Given the value and the salt kept in the store, "
        "<code>irctl transcript check-secret</code> confirms which value was used.</p>"
        + _table(["event", "secret", "reference", "commitment"], rows)
    )


def _chart(events: Sequence[Event]) -> str:
    """An inline SVG bar per step: when it started and finished, from run start."""
    start = parse_ts(events[0].ts)
    end = parse_ts(events[-1].ts)
    total = max((end - start).total_seconds(), 0.001)
    spans: dict[str, list[float]] = {}
    outcome: dict[str, str] = {}
    for event in events:
        if not event.data.get("step") or event.type not in (
            ev.STEP_STARTED, ev.STEP_SUCCEEDED, ev.STEP_FAILED, ev.STEP_SKIPPED,
        ):  # fmt: skip
            continue
        key = _step_key(event.data)
        at = (parse_ts(event.ts) - start).total_seconds()
        spans.setdefault(key, [at, at])[1] = at
        outcome[key] = event.type
    if not spans:
        return ""
    width, row, label = 900, 18, 220
    height = row * len(spans) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="step durations">']  # fmt: skip
    colours = {ev.STEP_SUCCEEDED: "#2f9e55", ev.STEP_FAILED: "#c62828", ev.STEP_SKIPPED: "#9aa5b1"}
    for i, (key, (a, b)) in enumerate(spans.items()):
        y = 4 + i * row
        x = label + (width - label - 10) * a / total
        w = max(2.0, (width - label - 10) * (b - a) / total)
        parts.append(f'<text x="0" y="{y + 12}" font-size="11" font-family="sans-serif">'
                     f"{_e(key[:32])}</text>")  # fmt: skip
        parts.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="12" '
                     f'fill="{colours.get(outcome[key], "#e0a800")}"/>')  # fmt: skip
    parts.append(f'<text x="{label}" y="{height - 4}" font-size="10" fill="#6a737d">0s</text>')
    parts.append(f'<text x="{width - 60}" y="{height - 4}" font-size="10" fill="#6a737d">'
                 f"{_e(format_seconds(total))}</text></svg>")  # fmt: skip
    return "".join(parts)


def _timeline(events: Sequence[Event]) -> str:
    rows: list[list[str]] = []
    for row in timeline(events):
        digest = f" <code>{_e(row.digest)}</code>" if row.digest else ""
        rows.append([
            str(row.seq), _e(row.ts), _e(format_seconds(row.elapsed)), _e(row.step or ""),
            _e(row.summary), _e(row.actor or ""), f"<span class='mono'>{_e(row.detail)}</span>"
            + digest, _e(format_seconds(row.duration)) if row.duration is not None else "",
        ])  # fmt: skip
    return _chart(events) + _table(
        ["#", "time (UTC)", "+", "step", "what happened", "who", "detail", "took"], rows
    )


def _verification(found: list[Check], report: VerifyReport) -> str:
    rows = [[_badge(c.passed), _e(c.name), _e(c.detail)] for c in found]
    problems = "".join(f"<li>{_e(p)}</li>" for p in report.problems)
    extra = f"<h3>Problems</h3><ol>{problems}</ol>" if problems else ""
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.notes)
    extra += f"<h3>Notes</h3><ul>{notes}</ul>" if notes else ""
    keys = report.operator_keys
    if keys:
        extra += "<h3>Operator keys recorded at run start</h3>" + _table(
            ["operator", "public key"],
            [[_e(k), f"<code>{_e(v or 'no key')}</code>"] for k, v in sorted(keys.items())],
        )
    return (
        _table(["result", "check", "detail"], rows) + extra
        + "<p>Verify again, offline, with <code>irctl transcript verify FILE --key "
        "&lt;installation public key&gt;</code>.</p>"
    )  # fmt: skip


def _seal(events: Sequence[Event]) -> str:
    last = events[-1]
    rows = [
        [str(cp.seq), _e(cp.data.get("seq", "?")), f"<code>{_e(cp.data.get('head', ''))}</code>",
         f"<code>{_e(cp.data.get('key', ''))}</code>"]
        for cp in events if cp.type == ev.CHECKPOINT
    ]  # fmt: skip
    table = (
        _table(["checkpoint", "seals event", "head hash", "key"], rows)
        if rows else "<p>No checkpoints were recorded.</p>"
    )  # fmt: skip
    return (
        f"<p>Last event {last.seq} (<code>{_e(last.type)}</code>), hash "
        f"<code>{_e(last.hash)}</code>.</p>{table}"
    )


def _control_map() -> str:
    rows = [
        [_e(framework), f"<b>{_e(ref)}</b>", _e(what),
         ", ".join(f'<a href="#{s}">{_e(_SECTION_TITLES[s])}</a>' for s in where)]
        for framework, ref, what, where in CONTROLS
    ]  # fmt: skip
    return (
        "<p>Where this transcript evidences common incident-response controls. The mapping "
        "points at evidence; whether a control operates effectively is the auditor's "
        "judgement.</p>" + _table(["framework", "control", "what it asks", "evidenced in"], rows)
    )


def export_html(
    events: Sequence[Event], report: VerifyReport, *, anchor: Check | None = None
) -> str:
    """The self-contained HTML document of a run (no network, no script)."""
    from irctl.errors import UsageError

    if not events:
        raise UsageError("the run has no events to export")
    first = events[0]
    by_seq = {c.seq: c for c in report.decisions}
    text = first.data.get("runbook_text")
    detected = detection_times(events).get("detected_at")
    sections = [
        ("summary", _summary(events, report)),
        ("objectives", _objectives(objectives(events), detected)),
        ("breakglass", _breakglass(events, by_seq)),
        ("approvals", _approvals(events, by_seq)),
        ("notes", _notes(events)),
        ("secrets", _secrets(events)),
        ("timeline", _timeline(events)),
        ("verification", _verification(checks(events, report, anchor), report)),
        ("controls", _control_map()),
        ("seal", _seal(events)),
        ("runbook", f"<pre>{_e(text)}</pre>" if isinstance(text, str) else "<p>not recorded</p>"),
    ]
    titles = {**_SECTION_TITLES, "controls": "Control map"}
    body = "".join(
        f'<section id="{name}"><h2>{_e(titles[name])}</h2>{content}</section>'
        for name, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Transcript of run {_e(first.run)}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>Transcript of run {_e(first.run)}</h1>"
        f'<p class="muted">irctl incident transcript · runbook {_e(first.data.get("runbook"))}'
        f" · generated from {len(events)} recorded events</p>{body}</main></body></html>\n"
    )
