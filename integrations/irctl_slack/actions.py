"""The ``slack.*`` actions: post, war-room channels, invitations, topics.

::

    - id: war-room
      action: slack.create_channel
      with: {name: "inc-{{ run.incident }}"}
    - id: gather
      action: slack.invite
      with: {channel: "{{ steps['war-room'].outputs.channel_id }}", roles: [ciso, oncall]}
    - id: announce
      action: slack.post
      with: {channel: "{{ steps['war-room'].outputs.channel_id }}", text: "Incident declared"}

Settings come from ``integrations.slack`` in ``irctl.yaml`` (see
:mod:`irctl_slack._client`): ``token`` (a secret reference), ``channel`` (the
default channel), ``base_url``, ``timeout``, ``rate_limit_retries``,
``max_retry_wait``.

The ``_operators`` contract
---------------------------

``slack.invite`` turns operator names and roles into Slack ids.  The engine
adds the workspace's operators to the integration config it passes in
(``ActionContext.config``), under the key ``_operators``::

    {"_operators": {"alice": {"roles": ["ciso"], "slack": "U0ALICE"},
                    "bob":   {"roles": ["oncall"], "slack": None}}}

a mapping from operator name to ``roles`` (list of str) and ``slack`` (the
member id, or None).  The key starts with ``_`` so it cannot clash with a
setting a user writes; nothing else is read from it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError
from irctl_slack._client import (
    CHANNEL_ID,
    SlackError,
    call,
    channel_id,
    client,
    find_channel,
    setting,
)

if TYPE_CHECKING:
    from slack_sdk import WebClient

NAME_LIMIT = 80
TOPIC_LIMIT = 250
TEXT_LIMIT = 40_000
BLOCK_LIMIT = 50
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ToChannel(_Inputs):
    channel: str | None = Field(
        default=None, description="channel id or #name; default: integrations.slack.channel"
    )

    @field_validator("channel")
    @classmethod
    def _channel_ref(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or value == "#":
            raise ValueError("a channel is an id (C0123ABCD) or #name")
        return value


def _web(ctx: ActionContext) -> WebClient:
    if ctx.cancelled.is_set():
        raise ActionError("cancelled", retryable=False)
    return client(ctx.config, timeout=ctx.remaining(), cancelled=ctx.cancelled)


def _default_channel(ctx: ActionContext, given: str | None, action_name: str) -> str:
    if given:
        return given
    configured = setting(ctx.config, "channel", str, "")
    if not configured:
        raise ActionError(
            f"{action_name}: no channel: give 'channel' or set integrations.slack.channel",
            retryable=False,
        )
    return configured


def _shown(ref: str) -> str:
    return ref if ref.startswith("#") or CHANNEL_ID.match(ref) else f"#{ref}"


def _joined(web: WebClient, channel: str, shown: str) -> None:
    """Put the bot in a public channel (invite and setTopic need it there)."""
    call(
        lambda: web.conversations_join(channel=channel),
        "conversations.join",
        detail=f"channel {shown}",
        base_url=web.base_url,
    )


# --- slack.post ---------------------------------------------------------------------------------


class Post(_ToChannel):
    """A message to a channel, optionally in a thread."""

    text: str = Field(
        min_length=1,
        max_length=TEXT_LIMIT,
        description="the message (mrkdwn); with blocks, the notification and fallback text",
    )
    blocks: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=BLOCK_LIMIT,
        description="Block Kit blocks (each an object with a 'type')",
    )
    thread_ts: str | None = Field(
        default=None,
        pattern=r"^\d+\.\d+$",
        description="ts of the message to reply to, in its thread",
    )

    @field_validator("blocks")
    @classmethod
    def _typed_blocks(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is not None:
            untyped = [i for i, block in enumerate(value) if not isinstance(block.get("type"), str)]
            if untyped:
                raise ValueError(f"every block needs a 'type' (blocks {untyped} have none)")
        return value


@action("slack.post")
def post(inputs: Post, ctx: ActionContext) -> dict[str, Any]:
    """Post a message (text or Block Kit) to a Slack channel."""
    channel = _default_channel(ctx, inputs.channel, "slack.post")
    web = _web(ctx)
    sent = call(
        lambda: web.chat_postMessage(
            channel=channel, text=inputs.text, blocks=inputs.blocks, thread_ts=inputs.thread_ts
        ),
        "chat.postMessage",
        detail=f"channel {_shown(channel)}",
        base_url=web.base_url,
    )
    return {"channel": str(sent["channel"]), "ts": str(sent["ts"])}


@post.simulate
def _simulate_post(inputs: Post, ctx: ActionContext) -> dict[str, Any]:
    channel = inputs.channel or str(ctx.config.get("channel") or "(integrations.slack.channel)")
    where = f" in the thread {inputs.thread_ts}" if inputs.thread_ts else ""
    blocks = f" with {len(inputs.blocks)} blocks" if inputs.blocks else ""
    text = inputs.text if len(inputs.text) <= 120 else inputs.text[:119] + "…"
    return {
        "simulated": True,
        "would": f"post to {_shown(channel)}{where}{blocks}: {text}",
        "channel": channel,
        "ts": "0000000000.000000",
    }


# --- slack.create_channel -----------------------------------------------------------------------


def channel_name(name: str) -> str:
    """``name`` as Slack accepts it: ASCII lowercase, spaces to ``-``, only a-z 0-9 - _, ≤ 80."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    dashed = re.sub(r"\s+", "-", ascii_name.strip().lower().removeprefix("#"))
    return re.sub(r"[^a-z0-9_-]", "", dashed)[:NAME_LIMIT]


