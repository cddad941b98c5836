"""Compaction: merge a time window's small blocks into one, stream group by stream group, in bounded memory."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loglake.model import ENTRY_SCHEMA
from loglake.store.block import (
    BlockInfo,
    BlockReader,
    BlockWriter,
    StreamRank,
    WrittenBlock,
    slice_edges,
    sort_order,
)


@dataclass
class CompactionPolicy:
    """Which blocks are merged, when, and how hard the result is compressed."""

    window_ns: int = 3600 * 1_000_000_000
    quiet_s: float = 5.0  # a window is merged once no new block has joined it for this long
    max_rows: int = 50_000_000  # blocks at least this large are left alone
    zstd_level: int = 12


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
    blocks: list[BlockInfo],
    reader_for: Callable[[BlockInfo], BlockReader],
    path: Path,
    zstd_level: int,
    rank: StreamRank | None = None,
) -> WrittenBlock:
    """Write the rows of `blocks` into one block at `path`, time slice by time slice (see block.py)."""
    ids = np.array(sorted({sid for b in blocks for sid in b.streams}), dtype=np.int64)
    start = min(b.min_ts for b in blocks)
    end = max(b.max_ts for b in blocks) + 1
    ts = np.concatenate([pq.read_table(reader_for(b).path, columns=["ts"]).column("ts").to_numpy() for b in blocks])
    edges = [start, *slice_edges(ts).tolist(), end]
    del ts
    writer = BlockWriter(path, ENTRY_SCHEMA, zstd_level)
    try:
        # Memory is bounded by one slice (about SLICE_ROWS rows), not by the blocks' size.
        for lo, hi in itertools.pairwise(edges):
            parts = []
            for b in blocks:
                reader = reader_for(b)
                groups = reader.row_groups(ids, lo, hi)
                if groups:
                    part = reader.read_groups(groups, ids, lo, hi, ENTRY_SCHEMA.names)
                    if part.num_rows:
                        parts.append(part)
            if parts:
                chunk = pa.concat_tables(parts)
                order, groups = sort_order(chunk) if rank is None else sort_order(chunk, rank)
                writer.write(chunk.take(pa.array(order)), groups)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
