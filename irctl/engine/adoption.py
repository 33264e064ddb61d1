"""A run an alert started, and the person who takes it over: who may let its other steps run.

A trigger (``triggers:`` in irctl.yaml, :mod:`irctl.serve.triggers`) starts a run with no
person behind it, so the engine runs only the steps its runbook marks ``auto: true``; every
other step waits until an operator adopts the run (``irctl adopt RUN --as OP``), a signed
``run.adopted`` act.  :func:`adopter` is asked at the moment a step would start, and derives
the answer from the signed events alone: the adoption must verify with the key the run
pinned for the operator at its start and irctl.yaml lists now, by an operator who may start
a live run of the runbook (its ``start.roles``).  Nothing folded from the store's rows (a
status, a name in a row) counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from irctl.journal import events as ev

if TYPE_CHECKING:
    from irctl.journal.events import Event
    from irctl.runbook.model import Config, Runbook


def started_by_alert(created: Mapping[str, Any]) -> bool:
    """Whether ``run.created`` (as verified) records a run an alert started."""
    from irctl.record.approvals import TRIGGER_PREFIX

    initiator = created.get("initiator")
    return "trigger" in created or (
        isinstance(initiator, str) and initiator.startswith(TRIGGER_PREFIX)
    )


def adoption_problem(
    run_id: str,
    data: Mapping[str, Any],
    operators: Mapping[str, Any],
    config: Config,
    runbook: Runbook,
) -> str | None:
    """Why one recorded ``run.adopted`` does not let the run's other steps go on."""
    from irctl.record.approvals import act_problem

    problem = act_problem(run_id, ev.RUN_ADOPTED, data, operators, required=True)
    if problem is not None:
        return problem
    who = data.get("by")
    configured = config.operators.get(who) if isinstance(who, str) else None
    if configured is None or configured.key != data.get("key"):
        return f"the adoption by {who} is not signed with {who}'s key as irctl.yaml lists it"
    allowed = runbook.start.roles if runbook.start is not None else None
    if allowed:
        pinned = operators.get(str(who))
        recorded = pinned.get("roles") if isinstance(pinned, Mapping) else None
        roles = set(configured.roles) & set(recorded if isinstance(recorded, list) else [])
        if not roles & set(allowed):
            return (
                f"{who} may not adopt a run of {runbook.id}: its start.roles allows "
                f"{', '.join(sorted(allowed))}"
            )
    return None


def adopter(
    run_id: str,
    adoptions: Iterable[Event],
    operators: Mapping[str, Any],
    config: Config,
    runbook: Runbook,
) -> str | None:
    """The operator whose signed adoption verifies now; None when nobody's does."""
    for event in adoptions:
        if event.type != ev.RUN_ADOPTED:
            continue
        if adoption_problem(run_id, event.data, operators, config, runbook) is None:
            return str(event.data["by"])
    return None


def adopt_command(run_id: str, operator: str) -> str:
    """The command that adopts the run, as the run's waiting says it."""
    return f"irctl adopt {run_id} --as {operator}"
