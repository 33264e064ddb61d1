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


def _sums(data: bytes, record_size: int) -> list[str]:
    """The sums of every record of ``data`` as a proof writes them: ``1000","7``."""
    lanes = range(32, record_size, 16)
    from_bytes = int.from_bytes
    return [
        '","'.join([str(from_bytes(data[at + o : at + o + 16], "big")) for o in lanes])
        for at in range(0, len(data), record_size)
    ]


def _steps(
    data: bytes, record_size: int, first: int = 0, sums: list[str] | None = None
) -> list[str]:
    """Every record of ``data`` (nodes ``first``, ``first + 1``, … of a level) as the step of
    the proofs whose path it is the sibling on: on the left when its number is even.
    ``sums``: the records' sums, when already written."""
    if sums is None:
        sums = _sums(data, record_size)
    return [
        f'{{"side":"{"right" if (first + n) & 1 else "left"}",'
        f'"hash":"{data[at : at + 32].hex()}","sums":["{sums[n]}"]}}'
        for n, at in enumerate(range(0, len(data), record_size))
    ]


def chunk_proofs(
    work: Path, head: str, chunk: int, chunk_bits: int, counts: list[int], record_size: int,
    info: tuple[int, int],
) -> Iterator[tuple[bytes, bytes]]:  # fmt: skip
    """The proofs of one chunk of leaves, in the tree's order: (account id, proof), both UTF-8.

    ``info`` is where the chunk's entries lie in ``leaves.bin`` (start and end offsets).
    """
    first = chunk << chunk_bits
    size = min(1 << chunk_bits, counts[0] - first)
    height = len(counts) - 1
    inside = min(chunk_bits, height)  # the levels whose siblings lie inside this chunk
    leaves = read_records(work, 0, first, size, record_size)
    balances = _sums(leaves, record_size)
    # steps[l][k]: node k of level l inside the chunk, as a sibling step (each is one exactly
    # once); a chunk starts at an even node of every level inside it, so parity is the same
    steps = [_steps(leaves, record_size, sums=balances)] if inside else []
    for level in range(1, inside):
        data = read_records(work, level, first >> level, ((size - 1) >> level) + 1, record_size)
        steps.append(_steps(data, record_size))
    suffix: list[str] = []  # the steps above the chunk, the same for each of its leaves
    for level in range(inside, height):
        sibling = (first >> level) ^ 1
        if sibling < counts[level]:
            suffix.extend(_steps(read_records(work, level, sibling, 1, record_size),
                                 record_size, sibling))  # fmt: skip
    with (work / "leaves.bin").open("rb") as handle:
        handle.seek(info[0])
        entries = handle.read(info[1] - info[0])
    # tails[l]: the path from level l up, as written; rebuilt from the lowest level whose
    # sibling changed, so a leaf costs one new step and one join, not a join of the whole path
    tails = [""] * inside + [",\n".join(suffix)]
    dumps = json.dumps
    unpack = INFO_HEAD.unpack_from
    pos = 0
    for index in range(size):
        (length,) = unpack(entries, pos)
        raw = entries[pos + 2 : pos + 2 + length]
        salt = entries[pos + 2 + length : pos + 18 + length].hex()
        pos += 18 + length
        # the levels whose node changed from the previous leaf: those up to its lowest set bit
        changed = inside if index == 0 else min(inside, (index & -index).bit_length())
        for level in range(changed - 1, -1, -1):
            sibling = (index >> level) ^ 1
            tail = tails[level + 1]
            if sibling >= len(steps[level]):
                tails[level] = tail  # the last node of its level, carried up without a partner
            elif tail:
                tails[level] = f"{steps[level][sibling]},\n{tail}"
            else:
                tails[level] = steps[level][sibling]
        account = raw.decode("utf-8")
        if account.isprintable() and '"' not in account and "\\" not in account:
            quoted = f'"{account}"'  # nothing to escape: most ids
        else:
            quoted = dumps(account, ensure_ascii=False)
        text = (
            f'{head}"account":{quoted},"salt":"{salt}",'
            f'"balances":["{balances[index]}"],\n"path":[\n{tails[0]}\n]}}\n'
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
