"""Inclusion proofs: one JSON document per account, made chunk by chunk from the level files.

``chunk_proofs`` makes the proofs of one chunk of leaves; ``write_files_task`` writes them one
file each (the ``files`` layout), named by the SHA-256 of the account id
(``proofs/ab/ab12….json``), never by the id, so a listing of the folder shows no account;
:mod:`irctl.reserves.bundle` writes the same bytes into a few large files.  A proof's text::

    {"format":"irctl-proof-of-liabilities/1","root":"…","assets":["BTC","ETH"],"decimals":[8,18],
    "account":"alice","salt":"…","balances":["150000000","0"],
    "path":[
    {"side":"right","hash":"…","sums":["1000","7"]},
    …
    ]}

``side`` is where the sibling stands; the path runs from the leaf's sibling up to the root's
children.  Balances and sums are whole numbers of each asset's smallest unit, as strings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from irctl.reserves.tree import INFO_HEAD, read_records
from irctl.reserves.verify_proof import FORMAT

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def proof_name(account: str) -> str:
    """The proof's path under the output folder: by the SHA-256 of the account id."""
    digest = hashlib.sha256(account.encode("utf-8")).hexdigest()
    return f"proofs/{digest[:2]}/{digest}.json"


def proof_head(root: str, assets: tuple[str, ...], decimals: tuple[int, ...]) -> str:
    """What every proof of one tree begins with."""
    compact = (",", ":")
    symbols = json.dumps(list(assets), separators=compact)
    places = json.dumps(list(decimals), separators=compact)
    return (
        f'{{"format":{json.dumps(FORMAT)},"root":"{root}","assets":{symbols},'
        f'"decimals":{places},\n'
    )


def _step(record: bytes, left: bool, lanes: range) -> str:
    sums = '","'.join([str(int.from_bytes(record[o : o + 16], "big")) for o in lanes])
    side = "left" if left else "right"
    return f'{{"side":"{side}","hash":"{record[:32].hex()}","sums":["{sums}"]}}'


def chunk_proofs(
    work: Path, head: str, chunk: int, chunk_bits: int, counts: list[int], record_size: int,
    info: tuple[int, int],
) -> Iterator[tuple[bytes, bytes]]:  # fmt: skip
    """The proofs of one chunk of leaves, in the tree's order: (account id, proof), both UTF-8.

    ``info`` is where the chunk's entries lie in ``leaves.bin`` (start and end offsets).
    """
    lanes = range(32, record_size, 16)
    first = chunk << chunk_bits
    size = min(1 << chunk_bits, counts[0] - first)
    height = len(counts) - 1
    inside = min(chunk_bits, height)  # the levels whose siblings lie inside this chunk
    levels = [
        read_records(work, level, first >> level, ((size - 1) >> level) + 1, record_size)
        for level in range(inside)
    ]
    local = [len(data) // record_size for data in levels]
    suffix: list[str] = []  # the steps above the chunk, the same for each of its leaves
    for level in range(inside, height):
        node = first >> level
        sibling = node ^ 1
        if sibling < counts[level]:
            record = read_records(work, level, sibling, 1, record_size)
            suffix.append(_step(record, sibling < node, lanes))
    with (work / "leaves.bin").open("rb") as handle:
        handle.seek(info[0])
        entries = handle.read(info[1] - info[0])
    # tails[l]: the path from level l up, as written; rebuilt from the lowest level whose
    # sibling changed, so a leaf costs one new step and one join, not a join of the whole path
    above = ",\n".join(suffix)
    tails = [""] * inside + [above]
    dumps = json.dumps
    pos = 0
    leaves = levels[0] if inside else read_records(work, 0, first, size, record_size)
    for index in range(size):
        (length,) = INFO_HEAD.unpack_from(entries, pos)
        raw = entries[pos + 2 : pos + 2 + length]
        salt = entries[pos + 2 + length : pos + 18 + length].hex()
        pos += 18 + length
        account = raw.decode("utf-8")
        record = leaves[index * record_size : (index + 1) * record_size]
        # the levels whose node changed from the previous leaf: those up to its lowest set bit
        changed = inside if index == 0 else min(inside, (index & -index).bit_length())
        for level in range(changed - 1, -1, -1):
            node = index >> level
            sibling = node ^ 1
            tail = tails[level + 1]
            if sibling >= local[level]:
                tails[level] = tail  # the last node of its level, carried up without a partner
                continue
            at = sibling * record_size
            text = _step(levels[level][at : at + record_size], sibling < node, lanes)
            tails[level] = f"{text},\n{tail}" if tail else text
        balances = '","'.join([str(int.from_bytes(record[o : o + 16], "big")) for o in lanes])
        if account.isprintable() and '"' not in account and "\\" not in account:
            quoted = f'"{account}"'  # nothing to escape: most ids
        else:
            quoted = dumps(account, ensure_ascii=False)
        text = (
            f'{head}"account":{quoted},"salt":"{salt}",'
            f'"balances":["{balances}"],\n"path":[\n{tails[0]}\n]}}\n'
        )
        yield raw, text.encode("utf-8")


def write_files_task(
    work: Path, out: Path, head: str, chunk: int, chunk_bits: int, counts: list[int],
    record_size: int, info: tuple[int, int],
) -> bytes:  # fmt: skip
    """Write the proofs of one chunk of leaves, a file each; return their ``proofs.sha256``
    lines."""
    listing: list[str] = []
    sha256 = hashlib.sha256
    base = f"{out}{os.sep}"
    for raw, data in chunk_proofs(work, head, chunk, chunk_bits, counts, record_size, info):
        digest = sha256(raw).hexdigest()
        name = f"proofs/{digest[:2]}/{digest}.json"
        fd = os.open(base + name, _FLAGS, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        listing.append(f"{sha256(data).hexdigest()}  {name}\n")
    return "".join(listing).encode("ascii")
