"""Properties of LogQL: printed trees parse back to themselves, mangled queries fail cleanly, the API never 500s.

1. Round trips. Hypothesis builds random valid syntax trees (every node type of `loglake.logql.ast`
   but `variants`, which Loki's grammar no longer has);
   printing a tree with `str()` (Loki's canonical form) or `pretty()` (format_query's) and parsing the
   text gives the same tree back, printing is idempotent, and hand-written spellings of a query (backticks,
   comments, keyword case, range before or after the pipeline) parse to the tree they stand for.
2. Fuzzing. Real queries (the conformance corpus) are mangled character by character and token by
   token, and deep or long queries are built; `parse` returns a tree or raises `ParseError`, never
   anything else, and never hangs.
3. The query API. Generated and mangled queries go to a live server holding json, logfmt, plain and
   empty lines; every answer is 200 or 400 (504 only on a timeout), never 500, and comes back quickly.

Where Loki's own printer loses information or writes text its grammar reads differently, we print what
Loki prints: the generators avoid those trees, and `test_*_loses_*`/`test_*_ambiguous_*` pin them down.
Engine bugs these tests found have regression tests at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from loglake.logql import (
    BinaryLabelFilter,
    BinOpExpr,
    BytesLabelFilter,
    CompareOp,
    Decolorize,
    DropLabels,
    DurationLabelFilter,
    Expr,
    Grouping,
    IpLabelFilter,
    JsonParser,
    KeepLabels,
    LabelExtraction,
    LabelFilter,
    LabelFilterStage,
    LabelFormat,
    LabelFormatItem,
    LabelReplaceExpr,
    LabelSelection,
    LineFilter,
    LineFilterOp,
    LineFilterTerm,
    LineFormat,
    LiteralExpr,
    LogfmtParser,
    LogRange,
    LogSelectorExpr,
    MatchersExpr,
    NumericLabelFilter,
    ParseError,
    PatternParser,
    PipelineExpr,
    RangeAggregation,
    RegexpParser,
    SampleExpr,
    Stage,
    StringLabelFilter,
    UnpackParser,
    Unwrap,
    VectorAggregation,
    VectorExpr,
    VectorMatching,
    parse,
    pretty,
)
from loglake.logql.ast import BINARY_OPERATORS, COMPARISON_OPERATORS, SET_OPERATORS
from loglake.logql.lexer import FUNCTIONS, KEYWORDS, parse_bytes
from loglake.logql.parser import MAX_DEPTH
from loglake.logql.printer import humanize_bytes
from loglake.model import LabelMatcher, MatchOp
from loglake.quoting import quote
from tests.conftest import SHARED, LoglakeServer
from tests.helpers import push_json, stream

CASES = SHARED / "conformance" / "cases.jsonl"

# Reproducible in CI: the same examples on every run, and no example database on disk.
_COMMON = {
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
}
ROUND_TRIP = settings(max_examples=200, deadline=2000, **_COMMON)
FUZZ = settings(max_examples=600, deadline=2000, **_COMMON)
SERVER = settings(max_examples=250, deadline=None, **_COMMON)

PARSE_TIME_LIMIT_S = 5.0
"""A parse that takes longer than this counts as a hang."""

REQUEST_TIME_LIMIT_S = 5.0
"""Every API answer must come within this (the server's query_timeout is shorter)."""

MS = 1_000_000
S = 1_000 * MS
MIN = 60 * S
H = 60 * MIN


# -- names, strings, numbers ---------------------------------------------------------------------------

# Words the lexer always reads as keywords (in any case); function names are identifiers unless a call follows.
_RESERVED = frozenset(w for w in KEYWORDS if w.isidentifier() and w not in FUNCTIONS)

# Some are function names (identifiers unless a call follows) or start like keywords.
_NAMES = "app env level status pod msg __error__ a1 _x Rate bytes duration count sum vector ip label_replace".split()
_NAMES += ["orders", "bypass"]


def _free_name(name: str) -> bool:
    return name.lower() not in _RESERVED and name != "_"


label_names = st.one_of(
    st.sampled_from(_NAMES), st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True).filter(_free_name)
)

_ODD_TEXT = ["", "error", "GET /api", 'say "hi"', "tab\there", "new\nline", "back`tick", "\\d+", "ünï", "💥", "{{.x}}"]
_ODD_TEXT += ["a|b", "\x00\x7f", "\u200b", "<_>"]
texts = st.one_of(st.sampled_from(_ODD_TEXT), st.text(st.characters(exclude_categories=("Cs",)), max_size=12))

_RE_META = frozenset("\\.+*?()|[]{}^$")


def _re_escape(text: str) -> str:
    """Escape RE2's metacharacters (escaping other characters is not always valid RE2)."""
    return "".join("\\" + c if c in _RE_META else c for c in text)


_re_literals = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("é中"), max_size=5)
_RE_PIECES = [".*", ".+", "[a-z]+", "[0-9]{2,3}", "\\d+", "\\w*", "\\s?", "(?i)", "(foo|bar)", "[^x]", "x|y", "^", "$"]
_RE_PIECES += ["(?s:.)", "\\.", "a{0,2}", "\\bword\\b", "(?:ab)+?"]
regexes = st.lists(st.one_of(_re_literals.map(_re_escape), st.sampled_from(_RE_PIECES)), max_size=4).map("".join)

