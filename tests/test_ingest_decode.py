"""Push decoding: protobuf (C and pure-Python paths), snappy, gzip/deflate, JSON, and hostile bodies."""

from __future__ import annotations

import gzip
import zlib

import cramjam
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loglake.ingest import decode as decode_module
from loglake.ingest.decode import (
    DecodedPush,
    PushDecodeError,
    PushTooLargeError,
    c_decoder_available,
    decode_json,
    decode_protobuf,
    decode_push,
    media_type,
)
from loglake.ingest.pushproto import EntryAdapter, PushRequest, encode_push, labels_text, parse_push_request

PROTO = "application/x-protobuf"
LIMIT = 64 << 20

IMPLEMENTATIONS = [
    pytest.param(True, id="c", marks=pytest.mark.skipif(not c_decoder_available(), reason="C extension not built")),
    pytest.param(False, id="python"),
]


def snappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def as_entries(push: DecodedPush) -> list[tuple[str | list[tuple[str, str]], list[tuple[int, str, list | None]]]]:
    """Turn a decoded push back into (labels, [(ts, line, metadata pairs or None)]) per stream."""
    lines = push.line.to_pylist()
    metadata = push.metadata.to_pylist() if push.metadata is not None else [None] * len(lines)
    out = []
    pos = 0
    for labels, count in zip(push.stream_labels, push.counts.tolist(), strict=True):
        out.append((labels, [(int(push.ts[i]), lines[i], metadata[i]) for i in range(pos, pos + count)]))
        pos += count
    return out


