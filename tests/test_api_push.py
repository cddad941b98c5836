"""Push API: the formats Loki accepts, tenants, and Loki's answers to bad input, losing nothing acknowledged."""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import cramjam
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loglake.ingest.pushproto import encode_push
from tests.conftest import LoglakeServer
from tests.helpers import now_ns, push_json, read_all, stream

PUSH = "/loki/api/v1/push"
LEGACY_PUSH = "/api/prom/push"
PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
GZIP_JSON = {**JSON, "Content-Encoding": "gzip"}
T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
S = 10**9


def snappy_proto(streams: list[tuple[Any, list[Any]]]) -> bytes:
    """Encode streams as Promtail sends them: a snappy (block format) compressed protobuf PushRequest."""
    return bytes(cramjam.snappy.compress_raw(encode_push(streams)))


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """Return the sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _module_server(tmp_path_factory: pytest.TempPathFactory, name: str, config: dict[str, Any]) -> Iterator[Any]:
    server = LoglakeServer(tmp_path_factory.mktemp(name) / "data", config)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoglakeServer]:
    """A server with Loki's default limits, except that it accepts the fixed 2024 timestamps of the test data."""
    yield from _module_server(tmp_path_factory, "lenient", {"limits_config": {"reject_old_samples": False}})


STRICT_LIMITS = {
    "reject_old_samples": True,
    "reject_old_samples_max_age": "1h",
    "creation_grace_period": "10m",
    "max_line_size": "1KB",
    "max_label_name_length": 32,
    "max_label_value_length": 64,
    "max_label_names_per_series": 4,
    # Without service name discovery the stream texts in messages are exactly what was sent.
    "discover_service_name": [],
}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoglakeServer]:
    """A server with small limits, so that each kind of bad push is cheap to build."""
    config = {"distributor": {"max_recv_msg_size": "1MiB"}, "limits_config": STRICT_LIMITS}
    yield from _module_server(tmp_path_factory, "strict", config)


# ---------------------------------------------------------------------------------------------- formats


def _entries(job: str) -> list[tuple[int, str, dict[str, str]]]:
    return [(T0 + i * S + 123_456_789, f"{job} line {i}", {"trace_id": f"t{i}"} if i == 1 else {}) for i in range(3)]


def _json_body(job: str) -> bytes:
    values = [[str(ts), line, md] if md else [str(ts), line] for ts, line, md in _entries(job)]
    return httpx.Request("POST", "/", json={"streams": [{"stream": {"job": job}, "values": values}]}).read()


def _proto_body(job: str) -> bytes:
    return snappy_proto([({"job": job}, [(ts, line, md) if md else (ts, line) for ts, line, md in _entries(job)])])


