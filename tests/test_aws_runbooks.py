"""The shipped AWS runbooks, end to end through the engine against moto's server.

Approvals are signed with the operators' own keys and manual steps answered as a person
would; the outcome is read back through the AWS API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.state import RunState
from irctl.journal.store import Store
from irctl.record.approvals import ApprovalRejected
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from tests.helpers import approve_as, until_waiting
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
ROLES = {
    "oncall": ["security-oncall"],
    "alice": ["security-lead"],
    "bob": ["cloud-admin"],
    "tara": ["treasury"],
    "tom": ["treasury"],
    "olga": ["ops-lead"],
    "carol": ["ciso"],
    "fran": ["cfo"],
    "omar": ["coo"],
    "cleo": ["compliance"],
}


class Responders:
    """A workspace's operators with their keys, an engine and a store in tmp_path."""

    def __init__(
        self,
        tmp_path: Path,
        aws: dict[str, Any],
        variables: dict[str, Any] | None = None,
        evm: dict[str, Any] | None = None,
    ) -> None:
        self.keys: dict[str, Ed25519PrivateKey] = {
            name: generate_private_key(tmp_path / f"{name}.key") for name in ROLES
        }
        config = Config.model_validate({
            "operators": {
                name: {"roles": roles, "key": public_key_text(self.keys[name])}
                for name, roles in ROLES.items()
            },
            # reserves.assets reads the chains evm does (the same settings, as irctl.yaml's
            # `reserves: *evm` alias gives them)
            "integrations": {"aws": aws, **({"evm": evm, "reserves": evm} if evm else {})},
            "vars": variables or {},
        })  # fmt: skip
        self.store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
        installation = generate_private_key(tmp_path / "installation.key")
        self.engine = Engine(self.store, config=config, signing_key=installation)

    def start(self, runbook: str, params: dict[str, str]) -> str:
        text = (ROOT / "runbooks" / f"{runbook}.yaml").read_text(encoding="utf-8")
        parsed = load_runbook_text(text, f"{runbook}.yaml")
        return self.engine.create_run(
            parsed, text, parse_params(parsed, params), initiator="oncall",
            starter_key=self.keys["oncall"],
        )

    def until_waiting(self, run_id: str) -> tuple[RunState, str, str]:
        """Run until it stops; the state, and the step it waits on and for what."""
        return until_waiting(self.engine, run_id)

    def approve(self, run_id: str, key: str, *operators: str) -> None:
        approve_as(self.store, run_id, key, self.keys, *operators)

    def answer(self, run_id: str, key: str) -> None:
        self.engine.answer(run_id, key, "done", operator="oncall", private_key=self.keys["oncall"])


def _statuses(iam: Any, user: str) -> dict[str, str]:
    listed = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["Status"] for k in listed}


def test_credential_leak(aws: dict[str, Any], tmp_path: Path) -> None:
    iam = boto("iam", aws)
    iam.create_user(UserName="ci-deploy")
    leaked = iam.create_access_key(UserName="ci-deploy")["AccessKey"]["AccessKeyId"]
    team = Responders(tmp_path, aws)
    run_id = team.start(
        "credential-leak",
        {"user_name": "ci-deploy", "access_key_id": leaked, "found_at": "github.com/x/y"},
    )

    state, key, why = team.until_waiting(run_id)
    assert (key, why) == ("deactivate", "approval")
    assert state.steps["announce"].status == "failed"  # no Slack here: the run goes on
    last_use = state.steps["last-use"].outputs["access_keys"]
    assert [k["access_key_id"] for k in last_use] == [leaked]
    assert _statuses(iam, "ci-deploy") == {leaked: "Active"}  # nothing before the approval
    team.approve(run_id, "deactivate", "oncall")  # stopping is one person, even the initiator

    state, key, why = team.until_waiting(run_id)
    assert (key, why) == ("redeploy", "answer")
    new = state.steps["rotate"].outputs["new_access_key_id"]
    assert _statuses(iam, "ci-deploy") == {leaked: "Inactive", new: "Active"}
    secret = boto("secretsmanager", aws).get_secret_value(SecretId="iam/ci-deploy")
    assert json.loads(secret["SecretString"])["AccessKeyId"] == new
    assert state.steps["rotate"].outputs["secret_version_id"] == secret["VersionId"]
    team.answer(run_id, "redeploy")

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("kms-grants", "answer")
    team.answer(run_id, "kms-grants")

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("delete-old-key", "approval")
    with pytest.raises(ApprovalRejected, match="cannot approve"):
        team.approve(run_id, "delete-old-key", "oncall")  # separation of duties
    team.approve(run_id, "delete-old-key", "alice")
    assert team.until_waiting(run_id)[1] == "delete-old-key"  # one of two is not enough
    assert leaked in _statuses(iam, "ci-deploy")
    team.approve(run_id, "delete-old-key", "bob")

    state = team.engine.execute(run_id)
    assert state.status == "succeeded"
    assert _statuses(iam, "ci-deploy") == {new: "Active"}
    records = "\n".join(team.store.lines(run_id))
    assert json.loads(secret["SecretString"])["SecretAccessKey"] not in records
    team.store.close()


