"""Read a Safe's state on chain and compare it with the workspace's registry.

What is read, with calls any Safe >= 1.0 answers and raw storage reads that
do not depend on the code at the Safe's address (an attacker who replaced the
singleton controls what the calls answer, not what storage holds):

==================  =========================================================================
singleton           storage slot 0: the master copy every call is delegated to
guard               storage slot keccak256("guard_manager.guard.address")
fallback_handler    storage slot keccak256("fallback_manager.handler.address")
owners, threshold   ``getOwners()``, ``getThreshold()``
nonce, version      ``nonce()``, ``VERSION()``
modules             ``getModulesPaginated(SENTINEL, 100)``
==================  =========================================================================

Snapshot flags: ``not_in_registry``, ``singleton_mismatch``, ``owners_mismatch``,
``threshold_mismatch``, ``guard_mismatch``, ``fallback_handler_mismatch``,
``modules_mismatch``, ``version_mismatch`` and ``unreadable`` (a call that
reverted or answered nonsense: after a singleton swap the Safe's methods are
the attacker's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from irctl_evm.safe.registry import Registry, SafeEntry
from irctl_evm.safe.verify import Flag

GUARD_SLOT = 0x4A204F620C8C5CCDCA3FD54D003BADD85BA500436A431F0CBDA4F558C93C34C8
FALLBACK_HANDLER_SLOT = 0x6C9A6C4A39284E37ED1CF53D337577D14212A4870FB976A4366C693B939918D5
SENTINEL = "0x0000000000000000000000000000000000000001"

SNAPSHOT_FLAGS = (
    "not_in_registry", "singleton_mismatch", "owners_mismatch", "threshold_mismatch",
    "guard_mismatch", "fallback_handler_mismatch", "modules_mismatch", "version_mismatch",
    "unreadable",
)  # fmt: skip

_ABI: list[dict[str, Any]] = [
    {"name": "getOwners", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address[]"}]},
    {"name": "getThreshold", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"name": "nonce", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"name": "VERSION", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"name": "getModulesPaginated", "type": "function", "stateMutability": "view",
     "inputs": [{"name": "start", "type": "address"}, {"name": "pageSize", "type": "uint256"}],
     "outputs": [{"name": "array", "type": "address[]"}, {"name": "next", "type": "address"}]},
]  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    """A Safe as read on chain at one block, and how it differs from the registry."""

    safe: str
    chain_id: int
    block: int
    singleton: str
    guard: str
    fallback_handler: str
    owners: tuple[str, ...] | None
    threshold: int | None
    nonce: int | None
    version: str | None
    modules: tuple[str, ...] | None
    name: str | None = None
    flags: tuple[Flag, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "safe": self.safe, "name": self.name, "chain_id": self.chain_id,
            "block": self.block, "singleton": self.singleton, "guard": self.guard,
            "fallback_handler": self.fallback_handler,
            "owners": list(self.owners) if self.owners is not None else None,
            "threshold": self.threshold, "nonce": self.nonce, "version": self.version,
            "modules": list(self.modules) if self.modules is not None else None,
            "flags": [flag.as_json() for flag in self.flags],
            "flag_codes": sorted({flag.code for flag in self.flags}),
        }  # fmt: skip


def _slot_address(w3: Any, safe: str, slot: int, block: int | str) -> str:
    from eth_utils.address import to_checksum_address

    raw = bytes(w3.eth.get_storage_at(safe, slot, block_identifier=block))
    return str(to_checksum_address(raw.rjust(32, b"\0")[-20:]))


def read(
    w3: Any, safe: str, *, block: int | None = None, hide: tuple[str, ...] = ()
) -> tuple[Snapshot, list[Flag]]:
    """Read ``safe`` through a web3 connection; calls that fail become ``unreadable`` flags.

    ``hide`` lists text never to repeat in a flag (the node URL, which may hold an API key).
    """
    from eth_utils.address import to_checksum_address

    # The block read first is recorded; reads use it when one is given, else "latest" (the
    # local test chain takes no hex block numbers; a real node takes both).
    number = int(w3.eth.block_number) if block is None else block
    at: int | str = "latest" if block is None else block
    contract = w3.eth.contract(address=safe, abi=_ABI)
    problems: list[Flag] = []

    def attempt(what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # web3 raises many types for a revert or bad return data
            text = str(exc)
            for secret in hide:
                text = text.replace(secret, "••••")
            problems.append(Flag(
                "unreadable", f"{what} on Safe {safe} failed ({type(exc).__name__}: {text})",
                what,
            ))  # fmt: skip
            return None

    owners = attempt(
        "getOwners()", lambda: contract.functions.getOwners().call(block_identifier=at)
    )
    threshold = attempt(
        "getThreshold()", lambda: contract.functions.getThreshold().call(block_identifier=at)
    )
    nonce = attempt("nonce()", lambda: contract.functions.nonce().call(block_identifier=at))
    version = attempt("VERSION()", lambda: contract.functions.VERSION().call(block_identifier=at))
    modules = attempt(
        "getModulesPaginated()",
        lambda: contract.functions.getModulesPaginated(SENTINEL, 100).call(block_identifier=at),
    )
    snap = Snapshot(
        safe=safe,
        chain_id=int(w3.eth.chain_id),
        block=number,
        singleton=_slot_address(w3, safe, 0, at),
        guard=_slot_address(w3, safe, GUARD_SLOT, at),
        fallback_handler=_slot_address(w3, safe, FALLBACK_HANDLER_SLOT, at),
        owners=tuple(str(to_checksum_address(o)) for o in owners) if owners is not None else None,
        threshold=int(threshold) if threshold is not None else None,
        nonce=int(nonce) if nonce is not None else None,
        version=str(version) if version is not None else None,
        modules=(
            tuple(str(to_checksum_address(m)) for m in modules[0]) if modules is not None else None
        ),
    )
    return snap, problems


def compare(snap: Snapshot, entry: SafeEntry | None) -> list[Flag]:
    """How the Safe on chain differs from its registry entry (each difference a flag)."""
    if entry is None:
        return [Flag("not_in_registry",
                     f"Safe {snap.safe} on chain {snap.chain_id} is not in the Safe registry: "
                     "nothing to compare it with", "registry")]  # fmt: skip
    flags: list[Flag] = []

    def differs(code: str, what: str, found: Any, expected: Any) -> None:
        flags.append(Flag(code, f"{what} is {found}, the registry says {expected}", what))

    if snap.singleton != entry.singleton:
        differs("singleton_mismatch", "singleton (slot 0)", snap.singleton, entry.singleton)
    if snap.guard != entry.guard:
        differs("guard_mismatch", "guard", snap.guard, entry.guard)
    if entry.fallback_handler is not None and snap.fallback_handler != entry.fallback_handler:
        differs("fallback_handler_mismatch", "fallback handler", snap.fallback_handler,
                entry.fallback_handler)  # fmt: skip
    if snap.owners is not None and set(snap.owners) != set(entry.owners):
        added = sorted(set(snap.owners) - set(entry.owners))
        removed = sorted(set(entry.owners) - set(snap.owners))
        flags.append(Flag(
            "owners_mismatch",
            f"owners differ from the registry: added {', '.join(added) or 'none'}; "
            f"missing {', '.join(removed) or 'none'}",
            "owners",
        ))  # fmt: skip
    if snap.threshold is not None and snap.threshold != entry.threshold:
        differs("threshold_mismatch", "threshold", snap.threshold, entry.threshold)
    if snap.modules is not None and set(snap.modules) != set(entry.modules):
        differs("modules_mismatch", "modules", list(snap.modules) or "none",
                list(entry.modules) or "none")  # fmt: skip
    if snap.version is not None and snap.version.split("+")[0] != entry.version:
        differs("version_mismatch", "version", snap.version, entry.version)
    return flags


def snapshot(
    w3: Any,
    safe: str,
    entry: SafeEntry | None,
    *,
    block: int | None = None,
    hide: tuple[str, ...] = (),
) -> Snapshot:
    """Read ``safe`` and compare it with ``entry``; the result carries every flag."""
    from dataclasses import replace

    snap, problems = read(w3, safe, block=block, hide=hide)
    if entry is not None and entry.chain_id != snap.chain_id:
        from irctl_evm.safe.tx import SafeInputError

        raise SafeInputError(
            f"Safe {entry.name} is on chain {entry.chain_id} in the registry, but the RPC "
            f"endpoint serves chain {snap.chain_id}"
        )
    flags = problems + compare(snap, entry)
    return replace(snap, name=entry.name if entry else None, flags=tuple(flags))


def connect(url: str, *, timeout: float = 20.0) -> Any:
    """A web3 connection to the node at ``url`` (``http``/``https`` only)."""
    from web3 import HTTPProvider, Web3

    if not url.startswith(("http://", "https://")):
        from irctl_evm.safe.tx import SafeInputError

        raise SafeInputError("the RPC endpoint must be an http:// or https:// URL")
    return Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))


def chain_facts(w3: Any, safe: str) -> tuple[int, str]:
    """The chain id the node serves and ``VERSION()`` of ``safe``, for hashing its transactions.

    A node that cannot be reached or a Safe that does not answer is a SafeInputError (the
    message never repeats the node's URL, which may hold an API key).
    """
    from irctl_evm.safe.tx import SafeInputError, version

    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # requests and web3 raise many types for an unreachable node
        raise SafeInputError(
            f"cannot read the chain id from the RPC endpoint ({type(exc).__name__})"
        ) from exc
    try:
        found = w3.eth.contract(address=safe, abi=_ABI).functions.VERSION().call()
    except Exception as exc:  # a revert, no code at the address, bad return data
        raise SafeInputError(
            f"Safe {safe} does not answer VERSION() on chain {chain_id} ({type(exc).__name__}): "
            "is it a Safe, on this chain?"
        ) from exc
    return chain_id, version(found, f"VERSION() of {safe}")


def rpc_url(given: str | None, configured: Any, chain_id: int) -> str:
    """The node URL for ``chain_id``: ``given``, else ``integrations.safe.rpc`` (one URL, or a
    mapping from chain id), each a URL or an ``env:``/``file:`` reference to one."""
    from irctl.secrets import resolve
    from irctl_evm.safe.tx import SafeInputError

    chosen: Any = given
    if not chosen:
        if isinstance(configured, dict):
            chosen = configured.get(str(chain_id), configured.get(chain_id))
        else:
            chosen = configured
    if not chosen:
        raise SafeInputError(
            f"no RPC endpoint for chain {chain_id}: set integrations.safe.rpc in irctl.yaml "
            "(chain id -> URL or env:VARIABLE) or give one (rpc / --rpc)"
        )
    text = str(chosen)
    if text.startswith(("env:", "file:")):
        return resolve(f"safe rpc for chain {chain_id}", text)
    if not text.startswith(("http://", "https://")):
        raise SafeInputError(
            f"the RPC endpoint for chain {chain_id} must be an http(s) URL or an env:/file: "
            "reference"
        )
    return text


def take_all(
    registry: Registry,
    *,
    safe: str | None = None,
    chain_id: int | str | None = None,
    rpc: str | None = None,
    configured_rpc: Any = None,
    timeout: float = 20.0,
) -> list[Snapshot]:
    """Snapshot ``safe``, or every Safe of ``registry`` (on ``chain_id``), each compared with
    its entry.  Bad input is a SafeInputError; a failing node raises what web3 raised."""
    from irctl_evm.safe.tx import SafeInputError, address, uint

    chain = uint(chain_id, "chain_id") if chain_id is not None else None
    targets: list[tuple[str, int | None]]
    if safe:
        checked = address(safe, "safe")
        entry = registry.find(checked, chain)
        targets = [(checked, entry.chain_id if entry else chain)]
    else:
        entries = [e for e in registry.safes if chain in (None, e.chain_id)]
        if not entries:
            where = registry.path or "the workspace (no safe-registry.yaml)"
            on = f" on chain {chain}" if chain is not None else ""
            raise SafeInputError(f"no Safes{on} in the Safe registry {where}")
        targets = [(e.address, e.chain_id) for e in entries]
    taken = []
    for address_, on_chain in targets:
        if on_chain is None:
            raise SafeInputError(f"Safe {address_} is not in the registry: give its chain id")
        url = rpc_url(rpc, configured_rpc, on_chain)
        w3 = connect(url, timeout=timeout)
        taken.append(snapshot(w3, address_, registry.find(address_, on_chain), hide=(url,)))
    return taken
