"""bank-run-proof-of-reserves end to end in sandbox: the local chain, the exchange stand-in,
the custody desk moving cold funds on chain, the real proof build, and real approvals.

=====  ======  =======  =====  ==============  ======
asset  hot     cold     owed   queue           ratio
=====  ======  =======  =====  ==============  ======
ETH    30      70       80     60 (4,200 req)  1.25
=====  ======  =======  =====  ==============  ======

The treasury quorum moves 40 ETH from cold to hot: the hot wallet then covers the queue, and
the reserves (the sum over every controlled wallet) do not change.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from irctl_evm.testing import Account, LocalChain

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.state import fold
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from irctl.testing import ExchangeAdminStub
from tests.helpers import IRCTL, approve_as, until_waiting

ROOT = Path(__file__).resolve().parents[1]
ETHER = 10**18
TOKEN = "admin-token-bank-run"
EXCHANGE = "Example Exchange"
ROLES = {
    "oncall": ["security-oncall"], "t1": ["treasury"], "t2": ["treasury"], "carl": ["cfo"],
    "cindy": ["ciso"], "cleo": ["ceo"],
}  # fmt: skip


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as started:
        yield started


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExchangeAdminStub]:
    monkeypatch.setenv("SANDBOX_ADMIN_TOKEN", TOKEN)
    with ExchangeAdminStub(TOKEN) as stub:
        yield stub


def _statement(account: Account) -> dict[str, str]:
    message = f"{EXCHANGE} controls {account.address} (cold storage) on local, statement."
    signed = EthAccount.sign_message(encode_defunct(text=message), private_key=account.private_key)
    return {"address": account.address, "chain": "local", "message": message,
            "signature": "0x" + bytes(signed.signature).hex()}  # fmt: skip


class CustodyDesk:
    """Plays the custody desk: each sweep request the exchange receives is carried out on
    chain, from the cold wallet (whose key only the desk holds) to the address requested."""

    def __init__(self, chain: LocalChain, exchange: ExchangeAdminStub, cold: Account) -> None:
        self.chain, self.exchange, self.cold = chain, exchange, cold
        self.done: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        while not self.stop.wait(0.01):
            for request in self.exchange.requests_to("/custody/sweep", "POST")[len(self.done):]:
                body = request.json
                w3 = self.chain.w3
                with self.chain._lock:  # the chain is one in-process EVM
                    tx = {
                        "to": body["to"], "value": int(float(body["amount"]) * ETHER),
                        "gas": 21000, "gasPrice": w3.eth.gas_price, "chainId": w3.eth.chain_id,
                        "nonce": w3.eth.get_transaction_count(self.cold.address),
                    }  # fmt: skip
                    signed = EthAccount.sign_transaction(tx, self.cold.private_key)
                    sent = w3.eth.send_raw_transaction(signed.raw_transaction)
                self.done.append("0x" + bytes(sent).hex())


class BankRun:
    """A workspace whose hot wallet holds 30 ETH and cold storage 70, owing ``owed`` ETH (alice
    ``owed - 30``, bob 30), with 60 ETH queued for withdrawal; the run created, not executed."""

    def __init__(self, tmp_path: Path, chain: LocalChain, exchange: ExchangeAdminStub,
                 monkeypatch: pytest.MonkeyPatch, owed: int = 80) -> None:  # fmt: skip
        self.chain, self.exchange = chain, exchange
        hot, cold = chain.new_account(ether=30), chain.new_account(ether=70)
        ws = tmp_path / "ws"
        (ws / "reserves").mkdir(parents=True)
        (ws / "hot.key").write_text(hot.keyfile_text(), encoding="utf-8")
        (ws / "reserves" / "liabilities.csv").write_text(
            f"account,ETH\nalice,{owed - 30}\nbob,30\n", encoding="utf-8"
        )
        (ws / "reserves" / "cold-statements.yaml").write_text(
            yaml.safe_dump({"statements": [_statement(cold)]}), encoding="utf-8"
        )
        installation = generate_private_key(ws / ".irctl" / "installation.key")
        keys = {name: generate_private_key(tmp_path / f"{name}.key") for name in ROLES}
        evm = {"rpc": {"local": chain.url}, "chain_id": {"local": chain.chain_id},
               "signer": {"local": {"kind": "keyfile", "path": "hot.key"}}}  # fmt: skip
        config_data: dict[str, Any] = {
            "installation_key": public_key_text(installation),
            "operators": {
                n: {"roles": r, "key": public_key_text(keys[n])} for n, r in ROLES.items()
            },
            "integrations": {"evm": evm, "reserves": evm},
            "secrets": {"admin_token": "env:SANDBOX_ADMIN_TOKEN"},  # never production's
            "vars": {
                "exchange_admin_url": exchange.url,
                "reserves": {
                    "exchange": EXCHANGE, "irctl": IRCTL, "build_options": ["--precision=ETH=18"],
                    "hot": {"local": hot.address}, "cold": {"local": cold.address},
                    "wallets": [
                        {"chain": "local", "address": hot.address, "kind": "hot"},
                        {"chain": "local", "address": cold.address, "kind": "cold"},
                    ],
                    "assets": {"ETH": "native"},
                    "statements": "reserves/cold-statements.yaml",
                },
            },
        }  # fmt: skip
        (ws / "irctl.yaml").write_text(yaml.safe_dump(config_data), encoding="utf-8")
        monkeypatch.chdir(ws)  # the proof is built in the workspace, as `irctl run` there does
        monkeypatch.setenv("IRCTL_WORKSPACE", str(ws))
        exchange.set_queue(4200, oldest_seconds=310, amounts={"ETH": 60 * ETHER})

        store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
        # A minute between coverage checks is the runbook's; here a tenth of a second stands for it.
        engine = Engine(
            store, config=Config.model_validate(config_data), signing_key=installation,
            workspace=ws, notify=False, sleep=lambda s: time.sleep(min(s, 0.1)),
        )  # fmt: skip
        text = (ROOT / "runbooks" / "bank-run-proof-of-reserves.yaml").read_text(encoding="utf-8")
        model = load_runbook_text(text, "bank-run-proof-of-reserves.yaml")
        params = parse_params(model, {"chain": "local", "asset": "ETH", "top_up": "40",
                                      "liabilities": "reserves/liabilities.csv",
                                      "proof_dir": "reserves/proof", "floor": "1.0"})  # fmt: skip
        self.run_id = engine.create_run(model, text, params, initiator="oncall", mode="sandbox",
                                   starter_key=keys["oncall"])  # fmt: skip
        self.engine, self.store, self.keys, self.ws = engine, store, keys, ws
        self.hot, self.cold = hot, cold
        self.desk = CustodyDesk(chain, exchange, cold)
        self.desk.thread.start()

    def close(self) -> None:
        self.desk.stop.set()
        self.desk.thread.join(5)
        self.store.close()


def test_a_bank_run_keeps_withdrawals_open_tops_up_and_publishes_the_proof(
    tmp_path: Path, chain: LocalChain, exchange: ExchangeAdminStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    bank = BankRun(tmp_path, chain, exchange, monkeypatch)
    engine, store, run_id, keys = bank.engine, bank.store, bank.run_id, bank.keys
    hot, cold, ws, desk = bank.hot, bank.cold, bank.ws, bank.desk

    try:
        state, key, why = until_waiting(engine, run_id)
        assert (key, why) == ("top-up", "approval")
        request = state.steps["top-up"].approval or {}
        assert request["inputs"]["json"]["to"] == hot.address  # the approvers see where
        approve_as(store, run_id, key, keys, "t1", "carl")
        state, key, why = until_waiting(engine, run_id)
        assert (key, why) == ("publish", "approval")
        statement = state.steps["publish"].approval["inputs"]["json"]["statement"]  # type: ignore[index]
        held = chain.balance(hot.address) + chain.balance(cold.address)  # 100 ETH less gas
        reserves = state.steps["reserves"].outputs
        assert reserves["assets"]["ETH"]["reserves"] == str(held)  # what the chain holds
        assert reserves["assets"]["ETH"]["liabilities"] == str(80 * ETHER)  # what the tree owes
        ratio = reserves["assets"]["ETH"]["ratio"]
        assert ratio.startswith("1.249999")  # 1.25 but for the top-up's gas
        assert f"ETH {ratio}:1" in " ".join(statement.split())
        approve_as(store, run_id, key, keys, "carl", "cindy")
        state = engine.execute(run_id)
    finally:
        bank.close()
    failed = {s.key: s.error for s in state.steps.values() if s.status == "failed"}
    assert state.status == "succeeded", (state.status, failed)
    assert len(desk.done) == 1
    assert chain.balance(hot.address) == 70 * ETHER  # covers the queue of 60
    assert exchange.halted == set()  # withdrawals never stopped
    root = json.loads((ws / "reserves" / "proof" / "root.json").read_text())
    (published,) = exchange.desks.published
    assert published["root"] == root["root"]
    assert published["accounts"] == 2
    assert state.steps["reserves"].outputs["below_floor"] is False
    assert state.steps["halt-below-floor"].status == "skipped"
    assert published["url"] in exchange.desks.announcements[0]["body"]
    coverage = [e for e in store.events(run_id) if e.data.get("step") == "coverage"]
    assert any(e.type == "step.succeeded" for e in coverage)


def test_below_the_floor_a_halt_needs_the_ceo_and_the_cfo(
    tmp_path: Path, chain: LocalChain, exchange: ExchangeAdminStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    bank = BankRun(tmp_path, chain, exchange, monkeypatch, owed=150)  # 100 held: 0.67
    try:
        engine, store, run_id, keys = bank.engine, bank.store, bank.run_id, bank.keys
        for step, who in (("top-up", ("t1", "t2")), ("publish", ("carl", "cindy"))):
            _, key, why = until_waiting(engine, run_id)
            assert (key, why) == (step, "approval")
            approve_as(store, run_id, key, keys, *who)
        state, key, why = until_waiting(engine, run_id)
        assert (key, why) == ("halt-below-floor", "approval")
        assert state.steps["reserves"].outputs["assets_below_floor"] == ["ETH"]
        approve_as(store, run_id, key, keys, "carl")  # the CFO alone is not enough
        state, key, why = until_waiting(engine, run_id)
        assert (key, why) == ("halt-below-floor", "approval")
        assert exchange.halted == set()
        approve_as(store, run_id, key, keys, "cleo")  # and the CEO
        state = engine.execute(run_id)
        assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
        assert exchange.halted == {"local"}
        assert fold(store.events(run_id)).status == "succeeded"
    finally:
        bank.close()


def test_the_sandbox_drill_tops_up_proves_and_publishes_for_real(
    tmp_path: Path, chain: LocalChain, exchange: ExchangeAdminStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """drills/sandbox-bank-run.yaml through the drill runner against the same sandbox: the
    participants approve as they are asked, and the scorecard meets both objectives."""
    from irctl.drills.drill import drive_drill, find_drill, score, start_drill
    from irctl.errors import IrctlError

    bank = BankRun(tmp_path, chain, exchange, monkeypatch)
    drill, _ = find_drill(ROOT / "drills", "sandbox-bank-run")
    text = (ROOT / "runbooks" / "bank-run-proof-of-reserves.yaml").read_text(encoding="utf-8")
    run_id = start_drill(bank.engine, drill, load_runbook_text(text, "bank-run.yaml"), text,
                         initiator="oncall", time_scale=0.002)  # fmt: skip
    stop = threading.Event()

    def participants() -> None:  # each eligible operator approves what waits for them
        while not stop.wait(0.05):
            for step in fold(bank.store.events(run_id)).waiting():
                request = step.approval or {}
                for who in request.get("eligible", []):
                    if who in bank.keys and who not in step.approvers:
                        with contextlib.suppress(IrctlError):  # the quorum was reached meanwhile
                            approve_as(bank.store, run_id, step.key, bank.keys, who)
    helper = threading.Thread(target=participants, daemon=True)
    helper.start()
    try:
        state = drive_drill(bank.engine, run_id, say=lambda _: None, time_limit=60, poll=0.1,
                            slack=False)  # fmt: skip
    finally:
        stop.set()
        helper.join(5)
        bank.close()
    assert state.status == "succeeded", [(k, s.error) for k, s in state.steps.items()]
    assert state.mode == "sandbox"
    assert chain.balance(bank.hot.address) == 70 * ETHER  # the top-up happened on chain
    assert exchange.desks.published  # and the proof was published
    card = score(bank.store.events(run_id))
    assert [o.name for o in card.objectives if not o.met] == []
