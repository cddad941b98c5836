"""Decode the body of a Loki push (`POST /loki/api/v1/push`) into flat columns.

Formats as Loki 3.7 accepts them: `Content-Type: application/json` means JSON; any other valid media type
means a snappy (block format) compressed protobuf PushRequest. `Content-Encoding` may be gzip or deflate
(applied on top of either format) or snappy (a no-op, some clients set it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import cramjam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from loglake.ingest import compression
from loglake.model import METADATA_TYPE
from loglake.timestamps import parse_rfc3339_ns

try:
    from loglake.ingest import _pushdecode
except ImportError:  # built without a compiler: the pure-Python path below does the same job, slower
    _pushdecode = None  # type: ignore[assignment]

JSON_MEDIA_TYPE = "application/json"

use_c_decoder: bool = _pushdecode is not None and os.environ.get("LOGLAKE_PUSH_DECODER", "") != "python"
"""Whether protobuf bodies go through the C extension; set to False (or LOGLAKE_PUSH_DECODER=python) to force
the pure-Python path."""

_NS = 1_000_000_000
_MIN_SECONDS = -(2**63) // _NS
_MAX_SECONDS = (2**63 - 1) // _NS


class PushDecodeError(ValueError):
    """A push body that cannot be decoded (HTTP 400)."""


class PushTooLargeError(PushDecodeError):
    """A push body whose decompressed size is over the limit (HTTP 413)."""


@dataclass
class DecodedPush:
    """The streams and entries of one push, as sent, in flat columns."""

    stream_labels: list[str | list[tuple[str, str]]]
    """Label-set text as sent (protobuf) or (name, value) pairs (JSON), one per stream."""
    counts: np.ndarray
    """int64: entries per stream, in the order of `stream_labels`."""
    ts: np.ndarray
    """int64 nanoseconds, all entries, grouped by stream in stream order."""
    line: pa.Array
    """large_string: all lines (invalid UTF-8 replaced by U+FFFD)."""
    metadata: pa.Array | None
    """METADATA_TYPE per entry, null where an entry has none; None when no entry of the push has any."""

    def __len__(self) -> int:
        return len(self.ts)


def c_decoder_available() -> bool:
    """Say whether the C extension was built."""
    return _pushdecode is not None


def decode_push(
    body: bytes, content_type: str | None, content_encoding: str | None, max_decompressed_bytes: int
) -> DecodedPush:
    """Decode a push body; raise PushDecodeError (or PushTooLargeError) with a message for the client."""
    encoding = (content_encoding or "").strip().lower()
    if encoding == "gzip":
        body = _inflate(body, 31, max_decompressed_bytes, "gzip")
    elif encoding == "deflate":
        body = _inflate_deflate(body, max_decompressed_bytes)
    elif encoding not in ("", "snappy"):
        raise PushDecodeError(f"Content-Encoding {encoding!r} not supported; use gzip, deflate or none")
    if media_type(content_type) == JSON_MEDIA_TYPE:
        if len(body) > max_decompressed_bytes:
            raise PushTooLargeError(_too_large(len(body), max_decompressed_bytes))
        return decode_json(body)
    return decode_protobuf(snappy_decompress(body, max_decompressed_bytes))


def _too_large(size: int, limit: int) -> str:
    return f"decompressed message size too large than max ({size} vs {limit})"


# ---------------------------------------------------------------------------------------------------- headers

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE_RE = re.compile(rf"({_TOKEN})(?:/({_TOKEN}))?")
_PARAM_RE = re.compile(rf'\s*;\s*(?:({_TOKEN})\s*=\s*(?:{_TOKEN}|"(?:[^"\\]|\\.)*"))?\s*')


def media_type(content_type: str | None) -> str:
    """Return the lower-cased media type of a Content-Type header, checked as Go's mime.ParseMediaType does."""
    if not content_type or not content_type.strip():
        raise PushDecodeError(
            "Content-Type header is missing (mime: no media type); "
            "send application/x-protobuf (snappy-compressed) or application/json"
        )
    text = content_type.strip()
    m = _MEDIA_TYPE_RE.match(text)
    if not m:
        raise PushDecodeError(f"invalid Content-Type {content_type!r}: expected a media type such as application/json")
    pos = m.end()
    seen: set[str] = set()
    while pos < len(text):
        p = _PARAM_RE.match(text, pos)
        if not p or p.end() == pos:
            raise PushDecodeError(f"invalid Content-Type {content_type!r}: mime: invalid media parameter")
        name = (p.group(1) or "").lower()
        if name:
            if name in seen:
                raise PushDecodeError(f"invalid Content-Type {content_type!r}: mime: duplicate parameter {name!r}")
            seen.add(name)
        pos = p.end()
    return m.group(0).lower()


