"""customer-api-key-2fa-compromise and stolen-funds-tracing, end to end through the engine.

The exchange admin API and the freeze desk are the ExchangeAdminStub, Slack is the
Slack stand-in, both real servers on 127.0.0.1; issuer freezes are read from stablecoins
deployed on the in-process EVM (LocalChain, JSON-RPC on 127.0.0.1). Approvals are signed
with the operators' own keys and manual steps answered as a person would; the outcome is
read back from the stand-ins' recorded state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from irctl_evm.testing import LocalChain

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.state import RunState
from irctl.journal.store import Store
from irctl.record.approvals import ApprovalRejected
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from irctl.testing import ExchangeAdminStub, SlackStandIn
from tests.helpers import approve_as, until_waiting

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "admin-token-7f3a9c"
SLACK_TOKEN = "xoxb-customer-runbooks"
ROLES = {
    "oncall": ["security-oncall"],
    "alice": ["security-lead"],
    "olga": ["ops-lead"],
    "tom": ["cto"],
    "carl": ["cfo"],
    "cleo": ["ceo"],
    "cindy": ["ciso"],
    "colin": ["coo"],
    "lena": ["legal"],
}


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExchangeAdminStub]:
    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN", ADMIN_TOKEN)
    with ExchangeAdminStub(ADMIN_TOKEN) as stub:
        yield stub


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStandIn]:
    monkeypatch.setenv("IRCTL_TEST_SLACK_TOKEN", SLACK_TOKEN)
    with SlackStandIn(token=SLACK_TOKEN) as stand_in:
        stand_in.add_channel("incidents", bot_member=True)
        yield stand_in


class Team:
    """The workspace's operators with their keys, an engine and a store in tmp_path."""

    def __init__(
        self,
        tmp_path: Path,
        exchange: ExchangeAdminStub,
        slack: SlackStandIn,
        mode: str = "live",
        *,
        chain: LocalChain | None = None,
    ) -> None:
        self.mode = mode
        self.keys: dict[str, Ed25519PrivateKey] = {
            name: generate_private_key(tmp_path / f"{name}.key") for name in ROLES
        }
        integrations: dict[str, Any] = {
            "slack": {"token": "env:IRCTL_TEST_SLACK_TOKEN", "base_url": slack.url,
                      "channel": "#incidents"},
        }  # fmt: skip
        variables: dict[str, Any] = {"exchange_admin_url": exchange.url}
        if chain is not None:  # issuer freezes on "ethereum" are read from the local chain
            integrations["evm"] = {"rpc": {"ethereum": chain.url}}
            variables["onchain_freeze_checks"] = ["ethereum"]
        config = Config.model_validate({
            "operators": {
                name: {"roles": roles, "key": public_key_text(self.keys[name])}
                for name, roles in ROLES.items()
            },
            "integrations": integrations,
            "vars": variables,
        })  # fmt: skip
        self.store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
        installation = generate_private_key(tmp_path / "installation.key")
        # The run-status notifier is tested elsewhere; here Slack gets only the steps' posts.
        self.engine = Engine(self.store, config=config, signing_key=installation, notify=False)

    def start(self, runbook: str, params: dict[str, Any], *, incident: str | None = None) -> str:
        text = (ROOT / "runbooks" / f"{runbook}.yaml").read_text(encoding="utf-8")
        parsed = load_runbook_text(text, f"{runbook}.yaml")
        given = {  # as `irctl run -p name=value` gives them
            name: ",".join(value) if isinstance(value, list) else str(value)
            for name, value in params.items()
        }
        typed = parse_params(parsed, given)
        return self.engine.create_run(
            parsed, text, typed, initiator="oncall", incident=incident, mode=self.mode,
            starter_key=self.keys["oncall"],
        )

    def until_waiting(self, run_id: str) -> tuple[RunState, str, str]:
        """Run until it stops; the state, and the step it waits on and for what."""
        return until_waiting(self.engine, run_id)

    def approve(self, run_id: str, key: str, *operators: str) -> None:
        approve_as(self.store, run_id, key, self.keys, *operators)

    def deny(self, run_id: str, key: str, who: str, reason: str) -> None:
        Engine(self.store).decide(
            run_id, key, operator=who, approve=False, reason=reason,
            private_key=self.keys[who],
        )  # fmt: skip

    def answer(self, run_id: str, key: str, answer: str = "done") -> None:
        self.engine.answer(run_id, key, answer, operator="oncall", private_key=self.keys["oncall"])

    def walk(self, run_id: str, expected: list[tuple[str, str]]) -> RunState:
        """Answer or approve each stop in order, checking it is the one expected."""
        state = None
        for key, why in expected:
            state, at, waiting_for = self.until_waiting(run_id)
            assert (at, waiting_for) == (key, why)
            self.answer(run_id, key)
        assert state is not None
        return state


