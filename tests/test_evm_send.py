"""Exactly once under abandoned attempts and altered journals (irctl_evm._send).

An attempt the engine gave up on (its timeout passed) keeps running in its thread
while a retry starts; the local chain holds ``eth_getTransactionCount`` so the two
attempts overlap at exactly the dangerous instant.  And the signed bytes read back
from the journal may have been altered by redaction: they are never broadcast then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from irctl_evm import _send
from irctl_evm.testing import LocalChain

from irctl.actions import ActionContext
from irctl.errors import ActionError
from tests.test_evm_actions import Treasury, call, probe

ETHER = 10**18


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as started:
        yield started


@pytest.fixture
def treasury(tmp_path: Path, chain: LocalChain) -> Iterator[Treasury]:
    made = Treasury(tmp_path, chain)
    made.allow(made.cold, "bob", "carol")
    yield made
    made.store.close()


def _attempts(
    treasury: Treasury, n: int
) -> tuple[list[ActionContext], list[dict[str, Any]], dict[str, Any]]:
    """``n`` attempts of one step as the engine makes them: one facts dict, one journal."""
    facts: dict[str, Any] = {}
    journal: list[dict[str, Any]] = []
    made = []
    for attempt in range(1, n + 1):
        ctx = treasury.context("sweep")
        ctx.attempt, ctx.facts, ctx.recorder = attempt, facts, journal.append
        made.append(ctx)
    return made, journal, facts


def _in_thread(fn: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except ActionError as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    return worker, box


def _wait_for(predicate: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_timed_out_attempt_and_its_retry_send_one_transaction(treasury: Treasury) -> None:
    """The reviewer's double send: attempt 1 held at the nonce, given up on; attempt 2
    starts and waits for the sender; attempt 1 comes back.  One transaction only."""
    chain, hot = treasury.chain, treasury.hot.address
    raw = {"chain": "local", "from": hot, "to": treasury.cold, "amount": "1"}
    (first, second), journal, _ = _attempts(treasury, 2)
    hold = chain.hold("eth_getTransactionCount", when="after")
    try:
        worker1, box1 = _in_thread(lambda: call("evm.sweep", raw, first))
        assert hold.arrived.wait(30)
        first.cancelled.set()  # the engine's timeout: attempt 1 is abandoned, still running
        estimates = chain.requests.count("eth_estimateGas")
        worker2, box2 = _in_thread(lambda: call("evm.sweep", raw, second))
        _wait_for(lambda: chain.requests.count("eth_estimateGas") > estimates)
        time.sleep(0.5)  # attempt 2 has passed its first look at the facts, waits its turn
    finally:
        chain.unhold("eth_getTransactionCount")
    worker1.join(30)
    worker2.join(30)
    assert "out" not in box1
    assert "cancelled" in box1["error"].message
    assert "nothing was signed or sent" in box1["error"].message
    assert not box1["error"].retryable
    assert "error" not in box2, box2.get("error")
    sent = chain.transactions_from(hot)
    assert [t["hash"] for t in sent] == [box2["out"]["tx_hash"]]
    assert [t["nonce"] for t in sent] == [0]
    assert [f["tx"]["hash"] for f in journal] == [box2["out"]["tx_hash"]]  # one tx fact
    assert chain.balance(treasury.cold) == ETHER


def test_the_retry_resumes_what_the_abandoned_attempt_recorded(treasury: Treasury) -> None:
    """Attempt 1 signed and recorded while attempt 2 waited for the sender: attempt 2 looks
    at the facts again under the lock and resumes that transaction instead of signing."""
    chain, hot = treasury.chain, treasury.hot.address
    raw = {"chain": "local", "from": hot, "to": treasury.cold, "amount": "1"}
    (first, second), journal, _ = _attempts(treasury, 2)
    hold = chain.hold("eth_getTransactionCount", when="after")
    try:
        worker1, box1 = _in_thread(lambda: call("evm.sweep", raw, first))
        assert hold.arrived.wait(30)  # attempt 1 holds the sender's turn, not cancelled
        estimates = chain.requests.count("eth_estimateGas")
        worker2, box2 = _in_thread(lambda: call("evm.sweep", raw, second))
        _wait_for(lambda: chain.requests.count("eth_estimateGas") > estimates)
        time.sleep(0.5)  # attempt 2 found no facts at first and waits for the sender's turn
    finally:
        chain.unhold("eth_getTransactionCount")
    worker1.join(30)
    worker2.join(30)
    assert "error" not in box1, box1
    assert "error" not in box2, box2
    (fact,) = journal
    assert box1["out"]["tx_hash"] == box2["out"]["tx_hash"] == fact["tx"]["hash"]
    assert [t["hash"] for t in chain.transactions_from(hot)] == [fact["tx"]["hash"]]


def test_a_cancelled_attempt_records_but_never_broadcasts(treasury: Treasury) -> None:
    chain, hot = treasury.chain, treasury.hot.address
    raw = {"chain": "local", "from": hot, "to": treasury.cold, "amount": "1"}
    (first, second), journal, _ = _attempts(treasury, 2)

    def timed_out_while_recording(facts: dict[str, Any]) -> None:
        journal.append(facts)
        first.cancelled.set()

    first.recorder = timed_out_while_recording
    broadcasts = chain.requests.count("eth_sendRawTransaction")
    with pytest.raises(ActionError, match="recorded but was not broadcast") as failed:
        call("evm.sweep", raw, first)
    assert not failed.value.retryable
    assert chain.requests.count("eth_sendRawTransaction") == broadcasts
    assert chain.transactions_from(hot) == []
    (fact,) = journal
    out = call("evm.sweep", raw, second)  # the retry sends those same bytes
    assert out["tx_hash"] == fact["tx"]["hash"]
    assert [t["hash"] for t in chain.transactions_from(hot)] == [fact["tx"]["hash"]]
    assert len(journal) == 1


def test_a_second_tx_fact_is_never_recorded(treasury: Treasury) -> None:
    """A transaction recorded while this attempt was signing is resumed; what this attempt
    signed is dropped unsent and unrecorded."""
    chain, hot = treasury.chain, treasury.hot.address
    raw = {"chain": "local", "from": hot, "to": treasury.cold, "amount": "1"}
    (zeroth,), earlier_journal, _ = _attempts(treasury, 1)
    chain.hold("eth_sendRawTransaction", when="before").release()  # the broadcast is lost
    with pytest.raises(ActionError):
        call("evm.sweep", raw, zeroth)
    chain.unhold("eth_sendRawTransaction")
    (earlier,) = earlier_journal
    (ctx,), journal, facts = _attempts(treasury, 1)
    hold = chain.hold("eth_getTransactionCount", when="after")  # past the look under the lock
    try:
        worker, box = _in_thread(lambda: call("evm.sweep", raw, ctx))
        assert hold.arrived.wait(30)
        facts.update(earlier)  # another attempt's transaction, recorded meanwhile
    finally:
        chain.unhold("eth_getTransactionCount")
    worker.join(30)
    assert "error" not in box, box.get("error")
    assert journal == []
    assert box["out"]["tx_hash"] == earlier["tx"]["hash"]
    assert [t["hash"] for t in chain.transactions_from(hot)] == [earlier["tx"]["hash"]]


def test_a_send_whose_facts_hold_a_tx_resumes_it(treasury: Treasury) -> None:
    chain, hot = treasury.chain, treasury.hot.address
    raw = {"chain": "local", "from": hot, "to": treasury.cold, "amount": "1"}
    (first,), journal, facts = _attempts(treasury, 1)
    out = call("evm.sweep", raw, first)
    w3 = chain.w3
    signer = _send_signer(treasury)
    again, found = _send.send(
        first, w3, "local", signer, {"to": treasury.cold, "value": 1, "data": "0x", "gas": 21000,
        "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9},
        fingerprint=facts["tx"]["fingerprint"], extra={},
    )  # fmt: skip
    assert again["hash"] == out["tx_hash"]
    assert found.state == "mined"
    assert len(journal) == 1
    assert [t["hash"] for t in chain.transactions_from(hot)] == [out["tx_hash"]]


def _send_signer(treasury: Treasury) -> Any:
    from irctl_evm.signers import signer_for

    return signer_for(treasury.evm, "local", Path("."))


def _lost_broadcast(treasury: Treasury, raw: dict[str, Any]) -> dict[str, Any]:
    """A transaction signed and recorded whose broadcast never reached the chain."""
    chain = treasury.chain
    (ctx,), journal, _ = _attempts(treasury, 1)
    chain.hold("eth_sendRawTransaction", when="before").release()
    with pytest.raises(ActionError):
        call("evm.sweep", raw, ctx)
    chain.unhold("eth_sendRawTransaction")
    recorded: dict[str, Any] = journal[0]["tx"]
    return recorded


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda tx: {**tx, "raw": tx["raw"][:40] + "••••" + tx["raw"][48:]}, id="raw"),
        pytest.param(lambda tx: {**tx, "hash": tx["hash"][:10] + "••••"}, id="hash"),
        pytest.param(lambda tx: {**tx, "raw": tx["raw"][:-2] + "00"}, id="raw-bytes"),
        pytest.param(lambda tx: {**tx, "nonce": 1}, id="nonce"),
        pytest.param(lambda tx: {**tx, "from": "0x" + "11" * 20}, id="sender"),
        pytest.param(lambda tx: {**tx, "chain_id": 1}, id="chain-id"),
    ],
)
def test_altered_recorded_bytes_are_never_broadcast(
    treasury: Treasury, alter: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    chain, hot = treasury.chain, treasury.hot.address
    raw = {"chain": "local", "from": hot, "to": treasury.cold, "amount": "1"}
    recorded = _lost_broadcast(treasury, raw)
    assert _send.integrity_problem(recorded) is None
    altered = alter(recorded)
    assert _send.integrity_problem(altered) is not None
    broadcasts = chain.requests.count("eth_sendRawTransaction")
    (ctx,), _, _ = _attempts(treasury, 1)
    ctx.facts["tx"] = altered
    assert probe("evm.sweep", raw, ctx).state == "unknown"
    with pytest.raises(ActionError, match="does not read back as it was signed") as refused:
        call("evm.sweep", raw, ctx)
    assert "nothing was broadcast" in refused.value.message
    assert not refused.value.retryable
    assert chain.requests.count("eth_sendRawTransaction") == broadcasts
    assert chain.transactions_from(hot) == []


def test_intact_recorded_bytes_are_re_broadcast(treasury: Treasury) -> None:
    chain, hot = treasury.chain, treasury.hot.address
    raw = {"chain": "local", "from": hot, "to": treasury.cold, "amount": "1"}
    recorded = _lost_broadcast(treasury, raw)
    (ctx,), _, _ = _attempts(treasury, 1)
    ctx.facts["tx"] = dict(recorded)
    assert call("evm.sweep", raw, ctx)["tx_hash"] == recorded["hash"]
    assert [t["hash"] for t in chain.transactions_from(hot)] == [recorded["hash"]]


ENGINE_RUNBOOK = """\
    irctl: 1
    kind: runbook
    id: sweep
    title: Sweep with a timeout and a retry
    params:
      wallet: {type: string}
      cold: {type: string}
    steps:
      - id: sweep
        action: evm.sweep
        timeout: 3s
        retry: {attempts: 2, backoff: 0.1}
        with: {chain: local, from: "{{ params.wallet }}", to: "{{ params.cold }}", amount: "1"}
"""


def test_through_the_engine_a_timed_out_sweep_sends_at_most_once(treasury: Treasury) -> None:
    """The reviewer's reproduction: the node holds the nonce ~5.5 s, past the step's 3 s."""
    chain, hot = treasury.chain, treasury.hot.address
    run_id = treasury.start(ENGINE_RUNBOOK, {"wallet": hot, "cold": treasury.cold})
    chain.hold("eth_getTransactionCount", when="after")
    timer = threading.Timer(5.5, chain.unhold, args=("eth_getTransactionCount",))
    timer.start()
    try:
        treasury.engine.execute(run_id)
    finally:
        timer.join()
        chain.unhold("eth_getTransactionCount")
    time.sleep(2.0)  # an abandoned attempt, if any still runs, finishes meanwhile
    nonces = [t["nonce"] for t in chain.transactions_from(hot)]
    assert nonces in ([], [0]), nonces
