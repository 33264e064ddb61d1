"""``irctl approve``, ``irctl deny`` and ``irctl approvals pending``."""

import json
import sys
from pathlib import Path
from typing import Any

import typer

from irctl.cli._app import JSON_OPTION, app, approvals_app, err, escape, folding, out, print_json
from irctl.errors import IrctlError, UsageError

KEY_OPTION = typer.Option(
    None,
    "--key",
    help="Your private key file (default: $IRCTL_KEY, else ~/.config/irctl/keys/OPERATOR.key).",
)


def _decide(
    run_id: str,
    step: str,
    operator: str | None,
    *,
    approve: bool,
    reason: str | None,
    break_glass: bool,
    key: Path | None,
    yes: bool,
    as_json: bool,
) -> None:
    from irctl.cli.runs import _operator, _words, _workspace
    from irctl.identity import load_private_key, operator_key_path
    from irctl.journal.state import fold
    from irctl.record.approvals import ApprovalRejected, open_request, outlook, what_next

    if reason is not None:
        reason = _words(reason, "--reason")
    ws = _workspace()
    found = ws.store.find_run(run_id)
    who = _operator(ws, operator)
    state = fold(ws.store.events(found.id))
    request = open_request(state, step)  # a step not waiting: say so before asking for a key
    path = key or operator_key_path(who)
    if key is not None and not path.is_file():
        raise UsageError(f"--key {key}: no such key file")
    if not path.is_file():
        raise ApprovalRejected(
            f"no private key for {who} at {path}: create one with 'irctl keys generate {who}' "
            "(and put its public key in irctl.yaml), or give --key"
        )
    try:
        private = load_private_key(path)
    except IrctlError as exc:
        raise UsageError(f"{exc.message}; give {who}'s Ed25519 private key file") from None
    if not as_json:
        # What you see is what you sign: the fully resolved inputs and their digest.
        verb = "approve" if approve else "deny"
        err.print(
            f"[bold]{verb}[/bold] step {escape(step)} of run {found.id} "
            f"({escape(found.runbook)}), started by {escape(state.initiator)}"
        )
        err.print(f"action {escape(str(request.get('action')))}, inputs as they will run:")
        err.print(escape(json.dumps(request.get("inputs"), indent=2, ensure_ascii=False)))
        err.print(f"digest {request.get('digest')}")
        if request.get("changed"):
            err.print("[yellow]changed since the previous request:[/yellow]")
            for where, (old, new) in request["changed"].items():
                err.print(
                    f"  {escape(where)}: {escape(json.dumps(old))} → {escape(json.dumps(new))}"
                )
        if break_glass:
            err.print(
                "[bold red]BREAK-GLASS requested: if the policy gives you a break-glass role, "
                "this approval alone satisfies it[/bold red]"
            )
        if not yes and sys.stdin.isatty():
            typer.confirm("Sign this decision?", abort=True)
    from irctl.cli.runs import _engine

    event = _engine(ws).decide(
        found.id, step, operator=who, approve=approve, reason=reason, private_key=private,
        break_glass=break_glass,
    )  # sealed by the installation key, the checkpoint anchored if irctl.yaml says so
    events = ws.store.events(found.id)
    after = fold(events).steps[step]
    verdict = outlook(events, step)
    problem = _update_slack(ws.config.integrations.get("slack"), events, step)
    if as_json:
        print_json({
            "run_id": found.id, "step": step, "decision": event.data["decision"],
            "operator": who, "digest": event.data["digest"], "seq": event.seq,
            "approvers": after.approvers, "deniers": after.deniers,
            "verdict": verdict.state if verdict else None,
            "still_needed": verdict.missing if verdict and verdict.missing else None,
            **({"warning": problem} if problem else {}),
        })  # fmt: skip
        return
    word = "approved" if approve else "denied"
    err.print(
        f"[green]{word}[/green] by {escape(who)}, signed with {event.data['key'][:20]}…; "
        f"approvals so far: {', '.join(after.approvers) or 'none'}"
        + (f"; denials: {', '.join(after.deniers)}" if after.deniers else "")
    )
    err.print(escape(what_next(verdict, found.id, step)), highlight=False)
    if problem:
        err.print(f"[yellow]warning:[/yellow] {escape(problem)}")


