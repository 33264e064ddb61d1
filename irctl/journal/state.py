"""Run state as a pure fold over a run's events.

Nothing about a run is kept only in memory: what a run is — which steps are
done, which are in doubt, what it waits for — is computed from its journal by
:func:`fold`.  The engine keeps folding the events it appends, so the state it
acts on is always the state the journal proves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from irctl.errors import CorruptEvent
from irctl.journal import events as ev
from irctl.journal.events import Event

# Step statuses.
PENDING = "pending"
RUNNING = "running"  # started, no outcome yet (in doubt when found on resume)
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
WAITING = "waiting"
INTERRUPTED = "interrupted"
RETRYING = "retrying"
REPEATING = "repeating"  # between two rounds of a `repeat` step

FINISHED = {SUCCEEDED, FAILED, SKIPPED}

StepKey = str  # "step-id" or "step-id[3]" for an item of a for_each


def step_key(step_id: str, item: int | None = None) -> StepKey:
    return step_id if item is None else f"{step_id}[{item}]"


@dataclass
class StepState:
    key: StepKey
    status: str = PENDING
    attempt: int = 0
    action: str | None = None
    inputs: Any = None
    digest: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    waiting_for: str | None = None  # "answer", "operator" (in doubt), "approval"
    prompt: str | None = None
    choices: list[str] | None = None  # the answers a waiting manual step takes (None: any)
    answer: str | None = None  # given while the step waits; a new wait starts without one
    answered_by: str | None = None
    mark: str | None = None  # an operator's resolution of an in-doubt step
    resolved_by: str | None = None
    items: int | None = None  # for a for_each step: how many items
    approval: dict[str, Any] | None = None  # the current approval request
    approvers: list[str] = field(default_factory=list)  # for the current request's digest
    deniers: list[str] = field(default_factory=list)
    approved: bool = False  # the gate opened for the current request
    round: int = 0  # rounds of a `repeat` step ended so far
    round_attempt: int = 0  # the attempt the last round ended on
    next_at: str | None = None  # when the next round is due

    @property
    def in_doubt(self) -> bool:
        """Whether the step's outcome is unknown: it started and has no recorded outcome (the
        process running it died, or it was interrupted mid-way), or it waits for an operator's
        ``--mark`` because of that (or a timeout of an action that is not idempotent).

        Not a manual step waiting for an answer, nor a step waiting for approval: those have
        not acted.  A resolution recorded (by its probe or an operator's mark) settles it.
        While its run is still executing, a step just started has no outcome yet either.
        """
        if self.status == WAITING:
            return self.waiting_for == "operator"
        return self.status in {RUNNING, INTERRUPTED} and self.mark is None


@dataclass
class RunState:
    run_id: str = ""
    runbook: str = ""
    runbook_digest: str = ""
    runbook_text: str = ""
    title: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    initiator: str = ""
    mode: str = "live"
    incident: str | None = None
    selection: dict[str, Any] | None = None  # only/skip: a run of part of the runbook
    created_at: str = ""
    # created, running, waiting, interrupted, tampered, succeeded, failed, aborted
    status: str = "created"
    finished_at: str | None = None
    failed_step: str | None = None
    reason: str | None = None
    steps: dict[StepKey, StepState] = field(default_factory=dict)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # ts, author, text
    last_seq: int = 0
    head: str = ev.GENESIS
    sealed_seq: int = 0  # the last event a checkpoint covers
    operators: dict[str, dict[str, Any]] = field(default_factory=dict)  # as at run creation
    break_glass_roles: list[str] = field(default_factory=list)
    review_items: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0  # how many times the run was (re)started
    tampered_at: int | None = None  # the first bad event, when the journal did not verify
    # A run an alert started (run.created's trigger: name, source, alert id, detected_at),
    # for display: the engine derives who adopted it from the signed events, not from these.
    trigger: dict[str, Any] | None = None
    awaiting_adoption: str | None = None  # the step it waits at until an operator adopts it
    adopted_by: str | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)  # later alerts, as received

    @property
    def lead(self) -> str:
        """Who leads the run, for separation of duties (a policy's ``exclude_initiator``): its
        initiator, or for a run an alert started the operator who adopted it."""
        return self.adopted_by or self.initiator

    @property
    def detected_at(self) -> str | None:
        """When the alert that started the run says it was detected (RFC 3339), if it did."""
        found = (self.trigger or {}).get("detected_at")
        return found if isinstance(found, str) else None

    def step(self, key: StepKey) -> StepState:
        state = self.steps.get(key)
        if state is None:
            state = self.steps[key] = StepState(key)
        return state

    @property
    def finished(self) -> bool:
        return self.status in {"succeeded", "failed", "aborted"}

    def unresolved(self) -> list[StepState]:
        """Steps that started and have no outcome: in doubt until resolved."""
        return [s for s in self.steps.values() if s.status in {RUNNING, INTERRUPTED}]

    def _approval(self, event: Event) -> None:
        data = event.data
        step = self.step(step_key(data["step"], data.get("item")))
        if event.type == "approval.requested":
            step.approval = dict(data)
            step.approvers, step.deniers, step.approved = [], [], False
            return
        if step.approval is None or data.get("digest") != step.approval.get("digest"):
            return  # for an earlier digest: it no longer counts
        operator = str(data.get("operator", ""))
        if event.type == "approval.granted" and operator not in step.approvers:
            step.approvers.append(operator)
        elif event.type == "approval.denied" and operator not in step.deniers:
            step.deniers.append(operator)
        elif event.type == "approval.quorum":
            step.approved = True
        elif event.type in ("approval.lapsed", "approval.cancelled"):
            step.approval = {**step.approval, "closed": event.type}

    def waiting(self) -> list[StepState]:
        return [s for s in self.steps.values() if s.status == WAITING]

    def apply(self, event: Event) -> None:
        """Fold one event into the state."""
        data = event.data
        kind = event.type
        self.last_seq = event.seq
        self.head = event.hash
        if kind == ev.RUN_CREATED:
            self.run_id = event.run
            self.runbook = data.get("runbook", "")
            self.runbook_digest = data.get("runbook_digest", "")
            self.runbook_text = data.get("runbook_text", "")
            self.title = data.get("title", "")
            self.params = data.get("params", {})
            self.initiator = data.get("initiator", "")
            self.mode = data.get("mode", "live")
            self.incident = data.get("incident")
            self.selection = data.get("selection")
            self.created_at = event.ts
            self.operators = data.get("operators") or {}
            self.break_glass_roles = list(data.get("break_glass_roles") or [])
            found = data.get("trigger")
            self.trigger = dict(found) if isinstance(found, dict) else None
            return
        if kind == ev.RUN_ADOPTED:
            self.adopted_by = self.adopted_by or str(data.get("by"))
            self.awaiting_adoption = None
            return
        if kind == ev.ALERT_RECEIVED:
            self.alerts.append({"ts": event.ts, **data})
            return
        if kind.startswith("approval."):
            self._approval(event)
            return
        if kind == "run.review_item":
            self.review_items.append(dict(data))
            return
        if kind in (ev.RUN_STARTED, ev.RUN_RESUMED):
            self.status = "running"
            self.attempts += 1
            return
        if kind == ev.CHECKPOINT:
            self.sealed_seq = int(data.get("seq", 0))
            return
        if kind == ev.RUN_NOTE:
            self.notes.append((event.ts, str(data.get("by", "")), str(data.get("text", ""))))
            return
        if kind in (ev.RUN_SUCCEEDED, ev.RUN_FAILED, ev.RUN_ABORTED):
            self.status = kind.split(".", 1)[1]
            self.finished_at = event.ts
            self.failed_step = data.get("failed_step", self.failed_step)
            self.reason = data.get("reason", self.reason)
            return
        if kind == ev.RUN_WAITING:
            self.status = "waiting"
            adoption = data.get("adoption")
            step = adoption.get("step") if isinstance(adoption, dict) else None
            self.awaiting_adoption = str(step) if step is not None else None
            return
        if kind == ev.RUN_RETRIED:  # taken up again: its failed steps run anew when resumed
            self.status = "interrupted"
            self.finished_at = self.failed_step = self.reason = None
            for key in data.get("steps") or []:
                step = self.step(str(key))
                step.status, step.error, step.finished_at = PENDING, None, None
                step.round_attempt = step.attempt  # its retries count afresh
                step.round = 0
            return
        if kind == "run.tampered":  # irctl.engine.guard: stopped; a resume refuses it again
            self.status = "tampered"
            self.reason = str(data.get("problem"))
            self.tampered_at = data.get("first_bad")
            return
        if kind == ev.RUN_INTERRUPTED:
            self.status = "interrupted"
            return
        if not kind.startswith("step."):
            return
        step = self.step(step_key(data["step"], data.get("item")))
        if kind == ev.STEP_STARTED:
            step.status = RUNNING
            step.attempt = int(data.get("attempt", step.attempt + 1))
            step.action = data.get("action")
            step.inputs = data.get("inputs")
            step.digest = data.get("digest")
            step.started_at = step.started_at or event.ts
            step.error = None
            step.waiting_for = None
            step.mark = step.resolved_by = None  # a resolution covers one attempt only
            if "items" in data:
                step.items = int(data["items"])
        elif kind == ev.STEP_SUCCEEDED:
            step.status = SUCCEEDED
            step.outputs = data.get("outputs", {})
            step.finished_at = event.ts
            step.waiting_for = None
        elif kind == ev.STEP_FAILED:
            step.status = FAILED
            step.error = data.get("error")
            step.finished_at = event.ts
            step.waiting_for = None
        elif kind == ev.STEP_SKIPPED:
            step.status = SKIPPED
            step.finished_at = event.ts
            step.error = data.get("reason")
        elif kind == ev.STEP_WAIVED:  # a person chose: said so wherever the step is shown
            step.status = SKIPPED
            step.finished_at = event.ts
            step.waiting_for = None
            step.error = f"skipped by {data.get('by')}: {data.get('reason')}"
            for block in data.get("blocks") or []:  # failed with it: decided again on resume
                around = self.step(str(block))
                around.status, around.error, around.finished_at = PENDING, None, None
            if self.status == "failed":  # an aborted run stays ended: a person stopped it
                self.status, self.finished_at, self.failed_step = "interrupted", None, None
        elif kind == ev.STEP_REPEATING:
            step.status = REPEATING
            step.round = int(data.get("round", step.round + 1))
            step.round_attempt = step.attempt
            step.outputs = data.get("outputs", {})
            step.next_at = data.get("next_at")
        elif kind == ev.STEP_RETRYING:
            step.status = RETRYING
            step.error = data.get("error")
        elif kind in (ev.STEP_INTERRUPTED, ev.STEP_IN_DOUBT):
            step.status = INTERRUPTED
        elif kind == ev.STEP_WAITING:
            step.status = WAITING
            step.waiting_for = data.get("for")
            step.prompt = data.get("prompt")
            found = data.get("choices")
            step.choices = [str(c) for c in found] if isinstance(found, list) and found else None
            step.answer = step.answered_by = None  # an answer it did not accept is used up
        elif kind == ev.STEP_ANSWERED:
            step.answer = data.get("answer")
            step.answered_by = data.get("by")
        elif kind == ev.STEP_RESOLVED:
            step.mark = data.get("mark")
            step.resolved_by = data.get("by")
            if step.status == WAITING:
                step.status = INTERRUPTED  # still to be settled by the engine


def fold(events: Iterable[Event], state: RunState | None = None) -> RunState:
    state = state or RunState()
    for event in events:
        try:
            state.apply(event)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise CorruptEvent(
                f"run {event.run}: stored event {event.seq} ({event.type}) does not make sense "
                f"({type(exc).__name__}: {exc}); 'irctl transcript verify {event.run}' shows "
                "what is wrong"
            ) from None
    return state
