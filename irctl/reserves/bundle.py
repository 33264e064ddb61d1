"""The ``bundle`` layout: every proof in a few large files, found by the SHA-256 of its account.

::

    proofs.idx         the index: a header, then one record per account, by SHA-256 of its id
    proofs/00000.bin   the proofs of the first chunk of leaves, one after another
    proofs/00001.bin   the next chunk's, …

Each proof's bytes are exactly those the ``files`` layout writes to ``proofs/ab/<sha256>.json``.
The index's header (32 bytes, big-endian) is ``irctl-proof-index/1\\n``, the number of segment
files (u32) and of accounts (u64); each record (80 bytes) is the SHA-256 of the account id, the
SHA-256 of its proof, the segment (u32), the proof's offset in it (u64) and its length (u32).
Records are sorted by their first field, so one account is found by a binary search of the index
(about 20 reads for a million accounts) and one read of its segment.

The manifest signs the hash of ``proofs.idx``; the index holds the hash of every proof and where
it lies, and the proofs fill their segments with nothing between or after them, so the signature
covers every byte of the bundle (as it covers every file of the ``files`` layout through
``proofs.sha256``).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from irctl.errors import UsageError, VerificationFailed
from irctl.reserves.proofs import chunk_proofs

INDEX = "proofs.idx"
MAGIC = b"irctl-proof-index/1\n"
HEADER = struct.Struct(">20sIQ")
RECORD = struct.Struct(">32s32sIQI")
#: Index records are sorted in this many buckets, by their first byte, before they are joined.
BUCKETS = 256


def segment_name(number: int) -> str:
    return f"proofs/{number:05d}.bin"


def index_bucket(work: Path, bucket: int) -> Path:
    return work / "index" / f"{bucket:03d}.bin"


class _Segment:
    """A new file written past the page cache where the system allows it (``O_DIRECT``).

    The build writes gigabytes of proofs and never reads them back: straight to the disk, they
    cost neither a copy into the cache nor, on a virtual machine, the first touch of as much
    fresh memory (which cost more than making the proofs, measured on the 2-core machine of
    ``bench/reserves.py``).  ``O_DIRECT`` wants whole blocks from aligned memory: the buffer is
    an anonymous map, written out ``ALIGN`` bytes at a time, the last block padded and the file
    truncated to its length.  Where it is refused, the file is written as any other.
    """

    SIZE = 8 << 20
    ALIGN = 4096

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        direct = getattr(os, "O_DIRECT", 0)
        try:
            self.fd = os.open(path, flags | direct, 0o644)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            self.fd = os.open(path, flags, 0o644)  # a file system without O_DIRECT
            direct = 0
        self.direct = bool(direct)
        self.buffer = mmap.mmap(-1, self.SIZE)
        self.used = 0
        self.written = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(self.SIZE - self.used, len(view))
            self.buffer[self.used : self.used + take] = view[:take]
            self.used += take
            view = view[take:]
            if self.used == self.SIZE:
                self._drain(self.SIZE)
                self.used = 0

    def _drain(self, count: int) -> None:
        view = memoryview(self.buffer)[:count]
        try:
            while view:
                try:
                    done = os.write(self.fd, view)
                except OSError as exc:
                    if not self.direct or exc.errno != errno.EINVAL:
                        raise
                    self._buffered()  # taken at open, refused at write (alignment, some FUSE)
                    continue
                view = view[done:]
                self.written += done
        finally:
            view.release()

    def _buffered(self) -> None:
        import fcntl

        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def close(self) -> int:
        """Write what is left and close the file; its length."""
        try:
            length = self.written + self.used
            if self.used:
                if self.direct:  # a whole last block, then the file cut to its length
                    self._drain(-(-self.used // self.ALIGN) * self.ALIGN)
                    os.ftruncate(self.fd, length)
                else:
                    self._drain(self.used)
            return length
        finally:
            os.close(self.fd)
            self.buffer.close()


def write_segment_task(
    work: Path, out: Path, head: str, chunk: int, chunk_bits: int, counts: list[int],
    record_size: int, info: tuple[int, int],
) -> list[bytes]:  # fmt: skip
    """Write the proofs of one chunk of leaves into its segment; return their index records,
    in ``BUCKETS`` parts by the first byte of the account's hash."""
    parts = [bytearray() for _ in range(BUCKETS)]
    sha256 = hashlib.sha256
    pack = RECORD.pack
    offset = 0
    segment = _Segment(out / segment_name(chunk))
    try:
        for raw, data in chunk_proofs(work, head, chunk, chunk_bits, counts, record_size, info):
            account = sha256(raw).digest()
            parts[account[0]] += pack(account, sha256(data).digest(), chunk, offset, len(data))
            segment.write(data)
            offset += len(data)
    finally:
        segment.close()
    return [bytes(part) for part in parts]


