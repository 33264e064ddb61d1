"""The public status page through Atlassian Statuspage's REST API v1: ``status_page.*``.

::

    - id: status-page
      action: status_page.create_incident
      with:
        name: "Withdrawals paused"
        body: "We have paused withdrawals while we investigate. Funds are safe."
        status: investigating
        impact: major
        components: [{id: "{{ vars.statuspage.withdrawals }}", status: major_outage}]
    # ... later
    - id: status-update
      action: status_page.update_incident
      with:
        incident_id: "{{ steps['status-page'].outputs.incident_id }}"
        status: monitoring
        body: "Withdrawals have resumed; we are monitoring."
        components: [{id: "{{ vars.statuspage.withdrawals }}", status: operational}]

``components`` is a mapping of component ids to statuses (``{wd0001: major_outage}``), or,
where an id comes from a template (the keys of a mapping are never rendered), a list of
``{id, status}``.

The settings are ``integrations.status_page`` in irctl.yaml::

    integrations:
      status_page:
        api_key: env:STATUSPAGE_API_KEY    # a secret reference, sent as "Authorization: OAuth ..."
        page_id: kctbh9vrtdwd              # the default page of every step (a step may name one)
        base_url: https://api.statuspage.io/v1   # the default; a stand-in on 127.0.0.1 in tests
        timeout: 10
        rate_limit_retries: 3              # 420/429s (and 503s with Retry-After) waited out
        max_retry_wait: 30

Crash safety.  Opening an incident is not idempotent (a second POST is a second public
incident) and Statuspage takes no idempotency key, so ``create_incident`` marks its incident:
the incident's ``metadata`` carries ``{"irctl": {"marker": ..., "run": ..., "step": ...}}``,
the marker derived from the run, the step and its inputs.  Before the request leaves, the
marker and the time are journaled (``ctx.record``); after the answer, the incident id.  A
later attempt of the step and the probe after a crash read those facts back: with an id they
read that incident; with only a marker they list the page's incidents, newest first, back to
the recorded time, for one carrying the marker.  Found: that is the step's incident, and no
second one is created.  Not found: the request never reached Statuspage, and it is sent again.
When the list is too long to settle it, a person decides, told the marker to look for.
``update_incident`` does the same with the update it posts; ``set_component`` is idempotent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from irctl.actions import ActionContext, Probe, action, preflight
from irctl.canonical import canonical_json, sha256_hex
from irctl.errors import ActionError
from irctl_comms._http import JsonApi, base_url, configured_secret, setting

SECTION = "status_page"
SERVICE = "Statuspage"
DEFAULT_BASE_URL = "https://api.statuspage.io/v1"
#: Statuspage's largest page of incidents, and how many pages a search reads at most.
PER_PAGE = 100
MAX_PAGES = 10
#: How far before the recorded time an incident may be stamped (the two clocks differ).
CLOCK_SKEW = timedelta(minutes=10)

Outputs = dict[str, Any]
IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]
ComponentStatus = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"
]
Impact = Literal["none", "minor", "major", "critical"]
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Id = Annotated[str, Field(pattern=ID.pattern, description="a Statuspage id, e.g. kctbh9vrtdwd")]


def _component_list(value: Any) -> Any:
    """``[{id, status}, ...]`` as ``{id: status}``; a mapping as it is."""
    if not isinstance(value, list):
        return value
    found: dict[Any, Any] = {}
    for item in value:
        if not isinstance(item, dict) or set(item) != {"id", "status"}:
            raise ValueError("each item of a components list is {id: ..., status: ...}")
        if item["id"] in found:
            raise ValueError(f"component {item['id']} is listed twice")
        found[item["id"]] = item["status"]
    return found


Components = Annotated[
    dict[Id, ComponentStatus],
    BeforeValidator(_component_list),
    Field(
        max_length=100,
        description="the affected components: {id: status}, or [{id, status}] (statuses: "
        "operational, degraded_performance, partial_outage, major_outage, under_maintenance)",
    ),
]


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _OnPage(_Inputs):
    page_id: Id | None = Field(
        default=None, description="default: integrations.status_page.page_id"
    )


class CreateIncident(_OnPage):
    """A new incident on the status page, with its first update."""

    name: str = Field(min_length=1, max_length=255, description="the incident's public title")
    body: str | None = Field(
        default=None, min_length=1, max_length=25_000, description="the first update's text"
    )
    status: IncidentStatus = "investigating"
    impact: Impact | None = Field(
        default=None, description="none, minor, major or critical (default: Statuspage's own)"
    )
    components: Components = Field(default_factory=dict)
    deliver_notifications: bool = Field(default=True, description="notify the page's subscribers")


class UpdateIncident(_OnPage):
    """A new status, update text or component statuses for an incident."""

    incident_id: Id
    status: IncidentStatus | None = None
    body: str | None = Field(
        default=None, min_length=1, max_length=25_000, description="the update's text"
    )
    impact: Impact | None = None
    components: Components = Field(default_factory=dict)
    deliver_notifications: bool = True

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateIncident:
        if (
            self.status is None
            and self.body is None
            and self.impact is None
            and not self.components
        ):
            raise ValueError("give at least one of status, body, impact or components")
        return self


class SetComponent(_OnPage):
    """One component's status."""

    component_id: Id
    status: ComponentStatus


