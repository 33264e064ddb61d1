"""``irctl watch``: follow a chain and raise what the hot wallets and Safes in vars.watch do.

Exit codes: 0 stopped after --once with everything delivered, 1 a finding not
delivered or the node unreachable, 2 bad input (options, vars.watch, the position
file), 130 stopped by Ctrl-C or SIGTERM (the position is saved; start it again).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from irctl.cli._app import app, err, escape, out
from irctl.errors import UsageError

WATCH_HELP = """Follow a chain for the hot wallets and Safes listed in irctl.yaml (vars.watch).

Raised: a Safe's ChangedMasterCopy, ChangedThreshold, AddedOwner, RemovedOwner,
ChangedFallbackHandler, ChangedGuard and EnabledModule; a delegatecall a Safe
executed to a contract not in known_delegates (Bybit); an ERC-20 approval by a
watched address to a spender not in known_spenders; native and token outflows
above their threshold within the rolling window.  Each finding carries the block's
timestamp as detected_at; with --alert-url it is POSTed as an irctl alert signed
with HMAC-SHA256 (X-Irctl-Timestamp, X-Irctl-Signature: v1=...).

The position is kept in .irctl/watch-CHAIN.json: a restart neither misses nor
repeats a block, and a finding not yet delivered is delivered on restart.  A reorg
up to --reorg-depth blocks retracts the orphaned blocks' findings ('retracted')
and reads the new branch.

\b
vars:
  watch:
    chain: ethereum            # the default --rpc is integrations.evm.rpc.<chain>
    hot_wallets: ["0x..."]
    safes: ["0x..."]
    known_spenders: ["0x..."]
    known_delegates: ["0x..."]
    outflow_threshold_wei: "100000000000000000000"
    token_thresholds: {"0xTOKEN": "250000000000"}
    window: 10m

Exit codes: 0 --once read to the head and delivered everything; 1 a finding not
delivered (it waits in the position file), the node unreachable at the start, a
reorg deeper than --reorg-depth; 2 bad options, vars.watch or position file;
130 stopped by Ctrl-C or SIGTERM (start it again: it goes on where it stopped).
"""


@app.command("watch", help=WATCH_HELP)
def watch_command(
    rpc: str | None = typer.Option(
        None, "--rpc", help="The node's JSON-RPC URL (default: integrations.evm.rpc.<chain>)."
    ),
    start: int | None = typer.Option(
        None, "--from", help="The first block to read when there is no saved position yet."
    ),
    confirmations: int | None = typer.Option(
        None, "--confirmations", help="Blocks over a block before it is read (vars.watch, 0)."
    ),
    reorg_depth: int | None = typer.Option(
        None, "--reorg-depth", help="Block hashes kept to undo a reorg (vars.watch, 12)."
    ),
    poll: float = typer.Option(2.0, "--poll", help="Seconds between polls of the head."),
    batch: int = typer.Option(50, "--batch", help="Blocks read in one JSON-RPC batch."),
    once: bool = typer.Option(False, "--once", help="Read up to the head, deliver, and stop."),
    alert_url: str | None = typer.Option(
        None, "--alert-url", help="POST each finding here as a signed irctl alert."
    ),
    alert_secret_env: str | None = typer.Option(
        None, "--alert-secret-env", help="The environment variable holding the alert secret."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print each finding as a JSON line."),
) -> None:
    from dataclasses import replace

    from irctl.cli.runs import _workspace

    watch = _module()
    ws = _workspace()
    config = watch.WatchConfig.from_vars(ws.config.vars)
    if confirmations is not None:
        if confirmations < 0:
            raise UsageError("--confirmations must be 0 or more")
        config = replace(config, confirmations=confirmations)
    if reorg_depth is not None:
        if reorg_depth < 1:
            raise UsageError("--reorg-depth must be 1 or more")
        config = replace(config, reorg_depth=reorg_depth)
    if start is not None and start < 0:
        raise UsageError("--from must be a block number (0 or more)")
    if not poll > 0:  # also NaN
        raise UsageError("--poll must be a positive number of seconds")
    if batch < 1:
        raise UsageError("--batch must be 1 or more")
    target = _alert(watch, alert_url, alert_secret_env)
    client = watch.Rpc(_rpc_url(ws, config.chain, rpc), what=_rpc_name(config.chain, rpc))
    path = watch.path_for(ws.state_dir, config.chain)
    expected = _expected_chain_id(ws, config.chain)
    with watch.locked(path):
        watcher = watch.Watcher(
            config, client, path, start=start, batch=batch, alert=target,
            expected_chain_id=expected,
            emit=_print_json if as_json else _print_line,
            note=lambda text: err.print(escape(text), highlight=False, soft_wrap=True),
        )  # fmt: skip
        watcher.open()
        try:
            watcher.run(poll=poll, once=once)
        finally:
            client.close()
    if watcher.undelivered:
        err.print(
            f"[red]error:[/red] {watcher.undelivered} finding(s) not delivered; they are kept "
            f"in {escape(str(path))} and delivered when irctl watch runs again",
            highlight=False,
        )
        raise typer.Exit(1)


def _module() -> Any:
    try:
        from irctl_evm import watch
    except ImportError as exc:
        raise UsageError(
            "irctl watch needs the wallet integration: pip install 'irctl[evm]'"
        ) from exc
    return watch


def _rpc_name(chain: str, given: str | None) -> str:
    return "--rpc" if given else f"integrations.evm.rpc.{chain}"


def _rpc_url(ws: Any, chain: str, given: str | None) -> str:
    if given:
        return given
    from irctl_evm._chain import rpc_url

    from irctl.errors import ActionError

    evm = ws.config.integrations.get("evm") or {}
    if not (isinstance(evm, dict) and isinstance(evm.get("rpc"), dict) and chain in evm["rpc"]):
        raise UsageError(
            f"no RPC endpoint for chain '{chain}': give --rpc URL, or set "
            f"integrations.evm.rpc.{chain} in irctl.yaml"
        )
    try:
        url: str = rpc_url({**evm, "_workspace": str(ws.root)}, chain)
    except ActionError as exc:
        raise UsageError(exc.message) from exc
    return url


def _expected_chain_id(ws: Any, chain: str) -> int | None:
    evm = ws.config.integrations.get("evm") or {}
    ids = evm.get("chain_id") if isinstance(evm, dict) else None
    given = ids.get(chain) if isinstance(ids, dict) else None
    if given is None:
        return None
    if isinstance(given, bool) or not isinstance(given, int | str) or not str(given).isdigit():
        raise UsageError(f"integrations.evm.chain_id.{chain} must be a chain id, such as 1")
    return int(given)


def _alert(watch: Any, url: str | None, env: str | None) -> Any:
    if url is None and env is None:
        return None
    if url is None or env is None:
        raise UsageError("--alert-url and --alert-secret-env go together")
    secret = os.environ.get(env)
    if not secret:
        raise UsageError(f"--alert-secret-env {env}: the environment variable is not set")
    return watch.AlertTarget(url, secret.encode())


def _print_json(finding: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(finding, sort_keys=True, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _print_line(finding: dict[str, Any]) -> None:
    out.print(
        f"{finding['detected_at']} block {finding['block']} {escape(finding['kind'])}: "
        f"{escape(finding['summary'])}",
        soft_wrap=True,
    )
