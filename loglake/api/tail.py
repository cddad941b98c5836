"""Live tail: Loki's `/loki/api/v1/tail` websocket, fed with every durable batch through a per-tenant hub.

A session first sends the newest `limit` entries since `start` (oldest first), then every new entry its query keeps,
in timestamp order, each held `delay_for` seconds. Publishing never waits on a session: a session that cannot keep up
buffers a bounded number of entries and reports what it had to drop in `dropped_entries`, as Loki does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from loglake.api import params as qparams
from loglake.logql import plan as qp
from loglake.logql.errors import QueryError
from loglake.model import LabelSet, format_labels
from loglake.store.store import Piece

if TYPE_CHECKING:
    from loglake.api.app import LoglakeApp

log = logging.getLogger(__name__)

NS = 1_000_000_000
MAX_DELAY_FOR_S = 5  # Loki refuses a longer delay_for
MAX_ENTRIES_PER_MESSAGE = 100  # as Loki's querier batches a tail response
MAX_DROPPED_PER_MESSAGE = 1000  # dropped entries remembered until the next message; later ones are not reported
SESSION_BUFFER_ENTRIES = 10_000  # entries a session holds (received, not yet sent) before it drops new ones
PROCESS_CHUNK_ROWS = 8192  # live rows run through the pipeline at once
TAIL_MAX_DURATION_S = 3600.0  # Loki's querier.tail_max_duration default
CLOSE_INTERNAL_ERROR = 1011
MAX_CLOSE_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code
ONLY_LOG_SELECTOR = "only log selector is supported"
MAX_DURATION_REACHED = "reached tail max duration limit"
PATHS = ("/loki/api/v1/tail", "/api/prom/tail")


class TailError(Exception):
    """A reason to end a session that has been accepted; sent to the client in the close frame."""


@dataclass(frozen=True)
class TailParams:
    """A tail request's parameters, checked as Loki's ParseTailQuery checks them."""

    query: str
    parsed: qp.LogQuery | qp.MetricQuery
    limit: int
    start: int
    delay_for_s: int


def parse_tail_params(p: dict[str, str]) -> TailParams:
    """Parse `query`, `limit`, `start` (or `since`/`end`) and `delay_for` in Loki's order and with its messages."""
    query = p.get("query", "")
    parsed = qp.parse(query)
    limit = qparams.parse_limit(p.get("limit"))
    start, _ = qparams.time_range(p)
    delay = _parse_delay_for(p.get("delay_for"))
    return TailParams(query, parsed, limit, start, delay)


def _parse_delay_for(value: str | None) -> int:
    if not value:
        return 0
    try:
        delay = int(value)
    except ValueError:
        raise qparams.ParamError(f'strconv.Atoi: parsing "{value}": invalid syntax') from None
    if delay < 0 or delay > 2**32 - 1:
        raise qparams.ParamError(f"delay_for value {delay} is out of range [0, 4294967295]")
    if delay > MAX_DELAY_FOR_S:
        raise qparams.ParamError(f"delay_for can't be greater than {MAX_DELAY_FOR_S}")
    return delay


def grpc_error_text(status: int, message: str) -> str:
    """Return how Loki words an HTTP-style error raised while it sets up a tail (a gRPC status string)."""
    return f"rpc error: code = Code({status}) desc = {message}"


# ---- the hub ----------------------------------------------------------------------------------------------------


