"""``irctl serve --socket-mode``: slack-sdk's Socket Mode client, the stand-in's websocket."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from irctl.errors import IrctlError
from irctl.identity import public_key_text
from irctl.serve.slack import SocketMode, make_socket_mode
from irctl.testing import SlackStandIn, recorded_keys
from irctl.workspace import Workspace
from tests.helpers import IRCTL, irctl
from tests.test_serve import Env, click, modal, workspace

APP_TOKEN = "xapp-1-A0STANDIN-test"  # the stand-in's, not a secret
STEP = "sweep-to-cold"


@dataclass
class Socket:
    env: Env  # waiting_run(), decisions(), engine(); its HTTP server is not used
    slack: SlackStandIn
    connection: SocketMode
    logged: list[str] = field(default_factory=list)

    def push(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Deliver one payload; its ack (the client acks every envelope)."""
        return self.slack.wait_for_ack(self.slack.push_interactive(payload))

    def clicked(self, payload: dict[str, Any], responses: int) -> dict[str, Any]:
        """Deliver a button click; the reply it posted to its response_url (the ``responses``th)."""
        ack = self.push(payload)
        assert ack == {"envelope_id": ack["envelope_id"]}  # a block_actions ack has no payload
        body = self.slack.wait_for_responses(responses)[responses - 1].body
        assert body is not None
        assert (body["response_type"], body["replace_original"]) == ("ephemeral", False)
        return body


def slack_workspace(root: Path, slack: SlackStandIn) -> Workspace:
    """No signing secret: Socket Mode needs only the app token."""
    settings = {"app_token": "env:SLACK_APP_TOKEN", "base_url": slack.url}
    return Workspace.find(workspace(root, settings))


@contextlib.contextmanager
def connected(ws: Workspace, slack: SlackStandIn, out: Path) -> Iterator[Socket]:
    logged: list[str] = []
    connection = make_socket_mode(ws, log=logged.append)
    connection.connect()
    try:
        yield Socket(Env(ws, None, out=out), slack, connection, logged)  # type: ignore[arg-type]
    finally:
        connection.close()


@pytest.fixture
def sm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Socket]:
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    with (
        SlackStandIn(app_token=APP_TOKEN) as slack,
        connected(slack_workspace(tmp_path, slack), slack, tmp_path / "out.txt") as socket,
    ):
        yield socket


def test_socket_mode_approvals_count_and_the_step_runs(sm: Socket) -> None:
    assert sm.slack.connected == 1
    assert [c.authorized for c in sm.slack.calls("apps.connections.open")] == [True]
    run_id, digest = sm.env.waiting_run()

    alice = click("approve", run_id, STEP, digest, "U0ALICE", None, sm.slack.response_url("a"))
    assert "approved by alice (Slack identity)" in sm.clicked(alice, 1)["text"]
    bob = click("approve", run_id, STEP, digest, "U0BOB", "ok", sm.slack.response_url("b"))
    assert "approved by bob (Slack identity)" in sm.clicked(bob, 2)["text"]
    assert [r.id for r in sm.slack.responses] == ["a", "b"]

    granted = sm.env.decisions(run_id)
    assert [(d["type"], d["operator"]) for d in granted] == [
        ("approval.granted", "alice"),
        ("approval.granted", "bob"),
    ]
    assert {d["assurance"] for d in granted} == {"slack"}
    assert {d["channel"] for d in granted} == {"slack"}
    assert [d["slack_user"] for d in granted] == ["U0ALICE", "U0BOB"]
    assert granted[1]["reason"] == "ok"
    installation = sm.env.ws.signing_key()
    assert installation is not None
    assert granted[0]["key"] == public_key_text(installation)

    state = sm.env.engine().execute(run_id)
    assert state.status == "succeeded"
    assert recorded_keys(str(sm.env.out)) == ["sweep"]
    assert len(sm.slack.acks) == 2


def test_unknown_user_is_refused_and_every_envelope_is_acked(sm: Socket) -> None:
    run_id, digest = sm.env.waiting_run()
    mallory = click("approve", run_id, STEP, digest, "U0MALLORY", None, sm.slack.response_url())
    reply = sm.clicked(mallory, 1)
    assert "U0MALLORY" in reply["text"]
    assert "not an irctl operator" in reply["text"]

    # not irctl's: acked all the same, nothing recorded
    other = {"type": "block_actions", "user": {"id": "U0ALICE"}, "actions": [{"action_id": "x"}]}
    sm.push(other)
    shortcut = {"type": "shortcut", "user": {"id": "U0ALICE"}, "callback_id": "x"}
    sm.push(shortcut)
    sm.slack.push({"envelope_id": "e-events", "type": "events_api", "payload": {"event": {}}})
    assert sm.slack.wait_for_ack("e-events") == {"envelope_id": "e-events"}
    assert sm.env.decisions(run_id) == []
    assert len(sm.slack.acks) == 4
    # the envelope is acked first and logged after: give the log line a moment
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        "ignored a Socket Mode 'events_api' envelope" in line for line in sm.logged
    ):
        time.sleep(0.02)
    assert any("ignored a Socket Mode 'events_api' envelope" in line for line in sm.logged)


