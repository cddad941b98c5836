"""Loki clients from PyPI, configured as their READMEs say, push to loglake and their lines are found by a query."""

from __future__ import annotations

import json
import logging
import queue
import time
import uuid
from typing import Any

import httpx
import logging_loki
from loki_logger_handler.loki_logger_handler import LokiLoggerHandler

from tests.conftest import LoglakeServer
from tests.helpers import now_ns, read_all

S = 10**9


def _logger(handler: logging.Handler) -> logging.Logger:
    """A fresh logger writing only to `handler`."""
    logger = logging.getLogger(f"loglake-test-{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


def _wait_for(c: httpx.Client, query: str, start: int, count: int, timeout: float = 15.0) -> list[Any]:
    """Poll until `query` finds `count` entries: for clients that send from their own thread."""
    deadline = time.monotonic() + timeout
    while True:
        got = read_all(c, query, start, now_ns() + S)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- python-logging-loki
# It sends one JSON push per record, synchronously, with requests; an error answer goes to handleError (stderr).


def test_python_logging_loki_handler_v1_pushes_each_record(server: LoglakeServer) -> None:
    start = now_ns() - S
    handler = logging_loki.LokiHandler(
        url=server.url + "/loki/api/v1/push", tags={"application": "pll-test"}, version="1"
    )
    logger = _logger(handler)
    for i in range(5):
        logger.error("payment failed order=%d", i, extra={"tags": {"component": "billing"}})
    logger.info("all good")
    handler.close()
    with server.client() as c:
        got = read_all(c, '{application="pll-test"}', start, now_ns() + S)
    assert [line for _, line, _ in got] == [f"payment failed order={i}" for i in range(5)] + ["all good"]
    labels = got[0][2]
    assert labels == {
        "application": "pll-test",
        "component": "billing",
        "logger": logger.name,
        "service_name": "pll-test",
        "severity": "error",
    }
    assert got[-1][2]["severity"] == "info"


def test_python_logging_loki_queue_handler_delivers_everything_on_stop(server: LoglakeServer) -> None:
    start = now_ns() - S
    handler = logging_loki.LokiQueueHandler(
        queue.Queue(-1), url=server.url + "/loki/api/v1/push", tags={"application": "pll-queue"}, version="1"
    )
    logger = _logger(handler)
    for i in range(20):
        logger.warning("queued %02d", i)
    handler.listener.stop()  # drains the queue through the LokiHandler, then joins its thread
    with server.client() as c:
        got = read_all(c, '{application="pll-queue", severity="warning"}', start, now_ns() + S)
    assert sorted(line for _, line, _ in got) == [f"queued {i:02d}" for i in range(20)]


def test_python_logging_loki_handler_v0_pushes_to_the_legacy_path(server: LoglakeServer) -> None:
    start = now_ns() - S
    handler = logging_loki.LokiHandler(url=server.url + "/api/prom/push", tags={"application": "pll-v0"}, version="0")
    _logger(handler).error("legacy shape")
    with server.client() as c:
        got = read_all(c, '{application="pll-v0"}', start, now_ns() + S)
    assert [line for _, line, _ in got] == ["legacy shape"]


# ---------------------------------------------------------------------------------------------- loki-logger-handler
# It buffers records and sends them from a thread every `timeout` seconds, or when `flush_event` is set, as one
# JSON push (gzip-compressed by default) whose lines are JSON documents of the record.


def test_loki_logger_handler_pushes_gzip_json_with_labels_and_structured_metadata(server: LoglakeServer) -> None:
    start = now_ns() - S
    handler = LokiLoggerHandler(
        url=server.url + "/loki/api/v1/push",
        labels={"application": "llh-test", "environment": "develop"},
        label_keys={"region": None},
        timeout=60,
        enable_structured_loki_metadata=True,
        loki_metadata_keys=["trace_id"],
    )
    logger = _logger(handler)
    for i in range(3):
        logger.info("checkout step %d", i, extra={"trace_id": f"trace-{i}", "region": "eu", "custom": i})
    logger.debug("no metadata here", extra={"region": "us"})
    handler.flush_event.set()
    with server.client() as c:
        got = _wait_for(c, '{application="llh-test"}', start, 4)
        assert len(got) == 4, f"handler error flag: {handler.error}"
        by_message = {json.loads(line)["message"]: labels for _, line, labels in got}
        assert set(by_message) == {"checkout step 0", "checkout step 1", "checkout step 2", "no metadata here"}
        assert by_message["checkout step 1"] == {
            "application": "llh-test",
            "environment": "develop",
            "region": "eu",
            "service_name": "llh-test",
            "trace_id": "trace-1",
        }
        assert "trace_id" not in by_message["no metadata here"]
        assert by_message["no metadata here"]["region"] == "us"
        # The lines are the handler's JSON documents of the record, extra fields included.
        infos = read_all(c, '{application="llh-test"} |= `"level": "INFO"`', start, now_ns() + S)
    docs = sorted((json.loads(line) for _, line, _ in infos), key=lambda d: d["message"])
    assert [(d["message"], d["custom"], d["name"]) for d in docs] == [
        (f"checkout step {i}", i, logger.name) for i in range(3)
    ]
    assert all("trace_id" not in d for d in docs), "metadata keys move out of the line"


def test_loki_logger_handler_sends_the_tenant_header_uncompressed(make_server: Any) -> None:
    server = make_server({"auth_enabled": True})
    start = now_ns() - S
    handler = LokiLoggerHandler(
        url=server.url + "/loki/api/v1/push",
        labels={"application": "llh-tenant"},
        additional_headers={"X-Scope-OrgID": "team-llh"},
        compressed=False,
        message_in_json_format=False,
        default_formatter=_MessageOnly(),
        timeout=60,
    )
    logger = _logger(handler)
    logger.error("plain text for one tenant")
    handler.flush_event.set()
    with server.client("team-llh") as mine, server.client("someone-else") as other:
        got = _wait_for(mine, '{application="llh-tenant"}', start, 1)
        assert [line for _, line, _ in got] == ["plain text for one tenant"]
        assert read_all(other, '{application="llh-tenant"}', start, now_ns() + S) == []


class _MessageOnly:
    """A loki-logger-handler formatter whose line is the bare message (with message_in_json_format=False)."""

    def format(self, record: logging.LogRecord) -> tuple[str, dict[str, str]]:
        """Return the line and no structured metadata."""
        return record.getMessage(), {}