class TailHub:
    """The open tail sessions per tenant; the ingest path publishes every durable batch to it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Replaced whole on change, so the ingest thread reads a consistent tuple without a lock.
        self._sessions: dict[str, tuple[TailSession, ...]] = {}
        self.active = Gauge("loki_querier_tail_active", "Number of active tailers.", registry=registry)
        self.bytes_sent = Counter(
            "loki_querier_tail_bytes", "Line bytes sent to tail clients.", ["tenant"], registry=registry
        )
        self.dropped = Counter(
            "loglake_tail_dropped_entries",
            "Entries a tail session dropped because its client did not keep up.",
            ["tenant"],
            registry=registry,
        )

    def publish(self, tenant: str, entries: pa.RecordBatch, streams: dict[int, LabelSet]) -> None:
        """Hand a durable batch (ENTRY_SCHEMA rows, labels of its streams) to the tenant's sessions; never blocks."""
        sessions = self._sessions.get(tenant)
        if not sessions:
            return
        for session in sessions:
            session.offer(entries, streams)

    def count(self, tenant: str) -> int:
        """Return how many sessions a tenant has open."""
        return len(self._sessions.get(tenant, ()))

    def limit_error(self, tenant: str, limit: int) -> str | None:
        """Return Loki's refusal if the tenant already has `limit` sessions open, else None."""
        count = self.count(tenant)
        if count >= limit:
            return grpc_error_text(
                400, f"max concurrent tail requests limit exceeded, count > limit ({count + 1} > {limit})"
            )
        return None

    def open(self, session: TailSession) -> None:
        """Start sending published batches to a session."""
        self._sessions[session.tenant] = (*self._sessions.get(session.tenant, ()), session)
        self.active.inc()

    def close(self, session: TailSession) -> None:
        """Stop sending published batches to a session."""
        session.closed = True
        left = tuple(s for s in self._sessions.get(session.tenant, ()) if s is not session)
        if left:
            self._sessions[session.tenant] = left
        else:
            self._sessions.pop(session.tenant, None)
        self.active.dec()


# ---- one session ------------------------------------------------------------------------------------------------


@dataclass
class _Received:
    """A published batch narrowed to the session's streams, waiting for the pipeline."""

    entries: pa.RecordBatch
    streams: dict[int, LabelSet]
    early: bool  # arrived before the history was read, so it may repeat a historical entry


# (ts, sequence, labels, line, categorized extras): with categorize-labels the labels are the stream's only and the
# extras hold the entry's structuredMetadata and parsed labels; otherwise the labels are all of them and extras None.
TailEntry = tuple[int, int, dict[str, str], str, dict[str, dict[str, str]] | None]
Kept = tuple[int, dict[str, str], str, dict[str, dict[str, str]] | None]
"""(timestamp ns, arrival number, labels, line) — ordered by time, then by arrival."""


