"""Loki's push request protobuf (logproto.PushRequest): message classes built at run time, and an encoder.

The message classes describe grafana/loki `pkg/push/push.proto` field by field (no protoc). Text fields are
declared as `bytes`, which is the same on the wire, so that parsing never fails on invalid UTF-8: Loki (Go)
accepts such bytes and so do we, replacing them later. The encoder is stdlib-only; `protobuf` is imported
only when a message class is first used, so applications (`loglake.logging`) can encode without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from loglake.quoting import quote

Metadata = Mapping[str, str] | Sequence[tuple[str, str]] | None
Entry = tuple[int, str] | tuple[int, str, Metadata]
Labels = str | Mapping[str, str] | Sequence[tuple[str, str]]


_MESSAGES = ("PushRequest", "StreamAdapter", "EntryAdapter", "LabelPairAdapter")
_classes: dict[str, Any] = {}


def _build_classes() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

    _F = descriptor_pb2.FieldDescriptorProto  # noqa: N806
    fd = descriptor_pb2.FileDescriptorProto(name="loglake_push.proto", package="logproto", syntax="proto3")
    fd.dependency.append("google/protobuf/timestamp.proto")
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    schema = {
        "PushRequest": [
            ("streams", 1, _F.TYPE_MESSAGE, rep, ".logproto.StreamAdapter"),
            ("format", 2, _F.TYPE_BYTES, opt, ""),
        ],
        "StreamAdapter": [
            ("labels", 1, _F.TYPE_BYTES, opt, ""),
            ("entries", 2, _F.TYPE_MESSAGE, rep, ".logproto.EntryAdapter"),
            ("hash", 3, _F.TYPE_UINT64, opt, ""),
        ],
        "EntryAdapter": [
            ("timestamp", 1, _F.TYPE_MESSAGE, opt, ".google.protobuf.Timestamp"),
            ("line", 2, _F.TYPE_BYTES, opt, ""),
            ("structuredMetadata", 3, _F.TYPE_MESSAGE, rep, ".logproto.LabelPairAdapter"),
            ("parsed", 4, _F.TYPE_MESSAGE, rep, ".logproto.LabelPairAdapter"),
        ],
        "LabelPairAdapter": [("name", 1, _F.TYPE_BYTES, opt, ""), ("value", 2, _F.TYPE_BYTES, opt, "")],
    }
    for name, fields in schema.items():
        msg = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    ts_fd = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts_fd)
    pool.Add(ts_fd)
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return {n: get(pool.FindMessageTypeByName(f"logproto.{n}")) for n in schema}


def __getattr__(name: str) -> Any:
    """Build the protobuf message classes (PushRequest, ...) on first use."""
    if name not in _MESSAGES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _classes:
        _classes.update(_build_classes())
    return _classes[name]


def labels_text(labels: Labels) -> str:
    """Return Prometheus label-set text for labels given as text (kept as is), a mapping or pairs (sorted)."""
    if isinstance(labels, str):
        return labels
    items = sorted(labels.items()) if isinstance(labels, Mapping) else sorted(labels)
    return "{" + ", ".join(f"{k}={quote(v)}" for k, v in items) + "}"


def varint(value: int) -> bytes:
    """Return a protobuf varint; negative int64 values take ten bytes (two's complement)."""
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINTS = [varint(i) for i in range(1 << 14)]  # one or two bytes: every line length under 16 KiB


def _varint(value: int) -> bytes:
    if 0 <= value < 16384:
        return _VARINTS[value]
    if 0 <= value < 1 << 35:
        # Three to five bytes (nanoseconds of a second fit in five) without a loop.
        if value < 1 << 21:
            return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
        if value < 1 << 28:
            return bytes(
                ((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, ((value >> 14) & 0x7F) | 0x80, value >> 21)
            )
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                ((value >> 21) & 0x7F) | 0x80,
                value >> 28,
            )
        )
    return varint(value)


_SMALL_VARINTS = _VARINTS[:128]


def _len_field(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SMALL_VARINTS[n] if n < 128 else _varint(n)) + payload


def _pair(name: str, value: str) -> bytes:
    body = b""
    if name:
        body += _len_field(b"\x0a", name.encode())
    if value:
        body += _len_field(b"\x12", value.encode())
    return _len_field(b"\x1a", body)


def _entry(ts_ns: int, line: str, metadata: Metadata, seconds_cache: dict[int, bytes] | None = None) -> bytes:
    seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
    if seconds_cache is not None:
        ts = seconds_cache.get(seconds)
        if ts is None:
            ts = seconds_cache[seconds] = b"\x08" + _varint(seconds) if seconds else b""
    else:
        ts = b"\x08" + _varint(seconds) if seconds else b""
    if nanos:
        ts += b"\x10" + _varint(nanos)
    body = _len_field(b"\x0a", ts)
    if line:
        body += _len_field(b"\x12", line.encode())
    if metadata:
        pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
        body += b"".join(_pair(k, v) for k, v in pairs)
    return _len_field(b"\x12", body)


def encode_push(streams: Iterable[tuple[Labels, Iterable[Entry]]]) -> bytes:
    """Return a serialized, uncompressed PushRequest.

    `streams` yields (labels, entries): labels as Prometheus text, a mapping or pairs; each entry is
    (timestamp in ns, line) or (timestamp in ns, line, structured metadata as a mapping or pairs).
    The bytes equal what the protobuf runtime serializes for the same messages.
    """
    out = []
    seconds: dict[int, bytes] = {}  # entries of a push mostly share their second
    for labels, entries in streams:
        text = labels_text(labels)
        body = _len_field(b"\x0a", text.encode()) if text else b""
        parts = [body]
        append = parts.append
        varints = _VARINTS
        for e in entries:
            if len(e) > 2 and e[2]:  # type: ignore[misc]
                append(_entry(e[0], e[1], e[2], seconds))  # type: ignore[misc]
                continue
            # The common entry (no metadata), inlined: this runs once per line shipped.
            sec, nanos = divmod(e[0], 1_000_000_000)
            ts = seconds.get(sec)
            if ts is None:
                ts = seconds[sec] = b"\x08" + _varint(sec) if sec else b""
            if nanos:
                ts += b"\x10" + _varint(nanos)
            line = e[1].encode()
            n = len(line)
            inner = b"\x0a" + varints[len(ts)] + ts
            if n:
                inner += b"\x12" + (varints[n] if n < 16384 else _varint(n)) + line
            m = len(inner)
            append(b"\x12" + (varints[m] if m < 16384 else _varint(m)) + inner)
        out.append(_len_field(b"\x0a", b"".join(parts)))
    return b"".join(out)


def parse_push_request(data: bytes) -> Any:
    """Parse serialized PushRequest bytes into a protobuf message (text fields are bytes)."""
    request = __getattr__("PushRequest")()
    request.ParseFromString(data)
    return request
