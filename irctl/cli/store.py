"""``irctl store info``, ``irctl store upgrade`` and ``irctl store migrate``."""

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, out, print_json

store_app = typer.Typer(
    help="The store: its schema version, upgrades, moving it.", no_args_is_help=True
)
app.add_typer(store_app, name="store")

if TYPE_CHECKING:
    from irctl.journal.store import Progress, Store
    from irctl.workspace import Workspace


@store_app.command("info")
def info_command(as_json: bool = JSON_OPTION) -> None:
    """Where the store is, its database, its schema version and how many runs and events it holds.

    Only reads: a store that is not there is exit 2, and a store at an older schema version
    is shown as it is (nothing is upgraded; 'irctl store upgrade' does that).
    """
    from irctl.journal.store import SCHEMA_VERSION
    from irctl.workspace import Workspace

    ws = Workspace.find()
    _, origin, _ = ws.store_source
    with _reader(ws) as store:
        runs, events = store.counts()
    found = {
        "url": store.where, "origin": origin, "dialect": store.dialect,
        "schema_version": store.schema_version, "code_schema_version": SCHEMA_VERSION,
        "upgrade_needed": store.schema_version < SCHEMA_VERSION, "runs": runs, "events": events,
    }  # fmt: skip
    if as_json:
        print_json(found)
        return
    out.print(f"store: {escape(store.where)} ({escape(origin)})", soft_wrap=True)
    out.print(f"database: {store.dialect}")
    version = f"schema version: {store.schema_version}"
    if store.schema_version < SCHEMA_VERSION:
        version += f" (this irctl needs {SCHEMA_VERSION}: run irctl store upgrade)"
    out.print(version)
    out.print(f"runs: {runs}")
    out.print(f"events: {events}")


@store_app.command("upgrade")
def upgrade_command(as_json: bool = JSON_OPTION) -> None:
    """Bring the store to this irctl's schema version: every step it lacks, in one transaction.

    Nothing else upgrades a store: a command that records refuses a store at an older
    version, and one that reads never changes it. A store already at this version is left
    as it is (exit 0); one made by a newer irctl is refused (exit 1).
    """
    from irctl.journal.store import Store
    from irctl.workspace import Workspace

    ws = Workspace.find()
    url, origin, _ = ws.store_source
    done = Store.upgrade(url, workspace=ws.root, origin=origin)
    if as_json:
        print_json({"before": done.before, "after": done.after, "steps": done.done})
        return
    if not done.done:
        out.print(f"the store is at schema version {done.after}: nothing to upgrade")
        return
    for line in done.done:
        err.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
    out.print(f"upgraded the store from schema version {done.before} to {done.after}")


#: Without a terminal, a progress line every this many runs.
PROGRESS_EVERY = 100


@store_app.command("migrate")
def migrate_command(
    to: str = typer.Option(
        ..., "--to", metavar="URL",
        help="The store to copy into: a SQLAlchemy URL (postgresql+psycopg://user@host/db) "
        "of a database that holds no irctl runs.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:  # fmt: skip
    """Copy the workspace's store into another database (SQLite to PostgreSQL), and verify it.

    Every run and every event is copied exactly as stored (the same lines, seqs and hashes),
    with the runs' salts, the used-once keys and the drill scheduler's jobs, in one
    transaction: the copy is whole or not there. The target is made at this irctl's schema
    version; a target that already holds runs is refused and nothing is written. Then each
    copied run is verified on the target as 'irctl transcript verify' does (exit 1 if one
    that verifies here does not verify there).

    Stop every irctl process using the store first (runs, irctl serve, the scheduler): a
    store that changes while it is copied is not copied. Afterwards point the workspace at
    the target (store: in irctl.yaml, or IRCTL_STORE).

    Example:

      irctl store migrate --to postgresql+psycopg://irctl@db.internal/irctl
    """
    from irctl.errors import VerificationFailed
    from irctl.record.migration import migrate
    from irctl.workspace import Workspace

    ws = Workspace.find()
    key = ws.public_key()
    with _reader(ws) as source, _progress() as (copying, verifying):
        found = migrate(
            source, to, workspace=ws.root, public_keys=[key] if key else None,
            progress=copying, verifying=verifying,
        )  # fmt: skip
    if as_json:
        print_json(found.as_dict())
    else:
        out.print(
            f"copied {found.runs} runs and {found.events} events from {escape(found.source)} "
            f"to {escape(found.target)}", soft_wrap=True,
        )  # fmt: skip
        others = ", ".join(f"{name} {rows}" for name, rows in found.tables.items() if rows)
        if others:
            out.print(f"other rows copied: {escape(others)}", soft_wrap=True)
        out.print(f"verified on the target: {found.verified} of {found.runs} runs")
        for run_id, problem in found.as_they_were.items():
            err.print(
                f"warning: run {escape(run_id)} does not verify in the source either (copied "
                f"as it is): {escape(problem)}", highlight=False, soft_wrap=True,
            )  # fmt: skip
    if not found.ok:
        run_id, problem = next(iter(found.broken.items()))
        raise VerificationFailed(
            f"{len(found.broken)} copied runs do not verify on the target, first run "
            f"{run_id}: {problem}; the source is unchanged"
        )


@contextlib.contextmanager
def _reader(ws: "Workspace") -> "Iterator[Store]":
    """The workspace's store opened to read only, through SQLAlchemy whatever the database
    (what these commands do needs the whole store, not the quick SQLite reader)."""
    from irctl.journal.store import Store

    url, origin, _ = ws.store_source
    store = Store.open(
        url, workspace=ws.root, create=False, origin=origin, retry=ws.config.store_retry
    )
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _progress() -> "Iterator[tuple[Progress, Progress]]":
    """Progress of the copy and of the verification on stderr: a bar at a terminal, else a
    line every PROGRESS_EVERY runs."""
    if err.is_terminal:
        from rich.progress import Progress as Bar

        with Bar(console=err, transient=True) as bar:
            tasks: dict[str, Any] = {}

            def shown(what: str) -> "Progress":
                def update(done: int, total: int) -> None:
                    if what not in tasks:
                        tasks[what] = bar.add_task(what, total=total)
                    bar.update(tasks[what], completed=done)

                return update

            yield shown("copying runs"), shown("verifying runs")
        return

    def lines(what: str) -> "Progress":
        def update(done: int, total: int) -> None:
            if done % PROGRESS_EVERY == 0 or done == total:
                err.print(f"{what} {done}/{total} runs", highlight=False)

        return update

    yield lines("copied"), lines("verified")
