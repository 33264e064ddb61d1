"""The signed manifest of a proof-of-liabilities folder, and its check.

``manifest.json`` holds ``signed`` (the root, the number of accounts, the layout, the public
key, and the SHA-256 of ``root.json``, ``verify_proof.py`` and the list of proofs) and
``signature``, the installation key's Ed25519 signature over the canonical JSON of ``signed``.
The list of proofs is ``proofs.sha256`` in the ``files`` layout (the format ``sha256sum -c``
reads: every proof file with its hash) and ``proofs.idx`` in the ``bundle`` layout (every
proof's hash and place, see :mod:`irctl.reserves.bundle`), so the signature covers every proof.
A manifest without a layout is of the ``files`` layout, the only one before there were two.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.canonical import canonical_json
from irctl.errors import UsageError, VerificationFailed
from irctl.identity import load_public_key, public_key_text, sign, verify
from irctl.reserves import bundle

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MANIFEST_FORMAT = "irctl-proof-of-liabilities-manifest/1"
#: The files each layout's manifest has the hash of.
COVERED = {
    "bundle": ("root.json", bundle.INDEX, "verify_proof.py"),
    "files": ("root.json", "proofs.sha256", "verify_proof.py"),
}
LAYOUTS = tuple(COVERED)
_LISTED = re.compile(r"([0-9a-f]{64})  (proofs/([0-9a-f]{2})/\3[0-9a-f]{62}\.json)")


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    return "sha256:" + sha.hexdigest()


def write_manifest(
    folder: Path, root: str, accounts: int, layout: str, key: Ed25519PrivateKey,
    created: datetime,
) -> None:  # fmt: skip
    signed = {
        "format": MANIFEST_FORMAT,
        "root": root,
        "accounts": accounts,
        "layout": layout,
        "created": created.isoformat(timespec="seconds"),
        "key": public_key_text(key),
        "files": {name: file_digest(folder / name) for name in COVERED[layout]},
    }
    document = {"signed": signed, "signature": sign(key, canonical_json(signed).encode("utf-8"))}
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    (folder / "manifest.json").write_text(text + "\n", encoding="utf-8")


@dataclass(frozen=True)
class ManifestCheck:
    """A folder whose manifest verifies: its root, accounts, signer, and whether the signer is
    a key the caller trusts (else only the manifest's own word says who signed)."""

    root: str
    accounts: int
    layout: str
    key: str
    trusted: bool


def _fail(folder: Path, message: str) -> VerificationFailed:
    return VerificationFailed(f"{folder}: {message}")


def verify_manifest(folder: Path, trusted_key: str | None) -> ManifestCheck:
    """Check the signature, the hash of every file, and that no proof is missing or extra.

    Raises :class:`~irctl.errors.VerificationFailed` naming the first problem, or
    :class:`~irctl.errors.UsageError` when ``folder`` has no manifest at all.
    """
    path = folder / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{folder} has no manifest.json: is it the folder `irctl reserves "
                         "build` wrote?")  # fmt: skip
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
        signed = document["signed"]
        signature = document["signature"]
        key_text = signed["key"]
        files = signed["files"]
        root, accounts = signed["root"], signed["accounts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(folder, f"manifest.json is not a manifest ({exc})") from exc
    if signed.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        raise _fail(folder, f"manifest.json is not of the format {MANIFEST_FORMAT}")
    layout = signed.get("layout", "files")
    if layout not in COVERED:
        raise _fail(folder, f"manifest.json names the layout {layout!r}, not one of "
                    f"{', '.join(LAYOUTS)}")  # fmt: skip
    covered = COVERED[layout]
    if trusted_key is not None and key_text != trusted_key:
        raise _fail(folder, f"the manifest is signed by {key_text}, not by the key you trust "
                    f"({trusted_key})")  # fmt: skip
    try:
        public = load_public_key(key_text)
    except UsageError as exc:
        raise _fail(folder, f"the manifest's key: {exc}") from exc
    if not isinstance(signature, str) or not verify(
        public, canonical_json(signed).encode("utf-8"), signature
    ):
        raise _fail(folder, "the manifest's signature does not verify: manifest.json was "
                    "changed after it was signed")  # fmt: skip
    if sorted(files) != sorted(covered):
        raise _fail(folder, f"the manifest covers {sorted(files)}, expected {list(covered)}")
    for name in covered:
        if not (folder / name).is_file():
            raise _fail(folder, f"{name} is missing")
        if file_digest(folder / name) != files[name]:
            raise _fail(folder, f"{name} was changed after the manifest was signed")
    try:
        stated = json.loads((folder / "root.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise _fail(folder, f"root.json is not JSON: {exc}") from exc
    if not isinstance(stated, dict) or stated.get("root") != root:
        raise _fail(folder, "root.json names another root than the manifest")
    if layout == "bundle":
        bundle.check(folder, accounts, lambda message: _fail(folder, message))
    else:
        _check_proofs(folder, accounts)
    return ManifestCheck(root, accounts, layout, key_text, trusted_key is not None)


def _check_proofs(folder: Path, accounts: int) -> None:
    """Every proof listed in proofs.sha256 has its hash; none is missing, none extra."""
    listed: set[str] = set()
    with (folder / "proofs.sha256").open(encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            match = _LISTED.fullmatch(line.rstrip("\n"))
            if match is None:
                raise _fail(folder, f"proofs.sha256:{number}: not a line '<sha256>  proofs/…'")
            digest, name = match.group(1), match.group(2)
            proof = folder / name
            try:
                data = proof.read_bytes()
            except FileNotFoundError:
                raise _fail(folder, f"{name} is missing") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise _fail(folder, f"{name} was changed after the manifest was signed")
            listed.add(name)
    if len(listed) != accounts:
        raise _fail(folder, f"proofs.sha256 lists {len(listed)} proofs; the manifest says "
                    f"{accounts} accounts")  # fmt: skip
    for proof in (folder / "proofs").rglob("*"):
        if proof.is_file() and proof.relative_to(folder).as_posix() not in listed:
            raise _fail(folder, f"{proof.relative_to(folder)} is not listed in proofs.sha256")
