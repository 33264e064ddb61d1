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

from pathlib import Path
from typing import Any

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
from irctl.runbook.config import Config, load_config
from irctl.runbook.located import Document, show, suggest, validate_model
from irctl.runbook.model import Drill, Runbook
from irctl.runbook.params import check_param_value, parse_params
from irctl.runbook.yamldoc import CONFIG_NAME, _finish, _parse, read_document

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

# -- public API ----------------------------------------------------------------------------------


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
