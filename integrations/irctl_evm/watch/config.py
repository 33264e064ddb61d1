"""What ``irctl watch`` watches: ``vars.watch`` in irctl.yaml, parsed once and checked.

::

    vars:
      watch:
        chain: ethereum               # labels.chain of each finding; the default --rpc is
                                      # integrations.evm.rpc.<chain>
        hot_wallets: ["0x…"]          # native and ERC-20 outflows, approvals
        safes: ["0x…"]                # the above, and the Safe's own changes and delegatecalls
        known_spenders: ["0x…"]       # an approval to one of these raises nothing
        known_delegates: ["0x…"]      # a Safe may delegatecall these (MultiSendCallOnly …)
        outflow_threshold_wei: "100000000000000000000"   # native, per address, per window
        token_thresholds:             # ERC-20 Transfer, per token, per address, per window
          "0xdAC17F958D2ee523a2206206994597C13D831ec7": "250000000000"
        window: 10m                   # the rolling window outflows are summed over
        confirmations: 0              # blocks a block must be under the head to be read
        reorg_depth: 12               # block hashes kept to notice a reorg and undo it

Every address is checked where it enters (20 bytes; mixed case with a valid
EIP-55 checksum).  A mistake raises :class:`irctl.errors.UsageError` naming the
setting and the fix.  A token without a threshold has its transfers left out of
the outflow sums (its approvals are still watched).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from irctl.errors import UsageError
from irctl.runbook.model import parse_duration

DEFAULT_WINDOW = 600.0
DEFAULT_REORG_DEPTH = 12
_KNOWN = {
    "chain", "hot_wallets", "safes", "known_spenders", "known_delegates",
    "outflow_threshold_wei", "token_thresholds", "window", "confirmations", "reorg_depth",
}  # fmt: skip


@dataclass(frozen=True)
class WatchConfig:
    """The watched addresses and the rules' settings; addresses are lower-case hex."""

    chain: str
    hot_wallets: tuple[str, ...]
    safes: tuple[str, ...]
    known_spenders: frozenset[str] = frozenset()
    known_delegates: frozenset[str] = frozenset()
    outflow_threshold_wei: int | None = None
    token_thresholds: Mapping[str, int] = field(default_factory=dict)
    window: float = DEFAULT_WINDOW
    confirmations: int = 0
    reorg_depth: int = DEFAULT_REORG_DEPTH

    @property
    def watched(self) -> tuple[str, ...]:
        """Every watched address, hot wallets first, each once."""
        return tuple(dict.fromkeys((*self.hot_wallets, *self.safes)))

    @classmethod
    def from_vars(cls, variables: Mapping[str, Any]) -> WatchConfig:
        raw = variables.get("watch")
        if raw is None:
            raise UsageError(
                "irctl.yaml has no vars.watch: list the hot_wallets and safes to watch "
                "(see 'irctl watch --help')"
            )
        if not isinstance(raw, Mapping):
            raise UsageError("vars.watch must be a mapping (hot_wallets, safes, window, …)")
        unknown = sorted(set(raw) - _KNOWN)
        if unknown:
            raise UsageError(
                f"vars.watch: unknown setting(s) {', '.join(map(str, unknown))} "
                f"(settings: {', '.join(sorted(_KNOWN))})"
            )
        chain = raw.get("chain", "ethereum")
        if not isinstance(chain, str) or not chain.strip():
            raise UsageError("vars.watch.chain must be a chain's name, such as ethereum")
        hot = _addresses(raw, "hot_wallets")
        safes = _addresses(raw, "safes")
        if not hot and not safes:
            raise UsageError("vars.watch: list at least one address in hot_wallets or safes")
        thresholds = raw.get("token_thresholds") or {}
        if not isinstance(thresholds, Mapping):
            raise UsageError("vars.watch.token_thresholds must map token addresses to amounts")
        tokens = {
            address(token, f"vars.watch.token_thresholds: {token}"): _amount(
                amount, f"vars.watch.token_thresholds.{token}"
            )
            for token, amount in thresholds.items()
        }
        native = raw.get("outflow_threshold_wei")
        try:
            window = parse_duration(raw.get("window", DEFAULT_WINDOW))
        except ValueError as exc:
            raise UsageError(f"vars.watch.window: {exc}") from exc
        if window <= 0:
            raise UsageError("vars.watch.window must be longer than 0s, such as 10m")
        return cls(
            chain=chain.strip(),
            hot_wallets=hot,
            safes=safes,
            known_spenders=frozenset(_addresses(raw, "known_spenders")),
            known_delegates=frozenset(_addresses(raw, "known_delegates")),
            outflow_threshold_wei=(
                None if native is None else _amount(native, "vars.watch.outflow_threshold_wei")
            ),
            token_thresholds=tokens,
            window=window,
            confirmations=count(raw.get("confirmations", 0), "vars.watch.confirmations"),
            reorg_depth=count(
                raw.get("reorg_depth", DEFAULT_REORG_DEPTH), "vars.watch.reorg_depth", least=1
            ),
        )


def address(value: Any, what: str) -> str:
    """``value`` as a lower-case address, its checksum checked when it is mixed case."""
    from irctl_evm.safe.tx import SafeInputError
    from irctl_evm.safe.tx import address as checked

    try:
        return checked(value, what).lower()
    except SafeInputError as exc:
        raise UsageError(exc.message) from exc


def count(value: Any, what: str, *, least: int = 0) -> int:
    """``value`` as a whole number of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UsageError(f"{what}: {value!r} is not a whole number")
    try:
        number = int(value)
    except ValueError as exc:
        raise UsageError(f"{what}: {value!r} is not a whole number") from exc
    if number < least:
        raise UsageError(f"{what}: {number} is less than {least}")
    return number


def _addresses(raw: Mapping[str, Any], name: str) -> tuple[str, ...]:
    given = raw.get(name) or []
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list):
        raise UsageError(f"vars.watch.{name} must be a list of addresses")
    return tuple(dict.fromkeys(address(item, f"vars.watch.{name}") for item in given))


def _amount(value: Any, what: str) -> int:
    """An amount in the token's smallest unit: an int, or a decimal string (YAML loses
    precision on numbers past 2**53 only when they are written as floats)."""
    if isinstance(value, (bool, float)) or not isinstance(value, int | str):
        raise UsageError(f"{what}: {value!r} is not a whole amount (write it as a quoted integer)")
    text = str(value).strip().replace("_", "")
    if not text.isdigit():
        raise UsageError(f"{what}: {value!r} is not a whole, non-negative amount")
    return int(text)
