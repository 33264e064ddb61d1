"""The ``irctl`` command: a thin shell over the library, one module per command group.

Owns parsing the arguments, what people see at the terminal (the run view, tables, JSON) and,
as the one place that does, mapping errors to exit codes and messages.  At the top of the
layers it may import every package of the library and the first-party integrations it drives
(``irctl safe``, ``irctl allowlist``, ``irctl watch``, Slack's approval message, the demo's AWS
and chain sandboxes); the stand-ins only in ``irctl demo``, through :mod:`irctl.testing`.  Nothing
imports it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys

from irctl.errors import IrctlError

#: Exit code when the machine refused a file operation (sysexits EX_IOERR).
EXIT_IO = 74

COMMAND_MODULES = (
    "validate", "runs", "approvals", "transcript", "admin", "serve", "drill", "safe", "allowlist",
    "reserves", "store", "watch",
)  # fmt: skip

#: The module that defines each top-level command and group.  ``irctl NAME ...`` imports only
#: that module, so typer builds its commands and not all fifty (~18 ms of every command);
#: anything else (``--help``, a misspelt name) imports them all.  A test keeps this in step.
COMMANDS = {
    "validate": "validate", "schema": "validate", "runbooks": "validate",
    "plan": "runs", "run": "runs", "resume": "runs", "answer": "runs", "abort": "runs",
    "note": "runs", "status": "runs", "runs": "runs", "retry": "runs", "skip": "runs",
    "adopt": "runs",
    "approve": "approvals", "deny": "approvals", "approvals": "approvals",
    "init": "admin", "demo": "admin", "keys": "admin", "doctor": "admin",
    "serve": "serve", "transcript": "transcript",
    "drill": "drill", "scheduler": "drill", "safe": "safe", "allowlist": "allowlist",
    "reserves": "reserves", "store": "store", "watch": "watch",
}  # fmt: skip


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> None:
    """SIGTERM (a supervisor, ``kill``, a container stopping) stops a run as Ctrl-C does:
    running steps are recorded as interrupted and the run can be resumed."""
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _close_stores() -> None:
    """Close the stores the command opened, so SQLite folds its log into ``irctl.db``.

    Only when no other thread is left: one still recording (an interrupted run's worker
    on its way out) keeps its connection, and SQLite keeps the log, losing nothing.
    """
    import threading

    workspace = sys.modules.get("irctl.workspace")
    if workspace is None or threading.active_count() > 1:
        return
    with contextlib.suppress(Exception):  # the outcome is recorded; closing is tidying up
        workspace.close_stores()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``irctl`` script."""
    from irctl.cli._app import app, err, escape

    args = sys.argv[1:] if argv is None else argv
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            err.print(f"error: the argument '{escape(shown)}' is not UTF-8 text", highlight=False)
            sys.exit(2)
    wanted = COMMANDS.get(args[0]) if args else None
    for name in (wanted,) if wanted else COMMAND_MODULES:
        __import__(f"irctl.cli.{name}")
    _stop_on_sigterm()
    try:
        # standalone mode: typer handles --help, usage errors (exit 2) and typer.Exit
        app(args=argv, prog_name="irctl")
    except IrctlError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as exc:
        if os.environ.get("IRCTL_DEBUG"):
            raise
        # The machine said no (permissions, a full disk, a name too long): not a bug in irctl.
        where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc)
        err.print(
            f"[red]error:[/red] {escape(reason)}{': ' + escape(where) if where else ''}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_IO)
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
        _close_stores()
        # Everything built so far lives until exit: leave it out of the collection Python runs
        # at shutdown, which otherwise walks every model and schema (~35 ms of each command).
        gc.freeze()