def posted(slack: SlackStandIn) -> list[str]:
    return [m.text for m in slack.messages("#incidents")]


# --- customer-api-key-2fa-compromise --------------------------------------------------------

ATTACKER = "bc1qattackerattackerattackerattackerq0l4n8"


def test_customer_api_key_2fa_compromise(
    exchange: ExchangeAdminStub, slack: SlackStandIn, tmp_path: Path
) -> None:
    exchange.add_user("u1", api_keys=2, sessions=1)
    exchange.add_user("u2", api_keys=1, sessions=3)
    exchange.add_user("u3", api_keys=0, sessions=0)
    team = Team(tmp_path, exchange, slack)
    run_id = team.start(
        "customer-api-key-2fa-compromise",
        {"attackers": ATTACKER, "counterparties": "binance,kraken", "cooldown_hours": "24"},
        incident="INC-42",
    )

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("revoke-api-keys", "approval")
    assert exchange.halted == {"all"}  # the halt needs nobody
    assert exchange.user("u1").api_keys == 2
    with pytest.raises(ApprovalRejected, match="cannot approve"):
        team.approve(run_id, key, "oncall")  # the initiator is not one of the two
    team.approve(run_id, key, "alice")
    assert team.until_waiting(run_id)[1] == "revoke-api-keys"  # one of two is not enough
    assert exchange.user("u2").api_keys == 1
    team.approve(run_id, key, "olga")

    state, key, why = team.until_waiting(run_id)
    assert (key, why) == ("customer-notice", "answer")
    for user in ("u1", "u2", "u3"):
        found = exchange.user(user)
        assert (found.api_keys, found.sessions) == (0, 0)
        assert found.password_reset_required
        assert found.two_fa_reset_required
    assert state.steps["revoke-api-keys"].outputs["json"]["revoked_keys"] == 3
    assert state.steps["end-sessions"].outputs["json"]["ended_sessions"] == 4
    assert exchange.address_cooldown_hours == 24
    assert exchange.labels == {ATTACKER: {"chain": "bitcoin", "label": "attacker INC-42"}}
    requests = exchange.freeze_requests
    assert sorted(r.counterparty for r in requests) == ["binance", "kraken"]
    for request in requests:
        assert request.body["target_address"] == ATTACKER
        assert request.body["addresses"] == [ATTACKER]
        assert request.body["kind"] == "exchange"
        assert "Block deposits" in request.body["action"]
    assert exchange.limits == []  # nothing of the resume yet
    team.answer(run_id, key)

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("cover-losses", "approval")
    with pytest.raises(ApprovalRejected):
        team.approve(run_id, key, "alice")  # the CFO and the CEO, nobody else
    team.approve(run_id, key, "carl", "cleo")
    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("cover-losses", "answer")
    team.answer(run_id, key)
    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("attest-containment", "answer")
    team.answer(run_id, key)

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("resume-withdrawals", "approval")
    assert exchange.limits == [1000.0]  # canary limits first
    assert exchange.halted == {"all"}
    team.approve(run_id, key, "cindy", "carl")
    assert team.until_waiting(run_id)[1] == "resume-withdrawals"  # three of four
    team.approve(run_id, key, "colin")

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("canary-check", "answer")
    assert exchange.halted == set()
    team.answer(run_id, key)
    state = team.engine.execute(run_id)
    assert state.status == "succeeded"
    assert exchange.limits == [1000.0, None]  # normal limits restored last
    texts = posted(slack)
    assert any("Customer API keys and 2FA compromised" in t for t in texts)
    assert any("3 customer API key(s) revoked" in t and "4 session(s) ended" in t for t in texts)
    records = "\n".join(team.store.lines(run_id))
    assert ADMIN_TOKEN not in records
    assert all(r.authorized for r in exchange.requests)
    team.store.close()


