"""Where the agent is in each file: Promtail's positions file, written atomically, plus a journal of read chunks.

The `positions:` map (path → offset as a string) is Promtail's format, so either tool can pick up the other's
file. loglake keeps more under `loglake:`: the file's inode (to finish a file renamed while the agent was down),
and the *chunks* read but not yet acknowledged, each with the timestamp its first line got. After a crash the
agent reads those chunks again and gives every line the same timestamp as before, so a line the server already
stored is a duplicate it drops: nothing is lost and nothing is stored twice. Chunks are appended to a journal
(one fsync per read cycle) and folded into the positions file when it is rewritten.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

log = logging.getLogger(__name__)


@dataclass
class FilePosition:
    """One file (a path, an inode, a generation bumped by each truncation) and how far it is done."""

    path: str
    inode: int
    offset: int  # every line before this offset was acknowledged or dropped
    generation: int = 0
    chunks: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, first timestamp) read

    @property
    def key(self) -> str:
        """The source name entries of this file carry."""
        return source_key(self.path, self.inode, self.generation)


def source_key(path: str, inode: int, generation: int) -> str:
    """Name one file's incarnation: rotation gives a new inode, truncation a new generation."""
    return f"{path}|{inode}|{generation}"


class Positions:
    """The positions file and its chunk journal; thread-safe."""

    def __init__(self, path: Path, ignore_invalid_yaml: bool = False) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self._lock = threading.Lock()
        self.files: dict[str, FilePosition] = {}
        self._load(ignore_invalid_yaml)
        self._journal = open(self.journal_path, "ab")  # kept open for the agent's life

    # ---- loading --------------------------------------------------------------------------------------------

    def _load(self, ignore_invalid_yaml: bool) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        try:
            doc = yaml.safe_load(text) or {}
            if not isinstance(doc, dict):
                raise ValueError("not a mapping")
        except (yaml.YAMLError, ValueError) as exc:
            if not ignore_invalid_yaml:
                raise ValueError(f"positions file {self.path} is not valid YAML: {exc}") from None
            log.warning("ignoring the invalid positions file %s: %s", self.path, exc)
            doc = {}
        ours = doc.get("loglake") or {}
        for item in ours.get("files") or []:
            fp = FilePosition(
                str(item["path"]),
                int(item["inode"]),
                int(item["offset"]),
                int(item.get("generation", 0)),
                [tuple(c) for c in item.get("chunks") or []],  # type: ignore[misc]
            )
            self.files[fp.key] = fp
        # A file Promtail (or an older agent) recorded: only its path and offset are known.
        known = {fp.path for fp in self.files.values()}
        for p, offset in (doc.get("positions") or {}).items():
            if str(p) not in known:
                try:
                    inode = os.stat(p).st_ino
                except OSError:
                    continue
                fp = FilePosition(str(p), inode, int(offset))
                self.files[fp.key] = fp
        self._replay_journal()

    def _replay_journal(self) -> None:
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return
        for line in raw.split(b"\n"):
            if not line:
                continue
            try:
                path, inode, generation, start, end, ts = orjson.loads(line)
            except (orjson.JSONDecodeError, ValueError):
                continue  # a torn last record: its lines were never handed on
            key = source_key(path, inode, generation)
            fp = self.files.get(key)
            if fp is None:
                fp = self.files[key] = FilePosition(path, inode, 0, generation)
            if end > fp.offset:
                fp.chunks.append((start, end, ts))

    # ---- use ------------------------------------------------------------------------------------------------

    def find(self, path: str, inode: int) -> FilePosition | None:
        """Return the newest generation recorded for this path and inode."""
        with self._lock:
            found = [fp for fp in self.files.values() if fp.path == path and fp.inode == inode]
        return max(found, key=lambda fp: fp.generation) if found else None

    def others(self, path: str, inode: int) -> list[FilePosition]:
        """Return the files recorded under `path` that are not this inode (renamed away while we were down)."""
        with self._lock:
            return [fp for fp in self.files.values() if fp.path == path and fp.inode != inode]

    def track(self, fp: FilePosition) -> None:
        """Start recording a file."""
        with self._lock:
            self.files[fp.key] = fp

    def forget(self, key: str) -> None:
        """Stop recording a file (read to its end and acknowledged, or gone)."""
        with self._lock:
            self.files.pop(key, None)

    def advance(self, offsets: dict[str, int]) -> None:
        """Move files' offsets forward (never back) and drop the chunks wholly before them."""
        with self._lock:
            for key, offset in offsets.items():
                fp = self.files.get(key)
                if fp is not None and offset > fp.offset:
                    fp.offset = offset
                    fp.chunks = [c for c in fp.chunks if c[1] > offset]

    def record_chunks(self, chunks: list[tuple[FilePosition, int, int, int]]) -> None:
        """Make chunks (file, start, end, first timestamp) durable before their lines are handed on."""
        if not chunks:
            return
        lines = []
        with self._lock:
            for fp, start, end, ts in chunks:
                fp.chunks.append((start, end, ts))
                lines.append(orjson.dumps([fp.path, fp.inode, fp.generation, start, end, ts]))
            self._journal.write(b"\n".join(lines) + b"\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())

    def save(self) -> None:
        """Rewrite the positions file atomically (temp file, fsync, rename) and empty the journal."""
        with self._lock:
            current: dict[str, FilePosition] = {}
            for fp in self.files.values():
                old = current.get(fp.path)
                if old is None or (fp.generation, fp.inode) > (old.generation, old.inode):
                    current[fp.path] = fp
            doc: dict[str, Any] = {
                "positions": {p: str(fp.offset) for p, fp in sorted(current.items())},
                "loglake": {
                    "files": [
                        {
                            "path": fp.path,
                            "inode": fp.inode,
                            "generation": fp.generation,
                            "offset": fp.offset,
                            "chunks": [list(c) for c in fp.chunks],
                        }
                        for fp in self.files.values()
                    ]
                },
            }
            tmp = self.path.with_name(self.path.name + ".tmp")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            # Every chunk is in the file now; the journal starts over.
            self._journal.truncate(0)
            self._journal.seek(0)

    def close(self) -> None:
        """Save and close the journal."""
        self.save()
        self._journal.close()
