"""Loki's push validation rules, messages and discard reasons; the rate limiter; the accepted batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.ingest.decode import DecodedPush, decode_json, decode_protobuf
from loglake.ingest.pushproto import encode_push
from loglake.ingest.ratelimit import RateLimiter
from loglake.ingest.validate import Validator, normalize_metadata_name
from loglake.model import ENTRY_SCHEMA, stream_id

S = 1_000_000_000
DAY = 86_400 * S
NOW = 1_735_689_600 * S  # 2025-01-01T00:00:00Z
LOKI_DISCOVER = [
    "service", "app", "application", "app_name", "name", "app_kubernetes_io_name", "container", "container_name",
    "k8s_container_name", "component", "workload", "job", "k8s_job_name",
]  # fmt: skip


@dataclass
class Limits:
    """Loki 3.7's limits_config defaults, in bytes and nanoseconds."""

    max_label_name_length: int = 1024
    max_label_value_length: int = 2048
    max_label_names_per_series: int = 15
    max_line_size: int = 256 * 1024
    max_line_size_truncate: bool = False
    reject_old_samples: bool = True
    reject_old_samples_max_age: int = 7 * DAY
    creation_grace_period: int = 600 * S
    max_streams_per_user: int = 0
    max_global_streams_per_user: int = 5000
    ingestion_rate_mb: float = 4
    ingestion_burst_size_mb: float = 6
    max_structured_metadata_size: int = 64 * 1024
    max_structured_metadata_entries_count: int = 128
    allow_structured_metadata: bool = True
    discover_service_name: list[str] = field(default_factory=lambda: list(LOKI_DISCOVER))
    discover_log_levels: bool = True


def push(*streams: tuple[Any, list]) -> DecodedPush:
    """A decoded protobuf push of (label text, [(ts, line[, metadata])]) streams."""
    return decode_protobuf(encode_push(streams))


def run(
    p: DecodedPush,
    limits: Limits | None = None,
    *,
    exists: Any = None,
    active: int = 0,
    validator: Validator | None = None,
):
    v = validator or Validator(limits or Limits())
    return v.validate(p, "tenant-1", NOW, exists or (lambda _id: False), active)


def accepted_lines(result: Any) -> list[str]:
    return [] if result.batch is None else result.batch.line.to_pylist()


# ------------------------------------------------------------------------------------------------ happy path


def test_valid_push_is_accepted_whole_with_204() -> None:
    result = run(push(('{app="web", env="prod"}', [(NOW, "a"), (NOW + 1, "", {"trace_id": "t"})])))
    assert result.status == 204 and result.errors == [] and result.message == "" and result.discarded == {}
    batch = result.batch
    assert batch.tenant == "tenant-1"
    assert batch.streams == [(("app", "web"), ("env", "prod"), ("service_name", "web"))]
    assert batch.stream_ids.tolist() == [stream_id(batch.streams[0])]
    assert batch.stream_index.tolist() == [0, 0]
    assert batch.ts.tolist() == [NOW, NOW + 1]
    assert batch.line.to_pylist() == ["a", ""]
    assert batch.metadata.to_pylist() == [None, [("trace_id", "t")]]
    assert batch.to_record_batch().schema == ENTRY_SCHEMA


def test_the_same_stream_sent_twice_in_one_push_becomes_one_batch_stream() -> None:
    result = run(push(('{app="a"}', [(NOW, "1")]), ('{app="b"}', [(NOW, "2")]), ('{app="a"}', [(NOW, "3")])))
    assert len(result.batch.streams) == 2
    assert result.batch.stream_index.tolist() == [0, 1, 0]
    assert result.batch.metadata is None


def test_push_without_streams_is_unprocessable() -> None:
    result = run(push())
    assert result.status == 422
    assert result.message == "error at least one valid stream is required for ingestion"
    assert result.batch is None


def test_streams_without_entries_are_skipped_without_label_checks() -> None:
    result = run(push(('{app="' + "v" * 5000 + '"}', []), ('{app="a"}', [])))
    assert result.status == 204 and result.batch is None and result.errors == []


def test_json_pushes_validate_like_protobuf_ones() -> None:
    p = decode_json(b'{"streams": [{"stream": {"job": "j", "empty": ""}, "values": [["1735689600000000000", "x"]]}]}')
    result = run(p)
    assert result.batch.streams == [(("job", "j"), ("service_name", "j"))]