# Numbers print through Go's shortest formatting, so every finite float reads back exactly, except -0:
# Loki prints it as `-0`, which its lexer reads as a duration (see test_negative_zero_prints_as_in_loki).
finite_floats = st.one_of(
    st.sampled_from([0.0, 1.0, -1.5, 0.25, 1e21, 1e-7, 123456789.0, 5e-324, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
).filter(lambda v: math.copysign(1.0, v) > 0 or v != 0)
go_durations = st.one_of(
    st.sampled_from([0, 1, 1500, MS, 1500 * MS, S, 90 * S, H, -5 * S, -(1 << 63), (1 << 63) - 1]),
    st.integers(-(1 << 63), (1 << 63) - 1),
)


def _exact_bytes(size: int) -> bool:
    # Loki prints sizes with ~3 significant digits and reads them back through a float multiply that
    # truncates ("4.1MB" is 4099999 bytes), so only some sizes print exactly; `0B` and sizes of a
    # petabyte or more print as text Loki's own lexer rejects (a binary literal, an exponent).
    return parse_bytes(humanize_bytes(size)) == size


_SIZES = st.one_of(
    st.integers(1, 9),
    st.builds(lambda m, e: m * 1000**e, st.integers(10, 999), st.integers(0, 4)),
    st.builds(lambda d, e: d * 100 * 1000 ** (e - 1), st.integers(10, 99), st.integers(1, 4)),
)
exact_byte_sizes = _SIZES.filter(_exact_bytes)
any_byte_sizes = st.integers(1, 999 * 10**12)  # from 999.5TB up Loki prints `1.0PB`, which it cannot read

ip_patterns = st.one_of(
    st.sampled_from(["10.0.0.0/8", "192.168.1.1", "::1", "2001:db8::/32", "10.0.0.1-10.0.0.9", "0.0.0.0/0"]),
    st.builds(lambda a, b, bits: f"{a}.{b}.0.0/{bits}", st.integers(0, 255), st.integers(0, 255), st.integers(0, 32)),
)
compare_ops = st.sampled_from(list(CompareOp))
any_ranges = st.integers(1, 10 * 365 * 24 * 3600 * 1000).map(lambda ms: ms * MS)
any_offsets = st.one_of(st.just(0), go_durations.filter(bool))
templates = st.one_of(st.sampled_from(["{{.msg}}", "{{ .level | ToUpper }} {{.msg}}", "[{{.nothere}}]", ""]), texts)


# -- syntax trees ------------------------------------------------------------------------------------------

UNWRAP_ONLY = set(
    "avg_over_time sum_over_time max_over_time min_over_time stddev_over_time stdvar_over_time quantile_over_time "
    "first_over_time last_over_time rate_counter".split()
)
UNWRAP_OPTIONAL = {"rate", "absent_over_time"}
NO_UNWRAP = {"count_over_time", "bytes_over_time", "bytes_rate"}
RANGE_GROUPING = set(
    "avg_over_time stddev_over_time stdvar_over_time quantile_over_time max_over_time min_over_time first_over_time "
    "last_over_time".split()
)
VECTOR_OPS = "sum avg max min count stddev stdvar bottomk topk sort sort_desc approx_topk".split()
K_OPS = {"bottomk", "topk", "approx_topk"}


@dataclass(frozen=True)
class Grammar:
    """Hypothesis strategies for valid LogQL syntax trees, over the given names, values and durations.

    With `pretty_safe`, trees avoid what format_query prints lossily, as Loki does: `or` alternatives of
    line filters, empty `by ()`/`without ()`/`on ()`, offsets that are negative or not whole milliseconds.
    """

    names: st.SearchStrategy[str] = label_names
    values: st.SearchStrategy[str] = texts
    ranges: st.SearchStrategy[int] = any_ranges
    offsets: st.SearchStrategy[int] = any_offsets
    bytes_sizes: st.SearchStrategy[int] = exact_byte_sizes
    json_paths: st.SearchStrategy[str] | None = None
    """What `| json name="..."` extracts; None: any text (the parser takes any, the engine checks it)."""
    logfmt_keys: st.SearchStrategy[str] | None = None
    """What `| logfmt name="..."` extracts; None: any text."""
    anchors: st.SearchStrategy[LabelMatcher] | None = None
    """The selector's matcher that matches no empty value; by default one over `names` and `values`."""
    pretty_safe: bool = False

    # -- selectors and pipelines

    def matchers(self) -> st.SearchStrategy[LabelMatcher]:
        """A `name op "value"` matcher; regex operators get a valid RE2 pattern."""
        plain = st.builds(LabelMatcher, self.names, st.sampled_from([MatchOp.EQ, MatchOp.NEQ]), self.values)
        regex = st.builds(LabelMatcher, self.names, st.sampled_from([MatchOp.RE, MatchOp.NRE]), regexes)
        return st.one_of(plain, regex)

    def selector(self) -> st.SearchStrategy[MatchersExpr]:
        """A stream selector with at least one matcher that does not match the empty value."""

        @st.composite
        def build(draw: st.DrawFn) -> MatchersExpr:
            if self.anchors is not None:
                anchor = draw(self.anchors)
            else:
                anchor = LabelMatcher(draw(self.names), MatchOp.EQ, draw(self.values.filter(bool)))
                if draw(st.booleans()):
                    anchor = LabelMatcher(anchor.name, MatchOp.RE, ".+")
            others = draw(st.lists(self.matchers(), max_size=3))
            return MatchersExpr(tuple(draw(st.permutations([anchor, *others]))))

        return build()

    def line_filter(self) -> st.SearchStrategy[LineFilter]:
        """A line filter; positive ones may have `or` alternatives, `|=` and `!=` may use ip()."""

        @st.composite
        def build(draw: st.DrawFn) -> LineFilter:
            op = draw(st.sampled_from(list(LineFilterOp)))
            count = 1 if op.negated or self.pretty_safe else draw(st.integers(1, 3))
            terms = []
            for _ in range(count):
                if op in (LineFilterOp.CONTAINS, LineFilterOp.NOT_CONTAINS) and draw(st.integers(0, 4)) == 0:
                    terms.append(LineFilterTerm(draw(ip_patterns), is_ip=True))
                elif op in (LineFilterOp.MATCH, LineFilterOp.NOT_MATCH):
                    terms.append(LineFilterTerm(draw(regexes)))
                elif op in (LineFilterOp.PATTERN, LineFilterOp.NOT_PATTERN):
                    terms.append(LineFilterTerm(draw(line_patterns())))
                else:
                    terms.append(LineFilterTerm(draw(self.values)))
            return LineFilter(op, tuple(terms))

        return build()

    def label_filters(self) -> st.SearchStrategy[LabelFilter]:
        """Label filters of every type, nested with and/or."""
        leaves = st.one_of(
            st.builds(StringLabelFilter, self.matchers()),
            st.builds(NumericLabelFilter, self.names, compare_ops, finite_floats),
            st.builds(DurationLabelFilter, self.names, compare_ops, go_durations),
            st.builds(BytesLabelFilter, self.names, compare_ops, self.bytes_sizes),
            st.builds(IpLabelFilter, self.names, st.sampled_from([CompareOp.EQ, CompareOp.NEQ]), ip_patterns),
        )
        return st.recursive(leaves, lambda kids: st.builds(BinaryLabelFilter, kids, kids, st.booleans()), max_leaves=4)

    def extractions(self, expressions: st.SearchStrategy[str] | None) -> st.SearchStrategy[tuple[LabelExtraction, ...]]:
        """The `name="expression"` list of json or logfmt (a bare name means itself); any text by default."""
        if expressions is None:
            expressions = st.one_of(self.values, st.sampled_from(["a.b[0]", 'x["y"]']))
        item = st.one_of(
            self.names.map(lambda n: LabelExtraction(n, n)), st.builds(LabelExtraction, self.names, expressions)
        )
        return st.lists(item, max_size=3).map(tuple)

    def label_format(self) -> st.SearchStrategy[LabelFormat]:
        """`label_format` with distinct destinations (Loki refuses a name twice), renames and templates."""

        @st.composite
        def build(draw: st.DrawFn) -> LabelFormat:
            names = draw(st.lists(self.names.filter(lambda n: n != "__error__"), min_size=1, max_size=3, unique=True))
            items = []
            for name in names:
                if draw(st.booleans()):
                    items.append(LabelFormatItem(name, draw(self.names), rename=True))
                else:
                    items.append(LabelFormatItem(name, draw(templates), rename=False))
            return LabelFormat(tuple(items))

        return build()

    def label_selections(self) -> st.SearchStrategy[tuple[LabelSelection, ...]]:
        """The list of drop and keep: names, or matchers that also select by value."""
        by_name = self.names.map(LabelSelection)
        by_matcher = self.matchers().map(lambda m: LabelSelection(m.name, m))
        return st.lists(st.one_of(by_name, by_matcher), min_size=1, max_size=3).map(tuple)

    def stages(self) -> st.SearchStrategy[Stage]:
        """Any pipeline stage."""
        return st.one_of(
            self.line_filter(),
            st.builds(LabelFilterStage, self.label_filters()),
            st.builds(JsonParser, self.extractions(self.json_paths)),
            st.builds(LogfmtParser, st.booleans(), st.booleans(), self.extractions(self.logfmt_keys)),
            st.builds(RegexpParser, capture_regexes(self.names)),
            st.builds(PatternParser, parser_patterns(self.names)),
            st.just(UnpackParser()),
            st.builds(LineFormat, templates),
            self.label_format(),
            st.just(Decolorize()),
            st.builds(DropLabels, self.label_selections()),
            st.builds(KeepLabels, self.label_selections()),
        )

    def log_selectors(self, max_stages: int = 5) -> st.SearchStrategy[LogSelectorExpr]:
        """A stream selector, alone or with a pipeline."""

        def build(selector: MatchersExpr, stages: list[Stage]) -> LogSelectorExpr:
            for i, (stage, after) in enumerate(itertools.pairwise(stages)):
                if isinstance(stage, DropLabels | KeepLabels) and _swallows_next_filter(stage, after):
                    # Loki reads `| drop a != "x"` as a matcher of drop, so it prints no such pipeline.
                    name = stage.labels[-1].name
                    last = LabelSelection(name, LabelMatcher(name, MatchOp.EQ, ""))
                    stages[i] = type(stage)((*stage.labels[:-1], last))
            return PipelineExpr(selector, tuple(stages)) if stages else selector

        return st.builds(build, self.selector(), st.lists(self.stages(), max_size=max_stages))

    # -- metric queries

    def groupings(self) -> st.SearchStrategy[Grouping]:
        """`by (...)` or `without (...)`; Loki's pretty printer drops or breaks empty ones."""
        labels = st.lists(self.names, min_size=1 if self.pretty_safe else 0, max_size=3).map(tuple)
        return st.builds(Grouping, labels, st.booleans())

    def range_aggregation(self) -> st.SearchStrategy[RangeAggregation]:
        """`op([param,] selector | pipeline [| unwrap ...] [range] [offset d]) [grouping]`."""

        @st.composite
        def build(draw: st.DrawFn) -> RangeAggregation:
            operation = draw(st.sampled_from(sorted(UNWRAP_ONLY | UNWRAP_OPTIONAL | NO_UNWRAP)))
            unwrap = None
            if operation in UNWRAP_ONLY or (operation in UNWRAP_OPTIONAL and draw(st.booleans())):
                conversion = draw(st.sampled_from(["", "bytes", "duration", "duration_seconds"]))
                post = draw(st.lists(self.label_filters(), max_size=2))
                unwrap = Unwrap(draw(self.names), conversion, tuple(post))
            log_range = LogRange(draw(self.log_selectors(max_stages=3)), draw(self.ranges), draw(self.offsets), unwrap)
            param = None
            if operation == "quantile_over_time":
                param = draw(st.one_of(st.floats(0, 1), st.sampled_from([0.99, 0.5, 0.0, 1.0, 2.0, 1e-6])))
            grouping = draw(st.none() | self.groupings()) if operation in RANGE_GROUPING else None
            return RangeAggregation(operation, log_range, param, grouping)

        return build()

    def vector_aggregation(self, inner: st.SearchStrategy[SampleExpr]) -> st.SearchStrategy[SampleExpr]:
        """`op [grouping] ([k,] expr)`: topk and friends need k > 0, sort and approx_topk take no labels."""

        @st.composite
        def build(draw: st.DrawFn) -> SampleExpr:
            operation = draw(st.sampled_from(VECTOR_OPS))
            param = draw(st.integers(1, 10_000)) if operation in K_OPS else 0
            grouping = Grouping()
            if operation == "approx_topk":
                pass
            elif operation in ("sort", "sort_desc"):
                if not self.pretty_safe and draw(st.booleans()):
                    grouping = Grouping((), without=True)
            elif draw(st.booleans()):
                grouping = draw(self.groupings())
            return VectorAggregation(operation, draw(inner), grouping, param)

        return build()

    def vector_matching(self) -> st.SearchStrategy[VectorMatching]:
        """`on|ignoring (...) [group_left|group_right (...)]`, or none.

        Loki prints `ignoring () group_left` as nothing at all, so the cardinality needs `on` or labels.
        """

        @st.composite
        def build(draw: st.DrawFn) -> VectorMatching:
            if draw(st.booleans()):
                return VectorMatching()
            on = draw(st.booleans())
            need_labels = self.pretty_safe or not on
            labels = tuple(draw(st.lists(self.names, min_size=1 if need_labels else 0, max_size=3)))
            card = draw(st.sampled_from(["one-to-one", "many-to-one", "one-to-many"]))
            include = tuple(draw(st.lists(self.names, max_size=2))) if card != "one-to-one" else ()
            return VectorMatching(card, on, labels, include)

        return build()

    def binary_operation(self, inner: st.SearchStrategy[SampleExpr]) -> st.SearchStrategy[BinOpExpr]:
        """`left op [bool] [matching] right`, never on two numbers (Loki folds those) nor a set op on a number."""

        @st.composite
        def build(draw: st.DrawFn) -> BinOpExpr:
            op = draw(st.sampled_from(BINARY_OPERATORS))
            left, right = draw(inner), draw(inner)
            if op in SET_OPERATORS and (isinstance(left, LiteralExpr) or isinstance(right, LiteralExpr)):
                op = "+"
            if isinstance(left, LiteralExpr) and isinstance(right, LiteralExpr):
                right = VectorExpr(0.0)
            return_bool = op in COMPARISON_OPERATORS and draw(st.booleans())
            matching = draw(self.vector_matching())
            if matching.card != "one-to-one" and not matching.include and isinstance(right, BinOpExpr):
                # Loki reads `group_left (` as the start of its label list, so it prints no such query.
                matching = replace(matching, include=(draw(self.names),))
            return BinOpExpr(op, left, right, return_bool, matching)

        return build()

    def label_replace(self, inner: st.SearchStrategy[SampleExpr]) -> st.SearchStrategy[LabelReplaceExpr]:
        """`label_replace(expr, "dst", "replacement", "src", "regex")`."""
        return st.builds(
            LabelReplaceExpr, inner, self.names, st.sampled_from(["$1", "", "x-${1}"]), self.names, regexes
        )

    def sample_exprs(self) -> st.SearchStrategy[SampleExpr]:
        """Any metric query: aggregations, binary operations, numbers, vector(), label_replace."""
        leaves = st.one_of(
            self.range_aggregation(), st.builds(LiteralExpr, finite_floats), st.builds(VectorExpr, vector_values)
        )

        def extend(inner: st.SearchStrategy[SampleExpr]) -> st.SearchStrategy[SampleExpr]:
            return st.one_of(self.vector_aggregation(inner), self.binary_operation(inner), self.label_replace(inner))

        return st.recursive(leaves, extend, max_leaves=4)

    def exprs(self) -> st.SearchStrategy[Expr]:
        """Any query: a log query or a metric query."""
        return st.one_of(self.log_selectors(), self.sample_exprs())


def _swallows_next_filter(stage: DropLabels | KeepLabels, after: Stage) -> bool:
    """Say whether `stage` ends in a bare label name that would take the `!=`/`!~` filter after it as its matcher."""
    last_is_bare = stage.labels[-1].matcher is None
    return (
        last_is_bare
        and isinstance(after, LineFilter)
        and after.op in (LineFilterOp.NOT_CONTAINS, LineFilterOp.NOT_MATCH)
    )


# vector() prints six decimals, so only values with at most six read back exactly.
vector_values = st.integers(0, 10**12).map(lambda micros: float(f"{micros // 10**6}.{micros % 10**6:06d}"))


@st.composite
def capture_regexes(draw: st.DrawFn, names: st.SearchStrategy[str]) -> str:
    """A `| regexp` pattern: distinct named groups between literal text."""
    out = []
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        out.append(_re_escape(draw(_re_literals)))
        body = draw(st.sampled_from(["\\w+", ".*", "[0-9]+", "a|b", "\\S+", ""]))
        out.append(f"(?P<{name}>{body})")
    out.append(_re_escape(draw(_re_literals)))
    return "".join(out)


_PATTERN_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="<>"), min_size=1, max_size=4
)


