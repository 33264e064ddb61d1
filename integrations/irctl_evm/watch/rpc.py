"""JSON-RPC over HTTP for ``irctl watch``: one kept-alive connection, requests in batches.

web3 is not used here: following a chain is a handful of methods read in bulk,
and a batch of plain JSON costs a fraction of web3's per-call formatting.  The
endpoint's URL is never written in a message: it may carry an API key.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

from irctl.errors import IrctlError, UsageError


class ChainUnreachable(IrctlError):
    """The node cannot be reached, or answered something that is not JSON-RPC."""


class RpcError(IrctlError):
    """The node answered a request with a JSON-RPC error (``code``: its code, when it gave one)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Rpc:
    """A JSON-RPC client for one endpoint (``call``, ``batch``); not shared between threads."""

    def __init__(self, url: str, *, timeout: float = 30.0, what: str = "--rpc") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{what} must be an http(s) URL, such as http://127.0.0.1:8545")
        self._scheme, self._host = parts.scheme, parts.hostname
        try:
            self._port = parts.port
        except ValueError as exc:
            raise UsageError(f"{what}: the port is not a number") from exc
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._what = what
        self._connection: http.client.HTTPConnection | None = None
        self._id = 0

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def call(self, method: str, *params: Any) -> Any:
        (result,) = self.batch([(method, list(params))])
        return result

    def batch(self, requests: list[tuple[str, list[Any]]]) -> list[Any]:
        """The results of ``(method, params)`` requests sent as one batch, in their order."""
        if not requests:
            return []
        first = self._id + 1
        self._id += len(requests)
        body = [
            {"jsonrpc": "2.0", "id": first + i, "method": method, "params": params}
            for i, (method, params) in enumerate(requests)
        ]
        answer = self._post(json.dumps(body[0] if len(body) == 1 else body).encode())
        items = answer if isinstance(answer, list) else [answer]
        by_id: dict[Any, Any] = {}
        for item in items:
            if isinstance(item, dict):
                by_id[item.get("id")] = item
        results = []
        for i, (method, _) in enumerate(requests):
            item = by_id.get(first + i)
            if item is None:
                raise ChainUnreachable(f"the node at {self._what} left {method} unanswered")
            if item.get("error") is not None:
                error = item["error"]
                message = error.get("message") if isinstance(error, dict) else error
                code = error.get("code") if isinstance(error, dict) else None
                raise RpcError(
                    f"{method}: the node at {self._what} answered: {message}",
                    code if isinstance(code, int) else None,
                )
            results.append(item.get("result"))
        return results

    def _post(self, body: bytes) -> Any:
        for attempt in (1, 2):  # a kept-alive connection the server closed is opened again once
            connection = self._connect()
            try:
                connection.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or isinstance(exc, socket.timeout | ConnectionRefusedError):
                    raise ChainUnreachable(
                        f"the node at {self._what} is unreachable ({_reason(exc)})"
                    ) from exc
                continue
            if response.status != 200:
                raise ChainUnreachable(f"the node at {self._what} answered HTTP {response.status}")
            try:
                return json.loads(data)
            except ValueError as exc:
                raise ChainUnreachable(f"the node at {self._what} answered no JSON") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout,
                    context=ssl.create_default_context(),
                )  # fmt: skip
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._connection


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def quantity(value: Any, what: str = "a quantity") -> int:
    """A JSON-RPC quantity (``"0x1a"``) as an int; anything else is the node's fault."""
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ChainUnreachable(f"the node answered {value!r} where {what} belongs")
