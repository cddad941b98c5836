"""LokiHandler against a real loglake server: labels, metadata, encodings, batching, outages, drops, exit."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loglake.logging.handler import LokiHandler
from tests.conftest import REPO, free_port
from tests.helpers import now_ns, read_all


@pytest.fixture
def make_logger() -> Iterator[Callable[[LokiHandler], logging.Logger]]:
    """Factory: a fresh logger that writes only to the given handler; handlers are closed after the test."""
    made: list[tuple[logging.Logger, LokiHandler]] = []

    def make(handler: LokiHandler) -> logging.Logger:
        logger = logging.getLogger(f"test.loki.{uuid.uuid4().hex}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close(timeout=1.0)


def service() -> str:
    """Return a service name unique to one test, so that queries see only that test's records."""
    return f"svc_{uuid.uuid4().hex[:12]}"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def query(server: Any, q: str, start: int, tenant: str | None = None) -> list[tuple[int, str, dict[str, str]]]:
    """Return every entry `q` selects from `start` to a minute from now."""
    with server.client(tenant) as client:
        return read_all(client, q, start, now_ns() + 60_000_000_000)


def messages(entries: list[tuple[int, str, dict[str, str]]]) -> list[str]:
    """Return the `message` field of JSON lines."""
    import json

    return [json.loads(line)["message"] for _, line, _ in entries]


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_records_arrive_with_labels_metadata_and_in_order(server, make_logger, encoding: str) -> None:
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name, "env": "test"}, encoding=encoding)
    assert handler.encoding == encoding
    log = make_logger(handler)
    start = now_ns()
    trace_id = uuid.uuid4().hex
    for i in range(200):
        log.info("step %d", i, extra={"trace_id": trace_id, "request_id": f"r{i}", "other": "x"})
    log.warning("careful", extra={"trace_id": trace_id})
    assert handler.flush(timeout=10)

    got = query(server, f'{{service_name="{name}"}}', start)
    assert messages(got) == [f"step {i}" for i in range(200)] + ["careful"]
    stream = got[0][2]
    assert stream["env"] == "test" and stream["level"] == "info"
    assert stream["trace_id"] == trace_id and stream["request_id"] == "r0"
    assert "other" not in stream  # fields that are neither labels nor metadata stay in the line only
    assert got[-1][2]["level"] == "warning"
    stamps = [ts for ts, _, _ in got[:200]]
    assert stamps == sorted(stamps) and len(set(stamps)) == 200

    # Structured metadata is queryable as a label after the selector.
    by_request = query(server, f'{{service_name="{name}"}} | request_id="r7"', start)
    assert messages(by_request) == ["step 7"]
    by_trace = query(server, f'{{service_name="{name}", level="warning"}} | trace_id="{trace_id}"', start)
    assert messages(by_trace) == ["careful"]
    assert handler.stats.sent == 201 and handler.stats.queued == 0


def test_equal_lines_in_one_clock_tick_are_all_kept(server, make_logger) -> None:
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name})
    handler.setFormatter(logging.Formatter("%(message)s"))  # identical lines: only the timestamps tell them apart
    log = make_logger(handler)
    start = now_ns()
    for _ in range(300):
        log.info("same")
    assert handler.flush(timeout=10)
    got = query(server, f'{{service_name="{name}"}}', start)
    assert [line for _, line, _ in got] == ["same"] * 300


@pytest.mark.parametrize("path", ["", "/", "/loki/api/v1/push"])
def test_base_url_or_push_url_and_tenant_header(make_server, make_logger, path: str) -> None:
    server = make_server({"auth_enabled": True})
    name = service()
    start = now_ns()
    handler = LokiHandler(server.url + path, labels={"service_name": name}, tenant="team-a")
    make_logger(handler).error("for team a")
    assert handler.flush(timeout=10)
    assert messages(query(server, f'{{service_name="{name}"}}', start, tenant="team-a")) == ["for team a"]
    assert query(server, f'{{service_name="{name}"}}', start, tenant="team-b") == []