def test_a_failed_halt_stops_the_run_before_any_key_is_touched(
    exchange: ExchangeAdminStub, slack: SlackStandIn, tmp_path: Path
) -> None:
    exchange.add_user("u1", api_keys=1, sessions=1)
    exchange.fail_next(3, 503, path="/withdrawals/halt")
    team = Team(tmp_path, exchange, slack)
    run_id = team.start("customer-api-key-2fa-compromise", {})
    state = team.engine.execute(run_id)
    assert state.status == "failed"
    assert state.failed_step == "halt-withdrawals"
    assert len(exchange.requests_to("/withdrawals/halt")) == 3  # retried, then gave up
    assert exchange.user("u1").api_keys == 1
    assert state.steps["page-leads"].status == "succeeded"
    team.store.close()


# --- stolen-funds-tracing -------------------------------------------------------------------

USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
HOPS = [
    {"tx_hash": "0x" + "1" * 64, "from": "0x" + "a" * 40, "to": "0x" + "b" * 40,
     "amount": "4000 ETH", "time": "2026-11-22T01:02:03Z"},
    {"tx_hash": "0x" + "2" * 64, "from": "0x" + "b" * 40, "to": "0x" + "c" * 40,
     "amount": "2100000 USDT", "time": "2026-11-22T01:09:41Z"},
]  # fmt: skip
TARGETS = [
    {"counterparty": "tether", "kind": "issuer", "chain": "ethereum", "token_contract": USDT,
     "address": "0x" + "c" * 40, "balance": "2100000 USDT", "block": 21000000},
    {"counterparty": "circle", "kind": "issuer", "chain": "ethereum", "token_contract": USDC,
     "address": "0x" + "d" * 40, "balance": "300000 USDC", "block": 21000004},
    {"counterparty": "binance", "kind": "exchange", "chain": "ethereum", "token_contract": USDC,
     "address": "0x" + "e" * 40, "balance": "120000 USDC", "block": 21000010},
]  # fmt: skip
CASE = {
    "chain": "ethereum",
    "victim_wallet": "0x" + "a" * 40,
    "attackers": ["0x" + "b" * 40],
    "case_agency": "FBI IC3",
    "case_number": "I-2026-0042",
    "case_jurisdiction": "US-NY",
    "case_officer": "SA Rivera, +1 555 0100",
    "counsel": "Counsel LLP, +1 555 0199",
}


def desk(exchange: ExchangeAdminStub, count: int, stop: threading.Event) -> None:
    """The counterparties: acknowledge each request once all arrived, then freeze on chain."""
    while not stop.is_set() and len(exchange.freeze_requests) < count:
        time.sleep(0.05)
    if stop.is_set():
        return
    exchange.acknowledge()
    time.sleep(0.5)
    for number, request in enumerate(exchange.freeze_requests, 1):
        exchange.confirm_frozen(request.request_id, "0x" + f"{number:064x}")


def test_stolen_funds_tracing(
    exchange: ExchangeAdminStub, slack: SlackStandIn, tmp_path: Path
) -> None:
    exchange.set_case("INC-7", hops=HOPS, targets=TARGETS)
    team = Team(tmp_path, exchange, slack)
    run_id = team.start("stolen-funds-tracing", CASE, incident="INC-7")

    state = team.walk(run_id, [("review-trace", "answer"), ("police-report", "answer")])
    assert exchange.labels == {"0x" + "b" * 40: {"chain": "ethereum", "label": "attacker INC-7"}}
    prompt = state.steps["review-trace"].prompt or ""
    assert "2 hop(s)" in prompt
    assert "3 freeze target(s)" in prompt

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("send-freeze-requests", "approval")
    assert exchange.freeze_requests == []  # nothing goes out before legal signs
    with pytest.raises(ApprovalRejected):
        team.approve(run_id, key, "alice")  # legal statements: legal only
    team.approve(run_id, key, "lena")

    stop = threading.Event()
    counterparties = threading.Thread(target=desk, args=(exchange, 3, stop), daemon=True)
    counterparties.start()
    try:
        state, key, why = team.until_waiting(run_id)
    finally:
        stop.set()
        counterparties.join(5)
    assert (key, why) == ("verify-on-chain", "answer")
    requests = exchange.freeze_requests
    assert sorted(r.counterparty for r in requests) == ["binance", "circle", "tether"]
    by_party = {r.counterparty: r for r in requests}
    for target in TARGETS:
        body = by_party[str(target["counterparty"])].body
        assert body["chain"] == "ethereum"
        assert body["token_contract"] == target["token_contract"]
        assert body["target_address"] == target["address"]
        assert body["balance"] == target["balance"]
        assert body["block"] == target["block"]
        assert body["hops"] == HOPS
        assert body["case"] == {
            "agency": "FBI IC3", "number": "I-2026-0042", "jurisdiction": "US-NY",
            "officer_contact": "SA Rivera, +1 555 0100",
        }  # fmt: skip
        assert body["counsel_contact"] == "Counsel LLP, +1 555 0199"
        assert body["incident"] == "INC-7"
        assert str(target["address"]) in body["action"]
    assert by_party["tether"].body["action"].startswith("Blacklist")
    assert by_party["binance"].body["action"].startswith("Freeze the account")
    assert all(r.status == "frozen" for r in exchange.freeze_requests)
    # sent, acknowledged and frozen are each a step of their own, timed in the journal
    for index in range(3):
        assert state.steps[f"send-freeze-requests[{index}]"].status == "succeeded"
        assert state.steps[f"await-acknowledgement[{index}]"].outputs["value"] is True
        assert state.steps[f"await-frozen[{index}]"].outputs["value"] is True
    on_chain = state.steps["verify-on-chain"].prompt or ""
    assert f"isBlackListed({'0x' + 'c' * 40}) on {USDT}" in on_chain
    assert f"isBlacklisted({'0x' + 'd' * 40}) on {USDC}" in on_chain
    team.answer(run_id, key)

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("bounty", "approval")
    team.approve(run_id, key, "lena")
    team.walk(run_id, [("bounty", "answer")])
    state = team.engine.execute(run_id)
    assert state.status == "succeeded"
    assert "within 15 minutes" in state.steps["repeat"].outputs["message"]
    ids = [r.request_id for r in requests]
    assert any("3 freeze request(s) sent" in t and all(i in t for i in ids) for t in posted(slack))
    team.store.close()


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as running:
        yield running


