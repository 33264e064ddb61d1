"""The cold-address allowlist: where funds may go, signed in advance by the treasury.

A sweep only ever goes to an address on this list, and an entry counts only when
a quorum of treasury operators signed it with their own Ed25519 keys (the keys of
``irctl keys generate``).  Someone who can edit the file, or the runbook, cannot add
an address: they would need the operators' private keys.  The file::

    irctl: 1
    kind: allowlist
    entries:
      - chain: ethereum
        address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        label: cold-1
        added_by: bob
        added_at: "2026-11-21T03:00:00Z"
        signatures:
          - {operator: bob, signature: "<base64 Ed25519 signature>"}
          - {operator: carol, signature: "..."}

Each signature covers ``irctl-allowlist:v1:`` followed by the canonical JSON of
``{"address": <lowercase>, "chain": ..., "label": ...}``.  The policy is in irctl.yaml
(defaults shown)::

    integrations:
      evm:
        allowlist: {path: allowlist.yaml, quorum: 2, roles: [treasury]}

Only operators holding one of ``roles`` and a public key in irctl.yaml count; a
quorum below 2 is refused: one person alone never decides where funds may go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.canonical import canonical_json
from irctl.errors import IrctlError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DEFAULT_PATH = "allowlist.yaml"
DEFAULT_QUORUM = 2
MIN_QUORUM = 2
DEFAULT_ROLES = ("treasury",)
PREFIX = b"irctl-allowlist:v1:"

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_CHAIN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Policy:
    """How many of whom must sign an entry."""

    quorum: int = DEFAULT_QUORUM
    roles: tuple[str, ...] = DEFAULT_ROLES

    @classmethod
    def from_config(cls, settings: Mapping[str, Any] | None) -> Policy:
        settings = settings or {}
        quorum = settings.get("quorum", DEFAULT_QUORUM)
        roles = settings.get("roles", list(DEFAULT_ROLES))
        if not isinstance(quorum, int) or isinstance(quorum, bool) or quorum < MIN_QUORUM:
            raise UsageError(
                f"integrations.evm.allowlist.quorum must be a whole number >= {MIN_QUORUM}: "
                "one person alone never decides where funds may go"
            )
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            raise UsageError("integrations.evm.allowlist.roles must be a list of role names")
        return cls(quorum, tuple(roles))


@dataclass
class Entry:
    chain: str
    address: str
    label: str = ""
    added_by: str = ""
    added_at: str = ""
    signatures: list[dict[str, str]] = field(default_factory=list)

    def message(self) -> bytes:
        """The bytes each operator signs."""
        body = {"address": self.address.lower(), "chain": self.chain, "label": self.label}
        return PREFIX + canonical_json(body).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "address": self.address,
            "label": self.label,
            "added_by": self.added_by,
            "added_at": self.added_at,
            "signatures": [dict(s) for s in self.signatures],
        }


@dataclass(frozen=True)
class Verdict:
    """What verification found for one entry."""

    entry: Entry
    valid_signers: tuple[str, ...]
    problems: tuple[str, ...]
    quorum: int

    @property
    def ok(self) -> bool:
        return len(self.valid_signers) >= self.quorum

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": self.entry.chain,
            "address": self.entry.address,
            "label": self.entry.label,
            "ok": self.ok,
            "signed_by": list(self.valid_signers),
            "quorum": self.quorum,
            "problems": list(self.problems),
        }


def check_address(address: str) -> str:
    """``address`` as a checksummed address; a UsageError for anything else (a bad checksum
    included: a mistyped cold address must never be signed)."""
    from eth_utils.address import to_checksum_address

    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise UsageError(f"not an address (0x and 40 hex digits): {str(address)[:50]!r}")
    checksummed = str(to_checksum_address(address))
    mixed = address[2:] != address[2:].lower() and address[2:] != address[2:].upper()
    if mixed and address != checksummed:
        raise UsageError(f"{address} has a wrong checksum (mistyped?); expected {checksummed}")
    return checksummed


def check_chain(chain: str) -> str:
    if not _CHAIN.match(chain or ""):
        raise UsageError(f"not a chain name (lowercase letters, digits, - or _): {chain!r}")
    return chain


def load(path: Path) -> list[Entry]:
    """The entries of an allowlist file; a UsageError naming the file for any malformation."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(
            f"no allowlist at {path}: create one with irctl allowlist add ADDRESS --chain CHAIN"
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot read allowlist {path}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") != "allowlist" or raw.get("irctl") != 1:
        raise UsageError(f"{path}: not an irctl allowlist (expected irctl: 1, kind: allowlist)")
    items = raw.get("entries") or []
    if not isinstance(items, list):
        raise UsageError(f"{path}: entries must be a list")
    entries = []
    for number, item in enumerate(items, 1):
        where = f"{path}: entry {number}"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: must be a mapping")
        signatures = item.get("signatures") or []
        if not isinstance(signatures, list) or not all(
            isinstance(s, dict)
            and isinstance(s.get("operator"), str)
            and isinstance(s.get("signature"), str)
            for s in signatures
        ):
            raise UsageError(f"{where}: signatures must be a list of {{operator, signature}}")
        try:
            chain = check_chain(str(item.get("chain", "")))
            address = str(item.get("address", ""))
            if not _ADDRESS.match(address):
                raise UsageError(f"not an address: {address[:50]!r}")
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}") from exc
        entries.append(
            Entry(
                chain=chain,
                address=address,
                label=str(item.get("label") or ""),
                added_by=str(item.get("added_by") or ""),
                added_at=str(item.get("added_at") or ""),
                signatures=[
                    {"operator": s["operator"], "signature": s["signature"]} for s in signatures
                ],
            )
        )
    return entries


