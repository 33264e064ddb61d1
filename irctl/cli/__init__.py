"""The ``irctl`` command: a thin shell over the library, one module per command group.

This is the one place that maps errors to exit codes and messages.
"""

from __future__ import annotations

import gc
import os
import sys

from irctl.errors import IrctlError

COMMAND_MODULES = (
    "validate", "runs", "approvals", "transcript", "admin", "serve", "drill", "safe", "allowlist",
)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``irctl`` script."""
    from irctl.cli._app import app, err, escape

    for name in COMMAND_MODULES:
        __import__(f"irctl.cli.{name}")
    try:
        # standalone mode: typer handles --help, usage errors (exit 2) and typer.Exit
        app(args=argv, prog_name="irctl")
    except IrctlError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("IRCTL_DEBUG"):
            raise
        err.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))}\n"
            "This is a bug in irctl; run again with IRCTL_DEBUG=1 to see the traceback.",
            soft_wrap=True,
        )
        sys.exit(70)
    finally:
        # Everything built so far lives until exit: leave it out of the collection Python runs
        # at shutdown, which otherwise walks every model and schema (~35 ms of each command).
        gc.freeze()
