"""Prometheus relabeling as Promtail applies it to discovered targets, and the RE2 regexes it uses."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loglake.agent.relabel import (
    PatternError,
    RelabelError,
    RelabelRule,
    compile_re2,
    expand_template,
    parse_relabel_configs,
    relabel,
)


def rules(*raw: dict) -> list[RelabelRule]:
    return parse_relabel_configs(list(raw), "relabel_configs")


def hashmod_by_definition(value: str, modulus: int) -> int:
    """Prometheus' hashmod: md5 of the joined value, its last 8 bytes as a big-endian uint64, modulo modulus."""
    digest = hashlib.md5(value.encode()).digest()
    number = 0
    for byte in digest[8:]:
        number = number * 256 + byte
    return number % modulus


# ---- parsing and defaults -------------------------------------------------------------------------------------


def test_a_rule_without_settings_gets_prometheus_defaults():
    (rule,) = rules({"target_label": "x"})
    assert rule.action == "replace"
    assert rule.separator == ";"
    assert rule.regex == "(.*)"
    assert rule.replacement == "$1"
    assert rule.source_labels == ()
    assert rule.modulus == 0


def test_action_names_are_case_insensitive():
    (rule,) = rules({"action": "LabelMap", "regex": "a"})
    assert rule.action == "labelmap"


def test_null_values_keep_the_defaults_as_go_yaml_does():
    (rule,) = rules({"source_labels": ["a"], "target_label": "b", "regex": None, "separator": None, "action": None})
    assert (rule.action, rule.regex, rule.separator) == ("replace", "(.*)", ";")


def test_no_rules_and_null_give_an_empty_list():
    assert parse_relabel_configs(None, "x") == []
    assert parse_relabel_configs([], "x") == []


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"action": "rename"}, "action", "unknown relabel action 'rename'"),
        ({"action": ""}, "action", "relabel action cannot be empty"),
        ({"action": "hashmod", "source_labels": ["a"], "target_label": "b"}, "modulus", "requires non-zero modulus"),
        ({"source_labels": ["a"]}, "target_label", "requires 'target_label'"),
        ({"action": "uppercase", "source_labels": ["a"]}, "target_label", "requires 'target_label'"),
        ({"action": "lowercase", "target_label": "a", "replacement": "x"}, "replacement", "can not be set"),
        ({"action": "labelmap", "replacement": ""}, "replacement", "invalid 'replacement'"),
        ({"action": "labeldrop", "regex": "a", "source_labels": ["x"]}, "source_labels", "requires only 'regex'"),
        ({"action": "labelkeep", "regex": "a", "target_label": "x"}, "target_label", "requires only 'regex'"),
        ({"action": "keepequal", "target_label": "x", "regex": "(.*)"}, "regex", "requires only 'source_labels'"),
        ({"action": "dropequal", "target_label": "x", "separator": ","}, "separator", "requires only"),
        ({"regex": "(a", "target_label": "x"}, "regex", "missing closing )"),
        ({"regex": "(?=a)", "target_label": "x"}, "regex", "invalid or unsupported Perl syntax"),
        ({"action": "hashmod", "target_label": "x", "modulus": -1}, "modulus", "unsigned 64-bit"),
        ({"source_labels": "a", "target_label": "x"}, "source_labels", "expected a list"),
        ({"source_labels": ["a", ""], "target_label": "x"}, "source_labels", "must not be empty"),
    ],
)
def test_invalid_rules_are_rejected_naming_their_index_and_key(raw, key, problem):
    with pytest.raises(RelabelError) as info:
        parse_relabel_configs([{"target_label": "ok"}, raw], "scrape_configs[0].relabel_configs")
    err = info.value
    assert (err.index, err.key) == (1, key)
    assert str(err).startswith(f"scrape_configs[0].relabel_configs[1].{key}: ")
    assert problem in str(err)


def test_an_unknown_key_is_rejected():
    with pytest.raises(RelabelError, match=r"x\[0\]: unknown key 'target'"):
        parse_relabel_configs([{"target": "a"}], "x")


def test_string_values_from_yaml_text_are_accepted_for_modulus():
    (rule,) = rules({"action": "hashmod", "source_labels": ["a"], "target_label": "s", "modulus": "8"})
    assert rule.modulus == 8


# ---- actions --------------------------------------------------------------------------------------------------


