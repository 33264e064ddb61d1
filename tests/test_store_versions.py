"""The store's schema version on SQLite and PostgreSQL: a new store is made at the code's
version, an older one is read but never written to until ``irctl store upgrade``, a newer one
is refused; ``irctl store info`` and ``irctl store upgrade`` as the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from irctl.errors import StoreError
from irctl.journal.store import SCHEMA_VERSION, Store
from tests.helpers import irctl, make_workspace

RUNBOOK = """\
irctl: 1
kind: runbook
id: two
title: Two steps
params:
  out: {type: string}
steps:
  - id: a
    action: testing.record
    with: {path: "{{ params.out }}", key: a}
  - id: b
    action: testing.record
    with: {path: "{{ params.out }}", key: b}
"""


DIALECT = {"sqlite": "sqlite", "postgr": "postgresql"}


def _sql(url: str, *statements: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = conn.execute(text(statement))
                rows = [tuple(r) for r in result] if result.returns_rows else []
            return rows
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _version_row(url: str) -> list[tuple[object, ...]]:
    return _sql(url, "SELECT value FROM irctl_meta WHERE key = 'schema'")


def _made_by_an_earlier_release(url: str, how: str) -> None:
    """A store with a run in it, as an earlier irctl left it: version 1 in irctl_meta, or no
    irctl_meta at all (which counts as version 1)."""
    store = Store.open(url)
    store.create_run("r-old", runbook="two", initiator="alice", mode="live", incident=None,
                     data={"note": "before the upgrade"})  # fmt: skip
    store.append("r-old", [("run.started", {})])
    store.close()
    if how == "version 1":
        _sql(url, "UPDATE irctl_meta SET value = '1' WHERE key = 'schema'")
    else:
        _sql(url, "DROP TABLE irctl_meta")


def test_a_new_store_is_made_at_the_codes_version(store_url: str) -> None:
    Store.open(store_url).close()
    assert _version_row(store_url) == [(str(SCHEMA_VERSION),)]
    reader = Store.open(store_url, create=False)
    try:
        assert reader.schema_version == SCHEMA_VERSION
        assert reader.counts() == (0, 0)
    finally:
        reader.close()


@pytest.mark.parametrize("how", ["version 1", "no irctl_meta"])
def test_an_older_store_is_read_never_written_until_upgraded(store_url: str, how: str) -> None:
    _made_by_an_earlier_release(store_url, how)
    before = _tables(store_url)
    with pytest.raises(StoreError) as refused:
        Store.open(store_url)
    assert str(refused.value) == (
        f"the store is at schema version 1; this irctl needs {SCHEMA_VERSION}: "
        "run irctl store upgrade"
    )
    reader = Store.open(store_url, create=False)  # a read works and changes nothing
    try:
        assert reader.schema_version == 1
        assert [e.type for e in reader.events("r-old")] == ["run.created", "run.started"]
        assert reader.counts() == (1, 2)
    finally:
        reader.close()
    assert _tables(store_url) == before
    if how == "version 1":
        assert _version_row(store_url) == [("1",)]

    done = Store.upgrade(store_url)
    assert (done.before, done.after) == (1, SCHEMA_VERSION)
    assert done.done == [
        "1 -> 2: keep the schema version in irctl_meta, creating the tables it lacked"
    ]
    assert _version_row(store_url) == [(str(SCHEMA_VERSION),)]
    again = Store.upgrade(store_url)
    assert (again.before, again.after, again.done) == (SCHEMA_VERSION, SCHEMA_VERSION, [])

    store = Store.open(store_url)  # now a writer opens it, and the chain goes on
    try:
        store.append("r-old", [("run.succeeded", {})])
        assert [e.seq for e in store.events("r-old")] == [1, 2, 3]
    finally:
        store.close()


def test_a_store_made_by_a_newer_irctl_is_refused_by_writers_readers_and_upgrade(
    store_url: str,
) -> None:
    Store.open(store_url).close()
    newer = SCHEMA_VERSION + 1
    _sql(store_url, f"UPDATE irctl_meta SET value = '{newer}' WHERE key = 'schema'")  # noqa: S608
    message = (
        f"the store is at schema version {SCHEMA_VERSION + 1}, made by a newer irctl (this one "
        f"knows up to {SCHEMA_VERSION}): upgrade irctl"
    )
    for opening in (
        lambda: Store.open(store_url),
        lambda: Store.open(store_url, create=False),
        lambda: Store.upgrade(store_url),
    ):
        with pytest.raises(StoreError) as refused:
            opening()
        assert str(refused.value) == message
    assert _version_row(store_url) == [(str(SCHEMA_VERSION + 1),)]


def test_a_version_that_is_not_a_number_is_refused(store_url: str) -> None:
    Store.open(store_url).close()
    _sql(store_url, "UPDATE irctl_meta SET value = 'two' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="schema version 'two' is not a number"):
        Store.open(store_url, create=False)


# -- the commands --------------------------------------------------------------------------


def test_store_info_and_upgrade_commands(store_url: str, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"two": RUNBOOK})
    env = {"IRCTL_STORE": store_url}
    out = tmp_path / "out.txt"
    first = irctl("run", "two", "-p", f"out={out}", "--yes", cwd=ws, env=env)
    assert first.returncode == 0, first.stderr

    shown = irctl("store", "info", "--json", cwd=ws, env=env)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    events = _sql(store_url, "SELECT count(*) FROM irctl_events")[0][0]
    assert info == {
        "url": info["url"], "origin": "from IRCTL_STORE", "dialect": DIALECT[store_url[:6]],
        "schema_version": SCHEMA_VERSION, "code_schema_version": SCHEMA_VERSION,
        "upgrade_needed": False, "runs": 1, "events": events,
    }  # fmt: skip
    assert events > 4
    plain = irctl("store", "info", cwd=ws, env=env)
    assert f"schema version: {SCHEMA_VERSION}\n" in plain.stdout
    assert "runs: 1\n" in plain.stdout

    _sql(store_url, "UPDATE irctl_meta SET value = '1' WHERE key = 'schema'")
    refused = irctl("run", "two", "-p", f"out={out}", "--yes", cwd=ws, env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: the store is at schema version 1; this irctl needs {SCHEMA_VERSION}: run "
        "irctl store upgrade"
    )
    old = json.loads(irctl("store", "info", "--json", cwd=ws, env=env).stdout)
    assert (old["schema_version"], old["upgrade_needed"]) == (1, True)
    status = irctl("runs", "list", "--json", cwd=ws, env=env)  # reading still works
    assert status.returncode == 0, status.stderr
    assert _version_row(store_url) == [("1",)]

    upgraded = irctl("store", "upgrade", cwd=ws, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded the store from schema version 1 to {SCHEMA_VERSION}" in upgraded.stdout
    assert "1 -> 2: keep the schema version in irctl_meta" in upgraded.stderr
    nothing = irctl("store", "upgrade", "--json", cwd=ws, env=env)
    assert json.loads(nothing.stdout) == {
        "before": SCHEMA_VERSION, "after": SCHEMA_VERSION, "steps": []
    }  # fmt: skip
    again = irctl("run", "two", "-p", f"out={out}", "--yes", cwd=ws, env=env)
    assert again.returncode == 0, again.stderr


def test_store_info_hides_the_password(fresh_pg_url: str, tmp_path: Path) -> None:
    Store.open(fresh_pg_url).close()
    with_password = fresh_pg_url.replace("irctl@", "irctl:hunter2-secret@")
    ws = make_workspace(tmp_path / "ws")
    shown = irctl("store", "info", cwd=ws, env={"IRCTL_STORE": with_password})
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout + shown.stderr
    assert "irctl:***@127.0.0.1" in shown.stdout


def test_store_commands_on_no_store_are_exit_2(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    for command in (["store", "info"], ["store", "upgrade"]):
        result = irctl(*command, cwd=ws)
        assert result.returncode == 2, result.stderr
        assert "no irctl store at" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (ws / ".irctl" / "irctl.db").exists()
