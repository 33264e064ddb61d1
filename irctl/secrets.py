"""Secrets by reference: ``env:VAR``, ``file:PATH``, ``aws-sm:NAME[#key]`` (with irctl[aws]).

A resolved value lives only in memory while a step runs; everything recorded
passes through :class:`irctl.runbook.render.Redactor` first.

Verifiable redaction: each execution of a run records, for every secret it
resolved, a salted commitment ``hmac-sha256:<hex>`` = HMAC-SHA256(salt, value)
(:func:`commitments`).  The salt is per run and per secret, derived from a
random 256-bit run salt kept in the store (``irctl_meta``), never in the
transcript: the transcript alone reveals nothing about the value, not even
whether two runs used the same one.  A reviewer given a secret's salt
(:func:`secret_salt`) and a candidate value confirms which value was used
(:func:`check_commitment`).

The same commitments let a process that never resolved the run's secrets (``irctl
note``, ``approve``, ``abort``) recognise one pasted into a note, a reason or an answer
and record it masked (:func:`recogniser`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets as _random
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl.errors import SecretError, UsageError

if TYPE_CHECKING:
    from irctl.journal.events import Event
    from irctl.journal.filereader import Reading
    from irctl.journal.store import Store

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


def run_salt(store: Reading, run_id: str, *, create: bool = False) -> bytes | None:
    """The run's random salt from the store (made on first use when ``create``, which needs
    a store opened to record)."""
    value = store.meta_value(_salt_key(run_id))
    if value is None and create:
        from sqlalchemy.exc import IntegrityError

        from irctl.journal.store import Store

        if not isinstance(store, Store):  # pragma: no cover - a reader never makes a salt
            raise TypeError("a salt is made in a store opened to record")
        try:
            with store.engine.execution_options(irctl_write=True).begin() as conn:
                made = {"key": _salt_key(run_id), "value": _random.token_hex(32)}
                conn.execute(_meta_table().insert().values(**made))
        except IntegrityError:
            pass  # made meanwhile by another process: use theirs
        value = store.meta_value(_salt_key(run_id))
    return bytes.fromhex(value) if value is not None else None


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


# -- recognising a secret in a person's text ----------------------------------------------------

#: Where a secret pasted into a note may begin or end: whitespace, quotes, brackets, separators.
_EDGES = re.compile(r"[\s\"'`()\[\]{}<>,.;:=&?/@|!#*]")
#: A candidate spans at most this many characters, and this many edges past its start.
_SPAN = 1024
_REACH = 24
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def run_commitments(events: Iterable[Event]) -> dict[str, set[str]]:
    """Every commitment each execution of a run recorded (``run.started``, ``run.resumed``)."""
    found: dict[str, set[str]] = {}
    for event in events:
        if event.type not in ("run.started", "run.resumed"):
            continue
        recorded = event.data.get("secrets")
        if not isinstance(recorded, dict):
            continue
        for name, entry in recorded.items():
            made = entry.get("commitment") if isinstance(entry, dict) else None
            if isinstance(made, str) and made.startswith(COMMITMENT):
                found.setdefault(str(name), set()).add(made)
    return found


def recogniser(store: Store, run_id: str, events: Iterable[Event]) -> Callable[[str], str]:
    """Masks (``••••``) each part of a text that is a secret value the run resolved.

    For a process that has not resolved the run's secrets (``irctl note``, ``approve``,
    ``abort``, ``answer``, the Slack endpoint): it recognises a value by the salted
    commitments the run recorded and the salts in the store, so it needs no access to the
    secrets themselves and finds exactly the values the run used (not ones rotated since).
    A part is a stretch of the text between separators (whitespace, quotes, brackets,
    ``=``, ``:``, ``/``, ``.``, ...), also read reversed and, where it looks encoded,
    URL-, JSON-, HTML-, hex- or base64-decoded (``Basic base64(user:secret)``).  Values
    shorter than :data:`irctl.runbook.render.MIN_SCANNED` are not looked for; a re-cased value
    cannot be recognised from a commitment.
    """
    from irctl.runbook.render import MIN_SCANNED, REDACTED

    recorded = run_commitments(events)
    salt = run_salt(store, run_id) if recorded else None
    if salt is None:
        return _unchanged
    keys = [
        (bytes.fromhex(secret_salt(salt, name)), {c[len(COMMITMENT) :] for c in made})
        for name, made in recorded.items()
    ]

    def known(value: str) -> bool:
        if len(value) < MIN_SCANNED:
            return False
        raw = value.encode("utf-8", "surrogatepass")
        return any(hmac.digest(key, raw, "sha256").hex() in made for key, made in keys)

    def found_in(text: str, depth: int) -> list[tuple[int, int]]:
        hits: list[tuple[int, int]] = []
        seen: set[str] = set()
        for start, end in _spans(text, MIN_SCANNED):
            part = text[start:end]
            if part in seen:
                continue
            seen.add(part)
            if known(part) or known(part[::-1]):
                hits.append((start, end))
            elif depth == 0 and not any(c.isspace() for c in part):
                for decoded in _decodings(part):
                    if known(decoded) or known(decoded[::-1]) or found_in(decoded, 1):
                        hits.append((start, end))
                        break
        return hits

    def mask(text: str) -> str:
        hits: list[tuple[int, int]] = []
        for start, end in sorted(found_in(text, 0), key=lambda hit: hit[1] - hit[0]):
            if not any(start <= a and b <= end for a, b in hits):  # the value, not around it
                hits.append((start, end))
        if not hits:
            return text
        merged: list[list[int]] = []
        for start, end in sorted(hits):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        parts, at = [], 0
        for start, end in merged:
            parts += [text[at:start], REDACTED]
            at = end
        return "".join([*parts, text[at:]])

    return mask


def _unchanged(text: str) -> str:
    return text


def _spans(text: str, shortest: int) -> Iterator[tuple[int, int]]:
    """The stretches of ``text`` between two edges, nearest first."""
    cuts = sorted({0, len(text), *(m.start() for m in _EDGES.finditer(text)),
                   *(m.end() for m in _EDGES.finditer(text))})  # fmt: skip
    for index, start in enumerate(cuts):
        if start == len(text) or text[start].isspace():
            continue
        for end in cuts[index + 1 : index + 1 + _REACH]:
            if end - start > _SPAN:
                break
            if end - start >= shortest and not text[end - 1].isspace():
                yield start, end


def _decodings(part: str) -> list[str]:
    """What ``part`` says once decoded, for each encoding it could be in."""
    import base64
    import binascii
    import html
    import json
    from urllib.parse import unquote, unquote_plus

    found: list[str] = []
    if "%" in part:
        found += [unquote(part), unquote_plus(part)]
    if "\\" in part:
        try:
            value = json.loads(f'"{part}"')
        except ValueError:
            pass
        else:
            found.append(value)
    if "&" in part:
        found.append(html.unescape(part))
    if _HEX.fullmatch(part):
        with contextlib.suppress(ValueError):
            found.append(bytes.fromhex(part).decode("utf-8"))
    if len(part) >= 12 and _BASE64.fullmatch(part):
        padded = part.rstrip("=") + "=" * (-len(part.rstrip("=")) % 4)
        for altchars in (b"+/", b"-_"):
            try:
                found.append(base64.b64decode(padded, altchars=altchars, validate=True).decode())
            except (binascii.Error, ValueError):
                continue
    return [value for value in found if isinstance(value, str) and value != part]
