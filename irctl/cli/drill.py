"""``irctl drill list|run|schedule|unschedule|report`` and ``irctl scheduler run``."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, folding, out, print_json
from irctl.errors import UsageError

if TYPE_CHECKING:
    from irctl.runbook.model import Config
    from irctl.workspace import Workspace

drill_app = typer.Typer(
    help="Tabletop and sandbox drills: run, schedule and score them.", no_args_is_help=True
)
scheduler_app = typer.Typer(help="The drill scheduler.", no_args_is_help=True)
app.add_typer(drill_app, name="drill")
app.add_typer(scheduler_app, name="scheduler")

SCHEDULER = "irctl-scheduler"  # the initiator of a drill the scheduler starts
SCALE_OPTION = typer.Option(
    1.0,
    "--time-scale",
    help="Multiply inject offsets, targets and the time limit (0.1: a 40 min scenario in 4 min).",
)
SANDBOX_OPTION = typer.Option(
    None,
    "--sandbox",
    help="For a sandbox drill: an irctl.yaml holding the sandbox's integrations and vars.",
)


def _sandbox(path: Path | None) -> "Config | None":
    if path is None:
        return None
    from irctl.runbook.loader import load_config

    if not path.is_file():
        raise UsageError(f"no sandbox config {path}")
    return load_config(path)


def _drill(ws: "Workspace", drill_id: str) -> Any:
    from irctl.drills.drill import find_drill

    return find_drill(ws.drills_dir, drill_id)


@drill_app.command("list")
def list_command(as_json: bool = JSON_OPTION) -> None:
    """The drills in drills/: runbook, mode, schedule, and when each next fires if scheduled."""
    from irctl.cli.runs import _workspace
    from irctl.drills.drill import load_drills

    ws = _workspace()
    drills = load_drills(ws.drills_dir) if ws.drills_dir.is_dir() else {}
    jobs: dict[str, dict[str, Any]] = {}
    if drills:
        from irctl.drills.scheduler import scheduled_jobs

        jobs = {job["drill"]: job for job in scheduled_jobs(ws.store)}
    rows = []
    for drill_id, (drill, path) in sorted(drills.items()):
        job = jobs.get(drill_id)
        rows.append({
            "drill": drill_id, "title": drill.title, "runbook": drill.runbook,
            "mode": drill.mode, "file": str(path),
            "schedule": f"{drill.schedule.cron} ({drill.schedule.timezone})"
            if drill.schedule else None,
            "next_run": job["next_run"] if job else None,
            "injects": len(drill.injects), "objectives": len(drill.objectives),
        })  # fmt: skip
    if as_json:
        print_json(rows)
        return
    if not rows:
        err.print(f"no drills in {ws.drills_dir}")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("drill", "runbook", "mode", "schedule", "next run"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(str(row[k] or "")) for k in (
            "drill", "runbook", "mode", "schedule", "next_run",
        )))  # fmt: skip
    out.print(folding(table))


@drill_app.command("run")
def run_command(
    drill_id: str = typer.Argument(..., help="A drill id from drills/."),
    operator: str | None = typer.Option(None, "--as", help="Who starts the drill."),
    time_scale: float = SCALE_OPTION,
    time_limit: str | None = typer.Option(
        None, help="End the drill after this long (30m, 2h); default twice its longest target."
    ),
    sandbox: Path | None = SANDBOX_OPTION,
    interactive: bool | None = typer.Option(
        None, "--interactive/--unattended", help="Ask at manual steps on this terminal."
    ),
    scheduled: bool = typer.Option(False, hidden=True, help="Started by the scheduler."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a drill: the runbook rehearsed in tabletop (or sandbox) mode, never live.

    Injects are shown here at their offsets (and posted to Slack when configured);
    approvals and manual steps are real: answer them with `irctl approve` /
    `irctl answer` from anywhere.  The run ends when the runbook ends or the time
    limit passes; then `irctl drill report RUN_ID` scores it.

    Example: irctl drill run quarterly-hot-wallet --as alice
    """
    from irctl.cli.runs import _asker, _finish, _operator, _workspace
    from irctl.cli.view import RunView
    from irctl.drills.drill import drive_drill, sandbox_config, start_drill
    from irctl.runbook.loader import load_runbook_text, read_document
    from irctl.runbook.model import parse_duration

    ws = _workspace()
    drill, _ = _drill(ws, drill_id)
    config = sandbox_config(ws.config, _sandbox(sandbox), drill)
    # A scheduled drill is started by the scheduler, not by an operator of the workspace.
    who = SCHEDULER if scheduled and operator is None else _operator(ws, operator)
    limit: float | None = None
    if time_limit is not None:
        try:
            limit = parse_duration(time_limit)
        except ValueError as exc:
            raise UsageError(f"--time-limit: {exc}") from None
    path = ws.resolve_runbook(drill.runbook)
    text = read_document(path)
    runbook = load_runbook_text(text, str(path))
    view = RunView(err, title=f"drill {drill.id}", live=False if as_json else None)
    ask = interactive if interactive is not None else (sys.stdin.isatty() and not as_json)
    from irctl.engine.engine import Engine

    engine = Engine(
        ws.store, config=config, signing_key=ws.signing_key(), workspace=ws.root,
        listener=view, interactive=_asker(view) if ask else None, operator=who,
    )  # fmt: skip
    run_id = start_drill(
        engine, drill, runbook, text, initiator=who, time_scale=time_scale, scheduled=scheduled
    )
    err.print(f"drill run [bold]{run_id}[/bold] of {escape(drill.id)} ({drill.mode})")

    def say(text: str) -> None:
        err.print(f"[bold cyan]{escape(text)}[/bold cyan]")

    with view:
        state = drive_drill(
            engine, run_id, say=say, time_limit=limit * time_scale if limit else None
        )
    if as_json:
        print_json({"run_id": run_id, "drill": drill.id, "status": state.status})
    err.print(f"score it with: irctl drill report {run_id}")
    _finish(state)


