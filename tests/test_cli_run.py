"""The real ``irctl`` command: plan, run, answer, resume, abort, Ctrl-C, init, keys, help."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from irctl.identity import generate_private_key, public_key_text
from irctl.testing import ExchangeAdminStub
from tests.helpers import IRCTL, irctl, make_workspace, run_id_from

ROOT = Path(__file__).resolve().parents[1]
WALLET = "0x00000000000000000000000000000000000000aa"
TOKEN = "tok-3b1f9c0e-never-record-me"


@pytest.fixture
def exchange() -> ExchangeAdminStub:
    with ExchangeAdminStub(TOKEN) as stub:
        stub.add_pending("ethereum", WALLET, 2)
        yield stub


KEYS: dict[str, Path] = {}
TEAM = {"oncall": "security-oncall", "bob": "treasury", "alice": "security-lead"}


@pytest.fixture
def ws(tmp_path: Path, exchange: ExchangeAdminStub) -> Path:
    text = (ROOT / "runbooks" / "hot-wallet-compromise.yaml").read_text()
    operators = ["operators:"]
    for name, role in TEAM.items():
        key = generate_private_key(tmp_path / "keys" / f"{name}.key")
        operators.append(f'  {name}: {{roles: [{role}], key: "{public_key_text(key)}"}}')
    ENV["IRCTL_KEY_DIR"] = str(tmp_path / "keys")
    return make_workspace(
        tmp_path / "ws",
        {"hot-wallet-compromise": text},
        vars={"exchange_admin_url": exchange.url, "cold_wallets": f'{{ethereum: "{COLD}"}}'},
        extra="\n".join(operators) + "\n",
    )


COLD = "0x00000000000000000000000000000000000c01d0"
ENV = {"EXCHANGE_ADMIN_TOKEN": TOKEN, "IRCTL_OPERATOR": "oncall"}


def approve_sweep(ws: Path, run_id: str) -> None:
    for who in ("bob", "alice"):
        done = irctl("approve", run_id, "sweep-via-custody", "--as", who, cwd=ws, env=ENV)
        assert done.returncode == 0, done.stderr


HOT = ["hot-wallet-compromise", "-p", "chain=ethereum", "-p", f"wallet={WALLET}"]


def test_plan_digest_is_what_the_run_records(ws: Path) -> None:
    plan = irctl("plan", *HOT, "--json", cwd=ws, env=ENV)
    assert plan.returncode == 0, plan.stderr
    steps = {s["id"]: s for s in json.loads(plan.stdout)["steps"]}
    halt = steps["halt-withdrawals"]
    assert halt["inputs"]["headers"]["Authorization"] == "••••"  # read a secret: masked whole
    assert halt["approval"] is None
    assert halt["integration"] == "http"
    assert "run.id" in halt["note"]  # its reason reads the run id: final at run start
    cancel = steps["cancel-custody-pending"]
    assert steps["custody-hotline"]["waits_for"] == ["cancel-custody-pending"]
    assert TOKEN not in plan.stdout

    run = irctl("run", *HOT, "--yes", cwd=ws, env=ENV)
    assert run.returncode == 3, run.stderr  # waits at the manual step
    run_id = run_id_from(run)
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    recorded = {s["step"]: s for s in status["steps"]}
    assert recorded["cancel-custody-pending"]["digest"] == cancel["digest"]
    assert recorded["halt-withdrawals"]["digest"] != halt["digest"]


def test_a_full_run_answers_a_manual_step_and_never_records_the_secret(
    ws: Path, exchange: ExchangeAdminStub, tmp_path: Path
) -> None:
    run = irctl("run", *HOT, "--yes", "--incident", "INC-7", cwd=ws, env=ENV)
    assert run.returncode == 3, run.stderr
    run_id = run_id_from(run)
    assert "custody-hotline" in run.stderr
    assert f"irctl answer {run_id} custody-hotline" in run.stderr
    assert exchange.halted == {"ethereum"}
    assert exchange.pending("ethereum", WALLET) == 0

    wrong = irctl("answer", run_id, "halt-withdrawals", "done", cwd=ws, env=ENV)
    assert wrong.returncode == 2
    assert "is not waiting for an answer" in wrong.stderr

    answered = irctl("answer", run_id, "custody-hotline", "done", cwd=ws, env=ENV)
    assert answered.returncode == 3, answered.stderr  # the sweep waits for two approvers
    assert exchange.sweeps == []
    approve_sweep(ws, run_id)
    done = irctl("resume", run_id, cwd=ws, env=ENV)
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} succeeded" in done.stderr
    assert exchange.sweeps == [{"chain": "ethereum", "wallet": WALLET, "to": COLD}]
    # the halt was not repeated by the later processes
    assert len(exchange.requests_to("/withdrawals/halt")) == 1

    jsonl = tmp_path / "t.jsonl"
    md = tmp_path / "t.md"
    assert (
        irctl(
            "transcript", "export", run_id, "--format", "jsonl", "-o", str(jsonl), cwd=ws
        ).returncode
        == 0
    )
    assert (
        irctl("transcript", "export", run_id, "--format", "md", "-o", str(md), cwd=ws).returncode
        == 0
    )
    shown = irctl("transcript", "show", run_id, cwd=ws)
    verified = irctl("transcript", "verify", str(jsonl), cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    artefacts = {
        # the database, its WAL, the lock files: everything irctl keeps in the workspace
        "workspace state": b"".join(
            p.read_bytes() for p in (ws / ".irctl").rglob("*") if p.is_file()
        ),
        "jsonl": jsonl.read_bytes(),
        "markdown": md.read_bytes(),
        "outputs": (
            run.stdout + run.stderr + answered.stderr + done.stdout + done.stderr + shown.stdout
        ).encode(),
    }
    for name, data in artefacts.items():
        assert TOKEN.encode() not in data, f"the secret leaked into the {name}"
    answered = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert any(e["type"] == "step.answered" and e["data"]["by"] == "oncall" for e in answered)


def test_bad_params_are_all_reported_with_exit_2(ws: Path) -> None:
    result = irctl(
        "run", "hot-wallet-compromise", "-p", "chain=etherium", "-p", "wallet=nope", "--yes",
        cwd=ws, env=ENV,
    )  # fmt: skip
    assert result.returncode == 2
    assert "did you mean 'ethereum'" in result.stderr
    assert "wallet" in result.stderr
    assert "Traceback" not in result.stderr
    assert (
        not (ws / ".irctl" / "irctl.db").exists()
        or "r-" not in irctl("runs", "list", cwd=ws).stdout
    )


def test_unknown_runbook_suggests_the_closest(ws: Path) -> None:
    result = irctl("plan", "hot-wallet-compromize", cwd=ws)
    assert result.returncode == 2
    assert "did you mean 'hot-wallet-compromise'?" in result.stderr


def test_missing_secret_stops_before_the_run_starts(ws: Path, exchange: ExchangeAdminStub) -> None:
    result = irctl("run", *HOT, "--yes", cwd=ws, env={**ENV, "EXCHANGE_ADMIN_TOKEN": ""})
    assert result.returncode == 2
    assert "secret 'admin_token'" in result.stderr
    assert exchange.requests == []


SLEEPY = """\
irctl: 1
kind: runbook
id: sleepy
title: Sleeps
steps:
  - id: first
    action: notify.console
    with: {message: starting}
  - id: nap
    action: wait.sleep
    with: {seconds: 1}
  - id: last
    action: notify.console
    with: {message: done}
