"""Immutable Parquet blocks: one tenant's entries in time slices, each sorted by stream then time, read by row group.

A block is cut into time slices of about SLICE_ROWS rows; inside a slice rows are sorted by stream, then time,
and no row group crosses a slice. Streams are ordered by their labels (service_name first), not by id, so the
streams of one service sit side by side. The block's footer lists each row group's streams, and the row group's
statistics bound its time: a query for the newest lines of one service reads a few small row groups of the last
slice and stops.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loglake.store.files import fsync_path

ROW_GROUP_ROWS = 16 * 1024
SLICE_ROWS = 64 * 1024
ZSTD_LEVEL = 1
# Footer key: each row group's streams, as JSON {"ids": [sorted stream ids], "groups": [[positions in ids]...]}.
GROUP_STREAMS_KEY = b"loglake.row_group_streams"

# A row group ends where the streams' group (service) changes, once it has this many rows.
MIN_GROUP_ROWS = 2 * 1024
# Maps stream ids to sort ranks (equal ids, equal ranks); a rank's bits above GROUP_SHIFT number its group.
StreamRank = Callable[[np.ndarray], np.ndarray]
GROUP_SHIFT = 32


def stream_ranker(key: Callable[[int], tuple[Any, ...]]) -> StreamRank:
    """Return a StreamRank that orders stream ids by `key(stream_id)`; the key's first item is the group."""

    def rank(sid: np.ndarray) -> np.ndarray:
        ids, inverse = np.unique(sid, return_inverse=True)
        keys = [key(int(i)) for i in ids]
        order = sorted(range(len(ids)), key=keys.__getitem__)
        groups = {g: n for n, g in enumerate(sorted({k[0] for k in keys}))}
        ranks = np.empty(len(ids), dtype=np.int64)
        for pos, i in enumerate(order):
            ranks[i] = (groups[keys[i][0]] << GROUP_SHIFT) | pos
        return ranks[inverse]

    return rank


def _by_id(sid: np.ndarray) -> np.ndarray:
    """Rank streams by id, all in one group."""
    return np.unique(sid, return_inverse=True)[1].astype(np.int64)


def group_bounds(groups: np.ndarray) -> list[int]:
    """Row group cuts of sorted rows: at most ROW_GROUP_ROWS rows each, ending where the stream group changes
    once a group has MIN_GROUP_ROWS rows (so one service's rows share few row groups)."""
    n = len(groups)
    changes = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        limit = min(start + ROW_GROUP_ROWS, n)
        i = np.searchsorted(changes, start + MIN_GROUP_ROWS)
        bounds.append(int(changes[i]) if i < len(changes) and changes[i] < limit else limit)
    return bounds


@dataclass
class BlockStreamStats:
    """Rows, time range and line bytes of one stream inside one block."""

    stream_id: int
    rows: int
    min_ts: int
    max_ts: int
    line_bytes: int


@dataclass
class BlockInfo:
    """A block in the catalog."""

    block_id: str
    tenant: str
    path: str  # relative to the data directory
    min_ts: int
    max_ts: int
    rows: int
    size: int
    streams: dict[int, BlockStreamStats]


def new_block_id() -> str:
    """Return a new, time-ordered block id."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


def sort_order(table: pa.Table, rank: StreamRank = _by_id) -> tuple[np.ndarray, np.ndarray]:
    """Return the row order that sorts `table` by (stream rank, ts), and the sorted rows' stream groups."""
    ranks = rank(table.column("stream_id").to_numpy())
    order = np.lexsort((table.column("ts").to_numpy(), ranks))
    return order, ranks[order] >> GROUP_SHIFT


def slice_edges(ts: np.ndarray) -> np.ndarray:
    """Return the times that cut these entries into slices of about SLICE_ROWS rows (a slice starts at an edge)."""
    slices = len(ts) // SLICE_ROWS
    if slices <= 1:
        return np.zeros(0, dtype=np.int64)
    cuts = np.quantile(ts, np.linspace(0, 1, slices + 1)[1:-1], method="lower").astype(np.int64)
    return np.unique(cuts[cuts > ts.min()])