# --- the client ---------------------------------------------------------------------------------


def _api(ctx: ActionContext | None, config: dict[str, Any], name: str) -> JsonApi:
    key = configured_secret(config, SECTION, "api_key", name, example="env:STATUSPAGE_API_KEY")
    return JsonApi(
        service=SERVICE,
        section=SECTION,
        config=config,
        base=base_url(config, SECTION, DEFAULT_BASE_URL),
        headers={"Authorization": f"OAuth {key}"},
        secrets=[key],
        credential="integrations.status_page.api_key",
        timeout=ctx.remaining() if ctx is not None else 10.0,
        cancelled=ctx.cancelled if ctx is not None else None,
        note=ctx.note if ctx is not None else None,
        rate_limited=frozenset({420, 429}),  # 420: what Statuspage answered before 429
    )


def _page(inputs: _OnPage, config: dict[str, Any], name: str) -> str:
    if inputs.page_id is not None:
        return inputs.page_id
    page = setting(config, SECTION, "page_id", str, "")
    if not page:
        raise ActionError(
            f"{name}: no page: give page_id or set integrations.status_page.page_id",
            retryable=False,
        )
    if not ID.match(page):
        raise ActionError(
            f"{name}: integrations.status_page.page_id is not a Statuspage id", retryable=False
        )
    return page


def _object(answer_body: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer_body, dict) or not isinstance(answer_body.get("id"), str):
        raise ActionError(
            f"{SERVICE} answered {what} without the object's id; check "
            "integrations.status_page.base_url",
            retryable=False,
        )
    return answer_body


def _incident(api: JsonApi, page: str, incident_id: str) -> dict[str, Any] | None:
    what = f"read incident {incident_id} of page {page}"
    answer = api.call("GET", f"/pages/{page}/incidents/{incident_id}", what=what, accept=[404])
    return None if answer.status == 404 else _object(answer.body, what)


def _component_statuses(incident: dict[str, Any]) -> dict[str, Any]:
    found = incident.get("components") or []
    return {str(c.get("id")): c.get("status") for c in found if isinstance(c, dict) and c.get("id")}


def _incident_outputs(incident: dict[str, Any]) -> Outputs:
    return {
        "incident_id": incident["id"],
        "page_id": incident.get("page_id"),
        "name": incident.get("name"),
        "status": incident.get("status"),
        "impact": incident.get("impact"),
        "shortlink": incident.get("shortlink"),
        "components": _component_statuses(incident),
    }


def _fingerprint(kind: str, inputs: BaseModel, ctx: ActionContext) -> str:
    """One per step of a run and its inputs: every attempt of the step computes the same."""
    step = canonical_json([kind, ctx.run_id, ctx.step_id, inputs.model_dump(mode="json")])
    return "irctl-" + sha256_hex(step)[:32]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _marker_of(incident: dict[str, Any]) -> object:
    metadata = incident.get("metadata")
    mine = metadata.get("irctl") if isinstance(metadata, dict) else None
    return mine.get("marker") if isinstance(mine, dict) else None


def _find(
    api: JsonApi, page: str, marker: str, since: object
) -> tuple[dict[str, Any] | None, bool]:
    """The incident carrying ``marker``, newest first back to ``since``; and whether the search
    was complete (False: it stopped after MAX_PAGES pages without reaching ``since``)."""
    floor = _moment(since)
    floor = None if floor is None else floor - CLOCK_SKEW
    for number in range(1, MAX_PAGES + 1):
        what = f"list the incidents of page {page}"
        answer = api.call(
            "GET", f"/pages/{page}/incidents?limit={PER_PAGE}&page={number}", what=what
        )
        if not isinstance(answer.body, list):
            raise ActionError(f"{SERVICE} answered {what} without a list", retryable=False)
        incidents = [i for i in answer.body if isinstance(i, dict)]
        for incident in incidents:
            if _marker_of(incident) == marker:
                return incident, True
        if len(answer.body) < PER_PAGE:
            return None, True
        stamps = [_moment(i.get("created_at")) for i in incidents]
        known = [stamp for stamp in stamps if stamp is not None]
        if floor is not None and known and min(known) < floor:
            return None, True
    return None, False


