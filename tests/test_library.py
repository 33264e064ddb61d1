"""The shipped runbooks and drills are data the tests check: each validates and plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import irctl

ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = sorted((ROOT / "runbooks").glob("*.yaml"))


def test_every_runbook_and_drill_validates() -> None:
    result = irctl("validate", "runbooks", "drills", "irctl.yaml", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problems" in result.stdout + result.stderr


def test_the_library_is_not_empty() -> None:
    assert "hot-wallet-compromise" in [p.stem for p in RUNBOOKS]
    assert list((ROOT / "drills").glob("*.yaml"))


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.stem)
def test_every_runbook_plans_with_its_drill_params(path: Path) -> None:
    drills = sorted(  # a tabletop drill's params fit the shipped irctl.yaml; a sandbox's its own
        (d for d in (ROOT / "drills").glob("*.yaml") if f"runbook: {path.stem}\n" in d.read_text()),
        key=lambda d: ("mode: sandbox" in d.read_text(), d.name),
    )
    params: list[str] = []
    for drill in drills[:1]:
        import yaml

        for name, value in (yaml.safe_load(drill.read_text())["params"] or {}).items():
            shown = value if isinstance(value, str) else json.dumps(value)
            params += ["-p", f"{name}={shown}"]
    result = irctl("plan", path.stem, *params, "--json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["runbook"] == path.stem
    assert all(
        step["note"] is None or "digest is final" in step["note"] for step in plan["steps"]
    ), [(s["id"], s["note"]) for s in plan["steps"] if s["note"]]


#: The library's policies that move funds, change signers or resume withdrawals: no
#: break-glass approval may satisfy them, whatever irctl.yaml grants.
NEVER_BREAK_GLASS = {
    ("hot-wallet-compromise", "treasury-two-person"),
    ("multisig-signer-compromise", "healthy-signers"),
    ("customer-api-key-2fa-compromise", "loss-coverage"),
    ("customer-api-key-2fa-compromise", "resume-three-of-four"),
    ("withdrawal-halt-and-resume", "resume-three-of-four"),
    ("bank-run-proof-of-reserves", "treasury-quorum"),
    ("bank-run-proof-of-reserves", "ceo-and-cfo"),
}


def test_policies_that_move_money_refuse_break_glass() -> None:
    from irctl.runbook.loader import load_runbook

    for runbook_id, policy in sorted(NEVER_BREAK_GLASS):
        model = load_runbook(ROOT / "runbooks" / f"{runbook_id}.yaml")
        assert model.approvals[policy].break_glass is False, (runbook_id, policy)
