"""Pushing lines of text to one stream in batches, each stamped with the time it was read."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from loglake.client.loki import LokiClient, PushStream


class LinePusher:
    """Collects lines for one stream and pushes them in batches; timestamps strictly increase, so order is kept."""

    def __init__(
        self,
        client: LokiClient,
        labels: Mapping[str, str],
        *,
        batch_size: int = 1000,
        batch_bytes: int = 1 << 20,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be 1 or more, got {batch_size}")
        self.client = client
        self.labels = dict(labels)
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.clock = clock
        self.pushed = 0
        self._entries: list[tuple[int, str]] = []
        self._bytes = 0
        self._last_ts = 0

    @property
    def pending(self) -> int:
        """Return how many lines wait to be pushed."""
        return len(self._entries)

    def add(self, line: str) -> None:
        """Stamp a line with the current time and push the batch if it is full."""
        # Two lines read in the same nanosecond would be one duplicate to the server: keep them apart and in order.
        ts = max(self.clock(), self._last_ts + 1)
        self._last_ts = ts
        self._entries.append((ts, line))
        self._bytes += len(line)
        if len(self._entries) >= self.batch_size or self._bytes >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        """Push the lines collected so far (raises LokiError with the server's message if it refuses them)."""
        if not self._entries:
            return
        entries, self._entries, self._bytes = self._entries, [], 0
        self.client.push([PushStream(self.labels, entries)])
        self.pushed += len(entries)


def push_lines(pusher: LinePusher, lines: Iterable[str], *, max_wait: float = 1.0) -> int:
    """Push every line of `lines` (trailing newline removed), never holding a line longer than `max_wait` seconds.

    Lines are read on a helper thread so that a slow source (`tail -f`) still gets its lines pushed on time.
    Returns how many lines were pushed.
    """
    items: queue.Queue[str | None] = queue.Queue(maxsize=4 * pusher.batch_size)

    def read() -> None:
        for line in lines:
            items.put(line.removesuffix("\n").removesuffix("\r"))
        items.put(None)

    threading.Thread(target=read, name="push-reader", daemon=True).start()
    deadline = 0.0
    while True:
        timeout = max(0.0, deadline - time.monotonic()) if pusher.pending else None
        try:
            line = items.get(timeout=timeout)
        except queue.Empty:
            pusher.flush()
            continue
        if line is None:
            break
        if not pusher.pending:
            deadline = time.monotonic() + max_wait
        pusher.add(line)
    pusher.flush()
    return pusher.pushed
