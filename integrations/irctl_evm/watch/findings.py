"""A finding of ``irctl watch``: what it saw, where, and when the chain says it happened.

::

    {"id": "…", "kind": "safe.delegatecall", "detected_at": "2025-02-21T14:13:35Z",
     "block": 21895238, "tx": "0x46de…", "summary": "…",
     "labels": {"kind": "safe.delegatecall", "chain": "ethereum", "address": "0x1db9…"},
     "fields": {"chain_id": 1, "block_hash": "0x…", "log_index": 12, …}}

``id`` is derived from the chain id, block hash, transaction hash, log index and
kind alone, so the same event on the same block is the same finding however
often it is read (a restart, a second watcher), and a block of another branch
gives other ids.  ``detected_at`` is the block's timestamp, not the moment it
was read.  A finding of a block a reorg took away is undone by a ``retracted``
finding naming it in ``fields.retracts``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Every kind a finding may have.
KINDS = (
    "safe.changed_master_copy", "safe.changed_threshold", "safe.added_owner",
    "safe.removed_owner", "safe.changed_fallback_handler", "safe.changed_guard",
    "safe.enabled_module", "safe.delegatecall", "token.approval", "outflow", "retracted",
)  # fmt: skip


def finding_id(chain_id: int, block_hash: str, tx: str, log_index: int | str, kind: str) -> str:
    text = f"{chain_id}:{block_hash.lower()}:{tx.lower()}:{log_index}:{kind}"
    return "wf-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def rfc3339(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Finding:
    id: str
    kind: str
    detected_at: str
    block: int
    tx: str
    summary: str
    chain: str
    address: str
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        kind: str,
        *,
        chain: str,
        chain_id: int,
        block: dict[str, Any],
        tx: str,
        log_index: int | str,
        address: str,
        summary: str,
        **fields: Any,
    ) -> Finding:
        number, block_hash, timestamp = block["number"], block["hash"], block["timestamp"]
        return cls(
            id=finding_id(chain_id, block_hash, tx, log_index, kind),
            kind=kind,
            detected_at=rfc3339(timestamp),
            block=number,
            tx=tx,
            summary=summary,
            chain=chain,
            address=address,
            fields={
                "chain_id": chain_id,
                "block_hash": block_hash,
                "log_index": log_index,
                **fields,
            },
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "detected_at": self.detected_at,
            "block": self.block,
            "tx": self.tx,
            "summary": self.summary,
            "labels": {"kind": self.kind, "chain": self.chain, "address": self.address},
            "fields": dict(self.fields),
        }
