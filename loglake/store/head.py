"""The head: one tenant's recent entries in memory as Arrow record batches, queryable at once."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from loglake.model import ENTRY_SCHEMA
from loglake.store.block import _isin_sorted


class Head:
    """Unsorted record batches of one tenant, in arrival order; sorted only when flushed to a block."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        # (batch, min ts, max ts); replaced, never mutated, so a reader's snapshot never changes under it.
        self.parts: list[tuple[pa.RecordBatch, int, int]] = []
        self.rows = 0
        self.line_bytes = 0
        self.created = time.monotonic()
        self.min_ts = np.iinfo(np.int64).max
        self.max_ts = np.iinfo(np.int64).min

    def append(self, batch: pa.RecordBatch, line_bytes: int) -> None:
        """Add a batch of ENTRY_SCHEMA rows."""
        if batch.num_rows == 0:
            return
        ts = batch.column(1).to_numpy()
        lo, hi = int(ts.min()), int(ts.max())
        self.min_ts = min(self.min_ts, lo)
        self.max_ts = max(self.max_ts, hi)
        self.parts = [*self.parts, (batch, lo, hi)]
        self.rows += batch.num_rows
        self.line_bytes += line_bytes

    def to_table(self) -> pa.Table:
        """Return all rows as one table (unsorted)."""
        return pa.Table.from_batches([b for b, _, _ in self.parts], ENTRY_SCHEMA)

    def snapshot(self) -> list[tuple[pa.RecordBatch, int, int]]:
        """Return the batches with their time ranges, as of now."""
        return self.parts


def read_batch(batch: pa.RecordBatch, stream_ids: np.ndarray, start: int, end: int, columns: list[str]) -> pa.Table:
    """Return a head batch's rows of `stream_ids` (sorted) with start <= ts < end, as a table of `columns`."""
    sid = batch.column(0).to_numpy()
    ts = batch.column(1).to_numpy()
    mask = (ts >= start) & (ts < end) & _isin_sorted(sid, stream_ids)
    picked = batch if mask.all() else batch.filter(pa.array(mask))
    return pa.Table.from_batches([picked]).select(columns)
