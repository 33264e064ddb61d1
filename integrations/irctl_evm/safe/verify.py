"""Verify a Safe transaction before anyone signs it: recompute its hashes, decode it, flag it.

Flags (the codes a runbook's ``block_on`` names):

=========================  ===================================================================
``delegatecall_untrusted`` ``operation = 1`` to an address that is not a trusted library: the
                           code there runs with the Safe's storage (the Bybit attack)
``owner_change``           an owner added, removed or swapped
``threshold_change``       the number of signatures needed changed
``guard_change``           a transaction guard or module guard set or removed
``module_change``          a module enabled or disabled (a module moves funds with no signatures)
``fallback_handler_change`` the fallback handler replaced
``master_copy_change``     the singleton (storage slot 0) replaced: a migration or an attack
``gas_price_nonzero``      a gas refund is paid: ``gasPrice`` > 0 can hide a transfer
``gas_token_set``          the refund is paid in a token
``refund_receiver_set``    the refund goes to a named address
``undecodable``            a batch or a Safe method whose data does not decode
``hash_mismatch``          a hash the source (the service, a hardware wallet) gave differs
                           from the one computed here
=========================  ===================================================================

Every flag is found in every call, nested batches included.  Trusted
libraries: the official MultiSend, MultiSendCallOnly and SignMessageLib
deployments below, plus whatever the workspace's Safe registry adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from irctl_evm.safe.decoding import Call, decode
from irctl_evm.safe.hashing import SafeTxHashes, hashes
from irctl_evm.safe.tx import ZERO_ADDRESS, SafeTx

FLAGS = (
    "delegatecall_untrusted", "owner_change", "threshold_change", "guard_change",
    "module_change", "fallback_handler_change", "master_copy_change", "gas_price_nonzero",
    "gas_token_set", "refund_receiver_set", "undecodable", "hash_mismatch",
)  # fmt: skip

#: Official Safe library deployments that may be delegatecalled, by lower-case address.
#: ``kind`` says which method the library is for: any other call to it is flagged.
OFFICIAL_LIBRARIES: dict[str, tuple[str, str]] = {
    "0x40a2accbd92bca938b02010e17a5b8929b49130d": ("MultiSendCallOnly 1.3.0", "multiSend"),
    "0xa1dabef33b3b82c7814b6d82a79e50f4ac44102b": ("MultiSendCallOnly 1.3.0 (eip155)", "multiSend"),
    "0xf220d3b4dfb23c4ade8c88e526c1353abacbc38f": ("MultiSendCallOnly 1.3.0 (zkSync)", "multiSend"),
    "0x9641d764fc13c8b624c04430c7356c1c7c8102e2": ("MultiSendCallOnly 1.4.1", "multiSend"),
    "0xa238cbeb142c10ef7ad8442c6d1f9e89e07e7761": ("MultiSend 1.3.0", "multiSend"),
    "0x998739bfdaadde7c933b942a68053933098f9eda": ("MultiSend 1.3.0 (eip155)", "multiSend"),
    "0x38869bf66a61cf6bdb996a6ae40d5853fd43b526": ("MultiSend 1.4.1", "multiSend"),
    "0xa65387f16b013cf2af4605ad8aa5ec25a2cba3a2": ("SignMessageLib 1.3.0", "signMessage"),
    "0xd53cd0ab83d845ac265be939c57f53ad838012c9": ("SignMessageLib 1.4.1", "signMessage"),
}

#: Safe methods and the flags a call to them raises.
METHOD_FLAGS: dict[str, tuple[str, ...]] = {
    "addOwnerWithThreshold": ("owner_change", "threshold_change"),
    "removeOwner": ("owner_change", "threshold_change"),
    "swapOwner": ("owner_change",),
    "changeThreshold": ("threshold_change",),
    "enableModule": ("module_change",),
    "disableModule": ("module_change",),
    "setGuard": ("guard_change",),
    "setModuleGuard": ("guard_change",),
    "setFallbackHandler": ("fallback_handler_change",),
    "changeMasterCopy": ("master_copy_change",),
    "migrateSingleton": ("master_copy_change",),
    "migrateWithFallbackHandler": ("master_copy_change", "fallback_handler_change"),
    "migrateL2Singleton": ("master_copy_change",),
    "migrateL2WithFallbackHandler": ("master_copy_change", "fallback_handler_change"),
}


@dataclass(frozen=True)
class Flag:
    """Something a signer must look at before signing; ``path`` names the call."""

    code: str
    message: str
    path: str = "transaction"

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass(frozen=True)
class Verification:
    """The transaction, its recomputed hashes, its decoded calls and what is wrong with it."""

    tx: SafeTx
    hashes: SafeTxHashes
    call: Call
    flags: tuple[Flag, ...]

    @property
    def flag_codes(self) -> list[str]:
        return sorted({flag.code for flag in self.flags})

    def as_json(self) -> dict[str, Any]:
        tx = self.tx
        return {
            "safe": tx.safe, "chain_id": tx.chain_id, "version": tx.version, "nonce": tx.nonce,
            "to": tx.to, "value": str(tx.value), "data": "0x" + tx.data.hex(),
            "operation": tx.operation, "safe_tx_gas": tx.safe_tx_gas, "base_gas": tx.base_gas,
            "gas_price": str(tx.gas_price), "gas_token": tx.gas_token,
            "refund_receiver": tx.refund_receiver, "source": tx.source, "notes": list(tx.notes),
            "domain_hash": self.hashes.domain_hash, "message_hash": self.hashes.message_hash,
            "safe_tx_hash": self.hashes.safe_tx_hash,
            "domain_type": self.hashes.domain_type, "message_type": self.hashes.message_type,
            "call": self.call.as_json(),
            "flags": [flag.as_json() for flag in self.flags],
            "flag_codes": self.flag_codes,
        }  # fmt: skip


def trusted_libraries(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Lower-case address -> name of every library a Safe may delegatecall."""
    found = {address: name for address, (name, _) in OFFICIAL_LIBRARIES.items()}
    found.update({address.lower(): name for address, name in (extra or {}).items()})
    return found


