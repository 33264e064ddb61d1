"""``irctl transcript verify --trust``: a trust root the reviewer chooses, not the run's own word.

A real run (the real ``irctl`` commands, real Ed25519 keys): alice starts it, the sweep
needs 2 of the 3 treasury operators (bob, carol, dana), bob and carol approve.  Then an
attacker who holds the installation key and can write the store replaces bob's key as
``run.created`` recorded it with a key of their own, re-signs bob's approval with it,
re-chains every event and re-signs every checkpoint with the installation key.  The chain,
the seals and the approval checks all hold; only a trust root chosen by the reviewer (the
workspace's ``irctl.yaml``, or a keyring from ``irctl keys export``) tells bob's real key
from the attacker's.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.identity import generate_private_key, load_private_key, public_key_text, sign
from irctl.journal import events as ev
from irctl.journal.events import GENESIS, Event
from irctl.record import transcript
from irctl.record.approvals import statement
from tests.helpers import irctl, make_workspace, run_id_from

RUNBOOK = """\
irctl: 1
kind: runbook
id: cold-sweep
title: Sweep the hot wallet to cold storage
severity: sev1
approvals:
  treasury-2-of-3:
    quorum: 2
    roles: [treasury]
    expires: 30m
steps:
  - id: halt-withdrawals
    action: notify.console
    with: {message: "halting withdrawals"}
  - id: sweep-to-cold
    action: notify.console
    approval: treasury-2-of-3
    with: {message: "sweep 412.5 ETH to cold storage"}
"""
TEAM = {"alice": "security-oncall", "bob": "treasury", "carol": "treasury", "dana": "treasury"}


@dataclass
class Trial:
    ws: Path
    run_id: str
    env: dict[str, str]
    keys: dict[str, str]  # operator -> public key (as irctl.yaml lists them)
    original: list[str]  # the run's lines as written
    forged: list[str]  # bob's key swapped, re-signed, re-chained and re-sealed
    attacker: str  # the attacker's public key


def _build(root: Path) -> tuple[Path, str, dict[str, str], dict[str, str]]:
    keys_dir = root / "keys"
    operators = ["operators:"]
    keys: dict[str, str] = {}
    for name, role in TEAM.items():
        keys[name] = public_key_text(generate_private_key(keys_dir / f"{name}.key"))
        operators.append(f'  {name}: {{roles: [{role}], key: "{keys[name]}"}}')
    ws = make_workspace(root / "ws", {"cold-sweep": RUNBOOK}, extra="\n".join(operators) + "\n")
    env = {"IRCTL_KEY_DIR": str(keys_dir)}

    def ok(*args: str, code: int = 0) -> None:
        done = irctl(*args, cwd=ws, env=env)
        assert done.returncode == code, (args, done.stdout, done.stderr)

    started = irctl("run", "cold-sweep", "--yes", "--as", "alice", cwd=ws, env=env)
    assert started.returncode == 3, started.stdout + started.stderr
    run_id = run_id_from(started)
    ok("approve", run_id, "sweep-to-cold", "--as", "bob", "--yes", "--reason", "matches ticket")
    ok("approve", run_id, "sweep-to-cold", "--as", "carol", "--yes")
    ok("resume", run_id, "--as", "alice")
    return ws, run_id, env, keys


def _lines(ws: Path, run_id: str) -> list[str]:
    with sqlite3.connect(ws / ".irctl" / "irctl.db") as db:
        rows = db.execute(
            "SELECT line FROM irctl_events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    return [row[0] for row in rows]


def swap_key(
    lines: list[str], operator: str, attacker: Ed25519PrivateKey, install: Ed25519PrivateKey
) -> list[str]:
    """What the holder of the installation key can do: swap ``operator``'s recorded key,
    re-sign that operator's decisions with the new key, re-chain and re-seal everything."""
    items = [json.loads(line) for line in lines]
    forged_key = public_key_text(attacker)
    assert items[0]["type"] == ev.RUN_CREATED
    items[0]["data"]["operators"][operator]["key"] = forged_key
    signed = 0
    for item in items:
        data = item["data"]
        if item["type"] in (transcript.GRANTED, transcript.DENIED) and (
            data.get("operator") == operator
        ):
            data["key"] = forged_key
            data["sig"] = sign(attacker, statement(data))
            signed += 1
    assert signed == 1
    out: list[str] = []
    prev, last = GENESIS, None
    for seq, item in enumerate(items, 1):
        data = item["data"]
        if item["type"] == ev.CHECKPOINT:
            assert last is not None
            data = transcript.checkpoint_data(item["run"], last, install)
        event = Event.make(item["run"], seq, item["type"], data, prev, item["ts"])
        out.append(event.line)
        prev = event.hash
        if item["type"] != ev.CHECKPOINT:
            last = event
    return out


