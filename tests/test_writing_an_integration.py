"""``docs/writing-an-integration.md``, executed: its example integration, installed and run.

The guide's code blocks are the example's source.  A block whose first line is ``# file:
PATH`` is a file of the example package (a later block naming the same file continues it),
one whose first line is ``# workspace: PATH`` a file of the workspace that uses it.  The
package is found the way an installed one is found: through the ``.dist-info`` folder that
``pip install`` writes, its ``entry_points.txt`` taken from the guide's ``pyproject.toml``,
on ``PYTHONPATH`` (no wheel is built: that needs a build backend and the network).  Vaultline
is the guide's own stand-in, on 127.0.0.1; every ``irctl`` here is the real command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from irctl.identity import generate_private_key, public_key_text
from tests.helpers import IRCTL, irctl, make_workspace, run_id_from

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-an-integration.md"
BIN = Path(sys.executable).parent

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
MARKER = re.compile(r"# (file|workspace): (\S+)\n")

KEY = "vk_live_5c0ffee0d2b84e77a1"  # the API key the stand-in takes; never to be recorded
TEAM = {"oncall": "security-oncall", "bob": "treasury", "carol": "treasury"}
RUN = ["run", "vaultline-hot-vault", "-p", "vault=vlt_hot_eth", "-p", "asset=ETH",
       "-p", "amount=1250.5"]  # fmt: skip
LIVE = [*RUN, "--incident", "INC-42", "--as", "oncall"]
TABLETOP = [*RUN, "--mode", "tabletop", "--as", "oncall"]


def _blocks() -> list[tuple[str, str]]:
    """The guide's fenced code blocks: (language, text)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(GUIDE.read_text(encoding="utf-8"))]


def _example() -> dict[str, dict[str, str]]:
    """The example's files from the guide: ``{"file": {path: text}, "workspace": {...}}``."""
    found: dict[str, dict[str, str]] = {"file": {}, "workspace": {}}
    for _lang, text in _blocks():
        marker = MARKER.match(text)
        if marker is None:
            continue
        kind, path = marker.groups()
        body = text[marker.end() :]
        earlier = found[kind].get(path)
        found[kind][path] = body if earlier is None else earlier + "\n\n" + body
    return found