def _trust() -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    })  # fmt: skip


def test_staff_account_takeover(aws: dict[str, Any], tmp_path: Path) -> None:
    iam = boto("iam", aws)
    iam.create_user(UserName="dana")
    keys = [iam.create_access_key(UserName="dana")["AccessKey"]["AccessKeyId"] for _ in "ab"]
    iam.create_login_profile(UserName="dana", Password="Correct-Horse-9!")
    serial = iam.create_virtual_mfa_device(VirtualMFADeviceName="dana")["VirtualMFADevice"][
        "SerialNumber"
    ]
    iam.enable_mfa_device(
        UserName="dana", SerialNumber=serial,
        AuthenticationCode1="123456", AuthenticationCode2="654321",
    )  # fmt: skip
    for role in ("signer", "deployer", "unrelated"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=_trust())
    team = Responders(tmp_path, aws)
    run_id = team.start(
        "staff-account-takeover",
        {"user_name": "dana", "roles": "signer,deployer", "device": "LT-042", "is_signer": "true"},
    )

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("quarantine-user", "approval")
    assert iam.list_user_policies(UserName="dana")["PolicyNames"] == []
    team.approve(run_id, "quarantine-user", "oncall")

    _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("isolate-device", "answer")
    # Every AWS step is done before the first person-dependent one.
    statements = iam.get_user_policy(UserName="dana", PolicyName="irctl-quarantine")[
        "PolicyDocument"
    ]["Statement"]
    assert {"Effect": "Deny", "Action": "*", "Resource": "*"}.items() <= statements[0].items()
    for role in ("signer", "deployer"):
        document = iam.get_role_policy(RoleName=role, PolicyName="irctl-quarantine")
        (condition,) = [s["Condition"] for s in document["PolicyDocument"]["Statement"][1:]]
        assert "aws:TokenIssueTime" in condition["DateLessThan"]
    assert iam.list_role_policies(RoleName="unrelated")["PolicyNames"] == []
    assert _statuses(iam, "dana") == dict.fromkeys(keys, "Inactive")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_login_profile(UserName="dana")
    assert iam.list_mfa_devices(UserName="dana")["MFADevices"] == []

    for step in ("isolate-device", "disable-identity", "rotate-reachable-secrets"):
        team.answer(run_id, step)
        _, key, why = team.until_waiting(run_id)
    assert (key, why) == ("rotate-signer", "answer")  # is_signer: true
    team.answer(run_id, "rotate-signer")
    state = team.engine.execute(run_id)
    assert state.status == "succeeded"
    notes = [s.outputs.get("message", "") for s in state.steps.values()]
    assert any("2 access key(s) deactivated" in note for note in notes)
    team.store.close()