# ------------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize(
    ("labels", "service_name"),
    [
        ('{app="a", service="s"}', "s"),
        ('{job="j", container="c"}', "c"),
        ('{k8s_job_name="k"}', "k"),
        ('{app="", job="j"}', "j"),
        ('{foo="bar"}', "unknown_service"),
        ('{service_name="given", app="a"}', "given"),
    ],
)
def test_service_name_is_discovered_from_the_first_listed_label(labels: str, service_name: str) -> None:
    result = run(push((labels, [(NOW, "x")])))
    assert dict(result.batch.streams[0])["service_name"] == service_name


def test_service_name_discovery_can_be_turned_off() -> None:
    result = run(push(('{app="a"}', [(NOW, "x")])), Limits(discover_service_name=[]))
    assert result.batch.streams == [(("app", "a"),)]


def test_internal_streams_get_no_service_name() -> None:
    result = run(push(('{__pattern__="p"}', [(NOW, "x")])))
    assert result.batch.streams == [(("__pattern__", "p"),)]


def test_labels_with_empty_values_are_dropped_and_names_sorted() -> None:
    result = run(push(('{z="1", a="2", m=""}', [(NOW, "x")])), Limits(discover_service_name=[]))
    assert result.batch.streams == [(("a", "2"), ("z", "1"))]


def test_a_stream_with_no_labels_gets_unknown_service_name() -> None:
    result = run(push(("{}", [(NOW, "x")]), ("", [(NOW, "y")])))
    assert result.batch.streams == [(("service_name", "unknown_service"),)]


def test_a_stream_with_no_labels_is_rejected_when_discovery_is_off() -> None:
    result = run(push(("{}", [(NOW, "x"), (NOW, "yy")]), ('{a="b"}', [(NOW, "ok")])), Limits(discover_service_name=[]))
    assert result.status == 400
    assert result.message == "error at least one label pair is required per stream"
    assert result.discarded == {"missing_labels": (1, 0), "invalid_labels": (2, 3)}
    assert accepted_lines(result) == ["ok"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ('{foo.bar="x"}', "invalid label name 'foo.bar'"),
        ('{1abc="x"}', "invalid label name '1abc'"),
        ('{foo="x"', "couldn't parse labels"),
        ("foo", "couldn't parse labels"),
        ("{foo=x}", "couldn't parse labels"),
    ],
)
def test_unparseable_labels_reject_the_whole_push(labels: str, message: str) -> None:
    result = run(push(('{app="ok"}', [(NOW, "fine")]), (labels, [(NOW, "x")])))
    assert result.status == 400 and result.batch is None
    assert message in result.message and result.message.startswith("couldn't parse labels")


def test_invalid_label_names_in_json_reject_the_whole_push() -> None:
    p = decode_json(b'{"streams": [{"stream": {"a.b": "x"}, "values": [["1735689600000000000", "x"]]}]}')
    result = run(p)
    assert result.status == 400 and "invalid label name 'a.b'" in result.message


def test_duplicate_label_names_reject_that_stream_only() -> None:
    result = run(push(('{a="1", a="2"}', [(NOW, "dup")]), ('{b="1"}', [(NOW, "ok")])))
    assert result.status == 400
    assert result.message == (
        'stream \'{a="1", a="2", service_name="unknown_service"}\' has duplicate label name: \'a\''
    )
    assert result.discarded == {"duplicate_label_names": (1, 3), "invalid_labels": (1, 3)}
    assert accepted_lines(result) == ["ok"]


def test_label_name_too_long() -> None:
    name = "n" * 11
    result = run(push((f'{{{name}="v"}}', [(NOW, "x")])), Limits(max_label_name_length=10))
    assert (
        result.message
        == f"stream '{{{name}=\"v\", service_name=\"unknown_service\"}}' has label name too long: '{name}'"
    )
    assert result.discarded["label_name_too_long"] == (1, 1)


def test_label_value_length_is_counted_in_bytes() -> None:
    ok = run(push(('{a="éé"}', [(NOW, "x")])), Limits(max_label_value_length=4, discover_service_name=[]))
    assert ok.status == 204
    long = run(push(('{a="ééé"}', [(NOW, "x")])), Limits(max_label_value_length=5, discover_service_name=[]))
    assert long.message == "stream '{a=\"ééé\"}' has label value too long: 'ééé'"
    assert long.discarded["label_value_too_long"] == (1, 1)


