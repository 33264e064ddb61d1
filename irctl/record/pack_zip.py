"""The zip around an evidence pack: written one way, and checked to be exactly that.

The manifest vouches for the files' bytes, but a zip holds more than its files:
directory entries, comments, extra fields, attributes, dates, and bytes that
belong to no file.  Zip tools show some of these (a comment, a date), act on
others (a symbolic link, an executable or hidden file) or take a file's name
from them (Info-ZIP's Unicode path extra field); bytes outside every file are
listed by nothing.  irctl writes none of them, so each is a change to the pack,
and :func:`entry_problems` and :func:`layout_problems` name it.

What irctl writes (:func:`member`): deflated files, no directory entries, no
comments, no extra fields, mode 0600 with no file type, every file dated when
the run was created; the files back to back from the first byte, then the zip's
directory and its end record, and nothing after.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

__all__ = ["READ_ERRORS", "entry_problems", "layout_problems", "member", "shown", "stamp"]

#: What reading a member of a damaged or crafted zip raises (besides KeyError).
READ_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError,
               NotImplementedError, zlib.error)  # fmt: skip

DateTime = tuple[int, int, int, int, int, int]

_ATTRIBUTES = 0o600 << 16  # rw------- with no file type: zipfile's default, stated here
_VERSION = 20  # zip 2.0 (deflate): what zipfile writes as the version made by and needed
_SYSTEMS = {0: "MS-DOS", 3: "Unix"}  # zipfile writes 0 on Windows, 3 elsewhere
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # a file's local header (zip APPNOTE 4.3.7)
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # a file's directory record (APPNOTE 4.3.12)
_END = struct.Struct("<4s4H2LH")  # the end of central directory record (APPNOTE 4.3.16)
_CHUNK = 1 << 20


def stamp(ts: str) -> DateTime:
    """The date every file of a pack carries: the run's creation, to the zip's 2 seconds."""
    from irctl.journal.events import parse_ts

    moment = parse_ts(ts)
    return (max(moment.year, 1980), moment.month, moment.day, moment.hour, moment.minute,
            moment.second // 2 * 2)  # fmt: skip


def member(name: str, date_time: DateTime) -> zipfile.ZipInfo:
    """The zip entry of one file of a pack, as irctl writes it."""
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = _ATTRIBUTES
    return info


def entry_problems(
    infos: list[zipfile.ZipInfo], names: Collection[str] | None, date_time: DateTime | None
) -> list[str]:
    """What the zip entries of ``names`` (None: every file) hold beyond their bytes.

    One problem per kind of change, naming every file it was made to (a zip
    rewritten by another tool changes them all alike).
    """
    problems: list[str] = []
    found: dict[tuple[str, str], list[str]] = {}  # (kind, detail) -> the files

    def note(kind: str, detail: str, name: str) -> None:
        found.setdefault((kind, detail), []).append(name)

    for info in infos:
        if _is_dir(info) or (names is not None and info.filename not in names):
            continue  # directories and files irctl did not write are reported as added
        name = info.filename
        if info.orig_filename != name:
            problems.append(f"CHANGED: the zip names {name} {info.orig_filename!r}: the name "
                            "holds a NUL byte, so zip tools show it differently")  # fmt: skip
        if info.comment:
            problems.append(f"ADDED: {name} carries a comment of {len(info.comment)} bytes, "
                            "which zip tools show; irctl writes none")  # fmt: skip
        if info.extra:
            note("extra", _extra_ids(info.extra), name)
        if info.external_attr != _ATTRIBUTES:
            note("attributes", _attributes(info.external_attr), name)
        header = _header_differences(info)
        if header:
            note("header", "; ".join(header), name)
        if date_time is not None and info.date_time != date_time:
            note("date", _date(info.date_time), name)
    for (kind, detail), files in found.items():
        if kind == "extra":
            problems.append(f"ADDED: {_they(files, 'carries', 'carry')} zip extra fields "
                            f"({detail}) from which some tools take a file's name, dates or "
                            "owner; irctl writes none")  # fmt: skip
        elif kind == "attributes":
            problems.append(f"CHANGED: {_they(files, 'is', 'are')} marked as {detail}; irctl "
                            "writes every file as a plain file of mode 0600")  # fmt: skip
        elif kind == "header":
            one = len(files) == 1
            problems.append(f"CHANGED: the zip {'header' if one else 'headers'} of "
                            f"{_they(files, 'is', 'are')} not as irctl writes "
                            f"{'it' if one else 'them'} ({detail})")  # fmt: skip
        elif date_time is not None:
            problems.append(f"CHANGED: the zip dates {', '.join(files)} {detail}, but irctl "
                            f"dates every file of this pack {_date(date_time)}, when the run "
                            "was created")  # fmt: skip
    return problems


def _they(files: list[str], one: str, many: str) -> str:
    return f"{files[0]} {one}" if len(files) == 1 else f"{', '.join(files)} {many}"


def _extra_ids(extra: bytes) -> str:
    ids: list[str] = []
    rest = extra
    while len(rest) >= 4 and len(ids) < 8:
        kind, size = struct.unpack("<HH", rest[:4])
        ids.append(f"0x{kind:04x}")
        rest = rest[4 + size:]
    return ", ".join(ids) or f"{len(extra)} bytes"


def _attributes(external: int) -> str:
    mode = external >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode) or external & 0x10:
        return "a directory"
    if external & 0x02:
        return "hidden"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return f"a special file (mode {mode:06o})"
    if mode & 0o111:
        return f"executable (mode {stat.S_IMODE(mode):04o})"
    dos = f" with MS-DOS attributes 0x{external & 0xFFFF:02x}" if external & 0xFFFF else ""
    return f"mode {stat.S_IMODE(mode):04o}{dos}"


def _header_differences(info: zipfile.ZipInfo) -> list[str]:
    found: list[str] = []
    if info.compress_type != zipfile.ZIP_DEFLATED:
        found.append(f"compression method {info.compress_type}, not deflate")
    if info.flag_bits:
        found.append(f"flags 0x{info.flag_bits:04x}")
    if info.create_system not in _SYSTEMS:
        found.append(f"made by system {info.create_system}")
    if (info.create_version, info.extract_version) != (_VERSION, _VERSION):
        found.append(f"versions {info.create_version}/{info.extract_version}")
    if info.internal_attr:
        found.append(f"internal attributes 0x{info.internal_attr:x}")
    if info.volume or info.reserved:
        found.append(f"disk {info.volume}, reserved {info.reserved}")
    return found


def _date(date_time: DateTime) -> str:
    return "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}".format(*date_time)


# -- layout ---------------------------------------------------------------------------------


def layout_problems(
    path: Path, archive: zipfile.ZipFile, names: Collection[str] | None
) -> list[str]:
    """Bytes that belong to no file of the pack; headers and records zip tools read otherwise.

    Every byte must belong to a file (its local header and compressed data, which
    ends where the deflate stream ends), the zip's directory or its end record.
    ``names``: the files whose compressed data is checked to end where it says
    (None: every file); other files are reported as added anyway.
    """
    problems: list[str] = []
    disagree: dict[str, list[str]] = {}  # differing fields -> the files
    infos = sorted(archive.infolist(), key=lambda info: info.header_offset)
    at, where = 0, "at the start of the file"
    with path.open("rb") as file:
        length = file.seek(0, 2)
        for info in infos:
            problems += _gap(at, info.header_offset, where, shown(info))
            file.seek(max(info.header_offset, 0))  # before 0: reported as an overlap
            header = file.read(_LOCAL.size)
            fields = _LOCAL.unpack(header) if len(header) == _LOCAL.size else None
            name = _raw_name(info)
            differ = _local_differences(fields, info, name, file)
            if differ:
                disagree.setdefault(differ, []).append(shown(info))
            data = info.header_offset + _LOCAL.size + len(name) + (fields[-1] if fields else 0)
            if (names is None or info.filename in names) and _trailing(file, data, info):
                problems.append(f"ADDED: {shown(info)} holds bytes after the end of its "
                                "compressed data, which no tool shows")  # fmt: skip
            at, where = max(at, data + info.compress_size), f"after {shown(info)}"
        problems += _gap(at, archive.start_dir, where, "the zip's directory")
        problems += [f"CHANGED: the local header of {', '.join(files)} differs from the zip's "
                     f"directory ({differ}): a tool that reads the zip from its start may see "
                     "another file" for differ, files in disagree.items()]  # fmt: skip
        directory = sum(_CENTRAL.size + len(_raw_name(info)) + len(info.extra) + len(info.comment)
                        for info in infos)  # fmt: skip
        end = archive.start_dir + directory
        file.seek(end)
        record = file.read(_END.size)
        expected = (b"PK\x05\x06", 0, 0, len(infos), len(infos), directory,
                    len(archive.comment))  # fmt: skip
        found = _END.unpack(record) if len(record) == _END.size else None
        concat = archive.start_dir - found[6] if found is not None else 0
        file.seek(archive.start_dir)
        misread: dict[str, list[str]] = {}  # differing fields -> the files
        for info in archive.infolist():  # in the directory's order
            differ = _record_differences(file, info, concat)
            if differ:
                misread.setdefault(differ, []).append(shown(info))
        problems += [f"CHANGED: the directory record of {', '.join(files)} does not hold what "
                     f"zipfile read from it ({differ}): other zip tools may read another "
                     "file" for differ, files in misread.items()]  # fmt: skip
        if found is None or found[:6] + found[7:] != expected:
            problems.append("CHANGED: the zip's end record does not describe its directory, so "
                            "zip tools may list other files than these")  # fmt: skip
        if archive.comment:
            problems.append(f"ADDED: the zip carries a comment of {len(archive.comment)} bytes, "
                            "which zip tools show on opening it; irctl writes none")  # fmt: skip
        problems += _gap(end + _END.size + len(archive.comment), length,
                         "after the zip's end record", None)  # fmt: skip
    return problems


def _gap(start: int, stop: int, where: str, before: str | None) -> list[str]:
    if start < stop:
        return [f"ADDED: {stop - start} bytes {where} belong to no file of the pack: data "
                "hidden from every listing of the zip"]  # fmt: skip
    if start > stop:
        return [f"CHANGED: {before or 'the end of the file'} is at offset {stop}, inside what "
                "comes before it: the zip's parts overlap"]  # fmt: skip
    return []


def shown(info: zipfile.ZipInfo) -> str:
    """A member's name for a message: as the zip holds it when empty or cut at a NUL byte."""
    name = info.filename
    return name if name and name == info.orig_filename else repr(info.orig_filename)


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith("/")  # ZipInfo.is_dir() fails on an empty name


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


