"""The aws.wafv2.* actions against moto's WAFv2, through the registry and through the engine.

Every effect is read back with GetWebACL / GetIPSet, never taken from the action's outputs.
A lock conflict is made for real: a proxy in front of moto lets another "responder" change
the web ACL between irctl's read and its write, and moto refuses irctl's stale LockToken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from irctl.actions import ActionContext, Probe, default_registry
from irctl.errors import ActionError
from tests.aws_proxy import AwsProxy, aws_proxy  # noqa: F401
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

ACTIONS = [
    "aws.wafv2.set_rate_rule", "aws.wafv2.block_ip_set", "aws.wafv2.set_managed_rule_group",
    "aws.wafv2.restore_rule",
]  # fmt: skip
#: Where nothing listens: a simulate that called AWS would fail against it.
DEAD = {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9", "max_attempts": 1}
VISIBLE = {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": "x"}
BASELINE = {
    "Name": "allow-office", "Priority": 0, "Action": {"Allow": {}}, "VisibilityConfig": VISIBLE,
    "Statement": {"GeoMatchStatement": {"CountryCodes": ["CH"]}},
}  # fmt: skip
ACL = {"web_acl": "exchange-api", "scope": "REGIONAL"}


def context(config: dict[str, Any], step: str = "step-1") -> ActionContext:
    return ActionContext(run_id="run-1", step_id=step, config=config, timeout=30)


def run(name: str, inputs: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    found = default_registry.get(name)
    return found.call_run(found.parse(inputs), ctx)


def probe(name: str, inputs: dict[str, Any], ctx: ActionContext) -> Probe:
    found = default_registry.get(name)
    return found.call_probe(found.parse(inputs), ctx)


def simulate(name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    found = default_registry.get(name)
    return found.call_simulate(found.parse(inputs), context(DEAD))


def failure(name: str, inputs: dict[str, Any], ctx: ActionContext) -> ActionError:
    with pytest.raises(ActionError) as caught:
        run(name, inputs, ctx)
    return caught.value


def make_acl(cloud: dict[str, Any], scope: str = "REGIONAL", region: str = "us-east-1") -> Any:
    """A web ACL with one rule of its own (moto keeps the rules when an update sends none)."""
    waf = boto("wafv2", {**cloud, "region": region})
    waf.create_web_acl(
        Name="exchange-api", Scope=scope, DefaultAction={"Allow": {}}, VisibilityConfig=VISIBLE,
        Description="public API", Rules=[BASELINE],
        CustomResponseBodies={"slow": {"ContentType": "TEXT_PLAIN", "Content": "slow down"}},
    )  # fmt: skip
    return waf


def web_acl(waf: Any, scope: str = "REGIONAL") -> dict[str, Any]:
    (summary,) = waf.list_web_acls(Scope=scope)["WebACLs"]
    found: dict[str, Any] = waf.get_web_acl(Name="exchange-api", Scope=scope, Id=summary["Id"])
    return found["WebACL"]


def rules(waf: Any, scope: str = "REGIONAL") -> dict[str, dict[str, Any]]:
    return {rule["Name"]: rule for rule in web_acl(waf, scope)["Rules"]}


def test_every_action_is_registered_with_probe_and_simulate() -> None:
    for name in ACTIONS:
        found = default_registry.get(name)
        assert found.idempotent, name
        assert found.has_probe, name
        assert found._simulate is not None, name
        assert found.summary, name
        schema = found.inputs.model_json_schema()
        assert schema.get("additionalProperties") is False, name
        for field, spec in schema["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


# --- set_rate_rule --------------------------------------------------------------------------


def test_rate_rule_added_tightened_restored_and_removed(aws: dict[str, Any]) -> None:
    waf = make_acl(aws)
    ctx = context(aws, "rate-limit")
    rate = {**ACL, "rule_name": "irctl-rate-api", "limit": 2000, "scope_down_path": "/api/"}

    assert probe("aws.wafv2.set_rate_rule", rate, ctx).state == "not_done"
    out = run("aws.wafv2.set_rate_rule", rate, ctx)
    assert (out["previous_rule"], out["changed"], out["lock_conflicts"]) == (None, True, 0)
    stored = rules(waf)["irctl-rate-api"]
    statement = stored["Statement"]["RateBasedStatement"]
    assert (statement["Limit"], statement["AggregateKeyType"]) == (2000, "IP")
    assert statement["EvaluationWindowSec"] == 300
    down = statement["ScopeDownStatement"]["ByteMatchStatement"]
    assert (down["SearchString"], down["PositionalConstraint"]) == (b"/api/", "STARTS_WITH")
    assert stored["Action"] == {"Block": {}}
    assert stored["Priority"] == 1  # after every other rule
    assert out["rule"]["Statement"]["RateBasedStatement"]["ScopeDownStatement"][
        "ByteMatchStatement"
    ]["SearchString"] == "/api/"  # JSON in the record: the byte string as text
    # everything else of the web ACL is as it was: UpdateWebACL replaced the whole of it
    acl = web_acl(waf)
    assert rules(waf)["allow-office"]["Statement"] == BASELINE["Statement"]
    assert (acl["Description"], acl["DefaultAction"]) == ("public API", {"Allow": {}})
    assert acl["CustomResponseBodies"]["slow"]["Content"] == "slow down"
    assert out["web_acl_arn"] == acl["ARN"]

    assert probe("aws.wafv2.set_rate_rule", rate, ctx).state == "done"
    again = run("aws.wafv2.set_rate_rule", rate, ctx)
    assert (again["changed"], again["previous_rule"]) == (False, None)  # journaled before

    # tighter during the attack, in another step: its previous_rule is the rule above
    tighter = {**rate, "limit": 100, "action": "count", "scope_down_path": None}
    ctx2 = context(aws, "tighten")
    out2 = run("aws.wafv2.set_rate_rule", tighter, ctx2)
    assert out2["previous_rule"] == out["rule"]
    stored = rules(waf)["irctl-rate-api"]
    assert stored["Statement"]["RateBasedStatement"]["Limit"] == 100
    assert "ScopeDownStatement" not in stored["Statement"]["RateBasedStatement"]
    assert (stored["Action"], stored["Priority"]) == ({"Count": {}}, 1)

    # the rollback: exactly the rule from before the second step
    restore = {**ACL, "rule_name": "irctl-rate-api", "rule": out2["previous_rule"]}
    ctx3 = context(aws, "restore")
    assert probe("aws.wafv2.restore_rule", restore, ctx3).state == "not_done"
    back = run("aws.wafv2.restore_rule", restore, ctx3)
    assert back["changed"] is True
    assert back["previous_rule"] == out2["rule"]
    assert back["rule"] == out["rule"]
    assert rules(waf)["irctl-rate-api"]["Statement"]["RateBasedStatement"]["Limit"] == 2000
    assert probe("aws.wafv2.restore_rule", restore, ctx3).state == "done"
    assert run("aws.wafv2.restore_rule", restore, ctx3)["changed"] is False

    # and the first step's rollback: there was no rule
    gone = run("aws.wafv2.restore_rule", {**restore, "rule": out["previous_rule"]},
               context(aws, "remove"))  # fmt: skip
    assert (gone["rule"], gone["changed"]) == (None, True)
    assert set(rules(waf)) == {"allow-office"}
    removed = run("aws.wafv2.set_rate_rule", {**rate, "state": "absent"}, context(aws, "x"))
    assert removed["changed"] is False


def test_rate_rule_crash_after_the_write(aws: dict[str, Any]) -> None:
    make_acl(aws)
    rate = {**ACL, "rule_name": "irctl-rate-api", "limit": 500}
    run("aws.wafv2.set_rate_rule", {**rate, "limit": 1000}, context(aws, "first"))
    ctx = context(aws, "second")
    out = run("aws.wafv2.set_rate_rule", rate, ctx)
    assert out["previous_rule"]["Statement"]["RateBasedStatement"]["Limit"] == 1000
    # the process died after the write: the probe reads the ACL and the journaled rule
    crashed = context(aws, "second")
    crashed.facts.update(ctx.facts)
    found = probe("aws.wafv2.set_rate_rule", rate, crashed)
    assert found.state == "done"
    assert found.outputs["previous_rule"] == out["previous_rule"]
    assert found.outputs["rule"] == out["rule"]
    assert found.outputs["limit"] == 500


def test_rate_rule_refusals(aws: dict[str, Any]) -> None:
    waf = make_acl(aws)
    ctx = context(aws)
    error = failure("aws.wafv2.set_rate_rule",
                    {**ACL, "rule_name": "allow-office", "limit": 100}, ctx)  # fmt: skip
    assert "allow-office is not a rate-based rule" in error.message
    assert error.retryable is False
    error = failure("aws.wafv2.set_rate_rule",
                    {**ACL, "rule_name": "rate", "limit": 100, "priority": 0}, ctx)  # fmt: skip
    assert "priority 0 is taken by rule allow-office" in error.message
    error = failure("aws.wafv2.set_rate_rule",
                    {**ACL, "web_acl": "no-such-acl", "rule_name": "r", "limit": 100}, ctx)
    assert "no-such-acl" in error.message
    assert "not found" in error.message
    assert error.retryable is False
    error = failure("aws.wafv2.set_rate_rule", {**ACL, "web_acl_id": "0000", "rule_name": "r",
                                                "limit": 100}, ctx)  # fmt: skip
    assert "id 0000" in error.message
    assert set(rules(waf)) == {"allow-office"}

    found = default_registry.get("aws.wafv2.set_rate_rule")
    for bad in (
        {**ACL, "rule_name": "r"},  # no limit
        {**ACL, "rule_name": "r", "limit": 5},
        {**ACL, "rule_name": "r", "limit": 100, "action": "allow"},
        {**ACL, "rule_name": "r", "limit": 100, "scope": "GLOBAL"},
        {**ACL, "rule_name": "r", "limit": 100, "scope_down_path": "api"},
        {**ACL, "rule_name": "bad name", "limit": 100},
        {**ACL, "rule_name": "r", "limit": 100, "limt": 1},
    ):
        with pytest.raises(ValidationError):
            found.parse(bad)


def test_cloudfront_web_acls_are_managed_in_us_east_1(aws: dict[str, Any]) -> None:
    waf = make_acl(aws, scope="CLOUDFRONT")
    elsewhere = {**aws, "region": "eu-west-1"}
    inputs = {**ACL, "scope": "CLOUDFRONT", "rule_name": "irctl-rate", "limit": 300}
    out = run("aws.wafv2.set_rate_rule", inputs, context(elsewhere))
    assert ":global/webacl/exchange-api/" in out["web_acl_arn"]
    assert "irctl-rate" in rules(waf, "CLOUDFRONT")
    assert boto("wafv2", elsewhere).list_web_acls(Scope="REGIONAL")["WebACLs"] == []


def test_moto_keeps_the_rules_when_an_update_sends_none(aws: dict[str, Any]) -> None:
    """moto 5.2 ignores ``Rules=[]`` in UpdateWebACL (AWS empties the ACL): removing the last
    rule of a web ACL cannot be done against moto.  The read-back after the write catches it
    instead of reporting a removal that did not happen."""
    waf = boto("wafv2", aws)
    waf.create_web_acl(Name="exchange-api", Scope="REGIONAL", DefaultAction={"Allow": {}},
                       VisibilityConfig=VISIBLE, Rules=[])  # fmt: skip
    rate = {**ACL, "rule_name": "only", "limit": 100}
    run("aws.wafv2.set_rate_rule", rate, context(aws))
    error = failure("aws.wafv2.set_rate_rule", {**rate, "state": "absent"}, context(aws, "rm"))
    assert "WAF accepted the update of rule only but reading the web ACL back" in error.message
    assert error.retryable is False
    assert set(rules(waf)) == {"only"}


# --- lock conflicts -------------------------------------------------------------------------


def _other_responder(waf: Any, times: int) -> Any:
    """Before each of irctl's first ``times`` UpdateWebACL calls, someone else adds a rule."""
    made = []

    def change(request: dict[str, Any]) -> None:
        if len(made) >= times:
            return
        acl = waf.get_web_acl(Name=request["Name"], Scope=request["Scope"], Id=request["Id"])
        name = f"console-{len(made)}"
        added = {**BASELINE, "Name": name, "Priority": 10 + len(made)}
        waf.update_web_acl(
            Name=request["Name"], Scope=request["Scope"], Id=request["Id"],
            DefaultAction={"Allow": {}}, VisibilityConfig=VISIBLE,
            Rules=[*acl["WebACL"]["Rules"], added], LockToken=acl["LockToken"],
        )  # fmt: skip
        made.append(name)

    return change


