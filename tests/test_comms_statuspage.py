"""status_page.* against the Statuspage REST API v1 stand-in: registry, engine, and a crash."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from irctl_comms.statuspage import create_incident, set_component, update_incident
from irctl_comms.testing import StatuspageStandIn
from pydantic import ValidationError

from irctl.actions import ActionContext
from irctl.errors import ActionError
from irctl.testing import context, run_action
from tests.comms_run import run_steps
from tests.helpers import IRCTL, irctl, make_workspace

API_KEY = "sp-api-key-7f3c9b12e4d6a8"
PAGE = "kctbh9vrtdwd"
COMPONENTS = {"wd0001": "Withdrawals", "api0001": "Trading API"}
OPEN = {
    "name": "Withdrawals paused",
    "body": "We have paused withdrawals while we investigate.",
    "impact": "major",
    "components": {"wd0001": "major_outage"},
}
INCIDENTS = f"/v1/pages/{PAGE}/incidents"

Ctx = Callable[..., ActionContext]


@pytest.fixture
def statuspage(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatuspageStandIn]:
    monkeypatch.setenv("IRCTL_TEST_SP_KEY", API_KEY)
    with StatuspageStandIn(API_KEY, page_id=PAGE, components=COMPONENTS) as standin:
        yield standin


def settings(standin: StatuspageStandIn, **more: Any) -> dict[str, Any]:
    found = {
        "api_key": "env:IRCTL_TEST_SP_KEY", "page_id": PAGE, "base_url": standin.url,
        "timeout": 2, "max_retry_wait": 5, **more,
    }  # fmt: skip
    return {k: v for k, v in found.items() if v is not None}


@pytest.fixture
def ctx(statuspage: StatuspageStandIn) -> Ctx:
    def make(facts: dict[str, Any] | None = None, **more: Any) -> ActionContext:
        return context(
            run_id="r-1", step_id="status", config=settings(statuspage, **more), timeout=10,
            facts=dict(facts or {}),
        )  # fmt: skip

    return make


def failure(name: str, inputs: dict[str, Any], ctx: ActionContext) -> ActionError:
    with pytest.raises(ActionError) as raised:
        run_action(name, inputs, ctx)
    assert API_KEY not in str(raised.value)
    return raised.value


# --- create_incident ----------------------------------------------------------------------------


def test_create_opens_a_marked_incident_and_moves_its_components(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    step = ctx()
    out = run_action("status_page.create_incident", OPEN, step)
    [incident] = statuspage.incidents(PAGE)
    assert out == {
        "incident_id": incident["id"], "page_id": PAGE, "name": "Withdrawals paused",
        "status": "investigating", "impact": "major", "shortlink": incident["shortlink"],
        "components": {"wd0001": "major_outage"}, "marker": out["marker"],
    }  # fmt: skip
    assert incident["metadata"] == {
        "irctl": {"marker": out["marker"], "run": "r-1", "step": "status"}
    }
    assert incident["incident_updates"][0]["body"] == OPEN["body"]
    assert statuspage.component(PAGE, "wd0001")["status"] == "major_outage"
    [sent] = statuspage.calls("POST")
    assert sent.authorized
    assert sent.body["incident"]["component_ids"] == ["wd0001"]
    assert sent.body["incident"]["impact_override"] == "major"
    # journaled: the marker and time before the request, the incident's id after it
    assert step.facts == {"marker": out["marker"], "since": step.facts["since"],
                          "incident_id": incident["id"]}  # fmt: skip


def test_a_second_attempt_of_the_step_opens_no_second_incident(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    first = ctx()
    opened = run_action("status_page.create_incident", OPEN, first)
    again = run_action("status_page.create_incident", OPEN, ctx(facts=first.facts))
    assert again == opened
    assert len(statuspage.incidents(PAGE)) == 1
    assert len(statuspage.calls("POST")) == 1


def test_a_5xx_after_the_incident_was_made_is_retried_without_a_second_one(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    statuspage.fail_next(502, method="POST", after_effect=True)  # a gateway lost the answer
    first = ctx()
    error = failure("status_page.create_incident", OPEN, first)
    assert error.retryable
    assert len(statuspage.calls("POST")) == 1  # a 5xx to a create is never re-sent in the step
    assert "incident_id" not in first.facts
    retry = ctx(facts=first.facts)  # the engine's next attempt: the facts the first recorded
    out = run_action("status_page.create_incident", OPEN, retry)
    [incident] = statuspage.incidents(PAGE)
    assert out["incident_id"] == incident["id"]
    assert len(statuspage.calls("POST")) == 1
    assert retry.notes == [
        f"incident {incident['id']} was opened by an earlier attempt of this step"
    ]


def test_a_503_before_anything_was_made_is_sent_again_by_the_next_attempt(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    statuspage.fail_next(503, retry_after=0.1, method="POST")
    first = ctx()
    assert failure("status_page.create_incident", OPEN, first).retryable
    out = run_action("status_page.create_incident", OPEN, ctx(facts=first.facts))
    assert [i["id"] for i in statuspage.incidents(PAGE)] == [out["incident_id"]]
    assert [r.status for r in statuspage.calls("POST")] == [503, 201]


def test_the_probe_settles_a_crashed_create(statuspage: StatuspageStandIn, ctx: Ctx) -> None:
    inputs = create_incident.parse(OPEN)
    assert create_incident.call_probe(inputs, ctx()).state == "not_done"  # nothing recorded
    crashed = ctx()
    sent = create_incident.call_run(inputs, crashed)
    # the process died after the POST left, before the answer was journaled
    facts = {k: v for k, v in crashed.facts.items() if k != "incident_id"}
    found = create_incident.call_probe(inputs, ctx(facts=facts))
    assert (found.state, found.outputs) == ("done", sent)
    # with the id journaled, the probe reads that incident directly
    direct = create_incident.call_probe(inputs, ctx(facts=crashed.facts))
    assert (direct.state, direct.outputs) == ("done", sent)
    # inputs a person changed before the re-run are not this attempt's
    other = create_incident.parse({**OPEN, "name": "Deposits paused"})
    assert create_incident.call_probe(other, ctx(facts=facts)).state == "not_done"


def test_the_probe_says_not_done_when_the_request_never_arrived(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    statuspage.fail_next(503, method="POST")  # refused before taking effect
    inputs = create_incident.parse(OPEN)
    crashed = ctx()
    with pytest.raises(ActionError):
        create_incident.call_run(inputs, crashed)
    found = create_incident.call_probe(inputs, ctx(facts=crashed.facts))
    assert found.state == "not_done"
    assert "carries this step's marker" in found.reason


def test_the_search_reads_back_to_the_recorded_time_and_no_further(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    inputs = create_incident.parse(OPEN)
    crashed = ctx()
    sent = create_incident.call_run(inputs, crashed)
    later = datetime.now(UTC) + timedelta(minutes=1)
    for n in range(230):  # opened by others after the crash: ours is on the third page
        statuspage.add_incident(PAGE, f"other {n}", created_at=later)
    facts = {k: v for k, v in crashed.facts.items() if k != "incident_id"}
    found = create_incident.call_probe(inputs, ctx(facts=facts))
    assert (found.state, found.outputs) == ("done", sent)
    assert [r.query.get("page") for r in statuspage.calls("GET", INCIDENTS)] == ["1", "2", "3"]


def test_the_search_stops_at_incidents_older_than_the_attempt(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    for n in range(250):
        statuspage.add_incident(PAGE, f"old {n}", created_at=old - timedelta(minutes=n))
    facts = {"marker": create_incident_marker(ctx), "since": datetime.now(UTC).isoformat()}
    found = create_incident.call_probe(create_incident.parse(OPEN), ctx(facts=facts))
    assert found.state == "not_done"
    assert len(statuspage.calls("GET", INCIDENTS)) == 1


def create_incident_marker(ctx: Ctx) -> str:
    simulated = run_action("status_page.create_incident", OPEN, ctx(), simulate=True)
    return str(simulated["marker"])


def test_a_search_that_cannot_finish_leaves_it_to_a_person(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    for n in range(1000):
        statuspage.add_incident(PAGE, f"flood {n}", created_at=soon)
    marker = create_incident_marker(ctx)
    facts = {"marker": marker, "since": datetime.now(UTC).isoformat()}
    found = create_incident.call_probe(create_incident.parse(OPEN), ctx(facts=facts))
    assert found.state == "unknown"
    assert f"irctl.marker {marker}" in found.reason
    error = failure("status_page.create_incident", OPEN, ctx(facts=facts))
    assert not error.retryable
    assert "cannot tell whether an earlier attempt opened the incident" in error.message
    assert statuspage.calls("POST") == []


def test_refusals_are_clear_and_not_retried(
    statuspage: StatuspageStandIn, ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = failure(
        "status_page.create_incident", {**OPEN, "components": {"nope01": "major_outage"}}, ctx()
    )
    assert not unknown.retryable
    assert unknown.message == (
        f"Statuspage refused open incident 'Withdrawals paused' on page {PAGE}: HTTP 422 "
        "(Component nope01 was not found on this page)"
    )
    missing = failure("status_page.create_incident", OPEN, ctx(page_id="nopage000000"))
    assert "HTTP 404" in missing.message
    monkeypatch.setenv("IRCTL_TEST_SP_KEY", "sp-revoked-key-000")
    refused = failure("status_page.create_incident", OPEN, ctx())
    assert not refused.retryable
    assert refused.message.startswith(
        "Statuspage refused the credential in integrations.status_page.api_key"
    )
    assert "sp-revoked-key-000" not in refused.message
    assert statuspage.incidents(PAGE) == []
    assert [r.authorized for r in statuspage.requests][-1] is False


def test_a_pasted_key_or_no_page_is_refused_before_sending(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    pasted = failure("status_page.create_incident", OPEN, ctx(api_key=API_KEY))
    assert "must be a secret reference" in pasted.message
    nopage = failure("status_page.create_incident", OPEN, ctx(page_id=None))
    assert nopage.message == (
        "status_page.create_incident: no page: give page_id or set integrations.status_page.page_id"
    )
    assert statuspage.requests == []


@pytest.mark.parametrize("status", [429, 420])
def test_rate_limits_are_waited_out(statuspage: StatuspageStandIn, ctx: Ctx, status: int) -> None:
    statuspage.rate_limit(1, retry_after=0.3, status=status)
    started = time.monotonic()
    run_action("status_page.create_incident", OPEN, ctx())
    assert time.monotonic() - started >= 0.3
    assert [r.status for r in statuspage.calls("POST")] == [status, 201]
    assert len(statuspage.incidents(PAGE)) == 1


def test_components_may_be_a_list_of_ids_and_statuses() -> None:
    listed = create_incident.parse({**OPEN, "components": [
        {"id": "wd0001", "status": "major_outage"}, {"id": "api0001", "status": "operational"},
    ]})  # fmt: skip
    assert listed.components == {"wd0001": "major_outage", "api0001": "operational"}
    for bad in ([{"id": "wd0001"}], [{"id": "a1", "status": "operational"}] * 2):
        with pytest.raises(ValidationError):
            create_incident.parse({**OPEN, "components": bad})


@pytest.mark.parametrize(
    "bad",
    [
        {**OPEN, "status": "on fire"},
        {**OPEN, "impact": "huge"},
        {**OPEN, "components": {"wd0001": "down"}},
        {**OPEN, "components": {"../admin": "major_outage"}},
        {**OPEN, "name": ""},
        {**OPEN, "colour": "red"},
    ],
)
def test_create_inputs_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        create_incident.parse(bad)


# --- update_incident and set_component ----------------------------------------------------------


def test_update_posts_once_and_its_probe_sees_it(statuspage: StatuspageStandIn, ctx: Ctx) -> None:
    opened = run_action("status_page.create_incident", OPEN, ctx())
    change = {
        "incident_id": opened["incident_id"], "status": "monitoring",
        "body": "Withdrawals have resumed.", "components": {"wd0001": "operational"},
    }  # fmt: skip
    inputs = update_incident.parse(change)
    assert update_incident.call_probe(inputs, ctx()).state == "not_done"
    first = ctx()
    out = update_incident.call_run(inputs, first)
    assert (out["status"], out["components"]) == ("monitoring", {"wd0001": "operational"})
    incident = statuspage.incidents(PAGE)[0]
    assert out["update_id"] == incident["incident_updates"][0]["id"]
    assert statuspage.component(PAGE, "wd0001")["status"] == "operational"
    again = update_incident.call_run(inputs, ctx(facts=first.facts))  # a retry: not posted twice
    assert again == out
    assert len(statuspage.calls("PATCH")) == 1
    assert [u["body"] for u in statuspage.incidents(PAGE)[0]["incident_updates"]] == [
        "Withdrawals have resumed.", OPEN["body"],
    ]  # fmt: skip
    probed = update_incident.call_probe(inputs, ctx(facts=first.facts))
    assert (probed.state, probed.outputs) == ("done", out)


def test_update_of_an_unknown_incident_and_empty_updates(
    statuspage: StatuspageStandIn, ctx: Ctx
) -> None:
    error = failure(
        "status_page.update_incident", {"incident_id": "gone00000000", "body": "x"}, ctx()
    )
    assert error.message == f"Statuspage has no incident gone00000000 on page {PAGE}"
    with pytest.raises(ValidationError, match="give at least one of"):
        update_incident.parse({"incident_id": "abc"})


def test_set_component_changes_only_what_differs(statuspage: StatuspageStandIn, ctx: Ctx) -> None:
    wanted = {"component_id": "api0001", "status": "degraded_performance"}
    first = ctx()
    out = run_action("status_page.set_component", wanted, first)
    assert out == {
        "component_id": "api0001", "name": "Trading API", "status": "degraded_performance",
        "previous_status": "operational", "changed": True,
    }  # fmt: skip
    again = run_action("status_page.set_component", wanted, ctx(facts=first.facts))
    assert (again["changed"], again["previous_status"]) == (False, "operational")
    assert len(statuspage.calls("PATCH")) == 1
    probed = set_component.call_probe(set_component.parse(wanted), ctx(facts=first.facts))
    assert probed.state == "done"
    assert probed.outputs["previous_status"] == "operational"
    back = set_component.parse({"component_id": "api0001", "status": "operational"})
    assert set_component.call_probe(back, ctx()).state == "not_done"
    unknown = failure("status_page.set_component", {**wanted, "component_id": "zz0000"}, ctx())
    assert unknown.message == f"Statuspage has no component zz0000 on page {PAGE}"


def test_simulations_touch_nothing(
    statuspage: StatuspageStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRCTL_TEST_SP_KEY")
    drill = context(config={"page_id": PAGE}, mode="tabletop")
    opened = run_action("status_page.create_incident", OPEN, drill, simulate=True)
    assert opened["would"] == (
        f"open the incident 'Withdrawals paused' (investigating) on status page {PAGE} "
        "affecting wd0001 (major_outage)"
    )
    assert opened["incident_id"] is None
    updated = run_action(
        "status_page.update_incident", {"incident_id": "abc", "status": "resolved"}, drill,
        simulate=True,
    )  # fmt: skip
    assert updated["would"] == "update status page incident abc: status resolved"
    component = run_action(
        "status_page.set_component", {"component_id": "wd0001", "status": "operational"}, drill,
        simulate=True,
    )  # fmt: skip
    assert component["would"] == f"set component wd0001 of status page {PAGE} to operational"
    assert statuspage.requests == []


# --- through the engine -------------------------------------------------------------------------

RUNBOOK = """\
- id: open
  action: status_page.create_incident
  with:
    name: "Withdrawals paused"
    body: "We have paused withdrawals while we investigate ({{ run.incident }})."
    components: {wd0001: major_outage}
