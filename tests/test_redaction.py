"""Redaction by construction, through the real ``irctl`` command and the local Slack stand-in.

A field rendered from a secret is masked whole wherever a run is recorded or shown, whatever
the template did to the value; a secret pasted into a note, a reason or an answer is stored
masked; and a short or common secret value never rewrites the names a record is made of.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from irctl.identity import generate_private_key, public_key_text
from irctl.testing import SlackStandIn
from tests.helpers import irctl, make_workspace, run_id_from

SLACK_TOKEN = "xoxb-redaction-test-token"
# The marker 'Qzx7Wv' is in the secret and nowhere else: each way a template can rewrite the
# value leaves a form of it (spelt out, reversed, re-cased) that the artefacts are searched for.
SECRET = "Tok-Qzx7Wv/9c0e+Pmk&Rdq"
MARKS = ("qzx7wv", "vw7xzq", "q z x 7 w v", "v w 7 x z q")

RUNBOOK = """\
irctl: 1
kind: runbook
id: filters
title: A secret through template filters
secrets:
  tok: env:REDACTION_TOKEN
approvals:
  one: {quorum: 1, roles: [treasury]}
steps:
  - id: sliced
    action: notify.console
    with: {message: "{{ secrets.tok[1:] }}"}
  - id: reversed
    action: notify.console
    with: {message: "{{ secrets.tok | reverse }}"}
  - id: spelt
    action: notify.console
    with: {message: "{{ secrets.tok | list | join(' ') }}"}
  - id: loud
    action: notify.console
    with: {message: "{{ secrets.tok | upper }}"}
  - id: quiet
    action: notify.console
    with: {message: "token {{ secrets.tok | lower }} in words"}
  - id: url
    action: notify.console
    with: {message: "https://x.test/?t={{ secrets.tok | urlencode }}"}
  - id: json
    action: notify.console
    with: {message: "{{ {'t': secrets.tok | reverse | join} | tojson }}"}
  - id: escaped
    action: notify.console
    with: {message: "{{ secrets.tok | e | replace('-', ' ') }}"}
  - id: gated
    action: notify.console
    approval: one
    with: {message: "{{ secrets.tok[::-1] | upper }}"}
