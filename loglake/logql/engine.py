"""The query engine: runs parsed LogQL against the store, columnar from block to result."""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglake.logql import pipeline
from loglake.logql import plan as qp
from loglake.logql.errors import QueryError
from loglake.logql.pipeline import Frame, Hints, make_hints, needs_line
from loglake.logql.printer import go_duration
from loglake.logql.results import QueryStats, format_ts, format_value
from loglake.logql.series import SeriesMatrix, binary, label_replace
from loglake.logql.windows import StepGrid, step_span, window_sums
from loglake.model import LabelMatcher, LabelSet, MatchOp
from loglake.store.store import Piece

NS = 1_000_000_000
T = TypeVar("T")
MAX_POINTS_PER_SERIES = 11_000
METRIC_BATCH_ROWS = 32 * 1024  # metric queries read up to this many rows of a block at a time
# Log queries read pieces growing from LOG_FIRST_ROWS to LOG_MOST_ROWS rows: a limit query often stops after the
# first, a full scan pays little per-piece overhead.
LOG_FIRST_ROWS = 8 * 1024
LOG_MOST_ROWS = 64 * 1024
PREFILTER_MIN_ROWS = 256  # fewer rows are labelled in one pass
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

    def pieces(
        self, tenant: str, stream_ids: np.ndarray, start: int, end: int, batch_rows: int = 0
    ) -> list[Piece]: ...  # pragma: no cover


