"""ddos-overload end to end in sandbox: moto's WAFv2 and Auto Scaling, the exchange stand-in's
traffic and feature desks, the SRE lead's signed approvals.

The attack is on while the run sheds it; the test brings traffic back to normal once the run
has checked it twice, and every change must then be undone exactly: the web ACL's rules as
they were, the API tier's sizes as they were, every shed feature back.  Trading and
withdrawals are never shed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.store import Store
from irctl.record.transcript import verify_run
from irctl.runbook.loader import load_config, load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from irctl.testing import ExchangeAdminStub
from tests.helpers import approve_as, until_waiting
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401
from tests.test_aws_waf import _asg, _sizes, make_acl, rules, web_acl

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "admin-token-ddos"


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExchangeAdminStub]:
    monkeypatch.setenv("SANDBOX_ADMIN_TOKEN", TOKEN)
    with ExchangeAdminStub(TOKEN) as stub:
        yield stub


def _calm_after(exchange: ExchangeAdminStub, reads: int, stop: threading.Event) -> None:
    """Traffic back to normal once the run has read it ``reads`` times."""
    while not stop.wait(0.01):
        if len(exchange.requests_to("/traffic", "GET")) >= reads:
            exchange.set_traffic(900, error_rate=0.0)
            return


def test_an_overload_is_shed_and_every_change_undone(
    aws: dict[str, Any], tmp_path: Path, exchange: ExchangeAdminStub,
) -> None:  # fmt: skip
    waf = make_acl(aws)
    asg = _asg(aws)  # the API tier: min 2, max 4, desired 2
    before = web_acl(waf)["Rules"]
    exchange.set_traffic(45_000, capacity_rps=5000, error_rate=0.22)
    keys = {name: generate_private_key(tmp_path / f"{name}.key") for name in ("oncall", "sam")}
    roles = {"oncall": ["security-oncall"], "sam": ["sre-lead"]}
    library = load_config(ROOT / "irctl.yaml").vars
    config = Config.model_validate({
        "operators": {n: {"roles": roles[n], "key": public_key_text(k)} for n, k in keys.items()},
        "integrations": {"aws": aws},
        "secrets": {"admin_token": "env:SANDBOX_ADMIN_TOKEN"},
        "vars": {
            "exchange_admin_url": exchange.url,
            "overload": {**library["overload"], "api_group": "api"},
        },
    })  # fmt: skip
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    installation = generate_private_key(tmp_path / "installation.key")
    # five minutes between traffic checks is the runbook's; a tenth of a second stands for it
    engine = Engine(store, config=config, signing_key=installation, notify=False,
                    sleep=lambda s: time.sleep(min(s, 0.1)))  # fmt: skip
    text = (ROOT / "runbooks" / "ddos-overload.yaml").read_text(encoding="utf-8")
    model = load_runbook_text(text, "ddos-overload.yaml")
    params = parse_params(model, {"attack_cidrs": "203.0.113.0/24", "rate_limit": "1000",
                                  "api_min": "3", "api_max": "4"})  # fmt: skip
    run_id = engine.create_run(model, text, params, initiator="oncall", mode="sandbox",
                               starter_key=keys["oncall"])  # fmt: skip
    stop = threading.Event()
    calm = threading.Thread(target=_calm_after, args=(exchange, 3, stop), daemon=True)
    calm.start()
    try:
        state, key, why = until_waiting(engine, run_id)
        assert (key, why) == ("scale-api", "approval")
        shed = rules(waf)  # the shield is up before anyone is asked for capacity
        assert shed["irctl-rate-api"]["Statement"]["RateBasedStatement"]["Limit"] == 1000
        assert "Block" in shed[state.steps["block-attackers"].outputs["rule_name"]]["Action"]
        approve_as(store, run_id, key, keys, "sam")
        state, key, why = until_waiting(engine, run_id)
        assert (key, why) == ("degrade", "approval")
        assert _sizes(asg) == (3, 4, 3)
        approve_as(store, run_id, key, keys, "sam")
        state = engine.execute(run_id)
    finally:
        stop.set()
        calm.join(5)
    failed = {k: s.error for k, s in state.steps.items() if s.status == "failed"}
    assert state.status == "succeeded", (state.status, failed)
    waited = state.steps["wait-for-normal"]
    assert waited.outputs["json"]["normal"] is True
    # every change undone, as each step recorded what it replaced
    assert web_acl(waf)["Rules"] == before
    assert _sizes(asg) == (2, 4, 2)
    desks = exchange.desks
    assert desks.degraded == []
    shed_features = [r.json["features"] for r in exchange.requests_to("/features/degrade")]
    assert shed_features == [library["overload"]["degrade"]]
    assert not {"trading", "withdrawals"} & set(shed_features[0])
    titles = [a["title"] for a in desks.announcements]
    assert titles == ["Degraded performance", "Resolved"]
    report = verify_run(store, run_id, [public_key_text(installation)])
    assert report.ok, report.problems
    store.close()


def test_the_exchange_refuses_to_shed_a_core_feature_and_the_step_fails(
    aws: dict[str, Any], tmp_path: Path, exchange: ExchangeAdminStub,
) -> None:  # fmt: skip
    """A workspace whose degrade list names withdrawals: the stand-in refuses, the step fails,
    nothing is shed, and the run's compensation pages the SRE lead."""
    make_acl(aws)
    asg = _asg(aws)
    keys = {name: generate_private_key(tmp_path / f"{name}.key") for name in ("oncall", "sam")}
    roles = {"oncall": ["security-oncall"], "sam": ["sre-lead"]}
    library = load_config(ROOT / "irctl.yaml").vars
    config = Config.model_validate({
        "operators": {n: {"roles": roles[n], "key": public_key_text(k)} for n, k in keys.items()},
        "integrations": {"aws": aws},
        "secrets": {"admin_token": "env:SANDBOX_ADMIN_TOKEN"},
        "vars": {"exchange_admin_url": exchange.url,
                 "overload": {**library["overload"], "api_group": "api",
                              "degrade": ["charts", "withdrawals"]}},
    })  # fmt: skip
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store, config=config, notify=False)
    text = (ROOT / "runbooks" / "ddos-overload.yaml").read_text(encoding="utf-8")
    model = load_runbook_text(text, "ddos-overload.yaml")
    run_id = engine.create_run(model, text, parse_params(model, {}), initiator="oncall",
                               mode="sandbox", starter_key=keys["oncall"])  # fmt: skip
    for step in ("scale-api", "degrade"):
        _, key, why = until_waiting(engine, run_id)
        assert (key, why) == (step, "approval")
        approve_as(store, run_id, key, keys, "sam")
    state = engine.execute(run_id)
    assert state.status == "failed"
    assert state.failed_step == "degrade"
    assert "cannot be degraded" in str(state.steps["degrade"].error)
    assert exchange.desks.degraded == []
    assert state.steps["page-sre"].status == "succeeded"
    assert _sizes(asg) == (12, 40, 12)  # the scale-up stays: a person decides what to undo
    store.close()


