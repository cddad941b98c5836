"""The LogQL parser accepts, rejects, builds and prints queries exactly as Loki 3.7 does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from loglake.logql import (
    BinaryLabelFilter,
    BinOpExpr,
    BytesLabelFilter,
    CompareOp,
    DurationLabelFilter,
    Grouping,
    IpLabelFilter,
    JsonParser,
    LabelExtraction,
    LabelFilterStage,
    LineFilter,
    LineFilterOp,
    LineFilterTerm,
    LiteralExpr,
    LogfmtParser,
    MatchersExpr,
    NumericLabelFilter,
    ParseError,
    PipelineExpr,
    RangeAggregation,
    StringLabelFilter,
    VectorAggregation,
    VectorExpr,
    parse,
    pretty,
)
from loglake.logql.lexer import Tok, parse_go_duration, parse_prometheus_duration, tokenize
from loglake.logql.parser import ERR_EMPTY_COMPATIBLE
from loglake.logql.printer import format_float_f, format_float_v, go_duration, humanize_bytes, prometheus_duration
from loglake.model import MatchOp
from loglake.quoting import quote

EMPTY_COMPATIBLE = "parse error : " + ERR_EMPTY_COMPATIBLE
CASES = Path(__file__).resolve().parent.parent.parent / "shared" / "conformance" / "cases.jsonl"


def _conformance_cases() -> list[dict]:
    if not CASES.exists():
        return []
    return [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]


def _queries(want_ok: bool) -> list[tuple[str, str]]:
    out = []
    for case in _conformance_cases():
        query = case["params"].get("query")
        if query is None or case["feature"] == "format_query":
            continue
        error = case["expect"].get("error", "")
        fails_to_parse = case["expect"]["status"] == 400 and error.startswith("parse error")
        if want_ok != fails_to_parse:
            out.append((case["id"], query))
    return out


def _errors() -> list[tuple[str, str, str]]:
    out = []
    for case in _conformance_cases():
        error = case["expect"].get("error", "")
        if case["expect"]["status"] == 400 and error.startswith("parse error"):
            out.append((case["id"], case["params"]["query"], error))
    return out


needs_cases = pytest.mark.skipif(not CASES.exists(), reason="conformance cases not found")


# -- the conformance suite's queries ------------------------------------------------------------


@needs_cases
@pytest.mark.parametrize(("case_id", "query"), _queries(want_ok=True))
def test_conformance_queries_that_loki_accepts_parse(case_id: str, query: str) -> None:
    parse(query)


@needs_cases
@pytest.mark.parametrize(("case_id", "query", "message"), _errors())
def test_conformance_queries_that_loki_rejects_fail_with_its_message(case_id: str, query: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(query)
    assert str(info.value) == message


@needs_cases
@pytest.mark.parametrize(("case_id", "query"), _queries(want_ok=True))
def test_printed_form_of_every_conformance_query_is_a_fixed_point(case_id: str, query: str) -> None:
    printed = str(parse(query))
    assert str(parse(printed)) == printed


@needs_cases
def test_format_query_cases_print_as_loki() -> None:
    cases = [c for c in _conformance_cases() if c["feature"] == "format_query"]
    assert cases
    for case in cases:
        assert pretty(parse(case["params"]["query"], check_stages=False)) == case["expect"]["data"]


# -- canonical printing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "printed"),
    [
        ('{app="web",  env=~"prod|dev"}', '{app="web", env=~"prod|dev"}'),
        ('{app="web"}|="GET"!~`\\d{3}`', '{app="web"} |= "GET" !~ "\\\\d{3}"'),
        ('{app="web"} |> "<_> GET <_>" !> "<_>x"', '{app="web"} |> "<_> GET <_>" !> "<_>x"'),
        ('{app="web"} |= ip("10.0.0.0/8")', '{app="web"} |= ip("10.0.0.0/8")'),
        ('{app="web"} | json', '{app="web"} | json'),
        ('{app="web"} | json first, second="a.b[0]"', '{app="web"} | json first="first",second="a.b[0]"'),
        ('{app="web"} | logfmt --keep-empty --strict', '{app="web"} | logfmt --strict --keep-empty'),
        ('{app="web"} | logfmt --strict k, v="w"', '{app="web"} | logfmt --strict k="k",v="w"'),
        ('{app="web"} | regexp "(?P<verb>\\\\w+)"', '{app="web"} | regexp "(?P<verb>\\\\w+)"'),
        ('{app="web"} | pattern `<ip> - <_>`', '{app="web"} | pattern "<ip> - <_>"'),
        ('{app="web"} | unpack | decolorize', '{app="web"} | unpack | decolorize'),
        ('{app="web"} | line_format "{{.msg}}"', '{app="web"} | line_format "{{.msg}}"'),
        ('{app="web"} | label_format dst=src, t="{{.a}}"', '{app="web"} | label_format dst=src,t="{{.a}}"'),
        ('{app="web"} | drop a, b="x", c=~"y.*"', '{app="web"} | drop a,b="x",c=~"y.*"'),
        ('{app="web"} | keep a', '{app="web"} | keep a'),
        ('{app="web"} | status = 200', '{app="web"} | status==200'),
        ('{app="web"} | took > 1.5s', '{app="web"} | took>1.5s'),
        ('{app="web"} | took <= 90s', '{app="web"} | took<=1m30s'),
        ('{app="web"} | size >= 9KiB', '{app="web"} | size>=9.2kB'),
        ('{app="web"} | size < 20MB', '{app="web"} | size<20MB'),
        ('{app="web"} | ratio > -0.25', '{app="web"} | ratio>-0.25'),
        ('{app="web"} | src != ip("::1")', '{app="web"} | src!=ip("::1")'),
        ('{app="web"} | path =~ "/v1/.*"', '{app="web"} | path=~"/v1/.*"'),
        ('{app="web"} | path =~ "a|b"', '{app="web"} | path=~`a|b`'),
        ('{app="web"} | path =~ "a`b|c"', '{app="web"} | path=~"a`b|c"'),
        ('{app="web"} | path !~ "a|b"', '{app="web"} | path!~"a|b"'),
        ('{app="web"} | a="1" b="2"', '{app="web"} | ( a="1" , b="2" )'),
        ('count_over_time({app="web"}[300s])', 'count_over_time({app="web"}[5m])'),
        ('rate({app="web"}[1h30m] offset 2h)', 'rate({app="web"}[1h30m] offset 2h0m0s)'),
        ('bytes_rate({app="web"}[7d])', 'bytes_rate({app="web"}[1w])'),
        (
            'avg_over_time({app="web"} | logfmt | unwrap duration_seconds(took) | __error__="" [1m]) by (host)',
            'avg_over_time({app="web"} | logfmt | unwrap duration_seconds(took) | __error__=""[1m]) by (host)',
        ),
        (
            'quantile_over_time(0.99, {app="web"}[5m] | json | unwrap lat) without (pod)',
            'quantile_over_time(0.99,{app="web"} | json | unwrap lat[5m]) without (pod)',
        ),
        ('sum by (a, b) (rate({app="web"}[1m]))', 'sum by (a,b)(rate({app="web"}[1m]))'),
        ('sum(rate({app="web"}[1m])) by (a)', 'sum by (a)(rate({app="web"}[1m]))'),
        ('sum by () (rate({app="web"}[1m]))', 'sum(rate({app="web"}[1m]))'),
        ('sum without () (rate({app="web"}[1m]))', 'sum without ()(rate({app="web"}[1m]))'),
        ('topk(3, rate({app="web"}[1m]))', 'topk(3,rate({app="web"}[1m]))'),
        ('sort_desc(rate({app="web"}[1m]))', 'sort_desc(rate({app="web"}[1m]))'),
        ('rate({app="web"}[1m]) > bool 2', '(rate({app="web"}[1m]) > bool 2)'),
        (
            'rate({app="web"}[1m]) / on (a, b) group_left (c) rate({app="web"}[1m])',
            '(rate({app="web"}[1m]) / on (a,b) group_left (c) rate({app="web"}[1m]))',
        ),
        (
            'rate({app="web"}[1m]) / ignoring (a) group_right rate({app="web"}[1m])',
            '(rate({app="web"}[1m]) / ignoring (a) group_right rate({app="web"}[1m]))',
        ),
        (
            'rate({app="web"}[1m]) + on () rate({app="web"}[1m])',
            '(rate({app="web"}[1m]) + on ()  rate({app="web"}[1m]))',
        ),
        (
            'rate({app="web"}[1m]) + ignoring () rate({app="web"}[1m])',
            '(rate({app="web"}[1m]) + rate({app="web"}[1m]))',
        ),
        (
            'label_replace(rate({app="web"}[1m]), "d", "$1", "s", "(.*)")',
            'label_replace(rate({app="web"}[1m]),"d","$1","s","(.*)")',
        ),
        ("vector(2)", "vector(2.000000)"),
        ("0.000001", "1e-06"),
        ("1000000", "1e+06"),
        ("123456", "123456"),
        ("-7", "-7"),
    ],
)
def test_queries_print_in_lokis_canonical_form(query: str, printed: str) -> None:
    assert str(parse(query)) == printed
    assert str(parse(printed)) == printed


# -- folding and precedence ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("-2 ^ 2", 4.0),
        ("7 % 4 * 2", 6.0),
        ("1 + 1 == 2", 1.0),
        ("3 > 5", 0.0),
        ("3 < 5 > 0", 1.0),
        ("2 > bool 3", 0.0),
        ("1 - -1", 2.0),
        ("+4 / 2", 2.0),
    ],
)
def test_arithmetic_on_numbers_is_folded_with_prometheus_precedence(query: str, value: float) -> None:
    expr = parse(query)
    assert expr == LiteralExpr(value)


@pytest.mark.parametrize("query", ["1 / 0", "5 % 0"])
def test_division_by_zero_folds_to_nan(query: str) -> None:
    expr = parse(query)
    assert isinstance(expr, LiteralExpr)
    assert math.isnan(expr.value)


def test_binary_operators_bind_by_precedence_and_associate_left() -> None:
    rate = 'rate({a="b"}[1m])'
    expr = parse(f"{rate} or {rate} and {rate} + {rate} * {rate} - {rate}")
    assert isinstance(expr, BinOpExpr) and expr.op == "or"
    right = expr.right
    assert isinstance(right, BinOpExpr) and right.op == "and"
    minus = right.right
    assert isinstance(minus, BinOpExpr) and minus.op == "-"
    plus = minus.left
    assert isinstance(plus, BinOpExpr) and plus.op == "+"
    assert isinstance(plus.right, BinOpExpr) and plus.right.op == "*"


def test_power_associates_right() -> None:
    rate = 'rate({a="b"}[1m])'
    expr = parse(f"{rate} ^ {rate} ^ 2")
    assert isinstance(expr, BinOpExpr) and expr.op == "^"
    assert isinstance(expr.right, BinOpExpr) and expr.right.op == "^"


@pytest.mark.parametrize(
    ("filters", "printed"),
    [
        ("a=1 or b=2 and c=3", "( a==1 or ( b==2 , c==3 ) )"),
        ("a=1 and b=2 or c=3", "( ( a==1 , b==2 ) or c==3 )"),
        ("a=1 and b=2 and c=3", "( ( a==1 , b==2 ) , c==3 )"),
        ("a=1 or b=2 or c=3", "( ( a==1 or b==2 ) or c==3 )"),
        ("a=1, b=2 or c=3", "( a==1 , ( b==2 or c==3 ) )"),
        ("a=1 or b=2, c=3", "( a==1 or ( b==2 , c==3 ) )"),
        ("a=1 b=2 or c=3", "( a==1 , ( b==2 or c==3 ) )"),
        ("(a=1 or b=2) and c=3", "( ( a==1 or b==2 ) , c==3 )"),
    ],
)
def test_label_filters_combine_as_lokis_grammar_resolves_them(filters: str, printed: str) -> None:
    expr = parse('{x="y"} | ' + filters)
    assert str(expr) == '{x="y"} | ' + printed


# -- tree shapes ----------------------------------------------------------------------------------


def test_negative_line_filter_with_or_becomes_one_filter_per_value() -> None:
    expr = parse('{a="b"} != "x" or "y" |~ "p" or "q"')
    assert isinstance(expr, PipelineExpr)
    assert expr.stages == (
        LineFilter(LineFilterOp.NOT_CONTAINS, (LineFilterTerm("x"),)),
        LineFilter(LineFilterOp.NOT_CONTAINS, (LineFilterTerm("y"),)),
        LineFilter(LineFilterOp.MATCH, (LineFilterTerm("p"), LineFilterTerm("q"))),
    )


def test_or_chain_can_mix_strings_and_ip() -> None:
    expr = parse('{a="b"} |= "x" or ip("10.0.0.1") or "z"')
    assert isinstance(expr, PipelineExpr)
    assert expr.stages[0] == LineFilter(
        LineFilterOp.CONTAINS, (LineFilterTerm("x"), LineFilterTerm("10.0.0.1", is_ip=True), LineFilterTerm("z"))
    )


def test_range_aggregation_holds_range_offset_unwrap_and_grouping() -> None:
    expr = parse('max_over_time({a="b"} |= "x" | json | unwrap bytes(size) | size > 0 [2m] offset 30s) by (pod)')
    assert isinstance(expr, RangeAggregation)
    assert expr.operation == "max_over_time"
    assert expr.range.range_ns == 120 * 10**9
    assert expr.range.offset_ns == 30 * 10**9
    assert expr.range.unwrap is not None
    assert expr.range.unwrap.label == "size"
    assert expr.range.unwrap.conversion == "bytes"
    assert expr.range.unwrap.post_filters == (NumericLabelFilter("size", CompareOp.GT, 0.0),)
    assert expr.grouping == Grouping(("pod",), without=False)
    assert expr.range.selector.matchers[0].op == MatchOp.EQ
    assert [type(s) for s in expr.range.selector.stages] == [LineFilter, JsonParser]


@pytest.mark.parametrize(
    "query",
    [
        'sum_over_time({a="b"} | logfmt | unwrap v [1m])',
        'sum_over_time({a="b"}[1m] | logfmt | unwrap v)',
        'sum_over_time({a="b"}[1m] offset 1m | logfmt | unwrap v)',
        'sum_over_time(({a="b"} | logfmt | unwrap v)[1m])',
        'sum_over_time(({a="b"})[1m] | unwrap v)',
        'sum_over_time((({a="b"} | logfmt | unwrap v [1m])))',
    ],
)
def test_range_may_come_before_or_after_the_pipeline(query: str) -> None:
    expr = parse(query)
    assert isinstance(expr, RangeAggregation)
    assert expr.range.range_ns == 60 * 10**9
    assert expr.range.unwrap is not None and expr.range.unwrap.label == "v"


def test_unwrap_after_the_range_needs_the_pipeline_after_it_too() -> None:
    with pytest.raises(ParseError, match="unexpected \\|"):
        parse('sum_over_time({a="b"} | logfmt [1m] | unwrap v)')


def test_vector_aggregation_grouping_and_parameter() -> None:
    expr = parse('topk by (a) (5, rate({x="y"}[1m]))')
    assert isinstance(expr, VectorAggregation)
    assert (expr.operation, expr.param, expr.grouping) == ("topk", 5, Grouping(("a",)))


def test_label_filter_values_are_typed() -> None:
    expr = parse('{a="b"} | d > 250ms | s <= 1KB | n != 3 | ip = ip("1.2.3.4") | t =~ "x.+"')
    assert isinstance(expr, PipelineExpr)
    filters = [s.filter for s in expr.stages if isinstance(s, LabelFilterStage)]
    assert filters[0] == DurationLabelFilter("d", CompareOp.GT, 250_000_000)
    assert filters[1] == BytesLabelFilter("s", CompareOp.LTE, 1000)
    assert filters[2] == NumericLabelFilter("n", CompareOp.NEQ, 3.0)
    assert filters[3] == IpLabelFilter("ip", CompareOp.EQ, "1.2.3.4")
    assert isinstance(filters[4], StringLabelFilter) and filters[4].matcher.op == MatchOp.RE


def test_juxtaposed_label_filters_mean_and() -> None:
    expr = parse('{a="b"} | x="1" y="2"')
    assert isinstance(expr, PipelineExpr)
    stage = expr.stages[0]
    assert isinstance(stage, LabelFilterStage) and isinstance(stage.filter, BinaryLabelFilter)
    assert stage.filter.is_and


def test_json_and_logfmt_extractions() -> None:
    expr = parse('{a="b"} | json x, y="a.b" | logfmt --strict k')
    assert isinstance(expr, PipelineExpr)
    assert expr.stages[0] == JsonParser((LabelExtraction("x", "x"), LabelExtraction("y", "a.b")))
    assert expr.stages[1] == LogfmtParser(strict=True, keep_empty=False, extractions=(LabelExtraction("k", "k"),))


def test_function_names_are_label_names_when_no_call_follows() -> None:
    expr = parse('{rate="1", sum="2"} | bytes > 10 | ip="x" | vector="v"')
    assert isinstance(expr, PipelineExpr)
    assert [m.name for m in expr.matchers] == ["rate", "sum"]


def test_keywords_are_case_insensitive() -> None:
    assert str(parse('SUM BY (a) (RATE({x="y"}[1m])) OR VECTOR(1)')) == (
        '(sum by (a)(rate({x="y"}[1m])) or vector(1.000000))'
    )


def test_comments_are_ignored() -> None:
    assert parse('{a="b"} # trailing comment\n |= "x"') == parse('{a="b"} |= "x"')


def test_variants_expression() -> None:
    query = 'variants(count_over_time({a="b"}[1m]), rate({a="b"}[1m])) of ({a="b"}[1m])'
    assert str(parse(query)) == query


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "parse error : syntax error: unexpected $end"),
        ("  ", "parse error at line 1, col 3: syntax error: unexpected $end"),
        ('{job="x"} | logfmt | by > 1', "parse error at line 1, col 22: syntax error: unexpected by"),
        ('{job="x"} | json | bool="t"', "parse error at line 1, col 20: syntax error: unexpected bool"),
        ('bar_over_time({job="x"}[1m])', "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER"),
        (
            '{job="x", env',
            "parse error at line 1, col 14: syntax error: unexpected $end, expecting = or =~ or !~ or !=",
        ),
        ('{job="x", env=', "parse error at line 1, col 15: syntax error: unexpected $end, expecting STRING"),
        ('{job="x" env="y"}', "parse error at line 1, col 10: syntax error: unexpected IDENTIFIER, expecting } or ,"),
        ("{,}", "parse error at line 1, col 2: syntax error: unexpected ,, expecting IDENTIFIER or }"),
        ('{job="x"} |= 5', "parse error at line 1, col 14: syntax error: unexpected NUMBER, expecting STRING or ip"),
        ('{job="x"} |= "a" or', "parse error at line 1, col 20: syntax error: unexpected $end, expecting STRING or ip"),
        ('{job="x"} | unwrap v', "parse error at line 1, col 13: syntax error: unexpected unwrap"),
        ('rate({job="x"})', "parse error at line 1, col 15: syntax error: unexpected )"),
        ('sum({job="x"})', "parse error at line 1, col 14: syntax error: unexpected )"),
        ('max({job="x"}[1m])', "parse error at line 0, col 14: syntax error: unexpected RANGE"),
        ("vector(x)", "parse error at line 1, col 8: syntax error: unexpected IDENTIFIER, expecting NUMBER"),
        (
            'rate(x, {job="x"}[1m])',
            "parse error at line 1, col 6: syntax error: unexpected IDENTIFIER, expecting NUMBER or { or (",
        ),
        (
            'sum without (rate({job="x"}[1m]))',
            "parse error at line 1, col 14: syntax error: unexpected RATE, expecting IDENTIFIER or )",
        ),
        ('rate({job="x"}[1m]) by', "parse error at line 1, col 23: syntax error: unexpected $end, expecting ("),
        (
            'rate({job="x"}[1m] offset 5)',
            "parse error at line 1, col 27: syntax error: unexpected NUMBER, expecting DURATION",
        ),
        ('rate({job="x"}[10parsecs])', 'parse error at line 0, col 15: unknown unit "parsecs" in duration "10parsecs"'),
        ('rate({job="x"}[1m', "parse error at line 0, col 15: missing closing ']' in duration"),
        ('{job="open', "parse error at line 1, col 6: literal not terminated"),
        ('{job="\\q"}', "parse error at line 1, col 6: invalid char escape"),
        ('{job="x"} | n > 09', "parse error at line 1, col 17: invalid digit '9' in octal literal"),
        ("{}", EMPTY_COMPATIBLE),
        ('{job=~".*", env!="x"}', EMPTY_COMPATIBLE),
        ('{job=~"[a"}', "parse error : error parsing regexp: missing closing ]: `[a`"),
        ('{job="x"} | v=~"a**"', "parse error : error parsing regexp: invalid nested repetition operator: `**`"),
        (
            '{job="x"} | regexp "(?P<a-b>.)"',
            "parse error : invalid regexp parser: error parsing regexp: invalid named capture: `(?P<a-b>`",
        ),
        (
            '{job="x"} | regexp "no captures"',
            "parse error : invalid regexp parser: at least one named capture must be supplied",
        ),
        ('{job="x"} | pattern "<_> only"', "parse error : invalid pattern parser: at least one capture is required"),
        (
            '{job="x"} | pattern "<a><b>"',
            "parse error : invalid pattern parser: found consecutive capture '<a><b>': invalid expression",
        ),
        (
            '{job="x"} |~ "a(" |= "b"',
            'parse error : stage \'|~ "a(" |= "b"\' : error parsing regexp: missing closing ): `a(`',
        ),
        ('{job="x"} |> "<x> y"', "parse error : stage '|> \"<x> y\"' : named captures are not allowed: found '<x>'"),
        ('{job="x"} |= ip("1.2.3")', 'parse error : stage \'|= ip("1.2.3")\' : ip: invalid pattern: "1.2.3"'),
        ('{job="x"} |~ ip("1.2.3.4")', "parse error : stage '|~ ip(\"1.2.3.4\")' : ip: invalid operation"),
        ('{job="x"} | addr = ip("nope")', 'parse error : stage \'| addr=ip("nope")\' : ip: invalid pattern: "nope"'),
        (
            'count_over_time({job="x"} | json | unwrap v [1m])',
            "parse error : invalid aggregation count_over_time with unwrap",
        ),
        ('max_over_time({job="x"}[1m])', "parse error : invalid aggregation max_over_time without unwrap"),
        ('rate({job="x"}[1m]) by (a)', "parse error : grouping not allowed for rate aggregation"),
        (
            'quantile_over_time({job="x"} | unwrap v [1m])',
            "parse error : parameter required for operation quantile_over_time",
        ),
        (
            'min_over_time(2, {job="x"} | unwrap v [1m])',
            "parse error : parameter 2 not supported for operation min_over_time",
        ),
        ('topk(rate({job="x"}[1m]))', "parse error : parameter required for operation topk"),
        ('topk(1.5, rate({job="x"}[1m]))', "parse error : invalid parameter topk(1.5,"),
        ('bottomk(0, rate({job="x"}[1m]))', "parse error : invalid parameter (must be greater than 0) bottomk(0"),
        ('avg(2, rate({job="x"}[1m]))', "parse error : unsupported parameter for operation avg(2,"),
        ('sort_desc by (a) (rate({job="x"}[1m]))', "parse error : sort and sort_desc doesn't allow grouping by "),
        (
            'rate({job="x"}[1m]) or 1',
            "parse error : unexpected literal for right leg of logical/set binary operation (or): 1.000000",
        ),
        ('{job="x"} + 1', "parse error : unexpected type for left leg of binary operation (+): *syntax.MatchersExpr"),
        (
            '1 > {job="x"} |= "a"',
            "parse error : unexpected type for right leg of binary operation (>): *syntax.PipelineExpr",
        ),
        (
            'label_replace(rate({job="x"}[1m]), "a", "b", "c", "\\\\y")',
            "parse error : invalid regex in label_replace: error parsing regexp: invalid escape sequence: `\\y`",
        ),
    ],
)
def test_invalid_queries_fail_with_lokis_message_and_position(query: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(query)
    assert str(info.value) == message


def test_deferred_errors_come_after_syntax_errors() -> None:
    # The aggregation error is only reported once the whole query is read; the syntax error wins.
    with pytest.raises(ParseError, match="unexpected IDENTIFIER"):
        parse('max_over_time({job="x"}[1m]) junk')


def test_outer_deferred_error_wins_over_inner_one() -> None:
    with pytest.raises(ParseError, match="unexpected type for right leg"):
        parse('max_over_time({job="x"}[1m]) + {job="x"}')


def test_stage_errors_can_be_left_to_the_caller() -> None:
    # format_query parses without building pipelines, so a bad filter regex is accepted there.
    expr = parse('{job="x"} |~ "("', check_stages=False)
    assert str(expr) == '{job="x"} |~ "("'


def test_too_long_query_is_rejected() -> None:
    with pytest.raises(ParseError, match=r"input size too long \(131072 > 131072\)"):
        parse("{" + "a" * 131070 + "}")


# -- pretty printing (format_query) --------------------------------------------------------------


def test_short_queries_pretty_print_on_one_line() -> None:
    query = 'sum by (a) (rate({x="y"} |= "e" [1m]))'
    assert pretty(parse(query)) == str(parse(query))


def test_long_pipeline_puts_each_stage_on_its_own_line() -> None:
    query = '{service="checkout", env="prod"} |= "payment" != "retry" | json | status >= 500 | line_format "{{.msg}}"'
    assert pretty(parse(query), width=40) == (
        '{service="checkout", env="prod"}\n'
        '  |= "payment" != "retry"\n'
        "  | json\n"
        "  | status>=500\n"
        '  | line_format "{{.msg}}"'
    )


def test_long_aggregation_is_split_around_its_argument() -> None:
    query = 'sum by (pod) (count_over_time({service="checkout"} | logfmt | json [5m] offset 1h)) / 2'
    assert pretty(parse(query), width=30) == (
        "  sum by (pod)(\n"
        "    count_over_time(\n"
        '      {service="checkout"}\n'
        "        | logfmt\n"
        "        | json [5m] offset 1h\n"
        "    )\n"
        "  )\n"
        "/\n"
        "  2"
    )


# -- lexer ------------------------------------------------------------------------------------------


def test_durations_bytes_and_flags_are_single_tokens() -> None:
    kinds = [t.kind for t in tokenize("| logfmt --strict | d > 1h30m | s < 5MiB | n == 3 | o > -2s")]
    assert kinds == [
        Tok.PIPE, Tok.LOGFMT, Tok.FUNCTION_FLAG,
        Tok.PIPE, Tok.IDENTIFIER, Tok.GT, Tok.DURATION,
        Tok.PIPE, Tok.IDENTIFIER, Tok.LT, Tok.BYTES,
        Tok.PIPE, Tok.IDENTIFIER, Tok.CMP_EQ, Tok.NUMBER,
        Tok.PIPE, Tok.IDENTIFIER, Tok.GT, Tok.DURATION,
        Tok.END,
    ]  # fmt: skip


# -- properties -------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(_TEXT)
def test_any_string_survives_quoting_in_selectors_and_filters(value: str) -> None:
    query = '{app="x", v=' + quote(value) + "} |= " + quote(value)
    expr = parse(query)
    assert isinstance(expr, PipelineExpr)
    assert expr.matchers[1].value == value
    assert expr.stages[0] == LineFilter(LineFilterOp.CONTAINS, (LineFilterTerm(value),))
    assert parse(str(expr)) == expr


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="`"), max_size=30))
def test_backtick_strings_are_raw(value: str) -> None:
    expr = parse('{app="x"} |~ `' + value + "`", check_stages=False)
    assert isinstance(expr, PipelineExpr)
    assert expr.stages[0].value == value  # type: ignore[attr-defined]


_UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


@given(st.lists(st.integers(0, 50), min_size=len(_UNITS) + 1, max_size=len(_UNITS) + 1))
def test_range_durations_parse_and_print_like_prometheus(counts: list[int]) -> None:
    assume(any(counts))
    text = "".join(f"{c}{u}" for c, (u, _) in zip(counts, _UNITS, strict=False) if c) + (
        f"{counts[-1]}ms" if counts[-1] else ""
    )
    ns = sum(c * s for c, (_, s) in zip(counts, _UNITS, strict=False)) * 10**9 + counts[-1] * 10**6
    assert parse_prometheus_duration(text) == ns
    expr = parse(f'rate({{a="b"}}[{text}])')
    assert isinstance(expr, RangeAggregation) and expr.range.range_ns == ns
    assert parse_prometheus_duration(prometheus_duration(ns)) == ns


@given(st.integers(-(10**15), 10**15))
def test_go_duration_text_parses_back_to_the_same_nanoseconds(ns: int) -> None:
    text = go_duration(ns)
    assert parse_go_duration(text) == ns
    expr = parse('{a="b"} | d > ' + text)
    assert isinstance(expr, PipelineExpr)
    assert expr.stages[0] == LabelFilterStage(DurationLabelFilter("d", CompareOp.GT, ns))


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_printed_numbers_parse_back_to_the_same_value(value: float) -> None:
    assert parse(format_float_v(value)) == LiteralExpr(value)
    expr = parse('{a="b"} | n >= ' + format_float_f(value))
    assert isinstance(expr, PipelineExpr)
    assert expr.stages[0] == LabelFilterStage(NumericLabelFilter("n", CompareOp.GTE, value))


@given(st.integers(1, 999 * 10**12))
def test_printed_byte_sizes_read_back_close_to_the_value(size: int) -> None:
    # Loki prints sizes with about three significant digits, so the printed form only approximates
    # the value. Zero ("0B"), petabytes and exabytes ("1PB", "1EB") print as text its own lexer
    # rejects (as a binary literal or an exponent), so they are left out.
    expr = parse('{a="b"} | s > ' + humanize_bytes(size))
    assert isinstance(expr, PipelineExpr)
    reread = parse(str(expr))
    assert isinstance(reread, PipelineExpr)
    value = reread.stages[0].filter.value  # type: ignore[attr-defined]
    assert abs(value - size) <= 0.06 * size


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_vector_literal_keeps_six_decimals(value: float) -> None:
    expr = parse(f"vector({value:f})")
    assert isinstance(expr, VectorExpr)
    assert str(expr) == f"vector({expr.value:f})"


_ALPHABET = st.sampled_from(
    [*'{}()[],|=~!><"`#+-*/%^ \n', "a", "1", "5m", "or", "and", "by", "sum", "rate", "json", "unwrap", "ip"]
)


@settings(max_examples=300)
@given(st.lists(_ALPHABET, max_size=25))
def test_arbitrary_input_either_parses_or_raises_parse_error(parts: list[str]) -> None:
    query = "".join(parts)
    try:
        expr = parse(query)
    except ParseError:
        return
    assert isinstance(str(expr), str)


def test_matchers_expr_without_pipeline_is_returned_as_is() -> None:
    expr = parse('{a="b"}')
    assert isinstance(expr, MatchersExpr) and expr.stages == ()
