"""Objectives in the exports: a step its rule skipped counts as done, as in the drill scorecard."""

from __future__ import annotations

from pathlib import Path

from irctl.engine.engine import Engine
from irctl.journal.store import Store
from irctl.record.report_html import objectives
from irctl.runbook.loader import load_runbook_text

RUNBOOK = """\
irctl: 1
id: contain
title: Contain
objectives: {contain: 10m}
steps:
  - id: halt
    action: notify.console
    tags: [contain]
    with: {message: halted}
  - id: sweep-via-custody
    action: notify.console
    when: false
    tags: [contain]
    with: {message: "custody sweeps (this chain is swept on chain instead)"}
"""


def test_a_step_skipped_by_its_rule_counts_toward_the_objective(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    engine = Engine(store, notify=False)
    model = load_runbook_text(RUNBOOK, "contain.yaml")
    run_id = engine.create_run(model, RUNBOOK, {}, initiator="oncall", mode="sandbox")
    assert engine.execute(run_id).status == "succeeded"
    (contain,) = objectives(store.events(run_id))
    assert contain.steps == ["halt", "sweep-via-custody"]
    assert contain.met is True
    assert contain.finished is not None
    store.close()
