"""``irctl retry``: a failed run taken up again at its failed step, approvals kept while the
step's inputs are the same, asked again when they changed.

The exchange's admin API (the stand-in, on 127.0.0.1) answers 503 to the halt until it is
back; the halt needs a security lead's approval.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.errors import UsageError
from irctl.identity import generate_private_key, public_key_text
from irctl.journal import events as ev
from irctl.journal.store import Store
from irctl.record.transcript import verify_run
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.testing import ExchangeAdminStub
from tests.helpers import approve_as, until_waiting

TOKEN = "admin-token-retry"
RUNBOOK = """\
irctl: 1
id: halt
title: Halt withdrawals
params:
  chain: {type: string}
secrets:
  admin_token: env:RETRY_ADMIN_TOKEN
approvals:
  lead: {quorum: 1, roles: [security-lead]}
steps:
  - id: halt
    action: http.request
    approval: lead
    retry: {attempts: 2, backoff: 0.05s}
    with:
      method: POST
      url: "{{ vars.exchange_admin_url }}/withdrawals/halt"
      headers: {Authorization: "Bearer {{ secrets.admin_token }}"}
      json: {chain: "{{ params.chain }}", reason: "{{ vars.reason }}"}
      expect_status: [200]
  - id: tell
    action: notify.console
    with: {message: "withdrawals halted on {{ params.chain }}"}
on_failure:
  - id: page
    action: notify.console
    with: {message: "halt failed at {{ run.failed_step }}"}
"""


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExchangeAdminStub]:
    monkeypatch.setenv("RETRY_ADMIN_TOKEN", TOKEN)
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
        self.vars = {"exchange_admin_url": exchange.url, "reason": "security incident"}

    def engine(self, store: Store) -> Engine:
        config = Config.model_validate({
            "installation_key": public_key_text(self.installation),
            "operators": {n: {"roles": self.roles[n], "key": public_key_text(k)}
                          for n, k in self.keys.items()},
            "vars": self.vars,
        })  # fmt: skip
        return Engine(store, config=config, signing_key=self.installation, notify=False)

    def failed_halt(self, store: Store, exchange: ExchangeAdminStub) -> str:
        """A live run whose approved halt failed on 503s: the run failed at 'halt'."""
        model = load_runbook_text(RUNBOOK, "halt.yaml")
        engine = self.engine(store)
        run_id = engine.create_run(model, RUNBOOK, {"chain": "ethereum"}, initiator="oncall",
                                   starter_key=self.keys["oncall"])  # fmt: skip
        _, key, why = until_waiting(engine, run_id)
        assert (key, why) == ("halt", "approval")
        approve_as(store, run_id, key, self.keys, "alice")
        exchange.fail_next(2, 503, path="/withdrawals/halt")
        state = engine.execute(run_id)
        assert (state.status, state.failed_step) == ("failed", "halt")
        assert exchange.halted == set()
        return run_id

    def retry(self, store: Store, run_id: str, **kw: Any) -> list[str]:
        return self.engine(store).retry(run_id, operator="oncall", private_key=self.keys["oncall"],
                                        reason="the admin API is back", **kw)  # fmt: skip


def _kinds(store: Store, run_id: str) -> list[str]:
    return [e.type for e in store.events(run_id)]


def test_a_failed_halt_is_retried_from_that_step_with_its_approval_kept(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    run_id = team.failed_halt(store, exchange)
    assert team.retry(store, run_id) == ["halt"]
    state = team.engine(store).execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert exchange.halted == {"ethereum"}
    kinds = _kinds(store, run_id)
    assert kinds.count("approval.requested") == 1  # the approval of the same inputs counted
    assert kinds.count("run.retried") == 1
    assert kinds.count("run.failed") == 1
    assert kinds.count("run.succeeded") == 1
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems
    assert report.signed_acts == 1  # the retry, signed by oncall


def test_a_retried_step_whose_inputs_changed_asks_for_approval_again(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    run_id = team.failed_halt(store, exchange)
    team.vars["reason"] = "security incident INC-7"  # irctl.yaml changed meanwhile
    team.retry(store, run_id)
    state, key, why = until_waiting(team.engine(store), run_id)
    assert (key, why) == ("halt", "approval")
    assert exchange.halted == set()  # the old approval does not cover the new inputs
    assert state.steps["halt"].approval is not None
    assert state.steps["halt"].approval["changed"]
    approve_as(store, run_id, key, team.keys, "alice")
    state = team.engine(store).execute(run_id)
    assert state.status == "succeeded"
    assert exchange.halted == {"ethereum"}


def test_retry_is_refused_where_there_is_nothing_to_retry(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    run_id = team.failed_halt(store, exchange)
    with pytest.raises(UsageError, match=r"step 'tell' of run .* did not stop it"):
        team.retry(store, run_id, step="tell")
    with pytest.raises(UsageError, match="signed with oncall's own key"):
        team.engine(store).retry(run_id, operator="oncall")
    team.retry(store, run_id)
    team.engine(store).execute(run_id)
    with pytest.raises(UsageError, match="succeeded, not failed or aborted"):
        team.retry(store, run_id)


def test_an_unsigned_retry_written_around_irctl_stops_the_run(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    """An insider with the installation key takes a failed run up again in oncall's name."""
    team = Team(tmp_path, exchange)
    run_id = team.failed_halt(store, exchange)
    bad = team.engine(store).record(run_id, ev.RUN_RETRIED, {"steps": ["halt"], "by": "oncall"})
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", (state.status, state.reason)
    assert exchange.halted == set()
    assert "retry by oncall is not signed" in str(state.reason)
    assert bad.seq > 0


