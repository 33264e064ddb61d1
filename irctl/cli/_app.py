"""The typer apps every command module adds itself to, and shared CLI helpers."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, cast

import typer

if TYPE_CHECKING:
    from rich.console import Console

HELP = """irctl — security incident response runbooks for exchanges and custodians.

Runbooks (YAML) describe a breach response step by step; irctl plans them,
runs them with approvals and a durable journal, and leaves a signed,
hash-chained transcript that can be verified offline.

Exit codes: 0 success · 1 failed run or check · 2 bad input · 3 waiting on people.
"""

app = typer.Typer(
    name="irctl",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: typer's rich help costs ~80 ms of every --help
    context_settings={"help_option_names": ["-h", "--help"]},
)
runbooks_app = typer.Typer(help="The runbook library.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs recorded in the store.", no_args_is_help=True)
transcript_app = typer.Typer(
    help="Show, verify and export the tamper-evident record of a run.", no_args_is_help=True
)
keys_app = typer.Typer(help="Operator and installation keys.", no_args_is_help=True)
approvals_app = typer.Typer(help="Approvals of dangerous steps.", no_args_is_help=True)
app.add_typer(runbooks_app, name="runbooks")
app.add_typer(runs_app, name="runs")
app.add_typer(transcript_app, name="transcript")
app.add_typer(keys_app, name="keys")
app.add_typer(approvals_app, name="approvals")


class _LazyConsole:
    """A rich Console made on first use: importing rich costs ~35 ms that ``--help`` and
    ``validate`` need not pay."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)

    # `with console:` (rich's Live.stop uses it) looks dunders up on the type, not __getattr__
    def __enter__(self) -> Console:
        entered: Console = self.__getattr__("__enter__")()
        return entered

    def __exit__(self, *exc_info: object) -> None:
        self.__getattr__("__exit__")(*exc_info)


out = cast("Console", _LazyConsole(highlight=False, soft_wrap=False))
err = cast("Console", _LazyConsole(stderr=True, highlight=False))


def escape(text: str) -> str:
    """Escape rich markup and control characters in text that came from a user or a run."""
    from rich.markup import escape as rich_escape

    from irctl.runbook.located import printable

    return rich_escape(printable(text))


JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of text.")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def folding(table: Any) -> Any:
    """``table`` with every column folding what does not fit onto the next line, never cut
    with an ellipsis: a run id or a failure message is whole at 80 columns and in a pipe.

    A column made ``no_wrap`` (a run id given its whole width, to copy into a command) is
    left so: letting it wrap too makes rich drop the second line of the other cells."""
    for column in table.columns:
        column.overflow = "fold"
    return table
