"""setup_logging: root logger from arguments or the environment, idempotent, and uvicorn's loggers routed to it."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from loglake.logging import setup_logging, uvicorn_log_config


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.delenv("LOKI_URL", raising=False)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    uvicorn = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in ("uvicorn", "uvicorn.access")
    }
    yield
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (handlers, propagate) in uvicorn.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def test_json_lines_at_info_by_default() -> None:
    out = io.StringIO()
    setup_logging(stream=out)
    log = logging.getLogger("app")
    log.debug("hidden")
    log.info("shown", extra={"order_id": 5})
    (doc,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (doc["message"], doc["level"], doc["order_id"]) == ("shown", "info", 5)


def test_calling_it_twice_does_not_duplicate_lines() -> None:
    out1, out2 = io.StringIO(), io.StringIO()
    setup_logging(stream=out1)
    setup_logging(stream=out2)
    setup_logging(stream=out2)
    logging.getLogger("app").warning("once")
    assert out1.getvalue() == ""
    assert len(out2.getvalue().splitlines()) == 1
    assert sum(1 for h in logging.getLogger().handlers if getattr(h, "_loglake_setup", False)) == 1


def test_level_and_format_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "text")
    out = io.StringIO()
    setup_logging(stream=out)
    logging.getLogger("app").debug("details %s", 1, extra={"k": "v"})
    assert out.getvalue().rstrip().endswith("DEBUG    app: details 1 k=v")


def test_arguments_win_over_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "text")
    out = io.StringIO()
    setup_logging("WARN", "JSON", stream=out)
    logging.getLogger("app").info("hidden")
    logging.getLogger("app").warning("shown")
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["shown"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "verbose"}, "unknown log level 'verbose': use debug, info, warning, error or critical"),
        ({"fmt": "xml"}, "unknown log format 'xml': use json or text"),
    ],
)
def test_a_bad_level_or_format_is_a_clear_error(kwargs, message) -> None:
    with pytest.raises(ValueError) as err:
        setup_logging(stream=io.StringIO(), **kwargs)
    assert str(err.value) == message


def test_secrets_are_masked_and_trace_context_added_by_default() -> None:
    from loglake.logging import log_context

    out = io.StringIO()
    setup_logging(stream=out)
    with log_context(request_id="req-9"):
        logging.getLogger("app").info("login with password=hunter2 ok")
    (doc,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "hunter2" not in doc["message"] and doc["request_id"] == "req-9"


def test_uvicorns_loggers_go_through_the_same_handler() -> None:
    import uvicorn.config as uvicorn_config

    logging.config.dictConfig(uvicorn_config.LOGGING_CONFIG)  # what `uvicorn app:app` does before importing the app
    out = io.StringIO()
    setup_logging(stream=out)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 123)
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/tasks", "1.1", 200)
    started, access = (json.loads(line) for line in out.getvalue().splitlines())
    assert started["message"] == "Started server process [123]" and started["logger"] == "uvicorn.error"
    assert access["message"] == '1.2.3.4:5 - "GET /tasks HTTP/1.1" 200'


def test_uvicorn_log_config_keeps_uvicorn_from_installing_its_own_handlers() -> None:
    import uvicorn

    out = io.StringIO()
    setup_logging(stream=out)
    uvicorn.Config(app=lambda *a: None, log_config=uvicorn_log_config())  # configures logging in __init__
    logging.getLogger("uvicorn").info("hello")
    assert json.loads(out.getvalue())["message"] == "hello"
    assert logging.getLogger("uvicorn").handlers == []
