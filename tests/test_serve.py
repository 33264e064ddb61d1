"""``irctl serve``: a real server in a thread, requests signed exactly as Slack signs them."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, load_private_key, public_key_text
from irctl.runbook.loader import load_runbook_text
from irctl.serve.slack import Server, make_server, response_url_allowed
from irctl.testing import SlackStandIn, recorded_keys
from irctl.workspace import Workspace
from tests.helpers import irctl, make_workspace
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

OPERATORS = {
    "oncall": (["security-oncall"], "U0ONCALL"),
    "alice": (["security-lead"], "U0ALICE"),
    "bob": (["treasury"], "U0BOB"),
}

RUNBOOK = """\
irctl: 1
kind: runbook
id: sweep
title: Sweep the hot wallet
params:
  out: {type: string}
approvals:
  two-person:
    quorum: 2
    roles: [treasury, security-lead]
    min_assurance: ASSURANCE
steps:
  - id: sweep-to-cold
    action: testing.record
    approval: two-person
    with: {path: "{{ params.out }}", key: sweep}
"""


def slack_headers(body: bytes, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    """Slack's v0 signature, computed here independently of the server."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(payload: dict[str, Any]) -> bytes:
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def click(
    action: str,
    run: str,
    step: str,
    digest: str,
    user: str,
    reason: str | None = None,
    response_url: str | None = None,
) -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it; without ``response_url`` unless given
    (tests must not post to hooks.slack.com)."""
    value = json.dumps({"run": run, "step": step, "digest": digest})
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "team": {"id": "T0TEAM"},
        "actions": [{"type": "button", "action_id": action, "block_id": "decide", "value": value}],
        "state": {"values": {"why": {"reason": {"type": "plain_text_input", "value": reason}}}},
    }
    if response_url is not None:
        payload["response_url"] = response_url
    return payload


def button(
    action: str,
    run: str,
    step: str,
    digest: str,
    user: str,
    reason: str | None = None,
    response_url: str | None = None,
) -> bytes:
    return form(click(action, run, step, digest, user, reason, response_url))


def modal(run: str, step: str, digest: str, user: str, reason: str) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "user": {"id": user},
        "view": {
            "callback_id": "irctl-deny",
            "private_metadata": json.dumps({"run": run, "step": step, "digest": digest}),
            "state": {"values": {"why": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    }


def modal_deny(run: str, step: str, digest: str, user: str, reason: str) -> bytes:
    return form(modal(run, step, digest, user, reason))


@dataclass
class Env:
    ws: Workspace
    server: Server
    now: list[float] = field(default_factory=lambda: [time.time()])
    out: Path = Path()

    def post(
        self, body: bytes, headers: dict[str, str] | None = None, path: str = "/slack/interactivity"
    ) -> tuple[int, str]:
        sent = slack_headers(body, int(self.now[0])) if headers is None else headers
        request = urllib.request.Request(self.server.url + path, body, sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def engine(self) -> Engine:
        return Engine(self.ws.store, config=self.ws.config, signing_key=self.ws.signing_key())

    def waiting_run(self, assurance: str = "slack") -> tuple[str, str]:
        """A run waiting for approval of sweep-to-cold; (run id, digest)."""
        text = RUNBOOK.replace("ASSURANCE", assurance)
        engine = self.engine()
        starter = load_private_key(self.ws.root.parent / "keys" / "oncall.key")
        run_id = engine.create_run(
            load_runbook_text(text, "sweep.yaml"), text, {"out": str(self.out)},
            initiator="oncall", starter_key=starter,
        )  # fmt: skip
        state = engine.execute(run_id)
        assert state.status == "waiting"
        request = state.steps["sweep-to-cold"].approval
        assert request is not None
        return run_id, str(request["digest"])

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        return [
            {"type": e.type, **e.data}
            for e in self.ws.store.events(run_id)
            if e.type in ("approval.granted", "approval.denied")
        ]


def workspace(root: Path, slack: dict[str, str] | None = None) -> Path:
    """Three operators with Slack ids; ``integrations.slack`` as given (a signing secret)."""
    lines = ["operators:"]
    for name, (roles, slack_id) in OPERATORS.items():
        public = public_key_text(generate_private_key(root / "keys" / f"{name}.key"))
        lines.append(
            f'  {name}: {{roles: [{", ".join(roles)}], slack: {slack_id}, key: "{public}"}}'
        )
    settings = {"signing_secret": "env:SLACK_SIGNING_SECRET"} if slack is None else slack
    lines += ["integrations:", "  slack:"]
    lines += [f'    {name}: "{value}"' for name, value in settings.items()]
    return make_workspace(root / "ws", extra="\n".join(lines) + "\n")


@contextlib.contextmanager
def serving(ws: Workspace, out: Path, log: Callable[[str], None] | None = None) -> Iterator[Env]:
    now = [time.time()]
    server = make_server(ws, host="127.0.0.1", port=0, clock=lambda: now[0], log=log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Env(ws, server, now, out)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        server.interactivity.wait_for_responses()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    with serving(Workspace.find(workspace(tmp_path)), tmp_path / "out.txt") as started:
        yield started


def test_signed_slack_approvals_count_and_the_step_runs(env: Env) -> None:
    run_id, digest = env.waiting_run()
    status, text = env.post(button("approve", run_id, "sweep-to-cold", digest, "U0ALICE"))
    assert status == 200
    reply = json.loads(text)
    assert reply["response_type"] == "ephemeral"
    assert "approved by alice (Slack identity)" in reply["text"]
    assert "'sweep-to-cold' still needs 1 more approval(s)" in reply["text"]
    env.now[0] += 1  # a second click, a second later
    status, text = env.post(button("approve", run_id, "sweep-to-cold", digest, "U0BOB", "ok"))
    assert status == 200, text
    assert "approved by bob (Slack identity)" in json.loads(text)["text"]
    assert "has the approvals it needs" in json.loads(text)["text"]

    granted = env.decisions(run_id)
    assert [(d["type"], d["operator"]) for d in granted] == [
        ("approval.granted", "alice"),
        ("approval.granted", "bob"),
    ]
    assert {d["assurance"] for d in granted} == {"slack"}
    assert {d["channel"] for d in granted} == {"slack"}
    assert [d["slack_user"] for d in granted] == ["U0ALICE", "U0BOB"]
    assert granted[1]["reason"] == "ok"
    installation = env.ws.signing_key()
    assert installation is not None
    assert granted[0]["key"] == public_key_text(installation)  # attested by the installation key

    state = env.engine().execute(run_id)
    assert state.status == "succeeded"
    assert recorded_keys(str(env.out)) == ["sweep"]


def test_forged_signature_is_rejected(env: Env) -> None:
    run_id, digest = env.waiting_run()
    body = button("approve", run_id, "sweep-to-cold", digest, "U0ALICE")
    forged = slack_headers(body, int(env.now[0]), secret="not-the-signing-secret")
    status, text = env.post(body, forged)
    assert status == 401
    assert "bad signature" in text
    assert SECRET not in text
    status, _ = env.post(body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401
    assert env.decisions(run_id) == []


def test_body_altered_after_signing_is_rejected(env: Env) -> None:
    run_id, digest = env.waiting_run()
    signed = button("approve", run_id, "sweep-to-cold", digest, "U0ALICE")
    altered = button("approve", run_id, "sweep-to-cold", digest, "U0BOB")
    status, _ = env.post(altered, slack_headers(signed, int(env.now[0])))
    assert status == 401
    assert env.decisions(run_id) == []
    # the same headers with the body they were made for are accepted: the body made the difference
    status, _ = env.post(signed, slack_headers(signed, int(env.now[0])))
    assert status == 200
    assert [d["operator"] for d in env.decisions(run_id)] == ["alice"]


def test_exact_replay_is_rejected(env: Env) -> None:
    run_id, digest = env.waiting_run()
    body = button("deny", run_id, "sweep-to-cold", digest, "U0ALICE", "wrong address")
    headers = slack_headers(body, int(env.now[0]))
    first, _ = env.post(body, headers)
    second, text = env.post(body, headers)
    assert (first, second) == (200, 401)
    assert "replayed" in text
    assert len(env.decisions(run_id)) == 1


def test_request_older_than_five_minutes_is_rejected(env: Env) -> None:
    run_id, digest = env.waiting_run()
    body = button("approve", run_id, "sweep-to-cold", digest, "U0ALICE")
    headers = slack_headers(body, int(env.now[0]))
    env.now[0] += 6 * 60  # the same signed request, replayed 6 minutes later
    status, text = env.post(body, headers)
    assert status == 401
    assert "5 minutes" in text
    assert env.decisions(run_id) == []
    env.now[0] -= 6 * 60  # sent in time, the very same request is accepted
    status, _ = env.post(body, headers)
    assert status == 200
    assert [d["operator"] for d in env.decisions(run_id)] == ["alice"]


def test_unknown_slack_user_is_told_and_nothing_is_recorded(env: Env) -> None:
    run_id, digest = env.waiting_run()
    status, text = env.post(button("approve", run_id, "sweep-to-cold", digest, "U0MALLORY"))
    assert status == 200
    reply = json.loads(text)
    assert reply["response_type"] == "ephemeral"
    assert "U0MALLORY" in reply["text"]
    assert "not an irctl operator" in reply["text"]
    assert env.decisions(run_id) == []


def test_policy_needing_keys_refuses_slack_and_names_the_cli(env: Env) -> None:
    run_id, digest = env.waiting_run(assurance="key")
    status, text = env.post(button("approve", run_id, "sweep-to-cold", digest, "U0ALICE"))
    assert status == 200
    message = json.loads(text)["text"]
    assert f"irctl approve {run_id} sweep-to-cold --as alice" in message
    assert "signed with the operator's own key" in message
    assert env.decisions(run_id) == []


def test_stale_digest_is_refused(env: Env) -> None:
    run_id, digest = env.waiting_run()
    stale = "sha256:" + "0" * 64
    status, text = env.post(button("approve", run_id, "sweep-to-cold", stale, "U0ALICE"))
    assert status == 200
    message = json.loads(text)["text"]
    assert "changed since this message was posted" in message
    assert digest in message
    assert env.decisions(run_id) == []


def test_deny_needs_a_reason_and_the_modal_records_it(env: Env) -> None:
    run_id, digest = env.waiting_run()
    status, text = env.post(button("deny", run_id, "sweep-to-cold", digest, "U0BOB"))
    assert status == 200
    assert "needs a reason" in json.loads(text)["text"]
    assert env.decisions(run_id) == []

    body = modal_deny(run_id, "sweep-to-cold", digest, "U0BOB", "  not our cold wallet ")
    status, text = env.post(body)
    assert status == 200
    assert json.loads(text) == {"response_action": "clear"}
    (denied,) = env.decisions(run_id)
    assert denied["type"] == "approval.denied"
    assert (denied["operator"], denied["reason"]) == ("bob", "not our cold wallet")
    assert (denied["assurance"], denied["channel"]) == ("slack", "slack")

    # bob decided already: the modal shows why under the reason box, nothing more is recorded
    env.now[0] += 1
    status, text = env.post(modal_deny(run_id, "sweep-to-cold", digest, "U0BOB", "again"))
    reply = json.loads(text)
    assert reply["response_action"] == "errors"
    assert "bob already denied" in reply["errors"]["why"]
    assert len(env.decisions(run_id)) == 1

    state = env.engine().execute(run_id)
    assert state.status == "failed"
    assert "denied (bob: not our cold wallet)" in str(state.steps["sweep-to-cold"].error)
    assert not env.out.exists()


def test_healthz_and_unknown_paths(env: Env) -> None:
    with urllib.request.urlopen(env.server.url + "/healthz", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"ok\n")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(env.server.url + "/nope", timeout=10)
    assert caught.value.code == 404
    status, _ = env.post(b"payload=%7B%7D", path="/slack/other")
    assert status == 404


def test_oversized_body_is_refused(env: Env) -> None:
    run_id, _ = env.waiting_run()
    status, _ = env.post(b"payload=" + b"x" * (65 * 1024))
    assert status == 413
    assert env.decisions(run_id) == []


def test_make_server_errors_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from irctl.errors import IrctlError

    ws = Workspace.find(workspace(tmp_path))
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    with pytest.raises(IrctlError, match="SLACK_SIGNING_SECRET is not set"):
        make_server(ws, port=0)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    ws.installation_key_path.unlink()
    with pytest.raises(IrctlError, match="irctl init"):
        make_server(ws, port=0)


def test_port_in_use_is_a_usage_error(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from irctl.errors import UsageError

    port = env.server.server_address[1]
    with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
        make_server(env.ws, port=port)


def test_cli_help_and_missing_signing_secret(tmp_path: Path) -> None:
    shown = irctl("serve", "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "/slack/interactivity" in shown.stdout
    assert "signing_secret" in shown.stdout

    ws = make_workspace(tmp_path / "bare", extra="operators:\n  alice: {slack: U0ALICE}\n")
    result = irctl("serve", "--port", "0", cwd=ws)
    assert result.returncode == 2, result.stderr
    assert "no Slack signing secret" in result.stderr
    assert "signing_secret: env:SLACK_SIGNING_SECRET" in result.stderr

    socket_mode = irctl("serve", "--socket-mode", cwd=ws)
    assert socket_mode.returncode == 2
    assert "no Slack app-level token" in socket_mode.stderr
    assert "app_token: env:SLACK_APP_TOKEN" in socket_mode.stderr


def test_cli_serves_until_ctrl_c(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from tests.helpers import IRCTL

    ws = workspace(tmp_path)
    env = {**os.environ, "IRCTL_WORKSPACE": str(ws), "SLACK_SIGNING_SECRET": SECRET}
    process = subprocess.Popen(
        [IRCTL, "serve", "--port", "0"], cwd=ws, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "listening on http://127.0.0.1:" in line, line
        url = line.split("listening on ", 1)[1].split("/slack/interactivity")[0]
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            assert response.read() == b"ok\n"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- response_url ---------------------------------------------------------------


def test_button_reply_is_posted_to_response_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    logged: list[str] = []
    with SlackStandIn() as slack:
        settings = {"signing_secret": "env:SLACK_SIGNING_SECRET", "base_url": slack.url}
        ws = Workspace.find(workspace(tmp_path, settings))
        with serving(ws, tmp_path / "out.txt", log=logged.append) as env:
            run_id, digest = env.waiting_run()
            body = button(
                "approve", run_id, "sweep-to-cold", digest, "U0ALICE",
                response_url=slack.response_url("alice"),
            )  # fmt: skip
            status, text = env.post(body)
            assert status == 200
            (posted,) = slack.wait_for_responses(1)
            assert posted.id == "alice"
            assert posted.content_type == "application/json"
            assert posted.body == {
                "response_type": "ephemeral",
                "replace_original": False,
                "text": json.loads(text)["text"],
            }
            assert "approved by alice (Slack identity)" in posted.body["text"]

            # a refusal is shown the same way
            env.now[0] += 1
            body = button(
                "approve", run_id, "sweep-to-cold", digest, "U0MALLORY",
                response_url=slack.response_url("mallory"),
            )  # fmt: skip
            assert env.post(body)[0] == 200
            mallory = slack.wait_for_responses(2)[1]
            assert mallory.body is not None
            assert "not an irctl operator" in mallory.body["text"]

            # a response_url elsewhere is never posted to; the decision still counts
            env.now[0] += 1
            with SlackStandIn() as elsewhere:
                body = button(
                    "approve", run_id, "sweep-to-cold", digest, "U0BOB",
                    response_url=elsewhere.response_url("bob"),
                )  # fmt: skip
                assert env.post(body)[0] == 200
                env.server.interactivity.wait_for_responses()
                assert elsewhere.responses == []
            assert [d["operator"] for d in env.decisions(run_id)] == ["alice", "bob"]
            assert any("response_url not posted to" in line for line in logged)
            assert len(slack.responses) == 2


def test_response_url_failure_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    logged: list[str] = []
    with SlackStandIn() as slack:
        settings = {"signing_secret": "env:SLACK_SIGNING_SECRET", "base_url": slack.url}
        ws = Workspace.find(workspace(tmp_path, settings))
        with serving(ws, tmp_path / "out.txt", log=logged.append) as env:
            run_id, digest = env.waiting_run()
            slack.down("refuse")
            body = button(
                "approve", run_id, "sweep-to-cold", digest, "U0ALICE",
                response_url=slack.response_url(),
            )  # fmt: skip
            status, text = env.post(body)
            assert status == 200
            assert "approved by alice" in json.loads(text)["text"]
            env.server.interactivity.wait_for_responses()
            slack.up()
    assert [d["operator"] for d in env.decisions(run_id)] == ["alice"]
    failures = [line for line in logged if "response_url post to 127.0.0.1:" in line]
    assert len(failures) == 1, logged
    assert "failed (the decision stands)" in failures[0]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.slack.com/actions/T0/1/abc", True),
        ("https://HOOKS.Slack.com./actions/T0/1/abc", True),
        ("https://hooks.slack.com:443/actions/T0/1/abc", True),
        ("http://hooks.slack.com/actions/T0/1/abc", False),  # not https
        ("https://hooks.slack.com:8443/actions", False),
        ("https://slack.com.evil.example/actions", False),
        ("https://evilslack.com/actions", False),
        ("https://user:pw@hooks.slack.com/actions", False),
        ("https://evil.example/?hooks.slack.com", False),
        ("file:///etc/passwd", False),
        ("http://127.0.0.1:4000/response/1", True),  # the configured base_url's host
        ("http://127.0.0.1:4001/response/1", False),
        ("https://127.0.0.1:4000/response/1", False),
        ("http://localhost:4000/response/1", False),
        ("not a url", False),
        ("http://[::1/x", False),
    ],
)
def test_response_url_allowlist(url: str, allowed: bool) -> None:
    assert response_url_allowed(url, "http://127.0.0.1:4000/api/") is allowed


def test_a_replay_to_another_replica_is_rejected(env: Env) -> None:
    """Two `irctl serve` processes on one store: a request used at one is refused at the other."""
    run_id, digest = env.waiting_run()
    body = button("approve", run_id, "sweep-to-cold", digest, "U0ALICE")
    headers = slack_headers(body, int(env.now[0]))
    assert env.post(body, headers)[0] == 200
    replica_ws = Workspace.find(env.ws.root)
    with serving(replica_ws, env.out) as replica:
        replica.now[0] = env.now[0]
        status, text = replica.post(body, headers)
    assert status == 401
    assert "replayed" in text
    assert [d["operator"] for d in env.decisions(run_id)] == ["alice"]


def test_a_decision_in_slack_updates_the_approval_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No run is attached: `irctl serve` itself brings the request's message up to date."""
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-serve-test")
    with SlackStandIn(token="xoxb-serve-test") as slack:
        slack.add_channel("incidents", bot_member=True)
        settings = {
            "signing_secret": "env:SLACK_SIGNING_SECRET", "token": "env:SLACK_BOT_TOKEN",
            "channel": "#incidents", "base_url": slack.url,
        }  # fmt: skip
        ws = Workspace.find(workspace(tmp_path, settings))
        with serving(ws, tmp_path / "out.txt") as env:
            run_id, digest = env.waiting_run()
            (message,) = [m for m in slack.messages("#incidents") if "Approval needed" in m.text]
            assert "alice (Slack)" not in json.dumps(message.blocks)
            status, _ = env.post(button("approve", run_id, "sweep-to-cold", digest, "U0ALICE"))
            assert status == 200
            env.server.interactivity.wait_for_responses()
        (updated,) = [m for m in slack.messages("#incidents") if m.ts == message.ts]
        shown = json.dumps(updated.blocks)
        assert "alice (Slack)" in shown
        assert '"action_id": "approve"' in shown  # one of two: still open for bob
        updates = [c for c in slack.calls("chat.update") if c.params.get("ts") == message.ts]
        assert len(updates) == 1


