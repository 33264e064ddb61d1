"""``irctl serve``: alerts that start runbooks (``POST /alerts/NAME``, ``triggers:`` in irctl.yaml).

Each trigger names who sends its alerts (``source``), the shared secret that proves it, the
rule an alert must match, the runbook it starts, how the runbook's params and the incident key
are read from the alert.  An alert is authenticated before anything in it is read:

``generic``
    ``X-Irctl-Timestamp: <unix seconds>`` and ``X-Irctl-Signature: v1=<hex>``, the
    HMAC-SHA256 with the secret of ``"v1:" + timestamp + ":" + body``; a timestamp more than
    5 minutes old (or more than :data:`MAX_SKEW` ahead) is refused, and each signature and
    each alert ``id`` is claimed in the store (:meth:`irctl.journal.store.Store.claim_once`),
    so a replay is refused by every replica and after a restart.  The body is
    ``{"id", "detected_at" (RFC 3339), "summary", "labels": {}, "fields": {}}``.
``alertmanager``
    Prometheus Alertmanager's webhook (``version: "4"``), with ``Authorization: Bearer
    <secret>`` or Basic auth (the secret is ``user:password``), compared in constant time.
    Each firing alert is matched on its own; its ``startsAt`` is the detection time, and an
    alert already received (its fingerprint and ``startsAt``) is not taken again.
``pagerduty``
    PagerDuty's v3 webhooks: ``X-PagerDuty-Signature: v1=<hex>`` (HMAC-SHA256 of the body
    with the secret; several signatures, comma-separated, while a secret rotates); each
    event ``id`` is claimed like a generic alert's.

Refused — unauthenticated, stale, replayed, oversize, malformed, for an unknown trigger or
matching no rule — is a 4xx, counted (:attr:`Alerts.counts`, ``GET /metrics``) and logged,
and nothing is started.  A matching alert for an incident that already has a run is recorded
on that run (``alert.received``); otherwise it starts a run of the trigger's runbook, signed by
the installation key, initiator ``trigger:NAME``, which runs only the runbook's ``auto: true``
steps (on a thread of this process: the reply, 202 with the run id, does not wait for them)
and then waits for an operator to adopt it (``irctl adopt``).  The secret is never logged nor
recorded.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from irctl.errors import IrctlError, StoreError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.journal.events import Event
    from irctl.journal.store import Store
    from irctl.runbook.model import Config, Runbook, Trigger
    from irctl.workspace import Workspace

PREFIX = "/alerts/"
MAX_AGE = 5 * 60  # seconds a signed alert stays acceptable
MAX_SKEW = 30  # seconds a timestamp may be ahead of this machine's clock
ID_WINDOW = 7 * 86400.0  # seconds an alert id is remembered against a replay
#: How long an incident is claimed while its first run is created: long enough for another
#: replica's alert to wait for that run (then found by its sealed run.created), short enough
#: that a server killed between claiming and creating holds the incident back only briefly.
INCIDENT_WINDOW = 120.0
CLAIM_WAIT = 5.0  # seconds to wait for another replica's run of the same incident
MAX_ALERTS = 100  # alerts in one Alertmanager notification
MAX_TEXT = 1000  # characters of an alert's id or summary kept
RUN_TRIGGER = "trigger:"
#: Events after which a run an alert started is no longer one to take up unattended.
_PAST_FIRST_WAIT = frozenset({"run.waiting", "run.interrupted", "run.retried", "run.adopted",
                              "run.aborted", "step.waived"})  # fmt: skip

Log = Callable[[str], None]

#: Outcomes counted, by trigger: each refusal has a reason of its own.
OUTCOMES = (
    "accepted", "deduplicated", "ignored", "unauthenticated", "stale", "replayed", "oversize",
    "unknown_trigger", "unmatched", "malformed", "failed",
)  # fmt: skip


class Refused(Exception):
    """An alert irctl does not act on: the HTTP status, the counted reason, the words."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Alert:
    """One alert, as irctl reads it (``alert`` in a trigger's templates)."""

    id: str
    detected_at: str  # RFC 3339, with its offset
    summary: str
    labels: dict[str, str]
    fields: dict[str, Any]
    source: str

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "detected_at": self.detected_at, "summary": self.summary,
            "labels": dict(self.labels), "fields": dict(self.fields), "source": self.source,
        }  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """What to reply to an alert request: the status and a JSON body."""

    status: int
    body: dict[str, Any]


