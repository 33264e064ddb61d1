"""``irctl serve``: approvals from Slack, verified before anything is recorded.

Slack posts an interactivity request when someone clicks a button in a
message or submits a modal.  This module checks that Slack sent it (HMAC-SHA256
signature over the raw body with the app's signing secret, timestamp no more
than 5 minutes away, never seen before), maps the Slack user to an operator by
the ``slack:`` id in ``irctl.yaml``, and records the decision with
:meth:`irctl.engine.engine.Engine.decide` attested by the installation key (assurance
``slack``, channel ``slack``).  A policy with ``min_assurance: key`` refuses such
a decision, and the reply tells the clicker to use ``irctl approve``.

The contract with the message that asks for an approval (the Slack notifier)::

    Approve / Deny buttons (payload type "block_actions")
        action_id   "approve" or "deny"
        value       JSON text {"run": RUN_ID, "step": STEP_KEY, "digest": "sha256:..."}
                    (STEP_KEY as in the run: "sweep" or "sweep[2]"; digest: the
                    approval request's digest the message shows)
    Reason box in the same message (optional for approve, required for deny)
        a plain_text_input with action_id "reason" (any block_id); Slack sends
        what is typed in it with the click, in payload.state.values
    Deny-with-reason modal (payload type "view_submission"): a denial
        view.private_metadata   the same JSON as the button value
        a plain_text_input with action_id "reason" in view.state.values

Replies (HTTP 200, JSON) are for the clicker only: ``{"response_type":
"ephemeral", "text": ...}`` for a button; for the modal ``{"response_action":
"clear"}`` on success, else ``{"response_action": "errors", "errors": {BLOCK:
text}}``, which Slack shows under the reason box.  Slack shows the modal's
reply; for a button click it only needs the 200 within 3 seconds, so the text
is also posted to the payload's ``response_url`` (``{"response_type":
"ephemeral", "replace_original": false, "text": ...}``), from a background
thread with a 5 second timeout, and only to ``https://*.slack.com`` or the host
of ``integrations.slack.base_url`` (a sandbox, the local stand-in): the URL
comes from the payload, so it must not make irctl post anywhere else.  A
failure is logged, never raised.  A request that fails verification gets HTTP
401 with a plain message and records nothing.

Socket Mode (``irctl serve --socket-mode``, :class:`SocketMode`): irctl opens a
websocket to Slack with the app-level token (``integrations.slack.app_token``)
instead of listening; each ``interactive`` envelope goes through the same
:meth:`SlackInteractivity.handle_payload` and is acknowledged on the socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from irctl.errors import IrctlError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from slack_sdk.signature import SignatureVerifier
    from slack_sdk.socket_mode import SocketModeClient
    from slack_sdk.socket_mode.client import BaseSocketModeClient
    from slack_sdk.socket_mode.request import SocketModeRequest

    from irctl.journal.store import Store
    from irctl.runbook.model import Config
    from irctl.workspace import Workspace

PATH = "/slack/interactivity"
ALERTS_PREFIX = "/alerts/"  # irctl.serve.triggers
MAX_BODY = 64 * 1024  # Slack's interactivity payloads are a few KiB
MAX_AGE = 5 * 60  # seconds; Slack's own rule, enforced by SignatureVerifier
ACTIONS = ("approve", "deny")
RESPONSE_TIMEOUT = 5.0  # seconds for a POST to a response_url
REDELIVERY_WINDOW = 3600.0  # seconds a Socket Mode envelope id is remembered
DEFAULT_BASE_URL = "https://slack.com/api/"

Log = Callable[[str], None]


@dataclass(frozen=True)
class Reply:
    """What to answer an HTTP request with."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def text(cls, status: int, message: str) -> Reply:
        return cls(status, (message + "\n").encode("utf-8"))

    @classmethod
    def json(cls, value: Mapping[str, Any]) -> Reply:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        return cls(HTTPStatus.OK, body, "application/json; charset=utf-8")


