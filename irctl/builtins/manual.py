"""``manual.*``: steps a person does, confirmed or answered through irctl.

The answer comes from :meth:`ActionContext.ask`: one recorded earlier
(``irctl answer``, Slack), one asked now on an interactive terminal, or none
yet, in which case :class:`irctl.actions.WaitForOperator` propagates and the
run waits (exit code 3) until someone answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from irctl.actions import ActionContext, WaitForOperator, action
from irctl.builtins._common import Inputs
from irctl.errors import ActionError

# A confirmation is answered with one of the words it offers, nothing else: "yes" to
# "done or failed?" could mean either to a tired person at 03:00.
YES = frozenset({"done"})
NO = frozenset({"failed"})
TRUE = frozenset({"true", "yes", "y", "1", "on"})
FALSE = frozenset({"false", "no", "n", "0", "off"})


class Confirm(Inputs):
    """Something a person must do and then confirm."""

    prompt: str = Field(min_length=1, description="what the person must do, then confirm")


@action("manual.confirm", idempotent=True, drill_safe=True)
def confirm(inputs: Confirm, ctx: ActionContext) -> dict[str, Any]:
    """Ask a person to do something and confirm it: done or failed."""
    def check(answer: str) -> tuple[str | None, Any]:
        said = answer.strip().lower()
        if said in YES or said in NO:
            return None, said in YES
        return f"{answer.strip()!r} is not an answer: answer done or failed", None

    answer, confirmed = _answer(ctx, inputs.prompt, "confirm", ["done", "failed"], check)
    if confirmed:
        return {"confirmed": True, "answer": answer.strip()}
    raise ActionError(f"operator answered {answer.strip()!r} to: {inputs.prompt}", retryable=False)


def _answer(
    ctx: ActionContext,
    prompt: str,
    kind: str,
    choices: list[str] | None,
    check: Callable[[str], tuple[str | None, Any]],
) -> tuple[str, Any]:
    """A person's answer that ``check`` accepts, and its value.

    An answer it refuses (a typo, the wrong type) never fails the step: the person is asked
    again at once when there is a terminal, else the step goes back to waiting with the
    reason in its prompt, for another ``irctl answer``.
    """
    answer = ctx.ask(prompt, kind=kind, choices=choices)
    problem, value = check(answer)
    while problem is not None and ctx.interactive is not None:
        again = ctx.interactive(f"{problem}. {prompt}", kind, choices)
        if again is None:
            break
        answer = again
        problem, value = check(answer)
    if problem is not None:
        raise WaitForOperator(f"{prompt} (not accepted: {problem})", kind=kind, choices=choices)
    return answer, value


@confirm.simulate
def _simulate_confirm(inputs: Confirm, ctx: ActionContext) -> dict[str, Any]:
    return {
        "simulated": True,
        "would": f"ask: {inputs.prompt} [done/failed]",
        "confirmed": True,
        "answer": "done",
    }


InputType = Literal["string", "number", "integer", "boolean"]
Scalar = str | int | float | bool


class Input(Inputs):
    """A typed value a person types in."""

    prompt: str = Field(min_length=1, description="the question")
    type: InputType = Field(default="string", description="string, number, integer or boolean")
    enum: list[Scalar] | None = Field(
        default=None, min_length=1, description="the only values allowed (of the given type)"
    )
    pattern: str | None = Field(
        default=None, description="a regular expression the answer must contain (anchor with ^$)"
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _enum_typed(self) -> Input:
        if self.enum is not None:
            for value in self.enum:
                try:
                    convert(
                        str(value).lower() if isinstance(value, bool) else str(value), self.type
                    )
                except ValueError as exc:
                    raise ValueError(f"enum value {value!r} is not a {self.type}") from exc
        return self

    def allowed(self) -> list[Any] | None:
        if self.enum is None:
            return None
        return [
            convert(str(v).lower() if isinstance(v, bool) else str(v), self.type) for v in self.enum
        ]


def convert(text: str, kind: str) -> Any:
    """The typed value of an answer; ValueError naming the problem."""
    value = text.strip()
    if kind == "string":
        return value
    if kind == "boolean":
        lowered = value.lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (answer yes or no)")
    if kind == "integer":
        try:
            return int(value, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return (
        int(number)
        if number.is_integer() and "." not in value and "e" not in value.lower()
        else number
    )


@action("manual.input", idempotent=True, drill_safe=True)
def input_(inputs: Input, ctx: ActionContext) -> dict[str, Any]:
    """Ask a person for a typed value."""
    allowed = inputs.allowed()
    choices = (
        [str(v).lower() if isinstance(v, bool) else str(v) for v in allowed] if allowed else None
    )

    def check(answer: str) -> tuple[str | None, Any]:
        try:
            value = convert(answer, inputs.type)
        except ValueError as exc:
            return str(exc), None
        if inputs.pattern is not None and not re.search(inputs.pattern, answer.strip()):
            return f"{answer.strip()!r} does not match {inputs.pattern!r}", None
        if allowed is not None and not any(_same(value, a) for a in allowed):
            return f"{value!r} is not one of {allowed}", None
        return None, value

    _, value = _answer(ctx, inputs.prompt, "input", choices, check)
    return {"value": value}


def _same(value: Any, allowed: Any) -> bool:
    """Equal as answers: a boolean only equals a boolean; 2 equals 2.0."""
    if isinstance(value, bool) or isinstance(allowed, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value == allowed
    return bool(value == allowed)


@input_.simulate
def _simulate_input(inputs: Input, ctx: ActionContext) -> dict[str, Any]:
    allowed = inputs.allowed()
    placeholder: Any = {"string": "", "number": 0, "integer": 0, "boolean": False}[inputs.type]
    return {
        "simulated": True,
        "would": f"ask for a {inputs.type}: {inputs.prompt}",
        "value": allowed[0] if allowed else placeholder,
    }
