"""Drills: a runbook rehearsed with nothing real touched, a scenario, a clock and a score.

A drill (``drills/*.yaml``) names a runbook, a mode, params, injects and objectives.
:func:`start_drill` records the run — ``tabletop``: the engine simulates every
integration action by construction; ``sandbox``: actions run against the sandbox
endpoints given, never the workspace's own — followed by a ``drill.started`` event
that holds the scenario.  :func:`drive_drill` plays the injects at their offsets
from that event (to the terminal always, to Slack when configured, each recorded
as a ``drill.inject`` event) and drives the run until it ends or the drill's time
limit passes; approvals and manual steps are real and answered by the people
rehearsing (``irctl approve``, ``irctl answer``, Slack).

A drill never runs in ``live`` mode: the model allows no such value and
:func:`start_drill` refuses one however the drill was built.

:func:`score` computes the scorecard from the journal alone (the run's fold and
its events): each objective met or missed with its measured time, the time spent
waiting on people apart from the time spent in actions, who approved how fast,
and what to improve.  :func:`trend` scores the earlier drills of the same id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import IrctlError, RunBusy, UsageError
from irctl.journal import events as ev
from irctl.journal.events import Event, parse_ts
from irctl.journal.state import FAILED, SKIPPED, SUCCEEDED, RunState, fold
from irctl.runbook.model import Config, Drill, Runbook, format_duration, parse_duration

if TYPE_CHECKING:
    from irctl.engine.engine import Engine
    from irctl.journal.filereader import Reading

DRILL_STARTED = "drill.started"  # the scenario: drill id, injects, objectives, time scale
DRILL_INJECT = "drill.inject"  # one scenario message delivered
DRILL_MODES = ("tabletop", "sandbox")
DRILL_OPERATOR = "irctl-drill"  # who ends a drill whose time limit passed
PEOPLE = ("approval", "manual")  # timeline segments spent waiting on people

Say = Callable[[str], None]


# -- finding drills -------------------------------------------------------------------------------


def drill_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_drills(folder: Path) -> dict[str, tuple[Drill, Path]]:
    """Every drill in ``folder`` by id; a file that does not load raises with its problems."""
    from irctl.runbook.loader import load_drill

    found: dict[str, tuple[Drill, Path]] = {}
    for path in drill_paths(folder):
        drill = load_drill(path)
        if drill.id in found:
            raise UsageError(f"{path}: drill id '{drill.id}' is also used by {found[drill.id][1]}")
        found[drill.id] = (drill, path)
    return found


def find_drill(folder: Path, drill_id: str) -> tuple[Drill, Path]:
    """The drill with this id (``drills/<id>.yaml`` first); a UsageError names the known ones."""
    from irctl.runbook.loader import load_drill

    for suffix in (".yaml", ".yml"):
        candidate = folder / f"{drill_id}{suffix}"
        if candidate.is_file():
            drill = load_drill(candidate)
            if drill.id == drill_id:
                return drill, candidate
    drills = load_drills(folder) if folder.is_dir() else {}
    if drill_id in drills:
        return drills[drill_id]
    from difflib import get_close_matches

    close = get_close_matches(drill_id, list(drills), n=1)
    hint = (
        f" (did you mean '{close[0]}'?)"
        if close
        else (f"; known: {', '.join(sorted(drills))}" if drills else "")
    )
    raise UsageError(f"no drill '{drill_id}' in {folder}{hint}")


def drill_params(runbook: Runbook, given: dict[str, Any]) -> dict[str, Any]:
    """A drill's params (typed YAML values) checked against its runbook, defaults filled in."""
    from irctl.runbook.params import check_param_value

    problems: list[str] = []
    values: dict[str, Any] = {}
    for name in given:
        if name not in runbook.params:
            problems.append(f"unknown param '{name}' for runbook '{runbook.id}'")
    for name, spec in runbook.params.items():
        if name in given:
            found = check_param_value(name, spec, given[name])
            problems.extend(found)
            values[name] = given[name]
        elif not spec.is_required:
            values[name] = list(spec.default) if isinstance(spec.default, list) else spec.default
        else:
            problems.append(f"param '{name}' is required by runbook '{runbook.id}'")
    if problems:
        raise UsageError("\n".join(problems))
    return values


