"""``irctl run --only / --skip``: a run of part of a runbook, recorded in its signed start,
checked against the runbook's ``skip:`` rule when started and again whenever it is opened,
and shown in the transcript and every export.

The halt goes to the exchange's admin API stand-in on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from irctl.engine.engine import Engine
from irctl.errors import UsageError
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.store import Store
from irctl.record.report_html import objectives
from irctl.record.transcript import verify_run
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.testing import ExchangeAdminStub
from tests.helpers import rebuild_run, resign_start

TOKEN = "admin-token-selection"
RUNBOOK = """\
irctl: 1
id: halt
title: Halt withdrawals
params:
  chain: {type: string}
secrets:
  admin_token: env:SELECTION_ADMIN_TOKEN
skip: {roles: [security-lead]}
objectives: {contain: 5m}
steps:
  - id: snapshot
    action: notify.console
    tags: [contain]
    with: {message: "balances noted"}
  - id: halt
    action: http.request
    skip: never
    tags: [contain]
    with:
      method: POST
      url: "{{ vars.exchange_admin_url }}/withdrawals/halt"
      headers: {Authorization: "Bearer {{ secrets.admin_token }}"}
      json: {chain: "{{ params.chain }}", reason: "selection test"}
      expect_status: [200]
  - id: tell
    action: notify.console
    with: {message: "withdrawals halted on {{ params.chain }}"}
  - id: report
    action: notify.console
    with: {message: "halt answered {{ steps.halt.outputs.status }}"}
"""


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExchangeAdminStub]:
    monkeypatch.setenv("SELECTION_ADMIN_TOKEN", TOKEN)
    with ExchangeAdminStub(TOKEN) as stub:
        yield stub


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


class Team:
    def __init__(self, tmp_path: Path, exchange: ExchangeAdminStub) -> None:
        self.installation = generate_private_key(tmp_path / "installation.key")
        self.keys = {n: generate_private_key(tmp_path / f"{n}.key") for n in ("oncall", "alice")}
        self.roles = {"oncall": ["security-oncall"], "alice": ["security-lead"]}
        self.vars = {"exchange_admin_url": exchange.url}
        self.model = load_runbook_text(RUNBOOK, "halt.yaml")

    def engine(self, store: Store) -> Engine:
        config = Config.model_validate({
            "installation_key": public_key_text(self.installation),
            "operators": {n: {"roles": self.roles[n], "key": public_key_text(k)}
                          for n, k in self.keys.items()},
            "vars": self.vars,
        })  # fmt: skip
        return Engine(store, config=config, signing_key=self.installation, notify=False)

    def start(self, store: Store, who: str, selection: dict[str, list[str]] | None) -> str:
        return self.engine(store).create_run(
            self.model, RUNBOOK, {"chain": "ethereum"}, initiator=who,
            starter_key=self.keys[who], selection=selection,
        )  # fmt: skip


def test_a_lead_leaves_a_step_out_and_the_run_records_who_chose_it(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    run_id = team.start(store, "alice", {"skip": ["tell"]})
    state = team.engine(store).execute(run_id)
    assert state.status == "succeeded", state.reason
    assert exchange.halted == {"ethereum"}
    assert state.steps["tell"].status == "skipped"
    assert state.steps["tell"].error == "left out at the start by alice (--skip)"
    assert state.steps["report"].status == "succeeded"
    events = store.events(run_id)
    assert events[0].data["selection"] == {"skip": ["tell"]}
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems


def test_only_runs_the_named_steps_and_the_objective_says_a_person_left_one_out(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    run_id = team.start(store, "alice", {"only": ["halt", "report"]})
    state = team.engine(store).execute(run_id)
    assert state.status == "succeeded", state.reason
    assert [state.steps[s].status for s in ("snapshot", "halt", "tell", "report")] == [
        "skipped", "succeeded", "skipped", "succeeded",
    ]  # fmt: skip
    (contain,) = objectives(store.events(run_id))
    assert contain.met is True
    assert contain.chosen == ["snapshot skipped by alice: left out at the start by alice (--only)"]


def test_a_role_the_skip_rule_does_not_name_may_not_leave_a_step_out(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    with pytest.raises(UsageError, match=r"oncall \(roles: security-oncall\) may not skip"):
        team.start(store, "oncall", {"skip": ["tell"]})
    assert store.runs() == []


@pytest.mark.parametrize(
    ("selection", "words"),
    [
        ({"skip": ["halt"]}, "marked skip: never"),
        ({"only": ["snapshot", "report"]}, "marked skip: never"),
        ({"only": ["halt", "nosuch"]}, "has no step 'nosuch'"),
    ],
)
def test_never_steps_and_unknown_steps_cannot_be_left_out_even_by_the_lead(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub,
    selection: dict[str, list[str]], words: str,
) -> None:  # fmt: skip
    team = Team(tmp_path, exchange)
    with pytest.raises(UsageError, match=words):
        team.start(store, "alice", selection)
    assert store.runs() == []
    assert exchange.halted == set()


def test_a_step_that_reads_one_left_out_is_refused_at_the_start(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    from irctl.engine.selection import problem

    team = Team(tmp_path, exchange)
    text = RUNBOOK.replace("    skip: never\n", "")
    model = load_runbook_text(text, "halt.yaml")
    operators = {"alice": {"roles": ["security-lead"]}}
    found = problem(model, {"skip": ["halt"]}, initiator="alice", operators=operators)
    assert found is not None
    assert "step 'report' reads steps.halt, which this selection leaves out" in found
    assert problem(model, {"skip": ["halt", "report"]}, initiator="alice",
                   operators=operators) is None  # fmt: skip
    assert team  # the same team as the other tests


def test_a_selection_written_around_irctl_stops_the_run_before_the_halt(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    """oncall, who may not skip, adds a selection to their own run and signs the start again
    with their own key (and the row re-sealed): the signature holds, the skip rule does not,
    and the engine stops the run before any step."""
    from irctl.engine.guard import seal_created

    team = Team(tmp_path, exchange)
    run_id = team.start(store, "oncall", None)
    events = store.events(run_id)
    created = dict(events[0].data)
    created["selection"] = {"skip": ["snapshot"]}
    created.pop("sealed_by", None)
    resign_start(created, run_id, team.keys["oncall"])
    created["sealed_by"] = seal_created(run_id, created, team.installation)
    events[0] = type(events[0]).make(run_id, 1, events[0].type, created, events[0].prev,
                                     events[0].ts)  # fmt: skip
    rebuild_run(store, run_id, events, team.installation)
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", (state.status, state.reason)
    assert "recorded selection" in str(state.reason)
    assert "snapshot" not in state.steps or state.steps["snapshot"].status == "pending"
    assert exchange.halted == set()


def test_a_selection_removed_from_the_record_breaks_the_signed_start(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    """The installation key's holder re-seals run.created without alice's selection: her
    signed start no longer matches, and the run stops."""
    from irctl.engine.guard import seal_created

    team = Team(tmp_path, exchange)
    run_id = team.start(store, "alice", {"skip": ["tell"]})
    events = store.events(run_id)
    created = dict(events[0].data)
    created.pop("selection")
    created.pop("sealed_by", None)
    created["sealed_by"] = seal_created(run_id, created, team.installation)
    events[0] = type(events[0]).make(run_id, 1, events[0].type, created, events[0].prev,
                                     events[0].ts)  # fmt: skip
    rebuild_run(store, run_id, events, team.installation)
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", (state.status, state.reason)
    assert exchange.halted == set()


def test_irctl_run_only_and_skip_from_the_command_line(tmp_path: Path) -> None:
    from tests.helpers import irctl, keyed_operators, make_workspace, run_id_from

    book = """\