@dataclass(frozen=True)
class Click:
    """One decision asked for from Slack, as parsed from a verified payload."""

    kind: str  # "block_actions" or "view_submission"
    slack_user: str
    approve: bool
    run: str
    step: str
    digest: str
    reason: str | None
    reason_block: str  # where a modal shows an error about the reason


class Rejected(Exception):
    """A payload irctl cannot act on; the message is shown to the clicker."""


class SlackInteractivity:
    """Verifies Slack interactivity requests and records the decisions they carry.

    Independent of the transport: :class:`Server` feeds it HTTP requests,
    :class:`SocketMode` the envelopes of a Socket Mode connection.  Without a
    ``signing_secret`` (Socket Mode only) every HTTP request is refused.
    ``base_url`` is ``integrations.slack.base_url``: its host may receive
    ``response_url`` posts besides ``*.slack.com``.
    """

    def __init__(
        self,
        store: Store,
        *,
        signing_secret: str | None,
        operators_by_slack: Mapping[str, str],
        private_key: Ed25519PrivateKey,
        clock: Callable[[], float] = time.time,
        log: Log | None = None,
        base_url: str = DEFAULT_BASE_URL,
        slack_config: Mapping[str, Any] | None = None,
        config: Config | None = None,
    ) -> None:
        from slack_sdk.signature import Clock, SignatureVerifier

        from irctl.engine.engine import Engine

        class _Clock(Clock):
            def now(self) -> float:
                return clock()

        self.store = store
        self._verifier: SignatureVerifier | None = (
            SignatureVerifier(signing_secret, clock=_Clock()) if signing_secret else None
        )
        self.base_url = base_url
        # integrations.slack: with a token, the approval message is updated after a decision
        self.slack_config = (
            dict(slack_config) if slack_config and slack_config.get("token") else None
        )
        self.operators_by_slack = dict(operators_by_slack)
        self.private_key = private_key
        # Decisions are recorded the way every command records them: sealed by the installation
        # key, the checkpoint anchored when irctl.yaml configures an anchor (``config``).
        self.engine = Engine(store, config=config, signing_key=private_key)
        self.clock = clock
        self.log = log or (lambda _line: None)
        # Replay protection: every verified signature (one per request: it covers the timestamp
        # and the body) is claimed in the store until it is too old to pass the timestamp check
        # anyway, so a replay to another replica or after a restart is refused too.
        self._seen_lock = threading.Lock()
        self._responding: set[threading.Thread] = set()  # response_url posts under way

    # -- verification ---------------------------------------------------------

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Why this request is not an authentic, fresh Slack request; None if it is."""
        if self._verifier is None:
            return "no signing secret is configured (integrations.slack.signing_secret)"
        lowered = {name.lower(): value for name, value in headers.items()}
        timestamp = lowered.get("x-slack-request-timestamp")
        signature = lowered.get("x-slack-signature")
        if not timestamp or not signature:
            return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
        try:
            stamp = int(timestamp)
        except ValueError:
            return "malformed X-Slack-Request-Timestamp"
        if abs(self.clock() - stamp) > MAX_AGE:
            return "request timestamp is more than 5 minutes away from now (replayed or clock skew)"
        if not self._verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            return "bad signature"
        try:
            fresh = self.store.claim_once(
                f"slack-signature:{signature}", until=stamp + MAX_AGE + 60, now=self.clock()
            )
        except IrctlError as exc:
            return f"cannot check for a replay: {exc.message}"
        if not fresh:
            return "replayed request (this signature was already used)"
        return None

    # -- HTTP -----------------------------------------------------------------

    def handle_http(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        problem = self.verify(body, headers)
        if problem is not None:
            self.log(f"rejected: {problem}")
            return Reply.text(HTTPStatus.UNAUTHORIZED, f"not a valid Slack request: {problem}")
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
            (text,) = form["payload"]
            payload = json.loads(text)
        except (UnicodeDecodeError, ValueError, KeyError):
            return Reply.text(HTTPStatus.BAD_REQUEST, "expected a form body payload=<JSON>")
        if not isinstance(payload, dict):
            return Reply.text(HTTPStatus.BAD_REQUEST, "payload is not a JSON object")
        return Reply.json(self.handle_payload(payload))

    # -- payloads -------------------------------------------------------------

    def handle_payload(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON reply to one authenticated interactivity payload (HTTP or Socket Mode).

        For a button click the reply is also posted to the payload's ``response_url``
        (in the background), since Slack does not show a button click's reply itself.
        """
        reply = self._answer(payload)
        if payload.get("type") == "block_actions" and isinstance(reply.get("text"), str):
            self.respond(payload.get("response_url"), reply)
        return reply

    def _answer(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        modal = payload.get("type") == "view_submission"
        try:
            click = parse_click(payload)
        except Rejected as exc:
            self.log(f"ignored: {exc}")
            return _reply(modal, "reason", str(exc))
        ok, message = self.decide(click)
        self.log(f"{'recorded' if ok else 'refused'}: {message}")
        if ok and modal:
            return {"response_action": "clear"}
        return _reply(modal, click.reason_block, message)

    # -- response_url ---------------------------------------------------------

    def response_url_allowed(self, url: object) -> bool:
        """Whether irctl may post to ``url``: Slack's own hosts, or the configured base_url's."""
        return isinstance(url, str) and response_url_allowed(url, self.base_url)

    def respond(self, url: object, reply: Mapping[str, Any]) -> None:
        """Post ``reply``'s text to ``url`` in the background, if the URL is allowed."""
        if url is None or url == "":
            return
        if not isinstance(url, str) or not self.response_url_allowed(url):
            self.log(f"response_url not posted to: {str(url)[:200]!r} is not a Slack URL")
            return
        body = {"response_type": "ephemeral", "replace_original": False, "text": reply["text"]}
        thread = threading.Thread(
            target=self._post_response, args=(url, body), name="irctl-response-url", daemon=True
        )
        with self._seen_lock:
            self._responding.add(thread)
        thread.start()

    def _post_response(self, url: str, body: Mapping[str, Any]) -> None:
        try:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers = {"Content-Type": "application/json; charset=utf-8"}
            # the scheme and host were checked by response_url_allowed: https or the base_url's
            request = urllib.request.Request(url, data, headers, method="POST")  # noqa: S310
            with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT) as answer:  # noqa: S310
                answer.read(4096)
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
            where = urlsplit(url).netloc
            self.log(f"response_url post to {where} failed (the decision stands): {exc}")
        finally:
            with self._seen_lock:
                self._responding.discard(threading.current_thread())

    def wait_for_responses(self, timeout: float = RESPONSE_TIMEOUT + 1) -> None:
        """Wait for the ``response_url`` posts under way (on shutdown, in tests)."""
        deadline = time.monotonic() + timeout
        with self._seen_lock:
            threads = list(self._responding)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _refresh_message(self, run_id: str, key: str) -> None:
        """Update the approval request's Slack message, in the background (Slack may be slow)."""
        if self.slack_config is None:
            return
        config = self.slack_config

        def refresh() -> None:
            from irctl_slack.notifier import refresh_approval

            try:
                refresh_approval(config, self.store.events(run_id), key)
            except Exception as exc:  # Slack down, a bad token: the decision stands
                self.log(f"approval message not updated (the decision stands): {exc}")
            finally:
                with self._seen_lock:
                    self._responding.discard(threading.current_thread())

        thread = threading.Thread(target=refresh, name="irctl-approval-message", daemon=True)
        with self._seen_lock:
            self._responding.add(thread)
        thread.start()

    def decide(self, click: Click) -> tuple[bool, str]:
        """Record the decision; (recorded?, what to tell the clicker)."""
        from irctl.journal.state import fold
        from irctl.record.approvals import outlook, what_next

        operator = self.operators_by_slack.get(click.slack_user)
        if operator is None:
            return False, (
                f"You (Slack user {click.slack_user}) are not an irctl operator: no operator in "
                f"irctl.yaml has 'slack: {click.slack_user}'. Nothing was recorded."
            )
        if not click.approve and not click.reason:
            return False, (
                "A denial needs a reason: type it in the Reason box and click Deny again "
                f"(or: irctl deny {click.run} {click.step} --reason ...). Nothing was recorded."
            )
        try:
            state = fold(self.store.events(click.run))
            step = state.steps.get(click.step)
            request = step.approval if step is not None else None
            # A friendly early answer; decide() checks the digest again under its own read.
            if request is not None and request.get("digest") != click.digest:
                return False, (
                    f"The inputs of '{click.step}' changed since this message was posted; see the "
                    f"new request (digest {request.get('digest')}). Nothing was recorded."
                )
            self.engine.decide(
                click.run, click.step, operator=operator, approve=click.approve,
                reason=click.reason, private_key=self.private_key, slack_user=click.slack_user,
                channel="slack", digest=click.digest,
            )  # fmt: skip
        except IrctlError as exc:  # ApprovalRejected, an unknown run, the store unreachable
            return False, f"{exc.message}. Nothing was recorded."
        self._refresh_message(click.run, click.step)
        word = "approved" if click.approve else "denied"
        try:
            verdict = outlook(self.store.events(click.run), click.step)
        except IrctlError:  # recorded; only the words about what comes next are missing
            verdict = None
        return True, (
            f"{click.step} of run {click.run} {word} by {operator} (Slack identity). "
            + what_next(verdict, click.run, click.step)
        )