def sandbox_config(base: Config, sandbox: Config | None, drill: Drill) -> Config:
    """The config a drill runs with.  A sandbox drill needs its sandbox's endpoints: the
    integrations, vars and secrets of the sandbox replace the workspace's, never mix with
    them (the engine refuses a sandbox run whose runbook needs a secret the sandbox lacks)."""
    if drill.mode == "tabletop":
        return base
    if sandbox is None:
        raise UsageError(
            f"drill '{drill.id}' runs in sandbox mode: give the sandbox's endpoints with "
            "--sandbox FILE (an irctl.yaml with the sandbox's integrations and vars); a drill "
            "never runs against the workspace's own endpoints"
        )
    return base.model_copy(
        update={
            "integrations": dict(sandbox.integrations),
            "vars": dict(sandbox.vars),
            "secrets": dict(sandbox.secrets),  # never the workspace's production secrets
        }
    )


# -- running a drill ------------------------------------------------------------------------------


def start_drill(
    engine: Engine,
    drill: Drill,
    runbook: Runbook,
    runbook_text: str,
    *,
    initiator: str,
    time_scale: float = 1.0,
    scheduled: bool = False,
) -> str:
    """Record a drill run and its scenario (``drill.started``); runs nothing yet."""
    if drill.mode not in DRILL_MODES:  # the model forbids it; a drill built by hand may not
        raise UsageError(
            f"drill '{drill.id}': mode {drill.mode!r} is not allowed; a drill runs in "
            "tabletop or sandbox mode, never live"
        )
    if drill.runbook != runbook.id:
        raise UsageError(f"drill '{drill.id}' rehearses '{drill.runbook}', not '{runbook.id}'")
    if not time_scale > 0:
        raise UsageError(f"the time scale must be above 0, not {time_scale:g}")
    params = drill_params(runbook, drill.params)
    run_id = engine.create_run(
        runbook, runbook_text, params, initiator=initiator, mode=drill.mode,
        incident=f"drill-{drill.id}",
    )  # fmt: skip
    engine.record(
        run_id,
        DRILL_STARTED,
        {
            "drill": drill.id, "title": drill.title, "runbook": runbook.id, "mode": drill.mode,
            "time_scale": time_scale, "scheduled": scheduled, "by": initiator,
            "participants": list(drill.participants),
            "injects": [{"at": i.at, "say": i.say} for i in drill.injects],
            "objectives": [o.model_dump(mode="json", exclude_none=True) for o in drill.objectives],
        },
    )  # fmt: skip
    return run_id


def _scenario(events: list[Event]) -> dict[str, Any]:
    for event in events:
        if event.type == DRILL_STARTED:
            return dict(event.data)
    raise UsageError(f"run {events[0].run if events else '?'} is not a drill")


def _slack_poster(engine: Engine, run_id: str, mode: str) -> Say | None:
    """Post to the configured Slack channel through the ``slack.post`` action, if configured.

    Delivering a scenario message is the drill's own notification, like the
    engine's notifiers: it is the one thing a drill sends for real.
    """
    from irctl.actions import ActionContext

    settings = engine.config.integrations.get("slack") or {}
    if not settings.get("channel"):
        return None
    act = engine.registry.get("slack.post")

    def post(text: str) -> None:
        ctx = ActionContext(
            run_id=run_id, step_id="drill-inject", mode=mode, config=dict(settings), timeout=10.0
        )
        act.call_run(act.parse({"text": text}), ctx)

    return post


def inject_text(drill_id: str, at: float, say: str) -> str:
    return f"🧪 DRILL {drill_id} · T+{format_duration(at)} · {say}"


