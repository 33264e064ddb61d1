"""irctl beside Chaos Toolkit and ansible-core: `make bench-peers` prints one table of ratios.

The same two workloads run under each tool, as its own command line runs them:

* **no-op**: N steps that do nothing.  irctl: a runbook of N ``wait.sleep`` steps of 0 s, its
  cheapest built-in action (the bench's own ``bench.noop`` is not installed for the CLI);
  Chaos Toolkit: an experiment whose method is N python-provider actions calling a function
  that returns None; ansible: a play against localhost (``connection: local``, no facts) of N
  ``ansible.builtin.debug`` tasks.
* **true**: N steps that each run ``true``.  irctl: ``shell.exec`` with argv ["true"]; Chaos
  Toolkit: the process provider; ansible: ``ansible.builtin.command: "true"``.

For each tool: *startup* is the wall time of a 1-step no-op run; *per step* is the slope between
two sizes of a workload, so startup cancels; *peak RSS* is the largest resident set that any
process of the tool's tree reached (``os.wait4``'s ``ru_maxrss``, which covers the child and every
descendant it waited for), the largest over a repetition's runs.  Every run of every tool is
interleaved in one loop, the order of the tools rotating each repetition, and the table shows the
medians over the repetitions.

This process imports only the standard library and stays small: Linux carries a parent's peak
into a child's ``ru_maxrss`` across fork+exec, so the figures cannot go below this process's own
peak, which the notes print.  The peers come from ``.venv-peers`` (bench/peers-requirements.txt);
nothing here reaches the network (Chaos Toolkit's version check is turned off).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_BIN = Path(sys.executable).parent
RUN_TIMEOUT = 600.0  # seconds: a run that takes longer than this has hung


class BenchError(Exception):
    """A tool could not be set up, or a run did not do what it was asked: no table is printed."""


@dataclass
class Outcome:
    seconds: float
    cpu: float  # user + system seconds of the whole tree
    peak_kb: int
    returncode: int
    stdout: str
    stderr: str


def run_measured(argv: list[str], cwd: Path, env: dict[str, str]) -> Outcome:
    """Wall time and peak RSS of one command and its whole process tree."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        watchdog = threading.Timer(RUN_TIMEOUT, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Outcome(
            seconds,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss,
            process.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def tail(text: str, lines: int = 12) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "IRCTL_DEBUG"):
        env.pop(name, None)
    return {**env, "LC_ALL": "C.UTF-8", "NO_COLOR": "1"}


@dataclass
class Tool:
    """One contender: where its files go, how it is called, how a run proves it did the work."""

    name: str
    root: Path
    env: dict[str, str] = field(default_factory=clean_env)

    def write(self, kind: str, n: int) -> None:
        raise NotImplementedError

    def argv(self, kind: str, n: int) -> list[str]:
        raise NotImplementedError

    def problem(self, kind: str, n: int, outcome: Outcome) -> str | None:
        """Why this run does not count, or None when it ran its N steps and succeeded."""
        raise NotImplementedError

    def run(self, kind: str, n: int) -> Outcome:
        outcome = run_measured(self.argv(kind, n), self.root, self.env)
        why = self.problem(kind, n, outcome)
        if why is not None:
            raise BenchError(
                f"{self.name}: the {n}-step {kind} run {why} (exit {outcome.returncode}):\n"
                f"{tail(outcome.stdout + outcome.stderr)}"
            )
        return outcome


