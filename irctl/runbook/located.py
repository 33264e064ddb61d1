"""Problems located in a document, in plain words.

A :class:`Document` is one file's data together with the ``line:column`` of
each value and key in it (:mod:`irctl.runbook.loader` builds it from YAML), and the
problems found so far, each a :class:`irctl.errors.Diagnostic` that names the
file, the place, the field path and the fix.  :func:`report_validation` turns
pydantic's errors into such problems: located through the data (union member
tags skipped) and reworded, so a runbook author reads ``expected a whole
number, got 'three'`` rather than pydantic's wording.

The small wording helpers (:func:`suggest`, :func:`show`, :func:`plain`) are
shared by the loader, the checks and the params.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from irctl.errors import Diagnostic

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "Document",
    "Loc",
    "Pos",
    "field_names",
    "path_text",
    "plain",
    "report_validation",
    "show",
    "suggest",
    "validate_model",
]

Loc = tuple[Any, ...]
Pos = tuple[int, int]


# -- wording -------------------------------------------------------------------------------------


def suggest(word: object, candidates: Sequence[object]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing."""
    close = get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, bidi overrides) shown as ``\\x1b``.

    Text from a run (an incident name, a reason, a server's error) is shown, never obeyed by
    the terminal. Newlines and tabs stay.
    """
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


def show(value: object) -> str:
    """A value as a user wrote it, short."""
    if isinstance(value, str):
        if not value.isprintable():  # a newline or a terminal escape is shown, not obeyed
            value = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
        return f"'{value}'" if len(value) <= 60 else f"'{value[:57]}...'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, int) and value.bit_length() > 256:  # Python prints at most 4,300 digits
        return f"a whole number of about {int(value.bit_length() * 0.30103):,} digits"
    return str(value)


def plain(value: object) -> str:
    """An allowed value in a list of choices: ``ethereum``, ``3``, ``true``."""
    return value if isinstance(value, str) else show(value)


def path_text(loc: Loc) -> str:
    """``('steps', 2, 'with', 'url')`` as ``steps[2].with.url``."""
    text = ""
    for seg in loc:
        if isinstance(seg, int) and not isinstance(seg, bool):
            text += f"[{seg}]"
        else:
            text += ("." if text else "") + str(seg)
    return text


# -- a document and its problems ---------------------------------------------------------------


@dataclass
class Document:
    """One file's data, where each value and key sits in it, and the problems found."""

    name: str
    data: Any = None
    values: dict[Loc, Pos] = field(default_factory=dict)
    keys: dict[Loc, Pos] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)
    refused: set[Pos] = field(default_factory=set)

    def refuse(self, loc: Loc) -> None:
        """The value at ``loc`` is reported already: later problems at its place are dropped."""
        self.refused.add(self.pos(loc))

    def pos(self, loc: Loc) -> Pos:
        """Where the value at ``loc`` is, or its nearest enclosing value."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.values:
                return self.values[loc[:end]]
        return (1, 1)

    def key_pos(self, loc: Loc) -> Pos:
        """Where the key of the value at ``loc`` is (for a misspelt field), else the value."""
        return self.keys.get(loc) or self.pos(loc)

    def add(
        self, loc: Loc, message: str, *, at: Pos | None = None, path: Loc | None = None
    ) -> None:
        line, column = at or self.pos(loc)
        if at is None and (line, column) in self.refused:
            return
        shown = loc if path is None else path
        self.problems.append(Diagnostic(self.name, line, column, path_text(shown), message))


# -- pydantic errors, located and in plain words ------------------------------------------------

_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_PATTERNS = {
    r"^[a-z0-9][a-z0-9_-]*$": "is not a valid id: use lowercase letters, digits, '-' and '_'",
    r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$": (
        "is not an action name: write namespace.name in lowercase, like http.request"
    ),
    r"^(env|file|aws-sm):.+$": (
        "is not a secret reference: write env:VAR, file:PATH or aws-sm:NAME[#key]"
    ),
    r"^ed25519:[A-Za-z0-9+/=]+$": "is not a public key: write ed25519:<base64>",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _walk_type(tp: Any, loc: Sequence[Any]) -> Any:
    """The type found at a pydantic error location (union tags included), or None."""
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if not loc:
        members = [m for m in get_args(tp) if m is not NoneType]
        return _unwrap(members[0]) if origin in (Union, UnionType) and len(members) == 1 else tp
    seg, rest = loc[0], loc[1:]
    if origin in (Union, UnionType):
        members = [m for m in get_args(tp) if m is not NoneType]
        for member in members:
            name = getattr(_unwrap(member), "__name__", None)
            # A model with validators is tagged like "function-after[_check(), Policy]".
            if name is not None and (seg == name or str(seg).endswith(f", {name}]")):
                return _walk_type(member, rest)
        for member in members:
            found = _walk_type(member, loc)
            if found is not None:
                return found
        return None
    from pydantic import BaseModel  # the models are built: pydantic is loaded

    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if seg in (name, info.alias):
                return _walk_type(info.annotation, rest)
        return None
    if origin is list and isinstance(seg, int):
        return _walk_type(get_args(tp)[0], rest)
    if origin is dict:
        return _walk_type(get_args(tp)[1], rest)
    return None


def field_names(model: type[BaseModel]) -> list[str]:
    """The names a model's fields are written with (their alias, if they have one)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _choices(expected: str) -> list[str]:
    quoted = re.findall(r"'((?:[^'\\]|\\.)*)'", expected)
    return quoted or [c for c in re.split(r", | or ", expected) if c]


