"""Line filters keep exactly the lines Loki keeps, over whole columns at once."""

from __future__ import annotations

import ipaddress

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.logql import (
    Decolorize,
    JsonParser,
    LabelFilterStage,
    LineFilter,
    LineFormat,
    ParseError,
    PipelineExpr,
    execution_order,
    label_matcher_mask,
    line_filter_mask,
    matcher_matches_empty,
    parse,
    parse_ip_pattern,
    parse_pattern,
)
from loglake.logql.linefilter import PatternNode, ip_in_text
from loglake.logql.regex import RegexError, loki_text_match, parse_regex
from loglake.model import LabelMatcher, MatchOp
from loglake.quoting import quote


def filters_of(pipeline: str) -> list[LineFilter]:
    expr = parse('{app="x"} ' + pipeline)
    assert isinstance(expr, PipelineExpr)
    return [s for s in expr.stages if isinstance(s, LineFilter)]


def keep(pipeline: str, lines: list[str]) -> list[str]:
    mask = line_filter_mask(filters_of(pipeline), pa.array(lines, pa.large_string()))
    return [line for line, kept in zip(lines, mask, strict=True) if kept]


LINES = [
    "GET /api/users 200",
    "POST /api/orders 500 error",
    "get /health 200",
    "ERROR: disk full",
    "",
    "timeout after 30s",
    "naïve café ünïcode",
]

# -- substring filters ------------------------------------------------------------------------------


def test_contains_keeps_lines_with_the_text() -> None:
    assert keep('|= "api"', LINES) == ["GET /api/users 200", "POST /api/orders 500 error"]


def test_not_contains_drops_lines_with_the_text() -> None:
    assert keep('!= "api"', LINES) == [x for x in LINES if "api" not in x]


def test_contains_is_case_sensitive() -> None:
    assert keep('|= "error"', LINES) == ["POST /api/orders 500 error"]


def test_empty_text_keeps_everything_and_its_negation_drops_everything() -> None:
    assert keep('|= ""', LINES) == LINES
    assert keep('!= ""', LINES) == []


def test_consecutive_filters_all_apply() -> None:
    assert keep('|= "api" != "500" |= "200"', LINES) == ["GET /api/users 200"]


def test_or_keeps_lines_with_any_value() -> None:
    assert keep('|= "disk" or "health"', LINES) == ["get /health 200", "ERROR: disk full"]


def test_negated_or_keeps_lines_with_none_of_the_values() -> None:
    assert keep('!= "api" or "200"', LINES) == ["ERROR: disk full", "", "timeout after 30s", "naïve café ünïcode"]


def test_non_ascii_text_is_found() -> None:
    assert keep('|= "café"', LINES) == ["naïve café ünïcode"]


@given(st.lists(st.text(alphabet="abc é\n", max_size=8), max_size=20), st.text(alphabet="abc é", max_size=3))
def test_contains_agrees_with_python_substring_search(lines: list[str], needle: str) -> None:
    assert keep("|= " + quote(needle), lines) == [x for x in lines if needle in x]
    assert keep("!= " + quote(needle), lines) == [x for x in lines if needle not in x]


def test_null_lines_are_empty_lines_and_chunked_input_works() -> None:
    lines = pa.chunked_array([pa.array(["a", None], pa.large_string()), pa.array(["b"], pa.large_string())])
    assert line_filter_mask(filters_of('!= "a"'), lines).tolist() == [False, True, True]


def test_no_filters_keep_every_line() -> None:
    assert line_filter_mask([], pa.array(["x", "y"])).tolist() == [True, True]


# -- regex filters ----------------------------------------------------------------------------------


def test_regex_is_unanchored() -> None:
    assert keep('|~ "5[0-9]{2}"', LINES) == ["POST /api/orders 500 error"]


def test_case_insensitive_regex() -> None:
    assert keep('|~ "(?i)error"', LINES) == ["POST /api/orders 500 error", "ERROR: disk full"]


def test_regex_alternation_of_literals() -> None:
    assert keep('|~ "disk|timeout"', LINES) == ["ERROR: disk full", "timeout after 30s"]


