"""One customer's proof out of a built folder, in either layout, checked before it is handed out.

The proof's bytes are returned exactly as the build wrote them, once they are shown to be the
bytes the bundle's index holds the hash of (``bundle`` layout), to be the account's, and to
verify against the folder's ``root.json`` as the customer's ``verify_proof.py`` will check it.
The whole folder against its signed manifest is :func:`irctl.reserves.manifest.verify_manifest`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irctl.errors import UsageError, VerificationFailed
from irctl.reserves import bundle, verify_proof
from irctl.reserves.proofs import proof_name


@dataclass(frozen=True)
class Extracted:
    """One account's proof: its bytes, and what it shows once verified against the root."""

    data: bytes
    verified: verify_proof.Verified
    layout: str


def layout_of(folder: Path) -> str:
    """``bundle`` or ``files``, by what the folder holds."""
    if not folder.is_dir():
        raise UsageError(f"no folder {folder}")
    if (folder / bundle.INDEX).is_file():
        return "bundle"
    if (folder / "proofs.sha256").is_file():
        return "files"
    raise UsageError(f"{folder} holds neither {bundle.INDEX} nor proofs.sha256: is it a folder "
                     "`irctl reserves build` wrote?")  # fmt: skip


def extract(folder: Path, account: str) -> Extracted:
    """The proof of ``account`` in ``folder``.

    Raises :class:`~irctl.errors.UsageError` when the folder is not a build or has no such
    account, and :class:`~irctl.errors.VerificationFailed` when the proof found is damaged,
    another account's, or does not verify against ``root.json``.
    """
    if not account:
        raise UsageError("ACCOUNT is empty: give the account id as the liabilities file has it")
    layout = layout_of(folder)
    if layout == "bundle":
        data = bundle.read_proof(folder, account)
    else:
        path = folder / proof_name(account)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{folder}: no proof for account {account!r} (no "
                             f"{proof_name(account)}): it is not an account of this build (ids "
                             "are compared exactly: case, spaces and all)") from None  # fmt: skip
    root = _root(folder)

    def damaged(reason: str) -> VerificationFailed:
        return VerificationFailed(f"{folder}: the proof of {account!r} {reason}; `irctl "
                                  f"reserves verify {folder}` checks the whole folder")  # fmt: skip

    try:
        proof: Any = json.loads(data.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, or not JSON
        raise damaged(f"is not JSON ({exc})") from exc
    if not isinstance(proof, dict) or proof.get("account") != account:
        raise damaged("is not this account's")
    try:
        verified = verify_proof.verify(proof, root["root"])
        verify_proof.check_totals(verified, root)
    except verify_proof.ProofError as exc:
        raise damaged(f"does not verify against {folder / 'root.json'}: {exc}") from exc
    return Extracted(data, verified, layout)


def _root(folder: Path) -> dict[str, Any]:
    path = folder / "root.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{folder} has no root.json: is it a folder `irctl reserves build` "
                         "wrote?") from None  # fmt: skip
    except ValueError as exc:
        raise VerificationFailed(f"{path} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("root"), str):
        raise VerificationFailed(f"{path} names no root")
    return document