def drive_drill(
    engine: Engine,
    run_id: str,
    *,
    say: Say,
    time_limit: float | None = None,
    poll: float = 0.5,
    slack: bool = True,
) -> RunState:
    """Play the injects and drive the run until it ends, is interrupted, or the limit passes.

    ``time_limit`` is in real seconds from the drill's start (default: twice the
    longest target, at least an hour, times the time scale).  When it passes, the
    run is aborted and the drill scored as it stands.  Approvals and answers
    given meanwhile (from any process) continue the run.
    """
    store = engine.store
    events = store.events(run_id)
    scenario = _scenario(events)
    state = fold(events)
    if state.mode not in DRILL_MODES:
        raise UsageError(f"run {run_id} is a {state.mode} run; a drill is never live")
    scale = float(scenario.get("time_scale") or 1.0)
    began = parse_ts(next(e.ts for e in events if e.type == DRILL_STARTED)).timestamp()
    if time_limit is None:
        longest = max(
            [float(i["at"]) for i in scenario.get("injects", [])]
            + [parse_duration(o["within"]) for o in scenario.get("objectives", [])],
            default=0.0,
        )
        time_limit = max(3600.0, 2 * longest) * scale
    deadline = began + time_limit
    delivered = {int(e.data["index"]) for e in events if e.type == DRILL_INJECT}
    post: Say | None = None
    slack_problem = ""
    if slack:
        try:
            post = _slack_poster(engine, run_id, state.mode)
        except IrctlError as exc:
            slack_problem = str(exc)
    stop = threading.Event()
    player = threading.Thread(
        target=_play,
        args=(engine, run_id, scenario, began, scale, delivered, stop, say, post, slack_problem),
        name="irctl-drill-injects",
        daemon=True,
    )
    player.start()
    try:
        state = _drive(engine, run_id, deadline, poll)
    finally:
        stop.set()
        player.join(5.0)
    events = store.events(run_id)
    if state.finished and engine.signing_key is not None and events[-1].type != ev.CHECKPOINT:
        # An inject recorded as the run ended: seal the tail (execute seals an ended run).
        try:
            state = engine.execute(run_id)
        except (RunBusy, UsageError):
            state = fold(store.events(run_id))
    return state


_WAKE = {
    ev.STEP_ANSWERED, ev.STEP_RESOLVED, ev.RUN_ABORTED, "approval.granted", "approval.denied",
}  # fmt: skip


def _drive(engine: Engine, run_id: str, deadline: float, poll: float) -> RunState:
    store = engine.store
    while True:
        # Every answer or decision up to here is seen by this execution; a later one
        # (even one recorded while the execution was ending) wakes the next.
        seen = fold(store.events(run_id)).last_seq
        try:
            state = engine.execute(run_id)
        except RunBusy:  # someone else (`irctl answer`, say) drives it right now
            state = fold(store.events(run_id))
            seen = state.last_seq
        if state.finished or state.status == "interrupted":
            return state
        while True:
            if time.time() >= deadline:
                try:
                    return engine.abort(
                        run_id, reason="the drill's time limit passed", operator=DRILL_OPERATOR
                    )
                except UsageError:  # it ended meanwhile
                    return fold(store.events(run_id))
            fresh = store.events(run_id, after=seen)
            if any(e.type in ev.TERMINAL for e in fresh):
                return fold(store.events(run_id))
            if any(e.type in _WAKE for e in fresh):
                break
            time.sleep(poll)


def _play(
    engine: Engine,
    run_id: str,
    scenario: dict[str, Any],
    began: float,
    scale: float,
    delivered: set[int],
    stop: threading.Event,
    say: Say,
    post: Say | None,
    slack_problem: str,
) -> None:
    """Deliver each inject at its (scaled) offset from the drill's start, in order.

    Each is recorded sealed (:meth:`Engine.record`), as every event from outside the run's
    execution is: the engine refuses unsealed events it did not write (:mod:`irctl.engine.guard`).
    """
    store = engine.store
    drill_id = str(scenario.get("drill"))
    injects = sorted(enumerate(scenario.get("injects", [])), key=lambda pair: pair[1]["at"])
    for index, inject in injects:
        if index in delivered:
            continue  # a resumed drill: played before
        due = began + float(inject["at"]) * scale
        if stop.wait(max(0.0, due - time.time())):
            return
        if fold(store.events(run_id)).finished:
            return
        text = inject_text(drill_id, float(inject["at"]), str(inject["say"]))
        to = ["terminal"]
        data: dict[str, Any] = {"index": index, "at": inject["at"], "say": inject["say"]}
        try:
            say(text)
        except Exception as exc:  # a closed terminal must not stop the scenario
            data["terminal_error"] = f"{type(exc).__name__}: {exc}"
        if post is not None:
            try:
                post(text)
                to.append("slack")
            except Exception as exc:  # recorded; the drill goes on
                data["slack_error"] = str(exc)[:300]
        elif slack_problem:
            data["slack_error"] = slack_problem[:300]
        data["to"] = to
        try:
            engine.record(run_id, DRILL_INJECT, data)
        except IrctlError:
            return