def save(path: Path, entries: list[Entry]) -> None:
    """Write the allowlist (atomically: a crash leaves the old file or the new one)."""
    import os

    import yaml

    body = {"irctl": 1, "kind": "allowlist", "entries": [e.to_dict() for e in entries]}
    text = (
        "# Cold addresses irctl may sweep to; each entry counts only with a quorum of\n"
        "# treasury signatures (irctl allowlist sign / verify).  Edits break signatures.\n"
        + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def find_entries(entries: list[Entry], chain: str, address: str) -> list[Entry]:
    return [e for e in entries if e.chain == chain and e.address.lower() == address.lower()]


def add(entries: list[Entry], *, chain: str, address: str, label: str, by: str, at: str) -> Entry:
    """A new unsigned entry, appended; refuses a duplicate."""
    chain, address = check_chain(chain), check_address(address)
    if find_entries(entries, chain, address):
        raise UsageError(f"{address} on {chain} is already on the allowlist; sign it instead")
    entry = Entry(chain=chain, address=address, label=label, added_by=by, added_at=at)
    entries.append(entry)
    return entry


def sign(entry: Entry, operator: str, key: Ed25519PrivateKey) -> None:
    """Add (or replace) ``operator``'s signature of ``entry``."""
    from irctl.identity import sign as ed25519_sign

    signature = ed25519_sign(key, entry.message())
    entry.signatures = [s for s in entry.signatures if s["operator"] != operator]
    entry.signatures.append({"operator": operator, "signature": signature})


def verify_entry(
    entry: Entry, operators: Mapping[str, Mapping[str, Any]], policy: Policy
) -> Verdict:
    """Count the distinct keys of operators with a policy role whose signature of ``entry``
    verifies: two operators who share one public key count once (one private key signed)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from irctl.identity import load_public_key, verify

    valid: list[str] = []
    signer_of: dict[bytes, str] = {}  # a counted public key -> the operator it counted for
    problems: list[str] = []
    message = entry.message()
    for item in entry.signatures:
        name = item["operator"]
        known = operators.get(name)
        if known is None:
            problems.append(f"{name}: not an operator in irctl.yaml")
            continue
        if not set(policy.roles) & set(known.get("roles") or []):
            problems.append(f"{name}: has none of the roles {', '.join(policy.roles)}")
            continue
        key = known.get("key")
        if not key:
            problems.append(f"{name}: has no public key in irctl.yaml")
            continue
        try:
            public = load_public_key(str(key))
        except IrctlError:
            problems.append(f"{name}: the public key in irctl.yaml is unreadable")
            continue
        if not verify(public, message, item["signature"]):
            problems.append(f"{name}: signature does not match (the entry changed after signing?)")
            continue
        if name in valid:
            continue
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        if raw in signer_of:
            problems.append(
                f"{name}: has the same public key as {signer_of[raw]} in irctl.yaml; one key "
                "counts once toward the quorum"
            )
            continue
        signer_of[raw] = name
        valid.append(name)
    if len(valid) < policy.quorum:
        problems.append(f"{len(valid)} of {policy.quorum} required signatures")
    return Verdict(entry, tuple(valid), tuple(problems), policy.quorum)


def verify_all(
    entries: list[Entry], operators: Mapping[str, Mapping[str, Any]], policy: Policy
) -> list[Verdict]:
    return [verify_entry(e, operators, policy) for e in entries]


def path_from(settings: Mapping[str, Any] | None, root: Path) -> Path:
    where = Path(str((settings or {}).get("path") or DEFAULT_PATH)).expanduser()
    return where if where.is_absolute() else root / where


def require(
    settings: Mapping[str, Any] | None,
    operators: Mapping[str, Mapping[str, Any]],
    *,
    chain: str,
    address: str,
    root: Path,
) -> Verdict:
    """The verdict that allows sending to ``address`` on ``chain``, or a UsageError that says
    why not.  Deny by default: no file, no entry or too few valid signatures all refuse."""
    policy = Policy.from_config(settings)
    path = path_from(settings, root)
    entries = load(path)
    matching = find_entries(entries, chain, address)
    if not matching:
        raise UsageError(
            f"{address} is not on the cold-address allowlist for {chain} ({path}): irctl sends "
            "funds only to allowlisted addresses, whatever the approvals"
        )
    verdicts = [verify_entry(e, operators, policy) for e in matching]
    for verdict in verdicts:
        if verdict.ok:
            return verdict
    why = "; ".join(p for v in verdicts for p in v.problems)
    raise UsageError(
        f"{address} on {chain} is on the allowlist ({path}) without a valid quorum of "
        f"{policy.quorum} signatures by {', '.join(policy.roles)} operators ({why}): refusing "
        "to send there, whatever the approvals"
    )
