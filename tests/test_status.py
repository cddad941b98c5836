"""Status endpoints: readiness, Prometheus metrics, the running config, build info, flush, tenants."""

from __future__ import annotations

import yaml

from tests.helpers import now_ns, push_json, read_all, stream


def test_ready_metrics_config_buildinfo(server) -> None:
    base = now_ns() - 10 * 10**9
    with server.client() as c:
        assert c.get("/ready").text.strip() == "ready"
        assert push_json(c, [stream({"job": "m"}, [(base, "12345"), (base + 1, "678")])]).status_code == 204
        c.get("/loki/api/v1/labels")
        assert c.post("/flush").status_code == 204
        metrics = c.get("/metrics").text
        for line in (
            'loki_distributor_lines_received_total{tenant="fake"} 2.0',
            'loki_distributor_bytes_received_total{tenant="fake"} 8.0',
            'loki_ingester_memory_streams{tenant="fake"} 1.0',
            "loglake_head_bytes 0.0",
        ):
            assert line in metrics, line
        for family in (
            "loglake_wal_sync_duration_seconds_bucket",
            "loglake_flush_duration_seconds_bucket",
        ):
            assert family in metrics, family
        assert any(
            line.startswith("loki_request_duration_seconds_count") and 'route="labels"' in line
            for line in metrics.splitlines()
        ), "request latency is recorded per route"
        config = yaml.safe_load(c.get("/config").text)
        assert config["server"]["http_listen_port"] == server.port
        assert config["limits_config"]["reject_old_samples"] is False
        assert c.get("/loki/api/v1/status/buildinfo").json()["version"]


def test_tenants_are_isolated_when_auth_is_enabled(make_server) -> None:
    server = make_server({"auth_enabled": True})
    base = now_ns() - 10 * 10**9
    with server.client() as anonymous:
        r = push_json(anonymous, [stream({"job": "t"}, [(base, "x")])])
        assert r.status_code == 401
    with server.client("team-a") as a, server.client("team-b") as b:
        assert push_json(a, [stream({"job": "t"}, [(base, "for a")])]).status_code == 204
        assert push_json(b, [stream({"job": "t"}, [(base + 1, "for b")])]).status_code == 204
        assert [e[1] for e in read_all(a, '{job="t"}', base, base + 10)] == ["for a"]
        assert [e[1] for e in read_all(b, '{job="t"}', base, base + 10)] == ["for b"]


def test_without_auth_every_request_is_tenant_fake(server) -> None:
    base = now_ns() - 10 * 10**9
    with server.client("someone") as c, server.client() as plain:
        assert push_json(c, [stream({"job": "f"}, [(base, "x")])]).status_code == 204
        assert [e[1] for e in read_all(plain, '{job="f"}', base, base + 10)] == ["x"]
