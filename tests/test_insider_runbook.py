"""insider-withdrawal-abuse end to end in sandbox: moto's S3 (Object Lock), IAM and KMS, the
exchange stand-in's staff and ledger desks, the local chain, and real signed approvals.

ops-admin-7 approved withdrawals of their own; mallory is the irctl operator they are, a
security lead whom the runbook excludes.  Every effect is read back from the server that
holds it: S3's objects and their lock, IAM's inline policies, KMS's grants, the stand-in's
staff desk and the chain's balances.

=====  ===  ====  ====  =====================
asset  hot  cold  owed  reconcile
=====  ===  ====  ====  =====================
ETH    30   70    80    1.25: covered
ETH    30   70    125   0.8: the shortfall step
=====  ===  ====  ====  =====================

moto 5.2 has no CloudTrail LookupEvents: the loopback proxy of tests/aws_proxy.py answers it
(with events shaped as AWS documents them) and forwards everything else to moto unchanged.
What moto cannot show, and is therefore read as a document rather than seen denied: the
quarantine's effect on a call (moto enforces IAM only after a server-wide reset-auth, which
the other tests sharing the server would feel) and on older sessions (moto issues no session
whose TokenIssueTime the deny could match).
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from irctl_evm.testing import Account, LocalChain

from irctl.engine.engine import Engine
from irctl.errors import UsageError
from irctl.identity import generate_private_key, public_key_text
from irctl.journal import events as ev
from irctl.journal.state import fold
from irctl.journal.store import Store
from irctl.record.approvals import ApprovalRejected
from irctl.record.transcript import verify_run
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from irctl.testing import ExchangeAdminStub
from tests.aws_proxy import AwsProxy, aws_proxy  # noqa: F401
from tests.helpers import approve_as, until_waiting
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
ETHER = 10**18
TOKEN = "admin-token-insider"
EXCHANGE = "Example Exchange"
BUCKET = "ir-evidence-sandbox"
SUSPECT = "ops-admin-7"
ROLES_ASSUMED = ["withdrawal-approver", "ledger-admin"]
LOOKUP = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
QUARANTINE = "irctl-quarantine"
SAFE_OWNER = "0x00000000000000000000000000000000000bad07"
ROLES = {
    "lead": ["security-lead"], "lee": ["security-lead"], "mallory": ["security-lead"],
    "lena": ["legal"], "cindy": ["ciso"], "cleo": ["ceo"],
}  # fmt: skip
AUDIT: list[dict[str, Any]] = [
    {"at": "2026-03-02T02:14:00Z", "action": "withdrawal.approve", "id": "w-9001",
     "usd": 48000},
    {"at": "2026-03-02T02:31:00Z", "action": "ledger.adjust", "account": "acct-55",
     "ticket": None},
]  # fmt: skip


@pytest.fixture(scope="module")
def chain() -> Any:
    with LocalChain() as started:
        yield started


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SANDBOX_ADMIN_TOKEN", TOKEN)
    with ExchangeAdminStub(TOKEN) as stub:
        yield stub


class Trail:
    """LookupEvents for the suspect: what CloudTrail recorded of them, newest first."""

    def __init__(self) -> None:
        now = datetime.now(UTC).timestamp()
        self.events = [
            {
                "EventId": f"ev-{i:03d}", "EventName": name, "ReadOnly": "false",
                "AccessKeyId": "AKIAOPSADMIN7EXAMPLE", "EventTime": now - 3600 * i,
                "EventSource": source, "Username": SUSPECT,
                "CloudTrailEvent": json.dumps({"eventID": f"ev-{i:03d}", "eventName": name,
                                               "userIdentity": {"userName": SUSPECT}}),
            }
            for i, (name, source) in enumerate([
                ("AssumeRole", "sts.amazonaws.com"), ("Decrypt", "kms.amazonaws.com"),
                ("PutParameter", "ssm.amazonaws.com"),
            ])
        ]  # fmt: skip
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(request)
        return 200, {"Events": self.events}


def _statement(account: Account) -> dict[str, str]:
    message = f"{EXCHANGE} controls {account.address} (cold storage) on local, statement."
    signed = EthAccount.sign_message(encode_defunct(text=message), private_key=account.private_key)
    return {"address": account.address, "chain": "local", "message": message,
            "signature": "0x" + bytes(signed.signature).hex()}  # fmt: skip


def _role(iam: Any, name: str) -> str:
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}  # fmt: skip
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
               ["Role"]["Arn"])  # fmt: skip


class Insider:
    """A sandbox workspace and the systems the suspect reaches, before anything is done:
    the exchange admin account ops-admin-7 (3 sessions, 5 approved withdrawals not yet
    left), their IAM user and two roles, two KMS grants to the user and one to the signer
    service, a hot wallet of 30 ETH and cold storage of 70, the ledger owing ``owed`` ETH.
    The run is created by the security lead ``lead``, not executed."""

    def __init__(
        self, tmp_path: Path, chain: LocalChain, exchange: ExchangeAdminStub,
        proxy: AwsProxy, through: dict[str, Any], aws: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, owed: int,
    ) -> None:  # fmt: skip
        self.chain, self.exchange = chain, exchange
        self.trail = proxy.answer[LOOKUP] = Trail()
        self.s3, self.iam, self.kms = boto("s3", aws), boto("iam", aws), boto("kms", aws)
        self.s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        self.user_arn = self.iam.create_user(UserName=SUSPECT)["User"]["Arn"]
        self.iam.create_user(UserName="ops-admin-2")  # a colleague: left alone
        for role in ROLES_ASSUMED:
            _role(self.iam, role)
        self.signer_arn = _role(self.iam, "withdrawal-signer")
        key = self.kms.create_key(Description="withdrawal approvals")
        self.key_id = key["KeyMetadata"]["KeyId"]
        self.kms.create_alias(AliasName="alias/withdrawal-approvals", TargetKeyId=self.key_id)
        for operations in (["Sign"], ["Decrypt", "GenerateDataKey"]):
            self.kms.create_grant(KeyId=self.key_id, GranteePrincipal=self.user_arn,
                                  Operations=operations)  # fmt: skip
        self.service_grant = self.kms.create_grant(
            KeyId=self.key_id, GranteePrincipal=self.signer_arn, Operations=["Sign"]
        )["GrantId"]
        exchange.add_staff(SUSPECT, sessions=3, approved_pending=5, audit=AUDIT)
        exchange.add_staff("ops-admin-2", sessions=2, approved_pending=1)
        exchange.set_liabilities({"ETH": (owed * ETHER, 18)})

        self.hot, self.cold = chain.new_account(ether=30), chain.new_account(ether=70)
        ws = tmp_path / "ws"
        (ws / "reserves").mkdir(parents=True)
        (ws / "hot.key").write_text(self.hot.keyfile_text(), encoding="utf-8")
        (ws / "reserves" / "cold-statements.yaml").write_text(
            yaml.safe_dump({"statements": [_statement(self.cold)]}), encoding="utf-8"
        )
        self.installation = generate_private_key(ws / ".irctl" / "installation.key")
        keys = {name: generate_private_key(tmp_path / f"{name}.key") for name in ROLES}
        evm = {"rpc": {"local": chain.url}, "chain_id": {"local": chain.chain_id},
               "signer": {"local": {"kind": "keyfile", "path": "hot.key"}}}  # fmt: skip
        config_data: dict[str, Any] = {
            "installation_key": public_key_text(self.installation),
            "operators": {
                n: {"roles": r, "key": public_key_text(keys[n])} for n, r in ROLES.items()
            },
            "break_glass": {"roles": ["security-lead", "ciso"]},  # mallory may, elsewhere
            "integrations": {"aws": through, "evm": evm, "reserves": evm},
            "secrets": {"admin_token": "env:SANDBOX_ADMIN_TOKEN"},  # never production's
            "vars": {
                "exchange_admin_url": exchange.url,
                "evidence": {"bucket": BUCKET, "retain": "2555d"},
                "reserves": {
                    "exchange": EXCHANGE,
                    "wallets": [
                        {"chain": "local", "address": self.hot.address, "kind": "hot"},
                        {"chain": "local", "address": self.cold.address, "kind": "cold"},
                    ],
                    "assets": {"ETH": "native"},
                    "statements": "reserves/cold-statements.yaml",
                },
            },
        }  # fmt: skip
        (ws / "irctl.yaml").write_text(yaml.safe_dump(config_data), encoding="utf-8")
        monkeypatch.chdir(ws)
        monkeypatch.setenv("IRCTL_WORKSPACE", str(ws))

        self.store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
        self.engine = Engine(
            self.store, config=Config.model_validate(config_data),
            signing_key=self.installation, workspace=ws, notify=False,
            sleep=lambda s: time.sleep(min(s, 0.1)),
        )  # fmt: skip
        text = (ROOT / "runbooks" / "insider-withdrawal-abuse.yaml").read_text(encoding="utf-8")
        self.model = load_runbook_text(text, "insider-withdrawal-abuse.yaml")
        self.text, self.keys = text, keys
        self.params = parse_params(self.model, {
            "suspect_staff": SUSPECT, "suspect_iam_user": SUSPECT,
            "suspect_roles": ",".join(ROLES_ASSUMED), "suspect_operator": "mallory",
            "suspect_safe_owner": SAFE_OWNER, "kms_key": "alias/withdrawal-approvals",
            "suspect_principal_arn": self.user_arn,
            "four_eyes_usd": "10000", "since": "30d",
        })  # fmt: skip
        self.run_id = self.start("lead")

    def start(self, initiator: str) -> str:
        return self.engine.create_run(
            self.model, self.text, self.params, initiator=initiator, mode="sandbox",
            incident="INC-4242", starter_key=self.keys[initiator],
        )  # fmt: skip

    def refused(self, key: str) -> None:
        """mallory's approval of ``key`` is refused, with break-glass too; she cannot abort."""
        with pytest.raises(ApprovalRejected, match="runbook excludes them"):
            approve_as(self.store, self.run_id, key, self.keys, "mallory")
        with pytest.raises(ApprovalRejected, match=r"excludes them .* even with break-glass"):
            self.engine.decide(self.run_id, key, operator="mallory", approve=True,
                               reason="it cannot wait", private_key=self.keys["mallory"],
                               break_glass=True)  # fmt: skip
        with pytest.raises(UsageError, match="mallory may not abort"):
            self.engine.abort(self.run_id, reason="false alarm", operator="mallory",
                              private_key=self.keys["mallory"])  # fmt: skip

    # the state of the real servers

    def objects(self) -> dict[str, dict[str, Any]]:
        """The bucket's objects, each read back with its lock."""
        listed = self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        found = {}
        for entry in listed:
            obj = self.s3.get_object(Bucket=BUCKET, Key=entry["Key"])
            found[entry["Key"]] = {**obj, "Body": obj["Body"].read()}
        return found

    def quarantine(self, kind: str, name: str) -> Any:
        try:
            if kind == "role":
                return self.iam.get_role_policy(RoleName=name, PolicyName=QUARANTINE)
            return self.iam.get_user_policy(UserName=name, PolicyName=QUARANTINE)
        except self.iam.exceptions.NoSuchEntityException:
            return None

    def grants(self) -> dict[str, str]:
        held = self.kms.list_grants(KeyId=self.key_id)["Grants"]
        return {g["GrantId"]: g["GranteePrincipal"] for g in held}

    def journal_order(self) -> dict[tuple[str, str], int]:
        """The seq of each step's first ``step.started`` and its ``step.succeeded``."""
        found: dict[tuple[str, str], int] = {}
        for event in self.store.events(self.run_id):
            if event.type in (ev.STEP_STARTED, ev.STEP_SUCCEEDED):
                found.setdefault((str(event.data.get("step")), event.type), event.seq)
        return found

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def insider_at(
    tmp_path: Path, chain: LocalChain, exchange: ExchangeAdminStub,
    aws_proxy: tuple[AwsProxy, dict[str, Any]], aws: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:  # fmt: skip
    made: list[Insider] = []

    def make(owed: int) -> Insider:
        proxy, through = aws_proxy
        made.append(Insider(tmp_path, chain, exchange, proxy, through, aws, monkeypatch, owed))
        return made[-1]

    yield make
    for insider in made:
        insider.close()


def _evidence_before_any_change(insider: Insider) -> None:
    """At the containment approval: both documents are under COMPLIANCE lock in S3, and
    nothing of the suspect's access has changed anywhere."""
    exchange, objects = insider.exchange, insider.objects()
    trail_key = f"INC-4242/cloudtrail-{SUSPECT}.json"  # under the incident, not the run id
    audit_key = f"INC-4242/admin-audit-{SUSPECT}.json"
    assert set(objects) == {trail_key, audit_key}
    soon = datetime.now(UTC) + timedelta(days=2554)
    for obj in objects.values():
        assert obj["ObjectLockMode"] == "COMPLIANCE"
        assert obj["ObjectLockRetainUntilDate"] > soon  # seven years
    trail = json.loads(objects[trail_key]["Body"])
    assert [e["EventId"] for e in trail["events"]] == ["ev-000", "ev-001", "ev-002"]
    assert trail["query"]["lookup_attributes"] == [
        {"AttributeKey": "Username", "AttributeValue": SUSPECT}
    ]
    (asked,) = insider.trail.requests
    assert abs((asked["EndTime"] - asked["StartTime"]) - 30 * 86400) < 1  # since: 30d
    audit = json.loads(objects[audit_key]["Body"])
    assert audit == {"staff": SUSPECT, "entries": AUDIT}  # the log as the exchange gave it

    # nothing changed yet: the exchange was only read, IAM and KMS are as they were
    assert [(r.method, r.path) for r in exchange.requests] == [("GET", "/admin/audit-log")]
    staff = exchange.desks.staff[SUSPECT]
    assert (staff.suspended, staff.sessions, staff.approved_pending) == (False, 3, 5)
    assert exchange.desks.four_eyes_usd is None
    assert insider.quarantine("user", SUSPECT) is None
    assert all(insider.quarantine("role", role) is None for role in ROLES_ASSUMED)
    assert len(insider.grants()) == 3

    # the locked version cannot be deleted
    version = objects[trail_key]["VersionId"]
    with pytest.raises(ClientError) as denied:
        insider.s3.delete_object(Bucket=BUCKET, Key=trail_key, VersionId=version)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    kept = insider.s3.get_object(Bucket=BUCKET, Key=trail_key, VersionId=version)
    assert kept["Body"].read() == objects[trail_key]["Body"]


def _get(exchange: ExchangeAdminStub, path: str) -> Any:
    """What the stand-in's own API answers (loopback, with its token)."""
    request = urllib.request.Request(exchange.url + path, headers=exchange.auth_header)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _access_cut(insider: Insider) -> None:
    """After containment: read back from the exchange, IAM and KMS."""
    exchange = insider.exchange
    status = _get(exchange, f"/admin/staff/status?staff={SUSPECT}")
    assert (status["suspended"], status["sessions"]) == (True, 0)
    assert _get(exchange, "/withdrawals/four-eyes") == {"active": True, "threshold_usd": 10000.0}
    desks = exchange.desks
    assert (desks.staff[SUSPECT].approved_pending, desks.staff[SUSPECT].held) == (0, 5)
    colleague = desks.staff["ops-admin-2"]
    assert (colleague.suspended, colleague.sessions, colleague.approved_pending) == (False, 2, 1)

    for kind, name in [("user", SUSPECT)] + [("role", role) for role in ROLES_ASSUMED]:
        found = insider.quarantine(kind, name)
        assert found is not None, (kind, name)
        deny, older = found["PolicyDocument"]["Statement"]
        assert (deny["Effect"], deny["Action"], deny["Resource"]) == ("Deny", "*", "*")
        assert "Condition" not in deny
        assert "aws:TokenIssueTime" in older["Condition"]["DateLessThan"]  # sessions revoked
    assert insider.quarantine("user", "ops-admin-2") is None

    # ListGrants: the suspect's two grants are gone, the signer service keeps its own
    assert insider.grants() == {insider.service_grant: insider.signer_arn}


def _reconciled(insider: Insider, chain: LocalChain, owed: int) -> dict[str, Any]:
    """The reconcile step's outputs, checked against the chain's balances and the ledger
    the stand-in served."""
    assert len(insider.exchange.requests_to("/ledger/liabilities", "GET")) == 1
    held = chain.balance(insider.hot.address) + chain.balance(insider.cold.address)
    assert held == 100 * ETHER
    outputs: dict[str, Any] = fold(insider.store.events(insider.run_id)).steps["reconcile"].outputs
    eth = outputs["assets"]["ETH"]
    assert (eth["reserves"], eth["liabilities"]) == (str(held), str(owed * ETHER))
    assert Decimal(eth["ratio"]) == Decimal(held) / Decimal(owed * ETHER)
    assert outputs["uncontrolled_wallets"] == []  # the hot wallet signed, the cold one's
    return outputs  # statement held


def test_evidence_first_then_access_cut_and_the_ledger_reconciled(
    insider_at: Any, chain: LocalChain
) -> None:
    insider = insider_at(80)
    engine, store, keys, run_id = insider.engine, insider.store, insider.keys, insider.run_id
    with pytest.raises(UsageError, match="mallory may not start this run"):
        insider.start("mallory")

    state, key, why = until_waiting(engine, run_id)
    assert (key, why) == ("authorise-containment", "approval")
    _evidence_before_any_change(insider)
    insider.refused(key)
    with pytest.raises(ApprovalRejected, match="lead started run"):  # not the initiator
        approve_as(store, run_id, key, keys, "lead")
    approve_as(store, run_id, key, keys, "lee")

    state, key, why = until_waiting(engine, run_id)
    assert (key, why) == ("legal-hold", "approval")
    _access_cut(insider)
    # and the journal agrees: both documents were kept before the first change started
    order = insider.journal_order()
    changes = ("suspend-admin", "hold-their-withdrawals", "quarantine-user", "quarantine-roles",
               "revoke-kms-grants", "four-eyes")  # fmt: skip
    for evidence in ("cloudtrail", "audit-log-evidence"):
        for change in changes:
            assert order[evidence, ev.STEP_SUCCEEDED] < order[change, ev.STEP_STARTED]

    # reconciliation: the ledger's 80 ETH against what the chain holds, 1.25
    reconcile = _reconciled(insider, chain, owed=80)
    assert reconcile["below_floor"] is False
    assert state.steps["shortfall"].status == "skipped"

    # the legal hold and the board notice: legal and the CISO or CEO, never the suspect
    insider.refused(key)
    approve_as(store, run_id, key, keys, "lena")  # legal alone is not enough
    state, key, why = until_waiting(engine, run_id)
    assert (key, why) == ("legal-hold", "approval")
    approve_as(store, run_id, key, keys, "cindy")
    state, key, why = until_waiting(engine, run_id)
    assert (key, why) == ("board-notice", "approval")
    insider.refused(key)
    approve_as(store, run_id, key, keys, "cleo")  # the CEO alone is not enough either
    state, key, why = until_waiting(engine, run_id)
    assert (key, why) == ("board-notice", "approval")
    approve_as(store, run_id, key, keys, "lena")
    state = engine.execute(run_id)

    failed = {s.key: s.error for s in state.steps.values() if s.status == "failed"}
    assert state.status == "succeeded", (state.status, failed)
    assert SAFE_OWNER in state.steps["safe-owner"].outputs["message"]
    assert "reconciled against the chain." in state.steps["board-notice"].outputs["message"]
    report = verify_run(store, run_id, [public_key_text(insider.installation)])
    assert report.ok, report.problems


def test_a_ledger_owing_more_than_the_chain_holds_takes_the_shortfall_branch(
    insider_at: Any, chain: LocalChain
) -> None:
    insider = insider_at(125)  # 100 held: 0.8
    engine, store, keys, run_id = insider.engine, insider.store, insider.keys, insider.run_id
    _, key, _ = until_waiting(engine, run_id)
    approve_as(store, run_id, key, keys, "cindy")  # a CISO may authorise containment too
    state, key, why = until_waiting(engine, run_id)
    assert (key, why) == ("legal-hold", "approval")
    reconcile = _reconciled(insider, chain, owed=125)
    assert (reconcile["below_floor"], reconcile["assets_below_floor"]) == (True, ["ETH"])
    assert state.steps["shortfall"].status == "succeeded"
    approve_as(store, run_id, key, keys, "lena", "cleo")
    state, key, why = until_waiting(engine, run_id)
    assert (key, why) == ("board-notice", "approval")
    approve_as(store, run_id, key, keys, "lena", "cindy")
    state = engine.execute(run_id)

    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]
    assert "less than the ledger owes for ETH" in state.steps["shortfall"].outputs["message"]
    assert "(a SHORTFALL was found)" in state.steps["board-notice"].outputs["message"]
    assert verify_run(store, run_id, [public_key_text(insider.installation)]).ok