def test_a_lock_conflict_is_read_again_and_retried(
    aws_proxy: tuple[AwsProxy, dict[str, Any]], aws: dict[str, Any]
) -> None:
    proxy, through = aws_proxy
    waf = make_acl(aws)
    proxy.before["AWSWAF_20190729.UpdateWebACL"] = _other_responder(waf, times=2)
    ctx = context(through)
    out = run("aws.wafv2.set_rate_rule", {**ACL, "rule_name": "irctl-rate", "limit": 100}, ctx)
    assert out["lock_conflicts"] == 2
    assert proxy.seen.count("AWSWAF_20190729.UpdateWebACL") == 3
    # the other responder's rules are kept: irctl's write was made on what they left
    assert set(rules(waf)) == {"allow-office", "console-0", "console-1", "irctl-rate"}
    assert rules(waf)["irctl-rate"]["Priority"] == 12
    assert sum("WAFOptimisticLockException" in note for note in ctx.notes) == 2


def test_lock_conflicts_without_end_fail_the_step_as_retryable(
    aws_proxy: tuple[AwsProxy, dict[str, Any]], aws: dict[str, Any]
) -> None:
    proxy, through = aws_proxy
    waf = make_acl(aws)
    proxy.before["AWSWAF_20190729.UpdateWebACL"] = _other_responder(waf, times=100)
    error = failure("aws.wafv2.set_rate_rule",
                    {**ACL, "rule_name": "irctl-rate", "limit": 100}, context(through))
    assert "changed by someone else 5 times" in error.message
    assert "wrote nothing" in error.message
    assert error.retryable is True
    assert "irctl-rate" not in rules(waf)
    assert proxy.seen.count("AWSWAF_20190729.UpdateWebACL") == 5


