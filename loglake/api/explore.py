"""Loki's exploration endpoints: detected_fields, detected_field values, detected_labels and patterns.

Fields are detected in the newest `line_limit` entries a log query selects; labels from the index; patterns are
found on the fly with Drain over the newest `MAX_PATTERN_LINES` lines of the selected streams (Loki's pattern
ingester trains on lines as they arrive instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loglake.api import params as qparams
from loglake.logql import pipeline
from loglake.logql import plan as qp
from loglake.logql.detected import SampledEntry, detect_field_values, detect_fields, detect_labels
from loglake.logql.drain import DEFAULT_CONFIG, MS, find_patterns
from loglake.logql.errors import QueryError
from loglake.model import LabelSet, format_labels

if TYPE_CHECKING:
    from loglake.api.app import LoglakeApp
    from loglake.store.store import Piece

MAX_PATTERN_LINES = 50_000
"""The most lines (the newest in the range) a patterns request runs through Drain."""
DEFAULT_LINE_LIMIT = 100
DEFAULT_FIELD_LIMIT = 1000
LEVEL_METADATA = "detected_level"
END_BEFORE_START = "end timestamp must not be before or equal to start time"


def explore_routes(app: LoglakeApp) -> list[Route]:
    """Return the routes of the exploration endpoints, served by `app` (GET and POST, as Loki)."""
    api = ExploreApi(app)
    h = app.handler
    both = ["GET", "POST"]
    return [
        Route("/loki/api/v1/detected_fields", h(api.detected_fields, "detected_fields"), methods=both),
        Route(
            "/loki/api/v1/detected_field/{name}/values",
            h(api.detected_field_values, "detected_field_values"),
            methods=both,
        ),
        Route("/loki/api/v1/detected_labels", h(api.detected_labels, "detected_labels"), methods=both),
        Route("/loki/api/v1/patterns", h(api.patterns, "patterns"), methods=both),
    ]


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


@dataclass(frozen=True)
class FieldsParams:
    """A detected_fields request, checked in Loki's order."""

    query: qp.LogQuery
    start: int
    end: int
    line_limit: int
    limit: int