def sort_bucket_task(work: Path, bucket: int) -> bytes:
    """One bucket of index records, read from the work folder and sorted."""
    path = index_bucket(work, bucket)
    data = path.read_bytes()
    path.unlink()
    size = RECORD.size
    return b"".join(sorted([data[at : at + size] for at in range(0, len(data), size)]))


def index_header(segments: int, accounts: int) -> bytes:
    return HEADER.pack(MAGIC, segments, accounts)


@dataclass(frozen=True)
class Entry:
    """One index record: where one account's proof lies and the hash it must have."""

    account: bytes  # SHA-256 of the account id
    digest: bytes  # SHA-256 of the proof
    segment: int
    offset: int
    length: int


class Damaged(Exception):
    """The index cannot be read as one; the message says why (without the folder)."""


class Index:
    """The index of a bundle, open for lookups; a header or size that is wrong is
    :class:`Damaged`."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        head = handle.read(HEADER.size)
        if len(head) != HEADER.size or not head.startswith(MAGIC):
            raise Damaged(f"{INDEX} is not an index of proofs (its header is not {MAGIC!r})")
        _, self.segments, self.accounts = HEADER.unpack(head)
        size = os.fstat(handle.fileno()).st_size
        expected = HEADER.size + self.accounts * RECORD.size
        if size != expected:
            raise Damaged(f"{INDEX} is {size} bytes, not the {expected} its header's "
                          f"{self.accounts} accounts take")  # fmt: skip

    def record(self, number: int) -> Entry:
        self.handle.seek(HEADER.size + number * RECORD.size)
        return Entry(*RECORD.unpack(self.handle.read(RECORD.size)))

    def find(self, account: str) -> Entry | None:
        """The record of ``account``, by a binary search on the SHA-256 of its id."""
        wanted = hashlib.sha256(account.encode("utf-8")).digest()
        low, high = 0, self.accounts
        while low < high:
            middle = (low + high) // 2
            self.handle.seek(HEADER.size + middle * RECORD.size)
            key = self.handle.read(32)
            if key == wanted:
                return self.record(middle)
            if key < wanted:
                low = middle + 1
            else:
                high = middle
        return None

    def entries(self, block: int = 1 << 16) -> Iterator[Entry]:
        """Every record, in the index's order, read ``block`` records at a time."""
        self.handle.seek(HEADER.size)
        left = self.accounts
        while left:
            data = self.handle.read(min(left, block) * RECORD.size)
            for fields in RECORD.iter_unpack(data):
                yield Entry(*fields)
            left -= len(data) // RECORD.size


def _corrupt(folder: Path, message: str) -> VerificationFailed:
    return VerificationFailed(f"{folder}: {message}; `irctl reserves verify {folder}` checks "
                              "every byte against the signed manifest")  # fmt: skip


def open_index(folder: Path) -> Index:
    """The index of the bundle at ``folder`` (:class:`Damaged` if it is not one, and
    ``FileNotFoundError`` if there is none)."""
    handle = (folder / INDEX).open("rb")
    try:
        return Index(handle)
    except BaseException:
        handle.close()
        raise


def read_proof(folder: Path, account: str) -> bytes:
    """The bytes of ``account``'s proof in the bundle at ``folder``, checked against the hash the
    index holds for it.

    Raises :class:`~irctl.errors.UsageError` when the bundle has no such account, and
    :class:`~irctl.errors.VerificationFailed` when the index or the proof is damaged.
    """
    try:
        index = open_index(folder)
    except FileNotFoundError:
        raise UsageError(f"{folder} has no {INDEX}: is it a folder `irctl reserves build` "
                         "wrote with --layout bundle?") from None  # fmt: skip
    except Damaged as exc:
        raise _corrupt(folder, str(exc)) from None
    with index.handle:
        entry = index.find(account)
    if entry is None:
        raise UsageError(f"{folder}: no proof for account {account!r}: it is not one of the "
                         f"{index.accounts} accounts of this build (ids are compared exactly: "
                         "case, spaces and all)")  # fmt: skip
    name = segment_name(entry.segment)
    if entry.segment >= index.segments:
        raise _corrupt(folder, f"the index places {account!r} in segment {entry.segment}, of "
                       f"{index.segments}")  # fmt: skip
    try:
        with (folder / name).open("rb") as segment:
            segment.seek(entry.offset)
            data = segment.read(entry.length)
    except FileNotFoundError:
        raise _corrupt(folder, f"{name} is missing") from None
    if hashlib.sha256(data).digest() != entry.digest:
        where = f"{name}, {entry.length} bytes at {entry.offset}"
        raise _corrupt(folder, f"the proof of {account!r} ({where}) does not have the hash "
                       "its index record holds")  # fmt: skip
    return data