@st.composite
def parser_patterns(draw: st.DrawFn, names: st.SearchStrategy[str]) -> str:
    """A `| pattern` expression: distinct named captures and `<_>`, never two captures side by side."""
    captures = draw(st.lists(names.filter(_free_name), min_size=1, max_size=3, unique=True))
    captures += ["_"] * draw(st.integers(0, 2))
    out = draw(st.sampled_from(["", "x "]))
    for i, capture in enumerate(draw(st.permutations(captures))):
        if i:
            out += draw(_PATTERN_TEXT)
        out += f"<{capture}>"
    return out + draw(st.sampled_from(["", " end"]))


@st.composite
def line_patterns(draw: st.DrawFn) -> str:
    """A `|>` filter pattern: literal text and `<_>` only (named captures are not allowed there)."""
    parts = draw(st.lists(_PATTERN_TEXT, max_size=3))
    if not parts:
        return draw(st.sampled_from(["", "<_>"]))
    return "<_>".join(parts) if draw(st.booleans()) else "<_>" + "<_>".join(parts) + "<_>"


FULL = Grammar()
SAFE = Grammar(
    offsets=st.one_of(st.just(0), st.integers(1, 10**9).map(lambda ms: ms * MS)),
    pretty_safe=True,
)
widths = st.one_of(st.sampled_from([0, 1, 40, 100]), st.integers(0, 160))


