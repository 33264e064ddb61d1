"""Decoding and flags of Safe transactions, and ``irctl safe verify`` run as the real command
against files and a Safe Transaction Service stand-in on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from irctl_evm.safe.decoding import pack, selector
from irctl_evm.safe.tx import ZERO_ADDRESS, from_mapping
from irctl_evm.safe.verify import verify

from tests.helpers import irctl, make_workspace
from tests.test_safe_hashing import ARBITRUM_DOMAIN, ARBITRUM_MESSAGE, ARBITRUM_SAFE_TX

SAFE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
ATTACKER = "0x96221423681A6d52E184D440a8eFCEbB105C7242"  # the shape of Bybit's: a fresh contract
NEW_OWNER = "0x0c75Fa5a5F1C0997e3eEA425cFA13184ed0eC9e5"
MULTISEND_CALL_ONLY = "0x40A2aCCbd92BCA938b02010E17A5b8929b49130D"
SEPOLIA_SAFE_TX = "0xcb8bbe7bf8f8a1f3f57658e450d07d4422356ac042d96a87ba425b19e67a78a1"


def call(signature: str, types: list[str], values: list[Any]) -> bytes:
    return selector(signature) + encode(types, values)


def bybit_data() -> str:
    """A zero-value ``transfer`` whose first argument is really the new master copy."""
    return "0x" + call("transfer(address,uint256)", ["address", "uint256"], [ATTACKER, 0]).hex()


def tx(**fields: Any) -> Any:
    return from_mapping({"safe": SAFE, "chain_id": 1, "version": "1.1.1", "nonce": 71,
                         "to": TOKEN, **fields}, source="test")  # fmt: skip


def codes(found: Any) -> list[str]:
    return list(found.flag_codes)


# --- the library ---------------------------------------------------------------------------


def test_plain_token_transfer_has_no_flags() -> None:
    data = call("transfer(address,uint256)", ["address", "uint256"], [NEW_OWNER, 10**6])
    found = verify(tx(data="0x" + data.hex()))
    assert found.flags == ()
    assert found.call.method == "transfer"
    assert found.call.args == {"to": NEW_OWNER, "amount": 10**6}


def test_bybit_style_delegatecall_is_flagged_and_named_as_a_disguise() -> None:
    found = verify(tx(to=ATTACKER, data=bybit_data(), operation=1))
    assert codes(found) == ["delegatecall_untrusted"]
    message = found.flags[0].message
    assert ATTACKER in message
    assert "disguised as transfer(to=" in message
    assert "master copy (slot 0)" in message


def test_the_same_call_without_delegatecall_is_not_flagged() -> None:
    assert verify(tx(to=ATTACKER, data=bybit_data(), operation=0)).flags == ()


def test_nested_multisend_is_unpacked_and_every_level_checked() -> None:
    inner = pack([
        (0, SAFE, 0, call("addOwnerWithThreshold(address,uint256)", ["address", "uint256"],
                          [NEW_OWNER, 2])),
        (1, ATTACKER, 0, call("transfer(address,uint256)", ["address", "uint256"], [ATTACKER, 0])),
    ])  # fmt: skip
    outer = pack([
        (0, TOKEN, 5, b""),
        (1, MULTISEND_CALL_ONLY, 0, inner),
        (0, SAFE, 0, call("setGuard(address)", ["address"], [ZERO_ADDRESS])),
        (0, SAFE, 0, call("enableModule(address)", ["address"], [ATTACKER])),
        (0, SAFE, 0, call("setFallbackHandler(address)", ["address"], [ATTACKER])),
        (0, SAFE, 0, call("changeMasterCopy(address)", ["address"], [ATTACKER])),
    ])  # fmt: skip
    found = verify(tx(to=MULTISEND_CALL_ONLY, operation=1, data="0x" + outer.hex()))
    assert codes(found) == sorted([
        "owner_change", "threshold_change", "delegatecall_untrusted", "guard_change",
        "module_change", "fallback_handler_change", "master_copy_change",
    ])  # fmt: skip
    paths = {flag.code: flag.path for flag in found.flags}
    assert paths["owner_change"] == "transaction.multiSend[1].multiSend[0]"
    assert paths["delegatecall_untrusted"] == "transaction.multiSend[1].multiSend[1]"
    assert paths["guard_change"] == "transaction.multiSend[2]"
    assert [c.path for c in found.call.walk()][:3] == [
        "transaction", "transaction.multiSend[0]", "transaction.multiSend[1]",
    ]  # fmt: skip
    guard = next(f for f in found.flags if f.code == "guard_change")
    assert "removes the guard" in guard.message


def test_trusted_library_called_for_something_else_is_flagged() -> None:
    data = call("transfer(address,uint256)", ["address", "uint256"], [ATTACKER, 0])
    found = verify(tx(to=MULTISEND_CALL_ONLY, operation=1, data="0x" + data.hex()))
    assert codes(found) == ["delegatecall_untrusted"]
    assert "trusted only for multiSend" in found.flags[0].message


def test_workspace_trusted_library_is_accepted() -> None:
    found = verify(tx(to=ATTACKER, data=bybit_data(), operation=1),
                   trusted={ATTACKER.lower(): "our migration"})  # fmt: skip
    assert found.flags == ()


def test_gas_refund_fields_are_flagged() -> None:
    found = verify(tx(gas_price=3, base_gas=100, safe_tx_gas=1000, gas_token=TOKEN,
                      refund_receiver=ATTACKER))  # fmt: skip
    assert codes(found) == ["gas_price_nonzero", "gas_token_set", "refund_receiver_set"]
    assert "3300" in found.flags[0].message


def test_a_batch_that_does_not_parse_is_flagged_not_skipped() -> None:
    broken = selector("multiSend(bytes)") + encode(["bytes"], [b"\x00" + b"\x11" * 40])
    found = verify(tx(to=MULTISEND_CALL_ONLY, operation=1, data="0x" + broken.hex()))
    assert codes(found) == ["undecodable"]
    assert "cut short" in found.flags[0].message


def test_a_hash_the_source_claims_is_recomputed() -> None:
    honest = verify(tx())
    assert honest.flags == ()
    lying = verify(tx(safe_tx_hash="0x" + "ab" * 32))
    assert codes(lying) == ["hash_mismatch"]
    assert honest.hashes.safe_tx_hash in lying.flags[0].message
    wallet = verify(tx(), expected_hashes={"domain_hash": "0x" + "00" * 32})
    assert codes(wallet) == ["hash_mismatch"]


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


def verify_cli(ws: Path, *args: str) -> Any:
    done = irctl("safe", "verify", *args, cwd=ws)
    assert "Traceback" not in done.stdout + done.stderr
    return done


ARB = ["--safe", "0x111CEEee040739fD91D29C34C33E6B3E112F2177",
       "--to", "0x111CEEee040739fD91D29C34C33E6B3E112F2177", "--chain-id", "42161",
       "--version", "1.3.0", "--nonce", "234", "--data",
       "0x0d582f13" + "0c75fa5a5f1c0997e3eea425cfa13184ed0ec9e5".rjust(64, "0")
       + format(3, "064x")]  # fmt: skip


def test_cli_prints_the_hashes_hardware_wallets_show(workspace: Path) -> None:
    done = verify_cli(workspace, *ARB)
    assert done.returncode == 1, done.stderr  # adds an owner: flagged
    lines = done.stdout.splitlines()
    assert "  Domain hash   0x" + ARBITRUM_DOMAIN[2:].upper() in lines
    assert "  Message hash  0x" + ARBITRUM_MESSAGE[2:].upper() in lines
    assert "  safeTxHash    " + ARBITRUM_SAFE_TX in lines
    assert "owner_change" in done.stdout
    assert "threshold_change" in done.stdout


def test_cli_json_and_exit_0_when_clean(workspace: Path) -> None:
    done = verify_cli(workspace, "--safe", "0x657ff0D4eC65D82b2bC1247b0a558bcd2f80A0f1",
                      "--to", "0x255C3912f91eF11bFDadd405F13144a823Da8cc5",
                      "--value", "100000000000000000", "--chain-id", "11155111",
                      "--version", "1.3.0", "--nonce", "4", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["safe_tx_hash"] == SEPOLIA_SAFE_TX
    assert result["flags"] == []


def test_cli_flags_a_bybit_style_proposal_from_a_file(workspace: Path) -> None:
    path = workspace / "proposal.json"
    path.write_text(json.dumps({
        "safe": SAFE, "chainId": 1, "version": "1.1.1", "to": ATTACKER, "value": "0",
        "data": bybit_data(), "operation": 1, "safeTxGas": 45746, "baseGas": 0, "gasPrice": "0",
        "gasToken": ZERO_ADDRESS, "refundReceiver": ZERO_ADDRESS, "nonce": 71,
    }))  # fmt: skip
    done = verify_cli(workspace, "--file", str(path))
    assert done.returncode == 1
    assert "DELEGATECALL" in done.stdout
    assert "delegatecall_untrusted" in done.stdout
    assert "disguised as transfer(" in done.stdout
    # the legacy (pre-1.3.0) domain: no chain id, so the same on every chain
    other = verify_cli(workspace, "--file", str(path), "--chain-id", "5", "--json")
    first = verify_cli(workspace, "--file", str(path), "--json")
    assert json.loads(other.stdout)["domain_hash"] == json.loads(first.stdout)["domain_hash"]


def test_cli_registry_fills_version_and_trusts_its_libraries(workspace: Path) -> None:
    (workspace / "safe-registry.yaml").write_text(
        "irctl: 1\nkind: safe-registry\n"
        f"trusted_delegatecall:\n  - {{address: '{ATTACKER}', name: our migration}}\n"
        "safes:\n"
        f"  - {{name: cold, chain_id: 1, address: '{SAFE}', version: 1.1.1,\n"
        f"     singleton: '{TOKEN}', owners: ['{NEW_OWNER}'], threshold: 1}}\n"
    )
    done = verify_cli(workspace, "--safe", SAFE, "--to", ATTACKER, "--operation", "1",
                      "--data", bybit_data(), "--nonce", "71", "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["version"], result["chain_id"]) == ("1.1.1", 1)
    wrong = verify_cli(workspace, "--safe", SAFE, "--to", ATTACKER, "--nonce", "71",
                       "--version", "1.3.0")  # fmt: skip
    assert wrong.returncode == 2
    assert "version 1.1.1 in the registry" in wrong.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--safe",
                "0xnothex",
                "--to",
                SAFE,
                "--chain-id",
                "1",
                "--version",
                "1.3.0",
                "--nonce",
                "1",
            ],
            "safe: '0xnothex' is not an address",
        ),
        (
            [
                "--safe",
                SAFE.replace("a", "A", 1),
                "--to",
                SAFE,
                "--chain-id",
                "1",
                "--version",
                "1.3.0",
                "--nonce",
                "1",
            ],
            "wrong EIP-55 checksum",
        ),
        (
            [
                "--safe",
                SAFE,
                "--to",
                SAFE,
                "--chain-id",
                "1",
                "--version",
                "1.3.0",
                "--nonce",
                "1",
                "--data",
                "0x123",
            ],
            "is not hex data",
        ),
        (
            ["--safe", SAFE, "--to", SAFE, "--chain-id", "1", "--version", "2.0.0", "--nonce", "1"],
            "unknown Safe version '2.0.0'",
        ),
        (["--safe", SAFE, "--to", SAFE, "--chain-id", "1"], "missing version, nonce"),
        (
            [
                "--url",
                f"http://127.0.0.1:{_closed_port()}/api/v1/multisig-transactions/0x"
                + "11" * 32
                + "/",
            ],
            "cannot reach the service",
        ),
        (
            ["--url", "http://127.0.0.1:9/not-a-transaction"],
            "not a Safe Transaction Service transaction URL",
        ),
        (["--url", "file:///etc/passwd"], "not a Safe Transaction Service transaction URL"),
        (["--file", "missing.json"], "cannot read missing.json"),
        (
            [
                "--safe",
                SAFE,
                "--to",
                SAFE,
                "--chain-id",
                "1",
                "--version",
                "1.3.0",
                "--nonce",
                "1",
                "--expect-safe-tx-hash",
                "0x1234",
            ],
            "must be 32 bytes",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(
    workspace: Path, args: list[str], message: str
) -> None:
    done = verify_cli(workspace, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "internal error" not in done.stderr


def test_cli_malformed_json_file_exits_2(workspace: Path) -> None:
    (workspace / "bad.json").write_text('{"safe": "0x", ')
    done = verify_cli(workspace, "--file", "bad.json")
    assert done.returncode == 2
    assert "bad.json:1:" in done.stderr
    assert "not valid JSON" in done.stderr


# --- a Safe Transaction Service stand-in ----------------------------------------------------


class ServiceStandIn:
    """Serves STS-shaped JSON for the paths it was given, on 127.0.0.1; 404 otherwise."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.seen: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.seen.append(self.path)
                body = service.routes.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[ServiceStandIn]:
    stand_in = ServiceStandIn()
    yield stand_in
    stand_in.close()


