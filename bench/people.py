"""The commands people type most under stress, on a store holding 1,000 runs: ``irctl
status``, ``runs list`` and ``approvals pending``, each against a bare interpreter's start-up.

The workspace is real: irctl.yaml with two keyed operators and 1,000 live runs made through
the engine: 990 that ran to the end and, the newest, 10 of a two-step runbook waiting for a
security lead's approval.  Every figure is the median wall time of the whole command,
start-up included.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

IRCTL = str(Path(sys.executable).parent / "irctl")
RUNS = 1000
WAITING = 10

RUNBOOK = """\
irctl: 1
id: gated
title: A gated step
approvals:
  lead: {quorum: 1, roles: [security-lead]}
steps:
  - id: note
    action: notify.console
    with: {message: "incident opened"}
  - id: halt
    action: notify.console
    approval: lead
    with: {message: "withdrawals halted"}
"""


DONE_RUNBOOK = """\
irctl: 1
id: noted
title: A note
steps:
  - id: note
    action: notify.console
    with: {message: "incident opened"}
"""


def make_workspace(root: Path, runs: int = RUNS, waiting: int = WAITING) -> str:
    """A workspace holding ``runs`` live runs, the last ``waiting`` of them waiting for
    approval and the others ended; the last run's id."""
    from irctl.engine.engine import Engine
    from irctl.identity import generate_private_key, public_key_text
    from irctl.runbook.loader import load_runbook_text
    from irctl.workspace import Workspace

    (root / "runbooks").mkdir(parents=True)
    installation = generate_private_key(root / ".irctl" / "installation.key")
    keys = {name: generate_private_key(root / f"{name}.key") for name in ("oncall", "alice")}
    roles = {"oncall": "security-oncall", "alice": "security-lead"}
    lines = [
        "store: sqlite:///.irctl/irctl.db",
        f'installation_key: "{public_key_text(installation)}"',
        "operators:",
        *(f'  {n}: {{roles: [{roles[n]}], key: "{public_key_text(k)}"}}' for n, k in keys.items()),
    ]
    (root / "irctl.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "runbooks" / "gated.yaml").write_text(RUNBOOK, encoding="utf-8")
    ws = Workspace.find(root)
    engine = Engine(ws.store, config=ws.config, signing_key=installation, notify=False)
    last = ""
    for i in range(runs):
        text, expected = (
            (RUNBOOK, "waiting") if i >= runs - waiting else (DONE_RUNBOOK, "succeeded")
        )
        model = load_runbook_text(text, "bench.yaml")
        last = engine.create_run(model, text, {}, initiator="oncall", incident=f"INC-{i}",
                                 starter_key=keys["oncall"])  # fmt: skip
        state = engine.execute(last)
        if state.status != expected:
            raise SystemExit(f"bench run {i}: {state.status}, not {expected} ({state.reason})")
    ws.store.close()
    return last


def command(root: Path, args: list[str], repeat: int = 11) -> float:
    env = {**os.environ, "IRCTL_WORKSPACE": str(root), "COLUMNS": "120"}

    def once() -> float:
        began = time.perf_counter()
        subprocess.run([IRCTL, *args], cwd=root, env=env, capture_output=True, check=True)
        return time.perf_counter() - began

    once()  # warm the file cache
    return statistics.median(once() for _ in range(repeat))


def bench_people(tmp: Path) -> dict[str, float]:
    """Seconds for each command at 1,000 runs, and ``python -c pass`` for the ratio."""
    root = tmp / "people"
    last = make_workspace(root)

    def bare() -> float:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - began

    return {
        "status": command(root, ["status", last]),
        "runs list": command(root, ["runs", "list"]),
        "approvals pending": command(root, ["approvals", "pending"]),
        "python -c pass": statistics.median(bare() for _ in range(11)),
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for name, seconds in bench_people(Path(folder)).items():
            print(f"{name:<20} {seconds * 1000:7.0f} ms")
