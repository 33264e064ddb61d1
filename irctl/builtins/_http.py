"""One HTTP exchange over urllib, shared by ``http.request`` and ``wait.until``.

Redirects are not followed: urllib would forward the request's headers (an
``Authorization`` with an admin token) to whatever host a ``Location`` names.
A 3xx comes back as the response, like any other status.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from irctl.errors import ActionError, ActionTimeout

if TYPE_CHECKING:  # the network modules load when a request is sent (~10 ms), not to validate
    import urllib.request
    from email.message import Message

USER_AGENT = "irctl/0.1"

#: Response headers worth keeping in a step's outputs.
KEPT_HEADERS = ("content-type", "content-length", "location", "etag", "retry-after", "x-request-id")


@lru_cache(maxsize=1)
def _opener() -> urllib.request.OpenerDirector:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self,
            req: urllib.request.Request,
            fp: Any,
            code: int,
            msg: str,
            headers: Message,
            newurl: str,
        ) -> urllib.request.Request | None:
            return None

    return urllib.request.build_opener(NoRedirect())


def check_url(url: str) -> str:
    """Only absolute ``http``/``https`` URLs with a host (for input validators)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http:// and https:// URLs are allowed, not {parts.scheme or url!r}")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return url


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not name or any(c in name for c in "\r\n: \t"):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"the value of header {name!r} contains a line break")
    return headers


def shown(url: str) -> str:
    """The URL as it may appear in messages: no user:password, no query values."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, "…" if parts.query else "", "")
    )


def with_query(url: str, query: dict[str, Any]) -> str:
    """``url`` with ``query`` appended to whatever query string it already has."""
    if not query:
        return url
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        for one in value if isinstance(value, list) else [value]:
            pairs.append((key, _query_value(one)))
    parts = urllib.parse.urlsplit(url)
    extra = urllib.parse.urlencode(pairs)
    joined = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=joined))


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes
    truncated: bool
    elapsed_ms: float

    def kept_headers(self) -> dict[str, str]:
        return {h: v for h in KEPT_HEADERS if (v := self.headers.get(h)) is not None}

    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> tuple[bool, Any]:
        """(parsed, value): the body as JSON, or (False, None) when it is not JSON."""
        if self.truncated or not self.body.strip():
            return False, None
        try:
            return True, json.loads(self.text())
        except ValueError:
            return False, None


def fetch(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    data: bytes | None,
    timeout: float,
    limit: int,
) -> Response:
    """Send one request; read at most ``limit`` bytes of the body.

    Any status comes back as a :class:`Response`; a timeout raises
    :class:`ActionTimeout` and a failed connection a retryable
    :class:`ActionError`.  Messages never include the request's headers.
    """
    import http.client
    import socket
    import ssl
    import urllib.error
    import urllib.request

    where = f"{method} {shown(url)}"
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - check_url
    request.add_header("User-Agent", USER_AGENT)
    for name, value in headers.items():
        request.add_header(name, value)
    started = time.monotonic()
    try:
        try:
            response = _opener().open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:  # a non-2xx status is still a response
            response = exc
        with response:
            body = response.read(limit + 1) if method != "HEAD" else b""
            status = int(response.status)
            reply_headers = response.headers
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            raise ActionTimeout(f"{where}: no response within {timeout:g}s") from exc
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ActionError(
                f"{where}: TLS certificate rejected: {reason}", retryable=False
            ) from exc
        raise ActionError(f"{where}: connection failed: {reason}", retryable=True) from exc
    except TimeoutError as exc:
        raise ActionTimeout(f"{where}: no response within {timeout:g}s") from exc
    except ValueError as exc:  # urllib's and http.client's checks of the request itself
        raise ActionError(f"{where}: invalid request: {exc}", retryable=False) from exc
    except OSError as exc:  # reset, refused mid-way, broken pipe, http.client errors
        raise ActionError(f"{where}: connection failed: {exc}", retryable=True) from exc
    except http.client.HTTPException as exc:  # the server broke the protocol
        raise ActionError(
            f"{where}: bad response: {type(exc).__name__}: {exc}", retryable=True
        ) from exc
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    return Response(status, reply_headers, body[:limit], len(body) > limit, elapsed_ms)


def status_ok(status: int, expected: list[int] | None) -> bool:
    return 200 <= status < 300 if expected is None else status in expected


def retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


# Field types shared by the inputs of http.request and wait.until.
Url = Annotated[str, AfterValidator(check_url)]
Headers = Annotated[dict[str, str], AfterValidator(check_headers)]
Upper = BeforeValidator(_upper)  # methods are case-insensitive
