"""Go's float text forms, checked against what Go 1.19 printed here for the same values (fmt.Sprint,
strconv.FormatFloat 'e' and 'f' with precision -1, and text/template's `{{ . }}`)."""

from __future__ import annotations

import math

import pytest

from loglake.gonum import format_float_e, format_float_f, format_float_v
from loglake.gotemplate import Template

GO = [
    (8.0, "8", "8e+00", "8"),
    (1e6, "1e+06", "1e+06", "1000000"),
    (1234567.0, "1.234567e+06", "1.234567e+06", "1234567"),
    (1e16, "1e+16", "1e+16", "10000000000000000"),
    (1e20, "1e+20", "1e+20", "100000000000000000000"),
    (1e21, "1e+21", "1e+21", "1000000000000000000000"),
    (0.00001, "1e-05", "1e-05", "0.00001"),
    (0.0001, "0.0001", "1e-04", "0.0001"),
    (123456.5, "123456.5", "1.234565e+05", "123456.5"),
    (0.0, "0", "0e+00", "0"),
    (-2.5, "-2.5", "-2.5e+00", "-2.5"),
    (math.inf, "+Inf", "+Inf", "+Inf"),
    (math.nan, "NaN", "NaN", "NaN"),
]


@pytest.mark.parametrize(("value", "v", "e", "f"), GO)
def test_float_forms_match_go(value: float, v: str, e: str, f: str) -> None:
    assert (format_float_v(value), format_float_e(value), format_float_f(value)) == (v, e, f)


def test_templates_print_floats_as_go_does() -> None:
    # Loki's mulf returns a float64, which line_format prints with %v.
    assert Template("{{ mulf 1234.567 1000 }}").render({}, "", 0) == "1.234567e+06"
