"""The query engine: runs parsed LogQL against the store, columnar from block to result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglake.logql import plan as qp
from loglake.logql.errors import QueryError
from loglake.logql.results import QueryStats, format_ts, format_value, streams_result
from loglake.logql.windows import StepGrid, window_sums
from loglake.model import LabelMatcher, LabelSet

NS = 1_000_000_000
MAX_POINTS_PER_SERIES = 11_000


class StoreReader(Protocol):
    """What the engine needs from the store."""

    def match_streams(
        self, tenant: str, matchers: list[LabelMatcher], start: int, end: int
    ) -> dict[int, LabelSet]: ...  # pragma: no cover

    def all_streams(self, tenant: str, start: int, end: int) -> dict[int, LabelSet]: ...  # pragma: no cover

    def read(
        self, tenant: str, stream_ids: np.ndarray, start: int, end: int, columns: list[str]
    ) -> list[pa.Table]: ...  # pragma: no cover


@dataclass
class _Selected:
    """Entries that passed the selector and the line filters."""

    streams: dict[int, LabelSet]
    rows: pa.Table


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
        if isinstance(parsed, qp.LogQuery):
            self._check_limit(limit)
            stats = QueryStats()
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
        stats = QueryStats()
        # Loki aligns the evaluation times to multiples of the step.
        first = (start // step) * step
        last = -((-end) // step) * step
        series = self._metric(tenant, parsed, StepGrid(first, last, step), stats)
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
        stats = QueryStats()
        series = self._metric(tenant, parsed, StepGrid(at, at, 0), stats)
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

    def _streams(self, tenant: str, query: str | None, start: int, end: int) -> dict[int, LabelSet]:
        if not query:
            return self.store.all_streams(tenant, start, end)
        return self.store.match_streams(tenant, qp.parse_selector(query), start, end)

    def _select(
        self, tenant: str, q: qp.LogQuery, start: int, end: int, columns: list[str], stats: QueryStats
    ) -> _Selected:
        """Read the selected streams' entries in [start, end) and apply the line filters."""
        streams = self.store.match_streams(tenant, q.matchers, start, end)
        ids = np.fromiter(streams, dtype=np.int64, count=len(streams))
        need = list(dict.fromkeys(["stream_id", "ts", "line", *columns]))
        tables = self.store.read(tenant, ids, start, end, need)
        rows = pa.concat_tables(tables) if tables else _empty(need)
        stats.lines_processed += rows.num_rows
        stats.bytes_processed += int(pc.sum(pc.binary_length(rows.column("line"))).as_py() or 0)
        if q.line_filters and rows.num_rows:
            mask = qp.line_filter_mask(q.line_filters, rows.column("line"))
            rows = rows.filter(pa.array(mask))
        stats.post_filter_lines += rows.num_rows
        return _Selected(streams, rows)

    def _log_query(
        self, tenant: str, q: qp.LogQuery, start: int, end: int, limit: int, direction: str, stats: QueryStats
    ) -> list[dict[str, Any]]:
        sel = self._select(tenant, q, start, end, ["metadata"], stats)
        rows = sel.rows
        n = rows.num_rows
        if n == 0 or limit == 0:
            return []
        ts = rows.column("ts").to_numpy()
        sid = rows.column("stream_id").to_numpy()
        k = min(limit, n)
        key = -ts if direction == "backward" else ts
        if k < n:
            candidates = np.argpartition(key, k - 1)[:k]
        else:
            candidates = np.arange(n)
        order = candidates[np.lexsort((sid[candidates], key[candidates]))]
        picked = rows.take(pa.array(order))
        stats.entries_returned += picked.num_rows
        return streams_result(picked, sel.streams, direction)

    # ---- metric queries ---------------------------------------------------------------------------------------

    def _metric(self, tenant: str, expr: qp.MetricQuery, grid: StepGrid, stats: QueryStats) -> list[dict[str, Any]]:
        if isinstance(expr, qp.VectorAgg):
            inner = self._range_agg(tenant, expr.inner, grid, stats)
            return _aggregate(expr, inner, grid)
        return _to_series(self._range_agg(tenant, expr, grid, stats), grid)

    def _range_agg(self, tenant: str, r: qp.RangeAgg, grid: StepGrid, stats: QueryStats) -> _SeriesMatrix:
        times = grid.times()
        start = int(times[0]) - r.range_ns - r.offset_ns + 1
        end = int(times[-1]) - r.offset_ns + 1
        columns = ["metadata"]
        sel = self._select(tenant, r.query, max(start, 0), end, columns, stats)
        rows = sel.rows
        series_idx, labels = _series_of(rows, sel.streams)
        ts = rows.column("ts").to_numpy()
        if r.func in ("bytes_over_time", "bytes_rate"):
            values = pc.binary_length(rows.column("line")).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            values = np.ones(len(ts), dtype=np.float64)
        sums, counts = window_sums(series_idx, ts, values, len(labels), grid, r.range_ns, r.offset_ns)
        if r.func in ("rate", "bytes_rate"):
            sums = sums / (r.range_ns / NS)
        return _SeriesMatrix(labels, sums, counts > 0)


