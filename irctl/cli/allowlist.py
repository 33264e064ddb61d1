"""``irctl allowlist add | sign | verify``: the cold addresses sweeps may send to."""

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, out, print_json
from irctl.errors import UsageError

if TYPE_CHECKING:
    from irctl.workspace import Workspace

allowlist_app = typer.Typer(
    help=(
        "The cold-address allowlist: the only addresses evm.sweep sends to.  Each entry "
        "counts once a quorum of treasury operators signed it with their own keys "
        "(integrations.evm.allowlist in irctl.yaml: path, quorum, roles)."
    ),
    no_args_is_help=True,
)
app.add_typer(allowlist_app, name="allowlist")

FILE_OPTION = typer.Option(
    None, "--file", "-f", help="The allowlist file (default: integrations.evm.allowlist.path)."
)
CHAIN_OPTION = typer.Option(..., "--chain", "-c", help="The chain, as named in irctl.yaml.")
KEY_OPTION = typer.Option(
    None, "--key", help="The operator's private key (default: the operator's key file)."
)


def _module() -> ModuleType:
    try:
        from irctl_evm import allowlist
    except ImportError as exc:
        raise UsageError(
            "the allowlist needs the wallet integration: pip install 'irctl[evm]'"
        ) from exc
    return allowlist


def _settings(ws: "Workspace") -> dict[str, Any]:
    evm = ws.config.integrations.get("evm") or {}
    settings = evm.get("allowlist") if isinstance(evm, dict) else None
    return settings if isinstance(settings, dict) else {}


def _path(ws: "Workspace", given: Path | None) -> Path:
    if given is not None:
        return given
    path: Path = _module().path_from(_settings(ws), ws.root)
    return path


def _operators(ws: "Workspace") -> dict[str, dict[str, Any]]:
    return {n: {"roles": list(o.roles), "key": o.key} for n, o in ws.config.operators.items()}


def _signing_key(ws: "Workspace", operator: str, key: Path | None) -> Any:
    from irctl.identity import load_private_key, operator_key_path, public_key_text

    known = ws.config.operators.get(operator)
    if known is None:
        names = ", ".join(sorted(ws.config.operators)) or "none"
        raise UsageError(f"{operator!r} is not an operator in irctl.yaml (operators: {names})")
    path = key or operator_key_path(operator)
    if not path.is_file():
        raise UsageError(
            f"no private key for {operator} at {path}: create one with 'irctl keys generate "
            f"{operator}' (and put its public key in irctl.yaml), or give --key"
        )
    private = load_private_key(path)
    if known.key != public_key_text(private):
        raise UsageError(
            f"the key at {path} is not {operator}'s: its public half differs from the key "
            "in irctl.yaml"
        )
    return private


def _entry(allowlist: ModuleType, entries: list[Any], chain: str, address: str) -> Any:
    matching = allowlist.find_entries(entries, chain, allowlist.check_address(address))
    if not matching:
        raise UsageError(
            f"{address} on {chain} is not on the allowlist; add it with "
            f"irctl allowlist add {address} --chain {chain}"
        )
    return matching[0]


def _show(entry: Any) -> None:
    err.print(f"chain   {escape(entry.chain)}")
    err.print(f"address {escape(entry.address)}")
    err.print(f"label   {escape(entry.label)}")
    err.print(f"signed  {escape(', '.join(s['operator'] for s in entry.signatures) or 'nobody')}")


