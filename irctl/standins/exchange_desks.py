"""The exchange stand-in's desks: treasury, staff access and traffic.

What the bank-run, insider-abuse and overload runbooks call at the exchange, kept apart from
the withdrawal and customer endpoints of :mod:`irctl.standins.exchange_admin`, which serves
them (under its lock, with its token).  Each route takes the :class:`Desks` state, the JSON
body and the query, and answers ``(status, JSON)`` or raises :class:`BadRequest`.

Treasury (a bank run):

- ``GET /withdrawals/queue`` -> ``{pending, oldest_seconds, amounts: {asset: units}}``
- ``GET /ledger/liabilities`` -> ``{as_of, assets: {asset: {total, decimals}}}``: what the
  ledger owes customers, per asset, in smallest units (as strings)
- ``POST /proof-of-reserves/publish`` ``{root, accounts, statement}`` -> 201 ``{url, root}``
- ``POST /status/announcements`` ``{title, body}`` -> 201 ``{id, url}``

Staff access (insider abuse):

- ``POST /admin/staff/suspend`` ``{staff}`` -> ``{staff, suspended, ended_sessions, changed}``
- ``GET /admin/staff/status?staff=S`` -> ``{staff, suspended, sessions}``
- ``GET /admin/audit-log?staff=S`` -> ``{staff, entries}``
- ``POST /withdrawals/four-eyes`` ``{threshold_usd}`` (null: off) and ``GET`` it ->
  ``{active, threshold_usd}``
- ``POST /withdrawals/hold-by-staff`` ``{staff}`` -> ``{staff, held}``: the withdrawals the
  staff member approved that have not left yet are held for review

Traffic (overload):

- ``GET /traffic`` -> ``{requests_per_second, capacity_rps, error_rate, normal}``
- ``POST /features/degrade`` ``{features}`` -> ``{degraded, changed}``; ``withdrawals`` and
  ``trading`` are core and refused (400): an overload runbook must keep them alive
- ``POST /features/restore`` ``{features?}`` (none: all) -> ``{degraded, restored}``
- ``GET /features`` -> ``{degraded, core}``
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CORE_FEATURES = ("withdrawals", "trading")


class BadRequest(Exception):
    """A request the stand-in refuses: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Staff:
    """An employee with admin access at the stand-in exchange."""

    staff: str
    sessions: int = 1
    suspended: bool = False
    approved_pending: int = 0  # withdrawals they approved that have not left yet
    held: int = 0


@dataclass
class Desks:
    """The state behind the treasury, staff and traffic endpoints."""

    pending: int = 0
    oldest_seconds: int = 0
    amounts: dict[str, str] = field(default_factory=dict)
    liabilities: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    announcements: list[dict[str, Any]] = field(default_factory=list)
    staff: dict[str, Staff] = field(default_factory=dict)
    audit: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    four_eyes_usd: float | None = None
    requests_per_second: float = 1000.0
    capacity_rps: float = 5000.0
    error_rate: float = 0.0
    degraded: list[str] = field(default_factory=list)


Route = Callable[[Desks, dict[str, Any], dict[str, list[str]]], tuple[int, Any]]


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(400, f"body must have a non-empty string '{name}'")
    return value


def _query(query: dict[str, list[str]], name: str, path: str) -> str:
    value = (query.get(name) or [""])[0]
    if not value:
        raise BadRequest(400, f"give the {name}: {path}?{name}=...")
    return value


# --- treasury -------------------------------------------------------------------------------


