"""``irctl transcript``: show, verify and export the tamper-evident record of a run.

Thin: each command parses its arguments, calls :mod:`irctl.record.transcript`, and
renders the result.  Library imports happen inside the commands so that
``irctl --help`` does not pay for them.
"""

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from irctl.cli._app import JSON_OPTION, err, escape, folding, out, print_json, transcript_app
from irctl.errors import UsageError, VerificationFailed

if TYPE_CHECKING:
    from irctl.journal.events import Event
    from irctl.record.keyring import Trust
    from irctl.record.transcript import VerifyReport
    from irctl.workspace import Workspace

FORMATS = ("jsonl", "md", "html", "pdf")


def _workspace() -> "Workspace":
    from irctl.workspace import Workspace

    return Workspace.find()


def _trusted_keys(values: list[str] | None, workspace: "Workspace | None") -> list[str] | None:
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


def _seal_keys(
    values: list[str] | None, workspace: "Workspace | None", trust: "Trust | None"
) -> list[str] | None:
    """The installation keys to check seals with: a trust root's own installation key
    replaces the workspace's (``--key`` values are trusted as well)."""
    if trust is not None and trust.installation_key is not None and not values:
        return None  # the verifier adds the trust root's key
    return _trusted_keys(values, workspace)


def _events(workspace: "Workspace", run_id: str) -> "tuple[str, list[Event]]":
    run = workspace.reader.find_run(run_id)
    return run.id, workspace.reader.events(run.id)


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
    from irctl.record.exports import timeline
    from irctl.record.transcript import verify_lines

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


def _header(events: "list[Event]") -> dict[str, Any]:
    from irctl.journal import events as ev

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
        "selection": data.get("selection"),
        "outcome": end.type.split(".", 1)[1] if end else None,
        "started": first.ts,
        "ended": end.ts if end else None,
        "events": len(events),
    }


