"""Commands that only read the store never create one, and can read one they may not write.

``runs list``, ``status``, ``transcript show|export|verify``, ``approvals pending`` open the
store to read only: a store that is not there is an error naming where irctl looked and
why there (``IRCTL_STORE``, the ``store:`` line of irctl.yaml, or the default), never a
fresh empty database that says "no run"; only ``runs list`` in a folder where nothing has
run yet says so and exits 0.  A copy of a store in a folder and files the process cannot
write (an auditor's read-only copy) is read without writing to it.

Each case runs the real ``irctl`` command against real SQLite files (and PostgreSQL for a
database without irctl's tables).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from irctl.errors import NoStore, StoreError
from irctl.journal.store import SCHEMA_VERSION, Store
from tests.helpers import IRCTL, make_workspace, run_id_from

NOTE = """\
irctl: 1
id: note
title: Note
steps:
  - id: one
    action: notify.console
    with: {message: "hi"}
"""

MISSING = "nothing has been recorded there; check the path, or run the command from the workspace"


def irctl(
    *args: str, cwd: Path, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``irctl`` in ``cwd`` (as tests.helpers.irctl), optionally behind ``prefix``."""
    full_env = {**os.environ, "IRCTL_WORKSPACE": str(cwd), "COLUMNS": "200", **(env or {})}
    for name in ("IRCTL_DEBUG", "IRCTL_STORE"):
        if name not in (env or {}):
            full_env.pop(name, None)
    return subprocess.run(
        [*(prefix or []), IRCTL, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=120, input="", check=False,
    )  # fmt: skip


def no_bug(done: subprocess.CompletedProcess[str]) -> None:
    assert "internal error" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, str]:
    """A workspace whose store holds one finished run of a tiny runbook, and that run's id."""
    ws = make_workspace(tmp_path / "ws", {"note": NOTE})
    done = irctl("run", "note", "--yes", cwd=ws)
    assert done.returncode == 0, done.stderr
    return ws, run_id_from(done)


@pytest.fixture
def logged(recorded: tuple[Path, str]) -> Iterator[tuple[Path, str]]:
    """``recorded``, with its newest events still in irctl.db-wal: another process holding the
    store open (a long run, irctl serve) keeps SQLite from folding the log into the file when
    a command closes it, and a copy taken then is like this."""
    ws, run_id = recorded
    holder = sqlite3.connect(ws / ".irctl" / "irctl.db")
    try:
        holder.execute("SELECT count(*) FROM irctl_events").fetchone()
        noted = irctl("note", run_id, "copied for the audit", cwd=ws)
        assert noted.returncode == 0, noted.stderr
        assert (ws / ".irctl" / "irctl.db-wal").stat().st_size > 0
        yield ws, run_id
    finally:
        holder.close()


def read_commands(run_id: str) -> list[list[str]]:
    return [
        ["runs", "list"],
        ["status", run_id],
        ["status"],
        ["transcript", "show", run_id],
        ["transcript", "export", run_id, "--format", "md", "-o", "-"],
        ["transcript", "verify", run_id],
        ["approvals", "pending"],
    ]


# -- no store where irctl looks: nothing is created ------------------------------------------


def test_runs_list_in_an_empty_folder_says_nothing_ran_and_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = irctl("runs", "list", cwd=empty)
    no_bug(done)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith(f"no runs: no store at {empty}/.irctl/irctl.db yet")
    assert "no irctl.yaml in" in done.stderr
    as_json = irctl("runs", "list", "--json", cwd=empty)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == []
    assert files_under(empty) == []


def test_runs_list_in_a_workspace_that_has_not_run_anything(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"note": NOTE})  # irctl.yaml names the default store
    before = files_under(ws)
    done = irctl("runs", "list", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"no runs: no store at {ws}/.irctl/irctl.db yet")
    assert files_under(ws) == before


def test_commands_about_a_run_in_an_empty_folder_are_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in read_commands("r-20261121-030000-ab12cd")[1:]:
        done = irctl(*args, cwd=empty)
        no_bug(done)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(
            f"error: no irctl store at {empty}/.irctl/irctl.db (the default store; no "
            f"irctl.yaml in {empty} or a folder above): {MISSING}"
        ), (args, done.stderr)
    assert files_under(empty) == []


