"""A WAFv2 web ACL read, one rule changed, and written back under its LockToken.

UpdateWebACL replaces the whole web ACL: every rule and every setting left out of the call
is removed.  So :func:`edit` reads the ACL (GetWebACL), changes the one rule a step is
about, and sends everything else back exactly as it was read, with the LockToken of that
read.  When someone changed the ACL in between (another responder in the console, an
automation), WAF refuses the write with WAFOptimisticLockException and nothing is
written: the ACL is read again and the change made on what is there now, at most
:data:`LOCK_ATTEMPTS` times.

The rule as it was just before a write is journaled (``ctx.record(previous_rule=...)``)
before the write is sent, so a retry that finds the change made, and a probe after a
crash, still report it; it is what ``aws.wafv2.restore_rule`` puts back.  Rules are
reported as JSON (:func:`plain`): a byte-match string is text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from irctl.actions import ActionContext
from irctl.errors import ActionError
from irctl_aws._client import action_client, call
from irctl_aws.services import Inputs

#: Reads and writes of one step before a lock conflict is given up (and the step may be retried).
LOCK_ATTEMPTS = 5
#: Names of web ACLs, rules, IP sets and rule groups.
NAME = r"^[\w-]{1,128}$"

Rule = dict[str, Any]
Rules = list[Rule]


class WebAclRef(Inputs):
    """A WAFv2 web ACL, by name (its id is looked up unless given)."""

    web_acl: str = Field(pattern=NAME, description="the web ACL's name")
    web_acl_id: str | None = Field(
        default=None, pattern=r"^[0-9A-Za-z-]{1,128}$",
        description="the web ACL's id; default: looked up by name (ListWebACLs)",
    )  # fmt: skip
    scope: Literal["REGIONAL", "CLOUDFRONT"] = Field(
        default="REGIONAL",
        description="REGIONAL (ALB, API Gateway, AppSync, Cognito) or CLOUDFRONT (managed in "
        "us-east-1 whatever integrations.aws.region says)",
    )

    def where(self) -> str:
        return f"WAF web ACL {self.web_acl} ({self.scope})"


@dataclass(frozen=True)
class Acl:
    """A web ACL as GetWebACL returned it, and the LockToken of that read."""

    name: str
    id: str
    arn: str
    body: dict[str, Any]
    lock_token: str

    @property
    def rules(self) -> Rules:
        return list(self.body.get("Rules") or [])


@dataclass(frozen=True)
class Edit:
    """What :func:`edit` did: the ACL before and after, and the rule it was about."""

    before: Acl
    after: Acl
    rule_name: str
    changed: bool
    conflicts: int


def waf(ctx: ActionContext, scope: str) -> Any:
    """The step's WAFv2 client; CloudFront's web ACLs are managed in us-east-1 only."""
    return action_client("wafv2", ctx, region="us-east-1" if scope == "CLOUDFRONT" else None)


def code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _unavailable(exc: Exception, what: str) -> None:
    """WAF's "the resource is being created or changed, try again" is worth a retry."""
    if code(exc) == "WAFUnavailableEntityException":
        raise ActionError(f"WAF is not ready for {what} yet: retry", retryable=True) from exc


def plain(value: Any) -> Any:
    """A rule (or any part of one) as JSON: no nulls, byte strings as text."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ActionError(
                "a WAF rule matches a byte string that is not UTF-8 text: irctl cannot record "
                "it as the rule's previous state; change this rule in the console",
                retryable=False,
            ) from None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def covers(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` says everything ``wanted`` says (WAF may add defaults it returns)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and covers(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(covers(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def named(rules: Rules, name: str) -> Rule | None:
    found = [rule for rule in rules if rule.get("Name") == name]
    return found[0] if found else None


def verb(rule: Rule | None) -> str | None:
    """``block``, ``count``, ... for a rule's Action; ``none``/``count`` for an OverrideAction."""
    if rule is None:
        return None
    for key in ("Action", "OverrideAction"):
        chosen = rule.get(key)
        if isinstance(chosen, dict) and chosen:
            return str(next(iter(chosen))).lower()
    return None


