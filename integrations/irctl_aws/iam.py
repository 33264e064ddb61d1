"""``aws.iam.*``: take a leaked or hijacked identity out of play, and give it back.

::

    - id: deactivate
      action: aws.iam.deactivate_access_key
      with: {user_name: "{{ params.user_name }}", access_key_id: "{{ params.access_key_id }}"}
    - id: rotate
      action: aws.iam.rotate_access_key
      with:
        user_name: "{{ params.user_name }}"
        old_access_key_id: "{{ params.access_key_id }}"
        secret_name: "iam/{{ params.user_name }}"
    - id: delete-old
      action: aws.iam.delete_access_key
      approval: two-person
      with: {user_name: "{{ params.user_name }}", access_key_id: "{{ params.access_key_id }}"}

Every action reads before it writes, so a re-run after a crash does nothing
twice (except ``rotate_access_key``, which creates a key: its probe and its
re-run recognise a rotation this very step already made from the marker it
stores beside the new key in Secrets Manager).  The new secret access key goes
only to Secrets Manager: it is never an output, a note or part of an error.

Quarantine is an inline policy (``irctl-quarantine`` unless named): deny every
action, and deny every session issued before the quarantine
(``aws:TokenIssueTime``), as the console's "revoke active sessions" does.
Releasing removes the deny-all but keeps, unless told otherwise, the
revocation of the older sessions: the attacker's sessions stay dead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError
from irctl_aws._client import action_client, call

T = TypeVar("T")

IAM_NAME = r"^[\w+=,.@-]+$"
UserName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=IAM_NAME, description="IAM user name")
]
AccessKeyId = Annotated[
    str,
    Field(
        min_length=16, max_length=128, pattern=r"^[A-Z0-9]+$", description="access key id (AKIA…)"
    ),
]
PolicyName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=IAM_NAME,
        description="name of the inline quarantine policy",
    ),
]
SecretName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        pattern=r"^[\w/+=.@:-]+$",
        description="Secrets Manager secret name or ARN; created if it does not exist",
    ),
]

DENY_ALL_SID = "IrctlQuarantineDenyAll"
REVOKE_SID = "IrctlRevokeOlderSessions"
ACTIVE, INACTIVE, ABSENT = "Active", "Inactive", "absent"



class _Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _iam(ctx: ActionContext) -> Any:
    return action_client("iam", ctx)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _unless_missing(fn: Callable[[], T]) -> Callable[[], T | None]:
    """``fn`` for :func:`call`, returning None instead of raising NoSuchEntity."""

    def wrapped() -> T | None:
        from botocore.exceptions import ClientError

        try:
            return fn()
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise

    return wrapped


def _keys(iam: Any, user: str) -> dict[str, str]:
    """The user's access keys: id -> Active/Inactive (an unknown user is an error)."""

    def listed() -> dict[str, str]:
        found: dict[str, str] = {}
        for page in iam.get_paginator("list_access_keys").paginate(UserName=user):
            for key in page["AccessKeyMetadata"]:
                found[str(key["AccessKeyId"])] = str(key["Status"])
        return found

    return call(listed, f"IAM ListAccessKeys on user {user}")


def _deactivate(iam: Any, user: str, key_id: str) -> None:
    call(
        lambda: iam.update_access_key(UserName=user, AccessKeyId=key_id, Status=INACTIVE),
        f"IAM UpdateAccessKey (Inactive) of key {key_id} on user {user}",
    )


def _not_a_key(user: str, key_id: str, keys: dict[str, str]) -> ActionError:
    return ActionError(
        f"access key {key_id} is not a key of IAM user {user} "
        f"(the user's keys: {', '.join(sorted(keys)) or 'none'})",
        retryable=False,
    )


# --- aws.iam.list_access_keys -------------------------------------------------------------------


class ListAccessKeys(_Inputs):
    """A user whose access keys (and their last use) to look up."""

    user_name: UserName


