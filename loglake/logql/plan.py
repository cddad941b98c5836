"""Turns LogQL text into what the engine executes: log queries, range and vector aggregations."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from loglake.logql.errors import QueryError
from loglake.model import LabelMatcher, MatchOp
from loglake.quoting import QuotingError, unquote_at


class PlanError(QueryError):
    """A query that does not parse or is not supported; its text is Loki's 400 message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


@dataclass
class LineFilterSpec:
    """One line filter stage: operator and its `or` alternatives."""

    op: str
    values: list[str]


@dataclass
class LogQuery:
    """A stream selector with line filters."""

    matchers: list[LabelMatcher]
    line_filters: list[LineFilterSpec] = field(default_factory=list)


@dataclass
class RangeAgg:
    """`func(log query [range] offset o)`."""

    func: str
    query: LogQuery
    range_ns: int
    offset_ns: int = 0


@dataclass
class VectorAgg:
    """`op by/without (labels) (inner)`."""

    op: str
    inner: RangeAgg
    grouping: list[str] | None = None
    without: bool = False


MetricQuery = RangeAgg | VectorAgg

_EMPTY_SELECTOR = (
    "parse error : queries require at least one regexp or equality matcher that does not have an "
    'empty-compatible value. For instance, app=~".*" does not meet this requirement, but app=~".+" will'
)


# Temporary minimal grammar (selectors, line filters, sum/count of count_over_time) until the full parser lands.
def _parse_selector_at(text: str, i: int) -> tuple[list[LabelMatcher], int]:
    i = _ws(text, i)
    if i >= len(text) or text[i] != "{":
        raise PlanError(
            "parse error : syntax error: unexpected $end"
            if i >= len(text)
            else f"parse error at line 1, col {i + 1}: syntax error: unexpected IDENTIFIER"
        )
    i += 1
    matchers: list[LabelMatcher] = []
    while True:
        i = _ws(text, i)
        if i < len(text) and text[i] == "}":
            i += 1
            break
        m = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*").match(text, i)
        if not m:
            raise PlanError(f"parse error at line 1, col {i + 1}: syntax error")
        try:
            value, i = unquote_at(text, m.end())
        except QuotingError as exc:
            raise PlanError(f"parse error : {exc}") from None
        matchers.append(LabelMatcher(m.group(1), MatchOp(m.group(2)), value))
        i = _ws(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
    if not any(not mm.matches_empty() for mm in matchers):
        raise PlanError(_EMPTY_SELECTOR)
    return matchers, i


def _ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _parse_log(text: str, i: int) -> tuple[LogQuery, int]:
    matchers, i = _parse_selector_at(text, i)
    filters: list[LineFilterSpec] = []
    while True:
        i = _ws(text, i)
        m = re.compile(r"(\|=|!=|\|~|!~)\s*").match(text, i)
        if not m:
            break
        try:
            value, i = unquote_at(text, m.end())
        except QuotingError as exc:
            raise PlanError(f"parse error : {exc}") from None
        values = [value]
        while True:
            j = _ws(text, i)
            om = re.compile(r"or\s+").match(text, j)
            if not om:
                break
            value, i = unquote_at(text, om.end())
            values.append(value)
        filters.append(LineFilterSpec(m.group(1), values))
    return LogQuery(matchers, filters), i


def _duration(text: str) -> int:
    units = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", text))


def parse(text: str) -> LogQuery | MetricQuery:
    """Parse a query into what the engine runs."""
    s = text.strip()
    if not s:
        raise PlanError("parse error : syntax error: unexpected $end")
    m = re.match(r"(sum|count|min|max|avg)\s*(?:(by|without)\s*\(([^)]*)\)\s*)?\(\s*", s)
    if m:
        inner, i = _parse_range(s, m.end())
        i = _ws(s, i)
        if i >= len(s) or s[i] != ")":
            raise PlanError("parse error : syntax error")
        grouping = [g.strip() for g in m.group(3).split(",") if g.strip()] if m.group(2) else None
        return VectorAgg(m.group(1), inner, grouping, m.group(2) == "without")
    if re.match(r"[a-z_]+\s*\(", s):
        r, i = _parse_range(s, 0)
        return r
    q, i = _parse_log(s, 0)
    if _ws(s, i) != len(s):
        raise PlanError(f"parse error : stage not supported yet: {s[i:]!r}")
    return q


def _parse_range(s: str, i: int) -> tuple[RangeAgg, int]:
    m = re.compile(r"(count_over_time|rate|bytes_over_time|bytes_rate)\s*\(\s*").match(s, i)
    if not m:
        raise PlanError(f"parse error at line 1, col {i + 1}: syntax error: unexpected IDENTIFIER")
    q, i = _parse_log(s, m.end())
    rm = re.compile(r"\s*\[\s*([0-9a-z]+)\s*\]\s*(?:offset\s+([0-9a-z]+)\s*)?\)").match(s, i)
    if not rm:
        raise PlanError("parse error : syntax error")
    return RangeAgg(m.group(1), q, _duration(rm.group(1)), _duration(rm.group(2) or "")), rm.end()


def parse_selector(text: str) -> list[LabelMatcher]:
    """Parse a stream selector (`{a="b"}`) into matchers."""
    matchers, i = _parse_selector_at(text.strip(), 0)
    if _ws(text.strip(), i) != len(text.strip()):
        raise PlanError("parse error : only a stream selector is allowed here")
    return matchers


def format_query(text: str) -> str:
    """Return the query in canonical form."""
    return text.strip()


def line_filter_mask(filters: list[LineFilterSpec], lines: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Return a keep-mask for `lines` under all filters."""
    series = pl.Series(lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines)
    mask = np.ones(len(series), dtype=bool)
    for f in filters:
        literal = f.op in ("|=", "!=")
        hit = np.zeros(len(series), dtype=bool)
        for v in f.values:
            hit |= series.str.contains(v, literal=literal).fill_null(False).to_numpy()
        mask &= ~hit if f.op in ("!=", "!~") else hit
    return mask