class CreateChannel(_Inputs):
    """An incident war room: created, or reused when a channel of that name exists."""

    name: str = Field(
        min_length=1,
        description="channel name, e.g. inc-{{ run.incident }}; made Slack-safe (lowercase, "
        "spaces to -, only a-z 0-9 - _, at most 80 characters)",
    )
    private: bool = Field(default=False, description="create a private channel")

    @field_validator("name")
    @classmethod
    def _usable(cls, value: str) -> str:
        if not re.search(r"[a-z0-9]", channel_name(value)):
            raise ValueError(
                f"{value!r} has no letter or digit Slack accepts in a channel name (a-z, 0-9)"
            )
        return value

    @property
    def slack_name(self) -> str:
        return channel_name(self.name)


def _existing(web: WebClient, name: str) -> dict[str, Any]:
    found = find_channel(web, name)
    if found is None:
        raise SlackError(
            f"a Slack channel named #{name} exists but the bot cannot see it (a private "
            "channel?): invite the bot to it or choose another name",
            method="conversations.create",
            error="name_taken",
            retryable=False,
        )
    if found.get("is_archived"):
        raise SlackError(
            f"the Slack channel #{name} exists but is archived: unarchive it in Slack "
            "or choose another name",
            method="conversations.create",
            error="is_archived",
            retryable=False,
        )
    return found


@action("slack.create_channel", idempotent=True)
def create_channel(inputs: CreateChannel, ctx: ActionContext) -> dict[str, Any]:
    """Create an incident channel, or reuse the one with that name."""
    name = inputs.slack_name
    if name != inputs.name:
        ctx.note(f"slack.create_channel: {inputs.name!r} becomes #{name} (Slack's name rules)")
    web = _web(ctx)
    try:
        made = call(
            lambda: web.conversations_create(name=name, is_private=inputs.private),
            "conversations.create",
            detail=f"channel #{name}",
            base_url=web.base_url,
        )
    except SlackError as exc:
        if exc.error != "name_taken":
            raise
        found = _existing(web, name)
        if bool(found.get("is_private")) != inputs.private:
            kind = "private" if found.get("is_private") else "public"
            ctx.note(f"slack.create_channel: reusing #{name}, which is {kind}")
        if not found.get("is_member") and not found.get("is_private"):
            _joined(web, str(found["id"]), f"#{name}")
        ctx.note(f"slack.create_channel: #{name} exists ({found['id']}); reusing it")
        return {"channel_id": str(found["id"]), "name": name, "created": False}
    return {"channel_id": str(made["channel"]["id"]), "name": name, "created": True}


