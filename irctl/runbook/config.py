"""The workspace config, ``irctl.yaml``: its models, and reading it.

Owns :class:`Config` (the store and how long a lost database is waited for, the installation
key, the operators and their keys, break glass, integrations' settings, ``vars``, sandbox
secrets, the triggers that start runbooks from alerts); the base every model shares lives in
:mod:`irctl.runbook.policy`.  Reading ``irctl.yaml`` needs PyYAML and pydantic and nothing
else of the loader (no template engine, no checks, no integration), so a command that only
reads the store — ``irctl status``, ``runs list`` — starts quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from irctl.runbook.policy import _Model as _Model  # noqa: PLC0414 - the base every model shares

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=100)]
SecretRef = Annotated[
    str,
    Field(
        pattern=r"^(env|file|aws-sm):.+$",
        description="where the secret lives: env:VAR, file:PATH or aws-sm:NAME[#key]",
    ),
]


class Operator(_Model):
    roles: list[str] = Field(default_factory=list)
    slack: str | None = None
    key: str | None = Field(default=None, pattern=r"^ed25519:[A-Za-z0-9+/=]+$")


class BreakGlass(_Model):
    """Who may approve alone in an emergency (loudly recorded, reviewed afterwards)."""

    roles: list[str] = Field(default_factory=list)


TriggerSource = Literal["generic", "alertmanager", "pagerduty", "sns"]

#: The largest alert body ``irctl serve`` reads by default (a trigger's ``max_body``).
DEFAULT_MAX_BODY = 256 * 1024


class Trigger(_Model):
    """An alert that starts a runbook: ``POST /alerts/NAME`` on ``irctl serve``.

    Values in ``params`` and ``incident`` are read from the alert: a template over
    ``alert`` (``{{ alert.labels.wallet }}``, sandboxed), or a plain field path
    (``alert.labels.wallet``); ``match`` keys are field paths (``labels.severity``).
    """

    source: TriggerSource = Field(description="who sends the alert and how it is authenticated")
    secret: SecretRef = Field(
        description="the shared secret: the HMAC key (generic, pagerduty) or the bearer token "
        "or user:password (alertmanager)"
    )
    runbook: Identifier = Field(description="the runbook a matching alert starts")
    match: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="field path (labels.severity, fields.chain, summary) -> the value it must "
        "equal; every entry must match (empty: every alert matches)",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the runbook's params, each a template over 'alert', a field path "
        "(alert.labels.wallet) or a constant",
    )
    incident: str = Field(
        default="{{ alert.id }}",
        min_length=1,
        max_length=500,
        description="a template over 'alert' giving the incident key: a second alert for the "
        "same incident is recorded on the first one's run instead of starting another",
    )
    max_body: int = Field(
        default=DEFAULT_MAX_BODY, ge=1024, le=16 * 1024 * 1024, description="bytes, at most"
    )
    description: str | None = None


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
    triggers: dict[Identifier, Trigger] = Field(
        default_factory=dict,
        description="alerts that start runbooks through irctl serve (POST /alerts/NAME)",
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
