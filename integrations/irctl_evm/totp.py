"""``totp.rotate``: a new TOTP seed for a service account, kept only in Secrets Manager.

::

    - id: rotate-ops-bot-2fa
      action: totp.rotate
      with:
        account: ops-bot@exchange
        secret_id: exchange/ops-bot/totp
        issuer: Exchange admin

The seed is generated here (160 random bits, base32, as authenticator apps
expect), written as the new ``AWSCURRENT`` version of the secret (the old seed
stays ``AWSPREVIOUS`` until the next rotation), and then shown once on the
operator's terminal as a QR code for re-enrolment (:meth:`ActionContext.show`).
It is never in the step's outputs, notes, errors, the journal, Slack or a
transcript.  Without a terminal (an unattended or detached run) nothing is
shown: a note says which secret version to read the seed from instead.

Like ``aws.secretsmanager.put_secret_value``, the write carries a
``ClientRequestToken`` derived from the run and the step, which becomes the
version's id: the probe looks for that version, and an attempt that finds it
already written does not write another.

Secrets Manager is reached with the ``integrations.totp`` settings of
``irctl.yaml``, which take the same keys as ``integrations.aws`` (region,
profile, endpoint_url, role_arn); a YAML alias shares them::

    integrations:
      aws: &aws {region: eu-west-1}
      totp: *aws
"""

from __future__ import annotations

import io
from typing import Any, Literal

from irctl_aws._client import call
from irctl_aws.kms import _guarded, _versions, request_token
from irctl_aws.services import Inputs, Outputs, aws, simulated
from pydantic import Field

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError

#: Base32 characters of a new seed: 32 characters are 160 bits, RFC 4226's recommended length.
SEED_LENGTH = 32


class Rotate(Inputs):
    """A service account whose TOTP seed is replaced, and where the new seed is kept."""

    account: str = Field(
        min_length=1, max_length=128, pattern=r"^[^:\s][^:]*$",
        description="the service account (shown in the authenticator; no colon)",
    )  # fmt: skip
    secret_id: str = Field(min_length=1, description="Secrets Manager secret name or ARN")
    issuer: str = Field(
        default="irctl", min_length=1, max_length=64, pattern=r"^[^:]+$",
        description="issuer shown in the authenticator app (no colon)",
    )  # fmt: skip
    digits: Literal[6, 8] = Field(default=6, description="digits of a code")
    interval: int = Field(default=30, ge=15, le=120, description="seconds a code is valid")
    create: bool = Field(default=False, description="create the secret if it does not exist")


def _token(ctx: ActionContext, inputs: Rotate) -> str:
    return request_token(ctx, f"totp\0{inputs.secret_id}")


def _outputs(
    inputs: Rotate, arn: str, version: str, *, shown: bool, created: bool | None
) -> Outputs:
    return {
        "secret_id": arn or inputs.secret_id,
        "version_id": version,
        "account": inputs.account,
        "issuer": inputs.issuer,
        "digits": inputs.digits,
        "interval": inputs.interval,
        "qr_shown": shown,
        "created": created,
    }


def _arn(sm: Any, secret_id: str) -> str:
    found = call(
        lambda: sm.describe_secret(SecretId=secret_id),
        f"Secrets Manager DescribeSecret on secret {secret_id}",
    )
    return str(found.get("ARN", secret_id))


def _secrets_manager(ctx: ActionContext) -> Any:
    try:
        import boto3  # noqa: F401  (only to say what is missing before anything happens)
    except ImportError as exc:
        raise ActionError(
            "totp.rotate keeps seeds in AWS Secrets Manager: install 'irctl[aws]'",
            retryable=False,
        ) from exc
    return aws("secretsmanager", ctx)


def enrolment(seed: str, inputs: Rotate) -> str:
    """What the operator sees: a QR code of the otpauth URI and the key for typing it in."""
    import pyotp

    uri = pyotp.TOTP(seed, digits=inputs.digits, interval=inputs.interval).provisioning_uri(
        name=inputs.account, issuer_name=inputs.issuer
    )
    lines = [
        f"New TOTP seed for {inputs.account} ({inputs.issuer}): scan it now, it is shown once.",
    ]
    try:
        import segno
    except ImportError:  # the QR code is a convenience: the key can be typed in
        lines.append("(install 'irctl[evm]' for a QR code here)")
    else:
        picture = io.StringIO()
        segno.make(uri, error="m").terminal(out=picture, compact=True)
        lines.append(picture.getvalue().rstrip("\n"))
    grouped = " ".join(seed[i : i + 4] for i in range(0, len(seed), 4))
    lines.append(
        f"Or enter the key by hand: {grouped} (TOTP, SHA1, {inputs.digits} digits, "
        f"{inputs.interval}s)"
    )
    return "\n".join(lines)


@action("totp.rotate")
def rotate(inputs: Rotate, ctx: ActionContext) -> Outputs:
    """Write a new TOTP seed to Secrets Manager and show its QR code once on the terminal."""
    import pyotp

    sm = _secrets_manager(ctx)
    token = _token(ctx, inputs)
    where = f"secret {inputs.secret_id}"
    versions = _versions(sm, inputs.secret_id)
    if versions is None and not inputs.create:
        raise ActionError(
            f"Secrets Manager {where}: not found (set create: true to create it)", retryable=False
        )
    if any(v.get("VersionId") == token for v in versions or []):
        ctx.note(
            f"{where}: version {token} was written by an earlier attempt; its QR code is not "
            "shown again: read the seed from that version to re-enrol"
        )
        return _outputs(inputs, _arn(sm, inputs.secret_id), token, shown=False, created=None)
    seed = pyotp.random_base32(length=SEED_LENGTH)
    if versions is None:
        made = _guarded(
            seed,
            lambda: sm.create_secret(
                Name=inputs.secret_id,
                SecretString=seed,
                ClientRequestToken=token,
                Description=f"TOTP seed of {inputs.account} (written by irctl totp.rotate)",
            ),
            f"Secrets Manager CreateSecret for {where}",
        )
        arn, version, created = str(made.get("ARN", "")), str(made["VersionId"]), True
    else:
        put = _guarded(
            seed,
            lambda: sm.put_secret_value(
                SecretId=inputs.secret_id, SecretString=seed, ClientRequestToken=token
            ),
            f"Secrets Manager PutSecretValue on {where}",
        )
        arn, version, created = str(put.get("ARN", "")), str(put["VersionId"]), False
    shown = ctx.show(enrolment(seed, inputs))
    if not shown:
        ctx.note(
            f"no terminal to show the QR code on: re-enrol {inputs.account} from {where}, "
            f"version {version} (AWSCURRENT)"
        )
    return _outputs(inputs, arn, version, shown=shown, created=created)


@rotate.simulate
def _simulate(inputs: Rotate, ctx: ActionContext) -> Outputs:
    return simulated(
        f"write a new TOTP seed for {inputs.account} to secret {inputs.secret_id} and show its "
        "QR code once on the terminal",
        **_outputs(inputs, "", _token(ctx, inputs), shown=False, created=None),
    )


@rotate.probe
def _probe(inputs: Rotate, ctx: ActionContext) -> Probe:
    sm = _secrets_manager(ctx)
    token = _token(ctx, inputs)
    versions = _versions(sm, inputs.secret_id)
    if versions is None:
        return Probe.not_done(f"secret {inputs.secret_id} does not exist")
    if not any(v.get("VersionId") == token for v in versions):
        return Probe.not_done(f"secret {inputs.secret_id} has no version {token}")
    arn = _arn(sm, inputs.secret_id)
    return Probe.done(_outputs(inputs, arn, token, shown=False, created=None))
