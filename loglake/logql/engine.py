"""The query engine: runs parsed LogQL against the store, columnar from block to result."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loglake.logql import plan as qp
from loglake.logql.errors import QueryError
from loglake.logql.pipeline import LabelView, label_filter_mask
from loglake.logql.printer import go_duration
from loglake.logql.results import QueryStats, format_ts, format_value, streams_result
from loglake.logql.series import SeriesMatrix, binary, label_replace
from loglake.logql.windows import StepGrid, step_span, window_sums
from loglake.model import LabelMatcher, LabelSet, MatchOp
from loglake.store.store import Piece

NS = 1_000_000_000
MAX_POINTS_PER_SERIES = 11_000
TIMEOUT_MESSAGE = (
    "request timed out, decrease the duration of the request or add more label matchers "
    "(prefer exact match over regex match) to reduce the amount of data processed"
)


class StoreReader(Protocol):
    """What the engine needs from the store."""

    def match_streams(
        self, tenant: str, matchers: list[LabelMatcher], start: int, end: int
    ) -> dict[int, LabelSet]: ...  # pragma: no cover

    def all_streams(self, tenant: str, start: int, end: int) -> dict[int, LabelSet]: ...  # pragma: no cover

    def read(
        self, tenant: str, stream_ids: np.ndarray, start: int, end: int, columns: list[str]
    ) -> list[pa.Table]: ...  # pragma: no cover

    def pieces(self, tenant: str, stream_ids: np.ndarray, start: int, end: int) -> list[Piece]: ...  # pragma: no cover


class QueryEngine:
    """Answers Loki's query endpoints for one store."""

    def __init__(self, store: StoreReader, limits: Any) -> None:
        self.store = store
        self.limits = limits

    # ---- entry points -----------------------------------------------------------------------------------------

    def query_range(
        self, tenant: str, query: str, start: int, end: int, step: int, interval: int, limit: int, direction: str
    ) -> dict[str, Any]:
        """Answer `/loki/api/v1/query_range`: streams for a log query, a matrix for a metric query."""
        parsed = qp.parse(query)
        self._check_length(start, end)
        if isinstance(parsed, qp.LogQuery):
            self._check_limit(limit)
            stats = self._stats()
            result = self._log_query(tenant, parsed, start, end, limit, direction, stats)
            return {"resultType": "streams", "result": result, "stats": stats.to_json()}
        if step <= 0:
            raise QueryError(
                400, "zero or negative query resolution step widths are not accepted. Try a positive integer"
            )
        if (end - start) / step > MAX_POINTS_PER_SERIES:
            raise QueryError(
                400,
                "exceeded maximum resolution of 11,000 points per time series. "
                "Try increasing the value of the step parameter",
            )
        stats = self._stats()
        # Loki aligns the evaluation times to multiples of the step.
        first = (start // step) * step
        last = -((-end) // step) * step
        series = self._check_series(self._metric(tenant, parsed, StepGrid(first, last, step), stats))
        return {"resultType": "matrix", "result": series, "stats": stats.to_json()}

    def query_instant(self, tenant: str, query: str, at: int, limit: int, direction: str) -> dict[str, Any]:
        """Answer `/loki/api/v1/query`: a vector (or scalar) for a metric query; log queries are refused."""
        parsed = qp.parse(query)
        if isinstance(parsed, qp.LogQuery):
            raise QueryError(
                400,
                "log queries are not supported as an instant query type, "
                "please change your query to a range query type",
            )
        stats = self._stats()
        grid = StepGrid(at, at, 0)
        matrix = self._eval(tenant, parsed, grid, stats)
        if matrix.scalar:
            return {
                "resultType": "scalar",
                "result": [format_ts(at), format_value(float(matrix.values[0][0]))],
                "stats": stats.to_json(),
            }
        series = self._check_series(_to_series(matrix, grid))
        vector = [{"metric": s["metric"], "value": s["values"][0]} for s in series if s["values"]]
        return {"resultType": "vector", "result": vector, "stats": stats.to_json()}

    def label_names(self, tenant: str, query: str | None, start: int, end: int) -> list[str]:
        """Return the sorted label names of the selected (or all) streams with data in the range."""
        streams = self._streams(tenant, query, start, end)
        return sorted({name for labels in streams.values() for name, _ in labels})

    def label_values(self, tenant: str, name: str, query: str | None, start: int, end: int) -> list[str]:
        """Return the sorted values of one label over the selected (or all) streams."""
        streams = self._streams(tenant, query, start, end)
        return sorted({v for labels in streams.values() for n, v in labels if n == name})

    def series(self, tenant: str, selectors: list[str], start: int, end: int) -> list[dict[str, str]]:
        """Return the label sets of the streams matching any selector (all streams when none is given)."""
        if not selectors:
            streams = self.store.all_streams(tenant, start, end)
        else:
            streams = {}
            for text in selectors:
                streams.update(self.store.match_streams(tenant, qp.parse_selector(text), start, end))
        return [dict(labels) for _, labels in sorted(streams.items(), key=lambda kv: kv[1])]

    def index_stats(self, tenant: str, query: str, start: int, end: int) -> dict[str, int]:
        """Return Loki's index stats (streams, chunks, entries, bytes) for a selector over the range."""
        matchers = qp.parse_selector(query)
        streams = self.store.match_streams(tenant, matchers, start, end)
        ids = np.fromiter(streams, dtype=np.int64, count=len(streams))
        tables = self.store.read(tenant, ids, start, end, ["stream_id", "line"])
        entries = sum(t.num_rows for t in tables)
        nbytes = sum(int(pc.sum(pc.binary_length(t.column("line"))).as_py() or 0) for t in tables)
        present = set()
        for t in tables:
            present.update(np.unique(t.column("stream_id").to_numpy()).tolist())
        return {"streams": len(present), "chunks": len(tables), "entries": entries, "bytes": nbytes}

    def volume(
        self,
        tenant: str,
        query: str,
        start: int,
        end: int,
        limit: int,
        aggregate_by: str,
        target_labels: list[str],
        grid: StepGrid | None = None,
    ) -> dict[str, Any]:
        """Answer `/index/volume` (a vector at `end`) or, with a step grid, `/index/volume_range` (a matrix).

        Line bytes are summed per group: the label pairs of the selector's label names (or `targetLabels`)
        with `aggregateBy=series`, or one `{name=""}` per such label name with `aggregateBy=labels`.
        """
        if aggregate_by not in ("series", "labels"):
            raise QueryError(400, "invalid aggregation option")
        matchers = qp.parse_selector(query)
        names = target_labels or list(dict.fromkeys(m.name for m in matchers))
        streams = self.store.match_streams(tenant, matchers, start, end)
        groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for sid, labels in streams.items():
            present = dict(labels)
            if aggregate_by == "series":
                keys = [tuple((n, present[n]) for n in names if n in present)]
            else:
                keys = [((n, ""),) for n in names if n in present]
            for key in keys:
                groups.setdefault(key, []).append(sid)
        ids = np.fromiter(streams, dtype=np.int64, count=len(streams))
        steps = grid.count if grid else 1
        per_stream: dict[int, np.ndarray] = {}
        for table in self.store.read(tenant, ids, start, end, ["stream_id", "ts", "line"]):
            sid = table.column("stream_id").to_numpy()
            nbytes = pc.binary_length(table.column("line")).to_numpy(zero_copy_only=False).astype(np.float64)
            if grid is None:
                step_idx = np.zeros(len(sid), dtype=np.int64)
                ok = np.ones(len(sid), dtype=bool)
            else:
                # Each entry counts once: in the step whose window (t - step, t] holds it.
                step_idx, last = step_span(table.column("ts").to_numpy(), grid, max(grid.step, 1))
                ok = step_idx <= last
            uniq, inverse = np.unique(sid, return_inverse=True)
            sums = np.zeros((len(uniq), steps))
            np.add.at(sums, (inverse.reshape(-1)[ok], step_idx[ok]), nbytes[ok])
            for j, s in enumerate(uniq.tolist()):
                per_stream[s] = per_stream.get(s, 0) + sums[j]
        totals = []
        for key, members in groups.items():
            vols = [per_stream[m] for m in members if m in per_stream]
            if vols:
                totals.append((key, np.sum(vols, axis=0)))
        totals.sort(key=lambda kv: (-float(kv[1].sum()), [n for n, _ in kv[0]], kv[0]))
        totals = totals[: max(limit, 0)] if limit else totals
        if grid is None:
            at = format_ts(end)
            result = [{"metric": dict(k), "value": [at, format_value(float(v[0]))]} for k, v in totals]
            return {"resultType": "vector", "result": result}
        times = [format_ts(int(t)) for t in grid.times()]
        result = [
            {"metric": dict(k), "values": [[times[j], format_value(float(v[j]))] for j in np.flatnonzero(v).tolist()]}
            for k, v in totals
        ]
        return {"resultType": "matrix", "result": result}

    def format_query(self, query: str) -> str:
        """Return the query printed in LogQL's canonical form."""
        return qp.format_query(query)

    # ---- log queries ------------------------------------------------------------------------------------------

    def _check_limit(self, limit: int) -> None:
        max_entries = int(getattr(self.limits, "max_entries_limit_per_query", 5000))
        if limit > max_entries > 0:
            raise QueryError(
                400, f"max entries limit per query exceeded, limit > max_entries_limit ({limit} > {max_entries})"
            )
        if limit < 0:
            raise QueryError(400, "limit must be a positive value")

    def _stats(self) -> QueryStats:
        """Return a fresh stats record carrying the query's deadline (`query_timeout`)."""
        timeout_ns = int(getattr(self.limits, "query_timeout", 0))
        stats = QueryStats()
        if timeout_ns > 0:
            stats.deadline = stats.started + timeout_ns / NS
        return stats

    def _check_length(self, start: int, end: int) -> None:
        limit = int(getattr(self.limits, "max_query_length", 0))
        if limit > 0 and end - start > limit:
            raise QueryError(
                400,
                f"the query time range exceeds the limit (query length: {go_duration(end - start)}, "
                f"limit: {go_duration(limit)})",
            )

    def _check_series(self, series: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = int(getattr(self.limits, "max_query_series", 0))
        if limit > 0 and len(series) > limit:
            raise QueryError(400, f"maximum of series ({limit}) reached for a single query")
        return series

    def _streams(self, tenant: str, query: str | None, start: int, end: int) -> dict[int, LabelSet]:
        if not query:
            return self.store.all_streams(tenant, start, end)
        return self.store.match_streams(tenant, qp.parse_selector(query), start, end)

    def _pieces(self, tenant: str, q: qp.LogQuery, start: int, end: int) -> tuple[dict[int, LabelSet], list[Piece]]:
        streams = self.store.match_streams(tenant, q.matchers, start, end)
        ids = np.fromiter(streams, dtype=np.int64, count=len(streams))
        return streams, self.store.pieces(tenant, ids, start, end)

    def _load(
        self, piece: Piece, q: qp.LogQuery, columns: list[str], stats: QueryStats, streams: dict[int, LabelSet]
    ) -> pa.Table:
        """Load a piece's rows and apply the query's line filters (giving up once the query's time is over)."""
        if time.perf_counter() > stats.deadline:
            raise QueryError(504, TIMEOUT_MESSAGE)
        extra = (["line"] if q.line_filters else []) + (["metadata"] if q.label_filters else [])
        need = list(dict.fromkeys(["stream_id", "ts", *columns, *extra]))
        rows = piece.load(need)
        n = rows.num_rows
        nbytes = int(pc.sum(pc.binary_length(rows.column("line"))).as_py() or 0) if "line" in need else 0
        stats.lines_processed += n
        stats.bytes_processed += nbytes
        if piece.in_head:
            stats.head_lines += n
            stats.head_bytes += nbytes
        else:
            stats.blocks_read += 1
        if q.line_filters and n:
            rows = rows.filter(pa.array(qp.line_filter_mask(q.line_filters, rows.column("line"))))
        if q.label_filters and rows.num_rows:
            view = LabelView(rows, streams)
            keep = np.ones(rows.num_rows, dtype=bool)
            for f in q.label_filters:
                keep &= label_filter_mask(f, view)
            rows = rows.filter(pa.array(keep))
        stats.post_filter_lines += rows.num_rows
        return rows.select([c for c in rows.column_names if c in columns or c in ("stream_id", "ts")])

    def _log_query(
        self, tenant: str, q: qp.LogQuery, start: int, end: int, limit: int, direction: str, stats: QueryStats
    ) -> list[dict[str, Any]]:
        """Return the first `limit` entries in `direction`, reading pieces newest-first (or oldest-first) and
        stopping once no remaining piece can hold a better entry."""
        if limit == 0:
            return []
        streams, pieces = self._pieces(tenant, q, start, end)
        backward = direction == "backward"
        pieces.sort(key=lambda p: -p.max_ts if backward else p.min_ts)
        columns = ["stream_id", "ts", "line", "metadata"]
        kept: list[pa.Table] = []
        kept_rows = 0
        bound: int | None = None
        for piece in pieces:
            if bound is not None and (piece.max_ts < bound if backward else piece.min_ts > bound):
                break
            rows = self._load(piece, q, columns, stats, streams)
            if not rows.num_rows:
                continue
            kept.append(rows)
            kept_rows += rows.num_rows
            if kept_rows >= limit:
                best = _top(pa.concat_tables(kept), limit, backward)
                kept, kept_rows = [best], best.num_rows
                edge = best.column("ts")[best.num_rows - 1].as_py()
                bound = edge
        if not kept:
            return []
        picked = _top(pa.concat_tables(kept), limit, backward)
        stats.entries_returned += picked.num_rows
        return streams_result(picked, streams, direction)

    # ---- metric queries ---------------------------------------------------------------------------------------

    def _metric(self, tenant: str, expr: qp.MetricQuery, grid: StepGrid, stats: QueryStats) -> list[dict[str, Any]]:
        return _to_series(self._eval(tenant, expr, grid, stats), grid)

    def _eval(self, tenant: str, expr: qp.MetricQuery, grid: StepGrid, stats: QueryStats) -> SeriesMatrix:
        """Evaluate a metric expression at every step of the grid."""
        if isinstance(expr, qp.RangeAgg) and expr.func == "absent_over_time":
            return self._absent(tenant, expr, grid, stats)
        if isinstance(expr, qp.RangeAgg):
            return self._range_agg(tenant, expr, grid, stats, None)
        if isinstance(expr, qp.Literal):
            return SeriesMatrix.constant(expr.value, grid.count, scalar=True)
        if isinstance(expr, qp.VectorOf):
            return SeriesMatrix.constant(expr.value, grid.count, scalar=False)
        if isinstance(expr, qp.BinOp):
            left = self._eval(tenant, expr.left, grid, stats)
            right = self._eval(tenant, expr.right, grid, stats)
            return binary(expr.op, left, right, expr.return_bool, expr.card, expr.on, expr.labels, expr.include)
        if isinstance(expr, qp.LabelReplace):
            inner = self._eval(tenant, expr.inner, grid, stats)
            return label_replace(inner, expr.dst, expr.replacement, expr.src, expr.regex)
        if expr.op == "sum" and isinstance(expr.inner, qp.RangeAgg):
            # sum of counts, bytes and rates is linear: add straight into the output groups.
            return self._range_agg(tenant, expr.inner, grid, stats, expr)
        return _aggregate(expr, self._eval(tenant, expr.inner, grid, stats))

    def _absent(self, tenant: str, r: qp.RangeAgg, grid: StepGrid, stats: QueryStats) -> SeriesMatrix:
        """1 at the steps whose window holds no entry, labelled with the selector's equality matchers."""
        counting = replace(r, func="count_over_time")
        total = self._range_agg(tenant, counting, grid, stats, qp.VectorAgg("sum", counting, []))
        has_data = total.present.any(axis=0) if total.labels else np.zeros(grid.count, dtype=bool)
        labels: dict[str, str] = {}
        for m in r.query.matchers:
            if m.op == MatchOp.EQ:
                labels.setdefault(m.name, m.value)
        return SeriesMatrix([labels], np.ones((1, grid.count)), ~has_data.reshape(1, -1))

    def _range_agg(
        self, tenant: str, r: qp.RangeAgg, grid: StepGrid, stats: QueryStats, group_by: qp.VectorAgg | None
    ) -> SeriesMatrix:
        """Evaluate a range aggregation at every step, piece by piece, into per-series (or per-group) rows."""
        times = grid.times()
        start = int(times[0]) - r.range_ns - r.offset_ns + 1
        end = int(times[-1]) - r.offset_ns + 1
        streams, pieces = self._pieces(tenant, r.query, max(start, 0), end)
        by_bytes = r.func in ("bytes_over_time", "bytes_rate")
        columns = ["stream_id", "ts", "metadata", *(["line"] if by_bytes else [])]
        registry = _SeriesRegistry(streams, group_by)
        acc = _Accumulator(grid.count)
        for piece in pieces:
            rows = self._load(piece, r.query, columns, stats, streams)
            if not rows.num_rows:
                continue
            target = registry.targets(rows)
            ts = rows.column("ts").to_numpy()
            if by_bytes:
                values = pc.binary_length(rows.column("line")).to_numpy(zero_copy_only=False).astype(np.float64)
            else:
                values = np.ones(len(ts), dtype=np.float64)
            local, inverse = np.unique(target, return_inverse=True)
            sums, counts = window_sums(inverse.reshape(-1), ts, values, len(local), grid, r.range_ns, r.offset_ns)
            acc.add(local, sums, counts, len(registry.labels))
        sums, counts = acc.result(len(registry.labels))
        if r.func in ("rate", "bytes_rate"):
            sums = sums / (r.range_ns / NS)
        return SeriesMatrix(registry.labels, sums, counts > 0)


def _top(rows: pa.Table, limit: int, backward: bool) -> pa.Table:
    """Return the `limit` newest (backward) or oldest rows, in that order; ties broken by stream id."""
    ts = rows.column("ts").to_numpy()
    sid = rows.column("stream_id").to_numpy()
    key = -ts if backward else ts
    n = len(ts)
    k = min(limit, n)
    candidates = np.argpartition(key, k - 1)[:k] if k < n else np.arange(n)
    order = candidates[np.lexsort((sid[candidates], key[candidates]))]
    return rows.take(pa.array(order))


class _SeriesRegistry:
    """Gives every (stream, structured metadata) series a row number, or its output group's when pushed down."""

    def __init__(self, streams: dict[int, LabelSet], group_by: qp.VectorAgg | None) -> None:
        self.streams = streams
        self.group_by = group_by
        self.index: dict[tuple[int, int], int] = {}
        self.labels: list[dict[str, str]] = []
        self._groups: dict[tuple[tuple[str, str], ...], int] = {}
        self._stream_targets: dict[int, int] = {}

    def targets(self, rows: pa.Table) -> np.ndarray:
        """Return each row's target row number, registering new series."""
        n = rows.num_rows
        sid = rows.column("stream_id").to_numpy()
        meta = rows.column("metadata")
        if self.group_by is not None and not self.group_by.without:
            by_stream = self._targets_by_stream(sid, meta)
            if by_stream is not None:
                return by_stream
        if meta.null_count < n:
            meta_hash = pl.from_arrow(meta.combine_chunks()).hash().to_numpy().astype(np.int64)
            meta_hash[~pc.is_valid(meta).to_numpy(zero_copy_only=False)] = 0
        else:
            meta_hash = np.zeros(n, dtype=np.int64)
        keys = np.empty(n, dtype=[("sid", np.int64), ("meta", np.int64)])
        keys["sid"] = sid
        keys["meta"] = meta_hash
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        out = np.empty(len(uniq), dtype=np.int64)
        new = []
        for j, (s, h) in enumerate(uniq.tolist()):
            t = self.index.get((s, h))
            if t is None:
                new.append(j)
            else:
                out[j] = t
        if new:
            metas = meta.take(pa.array(first[new])).to_pylist()
            for j, m in zip(new, metas, strict=True):
                s, h = uniq[j].tolist()
                labels = dict(self.streams[s])
                if m:
                    labels.update(dict(m))
                out[j] = self.index[(s, h)] = self._register(labels)
        return out[inverse.reshape(-1)]

    def _targets_by_stream(self, sid: np.ndarray, meta: pa.ChunkedArray) -> np.ndarray | None:
        """Targets from stream labels alone, when no grouping label occurs in this piece's structured metadata."""
        grouping = set(self.group_by.grouping or ()) if self.group_by else set()
        if meta.null_count < len(meta) and grouping:
            keys = pc.unique(meta.combine_chunks().keys).to_pylist()
            if grouping.intersection(keys):
                return None
        uniq, inverse = np.unique(sid, return_inverse=True)
        out = np.empty(len(uniq), dtype=np.int64)
        for j, s in enumerate(uniq.tolist()):
            target = self._stream_targets.get(s)
            if target is None:
                target = self._stream_targets[s] = self._register(dict(self.streams[s]))
            out[j] = target
        return out[inverse.reshape(-1)]

    def _register(self, labels: dict[str, str]) -> int:
        if self.group_by is None:
            self.labels.append(labels)
            return len(self.labels) - 1
        key = _group_key(labels, self.group_by.grouping, self.group_by.without)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = len(self.labels)
            self.labels.append(dict(key))
        return g


class _Accumulator:
    """Sums per-piece window results into rows that grow as new series appear."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.sums = np.zeros((0, steps))
        self.counts = np.zeros((0, steps), dtype=np.int64)

    def add(self, rows: np.ndarray, sums: np.ndarray, counts: np.ndarray, total: int) -> None:
        """Add a piece's (len(rows), steps) results at `rows`."""
        if total > len(self.sums):
            grow = max(total, 2 * len(self.sums))
            self.sums = np.vstack([self.sums, np.zeros((grow - len(self.sums), self.steps))])
            self.counts = np.vstack([self.counts, np.zeros((grow - len(self.counts), self.steps), dtype=np.int64)])
        self.sums[rows] += sums
        self.counts[rows] += counts

    def result(self, total: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the (total, steps) sums and counts."""
        if total > len(self.sums):
            self.add(np.zeros(0, dtype=np.int64), np.zeros((0, self.steps)), np.zeros((0, self.steps)), total)
        return self.sums[:total], self.counts[:total]


def _group_key(labels: dict[str, str], grouping: list[str] | None, without: bool) -> tuple[tuple[str, str], ...]:
    if without:
        return tuple(sorted((k, v) for k, v in labels.items() if k not in (grouping or ())))
    return tuple(sorted((k, v) for k, v in labels.items() if k in (grouping or ())))


def _aggregate(agg: qp.VectorAgg, inner: SeriesMatrix) -> SeriesMatrix:
    """Apply a vector aggregation with by/without over the inner series at every step."""
    if agg.op in ("topk", "bottomk"):
        return _top_k(agg, inner)
    if agg.op in ("sort", "sort_desc"):
        order = _value_order(inner, descending=agg.op == "sort_desc")
        return SeriesMatrix([inner.labels[i] for i in order], inner.values[order], inner.present[order], True)
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, labels in enumerate(inner.labels):
        groups.setdefault(_group_key(labels, agg.grouping, agg.without), []).append(i)
    out_labels, out_values, out_present = [], [], []
    for key, members in groups.items():
        vals = inner.values[members]
        pres = inner.present[members]
        count = pres.sum(axis=0)
        total = np.where(pres, vals, 0).sum(axis=0)
        mean = total / np.maximum(count, 1)
        if agg.op == "sum":
            v = total
        elif agg.op == "count":
            v = count.astype(np.float64)
        elif agg.op == "avg":
            v = mean
        elif agg.op == "min":
            v = np.where(pres, vals, np.inf).min(axis=0)
        elif agg.op == "max":
            v = np.where(pres, vals, -np.inf).max(axis=0)
        elif agg.op in ("stddev", "stdvar"):
            # Population variance over the series present at each step, as Prometheus computes it.
            v = np.where(pres, (vals - mean) ** 2, 0).sum(axis=0) / np.maximum(count, 1)
            if agg.op == "stddev":
                v = np.sqrt(v)
        else:
            raise QueryError(400, f"vector aggregation {agg.op} is not supported yet")
        out_labels.append(dict(key))
        out_values.append(v)
        out_present.append(count > 0)
    steps = inner.values.shape[1] if inner.values.ndim == 2 else 0
    if not out_labels:
        return SeriesMatrix([], np.zeros((0, steps)), np.zeros((0, steps), dtype=bool))
    return SeriesMatrix(out_labels, np.array(out_values), np.array(out_present))


def _top_k(agg: qp.VectorAgg, inner: SeriesMatrix) -> SeriesMatrix:
    """Keep, at each step and in each group, the k series with the largest (topk) or smallest values."""
    k = agg.param
    present = np.zeros_like(inner.present)
    if k > 0:
        groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for i, labels in enumerate(inner.labels):
            groups.setdefault(_group_key(labels, agg.grouping, agg.without), []).append(i)
        sign = -1.0 if agg.op == "topk" else 1.0
        for members in groups.values():
            idx = np.array(members)
            key = np.where(inner.present[idx], sign * inner.values[idx], np.inf)
            ranks = np.argsort(np.argsort(key, axis=0, kind="stable"), axis=0, kind="stable")
            present[idx] = inner.present[idx] & (ranks < k)
    order = _value_order(SeriesMatrix(inner.labels, inner.values, present), descending=agg.op == "topk")
    return SeriesMatrix([inner.labels[i] for i in order], inner.values[order], present[order], True)


def _value_order(m: SeriesMatrix, descending: bool) -> np.ndarray:
    """Order series by their value at the last step where any is present (an instant query's only step)."""
    if not len(m.labels):
        return np.zeros(0, dtype=np.int64)
    last = m.values[:, -1] if m.values.shape[1] else np.zeros(len(m.labels))
    key = np.where(m.present[:, -1], last, np.nan) if m.values.shape[1] else last
    key = np.where(np.isnan(key), -np.inf if descending else np.inf, key)
    order = np.argsort(-key if descending else key, kind="stable")
    return order


def _to_series(m: SeriesMatrix, grid: StepGrid) -> list[dict[str, Any]]:
    times = [format_ts(int(t)) for t in grid.times()]
    out = []
    for labels, vals, pres in zip(m.labels, m.values, m.present, strict=True):
        idx = np.flatnonzero(pres)
        if len(idx) == 0:
            continue
        out.append({"metric": labels, "values": [[times[j], format_value(float(vals[j]))] for j in idx.tolist()]})
    if not m.ordered:
        out.sort(key=lambda s: sorted(s["metric"].items()))
    return out


def _empty(columns: list[str]) -> pa.Table:
    from loglake.model import ENTRY_SCHEMA

    return ENTRY_SCHEMA.empty_table().select(columns)