def onchain_targets(chain: LocalChain) -> list[dict[str, Any]]:
    """TARGETS with the issuers' tokens deployed on the local chain, the addresses funded."""
    found = []
    for target in TARGETS:
        found.append(dict(target))
        if target["kind"] == "issuer":
            holder = chain.new_account().address
            token = chain.deploy_stablecoin(str(target["counterparty"]), supply=10**12,
                                            holder=holder)  # fmt: skip
            found[-1].update(token_contract=token, address=holder)
    return found


def issuers(exchange: ExchangeAdminStub, chain: LocalChain, targets: list[dict[str, Any]],
            stop: threading.Event, *, freeze: bool = True) -> None:  # fmt: skip
    """The counterparties: acknowledge, freeze on chain (the issuers), then report frozen."""
    while not stop.is_set() and len(exchange.freeze_requests) < len(targets):
        time.sleep(0.05)
    if stop.is_set():
        return
    exchange.acknowledge()
    if freeze:
        for target in targets:
            if target["kind"] == "issuer":
                chain.freeze(target["token_contract"], target["address"])
    for number, request in enumerate(exchange.freeze_requests, 1):
        exchange.confirm_frozen(request.request_id, "0x" + f"{number:064x}")


def _through_the_requests(
    team: Team, run_id: str, exchange: ExchangeAdminStub, chain: LocalChain,
    targets: list[dict[str, Any]],
) -> tuple[RunState, str, str]:  # fmt: skip
    team.walk(run_id, [("review-trace", "answer"), ("police-report", "answer")])
    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("send-freeze-requests", "approval")
    team.approve(run_id, key, "lena")
    stop = threading.Event()
    desk = threading.Thread(target=issuers, args=(exchange, chain, targets, stop), daemon=True)
    desk.start()
    try:
        return team.until_waiting(run_id)
    finally:
        stop.set()
        desk.join(5)


def test_issuer_freezes_are_read_on_chain_and_only_the_rest_asked_of_a_person(
    exchange: ExchangeAdminStub, slack: SlackStandIn, chain: LocalChain, tmp_path: Path
) -> None:
    targets = onchain_targets(chain)
    exchange.set_case("INC-9", hops=HOPS, targets=targets)
    team = Team(tmp_path, exchange, slack, chain=chain)
    run_id = team.start("stolen-funds-tracing", CASE, incident="INC-9")
    state, key, why = _through_the_requests(team, run_id, exchange, chain, targets)

    assert (key, why) == ("verify-on-chain", "answer")  # for the exchange's freeze only
    tether, circle = targets[0], targets[1]
    read = state.steps["confirm-issuer-freezes"].outputs["items"]
    assert [(r["token"], r["address"], r["frozen"], r["method"]) for r in read] == [
        (tether["token_contract"], tether["address"], True, "isBlackListed"),
        (circle["token_contract"], circle["address"], True, "isBlacklisted"),
    ]  # fmt: skip
    prompt = state.steps["verify-on-chain"].prompt or ""
    assert "frozen on chain, isBlackListed true at block" in prompt
    assert "frozen on chain, isBlacklisted true at block" in prompt
    assert "call isBlack" not in prompt  # nobody is asked to check what the chain showed
    assert f"the deposit address {'0x' + 'e' * 40} has sent nothing" in prompt
    team.answer(run_id, key)

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("bounty", "approval")
    team.approve(run_id, key, "lena")
    team.walk(run_id, [("bounty", "answer")])
    state = team.engine.execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert any("2 read frozen on chain by irctl, the others confirmed by hand" in t
               for t in posted(slack))  # fmt: skip
    team.store.close()


