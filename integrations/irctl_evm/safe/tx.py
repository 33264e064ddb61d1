"""A Safe transaction as signers sign it, parsed once from arguments, a JSON file or a service.

Every value is checked where it enters: addresses are 20 bytes (a mixed-case
address must carry a valid EIP-55 checksum, so a mistyped one is caught), hex
is hex, integers fit their Solidity types, and the Safe version is one irctl
knows how to hash.  A mistake raises :class:`SafeInputError` naming the field
and the fix; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from irctl.errors import UsageError

ZERO_ADDRESS = "0x" + "00" * 20
UINT256_MAX = 2**256 - 1

#: Every released Safe version; the hashing rules depend on it (see hashing.py).
KNOWN_VERSIONS = (
    "0.1.0", "1.0.0", "1.1.0", "1.1.1", "1.2.0", "1.3.0", "1.4.0", "1.4.1", "1.5.0",
)  # fmt: skip

_HEX = re.compile(r"^0x([0-9a-fA-F]{2})*$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class SafeInputError(UsageError):
    """A Safe transaction, address or registry entry that cannot be used as given."""


def address(value: Any, what: str) -> str:
    """``value`` as a checksummed address; a mixed-case address must have a valid checksum."""
    from eth_utils.address import is_checksum_address, to_checksum_address

    if not isinstance(value, str) or not _ADDRESS.match(value.strip()):
        raise SafeInputError(f"{what}: {value!r} is not an address (0x and 40 hex digits)")
    text = value.strip()
    body = text[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(text):
        raise SafeInputError(
            f"{what}: {text} has a wrong EIP-55 checksum (a mistyped address?); "
            "check it against the source, or give it in lower case"
        )
    return str(to_checksum_address(text))


def hexbytes(value: Any, what: str) -> bytes:
    """``value`` (``0x``-prefixed hex, even length; ``None`` or ``""`` mean empty) as bytes."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str) or not _HEX.match(value.strip()):
        raise SafeInputError(
            f"{what}: {str(value)[:80]!r} is not hex data (0x followed by pairs of hex digits)"
        )
    return bytes.fromhex(value.strip()[2:])


def uint(value: Any, what: str, *, bits: int = 256) -> int:
    """``value`` (an int, a decimal string or a ``0x`` hex string) as an unsigned integer."""
    if isinstance(value, bool):
        raise SafeInputError(f"{what}: {value!r} is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*0x[0-9a-fA-F]+\s*", value):
        number = int(value.strip(), 16)
    else:
        raise SafeInputError(f"{what}: {value!r} is not a non-negative integer")
    if number < 0 or number >= 2**bits:
        raise SafeInputError(f"{what}: {number} does not fit a uint{bits}")
    return number


def version(value: Any, what: str = "") -> str:
    """A Safe version such as ``1.3.0`` (``+L2`` and a leading ``v`` are accepted)."""
    text = str(value).strip().lower().removeprefix("v").split("+", 1)[0]
    if text not in KNOWN_VERSIONS:
        where = f"{what}: " if what else ""
        raise SafeInputError(
            f"{where}unknown Safe version {value!r}: irctl knows {', '.join(KNOWN_VERSIONS)} "
            "(read VERSION() on the Safe, or the 'version' field of the transaction service)"
        )
    return text


@dataclass(frozen=True)
class SafeTx:
    """The fields a Safe owner signs, plus where the transaction came from."""

    safe: str
    chain_id: int
    version: str
    to: str
    value: int
    data: bytes
    operation: int
    safe_tx_gas: int
    base_gas: int
    gas_price: int
    gas_token: str
    refund_receiver: str
    nonce: int
    claimed_hash: str | None = None  # a safeTxHash the source asserted; recomputed, never trusted
    source: str = "arguments"
    notes: tuple[str, ...] = field(default=())


FIELDS = {
    # name in irctl / JSON file : name in the Safe Transaction Service
    "safe": "safe", "to": "to", "value": "value", "data": "data", "operation": "operation",
    "safe_tx_gas": "safeTxGas", "base_gas": "baseGas", "gas_price": "gasPrice",
    "gas_token": "gasToken", "refund_receiver": "refundReceiver", "nonce": "nonce",
    "chain_id": "chainId", "version": "version", "safe_tx_hash": "safeTxHash",
}  # fmt: skip
_ALIASES = {sts: ours for ours, sts in FIELDS.items()} | {"dataGas": "base_gas"}


def from_mapping(raw: dict[str, Any], *, source: str) -> SafeTx:
    """A SafeTx from a mapping in irctl's names or the Safe Transaction Service's (camelCase).

    Required: ``safe``, ``chain_id``, ``version``, ``to``, ``nonce``.  The rest
    default to a plain call: value 0, empty data, operation 0, no gas refund.
    """
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key if key in FIELDS else _ALIASES.get(key)
        if name is not None and value is not None:
            values[name] = value
    required = ("safe", "chain_id", "version", "to", "nonce")
    missing = [name for name in required if name not in values]
    if missing:
        raise SafeInputError(
            f"{source}: missing {', '.join(missing)} "
            f"(fields: {', '.join(sorted(set(FIELDS) - {'safe_tx_hash'}))})"
        )
    operation = uint(values.get("operation", 0), f"{source}: operation", bits=8)
    if operation not in (0, 1):
        raise SafeInputError(
            f"{source}: operation must be 0 (call) or 1 (delegatecall), not {operation}"
        )
    claimed = values.get("safe_tx_hash")
    if claimed is not None:
        digest = hexbytes(claimed, f"{source}: safe_tx_hash")
        if len(digest) != 32:
            raise SafeInputError(f"{source}: safe_tx_hash must be 32 bytes")
        claimed = "0x" + digest.hex()
    return SafeTx(
        safe=address(values["safe"], f"{source}: safe"),
        chain_id=uint(values["chain_id"], f"{source}: chain_id"),
        version=version(values["version"], f"{source}: version"),
        to=address(values["to"], f"{source}: to"),
        value=uint(values.get("value", 0), f"{source}: value"),
        data=hexbytes(values.get("data"), f"{source}: data"),
        operation=operation,
        safe_tx_gas=uint(values.get("safe_tx_gas", 0), f"{source}: safe_tx_gas"),
        base_gas=uint(values.get("base_gas", 0), f"{source}: base_gas"),
        gas_price=uint(values.get("gas_price", 0), f"{source}: gas_price"),
        gas_token=address(values.get("gas_token", ZERO_ADDRESS), f"{source}: gas_token"),
        refund_receiver=address(
            values.get("refund_receiver", ZERO_ADDRESS), f"{source}: refund_receiver"
        ),
        nonce=uint(values["nonce"], f"{source}: nonce"),
        claimed_hash=claimed,
        source=source,
    )


def read_file(path: str, overrides: dict[str, Any] | None = None) -> SafeTx:
    """A SafeTx from a JSON file: irctl's field names, or a saved transaction-service answer."""
    import json
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SafeInputError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SafeInputError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})"
        ) from exc
    if isinstance(raw, dict) and isinstance(raw.get("results"), list):
        if len(raw["results"]) != 1:  # a saved page of the service's list endpoint
            raise SafeInputError(
                f"{path}: holds {len(raw['results'])} transactions; save exactly one"
            )
        raw = raw["results"][0]
    if not isinstance(raw, dict):
        raise SafeInputError(f"{path}: expected a JSON object with the transaction's fields")
    return from_mapping({**raw, **(overrides or {})}, source=path)
