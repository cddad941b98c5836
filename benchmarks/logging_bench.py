"""loglake.logging costs: µs per log call of the formatter and filters, and LokiHandler with the server up and down.

Prints a table and writes the figures as JSON to benchmarks/results/.

    python3 benchmarks/logging_bench.py                    # 100,000 records per measurement
    python3 benchmarks/logging_bench.py --records 20000    # quicker
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from agent_bench import free_port, start_server
from opentelemetry.sdk.trace import TracerProvider

from loglake.logging import JSONFormatter, LokiHandler, RedactingFilter, TraceContextFilter, bind_context

HERE = Path(__file__).resolve().parent
TRACER = TracerProvider().get_tracer("bench")
MESSAGE = "Task %s completed by %s in %d ms"
ARGS = ("4711", "ana", 182)
EXTRA = {"task_id": 4711, "endpoint": "/tasks/4711/complete", "status_code": 200}


class NullStream(io.TextIOBase):
    """A text stream that keeps nothing (so the figures are not I/O)."""

    def write(self, text: str) -> int:
        """Discard text."""
        return len(text)


def logger_with(handler: logging.Handler) -> logging.Logger:
    """Return a fresh logger whose only handler is `handler`."""
    logger = logging.getLogger(f"bench.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class Calls:
    """Per-call times of a run of log calls, and which slow calls overlapped a garbage collection."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.slow: list[tuple[float, float]] = []
        self.collections: list[tuple[float, float]] = []
        self._gc_start = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """gc.callbacks hook: remember when each collection ran."""
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.collections.append((self._gc_start, time.perf_counter()))

    def slow_without_gc(self) -> int:
        """Return how many calls over 1 ms did not overlap a garbage collection."""
        return sum(1 for a, b in self.slow if not any(s < b and e > a for s, e in self.collections))


def per_call(
    logger: logging.Logger, n: int, message: str = MESSAGE, args: tuple[object, ...] = ARGS
) -> tuple[float, Calls]:
    """Log n records; return (mean µs per call, the calls' times)."""
    calls = Calls()
    times, slow = calls.times, calls.slow
    clock = time.perf_counter
    info = logger.info
    gc.callbacks.append(calls.on_gc)
    try:
        start = clock()
        for _ in range(n):
            t0 = clock()
            info(message, *args, extra=EXTRA)
            t1 = clock()
            times.append((t1 - t0) * 1e6)
            if t1 - t0 > 0.001:
                slow.append((t0, t1))
        mean = (clock() - start) * 1e6 / n
    finally:
        gc.callbacks.remove(calls.on_gc)
    return mean, calls


def stream_handler(*filters: logging.Filter) -> logging.Handler:
    """Return a JSON handler to a null stream with the given filters."""
    handler = logging.StreamHandler(NullStream())
    handler.setFormatter(JSONFormatter())
    for f in filters:
        handler.addFilter(f)
    return handler


def formatter_costs(n: int) -> dict[str, float]:
    """µs per record for the formatter alone and with each filter added."""
    setups: list[tuple[str, Callable[[], logging.Handler]]] = [
        ("json formatter", lambda: stream_handler()),
        ("+ trace context (in a span)", lambda: stream_handler(TraceContextFilter())),
        ("+ redaction", lambda: stream_handler(TraceContextFilter(), RedactingFilter())),
    ]
    out = {}
    bind_context(request_id="3f6c2a9e8b7d4c1e9a0b5d6e7f8a9b0c", user_id="ana")
    with TRACER.start_as_current_span("bench"):
        for name, make in setups:
            logger = logger_with(make())
            per_call(logger, n // 10)  # warm up
            out[name] = min(per_call(logger, n)[0] for _ in range(3))
        logger = logger_with(stream_handler(TraceContextFilter(), RedactingFilter()))
        secret = "login for %s with password=%s and Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0"
        secret_args = ("ana@example.com", "hunter2")
        out["+ redaction, message with 3 secrets"] = min(per_call(logger, n, secret, secret_args)[0] for _ in range(3))
    return out


def handler_up(url: str, n: int) -> dict[str, float]:
    """Records/s from the first log call until the server has acknowledged every record, and µs per call."""
    handler = LokiHandler(url, labels={"app": "bench-up"}, batch_size=2000, max_queue=max(n, 10_000))
    handler.addFilter(TraceContextFilter())
    logger = logger_with(handler)
    start = time.perf_counter()
    mean_us, calls = per_call(logger, n)
    handler.flush(timeout=120)
    elapsed = time.perf_counter() - start
    stats = handler.stats
    handler.close()
    count = httpx.get(
        url + "/loki/api/v1/query", params={"query": 'sum(count_over_time({app="bench-up"}[10m]))'}
    ).json()["data"]["result"]
    arrived = int(count[0]["value"][1]) if count else 0
    return {
        "records_per_s": n / elapsed,
        "call_us_mean": mean_us,
        "call_us_p99": sorted(calls.times)[int(n * 0.99)],
        "call_us_max": max(calls.times),
        "sent": stats.sent,
        "arrived": arrived,
        "dropped": stats.dropped_queue_full + stats.dropped_failed,
    }


def handler_down(n: int) -> dict[str, float]:
    """Per-call latency while nothing listens at the server's address (the queue fills, the oldest are dropped)."""
    handler = LokiHandler(
        f"http://127.0.0.1:{free_port()}", labels={"app": "bench-down"}, max_queue=10_000, close_timeout=0.5
    )
    handler.addFilter(TraceContextFilter())
    logger = logger_with(handler)
    per_call(logger, n // 10)
    mean_us, calls = per_call(logger, n)
    stats = handler.stats
    start = time.perf_counter()
    handler.close()
    close_s = time.perf_counter() - start
    times = sorted(calls.times)
    return {
        "records_per_s": 1e6 / mean_us,
        "call_us_mean": mean_us,
        "call_us_p99": times[int(len(times) * 0.99)],
        "call_us_max": times[-1],
        "calls_over_1ms": len(calls.slow),
        "calls_over_1ms_outside_gc": calls.slow_without_gc(),
        "dropped_queue_full": stats.dropped_queue_full,
        "close_s": close_s,
    }


def main() -> int:
    """Run the measurements, print them and save them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    n = args.records
    result: dict[str, object] = {"records": n, "formatter_us_per_record": formatter_costs(n)}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            result["handler_server_up"] = handler_up(url, n)
        finally:
            proc.terminate()
            proc.wait(60)
    result["handler_server_down"] = handler_down(n)

    print(f"{'formatter + filters':<40} µs/record")
    for name, us in result["formatter_us_per_record"].items():  # type: ignore[union-attr]
        print(f"  {name:<38} {us:8.2f}")
    for key in ("handler_server_up", "handler_server_down"):
        print(key)
        for name, value in result[key].items():  # type: ignore[union-attr]
            print(f"  {name:<38} {value:12,.2f}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = HERE / "results" / f"{stamp}-logging.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