@dataclass
class _SeriesMatrix:
    """Per-series values at each step; `present` marks steps that have a value."""

    labels: list[dict[str, str]]
    values: np.ndarray
    present: np.ndarray


def _series_of(rows: pa.Table, streams: dict[int, LabelSet]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Return each row's series index and the series' labels (stream labels plus structured metadata)."""
    n = rows.num_rows
    sid = rows.column("stream_id").to_numpy()
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    meta = rows.column("metadata")
    has_meta = pc.is_valid(meta).to_numpy(zero_copy_only=False) if meta.null_count < n else np.zeros(n, bool)
    if has_meta.any():
        import polars as pl

        meta_hash = pl.from_arrow(meta.combine_chunks()).hash().to_numpy().astype(np.int64)
        meta_hash[~has_meta] = 0
    else:
        meta_hash = np.zeros(n, dtype=np.int64)
    keys = np.empty(n, dtype=[("sid", np.int64), ("meta", np.int64)])
    keys["sid"] = sid
    keys["meta"] = meta_hash
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    labels = []
    metas = meta.take(pa.array(first)).to_pylist()
    for j, m in zip(range(len(uniq)), metas, strict=True):
        d = dict(streams[int(uniq[j]["sid"])])
        if m:
            d.update(dict(m))
        labels.append(d)
    return inverse.reshape(-1).astype(np.int64), labels


def _aggregate(agg: qp.VectorAgg, inner: _SeriesMatrix, grid: StepGrid) -> list[dict[str, Any]]:
    """Apply sum/count/avg/min/max with by/without over the inner series at every step."""
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, labels in enumerate(inner.labels):
        if agg.without:
            key = tuple(sorted((k, v) for k, v in labels.items() if k not in agg.grouping))
        else:
            key = tuple(sorted((k, v) for k, v in labels.items() if k in (agg.grouping or ())))
        groups.setdefault(key, []).append(i)
    out_labels, out_values, out_present = [], [], []
    for key, members in groups.items():
        vals = inner.values[members]
        pres = inner.present[members]
        present = pres.any(axis=0)
        if agg.op == "sum":
            v = np.where(pres, vals, 0).sum(axis=0)
        elif agg.op == "count":
            v = pres.sum(axis=0).astype(np.float64)
        elif agg.op == "avg":
            v = np.where(pres, vals, 0).sum(axis=0) / np.maximum(pres.sum(axis=0), 1)
        elif agg.op == "min":
            v = np.where(pres, vals, np.inf).min(axis=0)
        elif agg.op == "max":
            v = np.where(pres, vals, -np.inf).max(axis=0)
        else:
            raise QueryError(400, f"vector aggregation {agg.op} is not supported yet")
        out_labels.append(dict(key))
        out_values.append(v)
        out_present.append(present)
    if not out_labels:
        return []
    return _to_series(_SeriesMatrix(out_labels, np.array(out_values), np.array(out_present)), grid)


def _to_series(m: _SeriesMatrix, grid: StepGrid) -> list[dict[str, Any]]:
    times = [format_ts(int(t)) for t in grid.times()]
    out = []
    for labels, vals, pres in zip(m.labels, m.values, m.present, strict=True):
        idx = np.flatnonzero(pres)
        if len(idx) == 0:
            continue
        out.append({"metric": labels, "values": [[times[j], format_value(float(vals[j]))] for j in idx.tolist()]})
    out.sort(key=lambda s: sorted(s["metric"].items()))
    return out


def _empty(columns: list[str]) -> pa.Table:
    from loglake.model import ENTRY_SCHEMA

    return ENTRY_SCHEMA.empty_table().select(columns)