def _queue(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    return 200, {
        "pending": desks.pending, "oldest_seconds": desks.oldest_seconds,
        "amounts": dict(desks.amounts),
    }  # fmt: skip


def _liabilities(
    desks: Desks, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    return 200, {
        "as_of": datetime.now(UTC).isoformat(timespec="seconds"),
        "assets": json.loads(json.dumps(desks.liabilities)),
    }


def _publish(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    root = _text(body, "root")
    statement = _text(body, "statement")
    accounts = body.get("accounts")
    if not isinstance(accounts, int) or isinstance(accounts, bool) or accounts < 0:
        raise BadRequest(400, "'accounts' must be a whole number >= 0")
    number = len(desks.published) + 1
    url = f"https://exchange.example/proof-of-reserves/{number}"
    desks.published.append({"root": root, "accounts": accounts, "statement": statement,
                            "url": url})  # fmt: skip
    return 201, {"url": url, "root": root, "accounts": accounts}


def _announce(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    title, text = _text(body, "title"), _text(body, "body")
    number = len(desks.announcements) + 1
    found = {"id": f"an-{number:04d}", "url": f"https://status.exchange.example/an-{number:04d}"}
    desks.announcements.append({**found, "title": title, "body": text})
    return 201, found


# --- staff access ---------------------------------------------------------------------------


def _member(desks: Desks, name: str) -> Staff:
    found = desks.staff.get(name)
    if found is None:
        raise BadRequest(404, f"no staff member {name!r}")
    return found


def _suspend(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    member = _member(desks, _text(body, "staff"))
    changed = not member.suspended
    ended, member.sessions, member.suspended = member.sessions, 0, True
    return 200, {"staff": member.staff, "suspended": True, "ended_sessions": ended,
                 "changed": changed}  # fmt: skip


def _staff_status(
    desks: Desks, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    member = _member(desks, _query(query, "staff", "/admin/staff/status"))
    return 200, {"staff": member.staff, "suspended": member.suspended,
                 "sessions": member.sessions}  # fmt: skip


def _audit_log(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    name = _query(query, "staff", "/admin/audit-log")
    _member(desks, name)
    return 200, {"staff": name, "entries": json.loads(json.dumps(desks.audit.get(name, [])))}


def _set_four_eyes(
    desks: Desks, body: dict[str, Any], query: dict[str, list[str]]
) -> tuple[int, Any]:
    if "threshold_usd" not in body:
        raise BadRequest(400, "body must have 'threshold_usd': a number, or null for off")
    value = body["threshold_usd"]
    if value is not None and (
        not isinstance(value, int | float) or isinstance(value, bool) or value < 0
    ):
        raise BadRequest(400, "'threshold_usd' must be a number >= 0, or null for off")
    desks.four_eyes_usd = None if value is None else float(value)
    return _four_eyes(desks, body, query)


def _four_eyes(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    return 200, {"active": desks.four_eyes_usd is not None, "threshold_usd": desks.four_eyes_usd}


def _hold(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    member = _member(desks, _text(body, "staff"))
    held, member.approved_pending = member.approved_pending, 0
    member.held += held
    return 200, {"staff": member.staff, "held": held}


# --- traffic --------------------------------------------------------------------------------


def _traffic(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    normal = desks.requests_per_second <= desks.capacity_rps * 0.8 and desks.error_rate < 0.01
    return 200, {
        "requests_per_second": desks.requests_per_second, "capacity_rps": desks.capacity_rps,
        "error_rate": desks.error_rate, "normal": normal,
    }  # fmt: skip


def _names(body: dict[str, Any], *, required: bool) -> list[str] | None:
    names = body.get("features")
    if names is None and not required:
        return None
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)):
        raise BadRequest(400, "'features' must be a non-empty list of feature names")
    return list(names)


def _degrade(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    names = _names(body, required=True) or []
    core = [name for name in names if name in CORE_FEATURES]
    if core:
        raise BadRequest(400, f"{', '.join(core)} cannot be degraded: they are core features")
    added = [name for name in names if name not in desks.degraded]
    desks.degraded.extend(added)
    return 200, {"degraded": list(desks.degraded), "changed": bool(added)}


def _restore(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    names = _names(body, required=False)
    restored = [n for n in desks.degraded if names is None or n in names]
    desks.degraded = [n for n in desks.degraded if n not in restored]
    return 200, {"degraded": list(desks.degraded), "restored": restored}


def _features(desks: Desks, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
    return 200, {"degraded": list(desks.degraded), "core": list(CORE_FEATURES)}


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/withdrawals/queue"): _queue,
    ("GET", "/ledger/liabilities"): _liabilities,
    ("POST", "/proof-of-reserves/publish"): _publish,
    ("POST", "/status/announcements"): _announce,
    ("POST", "/admin/staff/suspend"): _suspend,
    ("GET", "/admin/staff/status"): _staff_status,
    ("GET", "/admin/audit-log"): _audit_log,
    ("POST", "/withdrawals/four-eyes"): _set_four_eyes,
    ("GET", "/withdrawals/four-eyes"): _four_eyes,
    ("POST", "/withdrawals/hold-by-staff"): _hold,
    ("GET", "/traffic"): _traffic,
    ("POST", "/features/degrade"): _degrade,
    ("POST", "/features/restore"): _restore,
    ("GET", "/features"): _features,
}
