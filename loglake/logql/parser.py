"""LogQL parser: query text to the syntax tree in `ast`, with Loki's grammar, folding and errors.

A recursive-descent parser that accepts what Loki 3.7's yacc grammar accepts, builds the same tree
(binary operations on two numbers are folded, `!= "a" or "b"` becomes two filters), and fails with
Loki's messages: syntax errors at the same token and position, then the checks Loki makes once the
whole query is read, in the same order.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, is_dataclass

from loglake.logql.ast import (
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
    PatternParser,
    PipelineExpr,
    RangeAggregation,
    RegexpParser,
    SampleExpr,
    Stage,
    StringLabelFilter,
    UnpackParser,
    Unwrap,
    VariantsExpr,
    VectorAggregation,
    VectorExpr,
    VectorMatching,
)
from loglake.logql.lexer import MAX_INPUT_SIZE, Lexer, ParseError, Tok, Token, go_parse_float, token_name
from loglake.logql.regex import RegexError, capture_names, parse_regex
from loglake.model import LabelMatcher, MatchOp

__all__ = ["ParseError", "parse", "parse_log_selector", "parse_sample_expr"]

MAX_DEPTH = 256
"""Deepest syntax tree a query may build (Loki has no limit, but deeper trees exhaust Python's stack)."""

ERR_TOO_DEEP = (
    f"query nests too deeply: at most {MAX_DEPTH} levels of parentheses, aggregations, binary operations "
    "and label filters are allowed"
)

ERR_EMPTY_COMPATIBLE = (
    "queries require at least one regexp or equality matcher that does not have an empty-compatible value. "
    'For instance, app=~".*" does not meet this requirement, but app=~".+" will'
)

_RANGE_OPS = {
    Tok.COUNT_OVER_TIME: "count_over_time",
    Tok.RATE: "rate",
    Tok.RATE_COUNTER: "rate_counter",
    Tok.BYTES_OVER_TIME: "bytes_over_time",
    Tok.BYTES_RATE: "bytes_rate",
    Tok.AVG_OVER_TIME: "avg_over_time",
    Tok.SUM_OVER_TIME: "sum_over_time",
    Tok.MIN_OVER_TIME: "min_over_time",
    Tok.MAX_OVER_TIME: "max_over_time",
    Tok.STDVAR_OVER_TIME: "stdvar_over_time",
    Tok.STDDEV_OVER_TIME: "stddev_over_time",
    Tok.QUANTILE_OVER_TIME: "quantile_over_time",
    Tok.FIRST_OVER_TIME: "first_over_time",
    Tok.LAST_OVER_TIME: "last_over_time",
    Tok.ABSENT_OVER_TIME: "absent_over_time",
}

_VECTOR_OPS = {
    Tok.SUM: "sum",
    Tok.AVG: "avg",
    Tok.COUNT: "count",
    Tok.MAX: "max",
    Tok.MIN: "min",
    Tok.STDDEV: "stddev",
    Tok.STDVAR: "stdvar",
    Tok.BOTTOMK: "bottomk",
    Tok.TOPK: "topk",
    Tok.SORT: "sort",
    Tok.SORT_DESC: "sort_desc",
    Tok.APPROX_TOPK: "approx_topk",
}

# Binary operators: token → (operator, precedence, right associative).
_BINARY_OPS = {
    Tok.OR: ("or", 1, False),
    Tok.AND: ("and", 2, False),
    Tok.UNLESS: ("unless", 2, False),
    Tok.CMP_EQ: ("==", 3, False),
    Tok.NEQ: ("!=", 3, False),
    Tok.LT: ("<", 3, False),
    Tok.LTE: ("<=", 3, False),
    Tok.GT: (">", 3, False),
    Tok.GTE: (">=", 3, False),
    Tok.ADD: ("+", 4, False),
    Tok.SUB: ("-", 4, False),
    Tok.MUL: ("*", 5, False),
    Tok.DIV: ("/", 5, False),
    Tok.MOD: ("%", 5, False),
    Tok.POW: ("^", 6, True),
}

_LINE_FILTER_OPS = {
    Tok.PIPE_EXACT: LineFilterOp.CONTAINS,
    Tok.NEQ: LineFilterOp.NOT_CONTAINS,
    Tok.PIPE_MATCH: LineFilterOp.MATCH,
    Tok.NRE: LineFilterOp.NOT_MATCH,
    Tok.PIPE_PATTERN: LineFilterOp.PATTERN,
    Tok.NPA: LineFilterOp.NOT_PATTERN,
}

_MATCH_OPS = {Tok.EQ: MatchOp.EQ, Tok.NEQ: MatchOp.NEQ, Tok.RE: MatchOp.RE, Tok.NRE: MatchOp.NRE}

_COMPARE_OPS = {
    Tok.EQ: CompareOp.EQ,
    Tok.CMP_EQ: CompareOp.EQ,
    Tok.NEQ: CompareOp.NEQ,
    Tok.GT: CompareOp.GT,
    Tok.GTE: CompareOp.GTE,
    Tok.LT: CompareOp.LT,
    Tok.LTE: CompareOp.LTE,
}

_CONVERSIONS = {Tok.BYTES_CONV: "bytes", Tok.DURATION_CONV: "duration", Tok.DURATION_SECONDS_CONV: "duration_seconds"}

_GROUPING_RANGE_OPS = frozenset(
    "avg_over_time stddev_over_time stdvar_over_time quantile_over_time max_over_time min_over_time "
    "first_over_time last_over_time".split()
)
_UNWRAP_RANGE_OPS = frozenset(
    "avg_over_time sum_over_time max_over_time min_over_time stddev_over_time stdvar_over_time "
    "quantile_over_time rate rate_counter absent_over_time first_over_time last_over_time".split()
)
_PLAIN_RANGE_OPS = frozenset(("bytes_over_time", "bytes_rate", "count_over_time", "rate", "absent_over_time"))

LOG, METRIC, VARIANTS = "log", "metric", "variants"


@dataclass(frozen=True)
class _Invalid(SampleExpr):
    """A metric node Loki builds with an error it reports only after the whole query is read."""

    error: ParseError
    is_literal: bool = False

    def __str__(self) -> str:
        return "<invalid>"


def _deferred(message: str, is_literal: bool = False) -> _Invalid:
    return _Invalid(ParseError(message), is_literal)


def _go_type(expr: Expr) -> str:
    return "*syntax.PipelineExpr" if isinstance(expr, PipelineExpr) else "*syntax.MatchersExpr"


def _go_percent_f(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:f}"


def _go_pow(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf if x > 0 or (float(y).is_integer() and int(y) % 2 == 0) else -math.inf
    except ValueError:
        if x == 0 and y < 0:
            odd = float(y).is_integer() and int(y) % 2 == 1
            return math.copysign(math.inf, x) if odd else math.inf
        return math.nan


def _go_mod(x: float, y: float) -> float:
    if y == 0 or math.isinf(x) or math.isnan(x) or math.isnan(y):
        return math.nan
    return math.fmod(x, y)


def fold_binary(op: str, left: float, right: float) -> float:
    """Compute `left op right` for two numbers as Loki folds them at parse time (comparisons give 1 or 0)."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return math.nan if right == 0 else left / right
    if op == "%":
        return _go_mod(left, right)
    if op == "^":
        return _go_pow(left, right)
    result = {
        "==": left == right,
        "!=": left != right,
        ">": left > right,
        ">=": left >= right,
        "<": left < right,
        "<=": left <= right,
    }[op]
    return 1.0 if result else 0.0


def _go_atoi(text: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise ValueError(text)
    value = int(text)
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(text)
    return value


def check_regex(pattern: str) -> None:
    """Raise RegexError (Go's message) unless Go accepts `pattern`."""
    parse_regex(pattern)


class _Parser:
    def __init__(self, text: str) -> None:
        self.lexer = Lexer(text)
        self.tok = self.lexer.next_token()
        self._next: Token | None = None

    # -- tokens ---------------------------------------------------------------------------------

    def advance(self) -> Token:
        """Consume the current token and return it."""
        tok = self.tok
        if self._next is not None:
            self.tok, self._next = self._next, None
        else:
            self.tok = self.lexer.next_token()
        return tok

    def peek(self) -> Token:
        """Return the token after the current one."""
        if self._next is None:
            self._next = self.lexer.next_token()
        return self._next

    def unexpected(self, expected: tuple[Tok, ...] = ()) -> ParseError:
        """Return the syntax error for the current token (with the expected ones when few)."""
        tok = self.tok
        message = f"syntax error: unexpected {token_name(tok.kind)}"
        if expected:
            message += ", expecting " + " or ".join(token_name(t) for t in sorted(set(expected)))
        return ParseError(message, tok.line, tok.col)

    def expect(self, kind: Tok, expected: tuple[Tok, ...] | None = None) -> Token:
        """Consume a token of `kind` or fail with a syntax error."""
        if self.tok.kind != kind:
            raise self.unexpected((kind,) if expected is None else expected)
        return self.advance()

    # -- expressions ----------------------------------------------------------------------------

    def parse_expr(self, min_prec: int = 0) -> tuple[Expr, str]:
        """expr: operands joined by binary operators, by precedence; returns the node and its kind."""
        left, kind = self.parse_operand()
        while True:
            info = _BINARY_OPS.get(self.tok.kind)
            if info is None or info[1] < min_prec:
                return left, kind
            op, prec, right_assoc = info
            self.advance()
            return_bool, matching = self.parse_bin_modifiers()
            right, _ = self.parse_expr(prec if right_assoc else prec + 1)
            left = self.binop(op, return_bool, matching, left, right)
            kind = METRIC

    def parse_bin_modifiers(self) -> tuple[bool, VectorMatching]:
        """The modifiers after a binary operator: `bool`, `on|ignoring (...)`, `group_left|group_right`."""
        return_bool = False
        if self.tok.kind == Tok.BOOL:
            self.advance()
            return_bool = True
        if self.tok.kind not in (Tok.ON, Tok.IGNORING):
            return return_bool, VectorMatching()
        on = self.advance().kind == Tok.ON
        labels = self.parse_label_list()
        card = "one-to-one"
        include: tuple[str, ...] = ()
        if self.tok.kind in (Tok.GROUP_LEFT, Tok.GROUP_RIGHT):
            card = "many-to-one" if self.advance().kind == Tok.GROUP_LEFT else "one-to-many"
            if self.tok.kind == Tok.OPEN_PARENTHESIS:
                include = self.parse_label_list()
        return return_bool, VectorMatching(card=card, on=on, labels=labels, include=include)

    def parse_label_list(self) -> tuple[str, ...]:
        """`(a, b, ...)` after by/without/on/ignoring/group_left/group_right."""
        self.expect(Tok.OPEN_PARENTHESIS)
        labels: list[str] = []
        if self.tok.kind == Tok.CLOSE_PARENTHESIS:
            self.advance()
            return ()
        labels.append(self.expect(Tok.IDENTIFIER, (Tok.IDENTIFIER, Tok.CLOSE_PARENTHESIS)).text)
        while self.tok.kind == Tok.COMMA:
            self.advance()
            labels.append(self.expect(Tok.IDENTIFIER).text)
        self.expect(Tok.CLOSE_PARENTHESIS, (Tok.COMMA, Tok.CLOSE_PARENTHESIS))
        return tuple(labels)

    def parse_operand(self) -> tuple[Expr, str]:
        """One operand: a selector with its pipeline, `( expr )`, a number or a function call."""
        kind = self.tok.kind
        if kind == Tok.OPEN_BRACE:
            selector = self.parse_selector()
            stages = self.parse_pipeline(allow_unwrap=False)
            return _log_selector(selector, stages), LOG
        if kind == Tok.OPEN_PARENTHESIS:
            self.advance()
            expr, inner = self.parse_expr()
            if inner == VARIANTS:
                raise self.unexpected()
            self.expect(Tok.CLOSE_PARENTHESIS, ())
            return expr, inner
        if kind in (Tok.NUMBER, Tok.ADD, Tok.SUB):
            return self.parse_literal(), METRIC
        if kind in _RANGE_OPS:
            return self.parse_range_aggregation(), METRIC
        if kind in _VECTOR_OPS:
            return self.parse_vector_aggregation(), METRIC
        if kind == Tok.LABEL_REPLACE:
            return self.parse_label_replace(), METRIC
        if kind == Tok.VECTOR:
            self.advance()
            self.expect(Tok.OPEN_PARENTHESIS)
            number = self.expect(Tok.NUMBER)
            self.expect(Tok.CLOSE_PARENTHESIS)
            try:
                return VectorExpr(go_parse_float(number.text)), METRIC
            except ValueError as exc:
                return _deferred(f"unable to parse vectorExpr as a float: {exc}"), METRIC
        if kind == Tok.VARIANTS:
            return self.parse_variants(), VARIANTS
        raise self.unexpected()

    def parse_literal(self) -> SampleExpr:
        """A number, optionally signed: `5`, `-1.5`, `+2`."""
        negate = False
        if self.tok.kind in (Tok.ADD, Tok.SUB):
            negate = self.advance().kind == Tok.SUB
        number = self.expect(Tok.NUMBER)
        try:
            value = go_parse_float(number.text)
        except ValueError as exc:
            return _deferred(f"unable to parse literal as a float: {exc}", is_literal=True)
        return LiteralExpr(-value if negate else value)

    def parse_metric_operand(self) -> SampleExpr:
        """An expression that must be a metric one (the argument of an aggregation)."""
        expr, kind = self.parse_expr()
        if kind != METRIC:
            raise self.unexpected()
        return expr  # type: ignore[return-value]

    def binop(self, op: str, return_bool: bool, matching: VectorMatching, left: Expr, right: Expr) -> SampleExpr:
        """Build `left op right`, folding two numbers and deferring the errors Loki defers."""
        if isinstance(left, LogSelectorExpr):
            return _deferred(f"unexpected type for left leg of binary operation ({op}): {_go_type(left)}")
        if isinstance(right, LogSelectorExpr):
            return _deferred(f"unexpected type for right leg of binary operation ({op}): {_go_type(right)}")
        left_literal = isinstance(left, LiteralExpr) or (isinstance(left, _Invalid) and left.is_literal)
        right_literal = isinstance(right, LiteralExpr) or (isinstance(right, _Invalid) and right.is_literal)
        if isinstance(left, _Invalid) and left.is_literal:
            return _Invalid(left.error)
        if isinstance(right, _Invalid) and right.is_literal:
            return _Invalid(right.error)
        if op in ("or", "and", "unless"):
            if left_literal:
                value = _go_percent_f(left.value)  # type: ignore[attr-defined]
                return _deferred(f"unexpected literal for left leg of logical/set binary operation ({op}): {value}")
            if right_literal:
                value = _go_percent_f(right.value)  # type: ignore[attr-defined]
                return _deferred(f"unexpected literal for right leg of logical/set binary operation ({op}): {value}")
        if isinstance(left, LiteralExpr) and isinstance(right, LiteralExpr):
            return LiteralExpr(fold_binary(op, left.value, right.value))
        return BinOpExpr(op, left, right, return_bool, matching)  # type: ignore[arg-type]

    # -- stream selectors and pipelines ------------------------------------------------------------

    def parse_selector(self) -> MatchersExpr:
        """`{name op "value", ...}`."""
        self.expect(Tok.OPEN_BRACE, (Tok.OPEN_BRACE,))
        if self.tok.kind == Tok.CLOSE_BRACE:
            self.advance()
            return MatchersExpr(())
        if self.tok.kind != Tok.IDENTIFIER:
            raise self.unexpected((Tok.IDENTIFIER, Tok.CLOSE_BRACE))
        matchers = [self.parse_matcher()]
        while self.tok.kind == Tok.COMMA:
            self.advance()
            matchers.append(self.parse_matcher())
        self.expect(Tok.CLOSE_BRACE, (Tok.CLOSE_BRACE, Tok.COMMA))
        return MatchersExpr(tuple(matchers))

    def parse_matcher(self, name: Token | None = None) -> LabelMatcher:
        """`name op "value"` (the name may already be consumed)."""
        if name is None:
            name = self.expect(Tok.IDENTIFIER)
        op = _MATCH_OPS.get(self.tok.kind)
        if op is None:
            raise self.unexpected((Tok.EQ, Tok.NEQ, Tok.RE, Tok.NRE))
        self.advance()
        value = self.expect(Tok.STRING).text
        return _matcher(name.text, op, value)

    def parse_pipeline(self, allow_unwrap: bool) -> list[Stage]:
        """Pipeline stages after a selector; stops before `| unwrap` when `allow_unwrap`."""
        stages: list[Stage] = []
        while True:
            kind = self.tok.kind
            if kind in _LINE_FILTER_OPS:
                stages.extend(self.parse_line_filter())
            elif kind == Tok.PIPE:
                if self.peek().kind == Tok.UNWRAP:
                    if allow_unwrap:
                        return stages
                    self.advance()
                    raise self.unexpected()
                self.advance()
                stages.append(self.parse_pipe_stage())
            else:
                return stages

    def parse_line_filter(self) -> list[LineFilter]:
        """A line filter with its `or` alternatives."""
        op = _LINE_FILTER_OPS[self.advance().kind]
        terms = [self.parse_filter_term()]
        while self.tok.kind == Tok.OR:
            self.advance()
            terms.append(self.parse_filter_term())
        if op.negated:
            # Loki turns `!= "a" or "b"` into `!= "a" != "b"` (a line must contain none of them).
            return [LineFilter(op, (term,)) for term in terms]
        return [LineFilter(op, tuple(terms))]

    def parse_filter_term(self) -> LineFilterTerm:
        """A line filter value: a string or `ip("...")`."""
        if self.tok.kind == Tok.STRING:
            return LineFilterTerm(self.advance().text)
        if self.tok.kind == Tok.IP:
            self.advance()
            self.expect(Tok.OPEN_PARENTHESIS)
            value = self.expect(Tok.STRING).text
            self.expect(Tok.CLOSE_PARENTHESIS)
            return LineFilterTerm(value, is_ip=True)
        raise self.unexpected((Tok.STRING, Tok.IP))

    def parse_pipe_stage(self) -> Stage:
        """The stage after a `|`."""
        kind = self.tok.kind
        if kind == Tok.LOGFMT:
            self.advance()
            flags = []
            while self.tok.kind == Tok.FUNCTION_FLAG:
                flags.append(self.advance().text)
            extractions = self.parse_extractions() if self.tok.kind == Tok.IDENTIFIER else ()
            return LogfmtParser("--strict" in flags, "--keep-empty" in flags, extractions)
        if kind == Tok.JSON:
            self.advance()
            return JsonParser(self.parse_extractions() if self.tok.kind == Tok.IDENTIFIER else ())
        if kind == Tok.REGEXP:
            self.advance()
            regex = self.expect(Tok.STRING).text
            _check_regexp_stage(regex)
            return RegexpParser(regex)
        if kind == Tok.PATTERN:
            self.advance()
            pattern = self.expect(Tok.STRING).text
            _check_pattern_stage(pattern)
            return PatternParser(pattern)
        if kind == Tok.UNPACK:
            self.advance()
            return UnpackParser()
        if kind == Tok.LINE_FMT:
            self.advance()
            return LineFormat(self.expect(Tok.STRING).text)
        if kind == Tok.LABEL_FMT:
            self.advance()
            items = [self.parse_label_format_item()]
            while self.tok.kind == Tok.COMMA:
                self.advance()
                items.append(self.parse_label_format_item())
            return LabelFormat(tuple(items))
        if kind == Tok.DECOLORIZE:
            self.advance()
            return Decolorize()
        if kind in (Tok.DROP, Tok.KEEP):
            self.advance()
            selections = [self.parse_label_selection()]
            while self.tok.kind == Tok.COMMA:
                self.advance()
                selections.append(self.parse_label_selection())
            return DropLabels(tuple(selections)) if kind == Tok.DROP else KeepLabels(tuple(selections))
        if kind in (Tok.IDENTIFIER, Tok.OPEN_PARENTHESIS):
            return LabelFilterStage(self.parse_label_filter())
        raise self.unexpected()

    def parse_extractions(self) -> tuple[LabelExtraction, ...]:
        """`name[="expr"], ...` of json and logfmt."""
        items = [self.parse_extraction()]
        while self.tok.kind == Tok.COMMA:
            self.advance()
            items.append(self.parse_extraction())
        return tuple(items)

    def parse_extraction(self) -> LabelExtraction:
        """`name` or `name="expr"`."""
        name = self.expect(Tok.IDENTIFIER).text
        if self.tok.kind != Tok.EQ:
            return LabelExtraction(name, name)
        self.advance()
        return LabelExtraction(name, self.expect(Tok.STRING).text)

    def parse_label_format_item(self) -> LabelFormatItem:
        """`dst=src` or `dst="template"`."""
        name = self.expect(Tok.IDENTIFIER).text
        self.expect(Tok.EQ)
        if self.tok.kind == Tok.IDENTIFIER:
            return LabelFormatItem(name, self.advance().text, rename=True)
        if self.tok.kind == Tok.STRING:
            return LabelFormatItem(name, self.advance().text, rename=False)
        raise self.unexpected((Tok.IDENTIFIER, Tok.STRING))

    def parse_label_selection(self) -> LabelSelection:
        """`name` or `name op "value"` of drop and keep."""
        name = self.expect(Tok.IDENTIFIER)
        if self.tok.kind in _MATCH_OPS:
            return LabelSelection(name.text, self.parse_matcher(name))
        return LabelSelection(name.text)

    # -- label filters --------------------------------------------------------------------------

    def parse_label_filter(self, min_prec: int = 0) -> LabelFilter:
        """Label filters joined by `and`, `or`, `,` or juxtaposition, grouped as Loki does."""
        # Loki's grammar: `and` binds tighter than `or`; `,` and juxtaposition (both mean "and")
        # take everything to their right.
        left = self.parse_label_filter_primary()
        while True:
            kind = self.tok.kind
            if kind in (Tok.AND, Tok.OR):
                prec = 2 if kind == Tok.AND else 1
                if prec < min_prec:
                    return left
                self.advance()
                right = self.parse_label_filter(prec + 1)
                left = BinaryLabelFilter(left, right, is_and=kind == Tok.AND)
            elif kind == Tok.COMMA:
                self.advance()
                left = BinaryLabelFilter(left, self.parse_label_filter(), is_and=True)
            elif kind in (Tok.IDENTIFIER, Tok.OPEN_PARENTHESIS):
                left = BinaryLabelFilter(left, self.parse_label_filter(), is_and=True)
            else:
                return left

    def parse_label_filter_primary(self) -> LabelFilter:
        """One label filter or a parenthesised group of them."""
        if self.tok.kind == Tok.OPEN_PARENTHESIS:
            self.advance()
            inner = self.parse_label_filter()
            self.expect(Tok.CLOSE_PARENTHESIS, ())
            return inner
        name_tok = self.expect(Tok.IDENTIFIER, ())
        name = name_tok.text
        op_kind = self.tok.kind
        if op_kind in (Tok.RE, Tok.NRE):
            return StringLabelFilter(self.parse_matcher(name_tok))
        if op_kind not in _COMPARE_OPS:
            raise self.unexpected()
        self.advance()
        compare = _COMPARE_OPS[op_kind]
        value = self.tok
        if op_kind in (Tok.EQ, Tok.NEQ):
            if value.kind == Tok.STRING:
                self.advance()
                return StringLabelFilter(_matcher(name, _MATCH_OPS[op_kind], value.text))
            if value.kind == Tok.IP:
                self.advance()
                self.expect(Tok.OPEN_PARENTHESIS)
                pattern = self.expect(Tok.STRING).text
                self.expect(Tok.CLOSE_PARENTHESIS)
                return IpLabelFilter(name, compare, pattern)
        if value.kind == Tok.DURATION:
            self.advance()
            return DurationLabelFilter(name, compare, value.value)
        if value.kind == Tok.BYTES:
            self.advance()
            return BytesLabelFilter(name, compare, value.value)
        if value.kind in (Tok.NUMBER, Tok.ADD, Tok.SUB):
            literal = self.parse_literal()
            # Loki ignores a literal's parse error here and compares with 0.
            number = literal.value if isinstance(literal, LiteralExpr) else 0.0
            return NumericLabelFilter(name, compare, number)
        raise self.unexpected()

    # -- metric expressions ---------------------------------------------------------------------

    def parse_range_aggregation(self) -> SampleExpr:
        """`op([param,] log_range) [grouping]`."""
        operation = _RANGE_OPS[self.advance().kind]
        self.expect(Tok.OPEN_PARENTHESIS)
        param: str | None = None
        if self.tok.kind == Tok.NUMBER:
            param = self.advance().text
            self.expect(Tok.COMMA)
        elif self.tok.kind not in (Tok.OPEN_BRACE, Tok.OPEN_PARENTHESIS):
            raise self.unexpected((Tok.NUMBER, Tok.OPEN_BRACE, Tok.OPEN_PARENTHESIS))
        if self.tok.kind not in (Tok.OPEN_BRACE, Tok.OPEN_PARENTHESIS):
            raise self.unexpected((Tok.OPEN_BRACE, Tok.OPEN_PARENTHESIS))
        log_range = self.parse_log_range()
        self.expect(Tok.CLOSE_PARENTHESIS, ())
        grouping = self.parse_grouping() if self.tok.kind in (Tok.BY, Tok.WITHOUT) else None
        return _range_aggregation(operation, log_range, param, grouping)

    def parse_grouping(self) -> Grouping:
        """`by (...)` or `without (...)`."""
        without = self.advance().kind == Tok.WITHOUT
        return Grouping(self.parse_label_list(), without)

    def parse_log_range(self) -> LogRange:
        """The argument of a range aggregation, in any of the orders Loki accepts."""
        if self.tok.kind == Tok.OPEN_PARENTHESIS:
            self.advance()
            if self.tok.kind == Tok.OPEN_PARENTHESIS:
                inner = self.parse_log_range()
                self.expect(Tok.CLOSE_PARENTHESIS, ())
                return inner
            if self.tok.kind != Tok.OPEN_BRACE:
                raise self.unexpected((Tok.OPEN_BRACE, Tok.OPEN_PARENTHESIS))
            selector = self.parse_selector()
            stages = self.parse_pipeline(allow_unwrap=True)
            unwrap = self.parse_unwrap()
            if self.tok.kind == Tok.RANGE:
                inner = self.finish_log_range(selector, stages, unwrap)
                self.expect(Tok.CLOSE_PARENTHESIS, ())
                return inner
            self.expect(Tok.CLOSE_PARENTHESIS, ())
            range_ns = self.expect(Tok.RANGE).value
            offset = self.parse_offset()
            if not stages and unwrap is None:
                unwrap = self.parse_unwrap()
            return LogRange(_log_selector(selector, stages), range_ns, offset, unwrap)
        selector = self.parse_selector()
        stages = self.parse_pipeline(allow_unwrap=True)
        return self.finish_log_range(selector, stages, self.parse_unwrap())

    def finish_log_range(self, selector: MatchersExpr, stages: list[Stage], unwrap: Unwrap | None) -> LogRange:
        """The range and what may follow it once the selector (and more) is read."""
        range_ns = self.expect(Tok.RANGE, ()).value
        offset = self.parse_offset()
        if not stages and unwrap is None:
            stages = self.parse_pipeline(allow_unwrap=True)
            unwrap = self.parse_unwrap()
        return LogRange(_log_selector(selector, stages), range_ns, offset, unwrap)

    def parse_offset(self) -> int:
        """`offset <duration>`, or 0."""
        if self.tok.kind != Tok.OFFSET:
            return 0
        self.advance()
        return self.expect(Tok.DURATION).value

    def parse_unwrap(self) -> Unwrap | None:
        """`| unwrap [conv(]label[)]` and the label filters after it, or None."""
        if self.tok.kind != Tok.PIPE or self.peek().kind != Tok.UNWRAP:
            return None
        self.advance()
        self.advance()
        conversion = ""
        if self.tok.kind in _CONVERSIONS:
            conversion = _CONVERSIONS[self.advance().kind]
            self.expect(Tok.OPEN_PARENTHESIS)
            label = self.expect(Tok.IDENTIFIER).text
            self.expect(Tok.CLOSE_PARENTHESIS)
        elif self.tok.kind == Tok.IDENTIFIER:
            label = self.advance().text
        else:
            raise self.unexpected((Tok.IDENTIFIER, Tok.BYTES_CONV, Tok.DURATION_CONV, Tok.DURATION_SECONDS_CONV))
        filters: list[LabelFilter] = []
        while self.tok.kind == Tok.PIPE:
            self.advance()
            if self.tok.kind not in (Tok.IDENTIFIER, Tok.OPEN_PARENTHESIS):
                raise self.unexpected((Tok.IDENTIFIER, Tok.OPEN_PARENTHESIS))
            filters.append(self.parse_label_filter())
        return Unwrap(label, conversion, tuple(filters))

    def parse_vector_aggregation(self) -> SampleExpr:
        """`op [grouping] ([param,] expr) [grouping]`."""
        operation = _VECTOR_OPS[self.advance().kind]
        grouping = self.parse_grouping() if self.tok.kind in (Tok.BY, Tok.WITHOUT) else None
        self.expect(Tok.OPEN_PARENTHESIS)
        param: str | None = None
        if self.tok.kind == Tok.NUMBER and self.peek().kind == Tok.COMMA:
            param = self.advance().text
            self.advance()
        expr = self.parse_metric_operand()
        self.expect(Tok.CLOSE_PARENTHESIS, ())
        if grouping is None and self.tok.kind in (Tok.BY, Tok.WITHOUT):
            grouping = self.parse_grouping()
        return _vector_aggregation(operation, expr, grouping, param)

    def parse_label_replace(self) -> SampleExpr:
        """`label_replace(expr, "dst", "replacement", "src", "regex")`."""
        self.advance()
        self.expect(Tok.OPEN_PARENTHESIS)
        expr = self.parse_metric_operand()
        self.expect(Tok.COMMA, ())
        args = []
        for i in range(4):
            args.append(self.expect(Tok.STRING).text)
            if i < 3:
                self.expect(Tok.COMMA)
        self.expect(Tok.CLOSE_PARENTHESIS)
        dst, replacement, src, regex = args
        try:
            check_regex("^(?:" + regex + ")$")
        except RegexError as exc:
            return _deferred(f"invalid regex in label_replace: {exc}")
        return LabelReplaceExpr(expr, dst, replacement, src, regex)

    def parse_variants(self) -> Expr:
        """`variants(expr, ...) of (log_range)`."""
        self.advance()
        self.expect(Tok.OPEN_PARENTHESIS)
        variants = [self.parse_metric_operand()]
        while self.tok.kind == Tok.COMMA:
            self.advance()
            variants.append(self.parse_metric_operand())
        self.expect(Tok.CLOSE_PARENTHESIS, ())
        self.expect(Tok.OF)
        self.expect(Tok.OPEN_PARENTHESIS)
        if self.tok.kind not in (Tok.OPEN_BRACE, Tok.OPEN_PARENTHESIS):
            raise self.unexpected((Tok.OPEN_BRACE, Tok.OPEN_PARENTHESIS))
        log_range = self.parse_log_range()
        self.expect(Tok.CLOSE_PARENTHESIS, ())
        return VariantsExpr(tuple(variants), log_range)


# -- node construction with Loki's checks ------------------------------------------------------------


def _matcher(name: str, op: MatchOp, value: str) -> LabelMatcher:
    if op in (MatchOp.RE, MatchOp.NRE):
        try:
            check_regex(value)
        except RegexError as exc:
            raise ParseError(str(exc)) from None
    return LabelMatcher(name, op, value)


def _log_selector(selector: MatchersExpr, stages: list[Stage]) -> LogSelectorExpr:
    return PipelineExpr(selector, tuple(stages)) if stages else selector


def _check_regexp_stage(regex: str) -> None:
    try:
        tree = parse_regex(regex)
    except RegexError as exc:
        raise ParseError(f"invalid regexp parser: {exc}") from None
    names = capture_names(tree)
    if not names:
        raise ParseError("invalid regexp parser: at least one named capture must be supplied")
    seen: set[str] = set()
    named = 0
    for name in names:
        if not name:
            continue
        if name in seen:
            raise ParseError(f"invalid regexp parser: duplicate extracted label name '{name}'")
        seen.add(name)
        named += 1
    if named == 0:
        raise ParseError("invalid regexp parser: at least one named capture must be supplied")


def _check_pattern_stage(pattern: str) -> None:
    from loglake.logql.linefilter import PatternSyntaxError, parse_pattern

    try:
        nodes = parse_pattern(pattern)
    except PatternSyntaxError as exc:
        raise ParseError(f"invalid pattern parser: {exc}") from None
    captures = [n for n in nodes if n.is_capture and n.text != "_"]
    error = ""
    if not captures:
        error = "at least one capture is required"
    else:
        for a, b in itertools.pairwise(nodes):
            if a.is_capture and b.is_capture:
                error = f"found consecutive capture '<{a.text}><{b.text}>': invalid expression"
                break
        else:
            seen: set[str] = set()
            for c in captures:
                if c.text in seen:
                    error = f"duplicate capture name ({c.text}): invalid expression"
                    break
                seen.add(c.text)
    if error:
        raise ParseError(f"invalid pattern parser: {error}")


def _range_aggregation(operation: str, log_range: LogRange, param: str | None, grouping: Grouping | None) -> SampleExpr:
    value: float | None = None
    if param is not None:
        if operation != "quantile_over_time":
            return _deferred(f"parameter {param} not supported for operation {operation}")
        try:
            value = go_parse_float(param)
        except ValueError as exc:
            return _deferred(f"invalid parameter for operation {operation}: {exc}")
    elif operation == "quantile_over_time":
        return _deferred(f"parameter required for operation {operation}")
    if grouping is not None and operation not in _GROUPING_RANGE_OPS:
        return _deferred(f"grouping not allowed for {operation} aggregation")
    if log_range.unwrap is not None:
        if operation not in _UNWRAP_RANGE_OPS:
            return _deferred(f"invalid aggregation {operation} with unwrap")
    elif operation not in _PLAIN_RANGE_OPS:
        return _deferred(f"invalid aggregation {operation} without unwrap")
    return RangeAggregation(operation, log_range, value, grouping)


def _vector_aggregation(operation: str, expr: SampleExpr, grouping: Grouping | None, param: str | None) -> SampleExpr:
    value = 0
    if operation in ("bottomk", "topk", "approx_topk"):
        if param is None:
            return _deferred(f"parameter required for operation {operation}")
        try:
            value = _go_atoi(param)
        except ValueError:
            return _deferred(f"invalid parameter {operation}({param},")
        if value <= 0:
            return _deferred(f"invalid parameter (must be greater than 0) {operation}({param}")
        if operation == "approx_topk" and grouping is not None:
            return _deferred(f"grouping not allowed for {operation} aggregation")
    elif param is not None:
        return _deferred(f"unsupported parameter for operation {operation}({param},")
    return VectorAggregation(operation, expr, grouping if grouping is not None else Grouping(), value)


# -- checks made once the whole query is read -----------------------------------------------------


def _check_depth(expr: Expr) -> None:
    """Raise ParseError if the tree is deeper than the printer and the engine (both recursive) can walk."""
    stack: list[tuple[object, int]] = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ParseError(ERR_TOO_DEEP)
        for value in vars(node).values():
            for child in value if isinstance(value, tuple) else (value,):
                if is_dataclass(child) and not isinstance(child, type):
                    stack.append((child, depth + 1))


def _check_matchers(matchers: tuple[LabelMatcher, ...]) -> None:
    from loglake.logql.linefilter import matcher_matches_empty

    if not any(not matcher_matches_empty(m) for m in matchers):
        raise ParseError(ERR_EMPTY_COMPATIBLE)


def _validate(expr: Expr) -> None:
    if isinstance(expr, LogSelectorExpr):
        _check_matchers(expr.matchers)
    elif isinstance(expr, VariantsExpr):
        _check_matchers(expr.range.selector.matchers)
        for variant in expr.variants:
            _validate_sample(variant)
    else:
        _validate_sample(expr)


def _validate_sample(expr: Expr) -> None:
    if isinstance(expr, _Invalid):
        raise expr.error
    if isinstance(expr, BinOpExpr):
        _validate_sample(expr.left)
        _validate_sample(expr.right)
    elif isinstance(expr, VectorAggregation):
        if expr.operation in ("sort", "sort_desc") and expr.grouping.labels:
            raise ParseError("sort and sort_desc doesn't allow grouping by ")
        _validate_sample(expr.expr)
    elif isinstance(expr, LabelReplaceExpr):
        _validate_sample(expr.expr)
    elif isinstance(expr, RangeAggregation):
        _check_matchers(expr.range.selector.matchers)
    elif isinstance(expr, VariantsExpr):
        _check_matchers(expr.range.selector.matchers)


def parse(query: str, *, check_stages: bool = True) -> Expr:
    """Parse a LogQL query into its syntax tree; raise ParseError with Loki's message if it is not valid.

    With `check_stages` (the default) the pipeline is also checked as Loki checks it when it runs a
    query (line filter regexes, patterns and ip() ranges); Loki's format_query endpoint does not.
    """
    size = len(query.encode())
    if size >= MAX_INPUT_SIZE:
        raise ParseError(f"input size too long ({size} > {MAX_INPUT_SIZE})")
    parser = _Parser(query)
    try:
        expr, _ = parser.parse_expr()
    except RecursionError:
        raise ParseError(ERR_TOO_DEEP) from None
    if parser.tok.kind != Tok.END:
        raise parser.unexpected()
    _check_depth(expr)
    _validate(expr)
    if check_stages:
        from loglake.logql.linefilter import check_pipeline

        check_pipeline(expr)
    return expr


def parse_sample_expr(query: str) -> SampleExpr:
    """Parse a metric query; raise ParseError if `query` is not one."""
    expr = parse(query)
    if not isinstance(expr, SampleExpr):
        raise ParseError("only sample expression supported")
    return expr


def parse_log_selector(query: str) -> LogSelectorExpr:
    """Parse a log query (a selector with an optional pipeline); raise ParseError if it is not one."""
    expr = parse(query)
    if not isinstance(expr, LogSelectorExpr):
        raise ParseError("only log selector is supported")
    return expr
