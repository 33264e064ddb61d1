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


@app.command("init")
def init_command(
    directory: Path = typer.Argument(Path("."), help="Where to create the workspace."),
) -> None:
    """Create a workspace: irctl.yaml, runbooks/, drills/ and the installation key.

    The installation key (Ed25519) signs every run's transcript checkpoints; it
    is written to .irctl/installation.key (mode 0600) and its public half to
    irctl.yaml, so anyone with the config can verify transcripts offline.
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
    if config.exists():
        err.print(f"{config} exists; left as it is. Its installation_key should read:")
        out.print(f'installation_key: "{public}"')
    else:
        config.write_text(CONFIG_TEMPLATE.format(key=public), encoding="utf-8")
        err.print(f"created {config}")
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if ".irctl/" not in lines:
        ignore.write_text("\n".join([*lines, ".irctl/"]) + "\n", encoding="utf-8")
    err.print("next: put runbooks in runbooks/, then 'irctl validate' and 'irctl plan RUNBOOK'")


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
