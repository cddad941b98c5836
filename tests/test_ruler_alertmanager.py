"""The ruler end to end: a real loglake server, a real Alertmanager and a real Prometheus (Debian's packages).

Lines pushed to loglake make the alert fire in Alertmanager within two evaluation intervals, reach a Slack and a
generic webhook receiver, and resolve once the lines stop; a recording rule's series is queryable in Prometheus.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from loglake.logql.errors import QueryError
from loglake.ruler.manager import RuleManager, RulerSettings
from loglake.ruler.rules import parse_rule_group
from loglake.ruler.store import RuleStore
from tests.conftest import free_port
from tests.helpers import push_json, stream
from tests.test_ruler_notify import Receiver

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PROMETHEUS = "/usr/bin/prometheus"
INTERVAL_S = 2.0
WINDOW = "10s"  # short, so that the alert resolves within the test once the lines stop


def need_binary(path: str) -> str:
    """Return the binary's path; without it, fail in CI (the test setup installs it) and skip elsewhere."""
    found = path if os.access(path, os.X_OK) else shutil.which(Path(path).name)
    if found:
        return found
    message = f"{path} is missing: apt-get install -y --no-install-recommends prometheus-alertmanager prometheus"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Process:
    """A started binary on a loopback port."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited:\n{self.log.read_text(errors='replace')}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.proc.args[0]} not ready:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start(args: list[str], port: int, log: Path) -> Process:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    p = Process(proc, f"http://127.0.0.1:{port}", log)
    try:
        p.wait_ready()
    except Exception:
        p.stop()
        raise
    return p


@pytest.fixture
def am_hook() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, am_hook: Receiver) -> Iterator[Process]:
    binary = need_binary(ALERTMANAGER)
    config = {
        "route": {"receiver": "hook", "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": am_hook.url + "/am-hook", "send_resolved": True}]}],
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    p = start(
        [
            binary,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        port,
        tmp_path / "am.log",
    )
    yield p
    p.stop()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Process]:
    binary = need_binary(PROMETHEUS)
    (tmp_path / "prom.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}}))
    port = free_port()
    p = start(
        [
            binary,
            f"--config.file={tmp_path / 'prom.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
        ],
        port,
        tmp_path / "prom.log",
    )
    yield p
    p.stop()


def loki_query_fn(base_url: str) -> Any:
    """Return a QueryFn that runs LogQL on a loglake server over Loki's instant-query API."""
    client = httpx.Client(base_url=base_url, timeout=30.0)

    def query(tenant: str, expr: str, at_ns: int) -> list[tuple[dict[str, str], float]]:
        r = client.get(
            "/loki/api/v1/query", params={"query": expr, "time": str(at_ns)}, headers={"X-Scope-OrgID": tenant}
        )
        if r.status_code != 200:
            raise QueryError(r.status_code, r.text)
        data = r.json()["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    return query


GROUP = f"""
name: ai-errors
interval: {INTERVAL_S:g}s
rules:
  - alert: AIServiceErrors
    expr: sum by (service) (count_over_time({{namespace="ai-prod"}} |~ "error|rate_limited" [{WINDOW}])) > 5
    labels:
      severity: page
    annotations:
      summary: "{{{{ $labels.service }}}} answers errors"
      description: "{{{{ $value }}}} errors or rate limits in {WINDOW}"
  - record: ai:errors:count{WINDOW}
    expr: sum by (service) (count_over_time({{namespace="ai-prod"}} |~ "error|rate_limited" [{WINDOW}]))
"""


def push_errors(client: httpx.Client, count: int) -> None:
    now = time.time_ns()
    entries = [(now - i * 1_000_000, f'level=error msg="upstream said rate_limited" n={i}') for i in range(count)]
    r = push_json(client, [stream({"namespace": "ai-prod", "service": "chat"}, entries)])
    assert r.status_code == 204, r.text


async def wait_until(what: str, check: Any, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        await asyncio.sleep(every)


def test_alert_fires_in_alertmanager_reaches_receivers_resolves_and_records_to_prometheus(
    tmp_path: Path, make_server: Any, alertmanager: Process, prometheus: Process, am_hook: Receiver
):
    loglake = make_server()
    receivers = Receiver().start()
    store = RuleStore(tmp_path / "rules")
    store.set_group("fake", "ai", parse_rule_group(GROUP))
    settings = RulerSettings(
        evaluation_interval_s=60,
        alertmanager_urls=[alertmanager.url],
        webhook_urls=[receivers.url + "/webhook"],
        slack_webhook_urls=[receivers.url + "/slack"],
        external_labels={"cluster": "test"},
        external_url=loglake.url,
        remote_write_url=prometheus.url + "/api/v1/write",
        state_path=tmp_path / "ruler-state.json",
    )
    manager = RuleManager(store, loki_query_fn(loglake.url), settings)

    async def am_alerts(http: httpx.AsyncClient) -> list[dict[str, Any]]:
        r = await http.get(alertmanager.url + "/api/v2/alerts", params={"filter": 'alertname="AIServiceErrors"'})
        r.raise_for_status()
        return r.json()

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(timeout=10) as http:
            await manager.start()
            try:
                with loglake.client() as client:
                    push_errors(client, 8)
                pushed = time.monotonic()
                [alert] = await wait_until(
                    "the alert is firing in Alertmanager", lambda: am_alerts(http), timeout=2 * INTERVAL_S
                )
                out["fire_s"] = time.monotonic() - pushed
                out["alert"] = alert
                out["rules"] = manager.rules_status("fake")

                async def recorded() -> list[dict[str, Any]]:
                    r = await http.get(prometheus.url + "/api/v1/query", params={"query": f"ai:errors:count{WINDOW}"})
                    return r.json()["data"]["result"]

                out["prometheus"] = await wait_until("the recorded series is in Prometheus", recorded, 4 * INTERVAL_S)

                # No more lines: once they leave the window the alert resolves, in the ruler and in Alertmanager.
                stopped = time.monotonic()
                await wait_until(
                    "the alert resolves in Alertmanager",
                    lambda: _resolved(am_alerts(http)),
                    timeout=float(WINDOW[:-1]) + 3 * INTERVAL_S,
                    every=0.2,
                )
                out["resolve_s"] = time.monotonic() - stopped
                out["alerts_after"] = manager.alerts_status("fake")["alerts"]
                assert await manager.notifier.drain(10)
                out["stats"] = manager.stats()
            finally:
                await manager.stop()
        return out

    try:
        out = asyncio.run(main())
        hook_requests = receivers.wait_for(4)
        am_notifications = am_hook.wait_for(2, timeout=15)
    finally:
        receivers.stop()
    print(
        f"\nfiring in Alertmanager {out['fire_s']:.2f}s after the push (interval {INTERVAL_S}s); "
        f"resolved {out['resolve_s']:.2f}s after the lines stopped (window {WINDOW})"
    )

    alert = out["alert"]
    assert out["fire_s"] <= 2 * INTERVAL_S
    assert alert["labels"] == {
        "alertname": "AIServiceErrors",
        "service": "chat",
        "severity": "page",
        "cluster": "test",
    }
    assert alert["annotations"]["summary"] == "chat answers errors"
    assert alert["annotations"]["description"] == f"8 errors or rate limits in {WINDOW}"
    assert alert["status"]["state"] == "active"
    assert alert["generatorURL"].startswith(loglake.url + "/?query=sum%20by%20%28service%29")
    [group] = out["rules"]["groups"]
    assert [r["health"] for r in group["rules"]] == ["ok", "ok"]
    assert group["rules"][0]["state"] == "firing"

    [series] = out["prometheus"]
    assert series["metric"] == {"__name__": f"ai:errors:count{WINDOW}", "service": "chat", "cluster": "test"}
    assert float(series["value"][1]) == 8.0

    assert out["alerts_after"] == []
    stats = out["stats"]
    assert all(s["failed"] == 0 and s["dropped"] == 0 for s in stats["notifications"])
    assert stats["remote_write"]["sent"] > 0 and stats["remote_write"]["failed"] == 0

    by_path: dict[str, list[Any]] = {}
    for r in hook_requests:
        by_path.setdefault(r.path, []).append(r.json())
    slack = by_path["/slack"]
    assert [m["text"] for m in slack] == ["[FIRING:1] AIServiceErrors", "[RESOLVED] AIServiceErrors"]
    assert "chat answers errors" in slack[0]["attachments"][0]["text"]
    assert "*Value:* 8" in slack[0]["attachments"][0]["text"]
    assert slack[0]["attachments"][0]["title_link"].startswith(loglake.url + "/?query=")
    webhook = by_path["/webhook"]
    assert [d["status"] for d in webhook] == ["firing", "resolved"]
    assert webhook[0]["alerts"][0]["labels"]["service"] == "chat"
    assert webhook[0]["alerts"][0]["value"] == 8.0

    statuses = [n.json()["status"] for n in am_notifications]
    assert statuses[0] == "firing" and "resolved" in statuses


async def _resolved(alerts: Any) -> bool:
    return all(a["status"]["state"] != "active" for a in await alerts)


def test_loglake_serve_runs_the_ruler_configured_with_lokis_names(
    tmp_path: Path, make_server: Any, alertmanager: Process, prometheus: Process
) -> None:
    """The same path through `loglake serve` itself: config keys, the rules API, the built-in evaluation loop."""
    receivers = Receiver().start()
    loglake = make_server(
        {
            "ruler": {
                "alertmanager_url": alertmanager.url,
                "slack_webhook_url": [receivers.url + "/slack"],
                "webhook_url": [receivers.url + "/webhook"],
                "external_labels": {"cluster": "serve"},
                "remote_write": {"enabled": True, "client": {"url": prometheus.url + "/api/v1/write"}},
            }
        }
    )
    try:
        with loglake.client() as client:
            r = client.post(
                "/loki/api/v1/rules/ai", content=GROUP.encode(), headers={"Content-Type": "application/yaml"}
            )
            assert r.status_code == 202, r.text
            push_errors(client, 8)
            pushed = time.monotonic()

            def firing_in_alertmanager() -> list[dict[str, Any]]:
                r = httpx.get(alertmanager.url + "/api/v2/alerts", params={"filter": 'alertname="AIServiceErrors"'})
                return [a for a in r.json() if a["status"]["state"] == "active"]

            deadline = pushed + 2 * INTERVAL_S + 2  # two intervals, plus the reload of the stored group
            while not (alerts := firing_in_alertmanager()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert alerts, "the alert is not firing in Alertmanager"
            assert alerts[0]["labels"]["cluster"] == "serve" and alerts[0]["labels"]["service"] == "chat"

            served = client.get("/prometheus/api/v1/alerts").json()["data"]["alerts"]
            assert [(a["labels"]["alertname"], a["state"]) for a in served] == [("AIServiceErrors", "firing")]
            [group] = client.get("/prometheus/api/v1/rules").json()["data"]["groups"]
            assert (group["name"], group["file"]) == ("ai-errors", "ai")
            assert [r["health"] for r in group["rules"]] == ["ok", "ok"]

            deadline = time.monotonic() + 4 * INTERVAL_S
            recorded: list[Any] = []
            while not recorded and time.monotonic() < deadline:
                r = httpx.get(prometheus.url + "/api/v1/query", params={"query": f"ai:errors:count{WINDOW}"})
                recorded = r.json()["data"]["result"]
                time.sleep(0.2)
            assert recorded and float(recorded[0]["value"][1]) == 8.0

        paths = {r.path for r in receivers.wait_for(2)}
        assert paths == {"/slack", "/webhook"}
    finally:
        receivers.stop()
