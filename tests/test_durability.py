"""Acknowledged writes survive kill -9, exactly once; retries and restarts never duplicate entries."""

from __future__ import annotations

import collections
import threading
import time

import httpx

from tests.helpers import now_ns, push_json, read_all, stream

PUSHERS = 4
ENTRIES_PER_PUSH = 200


def _pusher(url: str, pusher: int, base_ns: int, stop: threading.Event, acked: list[int]) -> None:
    """Push numbered batches until stopped or the server dies; record each batch the server acknowledged."""
    with httpx.Client(base_url=url, timeout=10.0) as client:
        seq = 0
        while not stop.is_set():
            entries = [
                (base_ns + (seq * ENTRIES_PER_PUSH + i) * 1000 + pusher, f"pusher={pusher} batch={seq} entry={i}")
                for i in range(ENTRIES_PER_PUSH)
            ]
            try:
                r = push_json(client, [stream({"job": "crash", "pusher": str(pusher)}, entries)])
            except httpx.HTTPError:
                return
            if r.status_code == 204:
                acked.append(seq)
            seq += 1


def test_kill9_mid_stream_keeps_every_acknowledged_entry_exactly_once(make_server) -> None:
    server = make_server()
    base = now_ns() - 60 * 1_000_000_000
    stop = threading.Event()
    acked: dict[int, list[int]] = {p: [] for p in range(PUSHERS)}
    threads = [threading.Thread(target=_pusher, args=(server.url, p, base, stop, acked[p])) for p in range(PUSHERS)]
    for t in threads:
        t.start()
    # Let some pushes land (and a flush happen meanwhile), then crash while pushers are mid-request.
    deadline = time.monotonic() + 20
    while sum(len(a) for a in acked.values()) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    with server.client() as c:
        assert c.post("/flush").status_code == 204
    while sum(len(a) for a in acked.values()) < 80 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill9()
    stop.set()
    for t in threads:
        t.join(15)
    total_acked = sum(len(a) for a in acked.values())
    assert total_acked >= 80, "pushers made too little progress before the crash"

    server.start()
    with server.client() as c:
        entries = read_all(c, '{job="crash"}', base, now_ns() + 10**9)
    counts = collections.Counter((e[2]["pusher"], e[1]) for e in entries)
    duplicates = [k for k, n in counts.items() if n > 1]
    assert not duplicates, f"entries stored more than once: {duplicates[:5]}"
    present = set(counts)
    missing = [
        (p, seq)
        for p in range(PUSHERS)
        for seq in acked[p]
        for i in range(ENTRIES_PER_PUSH)
        if (str(p), f"pusher={p} batch={seq} entry={i}") not in present
    ]
    assert not missing, f"{len(missing)} acknowledged entries lost, e.g. {missing[:3]}"


def test_retried_push_is_stored_once_before_and_after_flush_and_restart(make_server) -> None:
    server = make_server()
    base = now_ns() - 10 * 1_000_000_000
    body = [stream({"job": "retry"}, [(base + i, f"line {i}") for i in range(100)] + [(base + 100, "")])]
    with server.client() as c:
        assert push_json(c, body).status_code == 204
        assert push_json(c, body).status_code == 204  # a client retry
        assert len(read_all(c, '{job="retry"}', base, base + 10**9)) == 101
        assert c.post("/flush").status_code == 204
        assert push_json(c, body).status_code == 204  # a retry after the data went to a block
        assert len(read_all(c, '{job="retry"}', base, base + 10**9)) == 101
    server.kill9()
    server.start()
    with server.client() as c:
        assert push_json(c, body).status_code == 204
        entries = read_all(c, '{job="retry"}', base, base + 10**9)
    assert len(entries) == 101
    assert sorted(e[1] for e in entries).count("") == 1, "the empty line must be kept exactly once"


