"""evm.balance, evm.pause, evm.sweep and evm.wait_confirmations against the local chain.

Runs go through the real engine and store; approvals are signed with the operators' own
keys; what moved is read back from the chain.
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from irctl_evm.testing import Account, LocalChain, signed_allowlist

from irctl.actions import ActionContext, default_registry
from irctl.engine.engine import Engine
from irctl.errors import ActionError
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.state import RunState
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from tests.helpers import approve_as

ETHER = 10**18
ROLES = {"oncall": ["security-oncall"], "bob": ["treasury"], "carol": ["treasury"],
         "mallory": ["security-lead"]}  # fmt: skip


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as started:
        yield started


class Treasury:
    """A hot wallet with ether and a pausable token, a workspace config and the operators."""

    def __init__(self, tmp_path: Path, chain: LocalChain) -> None:
        self.chain = chain
        self.hot: Account = chain.new_account(ether=10)
        self.cold = chain.new_account().address
        self.token = chain.deploy_token(
            supply=500_000 * 10**6, holder=self.hot.address, owner=self.hot.address
        )
        self.keys: dict[str, Ed25519PrivateKey] = {
            name: generate_private_key(tmp_path / "keys" / f"{name}.key") for name in ROLES
        }
        self.allowlist = tmp_path / "allowlist.yaml"
        keyfile = tmp_path / "hot.key"
        keyfile.write_text(self.hot.keyfile_text(), encoding="utf-8")
        self.evm: dict[str, Any] = {
            "rpc": {"local": chain.url},
            "chain_id": {"local": chain.chain_id},
            "signer": {"local": {"kind": "keyfile", "path": str(keyfile)}},
            "allowlist": {"path": str(self.allowlist), "quorum": 2, "roles": ["treasury"]},
        }
        self.config = Config.model_validate({
            "operators": {
                name: {"roles": roles, "key": public_key_text(self.keys[name])}
                for name, roles in ROLES.items()
            },
            "integrations": {"evm": self.evm},
        })  # fmt: skip
        self.store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
        self.engine = Engine(
            self.store, config=self.config, signing_key=generate_private_key(tmp_path / "i.key")
        )

    def allow(self, address: str, *signers: str, label: str = "cold-1") -> None:
        signed_allowlist(
            self.allowlist, chain="local", address=address, label=label,
            signers={name: self.keys[name] for name in signers},
        )  # fmt: skip

    def start(self, text: str, params: dict[str, str]) -> str:
        parsed = load_runbook_text(textwrap.dedent(text), "sweep.yaml")
        return self.engine.create_run(
            parsed, textwrap.dedent(text), parse_params(parsed, params), initiator="oncall",
            starter_key=self.keys["oncall"],
        )

    def approve(self, run_id: str, key: str, *operators: str) -> None:
        approve_as(self.store, run_id, key, self.keys, *operators)

    def context(self, step: str = "direct") -> ActionContext:
        """What the engine hands an action, for calling one directly."""
        operators = {
            n: {"roles": r, "key": public_key_text(self.keys[n])} for n, r in ROLES.items()
        }
        return ActionContext(run_id="r-test", step_id=step,
                             config={**self.evm, "_operators": operators})  # fmt: skip


@pytest.fixture
def treasury(tmp_path: Path, chain: LocalChain) -> Iterator[Treasury]:
    made = Treasury(tmp_path, chain)
    yield made
    made.store.close()


def call(name: str, raw: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    act = default_registry.get(name)
    return act.call_run(act.parse(raw), ctx)


def probe(name: str, raw: dict[str, Any], ctx: ActionContext) -> Any:
    act = default_registry.get(name)
    return act.call_probe(act.parse(raw), ctx)


SWEEP_RUNBOOK = """\
    irctl: 1
    kind: runbook
    id: sweep
    title: Sweep the hot wallet to cold storage
    params:
      wallet: {type: string}
      cold: {type: string}
      token: {type: string}
    approvals:
      treasury-two-person:
        quorum: 2
        roles: [treasury]
    steps:
      - id: before
        action: evm.balance
        with: {chain: local, address: "{{ params.wallet }}", token: "{{ params.token }}"}
      - id: sweep-token
        action: evm.sweep
        approval: treasury-two-person
        with: {chain: local, from: "{{ params.wallet }}", to: "{{ params.cold }}",
               token: "{{ params.token }}"}
      - id: sweep-native
        action: evm.sweep
        approval: treasury-two-person
        with: {chain: local, from: "{{ params.wallet }}", to: "{{ params.cold }}"}
      - id: confirm
        action: evm.wait_confirmations
        with: {chain: local, tx_hash: "{{ steps['sweep-native'].outputs.tx_hash }}",
               confirmations: 1, poll: 0.1}
