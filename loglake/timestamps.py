"""RFC 3339 timestamps with nanosecond precision, as Loki reads them in parameters and old JSON pushes."""

from __future__ import annotations

import re
from datetime import datetime

NS = 1_000_000_000

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
