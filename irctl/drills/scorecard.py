"""A drill's scorecard for management: Markdown and one self-contained HTML page.

The HTML page needs nothing from the network: its styles are inline and its
timeline chart (steps, waits on people and injects against the objectives) and
trend chart are inline SVG.  Both documents are views of a
:class:`irctl.drills.drill.Scorecard` and the trend of the same drill.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

from irctl.drills.drill import Scorecard, Segment, TrendRow, direction, short
from irctl.errors import UsageError

COLOURS = {
    "action": "#2563eb",
    "approval": "#ea580c",
    "manual": "#7c3aed",
    "inject": "#0f766e",
    "met": "#15803d",
    "missed": "#dc2626",
}
_LEGEND = (
    ("action", "action"), ("approval", "waiting for approval"), ("manual", "manual step"),
    ("inject", "inject"),
)  # fmt: skip
KIND_WORDS = {"action": "action", "approval": "waiting for approval", "manual": "manual step"}


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# -- Markdown -------------------------------------------------------------------------------------


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(card: Scorecard, rows: list[TrendRow]) -> str:
    lines = [
        f"# Drill scorecard: {_md(card.title)}",
        "",
        f"- drill **{_md(card.drill)}** of runbook **{_md(card.runbook)}**, mode {card.mode}, "
        f"run `{card.run_id}`",
        f"- started {card.started_at}, lasted {short(card.duration)}, ended **{card.status}**"
        + (f" (time scale {card.time_scale:g})" if card.time_scale != 1 else ""),
        f"- participants: {_md(', '.join(card.participants) or 'not named')}",
        f"- **{card.headline}: {short(card.contained)}**",
        f"- objectives met: **{card.met} of {len(card.objectives)}**",
        f"- waiting on people: **{short(card.people_seconds)}**; in actions: "
        f"**{short(card.action_seconds)}**",
        "",
        "## Objectives",
        "",
        "| objective | target | measured | result | note |",
        "|---|---|---|---|---|",
    ]
    for o in card.objectives:
        lines.append(
            f"| {_md(o.name)} | {short(o.within)} | {short(o.measured)} | "
            f"{_verdict(o.met)} | {_md(o.detail)} |"
        )
    lines += ["", "## Who approved how fast", ""]
    if card.approvals:
        lines += ["| step | operator | decision | after the request |", "|---|---|---|---|"]
        lines += [
            f"| {_md(a.step)} | {_md(a.operator)} | {a.decision} | {short(a.seconds)} |"
            for a in card.approvals
        ]
    else:
        lines.append("No approvals were given.")
    lines += [
        "",
        "## Timeline",
        "",
        "| from | to | step | what | status |",
        "|---|---|---|---|---|",
    ]
    for s in card.segments:
        what = "inject " + s.label if s.kind == "inject" else KIND_WORDS.get(s.kind, s.kind)
        lines.append(
            f"| {short(s.start)} | {short(s.end)} | {_md(s.step)} | {_md(what)} | {s.status} |"
        )
    lines += ["", "## Injects", ""]
    for i in card.injects:
        when = f"delivered at {short(i.delivered)}" if i.delivered is not None else "not played"
        to = f" ({', '.join(i.to)})" if i.to else ""
        lines.append(f"{i.index + 1}. T+{short(i.at)}: {_md(i.say)} — {when}{to}")
    lines += ["", "## What to improve", ""]
    lines += [f"- {_md(tip)}" for tip in card.improvements]
    lines += ["", f"## Trend of {_md(card.drill)}", "", direction(rows), ""]
    if rows:
        lines += [
            "| run | started | status | headline | objectives met | people | actions |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{r.run_id}` | {r.started_at[:16]} | {r.status} | {short(r.contained)} | "
            f"{r.met}/{r.objectives} | {short(r.people_seconds)} | {short(r.action_seconds)} |"
            for r in rows
        ]
    return "\n".join(lines) + "\n"


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px 32px;
color:#111827;background:#ffffff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.sub{color:#4b5563;margin-bottom:16px}
.figures{display:flex;gap:16px;flex-wrap:wrap}
.fig{border-radius:8px;padding:12px 16px;min-width:170px;background:#f3f4f6}
.fig b{display:block;font-size:26px}.fig.good{background:#dcfce7}.fig.bad{background:#fee2e2}
table{border-collapse:collapse;margin:4px 0}td,th{border-bottom:1px solid #e5e7eb;
padding:4px 10px;text-align:left;font-size:14px}th{background:#f9fafb}
.met{color:#15803d;font-weight:600}.missed{color:#dc2626;font-weight:600}
.legend span{display:inline-block;margin-right:16px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
li{margin:3px 0}code{font-size:13px}
"""


