"""Evidence packs: built from a real run, verified with no store, tampered with in every way.

Every tamper is done on the zip the way someone holding the file would do it,
and ``verify`` must catch it and name it.  The pack is verified by the real
``irctl`` command in a directory with no workspace (no store to fall back on).
"""

from __future__ import annotations

import json
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.canonical import canonical_json, sha256_hex
from irctl.identity import public_key_text
from irctl.journal.events import GENESIS
from irctl.record.pack import verify_pack
from irctl.record.transcript import seal_fields
from tests.evidence_run import SECRET, EvidenceRun, build, installation_key
from tests.helpers import irctl

Files = dict[str, bytes]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> EvidenceRun:
    return build(tmp_path_factory.mktemp("evidence"))


@pytest.fixture(scope="module")
def pack(run: EvidenceRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("pack") / "incident.zip"
    done = irctl("transcript", "pack", run.run_id, "-o", str(target), cwd=run.ws, env=run.env)
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture(scope="module")
def key(run: EvidenceRun) -> str:
    return installation_key(run.ws)


def nowhere(tmp_path: Path) -> Path:
    """A directory with no irctl.yaml: verification must need no store."""
    empty = tmp_path / "reviewer"
    empty.mkdir(exist_ok=True)
    return empty


def tampered(pack: Path, tmp_path: Path, change: Callable[[Files], None]) -> Path:
    """The pack with ``change`` made to its files, rezipped as carefully as irctl zips them.

    Each file keeps its zip entry's date, attributes and compression (a new file
    takes the manifest's), so only the change itself is there to be caught.
    """
    with zipfile.ZipFile(pack) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
        entries = {info.filename: info for info in archive.infolist()}
    change(files)
    target = tmp_path / "tampered.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            like = entries.get(name, entries["manifest.json"])
            info = zipfile.ZipInfo(name, date_time=like.date_time)
            info.external_attr, info.compress_type = like.external_attr, like.compress_type
            archive.writestr(info, data)
    return target


def on_lines(change: Callable[[list[str]], None]) -> Callable[[Files], None]:
    def apply(files: Files) -> None:
        lines = files["events.jsonl"].decode("utf-8").splitlines()
        change(lines)
        files["events.jsonl"] = "".join(line + "\n" for line in lines).encode("utf-8")

    return apply


def problems(path: Path, key: str | None) -> list[str]:
    report = verify_pack(path, [key] if key else None)
    combined = report.combined()
    assert not combined.ok
    return combined.problems


# -- the pack as made -----------------------------------------------------------------------


def test_pack_holds_what_a_reviewer_needs(pack: Path, run: EvidenceRun, key: str) -> None:
    with zipfile.ZipFile(pack) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        events = archive.read("events.jsonl").decode().splitlines()
        runbook = archive.read("runbook.yaml")
        operators = json.loads(archive.read("keys/operators.json"))
        assert archive.read("keys/installation.pub").decode().strip() == key
        for name, entry in manifest["files"].items():
            assert sha256_hex(archive.read(name)) == entry["sha256"], name
    assert names >= {
        "manifest.json", "manifest.sig", "events.jsonl", "runbook.yaml", "keys/installation.pub",
        "keys/operators.json", "exports/transcript.html", "exports/transcript.md",
        "exports/transcript.pdf",
    }  # fmt: skip
    stored = irctl("transcript", "export", run.run_id, "--format", "jsonl", cwd=run.ws)
    assert events == stored.stdout.splitlines()  # exactly the stored lines
    created = json.loads(events[0])["data"]
    assert created["runbook_digest"] == "sha256:" + sha256_hex(runbook)
    assert set(operators) == {"alice", "bob", "carol", "dana"}
    assert manifest["head"]["seq"] == len(events)


def test_verify_pack_offline_with_no_store(pack: Path, key: str, tmp_path: Path) -> None:
    here = nowhere(tmp_path)
    done = irctl("transcript", "verify", str(pack), "--key", key, cwd=here)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified: 34 events" in done.stdout
    assert "BREAK-GLASS used by carol on restore" in done.stdout
    as_json = irctl("transcript", "verify", str(pack), "--key", key, "--json", cwd=here)
    assert json.loads(as_json.stdout)["ok"] is True
    assert not (here / ".irctl").exists()


def test_no_file_in_the_pack_holds_the_secret(pack: Path) -> None:
    with zipfile.ZipFile(pack) as archive:
        for name in archive.namelist():
            assert SECRET.encode() not in archive.read(name), name


# -- tampering ------------------------------------------------------------------------------


TAMPERS: dict[str, tuple[Callable[[Files], None], list[str]]] = {
    "edit": (
        on_lines(lambda lines: lines.__setitem__(10, lines[10].replace('"ts":"20', '"ts":"19', 1))),
        ["CHANGED: events.jsonl", "event 11 (line 11)", "edited"],
    ),
    "delete": (
        on_lines(lambda lines: lines.pop(7)),
        ["CHANGED: events.jsonl", "event 8 is missing", "MISSING EVENTS"],
    ),
    "insert": (
        on_lines(lambda lines: lines.insert(8, lines[8])),
        ["CHANGED: events.jsonl", "inserted", "ADDED: events.jsonl holds 1 line(s)"],
    ),
    "reorder": (
        on_lines(lambda lines: lines.__setitem__(slice(4, 6), [lines[5], lines[4]])),
        ["CHANGED: events.jsonl", "out of order", "event 5 is missing"],
    ),
    "truncate": (
        on_lines(lambda lines: lines.__delitem__(slice(-4, None))),
        ["CHANGED: events.jsonl", "the tail was cut off", "MISSING EVENTS"],
    ),
    "swap runbook text": (
        lambda files: files.__setitem__(
            "runbook.yaml", files["runbook.yaml"].replace(b"quorum: 2", b"quorum: 1")
        ),
        ["CHANGED: runbook.yaml", "RUNBOOK SWAPPED: runbook.yaml hashes to"],
    ),
    "swap installation key": (
        lambda files: files.__setitem__(
            "keys/installation.pub",
            (public_key_text(Ed25519PrivateKey.generate()) + "\n").encode(),
        ),
        ["CHANGED: keys/installation.pub", "KEY SWAPPED: keys/installation.pub holds"],
    ),
    "swap an operator key": (
        lambda files: files.__setitem__("keys/operators.json", files["keys/operators.json"]
                                        .replace(b'"bob": "ed25519:', b'"bob": "ed25519:AA')),
        ["CHANGED: keys/operators.json", "KEY SWAPPED: keys/operators.json gives bob the key"],
    ),
    "delete a file": (
        lambda files: files.pop("exports/transcript.md"),
        ["DELETED: exports/transcript.md is listed in the manifest but missing"],
    ),
    "add a file": (
        lambda files: files.__setitem__("exports/addendum.txt", b"approved by everyone"),
        ["ADDED: exports/addendum.txt is in the pack but not in the manifest"],
    ),
    "edit an export": (
        lambda files: files.__setitem__(
            "exports/transcript.html",
            files["exports/transcript.html"].replace(b"carol", b"erin"),
        ),
        ["CHANGED: exports/transcript.html does not match its SHA-256"],
    ),
}


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_every_tamper_is_caught_and_named(
    kind: str, pack: Path, key: str, tmp_path: Path
) -> None:
    change, expected = TAMPERS[kind]
    path = tampered(pack, tmp_path, change)
    found = " | ".join(problems(path, key))
    for text in expected:
        assert text in found, f"{kind}: {text!r} not in {found}"


@pytest.mark.parametrize("kind", ["edit", "swap runbook text", "swap installation key"])
def test_the_cli_names_the_tamper_with_no_store(
    kind: str, pack: Path, key: str, tmp_path: Path
) -> None:
    change, expected = TAMPERS[kind]
    path = tampered(pack, tmp_path, change)
    done = irctl("transcript", "verify", str(path), "--key", key, cwd=nowhere(tmp_path))
    assert done.returncode == 1
    assert "NOT verified" in done.stdout
    assert expected[-1] in " ".join(done.stdout.split())
    assert "Traceback" not in done.stderr


def test_rewriting_the_manifest_too_breaks_its_signature(
    pack: Path, key: str, tmp_path: Path
) -> None:
    def forge(files: Files) -> None:
        files["runbook.yaml"] = files["runbook.yaml"].replace(b"quorum: 2", b"quorum: 1")
        manifest = json.loads(files["manifest.json"])
        manifest["files"]["runbook.yaml"]["sha256"] = sha256_hex(files["runbook.yaml"])
        files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()

    found = " | ".join(problems(tampered(pack, tmp_path, forge), key))
    assert "MANIFEST: manifest.sig does not verify" in found
    assert "RUNBOOK SWAPPED" in found
    assert "CHANGED: runbook.yaml" not in found  # the forger fixed that hash


def reseal(lines: list[str], forger: Ed25519PrivateKey) -> list[str]:
    """Re-chain every event and re-sign every checkpoint with another key."""
    out: list[str] = []
    prev = GENESIS
    for line in lines:
        event = json.loads(line)
        event["prev"] = prev
        if event["type"] == "checkpoint":
            sealed = event["data"]["seq"]
            event["data"] = seal_fields(event["run"], sealed, sha256_hex(out[sealed - 1]), forger)
        text = canonical_json(event)
        out.append(text)
        prev = sha256_hex(text)
    return out


def test_a_pack_forged_with_another_key_is_caught_by_the_trusted_key(
    pack: Path, key: str, tmp_path: Path
) -> None:
    forger = Ed25519PrivateKey.generate()

    def forge(files: Files) -> None:
        lines = files["events.jsonl"].decode().splitlines()
        edited = lines[3].replace('"text":"••••"', '"text":"not halting"')  # the halt's note
        assert edited != lines[3]
        lines[3] = edited
        files["events.jsonl"] = "".join(x + "\n" for x in reseal(lines, forger)).encode()
        files["keys/installation.pub"] = (public_key_text(forger) + "\n").encode()
        manifest = json.loads(files["manifest.json"])
        for name in ("events.jsonl", "keys/installation.pub"):
            manifest["files"][name] = {"sha256": sha256_hex(files[name]), "size": len(files[name])}
        manifest["head"]["hash"] = sha256_hex(files["events.jsonl"].decode().splitlines()[-1])
        files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
        from irctl.identity import sign
        from irctl.record.pack import _signature_message

        signature = sign(forger, _signature_message(files["manifest.json"]))
        files["manifest.sig"] = (signature + "\n").encode()

    path = tampered(pack, tmp_path, forge)
    # Consistent in itself: without a trusted key only the pack's own key vouches for it.
    alone = verify_pack(path, None)
    assert alone.ok
    assert any("give --key" in note for note in alone.notes)
    assert alone.combined().trusted is False  # the forger chose that key
    found = " | ".join(problems(path, key))
    assert "KEY SWAPPED: keys/installation.pub holds" in found
    assert "checkpoint" in found


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    here = nowhere(tmp_path)
    junk = here / "junk.zip"
    junk.write_bytes(b"not a zip")
    done = irctl("transcript", "verify", str(junk), cwd=here)
    assert done.returncode == 2
    assert "not an evidence pack" in done.stderr
    empty = here / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("hello.txt", "hi")
    done = irctl("transcript", "verify", str(empty), cwd=here)
    assert done.returncode == 2
    assert "no manifest.json" in done.stderr
    wrong = irctl("transcript", "pack", "r-1", "-o", str(here / "x.tar"), cwd=here)
    assert wrong.returncode == 2


def test_without_a_key_the_pack_is_checked_against_its_own_key_but_not_trusted(
    pack: Path, key: str, tmp_path: Path
) -> None:
    here = nowhere(tmp_path)
    done = irctl("transcript", "verify", str(pack), cwd=here)
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "NOT TRUSTED: checked only against the key inside the pack" in text
    assert "give --key" in text
    as_json = json.loads(irctl("transcript", "verify", str(pack), "--json", cwd=here).stdout)
    assert as_json["ok"] is True  # the seals hold with the pack's own key
    assert as_json["trusted"] is False
    assert any("give --key" in note for note in as_json["notes"])
    given = json.loads(irctl("transcript", "verify", str(pack), "--key", key, "--json",
                             cwd=here).stdout)  # fmt: skip
    assert given["trusted"] is True
    assert not any("NOT TRUSTED" in note for note in given["notes"])


def rezipped(pack: Path, tmp_path: Path, first: list[tuple[str, bytes]]) -> Path:
    """The pack's members after ``first`` (names may repeat: zipfile warns, writes them)."""
    with zipfile.ZipFile(pack) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    target = tmp_path / "rezipped.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(target, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": the point here
        for name, data in first:
            archive.writestr(name, data)
        for info, data in members:
            archive.writestr(info, data)
    return target


def test_a_repeated_name_is_caught_whichever_copy_a_tool_shows(
    pack: Path, key: str, tmp_path: Path
) -> None:
    with zipfile.ZipFile(pack) as archive:
        lines = archive.read("events.jsonl").decode().splitlines()
    edited = [x.replace('"text":"••••"', '"text":"not halting"') for x in lines]
    assert edited != lines
    forged = "".join(x + "\n" for x in edited).encode()
    # the forged copy comes first (what many zip tools show); the genuine one last
    path = rezipped(pack, tmp_path, [("events.jsonl", forged)])
    found = " | ".join(problems(path, key))
    assert "DUPLICATE: events.jsonl appears 2 times in the pack" in found
    done = irctl("transcript", "verify", str(path), "--key", key, cwd=nowhere(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DUPLICATE: events.jsonl appears 2 times" in " ".join(done.stdout.split())
    assert "DUPLICATE: events.jsonl" in done.stderr  # the error line names it too


def test_a_directory_entry_carrying_data_is_caught(pack: Path, key: str, tmp_path: Path) -> None:
    path = rezipped(pack, tmp_path, [("exports/", b"approved by everyone")])
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("exports/").is_dir()
    found = " | ".join(problems(path, key))
    assert "DIRECTORY WITH DATA: the directory entry exports/ holds 20 bytes" in found
    done = irctl("transcript", "verify", str(path), "--key", key, cwd=nowhere(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIRECTORY WITH DATA" in done.stdout


@pytest.mark.parametrize("data", [["not", "a", "mapping"], "a string"])
def test_a_first_event_without_run_data_is_a_verification_failure(
    data: object, pack: Path, key: str, tmp_path: Path
) -> None:
    def change(lines: list[str]) -> None:
        first = json.loads(lines[0])
        first["data"] = data
        lines[0] = canonical_json(first)

    path = tampered(pack, tmp_path, on_lines(change))
    assert "CHANGED: the first event of events.jsonl holds no run data" in " | ".join(
        problems(path, key)
    )
    done = irctl("transcript", "verify", str(path), "--key", key, cwd=nowhere(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "holds no run data" in " ".join(done.stdout.split())
    assert "internal error" not in done.stderr


def test_invalid_utf8_in_the_journal_is_a_verification_failure(
    pack: Path, key: str, tmp_path: Path
) -> None:
    def change(files: Files) -> None:
        raw = files["events.jsonl"].split(b"\n")
        raw[-2] = raw[-2][:-2] + b"\xff" + raw[-2][-2:]  # the head line, made invalid UTF-8
        files["events.jsonl"] = b"\n".join(raw)

    path = tampered(pack, tmp_path, change)
    found = " | ".join(problems(path, key))
    assert "CHANGED: line 34 of events.jsonl is not the head" in found
    assert "is not valid UTF-8 text" in found
    done = irctl("transcript", "verify", str(path), "--key", key, cwd=nowhere(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "internal error" not in done.stderr


@pytest.mark.parametrize("seq", [True, 0, -1, "30"])
def test_a_manifest_head_that_is_no_event_number_is_caught(
    seq: object, pack: Path, key: str, tmp_path: Path
) -> None:
    def change(files: Files) -> None:
        manifest = json.loads(files["manifest.json"])
        lines = files["events.jsonl"].decode().splitlines()
        manifest["head"] = {"seq": seq, "hash": sha256_hex(lines[0])}  # true is not seq 1
        files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()

    found = " | ".join(problems(tampered(pack, tmp_path, change), key))
    assert "MANIFEST: manifest.json records no valid head" in found
    assert "ADDED: events.jsonl holds" not in found


# -- the manifest itself --------------------------------------------------------------------


def rejected(path: Path, key: str, tmp_path: Path, expected: str) -> str:
    """Verify with the real command and no store: exit 1 naming ``expected``; the output."""
    done = irctl("transcript", "verify", str(path), "--key", key, cwd=nowhere(tmp_path))
    shown = " ".join(done.stdout.split())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "NOT verified" in shown
    assert expected in shown, shown
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr
    return shown


def _without_manifest(files: Files) -> None:
    del files["manifest.json"]


MANIFEST_EDITS: dict[str, tuple[Callable[[Files], None], str]] = {
    "not JSON": (
        lambda files: files.__setitem__("manifest.json", files["manifest.json"][:-40]),
        "MANIFEST: manifest.json is not JSON",
    ),
    "not a mapping": (
        lambda files: files.__setitem__("manifest.json", b'["events.jsonl"]\n'),
        "MANIFEST: manifest.json is not a JSON object",
    ),
    "another kind": (
        lambda files: files.__setitem__("manifest.json", files["manifest.json"].replace(
            b"irctl-evidence-pack/v1", b"irctl-evidence-pack/v0")),
        'MANIFEST: manifest.json is of kind "irctl-evidence-pack/v0", not irctl-evidence-pack/v1',
    ),
    "deleted": (_without_manifest, "DELETED: manifest.json is missing"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(MANIFEST_EDITS))
def test_an_edited_manifest_fails_verification_naming_it_first(
    kind: str, pack: Path, key: str, tmp_path: Path
) -> None:
    change, expected = MANIFEST_EDITS[kind]
    path = tampered(pack, tmp_path, change)
    here = nowhere(tmp_path)
    done = irctl("transcript", "verify", str(path), "--key", key, cwd=here)
    assert done.returncode == 1, done.stdout + done.stderr  # tampering, not bad input (2)
    assert f"does not verify: {expected}" in " ".join(done.stderr.split())
    assert "nothing in the pack can be checked against it" in " ".join(done.stdout.split())
    as_json = irctl("transcript", "verify", str(path), "--key", key, "--json", cwd=here)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["problems"][0].startswith(expected)


def test_a_zip_holding_none_of_a_packs_files_is_not_a_pack(tmp_path: Path) -> None:
    here = nowhere(tmp_path)
    extension = here / "extension.zip"  # a browser extension has a manifest.json too
    with zipfile.ZipFile(extension, "w") as archive:
        archive.writestr("manifest.json", '{"manifest_version": 3}')
    done = irctl("transcript", "verify", str(extension), cwd=here)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not an evidence pack: its manifest.json is of kind null" in done.stderr


def test_a_size_in_the_manifest_is_checked_too(
    run: EvidenceRun, pack: Path, key: str, tmp_path: Path
) -> None:
    from irctl.identity import load_private_key, sign
    from irctl.record.pack import _signature_message

    signer = load_private_key(run.ws / ".irctl" / "installation.key")  # the key holder

    def change(files: Files) -> None:
        manifest = json.loads(files["manifest.json"])
        manifest["files"]["runbook.yaml"]["size"] += 1
        files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        signature = sign(signer, _signature_message(files["manifest.json"]))
        files["manifest.sig"] = (signature + "\n").encode()

    size = len(zipfile.ZipFile(pack).read("runbook.yaml"))
    assert problems(tampered(pack, tmp_path, change), key) == [
        f"CHANGED: runbook.yaml holds {size} bytes, but the manifest records {size + 1}"
    ]


@pytest.mark.parametrize("edit", ["whitespace added", "re-encoded"])
def test_the_signature_file_holds_the_signature_and_nothing_else(
    edit: str, pack: Path, key: str, tmp_path: Path
) -> None:
    import base64

    def change(files: Files) -> None:
        signature = files["manifest.sig"].decode().strip()
        if edit == "whitespace added":
            files["manifest.sig"] = (signature + "\r\n \n").encode()
            return
        # 64 bytes end in one byte written as two characters and '=='; the second
        # character's low 4 bits carry nothing, so it can be changed and still decode
        assert len(signature) == 88
        assert signature.endswith("==")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        other = alphabet[alphabet.index(signature[85]) ^ 1]
        forged = signature[:85] + other + "=="
        assert base64.b64decode(forged) == base64.b64decode(signature)
        files["manifest.sig"] = (forged + "\n").encode()

    rejected(tampered(pack, tmp_path, change), key, tmp_path,
             "CHANGED: manifest.sig is not the text irctl writes")  # fmt: skip


# -- the zip around the files ---------------------------------------------------------------


def rewritten(
    pack: Path, tmp_path: Path, edit: Callable[[zipfile.ZipInfo], None], comment: bytes = b""
) -> Path:
    """The pack zipped again with every file's bytes as they were and ``edit`` made to its entry."""
    with zipfile.ZipFile(pack) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    target = tmp_path / "rewritten.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for info, data in members:
            edit(info)
            archive.writestr(info, data)
        archive.comment = comment
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None  # every file reads back as it was: zipfile sees no change
    return target


def unchanged(info: zipfile.ZipInfo) -> None:
    pass


def test_irctl_writes_a_plain_zip(pack: Path, key: str, tmp_path: Path) -> None:
    """What the checks below hold a pack to, and a rewrite that changes nothing verifies."""
    with zipfile.ZipFile(pack) as archive:
        infos = archive.infolist()
        assert archive.comment == b""
    assert not [info.filename for info in infos if info.is_dir()]
    assert {(info.extra, info.comment, info.external_attr, info.compress_type, info.flag_bits)
            for info in infos} == {(b"", b"", 0o600 << 16, zipfile.ZIP_DEFLATED, 0)}  # fmt: skip
    assert len({info.date_time for info in infos}) == 1
    for path in (pack, rewritten(pack, tmp_path, unchanged)):
        report = verify_pack(path, [key])
        assert report.problems == []
        assert report.ok


@pytest.mark.parametrize("name", ["extra/", "exports/", "keys/old/"])
def test_an_empty_directory_entry_is_an_addition(
    name: str, pack: Path, key: str, tmp_path: Path
) -> None:
    path = rezipped(pack, tmp_path, [(name, b"")])
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo(name).is_dir()
        assert archive.getinfo(name).file_size == 0
    expected = f"ADDED: the directory entry {name} is in the pack but not in the manifest"
    rejected(path, key, tmp_path, expected)


def test_a_comment_on_the_zip_is_an_addition(pack: Path, key: str, tmp_path: Path) -> None:
    path = rewritten(pack, tmp_path, unchanged, comment=b"Reviewed and approved by audit.")
    rejected(path, key, tmp_path, "ADDED: the zip carries a comment of 31 bytes")


def on_entry(name: str, **fields: object) -> Callable[[zipfile.ZipInfo], None]:
    """Set ``fields`` on the entry of ``name`` ('*': of every file)."""

    def apply(info: zipfile.ZipInfo) -> None:
        if name in ("*", info.filename):
            for field_name, value in fields.items():
                setattr(info, field_name, value)

    return apply


# unzip takes a file's dates from an extended timestamp field (0x5455) over the zip's own
UNIX_EPOCH = struct.pack("<HHBl", 0x5455, 5, 1, 0)

ENTRY_EDITS: dict[str, tuple[Callable[[zipfile.ZipInfo], None], str]] = {
    "a comment on a file": (
        on_entry("events.jsonl", comment=b"checked: all fine"),
        "ADDED: events.jsonl carries a comment of 17 bytes",
    ),
    "an extra field": (
        on_entry("keys/operators.json", extra=UNIX_EPOCH),
        "ADDED: keys/operators.json carries zip extra fields (0x5455)",
    ),
    "a symbolic link": (
        on_entry("keys/installation.pub", external_attr=(stat.S_IFLNK | 0o777) << 16),
        "CHANGED: keys/installation.pub is marked as a symbolic link",
    ),
    "an executable": (
        on_entry("exports/transcript.html", external_attr=(stat.S_IFREG | 0o755) << 16),
        "CHANGED: exports/transcript.html is marked as executable (mode 0755)",
    ),
    "a hidden file": (
        on_entry("exports/transcript.md", external_attr=0o600 << 16 | 0x02),
        "CHANGED: exports/transcript.md is marked as hidden",
    ),
    "another date": (
        on_entry("*", date_time=(2020, 1, 1, 0, 0, 0)),
        "CHANGED: the zip dates manifest.json, events.jsonl",
    ),
    "stored, not deflated": (
        on_entry("runbook.yaml", compress_type=zipfile.ZIP_STORED),
        "CHANGED: the zip header of runbook.yaml is not as irctl writes it (compression "
        "method 0, not deflate)",
    ),
}


@pytest.mark.parametrize("kind", list(ENTRY_EDITS))
def test_what_an_entry_carries_besides_its_bytes_is_caught(
    kind: str, pack: Path, key: str, tmp_path: Path
) -> None:
    edit, expected = ENTRY_EDITS[kind]
    rejected(rewritten(pack, tmp_path, edit), key, tmp_path, expected)


@pytest.mark.parametrize(
    "name", ["./events.jsonl", "a/../events.jsonl", "keys\\installation.pub", "Events.jsonl",
             "/events.jsonl", "events.jsonl ", "runbook.yaml\u200b"],
)  # fmt: skip
def test_a_name_that_extracts_onto_a_packed_file_is_an_addition(
    name: str, pack: Path, key: str, tmp_path: Path
) -> None:
    path = rezipped(pack, tmp_path, [(name, b'{"seq":1,"type":"run.created"}\n')])
    with zipfile.ZipFile(path) as archive:
        assert name in archive.namelist()
    assert f"ADDED: {name} is in the pack but not in the manifest" in problems(path, key)


def test_a_name_holding_a_nul_byte_is_caught(pack: Path, key: str, tmp_path: Path) -> None:
    path = rewritten(pack, tmp_path, on_entry("runbook.yaml", filename="runbook.yaml#txt"))
    raw = path.read_bytes()
    assert raw.count(b"runbook.yaml#txt") == 2  # the local header and the directory
    path.write_bytes(raw.replace(b"runbook.yaml#txt", b"runbook.yaml\x00txt"))
    with zipfile.ZipFile(path) as archive:  # zipfile cuts the name at the NUL: runbook.yaml
        assert archive.read("runbook.yaml") == zipfile.ZipFile(pack).read("runbook.yaml")
    rejected(path, key, tmp_path, "CHANGED: the zip names runbook.yaml 'runbook.yaml\\x00txt'")


def spliced(pack: Path, tmp_path: Path, at: int, junk: bytes, grow: str | None = None) -> Path:
    """The pack with ``junk`` inserted at offset ``at`` and every offset after it moved along.

    The way a careful hand with a hex editor would hide data: the zip's directory
    and end record are fixed up so that zip tools list the same files.  With
    ``grow``, that file's compressed size counts the junk (it sits inside the file).
    """
    with zipfile.ZipFile(pack) as archive:
        infos, directory = archive.infolist(), archive.start_dir
    raw = bytearray(pack.read_bytes())
    at_record = directory
    for info in infos:  # directory records: compressed size at +20, local header offset at +42
        names, extras, comments = struct.unpack_from("<3H", raw, at_record + 28)
        if info.header_offset >= at:
            struct.pack_into("<L", raw, at_record + 42, info.header_offset + len(junk))
        if info.filename == grow:
            struct.pack_into("<L", raw, at_record + 20, info.compress_size + len(junk))
            struct.pack_into("<L", raw, info.header_offset + 18, info.compress_size + len(junk))
        at_record += 46 + names + extras + comments
    if directory >= at:  # the end record: the directory's offset at +16
        struct.pack_into("<L", raw, at_record + 16, directory + len(junk))
    raw[at:at] = junk
    target = tmp_path / "spliced.zip"
    target.write_bytes(bytes(raw))
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None  # zipfile reads every file as it was
        assert [info.filename for info in archive.infolist()] == [i.filename for i in infos]
    return target


def _data_end(info: zipfile.ZipInfo) -> int:
    return info.header_offset + 30 + len(info.filename) + info.compress_size


HIDING_PLACES: dict[str, tuple[Callable[[list[zipfile.ZipInfo], int], int], str | None, str]] = {
    "at the start": (lambda infos, end: 0, None,
                     "bytes at the start of the file belong to no file"),
    "between two files": (lambda infos, end: infos[2].header_offset, None,
                          "bytes after events.jsonl belong to no file"),
    "before the directory": (lambda infos, end: _data_end(infos[-1]), None,
                             "bytes after manifest.sig belong to no file"),
    "after the end record": (lambda infos, end: end, None,
                             "bytes after the zip's end record belong to no file"),
    "inside a file, after its data": (lambda infos, end: _data_end(infos[1]), "events.jsonl",
                                      "ADDED: events.jsonl holds bytes after the end of its "
                                      "compressed data"),
}  # fmt: skip


@pytest.mark.parametrize("place", list(HIDING_PLACES))
def test_bytes_hidden_outside_every_file_are_caught(
    place: str, pack: Path, key: str, tmp_path: Path
) -> None:
    where, grow, expected = HIDING_PLACES[place]
    with zipfile.ZipFile(pack) as archive:
        infos = sorted(archive.infolist(), key=lambda info: info.header_offset)
    at = where(infos, pack.stat().st_size)
    assert verify_pack(spliced(pack, tmp_path, at, b"", grow), [key]).ok  # the splice alone
    path = spliced(pack, tmp_path, at, b"<approved by: every auditor>", grow)
    rejected(path, key, tmp_path, expected)


def test_a_pack_glued_after_other_bytes_is_caught(pack: Path, key: str, tmp_path: Path) -> None:
    path = tmp_path / "glued.zip"
    path.write_bytes(b"<html>all approved</html>" + pack.read_bytes())  # zipfile still reads it
    rejected(path, key, tmp_path, "ADDED: 25 bytes at the start of the file belong to no file")


def test_a_local_header_that_disagrees_with_the_directory_is_caught(
    pack: Path, key: str, tmp_path: Path
) -> None:
    # A tool that reads the zip from its start (a stream) takes the method from the local
    # header: stored, it shows the compressed bytes.  zipfile reads the directory's.
    raw = bytearray(pack.read_bytes())
    info = zipfile.ZipFile(pack).getinfo("events.jsonl")
    struct.pack_into("<H", raw, info.header_offset + 8, zipfile.ZIP_STORED)
    path = tmp_path / "local.zip"
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
    expected = "CHANGED: the local header of events.jsonl differs from the zip's directory (method)"
    rejected(path, key, tmp_path, expected)


def test_an_end_record_that_miscounts_the_files_is_caught(
    pack: Path, key: str, tmp_path: Path
) -> None:
    # The end record says one file fewer: a tool that trusts its count lists no manifest.sig
    # (zipfile reads the whole directory and does not mind).
    raw = bytearray(pack.read_bytes())
    end = len(raw) - 22
    assert raw[end:end + 4] == b"PK\x05\x06"
    count = struct.unpack_from("<H", raw, end + 10)[0]
    struct.pack_into("<2H", raw, end + 8, count - 1, count - 1)
    path = tmp_path / "miscounted.zip"
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) == count
    rejected(path, key, tmp_path, "CHANGED: the zip's end record does not describe its directory")


def directory_record(raw: bytes, name: str) -> int:
    """Where the zip's directory record of ``name`` starts."""
    at = raw.rindex(b"PK\x05\x06")
    at = struct.unpack_from("<L", raw, at + 16)[0]  # the end record: the directory's offset
    while raw[at:at + 4] == b"PK\x01\x02":
        names, extras, comments = struct.unpack_from("<3H", raw, at + 28)
        if raw[at + 46:at + 46 + names] == name.encode():
            return at
        at += 46 + names + extras + comments
    raise AssertionError(f"no directory record of {name}")


@pytest.mark.parametrize(("field", "where"), [("name length", 28), ("comment length", 32)])
def test_a_directory_record_running_past_the_directory_is_caught(
    field: str, where: int, pack: Path, key: str, tmp_path: Path
) -> None:
    # zipfile reads the directory through a buffer of its stated size: a length running past
    # its end is cut short without a word, while other tools read the end record as the name
    raw = bytearray(pack.read_bytes())
    record = directory_record(bytes(raw), "manifest.sig")
    length = struct.unpack_from("<H", raw, record + where)[0]
    struct.pack_into("<H", raw, record + where, length + 20)
    path = tmp_path / "overrun.zip"
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == zipfile.ZipFile(pack).namelist()
        assert archive.testzip() is None
    rejected(path, key, tmp_path, "CHANGED: the directory record of manifest.sig does not hold "
             f"what zipfile read from it ({field})")  # fmt: skip


def test_a_name_cut_to_nothing_by_a_nul_byte_is_named_as_the_zip_holds_it(
    pack: Path, key: str, tmp_path: Path
) -> None:
    raw = bytearray(pack.read_bytes())
    raw[directory_record(bytes(raw), "runbook.yaml") + 46] = 0  # zipfile reads the name as ''
    path = tmp_path / "nameless.zip"
    path.write_bytes(bytes(raw))
    assert "" in zipfile.ZipFile(path).namelist()
    shown = rejected(path, key, tmp_path, "DELETED: runbook.yaml is listed in the manifest")
    assert "ADDED: '\\x00unbook.yaml' is in the pack but not in the manifest" in shown


def damaged(pack: Path, tmp_path: Path, name: str) -> Path:
    """The pack with ``name``'s deflate stream starting with a block of the reserved type."""
    raw = bytearray(pack.read_bytes())
    info = zipfile.ZipFile(pack).getinfo(name)
    raw[info.header_offset + 30 + len(name)] |= 0b110  # BTYPE 11: zlib refuses it
    path = tmp_path / "damaged.zip"
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("name", ["events.jsonl", "exports/transcript.md", "manifest.json"])
def test_a_file_whose_compressed_bytes_were_altered_fails_verification(
    name: str, pack: Path, key: str, tmp_path: Path
) -> None:
    first = "MANIFEST" if name == "manifest.json" else "CHANGED"
    shown = rejected(damaged(pack, tmp_path, name), key, tmp_path,
                     f"{first}: {name} cannot be read from the zip")  # fmt: skip
    assert f"DELETED: {name}" not in shown  # it is there; it cannot be read


def test_a_file_claiming_a_huge_size_is_not_read(pack: Path, key: str, tmp_path: Path) -> None:
    raw = bytearray(pack.read_bytes())
    with zipfile.ZipFile(pack) as archive:
        directory, first = archive.start_dir, archive.infolist()[0].filename
    assert first == "manifest.json"  # the directory's first record
    struct.pack_into("<L", raw, directory + 24, 0x7FFF0000)  # its uncompressed size
    path = tmp_path / "huge.zip"
    path.write_bytes(bytes(raw))
    rejected(path, key, tmp_path, f"MANIFEST: manifest.json claims to hold {0x7FFF0000} bytes")


def test_check_secret_on_a_damaged_pack_is_a_clear_error(pack: Path, tmp_path: Path) -> None:
    path = damaged(pack, tmp_path, "events.jsonl")
    done = irctl("transcript", "check-secret", str(path), "admin_token", "--salt", "00" * 32,
                 cwd=nowhere(tmp_path), input=SECRET)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot read events.jsonl" in done.stderr
    assert "internal error" not in done.stderr


# -- verifiable redaction -------------------------------------------------------------------


def test_a_reviewer_confirms_the_secret_from_the_pack_with_the_salt(
    run: EvidenceRun, pack: Path, tmp_path: Path
) -> None:
    salt = irctl("transcript", "salt", run.run_id, "admin_token", cwd=run.ws, env=run.env)
    assert salt.returncode == 0, salt.stderr
    value = salt.stdout.strip()
    assert len(value) == 64
    here = nowhere(tmp_path)
    right = irctl("transcript", "check-secret", str(pack), "admin_token", "--salt", value,
                  cwd=here, input=SECRET)  # fmt: skip
    assert right.returncode == 0, right.stdout + right.stderr
    assert "match" in right.stdout
    assert SECRET not in right.stdout + right.stderr
    wrong = irctl("transcript", "check-secret", str(pack), "admin_token", "--salt", value,
                  cwd=here, input=SECRET + "x")  # fmt: skip
    assert wrong.returncode == 1
    other_salt = irctl("transcript", "check-secret", str(pack), "admin_token", "--salt",
                       "00" * 32, cwd=here, input=SECRET)  # fmt: skip
    assert other_salt.returncode == 1
    # from the store, the salt is found by itself
    local = irctl("transcript", "check-secret", run.run_id, "admin_token", cwd=run.ws,
                  input=SECRET)  # fmt: skip
    assert local.returncode == 0, local.stderr
    unknown = irctl("transcript", "check-secret", run.run_id, "nope", cwd=run.ws, input=SECRET)
    assert unknown.returncode == 2
    assert "recorded: admin_token" in unknown.stderr


@pytest.mark.parametrize(
    "secrets", [["admin_token"], "admin_token", {"admin_token": "hmac-sha256:00"},
                {"admin_token": {"commitment": "hmac-sha256:" + "\u00e9" * 64}}],
)  # fmt: skip
def test_check_secret_on_a_malformed_secrets_record_fails_verification(
    secrets: object, pack: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(pack) as archive:
        lines = archive.read("events.jsonl").decode().splitlines()
    for number, line in enumerate(lines):
        event = json.loads(line)
        if event["type"] == "run.started":
            event["data"]["secrets"] = secrets
            lines[number] = canonical_json(event)
            break
    else:
        raise AssertionError("the run has no run.started")
    transcript = tmp_path / "malformed.jsonl"
    transcript.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    done = irctl("transcript", "check-secret", str(transcript), "admin_token", "--salt",
                 "00" * 32, cwd=nowhere(tmp_path), input=SECRET)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the transcript is malformed" in " ".join(done.stderr.split())
    assert "internal error" not in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_the_transcript_alone_reveals_nothing_about_the_secret(pack: Path) -> None:
    import hashlib

    with zipfile.ZipFile(pack) as archive:
        text = archive.read("events.jsonl").decode()
    commitments = {
        entry["commitment"]
        for line in text.splitlines()
        for entry in (json.loads(line)["data"].get("secrets") or {}).values()
    }
    assert len(commitments) == 1  # the same value, each execution
    (recorded,) = commitments
    assert recorded.startswith("hmac-sha256:")
    for unsalted in (hashlib.sha256(SECRET.encode()).hexdigest(),
                     hashlib.sha512(SECRET.encode()).hexdigest()):  # fmt: skip
        assert unsalted not in text
    assert "salt" not in text


def test_the_salt_lives_in_the_store_on_either_backend(store_url: str) -> None:
    from irctl.journal.store import Store
    from irctl.secrets import check_commitment, commitments, run_salt, secret_salt

    store = Store.open(store_url)
    try:
        assert run_salt(store, "r-20261121-0300-ab12") is None
        made = commitments(store, "r-20261121-0300-ab12", {"tok": "env:TOK"}, {"tok": SECRET})
        again = commitments(store, "r-20261121-0300-ab12", {"tok": "env:TOK"}, {"tok": SECRET})
        other = commitments(store, "r-20261121-0300-cd34", {"tok": "env:TOK"}, {"tok": SECRET})
        salt = run_salt(store, "r-20261121-0300-ab12")
    finally:
        store.close()
    assert salt is not None
    assert made == again  # one salt per run, kept
    assert made["tok"]["commitment"] != other["tok"]["commitment"]  # runs are unlinkable
    assert made["tok"]["ref"] == "env:TOK"
    opened = secret_salt(salt, "tok")
    assert check_commitment(made["tok"]["commitment"], opened, SECRET)
    assert not check_commitment(made["tok"]["commitment"], opened, SECRET[:-1])
    assert not check_commitment(made["tok"]["commitment"], secret_salt(salt, "other"), SECRET)
