"""Agent throughput: one `loglake agent` tailing 100 files that a writer appends to, shipping to a loglake server.

Prints lines/s (from the first write until the agent reports every line sent and the server counts them all),
the agent's CPU per line and its peak RSS, and writes the figures as JSON to benchmarks/results/.

    python3 benchmarks/agent_bench.py                  # 100 files x 10,000 lines
    python3 benchmarks/agent_bench.py --lines 2000     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """Return a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until `url` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} not ready")


def proc_figures(pid: int) -> tuple[float, int]:
    """Return (CPU seconds, peak RSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
    return cpu, hwm


def start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `loglake serve` on a free port with its data in tmp, its ingestion limit raised; return it and its URL."""
    port = free_port()
    cfg = tmp / "server.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"http_listen_address": "127.0.0.1", "http_listen_port": port},
                "common": {"path_prefix": str(tmp / "data")},
                # The default 4 MB/s per tenant would measure the server's limit, not the client.
                "limits_config": {"ingestion_rate_mb": 1000, "ingestion_burst_size_mb": 1000},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglake", "serve", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/ready", proc)
    return proc, url


def sent(agent_url: str) -> float:
    """Return the entries the agent reports sent."""
    text = httpx.get(agent_url + "/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(r"^promtail_sent_entries_total\{[^}]*\} (\S+)$", text, re.M))


def main() -> int:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--lines", type=int, default=10_000, help="lines per file")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loglake-agent-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    agent_port = free_port()
    server, server_url = start_server(tmp)
    agent_cfg = tmp / "agent.yaml"
    agent_cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"http_listen_address": "127.0.0.1", "http_listen_port": agent_port},
                "positions": {"filename": str(tmp / "positions.yaml")},
                "clients": [{"url": f"{server_url}/loki/api/v1/push"}],
                "target_config": {"sync_period": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "bench",
                        "static_configs": [{"labels": {"job": "bench", "__path__": str(logs / "*.log")}}],
                    }
                ],
            }
        )
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "loglake", "agent", "--config", str(agent_cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{agent_port}/ready", agent)
        for i in range(args.files):
            (logs / f"app{i}.log").touch()
        time.sleep(1.5)  # the agent has found the files
        cpu0, _ = proc_figures(agent.pid)
        t0 = time.monotonic()
        # The writer appends in rounds, so every file grows while the agent reads.
        handles = [open(logs / f"app{i}.log", "a") for i in range(args.files)]
        rounds = 20
        per_round = args.lines // rounds
        n = 0
        for r in range(rounds):
            for i, f in enumerate(handles):
                f.write(
                    "".join(
                        f'level=info ts=2024-01-01T00:00:00Z caller=app.go:{j} msg="request served" file={i} '
                        f"seq={r * per_round + j} duration=12ms status=200\n"
                        for j in range(per_round)
                    )
                )
                f.flush()
                n += per_round
        for f in handles:
            f.close()
        t_written = time.monotonic()
        agent_url = f"http://127.0.0.1:{agent_port}"
        while sent(agent_url) < n:
            if time.monotonic() - t0 > 600:
                raise SystemExit("the agent did not ship every line in 10 minutes")
            time.sleep(0.05)
        t_done = time.monotonic()
        cpu1, hwm = proc_figures(agent.pid)
        q = httpx.get(
            f"{server_url}/loki/api/v1/query",
            params={"query": 'sum(count_over_time({job="bench"}[1h]))'},
            timeout=60,
        ).json()
        counted = int(float(q["data"]["result"][0]["value"][1])) if q["data"]["result"] else 0
        figures = {
            "files": args.files,
            "lines": n,
            "write_seconds": round(t_written - t0, 2),
            "ship_seconds": round(t_done - t0, 2),
            "lines_per_second": round(n / (t_done - t0)),
            "agent_cpu_seconds": round(cpu1 - cpu0, 2),
            "agent_cpu_us_per_line": round((cpu1 - cpu0) / n * 1e6, 2),
            "agent_peak_rss_mb": round(hwm / 2**20, 1),
            "server_counted_lines": counted,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(figures, indent=2))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        (out / f"{stamp}-agent.json").write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if counted == n else 1
    finally:
        for p in (agent, server):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    raise SystemExit(main())
