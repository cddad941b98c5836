"""The ruler's counters as Prometheus metrics, read from the manager at scrape time (Loki's names)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Loki prefixes the metrics of Prometheus' rule manager and notifier with `loki_`; destinations are labelled by
# kind (alertmanager, webhook, slack) and URL.


class RulerCollector(Collector):
    """Exposes evaluations, missed evaluations, notification and remote-write deliveries."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Read the manager's counters now."""
        stats = self.manager.stats()
        groups = GaugeMetricFamily("loki_prometheus_rule_groups", "Rule groups the ruler evaluates.")
        groups.add_metric([], stats["groups"])
        yield groups
        iterations = CounterMetricFamily(
            "loki_prometheus_rule_group_iterations", "Scheduled evaluations of rule groups, run or missed."
        )
        iterations.add_metric([], stats["iterations"] + stats["missed_iterations"])
        yield iterations
        missed = CounterMetricFamily(
            "loki_prometheus_rule_group_iterations_missed",
            "Evaluations of rule groups skipped because the previous one ran late or the process was paused.",
        )
        missed.add_metric([], stats["missed_iterations"])
        yield missed
        labels = ["kind", "destination"]
        sent = CounterMetricFamily(
            "loki_prometheus_notifications_sent", "Alerts delivered, per destination.", labels=labels
        )
        errors = CounterMetricFamily(
            "loki_prometheus_notifications_errors",
            "Alerts that failed to be delivered, per destination.",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            "loki_prometheus_notifications_dropped",
            "Alerts dropped because a destination's queue was full, per destination.",
            labels=labels,
        )
        queued = GaugeMetricFamily(
            "loki_prometheus_notifications_queue_length", "Alerts waiting to be delivered.", labels=labels
        )
        for s in stats["notifications"]:
            key = [str(s["kind"]), s["url"]]
            sent.add_metric(key, s["sent"])
            errors.add_metric(key, s["failed"])
            dropped.add_metric(key, s["dropped"])
            queued.add_metric(key, s["queued"])
        yield from (sent, errors, dropped, queued)
        remote = stats.get("remote_write")
        if remote:
            samples = CounterMetricFamily(
                "loglake_ruler_remote_write_samples",
                "Recorded samples sent by remote write, by outcome.",
                labels=["outcome"],
            )
            for outcome in ("sent", "failed", "dropped"):
                samples.add_metric([outcome], float(remote.get(outcome, 0)))
            yield samples
