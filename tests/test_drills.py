"""Drills: tabletop runs that touch nothing real, injects, scoring, the drill library.

Every drill in drills/ is run in tabletop mode against real local servers — the
exchange admin stand-in, moto's AWS server, the Slack stand-in — with people
(a thread here) answering manual steps and approving; afterwards every server's
state is compared with what it was before.
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from irctl.actions import ActionContext, Registry, action
from irctl.drills.drill import (
    DRILL_INJECT,
    DRILL_STARTED,
    drill_paths,
    drive_drill,
    find_drill,
    load_drills,
    score,
    start_drill,
)
from irctl.engine.engine import Engine
from irctl.errors import InvalidDocument, IrctlError, UsageError
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.state import fold
from irctl.record.transcript import verify_run
from irctl.runbook.loader import (
    load_config,
    load_drill,
    load_runbook,
    load_runbook_text,
    validate_paths,
)
from irctl.runbook.model import Drill, Runbook
from irctl.testing import ExchangeAdminStub, SlackStandIn, recorded_keys
from irctl.workspace import Workspace
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-drill-never-record-me"
SLACK_TOKEN = "xoxb-drill-test"
INITIATOR = "oncall"


def library_drills() -> list[Path]:
    return drill_paths(ROOT / "drills")


def _roles(runbook: Runbook) -> set[str]:
    roles: set[str] = set()
    policies = list(runbook.approvals.values())
    policies += [s.approval for s in runbook.all_steps() if s.approval is not None
                 and not isinstance(s.approval, str)]  # fmt: skip
    for policy in policies:
        if isinstance(policy, str):
            continue
        roles.update(policy.roles)
        roles.update(r for group in policy.groups for r in group.roles)
    return roles


@dataclass
class Team:
    """Operators for every role the runbooks ask approvals of, three per role, with keys."""

    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    initiator: Ed25519PrivateKey | None = None  # the on-call engineer's own key


def make_team(folder: Path, roles: set[str]) -> Team:
    team = Team(initiator=generate_private_key(folder / f"{INITIATOR}.key"))
    assert team.initiator is not None
    operators: dict[str, Any] = {
        INITIATOR: {
            "roles": ["security-oncall"], "key": public_key_text(team.initiator),
            "slack": "U0ONCALL",
        },
    }  # fmt: skip
    for r_index, role in enumerate(sorted(roles)):
        for n in range(3):
            name = f"{role}-{n}".lower()
            key = generate_private_key(folder / f"{name}.key")
            team.keys[name] = key
            operators[name] = {
                "roles": [role], "key": public_key_text(key), "slack": f"U{r_index:03d}X{n}",
            }  # fmt: skip
    team.config = operators
    return team


def make_drill_workspace(
    root: Path,
    *,
    exchange_url: str,
    slack_url: str | None = None,
    aws_config: dict[str, Any] | None = None,
    store: str | None = None,
    runbooks: dict[str, str] | None = None,
    drills: dict[str, str] | None = None,
) -> tuple[Workspace, Team]:
    """A workspace with the library's runbooks and drills (or the given ones)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "runbooks").mkdir(exist_ok=True)
    (root / "drills").mkdir(exist_ok=True)
    if runbooks is None:
        for path in (ROOT / "runbooks").glob("*.yaml"):
            shutil.copy(path, root / "runbooks" / path.name)
    else:
        for name, text in runbooks.items():
            (root / "runbooks" / f"{name}.yaml").write_text(text, encoding="utf-8")
    if drills is None:
        for path in library_drills():
            shutil.copy(path, root / "drills" / path.name)
    else:
        for name, text in drills.items():
            (root / "drills" / f"{name}.yaml").write_text(text, encoding="utf-8")
    roles: set[str] = set()
    for path in (root / "runbooks").glob("*.yaml"):
        roles |= _roles(load_runbook(path))
    team = make_team(root.parent / f"{root.name}-keys", roles)
    installation = generate_private_key(root / ".irctl" / "installation.key")
    library = load_config(ROOT / "irctl.yaml")
    config: dict[str, Any] = {
        "store": store or "sqlite:///.irctl/irctl.db",
        "installation_key": public_key_text(installation),
        "operators": team.config,
        "vars": {**library.vars, "exchange_admin_url": exchange_url},
        "integrations": {},
    }
    if slack_url is not None:
        config["integrations"]["slack"] = {
            "token": "env:SLACK_BOT_TOKEN", "base_url": slack_url, "channel": "#incidents",
        }  # fmt: skip
    if aws_config is not None:
        config["integrations"]["aws"] = aws_config
    (root / "irctl.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return Workspace.find(root), team


class People:
    """The participants: answer every manual step 'done' and approve with eligible operators."""

    def __init__(self, ws: Workspace, run_id: str, team: Team, *, delay: float = 0.0) -> None:
        self.ws, self.run_id, self.team, self.delay = ws, run_id, team, delay
        self.stop = threading.Event()
        self.refused: list[str] = []
        self.thread = threading.Thread(target=self._work, daemon=True)

    def __enter__(self) -> People:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def _work(self) -> None:
        try:
            self._answer_all()
        except BaseException as exc:
            self.refused.append(f"people stopped: {type(exc).__name__}: {exc}")
            raise

    def _answer_all(self) -> None:
        # As `irctl answer` records it: sealed with the workspace's installation key.
        engine = Engine(self.ws.store, config=self.ws.config, signing_key=self.ws.signing_key())
        while not self.stop.wait(0.1):
            state = fold(self.ws.store.events(self.run_id))
            if state.finished:
                return
            for step in state.waiting():
                if self.delay and self.stop.wait(self.delay):
                    return
                if step.waiting_for == "answer":
                    try:
                        engine.answer(self.run_id, step.key, "done", operator=INITIATOR)
                    except IrctlError as exc:  # answered meanwhile
                        self.refused.append(f"answer: {exc}")
                elif step.waiting_for == "approval" and step.approval is not None:
                    for who in step.approval.get("eligible", []):
                        if who not in self.team.keys or who in step.approvers:
                            continue
                        try:
                            Engine(self.ws.store).decide(
                                self.run_id, step.key, operator=who, approve=True,
                                reason="drill", private_key=self.team.keys[who],
                            )  # fmt: skip
                        except IrctlError as exc:
                            self.refused.append(f"{who}: {exc}")


def moto_state(endpoint: str) -> Any:
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as answer:
        return json.loads(answer.read())


def seed_aws(config: dict[str, Any]) -> None:
    """Things a drill's runbook would change if it ever ran for real."""
    iam = boto("iam", config)
    for user in ("ci-deploy", "dana"):
        iam.create_user(UserName=user)
        iam.create_access_key(UserName=user)
        iam.create_login_profile(UserName=user, Password="Drill-Pa55word!")
    for role in ("wallet-signer", "deploy"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                           "Action": "sts:AssumeRole"}],
        }))  # fmt: skip
    boto("kms", config).create_key(Description="hot wallet signer")
    boto("secretsmanager", config).create_secret(Name="exchange/api", SecretString="v1")


