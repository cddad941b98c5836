"""Status endpoints: readiness, Prometheus metrics, the running config, build info and flush."""

from __future__ import annotations

from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

import loglake
from tests.conftest import LoglakeServer
from tests.helpers import now_ns, push_json, read_all, stream

S = 10**9


def samples(c: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of /metrics, keyed by (name, labels)."""
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Return the sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


def test_ready_answers_200_ready(server: LoglakeServer) -> None:
    with server.client() as c:
        r = c.get("/ready")
        assert (r.status_code, r.text.strip()) == (200, "ready")


def test_metrics_count_received_lines_and_bytes_per_tenant(make_server: Any) -> None:
    server = make_server({"auth_enabled": True})
    base = now_ns() - 10 * S
    with server.client("team-a") as a, server.client("team-b") as b:
        assert push_json(a, [stream({"job": "m"}, [(base, "12345"), (base + 1, "678")])]).status_code == 204
        r = push_json(b, [stream({"job": "m"}, [(base, "x")]), stream({"job": "n"}, [(base, "yz")])])
        assert r.status_code == 204
        m = samples(a)
    assert value(m, "loki_distributor_lines_received_total", tenant="team-a") == 2
    assert value(m, "loki_distributor_bytes_received_total", tenant="team-a") == 8
    assert value(m, "loki_distributor_lines_received_total", tenant="team-b") == 2
    assert value(m, "loki_distributor_bytes_received_total", tenant="team-b") == 3
    assert value(m, "loki_ingester_memory_streams", tenant="team-a") == 1, "active streams per tenant"
    assert value(m, "loki_ingester_memory_streams", tenant="team-b") == 2


def test_metrics_count_discarded_lines_and_bytes_by_reason(make_server: Any) -> None:
    server = make_server({"limits_config": {"max_line_size": "10B"}})
    base = now_ns() - 10 * S
    with server.client() as c:
        body = [stream({"job": "d"}, [(base, "short"), (base + 1, "far too long a line"), (base + 2, "y" * 30)])]
        assert push_json(c, body).status_code == 400
        m = samples(c)
    assert value(m, "loki_discarded_samples_total", reason="line_too_long", tenant="fake") == 2
    assert value(m, "loki_discarded_bytes_total", reason="line_too_long", tenant="fake") == 19 + 30
    assert value(m, "loki_distributor_lines_received_total", tenant="fake") == 1, "the valid line still counts"


def test_metrics_show_head_bytes_wal_syncs_flushes_and_request_latency(server: LoglakeServer) -> None:
    base = now_ns() - 10 * S
    with server.client() as c:
        before = samples(c)
        assert push_json(c, [stream({"job": "m"}, [(base, "12345"), (base + 1, "678")])]).status_code == 204
        after_push = samples(c)
        assert c.get("/loki/api/v1/labels").status_code == 200
        assert c.post("/flush").status_code == 204
        after_flush = samples(c)
    assert value(after_push, "loglake_head_bytes") > value(before, "loglake_head_bytes")
    assert value(after_flush, "loglake_head_bytes") == 0, "a flush empties the head"
    wal_syncs = "loglake_wal_sync_duration_seconds_count"
    assert value(after_push, wal_syncs) > value(before, wal_syncs), "an acknowledged push was synced"
    assert ("loglake_wal_sync_duration_seconds_bucket", frozenset({("le", "+Inf")})) in after_push
    flushes = "loglake_flush_duration_seconds_count"
    assert value(after_flush, flushes) == value(before, flushes) + 1
    assert value(after_flush, "loglake_flush_duration_seconds_bucket", le="+Inf") == value(after_flush, flushes)
    latency = "loki_request_duration_seconds_count"
    assert value(after_flush, latency, route="labels", status_code="200") == 1, "request latency per route"
    assert value(after_flush, latency, route="push", status_code="204") == 1
    assert value(after_flush, "loki_request_duration_seconds_bucket", route="push", le="+Inf") == 1


def test_config_is_yaml_with_loki_names_and_the_values_in_use(make_server: Any) -> None:
    server = make_server(
        {
            "distributor": {"max_recv_msg_size": "2MiB"},
            "limits_config": {"max_line_size": "1KB", "ingestion_rate_mb": 2},
        }
    )
    with server.client() as c:
        r = c.get("/config")
    assert r.status_code == 200
    config = yaml.safe_load(r.text)
    assert config["auth_enabled"] is False
    assert config["server"]["http_listen_port"] == server.port
    assert config["common"]["path_prefix"] == str(server.data_dir)
    assert config["distributor"]["max_recv_msg_size"] == 2 << 20
    limits = config["limits_config"]
    assert limits["max_line_size"] == "1KB"
    assert limits["ingestion_rate_mb"] == 2
    assert limits["reject_old_samples"] is True, "defaults are shown too"
    assert limits["reject_old_samples_max_age"] == "1w"
    assert limits["max_entries_limit_per_query"] == 5000
    assert limits["max_global_streams_per_user"] == 5000


def test_buildinfo_is_json_with_the_version(server: LoglakeServer) -> None:
    with server.client() as c:
        r = c.get("/loki/api/v1/status/buildinfo")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    info = r.json()
    assert info["version"] == loglake.__version__
    assert {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"} <= set(info)


def test_flush_answers_204_and_the_data_stays_queryable(server: LoglakeServer) -> None:
    base = now_ns() - 10 * S
    with server.client() as c:
        lines = [(base + i, f"line {i}") for i in range(50)]
        assert push_json(c, [stream({"job": "f"}, lines)]).status_code == 204
        r = c.post("/flush")
        assert (r.status_code, r.content) == (204, b"")
        assert [(ts, line) for ts, line, _ in read_all(c, '{job="f"}', base, base + S)] == lines
        assert c.post("/flush").status_code == 204, "flushing an empty head is fine"
        assert push_json(c, [stream({"job": "f"}, [(base + 100, "after flush")])]).status_code == 204
        assert len(read_all(c, '{job="f"}', base, base + S)) == 51
