"""Fixtures that run the real loglake server on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoglakeServer:
    """A `loglake serve` process on a loopback port, with its own data directory."""

    data_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LoglakeServer:
        """Start the server (on the same port and data dir as before, if restarted) and wait for /ready."""
        if not self.port:
            self.port = free_port()
        cfg = {
            "server": {"http_listen_address": "127.0.0.1", "http_listen_port": self.port},
            "common": {"path_prefix": str(self.data_dir)},
        }
        for key, value in self.config.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        cfg_path = self.data_dir.parent / f"{self.data_dir.name}-config.yaml"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(yaml.safe_dump(cfg))
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loglake", "serve", "--config", str(cfg_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.data_dir.parent),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"loglake exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"loglake did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """Return what the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill9(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """Stop the server with SIGTERM and return its exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else 0

    def client(self, tenant: str | None = None) -> httpx.Client:
        """Return an HTTP client for the server, sending `X-Scope-OrgID` when a tenant is given."""
        headers = {"X-Scope-OrgID": tenant} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Factory: `make_server(config_overrides)` starts a server with its own data dir; all are stopped after."""
    servers: list[LoglakeServer] = []

    def make(config: dict[str, Any] | None = None, name: str = "data") -> LoglakeServer:
        server = LoglakeServer(tmp_path / name, config or {})
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()
    if os.environ.get("LOGLAKE_TEST_SHOW_LOGS"):
        for server in servers:
            print(server.log())


@pytest.fixture
def server(make_server: Any) -> LoglakeServer:
    """A fresh server that accepts old samples (the test data has fixed timestamps)."""
    return make_server({"limits_config": {"reject_old_samples": False}})
