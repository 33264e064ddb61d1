"""A local Slack Web API stand-in: the methods irctl calls, on 127.0.0.1.

Re-exported by :mod:`irctl.testing`.  Point the real slack-sdk at it::

    from slack_sdk import WebClient
    from irctl.testing import SlackStandIn

    with SlackStandIn(token="xoxb-test") as slack:
        slack.add_user("U0ALICE", name="alice")
        web = WebClient(token="xoxb-test", base_url=slack.url)
        web.chat_postMessage(channel="#incidents", text="hello")
        assert slack.messages("#incidents")[0].text == "hello"

It answers as Slack does: HTTP 200 with ``{"ok": false, "error": "..."}`` for a
refused call, 429 with ``Retry-After`` when rate-limited.  Faults are injected
with :meth:`SlackStandIn.rate_limit`, :meth:`SlackStandIn.fail_next` and
:meth:`SlackStandIn.down`.  Requests are recorded without the token.

Socket Mode: ``apps.connections.open`` (with the app token) answers
``ws://127.0.0.1:PORT/socket?ticket=...`` on the same port, a plain websocket
(RFC 6455) that says ``hello`` on connect as Slack does.  A test pushes an
envelope with :meth:`SlackStandIn.push_interactive` and reads the client's
acknowledgements in :attr:`SlackStandIn.acks`.  A ``POST`` to
``/response/<id>`` (a ``response_url`` pointing at the stand-in) is recorded in
:attr:`SlackStandIn.responses`.

Rules kept from Slack: ``conversations.*`` take channel ids only, while
``chat.postMessage`` also takes ``#name``; a private channel is invisible to a
bot that is not in it; inviting and setting a topic need the bot in the
channel (``not_in_channel``); posting to a public channel does not (the
``chat:write.public`` scope).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import itertools
import json
import re
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "SlackCall",
    "SlackChannel",
    "SlackMessage",
    "SlackResponse",
    "SlackStandIn",
    "SlackUser",
]

BOT_USER = "UIRCTLBOT"
"""The stand-in's own bot user (``auth.test``'s ``user_id``), a member of channels it creates."""

NAME_LIMIT = 80
TOPIC_LIMIT = 250
_NAME_OK = re.compile(r"^[a-z0-9_-]+$")


@dataclass(frozen=True)
class SlackCall:
    """One Web API call the stand-in received.

    ``params`` merges the query string and the body (JSON or form-encoded) as
    received (form values are strings); a ``token`` parameter is removed.
    ``authorized`` says whether the call carried the stand-in's token; the token
    itself is never recorded.  ``status`` is the HTTP status answered (0 when
    the connection was dropped), ``error`` Slack's error code or None.
    """

    method: str
    params: dict[str, Any]
    body: Literal["json", "form", "none", "other"]
    authorized: bool
    status: int
    ok: bool | None
    error: str | None


@dataclass
class SlackUser:
    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "real_name": self.real_name or self.name,
            "is_bot": self.is_bot,
            "deleted": self.deleted,
            "profile": {"real_name": self.real_name or self.name, "display_name": self.name},
        }


@dataclass
class SlackChannel:
    id: str
    name: str
    is_private: bool = False
    is_archived: bool = False
    topic: str = ""
    members: list[str] = field(default_factory=list)
    creator: str = BOT_USER
    created: int = 0

    def as_json(self, viewer: str = BOT_USER) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private,
            "is_group": False,
            "is_private": self.is_private,
            "is_archived": self.is_archived,
            "is_member": viewer in self.members,
            "created": self.created,
            "creator": self.creator,
            "topic": {"value": self.topic, "creator": "", "last_set": 0},
            "num_members": len(self.members),
        }


@dataclass
class SlackMessage:
    """A message as Slack would show it; ``edits`` holds earlier versions (text, blocks)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    user: str = BOT_USER
    edits: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text}
        data["user"] = self.user
        if self.blocks is not None:
            data["blocks"] = self.blocks
        if self.thread_ts is not None:
            data["thread_ts"] = self.thread_ts
        if self.edits:
            data["edited"] = {"user": self.user, "ts": self.ts}
        return data


