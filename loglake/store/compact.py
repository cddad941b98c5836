"""Compaction: merge a time window's small blocks into one, stream group by stream group, in bounded memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from loglake.model import ENTRY_SCHEMA
from loglake.store.block import BlockInfo, BlockReader, BlockWriter, WrittenBlock, sort_order

CHUNK_ROWS = 128 * 1024  # rows merged at a time; memory is bounded by this, not by the blocks' size


@dataclass
class CompactionPolicy:
    """Which blocks are merged, when, and how hard the result is compressed."""

    window_ns: int = 3600 * 1_000_000_000
    quiet_s: float = 5.0  # a window is merged once no new block has joined it for this long
    max_rows: int = 50_000_000  # blocks at least this large are left alone
    zstd_level: int = 9


def plan_windows(blocks: list[BlockInfo], policy: CompactionPolicy) -> list[list[BlockInfo]]:
    """Group a tenant's blocks by time window; return the groups worth merging (two or more small blocks)."""
    windows: dict[int, list[BlockInfo]] = {}
    for b in blocks:
        w = b.min_ts // policy.window_ns
        if b.max_ts // policy.window_ns == w and b.rows < policy.max_rows:
            windows.setdefault(w, []).append(b)
    groups = []
    for group in windows.values():
        group.sort(key=lambda b: b.block_id)
        total = 0
        picked = []
        for b in group:
            if total + b.rows > policy.max_rows:
                break
            picked.append(b)
            total += b.rows
        if len(picked) >= 2:
            groups.append(picked)
    return groups


def merge_blocks(
    blocks: list[BlockInfo], reader_for: Callable[[BlockInfo], BlockReader], path: Path, zstd_level: int
) -> WrittenBlock:
    """Write the rows of `blocks` into one block at `path`, sorted by (stream_id, ts)."""
    rows_per_stream: dict[int, int] = {}
    for b in blocks:
        for sid, stats in b.streams.items():
            rows_per_stream[sid] = rows_per_stream.get(sid, 0) + stats.rows
    start = min(b.min_ts for b in blocks)
    end = max(b.max_ts for b in blocks) + 1
    writer = BlockWriter(path, ENTRY_SCHEMA, zstd_level)
    try:
        for ids in _stream_chunks(rows_per_stream):
            parts = []
            for b in blocks:
                reader = reader_for(b)
                for g in reader.row_groups(ids, start, end):
                    part = reader.read_group(g, ids, start, end, ENTRY_SCHEMA.names)
                    if part.num_rows:
                        parts.append(part)
            if parts:
                chunk = pa.concat_tables(parts)
                writer.write(chunk.take(pa.array(sort_order(chunk))))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _stream_chunks(rows_per_stream: dict[int, int]) -> list[np.ndarray]:
    """Split the sorted stream ids into consecutive groups of about CHUNK_ROWS rows."""
    chunks: list[np.ndarray] = []
    current: list[int] = []
    rows = 0
    for sid in sorted(rows_per_stream):
        if current and rows + rows_per_stream[sid] > CHUNK_ROWS:
            chunks.append(np.array(current, dtype=np.int64))
            current, rows = [], 0
        current.append(sid)
        rows += rows_per_stream[sid]
    if current:
        chunks.append(np.array(current, dtype=np.int64))
    return chunks
