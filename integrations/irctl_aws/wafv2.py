"""``aws.wafv2.*``: a rate limit, an IP block and managed rule groups on a web ACL, and back.

::

    - id: rate-limit-api
      action: aws.wafv2.set_rate_rule
      with: {web_acl: exchange-api, scope: REGIONAL, rule_name: irctl-rate-limit-api,
             limit: 1000, action: block, scope_down_path: /api/}
    - id: block-attackers
      action: aws.wafv2.block_ip_set
      with: {web_acl: exchange-api, ip_set: irctl-ddos-block,
             addresses: ["198.51.100.0/24", "203.0.113.7/32"]}
    - id: ip-reputation-on
      action: aws.wafv2.set_managed_rule_group
      with: {web_acl: exchange-api, rule_group: AWSManagedRulesAmazonIpReputationList}
    # ... and once the attack is over, each rule back to what it was before the incident:
    - id: rate-limit-back
      action: aws.wafv2.restore_rule
      with:
        web_acl: exchange-api
        rule_name: "{{ steps['rate-limit-api'].outputs.rule_name }}"
        rule: "{{ steps['rate-limit-api'].outputs.previous_rule }}"   # null: the rule goes

Each action changes one rule of the web ACL and leaves every other rule and setting as it
read them (:mod:`irctl_aws._waf`: read, change, write under the LockToken, read again after
a WAFOptimisticLockException).  A rule already as the step wants it is not written again,
so every action is idempotent.  ``state: absent`` removes the action's rule; ``restore_rule``
puts back the rule an earlier step found (its ``previous_rule``), or removes it when there
was none.  ``block_ip_set`` also creates or updates the IP set, and returns the addresses it
held before (``previous_addresses``: a step with ``mode: replace`` puts them back).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError
from irctl_aws import _waf
from irctl_aws._client import call
from irctl_aws._waf import NAME, Rule, Rules, WebAclRef, covers, named, plain, verb
from irctl_aws.services import Outputs, simulated


def _priority() -> Any:
    return Field(
        default=None, ge=0, le=2**31 - 1,
        description="evaluation order, lowest first; default: the rule's own, or after every "
        "other rule for a new one (a priority another rule has is refused)",
    )  # fmt: skip


#: Every rate-based rule counts over five minutes (WAF's EvaluationWindowSec, default 300).
WINDOW = 300


def _edit_outputs(ref: WebAclRef, ctx: ActionContext, edit: _waf.Edit) -> Outputs:
    previous = _waf.previous_rule(ctx, edit.before, edit.rule_name)
    return {
        **_waf.rule_outputs(ref, edit.after, edit.rule_name, previous),
        "changed": edit.changed,
        "lock_conflicts": edit.conflicts,
    }


def _probe_rule(ref: WebAclRef, ctx: ActionContext, target: Any, holds: Any) -> Probe:
    client = _waf.waf(ctx, ref.scope)
    acl = _waf.read(client, ref, _waf.acl_id(client, ref))
    if not holds(acl.rules):
        return Probe.not_done(f"{ref.where()} does not show the change")
    name = target(acl.rules)
    previous = _waf.previous_rule(ctx, acl, name)
    return Probe.done(
        {**_waf.rule_outputs(ref, acl, name, previous), "changed": None, "lock_conflicts": None}
    )


def _simulated_rule(ref: WebAclRef, would: str, rule_name: str | None, **more: Any) -> Outputs:
    return simulated(
        would, web_acl=ref.web_acl, web_acl_id=ref.web_acl_id, web_acl_arn=None,
        scope=ref.scope, rule_name=rule_name, previous_rule=None, rule=None, changed=None,
        lock_conflicts=None, **more,
    )  # fmt: skip


# --- aws.wafv2.set_rate_rule ----------------------------------------------------------------


class RateRule(WebAclRef):
    """A rate-based rule: requests from one IP address over five minutes, above a limit."""

    rule_name: str = Field(pattern=NAME, description="the rule's name in the web ACL")
    state: Literal["present", "absent"] = Field(
        default="present", description="present: the rule as given; absent: removed"
    )
    limit: int | None = Field(
        default=None, ge=10, le=2_000_000_000,
        description="requests per 5 minutes from one IP address before the action applies "
        "(10 to 2,000,000,000); required unless state is absent",
    )  # fmt: skip
    action: Literal["block", "count"] = Field(
        default="block", description="block the requests over the limit, or only count them"
    )
    scope_down_path: str | None = Field(
        default=None, pattern=r"^/\S{0,199}$",
        description="count only requests whose URI path starts with this (/api/); default: all",
    )  # fmt: skip
    priority: int | None = _priority()

    @model_validator(mode="after")
    def _limit_when_present(self) -> RateRule:
        if self.state == "present" and self.limit is None:
            raise ValueError("give the limit (requests per 5 minutes) for a rule to be present")
        return self


def _path_statement(path: str) -> dict[str, Any]:
    return {
        "ByteMatchStatement": {
            "SearchString": path,
            "FieldToMatch": {"UriPath": {}},
            "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
            "PositionalConstraint": "STARTS_WITH",
        }
    }


def _rate_holds(inputs: RateRule, rules: Rules) -> bool:
    current = named(rules, inputs.rule_name)
    if inputs.state == "absent" or current is None:
        return inputs.state == "absent" and current is None
    statement = current.get("Statement", {}).get("RateBasedStatement")
    if not isinstance(statement, dict):
        raise ActionError(
            f"{inputs.where()}: rule {inputs.rule_name} is not a rate-based rule; give the step "
            "another rule_name",
            retryable=False,
        )
    scope_down = plain(statement.get("ScopeDownStatement"))
    path = inputs.scope_down_path
    wanted_down = None if path is None else _path_statement(path)
    return (
        statement.get("Limit") == inputs.limit
        and statement.get("EvaluationWindowSec", WINDOW) == WINDOW
        and statement.get("AggregateKeyType") == "IP"
        and not statement.get("CustomKeys")
        and (scope_down is None if wanted_down is None else covers(scope_down, wanted_down))
        and verb(current) == inputs.action
        and inputs.priority in (None, current.get("Priority"))
    )


def _rate_build(inputs: RateRule, rules: Rules) -> Rule | None:
    if inputs.state == "absent":
        return None
    current = named(rules, inputs.rule_name)
    statement: dict[str, Any] = {
        "Limit": inputs.limit, "EvaluationWindowSec": WINDOW, "AggregateKeyType": "IP",
    }  # fmt: skip
    if inputs.scope_down_path is not None:
        statement["ScopeDownStatement"] = _path_statement(inputs.scope_down_path)
    rule: Rule = {
        "Name": inputs.rule_name,
        "Priority": _waf.priority(inputs, rules, inputs.rule_name, inputs.priority),
        "Action": {inputs.action.capitalize(): {}},
        "Statement": {"RateBasedStatement": statement},
        "VisibilityConfig": _waf.visibility(inputs.rule_name, current),
    }
    if current is not None and current.get("RuleLabels"):
        rule["RuleLabels"] = plain(current["RuleLabels"])
    return rule


def _rate_summary(inputs: RateRule) -> Outputs:
    return {
        "state": inputs.state, "limit": inputs.limit, "action": inputs.action,
        "scope_down_path": inputs.scope_down_path,
    }  # fmt: skip


@action("aws.wafv2.set_rate_rule", idempotent=True)
def set_rate_rule(inputs: RateRule, ctx: ActionContext) -> Outputs:
    """Add or update a rate-based rule on a WAFv2 web ACL (or remove it: state absent)."""
    edit = _waf.edit(
        _waf.waf(ctx, inputs.scope), ctx, inputs,
        target=lambda rules: inputs.rule_name,
        holds=lambda rules: _rate_holds(inputs, rules),
        build=lambda rules: _rate_build(inputs, rules),
    )  # fmt: skip
    if not edit.changed:
        ctx.note(f"{inputs.where()}: rule {inputs.rule_name} is already as asked")
    return {**_edit_outputs(inputs, ctx, edit), **_rate_summary(inputs)}


@set_rate_rule.simulate
def _set_rate_rule_simulate(inputs: RateRule, ctx: ActionContext) -> Outputs:
    if inputs.state == "absent":
        would = f"remove rate-based rule {inputs.rule_name} from {inputs.where()}"
    else:
        path = f" on paths under {inputs.scope_down_path}" if inputs.scope_down_path else ""
        would = (
            f"{inputs.action} requests from any IP address over {inputs.limit} per 5 minutes"
            f"{path} with rule {inputs.rule_name} of {inputs.where()}"
        )
    return _simulated_rule(inputs, would, inputs.rule_name, **_rate_summary(inputs))


@set_rate_rule.probe
def _set_rate_rule_probe(inputs: RateRule, ctx: ActionContext) -> Probe:
    found = _probe_rule(
        inputs, ctx, lambda rules: inputs.rule_name, lambda rules: _rate_holds(inputs, rules)
    )
    if found.state != "done":
        return found
    return Probe.done({**found.outputs, **_rate_summary(inputs)})


# --- aws.wafv2.set_managed_rule_group -------------------------------------------------------


class ManagedRuleGroup(WebAclRef):
    """A managed rule group (AWS's, or a marketplace vendor's) in a web ACL."""

    rule_group: str = Field(
        pattern=NAME,
        description="the managed rule group: AWSManagedRulesCommonRuleSet, "
        "AWSManagedRulesAmazonIpReputationList, AWSManagedRulesKnownBadInputsRuleSet, ...",
    )
    vendor: str = Field(default="AWS", pattern=NAME, description="the group's vendor")
    state: Literal["present", "absent"] = Field(
        default="present", description="present: in the web ACL; absent: removed from it"
    )
    override: Literal["none", "count"] = Field(
        default="none",
        description="none: the group's rules act (block) as the group says; count: they only "
        "count, nothing is blocked",
    )
    version: str | None = Field(
        default=None, pattern=r"^[\w.-]{1,64}$",
        description="a version of the group (Version_1.10); default: the one it has, or the "
        "vendor's default for a new one",
    )  # fmt: skip
    rule_name: str | None = Field(
        default=None, pattern=NAME,
        description="the rule holding the group; default: the rule that holds it already, "
        "else VENDOR-GROUP (AWS-AWSManagedRulesCommonRuleSet, as the console names it)",
    )  # fmt: skip
    priority: int | None = _priority()

    def default_name(self) -> str:
        return self.rule_name or f"{self.vendor}-{self.rule_group}"[:128]


def _group_of(rule: Rule) -> dict[str, Any] | None:
    statement = rule.get("Statement", {}).get("ManagedRuleGroupStatement")
    return statement if isinstance(statement, dict) else None


def _is_group(inputs: ManagedRuleGroup, rule: Rule) -> bool:
    group = _group_of(rule)
    return (
        group is not None
        and group.get("VendorName") == inputs.vendor
        and group.get("Name") == inputs.rule_group
    )


def _group_target(inputs: ManagedRuleGroup, rules: Rules) -> str:
    if inputs.rule_name is not None:
        current = named(rules, inputs.rule_name)
        if current is not None and not _is_group(inputs, current):
            raise ActionError(
                f"{inputs.where()}: rule {inputs.rule_name} does not hold the managed rule group "
                f"{inputs.vendor} {inputs.rule_group}; give the step another rule_name",
                retryable=False,
            )
        return inputs.rule_name
    holding = [str(rule["Name"]) for rule in rules if _is_group(inputs, rule)]
    if len(holding) > 1:
        raise ActionError(
            f"{inputs.where()}: the managed rule group {inputs.vendor} {inputs.rule_group} is in "
            f"rules {', '.join(holding)}; name the one to change with rule_name",
            retryable=False,
        )
    return holding[0] if holding else inputs.default_name()


def _group_holds(inputs: ManagedRuleGroup, rules: Rules) -> bool:
    current = named(rules, _group_target(inputs, rules))
    if inputs.state == "absent" or current is None:
        return inputs.state == "absent" and current is None
    group = _group_of(current) or {}
    return (
        verb(current) == inputs.override
        and inputs.version in (None, group.get("Version"))
        and inputs.priority in (None, current.get("Priority"))
    )


def _group_build(inputs: ManagedRuleGroup, rules: Rules) -> Rule | None:
    if inputs.state == "absent":
        return None
    name = _group_target(inputs, rules)
    current = named(rules, name)
    # what the rule has besides (excluded rules, rule action overrides, a scope-down) stays
    rule: Rule = dict(plain(current)) if current is not None else {
        "Name": name,
        "Statement": {"ManagedRuleGroupStatement": {
            "VendorName": inputs.vendor, "Name": inputs.rule_group,
        }},
        "VisibilityConfig": _waf.visibility(name, None),
    }  # fmt: skip
    rule.pop("Action", None)
    rule["OverrideAction"] = {inputs.override.capitalize(): {}}
    rule["Priority"] = _waf.priority(inputs, rules, name, inputs.priority)
    if inputs.version is not None:
        rule["Statement"]["ManagedRuleGroupStatement"]["Version"] = inputs.version
    return rule


def _group_summary(inputs: ManagedRuleGroup) -> Outputs:
    return {
        "state": inputs.state, "vendor": inputs.vendor, "rule_group": inputs.rule_group,
        "override": inputs.override,
    }  # fmt: skip


@action("aws.wafv2.set_managed_rule_group", idempotent=True)
def set_managed_rule_group(inputs: ManagedRuleGroup, ctx: ActionContext) -> Outputs:
    """Add a managed rule group to a WAFv2 web ACL, set it to count or act, or remove it."""
    edit = _waf.edit(
        _waf.waf(ctx, inputs.scope), ctx, inputs,
        target=lambda rules: _group_target(inputs, rules),
        holds=lambda rules: _group_holds(inputs, rules),
        build=lambda rules: _group_build(inputs, rules),
    )  # fmt: skip
    if not edit.changed:
        ctx.note(f"{inputs.where()}: {inputs.rule_group} is already as asked")
    return {**_edit_outputs(inputs, ctx, edit), **_group_summary(inputs)}


@set_managed_rule_group.simulate
def _set_managed_rule_group_simulate(inputs: ManagedRuleGroup, ctx: ActionContext) -> Outputs:
    group = f"managed rule group {inputs.vendor} {inputs.rule_group}"
    if inputs.state == "absent":
        would = f"remove the {group} from {inputs.where()}"
    else:
        acts = "only count" if inputs.override == "count" else "act as the group says"
        would = f"put the {group} in {inputs.where()}; its rules {acts}"
    return _simulated_rule(inputs, would, inputs.rule_name, **_group_summary(inputs))


@set_managed_rule_group.probe
def _set_managed_rule_group_probe(inputs: ManagedRuleGroup, ctx: ActionContext) -> Probe:
    found = _probe_rule(
        inputs, ctx,
        lambda rules: _group_target(inputs, rules), lambda rules: _group_holds(inputs, rules),
    )  # fmt: skip
    if found.state != "done":
        return found
    return Probe.done({**found.outputs, **_group_summary(inputs)})


# --- aws.wafv2.block_ip_set -----------------------------------------------------------------


class BlockIpSet(WebAclRef):
    """An IP set holding addresses, and a rule of the web ACL blocking it."""

    ip_set: str = Field(pattern=NAME, description="the IP set's name; created if it does not exist")
    addresses: list[str] | None = Field(
        default=None, max_length=10_000,
        description="CIDRs, all IPv4 or all IPv6: 198.51.100.0/24, 203.0.113.7/32, "
        "2001:db8::/32; required unless state is absent",
    )  # fmt: skip
    mode: Literal["add", "replace"] = Field(
        default="add",
        description="add: the IP set keeps what it holds and gains these; replace: it holds "
        "exactly these (to put back an earlier step's previous_addresses)",
    )
    state: Literal["present", "absent"] = Field(
        default="present",
        description="present: the addresses are in the IP set and a rule blocks it; absent: "
        "the rule is removed (the IP set and its addresses are kept)",
    )
    rule_name: str | None = Field(
        default=None, pattern=NAME,
        description="the blocking rule's name; default: a rule already blocking the IP set, "
        "else irctl-block-IPSET",
    )  # fmt: skip
    priority: int | None = _priority()

    @field_validator("addresses")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        networks = []
        for text in value:
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError:
                raise ValueError(
                    f"{text!r} is not a CIDR block (198.51.100.0/24; a host is /32 or /128)"
                ) from None
            if "/" not in text:
                raise ValueError(f"{text!r} has no prefix length: write {text}/32 or /128")
        if len({network.version for network in networks}) > 1:
            raise ValueError("an IP set holds IPv4 or IPv6 addresses, not both: use two steps")
        return sorted({str(network) for network in networks})

    @model_validator(mode="after")
    def _addresses_when_present(self) -> BlockIpSet:
        if self.state == "present" and self.addresses is None:
            raise ValueError("give the addresses to block")
        if self.state == "present" and self.mode == "add" and not self.addresses:
            raise ValueError("give at least one address to add")
        return self

    def default_name(self) -> str:
        return self.rule_name or f"irctl-block-{self.ip_set}"[:128]

    def version(self) -> str | None:
        if not self.addresses:
            return None
        return f"IPV{ipaddress.ip_network(self.addresses[0]).version}"


@dataclass(frozen=True)
class IpSet:
    id: str
    arn: str
    addresses: list[str] | None  # None: the set does not exist
    previous: list[str] | None
    created: bool
    changed: bool


def _normal(addresses: list[str]) -> set[str]:
    return {str(ipaddress.ip_network(a, strict=False)) for a in addresses}


def _find_ip_set(client: Any, inputs: BlockIpSet) -> dict[str, Any] | None:
    def find() -> dict[str, Any] | None:
        options: dict[str, Any] = {"Scope": inputs.scope, "Limit": 100}
        while True:
            page = client.list_ip_sets(**options)
            summaries = page.get("IPSets") or []
            for summary in summaries:
                if summary.get("Name") == inputs.ip_set:
                    return dict(summary)
            if not page.get("NextMarker") or not summaries:
                return None
            options["NextMarker"] = page["NextMarker"]

    return call(find, f"WAF ListIPSets ({inputs.scope}) looking for IP set {inputs.ip_set}")


def _get_ip_set(client: Any, inputs: BlockIpSet, ip_set_id: str) -> tuple[dict[str, Any], str]:
    got = call(
        lambda: client.get_ip_set(Name=inputs.ip_set, Scope=inputs.scope, Id=ip_set_id),
        f"WAF GetIPSet on IP set {inputs.ip_set} ({inputs.scope})",
    )
    return dict(got["IPSet"]), str(got["LockToken"])


def _wanted(inputs: BlockIpSet, current: list[str]) -> set[str]:
    given = set(inputs.addresses or [])
    return _normal(current) | given if inputs.mode == "add" else given


def _create_ip_set(client: Any, ctx: ActionContext, inputs: BlockIpSet) -> IpSet | None:
    """A new IP set with the addresses; None when one of that name appeared meanwhile."""
    from botocore.exceptions import ClientError

    if not inputs.addresses:
        raise ActionError(
            f"WAF IP set {inputs.ip_set} ({inputs.scope}) does not exist and there are no "
            "addresses to create it with",
            retryable=False,
        )
    ctx.record(previous_addresses=None)  # journaled before the set exists: this step made it

    def create() -> dict[str, Any] | None:
        try:
            made: dict[str, Any] = client.create_ip_set(
                Name=inputs.ip_set, Scope=inputs.scope, IPAddressVersion=inputs.version(),
                Addresses=list(inputs.addresses or []),
                Description=f"irctl run {ctx.run_id} step {ctx.step_id}"[:256],
            )["Summary"]  # fmt: skip
        except ClientError as exc:
            if _waf.code(exc) == "WAFDuplicateItemException":
                return None
            raise
        return made

    made = call(create, f"WAF CreateIPSet {inputs.ip_set} ({inputs.scope})")
    if made is None:
        return None
    addresses = sorted(inputs.addresses or [])
    return IpSet(str(made["Id"]), str(made["ARN"]), addresses, None, created=True, changed=True)


def _update_ip_set(
    client: Any, inputs: BlockIpSet, found: dict[str, Any], addresses: list[str], token: str
) -> bool:
    """UpdateIPSet under the read's LockToken; False when someone changed the set since.
    UpdateIPSet replaces the description too: the one read is sent back."""
    from botocore.exceptions import ClientError

    options = {"Description": found["Description"]} if found.get("Description") else {}

    def update() -> bool:
        try:
            client.update_ip_set(
                Name=inputs.ip_set, Scope=inputs.scope, Id=str(found["Id"]),
                Addresses=addresses, LockToken=token, **options,
            )  # fmt: skip
        except ClientError as exc:
            if _waf.code(exc) == "WAFOptimisticLockException":
                return False
            raise
        return True

    return call(update, f"WAF UpdateIPSet on IP set {inputs.ip_set} ({inputs.scope})")


def _ensure_ip_set(client: Any, ctx: ActionContext, inputs: BlockIpSet) -> IpSet:
    """The IP set holding the addresses, created or updated under its LockToken."""
    what = f"WAF IP set {inputs.ip_set} ({inputs.scope})"
    conflicts = 0
    while conflicts < _waf.LOCK_ATTEMPTS:
        summary = _find_ip_set(client, inputs)
        if summary is None:
            made = _create_ip_set(client, ctx, inputs)
            if made is not None:
                return made
            conflicts += 1
            _waf.lock_conflict(ctx, what, conflicts)
            continue
        found, token = _get_ip_set(client, inputs, str(summary["Id"]))
        current = sorted(str(a) for a in found.get("Addresses") or [])
        if inputs.version() not in (None, found.get("IPAddressVersion")):
            raise ActionError(
                f"{what} holds {found.get('IPAddressVersion')} addresses, these are "
                f"{inputs.version()}: use another IP set",
                retryable=False,
            )
        wanted = _wanted(inputs, current)
        ip_set_id, arn = str(found["Id"]), str(found["ARN"])
        recorded = ctx.facts.get("previous_addresses", current)
        if _normal(current) == wanted:
            return IpSet(ip_set_id, arn, current, recorded, recorded is None, changed=False)
        ctx.record(previous_addresses=current)
        if _update_ip_set(client, inputs, found, sorted(wanted), token):
            after = sorted(str(a) for a in _get_ip_set(client, inputs, ip_set_id)[0]["Addresses"])
            if _normal(after) != wanted:
                raise ActionError(
                    f"{what}: WAF accepted the update but reading it back shows {after}",
                    retryable=False,
                )
            return IpSet(ip_set_id, arn, after, current, created=False, changed=True)
        conflicts += 1
        _waf.lock_conflict(ctx, what, conflicts)
    raise _waf.too_many_conflicts(what)


def _blocks(arn: str, rule: Rule) -> bool:
    reference = rule.get("Statement", {}).get("IPSetReferenceStatement") or {}
    return reference.get("ARN") == arn and verb(rule) == "block"


def _block_target(inputs: BlockIpSet, arn: str | None, rules: Rules) -> str:
    if inputs.state == "present" and inputs.rule_name is None:
        blocking = [str(rule["Name"]) for rule in rules if arn and _blocks(arn, rule)]
        if blocking:
            return blocking[0]
    name = inputs.default_name()
    current = named(rules, name)
    reference = (current or {}).get("Statement", {}).get("IPSetReferenceStatement") or {}
    if current is not None and arn is not None and reference.get("ARN") != arn:
        raise ActionError(
            f"{inputs.where()}: rule {name} does something other than match IP set "
            f"{inputs.ip_set}; give the step another rule_name",
            retryable=False,
        )
    return name


def _block_holds(inputs: BlockIpSet, arn: str | None, rules: Rules) -> bool:
    current = named(rules, _block_target(inputs, arn, rules))
    if inputs.state == "absent":
        return current is None
    return current is not None and arn is not None and _blocks(arn, current)


def _block_build(inputs: BlockIpSet, arn: str, rules: Rules) -> Rule | None:
    if inputs.state == "absent":
        return None
    name = _block_target(inputs, arn, rules)
    current = named(rules, name)
    return {
        "Name": name,
        "Priority": _waf.priority(inputs, rules, name, inputs.priority),
        "Action": {"Block": {}},
        "Statement": {"IPSetReferenceStatement": {"ARN": arn}},
        "VisibilityConfig": _waf.visibility(name, current),
    }


def _ip_outputs(inputs: BlockIpSet, ip_set: IpSet | None) -> Outputs:
    return {
        "state": inputs.state,
        "ip_set": inputs.ip_set,
        "ip_set_id": None if ip_set is None else ip_set.id,
        "ip_set_arn": None if ip_set is None else ip_set.arn,
        "previous_addresses": None if ip_set is None else ip_set.previous,
        "addresses": None if ip_set is None else ip_set.addresses,
        "created_ip_set": None if ip_set is None else ip_set.created,
    }


def _existing_ip_set(client: Any, ctx: ActionContext, inputs: BlockIpSet) -> IpSet | None:
    """The IP set as it is (state absent leaves it so); None when there is none."""
    summary = _find_ip_set(client, inputs)
    if summary is None:
        return None
    found, _ = _get_ip_set(client, inputs, str(summary["Id"]))
    current = sorted(str(a) for a in found.get("Addresses") or [])
    recorded = ctx.facts.get("previous_addresses", current)
    return IpSet(str(found["Id"]), str(found["ARN"]), current, recorded, recorded is None, False)


@action("aws.wafv2.block_ip_set", idempotent=True)
def block_ip_set(inputs: BlockIpSet, ctx: ActionContext) -> Outputs:
    """Put addresses in a WAFv2 IP set and make sure a web ACL rule blocks it (or remove it)."""
    client = _waf.waf(ctx, inputs.scope)
    if inputs.state == "present":
        ip_set: IpSet | None = _ensure_ip_set(client, ctx, inputs)
    else:
        ip_set = _existing_ip_set(client, ctx, inputs)
    arn = None if ip_set is None else ip_set.arn
    edit = _waf.edit(
        client, ctx, inputs,
        target=lambda rules: _block_target(inputs, arn, rules),
        holds=lambda rules: _block_holds(inputs, arn, rules),
        build=lambda rules: _block_build(inputs, str(arn), rules),
    )  # fmt: skip
    outputs = {**_edit_outputs(inputs, ctx, edit), **_ip_outputs(inputs, ip_set)}
    outputs["changed"] = edit.changed or bool(ip_set and ip_set.changed)
    if not outputs["changed"]:
        ctx.note(f"{inputs.where()}: IP set {inputs.ip_set} is already as asked")
    return outputs


@block_ip_set.simulate
def _block_ip_set_simulate(inputs: BlockIpSet, ctx: ActionContext) -> Outputs:
    if inputs.state == "absent":
        would = f"remove the rule blocking IP set {inputs.ip_set} from {inputs.where()}"
    else:
        count = len(inputs.addresses or [])
        verb_ = "add" if inputs.mode == "add" else "set"
        would = (
            f"{verb_} {count} address{'es' if count != 1 else ''} in IP set {inputs.ip_set} "
            f"and block it in {inputs.where()}"
        )
    outputs = _simulated_rule(inputs, would, inputs.rule_name, **_ip_outputs(inputs, None))
    outputs["addresses"] = inputs.addresses if inputs.mode == "replace" else None
    return outputs


@block_ip_set.probe
def _block_ip_set_probe(inputs: BlockIpSet, ctx: ActionContext) -> Probe:
    client = _waf.waf(ctx, inputs.scope)
    ip_set = _existing_ip_set(client, ctx, inputs)
    if inputs.state == "present":
        if ip_set is None:
            return Probe.not_done(f"there is no IP set {inputs.ip_set}")
        if _wanted(inputs, ip_set.addresses or []) != _normal(ip_set.addresses or []):
            return Probe.not_done(f"IP set {inputs.ip_set} does not hold the addresses")
    arn = None if ip_set is None else ip_set.arn
    found = _probe_rule(
        inputs, ctx,
        lambda rules: _block_target(inputs, arn, rules),
        lambda rules: _block_holds(inputs, arn, rules),
    )  # fmt: skip
    if found.state != "done":
        return found
    return Probe.done({**found.outputs, **_ip_outputs(inputs, ip_set)})


# --- aws.wafv2.restore_rule -----------------------------------------------------------------


class RestoreRule(WebAclRef):
    """One rule of a web ACL put back as an earlier step found it."""

    rule_name: str = Field(pattern=NAME, description="the rule's name")
    rule: dict[str, Any] | None = Field(
        description="the rule as it was: an earlier aws.wafv2 step's previous_rule output; "
        "null removes the rule (there was none before)"
    )

    @model_validator(mode="after")
    def _a_rule(self) -> RestoreRule:
        rule = self.rule
        if rule is None:
            return self
        if rule.get("Name") != self.rule_name:
            raise ValueError(f"the rule's Name is {rule.get('Name')!r}, not {self.rule_name!r}")
        if not isinstance(rule.get("Priority"), int) or not isinstance(rule.get("Statement"), dict):
            raise ValueError("a rule has a Priority (integer) and a Statement (mapping)")
        if not isinstance(rule.get("VisibilityConfig"), dict):
            raise ValueError("a rule has a VisibilityConfig (mapping)")
        if ("Action" in rule) == ("OverrideAction" in rule):
            raise ValueError("a rule has an Action or, for a rule group, an OverrideAction")
        return self


def _restore_holds(inputs: RestoreRule, rules: Rules) -> bool:
    current = named(rules, inputs.rule_name)
    if inputs.rule is None:
        return current is None
    return current is not None and plain(current) == plain(inputs.rule)


def _restore_build(inputs: RestoreRule, rules: Rules) -> Rule | None:
    if inputs.rule is None:
        return None
    _waf.priority(inputs, rules, inputs.rule_name, int(inputs.rule["Priority"]))
    return dict(plain(inputs.rule))


@action("aws.wafv2.restore_rule", idempotent=True)
def restore_rule(inputs: RestoreRule, ctx: ActionContext) -> Outputs:
    """Put one rule of a WAFv2 web ACL back as an earlier step found it (null: remove it)."""
    edit = _waf.edit(
        _waf.waf(ctx, inputs.scope), ctx, inputs,
        target=lambda rules: inputs.rule_name,
        holds=lambda rules: _restore_holds(inputs, rules),
        build=lambda rules: _restore_build(inputs, rules),
    )  # fmt: skip
    if not edit.changed:
        ctx.note(f"{inputs.where()}: rule {inputs.rule_name} is already as it was")
    return _edit_outputs(inputs, ctx, edit)


@restore_rule.simulate
def _restore_rule_simulate(inputs: RestoreRule, ctx: ActionContext) -> Outputs:
    what = "remove" if inputs.rule is None else "put back as it was"
    return _simulated_rule(inputs, f"{what} rule {inputs.rule_name} of {inputs.where()}",
                           inputs.rule_name)  # fmt: skip


@restore_rule.probe
def _restore_rule_probe(inputs: RestoreRule, ctx: ActionContext) -> Probe:
    return _probe_rule(
        inputs, ctx, lambda rules: inputs.rule_name, lambda rules: _restore_holds(inputs, rules)
    )