def test_negated_regex() -> None:
    assert keep('!~ "^[A-Z]"', LINES) == [x for x in LINES if not x[:1].isupper()]


def test_perl_classes_are_ascii_as_in_go() -> None:
    lines = ["٣", "3", "é", "e", "\u00a0", " "]
    assert keep('|~ "\\\\d"', lines) == ["3"]
    assert keep('|~ "^\\\\w$"', lines) == ["3", "e"]
    assert keep('|~ "\\\\s"', lines) == [" "]


def test_dollar_is_end_of_text_and_dot_skips_newlines() -> None:
    assert keep('|~ "a$"', ["a\n", "a", "ba"]) == ["a", "ba"]
    assert keep('|~ "a.b"', ["a\nb", "axb"]) == ["axb"]
    assert keep('|~ "(?s)a.b"', ["a\nb", "axb"]) == ["a\nb", "axb"]


def test_go_only_syntax_runs() -> None:
    # \Q...\E, octal escapes and `[\d-z]` are Go syntax that polars' engine would reject as written.
    assert keep('|~ "\\\\Q1+1\\\\E"', ["1+1=2", "11"]) == ["1+1=2"]
    assert keep('|~ "\\\\101"', ["A", "a"]) == ["A"]
    assert keep('|~ "^[\\\\d-z]+$"', ["1-z", "1-y"]) == ["1-z"]


def test_dot_plus_alone_keeps_any_non_empty_line_as_loki_does() -> None:
    # Loki replaces `.+` with "is not empty", so a line of newlines is kept.
    assert keep('|~ ".+"', ["\n", "", "x"]) == ["\n", "x"]


def test_alternatives_that_match_everything_are_dropped_as_in_loki() -> None:
    # Loki reads `a|` and `a|.*` as "contains a": its literal shortcut drops an always-true branch.
    assert keep('|~ "a|"', ["a", "b", ""]) == ["a"]
    assert keep('|~ "a|.*"', ["a", "b"]) == ["a"]


_ATOMS = st.sampled_from(
    [
        "a",
        "b",
        "A",
        ".",
        "é",
        " ",
        "1",
        "\\d",
        "\\w",
        "\\s",
        "\\b",
        "[a-c]",
        "[^b]",
        "\\.",
        "^",
        "$",
        "\\pL",
        "[[:alpha:]]",
    ]
)


def _regexes() -> st.SearchStrategy[str]:
    return st.recursive(
        _ATOMS,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map("|".join),
            inner.map(lambda x: f"({x})"),
            inner.map(lambda x: f"(?i:{x})"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "{1,2}", "*?", "{2}"])).map(lambda t: f"(?:{t[0]}){t[1]}"),
        ),
        max_leaves=6,
    )