def test_same_timestamp_different_lines_are_all_kept(make_server) -> None:
    server = make_server()
    ts = now_ns() - 5 * 1_000_000_000
    with server.client() as c:
        body = [stream({"job": "same-ts"}, [(ts, "a"), (ts, "b"), (ts, "a"), (ts - 5, "older, out of order")])]
        assert push_json(c, body).status_code == 204
        entries = read_all(c, '{job="same-ts"}', ts - 10, ts + 1)
    assert sorted(e[1] for e in entries) == ["a", "b", "older, out of order"]


def test_sigterm_flushes_head_to_blocks_and_trims_wal(make_server) -> None:
    server = make_server()
    base = now_ns() - 10 * 1_000_000_000
    with server.client() as c:
        assert push_json(c, [stream({"job": "term"}, [(base + i, f"l{i}") for i in range(50)])]).status_code == 204
    assert server.stop() == 0
    blocks = list((server.data_dir / "blocks").rglob("*.parquet"))
    assert blocks, "SIGTERM must flush the head to a Parquet block"
    wal_bytes = sum(p.stat().st_size for p in (server.data_dir / "wal").glob("*.wal"))
    assert wal_bytes == 0, "the WAL must be trimmed after the flush"
    server.start()
    with server.client() as c:
        assert len(read_all(c, '{job="term"}', base, base + 10**9)) == 50


def test_wal_in_a_configured_directory_survives_kill9(make_server, tmp_path) -> None:
    wal_dir = tmp_path / "elsewhere" / "wal"
    server = make_server({"ingester": {"wal": {"dir": str(wal_dir)}}, "compactor": {"compaction_interval": "1h"}})
    base = now_ns() - 10 * 1_000_000_000
    with server.client() as c:
        assert push_json(c, [stream({"job": "waldir"}, [(base + i, f"l{i}") for i in range(20)])]).status_code == 204
    assert any(p.stat().st_size for p in wal_dir.glob("*.wal")), "records go to ingester.wal.dir"
    assert not (server.data_dir / "wal").exists()
    server.kill9()
    server.start()
    with server.client() as c:
        assert len(read_all(c, '{job="waldir"}', base, base + 10**9)) == 20


def test_disabled_wal_writes_nothing_but_still_flushes_on_sigterm(make_server) -> None:
    server = make_server({"ingester": {"wal": {"enabled": False}}})
    base = now_ns() - 10 * 1_000_000_000
    with server.client() as c:
        assert push_json(c, [stream({"job": "nowal"}, [(base + i, f"l{i}") for i in range(20)])]).status_code == 204
        assert len(read_all(c, '{job="nowal"}', base, base + 10**9)) == 20
    assert not list((server.data_dir / "wal").glob("*.wal"))
    assert server.stop() == 0
    server.start()
    with server.client() as c:
        assert len(read_all(c, '{job="nowal"}', base, base + 10**9)) == 20


def test_queries_during_pushes_and_flushes_always_answer(make_server) -> None:
    server = make_server({"ingester": {"head_max_bytes": "200KB"}, "compactor": {"compaction_interval": "200ms"}})
    base = now_ns() - 60 * 1_000_000_000
    stop = threading.Event()
    statuses: collections.Counter[int] = collections.Counter()

    def query() -> None:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            while not stop.is_set():
                for q in ('{job="crash"}', 'sum(count_over_time({job="crash"} |= "entry=1" [1m]))'):
                    r = c.get("/loki/api/v1/query_range", params={"query": q, "start": str(base), "limit": 50})
                    statuses[r.status_code] += 1

    acked: list[int] = []
    pushers = [threading.Thread(target=_pusher, args=(server.url, p, base, stop, acked)) for p in range(2)]
    readers = [threading.Thread(target=query) for _ in range(2)]
    for t in pushers + readers:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in pushers + readers:
        t.join(30)
    assert len(acked) >= 60
    assert set(statuses) == {200}, f"every query must answer 200 while data moves: {statuses}"
    with server.client() as c:
        entries = read_all(c, '{job="crash"}', base, now_ns() + 10**9)
    assert len(entries) == len(acked) * ENTRIES_PER_PUSH
