"""YAML -> typed models, with every problem reported as ``file:line:column: path: message``.

Loading happens in three passes over one file, and every problem from all
three is reported at once (:class:`irctl.errors.InvalidDocument`):

1. YAML is composed into nodes, which keep their marks, and built into plain
   data together with a map from each field path to its ``line:column``.
   Duplicate keys, which PyYAML silently accepts, are caught here.
2. pydantic validates the data against :mod:`irctl.model`; its error
   locations are mapped back to ``line:column`` and its messages made human.
3. Checks pydantic cannot make: unique step ids, known actions and their
   inputs, approval policies, templates (syntax, and what they read: only
   earlier steps, declared params and secrets, ``item`` only in ``for_each``),
   and params whose own default breaks their rules.

:func:`validate_paths` runs the same checks over files and folders for
``irctl validate``, and also checks each drill against the runbook it names.
Loading imports only PyYAML, pydantic and Jinja2; integrations are imported
only when a runbook names one of their actions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from irctl.actions import EXTRAS, GROUP, Action, Registry
from irctl.errors import Diagnostic, IntegrationError, InvalidDocument, UsageError
from irctl.model import Config, Drill, Param, Runbook
from irctl.render import check_syntax, is_template

__all__ = [
    "check_param_value",
    "json_schema",
    "load_config",
    "load_document",
    "load_drill",
    "load_runbook",
    "load_runbook_text",
    "parse_params",
    "validate_paths",
]

Loc = tuple[Any, ...]
Pos = tuple[int, int]

CONFIG_NAME = "irctl.yaml"
TEMPLATE_ROOTS = ("params", "secrets", "vars", "steps", "run", "item")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- small helpers -------------------------------------------------------------------------------


def _suggest(word: object, candidates: Sequence[object]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing."""
    close = get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value: object) -> str:
    """A value as a user wrote it, short."""
    if isinstance(value, str):
        return f"'{value}'" if len(value) <= 60 else f"'{value[:57]}...'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def _plain(value: object) -> str:
    """An allowed value in a list of choices: ``ethereum``, ``3``, ``true``."""
    return value if isinstance(value, str) else _show(value)


def _path_text(loc: Loc) -> str:
    """``('steps', 2, 'with', 'url')`` as ``steps[2].with.url``."""
    text = ""
    for seg in loc:
        if isinstance(seg, int) and not isinstance(seg, bool):
            text += f"[{seg}]"
        else:
            text += ("." if text else "") + str(seg)
    return text


# -- pass 1: YAML with positions -----------------------------------------------------------------