"""


def leaked(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace").lower()
    found = [mark for mark in MARKS if mark in text]
    return found + [SECRET] * (SECRET.lower() in text)


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    with SlackStandIn(token=SLACK_TOKEN) as standin:
        standin.add_channel("incidents", bot_member=True)
        yield standin


def _workspace(root: Path, runbook: str, *, slack: Any = None) -> tuple[Path, dict[str, str]]:
    keys = root / "keys"
    operators = ["operators:"]
    for name, role in {"oncall": "security-oncall", "bob": "treasury"}.items():
        key = generate_private_key(keys / f"{name}.key")
        operators.append(f'  {name}: {{roles: [{role}], key: "{public_key_text(key)}"}}')
    extra = "\n".join(operators) + "\n"
    if slack is not None:
        extra += (
            "integrations:\n  slack: {token: env:SLACK_BOT_TOKEN, "
            f'base_url: "{slack.url}", channel: "#incidents"}}\n'
        )
    ws = make_workspace(root / "ws", {"filters": runbook}, extra=extra)
    return ws, {"IRCTL_OPERATOR": "oncall", "IRCTL_KEY_DIR": str(keys)}


def test_a_secret_through_any_filter_is_never_recorded_or_shown(tmp_path: Path, slack: Any) -> None:
    ws, env = _workspace(tmp_path, RUNBOOK, slack=slack)
    env["REDACTION_TOKEN"] = SECRET
    plan = irctl("plan", "filters", cwd=ws, env=env)
    assert plan.returncode == 0, plan.stderr
    plan_json = irctl("plan", "filters", "--json", cwd=ws, env=env)
    steps = {s["id"]: s for s in json.loads(plan_json.stdout)["steps"]}
    assert {s["inputs"]["message"] for s in steps.values()} == {"••••"}  # masked whole

    run = irctl("run", "filters", "--yes", cwd=ws, env=env)
    assert run.returncode == 3, run.stderr  # waits for the approval
    run_id = run_id_from(run)
    # Held open (as a long run or irctl serve would), the store keeps what follows in its -wal.
    holder = sqlite3.connect(ws / ".irctl" / "irctl.db")
    try:
        holder.execute("SELECT count(*) FROM irctl_events").fetchone()
        approved = irctl(
            "approve", run_id, "gated", "--as", "bob", "--reason", "ok", cwd=ws, env=env
        )
        assert approved.returncode == 0, approved.stderr
        done = irctl("resume", run_id, cwd=ws, env=env)
        assert done.returncode == 0, done.stderr
        wal = (ws / ".irctl" / "irctl.db-wal").read_bytes()
        assert b"step.succeeded" in wal  # the resumed run's events are in the log
        assert not leaked(wal), leaked(wal)
    finally:
        holder.close()
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    recorded = {s["step"]: s for s in status["steps"]}
    assert recorded["gated"]["digest"] == steps["gated"]["digest"]  # the plan is the contract

    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("jsonl", "md", "html"):
        made = irctl(
            "transcript", "export", run_id, "--format", fmt, "-o", str(out / f"t.{fmt}"), cwd=ws
        )
        assert made.returncode == 0, made.stderr
    packed = irctl("transcript", "pack", run_id, "-o", str(out / "pack.zip"), "--no-pdf", cwd=ws)
    assert packed.returncode == 0, packed.stderr
    verified = irctl("transcript", "verify", str(out / "t.jsonl"), cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with zipfile.ZipFile(out / "pack.zip") as pack:
        in_pack = b"".join(pack.read(name) for name in pack.namelist())
    slack_calls = json.dumps([call.params for call in slack.requests], ensure_ascii=False)
    assert "Approval needed" in slack.render()  # the notifier did post the run's progress
    artefacts = {
        "store": b"".join(p.read_bytes() for p in (ws / ".irctl").rglob("*") if p.is_file()),
        **{name: (out / name).read_bytes() for name in ("t.jsonl", "t.md", "t.html")},
        "pack": in_pack,
        "slack": (slack_calls + slack.render()).encode(),
        "terminal": "".join(
            r.stdout + r.stderr for r in (plan, plan_json, run, approved, done)
        ).encode(),
    }
    for name, data in artefacts.items():
        assert not leaked(data), f"the secret leaked into the {name}: {leaked(data)}"
    assert (ws / ".irctl" / "irctl.db").exists()
    journal = [json.loads(line) for line in (out / "t.jsonl").read_text().splitlines()]
    started = [e["data"] for e in journal if e["type"] == "step.started"]
    assert len(started) == 9
    assert {e["inputs"]["message"] for e in started} == {"••••"}
    succeeded = [e["data"] for e in journal if e["type"] == "step.succeeded"]
    assert {e["outputs"]["message"] for e in succeeded} == {"••••"}  # echoed back: masked too

    checked = irctl("transcript", "check-secret", run_id, "tok", cwd=ws, input=SECRET)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # commitments still work


def test_a_template_error_of_a_field_that_reads_a_secret_quotes_no_value(tmp_path: Path) -> None:
    runbook = RUNBOOK.split("steps:\n", 1)[0] + (
        "steps:\n  - id: lookup\n    action: notify.console\n"
        "    with: {message: \"{{ {}[secrets.tok | reverse | join] }}\"}\n"
    )
    ws, env = _workspace(tmp_path, runbook)
    env["REDACTION_TOKEN"] = SECRET
    run = irctl("run", "filters", "--yes", cwd=ws, env=env)
    assert run.returncode == 1, run.stderr
    assert "it reads secrets" in run.stderr
    data = b"".join(p.read_bytes() for p in (ws / ".irctl").rglob("*") if p.is_file())
    assert not leaked(data + (run.stdout + run.stderr).encode())


def test_the_items_of_a_for_each_made_from_a_secret_are_secret_too(tmp_path: Path) -> None:
    runbook = RUNBOOK.split("steps:\n", 1)[0] + (
        "steps:\n  - id: each\n    for_each: \"{{ (secrets.tok | reverse | join ~ ',plain')"
        ".split(',') }}\"\n    max_parallel: 2\n    action: notify.console\n"
        "    with: {message: \"part {{ item }}\", level: info}\n"
    )
    ws, env = _workspace(tmp_path, runbook)
    env["REDACTION_TOKEN"] = SECRET
    plan = irctl("plan", "filters", "--json", cwd=ws, env=env)
    assert plan.returncode == 0, plan.stderr
    (step,) = json.loads(plan.stdout)["steps"]
    assert step["for_each"] == ["••••", "••••"]
    assert step["inputs"] == [{"message": "••••", "level": "info"}] * 2
    run = irctl("run", "filters", "--yes", cwd=ws, env=env)
    assert run.returncode == 0, run.stderr
    data = b"".join(p.read_bytes() for p in (ws / ".irctl").rglob("*") if p.is_file())
    assert not leaked(data + (plan.stdout + run.stdout + run.stderr).encode())


def test_notes_reasons_and_answers_are_stored_with_the_secret_masked(tmp_path: Path) -> None:
    runbook = RUNBOOK.split("steps:\n", 1)[0] + (
        "steps:\n  - id: ask\n    action: manual.confirm\n    with: {prompt: call custody}\n"
        "  - id: gated\n    action: notify.console\n    approval: one\n"
        "    with: {message: \"{{ secrets.tok | length }} characters\"}\n"
    )
    ws, env = _workspace(tmp_path, runbook)
    env["REDACTION_TOKEN"] = SECRET
    run = irctl("run", "filters", "--yes", cwd=ws, env=env)
    assert run.returncode == 3, run.stderr
    run_id = run_id_from(run)
    basic = base64.b64encode(f"oncall:{SECRET}".encode()).decode()
    quoted = SECRET.replace("/", "%2F").replace("+", "%2B").replace("&", "%26")
    # The note and the others come from processes that never resolved the secret (no env).
    words = {k: v for k, v in env.items() if k != "REDACTION_TOKEN"}
    text = f"pasted {SECRET} by mistake, and Basic {basic}"
    note = irctl("note", run_id, text, cwd=ws, env=words)
    assert note.returncode == 0, note.stderr
    answered = irctl("answer", run_id, "ask", "done", "--no-resume", cwd=ws, env=words)
    assert answered.returncode == 0, answered.stderr
    resumed = irctl("resume", run_id, cwd=ws, env=env)
    assert resumed.returncode == 3, resumed.stderr  # now at the approval
    reason = f"checked the token ({quoted}) with '{SECRET[::-1]}'"
    approved = irctl(
        "approve", run_id, "gated", "--as", "bob", "--reason", reason, cwd=ws, env=words
    )
    assert approved.returncode == 0, approved.stderr
    done = irctl("resume", run_id, cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    aborted_run = irctl("run", "filters", "--yes", cwd=ws, env=env)
    other = run_id_from(aborted_run)
    aborted = irctl("abort", other, "--reason", f"wrong token {SECRET}", cwd=ws, env=words)
    assert aborted.returncode == 0, aborted.stderr

    data = b"".join(p.read_bytes() for p in (ws / ".irctl").rglob("*") if p.is_file())
    assert not leaked(data), leaked(data)
    assert basic.encode() not in data
    lines = irctl("transcript", "export", run_id, "--format", "jsonl", cwd=ws).stdout
    events = [json.loads(line) for line in lines.splitlines()]
    notes = [e["data"]["text"] for e in events if e["type"] == "run.note"]
    assert notes == ["pasted •••• by mistake, and Basic ••••"]
    (granted,) = [e["data"] for e in events if e["type"] == "approval.granted"]
    assert granted["reason"] == "checked the token (••••) with '••••'"
    assert [e["data"]["answer"] for e in events if e["type"] == "step.answered"] == ["done"]
    verified = irctl("transcript", "verify", run_id, cwd=ws)  # the signed reason still verifies
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 approval verified" in verified.stdout
    reasons = irctl("transcript", "export", other, "--format", "jsonl", cwd=ws).stdout
    assert '"reason":"wrong token ••••"' in reasons


SHORT = """\
irctl: 1
kind: runbook
id: filters
title: A short secret
secrets:
  tok: env:REDACTION_TOKEN
