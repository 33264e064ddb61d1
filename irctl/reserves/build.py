"""``build``: from a liabilities file to a folder with the root, every proof and a signed manifest.

Four passes, none holding more than a bucket or a chunk of leaves in memory:

1. read the CSV in blocks (this process, which parses only a block with a quote in it, where
   a quoted field may run into the next) and turn its rows into salted leaves (the workers,
   which parse the other blocks), each sent to one of 256 bucket files by a keyed hash of its
   account id;
2. per bucket, refuse duplicate accounts and order the leaves by salt (a random order that says
   nothing about the file's), appending them to ``level-0.bin`` and ``leaves.bin``;
3. per chunk of ``2**chunk_bits`` leaves, hash the levels above it; this process hashes the few
   levels above the chunks, up to the root;
4. per chunk, write each account's proof: in the ``bundle`` layout (the default) into the
   chunk's segment file, its index record sent to one of 256 buckets by the hash of its account
   id, each bucket then sorted into ``proofs.idx``; in the ``files`` layout into a file of its
   own, with its line of ``proofs.sha256``.

The output appears all at once: everything is written to a hidden folder beside it, renamed
into place when complete, so a failed build leaves nothing that looks like a proof.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from irctl.errors import Diagnostic, InvalidDocument, UsageError
from irctl.reserves import bundle, liabilities, proofs, tree
from irctl.reserves.manifest import LAYOUTS, write_manifest
from irctl.reserves.verify_proof import LIMIT, asset_descriptor, format_units, root_hash

if TYPE_CHECKING:
    from multiprocessing.pool import Pool

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT_FORMAT = "irctl-proof-of-liabilities-root/1"
#: Bytes of the liabilities file a worker takes at a time (about 10,000 rows).
BLOCK_BYTES = 1 << 20
#: Below this size a file is built in this process alone: starting workers costs more.
SMALL_FILE = 8 << 20

#: ``progress(what, done, total)``: called as each pass advances.
Progress = Callable[[str, int, int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: the root hash, the per-asset totals it commits to, and where."""

    root: str
    assets: tuple[str, ...]
    decimals: tuple[int, ...]
    totals: tuple[int, ...]
    accounts: int
    height: int
    output: Path
    layout: str

    def root_document(self, created: datetime) -> dict[str, Any]:
        return {
            "format": ROOT_FORMAT,
            "root": self.root,
            "accounts": self.accounts,
            "height": self.height,
            "assets": [
                {"asset": asset, "decimals": places, "total": str(total),
                 "total_decimal": format_units(total, places)}
                for asset, places, total in zip(self.assets, self.decimals, self.totals,
                                                strict=True)
            ],
            "created": created.isoformat(timespec="seconds"),
        }


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Workers:
    """Tasks run in order, with results in order: in a pool of processes, or here when small.

    At most ``window`` tasks are in flight, so a reader that produces tasks faster than the
    workers finish them never piles the whole input up in memory.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.pool: Pool | None = None
        if count > 1:
            import multiprocessing

            # fork where there is one: spawn would re-run the caller's main module in each
            # worker.  The workers start here, before any progress display has a thread.
            methods = multiprocessing.get_all_start_methods()
            method = "fork" if "fork" in methods else "spawn"
            self.pool = multiprocessing.get_context(method).Pool(count)

    def map(self, fn: Callable[..., T], tasks: Iterable[tuple[Any, ...]]) -> Iterator[T]:
        if self.pool is None:
            for task in tasks:
                yield fn(*task)
            return
        pending: deque[Any] = deque()
        for task in tasks:
            pending.append(self.pool.apply_async(fn, task))
            if len(pending) > 2 * self.count:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self, *, failed: bool) -> None:
        if self.pool is not None:
            if failed:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()


def _staging(output: Path) -> Path:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(f"{output} already exists and is not an empty folder: choose a new one "
                         "(a build never mixes its proofs with an earlier build's)")  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    return staging


def build(
    source: Path,
    output: Path,
    *,
    precisions: Mapping[str, int],
    signing_key: Ed25519PrivateKey,
    layout: str = "bundle",
    workers: int | None = None,
    chunk_bits: int = 16,
    salt_key: bytes | None = None,
    progress: Progress | None = None,
    now: Callable[[], datetime] | None = None,
) -> BuildResult:
    """Build the proof of liabilities of ``source`` (see :mod:`irctl.reserves.liabilities`)
    into the new folder ``output``: ``root.json``, the proofs, ``verify_proof.py`` and
    ``manifest.json`` signed by ``signing_key``.

    ``layout`` is where the proofs go: ``bundle``, a few large files under ``proofs/`` and the
    index ``proofs.idx`` (see :mod:`irctl.reserves.bundle`); or ``files``, one file per account
    under ``proofs/`` and their list ``proofs.sha256``.  A proof's bytes are the same in both.

    ``salt_key`` (tests, or an auditor who must rebuild the same root) derives every salt and
    the leaf order from a secret instead of fresh randomness.  ``chunk_bits`` is the log2 of
    the leaves a worker takes at a time.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if not source.is_file():
        raise UsageError(f"no liabilities file {source}")
    header = liabilities.read_header(source, precisions)
    if workers is None:
        workers = 1 if source.stat().st_size < SMALL_FILE else min(2, _available_cores())
    key = (
        secrets.token_bytes(32) if salt_key is None
        else hashlib.blake2b(salt_key, person=b"irctl-por-salt").digest()
    )  # fmt: skip
    report = progress or (lambda what, done, total: None)
    staging = _staging(output)
    work = staging / ".work"
    pool: _Workers | None = None
    failed = True
    try:
        pool = _Workers(workers)
        (work / "buckets").mkdir(parents=True)
        buckets, totals = _read(source, header, key, work, pool, report)
        leaves = sum(buckets)
        counts = tree.level_counts(leaves)
        starts = _order(source, header, work, buckets, pool, report, 1 << chunk_bits)
        top = _hash(work, header, counts, chunk_bits, pool, report)
        root = root_hash(asset_descriptor(list(header.assets), list(header.decimals)), top).hex()
        result = BuildResult(root, header.assets, header.decimals, totals, leaves,
                             len(counts) - 1, output, layout)  # fmt: skip
        if layout == "bundle":
            _write_bundle(work, staging, header, counts, chunk_bits, starts, result, pool, report)
        else:
            _write_files(work, staging, header, counts, chunk_bits, starts, result, pool, report)
        tree.remove_tree(work)
        created = (now or (lambda: datetime.now(UTC)))()
        document = json.dumps(result.root_document(created), indent=2, ensure_ascii=False)
        (staging / "root.json").write_text(document + "\n", encoding="utf-8")
        shutil.copyfile(Path(__file__).with_name("verify_proof.py"), staging / "verify_proof.py")
        write_manifest(staging, root, leaves, layout, signing_key, created)
        if output.exists():
            output.rmdir()  # empty, as _staging checked
        staging.rename(output)
        failed = False
        return result
    finally:
        if pool is not None:
            pool.close(failed=failed)
        if failed:
            tree.remove_tree(staging)


