"""The bundle layout: every proof in a few large files and an index, each proof found by a
binary search, byte for byte what the files layout writes, and every byte covered by the
signed manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.errors import UsageError, VerificationFailed
from irctl.reserves import build, extract, verify_manifest
from tests.helpers import irctl, make_workspace
from tests.test_reserves import ASSETS, PRECISIONS, ledger, load_verifier, write_csv

SALTS = b"one set of salts for both layouts"


def build_both(tmp: Path, count: int, **options: int) -> tuple[Path, Path, dict[str, list[int]]]:
    accounts = ledger(count, seed=count)
    source = write_csv(tmp / "liabilities.csv", accounts)
    key = Ed25519PrivateKey.generate()
    for layout in ("bundle", "files"):
        build(source, tmp / layout, precisions=ASSETS, signing_key=key, salt_key=SALTS,
              layout=layout, **options)  # fmt: skip
    return tmp / "bundle", tmp / "files", accounts


def test_every_proof_of_a_bundle_is_the_files_layout_s_and_verifies(tmp_path: Path) -> None:
    bundle, files, accounts = build_both(tmp_path, 3000, workers=2, chunk_bits=10)
    assert sorted(p.name for p in (bundle / "proofs").iterdir()) == [
        "00000.bin", "00001.bin", "00002.bin"
    ]  # fmt: skip
    assert (bundle / "proofs.idx").stat().st_size == 32 + 80 * 3000
    assert not (bundle / "proofs.sha256").exists()
    root_doc = json.loads((bundle / "root.json").read_text(encoding="utf-8"))
    assert root_doc == json.loads((files / "root.json").read_text(encoding="utf-8")) | {
        "created": root_doc["created"]
    }
    verifier = load_verifier(bundle / "verify_proof.py")
    for name, units in accounts.items():
        found = extract(bundle, name)
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
        assert found.data == (files / "proofs" / digest[:2] / f"{digest}.json").read_bytes()
        verified = verifier.verify(json.loads(found.data), root_doc["root"])
        verifier.check_totals(verified, root_doc)
        assert verified.balances == units
        assert found.verified.account == name
    assert verify_manifest(bundle, None).layout == "bundle"
    assert verify_manifest(files, None).layout == "files"


def test_the_index_is_sorted_by_the_hash_of_the_account(tmp_path: Path) -> None:
    bundle, _, accounts = build_both(tmp_path, 300, chunk_bits=6)
    data = (bundle / "proofs.idx").read_bytes()
    assert data.startswith(b"irctl-proof-index/1\n")
    keys = [data[at : at + 32] for at in range(32, len(data), 80)]
    assert keys == sorted(hashlib.sha256(name.encode("utf-8")).digest() for name in accounts)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = make_workspace(tmp_path / "ws")
    write_csv(workspace / "liabilities.csv", ledger(500, seed=5))
    for layout in ("bundle", "files"):
        done = irctl("reserves", "build", "liabilities.csv", "-o", layout, *PRECISIONS,
                     "--layout", layout, cwd=workspace)  # fmt: skip
        assert done.returncode == 0, done.stderr
    return workspace


def test_irctl_reserves_proof_takes_one_proof_out(workspace: Path) -> None:
    name = "client «14», \"quoted\""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "irctl"), "reserves", "proof", "bundle", name],
        cwd=workspace, capture_output=True, check=False,
        env={**os.environ, "IRCTL_WORKSPACE": str(workspace)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == extract(workspace / "bundle", name).data
    made = irctl("reserves", "proof", "bundle", name, "-o", "mine.json", "--json", cwd=workspace)
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    assert (shown["account"], shown["output"]) == (name, "mine.json")
    assert (workspace / "mine.json").read_bytes() == done.stdout
    script = subprocess.run(
        [sys.executable, "-I", "-S", "bundle/verify_proof.py", "mine.json", "bundle/root.json"],
        cwd=workspace, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert script.returncode == 0, script.stdout
    checked = irctl("reserves", "verify-proof", "mine.json", "--root", "bundle/root.json",
                    cwd=workspace)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    # the files layout's proof of the account is its own file, as it is
    from_files = irctl("reserves", "proof", "files", name, "-o", "files.json", cwd=workspace)
    assert from_files.returncode == 0, from_files.stderr
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    own = workspace / "files" / "proofs" / digest[:2] / f"{digest}.json"
    assert (workspace / "files.json").read_bytes() == own.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bundle", "cust-99999"], "no proof for account 'cust-99999': it is not one of the 500"),
        (["bundle", "CUST-00001"], "no proof for account 'CUST-00001'"),
        (["files", "cust-99999"], "no proof for account 'cust-99999'"),
        (["bundle", ""], "ACCOUNT is empty"),
        (["nowhere", "cust-00001"], "no folder nowhere"),
        (["runbooks", "cust-00001"], "holds neither proofs.idx nor proofs.sha256"),
        (["bundle", "cust-00001", "--json"], "--json describes the proof written to --output"),
    ],
)  # fmt: skip
def test_irctl_reserves_proof_of_what_is_not_there(
    workspace: Path, args: list[str], message: str
) -> None:
    done = irctl("reserves", "proof", *args, cwd=workspace)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_changed_byte_anywhere_in_the_bundle_or_its_index_is_found(tmp_path: Path) -> None:
    bundle, _, _ = build_both(tmp_path, 200, chunk_bits=5)
    segments = sorted((bundle / "proofs").iterdir())
    assert len(segments) == 7
    index = bundle / "proofs.idx"
    places = [(index, at) for at in (0, 19, 20, 31, 32, 63, 64, 100, index.stat().st_size - 1)]
    for segment in segments:
        size = segment.stat().st_size
        places.extend((segment, at) for at in (0, 1, size // 3, size // 2, size - 2, size - 1))
    for path, at in places:
        flip(path, at)
        with pytest.raises(VerificationFailed) as caught:
            verify_manifest(bundle, None)
        if path == index:
            assert "proofs.idx was changed after the manifest was signed" in str(caught.value)
        else:
            assert f"proofs/{path.name}: the proof at byte " in str(caught.value), (path, at)
            assert "was changed after the manifest was signed" in str(caught.value)
        flip(path, at)
    assert verify_manifest(bundle, None).accounts == 200


def test_the_folder_check_of_a_damaged_bundle_fails_with_its_reason(workspace: Path) -> None:
    folder = workspace / "bundle"
    segment = folder / "proofs" / "00000.bin"

    def damaged(name: str, change: object) -> subprocess.CompletedProcess[str]:
        copy = workspace / name
        shutil.copytree(folder, copy)
        assert callable(change)
        change(copy)
        return irctl("reserves", "verify", name, cwd=workspace)

    def append(copy: Path) -> None:
        with (copy / "proofs" / "00000.bin").open("ab") as handle:
            handle.write(b"\n")

    def truncate(copy: Path) -> None:
        data = (copy / "proofs" / "00000.bin").read_bytes()
        (copy / "proofs" / "00000.bin").write_bytes(data[:-1])

    for name, change, message in [
        ("appended", append, "bytes after its last proof"),
        ("truncated", truncate, "was changed after the manifest was signed"),
        ("dropped", lambda copy: (copy / "proofs" / "00000.bin").unlink(),
         "proofs/00000.bin is missing"),
        ("added", lambda copy: (copy / "proofs" / "00001.bin").write_bytes(b"{}"),
         "proofs/00001.bin is not a segment of proofs.idx"),
        ("no-index", lambda copy: (copy / "proofs.idx").unlink(), "proofs.idx is missing"),
        ("flipped", lambda copy: flip(copy / "proofs" / "00000.bin", 1000),
         "proofs/00000.bin: the proof at byte "),
        ("flipped-index", lambda copy: flip(copy / "proofs.idx", 5000),
         "proofs.idx was changed after the manifest was signed"),
    ]:  # fmt: skip
        done = damaged(name, change)
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        assert message in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
    assert segment.is_file()
    done = irctl("reserves", "verify", "bundle", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert "OK: 500 proofs" in done.stdout


def test_irctl_reserves_proof_of_a_damaged_bundle_says_so(workspace: Path) -> None:
    found = extract(workspace / "bundle", "cust-00001")
    segment = workspace / "bundle" / "proofs" / "00000.bin"
    at = segment.read_bytes().index(found.data)
    flip(segment, at + len(found.data) // 2)
    done = irctl("reserves", "proof", "bundle", "cust-00001", cwd=workspace)
    assert done.returncode == 1
    assert "does not have the hash its index record holds" in done.stderr
    assert "irctl reserves verify" in done.stderr
    assert done.stdout == ""
    flip(workspace / "bundle" / "proofs.idx", 3)
    done = irctl("reserves", "proof", "bundle", "cust-00002", cwd=workspace)
    assert done.returncode == 1
    assert "proofs.idx is not an index of proofs" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bundle_missing_an_account_is_a_usage_error_from_python(workspace: Path) -> None:
    with pytest.raises(UsageError, match="no proof for account 'nobody'"):
        extract(workspace / "bundle", "nobody")


def test_a_segment_holds_exactly_what_was_written_across_its_buffer(tmp_path: Path) -> None:
    """Written in whole aligned blocks where the file system takes O_DIRECT, the last one
    padded and cut back: the file is the bytes given, whatever their sizes."""
    from irctl.reserves.bundle import _Segment

    pieces = [b"x", bytes(range(256)) * 40_000, b"", b"tail" * 1000, b"\n"]
    segment = _Segment(tmp_path / "segment.bin")
    for piece in pieces:
        segment.write(piece)
    assert segment.close() == sum(map(len, pieces))
    assert (tmp_path / "segment.bin").read_bytes() == b"".join(pieces)
    exact = _Segment(tmp_path / "exact.bin")
    exact.write(b"y" * _Segment.SIZE)
    assert exact.close() == _Segment.SIZE
    assert (tmp_path / "exact.bin").read_bytes() == b"y" * _Segment.SIZE
    with pytest.raises(FileExistsError):
        _Segment(tmp_path / "exact.bin")