@dataclass(frozen=True)
class SlackResponse:
    """One ``POST`` to a ``response_url`` served by the stand-in (``/response/<id>``).

    ``body`` is the parsed JSON body (None when it was not JSON).
    """

    id: str
    body: dict[str, Any] | None
    content_type: str


class _Refused(Exception):
    """Answer ``{"ok": false, "error": code}`` (HTTP 200, as Slack does)."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class _Fault:
    kind: Literal["ratelimit", "status"]
    method: str | None
    status: int
    retry_after: float = 0.0


@dataclass
class _State:
    users: dict[str, SlackUser] = field(default_factory=dict)
    channels: dict[str, SlackChannel] = field(default_factory=dict)
    messages: dict[str, list[SlackMessage]] = field(default_factory=dict)
    calls: list[SlackCall] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    responses: list[SlackResponse] = field(default_factory=list)


Method = Callable[["SlackStandIn", dict[str, Any], str], dict[str, Any]]


# --- parameters ---------------------------------------------------------------------------------


def _str(params: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _Refused("invalid_arguments", response_metadata={"messages": [f"{name} missing"]})
        return ""
    if not isinstance(value, str):
        raise _Refused(
            "invalid_arguments", response_metadata={"messages": [f"{name} not a string"]}
        )
    return value


def _bool(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.lower() in {"1", "true"}


def _int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise _Refused("invalid_arguments") from None


def _blocks(params: dict[str, Any]) -> list[dict[str, Any]] | None:
    value = params.get("blocks")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _Refused("invalid_blocks_format") from None
    if not isinstance(value, list) or not all(isinstance(b, dict) and "type" in b for b in value):
        raise _Refused("invalid_blocks")
    return value


def _page(items: list[Any], params: dict[str, Any]) -> tuple[list[Any], str]:
    limit = max(1, min(_int(params, "limit", 100), 1000))
    cursor = _str(params, "cursor", required=False)
    start = 0
    if cursor:
        try:
            start = int(cursor.removeprefix("next:"))
        except ValueError:
            raise _Refused("invalid_cursor") from None
    chunk = items[start : start + limit]
    following = start + limit
    return chunk, (f"next:{following}" if following < len(items) else "")


# --- methods ------------------------------------------------------------------------------------


def _visible(stand_in: SlackStandIn, channel: SlackChannel) -> bool:
    return not channel.is_private or BOT_USER in channel.members


def _channel_by_id(stand_in: SlackStandIn, params: dict[str, Any]) -> SlackChannel:
    found = stand_in._state.channels.get(_str(params, "channel"))
    if found is None or not _visible(stand_in, found):
        raise _Refused("channel_not_found")
    return found


def _auth_test(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    return {
        "url": "https://irctl-standin.slack.com/",
        "team": "irctl stand-in",
        "user": "irctl",
        "team_id": "T0STANDIN",
        "user_id": BOT_USER,
        "bot_id": "B0STANDIN",
        "is_enterprise_install": False,
    }


def _post_message(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    ref = _str(params, "channel")
    channel = stand_in._state.channels.get(ref)
    if channel is None:
        name = ref.removeprefix("#")
        channel = next((c for c in stand_in._state.channels.values() if c.name == name), None)
    if channel is None or not _visible(stand_in, channel):
        raise _Refused("channel_not_found")
    if channel.is_archived:
        raise _Refused("is_archived")
    text = _str(params, "text", required=False)
    blocks = _blocks(params)
    if not text and not blocks:
        raise _Refused("no_text")
    thread_ts = _str(params, "thread_ts", required=False) or None
    messages = stand_in._state.messages.setdefault(channel.id, [])
    if thread_ts is not None and not any(m.ts == thread_ts for m in messages):
        raise _Refused("thread_not_found")
    message = SlackMessage(channel.id, stand_in._next_ts(), text, blocks, thread_ts)
    messages.append(message)
    return {"channel": channel.id, "ts": message.ts, "message": message.as_json()}


def _update(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    channel = _channel_by_id(stand_in, params)
    ts = _str(params, "ts")
    message = next((m for m in stand_in._state.messages.get(channel.id, []) if m.ts == ts), None)
    if message is None:
        raise _Refused("message_not_found")
    text = _str(params, "text", required=False)
    blocks = _blocks(params)
    if not text and not blocks:
        raise _Refused("no_text")
    message.edits.append({"text": message.text, "blocks": message.blocks})
    message.text = text
    if blocks is not None:
        message.blocks = blocks
    return {"channel": channel.id, "ts": ts, "text": text, "message": message.as_json()}


def check_channel_name(name: str) -> str | None:
    """Slack's error code for an unacceptable channel name, or None when it is fine."""
    if not name:
        return "invalid_name_required"
    if len(name) > NAME_LIMIT:
        return "invalid_name_maxlength"
    if not _NAME_OK.match(name):
        return "invalid_name_specials"
    if not re.search(r"[a-z0-9]", name):
        return "invalid_name_punctuation"
    return None


