"""Safe transaction hashes: the public vectors exactly, and every version's rules checked
against eth-account's independent EIP-712 implementation."""

from __future__ import annotations

from typing import Any

import pytest
from irctl_evm.safe.hashing import SAFE_TX_TYPE, SAFE_TX_TYPE_OLD, hashes
from irctl_evm.safe.tx import KNOWN_VERSIONS, SafeInputError, from_mapping

ARBITRUM_SAFE = "0x111CEEee040739fD91D29C34C33E6B3E112F2177"
ARBITRUM_DOMAIN = "0x1cf7f9b1efe3bc47fe02fd27c649fea19e79d66040683a1c86c7490c80bf7291"
ARBITRUM_MESSAGE = "0xd9109ea63c50ecd3b80b6b27ed5c5a9fd3d546c2169dfb69bfa7ba24cd14c7a5"
ARBITRUM_SAFE_TX = "0x0cb7250b8becd7069223c54e2839feaed4cee156363fbfe5dd0a48e75c4e25b3"
ADD_OWNER = (
    "0x0d582f13"
    + "0c75fa5a5f1c0997e3eea425cfa13184ed0ec9e5".rjust(64, "0")
    + format(3, "064x")
)


def test_arbitrum_vector_matches_exactly() -> None:
    tx = from_mapping(
        {"safe": ARBITRUM_SAFE, "to": ARBITRUM_SAFE, "data": ADD_OWNER, "chain_id": 42161,
         "version": "1.3.0", "nonce": 234},
        source="vector",
    )  # fmt: skip
    found = hashes(tx)
    assert found.domain_hash == ARBITRUM_DOMAIN
    assert found.message_hash == ARBITRUM_MESSAGE
    assert found.safe_tx_hash == ARBITRUM_SAFE_TX


def test_sepolia_vector_matches_exactly() -> None:
    tx = from_mapping(
        {"safe": "0x657ff0D4eC65D82b2bC1247b0a558bcd2f80A0f1",
         "to": "0x255C3912f91eF11bFDadd405F13144a823Da8cc5", "value": 10**17, "data": "0x",
         "chain_id": 11155111, "version": "1.3.0", "nonce": 4},
        source="vector",
    )  # fmt: skip
    assert (
        hashes(tx).safe_tx_hash
        == "0xcb8bbe7bf8f8a1f3f57658e450d07d4422356ac042d96a87ba425b19e67a78a1"
    )


def test_service_field_names_hash_the_same() -> None:
    ours = from_mapping(
        {"safe": ARBITRUM_SAFE, "to": ARBITRUM_SAFE, "data": ADD_OWNER, "chain_id": 42161,
         "version": "1.3.0+L2", "nonce": "234", "safe_tx_gas": 0, "base_gas": "0"},
        source="a",
    )  # fmt: skip
    theirs = from_mapping(
        {"safe": ARBITRUM_SAFE, "to": ARBITRUM_SAFE, "data": ADD_OWNER, "chainId": "42161",
         "version": "1.3.0", "nonce": 234, "safeTxGas": "0", "baseGas": 0, "gasPrice": "0",
         "gasToken": "0x0000000000000000000000000000000000000000", "refundReceiver": None,
         "operation": 0, "value": "0"},
        source="b",
    )  # fmt: skip
    assert hashes(ours) == hashes(theirs)


