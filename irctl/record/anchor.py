"""Anchoring: each checkpoint's head hash, written to WORM storage outside irctl's store.

A signed transcript proves it was not edited *by someone without the
installation key*.  Someone holding that key (or the database) could still
cut the end off a run and re-seal it, or replace a run whole.  Anchors close
that gap: at every checkpoint the engine writes a small record, the run id and
the seq and hash of the event the checkpoint seals (and of the checkpoint
itself), to S3 under Object Lock COMPLIANCE retention, where nobody can delete
or overwrite it.  Configured in ``irctl.yaml``::

    integrations:
      aws: {region: us-east-1}
      anchor:
        bucket: exchange-ir-anchors      # created with Object Lock enabled
        prefix: irctl/anchors/           # default irctl/anchors/
        retain_until: 2555d              # default 2555d (7 years)
        mode: COMPLIANCE                 # default; GOVERNANCE for test buckets

The write goes through the ``aws.s3.put_evidence`` action (its retention,
checksum and read-back checks).  ``irctl transcript verify ... --anchor``
reads the anchors back (:func:`read_anchors`) and checks the transcript against
the latest (:func:`check_anchor`): a transcript cut after its last anchored
event, or replaced whole, no longer holds the anchored event with that hash.
An anchor that cannot be written never stops a run; it is logged, and
``irctl transcript anchor RUN_ID`` writes it again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.canonical import canonical_json
from irctl.errors import IrctlError, UsageError
from irctl.journal import events as ev

if TYPE_CHECKING:
    from irctl.actions import Registry
    from irctl.journal.events import Event
    from irctl.runbook.model import Config

__all__ = [
    "AnchorCheck",
    "AnchorSettings",
    "anchor_checkpoint",
    "anchor_quietly",
    "anchor_record",
    "check_anchor",
    "read_anchors",
]

ACTION = "aws.s3.put_evidence"
KIND = "irctl-anchor/v1"
log = logging.getLogger("irctl.anchor")  # the name it has always logged under


@dataclass(frozen=True)
class AnchorSettings:
    """``integrations.anchor`` of irctl.yaml."""

    bucket: str
    prefix: str = "irctl/anchors/"
    retain_until: str = "2555d"
    mode: str = "COMPLIANCE"

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> AnchorSettings:
        bucket = raw.get("bucket")
        if not isinstance(bucket, str) or len(bucket) < 3:
            raise UsageError("integrations.anchor.bucket: give the S3 bucket (Object Lock enabled)")
        prefix = str(raw.get("prefix", cls.prefix))
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        mode = str(raw.get("mode", cls.mode)).upper()
        if mode not in ("COMPLIANCE", "GOVERNANCE"):
            raise UsageError(f"integrations.anchor.mode: COMPLIANCE or GOVERNANCE, not {mode!r}")
        return cls(bucket, prefix, str(raw.get("retain_until", cls.retain_until)), mode)

    def key(self, run_id: str, checkpoint_seq: int) -> str:
        return f"{self.prefix}{run_id}/{checkpoint_seq:010d}.json"


def anchor_record(checkpoint: Event) -> dict[str, Any]:
    """What is anchored for a checkpoint: the sealed head, the checkpoint, its signature."""
    if checkpoint.type != ev.CHECKPOINT:
        raise IrctlError(f"event {checkpoint.seq} of run {checkpoint.run} is not a checkpoint")
    d = checkpoint.data
    return {
        "kind": KIND, "run": checkpoint.run, "seq": d.get("seq"), "head": d.get("head"),
        "checkpoint_seq": checkpoint.seq, "checkpoint_hash": checkpoint.hash,
        "key": d.get("key"), "sig": d.get("sig"), "ts": checkpoint.ts,
    }  # fmt: skip


def anchor_checkpoint(
    checkpoint: Event,
    settings: AnchorSettings,
    *,
    registry: Registry,
    aws: Mapping[str, Any],
) -> dict[str, Any]:
    """Write one checkpoint's anchor with ``aws.s3.put_evidence``; returns the action's outputs."""
    from irctl.actions import ActionContext

    act = registry.get(ACTION)
    inputs = act.parse({
        "bucket": settings.bucket, "key": settings.key(checkpoint.run, checkpoint.seq),
        "body": canonical_json(anchor_record(checkpoint)) + "\n",
        "retain_until": settings.retain_until, "mode": settings.mode,
        "content_type": "application/json",
    })  # fmt: skip
    # Bounded: a run's end never waits long on an unreachable S3 (the anchor can be rewritten).
    config = {**aws, "max_attempts": min(int(aws.get("max_attempts", 2)), 2)}
    ctx = ActionContext(run_id=checkpoint.run, step_id="anchor", config=config, timeout=15.0)
    return act.call_run(inputs, ctx)


def anchor_quietly(checkpoint: Event, config: Config, registry: Registry) -> bool:
    """The engine's hook: anchor if configured; a failure is logged, never raised."""
    raw = config.integrations.get("anchor")
    if not raw:
        return False
    try:
        settings = AnchorSettings.from_config(raw)
        anchor_checkpoint(
            checkpoint, settings, registry=registry, aws=config.integrations.get("aws", {})
        )
    except Exception as exc:  # an anchor that cannot be written never stops a run
        log.warning(
            "run %s: checkpoint %d was not anchored: %s; write it again with "
            "'irctl transcript anchor %s'", checkpoint.run, checkpoint.seq, exc, checkpoint.run,
        )  # fmt: skip
        return False
    return True


