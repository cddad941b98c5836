"""Tailing files: glob discovery, reading new lines, rotation by rename or copytruncate, deleted files.

One thread polls every open file (no thread per file): it reads what was appended since the last cycle, cuts
complete lines, records the chunks it read (positions.py) and hands each file's entries on. A partial last line
waits for its newline, or is sent as it is after `partial_timeout`. Lines get the time they were read, strictly
increasing per file; lines read again after a crash get their old timestamps back from the recorded chunks.
"""

from __future__ import annotations

import fnmatch
import glob
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from loglake.agent.entry import Entry
from loglake.agent.positions import FilePosition, Positions

log = logging.getLogger(__name__)

HARD_LINE_CAP = 4 << 20  # a "line" without a newline is cut here even when lines are not limited


@dataclass
class FileGroup:
    """Files one target tails: path globs (`**` allowed), globs to leave out, and the labels entries get."""

    include: list[str]
    exclude: list[str]
    labels: dict[str, str]
    job: str = ""


@dataclass
class TailerSettings:
    """How often to look at files and how lines are cut."""

    poll_interval: float = 0.25
    rescan_interval: float = 10.0
    read_bytes: int = 1 << 20  # at most this much per file per cycle, so one busy file cannot starve the rest
    cycle_bytes: int = 4 << 20  # at most this much in all per cycle (memory stays bounded when files are big)
    max_line_bytes: int = 0  # 0: no limit
    truncate_lines: bool = True  # over the limit: cut (True) or drop (False)
    partial_timeout: float = 5.0


