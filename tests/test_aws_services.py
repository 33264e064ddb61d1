"""The aws.* containment actions for KMS, Secrets Manager, ECS, Auto Scaling, Lambda,
EventBridge, SSM and S3, through the registry, against moto's server.

Every effect is read back through the AWS API, never taken from the action's outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from irctl.actions import ActionContext, Probe, default_registry
from irctl.errors import ActionError
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401


@pytest.fixture
def cloud(aws: dict[str, Any]) -> dict[str, Any]:
    """The ``aws`` integration config against a freshly reset moto server."""
    return aws


#: Where nothing listens: a simulate that called AWS would fail against it.
DEAD = {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9", "max_attempts": 1}


def context(config: dict[str, Any], step: str = "step-1", run: str = "run-1") -> ActionContext:
    return ActionContext(run_id=run, step_id=step, config=config, timeout=30)


def run(name: str, inputs: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    found = default_registry.get(name)
    return found.call_run(found.parse(inputs), ctx)


def simulate(name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    found = default_registry.get(name)
    return found.call_simulate(found.parse(inputs), context(DEAD))


def probe(name: str, inputs: dict[str, Any], ctx: ActionContext) -> Probe:
    found = default_registry.get(name)
    return found.call_probe(found.parse(inputs), ctx)


def failure(name: str, inputs: dict[str, Any], ctx: ActionContext) -> ActionError:
    with pytest.raises(ActionError) as caught:
        run(name, inputs, ctx)
    return caught.value


def test_every_action_is_registered_with_probe_and_simulate() -> None:
    names = [
        "aws.kms.disable_key", "aws.kms.enable_key", "aws.secretsmanager.put_secret_value",
        "aws.ecs.scale_service", "aws.autoscaling.set_capacity", "aws.lambda.set_concurrency",
        "aws.events.disable_rule", "aws.events.enable_rule", "aws.ssm.put_parameter",
        "aws.s3.put_evidence",
    ]  # fmt: skip
    for name in names:
        found = default_registry.get(name)
        assert found.idempotent, name
        assert found.has_probe, name
        assert found._simulate is not None, name
        assert found.summary, name
        schema = found.inputs.model_json_schema()
        assert schema.get("additionalProperties") is False, name
        for field, spec in schema["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


# --- KMS ------------------------------------------------------------------------------------


def test_kms_disable_and_enable_by_alias(cloud: dict[str, Any]) -> None:
    kms = boto("kms", cloud)
    key_id = kms.create_key(Description="hot wallet signer")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/hot-wallet", TargetKeyId=key_id)
    ctx = context(cloud)
    ref = {"key_id": "alias/hot-wallet"}

    assert probe("aws.kms.disable_key", ref, ctx).state == "not_done"
    out = run("aws.kms.disable_key", ref, ctx)
    assert out["key_id"] == key_id
    assert out["previous_state"] == "Enabled"
    assert out["state"] == "Disabled"
    assert out["changed"] is True
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"

    # a crash after the change: the probe reads what the attempt journaled before it
    crashed = context(cloud)
    crashed.facts.update(ctx.facts)
    found = probe("aws.kms.disable_key", ref, crashed)
    assert found.state == "done"
    assert found.outputs["state"] == "Disabled"
    assert found.outputs["previous_state"] == "Enabled"
    assert probe("aws.kms.disable_key", ref, context(cloud)).outputs["previous_state"] is None

    again = run("aws.kms.disable_key", ref, context(cloud, "disable-again"))
    assert again["changed"] is False
    assert again["previous_state"] == "Disabled"

    ctx = context(cloud, "enable")
    assert probe("aws.kms.enable_key", ref, ctx).state == "not_done"
    back = run("aws.kms.enable_key", ref, ctx)
    assert (back["previous_state"], back["state"], back["changed"]) == ("Disabled", "Enabled", True)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert probe("aws.kms.enable_key", ref, ctx).state == "done"
    assert run("aws.kms.enable_key", ref, ctx)["changed"] is False


def test_kms_simulate_touches_nothing(cloud: dict[str, Any]) -> None:
    kms = boto("kms", cloud)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    out = simulate("aws.kms.disable_key", {"key_id": key_id})
    assert out["simulated"] is True
    assert key_id in out["would"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_kms_unknown_key_and_pending_deletion(cloud: dict[str, Any]) -> None:
    error = failure("aws.kms.disable_key", {"key_id": "alias/no-such-key"}, context(cloud))
    assert "alias/no-such-key" in error.message
    assert "not found" in error.message
    assert error.retryable is False

    kms = boto("kms", cloud)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    error = failure("aws.kms.enable_key", {"key_id": key_id}, context(cloud))
    assert "PendingDeletion" in error.message
    assert "CancelKeyDeletion" in error.message
    assert error.retryable is False
    # A key pending deletion cannot sign either: disabling it has nothing left to do.
    assert run("aws.kms.disable_key", {"key_id": key_id}, context(cloud))["changed"] is False


# --- Secrets Manager ------------------------------------------------------------------------

NEW_VALUE = "s3cr3t-N3W-value-7f9a1c"


def _versions(sm: Any, secret_id: str) -> dict[str, list[str]]:
    listed = sm.list_secret_version_ids(SecretId=secret_id, IncludeDeprecated=True)["Versions"]
    return {v["VersionId"]: v.get("VersionStages", []) for v in listed}


def test_secret_from_env_is_written_once_per_step(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sm = boto("secretsmanager", cloud)
    sm.create_secret(Name="exchange/admin-token", SecretString="old-value-123456")
    monkeypatch.setenv("IRCTL_TEST_NEW_TOKEN", NEW_VALUE)
    inputs = {"secret_id": "exchange/admin-token", "value_from": "env:IRCTL_TEST_NEW_TOKEN"}
    ctx = context(cloud, step="rotate-admin-token")

    assert probe("aws.secretsmanager.put_secret_value", inputs, ctx).state == "not_done"
    out = run("aws.secretsmanager.put_secret_value", inputs, ctx)
    assert out["secret_id"] == "exchange/admin-token"
    assert out["stages"] == ["AWSCURRENT"]
    assert sm.get_secret_value(SecretId="exchange/admin-token")["SecretString"] == NEW_VALUE
    versions = _versions(sm, "exchange/admin-token")
    assert versions[out["version_id"]] == ["AWSCURRENT"]
    assert ["AWSPREVIOUS"] in versions.values()

    found = probe("aws.secretsmanager.put_secret_value", inputs, ctx)
    assert found.state == "done"
    assert found.outputs["version_id"] == out["version_id"]

    # The same step again (a re-run after a crash): no second version.
    again = run("aws.secretsmanager.put_secret_value", inputs, ctx)
    assert again["version_id"] == out["version_id"]
    assert len(_versions(sm, "exchange/admin-token")) == 2

    # Another step (or another run) writes a new version.
    other = run("aws.secretsmanager.put_secret_value", inputs, context(cloud, step="rotate-2"))
    assert other["version_id"] != out["version_id"]
    assert len(_versions(sm, "exchange/admin-token")) == 3

    for outputs in (out, found.outputs, again, other):
        assert NEW_VALUE not in json.dumps(outputs)
    assert NEW_VALUE not in " ".join(ctx.notes)


def test_secret_generated_and_created(cloud: dict[str, Any]) -> None:
    sm = boto("secretsmanager", cloud)
    inputs = {
        "secret_id": "signer/api-key",
        "generate": {"length": 40, "exclude_punctuation": True},
        "create": True,
    }
    ctx = context(cloud)
    out = run("aws.secretsmanager.put_secret_value", inputs, ctx)
    assert out["created"] is True
    value = sm.get_secret_value(SecretId="signer/api-key")["SecretString"]
    assert len(value) == 40
    assert value.isalnum()
    assert value not in json.dumps(out)
    assert value not in " ".join(ctx.notes)
    assert _versions(sm, "signer/api-key") == {out["version_id"]: ["AWSCURRENT"]}
    # A re-run finds the version instead of generating another value.
    again = run("aws.secretsmanager.put_secret_value", inputs, ctx)
    assert again["version_id"] == out["version_id"]
    assert sm.get_secret_value(SecretId="signer/api-key")["SecretString"] == value


def test_secret_from_file_with_given_token(cloud: dict[str, Any], tmp_path: Path) -> None:
    sm = boto("secretsmanager", cloud)
    sm.create_secret(Name="db/password", SecretString="old-password-0000")
    secret_file = tmp_path / "new-password"
    secret_file.write_text(NEW_VALUE + "\n")
    token = "f" * 40
    inputs = {"secret_id": "db/password", "value_from": f"file:{secret_file}",
              "client_request_token": token}  # fmt: skip
    out = run("aws.secretsmanager.put_secret_value", inputs, context(cloud))
    assert out["version_id"] == token
    assert sm.get_secret_value(SecretId="db/password")["SecretString"] == NEW_VALUE
    assert NEW_VALUE not in json.dumps(out)


def test_secret_errors_name_the_secret_never_the_value(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRCTL_TEST_NEW_TOKEN", NEW_VALUE)
    inputs = {"secret_id": "no/such-secret", "value_from": "env:IRCTL_TEST_NEW_TOKEN"}
    error = failure("aws.secretsmanager.put_secret_value", inputs, context(cloud))
    assert "no/such-secret" in error.message
    assert "create: true" in error.message
    assert error.retryable is False
    assert NEW_VALUE not in error.message
    assert boto("secretsmanager", cloud).list_secrets()["SecretList"] == []

    boto("secretsmanager", cloud).create_secret(Name="exists", SecretString="x" * 16)
    unset = {"secret_id": "exists", "value_from": "env:IRCTL_TEST_UNSET_VARIABLE"}
    error = failure("aws.secretsmanager.put_secret_value", unset, context(cloud))
    assert "IRCTL_TEST_UNSET_VARIABLE" in error.message
    assert error.retryable is False

    # A value pasted where a reference belongs is refused without being echoed.
    found = default_registry.get("aws.secretsmanager.put_secret_value")
    with pytest.raises(ValidationError) as caught:
        found.parse({"secret_id": "exists", "value_from": NEW_VALUE})
    assert NEW_VALUE not in str(caught.value)
    with pytest.raises(ValidationError):
        found.parse({"secret_id": "exists"})


def test_secret_simulate_touches_nothing(
    cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sm = boto("secretsmanager", cloud)
    sm.create_secret(Name="exchange/admin-token", SecretString="old-value-123456")
    monkeypatch.setenv("IRCTL_TEST_NEW_TOKEN", NEW_VALUE)
    inputs = {"secret_id": "exchange/admin-token", "value_from": "env:IRCTL_TEST_NEW_TOKEN"}
    out = simulate("aws.secretsmanager.put_secret_value", inputs)
    assert out["simulated"] is True
    assert NEW_VALUE not in json.dumps(out)
    assert len(_versions(sm, "exchange/admin-token")) == 1


# --- ECS ------------------------------------------------------------------------------------


def _ecs_service(cloud: dict[str, Any], desired: int = 3) -> Any:
    ecs = boto("ecs", cloud)
    ecs.create_cluster(clusterName="wallets")
    ecs.register_task_definition(
        family="signer", containerDefinitions=[{"name": "signer", "image": "signer", "memory": 128}]
    )
    ecs.create_service(
        cluster="wallets", serviceName="hot-signer", taskDefinition="signer", desiredCount=desired
    )
    return ecs


def _desired(ecs: Any) -> int:
    found = ecs.describe_services(cluster="wallets", services=["hot-signer"])["services"][0]
    return int(found["desiredCount"])


def test_ecs_scale_to_zero_and_back(cloud: dict[str, Any]) -> None:
    ecs = _ecs_service(cloud)
    ctx = context(cloud)
    stop = {"cluster": "wallets", "service": "hot-signer", "desired_count": 0}

    assert probe("aws.ecs.scale_service", stop, ctx).state == "not_done"
    out = run("aws.ecs.scale_service", stop, ctx)
    assert out["previous_desired_count"] == 3
    assert out["desired_count"] == 0
    assert out["changed"] is True
    assert _desired(ecs) == 0
    assert probe("aws.ecs.scale_service", stop, ctx).state == "done"

    # the same step again (a retry after its change went through): still what it found first
    again = run("aws.ecs.scale_service", stop, ctx)
    assert (again["previous_desired_count"], again["changed"]) == (3, False)
    crashed = context(cloud)
    crashed.facts.update(ctx.facts)  # what the crashed attempt journaled before the change
    assert probe("aws.ecs.scale_service", stop, crashed).outputs["previous_desired_count"] == 3
    other = run("aws.ecs.scale_service", stop, context(cloud, "another-step"))
    assert (other["previous_desired_count"], other["changed"]) == (0, False)

    restore = {**stop, "desired_count": out["previous_desired_count"]}
    assert run("aws.ecs.scale_service", restore, context(cloud, "restore"))[
        "previous_desired_count"
    ] == 0
    assert _desired(ecs) == 3


def test_ecs_simulate_and_unknown(cloud: dict[str, Any]) -> None:
    ecs = _ecs_service(cloud)
    out = simulate("aws.ecs.scale_service", {"cluster": "wallets", "service": "hot-signer",
                                             "desired_count": 0})  # fmt: skip
    assert out["simulated"] is True
    assert _desired(ecs) == 3

    missing = {"cluster": "wallets", "service": "no-such-service", "desired_count": 0}
    error = failure("aws.ecs.scale_service", missing, context(cloud))
    assert "no-such-service" in error.message
    assert "not found" in error.message
    assert error.retryable is False

    error = failure("aws.ecs.scale_service", {**missing, "cluster": "no-cluster"}, context(cloud))
    assert "no-cluster" in error.message
    assert error.retryable is False


# --- Auto Scaling ---------------------------------------------------------------------------


def _asg(cloud: dict[str, Any]) -> Any:
    ec2, asg = boto("ec2", cloud), boto("autoscaling", cloud)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    asg.create_launch_configuration(
        LaunchConfigurationName="signer-lc", ImageId=image, InstanceType="t3.micro"
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="signers", LaunchConfigurationName="signer-lc",
        MinSize=1, MaxSize=3, DesiredCapacity=2, AvailabilityZones=["us-east-1a"],
    )  # fmt: skip
    return asg


def _group(asg: Any) -> tuple[int, int, int, list[str]]:
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["signers"])["AutoScalingGroups"][0]
    processes = sorted(p["ProcessName"] for p in g["SuspendedProcesses"])
    return g["MinSize"], g["MaxSize"], g["DesiredCapacity"], processes


def test_asg_halt_and_restore(cloud: dict[str, Any]) -> None:
    asg = _asg(cloud)
    ctx = context(cloud)
    halt = {"group": "signers", "min": 0, "max": 0, "desired": 0,
            "suspend_processes": ["Launch", "AlarmNotification", "ScheduledActions"]}  # fmt: skip

    assert probe("aws.autoscaling.set_capacity", halt, ctx).state == "not_done"
    out = run("aws.autoscaling.set_capacity", halt, ctx)
    assert out["previous"] == {"min": 1, "max": 3, "desired": 2, "suspended_processes": []}
    assert (out["min"], out["max"], out["desired"]) == (0, 0, 0)
    assert out["changed"] is True
    assert _group(asg) == (0, 0, 0, ["AlarmNotification", "Launch", "ScheduledActions"])
    assert probe("aws.autoscaling.set_capacity", halt, ctx).state == "done"
    assert run("aws.autoscaling.set_capacity", halt, ctx)["changed"] is False

    previous = out["previous"]
    restore = {"group": "signers", "min": previous["min"], "max": previous["max"],
               "desired": previous["desired"],
               "resume_processes": ["Launch", "AlarmNotification", "ScheduledActions"]}  # fmt: skip
    assert probe("aws.autoscaling.set_capacity", restore, ctx).state == "not_done"
    back = run("aws.autoscaling.set_capacity", restore, ctx)
    assert back["suspended_processes"] == []
    assert _group(asg) == (1, 3, 2, [])
    assert probe("aws.autoscaling.set_capacity", restore, ctx).state == "done"


def test_asg_scale_up_records_what_a_rollback_restores(cloud: dict[str, Any]) -> None:
    asg = _asg(cloud)
    asg.suspend_processes(AutoScalingGroupName="signers", ScalingProcesses=["AZRebalance"])
    ctx = context(cloud, "scale-api")
    up = {"group": "signers", "min": 4, "max": 10, "desired": 6}
    out = run("aws.autoscaling.set_capacity", up, ctx)
    before = {"min": 1, "max": 3, "desired": 2, "suspended_processes": ["AZRebalance"]}
    assert out["previous"] == before
    assert ctx.facts["previous"] == before  # journaled before UpdateAutoScalingGroup was sent
    assert _group(asg) == (4, 10, 6, ["AZRebalance"])

    # the process died after the change: the probe reads the group and the journaled sizes
    crashed = context(cloud, "scale-api")
    crashed.facts.update(ctx.facts)
    found = probe("aws.autoscaling.set_capacity", up, crashed)
    assert found.state == "done"
    assert found.outputs["previous"] == before
    assert (found.outputs["min"], found.outputs["max"], found.outputs["desired"]) == (4, 10, 6)
    # a retry of the same step finds the change made and still reports the sizes from before
    assert run("aws.autoscaling.set_capacity", up, crashed)["previous"] == before

    # a step that found the group already at its sizes (nothing journaled): what it found
    fresh = probe("aws.autoscaling.set_capacity", up, context(cloud, "other"))
    assert fresh.outputs["previous"] == {**before, "min": 4, "max": 10, "desired": 6}

    previous = out["previous"]
    rollback = {"group": "signers", "min": previous["min"], "max": previous["max"],
                "desired": previous["desired"]}  # fmt: skip
    back = run("aws.autoscaling.set_capacity", rollback, context(cloud, "rollback"))
    assert back["previous"] == {**before, "min": 4, "max": 10, "desired": 6}
    assert _group(asg) == (1, 3, 2, ["AZRebalance"])


def test_asg_simulate_unknown_and_bad_inputs(cloud: dict[str, Any]) -> None:
    asg = _asg(cloud)
    halt = {"group": "signers", "min": 0, "max": 0, "desired": 0, "suspend_processes": ["Launch"]}
    assert simulate("aws.autoscaling.set_capacity", halt)["simulated"] is True
    assert _group(asg) == (1, 3, 2, [])

    error = failure("aws.autoscaling.set_capacity", {**halt, "group": "no-group"}, context(cloud))
    assert "no-group" in error.message
    assert error.retryable is False

    found = default_registry.get("aws.autoscaling.set_capacity")
    for bad in (
        {"group": "signers", "min": 3, "max": 1},
        {"group": "signers", "desired": 5, "max": 2},
        {"group": "signers"},
        {"group": "signers", "suspend_processes": ["Launch"], "resume_processes": ["Launch"]},
        {"group": "signers", "suspend_processes": ["Lunch"]},
        {"group": "signers", "min": 0, "size": 1},
    ):
        with pytest.raises(ValidationError):
            found.parse(bad)


# --- Lambda ---------------------------------------------------------------------------------


def _function(cloud: dict[str, Any]) -> Any:
    role = boto("iam", cloud).create_role(RoleName="sweeper", AssumeRolePolicyDocument="{}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("sweep.py", "def handler(event, context):\n    return None\n")
    lam = boto("lambda", cloud)
    lam.create_function(
        FunctionName="sweeper", Runtime="python3.11", Role=role["Role"]["Arn"],
        Handler="sweep.handler", Code={"ZipFile": code.getvalue()},
    )  # fmt: skip
    return lam


def test_lambda_stop_and_restore(cloud: dict[str, Any]) -> None:
    lam = _function(cloud)
    ctx = context(cloud)
    stop = {"function_name": "sweeper", "reserved": 0}

    assert probe("aws.lambda.set_concurrency", stop, ctx).state == "not_done"
    out = run("aws.lambda.set_concurrency", stop, ctx)
    assert (out["previous_reserved"], out["reserved"], out["changed"]) == (None, 0, True)
    assert lam.get_function_concurrency(FunctionName="sweeper")["ReservedConcurrentExecutions"] == 0
    assert probe("aws.lambda.set_concurrency", stop, ctx).state == "done"
    assert run("aws.lambda.set_concurrency", stop, ctx)["changed"] is False

    restore = {"function_name": "sweeper", "reserved": out["previous_reserved"]}
    ctx = context(cloud, "restore")
    assert run("aws.lambda.set_concurrency", restore, ctx)["previous_reserved"] == 0
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(
        FunctionName="sweeper"
    )
    assert probe("aws.lambda.set_concurrency", restore, ctx).state == "done"

    assert simulate("aws.lambda.set_concurrency", stop)["simulated"] is True
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(
        FunctionName="sweeper"
    )

    error = failure("aws.lambda.set_concurrency", {"function_name": "nope", "reserved": 0}, ctx)
    assert "nope" in error.message
    assert "not found" in error.message
    assert error.retryable is False


# --- EventBridge ----------------------------------------------------------------------------


def test_events_disable_and_enable(cloud: dict[str, Any]) -> None:
    events = boto("events", cloud)
    events.put_rule(Name="hourly-sweep", ScheduleExpression="rate(1 hour)")
    ctx = context(cloud)
    rule = {"name": "hourly-sweep"}

    assert probe("aws.events.disable_rule", rule, ctx).state == "not_done"
    out = run("aws.events.disable_rule", rule, ctx)
    assert (out["previous_state"], out["state"], out["changed"]) == ("ENABLED", "DISABLED", True)
    assert out["event_bus"] == "default"
    assert events.describe_rule(Name="hourly-sweep")["State"] == "DISABLED"
    assert probe("aws.events.disable_rule", rule, ctx).state == "done"
    assert run("aws.events.disable_rule", rule, ctx)["changed"] is False

    assert simulate("aws.events.enable_rule", rule)["simulated"] is True
    assert events.describe_rule(Name="hourly-sweep")["State"] == "DISABLED"

    crashed = context(cloud)
    crashed.facts.update(ctx.facts)
    assert probe("aws.events.disable_rule", rule, crashed).outputs["previous_state"] == "ENABLED"
    ctx = context(cloud, "enable")
    back = run("aws.events.enable_rule", rule, ctx)
    assert (back["previous_state"], back["state"]) == ("DISABLED", "ENABLED")
    assert events.describe_rule(Name="hourly-sweep")["State"] == "ENABLED"
    assert probe("aws.events.enable_rule", rule, ctx).state == "done"

    error = failure("aws.events.disable_rule", {"name": "no-such-rule"}, ctx)
    assert "no-such-rule" in error.message
    assert error.retryable is False


# --- SSM ------------------------------------------------------------------------------------


def test_ssm_kill_switch(cloud: dict[str, Any]) -> None:
    ssm = boto("ssm", cloud)
    ssm.put_parameter(Name="/exchange/withdrawals/enabled", Value="true", Type="String")
    ctx = context(cloud)
    off = {"name": "/exchange/withdrawals/enabled", "value": "false"}

    assert probe("aws.ssm.put_parameter", off, ctx).state == "not_done"
    out = run("aws.ssm.put_parameter", off, ctx)
    assert (out["previous_value"], out["version"], out["changed"]) == ("true", 2, True)
    stored = ssm.get_parameter(Name="/exchange/withdrawals/enabled")["Parameter"]
    assert (stored["Value"], stored["Version"]) == ("false", 2)

    found = probe("aws.ssm.put_parameter", off, ctx)
    assert found.state == "done"
    assert found.outputs["previous_value"] == "true"  # from the parameter's history
    again = run("aws.ssm.put_parameter", off, ctx)
    assert (again["version"], again["changed"]) == (2, False)
    assert ssm.get_parameter(Name="/exchange/withdrawals/enabled")["Parameter"]["Version"] == 2

    assert simulate("aws.ssm.put_parameter", {**off, "value": "true"})["simulated"] is True
    assert ssm.get_parameter(Name="/exchange/withdrawals/enabled")["Parameter"]["Value"] == "false"

    created = run("aws.ssm.put_parameter", {"name": "/flags/new", "value": "on"}, ctx)
    assert (created["previous_value"], created["version"]) == (None, 1)

    error = failure("aws.ssm.put_parameter", {**off, "value": "maybe", "overwrite": False}, ctx)
    assert "/exchange/withdrawals/enabled" in error.message
    assert error.retryable is False

    ssm.put_parameter(Name="/secure/thing", Value="hidden", Type="SecureString")
    error = failure("aws.ssm.put_parameter", {"name": "/secure/thing", "value": "x"}, ctx)
    assert "SecureString" in error.message
    with pytest.raises(ValidationError):
        default_registry.get("aws.ssm.put_parameter").parse(
            {"name": "/a", "value": "b", "type": "SecureString"}
        )


# --- S3 evidence ----------------------------------------------------------------------------


def _bucket(cloud: dict[str, Any], name: str = "ir-evidence", locked: bool = True) -> Any:
    s3 = boto("s3", cloud)
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
    return s3


def test_s3_evidence_under_compliance_lock(cloud: dict[str, Any]) -> None:
    s3 = _bucket(cloud)
    ctx = context(cloud)
    body = "ledger,balance\nBTC,12.5\n"
    inputs = {"bucket": "ir-evidence", "key": "run-1/ledger.csv", "body": body,
              "retain_until": "365d"}  # fmt: skip

    assert probe("aws.s3.put_evidence", inputs, ctx).state == "not_done"
    before = datetime.now(UTC)
    out = run("aws.s3.put_evidence", inputs, ctx)
    assert out["sha256"] == hashlib.sha256(body.encode()).hexdigest()
    assert out["mode"] == "COMPLIANCE"
    assert out["changed"] is True

    head = s3.head_object(Bucket="ir-evidence", Key="run-1/ledger.csv")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=364) < until < before + timedelta(days=366)
    assert out["retain_until"] == until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert head["VersionId"] == out["version_id"]
    assert head["Metadata"]["sha256"] == out["sha256"]
    got = s3.get_object(Bucket="ir-evidence", Key="run-1/ledger.csv")["Body"].read()
    assert got == body.encode()

    found = probe("aws.s3.put_evidence", inputs, ctx)
    assert found.state == "done"
    assert found.outputs["version_id"] == out["version_id"]
    again = run("aws.s3.put_evidence", inputs, ctx)
    assert (again["version_id"], again["changed"]) == (out["version_id"], False)
    versions = s3.list_object_versions(Bucket="ir-evidence")["Versions"]
    assert len(versions) == 1

    other = {**inputs, "body": "tampered"}
    assert probe("aws.s3.put_evidence", other, ctx).state == "not_done"
    error = failure("aws.s3.put_evidence", other, ctx)
    assert "s3://ir-evidence/run-1/ledger.csv" in error.message
    assert "new key" in error.message
    assert error.retryable is False


def test_s3_evidence_from_file_with_date(cloud: dict[str, Any], tmp_path: Path) -> None:
    s3 = _bucket(cloud)
    export = tmp_path / "export.bin"
    export.write_bytes(bytes(range(256)) * 10)
    inputs = {"bucket": "ir-evidence", "key": "export.bin", "body_from_file": str(export),
              "retain_until": "2099-12-31", "mode": "GOVERNANCE"}  # fmt: skip
    out = run("aws.s3.put_evidence", inputs, context(cloud))
    assert out["retain_until"] == "2099-12-31T00:00:00Z"
    assert out["size"] == 2560
    head = s3.head_object(Bucket="ir-evidence", Key="export.bin")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] == datetime(2099, 12, 31, tzinfo=UTC)
    assert head["Metadata"]["sha256"] == hashlib.sha256(export.read_bytes()).hexdigest()


def test_s3_evidence_kept_for_seven_years(cloud: dict[str, Any]) -> None:
    """Retention outlasts the 366d a timer may: 2555d (irctl.yaml's vars.evidence.retain)."""
    s3 = _bucket(cloud)
    inputs = {"bucket": "ir-evidence", "key": "k", "body": "x", "retain_until": "2555d"}
    before = datetime.now(UTC)
    run("aws.s3.put_evidence", inputs, context(cloud))
    until = s3.head_object(Bucket="ir-evidence", Key="k")["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=2554) < until < before + timedelta(days=2556)
    with pytest.raises(ValidationError, match="longer than a century"):
        default_registry.get("aws.s3.put_evidence").parse({**inputs, "retain_until": "36501d"})


def test_s3_evidence_refusals(cloud: dict[str, Any], tmp_path: Path) -> None:
    s3 = _bucket(cloud, "plain-bucket", locked=False)
    ctx = context(cloud)
    inputs = {"bucket": "plain-bucket", "key": "k", "body": "x", "retain_until": "30d"}
    error = failure("aws.s3.put_evidence", inputs, ctx)
    assert "s3://plain-bucket/k" in error.message
    assert error.retryable is False
    assert "Contents" not in s3.list_objects_v2(Bucket="plain-bucket")

    error = failure("aws.s3.put_evidence", {**inputs, "bucket": "no-such-bucket"}, ctx)
    assert "no-such-bucket" in error.message
    assert error.retryable is False

    error = failure("aws.s3.put_evidence", {**inputs, "retain_until": "2001-01-01"}, ctx)
    assert "past" in error.message

    missing = {**inputs, "body": None, "body_from_file": str(tmp_path / "absent")}
    error = failure("aws.s3.put_evidence", missing, ctx)
    assert "absent" in error.message
    assert error.retryable is False

    assert simulate("aws.s3.put_evidence", inputs)["simulated"] is True
    assert "Contents" not in s3.list_objects_v2(Bucket="plain-bucket")

    found = default_registry.get("aws.s3.put_evidence")
    for bad in (
        {"bucket": "b-b", "key": "k", "retain_until": "30d"},
        {"bucket": "b-b", "key": "k", "body": "x", "body_from_file": "f", "retain_until": "30d"},
        {"bucket": "b-b", "key": "k", "body": "x", "retain_until": "next year"},
        {"bucket": "b-b", "key": "k", "body": "x", "retain_until": "30d", "mode": "LEGAL"},
    ):
        with pytest.raises(ValidationError):
            found.parse(bad)


# --- through the engine ---------------------------------------------------------------------

HALT_AND_RESUME = """\
irctl: 1
kind: runbook
id: halt-and-resume
title: Stop the hot-wallet workers, rotate the admin token, then resume
steps:
  - id: freeze-key
    action: aws.kms.disable_key
    with: {key_id: alias/hot-wallet}
  - id: stop-signers
    action: aws.ecs.scale_service
    with: {cluster: wallets, service: hot-signer, desired_count: 0}
  - id: stop-sweeps
    action: aws.events.disable_rule
    with: {name: hourly-sweep}
  - id: kill-switch
    action: aws.ssm.put_parameter
    with: {name: /exchange/withdrawals/enabled, value: "false"}
  - id: rotate-token
    action: aws.secretsmanager.put_secret_value
    with: {secret_id: exchange/admin-token, generate: {length: 48}}
  - id: evidence
    action: aws.s3.put_evidence
    with: {bucket: ir-evidence, key: "{{ run.id }}/note.txt", body: "halted", retain_until: 30d}
  - id: restart-signers
    action: aws.ecs.scale_service
    with:
      cluster: wallets
      service: hot-signer
      desired_count: "{{ steps['stop-signers'].outputs.previous_desired_count }}"
  - id: switch-on
    action: aws.ssm.put_parameter
    with:
      name: /exchange/withdrawals/enabled
      value: "{{ steps['kill-switch'].outputs.previous_value }}"
"""


def test_halt_and_resume_through_the_engine(cloud: dict[str, Any], tmp_path: Path) -> None:
    from irctl.engine.engine import Engine
    from irctl.journal.store import Store
    from irctl.runbook.loader import load_runbook_text
    from irctl.runbook.model import Config

    kms = boto("kms", cloud)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/hot-wallet", TargetKeyId=key_id)
    ecs = _ecs_service(cloud)
    boto("events", cloud).put_rule(Name="hourly-sweep", ScheduleExpression="rate(1 hour)")
    ssm = boto("ssm", cloud)
    ssm.put_parameter(Name="/exchange/withdrawals/enabled", Value="true", Type="String")
    sm = boto("secretsmanager", cloud)
    sm.create_secret(Name="exchange/admin-token", SecretString="old-value-123456")
    _bucket(cloud)

    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store, config=Config.model_validate({"integrations": {"aws": cloud}}))
    runbook = load_runbook_text(HALT_AND_RESUME, "halt-and-resume.yaml")
    run_id = engine.create_run(runbook, HALT_AND_RESUME, {}, initiator="oncall")
    state = engine.execute(run_id)
    assert state.status == "succeeded", [
        (k, s.error) for k, s in state.steps.items() if s.status != "succeeded"
    ]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    assert boto("events", cloud).describe_rule(Name="hourly-sweep")["State"] == "DISABLED"
    assert _desired(ecs) == 3  # stopped, then restored from the recorded previous count
    assert state.steps["restart-signers"].outputs["previous_desired_count"] == 0
    history = ssm.get_parameter_history(Name="/exchange/withdrawals/enabled")["Parameters"]
    assert [h["Value"] for h in history] == ["true", "false", "true"]
    head = boto("s3", cloud).head_object(Bucket="ir-evidence", Key=f"{run_id}/note.txt")
    assert head["ObjectLockMode"] == "COMPLIANCE"

    token = sm.get_secret_value(SecretId="exchange/admin-token")["SecretString"]
    assert len(token) == 48
    assert token not in "\n".join(store.lines(run_id))
    store.close()
