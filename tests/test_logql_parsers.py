"""Loki's parser stages over columns of lines: json, logfmt, unpack, pattern and regexp (Loki 3.7 behaviour)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loglake.logql import parsers as lp
from loglake.logql.parsers import (
    ERR_JSON,
    ERR_LOGFMT,
    Extraction,
    Wanted,
    parse_json,
    parse_json_fields,
    parse_logfmt,
    parse_logfmt_fields,
    parse_pattern,
    parse_regexp,
    parse_unpack,
    sanitize_label_key,
)

OBJECT_ERR = "Value looks like object, but can't find closing '}' symbol"
ARRAY_ERR = "Value is array, but can't find closing ']' symbol"


def col(lines: list[str]) -> pa.Array:
    return pa.array(lines, pa.large_string())


def rows(ex: Extraction, n: int) -> list[dict[str, str]]:
    """Each row's labels; errors under `__error__`/`__error_details__`, unpack's new line under `<line>`."""
    out = []
    for i in range(n):
        row = {name: values[i].as_py() for name, values in ex.labels.items() if values[i].is_valid}
        if ex.error is not None and ex.error[i].is_valid:
            row["__error__"] = ex.error[i].as_py()
        if ex.error_details is not None and ex.error_details[i].is_valid:
            row["__error_details__"] = ex.error_details[i].as_py()
        if ex.line is not None and ex.line[i].is_valid:
            row["<line>"] = ex.line[i].as_py()
        out.append(row)
    for values in ex.labels.values():
        assert len(values) == n and values.type == pa.string()
    return out


def one(fn: Any, line: str, *args: Any) -> dict[str, str]:
    return rows(fn(col([line]), *args), 1)[0]


def json_err(details: str, **labels: str) -> dict[str, str]:
    return {**labels, "__error__": ERR_JSON, "__error_details__": details}


def logfmt_err(details: str, **labels: str) -> dict[str, str]:
    return {**labels, "__error__": ERR_LOGFMT, "__error_details__": details}


# ---- | json -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (
            '{"app":"foo","namespace":"prod","pod":{"uuid":"foo","deployment":{"ref":"foobar"}}}',
            {"app": "foo", "namespace": "prod", "pod_uuid": "foo", "pod_deployment_ref": "foobar"},
        ),
        ('{"counter":1, "price": {"_net_":5.56909}}', {"counter": "1", "price__net_": "5.56909"}),
        ('{" ": {"foo":"bar"}}', {"foo": "bar"}),
        ('{" ": {" ":"bar"}}', {"": "bar"}),
        ('{"": {"":"bar"}}', {"": "bar"}),
        ('{"": "top-level blank keys are dropped"}', {}),
        ('{"counter":1,"foo":"foo\\\\\\"bar"}', {"counter": "1", "foo": 'foo\\"bar'}),
        ('{"foo":"\ufffd"}', {"foo": " "}),
        ('{"counter":1, "price": {"net_":["10","20"]}}', {"counter": "1"}),
        ('{"cou-nter":1}', {"cou_nter": "1"}),
        ('{"foo":{"cou-nter":1}}"', {"foo_cou_nter": "1"}),
        ('{"1a":"x","a.b c":"y","é":"z"}', {"_1a": "x", "a_b_c": "y", "_": "z"}),
        ('{"a":{"1b":"x"}}', {"a_1b": "x"}),
        ('{"\\u00e9t\\u00e9":"summer","k":"caf\\u00e9 \\ud83d\\ude00"}', {"_t_": "summer", "k": "café 😀"}),
    ],
)
def test_json_extracts_like_loki(line: str, want: dict[str, str]) -> None:
    assert one(parse_json, line) == want


def test_json_numbers_keep_their_raw_text() -> None:
    line = '{"a":1.50,"b":1e3,"c":-0,"d":0,"e":1E+2,"f":12345678901234567890,"g":-1.0e-7,"h":100}'
    assert one(parse_json, line) == {
        "a": "1.50",
        "b": "1e3",
        "c": "-0",
        "d": "0",
        "e": "1E+2",
        "f": "12345678901234567890",
        "g": "-1.0e-7",
        "h": "100",
    }


def test_json_booleans_nulls_arrays_and_empty_objects() -> None:
    line = '{"t":true,"f":false,"n":null,"arr":[1,{"x":2}],"o":{},"s":""}'
    assert one(parse_json, line) == {"t": "true", "f": "false", "s": ""}


def test_json_first_of_duplicate_names_wins() -> None:
    assert one(parse_json, '{"app":"foo","app":"duplicate"}') == {"app": "foo"}
    assert one(parse_json, '{"a-b":"1","a_b":"2"}') == {"a_b": "1"}
    assert one(parse_json, '{"a":{"b":"nested"},"a_b":"flat"}') == {"a_b": "nested"}
    assert one(parse_json, '{"a":null,"a":"second"}') == {"a": "second"}


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("", json_err(OBJECT_ERR)),
        ("   ", json_err(OBJECT_ERR)),
        ("{n}", json_err(OBJECT_ERR)),
        ('["a"]', json_err(OBJECT_ERR)),
        ('"just a string"', json_err(OBJECT_ERR)),
        ("level=info msg=hello", json_err(OBJECT_ERR)),
        ("{", json_err("Malformed JSON error")),
        ('{"a":"x","b":', json_err("Malformed JSON error", a="x")),
        ('{"a":"x","b":"y"', json_err(ARRAY_ERR, a="x", b="y")),
        ('{"a":"x" "b":"y"}', json_err(OBJECT_ERR, a="x")),
        ('{"a":"x","b" "y"}', json_err("Malformed JSON error", a="x")),
        ('{"a":"x","b":"unterminated}', json_err("Value is string, but can't find closing '\"' symbol", a="x")),
        ('{"a":tru}', json_err("Unknown value type")),
        ('{"a":"x","b":}', json_err("Unknown value type", a="x")),
        ('{"a\\x":"x"}', json_err("Encountered an invalid escape sequence in a string")),
        ('{"a":{"b" 1},"c":"d"}', json_err("Malformed JSON error")),
        ('{"a":[1,2}', json_err(ARRAY_ERR)),
    ],
)
def test_json_errors_keep_labels_found_before_them(line: str, want: dict[str, str]) -> None:
    assert one(parse_json, line) == want


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ('{"a":1}garbage', {"a": "1"}),
        ('{"a":1,}', {"a": "1"}),
        ('{"a":01,"b":1.2.3,"c":-}', {"a": "01", "b": "1.2.3", "c": "-"}),
        ('{"a":"bad \\x escape","b":"ok"}', {"a": "", "b": "ok"}),
        ('{"a":"lone \\ud800 surrogate"}', {"a": ""}),
        ('{"a":"tab\tinside"}', {"a": "tab\tinside"}),
    ],
)
def test_json_is_as_lenient_as_jsonparser(line: str, want: dict[str, str]) -> None:
    assert one(parse_json, line) == want


def test_json_rows_are_independent_in_one_column() -> None:
    lines = ['{"a":"1"}', "", '{"b":2}', "oops", '{"a":"3","c":{"d":true}}']
    assert rows(parse_json(col(lines)), 5) == [
        {"a": "1"},
        json_err(OBJECT_ERR),
        {"b": "2"},
        json_err(OBJECT_ERR),
        {"a": "3", "c_d": "true"},
    ]


def test_json_null_lines_read_as_empty() -> None:
    ex = parse_json(pa.array(['{"a":"1"}', None], pa.string()))
    assert rows(ex, 2) == [{"a": "1"}, json_err(OBJECT_ERR)]


def test_json_with_hints_extracts_only_wanted_names() -> None:
    line = '{"level":"info","status":200,"req":{"path":"/x","method":"GET"}}'
    assert one(parse_json, line, Wanted({"status", "req_path"})) == {"status": "200", "req_path": "/x"}


def test_json_with_hints_stops_once_all_are_found() -> None:
    # Loki stops scanning after the last wanted label, so a broken tail is not an error.
    assert one(parse_json, '{"a":"1","b":"2" garbage', Wanted({"a"})) == {"a": "1"}
    assert one(parse_json, '{"a":"1","b":"2" garbage') == json_err(OBJECT_ERR, a="1", b="2")
    # Objects whose names cannot lead to a wanted label are not entered.
    assert one(parse_json, '{"c":{"x" 1},"a":"1"}', Wanted({"a"})) == {"a": "1"}
    # __error__ is never extracted, so asking for it keeps the scan going to the end.
    want = Wanted({"a", "__error__"})
    assert one(parse_json, '{"a":"1" garbage', want) == {**json_err(OBJECT_ERR, a="1"), "__preserve_error__": "true"}


def test_json_empty_hint_set_extracts_nothing() -> None:
    ex = parse_json(col(['{"a":"1"}', "not json"]), Wanted(()))
    assert rows(ex, 2) == [{}, {}]


# ---- | json a="path" --------------------------------------------------------------------------------------

FIELDS_LINE = (
    '{"app":"foo","field with space":"value","null_field":null,"bool_field":false,"n":1.50,'
    '"pod":{"uuid":"foo","deployment":{"ref":"foobar","params":[1,2,3,"string_value",{"k":"v"}]}}}'
)


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("app", "foo"),
        ("bool_field", "false"),
        ("null_field", ""),
        ("n", "1.50"),
        ("pod.uuid", "foo"),
        ('pod["uuid"]', "foo"),
        ('["pod"]["deployment"]["ref"]', "foobar"),
        ('["field with space"]', "value"),
        ("pod.deployment.params[0]", "1"),
        ("pod.deployment.params[3]", "string_value"),
        ("pod.deployment.params[4].k", "v"),
        ("pod.deployment.params[9]", ""),
        ("pod.deployment", '{"ref":"foobar","params":[1,2,3,"string_value",{"k":"v"}]}'),
        ("pod.deployment.params", '[1,2,3,"string_value",{"k":"v"}]'),
        ("missing.path", ""),
    ],
)
def test_json_fields_follow_paths(expr: str, want: str) -> None:
    assert one(parse_json_fields, FIELDS_LINE, [("x", expr)]) == {"x": want}


def test_json_fields_every_label_exists_and_errors() -> None:
    fields = [("a", "app"), ("u", "pod.uuid")]
    lines = ["{}", "invalid json", "", '{"app":"first","app":"second"}', '{"app":tru}', '[{"app":"x"}]']
    assert rows(parse_json_fields(col(lines), fields), 6) == [
        {"a": "", "u": ""},
        {"__error__": ERR_JSON},
        {},
        {"a": "first", "u": ""},
        {"a": "", "u": "", "__error__": ERR_JSON, "__error_details__": "Unknown value type"},
        {"a": "", "u": ""},
    ]


def test_json_fields_unescape_strings_but_not_objects() -> None:
    fields = [("app", "app")]
    assert one(parse_json_fields, '{"app":"{ \\"key\\": \\"value\\"}"}', fields) == {"app": '{ "key": "value"}'}
    assert one(parse_json_fields, '{"app":{"name":"great \\"loki\\""}}', fields) == {
        "app": '{"name":"great \\"loki\\""}'
    }


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("field with space", "syntax error: unexpected FIELD"),
        ('"pod"]', "syntax error: unexpected STRING, expecting LSB or FIELD"),
        ('["pod"', "syntax error: unexpected $end, expecting RSB"),
        ('["pod""uuid"]', "syntax error: unexpected STRING, expecting RSB"),
        ("pod..uuid", "syntax error: unexpected DOT, expecting FIELD"),
        ("['x y']", "syntax error: unexpected $end, expecting STRING or INDEX"),
        ("a.b!", "unexpected char !"),
    ],
)
def test_json_fields_reject_bad_paths_with_lokis_message(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_json_fields(col(["{}"]), [("x", expr)])
    assert str(err.value) == f"cannot parse expression [{expr}]: {message}"


# ---- | unpack ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (
            '{"bar":1,"app":"foo","namespace":"prod","_entry":"some message","pod":{"uid":"1"}}',
            {"app": "foo", "namespace": "prod", "<line>": "some message"},
        ),
        ('"app":"foo"', json_err("expecting json object(6), but it is not")),
        (' {"_entry":"x"}', json_err("expecting json object(6), but it is not")),
        ('["foo","bar"]', json_err("expecting json object(6), but it is not")),
        ("", {}),
        ('{"bar":1,"app":"foo"}', {}),
        ('{"foo.bar":"10ms","test-dash":"foo","_entry":"m"}', {"foo_bar": "10ms", "test_dash": "foo", "<line>": "m"}),
        ('{"a":"1","a":"2","_entry":"x"}', {"a": "2", "<line>": "x"}),
        ('{"_entry":"I0303 \\"Pod\\" status=Running"}', {"<line>": 'I0303 "Pod" status=Running'}),
        ('{"_entry":"\\x"}', json_err("Encountered an invalid escape sequence in a string")),
        ('{"a":"b","_entry":"x"', json_err(ARRAY_ERR)),
        ('{"_entry":5,"a":"b"}', {}),
    ],
)
def test_unpack_like_loki(line: str, want: dict[str, str]) -> None:
    assert one(parse_unpack, line) == want


def test_unpack_with_hints_keeps_only_wanted_keys() -> None:
    line = '{"a":"1","b":"2","_entry":"msg"}'
    assert one(parse_unpack, line, Wanted({"b"})) == {"b": "2", "<line>": "msg"}


# ---- | logfmt ---------------------------------------------------------------------------------------------

LOGFMT_CASES = [
    # line, non-strict labels, strict result (None: same as non-strict)
    ("foobar====wqe=sdad1r", {}, logfmt_err("logfmt syntax error at pos 8 : unexpected '='")),
    ("buzz=foo bar=\ufffdf", {"bar": " f", "buzz": "foo"}, None),
    ("buzz bar=foo", {"bar": "foo"}, None),
    ('foobar="foo bar"', {"foobar": "foo bar"}, None),
    ('foobar="foo\\nbar\\tbaz"', {"foobar": "foo\nbar\tbaz"}, None),
    ('foobar="foo\nbar\tbaz"', {"foobar": "foo\nbar\tbaz"}, None),
    ('foobar="foo ba\\\\r baz"', {"foobar": "foo ba\\r baz"}, None),
    ('foobar="foo bar\nb\\\\az"', {"foobar": "foo bar\nb\\az"}, None),
    ('foobar="foo bar" latency=10ms', {"foobar": "foo bar", "latency": "10ms"}, None),
    ('foobar="foo bar" foobar=10ms', {"foobar": "foo bar"}, None),
    ('foo="foo bar" foo.bar=10ms test-dash=foo', {"foo": "foo bar", "foo_bar": "10ms", "test_dash": "foo"}, None),
    ("", {}, None),
    (
        'foo="foo bar" =notkey bar=10ms',
        {"foo": "foo bar", "bar": "10ms"},
        logfmt_err("logfmt syntax error at pos 15 : unexpected '='", foo="foo bar"),
    ),
    (
        'foo="foo bar" b\ufffdr=10ms',
        {"foo": "foo bar"},
        logfmt_err("logfmt syntax error at pos 20 : invalid key", foo="foo bar"),
    ),
    (
        'foo="foo bar" bu"zz=10ms',
        {"foo": "foo bar"},
        logfmt_err("logfmt syntax error at pos 17 : unexpected '\"'", foo="foo bar"),
    ),
    ('bar=bu=zz foo="foo bar"', {"foo": "foo bar"}, logfmt_err("logfmt syntax error at pos 7 : unexpected '='")),
    ('a="unterminated', {}, logfmt_err("logfmt syntax error at pos 16 : unterminated quoted value")),
    ('a="bad \\x" b=1', {"b": "1"}, logfmt_err("logfmt syntax error at pos 11 : invalid quoted value")),
    ('é="x" b="y', {"_": "x"}, logfmt_err("logfmt syntax error at pos 12 : unterminated quoted value", _="x")),
    ('a="x"b=1 c="\\u00e9\\ud83d\\ude00\\ud800!"', {"a": "x", "b": "1", "c": "é😀 !"}, None),
    ("  a=1\tb=2  ", {"a": "1", "b": "2"}, None),
    ("1a=x", {"_1a": "x"}, None),
]


@pytest.mark.parametrize(("line", "want", "_strict"), LOGFMT_CASES)
def test_logfmt_like_loki(line: str, want: dict[str, str], _strict: dict[str, str] | None) -> None:
    assert one(parse_logfmt, line, False, False) == want


@pytest.mark.parametrize(("line", "want", "strict_want"), LOGFMT_CASES)
def test_logfmt_strict_stops_at_the_first_error(
    line: str, want: dict[str, str], strict_want: dict[str, str] | None
) -> None:
    assert one(parse_logfmt, line, True, False) == (strict_want if strict_want is not None else want)


def test_logfmt_keep_empty_keeps_bare_keys_and_empty_values() -> None:
    line = 'a= b c="" d=1 a=2'
    assert one(parse_logfmt, line, False, False) == {"d": "1", "a": "2"}
    assert one(parse_logfmt, line, False, True) == {"a": "", "b": "", "c": "", "d": "1"}


def test_logfmt_with_hints() -> None:
    line = "level=info duration=5ms caller=x.go:1"
    assert one(parse_logfmt, line, False, False, Wanted({"duration"})) == {"duration": "5ms"}
    # Loki stops at the last wanted label, so strict mode ignores a broken tail.
    assert one(parse_logfmt, "a=1 b==2", True, False, Wanted({"a"})) == {"a": "1"}
    assert one(parse_logfmt, "a=1 b==2", True, False) == logfmt_err(
        "logfmt syntax error at pos 7 : unexpected '='", a="1"
    )


def test_logfmt_column_with_mixed_lines() -> None:
    lines = ["a=1 b=2", 'a=3 msg="x y"', "garbage\x01 c=4", "a=1 b=2", "b=5"]
    assert rows(parse_logfmt(col(lines), False, False), 5) == [
        {"a": "1", "b": "2"},
        {"a": "3", "msg": "x y"},
        {"c": "4"},
        {"a": "1", "b": "2"},
        {"b": "5"},
    ]


def test_logfmt_fields() -> None:
    fields = [("a", "b"), ("x", "x")]
    lines = ["b=1 c=2", "a=1 b=2", "b=2 a=1", "b=1 b=2", "", "x=\ufffd", "b==1"]
    assert rows(parse_logfmt_fields(col(lines), fields, False, False), 7) == [
        {"a": "1", "x": ""},
        {"a": "2", "x": ""},
        {"a": "1", "x": ""},
        {"a": "2", "x": ""},
        {"a": "", "x": ""},
        {"a": "", "x": ""},
        {"a": "", "x": ""},
    ]
    strict = rows(parse_logfmt_fields(col(["b==1"]), fields, True, False), 1)[0]
    assert strict == logfmt_err("logfmt syntax error at pos 3 : unexpected '='", a="", x="")


def test_logfmt_fields_reject_bad_keys() -> None:
    with pytest.raises(ValueError, match=r"cannot parse expression \[a\.b\]: unexpected char \."):
        parse_logfmt_fields(col(["a=1"]), [("x", "a.b")], False, False)


# ---- | pattern --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "line", "want"),
    [
        ("foo <foo> bar", "foo buzz bar", {"foo": "buzz"}),
        ("foo <foo> bar<fuzz>", "foo buzz bar", {"foo": "buzz", "fuzz": ""}),
        ("<foo>foo <bar> bar", "foo buzz bar", {"foo": "", "bar": "buzz"}),
        ("<foo>bar<baz>", " bar ", {"foo": " ", "baz": " "}),
        ("<foo>", " bar ", {"foo": " bar "}),
        ("<path>?<_>", "/api/plugins/versioncheck?slugIn=x", {"path": "/api/plugins/versioncheck"}),
        ("<path>?<_>", "/api/plugins/status", {"path": "/api/plugins/status"}),
        ("foo <a> x <b> y <c>", "foo 1 x 2", {"a": "1", "b": "2"}),
        ("foo <a>", "bar foo 1", {}),
        ("foo <a>", "", {}),
        (
            '<_> msg="<method> <path> (<status>) <duration>"',
            'level=debug ts=2021 caller=logging.go:66 msg="POST /loki/api/v1/push (204) 1.238734ms"',
            {"method": "POST", "path": "/loki/api/v1/push", "status": "204", "duration": "1.238734ms"},
        ),
        ("<a> é <b>", "ü é 日本", {"a": "ü", "b": "日本"}),
    ],
)
def test_pattern_like_loki(pattern: str, line: str, want: dict[str, str]) -> None:
    assert one(parse_pattern, line, pattern) == want


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("<_> foo", "at least one capture is required"),
        ("foo", "at least one capture is required"),
        ("<a><b>", "found consecutive capture '<a><b>': invalid expression"),
        ("<a> <a>", "duplicate capture name (a): invalid expression"),
    ],
)
def test_pattern_rejects_invalid_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_pattern(col(["x"]), pattern)
    assert str(err.value) == message


# ---- | regexp ---------------------------------------------------------------------------------------------


def test_regexp_named_groups_of_the_first_match() -> None:
    regex = r"GET (?P<path>.*?)/\?|(?P<other>abc)(?P<_1n>\d)?"
    lines = ["x GET /static/img/bob.jpg/?x GET /b/?", "nothing here", "abc", "abc7"]
    assert rows(parse_regexp(col(lines), regex), 4) == [
        {"path": "/static/img/bob.jpg", "other": "", "_1n": ""},
        {},
        {"path": "", "other": "abc", "_1n": ""},
        {"path": "", "other": "abc", "_1n": "7"},
    ]


def test_regexp_uses_go_semantics() -> None:
    # Go's \d and \w are ASCII-only; `$` is the end of the text.
    assert one(parse_regexp, "٣3 end", r"(?P<d>\d+)") == {"d": "3"}
    assert one(parse_regexp, "a\nb", r"(?P<last>\w)$") == {"last": "b"}


@pytest.mark.parametrize(
    ("regex", "message"),
    [
        ("(.*)", "at least one named capture must be supplied"),
        ("abc", "at least one named capture must be supplied"),
        ("blah (.*) (?P<foo>foo)(?P<foo>barr)", "duplicate extracted label name 'foo'"),
        ("(?P<a>", "error parsing regexp: missing closing ): `(?P<a>`"),
    ],
)
def test_regexp_rejects_invalid_expressions(regex: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_regexp(col(["x"]), regex)
    assert str(err.value) == message


# ---- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("a-b", "a_b"),
        ("1abc", "_1abc"),
        (" spaced\t", "spaced"),
        ("\u00a0nbsp", "nbsp"),
        ("\x1ckeep", "_keep"),
        ("", ""),
    ],
)
def test_sanitize_label_key(key: str, name: str) -> None:
    assert sanitize_label_key(key) == name


# ---- the fast paths agree with the ported scanners ------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "a-b", "a_b", "1x", " ", "", "é", "_entry", "c d", 'q"', "k\\n"])
SCALARS = st.one_of(
    st.text(alphabet=st.sampled_from(list('ab "\\/é\ufffd\n{}[]:,-0')), max_size=6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(st.tuples(KEYS, inner), max_size=4)),
    max_leaves=8,
)
NUMBER_TEXT = st.sampled_from(["-0", "0", "1.50", "1e3", "1E+2", "-0.0", "100", "12345678901234567890"])


def _dump(value: Any, spaced: bool, numbers: list[str]) -> str:
    """JSON text for a value; lists of pairs are objects (duplicate keys allowed)."""
    sep = ", " if spaced else ","
    colon = " : " if spaced else ":"
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + sep.join(json.dumps(k) + colon + _dump(v, spaced, numbers) for k, v in value) + "}"
    if isinstance(value, tuple):
        return _dump(list(value), spaced, numbers)
    if isinstance(value, list):
        return "[" + sep.join(_dump(v, spaced, numbers) for v in value) + "]"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and numbers:
        return numbers.pop()
    return json.dumps(value, ensure_ascii=False)


@st.composite
def json_lines(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(KEYS, VALUES), max_size=6))
    numbers = draw(st.lists(NUMBER_TEXT, max_size=3))
    text = _dump(pairs, draw(st.booleans()), numbers) if pairs else "{}"
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(text))))
    if cut is not None:
        text = text[:cut] + draw(st.sampled_from(["", "}", '"', ",", " x", "]"]))
    return text


def _reference_json(line: str, wanted: Wanted | None) -> dict[str, str]:
    labels, err = lp._json_exact(line, wanted)
    if err is not None:
        labels = {**labels, "__error__": ERR_JSON, "__error_details__": err}
        if wanted is not None and "__error__" in wanted.names:
            labels["__preserve_error__"] = "true"
    return labels


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_lines(), min_size=1, max_size=8), st.sampled_from([None, ("a", "a_b"), ("_entry", "__error__")]))
def test_json_fast_path_matches_the_scanner(lines: list[str], names: tuple[str, ...] | None) -> None:
    wanted = Wanted(names) if names is not None else None
    got = rows(parse_json(col(lines), wanted), len(lines))
    assert got == [_reference_json(line, wanted) for line in lines]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_lines(), min_size=1, max_size=8))
def test_unpack_fast_path_matches_the_scanner(lines: list[str]) -> None:
    got = rows(parse_unpack(col(lines)), len(lines))
    want = []
    for line in lines:
        if not line:
            want.append({})
        elif line[0] != "{":
            want.append(json_err("expecting json object(6), but it is not"))
        else:
            pending, entry, err = lp._unpack_exact(line, None)
            if err is not None:
                want.append(json_err(err))
            else:
                want.append({**dict(pending), **({"<line>": entry} if entry is not None else {})})
    assert got == want


PATHS = ["a", "b", "a.b", "a[0]", "a[1].b", '["a-b"]', '["é"]', "[0]", "[1].a", '["1x"]']


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_lines(), min_size=1, max_size=6), st.lists(st.sampled_from(PATHS), min_size=1, max_size=3))
def test_json_fields_fast_path_matches_the_scanner(lines: list[str], exprs: list[str]) -> None:
    fields = [(f"l{i}", e) for i, e in enumerate(exprs)]
    paths = [[f"[{p}]" if isinstance(p, int) else p for p in lp._parse_json_path(e)] for e in exprs]
    got = rows(parse_json_fields(col(lines), fields), len(lines))
    want = []
    for line in lines:
        if not line:
            want.append({})
            continue
        labels, failed, details = lp._json_fields_exact(line, [f for f, _ in fields], paths)
        if failed:
            labels = {**labels, "__error__": ERR_JSON}
            if details is not None:
                labels["__error_details__"] = details
        want.append(labels)
    assert got == want


LOGFMT_PIECES = st.sampled_from(
    [
        "a",
        "b",
        "key",
        "1x",
        "é",
        "=",
        "==",
        '"',
        '\\"',
        "\\",
        " ",
        "  ",
        "\t",
        "x y",
        "\ufffd",
        "\\n",
        "\\u00e9",
        ":",
        ".",
    ]
)
LOGFMT_LINES = st.lists(LOGFMT_PIECES, max_size=12).map("".join)
PLAIN_LOGFMT = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "a-b", "a_b", "1x", "c"]),
        st.sampled_from(["", "=", "=1", "=x.y", '=""', '="x y"', '="a=b"', "=:"]),
        st.sampled_from([" ", "  ", ""]),
    ),
    max_size=6,
).map(lambda parts: "".join(k + v + s for k, v, s in parts))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(LOGFMT_LINES, PLAIN_LOGFMT), min_size=1, max_size=8),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, ("a",), ("a_b", "x")]),
)
def test_logfmt_fast_path_matches_the_decoder(
    lines: list[str], strict: bool, keep_empty: bool, names: tuple[str, ...] | None
) -> None:
    wanted = Wanted(names) if names is not None else None
    got = rows(parse_logfmt(col(lines), strict, keep_empty, wanted), len(lines))
    want = []
    for line in lines:
        labels, err = lp._logfmt_exact(line, strict, keep_empty, wanted)
        want.append(labels if err is None else logfmt_err(err, **labels))
    assert got == want


# ---- whole-column fast paths against the per-row readers -------------------------------------------------

# Lines that the flat-object regexes must read exactly as the per-row path does, or leave to it.
FLAT_EDGE_LINES = [
    '{"level":"info","status":503,"msg":"ok"}',
    '{"level":"a","level":"b"}',
    '{" level":"x","level":"y"}',
    '{"level":null,"level":"second"}',
    '{"a":{"level":"nested"},"status":1}',
    '{"msg":"a\\"b\\n\\\\", "n": -0, "f": 1.50e3, "t": true, "empty": ""}',
    '{"k\\"ey":"v", "0x": 1, "a-b": 2, "a_b": 3, "a  b": 4}',
    '{"level":"\\u00e9"}',
    "{}",
    ' { "level" : "spaced" } ',
    '{"level":"x"} trailing',
    "[1,2]",
    "level=info",
    '{"msg":"\ufffd"}',
    '{"le vel": 1, "":"e", " ":"f", "x_": 1, "x ": 2, " _x": 3, "_x": 4}',
    '{"a":[1,2],"level":"after array"}',
    '{"status":500,"status_code":"x"}',
    '{"level":"x",}',
    '{"level":"\t raw tab", "\\tlevel": "escaped tab key"}',
    '{"__error__":"boom", ".-error-.":"e"}',
    '{"level": "\\/x\\b"}',
    '{"level":"x", "status": 5',
]


@pytest.mark.parametrize(
    "names",
    [["level"], ["status", "__error__"], ["a_b", "status_code", "msg"], ["_x", "x_", "__error__", "le_vel"], ["_0x"]],
)
def test_json_column_path_equals_the_row_path(names: list[str]) -> None:
    lines = col(FLAT_EDGE_LINES * 4)  # enough rows for the column path
    assert len(lines) >= lp.FLAT_JSON_MIN_ROWS
    wanted = Wanted(names)
    want = rows(lp._parse_json_rows(lines, wanted), len(lines))
    assert rows(parse_json(lines, wanted), len(lines)) == want
    # A prefilter pass reads flat lines by the hints and every other line in full.
    full = rows(lp._parse_json_rows(lines, None), len(lines))
    got = rows(parse_json(lines, wanted, full_rest=True), len(lines))
    column_path = all(lp._key_value_pattern(name) is not None for name in names)
    for line, g, w, f in zip(FLAT_EDGE_LINES * 4, got, want, full, strict=True):
        flat = column_path and lp._flat_json(col([line] * lp.FLAT_JSON_MIN_ROWS), wanted)[0][0]
        assert g == (w if flat else f), line


def test_logfmt_column_values_equal_the_row_path() -> None:
    lines = [
        "duration=5ms a=b",
        'duration="1 s" x',
        'duration="a\\"b" z=1',
        "duration=",
        "duration",
        "x duration=7 duration=8",
        'duration="\\u00e9x"',
        'a="b c" duration=3\t',
        'duration="x\ufffdy"',
        "duration=a=b",
        'duration=""',
    ]
    for keep_empty in (False, True):
        pattern = lp._first_token_regex("duration", keep_empty)
        assert pattern is not None
        matched = pl.Series(lines).str.extract_all(pattern).list.first().drop_nulls()
        assert len(matched) >= 7
        assert lp._values_at_end(matched).to_pylist() == [lp._value_at_end(m) for m in matched.to_list()]
