"""``irctl store info``, ``irctl store upgrade`` and ``irctl store migrate``."""

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, out, print_json

store_app = typer.Typer(
    help="The store: its schema version, upgrades, moving it.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


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
    store = ws.reader
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
