"""What the exchange owes, per asset: from a proof of liabilities, or given by the runbook.

``irctl reserves build`` writes ``root.json`` beside the proofs::

    {"format": "irctl-proof-of-liabilities-root/1", "root": "…", "accounts": 1000000,
     "height": 20, "created": "2026-12-07T10:00:00+00:00",
     "assets": [{"asset": "USDT", "decimals": 6, "total": "250000000",
                 "total_decimal": "250"}, …]}

Totals are whole numbers of each asset's smallest unit, never floats.  The document is read
as it is: its hash is recorded so a reviewer can match it with the published one, and
``irctl reserves verify DIR`` checks the manifest signed over it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irctl.errors import ActionError

ROOT_FORMAT = "irctl-proof-of-liabilities-root/1"
MAX_ROOT_BYTES = 1 << 20
#: Decimals of an asset, at most: as many as a proof of liabilities takes.
MAX_DECIMALS = 30
#: The largest whole number the EVM holds (and irctl's bound on any number in a runbook).
MAX_UNITS = 2**256 - 1


@dataclass(frozen=True)
class Owed:
    """One asset's liabilities: a whole number of smallest units with its decimals."""

    units: int
    decimals: int


@dataclass(frozen=True)
class Liabilities:
    owed: dict[str, Owed]
    source: dict[str, Any] = field(default_factory=dict)  # where they came from, for the record


def units_of(text: str, decimals: int) -> int:
    """``"1.5"`` with 6 decimals as 1500000; ActionError for anything but a plain decimal
    with at most ``decimals`` decimals."""
    whole, dot, fraction = text.strip().partition(".")
    if not (whole.isdigit() and whole.isascii()) or (dot and not (fraction.isdigit()
                                                                  and fraction.isascii())):
        raise ActionError(f"{text!r} is not a plain decimal number (digits, one '.')",
                          retryable=False)  # fmt: skip
    if len(fraction) > decimals:
        raise ActionError(f"{text!r} has more than {decimals} decimals", retryable=False)
    return int(whole + fraction.ljust(decimals, "0"))


def decimal_text(units: int, decimals: int) -> str:
    """A whole number of smallest units as a decimal: 1500000, 6 -> '1.5'."""
    if decimals == 0:
        return str(units)
    whole, part = divmod(units, 10**decimals)
    text = str(part).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def from_root(path: Path, shown: str) -> Liabilities:
    """The totals of a proof of liabilities: ``root.json``, or the folder holding it."""
    file = path / "root.json" if path.is_dir() else path
    if file is not path:
        shown = f"{shown.rstrip('/')}/root.json"
    try:
        if file.stat().st_size > MAX_ROOT_BYTES:
            raise ActionError(f"{shown} is larger than a proof of liabilities' root document "
                              "can be", retryable=False)  # fmt: skip
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise ActionError(f"no liabilities root {shown} (the root.json `irctl reserves build` "
                          "wrote)", retryable=False) from exc  # fmt: skip
    except OSError as exc:
        raise ActionError(f"cannot read {shown}: {exc}", retryable=False) from exc
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ActionError(f"{shown} is not JSON: {exc}", retryable=False) from exc
    if not isinstance(document, dict) or document.get("format") != ROOT_FORMAT:
        raise ActionError(f"{shown} is not a proof of liabilities' root document (format "
                          f"{ROOT_FORMAT})", retryable=False)  # fmt: skip
    entries = document.get("assets")
    if not isinstance(entries, list) or not entries:
        raise ActionError(f"{shown}: no assets", retryable=False)
    owed: dict[str, Owed] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("asset"), str):
            raise ActionError(f"{shown}: an asset without a name", retryable=False)
        asset = entry["asset"]
        where = f"{shown}: asset {asset}"
        if asset in owed:
            raise ActionError(f"{where} is listed twice", retryable=False)
        owed[asset] = _owed(entry.get("total"), entry.get("decimals"), where)
    source = {
        "kind": "root", "path": shown, "sha256": hashlib.sha256(data).hexdigest(),
        "root": document.get("root"), "accounts": document.get("accounts"),
        "created": document.get("created"),
    }  # fmt: skip
    return Liabilities(owed, source)


def _owed(total: Any, decimals: Any, where: str) -> Owed:
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise ActionError(f"{where}: decimals is not a whole number", retryable=False)
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ActionError(f"{where}: decimals must be 0 to {MAX_DECIMALS}", retryable=False)
    text = str(total) if isinstance(total, int) and not isinstance(total, bool) else total
    if not isinstance(text, str) or not (text.isdigit() and text.isascii()):
        raise ActionError(f"{where}: total is not a whole number of smallest units",
                          retryable=False)  # fmt: skip
    units = int(text)
    if units > MAX_UNITS:
        raise ActionError(f"{where}: total is larger than 2**256 - 1", retryable=False)
    return Owed(units, decimals)
