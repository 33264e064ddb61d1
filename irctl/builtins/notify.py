"""``notify.console``: a message for the people watching the run.

The message goes into the run's journal as a note (redacted like everything
else); the CLI shows notes as they are recorded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from irctl.actions import ActionContext, action
from irctl.builtins._common import Inputs


class Console(Inputs):
    """A message and how loud it is."""

    message: str = Field(min_length=1, description="the text to show")
    level: Literal["info", "warning", "critical"] = Field(
        default="info", description="info, warning or critical"
    )


@action("notify.console", idempotent=True, drill_safe=True)
def console(inputs: Console, ctx: ActionContext) -> dict[str, Any]:
    """Show a message to the people watching the run."""
    ctx.note(inputs.message)
    return {"message": inputs.message, "level": inputs.level}


@console.simulate
def _simulate(inputs: Console, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"show ({inputs.level}): {inputs.message}",
        "message": inputs.message,
        "level": inputs.level,
    }
