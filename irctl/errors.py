"""The one error tree of irctl.

Every error a user can cause or meet is an ``IrctlError``; the CLI maps each
class to its exit code and prints its message, never a traceback.  Foreign
exceptions (SQLAlchemy, botocore, slack-sdk, web3) are wrapped ``from exc`` at
the boundary where they happen.

::

    IrctlError                      exit 1
    ├── UsageError                  exit 2  bad arguments, unknown runbook or run
    │   └── NoStore                 exit 2  a command that only reads found no store there
    ├── InvalidDocument             exit 2  runbook, drill or config fails to load
    ├── IntegrationError            exit 2  an integration cannot be loaded
    ├── SecretError                 exit 2  a secret reference cannot be resolved
    ├── StoreError                  exit 1  the store cannot be reached or is corrupt
    │   ├── CorruptEvent            exit 1  a stored event cannot be read back
    │   └── StoreUnavailable        exit 74 a full disk, a lost database: resume when it is back
    ├── ActionError                 exit 1  an action failed (recorded in the run, not raised)
    │   └── ActionTimeout
    ├── RunFailed                   exit 1  a run ended failed
    ├── RunWaiting                  exit 3  a run waits on people (approval, manual, in doubt)
    ├── RunInterrupted              exit 130 Ctrl-C stopped a run; it can be resumed
    ├── RunBusy                     exit 1  another process is executing the run
    └── VerificationFailed          exit 1  a transcript does not verify
"""

from __future__ import annotations

from dataclasses import dataclass


class IrctlError(Exception):
    """Base of every error irctl reports to a user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(IrctlError):
    """Bad arguments on the command line, or a runbook or run that does not exist."""

    exit_code = 2


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a document, pointing at ``file:line:column`` and the field path."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class NoStore(UsageError):
    """A command that only reads found no store where it looked: nothing was recorded there.

    ``location``: the file (or the URL, password hidden) irctl looked at; ``absent``: there
    is not even a file there (a SQLite store), else the database or file holds none of
    irctl's tables.
    """

    def __init__(self, message: str, *, location: str, absent: bool) -> None:
        super().__init__(message)
        self.location = location
        self.absent = absent


class InvalidDocument(IrctlError):
    """A runbook, drill or config file does not load; carries every problem found."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class IntegrationError(IrctlError):
    """An integration is not installed or fails to import; the message names the fix."""

    exit_code = 2


class ForeignDefinition(IntegrationError):
    """An action, notifier or check defined by a package that does not provide its namespace."""


class SecretError(IrctlError):
    """A secret reference cannot be resolved (unset variable, unreadable file)."""

    exit_code = 2


class StoreError(IrctlError):
    """The event store cannot be opened, written or read."""


class CorruptEvent(StoreError):
    """A stored event cannot be read back: its line is not an event, or it does not fold."""


class StoreUnavailable(StoreError):
    """The store cannot take a write or answer a read right now: its disk is full, or the
    database cannot be reached (after retrying for a while).  Nothing recorded is lost, and a
    run stopped by it can be resumed once the store is back (sysexits EX_IOERR)."""

    exit_code = 74


class ActionError(IrctlError):
    """An action failed.  ``retryable`` tells the engine whether a retry may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ActionTimeout(ActionError):
    """An action did not finish within its step's ``timeout``."""


class RunFailed(IrctlError):
    """A run ended in failure."""


class RunWaiting(IrctlError):
    """A run stopped to wait on people: an approval, a manual step or an in-doubt step."""

    exit_code = 3


class RunInterrupted(IrctlError):
    """A run was stopped by Ctrl-C or a signal; ``irctl resume`` continues it."""

    exit_code = 130


class RunBusy(IrctlError):
    """Another process holds the run's executor lock: it is executing the run right now."""


class VerificationFailed(IrctlError):
    """A transcript fails verification; the message names the first bad event."""
