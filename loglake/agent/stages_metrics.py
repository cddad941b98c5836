"""Prometheus metrics the pipeline stages keep: the dropped-entries counters and the `metrics` stage's series."""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

__all__ = [
    "DEFAULT_BUCKETS",
    "StreamMetric",
    "dropped_entries_by_label_counter",
    "dropped_entries_counter",
    "stream_metric",
]

DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_per_registry: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, object]] = weakref.WeakKeyDictionary()


def _shared(registry: CollectorRegistry, key: str, make: Callable[[], object]) -> object:
    with _lock:
        table = _per_registry.setdefault(registry, {})
        if key not in table:
            table[key] = make()
        return table[key]


def dropped_entries_counter(registry: CollectorRegistry) -> Counter:
    """`loglake_agent_dropped_entries_total{reason}`: entries the pipeline dropped, one per registry."""
    return _shared(  # type: ignore[return-value]
        registry,
        "dropped",
        lambda: Counter(
            "loglake_agent_dropped_entries",
            "Log entries dropped by a pipeline stage, by reason (Promtail's logentry_dropped_lines_total).",
            ["reason"],
            registry=registry,
        ),
    )


def dropped_entries_by_label_counter(registry: CollectorRegistry) -> Counter:
    """`loglake_agent_dropped_entries_by_label_total{label_name,label_value}`: rate-limit drops per label value."""
    return _shared(  # type: ignore[return-value]
        registry,
        "dropped_by_label",
        lambda: Counter(
            "loglake_agent_dropped_entries_by_label",
            "Log entries dropped by the limit stage, by the label it limits on.",
            ["label_name", "label_value"],
            registry=registry,
        ),
    )


_VALID_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class _Series:
    __slots__ = ("buckets", "count", "labels", "max_idle", "touched", "value")

    def __init__(self, labels: dict[str, str], n_buckets: int) -> None:
        self.labels = labels
        self.value = 0.0  # counter/gauge value, histogram sum
        self.count = 0
        self.buckets = [0] * n_buckets
        self.touched = 0.0
        self.max_idle = 300.0


class StreamMetric:
    """One metric family whose series are keyed by the entry's stream labels, as Promtail's custom metrics.

    A series not updated for its `max_idle_duration` disappears at the next scrape.
    """

    def __init__(self, name: str, kind: str, description: str, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.name = name
        self.kind = kind
        self.description = description or name
        self.buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self._series: dict[frozenset[tuple[str, str]], _Series] = {}
        self._lock = threading.Lock()

    def _get(self, labels: dict[str, str], max_idle: float) -> _Series:
        key = frozenset(labels.items())
        series = self._series.get(key)
        if series is None:
            # Prometheus has no room for reserved (`__`) or invalid label names.
            clean = {k: v for k, v in labels.items() if not k.startswith("__") and _VALID_LABEL.fullmatch(k)}
            series = _Series(clean, len(self.buckets))
            self._series[key] = series
        series.touched = time.monotonic()
        series.max_idle = max_idle
        return series

    def add(self, labels: dict[str, str], amount: float, max_idle: float) -> None:
        """Add `amount` to the counter or gauge series of these labels."""
        with self._lock:
            self._get(labels, max_idle).value += amount

    def set(self, labels: dict[str, str], value: float, max_idle: float) -> None:
        """Set the gauge series of these labels."""
        with self._lock:
            self._get(labels, max_idle).value = value

    def observe(self, labels: dict[str, str], value: float, max_idle: float) -> None:
        """Record one histogram observation for these labels."""
        with self._lock:
            series = self._get(labels, max_idle)
            series.value += value
            series.count += 1
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series.buckets[i] += 1

    def describe(self) -> list[Metric]:
        """The family's name and type, so the registry can refuse a clash with another metric."""
        return [self._family()]

    def _family(self) -> Metric:
        if self.kind == "counter" and self.name.endswith("_total"):
            return Metric(self.name[: -len("_total")], self.description, "counter")
        # Promtail exposes a counter under the configured name; without `_total` that only fits an untyped family.
        return Metric(self.name, self.description, "unknown" if self.kind == "counter" else self.kind)

    def collect(self) -> Iterator[Metric]:
        """Yield the family with one sample (or histogram sample set) per live series."""
        family = self._family()
        now = time.monotonic()
        with self._lock:
            for key, s in list(self._series.items()):
                if now - s.touched >= s.max_idle:
                    del self._series[key]
                    continue
                if self.kind == "histogram":
                    for bound, n in zip(self.buckets, s.buckets, strict=True):
                        family.add_sample(self.name + "_bucket", {**s.labels, "le": floatToGoString(bound)}, float(n))
                    family.add_sample(self.name + "_bucket", {**s.labels, "le": "+Inf"}, float(s.count))
                    family.add_sample(self.name + "_sum", dict(s.labels), s.value)
                    family.add_sample(self.name + "_count", dict(s.labels), float(s.count))
                else:
                    family.add_sample(self.name, dict(s.labels), s.value)
        yield family


def stream_metric(
    registry: CollectorRegistry, name: str, kind: str, description: str, buckets: Sequence[float] | None
) -> StreamMetric:
    """The registry's StreamMetric of this name, created and registered on first use (ValueError on a clash)."""
    with _lock:
        table = _per_registry.setdefault(registry, {})
        key = "metric:" + name
        existing = table.get(key)
        if existing is not None:
            assert isinstance(existing, StreamMetric)
            if existing.kind != kind:
                raise ValueError(f"metric {name} is already defined as a {existing.kind}")
            return existing
        metric = StreamMetric(name, kind, description, buckets if buckets is not None else DEFAULT_BUCKETS)
        registry.register(metric)  # raises ValueError when another collector owns the name
        table[key] = metric
        return metric