# --- status_page.create_incident ----------------------------------------------------------------


def _create_body(inputs: CreateIncident, ctx: ActionContext, marker: str) -> dict[str, Any]:
    incident: dict[str, Any] = {
        "name": inputs.name,
        "status": inputs.status,
        "deliver_notifications": inputs.deliver_notifications,
        "metadata": {"irctl": {"marker": marker, "run": ctx.run_id, "step": ctx.step_id}},
    }
    if inputs.body is not None:
        incident["body"] = inputs.body
    if inputs.impact is not None:
        incident["impact_override"] = inputs.impact
    if inputs.components:
        incident["component_ids"] = list(inputs.components)
        incident["components"] = dict(inputs.components)
    return {"incident": incident}


def _earlier(
    api: JsonApi, page: str, marker: str, ctx: ActionContext
) -> tuple[dict[str, Any] | None, bool]:
    """The incident an earlier attempt of this step made, and whether that is certain."""
    if ctx.facts.get("marker") != marker:
        return None, True  # no attempt sent these inputs
    recorded = ctx.facts.get("incident_id")
    if isinstance(recorded, str):
        found = _incident(api, page, recorded)
        if found is not None:
            return found, True
        raise ActionError(
            f"incident {recorded}, which this step created on page {page}, is gone (deleted?); "
            "irctl will not open another on a guess: mark the step by hand",
            retryable=False,
        )
    return _find(api, page, marker, ctx.facts.get("since"))


def _undecided(page: str, marker: str) -> str:
    return (
        f"page {page} has more than {PER_PAGE * MAX_PAGES} incidents since this step first "
        f"started; look for one whose metadata has irctl.marker {marker}"
    )


@action("status_page.create_incident")
def create_incident(inputs: CreateIncident, ctx: ActionContext) -> Outputs:
    """Open an incident on the public status page (once per step, whatever crashes)."""
    name = "status_page.create_incident"
    page = _page(inputs, ctx.config, name)
    marker = _fingerprint("create", inputs, ctx)
    api = _api(ctx, ctx.config, name)
    earlier, certain = _earlier(api, page, marker, ctx)
    if earlier is not None:
        ctx.note(f"incident {earlier['id']} was opened by an earlier attempt of this step")
        if ctx.facts.get("incident_id") != earlier["id"]:
            ctx.record(incident_id=earlier["id"])
        return {**_incident_outputs(earlier), "marker": marker}
    if not certain:
        raise ActionError(
            f"{name}: cannot tell whether an earlier attempt opened the incident: "
            f"{_undecided(page, marker)}, then mark the step",
            retryable=False,
        )
    if ctx.facts.get("marker") != marker:
        ctx.record(marker=marker, since=_now())  # journaled before the request leaves
    what = f"open incident {inputs.name!r} on page {page}"
    answer = api.call(
        "POST",
        f"/pages/{page}/incidents",
        _create_body(inputs, ctx, marker),
        what=what,
        resend_503=False,  # a 503 may have come from behind a gateway that passed it on
    )
    incident = _object(answer.body, what)
    ctx.record(incident_id=incident["id"])
    return {**_incident_outputs(incident), "marker": marker}


@create_incident.simulate
def _simulate_create(inputs: CreateIncident, ctx: ActionContext) -> Outputs:
    page = inputs.page_id or str(ctx.config.get("page_id") or "(integrations.status_page.page_id)")
    affected = (
        " affecting " + ", ".join(f"{c} ({s})" for c, s in inputs.components.items())
        if inputs.components
        else ""
    )
    return {
        "simulated": True,
        "would": f"open the incident {inputs.name!r} ({inputs.status}) on status page "
        f"{page}{affected}",
        "incident_id": None,
        "page_id": page,
        "name": inputs.name,
        "status": inputs.status,
        "impact": inputs.impact,
        "shortlink": None,
        "components": dict(inputs.components),
        "marker": _fingerprint("create", inputs, ctx),
    }


