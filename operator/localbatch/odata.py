"""The OData query options Batch list operations accept: ``$filter``, ``$select``, ``maxresults``.

``$filter`` supports the subset Batch documents for job schedules, jobs, tasks, pools and nodes:
``eq ne gt ge lt le``, ``and``, ``or``, ``not``, parentheses and ``startswith(prop, 'x')`` over
properties addressed by slash paths (``id``, ``state``, ``creationTime``,
``executionInfo/poolId``...). String literals use single quotes (``''`` escapes one); timestamps
are written bare (``2025-06-01T00:00:00Z``) or as ``datetime'...'``. Strings compare
case-insensitively on ``id`` (Batch ids are case-insensitive), exactly otherwise. A filter is
compiled once into a predicate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from batchwire import timestamps
from localbatch.errors import BatchError

JSON = dict[str, Any]
Predicate = Callable[[JSON], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<dt>datetime'[^']*')"
    r"|(?P<ts>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<punct>[(),])|(?P<word>[A-Za-z_$][A-Za-z0-9_/.$]*))"
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_TIME_SUFFIXES = ("Time", "time", "Modified", "RunUntil", "RunAfter")


def query_error(name: str, value: str, reason: str) -> BatchError:
    return BatchError(
        "InvalidQueryParameterValue",
        [("QueryParameterName", name), ("QueryParameterValue", value), ("Reason", reason)],
    )


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise query_error("$filter", text, f"cannot parse the filter at position {pos}: {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _lookup(obj: JSON, path: list[str]) -> Any:
    value: Any = obj
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _is_time_path(path: list[str]) -> bool:
    return path[-1].endswith(_TIME_SUFFIXES)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise query_error("$filter", self.text, "the filter ends too early")
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        _kind, text = self.take()
        if text.lower() != value:
            raise query_error("$filter", self.text, f"expected {value!r}, found {text!r}")

    def parse(self) -> Predicate:
        predicate = self.parse_or()
        if self.peek() is not None:
            raise query_error("$filter", self.text, f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return predicate

    def parse_or(self) -> Predicate:
        parts = [self.parse_and()]
        while (token := self.peek()) and token[0] == "word" and token[1].lower() == "or":
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else (lambda obj: any(p(obj) for p in parts))

    def parse_and(self) -> Predicate:
        parts = [self.parse_not()]
        while (token := self.peek()) and token[0] == "word" and token[1].lower() == "and":
            self.take()
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else (lambda obj: all(p(obj) for p in parts))

    def parse_not(self) -> Predicate:
        token = self.peek()
        if token and token[0] == "word" and token[1].lower() == "not":
            self.take()
            inner = self.parse_not()
            return lambda obj: not inner(obj)
        return self.parse_primary()

    def parse_primary(self) -> Predicate:
        kind, text = self.take()
        if text == "(":
            inner = self.parse_or()
            self.expect(")")
            return inner
        if kind != "word":
            raise query_error("$filter", self.text, f"expected a property name, found {text!r}")
        if text.lower() == "startswith":
            self.expect("(")
            pkind, ptext = self.take()
            if pkind != "word":
                raise query_error("$filter", self.text, "startswith needs a property name first")
            self.expect(",")
            lkind, ltext = self.take()
            if lkind != "str":
                raise query_error("$filter", self.text, "startswith needs a quoted string second")
            self.expect(")")
            path = ptext.split("/")
            prefix = _string(ltext)
            if path == ["id"]:
                low = prefix.lower()
                return lambda obj: str(obj.get("id", "")).lower().startswith(low)
            return lambda obj: isinstance(v := _lookup(obj, path), str) and v.startswith(prefix)
        path = text.split("/")
        _kind, op = self.take()
        op = op.lower()
        if op not in _COMPARISONS:
            raise query_error("$filter", self.text, f"unsupported operator {op!r}; use eq, ne, gt, ge, lt or le")
        lkind, ltext = self.take()
        return _comparison(path, op, lkind, ltext, self.text)


def _string(literal: str) -> str:
    return literal[1:-1].replace("''", "'")


def _comparison(path: list[str], op: str, kind: str, literal: str, text: str) -> Predicate:
    value: Any
    if kind == "str":
        value = _string(literal)
    elif kind == "dt":
        value = literal[len("datetime'") : -1]
    elif kind == "ts":
        value = literal
    elif kind == "num":
        value = float(literal) if "." in literal else int(literal)
    elif kind == "word" and literal.lower() in ("true", "false", "null"):
        value = {"true": True, "false": False, "null": None}[literal.lower()]
    else:
        raise query_error("$filter", text, f"expected a literal after {op}, found {literal!r}")
    convert: Callable[[Any], Any] = lambda v: v  # noqa: E731
    if kind in ("dt", "ts") or (_is_time_path(path) and isinstance(value, str)):
        try:
            value = timestamps.parse(value)
        except ValueError:
            raise query_error("$filter", text, f"{literal!r} is not a timestamp") from None

        def convert(v: Any) -> datetime | None:
            return timestamps.parse(v) if isinstance(v, str) else None

    elif path == ["id"] and isinstance(value, str):
        value = value.lower()

        def convert(v: Any) -> str | None:
            return v.lower() if isinstance(v, str) else None

    compare = _OPERATORS[op]

    def predicate(obj: JSON) -> bool:
        actual = convert(_lookup(obj, path))
        if op in ("eq", "ne"):
            return compare(actual, value)
        if actual is None or value is None:
            return False
        try:
            return compare(actual, value)
        except TypeError:
            return False

    return predicate


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def compile_filter(text: str | None) -> Predicate | None:
    """Compile a ``$filter`` expression; ``None`` or empty means no filter."""
    if text is None or not text.strip():
        return None
    return _Parser(text).parse()


def parse_select(text: str | None) -> list[list[str]] | None:
    """``$select=id,state,executionInfo/nextRunTime`` -> property paths; ``None`` means all."""
    if text is None or not text.strip():
        return None
    paths = []
    for part in text.split(","):
        part = part.strip()
        if not part or not re.match(r"^[A-Za-z][A-Za-z0-9]*(/[A-Za-z][A-Za-z0-9]*)*$", part):
            raise query_error("$select", text, f"{part!r} is not a property name")
        paths.append(part.split("/"))
    return paths


def apply_select(obj: JSON, paths: list[list[str]]) -> JSON:
    """Keep only the selected properties (nested paths keep their parents' shape)."""
    out: JSON = {}
    for path in paths:
        source: Any = obj
        target = out
        for i, part in enumerate(path):
            if not isinstance(source, dict) or part not in source:
                break
            source = source[part]
            if i == len(path) - 1:
                target[part] = source
            else:
                target = target.setdefault(part, {})
    return out


def parse_max_results(text: str | None) -> int:
    """``maxresults``: 1..1000, default 1000."""
    if text is None or text == "":
        return 1000
    try:
        value = int(text)
    except ValueError:
        raise query_error("maxresults", text, "maxresults must be an integer from 1 to 1000") from None
    if not 1 <= value <= 1000:
        raise query_error("maxresults", text, "maxresults must be from 1 to 1000")
    return value
