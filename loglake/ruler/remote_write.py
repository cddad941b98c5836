"""Prometheus remote write 1.0: recorded samples as a snappy-compressed `prometheus.WriteRequest` protobuf."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence

import cramjam

from loglake.ingest.pushproto import varint
from loglake.ruler.notify import HttpSender

__all__ = ["RemoteWriter", "Series", "encode_write_request"]

Series = tuple[Mapping[str, str], Sequence[tuple[int, float]]]
"""One time series: labels (with `__name__`) and its samples as (timestamp in ms, value)."""

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "User-Agent": "loglake-ruler",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def _field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _label(name: str, value: str) -> bytes:
    return _field_bytes(1, name.encode()) + _field_bytes(2, value.encode())


def _sample(timestamp_ms: int, value: float) -> bytes:
    # Field 1 is a double (wire type 1, eight little-endian bytes); field 2 an int64 varint.
    return b"\x09" + struct.pack("<d", value) + b"\x10" + varint(timestamp_ms)


def encode_write_request(series: Iterable[Series]) -> bytes:
    """Return the protobuf bytes (uncompressed) of a WriteRequest holding the series, labels sorted by name."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for name in sorted(labels):
            ts += _field_bytes(1, _label(name, labels[name]))
        for timestamp_ms, value in samples:
            ts += _field_bytes(2, _sample(timestamp_ms, value))
        out += _field_bytes(1, bytes(ts))
    return bytes(out)


STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
"""Prometheus' staleness marker: the NaN that says a series ended."""


class RemoteWriter:
    """Sends series to one remote-write endpoint from a bounded queue, with retries; counts samples."""

    def __init__(
        self,
        url: str,
        *,
        external_labels: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_queue: int = 1000,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.external_labels = dict(external_labels or {})
        self.sender = HttpSender(
            url,
            kind="remote_write",
            headers={**HEADERS, **(headers or {})},
            max_queue=max_queue,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )

    def write(self, series: Sequence[Series]) -> None:
        """Queue the series (external labels added where absent); never blocks."""
        if not series:
            return
        labelled = [({**self.external_labels, **labels}, samples) for labels, samples in series]
        body = cramjam.snappy.compress_raw(encode_write_request(labelled))
        count = sum(len(samples) for _, samples in series)
        self.sender.submit(bytes(body), count)

    async def start(self) -> None:
        """Start sending."""
        await self.sender.start()

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Send what is queued (for up to `drain_timeout` seconds) and stop."""
        await self.sender.stop(drain_timeout)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty; return False on timeout."""
        return await self.sender.drain(timeout)

    def stats(self) -> dict[str, object]:
        """Return counters in samples (sent, failed, dropped) and queued requests."""
        return self.sender.stats()


def is_stale(value: float) -> bool:
    """Return whether a value is Prometheus' staleness marker."""
    return math.isnan(value) and struct.pack("<d", value) == struct.pack("<d", STALE_NAN)
