"""Rule files: strict parsing, precise validation messages, durations, Prometheus alert templates, YAML round trip."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.gotemplate import Template, TemplateError
from loglake.ruler.rules import (
    TEMPLATE_FUNCS,
    Rule,
    RuleError,
    RuleGroup,
    format_duration,
    format_rule_file,
    group_to_dict,
    parse_duration,
    parse_rule_file,
    parse_rule_group,
    render_template,
)

REPO = Path(__file__).resolve().parent.parent
SEED_EXPR = 'sum(count_over_time({namespace="ai-prod"} |~ "error|rate_limited" [1m])) > 5'


def errors_of(text: str, source: str = "") -> list[str]:
    with pytest.raises(RuleError) as info:
        parse_rule_file(textwrap.dedent(text), source=source)
    return info.value.errors


# ---- the seeds' rule ------------------------------------------------------------------------------------------------


def test_seed_alert_parses_into_the_model():
    text = f"""
    groups:
      - name: ai-errors
        interval: 1m
        limit: 10
        rules:
          - alert: AIServiceErrors
            expr: '{SEED_EXPR}'
            for: 2m
            keep_firing_for: 5m
            labels:
              severity: page
            annotations:
              summary: "{{{{ $value | humanize }}}} errors in {{{{ $labels.namespace }}}}"
    """
    [group] = parse_rule_file(textwrap.dedent(text))
    assert group == RuleGroup(
        name="ai-errors",
        interval_s=60.0,
        limit=10,
        rules=(
            Rule(
                kind="alert",
                name="AIServiceErrors",
                expr=SEED_EXPR,
                for_s=120.0,
                keep_firing_for_s=300.0,
                labels={"severity": "page"},
                annotations={"summary": "{{ $value | humanize }} errors in {{ $labels.namespace }}"},
            ),
        ),
    )
    summary = group.rules[0].annotations["summary"]
    assert render_template(summary, {"namespace": "ai-prod"}, 12.0) == "12 errors in ai-prod"


def test_shipped_example_parses():
    path = REPO / "examples" / "alerts" / "ai-errors.yaml"
    groups = parse_rule_file(path.read_text(), source=str(path))
    alerts = [r for g in groups for r in g.rules if r.kind == "alert"]
    assert [r.expr for r in alerts] == [SEED_EXPR]


def test_recording_rule_and_defaults():
    [group] = parse_rule_file("groups: [{name: g, rules: [{record: 'ai:errors:rate1m', expr: 'vector(1)'}]}]")
    assert group.interval_s is None and group.limit == 0
    assert group.rules == (Rule(kind="record", name="ai:errors:rate1m", expr="vector(1)"),)


def test_empty_file_has_no_groups():
    assert parse_rule_file("") == []
    assert parse_rule_file("groups: []") == []
    assert parse_rule_file("# only a comment\n") == []


def test_rules_are_immutable_and_hashable():
    rule = Rule(kind="alert", name="A", expr="vector(1)", labels={"a": "b"})
    with pytest.raises(TypeError):
        rule.labels["a"] = "c"  # type: ignore[index]
    assert {rule: 1}[Rule(kind="alert", name="A", expr="vector(1)", labels={"a": "b"})] == 1
    group = RuleGroup(name="g", rules=[rule])  # type: ignore[arg-type]
    assert group.rules == (rule,)


# ---- validation messages --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            groups:
              - name: g
                intervl: 1m
                rules: []
            """,
            'f.yaml:4: group "g": unknown field "intervl" (allowed: name, interval, limit, rules)',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    severity: page
            """,
            'f.yaml:7: group "g", rule "A": unknown field "severity" '
            "(allowed: alert, record, expr, for, keep_firing_for, labels, annotations)",
        ),
        (
            """
            rules: []
            """,
            'f.yaml:2: unknown field "rules" (allowed: groups)',
        ),
        (
            """
            groups:
              - name: g
                query_offset: 1m
                rules: []
            """,
            'f.yaml:4: group "g": field "query_offset" is not supported (Loki does not keep it either)',
        ),
        (
            """
            groups:
              - interval: 1m
                rules: []
            """,
            'f.yaml:3: group 1: field "name" must be set',
        ),
        (
            """
            groups:
              - name: g
                rules: []
              - name: g
                rules: []
            """,
            'f.yaml:5: group "g": group name is repeated in the same file (first at line 3)',
        ),
        (
            """
            groups:
              - name: g
                interval: 1.5m
                rules: []
            """,
            'f.yaml:4: group "g": interval: unknown unit "." in duration "1.5m" '
            "(a Prometheus duration such as 30s, 5m or 1h30m)",
        ),
        (
            """
            groups:
              - name: g
                limit: -1
                rules: []
            """,
            'f.yaml:4: group "g": limit: must be a whole number >= 0 (0: no limit), got -1',
        ),
        (
            """
            groups:
              - name: g
                rules: {alert: A}
            """,
            'f.yaml:4: group "g": rules: must be a list of rules, got a mapping',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    record: a
                    expr: vector(1)
            """,
            'f.yaml:6: group "g", rule "A": only one of "alert" and "record" may be set',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - expr: vector(1)
            """,
            'f.yaml:5: group "g", rule 1: one of "alert" or "record" must be set',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
            """,
            'f.yaml:5: group "g", rule "A": field "expr" must be set',
        ),
        (
            """
            groups:
              - name: ai-errors
                rules:
                  - alert: AIServiceErrors
                    expr: sum(count_over_time({namespace="ai-prod"} [1m]
            """,
            'f.yaml:6: group "ai-errors", rule "AIServiceErrors": expr: '
            "parse error at line 1, col 47: syntax error: unexpected $end",
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: '{namespace="ai-prod"} |= "error"'
            """,
            'f.yaml:6: group "g", rule "A": expr: {namespace="ai-prod"} |= "error" is a log query, '
            "a rule needs a metric query (such as count_over_time(... [5m]))",
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    for: 5
            """,
            'f.yaml:7: group "g", rule "A": for: not a valid duration string: "5" '
            "(a Prometheus duration such as 30s, 5m or 1h30m)",
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - record: job-errors
                    expr: vector(1)
            """,
            'f.yaml:5: group "g", rule "job-errors": record: "job-errors" is not a valid metric name '
            '(letters, digits, "_" and ":", not starting with a digit)',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - record: 'errors{job="x"}'
                    expr: vector(1)
            """,
            'f.yaml:5: group "g", rule "errors{job="x"}": record: "errors{job="x"}" has braces: '
            "a label matcher belongs in expr, not the name",
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - record: r
                    expr: vector(1)
                    for: 1m
            """,
            'f.yaml:7: group "g", rule "r": "for" is not allowed in a recording rule',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - record: r
                    expr: vector(1)
                    annotations: {summary: x}
            """,
            'f.yaml:7: group "g", rule "r": "annotations" is not allowed in a recording rule',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    labels:
                      ok: x
                      bad-name: y
            """,
            'f.yaml:9: group "g", rule "A": labels: "bad-name" is not a valid label name '
            '(letters, digits and "_", not starting with a digit)',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    labels: {__name__: x}
            """,
            'f.yaml:7: group "g", rule "A": labels: "__name__" cannot be set by a rule',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    annotations:
                      1st: x
            """,
            'f.yaml:8: group "g", rule "A": annotations: "1st" is not a valid annotation name '
            '(letters, digits and "_", not starting with a digit)',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    annotations:
                      summary: "{{ $labels.x | nosuch }}"
            """,
            'f.yaml:8: group "g", rule "A": annotation "summary": template does not parse: '
            'function "nosuch" not defined',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    labels:
                      severity: "{{ if }}"
            """,
            'f.yaml:8: group "g", rule "A": label "severity": template does not parse: missing value for command',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    annotations:
                      summary: "{{ humanize }}"
            """,
            'f.yaml:8: group "g", rule "A": annotation "summary": template does not render: '
            "wrong number of args for humanize: got 0",
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    expr: vector(1)
                    labels: [a, b]
            """,
            'f.yaml:7: group "g", rule "A": labels: must be a mapping of names to strings, got a list',
        ),
        (
            """
            groups:
              - name: g
                rules:
                  - alert: A
                    alert: B
                    expr: vector(1)
            """,
            'f.yaml:6: group "g", rule "A": field "alert" is repeated (first at line 5)',
        ),
        (
            "groups:\n  - name: g\n    rules: [\n",
            "f.yaml:4: invalid YAML: expected the node content, but found '<stream end>'",
        ),
        (
            "- a\n- b\n",
            'f.yaml:1: a rule file must be a mapping with a "groups" list, got a list',
        ),
    ],
)
def test_validation_message(text, expected):
    assert errors_of(text, source="f.yaml") == [expected]


def test_every_problem_is_reported_and_messages_name_file_group_and_rule():
    text = """
    groups:
      - name: a
        rules:
          - alert: One
            expr: '{x="y"}'
          - record: two-words
            expr: vector(1)
      - name: b
        rules:
          - alert: Three
            expr: vector(1)
            annotations: {s: "{{ nosuch }}"}
    """
    errors = errors_of(text, source="rules/fake/ns.yaml")
    assert len(errors) == 3
    assert errors[0].startswith('rules/fake/ns.yaml:6: group "a", rule "One": expr: {x="y"} is a log query')
    assert errors[1].startswith('rules/fake/ns.yaml:7: group "a", rule "two-words": record:')
    assert errors[2].startswith('rules/fake/ns.yaml:13: group "b", rule "Three": annotation "s":')
    with pytest.raises(RuleError) as info:
        parse_rule_file(textwrap.dedent(text), source="rules/fake/ns.yaml")
    assert str(info.value) == "\n".join(errors)


def test_without_a_source_messages_give_the_line():
    errors = errors_of("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: nope\n")
    assert errors == [
        'line 5: group "g", rule "A": expr: parse error at line 1, col 1: syntax error: unexpected IDENTIFIER'
    ]


def test_templates_that_need_label_values_are_accepted():
    # The labels are only known at evaluation: a template that needs a numeric label must not be refused.
    text = """
    groups:
      - name: g
        rules:
          - alert: A
            expr: vector(1)
            annotations:
              a: "{{ humanize $labels.bytes }}"
              b: "{{ if eq $labels.severity \\"page\\" }}now{{ else }}later{{ end }}"
              c: "{{ range $k, $v := $labels }}{{ $k }}={{ $v }} {{ end }}"
              d: "{{ $externalLabels.cluster }} {{ $externalURL }} {{ printf \\"%.2f\\" $value }}"
    """
    [group] = parse_rule_file(textwrap.dedent(text))
    assert len(group.rules[0].annotations) == 4


def test_recording_rule_labels_are_not_templates():
    [group] = parse_rule_file("groups: [{name: g, rules: [{record: r, expr: vector(1), labels: {a: '{{ x'}}]}]")
    assert group.rules[0].labels == {"a": "{{ x"}


def test_parse_rule_group_takes_one_group():
    group = parse_rule_group("name: g\ninterval: 30s\nrules:\n- alert: A\n  expr: vector(1)\n")
    assert group.name == "g" and group.interval_s == 30.0 and group.rules[0].name == "A"
    with pytest.raises(RuleError) as info:
        parse_rule_group("name: g\nrules:\n- alert: A\n  expr: '{a=\"b\"}'\n")
    assert str(info.value) == (
        'line 4: group "g", rule "A": expr: {a="b"} is a log query, '
        "a rule needs a metric query (such as count_over_time(... [5m]))"
    )
    with pytest.raises(RuleError, match="the body is empty"):
        parse_rule_group("")
    with pytest.raises(RuleError) as info:
        parse_rule_group("groups: []")
    assert str(info.value) == (
        'the body is one rule group (name, interval, limit, rules), not a rule file with "groups": '
        "send each group on its own"
    )
    with pytest.raises(RuleError) as info:
        parse_rule_group("name: g\nrule: []")
    assert str(info.value) == 'line 2: group "g": unknown field "rule" (allowed: name, interval, limit, rules)'


def test_scalars_are_read_as_go_reads_them_into_strings():
    [group] = parse_rule_file("groups: [{name: 2024, rules: [{alert: A, expr: vector(1), labels: {n: 1, t: true}}]}]")
    assert group.name == "2024"
    assert group.rules[0].labels == {"n": "1", "t": "true"}


# ---- durations ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "formatted"),
    [
        ("0", 0.0, "0s"),
        ("500ms", 0.5, "500ms"),
        ("30s", 30.0, "30s"),
        ("1m", 60.0, "1m"),
        ("90s", 90.0, "1m30s"),
        ("1h30m", 5400.0, "1h30m"),
        ("1d", 86400.0, "1d"),
        ("2w", 14 * 86400.0, "2w"),
        ("1h0m1s500ms", 3601.5, "1h1s500ms"),
    ],
)
def test_durations(text, seconds, formatted):
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == formatted
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.5m", 'unknown unit "." in duration "1.5m"'),
        ("-1m", 'not a valid duration string: "-1m"'),
        ("1x", 'unknown unit "x" in duration "1x"'),
        ("1s1m", 'not a valid duration string: "1s1m"'),
        ("", "empty duration string"),
    ],
)
def test_bad_durations(text, message):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


# ---- templates ------------------------------------------------------------------------------------------------------


def _with(text: str, data: object) -> str:
    """Run a template with Prometheus' functions and `.` bound to `data`, as Prometheus' own tests feed values."""
    return Template(text, funcs=TEMPLATE_FUNCS).render(data, "", 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "data", "output"),
    [
        # Outputs from Prometheus' template tests and documentation.
        ("{{ range . }}{{ humanize . }}:{{ end }}", [0.0, 1.0, 1234567.0, 0.12], "0:1:1.235M:120m:"),
        ("{{ range . }}{{ humanize . }}:{{ end }}", ["0.0", "1.0", "1234567.0", ".12"], "0:1:1.235M:120m:"),
        ("{{ range . }}{{ humanize . }}:{{ end }}", [0, -1, 1, 1234567, 2**63 - 1], "0:-1:1:1.235M:9.223E:"),
        ("{{ range . }}{{ humanize1024 . }}:{{ end }}", [0.0, 1.0, 1048576.0, 0.12], "0:1:1Mi:0.12:"),
        ("{{ range . }}{{ humanize1024 . }}:{{ end }}", [0, -1, 1, 1234567, 2**63 - 1], "0:-1:1:1.177Mi:8Ei:"),
        (
            "{{ range . }}{{ humanizeDuration . }}:{{ end }}",
            [0, 1, 60, 3600, 86400, 86400 + 3600, -(86400 * 2 + 3600 * 3 + 60 * 4 + 5), 899.99],
            "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s:1d 1h 0m 0s:-2d 3h 4m 5s:14m 59s:",
        ),
        (
            "{{ range . }}{{ humanizeDuration . }}:{{ end }}",
            [0.1, 0.0001, 0.12345, 60.1, 60.5, 1.2345, 12.345],
            "100ms:100us:123.5ms:1m 0s:1m 0s:1.234s:12.35s:",
        ),
        (
            "{{ range . }}{{ humanizeDuration . }}:{{ end }}",
            ["0", "1", "60", "3600", "86400"],
            "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s:",
        ),
        (
            "{{ range . }}{{ humanize . }}:{{ humanize1024 . }}:{{ humanizeDuration . }}:"
            "{{ humanizeTimestamp . }}:{{ end }}",
            [math.inf, -math.inf, math.nan],
            "+Inf:+Inf:+Inf:+Inf:-Inf:-Inf:-Inf:-Inf:NaN:NaN:NaN:NaN:",
        ),
        (
            "{{ range . }}{{ humanizePercentage . }}:{{ end }}",
            [-0.22222, 0.0, 0.1234567, 1.23456],
            "-22.22%:0%:12.35%:123.5%:",
        ),
        (
            "{{ range . }}{{ humanizePercentage . }}:{{ end }}",
            [0, -1, 1, 1234567, 2**63 - 1],
            "0%:-100%:100%:1.235e+08%:9.223e+20%:",
        ),
        (
            "{{ range . }}{{ humanizeTimestamp . }}:{{ end }}",
            [0, -1, 1, 1234567, 9223372036],
            "1970-01-01 00:00:00 +0000 UTC:1969-12-31 23:59:59 +0000 UTC:1970-01-01 00:00:01 +0000 UTC:"
            "1970-01-15 06:56:07 +0000 UTC:2262-04-11 23:47:16 +0000 UTC:",
        ),
        ("{{ range . }}{{ humanizeTimestamp . }}{{ end }}", [1435065584.128], "2015-06-23 13:19:44.128 +0000 UTC"),
        ("{{ range . }}{{ humanizeTimestamp . }}{{ end }}", ["1435065584.128"], "2015-06-23 13:19:44.128 +0000 UTC"),
        ('{{ "aa bb CC" | title }}', None, "Aa Bb CC"),
        ('{{ match "a+" "aa" }} {{ match "a+" "b" }}', None, "true false"),
        ('{{ reReplaceAll "(a)b" "x$1" "ab" }}', None, "xa"),
        ('{{ reReplaceAll "(?P<w>o+)" "[${w}]$$" "foo boo" }}', None, "f[oo]$ b[oo]$"),
        ('{{ printf "%0.2f" (parseDuration "1h2m10ms") }}', None, "3720.01"),
        ('{{ printf "%0.2f" (parseDuration "-1h2m10ms") }}', None, "-3720.01"),
        ('{{ "foo.example.com" | stripPort }}', None, "foo.example.com"),
        ('{{ "foo.example.com:12345" | stripPort }}', None, "foo.example.com"),
        ('{{ "192.0.2.1:12345" | stripPort }}', None, "192.0.2.1"),
        ('{{ "2001:0DB8::1" | stripPort }}', None, "2001:0DB8::1"),
        ('{{ "[2001:0DB8::1]:12345" | stripPort }}', None, "2001:0DB8::1"),
        ('{{ "[2001:0DB8::1]::12345" | stripPort }}', None, "[2001:0DB8::1]::12345"),
        ('{{ "foo.example.com" | stripDomain }}', None, "foo"),
        ('{{ "foo.example.com:12345" | stripDomain }}', None, "foo:12345"),
        ('{{ "192.0.2.1:12345" | stripDomain }}', None, "192.0.2.1:12345"),
        ('{{ "[2001:0DB8::1]:12345" | stripDomain }}', None, "[2001:0DB8::1]:12345"),
        ('{{ toUpper "ab" }}{{ toLower "CD" }}{{ safeHtml "<b>" }}', None, "ABcd<b>"),
        ('{{ urlQueryEscape "a b&c/d" }}', None, "a+b%26c%2Fd"),
        ('{{ graphLink "sum(rate({a=\\"b\\"}[1m]))" }}', None, "/?query=sum%28rate%28%7Ba%3D%22b%22%7D%5B1m%5D%29%29"),
        ('{{ with args 1 "x" }}{{ .arg0 }}-{{ .arg1 }}{{ end }}', None, "1-x"),
        ("{{ 90 | toDuration }}", None, "1m30s"),
    ],
)
def test_template_functions_match_prometheus(text, data, output):
    assert _with(text, data) == output


def test_template_function_errors_read_as_in_prometheus():
    with pytest.raises(TemplateError) as info:
        _with('{{ humanize "one" }}', None)
    assert str(info.value) == 'error calling humanize: strconv.ParseFloat: parsing "one": invalid syntax'
    with pytest.raises(TemplateError) as info:
        _with("{{ range . }}{{ humanizeTimestamp . }}{{ end }}", [float(2**64)])
    assert str(info.value) == (
        "error calling humanizeTimestamp: 1.8446744073709552e+19 cannot be represented as a nanoseconds "
        "timestamp since it overflows int64"
    )
    with pytest.raises(TemplateError, match="not available in loglake's alert templates"):
        _with('{{ query "vector(1)" | first | value }}', None)


def test_alert_template_data():
    # `now` is a float64, which Go prints with %v: 1.7000000005e+09.
    text = (
        "{{ $labels.service }}|{{ .Labels.service }}|{{ $labels.missing }}|{{ $value }}|{{ .Value }}|"
        "{{ $externalLabels.cluster }}|{{ $externalURL }}|{{ externalURL }}|{{ pathPrefix }}|{{ now }}"
    )
    out = render_template(
        text,
        {"service": "chat"},
        6.0,
        external_labels={"cluster": "eu-1"},
        external_url="http://logs.example.com/loglake",
        at=1700000000.5,
        name="A",
    )
    assert (
        out
        == "chat|chat||6|6|eu-1|http://logs.example.com/loglake|http://logs.example.com/loglake|/loglake|1.7000000005e+09"
    )


def test_values_print_as_go_prints_float64():
    assert render_template("{{ $value }}", {}, 0.1 + 0.2) == "0.30000000000000004"
    assert render_template("{{ $value }}", {}, 1e21) == "1e+21"
    assert render_template('{{ printf "%.1f" $value }}', {}, 5.25) == "5.2"


def test_render_failures_show_in_the_text_as_in_prometheus():
    assert render_template("{{ humanize $labels.x }}", {"x": "abc"}, 1.0, name="HighErrors") == (
        "<error expanding template: error executing template __alert_HighErrors: error calling humanize: "
        'strconv.ParseFloat: parsing "abc": invalid syntax>'
    )
    assert render_template("{{ nosuch }}", {}, 1.0, name="A") == (
        '<error expanding template: error parsing template __alert_A: function "nosuch" not defined>'
    )
    assert render_template("plain text", {}, 1.0) == "plain text"


# ---- round trip -----------------------------------------------------------------------------------------------------


def test_group_to_dict_uses_lokis_keys_order_and_durations():
    group = RuleGroup(
        name="g",
        interval_s=90.0,
        limit=3,
        rules=(
            Rule(
                kind="alert",
                name="A",
                expr="vector(1)",
                for_s=300.0,
                keep_firing_for_s=0.5,
                labels={"s": "x"},
                annotations={"d": "line one\nline two\n"},
            ),
            Rule(kind="record", name="r:x", expr="vector(2)"),
        ),
    )
    data = group_to_dict(group)
    assert data == {
        "name": "g",
        "interval": "1m30s",
        "limit": 3,
        "rules": [
            {
                "alert": "A",
                "expr": "vector(1)",
                "for": "5m",
                "keep_firing_for": "500ms",
                "labels": {"s": "x"},
                "annotations": {"d": "line one\nline two\n"},
            },
            {"record": "r:x", "expr": "vector(2)"},
        ],
    }
    assert list(data["rules"][0]) == ["alert", "expr", "for", "keep_firing_for", "labels", "annotations"]
    text = format_rule_file([group])
    assert "d: |\n" in text  # multi-line text stays readable
    assert parse_rule_file(text) == [group]
    assert parse_rule_group(yaml.safe_dump(data)) == group


_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20).filter(
    lambda s: "{{" not in s
)
_seconds = st.integers(min_value=0, max_value=10**9).map(lambda ms: ms / 1000)
_exprs = st.sampled_from(["vector(1)", SEED_EXPR, 'sum by (job) (rate({job="a"} |= "x" [5m]))', "1 + 1"])


@st.composite
def _rules(draw: st.DrawFn) -> Rule:
    kind = draw(st.sampled_from(["alert", "record"]))
    if kind == "record":
        return Rule(
            kind="record",
            name=draw(st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,10}", fullmatch=True)),
            expr=draw(_exprs),
            labels=draw(st.dictionaries(_names.filter(lambda n: n != "__name__"), _texts, max_size=3)),
        )
    return Rule(
        kind="alert",
        name=draw(_texts.filter(lambda s: s.strip() != "")),
        expr=draw(_exprs),
        for_s=draw(_seconds),
        keep_firing_for_s=draw(_seconds),
        labels=draw(st.dictionaries(_names.filter(lambda n: n != "__name__"), _texts, max_size=3)),
        annotations=draw(st.dictionaries(_names, _texts, max_size=3)),
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.builds(
            RuleGroup,
            name=_texts.filter(lambda s: s != ""),
            rules=st.lists(_rules(), max_size=4).map(tuple),
            interval_s=st.one_of(st.none(), _seconds.filter(lambda s: s > 0)),
            limit=st.integers(min_value=0, max_value=1000),
        ),
        max_size=3,
        unique_by=lambda g: g.name,
    )
)
def test_round_trip_through_yaml(groups):
    assert parse_rule_file(format_rule_file(groups)) == groups
