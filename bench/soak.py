"""Team mode under load and faults: many ``irctl`` processes on one PostgreSQL, killed at random,
the database restarted under them, and what that cost counted afterwards.

``make soak`` (or ``python bench/soak.py [--runs N --steps N ...]``) starts a PostgreSQL of its
own (durable: ``fsync`` on, unlike the test suite's), a workspace whose runbook has ``--steps``
``shell.exec`` steps each appending ``RUN:STEP`` to a ledger file, one of them gated by a 2-of-3
approval of three security leads, and drives ``--runs`` runs to the end the way people would:

* ``irctl run`` starts each run (``--incident soak-N``), up to ``--workers`` processes at a time;
* approvers: ``irctl approve`` of each waiting run by two leads, with duplicates on purpose (the
  same lead twice, at once, in two processes) — a vote must count once;
* ``irctl resume`` takes up every run that is interrupted, or ready after its approvals, now and
  then twice at once (two people typing it): only one may execute the run;
* a step left in doubt by a kill is settled as its operator would: ``irctl resume --step S
  --mark done`` if the ledger holds its line, ``--mark retry`` if not;

while faults are injected: ``--kills`` SIGKILLs of random live ``irctl`` processes, and
``--restarts`` ``pg_ctl restart -m immediate`` of the database.  A probe appends to a run of
its own through :class:`irctl.journal.store.Store` every 20 ms, timing each commit, before the
faults and under them.

It then reads everything back and prints a table: runs completed, ledger lines written twice
(an effect executed twice: must be 0) or missing for a succeeded step (0), runs whose journal
fails verification (0), approvals recorded twice from one lead for one digest (0), gated steps
started with fewer than two distinct leads' approvals (0), kills and restarts made, steps per
second, and the p50/p99 commit latency of the probe.  Exit 1 when any of the zero rows is not
zero, so the short soak in the suite (tests/test_soak.py) fails on a broken lock.

Not (yet) in it: ``irctl serve`` replicas receiving Slack clicks, schedulers and their
failover, dependencies answering 429/503: see the README's team-mode section.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.postgres import PostgresServer, find_bindir  # noqa: E402

IRCTL = str(Path(sys.executable).parent / "irctl")
LEADS = ("lead1", "lead2", "lead3")
GATE = "gate"


@dataclass
class Settings:
    runs: int = 100
    steps: int = 20
    workers: int = 8
    kills: int = 50
    restarts: int = 2
    time_limit: float = 540.0
    seed: int = 7
    twice: float = 0.3  # how often an approval or a resume is sent twice at once


@dataclass
class Figures:
    completed: int = 0
    runs: int = 0
    double_effects: int = 0
    missing_effects: int = 0
    unverified: int = 0
    double_approvals: int = 0
    short_quorum: int = 0
    kills: int = 0
    restarts: int = 0
    processes: int = 0
    steps: int = 0
    seconds: float = 0.0
    commit_before: list[float] = field(default_factory=list)
    commit_under: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        zeros = (self.double_effects, self.missing_effects, self.unverified,
                 self.double_approvals, self.short_quorum)  # fmt: skip
        return not any(zeros) and self.completed == self.runs


class DurablePostgres(PostgresServer):
    """The test suite's server (``tests/postgres.py``), started with ``fsync`` on: the soak
    measures commits that survive a power cut, as a team's database makes them."""

    def _launch(self) -> None:
        from tests.postgres import START_TIMEOUT, free_port

        self.port = free_port()
        sock = self.base / "sock"
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={sock} -c max_connections=300")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", str(int(START_TIMEOUT)), "start")  # fmt: skip
        if not self._accepts_connections():
            raise RuntimeError(f"PostgreSQL did not start; see {self.log}")

    def restart_immediately(self) -> float:
        """``pg_ctl restart -m immediate`` (a crash: no checkpoint); seconds until it answers."""
        began = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "immediate",
                  "-w", "-t", "60", "restart")  # fmt: skip
        self._accepts_connections()
        return time.monotonic() - began


