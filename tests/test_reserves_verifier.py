"""The customer's verifier: one file, the standard library only, clear failures."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from irctl.reserves import ProofError, verify
from irctl.reserves import verify_proof as v

SCRIPT = Path(v.__file__)


def test_the_verifier_imports_only_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file stands alone"
            assert node.module is not None
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"__import__", "exec", "eval"}
    assert imported
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def one_leaf_proof() -> tuple[dict[str, Any], str]:
    """A tree of a single account: its leaf is the top node."""
    balances = [150_000_000, 0]
    packed = v.pack_sums(balances)
    salt = bytes(16)
    top = v.leaf_hash(salt, "alice", packed) + packed
    root = v.root_hash(v.asset_descriptor(["BTC", "ETH"], [8, 18]), top).hex()
    proof = {"format": v.FORMAT, "root": root, "assets": ["BTC", "ETH"], "decimals": [8, 18],
             "account": "alice", "salt": salt.hex(), "balances": ["150000000", "0"], "path": []}
    return proof, root


def test_a_one_account_tree_verifies() -> None:
    proof, root = one_leaf_proof()
    verified = verify(proof, root)
    assert verified.totals == [150_000_000, 0]
    assert "BTC  yours 1.5  of total liabilities 1.5" in verified.describe()
    assert verify(proof, "0x" + root.upper()).root == root


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(format="other/1"), "not a proof of this format"),
        (lambda p: p.update(account=""), "account must be"),
        (lambda p: p.update(salt="zz"), "salt must be 32 hex digits"),
        (lambda p: p.update(balances=["1"]), "balances must be a list of 2 amounts"),
        (lambda p: p.update(balances=[1, "0"]), "balances[0] is not a whole number"),
        (lambda p: p.update(balances=["01", "0"]), "balances[0] is not a whole number"),
        (lambda p: p.update(balances=["-1", "0"]), "balances[0] is negative"),
        (lambda p: p.update(decimals=[8]), "decimals must be a list of 2"),
        (lambda p: p.update(assets=["BTC", "BTC"]), "distinct asset symbols"),
        (lambda p: p.update(path=[{"side": "up"}]), "path[0]: a step is"),
        (lambda p: p.update(path=[{"side": "left", "hash": "00", "sums": ["0", "0"]}]),
         "path[0].hash must be 64"),
        (lambda p: p.update(balances=["150000001", "0"]), "the path leads to root"),
        (lambda p: p.update(account="alicf"), "the path leads to root"),
        (lambda p: p.update(decimals=[8, 6]), "the path leads to root"),
        (lambda p: p.update(root="ab" * 32), "the proof names root"),
    ],
)  # fmt: skip
def test_each_broken_proof_fails_with_its_reason(change: Any, message: str) -> None:
    proof, root = one_leaf_proof()
    change(proof)
    with pytest.raises(ProofError) as caught:
        verify(proof, root)
    assert message in str(caught.value)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), *args],
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_the_script_exit_codes(tmp_path: Path) -> None:
    proof, root = one_leaf_proof()
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof), encoding="utf-8")
    assert run(str(path), root).returncode == 0
    assert run(str(path), "1" * 64).returncode == 1
    missing = run(str(tmp_path / "nope.json"), root)
    assert missing.returncode == 2
    assert "nope.json" in missing.stderr
    assert run(str(path), "not-a-root").returncode == 2
    assert run(str(path)).returncode == 2
    helped = run("--help")
    assert helped.returncode == 0
    assert "python verify_proof.py PROOF.json ROOT" in helped.stdout
    path.write_text("{not json", encoding="utf-8")
    broken = run(str(path), root)
    assert broken.returncode == 1
    assert "is not JSON" in broken.stdout


@pytest.mark.parametrize("command", ["build", "proof", "verify-proof", "verify"])
def test_every_reserves_command_has_help_and_is_in_the_readme(
    command: str, tmp_path: Path
) -> None:
    from tests.helpers import irctl

    done = irctl("reserves", command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"irctl reserves {command}" in readme