FORMATS: dict[str, tuple[str, Callable[[str], bytes], dict[str, str]]] = {
    "protobuf+snappy": (PUSH, _proto_body, PROTO),
    "protobuf+snappy with Content-Encoding snappy": (PUSH, _proto_body, {**PROTO, "Content-Encoding": "snappy"}),
    "protobuf+snappy on /api/prom/push": (LEGACY_PUSH, _proto_body, PROTO),
    "json": (PUSH, _json_body, JSON),
    "json with charset": (PUSH, _json_body, {"Content-Type": "application/json; charset=utf-8"}),
    "gzip json": (PUSH, lambda job: gzip.compress(_json_body(job)), GZIP_JSON),
    "deflate json": (PUSH, lambda job: zlib.compress(_json_body(job)), {**JSON, "Content-Encoding": "deflate"}),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_push_format_stores_lines_timestamps_and_structured_metadata(lenient: LoglakeServer, fmt: str) -> None:
    path, build, headers = FORMATS[fmt]
    job = "fmt-" + "".join(c if c.isalnum() else "_" for c in fmt)
    with lenient.client() as c:
        r = c.post(path, content=build(job), headers=headers)
        assert (r.status_code, r.content) == (204, b"")
        got = read_all(c, f'{{job="{job}"}}', T0, T0 + 10 * S)
    assert [(ts, line) for ts, line, _ in got] == [(ts, line) for ts, line, _ in _entries(job)], "ns kept exactly"
    # Structured metadata is stored with its entry and shows up among the result stream's labels.
    assert [labels for _, _, labels in got] == [
        {"job": job, "service_name": job},
        {"job": job, "service_name": job, "trace_id": "t1"},
        {"job": job, "service_name": job},
    ], "service_name is discovered from job"


def test_legacy_path_reads_loki_v0_json(lenient: LoglakeServer) -> None:
    # Loki decodes JSON on /api/prom/push in the old shape: labels as text, entries with RFC 3339 `ts`.
    body = {
        "streams": [
            {"labels": '{job="legacy-json"}', "entries": [{"ts": "2024-01-01T00:00:01.5Z", "line": "old shape"}]}
        ]
    }
    with lenient.client() as c:
        assert c.post(LEGACY_PUSH, json=body).status_code == 204
        got = read_all(c, '{job="legacy-json"}', T0, T0 + 10 * S)
    assert [(ts, line) for ts, line, _ in got] == [(T0 + 1_500_000_000, "old shape")]


def test_empty_label_set_is_stored_under_service_name_unknown_service(lenient: LoglakeServer) -> None:
    # Loki adds service_name before validating labels, so with discovery on an empty label set is a valid stream.
    with lenient.client() as c:
        assert push_json(c, [stream({}, [(T0 + 7, "no labels at all")])]).status_code == 204
        got = read_all(c, '{service_name="unknown_service"} |= "no labels at all"', T0, T0 + S)
    assert got == [(T0 + 7, "no labels at all", {"service_name": "unknown_service"})]


def test_service_name_is_discovered_from_the_first_listed_label(lenient: LoglakeServer) -> None:
    with lenient.client() as c:
        assert push_json(c, [stream({"app": "shop", "job": "sn"}, [(T0 + 8, "x")])]).status_code == 204
        got = read_all(c, '{job="sn"}', T0, T0 + S)
    assert got[0][2] == {"app": "shop", "job": "sn", "service_name": "shop"}


def test_a_retried_push_does_not_double_the_data(lenient: LoglakeServer) -> None:
    body = [stream({"job": "retry"}, [(T0 + i, f"once {i}") for i in range(5)])]
    with lenient.client() as c:
        assert push_json(c, body).status_code == 204
        assert push_json(c, body).status_code == 204
        assert len(read_all(c, '{job="retry"}', T0, T0 + S)) == 5


# ---------------------------------------------------------------------------------------------- tenants


def test_with_auth_enabled_the_tenant_is_the_org_id_header_and_tenants_are_isolated(make_server: Any) -> None:
    server = make_server({"auth_enabled": True, "limits_config": {"reject_old_samples": False}})
    with server.client() as anonymous, server.client("team-a") as a, server.client("team-b") as b:
        r = push_json(anonymous, [stream({"job": "t"}, [(T0, "nobody")])])
        assert r.status_code == 401 and "no org id" in r.text
        r = anonymous.get("/loki/api/v1/query_range", params={"query": '{job="t"}', "start": T0, "end": T0 + S})
        assert r.status_code == 401
        assert push_json(a, [stream({"job": "t"}, [(T0, "for a")])]).status_code == 204
        r = b.post(PUSH, content=snappy_proto([('{job="t"}', [(T0 + 1, "for b")])]), headers=PROTO)
        assert r.status_code == 204
        assert [e[1] for e in read_all(a, '{job="t"}', T0, T0 + S)] == ["for a"]
        assert [e[1] for e in read_all(b, '{job="t"}', T0, T0 + S)] == ["for b"]
        assert a.get("/loki/api/v1/label/job/values", params={"start": T0, "end": T0 + S}).json()["data"] == ["t"]
        assert metric(a, "loki_distributor_lines_received_total", tenant="team-a") == 1
        assert metric(a, "loki_distributor_lines_received_total", tenant="team-b") == 1
        assert metric(a, "loki_distributor_lines_received_total", tenant="fake") == 0


def test_with_auth_disabled_every_request_is_tenant_fake(lenient: LoglakeServer) -> None:
    with lenient.client("someone") as c, lenient.client() as plain:
        before = metric(plain, "loki_distributor_lines_received_total", tenant="fake")
        assert push_json(c, [stream({"job": "fake-tenant"}, [(T0, "x")])]).status_code == 204
        assert [e[1] for e in read_all(plain, '{job="fake-tenant"}', T0, T0 + S)] == ["x"]
        assert metric(plain, "loki_distributor_lines_received_total", tenant="fake") == before + 1
        assert metric(plain, "loki_distributor_lines_received_total", tenant="someone") == 0


# ---------------------------------------------------------------------------------------------- bad input


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """Yield the body in pieces, so httpx sends it chunked, with no Content-Length to check up front."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


Bad = Callable[[str, int], tuple[Any, dict[str, str]]]


def _json(streams: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    return httpx.Request("POST", "/", json={"streams": streams}).read(), JSON


# name -> (build(job, now) -> (body, headers), status, text the answer must contain, discard reasons counted)
BAD_PUSHES: dict[str, tuple[Bad, int, str, tuple[str, ...]]] = {
    "truncated protobuf": (
        lambda job, now: (bytes(cramjam.snappy.compress_raw(encode_push([({"job": job}, [(now, "x")])])[:-3])), PROTO),
        400,
        "invalid protobuf PushRequest",
        (),
    ),
    "garbage protobuf": (
        lambda job, now: (bytes(cramjam.snappy.compress_raw(b"\xff" * 64)), PROTO),
        400,
        "protobuf",
        (),
    ),
    "invalid snappy": (lambda job, now: (b"\x00\x01\x02definitely not snappy", PROTO), 400, "invalid snappy body", ()),
    "snappy header claiming 50 MB": (
        lambda job, now: (_varint(50_000_000) + b"\x00" * 32, PROTO),
        400,
        "decompressed message size too large",
        (),
    ),
    "snappy header beyond 4 GB": (lambda job, now: (b"\x80\x80\x80\x80\x28" + b"\x00" * 16, PROTO), 400, "snappy", ()),
    "invalid JSON": (lambda job, now: (b'{"streams": [', JSON), 400, "invalid JSON push body", ()),
    "wrong JSON shape": (
        lambda job, now: (b'{"streams": [{"stream": {"a": "b"}, "values": "nope"}]}', JSON),
        400,
        "values must be an array",
        (),
    ),
    "JSON timestamp not a number": (
        lambda job, now: _json([{"stream": {"job": job}, "values": [["yesterday", "x"]]}]),
        400,
        "yesterday",
        (),
    ),
    "gzip bomb": (
        lambda job, now: (
            gzip.compress(b'{"streams": [' + b" " * (4 << 20) + b"]}"),
            {**JSON, "Content-Encoding": "gzip"},
        ),
        400,
        "decompressed message size too large",
        (),
    ),
    "unsupported Content-Encoding": (
        lambda job, now: (_json([stream({"job": job}, [(now, "x")])])[0], {**JSON, "Content-Encoding": "br"}),
        400,
        "not supported",
        (),
    ),
    "no streams": (lambda job, now: (b'{"streams": []}', JSON), 422, "at least one valid stream is required", ()),
    "invalid label name": (
        lambda job, now: (snappy_proto([(f'{{bad-name="{job}"}}', [(now, "x")])]), PROTO),
        400,
        "couldn't parse labels",
        (),
    ),
    "duplicate label names": (
        lambda job, now: (snappy_proto([(f'{{job="{job}", job="again"}}', [(now, "x")])]), PROTO),
        400,
        "has duplicate label name: 'job'",
        ("duplicate_label_names", "invalid_labels"),
    ),
    "empty label set": (
        lambda job, now: _json([stream({}, [(now, "x")])]),
        400,
        "error at least one label pair is required per stream",
        ("missing_labels", "invalid_labels"),
    ),
    "too many labels": (
        lambda job, now: _json([stream({"job": job, "a": "1", "b": "2", "c": "3", "d": "4"}, [(now, "x")])]),
        400,
        "has 5 label names; limit 4",
        ("max_label_names_per_series", "invalid_labels"),
    ),
    "label name too long": (
        lambda job, now: _json([stream({"job": job, "n" * 33: "v"}, [(now, "x")])]),
        400,
        f"has label name too long: '{'n' * 33}'",
        ("label_name_too_long", "invalid_labels"),
    ),
    "label value too long": (
        lambda job, now: _json([stream({"job": job, "v": "w" * 65}, [(now, "x")])]),
        400,
        f"has label value too long: '{'w' * 65}'",
        ("label_value_too_long", "invalid_labels"),
    ),
    "line too long": (
        lambda job, now: _json([stream({"job": job}, [(now, "y" * 1001)])]),
        400,
        "max entry size '1000' bytes exceeded for stream '{job=\"bad-line_too_long\"}' while adding an entry with "
        "length '1001' bytes",
        ("line_too_long",),
    ),
    "too old": (
        lambda job, now: _json([stream({"job": job}, [(now - 2 * 3600 * S, "stale")])]),
        400,
        "has timestamp too old",
        ("greater_than_max_sample_age",),
    ),
    "too far in the future": (
        lambda job, now: _json([stream({"job": job}, [(now + 3600 * S, "early")])]),
        400,
        "has timestamp too new",
        ("too_far_in_future",),
    ),
}


def _case_job(case: str) -> str:
    return "bad-" + "".join(c if c.isalnum() else "_" for c in case.lower().replace(" ", "_"))


@pytest.mark.parametrize("case", list(BAD_PUSHES))
def test_bad_push_gets_a_clear_4xx_and_loses_nothing(strict: LoglakeServer, case: str) -> None:
    build, status, text, reasons = BAD_PUSHES[case]
    job = _case_job(case)
    now = now_ns()
    good = [stream({"job": f"{job}-good"}, [(now - 60 * S + i, f"good {i}") for i in range(10)])]
    with strict.client() as c:
        assert push_json(c, good).status_code == 204
        before = {reason: metric(c, "loki_discarded_samples_total", reason=reason, tenant="fake") for reason in reasons}
        body, headers = build(job, now)
        r = c.post(PUSH, content=body, headers=headers)
        assert r.status_code == status, r.text
        assert text in r.text
        for reason in reasons:
            after = metric(c, "loki_discarded_samples_total", reason=reason, tenant="fake")
            assert after == before[reason] + 1, reason
        # The server keeps serving: earlier data is all there and a new push works.
        assert c.get("/ready").status_code == 200
        more = [stream({"job": f"{job}-good"}, [(now - 30 * S + i, f"more {i}") for i in range(10)])]
        assert push_json(c, more).status_code == 204
        assert len(read_all(c, f'{{job="{job}-good"}}', now - 120 * S, now + S)) == 20
        assert read_all(c, f'{{job="{job}"}}', now - 3 * 3600 * S, now + 2 * 3600 * S) == [], "nothing bad stored"


@pytest.mark.parametrize("chunked", [False, True], ids=["with Content-Length", "chunked"])
def test_body_over_max_recv_msg_size_is_413(strict: LoglakeServer, chunked: bool) -> None:
    now = now_ns()
    noise = random.Random(0)
    body = snappy_proto([({"job": "big"}, [(now - i, noise.randbytes(450).hex()) for i in range(1500)])])
    assert len(body) > 1 << 20
    with strict.client() as c:
        before = metric(c, "loki_discarded_bytes_total", reason="request_body_too_large", tenant="fake")
        r = c.post(PUSH, content=_chunks(body) if chunked else body, headers=PROTO)
        assert r.status_code == 413
        assert "request body too large" in r.text and str(1 << 20) in r.text
        # Loki counts the declared size as discarded; a chunked body declares none.
        after = metric(c, "loki_discarded_bytes_total", reason="request_body_too_large", tenant="fake")
        assert after == before + (0 if chunked else len(body))
        assert push_json(c, [stream({"job": "after-big"}, [(now, "still here")])]).status_code == 204
        assert read_all(c, '{job="big"}', now - S, now + S) == []


def test_a_push_with_some_invalid_streams_stores_the_valid_ones_and_names_the_bad_one(strict: LoglakeServer) -> None:
    now = now_ns()
    body = [
        stream({"job": "mixed-ok-1"}, [(now, "kept 1")]),
        stream({"job": "mixed-bad", "v": "w" * 65}, [(now, "refused"), (now + 1, "refused too")]),
        stream({"job": "mixed-ok-2"}, [(now, "kept 2"), (now + 1, "y" * 1001)]),
    ]
    with strict.client() as c:
        before = metric(c, "loki_discarded_samples_total", reason="label_value_too_long", tenant="fake")
        r = push_json(c, body)
        assert r.status_code == 400
        assert f'stream \'{{job="mixed-bad", v="{"w" * 65}"}}\' has label value too long' in r.text
        assert "max entry size '1000' bytes exceeded for stream '{job=\"mixed-ok-2\"}'" in r.text
        assert metric(c, "loki_discarded_samples_total", reason="label_value_too_long", tenant="fake") == before + 2
        got = read_all(c, '{job=~"mixed-.+"}', now - S, now + S)
    assert sorted(line for _, line, _ in got) == ["kept 1", "kept 2"]


def test_oversized_lines_are_stored_truncated_when_configured(make_server: Any) -> None:
    limits = {"max_line_size": "100B", "max_line_size_truncate": True, "reject_old_samples": False}
    server = make_server({"limits_config": limits})
    with server.client() as c:
        r = push_json(c, [stream({"job": "trunc"}, [(T0, "z" * 500), (T0 + 1, "short")])])
        assert r.status_code == 204
        got = [line for _, line, _ in read_all(c, '{job="trunc"}', T0, T0 + S)]
    assert got == ["z" * 100, "short"]


@pytest.mark.xfail(
    strict=True, reason="config.py has no max_line_size_truncate_identifier field: the setting is accepted and ignored"
)
def test_truncated_lines_end_with_the_configured_identifier(make_server: Any) -> None:
    limits = {
        "max_line_size": "100B",
        "max_line_size_truncate": True,
        "max_line_size_truncate_identifier": "[cut]",
        "reject_old_samples": False,
    }
    server = make_server({"limits_config": limits})
    with server.client() as c:
        assert push_json(c, [stream({"job": "trunc"}, [(T0, "z" * 500)])]).status_code == 204
        (entry,) = read_all(c, '{job="trunc"}', T0, T0 + S)
    assert entry[1] == "z" * 95 + "[cut]"


def test_over_rate_pushes_get_429_and_smaller_ones_still_pass(make_server: Any) -> None:
    server = make_server({"limits_config": {"ingestion_rate_mb": 0.01, "ingestion_burst_size_mb": 0.01}})
    now = now_ns()
    with server.client() as c:
        r = push_json(c, [stream({"job": "rate"}, [(now - i, "r" * 1000) for i in range(100)])])
        assert r.status_code == 429, r.text
        # Loki's MB is 2**20 bytes: 0.01 MB/s is 10485 bytes/s.
        assert r.text.startswith("ingestion rate limit exceeded for user fake (limit: 10485 bytes/sec)")
        assert "while attempting to ingest '100' lines totaling '100000' bytes" in r.text
        assert metric(c, "loki_discarded_samples_total", reason="rate_limited", tenant="fake") == 100
        assert push_json(c, [stream({"job": "rate"}, [(now, "small")])]).status_code == 204
        assert [line for _, line, _ in read_all(c, '{job="rate"}', now - S, now + S)] == ["small"]


def test_new_streams_over_max_global_streams_per_user_get_429(make_server: Any) -> None:
    server = make_server({"limits_config": {"max_global_streams_per_user": 2}})
    now = now_ns()
    with server.client() as c:
        assert push_json(c, [stream({"n": str(i)}, [(now, "x")]) for i in range(2)]).status_code == 204
        r = push_json(c, [stream({"n": "new"}, [(now, "refused")]), stream({"n": "0"}, [(now + 1, "existing")])])
        assert r.status_code == 429
        assert r.text.startswith(
            'maximum active stream limit exceeded when trying to create stream {n="new", '
            'service_name="unknown_service"}'
        )
        assert "user: 'fake'" in r.text
        assert metric(c, "loki_discarded_samples_total", reason="stream_limit", tenant="fake") == 1
        # Streams that already exist keep accepting entries, in that push and later ones.
        assert push_json(c, [stream({"n": "1"}, [(now + 2, "later")])]).status_code == 204
        got = sorted(line for _, line, _ in read_all(c, '{n=~".+"}', now - S, now + S))
    assert got == ["existing", "later", "x", "x"]


def test_discarded_bytes_are_counted_by_reason(strict: LoglakeServer) -> None:
    now = now_ns()
    with strict.client() as c:
        before = metric(c, "loki_discarded_bytes_total", reason="line_too_long", tenant="fake")
        assert push_json(c, [stream({"job": "bytes"}, [(now, "y" * 1500)])]).status_code == 400
        assert metric(c, "loki_discarded_bytes_total", reason="line_too_long", tenant="fake") == before + 1500
