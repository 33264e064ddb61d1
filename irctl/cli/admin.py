"""``irctl init``, ``irctl keys generate|export`` and ``irctl demo``."""

import sys
from pathlib import Path

import typer

from irctl.cli._app import app, err, escape, keys_app, out
from irctl.errors import UsageError

CONFIG_TEMPLATE = """\
# irctl workspace config; see the README for every field.
store: sqlite:///.irctl/irctl.db          # or postgresql+psycopg://user@host/db for a team
installation_key: "{key}"   # signs transcript checkpoints
operators: {{}}
  # alice: {{roles: [security-lead], slack: U0ALICE, key: "ed25519:..."}}
  # (irctl keys generate alice prints the key)
integrations: {{}}
vars:
  exchange_admin_url: https://admin.internal.example
"""


#: The chain watcher's findings starting the Safe runbook's ``auto`` steps: commented out in
#: the library's irctl.yaml until the workspace has operators with keys and a watch secret.
LIBRARY_TRIGGERS = """\
# Alerts that start a runbook on 'irctl serve' (/alerts/NAME): 'irctl watch --alert-url
# http://HOST:PORT/alerts/chain --alert-secret-env WATCH_SECRET' raises a Safe's delegatecall.
# triggers:
#   chain:
#     source: generic
#     secret: env:WATCH_SECRET
#     runbook: multisig-signer-compromise
#     match: {labels.kind: safe.delegatecall}
#     params:
#       safe: alert.labels.address
#       chain_id: alert.fields.chain_id
#       nonce: alert.fields.nonce
#     incident: "safe-{{ alert.labels.address }}-{{ alert.fields.nonce }}"\
"""


