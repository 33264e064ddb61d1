"""The workspace's Safe registry: each Safe as it must be, and the libraries it may delegatecall.

``safe-registry.yaml`` at the workspace root (or the path in
``integrations.safe.registry`` of ``irctl.yaml``)::

    irctl: 1
    kind: safe-registry
    trusted_delegatecall:   # besides the official MultiSend, MultiSendCallOnly, SignMessageLib
      - {address: "0x526643F69b81B008F46d95CD5ced5eC0edFFDaC6", name: SafeMigration 1.4.1}
    safes:
      - name: treasury-cold
        chain_id: 1
        address: "0x…"
        version: 1.3.0
        singleton: "0x…"             # storage slot 0, the master copy
        owners: ["0x…", "0x…", "0x…"]
        threshold: 2
        guard: "0x0000000000000000000000000000000000000000"   # default: none
        fallback_handler: "0x…"      # optional: not compared when absent
        modules: []                  # default: none

``safe.snapshot`` compares each Safe on chain with its entry (owners as a
set); ``safe verify`` takes the extra trusted libraries from it, and a Safe's
chain id and version when the transaction does not give them.  Keep the file
under review like code: whoever can edit it decides what is "as it must be".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irctl_evm.safe.tx import ZERO_ADDRESS, SafeInputError, address, uint, version

REGISTRY_NAME = "safe-registry.yaml"


@dataclass(frozen=True)
class SafeEntry:
    """One Safe as the registry says it must be."""

    name: str
    chain_id: int
    address: str
    version: str
    singleton: str
    owners: tuple[str, ...]
    threshold: int
    guard: str = ZERO_ADDRESS
    fallback_handler: str | None = None
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registry:
    """Safes by (chain id, address) and trusted libraries by address."""

    path: str | None = None
    safes: tuple[SafeEntry, ...] = ()
    trusted: dict[str, str] = field(default_factory=dict)

    def find(self, safe: str, chain_id: int | None = None) -> SafeEntry | None:
        for entry in self.safes:
            if entry.address == safe and chain_id in (None, entry.chain_id):
                return entry
        return None


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw or raw[key] is None:
        raise SafeInputError(f"{where}: missing '{key}'")
    return raw[key]


def _entry(raw: Any, where: str) -> SafeEntry:
    if not isinstance(raw, dict):
        raise SafeInputError(f"{where}: expected a mapping with the Safe's fields")
    known = {"name", "chain_id", "address", "version", "singleton", "owners", "threshold",
             "guard", "fallback_handler", "modules"}  # fmt: skip
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SafeInputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    owners = _require(raw, "owners", where)
    modules = raw.get("modules") or []
    if not isinstance(owners, list) or not owners:
        raise SafeInputError(f"{where}: owners must be a non-empty list of addresses")
    if not isinstance(modules, list):
        raise SafeInputError(f"{where}: modules must be a list of addresses")
    threshold = uint(_require(raw, "threshold", where), f"{where}: threshold")
    if not 1 <= threshold <= len(owners):
        raise SafeInputError(f"{where}: threshold {threshold} is not between 1 and {len(owners)}")
    handler = raw.get("fallback_handler")
    return SafeEntry(
        name=str(_require(raw, "name", where)),
        chain_id=uint(_require(raw, "chain_id", where), f"{where}: chain_id"),
        address=address(_require(raw, "address", where), f"{where}: address"),
        version=version(_require(raw, "version", where), f"{where}: version"),
        singleton=address(_require(raw, "singleton", where), f"{where}: singleton"),
        owners=tuple(address(o, f"{where}: owners[{i}]") for i, o in enumerate(owners)),
        threshold=threshold,
        guard=address(raw.get("guard") or ZERO_ADDRESS, f"{where}: guard"),
        fallback_handler=address(handler, f"{where}: fallback_handler") if handler else None,
        modules=tuple(address(m, f"{where}: modules[{i}]") for i, m in enumerate(modules)),
    )


def load(path: str | Path) -> Registry:
    """Read and check a registry file; every problem names the file and the entry."""
    import yaml

    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SafeInputError(f"cannot read the Safe registry {where}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SafeInputError(f"{where}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SafeInputError(f"{where}: expected a mapping with 'safes' and 'trusted_delegatecall'")
    if raw.get("kind", "safe-registry") != "safe-registry":
        raise SafeInputError(f"{where}: kind must be safe-registry, not {raw.get('kind')!r}")
    safes = [_entry(item, f"{where}: safes[{i}]") for i, item in enumerate(raw.get("safes") or [])]
    seen: set[tuple[int, str]] = set()
    for entry in safes:
        if (entry.chain_id, entry.address) in seen:
            raise SafeInputError(f"{where}: Safe {entry.address} is listed twice on chain "
                                 f"{entry.chain_id}")  # fmt: skip
        seen.add((entry.chain_id, entry.address))
    trusted: dict[str, str] = {}
    for i, item in enumerate(raw.get("trusted_delegatecall") or []):
        spot = f"{where}: trusted_delegatecall[{i}]"
        if not isinstance(item, dict):
            raise SafeInputError(f"{spot}: expected {{address: 0x…, name: …}}")
        trusted[address(_require(item, "address", spot), spot).lower()] = str(
            item.get("name") or "trusted by the workspace registry"
        )
    return Registry(where, tuple(safes), trusted)


def workspace_root() -> Path | None:
    """The workspace holding the current directory (``$IRCTL_WORKSPACE`` first), if any."""
    env = os.environ.get("IRCTL_WORKSPACE")
    here = (Path(env) if env else Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "irctl.yaml").is_file():
            return folder
    return None


def locate(
    explicit: str | None = None, configured: str | None = None, root: Path | None = None
) -> Registry:
    """The registry named explicitly, or configured, or ``safe-registry.yaml`` in the workspace.

    An explicit or configured path must exist; without either, a workspace
    without a registry gives an empty one (only the official libraries are trusted).
    ``root`` is the workspace (a run's); default: the one holding the current directory.
    """
    root = root if root is not None else workspace_root()
    for given in (explicit, configured):
        if given:
            path = Path(given)
            if not path.is_absolute() and root is not None and given is configured:
                path = root / path
            return load(path)
    if root is not None and (root / REGISTRY_NAME).is_file():
        return load(root / REGISTRY_NAME)
    return Registry()
