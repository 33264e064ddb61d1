"""YAML -> typed models, with every problem reported as ``file:line:column: path: message``.

Loading happens in three passes over one file, and every problem from all
three is reported at once (:class:`irctl.errors.InvalidDocument`):

1. YAML is composed into nodes, which keep their marks, and built into plain
   data together with a map from each field path to its ``line:column`` (a
   :class:`irctl.runbook.located.Document`).  Duplicate keys, which PyYAML silently
   accepts, are caught here.
2. pydantic validates the data against :mod:`irctl.runbook.model`; its error
   locations are mapped back to ``line:column`` and its messages made human
   (:mod:`irctl.runbook.located`).
3. Checks pydantic cannot make (:mod:`irctl.runbook.checks`): unique step ids, known
   actions and their inputs, approval policies, templates (syntax, and what
   they read: only earlier steps, declared params and secrets, ``item`` only
   in ``for_each``), and params whose own default breaks their rules.

:func:`validate_paths` runs the same checks over files and folders for
``irctl validate``, and also checks each drill against the runbook it names.
Loading imports only PyYAML, pydantic and Jinja2; integrations are imported
only when a runbook names one of their actions.  :func:`parse_params` and
:func:`check_param_value` live in :mod:`irctl.runbook.params` and are re-exported here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from irctl.actions import Registry
from irctl.errors import Diagnostic, InvalidDocument, UsageError
from irctl.runbook.checks import (
    Integrations,
    RunbookFacts,
    check_drill,
    check_policies,
    check_runbook,
    check_triggers,
    runbook_facts,
)
from irctl.runbook.located import Document, Loc, Pos, show, suggest, validate_model
from irctl.runbook.model import Config, Drill, Runbook
from irctl.runbook.params import check_param_value, parse_params

__all__ = [
    "check_param_value",
    "json_schema",
    "load_config",
    "load_document",
    "load_drill",
    "load_runbook",
    "load_runbook_text",
    "parse_params",
    "read_document",
    "validate_paths",
]

CONFIG_NAME = "irctl.yaml"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- pass 1: YAML with positions -----------------------------------------------------------------


def _mark(node: yaml.Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _scalar(loader: Any, node: yaml.ScalarNode) -> Any:
    if node.tag == _STR_TAG:
        return node.value  # what PyYAML's constructor returns, without its per-node cache
    return loader.construct_object(node, deep=True)


#: The most values one document may hold once YAML aliases are expanded. A 10,000-step runbook
#: holds about 30,000; a few nested aliases can ask for billions, which must not hang the loader.
MAX_VALUES = 200_000

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"

#: The largest whole number, either side of zero, that a runbook, drill or config may hold
#: anywhere (a field, a param, a var, an integration setting): 2**256 - 1, 78 digits, the
#: largest EVM amount. Each field has its own, smaller bound; this one keeps any value cheap to
#: read and to write out (Python refuses to read or print a number of more than 4,300 digits).
MAX_INTEGER = 2**256 - 1
_NUMBER_TEXT = 400  # a whole number written with more characters is refused without reading it


def _too_large(text: str) -> str:
    shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text):,} characters)"
    return (
        f"the whole number {shown} is too large: irctl reads whole numbers up to 2**256 - 1 "
        "(78 digits), either side of zero"
    )


#: A whole number as YAML writes one: decimal, 0b binary, 0x hex, 0 octal or base 60 (1:30).
_WHOLE = re.compile(r"[-+]?(0b[01_]+|0x[0-9a-fA-F_]+|0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])*)")


def _int_or_problem(loader: Any, node: yaml.ScalarNode) -> tuple[Any, str | None]:
    """An int-tagged scalar as its number, or None and why it is refused (too large, or not a
    whole number at all: ``!!int abc``)."""
    if not _WHOLE.fullmatch(node.value):
        return None, f"{show(node.value)} is not a whole number; remove the !!int tag or fix it"
    if len(node.value) > _NUMBER_TEXT:
        return None, _too_large(node.value)
    try:  # at most _NUMBER_TEXT characters: far below Python's limit of 4,300 digits
        value = loader.construct_object(node, deep=True)
    except ValueError:  # !!int 08: not octal
        return None, f"{show(node.value)} is not a whole number; remove the !!int tag or fix it"
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        return None, _too_large(node.value)
    return value, None


def _tag_name(tag: str) -> str:
    return "!!" + tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _json_scalar(loader: Any, node: yaml.ScalarNode, loc: Loc, doc: Document) -> Any:
    """A scalar as a JSON value: dates stay the text written, binary and inf/NaN are refused."""
    if node.tag == _STR_TAG:
        return node.value
    if node.tag == _TIMESTAMP_TAG:
        return node.value  # '2025-01-01' means that text, not a date object nobody can sign
    if node.tag == _INT_TAG:
        value, problem = _int_or_problem(loader, node)
        if problem is not None:
            doc.add(loc, problem)
            doc.refuse(loc)  # nothing that follows reports this value a second time
        return value
    try:
        value = loader.construct_object(node, deep=True)
    except (ValueError, KeyError, TypeError):  # an explicit tag the text does not fit
        tag = _tag_name(node.tag)
        doc.add(loc, f"{show(node.value)} is not a valid {tag} value; remove the tag or fix it")
        doc.refuse(loc)
        return None
    if isinstance(value, bytes):
        doc.add(loc, "binary values (!!binary) are not supported; write the value as text")
        return node.value  # the text, so checks that follow do not report it a second time
    if isinstance(value, float) and not math.isfinite(value):
        if node.tag == _FLOAT_TAG and any(c.isdigit() for c in node.value):
            shown = show(node.value)
            doc.add(loc, f"the number {shown} is too large: numbers must be finite (below 1.8e308)")
        else:
            doc.add(loc, f"{value!r} is not supported; numbers must be finite")
        return node.value
    return value


def _build(loader: Any, node: yaml.Node, loc: Loc, doc: Document, active: set[int]) -> Any:
    doc.values.setdefault(loc, _mark(node))
    if len(doc.values) > MAX_VALUES:
        raise _TooLarge(node)
    if isinstance(node, yaml.ScalarNode):
        return _json_scalar(loader, node, loc, doc)
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
    loader: Any, node: yaml.MappingNode, loc: Loc, doc: Document, active: set[int]
) -> dict[Any, Any]:
    own_keys = {id(key) for key, _ in node.value if key.tag != _MERGE_TAG}
    if len(own_keys) != len(node.value):
        loader.flatten_mapping(node)  # YAML merge keys (<<): merged entries first, own ones win
    result: dict[Any, Any] = {}
    seen: dict[Any, Pos] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):  # a list or mapping: never hashable
            doc.add(loc, "a key must be a plain value, not a list or mapping", at=_mark(key_node))
            continue
        if key_node.tag == _INT_TAG:
            key, problem = _int_or_problem(loader, key_node)
            if problem is not None:
                doc.add(loc, f"key: {problem}", at=_mark(key_node))
                continue
        else:
            try:
                key = _scalar(loader, key_node)
            except (ValueError, KeyError, TypeError):  # an explicit tag the text does not fit
                tag = _tag_name(key_node.tag)
                problem = f"{show(key_node.value)} is not a valid {tag} value; remove the tag"
                doc.add(loc, f"key: {problem} or fix it", at=_mark(key_node))
                continue
        try:
            hash(key)
        except TypeError:
            doc.add(loc, "a key must be a plain value, not a list or mapping", at=_mark(key_node))
            continue
        here = (*loc, key)
        if id(key_node) in own_keys:
            at = _mark(key_node)
            if key in seen:
                line, _ = seen[key]
                doc.add(
                    here,
                    f"duplicate key '{key}' (first written at line {line}); YAML would keep only "
                    "one of them",
                    at=at,
                )
                continue
            seen[key] = at
            doc.keys[here] = at
        doc.values.pop(here, None)
        result[key] = _build(loader, value_node, here, doc, active)
    return result


def _parse(text: str, name: str) -> Document:
    """YAML text as a mapping with positions; raises InvalidDocument if it is not even that."""
    doc = Document(name)
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _build(loader, node, (), doc, set())
    except _TooLarge as exc:
        line, column = _mark(exc.node)
        message = (
            f"the document holds more than {MAX_VALUES:,} values once its YAML aliases (*name) "
            "are expanded; write the values out or use fewer nested aliases"
        )
        raise InvalidDocument([Diagnostic(name, line, column, "", message)]) from None
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
                    name, line, column, "", f"expected a mapping of fields, got {show(doc.data)}"
                )
            ]
        )
    return doc


def read_document(path: Path) -> str:
    """The text of a runbook, drill or config file; InvalidDocument if it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = Diagnostic(str(path), 1, 1, "", "the file is not UTF-8 text")
        raise InvalidDocument([problem]) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


