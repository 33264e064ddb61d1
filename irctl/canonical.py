"""Canonical JSON and digests: the one serialisation used for anything hashed or signed.

Sorted keys, compact separators, UTF-8, and a value that cannot be serialised
is an error, never silently dropped.  Kept apart from templating so that the
journal and the transcript verifier import nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from irctl.errors import IrctlError

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)  # one instance: json.dumps with options builds a new encoder on every call


def canonical_json(value: Any) -> str:
    """The one serialisation used for anything hashed or signed."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise IrctlError(f"value cannot be serialised canonically: {exc}") from exc


def sha256_hex(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``value``."""
    return "sha256:" + sha256_hex(canonical_json(value))


def step_digest(step_id: str, action: str, inputs: Any, item: int | None = None) -> str:
    """The digest of a step's canonical, redacted inputs (what approvers approve)."""
    body: dict[str, Any] = {"step": step_id, "action": action, "inputs": inputs}
    if item is not None:
        body["item"] = item
    return digest(body)