# ---------------------------------------------------------------------------------------------------- compression


def _inflate(body: bytes, wbits: int, limit: int, what: str) -> bytes:
    try:
        return compression.inflate(body, wbits, limit, what) if wbits else compression.inflate_deflate(body, limit)
    except compression.DecompressTooLarge as exc:
        raise PushTooLargeError(f"{_too_large(exc.size, limit)}: the {what} body decompresses to more") from None
    except compression.DecompressError as exc:
        raise PushDecodeError(str(exc)) from None


def _inflate_deflate(body: bytes, limit: int) -> bytes:
    return _inflate(body, 0, limit, "deflate")


def snappy_decompressed_length(body: bytes | memoryview) -> int:
    """Return the length a snappy block says it decompresses to (its leading varint)."""
    value = 0
    for i in range(min(len(body), 5)):
        b = body[i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if value > 0xFFFF_FFFF:
                break
            return value
    raise PushDecodeError("invalid snappy body: corrupt length header (expected a snappy block-format message)")


def snappy_decompress(body: bytes, limit: int) -> bytes | memoryview:
    """Decompress a snappy block, checking its announced size against `limit` before allocating."""
    if not body:
        raise PushDecodeError("push body is empty: expected a snappy-compressed protobuf PushRequest")
    size = snappy_decompressed_length(body)
    if size > limit:
        raise PushTooLargeError(_too_large(size, limit))
    out = bytearray(size)
    try:
        written = cramjam.snappy.decompress_raw_into(body, out)
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise PushDecodeError(f"invalid snappy body: {exc}") from None
    if written != size:
        raise PushDecodeError(f"invalid snappy body: header announces {size} bytes but {written} were decoded")
    return memoryview(out)


# ---------------------------------------------------------------------------------------------------- protobuf


def decode_protobuf(data: bytes | memoryview, *, use_c: bool | None = None) -> DecodedPush:
    """Decode an uncompressed PushRequest; `use_c` picks the implementation (default: `use_c_decoder`)."""
    if use_c if use_c is not None else use_c_decoder:
        if _pushdecode is None:
            raise RuntimeError("the C push decoder (loglake.ingest._pushdecode) is not built")
        return _decode_protobuf_c(data)
    return _decode_protobuf_python(data)


def _decode_protobuf_c(data: bytes | memoryview) -> DecodedPush:
    try:
        labels, counts, ts, line_off, line_data, md_off, key_off, key_data, val_off, val_data = _pushdecode.decode(data)
    except ValueError as exc:
        raise PushDecodeError(f"invalid protobuf PushRequest: {exc}") from None
    n = (len(line_off) // 8) - 1
    line = pa.LargeStringArray.from_buffers(n, pa.py_buffer(line_off), pa.py_buffer(line_data))
    n_pairs = len(key_off) // 4 - 1
    metadata = None
    if n_pairs:
        keys = pa.StringArray.from_buffers(n_pairs, pa.py_buffer(key_off), pa.py_buffer(key_data))
        values = pa.StringArray.from_buffers(n_pairs, pa.py_buffer(val_off), pa.py_buffer(val_data))
        metadata = _map_array(np.frombuffer(md_off, np.int32), keys, values)
    return DecodedPush(labels, np.frombuffer(counts, np.int64), np.frombuffer(ts, np.int64), line, metadata)


def _map_array(offsets: np.ndarray, keys: pa.Array, values: pa.Array) -> pa.Array:
    """Build a METADATA_TYPE array from per-entry pair offsets; entries without pairs are null."""
    empty = offsets[1:] == offsets[:-1]
    mask = pa.array(empty) if empty.any() else None
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, values, type=METADATA_TYPE, mask=mask)


def _decode_protobuf_python(data: bytes | memoryview) -> DecodedPush:
    from google.protobuf.message import DecodeError

    from loglake.ingest.pushproto import parse_push_request

    try:
        request = parse_push_request(bytes(data))
    except DecodeError as exc:
        raise PushDecodeError(f"invalid protobuf PushRequest: {exc}") from None
    labels: list[str | list[tuple[str, str]]] = []
    counts: list[int] = []
    seconds: list[int] = []
    nanos: list[int] = []
    lines: list[bytes] = []
    md_offsets = [0]
    keys: list[bytes] = []
    values: list[bytes] = []
    for stream in request.streams:
        labels.append(stream.labels.decode("utf-8", "replace"))
        counts.append(len(stream.entries))
        for entry in stream.entries:
            seconds.append(entry.timestamp.seconds)
            nanos.append(entry.timestamp.nanos)
            lines.append(entry.line)
            for pair in entry.structuredMetadata:
                keys.append(pair.name)
                values.append(pair.value)
            md_offsets.append(len(keys))
    ts = _timestamps(np.array(seconds, np.int64), np.array(nanos, np.int64))
    line = _utf8_strings(lines, pa.large_string())
    metadata = None
    if keys:
        metadata = _map_array(
            np.array(md_offsets, np.int32), _utf8_strings(keys, pa.string()), _utf8_strings(values, pa.string())
        )
    return DecodedPush(labels, np.array(counts, np.int64), ts, line, metadata)


def _timestamps(seconds: np.ndarray, nanos: np.ndarray) -> np.ndarray:
    bad_nanos = (nanos < 0) | (nanos >= _NS)
    if bad_nanos.any():
        i = int(np.argmax(bad_nanos))
        raise PushDecodeError(
            f"invalid protobuf PushRequest: entry {i} has timestamp nanos {nanos[i]} outside 0..999999999"
        )
    bad_seconds = (seconds < _MIN_SECONDS) | (seconds > _MAX_SECONDS)
    ts = seconds * _NS + nanos
    # The extreme second on each side is representable only for some nanos: check those exactly.
    edge = (seconds == _MIN_SECONDS) | (seconds == _MAX_SECONDS)
    for i in np.nonzero(edge)[0]:
        if not -(2**63) <= int(seconds[i]) * _NS + int(nanos[i]) < 2**63:
            bad_seconds[i] = True
    if bad_seconds.any():
        i = int(np.argmax(bad_seconds))
        raise PushDecodeError(
            f"invalid protobuf PushRequest: entry {i} has timestamp seconds {seconds[i]}, which cannot be represented "
            "in nanoseconds (allowed years 1678 to 2262)"
        )
    return ts


def _utf8_strings(items: list[bytes], type_: pa.DataType) -> pa.Array:
    """Build a string array from bytes, replacing invalid UTF-8 (checked by Arrow, fixed only where needed)."""
    binary = pa.array(items, pa.large_binary() if type_ == pa.large_string() else pa.binary())
    try:
        return binary.cast(type_)
    except pa.ArrowInvalid:
        return pa.array([b.decode("utf-8", "replace") for b in items], type_)


# ---------------------------------------------------------------------------------------------------- JSON


def decode_json(body: bytes) -> DecodedPush:
    """Decode a JSON push: `{"streams": [{"stream": {...}, "values": [["<ns>", "<line>", {...}?], ...]}]}`."""
    if not body.strip():
        raise PushDecodeError('push body is empty: expected a JSON object with a "streams" array')
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            # Loki accepts invalid UTF-8 inside JSON strings; replace it and try again.
            doc = orjson.loads(bytes(body).decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            raise PushDecodeError(f"invalid JSON push body: {exc}") from None
    if not isinstance(doc, dict):
        raise PushDecodeError(f'invalid JSON push body: expected an object with a "streams" array, got {_kind(doc)}')
    streams = doc.get("streams")
    if streams is None:
        streams = []
    if not isinstance(streams, list):
        raise PushDecodeError(f'invalid JSON push body: "streams" must be an array, got {_kind(streams)}')
    labels: list[str | list[tuple[str, str]]] = []
    counts: list[int] = []
    ts_text: list[str] = []
    lines: list[str] = []
    md_offsets = [0]
    keys: list[str] = []
    values: list[str] = []
    for si, stream in enumerate(streams):
        if not isinstance(stream, dict):
            raise PushDecodeError(f"invalid JSON push body: streams[{si}] must be an object, got {_kind(stream)}")
        if "stream" not in stream and "values" not in stream and ("labels" in stream or "entries" in stream):
            stream = _legacy_stream(stream, si)
        # A stream without "stream" has no labels (Loki then names its service unknown_service).
        if "labels_text" in stream:
            labels.append(stream["labels_text"])  # label-set text, parsed and checked by the validator
        else:
            labels.append(_json_labels(stream["stream"], si) if "stream" in stream else [])
        entries = stream.get("values")
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise PushDecodeError(
                f"invalid JSON push body: streams[{si}].values must be an array, got {_kind(entries)}"
            )
        n = 0
        for ei, entry in enumerate(entries):
            if entry is None:  # Loki skips null entries
                continue
            if not isinstance(entry, list) or not 2 <= len(entry) <= 3:
                raise PushDecodeError(
                    f"invalid JSON push body: streams[{si}].values[{ei}] must be an array "
                    f'["<unix epoch in nanoseconds>", "<log line>"] with an optional object of structured metadata'
                )
            ts, line = entry[0], entry[1]
            if not isinstance(ts, str):
                raise PushDecodeError(
                    f"invalid JSON push body: streams[{si}].values[{ei}][0] must be a string of nanoseconds since "
                    f"the epoch, got {_kind(ts)} {ts!r}"
                )
            if not isinstance(line, str):
                raise PushDecodeError(
                    f"invalid JSON push body: streams[{si}].values[{ei}][1] (the log line) must be a string, "
                    f"got {_kind(line)}"
                )
            ts_text.append(ts)
            lines.append(line)
            if len(entry) == 3:
                md = entry[2]
                if not isinstance(md, dict):
                    raise PushDecodeError(
                        f"invalid JSON push body: streams[{si}].values[{ei}][2] (structured metadata) must be an "
                        f"object of strings, got {_kind(md)}"
                    )
                for k, v in md.items():
                    if not isinstance(v, str):
                        raise PushDecodeError(
                            f"invalid JSON push body: structured metadata {k!r} in streams[{si}].values[{ei}] must "
                            f"be a string, got {_kind(v)}"
                        )
                    keys.append(k)
                    values.append(v)
            md_offsets.append(len(keys))
            n += 1
        counts.append(n)
    ts_array = _json_timestamps(ts_text)
    line_array = pa.array(lines, pa.large_string())
    metadata = None
    if keys:
        metadata = _map_array(
            np.array(md_offsets, np.int32), pa.array(keys, pa.string()), pa.array(values, pa.string())
        )
    return DecodedPush(labels, np.array(counts, np.int64), ts_array, line_array, metadata)


def _legacy_stream(stream: dict[str, Any], si: int) -> dict[str, Any]:
    """Translate Loki's old JSON stream (`labels` text, `entries` of RFC 3339 `ts` and `line`) to the v1 shape."""
    text = stream.get("labels", "{}")
    if not isinstance(text, str):
        raise PushDecodeError(f'invalid JSON push body: streams[{si}].labels must be label-set text like {{a="b"}}')
    entries = stream.get("entries") or []
    if not isinstance(entries, list):
        raise PushDecodeError(f"invalid JSON push body: streams[{si}].entries must be an array")
    values = []
    for ei, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("ts"), str):
            raise PushDecodeError(
                f"invalid JSON push body: streams[{si}].entries[{ei}] must be an object "
                '{"ts": "<RFC 3339 time>", "line": "<log line>"}'
            )
        ns = parse_rfc3339_ns(entry["ts"])
        if ns is None:
            raise PushDecodeError(
                f"invalid JSON push body: streams[{si}].entries[{ei}].ts is not RFC 3339: {entry['ts']!r}"
            )
        values.append([str(ns), entry.get("line", "")])
    return {"labels_text": text, "values": values}


def _json_labels(stream: Any, si: int) -> list[tuple[str, str]]:
    if not isinstance(stream, dict):
        raise PushDecodeError(
            f"invalid JSON push body: streams[{si}].stream must be an object of labels, got {_kind(stream)}"
        )
    pairs = []
    for k, v in stream.items():
        if isinstance(v, str):
            pairs.append((k, v))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            pairs.append((k, str(v)))  # Loki reads a number's text as the value
        else:
            raise PushDecodeError(
                f"invalid JSON push body: label {k!r} of streams[{si}] must have a string value, got {_kind(v)}"
            )
    return pairs


def _json_timestamps(texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros(0, np.int64)
    try:
        return pc.cast(pa.array(texts, pa.string()), pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for text in texts:
            if not re.fullmatch(r"-?[0-9]+", text) or not -(2**63) <= int(text) < 2**63:
                raise PushDecodeError(
                    f"invalid JSON push body: timestamp {text!r} is not an integer number of nanoseconds since the "
                    "epoch (a decimal string within the int64 range)"
                ) from None
        raise


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