class TailSession:
    """One client's tail: picks its streams out of published batches, runs the pipeline, orders and paces entries."""

    def __init__(
        self,
        tenant: str,
        query: qp.LogQuery,
        delay_for_s: int,
        loop: asyncio.AbstractEventLoop,
        categorize: bool = False,
    ) -> None:
        self.tenant = tenant
        self.categorize = categorize
        self.query = query
        self.delay_ns = delay_for_s * NS
        self.loop = loop
        self.closed = False
        self.history_read = False
        self.buffered = 0  # entries received and not yet sent or filtered out
        self.dropped: list[tuple[int, LabelSet]] = []
        self.dropped_total = 0
        self._matches: dict[int, bool] = {}
        self._received: deque[_Received] = deque()
        self._ready: list[TailEntry] = []  # a heap
        self._seq = itertools.count()
        self._history_keys: set[tuple[int, str, tuple[tuple[str, str], ...]]] = set()
        self.wake = asyncio.Event()

    # -- called on the ingest thread

    def offer(self, entries: pa.RecordBatch, streams: dict[int, LabelSet]) -> None:
        """Queue a published batch for this session (thread-safe, returns at once)."""
        if self.closed:
            return
        try:
            self.loop.call_soon_threadsafe(self._receive, entries, streams)
        except RuntimeError:  # the event loop is gone: the server is stopping
            self.closed = True

    # -- everything below runs on the event loop

    def _stream_matches(self, sid: int, labels: LabelSet) -> bool:
        hit = self._matches.get(sid)
        if hit is None:
            if len(self._matches) > 100_000:
                self._matches.clear()
            values = dict(labels)
            hit = self._matches[sid] = all(m.matches(values.get(m.name, "")) for m in self.query.matchers)
        return hit

    def _receive(self, entries: pa.RecordBatch, streams: dict[int, LabelSet]) -> None:
        if self.closed:
            return
        mine = {sid: labels for sid, labels in streams.items() if self._stream_matches(sid, labels)}
        if not mine:
            return
        if len(mine) < len(streams):
            sids = entries.column(0).to_numpy()
            entries = entries.filter(pa.array(np.isin(sids, np.fromiter(mine, np.int64, len(mine)))))
        room = max(SESSION_BUFFER_ENTRIES - self.buffered, 0)
        if entries.num_rows > room:
            self._drop(entries.slice(room), mine)
            entries = entries.slice(0, room)
        if entries.num_rows:
            self._received.append(_Received(entries, mine, early=not self.history_read))
            self.buffered += entries.num_rows
            self.wake.set()

    def _drop(self, entries: pa.RecordBatch, streams: dict[int, LabelSet]) -> None:
        self.dropped_total += entries.num_rows
        room = MAX_DROPPED_PER_MESSAGE - len(self.dropped)
        if room <= 0:
            return
        head = entries.slice(0, room)
        for sid, ts in zip(head.column(0).to_pylist(), head.column(1).to_pylist(), strict=True):
            self.dropped.append((ts, streams[sid]))

    def add_history(self, result: list[dict[str, Any]]) -> None:
        """Queue the historical entries (a `streams` query result) ahead of the live ones."""
        for stream in result:
            labels = stream["stream"]
            for ts, line, *extras in stream["values"]:
                extra = extras[0] if extras else None
                full = _all_labels(labels, extra)
                heapq.heappush(self._ready, (int(ts), next(self._seq), labels, line, extra))
                self._history_keys.add((int(ts), line, tuple(sorted(full.items()))))
                self.buffered += 1
        self.history_read = True

    def take_received(self) -> list[_Received]:
        """Remove and return published batches, about PROCESS_CHUNK_ROWS rows at most (at least one batch)."""
        out: list[_Received] = []
        rows = 0
        while self._received and (not out or rows + self._received[0].entries.num_rows <= PROCESS_CHUNK_ROWS):
            item = self._received.popleft()
            out.append(item)
            rows += item.entries.num_rows
        return out

    def has_received(self) -> bool:
        """Say whether published batches wait for the pipeline."""
        return bool(self._received)

    def process(self, engine: Any, batches: list[_Received]) -> list[Kept]:
        """Run the query's pipeline over published batches; return (ts, labels, line) of what it keeps.

        Runs on a worker thread; it touches nothing the event loop changes.
        """
        streams: dict[int, LabelSet] = {}
        for b in batches:
            streams.update(b.streams)
        table = pa.Table.from_batches([b.entries for b in batches])
        early = np.concatenate([np.full(b.entries.num_rows, b.early) for b in batches])
        ts_col = table.column("ts").to_numpy()
        piece = Piece(
            int(ts_col.min()), int(ts_col.max()), lambda columns: table.select(columns), in_head=True, rows=len(ts_col)
        )
        frame = engine.load_frame(piece, self.query, streams)
        if not frame.n:
            return []
        lines = frame.line.to_pylist() if frame.line is not None else [""] * frame.n
        if self.categorize:
            kept: list[tuple[dict[str, str], dict[str, dict[str, str]] | None]] = list(frame.categorized_labels())
        else:
            groups, first = frame.label_keys()
            label_sets = [frame.labels_of(int(row)) for row in first.tolist()]
            kept = [(label_sets[g], None) for g in groups.tolist()]
        out: list[Kept] = []
        for ts, (labels, extra), line, row in zip(frame.ts.tolist(), kept, lines, frame.row.tolist(), strict=True):
            if early[row] and self._history_keys:
                full = _all_labels(labels, extra)
                if (ts, line, tuple(sorted(full.items()))) in self._history_keys:
                    continue  # stored before the history was read: it was sent with the history
            out.append((ts, labels, line if line is not None else "", extra))
        return out

    def add_processed(self, rows: int, kept: list[Kept]) -> None:
        """Queue what the pipeline kept out of `rows` received entries."""
        self.buffered -= rows - len(kept)
        for ts, labels, line, extra in kept:
            heapq.heappush(self._ready, (ts, next(self._seq), labels, line, extra))

    def take_due(self, now_ns: int) -> list[TailEntry]:
        """Remove and return up to one message of entries whose delay has passed, oldest first."""
        out: list[TailEntry] = []
        cutoff = now_ns - self.delay_ns
        while self._ready and self._ready[0][0] <= cutoff and len(out) < MAX_ENTRIES_PER_MESSAGE:
            out.append(heapq.heappop(self._ready))
        self.buffered -= len(out)
        return out

    def next_due_s(self, now_ns: int) -> float | None:
        """Return seconds until the oldest held entry is due, or None when nothing is held."""
        if not self._ready:
            return None
        return max((self._ready[0][0] + self.delay_ns - now_ns) / NS, 0.0)

    def take_dropped(self) -> list[tuple[int, LabelSet]]:
        """Remove and return the dropped entries to report."""
        dropped, self.dropped = self.dropped, []
        return dropped


