"""The live view of a run waiting for approval, as a terminal shows it, captured with tmux.

``irctl run`` runs in a real terminal (a tmux pane of a given width), attached, until its
gated step waits for two security leads; the pane is then captured (``tmux capture-pane``).
``docs/screens/`` holds those captures at 80 and 160 columns; tests/test_screens.py captures
them again and compares, the run id, digest and timings aside.  To write them anew::

    .venv/bin/python -m tests.screens
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from irctl.identity import generate_private_key, public_key_text

DOCS = Path(__file__).resolve().parent.parent / "docs" / "screens"
WIDTHS = (80, 160)
HEIGHT = 16
IRCTL = str(Path(sys.executable).parent / "irctl")

RUNBOOK = """\
irctl: 1
id: halt-withdrawals
title: Halt withdrawals on every venue
approvals:
  lead-two:
    quorum: 2
    roles: [security-lead]
steps:
  - id: open-incident
    action: notify.console
    with: {message: "incident opened: hot wallet outflows"}
  - id: halt
    action: notify.console
    approval: lead-two
    with: {message: "withdrawals halted on every venue"}
  - id: tell
    action: notify.console
    with: {message: "treasury told"}
"""

OPERATORS = {"dave": "security-oncall", "alice": "security-lead", "bob": "security-lead"}


def screen_file(width: int) -> Path:
    return DOCS / f"live-waiting-for-approval-{width}.txt"


def make_workspace(root: Path) -> Path:
    """irctl.yaml with an on-call engineer and two leads, each keyed, and the runbook."""
    (root / "runbooks").mkdir(parents=True)
    installation = generate_private_key(root / ".irctl" / "installation.key")
    lines = ["store: sqlite:///.irctl/irctl.db",
             f'installation_key: "{public_key_text(installation)}"', "operators:"]  # fmt: skip
    for name, role in OPERATORS.items():
        key = public_key_text(generate_private_key(root / "keys" / f"{name}.key"))
        lines.append(f'  {name}: {{roles: [{role}], key: "{key}"}}')
    (root / "irctl.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "runbooks" / "halt-withdrawals.yaml").write_text(RUNBOOK, encoding="utf-8")
    return root


def capture(root: Path, width: int, *, timeout: float = 60.0) -> str:
    """The pane of an attached live run at ``width`` columns once it waits for approval."""
    tmux = shutil.which("tmux")
    if tmux is None:
        raise RuntimeError("tmux is not installed (scripts/ensure-chromium installs it)")
    session = f"irctl-screen-{width}-{time.monotonic_ns()}"
    # the terminal's own size, not a COLUMNS the caller (pytest, a CI) may have exported
    command = (f"cd {shlex.quote(str(root))} && env -u COLUMNS -u LINES IRCTL_KEY_DIR=keys "
               f"{shlex.quote(IRCTL)} run halt-withdrawals --as dave --yes; sleep 600")  # fmt: skip
    socket = ["-L", session]  # a server of its own: nothing shared with a user's tmux
    subprocess.run([tmux, *socket, "-f", "/dev/null", "new-session", "-d", "-x", str(width),
                    "-y", str(HEIGHT), "-s", session, command], check=True, timeout=30)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            shown = subprocess.run([tmux, *socket, "capture-pane", "-p", "-t", session],
                                   check=True, capture_output=True, text=True,
                                   timeout=30).stdout  # fmt: skip
            if "--as YOU" in shown and "note: incident opened" in shown:
                time.sleep(0.5)  # let the view finish drawing this refresh
                again = subprocess.run([tmux, *socket, "capture-pane", "-p", "-t", session],
                                       check=True, capture_output=True, text=True,
                                       timeout=30).stdout  # fmt: skip
                return "\n".join(line.rstrip() for line in again.rstrip().splitlines()) + "\n"
            if time.monotonic() > deadline:
                raise AssertionError(f"the live view never showed the approval:\n{shown}")
            time.sleep(0.2)
    finally:
        subprocess.run([tmux, *socket, "kill-server"], check=False, capture_output=True)


def normalised(screen: str) -> str:
    """The screen with what differs between runs made constant: run ids, digests, timings."""
    screen = re.sub(r"r-\d{8}-\d{6}-[0-9a-f]{6}", "r-YYYYMMDD-HHMMSS-XXXXXX", screen)
    screen = re.sub(r"digest\s+[0-9a-f]{12}", "digest DIGEST", screen)
    return re.sub(r"\b\d+\.\ds\b", "N.Ns", screen)


def main() -> None:
    import tempfile

    DOCS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        for width in WIDTHS:
            root = make_workspace(Path(folder) / f"ws{width}")
            screen_file(width).write_text(capture(root, width), encoding="utf-8")
            print(f"wrote {screen_file(width)}")


if __name__ == "__main__":
    main()