# --- set_managed_rule_group -----------------------------------------------------------------


def test_managed_rule_group_on_count_off(aws: dict[str, Any]) -> None:
    waf = make_acl(aws)
    group = {**ACL, "rule_group": "AWSManagedRulesAmazonIpReputationList", "override": "count"}
    ctx = context(aws, "reputation-count")
    assert probe("aws.wafv2.set_managed_rule_group", group, ctx).state == "not_done"
    out = run("aws.wafv2.set_managed_rule_group", group, ctx)
    assert out["rule_name"] == "AWS-AWSManagedRulesAmazonIpReputationList"
    stored = rules(waf)[out["rule_name"]]
    assert stored["Statement"]["ManagedRuleGroupStatement"] == {
        "VendorName": "AWS", "Name": "AWSManagedRulesAmazonIpReputationList",
    }  # fmt: skip
    assert stored["OverrideAction"] == {"Count": {}}
    assert "Action" not in stored
    assert probe("aws.wafv2.set_managed_rule_group", group, ctx).state == "done"

    enforce = {**group, "override": "none"}
    on = run("aws.wafv2.set_managed_rule_group", enforce, context(aws, "reputation-on"))
    assert on["previous_rule"]["OverrideAction"] == {"Count": {}}
    assert rules(waf)[out["rule_name"]]["OverrideAction"] == {"None": {}}
    assert run("aws.wafv2.set_managed_rule_group", enforce, ctx)["changed"] is False

    off = run("aws.wafv2.set_managed_rule_group", {**group, "state": "absent"},
              context(aws, "reputation-off"))  # fmt: skip
    assert off["previous_rule"] == on["rule"]
    assert set(rules(waf)) == {"allow-office"}