class QueryEngine:
    """Answers Loki's query endpoints for one store."""

    def __init__(self, store: StoreReader, limits: Any) -> None:
        self.store = store
        self.limits = limits

    # ---- entry points -----------------------------------------------------------------------------------------

    def query_range(
        self,
        tenant: str,
        query: str,
        start: int,
        end: int,
        step: int,
        interval: int,
        limit: int,
        direction: str,
        categorize: bool = False,
    ) -> dict[str, Any]:
        """Answer `/loki/api/v1/query_range`: streams for a log query, a matrix for a metric query.

        With `categorize` (Loki's categorize-labels encoding flag) a stream holds only stream labels and each entry
        carries its structured metadata and parsed labels as a third element.
        """
        parsed = qp.parse(query)
        self._check_length(start, end)
        if isinstance(parsed, qp.LogQuery):
            self._check_limit(limit)
            stats = self._stats()
            result = self._log_query(tenant, parsed, start, end, limit, direction, stats, categorize)
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

    def _pieces(
        self, tenant: str, q: qp.LogQuery, start: int, end: int, batch_rows: int = 0
    ) -> tuple[dict[int, LabelSet], list[Piece]]:
        streams = self.store.match_streams(tenant, q.matchers, start, end)
        ids = np.fromiter(streams, dtype=np.int64, count=len(streams))
        return streams, self.store.pieces(tenant, ids, start, end, batch_rows)

    def load_frame(
        self,
        piece: Piece,
        q: qp.LogQuery,
        streams: dict[int, LabelSet],
        stats: QueryStats | None = None,
        hints: Hints | None = None,
        need_line: bool = True,
        useless: Callable[[Piece], bool] | None = None,
    ) -> Frame:
        """Load a piece's rows, run the query's pipeline over them and return what is kept, with labels.

        `useless` is asked between steps: once it says the piece can no longer matter, no rows are returned.
        """
        stats = stats if stats is not None else QueryStats()
        hints = hints if hints is not None else Hints()
        if time.perf_counter() > stats.deadline:
            raise QueryError(504, TIMEOUT_MESSAGE)
        if useless is not None and useless(piece):
            return _empty_frame(streams)
        need_line = need_line or bool(q.line_filters) or needs_line(q.stages)
        need_meta = bool(q.label_filters or q.stages) or not hints.no_labels
        # Filters that run on load read their columns first; the other columns are read only if rows are left.
        columns = ["stream_id", "ts"]
        if q.line_filters:
            columns.append("line")
        if q.label_filters:
            columns.append("metadata")
        if not q.line_filters and not q.label_filters:
            columns += ["metadata"] if need_meta else []
            columns += ["line"] if need_line else []
        late = [c for c, needed in (("metadata", need_meta), ("line", need_line)) if needed and c not in columns]
        rows = piece.load(columns)
        n = rows.num_rows
        with stats.lock:
            stats.lines_processed += n
            if piece.in_head:
                stats.head_lines += n
            else:
                stats.blocks_read += 1
        keep: np.ndarray | None = None
        if q.line_filters and n:
            keep = qp.line_filter_mask(q.line_filters, rows.column("line"))
        if q.label_filters and n:
            probe = Frame(rows, streams)
            keep = np.ones(n, dtype=bool) if keep is None else keep
            for f in q.label_filters:
                keep &= pipeline.filter_mask(f, probe, keep.copy())
        if late and (keep is None or keep.any()):
            extra = piece.load(late)
            for c in late:
                rows = rows.append_column(c, extra.column(c))
        if "line" in rows.column_names:
            nbytes = int(pc.sum(pc.binary_length(rows.column("line"))).as_py() or 0)
            with stats.lock:
                stats.bytes_processed += nbytes
                if piece.in_head:
                    stats.head_bytes += nbytes
        if keep is not None:
            rows = rows.filter(pa.array(keep))
        if useless is not None and useless(piece):
            return _empty_frame(streams)
        prefix = pipeline.prefilter_items(q.stages) if hints.wanted is None and not hints.no_labels else None
        if prefix is not None and rows.num_rows >= PREFILTER_MIN_ROWS:
            # Pick the rows with a pass that parses only the labels the filters read; label them all after.
            probe = pipeline.run(Frame(rows, streams), prefix, pipeline.prefilter_hints(prefix))
            if probe.n < rows.num_rows:
                rows = rows.take(pa.array(probe.row))
            if useless is not None and useless(piece):
                return _empty_frame(streams)
        frame = pipeline.run(Frame(rows, streams), q.stages, hints)
        with stats.lock:
            stats.post_filter_lines += frame.n
        return frame

    def _log_query(
        self,
        tenant: str,
        q: qp.LogQuery,
        start: int,
        end: int,
        limit: int,
        direction: str,
        stats: QueryStats,
        categorize: bool = False,
    ) -> list[dict[str, Any]]:
        """Return the first `limit` entries in `direction`, reading pieces newest-first (or oldest-first) and
        stopping once no remaining piece can hold a better entry."""
        if limit == 0:
            return []
        streams, pieces = self._pieces(tenant, q, start, end)
        backward = direction == "backward"
        pieces.sort(key=lambda p: -p.max_ts if backward else p.min_ts)
        pieces = _grow(pieces, LOG_FIRST_ROWS, LOG_MOST_ROWS)
        # A bare selector decides on (stream, time) alone: lines and metadata are read only for the entries returned.
        light = not (q.line_filters or q.label_filters or q.stages)
        frames: list[Frame] = []
        used: list[Piece] = []
        kept: list[pa.Table] = []
        kept_rows = 0
        bound: int | None = None
        hints = Hints(no_labels=True) if light else Hints()

        def useless(piece: Piece) -> bool:
            # Pieces worked on ahead stop early once the entries found so far beat every row they could hold.
            return bound is not None and (piece.max_ts < bound if backward else piece.min_ts > bound)

        load = partial(
            self.load_frame, q=q, streams=streams, stats=stats, hints=hints, need_line=not light, useless=useless
        )
        # One piece a worker: a limit query often stops after the first few.
        for piece, frame in _scan(pieces, load, ahead=_POOL._max_workers or 2):
            if useless(piece):
                break
            if not frame.n:
                continue
            rows = pa.table(
                {
                    "frame": np.full(frame.n, len(frames), dtype=np.int64),
                    "row": np.arange(frame.n, dtype=np.int64),
                    "stream_id": frame.sid,
                    "ts": frame.ts,
                }
            )
            frames.append(frame)
            used.append(piece)
            kept.append(rows)
            kept_rows += rows.num_rows
            if kept_rows >= limit:
                best = _top(pa.concat_tables(kept), limit, backward)
                kept, kept_rows = [best], best.num_rows
                bound = best.column("ts")[best.num_rows - 1].as_py()
        if not kept:
            return []
        picked = _top(pa.concat_tables(kept), limit, backward)
        stats.entries_returned += picked.num_rows
        # Labels are worked out only for the entries returned.
        registry = _Registry(None, False, False, keep_empty=True)
        which = picked.column("frame").to_numpy()
        rows_in = picked.column("row").to_numpy()
        series = np.empty(picked.num_rows, dtype=np.int64)
        lines: list[Any] = [None] * picked.num_rows
        categories: list[Any] = [None] * picked.num_rows if categorize else []
        for f in np.unique(which).tolist():
            at = np.flatnonzero(which == f)
            if light:
                full = used[f].load(["stream_id", "ts", "metadata", "line"])
                sub = Frame(full.take(pa.array(rows_in[at])), streams)
            else:
                sub = frames[f].take(rows_in[at])
            if categorize:
                for i, labels in zip(at.tolist(), sub.categorized_labels(), strict=True):
                    categories[i] = labels
            else:
                series[at] = registry.targets(sub)
            for i, line in zip(at.tolist(), sub.line.to_pylist() if sub.line is not None else [], strict=False):
                lines[i] = line
        if categorize:
            return _categorized_streams(picked.column("ts").to_pylist(), lines, categories)
        out = pa.table({"series": series, "ts": picked.column("ts"), "line": pa.array(lines, pa.string())})
        return _streams(out, registry.labels)

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
        if can_push_down(expr):
            # Loki groups the samples of `sum by (...) (count_over_time(...))` and the like while extracting them.
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
        """Evaluate a range aggregation at every step, piece by piece, into per-series (or per-group) rows.

        `group_by` is an outer `sum`'s grouping, pushed into the extraction as Loki does.
        """
        times = grid.times()
        start = int(times[0]) - r.range_ns - r.offset_ns + 1
        end = int(times[-1]) - r.offset_ns + 1
        streams, pieces = self._pieces(tenant, r.query, max(start, 0), end, METRIC_BATCH_ROWS)
        groups, without, no_labels = _extraction_grouping(r, group_by)
        extra: list[str] = []
        if r.unwrap is not None:
            extra.append(r.unwrap.label)
            for f in r.unwrap.post_filters:
                extra.extend(pipeline.filter_names(f))
        hints = make_hints(r.query.stages, extra, groups, without, no_labels)
        by_bytes = r.func in ("bytes_over_time", "bytes_rate")
        registry = _Registry(groups, without, no_labels)
        summable = r.func in _SUMMABLE
        acc = _Accumulator(grid.count)
        samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def extract(piece: Piece) -> tuple[Frame, np.ndarray]:
            frame = self.load_frame(piece, r.query, streams, stats, hints, need_line=by_bytes)
            if r.unwrap is not None and frame.n:
                return pipeline.unwrap(frame, r.unwrap)
            if by_bytes and frame.line is not None:
                return frame, pc.binary_length(frame.line).to_numpy(zero_copy_only=False).astype(np.float64)
            return frame, np.ones(frame.n, dtype=np.float64)

        for _, (frame, values) in _scan(pieces, extract):
            if not frame.n:
                continue
            _check_errors(frame)
            target = registry.targets(frame)
            if summable:
                local, inverse = np.unique(target, return_inverse=True)
                sums, counts = window_sums(
                    inverse.reshape(-1), frame.ts, values, len(local), grid, r.range_ns, r.offset_ns
                )
                acc.add(local, sums, counts, len(registry.labels))
            else:
                samples.append((target, frame.ts, values))
        total = len(registry.labels)
        if not summable:
            values, present = _window_functions(r, samples, total, grid)
            return SeriesMatrix(registry.labels, values, present)
        sums, counts = acc.result(total)
        seconds = r.range_ns / NS
        if r.func == "count_over_time" or (r.func == "rate" and r.unwrap is None):
            values = counts.astype(np.float64)
        else:
            values = sums
        if r.func in ("rate", "bytes_rate"):
            values = values / seconds
        elif r.func == "avg_over_time":
            values = sums / np.maximum(counts, 1)
        return SeriesMatrix(registry.labels, values, counts > 0)


