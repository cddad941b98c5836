"""LokiHandler: a logging handler that pushes records straight to a Loki-compatible server.

A log call formats the record and puts it on a bounded in-memory queue; a daemon thread batches the queue by
count, bytes and age and pushes it (protobuf + snappy, or gzipped JSON) with retries. A log call never waits
for the network and never raises: when the server is unreachable the queue drops its oldest records and counts
them. Labels are the configured ones plus a few chosen record fields; ids go to structured metadata.
"""

from __future__ import annotations

import atexit
import base64
import email.utils
import gzip
import http.client
import json
import logging
import os
import random
import re
import ssl
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from loglake.ingest.pushproto import encode_push
from loglake.logging.formatter import JSONFormatter

PUSH_PATH = "/loki/api/v1/push"
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Record fields that take a new value for (almost) every request or user: as labels they would make a stream
# per value, which Loki's index is not built for. They belong in structured metadata.
HIGH_CARDINALITY_FIELDS = frozenset(
    {
        "trace_id",
        "span_id",
        "request_id",
        "user_id",
        "session_id",
        "correlation_id",
        "message",
        "msg",
        "created",
        "msecs",
        "thread",
        "process",
        "lineno",
        "line",
        "taskName",
    }
)
# `*_id` fields that usually name a deployment rather than a request, so they are fine as labels.
LOW_CARDINALITY_IDS = frozenset({"tenant_id", "org_id", "cluster_id", "region_id", "zone_id", "service_id", "app_id"})
_ZERO_IDS = frozenset({"0" * 32, "0" * 16})  # the ids TraceContextFilter(missing="zero") sets outside a span
_REPORT_EVERY = 60.0  # seconds between two stderr reports of the same kind of problem
_LAST_TS_LIMIT = 10_000  # label sets remembered for timestamp ordering; more means labels were misconfigured


_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _snappy() -> object | None:
    try:
        import cramjam
    except ImportError:
        return None
    return cramjam.snappy


@dataclass(frozen=True)
class HandlerStats:
    """Counts of a LokiHandler's records since it was created."""

    sent: int
    batches: int
    retries: int
    queued: int
    dropped_queue_full: int
    dropped_failed: int
    dropped_rejected: int
    dropped_errors: int


def default_service_name() -> str:
    """Return $OTEL_SERVICE_NAME, else the program's name, else "python"."""
    name = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    if name:
        return name
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    base = os.path.basename(argv0.rstrip("/"))
    if base.endswith(".py"):
        base = base[:-3]
    if base == "__main__":  # `python -m package`: the package names the program
        base = os.path.basename(os.path.dirname(argv0))
    return base if base and not base.startswith("-") else "python"