@create_channel.simulate
def _simulate_create(inputs: CreateChannel, ctx: ActionContext) -> dict[str, Any]:
    name = inputs.slack_name
    kind = "private" if inputs.private else "public"
    renamed = f" (from {inputs.name!r})" if name != inputs.name else ""
    return {
        "simulated": True,
        "would": f"create the {kind} channel #{name}{renamed}, or reuse it if it exists",
        "channel_id": "C0SIMULATED",
        "name": name,
        "created": True,
    }


@create_channel.probe
def _probe_create(inputs: CreateChannel, ctx: ActionContext) -> Probe:
    name = inputs.slack_name
    web = _web(ctx)
    found = find_channel(web, name)
    if found is None:
        return Probe.not_done(f"no Slack channel #{name}")
    me = call(web.auth_test, "auth.test", base_url=web.base_url)
    created = found.get("creator") == me.get("user_id")
    return Probe.done({"channel_id": str(found["id"]), "name": name, "created": created})


# --- slack.invite -------------------------------------------------------------------------------


class Invite(_ToChannel):
    """People to bring into a channel: Slack ids, operators, or everyone with a role."""

    users: list[str] = Field(default_factory=list, description="Slack member ids (U0123ABCD)")
    operators: list[str] = Field(
        default_factory=list, description="operator names from irctl.yaml (their slack id)"
    )
    roles: list[str] = Field(
        default_factory=list, description="roles from irctl.yaml: every operator holding one"
    )

    @field_validator("users")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        bad = [u for u in value if not USER_ID.match(u)]
        if bad:
            raise ValueError(f"not Slack member ids (U0123ABCD): {bad}")
        return value

    @model_validator(mode="after")
    def _someone(self) -> Invite:
        if not (self.users or self.operators or self.roles):
            raise ValueError("name someone to invite: users, operators or roles")
        return self


def _operators(ctx: ActionContext) -> Mapping[str, Mapping[str, Any]]:
    known = ctx.config.get("_operators")
    if not isinstance(known, Mapping):
        raise ActionError(
            "slack.invite: operators and roles need the workspace's operators, which the engine "
            "did not pass (integrations.slack._operators); name Slack ids in 'users' instead",
            retryable=False,
        )
    return known


def _people(inputs: Invite, ctx: ActionContext) -> dict[str, str]:
    """Slack id -> who asked for it (for messages), in order, without duplicates."""
    people: dict[str, str] = {user: f"user {user}" for user in inputs.users}
    if not (inputs.operators or inputs.roles):
        return people
    known = _operators(ctx)
    wanted: dict[str, str] = {}
    unknown = [name for name in inputs.operators if name not in known]
    if unknown:
        raise ActionError(
            f"slack.invite: unknown operators {unknown} (irctl.yaml has {sorted(known)})",
            retryable=False,
        )
    for name in inputs.operators:
        wanted.setdefault(name, f"operator {name}")
    for role in inputs.roles:
        holders = [n for n, op in known.items() if role in (op.get("roles") or [])]
        if not holders:
            raise ActionError(f"slack.invite: no operator has the role {role!r}", retryable=False)
        for name in holders:
            wanted.setdefault(name, f"operator {name} (role {role})")
    missing = [name for name in wanted if not known[name].get("slack")]
    if missing:
        raise ActionError(
            f"slack.invite: operators without a Slack id: {missing}; "
            f"set operators.<name>.slack in irctl.yaml",
            retryable=False,
        )
    for name, why in wanted.items():
        people.setdefault(str(known[name]["slack"]), why)
    return people


def _invite_one(web: WebClient, channel: str, user: str, *, detail: str) -> str:
    """``invited``, or the Slack error this action handles; other errors are raised."""
    try:
        call(
            lambda: web.conversations_invite(channel=channel, users=user),
            "conversations.invite",
            detail=detail,
            base_url=web.base_url,
        )
    except SlackError as exc:
        if exc.error in {"not_in_channel", "already_in_channel", "user_not_found"}:
            return exc.error
        raise
    return "invited"