@settings(max_examples=200, deadline=None)
@given(_regexes(), st.lists(st.text(alphabet="abcAB1 .\né٣", max_size=10), min_size=1, max_size=10))
def test_regex_filters_agree_with_re2(pattern: str, lines: list[str]) -> None:
    # RE2 has Go's regex semantics. Regexes Loki reduces to literal tests are covered elsewhere:
    # there Loki's results can differ from the regex's (see the quirks below).
    if loki_text_match(pattern, is_label=False) is not None:
        return
    expected = pc.match_substring_regex(pa.array(lines, pa.string()), pattern).to_pylist()
    assert keep("|~ " + quote(pattern), lines) == [x for x, m in zip(lines, expected, strict=True) if m]
    assert keep("!~ " + quote(pattern), lines) == [x for x, m in zip(lines, expected, strict=True) if not m]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(open", "error parsing regexp: missing closing ): `(open`"),
        ("close)", "error parsing regexp: unexpected ): `close)`"),
        ("[z-a]", "error parsing regexp: invalid character class range: `z-a`"),
        ("x[ab", "error parsing regexp: missing closing ]: `[ab`"),
        ("+x", "error parsing regexp: missing argument to repetition operator: `+`"),
        ("x++", "error parsing regexp: invalid nested repetition operator: `++`"),
        ("x{1001}", "error parsing regexp: invalid repeat count: `{1001}`"),
        ("x{3,2}", "error parsing regexp: invalid repeat count: `{3,2}`"),
        ("a\\", "error parsing regexp: trailing backslash at end of expression: ``"),
        ("\\y", "error parsing regexp: invalid escape sequence: `\\y`"),
        ("\\1", "error parsing regexp: invalid escape sequence: `\\1`"),
        ("\\C", "error parsing regexp: invalid escape sequence: `\\C`"),
        ("(?=x)", "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
        ("(?<=x)", "error parsing regexp: invalid named capture: `(?<=x)`"),
        ("(?P<na-me>x)", "error parsing regexp: invalid named capture: `(?P<na-me>`"),
        ("\\p{Klingon}", "error parsing regexp: invalid character class range: `\\p{Klingon}`"),
        ("[[:vowel:]]", "error parsing regexp: invalid character class range: `[:vowel:]`"),
    ],
)
def test_invalid_regexes_fail_with_gos_message(pattern: str, message: str) -> None:
    with pytest.raises(RegexError) as info:
        parse_regex(pattern)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "pattern", ["(?P<n>x)(?P<n>y)", "(?<n>x)", "x{,2}", "a{", "\\x{1F600}", "(?i)k", "(?U)a+", "\\z\\A", "(?m)^a$"]
)
def test_go_accepts_these_regexes(pattern: str) -> None:
    parse_regex(pattern)
    keep("|~ " + quote(pattern), ["x", "y"])


@pytest.mark.parametrize(
    ("pattern", "is_label", "expected"),
    [
        ("error", False, ("contains", "error")),
        ("error", True, ("equal", "error")),
        ("api/.*", True, ("contains", "api/")),
        (".*", False, ("true", "")),
        (".+", False, ("exists", "")),
        ("a.*b", False, None),
        ("a|b", False, None),
        ("ab|cd", False, ("or", "")),
        ("^ab$", False, None),
    ],
)
def test_regexes_loki_replaces_with_literal_tests(
    pattern: str, is_label: bool, expected: tuple[str, str] | None
) -> None:
    match = loki_text_match(pattern, is_label)
    if expected is None:
        assert match is None
    else:
        assert match is not None and (match.kind, match.text) == expected


# -- pattern filters --------------------------------------------------------------------------------


def loki_pattern_test(nodes: list[PatternNode], line: str) -> bool:
    """Loki's pattern line filter, written out plainly: each literal is searched once, in order."""
    data = line.encode()
    if not data or not nodes:
        return not data and not nodes
    offset = 0
    for i, node in enumerate(nodes):
        if node.is_capture:
            continue
        literal = node.text.encode()
        found = data.find(literal, offset)
        if found < 0 or (i != 0 and found == offset):
            return False
        offset = found + len(literal)
    return nodes[-1].is_capture == (offset != len(data))


def test_pattern_filter_matches_the_shape_of_the_line() -> None:
    lines = ["GET /a 200", "POST /a 500", "GET /b"]
    assert keep('|> "GET <_> <_>"', lines) == ["GET /a 200"]
    assert keep('!> "GET <_> <_>"', lines) == ["POST /a 500", "GET /b"]


def test_empty_pattern_keeps_only_empty_lines() -> None:
    assert keep('|> ""', ["", "x"]) == [""]


def test_pattern_or() -> None:
    assert keep('|> "<_> 200" or "<_> 500"', ["a 200", "a 500", "a 404"]) == ["a 200", "a 500"]


@given(
    st.lists(st.sampled_from(["<_>", "a", "b", " ", "ab"]), min_size=1, max_size=5),
    st.lists(st.text(alphabet="ab ", max_size=8), max_size=15),
)
def test_pattern_filter_agrees_with_lokis_algorithm(parts: list[str], lines: list[str]) -> None:
    pattern = "".join(parts)
    if "<_><_>" in pattern:
        return
    nodes = parse_pattern(pattern)
    assert keep("|> " + quote(pattern), lines) == [x for x in lines if loki_pattern_test(nodes, x)]


# -- ip() filters -----------------------------------------------------------------------------------


