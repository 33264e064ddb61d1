#!/usr/bin/env python3
"""Check that your account is included in an exchange's proof of liabilities.

    python verify_proof.py PROOF.json ROOT

PROOF.json is the inclusion proof the exchange gave you; ROOT is the root hash it published
(64 hex digits), or the path of its root.json.  Exit 0: your balances are included in the tree
whose root is ROOT; exit 1: they are not (the reason is printed); exit 2: a file cannot be read.

This file needs nothing but Python 3.10 or later and its standard library: read it before you
run it.  It is the whole check, with nothing hidden:

* Your leaf is SHA-256 of a tag byte 0x00, your 16-byte salt, your account id and your balance
  of each asset, so nobody can guess your id or balances from the hash.
* Every step up the tree hashes (tag 0x01, left hash, left sums, right hash, right sums): a node
  commits to BOTH children's per-asset sums separately and its own sums are their total, so the
  exchange cannot make a branch's sum smaller than what is below it (the flaw of the first
  Merkle-sum trees, where a node committed only to one total).
* Every sum and balance must be a whole number of the asset's smallest unit, at least zero and
  below 2**128: a negative sibling (a fake account with a negative balance, which would cancel
  out real customers' money) is refused, and so is a sum that would wrap around.
* The root hash is SHA-256 of a tag byte 0x02, the asset list (symbols and decimals) and the top
  node's hash and sums, so ROOT also fixes the total liabilities per asset that this prints.

What it proves: your balances, as shown, are counted in the published totals.  What it does not:
that the exchange holds assets to cover those totals (that needs its on-chain reserves), or that
every other customer's balance is right (each customer checks their own).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from typing import Any

FORMAT = "irctl-proof-of-liabilities/1"
LEAF_TAG = b"\x00"
NODE_TAG = b"\x01"
ROOT_TAG = b"\x02"
SALT_BYTES = 16
SUM_BYTES = 16  # every balance and sum: unsigned 128-bit, big-endian
LIMIT = 1 << (8 * SUM_BYTES)
MAX_ID_BYTES = 1024
MAX_DECIMALS = 30
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNITS = re.compile(r"0|[1-9][0-9]*")


class ProofError(Exception):
    """The proof does not show the account included under the root; the message says why."""


# --- the encodings the exchange's builder uses too -------------------------------------------


def asset_descriptor(assets: list[str], decimals: list[int]) -> bytes:
    """The asset list as the root hash commits to it: count, then each symbol and decimals."""
    parts = [len(assets).to_bytes(2, "big")]
    for symbol, places in zip(assets, decimals, strict=True):
        raw = symbol.encode("ascii")
        parts.append(bytes([len(raw)]) + raw + bytes([places]))
    return b"".join(parts)


def pack_sums(values: list[int]) -> bytes:
    """Balances or sums as the hashes commit to them (raises OverflowError if one is < 0 or
    too large)."""
    return b"".join(value.to_bytes(SUM_BYTES, "big") for value in values)


def leaf_hash(salt: bytes, account: str, balances: bytes) -> bytes:
    """The leaf of one account: its salt, its id and its packed balances."""
    raw = account.encode("utf-8")
    return hashlib.sha256(LEAF_TAG + salt + len(raw).to_bytes(2, "big") + raw + balances).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """A node over two children, each given as its hash followed by its packed sums."""
    return hashlib.sha256(NODE_TAG + left + right).digest()


def root_hash(descriptor: bytes, top: bytes) -> bytes:
    """The published root: the asset list, then the top node's hash and packed sums."""
    return hashlib.sha256(ROOT_TAG + descriptor + top).digest()


def format_units(value: int, decimals: int) -> str:
    """A whole number of smallest units written as a decimal: 150000000, 8 -> '1.5'."""
    if decimals == 0:
        return str(value)
    whole, fraction = divmod(value, 10**decimals)
    text = str(fraction).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


# --- reading a proof -------------------------------------------------------------------------


def _units(value: Any, what: str) -> int:
    """A balance or sum: a string of decimal digits, at least zero and below 2**128."""
    if isinstance(value, str) and value.startswith("-") and _UNITS.fullmatch(value[1:]):
        raise ProofError(f"{what} is negative ({value}): a sum of liabilities cannot be")
    if not isinstance(value, str) or not _UNITS.fullmatch(value):
        raise ProofError(f"{what} is not a whole number of units written as a string: {value!r}")
    number = int(value)
    if number >= LIMIT:
        raise ProofError(f"{what} is 2**128 units or more ({value}): it would wrap around")
    return number


def _vector(value: Any, count: int, what: str) -> list[int]:
    if not isinstance(value, list) or len(value) != count:
        raise ProofError(f"{what} must be a list of {count} amounts, one per asset")
    return [_units(item, f"{what}[{index}]") for index, item in enumerate(value)]


def _root_text(root: str) -> str:
    text = root.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if not _HEX64.fullmatch(text):
        raise ProofError(f"the root must be 64 hex digits, got {root[:80]!r}")
    return text


class Verified:
    """What a proof that verifies shows: the account, its balances and the tree's totals."""

    def __init__(
        self, account: str, assets: list[str], decimals: list[int], balances: list[int],
        totals: list[int], root: str, steps: int,
    ) -> None:  # fmt: skip
        self.account = account
        self.assets = assets
        self.decimals = decimals
        self.balances = balances
        self.totals = totals
        self.root = root
        self.steps = steps

    def describe(self) -> str:
        lines = [f"OK: account {self.account!r} is included in the tree with root {self.root}"]
        steps = f"{self.steps} step{'' if self.steps == 1 else 's'}"
        lines.append(f"  ({steps} to the root, every sum checked and none negative)")
        width = max(len(a) for a in self.assets)
        for asset, places, mine, total in zip(
            self.assets, self.decimals, self.balances, self.totals, strict=True
        ):
            lines.append(
                f"  {asset:<{width}}  yours {format_units(mine, places)}"
                f"  of total liabilities {format_units(total, places)}"
            )
        return "\n".join(lines)


