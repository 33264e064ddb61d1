"""aws.cloudtrail.preserve_events: the lookup, and the document kept under S3 Object Lock.

moto 5.2 does not implement CloudTrail LookupEvents (its server answers 500, "The
lookup_events action has not been implemented"): against moto alone the action fails and
writes nothing, which the first test shows.  The others answer LookupEvents from a
loopback proxy in front of moto with events shaped as AWS documents them (pages of at most
50, NextToken), and check what it asked for; S3 and its Object Lock are moto's own.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from irctl.actions import ActionContext, Probe, default_registry
from irctl.errors import ActionError
from tests.aws_proxy import AwsProxy, aws_proxy  # noqa: F401
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

LOOKUP = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
DEAD = {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9", "max_attempts": 1}
BUCKET = "ir-evidence"
INPUTS = {
    "username": "jdoe", "start_time": "7d", "bucket": BUCKET, "key": "run-1/cloudtrail.json",
    "retain_until": "365d",
}  # fmt: skip


def context(config: dict[str, Any], step: str = "preserve") -> ActionContext:
    return ActionContext(run_id="run-1", step_id=step, config=config, timeout=60)


def run(inputs: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    found = default_registry.get("aws.cloudtrail.preserve_events")
    return found.call_run(found.parse(inputs), ctx)


def probe(inputs: dict[str, Any], ctx: ActionContext) -> Probe:
    found = default_registry.get("aws.cloudtrail.preserve_events")
    return found.call_probe(found.parse(inputs), ctx)


def _bucket(aws: dict[str, Any], locked: bool = True) -> Any:
    s3 = boto("s3", aws)
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=locked)
    return s3


class Trail:
    """LookupEvents answered from ``count`` events of one user, newest first."""

    def __init__(self, count: int) -> None:
        now = datetime.now(UTC).timestamp()
        self.events = [
            {
                "EventId": f"ev-{i:04d}", "EventName": "Sign" if i % 2 else "Decrypt",
                "ReadOnly": "false", "AccessKeyId": "AKIAJDOEEXAMPLE00001",
                "EventTime": now - 60 * i, "EventSource": "kms.amazonaws.com",
                "Username": "jdoe",
                "Resources": [{"ResourceType": "AWS::KMS::Key", "ResourceName": "key-1"}],
                "CloudTrailEvent": json.dumps({"eventID": f"ev-{i:04d}", "eventName": "Sign",
                                               "userIdentity": {"userName": "jdoe"}}),
            }
            for i in range(count)
        ]  # fmt: skip
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(request)
        start = int(request.get("NextToken") or 0)
        size = int(request.get("MaxResults", 50))
        page: dict[str, Any] = {"Events": self.events[start : start + size]}
        if start + size < len(self.events):
            page["NextToken"] = str(start + size)
        return 200, page


def test_moto_has_no_lookup_events_and_nothing_is_written(aws: dict[str, Any]) -> None:
    s3 = _bucket(aws)
    with pytest.raises(ClientError) as moto_says:
        boto("cloudtrail", aws).lookup_events(
            LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "jdoe"}]
        )
    assert moto_says.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500

    ctx = context(aws)
    with pytest.raises(ActionError) as caught:
        run(INPUTS, ctx)
    assert "CloudTrail LookupEvents for Username jdoe" in caught.value.message
    assert caught.value.retryable is True  # a 500: a retry may pass against AWS
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    assert set(ctx.facts) == {"window"}  # the window is fixed for the retry; nothing else
    assert probe(INPUTS, ctx).state == "not_done"


def test_events_kept_under_compliance_lock(
    aws_proxy: tuple[AwsProxy, dict[str, Any]], aws: dict[str, Any]
) -> None:
    proxy, through = aws_proxy
    trail = Trail(120)
    proxy.answer[LOOKUP] = trail
    s3 = _bucket(aws)
    ctx = context(through)
    assert probe(INPUTS, ctx).state == "not_done"
    before = datetime.now(UTC)
    out = run(INPUTS, ctx)

    # what was asked: one attribute, the window, 50 a page, each page once
    assert len(trail.requests) == 3
    first = trail.requests[0]
    assert first["LookupAttributes"] == [{"AttributeKey": "Username", "AttributeValue": "jdoe"}]
    start, end = first["StartTime"], first["EndTime"]
    assert abs(end - before.timestamp()) < 5
    assert abs((end - start) - 7 * 86400) < 1
    assert [r.get("NextToken") for r in trail.requests] == [None, "50", "100"]
    assert (out["start_time"], out["end_time"]) == (ctx.facts["window"]["start"],
                                                   ctx.facts["window"]["end"])  # fmt: skip

    # what was kept, read back from S3
    obj = s3.get_object(Bucket=BUCKET, Key="run-1/cloudtrail.json")
    body = obj["Body"].read()
    assert hashlib.sha256(body).hexdigest() == out["sha256"] == obj["Metadata"]["sha256"]
    assert obj["ObjectLockMode"] == "COMPLIANCE"
    until = obj["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=364) < until < before + timedelta(days=366)
    assert (out["version_id"], out["size"]) == (obj["VersionId"], len(body))
    assert (out["event_count"], out["truncated"], out["changed"]) == (120, False, True)
    document = json.loads(body)
    assert document["format"] == "irctl.cloudtrail-events/1"
    assert document["event_count"] == 120
    assert document["query"]["lookup_attributes"] == first["LookupAttributes"]
    assert [e["EventId"] for e in document["events"]] == [e["EventId"] for e in trail.events]
    # CloudTrail's own record of each event is kept as the very string it returned
    assert document["events"][7]["CloudTrailEvent"] == trail.events[7]["CloudTrailEvent"]
    assert document["events"][0]["EventTime"].endswith("+00:00")

    # WORM: the locked version can be neither deleted nor replaced
    version = out["version_id"]
    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=BUCKET, Key="run-1/cloudtrail.json", VersionId=version)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    s3.put_object(Bucket=BUCKET, Key="run-1/cloudtrail.json", Body=b"[]")  # a new version...
    kept = s3.get_object(Bucket=BUCKET, Key="run-1/cloudtrail.json", VersionId=version)
    assert kept["Body"].read() == body  # ...beside the evidence, which is as it was
    # and irctl writes nothing over a key that holds other content
    s3.put_object(Bucket=BUCKET, Key="run-1/taken.json", Body=b"x", Metadata={"sha256": "0"})
    with pytest.raises(ActionError) as refused:
        run({**INPUTS, "key": "run-1/taken.json"}, context(through, "taken"))
    assert "already holds other evidence" in refused.value.message
    assert s3.get_object(Bucket=BUCKET, Key="run-1/taken.json")["Body"].read() == b"x"


def test_a_rerun_returns_the_document_written(
    aws_proxy: tuple[AwsProxy, dict[str, Any]], aws: dict[str, Any]
) -> None:
    proxy, through = aws_proxy
    trail = Trail(3)
    proxy.answer[LOOKUP] = trail
    s3 = _bucket(aws)
    ctx = context(through)
    out = run(INPUTS, ctx)

    # the process died after the write: the probe finds the object of the journaled digest
    crashed = context(through)
    crashed.facts.update(ctx.facts)
    found = probe(INPUTS, crashed)
    assert found.state == "done"
    assert (found.outputs["sha256"], found.outputs["event_count"]) == (out["sha256"], 3)
    # and a re-run returns it, without a second lookup or a second version
    trail.events.append({**trail.events[0], "EventId": "ev-late"})  # delivered late
    again = run(INPUTS, crashed)
    assert (again["version_id"], again["changed"]) == (out["version_id"], False)
    assert len(trail.requests) == 1
    assert len(s3.list_object_versions(Bucket=BUCKET)["Versions"]) == 1


def test_max_events_access_key_and_a_bucket_without_lock(
    aws_proxy: tuple[AwsProxy, dict[str, Any]], aws: dict[str, Any]
) -> None:
    proxy, through = aws_proxy
    trail = Trail(120)
    proxy.answer[LOOKUP] = trail
    s3 = _bucket(aws)
    inputs = {**INPUTS, "username": None, "access_key_id": "AKIAJDOEEXAMPLE00001",
              "max_events": 60, "start_time": "2026-01-01", "end_time": "1h"}  # fmt: skip
    ctx = context(through)
    out = run(inputs, ctx)
    assert (out["event_count"], out["truncated"]) == (60, True)
    assert (out["lookup_attribute"], out["start_time"]) == ("AccessKeyId", "2026-01-01T00:00:00Z")
    assert len(trail.requests) == 2
    assert trail.requests[0]["LookupAttributes"][0]["AttributeKey"] == "AccessKeyId"
    assert any("newest 60" in note for note in ctx.notes)
    document = json.loads(s3.get_object(Bucket=BUCKET, Key=INPUTS["key"])["Body"].read())
    assert document["truncated"] is True

    boto("s3", aws).create_bucket(Bucket="plain-bucket")
    with pytest.raises(ActionError) as caught:
        run({**INPUTS, "bucket": "plain-bucket"}, context(through, "plain"))
    assert "s3://plain-bucket/run-1/cloudtrail.json" in caught.value.message
    assert caught.value.retryable is False
    assert "Contents" not in s3.list_objects_v2(Bucket="plain-bucket")


def test_simulate_touches_nothing_and_inputs_are_checked(aws: dict[str, Any]) -> None:
    s3 = _bucket(aws)
    found = default_registry.get("aws.cloudtrail.preserve_events")
    assert (found.idempotent, found.has_probe, found._simulate is not None) == (True, True, True)
    for field, spec in found.inputs.model_json_schema()["properties"].items():
        assert spec.get("description"), field
    out = found.call_simulate(found.parse(INPUTS), context(DEAD))
    assert out["simulated"] is True
    assert "Username jdoe" in out["would"]
    assert f"s3://{BUCKET}/run-1/cloudtrail.json" in out["would"]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    for bad in (
        {**INPUTS, "username": None},
        {**INPUTS, "access_key_id": "AKIAJDOEEXAMPLE00001"},
        {**INPUTS, "access_key_id": "not-a-key", "username": None},
        {**INPUTS, "start_time": "last week"},
        {**INPUTS, "retain_until": "forever"},
        {**INPUTS, "mode": "LEGAL_HOLD"},
        {**INPUTS, "max_events": 0},
        {**INPUTS, "region": "Mars"},
    ):
        with pytest.raises(ValidationError):
            found.parse(bad)
    with pytest.raises(ActionError, match="not before"):
        found.call_simulate(found.parse({**INPUTS, "start_time": "1h", "end_time": "2h"}),
                            context(DEAD))  # fmt: skip
