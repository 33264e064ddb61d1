"""irctl.testing: the exchange admin API stand-in and the `testing` integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from irctl.actions import ActionContext, default_registry
from irctl.errors import ActionError
from irctl.testing import ExchangeAdminStub, context, recorded_keys, run_action

TOKEN = "stub-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def exchange() -> Iterator[ExchangeAdminStub]:
    with ExchangeAdminStub(TOKEN) as stub:
        yield stub


def send(
    stub: ExchangeAdminStub,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(stub.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in (AUTH if headers is None else headers).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


# --- ExchangeAdminStub -----------------------------------------------------------------------


def test_stub_serves_on_localhost(exchange: ExchangeAdminStub) -> None:
    assert exchange.url == f"http://127.0.0.1:{exchange.port}"
    assert exchange.port > 0
    assert exchange.auth_header == AUTH


def test_halt_status_and_resume(exchange: ExchangeAdminStub) -> None:
    assert send(exchange, "GET", "/withdrawals/status?chain=tron") == (
        200,
        {"chain": "tron", "halted": False},
    )
    assert send(exchange, "POST", "/withdrawals/halt", {"chain": "tron"}) == (
        200,
        {"chain": "tron", "halted": True, "changed": True},
    )
    assert send(exchange, "POST", "/withdrawals/halt", {"chain": "tron"})[1]["changed"] is False
    assert exchange.halted == {"tron"}
    assert send(exchange, "GET", "/withdrawals/status?chain=tron")[1]["halted"] is True
    assert send(exchange, "GET", "/withdrawals/status")[1] == {"halted_chains": ["tron"]}
    assert send(exchange, "POST", "/withdrawals/resume", {"chain": "tron"})[1] == {
        "chain": "tron",
        "halted": False,
        "changed": True,
    }
    assert exchange.halted == set()


def test_cancel_pending_custody_transactions(exchange: ExchangeAdminStub) -> None:
    exchange.add_pending("ethereum", "0xabc", 3)
    exchange.add_pending("ethereum", "0xother", 1)
    body = {"chain": "ethereum", "wallet": "0xabc"}
    assert send(exchange, "POST", "/custody/pending/cancel", body)[1]["cancelled"] == 3
    assert send(exchange, "POST", "/custody/pending/cancel", body)[1]["cancelled"] == 0
    assert exchange.pending("ethereum", "0xabc") == 0
    assert exchange.pending("ethereum", "0xother") == 1


def test_revoke_keys_and_force_2fa_reset(exchange: ExchangeAdminStub) -> None:
    assert send(exchange, "POST", "/api-keys/revoke", {"scope": "all"}) == (
        200,
        {"scope": "all", "revoked": True},
    )
    assert send(exchange, "POST", "/users/force-2fa-reset")[1] == {"scope": "all", "users": []}
    assert send(exchange, "POST", "/users/force-2fa-reset", {"users": ["u1", "u2"]})[1] == {
        "scope": "users",
        "users": ["u1", "u2"],
    }
    assert exchange.revoked_scopes == ["all"]
    assert exchange.two_fa_resets == [None, ["u1", "u2"]]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"X-Token": TOKEN}],
)
def test_every_endpoint_but_health_needs_the_token(
    exchange: ExchangeAdminStub, headers: dict[str, str]
) -> None:
    status, body = send(exchange, "POST", "/withdrawals/halt", {"chain": "tron"}, headers)
    assert status == 401
    assert "bearer token" in body["error"]
    assert exchange.halted == set()
    assert send(exchange, "GET", "/health", headers=headers) == (200, {"ok": True})


def test_requests_are_recorded_without_the_token(exchange: ExchangeAdminStub) -> None:
    send(exchange, "POST", "/withdrawals/halt", {"chain": "tron"}, {**AUTH, "X-Trace": "t1"})
    send(exchange, "POST", "/withdrawals/halt", {"chain": "tron"}, {"Authorization": "Bearer x"})
    send(exchange, "GET", "/withdrawals/status?chain=tron")
    first, second, third = exchange.requests
    assert (first.method, first.path, first.json, first.status) == (
        "POST",
        "/withdrawals/halt",
        {"chain": "tron"},
        200,
    )
    assert first.authorized is True
    assert first.headers["X-Trace"] == "t1"
    assert first.headers["Authorization"] == "••••"
    assert (second.status, second.authorized) == (401, False)
    assert second.headers["Authorization"] == "••••"
    assert third.query == {"chain": ["tron"]}
    assert third.json is None
    assert TOKEN not in repr(exchange.requests)
    assert exchange.requests_to("/withdrawals/halt", "POST") == [first, second]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/nowhere", None, 404),
        ("GET", "/withdrawals/halt", None, 405),
        ("DELETE", "/health", None, 405),
        ("POST", "/withdrawals/halt", {}, 400),
        ("POST", "/withdrawals/halt", {"chain": 5}, 400),
        ("POST", "/withdrawals/halt", ["tron"], 400),
        ("POST", "/custody/pending/cancel", {"chain": "tron"}, 400),
        ("POST", "/api-keys/revoke", {"scope": ""}, 400),
        ("POST", "/users/force-2fa-reset", {"users": "everyone"}, 400),
    ],
)
def test_bad_requests(
    exchange: ExchangeAdminStub, method: str, path: str, body: Any, status: int
) -> None:
    got, reply = send(exchange, method, path, body)
    assert got == status
    assert reply["error"]
    assert exchange.requests[-1].status == status


def test_a_body_that_is_not_json_is_a_400(exchange: ExchangeAdminStub) -> None:
    status, reply = send(exchange, "POST", "/withdrawals/halt", raw=b"chain=tron")
    assert (status, reply) == (400, {"error": "the body is not JSON"})
    assert exchange.requests[0].json == "chain=tron"


def test_fail_next_answers_with_the_status_and_has_no_effect(exchange: ExchangeAdminStub) -> None:
    exchange.fail_next(2, 503)
    assert send(exchange, "POST", "/withdrawals/halt", {"chain": "tron"})[0] == 503
    assert send(exchange, "GET", "/health")[0] == 503
    assert exchange.halted == set()
    assert send(exchange, "POST", "/withdrawals/halt", {"chain": "tron"})[0] == 200
    assert exchange.halted == {"tron"}
    assert [r.status for r in exchange.requests] == [503, 503, 200]


def test_fail_next_for_one_path_with_a_body(exchange: ExchangeAdminStub) -> None:
    exchange.fail_next(1, 429, path="/api-keys/revoke", body={"error": "slow down"})
    assert send(exchange, "GET", "/health")[0] == 200
    assert send(exchange, "POST", "/api-keys/revoke", {"scope": "all"}) == (
        429,
        {"error": "slow down"},
    )
    assert send(exchange, "POST", "/api-keys/revoke", {"scope": "all"})[0] == 200


def test_concurrent_requests_are_all_recorded(exchange: ExchangeAdminStub) -> None:
    chains = [f"chain-{i}" for i in range(40)]
    errors: list[BaseException] = []

    def hit(chain: str) -> None:
        try:
            assert send(exchange, "POST", "/withdrawals/halt", {"chain": chain})[0] == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hit, args=(c,)) for c in chains]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert exchange.halted == set(chains)
    assert sorted(r.json["chain"] for r in exchange.requests) == sorted(chains)


def test_reset_forgets_everything(exchange: ExchangeAdminStub) -> None:
    exchange.halt("tron")
    exchange.fail_next(1)
    send(exchange, "GET", "/health")
    exchange.reset()
    assert exchange.halted == set()
    assert exchange.requests == []
    assert send(exchange, "GET", "/health")[0] == 200


def test_close_stops_the_server() -> None:
    stub = ExchangeAdminStub(TOKEN)
    url = stub.url
    stub.close()
    stub.close()  # twice is fine
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=2)


def test_the_stub_needs_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        ExchangeAdminStub("")


def test_http_request_action_against_the_stub(exchange: ExchangeAdminStub) -> None:
    out = run_action(
        "http.request",
        {
            "method": "POST",
            "url": exchange.url + "/custody/pending/cancel",
            "headers": exchange.auth_header,
            "json": {"chain": "tron", "wallet": "T1"},
        },
    )
    assert out["json"] == {"chain": "tron", "wallet": "T1", "cancelled": 0}
    assert run_action("http.request", {"url": exchange.url + "/health"}, simulate=True)["simulated"]
    assert len(exchange.requests) == 1


def test_serve_exchange_from_the_command_line() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "irctl.testing", "serve-exchange", "--token", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("exchange admin stub listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        request = urllib.request.Request(url + "/withdrawals/halt", data=b'{"chain": "tron"}')
        request.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["halted"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=5)


# --- helpers ---------------------------------------------------------------------------------


def test_context_presets_ids_and_takes_overrides() -> None:
    made = context(answers={"test-step": "done"}, timeout=3)
    assert (made.run_id, made.step_id, made.timeout) == ("test-run", "test-step", 3)
    assert run_action("manual.confirm", {"prompt": "p"}, made)["confirmed"] is True


# --- the `testing` integration ---------------------------------------------------------------


def record_inputs(path: Path, key: str = "k1", **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "key": key, **extra}


def test_testing_actions_load_through_the_entry_point() -> None:
    record = default_registry.get("testing.record")
    noprobe = default_registry.get("testing.record_noprobe")
    fail = default_registry.get("testing.fail")
    assert (record.idempotent, record.has_probe) == (False, True)
    assert (noprobe.idempotent, noprobe.has_probe) == (False, False)
    assert fail.idempotent is False


def test_record_appends_one_line_per_call(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    assert run_action("testing.record", record_inputs(path)) == {"key": "k1", "path": str(path)}
    run_action("testing.record", record_inputs(path, "k2"))
    run_action("testing.record_noprobe", record_inputs(path))
    assert path.read_text() == "k1\nk2\nk1\n"
    assert recorded_keys(str(path)) == ["k1", "k2", "k1"]
    assert recorded_keys(str(tmp_path / "missing")) == []


def test_record_fails_retryably_the_given_number_of_times(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    inputs = record_inputs(path, fail_times=2)
    for attempt in (1, 2):
        with pytest.raises(ActionError, match=f"failure {attempt} of 2") as err:
            run_action("testing.record", inputs)
        assert err.value.retryable is True
    assert run_action("testing.record", inputs)["key"] == "k1"
    run_action("testing.record", inputs)  # the failures are used up
    assert recorded_keys(str(path)) == ["fail k1", "fail k1", "k1", "k1"]


def test_record_probe_tells_whether_the_key_was_written(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    act = default_registry.get("testing.record")
    inputs = act.parse(record_inputs(path, "halt"))
    assert act.call_probe(inputs, context()).state == "not_done"
    path.write_text("fail halt\nhalted\nother\n")
    assert act.call_probe(inputs, context()).state == "not_done"  # only a whole line counts
    run_action("testing.record", record_inputs(path, "halt"))
    found = act.call_probe(inputs, context())
    assert (found.state, found.outputs) == ("done", {"key": "halt", "path": str(path)})


def test_record_without_probe_cannot_tell(tmp_path: Path) -> None:
    act = default_registry.get("testing.record_noprobe")
    found = act.call_probe(act.parse(record_inputs(tmp_path / "x")), context())
    assert found.state == "unknown"


def test_record_sleeps_before_the_side_effect(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    seen: list[list[str]] = []
    ctx = context()
    threading.Timer(0.1, lambda: seen.append(recorded_keys(str(path)))).start()
    started = time.monotonic()
    run_action("testing.record", record_inputs(path, delay=0.3), ctx)
    assert time.monotonic() - started >= 0.28
    assert seen == [[]]
    assert recorded_keys(str(path)) == ["k1"]


def test_record_delay_is_cancellable_and_then_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    ctx = ActionContext(run_id="r", step_id="s")
    threading.Timer(0.1, ctx.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(ActionError, match="cancelled"):
        run_action("testing.record", record_inputs(path, delay=30), ctx)
    assert time.monotonic() - started < 2
    assert not path.exists()


def test_record_simulation_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    out = run_action("testing.record", record_inputs(path), simulate=True)
    assert out["simulated"] is True
    assert not path.exists()


def test_record_appends_atomically_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    keys = [f"key-{i}" for i in range(50)]
    threads = [
        threading.Thread(target=run_action, args=("testing.record", record_inputs(path, key)))
        for key in keys
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(recorded_keys(str(path))) == sorted(keys)


def test_record_opens_the_file_for_appending(tmp_path: Path) -> None:
    path = tmp_path / "effects.log"
    path.write_text("existing\n")
    os.chmod(path, 0o644)
    run_action("testing.record", record_inputs(path))
    assert path.read_text() == "existing\nk1\n"


@pytest.mark.parametrize(
    "inputs",
    [
        {"path": "x", "key": "two\nlines"},
        {"path": "x", "key": ""},
        {"path": "x", "key": "k", "fail_times": -1},
        {"path": "x", "key": "k", "delay": -1},
        {"path": "x", "key": "k", "extra": 1},
    ],
)
def test_record_inputs_are_checked(inputs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        default_registry.get("testing.record").parse(inputs)


@pytest.mark.parametrize("retryable", [True, False])
def test_fail_always_fails(retryable: bool) -> None:
    with pytest.raises(ActionError, match=r"^custody API down$") as err:
        run_action("testing.fail", {"message": "custody API down", "retryable": retryable})
    assert err.value.retryable is retryable