def test_managed_rule_group_the_console_added_is_changed_in_place(aws: dict[str, Any]) -> None:
    waf = boto("wafv2", aws)
    common = {
        "Name": "core-rules", "Priority": 3, "OverrideAction": {"None": {}},
        "VisibilityConfig": VISIBLE,
        "Statement": {"ManagedRuleGroupStatement": {
            "VendorName": "AWS", "Name": "AWSManagedRulesCommonRuleSet",
            "ExcludedRules": [{"Name": "SizeRestrictions_BODY"}],
        }},
    }  # fmt: skip
    waf.create_web_acl(Name="exchange-api", Scope="REGIONAL", DefaultAction={"Allow": {}},
                       VisibilityConfig=VISIBLE, Rules=[BASELINE, common])  # fmt: skip
    group = {**ACL, "rule_group": "AWSManagedRulesCommonRuleSet", "override": "count"}
    out = run("aws.wafv2.set_managed_rule_group", group, context(aws))
    assert out["rule_name"] == "core-rules"
    stored = rules(waf)["core-rules"]
    assert stored["OverrideAction"] == {"Count": {}}
    assert stored["Priority"] == 3
    assert stored["Statement"]["ManagedRuleGroupStatement"]["ExcludedRules"] == [
        {"Name": "SizeRestrictions_BODY"}
    ]
    assert set(rules(waf)) == {"allow-office", "core-rules"}

    error = failure("aws.wafv2.set_managed_rule_group", {**group, "rule_name": "allow-office"},
                    context(aws))  # fmt: skip
    assert "does not hold the managed rule group" in error.message


