"""Go's time layouts, durations and byte sizes, as Promtail's pipeline stages read them in their configuration."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "NAMED_LAYOUTS",
    "TimeParser",
    "load_location",
    "make_time_parser",
    "parse_byte_size",
    "parse_go_duration",
]

NS = 1_000_000_000

# A parser turns a timestamp text into nanoseconds since the epoch; `now_ns` places year-less layouts in a year.
TimeParser = Callable[[str, int], int]

NAMED_LAYOUTS: dict[str, str] = {
    "ANSIC": "Mon Jan _2 15:04:05 2006",
    "UnixDate": "Mon Jan _2 15:04:05 MST 2006",
    "RubyDate": "Mon Jan 02 15:04:05 -0700 2006",
    "RFC822": "02 Jan 06 15:04 MST",
    "RFC822Z": "02 Jan 06 15:04 -0700",
    "RFC850": "Monday, 02-Jan-06 15:04:05 MST",
    "RFC1123": "Mon, 02 Jan 2006 15:04:05 MST",
    "RFC1123Z": "Mon, 02 Jan 2006 15:04:05 -0700",
    "RFC3339": "2006-01-02T15:04:05Z07:00",
    "RFC3339Nano": "2006-01-02T15:04:05.999999999Z07:00",
}

_LONG_MONTHS = "January February March April May June July August September October November December".split()
_SHORT_MONTHS = [m[:3] for m in _LONG_MONTHS]
_LONG_DAYS = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday".split()
_SHORT_DAYS = [d[:3] for d in _LONG_DAYS]
_MONTH_NUMBER = {name.lower(): i + 1 for i, name in enumerate(_LONG_MONTHS)} | {
    name.lower(): i + 1 for i, name in enumerate(_SHORT_MONTHS)
}


# ---- durations and sizes ------------------------------------------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": NS,
    "m": 60 * NS,
    "h": 3600 * NS,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Parse a Go duration such as "300ms", "1.5h" or "2h45m" into nanoseconds (ValueError when invalid)."""
    s = text.strip() if isinstance(text, str) else text
    if not isinstance(s, str) or not s:
        raise ValueError(f"invalid duration {text!r}")
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or (not m.group(1) and not m.group(2)):
            raise ValueError(f"invalid duration {text!r} (use a number and a unit: ns, us, ms, s, m, h)")
        whole, frac, unit = m.group(1) or "0", m.group(2) or "", m.group(3)
        scale = _DURATION_UNITS[unit]
        total += int(whole) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    return sign * total


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(I?B)?\s*", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def parse_byte_size(value: object) -> int:
    """Parse a byte size such as 262144, "256KB" or "1MiB" (powers of 1024, as Loki's flagext.ByteSize)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid byte size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid byte size {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid byte size {value!r}")
    m = _SIZE.fullmatch(value)
    if m is None or (m.group(3) and m.group(3).upper() == "IB" and not m.group(2)):
        raise ValueError(f"invalid byte size {value!r} (use a number with an optional unit: B, KB, MB, GB, TB)")
    return int(float(m.group(1)) * 1024 ** _SIZE_POWERS[m.group(2).upper()])


# ---- calendar ------------------------------------------------------------------------------------------------------


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date; a day past the month's end rolls into the next."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _days_in(month: int, year: int) -> int:
    if month == 2:
        return 29 if _is_leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _civil_from_days(days: int) -> tuple[int, int, int]:
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def load_location(name: str) -> dt.tzinfo:
    """An IANA time zone by name ("UTC", "Local" and "" as Go's time.LoadLocation); ValueError when unknown."""
    if name in ("", "UTC"):
        return dt.UTC
    if name == "Local":
        local = dt.datetime.now().astimezone().tzinfo
        return local if local is not None else dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name}") from exc


def _zone_offset(tz: dt.tzinfo, wall_seconds: int) -> int:
    """The UTC offset (seconds) that `tz` gives the local wall time `wall_seconds` (seconds as if it were UTC)."""
    if tz is dt.UTC:
        return 0
    try:
        guess = dt.datetime.fromtimestamp(wall_seconds, tz).utcoffset()
        off = int(guess.total_seconds()) if guess is not None else 0
        again = dt.datetime.fromtimestamp(wall_seconds - off, tz).utcoffset()
        return int(again.total_seconds()) if again is not None else off
    except (OverflowError, OSError, ValueError):
        return 0


