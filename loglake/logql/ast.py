"""The LogQL syntax tree. `str(node)` is Loki's canonical text; `node.pretty()` is format_query's."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from loglake.logql.printer import (
    MAX_CHARS_PER_LINE,
    format_float_f,
    format_float_fixed6,
    format_float_v,
    format_matcher,
    go_duration,
    humanize_bytes,
    indent,
    prometheus_duration,
    quote,
)
from loglake.model import LabelMatcher, MatchOp

# -- base classes -------------------------------------------------------------------------------


class Expr:
    """Any LogQL expression."""

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the expression as format_query prints it, split over lines past `width` characters."""
        return indent(level) + str(self)


class LogSelectorExpr(Expr):
    """An expression that selects log lines: a stream selector, optionally with a pipeline.

    Both kinds have `matchers` (the stream selector's) and `stages` (the pipeline, maybe empty).
    """

    matchers: tuple[LabelMatcher, ...]
    stages: tuple[Stage, ...]


class SampleExpr(Expr):
    """An expression that yields samples (a metric query)."""


class Stage(Expr):
    """One stage of a log pipeline."""


class LabelFilter:
    """A predicate over labels (the body of a `| name op value` stage)."""


def _need_split(expr: Expr | str, width: int) -> bool:
    return len(str(expr)) > width


# -- enums --------------------------------------------------------------------------------------


class LineFilterOp(StrEnum):
    """A line filter's operator."""

    CONTAINS = "|="
    NOT_CONTAINS = "!="
    MATCH = "|~"
    NOT_MATCH = "!~"
    PATTERN = "|>"
    NOT_PATTERN = "!>"

    @property
    def negated(self) -> bool:
        """Say whether the filter keeps lines that do not match."""
        return self in (LineFilterOp.NOT_CONTAINS, LineFilterOp.NOT_MATCH, LineFilterOp.NOT_PATTERN)


class CompareOp(StrEnum):
    """A comparison of a numeric, duration or bytes label filter."""

    EQ = "=="
    NEQ = "!="
    GT = ">"
    GTE = ">="
    LT = "<"
    LTE = "<="


# -- stream selector and pipeline ------------------------------------------------------------------


@dataclass(frozen=True)
class MatchersExpr(LogSelectorExpr):
    """A stream selector: `{name="value", ...}`."""

    matchers: tuple[LabelMatcher, ...]
    stages: tuple[Stage, ...] = ()

    def __str__(self) -> str:
        return "{" + ", ".join(format_matcher(m) for m in self.matchers) + "}"


@dataclass(frozen=True)
class PipelineExpr(LogSelectorExpr):
    """A stream selector followed by pipeline stages."""

    selector: MatchersExpr
    stages: tuple[Stage, ...]

    @property
    def matchers(self) -> tuple[LabelMatcher, ...]:  # type: ignore[override]
        """The stream selector's matchers."""
        return self.selector.matchers

    def __str__(self) -> str:
        return str(self.selector) + " " + " ".join(str(s) for s in self.stages)

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the pipeline as format_query prints it: one stage per line when long."""
        if not _need_split(self, width):
            return indent(level) + str(self)
        lines = [self.selector.pretty(level, width)]
        lines.extend(_pretty_stage_group(group, level + 1, width) for group in _stage_groups(self.stages))
        return "\n".join(lines)


def _stage_groups(stages: tuple[Stage, ...]) -> list[list[Stage]]:
    """Group consecutive line filters into one item, as Loki's syntax tree holds them."""
    groups: list[list[Stage]] = []
    for stage in stages:
        if isinstance(stage, LineFilter) and groups and isinstance(groups[-1][-1], LineFilter):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def _pretty_stage_group(group: list[Stage], level: int, width: int) -> str:
    if not isinstance(group[0], LineFilter):
        return group[0].pretty(level, width)
    return _pretty_line_filters(group, level, width)  # type: ignore[arg-type]


def _pretty_line_filters(filters: list[LineFilter], level: int, width: int) -> str:
    # Loki splits a long chain from its end until the rest fits on one line; each split-off filter
    # loses its `or` alternatives. Done in a loop: a chain can hold thousands of filters.
    texts = [str(f) for f in filters]
    fitting = 0
    length = -1
    for text in texts:
        length += len(text) + 1
        if length > width:
            break
        fitting += 1
    lines = [" ".join(texts[:fitting])] if fitting else []
    lines.extend(f.head_string() for f in filters[fitting:])
    return "\n".join(indent(level) + line for line in lines)


