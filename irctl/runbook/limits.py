"""The Jinja2 sandbox templates render in, and the limits on what a template may build.

Jinja2's sandbox keeps a template away from Python's internals; it does not keep a template (or a
param it reads) from asking for a gigabyte or an hour.  Every way found for a template to make a
large value from a small one is capped here.  Each refusal is a
:class:`~jinja2.exceptions.SecurityError` naming the limit, which rendering reports as
"template ... is not allowed: ...":

* ``*`` makes at most :data:`MAX_LENGTH` items or characters, and may not repeat what a list holds
  to more than :data:`MAX_BUILT`; ``**`` takes exponents up to :data:`MAX_EXPONENT`, and neither
  makes a number of more than :data:`MAX_BITS` bits (``(10**4096)**4096`` takes minutes);
* a width or precision (``"%9d" % n``, ``"{:>9}".format(x)``, ``|format``, ``|center``,
  ``.ljust()``, ``.rjust()``, ``.zfill()``) is at most :data:`MAX_LENGTH`;
* what grows with its arguments (``+``, ``~``, ``replace``, ``join``, ``translate``,
  ``expandtabs``, ``indent``, ``wordwrap``, ``sum``, ``urlize``) may not make a value longer than
  :data:`MAX_LENGTH`, though a value already that long may pass through without growing;
  ``batch`` and ``slice`` make at most that many items or lists, ``lipsum`` at most
  :data:`MAX_WORDS` words, ``range`` at most :data:`MAX_RANGE` numbers (Jinja2's own limit);
* the text a template renders is at most :data:`MAX_LENGTH` characters;
* a list or mapping written out (output, ``~``, ``%``, ``format``, ``|string``, ``|tojson``, the
  value a ``{{ expression }}`` gives) may not repeat parts of itself to more than
  :data:`MAX_BUILT` characters and items: ``[s, s]`` holds ``s`` once but is written twice;
* everything a template builds (each string, list or mapping an operator, filter or method
  makes) counts against :data:`MAX_BUILT`, so a loop cannot pile up values that each pass.  A
  string built a piece at a time (``{% set ns.s = ns.s ~ line %}``) counts every intermediate
  value; a template's text, written directly, counts once.

Names: a template may not use a private name (``x._name``), Python's special names (``__class__``,
also as a key: ``x['__class__']``) or :data:`INTERNAL_NAMES` (``mro``, ``gi_frame``, ...), on any
value, even a mapping holding such a key (:func:`refused_attribute`, :func:`refused_key`);
``irctl validate`` applies the same two functions to the templates it parses.

Time: the loops of one rendering (``{% for %}``, whatever they iterate) run at most
:data:`MAX_STEPS` times in all, and a loop stops once the rendering has taken
:data:`MAX_SECONDS` (an iteration may compare or search a long list without building
anything).  ``wordwrap``, whose cost grows faster than its result when it breaks a long word
into very narrow lines, is limited by the work it would do.
"""

from __future__ import annotations

import re
import time
import types
from collections import Counter
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from contextvars import ContextVar
from functools import update_wrapper, wraps
from itertools import chain
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.sandbox import (
    MAX_RANGE,
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    safe_range,
)
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

__all__ = [
    "INTERNAL_NAMES", "MAX_BITS", "MAX_BUILT", "MAX_EXPONENT", "MAX_LENGTH", "MAX_RANGE",
    "MAX_WORDS", "Environment", "check_written", "limited", "refused_attribute", "refused_key",
]  # fmt: skip

#: Characters, bytes or items in one value a template builds; also the largest width or precision.
MAX_LENGTH = 1_000_000
#: The largest exponent of ``**`` (2**4096 has 1,234 digits).
MAX_EXPONENT = 4096
#: Bits in a number ``*`` or ``**`` makes (about 4,900 digits; Python writes out at most 4,300).
MAX_BITS = 4 * MAX_EXPONENT
#: Characters and items one template may build in all, or write out of one repeating value.
MAX_BUILT = 10 * MAX_LENGTH
#: Words ``lipsum()`` may make.
MAX_WORDS = MAX_LENGTH // 10
#: Iterations all the ``{% for %}`` loops of one rendering may make together.
MAX_STEPS = 1_000_000
#: Seconds a rendering may take before its next loop iteration is refused.
MAX_SECONDS = 10.0
#: Characters textwrap may copy breaking long words (seconds at most: it grows as length²/width).
WRAP_WORK = 2 * 10**10