def _zone_name_offset(tz: dt.tzinfo, name: str, wall_seconds: int) -> int | None:
    """The offset of the zone abbreviation `name` in `tz` near the given wall time, or None if `tz` never uses it."""
    if tz is dt.UTC:
        return 0 if name == "UTC" else None
    for shift in (0, 182 * 86400, -182 * 86400):
        try:
            when = dt.datetime.fromtimestamp(wall_seconds + shift, tz)
        except (OverflowError, OSError, ValueError):
            return None
        if when.tzname() == name:
            off = when.utcoffset()
            return int(off.total_seconds()) if off is not None else 0
    return None


# ---- layouts --------------------------------------------------------------------------------------------------------

# Each standard chunk of a Go layout becomes a regex group with the digits Go's parser would accept, and a kind
# that says how to read the group.
_NUM2 = r"(\d\d)"
_NUM12 = r"(\d\d?+)"
_ZONE_NAME = (
    r"(UTC|ChST|MeST|GMT(?:[+-]\d\d?+)?|WITA|[A-Z]{3}(?![A-Z])|[A-Z]{3}T(?![A-Z])|[A-Z]{4}T(?![A-Z])|[+-]\d\d(?:\d\d)?)"
)


def _alt(names: list[str]) -> str:
    return "((?i:" + "|".join(names) + "))"


_STD: list[tuple[str, str, str]] = [
    # (layout token, regex, kind); longest tokens of each family first, as Go's layout scanner prefers them.
    ("January", _alt(_LONG_MONTHS), "month_name"),
    ("Jan", _alt(_SHORT_MONTHS), "month_name"),
    ("Monday", _alt(_LONG_DAYS), "weekday"),
    ("Mon", _alt(_SHORT_DAYS), "weekday"),
    ("MST", _ZONE_NAME, "zone_name"),
    ("01", _NUM2, "month"),
    ("02", _NUM2, "day"),
    ("03", _NUM2, "hour12"),
    ("04", _NUM2, "minute"),
    ("05", _NUM2, "second"),
    ("06", _NUM2, "year2"),
    ("002", r"(\d{3})", "yday"),
    ("15", _NUM12, "hour"),
    ("1", _NUM12, "month"),
    ("2006", r"(\d{4})", "year"),
    ("2", _NUM12, "day"),
    ("__2", r" {0,2}(\d{1,3}+)", "yday"),
    ("_2", r" ?(\d\d?+)", "day"),
    ("3", _NUM12, "hour12"),
    ("4", _NUM12, "minute"),
    ("5", _NUM12, "second"),
    ("PM", r"(AM|PM)", "ampm"),
    ("pm", r"(am|pm)", "ampm"),
    ("Z07:00:00", r"(Z|[+-]\d\d:\d\d:\d\d)", "offset"),
    ("Z070000", r"(Z|[+-]\d{6})", "offset"),
    ("Z07:00", r"(Z|[+-]\d\d:\d\d)", "offset"),
    ("Z0700", r"(Z|[+-]\d{4})", "offset"),
    ("Z07", r"(Z|[+-]\d\d)", "offset"),
    ("-07:00:00", r"([+-]\d\d:\d\d:\d\d)", "offset"),
    ("-070000", r"([+-]\d{6})", "offset"),
    ("-07:00", r"([+-]\d\d:\d\d)", "offset"),
    ("-0700", r"([+-]\d{4})", "offset"),
    ("-07", r"([+-]\d\d)", "offset"),
]


def _next_std(layout: str, i: int) -> tuple[str, str, int] | None:
    """The standard chunk starting at layout[i] as (regex, kind, end), following Go's layout scanner's rules."""
    if i >= len(layout):
        return None
    c = layout[i]
    if c in ".," and i + 1 < len(layout) and layout[i + 1] in "09":
        ch = layout[i + 1]
        j = i + 1
        while j < len(layout) and layout[j] == ch:
            j += 1
        if not (j < len(layout) and layout[j].isdigit()):
            n = j - i - 1
            if ch == "0":
                return rf"[.,](\d{{{n}}})", "frac", j
            return r"(?:[.,](\d++))?", "frac", j
        return None
    if c == "_" and layout.startswith("_2006", i):
        return None  # a literal "_" followed by a four-digit year
    for token, rx, kind in _STD:
        if layout.startswith(token, i):
            # "Jan" and "Mon" only count when no lower-case letter follows ("Janet" is literal text).
            if token in ("Jan", "Mon") and i + 3 < len(layout) and layout[i + 3].islower():
                continue
            return rx, kind, i + len(token)
    return None