# -- line filters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineFilterTerm:
    """One value of a line filter: a string, or an `ip("...")` pattern."""

    value: str
    is_ip: bool = False

    def __str__(self) -> str:
        return f"ip({quote(self.value)})" if self.is_ip else quote(self.value)


@dataclass(frozen=True)
class LineFilter(Stage):
    """A line filter stage: `|= "a"`, `|~ "re" or "re2"`, `!= ip("10.0.0.0/8")`, `|> "<_> x"`.

    `terms` holds the filter's value and its `or` alternatives (only positive filters have
    alternatives; Loki splits `!= "a" or "b"` into two filters).
    """

    op: LineFilterOp
    terms: tuple[LineFilterTerm, ...]

    @property
    def value(self) -> str:
        """The first (often only) value of the filter."""
        return self.terms[0].value

    def head_string(self) -> str:
        """Return the filter without its `or` alternatives."""
        return f"{self.op.value} {self.terms[0]}"

    def __str__(self) -> str:
        return f"{self.op.value} " + " or ".join(str(t) for t in self.terms)


# -- label filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StringLabelFilter(LabelFilter):
    """`name = "value"`, `!=`, `=~`, `!~` against a label's text (a missing label is "")."""

    matcher: LabelMatcher

    def __str__(self) -> str:
        m = self.matcher
        if m.op == MatchOp.RE:
            from loglake.logql.regex import RegexError, loki_text_match

            try:
                reducible = loki_text_match(m.value, is_label=True) is not None
            except RegexError:
                reducible = True
            if not reducible:
                # Loki prints a regex it cannot reduce to literals between backticks.
                body = quote(m.value) if "`" in m.value else f"`{m.value}`"
                return f"{m.name}{m.op.value}{body}"
        return format_matcher(m)


@dataclass(frozen=True)
class NumericLabelFilter(LabelFilter):
    """`name op number`: the label parsed as a float and compared."""

    name: str
    op: CompareOp
    value: float

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{format_float_f(self.value)}"


@dataclass(frozen=True)
class DurationLabelFilter(LabelFilter):
    """`name op 5s`: the label parsed as a Go duration and compared (value in nanoseconds)."""

    name: str
    op: CompareOp
    value: int

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{go_duration(self.value)}"


@dataclass(frozen=True)
class BytesLabelFilter(LabelFilter):
    """`name op 20MB`: the label parsed as a byte size and compared (value in bytes)."""

    name: str
    op: CompareOp
    value: int

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{humanize_bytes(self.value)}"


@dataclass(frozen=True)
class IpLabelFilter(LabelFilter):
    """`name = ip("192.168.0.0/16")` or `!=`: the label is (not) an address in the pattern."""

    name: str
    op: CompareOp
    pattern: str

    def __str__(self) -> str:
        eq = "!=" if self.op == CompareOp.NEQ else "="
        return f"{self.name}{eq}ip({quote(self.pattern)})"


@dataclass(frozen=True)
class BinaryLabelFilter(LabelFilter):
    """Two label filters joined by `and` (also `,` or a space) or by `or`."""

    left: LabelFilter
    right: LabelFilter
    is_and: bool

    def __str__(self) -> str:
        joiner = " , " if self.is_and else " or "
        return f"( {self.left}{joiner}{self.right} )"


@dataclass(frozen=True)
class LabelFilterStage(Stage):
    """A label filter stage: `| level="error" and status >= 500`."""

    filter: LabelFilter

    def __str__(self) -> str:
        return f"| {self.filter}"


# -- parsers and formatters ---------------------------------------------------------------------


@dataclass(frozen=True)
class LabelExtraction:
    """`name="expression"` of a json or logfmt stage (a bare `name` means `name="name"`)."""

    name: str
    expression: str

    def __str__(self) -> str:
        return f"{self.name}={quote(self.expression)}"


@dataclass(frozen=True)
class JsonParser(Stage):
    """`| json`, or `| json name="path", ...` extracting only the given paths."""

    extractions: tuple[LabelExtraction, ...] = ()

    def __str__(self) -> str:
        if not self.extractions:
            return "| json"
        return "| json " + ",".join(str(e) for e in self.extractions)