"""


def _waiting(state: RunState) -> str:
    assert state.status == "waiting", [(s.key, s.error) for s in state.steps.values() if s.error]
    (step,) = [s.key for s in state.steps.values() if s.status == "waiting"]
    return step


def test_sweep_moves_everything_to_cold_after_two_approvals(treasury: Treasury) -> None:
    chain, hot, cold = treasury.chain, treasury.hot.address, treasury.cold
    treasury.allow(cold, "bob", "carol")
    run_id = treasury.start(SWEEP_RUNBOOK, {"wallet": hot, "cold": cold, "token": treasury.token})

    assert _waiting(treasury.engine.execute(run_id)) == "sweep-token"
    assert chain.transactions_from(hot) == []  # nothing moves before the approvals
    treasury.approve(run_id, "sweep-token", "bob")
    assert _waiting(treasury.engine.execute(run_id)) == "sweep-token"  # one is not enough
    treasury.approve(run_id, "sweep-token", "carol")
    assert _waiting(treasury.engine.execute(run_id)) == "sweep-native"
    treasury.approve(run_id, "sweep-native", "bob", "carol")
    state = treasury.engine.execute(run_id)

    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    before = state.steps["before"].outputs
    assert (before["balance"], before["asset"], before["display"]) == (
        str(500_000 * 10**6),
        "USDT",
        "500000 USDT",
    )
    assert chain.read("PausableToken", treasury.token, "balanceOf", cold) == 500_000 * 10**6
    assert chain.read("PausableToken", treasury.token, "balanceOf", hot) == 0
    token_out = state.steps["sweep-token"].outputs
    native_out = state.steps["sweep-native"].outputs
    assert token_out["amount"] == str(500_000 * 10**6)
    assert token_out["status"] == "mined"
    sent = chain.transactions_from(hot)
    assert [t["hash"] for t in sent] == [token_out["tx_hash"], native_out["tx_hash"]]
    assert [t["nonce"] for t in sent] == [0, 1]
    # all the ether went, but the gas: what is left is less than the fee cap of one transfer
    assert chain.balance(cold) == int(native_out["amount"]) > 9 * ETHER
    assert chain.balance(hot) < 21_000 * 10 * 10**9
    assert state.steps["confirm"].outputs["confirmations"] >= 1
    journal = "\n".join(treasury.store.lines(run_id))
    assert treasury.hot.private_key[2:] not in journal
    assert "signed by bob, carol" in journal  # the allowlist verdict is in the record


@pytest.mark.parametrize(
    ("signers", "tamper", "expected"),
    [
        ((), None, "is not on the cold-address allowlist"),
        (("bob",), None, "1 of 2 required signatures"),
        (("bob", "mallory"), None, "mallory: has none of the roles treasury"),
        ((), "address", "signature does not match"),
        (("bob", "carol"), "label", "signature does not match"),
    ],
    ids=["unlisted", "one-signature", "wrong-role", "address-edited", "entry-edited"],
)
def test_sweep_refuses_a_destination_without_a_valid_quorum_even_when_approved(
    treasury: Treasury, signers: tuple[str, ...], tamper: str | None, expected: str
) -> None:
    chain, hot = treasury.chain, treasury.hot.address
    attacker = chain.new_account().address
    treasury.allow(treasury.cold, "bob", "carol", label="the real cold wallet")
    if signers:
        treasury.allow(attacker, *signers, label="attacker")
    text = treasury.allowlist.read_text(encoding="utf-8")
    if tamper == "address":  # someone rewrites the signed cold address with their own
        treasury.allowlist.write_text(text.replace(treasury.cold, attacker), "utf-8")
    if tamper == "label":
        treasury.allowlist.write_text(text.replace("label: attacker", "label: cold-2"), "utf-8")
    params = {"wallet": hot, "cold": attacker, "token": treasury.token}
    run_id = treasury.start(SWEEP_RUNBOOK, params)
    assert _waiting(treasury.engine.execute(run_id)) == "sweep-token"
    treasury.approve(run_id, "sweep-token", "bob", "carol")  # every approval is in place

    state = treasury.engine.execute(run_id)

    assert state.status == "failed"
    error = state.steps["sweep-token"].error or ""
    assert expected in error, error
    assert "whatever the approvals" in error
    assert chain.transactions_from(hot) == []
    assert chain.read("PausableToken", treasury.token, "balanceOf", hot) == 500_000 * 10**6


def test_pause_stops_transfers_and_is_not_sent_twice(treasury: Treasury) -> None:
    chain, token = treasury.chain, treasury.token
    raw = {"chain": "local", "contract": token}
    first = call("evm.pause", raw, treasury.context())
    assert first["changed"] is True
    assert first["status"] == "mined"
    assert chain.read("PausableToken", token, "paused") is True
    with pytest.raises(Exception, match="revert"):
        chain.read("PausableToken", token, "transfer", treasury.cold, 1)
    again = call("evm.pause", raw, treasury.context())
    assert again == {**again, "changed": False, "status": "already-paused", "tx_hash": ""}
    assert len(chain.transactions_from(treasury.hot.address)) == 1
    assert probe("evm.pause", raw, treasury.context()).state == "done"


def test_pause_by_a_signer_that_does_not_own_the_contract_fails_clearly(
    treasury: Treasury,
) -> None:
    other = treasury.chain.deploy_token(supply=1)  # owned by someone else
    with pytest.raises(ActionError, match="is the signer the contract's owner or pauser"):
        call("evm.pause", {"chain": "local", "contract": other}, treasury.context())
    assert treasury.chain.transactions_from(treasury.hot.address) == []


def test_balance_native_and_token(treasury: Treasury) -> None:
    ctx = treasury.context()
    native = call("evm.balance", {"chain": "local", "address": treasury.hot.address}, ctx)
    assert native == {**native, "balance": str(10 * ETHER), "display": "10 ETH", "token": ""}
    token = call(
        "evm.balance",
        {"chain": "local", "address": treasury.hot.address, "token": treasury.token},
        ctx,
    )
    assert (token["balance"], token["decimals"], token["asset"]) == (str(5 * 10**11), 6, "USDT")


def test_partial_sweeps_and_their_refusals(treasury: Treasury) -> None:
    chain, hot, cold = treasury.chain, treasury.hot.address, treasury.cold
    treasury.allow(cold, "bob", "carol")
    base = {"chain": "local", "from": hot, "to": cold}
    out = call("evm.sweep", {**base, "amount": 1.5}, treasury.context("a"))  # YAML number
    assert out["amount"] == str(15 * 10**17)
    assert chain.balance(cold) == 15 * 10**17
    out = call("evm.sweep", {**base, "token": treasury.token, "amount": "0.25"},
               treasury.context("b"))  # fmt: skip
    assert out["amount_display"] == "0.25 USDT"
    assert chain.read("PausableToken", treasury.token, "balanceOf", cold) == 250_000
    with pytest.raises(ActionError, match="not enough for 100 plus"):
        call("evm.sweep", {**base, "amount": "100"}, treasury.context("c"))
    with pytest.raises(ActionError, match="more than 6 decimals"):
        call("evm.sweep", {**base, "token": treasury.token, "amount": "0.0000001"},
             treasury.context("d"))  # fmt: skip
    stranger = chain.new_account(ether=1).address
    with pytest.raises(ActionError, match="but the signer configured for local"):
        call("evm.sweep", {**base, "from": stranger}, treasury.context("e"))
    assert len(chain.transactions_from(hot)) == 2


def test_a_recorded_transaction_is_re_broadcast_never_re_signed(treasury: Treasury) -> None:
    """The engine-independent half of exactly-once: facts recorded by a failed attempt."""
    chain, hot, cold = treasury.chain, treasury.hot.address, treasury.cold
    treasury.allow(cold, "bob", "carol")
    raw = {"chain": "local", "from": hot, "to": cold, "amount": "2"}
    journal: list[dict[str, Any]] = []
    first = treasury.context("s")
    first.recorder = journal.append
    hold = chain.hold("eth_sendRawTransaction", when="before")
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            call("evm.sweep", raw, first)
        except ActionError as exc:
            errors.append(exc)

    worker = threading.Thread(target=attempt)
    worker.start()
    assert hold.arrived.wait(30)
    assert probe("evm.sweep", raw, treasury.context("s")).state == "not_done"  # no facts there
    chain.unhold("eth_sendRawTransaction")  # the broadcast is lost, the attempt fails
    worker.join(30)
    assert errors
    assert chain.transactions_from(hot) == []
    (facts,) = journal
    recorded = facts["tx"]
    assert recorded["nonce"] == 0
    assert recorded["hash"].startswith("0x")

    second = treasury.context("s")
    second.facts = {"tx": recorded}
    assert probe("evm.sweep", raw, second).state == "not_done"  # never reached the chain
    out = call("evm.sweep", raw, second)
    assert out["tx_hash"] == recorded["hash"]
    third = treasury.context("s")
    third.facts = {"tx": recorded}
    assert call("evm.sweep", raw, third)["tx_hash"] == recorded["hash"]  # found, not sent
    found = probe("evm.sweep", raw, third)
    assert found.state == "done"
    assert found.outputs["tx_hash"] == recorded["hash"]
    assert [t["hash"] for t in chain.transactions_from(hot)] == [recorded["hash"]]
    assert chain.balance(cold) == 2 * ETHER

    other = treasury.context("s")
    other.facts = {"tx": recorded}
    with pytest.raises(ActionError, match="for other inputs"):
        call("evm.sweep", {**raw, "amount": "3"}, other)


def test_a_nonce_used_by_someone_else_stops_for_an_operator(treasury: Treasury) -> None:
    chain, hot, cold = treasury.chain, treasury.hot.address, treasury.cold
    treasury.allow(cold, "bob", "carol")
    raw = {"chain": "local", "from": hot, "to": cold, "amount": "1"}
    journal: list[dict[str, Any]] = []
    first = treasury.context("s")
    first.recorder = journal.append
    chain.hold("eth_sendRawTransaction", when="before").release()  # dropped at once
    with pytest.raises(ActionError):
        call("evm.sweep", raw, first)
    chain.unhold("eth_sendRawTransaction")
    # the same key signs something else at the same nonce (an attacker holding the key)
    from eth_account import Account as EthAccount

    w3 = chain.w3
    tx = {"to": chain.accounts[3], "value": 1, "gas": 21_000, "nonce": 0, "chainId": chain.chain_id,
          "maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9}  # fmt: skip
    w3.eth.send_raw_transaction(
        EthAccount.sign_transaction(tx, treasury.hot.private_key).raw_transaction
    )
    second = treasury.context("s")
    second.facts = dict(journal[0])
    assert probe("evm.sweep", raw, second).state == "unknown"
    with pytest.raises(ActionError, match="used by another transaction"):
        call("evm.sweep", raw, second)
    assert chain.balance(cold) == 0


def test_wait_confirmations(treasury: Treasury) -> None:
    chain = treasury.chain
    tx_hash = chain.fund(treasury.cold, 1)
    ctx = treasury.context()
    raw = {"chain": "local", "tx_hash": tx_hash, "confirmations": 4, "poll": 0.05, "wait": 0.3}
    with pytest.raises(ActionError, match="1 of 4 confirmations"):
        call("evm.wait_confirmations", raw, ctx)
    chain.mine(3)
    out = call("evm.wait_confirmations", raw, ctx)
    assert out["confirmations"] == 4
    assert out["status"] == "confirmed"
    nothing = call("evm.wait_confirmations", {**raw, "tx_hash": ""}, ctx)
    assert nothing["status"] == "nothing"
    with pytest.raises(ActionError, match="not mined"):
        call("evm.wait_confirmations", {**raw, "tx_hash": "0x" + "ab" * 32}, ctx)


def test_configuration_mistakes_are_named(treasury: Treasury) -> None:
    ctx = treasury.context()
    with pytest.raises(ActionError, match=r"set integrations.evm.rpc.mainnet in irctl.yaml"):
        call("evm.balance", {"chain": "mainnet", "address": treasury.hot.address}, ctx)
    wrong = treasury.context()
    wrong.config["chain_id"] = {"local": 1}
    with pytest.raises(ActionError, match=r"serves chain id .* not 1"):
        call("evm.balance", {"chain": "local", "address": treasury.hot.address}, wrong)
    secret_key = treasury.context()
    bad = Path(treasury.evm["signer"]["local"]["path"]).with_name("bad.key")
    bad.write_text("0xnot-a-key-but-maybe-a-secret\n", encoding="utf-8")
    secret_key.config["signer"] = {"local": {"kind": "keyfile", "path": str(bad)}}
    treasury.allow(treasury.cold, "bob", "carol")
    with pytest.raises(ActionError) as caught:
        call("evm.sweep", {"chain": "local", "from": treasury.hot.address, "to": treasury.cold},
             secret_key)  # fmt: skip
    assert "not 32 bytes of hex" in caught.value.message
    assert "maybe-a-secret" not in caught.value.message
    json.dumps(treasury.evm)  # the config a test wrote holds paths and URLs only


FAN_RUNBOOK = """\
    irctl: 1
    kind: runbook
    id: fan
    title: Sweep in parts, concurrently
    params:
      wallet: {type: string}
      cold: {type: string}
    steps:
      - id: sweep
        for_each: ["0.1", "0.2", "0.3", "0.4"]
        max_parallel: 4
        action: evm.sweep
        with: {chain: local, from: "{{ params.wallet }}", to: "{{ params.cold }}",
               amount: "{{ item }}"}