@pytest.fixture(params=IMPLEMENTATIONS)
def use_c(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test once through the C decoder and once through the pure-Python fallback."""
    monkeypatch.setattr(decode_module, "use_c_decoder", request.param)
    return request.param


# ------------------------------------------------------------------------------------------------ round trips

texts = st.text(st.characters(codec="utf-8"), max_size=40)
metadata_pairs = st.lists(st.tuples(texts, texts), max_size=4)
ts_ns = st.integers(-(2**63), 2**63 - 1)
streams_strategy = st.lists(
    st.tuples(
        texts,
        st.lists(st.tuples(ts_ns, texts, st.one_of(st.none(), metadata_pairs)), max_size=6),
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(streams=streams_strategy)
def test_protobuf_round_trip_keeps_every_stream_entry_and_metadata(use_c: bool, streams: list) -> None:
    body = snappy(encode_push(streams))
    push = decode_push(body, PROTO, None, LIMIT)
    expected = [
        (labels, [(ts, line, list(md) if md else None) for ts, line, md in entries]) for labels, entries in streams
    ]
    assert as_entries(push) == expected
    assert push.ts.dtype == np.int64 and push.counts.dtype == np.int64
    assert str(push.line.type) == "large_string"
    if not any(md for _, entries in streams for *_, md in entries):
        assert push.metadata is None


@settings(max_examples=100, deadline=None)
@given(streams=streams_strategy)
def test_encode_push_bytes_equal_the_protobuf_runtime_serialization(streams: list) -> None:
    request = PushRequest()
    for labels, entries in streams:
        stream = request.streams.add()
        stream.labels = labels.encode()
        for ts, line, md in entries:
            entry = stream.entries.add()
            entry.timestamp.seconds, entry.timestamp.nanos = divmod(ts, 1_000_000_000)
            entry.line = line.encode()
            for name, value in md or []:
                entry.structuredMetadata.add(name=name.encode(), value=value.encode())
    assert encode_push(streams) == request.SerializeToString()


def test_encode_push_accepts_label_mappings_and_two_element_entries() -> None:
    body = encode_push([({"b": "2", "a": 'say "hi"'}, [(5, "line")])])
    push = decode_protobuf(body)
    assert push.stream_labels == ['{a="say \\"hi\\"", b="2"}']
    assert as_entries(push)[0][1] == [(5, "line", None)]
    assert labels_text([("z", "1"), ("a", "2")]) == '{a="2", z="1"}'


def test_c_and_python_decoders_agree_on_a_push_with_loki_only_fields() -> None:
    request = PushRequest(format=b"loki")
    stream = request.streams.add(labels=b'{app="x"}', hash=12345)
    entry = stream.entries.add(line=b"hello")
    entry.timestamp.seconds, entry.timestamp.nanos = 1_700_000_000, 42
    entry.structuredMetadata.add(name=b"trace_id", value=b"abc")
    entry.parsed.add(name=b"ignored", value=b"yes")
    data = request.SerializeToString()
    expected = [('{app="x"}', [(1_700_000_000_000_000_042, "hello", [("trace_id", "abc")])])]
    assert as_entries(decode_protobuf(data, use_c=False)) == expected
    if c_decoder_available():
        assert as_entries(decode_protobuf(data, use_c=True)) == expected


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    tag = _varint(number << 3 | wire_type)
    if wire_type == 2:
        return tag + _varint(len(payload)) + payload
    return tag + payload


UNKNOWN_FIELDS = (
    _field(9, 0, _varint(300))
    + _field(10, 1, b"12345678")
    + _field(11, 5, b"1234")
    + _field(12, 2, b"skipped bytes")
    + _field(13, 3)
    + _field(14, 0, b"\x01")
    + _field(15, 3)
    + _field(15, 4)
    + _field(13, 4)
)


def test_unknown_fields_of_every_wire_type_are_skipped(use_c: bool) -> None:
    entry = _field(1, 2, _field(1, 0, _varint(7)) + UNKNOWN_FIELDS) + _field(2, 2, b"line") + UNKNOWN_FIELDS
    stream = UNKNOWN_FIELDS + _field(1, 2, b'{a="b"}') + _field(2, 2, entry) + _field(3, 0, _varint(99))
    data = UNKNOWN_FIELDS + _field(1, 2, stream) + _field(2, 2, b"loki")
    assert as_entries(decode_protobuf(data)) == [('{a="b"}', [(7_000_000_000, "line", None)])]


def test_repeated_singular_fields_keep_the_last_value(use_c: bool) -> None:
    entry = _field(2, 2, b"first") + _field(1, 2, _field(1, 0, _varint(1))) + _field(2, 2, b"second")
    stream = _field(1, 2, b'{a="1"}') + _field(2, 2, entry) + _field(1, 2, b'{a="2"}')
    assert as_entries(decode_protobuf(_field(1, 2, stream))) == [('{a="2"}', [(1_000_000_000, "second", None)])]


def test_missing_fields_default_to_empty_labels_epoch_and_empty_line(use_c: bool) -> None:
    data = _field(1, 2, _field(2, 2, b""))
    assert as_entries(decode_protobuf(data)) == [("", [(0, "", None)])]


def test_timestamps_before_1970_and_at_int64_limits_are_exact(use_c: bool) -> None:
    values = [-1, -(2**63), 2**63 - 1, 1_704_067_200_000_000_001]
    push = decode_protobuf(encode_push([("{}", [(v, "x") for v in values])]))
    assert push.ts.tolist() == values


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        (_field(1, 0, _varint(1)) + _field(2, 0, _varint(1_000_000_000)), "nanos 1000000000"),
        (_field(2, 0, _varint(-1)), "nanos -1"),
        (_field(1, 0, _varint(2**62)), "cannot be represented in nanoseconds"),
        (_field(1, 0, _varint(-(2**62))), "cannot be represented in nanoseconds"),
    ],
)
def test_timestamps_outside_the_nanosecond_range_are_rejected(use_c: bool, timestamp: bytes, message: str) -> None:
    data = _field(1, 2, _field(2, 2, _field(1, 2, timestamp)))
    with pytest.raises(PushDecodeError, match=message):
        decode_protobuf(data)


# ------------------------------------------------------------------------------------------------ UTF-8

INVALID_UTF8 = [b"\xff", b"ok\xc3", b"\xe2\x82\x41", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"\xc0\xaf"]


@pytest.mark.parametrize("raw", INVALID_UTF8)
def test_invalid_utf8_in_lines_labels_and_metadata_is_replaced_like_python(use_c: bool, raw: bytes) -> None:
    pair = _field(1, 2, b"k" + raw) + _field(2, 2, raw + b"v")
    entry = _field(2, 2, b"line " + raw) + _field(3, 2, pair)
    data = _field(1, 2, _field(1, 2, b'{a="' + raw + b'"}') + _field(2, 2, entry))
    push = decode_protobuf(data)
    fix = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    assert push.stream_labels == [fix(b'{a="' + raw + b'"}')]
    assert push.line.to_pylist() == [fix(b"line " + raw)]
    assert push.metadata.to_pylist() == [[(fix(b"k" + raw), fix(raw + b"v"))]]


@pytest.mark.skipif(not c_decoder_available(), reason="C extension not built")
@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64) | st.text(max_size=20).map(str.encode))
def test_c_utf8_replacement_matches_python_replace_handler(data: bytes) -> None:
    from loglake.ingest import _pushdecode

    assert _pushdecode.utf8_replace(data) == data.decode("utf-8", "replace").encode()


# ------------------------------------------------------------------------------------------------ hostile protobuf


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a", "truncated varint"),
        (b"\x0a\x80", "truncated varint"),
        (b"\x0a\x05ab", "past the end"),
        (_field(1, 2, b"\x12\x10short"), "past the end"),
        (b"\x0b", "unmatched end-group|wrong wire type"),
        (_field(1, 0, b"\x01"), "wrong wire type"),
        (_field(1, 2, _field(2, 0, b"\x01")), "wrong wire type"),
        (_field(1, 2, _field(2, 2, _field(1, 0, b"\x01"))), "wrong wire type"),
        (_field(1, 2, _field(2, 2, _field(3, 2, _field(1, 0, b"\x01")))), "wrong wire type"),
        (b"\x2e", "invalid wire type"),
        (b"\x2f", "invalid wire type"),
        (b"\x02\x00", "field number 0"),
        (_field(5, 4), "unmatched end-group"),
        (_field(5, 3) + _field(6, 4), "unmatched end-group"),
        (_field(5, 3), "truncated"),
        (_field(5, 3) * 200, "nested too deeply"),
        (b"\x48" + b"\xff" * 11, "longer than ten bytes"),
        (_field(9, 1, b"1234"), "truncated fixed64"),
        (_field(9, 5, b"12"), "truncated fixed32"),
    ],
)
def test_malformed_protobuf_is_rejected_with_a_clear_error_by_the_c_decoder(data: bytes, message: str) -> None:
    if not c_decoder_available():
        pytest.skip("C extension not built")
    with pytest.raises(PushDecodeError, match=message):
        decode_protobuf(data, use_c=True)


def test_malformed_protobuf_is_rejected_by_the_python_decoder() -> None:
    for data in (b"\x0a", b"\x0a\x05ab", b"\x0e", b"\x02\x00", _field(5, 4)):
        with pytest.raises(PushDecodeError, match="invalid protobuf PushRequest"):
            decode_protobuf(data, use_c=False)


def test_every_truncation_of_a_valid_push_decodes_or_fails_cleanly(use_c: bool) -> None:
    data = encode_push([('{a="b"}', [(1, "one", {"k": "v"}), (2, "two")]), ('{c="d"}', [(3, "three")])])
    for cut in range(len(data)):
        try:
            decode_protobuf(data[:cut])
        except PushDecodeError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=200))
def test_random_bytes_decode_or_fail_with_push_decode_error(use_c: bool, garbage: bytes) -> None:
    try:
        push = decode_protobuf(garbage)
    except PushDecodeError:
        return
    assert len(push.ts) == len(push.line) == int(push.counts.sum())


@settings(max_examples=200, deadline=None)
@given(streams=streams_strategy, flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
def test_corrupted_pushes_never_crash_the_c_decoder_and_agree_with_python_when_valid(
    streams: list, flips: list
) -> None:
    if not c_decoder_available():
        return
    data = bytearray(encode_push(streams))
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    try:
        push = decode_protobuf(bytes(data), use_c=True)
    except PushDecodeError:
        return
    assert len(push.ts) == len(push.line) == int(push.counts.sum())
    try:
        reference = decode_protobuf(bytes(data), use_c=False)
    except PushDecodeError:
        return  # upb reads fields of the wrong wire type as unknown; the C decoder is stricter
    assert as_entries(push) == as_entries(reference)


# ------------------------------------------------------------------------------------------------ snappy


def test_empty_protobuf_body_is_rejected() -> None:
    with pytest.raises(PushDecodeError, match="empty"):
        decode_push(b"", PROTO, None, LIMIT)


def test_snappy_of_an_empty_request_gives_no_streams(use_c: bool) -> None:
    push = decode_push(snappy(b""), PROTO, None, LIMIT)
    assert push.stream_labels == [] and len(push) == 0 and push.metadata is None


def test_invalid_snappy_is_rejected() -> None:
    body = encode_push([('{a="b"}', [(1, "x")])])  # not compressed
    with pytest.raises(PushDecodeError, match="snappy"):
        decode_push(b"\x05" + b"\xff" * 10, PROTO, None, LIMIT)
    with pytest.raises(PushDecodeError):
        decode_push(body, PROTO, None, LIMIT)


def test_snappy_header_claiming_10_gb_is_refused_before_allocating() -> None:
    header = bytes(_varint(10 << 30))  # beyond a snappy block's 4 GiB maximum
    with pytest.raises(PushDecodeError, match="length header"):
        decode_push(header + b"\x00" * 16, PROTO, None, LIMIT)
    header = bytes(_varint(3 << 30))  # within snappy's range, over our limit
    with pytest.raises(PushTooLargeError, match=r"\(3221225472 vs 67108864\)"):
        decode_push(header + b"\x00" * 16, PROTO, None, LIMIT)


def test_snappy_body_over_the_decompressed_limit_is_too_large() -> None:
    body = snappy(encode_push([('{a="b"}', [(1, "x" * 5000)])]))
    with pytest.raises(PushTooLargeError):
        decode_push(body, PROTO, None, 1000)


def test_content_encoding_snappy_is_accepted_as_a_no_op(use_c: bool) -> None:
    body = snappy(encode_push([('{a="b"}', [(1, "x")])]))
    assert len(decode_push(body, PROTO, "snappy", LIMIT)) == 1


# ------------------------------------------------------------------------------------------------ gzip / deflate

JSON_PUSH = b'{"streams": [{"stream": {"foo": "bar2"}, "values": [["1570818238000000000", "fizzbuzz"]]}]}'


def test_gzip_and_deflate_bodies_are_decompressed_for_json_and_protobuf(use_c: bool) -> None:
    assert decode_push(gzip.compress(JSON_PUSH), "application/json", "gzip", LIMIT).line.to_pylist() == ["fizzbuzz"]
    raw_deflate = zlib.compressobj(wbits=-15)
    body = raw_deflate.compress(JSON_PUSH) + raw_deflate.flush()
    assert len(decode_push(body, "application/json", "deflate", LIMIT)) == 1
    assert len(decode_push(zlib.compress(JSON_PUSH), "application/json", "deflate", LIMIT)) == 1
    proto = snappy(encode_push([('{a="b"}', [(1, "x")])]))
    assert len(decode_push(gzip.compress(proto), PROTO, "gzip", LIMIT)) == 1


def test_gzip_with_several_members_is_read_whole() -> None:
    half = len(JSON_PUSH) // 2
    body = gzip.compress(JSON_PUSH[:half]) + gzip.compress(JSON_PUSH[half:])
    assert len(decode_push(body, "application/json", "gzip", LIMIT)) == 1


def test_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (32 << 20), compresslevel=9)  # ~32 KB expanding to 32 MB
    with pytest.raises(PushTooLargeError, match="too large"):
        decode_push(bomb, "application/json", "gzip", 1 << 20)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (gzip.compress(JSON_PUSH)[:-12], "truncated"),
        (gzip.compress(JSON_PUSH) + b"junk", "invalid gzip body"),
        (b"not gzip at all", "invalid gzip body"),
        (b"", "empty"),
    ],
)
def test_broken_gzip_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(PushDecodeError, match=message):
        decode_push(body, "application/json", "gzip", LIMIT)


def test_unsupported_content_encoding_is_rejected() -> None:
    with pytest.raises(PushDecodeError, match="Content-Encoding 'br' not supported"):
        decode_push(JSON_PUSH, "application/json", "br", LIMIT)


# ------------------------------------------------------------------------------------------------ content type


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", "application/json"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ('application/json; charset="utf-8"', "application/json"),
        ("application/x-protobuf", "application/x-protobuf"),
        ("application/jsonn; charset=utf-8", "application/jsonn"),
    ],
)
def test_media_type_is_parsed_like_go_mime(header: str, expected: str) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize("header", [None, "", "application/json; charsetutf-8", "/json", "application/json; a=1; a=2"])
def test_invalid_or_missing_content_type_is_rejected(header: str | None) -> None:
    with pytest.raises(PushDecodeError, match="Content-Type"):
        decode_push(JSON_PUSH, header, None, LIMIT)


def test_a_media_type_other_than_json_means_snappy_protobuf() -> None:
    with pytest.raises(PushDecodeError, match="snappy"):
        decode_push(JSON_PUSH, "application/jsonn", None, LIMIT)


# ------------------------------------------------------------------------------------------------ JSON


def test_json_push_with_structured_metadata_and_empty_lines() -> None:
    doc = {
        "streams": [
            {
                "stream": {"app": "a", "env": "prod"},
                "values": [["1", "x"], ["2", "", {"trace_id": "t", "span_id": "s"}]],
            },
            {"stream": {"app": "b"}, "values": [["-3", "y", {}]]},
        ]
    }
    push = decode_push(orjson.dumps(doc), "application/json", None, LIMIT)
    assert push.stream_labels == [[("app", "a"), ("env", "prod")], [("app", "b")]]
    assert as_entries(push) == [
        ([("app", "a"), ("env", "prod")], [(1, "x", None), (2, "", [("trace_id", "t"), ("span_id", "s")])]),
        ([("app", "b")], [(-3, "y", None)]),
    ]


@settings(max_examples=100, deadline=None)
@given(streams=streams_strategy)
def test_json_round_trip(streams: list) -> None:
    doc = {
        "streams": [
            {
                "stream": {"l": labels},
                "values": [[str(ts), line, dict(md)] if md else [str(ts), line] for ts, line, md in entries],
            }
            for labels, entries in streams
        ]
    }
    push = decode_json(orjson.dumps(doc))
    expected = [
        ([("l", labels)], [(ts, line, list(dict(md).items()) if md else None) for ts, line, md in entries])
        for labels, entries in streams
    ]
    assert as_entries(push) == expected


def test_json_null_values_and_null_entries_are_skipped_as_loki_does() -> None:
    push = decode_json(
        b'{"streams": [{"stream": {"a": "b"}, "values": null}, {"stream": {"c": 1}, "values": [null, ["5", "x"]]}]}'
    )
    assert push.counts.tolist() == [0, 1]
    assert push.stream_labels[1] == [("c", "1")]
    assert decode_json(b"{}").stream_labels == []
    assert decode_json(b'{"streams": [{"values": [["1", "x"]]}]}').stream_labels == [[]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"{not json", "invalid JSON"),
        (b"[]", "expected an object"),
        (b'{"streams": {}}', '"streams" must be an array'),
        (b'{"streams": [1]}', r"streams\[0\] must be an object"),
        (b'{"streams": [{"stream": "a", "values": []}]}', r"streams\[0\].stream must be an object"),
        (b'{"streams": [{"stream": {"a": null}, "values": []}]}', "must have a string value"),
        (b'{"streams": [{"stream": {}, "values": {}}]}', r"values must be an array"),
        (b'{"streams": [{"stream": {}, "values": [["1"]]}]}', r"values\[0\] must be an array"),
        (b'{"streams": [{"stream": {}, "values": [[1, "x"]]}]}', "must be a string of nanoseconds"),
        (b'{"streams": [{"stream": {}, "values": [["1.5", "x"]]}]}', "timestamp '1.5'"),
        (b'{"streams": [{"stream": {}, "values": [["99999999999999999999", "x"]]}]}', "int64 range"),
        (b'{"streams": [{"stream": {}, "values": [["1", {"fizz": "buzz"}]]}]}', "log line"),
        (b'{"streams": [{"stream": {}, "values": [["1", "x", "md"]]}]}', "structured metadata"),
        (b'{"streams": [{"stream": {}, "values": [["1", "x", {"k": 1}]]}]}', "structured metadata 'k'"),
    ],
)
def test_malformed_json_is_rejected_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(PushDecodeError, match=message):
        decode_push(body, "application/json", None, LIMIT)


def test_invalid_utf8_inside_json_strings_is_replaced() -> None:
    body = b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "bad \xff byte"]]}]}'
    assert decode_json(body).line.to_pylist() == ["bad \ufffd byte"]


def test_json_body_over_the_limit_is_too_large() -> None:
    with pytest.raises(PushTooLargeError):
        decode_push(JSON_PUSH, "application/json", None, 10)


def test_bench_sized_push_decodes_identically_in_c_and_python() -> None:
    rng = np.random.default_rng(1)
    streams = []
    for s in range(20):
        entries = []
        for i in range(300):
            md = {"trace_id": f"{rng.integers(1 << 60):x}", "span_id": "s"} if i % 3 == 0 else None
            entries.append((1_704_067_200_000_000_000 + i, "level=info msg=" + "x" * int(rng.integers(0, 300)), md))
        streams.append((f'{{service_name="svc-{s}", pod="p{s}"}}', entries))
    data = encode_push(streams)
    python = decode_protobuf(data, use_c=False)
    assert as_entries(python)[0][1][0][2] == [("trace_id", streams[0][1][0][2]["trace_id"]), ("span_id", "s")]
    if c_decoder_available():
        c = decode_protobuf(data, use_c=True)
        assert c.stream_labels == python.stream_labels
        assert c.line.equals(python.line) and c.metadata.equals(python.metadata)
        assert (c.ts == python.ts).all() and (c.counts == python.counts).all()


def test_parse_push_request_gives_protobuf_messages_with_bytes_fields() -> None:
    request = parse_push_request(encode_push([('{a="b"}', [(1, "x")])]))
    assert request.streams[0].labels == b'{a="b"}'
    assert isinstance(request.streams[0].entries[0], EntryAdapter)