def verify(
    tx: SafeTx,
    *,
    trusted: Mapping[str, str] | None = None,
    expected_hashes: Mapping[str, str] | None = None,
) -> Verification:
    """Recompute ``tx``'s hashes, decode its calls and flag what signers must look at.

    ``trusted`` adds libraries (address -> name) to the official ones.
    ``expected_hashes`` maps ``domain_hash`` / ``message_hash`` / ``safe_tx_hash``
    to what a hardware wallet or another tool displayed; a difference is a flag.
    """
    computed = hashes(tx)
    root = decode("transaction", tx.to, tx.value, tx.data, tx.operation)
    libraries = trusted_libraries(trusted)
    flags: list[Flag] = []
    for call in root.walk():
        flags.extend(_call_flags(call, tx.safe, libraries))
    flags.extend(_gas_flags(tx))
    claims = dict(expected_hashes or {})
    if tx.claimed_hash is not None:
        claims.setdefault("safe_tx_hash", tx.claimed_hash)
    for name, claimed in claims.items():
        ours = getattr(computed, name)
        if claimed.lower() != ours:
            source = tx.source if name == "safe_tx_hash" and claimed == tx.claimed_hash else "given"
            flags.append(Flag(
                "hash_mismatch",
                f"the {name.replace('_', ' ')} {claimed} ({source}) differs from the one computed "
                f"here, {ours}: do not sign; the transaction shown is not the one hashed",
            ))  # fmt: skip
    return Verification(tx, computed, root, tuple(flags))


def _call_flags(call: Call, safe: str, libraries: Mapping[str, str]) -> list[Flag]:
    flags: list[Flag] = []
    where = "the Safe itself" if call.to == safe else call.to
    if call.operation == 1:
        library = libraries.get(call.to.lower())
        official = OFFICIAL_LIBRARIES.get(call.to.lower())
        if library is None:
            disguise = f", disguised as {call.signature}" if call.method else ""
            flags.append(Flag(
                "delegatecall_untrusted",
                f"delegatecall to {call.to}, which is not a trusted library{disguise}: the code "
                "there runs with the Safe's own storage and can replace its owners, modules or "
                "master copy (slot 0)",
                call.path,
            ))  # fmt: skip
        elif official is not None and call.method != official[1]:
            flags.append(Flag(
                "delegatecall_untrusted",
                f"delegatecall to {library} ({call.to}) calls {call.signature}, not "
                f"{official[1]}: that library is trusted only for {official[1]}",
                call.path,
            ))  # fmt: skip
    if call.problem is not None:
        flags.append(Flag(
            "undecodable",
            f"{call.method or 'the call data'} to {where} does not decode ({call.problem}): "
            "nobody can tell what it does",
            call.path,
        ))  # fmt: skip
    for code in METHOD_FLAGS.get(call.method or "", ()):
        flags.append(Flag(code, _describe(code, call, where), call.path))
    return flags


def _describe(code: str, call: Call, where: str) -> str:
    args = call.args
    if call.method in {"addOwnerWithThreshold", "removeOwner"} and code == "threshold_change":
        text = f"sets the threshold to {args.get('threshold')}"
    elif call.method == "addOwnerWithThreshold":
        text = f"adds owner {args.get('owner')}"
    elif call.method == "removeOwner":
        text = f"removes owner {args.get('owner')}"
    elif call.method == "swapOwner":
        text = f"replaces owner {args.get('old_owner')} by {args.get('new_owner')}"
    elif call.method == "changeThreshold":
        text = f"sets the threshold to {args.get('threshold')}"
    elif call.method == "enableModule":
        text = f"enables module {args.get('module')} (a module can move funds without signatures)"
    elif call.method == "disableModule":
        text = f"disables module {args.get('module')}"
    elif call.method in {"setGuard", "setModuleGuard"}:
        guard = args.get("guard", args.get("module_guard"))
        text = "removes the guard" if guard == ZERO_ADDRESS else f"sets the guard to {guard}"
    elif call.method == "setFallbackHandler":
        text = f"sets the fallback handler to {args.get('handler')}"
    elif call.method == "changeMasterCopy":
        text = f"replaces the master copy (slot 0) with {args.get('master_copy')}"
    else:
        text = f"{call.method}() replaces the Safe's singleton (slot 0)"
        if code == "fallback_handler_change":
            text = f"{call.method}() also replaces the fallback handler"
    return f"{call.signature} on {where}: {text}"


