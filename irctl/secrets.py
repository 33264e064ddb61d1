"""Secrets by reference: ``env:VAR``, ``file:PATH``, ``aws-sm:NAME[#key]`` (with irctl[aws]).

A resolved value lives only in memory while a step runs; everything recorded
passes through :class:`irctl.render.Redactor` first.

Verifiable redaction: each execution of a run records, for every secret it
resolved, a salted commitment ``hmac-sha256:<hex>`` = HMAC-SHA256(salt, value)
(:func:`commitments`).  The salt is per run and per secret, derived from a
random 256-bit run salt kept in the store (``irctl_meta``), never in the
transcript: the transcript alone reveals nothing about the value, not even
whether two runs used the same one.  A reviewer given a secret's salt
(:func:`secret_salt`) and a candidate value confirms which value was used
(:func:`check_commitment`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import SecretError, UsageError

if TYPE_CHECKING:
    from irctl.store import Store

COMMITMENT = "hmac-sha256:"
#: A `file:` secret is read up to this size: a key or token, not a disk image (or /dev/zero).
FILE_LIMIT = 64 * 1024


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
            with path.open("rb") as file:
                data = file.read(FILE_LIMIT + 1)
        except OSError as exc:
            raise SecretError(f"secret '{name}': cannot read {path}: {exc.strerror}") from exc
        if len(data) > FILE_LIMIT:
            raise SecretError(
                f"secret '{name}': {path} is larger than {FILE_LIMIT // 1024} KiB; "
                "a secret file holds one value"
            )
        try:
            value = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise SecretError(f"secret '{name}': {path} is not UTF-8 text") from None
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


# -- salted commitments -----------------------------------------------------------------------


def _salt_key(run_id: str) -> str:
    return "salt:" + hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:48]


def _meta_table() -> Any:
    from sqlalchemy import Column, MetaData, String, Table, Text

    return Table(
        "irctl_meta", MetaData(),
        Column("key", String(64), primary_key=True), Column("value", Text, nullable=False),
    )  # fmt: skip


def run_salt(store: Store, run_id: str, *, create: bool = False) -> bytes | None:
    """The run's random salt from the store (made on first use when ``create``)."""
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    meta, key = _meta_table(), _salt_key(run_id)
    query = select(meta.c.value).where(meta.c.key == key)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None and create:
        try:
            with store.engine.execution_options(irctl_write=True).begin() as conn:
                conn.execute(meta.insert().values(key=key, value=_random.token_hex(32)))
        except IntegrityError:
            pass  # made meanwhile by another process: use theirs
        with store.engine.connect() as conn:
            row = conn.execute(query).first()
    return bytes.fromhex(row[0]) if row is not None else None


def secret_salt(salt: bytes, name: str) -> str:
    """The salt of one secret of a run (hex): what a reviewer is given for that secret only."""
    return hmac.new(salt, f"irctl-secret-salt:v1:{name}".encode(), hashlib.sha256).hexdigest()


def commitment(salt_hex: str, value: str) -> str:
    """``hmac-sha256:<hex>`` of ``value`` under a secret's salt."""
    try:
        key = bytes.fromhex(salt_hex)
    except ValueError as exc:
        raise UsageError("a salt is written as hex digits") from exc
    return COMMITMENT + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def commitments(
    store: Store, run_id: str, references: Mapping[str, str], values: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """What a run records for the secrets it resolved: reference and commitment, by name."""
    salt = run_salt(store, run_id, create=True)
    if salt is None:  # pragma: no cover - created just above
        raise SecretError(f"run {run_id}: the store did not keep the secrets' salt")
    return {
        name: {"ref": references.get(name, ""), "commitment": commitment(
            secret_salt(salt, name), value)}
        for name, value in sorted(values.items())
    }  # fmt: skip


def check_commitment(recorded: str, salt_hex: str, value: str) -> bool:
    """Whether ``value`` is the value behind a recorded commitment (constant time)."""
    return hmac.compare_digest(recorded, commitment(salt_hex, value))