# -- scoring --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectiveResult:
    kind: str  # step | approval | runbook
    target: str  # a step id, or a runbook objective's tag
    within: float  # seconds, scaled like the drill
    measured: float | None  # seconds from the drill's start (approval: from the request)
    met: bool
    detail: str = ""

    @property
    def name(self) -> str:
        if self.kind == "step":
            return f"step {self.target} finished"
        if self.kind == "approval":
            return f"approval of {self.target} reached quorum"
        return f"every '{self.target}' step finished"


@dataclass(frozen=True)
class Segment:
    """A stretch of the timeline: a step's action, a wait on people, an inject."""

    step: str
    kind: str  # action | approval | manual | inject
    start: float  # seconds from the drill's start
    end: float
    status: str = ""
    label: str = ""


@dataclass(frozen=True)
class ApprovalTiming:
    step: str
    operator: str
    decision: str  # approve | deny
    seconds: float  # from the request


@dataclass(frozen=True)
class InjectResult:
    index: int
    at: float  # planned, scaled, from the start
    delivered: float | None
    say: str
    to: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scorecard:
    run_id: str
    drill: str
    title: str
    runbook: str
    mode: str
    status: str
    started_at: str
    duration: float
    time_scale: float
    participants: list[str]  # the roles or people the drill names
    headline: str  # what `contained` measures
    contained: float | None  # time to contain (the headline figure), seconds
    objectives: list[ObjectiveResult]
    segments: list[Segment]
    approvals: list[ApprovalTiming]
    injects: list[InjectResult]
    people_seconds: float
    action_seconds: float
    improvements: list[str]

    @property
    def met(self) -> int:
        return sum(1 for o in self.objectives if o.met)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for item, result in zip(data["objectives"], self.objectives, strict=True):
            item["name"] = result.name
        data["met"] = self.met
        return data


def _seconds(ts: str, start: float) -> float:
    return max(0.0, parse_ts(ts).timestamp() - start)


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _runbook_of(state: RunState) -> Runbook | None:
    from irctl.runbook.loader import load_runbook_text

    try:
        return load_runbook_text(state.runbook_text, f"{state.run_id}:runbook",
                                 check_integrations=False)  # fmt: skip
    except IrctlError:
        return None


_APPROVAL_ENDS = ("approval.quorum", "approval.cancelled", "approval.lapsed")


def _timeline(events: list[Event], start: float, end: float) -> list[Segment]:
    segments: list[Segment] = []
    open_: dict[str, tuple[str, float, str]] = {}  # step key -> kind, start, label
    requested: dict[str, float] = {}

    def close(key: str, at: float, status: str) -> None:
        if key in open_:
            kind, began, label = open_.pop(key)
            segments.append(Segment(key, kind, began, max(at, began), status, label))

    for event in events:
        data = event.data
        t = _seconds(event.ts, start)
        step = data.get("step")
        key = f"{step}[{data['item']}]" if "item" in data and step is not None else step
        if event.type == DRILL_INJECT:
            segments.append(
                Segment("inject", "inject", t, t, "", f"#{int(data.get('index', 0)) + 1}")
            )
        elif key is None:
            continue
        elif event.type == ev.STEP_STARTED and "action" in data and "kind" not in data:
            close(key, t, "restarted")
            action = str(data.get("action") or "")
            kind = "manual" if action.startswith("manual.") else "action"
            open_[key] = (kind, t, action)
        elif event.type == ev.STEP_WAITING and data.get("for") in ("answer", "operator"):
            close(key, t, "waiting")
            open_[key] = ("manual", t, f"waiting for {data.get('for')}")
        elif event.type in (ev.STEP_ANSWERED, ev.STEP_RESOLVED):
            if key in open_ and open_[key][2].startswith("waiting for"):
                close(key, t, "answered")
        elif event.type in (ev.STEP_SUCCEEDED, ev.STEP_FAILED, ev.STEP_INTERRUPTED):
            close(key, t, event.type.split(".", 1)[1])
        elif event.type == "approval.requested":
            requested[key] = t
        elif event.type in _APPROVAL_ENDS and key in requested:
            began = requested.pop(key)
            status = "approved" if event.type == "approval.quorum" else "not approved"
            segments.append(Segment(key, "approval", began, t, status, "approval"))
    for key in list(open_):
        close(key, end, "unfinished")
    for key, began in requested.items():
        segments.append(Segment(key, "approval", began, end, "unfinished", "approval"))
    return sorted(segments, key=lambda s: (s.start, s.end))