def response_url_allowed(url: str, base_url: str = DEFAULT_BASE_URL) -> bool:
    """``https://<host>.slack.com/...`` (default port), or the scheme and host:port of ``base_url``.

    A ``response_url`` comes from the payload: irctl must not post wherever it says.
    """
    try:
        parts = urlsplit(url)
        base = urlsplit(base_url)
        port, base_port = parts.port, base.port
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    if parts.scheme == "https" and port in (None, 443) and host.endswith(".slack.com"):
        return True
    return (
        bool(base.hostname)
        and parts.scheme == base.scheme
        and parts.scheme in ("http", "https")
        and host == (base.hostname or "").lower().rstrip(".")
        and port == base_port
    )


def _reply(modal: bool, block: str, message: str) -> dict[str, Any]:
    if modal:
        return {"response_action": "errors", "errors": {block: message}}
    return {"response_type": "ephemeral", "replace_original": False, "text": message}


def _reason(values: Any) -> tuple[str | None, str]:
    """The text of the input with action_id ``reason`` in a ``state.values`` mapping."""
    if isinstance(values, dict):
        for block, actions in values.items():
            if isinstance(actions, dict) and isinstance(actions.get("reason"), dict):
                value = actions["reason"].get("value")
                text = value.strip() if isinstance(value, str) else ""
                return text or None, str(block)
    return None, "reason"


