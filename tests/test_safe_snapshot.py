"""``safe.snapshot`` and ``safe.verify_tx`` against a Safe-like multisig (contracts/safe/) on the
in-process EVM, served over JSON-RPC on 127.0.0.1 — including a replay of the Bybit attack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from irctl_evm.safe.decoding import selector
from irctl_evm.safe.hashing import hashes
from irctl_evm.safe.registry import load as load_registry
from irctl_evm.safe.snapshot import snapshot
from irctl_evm.safe.tx import ZERO_ADDRESS, SafeTx, from_mapping
from irctl_evm.safe.verify import verify
from irctl_evm.testing import LocalChain

from irctl.errors import ActionError
from irctl.testing import context, run_action
from tests.helpers import irctl, make_workspace

COMPILED = json.loads(
    (Path(__file__).parent.parent / "contracts" / "safe" / "SafeLike.json").read_text()
)["contracts"]


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as running:
        yield running


@dataclass
class Deployed:
    w3: Any
    safe: Any  # the proxy, with the singleton's ABI
    singleton: str
    owners: list[str]
    handler: str
    chain_id: int

    def tx(self, **fields: Any) -> SafeTx:
        nonce = int(self.safe.functions.nonce().call())
        fixed = {"safe": self.safe.address, "chain_id": self.chain_id, "version": "1.3.0"}
        return from_mapping({**fixed, "nonce": nonce, **fields}, source="test")

    def execute(self, tx: SafeTx, approvers: list[str]) -> Any:
        """Owners approve the hash irctl computed; the last one executes."""
        digest = bytes.fromhex(hashes(tx).safe_tx_hash[2:])
        for owner in approvers[:-1]:
            self.wait(self.safe.functions.approveHash(digest).transact({"from": owner}))
        return self.wait(self.safe.functions.execTransaction(
            tx.to, tx.value, tx.data, tx.operation, tx.safe_tx_gas, tx.base_gas, tx.gas_price,
            tx.gas_token, tx.refund_receiver,
        ).transact({"from": approvers[-1], "gas": 1_000_000}))  # fmt: skip

    def wait(self, sent: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(sent)
        assert receipt["status"] == 1
        return receipt

    def registry(self, path: Path, **changes: Any) -> Path:
        entry = {"name": "treasury-cold", "chain_id": self.chain_id, "address": self.safe.address,
                 "version": "1.3.0", "singleton": self.singleton, "owners": self.owners,
                 "threshold": 2, "fallback_handler": self.handler, **changes}  # fmt: skip
        path.write_text(json.dumps({"irctl": 1, "kind": "safe-registry", "safes": [entry]}))
        return path


def _deploy(w3: Any, name: str, *args: Any) -> str:
    factory = w3.eth.contract(abi=COMPILED[name]["abi"], bytecode=COMPILED[name]["bytecode"])
    sent = factory.constructor(*args).transact({"from": w3.eth.accounts[0]})
    return str(w3.eth.wait_for_transaction_receipt(sent)["contractAddress"])


@pytest.fixture
def deployed(chain: LocalChain) -> Deployed:
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(chain.url))  # through the JSON-RPC server, as irctl reads it
    accounts = list(w3.eth.accounts)
    singleton = _deploy(w3, "SafeLike")
    proxy = _deploy(w3, "SafeLikeProxy", singleton)
    safe = w3.eth.contract(address=proxy, abi=COMPILED["SafeLike"]["abi"])
    owners, handler = accounts[1:4], accounts[9]
    made = Deployed(w3, safe, singleton, owners, handler, int(w3.eth.chain_id))
    made.wait(safe.functions.setup(owners, 2, handler).transact({"from": accounts[0]}))
    made.wait(w3.eth.send_transaction({"from": accounts[0], "to": proxy, "value": 5 * 10**18}))
    return made


def _call(signature: str, types: list[str], values: list[Any]) -> str:
    return "0x" + (selector(signature) + encode(types, values)).hex()


def test_the_contract_hashes_exactly_as_irctl_does(deployed: Deployed) -> None:
    tx = deployed.tx(to=deployed.owners[0], value=7, operation=1, safe_tx_gas=3, base_gas=4,
                     data=_call("transfer(address,uint256)", ["address", "uint256"],
                                [deployed.owners[0], 1]))  # fmt: skip
    on_chain = deployed.safe.functions.getTransactionHash(
        tx.to, tx.value, tx.data, tx.operation, tx.safe_tx_gas, tx.base_gas, tx.gas_price,
        tx.gas_token, tx.refund_receiver, tx.nonce,
    ).call()  # fmt: skip
    ours = hashes(tx)
    assert "0x" + bytes(on_chain).hex() == ours.safe_tx_hash
    assert "0x" + bytes(deployed.safe.functions.domainSeparator().call()).hex() == ours.domain_hash


def test_snapshot_of_a_healthy_safe_matches_registry(deployed: Deployed, tmp_path: Path) -> None:
    registry = load_registry(deployed.registry(tmp_path / "safe-registry.yaml"))
    entry = registry.find(deployed.safe.address)
    found = snapshot(deployed.w3, deployed.safe.address, entry)
    assert found.flags == ()
    assert found.singleton == deployed.singleton
    assert list(found.owners or ()) == deployed.owners
    assert (found.threshold, found.nonce, found.version) == (2, 0, "1.3.0")
    assert found.guard == ZERO_ADDRESS
    assert found.fallback_handler == deployed.handler
    assert found.modules == ()


def test_snapshot_flags_owner_guard_and_module_changes(deployed: Deployed, tmp_path: Path) -> None:
    newcomer = deployed.w3.eth.accounts[7]
    for data in (
        _call("addOwnerWithThreshold(address,uint256)", ["address", "uint256"], [newcomer, 1]),
        _call("setGuard(address)", ["address"], [newcomer]),
        _call("enableModule(address)", ["address"], [newcomer]),
    ):
        tx = deployed.tx(to=deployed.safe.address, data=data)
        assert verify(tx).flags  # each one is flagged before signing, too
        deployed.execute(tx, deployed.owners[:2])
    entry = load_registry(deployed.registry(tmp_path / "r.yaml")).find(deployed.safe.address)
    found = snapshot(deployed.w3, deployed.safe.address, entry)
    assert sorted({f.code for f in found.flags}) == [
        "guard_mismatch", "modules_mismatch", "owners_mismatch", "threshold_mismatch",
    ]  # fmt: skip
    owners = next(f for f in found.flags if f.code == "owners_mismatch")
    assert f"added {newcomer}" in owners.message
    assert found.nonce == 3


def test_bybit_replay(deployed: Deployed, chain: LocalChain, tmp_path: Path) -> None:
    """A delegatecall disguised as a zero-value ERC-20 transfer rewrites slot 0; irctl flags
    the proposal before signing, and the snapshot finds the swapped master copy after."""
    w3 = deployed.w3
    backdoor = _deploy(w3, "SlotZeroBackdoor")
    attacker = w3.eth.accounts[8]
    data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
    proposal = deployed.tx(to=backdoor, data=data, operation=1, safe_tx_gas=45746)

    # 1. the proposal, checked by `irctl safe verify` as a signer would, fails with exit 1
    ws = make_workspace(tmp_path / "ws")
    registry_path = deployed.registry(ws / "safe-registry.yaml")
    done = irctl("safe", "verify", "--safe", proposal.safe, "--to", backdoor,
                 "--operation", "1", "--data", data, "--safe-tx-gas", "45746",
                 "--nonce", str(proposal.nonce), "--json", cwd=ws)  # fmt: skip
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["flag_codes"] == ["delegatecall_untrusted"]
    assert result["chain_id"] == chain.chain_id  # from the registry
    assert result["safe_tx_hash"] == hashes(proposal).safe_tx_hash

    # ... and the same check as a runbook step fails the step (deny by default)
    with pytest.raises(ActionError, match="blocked by flag\\(s\\) delegatecall_untrusted"):
        run_action("safe.verify_tx", {"safe": proposal.safe, "to": backdoor, "operation": 1,
                                      "data": data, "nonce": proposal.nonce,
                                      "registry": str(registry_path)})  # fmt: skip

    # 2. signers who did not check sign it anyway: the Safe now delegates to the backdoor
    deployed.execute(proposal, deployed.owners[:2])
    slot0 = bytes(w3.eth.get_storage_at(deployed.safe.address, 0))[-20:]
    assert "0x" + slot0.hex() == backdoor.lower()
    before = w3.eth.get_balance(attacker)
    sweep = w3.eth.contract(address=deployed.safe.address, abi=COMPILED["SlotZeroBackdoor"]["abi"])
    deployed.wait(sweep.functions.sweepETH(attacker).transact({"from": attacker}))
    assert w3.eth.get_balance(deployed.safe.address) == 0
    assert w3.eth.get_balance(attacker) > before

    # 3. the snapshot step finds the swapped master copy and fails
    config = {"rpc": {str(chain.chain_id): chain.url}}
    with pytest.raises(ActionError) as caught:
        run_action("safe.snapshot", {"registry": str(registry_path)}, context(config=config))
    assert "singleton_mismatch" in caught.value.message
    assert backdoor in caught.value.message
    assert "unreadable" in caught.value.message  # getOwners() now reaches the backdoor


def test_snapshot_action_outputs_and_policy(
    deployed: Deployed, chain: LocalChain, tmp_path: Path
) -> None:
    registry_path = deployed.registry(tmp_path / "reg.yaml")
    ctx = context(config={"rpc": {str(chain.chain_id): chain.url}, "registry": str(registry_path)})
    outputs = run_action("safe.snapshot", {"chain_id": chain.chain_id}, ctx)
    assert outputs["flag_codes"] == []
    assert outputs["safes"][0]["name"] == "treasury-cold"
    assert outputs["safes"][0]["singleton"] == deployed.singleton
    # the registry says 3-of-3: a mismatch; blocking only on singleton changes lets it pass
    strict = deployed.registry(tmp_path / "strict.yaml", threshold=3)
    relaxed = run_action("safe.snapshot", {"registry": str(strict),
                                           "block_on": ["singleton_mismatch"]}, ctx)  # fmt: skip
    assert relaxed["flag_codes"] == ["threshold_mismatch"]
    assert relaxed["blocking"] == []
    with pytest.raises(ActionError, match="threshold_mismatch"):
        run_action("safe.snapshot", {"registry": str(strict)}, ctx)
    with pytest.raises(ActionError, match="no RPC endpoint for chain"):
        run_action("safe.snapshot", {"registry": str(strict)}, context())


def test_verify_tx_action_policy(deployed: Deployed, tmp_path: Path) -> None:
    fields = {"safe": deployed.safe.address, "chain_id": deployed.chain_id, "version": "1.3.0",
              "nonce": 0, "to": deployed.safe.address,
              "data": _call("changeThreshold(uint256)", ["uint256"], [1])}  # fmt: skip
    with pytest.raises(ActionError, match="threshold_change"):
        run_action("safe.verify_tx", fields)
    allowed = run_action("safe.verify_tx", {**fields, "block_on": ["delegatecall_untrusted"]})
    assert allowed["flag_codes"] == ["threshold_change"]
    assert allowed["blocking"] == []
    assert allowed["safe_tx_hash"] == hashes(deployed.tx(**{k: v for k, v in fields.items()
        if k not in {"safe", "chain_id", "version", "nonce"}})).safe_tx_hash  # fmt: skip
    quiet = run_action("safe.verify_tx", {**fields, "fail_on_flags": False})
    assert quiet["blocking"] == []
    with pytest.raises(ActionError):
        run_action("safe.verify_tx", {**fields, "fail_on_flags": True, "block_on": []})
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="did you mean 'owner_change'"):
        run_action("safe.verify_tx", {**fields, "block_on": ["owner_changes"]})
    simulated = run_action("safe.verify_tx", fields, simulate=True)
    assert simulated["simulated"] is True
    assert simulated["would"] == "fail the step: threshold_change"


def test_unregistered_safe_is_a_flag_and_the_node_url_stays_secret(
    deployed: Deployed, chain: LocalChain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_url = chain.url + "/?apikey=s3cr3t-node-key"
    monkeypatch.setenv("SAFE_TEST_RPC", secret_url)
    empty = tmp_path / "empty.yaml"
    empty.write_text("irctl: 1\nkind: safe-registry\nsafes: []\n")
    ctx = context(config={"rpc": {str(chain.chain_id): "env:SAFE_TEST_RPC"}})
    inputs = {"safe": deployed.safe.address, "chain_id": chain.chain_id, "registry": str(empty)}
    with pytest.raises(ActionError, match="not_in_registry"):
        run_action("safe.snapshot", inputs, ctx)
    seen = run_action("safe.snapshot", {**inputs, "fail_on_flags": False}, ctx)
    assert seen["flag_codes"] == ["not_in_registry"]
    assert seen["safes"][0]["owners"] == deployed.owners
    assert "s3cr3t" not in json.dumps(seen) + "\n".join(ctx.notes)
    with pytest.raises(ActionError, match="give its chain id"):
        run_action("safe.snapshot", {"safe": deployed.safe.address, "registry": str(empty)}, ctx)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"threshold": 4}, "threshold 4 is not between 1 and 3"),
        ({"owners": []}, "owners must be a non-empty list"),
        ({"colour": "red"}, "unknown field(s) colour"),
        ({"version": "9.9.9"}, "unknown Safe version"),
        ({"singleton": "0x12"}, "singleton: '0x12' is not an address"),
    ],
)
def test_bad_registry_entries_are_named(
    deployed: Deployed, tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    from irctl_evm.safe.tx import SafeInputError

    path = deployed.registry(tmp_path / "bad.yaml", **entry)
    with pytest.raises(SafeInputError) as caught:
        load_registry(path)
    assert message in str(caught.value)
    assert "safes[0]" in str(caught.value)


def test_cli_snapshot_and_verify_read_the_chain(
    deployed: Deployed, chain: LocalChain, tmp_path: Path
) -> None:
    import socket

    extra = f"integrations:\n  safe:\n    rpc: {{'{chain.chain_id}': '{chain.url}'}}\n"
    ws = make_workspace(tmp_path / "ws", extra=extra)
    deployed.registry(ws / "safe-registry.yaml")
    done = irctl("safe", "snapshot", cwd=ws)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "treasury-cold" in done.stdout
    assert "matches the registry" in done.stdout
    deployed.registry(ws / "safe-registry.yaml", threshold=3)
    done = irctl("safe", "snapshot", deployed.safe.address, "--json", cwd=ws)
    assert done.returncode == 1
    (found,) = json.loads(done.stdout)
    assert found["flag_codes"] == ["threshold_mismatch"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    done = irctl("safe", "snapshot", "--rpc", closed, cwd=ws)
    assert done.returncode == 2
    assert "cannot read the Safes from the RPC endpoint" in done.stderr
    assert "Traceback" not in done.stderr

    # verify: the chain id and VERSION() read from the node, not taken from anyone's word
    empty = make_workspace(tmp_path / "bare")
    args = ["safe", "verify", "--safe", deployed.safe.address, "--to", deployed.safe.address,
            "--nonce", "0", "--rpc", chain.url]  # fmt: skip
    done = irctl(*args, "--json", cwd=empty)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["chain_id"], result["version"]) == (chain.chain_id, "1.3.0")
    done = irctl(*args, "--version", "1.2.0", cwd=empty)
    assert done.returncode == 2
    assert "--version 1.2.0: the Safe says 1.3.0" in done.stderr
    done = irctl("safe", "verify", "--safe", deployed.owners[0], "--to", deployed.safe.address,
                 "--nonce", "0", "--rpc", chain.url, cwd=empty)  # fmt: skip
    assert done.returncode == 2
    assert "does not answer VERSION()" in done.stderr