def _split_binop_operands(expr: Expr, width: int) -> list[str]:
    """Binary operations that pretty() prints without their parentheses (nested and longer than `width`).

    Loki's format_query does the same, so such output may parse with a different precedence.
    """
    found: list[str] = []
    stack: list[Any] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, BinOpExpr):
            for side in (node.left, node.right):
                if isinstance(side, BinOpExpr) and len(str(node)) > width and len(str(side)) > width:
                    found.append(str(side))
            stack.extend((node.left, node.right))
        elif isinstance(node, VectorAggregation | LabelReplaceExpr):
            stack.append(node.expr)
    return found


# -- 1. round trips ------------------------------------------------------------------------------------


@ROUND_TRIP
@given(FULL.exprs())
def test_canonical_text_parses_back_to_the_same_tree(expr: Expr) -> None:
    text = str(expr)
    assert parse(text) == expr, text


@ROUND_TRIP
@given(SAFE.exprs(), widths)
def test_pretty_text_parses_back_to_the_same_tree(expr: Expr, width: int) -> None:
    text = pretty(expr, width)
    reread = parse(text)
    if _split_binop_operands(expr, width):
        event("nested binary operation printed without parentheses")
        return
    assert reread == expr, text
    assert pretty(reread, width) == text


@ROUND_TRIP
@given(Grammar(bytes_sizes=any_byte_sizes).exprs())
def test_canonical_printing_is_idempotent(expr: Expr) -> None:
    # Byte sizes print rounded here (any size, not only exact ones): one round trip normalises them.
    once = str(parse(str(expr)))
    assert str(parse(once)) == once


@ROUND_TRIP
@given(FULL.exprs())
def test_pretty_printing_splits_exactly_the_expressions_longer_than_the_width(expr: Expr) -> None:
    text = str(expr)
    assert pretty(expr, len(text)) == text
    splittable = PipelineExpr | RangeAggregation | VectorAggregation | BinOpExpr | LabelReplaceExpr
    assert ("\n" in pretty(expr, len(text) - 1)) == isinstance(expr, splittable)


