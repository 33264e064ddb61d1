"""Secrets by reference: ``env:VAR``, ``file:PATH``, ``aws-sm:NAME[#key]`` (with irctl[aws]).

A resolved value lives only in memory while a step runs; everything recorded
passes through :class:`irctl.render.Redactor` first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from irctl.errors import SecretError


def resolve(
    name: str, reference: str, *, base: Path | None = None, aws: Mapping[str, Any] | None = None
) -> str:
    """The value behind ``reference``; the error names the secret, never its value.

    ``aws`` is ``integrations.aws`` of irctl.yaml, for ``aws-sm:`` references.
    """
    scheme, _, where = reference.partition(":")
    if scheme == "env":
        value = os.environ.get(where)
        if value is None:
            raise SecretError(f"secret '{name}': environment variable {where} is not set")
        if not value:
            raise SecretError(f"secret '{name}': environment variable {where} is empty")
        return value
    if scheme == "file":
        path = Path(where).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"secret '{name}': cannot read {path}: {exc.strerror}") from exc
        if not value:
            raise SecretError(f"secret '{name}': {path} is empty")
        return value
    if scheme == "aws-sm":
        try:
            from irctl_aws.secretref import read
        except ImportError as exc:
            raise SecretError(
                f"secret '{name}': aws-sm references need the AWS integration: "
                "pip install 'irctl[aws]'"
            ) from exc
        return read(name, where, aws or {})
    # Never echo the text: a value pasted where a reference belongs would leak.
    raise SecretError(
        f"secret '{name}': not a reference; write env:VARIABLE, file:PATH or aws-sm:NAME[#key], "
        "never the value"
    )
