"""Test helpers for irctl and for integration authors.

:class:`ExchangeAdminStub` is a real HTTP server on 127.0.0.1 standing in for
an exchange's admin API (the endpoints the hot-wallet-compromise runbook
calls); it records what it received and keeps the state tests assert on::

    from irctl.testing import ExchangeAdminStub, run_action

    with ExchangeAdminStub(token="t0k3n") as exchange:
        run_action("http.request", {
            "method": "POST", "url": exchange.url + "/withdrawals/halt",
            "headers": {"Authorization": "Bearer t0k3n"}, "json": {"chain": "ethereum"},
        })
        assert exchange.halted == {"ethereum"}

This module is also the ``testing`` integration: ``testing.record`` (a side
effect with a probe, for crash and exactly-once tests), ``testing.record_noprobe``
and ``testing.fail``.  Run the stub on its own with::

    python -m irctl.testing serve-exchange --port 8099 --token t0k3n
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irctl.actions import ActionContext, Probe, action, default_registry
from irctl.errors import ActionError

__all__ = [
    "ExchangeAdminStub",
    "RecordedRequest",
    "context",
    "recorded_keys",
    "run_action",
]

REDACTED = "••••"


# --- driving actions -----------------------------------------------------------------------


def context(**overrides: Any) -> ActionContext:
    """An :class:`ActionContext` for calling an action directly (``run_id``/``step_id`` preset)."""
    values: dict[str, Any] = {"run_id": "test-run", "step_id": "test-step"}
    values.update(overrides)
    return ActionContext(**values)


def run_action(
    name: str,
    inputs: dict[str, Any],
    ctx: ActionContext | None = None,
    *,
    simulate: bool = False,
) -> dict[str, Any]:
    """Find an action by name as the engine does, validate ``inputs`` and run (or simulate) it."""
    found = default_registry.get(name)
    parsed = found.parse(inputs)
    ctx = ctx or context()
    return found.call_simulate(parsed, ctx) if simulate else found.call_run(parsed, ctx)


# --- the exchange admin API stand-in ---------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stub received; the ``Authorization`` value is replaced by ``••••``."""

    method: str
    path: str
    query: dict[str, list[str]]
    json: Any
    headers: dict[str, str]
    status: int
    authorized: bool


