"""reserves.assets against the local chain: real ERC-20 contracts, real signatures, a real
proof of liabilities built by irctl.reserves, and moto's KMS for a KMS-backed hot wallet.

The balances are put on the chain by the test, so every ratio is known exactly:

=====  =======  ========  ==========  ============
asset  hot      cold      owed        ratio
=====  =======  ========  ==========  ============
ETH    30       70        80          100/80 = 1.25
USDT   200,000  600,000   1,000,000   0.8
=====  =======  ========  ==========  ============

Without the cold wallet's proof of control: ETH 30/80 = 0.375, USDT 0.2.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from irctl_evm.testing import Account, LocalChain

from irctl.actions import ActionContext, default_registry
from irctl.errors import ActionError
from irctl.reserves import build
from irctl.testing import context, run_action
from tests.helpers import irctl, make_workspace, run_id_from
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

ETHER = 10**18
USDT = 10**6
EXCHANGE = "Example Exchange"


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as started:
        yield started


def personal_sign(account: Account, message: str) -> str:
    """What a hardware wallet's personal_sign returns (eth-account's, not irctl's code)."""
    signed = EthAccount.sign_message(encode_defunct(text=message), private_key=account.private_key)
    return "0x" + bytes(signed.signature).hex()


def cold_statement(account: Account, *, signer: Account | None = None, chain: str = "local",
                   exchange: str = EXCHANGE) -> dict[str, str]:  # fmt: skip
    message = (
        f"{exchange} controls {account.address} (cold storage) on {chain}, "
        "statement of 2026-12-01."
    )
    return {"address": account.address, "chain": chain, "message": message,
            "signature": personal_sign(signer or account, message)}  # fmt: skip


class Exchange:
    """A hot wallet (key file signer) and a cold wallet with known ETH and USDT, a proof of
    liabilities for known totals, and the statements file."""

    def __init__(self, root: Path, chain: LocalChain) -> None:
        self.root, self.chain = root, chain
        self.hot = chain.new_account(ether=30)
        self.cold = chain.new_account(ether=70)
        self.usdt = chain.deploy_token(supply=10_000_000 * USDT)  # held by accounts[0]
        chain.transact("PausableToken", self.usdt, "transfer", self.hot.address, 200_000 * USDT)
        chain.transact("PausableToken", self.usdt, "transfer", self.cold.address, 600_000 * USDT)
        (root / "hot.key").write_text(self.hot.keyfile_text(), encoding="utf-8")
        self.evm: dict[str, Any] = {
            "rpc": {"local": chain.url},
            "chain_id": {"local": chain.chain_id},
            "signer": {"local": {"kind": "keyfile", "path": "hot.key"}},
        }
        liabilities = root / "liabilities.csv"
        liabilities.write_text(
            "account,BTC,ETH,USDT\nalice,1.5,50,250000\nbob,0.25,30,750000\n", encoding="utf-8"
        )
        build(liabilities, root / "por", precisions={"BTC": 8, "ETH": 18, "USDT": 6},
              signing_key=Ed25519PrivateKey.generate())  # fmt: skip
        self.write_statements([cold_statement(self.cold)])

    def write_statements(self, statements: list[dict[str, str]]) -> None:
        (self.root / "statements.yaml").write_text(
            yaml.safe_dump({"statements": statements}), encoding="utf-8"
        )

    def wallets(self) -> list[dict[str, str]]:
        return [
            {"chain": "local", "address": self.hot.address, "kind": "hot", "label": "hot-1"},
            {"chain": "local", "address": self.cold.address, "kind": "cold", "label": "cold-1"},
        ]

    def inputs(self, **overrides: Any) -> dict[str, Any]:
        return {
            "exchange": EXCHANGE,
            "wallets": self.wallets(),
            "assets": {"ETH": {"local": "native"}, "USDT": {"local": self.usdt}},
            "liabilities_root": "por/root.json",
            "statements": "statements.yaml",
            **overrides,
        }

    def context(self, **config: Any) -> ActionContext:
        return context(config={**self.evm, "_workspace": str(self.root), **config})

    def run(self, **overrides: Any) -> dict[str, Any]:
        return run_action("reserves.assets", self.inputs(**overrides), self.context())