def verify(proof: Any, root: str) -> Verified:
    """Check ``proof`` (the parsed JSON) against ``root`` (hex); raise ProofError if it fails."""
    expected = _root_text(root)
    if not isinstance(proof, dict):
        raise ProofError("a proof is a JSON object")
    if proof.get("format") != FORMAT:
        raise ProofError(f"not a proof of this format: format is {proof.get('format')!r}, "
                         f"expected {FORMAT!r}")  # fmt: skip
    assets, decimals = proof.get("assets"), proof.get("decimals")
    if (
        not isinstance(assets, list) or not assets or len(assets) > 1000
        or not all(isinstance(a, str) and _SYMBOL.fullmatch(a) for a in assets)
        or len(set(assets)) != len(assets)
    ):  # fmt: skip
        raise ProofError("assets must be a list of distinct asset symbols")
    if (
        not isinstance(decimals, list) or len(decimals) != len(assets)
        or not all(type(d) is int and 0 <= d <= MAX_DECIMALS for d in decimals)
    ):  # fmt: skip
        raise ProofError(f"decimals must be a list of {len(assets)} numbers from 0 to 30")
    account = proof.get("account")
    if not isinstance(account, str) or not account:
        raise ProofError("account must be the account id, a non-empty string")
    if len(account.encode("utf-8")) > MAX_ID_BYTES:
        raise ProofError(f"account id is longer than {MAX_ID_BYTES} bytes")
    salt = proof.get("salt")
    if not isinstance(salt, str) or not re.fullmatch(r"[0-9a-f]{32}", salt):
        raise ProofError("salt must be 32 hex digits")
    balances = _vector(proof.get("balances"), len(assets), "balances")
    path = proof.get("path")
    if not isinstance(path, list) or len(path) > 64:
        raise ProofError("path must be a list of at most 64 steps")
    steps: list[tuple[bool, bytes, list[int]]] = []
    for index, step in enumerate(path):  # every sibling is checked before any hashing
        where = f"path[{index}]"
        if not isinstance(step, dict) or step.get("side") not in ("left", "right"):
            raise ProofError(f"{where}: a step is {{'side': 'left'|'right', 'hash', 'sums'}}")
        sibling = step.get("hash")
        if not isinstance(sibling, str) or not _HEX64.fullmatch(sibling):
            raise ProofError(f"{where}.hash must be 64 lowercase hex digits")
        sums = _vector(step.get("sums"), len(assets), f"{where}.sums (the sibling's sums)")
        steps.append((step["side"] == "left", bytes.fromhex(sibling), sums))

    packed = pack_sums(balances)
    node = leaf_hash(bytes.fromhex(salt), account, packed) + packed
    totals = balances
    for index, (sibling_is_left, sibling, sums) in enumerate(steps):
        other = sibling + pack_sums(sums)
        totals = [mine + theirs for mine, theirs in zip(totals, sums, strict=True)]
        over = [assets[i] for i, value in enumerate(totals) if value >= LIMIT]
        if over:
            raise ProofError(f"path[{index}]: the sum of {', '.join(over)} reaches 2**128 units")
        joined = node_hash(other, node) if sibling_is_left else node_hash(node, other)
        node = joined + pack_sums(totals)
    got = root_hash(asset_descriptor(assets, decimals), node).hex()
    if got != expected:
        raise ProofError(
            f"the path leads to root {got}, not {expected}: this account, these balances or a "
            "sum on the way is not what the published tree holds"
        )
    stated = proof.get("root")
    if stated is not None and stated != expected:  # only informative: ROOT is what counts
        raise ProofError(f"the proof names root {stated!r}, but you checked it against {expected}")
    return Verified(account, assets, decimals, balances, totals, expected, len(steps))


def root_from_argument(argument: str) -> tuple[str, dict[str, Any] | None]:
    """ROOT as given on the command line: hex digits, or the path of a root.json."""
    try:
        return _root_text(argument), None
    except ProofError:
        pass
    try:
        with open(argument, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as exc:
        raise OSError(f"ROOT is neither 64 hex digits nor a readable root.json: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("root"), str):
        raise ProofError(f"{argument} has no 'root' field")
    return _root_text(document["root"]), document


def check_totals(verified: Verified, document: dict[str, Any]) -> None:
    """root.json's stated totals must be the ones the root hash commits to."""
    stated = {}
    for entry in document.get("assets") or []:
        if isinstance(entry, dict):
            stated[entry.get("asset")] = entry.get("total")
    for asset, total in zip(verified.assets, verified.totals, strict=True):
        if stated.get(asset) != str(total):
            raise ProofError(
                f"root.json states total {stated.get(asset)!r} for {asset}; the root commits "
                f"to {total}"
            )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(args) != 2:
        print("usage: python verify_proof.py PROOF.json ROOT   (ROOT: hex, or root.json)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        root, document = root_from_argument(args[1])
        with open(args[0], encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProofError as exc:
        print(f"FAILED: {exc}")
        return 1
    try:
        proof = json.loads(text)
    except ValueError as exc:
        print(f"FAILED: {args[0]} is not JSON: {exc}")
        return 1
    try:
        verified = verify(proof, root)
        if document is not None:
            check_totals(verified, document)
    except ProofError as exc:
        print(f"FAILED: {exc}")
        return 1
    print(verified.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
