"""The live view of a run: a table of steps redrawn as events arrive (or plain lines)."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from irctl.cli._app import escape
from irctl.journal import events as ev
from irctl.journal.events import Event, parse_ts
from irctl.journal.state import RunState
from irctl.record.exports import describe as words
from irctl.runbook.located import printable

ICONS = {
    "pending": ("·", "dim"),
    "running": ("▶", "cyan"),
    "retrying": ("↻", "yellow"),
    "repeating": ("↻", "cyan"),
    "succeeded": ("✔", "green"),
    "failed": ("✘", "red"),
    "skipped": ("⤼", "dim"),
    "waiting": ("⏸", "magenta"),
    "interrupted": ("■", "yellow"),
}


QUIET = {ev.STEP_STARTED, ev.STEP_SUCCEEDED, ev.RUN_STARTED, ev.RUN_RESUMED}


def describe(event: Event) -> str:
    """One line for an event: the transcript's words, without the bulky detail of a live view."""
    summary, detail, actor = words(event)
    data = event.data
    where = data.get("step")
    if where is not None and "item" in data:
        where = f"{where}[{data['item']}]"
    text = f"{where}: {summary}" if where else summary
    if event.type == ev.STEP_STARTED and data.get("attempt", 1) != 1:
        text += f" (attempt {data['attempt']})"
    if detail and event.type not in QUIET:
        text += f": {detail}"
    if actor and event.type not in (ev.RUN_CREATED,):
        text += f" (by {actor})"
    return text


class RunView:
    """An engine listener that shows a run's steps as they change."""

    def __init__(self, console: Console, *, live: bool | None = None, title: str = "") -> None:
        self.console = console
        self.state = RunState()
        self.title = title
        self.lock = threading.Lock()
        self.order: list[str] = []
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.use_live = console.is_terminal if live is None else live
        self._live: Live | None = None
        self.last_note = ""

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.state.apply(event)
            step = event.data.get("step")
            if step is not None:
                key = step if "item" not in event.data else f"{step}[{event.data['item']}]"
                if key not in self.order:
                    self.order.append(key)
                moment = parse_ts(event.ts).timestamp()
                if event.type == ev.STEP_STARTED:
                    self.started.setdefault(key, moment)
                    self.ended.pop(key, None)
                elif event.type in (ev.STEP_SUCCEEDED, ev.STEP_FAILED, ev.STEP_SKIPPED):
                    self.ended[key] = moment
            if not self.use_live and event.type != ev.RUN_CREATED:
                self._line(event)
            elif event.type == ev.STEP_NOTE:
                self.last_note = describe(event)

    def _line(self, event: Event) -> None:
        """One plain line per event.  Into a pipe or a log file (no colour) it is written
        as is, whole and unwrapped: rich's markup and wrapping cost more per step than the
        engine's durable step does."""
        if self.console.is_terminal or self.console.color_system is not None:
            self.console.print(f"[dim]{event.ts[11:19]}[/dim] {escape(describe(event))}")
            return
        self.console.file.write(f"{event.ts[11:19]} {printable(describe(event))}\n")

    def __enter__(self) -> RunView:
        if self.use_live:
            self._live = Live(self, console=self.console, refresh_per_second=8, transient=False)
            self._live.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    def pause(self) -> _Paused:
        return _Paused(self)

    def __rich__(self) -> RenderableType:
        with self.lock:
            table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
            table.add_column("", width=1)
            table.add_column("step")
            table.add_column("state")
            table.add_column("time", justify="right")
            now = time.time()
            items_shown: dict[str, int] = {}
            for key in self.order:
                parent = key.split("[", 1)[0] if key.endswith("]") else None
                if parent is not None:
                    items_shown[parent] = items_shown.get(parent, 0) + 1
                    if items_shown[parent] > 5:
                        continue
                step = self.state.steps.get(key)
                status = step.status if step else "pending"
                icon, style = ICONS.get(status, ("?", ""))
                began = self.started.get(key)
                elapsed = (self.ended.get(key, now) - began) if began else None
                label = f"  {key}" if parent else key
                detail = status
                if step is not None and status == "failed" and step.error:
                    detail = f"failed: {step.error[:80]}"
                if step is not None and status == "waiting":
                    detail = f"waiting for {step.waiting_for}"
                    request = step.approval
                    if step.waiting_for == "approval" and request is not None:
                        rules = request.get("rules") or {}
                        who = [str(n) for n in request.get("eligible") or []
                               if n not in step.approvers]  # fmt: skip
                        detail = (
                            f"waiting for approval {request.get('policy', '')} "
                            f"({len(step.approvers)}/{rules.get('quorum', '?')}, digest "
                            f"{str(request.get('digest', ''))[7:19]}); may approve: "
                            f"{', '.join(who) or 'nobody listed in irctl.yaml'}; irctl approve "
                            f"{self.state.run_id} {key} --as YOU"
                        )
                    elif step.waiting_for == "answer":
                        detail = f"waiting for an answer: irctl answer {self.state.run_id} {key}"
                if step is not None and status == "repeating":
                    detail = f"round {step.round} done; next at {(step.next_at or '?')[11:19]} UTC"
                if step is not None and step.items is not None and status == "running":
                    done = sum(
                        1 for k, s in self.state.steps.items()
                        if k.startswith(key + "[") and s.status in ("succeeded", "failed")
                    )  # fmt: skip
                    detail = f"running {done}/{step.items}"
                table.add_row(
                    Text(icon, style=style), Text(label), Text(detail, style=style),
                    f"{elapsed:.1f}s" if elapsed is not None else "",
                )  # fmt: skip
            header = Text(
                f"{self.title}  run {self.state.run_id}  {self.state.status}", style="bold"
            )
            parts: list[RenderableType] = [header, table]
            if self.last_note:
                parts.append(Text(self.last_note, style="dim"))
            return Group(*parts)


class _Paused:
    def __init__(self, view: RunView) -> None:
        self.view = view

    def __enter__(self) -> None:
        if self.view._live is not None:
            self.view._live.stop()

    def __exit__(self, *_: Any) -> None:
        if self.view._live is not None:
            self.view._live.start()