def test_a_redelivered_envelope_is_acked_and_not_handled_again(sm: Socket) -> None:
    """Slack redelivers an envelope it thinks was not acknowledged: one decision only."""
    run_id, digest = sm.env.waiting_run()
    payload = click("deny", run_id, STEP, digest, "U0ALICE", "wrong address")
    envelope = {"envelope_id": "e-deny", "type": "interactive",
                "accepts_response_payload": False, "payload": payload}  # fmt: skip
    sm.slack.push(envelope)
    sm.slack.wait_for_ack("e-deny")
    sm.slack.push({**envelope, "retry_attempt": 1, "retry_reason": "timeout"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(sm.slack.acks) < 2:
        time.sleep(0.02)
    assert [a["envelope_id"] for a in sm.slack.acks] == ["e-deny", "e-deny"]
    while time.monotonic() < deadline and not any("redelivered" in line for line in sm.logged):
        time.sleep(0.02)
    assert any("ignored a redelivered Socket Mode envelope e-deny" in x for x in sm.logged)
    # The first envelope is acknowledged at once and handled after: under load its decision
    # may be recorded after the redelivery was ignored.  Wait for it, then count.
    while time.monotonic() < deadline and not sm.env.decisions(run_id):
        time.sleep(0.02)
    time.sleep(0.2)  # a second decision, if the redelivery were handled, would land by now
    assert [d["operator"] for d in sm.env.decisions(run_id)] == ["alice"]


def test_policy_needing_keys_refuses_socket_mode_clicks(sm: Socket) -> None:
    run_id, digest = sm.env.waiting_run(assurance="key")
    reply = sm.clicked(
        click("approve", run_id, STEP, digest, "U0ALICE", None, sm.slack.response_url()), 1
    )
    assert f"irctl approve {run_id} {STEP} --as alice" in reply["text"]
    assert sm.env.decisions(run_id) == []


def test_modal_denial_reply_is_the_ack_payload(sm: Socket) -> None:
    run_id, digest = sm.env.waiting_run()
    ack = sm.push(modal(run_id, STEP, digest, "U0BOB", "  not our cold wallet "))
    assert ack["payload"] == {"response_action": "clear"}
    (denied,) = sm.env.decisions(run_id)
    assert (denied["type"], denied["operator"]) == ("approval.denied", "bob")
    assert (denied["reason"], denied["assurance"]) == ("not our cold wallet", "slack")

    again = sm.push(modal(run_id, STEP, digest, "U0BOB", "again"))
    assert again["payload"]["response_action"] == "errors"
    assert "bob already denied" in again["payload"]["errors"]["why"]
    assert len(sm.env.decisions(run_id)) == 1
    assert sm.slack.responses == []  # a modal's reply is the ack, nothing is posted


def test_reconnects_when_slack_asks(sm: Socket) -> None:
    sm.slack.disconnect_sockets()
    deadline = time.monotonic() + 10
    while len(sm.slack.calls("apps.connections.open")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    sm.slack.wait_connected()
    run_id, digest = sm.env.waiting_run()
    alice = click("approve", run_id, STEP, digest, "U0ALICE", None, sm.slack.response_url())
    assert "approved by alice" in sm.clicked(alice, 1)["text"]
    assert len(sm.slack.calls("apps.connections.open")) == 2


def test_connect_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SlackStandIn(app_token=APP_TOKEN) as slack:
        ws = slack_workspace(tmp_path, slack)
        monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
        with pytest.raises(IrctlError, match="SLACK_APP_TOKEN is not set"):
            make_socket_mode(ws)
        monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-test")  # the bot token by mistake
        connection = make_socket_mode(ws)
        with pytest.raises(IrctlError, match=r"not_allowed_token_type.*app-level token"):
            connection.connect()
        monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
        slack.socket_url = f"ws://127.0.0.1:{slack.port}/not-a-websocket"
        connection = make_socket_mode(ws)
        with pytest.raises(IrctlError, match=r"websocket .* did not open: .*handshake"):
            connection.connect()
        connection = make_socket_mode(ws)
        slack.down("refuse")
        with pytest.raises(IrctlError, match="cannot reach Slack"):
            connection.connect()


def test_cli_socket_mode_until_ctrl_c(tmp_path: Path) -> None:
    with SlackStandIn(app_token=APP_TOKEN) as slack:
        ws = slack_workspace(tmp_path, slack)
        env = {**os.environ, "IRCTL_WORKSPACE": str(ws.root), "SLACK_APP_TOKEN": APP_TOKEN}
        env.pop("SLACK_SIGNING_SECRET", None)
        process = subprocess.Popen(
            [IRCTL, "serve", "--socket-mode"],
            cwd=ws.root,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            assert "connected to Slack in Socket Mode" in line, line
            assert slack.connected == 1
            out = tmp_path / "out.txt"
            helper = Env(ws, None, out=out)  # type: ignore[arg-type]
            run_id, digest = helper.waiting_run()
            for user in ("U0ALICE", "U0BOB"):
                envelope = slack.push_interactive(
                    click("approve", run_id, STEP, digest, user, None, slack.response_url(user))
                )
                slack.wait_for_ack(envelope)
            replies = slack.wait_for_responses(2)
            assert all(r.body and "(Slack identity)" in r.body["text"] for r in replies)
            assert sorted(d["operator"] for d in helper.decisions(run_id)) == ["alice", "bob"]
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=15) == 0
            rest = process.stderr.read()
            assert "stopped" in rest
            assert "recorded:" in rest
            assert helper.engine().execute(run_id).status == "succeeded"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_cli_socket_mode_refused_token(tmp_path: Path) -> None:
    with SlackStandIn(app_token=APP_TOKEN) as slack:
        ws = slack_workspace(tmp_path, slack)
        result = irctl("serve", "--socket-mode", cwd=ws.root, env={"SLACK_APP_TOKEN": "xapp-bad"})
        assert result.returncode == 2, result.stderr
        assert "Slack refused apps.connections.open: invalid_auth" in result.stderr
        assert "xapp-bad" not in result.stderr


# -- the stand-in's websocket, spoken to byte by byte (RFC 6455) ----------------------------------


def _frame(opcode: int, data: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    assert len(data) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return bytes([0x80 | opcode, 0x80 | len(data)]) + mask + masked


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    first, second = exactly(2)
    assert not second & 0x80  # the server never masks
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", exactly(2))
    return first & 0x0F, exactly(length)


def test_standin_websocket_protocol() -> None:
    with SlackStandIn() as slack:
        url = urllib.parse.urlsplit(slack.socket_url)
        assert (url.scheme, url.port) == ("ws", slack.port)
        with socket.create_connection(("127.0.0.1", slack.port), timeout=5) as sock:
            sock.sendall(
                f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101 ")
            # RFC 6455 section 1.3's example key and its answer
            assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
            opcode, hello = _read_frame(sock)
            assert opcode == 0x1
            assert json.loads(hello)["type"] == "hello"
            slack.wait_connected()

            sock.sendall(_frame(0x9, b"are you there"))
            assert _read_frame(sock) == (0xA, b"are you there")
            envelope_id = slack.push_interactive({"type": "block_actions"})
            opcode, pushed = _read_frame(sock)
            assert json.loads(pushed)["envelope_id"] == envelope_id
            assert json.loads(pushed)["accepts_response_payload"] is False
            sock.sendall(_frame(0x1, json.dumps({"envelope_id": envelope_id}).encode()))
            assert slack.wait_for_ack(envelope_id) == {"envelope_id": envelope_id}

            sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
            assert _read_frame(sock) == (0x8, struct.pack("!H", 1000))
        deadline = time.monotonic() + 5
        while slack.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slack.connected == 0
        with pytest.raises(RuntimeError, match="no Socket Mode client"):
            slack.push_interactive({"type": "block_actions"})

        # an unmasked client frame is a protocol error: close 1002
        with socket.create_connection(("127.0.0.1", slack.port), timeout=5) as sock:
            sock.sendall(
                b"GET /socket?ticket=standin HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += sock.recv(1)
            _read_frame(sock)  # hello
            sock.sendall(bytes([0x81, 2]) + b"{}")
            opcode, data = _read_frame(sock)
            assert (opcode, struct.unpack("!H", data[:2])[0]) == (0x8, 1002)

        # a plain GET is not upgraded
        with socket.create_connection(("127.0.0.1", slack.port), timeout=5) as sock:
            sock.sendall(b"GET /socket HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