# Range functions whose value is a sum over the window (so pieces add up), and those an outer `sum` may group.
_SUMMABLE = ("count_over_time", "rate", "bytes_over_time", "bytes_rate", "sum_over_time", "avg_over_time")
_PUSHDOWN = ("count_over_time", "rate", "bytes_over_time", "bytes_rate", "sum_over_time")


_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="loglake-scan")


def _empty_frame(streams: dict[int, LabelSet]) -> Frame:
    return Frame(pa.table({"stream_id": pa.array([], pa.int64()), "ts": pa.array([], pa.int64())}), streams)


def _grow(pieces: list[Piece], first: int, most: int) -> list[Piece]:
    """Join consecutive block pieces (in scan order) into pieces of at most first, first, 2 * first, 2 * first,
    4 * first, ... `most` rows."""
    out: list[Piece] = []
    group: list[Piece] = []
    rows, size = 0, first
    for p in [*pieces, None]:
        if group and (p is None or p.in_head or rows + p.rows > size):
            out.append(group[0] if len(group) == 1 else _joined(group))
            group, rows = [], 0
            size = min(first << (len(out) // 2), most)
        if p is not None and p.in_head:
            out.append(p)
        elif p is not None:
            group.append(p)
            rows += p.rows
    return out


def _joined(group: list[Piece]) -> Piece:
    loads = [p.load for p in group]

    def load(columns: list[str]) -> pa.Table:
        return pa.concat_tables([one(columns) for one in loads])

    lo, hi = min(p.min_ts for p in group), max(p.max_ts for p in group)
    return Piece(lo, hi, load, in_head=False, rows=sum(p.rows for p in group))


def _scan(pieces: list[Piece], work: Callable[[Piece], T], ahead: int = 0) -> Iterator[tuple[Piece, T]]:
    """Yield (piece, work(piece)) in order while the next `ahead` pieces (default: two per worker) are worked on in
    parallel (Arrow, polars and numpy release the GIL); pieces not yet started when the consumer stops are
    cancelled."""
    ahead = ahead or 2 * (_POOL._max_workers or 2)
    it = iter(pieces)
    pending: deque[tuple[Piece, Future[T]]] = deque((p, _POOL.submit(work, p)) for p in itertools.islice(it, ahead))
    try:
        while pending:
            piece, future = pending.popleft()
            yield piece, future.result()
            # Only once the consumer asks for more: a limit query that has enough starts nothing new.
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, _POOL.submit(work, nxt)))
    finally:
        for _, future in pending:
            future.cancel()


