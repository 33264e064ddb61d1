"""Commands that plan, run and steer runs: plan, run, resume, status, runs list, abort,
answer, note.

Each command parses its arguments, calls the library, and renders the result.
"""

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, folding, out, print_json, runs_app
from irctl.errors import IrctlError, NoStore, SecretError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.engine.engine import Engine
    from irctl.journal.events import Event
    from irctl.journal.state import RunState
    from irctl.runbook.model import Runbook
    from irctl.workspace import Workspace

EXIT = {
    "succeeded": 0, "failed": 1, "aborted": 1, "tampered": 1, "waiting": 3, "interrupted": 130,
}  # fmt: skip

PARAM_OPTION = typer.Option(
    None, "--param", "-p", help="A runbook param as name=value (repeat for several).",
    metavar="NAME=VALUE",
)  # fmt: skip
AS_OPTION = typer.Option(
    None, "--as", help="The operator acting (default: $IRCTL_OPERATOR or your login name)."
)
KEY_OPTION = typer.Option(
    None,
    "--key",
    help="Your private key: in a live run your answers, marks and aborts are signed with it "
    "(default: $IRCTL_KEY, or where 'irctl keys generate' put it).",
)


def _own_key(who: str, given: Path | None, *, needed: bool) -> "Ed25519PrivateKey | None":
    """``who``'s private key: ``--key FILE``, else the default place.  Looked for only when
    given or ``needed``; None when needed but not found (the engine then says what to do)."""
    if given is None and not needed:
        return None
    from irctl.identity import load_private_key, operator_key_path

    path = given or operator_key_path(who)
    if not path.is_file():
        if given is not None:
            raise UsageError(f"--key {given}: no such key file")
        return None
    try:
        return load_private_key(path)
    except IrctlError as exc:
        raise UsageError(f"{exc.message}; give {who}'s Ed25519 private key file") from None


def _acts_signed(ws: "Workspace", run_id: str) -> bool:
    """Does the run ask for its answers, marks and aborts to be signed (live, operators)?"""
    from irctl.engine.engine import Engine

    return Engine.act_key_needed(ws.store.events(run_id))


def _workspace(*, lazy: bool = False) -> "Workspace":
    """The workspace; ``lazy``: irctl.yaml read only when needed (commands that only read)."""
    from irctl.workspace import Workspace

    return Workspace.find(lazy=lazy)


def _operator(ws: "Workspace", given: str | None) -> str:
    if given is not None and not given.strip():
        raise UsageError("--as needs an operator's name")
    name = given or os.environ.get("IRCTL_OPERATOR") or getpass.getuser()
    operators = ws.config.operators
    if operators and name not in operators:
        from difflib import get_close_matches

        close = get_close_matches(name, list(operators), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"'{name}' is not an operator in {ws.config_path}{hint}")
    return name


#: The longest note, reason or answer irctl records (each is in every export of the run).
MAX_TEXT = 16 * 1024


def _words(value: str, what: str) -> str:
    """Free text a person gives for the transcript: not blank, not a whole file."""
    if not value.strip():
        raise UsageError(f"{what} is empty: say it in words, for the transcript")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_TEXT:
        raise UsageError(f"{what} is longer than {MAX_TEXT // 1024} KiB; put the detail in a "
                         "ticket and refer to it")  # fmt: skip
    return value


MODES = ("live", "tabletop", "sandbox")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        from difflib import get_close_matches

        close = get_close_matches(mode, MODES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}{hint}")
    return mode


def _split_params(pairs: list[str] | None) -> dict[str, str]:
    given: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-p expects name=value, got {pair!r}")
        if name.strip() in given:
            raise UsageError(f"param '{name.strip()}' is given twice; give each param once")
        given[name.strip()] = value
    return given


def _load(
    ws: "Workspace", runbook: str, pairs: list[str] | None
) -> "tuple[Runbook, str, dict[str, Any]]":
    from irctl.runbook.loader import load_runbook_text, parse_params, read_document

    path = ws.resolve_runbook(runbook)
    text = read_document(path)
    model = load_runbook_text(text, str(path))
    return model, text, parse_params(model, _split_params(pairs))


