"""From the chain block to containment: how long a Bybit-like delegatecall takes to be contained.

``python bench/alert.py [RUNS]`` prints the figures.  As tests/test_bybit_to_containment.py
does, with every part real and on 127.0.0.1: the local chain (in this process, over JSON-RPC),
``irctl serve`` with the chain trigger and ``irctl watch --poll 0.1`` following the chain (each
its own process, started before anything is timed), the exchange admin API and PagerDuty's
Events API (stand-ins in this process).  Each run, one of RUNS Safes (5 by default) executes
the disguised delegatecall; from the moment its block is mined (this process's clock, the one
the journal's times are on) to the last ``auto`` step of multisig-signer-compromise done (from
the journal; the clock is let pass the local chain's block timestamps before each run):

- **block to contained**: the whole of it;
- **actions**: the time inside the three ``auto`` steps' actions (each step's ``step.started``
  to its ``step.succeeded``): the APIs' own latency, the exchange's and PagerDuty's;
- **engine**: the serve-side run's wall time (``run.created`` to the last ``auto`` step done)
  minus the actions;
- **irctl overhead**: block to contained minus the actions: watch polling and reading the
  block, the signed POST, serve checking the alert and starting the run, and the engine.

Target: irctl overhead (engine included) at most 1 s.  The transcript's own
``time_to_contain`` is timed from the block's timestamp, whole seconds that the local chain
stamps a little ahead of the clock when it mines fast: printed, not used for the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
TARGET = 1.0
SECRET = "bench-alert-watch-secret"
TOKEN = "bench-alert-admin-token"
PD_KEY = "R0UTINGKEYBENCHALERT000000000000"


def _safes(chain: Any, count: int) -> tuple[list[Any], str]:
    """``count`` Safe-like multisigs (two of three owners) and the backdoor they will call."""
    from web3 import HTTPProvider, Web3

    from tests.test_safe_snapshot import COMPILED, Deployed, _deploy

    w3 = Web3(HTTPProvider(chain.url))
    accounts = list(w3.eth.accounts)
    singleton = _deploy(w3, "SafeLike")
    made = []
    for _ in range(count):
        proxy = _deploy(w3, "SafeLikeProxy", singleton)
        safe = w3.eth.contract(address=proxy, abi=COMPILED["SafeLike"]["abi"])
        deployed = Deployed(w3, safe, "", accounts[1:4], accounts[9], int(w3.eth.chain_id))
        deployed.wait(
            safe.functions.setup(deployed.owners, 2, deployed.handler).transact(
                {"from": accounts[0]}
            )
        )
        made.append(deployed)
    return made, _deploy(w3, "SlotZeroBackdoor")


def _wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/alert.py: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


def _contained(events: list[Any]) -> dict[str, Any] | None:
    """The journal's figures of a run whose auto steps are all done, else None."""
    from irctl.journal import events as ev
    from irctl.journal.events import parse_ts
    from tests.test_bybit_to_containment import AUTO as AUTO_STEPS  # the runbook's auto steps

    started: dict[str, float] = {}
    done: dict[str, float] = {}
    actions = 0.0
    for event in events:
        step = event.data.get("step")
        if step not in AUTO_STEPS or "item" in event.data:
            continue
        at = parse_ts(event.ts).timestamp()
        if event.type == ev.STEP_STARTED:
            started[step] = at
        elif event.type == ev.STEP_SUCCEEDED and step in started:
            done[step] = at
            actions += at - started[step]
        elif event.type == ev.STEP_FAILED:
            raise SystemExit(f"bench/alert.py: the auto step {step} failed: {event.data}")
    if set(done) != set(AUTO_STEPS):
        return None
    return {"created": parse_ts(events[0].ts).timestamp(), "contained": max(done.values()),
            "actions": actions}  # fmt: skip


