"""``aws.iam.*`` against moto's server: every outcome is read back through the AWS API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from irctl.actions import ActionContext, Probe, default_registry
from irctl.engine.engine import Engine
from irctl.errors import ActionError
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401


def _ctx(config: dict[str, Any], step: str = "s", run: str = "r") -> ActionContext:
    return ActionContext(run_id=run, step_id=step, config=config)


def run(
    action: str, config: dict[str, Any], ctx: ActionContext | None = None, /, **inputs: Any
) -> Any:
    act = default_registry.get(action)
    return act.call_run(act.parse(inputs), ctx or _ctx(config))


def probe(
    action: str, config: dict[str, Any], ctx: ActionContext | None = None, /, **inputs: Any
) -> Probe:
    act = default_registry.get(action)
    return act.call_probe(act.parse(inputs), ctx or _ctx(config))


def simulate(action: str, config: dict[str, Any], /, **inputs: Any) -> Any:
    act = default_registry.get(action)
    return act.call_simulate(act.parse(inputs), _ctx(config))


def _user(iam: Any, name: str, *, keys: int = 1) -> list[str]:
    iam.create_user(UserName=name)
    return [iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"] for _ in range(keys)]


def _statuses(iam: Any, user: str) -> dict[str, str]:
    return {
        k["AccessKeyId"]: k["Status"]
        for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    }


def _secret(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = boto("secretsmanager", config).get_secret_value(SecretId=name)["SecretString"]
    return dict(json.loads(value))


# --- deactivate / list --------------------------------------------------------------------------


def test_deactivate_access_key_probe_rerun_and_list(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    (key,) = _user(iam, "alice")
    inputs = {"user_name": "alice", "access_key_id": key}
    assert probe("aws.iam.deactivate_access_key", aws, **inputs).state == "not_done"

    out = run("aws.iam.deactivate_access_key", aws, **inputs)
    assert out == {"user_name": "alice", "access_key_id": key, "previous_status": "Active"}
    assert _statuses(iam, "alice") == {key: "Inactive"}

    found = probe("aws.iam.deactivate_access_key", aws, **inputs)
    assert found.state == "done"
    assert found.outputs["previous_status"] == "Inactive"
    again = run("aws.iam.deactivate_access_key", aws, **inputs)
    assert again["previous_status"] == "Inactive"
    assert _statuses(iam, "alice") == {key: "Inactive"}

    listed = run("aws.iam.list_access_keys", aws, user_name="alice")
    assert listed["active"] == []
    assert [(k["access_key_id"], k["status"]) for k in listed["access_keys"]] == [(key, "Inactive")]
    assert listed["access_keys"][0]["created"]


def test_unknown_user_and_foreign_key_are_clear_permanent_errors(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    (key,) = _user(iam, "alice")
    with pytest.raises(ActionError, match="user mallory: not found") as info:
        run("aws.iam.deactivate_access_key", aws, user_name="mallory", access_key_id=key)
    assert not info.value.retryable
    _user(iam, "bob", keys=0)
    with pytest.raises(ActionError, match=f"{key} is not a key of IAM user bob") as info:
        run("aws.iam.deactivate_access_key", aws, user_name="bob", access_key_id=key)
    assert not info.value.retryable
    for name in ("aws.iam.delete_login_profile", "aws.iam.deactivate_mfa_devices"):
        with pytest.raises(ActionError, match="mallory: not found"):
            run(name, aws, user_name="mallory")
    with pytest.raises(ActionError, match="GetRole ghost: not found"):
        run("aws.iam.quarantine_principal", aws, principal_type="role", name="ghost")
    assert _statuses(iam, "alice") == {key: "Active"}


def test_inputs_are_typed_and_closed() -> None:
    from pydantic import ValidationError

    act = default_registry.get("aws.iam.deactivate_access_key")
    with pytest.raises(ValidationError, match="extra"):
        act.parse({"user_name": "a", "access_key_id": "AKIA0000000000000000", "typo": 1})
    with pytest.raises(ValidationError):
        act.parse({"user_name": "a b", "access_key_id": "AKIA0000000000000000"})
    quarantine = default_registry.get("aws.iam.quarantine_principal")
    with pytest.raises(ValidationError):
        quarantine.parse({"principal_type": "group", "name": "x"})


# --- rotate -------------------------------------------------------------------------------------


def test_rotate_stores_the_new_key_and_deactivates_the_old(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    (old,) = _user(iam, "svc")
    inputs = {"user_name": "svc", "secret_name": "iam/svc"}
    assert probe("aws.iam.rotate_access_key", aws, **inputs).state == "not_done"

    out = run("aws.iam.rotate_access_key", aws, **inputs)
    new = out["new_access_key_id"]
    assert out["old_access_key_id"] == old
    assert out["secret_name"] == "iam/svc"
    assert out["secret_version_id"]
    assert _statuses(iam, "svc") == {old: "Inactive", new: "Active"}
    stored = _secret(aws, "iam/svc")
    assert stored["AccessKeyId"] == new
    assert stored["UserName"] == "svc"
    assert len(stored["SecretAccessKey"]) >= 20
    assert stored["SecretAccessKey"] not in json.dumps(out)  # never an output

    found = probe("aws.iam.rotate_access_key", aws, **inputs)
    assert found.state == "done"
    assert found.outputs == out
    # The same step run again resumes instead of making a third key.
    assert run("aws.iam.rotate_access_key", aws, **inputs) == out
    assert set(_statuses(iam, "svc")) == {old, new}
    # Another step (or run) does not mistake this rotation for its own.
    assert probe("aws.iam.rotate_access_key", aws, _ctx(aws, "other"), **inputs).state == (
        "not_done"
    )


def test_rotate_puts_a_new_version_of_an_existing_secret(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    sm = boto("secretsmanager", aws)
    (old,) = _user(iam, "svc")
    first = sm.create_secret(Name="iam/svc", SecretString='{"AccessKeyId": "x"}')["VersionId"]
    out = run(
        "aws.iam.rotate_access_key", aws,
        user_name="svc", old_access_key_id=old, secret_name="iam/svc",
    )  # fmt: skip
    assert out["secret_version_id"] != first
    current = sm.get_secret_value(SecretId="iam/svc", VersionStage="AWSCURRENT")
    assert current["VersionId"] == out["secret_version_id"]
    previous = sm.get_secret_value(SecretId="iam/svc", VersionStage="AWSPREVIOUS")
    assert previous["VersionId"] == first
    assert json.loads(current["SecretString"])["AccessKeyId"] == out["new_access_key_id"]


def test_rotate_resumes_after_a_crash_between_storing_and_deactivating(
    aws: dict[str, Any],
) -> None:
    iam = boto("iam", aws)
    (old,) = _user(iam, "svc")
    out = run("aws.iam.rotate_access_key", aws, user_name="svc", secret_name="iam/svc")
    iam.update_access_key(UserName="svc", AccessKeyId=old, Status="Active")  # the crash
    inputs = {"user_name": "svc", "old_access_key_id": old, "secret_name": "iam/svc"}
    assert probe("aws.iam.rotate_access_key", aws, **inputs).state == "not_done"
    again = run("aws.iam.rotate_access_key", aws, **inputs)
    assert again["new_access_key_id"] == out["new_access_key_id"]
    assert _statuses(iam, "svc") == {old: "Inactive", out["new_access_key_id"]: "Active"}


def test_rotate_refusals_touch_nothing(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    keys = _user(iam, "two", keys=2)
    with pytest.raises(ActionError, match="2 active access keys") as info:
        run("aws.iam.rotate_access_key", aws, user_name="two", secret_name="iam/two")
    assert not info.value.retryable
    with pytest.raises(ActionError, match="already has two access keys") as info:
        run(
            "aws.iam.rotate_access_key", aws,
            user_name="two", old_access_key_id=keys[0], secret_name="iam/two",
        )  # fmt: skip
    assert not info.value.retryable
    assert _statuses(iam, "two") == dict.fromkeys(keys, "Active")
    with pytest.raises(ActionError, match="user ghost: not found"):
        run("aws.iam.rotate_access_key", aws, user_name="ghost", secret_name="iam/ghost")
    names = [s["Name"] for s in boto("secretsmanager", aws).list_secrets()["SecretList"]]
    assert names == []


def test_a_secret_marked_for_deletion_is_refused_before_any_key_is_made(
    aws: dict[str, Any],
) -> None:
    iam = boto("iam", aws)
    sm = boto("secretsmanager", aws)
    (old,) = _user(iam, "svc")
    sm.create_secret(Name="iam/svc", SecretString="{}")
    sm.delete_secret(SecretId="iam/svc")
    with pytest.raises(ActionError, match=r"GetSecretValue on secret iam/svc.*marked deleted"):
        run("aws.iam.rotate_access_key", aws, user_name="svc", secret_name="iam/svc")
    assert _statuses(iam, "svc") == {old: "Active"}


def _enforce_auth(endpoint: str, count: str) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        method="POST",
        data=count.encode(),
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request, timeout=10).close()


def test_rotate_deletes_the_new_key_again_when_the_secret_cannot_be_stored(
    aws: dict[str, Any], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = boto("iam", aws)
    (old,) = _user(iam, "svc")
    # The responder may do anything in IAM and read secrets, but not write them (moto answers
    # the denial as XML to a JSON API, so only the call and secret are checked, not the cause).
    _user(iam, "responder", keys=0)
    allowed = ["iam:*", "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName="responder", PolicyName="ir", PolicyDocument=json.dumps(policy))
    creds = iam.create_access_key(UserName="responder")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    _enforce_auth(moto_endpoint, "0")
    try:
        with pytest.raises(
            ActionError, match="Secrets Manager PutSecretValue on secret iam/svc"
        ) as info:
            run("aws.iam.rotate_access_key", aws, user_name="svc", secret_name="iam/svc")
    finally:
        _enforce_auth(moto_endpoint, "inf")
    assert "the new key" in str(info.value)
    assert "was deleted again; the old key" in str(info.value)
    assert not info.value.retryable
    assert _statuses(boto("iam", aws), "svc") == {old: "Active"}


# --- delete -------------------------------------------------------------------------------------


def test_delete_refuses_an_active_key_then_deletes_it_once_inactive(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    (key,) = _user(iam, "alice")
    inputs = {"user_name": "alice", "access_key_id": key}
    with pytest.raises(ActionError, match="still Active; deactivate it first") as info:
        run("aws.iam.delete_access_key", aws, **inputs)
    assert not info.value.retryable
    assert _statuses(iam, "alice") == {key: "Active"}
    assert probe("aws.iam.delete_access_key", aws, **inputs).state == "not_done"

    run("aws.iam.deactivate_access_key", aws, **inputs)
    out = run("aws.iam.delete_access_key", aws, **inputs)
    assert out == {"user_name": "alice", "access_key_id": key, "previous_status": "Inactive"}
    assert _statuses(iam, "alice") == {}
    assert probe("aws.iam.delete_access_key", aws, **inputs).state == "done"
    assert run("aws.iam.delete_access_key", aws, **inputs)["previous_status"] == "absent"


def test_delete_with_force_deletes_an_active_key(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    (key,) = _user(iam, "alice")
    out = run("aws.iam.delete_access_key", aws, user_name="alice", access_key_id=key, force=True)
    assert out["previous_status"] == "Active"
    assert _statuses(iam, "alice") == {}


# --- MFA and console password -------------------------------------------------------------------


def test_deactivate_mfa_devices(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    _user(iam, "alice", keys=0)
    serials = []
    for name in ("alice-phone", "alice-laptop"):
        serial = iam.create_virtual_mfa_device(VirtualMFADeviceName=name)["VirtualMFADevice"][
            "SerialNumber"
        ]
        iam.enable_mfa_device(
            UserName="alice", SerialNumber=serial,
            AuthenticationCode1="123456", AuthenticationCode2="654321",
        )  # fmt: skip
        serials.append(serial)
    assert probe("aws.iam.deactivate_mfa_devices", aws, user_name="alice").state == "not_done"
    out = run("aws.iam.deactivate_mfa_devices", aws, user_name="alice")
    assert sorted(out["deactivated"]) == sorted(serials)
    assert iam.list_mfa_devices(UserName="alice")["MFADevices"] == []
    assert probe("aws.iam.deactivate_mfa_devices", aws, user_name="alice").state == "done"
    assert run("aws.iam.deactivate_mfa_devices", aws, user_name="alice")["deactivated"] == []


def test_delete_login_profile(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    _user(iam, "alice", keys=0)
    iam.create_login_profile(UserName="alice", Password="Correct-Horse-9!")
    assert probe("aws.iam.delete_login_profile", aws, user_name="alice").state == "not_done"
    assert run("aws.iam.delete_login_profile", aws, user_name="alice") == {
        "user_name": "alice", "deleted": True,
    }  # fmt: skip
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_login_profile(UserName="alice")
    assert probe("aws.iam.delete_login_profile", aws, user_name="alice").state == "done"
    assert run("aws.iam.delete_login_profile", aws, user_name="alice")["deleted"] is False


# --- quarantine ---------------------------------------------------------------------------------


def _role(iam: Any, name: str) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))


def _policy(iam: Any, kind: str, name: str, policy: str = "irctl-quarantine") -> Any:
    if kind == "role":
        return iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
    return iam.get_user_policy(UserName=name, PolicyName=policy)["PolicyDocument"]


@pytest.mark.parametrize("kind", ["role", "user"])
def test_quarantine_denies_everything_and_older_sessions(aws: dict[str, Any], kind: str) -> None:
    iam = boto("iam", aws)
    if kind == "role":
        _role(iam, "signer")
    else:
        _user(iam, "signer", keys=0)
    inputs = {"principal_type": kind, "name": "signer"}
    assert probe("aws.iam.quarantine_principal", aws, **inputs).state == "not_done"

    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    out = run("aws.iam.quarantine_principal", aws, **inputs)
    cutoff = out["revoked_sessions_before"]
    assert cutoff >= before
    assert out == {
        "principal_type": kind, "name": "signer", "policy_name": "irctl-quarantine",
        "revoked_sessions_before": cutoff,
    }  # fmt: skip
    statements = _policy(iam, kind, "signer")["Statement"]
    assert {"Effect": "Deny", "Action": "*", "Resource": "*"}.items() <= statements[0].items()
    assert "Condition" not in statements[0]
    assert statements[1]["Condition"] == {"DateLessThan": {"aws:TokenIssueTime": cutoff}}

    time.sleep(1.1)
    assert run("aws.iam.quarantine_principal", aws, **inputs) == out  # the first cutoff stays
    found = probe("aws.iam.quarantine_principal", aws, **inputs)
    assert (found.state, found.outputs) == ("done", out)

    # Release: the deny-all goes, the revocation of older sessions stays.
    assert probe("aws.iam.release_principal", aws, **inputs).state == "not_done"
    released = run("aws.iam.release_principal", aws, **inputs)
    assert released["released"] is True
    assert released["revoked_sessions_before"] == cutoff
    (kept,) = _policy(iam, kind, "signer")["Statement"]
    assert kept["Condition"] == {"DateLessThan": {"aws:TokenIssueTime": cutoff}}
    assert probe("aws.iam.release_principal", aws, **inputs).state == "done"
    assert probe("aws.iam.quarantine_principal", aws, **inputs).state == "not_done"
    assert run("aws.iam.release_principal", aws, **inputs)["released"] is False

    # Released for good: the policy is gone.
    run("aws.iam.release_principal", aws, **inputs, keep_session_revocation=False)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        _policy(iam, kind, "signer")
    assert run("aws.iam.release_principal", aws, **inputs)["revoked_sessions_before"] is None


def test_quarantine_with_a_named_policy_leaves_other_policies(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    _role(iam, "app")
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                     "Resource": "*"}]}  # fmt: skip
    iam.put_role_policy(RoleName="app", PolicyName="app", PolicyDocument=json.dumps(allow))
    run("aws.iam.quarantine_principal", aws, principal_type="role", name="app", policy_name="ir-1")
    assert sorted(iam.list_role_policies(RoleName="app")["PolicyNames"]) == ["app", "ir-1"]
    run(
        "aws.iam.release_principal", aws,
        principal_type="role", name="app", policy_name="ir-1", keep_session_revocation=False,
    )  # fmt: skip
    assert iam.list_role_policies(RoleName="app")["PolicyNames"] == ["app"]


# --- simulate -----------------------------------------------------------------------------------


def test_simulate_touches_nothing(aws: dict[str, Any]) -> None:
    iam = boto("iam", aws)
    (key,) = _user(iam, "alice")
    _role(iam, "signer")
    iam.create_login_profile(UserName="alice", Password="Correct-Horse-9!")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("aws.iam.list_access_keys", {"user_name": "alice"}),
        ("aws.iam.deactivate_access_key", {"user_name": "alice", "access_key_id": key}),
        ("aws.iam.rotate_access_key", {"user_name": "alice", "secret_name": "iam/alice"}),
        ("aws.iam.delete_access_key", {"user_name": "alice", "access_key_id": key, "force": True}),
        ("aws.iam.deactivate_mfa_devices", {"user_name": "alice"}),
        ("aws.iam.delete_login_profile", {"user_name": "alice"}),
        ("aws.iam.quarantine_principal", {"principal_type": "role", "name": "signer"}),
        ("aws.iam.release_principal", {"principal_type": "role", "name": "signer"}),
    ]
    unreachable = {**aws, "endpoint_url": "http://127.0.0.1:9"}  # any AWS call would fail
    for name, inputs in calls:
        out = simulate(name, unreachable, **inputs)
        assert out["simulated"] is True
        assert out["would"]
    assert _statuses(iam, "alice") == {key: "Active"}
    assert iam.get_login_profile(UserName="alice")["LoginProfile"]["UserName"] == "alice"
    assert iam.list_role_policies(RoleName="signer")["PolicyNames"] == []
    assert boto("secretsmanager", aws).list_secrets()["SecretList"] == []


# --- fan-out through the engine -----------------------------------------------------------------

FAN_OUT = """\
irctl: 1
kind: runbook
id: rotate-many
title: Rotate many users' keys
params:
  users: {type: list, items: string}
