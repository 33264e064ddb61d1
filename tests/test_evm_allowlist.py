"""``irctl allowlist add | sign | verify``: the real command, real keys, a real file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irctl.identity import generate_private_key, public_key_text
from tests.helpers import irctl, make_workspace

COLD = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own test vector
ROLES = {"bob": "treasury", "carol": "treasury", "mallory": "security-lead"}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    lines = ["operators:"]
    for name, role in ROLES.items():
        public = public_key_text(generate_private_key(keys / f"{name}.key"))
        lines.append(f'  {name}: {{roles: [{role}], key: "{public}"}}')
    lines += [
        "integrations:",
        "  evm:",
        "    rpc: {local: http://127.0.0.1:9}",
        "    allowlist: {path: treasury/allowlist.yaml, quorum: 2, roles: [treasury]}",
    ]
    return make_workspace(tmp_path / "ws", extra="\n".join(lines) + "\n")


def run(ws: Path, *args: str) -> tuple[int, str, str]:
    result = irctl("allowlist", *args, cwd=ws, env={"IRCTL_KEY_DIR": str(ws.parent / "keys")})
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout, result.stderr


def test_an_address_counts_once_a_quorum_of_treasury_signed_it(ws: Path) -> None:
    code, stdout, _ = run(ws, "add", COLD.lower(), "--chain", "local", "--label", "cold-1",
                          "--as", "bob", "--json")  # fmt: skip
    assert code == 0
    added = json.loads(stdout)
    assert added["address"] == COLD  # stored checksummed
    assert (added["ok"], added["signed_by"]) == (False, ["bob"])
    assert (ws / "treasury" / "allowlist.yaml").is_file()

    code, stdout, _ = run(ws, "verify")
    assert code == 1
    assert "INVALID" in stdout
    assert "1 of 2 required signatures" in stdout

    code, _, stderr = run(ws, "sign", COLD, "--chain", "local", "--as", "mallory")
    assert code == 0  # mallory may sign, but her role does not count
    assert "1 of 2 signatures, not yet valid" in stderr
    code, stdout, _ = run(ws, "sign", COLD, "--chain", "local", "--as", "carol", "--json")
    assert code == 0
    assert json.loads(stdout)["signed_by"] == ["bob", "carol"]

    code, stdout, _ = run(ws, "verify", "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["ok"] is True
    (entry,) = report["entries"]
    assert entry["signed_by"] == ["bob", "carol"]
    assert entry["problems"] == ["mallory: has none of the roles treasury"]


def test_an_edited_entry_loses_its_signatures(ws: Path) -> None:
    assert run(ws, "add", COLD, "--chain", "local", "--label", "cold-1", "--as", "bob")[0] == 0
    assert run(ws, "sign", COLD, "--chain", "local", "--as", "carol")[0] == 0
    path = ws / "treasury" / "allowlist.yaml"
    attacker = "0x" + "66" * 20
    path.write_text(path.read_text(encoding="utf-8").replace(COLD, attacker), encoding="utf-8")
    code, stdout, _ = run(ws, "verify", "--json")
    assert code == 1
    (entry,) = json.loads(stdout)["entries"]
    assert entry["address"] == attacker
    assert entry["signed_by"] == []
    assert any("signature does not match" in p for p in entry["problems"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "--chain", "local"],
         "has a wrong checksum"),
        (["add", "0x1234", "--chain", "local"], "not an address"),
        (["add", COLD, "--chain", "Main Net"], "not a chain name"),
        (["add", COLD, "--chain", "local", "--as", "eve"], "'eve' is not an operator"),
        (["sign", COLD, "--chain", "local", "--as", "bob"], "no allowlist at"),
    ],
    ids=["checksum", "short", "chain", "unknown-operator", "no-file"],
)  # fmt: skip
def test_mistakes_are_refused_with_exit_2(ws: Path, args: list[str], message: str) -> None:
    code, _, stderr = run(ws, *args)
    assert code == 2
    assert message in stderr


def test_signing_with_someone_elses_key_or_twice_adding_is_refused(ws: Path) -> None:
    assert run(ws, "add", COLD, "--chain", "local")[0] == 0
    code, _, stderr = run(ws, "add", COLD, "--chain", "local")
    assert code == 2
    assert "already on the allowlist" in stderr
    mallory_key = str(ws.parent / "keys" / "mallory.key")
    code, _, stderr = run(ws, "sign", COLD, "--chain", "local", "--as", "bob", "--key", mallory_key)
    assert code == 2
    assert "is not bob's" in stderr
    code, _, stderr = run(ws, "sign", "0x" + "77" * 20, "--chain", "local", "--as", "bob")
    assert code == 2
    assert "is not on the allowlist" in stderr


def test_a_broken_file_or_policy_is_a_clear_error(ws: Path) -> None:
    path = ws / "treasury" / "allowlist.yaml"
    path.parent.mkdir()
    path.write_text("irctl: 1\nkind: allowlist\nentries: [{chain: local}]\n", encoding="utf-8")
    code, _, stderr = run(ws, "verify")
    assert code == 2
    assert "entry 1: not an address" in stderr
    config = ws / "irctl.yaml"
    config.write_text(config.read_text().replace("quorum: 2", "quorum: 1"), encoding="utf-8")
    code, _, stderr = run(ws, "verify")
    assert code == 2
    assert "quorum must be a whole number >= 2" in stderr


def test_two_operators_sharing_one_key_count_once_toward_the_quorum(tmp_path: Path) -> None:
    from irctl_evm import allowlist
    from irctl_evm.allowlist import Policy

    shared = generate_private_key(tmp_path / "shared.key")
    own = generate_private_key(tmp_path / "own.key")
    operators = {
        "bob": {"roles": ["treasury"], "key": public_key_text(shared)},
        "bob-laptop": {"roles": ["treasury"], "key": public_key_text(shared)},  # same key
        "carol": {"roles": ["treasury"], "key": public_key_text(own)},
    }
    policy = Policy.from_config({"quorum": 2, "roles": ["treasury"]})
    entry = allowlist.add([], chain="local", address=COLD, label="cold-1", by="bob",
                          at="2026-01-01T00:00:00Z")  # fmt: skip
    allowlist.sign(entry, "bob", shared)
    allowlist.sign(entry, "bob-laptop", shared)  # one private key, two names
    verdict = allowlist.verify_entry(entry, operators, policy)
    assert not verdict.ok
    assert verdict.valid_signers == ("bob",)
    assert any("same public key as bob" in p for p in verdict.problems)
    assert "1 of 2 required signatures" in verdict.problems
    allowlist.sign(entry, "carol", own)
    verdict = allowlist.verify_entry(entry, operators, policy)
    assert verdict.ok
    assert verdict.valid_signers == ("bob", "carol")