# --- block_ip_set ---------------------------------------------------------------------------


def _ip_set(waf: Any, name: str = "irctl-ddos") -> dict[str, Any]:
    (summary,) = [s for s in waf.list_ip_sets(Scope="REGIONAL")["IPSets"] if s["Name"] == name]
    found: dict[str, Any] = waf.get_ip_set(Name=name, Scope="REGIONAL", Id=summary["Id"])
    return found["IPSet"]


def test_block_ip_set_created_added_to_and_unblocked(aws: dict[str, Any]) -> None:
    waf = make_acl(aws)
    block = {**ACL, "ip_set": "irctl-ddos", "addresses": ["198.51.100.0/24", "203.0.113.7/32"]}
    ctx = context(aws, "block")
    assert probe("aws.wafv2.block_ip_set", block, ctx).state == "not_done"
    out = run("aws.wafv2.block_ip_set", block, ctx)
    assert (out["created_ip_set"], out["previous_addresses"]) == (True, None)
    assert out["addresses"] == ["198.51.100.0/24", "203.0.113.7/32"]
    held = _ip_set(waf)
    assert (held["IPAddressVersion"], sorted(held["Addresses"])) == ("IPV4", out["addresses"])
    stored = rules(waf)["irctl-block-irctl-ddos"]
    assert stored["Statement"] == {"IPSetReferenceStatement": {"ARN": held["ARN"]}}
    assert stored["Action"] == {"Block": {}}
    assert out["ip_set_arn"] == held["ARN"]
    assert probe("aws.wafv2.block_ip_set", block, ctx).state == "done"
    again = run("aws.wafv2.block_ip_set", block, ctx)
    assert (again["changed"], again["created_ip_set"]) == (False, True)

    # more attackers, a later step: added to the set; the rule is there already
    more = {**block, "addresses": ["192.0.2.0/28"]}
    out2 = run("aws.wafv2.block_ip_set", more, context(aws, "block-more"))
    assert out2["previous_addresses"] == out["addresses"]
    assert sorted(_ip_set(waf)["Addresses"]) == [
        "192.0.2.0/28", "198.51.100.0/24", "203.0.113.7/32",
    ]  # fmt: skip
    assert (out2["previous_rule"], out2["rule"]) == (out["rule"], out["rule"])
    assert out2["created_ip_set"] is False

    # rolled back: the rule goes, then the set holds what it held before the later step
    off = run("aws.wafv2.block_ip_set", {**ACL, "ip_set": "irctl-ddos", "state": "absent"},
              context(aws, "unblock"))  # fmt: skip
    assert (off["changed"], off["rule"]) == (True, None)
    assert off["previous_rule"] == out["rule"]
    assert set(rules(waf)) == {"allow-office"}
    put_back = {**block, "addresses": out2["previous_addresses"], "mode": "replace"}
    back = run("aws.wafv2.block_ip_set", put_back, context(aws, "put-back"))
    assert sorted(_ip_set(waf)["Addresses"]) == out["addresses"]
    assert back["previous_addresses"] == sorted(out2["addresses"])


