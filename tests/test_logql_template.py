"""Go text/template and Loki's template functions, as line_format and label_format run them."""

from __future__ import annotations

import pytest

from loglake.gotemplate import Template, TemplateError, TemplateRuntimeError

TS = 1_704_067_434_123_456_789  # 2024-01-01T00:03:54.123456789Z


def render(text: str, labels: dict[str, str] | None = None, line: str = "the line") -> str:
    return Template(text).render(labels or {}, line, TS)


@pytest.mark.parametrize(
    ("text", "labels", "out"),
    [
        ("{{.a}}-{{.missing}}", {"a": "x"}, "x-"),
        ("{{ .a | ToUpper }} {{ ToLower .b }}", {"a": "x", "b": "Y"}, "X y"),
        ('{{ printf "%-6s|%5.2f|%03d|%q|%v" .a 3.14159 7 "q" true }}', {"a": "ab"}, 'ab    | 3.14|007|"q"|true'),
        ("{{ trunc 3 .a }}|{{ trunc -2 .a }}|{{ substr 1 3 .a }}", {"a": "abcdef"}, "abc|ef|bc"),
        ('{{ replace "ms" " millis" .d }}|{{ Replace .d "m" "M" 1 }}', {"d": "12ms"}, "12 millis|12Ms"),
        ('{{ regexReplaceAll "user([0-9]+)" .u "u-${1}" }}', {"u": "user42 user7"}, "u-42 u-7"),
        ('{{ regexReplaceAllLiteral "[0-9]+" .u "${1}" }}', {"u": "a1b22"}, "a${1}b${1}"),
        (
            '{{ TrimPrefix .a "x" }}{{ TrimSuffix .a "z" }}{{ Trim .a "xz" }}{{ TrimSpace "  s " }}',
            {"a": "xyz"},
            "yzxyys",
        ),
        ('{{ contains "ll" .a }} {{ hasPrefix "he" .a }} {{ hasSuffix "x" .a }}', {"a": "hello"}, "true true false"),
        (
            "{{ div .size 1024 }} {{ add .ttl 1 }} {{ sub 5 7 }} {{ mul 3 4 }} {{ mod 7 3 }} {{ div -7 2 }}",
            {"size": "4096", "ttl": "30"},
            "4 31 -2 12 1 -3",
        ),
        ("{{ addf 1.5 2 }} {{ divf 1 4 }} {{ maxf 1 2.5 }} {{ max 3 9 }} {{ floor 2.7 }}", {}, "3.5 0.25 2.5 9 2"),
        ('{{ default "none" .x }} {{ default "none" .a }}', {"a": "set"}, "none set"),
        ('{{ b64enc .a }} {{ b64dec "aGk=" }} {{ urlencode "a b&c" }}', {"a": "hi"}, "aGk= hi a+b%26c"),
        ("{{ __line__ }}", {}, "the line"),
        ("{{ __timestamp__ | unixEpoch }} {{ __timestamp__ | unixEpochMillis }}", {}, "1704067434 1704067434123"),
        ("{{ __timestamp__ | unixEpochNanos }}", {}, str(TS)),
        ('{{ __timestamp__ | date "2006-01-02T15:04:05.000Z07:00" }}', {}, "2024-01-01T00:03:54.123Z"),
        ('{{ toDate "2006-01-02" "2024-03-05" | unixEpoch }}', {}, "1709596800"),
        ('{{ (fromJson .j).a }} {{ index (fromJson .j) "b" }}', {"j": '{"a": 1, "b": "x"}'}, "1 x"),
        ('{{ if eq .a "x" }}X{{ else if .b }}B{{ else }}N{{ end }}', {"a": "y", "b": "1"}, "B"),
        ("{{ range $i, $v := fromJson .j }}{{ $i }}={{ $v }};{{ else }}empty{{ end }}", {"j": "[5,6]"}, "0=5;1=6;"),
        ("{{ range fromJson .j }}{{ . }}{{ else }}empty{{ end }}", {"j": "[]"}, "empty"),
        ('{{ with .a }}<{{ . }}>{{ else }}none{{ end }}{{ $x := "v" }}{{ $x = "w" }}{{ $x }}', {"a": ""}, "nonew"),
        ("a {{- /* comment */ -}} b {{- .a }}", {"a": "c"}, "abc"),
        ("{{ and .a .b }}|{{ or .a .b }}|{{ not .a }}|{{ len .b }}", {"a": "", "b": "xy"}, "|xy|true|2"),
        ('{{ alignLeft 4 .a }}|{{ alignRight 4 .a }}|{{ repeat 2 "ab" }}', {"a": "xy"}, "xy  |  xy|abab"),
    ],
)
def test_renders_like_loki(text: str, labels: dict[str, str], out: str) -> None:
    assert render(text, labels) == out


@pytest.mark.parametrize("text", ["{{ .a", "{{ nope .a }}", "{{ if .a }}x", "{{ end }}", "{{ .a | }}"])
def test_bad_templates_fail_to_compile(text: str) -> None:
    with pytest.raises(TemplateError):
        Template(text)


@pytest.mark.parametrize("text", ["{{ div 1 0 }}", "{{ .a.b }}", "{{ __timestamp__ | date 5 | unixEpoch }}"])
def test_runtime_errors_are_reported_per_row(text: str) -> None:
    with pytest.raises(TemplateRuntimeError):
        render(text, {"a": "x"})


def test_fields_lists_the_labels_a_template_reads() -> None:
    assert Template("{{ .a }} {{ ToUpper .b }} {{ if .c }}{{ end }}").fields == {"a", "b", "c"}
    assert Template("{{ . }}").fields is None


def test_extra_functions_belong_to_one_template_only() -> None:
    shout = {"shout": lambda s: s.upper() + "!"}
    assert Template('{{ shout "hi" }}', shout).render({}, "", 0) == "HI!"
    with pytest.raises(TemplateError):
        Template('{{ shout "hi" }}')  # LogQL's line_format does not gain them