class _Layout:
    """A Go layout compiled to a regex plus how to read each group."""

    def __init__(self, layout: str) -> None:
        parts: list[str] = []
        kinds: list[str] = []
        i = 0
        while i < len(layout):
            std = _next_std(layout, i)
            if std is None:
                if layout[i] == " ":
                    j = i
                    while j < len(layout) and layout[j] == " ":
                        j += 1
                    # Go lets a run of spaces in the layout match any run of spaces in the value.
                    parts.append(r"(?: +|\Z)")
                    i = j
                    continue
                parts.append(re.escape(layout[i]))
                i += 1
                continue
            rx, kind, end = std
            parts.append(rx)
            kinds.append(kind)
            if kind == "second" and (_next_std(layout, end) or ("", "", 0))[1] != "frac":
                # Go accepts a fractional second right after the seconds even when the layout has none.
                parts.append(r"(?:[.,](\d++))?")
                kinds.append("frac")
            i = end
        self.regex = re.compile("".join(parts))
        self.kinds = kinds
        self.has_year = "06" in layout  # Promtail's test: a layout without "06" (so without "2006") has no year

    def parse(self, value: str, tz: dt.tzinfo | None, now_ns: int) -> int:
        m = self.regex.fullmatch(value)
        if m is None:
            raise ValueError(f"cannot parse {value!r}")
        year, month, day, hour, minute, second, nsec = 0, 1, 1, 0, 0, 0, 0
        yday = -1
        ampm = ""
        offset: int | None = None
        zone_name = ""
        got_month = got_day = False
        for kind, text in zip(self.kinds, m.groups(), strict=True):
            if text is None:
                continue
            if kind == "year":
                year = int(text)
            elif kind == "year2":
                year = int(text)
                year += 1900 if year >= 69 else 2000
            elif kind == "month":
                month = int(text)
                got_month = True
                if not 1 <= month <= 12:
                    raise ValueError("month out of range")
            elif kind == "month_name":
                month = _MONTH_NUMBER[text.lower()]
                got_month = True
            elif kind == "day":
                day = int(text)
                got_day = True
            elif kind == "yday":
                yday = int(text)
                if not 1 <= yday <= 366:
                    raise ValueError("day-of-year out of range")
            elif kind == "hour":
                hour = int(text)
                if hour > 23:
                    raise ValueError("hour out of range")
            elif kind == "hour12":
                hour = int(text)
                if hour > 12:
                    raise ValueError("hour out of range")
            elif kind == "minute":
                minute = int(text)
                if minute > 59:
                    raise ValueError("minute out of range")
            elif kind == "second":
                second = int(text)
                if second > 59:
                    raise ValueError("second out of range")
            elif kind == "frac":
                digits = text[:9]
                nsec = int(digits) * 10 ** (9 - len(digits))
            elif kind == "ampm":
                ampm = text.upper()
            elif kind == "offset":
                offset = _read_offset(text)
            elif kind == "zone_name":
                if text[0] in "+-":
                    offset = _read_offset(text)
                else:
                    zone_name = text
        if ampm == "PM" and hour < 12:
            hour += 12
        elif ampm == "AM" and hour == 12:
            hour = 0
        if yday >= 0:
            if yday > (366 if _is_leap(year) else 365):
                raise ValueError("day-of-year out of range")
            _y, m2, d2 = _civil_from_days(_days_from_civil(year, 1, 1) + yday - 1)
            if (got_month and m2 != month) or (got_day and d2 != day):
                raise ValueError("day-of-year does not match month and day")
            month, day = m2, d2
        # Go checks the day against the parsed year (year 0, a leap year, for layouts without one).
        if day < 1 or day > _days_in(month, year):
            raise ValueError("day out of range")
        if not self.has_year:
            now_year, now_month, _d = _civil_from_days(now_ns // NS // 86400)
            if month == 12 and now_month == 1:
                year = now_year - 1
            elif month == 1 and now_month == 12:
                year = now_year + 1
            else:
                year = now_year
        wall = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
        if offset is None:
            if zone_name:
                if zone_name == "UTC":
                    offset = 0
                else:
                    found = _zone_name_offset(tz, zone_name, wall) if tz is not None else None
                    if found is not None:
                        offset = found
                    elif zone_name.startswith("GMT") and len(zone_name) > 3:
                        offset = int(zone_name[3:]) * 3600
                    else:
                        offset = 0  # Go keeps an unknown abbreviation with a zero offset
            elif tz is not None:
                offset = _zone_offset(tz, wall)
            else:
                offset = 0
        return (wall - offset) * NS + nsec


def _read_offset(text: str) -> int:
    if text == "Z":
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hh = int(digits[0:2])
    mm = int(digits[2:4]) if len(digits) >= 4 else 0
    ss = int(digits[4:6]) if len(digits) >= 6 else 0
    return sign * (hh * 3600 + mm * 60 + ss)


# RFC 3339 is by far the most common layout (CRI, Docker, most JSON loggers): parse it without the general machinery.
_RFC3339_FAST = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:\d\d)")
_RFC3339_TAIL = re.compile(r"(?:[.,](\d+))?(Z|[+-]\d\d:\d\d)")


