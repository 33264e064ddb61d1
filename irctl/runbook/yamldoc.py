"""YAML with positions: pass 1 of loading (see :mod:`irctl.runbook.loader`).

YAML is composed into nodes, which keep their marks, and built into plain data together with
a map from each field path to its ``line:column`` (a :class:`irctl.runbook.located.Document`).
Duplicate keys, which PyYAML silently accepts, are caught here, and so are documents that
grow past :data:`MAX_VALUES` through their aliases.  It imports only PyYAML, so reading
``irctl.yaml`` (:mod:`irctl.runbook.config`) costs no more than that and pydantic.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from irctl.errors import Diagnostic, InvalidDocument, UsageError
from irctl.runbook.located import Document, Loc, Pos, show

CONFIG_NAME = "irctl.yaml"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _mark(node: yaml.Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _scalar(loader: Any, node: yaml.ScalarNode) -> Any:
    if node.tag == _STR_TAG:
        return node.value  # what PyYAML's constructor returns, without its per-node cache
    return loader.construct_object(node, deep=True)


#: The most values one document may hold once YAML aliases are expanded. A 10,000-step runbook
#: holds about 30,000; a few nested aliases can ask for billions, which must not hang the loader.
MAX_VALUES = 200_000

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"

#: The largest whole number, either side of zero, that a runbook, drill or config may hold
#: anywhere (a field, a param, a var, an integration setting): 2**256 - 1, 78 digits, the
#: largest EVM amount. Each field has its own, smaller bound; this one keeps any value cheap to
#: read and to write out (Python refuses to read or print a number of more than 4,300 digits).
MAX_INTEGER = 2**256 - 1
_NUMBER_TEXT = 400  # a whole number written with more characters is refused without reading it


def _too_large(text: str) -> str:
    shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text):,} characters)"
    return (
        f"the whole number {shown} is too large: irctl reads whole numbers up to 2**256 - 1 "
        "(78 digits), either side of zero"
    )


#: A whole number as YAML writes one: decimal, 0b binary, 0x hex, 0 octal or base 60 (1:30).
_WHOLE = re.compile(r"[-+]?(0b[01_]+|0x[0-9a-fA-F_]+|0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])*)")


def _int_or_problem(loader: Any, node: yaml.ScalarNode) -> tuple[Any, str | None]:
    """An int-tagged scalar as its number, or None and why it is refused (too large, or not a
    whole number at all: ``!!int abc``)."""
    if not _WHOLE.fullmatch(node.value):
        return None, f"{show(node.value)} is not a whole number; remove the !!int tag or fix it"
    if len(node.value) > _NUMBER_TEXT:
        return None, _too_large(node.value)
    try:  # at most _NUMBER_TEXT characters: far below Python's limit of 4,300 digits
        value = loader.construct_object(node, deep=True)
    except ValueError:  # !!int 08: not octal
        return None, f"{show(node.value)} is not a whole number; remove the !!int tag or fix it"
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        return None, _too_large(node.value)
    return value, None


def _tag_name(tag: str) -> str:
    return "!!" + tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _json_scalar(loader: Any, node: yaml.ScalarNode, loc: Loc, doc: Document) -> Any:
    """A scalar as a JSON value: dates stay the text written, binary and inf/NaN are refused."""
    if node.tag == _STR_TAG:
        return node.value
    if node.tag == _TIMESTAMP_TAG:
        return node.value  # '2025-01-01' means that text, not a date object nobody can sign
    if node.tag == _INT_TAG:
        value, problem = _int_or_problem(loader, node)
        if problem is not None:
            doc.add(loc, problem)
            doc.refuse(loc)  # nothing that follows reports this value a second time
        return value
    try:
        value = loader.construct_object(node, deep=True)
    except (ValueError, KeyError, TypeError):  # an explicit tag the text does not fit
        tag = _tag_name(node.tag)
        doc.add(loc, f"{show(node.value)} is not a valid {tag} value; remove the tag or fix it")
        doc.refuse(loc)
        return None
    if isinstance(value, bytes):
        doc.add(loc, "binary values (!!binary) are not supported; write the value as text")
        return node.value  # the text, so checks that follow do not report it a second time
    if isinstance(value, float) and not math.isfinite(value):
        if node.tag == _FLOAT_TAG and any(c.isdigit() for c in node.value):
            shown = show(node.value)
            doc.add(loc, f"the number {shown} is too large: numbers must be finite (below 1.8e308)")
        else:
            doc.add(loc, f"{value!r} is not supported; numbers must be finite")
        return node.value
    return value


def _build(loader: Any, node: yaml.Node, loc: Loc, doc: Document, active: set[int]) -> Any:
    doc.values.setdefault(loc, _mark(node))
    if len(doc.values) > MAX_VALUES:
        raise _TooLarge(node)
    if isinstance(node, yaml.ScalarNode):
        return _json_scalar(loader, node, loc, doc)
    if id(node) in active:
        doc.add(loc, "an alias refers to itself (recursive YAML anchors are not supported)")
        return None
    active.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            return [
                _build(loader, child, (*loc, i), doc, active) for i, child in enumerate(node.value)
            ]
        if isinstance(node, yaml.MappingNode):
            return _build_mapping(loader, node, loc, doc, active)
        return loader.construct_object(node, deep=True)
    finally:
        active.discard(id(node))


def _build_mapping(
    loader: Any, node: yaml.MappingNode, loc: Loc, doc: Document, active: set[int]
) -> dict[Any, Any]:
    own_keys = {id(key) for key, _ in node.value if key.tag != _MERGE_TAG}
    if len(own_keys) != len(node.value):
        loader.flatten_mapping(node)  # YAML merge keys (<<): merged entries first, own ones win
    result: dict[Any, Any] = {}
    seen: dict[Any, Pos] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):  # a list or mapping: never hashable
            doc.add(loc, "a key must be a plain value, not a list or mapping", at=_mark(key_node))
            continue
        if key_node.tag == _INT_TAG:
            key, problem = _int_or_problem(loader, key_node)
            if problem is not None:
                doc.add(loc, f"key: {problem}", at=_mark(key_node))
                continue
        else:
            try:
                key = _scalar(loader, key_node)
            except (ValueError, KeyError, TypeError):  # an explicit tag the text does not fit
                tag = _tag_name(key_node.tag)
                problem = f"{show(key_node.value)} is not a valid {tag} value; remove the tag"
                doc.add(loc, f"key: {problem} or fix it", at=_mark(key_node))
                continue
        try:
            hash(key)
        except TypeError:
            doc.add(loc, "a key must be a plain value, not a list or mapping", at=_mark(key_node))
            continue
        here = (*loc, key)
        if id(key_node) in own_keys:
            at = _mark(key_node)
            if key in seen:
                line, _ = seen[key]
                doc.add(
                    here,
                    f"duplicate key '{key}' (first written at line {line}); YAML would keep only "
                    "one of them",
                    at=at,
                )
                continue
            seen[key] = at
            doc.keys[here] = at
        doc.values.pop(here, None)
        result[key] = _build(loader, value_node, here, doc, active)
    return result


def _parse(text: str, name: str) -> Document:
    """YAML text as a mapping with positions; raises InvalidDocument if it is not even that."""
    doc = Document(name)
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _build(loader, node, (), doc, set())
    except _TooLarge as exc:
        line, column = _mark(exc.node)
        message = (
            f"the document holds more than {MAX_VALUES:,} values once its YAML aliases (*name) "
            "are expanded; write the values out or use fewer nested aliases"
        )
        raise InvalidDocument([Diagnostic(name, line, column, "", message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise InvalidDocument([Diagnostic(name, line, column, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise InvalidDocument([Diagnostic(name, 1, 1, "", f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    if doc.data is None:
        raise InvalidDocument([Diagnostic(name, 1, 1, "", "the file is empty")])
    if not isinstance(doc.data, dict):
        line, column = doc.pos(())
        raise InvalidDocument(
            [
                Diagnostic(
                    name, line, column, "", f"expected a mapping of fields, got {show(doc.data)}"
                )
            ]
        )
    return doc


def read_document(path: Path) -> str:
    """The text of a runbook, drill or config file; InvalidDocument if it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = Diagnostic(str(path), 1, 1, "", "the file is not UTF-8 text")
        raise InvalidDocument([problem]) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _finish(doc: Document, model: Any) -> Any:
    if doc.problems:
        raise InvalidDocument(doc.problems)
    return model
