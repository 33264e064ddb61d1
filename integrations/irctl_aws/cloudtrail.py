"""``aws.cloudtrail.preserve_events``: a suspect's CloudTrail events, kept in WORM storage.

::

    - id: preserve-trail
      action: aws.cloudtrail.preserve_events
      timeout: 15m                     # 2 lookups a second: 10,000 events take ~2 minutes
      with:
        username: "{{ params.suspect_user }}"     # or access_key_id: AKIA...
        start_time: 30d                            # 30 days before the step ran, or a UTC time
        bucket: exchange-ir-evidence               # created with Object Lock enabled
        key: "{{ run.id }}/cloudtrail-{{ params.suspect_user }}.json"
        retain_until: 2555d

LookupEvents returns the management events of the last 90 days in one region (IAM's and
STS's are recorded in us-east-1: look there too), newest first, 50 a call, and answers two
calls a second per account and region; one lookup attribute a call.  The events are
written as one canonical JSON document (sorted keys, UTF-8): the query, the time of the
lookup, the count, whether ``max_events`` cut the list short, and each event with the
fields LookupEvents gave, its ``CloudTrailEvent`` the JSON string exactly as CloudTrail
returned it.  The document goes to S3 under Object Lock through the same code as
``aws.s3.put_evidence`` (:func:`irctl_aws.evidence.store`), with its SHA-256.

The window is fixed and journaled the first time the step runs (``start_time: 30d`` means
30 days before then), and the document's SHA-256 just before it is written: a retry or a
re-run after a crash that finds that object returns it rather than writing a fresher
lookup beside it (CloudTrail delivers events up to about 15 minutes late, so a second
lookup may differ), and the probe looks for exactly that object.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.canonical import canonical_json, sha256_hex
from irctl.errors import ActionError
from irctl_aws._client import action_client, call
from irctl_aws.evidence import RELATIVE_SLACK, Evidence, parse_moment, store, stored
from irctl_aws.services import Inputs, Outputs, simulated

#: Seconds between two LookupEvents calls: CloudTrail answers two a second.
PAGE_INTERVAL = 0.5
#: How far back LookupEvents reaches.
HISTORY = timedelta(days=90)
FORMAT = "irctl.cloudtrail-events/1"


class PreserveEvents(Inputs):
    """Look up a principal's CloudTrail events and keep them under Object Lock."""

    username: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="the events of this user name (an IAM user, or a role session's name)",
    )  # fmt: skip
    access_key_id: str | None = Field(
        default=None, pattern=r"^[A-Z0-9]{16,128}$",
        description="or the events made with this access key (AKIA..., ASIA...)",
    )  # fmt: skip
    start_time: str = Field(
        description="from this UTC time (2026-12-01, 2026-12-01T06:00:00Z), or this long "
        "before the step first ran (30d, 12h); LookupEvents reaches back 90 days"
    )
    end_time: str | None = Field(
        default=None,
        description="until this UTC time, or this long before the step first ran; default: "
        "when the step first ran",
    )
    region: str | None = Field(
        default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$",
        description="the region whose events to look up; default: integrations.aws.region "
        "(IAM and STS events are recorded in us-east-1)",
    )  # fmt: skip
    max_events: int = Field(
        default=10_000, ge=1, le=100_000,
        description="at most this many events, the newest (the document says when it is cut)",
    )  # fmt: skip
    bucket: str = Field(min_length=3, description="a bucket with Object Lock enabled")
    key: str = Field(min_length=1, description="the object key of the document")
    retain_until: str = Field(
        description="keep until this date or UTC time (ISO 8601), or for this long (2555d)"
    )
    mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        default="COMPLIANCE",
        description="COMPLIANCE: nobody can delete it early; GOVERNANCE: privileged users can",
    )

    @field_validator("start_time", "end_time", "retain_until")
    @classmethod
    def _moment(cls, value: str | None) -> str | None:
        if value is not None:
            parse_moment(value)
        return value

    @model_validator(mode="after")
    def _one_principal(self) -> PreserveEvents:
        if (self.username is None) == (self.access_key_id is None):
            raise ValueError("give exactly one of username or access_key_id")
        return self

    def attribute(self) -> dict[str, str]:
        if self.username is not None:
            return {"AttributeKey": "Username", "AttributeValue": self.username}
        return {"AttributeKey": "AccessKeyId", "AttributeValue": str(self.access_key_id)}

    def who(self) -> str:
        found = self.attribute()
        return f"{found['AttributeKey']} {found['AttributeValue']}"

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        def at(text: str) -> datetime:
            parsed = parse_moment(text)
            moment = now - parsed if isinstance(parsed, timedelta) else parsed
            return moment.replace(microsecond=0)

        start = at(self.start_time)
        end = at(self.end_time) if self.end_time is not None else now.replace(microsecond=0)
        if start >= end:
            raise ActionError(
                f"start_time {_iso(start)} is not before end_time {_iso(end)}", retryable=False
            )
        return start, end

    def until(self, now: datetime) -> tuple[datetime, datetime]:
        """The retain-until date, and the least an object already written must have."""
        parsed = parse_moment(self.retain_until)
        if isinstance(parsed, timedelta):
            until = (now + parsed).replace(microsecond=0)
            return until, until - RELATIVE_SLACK
        return parsed.replace(microsecond=0), parsed.replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(inputs: PreserveEvents, ctx: ActionContext) -> tuple[datetime, datetime]:
    """The window journaled by an earlier attempt of the step, else fixed and journaled now."""
    recorded = ctx.facts.get("window")
    if isinstance(recorded, dict):
        return (
            datetime.fromisoformat(str(recorded["start"]).replace("Z", "+00:00")),
            datetime.fromisoformat(str(recorded["end"]).replace("Z", "+00:00")),
        )
    now = datetime.now(UTC)
    start, end = inputs.window(now)
    if start < now - HISTORY:
        ctx.note(f"LookupEvents reaches back 90 days: nothing before {_iso(now - HISTORY)}")
    ctx.record(window={"start": _iso(start), "end": _iso(end)})
    return start, end