def _selection(only: list[str] | None, skip: list[str] | None) -> dict[str, list[str]] | None:
    """--only / --skip (each repeatable, each a comma-separated list) as the run records it."""
    from irctl.engine.selection import make

    def split(given: list[str] | None) -> list[str]:
        return [part.strip() for value in given or [] for part in value.split(",") if part.strip()]

    for flag, given in (("--only", only), ("--skip", skip)):
        if given is not None and not split(given):
            raise UsageError(f"{flag} names no step: give step ids, e.g. {flag} halt-withdrawals")
    try:
        return make(split(only), split(skip))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _engine(ws: "Workspace", **kwargs: Any) -> "Engine":
    from irctl.engine.engine import Engine

    return Engine(
        ws.store, config=ws.config, signing_key=ws.signing_key(), workspace=ws.root, **kwargs
    )


def waiting_detail(state: "RunState", events: "list[Event]") -> list[str]:
    """For each step the run waits on: for what, who can act and what they still must do,
    the digest an approval covers, and the exact command (plain text, one item per line)."""
    from irctl.record.approvals import outlook

    run_id = state.run_id
    lines: list[str] = []
    for step in state.waiting():
        key = step.key
        if step.waiting_for == "approval" and step.approval is not None:
            request = step.approval
            verdict = outlook(events, key)
            eligible = [str(n) for n in request.get("eligible") or []]
            who = [n for n in eligible if n not in step.approvers]
            lines.append(f"{key}: waits for approval '{request.get('policy', 'inline')}' of "
                         f"digest {request.get('digest')}")  # fmt: skip
            if verdict is not None and verdict.state == "approved":
                lines.append(f"  quorum reached ({', '.join(verdict.approvers)}); ready: "
                             f"irctl resume {run_id}")  # fmt: skip
                continue
            if verdict is not None and verdict.state == "denied":
                lines.append(f"  denied by {', '.join(verdict.deniers)}: the step fails when the "
                             f"run goes on (irctl resume {run_id})")  # fmt: skip
                continue
            need = verdict.missing if verdict is not None else "approvals"
            have = f"; approved so far by {', '.join(step.approvers)}" if step.approvers else ""
            lines.append(f"  still needed: {need}{have}")
            lines.append(f"  may approve: {', '.join(who) or 'nobody listed in irctl.yaml'}")
            lines.append(f"  approve with: irctl approve {run_id} {key} --as YOU")
        elif step.waiting_for == "answer":
            lines.append(f"{key}: waits for an answer: {step.prompt or ''}".rstrip())
            choices = f" ({' or '.join(step.choices)})" if step.choices else ""
            lines.append(f"  answer with: irctl answer {run_id} {key} VALUE{choices} --as YOU")
        elif step.waiting_for == "operator":
            lines.append(f"{key}: in doubt (started, outcome unknown): {step.prompt or ''}")
            lines.append(f"  settle with: irctl resume {run_id} --step {key} "
                         "--mark done|retry|failed --reason TEXT")  # fmt: skip
        else:
            lines.append(f"{key}: waits for {step.waiting_for}: {step.prompt or ''}".rstrip())
    return lines


def adoption_word(state: "RunState") -> str:
    """What a run an alert started waits for until an operator takes it over."""
    return (
        f"waiting for a person to adopt: irctl adopt {state.run_id} --as OP (an alert started "
        f"it; only its auto steps ran; '{state.awaiting_adoption}' and the steps after it wait)"
    )


def timings(events: "list[Event]") -> dict[str, Any]:
    """For a run an alert started: when it was detected, and the seconds from detection to
    the run's creation (time_to_start) and to its last auto step done (time_to_contain)."""
    from irctl.record.exports import detection_times

    return detection_times(events)


def _waiting_events(run_id: str) -> "list[Event]":
    """The run's events, to say what it waits on (none if the store cannot be read now)."""
    from irctl.errors import IrctlError

    try:
        return list(_workspace().reader.events(run_id))
    except IrctlError:
        return []


