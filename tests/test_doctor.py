"""From `irctl init --library` to planning the hot-wallet runbook, as the README says.

Exactly the commands a new user types, on a fresh workspace: init with the library, doctor
(what is left to fill in), the operators and the secret filled in, doctor again (ready), plan.
"""

from __future__ import annotations

import json
from pathlib import Path

from irctl.identity import generate_private_key, public_key_text
from tests.helpers import irctl

ROLES = [
    "ceo", "cfo", "cfo-delegate", "ciso", "cloud-admin", "comms-lead", "compliance", "coo",
    "cto", "legal", "ops-lead", "safe-signer", "security-lead", "security-oncall", "sre-lead",
    "treasury",
]  # fmt: skip


def test_init_library_doctor_then_plan(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    made = irctl("init", str(ws), "--library", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "irctl doctor" in made.stderr
    assert len(list((ws / "runbooks").glob("*.yaml"))) == 10
    assert len(list((ws / "drills").glob("*.yaml"))) >= 10
    checked = irctl("validate", cwd=ws)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # valid as copied
    doctor = irctl("doctor", "--offline", "--json", cwd=ws)
    assert doctor.returncode == 1
    found = json.loads(doctor.stdout)
    assert found[0]["area"] == "operators"  # the first thing to do
    assert any(f["area"] == "secrets" and "EXCHANGE_ADMIN_TOKEN" in f["fix"] for f in found)
    config = (ws / "irctl.yaml").read_text()
    for role in ROLES:
        assert f"roles: [{role}]" in config, role  # the skeleton names every role needed
    lines = ["operators:"]
    for role in ROLES:
        for n in range(3):
            key = generate_private_key(tmp_path / "keys" / f"{role}-{n}.key")
            lines.append(f'  {role}-{n}: {{roles: [{role}], key: "{public_key_text(key)}"}}')
    (ws / "irctl.yaml").write_text(config.replace("operators: {}", "\n".join(lines)))
    env = {"EXCHANGE_ADMIN_TOKEN": "token-from-the-vault"}
    doctor = irctl("doctor", "--offline", cwd=ws, env=env)
    assert doctor.returncode == 0, doctor.stdout
    assert "ready: nothing to fix" in doctor.stdout
    assert "token-from-the-vault" not in doctor.stdout + doctor.stderr
    planned = irctl("plan", "hot-wallet-compromise", "-p", "chain=ethereum",
                    "-p", "wallet=0x00000000000000000000000000000000000000aa", cwd=ws, env=env)
    assert planned.returncode == 0, planned.stderr
    assert "halt-withdrawals" in planned.stdout