@pytest.fixture
def exchange(tmp_path: Path, chain: LocalChain) -> Exchange:
    return Exchange(tmp_path, chain)


def wallet(outputs: dict[str, Any], address: str) -> dict[str, Any]:
    (found,) = [w for w in outputs["wallets"] if w["address"] == address]
    return found


# --- the ratio, from the balances on the chain ----------------------------------------------


def test_the_reserve_ratio_is_exactly_what_the_chain_holds_against_the_liabilities(
    exchange: Exchange,
) -> None:
    chain = exchange.chain
    done = exchange.run(floor="1.0")
    assert done["block"] == chain.w3.eth.block_number  # latest, resolved to a number
    pinned = done["blocks"]["local"]
    assert pinned["number"] == done["block"]
    assert pinned["hash"] == "0x" + bytes(chain.w3.eth.get_block(done["block"])["hash"]).hex()
    assert pinned["chain_id"] == chain.chain_id
    eth, usdt = done["assets"]["ETH"], done["assets"]["USDT"]
    assert (eth["liabilities"], eth["decimals"]) == (str(80 * ETHER), 18)
    assert eth["reserves"] == str(100 * ETHER)
    assert eth["reserves_decimal"] == "100"
    assert (eth["ratio"], eth["ratio_float"]) == ("1.25", 1.25)
    assert (usdt["liabilities"], usdt["decimals"]) == (str(1_000_000 * USDT), 6)
    assert usdt["reserves"] == str(800_000 * USDT)
    assert usdt["uncontrolled"] == "0"
    assert (usdt["ratio"], usdt["ratio_float"]) == ("0.8", 0.8)
    assert usdt["held_on"] == [
        {"chain": "local", "token": exchange.usdt, "decimals": 6, "symbol": "USDT"}
    ]
    assert (done["min_ratio"], done["min_ratio_asset"]) == ("0.8", "USDT")
    assert done["below_floor"] is True
    assert done["assets_below_floor"] == ["USDT"]
    assert eth["below_floor"] is False
    assert usdt["below_floor"] is True
    assert done["not_compared"] == ["BTC"]  # owed, but held on no chain this step reads
    assert done["uncontrolled_wallets"] == []
    source = done["liabilities_source"]
    root = json.loads((exchange.root / "por" / "root.json").read_text(encoding="utf-8"))
    assert (source["kind"], source["root"], source["accounts"]) == ("root", root["root"], 2)
    assert len(source["sha256"]) == 64


def test_every_balance_is_read_at_the_pinned_block(exchange: Exchange) -> None:
    chain = exchange.chain
    pinned = chain.w3.eth.block_number
    before = exchange.run(block=pinned)
    chain.fund(exchange.cold.address, 20 * ETHER)  # after the pinned block
    chain.transact("PausableToken", exchange.usdt, "transfer", exchange.cold.address,
                   200_000 * USDT)  # fmt: skip
    again = exchange.run(block=str(pinned))
    assert again["block"] == pinned
    assert again["assets"] == before["assets"]
    assert wallet(again, exchange.cold.address)["balances"] == {
        "ETH": {"units": str(70 * ETHER), "decimals": 18, "token": "", "decimal": "70"},
        "USDT": {"units": str(600_000 * USDT), "decimals": 6, "token": exchange.usdt,
                 "decimal": "600000"},
    }  # fmt: skip
    now = exchange.run()  # latest: the transfers count
    assert now["block"] > pinned
    assert now["assets"]["ETH"]["ratio"] == "1.5"  # 120 / 80
    assert now["assets"]["USDT"]["ratio"] == "1"  # 1,000,000 / 1,000,000