def test_a_mistyped_irctl_store_is_exit_2_naming_it(recorded: tuple[Path, str]) -> None:
    ws, run_id = recorded
    typo = ws.parent / "stores" / "irctl.dbb"
    for args in read_commands(run_id):
        done = irctl(*args, cwd=ws, env={"IRCTL_STORE": f"sqlite:///{typo}"})
        no_bug(done)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith(
            f"error: no irctl store at {typo} (from IRCTL_STORE): {MISSING}"
        ), (args, done.stderr)
        assert done.stdout == ""
    assert not typo.parent.exists()  # not even the folder
    # a relative IRCTL_STORE is relative to the workspace: the message shows where that is
    done = irctl("status", run_id, cwd=ws, env={"IRCTL_STORE": "sqlite:///.irctl/irctl.dbb"})
    assert done.returncode == 2
    assert f"no irctl store at {ws}/.irctl/irctl.dbb (from IRCTL_STORE)" in done.stderr
    assert not (ws / ".irctl" / "irctl.dbb").exists()


def test_a_mistyped_store_line_is_exit_2_naming_irctl_yaml(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"note": NOTE}, store="sqlite:///.irctl/irctll.db")
    before = files_under(ws)
    for args in read_commands("r-20261121-030000-ab12cd"):
        done = irctl(*args, cwd=ws)
        no_bug(done)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith(
            f"error: no irctl store at {ws}/.irctl/irctll.db (from the store line of "
            f"{ws}/irctl.yaml): {MISSING}"
        ), (args, done.stderr)
    assert files_under(ws) == before


def test_a_sqlite_file_without_irctl_tables_is_not_made_into_a_store(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"note": NOTE})
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE things (x)")
    db.close()
    for args in (["runs", "list"], ["status", "r-1"]):
        done = irctl(*args, cwd=ws, env={"IRCTL_STORE": f"sqlite:///{other}"})
        no_bug(done)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(
            f"error: {other} (from IRCTL_STORE) is not an irctl store: it has no irctl tables"
        ), done.stderr
    assert inspect(create_engine(f"sqlite:///{other}")).get_table_names() == ["things"]


def test_a_store_with_a_newer_schema_keeps_its_error(recorded: tuple[Path, str]) -> None:
    ws, run_id = recorded
    with sqlite3.connect(ws / ".irctl" / "irctl.db") as db:
        db.execute("UPDATE irctl_meta SET value = '99' WHERE key = 'schema'")
    db.close()
    for args in (["runs", "list"], ["status", run_id]):
        done = irctl(*args, cwd=ws)
        no_bug(done)
        assert done.returncode == 1
        assert (
            f"the store is at schema version 99, made by a newer irctl (this one knows up to "
            f"{SCHEMA_VERSION}): upgrade irctl"
        ) in done.stderr


