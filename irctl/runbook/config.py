"""The workspace config, ``irctl.yaml``: its models, and reading it.

Owns :class:`Config` (the store and how long a lost database is waited for, the installation
key, the operators and their keys, break glass, integrations' settings, ``vars``, sandbox
secrets) and the base every model of :mod:`irctl.runbook.model` shares.  Reading
``irctl.yaml`` needs PyYAML and pydantic and nothing else of the loader (no template engine,
no checks, no integration), so a command that only reads the store — ``irctl status``,
``runs list`` — starts quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=100)]
SecretRef = Annotated[
    str,
    Field(
        pattern=r"^(env|file|aws-sm):.+$",
        description="where the secret lives: env:VAR, file:PATH or aws-sm:NAME[#key]",
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Operator(_Model):
    roles: list[str] = Field(default_factory=list)
    slack: str | None = None
    key: str | None = Field(default=None, pattern=r"^ed25519:[A-Za-z0-9+/=]+$")


class BreakGlass(_Model):
    """Who may approve alone in an emergency (loudly recorded, reviewed afterwards)."""

    roles: list[str] = Field(default_factory=list)


class Config(_Model):
    """The workspace config, ``irctl.yaml``."""

    store: str = "sqlite:///.irctl/irctl.db"
    store_retry: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="seconds a lost connection to the store's database is retried, with "
        "backoff, before a command says 'store unavailable' (exit 74) and leaves the run "
        "resumable",
    )
    installation_key: str | None = Field(
        default=None,
        pattern=r"^ed25519:[A-Za-z0-9+/=]+$",
        description="public half of the key that signs transcript checkpoints",
    )
    operators: dict[Identifier, Operator] = Field(default_factory=dict)
    break_glass: BreakGlass = Field(default_factory=BreakGlass)
    integrations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="for sandbox runs only: references that replace the runbooks' secrets of "
        "the same name (a sandbox never reads a production secret)",
    )


def load_config(path: Path) -> Config:
    """The workspace config; an empty file is the default config."""
    from irctl.errors import InvalidDocument
    from irctl.runbook.located import validate_model
    from irctl.runbook.yamldoc import _finish, _parse, read_document

    text = read_document(path)
    try:
        doc = _parse(text, str(path))
    except InvalidDocument as exc:
        if exc.diagnostics[0].message == "the file is empty":
            return Config()
        raise
    result: Config = _finish(doc, validate_model(doc, Config))
    return result