def test_label_names_per_series_do_not_count_service_name() -> None:
    labels = "{" + ", ".join(f'l{i}="v"' for i in range(3)) + "}"
    assert run(push((labels, [(NOW, "x")])), Limits(max_label_names_per_series=3)).status == 204
    result = run(push((labels, [(NOW, "x")])), Limits(max_label_names_per_series=2))
    assert result.message == (
        'entry for stream \'{l0="v", l1="v", l2="v", service_name="unknown_service"}\' has 3 label names; limit 2'
    )
    assert result.discarded["max_label_names_per_series"] == (1, 1)


def test_enforced_labels_reject_streams_missing_them() -> None:
    limits = Limits()
    limits.enforced_labels = ["team", "env"]  # type: ignore[attr-defined]
    result = run(push(('{env="prod"}', [(NOW, "x")])), limits)
    assert result.message == (
        "missing required labels 'team' for user 'tenant-1' for stream "
        "'{env=\"prod\", service_name=\"unknown_service\"}' (policy: '')"
    )
    assert result.discarded == {"missing_enforced_labels": (1, 1)}


def test_label_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from loglake.ingest import validate

    monkeypatch.setattr(validate, "_LABEL_CACHE_SIZE", 10)
    v = Validator(Limits())
    for i in range(25):
        run(push((f'{{a="{i}"}}', [(NOW, "x")])), validator=v)
    assert len(v._cache) == 10
    assert v.stream_labels('{a="24"}').labels == (("a", "24"), ("service_name", "unknown_service"))


# ------------------------------------------------------------------------------------------------ entries


def test_too_old_entries_are_rejected_with_loki_message() -> None:
    old = NOW - 8 * DAY
    result = run(push(('{app="a"}', [(old, "old"), (old + 1, "old"), (NOW, "new")])))
    assert result.status == 400
    assert result.message == (
        '2 errors like: entry for stream \'{app="a", service_name="a"}\' has timestamp too old: '
        "2024-12-24T00:00:00Z, oldest acceptable timestamp is: 2024-12-25T00:00:00Z"
    )
    assert result.discarded == {"greater_than_max_sample_age": (2, 6)}
    assert accepted_lines(result) == ["new"]


def test_old_entries_are_accepted_when_reject_old_samples_is_off() -> None:
    result = run(push(('{app="a"}', [(0, "1970"), (-5 * S, "1969")])), Limits(reject_old_samples=False))
    assert result.status == 204 and result.batch.ts.tolist() == [0, -5 * S]


def test_entries_too_far_in_the_future_are_rejected() -> None:
    result = run(push(('{app="a"}', [(NOW + 600 * S, "edge"), (NOW + 601 * S, "future")])))
    assert (
        result.message == 'entry for stream \'{app="a", service_name="a"}\' has timestamp too new: 2025-01-01T00:10:01Z'
    )
    assert result.discarded == {"too_far_in_future": (1, 6)}
    assert accepted_lines(result) == ["edge"]


def test_lines_over_max_line_size_are_rejected() -> None:
    result = run(push(('{app="a"}', [(NOW, "x" * 10), (NOW, "x" * 11)])), Limits(max_line_size=10))
    assert result.message == (
        "max entry size '10' bytes exceeded for stream '{app=\"a\", service_name=\"a\"}' while adding an entry with "
        "length '11' bytes"
    )
    assert result.discarded == {"line_too_long": (1, 11)}
    assert accepted_lines(result) == ["x" * 10]


def test_max_line_size_zero_means_no_limit() -> None:
    assert run(push(('{app="a"}', [(NOW, "x" * 300_000)])), Limits(max_line_size=0)).status == 204


def test_long_lines_are_truncated_when_configured() -> None:
    limits = Limits(max_line_size=10, max_line_size_truncate=True)
    limits.max_line_size_truncate_identifier = "..."  # type: ignore[attr-defined]
    result = run(push(('{app="a"}', [(NOW, "0123456789abc"), (NOW, "short"), (NOW, "ééééééé")])), limits)
    assert result.status == 204
    # A cut in the middle of a two-byte character drops it, so the line stays valid UTF-8.
    assert accepted_lines(result) == ["0123456...", "short", "ééé..."]


