"""The built-in actions, called through the SDK against real local servers and processes."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from irctl.actions import ActionContext, WaitForOperator, default_registry
from irctl.errors import ActionError, ActionTimeout
from irctl.testing import ExchangeAdminStub

TOKEN = "s3cret-admin-token-for-tests"


def ctx(**kw: Any) -> ActionContext:
    return ActionContext(run_id="r", step_id="s", **kw)


def call(name: str, inputs: dict[str, Any], context: ActionContext | None = None) -> Any:
    act = default_registry.get(name)
    return act.call_run(act.parse(inputs), context or ctx())


def simulate(name: str, inputs: dict[str, Any]) -> Any:
    act = default_registry.get(name)
    return act.call_simulate(act.parse(inputs), ctx())


def cancel_after(context: ActionContext, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, context.cancelled.set)
    timer.start()
    return timer


# --- a small server for the edge cases the exchange stub does not have -------------------------


class _Edge(BaseHTTPRequestHandler):
    server: _EdgeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", "req-1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.hits.append((self.command, parts.path))
            count = sum(1 for _, p in self.server.hits if p == parts.path)
        path = parts.path
        if path == "/slow":
            time.sleep(float(query["s"][0]))
            self._send(200, b'{"slow": true}')
        elif path == "/flaky":  # 500 for the first `fail` calls, then 200
            if count <= int(query["fail"][0]):
                self._send(500, b"upstream exploded")
            else:
                self._send(200, json.dumps({"call": count}).encode())
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self._send(code, f"status {code} body".encode(), "text/plain")
        elif path == "/echo":
            self._send(
                200,
                json.dumps(
                    {
                        "method": self.command,
                        "query": query,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": raw.decode(),
                    }
                ).encode(),
            )
        elif path == "/text":
            self._send(200, b"plain words", "text/plain; charset=utf-8")
        elif path == "/big":
            self._send(200, b"x" * 200_000, "text/plain")
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/counter":  # {"n": calls so far}
            self._send(200, json.dumps({"n": count, "items": [{"ok": count >= 3}]}).encode())
        else:
            self._send(404, b'{"error": "no such thing"}')


class _EdgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Edge)
        self.hits: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, p in self.hits]


@pytest.fixture
def edge() -> Iterator[_EdgeServer]:
    server = _EdgeServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def exchange() -> Iterator[ExchangeAdminStub]:
    with ExchangeAdminStub(TOKEN) as stub:
        yield stub


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the registry ----------------------------------------------------------------------------

BUILTINS = {
    "manual.confirm": True,
    "manual.input": True,
    "http.request": False,
    "shell.exec": False,
    "wait.sleep": True,
    "wait.until": True,
    "notify.console": True,
}


@pytest.mark.parametrize(("name", "idempotent"), sorted(BUILTINS.items()))
def test_builtins_are_found_through_entry_points(name: str, idempotent: bool) -> None:
    act = default_registry.get(name)
    assert act.name == name
    assert act.idempotent is idempotent
    assert act.has_probe is (name == "wait.until")
    assert act.summary, f"{name} has no one-line summary"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_inputs_forbid_unknown_fields_and_describe_every_field(name: str) -> None:
    act = default_registry.get(name)
    with pytest.raises(ValidationError, match="extra"):
        act.parse({"no_such_field": 1})
    undocumented = [f for f, info in act.inputs.model_fields.items() if not info.description]
    assert undocumented == []


# --- manual.* --------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["done", " Done ", "DONE"])
def test_confirm_accepts_a_recorded_done(answer: str) -> None:
    out = call("manual.confirm", {"prompt": "Call custody"}, ctx(answers={"s": answer}))
    assert out == {"confirmed": True, "answer": answer.strip()}


@pytest.mark.parametrize("answer", ["yes", "ok", "no", "y"])
def test_confirm_takes_only_the_words_it_offers(answer: str) -> None:
    with pytest.raises(WaitForOperator) as waiting:
        call("manual.confirm", {"prompt": "Call custody"}, ctx(answers={"s": answer}))
    assert "answer done or failed" in waiting.value.prompt


@pytest.mark.parametrize("answer", ["failed", "Failed", "FAILED"])
def test_confirm_fails_without_retry_on_no(answer: str) -> None:
    with pytest.raises(ActionError, match="Call custody") as err:
        call("manual.confirm", {"prompt": "Call custody"}, ctx(answers={"s": answer}))
    assert err.value.retryable is False


def test_an_answer_confirm_does_not_understand_waits_for_another() -> None:
    with pytest.raises(WaitForOperator) as waiting:
        call("manual.confirm", {"prompt": "Call custody"}, ctx(answers={"s": "maybe"}))
    assert waiting.value.prompt == (
        "Call custody (not accepted: 'maybe' is not an answer: answer done or failed)"
    )
    assert waiting.value.choices == ["done", "failed"]


def test_an_answer_confirm_does_not_understand_is_asked_again_at_a_terminal() -> None:
    asked: list[str] = []
    answers = iter(["maybe", "done"])

    def asker(prompt: str, kind: str, choices: list[str] | None) -> str:
        asked.append(prompt)
        return next(answers)

    out = call("manual.confirm", {"prompt": "Call custody"}, ctx(interactive=asker))
    assert out == {"confirmed": True, "answer": "done"}
    assert asked == [
        "Call custody",
        "'maybe' is not an answer: answer done or failed. Call custody",
    ]


def test_confirm_asks_the_interactive_asker() -> None:
    asked: list[tuple[str, str, list[str] | None]] = []

    def asker(prompt: str, kind: str, choices: list[str] | None) -> str:
        asked.append((prompt, kind, choices))
        return "done"

    out = call("manual.confirm", {"prompt": "Call custody"}, ctx(interactive=asker))
    assert out["confirmed"] is True
    assert asked == [("Call custody", "confirm", ["done", "failed"])]


def test_a_recorded_answer_wins_over_asking_again() -> None:
    def asker(prompt: str, kind: str, choices: list[str] | None) -> str:
        raise AssertionError("must not ask when an answer is recorded")

    out = call("manual.confirm", {"prompt": "p"}, ctx(answers={"s": "done"}, interactive=asker))
    assert out["answer"] == "done"


def test_confirm_without_answer_or_asker_waits_for_an_operator() -> None:
    with pytest.raises(WaitForOperator) as wait:
        call("manual.confirm", {"prompt": "Call custody"})
    assert (wait.value.prompt, wait.value.kind) == ("Call custody", "confirm")
    assert wait.value.choices == ["done", "failed"]


def test_confirm_waits_when_the_asker_has_no_answer() -> None:
    with pytest.raises(WaitForOperator):
        call("manual.confirm", {"prompt": "p"}, ctx(interactive=lambda p, k, c: None))


def test_confirm_answer_for_another_step_does_not_count() -> None:
    with pytest.raises(WaitForOperator):
        call("manual.confirm", {"prompt": "p"}, ctx(answers={"other-step": "done"}))


def test_confirm_simulation_asks_nobody() -> None:
    out = simulate("manual.confirm", {"prompt": "Call custody"})
    assert out["simulated"] is True
    assert out["confirmed"] is True
    assert "Call custody" in out["would"]


@pytest.mark.parametrize(
    ("inputs", "answer", "value"),
    [
        ({"type": "string"}, "  INC-42 ", "INC-42"),
        ({"type": "integer"}, "42", 42),
        ({"type": "integer"}, "-7", -7),
        ({"type": "number"}, "2.5", 2.5),
        ({"type": "number"}, "3", 3),
        ({"type": "boolean"}, "yes", True),
        ({"type": "boolean"}, "False", False),
        ({"type": "string", "enum": ["ethereum", "tron"]}, "tron", "tron"),
        ({"type": "integer", "enum": [1, 2]}, "2", 2),
        ({"type": "string", "pattern": "^0x[0-9a-f]{4}$"}, "0xbeef", "0xbeef"),
    ],
)
def test_input_returns_a_typed_value(inputs: dict[str, Any], answer: str, value: Any) -> None:
    out = call("manual.input", {"prompt": "q", **inputs}, ctx(answers={"s": answer}))
    assert out == {"value": value}
    assert type(out["value"]) is type(value)


@pytest.mark.parametrize(
    ("inputs", "answer", "problem"),
    [
        ({"type": "integer"}, "4.2", "'4.2' is not an integer"),
        ({"type": "integer"}, "many", "'many' is not an integer"),
        ({"type": "number"}, "nan", "not a finite number"),
        ({"type": "number"}, "ten", "'ten' is not a number"),
        ({"type": "boolean"}, "perhaps", "'perhaps' is not a boolean"),
        ({"type": "string", "enum": ["ethereum", "tron"]}, "bitcoin", "not one of"),
        ({"type": "boolean", "enum": [True]}, "no", "not one of"),
        ({"type": "string", "pattern": "^0x[0-9a-f]{4}$"}, "0xBEEFY", "does not match"),
    ],
)
def test_input_refuses_a_bad_answer_naming_the_problem_and_waits_again(
    inputs: dict[str, Any], answer: str, problem: str
) -> None:
    with pytest.raises(WaitForOperator) as waiting:
        call("manual.input", {"prompt": "q", **inputs}, ctx(answers={"s": answer}))
    assert waiting.value.prompt.startswith("q (not accepted: ")
    assert problem in waiting.value.prompt


def test_input_offers_the_enum_as_choices() -> None:
    asked: list[Any] = []

    def asker(prompt: str, kind: str, choices: list[str] | None) -> str:
        asked.append((kind, choices))
        return "true"

    out = call(
        "manual.input",
        {"prompt": "halt?", "type": "boolean", "enum": [True, False]},
        ctx(interactive=asker),
    )
    assert out == {"value": True}
    assert asked == [("input", ["true", "false"])]


def test_input_without_answer_waits() -> None:
    with pytest.raises(WaitForOperator) as wait:
        call("manual.input", {"prompt": "Ticket number?", "type": "integer"})
    assert wait.value.kind == "input"


@pytest.mark.parametrize(
    "inputs",
    [
        {"type": "integer", "enum": ["one"]},
        {"type": "date"},
        {"pattern": "("},
        {"prompt": ""},
    ],
)
def test_input_definitions_are_checked_when_parsed(inputs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        default_registry.get("manual.input").parse({"prompt": "q", **inputs})


# --- http.request ----------------------------------------------------------------------------


def halt(exchange: ExchangeAdminStub, **extra: Any) -> dict[str, Any]:
    return {
        "method": "POST",
        "url": exchange.url + "/withdrawals/halt",
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "json": {"chain": "ethereum"},
        **extra,
    }


def test_request_halts_withdrawals_on_the_exchange(exchange: ExchangeAdminStub) -> None:
    out = call("http.request", halt(exchange, expect_status=[200]))
    assert out["status"] == 200
    assert out["json"] == {"chain": "ethereum", "halted": True, "changed": True}
    assert out["headers"]["content-type"] == "application/json"
    assert out["elapsed_ms"] >= 0
    assert out["truncated"] is False
    assert exchange.halted == {"ethereum"}
    [seen] = exchange.requests
    assert (seen.method, seen.path, seen.json) == (
        "POST",
        "/withdrawals/halt",
        {"chain": "ethereum"},
    )
    assert seen.headers["Content-Type"] == "application/json"
    assert TOKEN not in repr(seen)


def test_request_rejected_token_is_not_retryable_and_not_echoed(
    exchange: ExchangeAdminStub,
) -> None:
    inputs = halt(exchange, headers={"Authorization": "Bearer wrong-token", "X-Api-Key": TOKEN})
    with pytest.raises(ActionError) as err:
        call("http.request", inputs)
    message = str(err.value)
    assert err.value.retryable is False
    assert "POST" in message
    assert "/withdrawals/halt" in message
    assert "401" in message
    assert "missing or wrong bearer token" in message  # an excerpt of the body
    assert "wrong-token" not in message
    assert TOKEN not in message
    assert exchange.halted == set()


def test_request_server_error_is_retryable_then_succeeds(exchange: ExchangeAdminStub) -> None:
    exchange.fail_next(1, 503)
    with pytest.raises(ActionError, match="503") as err:
        call("http.request", halt(exchange))
    assert err.value.retryable is True
    assert exchange.halted == set()
    assert call("http.request", halt(exchange))["status"] == 200
    assert exchange.halted == {"ethereum"}


def test_request_500_then_200(edge: _EdgeServer) -> None:
    inputs = {"url": edge.url + "/flaky?fail=1"}
    with pytest.raises(ActionError, match="upstream exploded") as err:
        call("http.request", inputs)
    assert err.value.retryable is True
    assert call("http.request", inputs)["json"] == {"call": 2}


@pytest.mark.parametrize(
    ("status", "retryable"), [(404, False), (400, False), (409, False), (429, True), (502, True)]
)
def test_request_status_decides_whether_a_retry_may_help(
    edge: _EdgeServer, status: int, retryable: bool
) -> None:
    with pytest.raises(ActionError, match=f"GET .*/status/{status} returned HTTP {status}") as err:
        call("http.request", {"url": f"{edge.url}/status/{status}"})
    assert err.value.retryable is retryable
    assert f"status {status} body" in str(err.value)


def test_request_unexpected_success_status_fails(edge: _EdgeServer) -> None:
    with pytest.raises(ActionError, match=r"HTTP 200 \(expected \[201\]\)") as err:
        call("http.request", {"url": edge.url + "/text", "expect_status": [201]})
    assert err.value.retryable is False


def test_request_expected_error_status_succeeds(edge: _EdgeServer) -> None:
    out = call("http.request", {"url": edge.url + "/status/404", "expect_status": [404]})
    assert out["status"] == 404


def test_request_connection_refused_is_retryable() -> None:
    with pytest.raises(ActionError, match="connection failed") as err:
        call("http.request", {"url": f"http://127.0.0.1:{free_port()}/x"})
    assert err.value.retryable is True


def test_request_times_out(edge: _EdgeServer) -> None:
    started = time.monotonic()
    with pytest.raises(ActionTimeout, match=r"no response within 0\.3s"):
        call("http.request", {"url": edge.url + "/slow?s=3", "timeout": "300ms"})
    assert time.monotonic() - started < 2


def test_request_timeout_is_bounded_by_the_step(edge: _EdgeServer) -> None:
    started = time.monotonic()
    with pytest.raises(ActionTimeout):
        call("http.request", {"url": edge.url + "/slow?s=3", "timeout": 30}, ctx(timeout=0.3))
    assert time.monotonic() - started < 2


def test_request_after_the_step_timed_out_sends_nothing(edge: _EdgeServer) -> None:
    late = ctx(timeout=0.5, started=time.monotonic() - 1)
    with pytest.raises(ActionTimeout, match="already passed"):
        call("http.request", {"url": edge.url + "/echo"}, late)
    assert edge.paths() == []


def test_request_cancelled_sends_nothing(edge: _EdgeServer) -> None:
    context = ctx()
    context.cancelled.set()
    with pytest.raises(ActionError, match="cancelled"):
        call("http.request", {"url": edge.url + "/echo"}, context)
    assert edge.paths() == []


def test_request_sends_query_headers_and_body(edge: _EdgeServer) -> None:
    out = call(
        "http.request",
        {
            "method": "post",
            "url": edge.url + "/echo?a=1",
            "query": {"b": 2, "c": ["x", "y z"], "d": True},
            "headers": {"X-Trace": "t-1"},
            "body": "raw text",
        },
    )
    echoed = out["json"]
    assert echoed["method"] == "POST"
    assert echoed["query"] == {"a": ["1"], "b": ["2"], "c": ["x", "y z"], "d": ["true"]}
    assert echoed["headers"]["x-trace"] == "t-1"
    assert echoed["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert echoed["body"] == "raw text"
    assert out["headers"]["x-request-id"] == "req-1"


def test_request_json_body_keeps_an_explicit_content_type(edge: _EdgeServer) -> None:
    out = call(
        "http.request",
        {
            "method": "PUT",
            "url": edge.url + "/echo",
            "json": {"amount": 1.5, "to": ["a"]},
            "headers": {"content-type": "application/vnd.api+json"},
        },
    )
    assert json.loads(out["json"]["body"]) == {"amount": 1.5, "to": ["a"]}
    assert out["json"]["headers"]["content-type"] == "application/vnd.api+json"


def test_request_capture_modes(edge: _EdgeServer) -> None:
    text = call("http.request", {"url": edge.url + "/text", "capture": "text"})
    assert text["text"] == "plain words"
    assert "json" not in text
    nothing = call("http.request", {"url": edge.url + "/text", "capture": "none"})
    assert "json" not in nothing
    assert "text" not in nothing
    context = ctx()
    not_json = call("http.request", {"url": edge.url + "/text"}, context)
    assert not_json["json"] is None
    assert not_json["text"] == "plain words"
    assert any("not JSON" in note for note in context.notes)


def test_request_body_is_truncated_to_64_kib(edge: _EdgeServer) -> None:
    out = call("http.request", {"url": edge.url + "/big", "capture": "text"})
    assert out["truncated"] is True
    assert out["text"].startswith("x" * 65536)
    assert len(out["text"].encode()) == 64 * 1024


def test_request_head(edge: _EdgeServer) -> None:
    out = call("http.request", {"method": "HEAD", "url": edge.url + "/text"})
    assert out["status"] == 200
    assert out["json"] is None
    assert edge.paths() == ["/text"]


def test_request_does_not_follow_redirects(edge: _EdgeServer) -> None:
    with pytest.raises(ActionError, match="HTTP 302") as err:
        call("http.request", {"url": edge.url + "/redirect", "headers": {"Authorization": "x"}})
    assert err.value.retryable is False
    assert edge.paths() == ["/redirect"]


def test_request_error_messages_hide_credentials_in_the_url(edge: _EdgeServer) -> None:
    url = edge.url.replace("http://", "http://user:pw-123@") + "/status/403?token=tok-456"
    with pytest.raises(ActionError) as err:
        call("http.request", {"url": url})
    assert "pw-123" not in str(err.value)
    assert "tok-456" not in str(err.value)
    assert "/status/403" in str(err.value)


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({"url": "file:///etc/passwd"}, "only http:// and https://"),
        ({"url": "ftp://127.0.0.1/x"}, "only http:// and https://"),
        ({"url": "http:///x"}, "no host"),
        ({"url": "http://h/", "method": "TRACE"}, "method"),
        ({"url": "http://h/", "json": {}, "body": "x"}, "either json or body"),
        ({"url": "http://h/", "headers": {"X": "a\r\nInjected: 1"}}, "line break"),
        ({"url": "http://h/", "expect_status": [42]}, "not HTTP statuses"),
        ({"url": "http://h/", "timeout": "soon"}, "not a duration"),
        ({"url": "http://h/", "capture": "xml"}, "capture"),
    ],
)
def test_request_inputs_are_checked(inputs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        default_registry.get("http.request").parse(inputs)


def test_request_simulation_sends_nothing_and_shows_no_header_values(
    exchange: ExchangeAdminStub,
) -> None:
    out = simulate("http.request", halt(exchange, expect_status=[200]))
    assert exchange.requests == []
    assert out["simulated"] is True
    assert out["request"]["json"] == {"chain": "ethereum"}
    assert out["request"]["header_names"] == ["Authorization"]
    assert TOKEN not in json.dumps(out)
    assert out["status"] == 200


# --- shell.exec ------------------------------------------------------------------------------


def test_exec_captures_output_and_exit_code() -> None:
    out = call(
        "shell.exec",
        {"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"], "expect_exit": [0, 3]},
    )
    assert out == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n"}


def test_exec_unexpected_exit_fails_with_stderr() -> None:
    with pytest.raises(ActionError, match=r"exited with 2 \(expected \[0\]\): boom") as err:
        call("shell.exec", {"argv": ["sh", "-c", "echo boom >&2; exit 2"]})
    assert err.value.retryable is True


def test_exec_command_not_found_is_not_retryable(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="not found: no-such-program-xyz") as err:
        call("shell.exec", {"argv": ["no-such-program-xyz"]})
    assert err.value.retryable is False
    with pytest.raises(ActionError, match=r"not found: .*missing-dir"):
        call("shell.exec", {"argv": ["true"], "cwd": str(tmp_path / "missing-dir")})


def test_exec_runs_in_cwd(tmp_path: Path) -> None:
    out = call("shell.exec", {"argv": ["pwd"], "cwd": str(tmp_path)})
    assert Path(out["stdout"].strip()).resolve() == tmp_path.resolve()


def test_exec_scrubs_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRCTL_TEST_SECRET", "hunter2-secret-value")
    monkeypatch.setenv("IRCTL_TEST_PASSED", "visible")
    out = call(
        "shell.exec",
        {
            "argv": ["env"],
            "inherit_env": ["IRCTL_TEST_PASSED", "NOT_SET_ANYWHERE"],
            "env": {"EXTRA": "1"},
        },
    )
    seen = dict(line.split("=", 1) for line in out["stdout"].splitlines())
    assert "hunter2-secret-value" not in out["stdout"]
    assert "IRCTL_TEST_SECRET" not in seen
    assert seen["IRCTL_TEST_PASSED"] == "visible"
    assert seen["EXTRA"] == "1"
    assert seen["PATH"] == os.environ["PATH"]
    assert set(seen) <= {"PATH", "LANG", "LC_ALL", "HOME", "TZ", "IRCTL_TEST_PASSED", "EXTRA"}


def test_exec_arguments_are_not_interpreted_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    argv = ["printf", "%s|", "a b", "$HOME", f"; touch {marker}", "`id`", "*"]
    out = call("shell.exec", {"argv": argv, "cwd": str(tmp_path)})
    assert out["stdout"] == f"a b|$HOME|; touch {marker}|`id`|*|"
    assert not marker.exists()


def test_exec_stdin_is_empty() -> None:
    out = call("shell.exec", {"argv": ["cat"], "timeout": 5})
    assert out["stdout"] == ""


def test_exec_timeout_kills_the_process_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(ActionTimeout, match=r"still running after 0\.3s; killed"):
        call("shell.exec", {"argv": ["sleep", "30"], "timeout": 0.3})
    assert time.monotonic() - started < 3


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead
    except FileNotFoundError:
        return True


def test_exec_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    with pytest.raises(ActionTimeout):
        call("shell.exec", {"argv": ["sh", "-c", script], "timeout": 0.5})
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild)


def test_exec_step_timeout_bounds_the_program() -> None:
    started = time.monotonic()
    with pytest.raises(ActionTimeout):
        call("shell.exec", {"argv": ["sleep", "30"]}, ctx(timeout=0.3))
    assert time.monotonic() - started < 3


def test_exec_cancellation_stops_the_program() -> None:
    context = ctx()
    cancel_after(context, 0.2)
    started = time.monotonic()
    with pytest.raises(ActionError, match="cancelled") as err:
        call("shell.exec", {"argv": ["sleep", "30"]}, context)
    assert err.value.retryable is False
    assert time.monotonic() - started < 3


def test_exec_keeps_the_start_of_stdout_and_the_end_of_stderr() -> None:
    code = (
        "import sys; sys.stdout.write('a' * 100000 + 'END');"
        "sys.stderr.write('BEGIN' + 'b' * 100000)"
    )
    out = call("shell.exec", {"argv": [sys.executable, "-c", code]})
    assert out["stdout"].startswith("a" * 65536)
    assert "END" not in out["stdout"]
    assert out["stdout"].endswith("[truncated: 34467 more bytes]")
    assert out["stderr"].endswith("b" * 65536)
    assert "BEGIN" not in out["stderr"]
    assert out["stderr"].startswith("…[truncated: 34469 earlier bytes]")


def test_exec_reports_a_signal(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="killed by signal 9"):
        call("shell.exec", {"argv": ["sh", "-c", "kill -9 $$"]})


def test_exec_simulation_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRCTL_TEST_SECRET", "hunter2")
    target = tmp_path / "touched"
    out = simulate(
        "shell.exec",
        {
            "argv": ["touch", str(target)],
            "env": {"TOKEN": "abc-secret"},
            "inherit_env": ["IRCTL_TEST_SECRET"],
        },
    )
    assert not target.exists()
    assert out["simulated"] is True
    assert out["argv"] == ["touch", str(target)]
    assert "TOKEN" in out["env_names"]
    assert "abc-secret" not in json.dumps(out)
    assert "hunter2" not in json.dumps(out)


def test_exec_leaves_no_descriptor_of_irctl_open_in_the_program(tmp_path: Path) -> None:
    """Even one irctl was handed as inheritable (as a parent process may do)."""
    leaked = os.open(tmp_path / "held", os.O_WRONLY | os.O_CREAT, 0o600)
    os.set_inheritable(leaked, True)
    try:
        out = call("shell.exec", {"argv": ["ls", "/proc/self/fd"]})
    finally:
        os.close(leaked)
    # 0-2, and the descriptor ls opens to list the folder
    assert len(out["stdout"].split()) == 4, out["stdout"]


def test_exec_finds_the_program_on_the_path_the_step_gives(tmp_path: Path) -> None:
    (tmp_path / "irctl-only-here").write_text("#!/bin/sh\necho found $1\n", encoding="utf-8")
    (tmp_path / "irctl-only-here").chmod(0o755)
    with pytest.raises(ActionError, match="not found: irctl-only-here"):
        call("shell.exec", {"argv": ["irctl-only-here"]})
    path = f"{tmp_path}:{os.environ['PATH']}"
    out = call("shell.exec", {"argv": ["irctl-only-here", "x"], "env": {"PATH": path}})
    assert out["stdout"] == "found x\n"


def test_exec_reports_a_program_that_is_not_executable(tmp_path: Path) -> None:
    (tmp_path / "irctl-not-executable").write_text("#!/bin/sh\n", encoding="utf-8")
    for argv0, env in (
        (str(tmp_path / "irctl-not-executable"), {}),
        ("irctl-not-executable", {"PATH": str(tmp_path)}),
    ):
        with pytest.raises(ActionError, match=r"cannot start: .*Permission denied") as err:
            call("shell.exec", {"argv": [argv0], "env": env})
        assert err.value.retryable is False


def test_exec_program_gets_sigpipe_at_its_default() -> None:
    """irctl (Python) ignores SIGPIPE; a pipeline in the program must not inherit that."""
    out = call("shell.exec", {"argv": ["sh", "-c", "yes | head -n 1"], "timeout": 10})
    assert out == {"exit_code": 0, "stdout": "y\n", "stderr": ""}


# --- wait.* ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "seconds"), [(0.2, 0.2), ("200ms", 0.2), ("0.2s", 0.2)])
def test_sleep_sleeps(written: Any, seconds: float) -> None:
    started = time.monotonic()
    out = call("wait.sleep", {"seconds": written})
    assert time.monotonic() - started >= seconds * 0.95
    assert out == {"seconds": seconds}


def test_sleep_parses_durations() -> None:
    assert default_registry.get("wait.sleep").parse({"seconds": "2m"}).seconds == 120
    for bad in ("-1", -1, "soon", True):
        with pytest.raises(ValidationError):
            default_registry.get("wait.sleep").parse({"seconds": bad})


def test_sleep_wakes_when_cancelled() -> None:
    context = ctx()
    cancel_after(context, 0.1)
    started = time.monotonic()
    with pytest.raises(ActionError, match="cancelled"):
        call("wait.sleep", {"seconds": 30}, context)
    assert time.monotonic() - started < 2


def test_sleep_longer_than_the_step_timeout_fails_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(ActionTimeout, match="longer than what is left"):
        call("wait.sleep", {"seconds": 30}, ctx(timeout=5))
    assert time.monotonic() - started < 1


def test_sleep_simulation_does_not_sleep() -> None:
    started = time.monotonic()
    assert simulate("wait.sleep", {"seconds": "1h"})["seconds"] == 3600
    assert time.monotonic() - started < 1


def status_check(exchange: ExchangeAdminStub, **extra: Any) -> dict[str, Any]:
    return {
        "url": exchange.url + "/withdrawals/status?chain=ethereum",
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "json_path": "halted",
        "equals": True,
        "interval": "50ms",
        **extra,
    }


def test_until_waits_for_the_condition(exchange: ExchangeAdminStub) -> None:
    threading.Timer(0.3, exchange.halt, args=("ethereum",)).start()
    out = call("wait.until", status_check(exchange, timeout="5s"))
    assert out["value"] is True
    assert out["status"] == 200
    assert out["polls"] > 1
    assert len(exchange.requests_to("/withdrawals/status")) == out["polls"]


def test_until_times_out_saying_what_it_last_saw(exchange: ExchangeAdminStub) -> None:
    started = time.monotonic()
    with pytest.raises(ActionTimeout, match=r"did not hold within 0.4s .*halted = False"):
        call("wait.until", status_check(exchange, timeout="400ms"))
    assert 0.35 < time.monotonic() - started < 2


def test_until_is_bounded_by_the_step_timeout(exchange: ExchangeAdminStub) -> None:
    started = time.monotonic()
    with pytest.raises(ActionTimeout):
        call("wait.until", status_check(exchange, timeout="1m"), ctx(timeout=0.3))
    assert time.monotonic() - started < 2


def test_until_keeps_polling_through_server_errors(exchange: ExchangeAdminStub) -> None:
    exchange.halt("ethereum")
    exchange.fail_next(2, 503)
    out = call("wait.until", status_check(exchange, timeout="5s"))
    assert out["polls"] == 3


def test_until_gives_up_at_once_when_credentials_are_rejected(exchange: ExchangeAdminStub) -> None:
    inputs = status_check(exchange, timeout="5s", headers={"Authorization": "Bearer nope"})
    with pytest.raises(ActionError, match="401: credentials rejected") as err:
        call("wait.until", inputs)
    assert err.value.retryable is False
    assert len(exchange.requests) == 1


def test_until_status_only_and_list_paths(edge: _EdgeServer) -> None:
    assert call("wait.until", {"url": edge.url + "/text"})["polls"] == 1
    out = call(
        "wait.until",
        {"url": edge.url + "/counter", "json_path": "items.0.ok", "interval": 0.02, "timeout": 5},
    )
    assert out["polls"] == 3
    assert out["value"] is True


def test_until_true_is_not_one(edge: _EdgeServer) -> None:
    with pytest.raises(ActionTimeout):
        call(
            "wait.until",
            {
                "url": edge.url + "/counter",
                "json_path": "n",
                "equals": True,
                "timeout": 0.2,
                "interval": 0.05,
            },
        )


def test_until_cancelled_while_waiting(exchange: ExchangeAdminStub) -> None:
    context = ctx()
    cancel_after(context, 0.2)
    with pytest.raises(ActionError, match="cancelled"):
        call("wait.until", status_check(exchange, timeout="1m", interval="10s"), context)


def test_until_probe_reads_the_condition(exchange: ExchangeAdminStub) -> None:
    act = default_registry.get("wait.until")
    inputs = act.parse(status_check(exchange))
    assert act.call_probe(inputs, ctx()).state == "not_done"
    exchange.halt("ethereum")
    found = act.call_probe(inputs, ctx())
    assert found.state == "done"
    assert found.outputs["value"] is True
    rejected = act.parse(status_check(exchange, headers={"Authorization": "Bearer nope"}))
    assert act.call_probe(rejected, ctx()).state == "unknown"


def test_until_simulation_polls_nothing(exchange: ExchangeAdminStub) -> None:
    out = simulate("wait.until", status_check(exchange))
    assert exchange.requests == []
    assert out["value"] is True
    assert "halted == True" in out["would"]


@pytest.mark.parametrize(
    "inputs",
    [
        {"url": "file:///x"},
        {"url": "http://h/", "method": "POST"},
        {"url": "http://h/", "json_path": "a..b"},
    ],
)
def test_until_inputs_are_checked(inputs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        default_registry.get("wait.until").parse(inputs)


# --- notify.console --------------------------------------------------------------------------


def test_console_notes_the_message() -> None:
    context = ctx()
    out = call("notify.console", {"message": "Withdrawals halted", "level": "warning"}, context)
    assert out == {"message": "Withdrawals halted", "level": "warning"}
    assert context.notes == ["Withdrawals halted"]


def test_console_checks_its_level_and_simulates_quietly() -> None:
    with pytest.raises(ValidationError):
        default_registry.get("notify.console").parse({"message": "m", "level": "loud"})
    out = simulate("notify.console", {"message": "m"})
    assert out["level"] == "info"
    assert out["simulated"] is True
