"""Pieces shared by the built-in actions: durations, deadlines, truncation."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from irctl.actions import ActionContext
from irctl.errors import ActionError, ActionTimeout
from irctl.runbook.model import format_duration, parse_duration

#: Outputs that carry text (response bodies, stdout, stderr) keep at most this many bytes.
OUTPUT_LIMIT = 64 * 1024

Seconds = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A duration in seconds, written as a number or as ``30s``, ``5m``, ``250ms``."""


class Inputs(BaseModel):
    """Base of every built-in input model: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_cancelled(ctx: ActionContext) -> None:
    """Raise as :meth:`ActionContext.sleep` does if the run was cancelled."""
    if ctx.cancelled.is_set():
        raise ActionError("cancelled", retryable=False)


def bounded(seconds: float, ctx: ActionContext, what: str) -> float:
    """``seconds``, shortened to what is left of the step's timeout; raise if nothing is left."""
    left = ctx.remaining()
    if left is None:
        return seconds
    if left <= 0:
        raise ActionTimeout(f"{what}: the step's timeout has already passed")
    return min(seconds, left)


def truncate_head(data: bytes, limit: int = OUTPUT_LIMIT) -> tuple[str, bool]:
    """The first ``limit`` bytes as text, and whether anything was cut."""
    cut = len(data) > limit
    text = data[:limit].decode("utf-8", errors="replace")
    if cut:
        text += f"\n…[truncated: {len(data) - limit} more bytes]"
    return text, cut


def truncate_tail(data: bytes, limit: int = OUTPUT_LIMIT) -> tuple[str, bool]:
    """The last ``limit`` bytes as text (errors are usually at the end), and whether cut."""
    cut = len(data) > limit
    text = (
        data[-limit:].decode("utf-8", errors="replace")
        if cut
        else data.decode("utf-8", errors="replace")
    )
    if cut:
        text = f"…[truncated: {len(data) - limit} earlier bytes]\n" + text
    return text, cut


def excerpt(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
