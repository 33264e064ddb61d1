"""aws.kms.revoke_grant and aws.kms.list_grants against moto's KMS, through the registry.

Every effect is read back with ListGrants, never taken from the action's outputs.  moto's
ListGrants ignores its GranteePrincipal filter (it returns every grant of the key), which
is why the action filters for itself; these tests hold either way.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from irctl.actions import ActionContext, Probe, default_registry
from irctl.errors import ActionError
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

SUSPECT = "arn:aws:iam::123456789012:role/treasury-ops-jdoe"
SERVICE = "arn:aws:iam::123456789012:role/withdrawal-signer"
DEAD = {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9", "max_attempts": 1}


def context(config: dict[str, Any], step: str = "revoke") -> ActionContext:
    return ActionContext(run_id="run-1", step_id=step, config=config, timeout=30)


def run(name: str, inputs: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    found = default_registry.get(name)
    return found.call_run(found.parse(inputs), ctx)


def probe(name: str, inputs: dict[str, Any], ctx: ActionContext) -> Probe:
    found = default_registry.get(name)
    return found.call_probe(found.parse(inputs), ctx)


def _key(aws: dict[str, Any]) -> tuple[Any, str, dict[str, str]]:
    """A signing key with two grants to the suspect and one to the signer service."""
    kms = boto("kms", aws)
    key_id = kms.create_key(Description="treasury signer")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/treasury-signer", TargetKeyId=key_id)
    grants = {
        "sign": kms.create_grant(KeyId=key_id, GranteePrincipal=SUSPECT, Operations=["Sign"],
                                 Name="jdoe-sign")["GrantId"],
        "decrypt": kms.create_grant(
            KeyId=key_id, GranteePrincipal=SUSPECT, Operations=["Decrypt", "GenerateDataKey"],
            RetiringPrincipal=SERVICE,
            Constraints={"EncryptionContextSubset": {"purpose": "treasury"}},
        )["GrantId"],
        "service": kms.create_grant(KeyId=key_id, GranteePrincipal=SERVICE,
                                    Operations=["Sign"])["GrantId"],
    }  # fmt: skip
    return kms, key_id, grants


def _held(kms: Any, key_id: str) -> dict[str, str]:
    return {g["GrantId"]: g["GranteePrincipal"] for g in kms.list_grants(KeyId=key_id)["Grants"]}


def test_revoke_every_grant_to_the_suspect(aws: dict[str, Any]) -> None:
    kms, key_id, grants = _key(aws)
    inputs = {"key_id": "alias/treasury-signer", "grantee_principal": SUSPECT}
    ctx = context(aws)
    assert probe("aws.kms.revoke_grant", inputs, ctx).state == "not_done"

    out = run("aws.kms.revoke_grant", inputs, ctx)
    assert out["key_id"] == key_id
    assert (out["revoked_count"], out["remaining"], out["changed"]) == (2, 0, True)
    revoked = {g["grant_id"]: g for g in out["grants_revoked"]}
    assert set(revoked) == {grants["sign"], grants["decrypt"]}
    # what it takes to make the grant again
    decrypt = revoked[grants["decrypt"]]
    assert decrypt["operations"] == ["Decrypt", "GenerateDataKey"]
    assert decrypt["retiring_principal"] == SERVICE
    assert decrypt["constraints"] == {"EncryptionContextSubset": {"purpose": "treasury"}}
    assert revoked[grants["sign"]]["name"] == "jdoe-sign"
    assert ctx.facts["grants_revoked"] == out["grants_revoked"]  # journaled before revoking
    assert _held(kms, key_id) == {grants["service"]: SERVICE}  # the service keeps its grant

    # the same step again (a retry, a re-run after a crash): nothing left, the same record
    again = run("aws.kms.revoke_grant", inputs, ctx)
    assert (again["changed"], again["grants_revoked"]) == (False, out["grants_revoked"])
    crashed = context(aws)
    crashed.facts.update(ctx.facts)
    found = probe("aws.kms.revoke_grant", inputs, crashed)
    assert found.state == "done"
    assert found.outputs["grants_revoked"] == out["grants_revoked"]

    # a grantee with no grant: nothing to do, and said so
    other = context(aws, "other")
    none = run("aws.kms.revoke_grant", {**inputs, "grantee_principal": SUSPECT + "-x"}, other)
    assert (none["revoked_count"], none["changed"]) == (0, False)
    assert any("no grant left" in note for note in other.notes)


def test_revoke_one_grant_by_id(aws: dict[str, Any]) -> None:
    kms, key_id, grants = _key(aws)
    inputs = {"key_id": key_id, "grant_id": grants["sign"]}
    ctx = context(aws)
    assert probe("aws.kms.revoke_grant", inputs, ctx).state == "not_done"
    out = run("aws.kms.revoke_grant", inputs, ctx)
    assert [g["grant_id"] for g in out["grants_revoked"]] == [grants["sign"]]
    assert set(_held(kms, key_id)) == {grants["decrypt"], grants["service"]}
    assert probe("aws.kms.revoke_grant", inputs, ctx).state == "done"
    assert run("aws.kms.revoke_grant", inputs, ctx)["changed"] is False

    # a grant id nobody revoked is a mistake, not success
    with pytest.raises(ActionError) as caught:
        run("aws.kms.revoke_grant", {"key_id": key_id, "grant_id": "abc123"}, context(aws, "x"))
    assert "no grant abc123" in caught.value.message
    assert caught.value.retryable is False
    assert probe("aws.kms.revoke_grant", {"key_id": key_id, "grant_id": "abc123"},
                 context(aws, "x")).state == "not_done"  # fmt: skip
    with pytest.raises(ActionError, match="not found"):
        run("aws.kms.revoke_grant", {"key_id": "alias/none", "grant_id": "abc"}, context(aws))


def test_list_grants(aws: dict[str, Any]) -> None:
    _, key_id, grants = _key(aws)
    everything = run("aws.kms.list_grants", {"key_id": "alias/treasury-signer"}, context(aws))
    assert everything["count"] == 3
    suspect = run("aws.kms.list_grants",
                  {"key_id": key_id, "grantee_principal": SUSPECT}, context(aws))  # fmt: skip
    assert {g["grant_id"] for g in suspect["grants"]} == {grants["sign"], grants["decrypt"]}


def test_simulate_touches_nothing_and_inputs_are_checked(aws: dict[str, Any]) -> None:
    kms, key_id, grants = _key(aws)
    for name, inputs in (
        ("aws.kms.revoke_grant", {"key_id": key_id, "grantee_principal": SUSPECT}),
        ("aws.kms.list_grants", {"key_id": key_id}),
    ):
        found = default_registry.get(name)
        out = found.call_simulate(found.parse(inputs), context(DEAD))
        assert out["simulated"] is True
        assert key_id in out["would"]
        assert found.idempotent
        for field, spec in found.inputs.model_json_schema()["properties"].items():
            assert spec.get("description"), f"{name}.{field}"
    assert len(_held(kms, key_id)) == 3
    assert default_registry.get("aws.kms.revoke_grant").has_probe

    found = default_registry.get("aws.kms.revoke_grant")
    for bad in (
        {"key_id": key_id},
        {"key_id": key_id, "grantee_principal": SUSPECT, "grant_id": grants["sign"]},
        {"key_id": key_id, "grant_id": "not a grant"},
        {"key_id": key_id, "grantee": SUSPECT},
    ):
        with pytest.raises(ValidationError):
            found.parse(bad)