def can_push_down(agg: qp.VectorAgg) -> bool:
    """Whether an outer vector aggregation's grouping goes into the range aggregation's extraction (Loki's rule)."""
    inner = agg.inner
    return agg.op == "sum" and isinstance(inner, qp.RangeAgg) and inner.grouping is None and inner.func in _PUSHDOWN


def _extraction_grouping(r: qp.RangeAgg, outer: qp.VectorAgg | None) -> tuple[list[str] | None, bool, bool]:
    """Return (groups, without, no_labels) for a range aggregation's samples, as Loki's extractor sets them."""
    groups: list[str] | None = None
    without = no_labels = False
    chosen = r.grouping
    if chosen is None and outer is not None:
        chosen = (tuple(outer.grouping or ()), outer.without)
    if chosen is not None:
        groups, without = list(chosen[0]), chosen[1]
        no_labels = not groups and not without
    if r.func == "absent_over_time":
        no_labels = True
    if r.unwrap is not None and (not groups or without):
        without = True
        groups = sorted([*(groups or []), r.unwrap.label])
    return groups, without, no_labels


def _check_errors(frame: Frame) -> None:
    """A metric query fails when a sample still carries `__error__` (Loki's pipeline error)."""
    errored = frame.has_error()
    if not errored.any():
        return
    row = int(np.flatnonzero(errored)[0])
    labels = frame.labels_of(row)
    err = labels.get("__error__", "")
    text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    raise QueryError(
        400,
        f"pipeline error: '{err}' for series: '{text}'.\n"
        f'Use a label filter to intentionally skip this error. (e.g | __error__!="{err}").\n'
        'To skip all potential errors you can match empty errors.(e.g __error__="")\n'
        'The label filter can also be specified after unwrap. (e.g | unwrap latency | __error__="" )\n',
    )