- id: api-degraded
  action: status_page.set_component
  with: {component_id: api0001, status: degraded_performance}
- id: resolved
  action: status_page.update_incident
  with:
    incident_id: "{{ steps.open.outputs.incident_id }}"
    status: resolved
    body: "Withdrawals have resumed."
    components: [{id: "{{ vars.statuspage.withdrawals }}", status: operational}]
- id: api-back
  action: status_page.set_component
  with: {component_id: api0001, status: "{{ steps['api-degraded'].outputs.previous_status }}"}
"""


def test_a_run_opens_updates_and_resolves_and_records_no_key(
    statuspage: StatuspageStandIn, tmp_path: Path
) -> None:
    ran = run_steps(
        tmp_path, {"status_page": settings(statuspage)}, RUNBOOK, incident="INC-42",
        variables={"statuspage": {"withdrawals": "wd0001"}},
    )  # fmt: skip
    assert ran.state.status == "succeeded", [s.error for s in ran.state.steps.values()]
    [incident] = statuspage.incidents(PAGE)
    assert incident["status"] == "resolved"
    assert incident["incident_updates"][-1]["body"].endswith("(INC-42).")
    assert statuspage.component(PAGE, "api0001")["status"] == "operational"
    assert ran.outputs("open")["incident_id"] == incident["id"]
    assert API_KEY not in ran.journal
    assert all(r.authorized for r in statuspage.requests)


CRASH_RUNBOOK = """\
irctl: 1
kind: runbook
id: status
title: Tell customers
steps:
  - id: open
    action: status_page.create_incident
    with: {name: "Withdrawals paused", body: "We are investigating.",
           components: {wd0001: major_outage}}
  - id: after
    action: status_page.set_component
    with: {component_id: api0001, status: degraded_performance}
