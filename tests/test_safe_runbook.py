"""The multisig-signer-compromise runbook end to end in a sandbox (the Safe-like multisig on the
in-process EVM): the cancellation and rotation, each read back on chain, and the branch for a
proposal that has already executed; and the Bybit replay drill's proposal caught in a tabletop
run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from irctl_comms.testing import PagerDutyStandIn
from irctl_evm.safe.tx import from_mapping
from irctl_evm.testing import LocalChain

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.state import RunState
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from irctl.standins.exchange_admin import ExchangeAdminStub
from tests.helpers import irctl
from tests.test_safe_snapshot import Deployed, chain, deployed  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
ROLES = {"oncall": ["security-oncall"], "sam": ["safe-signer"], "sue": ["safe-signer"]}
TOKEN = "admin-token-safe-runbook"
PD_KEY = "R0UTINGKEYTREASURYSAFE0000000000"


class Desks(NamedTuple):
    """The exchange admin API that halts withdrawals and PagerDuty that pages treasury."""

    exchange: ExchangeAdminStub
    pagerduty: PagerDutyStandIn


@pytest.fixture
def desks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Desks]:
    monkeypatch.setenv("SANDBOX_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("SANDBOX_PD_TREASURY", PD_KEY)
    with ExchangeAdminStub(TOKEN) as exchange, PagerDutyStandIn(routing_keys=[PD_KEY]) as pd:
        yield Desks(exchange, pd)


class Team:
    def __init__(self, tmp_path: Path, safe_config: dict[str, Any], desks: Desks) -> None:
        self.keys: dict[str, Ed25519PrivateKey] = {
            name: generate_private_key(tmp_path / f"{name}.key") for name in ROLES
        }
        chains = dict.fromkeys(safe_config.get("rpc", {}), "local")  # the exchange's names
        config = Config.model_validate({
            "operators": {name: {"roles": roles, "key": public_key_text(self.keys[name])}
                          for name, roles in ROLES.items()},
            "integrations": {"safe": safe_config, "page": {"base_url": desks.pagerduty.url}},
            "secrets": {"admin_token": "env:SANDBOX_ADMIN_TOKEN"},  # never production's
            "vars": {"exchange_admin_url": desks.exchange.url,
                     "exchange_chains": {"1": "ethereum", **chains},
                     "paging": {"treasury": "env:SANDBOX_PD_TREASURY"}},
        })  # fmt: skip
        self.store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
        installation = generate_private_key(tmp_path / "installation.key")
        self.engine = Engine(self.store, config=config, signing_key=installation)

    def start(self, params: dict[str, Any], mode: str = "sandbox") -> str:
        text = (ROOT / "runbooks" / "multisig-signer-compromise.yaml").read_text()
        parsed = load_runbook_text(text, "multisig-signer-compromise.yaml")
        given = {k: str(v) for k, v in params.items()}
        return self.engine.create_run(parsed, text, parse_params(parsed, given),
                                      initiator="oncall", mode=mode)  # fmt: skip

    def until(self, run_id: str) -> tuple[RunState, str, str]:
        state = self.engine.execute(run_id)
        assert state.status == "waiting", [
            (s.key, s.status, s.error) for s in state.steps.values() if s.error
        ]
        (step,) = [s for s in state.steps.values() if s.status == "waiting"]
        return state, step.key, str(step.waiting_for)

    def answer(self, run_id: str, key: str) -> None:
        self.engine.answer(run_id, key, "done", operator="oncall", private_key=self.keys["oncall"])

    def approve(self, run_id: str, key: str) -> None:
        for who in ("sam", "sue"):
            Engine(self.store).decide(
                run_id, key, operator=who, approve=True, reason="hash checked",
                private_key=self.keys[who],
            )  # fmt: skip


def test_runbook_cancels_a_malicious_proposal_and_rotates_an_owner(
    deployed: Deployed,
    chain: LocalChain,
    tmp_path: Path,
    desks: Desks,
) -> None:
    from tests.test_safe_snapshot import _call, _deploy

    w3 = deployed.w3
    backdoor = _deploy(w3, "SlotZeroBackdoor")
    bad_data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
    registry = deployed.registry(tmp_path / "safe-registry.yaml")
    rpc = {str(chain.chain_id): chain.url}
    team = Team(tmp_path, {"rpc": rpc, "registry": str(registry)}, desks)
    safe = deployed.safe.address
    compromised, new_owner = deployed.owners[1], w3.eth.accounts[6]
    run_id = team.start({
        "safe": safe, "chain_id": chain.chain_id, "nonce": 0, "proposal_to": backdoor,
        "proposal_data": bad_data, "proposal_operation": 1,
        "compromised_owner": compromised, "prev_owner": deployed.owners[0],
        "new_owner": new_owner,
    })  # fmt: skip

    state, key, why = team.until(run_id)
    assert (key, why) == ("signers-acknowledge", "answer")
    # contained before any person: withdrawals halted on the Safe's chain, treasury paged once
    assert desks.exchange.halted == {"local"}
    assert state.steps["halt-withdrawals"].outputs["json"]["halted"] is True
    assert [(a.dedup_key, a.events) for a in desks.pagerduty.alerts] == [(run_id, ["trigger"])]
    team.answer(run_id, key)
    state, key, why = team.until(run_id)
    assert (key, why) == ("independent-check", "answer")
    found = state.steps["verify-proposal"].outputs
    assert found["flag_codes"] == ["delegatecall_untrusted"]
    assert "delegatecall_untrusted" in state.steps["independent-check"].prompt
    read = state.steps["proposal-state"].outputs  # read on chain: not executed, still pending
    assert (read["executed"], read["tx_state"]) == (False, "pending")
    assert read["safe_tx_hash"] == found["safe_tx_hash"]
    assert (read["owners"], read["threshold"], read["nonce"]) == (deployed.owners, 2, 0)
    assert read["singleton"] == deployed.singleton
    for skipped in ("already-executed", "executed-response"):
        assert state.steps[skipped].status == "skipped"
    team.answer(run_id, key)

    state, key, why = team.until(run_id)
    assert (key, why) == ("sign-cancel", "approval")
    assert state.steps["snapshot-safes"].outputs["flag_codes"] == []
    cancel = state.steps["verify-cancel"].outputs
    assert cancel["flag_codes"] == []
    assert cancel["nonce"] == 0
    team.approve(run_id, key)
    _, key, why = team.until(run_id)
    assert (key, why) == ("sign-cancel", "answer")
    # the healthy signers approve the hash the run showed them; the contract agrees with it
    deployed.execute(from_mapping({**cancel, "chain_id": chain.chain_id}, source="run"),
                     [deployed.owners[0], deployed.owners[2]])  # fmt: skip
    assert deployed.safe.functions.nonce().call() == 1  # the malicious nonce 0 is used up
    team.answer(run_id, key)

    state, key, why = team.until(run_id)
    assert (key, why) == ("rotate-owner", "approval")
    cancelled = state.steps["cancel-executed"].outputs  # the chain says so, not the answer
    assert (cancelled["executed"], cancelled["execution"]) == (True, "success")
    assert cancelled["safe_tx_hash"] == cancel["safe_tx_hash"]
    rotation = state.steps["verify-rotation"].outputs
    assert rotation["flag_codes"] == ["owner_change"]
    expected = {"prev_owner": deployed.owners[0], "old_owner": compromised, "new_owner": new_owner}
    assert rotation["call"]["args"] == expected
    team.approve(run_id, key)
    _, key, _ = team.until(run_id)
    deployed.execute(from_mapping({**rotation, "chain_id": chain.chain_id}, source="run"),
                     [deployed.owners[0], deployed.owners[2]])  # fmt: skip
    assert new_owner in deployed.safe.functions.getOwners().call()
    assert compromised not in deployed.safe.functions.getOwners().call()
    team.answer(run_id, key)

    state, key, _ = team.until(run_id)
    assert key == "guard-siblings"
    rotated = state.steps["rotation-executed"].outputs
    assert rotated["executed"] is True
    assert new_owner in rotated["owners"]
    assert compromised not in rotated["owners"]
    team.answer(run_id, key)
    state = team.engine.execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert "is cancelled" in state.steps["all-clear"].outputs["message"]
    team.store.close()


def test_a_proposal_that_already_executed_takes_the_damage_branch(
    deployed: Deployed,
    chain: LocalChain,
    tmp_path: Path,
    desks: Desks,
) -> None:
    """Bybit: the disguised delegatecall executed and swapped slot 0 before anyone noticed."""
    from tests.test_safe_snapshot import _call, _deploy

    w3 = deployed.w3
    backdoor = _deploy(w3, "SlotZeroBackdoor")
    bad_data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
    malicious = deployed.tx(to=backdoor, data=bad_data, operation=1, safe_tx_gas=45746)
    executed = deployed.execute(malicious, deployed.owners[:2])
    assert deployed.w3.eth.get_storage_at(deployed.safe.address, 0)[-20:] == bytes.fromhex(
        backdoor[2:]
    )  # slot 0 is the attacker's contract
    registry = deployed.registry(tmp_path / "safe-registry.yaml")
    rpc = {str(chain.chain_id): chain.url}
    team = Team(tmp_path, {"rpc": rpc, "registry": str(registry)}, desks)
    run_id = team.start({
        "safe": deployed.safe.address, "chain_id": chain.chain_id, "nonce": 0,
        "proposal_to": backdoor, "proposal_data": bad_data, "proposal_operation": 1,
        "proposal_safe_tx_gas": 45746, "compromised_owner": deployed.owners[1],
        "prev_owner": deployed.owners[0], "new_owner": w3.eth.accounts[6],
    })  # fmt: skip
    _, key, _ = team.until(run_id)
    team.answer(run_id, key)  # signers-acknowledge

    state, key, why = team.until(run_id)
    assert (key, why) == ("executed-response", "answer")
    read = state.steps["proposal-state"].outputs
    assert (read["executed"], read["execution"], read["tx_state"]) == (True, "success", "executed")
    assert read["execution_tx"] == "0x" + bytes(executed["transactionHash"]).hex()
    assert read["singleton"] == backdoor
    assert read["owners"] == deployed.owners  # from storage: the attacker's code answers nothing
    assert read["calls_agree"] is None
    alarm = state.steps["already-executed"].outputs["message"]
    assert "ALREADY EXECUTED" in alarm
    assert read["execution_tx"] in alarm
    assert backdoor in alarm
    assert str(executed["blockNumber"]) in (state.steps["executed-response"].prompt or "")
    team.answer(run_id, key)

    state, key, _ = team.until(run_id)
    assert key == "guard-siblings"
    assert state.steps["snapshot-safes"].status == "failed"  # singleton_mismatch, and it goes on
    assert "singleton_mismatch" in (state.steps["snapshot-safes"].error or "")
    for skipped in ("independent-check", "verify-cancel", "sign-cancel", "cancel-executed",
                    "verify-rotation", "rotate-owner", "rotation-executed"):  # fmt: skip
        assert state.steps[skipped].status == "skipped", skipped
    team.answer(run_id, key)
    state = team.engine.execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert "EXECUTED in " + read["execution_tx"] in state.steps["all-clear"].outputs["message"]
    team.store.close()


def test_a_cancel_that_lost_the_race_to_the_malicious_proposal_fails_the_run(
    deployed: Deployed,
    chain: LocalChain,
    tmp_path: Path,
    desks: Desks,
) -> None:
    """The proposal executes between the read and the cancel: the cancel can never execute."""
    from tests.test_safe_snapshot import _call, _deploy

    backdoor = _deploy(deployed.w3, "SlotZeroBackdoor")
    bad_data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
    team = Team(tmp_path, {"rpc": {str(chain.chain_id): chain.url}}, desks)
    run_id = team.start({
        "safe": deployed.safe.address, "chain_id": chain.chain_id, "nonce": 0,
        "safe_version": "1.3.0", "proposal_to": backdoor, "proposal_data": bad_data,
        "proposal_operation": 1,
    })  # fmt: skip
    for expected in ("signers-acknowledge", "independent-check"):
        _, key, _ = team.until(run_id)
        assert key == expected
        team.answer(run_id, key)
    _, key, why = team.until(run_id)
    assert (key, why) == ("sign-cancel", "approval")
    team.approve(run_id, key)
    _, key, why = team.until(run_id)
    assert (key, why) == ("sign-cancel", "answer")
    deployed.execute(deployed.tx(to=backdoor, data=bad_data, operation=1), deployed.owners[:2])
    team.answer(run_id, key)
    state = team.engine.execute(run_id)
    assert state.status == "failed"
    assert "can never execute" in (state.steps["cancel-executed"].error or "")
    assert state.steps["page-leads"].status == "succeeded"
    team.store.close()


def test_bybit_replay_drill_flags_the_disguised_proposal(tmp_path: Path, desks: Desks) -> None:
    drill = yaml.safe_load((ROOT / "drills" / "bybit-replay.yaml").read_text())
    team = Team(tmp_path, {}, desks)
    run_id = team.start(drill["params"], mode="tabletop")
    _, key, _ = team.until(run_id)
    team.answer(run_id, key)
    state, key, _ = team.until(run_id)
    assert key == "independent-check"
    found = state.steps["verify-proposal"].outputs
    assert found["simulated"] is True  # a drill reaches no chain or service ...
    assert found["flag_codes"] == ["delegatecall_untrusted"]  # ... but the check is real
    assert found["version"] == "1.1.1"
    assert found["operation"] == 1
    team.store.close()


def test_shipped_files_validate() -> None:
    done = irctl("validate", "runbooks/multisig-signer-compromise.yaml", "drills/bybit-replay.yaml",
                 "drills/quarterly-multisig-signer-compromise.yaml", cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 files checked, 0 problems" in done.stdout + done.stderr


def test_the_drill_inject_command_flags_the_proposal(tmp_path: Path) -> None:
    drill = yaml.safe_load((ROOT / "drills" / "bybit-replay.yaml").read_text())
    command = " ".join(drill["injects"][1]["say"].split())
    args = command.split("irctl safe verify ", 1)[1].split(" —", 1)[0].split()
    (tmp_path / "irctl.yaml").write_text("{}\n")
    done = irctl("safe", "verify", *args, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["flag_codes"] == ["delegatecall_untrusted"]
