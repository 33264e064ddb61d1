"""One slack-sdk ``WebClient`` per action call, built from ``integrations.slack``; errors wrapped.

The settings read here (``irctl.yaml``)::

    integrations:
      slack:
        token: env:SLACK_BOT_TOKEN    # a secret reference (env: or file:), never the token
        channel: "#incidents"         # default channel of slack.post and slack.invite
        base_url: https://slack.com/api/   # optional: a sandbox or the local stand-in
        timeout: 10                   # optional: seconds per HTTP request (capped by the step's)
        rate_limit_retries: 3         # optional: 429s waited out (Retry-After) before failing
        max_retry_wait: 30            # optional: longest Retry-After waited for, in seconds

Every Slack failure becomes a :class:`SlackError` (an :class:`ActionError`):
retryable for 429, 5xx and connection problems, not for a refused token, an
unknown channel or user, or a bad argument.  slack-sdk is imported only when
a client is built or a call is made.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from irctl.actions import preflight
from irctl.errors import ActionError, ActionTimeout, SecretError
from irctl.secrets import resolve

if TYPE_CHECKING:
    from slack_sdk import WebClient

__all__ = [
    "SlackError",
    "call",
    "channel_id",
    "client",
    "find_channel",
    "setting",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_RATE_LIMIT_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 30.0
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_PAGES = 100  # conversations.list pages read at most (200 channels each)

# Slack error codes a retry may fix; any other ok:false is a mistake to fix first.
RETRYABLE = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
HINTS = {
    "not_authed": "no token was sent; set integrations.slack.token",
    "invalid_auth": "the token in integrations.slack.token was rejected; check it is the bot token",
    "token_revoked": "the token in integrations.slack.token was revoked; issue a new one",
    "token_expired": "the token in integrations.slack.token expired; issue a new one",
    "account_inactive": "the token belongs to a deactivated user or app",
    "not_allowed_token_type": "this method needs another kind of token (bot xoxb- or app xapp-)",
    "channel_not_found": "check the name or id; invite the bot to a private channel",
    "not_in_channel": "invite the bot to the channel",
    "is_archived": "the channel is archived; unarchive it in Slack or use another",
    "user_not_found": "check the operator's slack id in irctl.yaml",
    "no_text": "give text or blocks",
}


class SlackError(ActionError):
    """A Slack Web API call failed.

    ``method`` is the Web API method (``chat.postMessage``); ``error`` is
    Slack's code (``channel_not_found``), ``ratelimited``, ``http_503``,
    ``unreachable`` or ``timeout``.
    """

    def __init__(self, message: str, *, method: str, error: str, retryable: bool) -> None:
        super().__init__(message, retryable=retryable)
        self.method = method
        self.error = error


# --- settings -----------------------------------------------------------------------------------


def setting(config: Mapping[str, Any], name: str, kind: type[T], default: T) -> T:
    """``integrations.slack.<name>`` as ``kind``; a wrong type is a non-retryable error."""
    value = config.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise ActionError(
            f"integrations.slack.{name} must be a {kind.__name__}, not {type(value).__name__}",
            retryable=False,
        )
    return value


def token(config: Mapping[str, Any]) -> str:
    """The bot token behind ``integrations.slack.token``; errors name the setting, never a value."""
    reference = config.get("token")
    if reference is None or reference == "":
        raise ActionError(
            "Slack: integrations.slack.token is not set in irctl.yaml; "
            "set it to a secret reference such as env:SLACK_BOT_TOKEN",
            retryable=False,
        )
    if not isinstance(reference, str) or not reference.startswith(("env:", "file:", "aws-sm:")):
        # a pasted token must not end up in an error message (or the journal)
        raise ActionError(
            "Slack: integrations.slack.token must be a secret reference (env:VAR or file:PATH), "
            "not the token itself",
            retryable=False,
        )
    try:
        return resolve("slack token", reference)
    except SecretError as exc:
        raise ActionError(
            f"Slack: cannot read integrations.slack.token: {exc}", retryable=False
        ) from exc


# --- the client ---------------------------------------------------------------------------------


def client(
    config: Mapping[str, Any],
    *,
    timeout: float | None,
    cancelled: threading.Event | None = None,
) -> WebClient:
    """A ``WebClient`` for ``config`` (the workspace's ``integrations.slack``).

    ``timeout`` is what is left of the step (None: no limit): each HTTP request
    and all rate-limit waits together fit in it.  ``cancelled`` cuts a
    rate-limit wait short.  A 429 is waited out (``Retry-After``) at most
    ``rate_limit_retries`` times; a refused connection is retried once.
    """
    from slack_sdk import WebClient

    secret = token(config)
    per_request = setting(config, "timeout", float, DEFAULT_TIMEOUT)
    retries = setting(config, "rate_limit_retries", int, DEFAULT_RATE_LIMIT_RETRIES)
    longest = setting(config, "max_retry_wait", float, DEFAULT_MAX_RETRY_WAIT)
    base_url = setting(config, "base_url", str, "https://slack.com/api/")
    if per_request <= 0 or retries < 0 or longest < 0:
        raise ActionError(
            "integrations.slack: timeout must be positive, rate_limit_retries and "
            "max_retry_wait not negative",
            retryable=False,
        )
    if not base_url.endswith("/"):
        base_url += "/"
    if timeout is not None and timeout <= 0:
        raise ActionTimeout("Slack: the step's timeout has already passed")
    deadline = None if timeout is None else time.monotonic() + timeout
    if timeout is not None:
        per_request = min(per_request, max(timeout, 0.001))
    return WebClient(
        token=secret,
        base_url=base_url,
        timeout=max(1, math.ceil(per_request)),
        retry_handlers=[
            _rate_limit_handler(retries, longest=longest, deadline=deadline, cancelled=cancelled),
            _refused_handler(),
        ],
    )


def _retry_after(headers: Mapping[str, Any]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return 1.0
    return 1.0


def _rate_limit_handler(
    retries: int,
    *,
    longest: float,
    deadline: float | None,
    cancelled: threading.Event | None,
) -> Any:
    """slack-sdk's ``RateLimitErrorRetryHandler``, bounded by count, wait, deadline and cancel.

    The stock handler sleeps ``int(Retry-After) + random()`` with ``time.sleep``
    whatever the step has left; this one waits exactly ``Retry-After``, gives up
    at once when that is longer than ``max_retry_wait`` or than the step has
    left, and wakes when the run is cancelled.
    """
    from slack_sdk.http_retry import RateLimitErrorRetryHandler

    class Bounded(RateLimitErrorRetryHandler):
        def _can_retry(
            self, *, state: Any, request: Any, response: Any = None, error: Any = None
        ) -> bool:
            if response is None or response.status_code != 429:
                return False
            wait = _retry_after(response.headers)
            if wait > longest:
                return False
            if deadline is not None and time.monotonic() + wait >= deadline:
                return False
            return not (cancelled is not None and cancelled.is_set())

        def prepare_for_next_attempt(
            self, *, state: Any, request: Any, response: Any = None, error: Any = None
        ) -> None:
            wait = _retry_after(response.headers) if response is not None else 1.0
            if cancelled is not None:
                if cancelled.wait(wait):
                    return  # next_attempt_requested stays False: the 429 is answered
            else:
                time.sleep(wait)
            state.next_attempt_requested = True
            state.increment_current_attempt()

    return Bounded(max_retry_count=retries)


def _refused_handler() -> Any:
    """One quick retry of a refused connection (the request never left); never of a reset one."""
    from urllib.error import URLError

    from slack_sdk.http_retry import ConnectionErrorRetryHandler, FixedValueRetryIntervalCalculator

    class Refused(ConnectionErrorRetryHandler):
        def _can_retry(
            self, *, state: Any, request: Any, response: Any = None, error: Any = None
        ) -> bool:
            reason = error.reason if isinstance(error, URLError) else error
            return response is None and isinstance(reason, ConnectionRefusedError)

    return Refused(max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0.2))


# --- calls --------------------------------------------------------------------------------------


def call(fn: Callable[[], T], what: str, *, detail: str = "", base_url: str = "") -> T:
    """Run ``fn`` (one slack-sdk call to the Web API method ``what``); wrap what goes wrong.

    ``detail`` names the object for the message: ``Slack refused chat.postMessage:
    channel_not_found (channel #nope): check the name or id; ...``.
    """
    from http.client import HTTPException
    from urllib.error import URLError

    from slack_sdk.errors import SlackApiError, SlackClientError

    about = f" ({detail})" if detail else ""
    try:
        return fn()
    except SlackApiError as exc:
        response = exc.response
        status = int(getattr(response, "status_code", 200) or 200)
        data = getattr(response, "data", None)
        code = str(data.get("error", "")) if isinstance(data, dict) else ""
        if status == 429:
            wait = _retry_after(getattr(response, "headers", {}) or {})
            raise SlackError(
                f"Slack rate-limited {what}{about} and asks to wait {wait:g} s (Retry-After); "
                "the retries ran out or the wait does not fit the step's time",
                method=what,
                error="ratelimited",
                retryable=True,
            ) from exc
        if status >= 500:
            raise SlackError(
                f"Slack failed {what}{about}: HTTP {status}" + (f" ({code})" if code else ""),
                method=what,
                error=f"http_{status}",
                retryable=True,
            ) from exc
        code = code or f"http_{status}"
        hint = HINTS.get(code, "")
        if code == "missing_scope" and isinstance(data, dict) and data.get("needed"):
            hint = f"add the scope {data['needed']} to the Slack app"
        raise SlackError(
            f"Slack refused {what}: {code}{about}" + (f": {hint}" if hint else ""),
            method=what,
            error=code,
            retryable=code in RETRYABLE,
        ) from exc
    except (HTTPException, OSError) as exc:  # URLError, refused, reset, timeout
        reason = exc.reason if isinstance(exc, URLError) else exc
        timed_out = isinstance(reason, TimeoutError)
        where = f" at {base_url}" if base_url else ""
        explained = "timed out" if timed_out else (str(reason) or type(reason).__name__)
        raise SlackError(
            f"Slack is unreachable{where} ({what}{about}: {explained})",
            method=what,
            error="timeout" if timed_out else "unreachable",
            retryable=True,
        ) from exc
    except SlackClientError as exc:
        raise SlackError(
            f"Slack client error in {what}{about}: {exc}",
            method=what,
            error="client_error",
            retryable=False,
        ) from exc


# --- channels -----------------------------------------------------------------------------------


def _list_page(web: WebClient, cursor: str) -> Any:
    return call(
        lambda: web.conversations_list(
            types="public_channel,private_channel", limit=200, cursor=cursor or None
        ),
        "conversations.list",
        base_url=web.base_url,
    )


def _all_channels(web: WebClient) -> Iterator[dict[str, Any]]:
    cursor = ""
    for _ in range(_PAGES):
        page = _list_page(web, cursor)
        yield from page.get("channels") or []
        cursor = (page.get("response_metadata") or {}).get("next_cursor") or ""
        if not cursor:
            return


def find_channel(web: WebClient, name: str) -> dict[str, Any] | None:
    """The channel named ``name`` (``#`` optional) the bot can see, or None."""
    wanted = name.removeprefix("#")
    for channel in _all_channels(web):
        if channel.get("name") == wanted:
            return channel
    return None


def channel_id(web: WebClient, ref: str) -> str:
    """The id of ``ref``: an id (``C0123ABCD``) as it is, ``#name`` or ``name`` looked up."""
    if CHANNEL_ID.match(ref):
        return ref
    found = find_channel(web, ref)
    if found is None:
        raise SlackError(
            f"Slack has no channel {ref if ref.startswith('#') else '#' + ref} the bot can see: "
            f"{HINTS['channel_not_found']}",
            method="conversations.list",
            error="channel_not_found",
            retryable=False,
        )
    return str(found["id"])


@preflight("slack")
def ready(config: dict[str, Any]) -> list[str]:
    """Whether Slack accepts the bot token (``auth.test``)."""
    from slack_sdk.errors import SlackApiError

    try:
        slack = client(config, timeout=10.0)
        slack.auth_test()
    except ActionError as exc:
        return [str(exc)]
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        return [f"Slack refused the bot token (auth.test: {error}); check integrations.slack.token"]
    except OSError as exc:
        return [f"Slack unreachable: {exc}"]
    return []
