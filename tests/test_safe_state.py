"""``safe.state`` against the Safe-like multisig (contracts/safe/) on the in-process EVM, read
over JSON-RPC on 127.0.0.1: owners, threshold, nonce and slot 0 from storage, and whether a
Safe transaction executed, from the Safe's own events."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from irctl_evm.safe.hashing import hashes
from irctl_evm.testing import LocalChain

from irctl.errors import ActionError, ActionTimeout
from irctl.testing import context, run_action
from tests.test_safe_snapshot import Deployed, _call, _deploy, chain, deployed  # noqa: F401


def _config(chain: LocalChain) -> dict[str, Any]:
    return {"rpc": {str(chain.chain_id): chain.url}}


def _state(chain: LocalChain, **inputs: Any) -> dict[str, Any]:
    found: dict[str, Any] = run_action(
        "safe.state", {"chain_id": chain.chain_id, **inputs}, context(config=_config(chain))
    )
    return found


def test_reads_owners_threshold_nonce_and_slot_zero(deployed: Deployed, chain: LocalChain) -> None:
    found = _state(chain, safe=deployed.safe.address)
    assert found["owners"] == deployed.owners
    assert (found["threshold"], found["nonce"], found["version"]) == (2, 0, "1.3.0")
    assert found["singleton"] == deployed.singleton
    assert found["fallback_handler"] == deployed.handler
    assert found["modules"] == []
    assert found["calls_agree"] is True
    assert found["warnings"] == []
    assert found["executed"] is None  # no transaction asked about
    assert found["block"] == deployed.w3.eth.block_number


def test_executed_is_false_before_and_true_after_the_transaction_executes(
    deployed: Deployed, chain: LocalChain
) -> None:
    newcomer = deployed.w3.eth.accounts[7]
    data = _call("addOwnerWithThreshold(address,uint256)", ["address", "uint256"], [newcomer, 2])
    tx = deployed.tx(to=deployed.safe.address, data=data)
    digest = hashes(tx).safe_tx_hash
    before = _state(chain, safe=deployed.safe.address, safe_tx_hash=digest, nonce=tx.nonce)
    assert (before["executed"], before["tx_state"], before["execution"]) == (False, "pending", None)

    receipt = deployed.execute(tx, deployed.owners[:2])
    after = _state(chain, safe=deployed.safe.address, safe_tx_hash=digest, nonce=tx.nonce)
    assert (after["executed"], after["execution"]) == (True, "success")
    assert after["tx_state"] == "executed"
    assert after["execution_tx"] == "0x" + bytes(receipt["transactionHash"]).hex()
    assert after["execution_block"] == receipt["blockNumber"]
    assert after["nonce"] == 1
    assert after["owners"] == [newcomer, *deployed.owners]  # a new owner goes first, as in Safe
    # without the nonce, the events alone still tell
    assert _state(chain, safe=deployed.safe.address, safe_tx_hash=digest)["executed"] is True


def test_a_proposal_whose_nonce_a_cancel_used_is_replaced_not_executed(
    deployed: Deployed, chain: LocalChain
) -> None:
    backdoor = _deploy(deployed.w3, "SlotZeroBackdoor")
    malicious = deployed.tx(to=backdoor, operation=1, data=_call(
        "transfer(address,uint256)", ["address", "uint256"], [backdoor, 0]))  # fmt: skip
    cancel = deployed.tx(to=deployed.safe.address)  # the same nonce: 0
    deployed.execute(cancel, deployed.owners[:2])
    digest = hashes(malicious).safe_tx_hash
    found = _state(chain, safe=deployed.safe.address, safe_tx_hash=digest, nonce=0)
    assert (found["executed"], found["tx_state"]) == (False, "replaced")
    with pytest.raises(ActionError) as refused:
        _state(chain, safe=deployed.safe.address, safe_tx_hash=digest, nonce=0,
               require_executed=True, wait="5s", poll="100ms")  # fmt: skip
    assert refused.value.retryable is False  # replaced: waiting cannot help
    assert "can never execute" in refused.value.message
    cancelled = _state(chain, safe=deployed.safe.address, safe_tx_hash=hashes(cancel).safe_tx_hash,
                       nonce=0, require_executed=True)  # fmt: skip
    assert cancelled["tx_state"] == "executed"


def test_after_a_bybit_style_slot_zero_swap_storage_still_tells_the_truth(
    deployed: Deployed, chain: LocalChain
) -> None:
    backdoor = _deploy(deployed.w3, "SlotZeroBackdoor")
    malicious = deployed.tx(to=backdoor, operation=1, safe_tx_gas=45746, data=_call(
        "transfer(address,uint256)", ["address", "uint256"], [backdoor, 0]))  # fmt: skip
    deployed.execute(malicious, deployed.owners[:2])
    found = _state(chain, safe=deployed.safe.address, safe_tx_hash=hashes(malicious).safe_tx_hash,
                   nonce=0)  # fmt: skip
    assert (found["executed"], found["execution"]) == (True, "success")
    assert found["singleton"] == backdoor  # slot 0 is the attacker's contract now
    assert found["owners"] == deployed.owners  # read from storage: the code no longer answers
    assert (found["threshold"], found["nonce"]) == (2, 1)
    assert found["calls_agree"] is None
    assert found["version"] is None
    assert any("slot 0 may not be a Safe" in w for w in found["warnings"])


def test_a_failed_inner_call_is_executed_with_execution_failure(
    deployed: Deployed, chain: LocalChain
) -> None:
    # changeThreshold called on the singleton itself reverts (GS031); with safeTxGas set, the
    # Safe uses the nonce and emits ExecutionFailure instead of reverting
    tx = deployed.tx(to=deployed.singleton, safe_tx_gas=100_000,
                     data=_call("changeThreshold(uint256)", ["uint256"], [1]))  # fmt: skip
    deployed.execute(tx, deployed.owners[:2])
    found = _state(chain, safe=deployed.safe.address, safe_tx_hash=hashes(tx).safe_tx_hash,
                   nonce=tx.nonce)  # fmt: skip
    assert (found["executed"], found["execution"], found["nonce"]) == (True, "failure", 1)


def test_waits_until_the_transaction_executes(deployed: Deployed, chain: LocalChain) -> None:
    tx = deployed.tx(to=deployed.safe.address)
    digest = hashes(tx).safe_tx_hash
    with pytest.raises(ActionTimeout):  # not executed within the wait: a retry may help
        _state(chain, safe=deployed.safe.address, safe_tx_hash=digest, nonce=tx.nonce,
               require_executed=True, wait="300ms", poll="100ms")  # fmt: skip
    signers = threading.Timer(0.8, deployed.execute, (tx, deployed.owners[:2]))
    signers.start()
    try:
        found = _state(chain, safe=deployed.safe.address, safe_tx_hash=digest, nonce=tx.nonce,
                       require_executed=True, wait="30s", poll="100ms")  # fmt: skip
    finally:
        signers.join(10)
    assert found["executed"] is True
    assert found["polls"] > 1


def test_the_event_search_can_be_split_for_nodes_that_cap_ranges(
    deployed: Deployed, chain: LocalChain
) -> None:
    tx = deployed.tx(to=deployed.safe.address)
    receipt = deployed.execute(tx, deployed.owners[:2])
    chain.mine(5)
    digest = hashes(tx).safe_tx_hash
    queries = chain.requests.count("eth_getLogs")
    found = _state(chain, safe=deployed.safe.address, safe_tx_hash=digest, blocks_per_query=2)
    assert chain.requests.count("eth_getLogs") - queries == (found["block"] + 2) // 2
    assert found["execution_block"] == receipt["blockNumber"]
    assert found["execution_confirmations"] == found["block"] - receipt["blockNumber"] + 1
    configured = run_action(
        "safe.state", {"safe": deployed.safe.address, "chain_id": chain.chain_id,
                       "safe_tx_hash": digest},
        context(config={**_config(chain), "blocks_per_query": {str(chain.chain_id): 3}}),
    )  # fmt: skip
    assert configured["execution_tx"] == found["execution_tx"]
    later = _state(chain, safe=deployed.safe.address, safe_tx_hash=digest,
                   from_block=receipt["blockNumber"] + 1)  # fmt: skip
    assert (later["executed"], later["tx_state"]) == (False, "not_executed")  # searched after it


def test_a_drill_reads_nothing(chain: LocalChain) -> None:
    requests = len(chain.requests)
    found = run_action(
        "safe.state",
        {"safe": "0x" + "ab" * 20, "chain_id": 1, "safe_tx_hash": "0x" + "11" * 32, "nonce": "7"},
        context(config={}, mode="tabletop"),
        simulate=True,
    )
    assert found["simulated"] is True
    assert (found["executed"], found["tx_state"], found["tx_nonce"]) == (None, None, 7)
    assert len(chain.requests) == requests


def test_refuses_an_endpoint_of_another_chain_and_bad_inputs(
    deployed: Deployed, chain: LocalChain
) -> None:
    with pytest.raises(ActionError) as refused:
        run_action(
            "safe.state", {"safe": deployed.safe.address, "chain_id": 5},
            context(config={"rpc": {"5": chain.url}}),
        )  # fmt: skip
    assert "serves chain" in refused.value.message
    from irctl_evm.safe.state import state

    for bad in ({"safe_tx_hash": "0x1234"}, {"wait": "5s"}, {"safe": "0x12"}):
        with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
            state.parse({"safe": deployed.safe.address, "chain_id": 1, **bad})
    blank = state.parse({"safe": deployed.safe.address, "chain_id": "1", "safe_tx_hash": "",
                         "nonce": ""})  # fmt: skip
    assert (blank.safe_tx_hash, blank.nonce, blank.chain_id) == (None, None, 1)