def _target(text: Any) -> tuple[str, str, str]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(value.get(name), str) and value.get(name) for name in ("run", "step", "digest")
    ):
        raise Rejected('this button does not name an irctl approval ({"run", "step", "digest"})')
    return value["run"], value["step"], value["digest"]


def parse_click(payload: Mapping[str, Any]) -> Click:
    """The decision a ``block_actions`` or ``view_submission`` payload asks for."""
    user = payload.get("user")
    slack_user = user.get("id") if isinstance(user, dict) else None
    if not isinstance(slack_user, str) or not slack_user:
        raise Rejected("the request names no Slack user")
    kind = payload.get("type")
    if kind == "block_actions":
        actions = payload.get("actions")
        action = next(
            (a for a in actions or [] if isinstance(a, dict) and a.get("action_id") in ACTIONS),
            None,
        )
        if action is None:
            raise Rejected("irctl handles only its Approve and Deny buttons")
        run, step, digest = _target(action.get("value"))
        state = payload.get("state")
        reason, block = _reason(state.get("values") if isinstance(state, dict) else None)
        approve = action["action_id"] == "approve"
        return Click(kind, slack_user, approve, run, step, digest, reason, block)
    if kind == "view_submission":
        view = payload.get("view")
        if not isinstance(view, dict):
            raise Rejected("the submission carries no view")
        run, step, digest = _target(view.get("private_metadata"))
        state = view.get("state")
        reason, block = _reason(state.get("values") if isinstance(state, dict) else None)
        return Click(kind, slack_user, False, run, step, digest, reason, block)
    raise Rejected(f"irctl does not handle Slack '{kind}' interactions")