def test_block_ip_set_recognises_a_rule_that_blocks_it_already(aws: dict[str, Any]) -> None:
    waf = make_acl(aws)
    made = waf.create_ip_set(Name="irctl-ddos", Scope="REGIONAL", IPAddressVersion="IPV6",
                             Addresses=["2001:db8::/32"], Description="known bad")["Summary"]
    acl_id = web_acl(waf)["Id"]
    token = waf.get_web_acl(Name="exchange-api", Scope="REGIONAL", Id=acl_id)["LockToken"]
    mine = {"Name": "blocklist", "Priority": 5, "Action": {"Block": {}},
            "VisibilityConfig": VISIBLE,
            "Statement": {"IPSetReferenceStatement": {"ARN": made["ARN"]}}}  # fmt: skip
    waf.update_web_acl(Name="exchange-api", Scope="REGIONAL", Id=acl_id,
                       DefaultAction={"Allow": {}}, VisibilityConfig=VISIBLE,
                       Rules=[BASELINE, mine], LockToken=token)  # fmt: skip
    out = run("aws.wafv2.block_ip_set",
              {**ACL, "ip_set": "irctl-ddos", "addresses": ["2001:DB8:1::/48"]}, context(aws))
    assert out["rule_name"] == "blocklist"
    assert out["previous_addresses"] == ["2001:db8::/32"]
    assert set(rules(waf)) == {"allow-office", "blocklist"}
    held = _ip_set(waf)
    assert sorted(held["Addresses"]) == ["2001:db8:1::/48", "2001:db8::/32"]
    assert held["Description"] == "known bad"  # UpdateIPSet got the description back

    error = failure("aws.wafv2.block_ip_set",
                    {**ACL, "ip_set": "irctl-ddos", "addresses": ["198.51.100.0/24"]},
                    context(aws))  # fmt: skip
    assert "holds IPV6 addresses" in error.message


