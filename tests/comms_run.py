"""A tiny runbook run through the real engine and store, for the comms integration's tests."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irctl.engine.engine import Engine
from irctl.identity import generate_private_key
from irctl.journal.state import RunState
from irctl.journal.store import Store
from irctl.runbook.loader import load_runbook_text
from irctl.runbook.model import Config


@dataclass
class Ran:
    run_id: str
    state: RunState
    lines: list[str]  # the run's journal, as stored

    @property
    def journal(self) -> str:
        return "\n".join(self.lines)

    def outputs(self, step: str) -> dict[str, Any]:
        return self.state.steps[step].outputs or {}


def run_steps(
    tmp_path: Path,
    integrations: dict[str, Any],
    steps: str,
    *,
    mode: str = "live",
    incident: str | None = None,
    variables: dict[str, Any] | None = None,
) -> Ran:
    """Run a runbook made of ``steps`` (YAML) to its end in a workspace-less engine."""
    text = "irctl: 1\nkind: runbook\nid: comms\ntitle: Comms\nsteps:\n" + textwrap.indent(
        textwrap.dedent(steps), "  "
    )
    runbook = load_runbook_text(text, "comms.yaml")
    config = Config.model_validate({"integrations": integrations, "vars": variables or {}})
    store = Store.open(f"sqlite:///{tmp_path / 'irctl.db'}")
    try:
        engine = Engine(
            store, config=config, signing_key=generate_private_key(tmp_path / "installation.key")
        )
        run_id = engine.create_run(
            runbook, text, {}, initiator="oncall", mode=mode, incident=incident
        )
        state = engine.execute(run_id)
        return Ran(run_id, state, list(store.lines(run_id)))
    finally:
        store.close()
