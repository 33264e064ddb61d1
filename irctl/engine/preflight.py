"""Readiness of the integrations before an incident: ``irctl validate --check-integrations``.

An integration registers a check with :func:`irctl.actions.preflight` (AWS asks
STS who the credentials belong to; Slack calls ``auth.test``).  Each runs for
every integration that irctl.yaml configures or a checked runbook names, and
what it reports becomes a problem at the integration's entry in irctl.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import Diagnostic

if TYPE_CHECKING:
    from irctl.workspace import Workspace


def namespaces_named(files: Iterable[Path]) -> set[str]:
    """The integration namespaces the steps of these runbooks name (``aws`` of ``aws.kms...``)."""
    import yaml

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            action = node.get("action")
            if isinstance(action, str) and "." in action:
                found.add(action.split(".", 1)[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in files:
        try:
            walk(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the document checks report it
    return found


def check_ready(
    config: dict[str, dict[str, Any]], named: set[str], config_file: Path | None
) -> list[Diagnostic]:
    """Run the readiness check of every integration configured or named."""
    from irctl.actions import default_registry
    from irctl.errors import IntegrationError

    text = _read(config_file)
    where = str(config_file) if config_file is not None else "irctl.yaml"
    problems: list[Diagnostic] = []
    for namespace in sorted(set(config) | named):
        try:
            check = default_registry.preflight(namespace)
        except IntegrationError as exc:
            line = _line_of(text, namespace)
            problems.append(Diagnostic(where, line, 1, f"integrations.{namespace}", exc.message))
            continue
        if check is None:
            continue
        try:
            found = check(dict(config.get(namespace) or {}))
        except Exception as exc:  # a check must never crash validate
            found = [f"the readiness check failed: {type(exc).__name__}: {exc}"]
        line = _line_of(text, namespace)
        problems.extend(
            Diagnostic(where, line, 1, f"integrations.{namespace}", message) for message in found
        )
    return problems


def installation_key_problems(workspace: Workspace) -> list[Diagnostic]:
    """The installation key irctl.yaml names, missing or not the one in ``.irctl/``.

    Found at run time, a missing key means transcripts nobody can check against the
    published key, and a different one means runs refuse to start: better found now.
    """
    from irctl.errors import IrctlError

    named = workspace.config.installation_key
    if named is None:
        return []
    text = _read(workspace.config_path)
    where = str(workspace.config_path or "irctl.yaml")
    line = next(
        (n for n, t in enumerate(text.splitlines(), start=1) if t.startswith("installation_key")),
        1,
    )
    path = workspace.installation_key_path
    if not path.is_file():
        message = (
            f"irctl.yaml names the installation key {named}, but {path} does not exist: runs "
            "would record transcripts without signed checkpoints; restore the key file from "
            "its backup"
        )
    else:
        try:
            workspace.signing_key()
            return []
        except IrctlError as exc:
            message = exc.message
    return [Diagnostic(where, line, 1, "installation_key", message)]


def _read(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _line_of(text: str, namespace: str) -> int:
    """The line of ``namespace:`` under ``integrations:`` in irctl.yaml, else 1."""
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(r"integrations\s*:", line):
            inside = True
            continue
        if inside and line and not line[0].isspace() and not line.startswith("#"):
            inside = False
        if inside and re.match(rf"\s+{re.escape(namespace)}\s*:", line):
            return number
    return 1