def _finish(state: "RunState") -> None:
    """Say how the run ended and what to do next; exit with the run's code."""
    run_id = state.run_id
    status = state.status
    if status == "succeeded":
        err.print(f"[green]run {run_id} succeeded[/green]")
    elif status == "failed":
        err.print(f"[red]run {run_id} failed[/red] at step {escape(str(state.failed_step))}")
    elif status == "waiting":
        err.print(f"[magenta]run {run_id} is waiting on people:[/magenta]")
        if state.awaiting_adoption is not None:
            err.print(f"  {escape(adoption_word(state))}", soft_wrap=True)
        events = _waiting_events(run_id)
        for line in waiting_detail(state, events) if events else []:
            err.print(f"  {escape(line)}", soft_wrap=True)
        if not events:
            for step in state.waiting():
                err.print(f"  {escape(step.key)}: {escape(step.prompt or str(step.waiting_for))}")
    elif status == "aborted":
        err.print(f"[red]run {run_id} was aborted[/red]: {escape(str(state.reason))}")
    elif status == "tampered":
        from irctl.engine.guard import Tampering, describe

        text = describe(Tampering(state.tampered_at, str(state.reason)), run_id)
        err.print(f"[bold red]STOPPED: {escape(text)}[/bold red]")
    elif status == "interrupted":
        err.print(
            f"[yellow]run {run_id} interrupted[/yellow]; continue with: irctl resume {run_id}"
        )
    raise typer.Exit(EXIT.get(status, 1))


def _asker(view: Any) -> Any:
    from rich.prompt import Prompt

    def ask(prompt: str, kind: str, choices: list[str] | None) -> str | None:
        with view.pause():
            err.print(f"[bold magenta]?[/bold magenta] {escape(prompt)}")
            if kind == "confirm":
                return Prompt.ask("done or failed", choices=["done", "failed"], console=err)
            return Prompt.ask("answer", choices=choices, console=err)

    return ask


def _display(view: Any) -> Any:
    """What an action shows the operator (ActionContext.show): this terminal only, unrecorded."""

    def show(text: str) -> None:
        with view.pause():
            err.print(text, markup=False, highlight=False, soft_wrap=True)

    return show


