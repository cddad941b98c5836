"""Loki's HTTP query parameters: timestamps, durations, limits and directions, with Loki's error texts."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping

from loglake.config import parse_duration
from loglake.timestamps import parse_rfc3339_ns

NS = 1_000_000_000
MAX_POINTS_PER_SERIES = 11_000


class ParamError(ValueError):
    """A query parameter that cannot be used; its text is the 400 answer."""


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
        raise ParamError(f'not a valid duration string: "{value}"') from None


def parse_seconds_or_duration_ns(value: str) -> int:
    """Parse a float number of seconds or a duration (`step`, `interval`) into ns, as Loki does."""
    if _is_float(value):
        ns = float(value) * NS
        if not -(2.0**63) <= ns < 2.0**63:
            raise ParamError(f'cannot parse "{value}" to a valid duration. It overflows int64')
        return int(ns)
    try:
        return parse_duration(value.strip())
    except ValueError:
        raise ParamError(f'cannot parse "{value}" to a valid duration') from None


def parse_step_ns(value: str | None, start_ns: int, end_ns: int) -> int:
    """Parse a range query's `step` (a duration, or a bare number of seconds); default as Loki."""
    if value is None or value == "":
        return default_step_ns(start_ns, end_ns)
    return parse_seconds_or_duration_ns(value)


def check_step(step_ns: int, start_ns: int, end_ns: int) -> None:
    """Refuse a step that is not positive or that gives more than 11,000 points per series, as Loki does."""
    if step_ns <= 0:
        raise ParamError("zero or negative query resolution step widths are not accepted. Try a positive integer")
    if (end_ns - start_ns) // step_ns > MAX_POINTS_PER_SERIES:
        raise ParamError(
            "exceeded maximum resolution of 11,000 points per time series. Try increasing the value of the step "
            "parameter"
        )


def parse_interval_ns(value: str | None) -> int:
    """Parse a range query's `interval` (0 when absent); it may not be negative."""
    if value is None or value == "":
        return 0
    interval = parse_seconds_or_duration_ns(value)
    if interval < 0:
        raise ParamError("interval must be >= 0")
    return interval


def default_step_ns(start_ns: int, end_ns: int) -> int:
    """Loki's default step: about 250 points over the range, at least one second."""
    seconds = max(math.floor((end_ns - start_ns) / NS / 250), 1)
    return int(seconds * NS)


def parse_limit(value: str | None, default: int = 100) -> int:
    """Parse `limit` as Go's strconv.Atoi would; it must be positive."""
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[+-]?\d+", value):
        raise ParamError(f'strconv.Atoi: parsing "{value}": invalid syntax')
    limit = int(value)
    if limit <= 0:
        raise ParamError("limit must be a positive value")
    return limit


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
    now = now_ns()
    since_ns = _named("since", lambda v: parse_duration_ns(v) if v else default_since_ns, params.get("since"))
    end = _named("end", lambda v: parse_time(v, now), params.get("end"))
    # An end in the future does not move the default start past now, as in Loki.
    start = _named("start", lambda v: parse_time(v, min(end, now) - since_ns), params.get("start"))
    return start, end


def _named(name: str, parse: Callable[[str | None], int], value: str | None) -> int:
    """Run `parse`, saying which parameter was wrong if it fails (Loki's wording)."""
    try:
        return parse(value)
    except ParamError as exc:
        raise ParamError(f"could not parse '{name}' parameter: {exc}") from None


ENCODING_FLAGS_HEADER = "x-loki-response-encoding-flags"
CATEGORIZE_LABELS = "categorize-labels"


def encoding_flags(headers: Mapping[str, str]) -> list[str]:
    """Return the response encoding flags a client asked for (Grafana sends categorize-labels), in order, once each."""
    raw = headers.get(ENCODING_FLAGS_HEADER, "")
    return list(dict.fromkeys(f for f in raw.split(",") if f)) if raw else []