def _event(found: dict[str, Any]) -> dict[str, Any]:
    """An event as LookupEvents gave it; its time as ISO 8601, CloudTrailEvent untouched."""
    event = {key: value for key, value in found.items() if value is not None}
    moment = event.get("EventTime")
    if isinstance(moment, datetime):
        event["EventTime"] = moment.astimezone(UTC).isoformat()
    return event


def _lookup(
    ct: Any, ctx: ActionContext, inputs: PreserveEvents, start: datetime, end: datetime
) -> tuple[list[dict[str, Any]], bool]:
    """The events, newest first, at most ``max_events``; and whether there were more."""
    options: dict[str, Any] = {
        "LookupAttributes": [inputs.attribute()], "StartTime": start, "EndTime": end,
        "MaxResults": 50,
    }  # fmt: skip
    events: list[dict[str, Any]] = []
    while True:
        page = call(
            partial(ct.lookup_events, **options),
            f"CloudTrail LookupEvents for {inputs.who()} from {_iso(start)} to {_iso(end)}",
        )
        events.extend(_event(event) for event in page.get("Events", []))
        more = page.get("NextToken")
        if len(events) >= inputs.max_events:
            return events[: inputs.max_events], bool(more) or len(events) > inputs.max_events
        if not more:
            return events, False
        options["NextToken"] = more
        ctx.sleep(PAGE_INTERVAL)


def _outputs(inputs: PreserveEvents, facts: dict[str, Any], written: Outputs) -> Outputs:
    window = facts.get("window") or {}
    attribute = inputs.attribute()
    return {
        **written,
        "event_count": facts.get("event_count"),
        "truncated": facts.get("truncated"),
        "lookup_attribute": attribute["AttributeKey"],
        "lookup_value": attribute["AttributeValue"],
        "start_time": window.get("start"),
        "end_time": window.get("end"),
    }


def _found(inputs: PreserveEvents, ctx: ActionContext) -> tuple[Outputs | None, str]:
    """The document an earlier attempt of this step wrote, if it is there under lock."""
    sha, size = ctx.facts.get("sha256"), ctx.facts.get("size")
    if not isinstance(sha, str) or not isinstance(size, int):
        return None, "no attempt of this step got as far as writing the events"
    return stored(ctx, inputs.bucket, inputs.key, sha, size, inputs.mode)


@action("aws.cloudtrail.preserve_events", idempotent=True)
def preserve_events(inputs: PreserveEvents, ctx: ActionContext) -> Outputs:
    """Look up a principal's CloudTrail events and keep them in S3 under Object Lock."""
    earlier, _ = _found(inputs, ctx)
    if earlier is not None:
        ctx.note(f"s3://{inputs.bucket}/{inputs.key} holds the events this step looked up")
        return _outputs(inputs, ctx.facts, {**earlier, "changed": False})
    start, end = _window(inputs, ctx)
    ct = action_client("cloudtrail", ctx, region=inputs.region)
    events, truncated = _lookup(ct, ctx, inputs, start, end)
    if truncated:
        ctx.note(f"more than {inputs.max_events} events: the newest {inputs.max_events} are kept")
    document = {
        "format": FORMAT,
        "run": ctx.run_id,
        "step": ctx.step_id,
        "query": {
            "lookup_attributes": [inputs.attribute()], "start_time": _iso(start),
            "end_time": _iso(end), "region": ct.meta.region_name, "max_events": inputs.max_events,
        },
        "retrieved_at": _iso(datetime.now(UTC)),
        "event_count": len(events),
        "truncated": truncated,
        "events": events,
    }  # fmt: skip
    data = (canonical_json(document) + "\n").encode("utf-8")
    until, enough = inputs.until(datetime.now(UTC))
    ctx.record(sha256=sha256_hex(data), size=len(data), event_count=len(events),
               truncated=truncated)  # fmt: skip
    written = store(ctx, Evidence(
        bucket=inputs.bucket, key=inputs.key, data=data, mode=inputs.mode, until=until,
        enough=enough, content_type="application/json",
    ))  # fmt: skip
    return _outputs(inputs, ctx.facts, written)


@preserve_events.simulate
def _preserve_events_simulate(inputs: PreserveEvents, ctx: ActionContext) -> Outputs:
    now = datetime.now(UTC)
    start, end = inputs.window(now)
    until, _ = inputs.until(now)
    attribute = inputs.attribute()
    return simulated(
        f"look up the CloudTrail events of {inputs.who()} from {_iso(start)} to {_iso(end)} "
        f"and write them to s3://{inputs.bucket}/{inputs.key} with {inputs.mode} retention "
        f"until {_iso(until)}",
        bucket=inputs.bucket, key=inputs.key, version_id=None, mode=inputs.mode,
        retain_until=_iso(until), sha256=None, size=None, changed=None, event_count=None,
        truncated=None, lookup_attribute=attribute["AttributeKey"],
        lookup_value=attribute["AttributeValue"], start_time=_iso(start), end_time=_iso(end),
    )  # fmt: skip


@preserve_events.probe
def _preserve_events_probe(inputs: PreserveEvents, ctx: ActionContext) -> Probe:
    found, why = _found(inputs, ctx)
    return Probe.not_done(why) if found is None else Probe.done(_outputs(inputs, ctx.facts, found))