_LOCAL_FIELDS = ("signature", "version needed", "reserved", "flags", "method", "time", "date",
                 "CRC", "compressed size", "size", "name length", "extra field length")  # fmt: skip


def _local_differences(
    fields: tuple[object, ...] | None, info: zipfile.ZipInfo, name: bytes, file: BinaryIO
) -> str:
    """The fields in which a file's local header differs from its directory record."""
    if fields is None:
        return "cut short"
    expected = _local_fields(info, len(name))
    differ = [label for label, have, want in zip(_LOCAL_FIELDS, fields, expected, strict=True)
              if have != want]  # fmt: skip
    if not differ:
        if file.read(len(name)) != name:
            differ.append("name")
        elif file.read(len(info.extra)) != info.extra:
            differ.append("extra field")
    return ", ".join(differ)


_CENTRAL_FIELDS = ("signature", "version made by", "system", "version needed", "reserved",
                   "flags", "method", "time", "date", "CRC", "compressed size", "size",
                   "name length", "extra field length", "comment length", "disk",
                   "internal attributes", "external attributes", "offset")  # fmt: skip


def _record_differences(file: BinaryIO, info: zipfile.ZipInfo, concat: int) -> str:
    """The fields of a directory record that zipfile did not take as they are.

    zipfile reads the directory through a buffer of its stated size, so a name or
    comment length that runs past the directory's end is cut short without a word;
    a tool that reads the record as written sees another name.
    """
    record = file.read(_CENTRAL.size)
    if len(record) < _CENTRAL.size:
        return "cut short"
    year, month, day, hour, minute, second = info.date_time
    name = _raw_name(info)
    expected = (b"PK\x01\x02", info.create_version, info.create_system, info.extract_version,
                info.reserved, info.flag_bits, info.compress_type,
                hour << 11 | minute << 5 | second // 2, (year - 1980) << 9 | month << 5 | day,
                info.CRC, info.compress_size, info.file_size, len(name), len(info.extra),
                len(info.comment), info.volume, info.internal_attr, info.external_attr,
                info.header_offset - concat)  # fmt: skip
    fields = _CENTRAL.unpack(record)
    differ = [label for label, have, want in zip(_CENTRAL_FIELDS, fields, expected, strict=True)
              if have != want]  # fmt: skip
    if file.read(len(name) + len(info.extra) + len(info.comment)) != (
            name + info.extra + info.comment):  # fmt: skip
        differ.append("name, extra field or comment")
    return ", ".join(differ)