"""


def _events(ws: Path) -> list[str]:
    db = ws / ".irctl" / "irctl.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return [r[0] for r in conn.execute("SELECT line FROM irctl_events ORDER BY seq")]
        except sqlite3.OperationalError:
            return []


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path: Path, stop: signal.Signals) -> None:
    ws = make_workspace(tmp_path / "ws", {"sleepy": SLEEPY})
    proc = subprocess.Popen(
        [IRCTL, "run", "sleepy", "--yes"],
        cwd=ws, env={**os.environ, "IRCTL_WORKSPACE": str(ws)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any('"step":"nap"' in line and "step.started" in line for line in _events(ws)):
            break
        time.sleep(0.005)
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "irctl resume" in stderr
    kinds = [json.loads(line)["type"] for line in _events(ws)]
    assert "step.interrupted" in kinds
    assert kinds[-2:] == ["run.interrupted", "checkpoint"]
    run_id = json.loads(_events(ws)[0])["run"]
    resumed = irctl("resume", run_id, cwd=ws)
    assert resumed.returncode == 0, resumed.stderr
    kinds = [json.loads(line)["type"] for line in _events(ws)]
    assert kinds.count("run.succeeded") == 1
    firsts = [line for line in _events(ws) if '"step":"first"' in line and "step.started" in line]
    assert len(firsts) == 1  # finished steps are not repeated


def test_abort_ends_a_waiting_run(ws: Path) -> None:
    run = irctl("run", *HOT, "--yes", cwd=ws, env=ENV)
    run_id = run_id_from(run)
    aborted = irctl("abort", run_id, "--reason", "false alarm", cwd=ws, env=ENV)
    assert aborted.returncode == 0, aborted.stderr
    again = irctl("resume", run_id, cwd=ws, env=ENV)
    assert again.returncode == 2
    assert "already aborted" in again.stderr
    listed = json.loads(irctl("runs", "list", "--json", cwd=ws).stdout)
    assert listed[0]["status"] == "aborted"


def test_a_live_run_without_a_terminal_needs_yes(tmp_path: Path) -> None:
    """Nobody can answer 'Start a LIVE run?' from a script: without --yes nothing starts."""
    ws = make_workspace(tmp_path / "ws", {"sleepy": SLEEPY.replace("seconds: 1", "seconds: 0")})
    refused = irctl("run", "sleepy", "--unattended", cwd=ws)  # stdin is not a terminal
    assert refused.returncode == 2, refused.stderr
    assert "pass --yes to start it from a script" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _events(ws) == []  # nothing recorded
    detached = irctl("run", "sleepy", "--detach", cwd=ws)
    assert detached.returncode == 2, detached.stderr
    assert _events(ws) == []
    drill = irctl("run", "sleepy", "--mode", "tabletop", "--unattended", cwd=ws)
    assert drill.returncode == 0, drill.stderr  # a tabletop run changes nothing: not asked
    started = irctl("run", "sleepy", "--yes", "--unattended", cwd=ws)
    assert started.returncode == 0, started.stderr


def test_operator_must_be_configured_when_operators_exist(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "ws", {"sleepy": SLEEPY}, extra="operators:\n  alice: {roles: [security-lead]}\n"
    )
    result = irctl("run", "sleepy", "--yes", "--as", "alcie", cwd=ws)
    assert result.returncode == 2
    assert "did you mean 'alice'?" in result.stderr


def test_init_creates_a_workspace_with_a_private_key(tmp_path: Path) -> None:
    result = irctl("init", str(tmp_path / "new"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "new" / ".irctl" / "installation.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    config = (tmp_path / "new" / "irctl.yaml").read_text()
    assert re.search(r'installation_key: "ed25519:[A-Za-z0-9+/=]+"', config)
    assert ".irctl/" in (tmp_path / "new" / ".gitignore").read_text()
    again = irctl("init", str(tmp_path / "new"), cwd=tmp_path)
    assert again.returncode == 0
    assert "left as it is" in again.stderr
    # the key lost: init does not make another that irctl.yaml does not name
    named = config.split('installation_key: "')[1].split('"')[0]
    key.unlink()
    lost = irctl("init", str(tmp_path / "new"), cwd=tmp_path, env={"COLUMNS": "1000"})
    assert lost.returncode == 2
    assert lost.stderr.strip() == (
        f"error: {tmp_path / 'new' / 'irctl.yaml'} names the installation key {named}, but "
        f"{key} does not exist: restore the key file from its backup (transcripts already "
        "signed verify only with it); to replace the installation key on purpose, remove the "
        "installation_key line from irctl.yaml first, then run irctl init again"
    )
    assert not key.exists()


def test_keys_generate_writes_outside_the_workspace(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = irctl("keys", "generate", "alice", cwd=tmp_path, env={"IRCTL_KEY_DIR": str(keys)})
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((keys / "alice.key").stat().st_mode) == 0o600
    assert re.search(r'alice: \{roles: \[\], key: "ed25519:[A-Za-z0-9+/=]+"\}', result.stdout)
    twice = irctl("keys", "generate", "alice", cwd=tmp_path, env={"IRCTL_KEY_DIR": str(keys)})
    assert twice.returncode == 2
    assert "already exists" in twice.stderr


COMMANDS = [
    ["init"], ["schema"], ["validate"], ["runbooks", "list"], ["plan"], ["run"], ["status"],
    ["runs", "list"], ["resume"], ["abort"], ["answer"], ["adopt"], ["note"],
    ["transcript", "show"],
    ["transcript", "verify"], ["transcript", "export"], ["keys", "generate"], ["keys", "export"],
    ["demo"],
    ["approve"], ["deny"], ["approvals", "pending"], ["serve"], ["transcript", "pack"],
    ["transcript", "anchor"], ["transcript", "salt"], ["transcript", "check-secret"],
    ["drill", "list"], ["drill", "run"], ["drill", "schedule"], ["drill", "unschedule"],
    ["drill", "report"], ["scheduler", "run"], ["safe", "verify"], ["safe", "snapshot"],
    ["allowlist", "add"], ["allowlist", "sign"], ["allowlist", "verify"], ["store", "info"],
    ["store", "upgrade"], ["store", "migrate"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(command: list[str], tmp_path: Path) -> None:
    result = irctl(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    readme = (ROOT / "README.md").read_text()
    assert f"irctl {' '.join(command)}" in readme


def test_tabletop_touches_nothing_but_asks_people(ws: Path, exchange: ExchangeAdminStub) -> None:
    run = irctl("run", *HOT, "--mode", "tabletop", cwd=ws, env=ENV)
    assert run.returncode == 3, run.stderr  # manual steps are real in a drill
    run_id = run_id_from(run)
    answered = irctl("answer", run_id, "custody-hotline", "done", cwd=ws, env=ENV)
    assert answered.returncode == 3, answered.stderr  # approvals are real in a drill too
    approve_sweep(ws, run_id)
    done = irctl("resume", run_id, cwd=ws, env=ENV)
    assert done.returncode == 0, done.stderr
    assert exchange.requests == []
    assert exchange.halted == set()
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    assert status["mode"] == "tabletop"
    assert all(
        s["outputs"].get("simulated") for s in status["steps"] if s["step"] == "halt-withdrawals"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "hot-wallet-compromise", "-p", "chain"], "-p expects name=value, got 'chain'"),
        (["run", *HOT, "--mode", "tabeltop", "--yes"], "did you mean 'tabletop'?"),
        (["plan", *HOT, "-p", "colour=red"], "param 'colour'"),
        (["plan", "hot-wallet-compromise"], "param 'chain' is required"),
        (["plan", "no/such/file.yaml"], "no runbook file no/such/file.yaml"),
        (["status", "r-nope"], "no irctl store at"),  # reading never creates it: none yet
        (["resume", "r-nope"], "no run 'r-nope'"),
        (["transcript", "show", "r-nope"], "no irctl store at"),
        (["answer", "r-nope", "step", "done"], "no run 'r-nope'"),
        (["abort", "r-nope", "--reason", "x"], "no run 'r-nope'"),
        (["resume", "r-nope", "--step", "x"], "--step and --mark go together"),
        (["run", *HOT, "--as", "", "--yes"], "--as needs an operator's name"),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_2(ws: Path, args: list[str], message: str) -> None:
    result = irctl(*args, cwd=ws, env=ENV)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_mark_is_refused_and_recorded_nowhere(ws: Path) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    before = irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws).stdout
    result = irctl(
        "resume", run_id, "--step", "custody-hotline", "--mark", "maybe", cwd=ws, env=ENV
    )
    assert result.returncode == 2
    assert "--mark must be one of done, retry, failed" in result.stderr
    after = irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws).stdout
    assert before == after


def test_a_broken_store_url_is_a_clear_error(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "ws", {"sleepy": SLEEPY}, store="postgresql+psycopg://x@127.0.0.1:1/db"
    )
    result = irctl("runs", "list", cwd=ws)
    assert result.returncode == 74  # store unavailable, told at once: nothing listens there
    assert result.stderr.startswith("error: store unavailable: cannot open the store: ")
    assert "Traceback" not in result.stderr


def test_notes_and_approvals_added_later_keep_the_transcript_verified(ws: Path) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    answered = irctl("answer", run_id, "custody-hotline", "done", cwd=ws, env=ENV)
    assert answered.returncode == 3, answered.stderr  # the sweep waits for two approvers
    approved = irctl("approve", run_id, "sweep-via-custody", "--as", "bob", cwd=ws, env=ENV)
    assert approved.returncode == 0, approved.stderr
    for step in range(2):
        if step:
            noted = irctl("note", run_id, "custody desk called back", "--as", "alice", cwd=ws,
                          env=ENV)  # fmt: skip
            assert noted.returncode == 0, noted.stderr
        verified = irctl("transcript", "verify", run_id, cwd=ws)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    kinds = [json.loads(line)["type"] for line in _events(ws)]
    assert kinds[-4:] == ["approval.granted", "checkpoint", "run.note", "checkpoint"]


def test_an_answer_the_step_cannot_take_leaves_it_waiting(ws: Path) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    before = len(_events(ws))
    typo = irctl("answer", run_id, "custody-hotline", "dnoe", cwd=ws, env=ENV)
    assert typo.returncode == 2, typo.stderr  # refused, and said why
    assert "'dnoe' is not an answer to 'custody-hotline': answer done or failed" in typo.stderr
    assert "nothing was recorded" in typo.stderr
    assert len(_events(ws)) == before  # never journaled as an answer
    yes = irctl("answer", run_id, "custody-hotline", "yes", cwd=ws, env=ENV)
    assert yes.returncode == 2, yes.stderr  # "yes" to "done or failed?" is no answer either
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    assert status["status"] == "waiting"
    step = next(s for s in status["steps"] if s["step"] == "custody-hotline")
    assert step["status"] == "waiting"
    assert step["waiting_for"] == "answer"
    answered = irctl("answer", run_id, "custody-hotline", "done", cwd=ws, env=ENV)
    assert answered.returncode == 3, answered.stderr  # now the sweep waits for two approvers
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    step = next(s for s in status["steps"] if s["step"] == "custody-hotline")
    assert step["status"] == "succeeded"


def test_approve_with_a_key_file_that_is_not_a_key(ws: Path, tmp_path: Path) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    answered = irctl("answer", run_id, "custody-hotline", "done", cwd=ws, env=ENV)
    assert answered.returncode == 3, answered.stderr  # the sweep now waits for approval
    (tmp_path / "notes.txt").write_text("not a key\n")
    for key, message in [
        (tmp_path / "notes.txt", f"error: {tmp_path / 'notes.txt'} is not a PEM private key; "
                                 "give bob's Ed25519 private key file"),
        (tmp_path, f"error: --key {tmp_path}: no such key file"),
    ]:  # fmt: skip
        done = irctl(
            "approve", run_id, "sweep-via-custody", "--as", "bob", "--key", str(key), "--yes",
            cwd=ws, env=ENV,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip() == message


def test_approving_a_step_that_waits_for_nothing_says_so_before_asking_for_a_key(
    ws: Path, tmp_path: Path
) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    nokeys = {**ENV, "IRCTL_KEY_DIR": str(tmp_path / "empty")}  # oncall has no key file there
    for verb in ("approve", "deny"):
        done = irctl(verb, run_id, "sweep-via-custodian", "--reason", "typo",
                     "--yes", cwd=ws, env=nokeys)  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip() == (
            f"error: step 'sweep-via-custodian' of run {run_id} is not waiting for approval"
        )


def test_an_answer_over_16_kib_is_refused_and_nothing_recorded(ws: Path) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    before = len(_events(ws))
    done = irctl("answer", run_id, "custody-hotline", "d" * (16 * 1024 + 1), "--no-resume",
                 cwd=ws, env=ENV)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: the answer to 'custody-hotline' is longer than 16 KiB; an answer is a value for "
        "the step, not a document: put the detail in a ticket and refer to it"
    )
    assert len(_events(ws)) == before


def test_a_second_answer_before_the_run_goes_on_is_refused(ws: Path) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    first = irctl("answer", run_id, "custody-hotline", "done", "--no-resume", "--as", "alice",
                  cwd=ws, env=ENV)  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = irctl("answer", run_id, "custody-hotline", "failed", "--no-resume", "--as", "bob",
                   cwd=ws, env=ENV)  # fmt: skip
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"error: step 'custody-hotline' of run {run_id} already has an answer from alice, used "
        f"when the run goes on (irctl resume {run_id}); if the step asks again, answer then"
    )
    resumed = irctl("resume", run_id, cwd=ws, env=ENV)
    assert resumed.returncode == 3, resumed.stderr  # the sweep waits for two approvers
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    step = next(s for s in status["steps"] if s["step"] == "custody-hotline")
    assert step["status"] == "succeeded"  # alice's answer, not bob's
    kinds = [json.loads(line)["type"] for line in _events(ws)]
    assert kinds.count("step.answered") == 1


ASK = """\
irctl: 1
id: ask
title: Ask, then say
steps:
  - id: confirm
    action: manual.confirm
    with: {prompt: "Has custody cancelled the pending transactions?"}
  - id: say
    action: notify.console
    with: {message: "custody confirmed"}
