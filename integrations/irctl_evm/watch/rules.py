"""What ``irctl watch`` raises in one block: the rules, each a pure function of the block.

- **A Safe changing itself**: ``ChangedMasterCopy``, ``ChangedThreshold``, ``AddedOwner``,
  ``RemovedOwner``, ``ChangedFallbackHandler``, ``ChangedGuard``, ``EnabledModule`` logged by a
  watched Safe (the argument is indexed from Safe 1.4 on, in the data before).
- **A delegatecall executed by a Safe**: a transaction to a watched Safe calling
  ``execTransaction`` with ``operation == 1`` to a target not in ``known_delegates``, that the
  Safe executed (its ``ExecutionSuccess`` or ``ExecutionFailure`` in the same transaction: a
  failed delegatecall still used the nonce).  A batch delegatecalled to a known MultiSend is
  unpacked and its own delegatecalls checked the same way (irctl_evm.safe.decoding).
- **An approval to an unknown spender**: ERC-20 ``Approval`` (or ``ApprovalForAll`` granted)
  whose owner is watched and whose spender is not in ``known_spenders``; a zero approval is a
  revocation and raises nothing.
- **Outflows above a threshold**: native value sent by a watched address (a successful
  transaction from it, or a Safe's executed call with value) and ERC-20 ``Transfer`` from it,
  summed per address and asset over the rolling ``window`` of block timestamps; the outflow
  that takes the sum over the threshold raises one finding, and the sum must fall back under
  it (outflows leaving the window) before another is raised.

Blocks, logs and receipts arrive here as :func:`block_from_rpc` and :func:`log_from_rpc` shape
them; nothing is read from the node in this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from irctl_evm.watch.config import WatchConfig
from irctl_evm.watch.findings import Finding
from irctl_evm.watch.rpc import ChainUnreachable, quantity

SAFE_EVENTS = {
    "ChangedMasterCopy(address)": ("safe.changed_master_copy", "master_copy"),
    "ChangedThreshold(uint256)": ("safe.changed_threshold", "threshold"),
    "AddedOwner(address)": ("safe.added_owner", "owner"),
    "RemovedOwner(address)": ("safe.removed_owner", "owner"),
    "ChangedFallbackHandler(address)": ("safe.changed_fallback_handler", "handler"),
    "ChangedGuard(address)": ("safe.changed_guard", "guard"),
    "EnabledModule(address)": ("safe.enabled_module", "module"),
}
#: Safe's execTransaction, and the same without signatures (contracts/safe/SafeLike.sol, whose
#: owners approve by approveHash): the first four arguments are to, value, data, operation.
EXEC_TRANSACTIONS = (
    "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)",
    "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address)",
)
NATIVE = "native"


@cache
def topic(signature: str) -> str:
    from eth_utils.crypto import keccak

    return "0x" + bytes(keccak(text=signature)).hex()


def transfer_topics() -> list[str]:
    """The token events whose first indexed argument is the watched owner or sender."""
    return [topic("Transfer(address,address,uint256)"), topic("Approval(address,address,uint256)"),
            topic("ApprovalForAll(address,address,bool)")]  # fmt: skip


def padded(address: str) -> str:
    return "0x" + "00" * 12 + address.lower()[2:]


# -- shaping what the node answered ------------------------------------------------------------


def block_from_rpc(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ChainUnreachable(f"the node answered {str(raw)[:60]!r} where a block belongs")
    txs = []
    for i, tx in enumerate(raw.get("transactions") or []):
        if not isinstance(tx, dict):
            raise ChainUnreachable("the node answered a block without its full transactions")
        txs.append({
            "hash": _hex(tx.get("hash")), "from": _hex(tx.get("from")),
            "to": _hex(tx.get("to")) if tx.get("to") else None,
            "value": quantity(tx.get("value", "0x0"), "a value"),
            "input": _hex(tx.get("input") or tx.get("data") or "0x"),
            "index": quantity(tx.get("transactionIndex", tx.get("transaction_index", hex(i)))),
        })  # fmt: skip
    return {
        "number": quantity(raw.get("number"), "a block number"),
        "hash": _hex(raw.get("hash")),
        "parent": _hex(raw.get("parentHash")),
        "timestamp": quantity(raw.get("timestamp"), "a timestamp"),
        "transactions": txs,
    }


def log_from_rpc(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("topics"), list):
        raise ChainUnreachable(f"the node answered {str(raw)[:60]!r} where a log belongs")
    return {
        "address": _hex(raw.get("address")),
        "topics": [_hex(t) for t in raw["topics"]],
        "data": _hex(raw.get("data") or "0x"),
        "tx": _hex(raw.get("transactionHash")),
        "index": quantity(raw.get("logIndex"), "a log index"),
        "block": quantity(raw.get("blockNumber"), "a block number"),
        "block_hash": _hex(raw.get("blockHash")),
        "removed": bool(raw.get("removed")),
    }


def _hex(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainUnreachable(f"the node answered {str(value)[:60]!r} where hex belongs")
    return value.lower()


# -- outflows over the window ------------------------------------------------------------------


@dataclass
class Outflows:
    """The outflows of the last ``window`` seconds: ``[block, block_hash, timestamp, address,
    asset, amount]`` rows, kept in the position file so a restart sums what it had."""

    window: float
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, block: dict[str, Any], address: str, asset: str, amount: int) -> tuple[int, int]:
        """Record an outflow; the sum of that address and asset in the window before and after."""
        since = block["timestamp"] - self.window
        self.rows = [r for r in self.rows if r[2] > since]
        before = sum(int(r[5]) for r in self.rows if r[3] == address and r[4] == asset)
        self.rows.append([block["number"], block["hash"], block["timestamp"], address, asset,
                          str(amount)])  # fmt: skip
        return before, before + amount

    def drop_blocks(self, hashes: set[str]) -> None:
        self.rows = [r for r in self.rows if r[1] not in hashes]


# -- the rules ---------------------------------------------------------------------------------


def scan(
    config: WatchConfig,
    chain_id: int,
    block: dict[str, Any],
    logs: list[dict[str, Any]],
    receipts: Mapping[str, int],
    outflows: Outflows,
) -> list[Finding]:
    """Every finding of ``block``, in the order of its transactions and logs."""
    made: list[tuple[int, int, Finding]] = []
    watched = set(config.watched)
    safes = set(config.safes)

    def raise_(order: tuple[int, int], kind: str, **kw: Any) -> None:
        made.append((*order, Finding.make(kind, chain=config.chain, chain_id=chain_id,
                                          block=block, **kw)))  # fmt: skip

    tx_index = {tx["hash"]: tx["index"] for tx in block["transactions"]}
    by_tx: dict[str, list[dict[str, Any]]] = {}
    for log in logs:
        by_tx.setdefault(log["tx"], []).append(log)

    for tx in block["transactions"]:
        if tx["from"] in watched and tx["value"] > 0 and receipts.get(tx["hash"]) == 1:
            _outflow(config, outflows, block, raise_, (tx["index"], -1), tx["hash"], "tx",
                     tx["from"], NATIVE, tx["value"], to=tx["to"])  # fmt: skip
        if tx["to"] in safes and tx["input"][:10] in _exec_selectors():
            _exec(config, outflows, block, raise_, tx, by_tx.get(tx["hash"], []))

    safe_topics = {topic(sig): (kind, arg) for sig, (kind, arg) in SAFE_EVENTS.items()}
    approval, approval_all = (
        topic("Approval(address,address,uint256)"),
        topic("ApprovalForAll(address,address,bool)"),
    )
    transfer = topic("Transfer(address,address,uint256)")
    for log in logs:
        if log["removed"] or not log["topics"]:
            continue
        order = (tx_index.get(log["tx"], 1 << 30), log["index"])
        first = log["topics"][0]
        if log["address"] in safes and first in safe_topics:
            kind, arg = safe_topics[first]
            value = _argument(log, arg)
            raise_(order, kind, tx=log["tx"], log_index=log["index"], address=log["address"],
                   summary=f"Safe {log['address']}: {kind.split('.', 1)[1].replace('_', ' ')} "
                           f"to {value}", **{arg: value})  # fmt: skip
        elif first in (approval, approval_all) and len(log["topics"]) == 3:
            owner, spender = _address(log["topics"][1]), _address(log["topics"][2])
            amount = _word(log["data"], 0)
            if owner not in watched or spender in config.known_spenders or amount == 0:
                continue
            what = "all tokens" if first == approval_all else str(amount)
            raise_(order, "token.approval", tx=log["tx"], log_index=log["index"], address=owner,
                   summary=f"{owner} approved unknown spender {spender} for {what} of token "
                           f"{log['address']}", token=log["address"], owner=owner,
                   spender=spender, amount=str(amount),
                   for_all=first == approval_all)  # fmt: skip
        elif first == transfer and len(log["topics"]) == 3:
            sender = _address(log["topics"][1])
            if sender in watched:
                _outflow(config, outflows, block, raise_, order, log["tx"], log["index"], sender,
                         log["address"], _word(log["data"], 0),
                         to=_address(log["topics"][2]))  # fmt: skip
    made.sort(key=lambda item: (item[0], item[1]))
    return [finding for _, _, finding in made]


Raise = Callable[..., None]


def _outflow(
    config: WatchConfig,
    outflows: Outflows,
    block: dict[str, Any],
    raise_: Raise,
    order: tuple[int, int],
    tx: str,
    log_index: int | str,
    address: str,
    asset: str,
    amount: int,
    *,
    to: str | None,
) -> None:
    threshold = (
        config.outflow_threshold_wei if asset == NATIVE else config.token_thresholds.get(asset)
    )
    if threshold is None or amount <= 0:
        return
    before, after = outflows.add(block, address, asset, amount)
    if before <= threshold < after:
        what = "wei" if asset == NATIVE else f"of token {asset}"
        raise_(order, "outflow", tx=tx, log_index=log_index, address=address,
               summary=f"{address} sent {after} {what} within {config.window:g}s "
                       f"(threshold {threshold})", asset=asset, amount=str(amount),
               window_total=str(after), threshold=str(threshold),
               window_seconds=config.window, to=to)  # fmt: skip


def _exec(
    config: WatchConfig,
    outflows: Outflows,
    block: dict[str, Any],
    raise_: Raise,
    tx: dict[str, Any],
    logs: list[dict[str, Any]],
) -> None:
    from eth_abi.abi import decode as abi_decode

    from irctl_evm.safe.decoding import decode

    safe = tx["to"]
    outcome = {topic("ExecutionSuccess(bytes32,uint256)"): "success",
               topic("ExecutionFailure(bytes32,uint256)"): "failure"}  # fmt: skip
    executed = [log for log in logs if log["address"] == safe and log["topics"]
                and log["topics"][0] in outcome]  # fmt: skip
    if not executed:
        return  # the transaction reverted: the Safe executed nothing
    log = executed[0]
    result = outcome[log["topics"][0]]
    types = _exec_selectors()[tx["input"][:10]]
    try:
        to, value, data, operation, *_ = abi_decode(types, bytes.fromhex(tx["input"][10:]))
    except Exception:  # eth_abi raises several unrelated types for bad data
        raise_((tx["index"], log["index"]), "safe.delegatecall", tx=tx["hash"],
               log_index=log["index"], address=safe,
               summary=f"Safe {safe} executed a transaction whose input does not decode",
               target=None, operation=None, execution=result)  # fmt: skip
        return
    call = decode("tx", str(to), int(value), bytes(data), int(operation))
    for bad in _untrusted_delegatecalls(call, config.known_delegates):
        raise_((tx["index"], log["index"]), "safe.delegatecall", tx=tx["hash"],
               log_index=f"{log['index']}:{bad.path}", address=safe,
               summary=f"Safe {safe} delegatecalled unknown contract {bad.to} "
                       f"({bad.signature}; {result})", target=bad.to.lower(), call=bad.path,
               method=bad.method, data="0x" + bad.data.hex(), execution=result,
               nonce_used=True)  # fmt: skip
    if int(operation) == 0 and int(value) > 0 and result == "success":
        _outflow(config, outflows, block, raise_, (tx["index"], log["index"]), tx["hash"],
                 log["index"], safe, NATIVE, int(value), to=str(to).lower())  # fmt: skip


def _untrusted_delegatecalls(call: Any, known: frozenset[str]) -> list[Any]:
    """The delegatecalls run in the Safe's own storage to a target not in ``known``: the call
    itself, and, inside a batch it delegatecalled, the batch's delegatecalls."""
    if call.operation != 1:
        return []
    found = [] if call.to.lower() in known else [call]
    for child in call.children:
        found.extend(_untrusted_delegatecalls(child, known))
    return found


@cache
def _exec_selectors() -> dict[str, list[str]]:
    from irctl_evm.safe.decoding import selector

    return {
        "0x" + selector(signature).hex(): signature.split("(", 1)[1].rstrip(")").split(",")
        for signature in EXEC_TRANSACTIONS
    }


def _argument(log: dict[str, Any], name: str) -> str | int:
    word = log["topics"][1] if len(log["topics"]) > 1 else _word_hex(log["data"], 0)
    if name == "threshold":
        return int(word, 16) if word else 0
    return _address(word) if word else "0x" + "00" * 20


def _word_hex(data: str, index: int) -> str:
    body = data[2:]
    word = body[index * 64 : (index + 1) * 64]
    return "0x" + word if len(word) == 64 else ""


def _word(data: str, index: int) -> int:
    word = _word_hex(data, index)
    return int(word, 16) if word else 0


def _address(word: str) -> str:
    return "0x" + word[-40:].lower()