def test_each_wallet_proves_control_with_a_signature_that_recovers_to_it(
    exchange: Exchange,
) -> None:
    done = exchange.run(nonce="auditor-challenge-7f3a")
    hot = wallet(done, exchange.hot.address)
    assert hot["controlled"] is True
    assert hot["label"] == "hot-1"
    proof = hot["proof"]
    assert proof["method"] == "signed"
    assert proof["valid"] is True
    assert proof["problem"] == ""
    message = proof["message"]
    chain_id = exchange.chain.chain_id
    for part in (EXCHANGE, exchange.hot.address, f"chain: local (chain id {chain_id})",
                 f"block: {done['block']} {done['blocks']['local']['hash']}",
                 "nonce: auditor-challenge-7f3a",
                 "irctl run test-run, step test-step"):  # fmt: skip
        assert part in message
    # anyone can check it with eth-account: EIP-191 personal_sign
    recovered = EthAccount.recover_message(encode_defunct(text=message),
                                           signature=proof["signature"])  # fmt: skip
    assert recovered == exchange.hot.address == proof["recovered"]
    cold = wallet(done, exchange.cold.address)
    assert cold["controlled"] is True
    assert cold["proof"]["method"] == "statement"
    assert cold["proof"]["source"] == "statements.yaml"
    assert cold["proof"]["signature"] == cold_statement(exchange.cold)["signature"]
    # no secret: the key file's content is nowhere in the outputs
    assert exchange.hot.private_key[2:] not in json.dumps(done)


def test_a_cold_statement_signed_by_another_key_leaves_the_wallet_uncontrolled(
    exchange: Exchange,
) -> None:
    impostor = exchange.chain.new_account()
    exchange.write_statements([cold_statement(exchange.cold, signer=impostor)])
    done = exchange.run(floor="0.5")
    cold = wallet(done, exchange.cold.address)
    assert cold["controlled"] is False
    assert cold["proof"]["recovered"] == impostor.address
    assert cold["proof"]["problem"] == (
        f"the signature was made by {impostor.address}, not by this address"
    )
    eth, usdt = done["assets"]["ETH"], done["assets"]["USDT"]
    assert (eth["reserves"], eth["uncontrolled"]) == (str(30 * ETHER), str(70 * ETHER))
    assert eth["ratio"] == "0.375"
    assert usdt["ratio"] == "0.2"
    assert done["assets_below_floor"] == ["ETH", "USDT"]
    assert done["uncontrolled_wallets"] == [{
        "chain": "local", "address": exchange.cold.address, "kind": "cold", "label": "cold-1",
        "reason": cold["proof"]["problem"],
    }]  # fmt: skip


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        (lambda ex: cold_statement(ex.cold, exchange="Another Exchange"),
         "does not name the exchange"),
        (lambda ex: cold_statement(ex.cold, chain="ethereum"), "no statement for this address"),
        (lambda ex: {**cold_statement(ex.cold), "message": "Example Exchange, edited: "
                     + ex.cold.address}, "the signature was made by 0x"),
        (lambda ex: {**cold_statement(ex.cold), "signature": "0x1234"}, "not 65 bytes"),
        (lambda ex: cold_statement(ex.hot), "no statement for this address"),
    ],
)  # fmt: skip
def test_a_statement_that_proves_nothing_about_this_exchange_does_not_count(
    exchange: Exchange, statement: Any, problem: str
) -> None:
    exchange.write_statements([statement(exchange)])
    cold = wallet(exchange.run(), exchange.cold.address)
    assert cold["controlled"] is False
    assert problem in cold["proof"]["problem"]


