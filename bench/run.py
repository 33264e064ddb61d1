"""irctl benchmarks: `make bench` prints a table of medians against the targets.

Each figure is measured here, on this machine, in one run; the targets come from the project's
performance goals.  Benchmarks are not tests: nothing here fails the build.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IRCTL = str(Path(sys.executable).parent / "irctl")
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel, ConfigDict  # noqa: E402

from irctl.actions import ActionContext, Registry, action, default_registry  # noqa: E402
from irctl.engine.engine import Engine  # noqa: E402
from irctl.journal.store import Store  # noqa: E402
from irctl.runbook.loader import load_runbook_text  # noqa: E402


class NoInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Wait(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float


@action("bench.noop", idempotent=True)
def noop(inputs: NoInputs, ctx: ActionContext) -> dict[str, Any]:
    return {}


@action("bench.wait", idempotent=True)
def wait(inputs: Wait, ctx: ActionContext) -> dict[str, Any]:
    time.sleep(inputs.seconds)
    return {}


REGISTRY = Registry()
REGISTRY.register(noop)
REGISTRY.register(wait)
REGISTRY.register(default_registry.get("shell.exec"))


def median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _engine_run(text: str, tmp: Path) -> tuple[float, int]:
    """Wall seconds to execute a runbook (run already created), and the step count."""
    store = Store.open(f"sqlite:///{tmp / f'b{time.monotonic_ns()}.db'}")
    model = load_runbook_text(text, "bench.yaml", registry=REGISTRY)
    engine = Engine(store, registry=REGISTRY)
    run_id = engine.create_run(model, text, {}, initiator="bench")
    began = time.perf_counter()
    state = engine.execute(run_id)
    elapsed = time.perf_counter() - began
    if state.status != "succeeded":
        raise SystemExit(f"bench run failed: {state.status}")
    store.close()
    return elapsed, len(model.steps)


def bench_guard(tmp: Path) -> tuple[float, float, float]:
    """What verifying before acting costs: the chain check per event the engine appends,
    the gate of a step reached after 10,000 events (all of it: the approval events read, the
    signed decisions checked, the quorum recorded), and the full check on opening such a run."""
    from irctl.engine.guard import JournalGuard
    from irctl.identity import generate_private_key, public_key_text
    from irctl.journal.events import GENESIS, Event
    from irctl.runbook.model import Config

    chain: list[Event] = []
    prev = GENESIS
    for i in range(1, 10_001):
        chain.append(Event.make("r", i, "step.succeeded", {"step": f"s{i}", "outputs": {}}, prev))
        prev = chain[-1].hash

    def own_once() -> float:
        guard = JournalGuard("r", None)
        began = time.perf_counter()
        for event in chain:  # one batch per step, as the engine commits them
            guard.own((event,))
        return (time.perf_counter() - began) / len(chain)

    installation = generate_private_key(tmp / "installation.key")
    approver = generate_private_key(tmp / "t1.key")
    starter = generate_private_key(tmp / "oncall.key")
    config = Config.model_validate({
        "installation_key": public_key_text(installation),
        "operators": {"oncall": {"roles": ["oncall"], "key": public_key_text(starter)},
                      "t1": {"roles": ["treasury"], "key": public_key_text(approver)}},
    })  # fmt: skip
    steps = [f"  - {{id: s{i}, action: bench.noop}}\n" for i in range(5000)]

    def reach() -> tuple[float, float]:
        """Resume a run of 10,000 events waiting at a gated step whose approval is recorded:
        (seconds in the gate, seconds to verify the journal on opening the run)."""
        text = (
            "irctl: 1\nkind: runbook\nid: bench\ntitle: Bench\n"
            "approvals:\n  treasury: {quorum: 1, roles: [treasury]}\nsteps:\n"
            + "".join(steps) + "  - {id: last, action: bench.noop, approval: treasury}\n"
        )  # fmt: skip
        store = Store.open(f"sqlite:///{tmp / f'g{time.monotonic_ns()}.db'}")
        model = load_runbook_text(text, "bench.yaml", registry=REGISTRY)
        engine = Engine(store, registry=REGISTRY, config=config, signing_key=installation)
        run_id = engine.create_run(model, text, {}, initiator="oncall", starter_key=starter)
        engine.execute(run_id)  # waits at the gate
        engine.decide(run_id, "last", operator="t1", approve=True, reason=None,
                      private_key=approver)  # fmt: skip
        engine = Engine(store, registry=REGISTRY, config=config, signing_key=installation)
        spent: list[float] = []
        check = engine._gate.check  # irctl.engine.gate: the one entry point of the gate

        def timed(*args: Any) -> str:
            began = time.perf_counter()
            try:
                return check(*args)
            finally:
                spent.append(time.perf_counter() - began)

        engine._gate.check = timed  # type: ignore[method-assign]
        guard = JournalGuard(run_id, [public_key_text(installation)])
        events = store.events(run_id)
        began = time.perf_counter()
        guard.open(events, pinned=events[0].data["operators"], configured=None)
        opened = time.perf_counter() - began
        state = engine.execute(run_id)
        if state.status != "succeeded" or len(spent) != 1:
            raise SystemExit(f"bench run did not pass its gate: {state.status} {state.reason}")
        store.close()
        return spent[0], opened

    own = median(own_once, 5)
    reached = [reach() for _ in range(3)]
    gate = statistics.median(r[0] for r in reached)
    opened = statistics.median(r[1] for r in reached)
    return own, gate, opened


def runbook(steps: list[str]) -> str:
    return "irctl: 1\nkind: runbook\nid: bench\ntitle: Bench\nsteps:\n" + "".join(steps)


def bench_engine_overhead(tmp: Path) -> tuple[float, float]:
    n = 1000
    text = runbook([f"  - {{id: s{i}, action: bench.noop}}\n" for i in range(n)])

    def engine_once() -> float:
        elapsed, steps = _engine_run(text, tmp)
        return elapsed / steps

    def plain_once() -> float:
        path = tmp / f"plain{time.monotonic_ns()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        began = time.perf_counter()
        for i in range(n):
            noop.run(NoInputs(), ActionContext(run_id="r", step_id=f"s{i}"))
            line = json.dumps({"step": f"s{i}", "status": "succeeded"}) + "\n"
            os.write(fd, line.encode())
            os.fsync(fd)
        elapsed = time.perf_counter() - began
        os.close(fd)
        return elapsed / n

    return median(engine_once, 5), median(plain_once, 5)


def bench_shell(tmp: Path) -> tuple[float, float, float]:
    """shell.exec per step; the target's plain loop (``subprocess.run(["true"])`` + an
    fsync'd line, exactly as stated); the same loop capturing output as shell.exec does."""
    n = 200
    text = runbook(
        [f'  - {{id: s{i}, action: shell.exec, with: {{argv: ["true"]}}}}\n' for i in range(n)]
    )

    def engine_once() -> float:
        elapsed, steps = _engine_run(text, tmp)
        return elapsed / steps

    def plain_once(capture: bool) -> float:
        path = tmp / f"shell{time.monotonic_ns()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        began = time.perf_counter()
        for i in range(n):
            done = subprocess.run(["true"], capture_output=capture, check=False)
            os.write(fd, (json.dumps({"step": i, "exit": done.returncode}) + "\n").encode())
            os.fsync(fd)
        elapsed = time.perf_counter() - began
        os.close(fd)
        return elapsed / n

    return (
        median(engine_once, 3),
        median(lambda: plain_once(False), 3),
        median(lambda: plain_once(True), 3),
    )