def _local_fields(info: zipfile.ZipInfo, name_length: int) -> tuple[object, ...]:
    year, month, day, hour, minute, second = info.date_time
    return (b"PK\x03\x04", info.extract_version, info.reserved, info.flag_bits,
            info.compress_type, hour << 11 | minute << 5 | second // 2,
            (year - 1980) << 9 | month << 5 | day, info.CRC, info.compress_size,
            info.file_size, name_length, len(info.extra))  # fmt: skip


def _trailing(file: BinaryIO, start: int, info: zipfile.ZipInfo) -> bool:
    """Whether a deflated file's data goes on after its deflate stream ends.

    A stream that is damaged or cut short is not this question: reading the file
    reports it.
    """
    if info.compress_type != zipfile.ZIP_DEFLATED:
        return info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size
    if start < 0:
        return False  # a file said to start before the zip: reported as an overlap
    file.seek(start)
    stream = zlib.decompressobj(-zlib.MAX_WBITS)
    left = info.compress_size
    try:
        while left and not stream.eof:
            chunk = file.read(min(left, _CHUNK))
            if not chunk:
                return False
            left -= len(chunk)
            while chunk and not stream.eof:
                stream.decompress(chunk, _CHUNK)  # the output is not kept: a bomb costs time only
                chunk = stream.unconsumed_tail
        while not stream.eof and stream.decompress(b"", _CHUNK):
            pass  # output zlib still held when the input ran out
    except zlib.error:
        return False
    return stream.eof and bool(left or stream.unused_data)
