"""Text forms Loki prints in canonical queries: Go numbers, durations, byte sizes and quoted strings."""

from __future__ import annotations

import math

from loglake.config import format_go_duration as go_duration
from loglake.gonum import format_float_f, format_float_v, humanize_bytes
from loglake.model import LABEL_NAME_RE, LabelMatcher
from loglake.quoting import quote

__all__ = [
    "MAX_CHARS_PER_LINE",
    "format_float_f",
    "format_float_v",
    "format_matcher",
    "go_duration",
    "humanize_bytes",
    "indent",
    "prometheus_duration",
    "quote",
]

MAX_CHARS_PER_LINE = 100
"""format_query splits an expression over several lines when its one-line form is longer than this."""


def indent(level: int) -> str:
    """Return the indentation of a pretty-printed line at `level`."""
    return "  " * level


def format_float_fixed6(value: float) -> str:
    """Format a float as Go's `%f` (six decimals)."""
    if math.isnan(value) or math.isinf(value):
        return format_float_v(value)
    return f"{value:f}"


_PROM_UNITS = (
    ("y", 1000 * 60 * 60 * 24 * 365, True),
    ("w", 1000 * 60 * 60 * 24 * 7, True),
    ("d", 1000 * 60 * 60 * 24, False),
    ("h", 1000 * 60 * 60, False),
    ("m", 1000 * 60, False),
    ("s", 1000, False),
    ("ms", 1, False),
)


def prometheus_duration(ns: int) -> str:
    """Format nanoseconds as Prometheus' model.Duration.String (`5m`, `1h30m`, `1d`, `0s`)."""
    ms = int(ns / 1_000_000)
    if ms == 0:
        return "0s"
    out = []
    for unit, mult, exact in _PROM_UNITS:
        if exact and ms % mult != 0:
            continue
        count = ms // mult if ms > 0 else 0
        if count > 0:
            out.append(f"{count}{unit}")
            ms -= count * mult
    return "".join(out)


def format_matcher(matcher: LabelMatcher) -> str:
    """Format a label matcher as Prometheus does: `name="value"`, the name quoted if it is not legacy."""
    name = matcher.name if LABEL_NAME_RE.match(matcher.name) else quote(matcher.name)
    return f"{name}{matcher.op.value}{quote(matcher.value)}"