def _iso(value: Any) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None


@action("aws.iam.list_access_keys", idempotent=True)
def list_access_keys(inputs: ListAccessKeys, ctx: ActionContext) -> dict[str, Any]:
    """List a user's access keys with their status and last use."""
    iam = _iam(ctx)
    user = inputs.user_name

    def listed() -> list[dict[str, Any]]:
        return [
            key
            for page in iam.get_paginator("list_access_keys").paginate(UserName=user)
            for key in page["AccessKeyMetadata"]
        ]

    keys = []
    for key in call(listed, f"IAM ListAccessKeys on user {user}"):
        key_id = str(key["AccessKeyId"])
        used = call(
            partial(iam.get_access_key_last_used, AccessKeyId=key_id),
            f"IAM GetAccessKeyLastUsed of key {key_id} (user {user})",
        ).get("AccessKeyLastUsed", {})
        keys.append({
            "access_key_id": key_id,
            "status": str(key["Status"]),
            "created": _iso(key.get("CreateDate")),
            "last_used": _iso(used.get("LastUsedDate")),
            "last_used_service": used.get("ServiceName"),
            "last_used_region": used.get("Region"),
        })  # fmt: skip
    return {
        "user_name": user,
        "access_keys": keys,
        "active": [k["access_key_id"] for k in keys if k["status"] == ACTIVE],
    }


@list_access_keys.simulate
def _simulate_list(inputs: ListAccessKeys, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"list the access keys of IAM user {inputs.user_name} and their last use",
        "user_name": inputs.user_name,
        "access_keys": [],
        "active": [],
    }


# --- aws.iam.deactivate_access_key --------------------------------------------------------------


class AccessKey(_Inputs):
    """One access key of one IAM user."""

    user_name: UserName
    access_key_id: AccessKeyId


@action("aws.iam.deactivate_access_key", idempotent=True)
def deactivate_access_key(inputs: AccessKey, ctx: ActionContext) -> dict[str, Any]:
    """Deactivate an IAM access key (reversible; already inactive is fine)."""
    iam = _iam(ctx)
    user, key_id = inputs.user_name, inputs.access_key_id
    keys = _keys(iam, user)
    if key_id not in keys:
        raise _not_a_key(user, key_id, keys)
    if keys[key_id] != INACTIVE:
        _deactivate(iam, user, key_id)
    return {"user_name": user, "access_key_id": key_id, "previous_status": keys[key_id]}


@deactivate_access_key.simulate
def _simulate_deactivate(inputs: AccessKey, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"deactivate access key {inputs.access_key_id} of IAM user {inputs.user_name}",
        "user_name": inputs.user_name,
        "access_key_id": inputs.access_key_id,
        "previous_status": "simulated",
    }


@deactivate_access_key.probe
def _probe_deactivate(inputs: AccessKey, ctx: ActionContext) -> Probe:
    keys = _keys(_iam(ctx), inputs.user_name)
    status = keys.get(inputs.access_key_id)
    if status is None:
        return Probe.unknown(f"IAM user {inputs.user_name} has no key {inputs.access_key_id}")
    if status == INACTIVE:  # what a re-run would report
        return Probe.done({
            "user_name": inputs.user_name, "access_key_id": inputs.access_key_id,
            "previous_status": INACTIVE,
        })  # fmt: skip
    return Probe.not_done(f"access key {inputs.access_key_id} is {status}")


# --- aws.iam.rotate_access_key ------------------------------------------------------------------


class RotateAccessKey(_Inputs):
    """Replace a user's access key: the new one into Secrets Manager, the old one deactivated."""

    user_name: UserName
    old_access_key_id: AccessKeyId | None = Field(
        default=None,
        description="the key to replace; default: the user's only active key",
    )
    secret_name: SecretName