"""


def test_concurrent_sweeps_from_one_wallet_each_get_their_own_nonce(treasury: Treasury) -> None:
    chain, hot, cold = treasury.chain, treasury.hot.address, treasury.cold
    treasury.allow(cold, "bob", "carol")
    run_id = treasury.start(FAN_RUNBOOK, {"wallet": hot, "cold": cold})
    state = treasury.engine.execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert sorted(t["nonce"] for t in chain.transactions_from(hot)) == [0, 1, 2, 3]
    assert chain.balance(cold) == 10**18


def test_the_local_chain_runs_as_its_own_process(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    keyfile = tmp_path / "hot.key"
    proc = subprocess.Popen(
        [sys.executable, "-m", "irctl_evm.testing", "--port", "0", "--keyfile", str(keyfile),
         "--ether", "7", "--token"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        url = re.search(r"at (http://127\.0\.0\.1:\d+)", lines[0])
        hot = re.search(r"hot wallet (0x[0-9a-fA-F]{40})", lines[1])
        token = re.search(r"token (0x[0-9a-fA-F]{40})", lines[2])
        assert url, lines
        assert hot, lines
        assert token, lines
        ctx = ActionContext(run_id="r", step_id="s", config={"rpc": {"local": url[1]}})
        native = call("evm.balance", {"chain": "local", "address": hot[1]}, ctx)
        assert native["balance"] == str(7 * ETHER)
        held = call("evm.balance", {"chain": "local", "address": hot[1], "token": token[1]}, ctx)
        assert held["display"] == "1000000 USDT"
        assert keyfile.stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_addresses_in_one_case_are_checksummed_and_a_wrong_checksum_is_refused(
    treasury: Treasury,
) -> None:
    from pydantic import ValidationError

    chain, hot, cold = treasury.chain, treasury.hot.address, treasury.cold
    treasury.allow(cold, "bob", "carol")
    act = default_registry.get("evm.sweep")
    lower = {"chain": "local", "from": hot.lower(), "to": cold.lower(), "amount": "1"}
    parsed = act.parse(lower)
    assert (parsed.from_, parsed.to) == (hot, cold)
    upper = act.parse({**lower, "to": "0x" + cold[2:].upper()})
    assert upper.to == cold
    flipped = cold[:2] + "".join(c.swapcase() if c.isalpha() else c for c in cold[2:])
    assert flipped != cold
    with pytest.raises(ValidationError, match="wrong EIP-55 checksum") as refused:
        act.parse({**lower, "to": flipped})
    assert flipped in str(refused.value)
    out = call("evm.sweep", lower, treasury.context("lower"))  # web3 takes only EIP-55
    assert out["status"] == "mined"
    assert out["to"] == cold
    assert chain.balance(cold) == ETHER
    read = call("evm.balance", {"chain": "local", "address": cold.lower()}, treasury.context())
    assert (read["address"], read["balance"]) == (cold, str(ETHER))


def test_amounts_are_converted_to_base_units_exactly_never_rounded() -> None:
    from irctl_evm.actions import _units

    # 30 significant digits: more than decimal's default precision of 28
    assert _units("100000000000.000000000000000001", 18) == 10**29 + 1
    assert _units("1.5", 18) == 15 * 10**17
    assert _units("0.000001", 6) == 1
    with pytest.raises(ActionError, match="has more than 6 decimals"):
        _units("1.0000001", 6)