def _read(
    source: Path, header: liabilities.Header, key: bytes, work: Path, pool: _Workers,
    report: Progress,
) -> tuple[list[int], tuple[int, ...]]:  # fmt: skip
    """Pass 1: every row a salted leaf in its bucket; the rows in each bucket; the totals."""
    name = str(source)
    size = source.stat().st_size
    seen = [0]
    problems: list[Diagnostic] = []
    ended: list[Diagnostic] = []  # the line that cannot be read, found while reading here

    def tasks() -> Iterator[tuple[Any, ...]]:
        for item in liabilities.read_chunks(source, BLOCK_BYTES, seen):
            if isinstance(item, Diagnostic):
                ended.append(item)
                return
            yield item, name, header, key

    files = [tree.bucket_path(work, b).open("wb") for b in range(liabilities.BUCKETS)]
    report("reading liabilities", 0, size)
    buckets = [0] * liabilities.BUCKETS
    totals = [0] * len(header.assets)
    try:
        for done in pool.map(liabilities.make_leaves, tasks()):
            problems.extend(done.problems)
            if done.unreadable is not None:  # a worker's block: it ends the file there
                problems.append(done.unreadable)
                break
            for handle, part in zip(files, done.buckets, strict=True):
                if part:
                    handle.write(part)
            buckets = [a + b for a, b in zip(buckets, done.counts, strict=True)]
            totals = [a + b for a, b in zip(totals, done.totals, strict=True)]
            report("reading liabilities", min(seen[0], size), size)
        else:
            problems.extend(ended)
    finally:
        for handle in files:
            handle.close()
    if problems:
        raise InvalidDocument(sorted(problems, key=lambda d: d.line)[: liabilities.MAX_PROBLEMS])
    if not any(buckets):
        raise InvalidDocument([Diagnostic(name, 2, 1, "", "no accounts: the header is followed "
                                          "by no line")])  # fmt: skip
    too_large = [a for a, t in zip(header.assets, totals, strict=True) if t >= LIMIT]
    if too_large:
        raise UsageError(f"{name}: the total of {', '.join(too_large)} is 2**128 smallest units "
                         "or more, more than a proof can hold")  # fmt: skip
    return buckets, tuple(totals)