def _marker(ctx: ActionContext) -> dict[str, str]:
    """Stored beside the new key: proves which run and step made this rotation."""
    return {"irctl_run": ctx.run_id, "irctl_step": ctx.step_id}


def _stored(sm: Any, name: str) -> dict[str, Any] | None:
    """The secret's current value (parsed JSON) and version, or None when there is none."""

    def read() -> dict[str, Any] | None:
        try:
            return dict(sm.get_secret_value(SecretId=name))
        except sm.exceptions.ResourceNotFoundException:
            return None

    found = call(read, f"Secrets Manager GetSecretValue on secret {name}")
    if found is None or "SecretString" not in found:
        return None
    try:
        value = json.loads(found["SecretString"])
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {"value": value, "version_id": str(found.get("VersionId", ""))}


def _ours(stored: dict[str, Any] | None, ctx: ActionContext) -> str | None:
    """The key id in the secret if this run's step stored it there, else None."""
    if stored is None:
        return None
    value = stored["value"]
    if all(value.get(k) == v for k, v in _marker(ctx).items()):
        key_id = value.get("AccessKeyId")
        return str(key_id) if key_id else None
    return None


def _old_key(inputs: RotateAccessKey, keys: dict[str, str], new: str | None) -> str:
    user = inputs.user_name
    if inputs.old_access_key_id is not None:
        if inputs.old_access_key_id not in keys:
            raise _not_a_key(user, inputs.old_access_key_id, keys)
        return inputs.old_access_key_id
    candidates = sorted(k for k, s in keys.items() if k != new and (s == ACTIVE or new))
    if len(candidates) != 1:
        active = [k for k, s in keys.items() if s == ACTIVE]
        raise ActionError(
            f"IAM user {user} has {len(active)} active access keys "
            f"({', '.join(sorted(active)) or 'none'}): name the one to replace in "
            "old_access_key_id",
            retryable=False,
        )
    return candidates[0]


def _put_secret(sm: Any, name: str, value: str, user: str) -> dict[str, Any]:
    def put() -> dict[str, Any]:
        try:
            return dict(sm.put_secret_value(SecretId=name, SecretString=value))
        except sm.exceptions.ResourceNotFoundException:
            return dict(
                sm.create_secret(
                    Name=name,
                    SecretString=value,
                    Description=f"Access key of IAM user {user} (rotated by irctl)",
                )
            )

    return call(put, f"Secrets Manager PutSecretValue on secret {name}")


@action("aws.iam.rotate_access_key")
def rotate_access_key(inputs: RotateAccessKey, ctx: ActionContext) -> dict[str, Any]:
    """Create a new access key, store it in Secrets Manager, deactivate the old one."""
    iam = _iam(ctx)
    sm = action_client("secretsmanager", ctx)
    user, name = inputs.user_name, inputs.secret_name
    keys = _keys(iam, user)
    stored = _stored(sm, name)
    new = _ours(stored, ctx)
    if new is not None and new not in keys:
        new = None  # stored by this step, but the key is gone since: rotate again
    old = _old_key(inputs, keys, new)
    if new == old:
        new = None
    if new is not None and stored is not None:
        ctx.note(f"aws.iam.rotate_access_key: key {new} of {user} was already created and stored")
        version = stored["version_id"]
    else:
        others = sorted(k for k in keys if k != old)
        if others:
            raise ActionError(
                f"IAM user {user} already has two access keys ({old} and {others[0]}) and IAM "
                f"allows no third: check {others[0]}'s last use, delete it "
                "(aws.iam.delete_access_key), then rotate again",
                retryable=False,
            )
        made = call(
            lambda: iam.create_access_key(UserName=user)["AccessKey"],
            f"IAM CreateAccessKey on user {user}",
        )
        new = str(made["AccessKeyId"])
        value = json.dumps({
            "AccessKeyId": new, "SecretAccessKey": made["SecretAccessKey"], "UserName": user,
            **_marker(ctx),
        })  # fmt: skip
        try:
            version = str(_put_secret(sm, name, value, user).get("VersionId", ""))
        except ActionError as exc:
            # The secret of the new key exists nowhere else: remove the key so a retry can
            # create another (IAM allows two keys per user).
            try:
                call(
                    lambda: iam.delete_access_key(UserName=user, AccessKeyId=new),
                    f"IAM DeleteAccessKey of the unstored new key {new} on user {user}",
                )
            except ActionError as cleanup:
                raise ActionError(
                    f"{exc}; and deleting the new key {new} (its secret is lost) failed too: "
                    f"{cleanup}; delete it by hand, the old key {old} is untouched",
                    retryable=False,
                ) from exc
            raise ActionError(
                f"{exc} (the new key {new} was deleted again; the old key {old} is untouched)",
                retryable=exc.retryable,
            ) from exc
    if keys.get(old) != INACTIVE:
        _deactivate(iam, user, old)
    return {
        "user_name": user,
        "new_access_key_id": new,
        "old_access_key_id": old,
        "secret_name": name,
        "secret_version_id": version,
    }


