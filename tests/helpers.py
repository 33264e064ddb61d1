"""Helpers shared by the engine, CLI and crash tests: real workspaces, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from irctl.identity import generate_private_key, public_key_text

IRCTL = str(Path(sys.executable).parent / "irctl")


def make_workspace(
    root: Path,
    runbooks: dict[str, str] | None = None,
    *,
    vars: dict[str, Any] | None = None,
    store: str | None = None,
    extra: str = "",
) -> Path:
    """A workspace with an installation key, irctl.yaml and the given runbooks."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "runbooks").mkdir(exist_ok=True)
    key = generate_private_key(root / ".irctl" / "installation.key")
    lines = [
        f"store: {store or 'sqlite:///.irctl/irctl.db'}",
        f'installation_key: "{public_key_text(key)}"',
    ]
    if vars:
        lines.append("vars:")
        lines.extend(f"  {name}: {value}" for name, value in vars.items())
    (root / "irctl.yaml").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    for name, text in (runbooks or {}).items():
        (root / "runbooks" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def keyed_operators(keys: Path, roles: dict[str, str]) -> str:
    """irctl.yaml's ``operators:`` for ``{name: role}``, each with a new key written to
    ``keys/<name>.key`` (where ``IRCTL_KEY_DIR=keys`` finds it)."""
    lines = ["operators:"]
    for name, role in roles.items():
        public = public_key_text(generate_private_key(keys / f"{name}.key"))
        lines.append(f'  {name}: {{roles: [{role}], key: "{public}"}}')
    return "\n".join(lines) + "\n"


def irctl(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``irctl`` command in a workspace."""
    full_env = {**os.environ, "IRCTL_WORKSPACE": str(cwd), "COLUMNS": "200", **(env or {})}
    full_env.pop("IRCTL_DEBUG", None)
    return subprocess.run(
        [IRCTL, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input if input is not None else "",
        check=False,
    )


def run_id_from(result: subprocess.CompletedProcess[str]) -> str:
    for token in result.stderr.split():
        if token.startswith("r-") and token.count("-") >= 3:
            return token
    raise AssertionError(f"no run id in output:\n{result.stderr}")


def approve_as(store: Any, run_id: str, key: str, keys: dict[str, Any], *operators: str) -> None:
    """Each operator approves step ``key`` with a statement signed by their own key."""
    from irctl.engine.engine import Engine

    for who in operators:
        Engine(store).decide(
            run_id, key, operator=who, approve=True, reason="checked",
            private_key=keys[who],
        )  # fmt: skip


def until_waiting(engine: Any, run_id: str) -> tuple[Any, str, str]:
    """Execute until the run waits; its state, the one step it waits on, and for what."""
    state = engine.execute(run_id)
    assert state.status == "waiting", [
        (s.key, s.status, s.error) for s in state.steps.values() if s.error
    ]
    (step,) = [s for s in state.steps.values() if s.status == "waiting"]
    assert step.waiting_for is not None
    return state, step.key, step.waiting_for


def rebuild_run(store: Any, run_id: str, events: list[Any], installation: Any) -> None:
    """Rewrite a whole run as the holder of the installation key can, with SQL against the
    real store: every row deleted, ``events`` written again re-chained, each checkpoint
    re-signed with ``installation``."""
    from irctl.journal import events as ev
    from irctl.journal.events import GENESIS, Event
    from irctl.record.transcript import seal_fields

    table = store._events  # the attacker's way in
    with store.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.run_id == run_id))
    prev = GENESIS
    for old in events:
        data = old.data
        if old.type == ev.CHECKPOINT:
            data = seal_fields(run_id, old.seq - 1, prev, installation)
        event = Event.make(run_id, old.seq, old.type, data, prev, old.ts)
        with store.engine.begin() as conn:
            conn.execute(table.insert().values(
                run_id=event.run, seq=event.seq, ts=event.ts, type=event.type, line=event.line,
                hash=event.hash,
            ))  # fmt: skip
        prev = event.hash


def resign_start(created: dict[str, Any], run_id: str, key: Any) -> None:
    """Sign ``run.created``'s start again with ``key``, as an insider who swapped the
    initiator's recorded key for their own would."""
    from irctl.identity import sign
    from irctl.record.approvals import start_statement

    created["start"] = {
        "roles": created.get("start", {}).get("roles", []), "key": public_key_text(key),
        "sig": sign(key, start_statement({**created, "run": run_id})),
    }  # fmt: skip


def settled(status: Callable[[str], dict[str, Any]], run_id: str) -> dict[str, Any]:
    """``status(run_id)`` once the run has left created/running (another process, such as
    ``irctl serve``'s thread, took it to its first wait or its end), or after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        found = status(run_id)
        if found["status"] not in ("created", "running") or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
