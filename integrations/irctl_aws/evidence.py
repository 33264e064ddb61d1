"""Evidence in WORM storage: S3 PutObject under Object Lock.

::

    - id: preserve-ledger-export
      action: aws.s3.put_evidence
      with:
        bucket: exchange-ir-evidence        # a bucket created with Object Lock enabled
        key: "{{ run.id }}/ledger.csv"
        body_from_file: exports/ledger.csv
        retain_until: 2555d                 # or a date: 2032-12-31

The object is written with ``ObjectLockMode`` (COMPLIANCE by default: nobody,
not even the account's root, can delete it or shorten its retention) and
``ObjectLockRetainUntilDate``, a SHA-256 checksum AWS verifies on upload, and
the hex digest in the object's metadata (``x-amz-meta-sha256``), which is how a
re-run and the probe recognise evidence already written (HeadObject).  A key
that already holds different evidence is refused: write to a new key.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError
from irctl.runbook.model import parse_duration
from irctl_aws._client import call
from irctl_aws.services import Inputs, Outputs, aws, simulated

#: Larger evidence belongs in a multipart upload, which this action does not do.
MAX_BODY = 512 * 1024 * 1024
#: A relative ``retain_until`` (365d) is computed when the step runs; a re-run a little
#: later still accepts the object written the first time.
RELATIVE_SLACK = timedelta(days=1)
#: The longest retention given as a duration: evidence is kept for years (2555d is seven),
#: far past the 366d a runbook's timers may last; more than a century is a typo.
LONGEST_RETENTION = 36500 * 86400.0


def parse_moment(value: str) -> timedelta | datetime:
    """A duration (365d, 12h) or a UTC moment (2032-12-31, 2032-12-31T00:00:00Z)."""
    text = value.strip()
    try:
        seconds: float | None = parse_duration(text, longest=math.inf)
    except ValueError:
        seconds = None
    if seconds is not None:
        if seconds > LONGEST_RETENTION:
            raise ValueError(f"{value!r} is longer than a century: give a date instead")
        return timedelta(seconds=seconds)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a date (2032-12-31), a UTC time (2032-12-31T00:00:00Z) "
            "nor a duration (365d)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class PutEvidence(Inputs):
    """Write one object under Object Lock retention."""

    bucket: str = Field(min_length=3, description="a bucket with Object Lock enabled")
    key: str = Field(min_length=1, description="object key")
    body: str | None = Field(default=None, description="the evidence as text (UTF-8)")
    body_from_file: str | None = Field(default=None, description="a local file to upload")
    retain_until: str = Field(
        description="keep until this date or UTC time (ISO 8601), or for this long (365d, 12h)"
    )
    mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        default="COMPLIANCE",
        description="COMPLIANCE: nobody can delete it early; GOVERNANCE: privileged users can",
    )
    content_type: str | None = Field(
        default=None, description="Content-Type; default text/plain for body, else binary"
    )

    @field_validator("retain_until")
    @classmethod
    def _until(cls, value: str) -> str:
        parse_moment(value)
        return value

    @model_validator(mode="after")
    def _one_body(self) -> PutEvidence:
        if (self.body is None) == (self.body_from_file is None):
            raise ValueError("give exactly one of body or body_from_file")
        return self

    @property
    def relative(self) -> bool:
        return isinstance(parse_moment(self.retain_until), timedelta)

    def until(self, now: datetime) -> datetime:
        parsed = parse_moment(self.retain_until)
        moment = now + parsed if isinstance(parsed, timedelta) else parsed
        return moment.replace(microsecond=0)

    def read(self) -> bytes:
        if self.body is not None:
            return self.body.encode("utf-8")
        path = Path(str(self.body_from_file)).expanduser()
        try:
            size = path.stat().st_size
            if size > MAX_BODY:
                raise ActionError(
                    f"evidence file {path} is {size} bytes, over the {MAX_BODY} byte limit",
                    retryable=False,
                )
            return path.read_bytes()
        except OSError as exc:
            raise ActionError(
                f"evidence file {path} cannot be read: {exc.strerror}", retryable=False
            ) from exc

    def media_type(self) -> str:
        if self.content_type:
            return self.content_type
        return "text/plain; charset=utf-8" if self.body is not None else "application/octet-stream"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _head(s3: Any, bucket: str, key: str, version: str | None = None) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    def fetch() -> dict[str, Any] | None:
        options = {"VersionId": version} if version else {}
        try:
            found: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key, **options)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return found

    return call(fetch, f"S3 HeadObject on s3://{bucket}/{key}")


@dataclass(frozen=True)
class Evidence:
    """One object to keep: where, what, and under which retention."""

    bucket: str
    key: str
    data: bytes
    mode: str
    until: datetime
    #: The retention an object already at the key must have to count as this evidence: less
    #: than ``until`` when that was computed from a duration when the step ran.
    enough: datetime
    content_type: str

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _evidence(bucket: str, key: str, head: dict[str, Any], sha: str, size: int) -> Outputs:
    until = head.get("ObjectLockRetainUntilDate")
    return {
        "bucket": bucket,
        "key": key,
        "version_id": head.get("VersionId"),
        "mode": head.get("ObjectLockMode"),
        "retain_until": _iso(until) if isinstance(until, datetime) else None,
        "sha256": sha,
        "size": size,
    }


def _locked(head: dict[str, Any], mode: str, until: datetime | None) -> bool:
    held = head.get("ObjectLockRetainUntilDate")
    if head.get("ObjectLockMode") != mode or not isinstance(held, datetime):
        return False
    return until is None or held >= until


def store(ctx: ActionContext, evidence: Evidence) -> Outputs:
    """Write ``evidence`` under Object Lock, or find it written already; its outputs.

    A key that holds other content is refused (write to a new key); after the write,
    HeadObject must show the retention asked for.  Shared by every action that keeps
    evidence (``aws.s3.put_evidence``, ``aws.cloudtrail.preserve_events``).
    """
    if evidence.until <= datetime.now(UTC):
        raise ActionError(f"retain_until {_iso(evidence.until)} is in the past", retryable=False)
    digest = hashlib.sha256(evidence.data)
    sha = digest.hexdigest()
    checksum = base64.b64encode(digest.digest()).decode("ascii")  # AWS verifies it on upload
    where, size = evidence.where, len(evidence.data)
    s3 = aws("s3", ctx)
    existing = _head(s3, evidence.bucket, evidence.key)
    if existing is not None:
        held = existing.get("Metadata", {}).get("sha256")
        if held != sha:
            raise ActionError(
                f"{where} already holds other evidence (sha256 {held or 'unknown'}, this is "
                f"{sha}): write it to a new key",
                retryable=False,
            )
        if _locked(existing, evidence.mode, evidence.enough):
            ctx.note(f"{where} already holds this evidence under {evidence.mode} retention")
            outputs = _evidence(evidence.bucket, evidence.key, existing, sha, size)
            return {**outputs, "changed": False}
    put = call(
        lambda: s3.put_object(
            Bucket=evidence.bucket, Key=evidence.key, Body=evidence.data,
            ContentType=evidence.content_type, ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum, Metadata={"sha256": sha}, ObjectLockMode=evidence.mode,
            ObjectLockRetainUntilDate=evidence.until,
        ),
        f"S3 PutObject with {evidence.mode} retention until {_iso(evidence.until)} on {where}",
    )  # fmt: skip
    version = put.get("VersionId")
    head = _head(s3, evidence.bucket, evidence.key, version)
    if head is None or not _locked(head, evidence.mode, evidence.until):
        found = "nothing" if head is None else f"mode {head.get('ObjectLockMode')}"
        raise ActionError(
            f"{where} (version {version}) was written but HeadObject shows {found}, not "
            f"{evidence.mode} retention until {_iso(evidence.until)}: check the bucket's "
            "Object Lock",
            retryable=False,
        )
    return {**_evidence(evidence.bucket, evidence.key, head, sha, size), "changed": True}


def stored(
    ctx: ActionContext, bucket: str, key: str, sha: str, size: int, mode: str
) -> tuple[Outputs | None, str]:
    """For a probe: the outputs of evidence ``sha`` found at the key under ``mode``, or None
    and why not."""
    head = _head(aws("s3", ctx), bucket, key)
    if head is None:
        return None, "no object at the key"
    if head.get("Metadata", {}).get("sha256") != sha:
        return None, "the object at the key holds other content"
    if not _locked(head, mode, None):
        return None, f"the object is not under {mode} retention"
    return {**_evidence(bucket, key, head, sha, size), "changed": None}, ""


@action("aws.s3.put_evidence", idempotent=True)
def put_evidence(inputs: PutEvidence, ctx: ActionContext) -> Outputs:
    """Store evidence in S3 under Object Lock (COMPLIANCE by default) with its SHA-256."""
    until = inputs.until(datetime.now(UTC))
    return store(ctx, Evidence(
        bucket=inputs.bucket, key=inputs.key, data=inputs.read(), mode=inputs.mode, until=until,
        enough=until - RELATIVE_SLACK if inputs.relative else until,
        content_type=inputs.media_type(),
    ))  # fmt: skip


@put_evidence.simulate
def _put_evidence_simulate(inputs: PutEvidence, ctx: ActionContext) -> Outputs:
    until = inputs.until(datetime.now(UTC))
    sha = hashlib.sha256(inputs.body.encode("utf-8")).hexdigest() if inputs.body else None
    return simulated(
        f"write s3://{inputs.bucket}/{inputs.key} with {inputs.mode} retention until {_iso(until)}",
        bucket=inputs.bucket, key=inputs.key, version_id=None, mode=inputs.mode,
        retain_until=_iso(until), sha256=sha, size=None, changed=None,
    )  # fmt: skip


@put_evidence.probe
def _put_evidence_probe(inputs: PutEvidence, ctx: ActionContext) -> Probe:
    try:
        data = inputs.read()
    except ActionError as exc:
        return Probe.unknown(exc.message)
    sha = hashlib.sha256(data).hexdigest()
    found, why = stored(ctx, inputs.bucket, inputs.key, sha, len(data), inputs.mode)
    return Probe.not_done(why) if found is None else Probe.done(found)
