"""Trust roots: the keys a reviewer trusts, from a file the reviewer chose.

A transcript records the operators' public keys in its ``run.created`` event
and carries the installation key in every checkpoint.  Whoever holds the
installation key can rewrite both and re-seal, so a reviewer checks them
against keys obtained elsewhere (``irctl transcript verify --trust FILE``):

* an ``irctl.yaml``: its ``installation_key`` and ``operators.<name>.key``
  (and ``roles``); or
* a keyring written by ``irctl keys export``: canonical JSON (two-space
  indent, sorted keys, UTF-8, one trailing newline), so one workspace always
  exports the same bytes and its SHA-256 can be read out over another channel::

      {
        "installation_key": "ed25519:...",
        "kind": "irctl-keyring/v1",
        "operators": {
          "alice": {"key": "ed25519:...", "roles": ["security-lead"]},
          "bob": {"key": null, "roles": ["treasury"]}
        }
      }

  A keyring is not signed: signed by the installation key it would vouch for
  itself.  Its trust is how the reviewer obtained it (from the workspace's
  owner, compared by its fingerprint).

:func:`load_trust` reads either; every mistake is :class:`UsageError` (exit 2)
naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import UsageError

if TYPE_CHECKING:
    from irctl.runbook.model import Config

__all__ = ["KIND", "KeyFinding", "Trust", "keyring_text", "load_trust"]

KIND = "irctl-keyring/v1"


@dataclass(frozen=True)
class Trust:
    """The keys a reviewer trusts: the installation key and each operator's key and roles."""

    source: str  # the file, for messages
    installation_key: str | None
    operators: dict[str, str | None]  # name -> public key (None: the operator has no key)
    roles: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of_config(cls, config: Config, source: str = "irctl.yaml") -> Trust:
        """The trust root a loaded workspace config gives (its keys as they are now)."""
        return cls(
            source,
            config.installation_key,
            {name: op.key for name, op in config.operators.items()},
            {name: list(op.roles) for name, op in config.operators.items()},
        )

    def seal_keys(self, public_keys: list[str] | None) -> list[str] | None:
        """The installation keys to trust for the seals: ``public_keys`` and this root's."""
        if self.installation_key is None:
            return public_keys
        return list(dict.fromkeys([*(public_keys or []), self.installation_key]))


@dataclass
class KeyFinding:
    """A key the transcript recorded that is not the key the trust root gives.

    ``kind``: ``operator`` (the operator's key recorded at run start differs),
    ``roles`` (the operator's roles recorded at run start differ: ``recorded``
    and ``trusted`` are sorted lists of roles), ``absent`` (an operator
    recorded at run start whom the trust file does not name: ``trusted`` is
    None) or ``installation`` (checkpoints were signed by ``recorded``, not by
    the trusted installation key).  ``decisions`` counts that operator's
    decisions in the run, none of which counted.
    """

    kind: str
    operator: str | None
    recorded: str | list[str] | None
    trusted: str | list[str] | None
    decisions: int = 0

    def why(self, source: str) -> str:
        """Why a decision by this operator does not count."""
        who = self.operator
        if self.kind == "absent":
            return f"{who} is recorded at run start, but is not in {source}"
        if self.kind == "roles":
            return (
                f"{who}'s roles recorded at run start ({_roles(self.recorded)}) are not "
                f"{who}'s roles in {source} ({_roles(self.trusted)})"
            )
        return (
            f"it was checked against the key recorded for {who} at run start "
            f"({self.recorded or 'none'}), but {who}'s key in {source} is {self.trusted or 'none'}"
        )

    def text(self, source: str) -> str:
        if self.kind == "installation":
            return (
                f"KEY MISMATCH: the installation key: checkpoints are signed by {self.recorded}, "
                f"but {source} gives {self.trusted}"
            )
        counted = (
            f"; their {self.decisions} decision(s) in this run do not count"
            if self.decisions
            else ""
        )
        if self.kind == "roles":
            return (
                f"ROLES MISMATCH: {self.operator}: the run recorded the roles "
                f"{_roles(self.recorded)} at run start, but {source} gives "
                f"{_roles(self.trusted)}{counted}"
            )
        if self.kind == "absent":
            return (
                f"KEY NOT TRUSTED: {self.operator} is an operator recorded at run start (key "
                f"{self.recorded or 'none'}), but is not in {source}{counted}"
            )
        return (
            f"KEY MISMATCH: {self.operator}: the run recorded {self.recorded or 'no key'} at run "
            f"start, but {source} gives {self.trusted or 'no key'}{counted}"
        )


def _roles(value: str | list[str] | None) -> str:
    return "[" + ", ".join(value if isinstance(value, list) else []) + "]"


def load_trust(path: Path) -> Trust:
    """The trust root in ``path``: an ``irctl.yaml`` or a keyring (``irctl keys export``)."""
    import yaml

    from irctl.identity import load_public_key

    label = f"--trust {path}"
    if not path.exists():
        raise UsageError(f"{label}: the file does not exist")
    if path.is_dir():
        raise UsageError(f"{label}: is a directory; give an irctl.yaml or a keyring file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label}: cannot read the file: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise UsageError(f"{label}: the file is not YAML or JSON{where}") from exc
    if not isinstance(document, dict):
        raise UsageError(
            f"{label}: holds no keys (expected an irctl.yaml or a keyring from "
            "'irctl keys export')"
        )
    kind = document.get("kind")
    if kind is not None and kind != KIND:
        raise UsageError(
            f"{label}: is of kind {str(kind)[:40]!r}, not an irctl.yaml or a keyring ({KIND})"
        )

    def key(value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise UsageError(f"{label}: {where} is not an 'ed25519:<base64>' public key")
        try:
            load_public_key(value)
        except UsageError as exc:
            raise UsageError(f"{label}: {where}: {exc}") from exc
        return value

    installation = key(document.get("installation_key"), "installation_key")
    given = document.get("operators") or {}
    if not isinstance(given, dict):
        raise UsageError(f"{label}: operators is not a mapping of names to their keys")
    operators: dict[str, str | None] = {}
    roles: dict[str, list[str]] = {}
    for name, entry in given.items():
        if not isinstance(entry, dict):
            raise UsageError(f"{label}: operators.{name} is not a mapping (key, roles)")
        operators[str(name)] = key(entry.get("key"), f"operators.{name}.key")
        found = entry.get("roles") or []
        roles[str(name)] = [str(r) for r in found] if isinstance(found, list) else []
    if installation is None and not any(operators.values()):
        raise UsageError(
            f"{label}: holds no keys (neither installation_key nor any operators.<name>.key)"
        )
    return Trust(str(path), installation, operators, roles)


def keyring_text(config: Config, installation_key: str | None) -> str:
    """The keyring of a workspace, canonical: the same config always gives the same bytes."""
    document = {
        "kind": KIND,
        "installation_key": installation_key,
        "operators": {
            name: {"key": operator.key, "roles": list(operator.roles)}
            for name, operator in sorted(config.operators.items())
        },
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def fingerprint(text: str) -> str:
    """``sha256:<hex>`` of a keyring's bytes, to compare over another channel."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
