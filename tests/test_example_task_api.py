"""The Task API example end to end: uvicorn runs it, httpx calls it, and its failing request is found by trace id
in loglake, once through LokiHandler (pushed directly) and once through stdout -> file -> `loglake agent`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, LoglakeServer, free_port

EXAMPLE = REPO / "examples" / "task_api"


class Process:
    """A child process with its output in files, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> None:
        with open(stdout, "ab") as out, open(stderr, "ab") as err:
            self.proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=err)
        self.stderr = stderr

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr.read_text()
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"{url} not ready:\n{self.stderr.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Return check()'s first truthy result, retrying until timeout (pushes and the agent are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def query_lines(server: LoglakeServer, query: str) -> list[str]:
    response = httpx.get(
        server.url + "/loki/api/v1/query_range",
        params={"query": query, "since": "5m", "limit": 1000, "direction": "forward"},
    )
    assert response.status_code == 200, response.text
    values = [(int(ts), line) for s in response.json()["data"]["result"] for ts, line in s["values"]]
    return [line for _, line in sorted(values)]


def count_by_level(server: LoglakeServer) -> dict[str, int]:
    query = 'sum by (level) (count_over_time({app="task-api"} | json [5m]))'
    response = httpx.get(server.url + "/loki/api/v1/query", params={"query": query})
    assert response.status_code == 200, response.text
    return {r["metric"].get("level", ""): int(r["value"][1]) for r in response.json()["data"]["result"]}


def test_a_failing_request_is_found_by_its_trace_id_directly_and_through_the_agent(
    tmp_path: Path, make_server: Any, processes: list[Process]
) -> None:
    direct = make_server(name="direct")
    via_agent = make_server(name="via-agent")
    app_port, agent_port = free_port(), free_port()
    stdout = tmp_path / "task-api.log"
    app = Process(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLE), "app:app", "--port", str(app_port)],
        {"LOKI_URL": direct.url, "LOG_LEVEL": "info"},
        stdout,
        tmp_path / "task-api.stderr",
    )
    processes.append(app)
    app.wait_ready(f"http://127.0.0.1:{app_port}/health")
    agent = Process(
        [sys.executable, "-m", "loglake", "agent", "--config", str(EXAMPLE / "agent.yaml"), "-config.expand-env"],
        {
            "LOKI_URL": via_agent.url,
            "AGENT_PORT": str(agent_port),
            "AGENT_POSITIONS": str(tmp_path / "positions.yaml"),
            "TASK_API_LOG": str(stdout),
        },
        tmp_path / "agent.out",
        tmp_path / "agent.err",
    )
    processes.append(agent)
    agent.wait_ready(f"http://127.0.0.1:{agent_port}/ready")

    with httpx.Client(base_url=f"http://127.0.0.1:{app_port}", headers={"X-User-ID": "ana"}) as api:
        assert api.post("/tasks", json={"title": "write the docs"}).status_code == 201
        assert api.post("/tasks", json={"title": "ship it", "assignee": "bo"}).status_code == 201
        assert api.get("/tasks").status_code == 200
        assert api.get("/tasks/42").status_code == 404
        assert api.post("/tasks", json={"title": ""}).status_code == 422
        failed = api.get("/tasks/stats")
    assert failed.status_code == 500
    trace_id = failed.json()["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16)

    # What the app printed is the truth both paths are checked against.
    def printed() -> list[dict]:
        return [json.loads(line) for line in stdout.read_text().splitlines() if line.strip()]

    eventually(lambda: any(d.get("message", "").startswith("Unhandled exception") for d in printed()))
    of_trace = [d for d in printed() if d.get("trace_id") == trace_id]
    assert [d["message"] for d in of_trace[:3]] == [
        "Request received",
        "Computing task statistics",
        "Unhandled exception: ZeroDivisionError: float division by zero",
    ]
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /tasks/stats HTTP/1\.1" 500', of_trace[3]["message"])
    assert [d["logger"] for d in of_trace] == ["loglake.access", "task_api", "loglake.access", "uvicorn.access"]
    assert {d["user_id"] for d in of_trace[:3]} == {"ana"} and len({d["request_id"] for d in of_trace[:3]}) == 1
    assert "ZeroDivisionError" in of_trace[2]["exception"]

    def levels_match(server: LoglakeServer) -> bool:
        return count_by_level(server) == dict(Counter(d["level"] for d in printed()))

    for server in (direct, via_agent):
        assert eventually(lambda server=server: levels_match(server)), (server.data_dir.name, count_by_level(server))
        found = query_lines(server, '{app="task-api"} |= "' + trace_id + '"')
        assert sorted(json.loads(line)["message"] for line in found) == sorted(d["message"] for d in of_trace)
        by_metadata = query_lines(server, '{app="task-api"} | trace_id="' + trace_id + '"')
        assert sorted(by_metadata) == sorted(found)
        errors = [json.loads(line) for line in query_lines(server, '{app="task-api", level="error"}')]
        # Ours, with the trace id, and uvicorn's own report of the same exception (outside the request's span).
        assert sorted(d["logger"] for d in errors) == ["loglake.access", "uvicorn.error"]
        assert [d.get("trace_id") for d in errors if d["logger"] == "loglake.access"] == [trace_id]
