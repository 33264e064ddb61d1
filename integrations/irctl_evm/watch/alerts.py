"""A finding POSTed as a generic irctl alert, signed as ``irctl serve``'s ``/alerts/NAME`` checks.

::

    POST <alert URL>
    Content-Type: application/json
    X-Irctl-Timestamp: 1740147215
    X-Irctl-Signature: v1=<hex HMAC-SHA256(secret, "v1:" + timestamp + ":" + raw body)>

    <the finding's JSON>

The timestamp is the moment of sending (a receiver refuses stale ones); a retry is signed
anew.  The secret is read from an environment variable and never written anywhere.  A 2xx
delivers the finding; 409 (already received) and 422 (read, and taken by no rule) settle it;
any other answer or none keeps it in the outbox (see :class:`Outcome`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from irctl.errors import UsageError

#: Seconds between attempts of one delivery; after the last, the finding stays in the outbox.
BACKOFF = (0.5, 1.0, 2.0, 4.0)

#: Answers that settle a finding though it started nothing: 409, the endpoint has it already
#: (``irctl serve`` claims each alert id: a finding posted again after a crash); 422, it read
#: the finding and no rule of the trigger takes it (or it cannot be used as it is).
SETTLED = (409, 422)


@dataclass(frozen=True)
class Outcome:
    """How one delivery ended: ``delivered``; ``settled`` (409, 422: not to be sent again);
    ``refused`` (another 4xx: kept, and tried again on the next pass); ``unreachable``
    (no answer, or 5xx after every retry: kept)."""

    status: str
    problem: str = ""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def body_of(finding: dict[str, Any]) -> bytes:
    return json.dumps(finding, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class AlertTarget:
    """Where findings go and the secret they are signed with (``repr`` hides the secret)."""

    url: str
    secret: bytes = field(repr=False)
    timeout: float = 10.0
    backoff: tuple[float, ...] = BACKOFF
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise UsageError("--alert-url must be an http(s) URL")
        if not self.secret:
            raise UsageError("the alert secret is empty")

    def post(self, finding: dict[str, Any]) -> Outcome:
        """Deliver ``finding``, retrying with backoff while the endpoint cannot be reached or
        answers 5xx, 408, 425 or 429."""
        body = body_of(finding)
        problem = ""
        for pause in (*self.backoff, None):
            stamp = str(int(self.clock()))
            request = urllib.request.Request(  # noqa: S310 - the URL is checked to be http(s)
                self.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "X-Irctl-Timestamp": stamp,
                    "X-Irctl-Signature": signature(self.secret, stamp, body),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                    answer.read()
                return Outcome("delivered")
            except urllib.error.HTTPError as exc:
                said = _said(exc)
                problem = f"the alert endpoint answered HTTP {exc.code}{said}"
                if exc.code in SETTLED:
                    return Outcome("settled", problem)
                if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
                    return Outcome("refused", problem)
            except (OSError, ValueError) as exc:
                problem = f"the alert endpoint is unreachable ({_reason(exc)})"
            if pause is not None:
                self.sleep(pause)
        return Outcome("unreachable", problem)


def _said(exc: urllib.error.HTTPError) -> str:
    """The endpoint's own reason (``irctl serve`` answers ``{"error": ...}``), shortened."""
    try:
        answer = json.loads(exc.read(4096) or b"{}")
    except (OSError, ValueError):
        return ""
    error = answer.get("error") if isinstance(answer, dict) else None
    return f": {str(error)[:200]}" if isinstance(error, str) and error else ""


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