@dataclass(frozen=True)
class LogfmtParser(Stage):
    """`| logfmt [--strict] [--keep-empty] [name="key", ...]`."""

    strict: bool = False
    keep_empty: bool = False
    extractions: tuple[LabelExtraction, ...] = ()

    def __str__(self) -> str:
        if not self.extractions:
            text = "| logfmt"
            if self.strict:
                text += " --strict"
            if self.keep_empty:
                text += " --keep-empty"
            return text
        text = "| logfmt "
        if self.strict:
            text += "--strict "
        if self.keep_empty:
            text += "--keep-empty "
        return text + ",".join(str(e) for e in self.extractions)


@dataclass(frozen=True)
class RegexpParser(Stage):
    """`| regexp "(?P<name>...)"`: named groups become labels."""

    regex: str

    def __str__(self) -> str:
        return f"| regexp {quote(self.regex)}"


@dataclass(frozen=True)
class PatternParser(Stage):
    """`| pattern "<name> ... <_>"`: named captures become labels."""

    pattern: str

    def __str__(self) -> str:
        return f"| pattern {quote(self.pattern)}"


@dataclass(frozen=True)
class UnpackParser(Stage):
    """`| unpack`: JSON objects written by Promtail's pack stage."""

    def __str__(self) -> str:
        return "| unpack"


@dataclass(frozen=True)
class LineFormat(Stage):
    """`| line_format "{{.template}}"`: the line is replaced by the rendered template."""

    template: str

    def __str__(self) -> str:
        return f"| line_format {quote(self.template)}"


@dataclass(frozen=True)
class LabelFormatItem:
    """`dst=src` (a rename) or `dst="{{template}}"`."""

    name: str
    value: str
    rename: bool

    def __str__(self) -> str:
        return f"{self.name}={self.value}" if self.rename else f"{self.name}={quote(self.value)}"


@dataclass(frozen=True)
class LabelFormat(Stage):
    """`| label_format dst=src, dst2="{{template}}"`."""

    items: tuple[LabelFormatItem, ...]

    def __str__(self) -> str:
        return "| label_format " + ",".join(str(i) for i in self.items)


@dataclass(frozen=True)
class Decolorize(Stage):
    """`| decolorize`: ANSI colour sequences are removed from the line."""

    def __str__(self) -> str:
        return "| decolorize"

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the stage as format_query prints it (Loki does not indent this one)."""
        return str(self)


@dataclass(frozen=True)
class LabelSelection:
    """One item of drop/keep: a label name, or a matcher that selects by value too."""

    name: str
    matcher: LabelMatcher | None = None

    def __str__(self) -> str:
        return format_matcher(self.matcher) if self.matcher is not None else self.name


@dataclass(frozen=True)
class DropLabels(Stage):
    """`| drop a, b="x"`."""

    labels: tuple[LabelSelection, ...]

    def __str__(self) -> str:
        return "| drop " + ",".join(str(s) for s in self.labels)


@dataclass(frozen=True)
class KeepLabels(Stage):
    """`| keep a, b="x"`."""

    labels: tuple[LabelSelection, ...]

    def __str__(self) -> str:
        return "| keep " + ",".join(str(s) for s in self.labels)


# -- metric queries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Unwrap:
    """`| unwrap label`, `| unwrap duration(label)` etc., with label filters that follow it."""

    label: str
    conversion: str = ""
    """"", "bytes", "duration" or "duration_seconds"."""
    post_filters: tuple[LabelFilter, ...] = ()

    def __str__(self) -> str:
        if self.conversion:
            text = f" | unwrap {self.conversion}({self.label})"
        else:
            text = f" | unwrap {self.label}"
        return text + "".join(f" | {f}" for f in self.post_filters)

    def pretty(self, level: int) -> str:
        """Return the unwrap as format_query prints it."""
        if self.conversion:
            text = indent(level) + f"| unwrap {self.conversion}({self.label})"
        else:
            text = indent(level) + f"| unwrap {self.label}"
        return text + "".join(f"\n{indent(level)}| {f}" for f in self.post_filters)


@dataclass(frozen=True)
class LogRange(Expr):
    """`selector [| pipeline] [| unwrap ...] [range] [offset d]`: the input of a range aggregation."""

    selector: LogSelectorExpr
    range_ns: int
    offset_ns: int = 0
    unwrap: Unwrap | None = None

    def __str__(self) -> str:
        text = str(self.selector)
        if self.unwrap is not None:
            text += str(self.unwrap)
        text += f"[{prometheus_duration(self.range_ns)}]"
        if self.offset_ns != 0:
            text += f" offset {go_duration(self.offset_ns)}"
        return text

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the range as format_query prints it inside a split aggregation."""
        text = self.selector.pretty(level, width)
        if self.unwrap is not None:
            text += "\n" + self.unwrap.pretty(level + 1)
        text = f"{text} [{prometheus_duration(self.range_ns)}]"
        if self.offset_ns != 0:
            text += f" offset {prometheus_duration(self.offset_ns)}"
        return text