@rotate_access_key.simulate
def _simulate_rotate(inputs: RotateAccessKey, ctx: ActionContext) -> dict[str, Any]:
    old = inputs.old_access_key_id or "(the only active key)"
    return {
        "simulated": True,
        "would": (
            f"create a new access key for IAM user {inputs.user_name}, store it in the secret "
            f"{inputs.secret_name}, then deactivate {old}"
        ),
        "user_name": inputs.user_name,
        "new_access_key_id": "AKIASIMULATED0000000",
        "old_access_key_id": inputs.old_access_key_id or "simulated",
        "secret_name": inputs.secret_name,
        "secret_version_id": "simulated",
    }


@rotate_access_key.probe
def _probe_rotate(inputs: RotateAccessKey, ctx: ActionContext) -> Probe:
    keys = _keys(_iam(ctx), inputs.user_name)
    stored = _stored(action_client("secretsmanager", ctx), inputs.secret_name)
    new = _ours(stored, ctx)
    if new is None or stored is None:
        return Probe.not_done(f"the secret {inputs.secret_name} holds no key this step created")
    if keys.get(new) != ACTIVE:
        return Probe.not_done(f"the new key {new} is {keys.get(new, ABSENT)}")
    olds = (
        [inputs.old_access_key_id]
        if inputs.old_access_key_id
        else sorted(k for k in keys if k != new)
    )
    if len(olds) != 1 or keys.get(olds[0]) not in (INACTIVE, None):
        return Probe.not_done(f"the old key of {inputs.user_name} is still active")
    return Probe.done({
        "user_name": inputs.user_name, "new_access_key_id": new, "old_access_key_id": olds[0],
        "secret_name": inputs.secret_name, "secret_version_id": stored["version_id"],
    })  # fmt: skip


# --- aws.iam.delete_access_key ------------------------------------------------------------------


class DeleteAccessKey(AccessKey):
    """An access key to delete for good; deactivate it in an earlier step."""

    force: bool = Field(
        default=False, description="delete even if the key is still Active (skips the safety)"
    )


@action("aws.iam.delete_access_key", idempotent=True)
def delete_access_key(inputs: DeleteAccessKey, ctx: ActionContext) -> dict[str, Any]:
    """Delete an IAM access key (irreversible; refused while it is Active unless forced)."""
    iam = _iam(ctx)
    user, key_id = inputs.user_name, inputs.access_key_id
    status = _keys(iam, user).get(key_id, ABSENT)
    if status == ACTIVE and not inputs.force:
        raise ActionError(
            f"refusing to delete access key {key_id} of IAM user {user}: it is still Active; "
            "deactivate it first (aws.iam.deactivate_access_key) and delete it in a later step, "
            "or set force: true",
            retryable=False,
        )
    if status != ABSENT:
        call(
            _unless_missing(lambda: iam.delete_access_key(UserName=user, AccessKeyId=key_id)),
            f"IAM DeleteAccessKey of key {key_id} on user {user}",
        )
    return {"user_name": user, "access_key_id": key_id, "previous_status": status}