@drill_app.command("schedule")
def schedule_command(
    drill_id: str = typer.Argument(..., help="A drill id from drills/ with a schedule."),
    at: str | None = typer.Option(
        None,
        help="Instead of the drill's cron: once, at this time (ISO 8601, or +DURATION from "
        "now, e.g. +10s); an unannounced drill, also how the scheduler is tested.",
    ),
    time_scale: float = SCALE_OPTION,
    sandbox: Path | None = SANDBOX_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Store the drill's schedule in the irctl store; `irctl scheduler run` fires it.

    One job per drill (and one for its --at run): scheduling again replaces it.
    """
    from irctl.cli.runs import _workspace
    from irctl.drills.scheduler import schedule_drill

    ws = _workspace()
    drill, _ = _drill(ws, drill_id)
    if sandbox is not None:
        _sandbox(sandbox)
        sandbox = sandbox.resolve()
    elif drill.mode == "sandbox":
        raise UsageError(f"drill '{drill.id}' runs in sandbox mode: give --sandbox FILE")
    job = schedule_drill(
        ws.store, ws.root, drill, at=at, time_scale=time_scale,
        sandbox=str(sandbox) if sandbox else None,
    )  # fmt: skip
    if as_json:
        print_json(job)
        return
    err.print(
        f"drill {escape(drill.id)} scheduled ({escape(job['trigger'])}); next run "
        f"{job['next_run']}; start `irctl scheduler run` to fire it"
    )


@drill_app.command("unschedule")
def unschedule_command(
    drill_id: str = typer.Argument(..., help="The drill to take off the schedule."),
) -> None:
    """Remove a drill's scheduled jobs (its cron and any --at run) from the store."""
    from irctl.cli.runs import _workspace
    from irctl.drills.scheduler import unschedule_drill

    ws = _workspace()
    removed = unschedule_drill(ws.store, drill_id)
    if not removed:
        raise UsageError(f"drill '{drill_id}' is not scheduled")
    err.print(f"drill {escape(drill_id)} unscheduled ({removed} job(s) removed)")


@drill_app.command("report")
def report_command(
    run_id: str = typer.Argument(..., help="A drill run (an unambiguous prefix is enough)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder for the reports (default: .irctl/reports)."
    ),
    last: int = typer.Option(8, help="How many drills of the same id the trend compares."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Score a drill: Markdown and a self-contained HTML scorecard, with the trend.

    Each objective met or missed with its measured time; waiting on people apart
    from time in actions; who approved how fast; what to improve; and how the
    last drills of the same id compare.
    """
    from dataclasses import asdict

    from irctl.cli.runs import _workspace
    from irctl.drills.drill import direction, score, short, trend
    from irctl.drills.scorecard import write_reports

    if last < 1:
        raise UsageError("--last must be at least 1")
    ws = _workspace()
    found = ws.reader.find_run(run_id)
    card = score(ws.reader.events(found.id))
    history = trend(ws.reader, card.drill, limit=None)
    rows = [r for r in history if r.started_at <= card.started_at][-last:]
    md, page = write_reports(card, rows, output or ws.state_dir / "reports")
    if as_json:
        print_json({
            **card.as_dict(), "markdown": str(md), "html": str(page),
            "trend": [asdict(r) for r in rows], "direction": direction(rows),
        })  # fmt: skip
        return
    out.print(
        f"{escape(card.drill)} {card.run_id}: {card.headline} {short(card.contained)}; "
        f"objectives met {card.met} of {len(card.objectives)}; waiting on people "
        f"{short(card.people_seconds)}, actions {short(card.action_seconds)}"
    )
    for o in card.objectives:
        verdict = "[green]met[/green]" if o.met else "[red]MISSED[/red]"
        out.print(f"  {verdict} {escape(o.name)}: {short(o.measured)} / {short(o.within)}")
    out.print(f"trend: {escape(direction(rows))}")
    out.print(f"wrote {md}\nwrote {page}")


@scheduler_app.command("run")
def scheduler_run_command(
    poll: float = typer.Option(1.0, help="Seconds between checks for new jobs and leadership."),
) -> None:
    """Run the drill scheduler in the foreground.

    Exactly one scheduler leads per store (a file lock beside a SQLite store, a
    PostgreSQL advisory lock for teams); others wait as standby and take over
    when the leader stops or dies.  Each fired drill runs as its own process.
    """
    from irctl.cli.runs import _workspace
    from irctl.drills.scheduler import run_scheduler

    if not poll > 0:
        raise UsageError("--poll must be above 0")
    ws = _workspace()

    def say(text: str) -> None:
        err.print(escape(text))

    run_scheduler(ws.store, ws.root, say=say, poll=poll)