def _print_show(
    run_id: str, header: dict[str, Any], rows: list[Any], report: "VerifyReport"
) -> None:
    from rich.table import Table

    from irctl.record.exports import format_seconds, format_values

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
    if header["selection"]:
        from irctl.record.exports import describe_selection

        field("steps", describe_selection({**header, "selection": header["selection"]}))
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
    out.print(folding(table))
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
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="Also check against the run's anchors in WORM storage: s3://bucket[/prefix] "
            "(read with the workspace's aws settings, else the standard AWS chain) or an "
            "anchor file (.json). Catches a transcript cut after its last anchored event or "
            "replaced whole.",
            metavar="S3_URL|FILE",
        ),
    ] = None,
    trust: Annotated[
        str | None,
        typer.Option(
            "--trust",
            help="Check the recorded operator keys and the installation key against keys you "
            "trust: an irctl.yaml (installation_key, operators.<name>.key) or a keyring from "
            "'irctl keys export'. Each key that differs is named, and a decision signed with "
            "a key you do not trust does not count (exit 1).",
            metavar="FILE",
        ),
    ] = None,
    ended: Annotated[
        bool,
        typer.Option(
            "--ended",
            help="Also require that the run ended (succeeded, failed or aborted): without it, "
            "a transcript cut at an earlier checkpoint looks like a run that paused there.",
        ),
    ] = False,
    as_json: bool = JSON_OPTION,
) -> None:
    """Verify a transcript offline: hash chain, signed checkpoints, runbook digest, no cut tail.

    Exits 0 and prints what was verified, or exits 1 naming the first event that
    cannot be trusted and what is wrong with it.  Needs only public keys.

    Approvals are checked too: every signed decision against the operator's
    key as recorded when the run was created, every digest against the
    recorded inputs, every quorum against the decisions and the policy.
    Break-glass approvals are reported loudly.

    Those recorded keys are the transcript's own word: whoever holds the
    installation key can replace them and re-seal.  --trust FILE checks them
    against keys you trust (an irctl.yaml, or 'irctl keys export'); without
    it, the output names the keys that were taken on the transcript's word.

    Examples:

      irctl transcript verify r-20261121-0300-ab12

      irctl transcript verify incident-4411.jsonl --key ed25519:3q2+7w...=

      irctl transcript verify incident-4411.jsonl --key installation.pub --json

      irctl transcript verify incident-4411.zip --key ed25519:3q2+7w...=

      irctl transcript verify r-2026 --anchor s3://exchange-ir-anchors/irctl/anchors

      irctl transcript verify incident-4411.jsonl --key installation.pub --ended

      irctl transcript verify incident-4411.zip --trust irctl.yaml

      irctl transcript verify r-2026 --trust keyring.json --json
    """
    from irctl.record.pack import verify_file
    from irctl.record.transcript import verify_lines, verify_run

    root = None
    if trust is not None:
        from irctl.record.keyring import load_trust

        if not trust.strip():
            raise UsageError("--trust needs a file: an irctl.yaml or a keyring")
        root = load_trust(Path(trust).expanduser())

    path = Path(target)
    lines: list[str] | None = None
    if not target.strip():
        raise UsageError("give a transcript file (.jsonl or an evidence pack .zip) or a run id")
    if path.suffix.lower() in {".md", ".html", ".pdf"}:
        raise UsageError(
            f"{target} is a readable export; only a jsonl export or an evidence pack (.zip) "
            "holds the hash-chained events: verify one of those, or the run by its id"
        )
    if path.exists():
        if path.is_dir():
            raise UsageError(f"{target} is a directory; give a transcript file or a run id")
        if path.suffix.lower() == ".zip":
            from irctl.record.pack import verify_pack

            found = verify_pack(path, _seal_keys(key, None, root), root)
            report = found.combined()
            source = f"{path} (evidence pack, {found.files} files)"
            lines = found.lines  # the journal as checked, for --anchor
        else:
            report = verify_file(path, _seal_keys(key, None, root), root)
            source = str(path)
            if anchor:
                text = path.read_text(encoding="utf-8", errors="surrogateescape")
                lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    elif path.suffix.lower() in {".jsonl", ".json", ".zip"} or "/" in target or "\\" in target:
        raise UsageError(f"no file {target}")
    else:
        workspace = _workspace()
        run = workspace.reader.find_run(target)
        report = verify_run(workspace.reader, run.id, _seal_keys(key, workspace, root), root)
        source = f"run {run.id}"
        if anchor:
            lines = list(workspace.reader.lines(run.id))
    if anchor is not None:
        from dataclasses import replace

        from irctl.record.anchor import check_anchor, read_anchors

        run_id = report.run_id or (verify_lines(lines or [], public_keys=None).run_id)
        anchors = read_anchors(anchor, run_id or "", aws=_aws_settings())
        checked = check_anchor(lines or [], anchors, run_id)
        extra = [f"ANCHOR: {p}" for p in checked.problems]
        report = replace(
            report, ok=report.ok and checked.ok, problems=[*report.problems, *extra],
            notes=[*report.notes, f"anchor: {checked.summary()}"] if checked.ok else report.notes,
        )  # fmt: skip
    if ended and report.outcome is None:
        from dataclasses import replace

        report = replace(report, ok=False, problems=[
            *report.problems,
            "the run has not ended (--ended): no run.succeeded, run.failed or run.aborted; the "
            "transcript may have been cut at an earlier checkpoint",
        ])  # fmt: skip
    if as_json:
        print_json({"source": source, **report.as_dict()})
    else:
        _print_verify(source, report)
    if not report.ok:
        raise VerificationFailed(f"{source} does not verify: {report.problems[0]}")


def _pack_lines(path: Path, name: str) -> list[str]:
    import zipfile

    from irctl.record.pack_zip import READ_ERRORS

    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(name).decode("utf-8", "surrogateescape")
    except (KeyError, *READ_ERRORS) as exc:
        raise UsageError(f"{path}: cannot read {name}: {exc}") from exc
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def _aws_settings() -> dict[str, Any]:
    """The workspace's ``integrations.aws`` if there is a workspace here, else {}."""
    try:
        workspace = _workspace()
    except UsageError:
        return {}
    return dict(workspace.config.integrations.get("aws", {}))


def _print_verify(source: str, report: "VerifyReport") -> None:
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
    if report.trust is not None:
        for finding in report.key_findings:
            text = finding.text(report.trust)
            if text not in report.problems:  # an operator who made no decision here
                out.print(f"[yellow]note:[/yellow] {escape(text)}", soft_wrap=True)
    own = _own_word(report)
    if own:
        out.print(f"[yellow]{escape(own)}[/yellow]", soft_wrap=True)