def runbook(steps: int, ledger: Path) -> str:
    lines = ["irctl: 1", "id: soak", "title: Soak", "approvals:",
             "  two-leads: {quorum: 2, roles: [security-lead]}", "steps:"]  # fmt: skip
    gate_at = steps // 2
    for number in range(1, steps + 1):
        step = GATE if number == gate_at else f"s{number:02d}"
        lines += [
            f"  - id: {step}",
            "    action: shell.exec",
            *(["    approval: two-leads"] if step == GATE else []),
            "    with:",
            f'      argv: ["sh", "-c", "echo \\"$RUN:{step}\\" >> {ledger}"]',
            '      env: {RUN: "{{ run.id }}"}',
        ]
    return "\n".join(lines) + "\n"


def make_workspace(root: Path, url: str, settings: Settings) -> Path:
    from irctl.identity import generate_private_key, public_key_text

    (root / "runbooks").mkdir(parents=True)
    installation = generate_private_key(root / ".irctl" / "installation.key")
    roles = {"oncall": "security-oncall", **dict.fromkeys(LEADS, "security-lead")}
    lines = [f"store: {url}", f'installation_key: "{public_key_text(installation)}"', "operators:"]
    for name, role in roles.items():
        key = public_key_text(generate_private_key(root / "keys" / f"{name}.key"))
        lines.append(f'  {name}: {{roles: [{role}], key: "{key}"}}')
    (root / "irctl.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = runbook(settings.steps, root / "ledger.txt")
    (root / "runbooks" / "soak.yaml").write_text(text, encoding="utf-8")
    return root


class Driver:
    """Drives every run to its end through the real ``irctl``, as a team would."""

    def __init__(self, root: Path, url: str, settings: Settings, figures: Figures) -> None:
        from irctl.journal.store import Store

        self.root, self.settings, self.figures = root, settings, figures
        self.store = Store.open(url, create=False)
        self.env = {**os.environ, "IRCTL_WORKSPACE": str(root), "IRCTL_KEY_DIR": str(root / "keys"),
                    "COLUMNS": "200"}  # fmt: skip
        self.env.pop("IRCTL_STORE", None)
        self.lock = threading.Lock()
        self.live: dict[int, subprocess.Popen[bytes]] = {}
        self.busy: set[str] = set()  # incidents a process is working on now
        self.random = random.Random(settings.seed)
        self.slots = threading.Semaphore(settings.workers)

    def spawn(self, incident: str, args: list[str]) -> None:
        """Run ``irctl ARGS`` in a thread; ``incident`` is busy until it exits."""

        def go() -> None:
            with self.slots:
                proc = subprocess.Popen([IRCTL, *args], cwd=self.root, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        stdin=subprocess.DEVNULL)  # fmt: skip
                with self.lock:
                    self.live[proc.pid] = proc
                    self.figures.processes += 1
                try:
                    proc.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                finally:
                    with self.lock:
                        self.live.pop(proc.pid, None)
                        self.busy.discard(incident)

        with self.lock:
            self.busy.add(incident)
        threading.Thread(target=go, daemon=True).start()

    def kill_one(self) -> bool:
        with self.lock:
            victims = list(self.live.values())
        if not victims:
            return False
        victim = self.random.choice(victims)
        try:
            os.kill(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.figures.kills += 1
        return True

    def ledger(self) -> Counter[str]:
        path = self.root / "ledger.txt"
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        return Counter(line for line in text.splitlines() if line)

    def step_once(self) -> int:
        """Start what each run needs next; the number of runs not yet ended."""
        from irctl.errors import IrctlError
        from irctl.journal.state import fold

        try:
            rows = {row.incident: row.id for row in self.store.runs()}
        except IrctlError:
            return self.settings.runs  # the database is restarting: look again soon
        ledger: Counter[str] | None = None
        open_runs = 0
        for number in range(self.settings.runs):
            incident = f"soak-{number:03d}"
            with self.lock:
                if incident in self.busy:
                    open_runs += 1
                    continue
            run_id = rows.get(incident)
            if run_id is None:
                open_runs += 1
                self.spawn(incident, ["run", "soak", "--yes", "--unattended", "--no-wait",
                                      "--as", "oncall", "--incident", incident])  # fmt: skip
                continue
            try:
                state = fold(self.store.events(run_id))
            except IrctlError:
                open_runs += 1
                continue
            if state.finished:
                continue
            open_runs += 1
            doubt = [s for s in state.steps.values() if s.waiting_for == "operator"]
            gate = state.steps.get(GATE)
            if doubt:
                ledger = ledger if ledger is not None else self.ledger()
                step = doubt[0].key
                mark = "done" if ledger[f"{run_id}:{step}"] else "retry"
                self.spawn(incident, ["resume", run_id, "--step", step, "--mark", mark, "--reason",
                                      "checked the ledger", "--as", "oncall"])  # fmt: skip
            elif gate is not None and gate.waiting_for == "approval" and len(gate.approvers) < 2:
                missing = [lead for lead in LEADS if lead not in gate.approvers]
                lead = self.random.choice(missing)
                self.spawn(incident, ["approve", run_id, GATE, "--as", lead, "--yes",
                                      "--reason", "soak"])  # fmt: skip
                if self.random.random() < self.settings.twice:  # the same lead again, at once
                    self.spawn(f"{incident}+", ["approve", run_id, GATE, "--as", lead, "--yes",
                                                "--reason", "soak, again"])  # fmt: skip
            else:
                self.spawn(incident, ["resume", run_id, "--as", "oncall"])
                if self.random.random() < self.settings.twice:  # two people resume it at once
                    self.spawn(f"{incident}~", ["resume", run_id, "--as", "oncall"])
        return open_runs

    def close(self) -> None:
        self.store.close()


def probe(url: str, stop: threading.Event, faults: threading.Event, figures: Figures) -> None:
    """Append to a run of its own every 20 ms and time each commit."""
    from irctl.errors import IrctlError
    from irctl.journal.store import Store

    store = Store.open(url)
    try:
        run_id = "r-soak-probe"
        store.create_run(run_id, runbook="probe", initiator="soak", mode="tabletop",
                         incident=None, data={"runbook": "probe"})  # fmt: skip
        while not stop.is_set():
            began = time.perf_counter()
            try:
                store.append(run_id, [("run.note", {"by": "soak", "text": "probe"})])
            except IrctlError:
                time.sleep(0.2)  # the database is down: that is not a commit to time
                continue
            took = time.perf_counter() - began
            (figures.commit_under if faults.is_set() else figures.commit_before).append(took)
            stop.wait(0.02)
    finally:
        store.close()


def check(root: Path, url: str, figures: Figures) -> None:
    """Read everything back: ledger against journals, chains, approvals."""
    from irctl.journal.state import fold
    from irctl.journal.store import Store
    from irctl.record.transcript import verify_run

    store = Store.open(url, create=False)
    path = root / "ledger.txt"
    ledger = Counter(path.read_text(encoding="utf-8").splitlines() if path.exists() else [])
    figures.double_effects = sum(1 for count in ledger.values() if count > 1)
    try:
        for row in store.runs():
            if not (row.incident or "").startswith("soak-"):
                continue
            figures.runs += 1
            events = store.events(row.id)
            state = fold(events)
            figures.completed += state.status == "succeeded"
            for key, step in state.steps.items():
                if step.status == "succeeded":
                    figures.steps += 1
                    if not ledger[f"{row.id}:{key}"]:
                        figures.missing_effects += 1
                        figures.problems.append(f"{row.id}:{key} succeeded, no ledger line")
            report = verify_run(store, row.id, None)
            if not report.ok:
                figures.unverified += 1
                figures.problems.append(f"{row.id}: {report.summary()}")
            grants = [e for e in events if e.type == "approval.granted"]
            votes = Counter((e.data.get("operator"), e.data.get("digest")) for e in grants)
            figures.double_approvals += sum(1 for n in votes.values() if n > 1)
            starts = [
                e.seq for e in events if e.type == "step.started" and e.data.get("step") == GATE
            ]
            first_start = starts[0] if starts else None
            if first_start is not None:
                before = {e.data.get("operator") for e in events
                          if e.seq < first_start and e.type == "approval.granted"}  # fmt: skip
                if len(before - {None}) < 2:
                    figures.short_quorum += 1
                    figures.problems.append(f"{row.id}: gate started with {sorted(before)}")
    finally:
        store.close()
    runs_in_ledger = {line.split(":", 1)[0] for line in ledger}
    if len(runs_in_ledger) > figures.runs:
        figures.problems.append("ledger lines of runs the store does not hold")


def soak(settings: Settings, *, quiet: bool = False) -> Figures:
    figures = Figures()
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    find_bindir()
    with tempfile.TemporaryDirectory(prefix="irctl-soak-") as folder, DurablePostgres.start() as pg:
        url = pg.create_database("soak_")
        root = make_workspace(Path(folder) / "ws", url, settings)
        from irctl.journal.store import Store

        Store.open(url).close()  # the tables, before many processes race to make them
        stop, faults = threading.Event(), threading.Event()
        prober = threading.Thread(target=probe, args=(url, stop, faults, figures), daemon=True)
        prober.start()
        driver = Driver(root, url, settings, figures)
        began = time.monotonic()
        restarts_due = [0.3 + 0.5 * i / max(settings.restarts, 1) for i in range(settings.restarts)]
        try:
            left = settings.runs
            kills_left = settings.kills
            while left and time.monotonic() - began < settings.time_limit:
                left = driver.step_once()
                done = 1 - left / settings.runs
                if done > 0.15:
                    faults.set()
                for _ in range(2):  # up to two kills a round, until --kills are made
                    if faults.is_set() and kills_left:
                        kills_left -= driver.kill_one()
                if restarts_due and done >= restarts_due[0]:
                    restarts_due.pop(0)
                    took = pg.restart_immediately()
                    figures.restarts += 1
                    say(f"  database restarted ({took:.1f} s)")
                say(f"  {settings.runs - left}/{settings.runs} runs ended, {figures.kills} kills, "
                    f"{figures.processes} processes")  # fmt: skip
                time.sleep(0.5)
            while driver.live:  # let the last processes finish
                time.sleep(0.2)
        finally:
            figures.seconds = time.monotonic() - began
            stop.set()
            prober.join(timeout=30)
            driver.close()
        check(root, url, figures)
    return figures


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def table(figures: Figures, settings: Settings) -> str:
    rows = [
        ("runs completed", f"{figures.completed}/{figures.runs}", f"{settings.runs}"),
        ("effects executed twice (ledger)", str(figures.double_effects), "0"),
        ("succeeded steps without their effect", str(figures.missing_effects), "0"),
        ("runs whose journal fails verification", str(figures.unverified), "0"),
        ("approvals recorded twice (lead, digest)", str(figures.double_approvals), "0"),
        ("gated steps started short of 2 leads", str(figures.short_quorum), "0"),
        ("processes started / killed", f"{figures.processes} / {figures.kills}",
         f"≥ {settings.kills} kills"),
        ("database restarts (immediate)", str(figures.restarts), f"≥ {settings.restarts}"),
        ("steps succeeded per second", f"{figures.steps / figures.seconds:.1f}", "—"),
        ("wall time", f"{figures.seconds:.0f} s", "≤ 600 s"),
        ("commit p50 / p99, before faults",
         f"{percentile(figures.commit_before, .5) * 1000:.1f} / "
         f"{percentile(figures.commit_before, .99) * 1000:.1f} ms", "p99 ≤ 25 ms"),
        ("commit p50 / p99, under faults",
         f"{percentile(figures.commit_under, .5) * 1000:.1f} / "
         f"{percentile(figures.commit_under, .99) * 1000:.1f} ms", "p99 ≤ 25 ms"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{'soak (PostgreSQL, fsync on)':<{width}}  {'measured':>22}  target",
        "-" * (width + 34),
    ]
    lines += [f"{name:<{width}}  {value:>22}  {target}" for name, value, target in rows]
    lines += [f"  {p}" for p in figures.problems[:20]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in vars(Settings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings(**{k: getattr(args, k) for k in vars(Settings())})
    figures = soak(settings)
    if args.json:
        print(json.dumps({k: v for k, v in vars(figures).items()
                          if not isinstance(v, list)} | {"clean": figures.clean}))  # fmt: skip
    else:
        print(table(figures, settings))
    sys.exit(0 if figures.clean else 1)


if __name__ == "__main__":
    main()