def test_the_sandbox_drill_rehearses_against_real_parts_and_scores(
    aws: dict[str, Any], tmp_path: Path, exchange: ExchangeAdminStub,
) -> None:  # fmt: skip
    """drills/sandbox-ddos-overload.yaml through the drill runner, with a sandbox config (as
    `irctl drill run --sandbox FILE` reads it): every action for real against moto and the
    exchange stand-in, the participants approving, the objectives scored."""
    from irctl.drills.drill import drive_drill, find_drill, sandbox_config, score, start_drill
    from tests.test_drills import INITIATOR, People, make_drill_workspace

    waf = make_acl(aws)
    asg = _asg(aws)
    before = web_acl(waf)["Rules"]
    exchange.set_traffic(45_000, capacity_rps=5000, error_rate=0.22)
    ws, team = make_drill_workspace(tmp_path / "ws", exchange_url=exchange.url, aws_config=aws)
    drill, _ = find_drill(ws.drills_dir, "sandbox-ddos-overload")
    library = load_config(ROOT / "irctl.yaml").vars
    sandbox = Config.model_validate({
        "integrations": {"aws": aws},
        "secrets": {"admin_token": "env:SANDBOX_ADMIN_TOKEN"},
        "vars": {"exchange_admin_url": exchange.url,
                 "overload": {**library["overload"], "api_group": "api"}},
    })  # fmt: skip
    config = sandbox_config(ws.config, sandbox, drill)
    engine = Engine(ws.store, config=config, signing_key=ws.signing_key(), workspace=ws.root,
                    notify=False, sleep=lambda s: time.sleep(min(s, 0.1)))  # fmt: skip
    text = (ws.root / "runbooks" / "ddos-overload.yaml").read_text(encoding="utf-8")
    run_id = start_drill(engine, drill, load_runbook_text(text, "ddos-overload.yaml"), text,
                         initiator=INITIATOR, time_scale=0.002)  # fmt: skip
    stop = threading.Event()
    calm = threading.Thread(target=_calm_after, args=(exchange, 3, stop), daemon=True)
    calm.start()
    try:
        with People(ws, run_id, team):
            state = drive_drill(engine, run_id, say=lambda _: None, time_limit=60, poll=0.1,
                                slack=False)  # fmt: skip
    finally:
        stop.set()
        calm.join(5)
    assert state.status == "succeeded", [(k, s.error) for k, s in state.steps.items()]
    assert state.mode == "sandbox"
    assert web_acl(waf)["Rules"] == before  # rehearsed for real, and rolled back
    assert _sizes(asg) == (2, 4, 2)
    assert exchange.desks.degraded == []
    card = score(ws.store.events(run_id))
    drilled = {o.target: o.met for o in card.objectives if o.kind == "step"}
    assert drilled == {"rate-limit": True, "scale-api-back": True}, card.objectives
