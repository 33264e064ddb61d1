"""The hashes a Safe owner signs, computed here and never taken from a service on trust.

::

    domainHash  = keccak256(abi.encode(DOMAIN_TYPEHASH, chainId, safe))   # Safe >= 1.3.0
                = keccak256(abi.encode(DOMAIN_TYPEHASH_OLD, safe))         # Safe <  1.3.0
    messageHash = keccak256(abi.encode(SAFE_TX_TYPEHASH, to, value, keccak256(data),
                            operation, safeTxGas, baseGas, gasPrice, gasToken,
                            refundReceiver, nonce))
    safeTxHash  = keccak256(0x19 || 0x01 || domainHash || messageHash)

Safe 0.1.0 named ``baseGas`` ``dataGas``, which changes the type hash.  A
hardware wallet signing an EIP-712 Safe transaction shows the domain hash and
the message hash; the Safe web app and the transaction service show the
safeTxHash.  Keccak-256 comes from eth_utils (``hashlib.sha3_256`` is not
Keccak-256), imported only when a hash is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from irctl_evm.safe.tx import SafeTx

DOMAIN_TYPE = "EIP712Domain(uint256 chainId,address verifyingContract)"
DOMAIN_TYPE_OLD = "EIP712Domain(address verifyingContract)"
SAFE_TX_TYPE = (
    "SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,"
    "uint256 baseGas,uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)"
)
SAFE_TX_TYPE_OLD = SAFE_TX_TYPE.replace("baseGas", "dataGas")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def domain_has_chain_id(version: str) -> bool:
    """Safe 1.3.0 added the chain id to the EIP-712 domain (replay protection across chains)."""
    return _release(version) >= (1, 3, 0)


def safe_tx_type(version: str) -> str:
    return SAFE_TX_TYPE if _release(version) >= (1, 0, 0) else SAFE_TX_TYPE_OLD


@dataclass(frozen=True)
class SafeTxHashes:
    """The three hashes, as ``0x`` hex: what hardware wallets and the Safe app display."""

    domain_hash: str
    message_hash: str
    safe_tx_hash: str
    domain_type: str
    message_type: str


def domain_hash(safe: str, chain_id: int, version: str) -> bytes:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    if domain_has_chain_id(version):
        return bytes(
            keccak(
                encode(
                    ["bytes32", "uint256", "address"],
                    [keccak(text=DOMAIN_TYPE), chain_id, safe],
                )
            )
        )
    return bytes(keccak(encode(["bytes32", "address"], [keccak(text=DOMAIN_TYPE_OLD), safe])))


def message_hash(tx: SafeTx) -> bytes:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    types = ["bytes32", "address", "uint256", "bytes32", "uint8", "uint256", "uint256",
             "uint256", "address", "address", "uint256"]  # fmt: skip
    values = [
        keccak(text=safe_tx_type(tx.version)), tx.to, tx.value, keccak(tx.data), tx.operation,
        tx.safe_tx_gas, tx.base_gas, tx.gas_price, tx.gas_token, tx.refund_receiver, tx.nonce,
    ]  # fmt: skip
    return bytes(keccak(encode(types, values)))


def hashes(tx: SafeTx) -> SafeTxHashes:
    """Domain hash, message hash and safeTxHash of ``tx`` for its Safe version and chain."""
    from eth_utils.crypto import keccak

    domain = domain_hash(tx.safe, tx.chain_id, tx.version)
    message = message_hash(tx)
    safe_tx = bytes(keccak(b"\x19\x01" + domain + message))
    return SafeTxHashes(
        domain_hash="0x" + domain.hex(),
        message_hash="0x" + message.hex(),
        safe_tx_hash="0x" + safe_tx.hex(),
        domain_type=DOMAIN_TYPE if domain_has_chain_id(tx.version) else DOMAIN_TYPE_OLD,
        message_type=safe_tx_type(tx.version),
    )
