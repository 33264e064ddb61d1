"""``irctl transcript``: show, verify and export the tamper-evident record of a run.

Thin: each command parses its arguments, calls :mod:`irctl.transcript`, and
renders the result.  Library imports happen inside the commands so that
``irctl --help`` does not pay for them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from irctl.cli._app import JSON_OPTION, err, escape, out, print_json, transcript_app
from irctl.errors import UsageError, VerificationFailed

if TYPE_CHECKING:
    from irctl.events import Event
    from irctl.transcript import VerifyReport
    from irctl.workspace import Workspace

FORMATS = ("jsonl", "md")
LATER_FORMATS = ("html", "pdf")


def _workspace() -> Workspace:
    from irctl.workspace import Workspace

    return Workspace.find()


def _trusted_keys(values: list[str] | None, workspace: Workspace | None) -> list[str] | None:
    """``--key`` values (a key, or a file holding one); else the workspace's key; else None."""
    from irctl.identity import PREFIX, load_public_key

    if values:
        keys: list[str] = []
        for value in values:
            text = value.strip()
            if not text.startswith(PREFIX):
                path = Path(value).expanduser()
                if not path.is_file():
                    raise UsageError(
                        f"--key {value!r} is neither an 'ed25519:<base64>' public key "
                        "nor a file holding one"
                    )
                try:
                    text = path.read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    raise UsageError(f"--key {value}: cannot read the key file: {exc}") from exc
                if not text.startswith(PREFIX):
                    raise UsageError(
                        f"--key {value}: the file does not hold an 'ed25519:<base64>' public key"
                    )
            load_public_key(text)  # UsageError names what is wrong
            keys.append(text)
        return keys
    if workspace is None:
        workspace = _workspace()
    key = workspace.public_key()
    return [key] if key else None


def _events(workspace: Workspace, run_id: str) -> tuple[str, list[Event]]:
    run = workspace.store.find_run(run_id)
    return run.id, workspace.store.events(run.id)


# -- show ------------------------------------------------------------------------------------