def visibility(rule_name: str, current: Rule | None) -> dict[str, Any]:
    """A rule's VisibilityConfig: the one it has, else sampled requests and metrics on."""
    if current is not None and isinstance(current.get("VisibilityConfig"), dict):
        return dict(plain(current["VisibilityConfig"]))
    return {
        "SampledRequestsEnabled": True,
        "CloudWatchMetricsEnabled": True,
        "MetricName": rule_name,
    }


def priority(ref: WebAclRef, rules: Rules, rule_name: str, given: int | None) -> int:
    """The rule's priority: the one given, else the one it has, else after every other rule."""
    current = named(rules, rule_name)
    if given is not None:
        chosen = given
    elif current is not None:
        chosen = int(current["Priority"])
    else:
        chosen = max((int(rule["Priority"]) for rule in rules), default=-1) + 1
    taken = [
        str(rule.get("Name"))
        for rule in rules
        if int(rule.get("Priority", -1)) == chosen and rule.get("Name") != rule_name
    ]
    if taken:
        raise ActionError(
            f"{ref.where()}: priority {chosen} is taken by rule {taken[0]}; give the step "
            "another priority",
            retryable=False,
        )
    return chosen


def with_rule(rules: Rules, rule: Rule) -> Rules:
    """``rules`` with ``rule`` in place of the rule of its name (or added)."""
    if named(rules, str(rule["Name"])) is None:
        return [*rules, rule]
    return [rule if r.get("Name") == rule["Name"] else r for r in rules]


def without_rule(rules: Rules, name: str) -> Rules:
    return [rule for rule in rules if rule.get("Name") != name]


def acl_id(client: Any, ref: WebAclRef) -> str:
    """The web ACL's id: given, or found by its name (names are unique in a scope)."""
    if ref.web_acl_id:
        return ref.web_acl_id

    def find() -> str | None:
        options: dict[str, Any] = {"Scope": ref.scope, "Limit": 100}
        while True:
            page = client.list_web_acls(**options)
            summaries = page.get("WebACLs") or []
            for summary in summaries:
                if summary.get("Name") == ref.web_acl:
                    return str(summary["Id"])
            if not page.get("NextMarker") or not summaries:
                return None
            options["NextMarker"] = page["NextMarker"]

    found = call(find, f"WAF ListWebACLs ({ref.scope}) looking for {ref.where()}")
    if found is None:
        region = " in us-east-1" if ref.scope == "CLOUDFRONT" else " in this region"
        raise ActionError(
            f"{ref.where()}: not found (no web ACL of that name{region})", retryable=False
        )
    return found


def read(client: Any, ref: WebAclRef, web_acl_id: str) -> Acl:
    from botocore.exceptions import ClientError

    def fetch() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = client.get_web_acl(
                Name=ref.web_acl, Scope=ref.scope, Id=web_acl_id
            )
        except ClientError as exc:
            if code(exc) == "WAFNonexistentItemException":
                return None
            _unavailable(exc, f"GetWebACL on {ref.where()}")
            raise
        return found

    got = call(fetch, f"WAF GetWebACL on {ref.where()}")
    if got is None:
        raise ActionError(f"{ref.where()} (id {web_acl_id}): not found", retryable=False)
    body = dict(got["WebACL"])
    return Acl(ref.web_acl, str(body["Id"]), str(body["ARN"]), body, str(got["LockToken"]))


