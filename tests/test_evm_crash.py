"""A sweep killed with SIGKILL between signing and broadcast, or just after broadcast, and
resumed with ``irctl resume``: exactly one transaction, every time.

The real ``irctl`` runs in a subprocess against the local chain; the chain holds
``eth_sendRawTransaction`` so the process is killed at exactly that instant.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from irctl_evm.testing import LocalChain, signed_allowlist

from irctl.identity import generate_private_key, public_key_text
from tests.helpers import IRCTL, irctl, make_workspace

RUNBOOK = """\
irctl: 1
kind: runbook
id: sweep
title: Sweep the hot wallet to cold storage
params:
  wallet: {type: string}
  cold: {type: string}
steps:
  - id: sweep-to-cold
    action: evm.sweep
    with: {chain: local, from: "{{ params.wallet }}", to: "{{ params.cold }}", amount: "3"}
  - id: after
    action: evm.balance
    with: {chain: local, address: "{{ params.cold }}"}
"""


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as started:
        yield started


def _workspace(tmp_path: Path, chain: LocalChain) -> tuple[Path, list[str]]:
    hot = chain.new_account(ether=5)
    cold = chain.new_account().address
    keys = {
        name: generate_private_key(tmp_path / "keys" / f"{name}.key") for name in ("bob", "carol")
    }
    oncall = generate_private_key(tmp_path / "keys" / "oncall.key")  # signs the run's start
    config = f"""\
operators:
  oncall: {{roles: [security-oncall], key: "{public_key_text(oncall)}"}}
  bob: {{roles: [treasury], key: "{public_key_text(keys["bob"])}"}}
  carol: {{roles: [treasury], key: "{public_key_text(keys["carol"])}"}}
integrations:
  evm:
    rpc: {{local: "{chain.url}"}}
    signer: {{local: {{kind: keyfile, path: hot.key}}}}
    allowlist: {{path: allowlist.yaml, quorum: 2, roles: [treasury]}}
"""
    ws = make_workspace(tmp_path / "ws", {"sweep": RUNBOOK}, extra=config)
    (ws / "hot.key").write_text(hot.keyfile_text(), encoding="utf-8")
    signed_allowlist(ws / "allowlist.yaml", chain="local", address=cold, signers=keys)
    return ws, ["-p", f"wallet={hot.address}", "-p", f"cold={cold}"]


def _run_id(ws: Path) -> str:
    with sqlite3.connect(f"file:{ws / '.irctl' / 'irctl.db'}?mode=ro", uri=True) as conn:
        (row,) = conn.execute("SELECT id FROM irctl_runs").fetchall()
    return str(row[0])


def _recorded(ws: Path, run_id: str) -> list[dict[str, object]]:
    """The transactions the journal says were signed (ActionContext.record facts)."""
    with sqlite3.connect(f"file:{ws / '.irctl' / 'irctl.db'}?mode=ro", uri=True) as conn:
        lines = [r[0] for r in conn.execute("SELECT line FROM irctl_events WHERE run_id = ?",
                                            (run_id,))]  # fmt: skip
    events = [json.loads(line) for line in lines]
    return [e["data"]["facts"]["tx"] for e in events
            if e["type"] == "step.note" and "facts" in e["data"]]  # fmt: skip


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_around_the_broadcast_never_sends_twice(
    tmp_path: Path, chain: LocalChain, when: str
) -> None:
    ws, params = _workspace(tmp_path, chain)
    hot = params[1].split("=", 1)[1]
    cold = params[3].split("=", 1)[1]
    hold = chain.hold("eth_sendRawTransaction", when=when)
    sent_before = chain.requests.count("eth_sendRawTransaction")
    env = {**os.environ, "IRCTL_WORKSPACE": str(ws)}
    env.pop("IRCTL_DEBUG", None)
    proc = subprocess.Popen(
        [IRCTL, "run", "sweep", *params, "--as", "oncall", "--yes", "--unattended",
         "--key", str(tmp_path / "keys" / "oncall.key")],
        cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert hold.arrived.wait(60), "irctl never reached the broadcast"
        os.kill(proc.pid, signal.SIGKILL)  # signed and recorded; broadcast in flight
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        chain.unhold("eth_sendRawTransaction")
    assert proc.returncode == -signal.SIGKILL
    run_id = _run_id(ws)
    (recorded,) = _recorded(ws, run_id)
    mined = chain.transactions_from(hot)
    assert [t["hash"] for t in mined] == ([] if when == "before" else [recorded["hash"]])

    resumed = irctl("resume", run_id, "--as", "oncall", "--unattended", cwd=ws)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _recorded(ws, run_id) == [recorded]  # never signed again
    mined = chain.transactions_from(hot)
    assert [t["hash"] for t in mined] == [recorded["hash"]]
    assert [t["nonce"] for t in mined] == [0]
    assert chain.balance(cold) == 3 * 10**18
    broadcasts = chain.requests.count("eth_sendRawTransaction") - sent_before
    # before: the lost broadcast, then the same bytes again; after: the probe found it
    assert broadcasts == (2 if when == "before" else 1)
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    steps = {s["step"]: s for s in status["steps"]}
    assert steps["sweep-to-cold"]["outputs"]["tx_hash"] == recorded["hash"]
    assert steps["after"]["outputs"]["balance"] == str(3 * 10**18)
    verified = irctl("transcript", "verify", run_id, cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr


TWO_SWEEPS = RUNBOOK.replace(
    "  - id: after\n",
    """  - id: sweep-rest
    action: evm.sweep
    with: {chain: local, from: "{{ params.wallet }}", to: "{{ params.cold }}", amount: "1"}
  - id: after
""",
)


def _count(ws: Path) -> int:
    db = ws / ".irctl" / "irctl.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM irctl_events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the store is being created


def test_sigkill_at_many_journal_points_then_resume_sends_each_sweep_once(
    tmp_path: Path, chain: LocalChain
) -> None:
    import random
    import time

    rng = random.Random(20261122)
    ws, params = _workspace(tmp_path, chain)
    (ws / "runbooks" / "sweep.yaml").write_text(TWO_SWEEPS, encoding="utf-8")
    hot, cold = params[1].split("=", 1)[1], params[3].split("=", 1)[1]
    env = {**os.environ, "IRCTL_WORKSPACE": str(ws)}
    env.pop("IRCTL_DEBUG", None)
    argv = [IRCTL, "run", "sweep", *params, "--as", "oncall", "--yes", "--unattended",
            "--key", str(tmp_path / "keys" / "oncall.key")]  # fmt: skip
    kills, points = 0, set()
    for _cycle in range(40):
        target = _count(ws) + rng.randint(1, 4)  # a few events further into the journal
        proc = subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if kills < 8 and _count(ws) >= target:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.0005)
        proc.wait(timeout=60)
        points.add(_count(ws))
        if proc.returncode == 0:
            break
        if argv[1] == "run" and _count(ws) > 0:
            argv = [IRCTL, "resume", _run_id(ws), "--as", "oncall", "--unattended"]
    run_id = _run_id(ws)
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    assert status["status"] == "succeeded", status
    recorded = _recorded(ws, run_id)
    mined = chain.transactions_from(hot)
    assert sorted(t["hash"] for t in mined) == sorted(str(r["hash"]) for r in recorded)
    assert [t["nonce"] for t in mined] == [0, 1]
    assert chain.balance(cold) == 4 * 10**18
    print(f"{kills} kills at journal sizes {sorted(points)}")
    assert kills >= 4, f"only {kills} kills at journal sizes {sorted(points)}"
