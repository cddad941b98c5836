"""Per-tenant ingestion rate limit: a token bucket per tenant, as Loki's distributor keeps one.

The bucket follows golang.org/x/time/rate, which Loki uses: it starts full, refills at `rate` bytes per
second up to `burst` bytes, and a push is allowed only if the whole push fits in the tokens left (a push
larger than the burst is never allowed). A refused push takes no tokens. With a rate of 0 the burst is a
one-off allowance that is never refilled.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

BYTES_IN_MB = 1 << 20
"""Loki's "MB" in ingestion_rate_mb and ingestion_burst_size_mb is a mebibyte."""


@dataclass
class _Bucket:
    rate: float
    burst: int
    tokens: float
    last: float


class RateLimiter:
    """Token buckets per tenant; rate and burst are read from the limits on every call, so reloads apply."""

    def __init__(self, limits: Any) -> None:
        self.limits = limits
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def rate(self, tenant: str) -> float:
        """Return the tenant's allowed rate in bytes per second (`ingestion_rate_mb` in MiB)."""
        return float(self.limits.ingestion_rate_mb) * BYTES_IN_MB

    def burst(self, tenant: str) -> int:
        """Return the tenant's burst size in bytes (`ingestion_burst_size_mb` in MiB)."""
        return int(float(self.limits.ingestion_burst_size_mb) * BYTES_IN_MB)

    def allow(self, tenant: str, nbytes: int, now_s: float) -> bool:
        """Take `nbytes` tokens from the tenant's bucket at time `now_s` (seconds); say whether it had them."""
        rate, burst = self.rate(tenant), self.burst(tenant)
        with self._lock:
            bucket = self._buckets.get(tenant)
            if bucket is None:
                bucket = self._buckets[tenant] = _Bucket(rate, burst, float(burst), now_s)
            elif bucket.rate != rate or bucket.burst != burst:
                # As rate.Limiter.SetLimitAt/SetBurstAt: settle the tokens earned so far, then switch.
                bucket.tokens = self._advance(bucket, now_s)
                bucket.last = max(bucket.last, now_s)
                bucket.rate, bucket.burst = rate, burst
            if math.isinf(rate):
                return True
            if nbytes > burst:
                return False
            tokens = self._advance(bucket, now_s) - nbytes
            if tokens < 0:
                return False
            bucket.tokens = tokens
            bucket.last = max(bucket.last, now_s)
            return True

    @staticmethod
    def _advance(bucket: _Bucket, now_s: float) -> float:
        elapsed = max(0.0, now_s - bucket.last)
        return min(float(bucket.burst), bucket.tokens + elapsed * bucket.rate)
