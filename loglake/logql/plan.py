"""Turns a parsed LogQL tree into what the engine executes: log queries, range and vector aggregations."""

from __future__ import annotations

from dataclasses import dataclass, field

from loglake.logql import ast
from loglake.logql.errors import QueryError
from loglake.logql.lexer import ParseError
from loglake.logql.linefilter import line_filter_mask
from loglake.logql.parser import parse as parse_expr
from loglake.logql.pipeline import Item, split_pushdown, validate
from loglake.model import LabelMatcher

__all__ = ["LogQuery", "MetricQuery", "RangeAgg", "VectorAgg", "format_query", "line_filter_mask", "parse"]

_VECTOR_OPS = ("sum", "count", "min", "max", "avg", "stddev", "stdvar", "topk", "bottomk", "sort", "sort_desc")


@dataclass
class LogQuery:
    """A stream selector and its pipeline: filters that run while loading, then the other stages in order."""

    matchers: list[LabelMatcher]
    line_filters: list[ast.LineFilter] = field(default_factory=list)
    label_filters: list[ast.LabelFilter] = field(default_factory=list)
    stages: list[Item] = field(default_factory=list)


@dataclass
class RangeAgg:
    """`func(log query [range] offset o)`."""

    func: str
    query: LogQuery
    range_ns: int
    offset_ns: int = 0
    unwrap: ast.Unwrap | None = None
    param: float | None = None
    grouping: tuple[tuple[str, ...], bool] | None = None
    """The range aggregation's own `by`/`without` (labels, without)."""


@dataclass
class VectorAgg:
    """`op by/without (labels) ([param,] inner)`; the inner expression is any metric query."""

    op: str
    inner: MetricQuery
    grouping: list[str] | None = None
    without: bool = False
    param: int = 0


@dataclass
class Literal:
    """A number: a scalar at every step."""

    value: float


@dataclass
class VectorOf:
    """`vector(n)`: one series without labels, n at every step."""

    value: float


@dataclass
class BinOp:
    """`left op [bool] [on|ignoring (...)] [group_left|group_right (...)] right`."""

    op: str
    left: MetricQuery
    right: MetricQuery
    return_bool: bool
    card: str  # "one-to-one", "many-to-one" (group_left), "one-to-many" (group_right)
    on: bool
    labels: tuple[str, ...]
    include: tuple[str, ...]


@dataclass
class LabelReplace:
    """`label_replace(inner, dst, replacement, src, regex)`."""

    inner: MetricQuery
    dst: str
    replacement: str
    src: str
    regex: str


MetricQuery = RangeAgg | VectorAgg | Literal | VectorOf | BinOp | LabelReplace


def _unsupported(expr: ast.Expr | str) -> QueryError:
    return QueryError(400, f"unsupported query: '{expr}' is not supported by loglake yet")


def parse(text: str) -> LogQuery | MetricQuery:
    """Parse a query into what the engine runs; a 400 QueryError with Loki's message if it does not parse."""
    try:
        expr = parse_expr(text)
    except ParseError as exc:
        raise QueryError(400, str(exc)) from None
    if isinstance(expr, ast.LogSelectorExpr):
        return _log_query(expr)
    return _metric(expr)


def _metric(expr: ast.Expr) -> MetricQuery:
    if isinstance(expr, ast.RangeAggregation):
        return _range_agg(expr)
    if isinstance(expr, ast.VectorAggregation) and expr.operation in _VECTOR_OPS:
        g = expr.grouping
        return VectorAgg(expr.operation, _metric(expr.expr), list(g.labels), g.without, expr.param)
    if isinstance(expr, ast.LiteralExpr):
        return Literal(expr.value)
    if isinstance(expr, ast.VectorExpr):
        return VectorOf(expr.value)
    if isinstance(expr, ast.BinOpExpr):
        m = expr.matching
        return BinOp(
            expr.op, _metric(expr.left), _metric(expr.right), expr.return_bool, m.card, m.on, m.labels, m.include
        )
    if isinstance(expr, ast.LabelReplaceExpr):
        return LabelReplace(_metric(expr.expr), expr.dst, expr.replacement, expr.src, expr.regex)
    raise _unsupported(expr)


def _log_query(expr: ast.LogSelectorExpr) -> LogQuery:
    line_filters, label_filters, rest = split_pushdown(expr.stages)
    validate(rest)
    return LogQuery(list(expr.matchers), line_filters, label_filters, rest)


def _range_agg(expr: ast.RangeAggregation) -> RangeAgg:
    r = expr.range
    g = expr.grouping
    grouping = (tuple(g.labels), g.without) if g is not None else None
    return RangeAgg(expr.operation, _log_query(r.selector), r.range_ns, r.offset_ns, r.unwrap, expr.param, grouping)


def parse_selector(text: str) -> list[LabelMatcher]:
    """Parse a stream selector (`{a="b"}`) into matchers; anything else is a 400."""
    try:
        expr = parse_expr(text)
    except ParseError as exc:
        raise QueryError(400, str(exc)) from None
    if not isinstance(expr, ast.MatchersExpr):
        raise QueryError(400, f"only a stream selector is allowed here, got '{expr}'")
    return list(expr.matchers)


def format_query(text: str) -> str:
    """Return the query in LogQL's canonical form, as Loki's format_query does."""
    try:
        return ast.pretty(parse_expr(text, check_stages=False))
    except ParseError as exc:
        raise QueryError(400, str(exc)) from None
