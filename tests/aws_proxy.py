"""A loopback HTTP server in front of moto's, for what moto cannot show by itself.

Every request is forwarded to moto unchanged, except that a test may act just before a
JSON-protocol call is forwarded (``before``: another responder changes a WAF web ACL between
irctl's read and its write) or answer a call moto does not implement (``answer``: CloudTrail
LookupEvents).  Calls are named by their ``X-Amz-Target`` (``AWSWAF_20190729.UpdateWebACL``).
Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Before = Callable[[dict[str, Any]], None]
Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive", "server", "date"}


class AwsProxy:
    def __init__(self, upstream: str) -> None:
        address = urllib.parse.urlsplit(upstream)
        self.host, self.port = str(address.hostname), int(address.port or 80)
        self.before: dict[str, Before] = {}
        self.answer: dict[str, Answer] = {}
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers botocore's Expect: 100-continue at once

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    size = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(size) if size else b""
                body = b""
                while True:  # an S3 upload with a trailing checksum comes in chunks
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()

            def _any(self) -> None:
                body = self._body()
                target = self.headers.get("X-Amz-Target", "")
                proxy.seen.append(target)
                parsed = json.loads(body or b"{}") if target else {}
                if target in proxy.answer:
                    status, answer = proxy.answer[target](parsed)
                    self._reply(status, {"Content-Type": "application/x-amz-json-1.1"},
                                json.dumps(answer).encode())  # fmt: skip
                    return
                if target in proxy.before:
                    proxy.before[target](parsed)
                dropped = {"host", "expect", "transfer-encoding", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                # http.client, not urllib: urllib would add a form Content-Type to a body
                # that has none, and moto would read an S3 upload as a form
                upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    self._reply(response.status, dict(response.getheaders()), response.read())
                finally:
                    upstream.close()

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                head = self.command == "HEAD"  # no body, and the object's own length
                for key, value in headers.items():
                    if key.lower() not in _HOP or (head and key.lower() == "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def aws_proxy(aws: dict[str, Any]) -> Iterator[tuple[AwsProxy, dict[str, Any]]]:
    """A proxy in front of the test's moto, and the ``aws`` config that goes through it."""
    proxy = AwsProxy(aws["endpoint_url"])
    try:
        yield proxy, {**aws, "endpoint_url": proxy.endpoint}
    finally:
        proxy.close()