def test_an_ip_set_changed_meanwhile_keeps_the_other_addresses(
    aws_proxy: tuple[AwsProxy, dict[str, Any]], aws: dict[str, Any]
) -> None:
    proxy, through = aws_proxy
    waf = make_acl(aws)
    made = waf.create_ip_set(Name="irctl-ddos", Scope="REGIONAL", IPAddressVersion="IPV4",
                             Addresses=["192.0.2.0/24"])["Summary"]  # fmt: skip
    changed = []

    def someone_adds(request: dict[str, Any]) -> None:
        if changed:
            return
        token = waf.get_ip_set(Name="irctl-ddos", Scope="REGIONAL", Id=made["Id"])["LockToken"]
        waf.update_ip_set(Name="irctl-ddos", Scope="REGIONAL", Id=made["Id"], LockToken=token,
                          Addresses=["192.0.2.0/24", "203.0.113.0/24"])  # fmt: skip
        changed.append(True)

    proxy.before["AWSWAF_20190729.UpdateIPSet"] = someone_adds
    ctx = context(through)
    out = run("aws.wafv2.block_ip_set",
              {**ACL, "ip_set": "irctl-ddos", "addresses": ["198.51.100.0/24"]}, ctx)
    assert sorted(_ip_set(waf)["Addresses"]) == [
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
    ]  # fmt: skip
    assert out["previous_addresses"] == ["192.0.2.0/24", "203.0.113.0/24"]  # before irctl's write
    assert proxy.seen.count("AWSWAF_20190729.UpdateIPSet") == 2
    assert any("IP set irctl-ddos" in note and "reading it again" in note for note in ctx.notes)


def test_block_ip_set_refusals() -> None:
    found = default_registry.get("aws.wafv2.block_ip_set")
    for bad in (
        {**ACL, "ip_set": "s"},  # no addresses
        {**ACL, "ip_set": "s", "addresses": []},
        {**ACL, "ip_set": "s", "addresses": ["198.51.100.7"]},  # no prefix length
        {**ACL, "ip_set": "s", "addresses": ["198.51.100.7/24"]},  # host bits set
        {**ACL, "ip_set": "s", "addresses": ["example.com/32"]},
        {**ACL, "ip_set": "s", "addresses": ["198.51.100.0/24", "2001:db8::/32"]},
    ):
        with pytest.raises(ValidationError):
            found.parse(bad)
    assert found.parse({**ACL, "ip_set": "s", "addresses": [], "mode": "replace"})
    restore = default_registry.get("aws.wafv2.restore_rule")
    with pytest.raises(ValidationError, match="not 'b'"):
        restore.parse({**ACL, "rule_name": "b", "rule": BASELINE})
    with pytest.raises(ValidationError, match="Action"):
        restore.parse({**ACL, "rule_name": "allow-office",
                       "rule": {**BASELINE, "OverrideAction": {"None": {}}}})  # fmt: skip
    with pytest.raises(ValidationError):
        restore.parse({**ACL, "rule_name": "r"})  # rule: null must be said


def test_simulate_touches_nothing(aws: dict[str, Any]) -> None:
    waf = make_acl(aws)
    for name, inputs in (
        ("aws.wafv2.set_rate_rule", {**ACL, "rule_name": "r", "limit": 100}),
        ("aws.wafv2.block_ip_set", {**ACL, "ip_set": "s", "addresses": ["192.0.2.0/24"]}),
        ("aws.wafv2.set_managed_rule_group", {**ACL, "rule_group": "AWSManagedRulesCommonRuleSet"}),
        ("aws.wafv2.restore_rule", {**ACL, "rule_name": "allow-office", "rule": None}),
    ):
        out = simulate(name, inputs)
        assert out["simulated"] is True, name
        assert "exchange-api" in out["would"], name
        assert out["previous_rule"] is None, name
    assert set(rules(waf)) == {"allow-office"}
    assert waf.list_ip_sets(Scope="REGIONAL")["IPSets"] == []


# --- through the engine ---------------------------------------------------------------------

