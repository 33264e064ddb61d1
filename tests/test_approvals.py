"""Approvals through the real CLI: signed, bound to the digest, separated from the initiator."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from irctl.identity import generate_private_key, public_key_text
from irctl.record.approvals import Decision, evaluate
from irctl.runbook.model import Policy, impossible
from irctl.testing import recorded_keys
from tests.helpers import IRCTL, irctl, make_workspace, run_id_from

OPERATORS = {
    "oncall": ["security-oncall"],
    "alice": ["security-lead"],
    "dana": ["security-lead"],
    "bob": ["treasury"],
    "erin": ["treasury"],
    "carol": ["ciso"],
    "mallory": ["intern"],
}

RUNBOOK = """\
irctl: 1
kind: runbook
id: sweep
title: Sweep the hot wallet
params:
  out: {type: string}
approvals:
  treasury-and-security:
    quorum: 2
    groups:
      - {roles: [treasury]}
      - {roles: [security-lead]}
    expires: EXPIRES
steps:
  - id: halt
    action: testing.record
    with: {path: "{{ params.out }}", key: halt}
  - id: sweep-to-cold
    action: testing.record
    approval: treasury-and-security
    with: {path: "{{ params.out }}", key: "sweep to {{ vars.cold_wallet }}"}
  - id: after
    action: testing.record
    with: {path: "{{ params.out }}", key: after}