def test_truncation_leaves_lines_alone_when_the_identifier_does_not_fit() -> None:
    limits = Limits(max_line_size=3, max_line_size_truncate=True)
    limits.max_line_size_truncate_identifier = "[cut]"  # type: ignore[attr-defined]
    result = run(push(('{app="a"}', [(NOW, "abcdef")])), limits)
    assert result.discarded == {"line_too_long": (1, 6)}


def test_empty_lines_are_valid_entries() -> None:
    result = run(push(('{app="a"}', [(NOW, ""), (NOW + 1, "")])))
    assert result.status == 204 and accepted_lines(result) == ["", ""]


def test_structured_metadata_can_be_disallowed() -> None:
    result = run(push(('{app="a"}', [(NOW, "x", {"k": "v"}), (NOW, "y")])), Limits(allow_structured_metadata=False))
    assert result.message == (
        'stream \'{app="a", service_name="a"}\' includes structured metadata, but this feature is disallowed. '
        "Please see `limits_config.allow_structured_metadata` or contact your Loki administrator to enable it"
    )
    assert result.discarded == {"disallowed_structured_metadata": (1, 3)}
    assert accepted_lines(result) == ["y"] and result.batch.metadata is None


def test_structured_metadata_too_large_counts_names_and_values() -> None:
    md = {"key": "value", "detected_level": "info"}  # detected_level is left out of the size, as in Loki
    assert run(push(('{app="a"}', [(NOW, "x", md)])), Limits(max_structured_metadata_size=8)).status == 204
    result = run(push(('{app="a"}', [(NOW, "x", md)])), Limits(max_structured_metadata_size=7))
    assert result.message == (
        "stream '{app=\"a\", service_name=\"a\"}' has structured metadata too large: '8' bytes, limit: '7' bytes. "
        "Please see `limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it"
    )
    assert result.discarded == {"structured_metadata_too_large": (1, 9)}


def test_too_many_structured_metadata_entries() -> None:
    result = run(
        push(('{app="a"}', [(NOW, "x", {"a": "1", "b": "2", "c": "3"})])),
        Limits(max_structured_metadata_entries_count=2),
    )
    assert result.message == (
        "stream '{app=\"a\", service_name=\"a\"}' has too many structured metadata labels: '3', limit: '2'. "
        "Please see `limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to "
        "increase it"
    )
    assert result.discarded == {"structured_metadata_too_many": (1, 7)}


def test_each_entry_gets_the_first_failing_check_in_loki_order() -> None:
    limits = Limits(max_line_size=1, allow_structured_metadata=False)
    old, future = NOW - 8 * DAY, NOW + DAY
    result = run(
        push(
            (
                '{app="a"}',
                [(old, "long", {"k": "v"}), (future, "long"), (NOW, "long", {"k": "v"}), (NOW, "x", {"k": "v"})],
            )
        ),
        limits,
    )
    assert set(result.discarded) == {
        "greater_than_max_sample_age", "too_far_in_future", "line_too_long", "disallowed_structured_metadata",
    }  # fmt: skip
    assert all(lines == 1 for lines, _ in result.discarded.values())


def test_different_errors_are_grouped_with_counts() -> None:
    result = run(push(('{app="a"}', [(NOW, "x" * 5), (NOW, "x" * 5), (NOW + DAY, "f")])), Limits(max_line_size=4))
    assert result.errors == [
        "max entry size '4' bytes exceeded for stream '{app=\"a\", service_name=\"a\"}' while adding an entry with "
        "length '5' bytes",
        'entry for stream \'{app="a", service_name="a"}\' has timestamp too new: 2025-01-02T00:00:00Z',
    ]
    assert result.message == f"2 errors like: {result.errors[0]}; 1 errors like: {result.errors[1]}"


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(
        st.tuples(st.integers(-10 * DAY, 2 * DAY), st.integers(0, 40), st.integers(0, 3)), min_size=1, max_size=40
    ),
    max_line=st.integers(0, 30),
)
def test_every_entry_is_either_accepted_or_discarded_once(entries: list, max_line: int) -> None:
    limits = Limits(max_line_size=max_line, max_structured_metadata_entries_count=2)
    p = push(('{app="a"}', [(NOW + off, "x" * size, {f"k{i}": "v" for i in range(md)}) for off, size, md in entries]))
    result = run(p, limits)
    discarded_lines = sum(lines for lines, _ in result.discarded.values())
    assert len(accepted_lines(result)) + discarded_lines == len(entries)
    expected_bytes = sum(size + 3 * md for _, size, md in entries)
    accepted_bytes = sum(len(line) for line in accepted_lines(result))
    if result.batch is not None and result.batch.metadata is not None:
        accepted_bytes += sum(len(k) + len(v) for md in result.batch.metadata.to_pylist() if md for k, v in md)
    assert accepted_bytes + sum(b for _, b in result.discarded.values()) == expected_bytes


