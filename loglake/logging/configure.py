"""setup_logging: the root logger configured once, from arguments or LOG_LEVEL / LOG_FORMAT."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, Any

from loglake.logging.context import TraceContextFilter
from loglake.logging.formatter import JSONFormatter, TextFormatter
from loglake.logging.handler import LokiHandler
from loglake.logging.redact import RedactingFilter

FORMATS = ("json", "text")
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_MARK = "_loglake_setup"  # set on the handlers setup_logging installs, so that a second call replaces them


def _level(value: str | int) -> int:
    if isinstance(value, int):
        return value
    name = value.strip().upper()
    if name.isdigit():
        return int(name)
    level = logging.getLevelNamesMapping().get("WARNING" if name == "WARN" else name)
    if level is None:
        raise ValueError(f"unknown log level {value!r}: use debug, info, warning, error or critical")
    return level


def setup_logging(
    level: str | int | None = None,
    fmt: str | None = None,
    *,
    stream: IO[str] | None = None,
    redact: bool = True,
    trace_ids: bool = True,
    loki_url: str | None = None,
    loki_labels: Mapping[str, str] | None = None,
    static_fields: Mapping[str, Any] | None = None,
) -> logging.Logger:
    """Configure the root logger: JSON (or text) lines on stdout with trace ids, context and secrets masked.

    `level` and `fmt` default to $LOG_LEVEL (info) and $LOG_FORMAT (json). With `loki_url` (or $LOKI_URL) the
    records are also pushed to that server by a LokiHandler. Calling it again replaces what the last call
    installed. uvicorn's loggers are routed to the same handlers, so the server's own lines are JSON too.
    """
    level = _level(level if level is not None else os.environ.get("LOG_LEVEL") or "info")
    fmt = (fmt or os.environ.get("LOG_FORMAT") or "json").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use json or text")
    loki_url = loki_url if loki_url is not None else os.environ.get("LOKI_URL") or None

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()

    filters: list[logging.Filter] = []
    if trace_ids:
        filters.append(TraceContextFilter())
    if redact:
        filters.append(RedactingFilter())

    console = logging.StreamHandler(stream if stream is not None else sys.stdout)
    fields = dict(static_fields or {})
    console.setFormatter(JSONFormatter(static_fields=fields) if fmt == "json" else TextFormatter())
    handlers: list[logging.Handler] = [console]
    if loki_url:
        loki = LokiHandler(loki_url, labels=loki_labels) if loki_labels else LokiHandler(loki_url)
        loki.setFormatter(JSONFormatter(static_fields=fields))
        handlers.append(loki)
    for handler in handlers:
        for f in filters:
            handler.addFilter(f)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level)

    # uvicorn configures its loggers with their own handlers and propagate=False; hand them to the root instead,
    # so its lines share the format and nothing is printed twice.
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    return root


def uvicorn_log_config() -> dict[str, Any]:
    """Return a `log_config` for uvicorn.run that leaves its loggers to setup_logging (propagating to the root)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: {"handlers": [], "propagate": True} for name in _UVICORN_LOGGERS},
    }
