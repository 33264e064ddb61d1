"""The liabilities file: one row per account, one column per asset, decimals as exact text.

::

    account,BTC,ETH,USDT
    alice,1.5,0,250.00
    bob,0.00010000,32.1,0

The first column is ``account`` (any non-empty text up to 1,024 bytes of UTF-8, each account
once); every other column is an asset, named in the header (``BTC``, ``USDT.e``), each with a
number of decimals declared by the caller (``--precision BTC=8``).  A balance is a plain
decimal (``12``, ``0.5``; no sign, exponent, spaces or thousands separators) with at most its
asset's decimals; it becomes a whole number of the asset's smallest unit, never a float.
Negative balances are refused.  Blank lines are skipped; a UTF-8 byte-order mark is allowed.

Every mistake is an :class:`~irctl.errors.InvalidDocument` naming ``file:line:column``.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
import struct
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from irctl.errors import Diagnostic, InvalidDocument, UsageError
from irctl.reserves.verify_proof import LIMIT, MAX_DECIMALS, MAX_ID_BYTES, leaf_hash

_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
#: How a row travels from the reader to the buckets: line, id length, id, salt, leaf record.
ROW_HEAD = struct.Struct("<QH")
BUCKETS = 256
#: Problems reported at most, so a file wrong on every line still gives a readable error.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Header:
    """The asset columns of a liabilities file and each asset's decimals."""

    assets: tuple[str, ...]
    decimals: tuple[int, ...]

    @property
    def record_size(self) -> int:
        """Bytes of one node record: the hash, then one 16-byte sum per asset."""
        return 32 + 16 * len(self.assets)


def parse_precisions(items: list[str]) -> dict[str, int]:
    """``["BTC=8", "ETH=18"]`` as given to ``--precision``."""
    found: dict[str, int] = {}
    for item in items:
        symbol, sep, places = item.partition("=")
        if not sep or not places.isdigit() or not places.isascii():
            raise UsageError(f"--precision {item!r}: write ASSET=DECIMALS, e.g. BTC=8")
        if int(places) > MAX_DECIMALS:
            raise UsageError(f"--precision {item!r}: at most {MAX_DECIMALS} decimals")
        if symbol in found:
            raise UsageError(f"--precision names {symbol} twice")
        found[symbol] = int(places)
    return found


def _problem(name: str, line: int, column: int, path: str, message: str) -> Diagnostic:
    return Diagnostic(name, line, column, path, message)


def read_header(path: Path, precisions: Mapping[str, int]) -> Header:
    """The header line, checked against the declared decimals."""
    name = str(path)
    try:
        with path.open("rb") as handle:
            for row in csv.reader(_text_lines(handle, [0]), strict=True):
                if any(row):
                    break
            else:
                raise InvalidDocument([_problem(
                    name, 1, 1, "", "the file is empty: its first line names the columns, "
                    "account,BTC,ETH,... and each further line is one account"
                )])  # fmt: skip
    except _NotUtf8 as exc:
        raise InvalidDocument([_problem(name, exc.line, 1, "", str(exc))]) from exc
    except csv.Error as exc:
        raise InvalidDocument([_problem(name, 1, 1, "", f"not a CSV line: {exc}")]) from exc
    problems: list[Diagnostic] = []
    if row[0] != "account":
        problems.append(_problem(name, 1, 1, "", f"the first column must be 'account', got "
                                 f"{row[0]!r} (the header reads account,BTC,ETH,...)"))  # fmt: skip
    assets = row[1:]
    if not assets:
        problems.append(_problem(name, 1, 1, "", "no asset columns: the header reads "
                                 "account,BTC,ETH,... with one column per asset"))  # fmt: skip
    seen: set[str] = set()
    column = len(row[0]) + 2
    for symbol in assets:
        if not _SYMBOL.fullmatch(symbol):
            problems.append(_problem(name, 1, column, "", f"{symbol!r} is not an asset symbol "
                                     "(letters, digits, '.', '_', '-'; at most 32)"))  # fmt: skip
        elif symbol in seen:
            problems.append(_problem(name, 1, column, "", f"asset {symbol} has two columns"))
        elif symbol not in precisions:
            problems.append(_problem(name, 1, column, "", f"asset {symbol} has no declared "
                                     f"decimals: add --precision {symbol}=DECIMALS"))  # fmt: skip
        seen.add(symbol)
        column += len(symbol) + 1
    unused = sorted(set(precisions) - seen)
    if unused and assets:
        problems.append(_problem(name, 1, 1, "", f"--precision names {', '.join(unused)}, which "
                                 f"has no column (columns: {', '.join(assets)})"))  # fmt: skip
    if problems:
        raise InvalidDocument(problems)
    return Header(tuple(assets), tuple(precisions[a] for a in assets))