def bench_command(args: list[str], repeat: int = 11) -> float:
    env = {**os.environ, "IRCTL_WORKSPACE": str(ROOT)}

    def once() -> float:
        began = time.perf_counter()
        subprocess.run([IRCTL, *args], cwd=ROOT, env=env, capture_output=True, check=True)
        return time.perf_counter() - began

    once()  # warm the file cache
    return median(once, repeat)


def bench_fan_out(tmp: Path) -> float:
    text = runbook(
        [
            '  - id: fan\n    for_each: "{{ range(100) | list }}"\n    max_parallel: 50\n'
            "    action: bench.wait\n    with: {seconds: 0.2}\n"
        ]
    )
    return median(lambda: _engine_run(text, tmp)[0], 3)


def bench_verify(tmp: Path) -> float:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.identity import public_key_text
    from irctl.journal import events as ev
    from irctl.journal.events import GENESIS, Event
    from irctl.record.transcript import checkpoint_data
    from irctl.runbook.render import sha256_hex

    key = Ed25519PrivateKey.generate()
    text = "irctl: 1\n"
    path = tmp / "verify.jsonl"
    with path.open("w", encoding="utf-8") as out:
        first = Event.make(
            "r-bench", 1, ev.RUN_CREATED,
            {"runbook": "bench", "runbook_digest": "sha256:" + sha256_hex(text),
             "runbook_text": text, "params": {}, "initiator": "bench", "mode": "live",
             "incident": None},
            GENESIS,
        )  # fmt: skip
        out.write(first.line + "\n")
        prev = first
        for seq in range(2, 100_000):
            kind = ev.STEP_STARTED if seq % 2 == 0 else ev.STEP_SUCCEEDED
            data = {"step": f"s{seq // 2}", "attempt": 1, "outputs": {"ok": True}}
            prev = Event.make("r-bench", seq, kind, data, prev.hash)
            out.write(prev.line + "\n")
        seal = Event.make(
            "r-bench", 100_000, ev.CHECKPOINT, checkpoint_data("r-bench", prev, key), prev.hash
        )
        out.write(seal.line + "\n")
    public = public_key_text(key)
    env = {**os.environ, "IRCTL_WORKSPACE": str(tmp)}

    def once() -> float:
        began = time.perf_counter()
        done = subprocess.run(
            [IRCTL, "transcript", "verify", str(path), "--key", public],
            cwd=tmp, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"verify failed: {done.stdout}{done.stderr}")
        return time.perf_counter() - began

    return median(once, 3)