# ------------------------------------------------------------------------------------- structured metadata names


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("trace_id", "trace_id"),
        ("trace.id", "trace_id"),
        ("http.request..method", "http_request_method"),
        ("a__b", "a_b"),
        ("1abc", "key_1abc"),
        ("_private", "_private"),
        ("__reserved.name__", "__reserved_name__"),
        ("ünïcode", "_n_code"),
    ],
)
def test_structured_metadata_names_are_normalized_like_loki(name: str, normalized: str) -> None:
    assert normalize_metadata_name(name) == normalized


@pytest.mark.parametrize("name", ["", "_", "..."])
def test_structured_metadata_names_that_cannot_be_normalized(name: str) -> None:
    with pytest.raises(ValueError, match="structured metadata name"):
        normalize_metadata_name(name)


def test_accepted_metadata_names_are_normalized_and_replacement_characters_become_spaces() -> None:
    entries = [
        (NOW, "a", [("trace.id", "1"), ("z", "ok")]),
        (NOW, "b", [("span_id", "bad\ufffdvalue")]),
        (NOW, "c", [("plain", "v")]),
    ]
    result = run(push(('{app="a"}', entries)))
    assert result.batch.metadata.to_pylist() == [
        [("trace_id", "1"), ("z", "ok")],
        [("span_id", "bad value")],
        [("plain", "v")],
    ]


def test_an_unnormalizable_metadata_name_rejects_the_push() -> None:
    result = run(push(('{app="a"}', [(NOW, "a", {"": "v"})])))
    assert result.status == 400 and result.batch is None
    assert "structured metadata name is empty" in result.message


# ------------------------------------------------------------------------------------------------ rate limit


def test_rate_limited_push_is_rejected_whole_with_429() -> None:
    limits = Limits(ingestion_rate_mb=1 / 1024, ingestion_burst_size_mb=1 / 1024)  # 1 KiB/s, 1 KiB burst
    v = Validator(limits)
    first = run(push(('{app="a"}', [(NOW, "x" * 600)])), validator=v)
    assert first.status == 204
    second = run(push(('{app="a"}', [(NOW, "y" * 300, {"k": "vv"}), (NOW, "z" * 200)])), validator=v)
    assert second.status == 429 and second.batch is None
    assert second.message == (
        "ingestion rate limit exceeded for user tenant-1 (limit: 1024 bytes/sec) while attempting to ingest '2' "
        "lines totaling '503' bytes, reduce log volume or contact your Loki administrator to see if the limit can be "
        "increased"
    )
    assert second.discarded == {"rate_limited": (2, 503)}


def test_rate_limit_counts_only_valid_entries() -> None:
    limits = Limits(ingestion_rate_mb=1 / 1024, ingestion_burst_size_mb=1 / 1024, max_line_size=100)
    result = run(push(('{app="a"}', [(NOW, "x" * 50), (NOW, "y" * 5000)])), limits)
    assert result.status == 400 and accepted_lines(result) == ["x" * 50]


