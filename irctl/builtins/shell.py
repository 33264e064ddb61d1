"""``shell.exec``: run a program with an argument list, never through a shell.

The child gets a scrubbed environment: only ``PATH``, ``LANG``, ``LC_ALL``,
``HOME`` and ``TZ`` from irctl's own, the variables named in ``inherit_env``,
and ``env``.  Tokens in irctl's environment (``EXCHANGE_ADMIN_TOKEN``, AWS
keys) do not leak into scripts that were not given them.

The child runs in its own process group with stdin from /dev/null; on timeout or
cancellation (Ctrl-C) the whole group gets SIGTERM, then SIGKILL after a
short grace period.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shlex
import signal
import subprocess
import tempfile
import time
from typing import Annotated, Any

from pydantic import Field, field_validator

from irctl.actions import ActionContext, action
from irctl.builtins._common import (
    OUTPUT_LIMIT,
    Inputs,
    Seconds,
    bounded,
    excerpt,
    truncate_head,
    truncate_tail,
)
from irctl.errors import ActionError, ActionTimeout

#: Variables of irctl's environment every child gets (when set).
BASE_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "TZ")

#: How often a waiting call looks at ``ctx.cancelled``.
POLL = 0.1
#: Seconds between SIGTERM and SIGKILL.
GRACE = 2.0


class Exec(Inputs):
    """A program, its arguments, and what counts as success."""

    argv: list[str] = Field(
        min_length=1, description="program and arguments; passed as-is, no shell interpretation"
    )
    cwd: str | None = Field(default=None, description="working directory of the program")
    env: dict[str, str] = Field(
        default_factory=dict, description="extra environment variables for the program"
    )
    inherit_env: list[str] = Field(
        default_factory=list,
        description="names of irctl's environment variables passed through; the rest of the "
        "environment is removed except PATH, LANG, LC_ALL, HOME and TZ",
    )
    timeout: Seconds = Field(
        default=300.0,
        gt=0,
        description="seconds before the program is killed (capped by the step's)",
    )
    expect_exit: list[Annotated[int, Field(ge=-255, le=255)]] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="exit codes that mean success: 0-255, or -N for killed by signal N",
    )

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("the program name is empty")
        if any("\0" in arg for arg in value):
            raise ValueError("an argument contains a NUL byte")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or "=" in name or "\0" in name or "\0" in text:
                raise ValueError(f"invalid environment variable {name!r}")
        return value


def child_env(inputs: Exec) -> dict[str, str]:
    """The scrubbed environment the program runs with."""
    env = {}
    for name in (*BASE_ENV, *inputs.inherit_env):
        if (value := os.environ.get(name)) is not None:
            env[name] = value
    env.update(inputs.env)
    return env


def _capture() -> int:
    """A file descriptor the child writes its output to (memory-backed where possible).

    Files, not pipes: nothing has to drain them while the child runs, a
    grandchild that keeps them open cannot make us wait, and only the kept
    64 KiB are ever read back.
    """
    if hasattr(os, "memfd_create"):
        return os.memfd_create("irctl-shell-exec", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="irctl-shell-exec-")
    os.unlink(path)
    return fd


def _head(fd: int) -> str:
    size = os.fstat(fd).st_size
    text, _ = truncate_head(os.pread(fd, min(size, OUTPUT_LIMIT), 0))
    return (
        text + f"\n…[truncated: {size - OUTPUT_LIMIT} more bytes]" if size > OUTPUT_LIMIT else text
    )


def _tail(fd: int) -> str:
    size = os.fstat(fd).st_size
    start = max(0, size - OUTPUT_LIMIT)
    text, _ = truncate_tail(os.pread(fd, size - start, start))
    return f"…[truncated: {start} earlier bytes]\n{text}" if start else text


class _Waiter:
    """Waits for the child with a timeout: on its pidfd when the OS has them, else by polling."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.poller: select.poll | None = None
        self.pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(proc.pid)
            except OSError:  # an older kernel
                return
            self.poller = select.poll()
            self.poller.register(self.pidfd, select.POLLIN)

    def wait(self, seconds: float) -> bool:
        """True once the child has exited (and been reaped)."""
        if self.poller is not None:
            if not self.poller.poll(max(0, math.ceil(seconds * 1000))):
                return False
            self.proc.wait()
            return True
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it after GRACE, reap the child."""
    for sig, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone; finish off what it left in its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        return


def _name(inputs: Exec) -> str:
    return shlex.quote(inputs.argv[0])


@action("shell.exec")
def exec_(inputs: Exec, ctx: ActionContext) -> dict[str, Any]:
    """Run a program (no shell) and check its exit code."""
    if ctx.cancelled.is_set():
        raise ActionError("cancelled", retryable=False)
    timeout = bounded(inputs.timeout, ctx, f"shell.exec {_name(inputs)}")
    out_fd, err_fd = _capture(), _capture()
    try:
        try:
            # process_group=0, not start_new_session: setsid also puts the child in a new
            # scheduler autogroup, which makes every call ~1 ms slower on Linux.
            proc = subprocess.Popen(
                inputs.argv,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                cwd=inputs.cwd,
                env=child_env(inputs),
                process_group=0,
            )
        except FileNotFoundError as exc:
            missing = inputs.cwd if inputs.cwd and not os.path.isdir(inputs.cwd) else inputs.argv[0]
            raise ActionError(f"shell.exec: not found: {missing}", retryable=False) from exc
        except OSError as exc:  # not executable, cwd not a directory, ...
            raise ActionError(
                f"shell.exec {_name(inputs)}: cannot start: {exc}", retryable=False
            ) from exc
        _wait(proc, inputs, ctx, timeout, err_fd)
        code = proc.returncode
        stdout, stderr = _head(out_fd), _tail(err_fd)
    finally:
        os.close(out_fd)
        os.close(err_fd)

    if code not in inputs.expect_exit:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        tail = excerpt(stderr[-2000:]) or excerpt(stdout[-2000:])
        raise ActionError(
            f"shell.exec {_name(inputs)} {how} (expected {inputs.expect_exit})"
            + (f": {tail}" if tail else ""),
            retryable=code not in (126, 127),
        )
    return {"exit_code": code, "stdout": stdout, "stderr": stderr}


def _wait(
    proc: subprocess.Popen[bytes], inputs: Exec, ctx: ActionContext, timeout: float, err_fd: int
) -> None:
    """Wait for the child; kill its group on timeout, cancellation or an interrupt."""
    deadline = time.monotonic() + timeout
    waiter = _Waiter(proc)
    try:
        while not waiter.wait(min(POLL, max(0.0, deadline - time.monotonic()))):
            if ctx.cancelled.is_set():
                _kill_group(proc)
                raise ActionError("cancelled", retryable=False)
            if time.monotonic() >= deadline:
                _kill_group(proc)
                tail = excerpt(_tail(err_fd)[-1000:])
                raise ActionTimeout(
                    f"shell.exec {_name(inputs)}: still running after {timeout:g}s; killed"
                    + (f"; stderr: {tail}" if tail else "")
                )
    except BaseException:  # KeyboardInterrupt in the engine's thread: leave nothing behind
        if proc.returncode is None:
            _kill_group(proc)
        raise
    finally:
        waiter.close()


@exec_.simulate
def _simulate(inputs: Exec, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"run {shlex.join(inputs.argv)}" + (f" in {inputs.cwd}" if inputs.cwd else ""),
        "argv": list(inputs.argv),
        "env_names": sorted(child_env(inputs)),  # values may be secrets
        "exit_code": inputs.expect_exit[0],
        "stdout": "",
        "stderr": "",
    }
