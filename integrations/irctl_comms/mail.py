"""E-mail over SMTP: ``email.send``.

::

    - id: tell-the-regulator
      action: email.send
      with:
        to: ["cyber.reporting@regulator.example", "counsel@exchange.example"]
        subject: "{{ run.incident }}: notice of a cybersecurity event"
        body: |
          On {{ run.started_at }} we detected unauthorised withdrawals from a hot wallet ...
        reply_to: "security@exchange.example"

The settings are ``integrations.email`` in irctl.yaml::

    integrations:
      email:
        host: smtp.exchange.example
        port: 587                    # the default (submission)
        starttls: true               # the default: the session is encrypted before AUTH
        username: env:SMTP_USERNAME  # a secret reference, or the name as it is
        password: env:SMTP_PASSWORD  # a secret reference, never the password; never recorded
        from: "Exchange Security <security@exchange.example>"   # default sender
        ca_file: certs/smtp-ca.pem   # optional: the CA of a server with a private certificate
        timeout: 10                  # seconds per SMTP command (never more than the step has)

The session always upgrades with STARTTLS and checks the server's certificate and name; a
server that does not offer STARTTLS is refused before anything is sent.  ``starttls: false``
(plaintext) must be written explicitly and is accepted for a loopback host only (a relay on
this machine, a test server): the message and the password would otherwise cross a network
in the clear.  ``username`` and ``password`` together turn on AUTH; neither: no AUTH.

Sending is not idempotent and SMTP cannot be asked afterwards whether a message went out, so
the action records the message's ``Message-ID`` (derived from the run, the step and its
inputs, the same for every attempt) before it connects.  After a crash the probe says: no
Message-ID recorded, nothing was sent; one recorded, a person checks a mailbox for it and
marks the step.  A retry (the runbook's ``retry:``) sends again with the same Message-ID, so
a duplicate is recognisable (and folded together by many mail systems).
"""

from __future__ import annotations

import email.utils
import re
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irctl.actions import ActionContext, Probe, action, preflight
from irctl.canonical import canonical_json, sha256_hex
from irctl.errors import ActionError, ActionTimeout
from irctl_comms._http import (
    configured_secret,
    is_loopback,
    is_reference,
    masked,
    reference_secret,
    setting,
)

SECTION = "email"
DEFAULT_PORT = 587
DEFAULT_TIMEOUT = 10.0
MAX_RECIPIENTS = 100
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")

Outputs = dict[str, Any]


def parse_address(value: str) -> tuple[str, str]:
    """``(display name, address)`` of ``Name <a@b>`` or ``a@b``; ValueError when it is not one."""
    if "\r" in value or "\n" in value:
        raise ValueError("an address is one line")
    name, address = email.utils.parseaddr(value)
    if not _ADDRESS.match(address) or ".." in address or address.endswith("."):
        raise ValueError(f"{value!r} is not an e-mail address (name@domain, ASCII)")
    return name, address