"""


def test_an_answer_to_a_run_another_process_executes_is_reported_as_recorded(
    tmp_path: Path,
) -> None:
    """Another process (an attached `irctl run`, `irctl serve`) holds the run's executor lock:
    `irctl answer` records the answer, says so and exits 0; the holder goes on with it."""
    from irctl.journal.store import Store

    ws = make_workspace(tmp_path / "ws", {"ask": ASK})
    started = irctl("run", "ask", "--yes", "--unattended", cwd=ws)
    assert started.returncode == 3, started.stderr
    run_id = run_id_from(started)
    store = Store.open(f"sqlite:///{ws / '.irctl' / 'irctl.db'}")
    try:
        with store.run_lock(run_id):  # as the other process holds it
            answered = irctl("answer", run_id, "confirm", "done", cwd=ws)
        assert answered.returncode == 0, answered.stderr
        assert "answer recorded" in answered.stderr
        assert "being executed by another process" in answered.stderr
    finally:
        store.close()
    resumed = irctl("resume", run_id, cwd=ws)
    assert resumed.returncode == 0, resumed.stderr
    kinds = [json.loads(line)["type"] for line in _events(ws)]
    assert kinds.count("step.answered") == 1
    assert kinds.count("run.succeeded") == 1


def test_a_waiting_run_says_for_what_who_and_the_command_then_that_it_is_ready(
    ws: Path,
) -> None:
    run_id = run_id_from(irctl("run", *HOT, "--yes", cwd=ws, env=ENV))
    asked = irctl("status", run_id, cwd=ws)
    assert f"irctl answer {run_id} custody-hotline VALUE (done or failed) --as YOU" in (
        " ".join(asked.stdout.split())
    )
    answered = irctl("answer", run_id, "custody-hotline", "done", cwd=ws, env=ENV)
    assert answered.returncode == 3, answered.stderr
    said = " ".join(answered.stderr.split())
    assert "sweep-via-custody: waits for approval 'treasury-two-person' of digest sha256:" in said
    assert "still needed: 2 more approval(s)" in said
    assert "may approve: bob, alice" in said or "may approve: alice, bob" in said
    assert f"approve with: irctl approve {run_id} sweep-via-custody --as YOU" in said
    approve_sweep(ws, run_id)  # the quorum is reached by others; nobody resumed yet
    status = " ".join(irctl("status", run_id, cwd=ws).stdout.split())
    assert f"ready: irctl resume {run_id}" in status


def test_a_detached_run_that_cannot_start_says_why_in_status(tmp_path: Path) -> None:
    """The background process dies on a secret that does not resolve: `status` says the run
    did not start, with the error it printed, instead of 'created' and nothing more."""
    book = """\
irctl: 1
id: needs-token
title: Needs a token
secrets:
  admin_token: env:DETACH_TEST_TOKEN_NOT_SET
steps:
  - id: tell
    action: notify.console
    with: {message: "token {{ secrets.admin_token }}"}
"""
    ws = make_workspace(tmp_path / "ws", {"needs-token": book})
    env = {"DETACH_TEST_TOKEN_NOT_SET": ""}
    os.environ.pop("DETACH_TEST_TOKEN_NOT_SET", None)
    started = irctl("run", "needs-token", "--yes", "--detach", "--json", cwd=ws, env=env)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    deadline = time.monotonic() + 60
    while True:
        shown = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
        word = shown.get("detached") or ""
        if "ended before the run started" in word or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert shown["status"] == "created"
    assert "ended before the run started" in word, word
    assert "DETACH_TEST_TOKEN_NOT_SET" in word  # the error the background process printed
    assert f"irctl resume {run_id}" in word
    plain = irctl("status", run_id, cwd=ws)
    assert "ended before the run started" in plain.stdout