def _window_functions(
    r: qp.RangeAgg, samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], total: int, grid: StepGrid
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate min/max/first/last/stddev/stdvar/quantile/rate_counter over each series' samples per step window."""
    steps = grid.count
    values = np.zeros((total, steps))
    present = np.zeros((total, steps), dtype=bool)
    if not samples:
        return values, present
    target = np.concatenate([s[0] for s in samples])
    ts = np.concatenate([s[1] for s in samples])
    vals = np.concatenate([s[2] for s in samples])
    order = np.lexsort((ts, target))
    target, ts, vals = target[order], ts[order], vals[order]
    ends = grid.times() - r.offset_ns
    bounds = np.searchsorted(target, np.arange(total + 1))
    func = _WINDOW_FUNCS[r.func]
    for s in range(total):
        a, b = bounds[s], bounds[s + 1]
        if a == b:
            continue
        t, v = ts[a:b], vals[a:b]
        lo = np.searchsorted(t, ends - r.range_ns, side="right")
        hi = np.searchsorted(t, ends, side="right")
        for j in np.flatnonzero(hi > lo).tolist():
            values[s, j] = func(t[lo[j] : hi[j]], v[lo[j] : hi[j]], int(ends[j]), r)
            present[s, j] = True
    return values, present


def _quantile(v: np.ndarray, q: float) -> float:
    if np.isnan(q):
        return float("nan")
    if q < 0:
        return float("-inf")
    if q > 1:
        return float("inf")
    ordered = np.sort(v)
    rank = q * (len(ordered) - 1)
    lower = max(0, int(np.floor(rank)))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - np.floor(rank)
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def _variance(v: np.ndarray) -> float:
    return float(np.mean((v - v.mean()) ** 2))


def _rate_counter(t: np.ndarray, v: np.ndarray, end: int, range_ns: int) -> float:
    """Prometheus' extrapolated rate of a counter over the window ending at `end`."""
    if len(v) < 2:
        return 0.0
    result = float(v[-1] - v[0])
    drops = v[1:] < v[:-1]
    result += float(v[:-1][drops].sum())
    if v[0] < 0:
        result += 0.0
    to_start = (int(t[0]) - (end - range_ns)) / 1e9
    to_end = (end - int(t[-1])) / 1e9
    sampled = (int(t[-1]) - int(t[0])) / 1e9
    if sampled == 0:
        return 0.0
    average = sampled / (len(v) - 1)
    threshold = average * 1.1
    if to_start >= threshold:
        to_start = average / 2
    to_zero = to_start
    if result > 0 and v[0] >= 0:
        to_zero = sampled * (v[0] / result)
    to_start = min(to_start, to_zero)
    if to_end >= threshold:
        to_end = average / 2
    result *= (sampled + to_start + to_end) / sampled
    return result / (range_ns / NS)


def _max(v: np.ndarray) -> float:
    return float(np.nan if np.isnan(v).all() else np.nanmax(v))


def _min(v: np.ndarray) -> float:
    return float(np.nan if np.isnan(v).all() else np.nanmin(v))