def _write_store(ws: Path, run_id: str, lines: list[str]) -> None:
    """Replace the run's stored events (as anyone who can write the database can)."""
    with sqlite3.connect(ws / ".irctl" / "irctl.db") as db:
        for line in lines:
            event = Event.from_line(line)
            db.execute(
                "UPDATE irctl_events SET line = ?, hash = ? WHERE run_id = ? AND seq = ?",
                (line, event.hash, run_id, event.seq),
            )


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Trial:
    root = tmp_path_factory.mktemp("trust")
    ws, run_id, env, keys = _build(root)
    original = _lines(ws, run_id)
    install = load_private_key(ws / ".irctl" / "installation.key")
    attacker = Ed25519PrivateKey.generate()
    forged = swap_key(original, "bob", attacker, install)
    return Trial(ws, run_id, env, keys, original, forged, public_key_text(attacker))


@pytest.fixture
def forged_ws(trial: Trial, tmp_path: Path) -> Path:
    """A copy of the workspace whose store holds the forged run."""
    ws = tmp_path / "ws"
    shutil.copytree(trial.ws, ws)
    _write_store(ws, trial.run_id, trial.forged)
    return ws


def _verify(ws: Path, env: dict[str, str], *args: str) -> Any:
    return irctl("transcript", "verify", *args, cwd=ws, env=env)


def _names_bob(output: str, trial: Trial) -> None:
    assert "bob" in output, output
    assert trial.attacker in output, output
    assert trial.keys["bob"] in output, output


# -- the forgery passes every check the transcript can make on its own -----------------------


def test_the_forgery_holds_without_a_trust_root(trial: Trial) -> None:
    report = transcript.verify_lines(trial.forged, public_keys=None)
    assert report.ok, report.problems
    assert report.approvals == 2
    assert report.operator_keys["bob"] == trial.attacker
    assert report.key_findings == []
    assert report.own_word == ["alice", "bob", "carol", "dana"]