_TEXT = (str, bytes, bytearray)
_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset)
_SHARED_TEXT = 32  # a string at least this long, held twice, counts as a repeat


def _check_growth(size: int, original: int, what: str, unit: str = "characters") -> None:
    """Refuse to make a value longer than MAX_LENGTH, unless it does not grow past ``original``."""
    if size > MAX_LENGTH and size > original:
        raise SecurityError(f"{what} makes more than {MAX_LENGTH:,} {unit}")


def _check_width(width: Any, what: str = "a width") -> None:
    if isinstance(width, int) and abs(width) > MAX_LENGTH:
        raise SecurityError(f"{what} above {MAX_LENGTH:,} is not allowed")


def _check_number(digits: str) -> None:
    """A width or precision written in a format string."""
    digits = digits.lstrip("0")
    if len(digits) > len(str(MAX_LENGTH)) or (digits and int(digits) > MAX_LENGTH):
        raise SecurityError(f"a width or precision above {MAX_LENGTH:,} is not allowed")


# -- names a template may not use ------------------------------------------------------------------

#: Attributes of Python's internals: those Jinja2's sandbox refuses on the kind of object that has
#: them (a type's ``mro``, a generator's ``gi_frame``), every attribute of a frame, a code object
#: or a traceback (it refuses them all), and the names Python 2 gave a function's and a method's
#: internals.  irctl refuses them on every value, so ``irctl validate`` can refuse a template that
#: uses one without knowing what the value will be when it renders.
INTERNAL_NAMES = frozenset({
    "mro", *UNSAFE_FUNCTION_ATTRIBUTES, *UNSAFE_METHOD_ATTRIBUTES, *UNSAFE_GENERATOR_ATTRIBUTES,
    *UNSAFE_COROUTINE_ATTRIBUTES, *UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    "f_back", "f_builtins", "f_code", "f_globals", "f_lasti", "f_lineno", "f_locals", "f_trace",
    "f_trace_lines", "f_trace_opcodes", "tb_frame", "tb_lasti", "tb_lineno", "tb_next",
    "co_argcount", "co_cellvars", "co_code", "co_consts", "co_exceptiontable", "co_filename",
    "co_firstlineno", "co_flags", "co_freevars", "co_kwonlyargcount", "co_lines", "co_linetable",
    "co_lnotab", "co_name", "co_names", "co_nlocals", "co_positions", "co_posonlyargcount",
    "co_qualname", "co_stacksize", "co_varnames",
    "func_closure", "func_code", "func_defaults", "func_dict", "func_doc", "func_globals",
    "func_name", "im_class", "im_func", "im_self",
})  # fmt: skip


def refused_attribute(name: str) -> bool:
    """Whether the sandbox refuses ``name`` as an attribute (``x.name``, ``x|attr('name')``,
    ``'{0.name}'.format(x)``) of any value: a private name (a leading ``_``) or an internal one.

    Not even a mapping's key is read that way: ``x._id`` is refused, ``x['_id']`` reads the key.
    """
    return name.startswith("_") or name in INTERNAL_NAMES


def refused_key(name: str) -> bool:
    """Whether the sandbox refuses ``name`` as a key (``x['name']``, a filter's ``attribute``,
    ``'{0[name]}'.format(x)``) of any value: Python's special names (``__class__``) and the
    internal ones, even when a mapping holds such a key."""
    return name.startswith("__") or name in INTERNAL_NAMES


def _refused(name: str) -> SecurityError:
    """Raised at once, not left as an undefined value: one inside a list would be written out."""
    return SecurityError(f"the template uses '{name}', which the sandbox refuses")