_WINDOW_FUNCS = {
    "max_over_time": lambda t, v, end, r: _max(v),
    "min_over_time": lambda t, v, end, r: _min(v),
    "first_over_time": lambda t, v, end, r: float(v[0]),
    "last_over_time": lambda t, v, end, r: float(v[-1]),
    "stdvar_over_time": lambda t, v, end, r: _variance(v),
    "stddev_over_time": lambda t, v, end, r: float(np.sqrt(_variance(v))),
    "quantile_over_time": lambda t, v, end, r: _quantile(v, float(r.param if r.param is not None else 0)),
    "rate_counter": lambda t, v, end, r: _rate_counter(t, v, end, r.range_ns),
}


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


def _streams(rows: pa.Table, labels: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Group picked entries (already in output order) into result streams by their label set."""
    series = rows.column("series").to_pylist()
    tss = rows.column("ts").to_pylist()
    lines = rows.column("line").to_pylist()
    groups: dict[int, list[list[str]]] = {}
    for s, ts, line in zip(series, tss, lines, strict=True):
        values = groups.get(s)
        if values is None:
            values = groups[s] = []
        values.append([str(ts), line if line is not None else ""])
    out = [{"stream": dict(sorted(labels[s].items())), "values": v} for s, v in groups.items()]
    out.sort(key=lambda st: list(st["stream"].items()))
    return out


def _categorized_streams(
    tss: list[int], lines: list[str | None], categories: list[tuple[dict[str, str], dict[str, dict[str, str]]]]
) -> list[dict[str, Any]]:
    """Group picked entries by stream labels only; each value carries its structured metadata and parsed labels."""
    groups: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for ts, line, (stream, extras) in zip(tss, lines, categories, strict=True):
        groups.setdefault(tuple(sorted(stream.items())), []).append([str(ts), line if line is not None else "", extras])
    return [{"stream": dict(key), "values": values} for key, values in sorted(groups.items())]


class _Registry:
    """Numbers the label sets of samples or entries: by all labels, by `by` labels, or without some."""

    def __init__(self, groups: list[str] | None, without: bool, no_labels: bool, keep_empty: bool = False) -> None:
        self.names = [] if no_labels else groups
        self.without = without and not no_labels
        self.keep_empty = keep_empty
        self.index: dict[tuple[tuple[str, str], ...], int] = {}
        self.labels: list[dict[str, str]] = []
        self._by_stream: dict[int, int] = {}

    def targets(self, frame: Frame) -> np.ndarray:
        """Return each row's label-set number, registering new label sets."""
        by = self.names if (self.names is not None and not self.without) else None
        if frame.only_stream_labels(by):
            return self._stream_targets(frame)
        groups, first = frame.label_keys(by)
        local = np.empty(len(first), dtype=np.int64)
        for j, row in enumerate(first.tolist()):
            local[j] = self._register(frame.labels_of(row, self.names, self.without))
        return local[groups] if len(groups) else np.zeros(0, dtype=np.int64)

    def _stream_targets(self, frame: Frame) -> np.ndarray:
        """Targets when each row's labels are its stream's: one lookup per stream."""
        uniq, first, inverse = np.unique(frame.sid, return_index=True, return_inverse=True)
        local = np.empty(len(uniq), dtype=np.int64)
        for j, (sid, row) in enumerate(zip(uniq.tolist(), first.tolist(), strict=True)):
            t = self._by_stream.get(sid)
            if t is None:
                t = self._by_stream[sid] = self._register(frame.labels_of(row, self.names, self.without))
            local[j] = t
        return local[inverse.reshape(-1)]

    def _register(self, labels: dict[str, str]) -> int:
        if not self.keep_empty:
            labels = {k: v for k, v in labels.items() if v != ""}
        key = tuple(sorted(labels.items()))
        t = self.index.get(key)
        if t is None:
            t = self.index[key] = len(self.labels)
            self.labels.append(labels)
        return t


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
            # Ties go to the series whose labels sort first (Loki's are in map order, so no order is promised).
            idx = np.array(sorted(members, key=lambda i: sorted(inner.labels[i].items())))
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