@delete_access_key.simulate
def _simulate_delete(inputs: DeleteAccessKey, ctx: ActionContext) -> dict[str, Any]:
    forced = " (forced, even if active)" if inputs.force else " (refused if still active)"
    return {
        "simulated": True,
        "would": (
            f"delete access key {inputs.access_key_id} of IAM user {inputs.user_name}{forced}"
        ),
        "user_name": inputs.user_name,
        "access_key_id": inputs.access_key_id,
        "previous_status": "simulated",
    }


@delete_access_key.probe
def _probe_delete(inputs: DeleteAccessKey, ctx: ActionContext) -> Probe:
    status = _keys(_iam(ctx), inputs.user_name).get(inputs.access_key_id)
    if status is None:
        return Probe.done({
            "user_name": inputs.user_name, "access_key_id": inputs.access_key_id,
            "previous_status": ABSENT,
        })  # fmt: skip
    return Probe.not_done(f"access key {inputs.access_key_id} still exists ({status})")


# --- aws.iam.deactivate_mfa_devices -------------------------------------------------------------


class User(_Inputs):
    """An IAM user."""

    user_name: UserName


def _mfa_serials(iam: Any, user: str) -> list[str]:
    def listed() -> list[str]:
        return [
            str(device["SerialNumber"])
            for page in iam.get_paginator("list_mfa_devices").paginate(UserName=user)
            for device in page["MFADevices"]
        ]

    return call(listed, f"IAM ListMFADevices on user {user}")


@action("aws.iam.deactivate_mfa_devices", idempotent=True)
def deactivate_mfa_devices(inputs: User, ctx: ActionContext) -> dict[str, Any]:
    """Deactivate every MFA device of a user, forcing 2FA re-enrolment."""
    iam = _iam(ctx)
    user = inputs.user_name
    done = []
    for serial in _mfa_serials(iam, user):
        call(
            _unless_missing(partial(iam.deactivate_mfa_device, UserName=user, SerialNumber=serial)),
            f"IAM DeactivateMFADevice {serial} on user {user}",
        )
        done.append(serial)
    return {"user_name": user, "deactivated": done}


@deactivate_mfa_devices.simulate
def _simulate_mfa(inputs: User, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"deactivate every MFA device of IAM user {inputs.user_name}",
        "user_name": inputs.user_name,
        "deactivated": [],
    }


@deactivate_mfa_devices.probe
def _probe_mfa(inputs: User, ctx: ActionContext) -> Probe:
    left = _mfa_serials(_iam(ctx), inputs.user_name)
    if left:
        return Probe.not_done(f"MFA devices still active: {', '.join(left)}")
    return Probe.done({"user_name": inputs.user_name, "deactivated": []})


# --- aws.iam.delete_login_profile ---------------------------------------------------------------


def _user_exists(iam: Any, user: str) -> None:
    call(lambda: iam.get_user(UserName=user), f"IAM GetUser {user}")


@action("aws.iam.delete_login_profile", idempotent=True)
def delete_login_profile(inputs: User, ctx: ActionContext) -> dict[str, Any]:
    """Delete a user's console password (no password is fine)."""
    iam = _iam(ctx)
    user = inputs.user_name
    _user_exists(iam, user)  # NoSuchEntity below then means: no login profile
    deleted = call(
        _unless_missing(lambda: iam.delete_login_profile(UserName=user)),
        f"IAM DeleteLoginProfile on user {user}",
    )
    return {"user_name": user, "deleted": deleted is not None}


@delete_login_profile.simulate
def _simulate_login(inputs: User, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"delete the console password of IAM user {inputs.user_name}",
        "user_name": inputs.user_name,
        "deleted": False,
    }