steps:
  - id: rotate
    action: aws.iam.rotate_access_key
    for_each: "{{ params.users }}"
    max_parallel: 16
    with: {user_name: "{{ item }}", secret_name: "iam/{{ item }}"}
"""


def test_rotating_200_users_through_the_engine(aws: dict[str, Any], tmp_path: Path) -> None:
    iam = boto("iam", aws)
    users = [f"svc-{n:03d}" for n in range(200)]
    old = {user: _user(iam, user)[0] for user in users}
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store, config=Config.model_validate({"integrations": {"aws": aws}}))
    run_id = engine.create_run(
        load_runbook_text(FAN_OUT, "rotate-many.yaml"), FAN_OUT, {"users": users},
        initiator="oncall",
    )  # fmt: skip
    state = engine.execute(run_id)  # its speed is measured in bench/, not asserted here
    assert state.status == "succeeded", [
        (k, s.error) for k, s in state.steps.items() if s.status != "succeeded"
    ]
    sm = boto("secretsmanager", aws)
    for index, user in enumerate(users):
        statuses = _statuses(iam, user)
        (new,) = [k for k in statuses if k != old[user]]
        assert statuses == {old[user]: "Inactive", new: "Active"}
        value = json.loads(sm.get_secret_value(SecretId=f"iam/{user}")["SecretString"])
        assert value["AccessKeyId"] == new
        outputs = state.steps[f"rotate[{index}]"].outputs
        assert outputs["new_access_key_id"] == new
        assert outputs["old_access_key_id"] == old[user]
    # No secret access key is in the run's records.
    records = "\n".join(store.lines(run_id))
    for user in users[:20]:
        secret = json.loads(sm.get_secret_value(SecretId=f"iam/{user}")["SecretString"])
        assert secret["SecretAccessKey"] not in records
    store.close()
