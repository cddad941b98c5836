"""The agent as a process against a real loglake server: files written while it runs, rotated by rename and by
copytruncate, the agent killed with SIGKILL and restarted, the server stopped and restarted. Every line must
arrive exactly once, in order per file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import LoglakeServer, free_port
from tests.helpers import read_all


class AgentProcess:
    """`loglake agent` on a config file, its output in a log file."""

    def __init__(self, tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.env = {**os.environ, **(env or {})}
        self.port = config["server"]["http_listen_port"]
        self.cfg = tmp / "agent.yaml"
        self.cfg.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loglake", "agent", "--config", str(self.cfg)],
                stdout=log,
                stderr=log,
                env=self.env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("agent not ready:\n" + self.log())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def agent_config(tmp: Path, server: LoglakeServer, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"http_listen_address": "127.0.0.1", "http_listen_port": free_port()},
        "positions": {"filename": str(tmp / "positions.yaml"), "sync_period": "500ms"},
        "clients": [
            {
                "url": server.url + "/loki/api/v1/push",
                "batchwait": "100ms",
                "backoff_config": {"min_period": "100ms", "max_period": "1s", "max_retries": 1000},
            }
        ],
        "target_config": {"sync_period": "200ms"},
        "scrape_configs": [
            {
                "job_name": "files",
                "static_configs": [
                    {"targets": ["localhost"], "labels": {"job": "e2e", "__path__": str(tmp / "logs" / "*.log")}}
                ],
                **extra,
            }
        ],
    }


def _lines_by_file(server: LoglakeServer, start: int) -> dict[str, list[str]]:
    with server.client() as c:
        got = read_all(c, '{job="e2e"}', start, time.time_ns() + 10**9)
    out: dict[str, list[str]] = {}
    for _, line, labels in sorted(got, key=lambda e: e[0]):
        out.setdefault(Path(labels["filename"]).name, []).append(line)
    return out


def _wait_for(
    server: LoglakeServer, start: int, want: dict[str, list[str]], timeout: float = 60
) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    got: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        got = _lines_by_file(server, start)
        if all(len(got.get(k, [])) >= len(v) for k, v in want.items()):
            return got
        time.sleep(0.2)
    return got


class Writer:
    """Appends numbered lines to files, remembering what each file (by name) should deliver, in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.want: dict[str, list[str]] = {}
        self.n = 0

    def write(self, name: str, count: int) -> None:
        with open(self.folder / name, "a") as f:
            for _ in range(count):
                self.n += 1
                line = f"{name} line {self.n} " + "x" * (self.n % 50)
                f.write(line + "\n")
                self.want.setdefault(name, []).append(line)


@pytest.mark.timeout(240)
def test_every_line_arrives_once_through_rotations_agent_crashes_and_server_restarts(tmp_path, make_server) -> None:
    server = make_server()
    (tmp_path / "logs").mkdir()
    start = time.time_ns() - 10**9
    w = Writer(tmp_path / "logs")
    for name in ("a.log", "b.log", "c.log"):
        w.write(name, 200)
    agent = AgentProcess(tmp_path, agent_config(tmp_path, server)).start()
    try:
        assert _wait_for(server, start, w.want) == w.want, agent.log()
        # Rotation by rename: lines written just before the rename are still read from the old file.
        w.write("a.log", 50)
        os.rename(tmp_path / "logs" / "a.log", tmp_path / "logs" / "a.log.1")
        w.write("a.log", 50)
        # copytruncate, once everything written so far was read.
        assert _wait_for(server, start, w.want) == w.want, agent.log()
        shutil.copy(tmp_path / "logs" / "b.log", tmp_path / "logs" / "b.log.1")
        with open(tmp_path / "logs" / "b.log", "r+") as f:
            f.truncate(0)
        time.sleep(0.5)
        w.write("b.log", 100)
        # SIGKILL in the middle of writing, then a restart.
        for _ in range(5):
            w.write("c.log", 100)
            time.sleep(0.05)
        agent.kill9()
        w.write("c.log", 100)
        w.write("a.log", 10)
        agent.start()
        # The server goes away for a while: the agent retries and delivers once it is back.
        assert _wait_for(server, start, w.want) == w.want, agent.log()
        server.stop()
        w.write("c.log", 300)
        time.sleep(1.5)
        server.start()
        got = _wait_for(server, start, w.want)
        assert got == w.want, agent.log()
        # Another kill -9 with nothing new: nothing may be sent twice after the restart.
        agent.kill9()
        agent.start()
        time.sleep(2)
        assert _lines_by_file(server, start) == w.want
    finally:
        agent.stop()


