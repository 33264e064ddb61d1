"""Sandboxed templating, canonical JSON and digests.

A step's ``with`` values are Jinja2 templates rendered in a sandbox where an
undefined name is an error.  A string that is exactly one ``{{ expression }}``
renders to the expression's own value (a list stays a list, a number a
number); any other string renders to a string.  What a template may build is
limited (:mod:`irctl.runbook.limits`); a template past a limit is a :class:`RenderError`
naming it.  Everything that is hashed goes through :func:`canonical_json`: sorted
keys, compact separators, UTF-8, and a value that cannot be serialised is an
error, never silently dropped.

Redaction by construction: ``secrets`` in a template is a :class:`SecretValues`
that notes every read.  A field whose rendering read it is secret as a whole:
:func:`render_shown` gives the value the action receives and, beside it, what is
recorded and shown, where that field is ``••••`` whatever the template did to the
value (sliced, reversed, spelt out, re-cased, encoded).  :class:`Redactor` then
masks known secret values inside free text (an action's error or outputs): in
values only, never in keys or in the fields that name things (:data:`STRUCTURE`),
and only for values of at least :data:`MIN_SCANNED` characters.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from irctl.canonical import canonical_json, digest, sha256_hex
from irctl.errors import IrctlError
from irctl.runbook.limits import Environment, check_written, limited

REDACTED = "••••"

__all__ = [
    "MIN_SCANNED", "REDACTED", "Redactor", "RenderError", "SecretValues", "canonical_json",
    "digest", "render", "render_shown", "sha256_hex",
]  # fmt: skip

#: Secret values (and encoded forms) shorter than this are not searched for inside free text: a
#: value like ``x`` or ``expires`` would rewrite ordinary words.  A field rendered from a secret
#: is masked whole whatever the secret's length.
MIN_SCANNED = 8

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


class RenderError(IrctlError):
    """A template failed to render (undefined name, forbidden operation)."""


_ENV = Environment(filters={"tojson": canonical_json})


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


@lru_cache(maxsize=4096)
def _compile(source: str) -> tuple[bool, Any]:
    single = _SINGLE.match(source)
    if single and "{{" not in single.group("expr") and "}}" not in single.group("expr"):
        return True, _ENV.compile_expression(single.group("expr"), undefined_to_none=False)
    return False, _ENV.from_string(source)


TOO_DEEP = "template syntax error: the expression nests too deeply; split it up"


def check_syntax(source: str) -> str | None:
    """None if ``source`` compiles, else the error message (with the template's line)."""
    try:
        _compile(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} (template line {exc.lineno})"
    except RecursionError:
        return TOO_DEEP
    return None


# -- secrets in templates ---------------------------------------------------------------------

_READ: ContextVar[list[bool] | None] = ContextVar("irctl_secrets_read", default=None)


class SecretValues(Mapping[str, str]):
    """``secrets`` in templates: the values, and a note of each read in the field being rendered.

    Any use of the mapping counts (an item, its keys, its length, the whole of it), so a field
    that touches ``secrets`` in any way is masked when recorded.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    @staticmethod
    def _read() -> None:
        flag = _READ.get()
        if flag is not None:
            flag[0] = True

    def __getitem__(self, key: str) -> str:
        self._read()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        self._read()
        return iter(self._values)

    def __len__(self) -> int:
        self._read()
        return len(self._values)

    def __repr__(self) -> str:
        self._read()
        return repr(dict(self._values))


@lru_cache(maxsize=4096)
def _names(source: str) -> frozenset[str]:
    """The names a template uses (``item`` in ``{{ item.x }}``)."""
    try:
        single, _ = _compile(source)
        match = _SINGLE.match(source)
        text = "{{" + match.group("expr") + "}}" if single and match else source
        tree = _ENV.parse(text)
    except (TemplateSyntaxError, RecursionError):
        return frozenset()
    return frozenset(node.name for node in tree.find_all(nodes.Name))


def mentions(source: Any, name: str) -> bool:
    """Whether a template string reads the name ``name`` at all (``secrets`` in a for_each)."""
    return isinstance(source, str) and is_template(source) and name in _names(source)


def render_string(source: str, context: dict[str, Any]) -> Any:
    if not is_template(source):
        return source
    return _field(source, context)[0]


def _field(source: str, context: dict[str, Any]) -> tuple[Any, bool]:
    """One template string rendered, and whether the rendering read ``secrets``; the error of
    a field that read a secret never quotes a value."""
    flag = [False]
    token = _READ.set(flag)
    try:
        value = _render_string(source, context)
    except RenderError:
        if not flag[0]:
            raise
        raise RenderError(
            f"template {source!r} failed; it reads secrets, so the cause is not shown "
            "(it could quote a value): check the template with irctl plan"
        ) from None
    finally:
        _READ.reset(token)
    if isinstance(value, SecretValues):  # `{{ secrets }}`: the action gets a plain mapping
        value = dict(value._values)
    return value, flag[0]


def _render_string(source: str, context: dict[str, Any]) -> Any:
    try:
        with limited():
            single, compiled = _compile(source)
            if not single:
                return compiled.render(**context)
            value = compiled(**context)
            if isinstance(value, StrictUndefined):
                str(value)  # raises UndefinedError with a useful message
            check_written(value)
            return value
    except TemplateSyntaxError as exc:
        raise RenderError(f"template syntax error: {exc.message}") from exc
    except UndefinedError as exc:
        raise RenderError(f"undefined name in template {source!r}: {exc.message}") from exc
    except SecurityError as exc:
        raise RenderError(f"template {source!r} is not allowed: {exc}") from exc
    except RecursionError:
        raise RenderError(TOO_DEEP) from None
    except Exception as exc:  # a template is user code; any failure is the user's to fix
        raise RenderError(f"template {source!r} failed: {type(exc).__name__}: {exc}") from exc


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every string in ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, dict):
        return {str(k): render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def render_shown(
    value: Any, context: dict[str, Any], *, tainted: frozenset[str] = frozenset()
) -> tuple[Any, Any, list[Any]]:
    """``value`` rendered: what the action receives, what is recorded and shown, and the
    values masked.

    A field (one template string) whose rendering read ``secrets``, or that names one of
    ``tainted`` (``item`` of a ``for_each`` made from secrets), is :data:`REDACTED` as a whole
    in what is shown, whatever it renders to; the keys and the structure around it stay.
    """
    hidden: list[Any] = []

    def visit(part: Any) -> tuple[Any, Any]:
        if isinstance(part, str):
            if not is_template(part):
                return part, part
            rendered, read = _field(part, context)
            if read or (tainted and tainted & _names(part)):
                hidden.append(rendered)
                return rendered, REDACTED
            return rendered, rendered
        if isinstance(part, dict):
            pairs = {str(k): visit(v) for k, v in part.items()}
            return {k: v for k, (v, _) in pairs.items()}, {k: s for k, (_, s) in pairs.items()}
        if isinstance(part, list):
            items = [visit(v) for v in part]
            return [v for v, _ in items], [s for _, s in items]
        return part, part

    real, shown = visit(value)
    return real, shown, hidden


def texts(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (a masked field's value, for :meth:`Redactor.add`)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from texts(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from texts(v)


def template_strings(value: Any) -> Iterable[str]:
    """Every template string inside ``value``."""
    if isinstance(value, str):
        if is_template(value):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from template_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from template_strings(v)


def referenced(source: str, root: str) -> set[str]:
    """Names read under ``root`` in a template: ``steps.a`` and ``steps['a']`` give {'a'}."""
    try:
        single, _ = _compile(source)
        match = _SINGLE.match(source)
        text = "{{" + match.group("expr") + "}}" if single and match else source
        tree = _ENV.parse(text)
    except (TemplateSyntaxError, RecursionError):
        return set()
    found: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == root:
                found.add(node.attr)
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and node.node.name == root
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            found.add(node.arg.value)
    return found


def encoded_forms(secret: str) -> set[str]:
    """What ``secret`` looks like once a template or a program has encoded it.

    URL-encoded (``| urlencode``), JSON- or repr-escaped (``| tojson``, error messages),
    HTML-escaped, upper- and lower-cased, hex, and base64 at each of the three alignments it can
    have inside a longer value (``Basic base64(user:secret)``), so each is redacted too. Forms
    shorter than 8 characters are left out: they would redact ordinary text.
    """
    import base64
    import html
    import json
    from urllib.parse import quote, quote_plus

    raw = secret.encode("utf-8")
    forms = {
        quote(secret, safe=""), quote(secret), quote_plus(secret),
        json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
        secret.encode("unicode_escape").decode("ascii"), html.escape(secret),
        secret.upper(), secret.lower(), raw.hex(), raw.hex().upper(),
    }  # fmt: skip
    for shift in range(3):  # the base64 characters that depend on the secret's bytes alone
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        core = encoded[-(-8 * shift // 6) : (8 * (shift + len(raw))) // 6]
        forms |= {core, core.replace("+", "-").replace("/", "_")}
    return {form for form in forms if len(form) >= 8 and form != secret}


#: Fields of a recorded event that name things or carry the run's structure (steps, policies and
#: their rules, digests, operators, commitments): never rewritten, whatever a secret's value.
STRUCTURE = frozenset({
    "action", "approvers", "assurance", "attempt", "break_glass", "by", "channel", "decision",
    "delay", "denied_by", "digest", "eligible", "expired_at", "expires_at", "failed_step", "for",
    "idempotent", "integration", "item", "items", "key", "kind", "mark", "operator", "policy",
    "probe", "replaces", "requested_at", "rules", "run", "secrets", "sig", "slack_user", "step",
    "steps", "time",
})  # fmt: skip


class Redactor:
    """Replaces every known secret value with ``••••`` in anything about to be recorded.

    Values only: a mapping's keys are never rewritten, nor (in :meth:`event`) the fields in
    :data:`STRUCTURE`; values shorter than :data:`MIN_SCANNED` are not searched for.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()  # the items of a for_each add values from their threads
        self.add(*secrets)

    def add(self, *values: str) -> None:
        new = {v for v in values if isinstance(v, str) and len(v) >= MIN_SCANNED}
        if not new or new <= self._values:
            return
        new |= {form for v in new for form in encoded_forms(v)}
        with self._lock:
            if new - self._values:
                self._values |= new
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(REDACTED, value)

    def __call__(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value

    def event(self, data: dict[str, Any]) -> dict[str, Any]:
        """An event's body, its values redacted except the fields in :data:`STRUCTURE`."""
        if self._pattern is None:
            return data
        return {k: v if k in STRUCTURE else self(v) for k, v in data.items()}