# -- public API ----------------------------------------------------------------------------------


def _finish(doc: Document, model: Any) -> Any:
    if doc.problems:
        raise InvalidDocument(doc.problems)
    return model


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

    chosen = registry or default_registry
    key = (text, id(chosen), check_integrations)
    known = _LOADED.get(key)
    if known is not None and known[0] is chosen:
        return known[1]
    doc = _parse(text, name)
    integrations = Integrations(chosen, load_all=check_integrations)
    result: Runbook = _finish(doc, check_runbook(doc, integrations))
    _LOADED[key] = (chosen, result)
    while len(_LOADED) > _LOADED_MAX:
        _LOADED.pop(next(iter(_LOADED)))
    return result


#: Runbooks already loaded, by their exact text: a run executed right after it was created
#: (or resumed in the same process) is not parsed and checked again.  Only successes are
#: kept (a failure is reported again with the name it is given), and the models are frozen.
_LOADED: dict[tuple[str, int, bool], tuple[Registry, Runbook]] = {}
_LOADED_MAX = 16


def load_runbook(
    path: Path, *, registry: Registry | None = None, check_integrations: bool = True
) -> Runbook:
    """A runbook file; see :func:`load_runbook_text`."""
    return load_runbook_text(
        read_document(path), str(path), registry=registry, check_integrations=check_integrations
    )