@pytest.mark.parametrize(
    ("query", "printed"),
    [
        # `without ()` prints as a bare `without`, which does not parse.
        ('sum without () (rate({a="b"}[1m]))', 'sum without(\n  rate(\n    {a="b"} [1m]\n  )\n)'),
        # A range aggregation's `by ()` disappears (and with it the grouping).
        ('max_over_time({a="b"} | unwrap x [1m]) by ()', 'max_over_time(\n  {a="b"}\n    | unwrap x [1m]\n)'),
        # `on ()` and its group_left disappear.
        (
            'rate({a="b"}[1m]) + on () group_left rate({a="b"}[1m])',
            '  rate(\n    {a="b"} [1m]\n  )\n+\n  rate(\n    {a="b"} [1m]\n  )',
        ),
        # Offsets print in milliseconds, and a negative one as nothing.
        ('rate({a="b"}[1m] offset -5m)', 'rate(\n  {a="b"} [1m] offset \n)'),
        # A split line filter keeps only its first `or` alternative.
        ('{a="b"} |= "x" or "y" |= "z"', '{a="b"}\n  |= "x"\n  |= "z"'),
        # Nested binary operations lose their parentheses.
        (
            '(rate({a="b"}[1m]) + rate({a="b"}[1m])) * 2',
            '    rate(\n      {a="b"} [1m]\n    )\n  +\n    rate(\n      {a="b"} [1m]\n    )\n*\n  2',
        ),
    ],
)
def test_pretty_printing_loses_what_lokis_format_query_loses(query: str, printed: str) -> None:
    # Not bugs to fix here: format_query must answer what Loki answers (pkg/logql/syntax/prettier.go).
    assert pretty(parse(query), width=0) == printed


@pytest.mark.parametrize(
    ("tree", "printed", "reread"),
    [
        # After a bare label name of drop/keep, `!=` and `!~` continue a matcher, not a new line filter.
        (
            PipelineExpr(
                MatchersExpr((LabelMatcher("a", MatchOp.EQ, "b"),)),
                (DropLabels((LabelSelection("x"),)), LineFilter(LineFilterOp.NOT_CONTAINS, (LineFilterTerm("y"),))),
            ),
            '{a="b"} | drop x != "y"',
            '{a="b"} | drop x!="y"',
        ),
        # After group_left/group_right, `(` opens the label list, not a parenthesised operand.
        (
            BinOpExpr(
                "+",
                parse('rate({a="b"}[1m])'),  # type: ignore[arg-type]
                parse('rate({a="b"}[1m]) * 2'),  # type: ignore[arg-type]
                matching=VectorMatching("many-to-one", on=True, labels=("a",)),
            ),
            '(rate({a="b"}[1m]) + on (a) group_left (rate({a="b"}[1m]) * 2))',
            None,
        ),
    ],
)
def test_canonical_text_is_ambiguous_where_lokis_is(tree: Expr, printed: str, reread: str | None) -> None:
    # Loki's printer writes the same text and its grammar reads it the same way (syntax.y): not ours to fix.
    assert str(tree) == printed
    if reread is None:
        with pytest.raises(ParseError, match="expecting IDENTIFIER or \\)"):
            parse(printed)
    else:
        assert str(parse(printed)) == reread


def test_negative_zero_prints_as_in_loki() -> None:
    # Loki prints -0 as `-0`, and its lexer reads `-0` as a zero duration: the text is no number any more.
    assert str(parse("-0.0")) == "-0"
    with pytest.raises(ParseError, match="unexpected DURATION"):
        parse("-0")
    expr = parse('{a="b"} | x > -0.0')
    assert str(expr) == '{a="b"} | x>-0'
    reread = parse(str(expr))
    assert isinstance(reread, PipelineExpr)
    assert reread.stages[0] == LabelFilterStage(DurationLabelFilter("x", CompareOp.GT, 0))


# -- alternative spellings ---------------------------------------------------------------------------------

_ws = st.sampled_from(["", " ", "  ", "\t", "\n", " # note\n"])
_ws1 = st.sampled_from([" ", "\n", "\t ", " # note\n"])
# Between a function name and its `(` only blanks: Loki decides it is a call by looking past spaces only.
_blanks = st.sampled_from(["", " ", "\n", "\t "])


def _spell_string(draw: st.DrawFn, value: str) -> str:
    """A string literal: quoted, or raw between backticks when the value allows it."""
    if "`" not in value and draw(st.booleans()):
        return f"`{value}`"
    return quote(value)


def _spell_word(draw: st.DrawFn, word: str) -> str:
    """A keyword in any letter case (the lexer lowers them)."""
    return draw(st.sampled_from([word, word.upper(), word.capitalize()]))


@st.composite
def spelled_log_queries(draw: st.DrawFn) -> tuple[str, LogSelectorExpr]:
    """A log query written in one of its many accepted forms, and the tree it stands for."""
    matchers = draw(st.lists(FULL.matchers(), max_size=2))
    matchers.insert(draw(st.integers(0, len(matchers))), LabelMatcher("app", MatchOp.EQ, "web"))
    text = "{" + draw(_ws)
    for i, m in enumerate(matchers):
        if i:
            text += draw(_ws) + "," + draw(_ws)
        text += m.name + draw(_ws) + m.op.value + draw(_ws) + _spell_string(draw, m.value)
    text += draw(_ws) + "}"
    stages: list[Stage] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["filter", "json", "logfmt", "label", "label2"]))
        text += draw(_ws)
        if kind == "filter":
            f = draw(FULL.line_filter())
            spelled = []
            for term in f.terms:
                if term.is_ip:
                    spelled.append(_spell_word(draw, "ip") + draw(_blanks) + "(" + draw(_ws) + quote(term.value) + ")")
                else:
                    spelled.append(_spell_string(draw, term.value))
            # A negative filter with alternatives stands for one filter per value.
            extra = draw(st.lists(texts, max_size=2)) if f.op.negated and f.op == LineFilterOp.NOT_CONTAINS else []
            spelled += [_spell_string(draw, v) for v in extra]
            sep = draw(_ws) + _spell_word(draw, "or") + draw(_ws1)
            text += f.op.value + draw(_ws) + sep.join(spelled)
            stages.append(f)
            stages.extend(LineFilter(f.op, (LineFilterTerm(v),)) for v in extra)
        elif kind == "json":
            extractions = draw(FULL.extractions(None))
            items = [
                e.name
                if e.name == e.expression and draw(st.booleans())
                else e.name + draw(_ws) + "=" + draw(_ws) + _spell_string(draw, e.expression)
                for e in extractions
            ]
            text += "|" + draw(_ws) + _spell_word(draw, "json")
            if items:
                text += draw(_ws1) + (draw(_ws) + "," + draw(_ws)).join(items)
            stages.append(JsonParser(extractions))
        elif kind == "logfmt":
            flags = draw(st.lists(st.sampled_from(["--strict", "--keep-empty"]), unique=True))
            text += "|" + draw(_ws) + _spell_word(draw, "logfmt") + "".join(draw(_ws1) + flag for flag in flags)
            stages.append(LogfmtParser("--strict" in flags, "--keep-empty" in flags))
        else:
            name = draw(label_names)
            value = draw(finite_floats.filter(lambda v: v >= 0 and v == float(repr(v))))
            op = draw(st.sampled_from(["=", "=="]))
            first = NumericLabelFilter(name, CompareOp.EQ, value)
            text += "|" + draw(_ws) + name + draw(_ws) + op + draw(_ws) + repr(value)
            if kind == "label":
                stages.append(LabelFilterStage(first))
            else:
                second = StringLabelFilter(draw(FULL.matchers()))
                joiner = draw(st.sampled_from([" and ", " AND ", ",", " ", " or ", "\nor\n"]))
                text += joiner + second.matcher.name + draw(_ws) + second.matcher.op.value + draw(_ws)
                text += _spell_string(draw, second.matcher.value)
                is_and = joiner.strip().lower() != "or"
                stages.append(LabelFilterStage(BinaryLabelFilter(first, second, is_and)))
    selector = MatchersExpr(tuple(matchers))
    return text, PipelineExpr(selector, tuple(stages)) if stages else selector


@ROUND_TRIP
@given(spelled_log_queries())
@example(
    (
        '{app=`web`} |~ `\\d+` or `x` != `a` or "b"',
        PipelineExpr(
            MatchersExpr((LabelMatcher("app", MatchOp.EQ, "web"),)),
            (
                LineFilter(LineFilterOp.MATCH, (LineFilterTerm("\\d+"), LineFilterTerm("x"))),
                LineFilter(LineFilterOp.NOT_CONTAINS, (LineFilterTerm("a"),)),
                LineFilter(LineFilterOp.NOT_CONTAINS, (LineFilterTerm("b"),)),
            ),
        ),
    )
)
def test_every_spelling_of_a_log_query_parses_to_its_tree(case: tuple[str, LogSelectorExpr]) -> None:
    text, expected = case
    assert parse(text) == expected, text


@st.composite
def spelled_metric_queries(draw: st.DrawFn) -> tuple[str, SampleExpr]:
    """A metric query in one of its accepted forms (range before or after the pipeline, grouping first or
    last, keywords in any case), and its tree."""
    selector = MatchersExpr((LabelMatcher("app", MatchOp.EQ, "web"),))
    stage = draw(st.sampled_from([None, LineFilter(LineFilterOp.CONTAINS, (LineFilterTerm("x"),)), JsonParser()]))
    stage_text = "" if stage is None else "| json" if isinstance(stage, JsonParser) else '|= "x"'
    range_ns, range_text = draw(st.sampled_from([(5 * MIN, "5m"), (90 * S, "1m30s"), (7 * 24 * H, "1w"), (MS, "1ms")]))
    offset_ns, offset_text = draw(st.sampled_from([(0, ""), (H, " offset 1h"), (90 * S, " OFFSET 1m30s")]))
    operation = draw(st.sampled_from(["count_over_time", "rate", "bytes_rate"]))
    if stage is not None and draw(st.booleans()):
        inner = f'{{app="web"}}{draw(_ws)}[{range_text}]{offset_text} {stage_text}'
    else:
        inner = f'{{app="web"}} {stage_text}{draw(_ws)}[{range_text}]{offset_text}'
    log_selector: LogSelectorExpr = PipelineExpr(selector, (stage,)) if stage is not None else selector
    tree: SampleExpr = RangeAggregation(operation, LogRange(log_selector, range_ns, offset_ns))
    text = _spell_word(draw, operation) + draw(_blanks) + "(" + draw(_ws) + inner + draw(_ws) + ")"
    if draw(st.booleans()):
        labels = tuple(draw(st.lists(st.sampled_from(["a", "b", "rate", "count"]), min_size=1, max_size=2)))
        by = (
            _spell_word(draw, "by") + draw(_blanks) + "(" + draw(_ws) + (draw(_ws) + "," + draw(_ws)).join(labels) + ")"
        )
        word = _spell_word(draw, "sum")
        text = f"{word} {by} ({text})" if draw(st.booleans()) else f"{word}({text}) {by}"
        tree = VectorAggregation("sum", tree, Grouping(labels))
    return text, tree


@ROUND_TRIP
@given(spelled_metric_queries())
def test_every_spelling_of_a_metric_query_parses_to_its_tree(case: tuple[str, SampleExpr]) -> None:
    text, expected = case
    assert parse(text) == expected, text


# -- 2. fuzzing the parser ------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    if not CASES.exists():
        return []
    queries = []
    for line in CASES.read_text().splitlines():
        if line.strip():
            query = json.loads(line)["params"].get("query")
            if query is not None:
                queries.append(query)
    return sorted(set(queries))


CORPUS = _corpus() or ['sum by (a) (rate({app="x"} |= "e" | json | unwrap b [5m]))']

_TOKEN = re.compile(
    r'"(?:\\.|[^"\\\n])*"?|`[^`]*`?|\[[^\]]*\]?|[A-Za-z_][A-Za-z0-9_]*|[0-9][0-9A-Za-z.]*|\s+|'
    r"[|!=~<>]=?|.",
    re.S,
)
# Tokens and near-tokens to insert: keywords, operators, odd numbers, durations and sizes, broken strings.
_VOCABULARY = "{ } ( ) [5m] [ ] , | |= != |~ !~ |> !> = =~ == > >= < <= + - * / % ^ json logfmt --strict".split()
_VOCABULARY += [
    f" {word} " for word in "or and unless by without on ignoring group_left group_right bool offset".split()
]
_VOCABULARY += "--keep-empty regexp pattern unpack line_format label_format decolorize drop keep unwrap".split()
_VOCABULARY += "bytes( duration( duration_seconds( ip( vector( label_replace( sum topk sort approx_topk rate(".split()
_VOCABULARY += "count_over_time( quantile_over_time( absent_over_time( variants( of".split()
_VOCABULARY += "5 -1 0.5 1e309 0x1p-2 0b 0o7 1_000 5m -5m 1h30m 1KiB 1.5GB 0B 1PB NaN Inf -0".split()
_VOCABULARY += ['"x"', "`y`", '"', "`", "'", "'a'", "#", "/*", "*/", "//", "\\", "\n", " ", "é", "\x00", "\ufeff", "a"]
_VOCABULARY += ["__error__", "(?P<x>.*)", '"(?P<x>"', "<_>", '"<a><b>"', "{{.x}}", '"[z-a]"', '"(?i"', '"\\xZZ"']
_VOCABULARY += ["9" * 30]
_vocabulary = st.sampled_from(_VOCABULARY)
_MUTATIONS = (
    "del_char ins_char swap_chars del_token ins_token swap_tokens dup_token replace_token truncate splice".split()
)