def test_token_bucket_starts_full_refills_at_the_rate_and_caps_at_the_burst() -> None:
    limiter = RateLimiter(
        Limits(ingestion_rate_mb=1 / 1024 / 1024 * 100, ingestion_burst_size_mb=1 / 1024 / 1024 * 300)
    )
    assert limiter.rate("t") == 100 and limiter.burst("t") == 300
    assert limiter.allow("t", 300, 0.0)
    assert not limiter.allow("t", 1, 0.0)
    assert limiter.allow("t", 100, 1.0)
    assert not limiter.allow("t", 150, 1.5)  # only 50 earned; a refused request takes nothing
    assert limiter.allow("t", 50, 1.5)
    assert limiter.allow("t", 300, 100.0)  # refill stops at the burst...
    assert not limiter.allow("t", 1, 100.0)
    assert not limiter.allow("t", 301, 1000.0)  # ...and a request bigger than the burst never passes
    assert limiter.allow("other", 300, 0.0)  # buckets are per tenant


def test_token_bucket_follows_limit_changes_and_zero_rate() -> None:
    limits = Limits(ingestion_rate_mb=0, ingestion_burst_size_mb=100 / (1 << 20))
    limiter = RateLimiter(limits)
    assert limiter.allow("t", 60, 0.0)
    assert not limiter.allow("t", 60, 1000.0)  # a zero rate never refills
    limits.ingestion_rate_mb = float("inf")
    assert limiter.allow("t", 10**12, 1001.0)


# ------------------------------------------------------------------------------------------------ stream limit


def test_new_streams_beyond_the_limit_are_rejected_with_429_and_others_kept() -> None:
    limits = Limits(max_global_streams_per_user=3)
    known_labels = (("app", "old"), ("service_name", "old"))
    known = {stream_id(known_labels)}
    p = push(
        ('{app="old"}', [(NOW, "o")]),
        ('{app="n1"}', [(NOW, "1")]),
        ('{app="n2"}', [(NOW, "2")]),
        ('{app="n1"}', [(NOW, "1b")]),
    )
    result = run(p, limits, exists=known.__contains__, active=2)
    assert result.status == 429
    assert result.message == (
        'maximum active stream limit exceeded when trying to create stream {app="n2", service_name="n2"}, reduce '
        "the number of active streams (reduce labels or reduce label values), or contact your Loki administrator to "
        "see if the limit can be increased, user: 'tenant-1'"
    )
    assert result.discarded == {"stream_limit": (1, 1)}
    assert accepted_lines(result) == ["o", "1", "1b"]


def test_local_stream_limit_applies_when_smaller() -> None:
    limits = Limits(max_global_streams_per_user=100, max_streams_per_user=1)
    result = run(push(('{app="a"}', [(NOW, "a")]), ('{app="b"}', [(NOW, "b")])), limits)
    assert result.status == 429 and accepted_lines(result) == ["a"]


def test_no_stream_limit_when_both_limits_are_zero() -> None:
    limits = Limits(max_global_streams_per_user=0, max_streams_per_user=0)
    calls = []
    result = run(push(('{app="a"}', [(NOW, "a")])), limits, exists=lambda i: calls.append(i) or False, active=10**9)
    assert result.status == 204 and calls == []


def test_stream_limit_takes_precedence_over_validation_errors() -> None:
    limits = Limits(max_global_streams_per_user=1, max_line_size=3)
    result = run(push(('{app="a"}', [(NOW, "a"), (NOW, "long")]), ('{app="b"}', [(NOW, "b")])), limits)
    assert result.status == 429 and accepted_lines(result) == ["a"]
    assert len(result.errors) == 2


# ------------------------------------------------------------------------------------------------ batch


def test_batch_keeps_arrival_order_and_filters_metadata_with_entries() -> None:
    p = push(
        ('{app="a"}', [(NOW, "a1", {"k": "1"}), (NOW - 9 * DAY, "old", {"k": "x"})]),
        ('{app="b"}', [(NOW + 5, "b1")]),
    )
    result = run(p)
    assert accepted_lines(result) == ["a1", "b1"]
    assert result.batch.metadata.to_pylist() == [[("k", "1")], None]
    assert result.batch.stream_index.dtype == np.int32
    record_batch = result.batch.to_record_batch()
    assert record_batch.column("stream_id").to_pylist() == [result.batch.stream_ids[0], result.batch.stream_ids[1]]


def test_inconsistent_decoded_push_is_a_programming_error() -> None:
    bad = DecodedPush(
        ['{a="b"}'], np.array([2], np.int64), np.array([1], np.int64), pa.array(["x"], pa.large_string()), None
    )
    with pytest.raises(ValueError, match="inconsistent"):
        run(bad)
