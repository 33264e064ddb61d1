"""ExchangeAdminStub's customer-account, screening and freeze-desk endpoints, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from irctl.testing import ExchangeAdminStub
from tests.test_testing import TOKEN, send


@pytest.fixture
def exchange() -> Iterator[ExchangeAdminStub]:
    with ExchangeAdminStub(TOKEN) as stub:
        yield stub


def test_customer_accounts_are_reset(exchange: ExchangeAdminStub) -> None:
    exchange.add_user("u1", api_keys=2, sessions=1)
    exchange.add_user("u2", api_keys=1, sessions=2)
    before = send(exchange, "GET", "/users/summary")[1]
    assert before == {
        "accounts": 2, "active_api_keys": 3, "active_sessions": 3,
        "password_reset_pending": 0, "two_fa_reset_pending": 0,
    }  # fmt: skip
    assert send(exchange, "POST", "/users/api-keys/revoke", {"users": ["u1", "ghost"]})[1] == {
        "scope": "users", "accounts": 1, "revoked_keys": 2,
    }  # fmt: skip
    assert send(exchange, "POST", "/users/api-keys/revoke", {})[1]["revoked_keys"] == 1
    assert send(exchange, "POST", "/users/sessions/revoke", {})[1]["ended_sessions"] == 3
    assert send(exchange, "POST", "/users/force-password-reset", {})[1]["accounts"] == 2
    assert send(exchange, "POST", "/users/force-2fa-reset", {"users": ["u2"]})[1] == {
        "scope": "users", "users": ["u2"],
    }  # fmt: skip
    after = send(exchange, "GET", "/users/summary")[1]
    assert after == {
        "accounts": 2, "active_api_keys": 0, "active_sessions": 0,
        "password_reset_pending": 2, "two_fa_reset_pending": 1,
    }  # fmt: skip
    assert exchange.user("u1").two_fa_reset_required is False
    assert exchange.two_fa_resets == [["u2"]]
    status, body = send(exchange, "POST", "/users/sessions/revoke", {"users": "u1"})
    assert status == 400
    assert "list of strings" in body["error"]


def test_address_cooldown_and_limits(exchange: ExchangeAdminStub) -> None:
    assert send(exchange, "GET", "/withdrawals/address-cooldown")[1]["active"] is False
    for bad in (0, 169, "48", True, None):
        assert send(exchange, "POST", "/withdrawals/address-cooldown", {"hours": bad})[0] == 400
    assert send(exchange, "POST", "/withdrawals/address-cooldown", {"hours": 48})[0] == 200
    assert send(exchange, "GET", "/withdrawals/address-cooldown")[1] == {
        "active": True, "address_change_cooldown_hours": 48,
    }  # fmt: skip
    assert send(exchange, "POST", "/withdrawals/limits", {})[0] == 400
    assert send(exchange, "POST", "/withdrawals/limits", {"per_user_daily_usd": -1})[0] == 400
    send(exchange, "POST", "/withdrawals/limits", {"per_user_daily_usd": 500})
    send(exchange, "POST", "/withdrawals/limits", {"per_user_daily_usd": None})
    assert exchange.limits == [500.0, None]


def test_screening_and_the_tracing_case(exchange: ExchangeAdminStub) -> None:
    body = {"chain": "ethereum", "address": "0xbad", "label": "attacker"}
    assert send(exchange, "POST", "/addresses/label", body)[1]["screened"] is True
    assert exchange.labels == {"0xbad": {"chain": "ethereum", "label": "attacker"}}
    assert send(exchange, "POST", "/addresses/label", {"chain": "ethereum"})[0] == 400
    assert send(exchange, "GET", "/tracing/case")[0] == 400
    assert send(exchange, "GET", "/tracing/case?incident=I1")[1] == {
        "incident": "I1", "hops": [], "targets": [],
    }  # fmt: skip
    exchange.set_case("I1", hops=[{"tx_hash": "0x1"}], targets=[{"address": "0xc"}])
    assert send(exchange, "GET", "/tracing/case?incident=I1")[1]["targets"] == [{"address": "0xc"}]


def test_freeze_requests_are_received_acknowledged_and_frozen(exchange: ExchangeAdminStub) -> None:
    request = {"counterparty": "tether", "chain": "tron", "target_address": "T1", "action": "x"}
    for missing in request:
        partial = {k: v for k, v in request.items() if k != missing}
        status, body = send(exchange, "POST", "/freeze-requests", partial)
        assert status == 400
        assert missing in body["error"]
    status, first = send(exchange, "POST", "/freeze-requests", {**request, "block": 7})
    assert status == 201
    assert first == {
        "request_id": "fr-0001", "counterparty": "tether", "status": "received",
        "acknowledged": False, "frozen": False, "frozen_tx": None,
    }  # fmt: skip
    send(exchange, "POST", "/freeze-requests", {**request, "counterparty": "circle"})
    assert exchange.acknowledge("fr-0002") == 1
    assert exchange.acknowledge() == 1  # only fr-0001 was still unacknowledged
    exchange.confirm_frozen("fr-0001", "0xfeed")
    assert send(exchange, "GET", "/freeze-requests/status?id=fr-0001")[1]["frozen_tx"] == "0xfeed"
    assert send(exchange, "GET", "/freeze-requests/status?id=fr-0002")[1]["status"] == (
        "acknowledged"
    )
    assert send(exchange, "GET", "/freeze-requests/status?id=fr-9")[0] == 404
    assert [r.body.get("block") for r in exchange.freeze_requests] == [7, None]
    with pytest.raises(KeyError):
        exchange.confirm_frozen("fr-9", "0x0")
    status, _ = send(exchange, "GET", "/freeze-requests/status?id=fr-0001", headers={})
    assert status == 401  # the same bearer token guards these endpoints


def test_treasury_desk_reports_the_queue_and_the_ledger(exchange: ExchangeAdminStub) -> None:
    exchange.set_queue(4200, oldest_seconds=310, amounts={"ETH": 10**21})
    exchange.set_liabilities({"ETH": (5 * 10**21, 18), "USDT": (7 * 10**12, 6)})
    assert send(exchange, "GET", "/withdrawals/queue")[1] == {
        "pending": 4200, "oldest_seconds": 310, "amounts": {"ETH": str(10**21)},
    }  # fmt: skip
    owed = send(exchange, "GET", "/ledger/liabilities")[1]["assets"]
    assert owed == {"ETH": {"total": str(5 * 10**21), "decimals": 18},
                    "USDT": {"total": str(7 * 10**12), "decimals": 6}}  # fmt: skip
    status, body = send(exchange, "POST", "/proof-of-reserves/publish",
                        {"root": "ab" * 32, "accounts": 3, "statement": "1:1"})  # fmt: skip
    assert status == 201
    assert body["root"] == "ab" * 32
    assert exchange.desks.published[0]["statement"] == "1:1"
    assert send(exchange, "POST", "/proof-of-reserves/publish", {"root": "x"})[0] == 400


def test_staff_desk_suspends_and_holds(exchange: ExchangeAdminStub) -> None:
    exchange.add_staff("mallory", sessions=2, approved_pending=3,
                       audit=[{"action": "withdrawal.approve", "amount_usd": 250000}])  # fmt: skip
    assert send(exchange, "GET", "/admin/audit-log?staff=mallory")[1]["entries"][0][
        "amount_usd"] == 250000  # fmt: skip
    first = send(exchange, "POST", "/admin/staff/suspend", {"staff": "mallory"})[1]
    assert first == {"staff": "mallory", "suspended": True, "ended_sessions": 2, "changed": True}
    again = send(exchange, "POST", "/admin/staff/suspend", {"staff": "mallory"})[1]
    assert again["changed"] is False
    assert send(exchange, "GET", "/admin/staff/status?staff=mallory")[1]["sessions"] == 0
    assert send(exchange, "POST", "/withdrawals/hold-by-staff", {"staff": "mallory"})[1] == {
        "staff": "mallory", "held": 3}  # fmt: skip
    assert send(exchange, "POST", "/admin/staff/suspend", {"staff": "nobody"})[0] == 404
    assert send(exchange, "POST", "/withdrawals/four-eyes", {"threshold_usd": 10000})[1] == {
        "active": True, "threshold_usd": 10000.0}  # fmt: skip
    assert send(exchange, "POST", "/withdrawals/four-eyes", {"threshold_usd": -1})[0] == 400


def test_traffic_desk_never_degrades_a_core_feature(exchange: ExchangeAdminStub) -> None:
    exchange.set_traffic(9000, capacity_rps=5000, error_rate=0.2)
    assert send(exchange, "GET", "/traffic")[1]["normal"] is False
    status, body = send(exchange, "POST", "/features/degrade",
                        {"features": ["charts", "withdrawals"]})  # fmt: skip
    assert status == 400
    assert "withdrawals cannot be degraded" in body["error"]
    assert exchange.desks.degraded == []  # refused whole: nothing degraded
    done = send(exchange, "POST", "/features/degrade", {"features": ["charts", "referrals"]})
    assert done[1] == {"degraded": ["charts", "referrals"], "changed": True}
    exchange.set_traffic(800, error_rate=0.0)
    assert send(exchange, "GET", "/traffic")[1]["normal"] is True
    assert send(exchange, "POST", "/features/restore", {})[1] == {
        "degraded": [], "restored": ["charts", "referrals"]}  # fmt: skip
