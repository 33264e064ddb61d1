"""``irctl watch``: follow a chain for the hot wallets and Safes in ``vars.watch``.

Owns reading blocks and logs over JSON-RPC (:mod:`.rpc`), the rules that raise
findings (:mod:`.rules`, :mod:`.findings`), the durable position and outbox
(:mod:`.position`), following and reorgs (:mod:`.follow`) and delivering a finding
as a signed alert (:mod:`.alerts`).  Imports only irctl's public SDK and
:mod:`irctl_evm.safe`'s decoding; the CLI's ``irctl watch`` is a thin shell over
:class:`Watcher`.
"""

from irctl_evm.watch.alerts import AlertTarget, Outcome, signature
from irctl_evm.watch.config import WatchConfig
from irctl_evm.watch.findings import KINDS, Finding
from irctl_evm.watch.follow import ChainChanged, ReorgTooDeep, Watcher
from irctl_evm.watch.position import locked, path_for
from irctl_evm.watch.rpc import ChainUnreachable, Rpc, RpcError

__all__ = [
    "KINDS", "AlertTarget", "ChainChanged", "ChainUnreachable", "Finding", "Outcome",
    "ReorgTooDeep", "Rpc", "RpcError", "WatchConfig", "Watcher", "locked", "path_for", "signature",
]  # fmt: skip
