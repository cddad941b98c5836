"""The ruler's configuration, its rules API (Loki's YAML paths and Prometheus' JSON ones) and its server wiring."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from loglake.config import ConfigError, default_config_yaml, load_config, parse_config
from loglake.ruler.api import remote_write_url, ruler_settings, rules_directory, samples_of
from tests.helpers import now_ns, push_json, stream

NS = 1_000_000_000

GROUP = """
name: ai-services
interval: 1m
rules:
  - alert: AIServiceErrors
    expr: sum(count_over_time({namespace="ai-prod"} |~ "error|rate_limited" [1m])) > 5
    for: 1m
    labels:
      severity: page
    annotations:
      summary: "{{ $value }} errors in the last minute"
  - record: ai:errors:count1m
    expr: sum(count_over_time({namespace="ai-prod"} |= "error" [1m]))
"""


def group_yaml(name: str, expr: str = 'sum(count_over_time({app="api"}[1m])) > 0', **rule: Any) -> str:
    """Return one rule group with one alert named `name`-alert."""
    body = {"name": name, "rules": [{"alert": f"{name}-alert", "expr": expr, **rule}]}
    return yaml.safe_dump(body, sort_keys=False)


def wait_for(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check()` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- configuration --------------------------------------------------------------------------------------------


def test_the_ruler_block_reads_lokis_names(tmp_path):
    text = f"""
