"""``irctl drill run|report|list``: the real command, the scorecard files, the HTML in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from irctl.drills.drill import drive_drill, find_drill, start_drill
from irctl.runbook.loader import load_runbook_text
from irctl.testing import ExchangeAdminStub
from tests.helpers import irctl
from tests.test_drills import (
    INITIATOR,
    SCORED_DRILL,
    SCORED_RUNBOOK,
    People,
    engine_for,
    make_drill_workspace,
)

QUICK_RUNBOOK = """\
irctl: 1
kind: runbook
id: quick
title: Quick
objectives:
  contain: 5m
steps:
  - id: halt
    action: testing.record
    tags: [contain]
    with: {path: "/nonexistent/quick", key: halt}
  - id: tell
    action: notify.console
    with: {message: "halted"}
"""
QUICK_DRILL = """\
irctl: 1
kind: drill
id: quick-drill
title: Quick drill
runbook: quick
injects:
  - {at: 0s, say: "Alert: the quick scenario starts"}
objectives:
  - {step: halt, within: 1m}
"""
HALT_RUNBOOK = """\
irctl: 1
kind: runbook
id: halt
title: Halt
secrets: {admin_token: env:DRILL_ADMIN_TOKEN}
steps:
  - id: halt-withdrawals
    action: http.request
    with:
      method: POST
      url: "{{ vars.exchange_admin_url }}/withdrawals/halt"
      headers: {Authorization: "Bearer {{ secrets.admin_token }}"}
      json: {chain: ethereum}
"""
SANDBOX_DRILL = """\
irctl: 1
kind: drill
id: sandboxed
title: Sandboxed halt
runbook: halt
mode: sandbox
objectives:
  - {step: halt-withdrawals, within: 1m}