def test_a_hot_wallet_the_chains_signer_does_not_sign_for_is_uncontrolled(
    exchange: Exchange,
) -> None:
    other = exchange.chain.new_account(ether=5)
    wallets = [*exchange.wallets(), {"chain": "local", "address": other.address, "kind": "hot"}]
    done = exchange.run(wallets=wallets)
    found = wallet(done, other.address)
    assert found["controlled"] is False
    assert found["proof"]["problem"] == (
        f"the chain's signer signs for {exchange.hot.address}, not for this address"
    )
    assert done["assets"]["ETH"]["uncontrolled"] == str(5 * ETHER)
    assert done["assets"]["ETH"]["ratio"] == "1.25"  # unchanged: it does not count


def test_explicit_liabilities_from_the_ledger_instead_of_a_root(exchange: Exchange) -> None:
    ledger = {"ETH": {"decimals": 18, "total_decimal": "125"},
              "USDT": {"decimals": 6, "total": 800_000 * USDT}}  # fmt: skip
    done = exchange.run(liabilities_root=None, liabilities=ledger)
    assert done["liabilities_source"] == {"kind": "given"}
    assert done["assets"]["ETH"]["ratio"] == "0.8"
    assert done["assets"]["USDT"]["ratio"] == "1"
    assert done["below_floor"] is False
    assert done["floor"] is None
    # the root document's own list of assets is accepted as it is
    root = json.loads((exchange.root / "por" / "root.json").read_text(encoding="utf-8"))
    listed = exchange.run(liabilities_root=None, liabilities=root["assets"])
    assert listed["assets"]["USDT"]["ratio"] == "0.8"


def test_a_ledger_kept_at_fewer_decimals_than_the_chain_is_compared_exactly(
    exchange: Exchange,
) -> None:
    """ETH at 8 decimals in the ledger, 18 on chain (the native coin needs no declaration)."""
    ledger = {"ETH": {"decimals": 8, "total": str(80 * 10**8)},
              "USDT": {"decimals": 6, "total": str(1_000_000 * USDT)}}  # fmt: skip
    eth = exchange.run(liabilities_root=None, liabilities=ledger)["assets"]["ETH"]
    assert eth["decimals"] == 8
    assert eth["reserves"] == str(100 * 10**8)  # in the ledger's units
    assert eth["reserves_decimal"] == "100"
    assert eth["ratio"] == "1.25"


def test_one_asset_on_two_chains_each_read_at_its_own_pinned_block(exchange: Exchange) -> None:
    """USDT on a second chain, where its contract has 18 decimals (as on BNB Chain)."""
    with LocalChain() as other:
        vault = other.new_account()
        usdt18 = other.deploy_token(symbol="USDT", decimals=18, supply=10**6 * ETHER)
        other.transact("PausableToken", usdt18, "transfer", vault.address, 150_000 * ETHER)
        pinned = exchange.chain.w3.eth.block_number
        exchange.chain.fund(exchange.cold.address, ETHER)  # after the pinned block: not read
        exchange.write_statements([cold_statement(exchange.cold),
                                   cold_statement(vault, chain="other")])  # fmt: skip
        wallets = [*exchange.wallets(),
                   {"chain": "other", "address": vault.address, "kind": "cold"}]  # fmt: skip
        assets = {"ETH": {"local": "native"},
                  "USDT": {"local": exchange.usdt, "other": {"token": usdt18, "decimals": 18}}}
        ctx = exchange.context(rpc={"local": exchange.chain.url, "other": other.url})
        done = run_action("reserves.assets", exchange.inputs(
            wallets=wallets, assets=assets, block={"local": pinned, "other": "latest"}), ctx)
        assert done["block"] is None  # two chains: see blocks
        assert done["blocks"]["local"]["number"] == pinned
        assert done["blocks"]["other"]["number"] == other.w3.eth.block_number
        usdt = done["assets"]["USDT"]
        assert usdt["reserves"] == str(950_000 * USDT)
        assert usdt["ratio"] == "0.95"
        assert done["assets"]["ETH"]["ratio"] == "1.25"
        (vault_out,) = [w for w in done["wallets"] if w["chain"] == "other"]
        assert vault_out["balances"]["USDT"]["decimals"] == 18
        assert "ETH" not in vault_out["balances"]  # ETH is held on local only


