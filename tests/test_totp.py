"""totp.rotate against moto's Secrets Manager: the new seed works, is shown once, is never kept.

Codes are checked against an RFC 6238 computation written here (HMAC-SHA1 over
the time step), not only against pyotp, which generated the seed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import pty
import select
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
import segno

from irctl.actions import ActionContext, default_registry
from irctl.engine.engine import Engine
from irctl.errors import ActionError
from irctl.identity import generate_private_key
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.runbook.params import parse_params
from irctl.testing import SlackStandIn, run_action
from tests.helpers import IRCTL, irctl, make_workspace, run_id_from
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

SLACK_TOKEN = "xoxb-totp-test"

RUNBOOK = """\
irctl: 1
kind: runbook
id: rotate-bot-2fa
title: Rotate the ops bot's TOTP seed
params:
  secret: {type: string}
steps:
  - id: rotate
    action: totp.rotate
    with:
      account: ops-bot@exchange
      secret_id: "{{ params.secret }}"
      issuer: Exchange admin
  - id: tell
    action: notify.console
    with:
      message: >
        New seed for {{ steps.rotate.outputs.account }} in
        {{ steps.rotate.outputs.secret_id }} version {{ steps.rotate.outputs.version_id }}
        (QR shown: {{ steps.rotate.outputs.qr_shown }})
  - id: post
    action: slack.post
    with:
      text: >
        TOTP of {{ steps.rotate.outputs.account }} rotated:
        {{ steps.rotate.outputs | tojson }}
"""


def rfc6238(seed: str, at: float, *, digits: int = 6, interval: int = 30) -> str:
    """The TOTP code of a base32 seed at a time, computed from the RFC, not by pyotp."""
    key = base64.b32decode(seed, casefold=True)
    mac = hmac.new(key, struct.pack(">Q", int(at // interval)), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def current_seed(aws: dict[str, Any], secret_id: str) -> tuple[str, str]:
    found = boto("secretsmanager", aws).get_secret_value(SecretId=secret_id)
    return str(found["SecretString"]), str(found["VersionId"])


def everything_under(root: Path) -> bytes:
    """Every byte of every file under ``root`` (the store, its WAL, keys, logs)."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def ctx_for(aws: dict[str, Any], **overrides: Any) -> ActionContext:
    values: dict[str, Any] = {"run_id": "r-totp", "step_id": "rotate", "config": aws}
    values.update(overrides)
    return ActionContext(**values)


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStandIn]:
    monkeypatch.setenv("IRCTL_TEST_SLACK_TOKEN", SLACK_TOKEN)
    with SlackStandIn(token=SLACK_TOKEN) as stand_in:
        stand_in.add_channel("incidents", bot_member=True)
        yield stand_in


def test_rotate_through_the_engine(
    aws: dict[str, Any], slack: SlackStandIn, tmp_path: Path
) -> None:
    sm = boto("secretsmanager", aws)
    old = pyotp.random_base32()
    sm.create_secret(Name="ops-bot/totp", SecretString=old)
    shown: list[str] = []
    config = Config.model_validate({
        "integrations": {
            "totp": aws,
            "slack": {"token": "env:IRCTL_TEST_SLACK_TOKEN", "base_url": slack.url,
                      "channel": "#incidents"},
        },
    })  # fmt: skip
    workspace = tmp_path / "ws"
    store = Store.open(f"sqlite:///{workspace / '.irctl' / 'irctl.db'}")
    engine = Engine(
        store, config=config, signing_key=generate_private_key(workspace / ".irctl" / "inst.key"),
        display=shown.append,
    )  # fmt: skip
    runbook = load_runbook_text(RUNBOOK, "rotate.yaml")
    run_id = engine.create_run(
        runbook, RUNBOOK, parse_params(runbook, {"secret": "ops-bot/totp"}), initiator="oncall"
    )
    state = engine.execute(run_id)
    assert state.status == "succeeded", [(s.key, s.error) for s in state.steps.values()]

    seed, version = current_seed(aws, "ops-bot/totp")
    assert seed != old
    assert len(seed) == 32
    assert len(base64.b32decode(seed)) == 20
    for at in (0, 1_700_000_000, time.time()):
        assert pyotp.TOTP(seed).at(at) == rfc6238(seed, at)
    outputs = state.steps["rotate"].outputs
    assert outputs["version_id"] == version
    assert outputs["account"] == "ops-bot@exchange"
    assert outputs["secret_id"].startswith("arn:aws:secretsmanager:")
    assert outputs["qr_shown"] is True
    stages = sm.describe_secret(SecretId="ops-bot/totp")["VersionIdsToStages"]
    assert stages[version] == ["AWSCURRENT"]
    assert sum("AWSPREVIOUS" in s for s in stages.values()) == 1  # the old seed, kept one step

    # Shown once, on the terminal channel: a QR code of the otpauth URI and the key to type.
    (text,) = shown
    uri = pyotp.TOTP(seed).provisioning_uri(name="ops-bot@exchange", issuer_name="Exchange admin")
    picture = io.StringIO()
    segno.make(uri, error="m").terminal(out=picture, compact=True)
    assert picture.getvalue().rstrip("\n") in text
    assert " ".join(seed[i : i + 4] for i in range(0, 32, 4)) in text

    # ... and nowhere else: not the journal, the workspace's files, Slack or the outputs.
    engine_lines = "\n".join(store.lines(run_id))
    store.close()
    assert version in engine_lines
    assert seed not in engine_lines
    assert seed.encode() not in everything_under(workspace)
    posted = [json.dumps(call.params) for call in slack.requests]
    assert any(version in p for p in posted)  # the step's message reached Slack
    assert not any(seed in p for p in posted)
    assert seed not in json.dumps([s.outputs for s in state.steps.values()])