def test_hot_wallet_compromise(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Halt, stop signing in AWS, revoke, rotate, then the approved on-chain sweep to the
    allowlisted cold wallet, the key enabled only for it: all read back."""
    from irctl_aws.sandbox import hot_wallet
    from irctl_evm.testing import LocalChain, signed_allowlist

    from irctl.testing import ExchangeAdminStub

    hot = {**hot_wallet(aws, "ethereum"), "kms_signs_sweep": True}
    iam, kms, ecs = boto("iam", aws), boto("kms", aws), boto("ecs", aws)
    (old_key,) = _statuses(iam, hot["service_user"])
    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN", "stub-token-hot-wallet")
    with LocalChain() as chain, ExchangeAdminStub("stub-token-hot-wallet") as exchange:
        wallet = chain.new_account(ether=40)
        cold = chain.new_account().address
        keyfile = tmp_path / "hot.key"
        keyfile.write_text(wallet.keyfile_text(), encoding="utf-8")
        allowlist = tmp_path / "allowlist.yaml"
        evm = {
            "rpc": {"ethereum": chain.url}, "chain_id": {"ethereum": chain.chain_id},
            "signer": {"ethereum": {"kind": "keyfile", "path": str(keyfile)}},
            "allowlist": {"path": str(allowlist), "quorum": 2, "roles": ["treasury"]},
        }  # fmt: skip
        exchange.add_pending("ethereum", wallet.address, 2)
        team = Responders(tmp_path, aws, {
            "exchange_admin_url": exchange.url, "cold_wallets": {"ethereum": cold},
            "hot_wallets": {"ethereum": hot}, "onchain_sweeps": ["ethereum"],
        }, evm)  # fmt: skip
        signed_allowlist(allowlist, chain="ethereum", address=cold, label="cold-1",
                         signers={n: team.keys[n] for n in ("tara", "tom")})  # fmt: skip
        run_id = team.start(
            "hot-wallet-compromise", {"chain": "ethereum", "wallet": wallet.address}
        )

        _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("custody-hotline", "answer")
        # Signing stopped before any person had to act
        assert exchange.halted == {"ethereum"}
        assert exchange.pending("ethereum", wallet.address) == 0
        assert kms.describe_key(KeyId=hot["signing_key"])["KeyMetadata"]["KeyState"] == "Disabled"
        (service,) = ecs.describe_services(cluster="wallets", services=[hot["signer_service"]])[
            "services"
        ]
        assert service["desiredCount"] == 0
        policy = iam.get_role_policy(RoleName=hot["signer_role"], PolicyName="irctl-quarantine")
        assert policy["PolicyDocument"]["Statement"][0]["Effect"] == "Deny"
        statuses = _statuses(iam, hot["service_user"])
        assert statuses[old_key] == "Inactive"
        (new_key,) = [k for k, status in statuses.items() if status == "Active"]
        stored = boto("secretsmanager", aws).get_secret_value(
            SecretId="hot-wallet/ethereum/service-user"
        )
        assert json.loads(stored["SecretString"])["AccessKeyId"] == new_key
        team.answer(run_id, "custody-hotline")

        # Two people approve the sweep; the key is never enabled while they decide
        _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("sweep-to-cold", "approval")
        assert chain.balance(cold) == 0
        assert kms.describe_key(KeyId=hot["signing_key"])["KeyMetadata"]["KeyState"] == "Disabled"
        team.approve(run_id, "sweep-to-cold", "tom", "alice")
        state = team.engine.execute(run_id)
        assert state.status == "succeeded", [
            (s.key, s.error) for s in state.steps.values() if s.status == "failed"
        ]
        assert chain.balance(cold) > 39 * 10**18  # all but the gas
        (sent,) = chain.transactions_from(wallet.address)
        assert state.steps["sweep-to-cold"].outputs["tx_hash"] == sent["hash"]
        assert state.steps["confirm-sweep"].status == "succeeded"
        assert exchange.sweeps == []  # on chain, not through custody
        assert state.steps["disable-key-after-sweep"].status == "succeeded"
        assert kms.describe_key(KeyId=hot["signing_key"])["KeyMetadata"]["KeyState"] == "Disabled"
        assert state.steps["stop-signers"].outputs["previous_desired_count"] == 2
    assert not any(wallet.private_key[2:] in line for line in team.store.lines(run_id))
    team.store.close()


def test_hot_wallet_sweep_to_an_address_not_on_the_allowlist_is_refused(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with every approval in place: nothing is sent, and the key is disabled again."""
    from irctl_aws.sandbox import hot_wallet
    from irctl_evm.testing import LocalChain, signed_allowlist

    from irctl.testing import ExchangeAdminStub

    hot = {**hot_wallet(aws, "ethereum"), "kms_signs_sweep": True}
    kms = boto("kms", aws)
    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN", "stub-token-refused")
    with LocalChain() as chain, ExchangeAdminStub("stub-token-refused") as exchange:
        wallet = chain.new_account(ether=5)
        attacker_cold = chain.new_account().address  # what a tampered irctl.yaml would say
        keyfile = tmp_path / "hot.key"
        keyfile.write_text(wallet.keyfile_text(), encoding="utf-8")
        allowlist = tmp_path / "allowlist.yaml"
        signed_allowlist(allowlist, chain="ethereum", address=chain.new_account().address,
                         signers={})  # fmt: skip
        evm = {
            "rpc": {"ethereum": chain.url},
            "signer": {"ethereum": {"kind": "keyfile", "path": str(keyfile)}},
            "allowlist": {"path": str(allowlist), "quorum": 2, "roles": ["treasury"]},
        }  # fmt: skip
        team = Responders(tmp_path, aws, {
            "exchange_admin_url": exchange.url, "cold_wallets": {"ethereum": attacker_cold},
            "hot_wallets": {"ethereum": hot}, "onchain_sweeps": ["ethereum"],
        }, evm)  # fmt: skip
        run_id = team.start(
            "hot-wallet-compromise", {"chain": "ethereum", "wallet": wallet.address}
        )
        team.until_waiting(run_id)
        team.answer(run_id, "custody-hotline")
        team.until_waiting(run_id)
        team.approve(run_id, "sweep-to-cold", "tom", "alice")
        state = team.engine.execute(run_id)
        assert state.status == "failed"
        error = state.steps["sweep-to-cold"].error or ""
        assert "allowlist" in error
        assert chain.transactions_from(wallet.address) == []
        assert chain.balance(attacker_cold) == 0
        assert state.steps["key-disabled-again"].status == "succeeded"
        assert kms.describe_key(KeyId=hot["signing_key"])["KeyMetadata"]["KeyState"] == "Disabled"
    team.store.close()


def test_hot_wallet_compromise_without_aws_signer_skips_the_aws_steps(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain with no vars.hot_wallets entry: the AWS steps are skipped, the rest runs."""
    from irctl.testing import ExchangeAdminStub

    wallet = "bc1qhothothothothothothothothothot0"
    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN", "stub-token-btc")
    with ExchangeAdminStub("stub-token-btc") as exchange:
        team = Responders(tmp_path, aws, {
            "exchange_admin_url": exchange.url, "cold_wallets": {"bitcoin": "bc1qcold"},
        })  # fmt: skip
        run_id = team.start("hot-wallet-compromise", {"chain": "bitcoin", "wallet": wallet})
        state, key, _ = team.until_waiting(run_id)
        assert key == "custody-hotline"
        for step in ("disable-signing-key", "stop-signers", "quarantine-signer-role",
                     "rotate-service-key"):  # fmt: skip
            assert state.steps[step].status == "skipped"
        assert exchange.halted == {"bitcoin"}
        team.answer(run_id, "custody-hotline")
        state, key, why = team.until_waiting(run_id)
        assert (key, why) == ("sweep-via-custody", "approval")  # not swept on chain by irctl
        assert state.steps["sweep-to-cold"].status == "skipped"
        team.approve(run_id, "sweep-via-custody", "tara", "alice")
        state = team.engine.execute(run_id)
        assert state.status == "succeeded"
        assert [(s["wallet"], s["to"]) for s in exchange.sweeps] == [(wallet, "bc1qcold")]
    team.store.close()


def test_withdrawal_halt_and_resume(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path stopped on one approval; back in stages only after three executives agree."""
    from irctl.testing import ExchangeAdminStub

    ssm, ecs, events = boto("ssm", aws), boto("ecs", aws), boto("events", aws)
    switch = "/exchange/withdrawals/mode"
    ssm.put_parameter(Name=switch, Value="normal", Type="String")
    ecs.create_cluster(clusterName="payments")
    ecs.register_task_definition(
        family="withdrawal-workers",
        containerDefinitions=[{"name": "worker", "image": "worker:1", "memory": 256}],
    )
    ecs.create_service(
        cluster="payments", serviceName="withdrawal-workers",
        taskDefinition="withdrawal-workers", desiredCount=3,
    )  # fmt: skip
    events.put_rule(Name="hot-wallet-sweep", ScheduleExpression="rate(5 minutes)")

    def workers() -> int:
        found = ecs.describe_services(cluster="payments", services=["withdrawal-workers"])
        return int(found["services"][0]["desiredCount"])

    def sweeps() -> str:
        return str(events.describe_rule(Name="hot-wallet-sweep")["State"])

    def mode() -> str:
        return str(ssm.get_parameter(Name=switch)["Parameter"]["Value"])

    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN", "stub-token-withdrawals")
    with ExchangeAdminStub("stub-token-withdrawals") as exchange:
        team = Responders(tmp_path, aws, {
            "exchange_admin_url": exchange.url,
            "withdrawals": {"kill_switch": switch, "cluster": "payments",
                            "worker_service": "withdrawal-workers",
                            "sweep_rule": "hot-wallet-sweep"},
        })  # fmt: skip
        run_id = team.start("withdrawal-halt-and-resume", {"chains": "ethereum,tron"})

        _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("halt", "approval")
        assert exchange.halted == set()
        team.approve(run_id, "halt", "olga")  # one person: the operations lead

        _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("attest-containment", "answer")
        assert exchange.halted == {"ethereum", "tron"}
        assert (mode(), workers(), sweeps()) == ("halted", 0, "DISABLED")
        for step in ("attest-containment", "reconcile", "check-allowlists"):
            team.answer(run_id, step)
            _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("authorise-resume", "approval")
        team.approve(run_id, "authorise-resume", "carol", "fran")
        _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("authorise-resume", "approval")  # two of four are not enough
        assert exchange.halted == {"ethereum", "tron"}
        team.approve(run_id, "authorise-resume", "cleo")

        _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("canary-withdrawals", "answer")
        assert exchange.halted == set()
        assert (mode(), workers(), sweeps()) == ("canary", 3, "ENABLED")
        team.answer(run_id, "canary-withdrawals")
        state = team.engine.execute(run_id)
        assert state.status == "succeeded"
        assert mode() == "normal"
        resumed = [r.json for r in exchange.requests_to("/withdrawals/resume")]
        assert sorted(r["chain"] for r in resumed) == ["ethereum", "tron"]
    team.store.close()


@pytest.mark.parametrize(("owed", "asked"), [(80, False), (150, True)])
def test_withdrawals_resume_only_after_the_chain_is_read_against_the_ledger(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owed: int,
    asked: bool,
) -> None:  # fmt: skip
    """The reconciliation before withdrawals resume is a read of every wallet at one block
    against what the ledger owes: covered (100 ETH held, 80 owed), nobody is asked to confirm
    it; short (150 owed), treasury is asked, told which asset is short."""
    import yaml
    from eth_account import Account as EthAccount
    from eth_account.messages import encode_defunct
    from irctl_evm.testing import LocalChain

    from irctl.testing import ExchangeAdminStub

    ssm, ecs, events = boto("ssm", aws), boto("ecs", aws), boto("events", aws)
    ssm.put_parameter(Name="/exchange/withdrawals/mode", Value="normal", Type="String")
    ecs.create_cluster(clusterName="payments")
    ecs.register_task_definition(
        family="withdrawal-workers",
        containerDefinitions=[{"name": "worker", "image": "worker:1", "memory": 256}],
    )
    ecs.create_service(cluster="payments", serviceName="withdrawal-workers",
                       taskDefinition="withdrawal-workers", desiredCount=3)  # fmt: skip
    events.put_rule(Name="hot-wallet-sweep", ScheduleExpression="rate(5 minutes)")
    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN", "stub-token-withdrawals")
    with LocalChain() as chain, ExchangeAdminStub("stub-token-withdrawals") as exchange:
        hot, cold = chain.new_account(ether=30), chain.new_account(ether=70)
        (tmp_path / "hot.key").write_text(hot.keyfile_text(), encoding="utf-8")
        message = f"Example Exchange controls {cold.address} (cold storage) on local."
        signature = EthAccount.sign_message(encode_defunct(text=message), cold.private_key)
        statements = tmp_path / "statements.yaml"
        statements.write_text(yaml.safe_dump({"statements": [{
            "address": cold.address, "chain": "local", "message": message,
            "signature": "0x" + bytes(signature.signature).hex(),
        }]}), encoding="utf-8")  # fmt: skip
        exchange.set_liabilities({"ETH": (owed * 10**18, 18)})
        evm = {"rpc": {"local": chain.url}, "chain_id": {"local": chain.chain_id},
               "signer": {"local": {"kind": "keyfile", "path": str(tmp_path / "hot.key")}}}
        team = Responders(tmp_path, aws, {
            "exchange_admin_url": exchange.url,
            "withdrawals": {"kill_switch": "/exchange/withdrawals/mode", "cluster": "payments",
                            "worker_service": "withdrawal-workers",
                            "sweep_rule": "hot-wallet-sweep"},
            "reserves": {
                "exchange": "Example Exchange", "assets": {"ETH": "native"},
                "statements": str(statements),
                "wallets": [{"chain": "local", "address": hot.address, "kind": "hot"},
                            {"chain": "local", "address": cold.address, "kind": "cold"}],
            },
        }, evm=evm)  # fmt: skip
        run_id = team.start("withdrawal-halt-and-resume", {"chains": "ethereum"})
        _, key, why = team.until_waiting(run_id)
        team.approve(run_id, "halt", "olga")
        _, key, why = team.until_waiting(run_id)
        assert (key, why) == ("attest-containment", "answer")
        team.answer(run_id, key)
        state, key, why = team.until_waiting(run_id)
        read = state.steps["reconcile-on-chain"]
        assert read.status == "succeeded", read.error
        assert read.outputs["assets"]["ETH"]["reserves"] == str(
            chain.balance(hot.address) + chain.balance(cold.address)
        )
        assert read.outputs["below_floor"] is asked
        if asked:
            assert (key, why) == ("reconcile", "answer")
            assert "below the ledger for ETH" in " ".join(str(state.steps[key].prompt).split())
            team.answer(run_id, key)
            state, key, why = team.until_waiting(run_id)
        else:
            assert state.steps["reconcile"].status == "skipped"
        assert (key, why) == ("check-allowlists", "answer")
    team.store.close()