def test_a_full_batch_is_pushed_at_once_and_the_rest_after_flush_interval(server, make_logger) -> None:
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name}, batch_size=100, flush_interval=0.5)
    log = make_logger(handler)
    t0 = time.monotonic()
    for i in range(250):
        log.info("r%d", i)
    assert wait_until(lambda: handler.stats.sent >= 200)
    assert handler.stats.batches == 2 and handler.stats.sent == 200 and handler.stats.queued == 50
    assert time.monotonic() - t0 < 0.5 or handler.stats.sent == 250  # the full batches did not wait
    assert wait_until(lambda: handler.stats.sent == 250)
    assert time.monotonic() - t0 >= 0.45  # the last partial batch waited for the interval
    assert handler.stats.batches == 3


def test_batches_are_cut_by_bytes(server, make_logger) -> None:
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name}, batch_bytes=10_000, flush_interval=30)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = make_logger(handler)
    for i in range(10):
        log.info("%04d", i, extra={})
        log.info("x" * 2000)
    assert wait_until(lambda: handler.stats.batches >= 2)
    assert handler.flush(timeout=10)
    stats = handler.stats
    assert stats.sent == 20 and 3 <= stats.batches <= 4, stats  # about 20 kB of lines in batches of <= 10 kB


def test_a_time_limited_batch_waits_for_flush_interval(server, make_logger) -> None:
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name}, flush_interval=0.3)
    log = make_logger(handler)
    t0 = time.monotonic()
    for i in range(5):
        log.info("r%d", i)
    time.sleep(0.1)
    assert handler.stats.sent == 0
    assert wait_until(lambda: handler.stats.sent == 5, timeout=5)
    assert time.monotonic() - t0 >= 0.28
    assert handler.stats.batches == 1


def test_log_calls_stay_fast_while_the_server_is_down(make_logger) -> None:
    # Nothing listens on the port: every connection attempt fails at once.
    handler = LokiHandler(f"http://127.0.0.1:{free_port()}", labels={"service_name": "down"}, max_queue=2000)
    log = make_logger(handler)
    perf = time.perf_counter
    results = []
    # Other processes share the CI machine and preempt us at random; the best of three runs shows the handler.
    for _attempt in range(3):
        durations = []
        for i in range(5000):
            t = perf()
            log.info("record %d with a field", i, extra={"trace_id": "ab" * 16, "n": i})
            durations.append(perf() - t)
        durations.sort()
        results.append((durations[int(len(durations) * 0.999) - 1], durations[2500], durations[-1]))
        if results[-1][0] < 0.001:
            break
    p999, median, slowest = min(results)
    print(f"log call while down: median {median * 1e6:.1f} us, p99.9 {p999 * 1e6:.1f} us, max {slowest * 1e6:.1f} us")
    assert p999 < 0.001 and median < 0.0002
    stats = handler.stats
    assert stats.sent == 0 and stats.queued == 2000  # nothing was taken out of the queue while unreachable
    assert stats.dropped_queue_full == 5000 * len(results) - 2000
    assert stats.retries >= 1


def test_the_newest_records_arrive_when_the_server_comes_back(server, make_logger) -> None:
    name = service()
    server.stop()
    handler = LokiHandler(server.url, labels={"service_name": name}, max_queue=1000, batch_size=300)
    log = make_logger(handler)
    start = now_ns()
    for i in range(3000):
        log.info("r%d", i)
    assert handler.stats.dropped_queue_full == 2000
    assert handler.stats.queued == 1000
    assert handler.flush(timeout=1.0) is False  # bounded: the server is down
    server.start()
    assert handler.flush(timeout=20)
    assert messages(query(server, f'{{service_name="{name}"}}', start)) == [f"r{i}" for i in range(2000, 3000)]
    stats = handler.stats
    assert stats.sent == 1000 and stats.dropped_failed == 0 and stats.retries >= 1


def test_a_push_that_fails_midway_is_retried_after_the_server_restarts(server, make_logger) -> None:
    name = service()
    handler = LokiHandler(
        server.url, labels={"service_name": name}, min_backoff=0.05, max_backoff=0.2, max_retries=1000
    )
    log = make_logger(handler)
    start = now_ns()
    log.info("before")
    assert handler.flush(timeout=10)  # the handler now holds a keep-alive connection
    server.stop()
    for i in range(20):
        log.info("during %d", i)
    assert handler.flush(timeout=0.5) is False
    assert wait_until(lambda: handler.stats.retries >= 2)
    server.start()
    assert handler.flush(timeout=20)
    got = messages(query(server, f'{{service_name="{name}"}}', start))
    assert got == ["before"] + [f"during {i}" for i in range(20)]
    assert handler.stats.dropped_failed == 0