def publish(service: ServiceStandIn, fields: dict[str, Any], safe_tx_hash: str) -> str:
    """The transaction at its URL, as the service would shape it."""
    path = f"/api/v1/multisig-transactions/{safe_tx_hash}/"
    service.routes[path] = {
        "safe": SAFE, "to": fields["to"], "value": "0", "data": fields.get("data"),
        "operation": fields.get("operation", 0), "gasToken": ZERO_ADDRESS, "safeTxGas": 45746,
        "baseGas": 0, "gasPrice": "0", "refundReceiver": ZERO_ADDRESS, "nonce": 71,
        "safeTxHash": safe_tx_hash, "isExecuted": False, "confirmations": [],
        "dataDecoded": {"method": "transfer", "parameters": []},
    }  # fmt: skip
    service.routes[f"/api/v1/safes/{SAFE}/"] = {
        "address": SAFE, "nonce": 71, "threshold": 3, "version": "1.1.1",
    }  # fmt: skip
    service.routes["/api/v1/about/ethereum-rpc/"] = {"chain_id": 1, "block_number": 1}
    return service.url + path


def test_cli_reads_a_proposal_from_the_service_and_flags_it(
    workspace: Path, service: ServiceStandIn
) -> None:
    fields = {"to": ATTACKER, "data": bybit_data(), "operation": 1}
    honest = verify(tx(**fields, safe_tx_gas=45746)).hashes.safe_tx_hash
    url = publish(service, fields, honest)
    done = verify_cli(workspace, "--url", url, "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["safe_tx_hash"] == honest
    assert result["flag_codes"] == ["delegatecall_untrusted"]
    assert any("as reported by the service" in note for note in result["notes"])
    assert f"/api/v1/safes/{SAFE}/" in service.seen


def test_cli_catches_a_service_that_lies_about_the_hash(
    workspace: Path, service: ServiceStandIn
) -> None:
    fields = {"to": TOKEN, "data": "0x"}
    lie = "0x" + "5f" * 32
    url = publish(service, fields, lie)
    done = verify_cli(workspace, "--url", url, "--chain-id", "1", "--version", "1.1.1")
    assert done.returncode == 1
    assert "hash_mismatch" in done.stdout
    assert "/api/v1/about/ethereum-rpc/" not in service.seen  # the chain id was given


def test_cli_service_errors_exit_2(workspace: Path, service: ServiceStandIn) -> None:
    missing = service.url + "/api/v1/multisig-transactions/0x" + "22" * 32 + "/"
    done = verify_cli(workspace, "--url", missing)
    assert done.returncode == 2
    assert "HTTP 404" in done.stderr
    service.routes["/api/v1/multisig-transactions/0x" + "33" * 32 + "/"] = b"<html>oops"
    done = verify_cli(workspace, "--url", service.url + "/api/v1/multisig-transactions/0x"
                      + "33" * 32 + "/")  # fmt: skip
    assert done.returncode == 2
    assert "did not answer with JSON" in done.stderr


def test_cli_service_transaction_must_be_for_the_safe_and_nonce_given(
    workspace: Path, service: ServiceStandIn
) -> None:
    fields = {"to": TOKEN, "data": "0x"}
    url = publish(service, fields, verify(tx(**fields, safe_tx_gas=45746)).hashes.safe_tx_hash)
    ok = verify_cli(workspace, "--url", url, "--safe", SAFE, "--nonce", "71")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    done = verify_cli(workspace, "--url", url, "--safe", TOKEN)
    assert done.returncode == 2
    assert f"the transaction is for Safe {SAFE}, not {TOKEN}" in done.stderr
    done = verify_cli(workspace, "--url", url, "--nonce", "70")
    assert done.returncode == 2
    assert "the transaction has nonce 71, not 70" in done.stderr


def test_verify_tx_action_compares_the_hash_signers_were_shown() -> None:
    from irctl.errors import ActionError
    from irctl.testing import run_action

    fields = {"safe": SAFE, "chain_id": 1, "version": "1.1.1", "nonce": 71, "to": TOKEN}
    shown = verify(tx()).hashes.safe_tx_hash
    assert run_action("safe.verify_tx", {**fields, "expect_safe_tx_hash": shown})["flags"] == []
    with pytest.raises(ActionError, match="hash_mismatch"):
        run_action("safe.verify_tx", {**fields, "expect_safe_tx_hash": "0x" + "12" * 32})
    with pytest.raises(ActionError, match="must be 32 bytes"):
        run_action("safe.verify_tx", {**fields, "expect_safe_tx_hash": "0x1234"})
    with pytest.raises(ActionError, match="unknown Safe version"):
        run_action("safe.verify_tx", {**fields, "version": "7"})
    url = "https://sts.invalid/api/v1/x"  # a drill reads no service: never contacted
    drill = run_action("safe.verify_tx", {"url": url}, simulate=True)
    assert drill == {"simulated": True, "would": f"read and verify the Safe transaction at {url}"}


def test_the_cli_and_the_integration_import_no_ethereum_library_until_used() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, irctl.cli.safe, irctl_evm.safe; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('web3', 'eth_abi', 'eth_utils', 'eth_account', 'eth_keys')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "[]"


# --- the registry: one address on several chains --------------------------------------------


def _two_chain_registry() -> Any:
    from irctl_evm.safe.registry import Registry, SafeEntry

    def entry(chain_id: int, version: str) -> SafeEntry:
        return SafeEntry(
            name=f"cold-{chain_id}", chain_id=chain_id, address=SAFE, version=version,
            singleton=TOKEN, owners=(NEW_OWNER,), threshold=1,
        )  # fmt: skip

    return Registry(path="safe-registry.yaml", safes=(entry(1, "1.1.1"), entry(10, "1.3.0")))


def test_the_registry_entry_is_the_one_of_the_chain_given(tmp_path: Path) -> None:
    from irctl_evm.safe.verify import load

    registry = _two_chain_registry()
    fields = {"safe": SAFE, "to": TOKEN, "nonce": "71"}
    on_10 = load({**fields, "chain_id": "10"}, registry=registry)
    assert (on_10.chain_id, on_10.version) == (10, "1.3.0")
    on_1 = load({**fields, "chain_id": "1"}, registry=registry)
    assert (on_1.chain_id, on_1.version) == (1, "1.1.1")
    path = tmp_path / "tx.json"
    path.write_text(json.dumps({**fields, "chainId": 10}))
    from_file = load({"safe": SAFE}, file=str(path), registry=registry)
    assert (from_file.chain_id, from_file.version) == (10, "1.3.0")


def test_a_safe_on_several_chains_needs_the_chain_id() -> None:
    from irctl_evm.safe.tx import SafeInputError
    from irctl_evm.safe.verify import load

    with pytest.raises(SafeInputError, match=r"on chains 1, 10: give the chain id \(--chain-id\)"):
        load({"safe": SAFE, "to": TOKEN, "nonce": "71"}, registry=_two_chain_registry())


def test_cli_a_safe_on_several_chains_needs_the_chain_id(workspace: Path) -> None:
    (workspace / "safe-registry.yaml").write_text(
        "irctl: 1\nkind: safe-registry\nsafes:\n"
        f"  - {{name: main, chain_id: 1, address: '{SAFE}', version: 1.1.1,\n"
        f"     singleton: '{TOKEN}', owners: ['{NEW_OWNER}'], threshold: 1}}\n"
        f"  - {{name: op, chain_id: 10, address: '{SAFE}', version: 1.3.0,\n"
        f"     singleton: '{TOKEN}', owners: ['{NEW_OWNER}'], threshold: 1}}\n"
    )
    guessed = verify_cli(workspace, "--safe", SAFE, "--to", TOKEN, "--nonce", "71")
    assert guessed.returncode == 2, guessed.stdout + guessed.stderr
    assert "--chain-id" in guessed.stderr
    done = verify_cli(workspace, "--safe", SAFE, "--to", TOKEN, "--nonce", "71",
                      "--chain-id", "10", "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (json.loads(done.stdout)["chain_id"], json.loads(done.stdout)["version"]) == (
        10,
        "1.3.0",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "-1"], "--timeout -1: give a positive number of seconds"),
        (["--timeout", "0"], "--timeout 0: give a positive number of seconds"),
        (["--expect-safe-tx-hash", "0xzz"], "--expect-safe-tx-hash"),
        (["--expect-domain-hash", "0xzz"], "--expect-domain-hash"),
    ],
)
def test_cli_option_mistakes_exit_2_naming_the_option(
    workspace: Path, args: list[str], message: str
) -> None:
    done = verify_cli(workspace, "--safe", SAFE, "--to", TOKEN, "--chain-id", "1",
                      "--version", "1.3.0", "--nonce", "1", *args)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "_hash" not in done.stderr  # the option's real name, not the parameter's
    assert "internal error" not in done.stderr


def test_cli_snapshot_refuses_a_negative_timeout(workspace: Path) -> None:
    done = irctl("safe", "snapshot", "--timeout", "-1", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--timeout -1: give a positive number of seconds" in done.stderr