def _svg_timeline(card: Scorecard) -> str:
    rows: list[str] = ["injects"]
    for s in card.segments:
        if s.kind != "inject" and s.step not in rows:
            rows.append(s.step)
    targets = [o.within for o in card.objectives]
    span = max([card.duration, 1.0, *targets, *(i.at for i in card.injects)]) * 1.05
    left, width, row_h, top = 190, 760, 22, 24
    height = top + row_h * len(rows) + 40 + 12 * min(3, len(card.objectives))

    def x(seconds: float) -> float:
        return left + width * min(seconds, span) / span

    parts = [
        f'<svg width="{left + width + 30}" height="{height}" '
        f'role="img" aria-label="timeline of the drill">',
        f'<rect x="0" y="0" width="{left + width + 30}" height="{height}" fill="#ffffff"/>',
    ]
    for index, name in enumerate(rows):
        y = top + index * row_h
        if index % 2:
            parts.append(
                f'<rect x="{left}" y="{y}" width="{width}" height="{row_h}" fill="#f9fafb"/>'
            )
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" font-size="12" text-anchor="end" '
            f'fill="#374151">{escape(name[:28])}</text>'
        )
    for tick in range(6):
        seconds = span * tick / 5
        tx = x(seconds)
        bottom = top + row_h * len(rows)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{bottom}" stroke="#e5e7eb"/>'
            f'<text x="{tx:.1f}" y="{bottom + 14}" font-size="11" text-anchor="middle" '
            f'fill="#6b7280">{escape(short(seconds))}</text>'
        )
    for s in card.segments:
        parts.append(_svg_segment(s, rows, x, top, row_h))
    for index, o in enumerate(card.objectives):
        colour = COLOURS["met" if o.met else "missed"]
        # an approval's target runs from its request; every other from the drill's start
        asked = next(
            (g.start for g in card.segments if g.kind == "approval" and g.step == o.target), 0.0
        )
        ox = x(o.within + (asked if o.kind == "approval" else 0.0))
        label_y = top + row_h * len(rows) + 30 + 12 * (index % 3)
        parts.append(
            f'<text x="{ox:.1f}" y="{label_y}" font-size="10" text-anchor="middle" '
            f'fill="{colour}">{escape(o.target[:24])} ≤ {escape(short(o.within))}</text>'
        )
        parts.append(
            f'<line x1="{ox:.1f}" y1="{top - 6}" x2="{ox:.1f}" y2="{top + row_h * len(rows)}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="5,3">'
            f"<title>{escape(o.name)}: target {escape(short(o.within))}</title></line>"
        )
        if o.target in rows and o.measured is not None and o.kind == "step":
            my = top + rows.index(o.target) * row_h + row_h / 2
            parts.append(
                f'<circle cx="{x(o.measured):.1f}" cy="{my:.1f}" r="5" fill="{colour}" '
                f'stroke="#ffffff"><title>{escape(o.name)} at '
                f"{escape(short(o.measured))}</title></circle>"
            )
    parts.append(
        f'<text x="{left}" y="14" font-size="11" fill="#6b7280">dashed lines: objectives '
        "(green met, red missed)</text></svg>"
    )
    return "".join(parts)


def _svg_segment(
    s: Segment, rows: list[str], to_x: Callable[[float], float], top: int, row_h: int
) -> str:
    y = top + rows.index("injects" if s.kind == "inject" else s.step) * row_h
    tip = escape(
        f"{s.step}: {KIND_WORDS.get(s.kind, s.kind)} {short(s.start)}–{short(s.end)} {s.status}"
    )
    if s.kind == "inject":
        cx = to_x(s.start)
        return (
            f'<path d="M{cx:.1f} {y + 4} l6 7 l-6 7 l-6 -7 z" fill="{COLOURS["inject"]}">'
            f"<title>inject {escape(s.label)} at {escape(short(s.start))}</title></path>"
            f'<text x="{cx + 8:.1f}" y="{y + 15}" font-size="10" fill="#0f766e">'
            f"{escape(s.label)}</text>"
        )
    x0, x1 = to_x(s.start), to_x(s.end)
    stroke = ' stroke="#dc2626" stroke-width="2"' if s.status == "failed" else ""
    return (
        f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(3.0, x1 - x0):.1f}" height="{row_h - 8}" '
        f'rx="3" fill="{COLOURS.get(s.kind, "#6b7280")}"{stroke}><title>{tip}</title></rect>'
    )


def _svg_trend(rows: list[TrendRow]) -> str:
    points = [(i, r.contained) for i, r in enumerate(rows) if r.contained is not None]
    if len(points) < 2:
        return ""
    width, height, pad = 420, 140, 30
    top_value = max(v for _, v in points if v is not None) or 1.0
    step = (width - 2 * pad) / max(1, len(rows) - 1)
    coords = [
        (pad + i * step, height - pad - (height - 2 * pad) * (v or 0) / top_value)
        for i, v in points
    ]
    path = " ".join(
        f"{'M' if n == 0 else 'L'}{cx:.1f} {cy:.1f}" for n, (cx, cy) in enumerate(coords)
    )
    dots = "".join(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#2563eb"><title>'
        f"{escape(rows[i].run_id)}: {escape(short(v))}</title></circle>"
        for (cx, cy), (i, v) in zip(coords, points, strict=True)
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" '
        f'aria-label="trend"><rect width="{width}" height="{height}" fill="#f9fafb"/>'
        f'<path d="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>{dots}'
        f'<text x="{pad}" y="16" font-size="11" fill="#6b7280">'
        f"{escape(rows[0].headline)} per drill, oldest left</text></svg>"
    )


