"""A package defines actions, notifiers and checks only in its own namespace.

The throwaway package here is found through its entry point, as a real integration is
(its ``.dist-info`` on PYTHONPATH), and tries to replace irctl's own ``notify.console``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from tests.helpers import irctl, make_workspace

PACKAGE = '''\
from pathlib import Path

from pydantic import BaseModel

from irctl.actions import ActionContext, action, preflight


class Anything(BaseModel):
    message: str = ""
    level: str = "info"


@action("lookalike.ok")
def ok(inputs: Anything, ctx: ActionContext) -> dict[str, object]:
    """Its own action."""
    return {"ok": True}


@action("notify.console")
def hijack(inputs: Anything, ctx: ActionContext) -> dict[str, object]:
    """Someone else's."""
    Path(HIJACKED).write_text(inputs.message, encoding="utf-8")
    return {}


@preflight("aws")
def fake_ready(settings: dict[str, object]) -> list[str]:
    return []
'''

RUNBOOK = """\
irctl: 1
kind: runbook
id: say
title: Say
steps:
  - {id: first, action: notify.console, with: {message: "halt withdrawals", level: critical}}
  - {id: own, action: lookalike.ok}
  - {id: again, action: notify.console, with: {message: "still irctl's", level: info}}
"""


def _plugin(folder: Path, hijacked: Path) -> dict[str, str]:
    folder.mkdir()
    source = PACKAGE.replace("HIJACKED", repr(str(hijacked)))
    (folder / "irctl_test_lookalike.py").write_text(source, encoding="utf-8")
    meta = folder / "irctl_test_lookalike-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: irctl-test-lookalike\nVersion: 0.1\n", encoding="utf-8"
    )
    (meta / "entry_points.txt").write_text(
        "[irctl.integrations]\nlookalike = irctl_test_lookalike\n", encoding="utf-8"
    )
    paths = [str(folder), os.environ.get("PYTHONPATH")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def test_a_package_cannot_replace_another_namespaces_action(tmp_path: Path) -> None:
    hijacked = tmp_path / "hijacked.txt"
    env = _plugin(tmp_path / "plugins", hijacked)
    ws = make_workspace(tmp_path / "ws", {"say": RUNBOOK})
    done = irctl("run", "say", "--yes", "--unattended", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    assert not hijacked.exists()  # irctl's notify.console ran, both times
    assert "halt withdrawals" in done.stderr + done.stdout
    assert "still irctl's" in done.stderr + done.stdout


def test_an_action_another_package_adds_to_a_namespace_is_refused(tmp_path: Path) -> None:
    """``vaultline`` is provided by its own package; the lookalike adds
    ``vaultline.transfer`` to it.  irctl refuses that action with the reason, at
    ``validate`` and at ``run``, and never calls it."""
    hijacked = tmp_path / "hijacked.txt"
    env = _plugin(tmp_path / "plugins", hijacked)
    plugins = tmp_path / "plugins"
    source = (plugins / "irctl_test_lookalike.py").read_text(encoding="utf-8")
    extra = textwrap.dedent('''
        @action("vaultline.transfer")
        def transfer(inputs: Anything, ctx: ActionContext) -> dict[str, object]:
            """Not its namespace."""
            Path(HIJACKED).write_text("moved", encoding="utf-8")
            return {}
        ''').replace("HIJACKED", repr(str(hijacked)))  # fmt: skip
    (plugins / "irctl_test_lookalike.py").write_text(source + extra, "utf-8")
    (plugins / "irctl_test_vaultline.py").write_text(
        "from pydantic import BaseModel\n"
        "from irctl.actions import ActionContext, action\n\n\n"
        "class Vault(BaseModel):\n    vault: str = 'v1'\n\n\n"
        "@action('vaultline.freeze')\n"
        "def freeze(inputs: Vault, ctx: ActionContext) -> dict[str, object]:\n"
        "    return {'frozen': inputs.vault}\n",
        encoding="utf-8",
    )
    meta = plugins / "irctl_test_vaultline-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: irctl-test-vaultline\nVersion: 0.1\n", encoding="utf-8"
    )
    (meta / "entry_points.txt").write_text(
        "[irctl.integrations]\nvaultline = irctl_test_vaultline\n", encoding="utf-8"
    )
    runbook = (
        "irctl: 1\nkind: runbook\nid: freeze\ntitle: Freeze\nsteps:\n"
        "  - {id: own, action: lookalike.ok}\n  - {id: freeze, action: vaultline.freeze}\n"
        "  - {id: move, action: vaultline.transfer}\n"
    )
    ws = make_workspace(tmp_path / "ws", {"freeze": runbook})
    checked = irctl("validate", "--check-integrations", cwd=ws, env=env)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "action 'vaultline.transfer' is defined by irctl_test_lookalike, which does not " \
        "provide 'vaultline.*'" in checked.stdout  # fmt: skip
    assert "vaultline.freeze" not in checked.stdout  # the real one is fine
    ran = irctl("run", "freeze", "--yes", "--unattended", cwd=ws, env=env)
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert not hijacked.exists()
