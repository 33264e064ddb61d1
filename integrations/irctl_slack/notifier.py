"""Run updates in Slack: one live message per run, details in its thread, approval requests
with buttons — delivered from a thread of its own, so a slow or absent Slack never slows a run.

Configured in irctl.yaml::

    integrations:
      slack:
        token: env:SLACK_BOT_TOKEN
        signing_secret: env:SLACK_SIGNING_SECRET   # for `irctl serve`
        channel: "#incidents"
        base_url: http://127.0.0.1:PORT/api/        # sandboxes and tests only

Every message this notifier posts is recorded in the run's journal as a
``notify.slack.posted`` event (channel, ts, what), so a resumed run — or
another process — keeps updating the same messages.  A delivery that keeps
failing after its retries is recorded as ``notify.failed``; after several
failures in a row the notifier pauses (recorded once) instead of piling up.

Approval buttons carry the value ``{"run", "step", "digest"}`` that
``irctl serve`` checks against the step's current request.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from irctl.actions import ActionError, NotifyContext, notifier

if TYPE_CHECKING:
    from irctl.journal.events import Event

RETRIES = 3  # attempts per message, with backoff 0.5 s, 1 s, 2 s
PAUSE_AFTER = 3  # consecutive failed deliveries before the notifier stops trying
ICONS = {
    "succeeded": "✅", "failed": "❌", "running": "▶️", "waiting": "⏸", "skipped": "⏭",
    "interrupted": "⏹", "retrying": "🔁", "pending": "·",
}  # fmt: skip

Job = Callable[[], None]


@notifier("slack")
def slack_notifier(ctx: NotifyContext) -> SlackNotifier | None:
    """A notifier when irctl.yaml configures a channel for Slack; None otherwise."""
    if not ctx.config.get("channel"):
        return None
    return SlackNotifier(ctx)


class SlackNotifier:
    def __init__(self, ctx: NotifyContext, *, backoff: float = 0.5) -> None:
        self.ctx = ctx
        self.channel = str(ctx.config["channel"])
        self.backoff = backoff
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.header: dict[str, str] | None = None  # channel id and ts of the run's message
        self.approval_messages: dict[str, dict[str, str]] = {}  # step -> channel, ts
        self.requests: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # step -> request
        self.decisions: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.failures = 0
        self.paused = False
        self._client: Any = None
        self.lock = threading.Lock()
        self.latest: dict[str, Any] = {}
        self.header_queued = False
        self.last_update = 0.0
        # Slack allows about one update a second per channel: coalesce to that.
        self.update_interval = float(ctx.config.get("update_interval", 1.0))
        for event in ctx.history:  # a resumed run: keep updating the messages already posted
            self._remember(event.type, event.data)
        self.thread = threading.Thread(target=self._work, name="irctl-slack", daemon=True)
        self.thread.start()

    # -- the engine's side: never blocks --------------------------------------------------

    def notify(self, event: Any, summary: dict[str, Any]) -> None:
        kind, data = event.type, event.data
        if kind.startswith("notify."):
            return
        with self.lock:
            self.latest = summary
            if not self.header_queued:  # one queued update carries the latest state
                self.header_queued = True
                self.jobs.put(self._refresh_header)
        if kind == "approval.requested":
            self.jobs.put(lambda: self._post_approval(data, summary))
        elif kind in ("approval.granted", "approval.denied", "approval.quorum",
                      "approval.cancelled", "approval.lapsed"):  # fmt: skip
            self.jobs.put(lambda: self._update_approval(kind, data))
        elif kind == "step.failed":
            self.jobs.put(lambda: self._reply(f"❌ *{_key(data)}* failed: {data.get('error')}"))
        elif kind in ("step.note", "run.note"):
            self.jobs.put(
                lambda: self._reply(f"📝 {_key(data) or data.get('by')}: {data.get('text')}")
            )
        elif kind == "run.review_item":
            self.jobs.put(lambda: self._reply(f"🚨 *REVIEW ITEM*: {data.get('text')}"))
        elif kind == "run.tampered":
            self.jobs.put(lambda: self._alarm(data))

    def close(self, timeout: float) -> None:
        """Deliver what is queued, for at most ``timeout`` seconds (none if Slack is down)."""
        self.jobs.put(None)
        if not self.paused:
            self.thread.join(timeout)

    # -- the notifier's thread --------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.paused:
                continue
            self._deliver(job)

    def _deliver(self, job: Job) -> None:
        error: Exception | None = None
        for attempt in range(RETRIES):
            try:
                job()
            except Exception as exc:  # any failure of Slack: retried, then recorded
                error = exc
                if isinstance(exc, ActionError) and not exc.retryable:
                    break  # a bad token or a missing channel will not mend itself
                time.sleep(self.backoff * 2**attempt)
                continue
            self.failures = 0
            return
        self.failures += 1
        if isinstance(error, ActionError) and not error.retryable:
            self.failures = PAUSE_AFTER  # nothing later would get through either
        self.ctx.record(
            "notify.failed",
            {"integration": "slack", "error": _brief(error), "attempts": attempt + 1},
        )
        if self.failures >= PAUSE_AFTER:
            self.ctx.record(
                "notify.paused",
                {"integration": "slack", "reason": f"{PAUSE_AFTER} deliveries failed in a row"},
            )
            self.paused = True  # after recording: close() stops waiting once this is set

    def _slack(self) -> Any:
        if self._client is None:
            from irctl_slack._client import client

            self._client = client(self.ctx.config, timeout=5.0)
        return self._client

    def _remember(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "approval.requested":
            self.requests[_key(data)] = (data, {"mode": self.ctx.mode})
            self.decisions[_key(data)] = []
            return
        if kind.startswith("approval.") and _key(data) in self.requests:
            self.decisions[_key(data)].append((kind, data))
            return
        if kind != "notify.slack.posted":
            return
        where = {"channel": str(data.get("channel")), "ts": str(data.get("ts"))}
        if data.get("what") == "header":
            self.header = where
        elif data.get("what") == "approval":
            self.approval_messages[str(data.get("step"))] = where

    def _posted(self, what: str, response: Any, **extra: Any) -> dict[str, str]:
        where = {"channel": str(response["channel"]), "ts": str(response["ts"])}
        self.ctx.record("notify.slack.posted", {"what": what, **where, **extra})
        return where

    # -- messages ---------------------------------------------------------------------------

    def _refresh_header(self) -> None:
        wait = self.last_update + self.update_interval - time.monotonic()
        if wait > 0 and self.header is not None and self.latest.get("status") == "running":
            time.sleep(wait)  # a finished, waiting or failed run is shown at once
        with self.lock:
            summary, self.header_queued = self.latest, False
        self.last_update = time.monotonic()
        self._update_header(summary)

    def _post_header(self, summary: dict[str, Any]) -> None:
        response = self._slack().chat_postMessage(
            channel=self.channel, text=_header_text(summary), blocks=_header_blocks(summary)
        )
        self.header = self._posted("header", response)

    def _update_header(self, summary: dict[str, Any]) -> None:
        if self.header is None:
            self._post_header(summary)
            return
        self._slack().chat_update(
            channel=self.header["channel"], ts=self.header["ts"],
            text=_header_text(summary), blocks=_header_blocks(summary),
        )  # fmt: skip

    def _reply(self, text: str) -> None:
        if self.header is None:
            return
        if self.ctx.mode != "live":  # every line of a drill says so, even out of context
            text = f"🧪 DRILL — {text}"
        self._slack().chat_postMessage(
            channel=self.header["channel"], thread_ts=self.header["ts"], text=text
        )

    def _alarm(self, data: dict[str, Any]) -> None:
        """A journal that does not verify: said in the channel itself, not only in the thread."""
        text = (
            f"🚨🚨 *RUN {self.ctx.run_id} STOPPED: ITS JOURNAL WAS TAMPERED WITH* (event "
            f"{data.get('first_bad')}): {data.get('problem')}. Nothing more was run; do not "
            f"resume it. Check with `irctl transcript verify {self.ctx.run_id}`."
        )
        if self.ctx.mode != "live":
            text = f"🧪 DRILL — {text}"
        channel = self.header["channel"] if self.header else self.channel
        thread = self.header["ts"] if self.header else None
        self._slack().chat_postMessage(
            channel=channel, thread_ts=thread, reply_broadcast=thread is not None, text=text
        )

    def _post_approval(self, data: dict[str, Any], summary: dict[str, Any]) -> None:
        key = _key(data)
        blocks = approval_blocks(self.ctx.run_id, data, summary, decisions=[])
        response = self._slack().chat_postMessage(
            channel=self.header["channel"] if self.header else self.channel,
            thread_ts=self.header["ts"] if self.header else None,
            text=f"Approval needed: {key} ({data.get('policy')})",
            blocks=blocks,
        )
        self.approval_messages[key] = self._posted("approval", response, step=key)
        self.decisions[key] = []
        self.requests[key] = (data, summary)

    def _update_approval(self, kind: str, data: dict[str, Any]) -> None:
        key = _key(data)
        where = self.approval_messages.get(key)
        request = self.requests.get(key)
        if where is None or request is None or data.get("digest") != request[0].get("digest"):
            return
        self.decisions.setdefault(key, []).append((kind, data))
        blocks = approval_blocks(
            self.ctx.run_id, request[0], request[1], decisions=self.decisions[key]
        )
        self._slack().chat_update(
            channel=where["channel"], ts=where["ts"], text=f"Approval: {key}", blocks=blocks
        )


def refresh_approval(config: Mapping[str, Any], events: Sequence[Event], key: str) -> bool:
    """Bring the Slack message of ``key``'s approval request up to date from the journal.

    For decisions recorded outside the run's own process (``irctl serve``, ``irctl
    approve`` while no run is attached): nobody else would update the message.
    False when there is no such message to update (never posted, or superseded).
    """
    from irctl.journal.state import fold

    request: dict[str, Any] | None = None
    where: dict[str, str] | None = None
    decisions: list[tuple[str, dict[str, Any]]] = []
    for event in events:
        kind, data = event.type, event.data
        if kind == "notify.slack.posted" and data.get("what") == "approval":
            if str(data.get("step")) == key:
                where = {"channel": str(data.get("channel")), "ts": str(data.get("ts"))}
        elif kind == "approval.requested" and _key(data) == key:
            request, decisions, where = data, [], None
        elif (
            kind.startswith("approval.")
            and request is not None
            and _key(data) == key
            and data.get("digest", request.get("digest")) == request.get("digest")
        ):
            decisions.append((kind, data))
    if request is None or where is None or not events:
        return False
    run_id = events[0].run
    summary = {"mode": fold(events).mode}
    from irctl_slack._client import client

    client(config, timeout=5.0).chat_update(
        channel=where["channel"], ts=where["ts"], text=f"Approval: {key}",
        blocks=approval_blocks(run_id, request, summary, decisions=decisions),
    )  # fmt: skip
    return True


def _key(data: dict[str, Any]) -> str:
    step = str(data.get("step", ""))
    return f"{step}[{data['item']}]" if data.get("item") is not None else step


def _brief(error: Exception | None) -> str:
    text = str(error) if error is not None else "unknown error"
    return text.splitlines()[0][:300] if text else type(error).__name__


def _header_text(summary: dict[str, Any]) -> str:
    drill = "[DRILL] " if summary.get("mode") != "live" else ""
    name = summary.get("title") or summary.get("runbook")
    return f"{drill}irctl run {summary.get('run_id')}: {name} — {summary.get('status')}"


def _header_blocks(summary: dict[str, Any]) -> list[dict[str, Any]]:
    mode = str(summary.get("mode"))
    drill = mode != "live"
    title = f"{'🧪 DRILL — ' if drill else '🚨 '}{summary.get('title') or summary.get('runbook')}"
    facts = (
        f"*Run* `{summary.get('run_id')}` · *runbook* `{summary.get('runbook')}` · "
        f"*incident* {summary.get('incident') or '—'} · *started by* {summary.get('initiator')} · "
        f"*mode* {mode.upper() if drill else mode} · *status* *{summary.get('status')}*"
    )
    lines = []
    for step in summary.get("steps", [])[:40]:
        key = str(step.get("step"))
        if "[" in key:
            continue
        icon = ICONS.get(str(step.get("status")), "·")
        extra = ""
        if step.get("status") == "waiting":
            extra = f" — waiting for {step.get('waiting_for')}"
        elif step.get("status") == "failed" and step.get("error"):
            extra = f" — {str(step.get('error'))[:120]}"
        lines.append(f"{icon} `{key}` {step.get('status')}{extra}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
    ]
    if drill:
        blocks.append({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "*This is a drill.* Nothing real is touched."}],
        })  # fmt: skip
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    return blocks


def approval_blocks(
    run_id: str,
    request: dict[str, Any],
    summary: dict[str, Any],
    *,
    decisions: list[tuple[str, dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The approval request as Slack shows it: what will run, its digest, who may approve."""
    key = _key(request)
    rules = request.get("rules") or {}
    inputs = json.dumps(request.get("inputs"), indent=2, ensure_ascii=False)
    if len(inputs) > 2500:
        inputs = inputs[:2500] + "\n…"
    drill = "🧪 DRILL — " if summary.get("mode") != "live" else ""
    text = (
        f"{drill}*Approval needed* for `{key}` (`{request.get('action')}`) in run `{run_id}`, "
        f"policy *{request.get('policy')}*: {rules.get('quorum', 1)} approver(s); "
        f"may approve: {', '.join(request.get('eligible') or []) or 'nobody'}; "
        f"expires {request.get('expires_at') or 'never'}"
    )
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{inputs}```"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"digest `{request.get('digest')}`"}],
        },
    ]
    if request.get("changed"):
        changed = "; ".join(
            f"{where}: {old!r} → {new!r}" for where, (old, new) in request["changed"].items()
        )
        blocks.append({
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"⚠️ *Changed since the last request:* {changed}"},
        })  # fmt: skip
    done = [d for kind, d in decisions if kind in ("approval.granted", "approval.denied")]
    if done:
        lines = [
            f"{'✅' if d.get('decision') == 'approve' else '❌'} {d.get('operator')}"
            f" ({'signed key' if d.get('assurance') == 'key' else 'Slack'})"
            + (f": {d.get('reason')}" if d.get("reason") else "")
            for d in done
        ]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    closed = next((kind for kind, _ in decisions if kind in (
        "approval.quorum", "approval.cancelled", "approval.lapsed")), None)  # fmt: skip
    if closed is not None:
        word = {"approval.quorum": "✅ Approved", "approval.cancelled": "❌ Denied",
                "approval.lapsed": "⌛ Expired"}[closed]  # fmt: skip
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{word}*"}})
        return blocks
    value = json.dumps(
        {"run": run_id, "step": key, "digest": request.get("digest")}, separators=(",", ":")
    )
    if rules.get("min_assurance", "key") == "key":
        blocks.append({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": (
                "This policy needs approvals signed with each approver's own key: "
                f"`irctl approve {run_id} {key} --as YOU`"
            )}],
        })  # fmt: skip
        return blocks
    blocks.append({
        "type": "input",
        "block_id": "reason",
        "optional": True,
        "label": {"type": "plain_text", "text": "Reason (needed to deny)"},
        "element": {"type": "plain_text_input", "action_id": "reason"},
    })  # fmt: skip
    blocks.append({
        "type": "actions",
        "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "deny", "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Deny"}},
        ],
    })  # fmt: skip
    return blocks