def bench_memory(tmp: Path) -> float:
    """Peak RSS (MB) of a fresh process running a 10,000-step runbook."""
    done = subprocess.run(  # a child process, so nothing measured before counts
        [sys.executable, __file__, "--memory-child", str(tmp)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def memory_child(tmp: Path) -> None:
    _engine_run(runbook([f"  - {{id: s{i}, action: bench.noop}}\n" for i in range(10_000)]), tmp)
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork+exec.
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    peak = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), "")
    print(peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def bench_slack(tmp: Path) -> tuple[float, float]:
    """Wall time of a 200-step run with Slack answering, and with Slack not answering at all."""
    from irctl.runbook.model import Config
    from irctl.testing import SlackStandIn

    os.environ["SLACK_BOT_TOKEN"] = "xoxb-bench"
    text = runbook([f"  - {{id: s{i}, action: bench.noop}}\n" for i in range(200)])
    registry = Registry()
    registry.register(noop)
    with SlackStandIn(token="xoxb-bench") as slack:
        slack.add_channel("incidents", bot_member=True)
        config = Config.model_validate(
            {"integrations": {"slack": {
                "token": "env:SLACK_BOT_TOKEN", "base_url": slack.url, "channel": "#incidents"}}}
        )  # fmt: skip

        def once() -> float:
            store = Store.open(f"sqlite:///{tmp / f'slack{time.monotonic_ns()}.db'}")
            model = load_runbook_text(text, "bench.yaml", registry=REGISTRY)
            engine = Engine(store, registry=REGISTRY, config=config, notify_grace=0.0)
            run_id = engine.create_run(model, text, {}, initiator="bench")
            began = time.perf_counter()
            engine.execute(run_id)
            elapsed = time.perf_counter() - began
            store.close()
            return elapsed

        up = median(once, 3)
        slack.down("hang")
        down = median(once, 3)
        slack.up()
    return up, down


def bench_rotation(tmp: Path) -> tuple[float, float]:
    """Wall time to rotate the keys of 200 IAM users (moto's server): 16 at a time vs one by one."""
    import boto3
    from botocore.config import Config as BotoConfig

    from irctl.runbook.model import Config

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    # moto in a process of its own, as AWS would be: the engine's threads do not share its GIL
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host, port = probe.getsockname()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for(f"http://{host}:{port}/moto-api/")
    aws = {"region": "us-east-1", "endpoint_url": f"http://{host}:{port}", "max_attempts": 1}
    iam = boto3.client(
        "iam", region_name="us-east-1", endpoint_url=aws["endpoint_url"],
        config=BotoConfig(retries={"max_attempts": 1}),
    )  # fmt: skip
    config = Config.model_validate({"integrations": {"aws": aws}})
    try:

        def rotate_all(width: int) -> float:
            users = [f"w{width}-{n:03d}" for n in range(200)]
            for user in users:
                iam.create_user(UserName=user)
                iam.create_access_key(UserName=user)
            text = (
                "irctl: 1\nkind: runbook\nid: rotate\ntitle: Rotate\n"
                "params:\n  users: {type: list, items: string}\nsteps:\n"
                f"  - id: rotate\n    action: aws.iam.rotate_access_key\n"
                f'    for_each: "{{{{ params.users }}}}"\n    max_parallel: {width}\n'
                f'    with: {{user_name: "{{{{ item }}}}", secret_name: "iam/{{{{ item }}}}"}}\n'
            )
            store = Store.open(f"sqlite:///{tmp / f'rotate{width}.db'}")
            engine = Engine(store, config=config)
            run_id = engine.create_run(
                load_runbook_text(text, "rotate.yaml"), text, {"users": users}, initiator="bench"
            )
            began = time.perf_counter()
            state = engine.execute(run_id)
            elapsed = time.perf_counter() - began
            store.close()
            if state.status != "succeeded":
                raise SystemExit(f"rotation bench failed: {state.status}")
            return elapsed

        return rotate_all(16), rotate_all(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for(url: str, seconds: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - loopback only
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def bench_machine(tmp: Path) -> tuple[float, float, float]:
    """What this machine itself gives, to compare tables from different machines: the start-up
    of a bare interpreter, a fixed piece of pure-Python work, and one fsync'd append."""

    def startup() -> float:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - began

    def cpu() -> float:
        began = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        return time.perf_counter() - began

    def fsync() -> float:
        fd = os.open(tmp / f"fsync{time.monotonic_ns()}", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            began = time.perf_counter()
            for _ in range(200):
                os.write(fd, b"x" * 80 + b"\n")
                os.fsync(fd)
            return (time.perf_counter() - began) / 200
        finally:
            os.close(fd)

    return median(startup, 11), median(cpu, 5), median(fsync, 5)


def main() -> None:
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: str, target: str, ok: bool) -> None:
        rows.append((name, value, target, "ok" if ok else "MISSED"))
        print(f"  measured: {name}: {value}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        engine, plain = bench_engine_overhead(tmp)
        row("engine step, no-op action, durable journal", f"{engine * 1000:.3f} ms", "≤ 1 ms",
            engine <= 0.001)  # fmt: skip
        row("  plain loop: one fsync'd JSON line per step", f"{plain * 1000:.3f} ms", "—", True)
        row("  engine / plain", f"{engine / plain:.2f}×", "≤ 3×", engine / plain <= 3)
        shell, plain_shell, captured = bench_shell(tmp)
        row("shell.exec true, per step", f"{shell * 1000:.2f} ms", "—", True)
        row('  plain subprocess.run(["true"]) + fsync', f"{plain_shell * 1000:.2f} ms", "—", True)
        row("  shell.exec / plain", f"{shell / plain_shell:.2f}×", "≤ 1.3×",
            shell / plain_shell <= 1.3)  # fmt: skip
        row("  (the plain loop capturing output, as shell.exec does)",
            f"{captured * 1000:.2f} ms, {shell / captured:.2f}×", "—", True)  # fmt: skip
        helptime = bench_command(["--help"])
        row("irctl --help", f"{helptime * 1000:.0f} ms", "≤ 150 ms", helptime <= 0.150)
        validate = bench_command(["validate", "runbooks/"])
        row("irctl validate runbooks/", f"{validate * 1000:.0f} ms", "≤ 300 ms", validate <= 0.300)
        from bench.people import bench_people

        people = bench_people(tmp)
        bare = people.pop("python -c pass")
        for name, seconds in people.items():
            shown = f"{seconds * 1000:.0f} ms, {seconds / bare:.0f}×"
            row(f"irctl {name}, 1,000 runs (10 waiting)", shown, "≤ 150 ms", seconds <= 0.150)
        row("  python -c pass", f"{bare * 1000:.0f} ms", "—", True)
        slack_up, slack_down = bench_slack(tmp)
        row("200-step run, Slack answering", f"{slack_up:.2f} s", "—", True)
        row("  same run, Slack not answering", f"{slack_down:.2f} s", "≈ same",
            slack_down <= slack_up * 1.2 + 0.05)  # fmt: skip
        parallel, sequential = bench_rotation(tmp)
        row("rotate keys of 200 IAM users (moto), 16 at a time", f"{parallel:.1f} s", "—", True)
        row("  same, one at a time", f"{sequential:.1f} s", "—", True)
        row("  speed-up", f"{sequential / parallel:.1f}×", "> 1×", parallel < sequential)
        fan = bench_fan_out(tmp)
        row("for_each 100 × 200 ms, max_parallel 50", f"{fan:.2f} s", "≤ 0.6 s", fan <= 0.6)
        own, gate, opened = bench_guard(tmp)
        row("verify before acting: chain check per event appended", f"{own * 1e6:.1f} µs",
            "≤ 100 µs", own <= 0.0001)  # fmt: skip
        row("  gate of a step after 10,000 events, in all", f"{gate * 1000:.2f} ms",
            "≤ 5 ms", gate <= 0.005)  # fmt: skip
        row("  full check on opening a 10,000-event run", f"{opened * 1000:.0f} ms", "—", True)
        verify = bench_verify(tmp)
        row("transcript verify, 100,000 events", f"{verify:.2f} s", "≤ 1.5 s", verify <= 1.5)
        rss = bench_memory(tmp)
        row("10,000-step run, peak RSS", f"{rss:.0f} MB", "≤ 150 MB", rss <= 150)
        from bench.reserves import bench_reserves

        reserves = bench_reserves(tmp)
        bundle, files = reserves["bundle"], reserves["files"]
        row("reserves build, 1,000,000 accounts × 5 assets, bundle", f"{bundle.seconds:.1f} s",
            "≤ 20 s", bundle.seconds <= 20)  # fmt: skip
        row("  of which writing the proofs and their index", f"{bundle.writing:.1f} s", "—",
            True)  # fmt: skip
        row("  peak RSS, all its processes", f"{bundle.peak:.0f} MB", "≤ 2 GB",
            bundle.peak <= 2048)  # fmt: skip
        row("  same, --layout files (a file per account)", f"{files.seconds:.1f} s", "—", True)
        row("    of which writing the 1,000,000 proof files", f"{files.writing:.1f} s", "—",
            True)  # fmt: skip
        row("    peak RSS, all its processes", f"{files.peak:.0f} MB", "≤ 2 GB",
            files.peak <= 2048)  # fmt: skip
        from bench.alert import bench_alert
        from bench.watch import bench_watch

        followed = bench_watch(tmp)
        row("irctl watch, 20 addresses, 300 blocks of the local chain",
            f"{followed['blocks_per_second']:.0f} blocks/s", "≥ 50/s",
            followed["blocks_per_second"] >= 50)  # fmt: skip
        row("  its own work, the node's answers left out",
            f"{followed['own_blocks_per_second']:.0f} blocks/s", "—", True)  # fmt: skip
        alerted = bench_alert(tmp)
        row("Safe delegatecall block → last auto step done (watch, serve, run)",
            f"{alerted['total']:.2f} s", "—", True)  # fmt: skip
        row("  irctl's own share of it (the rest: the APIs' calls, the block clock)",
            f"{alerted['overhead']:.2f} s", "≤ 1 s", alerted["overhead"] <= 1.0)  # fmt: skip
        startup, cpu, fsync = bench_machine(tmp)
        row("machine: python -c pass", f"{startup * 1000:.0f} ms", "—", True)
        row("machine: pure-Python loop of 10^6 additions", f"{cpu * 1000:.0f} ms", "—", True)
        row("machine: one fsync'd 81-byte append", f"{fsync * 1e6:.0f} µs", "—", True)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'benchmark (median)':<{width}}  {'measured':>12}  {'target':>9}  result")
    print("-" * (width + 36))
    for name, value, target, result in rows:
        print(f"{name:<{width}}  {value:>12}  {target:>9}  {result}")
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · the machine rows tell how"
          " fast this machine is, to compare tables taken on different ones")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        memory_child(Path(sys.argv[2]))
    else:
        main()
