"""The engine against the real SQLite store, with actions registered in-process."""

from __future__ import annotations

import base64
import json
import textwrap
import threading
import time
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict

from irctl.actions import ActionContext, Probe, Registry, action
from irctl.engine.engine import Engine
from irctl.errors import ActionError, UsageError
from irctl.identity import public_key_text
from irctl.journal import events as ev
from irctl.journal.state import fold
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = None


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class Flaky(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    failures: int = 1


class Slow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float


calls: dict[str, int] = {}
calls_lock = threading.Lock()
gauge = {"now": 0, "max": 0}
barrier_holder: dict[str, threading.Barrier] = {}


def _count(key: str) -> int:
    with calls_lock:
        calls[key] = calls.get(key, 0) + 1
        return calls[key]


@action("t.echo", idempotent=True)
def echo(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    _count(ctx.step_id)
    return {"value": inputs.value}


@action("t.gate")
def gate(inputs: Gate, ctx: ActionContext) -> dict[str, Any]:
    """Wait at a barrier: only succeeds if its siblings run at the same time."""
    try:
        barrier_holder[inputs.name].wait(timeout=5)
    except threading.BrokenBarrierError as exc:
        raise ActionError("siblings did not run concurrently", retryable=False) from exc
    return {"name": inputs.name}


@action("t.flaky")
def flaky(inputs: Flaky, ctx: ActionContext) -> dict[str, Any]:
    n = _count(inputs.key)
    if n <= inputs.failures:
        raise ActionError(f"transient failure {n}", retryable=True)
    return {"calls": n}


@action("t.fatal")
def fatal(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    raise ActionError(f"fatal: {inputs.value}", retryable=False)


@action("t.slow")
def slow(inputs: Slow, ctx: ActionContext) -> dict[str, Any]:
    with calls_lock:
        gauge["now"] += 1
        gauge["max"] = max(gauge["max"], gauge["now"])
    try:
        ctx.sleep(inputs.seconds)
    finally:
        with calls_lock:
            gauge["now"] -= 1
    return {"slept": inputs.seconds}


@action("t.hang")
def hang(inputs: Slow, ctx: ActionContext) -> dict[str, Any]:
    """Ignores cancellation: only the engine's timeout can stop waiting for it."""
    time.sleep(inputs.seconds)
    return {}


@action("t.leak")
def leak(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    ctx.note(f"using {inputs.value}")
    return {"echo": inputs.value, "nested": {"list": [inputs.value, "ok"]}}


@action("t.leak_fail")
def leak_fail(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    raise ActionError(f"server said no to token {inputs.value}", retryable=False)


@action("t.probed")
def probed(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    _count("probed-run")
    return {"ran": True}


@probed.probe
def _probe(inputs: Echo, ctx: ActionContext) -> Probe:
    if inputs.value == "done":
        return Probe.done({"found": True})
    if inputs.value == "not-done":
        return Probe.not_done("nothing there")
    return Probe.unknown("cannot tell")


@action("t.sim")
def sim(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    _count("sim-run")
    return {"real": True}


@sim.simulate
def _sim(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    return {"simulated": True}


REGISTRY = Registry()
for _defined in (echo, gate, flaky, fatal, slow, hang, leak, leak_fail, probed, sim):
    REGISTRY.register(_defined)


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    gauge.update(now=0, max=0)


@pytest.fixture
def store(store_url: str) -> Store:
    """The same engine suite runs on SQLite and on a real PostgreSQL server."""
    opened = Store.open(store_url)
    yield opened
    opened.close()


def runbook_text(steps: str, extra: str = "") -> str:
    head = "irctl: 1\nkind: runbook\nid: test\ntitle: Test\n"
    return (
        head + textwrap.dedent(extra) + "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")
    )


TESTER = Ed25519PrivateKey.generate()  # the initiator's own key, in TEAM


def start(
    store: Store,
    steps: str,
    extra: str = "",
    *,
    params: dict[str, Any] | None = None,
    mode: str = "live",
    **engine_args: Any,
) -> tuple[Engine, str]:
    text = runbook_text(steps, extra)
    model = load_runbook_text(text, "test.yaml", registry=REGISTRY)
    engine = Engine(store, registry=REGISTRY, **engine_args)
    run_id = engine.create_run(
        model, text, params or {}, initiator="tester", mode=mode, starter_key=TESTER
    )  # signed when the config lists operators (TEAM)
    return engine, run_id


def types(store: Store, run_id: str) -> list[str]:
    return [e.type for e in store.events(run_id)]


def test_steps_run_in_order_and_read_earlier_outputs(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: first
          action: t.echo
          with: {value: 41}
        - id: second
          action: t.echo
          with: {value: "{{ steps.first.outputs.value + 1 }}"}
        """,
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert state.steps["second"].outputs == {"value": 42}
    started = [e.data["step"] for e in store.events(run_id) if e.type == ev.STEP_STARTED]
    assert started == ["first", "second"]


def test_step_started_is_committed_before_the_action_runs(store: Store) -> None:
    seen: list[list[str]] = []

    @action("t.look")
    def look(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
        other = Store.open(str(store.engine.url))
        seen.append([e.type for e in other.events(ctx.run_id)])
        other.close()
        return {}

    REGISTRY.register(look)
    engine, run_id = start(store, "- id: look\n  action: t.look\n")
    engine.execute(run_id)
    assert seen[0][-1] == ev.STEP_STARTED


def test_parallel_children_run_concurrently(store: Store) -> None:
    barrier_holder["p"] = threading.Barrier(3)
    engine, run_id = start(
        store,
        """
        - id: block
          parallel:
            - {id: a, action: t.gate, with: {name: p}}
            - {id: b, action: t.gate, with: {name: p}}
            - {id: c, action: t.gate, with: {name: p}}
        - id: after
          action: t.echo
        """,
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded", state.steps
    assert all(state.steps[k].status == "succeeded" for k in ("a", "b", "c", "block", "after"))


def test_for_each_respects_max_parallel(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: fan
          for_each: "{{ params.items }}"
          max_parallel: 3
          action: t.slow
          with: {seconds: 0.05}
        - id: count
          action: t.echo
          with: {value: "{{ steps.fan.outputs['items'] | length }}"}
        """,
        extra="params:\n  items: {type: list, items: integer}\n",
        params={"items": list(range(12))},
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert gauge["max"] == 3
    assert state.steps["count"].outputs == {"value": 12}
    assert all(state.steps[f"fan[{i}]"].status == "succeeded" for i in range(12))


def test_when_false_skips_and_true_runs(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: skipped
          action: t.echo
          when: "{{ params.dry }}"
        - id: ran
          action: t.echo
          when: "{{ not params.dry }}"
        """,
        extra="params:\n  dry: {type: boolean, default: false}\n",
        params={"dry": False},
    )
    state = engine.execute(run_id)
    assert state.steps["skipped"].status == "skipped"
    assert state.steps["ran"].status == "succeeded"
    assert "skipped" not in calls


def test_retry_backs_off_exponentially(store: Store) -> None:
    delays: list[float] = []
    engine, run_id = start(
        store,
        """
        - id: flaky
          action: t.flaky
          with: {key: f, failures: 3}
          retry: {attempts: 4, backoff: 2s}
        """,
        sleep=delays.append,
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert delays == [2.0, 4.0, 8.0]
    assert state.steps["flaky"].attempt == 4
    assert types(store, run_id).count(ev.STEP_RETRYING) == 3


def test_retries_exhausted_fail_the_run_and_run_on_failure_steps(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: flaky
          action: t.flaky
          with: {key: g, failures: 5}
          retry: {attempts: 2, backoff: 1s}
        - id: never
          action: t.echo
        """,
        extra="""
        on_failure:
          - id: page
            action: t.echo
            with: {value: "failed at {{ run.failed_step }}"}
        """,
        sleep=lambda _: None,
    )
    state = engine.execute(run_id)
    assert state.status == "failed"
    assert state.failed_step == "flaky"
    assert "never" not in state.steps
    assert state.steps["page"].outputs == {"value": "failed at flaky"}


def test_on_failure_continue_keeps_going(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: bad
          action: t.fatal
          with: {value: boom}
          on_failure: continue
        - id: good
          action: t.echo
        """,
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert state.steps["bad"].status == "failed"
    assert state.steps["bad"].error == "fatal: boom"
    assert state.steps["good"].status == "succeeded"


def test_the_failed_step_is_the_one_that_stopped_the_run(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: tolerated
          action: t.fatal
          with: {value: first}
          on_failure: continue
        - id: block
          parallel:
            - id: also-tolerated
              action: t.fatal
              with: {value: second}
              on_failure: continue
            - id: fine
              action: t.echo
        - id: fatal
          action: t.fatal
          with: {value: third}
        - id: never
          action: t.echo
        """,
        extra="""
        on_failure:
          - id: page
            action: t.echo
            with: {value: "failed at {{ run.failed_step }}"}
        """,
    )
    state = engine.execute(run_id)
    assert state.status == "failed"
    assert state.steps["tolerated"].status == "failed"
    assert state.steps["also-tolerated"].status == "failed"
    assert state.failed_step == "fatal"
    assert state.steps["page"].outputs == {"value": "failed at fatal"}
    assert "never" not in state.steps


def test_timeout_fails_an_idempotent_step_that_hangs(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: hang
          action: t.hang
          idempotent: true
          with: {seconds: 3}
          timeout: 200ms
        """,
        cancel_grace=0.1,
    )
    began = time.monotonic()
    state = engine.execute(run_id)
    assert time.monotonic() - began < 2.5
    assert state.status == "failed"
    assert "did not finish within 0.2s" in (state.steps["hang"].error or "")


def test_a_step_that_is_not_idempotent_is_not_retried_after_a_timeout(store: Store) -> None:
    """It may still act in its abandoned attempt: a person decides, as after a crash."""
    engine, run_id = start(
        store,
        """
        - id: hang
          action: t.hang
          with: {seconds: 3}
          timeout: 200ms
          retry: {attempts: 3, backoff: 10ms}
        """,
        cancel_grace=0.1,
    )
    state = engine.execute(run_id)
    assert state.status == "waiting"
    step = state.steps["hang"]
    assert (step.waiting_for, step.attempt) == ("operator", 1)
    assert "did not finish within 0.2s" in (step.prompt or "")
    assert "not retried" in (step.prompt or "")
    engine.mark(run_id, "hang", "failed", operator="oncall", reason="checked: nothing happened")
    state = engine.execute(run_id)
    assert state.status == "failed"
    assert state.steps["hang"].attempt == 1


def test_invalid_inputs_fail_with_the_field_named(store: Store) -> None:
    # a templated value can only be checked when it is rendered, at run time
    engine, run_id = start(
        store, "- id: bad\n  action: t.slow\n  with: {seconds: \"{{ 'soon' }}\"}\n"
    )
    state = engine.execute(run_id)
    assert state.status == "failed"
    assert "invalid inputs for t.slow: seconds" in (state.steps["bad"].error or "")


def test_tabletop_simulates_every_action(store: Store) -> None:
    engine, run_id = start(store, "- id: s\n  action: t.sim\n", mode="tabletop")
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert state.steps["s"].outputs == {"simulated": True}
    assert "sim-run" not in calls


def _public() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.identity import public_key_text

    return public_key_text(Ed25519PrivateKey.generate())


TEAM = Config.model_validate(
    {
        "operators": {
            "tester": {"roles": ["security-oncall"], "key": public_key_text(TESTER)},
            "t1": {"roles": ["treasury"], "key": _public()},
            "t2": {"roles": ["treasury"], "key": _public()},
        }
    }
)


def test_a_step_with_an_approval_policy_waits_for_it(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: sweep
          action: t.echo
          approval: two
        """,
        extra="approvals:\n  two: {quorum: 2, roles: [treasury]}\n",
        config=TEAM,
    )
    state = engine.execute(run_id)
    assert state.status == "waiting"
    assert state.steps["sweep"].waiting_for == "approval"
    assert state.steps["sweep"].approval["eligible"] == ["t1", "t2"]
    assert "sweep" not in calls
    unsigned = {
        "run": run_id, "step": "sweep", "digest": state.steps["sweep"].approval["digest"],
        "decision": "approve", "operator": "t1", "time": "t", "reason": None,
        "break_glass": False, "assurance": "key", "key": None, "sig": None,
    }  # fmt: skip
    store.append(
        run_id,
        [("approval.granted", unsigned), ("approval.granted", {**unsigned, "operator": "t2"})],
    )
    state = engine.execute(run_id)
    # Decisions without valid signatures never count: the journal holding them is refused.
    assert state.status == "tampered"
    assert "approval by t1 is not signed by t1's key" in str(state.reason)
    assert "sweep" not in calls


def test_a_policy_nobody_could_satisfy_refuses_to_start(store: Store) -> None:
    with pytest.raises(UsageError, match="could never be approved: quorum 2 cannot be reached"):
        start(
            store,
            "- id: sweep\n  action: t.echo\n  approval: two\n",
            extra="approvals:\n  two: {quorum: 2, roles: [treasury]}\n",
            config=Config(),
        )


def test_secrets_never_reach_the_journal(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-VALUE-do-not-record"
    monkeypatch.setenv("TEST_SECRET_TOKEN", secret)
    engine, run_id = start(
        store,
        """
        - id: use
          action: t.leak
          with: {value: "Bearer {{ secrets.token }}"}
        - id: fail
          action: t.leak_fail
          with: {value: "{{ secrets.token }}"}
        """,
        extra="secrets:\n  token: env:TEST_SECRET_TOKEN\n",
    )
    state = engine.execute(run_id)
    assert state.status == "failed"
    lines = list(store.lines(run_id))
    assert not [line for line in lines if secret in line]
    # the field read a secret: its value is masked whole, in the inputs and wherever it recurs
    assert state.steps["use"].outputs["echo"] == "••••"
    assert state.steps["fail"].error == "server said no to token ••••"


@action("t.basic_auth")
def basic_auth(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    token = base64.b64encode(f"oncall:{inputs.value}".encode()).decode()
    return {"header": f"Basic {token}", "hex": inputs.value.encode().hex()}


def test_encoded_secrets_never_reach_the_journal(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t/VALUE+do not&record"
    monkeypatch.setenv("TEST_SECRET_TOKEN", secret)
    engine, run_id = start(
        store,
        """
        - id: url
          action: t.leak
          with: {value: "https://x.test/?t={{ secrets.token | urlencode }}"}
        - id: loud
          action: t.leak
          with: {value: "{{ secrets.token | upper }}"}
        - id: json
          action: t.leak
          with: {value: "{{ {'t': secrets.token + '\\n'} | tojson }}"}
        - id: header
          action: t.basic_auth
          with: {value: "{{ secrets.token }}"}
        - id: fail
          action: t.leak_fail
          with: {value: "{{ secrets.token ~ '\\n' | urlencode }}"}
        """,
        extra="secrets:\n  token: env:TEST_SECRET_TOKEN\n",
    )
    state = engine.execute(run_id)
    assert state.status == "failed"
    journal = "\n".join(store.lines(run_id))
    encoded = base64.b64encode(f"oncall:{secret}".encode()).decode()
    for form in (
        secret, quote(secret, safe=""), quote(secret), secret.upper(), secret.encode().hex(),
        json.dumps(secret)[1:-1], encoded[8:-4],
    ):  # fmt: skip
        assert form not in journal
    assert state.steps["url"].outputs["echo"] == "••••"
    assert state.steps["loud"].outputs["echo"] == "••••"
    header = state.steps["header"].outputs["header"]
    assert header.startswith("Basic b25jYWxsO")
    assert "••••" in header


@action("t.raw_bytes")
def raw_bytes(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    return {"body": b"\x00binary", "ratio": float("nan")}


def test_outputs_that_cannot_be_recorded_fail_the_step_not_the_run(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: raw
          action: t.raw_bytes
          on_failure: continue
        - id: after
          action: t.echo
          with: {value: fine}
        """,
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert state.steps["raw"].status == "failed"
    assert state.steps["raw"].error.startswith(
        "t.raw_bytes returned outputs that cannot be recorded: value cannot be serialised"
    )
    assert state.steps["after"].outputs == {"value": "fine"}
    assert fold(store.events(run_id)).status == "succeeded"


def test_missing_secret_is_a_clear_error_before_anything_runs(store: Store) -> None:
    engine, run_id = start(
        store,
        "- id: a\n  action: t.echo\n",
        extra="secrets:\n  token: env:IRCTL_TEST_UNSET_VARIABLE\n",
    )
    with pytest.raises(Exception, match="IRCTL_TEST_UNSET_VARIABLE is not set"):
        engine.execute(run_id)
    assert ev.STEP_STARTED not in types(store, run_id)


def _crash_after_start(store: Store, engine: Engine, run_id: str, step: str) -> None:
    """Leave the journal as a process killed right after ``step.started`` would."""
    state = engine.state(run_id)
    from irctl.engine.plan import step_digest
    from irctl.runbook.loader import load_runbook_text as load

    model = load(state.runbook_text, "x", registry=REGISTRY)
    found = next(s for s in model.steps if s.id == step)
    store.append(run_id, [(ev.RUN_STARTED, {"attempt": 1})])
    store.append(
        run_id,
        [
            (
                ev.STEP_STARTED,
                {
                    "step": step,
                    "action": found.action,
                    "inputs": found.with_,
                    "digest": step_digest(step, found.action or "", found.with_),
                    "attempt": 1,
                },
            )
        ],
    )


@pytest.mark.parametrize(
    ("value", "status", "ran"),
    [("done", "succeeded", 0), ("not-done", "succeeded", 1)],
)
def test_in_doubt_step_is_settled_by_its_probe(
    store: Store, value: str, status: str, ran: int
) -> None:
    engine, run_id = start(store, f"- id: p\n  action: t.probed\n  with: {{value: {value}}}\n")
    _crash_after_start(store, engine, run_id, "p")
    state = engine.execute(run_id)
    assert state.status == status
    assert calls.get("probed-run", 0) == ran
    resolved = [e.data for e in store.events(run_id) if e.type == ev.STEP_RESOLVED]
    assert resolved == [{"step": "p", "by": "probe", "mark": "done" if ran == 0 else "retry"}]


def test_in_doubt_idempotent_step_runs_again(store: Store) -> None:
    engine, run_id = start(store, "- id: e\n  action: t.echo\n  with: {value: 1}\n")
    _crash_after_start(store, engine, run_id, "e")
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert calls["e"] == 1


@pytest.mark.parametrize(
    ("mark", "status", "ran"),
    [("done", "succeeded", 0), ("retry", "succeeded", 1), ("failed", "failed", 0)],
)
def test_in_doubt_step_without_probe_waits_for_an_operator(
    store: Store, mark: str, status: str, ran: int
) -> None:
    engine, run_id = start(store, "- id: u\n  action: t.probed\n  with: {value: unsure}\n")
    _crash_after_start(store, engine, run_id, "u")
    state = engine.execute(run_id)
    assert state.status == "waiting"
    assert state.steps["u"].waiting_for == "operator"
    assert f"irctl resume {run_id} --step u --mark done|retry|failed" in (
        state.steps["u"].prompt or ""
    )
    with pytest.raises(UsageError, match="not in doubt"):
        engine.mark(run_id, "nope", "done", operator="alice", reason=None)
    engine.mark(run_id, "u", mark, operator="alice", reason="checked by hand")
    state = engine.execute(run_id)
    assert state.status == status
    assert calls.get("probed-run", 0) == ran
    marks = [e.data for e in store.events(run_id) if e.type == ev.STEP_RESOLVED]
    assert marks == [{"step": "u", "mark": mark, "by": "alice", "reason": "checked by hand"}]


def test_finished_run_cannot_be_resumed(store: Store) -> None:
    engine, run_id = start(store, "- id: a\n  action: t.echo\n")
    engine.execute(run_id)
    with pytest.raises(UsageError, match="already succeeded"):
        engine.execute(run_id)


def test_checkpoint_seals_every_pause_and_the_end(store: Store) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.identity import public_key_text
    from irctl.record.transcript import verify_run

    key = Ed25519PrivateKey.generate()
    engine, run_id = start(
        store,
        "- id: a\n  action: t.echo\n- id: b\n  action: t.echo\n  approval: one\n",
        extra="approvals:\n  one: {quorum: 1}\n",
        signing_key=key,
        config=TEAM,
    )
    state = engine.execute(run_id)
    assert state.status == "waiting"
    kinds = types(store, run_id)
    assert kinds[-2:] == [ev.RUN_WAITING, ev.CHECKPOINT]
    report = verify_run(store, run_id, [public_key_text(key)])
    assert report.ok, report.problems


def test_a_drill_rehearses_steps_whose_inputs_come_from_simulated_outputs(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - id: first
          action: t.sim
        - id: second
          action: t.slow
          with: {seconds: "{{ steps.first.outputs.real | default(none) }}"}
        """,
        mode="tabletop",
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert state.steps["second"].outputs["inputs_incomplete"].startswith("seconds:")
    assert gauge["max"] == 0  # nothing really ran


STATE_SHAPES = {
    "sequence": """
        - id: first
          action: t.echo
          with: {value: 1}
        - id: second
          action: t.leak
          with: {value: "{{ steps.first.outputs.value }}"}
        """,
    "parallel and for_each": """
        - id: both
          parallel:
            - {id: a, action: t.echo}
            - {id: b, action: t.echo}
        - id: each
          for_each: "{{ [1, 2, 3] }}"
          max_parallel: 2
          action: t.echo
          with: {value: "{{ item }}"}
        """,
    "skip, retry, continue": """
        - id: skipped
          when: false
          action: t.echo
        - id: flaky
          action: t.flaky
          with: {key: shapes, failures: 1}
          retry: {attempts: 2, backoff: 1s}
        - id: bad
          action: t.fatal
          on_failure: continue
        """,
    "failure and compensation": """
        - id: bad
          action: t.fatal
          with: {value: boom}
        """,
}


@pytest.mark.parametrize("shape", sorted(STATE_SHAPES))
@pytest.mark.parametrize("signed", [False, True])
def test_the_state_execute_returns_is_the_fold_of_the_journal(
    store: Store, shape: str, signed: bool
) -> None:
    """execute() returns the state it kept while running; it must equal a fold of the
    journal, deferred outcomes (committed with the next event) and their times included."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    engine, run_id = start(
        store,
        STATE_SHAPES[shape],
        extra="on_failure:\n  - {id: page, action: t.echo}\n",
        sleep=lambda _: None,
        signing_key=Ed25519PrivateKey.generate() if signed else None,
    )
    returned = engine.execute(run_id)
    assert returned.finished
    assert returned == engine.state(run_id)


def test_the_state_execute_returns_includes_what_others_recorded(store: Store) -> None:
    """A note another process adds while the run executes is in the state returned."""
    engine, run_id = start(store, "- {id: one, action: t.slow, with: {seconds: 0.3}}\n")
    other = Engine(store, registry=REGISTRY)
    noted = threading.Timer(0.1, lambda: other.record(run_id, ev.RUN_NOTE, {"text": "hi"}))
    noted.start()
    returned = engine.execute(run_id)
    noted.join()
    assert returned == engine.state(run_id)
    assert [text for _, _, text in returned.notes] == ["hi"]


class Odd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str


@action("t.odd", idempotent=True)
def odd(inputs: Odd, ctx: ActionContext) -> Any:
    return {
        "nan": {"value": float("nan")},
        "set": {"value": {1, 2}},
        "float": {"value": 1.5, "text": "ok"},
        "nested": {"value": {"deep": [1, {"x": None}]}},
        "list": ["not", "a", "dict"],
        "surrogate": {"name": "caf\udce9.txt"},  # undecodable bytes, as os.fsdecode gives them
        "huge": {"value": 10**5000},
        "shapes": {"pair": (1, 2), "by_number": {1: "one"}, "name": "café"},
    }[inputs.kind]


REGISTRY.register(odd)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("nan", "t.odd returned outputs that cannot be recorded: value cannot be serialised"),
        ("set", "t.odd returned outputs that cannot be recorded: value cannot be serialised"),
        ("list", "t.odd returned list, not a dict of outputs"),
        ("surrogate", "t.odd returned outputs that cannot be recorded: not UTF-8 text"),
        ("huge", "t.odd returned outputs that cannot be recorded: value cannot be serialised"),
    ],
)
def test_outputs_that_cannot_be_recorded_fail_the_step(store: Store, kind: str, error: str) -> None:
    engine, run_id = start(store, f"- {{id: odd, action: t.odd, with: {{kind: {kind}}}}}\n")
    state = engine.execute(run_id)
    assert state.status == "failed"
    assert (state.steps["odd"].error or "").startswith(error)


@pytest.mark.parametrize("kind", ["float", "nested", "shapes"])
def test_outputs_that_can_be_recorded_are(store: Store, kind: str) -> None:
    engine, run_id = start(store, f"- {{id: odd, action: t.odd, with: {{kind: {kind}}}}}\n")
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert store.events(run_id)[-1].type == ev.RUN_SUCCEEDED
    assert state == engine.state(run_id)  # later steps read them as the journal holds them


def test_outputs_reach_later_steps_as_the_journal_holds_them(store: Store) -> None:
    engine, run_id = start(
        store,
        """
        - {id: odd, action: t.odd, with: {kind: shapes}}
        - id: read
          action: t.echo
          with: {value: "{{ steps.odd.outputs.pair }} {{ steps.odd.outputs.by_number['1'] }}"}
        """,
    )
    state = engine.execute(run_id)
    assert state.steps["read"].outputs == {"value": "[1, 2] one"}


@action("t.interrupt")
def interrupt(inputs: Echo, ctx: ActionContext) -> dict[str, Any]:
    raise KeyboardInterrupt  # as Ctrl-C arrives while the action runs


REGISTRY.register(interrupt)


def test_an_interrupted_run_returns_the_state_its_journal_holds(store: Store) -> None:
    """Interrupted in on_failure, after the engine noted the failed step but before the run's
    failure was recorded: the state returned is the journal's, not the engine's."""
    engine, run_id = start(
        store,
        "- {id: bad, action: t.fatal, with: {value: boom}}\n",
        extra="on_failure:\n  - {id: page, action: t.interrupt}\n",
    )
    state = engine.execute(run_id)
    assert state.status == "interrupted"
    assert state == engine.state(run_id)