def test_without_trust_verify_passes_but_says_bob_was_trusted_on_the_transcripts_word(
    trial: Trial, forged_ws: Path
) -> None:
    done = _verify(forged_ws, trial.env, trial.run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "trusted on the transcript's own word: operator keys of alice, bob, carol, dana" in (
        text
    ), text
    assert "pass --trust irctl.yaml to check them" in text
    # the installation key came from the workspace: it is not on the transcript's word
    assert "installation key" not in text.split("trusted on the transcript's own word")[1]
    as_json = json.loads(_verify(forged_ws, trial.env, trial.run_id, "--json").stdout)
    assert as_json["own_word"] == ["alice", "bob", "carol", "dana"]
    assert as_json["key_findings"] == []
    assert as_json["trust"] is None


# -- a run in the store -------------------------------------------------------------------


def test_an_untouched_run_verifies_against_irctl_yaml(trial: Trial) -> None:
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", "irctl.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "own word" not in text
    assert "keys checked against irctl.yaml" in text, text
    report = json.loads(
        _verify(trial.ws, trial.env, trial.run_id, "--trust", "irctl.yaml", "--json").stdout
    )
    assert report["ok"] is True
    assert report["key_findings"] == []
    assert report["own_word"] == []


def test_the_forged_run_fails_against_irctl_yaml_naming_bobs_key(
    trial: Trial, forged_ws: Path
) -> None:
    done = _verify(forged_ws, trial.env, trial.run_id, "--trust", "irctl.yaml")
    assert done.returncode == 1, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    _names_bob(text, trial)
    assert "approval by bob does not count" in text, text
    for other in ("alice", "carol", "dana"):
        assert f"KEY MISMATCH: {other}" not in text
    found = json.loads(
        _verify(forged_ws, trial.env, trial.run_id, "--trust", "irctl.yaml", "--json").stdout
    )
    assert found["ok"] is False
    findings = [(f["kind"], f["operator"], f["recorded"], f["trusted"])
                for f in found["key_findings"]]  # fmt: skip
    assert findings == [("operator", "bob", trial.attacker, trial.keys["bob"])]
    assert found["approvals"] == 1  # carol's still counts; bob's does not
    assert [c["verified"] for c in found["decisions"] if c["operator"] == "bob"] == [False]


def test_the_forged_run_fails_against_an_exported_keyring(
    trial: Trial, forged_ws: Path, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    exported = irctl("keys", "export", "-o", str(keyring), cwd=trial.ws, env=trial.env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    data = json.loads(keyring.read_text())
    assert data["kind"] == "irctl-keyring/v1"
    assert data["operators"]["bob"] == {"key": trial.keys["bob"], "roles": ["treasury"]}
    assert data["installation_key"].startswith("ed25519:")
    # canonical: the same workspace exports the same bytes, and stdout holds them too
    again = irctl("keys", "export", cwd=trial.ws, env=trial.env)
    assert again.stdout == keyring.read_text()
    done = _verify(forged_ws, trial.env, trial.run_id, "--trust", str(keyring))
    assert done.returncode == 1, done.stdout + done.stderr
    _names_bob(" ".join(done.stdout.split()), trial)
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", str(keyring))
    assert done.returncode == 0, done.stdout + done.stderr


# -- an exported transcript and an evidence pack -------------------------------------------


def test_the_forged_jsonl_export(trial: Trial, forged_ws: Path, tmp_path: Path) -> None:
    path = tmp_path / "forged.jsonl"
    exported = irctl("transcript", "export", trial.run_id, "-o", str(path), cwd=forged_ws,
                     env=trial.env)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    reviewer = tmp_path / "reviewer"
    reviewer.mkdir()
    shutil.copy(trial.ws / "irctl.yaml", reviewer / "trusted.yaml")
    plain = _verify(reviewer, {}, str(path))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    text = " ".join(plain.stdout.split())
    assert "trusted on the transcript's own word: operator keys of alice, bob, carol, dana" in text
    assert "and the installation key" in text, text  # no --key, no workspace
    done = _verify(reviewer, {}, str(path), "--trust", "trusted.yaml")
    assert done.returncode == 1, done.stdout + done.stderr
    _names_bob(" ".join(done.stdout.split()), trial)
    original = tmp_path / "original.jsonl"
    original.write_text("".join(line + "\n" for line in trial.original), encoding="utf-8")
    assert _verify(reviewer, {}, str(original), "--trust", "trusted.yaml").returncode == 0


def test_the_forged_evidence_pack(trial: Trial, forged_ws: Path, tmp_path: Path) -> None:
    pack = tmp_path / "forged.zip"
    made = irctl("transcript", "pack", trial.run_id, "-o", str(pack), "--no-pdf", cwd=forged_ws,
                 env=trial.env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    reviewer = tmp_path / "reviewer"
    reviewer.mkdir()
    shutil.copy(trial.ws / "irctl.yaml", reviewer / "irctl.yaml.trusted")
    install = json.loads(
        irctl("keys", "export", cwd=trial.ws, env=trial.env).stdout
    )["installation_key"]
    plain = _verify(reviewer, {}, str(pack), "--key", install)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "trusted on the transcript's own word" in " ".join(plain.stdout.split())
    done = _verify(reviewer, {}, str(pack), "--trust", "irctl.yaml.trusted")
    assert done.returncode == 1, done.stdout + done.stderr
    _names_bob(" ".join(done.stdout.split()), trial)
    found = json.loads(
        _verify(reviewer, {}, str(pack), "--trust", "irctl.yaml.trusted", "--json").stdout
    )
    assert [f["operator"] for f in found["key_findings"]] == ["bob"]
    honest = tmp_path / "honest.zip"
    assert irctl("transcript", "pack", trial.run_id, "-o", str(honest), "--no-pdf", cwd=trial.ws,
                 env=trial.env).returncode == 0  # fmt: skip
    done = _verify(reviewer, {}, str(honest), "--trust", "irctl.yaml.trusted")
    assert done.returncode == 0, done.stdout + done.stderr


# -- the installation key and operators the trust file does not know ---------------------


def test_an_installation_key_the_trust_file_does_not_name(trial: Trial, tmp_path: Path) -> None:
    other = public_key_text(Ed25519PrivateKey.generate())
    keyring = json.loads(irctl("keys", "export", cwd=trial.ws, env=trial.env).stdout)
    keyring["installation_key"] = other
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(keyring), encoding="utf-8")
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", str(path), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    found = json.loads(done.stdout)
    assert [(f["kind"], f["trusted"]) for f in found["key_findings"]] == [("installation", other)]
    assert found["key_findings"][0]["recorded"] == keyring_install(trial)


def keyring_install(trial: Trial) -> str:
    return str(json.loads(irctl("keys", "export", cwd=trial.ws, env=trial.env).stdout)[
        "installation_key"])  # fmt: skip


def test_an_operator_the_trust_file_does_not_name(trial: Trial, tmp_path: Path) -> None:
    keyring = json.loads(irctl("keys", "export", cwd=trial.ws, env=trial.env).stdout)
    del keyring["operators"]["dana"]  # dana made no decision in this run
    del keyring["operators"]["carol"]  # carol's approval counted
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(keyring), encoding="utf-8")
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", str(path), "--json")
    assert done.returncode == 1, done.stdout
    found = json.loads(done.stdout)
    assert [(f["kind"], f["operator"], f["trusted"]) for f in found["key_findings"]] == [
        ("absent", "carol", None), ("absent", "dana", None),
    ]  # fmt: skip
    text = " ".join(_verify(trial.ws, trial.env, trial.run_id, "--trust", str(path)).stdout.split())
    assert "carol is an operator recorded at run start" in text, text
    assert "dana is an operator recorded at run start" in text, text
    assert "approval by carol" in text, text


# -- a trust file that cannot be used -----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "does not exist"),
        ("operators: [unclosed\n", "not YAML or JSON"),
        ("{}\n", "holds no keys"),
        ("vars: {a: 1}\noperators: {alice: {roles: [x]}}\n", "holds no keys"),
        ('installation_key: "ed25519:nope"\n', "not a valid"),
    ],
)
def test_a_trust_file_that_cannot_be_used_is_exit_2(
    trial: Trial, tmp_path: Path, content: str | None, words: str
) -> None:
    path = tmp_path / "trust.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert str(path) in message, message
    assert words in message, message


