"""Promtail's `loki_push_api` source: an HTTP server that accepts Loki pushes and hands their entries on.

`POST /loki/api/v1/push` takes what Loki takes: snappy-compressed protobuf (the default) or JSON
(`Content-Type: application/json`), optionally gzip or deflate encoded. `POST /promtail/api/v1/raw` takes plain
lines. `GET /ready` answers 200. The standard library's threading HTTP server keeps the agent light.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import cramjam
import orjson

from loglake.agent.entry import Entry
from loglake.ingest import compression
from loglake.ingest.pushproto import parse_push_request
from loglake.quoting import unquote_at

log = logging.getLogger(__name__)

PUSH_PATH = "/loki/api/v1/push"
RAW_PATH = "/promtail/api/v1/raw"
READY_PATH = "/ready"
DEFAULT_MAX_SEND_MSG_SIZE = 100 << 20  # Promtail's default, the same as Loki's distributor
JSON_MEDIA_TYPE = "application/json"

Stream = tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]
"""One pushed stream: its labels and its entries as (timestamp in ns, line, structured metadata)."""


@dataclass
class PushApiSettings:
    """A `loki_push_api` scrape config (Promtail's `server.http_listen_address`/`_port`, labels, timestamps)."""

    listen_address: str = "0.0.0.0"
    listen_port: int = 3500
    labels: dict[str, str] = field(default_factory=dict)
    use_incoming_timestamp: bool = False
    max_send_msg_size: int = DEFAULT_MAX_SEND_MSG_SIZE  # largest body accepted, compressed or not


class PushRequestError(ValueError):
    """A push that cannot be accepted; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------- label sets

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SPACE = re.compile(r"\s*")


def parse_label_set(text: str) -> dict[str, str]:
    """Parse Prometheus label-set text such as `{job="api", env="prod"}`; raise ValueError when it is invalid.

    Accepts what PromQL accepts for a series: an optional metric name (kept as `__name__`), quoted label names,
    double-quoted, single-quoted and backquoted values with Go escapes, and a trailing comma. Labels with an
    empty value are dropped, as Prometheus treats them as absent.
    """
    labels: dict[str, str] = {}
    pos = _SPACE.match(text).end()  # type: ignore[union-attr]
    m = _METRIC_NAME.match(text, pos)
    if m:
        labels["__name__"] = m.group()
        pos = _SPACE.match(text, m.end()).end()  # type: ignore[union-attr]
        if pos == len(text):
            return labels
    if text[pos : pos + 1] != "{":
        raise _label_error(text, pos, "expected '{' to open the label set, as in {job=\"api\"}")
    pos += 1
    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] == "}":
            pos += 1
            break
        if text[pos : pos + 1] in ('"', "'", "`"):
            name, pos = _string(text, pos)
        else:
            m = _LABEL_NAME.match(text, pos)
            if not m:
                raise _label_error(text, pos, "expected a label name (letters, digits and '_', not first a digit)")
            name, pos = m.group(), m.end()
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] != "=" or text[pos + 1 : pos + 2] == "~":
            raise _label_error(text, pos, f"expected '=' after label {name!r} (a series allows no other matcher)")
        pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
        value, pos = _string(text, pos)
        if name in labels:
            raise _label_error(text, pos, f"duplicate label name {name!r}")
        labels[name] = value
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        sep = text[pos : pos + 1]
        pos += 1
        if sep == "}":
            break
        if sep != ",":
            raise _label_error(text, pos - 1, "expected ',' or '}' after a label value")
    if _SPACE.match(text, pos).end() != len(text):  # type: ignore[union-attr]
        raise _label_error(text, pos, "unexpected text after '}'")
    return {k: v for k, v in labels.items() if v}


def _string(text: str, pos: int) -> tuple[str, int]:
    quote = text[pos : pos + 1]
    if quote == "'":
        # Rewrite the single-quoted literal as a double-quoted one and let the Go unquoter read it.
        out = ['"']
        i = pos + 1
        while i < len(text) and text[i] != "'":
            if text[i] == "\\" and i + 1 < len(text):
                out.append(text[i : i + 2])
                i += 2
                continue
            out.append('\\"' if text[i] == '"' else text[i])
            i += 1
        if i >= len(text):
            raise _label_error(text, pos, "string literal not terminated")
        value, _ = _unquote(text, "".join(out) + '"', 0, pos)
        return value, i + 1
    if quote not in ('"', "`"):
        raise _label_error(text, pos, "expected a quoted label value")
    return _unquote(text, text, pos, pos)


def _unquote(original: str, text: str, start: int, pos: int) -> tuple[str, int]:
    """Read the Go string literal at `text[start]`; errors name position `pos` of `original`."""
    try:
        return unquote_at(text, start)
    except ValueError as exc:
        raise _label_error(original, pos, str(exc)) from None


def _label_error(text: str, pos: int, problem: str) -> ValueError:
    return ValueError(f"invalid stream labels {text!r} at position {pos}: {problem}")


# ---------------------------------------------------------------------------------------------------- bodies


def decode_push_body(
    body: bytes, content_type: str | None, content_encoding: str | None, max_size: int
) -> list[Stream]:
    """Decode a Loki push body into streams, as Loki reads it; raise PushRequestError saying what is wrong.

    `Content-Type: application/json` means JSON; any other media type means snappy-compressed protobuf.
    `Content-Encoding` may be gzip, deflate, snappy (ignored, as Loki does) or absent. `max_size` bounds the
    decompressed size.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding == "gzip":
        body = _inflate(body, 31, max_size, "gzip")
    elif encoding == "deflate":
        body = _inflate_deflate(body, max_size)
    elif encoding not in ("", "snappy", "identity"):
        raise PushRequestError(f"Content-Encoding {content_encoding!r} not supported: use gzip, deflate or none")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not media_type:
        raise PushRequestError(
            "Content-Type header is missing: send application/x-protobuf (snappy-compressed) or application/json"
        )
    if media_type == JSON_MEDIA_TYPE:
        return _decode_json(body)
    return _decode_protobuf(_snappy(body, max_size))


def _inflate(body: bytes, wbits: int, limit: int, what: str) -> bytes:
    try:
        return compression.inflate(body, wbits, limit, what) if wbits else compression.inflate_deflate(body, limit)
    except compression.DecompressTooLarge as exc:
        raise PushRequestError(str(exc), 413) from None
    except compression.DecompressError as exc:
        raise PushRequestError(str(exc)) from None


def _inflate_deflate(body: bytes, limit: int) -> bytes:
    return _inflate(body, 0, limit, "deflate")


def _snappy(body: bytes, limit: int) -> bytes:
    if not body:
        raise PushRequestError("push body is empty: expected a snappy-compressed protobuf PushRequest")
    size = 0
    for i in range(min(5, len(body))):  # the block starts with its decompressed length as a varint
        size |= (body[i] & 0x7F) << (7 * i)
        if not body[i] & 0x80:
            break
    if size > limit:
        raise PushRequestError(f"the snappy body decompresses to {size} bytes, more than the limit of {limit}", 413)
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise PushRequestError(f"invalid snappy body (expected snappy block format): {exc}") from None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _decode_protobuf(data: bytes) -> list[Stream]:
    try:
        request = parse_push_request(data)
    except Exception as exc:  # protobuf's DecodeError
        raise PushRequestError(f"invalid protobuf PushRequest: {exc}") from None
    streams: list[Stream] = []
    for stream in request.streams:
        labels = _stream_labels(_text(stream.labels))
        entries = []
        for e in stream.entries:
            metadata = {_text(p.name): _text(p.value) for p in e.structuredMetadata}
            entries.append((e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos, _text(e.line), metadata))
        streams.append((labels, entries))
    return streams


def _stream_labels(text: str) -> dict[str, str]:
    try:
        return parse_label_set(text)
    except ValueError as exc:
        raise PushRequestError(f"couldn't parse labels: {exc}") from None


def _decode_json(body: bytes) -> list[Stream]:
    if not body.strip():
        raise PushRequestError('push body is empty: expected a JSON object with a "streams" array')
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:  # Loki accepts invalid UTF-8 inside JSON strings: replace it and try again
            doc = orjson.loads(body.decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            raise PushRequestError(f"invalid JSON push body: {exc}") from None
    if not isinstance(doc, dict):
        raise PushRequestError('invalid JSON push body: expected an object with a "streams" array')
    raw_streams = doc.get("streams") or []
    if not isinstance(raw_streams, list):
        raise PushRequestError('invalid JSON push body: "streams" must be an array')
    streams: list[Stream] = []
    for si, raw in enumerate(raw_streams):
        if not isinstance(raw, dict):
            raise PushRequestError(f"invalid JSON push body: streams[{si}] must be an object")
        labels = _json_labels(raw.get("stream") or {}, si)
        values = raw.get("values") or []
        if not isinstance(values, list):
            raise PushRequestError(f"invalid JSON push body: streams[{si}].values must be an array")
        streams.append((labels, [_json_entry(v, si, ei) for ei, v in enumerate(values) if v is not None]))
    return streams


def _json_labels(stream: Any, si: int) -> dict[str, str]:
    if not isinstance(stream, dict):
        raise PushRequestError(f"invalid JSON push body: streams[{si}].stream must be an object of labels")
    labels = {}
    for name, value in stream.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PushRequestError(f"invalid JSON push body: label {name!r} of streams[{si}] must be a string")
        if not name:
            raise PushRequestError(f"couldn't parse labels: empty label name in streams[{si}]")
        if value != "":
            labels[name] = str(value)  # Loki reads a number's text as the value
    return labels


def _json_entry(value: Any, si: int, ei: int) -> tuple[int, str, dict[str, str]]:
    where = f"streams[{si}].values[{ei}]"
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        raise PushRequestError(
            f'invalid JSON push body: {where} must be ["<unix epoch in nanoseconds>", "<log line>"] with an '
            "optional object of structured metadata"
        )
    ts, line = value[0], value[1]
    if not isinstance(ts, str) or not re.fullmatch(r"-?[0-9]{1,19}", ts) or not -(2**63) <= int(ts) < 2**63:
        raise PushRequestError(
            f"invalid JSON push body: {where}[0] must be a string of nanoseconds since the epoch, got {ts!r}"
        )
    if not isinstance(line, str):
        raise PushRequestError(f"invalid JSON push body: {where}[1] (the log line) must be a string")
    metadata: dict[str, str] = {}
    if len(value) == 3:
        md = value[2]
        if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
            raise PushRequestError(
                f"invalid JSON push body: {where}[2] (structured metadata) must be an object of strings"
            )
        metadata = md
    return int(ts), line, metadata


# ---------------------------------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], target: PushApiTarget) -> None:
        self.target = target
        self.connections: set[socket.socket] = set()
        self.threads: set[threading.Thread] = set()
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind; an IPv6 wildcard address also listens on IPv4, as Go does."""
        if self.address_family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Promtail and Alloy reuse their connections
    timeout = 120.0  # seconds a connection may sit idle between requests
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)
            self.server.threads.add(threading.current_thread())

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
            self.server.threads.discard(threading.current_thread())
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("push api %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        """Answer readiness checks."""
        path = urlsplit(self.path).path
        if path == READY_PATH:
            self._reply(200, "ready")
        elif path in (PUSH_PATH, RAW_PATH):
            self._reply(405, f"method GET not allowed on {path}: use POST\n")
        else:
            self._reply(404, "404 page not found\n")

    def do_POST(self) -> None:
        """Accept a Loki push or plain lines."""
        path = urlsplit(self.path).path
        if path == READY_PATH:
            self._reply(405, f"method POST not allowed on {path}: use GET\n")
            return
        if path not in (PUSH_PATH, RAW_PATH):
            self._reply(404, "404 page not found\n")
            return
        target = self.server.target
        try:
            body = self._read_body(target.settings.max_send_msg_size)
            if path == PUSH_PATH:
                streams = decode_push_body(
                    body,
                    self.headers.get("Content-Type"),
                    self.headers.get("Content-Encoding"),
                    target.settings.max_send_msg_size,
                )
                entries = target.entries_from_streams(streams)
            else:
                entries = target.entries_from_lines(body)
        except PushRequestError as exc:
            log.warning("push api: failed to parse incoming push request: %s", exc)
            self._reply(exc.status, f"{exc}\n")
            return
        if entries:
            try:
                target.handler(entries)
            except Exception as exc:
                log.exception("push api: the entry handler failed")
                self._reply(500, f"failed to process the pushed entries: {exc}\n")
                return
        self._reply(204)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        if not length_text.strip().isdigit():
            self.close_connection = True
            raise PushRequestError(f"invalid Content-Length {length_text!r}")
        length = int(length_text)
        if length > limit:
            self.close_connection = True  # the body stays unread
            raise PushRequestError(f"message size {length} exceeds limit {limit}", 413)
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise PushRequestError(f"the request body ended after {len(body)} of {length} bytes")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                self.close_connection = True
                raise PushRequestError(f"invalid chunk size {size_line!r} in a chunked body") from None
            if size == 0:
                while self.rfile.readline(8192).strip():  # trailer fields, up to the blank line
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                self.close_connection = True
                raise PushRequestError(f"message size exceeds limit {limit}", 413)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after the chunk

    def _reply(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class PushApiTarget:
    """Serves the Loki push API and hands every pushed entry to `handler`, labelled with the configured labels.

    `handler` is called from the server's request threads, so it must be thread-safe; the push is answered only
    after it returns, which pushes back on the client.
    """

    def __init__(self, settings: PushApiSettings, handler: Callable[[list[Entry]], None]) -> None:
        if not 0 <= settings.listen_port <= 65535:
            raise ValueError(f"invalid loki_push_api listen port {settings.listen_port}: expected 0 to 65535")
        self.settings = settings
        self.handler = handler
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clock_lock = threading.Lock()
        self._last_ns = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); call after start()."""
        if self._server is None:
            raise RuntimeError("the push API target is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the push API target is already started")
        host = self.settings.listen_address.strip("[]")
        if not host and socket.has_dualstack_ipv6():
            host = "::"  # Go's empty address listens on IPv4 and IPv6
        server_cls = _Server6 if ":" in host else _Server
        try:
            self._server = server_cls((host or "0.0.0.0", self.settings.listen_port), self)
        except OSError as exc:
            raise OSError(
                f"loki_push_api: cannot listen on {self.settings.listen_address}:{self.settings.listen_port}: {exc}"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="push-api", daemon=True
        )
        self._thread.start()
        log.info("push api listening on %s:%s", *self.address)

    def stop(self) -> None:
        """Stop serving: finish requests in flight, close idle connections, release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.lock:
            for conn in server.connections:
                with contextlib.suppress(OSError):  # an idle keep-alive connection then reads end-of-stream
                    conn.shutdown(socket.SHUT_RD)
            threads = list(server.threads)
        for thread in threads:
            thread.join(timeout=10.0)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    # ------------------------------------------------------------------------------------------------ entries

    def entries_from_streams(self, streams: list[Stream]) -> list[Entry]:
        """Turn decoded streams into entries: configured labels override pushed ones; timestamps kept or now."""
        entries = []
        keep_ts = self.settings.use_incoming_timestamp
        for labels, stream_entries in streams:
            merged = {k: v for k, v in {**labels, **self.settings.labels}.items() if v}  # empty means absent
            for ts, line, metadata in stream_entries:
                entries.append(
                    Entry(labels=dict(merged), line=line, ts_ns=ts if keep_ts else self._now(), metadata=metadata)
                )
        return entries

    def entries_from_lines(self, body: bytes) -> list[Entry]:
        """Turn a plain-text body into one entry per non-empty line, with the configured labels and now."""
        lines = (line.rstrip("\r") for line in body.decode("utf-8", "replace").split("\n"))
        return [Entry(labels=dict(self.settings.labels), line=line, ts_ns=self._now()) for line in lines if line]

    def _now(self) -> int:
        # Distinct, rising timestamps: the server drops an entry equal in stream, time and line to another.
        with self._clock_lock:
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            return self._last_ns
