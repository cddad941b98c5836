"""Request-scoped log context (contextvars) and the filter that puts it and the current trace on every record."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, Literal

try:  # OpenTelemetry is an optional extra: without it there is simply no current span.
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - exercised in a subprocess test without the package on the path
    _otel_trace = None

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Immutable mappings, replaced on every bind: a task sees the context it was created with (asyncio copies the
# context into each task) and what it binds itself, never what a sibling task binds.
_context: ContextVar[Mapping[str, Any]] = ContextVar("loglake_log_context", default=_EMPTY)

ZERO_TRACE_ID = "0" * 32
ZERO_SPAN_ID = "0" * 16


def bind_context(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add fields (request_id=..., user_id=...) to every record logged from this context; return a reset token."""
    return _context.set(MappingProxyType({**_context.get(), **fields}))


def unbind_context(*names: str) -> Token[Mapping[str, Any]]:
    """Stop adding the named fields to records logged from this context; return a reset token."""
    current = _context.get()
    return _context.set(MappingProxyType({k: v for k, v in current.items() if k not in names}))


def reset_context(token: Token[Mapping[str, Any]]) -> None:
    """Restore the log context to what it was before the bind that returned `token`."""
    _context.reset(token)


def clear_context() -> None:
    """Remove every bound field from this context."""
    _context.set(_EMPTY)


def get_context() -> dict[str, Any]:
    """Return a copy of the fields bound in this context."""
    return dict(_context.get())


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields for the duration of a `with` block."""
    token = bind_context(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def current_trace_ids() -> tuple[str, str] | None:
    """Return (trace_id as 32 hex, span_id as 16 hex) of the current OpenTelemetry span, or None outside one."""
    if _otel_trace is None:
        return None
    ctx = _otel_trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` of the current span and the bound context fields to every record.

    Outside a span (or without OpenTelemetry installed) the ids are left out, or set to zeros with
    `missing="zero"`. A field the call already set with `extra=` is kept. The filter never drops a record.
    """

    def __init__(self, *, missing: Literal["omit", "zero"] = "omit", trace: bool = True, context: bool = True) -> None:
        if missing not in ("omit", "zero"):
            raise ValueError(f"missing must be 'omit' or 'zero', not {missing!r}")
        super().__init__()
        self.missing = missing
        self.trace = trace
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the trace ids and context fields to the record; always keep it."""
        attrs = record.__dict__
        if self.trace and "trace_id" not in attrs:
            try:
                ids = current_trace_ids()
            except Exception:  # a broken tracer must not break logging
                ids = None
            if ids is not None:
                attrs["trace_id"], attrs["span_id"] = ids
            elif self.missing == "zero":
                attrs["trace_id"], attrs["span_id"] = ZERO_TRACE_ID, ZERO_SPAN_ID
        if self.context:
            for key, value in _context.get().items():
                attrs.setdefault(key, value)
        return True
