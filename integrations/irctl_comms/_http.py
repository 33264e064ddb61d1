"""Settings, secrets and a JSON-over-HTTPS client, shared by the ``page`` and ``status_page``
actions (``email`` shares the settings and secrets).

Settings live under ``integrations.<section>`` in irctl.yaml and reach an action as
``ctx.config``.  For every one of them:

- A credential is a *reference* (``env:VAR``, ``file:PATH``, ``aws-sm:NAME[#key]``), read
  while the step runs.  An error names the setting, never the value; whatever a server
  answers has the credential masked out before it reaches an error message; outputs, notes
  and facts never hold it.  (irctl masks the secrets a runbook resolves; it cannot know a
  value an integration resolves for itself, so only this code keeps it out of the record.)
- ``base_url`` is ``https://``, or ``http://`` to a loopback address only (a stand-in on
  127.0.0.1): a credential never crosses a network in the clear.  A redirect is never
  followed (urllib would carry the ``Authorization`` header to wherever it points).
- A rate-limited request (429; Statuspage also answers 420) is waited out as its
  ``Retry-After`` asks, at most ``rate_limit_retries`` times, never longer than
  ``max_retry_wait`` or than the step has left, and not once the run is cancelled; then it
  fails as retryable.  A 503 with ``Retry-After`` is waited out the same way where the
  caller says re-sending is safe.  Any other 5xx, and a failed connection, is a retryable
  error (the runbook's ``retry:`` decides); a refused credential or request is not.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

from irctl.errors import ActionError, ActionTimeout, SecretError
from irctl.runbook.render import MIN_SCANNED, REDACTED
from irctl.secrets import resolve

__all__ = [
    "Answer",
    "JsonApi",
    "base_url",
    "configured_secret",
    "is_loopback",
    "is_reference",
    "reference_secret",
    "retry_after",
    "setting",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_RATE_LIMIT_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 30.0
#: An answer is read up to this size: an API's JSON, not a download.
ANSWER_LIMIT = 1024 * 1024
REFERENCE_SCHEMES = ("env:", "file:", "aws-sm:")
USER_AGENT = "irctl-comms/0.1"


# --- settings -----------------------------------------------------------------------------------


def setting(config: Mapping[str, Any], section: str, name: str, kind: type[T], default: T) -> T:
    """``integrations.<section>.<name>`` as ``kind``; a wrong type is a non-retryable error."""
    value = config.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        names = {str: "string", int: "whole number", float: "number", bool: "true or false"}
        raise ActionError(
            f"integrations.{section}.{name} must be a {names.get(kind, kind.__name__)}, "
            f"not {type(value).__name__}",
            retryable=False,
        )
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url(config: Mapping[str, Any], section: str, default: str) -> str:
    """``integrations.<section>.base_url`` without its trailing ``/``: https, or http to loopback.

    The URL is not repeated in the error: one with a password in it must not reach the record.
    """
    url = setting(config, section, "base_url", str, default)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    problem = ""
    if parts.username is not None or parts.password is not None:
        problem = "it holds a user name or password (put credentials in their own setting)"
    elif parts.query or parts.fragment:
        problem = "it has a query or fragment"
    elif not host:
        problem = "it names no host"
    elif parts.scheme == "http" and not is_loopback(host):
        problem = f"http:// to {host} would send the credential in the clear"
    elif parts.scheme not in ("https", "http"):
        problem = "it is not an https:// URL"
    if problem:
        raise ActionError(
            f"integrations.{section}.base_url must be an https:// URL (http:// only to a "
            f"loopback address such as 127.0.0.1, for a stand-in): {problem}",
            retryable=False,
        )
    return url.rstrip("/")


# --- secrets ------------------------------------------------------------------------------------


def is_reference(value: object) -> bool:
    """Whether ``value`` is a secret reference (``env:``, ``file:``, ``aws-sm:``) with a target."""
    return (
        isinstance(value, str)
        and value.startswith(REFERENCE_SCHEMES)
        and bool(value.split(":", 1)[1].strip())
    )


def reference_secret(config: Mapping[str, Any], where: str, reference: str, what: str) -> str:
    """The value behind ``reference`` (written at ``where``); the error names ``where`` only.

    A relative ``file:`` path is read from the workspace (``_workspace``, which the engine
    adds to the settings).
    """
    if not is_reference(reference):
        raise ActionError(
            f"{what}: {where} must be a secret reference (env:VAR, file:PATH or "
            "aws-sm:NAME), never the value itself",
            retryable=False,
        )
    workspace = config.get("_workspace")
    try:
        return resolve(
            where, reference, base=Path(workspace) if isinstance(workspace, str) else None
        )
    except SecretError as exc:
        raise ActionError(f"{what}: {exc}", retryable=False) from exc


def configured_secret(
    config: Mapping[str, Any], section: str, name: str, what: str, *, example: str
) -> str:
    """The value behind the reference ``integrations.<section>.<name>``, which must be set."""
    where = f"integrations.{section}.{name}"
    reference = config.get(name)
    if reference is None or reference == "":
        raise ActionError(
            f"{what}: {where} is not set in irctl.yaml; set it to a secret reference such as "
            f"{example}",
            retryable=False,
        )
    if not isinstance(reference, str):
        raise ActionError(f"{what}: {where} must be a secret reference", retryable=False)
    return reference_secret(config, where, reference, what)


def masked(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by the redaction marker.

    As irctl's own redaction does, a value shorter than ``MIN_SCANNED`` is not searched for:
    it would rewrite ordinary words (a two-letter password inside "refused").
    """
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= MIN_SCANNED:
            text = text.replace(value, REDACTED)
    return text