def test_replace_joins_source_labels_and_expands_groups():
    # The shape of Prometheus' documented example: two sources, separator, groups swapped into the target.
    out = relabel(
        {"__meta_a": "foo", "__meta_b": "bar"},
        rules(
            {
                "source_labels": ["__meta_a", "__meta_b"],
                "separator": ";",
                "regex": "(.*);(.*)",
                "target_label": "joined",
                "replacement": "${2}-${1}",
            }
        ),
    )
    assert out is not None
    assert out["joined"] == "bar-foo"


def test_replace_default_copies_a_label():
    out = relabel(
        {"__meta_kubernetes_namespace": "prod"},
        rules({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
    )
    assert out == {"__meta_kubernetes_namespace": "prod", "namespace": "prod"}


def test_replace_regex_is_anchored_and_no_match_changes_nothing():
    labels = {"a": "xfoo", "t": "keep"}
    out = relabel(labels, rules({"source_labels": ["a"], "regex": "foo", "target_label": "t", "replacement": "new"}))
    assert out == labels


def test_replace_with_an_empty_result_removes_the_target():
    out = relabel({"t": "old"}, rules({"source_labels": ["missing"], "target_label": "t"}))
    assert out == {}


def test_replace_target_label_may_use_groups():
    out = relabel(
        {"__meta_tag": "env=prod"},
        rules({"source_labels": ["__meta_tag"], "regex": "(\\w+)=(\\w+)", "target_label": "${1}", "replacement": "$2"}),
    )
    assert out is not None
    assert out["env"] == "prod"


def test_replace_whose_target_expands_to_nothing_is_skipped():
    out = relabel(
        {"a": "x"}, rules({"source_labels": ["a"], "regex": "(x)(y?)", "target_label": "$2", "replacement": "v"})
    )
    assert out == {"a": "x"}


def test_replace_regex_dot_matches_newlines_as_prometheus_wraps_it_in_s_mode():
    out = relabel({"a": "one\ntwo"}, rules({"source_labels": ["a"], "regex": "one.(.*)", "target_label": "b"}))
    assert out is not None
    assert out["b"] == "two"


def test_keep_drops_targets_that_do_not_match():
    keep = rules(
        {"source_labels": ["__meta_kubernetes_pod_annotation_logging_enabled"], "action": "keep", "regex": "true"}
    )
    assert relabel({"__meta_kubernetes_pod_annotation_logging_enabled": "true"}, keep) is not None
    assert relabel({"__meta_kubernetes_pod_annotation_logging_enabled": "truex"}, keep) is None
    assert relabel({}, keep) is None


def test_drop_drops_targets_that_match():
    drop = rules({"source_labels": ["namespace"], "action": "drop", "regex": "kube-.*"})
    assert relabel({"namespace": "kube-system"}, drop) is None
    assert relabel({"namespace": "default"}, drop) == {"namespace": "default"}


def test_keepequal_and_dropequal_compare_the_joined_sources_with_the_target():
    keepeq = rules({"action": "keepequal", "source_labels": ["a", "b"], "target_label": "c"})
    assert relabel({"a": "1", "b": "2", "c": "1;2"}, keepeq) is not None
    assert relabel({"a": "1", "b": "2", "c": "1"}, keepeq) is None
    dropeq = rules({"action": "dropequal", "source_labels": ["a"], "target_label": "c"})
    assert relabel({"a": "1", "c": "1"}, dropeq) is None
    assert relabel({"a": "1", "c": "2"}, dropeq) is not None


def test_labelmap_copies_kubernetes_pod_labels():
    labels = {
        "__meta_kubernetes_pod_label_app": "web",
        "__meta_kubernetes_pod_label_app_kubernetes_io_version": "1.2",
        "__meta_kubernetes_pod_name": "web-1",
    }
    out = relabel(labels, rules({"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"}))
    assert out == {**labels, "app": "web", "app_kubernetes_io_version": "1.2"}


def test_labelmap_replacement_template():
    rule = {"action": "labelmap", "regex": "__meta_(x)_(.+)", "replacement": "${1}_${2}_y"}
    out = relabel({"__meta_x_a": "1"}, rules(rule))
    assert out is not None
    assert out["x_a_y"] == "1"
    # Without braces Go reads `$2_y` as the group named "2_y", which does not exist.
    out = relabel({"__meta_x_a": "1"}, rules({**rule, "replacement": "${1}_$2_y"}))
    assert out is not None
    assert out["x_"] == "1"


def test_labelmap_collisions_resolve_in_prometheus_order():
    # Base labels are visited sorted by name, so the later name's value wins.
    out = relabel({"__b_x": "from-b", "__a_x": "from-a"}, rules({"action": "labelmap", "regex": "__[ab]_(.+)"}))
    assert out is not None
    assert out["x"] == "from-b"


def test_labeldrop_and_labelkeep_match_names_fully():
    labels = {"job": "j", "job_id": "1", "instance": "i"}
    assert relabel(labels, rules({"action": "labeldrop", "regex": "job"})) == {"job_id": "1", "instance": "i"}
    assert relabel(labels, rules({"action": "labelkeep", "regex": "job.*"})) == {"job": "j", "job_id": "1"}


def test_lowercase_and_uppercase_map_each_character_like_go():
    out = relabel(
        {"a": "ΟΔΟΣ Straße", "b": "MiXeD"},
        rules(
            {"action": "lowercase", "source_labels": ["a"], "target_label": "lower"},
            {"action": "uppercase", "source_labels": ["a", "b"], "separator": "/", "target_label": "upper"},
        ),
    )
    assert out is not None
    assert out["lower"] == "οδοσ straße"  # no final-sigma rule: Go maps each rune on its own
    assert out["upper"] == "ΟΔΟΣ STRAßE/MIXED"  # Go has no single-rune upper case for ß


def test_hashmod_is_md5_last_eight_bytes_big_endian_modulo():
    rule = rules({"action": "hashmod", "source_labels": ["a", "b"], "target_label": "shard", "modulus": 1000003})
    for a, b in [("", ""), ("web", "1"), ("ü", "x/y")]:
        out = relabel({"a": a, "b": b}, rule)
        assert out is not None
        assert out["shard"] == str(hashmod_by_definition(f"{a};{b}", 1000003))


def test_hashmod_known_answer_from_go():
    # Computed with Go's crypto/md5 and encoding/binary, as Prometheus does.
    rule = rules({"action": "hashmod", "source_labels": ["v"], "target_label": "s", "modulus": 1000003})
    assert relabel({"v": "abc"}, rule) == {"v": "abc", "s": "136349"}
    assert relabel({"v": "namespace/pod"}, rule) == {"v": "namespace/pod", "s": "432295"}


def test_a_drop_stops_processing_and_returns_none():
    out = relabel({"a": "1"}, rules({"action": "drop", "source_labels": ["a"], "regex": "1"}, {"target_label": "x"}))
    assert out is None


def test_double_underscore_labels_are_kept_and_empty_values_removed():
    out = relabel({"__path__": "/var/log/*.log", "empty": "", "job": "x"}, [])
    assert out == {"__path__": "/var/log/*.log", "job": "x"}


def test_rules_apply_in_order_and_see_earlier_results():
    out = relabel(
        {"__meta_kubernetes_pod_uid": "uid-1", "__meta_kubernetes_pod_container_name": "app"},
        rules(
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {
                "source_labels": ["__meta_kubernetes_pod_uid", "container"],
                "separator": "/",
                "target_label": "__path__",
                "replacement": "/var/log/pods/*$1/*.log",
            },
        ),
    )
    assert out is not None
    assert out["__path__"] == "/var/log/pods/*uid-1/app/*.log"


# ---- templates ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$1", "ab"),
        ("${1}x", "abx"),
        ("$1x", ""),  # Go reads the name "1x", which is no group
        ("$name-$2", "ab-c"),
        ("${name}", "ab"),
        ("$$1", "$1"),
        ("$9", ""),
        ("${1", "${1"),  # malformed: the `$` stays text
        ("a$", "a$"),
        ("$01", ""),  # leading zeros are not numbers
        ("$0", "abc"),
    ],
)
def test_templates_expand_as_go_regexp_expand(template, expected):
    compiled = compile_re2("(?P<name>a.)(c)")
    match = compiled.pattern.search("abc")
    assert match is not None
    assert expand_template(template, match, compiled.names) == expected


