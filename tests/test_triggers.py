"""Alerts that start runbooks: a real ``irctl serve`` process, real HTTP posts, a real store.

Signatures and tokens are computed here independently of irctl; each refusal is checked to
start nothing; the runs an alert starts run their ``auto`` steps only, until an operator
adopts them with a signed act (a forged adoption row stops the run instead).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from irctl.journal.events import Event
from irctl.workspace import Workspace
from tests.helpers import IRCTL, irctl, keyed_operators, make_workspace, settled

SECRET = "generic-alert-secret-for-tests"
TOKEN = "alertmanager-token-for-tests"
PD_SECRET = "pagerduty-secret-for-tests"

RUNBOOK = """\
irctl: 1
id: contain
title: Contain a hot wallet
params:
  wallet: {type: string, pattern: "^0x[0-9a-f]+$"}
  amount: {type: number, default: 0}
objectives: {contain: 1m}  # detected 90 s before the alert is sent: missed
approvals:
  treasury: {quorum: 1, roles: [treasury]}
steps:
  - id: halt
    action: notify.console
    auto: true
    tags: [contain]
    with: {message: "halt withdrawals for {{ params.wallet }}"}
  - id: pause
    action: notify.console
    auto: true
    tags: [contain]
    with: {message: "pause signers, {{ params.amount }} at risk"}
  - id: sweep
    action: notify.console
    approval: treasury
    with: {message: "sweep {{ params.wallet }} to cold storage"}
"""

TRIGGERS = """\
triggers:
  hot:
    source: generic
    secret: env:TEST_ALERT_SECRET
    runbook: contain
    match: {labels.severity: critical}
    params: {wallet: "{{ alert.labels.wallet }}", amount: alert.fields.amount}
    incident: "hot-{{ alert.labels.wallet }}"
    max_body: 4096
  am:
    source: alertmanager
    secret: env:TEST_AM_TOKEN
    runbook: contain
    match: {labels.severity: critical}
    params: {wallet: alert.labels.wallet}
    incident: "am-{{ alert.labels.wallet }}"
  pd:
    source: pagerduty
    secret: env:TEST_PD_SECRET
    runbook: contain
    match: {labels.urgency: high}
    params: {wallet: "0xfeed"}
    incident: "pd-{{ alert.fields.incident.id }}"
"""


@dataclass
class Served:
    ws: Path
    url: str
    env: dict[str, str]
    log: list[str]

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(self.url + path, body, sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def alert(self, body: bytes, stamp: int | None = None, trigger: str = "hot") -> Any:
        stamp = int(time.time()) if stamp is None else stamp
        return self.post(f"/alerts/{trigger}", body, signed(body, stamp))

    def irctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return irctl(*args, cwd=self.ws, env=self.env)

    def runs(self) -> list[dict[str, Any]]:
        result = self.irctl("runs", "list", "--json")
        assert result.returncode == 0, result.stderr
        found: list[dict[str, Any]] = json.loads(result.stdout)
        return found

    def status(self, run_id: str) -> dict[str, Any]:
        result = self.irctl("status", run_id, "--json")
        assert result.returncode == 0, result.stderr
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def settled(self, run_id: str) -> dict[str, Any]:
        """The run's status once the server's thread has taken it to its first wait."""
        return settled(self.status, run_id)

    def events(self, run_id: str) -> list[Event]:
        return Workspace.find(self.ws).reader.events(run_id)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())


def signed(body: bytes, stamp: int, secret: str = SECRET) -> dict[str, str]:
    """The generic webhook's headers, computed as its documentation says."""
    mac = hmac.new(secret.encode(), b"v1:" + str(stamp).encode() + b":" + body, hashlib.sha256)
    return {"X-Irctl-Timestamp": str(stamp), "X-Irctl-Signature": "v1=" + mac.hexdigest()}


