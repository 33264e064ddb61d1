"""Anchors are written for live runs only: a tabletop drill never reaches S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401

RUNBOOK = """\
irctl: 1
kind: runbook
id: say
title: Say
steps:
  - {id: say, action: notify.console, with: {message: contained}}
"""


def test_a_tabletop_drill_writes_no_anchor_a_live_run_does(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    s3 = boto("s3", aws)
    s3.create_bucket(Bucket="anchors", ObjectLockEnabledForBucket=True)
    config = Config.model_validate({"integrations": {
        "aws": aws, "anchor": {"bucket": "anchors", "retain_until": "1d"},
    }})  # fmt: skip
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store, config=config, signing_key=generate_private_key(tmp_path / "i.key"))
    model = load_runbook_text(RUNBOOK, "say.yaml")

    def keys() -> list[str]:
        listed = s3.list_objects_v2(Bucket="anchors").get("Contents", [])
        return [str(o["Key"]) for o in listed]

    drill = engine.create_run(model, RUNBOOK, {}, initiator="oncall", mode="tabletop")
    assert engine.execute(drill).status == "succeeded"
    assert keys() == []
    live = engine.create_run(model, RUNBOOK, {}, initiator="oncall")
    assert engine.execute(live).status == "succeeded"
    written = keys()
    assert written
    assert all(live in key for key in written)
    store.close()