# -- reading anchors back and checking a transcript against them ------------------------------


def _parse(body: bytes, where: str) -> dict[str, Any]:
    try:
        record = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{where} is not an irctl anchor (not JSON)") from exc
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise UsageError(f"{where} is not an irctl anchor (kind is not {KIND})")
    for name in ("run", "head", "checkpoint_hash"):
        if not isinstance(record.get(name), str):
            raise UsageError(f"{where}: the anchor has no valid {name!r}")
    for name in ("seq", "checkpoint_seq"):
        if _seq(record.get(name)) is None:
            raise UsageError(f"{where}: the anchor has no valid {name!r} (an event number, 1 or "
                             "more)")  # fmt: skip
    return record


def _seq(value: Any) -> int | None:
    """An event number (1 or more), or None: a JSON true is not 1, and 0 or -1 is no event."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def read_anchors(
    location: str, run_id: str, *, aws: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Anchors of a run: from a local anchor file (.json) or ``s3://bucket[/prefix]``."""
    if not location.startswith("s3://"):
        path = Path(location)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"--anchor {location}: cannot read it ({exc.strerror}); give an anchor file or "
                "s3://bucket[/prefix]"
            ) from exc
        return [_parse(body, str(path))]
    bucket, _, prefix = location[len("s3://"):].partition("/")
    if not bucket:
        raise UsageError(f"--anchor {location}: write s3://bucket[/prefix]")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    settings = AnchorSettings(bucket, prefix if prefix else AnchorSettings.prefix)
    return _read_s3(settings, run_id, aws or {})


def _read_s3(settings: AnchorSettings, run_id: str, aws: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every anchor object of a run, read back (boto3, configured like ``integrations.aws``)."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise UsageError(
            "reading anchors from S3 needs boto3: pip install 'irctl[aws]'"
        ) from exc
    session = boto3.session.Session(profile_name=aws.get("profile"), region_name=aws.get("region"))
    options: dict[str, Any] = {"config": BotoConfig(retries={"max_attempts": 2})}
    if aws.get("endpoint_url"):
        options["endpoint_url"] = str(aws["endpoint_url"])
    prefix = f"{settings.prefix}{run_id}/"
    where = f"s3://{settings.bucket}/{prefix}"
    found: list[dict[str, Any]] = []
    try:
        s3 = session.client("s3", **options)
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=settings.bucket, Prefix=prefix
        ):
            keys += [str(item["Key"]) for item in page.get("Contents", [])]
        for key in sorted(keys):
            got = s3.get_object(Bucket=settings.bucket, Key=key)
            location = f"s3://{settings.bucket}/{key}"
            found.append({**_parse(got["Body"].read(), location), "location": location,
                          "lock_mode": got.get("ObjectLockMode")})  # fmt: skip
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise IrctlError(
            f"cannot read the anchors at {where}: {error.get('Code')}: {error.get('Message')}"
        ) from exc
    except BotoCoreError as exc:
        raise IrctlError(f"cannot read the anchors at {where}: {exc}") from exc
    return found