@dataclass(frozen=True)
class Grouping:
    """`by (a, b)` or `without (a, b)`."""

    labels: tuple[str, ...] = ()
    without: bool = False

    @property
    def singleton(self) -> bool:
        """Say whether the grouping collapses everything into one series (`by ()` or none)."""
        return not self.labels and not self.without

    def __str__(self) -> str:
        return (" without (" if self.without else " by (") + ",".join(self.labels) + ")"

    def pretty(self) -> str:
        """Return the grouping as format_query prints it."""
        text = ""
        if self.without:
            text += " without"
        elif self.labels:
            text += " by"
        if self.labels:
            text += " (" + ", ".join(self.labels) + ")"
        return text


RANGE_OPERATIONS = (
    "count_over_time",
    "rate",
    "rate_counter",
    "bytes_over_time",
    "bytes_rate",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "stdvar_over_time",
    "stddev_over_time",
    "quantile_over_time",
    "first_over_time",
    "last_over_time",
    "absent_over_time",
)

VECTOR_OPERATIONS = (
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "stddev",
    "stdvar",
    "bottomk",
    "topk",
    "sort",
    "sort_desc",
    "approx_topk",
)


@dataclass(frozen=True)
class RangeAggregation(SampleExpr):
    """`op([param,] log_range) [by|without (...)]`, e.g. `rate({app="x"}[5m])`."""

    operation: str
    range: LogRange
    param: float | None = None
    grouping: Grouping | None = None

    def __str__(self) -> str:
        text = self.operation + "("
        if self.param is not None:
            text += format_float_f(self.param) + ","
        text += str(self.range) + ")"
        if self.grouping is not None:
            text += str(self.grouping)
        return text

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the aggregation as format_query prints it."""
        if not _need_split(self, width):
            return indent(level) + str(self)
        text = indent(level) + self.operation + "(\n"
        if self.param is not None:
            text += indent(level + 1) + format_float_v(self.param) + ",\n"
        text += self.range.pretty(level + 1, width)
        text += "\n" + indent(level) + ")"
        if self.grouping is not None:
            text += self.grouping.pretty()
        return text


@dataclass(frozen=True)
class VectorAggregation(SampleExpr):
    """`op [by|without (...)] ([param,] expr)`, e.g. `sum by (app) (rate(...))`, `topk(5, ...)`."""

    operation: str
    expr: SampleExpr
    grouping: Grouping = field(default_factory=Grouping)
    param: int = 0

    def _params(self, left: str) -> list[str]:
        if self.operation in ("bottomk", "topk", "approx_topk") or self.param != 0:
            return [str(self.param), left]
        return [left]

    def __str__(self) -> str:
        text = self.operation
        if not self.grouping.singleton:
            text += str(self.grouping)
        return text + "(" + ",".join(p for p in self._params(str(self.expr)) if p) + ")"

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the aggregation as format_query prints it."""
        if not _need_split(self, width):
            return indent(level) + str(self)
        left = self.expr.pretty(level + 1, width)
        params = self._params(left)
        if len(params) == 2:
            params[0] = indent(level + 1) + params[0]
        text = indent(level) + self.operation + self.grouping.pretty() + "(\n"
        text += ",\n".join(params) + "\n"
        return text + indent(level) + ")"


@dataclass(frozen=True)
class VectorMatching:
    """`on (...)` / `ignoring (...)` and `group_left (...)` / `group_right (...)` of a binary operation."""

    card: str = "one-to-one"
    """"one-to-one", "many-to-one" (group_left) or "one-to-many" (group_right)."""
    on: bool = False
    labels: tuple[str, ...] = ()
    include: tuple[str, ...] = ()


BINARY_OPERATORS = ("or", "and", "unless", "==", "!=", ">", ">=", "<", "<=", "+", "-", "*", "/", "%", "^")
COMPARISON_OPERATORS = ("==", "!=", ">", ">=", "<", "<=")
SET_OPERATORS = ("or", "and", "unless")


@dataclass(frozen=True)
class BinOpExpr(SampleExpr):
    """`left op [bool] [on|ignoring (...)] [group_left|group_right (...)] right`."""

    op: str
    left: SampleExpr
    right: SampleExpr
    return_bool: bool = False
    matching: VectorMatching = field(default_factory=VectorMatching)

    def _op_text(self) -> str:
        op = self.op
        if self.return_bool:
            op += " bool"
        m = self.matching
        group = {"many-to-one": "group_left", "one-to-many": "group_right"}.get(m.card, "")
        if m.include:
            group = f"{group} ({','.join(m.include)})"
        if m.on or m.labels:
            op = f"{op} {'on' if m.on else 'ignoring'} ({','.join(m.labels)}) {group}"
        return op

    def __str__(self) -> str:
        return f"({self.left} {self._op_text()} {self.right})"

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the operation as format_query prints it: operands indented around the operator."""
        if not _need_split(self, width):
            return indent(level) + str(self)
        op = self.op
        if self.return_bool:
            op += " bool"
        m = self.matching
        group = {"many-to-one": "group_left", "one-to-many": "group_right"}.get(m.card, "")
        if m.include:
            group = f"{group} ({', '.join(m.include)})"
        if m.labels:
            op = f"{op} {'on' if m.on else 'ignoring'} ({', '.join(m.labels)}) {group}"
        left = self.left.pretty(level + 1, width)
        return left + "\n" + indent(level) + op + "\n" + self.right.pretty(level + 1, width)


@dataclass(frozen=True)
class LiteralExpr(SampleExpr):
    """A number, e.g. `42` or `-1.5`."""

    value: float

    def __str__(self) -> str:
        return format_float_v(self.value)


@dataclass(frozen=True)
class VectorExpr(SampleExpr):
    """`vector(n)`: one sample with no labels at every step."""

    value: float

    def __str__(self) -> str:
        return f"vector({format_float_fixed6(self.value)})"


@dataclass(frozen=True)
class LabelReplaceExpr(SampleExpr):
    """`label_replace(expr, "dst", "replacement", "src", "regex")`."""

    expr: SampleExpr
    dst: str
    replacement: str
    src: str
    regex: str

    def __str__(self) -> str:
        args = [str(self.expr), quote(self.dst), quote(self.replacement), quote(self.src), quote(self.regex)]
        return "label_replace(" + ",".join(args) + ")"

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the call as format_query prints it."""
        if not _need_split(self, width):
            return indent(level) + str(self)
        params = [self.expr.pretty(level + 1, width)] + [
            indent(level + 1) + quote(v) for v in (self.dst, self.replacement, self.src, self.regex)
        ]
        return indent(level) + "label_replace(\n" + ",\n".join(params) + "\n" + indent(level) + ")"


@dataclass(frozen=True)
class VariantsExpr(Expr):
    """`variants(metric, ...) of (log_range)`: several metrics over one log range."""

    variants: tuple[SampleExpr, ...]
    range: LogRange

    def __str__(self) -> str:
        return "variants(" + ", ".join(str(v) for v in self.variants) + f") of ({self.range})"

    def pretty(self, level: int = 0, width: int = MAX_CHARS_PER_LINE) -> str:
        """Return the expression as format_query prints it (always on several lines, as Loki)."""
        text = indent(level) + "variants(\n"
        text += ",\n".join(v.pretty(level + 1, width) for v in self.variants) + "\n"
        text += indent(level) + ") of (\n" + self.range.pretty(level + 1, width) + indent(level) + "\n)"
        return text


def pretty(expr: Expr, width: int = MAX_CHARS_PER_LINE) -> str:
    """Return `expr` as Loki's format_query endpoint prints it."""
    return expr.pretty(0, width)
