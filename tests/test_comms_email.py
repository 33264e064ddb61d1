"""email.send against a real SMTP server (aiosmtpd) with STARTTLS and AUTH on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from irctl_comms.mail import send
from pydantic import ValidationError

from irctl.actions import ActionContext
from irctl.errors import ActionError
from irctl.testing import context, run_action
from tests.comms_run import run_steps
from tests.smtp_server import SmtpServer

USER = "irctl@exchange.test"
PASSWORD = "smtp-password-9d41c7"
MESSAGE = {
    "from": "Exchange Security <security@exchange.test>",
    "to": ["regulator@example.test", "Counsel <counsel@exchange.test>"],
    "subject": "INC-42: notice of a cybersecurity event",
    "body": "On 2026-12-07 we detected unauthorised withdrawals from a hot wallet.\n",
    "reply_to": "ir@exchange.test",
}

Ctx = Callable[..., ActionContext]


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    monkeypatch.setenv("IRCTL_TEST_SMTP_USER", USER)
    monkeypatch.setenv("IRCTL_TEST_SMTP_PASSWORD", PASSWORD)
    with SmtpServer(tmp_path / "tls", users={USER: PASSWORD}) as server:
        yield server


def settings(server: SmtpServer, **more: Any) -> dict[str, Any]:
    found = {
        "host": "127.0.0.1", "port": server.port, "ca_file": str(server.ca_file),
        "username": "env:IRCTL_TEST_SMTP_USER", "password": "env:IRCTL_TEST_SMTP_PASSWORD",
        "timeout": 5, **more,
    }  # fmt: skip
    return {k: v for k, v in found.items() if v is not None}


@pytest.fixture
def ctx(smtp: SmtpServer) -> Ctx:
    def make(facts: dict[str, Any] | None = None, **more: Any) -> ActionContext:
        return context(
            run_id="r-1", config=settings(smtp, **more), timeout=10, facts=dict(facts or {})
        )

    return make


def failure(inputs: dict[str, Any], ctx: ActionContext) -> ActionError:
    with pytest.raises(ActionError) as raised:
        run_action("email.send", inputs, ctx)
    assert PASSWORD not in str(raised.value)
    return raised.value


def test_a_message_goes_out_over_starttls_with_auth(smtp: SmtpServer, ctx: Ctx) -> None:
    step = ctx()
    out = run_action("email.send", MESSAGE, step)
    [got] = smtp.received
    assert (got.tls, got.login) == (True, USER)
    assert got.mail_from == "security@exchange.test"
    assert got.rcpt_tos == ["regulator@example.test", "counsel@exchange.test"]
    message = got.message
    assert message["From"] == "Exchange Security <security@exchange.test>"
    assert message["To"] == "regulator@example.test, Counsel <counsel@exchange.test>"
    assert message["Subject"] == "INC-42: notice of a cybersecurity event"
    assert message["Reply-To"] == "ir@exchange.test"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Irctl-Run"] == "r-1"
    assert message.get_content().replace("\r\n", "\n") == MESSAGE["body"]
    assert out == {
        "message_id": message["Message-ID"],
        "from": MESSAGE["from"],
        "to": MESSAGE["to"],
        "recipients": ["regulator@example.test", "counsel@exchange.test"],
        "refused": {},
        "subject": MESSAGE["subject"],
    }
    assert out["message_id"].endswith("@exchange.test>")
    assert step.facts == {"message_id": out["message_id"]}  # journaled before connecting
    assert [s["tls"] for s in smtp.handler.sessions] == [False, True]  # EHLO, STARTTLS, EHLO


def test_every_attempt_of_a_step_sends_the_same_message_id(smtp: SmtpServer, ctx: Ctx) -> None:
    first = ctx()
    one = run_action("email.send", MESSAGE, first)
    retry = ctx(facts=first.facts)
    two = run_action("email.send", MESSAGE, retry)
    assert one["message_id"] == two["message_id"]
    assert [r.message["Message-ID"] for r in smtp.received] == [one["message_id"]] * 2
    assert retry.notes == [
        f"an earlier attempt of this step may have sent {one['message_id']}; sending it again "
        f"as {one['message_id']}"
    ]
    other = run_action("email.send", {**MESSAGE, "subject": "another"}, ctx())
    assert other["message_id"] != one["message_id"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_server_without_starttls_is_refused_before_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRCTL_TEST_SMTP_USER", USER)
    monkeypatch.setenv("IRCTL_TEST_SMTP_PASSWORD", PASSWORD)
    with SmtpServer(tmp_path / "tls", users={USER: PASSWORD}, starttls=False) as plain:
        error = failure(MESSAGE, context(config=settings(plain)))
        assert not error.retryable
        assert error.message.startswith(
            f"the SMTP server at 127.0.0.1:{plain.port} does not offer STARTTLS"
        )
        assert (plain.received, plain.handler.logins) == ([], [])  # the password never left
        # plaintext only when asked for, and only to a loopback address
        out = run_action("email.send", MESSAGE, context(config=settings(plain, starttls=False)))
        [got] = plain.received
        assert (got.tls, got.login, got.message["Message-ID"]) == (False, USER, out["message_id"])
    remote = failure(
        MESSAGE, context(config=settings(plain, host="smtp.example.test", starttls=False))
    )
    assert "integrations.email.starttls: false would send the message and the password" in (
        remote.message
    )


def test_a_certificate_from_an_unknown_ca_is_refused(smtp: SmtpServer, ctx: Ctx) -> None:
    error = failure(MESSAGE, ctx(ca_file=None))
    assert not error.retryable
    assert "certificate of the SMTP server" in error.message
    assert "integrations.email.ca_file" in error.message
    assert smtp.received == []


def test_a_wrong_password_is_refused_and_never_repeated(
    smtp: SmtpServer, ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRCTL_TEST_SMTP_PASSWORD", "wrong-password-55")
    error = failure(MESSAGE, ctx())
    assert not error.retryable
    assert error.message.startswith(
        f"the SMTP server at 127.0.0.1:{smtp.port} refused the username and password in "
        "integrations.email (535"
    )
    assert "wrong-password-55" not in error.message
    assert smtp.received == []


def test_credentials_must_be_references_and_come_in_pairs(smtp: SmtpServer, ctx: Ctx) -> None:
    pasted = failure(MESSAGE, ctx(password=PASSWORD))
    assert "integrations.email.password must be a secret reference" in pasted.message
    half = failure(MESSAGE, ctx(password=None))
    assert "set both integrations.email.username and integrations.email.password" in half.message
    plain_user = run_action("email.send", MESSAGE, ctx(username=USER))  # a name may be plain
    assert plain_user["recipients"]
    nohost = failure(MESSAGE, ctx(host=None))
    assert "integrations.email.host is not set" in nohost.message
    nofrom = failure({k: v for k, v in MESSAGE.items() if k != "from"}, ctx())
    assert "give 'from' or set integrations.email.from" in nofrom.message
    defaulted = run_action(
        "email.send", {k: v for k, v in MESSAGE.items() if k != "from"},
        ctx(**{"from": "irctl <irctl@exchange.test>"}),
    )  # fmt: skip
    assert defaulted["from"] == "irctl <irctl@exchange.test>"


def test_refused_recipients_and_a_busy_server(smtp: SmtpServer, ctx: Ctx) -> None:
    smtp.handler.refuse["regulator@example.test"] = "550 5.1.1 No such user"
    partly = ctx()
    out = run_action("email.send", MESSAGE, partly)
    assert out["recipients"] == ["counsel@exchange.test"]
    assert out["refused"] == {"regulator@example.test": "550 5.1.1 No such user"}
    smtp.handler.refuse["counsel@exchange.test"] = "450 4.2.1 Mailbox busy"
    error = failure(MESSAGE, ctx())
    assert not error.retryable  # one 5xx among the refusals: a retry will not help
    assert "refused every recipient" in error.message
    smtp.handler.refuse.clear()
    smtp.handler.data_reply = "451 4.3.0 Try again later"
    later = failure(MESSAGE, ctx())
    assert later.retryable
    assert "451 4.3.0 Try again later" in later.message


def test_what_the_server_says_is_masked(smtp: SmtpServer, ctx: Ctx) -> None:
    smtp.handler.data_reply = f"554 5.7.1 we will not take mail for {PASSWORD} today"
    error = failure(MESSAGE, ctx())  # failure() checks the password is not in the message
    assert error.message.endswith("554 5.7.1 we will not take mail for •••• today")


def test_an_unreachable_server_is_retryable(ctx: Ctx) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    error = failure(MESSAGE, ctx(port=port))
    assert error.retryable
    assert error.message.startswith(f"the SMTP server at 127.0.0.1:{port} is unreachable")


@pytest.mark.parametrize(
    "bad",
    [
        {**MESSAGE, "to": []},
        {**MESSAGE, "to": ["not an address"]},
        {**MESSAGE, "to": ["a@b.test", "A@B.test"]},
        {**MESSAGE, "subject": "two\nlines"},
        {**MESSAGE, "from": "x@y.test\r\nBcc: everyone@y.test"},
        {**MESSAGE, "cc": ["a@b.test"]},
    ],
)
def test_inputs_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        send.parse(bad)


def test_simulate_connects_to_nothing(smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRCTL_TEST_SMTP_PASSWORD")
    drill = context(run_id="r-1", config={"host": "smtp.exchange.test"}, mode="tabletop")
    out = run_action("email.send", MESSAGE, drill, simulate=True)
    assert out["would"] == (
        "e-mail 'INC-42: notice of a cybersecurity event' from Exchange Security "
        "<security@exchange.test> to regulator@example.test, Counsel <counsel@exchange.test> "
        "through smtp.exchange.test"
    )
    assert smtp.handler.sessions == []  # no connection was made
    monkeypatch.setenv("IRCTL_TEST_SMTP_PASSWORD", PASSWORD)
    live = run_action("email.send", MESSAGE, context(run_id="r-1", config=settings(smtp)))
    assert out["message_id"] == live["message_id"]  # the drill shows the id a run would send


def test_the_probe_tells_sent_from_unsent_only_by_the_journal(ctx: Ctx) -> None:
    inputs = send.parse(MESSAGE)
    assert send.call_probe(inputs, ctx()).state == "not_done"
    crashed = ctx()
    send.call_run(inputs, crashed)
    found = send.call_probe(inputs, ctx(facts=crashed.facts))
    assert found.state == "unknown"
    assert crashed.facts["message_id"] in found.reason


def test_a_run_sends_it_and_records_no_password(
    smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = """\
    - id: notify-regulator
      action: email.send
      with:
        from: "security@exchange.test"
        to: ["regulator@example.test"]
        subject: "{{ run.incident }}: notice"
        body: "Run {{ run.id }} is containing {{ run.incident }}."
    """
    ran = run_steps(tmp_path / "one", {"email": settings(smtp)}, steps, incident="INC-42")
    assert ran.state.status == "succeeded"
    [got] = smtp.received
    assert got.message["Subject"] == "INC-42: notice"
    assert got.message.get_content().strip() == f"Run {ran.run_id} is containing INC-42."
    assert ran.outputs("notify-regulator")["message_id"] == got.message["Message-ID"]
    assert PASSWORD not in ran.journal
    # refused: the step fails with the server's answer, and the password is still nowhere
    monkeypatch.setenv("IRCTL_TEST_SMTP_PASSWORD", "wrong-password-55")
    failed = run_steps(tmp_path / "two", {"email": settings(smtp)}, steps, incident="INC-42")
    assert failed.state.status == "failed"
    assert "refused the username and password" in (
        failed.state.steps["notify-regulator"].error or ""
    )
    assert "wrong-password-55" not in failed.journal
    assert len(smtp.received) == 1
