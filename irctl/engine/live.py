"""What one execution of a run holds in memory, and the words the engine's parts share.

Owns :class:`Live` (the run state as folded, the secrets resolved, the redactor, the
approvals and facts as verified: all of it derivable from the journal), the outcomes of
executing a step or a sequence (``OK`` < ``WAIT`` < ``FAIL`` < ``STOP``), step keys
(``sweep[3]`` is item 3 of the for_each step ``sweep``), the ``steps`` view templates read
and the summary of a run its notifiers are given.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from irctl.journal import events as ev
from irctl.journal.events import Event
from irctl.journal.state import FAILED, SKIPPED, SUCCEEDED, RunState, StepState, step_key
from irctl.runbook.model import Runbook, Step
from irctl.runbook.render import Redactor

if TYPE_CHECKING:
    from irctl.actions import Notifier
    from irctl.engine.guard import JournalGuard, Tampering

# Outcomes of executing a step or a sequence, in rising order of precedence.
OK = "ok"
WAIT = "waiting"
FAIL = "failed"
STOP = "interrupted"
_RANK = {OK: 0, WAIT: 1, FAIL: 2, STOP: 3}

Listener = Callable[[Event], None]


def worst(outcomes: Iterable[str]) -> str:
    return max(outcomes, key=_RANK.__getitem__, default=OK)


def finished_outcome(step: Step, state: StepState) -> str | None:
    """The outcome of a step the journal says has finished; None if it has not."""
    if state.status in (SUCCEEDED, SKIPPED):
        return OK
    if state.status == FAILED:
        return OK if step.on_failure == "continue" else FAIL
    return None


@dataclass
class Live:
    """What one execution of a run holds in memory (all of it derivable from the journal)."""

    state: RunState
    runbook: Runbook
    secrets: dict[str, str]
    redactor: Redactor
    cancelled: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # unredacted, this process
    active: set[threading.Event] = field(default_factory=set)
    notifiers: list[tuple[str, Notifier]] = field(default_factory=list)
    static: dict[str, bool] = field(default_factory=dict)  # step id -> inputs hold no template
    digests: dict[str, str] = field(default_factory=dict)  # step key -> digest of static inputs
    # The state may differ from a fold of the journal: events of other processes were
    # folded in out of order, or the run was interrupted between two records.
    refold: bool = False
    guard: JournalGuard | None = None  # the chain as this process verified it
    tampered: Tampering | None = None  # what did not verify: nothing more runs
    # Every approval event of the run, by (step, item), as verified: the gate counts from these.
    approvals: dict[tuple[str, int | None], list[Event]] = field(default_factory=dict)
    # The facts each step's attempts recorded (ActionContext.record), as verified.
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    acts_signed: bool = False  # answers, marks and aborts carry their operator's signature
    excluded: frozenset[str] = frozenset()  # the runbook's exclude_operators, as derived
    left_out: frozenset[str] = frozenset()  # step ids the run's selection (--only/--skip) omits
    # A run an alert started: only its auto steps run until an operator's signed adoption
    # (irctl.engine.adoption) verifies; the run.adopted events as read, checked when asked.
    by_alert: bool = False
    adoptions: list[Event] = field(default_factory=list)
    unadopted: str | None = None  # the first step found waiting for an adoption

    def index(self, event: Event) -> None:
        """Keep what the engine reads back of a verified event: approvals and facts."""
        data = event.data
        if event.type == ev.RUN_ADOPTED:
            self.adoptions.append(event)
        elif event.type.startswith("approval."):
            self.approvals.setdefault(gate_key(data), []).append(event)
        elif event.type == ev.STEP_NOTE and isinstance(data.get("facts"), dict):
            key = step_key(str(data.get("step")), gate_key(data)[1])
            self.facts.setdefault(key, {}).update(data["facts"])


class StepsView(Mapping[str, dict[str, Any]]):
    """``steps`` in templates: each step's status and outputs, read from the run state."""

    def __init__(self, live: Live) -> None:
        self._live = live

    def __getitem__(self, key: str) -> dict[str, Any]:
        step = self._live.state.steps.get(key)
        if step is None or "[" in key:
            raise KeyError(key)
        return {"status": step.status, "outputs": self._live.outputs.get(key, step.outputs)}

    def __iter__(self) -> Iterator[str]:
        return (k for k in list(self._live.state.steps) if "[" not in k)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def summary(live: Live) -> dict[str, Any]:
    """The run as a notifier is told of it with each event."""
    state = live.state
    return {
        "run_id": state.run_id, "runbook": state.runbook, "title": state.title,
        "mode": state.mode, "incident": state.incident, "initiator": state.initiator,
        "status": state.status, "failed_step": state.failed_step,
        "steps": [
            {"step": s.key, "status": s.status, "error": s.error,
             "waiting_for": s.waiting_for, "approvers": list(s.approvers)}
            for s in state.steps.values()
        ],
    }  # fmt: skip


def quietly(fn: Callable[..., Any], *args: Any) -> None:
    """Call a notifier: whatever it does wrong, the run goes on (it records its own failures)."""
    with contextlib.suppress(Exception):
        fn(*args)


def pinned(events: list[Event]) -> dict[str, Any]:
    """The operators ``run.created`` recorded (as read: the guard checks them)."""
    found = events[0].data.get("operators") if events else None
    if not isinstance(found, dict):
        return {}
    return {n: o for n, o in found.items() if isinstance(o, dict)}


def gate_key(data: Mapping[str, Any]) -> tuple[str, int | None]:
    item = data.get("item")
    return str(data.get("step")), item if isinstance(item, int) else None


def split_key(key: str) -> tuple[str, int | None]:
    if key.endswith("]") and "[" in key:
        step_id, _, rest = key.partition("[")
        return step_id, int(rest[:-1])
    return key, None