"""


@pytest.fixture
def exchange() -> ExchangeAdminStub:
    with ExchangeAdminStub("tok") as stub:
        yield stub


def _scored_run(ws_path: Path, exchange: ExchangeAdminStub, *, delay: float) -> str:
    from irctl.workspace import Workspace

    ws = Workspace.find(ws_path)
    team = TEAMS[str(ws_path)]
    drill, _ = find_drill(ws.drills_dir, "scored-drill")
    engine = engine_for(ws)
    model = load_runbook_text(SCORED_RUNBOOK, "scored.yaml")
    run_id = start_drill(engine, drill, model, SCORED_RUNBOOK, initiator=INITIATOR,
                         time_scale=0.01)  # fmt: skip
    with People(ws, run_id, team, delay=delay):
        state = drive_drill(engine, run_id, say=lambda _: None, time_limit=30, poll=0.1)
    assert state.status == "succeeded"
    ws.store.close()
    return run_id


TEAMS: dict[str, object] = {}


@pytest.fixture
def scored_ws(tmp_path: Path, exchange: ExchangeAdminStub) -> Path:
    ws, team = make_drill_workspace(
        tmp_path / "ws", exchange_url=exchange.url,
        runbooks={"scored": SCORED_RUNBOOK, "quick": QUICK_RUNBOOK, "halt": HALT_RUNBOOK},
        drills={"scored-drill": SCORED_DRILL, "quick-drill": QUICK_DRILL,
                "sandboxed": SANDBOX_DRILL},
    )  # fmt: skip
    TEAMS[str(ws.root)] = team
    return ws.root


# -- a tiny PNG reader (zlib only) --------------------------------------------------------------


def read_png(path: Path) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and pixels of an 8-bit RGB/RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = colour = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8
    assert colour in (2, 6)  # RGB or RGBA
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    offset = 0
    for _ in range(height):
        kind = raw[offset]
        line = bytearray(raw[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                best = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + best) & 0xFF
        rows.append(line)
        previous = line
    pixels = [tuple(row[i : i + 3]) for row in rows for i in range(0, stride, channels)]
    return width, height, pixels


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


# -- the tests ----------------------------------------------------------------------------------


def test_report_writes_markdown_and_html_that_renders(
    scored_ws: Path, exchange: ExchangeAdminStub, tmp_path: Path
) -> None:
    first = _scored_run(scored_ws, exchange, delay=1.5)
    second = _scored_run(scored_ws, exchange, delay=0.2)  # the team got faster
    out = tmp_path / "reports"
    result = irctl("drill", "report", second, "-o", str(out), "--json", cwd=scored_ws)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["drill"] == "scored-drill"
    assert [row["run_id"] for row in report["trend"]] == [first, second]
    assert report["direction"].startswith("falling")
    md = Path(report["markdown"]).read_text(encoding="utf-8")
    page_path = Path(report["html"])
    page = page_path.read_text(encoding="utf-8")
    for text in (first, second, "time to contain", "treasury-0", "What to improve", "MISSED"):
        assert text in md, text
    assert "http://" not in page
    assert "https://" not in page
    assert "<svg" in page
    assert "<script" not in page
    assert not any(ref in page for ref in ("src=", "href=", "url(", "@import"))

    shot = tmp_path / "shot.png"
    rendered = chromium(
        f"--screenshot={shot}", "--window-size=1280,1400", page_path.as_uri(),
        profile=tmp_path / "profile",
    )  # fmt: skip
    assert shot.is_file(), rendered.stderr[-2000:]
    width, height, pixels = read_png(shot)
    assert (width, height) == (1280, 1400)
    colours = set(pixels)
    not_white = sum(1 for p in pixels if p != (255, 255, 255))
    assert len(colours) > 20  # text, bars in each colour, tables
    assert not_white > len(pixels) // 50
    assert (37, 99, 235) in colours  # the action bars of the timeline were drawn
    assert (234, 88, 12) in colours  # and the approval waits

    dom = chromium("--dump-dom", page_path.as_uri(), profile=tmp_path / "profile2").stdout
    card = report
    assert f"{card['met']} of {len(card['objectives'])}" in dom
    assert "objectives met" in dom
    assert "waiting on people" in dom
    assert "treasury-0" in dom
    assert second in dom
    assert first in dom
    assert "falling" in dom


def test_drill_run_command_runs_and_scores(scored_ws: Path) -> None:
    result = irctl("drill", "run", "quick-drill", "--as", INITIATOR, "--unattended",
                   cwd=scored_ws)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "🧪 DRILL quick-drill · T+0s · Alert: the quick scenario starts" in result.stderr
    run_id = next(t for t in result.stderr.split() if t.startswith("r-"))
    assert not Path("/nonexistent/quick").exists()
    report = irctl("drill", "report", run_id, cwd=scored_ws)
    assert report.returncode == 0, report.stderr
    assert "objectives met 2 of 2" in report.stdout
    assert (scored_ws / ".irctl" / "reports" / f"{run_id}-scorecard.html").is_file()
    listed = irctl("drill", "list", "--json", cwd=scored_ws)
    assert listed.returncode == 0, listed.stderr
    ids = [row["drill"] for row in json.loads(listed.stdout)]
    assert ids == ["quick-drill", "sandboxed", "scored-drill"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drill", "run", "quick-dril"], "did you mean 'quick-drill'?"),
        (["drill", "run", "sandboxed"], "--sandbox FILE"),
        (["drill", "run", "quick-drill", "--time-limit", "soon"], "--time-limit"),
        (["drill", "run", "quick-drill", "--time-scale", "0"], "time scale must be above 0"),
        (["drill", "report", "r-nope"], "no irctl store at"),  # reading never creates it
        (["drill", "report", "r-", "--last", "0"], "--last must be at least 1"),
        (["drill", "schedule", "quick-drill"], "has no schedule"),
        (["drill", "schedule", "quick-drill", "--at", "tomorrowish"], "is not a time"),
        (["drill", "unschedule", "quick-drill"], "is not scheduled"),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_2(
    scored_ws: Path, args: list[str], message: str
) -> None:
    result = irctl(*args, cwd=scored_ws, env={"IRCTL_OPERATOR": INITIATOR})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_sandbox_drill_runs_against_the_sandbox_only(
    scored_ws: Path, exchange: ExchangeAdminStub, tmp_path: Path
) -> None:
    with ExchangeAdminStub("sandbox-token") as sandbox:
        config = tmp_path / "sandbox.yaml"
        config.write_text(f"vars:\n  exchange_admin_url: {sandbox.url}\n", encoding="utf-8")
        env = {
            "IRCTL_OPERATOR": INITIATOR,
            "DRILL_ADMIN_TOKEN": "production-token-never-sent",  # the runbook's own reference
            "SANDBOX_ADMIN_TOKEN": "sandbox-token",
        }
        drill = ("drill", "run", "sandboxed", "--sandbox", str(config), "--unattended")
        refused = irctl(*drill, cwd=scored_ws, env=env)
        assert refused.returncode == 2, refused.stderr
        assert "a sandbox run never reads production secrets" in refused.stderr
        assert "admin_token" in refused.stderr
        assert sandbox.requests == []
        config.write_text(
            f"vars:\n  exchange_admin_url: {sandbox.url}\n"
            "secrets:\n  admin_token: env:SANDBOX_ADMIN_TOKEN\n",
            encoding="utf-8",
        )
        result = irctl(*drill, cwd=scored_ws, env=env)
        assert result.returncode == 0, result.stderr
        assert sandbox.halted == {"ethereum"}  # the sandbox's endpoint was used
        assert all(
            "production-token" not in str(r.headers.get("Authorization")) for r in sandbox.requests
        )
    assert exchange.requests == []  # the workspace's own endpoint never
    run_id = next(t for t in result.stderr.split() if t.startswith("r-"))
    status = json.loads(irctl("status", run_id, "--json", cwd=scored_ws).stdout)
    assert status["mode"] == "sandbox"


def test_report_of_a_run_that_is_not_a_drill(scored_ws: Path) -> None:
    env = {"IRCTL_OPERATOR": INITIATOR}
    run = irctl("run", "quick", "--mode", "tabletop", "--unattended", cwd=scored_ws, env=env)
    assert run.returncode == 0, run.stderr
    run_id = next(t for t in run.stderr.split() if t.startswith("r-"))
    result = irctl("drill", "report", run_id, cwd=scored_ws)
    assert result.returncode == 2
    assert "is not a drill" in result.stderr


@pytest.mark.parametrize("command", [["drill"], *[["drill", c] for c in (
    "list", "run", "schedule", "unschedule", "report")], ["scheduler", "run"]])  # fmt: skip
def test_drill_commands_have_help(command: list[str], tmp_path: Path) -> None:
    result = irctl(*command, "--help", cwd=tmp_path, env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_help_stays_light() -> None:
    code = (
        "import sys; from irctl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('apscheduler', 'sqlalchemy', "
        "'irctl.drills.drill', 'irctl.drills.scheduler') "
        "if m in sys.modules]\nprint(heavy)"
    )
    env = {k: v for k, v in os.environ.items() if k != "IRCTL_DEBUG"}
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert found.stdout.strip().splitlines()[-1] == "[]", found.stdout + found.stderr