# ---- encoding -----------------------------------------------------------------------------------------------------


def encode_message(
    entries: list[TailEntry], dropped: list[tuple[int, LabelSet]], flags: list[str] | None = None
) -> bytes:
    """Return a tail message in Loki's v1 JSON: one stream object per entry, `dropped_entries` only when some,
    `encodingFlags` when the client asked for any (with categorize-labels each value carries its extras)."""
    msg: dict[str, Any] = {
        "streams": [
            {"stream": e[2], "values": [[str(e[0]), e[3]] if e[4] is None else [str(e[0]), e[3], e[4]]]}
            for e in entries
        ]
    }
    if dropped:
        msg["dropped_entries"] = [
            {"timestamp": str(ts), "labels": dict(labels)} if labels else {"timestamp": str(ts)}
            for ts, labels in dropped
        ]
    if flags:
        msg["encodingFlags"] = flags
    return orjson.dumps(msg)


def _all_labels(labels: dict[str, str], extra: dict[str, dict[str, str]] | None) -> dict[str, str]:
    """An entry's whole label set, from its labels and (when categorized) its extras."""
    if not extra:
        return labels
    return {**labels, **extra.get("structuredMetadata", {}), **extra.get("parsed", {})}


def encode_legacy_message(entries: list[TailEntry], dropped: list[tuple[int, LabelSet]]) -> bytes:
    """Return a tail message in the JSON of Loki's legacy `/api/prom/tail`."""
    msg = {
        "streams": [
            {"labels": format_labels(e[2]), "entries": [{"ts": rfc3339_nano(e[0]), "line": e[3]}]} for e in entries
        ],
        "dropped_entries": [{"Timestamp": rfc3339_nano(ts), "Labels": format_labels(labels)} for ts, labels in dropped]
        or None,
    }
    return orjson.dumps(msg)