def test_the_sandbox_drill_preserves_cuts_and_reconciles_for_real(insider_at: Any) -> None:
    """drills/sandbox-insider-withdrawal-abuse.yaml through the drill runner: the eligible
    participants approve as asked (never mallory, whom the run excludes), the evidence is
    locked, the access cut, the ledger reconciled; both objectives met."""
    import contextlib
    import threading

    from irctl.drills.drill import drive_drill, find_drill, score, start_drill
    from irctl.errors import IrctlError

    insider = insider_at(80)
    drill, _ = find_drill(ROOT / "drills", "sandbox-insider-withdrawal-abuse")
    assert drill.params["suspect_principal_arn"] == insider.user_arn  # the sandbox's own
    run_id = start_drill(insider.engine, drill, insider.model, insider.text, initiator="lead",
                         time_scale=0.002)  # fmt: skip
    stop = threading.Event()

    def participants() -> None:
        while not stop.wait(0.05):
            for step in fold(insider.store.events(run_id)).waiting():
                for who in (step.approval or {}).get("eligible", []):
                    if who in insider.keys and who not in step.approvers:
                        with contextlib.suppress(IrctlError):  # refused, or reached meanwhile
                            approve_as(insider.store, run_id, step.key, insider.keys, who)
    helper = threading.Thread(target=participants, daemon=True)
    helper.start()
    try:
        state = drive_drill(insider.engine, run_id, say=lambda _: None, time_limit=60,
                            poll=0.1, slack=False)  # fmt: skip
    finally:
        stop.set()
        helper.join(5)
    assert state.status == "succeeded", [(k, s.error) for k, s in state.steps.items()]
    decided = [e.data.get("operator") for e in insider.store.events(run_id)
               if e.type == ev.APPROVAL_GRANTED]  # fmt: skip
    assert "mallory" not in decided
    assert insider.exchange.desks.staff[SUSPECT].suspended is True
    assert state.steps["reconcile"].outputs["assets"]["ETH"]["ratio"] == "1.25"
    card = score(insider.store.events(run_id))
    assert [o.name for o in card.objectives if not o.met] == []