"""


def _journal(ws: Path) -> tuple[str, list[dict[str, Any]]]:
    with sqlite3.connect(f"file:{ws / '.irctl' / 'irctl.db'}?mode=ro", uri=True) as conn:
        (run_id,) = conn.execute("SELECT id FROM irctl_runs").fetchone()
        lines = [r[0] for r in conn.execute(
            "SELECT line FROM irctl_events WHERE run_id = ? ORDER BY seq", (run_id,))]  # fmt: skip
    return str(run_id), [json.loads(line) for line in lines]


def test_a_create_killed_after_it_reached_statuspage_is_settled_by_the_probe(
    statuspage: StatuspageStandIn, tmp_path: Path
) -> None:
    """irctl is SIGKILLed while Statuspage holds the answer to the incident it has just made:
    the journal shows the step started with no outcome; ``irctl resume`` asks the probe, which
    finds the incident by its marker, and no second incident is opened."""
    config = "integrations:\n  status_page: " + json.dumps(settings(statuspage, timeout=5)) + "\n"
    ws = make_workspace(tmp_path / "ws", {"status": CRASH_RUNBOOK}, extra=config)
    held = statuspage.hold("POST", INCIDENTS)
    env = {**os.environ, "IRCTL_WORKSPACE": str(ws)}
    env.pop("IRCTL_DEBUG", None)
    proc = subprocess.Popen(
        [IRCTL, "run", "status", "--yes", "--unattended"], cwd=ws, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert held.arrived.wait(60), "irctl never reached Statuspage"
        os.kill(proc.pid, signal.SIGKILL)  # the incident exists; its answer never came back
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        held.release.set()
    assert proc.returncode == -signal.SIGKILL
    [incident] = statuspage.incidents(PAGE)
    run_id, events = _journal(ws)
    started = [e for e in events if e["type"] == "step.started"]
    assert [e["data"]["step"] for e in started] == ["open"]
    assert not [e for e in events if e["type"] in ("step.succeeded", "step.failed")]
    [fact] = [
        e["data"]["facts"] for e in events if e["type"] == "step.note" and "facts" in e["data"]
    ]
    assert fact["marker"] == incident["metadata"]["irctl"]["marker"]  # journaled before the POST

    resumed = irctl("resume", run_id, "--unattended", cwd=ws)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [i["id"] for i in statuspage.incidents(PAGE)] == [incident["id"]]
    assert len(statuspage.calls("POST", INCIDENTS)) == 1
    _, events = _journal(ws)
    assert {"step": "open", "by": "probe", "mark": "done"} in [
        e["data"] for e in events if e["type"] == "step.resolved"
    ]
    status = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    steps = {s["step"]: s for s in status["steps"]}
    assert steps["open"]["outputs"]["incident_id"] == incident["id"]
    assert steps["after"]["status"] == "succeeded"
    assert API_KEY not in "\n".join(json.dumps(e) for e in events)