def test_commands_that_record_still_create_the_store(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"note": NOTE})
    assert not (ws / ".irctl" / "irctl.db").exists()
    done = irctl("run", "note", "--yes", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert (ws / ".irctl" / "irctl.db").is_file()
    listed = irctl("runs", "list", "--json", cwd=ws)
    assert [row["run_id"] for row in json.loads(listed.stdout)] == [run_id_from(done)]
    # an IRCTL_STORE in a folder that does not exist yet, as before
    elsewhere = tmp_path / "new" / "folder" / "irctl.db"
    done = irctl("run", "note", "--yes", cwd=ws, env={"IRCTL_STORE": f"sqlite:///{elsewhere}"})
    assert done.returncode == 0, done.stderr
    assert elsewhere.is_file()


def test_store_open_to_read_creates_no_folder(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b" / "irctl.db"
    with pytest.raises(NoStore) as raised:
        Store.open(f"sqlite:///{missing}", create=False, origin="from a test")
    assert raised.value.absent
    assert raised.value.location == str(missing)
    assert str(raised.value).startswith(f"no irctl store at {missing} (from a test): ")
    assert not (tmp_path / "a").exists()


# -- a store that cannot be written: read it without writing ---------------------------------


def unprivileged() -> list[str]:
    """A prefix that runs a command without the power to ignore file permissions.

    Root ignores a file's mode bits through its capabilities (CAP_DAC_OVERRIDE, ...): as
    root, run the command with every capability dropped, which the kernel holds to the
    mode bits like any other user.  (Not as ``nobody``: the test's Python may live in a
    folder only root can enter, such as /root.)
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to test read-only stores as root")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]


def make_read_only(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    probe = subprocess.run(
        [*unprivileged(), "touch", str(folder / "probe")], capture_output=True, check=False
    )
    assert probe.returncode != 0, "the read-only folder can still be written: the test is void"


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder for a read-only copy; made writable again afterwards, so it can be removed."""
    folder = tmp_path / "audit"
    folder.mkdir()
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def copy_workspace(ws: Path, to: Path, store_files: list[str]) -> None:
    """What an auditor is given: irctl.yaml and the store's files, not the private key."""
    shutil.copy(ws / "irctl.yaml", to / "irctl.yaml")
    (to / ".irctl").mkdir()
    for name in store_files:
        shutil.copy(ws / ".irctl" / name, to / ".irctl" / name)


def check_reads(audit: Path, run_id: str) -> None:
    as_reader = unprivileged()
    listed = irctl("runs", "list", "--json", cwd=audit, prefix=as_reader)
    no_bug(listed)
    assert listed.returncode == 0, listed.stderr
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [
        (run_id, "succeeded")
    ]
    status = irctl("status", run_id, "--json", cwd=audit, prefix=as_reader)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["steps"][0]["status"] == "succeeded"
    shown = irctl("transcript", "show", run_id, cwd=audit, prefix=as_reader)
    assert shown.returncode == 0, shown.stderr
    assert "integrity: verified" in shown.stdout
    verified = irctl("transcript", "verify", run_id, cwd=audit, prefix=as_reader)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("verified: ")
    assert "sealed by ed25519:" in verified.stdout


def test_a_read_only_copy_with_its_wal_and_shm_files_is_read(
    logged: tuple[Path, str], read_only: Path
) -> None:
    ws, run_id = logged
    names = sorted(p.name for p in (ws / ".irctl").glob("irctl.db*") if p.is_file())
    assert names == ["irctl.db", "irctl.db-shm", "irctl.db-wal"]
    copy_workspace(ws, read_only, names)
    make_read_only(read_only)
    before = {p: p.read_bytes() for p in read_only.rglob("*") if p.is_file()}
    check_reads(read_only, run_id)
    after = {p: p.read_bytes() for p in read_only.rglob("*") if p.is_file()}
    assert after == before


def test_a_read_only_checkpointed_copy_is_read(logged: tuple[Path, str], read_only: Path) -> None:
    """A store whose log was checkpointed into the file: one file, no -wal, no -shm."""
    ws, run_id = logged
    copy_workspace(ws, read_only, ["irctl.db", "irctl.db-wal"])
    db = sqlite3.connect(read_only / ".irctl" / "irctl.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()  # the last connection: the -wal file goes
    assert sorted(p.name for p in (read_only / ".irctl").iterdir()) == ["irctl.db"]
    make_read_only(read_only)
    check_reads(read_only, run_id)
    assert sorted(p.name for p in (read_only / ".irctl").iterdir()) == ["irctl.db"]


def test_a_read_only_copy_missing_its_shm_file_says_what_to_do(
    logged: tuple[Path, str], read_only: Path
) -> None:
    """Events still in the -wal file cannot be read without writing a -shm index beside it:
    a clear exit 2, never a store that silently lacks them."""
    ws, run_id = logged
    copy_workspace(ws, read_only, ["irctl.db", "irctl.db-wal"])
    make_read_only(read_only)
    for args in (["runs", "list"], ["status", run_id], ["transcript", "show", run_id]):
        done = irctl(*args, cwd=read_only, prefix=unprivileged())
        no_bug(done)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        message = " ".join(done.stderr.split())
        assert message.startswith(
            f"error: cannot read the store {read_only}/.irctl/irctl.db (from the store line of "
            f"{read_only}/irctl.yaml) where it is: its newest events are still in irctl.db-wal"
        ), message
        assert "copy irctl.db together with irctl.db-wal to a writable folder" in message


def test_a_copy_in_a_writable_folder_is_read_without_a_write(
    logged: tuple[Path, str], tmp_path: Path
) -> None:
    """The store file read-only, its folder writable: SQLite may add its -shm index there,
    irctl writes nothing into the database."""
    ws, run_id = logged
    audit = tmp_path / "copy"
    audit.mkdir()
    copy_workspace(ws, audit, ["irctl.db", "irctl.db-wal"])
    for path in (audit / ".irctl").iterdir():
        path.chmod(0o444)
    db_before = (audit / ".irctl" / "irctl.db").read_bytes()
    wal_before = (audit / ".irctl" / "irctl.db-wal").read_bytes()
    check_reads(audit, run_id)
    assert (audit / ".irctl" / "irctl.db").read_bytes() == db_before
    assert (audit / ".irctl" / "irctl.db-wal").read_bytes() == wal_before


# -- PostgreSQL --------------------------------------------------------------------------------


def test_postgresql_without_irctl_tables_is_not_created_into(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    with pytest.raises(NoStore) as raised:
        Store.open(fresh_pg_url, create=False, origin="from IRCTL_STORE")
    assert str(raised.value).startswith(f"no irctl store in {fresh_pg_url} (from IRCTL_STORE): ")
    ws = make_workspace(tmp_path / "ws", {"note": NOTE})
    done = irctl("runs", "list", cwd=ws, env={"IRCTL_STORE": fresh_pg_url})
    no_bug(done)
    assert done.returncode == 2, done.stderr
    assert " ".join(done.stderr.split()).startswith(
        f"error: no irctl store in {fresh_pg_url} (from IRCTL_STORE): the database has no irctl "
        "tables, so nothing has been recorded there; check the URL"
    )
    engine = create_engine(fresh_pg_url)
    try:
        assert inspect(engine).get_table_names() == []  # nothing was created
    finally:
        engine.dispose()
    # once something recorded there, a reader reads it, and cannot write
    writer = Store.open(fresh_pg_url)
    writer.create_run("r-1", runbook="note", initiator="alice", mode="live", incident=None, data={})
    writer.close()
    reader = Store.open(fresh_pg_url, create=False)
    try:
        assert reader.readonly
        assert [run.id for run in reader.runs()] == ["r-1"]
        with pytest.raises(StoreError, match="read-only transaction"):
            reader.create_run(
                "r-2", runbook="note", initiator="alice", mode="live", incident=None, data={}
            )
    finally:
        reader.close()


def test_after_a_command_the_database_file_alone_holds_every_event(
    recorded: tuple[Path, str], tmp_path: Path
) -> None:
    """irctl closes the store on the way out, so SQLite folds its log into irctl.db: an
    auditor who copies only that file has the whole run."""
    ws, run_id = recorded
    noted = irctl("note", run_id, "reviewed", cwd=ws)
    assert noted.returncode == 0, noted.stderr
    wal = ws / ".irctl" / "irctl.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.db"
    shutil.copyfile(ws / ".irctl" / "irctl.db", copy)
    with sqlite3.connect(copy) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM irctl_events WHERE run_id = ?", (run_id,)
        ).fetchone()
    shown = json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)
    assert shown["status"] == "succeeded"
    exported = irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws)
    assert count == len(exported.stdout.splitlines())
    assert '"type":"run.note"' in exported.stdout


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://irctl:s3cret-pw@127.0.0.1:1/irctl",  # no such driver
        "postgresql+psycopg://irctl:s3cret-pw@127.0.0.1:1/irctl?nosuchoption=1",
        "not a url://irctl:s3cret-pw@host/db",
    ],
)
def test_a_store_url_that_cannot_be_used_never_shows_its_password(
    recorded: tuple[Path, str], url: str
) -> None:
    ws, _ = recorded
    done = irctl("runs", "list", cwd=ws, env={"IRCTL_STORE": url})
    no_bug(done)
    assert done.returncode != 0, done.stdout
    assert "s3cret-pw" not in done.stdout + done.stderr, done.stderr
