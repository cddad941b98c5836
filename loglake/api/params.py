"""Loki's HTTP query parameters: timestamps, durations, limits and directions, with Loki's error texts."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime

from loglake.config import parse_duration

NS = 1_000_000_000


class ParamError(ValueError):
    """A query parameter that cannot be used; its text is the 400 answer."""


_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z")


def parse_rfc3339_ns(value: str) -> int | None:
    """Return nanoseconds since the epoch for an RFC 3339 time (nanosecond precision kept), or None."""
    m = _RFC3339.match(value)
    if not m:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        tz = "+00:00" if zone in ("Z", "z") else zone
        base = datetime.fromisoformat(f"{year}-{month}-{day}T{hour}:{minute}:{second}{tz}")
    except ValueError:
        return None
    seconds = int(base.timestamp())
    nanos = int((frac or "").ljust(9, "0"))
    return seconds * NS + nanos


def parse_time(value: str | None, default_ns: int) -> int:
    """Parse a Loki timestamp parameter (ns or s integer, float seconds, or RFC 3339) into ns."""
    if value is None or value == "":
        return default_ns
    if "." in value and _is_float(value):
        t = float(value)
        frac, whole = math.modf(t)
        frac = round(frac * 1000) / 1000
        return int(whole) * NS + int(frac * NS)
    if re.fullmatch(r"[+-]?\d+", value):
        nanos = int(value)
        if not -(2**63) <= nanos < 2**63:
            raise ParamError(f'strconv.ParseInt: parsing "{value}": value out of range')
        return nanos * NS if len(value) <= 10 else nanos
    ns = parse_rfc3339_ns(value)
    if ns is not None:
        return ns
    raise ParamError(f'strconv.ParseInt: parsing "{value}": invalid syntax')


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def parse_duration_ns(value: str) -> int:
    """Parse a Go (`1h30m`, `1.5s`) or Prometheus (`7d`, `1w`) duration into ns."""
    try:
        return parse_duration(value.strip())
    except ValueError:
        raise ParamError(f'time: invalid duration "{value}"') from None


def parse_step_ns(value: str | None, start_ns: int, end_ns: int) -> int:
    """Parse a range query's `step` (a duration, or a bare number of seconds); default as Loki."""
    if value is None or value == "":
        return default_step_ns(start_ns, end_ns)
    if _is_float(value):
        return int(float(value) * NS)
    return parse_duration_ns(value)


def default_step_ns(start_ns: int, end_ns: int) -> int:
    """Loki's default step: about 250 points over the range, at least one second."""
    seconds = max(math.floor((end_ns - start_ns) / NS / 250), 1)
    return int(seconds * NS)


def parse_limit(value: str | None, default: int = 100) -> int:
    """Parse `limit` as Go's strconv.Atoi would."""
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[+-]?\d+", value):
        raise ParamError(f'strconv.Atoi: parsing "{value}": invalid syntax')
    return int(value)


def parse_direction(value: str | None) -> str:
    """Return "forward" or "backward" (the default)."""
    if value is None or value == "":
        return "backward"
    v = value.lower()
    if v not in ("forward", "backward"):
        raise ParamError(f"invalid direction '{value}'")
    return v


def now_ns() -> int:
    """Return the current time in ns."""
    return time.time_ns()


def time_range(params: dict[str, str], default_since_ns: int = 3600 * NS) -> tuple[int, int]:
    """Return (start, end) in ns from `start`/`end`/`since`, Loki's defaults: the last hour."""
    end = parse_time(params.get("end"), now_ns())
    since = params.get("since")
    since_ns = parse_duration_ns(since) if since else default_since_ns
    start = parse_time(params.get("start"), end - since_ns)
    return start, end