def _create(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    name = _str(params, "name", required=False)
    problem = check_channel_name(name)
    if problem is not None:
        raise _Refused(problem)
    if any(c.name == name for c in stand_in._state.channels.values()):
        raise _Refused("name_taken")
    channel = stand_in._new_channel(name, private=_bool(params, "is_private"), members=[BOT_USER])
    return {"channel": channel.as_json()}


def _list(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    types = set((_str(params, "types", required=False) or "public_channel").split(","))
    unknown = types - {"public_channel", "private_channel", "mpim", "im"}
    if unknown:
        raise _Refused("invalid_types")
    exclude_archived = _bool(params, "exclude_archived")
    found = [
        c
        for c in stand_in._state.channels.values()
        if _visible(stand_in, c)
        and ("private_channel" if c.is_private else "public_channel") in types
        and not (exclude_archived and c.is_archived)
    ]
    chunk, following = _page(found, params)
    return {
        "channels": [c.as_json() for c in chunk],
        "response_metadata": {"next_cursor": following},
    }


def _info(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    return {"channel": _channel_by_id(stand_in, params).as_json()}


def _join(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    channel = _channel_by_id(stand_in, params)
    if channel.is_archived:
        raise _Refused("is_archived")
    if channel.is_private:
        raise _Refused("method_not_supported_for_channel_type")
    reply: dict[str, Any] = {}
    if BOT_USER in channel.members:
        reply["warning"] = "already_in_channel"
    else:
        channel.members.append(BOT_USER)
    reply["channel"] = channel.as_json()
    return reply


def _invite(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    channel = _channel_by_id(stand_in, params)
    if channel.is_archived:
        raise _Refused("is_archived")
    if BOT_USER not in channel.members:
        raise _Refused("not_in_channel")
    users = [u.strip() for u in _str(params, "users").split(",") if u.strip()]
    if not users:
        raise _Refused("no_user")
    errors: list[dict[str, Any]] = []
    for user in users:
        known = stand_in._state.users.get(user)
        if user == BOT_USER:
            errors.append({"user": user, "ok": False, "error": "cant_invite_self"})
        elif known is None or known.deleted:
            errors.append({"user": user, "ok": False, "error": "user_not_found"})
        elif user in channel.members:
            errors.append({"user": user, "ok": False, "error": "already_in_channel"})
    if errors:  # Slack invites nobody when one of the users cannot be invited
        raise _Refused(errors[0]["error"], errors=errors)
    channel.members.extend(users)
    return {"channel": channel.as_json()}


def _set_topic(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    channel = _channel_by_id(stand_in, params)
    if channel.is_archived:
        raise _Refused("is_archived")
    if BOT_USER not in channel.members:
        raise _Refused("not_in_channel")
    topic = _str(params, "topic", required=False)
    if len(topic) > TOPIC_LIMIT:
        raise _Refused("too_long")
    channel.topic = topic
    return {"channel": channel.as_json()}


def _users_info(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    user = stand_in._state.users.get(_str(params, "user"))
    if user is None:
        raise _Refused("user_not_found")
    return {"user": user.as_json()}


def _users_list(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    chunk, following = _page(list(stand_in._state.users.values()), params)
    return {
        "members": [u.as_json() for u in chunk],
        "response_metadata": {"next_cursor": following},
    }


def _connections_open(stand_in: SlackStandIn, params: dict[str, Any], token: str) -> dict[str, Any]:
    if token != stand_in.app_token:
        raise _Refused("not_allowed_token_type")
    return {"url": stand_in.socket_url}


METHODS: dict[str, Method] = {
    "auth.test": _auth_test,
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "conversations.create": _create,
    "conversations.list": _list,
    "conversations.info": _info,
    "conversations.join": _join,
    "conversations.invite": _invite,
    "conversations.setTopic": _set_topic,
    "users.info": _users_info,
    "users.list": _users_list,
    "apps.connections.open": _connections_open,
}
"""The Web API methods the stand-in answers; any other is ``unknown_method``."""


# --- Socket Mode: a minimal RFC 6455 websocket server -------------------------------------------

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WS_MAX_FRAME = 1 << 20  # bytes; Slack's envelopes and acks are a few KiB
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def websocket_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` answering a ``Sec-WebSocket-Key`` (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()  # noqa: S324


class _ProtocolError(Exception):
    """The client broke RFC 6455; the connection is closed with 1002."""


class _SocketConnection:
    """One Socket Mode client: frames from the server unmasked, from the client masked."""

    def __init__(self, sock: socket.socket, reader: Any) -> None:
        self.sock = sock
        self.reader = reader  # the handler's buffered rfile: it may hold bytes already read
        self._send_lock = threading.Lock()
        self.open = True

    def send(self, opcode: int, data: bytes = b"") -> None:
        length = len(data)
        header = bytes([0x80 | opcode])
        if length < 126:
            header += bytes([length])
        elif length < 1 << 16:
            header += bytes([126]) + struct.pack("!H", length)
        else:
            header += bytes([127]) + struct.pack("!Q", length)
        with self._send_lock:
            if not self.open:
                raise ConnectionError("the Socket Mode connection is closed")
            self.sock.sendall(header + data)

    def send_json(self, value: dict[str, Any]) -> None:
        self.send(OP_TEXT, json.dumps(value).encode("utf-8"))

    def _exactly(self, count: int) -> bytes:
        data: bytes = self.reader.read(count)
        if len(data) < count:
            raise EOFError
        return data

    def receive(self) -> tuple[bool, int, bytes]:
        """The next frame: (final, opcode, unmasked payload); EOFError at the end of the stream."""
        first, second = self._exactly(2)
        if first & 0x70:
            raise _ProtocolError("reserved bits set")
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._exactly(8))
        if not second & 0x80:
            raise _ProtocolError("client frames must be masked")
        if length > _WS_MAX_FRAME:
            raise _ProtocolError("frame too large")
        mask = self._exactly(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._exactly(length)))
        return bool(first & 0x80), first & 0x0F, payload

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once) and shut the socket; the reading thread then ends."""
        with contextlib.suppress(OSError):
            self.send(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8"))
        with self._send_lock:
            self.open = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def _serve_websocket(stand_in: SlackStandIn, connection: _SocketConnection) -> None:
    """Say hello, then read frames until the client closes: acks recorded, pings answered."""
    connection.send_json(
        {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {
                "host": "applink-standin",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": "A0STANDIN"},
        }
    )
    pieces: list[bytes] = []
    try:
        while True:
            final, opcode, payload = connection.receive()
            if opcode == OP_PING:
                connection.send(OP_PONG, payload)
            elif opcode == OP_PONG:
                continue
            elif opcode == OP_CLOSE:
                connection.close(1000)
                return
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                if opcode != OP_CONTINUATION and pieces:
                    raise _ProtocolError("a new message before the last one ended")
                pieces.append(payload)
                if final:
                    text, pieces = b"".join(pieces), []
                    stand_in._received(text)
            else:
                raise _ProtocolError(f"unknown opcode {opcode}")
    except _ProtocolError as exc:
        connection.close(1002, str(exc))
    except (EOFError, OSError, ValueError):
        connection.close(1006)
    finally:
        with stand_in._changed:
            connection.open = False
            stand_in._changed.notify_all()


# --- HTTP ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "SlackStandIn/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``.requests`` instead of a log."""

    def _handle(self) -> None:
        stand_in = self.server.stand_in
        parts = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if stand_in._outage == "drop":
            self._record(stand_in, parts.path, {}, "none", authorized=False, status=0, error=None)
            self.close_connection = True
            return
        if stand_in._outage == "hang":
            stand_in._released.wait()
            self.close_connection = True
            return
        if parts.path == "/socket" and self.command == "GET":
            self._websocket(stand_in)
            return
        if parts.path.startswith("/response/") and self.command == "POST":
            self._response(stand_in, parts.path.removeprefix("/response/"), raw)
            return
        params: dict[str, Any] = {
            k: v[-1] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()
        }
        kind: Literal["json", "form", "none", "other"] = "none"
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw:
            if content_type == "application/json":
                kind = "json"
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    params.update(body)
            elif content_type == "application/x-www-form-urlencoded":
                kind = "form"
                form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
                params.update({k: v[-1] for k, v in form.items()})
            else:
                kind = "other"
        token = params.pop("token", None)
        authorization = self.headers.get("Authorization") or ""
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ").strip()
        name = parts.path.removeprefix("/api/") if parts.path.startswith("/api/") else ""
        status, headers, reply, authorized = stand_in._answer(name, params, token)
        self._record(
            stand_in,
            name or parts.path,
            params,
            kind,
            authorized=authorized,
            status=status,
            error=reply.get("error") if reply.get("ok") is False else None,
            ok=reply.get("ok"),
        )
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for header, value in headers.items():
            self.send_header(header, value)
        self.end_headers()
        self.wfile.write(data)

    def _websocket(self, stand_in: SlackStandIn) -> None:
        """Upgrade to a websocket (RFC 6455, 4.2) and serve Socket Mode on this thread."""
        self.close_connection = True
        key = self.headers.get("Sec-WebSocket-Key") or ""
        upgrade = (self.headers.get("Upgrade") or "").lower()
        connection = (self.headers.get("Connection") or "").lower()
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            key_ok = False
        if (
            upgrade != "websocket"
            or "upgrade" not in connection
            or self.headers.get("Sec-WebSocket-Version") != "13"
            or not key_ok
        ):
            data = b"expected a websocket upgrade\n"
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket_accept(key))
        self.end_headers()
        self.wfile.flush()
        link = _SocketConnection(self.connection, self.rfile)
        with stand_in._changed:
            stand_in._sockets.append(link)
            stand_in._changed.notify_all()
        _serve_websocket(stand_in, link)

    def _response(self, stand_in: SlackStandIn, ident: str, raw: bytes) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with stand_in._changed:
            stand_in._state.responses.append(
                SlackResponse(ident, body if isinstance(body, dict) else None, content_type)
            )
            stand_in._changed.notify_all()
        data = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def _record(
        stand_in: SlackStandIn,
        method: str,
        params: dict[str, Any],
        kind: Literal["json", "form", "none", "other"],
        *,
        authorized: bool,
        status: int,
        error: str | None,
        ok: bool | None = None,
    ) -> None:
        call = SlackCall(method, copy.deepcopy(params), kind, authorized, status, ok, error)
        with stand_in._lock:
            stand_in._state.calls.append(call)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    stand_in: SlackStandIn


class SlackStandIn:
    """The Slack Web API methods irctl uses, answered by a server on 127.0.0.1.

    ``token`` is the bot token calls must carry (``not_authed`` without one,
    ``invalid_auth`` with another); ``app_token`` the app-level token
    ``apps.connections.open`` accepts.  ``port=0`` takes a free port.  Use it as
    a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        token: str = "xoxb-test",  # noqa: S107  (a test server's token, not a secret)
        *,
        port: int = 0,
        app_token: str = "xapp-test",  # noqa: S107
    ) -> None:
        if not token:
            raise ValueError("the stand-in needs a non-empty token")
        self.token = token
        self.app_token = app_token
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # acks, responses, Socket Mode clients
        self._sockets: list[_SocketConnection] = []
        self._state = _State()
        self._ids = itertools.count(1)
        self._ts = itertools.count(1)
        self._outage: Literal["refuse", "drop", "hang"] | None = None
        self._released = threading.Event()
        self._closed = False
        self._state.users[BOT_USER] = SlackUser(BOT_USER, "irctl", "irctl", is_bot=True)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = port
        self._listen()
        self.socket_url = f"ws://127.0.0.1:{self.port}/socket?ticket=standin"
        """What ``apps.connections.open`` answers: the stand-in's own websocket endpoint."""

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.stand_in = self
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-stand-in",
            daemon=True,
        )
        self._thread.start()

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The ``base_url`` for ``WebClient``: ``http://127.0.0.1:PORT/api/``."""
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, ident: str = "1") -> str:
        """A ``response_url`` served by the stand-in; posts to it land in :attr:`responses`."""
        return f"http://127.0.0.1:{self.port}/response/{ident}"

    # answering

    def _answer(
        self, name: str, params: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, str], dict[str, Any], bool]:
        """HTTP status, extra headers, JSON reply and whether the token was good."""
        with self._lock:
            authorized = token in {self.token, self.app_token}
            for index, fault in enumerate(self._state.faults):
                if fault.method is None or fault.method == name:
                    del self._state.faults[index]
                    if fault.kind == "ratelimit":
                        after = fault.retry_after
                        shown = str(int(after)) if after == int(after) else str(after)
                        reply = {"ok": False, "error": "ratelimited"}
                        return 429, {"Retry-After": shown}, reply, authorized
                    return fault.status, {}, {"ok": False, "error": "fatal_error"}, authorized
            method = METHODS.get(name)
            if method is None:
                return 200, {}, {"ok": False, "error": "unknown_method"}, authorized
            if not token:
                return 200, {}, {"ok": False, "error": "not_authed"}, False
            if not authorized:
                return 200, {}, {"ok": False, "error": "invalid_auth"}, False
            if token == self.app_token and name != "apps.connections.open":
                return 200, {}, {"ok": False, "error": "not_allowed_token_type"}, True
            try:
                reply = {"ok": True, **method(self, params, token)}
            except _Refused as refused:
                reply = {"ok": False, "error": refused.error, **refused.extra}
            return 200, {}, reply, authorized

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _new_channel(
        self, name: str, *, private: bool, members: Iterable[str], creator: str = BOT_USER
    ) -> SlackChannel:
        channel = SlackChannel(
            id=f"C{next(self._ids):08d}",
            name=name,
            is_private=private,
            members=list(members),
            creator=creator,
            created=int(time.time()),
        )
        self._state.channels[channel.id] = channel
        self._state.messages[channel.id] = []
        return channel

    # set-up

    def add_user(
        self, user_id: str, *, name: str, real_name: str = "", deleted: bool = False
    ) -> SlackUser:
        """Create (or replace) a workspace member."""
        user = SlackUser(user_id, name, real_name, deleted=deleted)
        with self._lock:
            self._state.users[user_id] = user
        return copy.deepcopy(user)

    def add_channel(
        self,
        name: str,
        *,
        private: bool = False,
        members: Iterable[str] = (),
        topic: str = "",
        archived: bool = False,
        bot_member: bool = False,
    ) -> str:
        """Create a channel as someone else would have (the bot not in it unless asked); its id."""
        problem = check_channel_name(name)
        if problem is not None:
            raise ValueError(f"Slack would refuse the channel name {name!r}: {problem}")
        listed = list(members) + ([BOT_USER] if bot_member else [])
        with self._lock:
            if any(c.name == name for c in self._state.channels.values()):
                raise ValueError(f"a channel named {name!r} exists")
            channel = self._new_channel(name, private=private, members=listed, creator="UHUMAN")
            channel.topic = topic
            channel.is_archived = archived
            return channel.id

    # state, for assertions (copies)

    @property
    def requests(self) -> list[SlackCall]:
        """Every call received so far, in order."""
        with self._lock:
            return list(self._state.calls)

    def calls(self, method: str) -> list[SlackCall]:
        """The calls to one Web API method (``"chat.postMessage"``)."""
        return [c for c in self.requests if c.method == method]

    @property
    def channels(self) -> list[SlackChannel]:
        with self._lock:
            return copy.deepcopy(list(self._state.channels.values()))

    @property
    def users(self) -> list[SlackUser]:
        with self._lock:
            return copy.deepcopy(list(self._state.users.values()))

    def channel(self, ref: str) -> SlackChannel:
        """A channel by id, ``#name`` or name; KeyError if there is none."""
        with self._lock:
            return copy.deepcopy(self._find(ref))

    def messages(self, channel: str) -> list[SlackMessage]:
        """The messages of a channel (id, ``#name`` or name), oldest first."""
        with self._lock:
            return copy.deepcopy(self._state.messages.get(self._find(channel).id, []))

    def _find(self, ref: str) -> SlackChannel:
        if ref in self._state.channels:
            return self._state.channels[ref]
        name = ref.removeprefix("#")
        for channel in self._state.channels.values():
            if channel.name == name:
                return channel
        raise KeyError(f"no channel {ref!r} in the Slack stand-in")

    def render(self) -> str:
        """What Slack would show: each channel's topic, members and messages, as plain text."""
        lines: list[str] = []
        with self._lock:
            for channel in self._state.channels.values():
                lock = " (private)" if channel.is_private else ""
                lines.append(
                    f"#{channel.name}{lock}" + (f" — {channel.topic}" if channel.topic else "")
                )
                names = [
                    self._state.users[m].name if m in self._state.users else m
                    for m in channel.members
                ]
                lines.append(f"  members: {', '.join(names) or '-'}")
                for message in self._state.messages.get(channel.id, []):
                    indent = "    ↳ " if message.thread_ts else "  "
                    edited = " (edited)" if message.edits else ""
                    for number, line in enumerate(_shown_text(message).splitlines() or [""]):
                        lines.append(
                            (indent if number == 0 else " " * len(indent))
                            + line
                            + (edited if number == 0 else "")
                        )
        return "\n".join(lines)

    # Socket Mode and response_url

    def _received(self, text: bytes) -> None:
        """A text message from a Socket Mode client: an ack when it names an envelope."""
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and isinstance(message.get("envelope_id"), str):
            with self._changed:
                self._state.acks.append(message)
                self._changed.notify_all()

    @property
    def connected(self) -> int:
        """How many Socket Mode clients are connected now."""
        with self._lock:
            return sum(1 for link in self._sockets if link.open)

    def wait_connected(self, count: int = 1, timeout: float = 10) -> None:
        """Wait until ``count`` Socket Mode clients are connected; TimeoutError if they are not."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: sum(1 for link in self._sockets if link.open) >= count, timeout
            ):
                raise TimeoutError(f"no {count} Socket Mode client(s) connected in {timeout}s")

    def push(self, envelope: dict[str, Any]) -> None:
        """Send one message to the Socket Mode client that connected last (Slack picks one)."""
        with self._lock:
            live = [link for link in self._sockets if link.open]
        if not live:
            raise RuntimeError("no Socket Mode client is connected to the Slack stand-in")
        live[-1].send_json(envelope)

    def push_interactive(
        self, payload: dict[str, Any], *, accepts_response_payload: bool | None = None
    ) -> str:
        """Deliver an interactivity payload as Slack's Socket Mode does; its ``envelope_id``.

        ``accepts_response_payload`` defaults to Slack's: true for a ``view_submission``
        (the ack may carry ``response_action``), false for ``block_actions``.
        """
        envelope_id = str(uuid.uuid4())
        if accepts_response_payload is None:
            accepts_response_payload = payload.get("type") == "view_submission"
        self.push(
            {
                "envelope_id": envelope_id,
                "type": "interactive",
                "accepts_response_payload": accepts_response_payload,
                "payload": payload,
            }
        )
        return envelope_id

    def disconnect_sockets(self, reason: str = "warning") -> None:
        """Ask every Socket Mode client to reconnect, as Slack does (``type: disconnect``)."""
        with self._lock:
            live = [link for link in self._sockets if link.open]
        for link in live:
            link.send_json({"type": "disconnect", "reason": reason})

    @property
    def acks(self) -> list[dict[str, Any]]:
        """The acknowledgements Socket Mode clients sent (``{"envelope_id", "payload"?}``)."""
        with self._lock:
            return copy.deepcopy(self._state.acks)

    def wait_for_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        """The ack of one envelope, once it arrives; TimeoutError if it does not."""

        def found() -> dict[str, Any] | None:
            return next((a for a in self._state.acks if a["envelope_id"] == envelope_id), None)

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"envelope {envelope_id} was not acknowledged in {timeout}s")
            return copy.deepcopy(found() or {})

    @property
    def responses(self) -> list[SlackResponse]:
        """What was posted to ``/response/<id>`` (``response_url``s at the stand-in), in order."""
        with self._lock:
            return list(self._state.responses)

    def wait_for_responses(self, count: int, timeout: float = 10) -> list[SlackResponse]:
        """The first ``count`` responses, once they arrived; TimeoutError if they did not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._state.responses) >= count, timeout):
                raise TimeoutError(f"{count} response_url post(s) did not arrive in {timeout}s")
            return list(self._state.responses)

    # faults

    def rate_limit(
        self, count: int = 1, *, retry_after: float = 1, method: str | None = None
    ) -> None:
        """Answer the next ``count`` calls (to ``method``, or any) with 429 and ``Retry-After``.

        Slack sends whole seconds; a fraction is sent as it is, to keep tests fast.
        """
        with self._lock:
            self._state.faults.extend([_Fault("ratelimit", method, 429, retry_after)] * count)

    def fail_next(self, count: int = 1, *, status: int = 500, method: str | None = None) -> None:
        """Answer the next ``count`` calls (to ``method``, or any) with ``status``, no effect."""
        with self._lock:
            self._state.faults.extend([_Fault("status", method, status)] * count)

    def down(self, how: Literal["refuse", "drop", "hang"] = "refuse") -> None:
        """Make Slack unreachable until :meth:`up`.

        ``refuse``: stop listening (connection refused); ``drop``: accept and
        close without answering; ``hang``: accept and never answer (the client's
        timeout decides).
        """
        if how not in {"refuse", "drop", "hang"}:
            raise ValueError(f"down(how={how!r}): use 'refuse', 'drop' or 'hang'")
        self._released.clear()
        self._outage = how
        if how == "refuse":
            self._stop_listening()

    def up(self) -> None:
        """End an outage started with :meth:`down`: listen again on the same port."""
        was, self._outage = self._outage, None
        self._released.set()
        if was == "refuse" and not self._closed:
            self._listen()

    def reset(self) -> None:
        """Forget all channels, messages, users (but the bot), calls and queued faults."""
        with self._lock:
            bot = self._state.users[BOT_USER]
            self._state = _State()
            self._state.users[BOT_USER] = bot

    # lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._released.set()
        with self._lock:
            links, self._sockets = self._sockets, []
        for link in links:
            link.close(1001, "going away")
        self._stop_listening()

    def __enter__(self) -> SlackStandIn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SlackStandIn {self.url}>"


def _shown_text(message: SlackMessage) -> str:
    """The text of the message's section/header blocks, else its ``text``."""
    parts: list[str] = []
    for block in message.blocks or []:
        text = block.get("text")
        if isinstance(text, dict) and isinstance(text.get("text"), str):
            parts.append(text["text"])
        for item in block.get("fields") or []:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append(item["text"])
    return "\n".join(parts) if parts else message.text
