"""Run ../shared/bench (the Loki-API benchmark) against a fresh loglake server and keep the results.

    python3 benchmarks/shared_bench.py                 # full data set, 4 pushers
    python3 benchmarks/shared_bench.py --subset 0.1    # quick run on the first 90 s of data

The server runs on a free loopback port with a new data directory; the bench harness measures ingest, flush,
disk, memory and queries, and its JSON goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent.parent / "shared" / "bench" / "bench.py"


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until the server answers /ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"loglake exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("loglake did not become ready")


def main() -> int:
    """Start a server, run the harness, save the results; return the harness's exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=float, default=1.0, help="fraction of the data set (default: all)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query")
    ap.add_argument("--keep", action="store_true", help="keep the data directory afterwards")
    ap.add_argument("--label", default="loglake")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="loglake-bench-"))
    data = work / "data"
    port = free_port()
    cfg = work / "config.yaml"
    cfg.write_text(
        f"server: {{http_listen_port: {port}}}\n"
        f"common: {{path_prefix: {data}}}\n"
        # The data set is from 2024 and is pushed as fast as possible.
        "limits_config: {reject_old_samples: false, ingestion_rate_mb: 100000, ingestion_burst_size_mb: 100000}\n"
    )
    url = f"http://127.0.0.1:{port}"
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "loglake", "serve", "--config", str(cfg)], stdout=log, stderr=log)
    try:
        wait_ready(url, proc)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = HERE / "results" / f"{stamp}-{args.label}-subset{args.subset:g}.json"
        out.parent.mkdir(exist_ok=True)
        cmd = [
            sys.executable,
            str(BENCH),
            "--url",
            url,
            "--data-dir",
            str(data),
            "--pid",
            str(proc.pid),
            "--concurrency",
            str(args.concurrency),
            "--subset",
            str(args.subset),
            "--runs",
            str(args.runs),
            "--disk-exclude",
            "wal",
            "--label",
            args.label,
            "--out",
            str(out),
        ]
        return subprocess.call(cmd, cwd=BENCH.parent)
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"data kept in {work}")


if __name__ == "__main__":
    raise SystemExit(main())