def generic(
    ident: str, *, wallet: str = "0xabc", severity: str = "critical", detected: str | None = None
) -> bytes:
    when = detected or (datetime.now(UTC) - timedelta(seconds=90)).isoformat()
    return json.dumps({
        "id": ident, "detected_at": when, "summary": "outflow above threshold",
        "labels": {"severity": severity, "wallet": wallet}, "fields": {"amount": 1250000},
    }).encode()  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    keys = tmp_path / "keys"
    operators = keyed_operators(keys, {"alice": "security-lead", "bob": "treasury"})
    ws = make_workspace(tmp_path / "ws", {"contain": RUNBOOK}, extra=operators + TRIGGERS)
    env = {
        **os.environ, "IRCTL_WORKSPACE": str(ws), "IRCTL_KEY_DIR": str(keys),
        "TEST_ALERT_SECRET": SECRET, "TEST_AM_TOKEN": TOKEN, "TEST_PD_SECRET": PD_SECRET,
    }  # fmt: skip
    env.pop("IRCTL_KEY", None)
    process = subprocess.Popen(
        [IRCTL, "serve", "--port", "0"], cwd=ws, env=env, stderr=subprocess.PIPE, text=True
    )
    log: list[str] = []
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "listening on http://127.0.0.1:" in line, line + process.stderr.read()
        assert "/slack/interactivity" not in line  # alerts only: no Slack settings needed
        url = line.split("listening on ", 1)[1].split("/alerts/", 1)[0]
        stream = process.stderr
        reader = threading.Thread(target=lambda: log.extend(stream), daemon=True)
        reader.start()  # the server's log, read as it comes (a full pipe would block it)
        yield Served(ws, url, env, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_alert_starts_the_auto_steps_and_the_rest_waits_for_adoption(served: Served) -> None:
    detected = (datetime.now(UTC) - timedelta(seconds=90)).replace(microsecond=0)
    status, answer = served.alert(generic("a-1", detected=detected.isoformat()))
    assert status == 202, answer
    assert answer["started"] is True
    assert answer["incident"] == "hot-0xabc"
    run_id = answer["run"]

    state = served.settled(run_id)
    assert state["status"] == "waiting"
    assert state["initiator"] == "trigger:hot"
    assert state["incident"] == "hot-0xabc"
    assert state["params"] == {"wallet": "0xabc", "amount": 1250000}
    steps = {s["step"]: s["status"] for s in state["steps"]}
    assert steps == {"halt": "succeeded", "pause": "succeeded"}  # sweep never started
    assert state["awaiting_adoption"] == "sweep"
    assert state["trigger"]["detected_at"] == detected.isoformat()
    assert state["time_to_start"] >= 90
    assert state["time_to_contain"] >= state["time_to_start"]
    created = served.events(run_id)[0].data
    assert created["trigger"]["name"] == "hot"
    assert created["trigger"]["detected_at"] == detected.isoformat()

    shown = served.irctl("status", run_id)
    assert f"waiting for a person to adopt: irctl adopt {run_id} --as OP" in shown.stdout
    assert "time_to_contain" in shown.stdout

    # resumed before anyone adopted it: still only the auto steps
    early = served.irctl("resume", run_id, "--as", "alice", "--unattended", "--no-wait")
    assert early.returncode == 3, early.stderr
    assert "irctl adopt" in early.stderr
    assert "sweep" not in {s["step"] for s in served.status(run_id)["steps"]}

    adopted = served.irctl("adopt", run_id, "--as", "alice")
    assert adopted.returncode == 0, adopted.stderr
    again = served.irctl("adopt", run_id, "--as", "bob")
    assert again.returncode == 2
    assert "already adopted by alice" in again.stderr

    waiting = served.irctl("resume", run_id, "--as", "alice", "--unattended", "--no-wait")
    assert waiting.returncode == 3, waiting.stderr
    sweep = {s["step"]: s for s in served.status(run_id)["steps"]}["sweep"]
    assert sweep["waiting_for"] == "approval"
    approve = served.irctl("approve", run_id, "sweep", "--as", "bob", "--yes")
    assert approve.returncode == 0, approve.stderr
    done = served.irctl("resume", run_id, "--as", "alice", "--unattended")
    assert done.returncode == 0, done.stderr
    final = served.status(run_id)
    assert final["status"] == "succeeded"
    assert final["adopted_by"] == "alice"

    verified = served.irctl("transcript", "verify", run_id)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    markdown = served.irctl("transcript", "export", run_id, "--format", "md")
    assert markdown.returncode == 0, markdown.stderr
    assert "Time to contain" in markdown.stdout
    assert "adopted by alice" in markdown.stdout


def test_a_second_alert_for_the_incident_is_recorded_on_its_run(served: Served) -> None:
    status, first = served.alert(generic("b-1"))
    assert status == 202
    status, second = served.alert(generic("b-2"))  # another id, the same wallet: one incident
    assert status == 200, second
    assert second == {"alert": "b-2", "run": first["run"], "incident": "hot-0xabc",
                      "started": False}  # fmt: skip
    assert [run["run_id"] for run in served.runs()] == [first["run"]]
    served.settled(first["run"])
    received = [e for e in served.events(first["run"]) if e.type == "alert.received"]
    assert [e.data["alert"] for e in received] == ["b-2"]
    assert "deduplicated" in served.metrics()


def test_refused_alerts_start_nothing_and_are_counted(served: Served) -> None:
    now = int(time.time())
    body = generic("c-1")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases = [
        ("no signature", served.post("/alerts/hot", body), 401),
        ("bad signature", served.post("/alerts/hot", body, signed(body, now, "wrong")), 401),
        ("altered body", served.post("/alerts/hot", generic("c-2"), signed(body, now)), 401),
        ("stale", served.alert(body, now - 6 * 60), 401),
        ("future", served.alert(body, now + 10 * 60), 401),
        ("oversize", served.alert(generic("c-3") + b" " * 5000), 413),
        ("unknown trigger", served.alert(body, trigger="nope"), 404),
        ("unmatched", served.alert(generic("c-4", severity="info")), 422),
        ("not json", served.alert(b"{not json"), 400),
        ("no detected_at", served.alert(json.dumps({"id": "c-5", "summary": "x"}).encode()), 400),
        ("bad param", served.alert(generic("c-6", wallet="not-a-wallet")), 422),
        ("detected later", served.alert(generic("c-7", detected=later)), 400),
    ]
    for what, (status, answer), expected in cases:
        assert status == expected, (what, answer)
        assert answer.get("started") is None, what
    assert served.runs() == []
    metrics = served.metrics()
    for outcome in ("unauthenticated", "stale", "oversize", "unmatched", "malformed"):
        assert f'outcome="{outcome}"' in metrics, metrics
    assert 'trigger="",outcome="unknown_trigger"' in metrics  # the name sent is not a label


def test_a_replayed_alert_is_refused(served: Served) -> None:
    body = generic("d-1", wallet="0xd1")
    sent_at = int(time.time())
    headers = signed(body, sent_at)
    status, first = served.post("/alerts/hot", body, headers)
    assert status == 202
    status, answer = served.post("/alerts/hot", body, headers)  # the same request again
    assert status == 409
    assert "replayed" in answer["error"]
    status, answer = served.alert(body, sent_at - 1)  # signed anew: the same alert id
    assert status == 409
    assert "alert id" in answer["error"]
    assert [run["run_id"] for run in served.runs()] == [first["run"]]
    served.settled(first["run"])
    assert 'outcome="replayed"} 2' in served.metrics()


def test_a_forged_adoption_row_lets_no_step_run(served: Served) -> None:
    status, answer = served.alert(generic("e-1", wallet="0xe1"))
    assert status == 202
    run_id = answer["run"]
    assert served.settled(run_id)["status"] == "waiting"

    # Someone who can write the store adds an adoption "by alice", signed with another key.
    from irctl.identity import generate_private_key
    from irctl.record.approvals import sign_act

    events = served.events(run_id)
    stranger = generate_private_key(served.ws / "stranger.key")
    data = sign_act(stranger, run_id, "run.adopted", {"by": "alice", "trigger": "hot"})
    data["key"] = events[0].data["operators"]["alice"]["key"]  # claims alice's key
    forged = Event.make(run_id, events[-1].seq + 1, "run.adopted", data, events[-1].hash)
    with sqlite3.connect(served.ws / ".irctl" / "irctl.db") as db:
        db.execute(
            "INSERT INTO irctl_events (run_id, seq, ts, type, line, hash) VALUES (?,?,?,?,?,?)",
            (run_id, forged.seq, forged.ts, forged.type, forged.line, forged.hash),
        )

    result = served.irctl("resume", run_id, "--as", "alice", "--unattended", "--no-wait")
    assert result.returncode == 1, result.stderr
    state = served.status(run_id)
    assert state["status"] == "tampered"
    assert "sweep" not in {s["step"] for s in state["steps"]}


def test_alertmanager_alerts_each_match_on_their_own(served: Served) -> None:
    starts = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()

    def alert(wallet: str, severity: str, status: str = "firing") -> dict[str, Any]:
        return {
            "status": status, "labels": {"alertname": "HotWalletOutflow", "severity": severity,
                                         "wallet": wallet},
            "annotations": {"summary": f"outflow from {wallet}"}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": f"fp-{wallet}",
        }  # fmt: skip

    body = json.dumps({
        "version": "4", "groupKey": "{}:{alertname=\"HotWalletOutflow\"}", "status": "firing",
        "receiver": "irctl", "alerts": [
            alert("0xa1", "critical"), alert("0xa2", "warning"),
            alert("0xa3", "critical", "resolved"),
        ],
    }).encode()  # fmt: skip
    status, _ = served.post("/alerts/am", body, {"Authorization": "Bearer wrong"})
    assert status == 401
    status, _ = served.post("/alerts/am", body)
    assert status == 401
    assert served.runs() == []

    status, answer = served.post("/alerts/am", body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 202, answer
    results = {r["alert"]: r for r in answer["alerts"]}
    assert results["fp-0xa1"]["started"] is True
    assert "matches no rule" in results["fp-0xa2"]["error"]
    assert "fp-0xa3" not in results  # resolved: starts nothing
    run_id = results["fp-0xa1"]["run"]
    state = served.settled(run_id)
    assert state["trigger"]["detected_at"] == starts
    assert state["params"]["wallet"] == "0xa1"

    # Alertmanager repeats the notification: nothing new; basic auth works as well
    basic = "Basic " + base64.b64encode(TOKEN.encode()).decode()
    status, answer = served.post("/alerts/am", body, {"Authorization": basic})
    assert status == 200, answer
    assert [run["run_id"] for run in served.runs()] == [run_id]


def test_pagerduty_v3_webhooks_are_verified(served: Served) -> None:
    occurred = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    body = json.dumps({"event": {
        "id": "01DEN4HPBQAJ1KS8CVHJQ4ZBSN", "event_type": "incident.triggered",
        "resource_type": "incident", "occurred_at": occurred,
        "data": {"id": "PGR0VU2", "type": "incident", "title": "Hot wallet drain",
                 "urgency": "high", "service": {"summary": "wallets"},
                 "incident": {"id": "PGR0VU2"}},
    }}).encode()  # fmt: skip
    wrong = hmac.new(b"other", body, hashlib.sha256).hexdigest()
    status, _ = served.post("/alerts/pd", body, {"X-PagerDuty-Signature": f"v1={wrong}"})
    assert status == 401
    right = hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    both = f"v1={wrong},v1={right}"  # as while a secret rotates
    status, answer = served.post("/alerts/pd", body, {"X-PagerDuty-Signature": both})
    assert status == 202, answer
    assert answer["incident"] == "pd-PGR0VU2"
    assert served.settled(answer["run"])["status"] == "waiting"


def test_an_adoption_needs_the_adopters_own_key(served: Served, tmp_path: Path) -> None:
    status, answer = served.alert(generic("f-1", wallet="0xf1"))
    assert status == 202
    run_id = answer["run"]
    served.settled(run_id)
    other = tmp_path / "other.key"
    from irctl.identity import generate_private_key

    generate_private_key(other)
    result = served.irctl("adopt", run_id, "--as", "alice", "--key", str(other))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not [e for e in served.events(run_id) if e.type == "run.adopted"]
    person = served.irctl("adopt", run_id, "--as", "alice")
    assert person.returncode == 0, person.stderr


def test_the_secrets_reach_neither_the_log_nor_the_journal(served: Served) -> None:
    body = generic("g-1", wallet="0xa9")
    status, answer = served.alert(body)
    assert status == 202
    served.post("/alerts/hot", body, signed(body, int(time.time()), "guessed"))
    served.post("/alerts/am", b"{}", {"Authorization": f"Bearer {TOKEN}x"})
    served.settled(answer["run"])
    lines = "\n".join(e.line for e in served.events(answer["run"]))
    deadline = time.monotonic() + 10
    while not any("unauthenticated" in line for line in served.log) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    logged = "".join(served.log)
    assert "alert accepted (trigger hot" in logged
    assert "unauthenticated" in logged
    for secret in (SECRET, TOKEN, PD_SECRET):
        assert secret not in logged
        assert secret not in lines


def test_the_html_export_shows_the_times_from_detection(served: Served) -> None:
    status, answer = served.alert(generic("h-1", wallet="0xb7"))
    assert status == 202
    served.settled(answer["run"])
    out = served.ws / "run.html"
    result = served.irctl("transcript", "export", answer["run"], "--format", "html", "-o",
                          str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert "<th>Detected</th>" in html
    assert "<th>Time to contain</th>" in html
    assert "trigger hot, generic" in html
    assert "Timed from the detection of the alert that started the run" in html
    assert '<span class="fail">MISSED</span>' in html  # timed from the run's start: met


def test_validate_checks_the_triggers_against_the_runbooks(tmp_path: Path) -> None:
    extra = (
        TRIGGERS
        + """\
  typo:
    source: generic
    secret: env:X
    runbook: contian
  wrong:
    source: generic
    secret: env:X
    runbook: contain
    params: {walet: "{{ alert.id }}"}
"""
    )
    ws = make_workspace(tmp_path / "ws", {"contain": RUNBOOK}, extra=extra)
    result = irctl("validate", cwd=ws)
    assert result.returncode == 2
    assert "triggers.typo.runbook: unknown runbook 'contian' (did you mean 'contain'?)" in (
        result.stdout
    )
    assert "unknown param 'walet' for runbook 'contain' (did you mean 'wallet'?)" in result.stdout
    assert "runbook 'contain' needs param 'wallet'" in result.stdout
    assert "3 problems" in result.stdout


def test_only_a_listed_trigger_can_start_a_run(tmp_path: Path) -> None:
    from irctl.engine.engine import Engine
    from irctl.errors import UsageError
    from irctl.runbook.loader import load_runbook_text

    keys = tmp_path / "keys"
    operators = keyed_operators(keys, {"alice": "security-lead", "bob": "treasury"})
    root = make_workspace(tmp_path / "ws", {"contain": RUNBOOK}, extra=operators + TRIGGERS)
    ws = Workspace.find(root)
    engine = Engine(ws.store, config=ws.config, signing_key=ws.signing_key(), workspace=root)
    model = load_runbook_text(RUNBOOK, "contain.yaml")
    alert = {"name": "ghost", "alert": "x", "detected_at": "2026-11-21T03:00:00+00:00"}
    with pytest.raises(UsageError, match=r"names no trigger in irctl\.yaml"):
        engine.create_run(model, RUNBOOK, {"wallet": "0x1"}, initiator="trigger:ghost",
                          trigger=alert)  # fmt: skip
    with pytest.raises(UsageError, match="only irctl serve starts a run"):
        engine.create_run(model, RUNBOOK, {"wallet": "0x1"}, initiator="trigger:hot")
    assert ws.store.runs() == []


def test_whoever_adopts_the_run_may_not_approve_its_steps(served: Served) -> None:
    status, answer = served.alert(generic("i-1", wallet="0xc3"))
    assert status == 202
    run_id = answer["run"]
    served.settled(run_id)
    adopted = served.irctl("adopt", run_id, "--as", "bob", "--resume")  # bob holds treasury
    assert adopted.returncode == 3, adopted.stderr
    sweep = {s["step"]: s for s in served.status(run_id)["steps"]}["sweep"]
    assert sweep["waiting_for"] == "approval"
    approve = served.irctl("approve", run_id, "sweep", "--as", "bob", "--yes")
    assert approve.returncode == 2
    assert f"bob adopted run {run_id} and cannot approve" in approve.stderr
    assert not [e for e in served.events(run_id) if e.type == "approval.granted"]


def test_serve_refuses_to_start_with_a_trigger_it_cannot_serve(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    operators = keyed_operators(keys, {"alice": "security-lead", "bob": "treasury"})
    ws = make_workspace(tmp_path / "ws", {"contain": RUNBOOK}, extra=operators + TRIGGERS)
    env = {k: v for k, v in os.environ.items() if k != "TEST_ALERT_SECRET"}  # the one unset
    env.update(TEST_AM_TOKEN=TOKEN, TEST_PD_SECRET=PD_SECRET, IRCTL_WORKSPACE=str(ws))
    result = subprocess.run(
        [IRCTL, "serve", "--port", "0"], cwd=ws, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "triggers.hot.secret" in result.stderr
    assert "TEST_ALERT_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr

    bare = make_workspace(tmp_path / "bare", {"contain": RUNBOOK}, extra=TRIGGERS)
    alone = irctl("serve", "--port", "0", cwd=bare, env={"TEST_ALERT_SECRET": SECRET})
    assert alone.returncode == 2
    assert "need operators with keys" in alone.stderr


def test_the_schema_and_validate_know_auto_and_triggers(tmp_path: Path) -> None:
    from irctl.runbook.loader import json_schema

    step = json_schema("runbook")["$defs"]["Step"]["properties"]
    assert step["auto"]["type"] == "boolean"
    config = json_schema("config")
    assert "triggers" in config["properties"]
    trigger = config["$defs"]["Trigger"]["properties"]
    assert trigger["source"]["enum"] == ["generic", "alertmanager", "pagerduty", "sns"]

    bad = RUNBOOK.replace(
        "    approval: treasury\n", "    approval: treasury\n    auto: true\n"
    ).replace("  - id: pause\n", "  - id: ask\n    action: manual.confirm\n    auto: true\n"
              "    with: {prompt: done?}\n  - id: pause\n")  # fmt: skip
    ws = make_workspace(tmp_path / "ws", {"contain": bad})
    result = irctl("validate", cwd=ws)
    assert result.returncode == 2
    assert "a step with 'auto: true' cannot carry an 'approval'" in result.stdout
    assert "a manual step (manual.confirm) cannot be 'auto: true'" in result.stdout


PARALLEL = """\
irctl: 1
id: contain
title: Contain, side by side
params:
  wallet: {type: string}
steps:
  - id: both
    parallel:
      - id: halt
        action: notify.console
        auto: true
        with: {message: "halt {{ params.wallet }}"}
      - id: tell
        action: notify.console
        with: {message: "tell the desk"}
  - id: after
    action: notify.console
    auto: true
    with: {message: "after the block"}
"""


def test_in_a_parallel_block_only_the_auto_steps_run_before_adoption(tmp_path: Path) -> None:
    from irctl.engine.engine import Engine
    from irctl.identity import load_private_key
    from irctl.runbook.loader import load_runbook_text

    keys = tmp_path / "keys"
    operators = keyed_operators(keys, {"alice": "security-lead"})
    root = make_workspace(tmp_path / "ws", {"contain": PARALLEL}, extra=operators + TRIGGERS)
    ws = Workspace.find(root)
    engine = Engine(ws.store, config=ws.config, signing_key=ws.signing_key(), workspace=root)
    model = load_runbook_text(PARALLEL, "contain.yaml")
    alert = {"name": "hot", "source": "generic", "alert": "p-1",
             "detected_at": datetime.now(UTC).isoformat()}  # fmt: skip
    run_id = engine.create_run(model, PARALLEL, {"wallet": "0x1"}, initiator="trigger:hot",
                               incident="p-1", trigger=alert)  # fmt: skip
    state = engine.execute(run_id)
    assert state.status == "waiting"
    assert state.awaiting_adoption == "tell"
    assert state.steps["halt"].status == "succeeded"
    assert "tell" not in state.steps
    assert "after" not in state.steps  # the block waits, and the run with it

    engine.adopt(run_id, operator="alice", private_key=load_private_key(keys / "alice.key"))
    done = Engine(ws.store, config=ws.config, signing_key=ws.signing_key()).execute(run_id)
    assert done.status == "succeeded"
    assert [done.steps[s].status for s in ("halt", "tell", "both", "after")] == ["succeeded"] * 4


def test_serve_takes_up_a_run_an_alert_started_that_never_ran(tmp_path: Path) -> None:
    """The server stopped between creating the run and running its auto steps."""
    from irctl.engine.engine import Engine
    from irctl.runbook.loader import load_runbook_text

    keys = tmp_path / "keys"
    operators = keyed_operators(keys, {"alice": "security-lead", "bob": "treasury"})
    root = make_workspace(tmp_path / "ws", {"contain": RUNBOOK}, extra=operators + TRIGGERS)
    ws = Workspace.find(root)
    engine = Engine(ws.store, config=ws.config, signing_key=ws.signing_key(), workspace=root)
    alert = {"name": "hot", "source": "generic", "alert": "r-1",
             "detected_at": datetime.now(UTC).isoformat()}  # fmt: skip
    run_id = engine.create_run(
        load_runbook_text(RUNBOOK, "contain.yaml"), RUNBOOK, {"wallet": "0xaa", "amount": 1},
        initiator="trigger:hot", incident="hot-0xaa", trigger=alert,
    )  # fmt: skip
    person = irctl("status", run_id, "--json", cwd=root)
    assert json.loads(person.stdout)["status"] == "created"
    # a person's run whose row someone rewrote to look like an alert's: not the server's
    from irctl.identity import load_private_key

    theirs = engine.create_run(
        load_runbook_text(RUNBOOK, "contain.yaml"), RUNBOOK, {"wallet": "0xbb", "amount": 1},
        initiator="alice", incident="hot-0xbb", starter_key=load_private_key(keys / "alice.key"),
    )  # fmt: skip
    ws.store.close()
    with sqlite3.connect(root / ".irctl" / "irctl.db") as db:
        db.execute("UPDATE irctl_runs SET initiator = 'trigger:hot' WHERE id = ?", (theirs,))
    env = {**os.environ, "IRCTL_WORKSPACE": str(root), "TEST_ALERT_SECRET": SECRET,
           "TEST_AM_TOKEN": TOKEN, "TEST_PD_SECRET": PD_SECRET}  # fmt: skip
    process = subprocess.Popen(
        [IRCTL, "serve", "--port", "0"], cwd=root, env=env, stderr=subprocess.DEVNULL
    )
    try:
        served = Served(root, "", env, [])
        state = served.settled(run_id)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert state["status"] == "waiting"
    assert {s["step"]: s["status"] for s in state["steps"]} == {
        "halt": "succeeded", "pause": "succeeded",
    }  # fmt: skip
    left = json.loads(irctl("status", theirs, "--json", cwd=root).stdout)
    assert left["status"] == "created"  # the forged row did not make it the server's


def test_a_run_a_person_started_runs_as_usual_and_has_nothing_to_adopt(served: Served) -> None:
    started = served.irctl(
        "run", "contain", "-p", "wallet=0xdd", "--as", "alice", "--yes", "--unattended",
        "--no-wait", "--incident", "hot-0xdd",
    )  # fmt: skip
    assert started.returncode == 3, started.stderr  # the sweep waits for its approval
    run_id = served.runs()[0]["run_id"]
    state = served.status(run_id)
    assert "awaiting_adoption" not in state
    assert {s["step"]: s["status"] for s in state["steps"]}["sweep"] == "waiting"
    adopt = served.irctl("adopt", run_id, "--as", "bob")
    assert adopt.returncode == 2
    assert f"run {run_id} was started by alice, not by an alert" in adopt.stderr

    # an alert for the same incident is recorded on the person's run: no second run
    status, answer = served.alert(generic("j-1", wallet="0xdd"))
    assert status == 200, answer
    assert answer["run"] == run_id
    assert len(served.runs()) == 1


def test_an_alertmanager_notification_matching_no_rule_is_refused(served: Served) -> None:
    starts = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    alerts = [
        {"status": "firing", "labels": {"severity": "warning", "wallet": f"0x{n}"},
         "annotations": {}, "startsAt": starts, "fingerprint": f"w-{n}"}
        for n in (1, 2)
    ]  # fmt: skip
    body = json.dumps({"version": "4", "groupKey": "g", "alerts": alerts}).encode()
    status, answer = served.post("/alerts/am", body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 422, answer
    assert [r["started"] for r in answer["alerts"]] == [None, None]
    assert served.runs() == []


def test_long_alert_ids_that_share_a_beginning_are_two_alerts(served: Served) -> None:
    shared = "x" * 400
    status, first = served.alert(generic(shared + "-1", wallet="0xe5"))
    assert status == 202, first
    status, second = served.alert(generic(shared + "-2", wallet="0xe6"))
    assert status == 202, second  # not taken for a replay of the first
    assert first["run"] != second["run"]
    served.settled(first["run"])
    served.settled(second["run"])


def test_a_drill_of_the_same_incident_does_not_take_its_alerts(served: Served) -> None:
    """A tabletop run (a drill, a rehearsal, or someone's on purpose) naming the incident an
    alert will have: the alert still starts a live run, and is not swallowed by the drill."""
    drill = served.irctl("run", "contain", "--mode", "tabletop", "--incident", "hot-0xd7",
                         "-p", "wallet=0xd7", "--yes", "--unattended", "--as", "alice")  # fmt: skip
    assert drill.returncode in (0, 3), drill.stderr
    tabletop = [run["run_id"] for run in served.runs()]
    assert len(tabletop) == 1
    status, answer = served.alert(generic("t-1", wallet="0xd7"))
    assert status == 202, answer
    assert answer["started"] is True
    assert answer["run"] not in tabletop
    assert served.settled(answer["run"])["mode"] == "live"


def test_a_pagerduty_event_older_than_its_id_is_remembered_is_refused(served: Served) -> None:
    """Event ids are remembered for 7 days: a genuinely signed event older than that could be
    a replay whose id was forgotten, so it starts nothing."""
    occurred = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    body = json.dumps({"event": {
        "id": "01OLDEVENTOLDEVENTOLDEVENT", "event_type": "incident.triggered",
        "resource_type": "incident", "occurred_at": occurred,
        "data": {"id": "POLD", "type": "incident", "title": "Hot wallet drain",
                 "urgency": "high", "incident": {"id": "POLD"}},
    }}).encode()  # fmt: skip
    right = hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, answer = served.post("/alerts/pd", body, {"X-PagerDuty-Signature": f"v1={right}"})
    assert status == 401, answer
    assert "older than the 7 days" in answer["error"]
    assert served.runs() == []