def test_a_refused_batch_is_dropped_and_counted_without_retrying(make_server, make_logger, capsys) -> None:
    server = make_server({"limits_config": {"reject_old_samples": False, "max_line_size": 1000}})
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name})
    log = make_logger(handler)
    start = now_ns()
    log.info("x" * 2000)
    assert handler.flush(timeout=10)
    log.info("short")
    assert handler.flush(timeout=10)
    stats = handler.stats
    assert (stats.dropped_rejected, stats.retries, stats.sent) == (1, 0, 1)
    assert messages(query(server, f'{{service_name="{name}"}}', start)) == ["short"]
    err = capsys.readouterr().err
    assert err.count("refused 1 records (400)") == 1 and "max entry size" in err


def test_flush_and_close_return_in_bounded_time_when_the_server_is_down(make_logger) -> None:
    handler = LokiHandler(f"http://127.0.0.1:{free_port()}", labels={"service_name": "down"})
    log = make_logger(handler)
    for i in range(10):
        log.info("r%d", i)
    t0 = time.monotonic()
    assert handler.flush(timeout=2.0) is False
    flushed = time.monotonic() - t0
    t0 = time.monotonic()
    handler.close()
    closed = time.monotonic() - t0
    assert flushed <= 2.2 and closed <= handler.close_timeout + 0.8, (flushed, closed)
    log.info("after close")  # ignored, never raises
    assert not handler._worker.is_alive()


def test_a_label_field_with_ids_warns_and_invalid_names_raise() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.warns(UserWarning, match="'trace_id'.*metadata_fields") as caught:
        LokiHandler(url, label_fields=("level", "trace_id")).close(timeout=0)
    assert caught[0].filename == __file__  # points at the caller, not at the handler
    with pytest.warns(UserWarning, match="'order_id'"):
        LokiHandler(url, label_fields=("order_id",)).close(timeout=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LokiHandler(url, label_fields=("level", "logger", "tenant_id")).close(timeout=0)
    for bad in [{"labels": {"bad-name": "x"}}, {"label_fields": ("9lives",)}, {"labels": {"__name__": "x"}}]:
        with pytest.raises(ValueError, match="invalid label name"):
            LokiHandler(url, **bad)
    with pytest.raises(ValueError, match="non-empty"):
        LokiHandler(url, labels={"service_name": ""})
    with pytest.raises(ValueError, match="invalid Loki URL"):
        LokiHandler("127.0.0.1:3100")


def test_records_logged_by_the_push_thread_are_ignored(server, make_logger) -> None:
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name})
    log = make_logger(handler)
    post = handler._post

    def noisy_post(body: bytes) -> Any:
        log.warning("from inside the push")  # as an instrumented http library would
        return post(body)

    handler._post = noisy_post  # type: ignore[method-assign]
    start = now_ns()
    log.info("app")
    assert handler.flush(timeout=10)
    log.info("app again")
    assert handler.flush(timeout=10)
    assert messages(query(server, f'{{service_name="{name}"}}', start)) == ["app", "app again"]


