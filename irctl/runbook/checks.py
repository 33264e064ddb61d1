"""Checks of runbooks and drills that pydantic cannot make.

They run on a :class:`irctl.runbook.located.Document`'s raw data, so they report
even when pydantic found problems, and every problem lands at its place:

* step ids are unique;
* actions exist (their integration is imported once per namespace, through
  the registry) and their ``with`` inputs fit the action's model;
* approval policies are defined;
* templates parse, and read only what exists when they render: declared
  params, secrets and vars, ``item`` only in a ``for_each`` step, and only
  steps that have finished before the reading step starts;
* a param's own default obeys its rules;
* a drill names a runbook, params and steps that exist.

Step order is kept as positions, not as sets of earlier ids, so the checks
take time and memory in proportion to the runbook: every step gets its index
in document order, and each id the index at which its step is complete.  A
step nested in a ``parallel`` block starts when its outermost block starts and
is complete when that block is; ``on_failure`` steps come after every main
step.  A read of ``steps.X`` is valid when X is complete before the reading
step starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from irctl.actions import EXTRAS, Action, Registry
from irctl.errors import ForeignDefinition, IntegrationError
from irctl.runbook.limits import refused_attribute, refused_key
from irctl.runbook.located import (
    Document,
    Loc,
    field_names,
    path_text,
    report_validation,
    suggest,
    validate_model,
)
from irctl.runbook.model import Param, Policy, Runbook, Step
from irctl.runbook.params import nested_repeat, value_problems
from irctl.runbook.render import TOO_DEEP, check_syntax, is_template

__all__ = [
    "TEMPLATE_ROOTS",
    "Integrations",
    "RunbookFacts",
    "check_drill",
    "check_runbook",
    "runbook_facts",
]

TEMPLATE_ROOTS = ("params", "secrets", "vars", "steps", "run", "item")
_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


# -- templates -----------------------------------------------------------------------------------


#: What a ``repeat``'s ``until`` reads besides the usual names: the round's outputs and number.
_UNTIL_NAMES = frozenset({"outputs", "round"})


@dataclass(frozen=True)
class _Template:
    """What a template reads: names from its context, the keys read under each root, and the
    names it uses that the sandbox refuses (``__class__``, ``mro``), in the order written."""

    free: frozenset[str]
    reads: dict[str, frozenset[str]]
    refused: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def _jinja() -> Any:
    from jinja2 import Environment

    return Environment(autoescape=False)  # noqa: S701 - only parsed here, never rendered


# ``{{ root.name['key'] }}``: the placeholder most templates are made of, read without Jinja2.
_PLACEHOLDER = re.compile(
    r"(?<!\{)\{\{\s*([A-Za-z_]\w*)((?:\s*(?:\.[A-Za-z_]\w*|\[\s*'[^'\\{}\x00-\x1f]*'\s*\]"
    r"|\[\s*\"[^\"\\{}\x00-\x1f]*\"\s*\]))*)\s*\}\}",
    re.ASCII,
)  # not after a "{": "{{{ x }}" is a Jinja2 syntax error; no control characters in keys
_FIRST_KEY = re.compile(r"\s*(?:\.([A-Za-z_]\w*)|\[\s*'([^']*)'|\[\s*\"([^\"]*)\")", re.ASCII)
_MARKUP = ("{{", "}}", "{%", "%}", "{#", "#}")


def _placeholders(source: str) -> _Template | None:
    """The reads of a template that is only text and ``{{ root.a['b'].c }}`` placeholders over
    the template roots, as Jinja2's parse would find them; None for anything else."""
    free: set[str] = set()
    reads: dict[str, set[str]] = {}
    for match in _PLACEHOLDER.finditer(source):
        root, path = match.groups()
        if root not in TEMPLATE_ROOTS:
            return None
        if ("_" in path or "mro" in path) and _refused_in_path(path):
            return None  # the parse names it
        free.add(root)
        first = _FIRST_KEY.match(path)
        if first:
            reads.setdefault(root, set()).add(next(k for k in first.groups() if k is not None))
    text = _PLACEHOLDER.sub("", source)
    if any(mark in text for mark in _MARKUP):
        return None
    return _Template(frozenset(free), {k: frozenset(v) for k, v in reads.items()})


