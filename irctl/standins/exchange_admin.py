"""The exchange admin API stand-in: a real HTTP server on 127.0.0.1.

:class:`ExchangeAdminStub` stands in for an exchange's admin API (the endpoints the
hot-wallet-compromise runbook calls); it records what it received and keeps the state tests
assert on.  Re-exported by :mod:`irctl.testing`, where integration authors find it.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from irctl.standins import exchange_desks
from irctl.standins.exchange_desks import BadRequest as _BadRequest
from irctl.standins.exchange_desks import Desks, Staff

__all__ = ["ExchangeAdminStub", "ExchangeUser", "FreezeRequest", "RecordedRequest"]

REDACTED = "••••"


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
class ExchangeUser:
    """A customer account of the stand-in exchange: what the account-compromise runbook resets."""

    user_id: str
    api_keys: int = 0
    sessions: int = 0
    password_reset_required: bool = False
    two_fa_reset_required: bool = False


@dataclass
class FreezeRequest:
    """A freeze request a counterparty (an issuer's or exchange's desk) received.

    ``status`` goes ``received`` -> ``acknowledged`` -> ``frozen`` as the test
    says (:meth:`ExchangeAdminStub.acknowledge`, :meth:`ExchangeAdminStub.confirm_frozen`).
    """

    request_id: str
    counterparty: str
    body: dict[str, Any]
    status: str = "received"
    frozen_tx: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "counterparty": self.counterparty,
            "status": self.status,
            "acknowledged": self.status in ("acknowledged", "frozen"),
            "frozen": self.status == "frozen",
            "frozen_tx": self.frozen_tx,
        }


@dataclass
class _State:
    halted: set[str] = field(default_factory=set)
    pending: dict[tuple[str, str], int] = field(default_factory=dict)
    revoked_scopes: list[str] = field(default_factory=list)
    two_fa_resets: list[list[str] | None] = field(default_factory=list)
    sweeps: list[dict[str, str]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: list[tuple[int, str | None, Any]] = field(default_factory=list)
    users: dict[str, ExchangeUser] = field(default_factory=dict)
    address_cooldown_hours: int | None = None
    limits: list[float | None] = field(default_factory=list)  # per-user daily limits set, in order
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # address -> chain, label
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # incident -> hops, targets
    freeze_requests: list[FreezeRequest] = field(default_factory=list)
    desks: Desks = field(default_factory=Desks)  # treasury, staff access, traffic


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


def _users(stub: ExchangeAdminStub, body: dict[str, Any]) -> tuple[list[str] | None, list[Any]]:
    """The ``users`` a body names (None: everyone), and those of them the exchange knows."""
    users = body.get("users")
    if users is not None and not (
        isinstance(users, list) and all(isinstance(u, str) for u in users)
    ):
        raise _BadRequest(400, "'users' must be a list of strings (leave it out for everyone)")
    known = stub._state.users
    chosen = list(known.values()) if users is None else [known[u] for u in users if u in known]
    return users, chosen


def _force_2fa(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    users, chosen = _users(stub, body)
    for user in chosen:
        user.two_fa_reset_required = True
    stub._state.two_fa_resets.append(users)
    return 200, {"scope": "all" if users is None else "users", "users": users or []}


def _force_password(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    users, chosen = _users(stub, body)
    for user in chosen:
        user.password_reset_required = True
    return 200, {"scope": "all" if users is None else "users", "accounts": len(chosen)}


def _revoke_user_keys(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    users, chosen = _users(stub, body)
    revoked = sum(user.api_keys for user in chosen)
    for user in chosen:
        user.api_keys = 0
    return 200, {
        "scope": "all" if users is None else "users", "accounts": len(chosen),
        "revoked_keys": revoked,
    }  # fmt: skip


def _end_sessions(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    users, chosen = _users(stub, body)
    ended = sum(user.sessions for user in chosen)
    for user in chosen:
        user.sessions = 0
    return 200, {"scope": "all" if users is None else "users", "ended_sessions": ended}


def _user_summary(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    users = list(stub._state.users.values())
    return 200, {
        "accounts": len(users),
        "active_api_keys": sum(u.api_keys for u in users),
        "active_sessions": sum(u.sessions for u in users),
        "password_reset_pending": sum(u.password_reset_required for u in users),
        "two_fa_reset_pending": sum(u.two_fa_reset_required for u in users),
    }


def _set_cooldown(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    hours = body.get("hours")
    if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= 168:
        raise _BadRequest(400, "body must have 'hours': a whole number from 1 to 168")
    stub._state.address_cooldown_hours = hours
    return 200, {"address_change_cooldown_hours": hours}


def _cooldown(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    hours = stub._state.address_cooldown_hours
    return 200, {"active": hours is not None, "address_change_cooldown_hours": hours}


def _set_limits(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    if "per_user_daily_usd" not in body:
        raise _BadRequest(400, "body must have 'per_user_daily_usd': a number, or null for normal")
    limit = body["per_user_daily_usd"]
    if limit is not None and (
        not isinstance(limit, int | float) or isinstance(limit, bool) or limit < 0
    ):
        raise _BadRequest(400, "'per_user_daily_usd' must be a number >= 0, or null for normal")
    stub._state.limits.append(None if limit is None else float(limit))
    return 200, {"per_user_daily_usd": limit}


def _label(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    chain, address, label = _chain(body), body.get("address"), body.get("label")
    if not isinstance(address, str) or not address or not isinstance(label, str) or not label:
        raise _BadRequest(400, "body must have non-empty strings 'address' and 'label'")
    stub._state.labels[address] = {"chain": chain, "label": label}
    return 200, {"chain": chain, "address": address, "label": label, "screened": True}


def _case(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    incident = (query.get("incident") or [""])[0]
    if not incident:
        raise _BadRequest(400, "give the incident: /tracing/case?incident=ID")
    case = stub._state.cases.get(incident, {"hops": [], "targets": []})
    return 200, {"incident": incident, **json.loads(json.dumps(case))}


FREEZE_FIELDS = ("counterparty", "chain", "target_address", "action")


def _freeze_request(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    missing = [name for name in FREEZE_FIELDS if not isinstance(body.get(name), str)]
    if missing or not all(body[name] for name in FREEZE_FIELDS):
        raise _BadRequest(
            400, f"a freeze request needs non-empty strings {', '.join(FREEZE_FIELDS)}"
        )
    number = len(stub._state.freeze_requests) + 1
    request = FreezeRequest(f"fr-{number:04d}", str(body["counterparty"]), body)
    stub._state.freeze_requests.append(request)
    return 201, request.view()


def _freeze_status(
    stub: ExchangeAdminStub, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    wanted = (query.get("id") or [""])[0]
    for request in stub._state.freeze_requests:
        if request.request_id == wanted:
            return 200, request.view()
    raise _BadRequest(404, f"no freeze request {wanted!r}")


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
    ("POST", "/users/api-keys/revoke"): _revoke_user_keys,
    ("POST", "/users/force-password-reset"): _force_password,
    ("POST", "/users/sessions/revoke"): _end_sessions,
    ("GET", "/users/summary"): _user_summary,
    ("POST", "/withdrawals/address-cooldown"): _set_cooldown,
    ("GET", "/withdrawals/address-cooldown"): _cooldown,
    ("POST", "/withdrawals/limits"): _set_limits,
    ("POST", "/addresses/label"): _label,
    ("GET", "/tracing/case"): _case,
    ("POST", "/freeze-requests"): _freeze_request,
    ("GET", "/freeze-requests/status"): _freeze_status,
}


def _desk_route(route: exchange_desks.Route) -> Route:
    return lambda stub, body, query: route(stub._state.desks, body, query)


ROUTES.update({key: _desk_route(route) for key, route in exchange_desks.ROUTES.items()})
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

    Customer accounts (added with :meth:`add_user`), for the account-compromise
    runbook; ``users`` left out means every account:

    - ``POST /users/api-keys/revoke`` ``{users?}`` -> ``{scope, accounts, revoked_keys}``
    - ``POST /users/force-password-reset`` ``{users?}`` -> ``{scope, accounts}``
    - ``POST /users/sessions/revoke`` ``{users?}`` -> ``{scope, ended_sessions}``
    - ``GET /users/summary`` -> ``{accounts, active_api_keys, active_sessions,
      password_reset_pending, two_fa_reset_pending}``
    - ``POST /withdrawals/address-cooldown`` ``{hours}`` (1-168) and ``GET`` it ->
      ``{active, address_change_cooldown_hours}``
    - ``POST /withdrawals/limits`` ``{per_user_daily_usd}`` (null: normal limits)

    The treasury, staff-access and traffic desks (the bank-run, insider-abuse and overload
    runbooks): :mod:`irctl.standins.exchange_desks` lists their endpoints.

    Tracing stolen funds:

    - ``POST /addresses/label`` ``{chain, address, label}``: the exchange's own
      screening (deposits from and withdrawals to it are blocked)
    - ``GET /tracing/case?incident=ID`` -> ``{incident, hops, targets}`` (set with
      :meth:`set_case`): what the tracing desk found
    - ``POST /freeze-requests`` ``{counterparty, chain, target_address, action, ...}`` ->
      201 ``{request_id, status: received, acknowledged, frozen, ...}``: a stub playing an
      issuer's or exchange's freeze desk records it (:attr:`freeze_requests`)
    - ``GET /freeze-requests/status?id=ID`` -> the same view, as :meth:`acknowledge` and
      :meth:`confirm_frozen` move it on

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

    def add_user(self, user_id: str, *, api_keys: int = 1, sessions: int = 1) -> None:
        """A customer account with ``api_keys`` keys and ``sessions`` logged-in sessions."""
        with self._lock:
            self._state.users[user_id] = ExchangeUser(user_id, api_keys, sessions)

    def user(self, user_id: str) -> ExchangeUser:
        """A copy of a customer account as it is now."""
        with self._lock:
            found = self._state.users[user_id]
            return ExchangeUser(**vars(found))

    @property
    def address_cooldown_hours(self) -> int | None:
        """The cool-down on withdrawal-address changes, in hours (None: none set)."""
        with self._lock:
            return self._state.address_cooldown_hours

    @property
    def limits(self) -> list[float | None]:
        """Per-user daily withdrawal limits set, in order (None: back to normal)."""
        with self._lock:
            return list(self._state.limits)

    @property
    def labels(self) -> dict[str, dict[str, str]]:
        """Screened addresses: address -> ``{chain, label}``."""
        with self._lock:
            return {address: dict(label) for address, label in self._state.labels.items()}

    def set_case(
        self, incident: str, *, hops: list[dict[str, Any]], targets: list[dict[str, Any]]
    ) -> None:
        """What ``GET /tracing/case?incident=`` answers for ``incident``."""
        with self._lock:
            self._state.cases[incident] = json.loads(json.dumps({"hops": hops, "targets": targets}))

    @property
    def freeze_requests(self) -> list[FreezeRequest]:
        """Freeze requests received, in order (copies)."""
        with self._lock:
            return [
                FreezeRequest(r.request_id, r.counterparty, json.loads(json.dumps(r.body)),
                              r.status, r.frozen_tx)
                for r in self._state.freeze_requests
            ]  # fmt: skip

    def acknowledge(self, request_id: str | None = None) -> int:
        """The desk acknowledges a received request (all of them without an id); how many."""
        with self._lock:
            found = [
                r for r in self._state.freeze_requests
                if r.status == "received" and request_id in (None, r.request_id)
            ]  # fmt: skip
            for request in found:
                request.status = "acknowledged"
            return len(found)

    def confirm_frozen(self, request_id: str, tx_hash: str) -> None:
        """The counterparty froze the funds on chain in ``tx_hash`` (a blacklisting, say)."""
        with self._lock:
            for request in self._state.freeze_requests:
                if request.request_id == request_id:
                    request.status, request.frozen_tx = "frozen", tx_hash
                    return
        raise KeyError(request_id)

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

    # the treasury, staff and traffic desks (irctl.standins.exchange_desks)

    def set_queue(
        self, pending: int, *, oldest_seconds: int = 0, amounts: dict[str, int] | None = None
    ) -> None:
        """The withdrawal queue ``GET /withdrawals/queue`` reports."""
        with self._lock:
            desks = self._state.desks
            desks.pending, desks.oldest_seconds = pending, oldest_seconds
            desks.amounts = {asset: str(units) for asset, units in (amounts or {}).items()}

    def set_liabilities(self, assets: dict[str, tuple[int, int]]) -> None:
        """What the ledger owes customers: ``{asset: (total in smallest units, decimals)}``."""
        with self._lock:
            self._state.desks.liabilities = {
                asset: {"total": str(total), "decimals": places}
                for asset, (total, places) in assets.items()
            }

    def add_staff(
        self, staff: str, *, sessions: int = 1, approved_pending: int = 0,
        audit: list[dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        """An employee with admin access, their open sessions, the withdrawals they approved
        that have not left yet, and their entries in the admin audit log."""
        with self._lock:
            desks = self._state.desks
            desks.staff[staff] = Staff(staff, sessions, approved_pending=approved_pending)
            desks.audit[staff] = json.loads(json.dumps(audit or []))

    def set_traffic(
        self, requests_per_second: float, *, capacity_rps: float | None = None,
        error_rate: float | None = None,
    ) -> None:  # fmt: skip
        """The load ``GET /traffic`` reports."""
        with self._lock:
            desks = self._state.desks
            desks.requests_per_second = requests_per_second
            if capacity_rps is not None:
                desks.capacity_rps = capacity_rps
            if error_rate is not None:
                desks.error_rate = error_rate

    @property
    def desks(self) -> Desks:
        """A copy of the treasury, staff and traffic desks as they are now."""
        with self._lock:
            return copy.deepcopy(self._state.desks)

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