def slice_of(ts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return the slice number of each timestamp."""
    return np.searchsorted(edges, ts, side="right")


def stream_stats(sid: np.ndarray, ts: np.ndarray, lengths: np.ndarray) -> dict[int, BlockStreamStats]:
    """Per-stream rows, time range and line bytes of a block's rows (in any order)."""
    if len(sid) == 0:
        return {}
    order = np.lexsort((ts, sid))
    sid, ts, lengths = sid[order], ts[order], lengths[order]
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    ends = np.r_[starts[1:], len(sid)]
    byte_sums = np.add.reduceat(lengths, starts)
    return {
        int(sid[s]): BlockStreamStats(int(sid[s]), int(e - s), int(ts[s]), int(ts[e - 1]), int(b))
        for s, e, b in zip(starts, ends, byte_sums, strict=True)
    }


@dataclass
class WrittenBlock:
    """What writing a block produced: its size, time range and per-stream stats."""

    size: int
    rows: int
    min_ts: int
    max_ts: int
    streams: dict[int, BlockStreamStats]


class BlockWriter:
    """Writes a block from sorted chunks (one time slice each, or part of one); publishes it atomically."""

    def __init__(self, path: Path, schema: pa.Schema, zstd_level: int = ZSTD_LEVEL) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._tmp = path.with_suffix(".tmp")
        self._writer = pq.ParquetWriter(
            self._tmp,
            schema,
            compression="zstd",
            compression_level=zstd_level,
            use_dictionary=["stream_id"],
            write_statistics=["stream_id", "ts"],
            # Lengths apart from bytes compress better and faster than PLAIN's interleaved ones.
            column_encoding={"ts": "DELTA_BINARY_PACKED", "line": "DELTA_LENGTH_BYTE_ARRAY"},
            data_page_size=1 << 20,
        )
        self._sid: list[np.ndarray] = []
        self._ts: list[np.ndarray] = []
        self._len: list[np.ndarray] = []
        self._group_streams: list[list[int]] = []

    def write(self, chunk: pa.Table, groups: np.ndarray) -> None:
        """Append rows of one time slice sorted by (stream, ts), with their stream groups, cut by group_bounds."""
        for a, b in itertools.pairwise(group_bounds(groups)):
            self.write_group(chunk.slice(a, b - a))

    def write_group(self, part: pa.Table) -> None:
        """Append one row group (sorted rows of one time slice, at most ROW_GROUP_ROWS)."""
        sid = part.column("stream_id").to_numpy()
        self._group_streams.append(np.unique(sid).tolist())
        self._sid.append(sid)
        self._ts.append(part.column("ts").to_numpy())
        self._len.append(pc.binary_length(part.column("line")).to_numpy().astype(np.int64))
        self._writer.write_table(part, row_group_size=ROW_GROUP_ROWS)

    def close(self) -> WrittenBlock:
        """Finish the file, fsync it and rename it into place; return what was written."""
        ids = sorted({sid for group in self._group_streams for sid in group})
        pos = {sid: i for i, sid in enumerate(ids)}
        listed = {"ids": ids, "groups": [[pos[sid] for sid in group] for group in self._group_streams]}
        self._writer.add_key_value_metadata({GROUP_STREAMS_KEY: orjson.dumps(listed)})
        self._writer.close()
        fsync_path(self._tmp)
        os.replace(self._tmp, self.path)
        fsync_path(self.path.parent)
        sid, ts = np.concatenate(self._sid), np.concatenate(self._ts)
        stats = stream_stats(sid, ts, np.concatenate(self._len))
        return WrittenBlock(self.path.stat().st_size, len(sid), int(ts.min()), int(ts.max()), stats)

    def abort(self) -> None:
        """Drop a block that could not be finished."""
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def write_block(table: pa.Table, path: Path, zstd_level: int = ZSTD_LEVEL, rank: StreamRank = _by_id) -> WrittenBlock:
    """Write unsorted entries as a Parquet block of sorted time slices, atomically (temp, fsync, rename).

    Rows are gathered one row group at a time, so memory grows by a row group, not by a sorted copy.
    """
    # One contiguous copy: gathering from many small chunks costs far more than copying them once.
    table = table.combine_chunks()
    sid = table.column("stream_id").to_numpy()
    ts = table.column("ts").to_numpy()
    slices = slice_of(ts, slice_edges(ts))
    ranks = rank(sid)
    order = np.lexsort((ts, ranks, slices))
    groups = ranks[order] >> GROUP_SHIFT
    bounds = np.flatnonzero(np.r_[True, np.diff(slices[order]) != 0, True])
    writer = BlockWriter(path, table.schema, zstd_level)
    try:
        for a, b in itertools.pairwise(bounds):
            for x, y in itertools.pairwise(group_bounds(groups[a:b])):
                writer.write_group(table.take(pa.array(order[a + x : a + y])))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


class BlockReader:
    """Reads the rows of chosen streams and times from one block, skipping row groups by their statistics."""

    def __init__(self, path: Path) -> None:
        self.path = path
        first = pq.ParquetFile(path)
        meta = first.metadata
        names = first.schema_arrow.names
        # A ParquetFile must not be read by two threads at once: each thread opens its own, sharing the footer.
        self._local = threading.local()
        self._local.file = first
        self._meta = meta
        sid_col, ts_col = names.index("stream_id"), names.index("ts")
        self._groups: list[tuple[int, int, int, int]] = []
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            s, t = rg.column(sid_col).statistics, rg.column(ts_col).statistics
            self._groups.append((s.min, s.max, t.min, t.max))
        self._rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        # Blocks written before streams were listed in the footer fall back on the stream_id statistics.
        listed = (meta.metadata or {}).get(GROUP_STREAMS_KEY)
        self._streams: list[np.ndarray] | None = None
        if listed is not None:
            got = orjson.loads(listed)
            ids = np.asarray(got["ids"], dtype=np.int64)
            self._streams = [ids[np.asarray(group, dtype=np.int64)] for group in got["groups"]]

    def row_groups(self, stream_ids: np.ndarray, start: int, end: int) -> list[int]:
        """Return the row groups that may hold rows of `stream_ids` (sorted) with start <= ts < end."""
        chosen = []
        for i, (smin, smax, tmin, tmax) in enumerate(self._groups):
            if tmax < start or tmin >= end:
                continue
            lo = np.searchsorted(stream_ids, smin)
            if lo >= len(stream_ids) or stream_ids[lo] > smax:
                continue
            if self._streams is None or _isin_sorted(self._streams[i], stream_ids).any():
                chosen.append(i)
        return chosen

    def group_range(self, group: int) -> tuple[int, int]:
        """Return the (min, max) timestamp of a row group."""
        _, _, tmin, tmax = self._groups[group]
        return tmin, tmax

    def _file(self) -> pq.ParquetFile:
        f = getattr(self._local, "file", None)
        if f is None:
            f = self._local.file = pq.ParquetFile(self.path, metadata=self._meta)
        return f

    def group_rows(self, group: int) -> int:
        """Return the number of rows in a row group."""
        return self._rows[group]

    def read_group(self, group: int, stream_ids: np.ndarray, start: int, end: int, columns: list[str]) -> pa.Table:
        """Return one row group's rows of `stream_ids` (sorted int64) with start <= ts < end, as `columns`."""
        return self.read_groups([group], stream_ids, start, end, columns)

    def read_groups(
        self, groups: list[int], stream_ids: np.ndarray, start: int, end: int, columns: list[str]
    ) -> pa.Table:
        """Return the rows of `stream_ids` with start <= ts < end from some row groups, as `columns`."""
        need = list(dict.fromkeys(["stream_id", "ts", *columns]))
        table = self._file().read_row_groups(groups, columns=need, use_threads=False)
        sid = table.column("stream_id").to_numpy()
        ts = table.column("ts").to_numpy()
        mask = (ts >= start) & (ts < end) & _isin_sorted(sid, stream_ids)
        if not mask.all():
            table = table.filter(pa.array(mask))
        return table.select(columns)


def _isin_sorted(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Vectorised membership test of `values` in the sorted array `sorted_ids`."""
    if len(sorted_ids) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(sorted_ids, values)
    pos[pos >= len(sorted_ids)] = 0
    return sorted_ids[pos] == values