irctl: 1
id: steps
title: Three steps
skip: {roles: [security-lead]}
steps:
  - id: one
    action: notify.console
    with: {message: one}
  - id: two
    action: notify.console
    with: {message: two}
  - id: three
    action: notify.console
    with: {message: three}
"""
    keys = tmp_path / "keys"
    extra = keyed_operators(keys, {"alice": "security-lead"})
    ws = make_workspace(tmp_path / "ws", {"steps": book}, extra=extra)
    env = {"IRCTL_KEY_DIR": str(keys), "IRCTL_OPERATOR": "alice"}
    both = irctl("run", "steps", "--yes", "--only", "one", "--skip", "two", cwd=ws, env=env)
    assert both.returncode == 2, both.stderr
    assert "give --only or --skip, not both" in both.stderr
    unknown = irctl("run", "steps", "--yes", "--only", "one,too", cwd=ws, env=env)
    assert unknown.returncode == 2, unknown.stderr
    assert "has no step 'too'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    listed = irctl("runs", "list", "--json", cwd=ws)
    assert listed.stdout.strip() == "[]"  # nothing recorded by either refusal
    done = irctl("run", "steps", "--yes", "--unattended", "--only", "one,three", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    run_id = run_id_from(done)
    shown = irctl("transcript", "show", run_id, cwd=ws)
    assert "only one, three (chosen by alice at the start" in shown.stdout
    assert "left out at the start by alice (--only)" in shown.stdout
    md = irctl("transcript", "export", run_id, "--format", "md", cwd=ws)
    assert "only one, three (chosen by alice" in md.stdout, md.stderr
    html = irctl("transcript", "export", run_id, "--format", "html", cwd=ws)
    assert "only one, three (chosen by alice" in html.stdout, html.stderr
    verified = irctl("transcript", "verify", run_id, cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr
