"""Times on the command line and in output: RFC 3339 with nanoseconds, Unix integers, and logcli's formats."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, tzinfo

NS = 1_000_000_000

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z")

TIMESTAMP_FORMATS = ("rfc3339", "rfc3339nano")
"""Formats `format_time` prints (logcli's `--output-timestamp-format` names)."""


def now_ns() -> int:
    """Return the current time in nanoseconds since the epoch."""
    return time.time_ns()


def parse_time(text: str) -> int:
    """Return nanoseconds since the epoch for RFC 3339 text (`2024-01-01T00:00:00.5Z`) or a Unix integer.

    Integers of up to 10 digits are seconds, longer ones nanoseconds, as Loki reads them.
    """
    value = text.strip()
    if re.fullmatch(r"\d+", value):
        return int(value) * NS if len(value) <= 10 else int(value)
    m = _RFC3339.match(value)
    if m:
        year, month, day, hour, minute, second, frac, zone = m.groups()
        offset = "+00:00" if zone in ("Z", "z") else zone
        try:
            base = datetime.fromisoformat(f"{year}-{month}-{day}T{hour}:{minute}:{second}{offset}")
        except ValueError:
            pass
        else:
            return int(base.timestamp()) * NS + int((frac or "").ljust(9, "0"))
    raise ValueError(f"expected a time like 2024-01-01T00:00:00Z (RFC 3339) or Unix seconds, got {text!r}")


def local_zone() -> tzinfo:
    """Return this machine's time zone."""
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


def format_time(ns: int, zone: tzinfo = UTC, fmt: str = "rfc3339") -> str:
    """Return `ns` as Go formats RFC 3339 (`Z` for a zero offset); `rfc3339nano` adds the fraction without zeros."""
    seconds, nanos = divmod(ns, NS)
    dt = datetime.fromtimestamp(seconds, zone)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if fmt == "rfc3339nano" and nanos:
        text += "." + str(nanos).rjust(9, "0").rstrip("0")
    offset = dt.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{mins:02d}"