def push_url(url: str) -> tuple[str, str, int | None, str]:
    """Return (scheme, host, port, path) of the push endpoint for a server's base URL or its full push URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid Loki URL {url!r}: expected http(s)://host[:port][/path]")
    path = parts.path.rstrip("/")
    if not path.endswith(PUSH_PATH):
        path += PUSH_PATH
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, parts.port, path


def _check_label_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not LABEL_NAME_RE.match(name):
        raise ValueError(f"invalid label name {name!r} in {where}: a label name must match [a-zA-Z_][a-zA-Z0-9_]*")
    if name.startswith("__"):
        raise ValueError(f"invalid label name {name!r} in {where}: names starting with '__' are reserved")


def _clean(text: str) -> str:
    """Return text that encodes as UTF-8 (lone surrogates, e.g. from undecodable file names, become U+FFFD)."""
    try:  # surrogateescape'd bytes (os.fsdecode) get their original bytes back, invalid ones then become U+FFFD
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


_Entry = tuple[tuple[tuple[str, str], ...], int, str, tuple[tuple[str, str], ...] | None, int, float]
# (label-set key, ts ns, line, metadata pairs or None, size in bytes (about), enqueue time (monotonic))


class _Rejected(Exception):
    """The server refused a batch for good (4xx other than 429)."""


_handlers: weakref.WeakSet[LokiHandler] = weakref.WeakSet()


class LokiHandler(logging.Handler):
    """Pushes log records to a Loki-compatible server from a background thread; a log call never blocks."""

    def __init__(
        self,
        url: str,
        *,
        labels: Mapping[str, str] | None = None,
        tenant: str | None = None,
        label_fields: Sequence[str] = ("level",),
        metadata_fields: Sequence[str] = ("trace_id", "span_id", "request_id", "user_id"),
        batch_size: int = 1000,
        batch_bytes: int = 1 << 20,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        timeout: float = 5.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retries: int = 10,
        close_timeout: float = 2.0,
        encoding: Literal["auto", "protobuf", "json"] = "auto",
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.scheme, self.host, self.port, self.path = push_url(url)
        self.url = url
        self.labels = dict(labels) if labels is not None else {"service_name": default_service_name()}
        for name, value in self.labels.items():
            _check_label_name(name, "labels")
            if not isinstance(value, str) or not value:
                raise ValueError(f"label {name!r} has value {value!r}: a label value must be a non-empty string")
        if isinstance(label_fields, str) or isinstance(metadata_fields, str):
            raise ValueError("label_fields and metadata_fields are sequences of field names, not one string")
        self.label_fields = tuple(label_fields)
        for name in self.label_fields:
            _check_label_name(name, "label_fields")
        self.metadata_fields = tuple(metadata_fields)
        for name in self.label_fields:
            if name in HIGH_CARDINALITY_FIELDS or (name.endswith("_id") and name not in LOW_CARDINALITY_IDS):
                warnings.warn(
                    f"LokiHandler: label field {name!r} takes a new value for almost every record and would create "
                    f"a stream per value; put it in metadata_fields (structured metadata) instead",
                    UserWarning,
                    stacklevel=2,
                )
        if not self.labels and not self.label_fields:
            raise ValueError("LokiHandler needs at least one label: give labels or label_fields")
        if batch_size < 1 or batch_bytes < 1 or max_queue < 1 or flush_interval <= 0 or timeout <= 0:
            raise ValueError("batch_size, batch_bytes, max_queue, flush_interval and timeout must be positive")
        if min_backoff < 0 or max_backoff < min_backoff or max_retries < 0:
            raise ValueError("need 0 <= min_backoff <= max_backoff and max_retries >= 0")
        if encoding not in ("auto", "protobuf", "json"):
            raise ValueError(f"encoding must be 'auto', 'protobuf' or 'json', not {encoding!r}")
        self._snappy = _snappy() if encoding != "json" else None
        if encoding == "protobuf" and self._snappy is None:
            raise ValueError("encoding='protobuf' needs the cramjam package (snappy); install it or use 'json'")
        self.encoding: Literal["protobuf", "json"] = "protobuf" if self._snappy is not None else "json"
        self.tenant = tenant
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_retries = max_retries
        self.close_timeout = close_timeout
        self._headers = {"User-Agent": "loglake-logging", **(headers or {})}
        if tenant:
            self._headers["X-Scope-OrgID"] = tenant
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        if self.encoding == "protobuf":
            self._headers["Content-Type"] = "application/x-protobuf"
        else:
            self._headers["Content-Type"] = "application/json"
            self._headers["Content-Encoding"] = "gzip"
        self.setFormatter(JSONFormatter())
        self._keys: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
        self._reported: dict[str, float] = {}
        try:  # the first connection would import the idna codec in the push thread, holding the GIL for ms
            self.host.encode("idna")
        except UnicodeError:
            pass
        self._init_state()
        _handlers.add(self)
        self._start_worker()

    def _init_state(self) -> None:
        """Create the queue, counters, locks and events (again in a forked child)."""
        self._queue: deque[_Entry] = deque()
        self._qlock = threading.Lock()
        self._qbytes = 0
        self._last_ts: dict[tuple[tuple[str, str], ...], int] = {}
        self._enqueued = 0  # records ever queued; records are resolved (sent or dropped) in that order
        self._resolved = 0
        self._in_flight = 0
        self._progress = threading.Condition(self._qlock)  # flush() waits on it for records to be resolved
        self._wake = threading.Event()  # a full batch, a flush or close: the worker stops waiting
        self._flush_gen = 0  # counts flush requests: a backoff sleep ends when it changes
        self._flush_target = 0
        self._flush_deadline = 0.0
        self._flush_hopeless = False  # the worker cannot send before the flush deadline (server down)
        self._stopping = False
        self._closed = False
        self._worker: threading.Thread | None = None
        self._worker_ident = -1
        self._pid = os.getpid()
        self._conn: http.client.HTTPConnection | None = None
        self.sent = self.batches = self.retries = 0
        self.dropped_queue_full = self.dropped_failed = self.dropped_rejected = self.dropped_errors = 0

    def _start_worker(self) -> None:
        thread = threading.Thread(target=self._run, name=f"loglake-handler-{self.host}", daemon=True)
        self._worker = thread
        thread.start()

    # ---- the application's side: never blocks on I/O, never raises ---------------------------------------------

    @property
    def stats(self) -> HandlerStats:
        """Return the counts of records sent, waiting and dropped (by reason), batches and retries."""
        return HandlerStats(
            sent=self.sent,
            batches=self.batches,
            retries=self.retries,
            queued=len(self._queue) + self._in_flight,
            dropped_queue_full=self.dropped_queue_full,
            dropped_failed=self.dropped_failed,
            dropped_rejected=self.dropped_rejected,
            dropped_errors=self.dropped_errors,
        )

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the formatted record for the next push; when the queue is full, drop the oldest record."""
        if threading.get_ident() == self._worker_ident or self._closed:
            return  # records logged while we push (e.g. by a library we call) would feed back into the queue
        try:
            if self._worker is None:  # first record in a forked child
                self._start_worker()
            line = self.format(record)
            key = self._label_key(record)
            meta = None
            for name in self.metadata_fields:
                value = getattr(record, name, None)
                if value is not None and value != "":
                    text = value if isinstance(value, str) else str(value)
                    if text not in _ZERO_IDS:
                        meta = (*meta, (name, text)) if meta else ((name, text),)
            size = len(line) + (sum(len(k) + len(v) for k, v in meta) if meta else 0) + 16
            ts = int(record.created * 1e9)
            wake = False
            with self._qlock:
                # Timestamps strictly increase per stream: keeps the order of the calls, and two equal lines logged
                # in the same clock tick would otherwise be taken by the server for a duplicate and dropped.
                last = self._last_ts.get(key)
                if last is not None and ts <= last:
                    ts = last + 1
                elif last is None and len(self._last_ts) >= _LAST_TS_LIMIT:
                    self._last_ts.clear()
                self._last_ts[key] = ts
                queue = self._queue
                if len(queue) >= self.max_queue:
                    self._qbytes -= queue.popleft()[4]
                    self.dropped_queue_full += 1
                    self._resolved += 1
                    if self._flush_target >= self._resolved:  # a flush may be waiting for this record
                        self._progress.notify_all()
                queue.append((key, ts, line, meta, size, time.monotonic()))
                self._enqueued += 1
                qbytes = self._qbytes = self._qbytes + size
                n = len(queue)
                wake = n == self.batch_size or (qbytes >= self.batch_bytes and qbytes - size < self.batch_bytes)
            if wake:
                self._wake.set()
        except RecursionError:  # as logging.Handler.emit: handling it would recurse again
            raise
        except Exception as exc:
            self.dropped_errors += 1
            self._report("emit", f"could not queue a record of logger {record.name!r}: {exc!r}")

    def _label_key(self, record: logging.LogRecord) -> tuple[tuple[str, str], ...]:
        values = tuple(
            record.levelname.lower() if name == "level" else _text(getattr(record, name, None))
            for name in self.label_fields
        )
        key = self._keys.get(values)
        if key is None:
            labels = dict(self.labels)
            for name, value in zip(self.label_fields, values, strict=True):
                if value:
                    labels[name] = value
            key = tuple(sorted(labels.items()))
            if len(self._keys) >= _LAST_TS_LIMIT:
                self._keys.clear()
            self._keys[values] = key
        return key

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Push every record queued so far; return True once they are sent or dropped, False after `timeout`.

        Returns early (False) when the server cannot be reached before the deadline.
        """
        if self._worker is None or self._closed or threading.get_ident() == self._worker_ident:
            return self._resolved >= self._enqueued
        deadline = time.monotonic() + (timeout if timeout is not None else 5.0)
        with self._progress:
            target = self._enqueued
            if self._resolved >= target:
                return True
            self._flush_target = max(self._flush_target, target)
            self._flush_deadline = max(self._flush_deadline, deadline)
            self._flush_hopeless = False
            self._flush_gen += 1
        self._wake.set()
        with self._progress:
            while self._resolved < target and not self._flush_hopeless:
                left = deadline - time.monotonic()
                if left <= 0 or not (self._worker and self._worker.is_alive()):
                    break
                self._progress.wait(left)
            return self._resolved >= target

    def close(self, timeout: float | None = None) -> None:
        """Push what is queued (waiting at most `timeout`, default close_timeout), stop the thread, close."""
        if not self._closed:
            try:
                self.flush(self.close_timeout if timeout is None else timeout)
            finally:
                self._closed = True
                with self._qlock:
                    self._stopping = True
                    self._flush_gen += 1
                self._wake.set()
                worker = self._worker
                if worker is not None and worker.ident != threading.get_ident():
                    worker.join(0.5)  # a push in progress is abandoned with the daemon thread
                _handlers.discard(self)
        super().close()

    # ---- the worker thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        self._worker_ident = threading.get_ident()
        failures = 0  # consecutive failed attempts: sets the backoff
        while not self._stopping:
            try:
                if not self._wait_for_batch():
                    continue
                if not self._connect():
                    failures += 1
                    self._backoff(failures, None)
                    continue
                batch = self._take_batch()
                if batch:
                    failures = self._push(batch)
            except Exception as exc:  # the worker must survive anything a batch does to it
                self._report("worker", f"unexpected error in the push thread: {exc!r}")
                self._close_conn()
                if not self._stopping:
                    self._wake.wait(self.min_backoff)
        self._close_conn()

    def _wait_for_batch(self) -> bool:
        """Wait until a batch is due (full, old enough, flushed); False when woken for nothing."""
        with self._qlock:
            n = len(self._queue)
            oldest = self._queue[0][5] if n else 0.0
            due = n >= self.batch_size or self._qbytes >= self.batch_bytes or self._flush_target > self._resolved
            wait = self.flush_interval if not n else oldest + self.flush_interval - time.monotonic()
        if n and (due or wait <= 0):
            return True
        self._wake.wait(max(wait, 0.001))
        self._wake.clear()
        return False

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        nbytes = 0
        with self._qlock:
            queue = self._queue
            while queue and len(batch) < self.batch_size:
                size = queue[0][4]
                if batch and nbytes + size > self.batch_bytes:
                    break
                batch.append(queue.popleft())
                nbytes += size
            self._qbytes -= nbytes
            self._in_flight = len(batch)
        return batch

    def _push(self, batch: list[_Entry]) -> int:
        """Push one batch, retrying; return the number of consecutive failures it ended with (0: done)."""
        try:
            try:
                body = self._encode(batch)
            except UnicodeEncodeError:
                body = self._encode([(k, ts, _clean(line), m, s, t) for k, ts, line, m, s, t in batch], clean=True)
        except Exception as exc:  # counted and resolved, so that no flush waits for these records
            self.dropped_errors += len(batch)
            self._report("encode", f"could not encode {len(batch)} records, dropped: {exc!r}")
            self._resolve(len(batch))
            return 0
        attempt = 0
        while True:
            try:
                status, text, retry_after = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                status, text, retry_after = -1, f"{type(exc).__name__}: {exc}", None
            if 200 <= status < 300:
                self.sent += len(batch)
                self.batches += 1
                self._resolve(len(batch))
                return 0
            if status != -1 and status != 429 and status < 500:
                self.dropped_rejected += len(batch)
                self._report(f"http-{status}", f"{self._where()} refused {len(batch)} records ({status}): {text}")
                self._resolve(len(batch))
                return 0
            attempt += 1
            if status != -1:
                text = f"HTTP {status}: {text}" if text else f"HTTP {status}"
            if attempt <= self.max_retries and not self._stopping:
                self._report("retry", f"push to {self._where()} failed ({text}); retrying")
                self._backoff(attempt, retry_after)
            if attempt > self.max_retries or self._stopping:
                self.dropped_failed += len(batch)
                self._report("failed", f"dropped {len(batch)} records after {attempt} failed pushes: {text}")
                self._resolve(len(batch))
                return attempt

    def _backoff(self, attempt: int, retry_after: float | None) -> None:
        """Sleep before the next attempt; a flush or close ends the sleep at once."""
        self.retries += 1
        delay = min(self.max_backoff, self.min_backoff * 2 ** min(attempt - 1, 30))
        delay = random.uniform(delay / 2, delay)  # jitter: many processes restarted together do not retry in step
        if retry_after is not None:
            delay = min(max(delay, retry_after), self.max_backoff)
        end = time.monotonic() + delay
        with self._progress:
            gen = self._flush_gen
            if self._flush_target > self._resolved and end > self._flush_deadline:
                self._flush_hopeless = True  # a flush waiting for us would wait in vain: let it return now
                self._progress.notify_all()
        # A full queue does not end the sleep (the server is what we wait for); a flush or close does.
        while not self._stopping and self._flush_gen == gen:
            left = end - time.monotonic()
            if left <= 0:
                break
            self._wake.wait(left)
            self._wake.clear()

    def _resolve(self, n: int) -> None:
        with self._progress:
            self._in_flight = 0
            self._resolved += n
            self._progress.notify_all()

    def _encode(self, batch: list[_Entry], clean: bool = False) -> bytes:
        # Encoded in one go, holding the GIL for a few ms per 1000 records: yielding it in slices was measured to
        # starve this thread under a busy application (records dropped) for no gain in a paced one.
        streams: dict[tuple[tuple[str, str], ...], list[tuple[int, str, tuple[tuple[str, str], ...] | None]]] = {}
        for key, ts, line, meta, _size, _t in batch:
            streams.setdefault(key, []).append((ts, line, meta))
        if clean:
            streams = {
                tuple((k, _clean(v)) for k, v in key): [
                    (ts, line, tuple((k, _clean(v)) for k, v in meta) if meta else None) for ts, line, meta in entries
                ]
                for key, entries in streams.items()
            }
        if self._snappy is not None:
            return bytes(self._snappy.compress_raw(encode_push(streams.items())))  # type: ignore[attr-defined]
        doc = {
            "streams": [
                {
                    "stream": dict(key),
                    "values": [[str(ts), line, dict(meta)] if meta else [str(ts), line] for ts, line, meta in entries],
                }
                for key, entries in streams.items()
            ]
        }
        return gzip.compress(_json_encode(doc).encode("utf-8"), compresslevel=5)

    def _connect(self) -> bool:
        """Open the connection unless one is open; False (and reported) when the server cannot be reached."""
        if self._conn is not None and self._conn.sock is not None:
            return True
        try:
            self._new_conn().connect()
            return True
        except OSError as exc:
            self._close_conn()
            self._report("connect", f"cannot reach {self._where()}: {exc}; records wait in the queue")
            return False

    def _new_conn(self) -> http.client.HTTPConnection:
        self._close_conn()
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn = conn
        return conn

    def _close_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _post(self, body: bytes) -> tuple[int, str, float | None]:
        """POST the body; return (status, the server's message, Retry-After seconds or None)."""
        conn = self._conn
        reused = conn is not None and conn.sock is not None
        if conn is None:
            conn = self._new_conn()
        try:
            conn.request("POST", self.path, body=body, headers=self._headers)
            resp = conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
            if not reused:
                self._close_conn()
                raise
            # A keep-alive connection the server closed while idle: one fresh connection, at once.
            conn = self._new_conn()
            try:
                conn.request("POST", self.path, body=body, headers=self._headers)
                resp = conn.getresponse()
            except Exception:
                self._close_conn()
                raise
        except Exception:
            self._close_conn()
            raise
        data = resp.read()
        if resp.will_close:
            self._close_conn()
        text = data[:500].decode("utf-8", "replace").strip()
        return resp.status, text, _retry_after(resp.getheader("Retry-After"))

    # ---- problems are reported, never raised ------------------------------------------------------------------

    def _where(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{self.host}{port}{self.path}"

    def _report(self, kind: str, message: str) -> None:
        """Write one line to stderr, at most once a minute per kind of problem."""
        now = time.monotonic()
        last = self._reported.get(kind)
        if last is not None and now - last < _REPORT_EVERY:
            return
        self._reported[kind] = now
        try:
            stream = sys.stderr
            if stream is not None:
                stream.write(f"loglake.logging.LokiHandler: {message}\n")
                stream.flush()
        except Exception:
            pass

    def _after_fork_in_child(self) -> None:
        """Forget the parent's queue, thread and connection; a thread starts with the child's first record."""
        self._conn = None  # the socket is the parent's: closing it here would not hurt, sending on it would
        self._reported = {}
        self._init_state()

    def __repr__(self) -> str:
        return f"<LokiHandler {self._where()} ({logging.getLevelName(self.level)})>"


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _close_all_at_exit() -> None:
    """Push what every live handler holds, all within one close_timeout, before logging.shutdown runs."""
    handlers = [h for h in list(_handlers) if not h._closed]
    if not handlers:
        return
    deadline = time.monotonic() + max(h.close_timeout for h in handlers)
    for h in handlers:
        with h._progress:  # ask every handler to flush first, so that they push in parallel
            h._flush_target = h._enqueued
            h._flush_deadline = deadline
            h._flush_gen += 1
        h._wake.set()
    for h in handlers:
        h.close(timeout=max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    for h in list(_handlers):
        h._after_fork_in_child()


# atexit runs handlers last-registered first: this runs before logging's own shutdown (registered on import).
atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
