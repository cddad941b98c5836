"""Label sets, stream ids and label matchers: the shared vocabulary of ingest, store and queries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loglake.model import LabelMatcher, MatchOp, format_labels, parse_labels, stream_id

names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)
values = st.text(max_size=30)


@given(st.dictionaries(names, values, min_size=1, max_size=8))
def test_label_text_round_trips_and_ids_ignore_order(labels: dict[str, str]) -> None:
    text = format_labels(labels)
    assert dict(parse_labels(text)) == labels
    pairs = tuple(sorted(labels.items()))
    assert stream_id(pairs) == stream_id(tuple(sorted(parse_labels(text))))
    assert 0 <= stream_id(pairs) < 2**63


def test_different_label_sets_get_different_ids() -> None:
    assert stream_id((("app", "a"),)) != stream_id((("app", "b"),))
    assert stream_id((("a", "b,c"),)) != stream_id((("a", "b"), ("c", "")))


def test_regex_matchers_are_anchored_and_dot_matches_newline() -> None:
    assert not LabelMatcher("s", MatchOp.RE, "ngin").matches("nginx")
    assert LabelMatcher("s", MatchOp.RE, "ngin.*").matches("nginx")
    assert LabelMatcher("s", MatchOp.RE, "a.b").matches("a\nb")
    assert LabelMatcher("s", MatchOp.RE, "(?i)NGINX").matches("nginx")
    assert LabelMatcher("s", MatchOp.NRE, "x|y").matches("z")


def test_missing_label_compares_as_empty() -> None:
    assert LabelMatcher("nope", MatchOp.EQ, "").matches_empty()
    assert not LabelMatcher("nope", MatchOp.NEQ, "").matches_empty()
    assert LabelMatcher("nope", MatchOp.RE, ".*").matches_empty()
    assert not LabelMatcher("nope", MatchOp.RE, ".+").matches_empty()