common: {{path_prefix: {tmp_path / "data"}}}
server: {{http_listen_port: 3300}}
ruler:
  rule_path: /tmp/rules-scratch
  evaluation_interval: 15s
  alertmanager_url: http://am1:9093,http://am2:9093
  external_url: https://logs.example.com/
  external_labels: {{cluster: eu-1, replica: 2}}
  resend_delay: 30s
  enable_api: false
  storage:
    type: local
    local: {{directory: {tmp_path / "rules"}}}
  remote_write:
    enabled: true
    clients:
      prom: {{url: http://prom:9090/api/v1/write, remote_timeout: 30s}}
  slack_webhook_url: [https://hooks.slack.test/T/B/X]
  webhook_url: http://hook-a/x, http://hook-b/y
"""
    cfg = parse_config(text)
    assert cfg.ruler.alertmanager_url == ["http://am1:9093", "http://am2:9093"]
    assert cfg.ruler.external_labels == {"cluster": "eu-1", "replica": "2"}
    assert cfg.ruler.enable_api is False
    assert rules_directory(cfg) == (tmp_path / "rules").resolve()
    s = ruler_settings(cfg)
    assert s.evaluation_interval_s == 15.0 and s.resend_delay_s == 30.0
    assert s.alertmanager_urls == ["http://am1:9093", "http://am2:9093"]
    assert s.webhook_urls == ["http://hook-a/x", "http://hook-b/y"]
    assert s.slack_webhook_urls == ["https://hooks.slack.test/T/B/X"]
    assert s.external_url == "https://logs.example.com"
    assert s.external_labels == {"cluster": "eu-1", "replica": "2"}
    assert s.remote_write_url == "http://prom:9090/api/v1/write"
    assert s.state_path == (tmp_path / "data" / "ruler" / "state.json").resolve()


def test_ruler_defaults_evaluate_every_minute_from_rules_under_the_data_directory(tmp_path):
    cfg = parse_config(f"common: {{path_prefix: {tmp_path}}}\nserver: {{http_listen_address: 0.0.0.0}}\n")
    assert rules_directory(cfg) == (tmp_path / "rules").resolve()
    s = ruler_settings(cfg)
    assert s.evaluation_interval_s == 60.0 and s.resend_delay_s == 60.0
    assert s.alertmanager_urls == [] and s.remote_write_url is None
    assert cfg.ruler.enable_api is True
    assert s.external_url == "http://127.0.0.1:3100"  # a link must not point at the wildcard address


def test_lokis_top_level_ruler_storage_is_used_when_ruler_storage_names_no_directory(tmp_path):
    cfg = parse_config(f"ruler_storage: {{backend: local, local: {{directory: {tmp_path / 'r'}}}}}\n")
    assert rules_directory(cfg) == (tmp_path / "r").resolve()


def test_loki_2s_single_remote_write_client_is_read():
    cfg = parse_config("ruler: {remote_write: {enabled: true, client: {url: 'http://p:9090/api/v1/write'}}}\n")
    assert remote_write_url(cfg) == "http://p:9090/api/v1/write"
    off = parse_config("ruler: {remote_write: {enabled: false, client: {url: 'http://p:9090/api/v1/write'}}}\n")
    assert remote_write_url(off) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ruler: {storage: {type: s3}}", "ruler.storage.type: expected one of local, got 's3'"),
        ("ruler_storage: {backend: gcs}", "ruler_storage.backend: expected one of local, got 'gcs'"),
        ("ruler: {remote_write: {enabled: true}}", "ruler.remote_write: enabled but no clients are configured"),
        ("ruler: {remote_write: {clients: {p: {name: x}}}}", "client 'p': url is required"),
        ("ruler: {external_labels: [a, b]}", "ruler.external_labels: expected a mapping of names to text values"),
        ("ruler: {evaluation_interval: often}", "ruler.evaluation_interval: expected a duration"),
        ("ruler: {alertmanager_urls: x}", "unknown key ruler.alertmanager_urls"),
    ],
)
def test_wrong_ruler_settings_are_errors_naming_the_key(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text + "\n")
    assert message in str(err.value)


def test_lokis_other_ruler_keys_are_accepted_with_a_warning(caplog):
    text = "ruler:\n  rule_path: /rules\n  ring: {kvstore: {store: inmemory}}\n  storage: {type: local, s3: {}}\n"
    with caplog.at_level(logging.WARNING, logger="loglake.config"):
        parse_config(text)
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for key in ("ruler.rule_path", "ruler.ring", "ruler.storage.s3"):
        assert f"config key {key} is a Loki setting ignored by loglake" in warned


def test_the_default_configuration_shows_the_ruler_block_and_loads_back():
    text = default_config_yaml()
    assert "\nruler:\n" in text and "  evaluation_interval: 1m0s" in text and "  enable_api: true" in text
    assert parse_config(text) == load_config(None)


# --- the query function over the engine's answers --------------------------------------------------------------


def test_instant_query_answers_become_samples():
    vector = {"resultType": "vector", "result": [{"metric": {"app": "a"}, "value": [1.5, "7"]}]}
    assert samples_of(vector) == [({"app": "a"}, 7.0)]
    assert samples_of({"resultType": "scalar", "result": [1.5, "2.5"]}) == [({}, 2.5)]
    assert samples_of({"resultType": "vector", "result": []}) == []
    with pytest.raises(ValueError, match="must give a vector or a scalar"):
        samples_of({"resultType": "streams", "result": []})


# --- the rules API on a real server ----------------------------------------------------------------------------


@pytest.fixture
def ruler_server(make_server: Any) -> Any:
    return make_server({"auth_enabled": True, "limits_config": {"reject_old_samples": False}})


@pytest.mark.parametrize("prefix", ["/loki/api/v1/rules", "/api/prom/rules"])
def test_rule_groups_round_trip_through_set_get_list_and_delete(ruler_server, prefix):
    with ruler_server.client("team-a") as c:
        assert c.get(prefix).status_code == 404
        assert c.get(prefix).text.strip() == "no rule groups found"

        r = c.post(f"{prefix}/ai", content=GROUP, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "success"
        r = c.post(f"{prefix}/ai", content=group_yaml("second"), headers={"Content-Type": "application/yaml"})
        assert r.status_code == 202, r.text
        r = c.post(f"{prefix}/other", content=group_yaml("third"))
        assert r.status_code == 202, r.text

        r = c.get(f"{prefix}/ai/ai-services")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
        group = yaml.safe_load(r.text)
        assert group == {
            "name": "ai-services",
            "interval": "1m",
            "rules": [
                {
                    "alert": "AIServiceErrors",
                    "expr": 'sum(count_over_time({namespace="ai-prod"} |~ "error|rate_limited" [1m])) > 5',
                    "for": "1m",
                    "labels": {"severity": "page"},
                    "annotations": {"summary": "{{ $value }} errors in the last minute"},
                },
                {"record": "ai:errors:count1m", "expr": 'sum(count_over_time({namespace="ai-prod"} |= "error" [1m]))'},
            ],
        }

        everything = yaml.safe_load(c.get(prefix).text)
        assert sorted(everything) == ["ai", "other"]
        assert [g["name"] for g in everything["ai"]] == ["ai-services", "second"]
        assert yaml.safe_load(c.get(f"{prefix}/other").text) == {"other": [yaml.safe_load(group_yaml("third"))]}

        # Loki's label filter keeps only rules with one of the labels.
        only_pages = yaml.safe_load(c.get(prefix, params={"labels": "severity:page"}).text)
        assert list(only_pages) == ["ai"] and [g["name"] for g in only_pages["ai"]] == ["ai-services"]
        assert [next(iter(r)) for r in only_pages["ai"][0]["rules"]] == ["alert"]

        # Posting a group with the same name replaces it.
        r = c.post(f"{prefix}/ai", content=group_yaml("second", 'sum(rate({app="x"}[5m])) > 1'))
        assert r.status_code == 202
        replaced = yaml.safe_load(c.get(f"{prefix}/ai/second").text)
        assert replaced["rules"][0]["expr"] == 'sum(rate({app="x"}[5m])) > 1'

        r = c.delete(f"{prefix}/ai/second")
        assert r.status_code == 202, r.text
        r = c.get(f"{prefix}/ai/second")
        assert (r.status_code, r.text.strip()) == (404, "group does not exist")
        r = c.delete(f"{prefix}/ai/second")
        assert (r.status_code, r.text.strip()) == (404, "group does not exist")

        assert c.delete(f"{prefix}/ai").status_code == 202
        r = c.get(f"{prefix}/ai")
        assert (r.status_code, r.text.strip()) == (404, "no rule groups found")
        r = c.delete(f"{prefix}/ai")
        assert (r.status_code, r.text.strip()) == (404, "group namespace does not exist")
        assert list(yaml.safe_load(c.get(prefix).text)) == ["other"]


def test_each_tenant_sees_only_its_own_rules_stored_in_its_own_directory(ruler_server):
    with ruler_server.client("team-a") as a, ruler_server.client("team-b") as b:
        assert a.post("/loki/api/v1/rules/ns", content=group_yaml("a-group")).status_code == 202
        assert b.post("/loki/api/v1/rules/ns", content=group_yaml("b-group")).status_code == 202
        assert [g["name"] for g in yaml.safe_load(a.get("/loki/api/v1/rules").text)["ns"]] == ["a-group"]
        assert [g["name"] for g in yaml.safe_load(b.get("/loki/api/v1/rules").text)["ns"]] == ["b-group"]
        assert b.get("/loki/api/v1/rules/ns/a-group").status_code == 404
    rules_dir = ruler_server.data_dir / "rules"
    assert (rules_dir / "team-a" / "ns.yaml").exists() and (rules_dir / "team-b" / "ns.yaml").exists()
    with ruler_server.client() as anonymous:
        assert anonymous.get("/loki/api/v1/rules").status_code == 401


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("name: g\nrules: [unclosed\n", ["YAML"]),
        ("- just\n- a list\n", ["mapping"]),
        (group_yaml("g", '{app="api"} |= "error"'), ["g-alert", "log query", "metric query"]),
        (group_yaml("g", "sum(count_over_time({app=}[1m]))"), ["g-alert", "expr"]),
        (group_yaml("g", annotations={"summary": "{{ $value | nosuchfunc }}"}), ["g-alert", "summary", "nosuchfunc"]),
        (group_yaml("g", annotations={"summary": "{{ .Unclosed "}), ["g-alert", "summary"]),
        (group_yaml("g", **{"for": "soon"}), ["g-alert", "for", "soon"]),
        (yaml.safe_dump({"name": "g", "rules": [{"alert": "A", "expr": "vector(1)", "colour": "red"}]}), ["colour"]),
        ("", ["empty"]),
    ],
)
def test_invalid_rule_groups_are_refused_with_a_400_naming_the_rule_and_why(ruler_server, body, expected):
    with ruler_server.client("t") as c:
        r = c.post("/loki/api/v1/rules/ns", content=body, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 400, r.text
        for text in expected:
            assert text.lower() in r.text.lower(), (text, r.text)
        assert c.get("/loki/api/v1/rules").status_code == 404  # nothing was stored


@pytest.mark.parametrize(("path", "namespace"), [(".hidden", ".hidden"), ("a%5Cb", "a\\b")])
def test_a_namespace_that_is_not_a_plain_file_name_is_refused(ruler_server, path, namespace):
    with ruler_server.client("t") as c:
        r = c.post(f"/loki/api/v1/rules/{path}", content=group_yaml("g"))
        assert r.status_code == 400, r.text
        assert f"namespace {namespace!r} is not allowed" in r.text
        assert c.get("/loki/api/v1/rules").status_code == 404


def test_with_enable_api_false_the_rules_routes_answer_404_and_rules_on_disk_still_load(make_server, tmp_path):
    rules_dir = tmp_path / "my-rules"
    (rules_dir / "fake").mkdir(parents=True)
    (rules_dir / "fake" / "ai.yaml").write_text(f"groups:\n  - {GROUP.strip().replace(chr(10), chr(10) + '    ')}\n")
    server = make_server({"ruler": {"enable_api": False, "storage": {"local": {"directory": str(rules_dir)}}}})
    with server.client() as c:
        for method, path in [
            ("GET", "/loki/api/v1/rules"),
            ("GET", "/api/prom/rules/ai"),
            ("POST", "/loki/api/v1/rules/ai"),
            ("DELETE", "/loki/api/v1/rules/ai/ai-services"),
            ("GET", "/prometheus/api/v1/rules"),
            ("GET", "/prometheus/api/v1/alerts"),
        ]:
            assert c.request(method, path, content=GROUP).status_code == 404, (method, path)
    assert (rules_dir / "fake" / "ai.yaml").exists()


def test_rule_files_put_in_the_directory_by_hand_are_served(make_server, tmp_path):
    rules_dir = tmp_path / "gitops"
    (rules_dir / "fake").mkdir(parents=True)
    (rules_dir / "fake" / "ai.yaml").write_text(f"groups:\n  - {GROUP.strip().replace(chr(10), chr(10) + '    ')}\n")
    server = make_server({"ruler": {"storage": {"local": {"directory": str(rules_dir)}}}})
    with server.client() as c:
        listed = yaml.safe_load(c.get("/loki/api/v1/rules").text)
        assert [g["name"] for g in listed["ai"]] == ["ai-services"]
        data = c.get("/prometheus/api/v1/rules").json()["data"]
        assert [(g["file"], g["name"]) for g in data["groups"]] == [("ai", "ai-services")]


# --- evaluation as Grafana sees it ------------------------------------------------------------------------------


class _Receiver:
    """A local HTTP server that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.path, json.loads(self.rfile.read(length) or b"null")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_evaluated_rules_show_in_prometheus_rules_and_alerts_and_reach_a_webhook(make_server, receiver):
    server = make_server(
        {
            "limits_config": {"reject_old_samples": False},
            "ruler": {
                "evaluation_interval": "1s",
                "webhook_url": [receiver.url + "/hook"],
                "external_labels": {"cluster": "test"},
            },
        }
    )
    group = {
        "name": "api-errors",
        "rules": [
            {
                "alert": "ApiErrors",
                "expr": 'sum by (app) (count_over_time({app="api"} |= "error" [1m])) > 2',
                "labels": {"severity": "page"},
                "annotations": {"summary": "{{ $labels.app }} logged {{ $value }} errors"},
            },
            {"record": "api:lines:count1m", "expr": 'sum(count_over_time({app="api"}[1m]))'},
        ],
    }
    with server.client() as c:
        now = now_ns()
        lines = [(now - i * NS // 10, f"request failed: error {i}") for i in range(5)]
        assert push_json(c, [stream({"app": "api"}, lines)]).status_code == 204
        assert c.post("/loki/api/v1/rules/api", content=yaml.safe_dump(group)).status_code == 202

        def firing() -> Any:
            data = c.get("/prometheus/api/v1/rules").json()["data"]
            rules = data["groups"][0]["rules"] if data["groups"] else []
            return data if rules and rules[0]["state"] == "firing" and rules[1]["health"] == "ok" else None

        data = wait_for(firing, what="the alert to fire")
        [g] = data["groups"]
        assert (g["name"], g["file"], g["interval"], g["limit"]) == ("api-errors", "api", 1.0, 0)
        assert g["lastEvaluation"].endswith("Z") and g["evaluationTime"] >= 0
        alert_rule, record_rule = g["rules"]
        assert alert_rule["type"] == "alerting" and alert_rule["name"] == "ApiErrors"
        assert alert_rule["query"] == group["rules"][0]["expr"]
        assert alert_rule["health"] == "ok" and alert_rule["lastError"] == ""
        assert alert_rule["labels"] == {"severity": "page"}
        [alert] = alert_rule["alerts"]
        assert alert["state"] == "firing"
        assert alert["labels"]["alertname"] == "ApiErrors" and alert["labels"]["app"] == "api"
        assert alert["annotations"]["summary"] == "api logged 5 errors"
        assert float(alert["value"]) == 5.0
        assert record_rule["type"] == "recording" and record_rule["name"] == "api:lines:count1m"

        # Prometheus' filters, as Grafana sends them.
        only_records = c.get("/prometheus/api/v1/rules", params={"type": "record"}).json()["data"]
        assert [r["type"] for r in only_records["groups"][0]["rules"]] == ["recording"]
        by_name = c.get("/prometheus/api/v1/rules", params={"rule_name[]": "ApiErrors"}).json()["data"]
        assert [r["name"] for r in by_name["groups"][0]["rules"]] == ["ApiErrors"]
        assert c.get("/prometheus/api/v1/rules", params={"file[]": "nope"}).json()["data"] == {"groups": []}
        slim = c.get("/prometheus/api/v1/rules", params={"exclude_alerts": "true"}).json()["data"]
        assert "alerts" not in slim["groups"][0]["rules"][0]
        r = c.get("/prometheus/api/v1/rules", params={"type": "sometimes"})
        assert r.status_code == 400 and r.json() == {
            "status": "error",
            "data": None,
            "errorType": "bad_data",
            "error": 'not supported value "sometimes"',
        }

        alerts = c.get("/prometheus/api/v1/alerts").json()
        assert alerts["status"] == "success"
        [active] = alerts["data"]["alerts"]
        assert active["labels"]["alertname"] == "ApiErrors" and active["state"] == "firing"

    def webhook_got_it() -> Any:
        for path, body in list(receiver.bodies):
            if path == "/hook" and "ApiErrors" in json.dumps(body):
                return body
        return None

    body = wait_for(webhook_got_it, what="the webhook to receive the alert")
    assert "cluster" in json.dumps(body)  # external labels travel with the alert

    def metric(text: str, name: str) -> float:
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
        assert values, f"{name} is not in /metrics"
        return sum(values)

    with server.client() as c:

        def delivered() -> str | None:
            text = c.get("/metrics").text
            return text if metric(text, "loki_prometheus_notifications_sent_total") else None

        text = wait_for(delivered, what="the delivery to show in /metrics")
    assert metric(text, "loki_prometheus_rule_groups") == 1
    assert metric(text, "loki_prometheus_rule_group_iterations_total") >= 1
    assert metric(text, "loki_prometheus_notifications_errors_total") == 0
    assert f'loki_prometheus_notifications_sent_total{{destination="{receiver.url}/hook",kind="webhook"}}' in text


def test_alert_state_and_rules_survive_a_restart(make_server, tmp_path: Path):
    server = make_server({"limits_config": {"reject_old_samples": False}, "ruler": {"evaluation_interval": "1s"}})
    with server.client() as c:
        assert push_json(c, [stream({"app": "api"}, [(now_ns(), "error")])]).status_code == 204
        group = group_yaml("g", 'sum(count_over_time({app="api"}[10m])) > 0', **{"for": "1h"})
        assert c.post("/loki/api/v1/rules/ns", content=group).status_code == 202

        def pending() -> Any:
            alerts = c.get("/prometheus/api/v1/alerts").json()["data"]["alerts"]
            return alerts if alerts and alerts[0]["state"] == "pending" else None

        [before] = wait_for(pending, what="the alert to be pending")
    assert server.stop() == 0
    server.start()
    with server.client() as c:
        assert [g["name"] for g in yaml.safe_load(c.get("/loki/api/v1/rules/ns").text)["ns"]] == ["g"]
        [after] = wait_for(pending, what="the restored alert")
        assert after["activeAt"] == before["activeAt"]  # the `for` clock was not reset
