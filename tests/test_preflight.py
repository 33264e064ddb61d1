"""``irctl validate --check-integrations``: credentials and tokens checked before an incident."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from irctl.testing import SlackStandIn
from tests.helpers import irctl, make_workspace
from tests.moto_server import aws, moto_endpoint  # noqa: F401

RUNBOOK = """\
irctl: 1
kind: runbook
id: freeze
title: Freeze the signing key
steps:
  - id: disable
    action: aws.kms.disable_key
    with: {key_id: alias/hot-wallet}
"""

NO_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _workspace(root: Path, integrations: str) -> Path:
    return make_workspace(root, {"freeze": RUNBOOK}, extra=f"integrations:\n{integrations}")


def test_aws_credentials_that_work_pass(aws: dict[str, Any], tmp_path: Path) -> None:
    ws = _workspace(tmp_path, f"  aws: {json.dumps(aws)}\n")
    done = irctl("validate", "--check-integrations", cwd=ws)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 problems" in done.stdout


def test_missing_aws_credentials_are_reported_before_an_incident(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    ws = _workspace(tmp_path, f"  aws: {json.dumps(aws)}\n")
    done = irctl("validate", "--check-integrations", "--json", cwd=ws, env=NO_AWS_CREDENTIALS)
    assert done.returncode == 2, done.stdout + done.stderr
    (problem,) = json.loads(done.stdout)
    assert problem["path"] == "integrations.aws"
    assert problem["file"].endswith("irctl.yaml")
    assert problem["line"] == 4  # the `aws:` line under integrations
    assert "no AWS credentials" in problem["message"]
    # without the flag nothing is contacted and the documents are valid
    assert irctl("validate", cwd=ws, env=NO_AWS_CREDENTIALS).returncode == 0


def test_a_runbook_naming_aws_is_checked_even_without_aws_settings(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, {"freeze": RUNBOOK})  # no integrations: in irctl.yaml
    env = {**NO_AWS_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}
    done = irctl("validate", "--check-integrations", cwd=ws, env=env)
    assert done.returncode == 2
    assert "irctl.yaml:1:1: integrations.aws: no AWS credentials" in done.stdout


def test_a_refused_slack_token_is_reported(tmp_path: Path) -> None:
    with SlackStandIn(token="xoxb-the-right-one") as slack:
        settings = f"  slack: {{token: env:SLACK_BOT_TOKEN, base_url: '{slack.url}'}}\n"
        ws = _workspace(tmp_path, settings)
        check = ("validate", "--check-integrations")
        wrong = irctl(*check, cwd=ws, env={**NO_AWS_CREDENTIALS, "SLACK_BOT_TOKEN": "xoxb-wrong"})
        good = {**NO_AWS_CREDENTIALS, "SLACK_BOT_TOKEN": "xoxb-the-right-one"}
        right = irctl(*check, "--json", cwd=ws, env=good)
    assert wrong.returncode == 2
    refused = "integrations.slack: Slack refused the bot token (auth.test: invalid_auth)"
    assert refused in wrong.stdout
    assert "xoxb-wrong" not in wrong.stdout + wrong.stderr
    # the right token passes; only AWS (named by the runbook, no credentials) is reported
    assert [p["path"] for p in json.loads(right.stdout)] == ["integrations.aws"]


def test_an_installation_key_missing_or_not_the_one_irctl_yaml_names_is_reported(
    tmp_path: Path,
) -> None:
    from irctl.identity import generate_private_key

    note = (
        "irctl: 1\nid: note\ntitle: Note\n"
        "steps:\n  - {id: a, action: notify.console, with: {message: hi}}\n"
    )
    ws = make_workspace(tmp_path / "ws", {"note": note})
    fine = irctl("validate", "--check-integrations", cwd=ws)
    assert fine.returncode == 0, fine.stdout + fine.stderr

    key = ws / ".irctl" / "installation.key"
    key.unlink()
    generate_private_key(key)  # a new key: not the one irctl.yaml names
    swapped = irctl("validate", "--check-integrations", cwd=ws)
    assert swapped.returncode == 2
    assert f"{ws / 'irctl.yaml'}:2:1: installation_key: the installation key {key} is not the " \
        "one" in swapped.stdout
    assert "Transcripts it signs would not verify" in swapped.stdout

    key.unlink()
    missing = irctl("validate", "--check-integrations", "--json", cwd=ws)
    assert missing.returncode == 2
    named = (ws / "irctl.yaml").read_text().splitlines()[1].split('"')[1]
    assert json.loads(missing.stdout) == [{
        "file": str(ws / "irctl.yaml"), "line": 2, "column": 1, "path": "installation_key",
        "message": f"irctl.yaml names the installation key {named}, but {key} does not exist: "
                   "runs would record transcripts without signed checkpoints; restore the key "
                   "file from its backup",
    }]  # fmt: skip
    ran = irctl("run", "note", "--yes", cwd=ws, env={"COLUMNS": "1000"})
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert (
        f"irctl.yaml names the installation key {named}, but {key} does not exist: a run started "
        "here could not be sealed"
    ) in " ".join(ran.stderr.split())
    assert "restore the key file from its backup" in " ".join(ran.stderr.split())
    listed = irctl("runs", "list", "--json", cwd=ws)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []  # refused before anything was recorded
