"""boto3 clients from the workspace config, and botocore errors as irctl errors.

Configured in irctl.yaml::

    integrations:
      aws:
        region: us-east-1            # else the standard chain (AWS_REGION, profile)
        profile: incident-response   # optional: a named profile
        endpoint_url: http://127.0.0.1:5000   # sandboxes and tests only
        role_arn: arn:aws:iam::123456789012:role/irctl   # optional: assume it first

Credentials come from the standard boto3 chain (environment, profile, SSO,
instance role); none are ever written to irctl's records.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from irctl.actions import ActionContext, ActionError, preflight

T = TypeVar("T")

THROTTLED = {
    "Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "SlowDown", "LimitExceededException",
}  # fmt: skip
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure"}
EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId"}
NOT_FOUND_SUFFIXES = ("NotFound", "NotFoundException", "NoSuchEntity", "NoSuchKey", "NoSuchBucket")


def client(service: str, config: Mapping[str, Any], *, timeout: float | None = None) -> Any:
    """A boto3 client for ``service`` configured from the ``aws`` integration settings."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        profile_name=config.get("profile"), region_name=config.get("region")
    )
    options = Config(
        retries={"max_attempts": int(config.get("max_attempts", 4)), "mode": "standard"},
        connect_timeout=min(timeout or 10.0, 10.0),
        read_timeout=timeout or 30.0,
    )
    kwargs: dict[str, Any] = {"config": options}
    if config.get("endpoint_url"):
        kwargs["endpoint_url"] = str(config["endpoint_url"])
    if config.get("role_arn"):
        sts = session.client("sts", **kwargs)
        creds = sts.assume_role(RoleArn=str(config["role_arn"]), RoleSessionName="irctl")[
            "Credentials"
        ]
        kwargs.update(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
    return session.client(service, **kwargs)


CLIENT_TTL = 300.0  # seconds a client is reused: well within an assumed role's hour
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN")
_CLIENTS: dict[str, tuple[float, Any]] = {}
_CLIENTS_LOCK = threading.Lock()


def action_client(service: str, ctx: ActionContext, *, region: str | None = None) -> Any:
    """The client an action uses for ``service``, reused for a few minutes.

    ``region`` overrides ``integrations.aws.region`` for a service that must be called in
    one region (WAF for CloudFront is managed in us-east-1 only).

    Making one costs ~80 ms of CPU: rotating keys for hundreds of users in parallel
    otherwise spends most of its time building clients under the GIL (200 rotations:
    ~70 s instead of ~5 s).  A client is reused only for the same settings, step timeout
    and environment credentials (kept as a digest), for at most CLIENT_TTL seconds.
    """
    if ctx.cancelled.is_set():
        raise ActionError("cancelled", retryable=False)
    left = ctx.remaining()
    if left is not None and left <= 0:
        raise ActionError(f"AWS {service}: the step's timeout has already passed", retryable=True)
    settings = {k: v for k, v in ctx.config.items() if not k.startswith("_")}
    if region is not None:
        settings["region"] = region
    identity = hashlib.sha256(
        json.dumps([os.environ.get(name) for name in CREDENTIAL_ENV]).encode()
    ).hexdigest()
    key = json.dumps([service, settings, ctx.timeout, identity], sort_keys=True, default=str)
    now = time.monotonic()
    # Made under the lock: sixteen workers starting at once wait for one client instead of
    # each building their own.
    with _CLIENTS_LOCK:
        cached = _CLIENTS.get(key)
        if cached is not None and now - cached[0] < CLIENT_TTL:
            return cached[1]
        made = call(  # assuming integrations.aws.role_arn happens here
            lambda: client(service, settings, timeout=ctx.timeout),
            f"creating the {service} client",
        )
        _CLIENTS[key] = (now, made)
    return made


def call(fn: Callable[[], T], what: str) -> T:
    """Run one AWS call; botocore's errors become ActionErrors naming ``what`` and the cause."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    try:
        return fn()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = str(exc.response.get("Error", {}).get("Message", "")) or code
        if code in THROTTLED:
            raise ActionError(f"AWS throttled {what}: {message}", retryable=True) from exc
        if code in DENIED:
            raise ActionError(
                f"AWS denied {what}: {message} (the credentials lack the permission)",
                retryable=False,
            ) from exc
        if code in EXPIRED:
            raise ActionError(
                f"AWS credentials expired or invalid for {what}: {message}; refresh them "
                "(aws sso login, or new keys)",
                retryable=False,
            ) from exc
        if code.endswith(NOT_FOUND_SUFFIXES):
            raise ActionError(f"{what}: not found ({message})", retryable=False) from exc
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        raise ActionError(
            f"AWS refused {what}: {code}: {message}", retryable=status >= 500
        ) from exc
    except NoCredentialsError as exc:
        raise ActionError(
            f"no AWS credentials for {what}: configure a profile, role or environment variables "
            "(irctl validate --check-integrations finds this before an incident)",
            retryable=False,
        ) from exc
    except NoRegionError as exc:
        raise ActionError(
            f"no AWS region for {what}: set integrations.aws.region in irctl.yaml",
            retryable=False,
        ) from exc
    except EndpointConnectionError as exc:
        raise ActionError(f"AWS unreachable for {what}: {exc}", retryable=True) from exc
    except BotoCoreError as exc:
        raise ActionError(f"AWS error for {what}: {exc}", retryable=True) from exc


@preflight("aws")
def ready(config: dict[str, Any]) -> list[str]:
    """Whether the configured credentials work: STS says whose they are (reads nothing else)."""
    settings = {**config, "max_attempts": 1}
    try:
        call(
            lambda: client("sts", settings, timeout=10.0).get_caller_identity(),
            "sts:GetCallerIdentity",
        )
    except ActionError as exc:
        return [str(exc)]
    return []