class TailerMetrics:
    """Promtail's file metrics (same names, so its dashboards work)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.read_bytes = Counter("promtail_read_bytes", "Bytes read from files.", ["path"], registry=registry)
        self.read_lines = Counter("promtail_read_lines", "Lines read from files.", ["path"], registry=registry)
        self.active = Gauge("promtail_files_active_total", "Files being tailed.", registry=registry)
        self.truncated = Counter(
            "loglake_agent_long_lines", "Lines longer than the limit, by what was done.", ["action"], registry=registry
        )


@dataclass
class _Tail:
    """One open file incarnation."""

    path: str
    group: FileGroup
    pos: FilePosition
    fd: int
    read_at: int  # next byte to read
    buf: bytes = b""  # bytes after the last newline
    buf_since: float = 0.0
    last_ts: int = 0
    replay: list[tuple[int, int, int]] = field(default_factory=list)  # recorded chunks still ahead
    skip_before: int = 0  # lines starting before this offset were done before a restart
    replay_index: int = 0  # index of the last replayed line in its chunk
    draining: bool = False  # renamed away or deleted: read to the end, then close
    idle_since: float = 0.0

    @property
    def consumed(self) -> int:
        """Every line before this offset has been handed on."""
        return self.read_at - len(self.buf)


class Tailer:
    """Follows the files of some groups and hands their new entries to `emit(group, entries)` (which may block)."""

    def __init__(
        self,
        positions: Positions,
        emit: Callable[[FileGroup, list[Entry]], None],
        settings: TailerSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.positions = positions
        self.emit = emit
        self.settings = settings or TailerSettings()
        self.metrics = TailerMetrics(registry or CollectorRegistry())
        self._groups: list[FileGroup] = []
        self._tails: dict[str, _Tail] = {}  # by source key
        self._current: dict[str, str] = {}  # path -> source key of the file now at that path
        self.closed: set[str] = set()  # sources read to their end and closed (the runner forgets them when acked)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_scan = 0.0
        self._turn = 0

    # ---- control --------------------------------------------------------------------------------------------

    def set_groups(self, groups: list[FileGroup]) -> None:
        """Replace the groups to follow; the next cycle rescans."""
        with self._lock:
            self._groups = list(groups)
            self._last_scan = 0.0

    def start(self) -> None:
        """Run cycles on a background thread."""
        self._thread = threading.Thread(target=self._loop, name="loglake-tailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current cycle and close every file (what was consumed stays known for the positions)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for t in list(self._tails.values()):
            os.close(t.fd)

    def consumed(self) -> dict[str, int]:
        """Offset up to which each open source's lines were handed on."""
        with self._lock:
            return {key: t.consumed for key, t in self._tails.items()}

    def targets(self) -> list[dict[str, object]]:
        """The files being tailed, for /targets."""
        with self._lock:
            return [
                {"path": t.path, "labels": t.group.labels, "offset": t.consumed, "draining": t.draining}
                for t in self._tails.values()
            ]

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.cycle()
            except Exception:
                log.exception("tail cycle failed")
            self._stop.wait(max(0.0, self.settings.poll_interval - (time.monotonic() - started)))

    # ---- one cycle ------------------------------------------------------------------------------------------

    def cycle(self) -> int:
        """Rescan if due, read every file once; return the number of entries handed on."""
        now = time.monotonic()
        if now - self._last_scan >= self.settings.rescan_interval:
            self._last_scan = now
            self._rescan()
        batches: list[tuple[FileGroup, list[Entry]]] = []
        chunks: list[tuple[FilePosition, int, int, int]] = []
        keys = list(self._tails)
        # Files take turns at the front, so a cycle that runs out of budget does not always skip the same ones.
        self._turn = (self._turn + 1) % max(1, len(keys))
        budget = self.settings.cycle_bytes
        for key in keys[self._turn :] + keys[: self._turn]:
            t = self._tails[key]
            before = t.read_at
            entries, chunk = self._read(t, now, budget <= 0)
            budget -= t.read_at - before
            if entries:
                batches.append((t.group, entries))
            if chunk is not None:
                chunks.append(chunk)
            self._check_rotation(t, now)
        # Timestamps must be durable before any line can reach the server.
        self.positions.record_chunks(chunks)
        n = 0
        for group, entries in batches:
            self.emit(group, entries)
            n += len(entries)
        self.metrics.active.set(len(self._tails))
        return n

    def _rescan(self) -> None:
        wanted: dict[str, FileGroup] = {}
        with self._lock:
            # A rotated file that still matches a glob (app.log.1 for *.log*) is the one being finished, not new.
            open_inodes = {t.pos.inode for t in self._tails.values() if t.draining}
        for group in self._groups:
            for pattern in group.include:
                for path in glob.glob(pattern, recursive=True):
                    if path in wanted or any(fnmatch.fnmatch(path, x) for x in group.exclude):
                        continue
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    if os.path.isfile(path) and st.st_ino not in open_inodes:
                        wanted[path] = group
        with self._lock:
            for path, key in list(self._current.items()):
                if path not in wanted:
                    # No longer matched (Promtail stops tailing it too): read what is there, then close.
                    self._tails[key].draining = True
                    del self._current[path]
        for path, group in wanted.items():
            if path not in self._current:
                self._open(path, group)

    def _open(self, path: str, group: FileGroup) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            log.warning("cannot open %s: %s", path, exc)
            return
        st = os.fstat(fd)
        # A file renamed away while the agent was down is finished first, from where it was left.
        for old in self.positions.others(path, st.st_ino):
            if old.key not in self._tails and old.key not in self.closed:
                self._resume_renamed(old, group)
        fp = self.positions.find(path, st.st_ino)
        if fp is not None and fp.offset > st.st_size:
            # Truncated while we were away: the lines before are gone; start over as a new generation.
            self.positions.forget(fp.key)
            fp = FilePosition(path, st.st_ino, 0, fp.generation + 1)
            self.positions.track(fp)
        elif fp is None:
            fp = FilePosition(path, st.st_ino, 0)  # no recorded position: read from the start, as Promtail
            self.positions.track(fp)
        t = self._tail(path, group, fp, fd)
        with self._lock:
            self._tails[fp.key] = t
            self._current[path] = fp.key

    def _tail(self, path: str, group: FileGroup, fp: FilePosition, fd: int) -> _Tail:
        replay = sorted(c for c in fp.chunks if c[1] > fp.offset)
        start = min([fp.offset, *(c[0] for c in replay)])
        t = _Tail(path, group, fp, fd, start, replay=replay, skip_before=fp.offset, idle_since=time.monotonic())
        t.last_ts = max((c[2] for c in replay), default=0)
        return t

    def _resume_renamed(self, old: FilePosition, group: FileGroup) -> None:
        folder = os.path.dirname(old.path) or "."
        try:
            found = next((e.path for e in os.scandir(folder) if e.inode() == old.inode and e.is_file()), None)
        except OSError:
            found = None
        if found is None:
            self.positions.forget(old.key)
            return
        try:
            fd = os.open(found, os.O_RDONLY)
        except OSError:
            self.positions.forget(old.key)
            return
        t = self._tail(old.path, group, old, fd)
        t.draining = True
        with self._lock:
            self._tails[old.key] = t

    def _read(
        self, t: _Tail, now: float, skip: bool = False
    ) -> tuple[list[Entry], tuple[FilePosition, int, int, int] | None]:
        s = self.settings
        if skip:
            return [], None  # over this cycle's budget: next cycle
        try:
            data = os.pread(t.fd, s.read_bytes, t.read_at)
        except OSError as exc:
            log.warning("cannot read %s: %s", t.path, exc)
            return [], None
        if data:
            self.metrics.read_bytes.labels(t.path).inc(len(data))
            if not t.buf:
                t.buf_since = now
            t.read_at += len(data)
            t.idle_since = now
        buf = t.buf + data if t.buf else data
        cut = buf.rfind(b"\n") + 1
        flush_partial = bool(buf) and (
            (not data and now - t.buf_since >= s.partial_timeout)
            or len(buf) - cut >= max(s.max_line_bytes, HARD_LINE_CAP)
            or (t.draining and not data)
        )
        if cut == 0 and not flush_partial:
            t.buf = buf
            return [], None
        base = t.read_at - len(buf)
        if flush_partial:
            raws = buf.split(b"\n")
            t.buf = b""
        else:
            raws = buf[:cut].split(b"\n")
            raws.pop()  # after the last newline
            # A new small object: keeping a slice of a big read would keep the whole read alive.
            t.buf = bytes(buf[cut:])
        t.buf_since = now
        return self._entries(t, raws, base, flush_partial)

    def _entries(
        self, t: _Tail, raws: list[bytes], base: int, partial_last: bool
    ) -> tuple[list[Entry], tuple[FilePosition, int, int, int] | None]:
        s = self.settings
        # One dict for the whole read: the pipeline copies an entry's labels before it changes them.
        labels = {**t.group.labels, "filename": t.path}
        key = t.pos.key
        if not t.replay and base >= t.skip_before and not s.max_line_bytes:
            return self._entries_plain(t, raws, base, partial_last, labels)
        entries: list[Entry] = []
        start = base
        first_new: int | None = None
        ts = max(time.time_ns(), t.last_ts + 1)
        k = 0  # index of the line in its new chunk
        for i, raw in enumerate(raws):
            end = start + len(raw) + (0 if partial_last and i == len(raws) - 1 else 1)
            line_start = start
            start = end
            stamp = self._replayed_ts(t, line_start)
            if line_start < t.skip_before:
                continue  # done before a restart (read again only to count lines of a recorded chunk)
            if stamp is None:
                if first_new is None:
                    first_new = line_start
                    ts = max(ts, t.last_ts + 1)
                stamp = ts + k
                k += 1
            t.last_ts = max(t.last_ts, stamp)
            limit = s.max_line_bytes
            if limit and len(raw) > limit:
                if not s.truncate_lines:
                    self.metrics.truncated.labels("dropped").inc()
                    continue
                raw = raw[:limit]
                self.metrics.truncated.labels("truncated").inc()
            entries.append(Entry(labels, raw.decode("utf-8", "replace"), stamp, source=key, start=line_start, end=end))
        if raws:
            self.metrics.read_lines.labels(t.path).inc(len(raws))
        chunk = (t.pos, first_new, start, ts) if first_new is not None else None
        return entries, chunk

    def _entries_plain(
        self, t: _Tail, raws: list[bytes], base: int, partial_last: bool, labels: dict[str, str]
    ) -> tuple[list[Entry], tuple[FilePosition, int, int, int] | None]:
        """_entries for the usual case: nothing to replay or skip, no line limit."""
        if not raws:
            return [], None
        ts = max(time.time_ns(), t.last_ts + 1)
        key = t.pos.key
        ends = list(itertools.accumulate((len(r) + 1 for r in raws), initial=base))
        if partial_last:
            ends[-1] -= 1
        entries = [
            Entry(labels, raw.decode("utf-8", "replace"), ts + i, source=key, start=ends[i], end=ends[i + 1])
            for i, raw in enumerate(raws)
        ]
        t.last_ts = ts + len(raws) - 1
        self.metrics.read_lines.labels(t.path).inc(len(raws))
        return entries, (t.pos, base, ends[-1], ts)

    def _replayed_ts(self, t: _Tail, offset: int) -> int | None:
        """The timestamp a line got before a restart, if it lies in a recorded chunk (lines come in order)."""
        while t.replay and t.replay[0][1] <= offset:
            t.replay.pop(0)
        if not t.replay or offset < t.replay[0][0]:
            return None
        # The lines of a chunk got consecutive nanoseconds from the chunk's first timestamp.
        t.replay_index = 0 if offset == t.replay[0][0] else t.replay_index + 1
        return t.replay[0][2] + t.replay_index

    def _check_rotation(self, t: _Tail, now: float) -> None:
        try:
            size = os.fstat(t.fd).st_size
        except OSError:
            return
        if t.draining:
            if t.read_at >= size and not t.buf:
                self._close(t)
            return
        if size < t.read_at:
            # copytruncate: the file was cut; what it now holds is new. Start over as a new generation.
            log.info("%s was truncated; reading it again from the start", t.path)
            fp = FilePosition(t.path, t.pos.inode, 0, t.pos.generation + 1)
            self.positions.track(fp)
            self._close(t, keep_fd=True)
            nt = _Tail(t.path, t.group, fp, t.fd, 0, last_ts=t.last_ts, idle_since=now)
            with self._lock:
                self._tails[fp.key] = nt
                self._current[t.path] = fp.key
            return
        try:
            st = os.stat(t.path)
            renamed = st.st_ino != t.pos.inode
        except FileNotFoundError:
            renamed = True
        if renamed:
            # Renamed (rotation) or deleted: finish this file, and pick up a new one at the path on the next scan.
            t.draining = True
            with self._lock:
                if self._current.get(t.path) == t.pos.key:
                    del self._current[t.path]
            self._last_scan = 0.0

    def _close(self, t: _Tail, keep_fd: bool = False) -> None:
        with self._lock:
            self._tails.pop(t.pos.key, None)
            if self._current.get(t.path) == t.pos.key:
                del self._current[t.path]
            self.closed.add(t.pos.key)
        if not keep_fd:
            os.close(t.fd)
