"""Params: ``-p name=value`` text as typed values, and values checked against their rules.

A runbook declares each param's type (string, number, integer, boolean, or a
list of one of those) and optionally ``enum``, ``pattern``, ``minimum`` and
``maximum``.  :func:`parse_params` reads what ``irctl run -p`` gives;
:func:`check_param_value` checks a value that is already typed (a param's
default, a drill's params).  Problems are sentences that name the param and
the fix.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from irctl.errors import UsageError
from irctl.runbook.located import plain, show, suggest
from irctl.runbook.model import Param, Runbook

__all__ = ["check_param_value", "excluded_operators", "parse_params", "value_problems"]

_TYPE_WORDS = {
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "list": "a list",
}


def _type_ok(kind: str, value: object) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, list)


def nested_repeat(pattern: str) -> bool:
    """Whether ``pattern`` repeats a group that itself repeats a variable number of times.

    ``(a+)+`` and ``(\\w{1,9})*`` make Python's regex engine take exponential time on a value
    that almost matches, which would hang ``validate`` or ``run`` on a param's value. Such
    patterns are refused; a fixed count inside (``(\\d{3}-)*``) is fine.
    """
    import importlib

    c: Any = importlib.import_module("re._constants")  # the parser Python's re module uses
    parser: Any = importlib.import_module("re._parser")

    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT)

    def walk(items: Any, repeated: bool) -> bool:
        for op, arg in items:
            if op in repeats:
                low, high, sub = arg
                if (repeated and low != high) or walk(sub, repeated or high > 1):
                    return True
                continue
            inner = (
                [arg[-1]] if op is c.SUBPATTERN
                else arg[1] if op is c.BRANCH
                else [arg[1]] if op in (c.ASSERT, c.ASSERT_NOT)
                else []
            )  # fmt: skip
            if any(walk(part, repeated) for part in inner):
                return True
        return False

    return walk(parser.parse(pattern), False)


def strict_end(pattern: str) -> str:
    """``pattern`` with each ``$`` meaning the very end of the value, as in JSON Schema.

    Python's ``$`` also matches before a trailing newline, so ``^0x[0-9a-f]{40}$`` would let
    ``"0x...\\n"`` through into an argv or a transaction. ``$`` inside a character class or
    escaped is left alone.
    """
    out: list[str] = []
    escaped = in_class = False
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]" or pattern[i - 1] == "[" or pattern[max(0, i - 2) : i] == "[^"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)


def _scalar_problems(spec: Param, kind: str, value: object) -> list[str]:
    if not _type_ok(kind, value):
        return [f"expected {_TYPE_WORDS[kind]}, got {show(value)}"]
    problems: list[str] = []
    if spec.enum is not None and value not in spec.enum:
        allowed = [plain(v) for v in spec.enum]
        problems.append(
            f"{show(value)} is not one of {', '.join(allowed)}{suggest(value, allowed)}"
        )
    if spec.pattern is not None and isinstance(value, str):
        try:
            if not re.search(strict_end(spec.pattern), value):
                problems.append(f"{show(value)} does not match the pattern {spec.pattern}")
        except re.error:
            pass  # reported where the param is declared
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            problems.append(f"{show(value)} is less than the minimum {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            problems.append(f"{show(value)} is more than the maximum {spec.maximum:g}")
    return problems


def value_problems(spec: Param, value: object) -> list[str]:
    """Problems of a typed value against ``spec``, without the param's name."""
    if spec.type != "list":
        return _scalar_problems(spec, spec.type, value)
    if not isinstance(value, list):
        return [f"expected a list, got {show(value)}"]
    problems: list[str] = []
    for index, item in enumerate(value):
        problems.extend(
            f"item {index + 1}: {text}"
            for text in _scalar_problems(spec, spec.items or "string", item)
        )
    return problems


def check_param_value(name: str, spec: Param, value: object) -> list[str]:
    """Problems of a typed value (a default, a drill's param) against its param's rules."""
    return [f"param '{name}': {text}" for text in value_problems(spec, value)]


#: The largest whole number, either side of zero, a param takes (2**256 - 1, 78 digits: the
#: largest EVM amount), the same bound as every whole number in a runbook or drill.
MAX_INTEGER = 2**256 - 1


