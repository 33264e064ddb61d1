"""A real run to export, pack, anchor and review: built with the real ``irctl`` commands.

Operators with real Ed25519 keys; a runbook that uses a secret, asks two people
to approve a sweep, and lets the CFO approve a restore alone by break-glass; an
operator note full of markup.  Used by tests/test_exports_html.py,
test_pack.py, test_anchor.py and test_review.py.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from irctl.identity import generate_private_key, public_key_text
from tests.helpers import irctl, make_workspace, run_id_from

SECRET = "adm-tok-7Qx9-never-recorded"
NOTE = '<script>alert("note")</script> & <b>bold</b> called custody hotline'
TITLE = 'Hot wallet drain <img src="http://127.0.0.1:9/x.png">'
RUNBOOK = f"""\
irctl: 1
kind: runbook
id: hot-wallet-drain
title: '{TITLE}'
summary: Contain a drained hot wallet.
severity: sev1
owners: [security-oncall]
objectives:
  contain: 15m
secrets:
  admin_token: env:EXCHANGE_ADMIN_TOKEN
approvals:
  treasury-two-person:
    quorum: 2
    roles: [treasury, security-lead]
    expires: 30m
steps:
  - id: halt-withdrawals
    action: notify.console
    tags: [contain]
    with: {{message: "halting with token {{{{ secrets.admin_token }}}}"}}
  - id: sweep-to-cold
    action: notify.console
    approval: treasury-two-person
    with: {{message: "sweep 412.5 ETH to cold storage"}}
  - id: restore
    action: notify.console
    approval: treasury-two-person
    with: {{message: "restore withdrawals"}}
"""
TEAM = {"alice": "security-oncall", "bob": "treasury", "dana": "security-lead", "carol": "cfo"}


@dataclass
class EvidenceRun:
    ws: Path
    run_id: str
    env: dict[str, str]
    keys: Path


def build(root: Path, *, extra: str = "", aws_env: dict[str, str] | None = None) -> EvidenceRun:
    """Run the runbook to the end: alice starts it, bob and dana approve the sweep, carol
    approves the restore alone (break-glass), alice adds a note."""
    keys = root / "keys"
    operators = ["operators:"]
    for name, role in TEAM.items():
        key = generate_private_key(keys / f"{name}.key")
        operators.append(f'  {name}: {{roles: [{role}], key: "{public_key_text(key)}"}}')
    ws = make_workspace(
        root / "ws", {"hot-wallet-drain": RUNBOOK},
        extra="\n".join(operators) + "\nbreak_glass: {roles: [cfo]}\n" + extra,
    )  # fmt: skip
    env = {"IRCTL_KEY_DIR": str(keys), "EXCHANGE_ADMIN_TOKEN": SECRET, **(aws_env or {})}

    def ok(*args: str, code: int = 0) -> str:
        done = irctl(*args, cwd=ws, env=env)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done.stderr

    started = irctl("run", "hot-wallet-drain", "--yes", "--as", "alice", "--incident",
                    "INC-4411", cwd=ws, env=env)  # fmt: skip
    assert started.returncode == 3, started.stdout + started.stderr
    run_id = run_id_from(started)
    ok("note", run_id, NOTE, "--as", "alice")
    ok("approve", run_id, "sweep-to-cold", "--as", "bob", "--yes", "--reason", "matches ticket")
    ok("approve", run_id, "sweep-to-cold", "--as", "dana", "--yes")
    ok("resume", run_id, "--as", "alice", code=3)
    ok("approve", run_id, "restore", "--as", "carol", "--yes", "--break-glass", "--reason",
       "treasury unreachable, CFO restores")  # fmt: skip
    ok("resume", run_id, "--as", "alice")
    return EvidenceRun(ws, run_id, env, keys)


def installation_key(ws: Path) -> str:
    for line in (ws / "irctl.yaml").read_text().splitlines():
        if line.startswith("installation_key:"):
            return line.split('"')[1]
    raise AssertionError("no installation key")


def png_ink(path: Path) -> float:
    """The share of non-white bytes in a PNG's decoded scanlines (0.0 for a blank page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return sum(1 for b in raw[::7] if b < 200) / len(raw[::7])
