"""``irctl watch`` throughput: blocks per second followed with 20 watched addresses.

``python bench/watch.py [BLOCKS]`` prints the figures.  The local chain (in this process,
served over JSON-RPC on 127.0.0.1) gets 18 hot wallets and 2 Safes, then BLOCKS blocks (300 by
default) of mixed transactions, one a block as the local chain mines them: native payments and
token transfers from the hot wallets, approvals to known and unknown spenders, payments a Safe
executes, and transfers between unwatched accounts.  The watcher runs in a child process (the
library ``irctl watch`` calls, timed from the first block read to the head; the command's own
start-up is timed apart), so the chain's work and the watcher's are not on the same
interpreter; the time it waits for the chain's answers is measured apart from its own work.
Target: at least 50 blocks per second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = 300
HOT_WALLETS = 18
SAFES = 2
TARGET = 50.0


def _populate(chain: Any, blocks: int) -> tuple[dict[str, Any], int, int]:
    """vars.watch for the watched addresses, and the first and last block of the mix."""
    compiled = json.loads((ROOT / "contracts" / "safe" / "SafeLike.json").read_text())["contracts"]
    w3 = chain.w3
    accounts = chain.accounts
    hot = []
    for _ in range(HOT_WALLETS):
        account = chain.new_account(ether=1000)
        chain.tester.add_account(account.private_key)
        hot.append(account.address)
    token = chain.deploy_token(supply=10**15)
    for address in hot:
        chain.transact("PausableToken", token, "transfer", address, 10**12)
    safes = []
    for _ in range(SAFES):
        with chain._lock:
            singleton = _deploy(w3, compiled, "SafeLike")
            proxy = _deploy(w3, compiled, "SafeLikeProxy", singleton)
            safe = w3.eth.contract(address=proxy, abi=compiled["SafeLike"]["abi"])
            w3.eth.wait_for_transaction_receipt(
                safe.functions.setup([accounts[1]], 1, accounts[9]).transact({"from": accounts[0]})
            )
        chain.fund(proxy, 100 * 10**18)
        safes.append(safe)
    known = accounts[4]
    first = chain.mine()
    payee = accounts[5]
    with chain._lock:
        for i in range(blocks):
            sender = hot[i % HOT_WALLETS]
            kind = i % 6
            if kind == 0:
                w3.eth.send_transaction({"from": sender, "to": payee, "value": 10**15})
            elif kind == 1:
                chain.contract("PausableToken", token).functions.transfer(payee, 10**6).transact(
                    {"from": sender}
                )
            elif kind == 2:
                spender = known if i % 4 else accounts[6]
                chain.contract("PausableToken", token).functions.approve(spender, 10**6).transact(
                    {"from": sender}
                )
            elif kind == 3:
                safe = safes[i % SAFES]
                safe.functions.execTransaction(
                    payee, 10**15, b"", 0, 0, 0, 0, "0x" + "00" * 20, "0x" + "00" * 20
                ).transact({"from": accounts[1], "gas": 300_000})
            elif kind == 4:
                w3.eth.send_transaction({"from": accounts[2], "to": accounts[3], "value": 1})
            else:
                chain.contract("PausableToken", token).functions.transfer(accounts[7], 1).transact(
                    {"from": accounts[0]}
                )
        last = int(w3.eth.block_number)
    watch = {
        "chain": "local",
        "hot_wallets": hot,
        "safes": [s.address for s in safes],
        "known_spenders": [known],
        "outflow_threshold_wei": str(10**18),
        "token_thresholds": {token: str(10**8)},
        "window": "10m",
    }
    return watch, first, last


def _deploy(w3: Any, compiled: dict[str, Any], name: str, *args: Any) -> str:
    factory = w3.eth.contract(abi=compiled[name]["abi"], bytecode=compiled[name]["bytecode"])
    sent = factory.constructor(*args).transact({"from": w3.eth.accounts[0]})
    return str(w3.eth.wait_for_transaction_receipt(sent)["contractAddress"])


def follow(url: str, workspace: str, start: int) -> None:
    """In the child: follow from ``start`` to the head; print the seconds and what was read."""
    from irctl_evm.watch import Rpc, WatchConfig, Watcher, path_for

    from irctl.workspace import Workspace

    ws = Workspace.find(Path(workspace))
    config = WatchConfig.from_vars(ws.config.vars)
    found: list[dict[str, Any]] = []
    waited = [0.0]

    class TimedRpc(Rpc):
        def batch(self, requests: list[tuple[str, list[Any]]]) -> list[Any]:
            began = time.perf_counter()
            try:
                return super().batch(requests)
            finally:
                waited[0] += time.perf_counter() - began

    client = TimedRpc(url)
    watcher = Watcher(config, client, path_for(ws.state_dir, config.chain), start=start,
                      emit=found.append, note=lambda text: None)  # fmt: skip
    watcher.open()
    began = time.perf_counter()
    blocks = watcher.run(poll=0.1, once=True)
    seconds = time.perf_counter() - began
    client.close()
    print(json.dumps({"seconds": seconds, "rpc_seconds": waited[0], "blocks": blocks,
                      "findings": len(found)}))  # fmt: skip


def bench_watch(tmp: Path, blocks: int = BLOCKS) -> dict[str, float]:
    """Blocks per second followed, the findings raised, and the command's wall time."""
    from irctl_evm.testing import LocalChain

    from tests.helpers import IRCTL, make_workspace

    with LocalChain() as chain:
        watch, first, last = _populate(chain, blocks)
        ws = make_workspace(tmp / "watch-ws", vars={"watch": json.dumps(watch)})
        child = subprocess.run(
            [sys.executable, "-c",
             f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.watch import follow; "
             f"follow({chain.url!r}, {str(ws)!r}, {first})"],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        measured = json.loads(child.stdout.splitlines()[-1])
        (ws / ".irctl" / "watch-local.json").unlink()
        began = time.perf_counter()
        subprocess.run(
            [IRCTL, "watch", "--rpc", chain.url, "--from", str(first), "--once", "--json"],
            cwd=ws, capture_output=True, check=True,
        )  # fmt: skip
        command = time.perf_counter() - began
    read = int(measured["blocks"])
    assert read == last - first + 1, (read, first, last)
    return {
        "blocks": float(read),
        "blocks_per_second": read / float(measured["seconds"]),
        "findings": float(measured["findings"]),
        "own_blocks_per_second": read / max(1e-9, measured["seconds"] - measured["rpc_seconds"]),
        "rpc_share": float(measured["rpc_seconds"]) / float(measured["seconds"]),
        "command_seconds": command,
    }


def main() -> None:
    blocks = int(sys.argv[1]) if len(sys.argv) > 1 else BLOCKS
    with tempfile.TemporaryDirectory() as tmp:
        result = bench_watch(Path(tmp), blocks)
    rate = result["blocks_per_second"]
    verdict = "meets" if rate >= TARGET else "MISSES"
    print(f"irctl watch, {HOT_WALLETS + SAFES} watched addresses, {int(result['blocks'])} blocks "
          f"of mixed transactions: {rate:.0f} blocks/s ({verdict} the {TARGET:.0f} blocks/s "
          f"target), {int(result['findings'])} findings")  # fmt: skip
    print(f"  {result['rpc_share']:.0%} of it waiting for the local chain's answers; the "
          f"watcher's own work alone: {result['own_blocks_per_second']:.0f} blocks/s")  # fmt: skip
    print(
        f"  the whole command (start-up, chain id, {int(result['blocks'])} blocks, exit): "
        f"{result['command_seconds']:.2f} s"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