def render_html(card: Scorecard, rows: list[TrendRow]) -> str:
    all_met = card.met == len(card.objectives)
    people_share = (
        100 * card.people_seconds / (card.people_seconds + card.action_seconds)
        if card.people_seconds + card.action_seconds > 0
        else 0.0
    )
    body = [
        f"<h1>Drill scorecard: {escape(card.title)}</h1>",
        f'<div class="sub">drill <b>{escape(card.drill)}</b> of runbook '
        f"<b>{escape(card.runbook)}</b> · mode {escape(card.mode)} · run "
        f"<code>{escape(card.run_id)}</code> · started {escape(card.started_at)} · ended "
        f"<b>{escape(card.status)}</b>"
        + (f" · time scale {card.time_scale:g}" if card.time_scale != 1 else "")
        + (f" · participants {escape(', '.join(card.participants))}" if card.participants else "")
        + "</div>",
        '<div class="figures">',
        f'<div class="fig" id="headline">{escape(card.headline)}'
        f"<b>{escape(short(card.contained))}</b></div>",
        f'<div class="fig {"good" if all_met else "bad"}" id="objectives-met">objectives met'
        f"<b>{card.met} of {len(card.objectives)}</b></div>",
        f'<div class="fig" id="people">waiting on people<b>{escape(short(card.people_seconds))}'
        f"</b>{people_share:.0f}% of busy time</div>",
        f'<div class="fig" id="actions">in actions<b>{escape(short(card.action_seconds))}</b>'
        "</div>",
        f'<div class="fig">drill lasted<b>{escape(short(card.duration))}</b></div>',
        "</div>",
        "<h2>Timeline</h2>",
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{COLOURS[k]}"></i>{escape(w)}</span>' for k, w in _LEGEND
        )
        + "</div>",
        _svg_timeline(card),
        "<h2>Objectives</h2>",
        "<table><tr><th>objective</th><th>target</th><th>measured</th><th>result</th>"
        "<th>note</th></tr>",
    ]
    for o in card.objectives:
        verdict = "met" if o.met else "missed"
        body.append(
            f"<tr><td>{escape(o.name)}</td><td>{escape(short(o.within))}</td>"
            f'<td>{escape(short(o.measured))}</td><td class="{verdict}">{_verdict(o.met)}</td>'
            f"<td>{escape(o.detail)}</td></tr>"
        )
    body.append("</table><h2>Who approved how fast</h2>")
    if card.approvals:
        body.append(
            "<table><tr><th>step</th><th>operator</th><th>decision</th>"
            "<th>after the request</th></tr>"
        )
        body += [
            f"<tr><td>{escape(a.step)}</td><td>{escape(a.operator)}</td>"
            f"<td>{escape(a.decision)}</td><td>{escape(short(a.seconds))}</td></tr>"
            for a in card.approvals
        ]
        body.append("</table>")
    else:
        body.append("<p>No approvals were given.</p>")
    body.append("<h2>Injects</h2><ol>")
    for i in card.injects:
        when = (
            f"delivered at {escape(short(i.delivered))}"
            if i.delivered is not None
            else "<b>not played</b>"
        )
        to = f" ({escape(', '.join(i.to))})" if i.to else ""
        body.append(f"<li>T+{escape(short(i.at))}: {escape(i.say)} — {when}{to}</li>")
    body.append("</ol><h2>What to improve</h2><ul>")
    body += [f"<li>{escape(tip)}</li>" for tip in card.improvements]
    body.append(f"</ul><h2>Trend of {escape(card.drill)}</h2>")
    body.append(f'<p id="trend">{escape(direction(rows))}</p>')
    body.append(_svg_trend(rows))
    if rows:
        body.append(
            "<table><tr><th>run</th><th>started</th><th>status</th>"
            f"<th>{escape(rows[-1].headline)}</th><th>objectives met</th><th>people</th>"
            "<th>actions</th></tr>"
        )
        body += [
            f"<tr><td><code>{escape(r.run_id)}</code></td><td>{escape(r.started_at[:16])}</td>"
            f"<td>{escape(r.status)}</td><td>{escape(short(r.contained))}</td>"
            f"<td>{r.met}/{r.objectives}</td><td>{escape(short(r.people_seconds))}</td>"
            f"<td>{escape(short(r.action_seconds))}</td></tr>"
            for r in rows
        ]
        body.append("</table>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Drill scorecard: {escape(card.drill)} {escape(card.run_id)}</title>"
        f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def write_reports(card: Scorecard, rows: list[TrendRow], folder: Path) -> tuple[Path, Path]:
    """Write ``<run>-scorecard.md`` and ``<run>-scorecard.html`` into ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / f"{card.run_id}-scorecard.md"
        page = folder / f"{card.run_id}-scorecard.html"
        md.write_text(render_markdown(card, rows), encoding="utf-8")
        page.write_text(render_html(card, rows), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the scorecard into {folder}: {exc.strerror}") from exc
    return md, page
