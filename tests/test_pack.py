"""Evidence packs: built from a real run, verified with no store, tampered with in every way.

Every tamper is done on the zip the way someone holding the file would do it,
and ``verify`` must catch it and name it.  The pack is verified by the real
``irctl`` command in a directory with no workspace (no store to fall back on).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.canonical import canonical_json, sha256_hex
from irctl.events import GENESIS
from irctl.identity import public_key_text
from irctl.pack import verify_pack
from irctl.transcript import seal_fields
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
    with zipfile.ZipFile(pack) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    change(files)
    target = tmp_path / "tampered.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
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
        lines[3] = lines[3].replace("halting", "not halting")
        files["events.jsonl"] = "".join(x + "\n" for x in reseal(lines, forger)).encode()
        files["keys/installation.pub"] = (public_key_text(forger) + "\n").encode()
        manifest = json.loads(files["manifest.json"])
        for name in ("events.jsonl", "keys/installation.pub"):
            manifest["files"][name]["sha256"] = sha256_hex(files[name])
        manifest["head"]["hash"] = sha256_hex(files["events.jsonl"].decode().splitlines()[-1])
        files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
        from irctl.identity import sign
        from irctl.pack import _signature_message

        files["manifest.sig"] = sign(forger, _signature_message(files["manifest.json"])).encode()

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
    forged = "".join(x.replace("halting", "not halting") + "\n" for x in lines).encode()
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
    from irctl.secrets import check_commitment, commitments, run_salt, secret_salt
    from irctl.store import Store

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
