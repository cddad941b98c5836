"""Blocks on disk: open Parquet anyone can read, and compaction that merges them without changing answers."""

from __future__ import annotations

import time

import pyarrow.parquet as pq

from tests.helpers import now_ns, push_json, read_all, stream


def _blocks(server) -> list:
    return sorted((server.data_dir / "blocks").rglob("*.parquet"))


def test_blocks_are_plain_parquet_sorted_by_stream_and_time(make_server) -> None:
    server = make_server({"compactor": {"compaction_interval": "1h"}})
    base = now_ns() - 30 * 10**9
    with server.client() as c:
        body = [
            stream({"app": "b"}, [(base + 5, "b late"), (base + 1, "b early")]),
            stream({"app": "a"}, [(base + 3, "a one", {"trace_id": "t1"}), (base + 4, "")]),
        ]
        assert push_json(c, body).status_code == 204
        assert c.post("/flush").status_code == 204
    (path,) = _blocks(server)
    table = pq.read_table(path)
    assert table.column_names == ["stream_id", "ts", "line", "metadata"]
    rows = list(zip(*(table.column(n).to_pylist() for n in ("stream_id", "ts")), strict=True))
    assert rows == sorted(rows), "rows must be sorted by (stream_id, ts)"
    lines = dict(zip(table.column("ts").to_pylist(), table.column("line").to_pylist(), strict=True))
    assert lines[base + 4] == "", "empty lines are stored"
    metadata = dict(zip(table.column("ts").to_pylist(), table.column("metadata").to_pylist(), strict=True))
    assert metadata[base + 3] == [("trace_id", "t1")]
    assert metadata[base + 1] is None


def test_compaction_merges_a_quiet_windows_blocks_and_answers_stay_the_same(make_server) -> None:
    server = make_server({"compactor": {"compaction_interval": "300ms"}})
    base = (now_ns() // (3600 * 10**9)) * 3600 * 10**9 - 1800 * 10**9  # the middle of the previous hour
    with server.client() as c:
        for flush in range(3):
            entries = [(base + flush * 1000 + i, f"flush={flush} i={i}") for i in range(200)]
            body = [stream({"app": "x", "n": str(i % 3)}, entries[i::3]) for i in range(3)]
            assert push_json(c, body).status_code == 204
            assert c.post("/flush").status_code == 204
        before = read_all(c, '{app="x"}', base, base + 10**9)
        assert len(before) == 600
        deadline = time.monotonic() + 30
        while len(_blocks(server)) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_blocks(server)) == 1, "three blocks of one quiet window should become one"
        after = read_all(c, '{app="x"}', base, base + 10**9)
        assert sorted(after, key=lambda e: e[0]) == sorted(before, key=lambda e: e[0])
        metrics = c.get("/metrics").text
        assert "loglake_compacted_blocks_total 3.0" in metrics
    server.kill9()
    server.start()
    with server.client() as c:
        assert len(read_all(c, '{app="x"}', base, base + 10**9)) == 600
    assert len(_blocks(server)) == 1