def test_interrupted_after_the_write_resumes_without_a_second_seed(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    sm = boto("secretsmanager", aws)
    sm.create_secret(Name="ops-bot/totp", SecretString="old")

    def interrupted(text: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C (or a crash) after the write, before anyone scanned

    config = Config.model_validate({"integrations": {"totp": aws}})
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    key = generate_private_key(tmp_path / "inst.key")
    first = Engine(store, config=config, signing_key=key, display=interrupted, notify=False)
    runbook = load_runbook_text(RUNBOOK, "rotate.yaml")
    run_id = first.create_run(
        runbook, RUNBOOK, parse_params(runbook, {"secret": "ops-bot/totp"}), initiator="oncall"
    )
    stopped = first.execute(run_id)
    assert stopped.status == "interrupted"
    assert stopped.steps["rotate"].status == "interrupted"
    seed, version = current_seed(aws, "ops-bot/totp")

    shown: list[str] = []
    second = Engine(store, config=config, signing_key=key, display=shown.append, notify=False)
    state = second.execute(run_id)
    assert state.steps["rotate"].status == "succeeded"
    assert state.steps["rotate"].outputs["version_id"] == version  # found by the probe
    assert current_seed(aws, "ops-bot/totp") == (seed, version)
    assert len(sm.list_secret_version_ids(SecretId="ops-bot/totp")["Versions"]) == 2
    assert shown == []  # not shown again: the note says to read it from Secrets Manager
    assert seed not in "\n".join(store.lines(run_id))
    store.close()


def test_probe_finds_the_version_and_a_rerun_writes_no_second_seed(aws: dict[str, Any]) -> None:
    sm = boto("secretsmanager", aws)
    sm.create_secret(Name="svc/totp", SecretString=pyotp.random_base32())
    inputs = {"account": "svc", "secret_id": "svc/totp"}
    rotate = default_registry.get("totp.rotate")
    assert rotate.call_probe(rotate.parse(inputs), ctx_for(aws)).state == "not_done"

    first = run_action("totp.rotate", inputs, ctx_for(aws))  # no terminal: nothing shown
    assert first["qr_shown"] is False
    seed, version = current_seed(aws, "svc/totp")
    assert first["version_id"] == version

    found = rotate.call_probe(rotate.parse(inputs), ctx_for(aws))
    assert found.state == "done"
    assert found.outputs["version_id"] == version
    again_ctx = ctx_for(aws, attempt=2, display=lambda text: pytest.fail("shown again"))
    again = run_action("totp.rotate", inputs, again_ctx)
    assert again["version_id"] == version
    assert current_seed(aws, "svc/totp") == (seed, version)  # the same seed, no new version
    assert "written by an earlier attempt" in again_ctx.notes[0]
    other_step = rotate.call_probe(rotate.parse(inputs), ctx_for(aws, step_id="another"))
    assert other_step.state == "not_done"


def test_without_a_terminal_the_note_says_where_the_seed_is(aws: dict[str, Any]) -> None:
    boto("secretsmanager", aws).create_secret(Name="svc/totp", SecretString="x")
    ctx = ctx_for(aws)
    outputs = run_action("totp.rotate", {"account": "svc", "secret_id": "svc/totp"}, ctx)
    seed, version = current_seed(aws, "svc/totp")
    (note,) = ctx.notes
    assert "no terminal" in note
    assert version in note
    assert "svc/totp" in note
    assert seed not in note
    assert seed not in json.dumps(outputs)


def test_a_missing_secret_is_refused_unless_created(aws: dict[str, Any]) -> None:
    with pytest.raises(ActionError, match=r"not found \(set create: true"):
        run_action("totp.rotate", {"account": "svc", "secret_id": "nope"}, ctx_for(aws))
    shown: list[str] = []
    outputs = run_action(
        "totp.rotate",
        {"account": "svc", "secret_id": "nope", "create": True, "digits": 8, "interval": 60},
        ctx_for(aws, display=shown.append),
    )
    seed, version = current_seed(aws, "nope")
    assert (outputs["created"], outputs["version_id"], outputs["digits"]) == (True, version, 8)
    assert pyotp.TOTP(seed, digits=8, interval=60).at(1_700_000_000) == rfc6238(
        seed, 1_700_000_000, digits=8, interval=60
    )
    assert "8 digits, 60s" in shown[0]


def test_simulate_writes_nothing(aws: dict[str, Any]) -> None:
    sm = boto("secretsmanager", aws)
    sm.create_secret(Name="svc/totp", SecretString="before")
    outputs = run_action(
        "totp.rotate", {"account": "svc", "secret_id": "svc/totp"}, ctx_for(aws), simulate=True
    )
    assert outputs["simulated"] is True
    assert outputs["qr_shown"] is False
    assert sm.get_secret_value(SecretId="svc/totp")["SecretString"] == "before"


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({"account": "a:b", "secret_id": "s"}, "account"),
        ({"account": "a", "secret_id": "s", "digits": 7}, "digits"),
        ({"account": "a", "secret_id": "s", "interval": 5}, "interval"),
        ({"account": "a", "secret_id": "s", "seed": "JBSWY3DPEHPK3PXP"}, "seed"),
    ],
)
def test_bad_inputs_are_named(inputs: dict[str, Any], problem: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem):
        default_registry.get("totp.rotate").parse(inputs)