@delete_login_profile.probe
def _probe_login(inputs: User, ctx: ActionContext) -> Probe:
    iam = _iam(ctx)
    _user_exists(iam, inputs.user_name)
    found = call(
        _unless_missing(lambda: iam.get_login_profile(UserName=inputs.user_name)),
        f"IAM GetLoginProfile on user {inputs.user_name}",
    )
    if found is not None:
        return Probe.not_done(f"IAM user {inputs.user_name} still has a console password")
    return Probe.done({"user_name": inputs.user_name, "deleted": False})


# --- aws.iam.quarantine_principal / release_principal -------------------------------------------


class Principal(_Inputs):
    """An IAM user or role and the name of its quarantine policy."""

    principal_type: Literal["user", "role"] = Field(description="user or role")
    name: str = Field(
        min_length=1, max_length=64, pattern=IAM_NAME, description="IAM user or role name"
    )
    policy_name: PolicyName = "irctl-quarantine"

    @property
    def shown(self) -> str:
        return f"{self.principal_type} {self.name}"


class Release(Principal):
    """A quarantined principal to let act again."""

    keep_session_revocation: bool = Field(
        default=True,
        description="keep denying the sessions issued before the quarantine (the attacker's)",
    )


def _where(p: Principal) -> tuple[str, dict[str, str]]:
    """``user``/``role`` and the parameters naming the principal's inline policy."""
    if p.principal_type == "user":
        return "user", {"UserName": p.name, "PolicyName": p.policy_name}
    return "role", {"RoleName": p.name, "PolicyName": p.policy_name}


def _get_policy(iam: Any, p: Principal) -> dict[str, Any] | None:
    """The inline policy document, or None; an unknown principal is an error."""
    kind, where = _where(p)
    name = {k: v for k, v in where.items() if k != "PolicyName"}
    call(partial(getattr(iam, f"get_{kind}"), **name), f"IAM Get{kind.title()} {p.name}")
    found = call(
        _unless_missing(partial(getattr(iam, f"get_{kind}_policy"), **where)),
        f"IAM Get{kind.title()}Policy {p.policy_name} on {p.shown}",
    )
    if found is None:
        return None
    document = found["PolicyDocument"]
    if isinstance(document, str):  # botocore decodes it; a raw string is URL-encoded JSON
        from urllib.parse import unquote

        document = json.loads(unquote(document))
    return dict(document)


def _put_policy(iam: Any, p: Principal, document: dict[str, Any]) -> None:
    kind, where = _where(p)
    call(
        partial(getattr(iam, f"put_{kind}_policy"), **where, PolicyDocument=json.dumps(document)),
        f"IAM Put{kind.title()}Policy {p.policy_name} on {p.shown}",
    )


def _delete_policy(iam: Any, p: Principal) -> None:
    kind, where = _where(p)
    call(
        _unless_missing(partial(getattr(iam, f"delete_{kind}_policy"), **where)),
        f"IAM Delete{kind.title()}Policy {p.policy_name} on {p.shown}",
    )


def _statements(document: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if document is None:
        return {}
    found = document.get("Statement", [])
    if isinstance(found, dict):
        found = [found]
    return {str(s.get("Sid", "")): s for s in found if isinstance(s, dict)}


def _cutoff(document: dict[str, Any] | None) -> str | None:
    revoke = _statements(document).get(REVOKE_SID)
    if revoke is None:
        return None
    value = revoke.get("Condition", {}).get("DateLessThan", {}).get("aws:TokenIssueTime")
    return str(value) if value else None


def _revoke_statement(cutoff: str) -> dict[str, Any]:
    return {
        "Sid": REVOKE_SID, "Effect": "Deny", "Action": "*", "Resource": "*",
        "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}},
    }  # fmt: skip


def _quarantine_document(cutoff: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": DENY_ALL_SID, "Effect": "Deny", "Action": "*", "Resource": "*"},
            _revoke_statement(cutoff),
        ],
    }


