"""JSONFormatter and TextFormatter: the fields of a line, extras, errors, and that formatting never raises."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.logging import JSONFormatter, TextFormatter, record_extras
from loglake.logging.formatter import rfc3339_utc

RFC3339_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger(f"test.formatter.{time.monotonic_ns()}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out, handler
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_the_core_fields_first(capture) -> None:
    logger, out, _ = capture
    before = time.time()
    logger.warning("disk %s at %d%%", "/data", 93)
    (doc,) = lines(out)
    assert list(doc)[:7] == ["timestamp", "level", "message", "logger", "module", "function", "line"]
    assert doc["level"] == "warning"
    assert doc["message"] == "disk /data at 93%"
    assert doc["logger"] == logger.name
    assert doc["module"] == "test_logging_formatter"
    assert doc["function"] == "test_a_record_is_one_json_object_with_the_core_fields_first"
    assert isinstance(doc["line"], int) and doc["line"] > 0
    assert RFC3339_MS_Z.fullmatch(doc["timestamp"])
    stamp = datetime.strptime(doc["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert before - 0.001 <= stamp <= time.time()


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1732181400.9999, "2024-11-21T09:30:00.999Z"),
        (1e9 + 0.5, "2001-09-09T01:46:40.500Z"),
    ],
)
def test_timestamps_are_utc_with_milliseconds(created: float, expected: str) -> None:
    assert rfc3339_utc(created) == expected


def test_every_extra_field_is_kept_in_order_and_core_fields_are_not_overwritten(capture) -> None:
    logger, out, _ = capture
    logger.info("x", extra={"user_id": 7, "tags": ["a", "b"], "nested": {"k": 1.5}, "level": "fake", "ok": True})
    (doc,) = lines(out)
    assert doc["user_id"] == 7 and doc["tags"] == ["a", "b"] and doc["nested"] == {"k": 1.5} and doc["ok"] is True
    assert doc["level"] == "info" and doc["extra_level"] == "fake"
    assert list(doc)[7:] == ["user_id", "tags", "nested", "extra_level", "ok"]


def test_extra_fields_are_found_by_difference_not_by_a_fixed_list(capture) -> None:
    logger, out, handler = capture

    class AddsAField(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.zz_custom_attribute = "set by a filter"
            return True

    handler.addFilter(AddsAField())
    logger.info("x")
    (doc,) = lines(out)
    assert doc["zz_custom_attribute"] == "set by a filter"
    record = logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)
    assert record_extras(record) == {}
    record.anything = 1
    assert record_extras(record) == {"anything": 1}


def test_values_json_cannot_hold_are_written_as_their_repr(capture) -> None:
    logger, out, _ = capture

    class Point:
        def __repr__(self) -> str:
            return "Point(1, 2)"

    cyclic: list = []
    cyclic.append(cyclic)
    logger.info(
        "x", extra={"p": Point(), "nan": math.nan, "tuple_keys": {(1, 2): "v"}, "cyclic": cyclic, "b": b"\x00\xff"}
    )
    (doc,) = lines(out)
    assert doc["p"] == "Point(1, 2)"
    assert doc["nan"] == "nan"
    assert doc["tuple_keys"] == "{(1, 2): 'v'}"
    assert doc["cyclic"] == "[[...]]"
    assert doc["b"] == "b'\\x00\\xff'"


def test_a_value_whose_repr_raises_does_not_break_the_line(capture) -> None:
    logger, out, _ = capture

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    logger.info("x %s", "y", extra={"h": Hostile(), "fine": 1})
    (doc,) = lines(out)
    assert doc["h"] == "<unrepresentable Hostile>" and doc["fine"] == 1 and doc["message"] == "x y"


def test_message_arguments_that_do_not_fit_are_shown_not_raised() -> None:
    # Formatted directly: a logger would also hand the record to other handlers (pytest's), which raise.
    record = logging.LogRecord("n", logging.INFO, "p", 1, "%d items", ("not a number",), None)
    assert json.loads(JSONFormatter().format(record))["message"] == "%d items ('not a number',)"


def test_exceptions_and_stacks_are_formatted(capture) -> None:
    logger, out, _ = capture
    try:
        {}["missing"]
    except KeyError:
        logger.exception("lookup failed")
    logger.info("where am I", stack_info=True)
    err, stack = lines(out)
    assert err["level"] == "error"
    assert err["exception"].startswith("Traceback (most recent call last):")
    assert err["exception"].endswith("KeyError: 'missing'")
    assert "stack" not in err
    assert stack["stack"].startswith("Stack (most recent call last):")
    assert "test_exceptions_and_stacks_are_formatted" in stack["stack"]


def test_exc_text_set_by_a_filter_is_used_as_it_is() -> None:
    record = logging.LogRecord("n", logging.ERROR, "p", 1, "m", None, (ValueError, ValueError("v"), None))
    record.exc_text = "masked traceback"
    assert json.loads(JSONFormatter().format(record))["exception"] == "masked traceback"


def test_static_fields_are_added_and_unicode_is_kept() -> None:
    record = logging.LogRecord("n", logging.INFO, "p", 1, "héllo ✓ %s", ("ünï",), None)
    text = JSONFormatter(static_fields={"service": "task-api"}).format(record)
    assert "héllo ✓ ünï" in text
    assert json.loads(text)["service"] == "task-api"


@settings(max_examples=300, deadline=None)
@given(
    msg=st.one_of(st.text(), st.integers(), st.none(), st.binary()),
    args=st.one_of(st.none(), st.tuples(st.text()), st.tuples(st.integers(), st.floats())),
    extras=st.dictionaries(
        st.text(min_size=1).filter(
            lambda k: not k.startswith("__") and k not in logging.LogRecord("", 0, "", 0, "", None, None).__dict__
        ),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text() | st.binary(),
            lambda children: st.lists(children) | st.dictionaries(st.text() | st.integers(), children),
            max_leaves=8,
        ),
        max_size=5,
    ),
)
def test_formatting_never_raises_and_always_gives_one_json_object(msg, args, extras) -> None:
    record = logging.LogRecord("n", logging.INFO, "p", 1, msg, args, None)
    for key, value in extras.items():
        if key not in ("message", "asctime"):
            setattr(record, key, value)
    text = JSONFormatter().format(record)
    assert "\n" not in text
    assert isinstance(json.loads(text), dict)
    assert isinstance(TextFormatter().format(record), str)


def test_text_format_is_readable_with_logfmt_fields() -> None:
    record = logging.LogRecord("task_api", logging.WARNING, "p", 1, "slow %s", ("query",), None)
    record.created, record.msecs = 1732181400.25, 250.0
    record.duration_ms = 812.5
    record.endpoint = "/tasks/7"
    record.note = 'has "quotes" and spaces'
    text = TextFormatter().format(record)
    assert text == (
        "2024-11-21T09:30:00.250Z WARNING  task_api: slow query duration_ms=812.5 endpoint=/tasks/7 "
        'note="has \\"quotes\\" and spaces"'
    )


def test_importing_the_library_pulls_in_no_server_dependencies() -> None:
    code = (
        "import sys, loglake.logging as l; l.LokiHandler; l.RedactingFilter;"
        "heavy = {'pyarrow', 'polars', 'numpy', 'starlette', 'httpx', 'uvicorn', 'google.protobuf'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