# -- what a value is when written out -------------------------------------------------------------


class _Over(Exception):
    """Counting passed its limit."""


def _children(value: Any) -> Iterable[Any] | None:
    """What a container holds, as written out; None for anything that is not a container."""
    if isinstance(value, Mapping):
        return chain.from_iterable(value.items())
    if isinstance(value, list | tuple | set | frozenset | KeysView | ValuesView | ItemsView):
        return value
    if isinstance(value, Namespace):
        attrs: dict[str, Any] = getattr(value, "_Namespace__attrs", {})
        return chain.from_iterable(attrs.items())
    return None


def _written(value: Any, *, total: int, repeated: int) -> int:
    """Characters and items ``value`` has written out (a part it holds twice counts twice).

    Raises :class:`_Over` once that passes ``total``, or once what repeated parts add passes
    ``repeated``.  Each container is walked once, however often it is held.
    """
    sizes: dict[int, int] = {}
    busy: set[int] = set()
    extra = 0

    def size(item: Any) -> int:
        nonlocal extra
        if isinstance(item, _TEXT):
            length = len(item)
            if length >= _SHARED_TEXT:
                if id(item) in sizes:
                    extra += length
                    if extra > repeated:
                        raise _Over
                sizes[id(item)] = length
            return length
        if isinstance(item, int):
            return item.bit_length() // 3 if item.bit_length() > 64 else 0  # a huge number's digits
        children = _children(item)
        key = id(item)
        if children is None or key in busy:  # not a container, or one holding itself ("[...]")
            return 0
        if key in sizes:
            extra += sizes[key]
            if extra > repeated:
                raise _Over
            return sizes[key]
        busy.add(key)
        count = 0
        for child in children:
            count += 1 + size(child)
            if count > total:
                raise _Over
        busy.discard(key)
        sizes[key] = count
        return count

    return size(value)


def check_written(value: Any) -> None:
    """Refuse a list or mapping that, written out, repeats parts of itself to more than
    MAX_BUILT characters and items (``[s] * 1000`` is small in memory, huge as text)."""
    if _children(value) is None:
        return
    try:
        _written(value, total=2**62, repeated=MAX_BUILT)
    except _Over:
        raise SecurityError(
            f"written out, the value repeats parts of itself to more than {MAX_BUILT:,} "
            "characters and items"
        ) from None


# -- everything a template builds ------------------------------------------------------------------

_SPENT: ContextVar[list[int] | None] = ContextVar("irctl_template_spent", default=None)
_STEPS: ContextVar[list[float] | None] = ContextVar("irctl_template_steps", default=None)


@contextmanager
def limited() -> Iterator[None]:
    """Count what templates rendered inside this block build, against MAX_BUILT, and the
    iterations and time their loops take, against MAX_STEPS and MAX_SECONDS."""
    token = _SPENT.set([0])
    steps = _STEPS.set([0, time.monotonic() + MAX_SECONDS])
    try:
        yield
    finally:
        _STEPS.reset(steps)
        _SPENT.reset(token)


def _loop(iterable: Any) -> Any:
    """What a ``{% for %}`` loop iterates, counted against MAX_STEPS and MAX_SECONDS."""
    budget = _STEPS.get()
    if budget is None:
        return iterable
    return _counted(iter(iterable), budget)


def _counted(items: Iterator[Any], budget: list[float]) -> Iterator[Any]:
    for item in items:
        budget[0] += 1
        if budget[0] > MAX_STEPS:
            raise SecurityError(f"the template's loops run more than {MAX_STEPS:,} times in all")
        if time.monotonic() > budget[1]:
            raise SecurityError(f"the template's loops run for more than {MAX_SECONDS:g} seconds")
        yield item