def score(events: list[Event]) -> Scorecard:
    """The scorecard of a drill run, from its journal alone."""
    if not events:
        raise UsageError("an empty journal has no score")
    scenario = _scenario(events)
    state = fold(events)
    scale = float(scenario.get("time_scale") or 1.0)
    start = parse_ts(next(e.ts for e in events if e.type == DRILL_STARTED)).timestamp()
    last = events[-1].ts if not state.finished_at else state.finished_at
    duration = _seconds(last, start)
    segments = _timeline(events, start, duration)
    objectives: list[ObjectiveResult] = []

    def finished(key: str) -> tuple[float | None, str]:
        step = state.steps.get(key)
        if step is None or step.status not in (SUCCEEDED, FAILED, SKIPPED):
            return None, "not reached"
        at = _seconds(step.finished_at, start) if step.finished_at else None
        return at, {SUCCEEDED: "", FAILED: "failed", SKIPPED: "skipped"}[step.status]

    for objective in scenario.get("objectives", []):
        within = parse_duration(objective["within"]) * scale
        if objective.get("step"):
            target = str(objective["step"])
            measured, detail = finished(target)
            met = measured is not None and detail == "" and measured <= within
            objectives.append(ObjectiveResult("step", target, within, measured, met, detail))
        else:
            target = str(objective.get("approval"))
            span = next((s for s in segments if s.kind == "approval" and s.step == target), None)
            if span is None or span.status != "approved":
                detail = "not requested" if span is None else f"{span.status}"
                objectives.append(ObjectiveResult("approval", target, within, None, False, detail))
            else:
                measured = span.end - span.start
                objectives.append(
                    ObjectiveResult("approval", target, within, measured, measured <= within)
                )
    runbook = _runbook_of(state)
    contained: float | None = None
    headline = "drill duration"
    for tag, target_seconds in runbook.objectives.items() if runbook else []:
        within = float(target_seconds) * scale
        tagged = [s.id for s in runbook.all_steps() if tag in s.tags] if runbook else []
        times, problems = [], []
        for step_id in tagged:
            at, detail = finished(step_id)
            if at is None or detail == "failed":
                problems.append(f"{step_id} {detail or 'not reached'}")
            else:
                times.append(at)
        measured = max(times) if times and not problems else None
        met = measured is not None and measured <= within
        detail = "; ".join(problems) if problems else ("" if tagged else "no step has this tag")
        objectives.append(ObjectiveResult("runbook", tag, within, measured, met, detail))
        if tag == "contain":
            contained, headline = measured, "time to contain"
    if headline == "drill duration":
        steps = [o for o in objectives if o.kind == "step" and o.measured is not None]
        if steps:
            contained = max(o.measured for o in steps if o.measured is not None)
            headline = "time to the last step objective"
        else:
            contained = duration if state.finished else None
    approvals = _approvals(events, start)
    injects = _injects(events, scenario, start, scale)
    people = _union([(s.start, s.end) for s in segments if s.kind in PEOPLE])
    action = _union([(s.start, s.end) for s in segments if s.kind == "action"])
    card = Scorecard(
        run_id=state.run_id, drill=str(scenario.get("drill")),
        title=str(scenario.get("title") or state.title), runbook=state.runbook, mode=state.mode,
        status=state.status, started_at=next(e.ts for e in events if e.type == DRILL_STARTED),
        duration=duration, time_scale=scale,
        participants=[str(p) for p in scenario.get("participants") or []],
        headline=headline, contained=contained,
        objectives=objectives, segments=segments, approvals=approvals, injects=injects,
        people_seconds=people, action_seconds=action, improvements=[],
    )  # fmt: skip
    return _with_improvements(card, state)


def _approvals(events: list[Event], start: float) -> list[ApprovalTiming]:
    requested: dict[str, float] = {}
    found: list[ApprovalTiming] = []
    for event in events:
        data = event.data
        if not event.type.startswith("approval.") or data.get("step") is None:
            continue
        key = str(data["step"]) + (f"[{data['item']}]" if "item" in data else "")
        t = _seconds(event.ts, start)
        if event.type == "approval.requested":
            requested[key] = t
        elif event.type in ("approval.granted", "approval.denied") and key in requested:
            decision = "approve" if event.type == "approval.granted" else "deny"
            operator = str(data.get("operator") or "?")
            found.append(ApprovalTiming(key, operator, decision, t - requested[key]))
    return found