def _eip712(fields: dict[str, Any], version: str) -> tuple[bytes, bytes, bytes]:
    """The same hashes by eth-account's own EIP-712 encoder (header, body, full)."""
    from eth_account.messages import encode_typed_data
    from eth_utils.crypto import keccak

    with_chain = tuple(int(p) for p in version.split(".")) >= (1, 3, 0)
    gas_name = "baseGas" if tuple(int(p) for p in version.split(".")) >= (1, 0, 0) else "dataGas"
    domain_fields = [{"name": "verifyingContract", "type": "address"}]
    domain: dict[str, Any] = {"verifyingContract": fields["safe"]}
    if with_chain:
        domain_fields.insert(0, {"name": "chainId", "type": "uint256"})
        domain["chainId"] = fields["chain_id"]
    message = {
        "to": fields["to"], "value": fields["value"], "data": bytes.fromhex(fields["data"][2:]),
        "operation": fields["operation"], "safeTxGas": fields["safe_tx_gas"],
        gas_name: fields["base_gas"], "gasPrice": fields["gas_price"],
        "gasToken": fields["gas_token"], "refundReceiver": fields["refund_receiver"],
        "nonce": fields["nonce"],
    }  # fmt: skip
    types = {
        "EIP712Domain": domain_fields,
        "SafeTx": [
            {"name": "to", "type": "address"}, {"name": "value", "type": "uint256"},
            {"name": "data", "type": "bytes"}, {"name": "operation", "type": "uint8"},
            {"name": "safeTxGas", "type": "uint256"}, {"name": gas_name, "type": "uint256"},
            {"name": "gasPrice", "type": "uint256"}, {"name": "gasToken", "type": "address"},
            {"name": "refundReceiver", "type": "address"}, {"name": "nonce", "type": "uint256"},
        ],
    }  # fmt: skip
    signable = encode_typed_data(
        full_message={"types": types, "primaryType": "SafeTx", "domain": domain,
                      "message": message}
    )  # fmt: skip
    full = keccak(b"\x19" + signable.version + signable.header + signable.body)
    return signable.header, signable.body, full


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_every_version_agrees_with_an_independent_eip712_encoder(version: str) -> None:
    fields = {
        "safe": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "to": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "value": 123456789, "data": "0xa9059cbb" + "11" * 64, "operation": 1,
        "safe_tx_gas": 50000, "base_gas": 21000, "gas_price": 7,
        "gas_token": "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "refund_receiver": "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        "nonce": 42, "chain_id": 1,
    }  # fmt: skip
    tx = from_mapping({**fields, "version": version}, source="test")
    header, body, full = _eip712(fields, version)
    found = hashes(tx)
    assert found.domain_hash == "0x" + header.hex()
    assert found.message_hash == "0x" + body.hex()
    assert found.safe_tx_hash == "0x" + full.hex()


def test_legacy_domain_has_no_chain_id_and_0_1_0_signs_data_gas() -> None:
    base = {"safe": ARBITRUM_SAFE, "to": ARBITRUM_SAFE, "nonce": 1}
    old = [hashes(from_mapping({**base, "chain_id": c, "version": "1.2.0"}, source="t"))
           for c in (1, 42161)]  # fmt: skip
    new = [hashes(from_mapping({**base, "chain_id": c, "version": "1.3.0"}, source="t"))
           for c in (1, 42161)]  # fmt: skip
    assert old[0].domain_hash == old[1].domain_hash  # a legacy domain ignores the chain
    assert new[0].domain_hash != new[1].domain_hash
    assert old[0].domain_type == "EIP712Domain(address verifyingContract)"
    zero = hashes(from_mapping({**base, "chain_id": 1, "version": "0.1.0"}, source="t"))
    assert zero.message_type == SAFE_TX_TYPE_OLD != SAFE_TX_TYPE
    assert zero.message_hash != old[0].message_hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "1.3.1"}, "unknown Safe version '1.3.1'"),
        ({"safe": "0x1234"}, "safe: '0x1234' is not an address"),
        ({"to": "0x111CEEee040739fD91D29C34C33E6B3E112F2178"}, "wrong EIP-55 checksum"),
        ({"data": "0xabc"}, "is not hex data"),
        ({"data": "0xzz"}, "is not hex data"),
        ({"nonce": -1}, "does not fit a uint256"),
        ({"nonce": "twelve"}, "is not a non-negative integer"),
        ({"operation": 2}, "operation must be 0 (call) or 1 (delegatecall)"),
        ({"value": 2**256}, "does not fit a uint256"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], message: str) -> None:
    fields = {"safe": ARBITRUM_SAFE, "to": ARBITRUM_SAFE, "chain_id": 1, "version": "1.3.0",
              "nonce": 0, **change}  # fmt: skip
    with pytest.raises(SafeInputError, match=None) as caught:
        from_mapping(fields, source="input")
    assert message in str(caught.value)


def test_missing_fields_are_listed() -> None:
    with pytest.raises(SafeInputError) as caught:
        from_mapping({"to": ARBITRUM_SAFE}, source="input")
    assert "missing safe, chain_id, version, nonce" in str(caught.value)