"""


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    for name in OPERATORS:
        generate_private_key(folder / f"{name}.key")
    return folder


def workspace(tmp_path: Path, keys: Path, *, expires: str = "30m", cold: str = "0xC01D") -> Path:
    from irctl.identity import load_private_key

    lines = ["operators:"]
    for name, roles in OPERATORS.items():
        public = public_key_text(load_private_key(keys / f"{name}.key"))
        lines.append(f'  {name}: {{roles: [{", ".join(roles)}], key: "{public}"}}')
    lines.append("break_glass: {roles: [ciso]}")
    ws = tmp_path / "ws"
    if (ws / "irctl.yaml").exists():  # change vars only, keep the installation key
        text = (ws / "irctl.yaml").read_text()
        text = text.split("vars:")[0] + f'vars:\n  cold_wallet: "{cold}"\n'
        (ws / "irctl.yaml").write_text(text)
        return ws
    return make_workspace(
        ws,
        {"sweep": RUNBOOK.replace("EXPIRES", expires)},
        vars={"cold_wallet": f'"{cold}"'},
        extra="\n".join(lines) + "\n",
    )


def env(keys: Path) -> dict[str, str]:
    return {"IRCTL_KEY_DIR": str(keys), "IRCTL_OPERATOR": "oncall"}


def start(ws: Path, keys: Path, *extra: str) -> str:
    result = irctl(
        "run", "sweep", "-p", f"out={ws / 'out.txt'}", "--yes", *extra, cwd=ws, env=env(keys)
    )
    assert result.returncode == 3, result.stderr
    assert "waiting for approval" in result.stderr or "approval" in result.stderr
    return run_id_from(result)


def approve(
    ws: Path, keys: Path, run_id: str, who: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return irctl("approve", run_id, "sweep-to-cold", "--as", who, *extra, cwd=ws, env=env(keys))


def test_two_signed_approvals_open_the_gate_and_the_step_runs_once(
    tmp_path: Path, keys: Path
) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    pending = json.loads(irctl("approvals", "pending", "--json", cwd=ws, env=env(keys)).stdout)
    assert [(p["run_id"], p["step"]) for p in pending] == [(run_id, "sweep-to-cold")]
    assert pending[0]["inputs"]["key"] == "sweep to 0xC01D"
    assert "oncall" not in pending[0]["eligible"]

    first = approve(ws, keys, run_id, "bob", "--reason", "matches INC-42")
    assert first.returncode == 0, first.stderr
    assert "sweep to 0xC01D" in first.stderr  # what you see is what you sign
    assert pending[0]["digest"] in first.stderr
    said = " ".join(first.stderr.split())
    assert "'sweep-to-cold' still needs 1 more approval(s); 1 from security-lead" in said
    still = irctl("resume", run_id, cwd=ws, env=env(keys))
    assert still.returncode == 3  # one of treasury is not enough: security-lead too
    assert "1 from security-lead" in still.stderr

    second = approve(ws, keys, run_id, "alice", "--json", "--yes")
    assert second.returncode == 0, second.stderr
    told = json.loads(second.stdout)
    assert (told["verdict"], told["still_needed"]) == ("approved", None)
    done = irctl("resume", run_id, cwd=ws, env=env(keys))
    assert done.returncode == 0, done.stderr
    assert recorded_keys(str(ws / "out.txt")) == ["halt", "sweep to 0xC01D", "after"]
    shown = irctl("status", run_id, cwd=ws)
    assert "succeeded" in shown.stdout
    assert "needed" not in shown.stdout  # the approval prompt is gone once the step ran
    verified = irctl("transcript", "verify", run_id, cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    events = [
        json.loads(x)
        for x in irctl(
            "transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws
        ).stdout.splitlines()
    ]
    quorum = [e["data"] for e in events if e["type"] == "approval.quorum"]
    assert quorum == [
        {
            "step": "sweep-to-cold",
            "digest": pending[0]["digest"],
            "approvers": ["bob", "alice"],
            "break_glass": False,
        }
    ]


@pytest.mark.parametrize(
    ("who", "extra", "message"),
    [
        ("oncall", [], "oncall started run"),
        ("mallory", [], "mallory (roles: intern) may not decide"),
        ("nobody", [], "'nobody' is not an operator"),
        ("carol", ["--break-glass"], "--break-glass needs --reason"),
        ("mallory", ["--break-glass", "--reason", "x"], "may not break glass"),
    ],
)
def test_rejected_decisions(
    tmp_path: Path, keys: Path, who: str, extra: list[str], message: str
) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    result = approve(ws, keys, run_id, who, *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    events = irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws).stdout
    assert "approval.granted" not in events


def test_approving_twice_is_refused(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    assert approve(ws, keys, run_id, "bob").returncode == 0
    again = approve(ws, keys, run_id, "bob")
    assert again.returncode == 2
    assert "bob already approved 'sweep-to-cold'" in again.stderr


def test_a_wrong_or_missing_key_is_refused(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    wrong = approve(ws, keys, run_id, "bob", "--key", str(keys / "erin.key"))
    assert wrong.returncode == 2
    assert "not bob's key as configured" in wrong.stderr
    missing = approve(ws, keys, run_id, "bob", "--key", str(tmp_path / "none.key"))
    assert missing.returncode == 2
    assert f"--key {tmp_path / 'none.key'}: no such key file" in missing.stderr


def test_a_step_that_is_not_waiting_cannot_be_approved(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    result = irctl("approve", run_id, "halt", "--as", "bob", cwd=ws, env=env(keys))
    assert result.returncode == 2
    assert "step 'halt' of run" in result.stderr
    assert "waiting for approval: sweep-to-cold" in result.stderr


def test_an_expired_request_is_refused_and_asked_again(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys, expires="1s")
    run_id = start(ws, keys)
    time.sleep(1.2)
    listed = irctl("approvals", "pending", "--json", cwd=ws, env=env(keys))
    assert [(p["step"], p["expired"]) for p in json.loads(listed.stdout)] == [
        ("sweep-to-cold", True)
    ]
    table = irctl("approvals", "pending", cwd=ws, env=env(keys))
    assert "EXPIRED" in table.stdout
    assert f"irctl resume {run_id} asks again" in " ".join(table.stderr.split())
    late = approve(ws, keys, run_id, "bob")
    assert late.returncode == 2
    assert "expired at" in late.stderr
    again = irctl("resume", run_id, cwd=ws, env=env(keys))
    assert again.returncode == 3
    kinds = [
        json.loads(x)["type"]
        for x in irctl(
            "transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws
        ).stdout.splitlines()
    ]
    assert kinds.count("approval.requested") == 2
    assert "approval.lapsed" in kinds


def test_one_denial_cancels_the_step(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    assert approve(ws, keys, run_id, "bob").returncode == 0
    no = irctl(
        "deny",
        run_id,
        "sweep-to-cold",
        "--as",
        "dana",
        "--reason",
        "wrong cold wallet",
        cwd=ws,
        env=env(keys),
    )
    assert no.returncode == 0, no.stderr
    said = " ".join(no.stderr.split())
    assert "'sweep-to-cold' is denied: it fails when the run goes on" in said
    assert "continues" not in said
    assert approve(ws, keys, run_id, "alice").returncode == 0
    ended = irctl("resume", run_id, cwd=ws, env=env(keys))
    assert ended.returncode == 1
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    sweep = next(s for s in status["steps"] if s["step"] == "sweep-to-cold")
    assert sweep["status"] == "failed"
    assert "dana: wrong cold wallet" in sweep["error"]
    assert recorded_keys(str(ws / "out.txt")) == ["halt"]


def test_break_glass_approves_alone_and_leaves_a_review_item(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    glass = approve(ws, keys, run_id, "carol", "--break-glass", "--reason", "funds leaving now")
    assert glass.returncode == 0, glass.stderr
    assert "BREAK-GLASS" in glass.stderr
    done = irctl("resume", run_id, cwd=ws, env=env(keys))
    assert done.returncode == 0, done.stderr
    exported = irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws).stdout
    events = [json.loads(x) for x in exported.splitlines()]
    assert any(e["type"] == "run.review_item" and "carol" in e["data"]["text"] for e in events)
    quorum = next(e["data"] for e in events if e["type"] == "approval.quorum")
    assert quorum["break_glass"] is True
    assert quorum["approvers"] == ["carol"]


def test_changed_inputs_void_earlier_approvals(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    run_id = start(ws, keys)
    assert approve(ws, keys, run_id, "bob").returncode == 0
    assert approve(ws, keys, run_id, "alice").returncode == 0
    workspace(tmp_path, keys, cold="0xEVIL")  # the destination changes before the step runs
    again = irctl("resume", run_id, cwd=ws, env=env(keys))
    assert again.returncode == 3, again.stderr
    pending = json.loads(irctl("approvals", "pending", "--json", cwd=ws, env=env(keys)).stdout)
    assert pending[0]["changed"] == {"key": ["sweep to 0xC01D", "sweep to 0xEVIL"]}
    assert pending[0]["approvers"] == []
    assert "halt" in recorded_keys(str(ws / "out.txt"))
    assert not [k for k in recorded_keys(str(ws / "out.txt")) if k.startswith("sweep")]
    shown = approve(ws, keys, run_id, "bob")
    assert "changed since the previous request" in shown.stderr
    assert "0xEVIL" in shown.stderr


def test_an_impossible_policy_refuses_to_start(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    text = (ws / "runbooks" / "sweep.yaml").read_text().replace("quorum: 2", "quorum: 9")
    (ws / "runbooks" / "sweep.yaml").write_text(text)
    result = irctl("run", "sweep", "-p", "out=x", "--yes", cwd=ws, env=env(keys))
    assert result.returncode == 2
    assert "could never be approved: quorum 9 cannot be reached" in result.stderr


def start_attached(ws: Path, keys: Path) -> tuple[subprocess.Popen[str], str]:
    """`irctl run --wait` in the background, and its run id once it waits for approval."""
    proc = subprocess.Popen(
        [IRCTL, "run", "sweep", "-p", f"out={ws / 'out.txt'}", "--yes", "--wait"],
        cwd=ws, env={**os.environ, "IRCTL_WORKSPACE": str(ws), **env(keys)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    pending: list[dict[str, object]] = []
    while not pending and time.monotonic() < deadline:
        time.sleep(0.1)
        listed = irctl("approvals", "pending", "--json", cwd=ws, env=env(keys))
        pending = json.loads(listed.stdout) if listed.returncode == 0 else []
    if not pending:
        proc.kill()
        raise AssertionError("the attached run never waited for approval")
    return proc, str(pending[0]["run_id"])


def test_an_attached_run_continues_by_itself(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    proc, run_id = start_attached(ws, keys)
    try:
        assert approve(ws, keys, run_id, "erin").returncode == 0
        assert approve(ws, keys, run_id, "dana").returncode == 0
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert recorded_keys(str(ws / "out.txt")) == ["halt", "sweep to 0xC01D", "after"]


ROLES = {"t1": ["treasury"], "t2": ["treasury"], "s1": ["security-lead"], "c": ["ciso"], "i": ["x"]}


def decision(
    who: str, approve: bool = True, *, glass: bool = False, assurance: str = "key"
) -> Decision:
    return Decision(who, approve, "t", assurance, glass, None)


def test_role_groups_are_and_roles_inside_a_group_are_or() -> None:
    policy = Policy.model_validate(
        {"quorum": 2, "groups": [{"roles": ["treasury"]}, {"roles": ["security-lead"]}]}
    )
    two_treasury = evaluate(policy, [decision("t1"), decision("t2")], roles_of=ROLES, initiator="i")
    assert two_treasury.state == "pending"
    assert two_treasury.missing == "1 from security-lead"
    both = evaluate(policy, [decision("t1"), decision("s1")], roles_of=ROLES, initiator="i")
    assert both.state == "approved"


def test_a_smaller_quorum_cancels() -> None:
    policy = Policy.model_validate({"quorum": 3, "roles": ["treasury", "security-lead"], "deny": 2})
    one = evaluate(policy, [decision("t1", False)], roles_of=ROLES, initiator="i")
    assert one.state == "pending"
    two = evaluate(
        policy, [decision("t1", False), decision("s1", False)], roles_of=ROLES, initiator="i"
    )
    assert two.state == "denied"
    with pytest.raises(ValueError, match="cancelling a pending step must be easier"):
        Policy.model_validate({"quorum": 1, "deny": 2})


def test_min_assurance_key_ignores_slack_approvals() -> None:
    policy = Policy.model_validate({"quorum": 1, "roles": ["treasury"]})
    slack = evaluate(policy, [decision("t1", assurance="slack")], roles_of=ROLES, initiator="i")
    assert slack.state == "pending"
    lenient = Policy.model_validate({"quorum": 1, "roles": ["treasury"], "min_assurance": "slack"})
    assert (
        evaluate(lenient, [decision("t1", assurance="slack")], roles_of=ROLES, initiator="i").state
        == "approved"
    )


def test_the_initiator_and_the_unknown_never_count() -> None:
    policy = Policy.model_validate({"quorum": 1})
    assert evaluate(policy, [decision("i")], roles_of=ROLES, initiator="i").state == "pending"
    assert evaluate(policy, [decision("ghost")], roles_of=ROLES, initiator="i").state == "pending"
    assert evaluate(
        policy,
        [decision("c", glass=True)],
        roles_of=ROLES,
        initiator="i",
        break_glass_roles=["ciso"],
    ).break_glass


def test_impossible_policies_are_named() -> None:
    policy = Policy.model_validate({"quorum": 2, "roles": ["treasury"]})
    assert impossible(policy, ROLES, "t1") is not None  # with t1 starting, only t2 is left
    assert impossible(policy, ROLES, "s1") is None


def test_an_abort_from_elsewhere_stops_an_attached_run(tmp_path: Path, keys: Path) -> None:
    ws = workspace(tmp_path, keys)
    proc, run_id = start_attached(ws, keys)
    try:
        aborted = irctl("abort", run_id, "--reason", "false alarm", cwd=ws, env=env(keys))
        assert aborted.returncode == 0, aborted.stderr
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "was aborted" in stderr
    assert recorded_keys(str(ws / "out.txt")) == ["halt"]
    verified = irctl("transcript", "verify", run_id, cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_approval_copied_past_its_request_does_not_count(tmp_path: Path, keys: Path) -> None:
    """Someone who can write the database (no key needed) copies alice's signed approval of a
    request that lapsed to after the new request for the same digest: her signature is
    genuine, but it was made for the earlier request, so it does not count for this one."""
    from irctl.journal.store import Store

    ws = workspace(tmp_path, keys, expires="4s")
    run_id = start(ws, keys)
    assert approve(ws, keys, run_id, "alice").returncode == 0
    time.sleep(4.5)  # the request lapses with one approval of two
    assert irctl("resume", run_id, cwd=ws, env=env(keys)).returncode == 3  # asked again
    store = Store.open(f"sqlite:///{ws / '.irctl' / 'irctl.db'}")
    try:
        events = store.events(run_id)
        requests = [e for e in events if e.type == "approval.requested"]
        assert len(requests) == 2
        assert requests[0].data["digest"] == requests[1].data["digest"]
        old = next(e for e in events if e.type == "approval.granted")
        store.append(run_id, [("approval.granted", dict(old.data))])  # the copy, after it
    finally:
        store.close()
    assert approve(ws, keys, run_id, "bob").returncode == 0
    resumed = irctl("resume", run_id, cwd=ws, env=env(keys))
    assert resumed.returncode == 3, resumed.stderr  # still waiting: a security lead is missing
    assert "sweep to" not in (ws / "out.txt").read_text()
    verified = irctl("transcript", "verify", run_id, cwd=ws, env=env(keys))
    said = " ".join((verified.stdout + verified.stderr).split())
    assert "made for an earlier request, so it did not count" in said, said
