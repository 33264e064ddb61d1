"""Proof of liabilities: build time and peak memory for 1,000,000 accounts × 5 assets.

``python bench/reserves.py`` prints the figures alone; ``bench/run.py`` adds them to its table.
The build runs in a child process (the library call ``irctl reserves build`` makes, with its two
worker processes); the peak is the largest sum of the resident memory of that child and its
workers, sampled every 20 ms.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACCOUNTS = 1_000_000
ASSETS = {"BTC": 8, "ETH": 18, "USDT": 6, "SOL": 9, "XRP": 6}


def write_liabilities(path: Path, accounts: int) -> None:
    rnd = random.Random(7)
    with path.open("w", encoding="utf-8") as out:
        out.write("account," + ",".join(ASSETS) + "\n")
        lines = []
        for number in range(accounts):
            lines.append(
                f"user-{number:08d},{rnd.randrange(10**9) / 10**8:.8f},"
                f"{rnd.randrange(10**4)}.{rnd.randrange(10**18):018d},"
                f"{rnd.randrange(10**8)}.{rnd.randrange(100):02d},{rnd.randrange(10**5)},0\n"
            )
            if len(lines) == 100_000:
                out.write("".join(lines))
                lines = []
        out.write("".join(lines))


def _tree_rss(pid: int) -> int:
    """Resident kB of a process and all its descendants."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text(encoding="ascii")
            children = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        pending.extend(int(child) for child in children.split())
    return total


def child(source: Path, output: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.reserves import build

    began = time.perf_counter()
    phases: dict[str, float] = {}

    def progress(what: str, done: int, total: int) -> None:
        phases.setdefault(what, time.perf_counter() - began)

    build(source, output, precisions=ASSETS, signing_key=Ed25519PrivateKey.generate(),
          progress=progress)  # fmt: skip
    print(json.dumps({"seconds": time.perf_counter() - began, "phases": phases}))


def bench_reserves(tmp: Path, accounts: int = ACCOUNTS) -> tuple[float, float, float]:
    """(build seconds, peak MB of the build's processes, seconds spent writing proof files)."""
    source = tmp / "liabilities.csv"
    write_liabilities(source, accounts)
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", str(source), str(tmp / "por")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.02)
    stdout, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"reserves build failed: exit {process.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    writing = result["seconds"] - result["phases"].get("writing proofs", result["seconds"])
    return result["seconds"], peak / 1024, writing


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else ACCOUNTS
        with tempfile.TemporaryDirectory() as folder:
            seconds, peak, writing = bench_reserves(Path(folder), count)
        print(f"{count:,} accounts × {len(ASSETS)} assets: {seconds:.1f} s "
              f"(writing proof files {writing:.1f} s), peak {peak:.0f} MB")  # fmt: skip
