"""Tailing real files: discovery, partial lines, rotation by rename and copytruncate, deletion, restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from loglake.agent.entry import Entry
from loglake.agent.positions import Positions
from loglake.agent.tailer import FileGroup, Tailer, TailerSettings


class Harness:
    """A tailer over tmp files whose emitted entries are collected; positions move as the agent would."""

    def __init__(self, tmp: Path, **settings: float | int | bool) -> None:
        self.tmp = tmp
        self.positions = Positions(tmp / "positions.yaml")
        self.got: list[Entry] = []
        self.registry = CollectorRegistry()
        s = TailerSettings(poll_interval=0, rescan_interval=0, **settings)  # type: ignore[arg-type]
        self.tailer = Tailer(self.positions, lambda _g, es: self.got.extend(es), s, self.registry)
        group = FileGroup([str(tmp / "logs" / "**" / "*.log")], [str(tmp / "logs/skip*")], {"job": "t"})
        self.tailer.set_groups([group])

    def lines(self, name: str | None = None) -> list[str]:
        return [e.line for e in self.got if name is None or e.labels["filename"].endswith(name)]

    def ack_all(self) -> None:
        """Everything emitted was stored: positions move to what was consumed."""
        consumed = self.tailer.consumed()
        for key in list(self.positions.files):
            if key in consumed:
                self.positions.advance({key: consumed[key]})
            elif key in self.tailer.closed:
                self.positions.forget(key)
        self.positions.save()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "logs" / "deep" / "er").mkdir(parents=True)
    return tmp_path / "logs"


def _append(path: Path, text: str | bytes) -> None:
    with open(path, "ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def test_reads_matching_files_from_the_start_with_labels_offsets_and_increasing_times(tmp_path, logs) -> None:
    _append(logs / "a.log", "one\ntwo\n")
    _append(logs / "deep" / "er" / "b.log", "bee\n")
    _append(logs / "skip.log", "excluded\n")
    _append(logs / "c.txt", "not matched\n")
    h = Harness(tmp_path)
    h.tailer.cycle()
    assert sorted(h.lines()) == ["bee", "one", "two"]
    a = [e for e in h.got if e.labels["filename"].endswith("a.log")]
    assert a[0].labels == {"job": "t", "filename": str(logs / "a.log")}
    assert [(e.start, e.end) for e in a] == [(0, 4), (4, 8)]
    assert a[0].ts_ns < a[1].ts_ns
    _append(logs / "a.log", "three\n")
    h.tailer.cycle()
    assert h.lines("a.log") == ["one", "two", "three"]
    assert h.got[-1].ts_ns > a[1].ts_ns


def test_a_partial_line_waits_for_its_newline_or_the_timeout(tmp_path, logs) -> None:
    _append(logs / "a.log", "whole\nhal")
    h = Harness(tmp_path, partial_timeout=3600)
    h.tailer.cycle()
    assert h.lines() == ["whole"]
    _append(logs / "a.log", "f done\n")
    h.tailer.cycle()
    assert h.lines() == ["whole", "half done"]
    _append(logs / "a.log", "no newline yet")
    h.tailer.cycle()
    h.tailer.settings.partial_timeout = 0
    h.tailer.cycle()
    assert h.lines()[-1] == "no newline yet"
    assert h.tailer.consumed()[h.got[-1].source] == os.path.getsize(logs / "a.log")


def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(tmp_path, logs) -> None:
    _append(logs / "a.log", "1\n2\n")
    h = Harness(tmp_path)
    h.tailer.cycle()
    _append(logs / "a.log", "3\n")  # written after our last read, before the rename
    os.rename(logs / "a.log", logs / "a.log.1")
    _append(logs / "a.log", "4\n")
    for _ in range(3):
        h.tailer.cycle()
    assert h.lines() == ["1", "2", "3", "4"]
    assert len({e.source for e in h.got}) == 2, "the new file is a new source"


def test_copytruncate_starts_over_at_zero(tmp_path, logs) -> None:
    _append(logs / "a.log", "old 1\nold 2\n")
    h = Harness(tmp_path)
    h.tailer.cycle()
    with open(logs / "a.log", "r+b") as f:
        f.truncate(0)
    _append(logs / "a.log", "new\n")
    h.tailer.cycle()
    h.tailer.cycle()
    assert h.lines() == ["old 1", "old 2", "new"]


def test_a_deleted_file_is_read_to_its_end_and_closed(tmp_path, logs) -> None:
    _append(logs / "a.log", "x\n")
    h = Harness(tmp_path)
    h.tailer.cycle()
    fd = os.open(logs / "a.log", os.O_WRONLY | os.O_APPEND)
    os.unlink(logs / "a.log")
    os.write(fd, b"last words\n")
    os.close(fd)
    h.tailer.cycle()
    h.tailer.cycle()
    assert h.lines() == ["x", "last words"]
    assert h.tailer.consumed() == {}
    assert h.got[0].source in h.tailer.closed


def test_long_lines_are_cut_and_invalid_utf8_replaced(tmp_path, logs) -> None:
    _append(logs / "a.log", b"x" * 50 + b"\n" + b"ok \xff\xfe bytes\n")
    h = Harness(tmp_path, max_line_bytes=20)
    h.tailer.cycle()
    assert h.lines() == ["x" * 20, "ok \ufffd\ufffd bytes"]
    assert h.got[0].end == 51, "the position still covers the whole line"
    value = h.registry.get_sample_value("loglake_agent_long_lines_total", {"action": "truncated"})
    assert value == 1.0


def test_a_restart_resumes_at_the_position_and_stamps_reread_lines_as_before(tmp_path, logs) -> None:
    _append(logs / "a.log", "a\nb\nc\n")
    h = Harness(tmp_path)
    h.tailer.cycle()
    first = {e.line: e.ts_ns for e in h.got}
    # Only "a" was acknowledged before the crash (the journal holds the chunk, the file the position).
    h.positions.advance({h.got[0].source: h.got[0].end})
    h.positions.save()
    _append(logs / "a.log", "d\n")
    h.tailer.cycle()
    first["d"] = h.got[-1].ts_ns
    h.positions._journal.close()  # kill -9: nothing else is written
    again = Harness(tmp_path)
    again.tailer.cycle()
    assert again.lines() == ["b", "c", "d"]
    assert {e.line: e.ts_ns for e in again.got} == {k: first[k] for k in "bcd"}, "same timestamps as before"
    _append(logs / "a.log", "e\n")
    again.tailer.cycle()
    assert again.got[-1].ts_ns > first["d"]


def test_a_file_renamed_while_the_agent_was_down_is_finished(tmp_path, logs) -> None:
    _append(logs / "a.log", "1\n2\n")
    h = Harness(tmp_path)
    h.tailer.cycle()
    h.ack_all()
    h.tailer.stop()
    h.positions.close()
    _append(logs / "a.log", "3\n")
    os.rename(logs / "a.log", logs / "a.log.1")
    _append(logs / "a.log", "4\n")
    again = Harness(tmp_path)
    again.tailer.cycle()
    again.tailer.cycle()
    assert sorted(again.lines()) == ["3", "4"]


def test_hundreds_of_files_in_one_thread(tmp_path, logs) -> None:
    for i in range(300):
        _append(logs / f"f{i}.log", "".join(f"{i} line {j}\n" for j in range(10)))
    h = Harness(tmp_path)
    h.tailer.cycle()
    assert len(h.got) == 3000
    assert len(h.tailer.consumed()) == 300