def loki_ip_scan(pattern: str, line: str) -> bool:
    """Loki's ip() line scan, byte by byte."""
    matcher = parse_ip_pattern(pattern)
    data = line.encode()
    digits, hexdigits = b"0123456789", b"0123456789abcdefABCDEF"

    def v4(i: int) -> bool:
        return data[i] in digits and (data[i + 1] == 46 or data[i + 2] == 46 or data[i + 3] == 46)

    def v6(i: int) -> bool:
        d, h = data, hexdigits
        return (
            (d[i] == 58 and d[i + 1] == 58 and d[i + 2] in h)
            or (d[i] in h and d[i + 1] == 58)
            or (d[i] in h and d[i + 1] in h and d[i + 2] == 58)
            or (d[i] in h and d[i + 1] in h and d[i + 2] in h and d[i + 3] == 58)
            or (d[i] in h and d[i + 1] in h and d[i + 2] in h and d[i + 3] in h and d[i + 4] == 58)
        )

    def attempt(i: int, charset: bytes) -> tuple[bool, int]:
        j = i
        while j < len(data) and data[j] in charset:
            j += 1
        try:
            ip = ipaddress.ip_address(data[i:j].decode())
        except ValueError:
            return False, j - i
        if isinstance(matcher, tuple):
            ok = ip.version == matcher[0].version and matcher[0] <= ip <= matcher[1]  # type: ignore[operator]
        elif isinstance(matcher, ipaddress.IPv4Network | ipaddress.IPv6Network):
            ok = ip.version == matcher.version and ip in matcher
        else:
            ok = ip == matcher
        return ok, j - i

    n = len(data)
    i = 0
    while i < n:
        if i + 3 < n and v4(i):
            ok, length = attempt(i, b"0123456789.")
            if ok:
                return True
            i += length + 1
            continue
        if i + 4 < n and v6(i):
            ok, length = attempt(i, b"0123456789abcdefABCDEF:.")
            if ok:
                return True
            i += length + 1
            continue
        i += 1
    return False


IP_LINES = [
    "client 192.168.1.20 connected",
    "client 10.0.0.1 refused",
    "from 10.0.0.1.",
    "peer ::1 ok",
    "peer 2001:db8::5 ok",
    "v=1.2.3",
    "no address",
    "192.168.1.255",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("192.168.1.20", ["client 192.168.1.20 connected"]),
        ("192.168.0.0/16", ["client 192.168.1.20 connected", "192.168.1.255"]),
        ("10.0.0.0-10.0.0.9", ["client 10.0.0.1 refused"]),
        ("::1", ["peer ::1 ok"]),
        ("2001:db8::/32", ["peer 2001:db8::5 ok"]),
    ],
)
def test_ip_filter_finds_addresses_in_lines(pattern: str, expected: list[str]) -> None:
    assert keep(f'|= ip("{pattern}")', IP_LINES) == expected


def test_ip_followed_by_a_dot_does_not_match_as_in_loki() -> None:
    assert keep('|= ip("10.0.0.1")', ["from 10.0.0.1.", "from 10.0.0.1"]) == ["from 10.0.0.1"]


def test_ip_in_an_or_chain_is_a_plain_substring_as_in_loki() -> None:
    assert keep('|= ip("10.0.0.1") or "zzz"', ["110.0.0.12", "10.0.0.2"]) == ["110.0.0.12"]


def test_negated_ip_filter() -> None:
    assert keep('!= ip("10.0.0.0/8")', IP_LINES) == [x for x in IP_LINES if x != "client 10.0.0.1 refused"]


@given(
    st.sampled_from(["1.2.3.4", "1.2.0.0/16", "1.2.3.0-1.2.3.9", "::1", "a:b::/32", "0.0.0.0/0"]),
    st.lists(st.text(alphabet="0123.:ab x", max_size=16), max_size=10),
)
def test_ip_filter_agrees_with_lokis_scan(pattern: str, lines: list[str]) -> None:
    assert keep(f'|= ip("{pattern}")', lines) == [x for x in lines if loki_ip_scan(pattern, x)]