def _gas_flags(tx: SafeTx) -> list[Flag]:
    flags = []
    if tx.gas_price:
        flags.append(Flag(
            "gas_price_nonzero",
            f"gasPrice is {tx.gas_price}: the Safe pays a gas refund of up to "
            f"(safeTxGas + baseGas) x gasPrice = {(tx.safe_tx_gas + tx.base_gas) * tx.gas_price} "
            "to the executor or the refund receiver, a way to hide a transfer",
        ))  # fmt: skip
    if tx.gas_token != ZERO_ADDRESS:
        flags.append(Flag("gas_token_set", f"the gas refund is paid in token {tx.gas_token}"))
    if tx.refund_receiver != ZERO_ADDRESS:
        flags.append(Flag(
            "refund_receiver_set", f"the gas refund goes to {tx.refund_receiver}",
        ))  # fmt: skip
    return flags


def load(
    fields: Mapping[str, Any],
    *,
    file: str | None = None,
    url: str | None = None,
    registry: Any = None,
    timeout: float = 10.0,
) -> SafeTx:
    """The transaction from a JSON ``file``, a transaction-service ``url``, or ``fields`` alone.

    ``fields`` (irctl's names; ``None`` values are ignored) override what the
    file holds and give the chain id and version a URL lacks; a URL's
    transaction must be for the ``safe`` and ``nonce`` given, if they are.  A Safe listed in
    ``registry`` (a :class:`irctl_evm.safe.registry.Registry`) supplies its
    version, and its chain id when nothing else does and the registry lists that address
    on one chain only (on several, the chain id must be given).
    """
    from irctl_evm.safe import sts
    from irctl_evm.safe.tx import SafeInputError, address, from_mapping, read_file, uint, version

    given = {key: value for key, value in fields.items() if value is not None}
    if file and url:
        raise SafeInputError("give the transaction as a file or as a URL, not both")
    if registry is not None and "safe" in given:
        _registry_defaults(registry, given, file)
    if url:
        chain = given.get("chain_id")
        tx = sts.read_transaction(
            url,
            chain_id=uint(chain, "chain_id") if chain is not None else None,
            version=version(given["version"]) if "version" in given else None,
            timeout=timeout,
        )
        wanted_safe = address(given["safe"], "safe") if "safe" in given else tx.safe
        if wanted_safe != tx.safe:
            raise SafeInputError(f"{url}: the transaction is for Safe {tx.safe}, not {wanted_safe}")
        wanted_nonce = uint(given["nonce"], "nonce") if "nonce" in given else tx.nonce
        if wanted_nonce != tx.nonce:
            raise SafeInputError(f"{url}: the transaction has nonce {tx.nonce}, not {wanted_nonce}")
    elif file:
        tx = read_file(file, given)
    else:
        tx = from_mapping(given, source="arguments")
    entry = registry.find(tx.safe, tx.chain_id) if registry is not None else None
    if entry is not None and entry.version != tx.version:
        raise SafeInputError(
            f"{tx.source}: Safe {tx.safe} is version {entry.version} in the registry "
            f"{registry.path}, not {tx.version}: the hashes depend on it"
        )
    return tx


def _registry_defaults(registry: Any, given: dict[str, Any], file: str | None) -> None:
    """Fill ``given``'s chain id and version from the registry's entry for its Safe on its
    chain; refuse to guess the chain of a Safe the registry lists on several."""
    from irctl_evm.safe.tx import SafeInputError, address, uint

    safe = address(given["safe"], "safe")
    chain = given.get("chain_id")
    if chain is None and file:
        chain = _file_chain_id(file)
    if chain is not None:
        entry = registry.find(safe, uint(chain, "chain_id"))
        if entry is not None:
            given.setdefault("version", entry.version)
        return
    chains = sorted({entry.chain_id for entry in registry.safes if entry.address == safe})
    if len(chains) > 1:
        raise SafeInputError(
            f"Safe {safe} is in the registry {registry.path} on chains "
            f"{', '.join(str(c) for c in chains)}: give the chain id (--chain-id) to say which"
        )
    if chains:
        entry = registry.find(safe, chains[0])
        given.setdefault("chain_id", entry.chain_id)
        given.setdefault("version", entry.version)


def _file_chain_id(file: str) -> Any:
    """The chain id a transaction file holds, if it can be read (``read_file`` reports the
    file's problems later)."""
    import json
    from pathlib import Path

    try:
        raw = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(raw, dict) and isinstance(raw.get("results"), list) and raw["results"]:
        raw = raw["results"][0]
    if not isinstance(raw, dict):
        return None
    return raw.get("chain_id", raw.get("chainId"))