class _RFC3339Parser:
    """RFC 3339 with any number of fractional digits; remembers the last second's prefix, which lines share."""

    def __init__(self) -> None:
        self._general = _Layout(NAMED_LAYOUTS["RFC3339Nano"])
        self._last_prefix = ""
        self._last_seconds = 0

    def __call__(self, value: str, now_ns: int) -> int:
        prefix = self._last_prefix
        if prefix and value.startswith(prefix):
            tail = _RFC3339_TAIL.fullmatch(value, 19)
            if tail is not None:
                return self._finish(tail.group(1), tail.group(2))
        m = _RFC3339_FAST.fullmatch(value)
        if m is None:
            return self._general.parse(value, None, now_ns)
        year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
        hour, minute, second = int(m.group(4)), int(m.group(5)), int(m.group(6))
        if not 1 <= month <= 12 or not 1 <= day <= _days_in(month, year):
            raise ValueError("date out of range")
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError("time out of range")
        self._last_seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
        self._last_prefix = value[:19]
        return self._finish(m.group(7), m.group(8))

    def _finish(self, frac: str | None, zone: str) -> int:
        nsec = 0
        if frac:
            frac = frac[:9]
            nsec = int(frac) * 10 ** (9 - len(frac))
        if zone == "Z":
            return self._last_seconds * NS + nsec
        hh, mm = int(zone[1:3]), int(zone[4:6])
        if hh > 23 or mm > 59:
            raise ValueError("time zone offset out of range")
        offset = (hh * 3600 + mm * 60) * (-1 if zone[0] == "-" else 1)
        return (self._last_seconds - offset) * NS + nsec


_INT = re.compile(r"[+-]?\d+")
_INT64 = 2**63


def _go_int(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError(f"invalid integer {text!r}")
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValueError(f"integer out of range {text!r}")
    return value


def _parse_unix(value: str, _now: int) -> int:
    if value.count(".") == 1:
        sec_text, frac_text = value.split(".")
        sec = _go_int(sec_text)
        frac = _go_int(frac_text)
        # Promtail scales the fraction through a float; keep its rounding.
        return sec * NS + int(float(frac) * 10.0 ** (9 - len(frac_text)))
    return _go_int(value) * NS


def _parse_unix_ms(value: str, _now: int) -> int:
    return _go_int(value) * 1_000_000


def _parse_unix_us(value: str, _now: int) -> int:
    return _go_int(value) * 1_000


def _parse_unix_ns(value: str, _now: int) -> int:
    return _go_int(value)


def make_time_parser(fmt: str, location: dt.tzinfo | None = None) -> TimeParser:
    """A parser for Promtail's `format`: a named layout (RFC3339, Unix, UnixMs, ...) or a Go reference layout.

    Named layouts ignore `location`, as Promtail's do; custom layouts without a zone read the time in it.
    Custom layouts without a year take the current year (the previous one for December lines in January).
    """
    if fmt in ("RFC3339", "RFC3339Nano"):
        return _RFC3339Parser()
    if fmt == "Unix":
        return _parse_unix
    if fmt == "UnixMs":
        return _parse_unix_ms
    if fmt == "UnixUs":
        return _parse_unix_us
    if fmt == "UnixNs":
        return _parse_unix_ns
    if fmt in NAMED_LAYOUTS:
        named = _Layout(NAMED_LAYOUTS[fmt])
        return lambda value, now_ns: named.parse(value, None, now_ns)
    layout = _Layout(fmt)
    return lambda value, now_ns: layout.parse(value, location, now_ns)
