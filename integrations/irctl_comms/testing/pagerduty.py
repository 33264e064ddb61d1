"""PagerDuty's Events API v2 on 127.0.0.1: ``POST /v2/enqueue``, as PagerDuty documents it."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from irctl_comms.testing._server import Answer, _StandIn

__all__ = ["Alert", "PagerDutyStandIn"]

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
