"""A full disk under the SQLite store, on a real small filesystem (tmpfs, 2 MiB): the run
stops with exit 74 naming the database file, every event before it is intact, and once
there is room again ``irctl resume`` finishes the run, each step's effect once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from irctl.testing import recorded_keys
from tests.helpers import irctl, make_workspace

STEPS = 60
# Each step's inputs and outputs carry a 6,000-character key rendered at run time (the
# runbook text recorded in run.created stays small): 60 steps need far more room than the
# filesystem leaves the store.
BIG = """\
irctl: 1
kind: runbook
id: big
title: Steps with large inputs
params:
  out: {type: string}
steps:
""" + "".join(
    f"  - id: s{n:02d}\n"
    "    action: testing.record\n"
    f'    with: {{path: "{{{{ params.out }}}}", key: "s{n:02d}-{{{{ \'x\' * 6000 }}}}"}}\n'
    for n in range(STEPS)
)
ROOM = 300 * 1024  # what is left free for the store when the run starts


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: cannot make a small filesystem for the store")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"mounting a 2 MiB tmpfs is not permitted here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, check=False)
        if os.path.ismount(mount):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A file taking every byte of the filesystem but ``leave``."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for block in (1 << 16, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * block)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def test_a_full_disk_stops_the_run_with_74_and_it_resumes_when_there_is_room(
    small_disk: Path, tmp_path: Path
) -> None:
    ws = make_workspace(small_disk / "ws", {"big": BIG})
    db = ws / ".irctl" / "irctl.db"
    effects = tmp_path / "effects.txt"  # not on the small disk
    filler = _fill(small_disk, ROOM)

    run = irctl("run", "big", "-p", f"out={effects}", "--yes", cwd=ws)
    assert run.returncode == 74, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    (error,) = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert f"the disk is full: {db} (database or disk is full)" in error
    assert "everything recorded before is kept: free space there, then 'irctl resume r-" in error
    listed = json.loads(irctl("runs", "list", "--json", cwd=ws).stdout)
    run_id = listed[0]["run_id"]
    assert f"cannot append to run {run_id}" in error
    done_before = recorded_keys(str(effects))
    assert 0 < len(done_before) < STEPS  # it stopped part way

    # What was stored before the disk filled is intact: every line re-hashes and chains; at
    # most the tail after the last checkpoint is unsealed (the disk had no room for a seal).
    checked = irctl("transcript", "verify", run_id, "--json", cwd=ws)
    report = json.loads(checked.stdout)
    assert report["events"] > 2 * len(done_before) - 2
    assert all("is not sealed" in problem for problem in report["problems"]), report["problems"]
    if report["problems"]:
        assert report["unsealed"] > 0

    filler.unlink()
    resumed = irctl("resume", run_id, cwd=ws)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    keys = recorded_keys(str(effects))
    assert sorted(keys) == sorted(f"s{n:02d}-{'x' * 6000}" for n in range(STEPS))  # each once
    verified = irctl("transcript", "verify", run_id, "--ended", cwd=ws)
    assert verified.returncode == 0, verified.stdout + verified.stderr