@pytest.fixture
def exchange() -> Iterator[ExchangeAdminStub]:
    with ExchangeAdminStub(TOKEN) as stub:
        stub.add_pending("ethereum", "0x00000000000000000000000000000000000000aa", 2)
        yield stub


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStandIn]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    with SlackStandIn(token=SLACK_TOKEN) as standin:
        standin.add_channel("incidents", bot_member=True)
        yield standin


def engine_for(ws: Workspace, **kwargs: Any) -> Engine:
    return Engine(
        ws.store, config=ws.config, signing_key=ws.signing_key(), workspace=ws.root, poll=0.1,
        **kwargs,
    )  # fmt: skip


def run_library_drill(
    ws: Workspace, team: Team, drill_id: str, *, scale: float = 0.002, limit: float = 30.0
) -> tuple[str, list[str]]:
    drill, _ = find_drill(ws.drills_dir, drill_id)
    path = ws.resolve_runbook(drill.runbook)
    text = path.read_text(encoding="utf-8")
    engine = engine_for(ws)
    run_id = start_drill(
        engine, drill, load_runbook_text(text, str(path)), text, initiator=INITIATOR,
        time_scale=scale,
    )  # fmt: skip
    said: list[str] = []
    with People(ws, run_id, team):
        drive_drill(engine, run_id, say=said.append, time_limit=limit, poll=0.1)
    return run_id, said