def test_repeated_group_names_expand_the_first_that_matched():
    compiled = compile_re2("(?P<n>x)?(?P<n>y)")
    match = compiled.pattern.search("y")
    assert match is not None
    assert expand_template("[$n]", match, compiled.names) == "[y]"


# ---- RE2 semantics --------------------------------------------------------------------------------------------

# Each case was checked against Go's regexp with Prometheus' `^(?s:` ... `)$` wrapping.
RE2_CASES = [
    (r"\d+", "123", True),
    (r"\d+", "\u0661\u0662", False),  # \d is ASCII in RE2
    (r"\w+", "h\u00e9llo", False),
    (r"\s", "\u00a0", False),
    (r"a.c", "a\nc", True),
    (r"(?-s)a.c", "a\nc", False),
    (r"abc$", "abc\n", False),  # $ is the end of text, not before a final newline
    (r"(?m)a$\nb", "a\nb", True),
    (r"foo(?i)bar", "fooBAR", True),
    (r"foo(?i)bar", "FOObar", False),
    (r"(?i:K)", "\u212a", True),  # Kelvin sign folds to k
    (r"(?i)\W", "\u212a", False),  # ... so it is a word character under (?i)
    (r"\bfoo\b", "foo", True),
    ("\u00e9\\b", "\u00e9", False),  # \b is ASCII
    (r"\Qa.b\E", "axb", False),
    (r"\pL+", "h\u00e9llo", True),
    (r"\pL+", "h3", False),
    (r"[[:alpha:]]+", "ab1", False),
    (r"x{,2}", "x{,2}", True),  # not a repeat in Go: literal text
    (r"(?U)(a+)(a*)", "aaa", True),
    (r"a)|(b", "axyz", True),  # the user's `)` closes Prometheus' wrapper
    (r"\x41\x{42}\103", "ABC", True),
    (r"(?P<n>a)(?P<n>b)", "ab", True),
    (r"[^\n]+", "a\nb", False),
    (r"[\D]", "5", False),
    (r"(a|ab)(c|bcd)(d*)", "abcd", True),
]


