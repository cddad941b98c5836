"""The write-ahead log: numbered segment files of checksummed records, fsynced before a push is answered."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa

from loglake.model import ENTRY_SCHEMA, LabelSet
from loglake.store.files import fsync_path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # payload length, crc32 of payload
_SEGMENT_SUFFIX = ".wal"
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


@dataclass
class WalRecord:
    """One acknowledged push of one tenant: its entries and the label sets of the streams they belong to."""

    tenant: str
    streams: dict[int, LabelSet]
    entries: pa.RecordBatch


def encode_record(record: WalRecord) -> bytes:
    """Serialize a record's payload (Arrow IPC with the tenant and streams in the schema metadata)."""
    meta = orjson.dumps({"tenant": record.tenant, "streams": [[sid, list(ls)] for sid, ls in record.streams.items()]})
    sink = pa.BufferOutputStream()
    schema = ENTRY_SCHEMA.with_metadata({b"loglake": meta})
    with pa.ipc.new_stream(sink, schema, options=_IPC_OPTIONS) as writer:
        writer.write_batch(record.entries)
    return sink.getvalue().to_pybytes()


def decode_record(payload: bytes) -> WalRecord:
    """Read a record back from its payload."""
    reader = pa.ipc.open_stream(pa.py_buffer(payload))
    meta = orjson.loads(reader.schema.metadata[b"loglake"])
    batches = list(reader)
    entries = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches, ENTRY_SCHEMA).combine_chunks()
    if isinstance(entries, pa.Table):
        entries = entries.to_batches()[0]
    streams = {int(sid): tuple((k, v) for k, v in pairs) for sid, pairs in meta["streams"]}
    return WalRecord(meta["tenant"], streams, entries.replace_schema_metadata(None))


def segment_path(directory: Path, seq: int) -> Path:
    """Return the path of segment number `seq`."""
    return directory / f"{seq:010d}{_SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """Return the sequence numbers of the segments in `directory`, ascending."""
    if not directory.exists():
        return []
    seqs = []
    for p in directory.iterdir():
        if p.suffix == _SEGMENT_SUFFIX and p.stem.isdigit():
            seqs.append(int(p.stem))
    return sorted(seqs)


def read_segment(path: Path) -> Iterator[WalRecord]:
    """Yield the intact records of a segment; stop at a torn or corrupt tail (a crash mid-write)."""
    data = path.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        end = start + length
        if end > len(data):
            log.warning("WAL segment %s: torn record at byte %d (crash during write); ignoring the tail", path, pos)
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            log.warning("WAL segment %s: checksum mismatch at byte %d; ignoring the rest of the segment", path, pos)
            return
        yield decode_record(payload)
        pos = end
    if pos != len(data):
        log.warning("WAL segment %s: %d stray bytes at the end ignored", path, len(data) - pos)


class WalWriter:
    """Appends records to the current segment; `sync()` makes everything written so far durable."""

    def __init__(self, directory: Path, seq: int) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.seq = seq
        self._file = open(segment_path(directory, seq), "ab")
        fsync_path(directory)
        self.bytes_written = 0

    def write(self, payload: bytes) -> None:
        """Append one record payload (not yet durable)."""
        self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload)))
        self._file.write(payload)
        self.bytes_written += len(payload) + _HEADER.size

    def sync(self) -> None:
        """Flush and fsync the current segment."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def rotate(self) -> int:
        """Seal the current segment and start the next; return the sealed segment's number."""
        self.sync()
        self._file.close()
        sealed = self.seq
        self.seq += 1
        self._file = open(segment_path(self.directory, self.seq), "ab")
        fsync_path(self.directory)
        return sealed

    def close(self) -> None:
        """Sync and close the current segment."""
        if not self._file.closed:
            self.sync()
            self._file.close()


class NoWal:
    """Stands in for the WAL when it is disabled: nothing is written, nothing survives a crash."""

    def __init__(self, seq: int) -> None:
        self.seq = seq

    def write(self, payload: bytes) -> None:
        """Discard a record."""

    def sync(self) -> None:
        """Nothing to make durable."""

    def rotate(self) -> int:
        """Start a new (notional) segment; return the sealed number."""
        self.seq += 1
        return self.seq - 1

    def close(self) -> None:
        """Nothing to close."""


def remove_segments_upto(directory: Path, seq: int) -> None:
    """Delete the segments numbered `seq` and below (their data is in blocks now)."""
    for s in list_segments(directory):
        if s <= seq:
            segment_path(directory, s).unlink(missing_ok=True)
    fsync_path(directory)