def test_a_signed_cli_approval_updates_the_slack_message_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-cli-test")
    with SlackStandIn(token="xoxb-cli-test") as slack:
        slack.add_channel("incidents", bot_member=True)
        settings = {"token": "env:SLACK_BOT_TOKEN", "channel": "#incidents", "base_url": slack.url}
        ws = Workspace.find(workspace(tmp_path, settings))
        env = Env(ws, None, out=tmp_path / "out.txt")  # type: ignore[arg-type]
        run_id, _ = env.waiting_run(assurance="key")
        (message,) = [m for m in slack.messages("#incidents") if "Approval needed" in m.text]
        key = tmp_path / "keys" / "bob.key"
        done = irctl("approve", run_id, "sweep-to-cold", "--as", "bob", "--key", str(key),
                     "--yes", cwd=ws.root, env={"SLACK_BOT_TOKEN": "xoxb-cli-test"})  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "warning" not in done.stderr
        (updated,) = [m for m in slack.messages("#incidents") if m.ts == message.ts]
        assert "bob (signed key)" in json.dumps(updated.blocks)
    # Slack gone: the decision is recorded all the same, with a warning
    key = tmp_path / "keys" / "alice.key"
    done = irctl("approve", run_id, "sweep-to-cold", "--as", "alice", "--key", str(key), "--yes",
                 cwd=ws.root, env={"SLACK_BOT_TOKEN": "xoxb-cli-test"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Slack approval message was not updated (the decision stands)" in done.stderr
    assert [d["operator"] for d in env.decisions(run_id)] == ["bob", "alice"]


def test_a_decision_from_slack_is_anchored_like_one_from_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: dict[str, Any]
) -> None:
    """The checkpoint sealing a Slack decision reaches the WORM anchor, as a CLI one does."""
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    s3 = boto("s3", aws)
    s3.create_bucket(Bucket="anchors", ObjectLockEnabledForBucket=True)
    root = workspace(tmp_path)
    with (root / "irctl.yaml").open("a", encoding="utf-8") as config:
        config.write(
            f"  aws: {{region: us-east-1, endpoint_url: '{aws['endpoint_url']}', "
            "max_attempts: 1}\n  anchor: {bucket: anchors, retain_until: 1d}\n"
        )
    with serving(Workspace.find(root), tmp_path / "out.txt") as started:
        run_id, digest = started.waiting_run()

        def anchored() -> set[int]:
            listed = s3.list_objects_v2(Bucket="anchors").get("Contents", [])
            return {int(o["Key"].rsplit("/", 1)[1].removesuffix(".json")) for o in listed}

        before = anchored()
        status, text = started.post(button("approve", run_id, "sweep-to-cold", digest, "U0ALICE"))
        assert status == 200, text
        events = started.ws.store.events(run_id)
        assert [e.type for e in events[-2:]] == ["approval.granted", "checkpoint"]
        assert anchored() == before | {events[-1].seq}