def _env(example: Path, **extra: str) -> dict[str, str]:
    """The environment of a command that sees the example as installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRCTL_", "VAULTLINE_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(example), env.get("PYTHONPATH")]))
    return {**env, **extra}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, written from the guide and installed as ``pip install`` would."""
    root = tmp_path_factory.mktemp("irctl-vaultline")
    for path, text in _example()["file"].items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name, version = project["name"], project["version"]
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
             for group, points in project["entry-points"].items()]  # fmt: skip
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def standins(example: Path) -> ModuleType:
    """The guide's stand-in module, loaded from its file (it imports only the standard
    library), so this process never imports the integration itself."""
    name = "_guide_vaultline_standin"
    spec = importlib.util.spec_from_file_location(name, example / "irctl_vaultline/testing.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vaultline(standins: ModuleType) -> Iterator[Any]:
    with standins.VaultlineStandIn(
        KEY, vaults=["vlt_hot_eth"], cold=["cold_eth_main", "cold_btc_main"]
    ) as standin:
        yield standin


class Workspace:
    """The guide's workspace files in a workspace with an installation key and a team."""

    def __init__(self, root: Path, example: Path, vaultline: Any) -> None:
        files = _example()["workspace"]
        config = files.pop("irctl.yaml")
        assert "url: https://api.vaultline.example\n" in config
        config = config.replace("https://api.vaultline.example", vaultline.url)
        self.keys = root / "keys"
        operators = ["operators:"]
        for name, role in TEAM.items():
            key = generate_private_key(self.keys / f"{name}.key")
            operators.append(f'  {name}: {{roles: [{role}], key: "{public_key_text(key)}"}}')
        self.path = make_workspace(root / "ws", extra=config + "\n".join(operators) + "\n")
        for path, text in files.items():
            (self.path / path).write_text(text, encoding="utf-8")
        self.env = _env(example, VAULTLINE_API_KEY=KEY, IRCTL_KEY_DIR=str(self.keys))

    def irctl(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        done = irctl(*args, cwd=self.path, env={**self.env, **env})
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    def start(self, argv: list[str]) -> str:
        """Start a run; it freezes and waits for the transfer's approvals (exit 3)."""
        key = ["--key", str(self.keys / "oncall.key")] if "tabletop" not in argv else []
        started = self.irctl(*argv, *key, "--yes", "--unattended")
        assert started.returncode == 3, started.stdout + started.stderr
        return run_id_from(started)

    def approve(self, run_id: str) -> None:
        for who in ("bob", "carol"):
            done = self.irctl("approve", run_id, "move-to-cold", "--as", who, "--yes")
            assert done.returncode == 0, done.stdout + done.stderr

    def steps(self, run_id: str) -> dict[str, dict[str, Any]]:
        status = self.irctl("status", run_id, "--json")
        assert status.returncode == 0, status.stderr
        return {s["step"]: s for s in json.loads(status.stdout)["steps"]}

    def events(self, run_id: str) -> list[dict[str, Any]]:
        done = self.irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-")
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def ws(tmp_path: Path, example: Path, vaultline: Any) -> Workspace:
    return Workspace(tmp_path, example, vaultline)


# -- the page ------------------------------------------------------------------------------


def test_every_code_block_of_the_guide_is_part_of_the_example() -> None:
    unmarked = [text.splitlines()[0] for lang, text in _blocks()
                if lang in ("python", "toml", "yaml") and not MARKER.match(text)]  # fmt: skip
    assert unmarked == []
    files = _example()
    assert sorted(files["file"]) == [
        "irctl_vaultline/__init__.py", "irctl_vaultline/_api.py", "irctl_vaultline/actions.py",
        "irctl_vaultline/testing.py", "pyproject.toml", "tests/test_vaultline.py",
    ]  # fmt: skip
    assert sorted(files["workspace"]) == ["irctl.yaml", "runbooks/vaultline-hot-vault.yaml"]


def test_the_guide_shows_the_commands_this_test_runs() -> None:
    shown = {line.split("  #", 1)[0].strip() for lang, text in _blocks() if lang == "sh"
             for line in text.splitlines()}  # fmt: skip
    for argv in (
        ["validate", "--check-integrations"],
        [*LIVE, "--key", "~/.config/irctl/keys/oncall.key"],  # here: the test's key file
        ["approve", "RUN_ID", "move-to-cold", "--as", "bob"],
        ["approve", "RUN_ID", "move-to-cold", "--as", "carol"],
        ["resume", "RUN_ID", "--as", "oncall"],
        TABLETOP,
    ):
        assert "irctl " + " ".join(argv) in shown


# -- installed and validated -----------------------------------------------------------------


def test_irctl_finds_the_integration_through_its_entry_point_and_checks_the_runbook(
    ws: Workspace, vaultline: Any
) -> None:
    done = ws.irctl("validate", "--check-integrations")
    assert (done.returncode, done.stdout) == (0, "2 files checked, 0 problems\n"), done.stderr
    assert ("GET", "/v1/whoami") in vaultline.requests  # the readiness check asked Vaultline

    runbook = ws.path / "runbooks" / "vaultline-hot-vault.yaml"
    runbook.write_text(runbook.read_text().replace("destination:", "destnation:"))
    done = ws.irctl("validate", "--check-integrations")
    assert done.returncode == 2
    assert f"```text\n{done.stdout}```" in GUIDE.read_text(encoding="utf-8")  # as shown there

    done = irctl("validate", "--check-integrations", cwd=ws.path,
                 env={**ws.env, "PYTHONPATH": ""})  # fmt: skip  # not installed
    assert done.returncode == 2
    assert "no installed integration provides 'vaultline.*' actions" in done.stdout

    done = ws.irctl("validate", "--check-integrations", VAULTLINE_API_KEY="vk_not_the_key_00")
    assert done.returncode == 2
    assert "Vaultline refused the key in integrations.vaultline.api_key" in done.stdout
    assert "vk_not_the_key_00" not in done.stdout + done.stderr


# -- run -----------------------------------------------------------------------------------------


def test_a_live_run_freezes_at_once_and_transfers_once_after_two_approvals(
    ws: Workspace, vaultline: Any
) -> None:
    run_id = ws.start(LIVE)
    assert vaultline.vaults["vlt_hot_eth"].frozen
    assert vaultline.transfers == []  # waiting for treasury
    ws.approve(run_id)
    resumed = ws.irctl("resume", run_id, "--as", "oncall", "--unattended")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    (transfer,) = vaultline.transfers
    assert {k: transfer[k] for k in ("vault", "asset", "amount", "destination")} == {
        "vault": "vlt_hot_eth", "asset": "ETH", "amount": "1250.5", "destination": "cold_eth_main",
    }  # fmt: skip
    steps = ws.steps(run_id)
    assert steps["freeze-hot-vault"]["outputs"] == {
        "vault": "vlt_hot_eth", "frozen": True, "changed": True,
    }  # fmt: skip
    assert steps["move-to-cold"]["outputs"]["transfer_id"] == transfer["transfer_id"]
    assert vaultline.vaults["vlt_hot_eth"].reason.startswith("INC-42: hot vault compromise")
    verified = ws.irctl("transcript", "verify", run_id)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # the key the integration resolved itself is nowhere in the record
    record = b"".join(p.read_bytes() for p in (ws.path / ".irctl").rglob("*") if p.is_file())
    assert KEY.encode() not in record
    assert KEY not in json.dumps(ws.events(run_id))


def test_a_tabletop_drill_sends_nothing_and_needs_no_key(ws: Workspace, vaultline: Any) -> None:
    del ws.env["VAULTLINE_API_KEY"]  # a drill resolves no secret
    run_id = ws.start(TABLETOP)
    ws.approve(run_id)  # approvals are real in a drill
    resumed = ws.irctl("resume", run_id, "--as", "oncall", "--unattended")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    assert vaultline.requests == []
    steps = ws.steps(run_id)
    assert steps["freeze-hot-vault"]["outputs"]["would"] == (
        "pause withdrawals from Vaultline vault vlt_hot_eth"
    )
    assert steps["move-to-cold"]["outputs"]["would"] == (
        "move 1250.5 ETH from Vaultline vault vlt_hot_eth to cold_eth_main"
    )
    assert steps["move-to-cold"]["outputs"]["transfer_id"] is None


def test_a_kill_after_vaultline_made_the_transfer_is_settled_by_the_probe(
    ws: Workspace, vaultline: Any
) -> None:
    run_id = ws.start(LIVE)
    ws.approve(run_id)
    held = vaultline.hold("POST", "/v1/transfers")  # made, then the answer waits
    proc = subprocess.Popen(
        [IRCTL, "resume", run_id, "--as", "oncall", "--unattended"],
        cwd=ws.path, env={**ws.env, "IRCTL_WORKSPACE": str(ws.path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert held.arrived.wait(60), "irctl never sent the transfer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        held.release.set()
    assert proc.returncode == -signal.SIGKILL
    assert len(vaultline.transfers) == 1
    step = ws.steps(run_id)["move-to-cold"]
    assert (step["status"], step["in_doubt"]) == ("running", True), step

    resumed = ws.irctl("resume", run_id, "--as", "oncall", "--unattended")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    (transfer,) = vaultline.transfers
    assert vaultline.requests.count(("POST", "/v1/transfers")) == 1  # never sent again
    step = ws.steps(run_id)["move-to-cold"]
    assert (step["status"], step["outputs"]["transfer_id"]) == (
        "succeeded", transfer["transfer_id"],
    )  # fmt: skip
    resolved = [
        (e["data"]["by"], e["data"]["mark"])
        for e in ws.events(run_id)
        if e["type"] == "step.resolved" and e["data"]["step"] == "move-to-cold"
    ]
    assert resolved == [("probe", "done")]
    verified = ws.irctl("transcript", "verify", run_id)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- the example's own checks ------------------------------------------------------------------


def test_the_tests_the_guide_shows_pass(example: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=example, env=_env(example), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^\d+ passed in ", done.stdout.splitlines()[-1]), done.stdout


def test_the_guides_import_contract_holds_and_catches_an_internal_import(
    example: Path, tmp_path: Path
) -> None:
    def lint(root: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "lint-imports"), "--no-cache"], cwd=root, env=_env(root),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    done = lint(example)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 1 kept, 0 broken." in done.stdout

    broken = tmp_path / "broken"
    shutil.copytree(example, broken)
    api = broken / "irctl_vaultline" / "_api.py"
    api.write_text(api.read_text() + "\nfrom irctl.engine.engine import Engine  # noqa\n")
    done = lint(broken)
    assert done.returncode != 0
    assert "irctl_vaultline._api -> irctl.engine.engine" in done.stdout
