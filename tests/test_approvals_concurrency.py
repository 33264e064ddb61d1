"""Many approvers at the same moment, many processes resuming at once: each approval counts
once, the quorum is reached once, the gated step runs once, the chain stays valid."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from irctl.identity import generate_private_key, public_key_text
from irctl.testing import recorded_keys
from tests.helpers import IRCTL, irctl, make_workspace, run_id_from

APPROVERS = [f"approver{n:02d}" for n in range(24)]
QUORUM = 20

RUNBOOK = f"""\
irctl: 1
kind: runbook
id: crowd
title: Many approvers
params:
  out: {{type: string}}
approvals:
  crowd:
    quorum: {QUORUM}
    roles: [treasury]
steps:
  - id: gated
    action: testing.record
    approval: crowd
    with: {{path: "{{{{ params.out }}}}", key: gated}}
  - id: after
    action: testing.record
    with: {{path: "{{{{ params.out }}}}", key: after}}
"""


def _workspace(tmp_path: Path, store: str) -> tuple[Path, dict[str, str]]:
    keys = tmp_path / "keys"
    starter = public_key_text(generate_private_key(keys / "starter.key"))
    lines = ["operators:", f'  starter: {{roles: [oncall], key: "{starter}"}}']
    for name in APPROVERS:
        public = public_key_text(generate_private_key(keys / f"{name}.key"))
        lines.append(f'  {name}: {{roles: [treasury], key: "{public}"}}')
    ws = make_workspace(
        tmp_path / "ws", {"crowd": RUNBOOK}, store=store, extra="\n".join(lines) + "\n"
    )
    env = {**os.environ, "IRCTL_WORKSPACE": str(ws), "IRCTL_KEY_DIR": str(keys)}
    env.pop("IRCTL_DEBUG", None)
    return ws, env


def _all_at_once(argvs: list[list[str]], ws: Path, env: dict[str, str]) -> list[int]:
    procs = [
        subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for argv in argvs
    ]
    codes = []
    for proc in procs:
        proc.communicate(timeout=180)
        codes.append(proc.returncode)
    return codes


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///.irctl/irctl.db"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


def test_twenty_four_approvers_and_eight_resumers_at_once(tmp_path: Path, store: str) -> None:
    ws, env = _workspace(tmp_path, store)
    out = ws / "out.txt"
    started = irctl("run", "crowd", "-p", f"out={out}", "--yes", "--as", "starter", cwd=ws, env=env)
    assert started.returncode == 3, started.stderr
    run_id = run_id_from(started)

    approvals = [
        [IRCTL, "approve", run_id, "gated", "--as", name, "--yes", "--json"] for name in APPROVERS
    ]
    codes = _all_at_once(approvals, ws, env)
    assert codes == [0] * len(APPROVERS)

    # Everyone tries to continue the run at the same moment: one executes, the rest are told.
    resumers = [[IRCTL, "resume", run_id, "--as", "starter"] for _ in range(8)]
    codes = _all_at_once(resumers, ws, env)
    assert codes.count(0) >= 1, codes
    assert set(codes) <= {0, 1, 2}, codes  # finished (0), busy (1) or already finished (2)

    assert recorded_keys(str(out)) == ["gated", "after"]  # the gated step ran exactly once
    exported = irctl(
        "transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws, env=env
    )
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    granted = [e["data"]["operator"] for e in events if e["type"] == "approval.granted"]
    assert sorted(granted) == APPROVERS  # each counted once
    quorum = [e["data"] for e in events if e["type"] == "approval.quorum"]
    assert len(quorum) == 1
    assert len(quorum[0]["approvers"]) >= QUORUM
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    verified = irctl("transcript", "verify", run_id, cwd=ws, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_one_approver_in_eight_processes_at_once_is_recorded_once(
    tmp_path: Path, store: str
) -> None:
    """The same person approving from several terminals (or a double Slack click) at the same
    moment: each process checks the journal again just before it appends, so one approval is
    recorded and the others are refused as already given (found by the soak, bench/soak.py)."""
    ws, env = _workspace(tmp_path, store)
    out = ws / "out.txt"
    started = irctl("run", "crowd", "-p", f"out={out}", "--yes", "--as", "starter", cwd=ws, env=env)
    assert started.returncode == 3, started.stderr
    run_id = run_id_from(started)
    same = [[IRCTL, "approve", run_id, "gated", "--as", APPROVERS[0], "--yes"]] * 8
    codes = _all_at_once(same, ws, env)
    assert codes.count(0) == 1, codes
    assert set(codes) == {0, 2}, codes  # the others: refused, already approved
    exported = irctl(
        "transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws, env=env
    )
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    granted = [e["data"]["operator"] for e in events if e["type"] == "approval.granted"]
    assert granted == [APPROVERS[0]]
