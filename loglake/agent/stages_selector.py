"""The `match` stage's selector: a LogQL stream selector with optional line filters, e.g. `{app="api"} |= "error"`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from loglake.agent.re2 import PatternError, compile_re2
from loglake.quoting import QuotingError, unquote_at

__all__ = ["LabelMatcher", "LineFilter", "Selector", "SelectorError", "parse_selector"]


class SelectorError(ValueError):
    """The selector text does not parse."""


@dataclass(frozen=True)
class LabelMatcher:
    """`name op "value"` with op one of = != =~ !~ (regexes match the whole value, as Prometheus' do)."""

    name: str
    op: str
    value: str
    test: Callable[[str], bool]

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether the label (the empty string when absent) satisfies the matcher."""
        return self.test(labels.get(self.name, ""))


@dataclass(frozen=True)
class LineFilter:
    """`op "text"` with op one of |= != |~ !~."""

    op: str
    value: str
    test: Callable[[str], bool]


@dataclass(frozen=True)
class Selector:
    """Label matchers and line filters; an entry is selected when all of them hold."""

    matchers: tuple[LabelMatcher, ...]
    filters: tuple[LineFilter, ...]

    def matches(self, labels: dict[str, str], line: str) -> bool:
        """Whether an entry with these labels and this line is selected."""
        for m in self.matchers:
            if not m.test(labels.get(m.name, "")):
                return False
        for f in self.filters:
            if not f.test(line):
                return False
        return True


_IDENT = re.compile(r"[^\W\d]\w*")


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _label_test(op: str, value: str) -> Callable[[str], bool]:
    if op == "=":
        return value.__eq__
    if op == "!=":
        return value.__ne__
    rx = compile_re2(value).pattern  # anchored, `.` matching newlines: Prometheus' label matchers
    if op == "=~":
        return lambda v: rx.fullmatch(v) is not None
    return lambda v: rx.fullmatch(v) is None


def _line_test(op: str, value: str) -> Callable[[str], bool]:
    if op == "|=":
        return lambda line: value in line
    if op == "!=":
        return lambda line: value not in line
    rx = compile_re2(value, anchored=False).pattern
    if op == "|~":
        return lambda line: rx.search(line) is not None
    return lambda line: rx.search(line) is None


def parse_selector(text: str) -> Selector:
    """Parse `{name="value", ...}` followed by any number of line filters (SelectorError when invalid)."""
    if not isinstance(text, str):
        raise SelectorError(f"selector must be a string, not {text!r}")
    pos = _skip(text, 0)

    def fail(why: str) -> SelectorError:
        return SelectorError(f"parse error at position {pos + 1} of {text!r}: {why}")

    def string() -> str:
        nonlocal pos
        try:
            value, pos = unquote_at(text, pos)
        except QuotingError as exc:
            raise fail(str(exc)) from None
        return value

    if not text.startswith("{", pos):
        raise fail("a selector starts with {")
    pos += 1
    matchers: list[LabelMatcher] = []
    while True:
        pos = _skip(text, pos)
        m = _IDENT.match(text, pos)
        if m is None:
            raise fail("expected a label name" if not text.startswith("}", pos) else "a selector needs a matcher")
        name = m.group(0)
        pos = _skip(text, m.end())
        op = next((o for o in ("=~", "!~", "!=", "=") if text.startswith(o, pos)), None)
        if op is None:
            raise fail(f"expected =, !=, =~ or !~ after {name}")
        pos = _skip(text, pos + len(op))
        value = string()
        try:
            matchers.append(LabelMatcher(name, op, value, _label_test(op, value)))
        except PatternError as exc:
            raise fail(str(exc)) from None
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos += 1
            continue
        if text.startswith("}", pos):
            pos += 1
            break
        raise fail("expected , or }")
    filters: list[LineFilter] = []
    while True:
        pos = _skip(text, pos)
        if pos >= len(text):
            break
        op = next((o for o in ("|=", "!=", "|~", "!~") if text.startswith(o, pos)), None)
        if op is None:
            raise fail("expected a line filter (|=, !=, |~ or !~)")
        pos = _skip(text, pos + 2)
        value = string()
        try:
            filters.append(LineFilter(op, value, _line_test(op, value)))
        except PatternError as exc:
            raise fail(str(exc)) from None
    return Selector(tuple(matchers), tuple(filters))
