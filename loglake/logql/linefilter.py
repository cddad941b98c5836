"""Line filters and label text filters with Loki's semantics, evaluated over whole Arrow columns.

`line_filter_mask` runs the line filter stages of a pipeline over a column of lines: substring tests
with polars' literal search, regexes through polars (the pattern rewritten with Go's meaning) or
pyarrow's RE2, pattern filters (`|>`) with polars string splits, and `ip()` filters in Python over
the lines that can hold an address. Loki's shortcuts are kept where they change results: a regex
made of literals is a substring test, and in an `or` chain `ip("...")` is a plain substring.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loglake.logql.ast import (
    Expr,
    IpLabelFilter,
    LabelFilterStage,
    LabelFormat,
    LineFilter,
    LineFilterOp,
    LineFormat,
    LogSelectorExpr,
    Stage,
    UnpackParser,
)
from loglake.logql.lexer import ParseError
from loglake.logql.regex import (
    DOT_NL,
    FOLD_CASE,
    PERL,
    Node,
    Op,
    RegexError,
    TextMatch,
    loki_text_match,
    parse_regex,
    to_rust,
)
from loglake.model import LabelMatcher, MatchOp
from loglake.quoting import quote

__all__ = [
    "IpPatternError",
    "PatternNode",
    "PatternSyntaxError",
    "check_pipeline",
    "execution_order",
    "label_matcher_mask",
    "line_filter_mask",
    "matcher_matches_empty",
    "parse_ip_pattern",
    "parse_pattern",
    "regex_for_polars",
]

Lines = pa.Array | pa.ChunkedArray

# -- pattern syntax (`|>` filters and the `pattern` parser) ------------------------------------------


class PatternSyntaxError(ValueError):
    """A pattern Loki's pattern parser cannot read."""


@dataclass(frozen=True)
class PatternNode:
    """A piece of a pattern: literal text, or a capture `<name>` (`<_>` captures nothing)."""

    text: str
    is_capture: bool


_CAPTURE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")


def parse_pattern(pattern: str) -> list[PatternNode]:
    """Split a pattern into literals and captures as Loki's pattern lexer does."""
    if not pattern:
        raise PatternSyntaxError("parse error at line 1, col 1: syntax error: unexpected $end")
    nodes: list[PatternNode] = []
    literal: list[str] = []
    i = 0
    while i < len(pattern):
        m = _CAPTURE.match(pattern, i)
        if m is not None:
            if literal:
                nodes.append(PatternNode("".join(literal), False))
                literal = []
            nodes.append(PatternNode(m.group(1), True))
            i = m.end()
            continue
        literal.append(pattern[i])
        i += 1
    if literal:
        nodes.append(PatternNode("".join(literal), False))
    return nodes


def _pattern_filter_error(pattern: str) -> str:
    """Return Loki's error for a pattern used as a line filter, or "" when it is fine."""
    if not pattern:
        return ""
    nodes = parse_pattern(pattern)
    for a, b in itertools.pairwise(nodes):
        if a.is_capture and b.is_capture:
            return f"found consecutive capture '<{a.text}><{b.text}>': invalid expression"
    for node in nodes:
        if node.is_capture and node.text != "_":
            return f"named captures are not allowed: found '<{node.text}>'"
    return ""


def _pattern_mask(pattern: str, lines: pl.Series) -> np.ndarray:
    """Test lines against a `|>` pattern exactly as Loki does (each literal at its first occurrence)."""
    nodes = parse_pattern(pattern) if pattern else []
    lengths = lines.str.len_bytes()
    if not nodes:
        return (lengths == 0).fill_null(False).to_numpy()
    ok = (lengths > 0).fill_null(False)
    remaining = lines.fill_null("")
    for i, node in enumerate(nodes):
        if node.is_capture:
            continue
        parts = remaining.str.splitn(node.text, 2)
        before = parts.struct.field("field_0")
        after = parts.struct.field("field_1")
        ok = ok & after.is_not_null()
        if i != 0:
            # A literal that follows a capture must not start where the capture starts.
            ok = ok & (before.str.len_bytes() > 0).fill_null(False)
        remaining = after.fill_null("")
    has_rest = remaining.str.len_bytes() > 0
    needs_rest = nodes[-1].is_capture
    ok = ok & (has_rest == needs_rest)
    return ok.fill_null(False).to_numpy()