class ExploreApi:
    """The exploration handlers over one application's store."""

    def __init__(self, app: LoglakeApp) -> None:
        self.app = app

    # ---- detected fields -----------------------------------------------------------------------------------

    async def detected_fields(self, request: Request) -> Response:
        """Return the fields found in the newest `line_limit` entries of a log query, with types and cardinality."""
        tenant = self.app.tenant(request)
        r = self._fields_params(await self.app.form(request))
        fields = await run_in_threadpool(lambda: detect_fields(self._sample(tenant, r), r.limit))
        if not fields:
            return _json({})
        return _json({"fields": [f.to_json() for f in fields], "limit": r.limit})

    async def detected_field_values(self, request: Request) -> Response:
        """Return the distinct values of one detected field in the newest `line_limit` entries of a log query."""
        tenant = self.app.tenant(request)
        r = self._fields_params(await self.app.form(request))
        name = request.path_params["name"]
        values = await run_in_threadpool(lambda: detect_field_values(self._sample(tenant, r), name, r.limit))
        if not values:
            return _json({})
        return _json({"values": values, "limit": r.limit})

    def _fields_params(self, p: dict[str, str]) -> FieldsParams:
        start, end = qparams.time_range(p)
        if end < start:
            raise qparams.ParamError(END_BEFORE_START)
        line_limit = qparams.parse_limit(p.get("line_limit"), DEFAULT_LINE_LIMIT)
        limit = qparams.parse_limit(p.get("limit") or p.get("field_limit"), DEFAULT_FIELD_LIMIT)
        step = qparams.parse_step_ns(p.get("step"), start, end)
        qparams.check_step(step, start, end)
        parsed = qp.parse(p.get("query", ""))
        if not isinstance(parsed, qp.LogQuery):
            raise QueryError(400, "only log selector is supported")
        max_entries = int(getattr(self.app.config.limits_config, "max_entries_limit_per_query", 0))
        if 0 < max_entries < line_limit:
            raise QueryError(
                400,
                f"max entries limit per query exceeded, limit > max_entries_limit_per_query "
                f"({line_limit} > {max_entries})",
            )
        return FieldsParams(parsed, start, end, line_limit, limit)

    def _sample(self, tenant: str, r: FieldsParams) -> list[SampledEntry]:
        """Return the newest `line_limit` entries the query selects, in Loki's order: streams by label text,
        each stream's entries newest first."""
        streams = self.app.store.match_streams(tenant, r.query.matchers, r.start, r.end)
        ids = np.fromiter(streams, dtype=np.int64, count=len(streams))
        pieces = self.app.store.pieces(tenant, ids, r.start, r.end)
        pieces.sort(key=lambda piece: -piece.max_ts)
        kept: list[tuple[int, int, SampledEntry]] = []
        for piece in pieces:
            if len(kept) >= r.line_limit and piece.max_ts < kept[-1][0]:
                break
            kept.extend(self._piece_entries(piece, r.query, streams, r.line_limit))
            if len(kept) >= r.line_limit:
                kept.sort(key=lambda e: -e[0])
                del kept[r.line_limit :]
        kept.sort(key=lambda e: -e[0])
        del kept[r.line_limit :]
        order = sorted(range(len(kept)), key=lambda i: (format_labels(streams[kept[i][1]]), -kept[i][0], i))
        return [kept[i][2] for i in order]

    def _piece_entries(
        self, piece: Piece, q: qp.LogQuery, streams: dict[int, LabelSet], limit: int
    ) -> Iterator[tuple[int, int, SampledEntry]]:
        """Yield (ts, stream id, entry) for the newest `limit` rows of a piece that the query keeps."""
        frame = self.app.engine.load_frame(piece, q, streams)
        if not frame.n:
            return
        top_frame = frame.take(_newest(frame.ts, limit))
        metas = {name: col.to_pylist() for name, col in top_frame.meta.items()}
        parsed = {name: col.to_pylist() for name, col in top_frame.parsed.items()}
        lines = top_frame.line.to_pylist() if top_frame.line is not None else [""] * top_frame.n
        for i, (t, sid) in enumerate(zip(top_frame.ts.tolist(), top_frame.sid.tolist(), strict=True)):
            labels = streams[sid]
            stream_names = {n for n, _ in labels}
            meta = [(_metadata_name(n, stream_names), vals[i]) for n, vals in metas.items() if vals[i] is not None]
            entry_parsed = {n: vals[i] for n, vals in parsed.items() if vals[i] is not None}
            yield t, sid, SampledEntry(labels, lines[i] or "", meta, entry_parsed)

    # ---- detected labels -----------------------------------------------------------------------------------

    async def detected_labels(self, request: Request) -> Response:
        """Return the stream labels worth exploring (not all ids) of the selected streams, with cardinality."""
        tenant = self.app.tenant(request)
        p = await self.app.form(request)
        start, end = qparams.time_range(p)
        if end < start:
            raise qparams.ParamError(END_BEFORE_START)
        query = p.get("query", "")
        store = self.app.store

        def find() -> list[dict[str, Any]]:
            if query:
                streams = store.match_streams(tenant, qp.parse_selector(query), start, end)
            else:
                streams = store.all_streams(tenant, start, end)
            return [label.to_json() for label in detect_labels(streams.values())]

        labels = await run_in_threadpool(find)
        return _json({"detectedLabels": labels} if labels else {})

    # ---- patterns ------------------------------------------------------------------------------------------

    async def patterns(self, request: Request) -> Response:
        """Return the log patterns of the selected streams with their counts per step."""
        tenant = self.app.tenant(request)
        p = await self.app.form(request)
        start, end = qparams.time_range(p)
        step = qparams.parse_step_ns(p.get("step"), start, end)
        qparams.check_step(step, start, end)
        matchers = qp.parse_selector(p.get("query", ""))

        def find() -> list[dict[str, Any]]:
            from_ms, through_ms = start // MS, -(-end // MS)
            # Loki counts a line in the sample bucket its time falls in; a bucket stamped before `through`
            # can hold lines up to one sample interval later.
            interval = DEFAULT_CONFIG.sample_interval_ms
            read_end = (through_ms - through_ms % interval + interval) * MS
            entries = self._pattern_lines(tenant, matchers, start, max(read_end, end))
            series = find_patterns(entries, from_ms, through_ms, step // MS)
            return [s.to_json() for s in series]

        return _json({"status": "success", "data": await run_in_threadpool(find)})

    def _pattern_lines(
        self, tenant: str, matchers: list[Any], start: int, end: int
    ) -> Iterator[tuple[int, int, str, str | None]]:
        """Yield (stream id, ns, line, detected_level) for the newest lines, each stream's oldest first."""
        store = self.app.store
        streams = store.match_streams(tenant, matchers, start, end)
        ids = np.fromiter(streams, dtype=np.int64, count=len(streams))
        pieces = store.pieces(tenant, ids, start, end)
        pieces.sort(key=lambda piece: -piece.max_ts)
        tables: list[pa.Table] = []
        rows = 0
        bound: int | None = None
        for piece in pieces:
            if bound is not None and piece.max_ts < bound:
                break
            table = piece.load(["stream_id", "ts", "line", "metadata"])
            if not table.num_rows:
                continue
            level = pc.map_lookup(table.column("metadata"), pa.scalar(LEVEL_METADATA), "first")
            tables.append(
                pa.table(
                    {
                        "sid": table.column("stream_id"),
                        "ts": table.column("ts"),
                        "line": table.column("line"),
                        "level": level,
                    }
                )
            )
            rows += table.num_rows
            if rows >= MAX_PATTERN_LINES:
                merged = pa.concat_tables(tables)
                merged = merged.take(pa.array(_newest(merged.column("ts").to_numpy(), MAX_PATTERN_LINES)))
                tables, rows = [merged], merged.num_rows
                bound = int(pc.min(merged.column("ts")).as_py())
        if not tables:
            return
        merged = pa.concat_tables(tables)
        sid = merged.column("sid").to_numpy()
        ts = merged.column("ts").to_numpy()
        order = np.lexsort((ts, sid))
        merged = merged.take(pa.array(order))
        yield from zip(
            merged.column("sid").to_pylist(),
            merged.column("ts").to_pylist(),
            merged.column("line").to_pylist(),
            merged.column("level").to_pylist(),
            strict=True,
        )


def _newest(ts: np.ndarray, limit: int) -> np.ndarray:
    """Return the indexes of the `limit` largest timestamps (all when there are fewer)."""
    if len(ts) <= limit:
        return np.arange(len(ts))
    return np.argpartition(-ts, limit - 1)[:limit]


def _metadata_name(name: str, stream_names: set[str]) -> str:
    """Undo the pipeline's `_extracted` rename of metadata named like a stream label (Loki reports the raw name)."""
    base = name.removesuffix(pipeline.EXTRACTED)
    return base if base != name and base in stream_names else name
