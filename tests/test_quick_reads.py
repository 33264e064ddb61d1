"""The commands people type most under stress read only what they show, and import little.

``irctl status``, ``runs list`` and ``approvals pending`` read a SQLite store with the
standard library (:class:`irctl.journal.filereader.FileReader`), take only the
``store`` line of irctl.yaml until they need more, and never import SQLAlchemy, the template
engine or an integration.  What they read must be what the SQLAlchemy store reads: the same
runs, lines and events, and, on SQLite and PostgreSQL alike, the same runs an approval may
be pending in — including one older than hundreds of finished runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.people import DONE_RUNBOOK, RUNBOOK, make_workspace
from irctl.engine.engine import Engine
from irctl.identity import generate_private_key, public_key_text
from irctl.journal.filereader import FileReader
from irctl.journal.state import fold
from irctl.journal.store import Store
from irctl.runbook.config import Config
from irctl.runbook.loader import load_runbook_text
from irctl.workspace import DEFAULT_STORE, Workspace
from tests.helpers import IRCTL

HEAVY = ("sqlalchemy", "jinja2", "boto3", "web3", "slack_sdk", "irctl_aws", "irctl_evm",
         "irctl_slack", "irctl_comms", "irctl.engine", "irctl.runbook.loader")  # fmt: skip

IMPORTED = """
import sys
from irctl.cli import main
sys.argv = ["irctl", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] if not m.startswith("irctl.") else m for m in sys.modules
                if m.split(".")[0] in HEAVY or m in HEAVY})