# -- ip() -----------------------------------------------------------------------------------------


class IpPatternError(ValueError):
    """An ip() argument that is not an address, a CIDR prefix or an address range."""


IpMatcher = (
    ipaddress.IPv4Address
    | ipaddress.IPv6Address
    | ipaddress.IPv4Network
    | ipaddress.IPv6Network
    | tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address]
)


def _parse_addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not text or text != text.strip() or "/" in text:
        raise ValueError(text)
    return ipaddress.ip_address(text)


@lru_cache(maxsize=256)
def parse_ip_pattern(pattern: str) -> IpMatcher:
    """Parse an ip() argument as Loki does: a single address, a CIDR prefix, or `from-to`."""
    try:
        return _parse_addr(pattern)
    except ValueError:
        pass
    if "/" in pattern:
        addr_text, _, bits = pattern.rpartition("/")
        try:
            addr = _parse_addr(addr_text)
            if "%" in addr_text or not bits.isascii() or not bits.isdigit() or (len(bits) > 1 and bits[0] == "0"):
                raise ValueError(pattern)
            if int(bits) > addr.max_prefixlen:
                raise ValueError(pattern)
            return ipaddress.ip_network(f"{addr}/{int(bits)}", strict=False)
        except ValueError:
            pass
    if "-" in pattern:
        first, _, last = pattern.partition("-")
        try:
            lo, hi = _parse_addr(first), _parse_addr(last)
            if lo.version == hi.version and "%" not in pattern and lo <= hi:  # type: ignore[operator]
                return (lo, hi)
        except (ValueError, TypeError):
            pass
    raise IpPatternError(f"ip: invalid pattern: {quote(pattern)}")