def test_when_the_chain_shows_every_freeze_nobody_is_asked(
    exchange: ExchangeAdminStub, slack: SlackStandIn, chain: LocalChain, tmp_path: Path
) -> None:
    targets = onchain_targets(chain)[:2]  # the two issuers
    exchange.set_case("INC-10", hops=HOPS, targets=targets)
    team = Team(tmp_path, exchange, slack, chain=chain)
    run_id = team.start("stolen-funds-tracing", CASE, incident="INC-10")
    state, key, why = _through_the_requests(team, run_id, exchange, chain, targets)
    assert (key, why) == ("bounty", "approval")
    assert state.steps["verify-on-chain"].status == "skipped"
    assert [r["frozen"] for r in state.steps["confirm-issuer-freezes"].outputs["items"]] == [
        True, True,
    ]  # fmt: skip
    team.approve(run_id, key, "lena")
    team.walk(run_id, [("bounty", "answer")])
    state = team.engine.execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert any("2 read frozen on chain by irctl." in t for t in posted(slack))
    team.store.close()


def test_legal_denial_sends_no_freeze_request(
    exchange: ExchangeAdminStub, slack: SlackStandIn, tmp_path: Path
) -> None:
    exchange.set_case("INC-8", hops=HOPS, targets=TARGETS[:1])
    team = Team(tmp_path, exchange, slack)
    run_id = team.start("stolen-funds-tracing", CASE, incident="INC-8")
    team.walk(run_id, [("review-trace", "answer"), ("police-report", "answer")])
    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("send-freeze-requests", "approval")
    team.deny(run_id, key, "lena", "the balance is wrong: recheck the block")
    state = team.engine.execute(run_id)
    assert state.status == "failed"
    assert "denied" in (state.steps["send-freeze-requests"].error or "")
    assert exchange.freeze_requests == []
    assert state.steps["page-legal"].status == "succeeded"
    team.store.close()


# --- the quarterly drills, as tabletops ------------------------------------------------------


def _drill_params(drill: str) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load((ROOT / "drills" / f"{drill}.yaml").read_text(encoding="utf-8"))
    params: dict[str, Any] = data["params"]
    return params


@pytest.mark.parametrize(
    ("drill", "runbook", "stops"),
    [
        (
            "quarterly-customer-api-key-2fa-compromise",
            "customer-api-key-2fa-compromise",
            [("revoke-api-keys", ("alice", "tom")), "customer-notice",
             ("cover-losses", ("carl", "cleo")), "cover-losses", "attest-containment",
             ("resume-withdrawals", ("cindy", "carl", "colin")), "canary-check"],
        ),
        (
            "quarterly-stolen-funds-tracing",
            "stolen-funds-tracing",
            # the simulated trace has no targets: nothing to read, nothing to confirm by hand
            ["review-trace", "police-report", ("send-freeze-requests", ("lena",)),
             ("bounty", ("lena",)), "bounty"],
        ),
    ],
)  # fmt: skip
def test_drills_rehearse_without_touching_the_exchange(
    drill: str,
    runbook: str,
    stops: list[Any],
    exchange: ExchangeAdminStub,
    slack: SlackStandIn,
    tmp_path: Path,
) -> None:
    exchange.add_user("u1", api_keys=1, sessions=1)
    team = Team(tmp_path, exchange, slack, mode="tabletop")
    run_id = team.start(runbook, _drill_params(drill))
    for stop in stops:
        _, key, why = team.until_waiting(run_id)
        if isinstance(stop, tuple):
            assert (key, why) == (stop[0], "approval")
            team.approve(run_id, key, *stop[1])
        else:
            assert (key, why) == (stop, "answer")
            team.answer(run_id, key)
    state = team.engine.execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert exchange.requests == []  # simulated, every one
    assert exchange.user("u1").api_keys == 1
    team.store.close()