@allowlist_app.command("add")
def add_command(
    address: str = typer.Argument(..., help="The cold address (0x..., checksummed or not)."),
    chain: str = CHAIN_OPTION,
    label: str = typer.Option("", "--label", "-l", help="A name people recognise: cold-1."),
    operator: str | None = typer.Option(
        None, "--as", help="Also sign the new entry as this operator."
    ),
    key: Path | None = KEY_OPTION,
    file: Path | None = FILE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Add a cold address to the allowlist (it counts once a quorum has signed it).

    Example: irctl allowlist add 0x5aAe...eAed --chain ethereum --label cold-1 --as bob
    """
    from datetime import UTC, datetime

    from irctl.cli.runs import _workspace

    allowlist = _module()
    ws = _workspace()
    path = _path(ws, file)
    entries = allowlist.load(path) if path.exists() else []
    private = _signing_key(ws, operator, key) if operator else None
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = allowlist.add(
        entries, chain=chain, address=address, label=label, by=operator or "", at=at
    )
    if operator:
        allowlist.sign(entry, operator, private)
    allowlist.save(path, entries)
    verdict = allowlist.verify_entry(
        entry, _operators(ws), allowlist.Policy.from_config(_settings(ws))
    )
    if as_json:
        print_json({"file": str(path), **verdict.to_dict()})
        return
    err.print(f"added {escape(entry.address)} on {escape(chain)} to {escape(str(path))}")
    err.print(
        f"signatures: {len(verdict.valid_signers)} of {verdict.quorum}; other treasury "
        f"operators sign with: irctl allowlist sign {entry.address} --chain {chain} --as NAME"
    )


@allowlist_app.command("sign")
def sign_command(
    address: str = typer.Argument(..., help="The allowlisted address to sign."),
    chain: str = CHAIN_OPTION,
    operator: str = typer.Option(..., "--as", help="Sign as this operator (your own key)."),
    key: Path | None = KEY_OPTION,
    file: Path | None = FILE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Sign an allowlist entry with your key, after checking the address out of band.

    What you sign is the chain, the address and the label shown: any later edit
    of them voids your signature.
    """
    from irctl.cli.runs import _workspace

    allowlist = _module()
    ws = _workspace()
    path = _path(ws, file)
    entries = allowlist.load(path)
    entry = _entry(allowlist, entries, chain, address)
    private = _signing_key(ws, operator, key)
    allowlist.sign(entry, operator, private)
    allowlist.save(path, entries)
    verdict = allowlist.verify_entry(
        entry, _operators(ws), allowlist.Policy.from_config(_settings(ws))
    )
    if as_json:
        print_json({"file": str(path), **verdict.to_dict()})
        return
    _show(entry)
    state = "valid" if verdict.ok else "not yet valid"
    err.print(
        f"signed as {escape(operator)}: {len(verdict.valid_signers)} of {verdict.quorum} "
        f"signatures, {state}"
    )


@allowlist_app.command("verify")
def verify_command(
    file: Path | None = FILE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Check every entry's signatures against the operators and policy in irctl.yaml.

    Exit code 0 when every entry has a valid quorum, 1 when any has not (evm.sweep
    refuses those addresses).
    """
    from irctl.cli.runs import _workspace

    allowlist = _module()
    ws = _workspace()
    path = _path(ws, file)
    policy = allowlist.Policy.from_config(_settings(ws))
    verdicts = allowlist.verify_all(allowlist.load(path), _operators(ws), policy)
    ok = all(v.ok for v in verdicts)
    if as_json:
        print_json(
            {
                "file": str(path),
                "ok": ok,
                "quorum": policy.quorum,
                "roles": list(policy.roles),
                "entries": [v.to_dict() for v in verdicts],
            }
        )
    else:
        out.print(f"{path}: quorum {policy.quorum} of roles {', '.join(policy.roles)}")
        for v in verdicts:
            mark = "[green]valid[/green]  " if v.ok else "[red]INVALID[/red]"
            signers = ", ".join(v.valid_signers) or "nobody"
            out.print(
                f"{mark} {escape(v.entry.chain)} {escape(v.entry.address)} "
                f"{escape(v.entry.label)}  signed by {escape(signers)}"
            )
            for problem in v.problems:
                out.print(f"         {escape(problem)}")
        if not verdicts:
            out.print("no entries")
    if not ok:
        raise typer.Exit(1)
