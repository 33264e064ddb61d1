"""Evidence packs: one zip a reviewer verifies on a machine with no access to the store.

``irctl transcript pack RUN_ID -o FILE.zip`` writes::

    manifest.json            what is in the pack: every file's SHA-256 and size, the run,
                             its head, the runbook digest, the keys; signed by the
                             installation key (manifest.sig)
    manifest.sig             Ed25519 signature of manifest.json's exact bytes
    events.jsonl             the run's journal, exactly the stored, hash-chained lines
    runbook.yaml             the exact runbook text that ran (its SHA-256 is the run's
                             runbook digest)
    keys/installation.pub    the installation public key that seals the checkpoints
    keys/operators.json      the operators' public keys as recorded at run start
    exports/transcript.html  the self-contained HTML transcript
    exports/transcript.md    the Markdown transcript
    exports/transcript.pdf   the PDF (when Chromium is available)

:func:`verify_pack` checks, with public keys only: the manifest's signature;
every file against the manifest (changed, deleted or added files are named; a
name that appears twice, or any directory entry, fails the pack); the zip
around the files (comments, extra fields, attributes, dates, and bytes that
belong to no file: :mod:`irctl.record.pack_zip`); the journal (hash chain, order,
checkpoints, approvals: :mod:`irctl.record.transcript`); that ``runbook.yaml`` is the
runbook the run recorded; and that the keys in the pack are the keys the run
was sealed and approved with.  Give ``--key`` (the installation key you trust,
obtained elsewhere) so that a pack whose keys were all swapped and re-signed is
caught too: without it the seals are checked against the pack's own key and
the result is reported as not trusted (``trusted: false``).

Only a file that is not a pack at all (not a readable zip, or a zip holding
none of ``manifest.json``, ``manifest.sig`` and ``events.jsonl``) is bad input
(exit 2).  A pack whose manifest is missing, damaged or edited fails
verification (exit 1) with the manifest as its first problem, as does a file
of the pack that cannot be read.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.canonical import canonical_json, sha256_hex
from irctl.errors import IntegrationError, UsageError
from irctl.record.pack_zip import READ_ERRORS, entry_problems, layout_problems, member, shown, stamp

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.journal.events import Event
    from irctl.journal.filereader import Reading
    from irctl.record.keyring import Trust
    from irctl.record.transcript import VerifyReport

__all__ = ["KIND", "PackReport", "build_pack", "verify_file", "verify_pack"]

KIND = "irctl-evidence-pack/v1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
EVENTS = "events.jsonl"
RUNBOOK = "runbook.yaml"
INSTALLATION_KEY = "keys/installation.pub"
OPERATOR_KEYS = "keys/operators.json"
#: No member of a pack is read beyond this size (a pack is not a zip bomb's way in).
MAX_MEMBER = 1 << 30


def _signature_message(manifest: bytes) -> bytes:
    return b"irctl-evidence-pack:v1:" + hashlib.sha256(manifest).hexdigest().encode("ascii")


def build_pack(
    store: Reading,
    run_id: str,
    target: Path,
    *,
    public_key: str | None,
    signing_key: Ed25519PrivateKey | None,
    pdf: bool | None = None,
) -> dict[str, Any]:
    """Write the evidence pack of a run to ``target``; returns the manifest.

    ``pdf``: True requires the PDF, False leaves it out, None includes it when
    Chromium is available.
    """
    from irctl.identity import public_key_text, sign
    from irctl.record.exports import export_markdown, export_pdf, find_chromium
    from irctl.record.report_html import export_html
    from irctl.record.transcript import verify_lines

    events = store.events(run_id)
    if not events:
        raise UsageError(f"run {run_id} has no events to pack")
    created = events[0].data
    text = created.get("runbook_text")
    if not isinstance(text, str):
        raise UsageError(f"run {run_id} did not record its runbook text; it cannot be packed")
    if signing_key is not None:
        public_key = public_key_text(signing_key)
    keys = [public_key] if public_key else None
    lines = [e.line for e in events]
    report = verify_lines(lines, public_keys=keys)
    html_text = export_html(events, report)
    files: dict[str, bytes] = {
        EVENTS: "".join(line + "\n" for line in lines).encode("utf-8"),
        RUNBOOK: text.encode("utf-8"),
        OPERATOR_KEYS: (json.dumps(_operator_keys(events), indent=2, sort_keys=True) + "\n")
        .encode("utf-8"),
        "exports/transcript.html": html_text.encode("utf-8"),
        "exports/transcript.md": export_markdown(events, report).encode("utf-8"),
    }
    if public_key:
        files[INSTALLATION_KEY] = (public_key + "\n").encode("ascii")
    if pdf is None:
        try:
            find_chromium()
            pdf = True
        except IntegrationError:  # no browser here: the pack goes without the PDF
            pdf = False
    if pdf:
        files["exports/transcript.pdf"] = export_pdf(html_text)
    last = events[-1]
    manifest: dict[str, Any] = {
        "kind": KIND, "run": run_id, "runbook": created.get("runbook"),
        "runbook_digest": created.get("runbook_digest"), "events": len(events),
        "head": {"seq": last.seq, "hash": last.hash},
        "installation_key": public_key, "verified_when_packed": report.ok,
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        },
    }  # fmt: skip
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    members = [(MANIFEST, manifest_bytes), *sorted(files.items())]
    if signing_key is not None:
        members.append((SIGNATURE, (sign(signing_key, _signature_message(manifest_bytes)) + "\n")
                        .encode("ascii")))  # fmt: skip
    date_time = stamp(events[0].ts)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(member(name, date_time), data)
    try:
        target.write_bytes(buffer.getvalue())
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc
    return manifest


def _operator_keys(events: Sequence[Event]) -> dict[str, str | None]:
    operators = events[0].data.get("operators")
    if not isinstance(operators, dict):
        return {}
    return {
        str(name): (entry.get("key") if isinstance(entry, dict) else None)
        for name, entry in sorted(operators.items())
    }


# -- verification ---------------------------------------------------------------------------


@dataclass
class PackReport:
    """What :func:`verify_pack` found: the pack's own checks and the journal's report."""

    ok: bool
    problems: list[str]  # the pack's own problems, each naming what was tampered with
    transcript: VerifyReport
    files: int = 0
    notes: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the journal's lines, as checked

    def combined(self) -> VerifyReport:
        """The journal's report with the pack's problems first (what the CLI prints)."""
        report = self.transcript
        return replace(
            report, ok=report.ok and self.ok, problems=[*self.problems, *report.problems],
            notes=[*self.notes, *report.notes],
        )  # fmt: skip


class _Pack:
    """The members of a pack by name, and what is wrong with the zip's directory itself.

    A name must appear once: with two members of one name, tools disagree on
    which one they show (many show the first; :mod:`zipfile` reads the last),
    so the copy a reviewer opens need not be the copy that was checked.  irctl
    writes no directory entries: one is an addition, and one holding data is
    data no check reads.  A member that cannot be read (its compressed bytes
    were altered, or it claims to be huge) is a problem of the pack, named once.
    """

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.names: dict[str, zipfile.ZipInfo] = {}
        self.problems: list[str] = []
        self.damaged: dict[str, str] = {}  # name -> why it cannot be read
        counts: dict[str, int] = {}
        for info in archive.infolist():
            counts[info.filename] = counts.get(info.filename, 0) + 1
            if info.filename.endswith("/"):  # not is_dir(): it fails on an empty name
                if info.file_size or info.compress_size:
                    self.problems.append(
                        f"DIRECTORY WITH DATA: the directory entry {info.filename} holds "
                        f"{info.file_size} bytes; a pack's directories hold none"
                    )
                else:
                    self.problems.append(
                        f"ADDED: the directory entry {info.filename} is in the pack but not in "
                        "the manifest (irctl writes no directory entries)"
                    )
                continue
            self.names[info.filename] = info
        self.problems += [
            f"DUPLICATE: {name} appears {count} times in the pack; tools show different "
            "copies of it, so none can be trusted (a pack holds each name once)"
            for name, count in sorted(counts.items()) if count > 1
        ]  # fmt: skip

    def read(self, name: str) -> bytes | None:
        """The bytes of a member; None if it is missing or cannot be read (see ``damaged``)."""
        info = self.names.get(name)
        if info is None:
            return None
        if info.file_size > MAX_MEMBER:
            self.damaged[name] = f"claims to hold {info.file_size} bytes (more than {MAX_MEMBER})"
            return None
        try:
            return self.archive.read(info)
        except READ_ERRORS as exc:
            self.damaged[name] = f"cannot be read from the zip ({exc})"
            return None

    def missing(self, name: str, problem: str) -> list[str]:
        """``problem`` for a member that is not there; nothing more for one that is damaged."""
        return [] if name in self.damaged else [problem]


def verify_pack(
    path: Path, public_keys: list[str] | None, trust: Trust | None = None
) -> PackReport:
    """Verify an evidence pack offline; ``public_keys`` are the trusted installation keys.

    ``trust`` (the reviewer's trust root) checks the operator keys the run
    recorded, as :func:`irctl.record.transcript.verify_lines` does; its installation
    key, if any, is trusted for the seals and the manifest too.

    A file that is not a zip, or a zip holding none of a pack's manifest,
    signature and journal, is not a pack: :class:`UsageError` (exit 2).  Any
    other change, a damaged or edited manifest included, is a problem in the
    report (the command exits 1).
    """
    from irctl.record.transcript import verify_lines

    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as exc:
        raise UsageError(f"no file {path}") from exc
    except READ_ERRORS as exc:
        raise UsageError(f"{path} is not an evidence pack (not a readable zip): {exc}") from exc
    with archive:
        pack = _Pack(archive)
        raw_manifest = pack.read(MANIFEST)
        manifest, unusable = _manifest(pack, raw_manifest)
        if unusable is not None and not pack.names.keys() & {SIGNATURE, EVENTS}:
            what = f"it has no {MANIFEST}" if MANIFEST not in pack.names else f"its {unusable}"
            raise UsageError(f"{path} is not an evidence pack: {what}")
        problems: list[str] = list(pack.problems)
        notes: list[str] = []
        pack_key = _text(pack.read(INSTALLATION_KEY))
        if trust is not None:
            public_keys = trust.seal_keys(public_keys)
        trusted = public_keys
        if public_keys is not None and pack_key is not None and pack_key not in public_keys:
            problems.append(
                f"KEY SWAPPED: {INSTALLATION_KEY} holds {pack_key}, not the trusted key "
                f"{', '.join(public_keys)}"
            )
        own_key_only = trusted is None and pack_key is not None
        if trusted is None and pack_key is not None:
            # Checked against the pack's own key, so that a seal by any other key is still
            # caught; but whoever made the pack chose that key: the result is not trusted.
            trusted = [pack_key]
            notes.append(
                f"NOT TRUSTED: checked only against the key inside the pack ({pack_key}), "
                "which whoever made the pack chose: this shows the pack is consistent, not "
                "who sealed it; give --key with the installation key you trust (obtained "
                "elsewhere) to rule out a pack re-signed with another key"
            )
        if raw_manifest is not None:
            problems += _check_signature(pack, raw_manifest, trusted)
        listed = manifest.get("files") if manifest is not None else None
        if manifest is not None:
            problems += _check_files(pack, listed)
        raw_events = pack.read(EVENTS)
        if raw_events is None:
            lines: list[str] = []
        else:
            text = raw_events.decode("utf-8", "surrogateescape")
            lines = text.split("\n")
            if lines and lines[-1] == "":
                lines.pop()
        written = {*listed, MANIFEST, SIGNATURE} if isinstance(listed, dict) else None
        problems += entry_problems(archive.infolist(), written, _stamp(lines))
        problems += layout_problems(path, archive, written)
        try:
            report = verify_lines(lines, public_keys=trusted, trust=trust)
        except UsageError as exc:  # a malformed key in the pack
            problems.append(f"KEY SWAPPED: {INSTALLATION_KEY} is not a valid key ({exc})")
            report = verify_lines(lines, public_keys=None, trust=trust)
        if not lines:
            problems += pack.missing(EVENTS, f"DELETED: {EVENTS} is missing or empty")
        else:
            problems += _check_runbook(pack, lines[0])
            problems += _check_operator_keys(pack, lines[0])
            if manifest is not None:
                problems += _check_head(manifest, lines)
        if own_key_only:
            report = replace(report, trusted=False)
        files = len(listed) if isinstance(listed, dict) else 0
    # the manifest first (nothing else can be trusted without it), then what could not be read
    first = [] if unusable is None else [
        f"{'MANIFEST' if MANIFEST in pack.names else 'DELETED'}: {unusable}; nothing in the "
        "pack can be checked against it"]  # fmt: skip
    first += [f"CHANGED: {name} {why}: its stored bytes were altered or damaged"
              for name, why in pack.damaged.items() if name != MANIFEST]  # fmt: skip
    problems = [*first, *problems]
    return PackReport(not problems and report.ok, problems, report, files, notes, lines)


def _manifest(pack: _Pack, raw: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest; or None and what is wrong with it (it is missing, damaged or edited)."""
    if raw is None:
        why = pack.damaged.get(MANIFEST, "is missing")
        return None, f"{MANIFEST} {why}"
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, f"{MANIFEST} is not JSON"
    if not isinstance(manifest, dict):
        return None, f"{MANIFEST} is not a JSON object"
    if manifest.get("kind") != KIND:
        return None, f"{MANIFEST} is of kind {_shown(manifest.get('kind'))}, not {KIND}"
    return manifest, None


def _shown(value: object) -> str:
    """A value from a manifest, quoted and cut short (a manifest can hold anything)."""
    shown = json.dumps(value, ensure_ascii=True)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _stamp(lines: list[str]) -> tuple[int, int, int, int, int, int] | None:
    """The date the pack's files carry, from the journal's first event; None if it has none."""
    try:
        first = json.loads(lines[0]) if lines else None
        ts = first.get("ts") if isinstance(first, dict) else None
        return stamp(ts) if isinstance(ts, str) else None
    except (ValueError, RecursionError):
        return None  # the journal's own verification reports the line


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""


def _check_signature(pack: _Pack, manifest: bytes, trusted: list[str] | None) -> list[str]:
    from irctl.identity import load_public_key, verify

    raw = pack.read(SIGNATURE)
    if raw is None:
        return pack.missing(SIGNATURE, f"UNSIGNED: the pack has no {SIGNATURE}; its manifest "
                                       "cannot be trusted")  # fmt: skip
    signature = _text(raw) or ""
    for key in trusted or []:
        try:
            public = load_public_key(key)
        except UsageError:
            continue
        if verify(public, _signature_message(manifest), signature):
            # the signature is 64 bytes: one way to write it, as build_pack does
            exact = base64.b64encode(base64.b64decode(signature)) + b"\n"
            if raw != exact:
                return [f"CHANGED: {SIGNATURE} is not the text irctl writes (the signature "
                        "verifies, but text was added to it or it was re-encoded)"]  # fmt: skip
            return []
    return [f"MANIFEST: {SIGNATURE} does not verify with the installation key: the manifest "
            "was edited or re-signed with another key"]  # fmt: skip


def _check_files(pack: _Pack, listed: object) -> list[str]:
    problems: list[str] = []
    if not isinstance(listed, dict):
        return [f"MANIFEST: {MANIFEST} lists no files"]
    for name, entry in sorted(listed.items()):
        data = pack.read(str(name))
        if data is None:
            problems += pack.missing(str(name), f"DELETED: {name} is listed in the manifest but "
                                                "missing from the pack")  # fmt: skip
            continue
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if hashlib.sha256(data).hexdigest() != expected:
            problems.append(f"CHANGED: {name} does not match its SHA-256 in the manifest")
        elif isinstance(size, bool) or size != len(data):
            problems.append(f"CHANGED: {name} holds {len(data)} bytes, but the manifest records "
                            f"{_shown(size)}")  # fmt: skip
    for name, info in sorted(pack.names.items()):
        if name not in listed and name not in (MANIFEST, SIGNATURE):
            problems.append(f"ADDED: {shown(info)} is in the pack but not in the manifest")
    return problems


def _created(first_line: str) -> dict[str, Any] | None:
    """The data of the journal's first event (``run.created``); None if it has none."""
    try:
        event = json.loads(first_line)
    except (ValueError, RecursionError):
        return None
    data = event.get("data") if isinstance(event, dict) else None
    return data if isinstance(data, dict) else None


def _no_run_data(first_line: str) -> list[str]:
    try:
        json.loads(first_line)
    except (ValueError, RecursionError):
        return []  # the journal's own verification reports a line that is not JSON
    return [f"CHANGED: the first event of {EVENTS} holds no run data (its data is not a "
            f"mapping): {RUNBOOK} and {OPERATOR_KEYS} cannot be checked against it"]  # fmt: skip


def _check_runbook(pack: _Pack, first_line: str) -> list[str]:
    created = _created(first_line)
    if created is None:
        return _no_run_data(first_line)
    text = pack.read(RUNBOOK)
    if text is None:
        return pack.missing(RUNBOOK, f"DELETED: {RUNBOOK} (the runbook text) is missing")
    digest = "sha256:" + hashlib.sha256(text).hexdigest()
    recorded = created.get("runbook_digest")
    if digest != recorded:
        return [f"RUNBOOK SWAPPED: {RUNBOOK} hashes to {digest}, but the run recorded "
                f"{recorded}"]  # fmt: skip
    if created.get("runbook_text") != text.decode("utf-8", "replace"):
        return [f"RUNBOOK SWAPPED: {RUNBOOK} is not the runbook text recorded at run start"]
    return []


def _check_operator_keys(pack: _Pack, first_line: str) -> list[str]:
    created = _created(first_line)
    if created is None:
        return []  # reported once, by _check_runbook
    raw = pack.read(OPERATOR_KEYS)
    if raw is None:
        return pack.missing(OPERATOR_KEYS, f"DELETED: {OPERATOR_KEYS} is missing")
    try:
        keys = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return [f"CHANGED: {OPERATOR_KEYS} is not JSON"]
    operators = created.get("operators")
    if not isinstance(operators, dict):
        operators = {}
    recorded = {
        str(name): (entry.get("key") if isinstance(entry, dict) else None)
        for name, entry in operators.items()
    }
    if not isinstance(keys, dict):
        return [f"CHANGED: {OPERATOR_KEYS} is not a mapping of operators to keys"]
    problems = [
        f"KEY SWAPPED: {OPERATOR_KEYS} gives {name} the key {keys.get(name)}, but the run "
        f"recorded {key} at run start"
        for name, key in sorted(recorded.items()) if keys.get(name) != key
    ]  # fmt: skip
    problems += [
        f"KEY SWAPPED: {OPERATOR_KEYS} names {name}, who was not an operator at run start"
        for name in sorted(keys) if name not in recorded
    ]
    return problems


def _check_head(manifest: dict[str, Any], lines: list[str]) -> list[str]:
    head = manifest.get("head")
    if not isinstance(head, dict):
        return [f"MANIFEST: {MANIFEST} records no head"]
    seq, expected = head.get("seq"), head.get("hash")
    # bool is an int in Python: a JSON true must not pass as seq 1
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1 or not isinstance(
            expected, str):  # fmt: skip
        return [f"MANIFEST: {MANIFEST} records no valid head"]
    if len(lines) < seq:
        return [f"MISSING EVENTS: {EVENTS} holds {len(lines)} lines, but the pack was made "
                f"with {seq} events (events deleted or the tail cut off)"]  # fmt: skip
    problems = []
    # the line's own bytes (invalid UTF-8 was kept as surrogates when it was decoded)
    if sha256_hex(lines[seq - 1].encode("utf-8", "surrogateescape")) != expected:
        problems.append(f"CHANGED: line {seq} of {EVENTS} is not the head the pack was made with")
    if len(lines) > seq:
        problems.append(f"ADDED: {EVENTS} holds {len(lines) - seq} line(s) after the head the "
                        "pack was made with")  # fmt: skip
    return problems


def manifest_digest(manifest: dict[str, Any]) -> str:
    """``sha256:<hex>`` of a manifest's canonical JSON (to quote it in a ticket)."""
    return "sha256:" + sha256_hex(canonical_json(manifest))


def verify_file(
    path: Path, public_keys: list[str] | None, trust: Trust | None = None
) -> VerifyReport:
    """Verify an exported transcript file (``.jsonl``) or an evidence pack (``.zip``)."""
    if path.suffix.lower() == ".zip":
        return verify_pack(path, public_keys, trust).combined()  # the pack's, then the journal's
    from irctl.record.transcript import verify_export

    return verify_export(path, public_keys, trust)
