"""``irctl validate``, ``irctl schema`` and ``irctl runbooks list``."""

import gc
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, out, print_json, runbooks_app
from irctl.errors import InvalidDocument, UsageError

if TYPE_CHECKING:
    from irctl.workspace import Workspace


def _shown(path: Path) -> Path:
    """``path`` relative to the current folder when it is inside it, as people type it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _workspace() -> "Workspace":
    """The current workspace, even when its irctl.yaml is broken (validate reports that)."""
    from irctl.workspace import CONFIG_NAME, Workspace

    try:
        return Workspace.find()
    except InvalidDocument:
        env = os.environ.get("IRCTL_WORKSPACE")
        here = (Path(env) if env else Path.cwd()).resolve()
        for folder in [here, *here.parents]:
            if (folder / CONFIG_NAME).is_file():
                return Workspace(folder, config_path=folder / CONFIG_NAME)
        return Workspace(here)


def _default_paths() -> list[Path]:
    workspace = _workspace()
    found = [p for p in (workspace.runbooks_dir, workspace.drills_dir) if p.is_dir()]
    config = workspace.root / "irctl.yaml"
    if config.is_file():
        found.append(config)
    if not found:
        raise UsageError(
            f"nothing to validate in {workspace.root}: no runbooks/, drills/ or irctl.yaml; "
            "give paths (irctl validate FILE...) or create a workspace with 'irctl init'"
        )
    return [_shown(p) for p in found]


@app.command("validate")
def validate_command(
    paths: list[Path] | None = typer.Argument(
        None,
        help="Files or folders to check (folders: every *.yaml and *.yml inside). "
        "Default: runbooks/, drills/ and irctl.yaml of the workspace.",
        show_default=False,
    ),
    check_integrations: bool = typer.Option(
        False,
        "--check-integrations",
        help="Also import other packages' integrations the runbooks name, to check their "
        "action names and inputs (irctl's own, such as aws, evm and slack, are always "
        "checked), and check each configured or named integration is ready: AWS "
        "credentials valid, the Slack token accepted; and that the installation key irctl.yaml "
        "names is the one in .irctl/. Slower; talks to them.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check runbooks, drills and the workspace config, and report every problem at once.

    Each problem is printed as "file:line:column: path: message", then a
    summary line.  Exit code 0 when everything is valid, 2 when anything is not.

    Checks: YAML syntax and duplicate keys; unknown, missing and mistyped fields;
    duplicate step ids; unknown actions and their inputs; approval policies;
    template syntax; templates reading later steps, undeclared params or
    secrets, or `item` outside for_each; param defaults; and that each
    drill names an existing runbook and gives it valid params.

    Examples:

      irctl validate                          # the whole workspace
      irctl validate runbooks/hot-wallet.yaml
      irctl validate runbooks/ --json         # for CI annotations
      irctl validate --check-integrations     # and check AWS and Slack are ready
    """
    # Loading the models and integrations allocates much and frees little: collecting
    # garbage meanwhile only slows a short, read-only command (~8 ms).
    collecting = gc.isenabled()
    gc.disable()
    try:
        from irctl.runbook.loader import validate_paths

        targets = list(paths) if paths else _default_paths()
        count, problems = validate_paths(targets, check_integrations=check_integrations)
    finally:
        if collecting:
            gc.enable()
    if check_integrations:
        problems = [*problems, *_readiness(targets)]
    if as_json:
        print_json(
            [
                {
                    "file": d.file,
                    "line": d.line,
                    "column": d.column,
                    "path": d.path,
                    "message": d.message,
                }
                for d in problems
            ]
        )
    else:
        for problem in problems:
            sys.stdout.write(f"{problem}\n")
        files = "file" if count == 1 else "files"
        found = "problem" if len(problems) == 1 else "problems"
        summary = f"{count} {files} checked, {len(problems)} {found}"
        sys.stdout.write(f"{summary}\n")
    if problems:
        raise typer.Exit(2)


def _readiness(targets: list[Path]) -> list[Any]:
    """What each integration's readiness check reports (credentials, reachability)."""
    from irctl.engine.preflight import check_ready, installation_key_problems, namespaces_named
    from irctl.runbook.loader import _expand
    from irctl.workspace import Workspace

    try:
        workspace = Workspace.find()
    except InvalidDocument:
        return []  # irctl.yaml's own problems are reported already
    named = namespaces_named(_expand(targets))
    return [
        *installation_key_problems(workspace),
        *check_ready(dict(workspace.config.integrations), named, workspace.config_path),
    ]


class SchemaKind(StrEnum):
    runbook = "runbook"
    drill = "drill"
    config = "config"


@app.command("schema")
def schema_command(
    kind: SchemaKind | None = typer.Option(
        None,
        "--kind",
        help="Only the schema of one kind of file. Default: runbooks and drills together.",
        show_default=False,
    ),
) -> None:
    """Print the JSON Schema of runbooks and drills, for editors and CI.

    Point your editor's YAML language server at it to get completion and
    errors as you type.

    Examples:

      irctl schema > irctl.schema.json
      irctl schema --kind config > irctl-config.schema.json

    Then, at the top of a runbook:  # yaml-language-server: $schema=irctl.schema.json
    """
    from irctl.runbook.loader import json_schema

    print_json(json_schema(kind.value if kind is not None else None))


@runbooks_app.command("list")
def runbooks_list_command(as_json: bool = JSON_OPTION) -> None:
    """List the runbooks in the workspace's runbooks/ folder: id, severity, steps, title.

    Files that do not load are named on stderr; 'irctl validate' says why.

    Examples:

      irctl runbooks list
      irctl runbooks list --json | jq -r '.[].id'
    """
    from irctl.runbook.loader import load_runbook

    workspace = _workspace()
    folder = workspace.runbooks_dir
    if not folder.is_dir():
        raise UsageError(f"no runbooks/ folder in {workspace.root}; create one with 'irctl init'")
    rows: list[dict[str, Any]] = []
    broken: list[tuple[Path, int]] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            runbook = load_runbook(_shown(path), check_integrations=False)
        except InvalidDocument as exc:
            broken.append((_shown(path), len(exc.diagnostics)))
            continue
        rows.append(
            {
                "id": runbook.id,
                "title": runbook.title,
                "severity": runbook.severity,
                "steps": sum(len(step.walk()) for step in runbook.steps),
                "tags": list(runbook.tags),
                "owners": list(runbook.owners),
                "file": str(_shown(path)),
            }
        )
    if as_json:
        print_json(rows)
    elif not rows:
        err.print(f"no runbooks in {escape(str(_shown(folder)))}")
    else:
        width = max(len("ID"), *(len(row["id"]) for row in rows))
        out.print(f"[bold]{'ID':<{width}}  SEVERITY  STEPS  TITLE[/bold]", soft_wrap=True)
        for row in rows:
            line = f"{row['id']:<{width}}  {row['severity']:<8}  {row['steps']:>5}  {row['title']}"
            out.print(escape(line), soft_wrap=True)
    for path, count in broken:
        problems = "problem" if count == 1 else "problems"
        err.print(
            f"[yellow]skipped[/yellow] {escape(str(path))}: {count} {problems}; "
            f"run 'irctl validate {escape(str(path))}'",
            soft_wrap=True,
        )
