"""What a Safe transaction's call data does: the known Safe and token methods, and batches.

A ``multiSend(bytes)`` packs its calls back to back, each as
``operation (1 byte) || to (20) || value (32) || data length (32) || data``;
:func:`decode` unpacks them, and a call inside a batch that is itself a batch
is unpacked again (to :data:`MAX_DEPTH`).  Data that claims to be a batch but
does not parse is reported as undecodable, never skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

MAX_DEPTH = 8

#: Methods worth naming, as their signatures and argument names.
METHODS: dict[str, tuple[str, ...]] = {
    # the Safe managing itself (OwnerManager, ModuleManager, GuardManager, FallbackManager)
    "addOwnerWithThreshold(address,uint256)": ("owner", "threshold"),
    "removeOwner(address,address,uint256)": ("prev_owner", "owner", "threshold"),
    "swapOwner(address,address,address)": ("prev_owner", "old_owner", "new_owner"),
    "changeThreshold(uint256)": ("threshold",),
    "enableModule(address)": ("module",),
    "disableModule(address,address)": ("prev_module", "module"),
    "setGuard(address)": ("guard",),
    "setModuleGuard(address)": ("module_guard",),
    "setFallbackHandler(address)": ("handler",),
    "changeMasterCopy(address)": ("master_copy",),
    # SafeMigration (1.4.1): delegatecalled, rewrites the singleton (slot 0)
    "migrateSingleton()": (),
    "migrateWithFallbackHandler()": (),
    "migrateL2Singleton()": (),
    "migrateL2WithFallbackHandler()": (),
    # libraries
    "multiSend(bytes)": ("transactions",),
    "signMessage(bytes)": ("message",),
    # tokens: what a disguised call usually pretends to be
    "transfer(address,uint256)": ("to", "amount"),
    "transferFrom(address,address,uint256)": ("from", "to", "amount"),
    "approve(address,uint256)": ("spender", "amount"),
}


@cache
def _selectors() -> dict[bytes, tuple[str, list[str], tuple[str, ...]]]:
    from eth_utils.crypto import keccak

    table = {}
    for signature, names in METHODS.items():
        name, _, rest = signature.partition("(")
        types = [t for t in rest.rstrip(")").split(",") if t]
        table[bytes(keccak(text=signature))[:4]] = (name, types, names)
    return table


def selector(signature: str) -> bytes:
    from eth_utils.crypto import keccak

    return bytes(keccak(text=signature))[:4]


@dataclass(frozen=True)
class Call:
    """One call of a transaction; ``children`` are the calls of a batch it carries."""

    path: str
    to: str
    value: int
    data: bytes
    operation: int
    method: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    children: tuple[Call, ...] = ()
    problem: str | None = None  # why the data could not be decoded

    @property
    def signature(self) -> str:
        if self.method is None:
            return f"0x{self.data[:4].hex()}…" if self.data else "(no data)"
        shown = ", ".join(
            f"{name}={value}" for name, value in self.args.items() if name != "transactions"
        )
        return f"{self.method}({shown})"

    def walk(self) -> list[Call]:
        """This call and every call nested in it, depth first."""
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "to": self.to,
            "value": str(self.value),
            "operation": self.operation,
            "data": "0x" + self.data.hex(),
            "method": self.method,
            "args": {k: v for k, v in self.args.items() if k != "transactions"},
            "calls": [child.as_json() for child in self.children],
            "problem": self.problem,
        }


def decode(path: str, to: str, value: int, data: bytes, operation: int, depth: int = 0) -> Call:
    """The call with its method and arguments named, and a batch's calls unpacked."""
    from eth_abi.abi import decode as abi_decode
    from eth_utils.address import to_checksum_address

    plain = Call(path, to, value, data, operation)
    if len(data) < 4:
        return plain
    known = _selectors().get(data[:4])
    if known is None:
        return plain
    name, types, names = known
    try:
        raw = abi_decode(types, data[4:])
    except Exception as exc:  # eth_abi raises several unrelated types for bad data
        return Call(path, to, value, data, operation, name, {},
                    problem=f"arguments of {name} do not decode: {exc}")  # fmt: skip
    args: dict[str, Any] = {}
    for arg_name, arg_type, arg in zip(names, types, raw, strict=True):
        if arg_type == "address":
            args[arg_name] = str(to_checksum_address(arg))
        elif arg_type == "bytes":
            args[arg_name] = "0x" + bytes(arg).hex()
        else:
            args[arg_name] = int(arg)
    if name != "multiSend":
        return Call(path, to, value, data, operation, name, args)
    if depth >= MAX_DEPTH:
        return Call(path, to, value, data, operation, name, args,
                    problem=f"batches nested deeper than {MAX_DEPTH}")  # fmt: skip
    children, problem = _unpack(path, bytes(raw[0]), depth)
    return Call(path, to, value, data, operation, name, args, tuple(children), problem)


def _unpack(path: str, packed: bytes, depth: int) -> tuple[list[Call], str | None]:
    from eth_utils.address import to_checksum_address

    calls: list[Call] = []
    at = 0
    while at < len(packed):
        if len(packed) - at < 85:
            return calls, f"batch entry {len(calls)} is cut short at byte {at}"
        operation = packed[at]
        to = str(to_checksum_address(packed[at + 1 : at + 21]))
        value = int.from_bytes(packed[at + 21 : at + 53], "big")
        length = int.from_bytes(packed[at + 53 : at + 85], "big")
        start = at + 85
        if length > len(packed) - start:
            return calls, f"batch entry {len(calls)} claims {length} bytes of data past the end"
        data = packed[start : start + length]
        if operation not in (0, 1):
            return calls, f"batch entry {len(calls)} has operation {operation} (only 0 or 1)"
        calls.append(decode(f"{path}.multiSend[{len(calls)}]", to, value, data, operation,
                            depth + 1))  # fmt: skip
        at = start + length
    return calls, None


def pack(calls: list[tuple[int, str, int, bytes]]) -> bytes:
    """``multiSend`` call data for ``(operation, to, value, data)`` calls (tests, drills)."""
    from eth_abi.abi import encode

    packed = b"".join(
        bytes([op]) + bytes.fromhex(to[2:]) + value.to_bytes(32, "big")
        + len(data).to_bytes(32, "big") + data
        for op, to, value, data in calls
    )  # fmt: skip
    return selector("multiSend(bytes)") + encode(["bytes"], [packed])