def _built(value: Any, *inputs: Any) -> Any:
    """Count ``value`` against MAX_BUILT unless it is one of ``inputs``, passed through."""
    spent = _SPENT.get()
    if spent is not None and isinstance(value, _SIZED) and all(value is not x for x in inputs):
        spent[0] += len(value)
        if spent[0] > MAX_BUILT:
            raise SecurityError(
                f"the template builds more than {MAX_BUILT:,} characters and items in all"
            )
    return value


# -- operators -------------------------------------------------------------------------------------


def _check_bits(bits: int) -> None:
    if bits > MAX_BITS:
        raise SecurityError(f"a number of more than {MAX_BITS:,} bits is not allowed")


def _check_repeat(left: Any, right: Any) -> None:
    """``*``: 'a' * 10**9, a list holding a long string repeated, or a huge number squared."""
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length())
    for seq, count in ((left, right), (right, left)):
        if not (isinstance(seq, (*_TEXT, list, tuple)) and isinstance(count, int)):
            continue
        if len(seq) * count > MAX_LENGTH:
            raise SecurityError(
                f"repeating {len(seq)} items {count} times makes more than {MAX_LENGTH:,}"
            )
        if isinstance(seq, list | tuple) and count > 1:
            try:  # what repeats is what the copies after the first add
                _written(seq, total=MAX_BUILT // (count - 1), repeated=MAX_BUILT)
            except _Over:
                raise SecurityError(
                    f"repeating {len(seq)} items {count} times repeats more than {MAX_BUILT:,} "
                    "characters and items, counting what the items hold"
                ) from None


def _check_printf(template: Any, values: Any) -> None:
    """``template % values``: each width and precision, written or taken from ``values`` by
    ``*``, at most MAX_LENGTH; and what is written out of ``values`` (as CPython reads it)."""
    if isinstance(template, bytes | bytearray):
        template = template.decode("latin-1")
    if not isinstance(template, str):
        return
    args = values if isinstance(values, tuple) else (values,)
    for value in values.values() if isinstance(values, Mapping) else args:
        check_written(value)
    index, at, end = 0, 0, len(template)
    while (at := template.find("%", at) + 1) > 0:
        if template.startswith("(", at):  # a mapping key: parentheses inside it nest
            depth, at = 1, at + 1
            while at < end and depth:
                depth += {"(": 1, ")": -1}.get(template[at], 0)
                at += 1
        while at < end and template[at] in "-+ #0":
            at += 1
        for part in ("width", "precision"):
            if part == "precision":
                if not template.startswith(".", at):
                    break
                at += 1
            if template.startswith("*", at):
                at += 1
                if index < len(args):
                    _check_width(args[index], "a width or precision")
                index += 1
                continue
            start = at
            while at < end and "0" <= template[at] <= "9":
                at += 1
            _check_number(template[start:at])
        while at < end and template[at] in "hlL":
            at += 1
        if at < end and template[at] != "%":
            index += 1
        at += 1


def _check_spec(spec: str) -> None:
    """A ``str.format`` field's spec, like ``>10`` or ``.2f``: every number in it is a width or
    precision (or a fill digit) for the formats a template can reach."""
    for digits in re.findall(r"[0-9]+", spec):
        _check_number(digits)


class _Formatter(SandboxedFormatter):
    """``str.format`` in the sandbox, with each field's spec and value checked."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_spec(format_spec)
        check_written(value)
        return super().format_field(value, format_spec)


class _EscapeFormatter(_Formatter, SandboxedEscapeFormatter):
    """``Markup.format``, checked the same way."""


# -- methods ---------------------------------------------------------------------------------------


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(text, _TEXT) and isinstance(old, _TEXT) and isinstance(new, _TEXT)):
        return  # Python refuses the mix itself
    if len(new) <= len(old):
        return
    try:
        hits = text.count(old)  # type: ignore[arg-type]
    except TypeError:
        return
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_growth(
        len(text) + hits * (len(new) - len(old)), len(text), f"replacing {hits:,} occurrences"
    )


def _check_join(separator: Any, items: list[Any]) -> None:
    sizes = [len(item) if isinstance(item, _TEXT) else _written_or_refuse(item) for item in items]
    joins = max(len(items) - 1, 0) * (len(separator) if isinstance(separator, _TEXT) else 0)
    _check_growth(sum(sizes) + joins, max(sizes, default=0), f"joining {len(items):,} items")


def _written_or_refuse(item: Any) -> int:
    if _children(item) is None:
        return len(str(item))
    check_written(item)
    return _written(item, total=2**62, repeated=2**62)


def _check_translate(text: str, table: Any) -> None:
    size = 0
    for char, count in Counter(text).items():
        try:
            mapped = table[ord(char)]
        except LookupError:
            mapped = char
        size += count * (len(mapped) if isinstance(mapped, str) else mapped is not None)
    _check_growth(size, len(text), "translating")


def _checked_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a call of a method that can make a long string or bytes from a short one (or from a
    number: ``(1).to_bytes(10**9)``); the arguments to call it with."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, int) and name == "to_bytes":
        _check_width(_arg(args, kwargs, 0, "length", 1), "a length")
    if not isinstance(owner, _TEXT):
        return args
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(_arg(args, kwargs, 0, "width", 0))
    elif name == "expandtabs":
        size = _arg(args, kwargs, 0, "tabsize", 8)
        if isinstance(size, int):
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
            grown = len(owner) + tabs * max(size - 1, 0)
            _check_growth(grown, len(owner), f"expanding {tabs:,} tabs to {size:,} columns")
    elif name == "replace":
        _check_replace(
            owner, _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", ""),
            _arg(args, kwargs, 2, "count", -1),
        )  # fmt: skip
    elif name == "join" and args:
        items = list(args[0])
        _check_join(owner, items)
        return (items, *args[1:])
    elif name == "translate" and isinstance(owner, str) and args:
        _check_translate(owner, args[0])
    return args


# -- filters and globals ---------------------------------------------------------------------------

#: Filters that write their value out as text.
_TEXT_FILTERS = frozenset({
    "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint",
    "replace", "string", "striptags", "title", "tojson", "trim", "truncate", "upper",
    "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
})  # fmt: skip

Call = Callable[[Any], Any]
Args = tuple[Any, ...]
Kwargs = dict[str, Any]
_RUN = re.compile(r"\S+|\s+")


def _center(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    _check_width(_arg(args, kwargs, 0, "width", 80))
    return call(value)


def _format(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    _check_printf(value if isinstance(value, str) else str(value), kwargs or args)
    return call(value)


def _replace(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    count = _arg(args, kwargs, 2, "count", None)
    _check_replace(
        str(value), str(_arg(args, kwargs, 0, "old", "")), str(_arg(args, kwargs, 1, "new", "")),
        -1 if count is None else count,
    )  # fmt: skip
    return call(value)


def _indent(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    _check_width(width)  # Jinja2 makes the indent before it looks for lines
    if isinstance(value, str) and isinstance(width, int | str):
        pad = len(width) if isinstance(width, str) else max(width, 0)
        first = bool(_arg(args, kwargs, 1, "first", False))
        lines = len((value + "\n").splitlines()) - 1 + first  # at most, indented
        _check_growth(len(value) + lines * pad, len(value), f"indenting {lines:,} lines by {pad:,}")
    return call(value)


def _wordwrap(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    """Jinja2's ``wordwrap``, refused before it takes too long or makes too much."""
    import textwrap

    width = _arg(args, kwargs, 0, "width", 79)
    break_long_words = _arg(args, kwargs, 1, "break_long_words", True)
    wrapstring = _arg(args, kwargs, 2, "wrapstring", None)
    if wrapstring is None:
        wrapstring = env.newline_sequence
    break_on_hyphens = _arg(args, kwargs, 3, "break_on_hyphens", True)
    if not (
        isinstance(value, str) and isinstance(width, int) and width > 0
        and isinstance(wrapstring, str)
    ):  # fmt: skip
        return call(value)  # Jinja2 and textwrap say what is wrong
    if break_long_words:
        longest = max((run.end() - run.start() for run in _RUN.finditer(value)), default=0)
        pieces = -(-longest // width)
        if pieces > 1 and pieces * longest > WRAP_WORK:
            raise SecurityError(
                f"wrapping a run of {longest:,} characters at width {width} takes too long "
                f"(more than {WRAP_WORK:,} characters copied); wrap at a larger width"
            )
    paragraphs = [
        textwrap.wrap(
            line, width=width, expand_tabs=False, replace_whitespace=False,
            break_long_words=break_long_words, break_on_hyphens=break_on_hyphens,
        )
        for line in value.splitlines()
    ]  # fmt: skip
    joins = sum(max(len(lines) - 1, 0) for lines in paragraphs) + max(len(paragraphs) - 1, 0)
    size = sum(len(line) for lines in paragraphs for line in lines) + joins * len(wrapstring)
    _check_growth(size, len(value), f"wrapping into {joins + 1:,} lines")
    return wrapstring.join([wrapstring.join(lines) for lines in paragraphs])


def _join(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    items = list(value)
    attribute = _arg(args, kwargs, 1, "attribute", None)
    shown = items if attribute is None else list(map(make_attrgetter(env, attribute), items))
    _check_join(str(_arg(args, kwargs, 0, "d", "")), shown)
    return call(items)


def _batch(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    _check_width(_arg(args, kwargs, 0, "linecount", 0), "a batch size")
    return call(value)


def _slice(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    _check_width(_arg(args, kwargs, 0, "slices", 0), "a number of slices")
    return call(value)


def _sum(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    """Summing lists (``|sum(start=[])``) joins them once, not once per list: Python's ``sum``
    copies the growing list for every item."""
    start = _arg(args, kwargs, 1, "start", 0)
    if not isinstance(start, list | tuple):
        return call(value)
    value = list(value)
    attribute = _arg(args, kwargs, 0, "attribute", None)
    items = value if attribute is None else list(map(make_attrgetter(env, attribute), value))
    if not all(type(item) is type(start) for item in items):
        return call(value)  # Python says what does not add up
    size = len(start) + sum(len(item) for item in items)
    longest = max([len(start), *(len(item) for item in items)])
    _check_growth(size, longest, f"adding {len(items):,} lists", "items")
    return type(start)(chain(start, *items))


def _urlize(env: Environment, call: Call, value: Any, args: Args, kwargs: Kwargs) -> Any:
    target = _arg(args, kwargs, 2, "target", None)
    rel = _arg(args, kwargs, 3, "rel", None)
    extra = len(str(target or "")) + len(str(rel or ""))
    if extra:
        words = len(str(value).split())
        what = f"adding {extra:,} characters to each of {words:,} links"
        _check_growth(len(str(value)) + words * extra, 0, what)
    return call(value)


_FILTER_CAPS: dict[str, Callable[[Environment, Call, Any, Args, Kwargs], Any]] = {
    "center": _center, "format": _format, "replace": _replace, "indent": _indent,
    "wordwrap": _wordwrap, "join": _join, "batch": _batch, "slice": _slice, "sum": _sum,
    "urlize": _urlize,
}  # fmt: skip


def _filter(env: Environment, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` with its cap, checking a value it writes out and counting what it builds."""
    cap = _FILTER_CAPS.get(name)
    text = name in _TEXT_FILTERS
    passed = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0

    @wraps(original)
    def capped(*args: Any, **kwargs: Any) -> Any:
        if len(args) <= passed:
            return original(*args, **kwargs)
        lead, value, rest = args[:passed], args[passed], args[passed + 1 :]
        if text:
            check_written(value)

        def call(checked: Any) -> Any:
            return original(*lead, checked, *rest, **kwargs)

        result = cap(env, call, value, rest, kwargs) if cap else call(value)
        return _built(result, value, *rest, *kwargs.values())

    return capped


def _range(*args: int) -> range:
    try:
        return safe_range(*args)
    except OverflowError:
        raise SecurityError(f"a range of more than {MAX_RANGE:,} numbers is not allowed") from None


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if isinstance(n, int) and isinstance(max, int) and n * max > MAX_WORDS:
        raise SecurityError(f"lipsum() of more than {MAX_WORDS:,} words is not allowed")
    return generate_lorem_ipsum(n, html, min, max)


# -- the environment -------------------------------------------------------------------------------


class _CodeGenerator(CodeGenerator):
    """Jinja2's code generator, with ``a ~ b`` joined through :meth:`Environment.join_parts`."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.join_parts({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


@pass_eval_context  # needing the context, it keeps Jinja2 from computing output when compiling
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """Every ``{{ value }}`` of a template's text, before it is written out."""
    check_written(value)
    return value


_LOOP = "irctl_counted_loop"  # the filter every loop's iterable goes through


class Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with the limits above, and one change: a mapping's keys win over its methods.

    ``params.items`` must be the param called ``items``, not ``dict.items``.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator

    def __init__(self, filters: Mapping[str, Callable[..., Any]] | None = None) -> None:
        # Not optimized: Jinja2's optimizer computes constant parts when compiling, outside the
        # limits (``'x'|center(1000000) ~ ...`` would be joined there); compiling runs nothing.
        super().__init__(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
            finalize=_finalize, optimized=False,
        )  # fmt: skip
        self.filters.update(filters or {})
        for name, original in list(self.filters.items()):
            self.filters[name] = _filter(self, name, original)
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum
        self.filters[_LOOP] = _loop

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """The template's syntax tree, each ``{% for %}`` iterating through :func:`_loop`."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP, [], [], None, None, lineno=loop.lineno)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """``*``, ``**``, ``%`` and ``+``, refused when the result would be huge."""
        if operator == "*":
            _check_repeat(left, right)
        elif (
            operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1
        ):
            if right > MAX_EXPONENT:
                raise SecurityError(f"an exponent above {MAX_EXPONENT} is not allowed")
            _check_bits(left.bit_length() * right)
        elif operator == "%" and isinstance(left, _TEXT):
            _check_printf(left, right)
        elif operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
            size = len(left) + len(right)
            unit = "characters" if isinstance(left, _TEXT) else "items"
            _check_growth(size, max(len(left), len(right)), "'+'", unit)
        return _built(super().call_binop(context, operator, left, right), left, right)

    def join_parts(self, join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        """``a ~ b``: refused when it would repeat a list's parts, or make a long string."""
        for part in parts:
            check_written(part)
        text = join(parts)
        longest = max((len(part) for part in parts if isinstance(part, str)), default=0)
        _check_growth(len(text), longest, "'~'")
        return _built(text, *parts)  # type: ignore[no-any-return]

    def concat(self, parts: Iterable[str]) -> str:
        """A template's text, refused once it passes MAX_LENGTH (a loop stops there)."""
        kept: list[str] = []
        size = 0
        for part in parts:
            size += len(part)
            if size > MAX_LENGTH:
                raise SecurityError(f"the template renders more than {MAX_LENGTH:,} characters")
            kept.append(part)
        return _built("".join(kept))  # type: ignore[no-any-return]

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A call from a template: a string's growing method is checked first."""
        args = _checked_call(obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        return _built(result, getattr(obj, "__self__", None), *args, *kwargs.values())

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``str.format_map``, as Jinja2 sandboxes them, with each field's
        spec and value checked."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: _Formatter = (
            _EscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _Formatter(self)
        )
        is_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return type(owner)(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Jinja2's rules, and :data:`INTERNAL_NAMES` refused on every value."""
        return not refused_attribute(attr) and super().is_safe_attribute(obj, attr, value)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``x['key']``: a key of a name :func:`refused_key` refuses is not read."""
        if isinstance(argument, str) and refused_key(argument):
            raise _refused(argument)
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``x.name``: a mapping's key wins over its methods; a name :func:`refused_attribute`
        refuses is not read, not even as a key."""
        if refused_attribute(attribute):
            raise _refused(attribute)
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)
