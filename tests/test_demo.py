"""``irctl demo``: the README's first command, run as a new user would."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import irctl


def test_the_demo_contains_a_hot_wallet_incident_end_to_end(tmp_path: Path) -> None:
    done = irctl("demo", cwd=tmp_path, timeout=300, env={"COLUMNS": "120"})
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown
    flat = " ".join(shown.split())
    # the exchange: withdrawals halted, custody's queue emptied, the remainder swept
    assert "halted chains now: ['ethereum']" in flat
    assert "pending custody transactions for the wallet: 0" in flat
    # AWS, read back from moto's server: signing stopped, the service key replaced
    assert "KMS signing key alias/hot-wallet-ethereum: Disabled" in flat
    assert "desired 0 tasks" in flat
    assert "quarantined (deny-all)" in flat
    assert "Active (new, in Secrets Manager)" in flat
    # the chain: one transaction, everything but the gas in the allowlisted cold wallet
    assert re.search(r"cold wallet 0x[0-9a-fA-F]{40} \(on the signed allowlist\): 249\.99", flat)
    assert "(nonce 0)" in flat
    assert "(nonce 1)" not in flat
    # Slack saw the run, the approval request and the decisions
    assert "Approval needed" in flat
    # the transcript verifies and holds no secret
    assert "verified:" in flat
    assert "in the transcript: never" in flat
    run_id = done.stdout.split()[-1]
    check = irctl("transcript", "verify", run_id, cwd=tmp_path / ".irctl-demo")
    assert check.returncode == 0, check.stdout + check.stderr