# --- the client ---------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would send the Authorization header along."""

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


_OPENER = urllib.request.build_opener(_NoRedirect())


def retry_after(headers: Message | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date), or None."""
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    raw = str(raw).strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: its status, its JSON (None when empty or not JSON) and its text."""

    status: int
    body: Any
    text: str
    retry_after: float | None = None


Reason = Callable[[Answer], str]


def _reason(answer: Answer) -> str:
    body = answer.body
    if isinstance(body, dict):
        for key in ("message", "error", "errors"):
            found = body.get(key)
            if isinstance(found, list):
                found = "; ".join(str(item) for item in found)
            if found:
                return str(found)
    return answer.text[:200].strip() or "no reason given"


class JsonApi:
    """A JSON API for one step: base URL, headers, the credentials to mask, time left.

    ``credential`` names where the credential came from (for a refused one);
    ``resend`` is the statuses a request is sent again after (``Retry-After``): the
    rate-limit ones always, 503 only with the header and where the caller allows it.
    """

    def __init__(
        self,
        *,
        service: str,
        section: str,
        config: Mapping[str, Any],
        base: str,
        headers: Mapping[str, str],
        secrets: Iterable[str],
        credential: str,
        timeout: float | None,
        cancelled: threading.Event | None = None,
        note: Callable[[str], None] | None = None,
        reason: Reason = _reason,
        rate_limited: frozenset[int] = frozenset({429}),
    ) -> None:
        self.service = service
        self.section = section
        self.base = base
        self.credential = credential
        self._headers = dict(headers)
        self._secrets = tuple(s for s in secrets if s)
        self._cancelled = cancelled or threading.Event()
        self._note = note
        self._reason = reason
        self.rate_limited = rate_limited
        self.per_request = setting(config, section, "timeout", float, DEFAULT_TIMEOUT)
        self.retries = setting(
            config, section, "rate_limit_retries", int, DEFAULT_RATE_LIMIT_RETRIES
        )
        self.longest = setting(config, section, "max_retry_wait", float, DEFAULT_MAX_RETRY_WAIT)
        if self.per_request <= 0 or self.retries < 0 or self.longest < 0:
            raise ActionError(
                f"integrations.{section}: timeout must be positive, rate_limit_retries and "
                "max_retry_wait not negative",
                retryable=False,
            )
        if timeout is not None and timeout <= 0:
            raise ActionTimeout(f"{service}: the step's timeout has already passed")
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def mask(self, text: str) -> str:
        return masked(text, self._secrets)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        what: str,
        accept: Iterable[int] = (),
        resend_503: bool = True,
    ) -> Answer:
        """One request; a 2xx answer or one whose status is in ``accept``, else ActionError."""
        accepted = set(accept)
        waits = 0
        while True:
            answer = self._send(method, path, body, what)
            if 200 <= answer.status < 300 or answer.status in accepted:
                return answer
            wait = self._wait_for(answer, resend_503)
            if wait is not None and waits < self.retries and self._fits(wait):
                waits += 1
                if self._note is not None:
                    self._note(
                        f"{self.service}: {what} answered HTTP {answer.status}; "
                        f"waiting {wait:g} s as Retry-After asks, then sending it again"
                    )
                if self._cancelled.wait(wait):
                    raise ActionError(
                        f"{self.service}: cancelled while waiting to send {what} again",
                        retryable=False,
                    )
                continue
            raise self._error(answer, what)

    def _wait_for(self, answer: Answer, resend_503: bool) -> float | None:
        if answer.status in self.rate_limited:
            return 1.0 if answer.retry_after is None else answer.retry_after
        if answer.status == 503 and resend_503:
            return answer.retry_after
        return None

    def _fits(self, wait: float) -> bool:
        if wait > self.longest or self._cancelled.is_set():
            return False
        return self._deadline is None or time.monotonic() + wait < self._deadline

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _send(self, method: str, path: str, body: Any, what: str) -> Answer:
        if self._cancelled.is_set():
            raise ActionError(f"{self.service}: cancelled before {what}", retryable=False)
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            raise ActionTimeout(f"{self.service}: the step's timeout passed before {what}")
        timeout = self.per_request if remaining is None else min(self.per_request, remaining)
        request = urllib.request.Request(  # noqa: S310 - base_url() allows https and loopback http
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode("utf-8"),
            headers={
                **self._headers,
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
        )
        try:
            with _OPENER.open(request, timeout=max(0.001, timeout)) as response:
                return self._answer(response.status, response.read(ANSWER_LIMIT), response.headers)
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read(ANSWER_LIMIT)
            except (OSError, http.client.HTTPException):
                raw = b""
            return self._answer(exc.code, raw, exc.headers)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            timed_out = isinstance(reason, TimeoutError)
            explained = "timed out" if timed_out else (str(reason) or type(reason).__name__)
            raise ActionError(
                f"{self.service} is unreachable at {self.base} ({what}: {self.mask(explained)})",
                retryable=True,
            ) from exc

    def _answer(self, status: int, raw: bytes, headers: Message | None) -> Answer:
        text = self.mask(raw.decode("utf-8", "replace"))
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError:
            body = None
        return Answer(status, body, text, retry_after(headers))

    def _error(self, answer: Answer, what: str) -> ActionError:
        status = answer.status
        reason = self.mask(self._reason(answer))
        if status in (401, 403):
            return ActionError(
                f"{self.service} refused the credential in {self.credential} ({what}: HTTP "
                f"{status}, {reason})",
                retryable=False,
            )
        if status in self.rate_limited:
            asks = (
                f" and asks to wait {answer.retry_after:g} s (Retry-After)"
                if answer.retry_after is not None
                else ""
            )
            return ActionError(
                f"{self.service} rate-limited {what} (HTTP {status}){asks}; the waits ran out "
                "or do not fit the step's time",
                retryable=True,
            )
        if status >= 500:
            later = (
                f"; it asks to wait {answer.retry_after:g} s (Retry-After)"
                if answer.retry_after is not None
                else ""
            )
            return ActionError(
                f"{self.service} failed {what}: HTTP {status} ({reason}){later}", retryable=True
            )
        if 300 <= status < 400:
            return ActionError(
                f"{self.service} answered {what} with a redirect (HTTP {status}), which irctl "
                f"never follows: check integrations.{self.section}.base_url",
                retryable=False,
            )
        return ActionError(
            f"{self.service} refused {what}: HTTP {status} ({reason})", retryable=False
        )
