"""The label index and block catalog: streams and their labels, label postings, blocks; kept in SQLite."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from loglake.model import LabelMatcher, LabelSet
from loglake.store.block import BlockInfo, BlockStreamStats

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    tenant TEXT NOT NULL, stream_id INTEGER NOT NULL, labels TEXT NOT NULL,
    PRIMARY KEY (tenant, stream_id));
CREATE TABLE IF NOT EXISTS blocks (
    block_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, path TEXT NOT NULL,
    min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL, rows INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS block_streams (
    block_id TEXT NOT NULL, stream_id INTEGER NOT NULL, rows INTEGER NOT NULL,
    min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL, line_bytes INTEGER NOT NULL,
    PRIMARY KEY (block_id, stream_id));
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass
class TenantStreams:
    """One tenant's streams in memory: labels by id, postings by label name and value, time ranges."""

    labels: dict[int, LabelSet] = field(default_factory=dict)
    postings: dict[str, dict[str, set[int]]] = field(default_factory=dict)
    min_ts: dict[int, int] = field(default_factory=dict)
    max_ts: dict[int, int] = field(default_factory=dict)

    def add(self, sid: int, labels: LabelSet) -> bool:
        """Add a stream; return True when it is new."""
        if sid in self.labels:
            return False
        self.labels[sid] = labels
        for name, value in labels:
            self.postings.setdefault(name, {}).setdefault(value, set()).add(sid)
        return True

    def extend_range(self, sid: int, lo: int, hi: int) -> None:
        """Widen a stream's known time range to include [lo, hi]."""
        cur = self.min_ts.get(sid)
        if cur is None or lo < cur:
            self.min_ts[sid] = lo
        cur = self.max_ts.get(sid)
        if cur is None or hi > cur:
            self.max_ts[sid] = hi

    def match(self, matchers: Sequence[LabelMatcher]) -> set[int]:
        """Return the ids of the streams that every matcher keeps."""
        result: set[int] | None = None
        # Matchers that reject "" narrow fastest; apply them first.
        for m in sorted(matchers, key=lambda m: m.matches_empty()):
            by_value = self.postings.get(m.name, {})
            values = list(by_value)
            ids: set[int] = set()
            if values:
                mask = m.matches_values(pa.array(values, pa.string()))
                for value, keep in zip(values, mask, strict=True):
                    if keep:
                        ids |= by_value[value]
            if m.matches_empty():
                having = set().union(*by_value.values()) if by_value else set()
                universe = result if result is not None else set(self.labels)
                ids |= universe - having
            result = ids if result is None else result & ids
            if not result:
                return set()
        return result if result is not None else set(self.labels)

    def in_range(self, ids: Iterable[int], start: int, end: int) -> list[int]:
        """Return those of `ids` that have data with start <= ts < end (by their known time range)."""
        return [s for s in ids if self.min_ts.get(s, end) < end and self.max_ts.get(s, start - 1) >= start]