# -- the library ----------------------------------------------------------------------------------


def test_every_runbook_has_a_drill() -> None:
    drills = load_drills(ROOT / "drills")
    rehearsed = {drill.runbook for drill, _ in drills.values()}
    paths = (ROOT / "runbooks").glob("*.y*ml")
    runbooks = {load_runbook(p, check_integrations=False).id for p in paths}
    assert runbooks, "the runbook library is empty"
    missing = sorted(runbooks - rehearsed)
    assert not missing, f"runbooks without a drill in drills/: {missing}"


def test_every_drill_validates_against_its_runbook() -> None:
    files, problems = validate_paths([ROOT / "drills", ROOT / "runbooks"])
    assert files >= 2
    assert [str(p) for p in problems] == []


@pytest.mark.parametrize("path", library_drills(), ids=lambda p: p.stem)
def test_a_tabletop_drill_touches_nothing_real(
    path: Path,
    tmp_path: Path,
    exchange: ExchangeAdminStub,
    slack: SlackStandIn,
    aws: dict[str, Any],
) -> None:
    drill = load_drill(path)
    if drill.mode != "tabletop":
        pytest.skip(f"{drill.id} is a sandbox drill")  # none today; a sandbox drill needs one
    ws, team = make_drill_workspace(
        tmp_path / "ws", exchange_url=exchange.url, slack_url=slack.url, aws_config=aws
    )
    seed_aws(aws)
    before = moto_state(aws["endpoint_url"])
    pending_before = exchange.pending("ethereum", "0x00000000000000000000000000000000000000aa")

    run_id, said = run_library_drill(ws, team, drill.id)

    state = fold(ws.store.events(run_id))
    failed = {s.key: s.error for s in state.steps.values() if s.status == "failed"}
    waiting = {s.key: s.prompt for s in state.waiting()}
    assert state.status == "succeeded", (state.status, failed, waiting)
    assert state.mode == "tabletop"
    assert moto_state(aws["endpoint_url"]) == before  # no AWS call changed anything
    assert exchange.requests == []  # the exchange's admin API was never called
    assert exchange.pending("ethereum", "0x00000000000000000000000000000000000000aa") == (
        pending_before
    )
    for method in ("conversations.create", "conversations.invite", "conversations.setTopic",
                   "conversations.join"):  # fmt: skip
        assert slack.calls(method) == [], method  # Slack actions were simulated too
    calls = slack.calls("chat.postMessage")
    top = [c.params.get("text", "") for c in calls if not c.params.get("thread_ts")]
    assert top
    assert [text for text in top if "DRILL" not in text] == []
    # replies (notes, failures) go in the thread of the run's message, which says DRILL
    headers = {m.ts for m in slack.messages("#incidents") if m.text.startswith("[DRILL]")}
    assert {c.params["thread_ts"] for c in calls if c.params.get("thread_ts")} <= headers
    assert said
    assert said[0].startswith(f"🧪 DRILL {drill.id}")
    lines = "".join(ws.store.lines(run_id))
    assert TOKEN not in lines
    assert SLACK_TOKEN not in lines
    assert_chained_and_sealed(ws, run_id)


def assert_chained_and_sealed(ws: Workspace, run_id: str) -> None:
    """Injects appended while the engine ran left one gap-free chain, sealed at its end, and
    the whole transcript verifies (approvals included)."""
    events = ws.store.events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(b.prev == a.hash for a, b in itertools.pairwise(events))
    assert events[-1].type == "checkpoint"
    assert events[-1].data["seq"] == events[-2].seq
    report = verify_run(ws.store, run_id, None)
    assert report.ok, report.problems


# -- the engine never reaches an integration's run in tabletop mode ----------------------------


class Touch(BaseModel):
    path: str