class Send(BaseModel):
    """One text message to a list of recipients."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    from_: str | None = Field(
        default=None,
        alias="from",
        description="the sender, 'Name <address>' or an address; default: integrations.email.from",
    )
    to: list[str] = Field(
        min_length=1, max_length=MAX_RECIPIENTS, description="the recipients' addresses"
    )
    subject: str = Field(min_length=1, max_length=900, description="one line")
    body: str = Field(min_length=1, max_length=1_000_000, description="the message, plain text")
    reply_to: str | None = Field(default=None, description="where replies go")

    @field_validator("from_", "reply_to")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_address(item)
        if len({parse_address(item)[1].lower() for item in value}) != len(value):
            raise ValueError("a recipient is listed twice")
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("the subject is one line")
        return value


# --- settings -----------------------------------------------------------------------------------


class _Server:
    """Where and how to connect, read from ``integrations.email``."""

    def __init__(self, config: dict[str, Any]) -> None:
        host = setting(config, SECTION, "host", str, "")
        if not host:
            raise ActionError(
                "email: integrations.email.host is not set in irctl.yaml (the SMTP server)",
                retryable=False,
            )
        port = setting(config, SECTION, "port", int, DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ActionError("integrations.email.port must be 1 to 65535", retryable=False)
        starttls = setting(config, SECTION, "starttls", bool, True)
        if not starttls and not is_loopback(host):
            raise ActionError(
                f"integrations.email.starttls: false would send the message and the password "
                f"to {host} in the clear; irctl allows plaintext SMTP only to a loopback address "
                "(a relay on this machine, a test server): remove the setting to use STARTTLS",
                retryable=False,
            )
        self.host, self.port, self.starttls = host, port, starttls
        self.timeout = setting(config, SECTION, "timeout", float, DEFAULT_TIMEOUT)
        if self.timeout <= 0:
            raise ActionError("integrations.email.timeout must be positive", retryable=False)
        ca_file = setting(config, SECTION, "ca_file", str, "")
        workspace = config.get("_workspace")
        path = Path(ca_file).expanduser() if ca_file else None
        if path is not None and not path.is_absolute() and isinstance(workspace, str):
            path = Path(workspace) / path
        self.ca_file = path

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def tls(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ActionError(
                f"email: cannot read integrations.email.ca_file ({self.ca_file}): {exc}",
                retryable=False,
            ) from exc


def _credentials(config: dict[str, Any]) -> tuple[str, str] | None:
    """``(username, password)`` for AUTH, or None when neither is set."""
    user, password = config.get("username"), config.get("password")
    if user in (None, "") and password in (None, ""):
        return None
    if user in (None, "") or password in (None, ""):
        raise ActionError(
            "email: set both integrations.email.username and integrations.email.password "
            "for AUTH, or neither",
            retryable=False,
        )
    if not isinstance(user, str):
        raise ActionError("integrations.email.username must be a string", retryable=False)
    if is_reference(user):
        user = reference_secret(config, "integrations.email.username", user, "email")
    secret = configured_secret(config, SECTION, "password", "email", example="env:SMTP_PASSWORD")
    return user, secret


def _sender(inputs: Send, config: dict[str, Any]) -> str:
    sender = inputs.from_ or config.get("from")
    if not isinstance(sender, str) or not sender:
        raise ActionError(
            "email.send: no sender: give 'from' or set integrations.email.from", retryable=False
        )
    try:
        parse_address(sender)
    except ValueError as exc:
        raise ActionError(f"integrations.email.from: {exc}", retryable=False) from exc
    return sender


def message_id(inputs: Send, ctx: ActionContext, sender: str) -> str:
    """The message's Message-ID: one per step of a run and its inputs, every attempt alike."""
    step = canonical_json([ctx.run_id, ctx.step_id, inputs.model_dump(mode="json", by_alias=True)])
    domain = parse_address(sender)[1].rsplit("@", 1)[1]
    return f"<irctl.{sha256_hex(step)[:32]}@{domain}>"


