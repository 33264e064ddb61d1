"""YAML -> typed models, with every problem reported as ``file:line:column: path: message``.

(minimal first version: full diagnostics to come)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from irctl.actions import Registry
from irctl.errors import Diagnostic, InvalidDocument, UsageError
from irctl.model import Config, Drill, Runbook


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _parse(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InvalidDocument([Diagnostic(name, line, col, "", f"YAML syntax error: {exc}")]) from exc


def _validate(model: Any, raw: Any, name: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidDocument(
            [
                Diagnostic(name, 1, 1, ".".join(str(p) for p in err["loc"]), err["msg"])
                for err in exc.errors()
            ]
        ) from exc


def load_runbook_text(text: str, name: str, *, registry: Registry | None = None) -> Runbook:
    result: Runbook = _validate(Runbook, _parse(text, name), name)
    return result


def load_runbook(path: Path, *, registry: Registry | None = None) -> Runbook:
    return load_runbook_text(_read(path), str(path), registry=registry)


def load_drill(path: Path) -> Drill:
    result: Drill = _validate(Drill, _parse(_read(path), str(path)), str(path))
    return result


def load_config(path: Path) -> Config:
    raw = _parse(_read(path), str(path)) or {}
    result: Config = _validate(Config, raw, str(path))
    return result


def parse_params(runbook: Runbook, given: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in runbook.params.items():
        if name in given:
            values[name] = given[name]
        elif not spec.is_required:
            values[name] = spec.default
        else:
            raise UsageError(f"param '{name}' is required: give it with -p {name}=VALUE")
    return values
