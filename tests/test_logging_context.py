"""TraceContextFilter with the real OpenTelemetry SDK, and bound context that follows asyncio tasks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loglake.logging import (
    JSONFormatter,
    TraceContextFilter,
    bind_context,
    clear_context,
    get_context,
    log_context,
    reset_context,
    unbind_context,
)

REPO = Path(__file__).resolve().parent.parent
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("tests")


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(TraceContextFilter())
    logger = logging.getLogger(f"test.context.{id(out)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    clear_context()
    yield logger, out
    clear_context()


def docs(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_lines_inside_a_span_carry_its_ids_and_lines_outside_do_not(capture) -> None:
    logger, out = capture
    logger.info("before")
    with TRACER.start_as_current_span("outer") as outer:
        logger.info("in outer")
        with TRACER.start_as_current_span("inner") as inner:
            logger.info("in inner")
        logger.info("back in outer")
    logger.info("after")
    before, in_outer, in_inner, back, after = docs(out)
    outer_ctx, inner_ctx = outer.get_span_context(), inner.get_span_context()
    assert "trace_id" not in before and "span_id" not in before
    assert "trace_id" not in after and "span_id" not in after
    assert in_outer["trace_id"] == f"{outer_ctx.trace_id:032x}" and len(in_outer["trace_id"]) == 32
    assert in_outer["span_id"] == f"{outer_ctx.span_id:016x}" and len(in_outer["span_id"]) == 16
    assert in_inner["trace_id"] == in_outer["trace_id"]
    assert in_inner["span_id"] == f"{inner_ctx.span_id:016x}" != in_outer["span_id"]
    assert back["span_id"] == in_outer["span_id"]
    exported = {s.name: s for s in EXPORTER.get_finished_spans()}
    assert f"{exported['inner'].context.trace_id:032x}" == in_inner["trace_id"]


def test_missing_ids_can_be_zeros_instead_of_absent() -> None:
    record = logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)
    TraceContextFilter(missing="zero").filter(record)
    assert (record.trace_id, record.span_id) == ("0" * 32, "0" * 16)
    with TRACER.start_as_current_span("s") as span:
        record = logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)
        TraceContextFilter(missing="zero").filter(record)
    assert record.trace_id == f"{span.get_span_context().trace_id:032x}"
    with pytest.raises(ValueError, match="missing must be 'omit' or 'zero'"):
        TraceContextFilter(missing="none")  # type: ignore[arg-type]


def test_an_explicit_trace_id_in_extra_is_kept(capture) -> None:
    logger, out = capture
    with TRACER.start_as_current_span("s"):
        logger.info("x", extra={"trace_id": "from-the-caller"})
    (doc,) = docs(out)
    assert doc["trace_id"] == "from-the-caller" and "span_id" not in doc


def test_bound_fields_are_added_and_can_be_unbound_or_reset(capture) -> None:
    logger, out = capture
    token = bind_context(request_id="r-1", user_id=42)
    logger.info("one")
    with log_context(step="charge"):
        logger.info("two", extra={"user_id": 7})
    unbind_context("user_id")
    logger.info("three")
    reset_context(token)
    logger.info("four")
    one, two, three, four = docs(out)
    assert (one["request_id"], one["user_id"]) == ("r-1", 42) and "step" not in one
    assert (two["step"], two["user_id"]) == ("charge", 7)
    assert three["request_id"] == "r-1" and "user_id" not in three and "step" not in three
    assert "request_id" not in four
    assert get_context() == {}


def test_request_context_survives_asyncio_task_switches(capture) -> None:
    logger, out = capture

    async def handle(request_id: str) -> tuple[str, str]:
        bind_context(request_id=request_id)
        with TRACER.start_as_current_span(f"req-{request_id}") as span:
            for step in range(5):
                await asyncio.sleep(0)  # every task runs between two lines of another
                logger.info("step %d", step)
                await asyncio.sleep(0.001 * (hash(request_id) % 3))
        return request_id, f"{span.get_span_context().trace_id:032x}"

    async def main() -> list[tuple[str, str]]:
        bind_context(request_id="parent")
        results = await asyncio.gather(*(handle(f"req-{i}") for i in range(20)))
        logger.info("parent again")
        return results

    results = asyncio.run(main())
    traces = dict(results)
    lines = docs(out)
    assert len(lines) == 101
    assert lines[-1]["request_id"] == "parent" and "trace_id" not in lines[-1]
    steps = lines[:-1]
    order = [d["request_id"] for d in steps]
    assert len(set(order[:5])) == 5  # the tasks really interleaved: five lines in a row from five tasks
    for doc in steps:
        assert doc["trace_id"] == traces[doc["request_id"]]
    assert {d["request_id"] for d in steps} == set(traces)
    assert len(set(traces.values())) == 20


def test_context_is_per_thread_and_copied_into_executors(capture) -> None:
    logger, out = capture
    bind_context(request_id="main")

    def worker() -> None:
        logger.info("plain thread")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()

    async def run_in_executor() -> None:
        await asyncio.to_thread(logger.info, "to_thread")

    asyncio.run(run_in_executor())
    plain, to_thread = docs(out)
    assert "request_id" not in plain  # a new thread starts with an empty context
    assert to_thread["request_id"] == "main"  # asyncio.to_thread copies it


def test_without_opentelemetry_installed_records_simply_have_no_ids(tmp_path) -> None:
    script = textwrap.dedent(
        """
        import importlib.abc, json, logging, sys, io

        class NoOtel(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(name)

        sys.meta_path.insert(0, NoOtel())
        from loglake.logging import JSONFormatter, TraceContextFilter, current_trace_ids, bind_context
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(JSONFormatter())
        handler.addFilter(TraceContextFilter())
        zeros = logging.StreamHandler(out)
        zeros.setFormatter(JSONFormatter())
        zeros.addFilter(TraceContextFilter(missing="zero"))
        log = logging.getLogger("x")
        log.addHandler(handler)
        bind_context(request_id="abc")
        log.warning("hello")
        log.removeHandler(handler)
        log.addHandler(zeros)
        log.warning("zeros")
        print(json.dumps([current_trace_ids(), "opentelemetry" in sys.modules, out.getvalue()]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr
    ids, imported, text = json.loads(result.stdout)
    first, second = (json.loads(line) for line in text.splitlines())
    assert ids is None and imported is False
    assert first["request_id"] == "abc" and "trace_id" not in first
    assert second["trace_id"] == "0" * 32 and second["span_id"] == "0" * 16