_PART = re.compile(r"\.([A-Za-z_]\w*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]", re.ASCII)


def _refused_in_path(path: str) -> bool:
    """Whether a placeholder's ``.a['b']`` path uses a name the sandbox refuses."""
    for attr, single, double in _PART.findall(path):
        if refused_attribute(attr) if attr else refused_key(single or double):
            return True
    return False


#: Filters whose argument at this position (or named ``attribute``) is a dotted path of keys,
#: looked up like ``x['key']`` (``sort`` takes several, separated by commas).
_ATTRIBUTE_ARGS = {
    "selectattr": 0, "rejectattr": 0, "groupby": 0, "sum": 0, "join": 1, "min": 1, "max": 1,
    "unique": 1, "sort": 2,
}  # fmt: skip


def _const_text(node: Any) -> str | None:
    from jinja2 import nodes

    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


def _filter_refused(node: Any) -> list[str]:
    """Names a filter's constant arguments make the sandbox refuse: ``attr('__class__')``,
    ``map(attribute='__class__')``, ``selectattr('mro')``."""
    found: list[str] = []
    if node.name == "attr" and node.args:
        name = _const_text(node.args[0])
        if name is not None and refused_attribute(name):
            found.append(name)
    paths = [kw.value for kw in node.kwargs if kw.key == "attribute"]
    at = _ATTRIBUTE_ARGS.get(node.name)
    if at is not None and len(node.args) > at:
        paths.append(node.args[at])
    for path in paths:
        text = _const_text(path)
        for part in re.split(r"[.,]", text or ""):
            if refused_key(part.strip()):
                found.append(part.strip())
    return found


def _format_refused(text: str, depth: int = 0) -> list[str]:
    """Names that ``text.format(...)`` or ``text.format_map(...)`` would look up and the sandbox
    refuses: ``'{0.__class__}'``, ``'{x[__globals__]}'``, in nested specs too."""
    import importlib
    from string import Formatter

    split: Any = importlib.import_module("_string").formatter_field_name_split  # str.format's

    found: list[str] = []
    try:
        fields = list(Formatter().parse(text))
    except ValueError:
        return found  # a malformed format string fails when it renders, with Python's reason
    for _, field, spec, _ in fields:
        if field is None:
            continue
        try:
            _, rest = split(field)
            parts = list(rest)
        except ValueError:
            parts = []
        for is_attr, key in parts:
            name = str(key)
            if (refused_attribute(name) if is_attr else isinstance(key, str) and refused_key(name)):
                found.append(name)
        if spec and depth < 2:
            found.extend(_format_refused(spec, depth + 1))
    return found


def _call_refused(node: Any) -> list[str]:
    """Names a call makes the sandbox refuse: ``'{0.__class__}'.format(x)``."""
    from jinja2 import nodes

    method = node.node
    if not isinstance(method, nodes.Getattr):
        return []
    text = _const_text(method.node)
    if text is not None and method.attr in ("format", "format_map"):
        return _format_refused(text)
    return []


def _changes_literal(node: Any) -> bool:
    """Whether ``node`` is a method that changes a list or mapping written in the template
    (``[1].append``), which the sandbox refuses to look up."""
    from jinja2 import nodes
    from jinja2.sandbox import modifies_known_mutable

    literal: Any = [] if isinstance(node.node, nodes.List) else None
    if isinstance(node.node, nodes.Dict):
        literal = {}
    return literal is not None and modifies_known_mutable(literal, node.attr)


@lru_cache(maxsize=4096)
def _template(source: str) -> _Template | str:
    """A template's reads, or its syntax error: read directly when it is only placeholders,
    else from one Jinja2 parse."""
    return _placeholders(source) or _parsed(source)