@app.command("init")
def init_command(
    directory: Path = typer.Argument(Path("."), help="Where to create the workspace."),
    library: bool = typer.Option(
        False, "--library",
        help="Copy the shipped runbooks and drills in, and write the vars they read and the "
        "roles their approvals need into irctl.yaml, to fill in.",
    ),
) -> None:  # fmt: skip
    """Create a workspace: irctl.yaml, runbooks/, drills/ and the installation key.

    The installation key (Ed25519) signs every run's transcript checkpoints; it
    is written to .irctl/installation.key (mode 0600) and its public half to
    irctl.yaml, so anyone with the config can verify transcripts offline.

    With --library, the shipped runbooks and drills are copied in (a file already there is
    left as it is) and irctl.yaml gets their vars, with the example values to replace, and
    the roles their approvals need; then 'irctl doctor' says what is left to fill in.
    """
    from irctl.identity import generate_private_key, public_key_text
    from irctl.workspace import CONFIG_NAME, INSTALLATION_KEY, STATE_DIR

    root = directory.resolve()
    for folder in (root, root / "runbooks", root / "drills", root / STATE_DIR):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"cannot create a workspace: {folder} exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for name in ("runbooks", "drills", STATE_DIR):
            (root / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create a workspace in {root}: {exc.strerror}") from None
    key_path = root / STATE_DIR / INSTALLATION_KEY
    config = root / CONFIG_NAME
    named = _named_installation_key(config)
    if named is not None and not key_path.exists():
        raise UsageError(
            f"{config} names the installation key {named}, but {key_path} does not exist: "
            "restore the key file from its backup (transcripts already signed verify only "
            "with it); to replace the installation key on purpose, remove the installation_key "
            "line from irctl.yaml first, then run irctl init again"
        )
    if key_path.exists():
        from irctl.identity import load_private_key

        public = public_key_text(load_private_key(key_path))
        err.print(f"installation key exists: {key_path}")
    else:
        public = public_key_text(generate_private_key(key_path))
        err.print(f"created installation key {key_path} (mode 0600)")
    copied = _copy_library(root) if library else None
    if config.exists():
        err.print(f"{config} exists; left as it is. Its installation_key should read:")
        out.print(f'installation_key: "{public}"')
    else:
        text = CONFIG_TEMPLATE.format(key=public)
        if copied is not None:
            text = _library_config(public, copied)
        config.write_text(text, encoding="utf-8")
        err.print(f"created {config}")
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if ".irctl/" not in lines:
        ignore.write_text("\n".join([*lines, ".irctl/"]) + "\n", encoding="utf-8")
    if copied is not None:
        err.print(f"copied {len(copied)} runbook(s) and their drills; next: 'irctl doctor' "
                  "lists what to fill in, in the order to do it")  # fmt: skip
        return
    err.print("next: put runbooks in runbooks/, then 'irctl validate' and 'irctl plan RUNBOOK'")


def _library_root() -> Path:
    """The shipped runbooks, drills and example irctl.yaml (the irctl checkout)."""
    found = Path(__file__).resolve().parents[2]
    if not (found / "runbooks").is_dir() or not (found / "irctl.yaml").is_file():
        raise UsageError(
            f"the runbook library is not installed with this irctl (no runbooks/ beside "
            f"{found}): install irctl from its checkout (pip install -e .), or copy runbooks/ "
            "and drills/ from it"
        )
    return found


def _copy_library(root: Path) -> list[Path]:
    """Copy the shipped runbooks and drills into the workspace; the runbooks copied or kept."""
    import shutil

    source = _library_root()
    runbooks: list[Path] = []
    for folder in ("runbooks", "drills"):
        for path in sorted((source / folder).glob("*.yaml")):
            target = root / folder / path.name
            if not target.exists():
                shutil.copyfile(path, target)
            if folder == "runbooks":
                runbooks.append(target)
    return runbooks


def _library_config(public: str, runbooks: list[Path]) -> str:
    """irctl.yaml for the library: its vars as shipped (example values to replace) and one
    commented operator line per role its approvals and start rules name."""
    import yaml

    from irctl.runbook.loader import load_runbook

    shipped = (_library_root() / "irctl.yaml").read_text(encoding="utf-8").splitlines()
    start = next((n for n, line in enumerate(shipped) if line.startswith("vars:")), None)
    block: list[str] = []
    if start is not None:  # as shipped, its comments included: they say what each var is
        block = [shipped[start]]
        for line in shipped[start + 1:]:
            if line and not line[0].isspace() and not line.startswith("#"):
                break
            block.append(line)
    if not block or yaml.safe_load("\n".join(block)) is None:
        block = ["vars: {}"]
    roles: set[str] = set()
    for path in runbooks:
        model = load_runbook(path, check_integrations=False)
        for policy in model.approvals.values():
            roles.update(policy.roles)
            roles.update(r for group in policy.groups for r in group.roles)
        if model.start is not None:
            roles.update(model.start.roles)
        if model.skip is not None:
            roles.update(model.skip.roles)
    operators = [
        f"  # {role.replace('-', '_')}_1: {{roles: [{role}], key: \"ed25519:...\"}}"
        for role in sorted(roles)
    ]
    lines = [
        "# irctl workspace config, made by 'irctl init --library'; the README has every field.",
        "store: sqlite:///.irctl/irctl.db   # or postgresql+psycopg://user@host/db for a team",
        f'installation_key: "{public}"   # signs transcript checkpoints',
        "# The people who run and approve, each with the public half of their own key",
        "# ('irctl keys generate NAME' prints the line). The shipped runbooks' approvals need:",
        "#   " + ", ".join(sorted(roles)),
        "operators: {}",
        *operators,
        "integrations: {}                          # slack, aws, evm, page, ...: see the README",
        *LIBRARY_TRIGGERS.splitlines(),
        "# What the runbooks read: the example values below are not yours; replace each.",
        *block,
    ]
    return "\n".join(lines) + "\n"


def _named_installation_key(config: Path) -> str | None:
    """The installation key an existing irctl.yaml names (None if none, or it cannot be read:
    then init leaves the file alone and says what its installation_key line should read)."""
    if not config.is_file():
        return None
    from irctl.errors import IrctlError
    from irctl.runbook.loader import load_config

    try:
        return load_config(config).installation_key
    except IrctlError:
        return None


@keys_app.command("generate")
def keys_generate_command(
    operator: str = typer.Argument(..., help="The operator's name, as in irctl.yaml."),
) -> None:
    """Create an operator's Ed25519 key outside the workspace and print the line to add.

    The private key goes to ~/.config/irctl/keys/OPERATOR.key (or $IRCTL_KEY_DIR),
    mode 0600; only the public key belongs in irctl.yaml.
    """
    import re

    from irctl.identity import generate_private_key, key_dir, public_key_text

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", operator):
        raise UsageError(f"operator names are lowercase letters, digits, - and _: {operator!r}")
    path = key_dir() / f"{operator}.key"
    key = generate_private_key(path)
    err.print(f"private key written to {path} (mode 0600); keep it off shared machines")
    err.print("add to irctl.yaml under operators:")
    out.print(f'  {operator}: {{roles: [], key: "{public_key_text(key)}"}}')


@keys_app.command("export")
def keys_export_command(
    output: str = typer.Option(
        "-", "--output", "-o", help="The keyring file to write, or '-' for stdout."
    ),
) -> None:
    """Export the workspace's public keys as a keyring a reviewer verifies transcripts with.

    The keyring is canonical JSON (sorted keys, two-space indent): the
    installation key and each operator's key and roles from irctl.yaml, nothing
    secret.  The same irctl.yaml always exports the same bytes; its SHA-256
    fingerprint is printed on stderr, so a reviewer can confirm over another
    channel that the keyring they received is yours.  Give it to
    'irctl transcript verify RUN|FILE --trust KEYRING'.

    Examples:

      irctl keys export -o keyring.json

      irctl keys export | sha256sum
    """
    from irctl.record.keyring import fingerprint, keyring_text
    from irctl.workspace import CONFIG_NAME, Workspace

    workspace = Workspace.find()
    if workspace.config_path is None:
        raise UsageError(
            f"no {CONFIG_NAME} in {workspace.root} or a folder above: the keyring is exported "
            "from a workspace's irctl.yaml (run it there, or set IRCTL_WORKSPACE)"
        )
    if not output.strip():
        raise UsageError("-o needs a file name, or '-' for stdout")
    installation = workspace.public_key()
    config = workspace.config
    if installation is None and not any(op.key for op in config.operators.values()):
        raise UsageError(
            f"{workspace.config_path} names no installation key and no operator key: "
            "there is nothing to export"
        )
    text = keyring_text(config, installation)
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from exc
    keyed = sum(1 for op in config.operators.values() if op.key)
    where = "" if output == "-" else f" to {escape(output)}"
    err.print(
        f"wrote the keyring of {escape(str(workspace.config_path))}{where}: installation key "
        f"{'yes' if installation else 'none'}, {keyed} operator key(s); "
        f"fingerprint {fingerprint(text)}"
    )


@app.command("demo")
def demo_command(
    interactive: bool = typer.Option(
        False, "--interactive", help="Ask you at manual steps instead of confirming them."
    ),
    directory: Path = typer.Option(
        Path(".irctl-demo"), help="Where to create the demo workspace (recreated each time)."
    ),
) -> None:
    """Run a complete hot-wallet incident in a local sandbox, then verify its transcript.

    A local HTTP server stands in for the exchange's admin API; nothing leaves
    this machine.  Manual steps are confirmed automatically unless --interactive.
    """
    from irctl.cli.demo import run_demo

    code = run_demo(directory.resolve(), interactive=interactive, console=err, stdout=out)
    if code:
        err.print(f"[red]demo ended with exit code {code}[/red]")
    raise typer.Exit(code)


__all__ = ["escape"]


@app.command("doctor")
def doctor_command(
    offline: bool = typer.Option(
        False, "--offline", help="Skip the checks that call an integration (Slack, AWS, a node)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Is this workspace ready for an incident? What to fix, in the order to fix it.

    Checks that every runbook, drill and irctl.yaml validates; that operators are listed,
    each with a key, and enough of them hold every role an approval needs; that every env:
    and file: secret the runbooks name resolves here (never printed); and, unless --offline,
    that each configured integration's endpoint and credentials answer. Exit 0 when nothing
    is left to fix, 1 otherwise.

    Example: irctl init ws --library && cd ws && irctl doctor --offline
    """
    from irctl.cli._app import print_json

    findings = _doctor(offline)
    if as_json:
        print_json([{"area": area, "fix": text} for area, text in findings])
    else:
        for number, (area, text) in enumerate(findings, 1):
            out.print(f"{number}. [bold]{area}[/bold]: {escape(text)}", soft_wrap=True)
        out.print("ready: nothing to fix" if not findings else f"{len(findings)} thing(s) to fix")
    if findings:
        raise typer.Exit(1)


def _doctor(offline: bool) -> list[tuple[str, str]]:
    """What stands between the workspace and an incident, most fundamental first."""
    import os

    from irctl.errors import IrctlError
    from irctl.runbook.loader import load_runbook, validate_paths
    from irctl.workspace import Workspace

    workspace = Workspace.find()
    config = workspace.config
    findings: list[tuple[str, str]] = []
    targets = [p for p in (workspace.runbooks_dir, workspace.drills_dir) if p.is_dir()]
    if workspace.config_path is not None:
        targets.append(workspace.config_path)
    _, problems = validate_paths(targets)
    findings += [("files", str(problem)) for problem in problems]
    if not config.operators:
        findings.append(("operators", "irctl.yaml lists no operators: add the people who run and "
                         "approve, each with 'irctl keys generate NAME' (it prints the line)"))
    for name, operator in sorted(config.operators.items()):
        if not operator.key:
            findings.append(("operators", f"{name} has no key: 'irctl keys generate {name}' on "
                             "their machine, then paste the line it prints into irctl.yaml"))
    runbooks = sorted([*workspace.runbooks_dir.glob("*.yaml")]) if targets else []
    seen: set[str] = set()
    for path in runbooks:
        try:
            model = load_runbook(path, check_integrations=False)
        except IrctlError:
            model = None  # its problems are listed under files already
        for secret, ref in sorted(model.secrets.items()) if model is not None else []:
            kind, _, where = ref.partition(":")
            if ref in seen:
                continue
            seen.add(ref)
            if kind == "env" and not os.environ.get(where):
                findings.append(("secrets", f"{path.name}: secret {secret} reads ${where}, which "
                                 "is not set here"))
            elif kind == "file" and not (workspace.root / where).is_file():
                findings.append(("secrets", f"{path.name}: secret {secret} reads {where}, which "
                                 "does not exist"))
    if not offline:
        from irctl.engine.preflight import check_ready, namespaces_named

        named = namespaces_named(runbooks)
        ready = check_ready(dict(config.integrations), named, workspace.config_path)
        findings += [("integrations", str(problem)) for problem in ready]
    return findings