@transcript_app.command("show")
def show(
    run_id: Annotated[
        str, typer.Argument(help="Run id, or an unambiguous prefix of one.", metavar="RUN_ID")
    ],
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a run's timeline: when each step started and ended, what it did, who decided.

    Every row is an event of the run's journal; inputs and outputs appear as
    they were recorded, with secrets as ••••.

    Examples:

      irctl transcript show r-20261121-0300-ab12

      irctl transcript show r-2026 --json
    """
    from irctl.exports import timeline
    from irctl.transcript import verify_lines

    workspace = _workspace()
    found, events = _events(workspace, run_id)
    rows = timeline(events)
    report = verify_lines([e.line for e in events], public_keys=_trusted_keys(None, workspace))
    header = _header(events)
    if as_json:
        print_json(
            {
                "run": header,
                "timeline": [row.as_dict() for row in rows],
                "verify": report.as_dict(),
            }
        )
        return
    _print_show(found, header, rows, report)


def _header(events: list[Event]) -> dict[str, Any]:
    from irctl import events as ev

    first = events[0]
    data = first.data
    end = next((e for e in reversed(events) if e.type in ev.TERMINAL), None)
    return {
        "run": first.run,
        "runbook": data.get("runbook"),
        "runbook_digest": data.get("runbook_digest"),
        "title": data.get("title"),
        "incident": data.get("incident"),
        "mode": data.get("mode"),
        "initiator": data.get("initiator"),
        "params": data.get("params"),
        "outcome": end.type.split(".", 1)[1] if end else None,
        "started": first.ts,
        "ended": end.ts if end else None,
        "events": len(events),
    }


def _print_show(run_id: str, header: dict[str, Any], rows: list[Any], report: VerifyReport) -> None:
    from rich.table import Table

    from irctl.exports import format_seconds, format_values

    def field(name: str, value: Any) -> None:
        if value not in (None, "", {}):
            out.print(f"[bold]{name:<10}[/bold] {escape(str(value))}")

    out.print(f"[bold]run {escape(run_id)}[/bold]")
    field("runbook", f"{header['runbook']} ({header['runbook_digest']})")
    field("title", header["title"])
    field("incident", header["incident"])
    field("mode", header["mode"])
    field("initiator", header["initiator"])
    if header["params"]:
        field("params", format_values(header["params"], 300))
    field("started", header["started"])
    field("ended", header["ended"] or "— (not ended)")
    field("outcome", header["outcome"] or "—")

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("+", justify="right", style="dim", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("what happened")
    table.add_column("who")
    table.add_column("detail", overflow="fold")
    table.add_column("took", justify="right", no_wrap=True)
    for row in rows:
        style = _row_style(row.type, row.summary)
        table.add_row(
            str(row.seq),
            row.ts[11:23],
            format_seconds(row.elapsed),
            escape(row.step or ""),
            f"[{style}]{escape(row.summary)}[/{style}]" if style else escape(row.summary),
            escape(row.actor or ""),
            escape(_short(row.detail, 100) + (f" {_short(row.digest, 16)}" if row.digest else "")),
            format_seconds(row.duration) if row.duration is not None else "",
        )
    out.print()
    out.print(table)
    out.print()
    if report.ok:
        trust = "" if report.trusted else " (embedded key only; not checked against a trusted key)"
        out.print(
            f"[green]integrity:[/green] {escape(report.summary())}{escape(trust)}", soft_wrap=True
        )
    else:
        out.print(
            f"[red]integrity: NOT verified[/red] — {escape(report.problems[0])}", soft_wrap=True
        )
        out.print(f"run 'irctl transcript verify {escape(run_id)}' for the details")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row_style(kind: str, summary: str = "") -> str:
    if summary.startswith(("BREAK-GLASS", "QUORUM BY BREAK-GLASS", "REVIEW ITEM")):
        return "bold red"
    if kind.endswith(("failed", "aborted", "in_doubt", "denied", "cancelled")):
        return "red"
    if kind == "approval.quorum":
        return "green"
    if kind.endswith("succeeded"):
        return "green"
    if kind.endswith(("waiting", "interrupted", "retrying")):
        return "yellow"
    if kind == "checkpoint":
        return "dim"
    return ""


# -- verify ----------------------------------------------------------------------------------


@transcript_app.command("verify")
def verify(
    target: Annotated[
        str,
        typer.Argument(
            help="An exported transcript file (.jsonl), or a run id in this workspace's store.",
            metavar="RUN_ID|FILE",
        ),
    ],
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            "-k",
            help="A trusted public key ('ed25519:<base64>') or a file holding one; repeatable. "
            "Default: the workspace's installation key.",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Verify a transcript offline: hash chain, signed checkpoints, runbook digest, no cut tail.

    Exits 0 and prints what was verified, or exits 1 naming the first event that
    cannot be trusted and what is wrong with it.  Needs only public keys.

    Approvals are checked too: every signed decision against the operator's
    key as recorded when the run was created, every digest against the
    recorded inputs, every quorum against the decisions and the policy.
    Break-glass approvals are reported loudly.

    Examples:

      irctl transcript verify r-20261121-0300-ab12

      irctl transcript verify incident-4411.jsonl --key ed25519:3q2+7w...=

      irctl transcript verify incident-4411.jsonl --key installation.pub --json
    """
    from irctl.transcript import verify_file, verify_run

    path = Path(target)
    if path.exists():
        if path.is_dir():
            raise UsageError(f"{target} is a directory; give a transcript file or a run id")
        report = verify_file(path, _trusted_keys(key, None))
        source = str(path)
    elif path.suffix.lower() in {".jsonl", ".json", ".zip"} or "/" in target or "\\" in target:
        raise UsageError(f"no file {target}")
    else:
        workspace = _workspace()
        run = workspace.store.find_run(target)
        report = verify_run(workspace.store, run.id, _trusted_keys(key, workspace))
        source = f"run {run.id}"
    if as_json:
        print_json({"source": source, **report.as_dict()})
    else:
        _print_verify(source, report)
    if not report.ok:
        raise VerificationFailed(f"{source} does not verify: {report.problems[0]}")


def _print_verify(source: str, report: VerifyReport) -> None:
    if report.ok:
        out.print(f"[green]{escape(report.summary())}[/green]", soft_wrap=True)
        outcome = report.outcome.split(".", 1)[1] if report.outcome else "not ended"
        where = "" if source.startswith("run ") else f" · {source}"
        out.print(f"run {escape(report.run_id or '?')} · {escape(outcome)}{escape(where)}")
    else:
        out.print(f"[red bold]NOT verified:[/red bold] {escape(source)}")
        if report.first_bad is not None:
            out.print(
                f"first bad event: {report.first_bad} (line {report.first_bad_line}); "
                f"events before it verified"
            )
        for problem in report.problems:
            out.print(f"  - {escape(problem)}", soft_wrap=True)
    for used in report.break_glass:
        out.print(f"[bold red]BREAK-GLASS used by {escape(used)}: review it[/bold red]")
    if report.unchecked_approvals:
        out.print(
            f"[yellow]note:[/yellow] {report.unchecked_approvals} approval decision(s) were "
            "recorded before approvals were signed (no operators recorded at run start): "
            "only the installation key vouches for them",
            soft_wrap=True,
        )
    for note in report.notes:
        out.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)


# -- export ----------------------------------------------------------------------------------


@transcript_app.command("export")
def export(
    run_id: Annotated[
        str, typer.Argument(help="Run id, or an unambiguous prefix of one.", metavar="RUN_ID")
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="jsonl (the exact signed lines; verifies offline) or md (a readable document).",
        ),
    ] = "jsonl",
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write, or '-' for stdout.")
    ] = "-",
) -> None:
    """Export a run's transcript for auditors.

    jsonl holds exactly the stored, hash-chained lines, so it can be verified
    anywhere with 'irctl transcript verify FILE --key ...'.  md is a readable
    document (header, timeline, seal) of the same events.

    Examples:

      irctl transcript export r-20261121-0300-ab12 --format jsonl -o incident-4411.jsonl

      irctl transcript export r-2026 --format md -o - | less
    """
    from irctl.exports import export_jsonl, export_markdown
    from irctl.transcript import verify_lines

    kind = fmt.strip().lower()
    if kind == "markdown":
        kind = "md"
    if kind in LATER_FORMATS:
        raise UsageError(f"--format {fmt}: not yet supported; use jsonl or md")
    if kind not in FORMATS:
        raise UsageError(f"--format {fmt!r}: unknown format; use jsonl or md")
    workspace = _workspace()
    run = workspace.store.find_run(run_id)
    target = None if output == "-" else Path(output)
    try:
        handle = sys.stdout if target is None else target.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from exc
    try:
        if kind == "jsonl":
            count = export_jsonl(workspace.store.lines(run.id), handle)
        else:
            events = workspace.store.events(run.id)
            report = verify_lines(
                [e.line for e in events], public_keys=_trusted_keys(None, workspace)
            )
            handle.write(export_markdown(events, report))
            count = len(events)
    finally:
        if target is not None:
            handle.close()
    if target is not None:
        err.print(f"wrote {count} events of run {escape(run.id)} to {escape(str(target))} ({kind})")
