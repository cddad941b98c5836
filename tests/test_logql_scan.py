"""How the query engine cuts stored data into pieces and works on them ahead of the consumer."""

from __future__ import annotations

import threading

import pyarrow as pa

from loglake.logql.engine import _grow, _scan
from loglake.store.store import Piece


def _piece(i: int, rows: int, in_head: bool = False, seen: list[int] | None = None) -> Piece:
    def load(columns: list[str]) -> pa.Table:
        if seen is not None:
            seen.append(i)
        return pa.table({"i": [i] * 2})

    return Piece(i * 10, i * 10 + 9, load, in_head=in_head, rows=rows)


def test_pieces_grow_from_small_to_the_largest_size_and_keep_head_batches_apart() -> None:
    pieces = [_piece(i, 5000) for i in range(14)] + [_piece(14, 100, in_head=True), _piece(15, 5000)]
    grown = _grow(pieces, 8192, 32768)
    assert [p.rows for p in grown] == [5000, 5000, 15000, 15000, 30000, 100, 5000]
    assert [p.in_head for p in grown] == [False] * 5 + [True, False]
    joined = grown[2]
    assert (joined.min_ts, joined.max_ts) == (20, 49)
    assert joined.load(["i"]).column("i").to_pylist() == [2, 2, 3, 3, 4, 4]


def test_scan_yields_in_order_and_starts_nothing_once_the_consumer_stops() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(p: Piece) -> int:
        with lock:
            started.append(p.min_ts // 10)
        return p.min_ts // 10

    pieces = [_piece(i, 10) for i in range(20)]
    got = []
    for _, value in _scan(pieces, work, ahead=2):
        got.append(value)
        if len(got) == 3:
            break
    assert got == [0, 1, 2]
    assert {0, 1, 2} <= set(started) <= {0, 1, 2, 3}, "only the pieces the consumer asked for, and one ahead"