@dataclass
class Alerts:
    """The alert endpoint of one ``irctl serve`` process."""

    store: Store
    config: Config
    signing_key: Ed25519PrivateKey
    secrets: dict[str, str] = field(repr=False)  # trigger name -> resolved secret, never shown
    load_runbook: Callable[[str], tuple[Runbook, str]]  # runbook id -> (model, exact text)
    workspace: Any = None  # the workspace root, for the runs' engines
    clock: Callable[[], float] = time.time
    log: Log = field(default=lambda _line: None)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _incident_lock: threading.Lock = field(default_factory=threading.Lock)
    _running: set[threading.Thread] = field(default_factory=set)
    #: The replay claims the request being handled made (this thread's): released again when
    #: the alert could not be acted on for a reason that may pass (a store that is down), so
    #: its retry is taken, not refused as a replay.
    _claims: threading.local = field(default_factory=threading.local)

    # -- counting --------------------------------------------------------------------------

    def count(self, trigger: str, outcome: str, words: str) -> None:
        with self._lock:
            key = (trigger, outcome)
            self.counts[key] = self.counts.get(key, 0) + 1
            total = self.counts[key]
        self.log(f"alert {outcome} (trigger {trigger or '?'}, {total} so far): {words}")

    def metrics(self) -> str:
        """The counts in Prometheus' text format."""
        lines = [
            "# HELP irctl_alerts_total Alerts received by irctl serve, by trigger and outcome.",
            "# TYPE irctl_alerts_total counter",
        ]
        with self._lock:
            found = sorted(self.counts.items())
        for (trigger, outcome), number in found:
            lines.append(f'irctl_alerts_total{{trigger="{trigger}",outcome="{outcome}"}} {number}')
        return "\n".join(lines) + "\n"

    def max_body(self, name: str) -> int | None:
        trigger = self.config.triggers.get(name)
        return trigger.max_body if trigger is not None else None

    # -- a request -------------------------------------------------------------------------

    def handle(self, name: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Authenticate, parse, match and act on one request to ``/alerts/NAME``."""
        trigger = self.config.triggers.get(name)
        counted = name if trigger is not None else ""  # never a label an attacker chooses
        self._claims.made = []
        try:
            if trigger is None:
                raise Refused(HTTPStatus.NOT_FOUND, "unknown_trigger", "no such trigger")
            lowered = {key.lower(): value for key, value in headers.items()}
            alerts = self._authentic(name, trigger, body, lowered)
        except Refused as refused:
            self.count(counted, refused.reason, refused.message)
            if refused.reason == "failed":
                self._release_claims(None)
            return Answer(refused.status, {"error": refused.message, "started": None})
        results: list[dict[str, Any]] = []
        status: int = HTTPStatus.OK
        refusals: list[Refused] = []
        for alert in alerts:
            try:
                results.append(self._act(name, trigger, alert))
                if results[-1].get("started"):
                    status = HTTPStatus.ACCEPTED
            except Refused as refused:
                self.count(counted, refused.reason, f"alert {alert.id}: {refused.message}")
                if refused.reason == "failed":  # it may pass: the alert's retry must be taken
                    self._release_claims(alert)
                refusals.append(refused)
                results.append({"alert": alert.id, "error": refused.message, "started": None})
            except BaseException:
                self._release_claims(alert)
                raise
        if refusals and len(refusals) == len(results):  # every alert in it refused
            status = refusals[0].status
        if len(alerts) == 1 and refusals:
            return Answer(status, {"error": refusals[0].message, "started": None})
        if not results:  # nothing firing (Alertmanager's resolved alerts), or all seen already
            return Answer(HTTPStatus.OK, {"alerts": [], "started": None})
        if len(results) == 1:
            return Answer(status, results[0])
        return Answer(status, {"alerts": results})

    def _authentic(
        self, name: str, trigger: Trigger, body: bytes, headers: Mapping[str, str]
    ) -> list[Alert]:
        """The alerts in an authenticated request (Refused otherwise)."""
        secret = self.secrets[name]
        if trigger.source == "generic":
            self._generic_signature(name, secret, body, headers)
            alert = generic_alert(_json(body), self.clock())
            self._claim(f"alert-id:{name}:{alert.id}", self.clock() + ID_WINDOW, "alert id",
                        alert)  # fmt: skip
            return [alert]
        if trigger.source == "alertmanager":
            _authorized(secret, headers.get("authorization"))
            return self._fresh(name, alertmanager_alerts(_json(body), self.clock()))
        if trigger.source == "pagerduty":
            _pagerduty_signature(secret, body, headers.get("x-pagerduty-signature"))
            alert = pagerduty_alert(_json(body), self.clock())
            self._claim(f"alert-id:{name}:{alert.id}", self.clock() + ID_WINDOW, "event id",
                        alert)  # fmt: skip
            return [alert]
        raise Refused(  # sns: not served by this version
            HTTPStatus.NOT_IMPLEMENTED, "unauthenticated",
            f"source {trigger.source!r} is not served by this irctl",
        )  # fmt: skip

    def _generic_signature(
        self, name: str, secret: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        stamp_text = headers.get("x-irctl-timestamp")
        signature = headers.get("x-irctl-signature")
        if not stamp_text or not signature:
            raise Refused(HTTPStatus.UNAUTHORIZED, "unauthenticated",
                          "missing X-Irctl-Timestamp or X-Irctl-Signature")  # fmt: skip
        if not stamp_text.isascii() or not stamp_text.isdigit() or len(stamp_text) > 12:
            raise Refused(HTTPStatus.UNAUTHORIZED, "unauthenticated",
                          "X-Irctl-Timestamp is not a number of seconds")  # fmt: skip
        expected = "v1=" + generic_signature(secret, stamp_text, body)
        if not hmac.compare_digest(signature.strip().encode(), expected.encode()):
            raise Refused(HTTPStatus.UNAUTHORIZED, "unauthenticated", "bad signature")
        stamp, now = int(stamp_text), self.clock()
        if stamp > now + MAX_SKEW:
            raise Refused(HTTPStatus.UNAUTHORIZED, "stale",
                          "X-Irctl-Timestamp is in the future (clock skew?)")  # fmt: skip
        if now - stamp > MAX_AGE:
            raise Refused(HTTPStatus.UNAUTHORIZED, "stale",
                          "X-Irctl-Timestamp is more than 5 minutes old")  # fmt: skip
        self._claim(f"alert-signature:{name}:{expected}", stamp + MAX_AGE + 60, "signature")

    def _claim(self, key: str, until: float, what: str, alert: Alert | None = None) -> None:
        try:
            fresh = self.store.claim_once(claim_key(key), until=until, now=self.clock())
        except IrctlError as exc:
            raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, "failed",
                          f"cannot check for a replay: {exc.message}") from exc  # fmt: skip
        if not fresh:
            raise Refused(HTTPStatus.CONFLICT, "replayed", f"replayed ({what} already seen)")
        made: list[tuple[str | None, str]] | None = getattr(self._claims, "made", None)
        if made is not None:
            made.append((alert.id if alert is not None else None, claim_key(key)))

    def _release_claims(self, alert: Alert | None) -> None:
        """Forget the replay claims this request made for ``alert`` (and the request's own),
        so that a retry of an alert that could not be acted on is not refused as a replay."""
        made: list[tuple[str | None, str]] = getattr(self._claims, "made", None) or []
        for owner, key in made:
            if owner is None or (alert is not None and owner == alert.id):
                with contextlib.suppress(IrctlError):  # still claimed: expires in its window
                    self.store.release(key)

    def _fresh(self, name: str, alerts: list[Alert]) -> list[Alert]:
        """Alertmanager repeats its notifications: an alert already taken is left out."""
        fresh = []
        for alert in alerts:
            key = f"alert-id:{name}:{alert.id}:{alert.detected_at}"
            try:
                self._claim(key, self.clock() + ID_WINDOW, "alert", alert)
            except Refused as refused:
                if refused.reason != "replayed":
                    raise
                self.count(name, "ignored", f"alert {alert.id} was already received")
                continue
            fresh.append(alert)
        return fresh

    # -- acting on one authenticated alert -------------------------------------------------

    def _act(self, name: str, trigger: Trigger, alert: Alert) -> dict[str, Any]:
        from irctl.runbook.render import RenderError, render

        view = {"alert": alert.view()}
        if not matches(trigger.match, view["alert"]):
            raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, "unmatched",
                          "the alert matches no rule of this trigger")  # fmt: skip
        try:
            incident = render(trigger.incident, view)
            given = {key: param_text(render_value(value, view)) for key, value in
                     trigger.params.items()}  # fmt: skip
        except RenderError as exc:
            raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, "malformed",
                          f"the trigger's templates cannot read this alert: {exc}") from exc
        incident = str(incident).strip() if incident is not None else ""
        if not incident or len(incident) > 200:
            raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, "malformed",
                          "the incident key is empty or longer than 200 characters")  # fmt: skip
        with self._incident_lock:  # one run per incident from this process
            existing = self._run_of(incident)
            if existing is not None:
                return self._received(name, alert, existing, incident)
            runbook, text, params = self._runbook(trigger, given)
            if not self._claim_incident(incident):
                existing = self._wait_for_run(incident)
                if existing is None:
                    raise Refused(HTTPStatus.CONFLICT, "failed",
                                  f"incident {incident} is being started elsewhere")  # fmt: skip
                return self._received(name, alert, existing, incident)
            try:
                run_id = self._start(name, trigger, alert, incident, runbook, text, params)
            except Refused:
                with contextlib.suppress(IrctlError):  # the next alert may try again
                    self.store.release(claim_key(f"incident:{incident}"))
                raise
        self.count(name, "accepted", f"alert {alert.id} started run {run_id} ({runbook.id})")
        return {"alert": alert.id, "run": run_id, "incident": incident, "started": True}

    def _runbook(
        self, trigger: Trigger, given: dict[str, str]
    ) -> tuple[Runbook, str, dict[str, Any]]:
        from irctl.runbook.params import parse_params

        try:
            runbook, text = self.load_runbook(trigger.runbook)
            return runbook, text, parse_params(runbook, given)
        except IrctlError as exc:
            first = exc.message.splitlines()[0] if exc.message else type(exc).__name__
            raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, "malformed",
                          f"runbook {trigger.runbook} cannot start from this alert: "
                          f"{first}") from exc  # fmt: skip

    def _claim_incident(self, incident: str) -> bool:
        try:
            return self.store.claim_once(
                claim_key(f"incident:{incident}"), until=self.clock() + INCIDENT_WINDOW,
                now=self.clock(),
            )  # fmt: skip
        except IrctlError as exc:
            raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, "failed", exc.message) from exc

    def _wait_for_run(self, incident: str) -> str | None:
        deadline = time.monotonic() + CLAIM_WAIT
        while time.monotonic() < deadline:
            found = self._run_of(incident)
            if found is not None:
                return found
            time.sleep(0.1)
        return None

    def _sealed(self, run_id: str, events: list[Event]) -> Event | None:
        """The run's ``run.created`` if it is sealed by the installation key (a row, or a
        ``run.created`` nobody sealed, proves nothing); None otherwise."""
        from irctl.engine.guard import created_message
        from irctl.identity import load_public_key, public_key_text, verify

        mine = public_key_text(self.signing_key)
        trusted = {mine, *([self.config.installation_key] if self.config.installation_key else [])}
        created = events[0] if events else None
        if created is None or created.type != "run.created":
            return None
        seal = created.data.get("sealed_by")
        key = seal.get("key") if isinstance(seal, dict) else None
        sig = seal.get("sig") if isinstance(seal, dict) else None
        if key not in trusted or not isinstance(sig, str) or not isinstance(key, str):
            return None
        if not verify(load_public_key(key), created_message(run_id, created.data), sig):
            return None
        return created

    def _run_of(self, incident: str) -> str | None:
        """The newest live run of ``incident`` that has not ended, whose own ``run.created``
        proves it: sealed by the installation key and naming the incident.  A tabletop or
        sandbox run (a drill, a rehearsal) never takes an incident's alerts, nor a run that
        ended: the next alert for the incident starts a new one."""
        from irctl.journal.state import fold

        try:
            for row in self.store.runs_for_incident(incident):
                events = self.store.events(row.id)
                created = self._sealed(row.id, events)
                if created is None or created.data.get("incident") != incident:
                    continue
                if created.data.get("mode") != "live":
                    continue
                state = fold(events)
                if state.finished or state.status == "tampered":
                    continue
                return row.id
        except IrctlError as exc:
            raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, "failed", exc.message) from exc
        return None

    def _received(self, name: str, alert: Alert, run_id: str, incident: str) -> dict[str, Any]:
        from irctl.engine.engine import Engine
        from irctl.journal import events as ev

        engine = Engine(self.store, config=self.config, signing_key=self.signing_key)
        data = {
            "trigger": name, "alert": alert.id, "detected_at": alert.detected_at,
            "summary": alert.summary, "labels": alert.labels, "source": alert.source,
        }  # fmt: skip
        try:
            engine.record(run_id, ev.ALERT_RECEIVED, data)
        except IrctlError as exc:
            raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, "failed",
                          f"cannot record the alert on run {run_id}: {exc.message}") from exc
        self.count(name, "deduplicated", f"alert {alert.id} recorded on run {run_id}")
        return {"alert": alert.id, "run": run_id, "incident": incident, "started": False}

    def _start(
        self,
        name: str,
        trigger: Trigger,
        alert: Alert,
        incident: str,
        runbook: Runbook,
        text: str,
        params: dict[str, Any],
    ) -> str:
        from irctl.engine.engine import Engine

        engine = Engine(
            self.store, config=self.config, signing_key=self.signing_key, workspace=self.workspace
        )
        recorded = {
            "name": name, "source": trigger.source, "alert": alert.id,
            "detected_at": alert.detected_at, "summary": alert.summary,
        }  # fmt: skip
        try:
            run_id = engine.create_run(
                runbook, text, params, initiator=RUN_TRIGGER + name, incident=incident,
                trigger=recorded,
            )  # fmt: skip
        except StoreError as exc:  # the store is down or failing: the alert's retry may pass
            raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, "failed",
                          f"cannot start {runbook.id}: {exc.message}") from exc  # fmt: skip
        except IrctlError as exc:
            raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, "failed",
                          f"cannot start {runbook.id}: {exc.message}") from exc  # fmt: skip
        self._background(engine, run_id)
        return run_id

    def recover(self, *, limit: int = 500) -> list[str]:
        """Take up the runs an alert started that no process took to their first wait (this
        server stopped between creating one and running its auto steps, or while running
        them): each goes on in the background, as :meth:`irctl.engine.engine.Engine.execute`
        resumes any run (a step left in doubt is settled, never silently repeated; a run
        another process holds is left to it).  The ids taken up."""
        from irctl.engine.engine import Engine
        from irctl.journal.state import fold

        taken: list[str] = []
        for row in self.store.runs(limit=limit):
            if not row.initiator.startswith(RUN_TRIGGER):  # a first filter: rows prove nothing
                continue
            try:
                events = self.store.events(row.id)
                state = fold(events)
            except IrctlError as exc:
                self.log(f"run {row.id} not taken up: {exc.message}")
                continue
            created = self._sealed(row.id, events)
            if created is None or "trigger" not in created.data:
                continue  # not a run an alert started, whatever its row says
            if state.status not in ("created", "running", "interrupted"):
                continue
            if any(e.type in _PAST_FIRST_WAIT for e in events):
                continue  # it reached a wait, was adopted or stopped by a person: theirs now
            engine = Engine(
                self.store, config=self.config, signing_key=self.signing_key,
                workspace=self.workspace,
            )  # fmt: skip
            self._background(engine, row.id)
            taken.append(row.id)
            self.log(f"run {row.id} ({row.runbook}) taken up: it had not reached its first wait")
        return taken

    def _background(self, engine: Any, run_id: str) -> None:
        thread = threading.Thread(
            target=self._execute, args=(engine, run_id), name=f"irctl-run-{run_id}", daemon=True
        )
        with self._lock:
            self._running.add(thread)
        thread.start()

    def _execute(self, engine: Any, run_id: str) -> None:
        try:
            state = engine.execute(run_id)
            self.log(f"run {run_id}: {state.status}")
        except Exception as exc:  # a run's failure is in its journal; the server goes on
            self.log(f"run {run_id} stopped: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.discard(threading.current_thread())

    def wait_for_runs(self, timeout: float = 30.0) -> None:
        """Wait for the runs this process started to reach their first wait (shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._running)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


# -- reading alerts ----------------------------------------------------------------------------


def claim_key(text: str) -> str:
    """The key a one-time claim is stored under: a digest, as an alert's id, a signature or
    an incident may be longer than the store keeps (two would otherwise share a claim)."""
    return "alert:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def generic_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a generic alert carries (after ``v1=``)."""
    message = b"v1:" + timestamp.encode("ascii") + b":" + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refused(HTTPStatus.BAD_REQUEST, "malformed", "the body is not JSON") from exc


def _malformed(message: str) -> Refused:
    return Refused(HTTPStatus.BAD_REQUEST, "malformed", message)


def _text(value: Any, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _malformed(f"{what} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise _malformed(f"{what} is longer than {MAX_TEXT} characters")
    return value


def _labels(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _malformed(f"{what} must be an object of strings")
    return dict(value)


def detection_time(value: Any, what: str, now: float) -> str:
    """An RFC 3339 time with its offset, not after ``now`` (Unix time) by more than
    :data:`MAX_SKEW`, as given (Refused otherwise)."""
    text = _text(value, what)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _malformed(f"{what} must be an RFC 3339 time with its offset, such as "
                         "2026-11-21T03:00:00Z")  # fmt: skip
    if parsed.year < 2000 or parsed.timestamp() > now + MAX_SKEW:
        raise _malformed(f"{what} is in the future or implausibly old")
    return text


def generic_alert(body: Any, now: float) -> Alert:
    if not isinstance(body, dict):
        raise _malformed("the body must be a JSON object {id, detected_at, summary, ...}")
    fields = body.get("fields", {})
    if not isinstance(fields, dict):
        raise _malformed("fields must be an object")
    return Alert(
        id=_text(body.get("id"), "id"),
        detected_at=detection_time(body.get("detected_at"), "detected_at", now),
        summary=_text(body.get("summary"), "summary", required=False),
        labels=_labels(body.get("labels"), "labels"), fields=dict(fields), source="generic",
    )  # fmt: skip


def alertmanager_alerts(body: Any, now: float) -> list[Alert]:
    """The firing alerts of an Alertmanager webhook notification (version 4)."""
    if not isinstance(body, dict) or str(body.get("version")) != "4":
        raise _malformed("not an Alertmanager webhook notification (version 4)")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or len(alerts) > MAX_ALERTS:
        raise _malformed(f"alerts must be a list of at most {MAX_ALERTS}")
    found = []
    for index, raw in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(raw, dict):
            raise _malformed(f"{where} must be an object")
        if raw.get("status") != "firing":
            continue  # a resolved alert starts nothing
        labels = _labels(raw.get("labels"), f"{where}.labels")
        annotations = _labels(raw.get("annotations"), f"{where}.annotations")
        fingerprint = raw.get("fingerprint")
        ident = fingerprint if isinstance(fingerprint, str) and fingerprint else _digest(labels)
        found.append(Alert(
            id=_text(ident, f"{where}.fingerprint"),
            detected_at=detection_time(raw.get("startsAt"), f"{where}.startsAt", now),
            summary=annotations.get("summary", labels.get("alertname", ""))[:MAX_TEXT],
            labels=labels,
            fields={
                "annotations": annotations, "status": raw.get("status"),
                "generatorURL": raw.get("generatorURL"), "groupKey": body.get("groupKey"),
                "receiver": body.get("receiver"),
            },
            source="alertmanager",
        ))  # fmt: skip
    return found


def _digest(labels: Mapping[str, str]) -> str:
    from irctl.canonical import canonical_json

    return hashlib.sha256(canonical_json(dict(labels)).encode("utf-8")).hexdigest()[:16]


def _authorized(secret: str, header: str | None) -> None:
    """Bearer ``secret``, or Basic auth whose ``user:password`` is the secret; constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    elif scheme.lower() != "bearer":
        given = ""
    ok = hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))
    if not given or not ok:
        raise Refused(HTTPStatus.UNAUTHORIZED, "unauthenticated",
                      "missing or wrong Authorization (bearer token or basic auth)")  # fmt: skip


def _pagerduty_signature(secret: str, body: bytes, header: str | None) -> None:
    """``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]``: HMAC-SHA256 of the body."""
    expected = "v1=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    given = [part.strip() for part in (header or "").split(",") if part.strip()]
    if not any(hmac.compare_digest(part.encode(), expected.encode()) for part in given):
        raise Refused(HTTPStatus.UNAUTHORIZED, "unauthenticated",
                      "missing or bad X-PagerDuty-Signature")  # fmt: skip


def pagerduty_alert(body: Any, now: float) -> Alert:
    """A PagerDuty v3 webhook event (``{"event": {id, event_type, occurred_at, data}}``)."""
    event = body.get("event") if isinstance(body, dict) else None
    if not isinstance(event, dict):
        raise _malformed("not a PagerDuty v3 webhook ({\"event\": {...}})")
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    service = data.get("service")
    labels = {
        "event_type": str(event.get("event_type", "")), "urgency": str(data.get("urgency", "")),
        "service": str(service.get("summary", "")) if isinstance(service, dict) else "",
    }  # fmt: skip
    occurred = detection_time(event.get("occurred_at"), "event.occurred_at", now)
    if datetime.fromisoformat(occurred).timestamp() < now - ID_WINDOW:
        # its id may be forgotten by now: an event this old is a replay or lost mail
        raise Refused(
            HTTPStatus.UNAUTHORIZED, "stale",
            "event.occurred_at is older than the 7 days its id is remembered",
        )  # fmt: skip
    return Alert(
        id=_text(event.get("id"), "event.id"),
        detected_at=occurred,
        summary=_text(data.get("title") or data.get("summary"), "event.data.title",
                      required=False),
        labels=labels, fields=dict(data), source="pagerduty",
    )  # fmt: skip


# -- rules -------------------------------------------------------------------------------------


def field_at(alert: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """The value at a dotted path in the alert (``labels.severity``); (found?, value)."""
    value: Any = alert
    for part in path.removeprefix("alert.").split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def matches(rule: Mapping[str, Any], alert: Mapping[str, Any]) -> bool:
    """Whether every ``path: value`` of ``rule`` holds in the alert (equality; a string in
    the alert equals a number or word written in YAML by its text)."""
    for path, wanted in rule.items():
        found, value = field_at(alert, path)
        if not found:
            return False
        same = value == wanted and type(value) is type(wanted)
        as_text = isinstance(value, str) and not isinstance(wanted, bool) and value == str(wanted)
        if not (same or as_text):
            return False
    return True


def render_value(value: Any, view: dict[str, Any]) -> Any:
    """A trigger's param: a template over ``alert``, a field path (``alert.labels.wallet``)
    or a constant."""
    from irctl.runbook.render import RenderError, is_template, render

    if isinstance(value, str) and not is_template(value) and value.startswith("alert."):
        found, at = field_at(view["alert"], value)
        if not found:
            raise RenderError(f"the alert has no field {value}")
        return at
    return render(value, view)


def param_text(value: Any) -> str:
    """A param's value as ``-p name=value`` would give it (lists and objects as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


# -- set-up ------------------------------------------------------------------------------------


def make_alerts(
    workspace: Workspace,
    *,
    signing_key: Ed25519PrivateKey,
    clock: Callable[[], float] = time.time,
    log: Log | None = None,
) -> Alerts | None:
    """The alert endpoint for ``workspace``'s ``triggers:`` (None when it has none); every
    trigger's secret and runbook are checked now, so a mistake stops ``irctl serve`` at once."""
    from irctl.runbook.loader import load_runbook_text, read_document
    from irctl.secrets import resolve

    config = workspace.config
    if not config.triggers:
        return None
    if not any(op.key for op in config.operators.values()):
        raise UsageError(
            "triggers: need operators with keys in irctl.yaml: a run an alert starts waits "
            "for one of them to adopt it (irctl adopt RUN --as OP)"
        )
    aws = config.integrations.get("aws")
    secrets = {
        name: resolve(f"triggers.{name}.secret", trigger.secret, base=workspace.root, aws=aws)
        for name, trigger in config.triggers.items()
    }

    def load(runbook_id: str) -> tuple[Runbook, str]:
        path = workspace.resolve_runbook(runbook_id)
        text = read_document(path)
        return load_runbook_text(text, str(path)), text

    for name, trigger in sorted(config.triggers.items()):
        if trigger.source == "sns":
            raise UsageError(f"trigger {name}: source sns is not served by this irctl yet")
        try:
            runbook, _ = load(trigger.runbook)
        except IrctlError as exc:
            raise UsageError(f"trigger {name}: runbook {trigger.runbook}: {exc.message}") from exc
        unknown = sorted(set(trigger.params) - set(runbook.params))
        if unknown:
            raise UsageError(
                f"trigger {name}: runbook {runbook.id} takes no param {', '.join(unknown)}"
            )
        if log is not None and not any(step.auto for step in runbook.all_steps()):
            log(f"trigger {name}: runbook {runbook.id} marks no step auto: true; an alert "
                "starts a run that only waits to be adopted")  # fmt: skip
    return Alerts(
        workspace.store, config, signing_key, secrets, load, workspace=workspace.root,
        clock=clock, log=log or (lambda _line: None),
    )  # fmt: skip