def test_a_ratio_below_one_is_never_rounded_up(exchange: Exchange) -> None:
    owed = 100 * ETHER + 1  # one wei more than held
    done = exchange.run(liabilities_root=None, floor=1,
                        liabilities={"ETH": {"decimals": 18, "total": str(owed)},
                                     "USDT": {"decimals": 6, "total": "1"}})  # fmt: skip
    ratio = done["assets"]["ETH"]["ratio"]
    assert ratio == "0.999999999999"  # 0.99999999999999999999..., rounded down at 12 places
    assert Fraction(ratio) <= Fraction(100 * ETHER, owed)
    assert done["assets_below_floor"] == ["ETH"]


# --- a KMS-backed hot wallet (moto) ---------------------------------------------------------


def _kms_hot_wallet(aws: dict[str, Any], exchange: Exchange) -> tuple[str, dict[str, Any]]:
    from irctl_evm.signers import kms_signer

    kms = boto("kms", aws)
    made = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")
    kms.create_alias(AliasName="alias/hot-wallet", TargetKeyId=made["KeyMetadata"]["KeyId"])
    settings = {"kind": "kms", "key_id": "alias/hot-wallet", **aws}
    address = kms_signer(settings, "local").address  # derived from the key's public key
    exchange.chain.fund(address, 10 * ETHER)
    return address, settings


def test_a_kms_signer_signs_the_proof_and_a_signature_that_does_not_recover_is_refused(
    aws: dict[str, Any], exchange: Exchange
) -> None:
    """moto's KMS hashes the digest again, so its signature cannot recover to the key's
    address: the proof is refused, and the wallet does not count.  Against AWS the same call
    signs the digest as given (the DER and recovery path is tested with a local key in
    test_evm_signers)."""
    address, settings = _kms_hot_wallet(aws, exchange)
    wallets = [{"chain": "local", "address": address, "kind": "hot"},
               {"chain": "local", "address": exchange.cold.address, "kind": "cold"}]  # fmt: skip
    ctx = exchange.context(signer={"local": settings})
    done = run_action("reserves.assets", exchange.inputs(wallets=wallets), ctx)
    hot = wallet(done, address)
    assert hot["controlled"] is False
    assert "MessageType=DIGEST" in hot["proof"]["problem"]
    assert done["assets"]["ETH"]["uncontrolled"] == str(10 * ETHER)
    assert done["assets"]["ETH"]["reserves"] == str(70 * ETHER)  # the cold wallet only