def _own_word(report: "VerifyReport") -> str:
    """Which keys were trusted only because the transcript says so (empty if none)."""
    parts: list[str] = []
    if report.own_word:
        parts.append(f"operator keys of {', '.join(report.own_word)} (recorded at run start)")
    if not report.trusted and report.keys:
        parts.append("the installation key (carried by its checkpoints)")
    if not parts:
        return ""
    fix = (
        "pass --trust irctl.yaml to check them"
        if report.trust is None
        else f"{report.trust} names no installation key: pass --key to check it"
    )
    return f"trusted on the transcript's own word: {' and '.join(parts)} — {fix}"


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
            help="jsonl (the exact signed lines; verifies offline), md (a readable document), "
            "html (self-contained, no network) or pdf (the html printed by headless Chromium).",
        ),
    ] = "jsonl",
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write, or '-' for stdout.")
    ] = "-",
) -> None:
    """Export a run's transcript for auditors.

    jsonl holds exactly the stored, hash-chained lines, so it can be verified
    anywhere with 'irctl transcript verify FILE --key ...'.  md is a readable
    document (header, timeline, seal) of the same events.  html is one
    self-contained page (summary, objectives, break-glass and in-doubt items,
    every approval with its signer and digest, notes, secrets as commitments,
    timeline, the verification checks, a SOC 2 / ISO 27001 control map); pdf
    is that page printed by headless Chromium (install chromium, or set
    IRCTL_CHROMIUM).

    Examples:

      irctl transcript export r-20261121-0300-ab12 --format jsonl -o incident-4411.jsonl

      irctl transcript export r-2026 --format md -o - | less

      irctl transcript export r-2026 --format pdf -o incident-4411.pdf
    """
    from irctl.record.exports import export_jsonl, export_markdown
    from irctl.record.transcript import verify_lines

    kind = fmt.strip().lower()
    if kind == "markdown":
        kind = "md"
    if kind not in FORMATS:
        raise UsageError(f"--format {fmt!r}: unknown format; use {', '.join(FORMATS)}")
    if not output.strip():
        raise UsageError("-o needs a file name, or '-' for stdout")
    workspace = _workspace()
    run = workspace.reader.find_run(run_id)
    target = None if output == "-" else Path(output)
    if kind in ("html", "pdf"):
        from irctl.record.exports import export_pdf
        from irctl.record.report_html import export_html

        events = workspace.reader.events(run.id)
        report = verify_lines([e.line for e in events], public_keys=_trusted_keys(None, workspace))
        page = export_html(events, report)
        data = export_pdf(page) if kind == "pdf" else page.encode("utf-8")
        try:
            if target is None:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            else:
                target.write_bytes(data)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from exc
        if target is not None:
            err.print(f"wrote {len(events)} events of run {escape(run.id)} to "
                      f"{escape(str(target))} ({kind})")  # fmt: skip
        return
    try:
        handle = sys.stdout if target is None else target.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from exc
    try:
        if kind == "jsonl":
            count = export_jsonl(workspace.reader.lines(run.id), handle)
        else:
            events = workspace.reader.events(run.id)
            report = verify_lines(
                [e.line for e in events], public_keys=_trusted_keys(None, workspace)
            )
            handle.write(export_markdown(events, report))
            count = len(events)
        handle.flush()
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from exc
    finally:
        if target is not None:
            with contextlib.suppress(OSError):  # a failed write above already says why
                handle.close()
    if target is not None:
        err.print(f"wrote {count} events of run {escape(run.id)} to {escape(str(target))} ({kind})")


# -- evidence pack ---------------------------------------------------------------------------


