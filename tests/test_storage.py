"""Blocks on disk: open Parquet anyone can read, and compaction that merges them without changing answers."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from loglake.model import ENTRY_SCHEMA, METADATA_TYPE
from loglake.store.block import ROW_GROUP_ROWS, BlockReader, group_bounds, stream_ranker, write_block
from tests.helpers import now_ns, push_json, read_all, stream


def _blocks(server) -> list:
    return sorted((server.data_dir / "blocks").rglob("*.parquet"))


def test_blocks_are_plain_parquet_sorted_by_labels_and_time(make_server) -> None:
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
    assert table.column("line").to_pylist() == ["a one", "", "b early", "b late"], "sorted by labels, then time"
    listed = orjson.loads(pq.ParquetFile(path).metadata.metadata[b"loglake.row_group_streams"])
    ids = sorted(set(table.column("stream_id").to_pylist()))
    assert listed == {"ids": ids, "groups": [[0, 1]]}, "the footer lists each row group's streams"
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


def test_a_services_streams_share_row_groups_and_the_footer_prunes_the_rest(tmp_path) -> None:
    """Block layer alone: streams ranked by service sit together, so one service's rows skip the others' groups."""
    n = 4 * ROW_GROUP_ROWS
    sid = np.arange(n, dtype=np.int64) % 8  # ids 0..7 interleaved; even ids are service "a", odd ones "b"
    table = pa.table(
        {
            "stream_id": sid,
            "ts": np.arange(n, dtype=np.int64),
            "line": pa.array([f"line {i}" for i in range(n)], pa.large_string()),
            "metadata": pa.nulls(n, METADATA_TYPE),
        },
        schema=ENTRY_SCHEMA,
    )
    rank = stream_ranker(lambda s: ("a" if s % 2 == 0 else "b", s))
    write_block(table, tmp_path / "b.parquet", rank=rank)
    reader = BlockReader(tmp_path / "b.parquet")
    evens = np.array([0, 2, 4, 6], dtype=np.int64)
    groups = reader.row_groups(evens, 0, n)
    assert len(groups) == 2, "service a's rows fill two of the four row groups"
    got = reader.read_groups(groups, evens, 0, n, ["stream_id"]).column("stream_id").to_numpy()
    assert len(got) == n // 2 and set(got.tolist()) == {0, 2, 4, 6}
    assert reader.row_groups(np.array([1], dtype=np.int64), 0, n) != groups


def test_row_groups_end_where_the_service_changes() -> None:
    """A row group ends at a service boundary once it holds MIN_GROUP_ROWS rows, and never exceeds ROW_GROUP_ROWS."""
    groups = np.repeat([0, 1, 2, 3], [3000, 100, 5000, 40000])
    bounds = group_bounds(groups)
    assert bounds == [0, 3000, 8100, 8100 + ROW_GROUP_ROWS, 8100 + 2 * ROW_GROUP_ROWS, 48100]
    assert group_bounds(np.zeros(0, dtype=np.int64)) == [0]
