"""Test helpers: push entries and read them all back over Loki's HTTP API."""

from __future__ import annotations

import time
from typing import Any

import httpx


def push_json(client: httpx.Client, streams: list[dict[str, Any]], **kwargs: Any) -> httpx.Response:
    """Push `{"streams": streams}` as JSON."""
    return client.post("/loki/api/v1/push", json={"streams": streams}, **kwargs)


def stream(labels: dict[str, str], entries: list[tuple[int, str]] | list[list[Any]]) -> dict[str, Any]:
    """Return one JSON push stream from (ns, line[, metadata]) entries."""
    return {"stream": labels, "values": [[str(e[0]), *e[1:]] for e in entries]}


def read_all(client: httpx.Client, query: str, start: int, end: int, page: int = 5000) -> list[tuple[int, str, dict]]:
    """Return every entry a log query selects in [start, end), oldest first, paging forward as logcli does."""
    out: list[tuple[int, str, dict]] = []
    cursor = start
    while True:
        r = client.get(
            "/loki/api/v1/query_range",
            params={"query": query, "start": str(cursor), "end": str(end), "limit": page, "direction": "forward"},
        )
        assert r.status_code == 200, r.text
        got = []
        for s in r.json()["data"]["result"]:
            for ts, line in s["values"]:
                got.append((int(ts), line, s["stream"]))
        got.sort(key=lambda e: e[0])
        if len(got) < page:
            out.extend(got)
            return out
        # Entries at the last timestamp may continue on the next page: cut there and resume from it.
        last = got[-1][0]
        out.extend(e for e in got if e[0] < last)
        if cursor == last:
            raise AssertionError(f"more than {page} entries share timestamp {last}")
        cursor = last


def now_ns() -> int:
    """Return the current time in ns."""
    return time.time_ns()