def check(folder: Path, accounts: int, fail: Callable[[str], Exception]) -> None:
    """Every proof of the bundle has the hash its index record holds, the records are in order
    and name each account once, and the proofs fill their segments exactly: nothing between,
    after or outside them.  ``fail(message)`` makes the error raised for the first problem.

    Memory: 44 bytes per account (each segment's spans are put in order to be read straight
    through), 440 MB for 10,000,000 accounts.
    """
    try:
        index = open_index(folder)
    except FileNotFoundError:
        raise fail(f"{INDEX} is missing") from None
    except Damaged as exc:
        raise fail(str(exc)) from None
    span = struct.Struct(">QI32s")
    spans = [bytearray() for _ in range(index.segments)]
    with index.handle:
        if index.accounts != accounts:
            raise fail(f"{INDEX} lists {index.accounts} proofs; the manifest says {accounts} "
                       "accounts")  # fmt: skip
        previous = b""
        for number, entry in enumerate(index.entries()):
            if entry.account <= previous:
                raise fail(f"{INDEX}: record {number} is out of order or repeats an account")
            previous = entry.account
            if entry.segment >= index.segments:
                raise fail(f"{INDEX}: record {number} names segment {entry.segment}, of "
                           f"{index.segments}")  # fmt: skip
            spans[entry.segment] += span.pack(entry.offset, entry.length, entry.digest)
    expected = {segment_name(n) for n in range(index.segments)}
    for path in (folder / "proofs").rglob("*"):
        if path.is_file() and path.relative_to(folder).as_posix() not in expected:
            raise fail(f"{path.relative_to(folder)} is not a segment of {INDEX}")
    sha256 = hashlib.sha256
    for number, packed in enumerate(spans):
        name = segment_name(number)
        ordered = sorted(span.iter_unpack(packed))
        spans[number] = bytearray()  # this segment's spans are no longer needed
        try:
            handle = (folder / name).open("rb")
        except FileNotFoundError:
            raise fail(f"{name} is missing") from None
        with handle:
            reader = handle.read
            at = 0
            for offset, length, digest in ordered:
                if offset != at:
                    raise fail(f"{name}: the proofs do not follow one another at byte {at}")
                if sha256(reader(length)).digest() != digest:
                    raise fail(f"{name}: the proof at byte {offset} was changed after the "
                               "manifest was signed")  # fmt: skip
                at += length
            if reader(1):
                raise fail(f"{name}: bytes after its last proof (at {at}) are in no proof")


def iter_proofs(folder: Path) -> Iterator[bytes]:
    """Every proof of the bundle at ``folder``, in the order of its index, each checked against
    the hash its record holds (:class:`~irctl.errors.VerificationFailed` if one is not)."""
    try:
        index = open_index(folder)
    except FileNotFoundError:
        raise UsageError(f"{folder} has no {INDEX}") from None
    except Damaged as exc:
        raise _corrupt(folder, str(exc)) from None
    segments: dict[int, BinaryIO] = {}
    try:
        for entry in index.entries():
            if entry.segment not in segments:
                name = segment_name(entry.segment)
                try:
                    segments[entry.segment] = (folder / name).open("rb")
                except FileNotFoundError:
                    raise _corrupt(folder, f"{name} is missing") from None
            handle = segments[entry.segment]
            handle.seek(entry.offset)
            data = handle.read(entry.length)
            if hashlib.sha256(data).digest() != entry.digest:
                raise _corrupt(folder, f"the proof at byte {entry.offset} of "
                               f"{segment_name(entry.segment)} does not have the hash its "
                               "index record holds")  # fmt: skip
            yield data
    finally:
        index.handle.close()
        for handle in segments.values():
            handle.close()
