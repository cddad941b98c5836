"""The store: durable appends (WAL → head), flushes to Parquet blocks, and reads by stream and time."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loglake.model import ENTRY_SCHEMA, EntryBatch, LabelMatcher, LabelSet
from loglake.store import wal as walmod
from loglake.store.block import BlockInfo, BlockReader, StreamRank, new_block_id, stream_ranker, write_block
from loglake.store.compact import CompactionPolicy, merge_blocks, plan_windows
from loglake.store.head import Head, read_batch
from loglake.store.index import Index
from loglake.store.memory import release_freed_memory

log = logging.getLogger(__name__)

_MAX_GROUP = 64  # pushes that share one fsync at most


@dataclass
class StoreSettings:
    """How the store flushes its head to blocks."""

    head_max_bytes: int = 128 * 1024 * 1024
    max_head_age_s: float = 2 * 3600.0
    flush_check_period_s: float = 30.0
    flush_on_shutdown: bool = True
    compaction: CompactionPolicy = field(default_factory=CompactionPolicy)
    wal_enabled: bool = True
    wal_dir: Path | None = None  # default: <data dir>/wal


@dataclass
class StoreEvents:
    """Callbacks the store fires for metrics; all optional."""

    on_wal_sync: Callable[[float, int], None] | None = None  # seconds, records in the group
    on_flush: Callable[[float, int, int], None] | None = None  # seconds, rows, bytes written
    on_compaction: Callable[[float, int, int], None] | None = None  # seconds, blocks merged, bytes written
    on_appended: Callable[[str, pa.RecordBatch, dict[int, LabelSet]], None] | None = None  # for live tail


@dataclass
class Piece:
    """A unit of stored data a query can load on its own: a block row group or a head batch."""

    min_ts: int
    max_ts: int
    load: Callable[[list[str]], pa.Table]  # columns → the piece's selected rows
    in_head: bool
    rows: int = 0  # rows stored in the piece (those selected may be fewer)


@dataclass
class _View:
    """What a reader sees at one moment: current heads, heads being flushed, blocks per tenant."""

    heads: dict[str, Head]
    frozen: list[dict[str, Head]]
    blocks: dict[str, list[BlockInfo]]


class Store:
    """All tenants' data: the only writer is one ingest thread, so WAL order, dedup and the head always agree."""

    def __init__(self, data_dir: Path, settings: StoreSettings | None = None, events: StoreEvents | None = None):
        self.data_dir = data_dir
        self.settings = settings or StoreSettings()
        self.events = events or StoreEvents()
        self.wal_dir = self.settings.wal_dir or data_dir / "wal"
        self.blocks_dir = data_dir / "blocks"
        self.index = Index(data_dir / "index.sqlite")
        self._heads: dict[str, Head] = {}
        self._frozen: list[dict[str, Head]] = []
        self._view_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._readers: dict[str, BlockReader] = {}
        self._queue: queue.Queue[tuple[str, object, Future]] = queue.Queue()
        self._closed = False
        self._flush_wanted = threading.Event()
        self._stop = threading.Event()
        self._remove_orphan_blocks()
        self._writer: walmod.WalWriter | walmod.NoWal = self._replay()
        self._ingest_thread = threading.Thread(target=self._ingest_loop, name="loglake-ingest", daemon=True)
        self._flush_thread = threading.Thread(target=self._flush_loop, name="loglake-flush", daemon=True)
        self._ingest_thread.start()
        self._flush_thread.start()

    # ---- write path -------------------------------------------------------------------------------------------

    def append(self, batch: EntryBatch) -> Future[int]:
        """Queue validated entries; the future resolves to the number stored once they are durable."""
        fut: Future[int] = Future()
        if self._closed:
            fut.set_exception(RuntimeError("the store is shutting down"))
            return fut
        self._queue.put(("append", batch, fut))
        return fut

    def stream_exists(self, tenant: str, sid: int) -> bool:
        """Say whether a tenant already has this stream."""
        return sid in self.index.tenant(tenant).labels

    def active_streams(self, tenant: str) -> int:
        """Return how many streams a tenant has."""
        return len(self.index.tenant(tenant).labels)

    def head_bytes(self) -> int:
        """Return the line bytes held in memory (current and flushing heads)."""
        view = self._view()
        total = sum(h.line_bytes for h in view.heads.values())
        return total + sum(h.line_bytes for f in view.frozen for h in f.values())

    def _ingest_loop(self) -> None:
        while True:
            item = self._queue.get()
            group = [item]
            while len(group) < _MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            appends: list[tuple[walmod.WalRecord, int, Future]] = []
            for kind, payload, fut in group:
                if kind == "append":
                    try:
                        record, nbytes = self._prepare(payload)  # type: ignore[arg-type]
                        if record.entries.num_rows and self.settings.wal_enabled:
                            self._writer.write(walmod.encode_record(record))
                        appends.append((record, nbytes, fut))
                    except Exception as exc:  # a bug must fail the push, not kill the thread
                        log.exception("append failed")
                        fut.set_exception(exc)
                    continue
                self._commit(appends)
                appends = []
                if kind == "cut":
                    fut.set_result(self._cut())
                elif kind == "stop":
                    self._writer.close()
                    fut.set_result(None)
                    return
            self._commit(appends)

    def _commit(self, appends: list[tuple[walmod.WalRecord, int, Future]]) -> None:
        """Make the written records durable, then apply them to the heads and answer their pushes."""
        if not appends:
            return
        t0 = time.perf_counter()
        try:
            self._writer.sync()
        except OSError as exc:
            log.exception("WAL fsync failed")
            for _, _, fut in appends:
                fut.set_exception(exc)
            return
        if self.events.on_wal_sync:
            self.events.on_wal_sync(time.perf_counter() - t0, len(appends))
        for record, nbytes, fut in appends:
            self._apply(record, nbytes)
            fut.set_result(record.entries.num_rows)
        if sum(h.line_bytes for h in self._heads.values()) >= self.settings.head_max_bytes:
            self._flush_wanted.set()

    def _prepare(self, batch: EntryBatch) -> tuple[walmod.WalRecord, int]:
        """Drop entries already stored (same stream, timestamp and line) and build the WAL record."""
        keep = self._new_entries(batch)
        rb = batch.to_record_batch()
        if keep is not None:
            rb = rb.filter(pa.array(keep))
        present = np.unique(rb.column(0).to_numpy())
        by_id = dict(zip(batch.stream_ids.tolist(), batch.streams, strict=True))
        streams = {int(s): by_id[int(s)] for s in present}
        nbytes = int(pc.sum(pc.binary_length(rb.column(2))).as_py() or 0)
        return walmod.WalRecord(batch.tenant, streams, rb), nbytes

    def _new_entries(self, batch: EntryBatch) -> np.ndarray | None:
        """Return a keep-mask for entries that are not duplicates, or None when all are new.

        An entry can only repeat a stored one if its timestamp is at or before its stream's newest stored
        timestamp; only those entries are compared with stored data, by joins on (stream, ts) then line.
        """
        n = len(batch.ts)
        if n == 0:
            return None
        tenant = self.index.tenant(batch.tenant)
        known = np.array([tenant.max_ts.get(s, -(2**63)) for s in batch.stream_ids.tolist()], dtype=np.int64)
        suspect = batch.ts <= known[batch.stream_index]
        order = np.lexsort((batch.ts, batch.stream_index))
        si, ts = batch.stream_index[order], batch.ts[order]
        same = (si[1:] == si[:-1]) & (ts[1:] == ts[:-1])
        if not suspect.any() and not same.any():
            return None
        keep = np.ones(n, dtype=bool)
        incoming = pl.DataFrame(
            {
                "stream_id": batch.stream_ids[batch.stream_index],
                "ts": batch.ts,
                "line": pl.Series(batch.line),
                "row": np.arange(n, dtype=np.int64),
            }
        )
        if same.any():
            first = incoming.unique(subset=["stream_id", "ts", "line"], keep="first", maintain_order=True)
            keep[:] = False
            keep[first.get_column("row").to_numpy()] = True
        if suspect.any():
            cand = incoming.filter(pl.Series(suspect & keep))
            sids = np.unique(cand.get_column("stream_id").to_numpy())
            lo, hi = int(cand.get_column("ts").min()), int(cand.get_column("ts").max())
            stored_ts = self.read(batch.tenant, sids, lo, hi + 1, ["stream_id", "ts"])
            if stored_ts:
                keys = pl.from_arrow(pa.concat_tables(stored_ts)).unique()
                cand = cand.join(keys, on=["stream_id", "ts"], how="semi")
                if cand.height:
                    # Same stream and timestamp as a stored entry: now compare the lines.
                    lo, hi = int(cand.get_column("ts").min()), int(cand.get_column("ts").max())
                    sids = np.unique(cand.get_column("stream_id").to_numpy())
                    stored = pl.from_arrow(
                        pa.concat_tables(self.read(batch.tenant, sids, lo, hi + 1, ["stream_id", "ts", "line"]))
                    )
                    dup = cand.join(stored, on=["stream_id", "ts", "line"], how="semi")
                    keep[dup.get_column("row").to_numpy()] = False
        return None if keep.all() else keep

    def _apply(self, record: walmod.WalRecord, nbytes: int) -> None:
        """Add a durable record to its tenant's head and the in-memory index."""
        rb = record.entries
        if rb.num_rows == 0:
            return
        tenant = self.index.tenant(record.tenant)
        for sid, labels in record.streams.items():
            tenant.add(sid, labels)
        sid_col = rb.column(0).to_numpy()
        ts_col = rb.column(1).to_numpy()
        uniq, inverse = np.unique(sid_col, return_inverse=True)
        lo = np.full(len(uniq), np.iinfo(np.int64).max)
        hi = np.full(len(uniq), np.iinfo(np.int64).min)
        np.minimum.at(lo, inverse, ts_col)
        np.maximum.at(hi, inverse, ts_col)
        for s, a, b in zip(uniq.tolist(), lo.tolist(), hi.tolist(), strict=True):
            tenant.extend_range(s, a, b)
        head = self._heads.get(record.tenant)
        if head is None:
            with self._view_lock:
                head = self._heads[record.tenant] = Head(record.tenant)
        head.append(rb, nbytes)
        if self.events.on_appended:
            self.events.on_appended(record.tenant, rb, record.streams)

    def _cut(self) -> tuple[int, dict[str, Head]]:
        """Seal the WAL segment and set the heads aside for flushing (runs on the ingest thread)."""
        sealed = self._writer.rotate()
        with self._view_lock:
            heads = self._heads
            self._heads = {}
            self._frozen = [*self._frozen, heads]
        return sealed, heads

    # ---- flush ------------------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every head to Parquet blocks, register them, trim the WAL; return rows flushed."""
        with self._flush_lock:
            fut: Future = Future()
            self._queue.put(("cut", None, fut))
            sealed, heads = fut.result()
            t0 = time.perf_counter()
            blocks: list[BlockInfo] = []
            rows = written = 0
            for tenant, head in heads.items():
                if head.rows == 0:
                    continue
                block_id = new_block_id()
                rel = f"blocks/{_safe(tenant)}/{block_id}.parquet"
                w = write_block(head.to_table(), self.data_dir / rel, rank=self._stream_rank(tenant))
                blocks.append(BlockInfo(block_id, tenant, rel, w.min_ts, w.max_ts, w.rows, w.size, w.streams))
                rows += w.rows
                written += w.size
            self.index.persist_blocks(blocks, sealed)
            with self._view_lock:
                self.index.publish_blocks(blocks)
                self._frozen = [f for f in self._frozen if f is not heads]
            walmod.remove_segments_upto(self.wal_dir, sealed)
            del heads
            release_freed_memory()
            if self.events.on_flush and rows:
                self.events.on_flush(time.perf_counter() - t0, rows, written)
            return rows

    def _stream_rank(self, tenant: str) -> StreamRank:
        """Order a tenant's streams by service_name, then by their whole label set, so a service's streams
        share row groups."""
        labels = self.index.tenant(tenant).labels

        def key(sid: int) -> tuple[str, LabelSet]:
            ls = labels.get(sid, ())
            return next((v for k, v in ls if k == "service_name"), ""), ls

        return stream_ranker(key)

    def compact(self, force: bool = False) -> int:
        """Merge each time window's small blocks into one once the window is quiet; return blocks merged."""
        policy = self.settings.compaction
        merged = 0
        with self._flush_lock:
            for blocks in list(self.index.blocks.values()):
                for group in plan_windows(blocks, policy):
                    newest = max(int(b.block_id.split("-")[0]) for b in group)
                    if not force and time.time_ns() - newest < policy.quiet_s * 1e9:
                        continue
                    t0 = time.perf_counter()
                    tenant = group[0].tenant
                    block_id = new_block_id()
                    rel = f"blocks/{_safe(tenant)}/{block_id}.parquet"
                    w = merge_blocks(
                        group, self._reader, self.data_dir / rel, policy.zstd_level, self._stream_rank(tenant)
                    )
                    info = BlockInfo(block_id, tenant, rel, w.min_ts, w.max_ts, w.rows, w.size, w.streams)
                    self.index.persist_replacement(group, info)
                    with self._view_lock:
                        self.index.publish_replacement(group, info)
                    for b in group:
                        self._readers.pop(b.block_id, None)
                        # Queries under way keep their open file; the name goes now.
                        (self.data_dir / b.path).unlink(missing_ok=True)
                    merged += len(group)
                    release_freed_memory()
                    if self.events.on_compaction:
                        self.events.on_compaction(time.perf_counter() - t0, len(group), w.size)
        return merged

    def _flush_loop(self) -> None:
        period = min(self.settings.flush_check_period_s, max(self.settings.compaction.quiet_s, 0.5))
        while not self._stop.is_set():
            self._flush_wanted.wait(period)
            if self._stop.is_set():
                return
            wanted = self._flush_wanted.is_set()
            self._flush_wanted.clear()
            heads = list(self._heads.values())
            too_old = any(time.monotonic() - h.created >= self.settings.max_head_age_s for h in heads if h.rows)
            try:
                if wanted or too_old:
                    self.flush()
                if not self._flush_wanted.is_set():
                    self.compact()
            except Exception:
                log.exception("flush or compaction failed; the data stays in the WAL and blocks and is retried")

    # ---- startup ----------------------------------------------------------------------------------------------

    def _remove_orphan_blocks(self) -> None:
        """Delete block files that no catalog entry names (a crash between write and register)."""
        known = {b.path for blocks in self.index.blocks.values() for b in blocks}
        if not self.blocks_dir.exists():
            return
        for p in self.blocks_dir.rglob("*"):
            if p.is_file() and str(p.relative_to(self.data_dir)) not in known:
                log.warning("removing unregistered block file %s", p)
                p.unlink()

    def _replay(self) -> walmod.WalWriter:
        """Rebuild the heads from WAL segments newer than the checkpoint; return a writer on a new segment."""
        checkpoint = self.index.checkpoint()
        seqs = walmod.list_segments(self.wal_dir)
        records = 0
        for seq in seqs:
            if seq <= checkpoint:
                walmod.segment_path(self.wal_dir, seq).unlink(missing_ok=True)
                continue
            for record in walmod.read_segment(walmod.segment_path(self.wal_dir, seq)):
                nbytes = int(pc.sum(pc.binary_length(record.entries.column(2))).as_py() or 0)
                self._apply(record, nbytes)
                records += 1
        if records:
            log.info("replayed %d WAL records from %d segments", records, len([s for s in seqs if s > checkpoint]))
        next_seq = max([checkpoint, *seqs]) + 1
        if not self.settings.wal_enabled:
            log.warning("the WAL is disabled (ingester.wal.enabled: false): a crash loses what is not flushed")
            return walmod.NoWal(next_seq)
        return walmod.WalWriter(self.wal_dir, next_seq)

    # ---- read path --------------------------------------------------------------------------------------------

    def _view(self) -> _View:
        with self._view_lock:
            return _View(self._heads, self._frozen, self.index.blocks)

    def match_streams(self, tenant: str, matchers: Sequence[LabelMatcher], start: int, end: int) -> dict[int, LabelSet]:
        """Return the streams that the matchers select and that have data in [start, end)."""
        t = self.index.tenant(tenant)
        ids = t.in_range(t.match(matchers), start, end)
        return {s: t.labels[s] for s in ids}

    def stream_count(self, tenant: str) -> int:
        """Return how many streams a tenant has."""
        return len(self.index.tenant(tenant).labels)

    def all_streams(self, tenant: str, start: int, end: int) -> dict[int, LabelSet]:
        """Return every stream of a tenant with data in [start, end)."""
        t = self.index.tenant(tenant)
        return {s: t.labels[s] for s in t.in_range(list(t.labels), start, end)}

    def pieces(self, tenant: str, stream_ids: np.ndarray, start: int, end: int, batch_rows: int = 0) -> list[Piece]:
        """Return the units of data (block row groups, head batches) that may hold the streams in [start, end).

        With `batch_rows`, consecutive row groups of a block are read together, up to that many rows a piece.
        """
        ids = np.unique(np.asarray(stream_ids, dtype=np.int64))
        if len(ids) == 0 or end <= start:
            return []
        view = self._view()
        out: list[Piece] = []
        for b in self.index.blocks_for_view(view.blocks, tenant, ids, start, end):
            reader = self._reader(b)
            batch: list[int] = []
            rows = 0
            for g in [*reader.row_groups(ids, start, end), -1]:
                if batch and (g < 0 or rows + reader.group_rows(g) > batch_rows):
                    lo = min(reader.group_range(i)[0] for i in batch)
                    hi = max(reader.group_range(i)[1] for i in batch)
                    load = partial(reader.read_groups, batch, ids, start, end)
                    out.append(Piece(lo, hi, load, in_head=False, rows=rows))
                    batch, rows = [], 0
                if g >= 0:
                    batch.append(g)
                    rows += reader.group_rows(g)
        for heads in [*view.frozen, view.heads]:
            head = heads.get(tenant)
            if head is None or head.max_ts < start or head.min_ts >= end:
                continue
            for batch, lo, hi in head.snapshot():
                if hi >= start and lo < end:
                    load = partial(read_batch, batch, ids, start, end)
                    out.append(Piece(lo, hi, load, in_head=True, rows=batch.num_rows))
        return out

    def read(self, tenant: str, stream_ids: np.ndarray, start: int, end: int, columns: list[str]) -> list[pa.Table]:
        """Return the rows of `stream_ids` with start <= ts < end from blocks and heads, as tables of `columns`."""
        tables = (p.load(columns) for p in self.pieces(tenant, stream_ids, start, end))
        return [t for t in tables if t.num_rows]

    def _reader(self, block: BlockInfo) -> BlockReader:
        reader = self._readers.get(block.block_id)
        if reader is None:
            reader = self._readers[block.block_id] = BlockReader(self.data_dir / block.path)
        return reader

    def close(self) -> None:
        """Stop accepting writes, flush the heads if configured, and stop the threads."""
        if self._closed:
            return
        self._closed = True
        if self.settings.flush_on_shutdown:
            try:
                self.flush()
            except Exception:
                log.exception("flush on shutdown failed; the WAL keeps the data")
        self._stop.set()
        self._flush_wanted.set()
        fut: Future = Future()
        self._queue.put(("stop", None, fut))
        fut.result()
        self._flush_thread.join(5)
        self.index.close()


def _safe(tenant: str) -> str:
    """Return a tenant name usable as one path component."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in tenant) or "%"


def empty_entries() -> pa.Table:
    """Return an empty table of stored entries."""
    return ENTRY_SCHEMA.empty_table()