def bench_alert(tmp: Path, runs: int = RUNS) -> dict[str, Any]:
    from irctl_comms.testing import PagerDutyStandIn
    from irctl_evm.safe.hashing import hashes
    from irctl_evm.testing import LocalChain

    from irctl.record.exports import detection_times
    from irctl.standins.exchange_admin import ExchangeAdminStub
    from irctl.workspace import Workspace
    from tests.helpers import IRCTL, keyed_operators, make_workspace
    from tests.test_bybit_to_containment import TRIGGER
    from tests.test_safe_snapshot import _call

    rows: list[dict[str, float]] = []
    with LocalChain() as chain, ExchangeAdminStub(TOKEN) as exchange, \
            PagerDutyStandIn(routing_keys=[PD_KEY]) as pagerduty:  # fmt: skip
        safes, backdoor = _safes(chain, runs)
        keys = tmp / "keys"
        people = {"alice": "security-oncall", "sam": "safe-signer", "sue": "safe-signer"}
        extra = (keyed_operators(keys, people)
                 + f"integrations:\n  page: {{base_url: {pagerduty.url}}}\n" + TRIGGER)  # fmt: skip
        variables = {
            "watch": {"chain": "local", "safes": [s.safe.address for s in safes]},
            "exchange_admin_url": exchange.url,
            "exchange_chains": {str(chain.chain_id): "local"},
            "paging": {"treasury": "env:PAGERDUTY_TREASURY_KEY"},
        }
        text = (ROOT / "runbooks" / "multisig-signer-compromise.yaml").read_text()
        ws = make_workspace(tmp / "ws", {"multisig-signer-compromise": text},
                            vars={k: json.dumps(v) for k, v in variables.items()},
                            extra=extra)  # fmt: skip
        env = {**os.environ, "IRCTL_WORKSPACE": str(ws), "IRCTL_KEY_DIR": str(keys),
               "WATCH_SECRET": SECRET, "EXCHANGE_ADMIN_TOKEN": TOKEN,
               "PAGERDUTY_TREASURY_KEY": PD_KEY}  # fmt: skip
        env.pop("IRCTL_DEBUG", None)
        server = subprocess.Popen([IRCTL, "serve", "--port", "0"], cwd=ws, env=env,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        watcher: subprocess.Popen[str] | None = None
        try:
            assert server.stderr is not None
            line = server.stderr.readline()
            if "listening on http://127.0.0.1:" not in line:
                raise SystemExit(f"bench/alert.py: irctl serve did not start: {line}")
            url = line.split("listening on ", 1)[1].split("/alerts/", 1)[0]
            threading.Thread(target=server.stderr.read, daemon=True).start()
            watcher = subprocess.Popen(
                [IRCTL, "watch", "--rpc", chain.url, "--from", str(chain.mine() + 1),
                 "--poll", "0.1", "--alert-url", f"{url}/alerts/chain",
                 "--alert-secret-env", "WATCH_SECRET"],
                cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            position = ws / ".irctl" / "watch-local.json"
            _wait("irctl watch starting", position.exists)
            reader = Workspace.find(ws).reader
            data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
            for number, safe in enumerate(safes):
                time.sleep(0.3)  # the watcher is polling, not just woken
                tx = safe.tx(to=backdoor, data=data, operation=1, safe_tx_gas=45746)
                digest = bytes.fromhex(hashes(tx).safe_tx_hash[2:])
                approve = safe.safe.functions.approveHash(digest)
                safe.wait(approve.transact({"from": safe.owners[0]}))
                _caught_up(chain)
                mined = time.time()  # before the transaction is sent: never late
                safe.wait(safe.safe.functions.execTransaction(
                    tx.to, tx.value, tx.data, tx.operation, tx.safe_tx_gas, tx.base_gas,
                    tx.gas_price, tx.gas_token, tx.refund_receiver,
                ).transact({"from": safe.owners[1], "gas": 1_000_000}))  # fmt: skip
                run_id = _wait("a run", lambda n=number: _nth_run(ws, env, n))
                found = _wait("containment", lambda r=run_id: _contained(reader.events(r)))
                times = detection_times(reader.events(run_id))
                rows.append({
                    "total": found["contained"] - mined,
                    "to_start": found["created"] - mined,
                    "actions": found["actions"],
                    "engine": found["contained"] - found["created"] - found["actions"],
                    "overhead": found["contained"] - mined - found["actions"],
                    "transcript": float(times.get("time_to_contain") or 0.0),
                })  # fmt: skip
            halted, paged = exchange.halted, len(pagerduty.calls("POST", "/v2/enqueue"))
        finally:
            if watcher is not None:
                watcher.terminate()
                watcher.wait(timeout=30)
            server.terminate()
            server.wait(timeout=30)
    if halted != {"local"} or paged != runs:
        raise SystemExit(f"bench/alert.py: expected a halt and {runs} pages: {halted}, {paged}")
    if os.environ.get("BENCH_ALERT_ROWS"):
        print(json.dumps(rows, indent=1), file=sys.stderr)
    return {name: statistics.median(r[name] for r in rows) for name in rows[0]} | {
        "runs": len(rows), "worst_overhead": max(r["overhead"] for r in rows),
    }  # fmt: skip


def _caught_up(chain: Any) -> None:
    """Wait until the clock has passed the head block's timestamp: the local chain stamps the
    blocks it mines in one second a second apart, ahead of the clock, where a real chain's
    blocks are never ahead of the response timed from them."""
    stamp = int(chain.w3.eth.get_block("latest")["timestamp"])
    while time.time() < stamp + 1:
        time.sleep(0.05)


def _nth_run(ws: Path, env: dict[str, str], number: int) -> str | None:
    from tests.helpers import IRCTL

    done = subprocess.run([IRCTL, "runs", "list", "--json"], cwd=ws, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    runs = sorted(json.loads(done.stdout), key=lambda r: str(r.get("created_at", r["run_id"])))
    return str(runs[number]["run_id"]) if len(runs) > number else None


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else RUNS
    with tempfile.TemporaryDirectory() as tmp:
        result = bench_alert(Path(tmp), runs)
    overhead = result["overhead"]
    verdict = "meets" if overhead <= TARGET else "MISSES"
    print(f"Bybit-like delegatecall to containment (multisig-signer-compromise's auto steps), "
          f"median of {result['runs']}: {result['total']:.2f} s from the block mined to the last "
          f"auto step done")  # fmt: skip
    print(f"  irctl overhead {overhead:.2f} s ({verdict} the {TARGET:.0f} s target; worst "
          f"{result['worst_overhead']:.2f} s): watch, the alert and the run's start "
          f"{result['to_start']:.2f} s, the engine {result['engine']:.2f} s")  # fmt: skip
    print(f"  the actions' own calls (exchange halt, PagerDuty): {result['actions']:.2f} s; the "
          f"transcript's time_to_contain (from the block's whole-second timestamp): "
          f"{result['transcript']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
