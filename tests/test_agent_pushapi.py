"""The agent's Loki push API source: label-set parsing, body decoding, and a real HTTP server on loopback."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import cramjam
import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.agent.entry import Entry
from loglake.agent.pushapi import (
    PushApiSettings,
    PushApiTarget,
    PushRequestError,
    decode_push_body,
    parse_label_set,
)
from loglake.ingest.pushproto import encode_push, labels_text

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


class Sink:
    """Collects the entries a target hands over."""

    def __init__(self) -> None:
        self.batches: list[list[Entry]] = []
        self.lock = threading.Lock()

    def __call__(self, entries: list[Entry]) -> None:
        with self.lock:
            self.batches.append(entries)

    @property
    def entries(self) -> list[Entry]:
        with self.lock:
            return [e for batch in self.batches for e in batch]


@pytest.fixture
def start_target() -> Iterator:
    targets: list[PushApiTarget] = []

    def start(handler=None, **kwargs: object) -> tuple[PushApiTarget, Sink, str]:
        sink = Sink()
        kwargs.setdefault("listen_address", "127.0.0.1")
        kwargs.setdefault("listen_port", 0)
        target = PushApiTarget(PushApiSettings(**kwargs), handler or sink)  # type: ignore[arg-type]
        target.start()
        targets.append(target)
        host, port = target.address
        return target, sink, f"http://{host}:{port}"

    yield start
    for target in targets:
        target.stop()


def snappy_protobuf(streams: list) -> bytes:
    return bytes(cramjam.snappy.compress_raw(encode_push(streams)))


def json_body(streams: list) -> bytes:
    return orjson.dumps({"streams": streams})


# ---------------------------------------------------------------------------------------------------- label sets


def test_parse_label_set_syntax() -> None:
    assert parse_label_set('{a="b", c="d"}') == {"a": "b", "c": "d"}
    assert parse_label_set("{}") == {}
    assert parse_label_set(' { a = "x\\n\\"y" , b=`raw\\`, c=\'it\\\'s "q"\', } ') == {
        "a": 'x\n"y',
        "b": "raw\\",
        "c": 'it\'s "q"',
    }
    assert parse_label_set('up{job="x"}') == {"__name__": "up", "job": "x"}
    assert parse_label_set('{"service.name"="api"}') == {"service.name": "api"}
    assert parse_label_set('{a="", b="1"}') == {"b": "1"}  # empty means absent


@pytest.mark.parametrize(
    "text",
    ["", "a b", '{a="1"', '{a="1" b="2"}', '{a!="1"}', '{a=~"1"}', '{1a="x"}', '{a=x}', '{a="1",a="2"}', '{a="\\q"}',
     '{a="1"} x', "{a='open}"],
)  # fmt: skip
def test_parse_label_set_rejects_invalid_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid stream labels"):
        parse_label_set(text)


_label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_label_names, st.text(min_size=1, max_size=20), max_size=6))
def test_label_text_written_by_pushproto_parses_back(labels: dict[str, str]) -> None:
    assert parse_label_set(labels_text(labels)) == labels


# ---------------------------------------------------------------------------------------------------- bodies


def test_decode_protobuf_and_json_give_the_same_streams() -> None:
    streams = [('{app="a"}', [(1_700_000_000_123_456_789, "line one", {"trace_id": "t1"}), (5, "two")])]
    from_proto = decode_push_body(snappy_protobuf(streams), "application/x-protobuf", None, 1 << 20)
    json_streams = [
        {"stream": {"app": "a"}, "values": [["1700000000123456789", "line one", {"trace_id": "t1"}], ["5", "two"]]}
    ]
    from_json = decode_push_body(json_body(json_streams), "application/json; charset=utf-8", None, 1 << 20)
    expected = [({"app": "a"}, [(1_700_000_000_123_456_789, "line one", {"trace_id": "t1"}), (5, "two", {})])]
    assert from_proto == from_json == expected


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "message"),
    [
        (b"garbage", "application/x-protobuf", None, "snappy"),
        (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), "application/x-protobuf", None, "protobuf"),
        (b"{not json", "application/json", None, "invalid JSON"),
        (json_body([{"stream": {"a": "b"}, "values": [[1, "x"]]}]), "application/json", None, "nanoseconds"),
        (json_body([{"stream": {"a": "b"}, "values": [["1", 2]]}]), "application/json", None, "log line"),
        (json_body([{"stream": {"a": "b"}, "values": [["1", "x", {"k": 1}]]}]), "application/json", None, "metadata"),
        (json_body([{"stream": {"a": ["b"]}, "values": []}]), "application/json", None, "must be a string"),
        (snappy_protobuf([("{a=b}", [(1, "x")])]), "application/x-protobuf", None, "couldn't parse labels"),
        (b"{}", "application/json", "br", "Content-Encoding"),
        (b"{}", None, None, "Content-Type"),
        (b"not gzip", "application/json", "gzip", "invalid gzip"),
    ],
)
def test_decode_rejects_bad_bodies(body: bytes, content_type: str | None, encoding: str | None, message: str) -> None:
    with pytest.raises(PushRequestError, match=message) as info:
        decode_push_body(body, content_type, encoding, 1 << 20)
    assert info.value.status == 400


def test_decompressed_size_is_limited() -> None:
    big = json_body([{"stream": {"a": "b"}, "values": [["1", "x" * 10_000]]}])
    with pytest.raises(PushRequestError) as info:
        decode_push_body(gzip.compress(big), "application/json", "gzip", 5000)
    assert info.value.status == 413
    with pytest.raises(PushRequestError) as info:
        decode_push_body(snappy_protobuf([('{a="b"}', [(1, "x" * 10_000)])]), "application/x-protobuf", None, 5000)
    assert info.value.status == 413


# ---------------------------------------------------------------------------------------------------- the server


def test_protobuf_push_merges_configured_labels(start_target) -> None:
    _, sink, url = start_target(labels={"job": "push", "env": "prod"})
    body = snappy_protobuf(
        [
            ('{app="api", env="dev"}', [(1_000, "first", {"trace_id": "abc"}), (2_000, "second")]),
            ('{app="db"}', [(3_000, "third")]),
        ]
    )
    before = time.time_ns()
    response = httpx.post(url + "/loki/api/v1/push", content=body, headers=PROTOBUF)
    assert response.status_code == 204
    entries = sink.entries
    assert [e.line for e in entries] == ["first", "second", "third"]
    assert entries[0].labels == {"app": "api", "env": "prod", "job": "push"}  # the configured label wins
    assert entries[2].labels == {"app": "db", "env": "prod", "job": "push"}
    assert entries[0].metadata == {"trace_id": "abc"} and entries[1].metadata == {}
    stamps = [e.ts_ns for e in entries]
    assert before <= stamps[0] < stamps[1] < stamps[2] <= time.time_ns()  # now, distinct and rising
    assert len(sink.batches) == 1  # one handler call per push


def test_incoming_timestamps_are_kept_when_configured(start_target) -> None:
    _, sink, url = start_target(use_incoming_timestamp=True)
    body = snappy_protobuf([('{app="api"}', [(1_700_000_000_123_456_789, "a"), (5, "b")])])
    assert httpx.post(url + "/loki/api/v1/push", content=body, headers=PROTOBUF).status_code == 204
    assert [e.ts_ns for e in sink.entries] == [1_700_000_000_123_456_789, 5]


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])
def test_json_push(start_target, encoding: str | None) -> None:
    _, sink, url = start_target(labels={"job": "push"}, use_incoming_timestamp=True)
    body = json_body(
        [
            {"stream": {"app": "web"}, "values": [["1700000000000000001", "hello", {"user": "u1"}]]},
            {"stream": {"app": "web", "code": 500}, "values": [["1700000000000000002", "boom"]]},
        ]
    )
    headers = dict(JSON)
    if encoding == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding == "deflate":
        compressor = zlib.compressobj(wbits=-15)
        body, headers["Content-Encoding"] = compressor.compress(body) + compressor.flush(), "deflate"
    assert httpx.post(url + "/loki/api/v1/push", content=body, headers=headers).status_code == 204
    first, second = sink.entries
    assert (first.labels, first.line, first.ts_ns, first.metadata) == (
        {"app": "web", "job": "push"},
        "hello",
        1_700_000_000_000_000_001,
        {"user": "u1"},
    )
    assert second.labels == {"app": "web", "code": "500", "job": "push"}


def test_bad_push_is_answered_400_with_the_reason(start_target) -> None:
    _, sink, url = start_target()
    response = httpx.post(url + "/loki/api/v1/push", content=b"\x00garbage", headers=PROTOBUF)
    assert response.status_code == 400
    assert "snappy" in response.text
    bad_labels = snappy_protobuf([('{app="ok"}', [(1, "kept?")]), ("{app=ok}", [(2, "x")])])
    response = httpx.post(url + "/loki/api/v1/push", content=bad_labels, headers=PROTOBUF)
    assert response.status_code == 400
    assert "couldn't parse labels" in response.text
    assert sink.entries == []  # a push is taken whole or not at all


def test_too_large_push_is_refused(start_target) -> None:
    _, sink, url = start_target(max_send_msg_size=1000)
    body = snappy_protobuf([('{a="b"}', [(1, "x" * 5000)])])
    response = httpx.post(url + "/loki/api/v1/push", content=body, headers=PROTOBUF)
    assert response.status_code == 413
    assert sink.entries == []


def test_body_over_the_size_limit_is_refused_unread(start_target) -> None:
    _, sink, url = start_target(max_send_msg_size=1000)
    body = snappy_protobuf([('{a="b"}', [(1, os.urandom(3000).hex())])])
    assert len(body) > 1000
    response = httpx.post(url + "/loki/api/v1/push", content=body, headers=PROTOBUF)
    assert response.status_code == 413
    assert "exceeds limit 1000" in response.text
    assert sink.entries == []


def test_chunked_body(start_target) -> None:
    _, sink, url = start_target()
    body = snappy_protobuf([('{a="b"}', [(1, "chunked")])])
    response = httpx.post(url + "/loki/api/v1/push", content=iter([body[:5], body[5:]]), headers=PROTOBUF)
    assert response.status_code == 204
    assert [e.line for e in sink.entries] == ["chunked"]


def test_raw_lines(start_target) -> None:
    _, sink, url = start_target(labels={"job": "raw"})
    response = httpx.post(url + "/promtail/api/v1/raw", content=b"one\r\n\ntwo\nthree")
    assert response.status_code == 204
    assert [(e.line, e.labels) for e in sink.entries] == [(n, {"job": "raw"}) for n in ("one", "two", "three")]


def test_ready_and_unknown_routes(start_target) -> None:
    _, _, url = start_target()
    ready = httpx.get(url + "/ready")
    assert (ready.status_code, ready.text) == (200, "ready")
    assert httpx.get(url + "/loki/api/v1/push").status_code == 405
    assert httpx.post(url + "/ready").status_code == 405
    assert httpx.get(url + "/nope").status_code == 404


def test_handler_failure_is_a_500(start_target) -> None:
    def failing(entries: list[Entry]) -> None:
        raise RuntimeError("downstream is gone")

    _, _, url = start_target(handler=failing)
    body = snappy_protobuf([('{a="b"}', [(1, "x")])])
    response = httpx.post(url + "/loki/api/v1/push", content=body, headers=PROTOBUF)
    assert response.status_code == 500
    assert "downstream is gone" in response.text


def test_keep_alive_and_prompt_stop(start_target) -> None:
    target, sink, url = start_target()
    body = snappy_protobuf([('{a="b"}', [(1, "x")])])
    with httpx.Client() as client:
        for _ in range(3):
            assert client.post(url + "/loki/api/v1/push", content=body, headers=PROTOBUF).status_code == 204
        started = time.monotonic()
        target.stop()  # the client still holds an idle keep-alive connection
        assert time.monotonic() - started < 3
    assert len(sink.entries) == 3
    with pytest.raises(OSError), socket.create_connection(target_address(url), timeout=1):
        pass


def target_address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)