def _message(kind: str, value: Any, ctx: dict[str, Any], raw: str, loc: Loc) -> str:
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {show(value)}"
    if kind == "literal_error":
        if loc == ("irctl",):
            return f"unsupported format version {show(value)}; this irctl reads 'irctl: 1'"
        choices = _choices(str(ctx.get("expected", "")))
        if len(choices) == 1:
            return f"must be {choices[0]}, not {show(value)}"
        return f"{show(value)} is not one of {', '.join(choices)}{suggest(value, choices)}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"{show(value)} {_PATTERNS.get(pattern, f'does not match the pattern {pattern}')}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}, got {show(value)}"
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        if loc and loc[-1] == "steps":
            return "a runbook needs at least one step"
        return f"needs at least {least} {'item' if least == 1 else 'items'}"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", raw)
    return raw[:1].lower() + raw[1:]


@dataclass
class _Located:
    error: Any
    real: Loc
    union_at: Loc | None
    missing: Any = None
    is_key: bool = False


def _locate(error: Any, data: Any) -> _Located:
    """Follow a pydantic location through the data, skipping union member tags."""
    loc = error["loc"]
    cur: Any = data
    real: list[Any] = []
    union_at: Loc | None = None
    for i, seg in enumerate(loc):
        if seg == "[key]":
            return _Located(error, tuple(real), union_at, is_key=True)
        in_list = isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur)
        if in_list or (isinstance(cur, dict) and seg in cur):
            real.append(seg)
            cur = cur[seg]
        elif error["type"] == "missing" and i == len(loc) - 1:
            return _Located(error, tuple(real), union_at, missing=seg)
        elif union_at is None:
            union_at = tuple(real)
    return _Located(error, tuple(real), union_at)


def _value_at(data: Any, loc: Loc) -> Any:
    for seg in loc:
        data = data[seg]
    return data


def report_validation(
    doc: Document,
    errors: list[Any],
    data: Any,
    root: Any,
    base: Loc = (),
    *,
    noun: str = "field",
    owner: str = "",
    skip: frozenset[str] = frozenset(),
) -> None:
    """Add each pydantic error to ``doc``, located under ``base`` and in plain words."""
    located = [_locate(e, data) for e in errors]
    plain = [item for item in located if item.union_at is None]
    unions: dict[Loc, list[_Located]] = {}
    for item in located:
        if item.union_at is not None:
            unions.setdefault(item.union_at, []).append(item)
    for at, items in unions.items():
        deeper = [i for i in items if len(i.real) > len(at) or i.missing is not None]
        if deeper:
            plain.extend(deeper)
            continue
        wanted = list(dict.fromkeys(_EXPECTED.get(i.error["type"], "") for i in items))
        wanted = ["a boolean" if w == "true or false" else w for w in wanted]
        if "" in wanted:
            # A member accepted the value's type and then failed: its errors are the real
            # ones; "expected text" from the other members would only confuse.
            real = [i for i in items if i.error["type"] not in _EXPECTED]
            # ... and a member whose type fits says more than a literal that does not
            # (deny: 101 is "at most 100", not also "must be any").
            fitting = [i for i in real if i.error["type"] != "literal_error"]
            plain.extend(fitting or real)
            continue
        doc.add((*base, *at), f"expected {' or '.join(wanted)}, got {show(_value_at(data, at))}")
    for item in plain:
        error, loc = item.error, (*base, *item.real)
        if item.missing is not None:
            doc.add(loc, f"missing required {noun} '{item.missing}'{owner}")
        elif error["type"] == "extra_forbidden":
            if "extra_forbidden" in skip:
                continue
            model = _walk_type(root, error["loc"][:-1])
            names = field_names(model) if isinstance(model, type) else []
            key = item.real[-1]
            doc.add(
                loc,
                f"unknown {noun} '{key}'{owner}{suggest(key, names)}",
                at=doc.key_pos(loc),
                path=loc[:-1],
            )
        elif item.is_key:
            key = item.real[-1] if item.real else ""
            text = _message(error["type"], key, error.get("ctx") or {}, error["msg"], loc)
            doc.add(loc, f"key {text}", at=doc.key_pos(loc))
        else:
            ctx = error.get("ctx") or {}
            doc.add(loc, _message(error["type"], error["input"], ctx, error["msg"], loc))


def validate_model(doc: Document, model: type[BaseModel]) -> Any:
    """``doc``'s data as ``model``, or None with pydantic's errors added to ``doc``."""
    from pydantic import ValidationError

    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        known = {(p.line, p.column) for p in doc.problems}
        before = len(doc.problems)
        report_validation(doc, list(exc.errors(include_url=False)), doc.data, model)
        # A value the YAML pass already refused (binary, inf) is reported once, not twice.
        doc.problems[before:] = [
            p for p in doc.problems[before:] if (p.line, p.column) not in known
        ]
        return None