# -- the HTTP server ------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = 15  # seconds a client may take to send its request
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(Reply.text(HTTPStatus.OK, "ok"))
        elif self.path == "/metrics" and self.server.alerts is not None:
            body = self.server.alerts.metrics().encode("utf-8")
            self._send(Reply(HTTPStatus.OK, body, "text/plain; version=0.0.4; charset=utf-8"))
        elif self.server.review is not None and self.server.review.handles(self.path):
            self.server.review.answer(self)  # the reviewer's read-only pages (irctl.serve.review)
        else:
            self._send(Reply.text(HTTPStatus.NOT_FOUND, "not found"))

    def do_POST(self) -> None:
        if self.path.startswith(ALERTS_PREFIX) and self.server.alerts is not None:
            self._alert(self.path[len(ALERTS_PREFIX):])
            return
        if self.path != PATH or self.server.interactivity is None:  # --review-only: no Slack
            self._drain()
            self._send(Reply.text(HTTPStatus.NOT_FOUND, "not found"))
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._send(
                Reply.text(HTTPStatus.LENGTH_REQUIRED, "Content-Length required"), close=True
            )
            return
        if length < 0 or length > MAX_BODY:
            self._send(Reply.text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"), True)
            return
        body = self.rfile.read(length)
        headers = {name: value for name, value in self.headers.items()}
        self._send(self.server.interactivity.handle_http(body, headers))

    def _alert(self, name: str) -> None:
        """``POST /alerts/NAME`` (irctl.serve.triggers): the body is read only up to the
        trigger's max_body, and not at all for an unknown trigger."""
        from irctl.serve.triggers import Answer, Refused

        alerts = self.server.alerts
        limit = alerts.max_body(name)
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            length = -1
        refused: Refused | None = None
        if limit is None:
            refused = Refused(HTTPStatus.NOT_FOUND, "unknown_trigger", "no such trigger")
        elif length < 0:
            refused = Refused(HTTPStatus.LENGTH_REQUIRED, "malformed", "Content-Length required")
        elif length > limit:
            refused = Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "oversize",
                              f"the body is larger than {limit} bytes")  # fmt: skip
        if refused is not None:
            alerts.count(name if limit is not None else "", refused.reason, refused.message)
            answer = Answer(refused.status, {"error": refused.message, "started": None})
            self._send(_answer(answer), close=True)
            return
        body = self.rfile.read(length)
        headers = {key: value for key, value in self.headers.items()}
        try:
            answer = alerts.handle(name, body, headers)
        except Exception as exc:  # a bug answers 500 and is logged; the server goes on
            alerts.count(name, "failed", f"{type(exc).__name__}: {exc}")
            answer = Answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
        self._send(_answer(answer))

    def _drain(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _send(self, reply: Reply, close: bool = False) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.address_string()} {format % args}")


def _answer(answer: Any) -> Reply:
    body = json.dumps(answer.body, ensure_ascii=False).encode("utf-8")
    return Reply(answer.status, body, "application/json; charset=utf-8")


