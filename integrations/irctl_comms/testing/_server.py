"""The part the stand-ins share: a threaded HTTP server on 127.0.0.1, the request log, faults
and holds.  A subclass answers its API (:meth:`_StandIn.handle`) and says what its credential
is (:meth:`_StandIn.authorized`, :meth:`_StandIn.refused`)."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["Answer", "Held", "Request"]

#: What a stand-in answers: the HTTP status and the JSON body (None: an empty body).
Answer = tuple[int, Any]


@dataclass(frozen=True)
class Request:
    """One request as received: ``body`` is its JSON with the credential taken out, ``status``
    what was answered, ``authorized`` whether it carried the right credential."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorized: bool
    status: int


@dataclass
class Held:
    """A request held after it took effect: ``arrived`` is set when it is reached."""

    method: str
    path: str
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: float | None
    method: str | None
    path: str | None
    after_effect: bool
    body: Any

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )


class _StandIn:
    """The server, the request log, faults and holds; subclasses answer the API."""

    prefix = ""

    def __init__(self, *, port: int = 0) -> None:
        self.requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._held: list[Held] = []
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The API's base URL (what ``integrations.<name>.base_url`` is set to)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def rate_limit(
        self, times: int = 1, *, retry_after: float | None = 1, status: int = 429
    ) -> None:
        """Answer the next ``times`` requests ``status`` (429) with ``Retry-After``, untouched."""
        self.fail_next(status, times=times, retry_after=retry_after)

    def fail_next(
        self,
        status: int = 503,
        *,
        times: int = 1,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
        after_effect: bool = False,
        body: Any = None,
    ) -> None:
        """Answer the next ``times`` matching requests ``status``; before they take effect, or
        after (``after_effect``).  ``path`` matches a prefix of the path (prefix included)."""
        with self._lock:
            self._faults.append(
                _Fault(status, times, retry_after, method, path, after_effect, body)
            )

    def hold(self, method: str, path: str) -> Held:
        """Hold the next ``method path`` request after it takes effect, until released."""
        held = Held(method, path)
        with self._lock:
            self._held.append(held)
        return held

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The requests received, those for ``method`` and a ``path`` prefix if given."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (path is None or r.path.startswith(path))
            ]

    def close(self) -> None:
        with self._lock:
            for held in self._held:
                held.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses -------------------------------------------------------------------------

    def authorized(self, headers: Mapping[str, str], body: Any) -> bool:
        """Whether the request carries the right credential (recorded with it)."""
        raise NotImplementedError

    def refused(self) -> Answer | None:
        """The answer to a request without the right credential; None: ``handle`` decides."""
        raise NotImplementedError

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        raise NotImplementedError

    def unparsable(self) -> Answer:
        return 400, {"message": "the request body is not JSON"}

    def recorded_body(self, body: Any) -> Any:
        return body

    # -- the exchange ---------------------------------------------------------------------------

    def _fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def exchange(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str], Held | None]:
        url = urllib.parse.urlsplit(target)
        path, query = url.path, dict(urllib.parse.parse_qsl(url.query))
        try:
            body = json.loads(raw) if raw.strip() else None
            parsed = True
        except ValueError:
            body, parsed = None, False
        extra: dict[str, str] = {}
        with self._lock:
            ok = self.authorized(headers, body)
            fault = self._fault(method, path)
            if fault is not None and not fault.after_effect:
                status, answer = fault.status, fault.body or {"message": "injected fault"}
            elif not ok and (refusal := self.refused()) is not None:
                status, answer = refusal
            elif not parsed:
                status, answer = self.unparsable()
            else:
                status, answer = self.handle(method, path, query, body)
                if fault is not None:
                    status, answer = fault.status, fault.body or {"message": "injected fault"}
            if fault is not None and fault.retry_after is not None:
                extra["Retry-After"] = f"{fault.retry_after:g}"
            self.requests.append(
                Request(method, path, query, self.recorded_body(copy.deepcopy(body)), ok, status)
            )
            held = next((h for h in self._held if (h.method, h.path) == (method, path)), None)
            if held is not None:
                self._held.remove(held)
        return status, answer, extra, held


def _handler(standin: _StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_PATCH(self) -> None:
            self._answer("PATCH")

        def do_PUT(self) -> None:
            self._answer("PUT")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read .requests instead

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            status, answer, extra, held = standin.exchange(method, self.path, headers, raw)
            if held is not None:
                held.arrived.set()
                held.release.wait(60)
            data = b"" if answer is None else json.dumps(answer).encode()
            with contextlib.suppress(OSError):  # a client killed while held has gone
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

    return Handler