@dataclass
class _State:
    halted: set[str] = field(default_factory=set)
    pending: dict[tuple[str, str], int] = field(default_factory=dict)
    revoked_scopes: list[str] = field(default_factory=list)
    two_fa_resets: list[list[str] | None] = field(default_factory=list)
    sweeps: list[dict[str, str]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: list[tuple[int, str | None, Any]] = field(default_factory=list)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Route = Callable[["ExchangeAdminStub", dict[str, Any], dict[str, list[str]]], tuple[int, Any]]


def _chain(body: dict[str, Any]) -> str:
    chain = body.get("chain")
    if not isinstance(chain, str) or not chain:
        raise _BadRequest(400, "body must have a non-empty string 'chain'")
    return chain


def _halt(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    chain = _chain(body)
    changed = chain not in stub._state.halted
    stub._state.halted.add(chain)
    return 200, {"chain": chain, "halted": True, "changed": changed}


def _resume(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    chain = _chain(body)
    changed = chain in stub._state.halted
    stub._state.halted.discard(chain)
    return 200, {"chain": chain, "halted": False, "changed": changed}


def _status(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    chains = query.get("chain")
    if chains:
        return 200, {"chain": chains[0], "halted": chains[0] in stub._state.halted}
    return 200, {"halted_chains": sorted(stub._state.halted)}


def _cancel(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    chain = _chain(body)
    wallet = body.get("wallet")
    if not isinstance(wallet, str) or not wallet:
        raise _BadRequest(400, "body must have a non-empty string 'wallet'")
    cancelled = stub._state.pending.pop((chain, wallet), 0)
    return 200, {"chain": chain, "wallet": wallet, "cancelled": cancelled}


def _revoke(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    scope = body.get("scope")
    if not isinstance(scope, str) or not scope:
        raise _BadRequest(400, "body must have a non-empty string 'scope' (e.g. 'all')")
    stub._state.revoked_scopes.append(scope)
    return 200, {"scope": scope, "revoked": True}


def _force_2fa(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    users = body.get("users")
    if users is not None and not (
        isinstance(users, list) and all(isinstance(u, str) for u in users)
    ):
        raise _BadRequest(400, "'users' must be a list of strings (leave it out for everyone)")
    stub._state.two_fa_resets.append(users)
    return 200, {"scope": "all" if users is None else "users", "users": users or []}


def _sweep(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    chain = _chain(body)
    wallet, to = body.get("wallet"), body.get("to")
    if not isinstance(wallet, str) or not wallet or not isinstance(to, str) or not to:
        raise _BadRequest(400, "body must have non-empty strings 'wallet' and 'to'")
    stub._state.sweeps.append({"chain": chain, "wallet": wallet, "to": to})
    number = len(stub._state.sweeps)
    return 200, {"chain": chain, "from": wallet, "to": to, "tx_id": f"sweep-{number:04d}"}


ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/withdrawals/halt"): _halt,
    ("POST", "/withdrawals/resume"): _resume,
    ("GET", "/withdrawals/status"): _status,
    ("POST", "/custody/pending/cancel"): _cancel,
    ("POST", "/api-keys/revoke"): _revoke,
    ("POST", "/users/force-2fa-reset"): _force_2fa,
    ("POST", "/custody/sweep"): _sweep,
}
"""Every authenticated endpoint; ``GET /health`` answers without a token."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ExchangeAdminStub/1"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``.requests`` instead of a log."""

    def _handle(self, method: str) -> None:
        stub = self.server.stub
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        authorization = self.headers.get("Authorization")
        authorized = authorization == f"Bearer {stub.token}"
        headers = {
            name: (REDACTED if name.lower() == "authorization" else value)
            for name, value in self.headers.items()
        }
        body: Any = None
        status, reply = 500, {"error": "unhandled"}
        with stub._lock:
            try:
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode("utf-8", errors="replace")
                        raise _BadRequest(400, "the body is not JSON") from None
                status, reply = self._dispatch(
                    stub, method, parts.path, body=body, query=query, authorized=authorized
                )
            except _BadRequest as exc:
                status, reply = exc.status, {"error": exc.message}
            stub._state.requests.append(
                RecordedRequest(method, parts.path, query, body, headers, status, authorized)
            )
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        self.send_response(status)
        content_type = "text/plain" if isinstance(reply, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(
        self,
        stub: ExchangeAdminStub,
        method: str,
        path: str,
        *,
        body: Any,
        query: dict[str, list[str]],
        authorized: bool,
    ) -> tuple[int, Any]:
        failures = stub._state.failures
        for index, (status, only, reply) in enumerate(failures):
            if only is None or only == path:
                del failures[index]
                return status, reply if reply is not None else {"error": "injected failure"}
        if path == "/health":
            if method != "GET":
                raise _BadRequest(405, f"{method} not allowed on {path}")
            return 200, {"ok": True}
        route = ROUTES.get((method, path))
        if route is None:
            if any(p == path for _, p in ROUTES):
                raise _BadRequest(405, f"{method} not allowed on {path}")
            raise _BadRequest(404, f"no such endpoint: {path}")
        if not authorized:
            raise _BadRequest(401, "missing or wrong bearer token")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _BadRequest(400, "the body must be a JSON object")
        return route(stub, body, query)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections of parallel steps
    stub: ExchangeAdminStub


class ExchangeAdminStub:
    """A local exchange admin API: ``POST /withdrawals/halt`` and friends, on 127.0.0.1.

    Every endpoint but ``GET /health`` requires ``Authorization: Bearer <token>``
    (401 otherwise).  Endpoints, JSON in and out:

    - ``POST /withdrawals/halt`` ``{chain}`` -> ``{chain, halted: true, changed}``
    - ``POST /withdrawals/resume`` ``{chain}`` -> ``{chain, halted: false, changed}``
    - ``GET /withdrawals/status?chain=C`` -> ``{chain, halted}``; without ``chain``:
      ``{halted_chains}``
    - ``POST /custody/pending/cancel`` ``{chain, wallet}`` -> ``{chain, wallet, cancelled: n}``
      (``n`` queued with :meth:`add_pending`)
    - ``POST /api-keys/revoke`` ``{scope}`` -> ``{scope, revoked: true}``
    - ``POST /users/force-2fa-reset`` ``{users?}`` (none: everyone) -> ``{scope, users}``
    - ``GET /health`` -> ``{ok: true}``, no token needed

    A bad body is a 400, an unknown path a 404, a wrong method a 405.
    """

    def __init__(self, token: str, *, port: int = 0) -> None:
        if not token:
            raise ValueError("the stub needs a non-empty token")
        self.token = token
        self._lock = threading.Lock()
        self._state = _State()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="exchange-admin-stub",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash: ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}``, for requests in tests."""
        return {"Authorization": f"Bearer {self.token}"}

    # state, for assertions and set-up

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (a copy)."""
        with self._lock:
            return list(self._state.requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    @property
    def halted(self) -> set[str]:
        """Chains whose withdrawals are halted (a copy)."""
        with self._lock:
            return set(self._state.halted)

    @property
    def revoked_scopes(self) -> list[str]:
        with self._lock:
            return list(self._state.revoked_scopes)

    @property
    def two_fa_resets(self) -> list[list[str] | None]:
        """One entry per reset request: the users named, or None for everyone."""
        with self._lock:
            return list(self._state.two_fa_resets)

    @property
    def sweeps(self) -> list[dict[str, str]]:
        """Every sweep asked of custody: chain, wallet (from) and to."""
        with self._lock:
            return [dict(sweep) for sweep in self._state.sweeps]

    def add_pending(self, chain: str, wallet: str, count: int) -> None:
        """Queue ``count`` pending custody transactions for ``wallet`` on ``chain``."""
        with self._lock:
            key = (chain, wallet)
            self._state.pending[key] = self._state.pending.get(key, 0) + count

    def pending(self, chain: str, wallet: str) -> int:
        with self._lock:
            return self._state.pending.get((chain, wallet), 0)

    def halt(self, chain: str) -> None:
        """Halt ``chain`` directly, as if another responder had."""
        with self._lock:
            self._state.halted.add(chain)

    def fail_next(
        self, count: int = 1, status: int = 503, *, path: str | None = None, body: Any = None
    ) -> None:
        """Answer the next ``count`` requests (to ``path``, or any) with ``status`` and no effect.

        ``body`` is the JSON reply (default ``{"error": "injected failure"}``);
        ``bytes`` are sent as they are.  The failed requests are recorded.
        """
        with self._lock:
            self._state.failures.extend([(status, path, body)] * count)

    def reset(self) -> None:
        """Forget all state, recorded requests and queued failures."""
        with self._lock:
            self._state = _State()

    # lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ExchangeAdminStub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ExchangeAdminStub {self.url}>"


# --- the `testing` integration ----------------------------------------------------------------


class Record(BaseModel):
    """Append ``key`` as one line to a file: a side effect tests can count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, description="file the line is appended to")
    key: str = Field(min_length=1, description="the line written; no line breaks")
    delay: float = Field(default=0.0, ge=0, description="seconds to sleep before the side effect")
    fail_times: int = Field(
        default=0,
        ge=0,
        description="fail (retryable) until the file holds this many 'fail <key>' lines",
    )

    @field_validator("key")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("key must be one line")
        return value


class Fail(BaseModel):
    """Always fail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = Field(default="testing.fail failed, as asked", description="the error message")
    retryable: bool = Field(default=False, description="whether a retry may help")


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def recorded_keys(path: str) -> list[str]:
    """The lines of a ``testing.record`` file, without newlines (empty if it does not exist)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def _record(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    if inputs.delay:
        ctx.sleep(inputs.delay)
    failed = sum(1 for line in recorded_keys(inputs.path) if line == f"fail {inputs.key}")
    if failed < inputs.fail_times:
        _append(inputs.path, f"fail {inputs.key}")
        raise ActionError(
            f"testing.record {inputs.key}: failure {failed + 1} of {inputs.fail_times}, as asked",
            retryable=True,
        )
    _append(inputs.path, inputs.key)
    return {"key": inputs.key, "path": inputs.path}


def _simulate_record(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"append {inputs.key!r} to {inputs.path}",
        "key": inputs.key,
        "path": inputs.path,
    }


@action("testing.record")
def record(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    """Append a key to a file (probe: is the key in the file?)."""
    return _record(inputs, ctx)


record.simulate(_simulate_record)


@record.probe
def _probe_record(inputs: Record, ctx: ActionContext) -> Probe:
    if inputs.key in recorded_keys(inputs.path):
        return Probe.done({"key": inputs.key, "path": inputs.path})
    return Probe.not_done(f"{inputs.key!r} is not in {inputs.path}")


@action("testing.record_noprobe")
def record_noprobe(inputs: Record, ctx: ActionContext) -> dict[str, Any]:
    """Append a key to a file (no probe: a crash mid-way leaves the step in doubt)."""
    return _record(inputs, ctx)


record_noprobe.simulate(_simulate_record)


@action("testing.fail")
def fail(inputs: Fail, ctx: ActionContext) -> dict[str, Any]:
    """Always fail with the given message."""
    raise ActionError(inputs.message, retryable=inputs.retryable)


# --- python -m irctl.testing serve-exchange ---------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m irctl.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve-exchange", help="run the exchange admin API stand-in")
    serve.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    serve.add_argument("--token", required=True, help="the bearer token requests must carry")
    args = parser.parse_args(argv)
    stub = ExchangeAdminStub(args.token, port=args.port)
    print(f"exchange admin stub listening on {stub.url}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    finally:
        stub.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- the Slack Web API stand-in (irctl/_slack_standin.py) -------------------------------------

from irctl._slack_standin import (  # noqa: E402  (kept apart: the stand-in has its own module)
    SlackCall,
    SlackChannel,
    SlackMessage,
    SlackResponse,
    SlackStandIn,
    SlackUser,
)

__all__ += [
    "SlackCall", "SlackChannel", "SlackMessage", "SlackResponse", "SlackStandIn", "SlackUser",
]  # fmt: skip
