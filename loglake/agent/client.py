"""Shipping entries to a Loki-compatible push API: batches per tenant, protobuf + snappy, retries with backoff.

Entries wait in batches, one per tenant, until a batch holds `batch_bytes` of lines or is `batch_wait` old; one
sender thread pushes batches in turn. 429, 5xx and connection errors are retried with exponential backoff and
jitter, up to `max_retries`; other 4xx answers are logged and the batch dropped (counted), as Promtail does.
`send` blocks while more than six batches wait, so a server that is down makes the agent stop reading, not grow.
Every entry is reported to `on_done` once it was stored or dropped; the agent moves file positions on that.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import cramjam
import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from loglake.agent.entry import Entry
from loglake.ingest.pushproto import encode_push

log = logging.getLogger(__name__)

TENANT_LABEL = "__tenant_id__"  # Promtail's reserved label: the entry's tenant


@dataclass
class ClientSettings:
    """One `clients` entry of the config, with Promtail's defaults."""

    url: str
    tenant_id: str = ""
    batch_wait: float = 1.0
    batch_bytes: int = 1 << 20
    timeout: float = 10.0
    min_backoff: float = 0.5
    max_backoff: float = 300.0
    max_retries: int = 10
    external_labels: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None
    bearer_token: str | None = None
    drop_rate_limited_batches: bool = False
    max_pending_bytes: int = 0  # 0: six batches
    verify: bool | str = True


