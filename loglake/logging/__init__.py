"""Structured, trace-correlated logging for Python services: JSON lines, context, redaction, direct push.

Stdlib only; OpenTelemetry (trace ids) and cramjam (snappy) are used when installed.
"""

from loglake.logging.configure import setup_logging, uvicorn_log_config
from loglake.logging.context import (
    TraceContextFilter,
    bind_context,
    clear_context,
    current_trace_ids,
    get_context,
    log_context,
    reset_context,
    unbind_context,
)
from loglake.logging.formatter import JSONFormatter, TextFormatter, record_extras
from loglake.logging.handler import HandlerStats, LokiHandler
from loglake.logging.middleware import LoggingMiddleware
from loglake.logging.redact import DEFAULT_PATTERNS, RedactingFilter, RedactionRule

__all__ = [
    "DEFAULT_PATTERNS",
    "HandlerStats",
    "JSONFormatter",
    "LoggingMiddleware",
    "LokiHandler",
    "RedactingFilter",
    "RedactionRule",
    "TextFormatter",
    "TraceContextFilter",
    "bind_context",
    "clear_context",
    "current_trace_ids",
    "get_context",
    "log_context",
    "record_extras",
    "reset_context",
    "setup_logging",
    "unbind_context",
    "uvicorn_log_config",
]
