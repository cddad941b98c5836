"""Range queries in pages: log queries fetch up to `limit` entries in batches, as logcli does, none repeated."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from loglake.client.loki import LokiClient


@dataclass(frozen=True)
class LogEntry:
    """One log line of a result, with the labels of its stream (structured metadata and parsed labels included)."""

    ts: int
    labels: dict[str, str]
    line: str

    def key(self) -> tuple[tuple[tuple[str, str], ...], str]:
        """Return what tells this entry apart from another with the same timestamp."""
        return tuple(sorted(self.labels.items())), self.line


@dataclass
class Page:
    """One answer: new log entries in the query's direction, or a metric result (which is always the only page)."""

    result_type: str
    entries: list[LogEntry]
    data: dict[str, Any]


class BatchTooSmallError(ValueError):
    """More entries share one timestamp than a batch holds, so paging cannot make progress."""


def stream_entries(streams: list[dict[str, Any]], *, forward: bool) -> list[LogEntry]:
    """Return the entries of a `streams` result, ordered by time: oldest first if `forward`, else newest first."""
    entries = [
        LogEntry(int(value[0]), stream.get("stream") or {}, value[1])
        for stream in streams
        for value in stream.get("values") or []
    ]
    entries.sort(key=lambda e: e.ts, reverse=not forward)
    return entries


def fetch_pages(
    client: LokiClient,
    query: str,
    *,
    start: int,
    end: int,
    limit: int = 30,
    batch_size: int = 1000,
    forward: bool = False,
    step: str | None = None,
    interval: str | None = None,
) -> Iterator[Page]:
    """Yield the pages of a range query over [start, end); `limit` 0 means every entry in the range.

    Each batch after the first starts at the timestamp where the previous one ended (Loki allows several entries
    at one timestamp), and entries already yielded there are dropped.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be 1 or more, got {batch_size}")
    if limit < 0:
        raise ValueError(f"limit must be 0 (no limit) or more, got {limit}")
    unlimited = limit == 0
    batch = batch_size if unlimited else min(batch_size, limit)
    direction = "forward" if forward else "backward"
    total = 0
    boundary: list[LogEntry] = []  # entries of the previous batch at its last timestamp
    while unlimited or total < limit:
        size = batch
        if not unlimited and limit - total < batch:
            # Ask for the overlap again on top of what is still missing, since it comes back once more.
            size = limit - total + len(boundary)
        data = client.query_range(
            query, start=start, end=end, limit=size, direction=direction, step=step, interval=interval
        )
        if data.get("resultType") != "streams":
            yield Page(str(data.get("resultType")), [], data)
            return
        received = stream_entries(data.get("result") or [], forward=forward)
        seen = {e.key() for e in boundary}
        boundary_ts = boundary[0].ts if boundary else None
        new = [e for e in received if e.ts != boundary_ts or e.key() not in seen]
        if not unlimited:
            new = new[: limit - total]
        if not new:
            return
        yield Page("streams", new, data)
        total += len(new)
        if len(received) < size or (not unlimited and total >= limit):
            return  # the server had no more in the range, or we have all we want
        last_ts = received[-1].ts
        boundary = [e for e in received if e.ts == last_ts]
        if len(boundary) >= batch:
            raise BatchTooSmallError(
                f"{len(boundary)} entries share the timestamp {last_ts}, as many as a batch of {batch} holds; "
                f"use a batch size of at least {len(boundary) + 1}"
            )
        if forward:
            start = last_ts
        else:
            end = last_ts + 1  # `end` is exclusive: include the last timestamp again