@action("slack.invite", idempotent=True)
def invite(inputs: Invite, ctx: ActionContext) -> dict[str, Any]:
    """Invite people to a channel by Slack id, operator or role (already there is fine)."""
    people = _people(inputs, ctx)
    ref = _default_channel(ctx, inputs.channel, "slack.invite")
    web = _web(ctx)
    channel = channel_id(web, ref)
    shown = _shown(ref)
    invited: list[str] = []
    already: list[str] = []
    unknown: list[str] = []
    for user, why in people.items():
        outcome = _invite_one(web, channel, user, detail=f"{why} to {shown}")
        if outcome == "not_in_channel":  # the bot must be in the channel to invite
            _joined(web, channel, shown)
            outcome = _invite_one(web, channel, user, detail=f"{why} to {shown}")
        if outcome == "invited":
            invited.append(user)
        elif outcome == "already_in_channel":
            already.append(user)
        elif outcome == "user_not_found":
            unknown.append(f"{user} ({why})")
    if unknown:
        done = f"; invited {invited}" if invited else ""
        raise ActionError(
            f"slack.invite: Slack does not know {', '.join(unknown)}{done}: "
            "check the slack ids in irctl.yaml",
            retryable=False,
        )
    return {"channel": channel, "invited": invited, "already": already}


@invite.simulate
def _simulate_invite(inputs: Invite, ctx: ActionContext) -> dict[str, Any]:
    people = _people(inputs, ctx)
    channel = inputs.channel or str(ctx.config.get("channel") or "(integrations.slack.channel)")
    return {
        "simulated": True,
        "would": f"invite {', '.join(people.values())} to {_shown(channel)}",
        "channel": channel,
        "invited": list(people),
        "already": [],
    }


# --- slack.update_topic -------------------------------------------------------------------------


class UpdateTopic(_ToChannel):
    """A channel's topic (the line under its name): status, severity, incident commander."""

    topic: str = Field(max_length=TOPIC_LIMIT, description="the new topic (at most 250 characters)")


@action("slack.update_topic", idempotent=True)
def update_topic(inputs: UpdateTopic, ctx: ActionContext) -> dict[str, Any]:
    """Set a channel's topic."""
    ref = _default_channel(ctx, inputs.channel, "slack.update_topic")
    web = _web(ctx)
    channel = channel_id(web, ref)
    shown = _shown(ref)

    def set_topic() -> None:
        call(
            lambda: web.conversations_setTopic(channel=channel, topic=inputs.topic),
            "conversations.setTopic",
            detail=f"channel {shown}",
            base_url=web.base_url,
        )

    try:
        set_topic()
    except SlackError as exc:
        if exc.error != "not_in_channel":
            raise
        _joined(web, channel, shown)  # the bot must be in the channel to set its topic
        set_topic()
    return {"channel": channel, "topic": inputs.topic}


@update_topic.simulate
def _simulate_topic(inputs: UpdateTopic, ctx: ActionContext) -> dict[str, Any]:
    channel = inputs.channel or str(ctx.config.get("channel") or "(integrations.slack.channel)")
    return {
        "simulated": True,
        "would": f"set the topic of {_shown(channel)} to {inputs.topic!r}",
        "channel": channel,
        "topic": inputs.topic,
    }


@update_topic.probe
def _probe_topic(inputs: UpdateTopic, ctx: ActionContext) -> Probe:
    ref = _default_channel(ctx, inputs.channel, "slack.update_topic")
    web = _web(ctx)
    channel = channel_id(web, ref)
    info = call(
        lambda: web.conversations_info(channel=channel),
        "conversations.info",
        detail=f"channel {_shown(ref)}",
        base_url=web.base_url,
    )
    current = ((info.get("channel") or {}).get("topic") or {}).get("value")
    if current == inputs.topic:
        return Probe.done({"channel": channel, "topic": inputs.topic})
    return Probe.not_done(f"the topic of {_shown(ref)} is {current!r}")
