"""Loki clients from PyPI push to loglake unchanged, and their lines are found by a query."""

from __future__ import annotations

import logging
import time
import uuid

import logging_loki
from loki_logger_handler.loki_logger_handler import LokiLoggerHandler

from tests.helpers import now_ns, read_all


def _wait_for(client, query: str, start: int, count: int, timeout: float = 20.0) -> list:
    """Poll until `query` finds `count` entries (clients that batch send on their own schedule)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = read_all(client, query, start, now_ns() + 10**9)
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"loglake-test-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_python_logging_loki_pushes_and_lines_are_found(server) -> None:
    start = now_ns() - 10**9
    handler = logging_loki.LokiHandler(
        url=server.url + "/loki/api/v1/push", tags={"application": "pll-test"}, version="1"
    )
    logger = _logger(handler)
    for i in range(5):
        logger.error("payment failed order=%d", i, extra={"tags": {"component": "billing"}})
    handler.close()
    with server.client() as c:
        entries = _wait_for(c, '{application="pll-test"} |= "payment failed"', start, 5)
    assert sorted(e[1] for e in entries) == [f"payment failed order={i}" for i in range(5)]
    labels = entries[0][2]
    assert labels["application"] == "pll-test"
    assert labels["severity"] == "error"
    assert labels["component"] == "billing"


def test_loki_logger_handler_pushes_gzip_json_with_structured_metadata(server) -> None:
    start = now_ns() - 10**9
    handler = LokiLoggerHandler(
        url=server.url + "/loki/api/v1/push",
        labels={"app": "llh-test"},
        timeout=1,
        compressed=True,
        enable_structured_loki_metadata=True,
        loki_metadata_keys=["trace_id"],
    )
    logger = _logger(handler)
    for i in range(3):
        logger.info("checkout step %d", i, extra={"trace_id": f"trace-{i}"})
    handler.flush_event.set()
    with server.client() as c:
        entries = _wait_for(c, '{app="llh-test"}', start, 3)
    assert len(entries) == 3
    assert all("checkout step" in line for _, line, _ in entries)
    assert sorted(labels.get("trace_id") for _, _, labels in entries) == ["trace-0", "trace-1", "trace-2"]