def _parsed(source: str) -> _Template | str:
    """A template's reads, or its syntax error, from one parse.

    Parsing catches what :func:`irctl.runbook.render.check_syntax` does at a fraction
    of its cost (it compiles); only a template using a filter or test unknown
    to plain Jinja2 is handed to ``check_syntax`` to settle.
    """
    from jinja2 import TemplateSyntaxError, nodes

    env = _jinja()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} (template line {exc.lineno})"
    except RecursionError:
        return TOO_DEEP
    filters: list[Any] = []  # unknown to plain Jinja2
    tests: list[Any] = []
    loaded: set[str] = set()
    stored: set[str] = set()
    reads: dict[str, set[str]] = {}
    refused: list[str] = []
    wanted = (
        nodes.Filter, nodes.Test, nodes.Name, nodes.For, nodes.Getattr, nodes.Getitem, nodes.Call
    )  # fmt: skip
    for node in tree.find_all(wanted):  # one walk of the tree
        if isinstance(node, nodes.Getattr):
            if refused_attribute(node.attr) or _changes_literal(node):
                refused.append(node.attr)
        elif isinstance(node, nodes.Getitem):
            key = _const_text(node.arg)
            if key is not None and refused_key(key):
                refused.append(key)
        if isinstance(node, nodes.Call):
            refused.extend(_call_refused(node))
        elif isinstance(node, nodes.Filter):
            refused.extend(_filter_refused(node))
            if node.name not in env.filters:
                filters.append(node)
        elif isinstance(node, nodes.Test):
            if node.name not in env.tests:
                tests.append(node)
        elif isinstance(node, nodes.Name):
            (loaded if node.ctx == "load" else stored).add(node.name)
        elif isinstance(node, nodes.For):
            stored.add("loop")
        elif isinstance(node.node, nodes.Name) and node.node.name in TEMPLATE_ROOTS:
            root = node.node.name
            if isinstance(node, nodes.Getattr):
                reads.setdefault(root, set()).add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                reads.setdefault(root, set()).add(node.arg.value)
    if (filters or tests) and check_syntax(source) is not None:
        node, what, known = (
            (filters[0], "filter", env.filters) if filters else (tests[0], "test", env.tests)
        )
        hint = suggest(node.name, list(known))
        where = f"(template line {node.lineno})"
        return f"template syntax error: no {what} named '{node.name}'{hint} {where}"
    free = loaded - stored - set(env.globals)
    return _Template(
        frozenset(free), {k: frozenset(v) for k, v in reads.items()}, tuple(dict.fromkeys(refused))
    )


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


def step_reads(step: Step) -> frozenset[str]:
    """The ids of the steps whose outputs or status a step's own templates read (``steps.X``;
    the steps inside a block are not the block's own)."""
    raw = step.model_dump(by_alias=True, exclude={"parallel"}, exclude_none=True)
    found: set[str] = set()
    for _, text in _strings(raw, ()):
        if not is_template(text):
            continue
        parsed = _template(text)
        if not isinstance(parsed, str):
            found.update(parsed.reads.get("steps", frozenset()))
    return frozenset(found)


def _unknown(read: frozenset[str], known: AbstractSet[str]) -> list[str]:
    """The names a template reads that are not in ``known``, sorted."""
    return sorted(name for name in read if name not in known)


# -- integrations --------------------------------------------------------------------------------