approvals:
  expiring: {quorum: 1, roles: [treasury], exclude_initiator: true, expires: 30m}
steps:
  - id: fix-x
    action: notify.console
    with: {message: "{{ secrets.tok }} expires in x minutes"}
  - id: exclude
    action: notify.console
    approval: expiring
    with: {message: "expires x: {{ secrets.tok | upper }}", level: info}
"""


@pytest.mark.parametrize("value", ["x", "expires"])
def test_a_short_or_common_secret_leaves_the_run_its_approvals_and_its_proof_intact(
    tmp_path: Path, value: str
) -> None:
    ws, env = _workspace(tmp_path, SHORT)
    env["REDACTION_TOKEN"] = value
    plan = irctl("plan", "filters", "--json", cwd=ws, env=env)
    assert plan.returncode == 0, plan.stderr
    steps = {s["id"]: s for s in json.loads(plan.stdout)["steps"]}
    assert steps["exclude"]["approval"]["exclude_initiator"] is True
    run = irctl("run", "filters", "--yes", cwd=ws, env=env)
    assert run.returncode == 3, run.stderr
    run_id = run_id_from(run)
    pending = irctl("approvals", "pending", cwd=ws, env=env)
    assert pending.returncode == 0, pending.stderr
    note = irctl("note", run_id, "the window expires at x o'clock", cwd=ws, env=env)
    assert note.returncode == 0, note.stderr
    approved = irctl(
        "approve", run_id, "exclude", "--as", "bob", "--reason", "expires x", cwd=ws, env=env
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr
    done = irctl("resume", run_id, cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} succeeded" in done.stderr
    verified = irctl("transcript", "verify", run_id, cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    lines = irctl("transcript", "export", run_id, "--format", "jsonl", cwd=ws).stdout
    events = [json.loads(line) for line in lines.splitlines()]
    (request,) = [e["data"] for e in events if e["type"] == "approval.requested"]
    assert request["rules"]["exclude_initiator"] is True
    assert request["rules"]["expires"] == "30m"
    assert (request["policy"], request["step"]) == ("expiring", "exclude")
    assert request["inputs"] == {"message": "••••", "level": "info"}  # masked whole, keys kept
    assert [e["data"]["step"] for e in events if e["type"] == "step.succeeded"] == [
        "fix-x", "exclude",
    ]  # fmt: skip
    (note_event,) = [e["data"] for e in events if e["type"] == "run.note"]
    assert note_event["text"] == "the window expires at x o'clock"  # too short to search for
    (granted,) = [e["data"] for e in events if e["type"] == "approval.granted"]
    assert granted["reason"] == "expires x"