def rfc3339_nano(ns: int) -> str:
    """Format ns since the epoch as Go's RFC3339Nano in UTC (trailing zeros of the fraction dropped)."""
    seconds, frac = divmod(ns, NS)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{frac:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


# ---- the endpoint -------------------------------------------------------------------------------------------------


class TailEndpoint:
    """Serves the tail websocket for one application."""

    def __init__(self, app: LoglakeApp) -> None:
        self.app = app
        self.hub = TailHub(app.metrics.registry)

    def routes(self) -> list[BaseRoute]:
        """Return the websocket routes and, for plain HTTP on the same paths, Loki's answer to a non-upgrade."""
        out: list[BaseRoute] = []
        for path in PATHS:
            out.append(WebSocketRoute(path, self.tail))
            out.append(Route(path, self.app.handler(self.not_websocket, "tail"), methods=["GET", "POST"]))
        return out

    async def not_websocket(self, request: Request) -> Response:
        """Check the parameters as Loki does before the upgrade, then refuse the plain HTTP request."""
        self.app.tenant(request)
        parse_tail_params(await self.app.form(request))
        return PlainTextResponse("Bad Request\n", status_code=400)

    async def tail(self, ws: WebSocket) -> None:
        """Run one tail session: refuse bad requests before the upgrade, then history, then live entries."""
        from loglake.api.app import ApiError

        try:
            tenant = self.app.tenant(ws)
            p = parse_tail_params(dict(ws.query_params))
        except ApiError as exc:
            await _deny(ws, exc.status, exc.message)
            return
        except QueryError as exc:
            await _deny(ws, exc.status, exc.message)
            return
        except qparams.ParamError as exc:
            await _deny(ws, 400, str(exc))
            return
        await ws.accept()
        limit = int(getattr(self.app.config.limits_config, "max_concurrent_tail_requests", 10))
        # Loki checks the tail limit first, then the kind of query; both answer after the upgrade.
        refusal = self.hub.limit_error(tenant, limit)
        if refusal is not None:
            await _close(ws, CLOSE_INTERNAL_ERROR, refusal)
            return
        if not isinstance(p.parsed, qp.LogQuery):
            await _close(ws, CLOSE_INTERNAL_ERROR, ONLY_LOG_SELECTOR)
            return
        legacy = ws.url.path.startswith("/api/prom/")
        flags = [] if legacy else qparams.encoding_flags(ws.headers)
        loop = asyncio.get_running_loop()
        session = TailSession(tenant, p.parsed, p.delay_for_s, loop, qparams.CATEGORIZE_LABELS in flags)
        self.hub.open(session)  # before the history is read, so that no entry falls between the two
        reader = asyncio.create_task(_read_until_closed(ws))
        sender = asyncio.create_task(self._stream(ws, session, p, legacy, flags))
        try:
            done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done and not reader.done():
                reason = sender.result()
                if reason is not None:
                    await _close(ws, CLOSE_INTERNAL_ERROR, reason)
        except Exception:
            log.debug("tail session ended", exc_info=True)
        finally:
            self.hub.close(session)
            for task in (reader, sender):
                task.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)
            if session.dropped_total:
                self.hub.dropped.labels(tenant).inc(session.dropped_total)

    async def _stream(
        self, ws: WebSocket, session: TailSession, p: TailParams, legacy: bool, flags: list[str]
    ) -> str | None:
        """Send the history, then live entries until the client goes or the maximum duration passes.

        Returns the reason to close with, or None when the client went away.
        """
        loop = asyncio.get_running_loop()
        engine = self.app.engine
        encode = encode_legacy_message if legacy else partial(encode_message, flags=flags)
        bytes_sent = self.hub.bytes_sent.labels(session.tenant)
        deadline = time.monotonic() + TAIL_MAX_DURATION_S
        try:
            now = time.time_ns()
            if p.start < now:
                history = partial(engine.query_range, categorize=session.categorize)
                data = await loop.run_in_executor(
                    None, history, session.tenant, p.query, p.start, now, NS, 0, p.limit, "backward"
                )
                session.add_history(data["result"])
            session.history_read = True
            while True:
                if session.has_received():
                    batches = session.take_received()
                    rows = sum(b.entries.num_rows for b in batches)
                    kept = await loop.run_in_executor(None, session.process, engine, batches)
                    session.add_processed(rows, kept)
                due = session.take_due(time.time_ns())
                if due:
                    await ws.send_text(encode(due, session.take_dropped()).decode())
                    bytes_sent.inc(sum(len(e[3]) for e in due))
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return MAX_DURATION_REACHED
                session.wake.clear()
                if session.has_received():
                    continue
                wait = session.next_due_s(time.time_ns())
                wait = left if wait is None else min(wait, left)
                try:
                    await asyncio.wait_for(session.wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
        except QueryError as exc:
            return grpc_error_text(exc.status, exc.message)
        except (OSError, RuntimeError, WebSocketDisconnect):  # the client went away while we were sending
            return None
        except Exception:
            log.exception("tail of %r for tenant %s failed", p.query, session.tenant)
            return "internal server error"


async def _read_until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends until it closes the connection."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _deny(ws: WebSocket, status: int, message: str) -> None:
    """Answer the upgrade request with a plain HTTP error, as Loki does before it upgrades."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(PlainTextResponse(message + "\n", status_code=status))
    else:  # a server without the denial extension can only refuse (403)
        await ws.close(1008, message.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore"))


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    """Close with a code and a reason cut to what fits in a close frame."""
    raw = reason.encode()[:MAX_CLOSE_REASON_BYTES]
    try:
        await ws.close(code, raw.decode(errors="ignore"))
    except (OSError, RuntimeError, WebSocketDisconnect):
        pass
