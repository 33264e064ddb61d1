"""``irctl safe verify``: check a Safe transaction independently before signing it.

Exit codes: 0 no flags, 1 at least one flag (do not sign until each is
understood), 2 bad input (address, hex, version, unreadable file or URL).
"""

from typing import TYPE_CHECKING, Any

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, out, print_json

if TYPE_CHECKING:
    from irctl_evm.safe.verify import Verification

safe_app = typer.Typer(
    help="Safe multisig: verify a transaction's hashes and effects before signing.",
    no_args_is_help=True,
)
app.add_typer(safe_app, name="safe")

OPERATIONS = {0: "call", 1: "DELEGATECALL"}


@safe_app.command("verify")
def verify(
    url: str | None = typer.Option(
        None,
        "--url",
        help="Safe Transaction Service URL of the proposal "
        "(…/api/v1/multisig-transactions/0x<safeTxHash>/).",
    ),
    file: str | None = typer.Option(
        None, "--file", "-f", help="JSON file with the transaction (irctl's or the service's)."
    ),
    safe: str | None = typer.Option(None, "--safe", help="The Safe's address."),
    chain_id: str | None = typer.Option(None, "--chain-id", help="Chain id, e.g. 1."),
    version: str | None = typer.Option(
        None, "--version", help="Safe version (VERSION() on the Safe), e.g. 1.3.0."
    ),
    to: str | None = typer.Option(None, "--to", help="Target address."),
    value: str | None = typer.Option(None, "--value", help="Value in wei (default 0)."),
    data: str | None = typer.Option(None, "--data", help="Call data as 0x hex (default empty)."),
    operation: str | None = typer.Option(
        None, "--operation", help="0 call (default), 1 delegatecall."
    ),
    safe_tx_gas: str | None = typer.Option(None, "--safe-tx-gas"),
    base_gas: str | None = typer.Option(None, "--base-gas"),
    gas_price: str | None = typer.Option(None, "--gas-price"),
    gas_token: str | None = typer.Option(None, "--gas-token"),
    refund_receiver: str | None = typer.Option(None, "--refund-receiver"),
    nonce: str | None = typer.Option(None, "--nonce", help="The Safe nonce the proposal uses."),
    expect_safe_tx_hash: str | None = typer.Option(
        None, "--expect-safe-tx-hash", help="The safeTxHash you were shown; a difference is a flag."
    ),
    expect_domain_hash: str | None = typer.Option(
        None, "--expect-domain-hash", help="The domain hash your hardware wallet shows."
    ),
    expect_message_hash: str | None = typer.Option(
        None, "--expect-message-hash", help="The message hash your hardware wallet shows."
    ),
    trust: list[str] | None = typer.Option(
        None, "--trust", help="Another library trusted for delegatecall (repeat for several)."
    ),
    registry: str | None = typer.Option(
        None, "--registry", help="Safe registry file (default: the workspace's safe-registry.yaml)."
    ),
    rpc: str | None = typer.Option(
        None,
        "--rpc",
        help="A node's URL: read the chain id and the Safe's VERSION() from it "
        "instead of trusting the service or the registry.",
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the service."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Recompute a Safe transaction's domain hash, message hash and safeTxHash, decode its calls
    (nested MultiSend too) and flag delegatecalls to untrusted code, owner, threshold, guard,
    module, fallback-handler and master-copy changes, and gas refunds.

    The transaction comes from --url, --file, or the field options (which also fill in what a
    file or URL lacks).  Exit 0: no flags; 1: flags, do not sign; 2: bad input.
    """
    from irctl_evm.safe.registry import locate
    from irctl_evm.safe.tx import SafeInputError, address, hexbytes, uint
    from irctl_evm.safe.tx import version as parse_version
    from irctl_evm.safe.verify import load
    from irctl_evm.safe.verify import verify as check

    _positive_timeout(timeout)
    found = locate(registry, _configured_registry())
    fields: dict[str, Any] = {
        "safe": safe, "chain_id": chain_id, "version": version, "to": to, "value": value,
        "data": data, "operation": operation, "safe_tx_gas": safe_tx_gas, "base_gas": base_gas,
        "gas_price": gas_price, "gas_token": gas_token, "refund_receiver": refund_receiver,
        "nonce": nonce,
    }  # fmt: skip
    if rpc:
        from irctl_evm.safe.snapshot import chain_facts, connect

        if not safe:
            raise SafeInputError("--rpc reads the Safe's version: give --safe too")
        read_chain, read_version = chain_facts(
            connect(rpc, timeout=timeout), address(safe, "--safe")
        )
        if chain_id is not None and uint(chain_id, "--chain-id") != read_chain:
            raise SafeInputError(f"--chain-id {chain_id}: the node at --rpc serves {read_chain}")
        if version is not None and parse_version(version, "--version") != read_version:
            raise SafeInputError(f"--version {version}: the Safe says {read_version} (--rpc)")
        fields["chain_id"], fields["version"] = read_chain, read_version
    tx = load(fields, file=file, url=url, registry=found, timeout=timeout)
    trusted = dict(found.trusted)
    for item in trust or []:
        trusted[address(item, "--trust").lower()] = "trusted by --trust"
    expected: dict[str, str] = {}
    for name, given in (("safe_tx_hash", expect_safe_tx_hash),
                        ("domain_hash", expect_domain_hash),
                        ("message_hash", expect_message_hash)):  # fmt: skip
        if given:
            option = f"--expect-{name.replace('_', '-')}"
            digest = hexbytes(given if given.startswith("0x") else "0x" + given, option)
            if len(digest) != 32:
                raise SafeInputError(f"{option}: must be 32 bytes")
            expected[name] = "0x" + digest.hex()
    result = check(tx, trusted=trusted, expected_hashes=expected)
    if as_json:
        print_json(result.as_json())
    else:
        _render(result)
    raise typer.Exit(1 if result.flags else 0)


def _positive_timeout(timeout: float) -> None:
    from irctl_evm.safe.tx import SafeInputError

    if not timeout > 0:  # also NaN
        raise SafeInputError(f"--timeout {timeout:g}: give a positive number of seconds")


def _configured_registry() -> str | None:
    from irctl.workspace import Workspace

    configured: Any = Workspace.find().config.integrations.get("safe", {}).get("registry")
    return str(configured) if configured else None


def _render(result: "Verification") -> None:
    tx = result.tx
    h = result.hashes
    out.print(
        f"Safe {tx.safe} on chain {tx.chain_id} · Safe {tx.version} · nonce {tx.nonce}"
        f"  [dim](from {escape(tx.source)})[/dim]",
        soft_wrap=True,
    )
    for note in tx.notes:
        out.print(f"  [yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
    out.print(soft_wrap=True)
    out.print("[bold]Compare on your hardware wallet before signing:[/bold]", soft_wrap=True)
    out.print(f"  Domain hash   {_shown(h.domain_hash)}", soft_wrap=True)
    out.print(f"  Message hash  {_shown(h.message_hash)}", soft_wrap=True)
    out.print(f"  safeTxHash    {h.safe_tx_hash}", soft_wrap=True)
    out.print(soft_wrap=True)
    out.print("[bold]What it does:[/bold]", soft_wrap=True)
    for call in result.call.walk():
        depth = call.path.count(".multiSend[")
        indent = "  " * (depth + 1)
        target = "the Safe itself" if call.to == tx.safe else call.to
        op = OPERATIONS[call.operation]
        colour = "red" if call.operation == 1 else "default"
        out.print(
            f"{indent}[{colour}]{op}[/{colour}] {target} value {call.value}: "
            f"{escape(call.signature)}",
            soft_wrap=True,
        )
    gas = (tx.safe_tx_gas, tx.base_gas, tx.gas_price)
    out.print(
        f"  gas: safeTxGas {gas[0]}, baseGas {gas[1]}, gasPrice {gas[2]}, "
        f"gasToken {tx.gas_token}, refundReceiver {tx.refund_receiver}",
        soft_wrap=True,
    )
    out.print(soft_wrap=True)
    if not result.flags:
        out.print("[green]no flags[/green]: the hashes above are what you sign", soft_wrap=True)
        return
    count = len(result.flags)
    out.print(f"[red bold]{count} flag(s): do not sign until each is understood[/]", soft_wrap=True)
    for flag in result.flags:
        where = "" if flag.path == "transaction" else f" [{escape(flag.path)}]"
        out.print(f"  [red]{flag.code}[/red]{where}: {escape(flag.message)}", soft_wrap=True)
    err.print("[red]flagged[/red]: exit code 1")


def _shown(digest: str) -> str:
    """A hash as hardware wallets display it: 0x and upper-case hex."""
    return "0x" + digest[2:].upper()


@safe_app.command("snapshot")
def snapshot(
    safe: str | None = typer.Argument(
        None, help="The Safe to read (default: every Safe in the registry)."
    ),
    chain_id: str | None = typer.Option(None, "--chain-id", help="Only Safes of this chain."),
    rpc: str | None = typer.Option(
        None, "--rpc", help="Node URL or env:/file: reference (default: integrations.safe.rpc)."
    ),
    registry: str | None = typer.Option(
        None, "--registry", help="Safe registry file (default: the workspace's safe-registry.yaml)."
    ),
    timeout: float = typer.Option(20.0, "--timeout", help="Seconds per request to the node."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Read Safes on chain (owners, threshold, nonce, version, storage slot 0, guard, fallback
    handler, modules) and compare each with the workspace's Safe registry.

    Exit 0: every Safe matches; 1: a difference (a flag); 2: bad input or no node.
    """
    from irctl_evm.safe.registry import locate
    from irctl_evm.safe.snapshot import take_all

    from irctl.errors import IrctlError, UsageError
    from irctl.workspace import Workspace

    _positive_timeout(timeout)
    settings: dict[str, Any] = Workspace.find().config.integrations.get("safe", {})
    found = locate(registry, str(settings["registry"]) if settings.get("registry") else None)
    try:
        taken = take_all(found, safe=safe, chain_id=chain_id, rpc=rpc,
                         configured_rpc=settings.get("rpc"), timeout=timeout)  # fmt: skip
    except IrctlError:
        raise
    except Exception as exc:  # the node: requests and web3 raise many types
        problem = type(exc).__name__
        raise UsageError(f"cannot read the Safes from the RPC endpoint ({problem})") from exc
    flagged = any(snap.flags for snap in taken)
    if as_json:
        print_json([snap.as_json() for snap in taken])
    else:
        for snap in taken:
            _render_snapshot(snap)
    raise typer.Exit(1 if flagged else 0)


def _render_snapshot(snap: Any) -> None:
    name = f" ({escape(snap.name)})" if snap.name else ""
    out.print(f"Safe {snap.safe}{name} on chain {snap.chain_id}, block {snap.block}",
              soft_wrap=True)  # fmt: skip
    rows = [
        ("version", snap.version), ("singleton", snap.singleton), ("owners", snap.owners),
        ("threshold", snap.threshold), ("nonce", snap.nonce), ("guard", snap.guard),
        ("fallback handler", snap.fallback_handler), ("modules", snap.modules),
    ]  # fmt: skip
    for label, value in rows:
        shown = ", ".join(value) if isinstance(value, tuple) else value
        out.print(f"  {label:<17}{escape(str(shown if shown not in (None, '') else '-'))}",
                  soft_wrap=True)  # fmt: skip
    if not snap.flags:
        out.print("  [green]matches the registry[/green]", soft_wrap=True)
    for flag in snap.flags:
        out.print(f"  [red]{flag.code}[/red]: {escape(flag.message)}", soft_wrap=True)
    out.print(soft_wrap=True)