def _read_all(fd: int, process: subprocess.Popen[bytes], limit: float) -> bytes:
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    return b"".join(chunks)


def test_the_cli_shows_the_qr_code_on_a_terminal_only(aws: dict[str, Any], tmp_path: Path) -> None:
    boto("secretsmanager", aws).create_secret(Name="ops-bot/totp", SecretString="old")
    settings = json.dumps(aws)
    no_slack = RUNBOOK.replace("  - id: post", "  - id: post\n    when: false")
    root = make_workspace(
        tmp_path / "ws", {"rotate-bot-2fa": no_slack}, extra=f"integrations:\n  totp: {settings}\n"
    )
    env = {**os.environ, "IRCTL_WORKSPACE": str(root), "COLUMNS": "200"}
    main, child = pty.openpty()
    process = subprocess.Popen(
        [IRCTL, "run", "rotate-bot-2fa", "-p", "secret=ops-bot/totp", "--as", "oncall", "--yes"],
        cwd=root, env=env, stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    try:
        output = _read_all(main, process, 60).decode("utf-8", errors="replace")
        assert process.wait(timeout=30) == 0, output
    finally:
        os.close(main)
    seed, _ = current_seed(aws, "ops-bot/totp")
    assert " ".join(seed[i : i + 4] for i in range(0, 32, 4)) in output
    assert "▄" in output or "▀" in output  # the QR code's half blocks
    assert seed.encode() not in everything_under(root)

    # Not a terminal (a pipe, a log file): nothing shown, the note says where the seed is.
    piped = subprocess.run(
        [IRCTL, "run", "rotate-bot-2fa", "-p", "secret=ops-bot/totp", "--as", "oncall", "--yes"],
        cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    newer, _ = current_seed(aws, "ops-bot/totp")
    assert newer != seed
    assert newer not in piped.stdout + piped.stderr
    assert "no terminal" in piped.stderr
    run_id = run_id_from(piped)
    for fmt in ("jsonl", "md", "html"):
        exported = irctl("transcript", "export", run_id, "--format", fmt, "-o", "-", cwd=root)
        assert exported.returncode == 0, exported.stderr
        assert run_id in exported.stdout
        assert newer not in exported.stdout
    assert newer.encode() not in everything_under(root)