class Integrations:
    """Which action namespaces can be checked, found once per validation."""

    def __init__(self, registry: Registry, *, load_all: bool) -> None:
        self.registry = registry
        self.load_all = load_all
        self._status: dict[str, str | None] = {}
        self._inputs: dict[str, list[str]] = {}

    def status(self, namespace: str) -> str | None:
        """None: loaded and checkable; "skip": installed, not loaded; else the problem."""
        if namespace not in self._status:
            self._status[namespace] = self._find(namespace)
        return self._status[namespace]

    def _find(self, namespace: str) -> str | None:
        already = bool(self.registry.known(namespace))
        modules = self.registry.modules(namespace)
        ours = self.registry.first_party(namespace) or all(
            module.startswith("irctl.") for module in modules
        )
        if modules and not (ours or already or self.load_all):
            return "skip"  # another package's: imported only with check_integrations (slow?)
        try:
            self.registry.load_namespace(namespace)
        except IntegrationError as exc:
            return exc.message
        return None

    def input_names(self, defined: Action[Any]) -> list[str]:
        """The names an action's ``with`` may use: aliases, and field names if it allows them."""
        if defined.name not in self._inputs:
            model = defined.inputs
            by_name = model.model_config.get("populate_by_name")
            self._inputs[defined.name] = field_names(model) + (
                list(model.model_fields) if by_name else []
            )
        return self._inputs[defined.name]

    def suggestion(self, name: str) -> str:
        """For an action in a namespace nobody provides: the closest known action or namespace."""
        namespace, _, rest = name.partition(".")
        if self.registry.modules(namespace) or namespace in EXTRAS:
            return ""
        installed = self.registry.installed()
        known = self.registry.known()
        spaces = {*installed, *EXTRAS, *(n.split(".", 1)[0] for n in known)}
        close = get_close_matches(namespace, sorted(spaces), n=1)
        if not close:
            return ""
        guess = f"{close[0]}.{rest}"
        if guess in known or not self.registry.known(close[0]):
            return f" (did you mean '{guess}'?)"
        return suggest(guess, self.registry.known(close[0])) or (
            f" (did you mean the '{close[0]}' namespace?)"
        )


# -- runbooks ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _StepInfo:
    """A step, where it is written, and when it runs, as positions in document order."""

    loc: Loc
    raw: dict[str, Any]
    order: int  # its own index: steps, nested ones included, then on_failure
    start: int  # when it starts: the index of the top-level step it is in
    parent: _StepInfo | None  # the parallel block it is in, if any
    end: int = -1  # the index of its last nested step (its own if it has none)

    @property
    def id(self) -> object:
        return self.raw.get("id")


