"""Sandboxed templating, canonical JSON and digests.

A step's ``with`` values are Jinja2 templates rendered in a sandbox where an
undefined name is an error.  A string that is exactly one ``{{ expression }}``
renders to the expression's own value (a list stays a list, a number a
number); any other string renders to a string.  What a template may build is
limited (:mod:`irctl.sandbox`); a template past a limit is a :class:`RenderError`
naming it.  Everything that is hashed goes through :func:`canonical_json`: sorted
keys, compact separators, UTF-8, and a value that cannot be serialised is an
error, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from irctl.canonical import canonical_json, digest, sha256_hex
from irctl.errors import IrctlError
from irctl.sandbox import Environment, check_written, limited

REDACTED = "••••"

__all__ = [
    "REDACTED", "Redactor", "RenderError", "canonical_json", "digest", "render", "sha256_hex",
]  # fmt: skip

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


def render_string(source: str, context: dict[str, Any]) -> Any:
    if not is_template(source):
        return source
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


class Redactor:
    """Replaces every known secret value with ``••••`` in anything about to be recorded."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *values: str) -> None:
        new = {v for v in values if isinstance(v, str) and v}
        new |= {form for v in new for form in encoded_forms(v)}
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
            return {self.text(str(k)): self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value