@action("drilltest.touch", drill_safe=True)
def touch(inputs: Touch, ctx: ActionContext) -> dict[str, Any]:
    """Claims to be drill-safe, but writes a file (a side effect)."""
    with open(inputs.path, "a", encoding="utf-8") as handle:
        handle.write("touched\n")
    return {"touched": True}


RUNBOOK = """\
irctl: 1
kind: runbook
id: side-effects
title: Side effects
params:
  out: {type: string}
steps:
  - id: record
    action: testing.record
    tags: [contain]
    with: {path: "{{ params.out }}", key: recorded}
  - id: claims-drill-safe
    action: drilltest.touch
    tags: [contain]
    with: {path: "{{ params.out }}"}
  - id: say
    action: notify.console
    with: {message: "the drill reached the end"}
"""


def test_tabletop_cannot_reach_an_integrations_run(tmp_path: Path) -> None:
    from irctl.journal.store import Store

    registry = Registry()
    registry.register(touch)
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store, registry=registry)
    model = load_runbook_text(RUNBOOK, "side-effects.yaml", registry=registry)
    out = tmp_path / "effects.txt"
    run_id = engine.create_run(model, RUNBOOK, {"out": str(out)}, initiator="oncall",
                               mode="tabletop")  # fmt: skip
    state = engine.execute(run_id)
    assert state.status == "succeeded"
    assert not out.exists()  # neither testing.record nor the self-declared drill-safe action ran
    assert recorded_keys(str(out)) == []
    assert state.steps["record"].outputs["simulated"] is True
    assert state.steps["claims-drill-safe"].outputs["simulated"] is True
    # irctl's own people-facing actions are real in a drill: the note was recorded
    assert state.steps["say"].outputs == {"message": "the drill reached the end", "level": "info"}
    # the same runbook live does touch the file: the check above can fail
    live = engine.create_run(model, RUNBOOK, {"out": str(out)}, initiator="oncall")
    assert engine.execute(live).status == "succeeded"
    assert recorded_keys(str(out)) == ["recorded", "touched"]


def test_a_tabletop_run_reads_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from irctl.journal.store import Store

    monkeypatch.delenv("DRILL_NEVER_SET", raising=False)
    text = (
        "irctl: 1\nkind: runbook\nid: s\ntitle: S\nsecrets: {token: env:DRILL_NEVER_SET}\n"
        "steps:\n  - id: a\n    action: testing.record\n"
        '    with: {path: "/nonexistent/x", key: "{{ secrets.token }}"}\n'
    )
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store)
    model = load_runbook_text(text, "s.yaml")
    run_id = engine.create_run(model, text, {}, initiator="oncall", mode="tabletop")
    assert engine.execute(run_id).status == "succeeded"
    live = engine.create_run(model, text, {}, initiator="oncall")
    with pytest.raises(Exception, match="DRILL_NEVER_SET is not set"):
        engine.execute(live)


# -- never live ---------------------------------------------------------------------------------