class Server(ThreadingHTTPServer):
    """The interactivity endpoint; ``serve_forever()`` until ``shutdown()``."""

    daemon_threads = True
    review: Any = None  # irctl.serve.review.ReviewView, mounted by make_server
    alerts: Any = None  # irctl.serve.triggers.Alerts, mounted by make_server (triggers:)

    def __init__(
        self,
        address: tuple[str, int],
        interactivity: SlackInteractivity | None,
        *,
        allowed_hosts: tuple[str, ...] = (),
        log: Log | None = None,
    ) -> None:
        self.interactivity = interactivity  # None: the reviewer's pages only
        self.log: Log = interactivity.log if interactivity is not None else (log or _quiet)
        # the host as given (--host), not as resolved: the reviewer's pages answer only to it,
        # to the loopback names and to allowed_hosts (irctl.serve.review.host_allowed)
        self.bind_host = address[0]
        self.allowed_hosts = allowed_hosts
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


SETUP = """\
integrations:
  slack:
    signing_secret: env:SLACK_SIGNING_SECRET   # Basic Information > App Credentials"""

SOCKET_SETUP = """\
integrations:
  slack:
    app_token: env:SLACK_APP_TOKEN   # Basic Information > App-Level Tokens (connections:write)"""


def _where(workspace: Workspace) -> object:
    return workspace.config_path or workspace.root / "irctl.yaml"


def make_interactivity(
    workspace: Workspace,
    *,
    signing_secret: str | None,
    clock: Callable[[], float] = time.time,
    log: Log | None = None,
) -> SlackInteractivity:
    """The payload handler for ``workspace``: operators by Slack id, the installation key."""
    where = _where(workspace)
    key = workspace.signing_key()
    if key is None:
        raise UsageError(
            f"no installation key at {workspace.installation_key_path}: it attests Slack "
            "approvals; run 'irctl init' in the workspace to create it"
        )
    by_slack: dict[str, str] = {}
    for name, operator in sorted(workspace.config.operators.items()):
        if not operator.slack:
            continue
        if operator.slack in by_slack:
            raise UsageError(
                f"operators {by_slack[operator.slack]} and {name} have the same Slack id "
                f"{operator.slack} in {where}"
            )
        by_slack[operator.slack] = name
    return SlackInteractivity(
        workspace.store, signing_secret=signing_secret, operators_by_slack=by_slack,
        private_key=key, clock=clock, log=log, base_url=_base_url(workspace),
        slack_config=workspace.config.integrations.get("slack"), config=workspace.config,
    )  # fmt: skip


def _base_url(workspace: Workspace) -> str:
    slack = workspace.config.integrations.get("slack") or {}
    base_url = slack.get("base_url", DEFAULT_BASE_URL)
    if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
        raise UsageError(
            f"integrations.slack.base_url in {_where(workspace)} must be an http(s) URL "
            "such as https://slack.com/api/"
        )
    return base_url if base_url.endswith("/") else base_url + "/"


def _quiet(_line: str) -> None:
    return None


def make_server(
    workspace: Workspace,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    clock: Callable[[], float] = time.time,
    log: Log | None = None,
    review_only: bool = False,
    allowed_hosts: tuple[str, ...] = (),
) -> Server:
    """The Slack interactivity endpoint for ``workspace``, bound and ready to serve; with
    ``review_only`` just the reviewer's read-only pages (no Slack settings needed)."""
    from irctl.secrets import resolve
    from irctl.serve.review import ReviewView

    if review_only:
        server = _bind(host, port, None, allowed_hosts, log)
        server.review = ReviewView.for_workspace(workspace)
        return server
    slack = workspace.config.integrations.get("slack") or {}
    reference = slack.get("signing_secret")
    alerts = _alerts(workspace, clock, log)
    interactivity = None
    if isinstance(reference, str) and reference:
        secret = resolve("integrations.slack.signing_secret", reference, base=workspace.root)
        interactivity = make_interactivity(workspace, signing_secret=secret, clock=clock, log=log)
    elif alerts is None:
        raise UsageError(
            f"no Slack signing secret: add to {_where(workspace)}:\n{SETUP}\n"
            "and set SLACK_SIGNING_SECRET to the app's signing secret (or give triggers: to "
            "take alerts only)"
        )
    server = _bind(host, port, interactivity, allowed_hosts, log)
    server.review = ReviewView.for_workspace(workspace)
    server.alerts = alerts
    return server


