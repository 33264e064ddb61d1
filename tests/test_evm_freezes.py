"""``evm.token_frozen`` against stablecoins whose issuer freezes addresses (contracts/
Stablecoins.sol) on the in-process EVM, read over JSON-RPC on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from irctl_evm.freezes import token_frozen
from irctl_evm.testing import LocalChain

from irctl.errors import ActionError, ActionTimeout
from irctl.testing import context, run_action


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as running:
        yield running


def _frozen(chain: LocalChain, token: str, address: str, **more: Any) -> dict[str, Any]:
    found: dict[str, Any] = run_action(
        "evm.token_frozen",
        {"chain": "local", "token": token, "address": address, **more},
        context(config={"rpc": {"local": chain.url}}),
    )
    return found


@pytest.mark.parametrize(
    ("issuer", "method"),
    [("tether", "isBlackListed"), ("circle", "isBlacklisted"), ("paxos", "isFrozen")],
)
def test_reads_the_freeze_both_ways_under_the_issuers_own_name(
    chain: LocalChain, issuer: str, method: str
) -> None:
    attacker = chain.new_account(ether=1).address
    token = chain.deploy_stablecoin(issuer, supply=10**12, holder=attacker)
    before = _frozen(chain, token, attacker)
    assert (before["frozen"], before["method"], before["polls"]) == (False, method, 1)
    assert before["block"] == chain.w3.eth.block_number

    chain.freeze(token, attacker)
    after = _frozen(chain, token, attacker)
    assert (after["frozen"], after["method"]) == (True, method)
    assert after["block"] == before["block"] + 1
    # the freeze is real: the attacker can no longer move the tokens
    move = chain.contract(_contract(issuer), token).functions.transfer(chain.accounts[1], 1)
    with pytest.raises(Exception, match="revert"):
        move.call({"from": attacker}, block_identifier=after["block"])
    assert move.call({"from": attacker}, block_identifier=before["block"]) is True

    # read at the block before the freeze, it was not frozen yet
    assert _frozen(chain, token, attacker, block=before["block"])["frozen"] is False
    chain.freeze(token, attacker, frozen=False)
    assert _frozen(chain, token, attacker, method=method)["frozen"] is False


def _contract(issuer: str) -> str:
    from irctl_evm.testing import STABLECOINS

    return STABLECOINS[issuer][0]


def test_waits_until_the_issuer_freezes_mid_wait(chain: LocalChain) -> None:
    attacker = chain.new_account().address
    token = chain.deploy_stablecoin("tether")
    issuer = threading.Timer(0.8, chain.freeze, (token, attacker))
    issuer.start()
    try:
        found = _frozen(chain, token, attacker, wait="30s", poll="100ms", require_frozen=True)
    finally:
        issuer.join(10)
    assert found["frozen"] is True
    assert found["polls"] > 1
    assert found["block"] == chain.w3.eth.block_number


def test_not_frozen_is_an_answer_unless_required(chain: LocalChain) -> None:
    attacker = chain.new_account().address
    token = chain.deploy_stablecoin("circle")
    found = _frozen(chain, token, attacker, wait="300ms", poll="100ms")
    assert found["frozen"] is False
    assert found["polls"] >= 2
    with pytest.raises(ActionTimeout) as refused:
        _frozen(chain, token, attacker, wait="200ms", poll="100ms", require_frozen=True)
    assert refused.value.retryable is True
    assert "not frozen" in refused.value.message


def test_a_token_without_an_issuer_freeze_and_an_address_without_code_are_refused(
    chain: LocalChain,
) -> None:
    attacker = chain.new_account().address
    plain = chain.deploy_token()  # a PausableToken: no freeze list
    with pytest.raises(ActionError) as refused:
        _frozen(chain, plain, attacker)
    assert "answers none of isBlackListed(address), isBlacklisted(address)" in str(refused.value)
    assert refused.value.retryable is False
    with pytest.raises(ActionError, match="answers none of isFrozen"):
        _frozen(chain, chain.deploy_stablecoin("tether"), attacker, method="isFrozen")
    with pytest.raises(ActionError, match="no contract at"):
        _frozen(chain, attacker, attacker)


def test_the_probe_reads_again(chain: LocalChain) -> None:
    attacker = chain.new_account().address
    token = chain.deploy_stablecoin("tether")
    ctx = context(config={"rpc": {"local": chain.url}})
    waiting = token_frozen.parse({"chain": "local", "token": token, "address": attacker,
                                  "wait": "10m"})  # fmt: skip
    assert token_frozen.call_probe(waiting, ctx).state == "not_done"  # wait again
    chain.freeze(token, attacker)
    done = token_frozen.call_probe(waiting, ctx)
    assert (done.state, done.outputs["frozen"]) == ("done", True)


def test_a_drill_reads_nothing_and_inputs_are_checked(chain: LocalChain) -> None:
    requests = len(chain.requests)
    found = run_action(
        "evm.token_frozen",
        {"chain": "ethereum", "token": "0xdAC17F958D2ee523a2206206994597C13D831ec7",
         "address": "0x" + "c" * 40, "wait": "10m"},
        context(config={}, mode="tabletop"), simulate=True,
    )  # fmt: skip
    assert (found["simulated"], found["frozen"]) == (True, None)
    assert "isBlackListed/isBlacklisted/isFrozen" in found["would"]
    assert len(chain.requests) == requests
    base = {"chain": "local", "token": "0x" + "a" * 40, "address": "0x" + "c" * 40}
    for bad in ({"block": 5, "wait": "1m"}, {"method": "isBanned"}, {"wait": "-1s"}):
        with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
            token_frozen.parse({**base, **bad})
    assert token_frozen.parse({**base, "block": ""}).block is None
