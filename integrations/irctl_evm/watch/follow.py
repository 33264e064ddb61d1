"""Following the chain: read blocks in batches, notice reorgs, raise, record, deliver.

One :meth:`Watcher.step` reads up to ``batch`` blocks that have ``confirmations``
blocks over them, in one JSON-RPC batch with the watched Safes' logs and the token
logs of the watched addresses (and, in a second, the receipts of the watched
addresses' value transfers).  The blocks must chain: each one's ``parentHash`` is
the hash of the one before.  When the first no longer builds on the last block
read, the chain reorganised: the watcher asks for the hashes of the blocks it
remembers (the last ``reorg_depth``), goes back to the newest one still on the
chain, retracts every finding of the blocks after it and reads the new branch
from there.  A reorg deeper than that is refused with an error: the findings
could not be put right.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from irctl.errors import IrctlError, UsageError
from irctl_evm.watch import position as positions
from irctl_evm.watch.alerts import AlertTarget
from irctl_evm.watch.config import WatchConfig
from irctl_evm.watch.findings import Finding, finding_id, rfc3339
from irctl_evm.watch.position import Position
from irctl_evm.watch.rpc import ChainUnreachable, Rpc, RpcError, quantity
from irctl_evm.watch.rules import (
    Outflows,
    block_from_rpc,
    log_from_rpc,
    padded,
    scan,
    topic,
    transfer_topics,
)

DEFAULT_BATCH = 50
#: Seconds an unreachable alert endpoint is left alone before findings are posted to it again
#: (each attempt waits out the whole backoff); they are printed meanwhile and wait in the outbox.
RETRY_AFTER = 30.0
#: The storage slot of a Safe's nonce (every version; irctl_evm.safe.state reads it too), read
#: before a block to know the nonce a delegatecall in it used: storage, not ``nonce()``, which a
#: Safe whose singleton was swapped no longer answers.
NONCE_SLOT = 5


class ReorgTooDeep(IrctlError):
    """The chain reorganised deeper than the block hashes the watcher keeps."""


class ChainChanged(IrctlError):
    """The node serves another chain than the one the position was recorded on."""


@dataclass
class Watcher:
    """Follows one chain for ``config`` from the position at ``path``."""

    config: WatchConfig
    rpc: Rpc
    path: Path
    start: int | None = None
    batch: int = DEFAULT_BATCH
    emit: Callable[[dict[str, Any]], None] | None = None
    alert: AlertTarget | None = None
    note: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))
    position: Position | None = None
    expected_chain_id: int | None = None
    chain_id: int = 0
    undelivered: int = 0
    retry_after: float = RETRY_AFTER
    monotonic: Callable[[], float] = time.monotonic
    _retry_at: float = 0.0
    _block_receipts: bool = True

    def open(self) -> Position:
        """Read the chain id and the saved position (or start one at --from or the head)."""
        self.chain_id = quantity(self.rpc.call("eth_chainId"), "a chain id")
        if self.expected_chain_id is not None and self.chain_id != self.expected_chain_id:
            raise ChainChanged(
                f"the node serves chain id {self.chain_id}, not {self.expected_chain_id} "
                f"(integrations.evm.chain_id.{self.config.chain}): give the right --rpc"
            )
        saved = positions.load(self.path)
        if saved is not None:
            if saved.chain_id != self.chain_id:
                raise ChainChanged(
                    f"{self.path} follows chain id {saved.chain_id}, but the node serves "
                    f"{self.chain_id}: give the right --rpc, or remove the file to start over"
                )
            if self.start is not None and self.start != saved.next:
                raise UsageError(
                    f"--from {self.start}: {self.path} says block {saved.next} is next; starting "
                    f"elsewhere would skip or repeat blocks (remove the file to start over)"
                )
            self.position = saved
            return saved
        head = quantity(self.rpc.call("eth_blockNumber"), "a block number")
        start = self.start if self.start is not None else max(0, head - self.config.confirmations)
        self.position = Position(chain=self.config.chain, chain_id=self.chain_id, next=start)
        positions.save(self.path, self.position)
        return self.position

    # -- one step ------------------------------------------------------------------------------

    def step(self) -> int:
        """Deliver what waits, then read what the chain has: the number of blocks read, or
        -1 when the chain changed under the read (a reorg, or a block not served yet) and it
        is to be read again."""
        state = self._state()
        self.deliver()
        head = quantity(self.rpc.call("eth_blockNumber"), "a block number")
        last = min(head - self.config.confirmations, state.next + self.batch - 1)
        if last < state.next:
            return self._recheck(state)
        blocks, logs = self._read(state.next, last)
        if blocks is None:
            return -1  # the chain moved while it was read: read it again
        first = blocks[0]
        if state.recent and first["parent"] != state.recent[-1][1]:
            self._reorg(state, first)
            return -1
        receipts = self._receipts(blocks)
        if receipts is None:
            return -1
        # the batch is raised on copies and taken up whole, so a failure half way through it
        # leaves the position as the file has it
        outflows = Outflows(self.config.window, list(state.outflows))
        recent, raised, outbox = list(state.recent), dict(state.raised), list(state.outbox)
        for block in blocks:
            found = scan(self.config, self.chain_id, block, logs.get(block["hash"], []),
                         receipts, outflows)  # fmt: skip
            found = self._nonces(block, logs.get(block["hash"], []), found)
            recent.append([block["number"], block["hash"]])
            if found:
                raised[block["hash"]] = [
                    {"id": f.id, "kind": f.kind, "address": f.address, "tx": f.tx,
                     "summary": f.summary} for f in found
                ]  # fmt: skip
                outbox.extend(self._outbox(f) for f in found)
        recent = recent[-self.config.reorg_depth :]
        kept = {h for _, h in recent}
        state.recent, state.outbox, state.outflows = recent, outbox, outflows.rows
        state.raised = {h: f for h, f in raised.items() if h in kept}
        state.next = last + 1
        positions.save(self.path, state)
        self.deliver()
        return len(blocks)

    def _recheck(self, state: Position) -> int:
        """Nothing new to read: is the last block read still on the chain?  (A reorg that
        replaced it with a branch no longer than it shows no new block.)"""
        if not state.recent:
            return 0
        number, known = state.recent[-1]
        raw = self.rpc.call("eth_getBlockByNumber", hex(number), True)
        if raw is None:
            return 0  # the chain is shorter for a moment: read when it has grown back
        block = block_from_rpc(raw)
        if block["hash"] == known:
            return 0
        self._reorg(state, block)
        return -1

    def deliver(self) -> None:
        """Print and post what the outbox holds, in order; what was delivered leaves it.

        A finding raised while alerts were configured waits in the outbox until it is posted,
        even through a run without --alert-url.  When the endpoint cannot be reached, the rest
        wait for the next pass (each would wait out the same backoff); one it refused as sent
        (HTTP 4xx) stays and the next are still tried; one it settled (409 already received,
        422 taken by no rule) leaves, said on stderr.  An endpoint that could not be
        reached is tried again after ``retry_after`` seconds."""
        state = self._state()
        if not state.outbox:
            self.undelivered = 0
            return
        changed = False
        reachable = self.monotonic() >= self._retry_at
        for item in state.outbox:
            if self.emit is not None and not item["printed"]:
                self.emit(item["finding"])
                item["printed"] = changed = True
            if item["posted"] is not False or self.alert is None or not reachable:
                continue
            outcome = self.alert.post(item["finding"])
            ident = item["finding"]["id"]
            if outcome.status == "delivered":
                item["posted"] = changed = True
            elif outcome.status == "settled":
                item["posted"] = changed = True
                self.note(f"finding {ident} is not sent again: {outcome.problem}")
            else:
                self.note(f"finding {ident} not delivered yet: {outcome.problem}")
                if outcome.status == "unreachable":
                    reachable = False
                    self._retry_at = self.monotonic() + self.retry_after
        pending = [item for item in state.outbox if item["posted"] is False]
        if changed or len(pending) != len(state.outbox):
            state.outbox = pending
            positions.save(self.path, state)
        if pending and self.alert is None:
            self.note(f"{len(pending)} finding(s) wait to be posted: give --alert-url")
        self.undelivered = len(pending)

    def _outbox(self, finding: Finding) -> dict[str, Any]:
        return {"finding": finding.as_json(), "printed": False,
                "posted": False if self.alert is not None else None}  # fmt: skip

    def run(self, *, poll: float, once: bool, sleep: Callable[[float], None] = time.sleep) -> int:
        """Follow until the head (``once``) or forever; the blocks read."""
        total = 0
        failures = 0
        moved = 0
        while True:
            try:
                read = self.step()
                failures = 0
            except RpcError as exc:
                if self.batch > 1:  # a node that caps eth_getLogs ranges or batch sizes
                    self.batch = max(1, self.batch // 2)
                    self.note(f"{exc.message}; reading {self.batch} block(s) at a time")
                    continue
                if once:
                    raise
                failures += 1
                self.note(f"{exc.message}; trying again")
                sleep(min(poll * 2**failures, 60.0))
                continue
            except ChainUnreachable as exc:
                if once:
                    raise
                failures += 1
                self.note(f"{exc.message}; trying again")
                sleep(min(poll * 2**failures, 60.0))
                continue
            if read < 0:
                moved += 1
                if moved > 1:  # the chain is still moving: give it a moment
                    sleep(min(poll, 1.0))
                continue
            moved = 0
            total += read
            if read:
                continue
            if once:
                return total
            sleep(poll)

    # -- reading -------------------------------------------------------------------------------

    def _read(
        self, first: int, last: int
    ) -> tuple[list[dict[str, Any]] | None, dict[str, list[dict[str, Any]]]]:
        span = {"fromBlock": hex(first), "toBlock": hex(last)}
        requests: list[tuple[str, list[Any]]] = [
            ("eth_getBlockByNumber", [hex(n), True]) for n in range(first, last + 1)
        ]
        if self.config.safes:
            requests.append(("eth_getLogs", [{**span, "address": list(self.config.safes)}]))
        requests.append(("eth_getLogs", [{**span, "topics": [
            transfer_topics(), [padded(a) for a in self.config.watched]]}]))  # fmt: skip
        answers = self.rpc.batch(requests)
        count = last - first + 1
        if any(raw is None for raw in answers[:count]):
            return None, {}  # a block the head promised is not served (yet)
        blocks = [block_from_rpc(raw) for raw in answers[:count]]
        for before, block in itertools.pairwise(blocks):
            if block["parent"] != before["hash"]:
                return None, {}
        hashes = {block["number"]: block["hash"] for block in blocks}
        logs: dict[str, list[dict[str, Any]]] = {}
        seen: set[tuple[str, int]] = set()
        for answer in answers[count:]:
            if not isinstance(answer, list):
                raise ChainUnreachable("the node answered eth_getLogs with something not a list")
            for raw in answer:
                log = log_from_rpc(raw)
                if hashes.get(log["block"]) != log["block_hash"]:
                    return None, {}  # a log of another branch than the blocks read
                if (log["tx"], log["index"]) not in seen:
                    seen.add((log["tx"], log["index"]))
                    logs.setdefault(log["block_hash"], []).append(log)
        for found in logs.values():
            found.sort(key=lambda log: int(log["index"]))
        return blocks, logs

    def _nonces(
        self, block: dict[str, Any], logs: list[dict[str, Any]], found: list[Finding]
    ) -> list[Finding]:
        """Each Safe delegatecall with the nonce it used (``fields.nonce``): the Safe's nonce
        in storage before the block, plus its executions earlier in the block (each used one);
        None when the node answers no storage word."""
        calls = [f for f in found if f.kind == "safe.delegatecall"]
        if not calls:
            return found
        safes = sorted({f.address for f in calls})
        before = max(block["number"] - 1, 0)
        answers = self.rpc.batch([
            ("eth_getStorageAt", [safe, hex(NONCE_SLOT), hex(before)]) for safe in safes
        ])  # fmt: skip
        nonces: dict[str, int | None] = {}
        for safe, answer in zip(safes, answers, strict=True):
            text = answer if isinstance(answer, str) else ""
            hexdigits = text[2:]
            valid = text.startswith("0x") and 0 < len(hexdigits) <= 64 and all(
                c in "0123456789abcdefABCDEF" for c in hexdigits
            )
            nonces[safe] = int(hexdigits, 16) if valid else None
        executions = {topic("ExecutionSuccess(bytes32,uint256)"),
                      topic("ExecutionFailure(bytes32,uint256)")}  # fmt: skip
        done: list[Finding] = []
        for finding in found:
            if finding.kind != "safe.delegatecall":
                done.append(finding)
                continue
            index = int(str(finding.fields["log_index"]).split(":", 1)[0])
            earlier = sum(1 for log in logs if log["address"] == finding.address
                          and log["topics"] and log["topics"][0] in executions
                          and int(log["index"]) < index)  # fmt: skip
            start = nonces.get(finding.address)
            nonce = None if start is None else start + earlier
            done.append(replace(finding, fields={**finding.fields, "nonce": nonce}))
        return done

    def _receipts(self, blocks: list[dict[str, Any]]) -> dict[str, int] | None:
        """The status of each watched address's value transfer in ``blocks`` (a failed one
        moved nothing): one ``eth_getBlockReceipts`` a block that has one, or, from a node
        without it, one ``eth_getTransactionReceipt`` each.  None: a receipt of another
        branch than the blocks read."""
        watched = set(self.config.watched)
        wanted = {
            tx["hash"]: block["hash"] for block in blocks for tx in block["transactions"]
            if tx["from"] in watched and tx["value"] > 0
        }  # fmt: skip
        if not wanted:
            return {}
        receipts: list[Any] = []
        if self._block_receipts:
            numbers = sorted({b["number"] for b in blocks if b["hash"] in wanted.values()})
            try:
                answers = self.rpc.batch([("eth_getBlockReceipts", [hex(n)]) for n in numbers])
            except RpcError as exc:
                if exc.code not in (-32601, -32600, -32602):  # not "no such method"
                    raise
                self._block_receipts = False
            else:
                receipts = [r for answer in answers for r in (answer or [])]
        if not self._block_receipts:
            hashes = list(wanted)
            receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        statuses: dict[str, int] = {}
        for receipt in receipts:
            if not isinstance(receipt, dict):
                continue
            tx_hash = str(receipt.get("transactionHash", "")).lower()
            if tx_hash not in wanted:
                continue
            if str(receipt.get("blockHash", "")).lower() != wanted[tx_hash]:
                return None
            statuses[tx_hash] = quantity(receipt.get("status", "0x0"), "a receipt status")
        return statuses

    def _reorg(self, state: Position, seen: dict[str, Any]) -> None:
        numbers = [n for n, _ in state.recent]
        answers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        canonical = {
            n: (raw or {}).get("hash", "").lower() for n, raw in zip(numbers, answers, strict=True)
        }
        keep = len(state.recent)
        while keep and canonical[state.recent[keep - 1][0]] != state.recent[keep - 1][1]:
            keep -= 1
        if keep == 0:
            raise ReorgTooDeep(
                f"the chain reorganised below block {state.recent[0][0]}, deeper than the "
                f"{len(state.recent)} block(s) irctl watch keeps (--reorg-depth): the findings "
                f"since then cannot be put right; check them by hand, then remove {self.path} "
                "to follow again"
            )
        orphaned = state.recent[keep:]
        self.note(f"reorg: block(s) {orphaned[0][0]}–{orphaned[-1][0]} left the chain; "
                  f"reading the new branch from block {orphaned[0][0]}")  # fmt: skip
        noticed = rfc3339(int(seen["timestamp"]))
        for number, block_hash in reversed(orphaned):
            for raised in state.raised.pop(block_hash, []):
                retraction = Finding(
                    id=finding_id(
                        self.chain_id, block_hash, raised["tx"], raised["id"], "retracted"
                    ),
                    kind="retracted",
                    detected_at=noticed,
                    block=number,
                    tx=raised["tx"],
                    summary=f"retracted (block {number} left the chain): {raised['summary']}",
                    chain=self.config.chain,
                    address=raised["address"],
                    fields={
                        "chain_id": self.chain_id,
                        "block_hash": block_hash,
                        "retracts": raised["id"],
                        "retracted_kind": raised["kind"],
                    },
                )
                state.outbox.append(self._outbox(retraction))
        gone = {h for _, h in orphaned}
        outflows = Outflows(self.config.window, state.outflows)
        outflows.drop_blocks(gone)
        state.outflows = outflows.rows
        state.recent = state.recent[:keep]
        state.next = state.recent[-1][0] + 1
        positions.save(self.path, state)
        self.deliver()

    def _state(self) -> Position:
        if self.position is None:
            raise RuntimeError("Watcher.open() first")
        return self.position
