"""The ``irctl`` entry point: which command modules it loads for a command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import irctl


def _modules_of(typer_app: Any) -> set[str]:
    found = {info.callback.__module__ for info in typer_app.registered_commands}
    for group in typer_app.registered_groups:
        found |= _modules_of(group.typer_instance)
    return found


def test_the_command_table_names_the_module_of_every_command() -> None:
    """``irctl NAME`` imports only COMMANDS[NAME]: it must define all of NAME."""
    from irctl import cli
    from irctl.cli._app import app

    for name in cli.COMMAND_MODULES:
        __import__(f"irctl.cli.{name}")
    defined: dict[str, set[str]] = {}
    for info in app.registered_commands:
        defined.setdefault(info.name or "", set()).add(info.callback.__module__)
    for group in app.registered_groups:
        defined.setdefault(group.name or "", set()).update(_modules_of(group.typer_instance))
    assert defined == {name: {f"irctl.cli.{module}"} for name, module in cli.COMMANDS.items()}


def test_help_and_a_misspelt_command_still_see_every_command(tmp_path: Path) -> None:
    from irctl.cli import COMMANDS

    shown = irctl("--help", cwd=tmp_path)
    assert shown.returncode == 0
    listed = {line.split()[0] for line in shown.stdout.split("Commands:")[1].splitlines() if line}
    assert listed == set(COMMANDS)
    wrong = irctl("valdate", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "No such command 'valdate'. Did you mean 'validate'?" in wrong.stderr
    command_help = irctl("transcript", "--help", cwd=tmp_path)
    assert command_help.returncode == 0
    assert "verify" in command_help.stdout