def test_a_disabled_kms_key_is_not_enabled_to_prove_control(
    aws: dict[str, Any], exchange: Exchange
) -> None:
    address, settings = _kms_hot_wallet(aws, exchange)
    kms = boto("kms", aws)
    key_id = kms.describe_key(KeyId="alias/hot-wallet")["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key_id)
    ctx = exchange.context(signer={"local": {**settings, "enable_while_signing": True}})
    wallets = [{"chain": "local", "address": address, "kind": "hot"}]
    done = run_action("reserves.assets", exchange.inputs(wallets=wallets), ctx)
    problem = wallet(done, address)["proof"]["problem"]
    assert "is Disabled" in problem
    assert "never enables a disabled key" in problem
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


# --- mistakes: a clear message, no traceback ------------------------------------------------


def failure(exchange: Exchange, ctx: ActionContext | None = None, **overrides: Any) -> str:
    with pytest.raises(ActionError) as caught:
        run_action("reserves.assets", exchange.inputs(**overrides), ctx or exchange.context())
    return caught.value.message


def test_an_unreachable_rpc_endpoint_is_a_retryable_failure_naming_the_setting(
    exchange: Exchange,
) -> None:
    ctx = exchange.context(rpc={"local": "http://127.0.0.1:9"}, chain_id={})
    with pytest.raises(ActionError) as caught:
        run_action("reserves.assets", exchange.inputs(), ctx)
    assert caught.value.retryable is True
    assert caught.value.message == (
        "local: read the chain id: the RPC endpoint (integrations.reserves.rpc.local) is "
        "unreachable"
    )
    missing = failure(exchange, context(config={"_workspace": str(exchange.root)}))
    assert "integrations.reserves has no rpc" in missing
    assert "reserves: *evm" in missing


def test_a_block_that_is_not_on_the_chain_yet_is_refused(exchange: Exchange) -> None:
    head = exchange.chain.w3.eth.block_number
    assert failure(exchange, block=head + 1000) == (
        f"local: block {head + 1000} is not on the chain (its head is block {head})"
    )


def test_a_hot_wallet_without_a_signer_for_its_chain_is_uncontrolled(exchange: Exchange) -> None:
    done = run_action("reserves.assets", exchange.inputs(), exchange.context(signer={}))
    problem = wallet(done, exchange.hot.address)["proof"]["problem"]
    assert problem.startswith("the chain's signer cannot sign: no signer for chain 'local': set "
                              "integrations.reserves.signer.local in irctl.yaml")  # fmt: skip
    assert done["assets"]["ETH"]["reserves"] == str(70 * ETHER)


def test_a_token_that_is_not_an_erc20_is_refused(exchange: Exchange) -> None:
    eoa = exchange.chain.new_account().address
    assert failure(exchange, assets={"USDT": {"local": eoa}}) == (
        f"local: USDT's token {eoa} has no contract at block "
        f"{exchange.chain.w3.eth.block_number}: not an ERC-20 (a wrong address, or another "
        "chain's?)"
    )


def test_decimals_that_differ_from_the_declared_ones_are_refused(exchange: Exchange) -> None:
    eighteen = exchange.chain.deploy_token(symbol="USDX", decimals=18)
    message = failure(exchange, assets={"USDT": {"local": eighteen}})
    assert message.startswith(f"local: USDT's token {eighteen} has 18 decimals, but the "
                              "liabilities of USDT have 6")  # fmt: skip
    declared = failure(exchange, assets={"USDT": {"local": {"token": exchange.usdt,
                                                              "decimals": 8}}})  # fmt: skip
    assert "has 6 decimals, but assets.USDT.local.decimals says 8" in declared


def test_inputs_are_checked_before_anything_is_read(exchange: Exchange) -> None:
    act = default_registry.get("reserves.assets")

    def refused(**overrides: Any) -> str:
        with pytest.raises(ValueError) as caught:  # pydantic's ValidationError
            act.parse(exchange.inputs(**overrides))
        return str(caught.value)

    bad = exchange.hot.address[:2] + exchange.hot.address[2:].swapcase()
    assert "wrong EIP-55 checksum" in refused(
        wallets=[{"chain": "local", "address": bad, "kind": "hot"}])
    assert "listed twice" in refused(wallets=[*exchange.wallets(), exchange.wallets()[0]])
    assert "not both" in refused(liabilities={"ETH": {"decimals": 18, "total": "1"}})
    assert "a block number pins one chain" in refused(
        block=5, wallets=[*exchange.wallets(),
                          {"chain": "other", "address": exchange.hot.address, "kind": "hot"}])
    assert "are both native on local" in refused(
        assets={"ETH": {"local": "native"}, "WETH": {"local": "native"}})
    assert "not true or false" in refused(block=True)
    assert "float" in refused(liabilities_root=None,
                              liabilities={"ETH": {"decimals": 18, "total_decimal": 1.5}})
    # with every wallet on one chain, an asset may be given as just its token
    parsed = act.parse(exchange.inputs(assets={"ETH": "native", "USDT": exchange.usdt}))
    assert parsed.assets["USDT"]["local"].token == exchange.usdt


def test_files_that_cannot_be_used_fail_the_step(exchange: Exchange) -> None:
    assert failure(exchange, statements="nope.yaml") == "no statements file nope.yaml"
    assert "give statements" in failure(exchange, statements="")
    assert failure(exchange, liabilities_root="missing/root.json").startswith(
        "no liabilities root missing/root.json")
    (exchange.root / "statements.yaml").write_text("statements: [{address: 1}]\n")
    assert "'address' is missing or not text" in failure(exchange)
    assert "has no liabilities of DOGE" in failure(
        exchange, assets={"DOGE": {"local": exchange.usdt}})


def test_a_tabletop_drill_reads_and_signs_nothing(exchange: Exchange) -> None:
    chain = exchange.chain
    before = len(chain.requests)
    done = run_action("reserves.assets", exchange.inputs(floor="1.0"),
                      context(mode="tabletop"), simulate=True)  # fmt: skip
    assert done["simulated"] is True
    assert done["below_floor"] is False
    assert "sign a proof of control for 1 hot wallets" in done["would"]
    assert len(chain.requests) == before


# --- as a runbook step, through irctl itself ------------------------------------------------


RUNBOOK = """\
    irctl: 1
    kind: runbook
    id: reserves-check
    title: Proof of reserves against the last proof of liabilities
    params:
      floor: {type: string, default: "1.0"}
    steps:
      - id: reserves
        action: reserves.assets
        with:
          exchange: Example Exchange
          wallets: "{{ vars.reserve_wallets }}"
          assets: "{{ vars.reserve_assets }}"
          block: latest
          liabilities_root: por/root.json
          statements: statements.yaml
          floor: "{{ params.floor }}"
      - id: below
        when: "{{ steps.reserves.outputs.below_floor }}"
        action: notify.console
        with:
          message: "below the floor: {{ steps.reserves.outputs.assets_below_floor | join(', ') }}"
          level: critical
"""


def test_a_runbook_step_validates_runs_and_records_the_ratio(exchange: Exchange) -> None:
    evm = textwrap.indent(yaml.safe_dump(exchange.evm, default_flow_style=False), "    ")
    ws = make_workspace(
        exchange.root, {"reserves-check": RUNBOOK},
        vars={"reserve_wallets": json.dumps(exchange.wallets()),
              "reserve_assets": json.dumps({"ETH": {"local": "native"},
                                            "USDT": {"local": exchange.usdt}})},
        extra=f"integrations:\n  evm: &evm\n{evm}  reserves: *evm\n",
    )  # fmt: skip
    checked = irctl("validate", cwd=ws)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    done = irctl("run", "reserves-check", "--yes", "--unattended", cwd=ws)
    assert done.returncode == 0, done.stderr
    run_id = run_id_from(done)
    exported = irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws)
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    outputs = {e["data"]["step"]: e["data"]["outputs"] for e in events
               if e["type"] == "step.succeeded"}  # fmt: skip
    reserves = outputs["reserves"]
    assert reserves["assets"]["ETH"]["ratio"] == "1.25"
    assert reserves["assets"]["USDT"]["ratio"] == "0.8"
    assert reserves["assets_below_floor"] == ["USDT"]
    assert "below" in outputs  # the runbook branched on the output
    assert "BELOW THE FLOOR 1.0: USDT 0.8" in done.stdout + done.stderr + exported.stdout


def test_validate_reports_a_misspelt_input(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        irctl: 1
        kind: runbook
        id: typo
        title: A typo
        steps:
          - id: reserves
            action: reserves.assets
            with: {exchange: X, wallets: [], assets: {}, liabilites: {}}
        """)
    ws = make_workspace(tmp_path, {"typo": text})
    found = irctl("validate", cwd=ws)
    assert found.returncode == 2
    assert "unknown input 'liabilites' for reserves.assets (did you mean 'liabilities'?)" in (
        found.stdout + found.stderr
    )