DDOS = """\
irctl: 1
kind: runbook
id: ddos-drill
title: Shed an overload at the WAF and scale the API tier, then put everything back
steps:
  - id: rate-limit
    action: aws.wafv2.set_rate_rule
    with: {web_acl: exchange-api, rule_name: irctl-rate-api, limit: 500, scope_down_path: /api/}
  - id: block
    action: aws.wafv2.block_ip_set
    with: {web_acl: exchange-api, ip_set: irctl-ddos, addresses: ["198.51.100.0/24"]}
  - id: reputation
    action: aws.wafv2.set_managed_rule_group
    with: {web_acl: exchange-api, rule_group: AWSManagedRulesAmazonIpReputationList}
  - id: scale-api
    action: aws.autoscaling.set_capacity
    with: {group: api, min: 4, max: 12, desired: 8}
  - id: unscale-api
    action: aws.autoscaling.set_capacity
    with:
      group: api
      min: "{{ steps['scale-api'].outputs.previous.min }}"
      max: "{{ steps['scale-api'].outputs.previous.max }}"
      desired: "{{ steps['scale-api'].outputs.previous.desired }}"
  - id: reputation-back
    action: aws.wafv2.restore_rule
    with:
      web_acl: exchange-api
      rule_name: "{{ steps.reputation.outputs.rule_name }}"
      rule: "{{ steps.reputation.outputs.previous_rule }}"
  - id: unblock
    action: aws.wafv2.block_ip_set
    with: {web_acl: exchange-api, ip_set: irctl-ddos, state: absent}
  - id: rate-limit-back
    action: aws.wafv2.restore_rule
    with:
      web_acl: exchange-api
      rule_name: irctl-rate-api
      rule: "{{ steps['rate-limit'].outputs.previous_rule }}"
"""


def _asg(aws: dict[str, Any]) -> Any:
    ec2, asg = boto("ec2", aws), boto("autoscaling", aws)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    asg.create_launch_configuration(
        LaunchConfigurationName="api-lc", ImageId=image, InstanceType="t3.micro"
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="api", LaunchConfigurationName="api-lc",
        MinSize=2, MaxSize=4, DesiredCapacity=2, AvailabilityZones=["us-east-1a"],
    )  # fmt: skip
    return asg


def _sizes(asg: Any) -> tuple[int, int, int]:
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["api"])["AutoScalingGroups"][0]
    return g["MinSize"], g["MaxSize"], g["DesiredCapacity"]


@pytest.mark.parametrize("mode", ["sandbox", "tabletop"])
def test_ddos_runbook_through_the_engine(aws: dict[str, Any], tmp_path: Path, mode: str) -> None:
    from irctl.engine.engine import Engine
    from irctl.journal.store import Store
    from irctl.runbook.loader import load_runbook_text
    from irctl.runbook.model import Config

    waf = make_acl(aws)
    asg = _asg(aws)
    before = web_acl(waf)
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store, config=Config.model_validate({"integrations": {"aws": aws}}))
    runbook = load_runbook_text(DDOS, "ddos-drill.yaml")
    run_id = engine.create_run(runbook, DDOS, {}, initiator="oncall", mode=mode)
    state = engine.execute(run_id)
    assert state.status == "succeeded", [
        (k, s.error) for k, s in state.steps.items() if s.status != "succeeded"
    ]
    steps = state.steps
    if mode == "tabletop":  # simulated: nothing was touched
        assert steps["rate-limit"].outputs["simulated"] is True
        # the sizes to restore are not known in a drill: the restore is rehearsed, not built
        assert "inputs_incomplete" in steps["unscale-api"].outputs
        assert "remove" in steps["rate-limit-back"].outputs["would"]
        assert web_acl(waf)["Rules"] == before["Rules"]
        assert waf.list_ip_sets(Scope="REGIONAL")["IPSets"] == []
        assert _sizes(asg) == (2, 4, 2)
        store.close()
        return
    assert steps["rate-limit"].outputs["rule"]["Statement"]["RateBasedStatement"]["Limit"] == 500
    assert steps["block"].outputs["created_ip_set"] is True
    assert steps["scale-api"].outputs["previous"] == {
        "min": 2, "max": 4, "desired": 2, "suspended_processes": [],
    }  # fmt: skip
    assert steps["reputation-back"].outputs["previous_rule"] == steps["reputation"].outputs["rule"]
    # everything as before the run: the rules, and the group's sizes
    assert web_acl(waf)["Rules"] == before["Rules"]
    assert _sizes(asg) == (2, 4, 2)
    assert _ip_set(waf)["Addresses"] == ["198.51.100.0/24"]  # kept, blocking nothing
    store.close()
