"""``shell.exec``: run a program with an argument list, never through a shell.

The child gets a scrubbed environment: only ``PATH``, ``LANG``, ``LC_ALL``,
``HOME`` and ``TZ`` from irctl's own, the variables named in ``inherit_env``,
and ``env``.  Tokens in irctl's environment (``EXCHANGE_ADMIN_TOKEN``, AWS
keys) do not leak into scripts that were not given them.

The child runs in its own process group with stdin closed; on timeout or
cancellation (Ctrl-C) the whole group gets SIGTERM, then SIGKILL after a
short grace period.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from typing import Any

from pydantic import Field, field_validator

from irctl.actions import ActionContext, action
from irctl.builtins._common import Inputs, Seconds, bounded, excerpt, truncate_head, truncate_tail
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
    expect_exit: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="exit codes that mean success"
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
    env = {
        name: os.environ[name] for name in (*BASE_ENV, *inputs.inherit_env) if name in os.environ
    }
    env.update(inputs.env)
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """SIGTERM the process group, SIGKILL it after GRACE; return what output there was."""
    for sig, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, 1.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    # The group is dead, but something that left it still holds our pipes.
    proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return b"", b""


def _name(inputs: Exec) -> str:
    return shlex.quote(inputs.argv[0])


@action("shell.exec")
def exec_(inputs: Exec, ctx: ActionContext) -> dict[str, Any]:
    """Run a program (no shell) and check its exit code."""
    if ctx.cancelled.is_set():
        raise ActionError("cancelled", retryable=False)
    timeout = bounded(inputs.timeout, ctx, f"shell.exec {_name(inputs)}")
    try:
        proc = subprocess.Popen(
            inputs.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=inputs.cwd,
            env=child_env(inputs),
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        missing = inputs.cwd if inputs.cwd and not os.path.isdir(inputs.cwd) else inputs.argv[0]
        raise ActionError(f"shell.exec: not found: {missing}", retryable=False) from exc
    except OSError as exc:  # not executable, cwd not a directory, ...
        raise ActionError(
            f"shell.exec {_name(inputs)}: cannot start: {exc}", retryable=False
        ) from exc

    deadline = time.monotonic() + timeout
    while True:
        try:
            stdout, stderr = proc.communicate(
                timeout=min(POLL, max(0.0, deadline - time.monotonic()))
            )
            break
        except subprocess.TimeoutExpired:
            if ctx.cancelled.is_set():
                _kill_group(proc)
                raise ActionError("cancelled", retryable=False) from None
            if time.monotonic() >= deadline:
                _, err = _kill_group(proc)
                tail = excerpt(truncate_tail(err, 1000)[0])
                raise ActionTimeout(
                    f"shell.exec {_name(inputs)}: still running after {timeout:g}s; killed"
                    + (f"; stderr: {tail}" if tail else "")
                ) from None
        except BaseException:  # KeyboardInterrupt in the engine's thread: leave nothing behind
            _kill_group(proc)
            raise

    code = proc.returncode
    out_text, _ = truncate_head(stdout)
    err_text, _ = truncate_tail(stderr)
    if code not in inputs.expect_exit:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        tail = excerpt(err_text[-2000:]) or excerpt(out_text[-2000:])
        raise ActionError(
            f"shell.exec {_name(inputs)} {how} (expected {inputs.expect_exit})"
            + (f": {tail}" if tail else ""),
            retryable=code not in (126, 127),
        )
    return {"exit_code": code, "stdout": out_text, "stderr": err_text}


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
