"""The server's Prometheus metrics, named as Loki names them where the concept is the same."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

from loglake import __version__

disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServerMetrics:
    """Every metric of one server process, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.lines_received = Counter(
            "loki_distributor_lines_received", "Log lines received, per tenant.", ["tenant"], registry=r
        )
        self.bytes_received = Counter(
            "loki_distributor_bytes_received", "Line bytes received, per tenant.", ["tenant"], registry=r
        )
        self.structured_metadata_bytes = Counter(
            "loki_distributor_structured_metadata_bytes_received",
            "Structured metadata bytes received, per tenant.",
            ["tenant"],
            registry=r,
        )
        self.discarded_samples = Counter(
            "loki_discarded_samples", "Lines discarded, by reason and tenant.", ["reason", "tenant"], registry=r
        )
        self.discarded_bytes = Counter(
            "loki_discarded_bytes", "Line bytes discarded, by reason and tenant.", ["reason", "tenant"], registry=r
        )
        self.duplicates = Counter(
            "loglake_ingester_duplicate_entries",
            "Entries dropped as duplicates of stored ones.",
            ["tenant"],
            registry=r,
        )
        self.wal_sync = Histogram(
            "loglake_wal_sync_duration_seconds",
            "Time to fsync one group commit of the WAL.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.wal_group = Histogram(
            "loglake_wal_group_commit_size",
            "Pushes made durable by one fsync.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.flush_duration = Histogram(
            "loglake_flush_duration_seconds",
            "Time to write the head to Parquet blocks.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.compaction_duration = Histogram(
            "loglake_compaction_duration_seconds",
            "Time to merge one window's blocks.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.compacted_blocks = Counter("loglake_compacted_blocks", "Blocks merged into larger ones.", registry=r)
        self.flushed_rows = Counter("loglake_flushed_entries", "Entries written to blocks.", registry=r)
        self.flushed_bytes = Counter("loglake_flushed_block_bytes", "Bytes of Parquet blocks written.", registry=r)
        self.request_duration = Histogram(
            "loki_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route", "status_code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.build_info = Gauge("loki_build_info", "Build information (loglake).", ["version", "app"], registry=r)
        self.build_info.labels(__version__, "loglake").set(1)

    def add_state_collector(self, collect: StateSource) -> None:
        """Expose values read from the server's state at scrape time (streams, head bytes)."""
        self.registry.register(_StateCollector(collect))

    def render(self) -> bytes:
        """Return the Prometheus text exposition."""
        return generate_latest(self.registry)


class StateSource:
    """What the state collector asks the server at scrape time."""

    def streams_per_tenant(self) -> dict[str, int]:
        """Return the number of streams of each tenant."""
        raise NotImplementedError

    def head_bytes(self) -> int:
        """Return the line bytes held in memory."""
        raise NotImplementedError


class _StateCollector:
    def __init__(self, source: StateSource) -> None:
        self.source = source

    def collect(self) -> list[GaugeMetricFamily]:
        streams = GaugeMetricFamily("loki_ingester_memory_streams", "Streams known, per tenant.", labels=["tenant"])
        for tenant, n in sorted(self.source.streams_per_tenant().items()):
            streams.add_metric([tenant], n)
        head = GaugeMetricFamily("loglake_head_bytes", "Line bytes held in the in-memory head.")
        head.add_metric([], self.source.head_bytes())
        return [streams, head]