class _TooLarge(ValueError):
    """A whole number past MAX_INTEGER."""

    def __init__(self, text: str) -> None:
        super().__init__(
            f"{show(text)} is too large: a whole number is at most 2**256 - 1 (78 digits), "
            "either side of zero"
        )


def _whole(text: str) -> int:
    """``text`` as a whole number; ValueError if it is not one, _TooLarge past MAX_INTEGER."""
    digits = text.strip().lstrip("+-").replace("_", "")
    if len(digits) > 400 and digits.isdigit():  # Python reads at most 4,300 digits
        raise _TooLarge(text)
    number = int(text.strip())
    if abs(number) > MAX_INTEGER:
        raise _TooLarge(text)
    return number


_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def _coerce(kind: str, text: str) -> object:
    """``-p`` text as a value of ``kind``; raises ValueError with the reason."""
    if kind == "string":
        return text
    if kind == "boolean":
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"{show(text)} is not a boolean: write true or false (or yes/no, 1/0)")
    if kind in ("integer", "number"):
        try:
            return _whole(text)
        except _TooLarge:
            raise
        except ValueError:
            if kind == "integer":
                raise ValueError(f"{show(text)} is not a whole number") from None
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"{show(text)} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{show(text)} is not a finite number")
        return number
    raise ValueError(f"cannot read a {kind} from the command line")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{show(text)} is not a finite number")
    return number


def _coerce_param(spec: Param, text: str) -> object:
    if spec.type != "list":
        return _coerce(spec.type, text)
    items = spec.items or "string"
    if text.strip().startswith("["):
        try:
            value = json.loads(text, parse_int=_whole, parse_float=_finite, parse_constant=_finite)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{show(text)} is not a JSON list: {exc.msg}") from None
        except RecursionError:
            raise ValueError(f"{show(text)} nests lists too deeply; give a flat list") from None
        if not isinstance(value, list):
            raise ValueError(f"{show(text)} is not a JSON list")
        return [_coerce(items, v) if isinstance(v, str) and items != "string" else v for v in value]
    parts = [part.strip() for part in text.split(",")]
    return [_coerce(items, part) for part in parts if part]


def parse_params(runbook: Runbook, given: dict[str, str]) -> dict[str, Any]:
    """``-p name=value`` strings as typed param values, defaults filled in.

    Raises UsageError listing every problem, one per line: unknown params
    (with a suggestion), values of the wrong type or breaking enum, pattern,
    minimum or maximum, and required params not given.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    names = list(runbook.params)
    for name in given:
        if name not in runbook.params:
            known = f"; it takes: {', '.join(names)}" if names else "; it takes no params"
            hint = suggest(name, names) or known
            problems.append(f"unknown param '{name}' for runbook '{runbook.id}'{hint}")
    for name, spec in runbook.params.items():
        if name in given:
            try:
                value = _coerce_param(spec, given[name])
            except ValueError as exc:
                problems.append(f"param '{name}': {exc}")
                continue
            found = check_param_value(name, spec, value)
            problems.extend(found)
            if not found:
                values[name] = value
        elif not spec.is_required:
            default = spec.default
            values[name] = list(default) if isinstance(default, list) else default
        else:
            choices = f" (one of {', '.join(plain(v) for v in spec.enum)})" if spec.enum else ""
            problems.append(f"param '{name}' is required: give it with -p {name}=VALUE{choices}")
    if problems:
        raise UsageError("\n".join(problems))
    return values


def excluded_operators(runbook: Runbook, params: dict[str, Any]) -> frozenset[str]:
    """The operators a run of ``runbook`` with ``params`` must not let act (its
    ``exclude_operators``, each rendered with the params alone; a blank one names nobody).

    Derived again wherever it is acted on, from the runbook and the params the initiator's
    signed start covers, never from a recorded list: whoever may write the database must not
    be able to take a suspect off it.  A template that cannot be rendered is an error
    (:class:`irctl.runbook.render.RenderError`): refusing to guess keeps the suspect out.
    """
    from irctl.runbook.render import render_string

    found: set[str] = set()
    for entry in runbook.exclude_operators:
        value = render_string(entry, {"params": params})
        names = value if isinstance(value, list) else [value]
        found.update(str(name).strip() for name in names if str(name or "").strip())
    return frozenset(found)