@dataclass
class _Doc:
    """One file's data, where each value and key sits in it, and the problems found."""

    name: str
    data: Any = None
    values: dict[Loc, Pos] = field(default_factory=dict)
    keys: dict[Loc, Pos] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)

    def pos(self, loc: Loc) -> Pos:
        """Where the value at ``loc`` is, or its nearest enclosing value."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.values:
                return self.values[loc[:end]]
        return (1, 1)

    def key_pos(self, loc: Loc) -> Pos:
        return self.keys.get(loc) or self.pos(loc)

    def add(
        self, loc: Loc, message: str, *, at: Pos | None = None, path: Loc | None = None
    ) -> None:
        line, column = at or self.pos(loc)
        shown = loc if path is None else path
        self.problems.append(Diagnostic(self.name, line, column, _path_text(shown), message))


def _mark(node: yaml.Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _build(loader: Any, node: yaml.Node, loc: Loc, doc: _Doc, active: set[int]) -> Any:
    doc.values.setdefault(loc, _mark(node))
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node, deep=True)
    if id(node) in active:
        doc.add(loc, "an alias refers to itself (recursive YAML anchors are not supported)")
        return None
    active.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            return [
                _build(loader, child, (*loc, i), doc, active) for i, child in enumerate(node.value)
            ]
        if isinstance(node, yaml.MappingNode):
            return _build_mapping(loader, node, loc, doc, active)
        return loader.construct_object(node, deep=True)
    finally:
        active.discard(id(node))


def _build_mapping(
    loader: Any, node: yaml.MappingNode, loc: Loc, doc: _Doc, active: set[int]
) -> dict[Any, Any]:
    own_keys = {id(key) for key, _ in node.value if key.tag != _MERGE_TAG}
    if len(own_keys) != len(node.value):
        loader.flatten_mapping(node)  # YAML merge keys (<<): merged entries first, own ones win
    result: dict[Any, Any] = {}
    seen: dict[Any, Pos] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            doc.add(loc, "a key must be a plain value, not a list or mapping", at=_mark(key_node))
            continue
        if id(key_node) in own_keys:
            if key in seen:
                line, _ = seen[key]
                doc.add(
                    (*loc, key),
                    f"duplicate key '{key}' (first written at line {line}); YAML would keep only "
                    "one of them",
                    at=_mark(key_node),
                )
                continue
            seen[key] = _mark(key_node)
            doc.keys[(*loc, key)] = _mark(key_node)
        doc.values.pop((*loc, key), None)
        result[key] = _build(loader, value_node, (*loc, key), doc, active)
    return result


def _parse(text: str, name: str) -> _Doc:
    """YAML text as a mapping with positions; raises InvalidDocument if it is not even that."""
    doc = _Doc(name)
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _build(loader, node, (), doc, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise InvalidDocument([Diagnostic(name, line, column, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise InvalidDocument([Diagnostic(name, 1, 1, "", f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    if doc.data is None:
        raise InvalidDocument([Diagnostic(name, 1, 1, "", "the file is empty")])
    if not isinstance(doc.data, dict):
        line, column = doc.pos(())
        raise InvalidDocument(
            [
                Diagnostic(
                    name, line, column, "", f"expected a mapping of fields, got {_show(doc.data)}"
                )
            ]
        )
    return doc


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = Diagnostic(str(path), 1, 1, "", "the file is not UTF-8 text")
        raise InvalidDocument([problem]) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


# -- pass 2: pydantic errors, located and in plain words -----------------------------------------

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
            if getattr(_unwrap(member), "__name__", None) == seg:
                return _walk_type(member, rest)
        for member in members:
            found = _walk_type(member, loc)
            if found is not None:
                return found
        return None
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


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _choices(expected: str) -> list[str]:
    quoted = re.findall(r"'((?:[^'\\]|\\.)*)'", expected)
    return quoted or [c for c in re.split(r", | or ", expected) if c]


def _message(kind: str, value: Any, ctx: dict[str, Any], raw: str, loc: Loc) -> str:
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(value)}"
    if kind == "literal_error":
        if loc == ("irctl",):
            return f"unsupported format version {_show(value)}; this irctl reads 'irctl: 1'"
        choices = _choices(str(ctx.get("expected", "")))
        if len(choices) == 1:
            return f"must be {choices[0]}, not {_show(value)}"
        return f"{_show(value)} is not one of {', '.join(choices)}{_suggest(value, choices)}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"{_show(value)} {_PATTERNS.get(pattern, f'does not match the pattern {pattern}')}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}, got {_show(value)}"
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


def _report_validation(
    doc: _Doc,
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
            plain.extend(items)
            continue
        doc.add((*base, *at), f"expected {' or '.join(wanted)}, got {_show(_value_at(data, at))}")
    for item in plain:
        error, loc = item.error, (*base, *item.real)
        if item.missing is not None:
            doc.add(loc, f"missing required {noun} '{item.missing}'{owner}")
        elif error["type"] == "extra_forbidden":
            if "extra_forbidden" in skip:
                continue
            model = _walk_type(root, error["loc"][:-1])
            names = _field_names(model) if isinstance(model, type) else []
            key = item.real[-1]
            doc.add(
                loc,
                f"unknown {noun} '{key}'{owner}{_suggest(key, names)}",
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


def _validate_model(doc: _Doc, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        _report_validation(doc, list(exc.errors(include_url=False)), doc.data, model)
        return None


# -- params --------------------------------------------------------------------------------------

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


def _scalar_problems(spec: Param, kind: str, value: object) -> list[str]:
    if not _type_ok(kind, value):
        return [f"expected {_TYPE_WORDS[kind]}, got {_show(value)}"]
    problems: list[str] = []
    if spec.enum is not None and value not in spec.enum:
        allowed = [_plain(v) for v in spec.enum]
        problems.append(
            f"{_show(value)} is not one of {', '.join(allowed)}{_suggest(value, allowed)}"
        )
    if spec.pattern is not None and isinstance(value, str):
        try:
            if not re.search(spec.pattern, value):
                problems.append(f"{_show(value)} does not match the pattern {spec.pattern}")
        except re.error:
            pass  # reported where the param is declared
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            problems.append(f"{_show(value)} is less than the minimum {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            problems.append(f"{_show(value)} is more than the maximum {spec.maximum:g}")
    return problems


def _value_problems(spec: Param, value: object) -> list[str]:
    if spec.type != "list":
        return _scalar_problems(spec, spec.type, value)
    if not isinstance(value, list):
        return [f"expected a list, got {_show(value)}"]
    problems: list[str] = []
    for index, item in enumerate(value):
        problems.extend(
            f"item {index + 1}: {text}"
            for text in _scalar_problems(spec, spec.items or "string", item)
        )
    return problems


def check_param_value(name: str, spec: Param, value: object) -> list[str]:
    """Problems of a typed value (a default, a drill's param) against its param's rules."""
    return [f"param '{name}': {text}" for text in _value_problems(spec, value)]


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
        raise ValueError(f"{_show(text)} is not a boolean: write true or false (or yes/no, 1/0)")
    if kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"{_show(text)} is not a whole number") from None
    if kind == "number":
        try:
            return int(text.strip())
        except ValueError:
            pass
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"{_show(text)} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{_show(text)} is not a finite number")
        return number
    raise ValueError(f"cannot read a {kind} from the command line")


def _coerce_param(spec: Param, text: str) -> object:
    if spec.type != "list":
        return _coerce(spec.type, text)
    items = spec.items or "string"
    if text.strip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{_show(text)} is not a JSON list: {exc.msg}") from None
        if not isinstance(value, list):
            raise ValueError(f"{_show(text)} is not a JSON list")
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
            hint = _suggest(name, names) or known
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
            choices = f" (one of {', '.join(_plain(v) for v in spec.enum)})" if spec.enum else ""
            problems.append(f"param '{name}' is required: give it with -p {name}=VALUE{choices}")
    if problems:
        raise UsageError("\n".join(problems))
    return values


# -- pass 3: what pydantic cannot check ----------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    """What a template reads: names from its context, and the keys read under each root."""

    free: frozenset[str]
    reads: dict[str, frozenset[str]]


@lru_cache(maxsize=1)
def _jinja() -> Any:
    from jinja2 import Environment

    return Environment(autoescape=False)  # noqa: S701 - only parsed here, never rendered


@lru_cache(maxsize=4096)
def _template(source: str) -> _Template | str:
    """A template's reads, or its syntax error, from one parse.

    Parsing catches what :func:`irctl.render.check_syntax` does at a fraction
    of its cost (it compiles); only a template using a filter or test unknown
    to plain Jinja2 is handed to ``check_syntax`` to settle.
    """
    from jinja2 import TemplateSyntaxError, nodes

    env = _jinja()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} (template line {exc.lineno})"
    unusual = [
        (n, "filter", env.filters) for n in tree.find_all(nodes.Filter) if n.name not in env.filters
    ] + [(n, "test", env.tests) for n in tree.find_all(nodes.Test) if n.name not in env.tests]
    if unusual and check_syntax(source) is not None:
        node, what, known = unusual[0]
        hint = _suggest(node.name, list(known))
        where = f"(template line {node.lineno})"
        return f"template syntax error: no {what} named '{node.name}'{hint} {where}"
    loaded: set[str] = set()
    stored: set[str] = set()
    for name in tree.find_all(nodes.Name):
        (loaded if name.ctx == "load" else stored).add(name.name)
    if any(True for _ in tree.find_all(nodes.For)):
        stored.add("loop")
    reads: dict[str, set[str]] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name in TEMPLATE_ROOTS:
            if isinstance(node, nodes.Getattr):
                reads.setdefault(target.name, set()).add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                reads.setdefault(target.name, set()).add(node.arg.value)
    free = loaded - stored - set(env.globals)
    return _Template(frozenset(free), {k: frozenset(v) for k, v in reads.items()})


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))


def _has_template(value: Any) -> bool:
    return any(is_template(text) for _, text in _strings(value, ()))


def _names(value: Any) -> list[str]:
    return [str(k) for k in value] if isinstance(value, dict) else []


class _Integrations:
    """Which action namespaces can be checked, found once per validation."""

    def __init__(self, registry: Registry, *, load_all: bool) -> None:
        self.registry = registry
        self.load_all = load_all
        self._installed: dict[str, str] | None = None
        self._status: dict[str, str | None] = {}

    def installed(self) -> dict[str, str]:
        if self._installed is None:
            from importlib.metadata import entry_points

            self._installed = {ep.name: ep.value for ep in entry_points(group=GROUP)}
        return self._installed

    def status(self, namespace: str) -> str | None:
        """None: loaded and checkable; "skip": installed, not loaded; else the problem."""
        if namespace not in self._status:
            self._status[namespace] = self._find(namespace)
        return self._status[namespace]

    def _find(self, namespace: str) -> str | None:
        already = bool(self.registry.known(namespace))
        module = self.installed().get(namespace)
        third_party = module is not None and not module.startswith("irctl.")
        if third_party and not already and not self.load_all:
            return "skip"  # imported only with check_integrations: it may be slow to import
        try:
            self.registry.load_namespace(namespace)
        except IntegrationError as exc:
            return exc.message
        return None

    def suggestion(self, name: str) -> str:
        """For an action in a namespace nobody provides: the closest known action or namespace."""
        namespace, _, rest = name.partition(".")
        if namespace in self.installed() or namespace in EXTRAS:
            return ""
        known = self.registry.known()
        spaces = {*self.installed(), *EXTRAS, *(n.split(".", 1)[0] for n in known)}
        close = get_close_matches(namespace, sorted(spaces), n=1)
        if not close:
            return ""
        guess = f"{close[0]}.{rest}"
        if guess in known or not self.registry.known(close[0]):
            return f" (did you mean '{guess}'?)"
        return _suggest(guess, self.registry.known(close[0])) or (
            f" (did you mean the '{close[0]}' namespace?)"
        )


@dataclass
class _StepInfo:
    loc: Loc
    raw: dict[str, Any]
    before: frozenset[str]  # ids of steps finished before this one starts
    concurrent: frozenset[str]  # ids of steps running alongside it (same parallel block)


class _RunbookChecks:
    """Pass 3 for a runbook, on the raw data so it runs even when pydantic found problems."""

    def __init__(
        self, doc: _Doc, integrations: _Integrations, vars_known: set[str] | None = None
    ) -> None:
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.integrations = integrations
        self.vars_known = vars_known
        params = self.data.get("params", {})
        self.params = params if isinstance(params, dict) else None
        self.secrets = self.data.get("secrets")
        self.approvals = self.data.get("approvals")
        self.ids: dict[str, Loc] = {}
        self.failed_namespaces: set[str] = set()

    def run(self) -> None:
        self._check_params()
        steps = self._collect()
        for info in steps:
            self._check_step(info)

    # ids, order and concurrency

    def _collect(self) -> list[_StepInfo]:
        found: list[_StepInfo] = []
        main = self._sequence("steps", frozenset(), found)
        self._sequence("on_failure", main, found)  # on_failure steps may read any main step
        return found

    def _sequence(self, key: str, start: frozenset[str], found: list[_StepInfo]) -> frozenset[str]:
        items = self.data.get(key)
        done = set(start)
        if not isinstance(items, list):
            return frozenset(done)
        for index, raw in enumerate(items):
            if isinstance(raw, dict):
                done |= self._block(raw, (key, index), frozenset(done), found)
        return frozenset(done)

    def _block(
        self, raw: dict[str, Any], loc: Loc, before: frozenset[str], found: list[_StepInfo]
    ) -> set[str]:
        """Register a step and everything nested in it; return all their ids."""
        ids: set[str] = set()
        step_id = raw.get("id")
        if isinstance(step_id, str):
            if step_id in self.ids:
                first = self.ids[step_id]
                self.doc.add(
                    (*loc, "id"),
                    f"duplicate step id '{step_id}' (first used by {_path_text(first)}, "
                    f"line {self.doc.pos(first)[0]})",
                )
            else:
                self.ids[step_id] = loc
            ids.add(step_id)
        info = _StepInfo(loc, raw, before, frozenset())
        found.append(info)
        children = raw.get("parallel")
        if isinstance(children, list):
            for index, child in enumerate(children):
                if isinstance(child, dict):
                    ids |= self._block(child, (*loc, "parallel", index), before, found)
        if isinstance(children, list):
            block_ids = ids - ({step_id} if isinstance(step_id, str) else set())
            for other in found:
                if other.loc[: len(loc) + 1] == (*loc, "parallel") and other.loc != loc:
                    other.concurrent = frozenset(other.concurrent | block_ids)
        return ids

    # one step

    def _check_step(self, info: _StepInfo) -> None:
        raw, loc = info.raw, info.loc
        action = raw.get("action")
        if isinstance(action, str):
            self._check_action(action, raw, loc)
        approval = raw.get("approval")
        if isinstance(approval, str):
            names = _names(self.approvals)
            if approval not in names:
                known = f"; known: {', '.join(names)}" if names else ""
                hint = _suggest(approval, names) or known or "; define it under 'approvals:'"
                self.doc.add((*loc, "approval"), f"unknown approval policy '{approval}'{hint}")
        fan_out = "for_each" in raw
        for key in ("with", "when", "for_each"):
            if key in raw:
                item_ok = fan_out and key != "for_each"
                for where, text in _strings(raw[key], (*loc, key)):
                    if is_template(text):
                        self._check_template(text, where, info, item_ok=item_ok)

    def _check_action(self, name: str, raw: dict[str, Any], loc: Loc) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", name):
            return  # pydantic reports the malformed name
        namespace = name.split(".", 1)[0]
        registry = self.integrations.registry
        problem = self.integrations.status(namespace)
        if problem == "skip":
            return
        if problem is not None:
            if namespace not in self.failed_namespaces:
                self.failed_namespaces.add(namespace)
                hint = self.integrations.suggestion(name)
                self.doc.add((*loc, "action"), problem + hint)
            return
        try:
            defined = registry.get(name)
        except IntegrationError:
            known = registry.known(namespace)
            hint = _suggest(name, known)
            if not hint and known:
                shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                hint = f"; '{namespace}' has: {shown}"
            self.doc.add((*loc, "action"), f"unknown action '{name}'{hint}")
            return
        self._check_inputs(defined, raw, loc)

    def _check_inputs(self, defined: Action[Any], raw: dict[str, Any], loc: Loc) -> None:
        given = raw.get("with", {})
        if not isinstance(given, dict):
            return  # pydantic reports it
        model = defined.inputs
        where = (*loc, "with")
        owner = f" for {defined.name}"
        names = _field_names(model) + (
            list(model.model_fields) if model.model_config.get("populate_by_name") else []
        )
        if model.model_config.get("extra") != "allow":
            for key in given:
                if key not in names:
                    self.doc.add(
                        (*where, key),
                        f"unknown input '{key}'{owner}{_suggest(key, names)}",
                        at=self.doc.key_pos((*where, key)),
                        path=where,
                    )
        try:
            model.model_validate(given)
        except ValidationError as exc:
            whole = _has_template(given)
            errors = [
                e
                for e in exc.errors(include_url=False)
                if (e["loc"] and not _has_template(given.get(e["loc"][0])))
                or (not e["loc"] and not whole)
            ]
            if errors:
                _report_validation(
                    self.doc,
                    errors,
                    given,
                    model,
                    where,
                    noun="input",
                    owner=owner,
                    skip=frozenset({"extra_forbidden"}),
                )

    def _check_template(self, text: str, loc: Loc, info: _StepInfo, *, item_ok: bool) -> None:
        parsed = _template(text)
        if isinstance(parsed, str):
            self.doc.add(loc, parsed)
            return
        empty: frozenset[str] = frozenset()
        for step_id in sorted(parsed.reads.get("steps", empty)):
            self._check_step_ref(step_id, loc, info)
        if self.params is not None:
            names = _names(self.params)
            for name in sorted(parsed.reads.get("params", empty) - set(names)):
                self.doc.add(loc, f"unknown param '{name}' in template{_suggest(name, names)}")
        if isinstance(self.secrets, dict) or "secrets" not in self.data:
            names = _names(self.secrets)
            for name in sorted(parsed.reads.get("secrets", empty) - set(names)):
                hint = _suggest(name, names) or "; declare it under 'secrets:'"
                self.doc.add(loc, f"unknown secret '{name}' in template{hint}")
        if self.vars_known is not None:
            for name in sorted(parsed.reads.get("vars", empty) - self.vars_known):
                hint = _suggest(name, sorted(self.vars_known)) or (
                    "; define it under 'vars:' in irctl.yaml"
                )
                self.doc.add(loc, f"unknown var '{name}' in template{hint}")
        if "item" in parsed.free and not item_ok:
            self.doc.add(
                loc,
                "'item' is defined only in the 'with' and 'when' of a step with for_each"
                if loc[-1] != "for_each"
                else "'item' is not defined in for_each itself: it is each value for_each gives",
            )
        for name in sorted(parsed.free - set(TEMPLATE_ROOTS)):
            hint = _suggest(name, TEMPLATE_ROOTS) or (
                "; templates read params, secrets, vars, steps, run and item"
            )
            self.doc.add(loc, f"unknown name '{name}' in template{hint}")

    def _check_step_ref(self, step_id: str, loc: Loc, info: _StepInfo) -> None:
        if step_id in info.before:
            return
        own = info.raw.get("id")
        if step_id not in self.ids:
            hint = _suggest(step_id, list(self.ids))
            self.doc.add(loc, f"reads steps.{step_id}, but there is no step '{step_id}'{hint}")
        elif step_id == own:
            self.doc.add(loc, f"step '{own}' reads its own outputs (steps.{step_id})")
        elif step_id in info.concurrent:
            self.doc.add(
                loc,
                f"reads steps.{step_id}, but step '{step_id}' runs in parallel with this one; "
                "read it in a step after the 'parallel' block",
            )
        else:
            line = self.doc.pos(self.ids[step_id])[0]
            self.doc.add(
                loc,
                f"reads steps.{step_id}, but step '{step_id}' (line {line}) has not run yet: "
                "a step can only read steps written before it",
            )

    # params

    def _check_params(self) -> None:
        for name, spec_raw in (self.params or {}).items():
            if not isinstance(spec_raw, dict):
                continue
            loc = ("params", name)
            pattern = spec_raw.get("pattern")
            if isinstance(pattern, str):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    self.doc.add((*loc, "pattern"), f"invalid regular expression: {exc}")
                    continue
            try:
                spec = Param.model_validate(spec_raw)
            except ValidationError:
                continue  # pydantic's errors are reported already
            if spec.items is not None and spec.type != "list":
                self.doc.add((*loc, "items"), f"'items' applies only to type list, not {spec.type}")
            if spec.default is not None:
                for text in _value_problems(spec, spec.default):
                    self.doc.add((*loc, "default"), text)


# -- drills against their runbook ----------------------------------------------------------------


@dataclass
class _RunbookFacts:
    path: Path
    params: dict[str, Any]
    steps: dict[str, bool]  # step id -> has an approval


def _facts(path: Path, data: dict[str, Any]) -> _RunbookFacts:
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    steps: dict[str, bool] = {}

    def walk(items: Any) -> None:
        for raw in items if isinstance(items, list) else []:
            if isinstance(raw, dict):
                if isinstance(raw.get("id"), str):
                    steps[raw["id"]] = raw.get("approval") is not None
                walk(raw.get("parallel"))

    walk(data.get("steps"))
    walk(data.get("on_failure"))
    return _RunbookFacts(path, dict(params or {}), steps)


def _check_drill(doc: _Doc, runbooks: dict[str, _RunbookFacts]) -> None:
    data = doc.data
    name = data.get("runbook")
    if not isinstance(name, str):
        return
    facts = runbooks.get(name)
    if facts is None:
        known = sorted(runbooks)
        hint = _suggest(name, known) or (f"; known: {', '.join(known)}" if known else "")
        doc.add(("runbook",), f"unknown runbook '{name}'{hint}")
        return
    given = data.get("params", {})
    if isinstance(given, dict):
        for key, value in given.items():
            spec_raw = facts.params.get(key)
            if spec_raw is None:
                hint = _suggest(key, list(facts.params))
                doc.add(
                    ("params", key),
                    f"unknown param '{key}' for runbook '{name}'{hint}",
                    at=doc.key_pos(("params", key)),
                    path=("params",),
                )
                continue
            spec = _param_or_none(spec_raw)
            if spec is not None:
                for text in _value_problems(spec, value):
                    doc.add(("params", key), text)
        for key, spec_raw in facts.params.items():
            spec = _param_or_none(spec_raw)
            if spec is not None and spec.is_required and key not in given:
                doc.add(("params",), f"missing param '{key}', required by runbook '{name}'")
    objectives = data.get("objectives")
    for index, objective in enumerate(objectives if isinstance(objectives, list) else []):
        if not isinstance(objective, dict):
            continue
        for key in ("step", "approval"):
            target = objective.get(key)
            if not isinstance(target, str):
                continue
            if target not in facts.steps:
                hint = _suggest(target, list(facts.steps))
                doc.add(
                    ("objectives", index, key),
                    f"runbook '{name}' has no step '{target}'{hint}",
                )
            elif key == "approval" and not facts.steps[target]:
                doc.add(
                    ("objectives", index, key), f"step '{target}' of '{name}' needs no approval"
                )


def _param_or_none(raw: Any) -> Param | None:
    try:
        return Param.model_validate(raw)
    except ValidationError:
        return None


# -- public API ----------------------------------------------------------------------------------


def _finish(doc: _Doc, model: Any) -> Any:
    if doc.problems:
        raise InvalidDocument(doc.problems)
    return model


def _check_runbook(
    doc: _Doc, integrations: _Integrations, vars_known: set[str] | None = None
) -> Runbook | None:
    runbook: Runbook | None = _validate_model(doc, Runbook)
    _RunbookChecks(doc, integrations, vars_known).run()
    return runbook


def load_runbook_text(
    text: str, name: str, *, registry: Registry | None = None, check_integrations: bool = True
) -> Runbook:
    """A runbook from YAML text; ``name`` is the file name shown in diagnostics.

    Every action the runbook names is looked up in ``registry`` (default: the
    installed integrations), importing its integration; with
    ``check_integrations=False`` only integrations that ship with irctl are
    imported (enough to list runbooks quickly).  Raises InvalidDocument with
    every problem found.
    """
    from irctl.actions import default_registry

    doc = _parse(text, name)
    integrations = _Integrations(registry or default_registry, load_all=check_integrations)
    result: Runbook = _finish(doc, _check_runbook(doc, integrations))
    return result


def load_runbook(
    path: Path, *, registry: Registry | None = None, check_integrations: bool = True
) -> Runbook:
    """A runbook file; see :func:`load_runbook_text`."""
    return load_runbook_text(
        _read(path), str(path), registry=registry, check_integrations=check_integrations
    )


def load_drill(path: Path) -> Drill:
    doc = _parse(_read(path), str(path))
    result: Drill = _finish(doc, _validate_model(doc, Drill))
    return result


def load_config(path: Path) -> Config:
    """The workspace config; an empty file is the default config."""
    text = _read(path)
    try:
        doc = _parse(text, str(path))
    except InvalidDocument as exc:
        if exc.diagnostics[0].message == "the file is empty":
            return Config()
        raise
    result: Config = _finish(doc, _validate_model(doc, Config))
    return result


def _kind(doc: _Doc) -> str | None:
    """``runbook`` or ``drill``; reports anything else and returns None."""
    kind = doc.data.get("kind", "runbook")
    if kind in ("runbook", "drill"):
        return str(kind)
    hint = _suggest(kind, ["runbook", "drill"]) or "; expected runbook or drill"
    doc.add(("kind",), f"unknown kind {_show(kind)}{hint}")
    return None


def load_document(path: Path, *, registry: Registry | None = None) -> Runbook | Drill:
    """A runbook or a drill, by its ``kind`` (a file without one is a runbook)."""
    from irctl.actions import default_registry

    doc = _parse(_read(path), str(path))
    kind = _kind(doc)
    if kind == "drill":
        drill: Drill = _finish(doc, _validate_model(doc, Drill))
        return drill
    if kind == "runbook":
        integrations = _Integrations(registry or default_registry, load_all=True)
        runbook: Runbook = _finish(doc, _check_runbook(doc, integrations))
        return runbook
    raise InvalidDocument(doc.problems)


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [*path.rglob("*.yaml"), *path.rglob("*.yml")]
            files.extend(
                sorted(
                    p
                    for p in found
                    if not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"no such file or folder: {path}")
    return list(dict.fromkeys(files))


def _workspace_root(path: Path) -> Path | None:
    """The nearest folder above ``path`` holding irctl.yaml or a runbooks/ folder."""
    here = path.resolve().parent
    for folder in [here, *here.parents]:
        if (folder / CONFIG_NAME).is_file() or (folder / "runbooks").is_dir():
            return folder
    return None


class _Validation:
    """One ``validate_paths`` call: parsed files, runbook indexes and configs, each found once."""

    def __init__(self, registry: Registry, *, check_integrations: bool) -> None:
        self.integrations = _Integrations(registry, load_all=check_integrations)
        self.docs: dict[Path, _Doc | None] = {}
        self.indexes: dict[Path, dict[str, _RunbookFacts]] = {}
        self.vars: dict[Path, set[str] | None] = {}

    def parsed(self, path: Path, name: str | None = None) -> _Doc | None:
        key = path.resolve()
        if key not in self.docs:
            try:
                self.docs[key] = _parse(_read(path), name or str(path))
            except InvalidDocument:
                self.docs[key] = None
        return self.docs[key]

    def index(self, root: Path) -> dict[str, _RunbookFacts]:
        if root not in self.indexes:
            found: dict[str, _RunbookFacts] = {}
            folder = root / "runbooks"
            for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                doc = self.parsed(path)
                if doc is None or doc.data.get("kind", "runbook") != "runbook":
                    continue
                facts = _facts(path, doc.data)
                found.setdefault(path.stem, facts)
                if isinstance(doc.data.get("id"), str):
                    found[doc.data["id"]] = facts
            self.indexes[root] = found
        return self.indexes[root]

    def vars_of(self, root: Path) -> set[str] | None:
        if root not in self.vars:
            known: set[str] | None = None
            config = root / CONFIG_NAME
            doc = self.parsed(config) if config.is_file() else None
            if doc is not None and isinstance(doc.data.get("vars", {}), dict):
                known = {str(k) for k in doc.data.get("vars", {})}
            elif config.is_file() and config.read_text(encoding="utf-8").strip() == "":
                known = set()
            self.vars[root] = known
        return self.vars[root]

    def check(self, path: Path) -> list[Diagnostic]:
        name = str(path)
        try:
            doc = _parse(_read(path), name)
        except InvalidDocument as exc:
            if path.name == CONFIG_NAME and exc.diagnostics[0].message == "the file is empty":
                return []
            return exc.diagnostics
        self.docs.setdefault(path.resolve(), doc)
        if path.name == CONFIG_NAME:
            _validate_model(doc, Config)
            return doc.problems
        kind = _kind(doc)
        root = _workspace_root(path)
        if kind == "runbook":
            vars_known = self.vars_of(root) if root is not None else None
            _check_runbook(doc, self.integrations, vars_known)
        elif kind == "drill":
            _validate_model(doc, Drill)
            if root is not None and (root / "runbooks").is_dir():
                _check_drill(doc, self.index(root))
        return doc.problems


def validate_paths(
    paths: list[Path], *, registry: Registry | None = None, check_integrations: bool = False
) -> tuple[int, list[Diagnostic]]:
    """Check files and folders (recursively, ``*.yaml``/``*.yml``); return (files, problems).

    ``irctl.yaml`` is checked as the workspace config, other files as a runbook
    or drill by their ``kind``.  A drill is also checked against the runbook it
    names, found in ``runbooks/`` of its workspace.  Integrations that ship with
    irctl are loaded to check action names and inputs; others only with
    ``check_integrations`` (they can be slow to import).
    """
    from irctl.actions import default_registry

    files = _expand(paths)
    validation = _Validation(registry or default_registry, check_integrations=check_integrations)
    problems: list[Diagnostic] = []
    for path in files:
        problems.extend(validation.check(path))
    problems.sort(key=lambda d: (d.file, d.line, d.column))
    return len(files), problems


def json_schema(kind: str | None = None) -> dict[str, Any]:
    """JSON Schema of runbooks and drills (``anyOf``), or of one kind: runbook, drill, config."""
    from pydantic import TypeAdapter

    models: dict[str, type[BaseModel]] = {"runbook": Runbook, "drill": Drill, "config": Config}
    if kind is None:
        schema = TypeAdapter(Runbook | Drill).json_schema()
        schema["title"] = "irctl runbook or drill"
    elif kind in models:
        schema = models[kind].model_json_schema()
    else:
        raise UsageError(f"unknown schema kind '{kind}'; choose runbook, drill or config")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