def _quarantined(p: Principal, cutoff: str | None) -> dict[str, Any]:
    return {
        "principal_type": p.principal_type, "name": p.name, "policy_name": p.policy_name,
        "revoked_sessions_before": cutoff,
    }  # fmt: skip


@action("aws.iam.quarantine_principal", idempotent=True)
def quarantine_principal(inputs: Principal, ctx: ActionContext) -> dict[str, Any]:
    """Deny a user or role everything, and revoke its sessions issued until now."""
    iam = _iam(ctx)
    current = _get_policy(iam, inputs)
    if DENY_ALL_SID in _statements(current):
        cutoff = _cutoff(current)  # a re-run keeps the first cutoff (and responders' sessions)
        if cutoff is not None:
            return _quarantined(inputs, cutoff)
    cutoff = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _put_policy(iam, inputs, _quarantine_document(cutoff))
    return _quarantined(inputs, cutoff)


@quarantine_principal.simulate
def _simulate_quarantine(inputs: Principal, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": (
            f"put the inline deny-all policy {inputs.policy_name} on {inputs.shown}, also "
            "denying every session issued before now"
        ),
        **_quarantined(inputs, "simulated"),
    }


@quarantine_principal.probe
def _probe_quarantine(inputs: Principal, ctx: ActionContext) -> Probe:
    current = _get_policy(_iam(ctx), inputs)
    cutoff = _cutoff(current)
    if DENY_ALL_SID in _statements(current) and cutoff is not None:
        return Probe.done(_quarantined(inputs, cutoff))
    return Probe.not_done(f"{inputs.shown} has no quarantine policy {inputs.policy_name}")


@action("aws.iam.release_principal", idempotent=True)
def release_principal(inputs: Release, ctx: ActionContext) -> dict[str, Any]:
    """Lift a quarantine: remove the deny-all, keeping older sessions revoked unless told."""
    iam = _iam(ctx)
    current = _get_policy(iam, inputs)
    released = DENY_ALL_SID in _statements(current)
    cutoff = _cutoff(current) if inputs.keep_session_revocation else None
    if cutoff is not None:
        if released:
            _put_policy(
                iam, inputs, {"Version": "2012-10-17", "Statement": [_revoke_statement(cutoff)]}
            )
    elif current is not None:
        _delete_policy(iam, inputs)
    return {
        "principal_type": inputs.principal_type, "name": inputs.name,
        "policy_name": inputs.policy_name, "released": released,
        "revoked_sessions_before": cutoff,
    }  # fmt: skip


@release_principal.simulate
def _simulate_release(inputs: Release, ctx: ActionContext) -> dict[str, Any]:
    kept = ", keeping sessions issued before the quarantine revoked"
    return {
        "simulated": True,
        "would": (
            f"remove the deny-all of {inputs.policy_name} from {inputs.shown}"
            + (kept if inputs.keep_session_revocation else "")
        ),
        "principal_type": inputs.principal_type, "name": inputs.name,
        "policy_name": inputs.policy_name, "released": True, "revoked_sessions_before": None,
    }  # fmt: skip


@release_principal.probe
def _probe_release(inputs: Release, ctx: ActionContext) -> Probe:
    current = _get_policy(_iam(ctx), inputs)
    if DENY_ALL_SID in _statements(current):
        return Probe.not_done(f"{inputs.shown} is still quarantined by {inputs.policy_name}")
    if not inputs.keep_session_revocation and current is not None:
        return Probe.not_done(f"{inputs.shown} still has the policy {inputs.policy_name}")
    return Probe.done({
        "principal_type": inputs.principal_type, "name": inputs.name,
        "policy_name": inputs.policy_name, "released": False,
        "revoked_sessions_before": _cutoff(current) if inputs.keep_session_revocation else None,
    })  # fmt: skip
