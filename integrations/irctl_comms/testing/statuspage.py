"""Atlassian Statuspage's REST API v1 on 127.0.0.1: pages, components and incidents."""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from irctl_comms.testing._server import Answer, _StandIn

__all__ = ["StatuspageStandIn"]

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