@pytest.mark.parametrize("pattern", ["1.2.3", "1.2.3.4/33", "10.0.0.9-10.0.0.1", "1.2.3.4-::1", "01.2.3.4", "x"])
def test_invalid_ip_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(ValueError, match="ip: invalid pattern"):
        parse_ip_pattern(pattern)


def test_ip_label_scan_matches_whole_value() -> None:
    assert ip_in_text(parse_ip_pattern("10.0.0.0/8"), "10.1.2.3")
    assert not ip_in_text(parse_ip_pattern("10.0.0.0/8"), "11.1.2.3")


# -- label text filters -----------------------------------------------------------------------------


def test_label_equality_and_regex_filters() -> None:
    values = pa.array(["GET", "POST", "", "get", None])
    eq = LabelMatcher("method", MatchOp.EQ, "GET")
    assert label_matcher_mask(eq, values).tolist() == [True, False, False, False, False]
    missing = LabelMatcher("method", MatchOp.EQ, "")
    assert label_matcher_mask(missing, values).tolist() == [False, False, True, False, True]
    regex = LabelMatcher("method", MatchOp.RE, "G.T|P[O]ST")
    assert label_matcher_mask(regex, values).tolist() == [True, True, False, False, False]
    folded = LabelMatcher("method", MatchOp.RE, "(?i)get")
    assert label_matcher_mask(folded, values).tolist() == [True, False, False, True, False]


def test_label_regex_is_anchored_unless_loki_reads_it_as_contains() -> None:
    values = pa.array(["/api/v1/x", "/x/api/v1/", "api"])
    anchored = LabelMatcher("path", MatchOp.RE, "/api/v[0-9]/.*")
    assert label_matcher_mask(anchored, values).tolist() == [True, False, False]
    # Loki turns a literal followed by `.*` into a substring test, so this one is not anchored.
    literal = LabelMatcher("path", MatchOp.RE, "/api/v1/.*")
    assert label_matcher_mask(literal, values).tolist() == [True, True, False]
    negated = LabelMatcher("path", MatchOp.NRE, "/api/v1/.*")
    assert label_matcher_mask(negated, values).tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (MatchOp.EQ, "", True),
        (MatchOp.EQ, "x", False),
        (MatchOp.NEQ, "x", True),
        (MatchOp.RE, ".*", True),
        (MatchOp.RE, ".+", False),
        (MatchOp.RE, "a|", True),
        (MatchOp.NRE, "x", True),
        (MatchOp.NRE, ".*", False),
    ],
)
def test_matchers_that_accept_a_missing_label(op: MatchOp, value: str, expected: bool) -> None:
    assert matcher_matches_empty(LabelMatcher("l", op, value)) is expected


# -- stage order ------------------------------------------------------------------------------------


def test_line_filters_run_before_parsers_and_decolorize_but_not_across_label_filters() -> None:
    expr = parse('{a="b"} | json |= "x" | decolorize |= "y" | level="error" |= "z" | line_format "{{.m}}" |= "w"')
    assert isinstance(expr, PipelineExpr)
    order = execution_order(expr.stages)
    kinds = [tuple(f.value for f in item) if isinstance(item, tuple) else type(item) for item in order]
    assert kinds == [("x", "y"), JsonParser, Decolorize, LabelFilterStage, ("z",), LineFormat, ("w",)]


def test_stage_error_names_the_whole_group_of_line_filters() -> None:
    with pytest.raises(ParseError) as info:
        parse('{a="b"} |= "x" | json |~ "(" | level="e"')
    assert str(info.value) == 'parse error : stage \'|= "x" |~ "("\' : error parsing regexp: missing closing ): `(`'


# -- speed guard --------------------------------------------------------------------------------------


def test_filters_never_fall_back_to_a_python_loop_over_every_line() -> None:
    lines = pa.array(["x" * 100] * 200_000, pa.large_string())
    series = pl.from_arrow(lines)
    for pipeline in ('|= "y"', '|~ "a[0-9]+b"', '|> "<_>y<_>"', '|= ip("10.0.0.1")'):
        mask = line_filter_mask(filters_of(pipeline), series)
        assert not np.any(mask)