def _update_slack(config: dict[str, Any] | None, events: list[Any], step: str) -> str | None:
    """Update the request's Slack message, if Slack is configured; why not, if it failed.

    The decision is recorded either way: Slack is a view of it.
    """
    if not config or not config.get("token"):
        return None
    try:
        from irctl_slack.notifier import refresh_approval

        refresh_approval(config, events, step)
    except Exception as exc:  # Slack down, a bad token, slack-sdk missing
        return f"the Slack approval message was not updated (the decision stands): {exc}"
    return None


@app.command("approve")
def approve_command(
    run_id: str = typer.Argument(..., help="The run (an unambiguous prefix is enough)."),
    step: str = typer.Argument(..., help="The step waiting for approval."),
    operator: str | None = typer.Option(None, "--as", help="You, as named in irctl.yaml."),
    reason: str | None = typer.Option(None, help="Why, for the transcript."),
    break_glass: bool = typer.Option(
        False, "--break-glass", help="Approve alone in an emergency (needs --reason; reviewed)."
    ),
    key: Path | None = KEY_OPTION,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before signing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve a step with your own signed statement over exactly what will run.

    You see the fully resolved inputs and their digest first; your signature
    covers the run, the step, that digest, your decision, the time and reason.
    If the inputs change before the step runs, your approval no longer counts.

    Example: irctl approve r-20261121-030000-ab12cd sweep-to-cold --as bob --reason "matches INC-42"
    """
    _decide(
        run_id, step, operator, approve=True, reason=reason, break_glass=break_glass, key=key,
        yes=yes, as_json=as_json,
    )  # fmt: skip


@app.command("deny")
def deny_command(
    run_id: str = typer.Argument(..., help="The run."),
    step: str = typer.Argument(..., help="The step waiting for approval."),
    reason: str = typer.Option(..., help="Why: the transcript and the other approvers see it."),
    operator: str | None = typer.Option(None, "--as", help="You, as named in irctl.yaml."),
    key: Path | None = KEY_OPTION,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before signing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Deny a step: with the policy's number of denials (one by default) it will not run.

    Example: irctl deny r-20261121-030000-ab12cd sweep-to-cold --as carol --reason "wrong address"
    """
    _decide(
        run_id, step, operator, approve=False, reason=reason, break_glass=False, key=key,
        yes=yes, as_json=as_json,
    )  # fmt: skip


@approvals_app.command("pending")
def pending_command(as_json: bool = JSON_OPTION) -> None:
    """Steps waiting for approval, with what they will do and who may approve."""
    from rich.table import Table

    from irctl.cli.runs import _workspace
    from irctl.record.approvals import pending

    unreadable: list[str] = []
    rows = pending(_workspace(lazy=True).reader, unreadable=unreadable)
    for problem in unreadable:
        err.print(f"[yellow]warning:[/yellow] {escape(problem)}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err.print("nothing waits for approval")
        return
    table = Table(box=None, header_style="bold")
    longest = max(len(str(row["run_id"])) for row in rows)
    table.add_column("run", no_wrap=True, min_width=longest)  # whole, to copy into a command
    for column in ("step", "policy", "approved by", "may approve", "expires", "digest"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(str(v)) for v in _cells(row)))
    out.print(folding(table))
    for run_id in dict.fromkeys(row["run_id"] for row in rows if row.get("expired")):
        err.print(f"expired: nobody can decide on them now; irctl resume {run_id} asks again")


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        row["run_id"], row["step"], row["policy"] or "",
        ", ".join(row["approvers"]) or "-", ", ".join(row["eligible"] or []) or "-",
        f"EXPIRED {row['expires_at']}" if row.get("expired") else row["expires_at"] or "never",
        str(row["digest"])[:19] + "…",
    ]  # fmt: skip
