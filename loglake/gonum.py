"""Go's text forms of numbers (fmt's %v, strconv's 'f' and 'e' with the shortest digits, go-humanize's bytes);
stdlib only."""

from __future__ import annotations

import math


def _special(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def _shortest_digits(value: float) -> tuple[str, int]:
    """Return the shortest round-trip digits of abs(value) and the decimal point position (Go's dp)."""
    text = repr(abs(value))
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    if frac == "0":
        frac = ""
    digits = (whole + frac).lstrip("0")
    dp = len(whole) + (int(exp) if exp else 0)
    if whole == "0":
        stripped = frac.lstrip("0")
        dp = -(len(frac) - len(stripped)) + (int(exp) if exp else 0)
        digits = stripped
    digits = digits.rstrip("0") or "0"
    return digits, dp


def _fixed(digits: str, dp: int) -> str:
    if dp <= 0:
        return "0." + "0" * (-dp) + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def _exponent(digits: str, dp: int) -> str:
    exp = dp - 1
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _sign(value: float) -> str:
    return "-" if math.copysign(1.0, value) < 0 else ""


def format_float_v(value: float) -> str:
    """Format a float as Go's fmt %v / Sprint (%g with the shortest digits: `0.5`, `1e+06`, `1.234567e+06`)."""
    special = _special(value)
    if special is not None:
        return special
    if value == 0:
        return _sign(value) + "0"
    digits, dp = _shortest_digits(value)
    # Go picks the exponent form with precision 6 when printing the shortest representation.
    if dp - 1 < -4 or dp - 1 >= 6:
        return _sign(value) + _exponent(digits, dp)
    return _sign(value) + _fixed(digits, dp)


def format_float_f(value: float) -> str:
    """Format a float as Go's strconv.FormatFloat(v, 'f', -1, 64) (shortest digits, never an exponent)."""
    special = _special(value)
    if special is not None:
        return special
    if value == 0:
        return _sign(value) + "0"
    return _sign(value) + _fixed(*_shortest_digits(value))


def format_float_e(value: float) -> str:
    """Format a float as Go's strconv.FormatFloat(v, 'e', -1, 64) (shortest digits, always an exponent)."""
    special = _special(value)
    if special is not None:
        return special
    if value == 0:
        return _sign(value) + "0e+00"
    return _sign(value) + _exponent(*_shortest_digits(value))


_SI_SIZES = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def humanize_bytes(size: int) -> str:
    """Format a byte count as go-humanize's Bytes without the space (`20MB`, `9.2kB`, `5B`)."""
    if size < 10:
        return f"{size}B"
    exponent = math.floor(math.log(size) / math.log(1000))
    value = math.floor(size / 1000**exponent * 10 + 0.5) / 10
    text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    return text + _SI_SIZES[exponent]
