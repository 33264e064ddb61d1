"""The reserve ratio of each asset: what the controlled wallets hold over what is owed.

Amounts are exact throughout (:class:`fractions.Fraction` of whole units, never a float): a
chain may hold an asset with more decimals than the ledger keeps (ETH at 18 on chain, at 8
in the ledger), and a token may have other decimals on another chain.  A text shown
rounded is rounded *down*, so it never shows more than is held: a ratio of
0.9999999999999 is ``0.999999999999``, never ``1``; ``below_floor`` compares the exact
ratio, not its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from irctl_evm._liabilities import Owed, decimal_text

Outputs = dict[str, Any]

#: Decimals of a ratio's text.
RATIO_PLACES = 12


@dataclass(frozen=True)
class Held:
    """One asset on one chain, as read: its token (None: the native coin) and decimals."""

    asset: str
    chain: str
    token: str | None
    decimals: int
    symbol: str


@dataclass(frozen=True)
class Coverage:
    """Every asset's line of the outputs, the lowest ratio and the assets below the floor."""

    assets: dict[str, Outputs]
    lowest: tuple[Fraction, str] | None
    below: list[str]


def coverage(
    assets: list[str], owed: dict[str, Owed], held: list[Held], wallets: list[Outputs],
    floor: Decimal | None,
) -> Coverage:  # fmt: skip
    """Per asset: the liabilities, the reserves (balances of the controlled ``wallets``),
    what the others hold, and the ratio (None when nothing is owed: nothing to cover)."""
    lines: dict[str, Outputs] = {}
    below: list[str] = []
    ratios: list[tuple[Fraction, str]] = []
    for asset in assets:
        mine = [h for h in held if h.asset == asset]
        reserves, uncontrolled = _sums(asset, wallets)
        liabilities = owed[asset]
        owes = Fraction(liabilities.units, 10**liabilities.decimals)
        ratio = reserves / owes if owes else None
        places = max([liabilities.decimals, *(h.decimals for h in mine)])
        under = ratio is not None and floor is not None and ratio < Fraction(floor)
        if under:
            below.append(asset)
        if ratio is not None:
            ratios.append((ratio, asset))
        lines[asset] = {
            "decimals": liabilities.decimals,
            "liabilities": str(liabilities.units),
            "liabilities_decimal": decimal_text(liabilities.units, liabilities.decimals),
            "reserves": str(floor_units(reserves, liabilities.decimals)),
            "reserves_decimal": decimal_text(floor_units(reserves, places), places),
            "uncontrolled": str(floor_units(uncontrolled, liabilities.decimals)),
            "uncontrolled_decimal": decimal_text(floor_units(uncontrolled, places), places),
            "ratio": None if ratio is None else ratio_text(ratio),
            "ratio_float": None if ratio is None else float(ratio),
            "below_floor": under,
            "held_on": [
                {"chain": h.chain, "token": h.token or "", "decimals": h.decimals,
                 "symbol": h.symbol}
                for h in mine
            ],
        }  # fmt: skip
    return Coverage(lines, min(ratios) if ratios else None, below)


def _sums(asset: str, wallets: list[Outputs]) -> tuple[Fraction, Fraction]:
    """The asset's balances in whole units: of the controlled wallets, and of the others."""
    controlled, others = Fraction(0), Fraction(0)
    for wallet in wallets:
        balance = wallet["balances"].get(asset)
        if balance is None:
            continue
        amount = Fraction(int(balance["units"]), 10 ** int(balance["decimals"]))
        if wallet["controlled"]:
            controlled += amount
        else:
            others += amount
    return controlled, others


def floor_units(amount: Fraction, decimals: int) -> int:
    """Whole units as smallest units of ``decimals``, rounded down (a chain's dust finer than
    the ledger's precision is not counted in the ledger's units)."""
    scaled = amount * Fraction(10) ** decimals
    return int(scaled.numerator // scaled.denominator)


def ratio_text(ratio: Fraction) -> str:
    """The ratio as decimal text, rounded down to RATIO_PLACES decimals."""
    return decimal_text(floor_units(ratio, RATIO_PLACES), RATIO_PLACES)