def test_service_name_defaults_to_otel_service_name(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    handler = LokiHandler(f"http://127.0.0.1:{free_port()}")
    handler.close(timeout=0)
    assert handler.labels == {"service_name": "checkout"}


_EXIT_SCRIPT = """
import logging, sys
from loglake.logging.handler import LokiHandler
handler = LokiHandler(sys.argv[1], labels={"service_name": sys.argv[2]}, flush_interval=60)
log = logging.getLogger("app")
log.addHandler(handler)
log.setLevel(logging.INFO)
for i in range(50):
    log.info("exiting %d", i)
"""


def test_a_process_that_exits_without_closing_still_delivers(server) -> None:
    name = service()
    start = now_ns()
    code = textwrap.dedent(_EXIT_SCRIPT)
    subprocess.run([sys.executable, "-c", code, server.url, name], cwd=REPO, check=True, timeout=30)
    got = messages(query(server, f'{{service_name="{name}"}}', start))
    assert got == [f"exiting {i}" for i in range(50)]


def test_a_process_exits_promptly_when_the_server_is_down() -> None:
    code = textwrap.dedent(_EXIT_SCRIPT)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, f"http://127.0.0.1:{free_port()}", "down"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 2.0 + 2.5, elapsed  # close_timeout (2 s) plus interpreter start-up
    assert "cannot reach" in proc.stderr and "Traceback" not in proc.stderr


class _FlakyPushServer:
    """A push endpoint on a loopback port that answers 503 with Retry-After a few times, then 204."""

    def __init__(self, failures: int) -> None:
        import http.server
        import threading

        self.failures = failures
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if len(outer.requests) < outer.failures else 204
                outer.requests.append((status, dict(self.headers), body))
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "0.2")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_5xx_is_retried_after_retry_after_with_the_same_body(make_logger) -> None:
    import gzip
    import json

    stub = _FlakyPushServer(failures=2)
    try:
        handler = LokiHandler(
            stub.url, labels={"service_name": "flaky"}, encoding="json", min_backoff=0.01, auth=("u", "p")
        )
        make_logger(handler).info("hello")
        t0 = time.monotonic()
        assert handler.flush(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        stub.close()
    assert [status for status, _, _ in stub.requests] == [503, 503, 204]
    assert elapsed >= 0.35  # two waits of Retry-After 0.2 s, not min_backoff
    assert len({body for _, _, body in stub.requests}) == 1
    _, headers, body = stub.requests[-1]
    assert headers["Content-Encoding"] == "gzip" and headers["Authorization"] == "Basic dTpw"
    doc = json.loads(gzip.decompress(body))
    assert doc["streams"][0]["stream"] == {"service_name": "flaky", "level": "info"}
    assert json.loads(doc["streams"][0]["values"][0][1])["message"] == "hello"
    assert (handler.stats.retries, handler.stats.sent, handler.stats.dropped_failed) == (2, 1, 0)


def test_after_max_retries_the_batch_is_dropped_and_counted(make_logger) -> None:
    stub = _FlakyPushServer(failures=100)
    try:
        handler = LokiHandler(
            stub.url, labels={"service_name": "flaky"}, max_retries=2, min_backoff=0.01, max_backoff=0.05
        )
        make_logger(handler).info("lost")
        assert handler.flush(timeout=10)
    finally:
        stub.close()
    assert len(stub.requests) == 3
    assert (handler.stats.dropped_failed, handler.stats.sent, handler.stats.queued) == (1, 0, 0)


_FORK_SCRIPT = """
import logging, os, sys
from loglake.logging.handler import LokiHandler
handler = LokiHandler(sys.argv[1], labels={"service_name": sys.argv[2]}, flush_interval=60)
log = logging.getLogger("app")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.info("parent before fork")
pid = os.fork()
if pid == 0:
    log.info("child")
else:
    log.info("parent after fork")
    os.waitpid(pid, 0)
"""


def test_a_forked_child_pushes_its_own_records_only(server) -> None:
    name = service()
    start = now_ns()
    code = textwrap.dedent(_FORK_SCRIPT)
    subprocess.run([sys.executable, "-c", code, server.url, name], cwd=REPO, check=True, timeout=30)
    got = messages(query(server, f'{{service_name="{name}"}}', start))
    assert sorted(got) == ["child", "parent after fork", "parent before fork"]


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_text_that_is_not_valid_utf8_is_replaced_not_lost(server, make_logger, encoding: str) -> None:
    name = service()
    handler = LokiHandler(server.url, labels={"service_name": name}, label_fields=("path",), encoding=encoding)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = make_logger(handler)
    start = now_ns()
    bad = b"file-\xff.txt".decode("utf-8", "surrogateescape")  # as os.listdir returns an undecodable name
    log.info("opened %s", bad, extra={"path": bad, "request_id": bad})
    assert handler.flush(timeout=10)
    [(_, line, stream)] = query(server, f'{{service_name="{name}"}}', start)
    assert line == "opened file-\ufffd.txt"
    assert stream["path"] == "file-\ufffd.txt"
    assert stream["request_id"].startswith("file-")  # the server may rewrite U+FFFD in metadata values
    assert handler.stats.dropped_errors == 0
