"""Where ``irctl watch`` is: a small JSON file under ``.irctl/``, replaced atomically.

::

    {"irctl": 1, "kind": "watch-position", "chain": "ethereum", "chain_id": 1,
     "next": 21895239,                      # the next block to read
     "recent": [[21895227, "0x…"], …],      # the last reorg_depth blocks read, oldest first
     "raised": {"0x<block hash>": [{"id", "kind", "address", "tx", "summary"}, …]},
     "outflows": [[block, block_hash, timestamp, address, asset, amount], …],
     "outbox": [{"finding": {…}, "printed": false, "posted": false}, …]}

The file is written to a temporary file beside it, flushed to disk, renamed over
the old one and the folder synced: a crash leaves the old position or the new,
never half of one.  A block's findings enter the outbox in the same write that
moves ``next`` past the block, and leave it only once delivered, so a restart
neither reads a block twice nor loses a finding not yet delivered.  A lock file
keeps a second watcher off the same position.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from irctl.errors import UsageError

KIND = "watch-position"


@dataclass
class Position:
    chain: str
    chain_id: int
    next: int
    recent: list[list[Any]] = field(default_factory=list)
    raised: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    outflows: list[list[Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"irctl": 1, "kind": KIND, "chain": self.chain, "chain_id": self.chain_id,
                "next": self.next, "recent": self.recent, "raised": self.raised,
                "outflows": self.outflows, "outbox": self.outbox}  # fmt: skip


def path_for(state_dir: Path, chain: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in chain)
    return state_dir / f"watch-{safe}.json"


def load(path: Path) -> Position | None:
    """The saved position, or None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fix = f"fix or remove {path} (removing it starts again from --from or the head)"
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not a watch position ({exc}); {fix}") from exc
    try:
        if raw.get("kind") != KIND or raw.get("irctl") != 1:
            raise ValueError("not a watch position")
        position = Position(
            chain=str(raw["chain"]), chain_id=_int(raw["chain_id"]), next=_int(raw["next"]),
            recent=[[_int(n), _hash(h)] for n, h in raw.get("recent", [])],
            raised={_hash(h): [dict(f) for f in found]
                    for h, found in dict(raw.get("raised", {})).items()},
            outflows=[list(row) for row in raw.get("outflows", [])],
            outbox=[dict(item) for item in raw.get("outbox", [])],
        )  # fmt: skip
        for row in position.outflows:
            if len(row) != 6:
                raise ValueError("an outflow row is not [block, hash, time, address, asset, wei]")
            _int(row[0]), _hash(row[1]), _int(row[2]), int(str(row[5]))
        for item in position.outbox:
            if not isinstance(item.get("finding"), dict) or "id" not in item["finding"]:
                raise ValueError("an outbox entry holds no finding")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a watch position ({exc}); {fix}") from exc
    return position


def save(path: Path, position: Position) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(position.as_json(), sort_keys=True, separators=(",", ":")).encode()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def locked(path: Path) -> Any:
    """Hold the position's lock file; another watcher of the same chain is refused."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    handle: IO[str] = lock.open("a", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise UsageError(
                f"another irctl watch is following this chain (it holds {lock}); stop it first"
            ) from exc
        yield
    finally:
        handle.close()


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a block number")
    return value


def _hash(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise ValueError(f"{value!r} is not a block hash")
    int(value, 16)
    return value.lower()