@st.composite
def mutated_queries(draw: st.DrawFn) -> str:
    """A corpus query with a few characters or tokens deleted, inserted, swapped or replaced, or spliced."""
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 4))):
        tokens = _TOKEN.findall(text) or [""]
        i = draw(st.integers(0, len(tokens) - 1))
        j = draw(st.integers(0, len(tokens) - 1))
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(_MUTATIONS))
        if kind == "del_char":
            text = text[:pos] + text[pos + 1 :]
        elif kind == "ins_char":
            text = text[:pos] + draw(st.characters(exclude_categories=("Cs",))) + text[pos:]
        elif kind == "swap_chars" and pos + 1 < len(text):
            text = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
        elif kind == "del_token":
            text = "".join(tokens[:i] + tokens[i + 1 :])
        elif kind == "ins_token":
            text = "".join([*tokens[:i], draw(_vocabulary), *tokens[i:]])
        elif kind == "swap_tokens":
            tokens[i], tokens[j] = tokens[j], tokens[i]
            text = "".join(tokens)
        elif kind == "dup_token":
            text = "".join([*tokens[: i + 1], tokens[i], *tokens[i + 1 :]])
        elif kind == "replace_token":
            tokens[i] = draw(_vocabulary)
            text = "".join(tokens)
        elif kind == "truncate":
            text = text[:pos]
        elif kind == "splice":
            other = draw(st.sampled_from(CORPUS))
            text = text[:pos] + other[draw(st.integers(0, len(other))) :]
    return text