@dataclass
class Chunk:
    """Rows read from the file, with the line each starts on, for a worker to turn into leaves."""

    rows: list[list[str]]
    lines: list[int]


@dataclass
class Block:
    """Whole lines of the file, from line ``first_line`` on, with no quote character among them:
    each line is one row, so a worker can read them without what comes before."""

    data: bytes
    first_line: int


def read_chunks(
    path: Path, block_bytes: int, seen_bytes: list[int]
) -> Iterator[Chunk | Block | Diagnostic]:
    """The rows after the header, about ``block_bytes`` of the file at a time; ``seen_bytes[0]``
    counts the bytes read so far (for progress).

    A block of lines without a quote character is passed on as it is (a :class:`Block`, read by
    the worker); one with a quote is read here, as a :class:`Chunk`, and on past its end until a
    quoted field that runs over it is closed.  A line that cannot be read ends the file with a
    Diagnostic.
    """
    name = str(path)
    with path.open("rb") as handle:
        line = 0  # the lines read so far
        header_done = False
        while data := handle.read(block_bytes):
            if not data.endswith(b"\n"):
                data += handle.readline()
            seen_bytes[0] += len(data)
            if header_done and b'"' not in data:
                yield Block(data, line + 1)
                line += data.count(b"\n")
                continue
            pending = deque(_split_lines(data))

            def texts(pending: deque[bytes]) -> Iterator[str]:
                nonlocal line
                while pending:
                    line += 1
                    yield _decode(pending.popleft(), line)
                while more := handle.readline():  # a quoted field runs past the block
                    seen_bytes[0] += len(more)
                    line += 1
                    yield _decode(more, line)

            reader = csv.reader(texts(pending), strict=True)
            rows: list[list[str]] = []
            lines: list[int] = []
            try:
                while True:
                    start = line + 1
                    row = next(reader, None)
                    if row is None:
                        break
                    if any(row):
                        if header_done:
                            rows.append(row)
                            lines.append(start)
                        header_done = True
                    if not pending:
                        break  # a row ends where the block's lines do: read on by blocks
            except (_NotUtf8, csv.Error) as exc:
                if rows:  # the rows before it are checked all the same
                    yield Chunk(rows, lines)
                if isinstance(exc, _NotUtf8):
                    yield _problem(name, exc.line, 1, "", str(exc))
                else:
                    yield _problem(name, line, 1, "", f"not a CSV line: {exc}")
                return
            if rows:
                yield Chunk(rows, lines)


def _split_lines(data: bytes) -> list[bytes]:
    """``data``'s lines as iterating over the file gives them: split after each b"\\n" only."""
    lines = [part + b"\n" for part in data.split(b"\n")]
    last = lines.pop()[:-1]
    if last:
        lines.append(last)
    return lines


def _decode(line: bytes, number: int) -> str:
    if number == 1 and line.startswith(codecs.BOM_UTF8):
        line = line[len(codecs.BOM_UTF8) :]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _NotUtf8(number, exc.reason) from exc


def _block_rows(block: Block, name: str) -> tuple[Chunk, Diagnostic | None]:
    """A block's rows and the line each is on, up to a line that cannot be read, if any."""
    data = block.data
    problem: Diagnostic | None = None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = block.first_line + data.count(b"\n", 0, exc.start)
        problem = _problem(name, bad, 1, "", f"not UTF-8 text ({exc.reason})")
        text = data[: data.rfind(b"\n", 0, exc.start) + 1].decode("utf-8")
    lines = [part + "\n" for part in text.split("\n")]
    last = lines.pop()[:-1]
    if last:
        lines.append(last)
    reader = csv.reader(lines, strict=True)
    rows: list[list[str]] = []
    numbers: list[int] = []
    first = block.first_line
    try:
        for number, row in enumerate(reader, start=first):
            if any(row):
                rows.append(row)
                numbers.append(number)
    except csv.Error as exc:
        problem = _problem(name, first - 1 + reader.line_num, 1, "", f"not a CSV line: {exc}")
    return Chunk(rows, numbers), problem


class _NotUtf8(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"not UTF-8 text ({reason})")
        self.line = line


def _text_lines(handle: BinaryIO, seen_bytes: list[int]) -> Iterator[str]:
    """The file's lines decoded one by one, so a byte that is not UTF-8 is found on its line;
    ``seen_bytes[0]`` counts the bytes read."""
    for number, line in enumerate(handle, start=1):
        seen_bytes[0] += len(line)
        bom = number == 1 and line.startswith(codecs.BOM_UTF8)
        text = line[len(codecs.BOM_UTF8) :] if bom else line
        try:
            yield text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _NotUtf8(number, exc.reason) from exc


def _column(row: list[str], index: int) -> int:
    """The 1-based character column where cell ``index`` starts (exact for unquoted cells)."""
    return sum(len(cell) + 1 for cell in row[:index]) + 1