def _injects(
    events: list[Event], scenario: dict[str, Any], start: float, scale: float
) -> list[InjectResult]:
    delivered = {
        int(e.data["index"]): (_seconds(e.ts, start), list(e.data.get("to") or []))
        for e in events
        if e.type == DRILL_INJECT
    }
    results = []
    for index, inject in enumerate(scenario.get("injects", [])):
        when, to = delivered.get(index, (None, []))
        results.append(
            InjectResult(index, float(inject["at"]) * scale, when, str(inject["say"]), to)
        )
    return results


def short(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds:.2f}s"
    seconds = round(seconds, 1)
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _with_improvements(card: Scorecard, state: RunState) -> Scorecard:
    tips: list[str] = []
    for o in card.objectives:
        if o.met:
            continue
        if o.measured is None:
            tips.append(f"{o.name}: not achieved ({o.detail or 'not reached'}); "
                        f"target {short(o.within)}")  # fmt: skip
        else:
            late = o.measured - o.within
            why = f" ({o.detail})" if o.detail else ""
            tips.append(
                f"{o.name}: {short(o.measured)} against {short(o.within)}, {short(late)} late{why}"
            )
    slow: dict[str, ApprovalTiming] = {}
    for timing in card.approvals:
        if timing.step not in slow or timing.seconds > slow[timing.step].seconds:
            slow[timing.step] = timing
    for timing in slow.values():
        tips.append(
            f"approval of {timing.step}: the last decision ({timing.operator}) came "
            f"{short(timing.seconds)} after the request; rehearse reaching approvers"
        )
    if card.people_seconds > card.action_seconds and card.people_seconds > 0:
        tips.append(
            f"waiting on people took {short(card.people_seconds)}, actions "
            f"{short(card.action_seconds)}: shorten approvals and manual steps first"
        )
    failed = [s.key for s in state.steps.values() if s.status == FAILED]
    if failed:
        tips.append(f"steps that failed: {', '.join(failed)}")
    missed = [i for i in card.injects if i.delivered is None]
    if missed:
        tips.append(
            f"{len(missed)} inject(s) were never played (the run ended first): "
            "the scenario was not fully rehearsed"
        )
    if card.status not in ("succeeded",):
        tips.append(f"the run ended {card.status}, not succeeded")
    if not tips:
        tips.append("every objective met: consider tighter targets or a harder scenario")
    return Scorecard(**{**card.__dict__, "improvements": tips})


# -- trend ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrendRow:
    run_id: str
    started_at: str
    status: str
    headline: str
    contained: float | None
    met: int
    objectives: int
    people_seconds: float
    action_seconds: float


def drill_runs(store: Reading, drill_id: str) -> list[str]:
    """Ids of the runs of a drill, oldest first."""
    found = []
    for run in store.runs():
        if run.mode not in DRILL_MODES or run.incident != f"drill-{drill_id}":
            continue
        found.append((run.created_at, run.id))
    return [run_id for _, run_id in sorted(found)]


def trend(store: Reading, drill_id: str, *, limit: int | None = 8) -> list[TrendRow]:
    """The last ``limit`` drills of this id (all with None), oldest first, scored."""
    rows = []
    runs = drill_runs(store, drill_id)
    for run_id in runs[-limit:] if limit else runs:
        try:
            card = score(store.events(run_id))
        except IrctlError:
            continue
        rows.append(
            TrendRow(
                run_id, card.started_at, card.status, card.headline, card.contained, card.met,
                len(card.objectives), card.people_seconds, card.action_seconds,
            )
        )  # fmt: skip
    return rows


def direction(rows: list[TrendRow]) -> str:
    """Whether the headline figure fell, rose or held from one drill to the next."""
    figures = [r.contained for r in rows if r.contained is not None]
    if len(figures) < 2:
        return "not enough drills yet"
    before, now = figures[-2], figures[-1]
    if now < before:
        return f"falling: {short(now)} now, {short(before)} the drill before"
    if now > before:
        return f"rising: {short(now)} now, {short(before)} the drill before"
    return f"flat at {short(now)}"