def _cri(line: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000000Z"
    return f"{stamp} stdout F {line}\n"


@pytest.mark.timeout(120)
def test_the_seeds_kubernetes_config_ships_annotated_pods_of_this_node(tmp_path, make_server) -> None:
    """The seeds' Kubernetes config as written (only the log root moved into tmp), against a fake Kubernetes API
    server on loopback (a real API server cannot run here); pods come and go while the agent runs."""
    from tests.test_agent_kubernetes import FakeKube, _serve, make_pod

    server = make_server()
    kube = FakeKube()
    api = _serve(kube)
    root = tmp_path / "pods"

    def pod_log(name: str, lines: list[str]) -> None:
        folder = root / f"default_{name}_uid-default-{name}" / "app"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "0.log", "a") as f:
            f.write("".join(_cri(line) for line in lines))

    enabled = {"logging/enabled": "true"}
    kube.put(make_pod("web", labels={"app": "web"}, annotations=enabled))
    kube.put(make_pod("quiet", labels={"app": "quiet"}))  # not annotated: not shipped
    kube.put(make_pod("elsewhere", node="node-b", annotations=enabled))  # another node
    for name in ("web", "quiet", "elsewhere"):
        pod_log(name, [f'{{"level":"info","trace_id":"t-{name}","msg":"hello from {name}"}}'])
    config = agent_config(tmp_path, server)
    config["scrape_configs"] = [
        {
            "job_name": "kubernetes-pods",
            "kubernetes_sd_configs": [{"role": "pod", "api_server": kube.url}],
            "pipeline_stages": [
                {"cri": {}},
                {"json": {"expressions": {"level": "level", "trace_id": "trace_id"}}},
                {"labels": {"level": ""}},
            ],
            "relabel_configs": [
                {
                    "source_labels": ["__meta_kubernetes_pod_annotation_logging_enabled"],
                    "action": "keep",
                    "regex": "true",
                },
                {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {
                    "source_labels": ["__meta_kubernetes_pod_uid", "__meta_kubernetes_pod_container_name"],
                    "separator": "/",
                    "target_label": "__path__",
                    "replacement": f"{root}/*$1/*.log",
                },
            ],
        }
    ]
    agent = AgentProcess(tmp_path, config, env={"HOSTNAME": "node-a"}).start()
    start = time.time_ns() - 60 * 10**9

    def shipped() -> list[tuple[str, dict[str, str]]]:
        with server.client() as c:
            return [
                (line, labels)
                for _, line, labels in read_all(c, '{namespace="default"}', start, time.time_ns() + 10**9)
            ]

    def wait(pred: Any) -> list[tuple[str, dict[str, str]]]:
        deadline = time.monotonic() + 30
        got = shipped()
        while not pred(got) and time.monotonic() < deadline:
            time.sleep(0.2)
            got = shipped()
        return got

    try:
        got = wait(lambda g: len(g) >= 1)
        assert [line for line, _ in got] == ['{"level":"info","trace_id":"t-web","msg":"hello from web"}'], agent.log()
        labels = got[0][1]
        assert {k: labels[k] for k in ("namespace", "pod", "container", "app", "level")} == {
            "namespace": "default",
            "pod": "web",
            "container": "app",
            "app": "web",
            "level": "info",
        }
        assert "trace_id" not in labels, "trace_id stays in the extracted map"
        assert labels["filename"].endswith("/app/0.log")
        # A pod arrives (watch ADDED), and the quiet one gets annotated (MODIFIED): both are followed.
        pod_log("api", ['{"level":"error","trace_id":"t-api","msg":"boom"}'])
        kube.put(make_pod("api", labels={"app": "api"}, annotations=enabled))
        kube.put(make_pod("quiet", labels={"app": "quiet"}, annotations=enabled))
        got = wait(lambda g: len(g) >= 3)
        by_pod = {labels["pod"]: line for line, labels in got}
        assert set(by_pod) == {"web", "api", "quiet"}, agent.log()
        assert next(labels for _, labels in got if labels["pod"] == "api")["level"] == "error"
        # Logs of a pod that went away no longer arrive; the others still do.
        kube.delete("default", "api")
        time.sleep(1.5)
        pod_log("api", ['{"level":"info","msg":"after delete"}'])
        pod_log("web", ['{"level":"info","msg":"still here"}'])
        got = wait(lambda g: any("still here" in line for line, _ in g))
        lines = [line for line, _ in got]
        assert any("still here" in line for line in lines)
        assert not any("after delete" in line for line in lines)
    finally:
        agent.stop()
        kube.close()
        api.shutdown()
        api.server_close()


@pytest.mark.timeout(120)
def test_syslog_and_push_api_sources_are_relabeled_and_forwarded(tmp_path, make_server) -> None:
    server = make_server()
    syslog_port, push_port = free_port(), free_port()
    config = agent_config(tmp_path, server)
    config["scrape_configs"] = [
        {
            "job_name": "syslog",
            "syslog": {"listen_address": f"127.0.0.1:{syslog_port}", "labels": {"job": "syslog"}},
            "relabel_configs": [{"source_labels": ["__syslog_message_app_name"], "target_label": "app"}],
        },
        {
            "job_name": "push",
            "loki_push_api": {
                "server": {"http_listen_address": "127.0.0.1", "http_listen_port": push_port},
                "labels": {"via": "agent"},
                "use_incoming_timestamp": True,
            },
        },
    ]
    agent = AgentProcess(tmp_path, config).start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", syslog_port), timeout=2) as s:
                    msg = b"<165>1 2024-01-01T00:00:00Z host1 billing 42 ID7 - payment accepted"
                    s.sendall(str(len(msg)).encode() + b" " + msg)
                break
            except OSError:
                assert time.monotonic() < deadline, agent.log()
                time.sleep(0.1)
        ts = time.time_ns() - 5 * 10**9
        body = {"streams": [{"stream": {"job": "pushed"}, "values": [[str(ts), "forwarded line"]]}]}
        r = httpx.post(f"http://127.0.0.1:{push_port}/loki/api/v1/push", json=body, timeout=10)
        assert r.status_code == 204, r.text
        start = time.time_ns() - 60 * 10**9

        def find(query: str) -> list[tuple[int, str, dict]]:
            deadline = time.monotonic() + 20
            while True:
                with server.client() as c:
                    got = read_all(c, query, start, time.time_ns() + 10**9)
                if got or time.monotonic() > deadline:
                    return got
                time.sleep(0.2)

        syslog = find('{job="syslog"}')
        assert [line for _, line, _ in syslog] == ["payment accepted"], agent.log()
        assert syslog[0][2]["app"] == "billing"
        assert not any(k.startswith("__") for k in syslog[0][2])
        pushed = find('{job="pushed"}')
        assert [(t, line) for t, line, _ in pushed] == [(ts, "forwarded line")]
        assert pushed[0][2]["via"] == "agent"
    finally:
        agent.stop()


@pytest.mark.timeout(60)
def test_a_graceful_stop_sends_what_waits_in_a_batch(tmp_path, make_server) -> None:
    server = make_server()
    (tmp_path / "logs").mkdir()
    config = agent_config(tmp_path, server)
    config["clients"][0]["batchwait"] = "1h"  # nothing leaves before the stop
    agent = AgentProcess(tmp_path, config).start()
    w = Writer(tmp_path / "logs")
    w.write("a.log", 20)
    time.sleep(1.5)  # read, and waiting in the batch
    start = time.time_ns() - 60 * 10**9
    assert _lines_by_file(server, start) == {}
    assert agent.stop() == 0
    assert _lines_by_file(server, start) == w.want
    positions = yaml.safe_load((tmp_path / "positions.yaml").read_text())
    assert positions["positions"] == {
        str(tmp_path / "logs" / "a.log"): str((tmp_path / "logs" / "a.log").stat().st_size)
    }


@pytest.mark.parametrize(
    ("scrape", "message"),
    [
        ({"static_configs": [{"lables": {"job": "a"}}]}, "scrape_configs[0].static_configs[0]: unknown key 'lables'"),
        (
            {
                "static_configs": [{"labels": {"__path__": "/tmp/x"}}],
                "pipeline_stages": [{"regex": {"expression": "(?=b)"}}],
            },
            "scrape_configs[0] (job 'a').pipeline_stages: stage 0 (regex): key 'expression'",
        ),
        (
            {"static_configs": [{"labels": {"__path__": "/tmp/x"}}], "relabel_configs": [{"action": "nope"}]},
            "scrape_configs[0].relabel_configs[0].action: unknown relabel action 'nope'",
        ),
    ],
)
def test_a_bad_config_is_refused_with_the_key_at_fault(tmp_path, scrape, message) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        yaml.safe_dump({"clients": [{"url": "http://127.0.0.1:9/x"}], "scrape_configs": [{"job_name": "a", **scrape}]})
    )
    r = subprocess.run(
        [sys.executable, "-m", "loglake", "agent", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