def _settings(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """What UpdateWebACL takes besides the rules, as read: a setting left out is cleared.

    An empty description comes back as "" (moto), which UpdateWebACL refuses: it is no
    description, so it is left out."""
    takes = client.meta.service_model.operation_model("UpdateWebACL").input_shape.members
    return {
        key: value
        for key, value in body.items()
        if key in takes
        and key not in {"Name", "Scope", "Id", "LockToken", "Rules"}
        and value not in (None, "")
    }


def _write(client: Any, ref: WebAclRef, acl: Acl, rules: Rules) -> bool:
    """UpdateWebACL under the read's LockToken; False when someone changed it since."""
    from botocore.exceptions import ClientError

    settings = _settings(client, acl.body)

    def put() -> bool:
        try:
            client.update_web_acl(
                Name=acl.name, Scope=ref.scope, Id=acl.id, LockToken=acl.lock_token,
                Rules=rules, **settings,
            )  # fmt: skip
        except ClientError as exc:
            if code(exc) == "WAFOptimisticLockException":
                return False
            _unavailable(exc, f"UpdateWebACL on {ref.where()}")
            raise
        return True

    return call(put, f"WAF UpdateWebACL on {ref.where()}")


def lock_conflict(ctx: ActionContext, what: str, conflicts: int) -> None:
    """Note a refused write and wait a little before reading again."""
    ctx.note(
        f"{what} was changed by someone else since irctl read it (WAFOptimisticLockException): "
        f"reading it again ({conflicts} of {LOCK_ATTEMPTS})"
    )
    if conflicts < LOCK_ATTEMPTS:
        ctx.sleep(min(0.1 * 2**conflicts, 2.0))


def too_many_conflicts(what: str) -> ActionError:
    return ActionError(
        f"{what} was changed by someone else {LOCK_ATTEMPTS} times while irctl tried to "
        "update it (WAFOptimisticLockException); this step wrote nothing: run it again",
        retryable=True,
    )


def edit(
    client: Any,
    ctx: ActionContext,
    ref: WebAclRef,
    *,
    target: Callable[[Rules], str],
    holds: Callable[[Rules], bool],
    build: Callable[[Rules], Rule | None],
) -> Edit:
    """Make ``holds`` true of the web ACL's rules by writing the rule ``build`` returns.

    ``target`` names the rule the step is about in the rules read; ``build`` returns it as
    it must be (None: removed).  Nothing is written when ``holds`` is already true.  After
    a write the ACL is read back and ``holds`` checked on what WAF shows.
    """
    web_acl_id = acl_id(client, ref)
    conflicts = 0
    while conflicts < LOCK_ATTEMPTS:
        acl = read(client, ref, web_acl_id)
        rules = acl.rules
        name = target(rules)
        if holds(rules):
            return Edit(acl, acl, name, changed=False, conflicts=conflicts)
        wanted = build(rules)
        changed = without_rule(rules, name) if wanted is None else with_rule(rules, wanted)
        current = named(rules, name)
        ctx.record(previous_rule=None if current is None else plain(current))
        if _write(client, ref, acl, changed):
            after = read(client, ref, web_acl_id)
            if not holds(after.rules):
                shown = named(after.rules, name)
                raise ActionError(
                    f"{ref.where()}: WAF accepted the update of rule {name} but reading the "
                    f"web ACL back shows {'no such rule' if shown is None else plain(shown)}",
                    retryable=False,
                )
            return Edit(acl, after, name, changed=True, conflicts=conflicts)
        conflicts += 1
        lock_conflict(ctx, ref.where(), conflicts)
    raise too_many_conflicts(ref.where())


def rule_outputs(ref: WebAclRef, acl: Acl, name: str, previous: Rule | None) -> dict[str, Any]:
    """The outputs every rule action shares: where, which rule, before and after."""
    found = named(acl.rules, name)
    return {
        "web_acl": ref.web_acl,
        "web_acl_id": acl.id,
        "web_acl_arn": acl.arn,
        "scope": ref.scope,
        "rule_name": name,
        "previous_rule": previous,
        "rule": None if found is None else plain(found),
    }


def previous_rule(ctx: ActionContext, acl: Acl, name: str) -> Rule | None:
    """The rule before this step: journaled before its write, else as it is now (no write)."""
    if "previous_rule" in ctx.facts:
        recorded: Rule | None = ctx.facts["previous_rule"]
        return recorded
    current = named(acl.rules, name)
    return None if current is None else dict(plain(current))
