"""The Merkle-sum tree on disk: leaves in random order, then each level as fixed-size records.

A node record is its 32-byte hash followed by one 16-byte big-endian sum per asset; level ``l``
is the file ``level-<l>.bin`` of such records, node ``i`` at byte ``i * record_size``.  Node
``i`` of level ``l + 1`` joins nodes ``2i`` and ``2i + 1`` of level ``l``; a level's last node,
when it has no partner, is carried up unchanged.  Nothing here holds more than one bucket or one
chunk of ``2**chunk_bits`` leaves in memory, so the size of the tree is bounded by the disk.

The functions named ``*_task`` run in worker processes: they read and write files in the work
folder and return plain data.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from irctl.errors import Diagnostic
from irctl.reserves.liabilities import ROW_HEAD
from irctl.reserves.verify_proof import NODE_TAG

INFO_HEAD = struct.Struct("<H")  # leaves.bin: id length, id, salt; one entry per leaf, in order


def level_path(work: Path, level: int) -> Path:
    return work / f"level-{level}.bin"


def bucket_path(work: Path, bucket: int) -> Path:
    return work / "buckets" / f"{bucket:03d}.bin"


def level_counts(leaves: int) -> list[int]:
    """How many nodes each level has, from the leaves up to the one root node."""
    counts = [leaves]
    while counts[-1] > 1:
        counts.append((counts[-1] + 1) // 2)
    return counts


@dataclass
class Ordered:
    """One bucket's leaves in their final order: their level-0 records, their ``leaves.bin``
    entries, the offset in those entries of each leaf that starts a chunk, and duplicates."""

    records: bytes
    info: bytes
    chunk_starts: list[tuple[int, int]]
    problems: list[Diagnostic]


def order_bucket_task(
    work: Path, bucket: int, name: str, record_size: int, first: int, chunk: int
) -> Ordered:
    """Read one bucket, refuse an account listed twice, and order its leaves by salt.

    ``first`` is the index the bucket's first leaf will have in the tree; every leaf whose
    index is a multiple of ``chunk`` has its ``leaves.bin`` offset returned.
    """
    path = bucket_path(work, bucket)
    data = path.read_bytes()
    path.unlink()
    head = ROW_HEAD.size
    entries: list[tuple[bytes, bytes, int]] = []  # salt, id, offset of the record
    lines: dict[bytes, int] = {}
    problems: list[Diagnostic] = []
    pos = 0
    unpack = ROW_HEAD.unpack_from
    while pos < len(data):
        line, size = unpack(data, pos)
        start = pos + head
        raw = data[start : start + size]
        pos = start + size + 16 + record_size
        earlier = lines.setdefault(raw, line)
        if earlier != line:
            problems.append(Diagnostic(name, max(line, earlier), 1, "account",
                                       f"account {raw.decode('utf-8')!r} appears again "
                                       f"(first on line {min(line, earlier)})"))  # fmt: skip
            continue
        entries.append((data[start + size : start + size + 16], raw, start + size + 16))
    entries.sort()
    records = b"".join([data[offset : offset + record_size] for _, _, offset in entries])
    info = bytearray()
    starts: list[tuple[int, int]] = []
    index = first
    pack = INFO_HEAD.pack
    for salt, raw, _ in entries:
        if index % chunk == 0:
            starts.append((index // chunk, len(info)))
        info += pack(len(raw))
        info += raw
        info += salt
        index += 1
    return Ordered(records, bytes(info), starts, problems)


def join_level(level: bytes, record_size: int) -> bytes:
    """The level above ``level``: each pair joined, a last node without a partner carried up.

    Sums are added as one packed integer per node: no lane can carry into the next, because the
    builder has checked that every asset's total is below 2**128 and no balance is negative.
    """
    out = bytearray()
    count = len(level) // record_size
    sha256 = hashlib.sha256
    from_bytes = int.from_bytes
    sums_size = record_size - 32
    for start in range(0, (count - 1) * record_size, 2 * record_size):
        middle = start + record_size
        out += sha256(NODE_TAG + level[start : middle + record_size]).digest()
        total = from_bytes(level[start + 32 : middle], "big") + from_bytes(
            level[middle + 32 : middle + record_size], "big"
        )
        out += total.to_bytes(sums_size, "big")
    if count % 2:
        out += level[(count - 1) * record_size :]
    return bytes(out)


def read_records(work: Path, level: int, first: int, count: int, record_size: int) -> bytes:
    with level_path(work, level).open("rb") as handle:
        handle.seek(first * record_size)
        return handle.read(count * record_size)


def hash_chunk_task(
    work: Path, chunk: int, chunk_bits: int, counts: list[int], record_size: int, levels: int
) -> list[bytes]:
    """Levels 1..``levels`` of the subtree over one chunk of leaves (its nodes only)."""
    first = chunk << chunk_bits
    size = min(1 << chunk_bits, counts[0] - first)
    level = read_records(work, 0, first, size, record_size)
    above = []
    for _ in range(levels):
        level = join_level(level, record_size)
        above.append(level)
    return above


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def remove_tree(work: Path) -> None:
    """Delete the work folder (level files, buckets, leaves.bin)."""
    if not work.exists():
        return
    for folder, dirs, files in os.walk(work, topdown=False):
        for name in files:
            os.unlink(os.path.join(folder, name))
        for name in dirs:
            os.rmdir(os.path.join(folder, name))
    os.rmdir(work)