class Irctl(Tool):
    def __init__(self, root: Path) -> None:
        super().__init__("irctl", root)
        self.exe = str(PROJECT_BIN / "irctl")
        self.env["IRCTL_WORKSPACE"] = str(root)
        done = subprocess.run(
            [self.exe, "init", str(root)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"irctl init failed:\n{tail(done.stdout + done.stderr)}")

    def write(self, kind: str, n: int) -> None:
        if kind == "no-op":
            step = "action: wait.sleep, with: {seconds: 0}"
        else:
            step = 'action: shell.exec, with: {argv: ["true"]}'
        steps = "".join(f"  - {{id: s{i}, {step}}}\n" for i in range(n))
        text = f"irctl: 1\nkind: runbook\nid: {kind}-{n}\ntitle: {kind} x {n}\nsteps:\n{steps}"
        (self.root / "runbooks" / f"{kind}-{n}.yaml").write_text(text, encoding="utf-8")

    def argv(self, kind: str, n: int) -> list[str]:
        return [self.exe, "run", f"{kind}-{n}", "--yes", "--unattended", "--no-wait"]

    def problem(self, kind: str, n: int, outcome: Outcome) -> str | None:
        if outcome.returncode != 0:
            return "failed"
        done = len(re.findall(r"^\S+ s\d+: succeeded$", outcome.stderr, re.MULTILINE))
        if done != n or not re.search(r"^run r-\S+ succeeded$", outcome.stderr, re.MULTILINE):
            return f"reported {done} steps succeeded"
        return None


class Chaos(Tool):
    def __init__(self, root: Path, peers: Path) -> None:
        super().__init__("chaostoolkit", root)
        root.mkdir(parents=True)
        self.exe = str(peers / "bin" / "chaos")
        # the python provider imports this module; an empty settings file: no notifications
        (root / "benchnoop.py").write_text("def noop():\n    return None\n", encoding="utf-8")
        (root / "settings.yaml").write_text("{}\n", encoding="utf-8")
        self.env["PYTHONPATH"] = str(root)

    def write(self, kind: str, n: int) -> None:
        if kind == "no-op":
            provider = {"type": "python", "module": "benchnoop", "func": "noop"}
        else:
            provider = {"type": "process", "path": "true"}
        experiment = {
            "version": "1.0.0",
            "title": f"{kind} x {n}",
            "description": f"{n} steps of {kind}",
            "method": [{"type": "action", "name": f"s{i}", "provider": provider} for i in range(n)],
        }
        (self.root / f"{kind}-{n}.json").write_text(json.dumps(experiment), encoding="utf-8")

    def argv(self, kind: str, n: int) -> list[str]:
        return [
            self.exe, "--no-version-check", "--settings", str(self.root / "settings.yaml"),
            "run", "--journal-path", str(self.root / "journal.json"), f"{kind}-{n}.json",
        ]  # fmt: skip

    def problem(self, kind: str, n: int, outcome: Outcome) -> str | None:
        if outcome.returncode != 0:
            return "failed"
        journal = json.loads((self.root / "journal.json").read_text(encoding="utf-8"))
        done = sum(1 for entry in journal.get("run", []) if entry.get("status") == "succeeded")
        if journal.get("status") != "completed" or done != n:
            return f"ended {journal.get('status')!r} with {done} activities succeeded"
        return None


class Ansible(Tool):
    def __init__(self, root: Path, peers: Path) -> None:
        super().__init__("ansible-core", root)
        root.mkdir(parents=True)
        self.exe = str(peers / "bin" / "ansible-playbook")
        (root / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
        self.env.update(
            ANSIBLE_CONFIG=str(root / "ansible.cfg"),  # not a config found elsewhere
            ANSIBLE_HOME=str(root / "home"),
            ANSIBLE_LOCAL_TEMP=str(root / "home" / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(root / "home" / "remote"),
            # the interpreter given, as a configured inventory would: no discovery on each run
            ANSIBLE_PYTHON_INTERPRETER=str(peers / "bin" / "python"),
            ANSIBLE_NOCOLOR="1",
        )

    def write(self, kind: str, n: int) -> None:
        if kind == "no-op":
            tasks = [{"name": f"s{i}", "ansible.builtin.debug": {"msg": f"s{i}"}} for i in range(n)]
        else:
            tasks = [{"name": f"s{i}", "ansible.builtin.command": "true"} for i in range(n)]
        play = {"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}
        (self.root / f"{kind}-{n}.yml").write_text(json.dumps([play]), encoding="utf-8")

    def argv(self, kind: str, n: int) -> list[str]:
        return [self.exe, "-i", "localhost,", f"{kind}-{n}.yml"]

    def problem(self, kind: str, n: int, outcome: Outcome) -> str | None:
        if outcome.returncode != 0:
            return "failed"
        recap = re.search(r"^localhost\s+: ok=(\d+).*failed=(\d+)", outcome.stdout, re.MULTILINE)
        if recap is None or int(recap[1]) != n or int(recap[2]) != 0:
            return f"recapped {recap[0] if recap else 'nothing'}"
        return None


def peer_versions(peers: Path) -> dict[str, str]:
    """The installed versions of the peers, or BenchError saying what is missing."""
    python = peers / "bin" / "python"
    missing = [p for p in (python, peers / "bin" / "chaos", peers / "bin" / "ansible-playbook")
               if not p.exists()]  # fmt: skip
    if missing:
        raise BenchError(
            f"not installed: {', '.join(map(str, missing))} (`make bench-peers` installs "
            "bench/peers-requirements.txt into .venv-peers)"
        )
    code = (
        "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
        "('chaostoolkit', 'chaostoolkit-lib', 'ansible-core')}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"cannot read the peers' versions:\n{tail(done.stderr, 3)}")
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def irctl_version() -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('irctl'))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip() or "?"


def own_peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.2f} ms"


@dataclass
class Figures:
    """A tool's medians: startup and per-step seconds, peak RSS in MB; which are unsure."""

    startup: float
    noop: float
    true: float
    rss: float
    unsure: frozenset[str] = frozenset()  # "noop", "true": the repetitions disagree

    def cells(self, base: Figures | None) -> list[str]:
        values = (self.startup, self.noop, self.true, self.rss)
        texts = [fmt_time(v) for v in values[:3]] + [f"{self.rss:.0f} MB"]
        texts = [
            f"~{t}" if name in self.unsure else t
            for name, t in zip(("startup", "noop", "true", "rss"), texts, strict=True)
        ]
        if base is None:
            return texts
        refs = (base.startup, base.noop, base.true, base.rss)
        return [
            f"{t} ({v / r:.2f}×)" if v > 0 and r > 0 else f"{t} (n/a)"
            for t, v, r in zip(texts, values, refs, strict=True)
        ]


def unsure(slopes: list[float]) -> bool:
    """Whether the slopes of the repetitions spread (median absolute deviation) by more than
    a third of their median: a figure then tells an order of magnitude, no more."""
    middle = statistics.median(slopes)
    spread = statistics.median(abs(x - middle) for x in slopes)
    return middle <= 0 or spread > middle / 3


def measure(
    tools: list[Tool], sizes: dict[str, list[int]], repeat: int, began: float
) -> dict[str, Figures]:
    """Every run of every tool interleaved, ``repeat`` times; the medians of each tool.

    A tool's two sizes of a workload run back to back, so that both meet the same load on a
    shared machine, and the slope is taken in each repetition: the figure is their median.
    """
    # one repetition: the startup run, then each workload at its two sizes
    plan = [("no-op", [1]), *sizes.items()]
    for tool in tools:
        for kind, ns in [*plan, ("true", [1])]:
            for n in ns:
                tool.write(kind, n)
    for tool in tools:  # warm the file cache and each tool's own caches; not counted
        tool.run("no-op", 1)
        tool.run("true", 1)
    runs: dict[tuple[str, str, int], list[Outcome]] = {}
    slopes: dict[tuple[str, str], list[float]] = {}
    peaks: dict[str, list[int]] = {tool.name: [] for tool in tools}
    for rep in range(repeat):
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]  # who goes first rotates
        peak = dict.fromkeys(peaks, 0)
        for kind, ns in plan:
            for tool in order:
                done = [tool.run(kind, n) for n in ns]
                for n, outcome in zip(ns, done, strict=True):
                    runs.setdefault((tool.name, kind, n), []).append(outcome)
                    peak[tool.name] = max(peak[tool.name], outcome.peak_kb)
                if len(ns) == 2:
                    slope = (done[1].seconds - done[0].seconds) / (ns[1] - ns[0])
                    slopes.setdefault((tool.name, kind), []).append(slope)
        for name, kb in peak.items():
            peaks[name].append(kb)
        print(
            f"  repetition {rep + 1}/{repeat} done after {time.perf_counter() - began:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    figures: dict[str, Figures] = {}
    for tool in tools:
        startup = statistics.median(o.seconds for o in runs[(tool.name, "no-op", 1)])
        noop, true = (statistics.median(slopes[(tool.name, kind)]) for kind in ("no-op", "true"))
        rss = statistics.median(peaks[tool.name]) / 1024
        doubtful = frozenset(
            name
            for name, kind in (("noop", "no-op"), ("true", "true"))
            if unsure(slopes[(tool.name, kind)])
        )
        figures[tool.name] = Figures(startup, noop, true, rss, doubtful)
        for kind, ns in plan:
            for n in ns:
                wall = [o.seconds for o in runs[(tool.name, kind, n)]]
                cpu = [o.cpu for o in runs[(tool.name, kind, n)]]
                print(
                    f"  measured: {tool.name} {kind} × {n}: wall {statistics.median(wall):.3f} s "
                    f"(from {min(wall):.3f} to {max(wall):.3f}), "
                    f"CPU {statistics.median(cpu):.3f} s",
                    file=sys.stderr,
                )
            if len(ns) == 2:
                each = ", ".join(f"{x * 1000:.2f}" for x in slopes[(tool.name, kind)])
                print(f"  measured: {tool.name} {kind}, ms per step: {each}", file=sys.stderr)
    return figures


def table(figures: dict[str, Figures], versions: dict[str, str]) -> str:
    header = ["tool", "startup", "per step, no-op", "per step, true", "peak RSS"]
    lines = [header]
    for name, row in figures.items():
        base = None if name == "irctl" else figures["irctl"]
        lines.append([f"{name} {versions[name]}", *row.cells(base)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    lines.insert(1, ["-" * w for w in widths])
    rendered = []
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        rendered.append("  ".join(cells))
    return "\n".join(rendered)


NOTES = """\
(×) a peer's figure over irctl's: above 1 the peer costs more.  Medians of {repeat} interleaved
repetitions.  Startup: a 1-step no-op run, wall time of the whole command.  Per step: the
slope between {noop[0]} and {noop[1]} no-op steps, and between {true[0]} and {true[1]} `true` steps;
each pair runs back to back and its slope is taken in each repetition (stderr lists them).
Peak RSS: the largest resident set of any one process of the tool's tree (processes running at
once are not added), the largest over a repetition's runs; this bench's own peak, a floor under
every figure: {floor:.0f} MB.

What each step is:
  irctl         `irctl run --yes --unattended` (a live run) in a workspace made by `irctl init`;
                no-op: wait.sleep of 0 s; true: shell.exec argv ["true"], output captured.
                Durable: each step's transitions are hash-chained journal events committed
                to SQLite with fsync before the next step starts, and the run ends with a
                checkpoint signed by the installation key.
  chaostoolkit  `chaos run` of an experiment whose method holds N actions; no-op: a python
                provider calling a function that returns None; true: the process provider.
                Not durable: the journal is held in memory and written once, as JSON without
                fsync, when the experiment ends.
  ansible-core  `ansible-playbook` of one play against localhost, connection local, no facts;
                no-op: ansible.builtin.debug; true: ansible.builtin.command.  Not durable:
                nothing is recorded but the output.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--peers",
        type=Path,
        default=ROOT / ".venv-peers",
        help="the venv holding chaostoolkit and ansible-core",
    )
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (medians over them)")
    parser.add_argument(
        "--no-op",
        type=int,
        nargs=2,
        default=(20, 500),
        metavar=("N1", "N2"),
        help="the two sizes of the no-op workload that the per-step slope is taken between "
        "(the wider apart, the less the noise of startup weighs on the slope)",
    )
    parser.add_argument(
        "--true",
        type=int,
        nargs=2,
        default=(10, 100),
        metavar=("N1", "N2"),
        help="the two sizes of the `true` workload (ansible takes ~0.5 s a step here)",
    )
    args = parser.parse_args()
    sizes = {"no-op": sorted(set(args.no_op)), "true": sorted(set(args.true))}
    if any(len(pair) != 2 or pair[0] < 1 for pair in sizes.values()) or args.repeat < 1:
        parser.error("each workload needs two different sizes of at least 1, and --repeat ≥ 1")
    if shutil.which("true") is None:
        raise BenchError("`true` is not on PATH")
    began = time.perf_counter()
    peers = args.peers.resolve()
    versions = {**peer_versions(peers), "irctl": irctl_version()}
    with tempfile.TemporaryDirectory(prefix="irctl-bench-peers-") as folder:
        tmp = Path(folder)
        tools = [Irctl(tmp / "irctl"), Chaos(tmp / "chaos", peers), Ansible(tmp / "ansible", peers)]
        figures = measure(tools, sizes, args.repeat, began)
    print()
    print(table(figures, versions))
    if any(row.unsure for row in figures.values()):
        print(
            "\n~ the repetitions' slopes disagree (they spread by more than a third of the "
            "figure, or it is\n  not above zero): the machine was busy, the figure tells an "
            "order of magnitude at most.\n  Widen the sizes (--no-op, --true) or repeat more "
            "(--repeat)."
        )
    print()
    print(
        NOTES.format(
            repeat=args.repeat, floor=own_peak_kb() / 1024, noop=sizes["no-op"], true=sizes["true"]
        )
    )
    print(
        f"{os.cpu_count()} cores · Python {sys.version.split()[0]} · chaostoolkit-lib "
        f"{versions['chaostoolkit-lib']} · bench-peers took {time.perf_counter() - began:.0f} s"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench-peers: {exc}", file=sys.stderr)
        sys.exit(1)