def test_irctl_retry_continues_a_failed_run(tmp_path: Path) -> None:
    from tests.helpers import irctl, keyed_operators, make_workspace, run_id_from

    marker = tmp_path / "admin-api-back"
    flaky = f"""\
irctl: 1
id: flaky
title: Flaky halt
steps:
  - id: halt
    action: shell.exec
    with: {{argv: [sh, -c, "test -f {marker}"]}}
  - id: tell
    action: notify.console
    with: {{message: halted}}
"""
    keys = tmp_path / "keys"
    extra = keyed_operators(keys, {"oncall": "security-oncall"})
    ws = make_workspace(tmp_path / "ws", {"flaky": flaky}, extra=extra)
    env = {"IRCTL_KEY_DIR": str(keys), "IRCTL_OPERATOR": "oncall"}
    failed = irctl("run", "flaky", "--yes", "--unattended", cwd=ws, env=env)
    assert failed.returncode == 1, failed.stderr
    run_id = run_id_from(failed)
    marker.touch()  # the admin API is back
    retried = irctl("retry", run_id, "--reason", "admin API back", "--unattended", cwd=ws, env=env)
    assert retried.returncode == 0, retried.stderr
    assert f"run {run_id} taken up again at halt" in retried.stderr
    shown = irctl("transcript", "show", run_id, cwd=ws)
    assert "taken up again at halt" in shown.stdout
    verified = irctl("transcript", "verify", run_id, cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- irctl skip --------------------------------------------------------------------------------

SKIPPABLE = RUNBOOK.replace(
    "approvals:\n", "skip: {roles: [security-lead]}\napprovals:\n"
).replace(
    "  - id: tell\n    action: notify.console\n",
    "  - id: tell\n    action: notify.console\n    skip: never\n",
)


def _failed_skippable(team: Team, store: Store, exchange: ExchangeAdminStub) -> str:
    model = load_runbook_text(SKIPPABLE, "halt.yaml")
    engine = team.engine(store)
    run_id = engine.create_run(model, SKIPPABLE, {"chain": "ethereum"}, initiator="oncall",
                               starter_key=team.keys["oncall"])  # fmt: skip
    _, key, _ = until_waiting(engine, run_id)
    approve_as(store, run_id, key, team.keys, "alice")
    exchange.fail_next(2, 503, path="/withdrawals/halt")
    assert engine.execute(run_id).status == "failed"
    return run_id


def test_a_failed_step_is_skipped_by_a_role_the_runbook_allows_and_the_run_goes_on(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    run_id = _failed_skippable(team, store, exchange)
    engine = team.engine(store)
    with pytest.raises(UsageError, match=r"oncall \(roles: security-oncall\) may not skip"):
        engine.skip(run_id, "halt", reason="halted by hand", operator="oncall",
                    private_key=team.keys["oncall"])  # fmt: skip
    engine.skip(run_id, "halt", reason="halted by hand in the admin console", operator="alice",
                private_key=team.keys["alice"])  # fmt: skip
    state = team.engine(store).execute(run_id)
    assert state.status == "succeeded"
    assert state.steps["halt"].status == "skipped"
    assert state.steps["halt"].error == "skipped by alice: halted by hand in the admin console"
    assert state.steps["tell"].status == "succeeded"
    assert exchange.halted == set()  # skipped: irctl did not halt it
    report = verify_run(store, run_id, [public_key_text(team.installation)])
    assert report.ok, report.problems


def test_a_step_marked_never_and_a_runbook_without_skip_refuse_every_skip(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    team = Team(tmp_path, exchange)
    plain = team.failed_halt(store, exchange)  # its runbook names nobody under skip:
    with pytest.raises(UsageError, match="names nobody who may skip a step"):
        team.engine(store).skip(plain, "halt", reason="x", operator="alice",
                                private_key=team.keys["alice"])  # fmt: skip
    from irctl.engine.acts import skip_problem

    model = load_runbook_text(SKIPPABLE, "halt.yaml")
    operators = {"alice": {"roles": ["security-lead"]}}
    assert "skip: never" in str(skip_problem(model, operators, "tell", "alice"))


def test_a_skip_written_around_irctl_by_a_role_not_allowed_stops_the_run(
    store: Store, tmp_path: Path, exchange: ExchangeAdminStub
) -> None:
    """oncall signs a skip with their own key, written with the installation key around the
    CLI's role check: the engine re-checks the runbook's skip: rule and stops the run."""
    from irctl.record.approvals import sign_act

    team = Team(tmp_path, exchange)
    run_id = _failed_skippable(team, store, exchange)
    data = sign_act(team.keys["oncall"], run_id, ev.STEP_WAIVED,
                    {"step": "halt", "by": "oncall", "reason": "nothing to see"})  # fmt: skip
    team.engine(store).record(run_id, ev.STEP_WAIVED, data)
    state = team.engine(store).execute(run_id)
    assert state.status == "tampered", (state.status, state.reason)
    assert "a skip irctl would refuse" in str(state.reason)
    assert "tell" not in state.steps  # nothing past the forged skip ran