print("IMPORTED", ",".join(heavy), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A workspace of 12 runs through the engine, the newest 3 waiting for approval."""
    root = tmp_path_factory.mktemp("people") / "ws"
    return root, make_workspace(root, runs=12, waiting=3)


def read(root: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IRCTL_WORKSPACE": str(root), "COLUMNS": "200"}
    env.pop("IRCTL_STORE", None)
    command = (
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}", *args] if code else [IRCTL, *args]
    )
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize(
    "args", [["status"], ["runs", "list"], ["approvals", "pending"], ["status", "--json"]]
)
def test_read_commands_import_no_database_toolkit_template_engine_or_integration(
    people: tuple[Path, str], args: list[str]
) -> None:
    root, _ = people
    done = read(root, *args, code=IMPORTED)
    assert "Traceback" not in done.stderr, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED")][-1]
    assert line == "IMPORTED ", f"{args}: {line}"
    assert done.stdout.strip()  # it did show something


def test_what_they_show_is_what_the_engine_recorded(people: tuple[Path, str]) -> None:
    root, last = people
    status = json.loads(read(root, "status", last, "--json").stdout)
    assert status["status"] == "waiting"
    halt = [s for s in status["steps"] if s["step"] == "halt"]
    assert halt[0]["status"] == "waiting"
    assert halt[0]["waiting_for"] == "approval"
    pending = json.loads(read(root, "approvals", "pending", "--json").stdout)
    assert len(pending) == 3
    assert pending[0]["run_id"] == last
    listed = json.loads(read(root, "runs", "list", "--limit", "12", "--json").stdout)
    assert [r["status"] for r in listed] == ["waiting"] * 3 + ["succeeded"] * 9


def test_the_file_reader_reads_what_the_store_reads(people: tuple[Path, str]) -> None:
    root, last = people
    path = root / ".irctl" / "irctl.db"
    quick, store = FileReader(path), Store.open(f"sqlite:///{path}", create=False)
    try:
        assert quick.runs() == store.runs()
        assert len(quick.runs()) == 12
        assert quick.runs(limit=4) == store.runs(limit=4)
        assert quick.find_run(last[:-2]) == store.find_run(last[:-2])
        assert quick.get_run(last) == store.get_run(last)
        assert quick.get_run("r-none") is None
        assert store.get_run("r-none") is None
        assert list(quick.lines(last)) == list(store.lines(last))
        assert [e.hash for e in quick.events(last, after=2)] == [
            e.hash for e in store.events(last, after=2)
        ]
        assert quick.meta_value("schema") == store.meta_value("schema") is not None
        assert quick.unfinished_runs() == store.unfinished_runs()
        assert len(quick.unfinished_runs()) == 3
    finally:
        quick.close()
        store.close()


def seed(store: Store, root: Path, *, waiting: int, done: int) -> tuple[set[str], set[str]]:
    """``waiting`` runs waiting for approval first, then ``done`` runs that ended."""
    installation = generate_private_key(root / "installation.key")
    starter = generate_private_key(root / "oncall.key")
    lead = generate_private_key(root / "alice.key")
    config = Config.model_validate({"operators": {
        "oncall": {"roles": ["security-oncall"], "key": public_key_text(starter)},
        "alice": {"roles": ["security-lead"], "key": public_key_text(lead)},
    }})  # fmt: skip
    engine = Engine(store, config=config, signing_key=installation, notify=False)
    made: dict[str, set[str]] = {"waiting": set(), "succeeded": set()}
    for text, want, count in ((RUNBOOK, "waiting", waiting), (DONE_RUNBOOK, "succeeded", done)):
        model = load_runbook_text(text, "seed.yaml")
        for _ in range(count):
            run_id = engine.create_run(model, text, {}, initiator="oncall", starter_key=starter)
            assert engine.execute(run_id).status == want
            made[want].add(run_id)
    return made["waiting"], made["succeeded"]


def test_runs_an_approval_may_wait_in_match_the_fold_on_either_database(
    store_url: str, tmp_path: Path
) -> None:
    store = Store.open(store_url)
    try:
        waiting, ended = seed(store, tmp_path, waiting=2, done=3)
        found = {r.id for r in store.unfinished_runs()}
        assert found == waiting
        assert all(not fold(store.events(r)).finished for r in found)
        assert all(fold(store.events(r)).finished for r in ended)
    finally:
        store.close()


def test_a_waiting_run_older_than_two_hundred_ended_runs_is_still_pending(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root, runs=0)
    store = Workspace.find(root).store
    try:
        waiting, _ = seed(store, tmp_path, waiting=1, done=201)
    finally:
        store.close()
    done = read(root, "approvals", "pending", "--json")
    assert done.returncode == 0, done.stderr
    assert [row["run_id"] for row in json.loads(done.stdout)] == sorted(waiting)


def test_the_store_line_alone_is_read_as_the_whole_config_reads_it(tmp_path: Path) -> None:
    assert Config.model_fields["store"].default == DEFAULT_STORE
    root = tmp_path / "ws"
    root.mkdir()
    config = root / "irctl.yaml"
    for text, url, given in [
        ("", DEFAULT_STORE, False),
        ("vars: {a: 1}\n", DEFAULT_STORE, False),
        ("store: sqlite:///elsewhere.db\n", "sqlite:///elsewhere.db", True),
        ("store: 'sqlite:///q.db'  # quoted\noperators: {}\n", "sqlite:///q.db", True),
    ]:
        config.write_text(text, encoding="utf-8")
        quick = Workspace.find(root).store_source
        whole = Workspace.find(root)
        assert whole.config.store == url  # reads the whole file
        assert quick == whole.store_source
        assert quick[0] == url
        assert quick[1].startswith("from the store line") is given


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("store: sqlite:///a.db\nstore: sqlite:///b.db\n", "duplicate key"),
        ("store: 5\n", "store"),
        ("store: [sqlite:///a.db]\n", "store"),
    ],
)
def test_a_store_line_that_is_not_plain_is_the_config_error(
    tmp_path: Path, text: str, said: str
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "irctl.yaml").write_text(text, encoding="utf-8")
    done = read(root, "runs", "list")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "irctl.yaml" in done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr


def test_a_damaged_run_that_waits_is_named_and_the_others_still_listed(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "ws"
    make_workspace(root, runs=3, waiting=2)
    listed = json.loads(read(root, "approvals", "pending", "--json").stdout)
    broken, fine = (row["run_id"] for row in listed)
    with sqlite3.connect(root / ".irctl" / "irctl.db") as db:
        db.execute("UPDATE irctl_events SET line = '{' WHERE run_id = ? AND seq = 3", (broken,))
    done = read(root, "approvals", "pending", "--json")
    assert done.returncode == 0, done.stderr
    assert [row["run_id"] for row in json.loads(done.stdout)] == [fine]
    assert f"warning: run {broken}: stored event 3 cannot be read" in done.stderr