def _alerts(workspace: Workspace, clock: Callable[[], float], log: Log | None) -> Any:
    """The alert endpoint for the workspace's triggers: (None without any)."""
    if not workspace.config.triggers:
        return None
    from irctl.serve.triggers import make_alerts

    key = workspace.signing_key()
    if key is None:
        raise UsageError(
            f"no installation key at {workspace.installation_key_path}: it signs the start of "
            "a run an alert starts; run 'irctl init' in the workspace to create it"
        )
    return make_alerts(workspace, signing_key=key, clock=clock, log=log)


def _bind(
    host: str,
    port: int,
    interactivity: SlackInteractivity | None,
    allowed: tuple[str, ...],
    log: Log | None,
) -> Server:
    try:
        return Server((host, port), interactivity, allowed_hosts=allowed, log=log)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another with --port "
            "or --host"
        ) from exc


# -- Socket Mode ----------------------------------------------------------------


class SocketMode:
    """A Socket Mode connection to Slack feeding :class:`SlackInteractivity`.

    No signature check here, on purpose: Slack signs HTTP requests because anyone
    can reach an open endpoint; a Socket Mode envelope arrives on a websocket that
    irctl opened itself to the URL ``apps.connections.open`` gave in exchange for
    the app-level token, so the token authenticates the connection and everything
    on it comes from Slack (TLS, ``wss://``, protects it on the way).

    slack-sdk's built-in client reconnects by itself (Slack asks every few hours).
    """

    HELLO_TIMEOUT = 10.0  # seconds to wait for Slack's hello after connecting

    def __init__(
        self,
        interactivity: SlackInteractivity,
        *,
        app_token: str,
        base_url: str = DEFAULT_BASE_URL,
        log: Log | None = None,
    ) -> None:
        from slack_sdk import WebClient
        from slack_sdk.socket_mode import SocketModeClient

        self.interactivity = interactivity
        self.base_url = base_url
        self.log = log or interactivity.log
        self._hello = threading.Event()
        # slack-sdk's warnings (a dropped connection, a failed reconnect) go to our log; while
        # connect() runs they are kept for its error message instead.
        self._connecting: list[str] | None = None
        logger = logging.Logger("irctl.serve.slack.socket_mode", logging.WARNING)  # not registered
        logger.addHandler(_Forward(self._sdk_log))
        self.client: SocketModeClient = SocketModeClient(
            app_token=app_token,
            web_client=WebClient(base_url=base_url, timeout=10),
            logger=logger,
        )
        self.client.on_message_listeners.append(self._on_message)
        self.client.socket_mode_request_listeners.append(self._on_request)

    def connect(self) -> None:
        """Open the connection and wait for Slack's hello; an IrctlError saying why not."""
        from slack_sdk.errors import SlackApiError

        self._connecting = []
        try:
            self.client.connect()
        except SlackApiError as exc:
            self.close()
            error = exc.response.get("error") if exc.response is not None else None
            raise UsageError(
                f"Slack refused apps.connections.open: {error}; integrations.slack.app_token "
                "must be the app-level token (xapp-...) with the connections:write scope, and "
                "Socket Mode must be on in the app's settings"
            ) from exc
        except OSError as exc:  # urllib's URLError, a refused connection, a timeout
            self.close()
            raise IrctlError(f"cannot reach Slack at {self.base_url}: {exc}") from exc
        finally:
            problems, self._connecting = self._connecting, None
        if not self.client.is_connected() or not self._hello.wait(self.HELLO_TIMEOUT):
            self.close()
            detail = "; ".join(problems or ["no hello within the timeout"])
            raise IrctlError(
                f"the Socket Mode websocket (from apps.connections.open at {self.base_url}) "
                f"did not open: {detail}"
            )

    def _sdk_log(self, line: str) -> None:
        if self._connecting is not None:
            self._connecting.append(line)
        else:
            self.log(f"slack-sdk: {line}")

    def close(self) -> None:
        """Disconnect (no reconnecting) and wait for pending response_url posts."""
        client = self.client
        client.auto_reconnect_enabled = False
        client.current_session_state.terminated = True
        session = client.current_session
        sock = getattr(session, "sock", None)
        if isinstance(sock, socket.socket):
            # Wakes the receiving thread now instead of after its 3 s receive timeout.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # slack-sdk's receiving thread may clear the socket between its own None-check and
        # close() (a race inside slack-sdk): the connection is gone either way.
        with contextlib.suppress(AttributeError, OSError):
            client.close()
        self.interactivity.wait_for_responses()

    def _on_message(self, raw: str) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(raw)
            if isinstance(message, dict) and message.get("type") == "hello":
                self._hello.set()

    def _on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        """Ack every envelope; run ``interactive`` ones through the HTTP path's handler."""
        from slack_sdk.socket_mode.response import SocketModeResponse

        try:
            first = self.interactivity.store.claim_once(
                f"slack-envelope:{request.envelope_id}", until=time.time() + REDELIVERY_WINDOW
            )
        except IrctlError as exc:
            self.log(f"cannot check for a redelivered envelope: {exc.message}")
            return  # unacknowledged: Slack delivers it again
        if not first:  # Slack redelivers envelopes it thinks were not acknowledged
            client.send_socket_mode_response(SocketModeResponse(request.envelope_id))
            self.log(f"ignored a redelivered Socket Mode envelope {request.envelope_id}")
            return
        if request.type != "interactive":
            client.send_socket_mode_response(SocketModeResponse(request.envelope_id))
            self.log(f"ignored a Socket Mode '{request.type}' envelope")
            return
        if not request.accepts_response_payload:
            # A button click: Slack wants the ack within 3 s and shows no ack payload; the
            # clicker sees the reply through response_url (posted by handle_payload).
            client.send_socket_mode_response(SocketModeResponse(request.envelope_id))
            self._handle(request.payload)
            return
        # A modal submission: the ack carries the reply (response_action clear or errors).
        reply = self._handle(request.payload)
        client.send_socket_mode_response(SocketModeResponse(request.envelope_id, reply))

    def _handle(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.interactivity.handle_payload(payload)
        except Exception as exc:  # a bug must not leave the envelope unacknowledged
            self.log(f"error handling a Socket Mode payload: {type(exc).__name__}: {exc}")
            return None


class _Forward(logging.Handler):
    def __init__(self, log: Log) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._log(record.getMessage())


def make_socket_mode(workspace: Workspace, *, log: Log | None = None) -> SocketMode:
    """A Socket Mode connection for ``workspace``, not yet connected (call ``connect()``)."""
    from irctl.secrets import resolve

    slack = workspace.config.integrations.get("slack") or {}
    reference = slack.get("app_token")
    if not isinstance(reference, str) or not reference:
        raise UsageError(
            f"no Slack app-level token: add to {_where(workspace)}:\n{SOCKET_SETUP}\n"
            "and set SLACK_APP_TOKEN to the app-level token (xapp-...)"
        )
    token = resolve("integrations.slack.app_token", reference, base=workspace.root)
    interactivity = make_interactivity(workspace, signing_secret=None, log=log)
    return SocketMode(interactivity, app_token=token, base_url=interactivity.base_url, log=log)