def _message(inputs: Send, ctx: ActionContext, sender: str, mid: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(inputs.to)
    message["Subject"] = inputs.subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = mid
    if inputs.reply_to is not None:
        message["Reply-To"] = inputs.reply_to
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    message["X-Irctl-Run"] = ctx.run_id
    message.set_content(inputs.body)
    return message


# --- the SMTP session ---------------------------------------------------------------------------


def _session(server: _Server, credentials: tuple[str, str] | None, timeout: float) -> smtplib.SMTP:
    """A connected session: EHLO, STARTTLS (checked) and AUTH done."""
    smtp = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        smtp.ehlo()
        if server.starttls:
            if not smtp.has_extn("starttls"):
                raise ActionError(
                    f"the SMTP server at {server.where} does not offer STARTTLS; irctl sends "
                    "neither a message nor a password in the clear (use the server's "
                    "submission port, usually 587)",
                    retryable=False,
                )
            smtp.starttls(context=server.tls())
            smtp.ehlo()
        if credentials is not None:
            if not smtp.has_extn("auth"):
                raise ActionError(
                    f"the SMTP server at {server.where} offers no AUTH, but "
                    "integrations.email.username and password are set",
                    retryable=False,
                )
            smtp.login(*credentials)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _failure(exc: BaseException, server: _Server, what: str, hide: list[str]) -> ActionError:
    """What went wrong, as irctl's error; credentials masked out of whatever the server said."""
    if isinstance(exc, ActionError):
        return exc
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return ActionError(
            f"the SMTP server at {server.where} refused the username and password in "
            f"integrations.email ({exc.smtp_code} {_said(exc.smtp_error, hide)})",
            retryable=False,
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = {a: f"{c} {_said(m, hide)}" for a, (c, m) in exc.recipients.items()}
        codes = [c for c, _ in exc.recipients.values()]
        return ActionError(
            f"the SMTP server at {server.where} refused every recipient of {what}: {refused}",
            retryable=all(400 <= c < 500 for c in codes),
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ActionError(
            f"the SMTP server at {server.where} does not support {what}: {exc}", retryable=False
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        return ActionError(
            f"the SMTP server at {server.where} refused {what}: {code} "
            f"{_said(exc.smtp_error, hide)}",
            retryable=400 <= code < 500,  # 4xx: try later; 5xx: it will not take it
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ActionError(
            f"the certificate of the SMTP server at {server.where} was not accepted "
            f"({exc.verify_message}); if it is signed by a private CA, set "
            "integrations.email.ca_file",
            retryable=False,
        )
    if isinstance(exc, ssl.SSLError):
        return ActionError(
            f"TLS with the SMTP server at {server.where} failed ({exc.reason or exc})",
            retryable=False,
        )
    if isinstance(exc, (smtplib.SMTPException, OSError)):  # refused, reset, timed out
        explained = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        return ActionError(
            f"the SMTP server at {server.where} is unreachable ({what}: {masked(explained, hide)})",
            retryable=True,
        )
    return ActionError(f"{what}: {type(exc).__name__}: {masked(str(exc), hide)}")


def _said(reply: bytes | str, hide: list[str]) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return masked(" ".join(text.split()), hide)


def _time(server: _Server, ctx: ActionContext | None) -> float:
    remaining = ctx.remaining() if ctx is not None else None
    if remaining is not None and remaining <= 0:
        raise ActionTimeout("email: the step's timeout has already passed")
    return server.timeout if remaining is None else max(0.001, min(server.timeout, remaining))


# --- email.send ---------------------------------------------------------------------------------


@action("email.send")
def send(inputs: Send, ctx: ActionContext) -> Outputs:
    """Send one plain-text e-mail over SMTP with STARTTLS."""
    server = _Server(ctx.config)
    sender = _sender(inputs, ctx.config)
    credentials = _credentials(ctx.config)
    hide = [credentials[1]] if credentials is not None else []  # the password
    mid = message_id(inputs, ctx, sender)
    recipients = [parse_address(item)[1] for item in inputs.to]
    message = _message(inputs, ctx, sender, mid)
    if ctx.cancelled.is_set():
        raise ActionError("email.send: cancelled before connecting", retryable=False)
    if ctx.facts.get("message_id") == mid:
        ctx.note(f"an earlier attempt of this step may have sent {mid}; sending it again as {mid}")
    else:
        ctx.record(message_id=mid)  # journaled before anything can leave
    what = f"the message {mid}"
    try:
        smtp = _session(server, credentials, _time(server, ctx))
    except (smtplib.SMTPException, OSError) as exc:
        raise _failure(exc, server, what, hide) from exc
    try:
        refused = smtp.send_message(
            message, from_addr=parse_address(sender)[1], to_addrs=recipients
        )
    except (smtplib.SMTPException, OSError) as exc:
        smtp.close()
        raise _failure(exc, server, what, hide) from exc
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):  # the message was taken; only the goodbye failed
        smtp.close()
    not_taken = {a: f"{c} {_said(m, hide)}" for a, (c, m) in refused.items()}
    if not_taken:
        ctx.note(f"the SMTP server at {server.where} refused {sorted(not_taken)}: {not_taken}")
    return {
        "message_id": mid,
        "from": sender,
        "to": list(inputs.to),
        "recipients": [r for r in recipients if r not in refused],
        "refused": not_taken,
        "subject": inputs.subject,
    }


@send.simulate
def _simulate_send(inputs: Send, ctx: ActionContext) -> Outputs:
    sender = inputs.from_ or str(ctx.config.get("from") or "")
    mid = message_id(inputs, ctx, sender) if sender else None
    host = ctx.config.get("host") or "(integrations.email.host)"
    return {
        "simulated": True,
        "would": f"e-mail {inputs.subject!r} from {sender or '(integrations.email.from)'} to "
        f"{', '.join(inputs.to)} through {host}",
        "message_id": mid,
        "from": sender or None,
        "to": list(inputs.to),
        "recipients": None,
        "refused": {},
        "subject": inputs.subject,
    }


@send.probe
def _probe_send(inputs: Send, ctx: ActionContext) -> Probe:
    recorded = ctx.facts.get("message_id")
    if recorded is None:
        return Probe.not_done("no attempt of this step got as far as connecting to the server")
    return Probe.unknown(
        f"SMTP cannot be asked whether {recorded} went out: look for that Message-ID in a "
        "recipient's mailbox or the relay's log"
    )


# --- readiness ----------------------------------------------------------------------------------


@preflight("email")
def ready(config: dict[str, Any]) -> list[str]:
    """``irctl validate --check-integrations``: connect, STARTTLS, AUTH, QUIT; nothing is sent."""
    try:
        server = _Server(config)
        credentials = _credentials(config)
    except ActionError as exc:
        return [exc.message]
    hide = [credentials[1]] if credentials is not None else []  # the password
    try:
        smtp = _session(server, credentials, server.timeout)
    except ActionError as exc:
        return [exc.message]
    except (smtplib.SMTPException, OSError) as exc:
        return [_failure(exc, server, "opening a session", hide).message]
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
    return []