@create_incident.probe
def _probe_create(inputs: CreateIncident, ctx: ActionContext) -> Probe:
    marker = _fingerprint("create", inputs, ctx)
    if ctx.facts.get("marker") != marker:
        return Probe.not_done("no attempt of this step sent these inputs to Statuspage")
    page = _page(inputs, ctx.config, "status_page.create_incident")
    try:
        found, certain = _earlier(_api(ctx, ctx.config, "status_page.create_incident"), page,
                                  marker, ctx)  # fmt: skip
    except ActionError as exc:
        return Probe.unknown(exc.message)
    if found is not None:
        return Probe.done({**_incident_outputs(found), "marker": marker})
    if not certain:
        return Probe.unknown(_undecided(page, marker))
    return Probe.not_done(f"no incident on page {page} carries this step's marker {marker}")


# --- status_page.update_incident ----------------------------------------------------------------


def _update_body(inputs: UpdateIncident) -> dict[str, Any]:
    incident: dict[str, Any] = {"deliver_notifications": inputs.deliver_notifications}
    if inputs.status is not None:
        incident["status"] = inputs.status
    if inputs.body is not None:
        incident["body"] = inputs.body
    if inputs.impact is not None:
        incident["impact_override"] = inputs.impact
    if inputs.components:
        incident["component_ids"] = list(inputs.components)
        incident["components"] = dict(inputs.components)
    return {"incident": incident}


def _latest_update(incident: dict[str, Any]) -> dict[str, Any] | None:
    updates = [u for u in incident.get("incident_updates") or [] if isinstance(u, dict)]
    dated = [(u, _moment(u.get("created_at"))) for u in updates]
    dated.sort(key=lambda pair: pair[1] or datetime.min.replace(tzinfo=UTC), reverse=True)
    return dated[0][0] if dated else None


def _applied(incident: dict[str, Any], inputs: UpdateIncident, since: object) -> bool:
    """Whether ``incident`` shows every change of ``inputs`` (its text posted after ``since``)."""
    if inputs.status is not None and incident.get("status") != inputs.status:
        return False
    if inputs.impact is not None and incident.get("impact_override") != inputs.impact:
        return False
    current = _component_statuses(incident)
    if any(current.get(c) != s for c, s in inputs.components.items()):
        return False
    if inputs.body is None:
        return True
    floor = _moment(since)
    for update in incident.get("incident_updates") or []:
        if not isinstance(update, dict) or update.get("body") != inputs.body:
            continue
        posted = _moment(update.get("created_at"))
        if floor is None or posted is None or posted >= floor - CLOCK_SKEW:
            return True
    return False


def _update_outputs(incident: dict[str, Any], inputs: UpdateIncident) -> Outputs:
    latest = _latest_update(incident) if inputs.body is not None else None
    return {**_incident_outputs(incident), "update_id": latest.get("id") if latest else None}


@action("status_page.update_incident")
def update_incident(inputs: UpdateIncident, ctx: ActionContext) -> Outputs:
    """Post an update to a status page incident: status, text, components."""
    name = "status_page.update_incident"
    page = _page(inputs, ctx.config, name)
    api = _api(ctx, ctx.config, name)
    fingerprint = _fingerprint("update", inputs, ctx)
    if ctx.facts.get("update") == fingerprint:  # an earlier attempt sent it: did it arrive?
        found = _incident(api, page, inputs.incident_id)
        if found is not None and _applied(found, inputs, ctx.facts.get("since")):
            ctx.note(
                f"incident {inputs.incident_id} shows this update already: not posting it again"
            )
            return _update_outputs(found, inputs)
    else:
        ctx.record(update=fingerprint, since=_now())
    what = f"update incident {inputs.incident_id} of page {page}"
    answer = api.call(
        "PATCH",
        f"/pages/{page}/incidents/{inputs.incident_id}",
        _update_body(inputs),
        what=what,
        accept=[404],
        resend_503=inputs.body is None,  # re-sending a text could post it twice
    )
    if answer.status == 404:
        raise ActionError(
            f"{SERVICE} has no incident {inputs.incident_id} on page {page}", retryable=False
        )
    return _update_outputs(_object(answer.body, what), inputs)


