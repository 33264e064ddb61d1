"""Stand-ins for PagerDuty's Events API v2 and Atlassian Statuspage's REST API v1.

Real HTTP servers on 127.0.0.1 (a free port each) for tests and sandbox drills.  They check
requests as the documented APIs do (required fields, enums, the credential) and answer a wrong
one with the API's documented status, keep the state a test asserts on, and record every
request without its credential::

    from irctl_comms.testing import PagerDutyStandIn, StatuspageStandIn

    with PagerDutyStandIn(routing_keys=[KEY]) as pd:
        ...  # integrations.page.base_url: pd.url
        assert pd.alert("INC-42").status == "triggered"

    with StatuspageStandIn("api-key", page_id="kctbh9vrtdwd",
                           components={"wd0001": "Withdrawals"}) as sp:
        ...  # integrations.status_page.base_url: sp.url  (it ends in /v1)
        assert sp.incidents("kctbh9vrtdwd")[0]["status"] == "investigating"

Faults: :meth:`rate_limit` answers 429 (or Statuspage's older 420) with ``Retry-After``,
:meth:`fail_next` any status (503, 500...), before the request takes effect or, with
``after_effect=True``, after it did (a 502 from a gateway that passed the request on).
:meth:`hold` makes the next matching request take effect and then wait before it is
answered: the moment a crash-safety test kills irctl.

Only the standard library is imported: a test loads this module without the actions.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = [
    "Alert",
    "Held",
    "PagerDutyStandIn",
    "Request",
    "StatuspageStandIn",
]

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


# --- PagerDuty Events API v2 ----------------------------------------------------------------------

SEVERITIES = ("critical", "error", "warning", "info")
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")


@dataclass
class Alert:
    """An alert as PagerDuty keeps it: one per dedup_key while it is open."""

    routing_key_index: int  # which of the stand-in's routing keys (never the key itself)
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    summary: str
    severity: str
    source: str
    custom_details: Any = None
    events: list[str] = field(default_factory=list)  # the event actions applied, in order


class PagerDutyStandIn(_StandIn):
    """``POST /v2/enqueue`` for the given routing keys (32 characters each).

    A bad event gets 400 ``{"status": "invalid event", "message": "Event object is invalid",
    "errors": [...]}``; a good one 202 ``{"status": "success", "message": "Event processed",
    "dedup_key": ...}``.  A trigger with the dedup_key of an open alert adds to it, one of a
    resolved alert opens a new one; an acknowledge or resolve with no open alert is dropped
    (and still answered 202), as PagerDuty does.  A well-formed routing key that is not one
    of the stand-in's is refused here with 400 ``Invalid routing key``.
    """

    def __init__(self, routing_keys: Iterable[str], *, port: int = 0) -> None:
        self.routing_keys = list(routing_keys)
        if any(len(key) != 32 for key in self.routing_keys):
            raise ValueError("a PagerDuty routing key is 32 characters")
        self.alerts: list[Alert] = []
        self.dropped: list[dict[str, Any]] = []  # acknowledge/resolve events with no open alert
        super().__init__(port=port)

    def alert(self, dedup_key: str) -> Alert | None:
        """The latest alert with ``dedup_key`` (open or not), or None."""
        with self._lock:
            found = [a for a in self.alerts if a.dedup_key == dedup_key]
        return found[-1] if found else None

    def authorized(self, headers: Mapping[str, str], body: Any) -> bool:
        return isinstance(body, dict) and body.get("routing_key") in self.routing_keys

    def refused(self) -> Answer | None:
        return None  # the key is in the body: a wrong one is an invalid event (handle says so)

    def unparsable(self) -> Answer:
        return self._invalid(["Could not parse the request body as JSON"])

    def recorded_body(self, body: Any) -> Any:
        if isinstance(body, dict) and "routing_key" in body:
            body["routing_key"] = "(routing key)"
        return body

    @staticmethod
    def _invalid(errors: list[str]) -> Answer:
        return 400, {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": errors,
        }

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        if (method, path) != ("POST", "/v2/enqueue"):
            return 404, {"status": "not found", "message": f"no route {method} {path}"}
        if not isinstance(body, dict):
            return self._invalid(["Event object must be a JSON object"])
        errors = self._errors(body)
        if errors:
            return self._invalid(errors)
        index = self.routing_keys.index(body["routing_key"])
        action = body["event_action"]
        key = body.get("dedup_key") or secrets.token_hex(16)
        open_alert = next(
            (
                a
                for a in reversed(self.alerts)
                if a.routing_key_index == index and a.dedup_key == key and a.status != "resolved"
            ),
            None,
        )
        if action == "trigger":
            payload = body["payload"]
            if open_alert is None:
                open_alert = Alert(
                    index, key, "triggered", payload["summary"], payload["severity"],
                    payload["source"], payload.get("custom_details"),
                )  # fmt: skip
                self.alerts.append(open_alert)
            open_alert.events.append("trigger")
        elif open_alert is None:
            self.dropped.append({"event_action": action, "dedup_key": key})
        else:
            open_alert.status = "acknowledged" if action == "acknowledge" else "resolved"
            open_alert.events.append(action)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}

    def _errors(self, body: dict[str, Any]) -> list[str]:
        errors: list[str] = []
        key = body.get("routing_key")
        if not isinstance(key, str) or not key:
            errors.append("'routing_key' is missing or blank")
        elif len(key) != 32:
            errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
        elif key not in self.routing_keys:
            errors.append("Invalid routing key")
        action = body.get("event_action")
        if action not in EVENT_ACTIONS:
            errors.append(
                "'event_action' is invalid (must be one of the following: 'trigger', "
                "'acknowledge' or 'resolve')"
            )
        dedup = body.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action in ("acknowledge", "resolve") and not dedup:
            errors.append(f"'dedup_key' is required for the '{action}' event action")
        if action == "trigger":
            errors.extend(_payload_errors(body.get("payload")))
        return errors


def _payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors: list[str] = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("'payload.summary' must be at most 1024 characters")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append(
            "'payload.severity' is invalid (must be one of the following: 'critical', "
            "'warning', 'error' or 'info')"
        )
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


# --- Statuspage REST API v1 -----------------------------------------------------------------------

INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
COMPONENT_STATUSES = (
    "operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage",
)  # fmt: skip
IMPACTS = ("none", "minor", "major", "critical")
_IMPACT_OF = {
    "major_outage": "critical",
    "partial_outage": "major",
    "degraded_performance": "minor",
}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


class StatuspageStandIn(_StandIn):
    """Pages, their components and incidents under ``/v1``, for one API key.

    ``Authorization: OAuth <key>`` is required (else 401); an unknown page, incident or
    component is 404; a body that breaks the API's rules (no name, a status or impact that
    is not one of its values, an unknown component, metadata whose top-level values are not
    objects) is 422 ``{"message": ...}``.  ``clock`` gives the time incidents are stamped with.
    """

    prefix = "/v1"

    def __init__(
        self,
        api_key: str,
        *,
        page_id: str = "kctbh9vrtdwd",
        components: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.clock = clock or (lambda: datetime.now(UTC))
        self.pages: dict[str, dict[str, Any]] = {}
        self._incidents: dict[str, list[dict[str, Any]]] = {}
        self._components: dict[str, dict[str, dict[str, Any]]] = {}
        super().__init__(port=port)
        self.add_page(page_id, components or {})

    # -- state for tests ------------------------------------------------------------------------

    def add_page(self, page_id: str, components: Mapping[str, str] | None = None) -> None:
        """A page, with components ``{id: name}`` (each operational)."""
        with self._lock:
            self.pages[page_id] = {"id": page_id, "name": f"Status of {page_id}"}
            self._incidents[page_id] = []
            self._components[page_id] = {}
            for component_id, name in (components or {}).items():
                self._components[page_id][component_id] = {
                    "id": component_id, "page_id": page_id, "name": name,
                    "status": "operational", "group_id": None,
                    "created_at": _stamp(self.clock()), "updated_at": _stamp(self.clock()),
                }  # fmt: skip

    def add_incident(
        self,
        page_id: str,
        name: str,
        *,
        created_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        status: str = "investigating",
    ) -> dict[str, Any]:
        """An incident someone else opened (for searches over a long list)."""
        with self._lock:
            return self._create(
                page_id,
                {"name": name, "status": status, "metadata": metadata or {}},
                created_at or self.clock(),
            )

    def incidents(self, page_id: str) -> list[dict[str, Any]]:
        """The page's incidents, newest first (copies)."""
        with self._lock:
            return copy.deepcopy(self._listed(page_id))

    def component(self, page_id: str, component_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._components[page_id][component_id])

    # -- the API --------------------------------------------------------------------------------

    def authorized(self, headers: Mapping[str, str], body: Any) -> bool:
        given = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        return given == f"OAuth {self.api_key}"

    def refused(self) -> Answer | None:
        return 401, {"message": "Could not authenticate"}

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        parts = path.strip("/").split("/")
        if parts[:2] != ["v1", "pages"]:
            return 404, {"message": "The requested resource could not be found"}
        if len(parts) == 2 and method == "GET":
            return 200, list(self.pages.values())
        if len(parts) < 3 or parts[2] not in self.pages:
            return 404, {"message": "The requested resource could not be found"}
        page = parts[2]
        rest = parts[3:]
        if rest == [] and method == "GET":
            return 200, self.pages[page]
        if rest == ["incidents"] and method == "GET":
            return self._list(page, query)
        if rest == ["incidents"] and method == "POST":
            return self._post_incident(page, body)
        if len(rest) == 2 and rest[0] == "incidents":
            return self._incident(page, rest[1], method, body)
        if rest == ["components"] and method == "GET":
            return 200, list(self._components[page].values())
        if len(rest) == 2 and rest[0] == "components":
            return self._component(page, rest[1], method, body)
        return 404, {"message": "The requested resource could not be found"}

    def _listed(self, page: str) -> list[dict[str, Any]]:
        return sorted(self._incidents[page], key=lambda i: i["created_at"], reverse=True)

    def _list(self, page: str, query: dict[str, str]) -> Answer:
        try:
            limit = int(query.get("limit", "100"))
            number = int(query.get("page", "1"))
        except ValueError:
            return 400, {"message": "limit and page must be numbers"}
        limit = max(1, min(limit, 100))
        found = self._listed(page)
        text = query.get("q")
        if text:
            found = [i for i in found if text.lower() in json.dumps(
                [i["name"], i["status"], i["incident_updates"]]).lower()]  # fmt: skip
        start = (max(1, number) - 1) * limit
        return 200, found[start : start + limit]

    def _unprocessable(self, fields: dict[str, Any], *, creating: bool, page: str) -> str | None:
        if creating and not (isinstance(fields.get("name"), str) and fields["name"].strip()):
            return "Name can't be blank"
        if "name" in fields and (not isinstance(fields["name"], str) or len(fields["name"]) > 255):
            return "Name is too long (maximum is 255 characters)"
        if "status" in fields and fields["status"] not in INCIDENT_STATUSES:
            return f"Status must be one of {', '.join(INCIDENT_STATUSES)}"
        if "impact_override" in fields and fields["impact_override"] not in IMPACTS:
            return f"Impact override must be one of {', '.join(IMPACTS)}"
        body = fields.get("body")
        if body is not None and (not isinstance(body, str) or len(body) > 25_000):
            return "Body is too long (maximum is 25000 characters)"
        components = fields.get("components", {})
        if not isinstance(components, dict):
            return "Components must be an object of component ids and statuses"
        ids = fields.get("component_ids", [])
        if not isinstance(ids, list):
            return "Component ids must be a list"
        for component_id in [*components, *ids]:
            if component_id not in self._components[page]:
                return f"Component {component_id} was not found on this page"
        for status in components.values():
            if status not in COMPONENT_STATUSES:
                return f"Component status must be one of {', '.join(COMPONENT_STATUSES)}"
        metadata = fields.get("metadata", {})
        if not isinstance(metadata, dict) or not all(
            isinstance(v, dict) for v in metadata.values()
        ):
            return "Metadata: all top-level values must be objects"
        if not isinstance(fields.get("deliver_notifications", True), bool):
            return "Deliver notifications must be true or false"
        return None

    def _post_incident(self, page: str, body: Any) -> Answer:
        fields = body.get("incident") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return 400, {"message": "incident is missing or not an object"}
        problem = self._unprocessable(fields, creating=True, page=page)
        if problem is not None:
            return 422, {"message": problem}
        return 201, copy.deepcopy(self._create(page, fields, self.clock()))

    def _create(self, page: str, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
        incident_id = _new_id()
        incident: dict[str, Any] = {
            "id": incident_id, "page_id": page, "name": fields["name"],
            "status": fields.get("status", "investigating"),
            "impact": "none", "impact_override": fields.get("impact_override"),
            "created_at": _stamp(now), "updated_at": _stamp(now),
            "monitoring_at": None, "resolved_at": None,
            "shortlink": f"https://stspg.io/{incident_id[:6]}",
            "components": [], "incident_updates": [],
            "metadata": copy.deepcopy(fields.get("metadata") or {}),
            "postmortem_body": None,
        }  # fmt: skip
        self._incidents[page].append(incident)
        self._apply(page, incident, fields, now)
        return incident

    def _apply(
        self, page: str, incident: dict[str, Any], fields: dict[str, Any], now: datetime
    ) -> None:
        """Set the fields an update changes, move the components, add the update."""
        for name in ("name", "status", "impact_override"):
            if name in fields:
                incident[name] = fields[name]
        if "metadata" in fields:
            incident["metadata"] = copy.deepcopy(fields["metadata"])
        components = self._components[page]
        affected = []
        for component_id, status in (fields.get("components") or {}).items():
            old = components[component_id]["status"]
            components[component_id]["status"] = status
            components[component_id]["updated_at"] = _stamp(now)
            affected.append({"code": component_id, "name": components[component_id]["name"],
                             "old_status": old, "new_status": status})  # fmt: skip
        ids = list(dict.fromkeys([*(c["id"] for c in incident["components"]),
                                  *(fields.get("component_ids") or []),
                                  *(fields.get("components") or {})]))  # fmt: skip
        incident["components"] = [copy.deepcopy(components[i]) for i in ids]
        worst = [_IMPACT_OF.get(c["status"], "none") for c in incident["components"]]
        incident["impact"] = incident.get("impact_override") or max(
            worst, key=IMPACTS.index, default="none"
        )
        if incident["status"] == "monitoring" and incident["monitoring_at"] is None:
            incident["monitoring_at"] = _stamp(now)
        if incident["status"] == "resolved" and incident["resolved_at"] is None:
            incident["resolved_at"] = _stamp(now)
        incident["updated_at"] = _stamp(now)
        if "body" in fields or "status" in fields or affected:
            incident["incident_updates"].insert(0, {
                "id": _new_id(), "incident_id": incident["id"], "status": incident["status"],
                "body": fields.get("body", ""), "created_at": _stamp(now),
                "display_at": _stamp(now), "affected_components": affected,
                "deliver_notifications": fields.get("deliver_notifications", True),
            })  # fmt: skip

    def _incident(self, page: str, incident_id: str, method: str, body: Any) -> Answer:
        incident = next((i for i in self._incidents[page] if i["id"] == incident_id), None)
        if incident is None:
            return 404, {"message": "The requested resource could not be found"}
        if method == "GET":
            return 200, copy.deepcopy(incident)
        if method not in ("PATCH", "PUT"):
            return 405, {"message": f"{method} is not allowed here"}
        fields = body.get("incident") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return 400, {"message": "incident is missing or not an object"}
        problem = self._unprocessable(fields, creating=False, page=page)
        if problem is not None:
            return 422, {"message": problem}
        self._apply(page, incident, fields, self.clock())
        return 200, copy.deepcopy(incident)

    def _component(self, page: str, component_id: str, method: str, body: Any) -> Answer:
        component = self._components[page].get(component_id)
        if component is None:
            return 404, {"message": "The requested resource could not be found"}
        if method == "GET":
            return 200, copy.deepcopy(component)
        if method not in ("PATCH", "PUT"):
            return 405, {"message": f"{method} is not allowed here"}
        fields = body.get("component") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return 400, {"message": "component is missing or not an object"}
        if "status" in fields and fields["status"] not in COMPONENT_STATUSES:
            return 422, {"message": f"Status must be one of {', '.join(COMPONENT_STATUSES)}"}
        for name in ("status", "name", "description"):
            if name in fields:
                component[name] = fields[name]
        component["updated_at"] = _stamp(self.clock())
        return 200, copy.deepcopy(component)