def test_roles_the_trust_file_does_not_give(trial: Trial, tmp_path: Path) -> None:
    keyring = json.loads(irctl("keys", "export", cwd=trial.ws, env=trial.env).stdout)
    keyring["operators"]["carol"]["roles"] = ["cfo"]  # the run recorded carol as treasury
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(keyring), encoding="utf-8")
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", str(path), "--json")
    assert done.returncode == 1, done.stdout
    found = json.loads(done.stdout)
    assert [(f["kind"], f["operator"], f["recorded"], f["trusted"], f["decisions"])
            for f in found["key_findings"]] == [("roles", "carol", ["treasury"], ["cfo"], 1)]
    text = " ".join(_verify(trial.ws, trial.env, trial.run_id, "--trust", str(path)).stdout.split())
    assert "ROLES MISMATCH: carol: the run recorded the roles [treasury]" in text, text
    assert "approval by carol does not count" in text, text


def test_the_library_reports_the_swap_with_a_trust_root(trial: Trial) -> None:
    from irctl.record.keyring import load_trust

    root = load_trust(trial.ws / "irctl.yaml")
    assert root.operators["bob"] == trial.keys["bob"]
    report = transcript.verify_lines(trial.forged, public_keys=None, trust=root)
    assert not report.ok
    assert report.trusted  # the trust root's installation key sealed it
    assert report.first_bad == 1
    assert [(f.kind, f.operator) for f in report.key_findings] == [("operator", "bob")]
    assert report.approvals == 1
    assert transcript.verify_lines(trial.original, public_keys=None, trust=root).ok


def test_the_commands_are_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "irctl keys export" in readme
    assert "--trust" in readme
    assert "### Trust model" in readme
    for command in (["keys", "export"], ["transcript", "verify"]):
        done = irctl(*command, "--help", cwd=Path(__file__).parent)
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout
    assert "--trust" in irctl("transcript", "verify", "--help", cwd=Path(__file__).parent).stdout


def test_a_loaded_config_gives_the_same_trust_root(trial: Trial) -> None:
    from irctl.record.keyring import Trust, load_trust
    from irctl.runbook.loader import load_config

    path = trial.ws / "irctl.yaml"
    assert Trust.of_config(load_config(path), str(path)) == load_trust(path)


def test_keys_export_needs_a_workspace_and_a_keyring_of_its_kind(
    trial: Trial, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = irctl("keys", "export", cwd=empty)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no irctl.yaml" in done.stderr
    other = tmp_path / "other.json"
    other.write_text('{"kind": "irctl-evidence-pack/v1", "installation_key": null}', "utf-8")
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", str(other))
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(other) in " ".join(done.stderr.split())
    as_yaml = tmp_path / "keyring.yaml"  # a keyring may be written as YAML too
    keyring = json.loads(irctl("keys", "export", cwd=trial.ws, env=trial.env).stdout)
    import yaml

    as_yaml.write_text(yaml.safe_dump(keyring), encoding="utf-8")
    done = _verify(trial.ws, trial.env, trial.run_id, "--trust", str(as_yaml))
    assert done.returncode == 0, done.stdout + done.stderr
