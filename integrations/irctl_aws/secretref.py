"""``aws-sm:NAME[#key]`` secret references: a value read from AWS Secrets Manager.

``aws-sm:exchange/admin`` is the secret's whole string; ``aws-sm:exchange/admin#token``
the ``token`` field of a JSON secret.  The client is configured like every AWS
action (``integrations.aws``: region, profile, role, endpoint).  The value lives
only in memory; errors name the secret and the field, never the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from irctl.actions import ActionError
from irctl.errors import SecretError
from irctl_aws._client import call, client


def read(name: str, where: str, config: Mapping[str, Any]) -> str:
    """The value behind ``aws-sm:<where>`` for the secret called ``name`` in the runbook."""
    secret_id, _, field = where.partition("#")
    if not secret_id:
        raise SecretError(f"secret '{name}': write aws-sm:NAME or aws-sm:NAME#key")
    try:
        found = call(
            lambda: client("secretsmanager", config, timeout=15.0).get_secret_value(
                SecretId=secret_id
            ),
            f"Secrets Manager GetSecretValue of {secret_id}",
        )
    except ActionError as exc:
        raise SecretError(f"secret '{name}': {exc}") from exc
    text = found.get("SecretString")
    if not isinstance(text, str):
        raise SecretError(f"secret '{name}': {secret_id} holds binary data, not a string")
    if not field:
        value = text
    else:
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise SecretError(
                f"secret '{name}': {secret_id} is not a JSON object, so it has no field '{field}'"
            ) from None
        if field not in document:
            known = ", ".join(sorted(str(k) for k in document)) or "none"
            raise SecretError(
                f"secret '{name}': {secret_id} has no field '{field}' (fields: {known})"
            )
        value = document[field]
        if not isinstance(value, str):
            value = json.dumps(value)
    if not value:
        raise SecretError(f"secret '{name}': {where} is empty")
    return value