class Index:
    """Streams, postings and the block catalog of all tenants; persisted in SQLite, served from memory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self.tenants: dict[str, TenantStreams] = {}
        self.blocks: dict[str, list[BlockInfo]] = {}
        self._persisted: set[tuple[str, int]] = set()
        self._load()

    def _load(self) -> None:
        for tenant, sid, labels in self._db.execute("SELECT tenant, stream_id, labels FROM streams"):
            self.tenant(tenant).add(sid, tuple((k, v) for k, v in orjson.loads(labels)))
            self._persisted.add((tenant, sid))
        stats: dict[str, dict[int, BlockStreamStats]] = {}
        for bid, sid, rows, lo, hi, nbytes in self._db.execute(
            "SELECT block_id, stream_id, rows, min_ts, max_ts, line_bytes FROM block_streams"
        ):
            stats.setdefault(bid, {})[sid] = BlockStreamStats(sid, rows, lo, hi, nbytes)
        for bid, tenant, path, lo, hi, rows, size in self._db.execute(
            "SELECT block_id, tenant, path, min_ts, max_ts, rows, size FROM blocks ORDER BY block_id"
        ):
            info = BlockInfo(bid, tenant, path, lo, hi, rows, size, stats.get(bid, {}))
            self.blocks.setdefault(tenant, []).append(info)
            ts = self.tenant(tenant)
            for s in info.streams.values():
                ts.extend_range(s.stream_id, s.min_ts, s.max_ts)

    def tenant(self, tenant: str) -> TenantStreams:
        """Return a tenant's streams (created empty on first use)."""
        t = self.tenants.get(tenant)
        if t is None:
            with self._lock:
                t = self.tenants.setdefault(tenant, TenantStreams())
        return t

    def checkpoint(self) -> int:
        """Return the number of the last WAL segment whose data is all in registered blocks (-1 if none)."""
        row = self._db.execute("SELECT value FROM state WHERE key='wal_checkpoint'").fetchone()
        return int(row[0]) if row else -1

    def persist_blocks(self, blocks: list[BlockInfo], wal_checkpoint: int) -> None:
        """Record new blocks, their streams and the WAL checkpoint in one durable transaction."""
        with self._lock:
            new_streams = []
            for b in blocks:
                labels = self.tenant(b.tenant).labels
                for sid in b.streams:
                    if (b.tenant, sid) not in self._persisted:
                        new_streams.append((b.tenant, sid, orjson.dumps(labels[sid]).decode()))
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany("INSERT OR IGNORE INTO streams VALUES (?, ?, ?)", new_streams)
                for b in blocks:
                    _insert_block(db, b)
                db.execute("INSERT OR REPLACE INTO state VALUES ('wal_checkpoint', ?)", (wal_checkpoint,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._persisted.update((t, sid) for t, sid, _ in new_streams)

    def publish_blocks(self, blocks: list[BlockInfo]) -> None:
        """Make persisted blocks visible to readers (a new dict, so a reader's snapshot never changes)."""
        updated = dict(self.blocks)
        for b in blocks:
            updated[b.tenant] = [*updated.get(b.tenant, []), b]
        self.blocks = updated

    def persist_replacement(self, old: list[BlockInfo], new: BlockInfo) -> None:
        """Replace blocks by their merged block in one durable transaction."""
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                _insert_block(db, new)
                for b in old:
                    db.execute("DELETE FROM block_streams WHERE block_id = ?", (b.block_id,))
                    db.execute("DELETE FROM blocks WHERE block_id = ?", (b.block_id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def publish_replacement(self, old: list[BlockInfo], new: BlockInfo) -> None:
        """Make a merged block visible in place of the blocks it replaces (a new dict for readers' snapshots)."""
        gone = {b.block_id for b in old}
        updated = dict(self.blocks)
        updated[new.tenant] = [b for b in updated.get(new.tenant, []) if b.block_id not in gone] + [new]
        self.blocks = updated

    @staticmethod
    def blocks_for_view(
        blocks: dict[str, list[BlockInfo]], tenant: str, stream_ids: np.ndarray, start: int, end: int
    ) -> list[BlockInfo]:
        """Return the tenant's blocks in `blocks` that hold any of `stream_ids` with data in [start, end)."""
        out = []
        for b in blocks.get(tenant, []):
            if b.max_ts < start or b.min_ts >= end:
                continue
            for sid in stream_ids.tolist():
                s = b.streams.get(sid)
                if s is not None and s.max_ts >= start and s.min_ts < end:
                    out.append(b)
                    break
        return out

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _insert_block(db: sqlite3.Connection, b: BlockInfo) -> None:
    """Insert a block and its per-stream stats (inside the caller's transaction)."""
    db.execute(
        "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?)",
        (b.block_id, b.tenant, b.path, b.min_ts, b.max_ts, b.rows, b.size),
    )
    db.executemany(
        "INSERT INTO block_streams VALUES (?, ?, ?, ?, ?, ?)",
        [(b.block_id, s.stream_id, s.rows, s.min_ts, s.max_ts, s.line_bytes) for s in b.streams.values()],
    )