def _ip_contains(matcher: IpMatcher, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(matcher, tuple):
        lo, hi = matcher
        return ip.version == lo.version and lo <= ip <= hi  # type: ignore[operator]
    if isinstance(matcher, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return ip.version == matcher.version and ip in matcher
    return ip.version == matcher.version and ip == matcher


# Where Loki's scan tries to read an address: a digit with a dot within the next three bytes
# (IPv4), or up to four hex digits then ':' or '::' then a hex digit (IPv6). Both need the bytes
# they look at to exist (four and five bytes).
_V4_HINT = rb"[0-9](?:\.[\s\S]{2}|[\s\S]\.[\s\S]|[\s\S]{2}\.)"
_V6_HINT = rb"(?=[\s\S]{5})(?:::[0-9a-fA-F]|[0-9a-fA-F](?::|[0-9a-fA-F](?::|[0-9a-fA-F](?::|[0-9a-fA-F]:))))"
_IP_HINT = re.compile(rb"(?=(" + _V4_HINT + rb"))|(?=" + _V6_HINT + rb")")
_V4_SPAN = re.compile(rb"[0-9.]*")
_V6_SPAN = re.compile(rb"[0-9a-fA-F:.]*")


@lru_cache(maxsize=65536)
def _parse_span(span: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(span.decode())
    except ValueError:
        return None


def ip_in_text(matcher: IpMatcher, text: str) -> bool:
    """Say whether `text` holds an address `matcher` accepts, scanning as Loki's ip() filter does.

    Loki reads the longest run of address characters from each place that looks like the start
    of an address, and resumes after the run (and one more byte) when the run is not a match.
    """
    line = text.encode()
    i = 0
    while True:
        m = _IP_HINT.search(line, i)
        if m is None:
            return False
        i = m.start()
        span_re = _V4_SPAN if m.group(1) is not None else _V6_SPAN
        end = span_re.match(line, i).end()  # type: ignore[union-attr]
        ip = _parse_span(line[i:end])
        if ip is not None and _ip_contains(matcher, ip):
            return True
        i = end + 1


def ip_label_matches(matcher: IpMatcher, value: str) -> bool:
    """Say whether a label value holds an address `matcher` accepts (Loki's ip() label filter)."""
    return ip_in_text(matcher, value)


def _ip_prefilter(matcher: IpMatcher) -> tuple[str, bool]:
    """Return a test every line holding a matching address passes: (text, is_literal)."""
    if isinstance(matcher, ipaddress.IPv4Address):
        return str(matcher), True
    if isinstance(matcher, ipaddress.IPv4Network):
        octets = matcher.prefixlen // 8
        if octets == 4:
            return str(matcher.network_address), True
        if octets > 0:
            # IPv4 text has no leading zeros, so the fixed octets are always written the same way.
            return ".".join(str(matcher.network_address).split(".")[:octets]) + ".", True
    if isinstance(matcher, tuple) and matcher[0].version == 4:
        lo, hi = (str(a).split(".") for a in matcher)
        common = 0
        while common < 4 and lo[common] == hi[common]:
            common += 1
        if common == 4:
            return ".".join(lo), True
        if common > 0:
            return ".".join(lo[:common]) + ".", True
    if isinstance(matcher, ipaddress.IPv6Address | ipaddress.IPv6Network) or (
        isinstance(matcher, tuple) and matcher[0].version == 6
    ):
        return ":", True
    return r"[0-9]\.", False


def _ip_mask(pattern: str, lines: pl.Series) -> np.ndarray:
    matcher = parse_ip_pattern(pattern)
    text, literal = _ip_prefilter(matcher)
    candidates = lines.str.contains(text, literal=literal).fill_null(False).to_numpy()
    out = np.zeros(len(lines), dtype=bool)
    idx = np.flatnonzero(candidates)
    if len(idx):
        values = lines.gather(idx).to_list()
        out[idx] = [ip_in_text(matcher, v) for v in values]
    return out


# -- regexes --------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def regex_for_polars(pattern: str, anchored: bool = False, dot_nl: bool = False, captures: bool = False) -> str:
    """Return `pattern` (Go syntax) rewritten for polars' Rust engine with the same matches.

    `anchored` wraps it in `^(?:...)$` as Loki does for label regexes; `dot_nl` lets `.` match a
    newline, as Prometheus matchers do; `captures` keeps the groups (and their names) so that
    `str.extract_groups` can pull them out, as the `regexp` parser stage needs.
    """
    tree = parse_regex(pattern, PERL | (DOT_NL if dot_nl else 0))
    body = to_rust(tree, captures)
    return rf"\A(?:{body})\z" if anchored else body


def _regex_mask(pattern: str, values: pl.Series, anchored: bool = False, dot_nl: bool = False) -> np.ndarray:
    try:
        result = values.str.contains(regex_for_polars(pattern, anchored, dot_nl))
    except pl.exceptions.PolarsError:
        re2 = pattern if not anchored else f"^(?:{pattern})$"
        if dot_nl:
            re2 = "(?s)" + re2
        arrow = values.to_arrow()
        result = pl.from_arrow(pc.match_substring_regex(arrow, re2))  # type: ignore[assignment]
    return result.fill_null(False).to_numpy()


def _literal_regex(text: str, case_insensitive: bool) -> str:
    node = Node(op=Op.LITERAL, flags=FOLD_CASE if case_insensitive else 0, runes=[ord(c) for c in text])
    return to_rust(node)


def _contains_any_mask(needles: list[tuple[str, bool]], values: pl.Series) -> np.ndarray:
    """Where a value contains any of the (text, case_insensitive) needles; one regex scan for all."""
    if any(not text for text, _ in needles):
        return np.ones(len(values), dtype=bool)
    if len(needles) == 1 and not needles[0][1]:
        return values.str.contains(needles[0][0], literal=True).fill_null(False).to_numpy()
    # One alternation of literals is faster in polars than one literal search per needle.
    pattern = "|".join(_literal_regex(text, ci) for text, ci in needles)
    return values.str.contains(pattern).fill_null(False).to_numpy()


def _text_match_mask(match: TextMatch, values: pl.Series) -> np.ndarray:
    kind = match.kind
    if kind == "true":
        return np.ones(len(values), dtype=bool)
    if kind == "exists":
        return (values.str.len_bytes() > 0).fill_null(False).to_numpy()
    if kind == "or":
        literals = [a for a in match.alternatives if a.kind == "contains"]
        others = [a for a in match.alternatives if a.kind != "contains"]
        out = np.zeros(len(values), dtype=bool)
        if literals:
            out |= _contains_any_mask([(a.text, a.case_insensitive) for a in literals], values)
        for alt in others:
            out |= _text_match_mask(alt, values)
        return out
    if kind == "contains":
        if not match.text:
            return np.ones(len(values), dtype=bool)
        if match.case_insensitive:
            result = values.str.contains(_literal_regex(match.text, True))
        else:
            result = values.str.contains(match.text, literal=True)
        return result.fill_null(False).to_numpy()
    if kind == "equal":
        if match.case_insensitive:
            result = values.str.contains(r"\A" + _literal_regex(match.text, True) + r"\z")
        else:
            result = values == match.text
        return result.fill_null(False).to_numpy()
    raise ValueError(f"unknown text match kind {kind!r}")


# -- line filters ---------------------------------------------------------------------------------


def _as_series(lines: Lines | pl.Series) -> pl.Series:
    if isinstance(lines, pl.Series):
        return lines
    series = pl.from_arrow(lines)
    assert isinstance(series, pl.Series)
    return series


def _term_mask(op: LineFilterOp, value: str, is_ip: bool, lines: pl.Series) -> np.ndarray:
    """Return where one positive test of a filter holds (negation is applied by the caller)."""
    if is_ip:
        return _ip_mask(value, lines)
    if op in (LineFilterOp.CONTAINS, LineFilterOp.NOT_CONTAINS):
        if not value:
            return np.ones(len(lines), dtype=bool)
        return lines.str.contains(value, literal=True).fill_null(False).to_numpy()
    if op in (LineFilterOp.MATCH, LineFilterOp.NOT_MATCH):
        simplified = loki_text_match(value, is_label=False)
        if simplified is not None:
            return _text_match_mask(simplified, lines)
        return _regex_mask(value, lines)
    return _pattern_mask(value, lines)


def _filter_mask(f: LineFilter, lines: pl.Series) -> np.ndarray:
    if len(f.terms) == 1:
        term = f.terms[0]
        if term.is_ip and f.op not in (LineFilterOp.CONTAINS, LineFilterOp.NOT_CONTAINS):
            raise ValueError(f"ip() cannot be used with {f.op.value}: only |= and != are allowed")
        mask = _term_mask(f.op, term.value, term.is_ip, lines)
    elif f.op in (LineFilterOp.CONTAINS, LineFilterOp.NOT_CONTAINS):
        # In an `or` chain Loki tests every value as a plain one, ip("...") included.
        mask = _contains_any_mask([(term.value, False) for term in f.terms], lines)
    else:
        mask = np.zeros(len(lines), dtype=bool)
        for term in f.terms:
            mask |= _term_mask(f.op, term.value, False, lines)
    return ~mask if f.op.negated else mask


def line_filter_mask(filters: Sequence[LineFilter], lines: Lines | pl.Series) -> np.ndarray:
    """Return a boolean mask over `lines`: True where every filter keeps the line.

    `filters` are consecutive line filter stages (they combine with "and"). A null line is treated
    as the empty line.
    """
    series = _as_series(lines)
    if series.null_count():
        series = series.fill_null("")
    mask = np.ones(len(series), dtype=bool)
    for f in filters:
        kept = int(mask.sum())
        if kept == 0:
            break
        if kept < len(mask) // 4:
            # Few lines left: test only those.
            idx = np.flatnonzero(mask)
            mask[idx] = _filter_mask(f, series.gather(idx))
        else:
            mask &= _filter_mask(f, series)
    return mask


# -- label text filters -----------------------------------------------------------------------------


def label_matcher_mask(matcher: LabelMatcher, values: Lines | pl.Series) -> np.ndarray:
    """Evaluate a label filter stage's string matcher over label values as Loki does ("" = missing).

    Equality is exact. A regex Loki reduces to literals keeps Loki's meaning, which for `a.*` is
    "contains a" (not anchored); other regexes must match the whole value.
    """
    series = _as_series(values).fill_null("")
    op = matcher.op
    if op in (MatchOp.EQ, MatchOp.NEQ):
        mask = (series == matcher.value).fill_null(False).to_numpy()
        return ~mask if op == MatchOp.NEQ else mask
    simplified = loki_text_match(matcher.value, is_label=True)
    if simplified is not None:
        mask = _text_match_mask(simplified, series)
    else:
        mask = _regex_mask(matcher.value, series, anchored=True)
    return ~mask if op == MatchOp.NRE else mask


def matcher_matches_empty(matcher: LabelMatcher) -> bool:
    """Say whether a stream selector matcher accepts the empty value (a missing label)."""
    if matcher.op == MatchOp.EQ:
        return matcher.value == ""
    if matcher.op == MatchOp.NEQ:
        return matcher.value != ""
    matched = _regex_matches_empty(matcher.value)
    return matched if matcher.op == MatchOp.RE else not matched


@lru_cache(maxsize=4096)
def _regex_matches_empty(pattern: str) -> bool:
    return bool(_regex_mask(pattern, pl.Series([""]), anchored=True, dot_nl=True)[0])


# -- pipeline checks Loki makes when it builds a pipeline -------------------------------------------


def _line_filter_error(f: LineFilter) -> str:
    """Return the error Loki raises building this filter, or "" when there is none."""
    terms = f.terms
    if len(terms) == 1 and terms[0].is_ip:
        if f.op not in (LineFilterOp.CONTAINS, LineFilterOp.NOT_CONTAINS):
            return "ip: invalid operation"
        try:
            parse_ip_pattern(terms[0].value)
        except IpPatternError as exc:
            return str(exc)
        return ""
    for term in terms:
        if f.op in (LineFilterOp.MATCH, LineFilterOp.NOT_MATCH):
            try:
                parse_regex(term.value)
            except RegexError as exc:
                return str(exc)
        elif f.op in (LineFilterOp.PATTERN, LineFilterOp.NOT_PATTERN):
            error = _pattern_filter_error(term.value)
            if error:
                return error
    return ""


def execution_order(stages: Sequence[Stage]) -> list[Stage | tuple[LineFilter, ...]]:
    """Return pipeline stages in the order Loki runs them, consecutive line filters grouped.

    Loki moves each line filter ahead of the parsers, formatters and drop/keep stages before it
    (also ahead of `decolorize`), but never across a label filter, `line_format` or `unpack`.
    """
    out: list[Stage | tuple[LineFilter, ...]] = []
    filters: list[LineFilter] = []
    others: list[Stage] = []

    def flush() -> None:
        if filters:
            out.append(tuple(filters))
        out.extend(others)
        filters.clear()
        others.clear()

    for stage in stages:
        if isinstance(stage, LabelFilterStage):
            flush()
            out.append(stage)
        elif isinstance(stage, LineFilter):
            filters.append(stage)
        elif isinstance(stage, LineFormat | UnpackParser):
            others.append(stage)
            flush()
        else:
            others.append(stage)
    flush()
    return out


def _check_stages(stages: Sequence[Stage]) -> None:
    for item in execution_order(stages):
        if isinstance(item, tuple):
            # Loki builds a group's filters last to first and names the whole group in its error.
            text = " ".join(str(f) for f in item)
            for f in reversed(item):
                error = _line_filter_error(f)
                if error:
                    raise ParseError(f"stage '{text}' : {error}")
        elif isinstance(item, LabelFilterStage) and isinstance(item.filter, IpLabelFilter):
            try:
                parse_ip_pattern(item.filter.pattern)
            except IpPatternError as exc:
                raise ParseError(f"stage '{item}' : {exc}") from None
        elif isinstance(item, LabelFormat):
            seen: set[str] = set()
            for entry in item.items:
                if entry.name == "__error__":
                    raise ParseError(f"stage '{item}' : __error__ cannot be formatted")
                if entry.name in seen:
                    message = f"multiple label name '{entry.name}' not allowed in a single format operation"
                    raise ParseError(f"stage '{item}' : {message}")
                seen.add(entry.name)


def check_pipeline(expr: Expr) -> None:
    """Raise ParseError (`stage '...' : ...`) where Loki fails to build a pipeline of `expr`."""
    for selector in _log_selectors(expr):
        _check_stages(selector.stages)


def _log_selectors(expr: object) -> list[LogSelectorExpr]:
    if isinstance(expr, LogSelectorExpr):
        return [expr]
    out: list[LogSelectorExpr] = []
    for name in ("left", "right", "expr", "range", "selector"):
        child = getattr(expr, name, None)
        if child is not None and child is not expr:
            out.extend(_log_selectors(child))
    for child in getattr(expr, "variants", ()):
        out.extend(_log_selectors(child))
    return out