@transcript_app.command("pack")
def pack(
    run_id: Annotated[
        str, typer.Argument(help="Run id, or an unambiguous prefix of one.", metavar="RUN_ID")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="The .zip file to write.")],
    pdf: Annotated[
        bool | None,
        typer.Option(
            "--pdf/--no-pdf",
            help="Include the PDF (needs Chromium). Default: include it when Chromium is found.",
        ),
    ] = None,
) -> None:
    """Write an evidence pack: a zip a reviewer verifies with no access to the store.

    It holds the events (JSONL, exactly as stored), the exact runbook text, the
    public keys used, the HTML, Markdown and PDF exports, and a manifest of
    SHA-256 hashes signed by the installation key.  Verify it anywhere with
    'irctl transcript verify FILE.zip --key <installation public key>'.

    Examples:

      irctl transcript pack r-20261121-0300-ab12 -o incident-4411.zip
    """
    from irctl.record.pack import build_pack

    target = Path(output)
    if target.suffix.lower() != ".zip":
        raise UsageError(f"-o {output}: an evidence pack is a .zip file")
    workspace = _workspace()
    run = workspace.reader.find_run(run_id)
    manifest = build_pack(
        workspace.reader, run.id, target, public_key=workspace.public_key(),
        signing_key=workspace.signing_key(), pdf=pdf,
    )  # fmt: skip
    err.print(
        f"wrote evidence pack of run {escape(run.id)} to {escape(str(target))}: "
        f"{manifest['events']} events, {len(manifest['files'])} files"
    )


# -- anchors ----------------------------------------------------------------------------------


@transcript_app.command("anchor")
def anchor_command(
    run_id: Annotated[
        str, typer.Argument(help="Run id, or an unambiguous prefix of one.", metavar="RUN_ID")
    ],
) -> None:
    """Write (again) the anchors of a run's checkpoints to the WORM storage in irctl.yaml.

    The engine anchors every checkpoint as it seals it; use this when that
    failed (the store was reachable, S3 was not).  Anchors already written are
    recognised and kept (Object Lock: they cannot be replaced).

    Examples:

      irctl transcript anchor r-20261121-0300-ab12
    """
    from irctl.actions import default_registry
    from irctl.journal import events as ev
    from irctl.record.anchor import AnchorSettings, anchor_checkpoint

    workspace = _workspace()
    raw = workspace.config.integrations.get("anchor")
    if not raw:
        raise UsageError(
            "no anchor is configured: add integrations.anchor.bucket to irctl.yaml"
        )
    settings = AnchorSettings.from_config(raw)
    run = workspace.reader.find_run(run_id)
    checkpoints = [e for e in workspace.reader.events(run.id) if e.type == ev.CHECKPOINT]
    if not checkpoints:
        raise UsageError(f"run {run.id} has no checkpoint to anchor")
    aws = workspace.config.integrations.get("aws", {})
    for checkpoint in checkpoints:
        written = anchor_checkpoint(checkpoint, settings, registry=default_registry, aws=aws)
        state = "written" if written.get("changed") else "already there"
        err.print(f"checkpoint {checkpoint.seq}: s3://{escape(settings.bucket)}/"
                  f"{escape(settings.key(run.id, checkpoint.seq))} ({state})")  # fmt: skip


# -- verifiable redaction ---------------------------------------------------------------------


@transcript_app.command("salt")
def salt_command(
    run_id: Annotated[
        str, typer.Argument(help="Run id, or an unambiguous prefix of one.", metavar="RUN_ID")
    ],
    name: Annotated[str, typer.Argument(help="The secret's name in the runbook.")],
) -> None:
    """Print the salt of one secret of a run, for a reviewer who must confirm its value.

    The transcript records each secret a run used as a salted commitment; the
    salt is kept in the store, never in the transcript.  This salt opens the
    commitment of this secret of this run only; with it, a guessable secret
    could be guessed offline, so hand it to the reviewer, not to the file.

    Examples:

      irctl transcript salt r-20261121-0300-ab12 admin_token
    """
    from irctl.secrets import run_salt, secret_salt

    workspace = _workspace()
    run = workspace.reader.find_run(run_id)
    recorded = _commitments(workspace.reader.lines(run.id), f"run {run.id}")
    if name not in recorded:
        known = ", ".join(sorted(recorded)) or "none"
        raise UsageError(f"run {run.id} recorded no secret {name!r} (recorded: {known})")
    salt = run_salt(workspace.reader, run.id)
    if salt is None:
        raise UsageError(f"the store holds no salt for run {run.id}")
    out.print(secret_salt(salt, name), soft_wrap=True)