def test_a_drill_can_never_run_live(tmp_path: Path, exchange: ExchangeAdminStub) -> None:
    bad = tmp_path / "live.yaml"
    bad.write_text(
        "irctl: 1\nkind: drill\nid: live-drill\ntitle: L\nrunbook: hot-wallet-compromise\n"
        "mode: live\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidDocument, match="mode"):
        load_drill(bad)
    ws, team = make_drill_workspace(tmp_path / "ws", exchange_url=exchange.url)
    drill, _ = find_drill(ws.drills_dir, "quarterly-hot-wallet")
    forced = drill.model_copy(update={"mode": "live"})  # built by hand, past validation
    path = ws.resolve_runbook(drill.runbook)
    text = path.read_text(encoding="utf-8")
    engine = engine_for(ws)
    with pytest.raises(UsageError, match="never live"):
        start_drill(engine, forced, load_runbook_text(text, str(path)), text, initiator=INITIATOR)
    assert ws.store.runs() == []  # nothing was recorded
    # a live run dressed up as a drill is refused too
    run_id = engine.create_run(
        load_runbook_text(text, str(path)), text,
        {"chain": "ethereum", "wallet": "0x00000000000000000000000000000000000000aa"},
        initiator=INITIATOR, starter_key=team.initiator,
    )  # fmt: skip
    engine.record(run_id, DRILL_STARTED, {"drill": "x", "injects": [], "objectives": []})
    with pytest.raises(UsageError, match="never live"):
        drive_drill(engine, run_id, say=print)
    assert exchange.requests == []


def test_a_sandbox_drill_needs_its_sandbox(tmp_path: Path, exchange: ExchangeAdminStub) -> None:
    from irctl.drills.drill import sandbox_config
    from irctl.runbook.model import Config

    ws, _ = make_drill_workspace(tmp_path / "ws", exchange_url=exchange.url)
    drill, _ = find_drill(ws.drills_dir, "quarterly-hot-wallet")
    sandbox_drill = drill.model_copy(update={"mode": "sandbox"})
    with pytest.raises(UsageError, match="--sandbox FILE"):
        sandbox_config(ws.config, None, sandbox_drill)
    sandbox = Config.model_validate({"vars": {"exchange_admin_url": "http://127.0.0.1:9/x"}})
    used = sandbox_config(ws.config, sandbox, sandbox_drill)
    assert used.vars == {"exchange_admin_url": "http://127.0.0.1:9/x"}  # never mixed
    assert used.operators == ws.config.operators


# -- injects and scoring ------------------------------------------------------------------------

SCORED_RUNBOOK = """\
irctl: 1
kind: runbook
id: scored
title: Scored
objectives:
  contain: 1m
approvals:
  two:
    quorum: 2
    roles: [treasury]
steps:
  - id: halt
    action: testing.record
    tags: [contain]
    with: {path: /nonexistent/halt, key: halt}
  - id: call
    action: manual.confirm
    tags: [contain]
    with: {prompt: "Call custody"}
  - id: sweep
    action: testing.record
    approval: two
    with: {path: /nonexistent/sweep, key: sweep}
"""

SCORED_DRILL = """\
irctl: 1
kind: drill
id: scored-drill
title: Scored drill
runbook: scored
mode: tabletop
injects:
  - {at: 0m, say: "Alert: outflow"}
  - {at: 1m, say: "Bridging starts"}
  - {at: 2m, say: "Press calls"}
objectives:
  - {step: halt, within: 1m}
  - {step: call, within: 1s}
  - {approval: sweep, within: 10m}
"""


def test_injects_are_delivered_in_order_recorded_and_scored(
    tmp_path: Path, exchange: ExchangeAdminStub, slack: SlackStandIn, store_url: str
) -> None:
    ws, team = make_drill_workspace(
        tmp_path / "ws", exchange_url=exchange.url, slack_url=slack.url, store=store_url,
        runbooks={"scored": SCORED_RUNBOOK}, drills={"scored-drill": SCORED_DRILL},
    )  # fmt: skip
    scale = 0.01  # 1m -> 0.6 s
    drill, _ = find_drill(ws.drills_dir, "scored-drill")
    engine = engine_for(ws)
    model = load_runbook_text(SCORED_RUNBOOK, "scored.yaml")
    run_id = start_drill(engine, drill, model, SCORED_RUNBOOK, initiator=INITIATOR,
                         time_scale=scale)  # fmt: skip
    said: list[str] = []
    # People answer only after every inject was played (the manual step waits ~1.5 s).
    with People(ws, run_id, team, delay=1.5):
        state = drive_drill(engine, run_id, say=said.append, time_limit=30, poll=0.1)
    assert state.status == "succeeded"
    events = ws.store.events(run_id)
    injects = [e for e in events if e.type == DRILL_INJECT]
    assert [e.data["say"] for e in injects] == ["Alert: outflow", "Bridging starts", "Press calls"]
    assert all(e.data["to"] == ["terminal", "slack"] for e in injects)
    assert [s.split(" · ", 2)[2] for s in said] == [e.data["say"] for e in injects]
    slack_texts = [c.params.get("text", "") for c in slack.calls("chat.postMessage")]
    assert sum("Bridging starts" in t for t in slack_texts) == 1
    card = score(events)
    starts = [i.delivered for i in card.injects]
    assert all(d is not None for d in starts)
    # each inject came no earlier than its scaled offset, in order
    assert all(d >= i.at for d, i in zip(starts, card.injects, strict=True) if d is not None)
    assert starts == sorted(starts)  # type: ignore[type-var]
    by_target = {o.target: o for o in card.objectives}
    assert by_target["halt"].met
    assert by_target["halt"].measured is not None
    assert by_target["halt"].measured <= 0.6
    call = by_target["call"]  # the manual step waited on people for ~1.5 s against 0.01 s
    assert not call.met
    assert call.measured is not None
    assert call.measured > call.within
    assert by_target["sweep"].kind == "approval"
    assert by_target["sweep"].met
    assert by_target["contain"].kind == "runbook"
    assert not by_target["contain"].met
    assert card.headline == "time to contain"
    assert card.people_seconds > card.action_seconds  # the waits were the people's
    assert card.people_seconds >= 1.0
    approvers = {a.operator for a in card.approvals}
    assert {"treasury-0", "treasury-1"} <= approvers <= {"treasury-0", "treasury-1", "treasury-2"}
    assert all(a.decision == "approve" and a.seconds >= 0 for a in card.approvals)
    assert any("step call finished" in tip for tip in card.improvements)
    assert card.met == 2
    assert len(card.objectives) == 4
    # concurrent appends (injects, the engine, approvals) left an intact, sealed chain
    assert verify_run(ws.store, run_id, None).ok


def test_a_drill_nobody_answers_ends_at_its_time_limit(
    tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    ws, _ = make_drill_workspace(
        tmp_path / "ws", exchange_url=exchange.url,
        runbooks={"scored": SCORED_RUNBOOK}, drills={"scored-drill": SCORED_DRILL},
    )  # fmt: skip
    drill, _ = find_drill(ws.drills_dir, "scored-drill")
    engine = engine_for(ws)
    model = load_runbook_text(SCORED_RUNBOOK, "scored.yaml")
    # the halt's minute is 300 ms here: room for a loaded machine, well inside the 2 s limit
    run_id = start_drill(engine, drill, model, SCORED_RUNBOOK, initiator=INITIATOR,
                         time_scale=0.005)  # fmt: skip
    state = drive_drill(engine, run_id, say=lambda _: None, time_limit=2.0, poll=0.1)
    assert state.status == "aborted"
    assert state.reason == "the drill's time limit passed"
    card = score(ws.store.events(run_id))
    assert {o.target: o.met for o in card.objectives} == {
        "halt": True, "call": False, "sweep": False, "contain": False,
    }  # fmt: skip
    assert any("ended aborted" in tip for tip in card.improvements)
    assert verify_run(ws.store, run_id, None).ok


def test_unknown_drill_is_a_clear_error(tmp_path: Path, exchange: ExchangeAdminStub) -> None:
    ws, _ = make_drill_workspace(tmp_path / "ws", exchange_url=exchange.url)
    with pytest.raises(UsageError, match="did you mean 'quarterly-hot-wallet'"):
        find_drill(ws.drills_dir, "quarterly-hot-walet")


def test_drill_model_round_trip() -> None:
    # the objectives recorded in drill.started keep their durations readable
    drill = Drill.model_validate(yaml.safe_load(SCORED_DRILL))
    dumped = [o.model_dump(mode="json", exclude_none=True) for o in drill.objectives]
    assert dumped[0] == {"step": "halt", "within": "1m"}


@pytest.mark.parametrize("drill_id", [
    "quarterly-bank-run", "quarterly-insider-withdrawal-abuse", "quarterly-ddos-overload",
])  # fmt: skip
def test_the_new_incidents_drills_meet_every_objective(
    drill_id: str, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    from irctl.drills.drill import score

    ws, team = make_drill_workspace(tmp_path / "ws", exchange_url=exchange.url)
    run_id, _ = run_library_drill(ws, team, drill_id)
    card = score(ws.store.events(run_id))
    assert card.status == "succeeded"
    assert card.objectives
    assert [o.name for o in card.objectives if not o.met] == []