class ClientMetrics:
    """Promtail's client metrics (same names, so its dashboards work)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent_entries = Counter("promtail_sent_entries", "Entries sent.", ["host"], registry=registry)
        self.sent_bytes = Counter("promtail_sent_bytes", "Line bytes sent.", ["host"], registry=registry)
        self.dropped = Counter(
            "promtail_dropped_entries", "Entries dropped after failed pushes.", ["host", "reason"], registry=registry
        )
        self.retries = Counter("promtail_batch_retries", "Push retries.", ["host"], registry=registry)
        self.duration = Histogram(
            "promtail_request_duration_seconds", "Push request time.", ["status_code", "host"], registry=registry
        )


@dataclass
class _Batch:
    tenant: str
    entries: list[Entry] = field(default_factory=list)
    nbytes: int = 0
    created: float = field(default_factory=time.monotonic)


class Client:
    """Pushes entries to one server."""

    def __init__(
        self,
        settings: ClientSettings,
        on_done: Callable[[list[Entry]], None],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.on_done = on_done
        self.metrics = ClientMetrics(registry or CollectorRegistry())
        self.host = urlsplit(settings.url).netloc
        self.max_pending = settings.max_pending_bytes or 6 * settings.batch_bytes
        self._batches: dict[str, _Batch] = {}
        self._pending = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline = float("inf")
        self._stopped = threading.Event()  # wakes a backoff sleep
        headers = {"Content-Type": "application/x-protobuf", "User-Agent": "loglake-agent", **settings.headers}
        if settings.bearer_token:
            headers["Authorization"] = f"Bearer {settings.bearer_token}"
        self._http = httpx.Client(
            timeout=settings.timeout, headers=headers, auth=settings.basic_auth, verify=settings.verify
        )
        self._thread = threading.Thread(target=self._run, name=f"loglake-client-{self.host}", daemon=True)
        self._thread.start()

    # ---- producer side --------------------------------------------------------------------------------------

    def send(self, entries: list[Entry]) -> None:
        """Queue entries; blocks while more than the pending limit waits (the server is slow or down)."""
        s = self.settings
        with self._cond:
            while self._pending >= self.max_pending and not self._stopping:
                self._cond.wait(0.5)
            for e in entries:
                tenant = e.tenant or e.labels.get(TENANT_LABEL) or s.tenant_id
                batch = self._batches.get(tenant)
                if batch is None:
                    batch = self._batches[tenant] = _Batch(tenant)
                batch.entries.append(e)
                size = len(e.line)
                batch.nbytes += size
                self._pending += size
            self._cond.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Send what waits (retrying until `timeout`), then stop. Unsent entries are not reported done."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._stopped.set()
        self._thread.join()
        self._http.close()

    # ---- sender ---------------------------------------------------------------------------------------------

    def _next_batch(self) -> _Batch | None:
        """Wait for a batch that is full or old enough (any batch when stopping); None once stopped and empty."""
        s = self.settings
        with self._cond:
            while True:
                now = time.monotonic()
                ready = [
                    b
                    for b in self._batches.values()
                    if b.entries and (self._stopping or b.nbytes >= s.batch_bytes or now - b.created >= s.batch_wait)
                ]
                if ready:
                    batch = min(ready, key=lambda b: b.created)
                    del self._batches[batch.tenant]
                    return batch
                if self._stopping:
                    return None
                oldest = min((b.created for b in self._batches.values() if b.entries), default=None)
                self._cond.wait(s.batch_wait if oldest is None else max(0.001, oldest + s.batch_wait - now))

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # A full batch may hold more than batch_bytes (one send() call); push it in parts of about that size.
            for part in self._split(batch):
                done = self._push(part)
                with self._cond:
                    self._pending -= part.nbytes
                    self._cond.notify_all()
                if done:
                    self.on_done(part.entries)

    def _split(self, batch: _Batch) -> list[_Batch]:
        limit = self.settings.batch_bytes
        if batch.nbytes <= limit:
            return [batch]
        parts: list[_Batch] = [_Batch(batch.tenant)]
        for e in batch.entries:
            last = parts[-1]
            if last.entries and last.nbytes + len(e.line) > limit:
                last = _Batch(batch.tenant)
                parts.append(last)
            last.entries.append(e)
            last.nbytes += len(e.line)
        return parts

    def _body(self, entries: list[Entry]) -> bytes:
        external = self.settings.external_labels
        streams: dict[tuple[tuple[str, str], ...], list[tuple[int, str, dict[str, str] | None]]] = {}
        keys: dict[int, tuple[tuple[str, str], ...]] = {}  # entries of one read share their labels dict
        for e in entries:
            key = keys.get(id(e.labels))
            if key is None:
                labels = {**external, **e.labels} if external else e.labels
                if TENANT_LABEL in labels:
                    labels = {k: v for k, v in labels.items() if k != TENANT_LABEL}
                key = keys[id(e.labels)] = tuple(sorted(labels.items()))
            streams.setdefault(key, []).append((e.ts_ns, e.line, e.metadata or None))
        return bytes(cramjam.snappy.compress_raw(encode_push(streams.items())))

    def _push(self, batch: _Batch) -> bool:
        """Push one batch with retries; True when it was stored or dropped for good (False: stopped first)."""
        s = self.settings
        body = self._body(batch.entries)
        headers = {"X-Scope-OrgID": batch.tenant} if batch.tenant else {}
        attempt = 0
        while True:
            status = -1
            t0 = time.perf_counter()
            try:
                r = self._http.post(s.url, content=body, headers=headers)
                status = r.status_code
                text = r.text[:500]
            except httpx.HTTPError as exc:
                text = str(exc)
            self.metrics.duration.labels(str(status), self.host).observe(time.perf_counter() - t0)
            if 200 <= status < 300:
                self.metrics.sent_entries.labels(self.host).inc(len(batch.entries))
                self.metrics.sent_bytes.labels(self.host).inc(batch.nbytes)
                return True
            retriable = status == -1 or status == 429 or status >= 500
            if status == 429 and s.drop_rate_limited_batches:
                retriable = False
            if not retriable:
                log.error("push to %s refused (%s), dropping %d entries: %s", s.url, status, len(batch.entries), text)
                self.metrics.dropped.labels(self.host, "rate_limited" if status == 429 else "ingester_error").inc(
                    len(batch.entries)
                )
                return True
            attempt += 1
            if attempt > s.max_retries:
                n = len(batch.entries)
                log.error("push to %s failed %d times (%s), dropping %d entries", s.url, attempt, text, n)
                self.metrics.dropped.labels(self.host, "max_retries").inc(len(batch.entries))
                return True
            self.metrics.retries.labels(self.host).inc()
            delay = min(s.max_backoff, s.min_backoff * 2 ** (attempt - 1))
            delay = random.uniform(delay / 2, delay)  # jitter, so agents do not retry in step
            log.warning("push to %s failed (%s: %s); retry %d in %.1fs", s.url, status, text, attempt, delay)
            if time.monotonic() + delay > self._deadline:
                return False
            self._stopped.wait(delay)