random_queries = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(_vocabulary, st.text(max_size=3)), max_size=30).map("".join),
)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the body once `seconds` have passed (an outer alarm is put back afterwards)."""

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"took longer than {seconds}s")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            remaining = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


def check_parses_or_fails_cleanly(query: str) -> None:
    """Assert that `query` parses or raises ParseError, in time, and that a parsed tree prints stably."""
    with time_limit(PARSE_TIME_LIMIT_S):
        try:
            expr = parse(query)
        except ParseError:
            return
        printed = str(expr)
        pretty(expr)
        pretty(expr, 0)
        try:
            reread = parse(printed)
        except ParseError:
            # Loki prints some trees as text it cannot read (NaN, -0, non-ASCII label names, `0B`).
            event("printed form does not parse")
            return
        assert str(reread) == printed, printed


@FUZZ
@given(mutated_queries())
@example("")
@example('{app="x"} | pattern "<a><b>"')
@example('sum(rate({app="x"}[5m])) by (')
def test_mangled_real_queries_parse_or_fail_with_parse_error(query: str) -> None:
    check_parses_or_fails_cleanly(query)


@FUZZ
@given(random_queries)
def test_random_text_parses_or_fails_with_parse_error(query: str) -> None:
    check_parses_or_fails_cleanly(query)


_RATE = 'count_over_time({app="x"}[1m])'
NESTINGS: dict[str, Callable[[int], str]] = {
    "parentheses": lambda n: "(" * n + _RATE + ")" * n,
    "aggregations": lambda n: "sum(" * n + _RATE + ")" * n,
    "label_replace": lambda n: "label_replace(" * n + _RATE + ',"a","b","c","d")' * n,
    "arithmetic": lambda n: _RATE + " + 1" * n,
    "powers": lambda n: _RATE + (" ^ " + _RATE) * n,
    "or label filters": lambda n: '{app="x"} | ' + " or ".join(f'a="{i}"' for i in range(n)),
    "comma label filters": lambda n: '{app="x"} | ' + ", ".join(f'a="{i}"' for i in range(n)),
    "parenthesised label filters": lambda n: '{app="x"} | ' + "(" * n + 'a="1"' + ")" * n,
    "line filters": lambda n: '{app="x"}' + ' |= "a" or "b"' * n,
    "stages": lambda n: '{app="x"}' + " | json" * n,
}


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(sorted(NESTINGS)), st.integers(1, 3000))
@example("aggregations", MAX_DEPTH)
@example("parentheses", 5000)
@example("or label filters", 1500)
@example("line filters", 5000)
def test_deep_and_long_queries_parse_or_fail_with_parse_error(shape: str, size: int) -> None:
    # Regression: these raised RecursionError (a 500) in the parser, printer and engine.
    check_parses_or_fails_cleanly(NESTINGS[shape](size))


def test_queries_nesting_deeper_than_the_limit_fail_with_a_message() -> None:
    assert str(parse(NESTINGS["or label filters"](200))).count(" or ") == 199
    for shape in ("parentheses", "aggregations", "or label filters", "comma label filters"):
        with pytest.raises(ParseError, match="query nests too deeply: at most 256 levels"):
            parse(NESTINGS[shape](1000))


# -- 3. the query API ---------------------------------------------------------------------------------------------

T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
LEVELS = ["info", "warn", "error", "debug"]


def _json_line(i: int) -> str:
    if i % 17 == 0:
        return '{"level": "info", "msg": "truncated'
    body = {
        "level": LEVELS[i % 4],
        "status": 200 + (i % 4) * 100,
        "msg": f"GET /api/{i}",
        "latency": f"{i}ms",
        "size": f"{i}kB",
        "ip": f"10.0.{i % 3}.{i}",
        "nested": {"a": [i, {"b": "c"}]},
    }
    return json.dumps(body)


def _logfmt_line(i: int) -> str:
    return (
        f'level={LEVELS[i % 4]} status={200 + (i % 4) * 100} msg="handled request {i}" latency={i * 7}ms '
        f"size={i}MB ip=192.168.{i % 5}.{i} method={'GET' if i % 2 else 'POST'}"
    )


def _plain_line(i: int) -> str:
    colour = "\x1b[31m" if i % 3 == 0 else ""
    return f"{colour}GET /users/{i} {200 + (i % 4) * 100} {i}ms from 172.16.0.{i}\x1b[0m ünïcode 💥"


LINES: dict[str, Callable[[int], str]] = {
    "json": _json_line,
    "logfmt": _logfmt_line,
    "plain": _plain_line,
    "empty": lambda i: "",
}
SERVER_NAMES = "app env level status msg latency size ip method __error__ nested_a nope".split()
SERVER_VALUES = ["json", "logfmt", "plain", "empty", "prod", "dev", "info", "error", "200", "500", "GET", "", "x"]
QUERY_START, QUERY_END = T0 - 10 * MIN, T0 + 10 * MIN
INSTANT_TIMES = [T0 + 150 * S, QUERY_END]
"""Instant queries run inside the data (which spans T0 to T0 + 200s) and after it, where windows are empty."""

SERVER_GRAMMAR = Grammar(
    names=st.sampled_from(SERVER_NAMES),
    values=st.one_of(st.sampled_from(SERVER_VALUES), texts),
    ranges=st.sampled_from([S, 30 * S, MIN, 5 * MIN, H]),
    offsets=st.sampled_from([0, 0, 0, MIN, -MIN, 5 * MIN]),
    bytes_sizes=st.sampled_from([5, 1000, 20_000_000]),
    json_paths=st.one_of(st.sampled_from(["level", "status", "msg", "nested.a[0]", 'nested["a"][1].b', "nope"]), texts),
    logfmt_keys=st.one_of(
        st.sampled_from(["level", "status", "msg", "latency", "size", "ip", "method", "nope"]), texts
    ),
    anchors=st.sampled_from(
        [
            LabelMatcher("app", MatchOp.RE, ".+"),
            LabelMatcher("app", MatchOp.EQ, "json"),
            LabelMatcher("app", MatchOp.EQ, "logfmt"),
            LabelMatcher("app", MatchOp.RE, "plain|empty"),
            LabelMatcher("env", MatchOp.EQ, "prod"),
        ]
    ),
)


@dataclass
class Loaded:
    """A server holding the mixed test lines."""

    server: LoglakeServer
    client: httpx.Client


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """A server with 200 lines (json, logfmt, plain and empty, over four streams and two environments)."""
    server = LoglakeServer(
        tmp_path_factory.mktemp("properties") / "data",
        {"limits_config": {"reject_old_samples": False, "query_timeout": "3s"}},
    )
    try:
        server.start()
        streams = []
        for k, (app, make_line) in enumerate(LINES.items()):
            for env in ("prod", "dev"):
                entries = [(T0 + (i * 8 + k) * S, make_line(i)) for i in range(25)]
                streams.append(stream({"app": app, "env": env}, entries))
        with server.client() as c:
            r = push_json(c, streams)
            assert r.status_code == 204, r.text
            yield Loaded(server, c)
    finally:
        server.stop()


def _ask(loaded: Loaded, path: str, query: str, at: int = QUERY_END) -> httpx.Response:
    """Send `query` to `path` (at `at` if instant), failing on a 500, an unexpected status, or a slow answer."""
    params: dict[str, Any] = {"query": query, "limit": "50"}
    if path.endswith("query_range"):
        params |= {"start": str(QUERY_START), "end": str(QUERY_END), "step": "30s"}
    else:
        params |= {"time": str(at)}
    started = time.monotonic()
    try:
        r = loaded.client.get(path, params=params, timeout=REQUEST_TIME_LIMIT_S + 5)
    except httpx.TimeoutException:
        pytest.fail(f"{path} did not answer {query!r} in {REQUEST_TIME_LIMIT_S + 5}s")
    elapsed = time.monotonic() - started
    log_tail = loaded.server.log()[-3000:]
    assert r.status_code != 500, f"{path} {query!r} -> 500 {r.text}\nserver log:\n{log_tail}"
    assert r.status_code in (200, 400, 504), f"{path} {query!r} -> {r.status_code} {r.text}"
    assert elapsed < REQUEST_TIME_LIMIT_S, f"{path} {query!r} took {elapsed:.1f}s"
    if r.status_code == 200:
        assert r.json()["status"] == "success"
    if currently_in_test_context():
        event(f"{path} {r.status_code}")
    return r


def test_the_loaded_data_is_queryable(loaded: Loaded) -> None:
    r = _ask(loaded, "/loki/api/v1/query_range", '{app=~".+"}')
    assert r.status_code == 200
    r = _ask(loaded, "/loki/api/v1/query_range", 'sum by (app) (count_over_time({app=~".+"}[1h]))')
    assert r.status_code == 200 and r.json()["data"]["result"]


@SERVER
@given(SERVER_GRAMMAR.exprs())
def test_generated_queries_never_fail_the_range_api(loaded: Loaded, expr: Expr) -> None:
    _ask(loaded, "/loki/api/v1/query_range", str(expr))


@SERVER
@given(SERVER_GRAMMAR.sample_exprs(), st.sampled_from(INSTANT_TIMES))
def test_generated_metric_queries_never_fail_the_instant_api(loaded: Loaded, expr: SampleExpr, at: int) -> None:
    _ask(loaded, "/loki/api/v1/query", str(expr), at)


@SERVER
@given(mutated_queries(), st.sampled_from(["/loki/api/v1/query_range", "/loki/api/v1/query"]))
def test_mangled_queries_never_fail_the_api(loaded: Loaded, query: str, path: str) -> None:
    _ask(loaded, path, query)


@pytest.mark.parametrize(
    "query",
    ['{app="json"} | json x="GET /api"', '{app="logfmt"} | logfmt x="a.b[0]"', '{app="logfmt"} | logfmt x="\\\\d+"'],
)
def test_invalid_extraction_expressions_are_rejected_as_loki_does(loaded: Loaded, query: str) -> None:
    # Regression: the engine raised ValueError (a 500) on these; Loki fails building the stage (a 400).
    r = _ask(loaded, "/loki/api/v1/query_range", query)
    assert r.status_code == 400
    assert r.text.startswith("parse error : stage '"), r.text


@pytest.mark.parametrize("op", ["and", "unless"])
def test_set_operation_results_take_arithmetic_in_instant_queries(loaded: Loaded, op: str) -> None:
    # Regression: an empty `and`/`unless` result lost its bool mask, and `* 2` then raised TypeError (a 500).
    query = f'(rate({{app="json"}}[1m]) {op} rate({{app="json"}}[1m])) * 2'
    assert _ask(loaded, "/loki/api/v1/query", query).status_code == 200