@pytest.mark.parametrize(("pattern", "text", "matches"), RE2_CASES)
def test_re2_patterns_match_as_in_go(pattern, text, matches):
    assert (compile_re2(pattern).pattern.search(text) is not None) is matches


def test_submatches_are_leftmost_first_like_go():
    match = compile_re2(r"(a|ab)(c|bcd)(d*)").pattern.search("abcd")
    assert match is not None
    assert match.groups() == ("a", "bcd", "")


def test_ungreedy_flag_swaps_greediness():
    match = compile_re2(r"(?U)(a+)(a*)").pattern.search("aaa")
    assert match is not None
    assert match.groups() == ("a", "aa")


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(a)\1", "invalid escape sequence: `\\1`"),
        (r"(?=a)", "invalid or unsupported Perl syntax: `(?=`"),
        (r"a*+", "invalid nested repetition operator: `*+`"),
        (r"a**", "invalid nested repetition operator: `**`"),
        (r"\Z", "invalid escape sequence: `\\Z`"),
        (r"a{1001}", "invalid repeat count: `{1001}`"),
        (r"[z-a]", "invalid character class range: `z-a`"),
        (r"*a", "missing argument to repetition operator: `*`"),
        (r"(?P<1-x>a)", "invalid named capture"),
        (r"\p{Greek}", "not scripts"),
    ],
)
def test_patterns_go_rejects_are_rejected(pattern, problem):
    with pytest.raises(PatternError) as info:
        compile_re2(pattern)
    assert problem in str(info.value)


def test_repeat_after_a_flag_group_applies_to_the_previous_repeat_as_in_go():
    compiled = compile_re2(r"a{2}(?i){2}")
    assert compiled.pattern.search("aaaa") is not None
    assert compiled.pattern.search("aaa") is None


def test_replace_all_skips_an_empty_match_right_after_a_match_as_go_does():
    # Go: "-b-c-"; Python's re.sub would give "-b--c-".
    assert compile_re2("a*", anchored=False).replace_all("baaac", "-") == "-b-c-"


# ---- properties -----------------------------------------------------------------------------------------------

_RE2_SPECIAL = set("\\.+*?()|[]{}^$")
label_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
label_sets = st.dictionaries(label_names, st.text(max_size=12), max_size=8)


def go_quote(text: str) -> str:
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in text)


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20))
def test_a_quoted_literal_matches_exactly_itself(text):
    compiled = compile_re2(go_quote(text))
    assert compiled.pattern.search(text) is not None
    assert compiled.pattern.search(text + "x") is None
    assert compiled.pattern.search("x" + text) is None


@given(label_sets)
def test_no_rules_keep_every_nonempty_label(labels):
    assert relabel(labels, []) == {k: v for k, v in sorted(labels.items()) if v}


@given(label_sets)
def test_labelmap_identity_changes_nothing(labels):
    assert relabel(labels, rules({"action": "labelmap", "regex": "(.*)"})) == relabel(labels, [])


@given(st.text(max_size=30), st.integers(min_value=1, max_value=2**64 - 1))
def test_hashmod_is_always_within_the_modulus(value, modulus):
    out = relabel(
        {"v": value}, rules({"action": "hashmod", "source_labels": ["v"], "target_label": "s", "modulus": modulus})
    )
    assert out is not None
    assert int(out["s"]) == hashmod_by_definition(value, modulus)
    assert 0 <= int(out["s"]) < modulus
