"""Query results in Loki's JSON shapes: streams, matrices, vectors, and the `stats` object."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from loglake.logql.printer import format_float_f


@dataclass
class QueryStats:
    """What a query did, reported in Loki's `stats` object."""

    started: float = field(default_factory=time.perf_counter)
    lines_processed: int = 0
    bytes_processed: int = 0
    structured_metadata_bytes: int = 0
    post_filter_lines: int = 0
    entries_returned: int = 0
    blocks_read: int = 0
    head_lines: int = 0
    head_bytes: int = 0
    deadline: float = float("inf")  # time.perf_counter() value after which the query gives up
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the `stats` object with Loki's field names."""
        exec_time = time.perf_counter() - self.started
        per_s = (lambda v: int(v / exec_time)) if exec_time > 0 else (lambda v: 0)
        chunk = {
            "headChunkBytes": self.head_bytes,
            "headChunkLines": self.head_lines,
            "decompressedBytes": self.bytes_processed - self.head_bytes,
            "decompressedLines": self.lines_processed - self.head_lines,
            "compressedBytes": 0,
            "totalDuplicates": 0,
            "postFilterLines": self.post_filter_lines,
            "headChunkStructuredMetadataBytes": 0,
            "decompressedStructuredMetadataBytes": self.structured_metadata_bytes,
        }
        store = {
            "totalChunksRef": self.blocks_read,
            "totalChunksDownloaded": self.blocks_read,
            "chunksDownloadTime": 0,
            "queryReferencedStructuredMetadata": False,
            "chunk": chunk,
            "chunkRefsFetchTime": 0,
            "congestionControlLatency": 0,
            "pipelineWrapperFilteredLines": 0,
        }
        empty_cache = {
            "entriesFound": 0,
            "entriesRequested": 0,
            "entriesStored": 0,
            "bytesReceived": 0,
            "bytesSent": 0,
            "requests": 0,
            "downloadTime": 0,
            "queryLengthServed": 0,
        }
        return {
            "summary": {
                "bytesProcessedPerSecond": per_s(self.bytes_processed),
                "linesProcessedPerSecond": per_s(self.lines_processed),
                "totalBytesProcessed": self.bytes_processed,
                "totalLinesProcessed": self.lines_processed,
                "execTime": exec_time,
                "queueTime": 0,
                "subqueries": 0,
                "totalEntriesReturned": self.entries_returned,
                "splits": 0,
                "shards": 0,
                "totalPostFilterLines": self.post_filter_lines,
                "totalStructuredMetadataBytesProcessed": self.structured_metadata_bytes,
            },
            "querier": {"store": store},
            "ingester": {
                "totalReached": 0,
                "totalChunksMatched": 0,
                "totalBatches": 0,
                "totalLinesSent": 0,
                "store": {**store, "chunk": {k: 0 if not isinstance(v, bool) else v for k, v in chunk.items()}},
            },
            "cache": {
                name: dict(empty_cache)
                for name in (
                    "chunk",
                    "index",
                    "result",
                    "statsResult",
                    "volumeResult",
                    "seriesResult",
                    "labelResult",
                    "instantMetricResult",
                )
            },
            "index": {"totalChunks": 0, "postFilterChunks": 0, "shardsDuration": 0, "usedBloomFilters": False},
        }


def streams_result(
    rows: pa.Table, stream_labels: dict[int, tuple[tuple[str, str], ...]], direction: str
) -> list[dict[str, Any]]:
    """Group selected entries (columns stream_id, ts, line, metadata; already in output order) into streams.

    Structured metadata joins the stream labels, so entries of one stream with different metadata become
    separate result streams, as in Loki 3.
    """
    sids = rows.column("stream_id").to_pylist()
    tss = rows.column("ts").to_pylist()
    lines = rows.column("line").to_pylist()
    metas = rows.column("metadata").to_pylist() if "metadata" in rows.column_names else [None] * len(sids)
    groups: dict[tuple[int, tuple[tuple[str, str], ...]], list[list[str]]] = {}
    for sid, ts, line, meta in zip(sids, tss, lines, metas, strict=True):
        key = (sid, tuple(sorted(meta)) if meta else ())
        values = groups.get(key)
        if values is None:
            values = groups[key] = []
        values.append([str(ts), line])
    out = []
    for (sid, meta), values in groups.items():
        labels = dict(stream_labels[sid])
        for name, value in meta:
            labels[name] = value
        out.append({"stream": dict(sorted(labels.items())), "values": values})
    out.sort(key=lambda s: list(s["stream"].items()))
    return out


def format_value(v: float) -> str:
    """Format a sample value as Loki does (Go's strconv.FormatFloat(v, 'f', -1, 64); NaN, +Inf, -Inf)."""
    return format_float_f(v)


def format_ts(ns: int) -> float | int:
    """Return a matrix/vector timestamp as Loki writes it: Unix seconds, fractional when needed."""
    if ns % 1_000_000_000 == 0:
        return ns // 1_000_000_000
    return round(ns / 1_000_000_000, 3)