def _order(
    source: Path, header: liabilities.Header, work: Path, buckets: list[int], pool: _Workers,
    report: Progress, chunk: int,
) -> list[tuple[int, int]]:  # fmt: skip
    """Pass 2: each bucket checked and ordered into ``level-0.bin`` and ``leaves.bin``; the
    ``leaves.bin`` span of each chunk."""
    firsts, index = [], 0  # the index in the tree of each bucket's first leaf
    for rows in buckets:
        firsts.append(index)
        index += rows
    problems: list[Diagnostic] = []
    report("ordering leaves", 0, liabilities.BUCKETS)
    offsets: dict[int, int] = {}
    written = 0
    tasks = (
        (work, b, str(source), header.record_size, firsts[b], chunk)
        for b in range(liabilities.BUCKETS)
    )
    with (work / "level-0.bin").open("wb") as level, (work / "leaves.bin").open("wb") as info:
        for bucket, done in enumerate(pool.map(tree.order_bucket_task, tasks)):
            problems.extend(done.problems)
            level.write(done.records)
            info.write(done.info)
            for number, offset in done.chunk_starts:
                offsets[number] = written + offset
            written += len(done.info)
            report("ordering leaves", bucket + 1, liabilities.BUCKETS)
    if problems:
        raise InvalidDocument(sorted(problems, key=lambda d: d.line)[: liabilities.MAX_PROBLEMS])
    ends = [*(offsets[n] for n in range(1, len(offsets))), written]
    return [(offsets[n], ends[n]) for n in range(len(offsets))]


def _hash(
    work: Path, header: liabilities.Header, counts: list[int], chunk_bits: int, pool: _Workers,
    report: Progress,
) -> bytes:  # fmt: skip
    """Pass 3: every level, chunk by chunk, then the levels above the chunks; the top record."""
    size = header.record_size
    height = len(counts) - 1
    inside = min(chunk_bits, height)
    chunks = (counts[0] + (1 << chunk_bits) - 1) >> chunk_bits
    tasks = ((work, c, chunk_bits, counts, size, inside) for c in range(chunks))
    report("hashing the tree", 0, chunks)
    for level in range(1, height + 1):
        tree.level_path(work, level).touch()
    for number, above in enumerate(pool.map(tree.hash_chunk_task, tasks)):
        for level, data in enumerate(above, start=1):
            tree.append(tree.level_path(work, level), data)
        report("hashing the tree", number + 1, chunks)
    level_data = tree.read_records(work, inside, 0, counts[inside], size)
    for level in range(inside + 1, height + 1):
        level_data = tree.join_level(level_data, size)
        tree.append(tree.level_path(work, level), level_data)
    return level_data


def _write_files(
    work: Path, staging: Path, header: liabilities.Header, counts: list[int], chunk_bits: int,
    starts: list[tuple[int, int]], result: BuildResult, pool: _Workers, report: Progress,
) -> None:  # fmt: skip
    """Pass 4, ``files``: every account's proof, and ``proofs.sha256`` listing them with their
    hashes."""
    for prefix in range(256):
        (staging / "proofs" / f"{prefix:02x}").mkdir(parents=True, exist_ok=True)
    head = proofs.proof_head(result.root, header.assets, header.decimals)
    tasks = (
        (work, staging, head, c, chunk_bits, counts, header.record_size, span)
        for c, span in enumerate(starts)
    )
    report("writing proofs", 0, counts[0])
    with (staging / "proofs.sha256").open("wb") as listing:
        for number, lines in enumerate(pool.map(proofs.write_files_task, tasks)):
            listing.write(lines)
            report("writing proofs", min(counts[0], (number + 1) << chunk_bits), counts[0])


def _write_bundle(
    work: Path, staging: Path, header: liabilities.Header, counts: list[int], chunk_bits: int,
    starts: list[tuple[int, int]], result: BuildResult, pool: _Workers, report: Progress,
) -> None:  # fmt: skip
    """Pass 4, ``bundle``: every chunk's proofs in its segment, then ``proofs.idx``, their
    index records sorted by the hash of the account id, one bucket of records at a time."""
    (staging / "proofs").mkdir()
    (work / "index").mkdir()
    head = proofs.proof_head(result.root, header.assets, header.decimals)
    tasks = (
        (work, staging, head, c, chunk_bits, counts, header.record_size, span)
        for c, span in enumerate(starts)
    )
    report("writing proofs", 0, counts[0])
    buckets = [bundle.index_bucket(work, b).open("wb") for b in range(bundle.BUCKETS)]
    try:
        for number, parts in enumerate(pool.map(bundle.write_segment_task, tasks)):
            for handle, part in zip(buckets, parts, strict=True):
                if part:
                    handle.write(part)
            report("writing proofs", min(counts[0], (number + 1) << chunk_bits), counts[0])
    finally:
        for handle in buckets:
            handle.close()
    report("sorting the index", 0, bundle.BUCKETS)
    with (staging / bundle.INDEX).open("wb") as index:
        index.write(bundle.index_header(len(starts), counts[0]))
        sorts = ((work, b) for b in range(bundle.BUCKETS))
        for number, records in enumerate(pool.map(bundle.sort_bucket_task, sorts)):
            index.write(records)
            report("sorting the index", number + 1, bundle.BUCKETS)