@update_incident.simulate
def _simulate_update(inputs: UpdateIncident, ctx: ActionContext) -> Outputs:
    changes = [f"status {inputs.status}"] if inputs.status else []
    changes += [f"impact {inputs.impact}"] if inputs.impact else []
    changes += [f"{c} {s}" for c, s in inputs.components.items()]
    changes += [f"the text {inputs.body[:120]!r}"] if inputs.body else []
    return {
        "simulated": True,
        "would": f"update status page incident {inputs.incident_id}: {', '.join(changes)}",
        "incident_id": inputs.incident_id,
        "page_id": inputs.page_id or ctx.config.get("page_id"),
        "name": None,
        "status": inputs.status,
        "impact": inputs.impact,
        "shortlink": None,
        "components": dict(inputs.components),
        "update_id": None,
    }


@update_incident.probe
def _probe_update(inputs: UpdateIncident, ctx: ActionContext) -> Probe:
    name = "status_page.update_incident"
    if ctx.facts.get("update") != _fingerprint("update", inputs, ctx):
        return Probe.not_done("no attempt of this step sent this update to Statuspage")
    page = _page(inputs, ctx.config, name)
    found = _incident(_api(ctx, ctx.config, name), page, inputs.incident_id)
    if found is None:
        return Probe.unknown(f"{SERVICE} has no incident {inputs.incident_id} on page {page}")
    if _applied(found, inputs, ctx.facts.get("since")):
        return Probe.done(_update_outputs(found, inputs))
    return Probe.not_done(f"incident {inputs.incident_id} does not show this update")


# --- status_page.set_component ------------------------------------------------------------------


def _component(api: JsonApi, page: str, component_id: str) -> dict[str, Any]:
    what = f"read component {component_id} of page {page}"
    answer = api.call("GET", f"/pages/{page}/components/{component_id}", what=what, accept=[404])
    if answer.status == 404:
        raise ActionError(
            f"{SERVICE} has no component {component_id} on page {page}", retryable=False
        )
    return _object(answer.body, what)


def _component_outputs(
    component: dict[str, Any], previous: object, changed: bool | None
) -> Outputs:
    return {
        "component_id": component["id"],
        "name": component.get("name"),
        "status": component.get("status"),
        "previous_status": previous,
        "changed": changed,
    }


@action("status_page.set_component", idempotent=True)
def set_component(inputs: SetComponent, ctx: ActionContext) -> Outputs:
    """Set a status page component's status (one already there is left as it is)."""
    name = "status_page.set_component"
    page = _page(inputs, ctx.config, name)
    api = _api(ctx, ctx.config, name)
    found = _component(api, page, inputs.component_id)
    previous = ctx.facts.get("previous_status", found.get("status"))
    if "previous_status" not in ctx.facts:
        ctx.record(previous_status=previous)  # what a later step restores, even after a crash
    if found.get("status") == inputs.status:
        ctx.note(f"component {inputs.component_id} is {inputs.status} already")
        return _component_outputs(found, previous, changed=False)
    what = f"set component {inputs.component_id} of page {page} to {inputs.status}"
    answer = api.call(
        "PATCH",
        f"/pages/{page}/components/{inputs.component_id}",
        {"component": {"status": inputs.status}},
        what=what,
    )
    return _component_outputs(_object(answer.body, what), previous, changed=True)


@set_component.simulate
def _simulate_component(inputs: SetComponent, ctx: ActionContext) -> Outputs:
    page = inputs.page_id or str(ctx.config.get("page_id") or "(integrations.status_page.page_id)")
    return {
        "simulated": True,
        "would": f"set component {inputs.component_id} of status page {page} to {inputs.status}",
        "component_id": inputs.component_id,
        "name": None,
        "status": inputs.status,
        "previous_status": None,
        "changed": None,
    }


@set_component.probe
def _probe_component(inputs: SetComponent, ctx: ActionContext) -> Probe:
    name = "status_page.set_component"
    page = _page(inputs, ctx.config, name)
    found = _component(_api(ctx, ctx.config, name), page, inputs.component_id)
    if found.get("status") != inputs.status:
        return Probe.not_done(f"component {inputs.component_id} is {found.get('status')}")
    return Probe.done(_component_outputs(found, ctx.facts.get("previous_status"), changed=None))


# --- readiness ----------------------------------------------------------------------------------


@preflight("status_page")
def ready(config: dict[str, Any]) -> list[str]:
    """``irctl validate --check-integrations``: does Statuspage take the key? (Reads only.)"""
    try:
        api = _api(None, config, "status_page")
        page = str(config.get("page_id") or "")
        if page:
            api.call("GET", f"/pages/{page}", what=f"read page {page}")
        else:
            api.call("GET", "/pages", what="list the pages")
    except ActionError as exc:
        return [exc.message]
    return []