@app.command("plan")
def plan_command(
    runbook: str = typer.Argument(..., help="A runbook id from runbooks/ or a path."),
    param: list[str] | None = PARAM_OPTION,
    mode: str = typer.Option("live", help="live, tabletop or sandbox."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show every step as it will run — resolved inputs, approvals, digests — running nothing.

    Secrets are shown as ••••.  Inputs that read an earlier step's outputs are
    resolved at run time; the plan names the steps they wait for.

    Example: irctl plan hot-wallet-compromise -p chain=ethereum -p wallet=0x...
    """
    from irctl.engine.plan import make_plan
    from irctl.runbook.render import sha256_hex

    _check_mode(mode)
    ws = _workspace()
    model, text, params = _load(ws, runbook, param)
    plan = make_plan(
        model, params, runbook_digest="sha256:" + sha256_hex(text), config=ws.config, mode=mode
    )
    if as_json:
        print_json(plan.as_dict())
        return
    from irctl.cli.render_plan import render_plan

    render_plan(out, plan)


@app.command("run")
def run_command(
    runbook: str = typer.Argument(..., help="A runbook id from runbooks/ or a path."),
    param: list[str] | None = PARAM_OPTION,
    incident: str | None = typer.Option(None, help="The incident this run responds to."),
    operator: str | None = AS_OPTION,
    mode: str = typer.Option(
        "live", help="live; tabletop (every action simulated); sandbox (sandbox endpoints)."
    ),
    yes: bool = typer.Option(
        False,
        "--yes",
        "-y",
        help="Do not ask before starting a live run (needed when not at a terminal).",
    ),
    key: Path | None = typer.Option(
        None,
        "--key",
        help="Your private key: in a workspace with operators it signs the start of a live "
        "run, and your answers, marks and aborts in it "
        "(default: $IRCTL_KEY, or where 'irctl keys generate' put it).",
    ),
    detach: bool = typer.Option(False, help="Start the run in the background and return its id."),
    wait: bool | None = typer.Option(
        None,
        "--wait/--no-wait",
        help="Stay attached while steps wait for approval (default: when interactive).",
    ),
    interactive: bool | None = typer.Option(
        None,
        "--interactive/--unattended",
        help="Ask at manual steps (default: when the terminal is interactive).",
    ),
    only: list[str] | None = typer.Option(
        None,
        "--only",
        metavar="STEP,…",
        help="Run only these steps (and the steps inside a named block); every other step is "
        "recorded as left out by you.",
    ),
    skip: list[str] | None = typer.Option(
        None,
        "--skip",
        metavar="STEP,…",
        help="Leave these steps out (a block with all its steps): in a live run, only a role "
        "the runbook's skip: names may, and never a step marked skip: never.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Execute a runbook, step by step, recording every transition durably.

    Exit codes: 0 succeeded, 1 failed, 3 waiting on people (a manual step, an
    approval, a step in doubt), 130 interrupted.  Ctrl-C stops cleanly;
    `irctl resume RUN_ID` continues without repeating finished steps.

    Example: irctl run hot-wallet-compromise -p chain=ethereum -p wallet=0x... --incident INC-42

    Part of a runbook: --only halt-withdrawals,freeze-hot-wallet runs those two (the transcript
    and every export say which were left out, and by whom).
    """
    _check_mode(mode)
    ws = _workspace()
    model, text, params = _load(ws, runbook, param)
    selection = _selection(only, skip)
    who = _operator(ws, operator)
    if ws.signing_key() is None:
        if ws.config.installation_key:  # named in irctl.yaml, its file lost
            raise UsageError(
                f"irctl.yaml names the installation key {ws.config.installation_key}, but "
                f"{ws.installation_key_path} does not exist: a run started here could not be "
                "sealed, and every irctl that trusts irctl.yaml would stop it as tampered; "
                "restore the key file from its backup (or copy it from the machine that holds it)"
            )
        err.print(
            "[yellow]warning:[/yellow] this workspace has no installation key, so the "
            "transcript will not be signed; run 'irctl init' to create one"
        )
    starter = _starter_key(ws, model, mode, who, key)
    if mode == "live" and not yes:
        if not sys.stdin.isatty():  # a script, a pipe, cron: nobody to ask, so nothing starts
            raise UsageError(
                f"a live run of '{model.id}' asks 'Start a LIVE run?' first, and there is no "
                "terminal to ask at: pass --yes to start it from a script"
            )
        typer.confirm(f"Start a LIVE run of '{model.id}'?", abort=True)
    if detach:
        engine = _engine(ws)
        run_id = engine.create_run(
            model, text, params, initiator=who, mode=mode, incident=incident,
            starter_key=starter, selection=selection,
        )  # fmt: skip
        _detach(ws, run_id, who, key)
        if as_json:
            print_json({"run_id": run_id, "detached": True})
        else:
            out.print(run_id)
        return
    create = (model, text, params, who, mode, incident, starter, selection)
    signs = mode == "live" and bool(ws.config.operators)
    own = starter or _own_key(who, key, needed=signs)
    _execute(
        ws, model.title, interactive, as_json, who=who, create=create, wait=wait, key=own,
        signs=signs,
    )  # fmt: skip


def _starter_key(
    ws: "Workspace", model: "Runbook", mode: str, who: str, given: Path | None
) -> "Ed25519PrivateKey | None":
    """The initiator's private key: a live run in a workspace with operators is started with
    it (and a runbook's ``start:`` may name the roles allowed to start it)."""
    if mode != "live" or not ws.config.operators:
        return None
    key = _own_key(who, given, needed=True)
    if key is None:
        from irctl.identity import operator_key_path

        roles = f" (start.roles: {', '.join(model.start.roles)})" if model.start else ""
        raise UsageError(
            f"a live run of '{model.id}' is started with the initiator's own key{roles}: "
            f"no key for {who} at {operator_key_path(who)}; give --key FILE (or set $IRCTL_KEY)"
        )
    return key


def _execute(
    ws: "Workspace",
    title: str,
    interactive: bool | None,
    as_json: bool,
    *,
    who: str,
    create: "tuple[Runbook, str, dict[str, Any], str, str, str | None, Any, Any] | None" = None,
    run_id: str | None = None,
    wait: bool | None = None,
    key: "Ed25519PrivateKey | None" = None,
    signs: bool = False,
) -> None:
    from irctl.cli.view import RunView

    view = RunView(err, title=title, live=False if as_json else None)
    ask = interactive if interactive is not None else (sys.stdin.isatty() and not as_json)
    if ask and signs and key is None:
        err.print(
            f"[yellow]note:[/yellow] answers in a live run are signed with {escape(who)}'s own "
            "key, and none was found (give --key FILE): the run waits at manual steps for "
            "'irctl answer RUN STEP VALUE --key FILE'",
            highlight=False,
        )
    attach = wait if wait is not None else (sys.stdin.isatty() and not as_json)
    # Shown only on a real terminal: never into a pipe, a log file or a detached run's log.
    display = _display(view) if ask and sys.stderr.isatty() else None
    engine = _engine(
        ws, listener=view, interactive=_asker(view) if ask else None, display=display,
        operator=who, attach=attach, operator_key=key,
    )  # fmt: skip
    if create is not None:
        model, text, params, initiator, mode, incident, starter, selection = create
        run_id = engine.create_run(
            model, text, params, initiator=initiator, mode=mode, incident=incident,
            starter_key=starter, selection=selection,
        )  # fmt: skip
        err.print(f"run [bold]{run_id}[/bold] of {escape(model.id)} ({mode})")
    if run_id is None:  # pragma: no cover - callers pass one of the two
        raise UsageError("no run to execute")
    try:
        with view:
            state = engine.execute(run_id)
    except SecretError as exc:
        raise SecretError(
            f"{exc.message}\nrun {run_id} is recorded but has not started: fix the secret and "
            f"'irctl resume {run_id}', or 'irctl abort {run_id} --reason ...'"
        ) from None
    if as_json:
        print_json(_state_json(state))
    _finish(state)


def _detach(ws: "Workspace", run_id: str, who: str, key: Path | None) -> None:
    """Continue the run in a background ``irctl resume``, as ``who`` (with their key file)."""
    import subprocess

    logs = ws.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "irctl" else None
    argv = [str(exe)] if exe else [sys.executable, "-c", "from irctl.cli import main; main()"]
    with (logs / f"{run_id}.log").open("ab") as log:
        started = subprocess.Popen(
            [*argv, "resume", run_id, "--unattended", "--wait", "--as", who,
             *(["--key", str(key.expanduser().resolve())] if key is not None else [])],
            cwd=ws.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, env={**os.environ, "IRCTL_WORKSPACE": str(ws.root)},
        )  # fmt: skip
    # for `irctl status` on this machine: whether the background process still lives
    (logs / f"{run_id}.detached").write_text(str(started.pid), encoding="ascii")


def detached_word(ws: "Workspace", state: "RunState") -> str | None:
    """For a run started with --detach that has not started (only ``run.created``): that its
    background process is starting it, or that it ended first, with the log's last line."""
    if state.status != "created":
        return None
    logs = ws.state_dir / "logs"
    marker, log = logs / f"{state.run_id}.detached", logs / f"{state.run_id}.log"
    try:
        pid = int(marker.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
        proc = Path(f"/proc/{pid}/status")  # a zombie is not starting anything
        alive = not proc.exists() or "State:\tZ" not in proc.read_text(errors="replace")
    except ProcessLookupError:
        alive = False
    except PermissionError:
        alive = True  # someone else's process with that id: say what is known
    if alive:
        return f"starting in the background (pid {pid}); its output goes to {log}"
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = [ln.strip() for ln in text.splitlines()]
    except OSError:
        lines = []
    errors = [ln for ln in lines if ln.lower().startswith("error:")]
    said = (errors or [ln for ln in lines if ln] or ["it wrote nothing"])[-1]
    return (
        f"the background process (pid {pid}) ended before the run started: {said} "
        f"(all of it in {log}); fix that, then: irctl resume {state.run_id}"
    )


@app.command("resume")
def resume_command(
    run_id: str = typer.Argument(
        ..., help="The run to continue (an unambiguous prefix is enough)."
    ),
    step: str | None = typer.Option(None, help="An in-doubt step to settle first."),
    mark: str | None = typer.Option(
        None, help="How the in-doubt step ended: done, retry (run it again) or failed."
    ),
    reason: str | None = typer.Option(None, help="Why, for the transcript."),
    operator: str | None = AS_OPTION,
    key: Path | None = KEY_OPTION,
    interactive: bool | None = typer.Option(
        None, "--interactive/--unattended", help="Ask at manual steps."
    ),
    wait: bool | None = typer.Option(
        None, "--wait/--no-wait", help="Stay attached while steps wait for approval."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Continue a run that crashed, was interrupted, or waited on people.

    Finished steps are not repeated.  A step that started but has no recorded
    outcome is in doubt: irctl asks the action's probe, re-runs it if the action
    is idempotent, or waits for your decision:

      irctl resume RUN_ID --step sweep-to-cold --mark done --reason "tx seen on-chain"
    """
    if (step is None) != (mark is None):
        raise UsageError("--step and --mark go together")
    ws = _workspace()
    found = ws.store.find_run(run_id)
    engine = _engine(ws)
    who = _operator(ws, operator)
    signs = _acts_signed(ws, found.id)
    own = _own_key(who, key, needed=signs)
    if step is not None and mark is not None:
        if reason is not None:
            reason = _words(reason, "--reason")
        engine.mark(found.id, step, mark, operator=who, reason=reason, private_key=own)
    _execute(
        ws, found.runbook, interactive, as_json, who=who, run_id=found.id, wait=wait, key=own,
        signs=signs,
    )  # fmt: skip


@app.command("adopt")
def adopt_command(
    run_id: str = typer.Argument(..., help="The run an alert started."),
    operator: str | None = AS_OPTION,
    key: Path | None = KEY_OPTION,
    resume: bool = typer.Option(
        False, "--resume/--no-resume", help="Continue the run after recording the adoption."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Take over a run an alert started (irctl serve, triggers: in irctl.yaml).

    Until someone adopts it, such a run runs only the steps its runbook marks
    'auto: true'. The adoption is signed with your own key (an operator who may
    start a live run of the runbook); the other steps then run as usual, with
    their approvals, from 'irctl resume RUN'.

    Example: irctl adopt r-20261121-030000-ab12cd --as alice
    """
    ws = _workspace()
    found = ws.store.find_run(run_id)
    who = _operator(ws, operator)
    own = _own_key(who, key, needed=True)
    _engine(ws).adopt(found.id, operator=who, private_key=own)
    if not resume:
        err.print(
            f"run {found.id} adopted by {escape(who)}; continue with: irctl resume {found.id}"
        )
        return
    _execute(ws, found.runbook, False, as_json, who=who, run_id=found.id, key=own, signs=True)


@app.command("answer")
def answer_command(
    run_id: str = typer.Argument(..., help="The run."),
    step: str = typer.Argument(..., help="The manual step waiting for an answer."),
    value: str = typer.Argument(..., help="The answer: done / failed for a confirmation."),
    operator: str | None = AS_OPTION,
    key: Path | None = KEY_OPTION,
    resume: bool = typer.Option(True, help="Continue the run after recording the answer."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Answer a manual step of a waiting run, then continue it.

    Example: irctl answer r-20261121-030000-ab12cd custody-hotline done --as alice
    """
    ws = _workspace()
    found = ws.store.find_run(run_id)
    engine = _engine(ws)
    who = _operator(ws, operator)
    signs = _acts_signed(ws, found.id)
    own = _own_key(who, key, needed=signs)
    from irctl.errors import RunBusy

    engine.answer(found.id, step, value, operator=who, private_key=own)
    if not resume:
        err.print(f"answer recorded; continue with: irctl resume {found.id}")
        return
    try:
        _execute(ws, found.runbook, False, as_json, who=who, run_id=found.id, key=own, signs=signs)
    except RunBusy:  # an attached `irctl run` (or serve) holds the run: it takes the answer
        err.print(
            f"answer recorded; run {found.id} is being executed by another process, which "
            "goes on with it (irctl status to follow)"
        )


@app.command("abort")
def abort_command(
    run_id: str = typer.Argument(..., help="The run to abort."),
    reason: str = typer.Option(..., help="Why, for the transcript."),
    operator: str | None = AS_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """End a run that is waiting or interrupted; it can no longer be resumed.

    In a live run the abort is signed with your own key, like an approval.
    """
    ws = _workspace()
    found = ws.store.find_run(run_id)
    reason = _words(reason, "--reason")
    who = _operator(ws, operator)
    own = _own_key(who, key, needed=_acts_signed(ws, found.id))
    state = _engine(ws).abort(found.id, reason=reason, operator=who, private_key=own)
    err.print(f"run {state.run_id} aborted")


@app.command("retry")
def retry_command(
    run_id: str = typer.Argument(..., help="The failed or aborted run."),
    step: str | None = typer.Argument(
        None, help="Only this failed step (default: every failed step that stopped the run)."
    ),
    reason: str | None = typer.Option(None, help="Why, for the transcript."),
    operator: str | None = AS_OPTION,
    key: Path | None = KEY_OPTION,
    interactive: bool | None = typer.Option(
        None, "--interactive/--unattended", help="Ask at manual steps."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Take a failed (or aborted) run up again at its failed steps, and continue it.

    What succeeded stays done. An approval counts again for the digest it was given; a step
    whose inputs changed since asks for approval again. In a live run the retry is signed with
    your own key, like an abort.

    Example: irctl retry r-20261121-030000-ab12cd halt --as alice --reason "admin API is back"
    """
    ws = _workspace()
    found = ws.store.find_run(run_id)
    who = _operator(ws, operator)
    signs = _acts_signed(ws, found.id)
    own = _own_key(who, key, needed=signs)
    why = _words(reason, "--reason") if reason else None
    steps = _engine(ws).retry(found.id, step=step, reason=why, operator=who, private_key=own)
    err.print(f"run {found.id} taken up again at {', '.join(steps) or 'its next step'}")
    _execute(ws, found.runbook, interactive, as_json, who=who, run_id=found.id, key=own,
             signs=signs)  # fmt: skip


@app.command("skip")
def skip_command(
    run_id: str = typer.Argument(..., help="The run."),
    step: str = typer.Argument(..., help="The waiting, failed or in-doubt step to skip."),
    reason: str = typer.Option(..., help="Why, for the transcript and every export."),
    operator: str | None = AS_OPTION,
    key: Path | None = KEY_OPTION,
    resume: bool = typer.Option(True, help="Continue the run after recording the skip."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Skip a step by hand, with a reason, and continue the run past it.

    Only operators holding a role the runbook names under skip: {roles: [...]} may, never for a
    step marked skip: never; in a live run the skip is signed with your own key.

    Example: irctl skip r-20261121-030000-ab12cd notify-partners --reason "called" --as alice
    """
    from irctl.errors import RunBusy

    ws = _workspace()
    found = ws.store.find_run(run_id)
    who = _operator(ws, operator)
    signs = _acts_signed(ws, found.id)
    own = _own_key(who, key, needed=signs)
    why = _words(reason, "--reason")
    _engine(ws).skip(found.id, step, reason=why, operator=who, private_key=own)
    if not resume:
        err.print(f"skip recorded; continue with: irctl resume {found.id}")
        return
    try:
        _execute(ws, found.runbook, False, as_json, who=who, run_id=found.id, key=own, signs=signs)
    except RunBusy:
        err.print(f"skip recorded; run {found.id} is being executed by another process")


@app.command("note")
def note_command(
    run_id: str = typer.Argument(..., help="The run."),
    text: str = typer.Argument(..., help="The note, as it should appear in the transcript."),
    operator: str | None = AS_OPTION,
) -> None:
    """Add an operator's note to a run's transcript (during or after the run)."""
    from irctl.journal import events as ev

    text = _words(text, "the note")
    ws = _workspace()
    found = ws.store.find_run(run_id)
    _engine(ws).record(found.id, ev.RUN_NOTE, {"text": text, "by": _operator(ws, operator)})
    err.print("note recorded")


def _state_json(state: "RunState", events: "list[Event] | None" = None) -> dict[str, Any]:
    return {
        "run_id": state.run_id, "runbook": state.runbook, "runbook_digest": state.runbook_digest,
        "status": state.status, "mode": state.mode, "initiator": state.initiator,
        "incident": state.incident, "created_at": state.created_at,
        "finished_at": state.finished_at, "failed_step": state.failed_step,
        "params": state.params,
        "steps": [
            {
                "step": s.key, "status": s.status, "attempt": s.attempt, "action": s.action,
                "digest": s.digest, "error": s.error, "outputs": s.outputs,
                "started_at": s.started_at, "finished_at": s.finished_at,
                "waiting_for": s.waiting_for, "in_doubt": s.in_doubt,
                **({"round": s.round, "next_at": s.next_at} if s.round else {}),
            }
            for s in state.steps.values()
        ],
        **_alert_json(state, events),
    }  # fmt: skip


def _alert_json(state: "RunState", events: "list[Event] | None") -> dict[str, Any]:
    """The trigger, detection times and adoption of a run an alert started (else nothing)."""
    if state.trigger is None:
        return {}
    return {
        "trigger": state.trigger, "adopted_by": state.adopted_by,
        "awaiting_adoption": state.awaiting_adoption, "alerts": len(state.alerts),
        **(timings(events) if events else {}),
    }  # fmt: skip


@app.command("status")
def status_command(
    run_id: str | None = typer.Argument(None, help="The run (default: the latest)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Where a run stands: each step's state, what it waits for."""
    from rich.table import Table

    from irctl.journal.state import fold

    ws = _workspace(lazy=True)
    store = ws.reader
    if run_id is None:
        latest = store.runs(limit=1)
        if not latest:
            raise UsageError("no runs yet; start one with 'irctl run RUNBOOK'")
        run_id = latest[0].id
    found = store.find_run(run_id)
    events = store.events(found.id)
    state = fold(events)
    detached = detached_word(ws, state)
    if as_json:
        print_json({**_state_json(state, events), **({"detached": detached} if detached else {})})
        return
    out.print(
        f"[bold]{state.run_id}[/bold]  {escape(state.runbook)}  [bold]{state.status}[/bold]  "
        f"mode {state.mode}  by {escape(state.initiator)}  since {state.created_at}"
    )
    if detached:
        out.print(f"[yellow]{escape(detached)}[/yellow]", soft_wrap=True)
    table = Table(box=None, header_style="bold")
    for column in ("step", "status", "attempt", "detail"):
        table.add_column(column)
    for step in state.steps.values():
        # what it waits for while it waits; a finished step's old prompt would mislead
        detail = step.error or (step.prompt if step.status == "waiting" else None) or ""
        if step.status == "repeating":
            detail = f"round {step.round} done; the next is due at {step.next_at}"
        table.add_row(escape(step.key), step.status, str(step.attempt), escape(detail[:400]))
    out.print(folding(table))
    if state.trigger is not None:
        times_found = timings(events)
        times = ", ".join(
            f"{name} {times_found[name]:.1f}s" for name in ("time_to_start", "time_to_contain")
            if isinstance(times_found.get(name), float)
        )  # fmt: skip
        out.print(
            f"started by alert {escape(str(state.trigger.get('alert')))} (trigger "
            f"{escape(str(state.trigger.get('name')))}), detected {state.detected_at}"
            + (f": {times}" if times else "")
            + (f"; adopted by {escape(state.adopted_by)}" if state.adopted_by else ""),
            soft_wrap=True,
        )
    if state.awaiting_adoption is not None and not state.finished:
        out.print(f"[bold]{escape(adoption_word(state))}[/bold]", soft_wrap=True)
    if state.waiting():
        out.print("[bold]waiting on people:[/bold]")
        for line in waiting_detail(state, events):
            out.print(f"  {escape(line)}", soft_wrap=True)


@runs_app.command("list")
def runs_list_command(
    limit: int = typer.Option(20, min=1, max=1_000_000, help="How many of the latest runs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The latest runs and how each stands."""
    from rich.table import Table

    from irctl.journal.state import fold

    ws = _workspace(lazy=True)
    try:
        store = ws.reader
    except NoStore as exc:
        if not (exc.absent and ws.store_source[2]):
            raise  # a store named elsewhere that is not there: a typo, not "no runs"
        # This workspace's default store does not exist yet: nothing has run here.
        if as_json:
            print_json([])
            return
        hint = "" if ws.config_path else f"; no irctl.yaml in {ws.root} or a folder above"
        err.print(f"no runs: no store at {escape(exc.location)} yet{escape(hint)}",
                  highlight=False, soft_wrap=True)  # fmt: skip
        return
    rows = []
    for run in store.runs(limit=limit):
        try:
            state = fold(store.events(run.id))
            status = state.status
        except IrctlError as exc:
            status = f"unreadable: {exc}"
        rows.append({
            "run_id": run.id, "runbook": run.runbook, "status": status, "mode": run.mode,
            "initiator": run.initiator, "incident": run.incident, "created_at": run.created_at,
        })  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table(box=None, header_style="bold")
    longest = max((len(str(row["run_id"])) for row in rows), default=3)
    table.add_column("run", no_wrap=True, min_width=longest)  # whole, to copy into a command
    for column in ("runbook", "status", "mode", "by", "incident", "start"):
        table.add_column(column)
    for found in rows:
        row = {**found, "started": str(found["created_at"] or "")[:16].replace("T", " ")}
        table.add_row(*(escape(str(row[k] or "")) for k in (
            "run_id", "runbook", "status", "mode", "initiator", "incident", "started"
        )))  # fmt: skip
    out.print(folding(table))
