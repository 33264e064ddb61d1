"""``aws-sm:NAME[#key]`` references: runbook secrets read from Secrets Manager (moto's server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from irctl.engine.engine import Engine
from irctl.errors import SecretError
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from irctl.secrets import resolve
from irctl.testing import ExchangeAdminStub
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

TOKEN = "admin-token-from-secrets-manager-7c1f"

RUNBOOK = """\
irctl: 1
kind: runbook
id: halt
title: Halt withdrawals
secrets:
  admin_token: aws-sm:exchange/admin#token
steps:
  - id: halt
    action: http.request
    with:
      method: POST
      url: "{{ vars.exchange_admin_url }}/withdrawals/halt"
      headers: {Authorization: "Bearer {{ secrets.admin_token }}"}
      json: {chain: ethereum}
"""


def test_a_run_uses_a_secret_from_secrets_manager_and_records_none_of_it(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    boto("secretsmanager", aws).create_secret(
        Name="exchange/admin", SecretString=json.dumps({"token": TOKEN, "user": "irctl"})
    )
    with ExchangeAdminStub(TOKEN) as exchange:
        config = Config.model_validate(
            {"integrations": {"aws": aws}, "vars": {"exchange_admin_url": exchange.url}}
        )
        store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
        engine = Engine(store, config=config)
        run_id = engine.create_run(load_runbook_text(RUNBOOK, "halt.yaml"), RUNBOOK, {},
                                   initiator="oncall")  # fmt: skip
        state = engine.execute(run_id)
        assert state.status == "succeeded", state.steps["halt"].error
        assert exchange.halted == {"ethereum"}  # the stand-in accepted only the right token
    assert not any(TOKEN in line for line in store.lines(run_id))
    store.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_whole_string_secrets_and_clear_errors(aws: dict[str, Any]) -> None:
    sm = boto("secretsmanager", aws)
    sm.create_secret(Name="plain", SecretString="s3cr3t-plain-value")
    sm.create_secret(Name="fields", SecretString=json.dumps({"a": "1"}))
    assert resolve("x", "aws-sm:plain", aws=aws) == "s3cr3t-plain-value"
    with pytest.raises(SecretError, match=r"secret 'x': fields has no field 'b' \(fields: a\)"):
        resolve("x", "aws-sm:fields#b", aws=aws)
    with pytest.raises(SecretError, match="plain is not a JSON object") as raised:
        resolve("x", "aws-sm:plain#token", aws=aws)
    assert "s3cr3t" not in str(raised.value)
    with pytest.raises(SecretError, match=r"secret 'x': .*missing.*not found"):
        resolve("x", "aws-sm:missing", aws=aws)
