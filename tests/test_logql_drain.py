"""Drain pattern detection: tokenizers per format, clustering, the cluster limit, samples and pattern series."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.logql.drain import (
    PARAM,
    Drain,
    DrainConfig,
    JsonTokenizer,
    LogfmtTokenizer,
    PatternLimits,
    PunctuationTokenizer,
    detect_format,
    find_patterns,
    is_logfmt_line,
    normalize_level,
    top_level_json_strings,
)

S = 10**9
MS = 10**6
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z, a multiple of every step used here


def patterns(drain: Drain) -> list[str]:
    return sorted(c.pattern() for c in drain.clusters())


# ---- formats and tokenizers -------------------------------------------------------------------------------------


def test_format_is_guessed_from_one_line() -> None:
    assert detect_format('{"msg":"hi"}') == "json"
    assert detect_format('level=info msg="started server" port=8080') == "logfmt"
    assert detect_format("GET /index.html 200") == "unknown"
    assert detect_format("x") == "unknown"
    # A line that is almost logfmt (a bare word) is not.
    assert detect_format("level=info started") == "unknown"


_LOKI_LOGFMT_REGEX = re.compile(r'^(\w+?=([^"][^\t\n\f\r ]*?|".+?") )*?(\w+?=([^"][^\t\n\f\r ]*?|".+?"))+\Z', re.ASCII)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='ab_1=" \t\n.', max_size=14))
def test_logfmt_detection_agrees_with_lokis_regex(line: str) -> None:
    # Short lines keep the backtracking regex fast; the detector itself is linear.
    assert is_logfmt_line(line) == bool(_LOKI_LOGFMT_REGEX.match(line))


def test_logfmt_detection_is_fast_on_lines_that_make_a_regex_backtrack() -> None:
    assert not is_logfmt_line('a="b" ' * 5000 + "c")


def test_punctuation_tokens_keep_punctuation_and_equals_but_not_word_characters() -> None:
    tokens, spaces = PunctuationTokenizer().tokenize('user=alice path=/api/v1 "quoted" 10.0.0.1:80')  # type: ignore[misc]
    assert tokens == ["user", "=", "alice", "path", "=", "/api/v1", '"', "quoted", '"', "10.0.0.1:80"]
    assert spaces == [2, 5, 8]


def test_punctuation_tokens_join_back_into_the_line() -> None:
    tok = PunctuationTokenizer()
    line = 'level=info  msg="a, b" (x) ok '
    assert tok.join(*tok.tokenize(line)) == line  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=120).filter(lambda s: not s.startswith(" ")))
def test_any_line_joins_back_from_its_punctuation_tokens(line: str) -> None:
    tok = PunctuationTokenizer(max_tokens=10_000)
    tokenized = tok.tokenize(line)
    assert tokenized is not None
    assert tok.join(*tokenized) == line


def test_lines_over_the_length_limit_are_not_tokenized() -> None:
    assert PunctuationTokenizer(max_line_length=10).tokenize("a b c d e f g") is None
    # The limit counts bytes, as Loki's does.
    assert PunctuationTokenizer(max_line_length=10).tokenize("ééééé é") is None


def test_logfmt_tokens_are_keys_and_values_with_times_and_trace_ids_as_placeholders() -> None:
    tokens, _ = LogfmtTokenizer().tokenize(  # type: ignore[misc]
        'ts=2024-01-01T00:00:00Z level=info traceID=abc msg="user logged in" bare t=5'
    )
    assert tokens == ["ts", PARAM, "level", "info", "traceID", PARAM, "msg", "user logged in", "bare", "", "t", PARAM]


def test_logfmt_syntax_errors_leave_the_line_out() -> None:
    assert LogfmtTokenizer().tokenize('level=info msg="unterminated') is None


def test_logfmt_patterns_are_written_back_as_logfmt() -> None:
    tok = LogfmtTokenizer()
    tokens = ["msg", 'say "hi"\n', "empty", "", "path", "/x", "odd"]
    assert tok.join(tokens, None) == 'msg="say \\"hi\\"\\n" empty= path=/x odd='
    assert tok.join(["bad key", "v"], None) == ""


def test_json_lines_are_tokenized_by_their_message_field() -> None:
    tok = JsonTokenizer()
    line = '{"level":"info","data":{"msg":"nested"},"msg":"order 17 placed"}'
    tokens, state = tok.tokenize(line)  # type: ignore[misc]
    assert tokens == ["order", "17", "placed"]
    assert tok.join(tokens, state) == "<_>order 17 placed<_>"
    # `log` and `message` come before `msg`, wherever they are in the line.
    tokens, _ = tok.tokenize('{"msg":"order 17 placed","message":"payment taken"}')  # type: ignore[misc]
    assert tokens == ["payment", "taken"]
    assert tok.tokenize('{"level":"info","text":"no message field"}') is None
    assert tok.tokenize('{"msg":{"not":"a string"}}') is None


def test_json_message_field_is_taken_raw() -> None:
    line = '{"a":[1,{"msg":"x"}],"msg":"say \\"hi\\"","log":{"x":1},"msg":"again"}'
    assert top_level_json_strings(line, ["msg", "log", "content"]) == {"msg": 'say \\"hi\\"', "log": None}
    assert top_level_json_strings('{"a":1}', ["msg"]) == {}
    assert top_level_json_strings("not json", ["msg"]) == {}
    # Keys after text that is not JSON are not reached.
    assert top_level_json_strings('{"msg":"x", oops, "log":"y"}', ["msg", "log"]) == {"msg": "x"}


# ---- clustering ---------------------------------------------------------------------------------------------------


def test_similar_lines_share_one_pattern_with_placeholders_where_they_differ() -> None:
    d = Drain()
    for i in range(5):
        d.train(f"GET /users/{i} took {i * 7} ms", T0)
    d.train("connection reset by peer now", T0)
    assert patterns(d) == ["GET <_> took <_> ms", "connection reset by peer now"]


def test_a_single_line_is_its_own_pattern() -> None:
    d = Drain()
    d.train("cache warmed in 12 seconds", T0)
    assert patterns(d) == ["cache warmed in 12 seconds"]


def test_lines_with_different_token_counts_never_share_a_cluster() -> None:
    d = Drain()
    d.train("job one finished ok", T0)
    d.train("job one finished ok again", T0)
    assert len(d.clusters()) == 2


def test_lines_with_too_few_or_too_many_tokens_are_ignored() -> None:
    d = Drain()
    assert d.train("only three tokens", T0) is None
    assert d.train(" ".join(["w"] * 81), T0) is None
    assert d.train(" ".join(["w"] * 80), T0) is not None


def test_dissimilar_lines_of_the_same_shape_start_new_clusters() -> None:
    d = Drain(config=DrainConfig(sim_th=0.9))
    d.train("alpha beta gamma delta", T0)
    d.train("alpha beta gamma epsilon", T0)
    assert len(d.clusters()) == 2


def test_runs_of_placeholders_collapse_into_one() -> None:
    d = Drain()
    d.train("request id=abc-1 done in 5ms", T0)
    d.train("request id=xyz-2 done in 9ms", T0)
    [pattern] = patterns(d)
    assert "<_><_>" not in pattern
    assert pattern == "request id=<_> done in <_>"


def test_logfmt_stream_patterns() -> None:
    d = Drain(detect_format("ts=1 level=info msg=started"))
    for i in range(3):
        d.train(f'ts=2024-01-01T00:00:0{i}Z level=info msg="request served" status=200 took={i}ms', T0)
    assert patterns(d) == ['ts=<_> level=info msg="request served" status=200 took=<_>']


def test_json_stream_patterns() -> None:
    d = Drain(detect_format('{"msg":"x"}'))
    for i in range(3):
        d.train(json.dumps({"level": "info", "msg": f"payment {i} accepted for user u{i}"}), T0)
    assert patterns(d) == ["<_>payment <_> accepted for user <_>"]


def test_the_least_recently_used_cluster_is_evicted_past_the_limit() -> None:
    d = Drain(config=DrainConfig(max_clusters=2, max_eviction_ratio=1.0))
    d.train("first kind of line here", T0)
    d.train("second kind of line there", T0)
    d.train("first kind of line here", T0)  # touch the first
    d.train("a completely other entry shape", T0)
    assert patterns(d) == ["a completely other entry shape", "first kind of line here"]


def test_too_many_evictions_stop_the_drain() -> None:
    d = Drain(config=DrainConfig(max_clusters=1, max_eviction_ratio=0.25))
    words = ["apple", "berry", "cherry", "damson", "elder", "fig", "grape", "hazel"]
    for w in words:
        d.train(f"{w} is a fruit", T0)
    # Evictions soon outnumber a quarter of the lines: later lines are not taken.
    assert d.train("ivy is a plant", T0) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ab1 =:/.,", min_size=1, max_size=30), min_size=1, max_size=30))
def test_every_template_token_is_the_lines_token_or_a_placeholder(lines: list[str]) -> None:
    d = Drain()
    taken: dict[int, list[list[str]]] = {}
    for line in lines:
        cluster = d.train(line, T0)
        if cluster is not None:
            tokens, _ = d.tokenizer.tokenize(line)  # type: ignore[misc]
            taken.setdefault(cluster.id, []).append(tokens)
    for cluster in d.clusters():
        for tokens in taken.get(cluster.id, []):
            assert all(t in (PARAM, s) for t, s in zip(cluster.tokens, tokens, strict=True))


# ---- samples ------------------------------------------------------------------------------------------------------


def test_samples_count_lines_in_ten_second_buckets() -> None:
    d = Drain()
    for offset in (0, 3, 9, 10, 35):
        d.train("disk usage is high now", T0 + offset * S)
    [cluster] = d.clusters()
    t0 = T0 // MS
    step = 10_000
    assert cluster.samples(t0, t0 + 3_600_000, step, d.config) == [(t0, 3), (t0 + 10_000, 1), (t0 + 30_000, 1)]


def test_a_larger_step_sums_buckets_and_fills_gaps_with_zero() -> None:
    d = Drain()
    for offset in (0, 10, 130):
        d.train("disk usage is high now", T0 + offset * S)
    [cluster] = d.clusters()
    t0 = T0 // MS
    assert cluster.samples(t0, t0 + 3_600_000, 60_000, d.config) == [(t0, 2), (t0 + 60_000, 0), (t0 + 120_000, 1)]


def test_samples_outside_the_range_are_left_out() -> None:
    d = Drain()
    for offset in (0, 20, 40):
        d.train("disk usage is high now", T0 + offset * S)
    [cluster] = d.clusters()
    t0 = T0 // MS
    assert cluster.samples(t0 + 10_000, t0 + 30_000, 10_000, d.config) == [(t0 + 20_000, 1)]


def test_chunks_are_cut_at_the_chunk_age() -> None:
    d = Drain(config=DrainConfig(max_chunk_age_ms=60_000))
    for offset in (0, 30, 70):
        d.train("disk usage is high now", T0 + offset * S)
    [cluster] = d.clusters()
    assert [len(c) for c in cluster.chunks] == [2, 1]


# ---- pattern series over streams ----------------------------------------------------------------------------------


def _entries(
    sid: int, lines: list[str], level: str | None = None, start: int = T0
) -> list[tuple[int, int, str, str | None]]:
    return [(sid, start + i * S, line, level) for i, line in enumerate(lines)]


def test_patterns_of_several_streams_are_summed_per_pattern_and_level() -> None:
    a = _entries(1, [f"GET /users/{i} took {i} ms" for i in range(20)])
    b = _entries(2, [f"GET /users/{i} took {i} ms" for i in range(20)])
    c = _entries(3, [f"GET /users/{i} took {i} ms" for i in range(40)], level="error")
    t0 = T0 // MS
    series = find_patterns(a + b + c, t0, t0 + 3_600_000, 60_000, limits=PatternLimits(min_total=1))
    # Equal totals: by level, then pattern.
    assert [(s.pattern, s.level, s.total) for s in series] == [
        ("GET <_> took <_> ms", "error", 40),
        ("GET <_> took <_> ms", "unknown", 40),
    ]
    assert series[0].to_json()["samples"] == [[T0 // S, 40]]


def test_small_patterns_are_pruned_and_the_biggest_come_first() -> None:
    lines = [f"worker {i} picked job" for i in range(50)] + [f"worker {i} crashed badly" for i in range(35)]
    lines += ["rare event happened once"] * 5
    t0 = T0 // MS
    series = find_patterns(_entries(1, lines), t0, t0 + 3_600_000, 10_000)
    assert [(s.pattern, s.total) for s in series] == [("worker <_> picked job", 50), ("worker <_> crashed badly", 35)]
    assert (
        find_patterns(_entries(1, lines), t0, t0 + 3_600_000, 10_000, limits=PatternLimits(max_patterns=1))[0].total
        == 50
    )


def test_the_step_is_at_least_the_sample_interval() -> None:
    t0 = T0 // MS
    series = find_patterns(_entries(1, ["tick tock goes the clock"] * 30), t0, t0 + 60_000, 1_000)
    assert [t for t, _ in series[0].samples] == [t0, t0 + 10_000, t0 + 20_000]


def test_levels_are_lower_cased_and_unusual_ones_are_unknown() -> None:
    assert normalize_level("ERROR") == "error"
    assert normalize_level(None) == "unknown"
    assert normalize_level("notice") == "unknown"