def load_drill(path: Path) -> Drill:
    doc = _parse(read_document(path), str(path))
    result: Drill = _finish(doc, validate_model(doc, Drill))
    return result


def load_config(path: Path) -> Config:
    """The workspace config; an empty file is the default config."""
    text = read_document(path)
    try:
        doc = _parse(text, str(path))
    except InvalidDocument as exc:
        if exc.diagnostics[0].message == "the file is empty":
            return Config()
        raise
    result: Config = _finish(doc, validate_model(doc, Config))
    return result


def _kind(doc: Document) -> str | None:
    """``runbook`` or ``drill``; reports anything else and returns None."""
    kind = doc.data.get("kind", "runbook")
    if kind in ("runbook", "drill"):
        return str(kind)
    hint = suggest(kind, ["runbook", "drill"]) or "; expected runbook or drill"
    doc.add(("kind",), f"unknown kind {show(kind)}{hint}")
    return None


def load_document(path: Path, *, registry: Registry | None = None) -> Runbook | Drill:
    """A runbook or a drill, by its ``kind`` (a file without one is a runbook)."""
    from irctl.actions import default_registry

    doc = _parse(read_document(path), str(path))
    kind = _kind(doc)
    if kind == "drill":
        drill: Drill = _finish(doc, validate_model(doc, Drill))
        return drill
    if kind == "runbook":
        integrations = Integrations(registry or default_registry, load_all=True)
        runbook: Runbook = _finish(doc, check_runbook(doc, integrations))
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
        self.integrations = Integrations(registry, load_all=check_integrations)
        self.docs: dict[Path, Document | None] = {}
        self.indexes: dict[Path, dict[str, RunbookFacts]] = {}
        self.vars: dict[Path, set[str] | None] = {}
        self.operators: dict[Path, dict[str, tuple[list[str], bool]] | None] = {}

    def parsed(self, path: Path, name: str | None = None) -> Document | None:
        key = path.resolve()
        if key not in self.docs:
            try:
                self.docs[key] = _parse(read_document(path), name or str(path))
            except InvalidDocument:
                self.docs[key] = None
        return self.docs[key]

    def index(self, root: Path) -> dict[str, RunbookFacts]:
        if root not in self.indexes:
            found: dict[str, RunbookFacts] = {}
            folder = root / "runbooks"
            for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                doc = self.parsed(path)
                if doc is None or doc.data.get("kind", "runbook") != "runbook":
                    continue
                facts = runbook_facts(path, doc.data)
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

    def operators_of(self, root: Path) -> dict[str, tuple[list[str], bool]] | None:
        """The workspace's operators: name -> (roles, has a key); None if none configured."""
        if root not in self.operators:
            found: dict[str, tuple[list[str], bool]] | None = None
            config = root / CONFIG_NAME
            doc = self.parsed(config) if config.is_file() else None
            raw = doc.data.get("operators") if doc is not None else None
            if isinstance(raw, dict) and raw:
                found = {}
                for name, given in raw.items():
                    spec = given if isinstance(given, dict) else {}
                    roles = spec.get("roles")
                    listed = [str(r) for r in roles] if isinstance(roles, list) else []
                    found[str(name)] = (listed, bool(spec.get("key")))
            self.operators[root] = found
        return self.operators[root]

    def check(self, path: Path) -> list[Diagnostic]:
        name = str(path)
        try:
            doc = _parse(read_document(path), name)
        except InvalidDocument as exc:
            if path.name == CONFIG_NAME and exc.diagnostics[0].message == "the file is empty":
                return []
            return exc.diagnostics
        self.docs.setdefault(path.resolve(), doc)
        if path.name == CONFIG_NAME:
            validate_model(doc, Config)
            folder = path.resolve().parent
            if isinstance(doc.data.get("triggers"), dict) and (folder / "runbooks").is_dir():
                check_triggers(doc, self.index(folder))
            return doc.problems
        kind = _kind(doc)
        root = _workspace_root(path)
        if kind == "runbook":
            vars_known = self.vars_of(root) if root is not None else None
            runbook = check_runbook(doc, self.integrations, vars_known)
            operators = self.operators_of(root) if root is not None else None
            if runbook is not None and operators is not None:
                check_policies(doc, runbook, operators)
        elif kind == "drill":
            validate_model(doc, Drill)
            if root is not None and (root / "runbooks").is_dir():
                check_drill(doc, self.index(root))
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