@transcript_app.command("check-secret")
def check_secret(
    target: Annotated[
        str,
        typer.Argument(help="A run id, a transcript (.jsonl) or an evidence pack (.zip).",
                       metavar="RUN_ID|FILE"),
    ],
    name: Annotated[str, typer.Argument(help="The secret's name in the runbook.")],
    salt: Annotated[
        str | None,
        typer.Option("--salt", help="The secret's salt ('irctl transcript salt'); default: "
                     "read from the store, for a run id."),
    ] = None,
) -> None:
    """Confirm which value a run used for a secret: the value is read from stdin.

    Compares HMAC-SHA256(salt, value) with the commitment the transcript
    recorded.  The value is never an argument (it would show in the process
    list and the shell history) and is never printed.  Exits 0 if it matches
    every commitment of that secret, 1 if not.

    Examples:

      printf %s "$VALUE" | irctl transcript check-secret r.zip admin_token --salt 9f…
    """
    from irctl.secrets import check_commitment, run_salt, secret_salt

    path = Path(target)
    if path.is_file():
        if path.suffix.lower() == ".zip":
            from irctl.record.pack import EVENTS

            lines = _pack_lines(path, EVENTS)
        else:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if salt is None:
            raise UsageError("--salt is needed for a file (ask for it: 'irctl transcript salt')")
        run_label = str(path)
    else:
        workspace = _workspace()
        run = workspace.reader.find_run(target)
        lines = list(workspace.reader.lines(run.id))
        run_label = f"run {run.id}"
        if salt is None:
            found = run_salt(workspace.reader, run.id)
            if found is None:
                raise UsageError(f"the store holds no salt for run {run.id}")
            salt = secret_salt(found, name)
    recorded = _commitments(lines, run_label)
    if name not in recorded:
        known = ", ".join(sorted(recorded)) or "none"
        raise UsageError(f"{run_label} recorded no secret {name!r} (recorded: {known})")
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value of {name} (not echoed): ")
    else:
        try:
            value = sys.stdin.buffer.read().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise UsageError("the value on stdin is not UTF-8 text") from exc
    if not value:
        raise UsageError("no value on stdin")
    matches = [check_commitment(c, salt.strip(), value) for c in recorded[name]]
    if all(matches):
        out.print(f"[green]match:[/green] {escape(name)} in {escape(run_label)} was this value "
                  f"({len(matches)} commitment(s))")  # fmt: skip
        return
    raise VerificationFailed(
        f"{name} in {run_label}: the value does not match "
        f"{matches.count(False)} of {len(matches)} recorded commitment(s) (or the salt is wrong)"
    )


def _commitments(lines: Any, label: str) -> dict[str, list[str]]:
    """Secret name -> every commitment recorded for it (one per execution of the run).

    A ``secrets`` record that is not a mapping of names to ``hmac-sha256:<hex>``
    commitments fails verification (:class:`VerificationFailed`, naming the line):
    a commitment that cannot be read cannot be matched, so no value is confirmed.
    """
    import json
    import re

    shape = re.compile(r"hmac-sha256:[0-9a-f]{64}")
    found: dict[str, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        if '"secrets"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("type") not in ("run.started", "run.resumed"):
            continue
        data = event.get("data")
        secrets = data.get("secrets") if isinstance(data, dict) else None
        if not isinstance(secrets, dict):
            if isinstance(data, dict) and secrets is None:
                continue  # an execution that resolved no secret
            raise VerificationFailed(
                f"{label}: line {number} ({event['type']}) records its secrets as something "
                "other than a mapping of names to commitments: the transcript is malformed "
                "(see 'irctl transcript verify')"
            )
        for key, entry in secrets.items():
            commitment = entry.get("commitment") if isinstance(entry, dict) else None
            if not isinstance(commitment, str) or not shape.fullmatch(commitment):
                raise VerificationFailed(
                    f"{label}: line {number} ({event['type']}) records no valid commitment for "
                    f"the secret {str(key)!r} (expected 'hmac-sha256:<64 hex digits>'): the "
                    "transcript is malformed (see 'irctl transcript verify')"
                )
            found.setdefault(str(key), []).append(commitment)
    return found
