"""Proof of liabilities: a real build through the CLI in both layouts, every proof checked by
the customer's script, and the attacks the tree must catch (a moved unit, a dropped account, a
negative sibling, an altered file)."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.reserves import build
from tests.helpers import irctl, make_workspace

ASSETS = {"BTC": 8, "ETH": 18, "USDT": 6}
PRECISIONS = [arg for asset, places in ASSETS.items() for arg in ("-p", f"{asset}={places}")]


def ledger(count: int, seed: int = 20) -> dict[str, list[int]]:
    """Accounts and their balances in smallest units, some zero, some large."""
    rnd = random.Random(seed)
    accounts: dict[str, list[int]] = {}
    for number in range(count):
        name = f"cust-{number:05d}" if number % 7 else f"client «{number}», \"quoted\""
        accounts[name] = [
            rnd.choice([0, rnd.randrange(10**10)]),
            rnd.randrange(10**22),
            rnd.randrange(10**12) if number % 3 else 0,
        ]
    return accounts


def as_decimal(units: int, places: int) -> str:
    whole, fraction = divmod(units, 10**places)
    return f"{whole}.{fraction:0{places}d}" if places else str(whole)


def write_csv(path: Path, accounts: dict[str, list[int]]) -> Path:
    lines = ["account," + ",".join(ASSETS)]
    for name, units in accounts.items():
        cells = [as_decimal(v, p) for v, p in zip(units, ASSETS.values(), strict=True)]
        quoted = '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"') else name
        lines.append(",".join([quoted, *cells]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_verifier(path: Path) -> ModuleType:
    """The shipped verify_proof.py, loaded from its file as a customer would run it."""
    spec = importlib.util.spec_from_file_location("customer_verify_proof", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def raw_proofs(folder: Path) -> dict[str, bytes]:
    """Every proof of a built folder, either layout, as the bytes a customer is given."""
    from irctl.reserves.bundle import iter_proofs

    if (folder / "proofs.idx").is_file():
        texts = list(iter_proofs(folder))
    else:
        texts = [path.read_bytes() for path in (folder / "proofs").glob("*/*.json")]
    return {json.loads(text)["account"]: text for text in texts}


def proofs_of(folder: Path) -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in raw_proofs(folder).items()}


Built = tuple[Path, Path, dict[str, list[int]]]


@pytest.fixture(scope="module")
def workspace_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[int]]]:
    workspace = make_workspace(tmp_path_factory.mktemp("reserves"))
    accounts = ledger(10_000)
    write_csv(workspace / "liabilities.csv", accounts)
    return workspace, accounts


@pytest.fixture(scope="module")
def built(workspace_ledger: tuple[Path, dict[str, list[int]]]) -> Built:
    """A workspace, and the folder `irctl reserves build --layout files` wrote for 10,000
    accounts."""
    workspace, accounts = workspace_ledger
    done = irctl("reserves", "build", "liabilities.csv", "-o", "por-files", *PRECISIONS,
                 "--layout", "files", "--json", cwd=workspace)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accounts"], summary["layout"]) == (10_000, "files")
    return workspace, workspace / "por-files", accounts


@pytest.fixture(scope="module")
def bundled(workspace_ledger: tuple[Path, dict[str, list[int]]]) -> Built:
    """The same 10,000 accounts built in the default layout, a bundle."""
    workspace, accounts = workspace_ledger
    done = irctl("reserves", "build", "liabilities.csv", "-o", "por-bundle", *PRECISIONS,
                 cwd=workspace)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "irctl reserves proof por-bundle ACCOUNT" in done.stderr
    return workspace, workspace / "por-bundle", accounts


@pytest.mark.parametrize("layout", ["bundle", "files"])
def test_every_account_proof_verifies_with_the_standalone_verifier(
    layout: str, request: pytest.FixtureRequest
) -> None:
    _, folder, accounts = request.getfixturevalue("bundled" if layout == "bundle" else "built")
    root_doc = json.loads((folder / "root.json").read_text(encoding="utf-8"))
    verifier = load_verifier(folder / "verify_proof.py")
    proofs = proofs_of(folder)
    assert set(proofs) == set(accounts)
    totals = [sum(units[i] for units in accounts.values()) for i in range(len(ASSETS))]
    for name, proof in proofs.items():
        verified = verifier.verify(proof, root_doc["root"])
        assert verified.balances == accounts[name]
        assert verified.totals == totals
        verifier.check_totals(verified, root_doc)
    assert [a["total"] for a in root_doc["assets"]] == [str(t) for t in totals]
    assert root_doc["accounts"] == 10_000
    assert root_doc["height"] == 14


def test_proof_files_are_named_by_a_hash_not_by_the_account(
    built: Built,
) -> None:
    import hashlib

    _, folder, accounts = built
    name = "cust-00001"
    digest = hashlib.sha256(name.encode()).hexdigest()
    path = folder / "proofs" / digest[:2] / f"{digest}.json"
    assert json.loads(path.read_text(encoding="utf-8"))["account"] == name
    listing = (folder / "proofs.sha256").read_text(encoding="ascii")
    assert "cust-" not in listing
    assert len(listing.splitlines()) == len(accounts)


def test_the_customer_script_runs_with_only_the_standard_library(
    built: Built,
) -> None:
    _, folder, _ = built
    root = json.loads((folder / "root.json").read_text(encoding="utf-8"))["root"]
    proof = next((folder / "proofs").glob("*/*.json"))
    for argument in (root, str(folder / "root.json")):
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(folder / "verify_proof.py"), str(proof), argument],
            capture_output=True, text=True, check=False, cwd=folder.parent,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("OK: account ")
        assert "of total liabilities" in done.stdout
    other = "0" * 64
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(folder / "verify_proof.py"), str(proof), other],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.startswith("FAILED: the path leads to root ")


def test_irctl_reserves_verify_proof(built: Built) -> None:
    workspace, folder, accounts = built
    proof = next((folder / "proofs").glob("*/*.json"))
    account = json.loads(proof.read_text(encoding="utf-8"))["account"]
    done = irctl("reserves", "verify-proof", str(proof), "--root", "por-files/root.json", "--json",
                 cwd=workspace)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["account"] == account
    assert [int(a["balance"]) for a in shown["assets"]] == accounts[account]
    wrong = irctl("reserves", "verify-proof", str(proof), "--root", "ab" * 32, cwd=workspace)
    assert wrong.returncode == 1
    assert "the path leads to root" in wrong.stderr


def test_the_signed_manifest_verifies_and_any_altered_file_fails(
    built: Built, tmp_path: Path
) -> None:
    import shutil

    workspace, big, _ = built
    done = irctl("reserves", "verify", str(big), "--json", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layout"] == "files"
    done = irctl("reserves", "verify", str(big), cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert "OK: 10000 proofs" in done.stdout
    source = write_csv(tmp_path / "small.csv", ledger(200))
    folder = tmp_path / "small"
    made = irctl("reserves", "build", str(source), "-o", str(folder), *PRECISIONS, "--layout",
                 "files", cwd=workspace)  # fmt: skip
    assert made.returncode == 0, made.stderr

    def altered(change: Any) -> subprocess.CompletedProcess[str]:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, copy)
        change(copy)
        return irctl("reserves", "verify", str(copy), cwd=workspace)

    proof = next((folder / "proofs").glob("*/*.json")).relative_to(folder)

    def edit_proof(copy: Path) -> None:
        text = (copy / proof).read_text(encoding="utf-8")
        (copy / proof).write_text(text.replace('"balances":["', '"balances":["1'), "utf-8")

    def edit_root(copy: Path) -> None:
        doc = json.loads((copy / "root.json").read_text(encoding="utf-8"))
        doc["assets"][0]["total"] = "1"
        (copy / "root.json").write_text(json.dumps(doc), encoding="utf-8")

    def add_proof(copy: Path) -> None:
        (copy / "proofs" / "00" / ("0" * 64 + ".json")).write_text("{}", encoding="utf-8")

    def drop_proof(copy: Path) -> None:
        (copy / proof).unlink()

    def edit_manifest(copy: Path) -> None:
        doc = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
        doc["signed"]["accounts"] = 9_999
        (copy / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")

    for change, message in [
        (edit_proof, f"{proof} was changed after the manifest was signed"),
        (edit_root, "root.json was changed after the manifest was signed"),
        (add_proof, "is not listed in proofs.sha256"),
        (drop_proof, f"{proof} is missing"),
        (edit_manifest, "the manifest's signature does not verify"),
    ]:
        result = altered(change)
        assert result.returncode == 1, (change.__name__, result.stdout, result.stderr)
        assert message in result.stderr, (change.__name__, result.stderr)
    stranger = Ed25519PrivateKey.generate()
    from irctl.identity import public_key_text

    done = irctl("reserves", "verify", str(folder), "--key", public_key_text(stranger),
                 cwd=workspace)  # fmt: skip
    assert done.returncode == 1
    assert "not by the key you trust" in done.stderr


# --- attacks on the tree itself, built twice with the same salts ---------------------------


def build_with(tmp: Path, name: str, accounts: dict[str, list[int]], **options: Any) -> Path:
    source = write_csv(tmp / f"{name}.csv", accounts)
    build(source, tmp / name, precisions=ASSETS, signing_key=Ed25519PrivateKey.generate(),
          salt_key=b"the same salts for both trees", **options)  # fmt: skip
    return tmp / name


def root_of(folder: Path) -> str:
    root: str = json.loads((folder / "root.json").read_text(encoding="utf-8"))["root"]
    return root


@pytest.mark.parametrize("layout", ["bundle", "files"])
def test_moving_one_unit_between_two_accounts_fails_verification(
    tmp_path: Path, layout: str
) -> None:
    from irctl.reserves import ProofError, verify

    honest = ledger(1000, seed=3)
    honest["cust-00001"][0] = 500
    moved = {name: list(units) for name, units in honest.items()}
    moved["cust-00001"][0] -= 1
    moved["cust-00002"][0] += 1
    good = build_with(tmp_path, "good", honest, layout=layout)
    bad = build_with(tmp_path, "bad", moved, layout=layout)
    good_doc = json.loads((good / "root.json").read_text(encoding="utf-8"))
    bad_doc = json.loads((bad / "root.json").read_text(encoding="utf-8"))
    assert good_doc["assets"] == bad_doc["assets"]  # the totals cannot tell
    honest_proofs, bad_proofs = proofs_of(good), proofs_of(bad)
    for name in ("cust-00001", "cust-00002"):
        # the proof of the true balance does not lead to the published (tampered) root
        with pytest.raises(ProofError, match="the path leads to root"):
            verify(honest_proofs[name], root_of(bad))
    # and the proof the tampered tree gives shows the customer a balance that is not theirs
    assert verify(bad_proofs["cust-00001"], root_of(bad)).balances[0] == 499
    # moving the unit inside a proof (balance down, a sibling up) breaks the hashes
    forged = json.loads(json.dumps(honest_proofs["cust-00001"]))
    forged["balances"][0] = str(int(forged["balances"][0]) - 1)
    forged["path"][0]["sums"][0] = str(int(forged["path"][0]["sums"][0]) + 1)
    with pytest.raises(ProofError, match="the path leads to root"):
        verify(forged, root_of(good))
    assert verify(honest_proofs["cust-00003"], root_of(good)).account == "cust-00003"


@pytest.mark.parametrize("layout", ["bundle", "files"])
def test_dropping_an_account_fails_verification(tmp_path: Path, layout: str) -> None:
    from irctl.reserves import ProofError, verify

    honest = ledger(1000, seed=4)
    dropped = {name: units for name, units in honest.items() if name != "cust-00010"}
    good = build_with(tmp_path, "good", honest, layout=layout)
    bad = build_with(tmp_path, "bad", dropped, layout=layout)
    proofs = proofs_of(good)
    assert "cust-00010" not in proofs_of(bad)
    with pytest.raises(ProofError, match="the path leads to root"):
        verify(proofs["cust-00010"], root_of(bad))
    # the tree without the account is a different tree: proofs from the full one all fail
    failures = 0
    for proof in proofs.values():
        try:
            verify(proof, root_of(bad))
        except ProofError:
            failures += 1
    assert failures == len(proofs)


def _wrapped_tree(victim: list[int], fake: list[int]) -> tuple[dict[str, Any], str]:
    """What a custodian who hides liabilities behind a fake negative account would publish:
    the victim's leaf beside a node of negative sums, hashed as the builder hashes (the sums
    two's-complement, as a careless encoder would write them); the victim's proof and root."""
    from irctl.reserves import verify_proof as v

    def wrapped(values: list[int]) -> bytes:
        return b"".join((value % v.LIMIT).to_bytes(16, "big") for value in values)

    salt = bytes(range(16))
    mine = v.leaf_hash(salt, "victim", v.pack_sums(victim)) + v.pack_sums(victim)
    other_hash = bytes(32)
    other = other_hash + wrapped(fake)
    totals = [a + b for a, b in zip(victim, fake, strict=True)]
    top = v.node_hash(mine, other) + wrapped(totals)
    root = v.root_hash(v.asset_descriptor(["BTC", "ETH"], [8, 18]), top).hex()
    proof = {
        "format": v.FORMAT, "root": root, "assets": ["BTC", "ETH"], "decimals": [8, 18],
        "account": "victim", "salt": salt.hex(), "balances": [str(b) for b in victim],
        "path": [{"side": "right", "hash": other_hash.hex(), "sums": [str(s) for s in fake]}],
    }  # fmt: skip
    return proof, root


def test_a_negative_sibling_fails_verification(tmp_path: Path) -> None:
    from irctl.reserves import ProofError, verify

    proof, root = _wrapped_tree([100, 5], [-100, 0])  # the fake account cancels the victim's
    with pytest.raises(ProofError, match=r"path\[0\].sums \(the sibling's sums\)\[0\] is "
                       "negative"):  # fmt: skip
        verify(proof, root)
    # written as the wrapped-around unsigned value instead, the sum overflows: refused too
    proof["path"][0]["sums"][0] = str((1 << 128) - 100)
    with pytest.raises(ProofError, match="reaches 2\\*\\*128"):
        verify(proof, root)
    # and the standalone script refuses it with exit 1 and the reason
    proof["path"][0]["sums"][0] = "-100"
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof), encoding="utf-8")
    script = Path(__file__).parents[1] / "irctl" / "reserves" / "verify_proof.py"
    done = subprocess.run([sys.executable, "-I", "-S", str(script), str(path), root],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "is negative (-100)" in done.stdout


def test_chunked_and_parallel_builds_give_the_same_tree(tmp_path: Path) -> None:
    """The workers, the chunk boundaries and the layout change nothing: same salts, same root,
    the same bytes in every proof."""
    for count in (1, 2, 3, 5, 1000):
        accounts = ledger(count, seed=count)
        one = build_with(tmp_path, f"one{count}", accounts, workers=1, layout="files")
        many = build_with(tmp_path, f"many{count}", accounts, workers=2, chunk_bits=2)
        assert root_of(one) == root_of(many), count
        assert raw_proofs(one) == raw_proofs(many), count
        for proof in proofs_of(many).values():
            from irctl.reserves import verify

            assert verify(proof, root_of(many)).balances == accounts[proof["account"]]


def test_leaves_are_not_in_the_order_of_the_file(tmp_path: Path) -> None:
    """A proof's first sibling is another account's leaf: it must not be its neighbour in the
    file (whose id a customer could guess)."""
    accounts = {f"cust-{n:05d}": [n, 0, 0] for n in range(64)}
    folder = build_with(tmp_path, "order", accounts)
    neighbours = 0
    for name, proof in proofs_of(folder).items():
        sibling_balance = int(proof["path"][0]["sums"][0])
        if abs(sibling_balance - accounts[name][0]) == 1:
            neighbours += 1
    assert neighbours < 32


def test_an_existing_folder_is_refused(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws")
    source = write_csv(workspace / "l.csv", ledger(3))
    (workspace / "por").mkdir()
    (workspace / "por" / "old.json").write_text("{}", encoding="utf-8")
    done = irctl("reserves", "build", str(source), "-o", "por", *PRECISIONS, cwd=workspace)
    assert done.returncode == 2
    assert "already exists and is not an empty folder" in done.stderr
    assert not [p for p in workspace.iterdir() if p.name.startswith(".por.partial")]


def test_build_without_an_installation_key_says_how_to_get_one(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "l.csv", ledger(3))
    done = irctl("reserves", "build", str(source), "-o", "por", *PRECISIONS, cwd=tmp_path)
    assert done.returncode == 2
    assert "irctl init" in done.stderr
    assert not (tmp_path / "por").exists()


def test_build_signs_with_the_workspace_key_or_the_key_given(tmp_path: Path) -> None:
    from irctl.identity import generate_private_key, public_key_text

    workspace = make_workspace(tmp_path / "ws")
    source = write_csv(workspace / "l.csv", ledger(3))
    named = (workspace / "irctl.yaml").read_text(encoding="utf-8")
    done = irctl("reserves", "build", str(source), "-o", "own", *PRECISIONS, cwd=workspace)
    assert done.returncode == 0, done.stderr
    signer = json.loads((workspace / "own" / "manifest.json").read_text(encoding="utf-8"))
    assert f'installation_key: "{signer["signed"]["key"]}"' in named
    other = generate_private_key(tmp_path / "other.key")
    done = irctl("reserves", "build", str(source), "-o", "given", *PRECISIONS, "--key",
                 str(tmp_path / "other.key"), cwd=workspace)  # fmt: skip
    assert done.returncode == 0, done.stderr
    signer = json.loads((workspace / "given" / "manifest.json").read_text(encoding="utf-8"))
    assert signer["signed"]["key"] == public_key_text(other)
    # a key file that is not the one irctl.yaml names signs nothing
    (workspace / ".irctl" / "installation.key").write_bytes(
        (tmp_path / "other.key").read_bytes()
    )
    done = irctl("reserves", "build", str(source), "-o", "wrong", *PRECISIONS, cwd=workspace)
    assert done.returncode == 2
    assert "is not the one" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (workspace / "wrong").exists()