def _units(text: str, places: int, scale: int) -> int | str:
    """A balance as a whole number of smallest units, or why it is not one."""
    if text.isascii() and text.isdigit():
        return int(text) * scale
    negative = text.startswith("-")
    whole, dot, fraction = (text[1:] if negative else text).partition(".")
    if not (
        whole.isascii() and whole.isdigit()
        and (not dot or (fraction.isascii() and fraction.isdigit()))
    ):  # fmt: skip
        if not text:
            return "empty: write 0 for no balance"
        return (f"{text!r} is not a decimal number (write e.g. 12 or 0.5: no exponent, spaces "
                "or thousands separators)")  # fmt: skip
    if len(fraction) > places:
        return (f"{text!r} has {len(fraction)} decimals, more than the {places} declared "
                "(--precision)")  # fmt: skip
    value = int(whole) * scale + (int(fraction) * 10 ** (places - len(fraction)) if dot else 0)
    if negative and value:
        return (f"negative balance {text}: a liability cannot be negative (an account that "
                "owes the exchange is not a customer's claim; write 0 for it)")  # fmt: skip
    return value


@dataclass
class Leaves:
    """One chunk turned into leaves: per bucket, the rows as ``ROW_HEAD`` records; per asset,
    the chunk's total; how many rows; the problems found (at most ``MAX_PROBLEMS``); and the
    line of a block that cannot be read, which ends the file."""

    buckets: list[bytes]
    counts: list[int]
    totals: list[int]
    problems: list[Diagnostic]
    unreadable: Diagnostic | None = None


def make_leaves(chunk: Chunk | Block, name: str, header: Header, key: bytes) -> Leaves:
    """Turn rows into salted leaves, sorted into buckets by a keyed hash of the account id.

    Runs in a worker process, which first reads a :class:`Block`'s rows.  ``key`` (secret,
    never written) gives every account its salt and its bucket: a row's bucket depends on its
    id only, so the same id twice meets itself in one bucket, and leaves are later ordered by
    salt, so their order tells nothing.
    """
    unreadable = None
    if isinstance(chunk, Block):
        chunk, unreadable = _block_rows(chunk, name)
    n = len(header.assets)
    width = n + 1
    scales = [10**places for places in header.decimals]
    places_of = header.decimals
    # pads[i][k]: the zeros after k decimals of asset i, to read "1.5" as int("150000000")
    pads = [["0" * (places - k) for k in range(places + 1)] for places in places_of]
    columns = header.assets
    parts: list[bytearray] = [bytearray() for _ in range(BUCKETS)]
    counts = [0] * BUCKETS
    totals = [0] * n
    problems: list[Diagnostic] = []
    pack_head = ROW_HEAD.pack
    blake2b = hashlib.blake2b
    for row, line in zip(chunk.rows, chunk.lines, strict=True):
        if len(row) != width:
            if len(problems) < MAX_PROBLEMS:
                problems.append(_problem(name, line, 1, "", f"{len(row)} cells; the header has "
                                         f"{width} (account and {n} assets)"))  # fmt: skip
            continue
        account = row[0]
        raw = account.encode("utf-8")
        if not account or len(raw) > MAX_ID_BYTES:
            if len(problems) < MAX_PROBLEMS:
                problems.append(_problem(name, line, 1, "account", "empty account id" if not
                                         account else f"account id longer than {MAX_ID_BYTES} "
                                         "bytes"))  # fmt: skip
            continue
        values: list[int] = []
        bad = False
        for index in range(n):
            text = row[index + 1]
            whole, dot, fraction = text.partition(".")
            pad = pads[index]
            if (
                whole.isdigit() and text.isascii() and len(fraction) < len(pad)
                and (not dot or fraction.isdigit())
            ):  # fmt: skip
                got: int | str = int(whole + fraction + pad[len(fraction)])  # the common case
            else:
                got = _units(text, places_of[index], scales[index])
            if type(got) is int and got < LIMIT:
                values.append(got)
                continue
            bad = True
            if len(problems) < MAX_PROBLEMS:
                reason = got if isinstance(got, str) else "2**128 smallest units or more"
                problems.append(_problem(name, line, _column(row, index + 1), columns[index],
                                         f"{reason} (account {account!r})"))  # fmt: skip
        if bad:
            continue
        digest = blake2b(raw, key=key, digest_size=17).digest()
        salt = digest[1:]
        balances = b"".join([value.to_bytes(16, "big") for value in values])
        bucket = digest[0]
        part = parts[bucket]
        part += pack_head(line, len(raw))
        part += raw
        part += salt
        part += leaf_hash(salt, account, balances)
        part += balances
        counts[bucket] += 1
        for index in range(n):
            totals[index] += values[index]
    return Leaves([bytes(part) for part in parts], counts, totals, problems, unreadable)
