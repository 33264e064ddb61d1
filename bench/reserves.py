"""Proof of liabilities: build time and peak memory for 1,000,000 accounts × 5 assets, in the
``bundle`` layout (the default, and the target) and in the ``files`` layout.

``python bench/reserves.py [ACCOUNTS] [--layout bundle|files]`` prints the figures alone, with
the time of each pass; ``bench/run.py`` adds them to its table.  Each build runs in a child
process (the library call ``irctl reserves build`` makes, with its two worker processes); the
peak is the largest sum of the resident memory of that child and its workers, sampled every
20 ms.  The liabilities file is written once, and each build's output removed before the next.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ACCOUNTS = 1_000_000
ASSETS = {"BTC": 8, "ETH": 18, "USDT": 6, "SOL": 9, "XRP": 6}
LAYOUTS = ("bundle", "files")


@dataclass(frozen=True)
class Built:
    """One build: its seconds, the peak MB of its processes, and the seconds of each pass."""

    seconds: float
    peak: float
    passes: dict[str, float]

    @property
    def writing(self) -> float:
        """Seconds from the first proof written to the end: the index sorted (``bundle``), the
        manifest signed."""
        return sum(self.passes.get(what, 0.0) for what in ("writing proofs", "sorting the index"))


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


def child(source: Path, output: Path, layout: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.reserves import build

    began = time.perf_counter()
    starts: dict[str, float] = {}

    def progress(what: str, done: int, total: int) -> None:
        starts.setdefault(what, time.perf_counter() - began)

    build(source, output, precisions=ASSETS, signing_key=Ed25519PrivateKey.generate(),
          layout=layout, progress=progress)  # fmt: skip
    seconds = time.perf_counter() - began
    names = [*starts, "end"]
    marks = [*starts.values(), seconds]
    passes = {name: marks[n + 1] - marks[n] for n, name in enumerate(names[:-1])}
    print(json.dumps({"seconds": seconds, "passes": passes}))


def _build(source: Path, output: Path, layout: str) -> Built:
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", str(source), str(output), layout],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.02)
    stdout, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"reserves build --layout {layout} failed: exit {process.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return Built(result["seconds"], peak / 1024, result["passes"])


def bench_reserves(
    tmp: Path, accounts: int = ACCOUNTS, layouts: tuple[str, ...] = LAYOUTS
) -> dict[str, Built]:
    """Each layout's build of ``accounts`` accounts, in the order given."""
    source = tmp / "liabilities.csv"
    write_liabilities(source, accounts)
    built = {}
    for layout in layouts:
        output = tmp / f"por-{layout}"
        built[layout] = _build(source, output, layout)
        shutil.rmtree(output)
    source.unlink()
    return built


def main(argv: list[str]) -> None:
    layouts = LAYOUTS
    if "--layout" in argv:
        at = argv.index("--layout")
        layouts = (argv[at + 1],)
        del argv[at : at + 2]
    count = int(argv[0]) if argv else ACCOUNTS
    with tempfile.TemporaryDirectory() as folder:
        built = bench_reserves(Path(folder), count, layouts)
    for layout, result in built.items():
        passes = ", ".join(f"{what} {t:.1f}" for what, t in result.passes.items())
        print(f"{count:,} accounts × {len(ASSETS)} assets, --layout {layout}: "
              f"{result.seconds:.1f} s, peak {result.peak:.0f} MB ({passes})")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        child(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    else:
        main(sys.argv[1:])
