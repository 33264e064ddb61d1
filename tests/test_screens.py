"""The live view waiting for approval, in a real terminal at 80 and 160 columns, is what
``docs/screens/`` shows (tests/screens.py captures it with tmux): for what it waits, who may
approve, the digest and the exact command, nothing cut at 80 columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.screens import WIDTHS, capture, make_workspace, normalised, screen_file


@pytest.mark.parametrize("width", WIDTHS)
def test_the_live_view_waiting_for_approval_is_the_documented_screen(
    tmp_path: Path, width: int
) -> None:
    shown = capture(make_workspace(tmp_path / "ws"), width)
    documented = screen_file(width).read_text(encoding="utf-8")
    assert normalised(shown) == normalised(documented)
    assert all(len(line) <= width for line in shown.splitlines())
    flat = " ".join(shown.split())
    run_id = re.search(r"r-\d{8}-\d{6}-[0-9a-f]{6}", shown)
    assert run_id is not None
    assert "waiting for approval lead-two (0/2, digest" in flat
    assert "may approve: alice, bob" in flat
    assert f"irctl approve {run_id.group()} halt --as YOU" in flat  # whole, to copy