@dataclass(frozen=True)
class AnchorCheck:
    """What checking a transcript against its anchors found."""

    ok: bool
    anchors: int
    latest: int | None  # checkpoint seq of the latest anchor
    problems: list[str]
    unanchored: int = 0  # lines after the latest anchored checkpoint

    def summary(self) -> str:
        if not self.anchors:
            return "no anchor found for this run"
        if self.ok:
            tail = (f"; {self.unanchored} later line(s) are not anchored (anchor them with "
                    "'irctl transcript anchor')" if self.unanchored else "")  # fmt: skip
            return (f"{self.anchors} anchor(s); the transcript holds the latest (checkpoint "
                    f"{self.latest}) exactly{tail}")  # fmt: skip
        return "; ".join(self.problems)


def check_anchor(
    lines: Sequence[str], anchors: Sequence[Mapping[str, Any]], run_id: str | None
) -> AnchorCheck:
    """Check transcript lines against anchors: every anchored event and checkpoint is there.

    A transcript cut after its last anchored event lacks it (truncation); a
    transcript replaced whole holds other bytes at that seq (rewrite).
    """
    from irctl.canonical import sha256_hex

    problems: list[str] = []
    mine: list[Mapping[str, Any]] = []
    for anchor in anchors:
        if anchor.get("run") != run_id:
            problems.append(f"the anchor for run {anchor.get('run')!r} is not for this run "
                            f"({run_id!r})")  # fmt: skip
        elif (_seq(anchor.get("seq")) is None or _seq(anchor.get("checkpoint_seq")) is None
              or not isinstance(anchor.get("head"), str)
              or not isinstance(anchor.get("checkpoint_hash"), str)):  # fmt: skip
            where = anchor.get("location") or f"an anchor of run {run_id}"
            problems.append(f"INVALID: {where} records no valid event number or hash (seq and "
                            "checkpoint_seq are event numbers, 1 or more)")  # fmt: skip
        else:
            mine.append(anchor)
    if not mine:
        if not problems:
            problems.append(f"no anchor found for run {run_id}: it was never anchored, or the "
                            "anchors are elsewhere")  # fmt: skip
        return AnchorCheck(False, 0, None, problems)
    # each line's own bytes: invalid UTF-8 read from a file is kept as surrogates
    hashes = [sha256_hex((line[:-1] if line.endswith("\n") else line)
                         .encode("utf-8", "surrogateescape")) for line in lines]  # fmt: skip
    count = len(hashes)
    latest = max(mine, key=lambda a: int(a["checkpoint_seq"]))
    for anchor in sorted(mine, key=lambda a: int(a["checkpoint_seq"])):
        for seq, expected, what in (
            (int(anchor["seq"]), str(anchor["head"]), "anchored event"),
            (int(anchor["checkpoint_seq"]), str(anchor["checkpoint_hash"]), "anchored checkpoint"),
        ):
            if seq > count:
                problems.append(
                    f"TRUNCATED: the {what} {seq} is missing (the transcript ends at line "
                    f"{count}); the anchor written at checkpoint {anchor['checkpoint_seq']} "
                    "proves the run went on"
                )
                break
            if hashes[seq - 1] != expected:
                problems.append(
                    f"REPLACED: line {seq} does not hash to the {what}'s anchored hash "
                    f"{expected[:16]}…: the transcript was rewritten or replaced"
                )
                break
    last = int(latest["checkpoint_seq"])
    return AnchorCheck(not problems, len(mine), last, problems, max(0, count - last))
