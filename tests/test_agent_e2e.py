"""The agent as a process against a real loglake server: files written while it runs, rotated by rename and by
copytruncate, the agent killed with SIGKILL and restarted, the server stopped and restarted. Every line must
arrive exactly once, in order per file."""

from __future__ import annotations

import os
import shutil
import signal
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

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.tmp = tmp
        self.port = config["server"]["http_listen_port"]
        self.cfg = tmp / "agent.yaml"
        self.cfg.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loglake", "agent", "--config", str(self.cfg)], stdout=log, stderr=log
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