class _RunbookChecks:
    """Pass 3 for a runbook, on the raw data so it runs even when pydantic found problems."""

    def __init__(
        self, doc: Document, integrations: Integrations, vars_known: set[str] | None = None
    ) -> None:
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.integrations = integrations
        self.vars_known = vars_known
        params = self.data.get("params", {})
        self.params = params if isinstance(params, dict) else None
        # declared names, in the order written (for hints) and as sets (for lookups)
        self.param_names = _names(self.params)
        self.param_set = frozenset(self.param_names)
        secrets = self.data.get("secrets")
        checked = isinstance(secrets, dict) or "secrets" not in self.data
        self.secret_names = _names(secrets) if checked else None
        self.secret_set = frozenset(self.secret_names or ())
        self.approval_names = _names(self.data.get("approvals"))
        self.approval_set = frozenset(self.approval_names)
        self.ids: dict[str, Loc] = {}  # id -> where it is first used
        self.complete: dict[str, int] = {}  # id -> the index at which its first step is complete
        self.orders: dict[str, list[int]] = {}  # id -> the index of every step using it
        self.failed_namespaces: set[str] = set()

    def run(self) -> None:
        self._check_params()
        self._check_excluded()
        steps = self._collect()
        for info in steps:
            self._check_step(info)

    def _check_excluded(self) -> None:
        """``exclude_operators`` reads params alone: it is rendered before any step runs, and
        again wherever a person's act is checked."""
        entries = self.data.get("exclude_operators")
        if not isinstance(entries, list):
            return  # pydantic reports it
        for index, text in enumerate(entries):
            if not isinstance(text, str) or not is_template(text):
                continue
            loc: Loc = ("exclude_operators", index)
            parsed = _template(text)
            if isinstance(parsed, str):
                self.doc.add(loc, parsed)
                continue
            for name in parsed.refused:
                self.doc.add(loc, f"template uses '{name}', which the sandbox refuses")
            others = sorted(parsed.free - {"params"})
            if others:
                self.doc.add(loc, f"exclude_operators reads only params, not {', '.join(others)}")
            for name in _unknown(parsed.reads.get("params", frozenset()), self.param_set):
                hint = suggest(name, self.param_names) or "; declare it under 'params:'"
                self.doc.add(loc, f"unknown param '{name}' in template{hint}")

    # ids and order

    def _collect(self) -> list[_StepInfo]:
        """Every step in document order, ``steps`` then ``on_failure``, each id registered.

        on_failure steps come after every main step, so they may read any of them.
        """
        found: list[_StepInfo] = []
        for key in ("steps", "on_failure"):
            items = self.data.get(key)
            for index, raw in enumerate(items if isinstance(items, list) else []):
                if not isinstance(raw, dict):
                    continue
                start = len(found)
                self._block(raw, (key, index), start, None, found)
                complete = len(found) - 1  # a block's steps are complete when it is
                for info in found[start:]:
                    if isinstance(info.id, str):
                        self.complete.setdefault(info.id, complete)
        return found

    def _block(
        self,
        raw: dict[str, Any],
        loc: Loc,
        start: int,
        parent: _StepInfo | None,
        found: list[_StepInfo],
    ) -> None:
        """Register a step and everything nested in it."""
        step_id = raw.get("id")
        info = _StepInfo(loc, raw, len(found), start, parent)
        if isinstance(step_id, str):
            if step_id in self.ids:
                first = self.ids[step_id]
                self.doc.add(
                    (*loc, "id"),
                    f"duplicate step id '{step_id}' (first used by {path_text(first)}, "
                    f"line {self.doc.pos(first)[0]})",
                )
            else:
                self.ids[step_id] = loc
            self.orders.setdefault(step_id, []).append(info.order)
        found.append(info)
        children = raw.get("parallel")
        if isinstance(children, list):
            for index, child in enumerate(children):
                if isinstance(child, dict):
                    self._block(child, (*loc, "parallel", index), start, info, found)
        info.end = len(found) - 1

    def _runs_alongside(self, step_id: str, info: _StepInfo) -> bool:
        """Whether a step ``step_id`` is nested in a parallel block that ``info`` is nested in."""
        block = info.parent
        while block is not None:
            if step_id != block.id and any(
                block.order < order <= block.end for order in self.orders[step_id]
            ):
                return True
            block = block.parent
        return False

    # one step

    def _check_step(self, info: _StepInfo) -> None:
        raw, loc = info.raw, info.loc
        action = raw.get("action")
        if isinstance(action, str):
            self._check_action(action, raw, loc)
        approval = raw.get("approval")
        if isinstance(approval, str):
            names = self.approval_names
            if approval not in self.approval_set:
                known = f"; known: {', '.join(names)}" if names else ""
                hint = suggest(approval, names) or known or "; define it under 'approvals:'"
                self.doc.add((*loc, "approval"), f"unknown approval policy '{approval}'{hint}")
        fan_out = "for_each" in raw
        for key in ("with", "when", "for_each"):
            if key in raw:
                item_ok = fan_out and key != "for_each"
                for where, text in _strings(raw[key], (*loc, key)):
                    if is_template(text):
                        self._check_template(text, where, info, item_ok=item_ok)
        repeat = raw.get("repeat")
        until = repeat.get("until") if isinstance(repeat, dict) else None
        if isinstance(until, str) and is_template(until):
            where = (*loc, "repeat", "until")
            self._check_template(until, where, info, item_ok=False, own=_UNTIL_NAMES)

    def _check_action(self, name: str, raw: dict[str, Any], loc: Loc) -> None:
        if not _ACTION_NAME.fullmatch(name):
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
        except ForeignDefinition as exc:
            self.doc.add((*loc, "action"), exc.message)
            return
        except IntegrationError:
            known = registry.known(namespace)
            hint = suggest(name, known)
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
        names = self.integrations.input_names(defined)
        if model.model_config.get("extra") != "allow":
            for key in given:
                if key not in names:
                    self.doc.add(
                        (*where, key),
                        f"unknown input '{key}'{owner}{suggest(key, names)}",
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
                report_validation(
                    self.doc,
                    errors,
                    given,
                    model,
                    where,
                    noun="input",
                    owner=owner,
                    skip=frozenset({"extra_forbidden"}),
                )

    def _check_template(
        self, text: str, loc: Loc, info: _StepInfo, *, item_ok: bool,
        own: frozenset[str] = frozenset(),
    ) -> None:  # fmt: skip
        """Check one template; ``own`` names more it may read (``outputs`` in ``until``)."""
        parsed = _template(text)
        if isinstance(parsed, str):
            self.doc.add(loc, parsed)
            return
        for name in parsed.refused:
            self.doc.add(loc, f"template uses '{name}', which the sandbox refuses")
        empty: frozenset[str] = frozenset()
        for step_id in sorted(parsed.reads.get("steps", empty)):
            self._check_step_ref(step_id, loc, info)
        if self.params is not None:
            names = self.param_names
            for name in _unknown(parsed.reads.get("params", empty), self.param_set):
                self.doc.add(loc, f"unknown param '{name}' in template{suggest(name, names)}")
        if self.secret_names is not None:
            names = self.secret_names
            for name in _unknown(parsed.reads.get("secrets", empty), self.secret_set):
                hint = suggest(name, names) or "; declare it under 'secrets:'"
                self.doc.add(loc, f"unknown secret '{name}' in template{hint}")
        if self.vars_known is not None:
            for name in _unknown(parsed.reads.get("vars", empty), self.vars_known):
                hint = suggest(name, sorted(self.vars_known)) or (
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
        for name in sorted(parsed.free - set(TEMPLATE_ROOTS) - own):
            hint = suggest(name, TEMPLATE_ROOTS) or (
                "; templates read params, secrets, vars, steps, run and item"
            )
            self.doc.add(loc, f"unknown name '{name}' in template{hint}")

    def _check_step_ref(self, step_id: str, loc: Loc, info: _StepInfo) -> None:
        complete = self.complete.get(step_id)
        if complete is not None and complete < info.start:
            return  # it is complete before this step starts
        own = info.id
        if step_id not in self.ids:
            hint = suggest(step_id, list(self.ids))
            self.doc.add(loc, f"reads steps.{step_id}, but there is no step '{step_id}'{hint}")
        elif step_id == own:
            self.doc.add(loc, f"step '{own}' reads its own outputs (steps.{step_id})")
        elif self._runs_alongside(step_id, info):
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
                if nested_repeat(pattern):
                    self.doc.add(
                        (*loc, "pattern"),
                        "a repeated group that itself repeats a varying number of times "
                        "(like (a+)+) can take exponential time to check; rewrite it without "
                        "the nesting",
                    )
                    continue
            try:
                spec = Param.model_validate(spec_raw)
            except ValidationError:
                continue  # pydantic's errors are reported already
            if spec.items is not None and spec.type != "list":
                self.doc.add((*loc, "items"), f"'items' applies only to type list, not {spec.type}")
            if spec.default is not None:
                for text in value_problems(spec, spec.default):
                    self.doc.add((*loc, "default"), text)


def check_runbook(
    doc: Document, integrations: Integrations, vars_known: set[str] | None = None
) -> Runbook | None:
    """The runbook model of ``doc``, or None; every problem found is added to ``doc``."""
    runbook: Runbook | None = validate_model(doc, Runbook)
    _RunbookChecks(doc, integrations, vars_known).run()
    return runbook


def check_policies(
    doc: Document, runbook: Runbook, operators: Mapping[str, tuple[list[str], bool]]
) -> None:
    """Approval policies that the workspace's operators could never satisfy."""
    from irctl.runbook.model import impossible

    roles_of = {name: roles for name, (roles, _) in operators.items()}
    keyed = [name for name, (_, has_key) in operators.items() if has_key]
    for name, policy in runbook.approvals.items():
        problem = impossible(policy, roles_of, None, keyed=keyed)
        if problem:
            doc.add(("approvals", name), f"no operator in irctl.yaml could satisfy it: {problem}")
    if runbook.start is not None:
        allowed = set(runbook.start.roles)
        starters = [n for n in keyed if allowed & set(roles_of[n])]
        if not starters:
            holders = sorted(n for n, roles in roles_of.items() if allowed & set(roles))
            why = (
                f"{', '.join(holders)} hold(s) one of these roles but has no key"
                if holders
                else "no operator holds one of these roles"
            )
            doc.add(
                ("start", "roles"),
                f"no operator in irctl.yaml could start a live run: {why} (a live start is "
                "signed with the initiator's own key)",
            )
    placed: list[tuple[Loc, Step]] = []
    for index, step in enumerate(runbook.steps):
        placed.append((("steps", index), step))
        placed.extend(
            (("steps", index, "parallel", inner), child)
            for inner, child in enumerate(step.parallel or [])
        )
    for where, found in placed:
        if isinstance(found.approval, Policy):
            problem = impossible(found.approval, roles_of, None, keyed=keyed)
            if problem:
                doc.add(
                    (*where, "approval"),
                    f"step '{found.id}': no operator in irctl.yaml could satisfy it: {problem}",
                )


# -- drills against their runbook ----------------------------------------------------------------


@dataclass
class RunbookFacts:
    """What a drill is checked against: its runbook's params and step ids."""

    path: Path
    params: dict[str, Any]
    steps: dict[str, bool]  # step id -> has an approval


def runbook_facts(path: Path, data: dict[str, Any]) -> RunbookFacts:
    """The facts of a runbook's raw data, even one with problems of its own."""
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
    return RunbookFacts(path, dict(params or {}), steps)


def check_triggers(doc: Document, runbooks: dict[str, RunbookFacts]) -> None:
    """Add to ``doc`` (irctl.yaml) what its ``triggers:`` name that the runbooks lack: an
    unknown runbook, a param it does not take, a required param no trigger gives."""
    triggers = doc.data.get("triggers")
    for name, raw in triggers.items() if isinstance(triggers, dict) else []:
        if not isinstance(raw, dict) or not isinstance(raw.get("runbook"), str):
            continue  # pydantic reports it
        runbook = raw["runbook"]
        facts = runbooks.get(runbook)
        if facts is None:
            known = sorted(runbooks)
            hint = suggest(runbook, known) or (f"; known: {', '.join(known)}" if known else "")
            doc.add(("triggers", name, "runbook"), f"unknown runbook '{runbook}'{hint}")
            continue
        given = raw.get("params", {})
        given = given if isinstance(given, dict) else {}
        for key in given:
            if key not in facts.params:
                hint = suggest(str(key), list(facts.params))
                doc.add(("triggers", name, "params", key),
                        f"unknown param '{key}' for runbook '{runbook}'{hint}",
                        at=doc.key_pos(("triggers", name, "params", key)))  # fmt: skip
        for key, spec in facts.params.items():
            found = _param_or_none(spec)
            if found is not None and found.is_required and key not in given:
                doc.add(("triggers", name, "params"),
                        f"runbook '{runbook}' needs param '{key}': give it from the alert, "
                        f"e.g. {key}: \"{{{{ alert.labels.{key} }}}}\"")  # fmt: skip


def check_drill(doc: Document, runbooks: dict[str, RunbookFacts]) -> None:
    """Add to ``doc`` what its drill names that its runbook (found in ``runbooks``) lacks."""
    data = doc.data
    name = data.get("runbook")
    if not isinstance(name, str):
        return
    facts = runbooks.get(name)
    if facts is None:
        known = sorted(runbooks)
        hint = suggest(name, known) or (f"; known: {', '.join(known)}" if known else "")
        doc.add(("runbook",), f"unknown runbook '{name}'{hint}")
        return
    given = data.get("params", {})
    if isinstance(given, dict):
        for key, value in given.items():
            spec_raw = facts.params.get(key)
            if spec_raw is None:
                hint = suggest(key, list(facts.params))
                doc.add(
                    ("params", key),
                    f"unknown param '{key}' for runbook '{name}'{hint}",
                    at=doc.key_pos(("params", key)),
                    path=("params",),
                )
                continue
            spec = _param_or_none(spec_raw)
            if spec is not None:
                for text in value_problems(spec, value):
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
                hint = suggest(target, list(facts.steps))
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
