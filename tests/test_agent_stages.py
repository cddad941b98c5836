"""Promtail's pipeline stages as the agent runs them: each test states one documented behaviour."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from loglake.agent.entry import Entry
from loglake.agent.re2 import PatternError, compile_re2
from loglake.agent.stages import (
    LimitStage,
    SamplingStage,
    StageConfigError,
    build_pipeline,
    go_string,
)
from loglake.agent.stages_metrics import dropped_entries_counter
from loglake.agent.stages_selector import SelectorError, parse_selector
from loglake.agent.stages_time import make_time_parser, parse_byte_size, parse_go_duration

NS = 1_000_000_000
NOW = 1_700_000_000 * NS  # 2023-11-14T22:13:20Z


def run(stages: list[dict], *entries: Entry, now: int = NOW, registry: CollectorRegistry | None = None) -> list[Entry]:
    pipeline = build_pipeline(stages, registry or CollectorRegistry(), "job")
    return pipeline.process(list(entries), now)


def entry(line: str, labels: dict[str, str] | None = None, ts: int = 0, **kw: object) -> Entry:
    return Entry(labels=dict(labels or {}), line=line, ts_ns=ts, **kw)  # type: ignore[arg-type]


def utc_ns(*args: int, tz: dt.tzinfo = dt.UTC) -> int:
    return int(dt.datetime(*args, tzinfo=tz).timestamp()) * NS  # type: ignore[misc]


REG = CollectorRegistry


def dropped(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("loglake_agent_dropped_entries_total", {"reason": reason}) or 0.0


# ---- the seeds pipeline -----------------------------------------------------------------------------------------


def test_seeds_pipeline_level_becomes_label_trace_id_stays_extracted_then_becomes_metadata():
    stages = [
        {"json": {"expressions": {"level": "level", "trace_id": "trace_id"}}},
        {"labels": {"level": ""}},
    ]
    line = '{"level":"warn","trace_id":"4bf92f3577b34da6","msg":"slow"}'
    (out,) = run(stages, entry(line, {"job": "api"}))
    assert out.labels == {"job": "api", "level": "warn"}
    assert out.extracted["trace_id"] == "4bf92f3577b34da6"
    assert out.metadata == {}
    assert out.line == line

    (out,) = run([*stages, {"structured_metadata": {"trace_id": ""}}], entry(line, {"job": "api"}))
    assert out.labels == {"job": "api", "level": "warn"}
    assert out.metadata == {"trace_id": "4bf92f3577b34da6"}


def test_extracted_map_starts_with_the_labels_and_source_labels_are_not_shared():
    shared = {"job": "api"}
    a, b = Entry(shared, "x", 0), Entry(shared, "y", 0)
    out = run([{"static_labels": {"env": "prod"}}], a, b)
    assert [e.labels for e in out] == [{"job": "api", "env": "prod"}] * 2
    assert shared == {"job": "api"}
    assert out[0].extracted == {"job": "api"}


def test_structured_metadata_moves_a_label_into_metadata():
    (out,) = run([{"structured_metadata": {"pod": ""}}], entry("x", {"job": "a", "pod": "p-1"}))
    assert out.labels == {"job": "a"}
    assert out.metadata == {"pod": "p-1"}


# ---- parsing stages ----------------------------------------------------------------------------------------------


def test_json_paths_quoted_keys_indexes_and_types():
    line = json.dumps(
        {
            "grpc.stream": "stderr",
            "user": {"name": "marco", "ids": [7, 8]},
            "n": 200,
            "f": 0.5,
            "ok": True,
            "tags": {"b": 1, "a": "<x>"},
        }
    )
    stages = [
        {
            "json": {
                "expressions": {
                    "stream": '"grpc.stream"',
                    "name": "user.name",
                    "second": "user.ids[1]",
                    "last": "user.ids[-1]",
                    "n": "",
                    "f": "",
                    "ok": "",
                    "tags": "",
                    "missing": "nope.deeper",
                }
            }
        }
    ]
    (out,) = run(stages, entry(line))
    ex = out.extracted
    assert ex["stream"] == "stderr"
    assert ex["name"] == "marco"
    assert ex["second"] == 8.0 and ex["last"] == 8.0
    assert ex["n"] == 200.0 and go_string(ex["n"]) == "200"  # JSON numbers are float64 in Promtail
    assert go_string(ex["f"]) == "0.5"
    assert ex["ok"] is True and go_string(ex["ok"]) == "true"
    assert ex["tags"] == '{"a":"\\u003cx\\u003e","b":1}'  # Go's json.Marshal: sorted keys, HTML escaped
    assert "missing" in ex and ex["missing"] is None


def test_json_source_parses_an_extracted_value():
    line = '{"log":"log message\\n","extra":"{\\"user\\":\\"marco\\"}"}'
    stages = [
        {"json": {"expressions": {"output": "log", "extra": None}}},
        {"json": {"expressions": {"user": None}, "source": "extra"}},
    ]
    (out,) = run(stages, entry(line))
    assert out.extracted["output"] == "log message\n"
    assert out.extracted["user"] == "marco"


def test_json_drop_malformed_drops_only_when_asked():
    lines = [entry("not json"), entry('{"a":1}'), entry("[1,2]")]
    assert len(run([{"json": {"expressions": {"a": ""}}}], *lines)) == 3
    kept = run([{"json": {"expressions": {"a": ""}, "drop_malformed": True}}], *lines)
    assert [e.line for e in kept] == ['{"a":1}']


def test_json_rejects_jmespath_beyond_the_supported_subset():
    with pytest.raises(StageConfigError, match=r"stage 0 \(json\): key 'expressions'.*JMES"):
        build_pipeline([{"json": {"expressions": {"x": "items[*].name"}}}], CollectorRegistry())


def test_logfmt_mapping_and_source():
    stages = [
        {"logfmt": {"mapping": {"lvl": "level", "msg": None, "dur": "duration"}}},
        {"regex": {"expression": r"^(?P<inner>.*)$", "source": "msg"}},
    ]
    (out,) = run(stages, entry('ts=1 level=info msg="hello world" duration=1.5s'))
    assert out.extracted["lvl"] == "info"
    assert out.extracted["msg"] == "hello world"
    assert out.extracted["dur"] == "1.5s"
    assert out.extracted["inner"] == "hello world"
    assert "ts" not in out.extracted

    (out,) = run([{"logfmt": {"mapping": {"user": ""}, "source": "payload"}}], entry("x", {"payload": "user=bob"}))
    assert out.extracted["user"] == "bob"


def test_logfmt_stops_at_a_syntax_error_keeping_earlier_keys():
    stages = [{"logfmt": {"mapping": {"a": "", "b": "", "c": ""}}}]
    (out,) = run(stages, entry('a=1 b="unterminated c=3'))
    assert out.extracted.get("a") == "1" and "b" not in out.extracted and "c" not in out.extracted


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=12),
        min_size=1,
        max_size=6,
    )
)
@settings(max_examples=60, deadline=None)
def test_logfmt_reads_back_what_a_logfmt_encoder_writes(pairs):
    def encode(value: str) -> str:
        if value and not any(c in value for c in ' ="\\') and all(c > " " for c in value):
            return value
        return json.dumps(value, ensure_ascii=False)

    line = " ".join(f"{k}={encode(v)}" for k, v in pairs.items())
    (out,) = run([{"logfmt": {"mapping": {k: "" for k in pairs}}}], entry(line))
    assert {k: out.extracted[k] for k in pairs} == pairs


def test_regex_named_groups_source_and_go_semantics():
    stages = [
        {"regex": {"expression": r"^(?P<ip>\S+) (?P<identd>\S+) (?P<user>\S+)(?: (?P<opt>x))?"}},
        {"regex": {"expression": r"^(?P<first>\d+)\.", "source": "ip"}},
    ]
    (out,) = run(stages, entry('11.11.11.11 - frank [25/Jan/2000:14:00:01 -0500] "GET /1986.js HTTP/1.1" 200 932'))
    assert out.extracted["ip"] == "11.11.11.11"
    assert out.extracted["user"] == "frank"
    assert out.extracted["opt"] == ""  # Go reports an unmatched group as the empty string
    assert out.extracted["first"] == "11"


def test_regex_rejects_look_around_naming_the_stage_and_key():
    with pytest.raises(StageConfigError) as err:
        build_pipeline([{"labels": {"a": ""}}, {"regex": {"expression": r"foo(?=bar)"}}], CollectorRegistry())
    message = str(err.value)
    assert "stage 1 (regex)" in message and "'expression'" in message and "(?=" in message


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"a(?i)b|c", "C", True),  # a flag lasts to the end of the group, across alternatives
        (r"^(?:a(?i)b|c)$", "ac", False),
        (r"foo$", "foo\n", False),  # RE2's $ is the end of the text
        (r"(?m)foo$", "foo\nbar", True),
        (r"\d+", "٣", False),  # RE2's \d is ASCII
        (r"[[:upper:]]{2}\z", "xAB", True),
        (r"\Qa.b\E", "a.b", True),
        (r"\Qa.b\E", "axb", False),
        (r"(?<year>\d{4})", "in 2024", True),
    ],
)
def test_re2_translation_keeps_re2_meaning(pattern, text, expected):
    assert (compile_re2(pattern, anchored=False).pattern.search(text) is not None) is expected


@pytest.mark.parametrize("pattern", [r"(?<=a)b", r"(?!a)", r"(a)\1", r"(?>a)", r"a*+", r"[a"])
def test_re2_translation_rejects_what_re2_lacks(pattern):
    with pytest.raises(PatternError):
        compile_re2(pattern, anchored=False)


def test_re2_ungreedy_flag_and_repeated_group_names_mean_what_they_mean_in_go():
    assert compile_re2(r"(?U)a+", anchored=False).pattern.search("aaa").group(0) == "a"
    stages = [{"regex": {"expression": r"(?P<x>a)|(?P<x>b)"}}]
    (out,) = run(stages, entry("b"))
    assert out.extracted["x"] == "b", "of groups sharing a name, the last one is set"


# ---- template and replace ------------------------------------------------------------------------------------


def test_template_functions_value_and_entry():
    stages = [
        {"regex": {"expression": r"app=(?P<app>\S+) user=(?P<user>\S+)"}},
        {"template": {"source": "app", "template": "{{ ToLower .Value }}_{{ ToUpper .user }}"}},
        {"template": {"source": "hash", "template": '{{ Hash "salt" .user }}'}},
        {"template": {"source": "sha2", "template": '{{ .user | Sha2Hash "salt" }}'}},
        {"template": {"source": "line", "template": '{{ regexReplaceAll "user=(\\\\w+)" .Entry "u=${1}" }}'}},
        {"template": {"source": "trimmed", "template": '{{ Replace (TrimSpace (TrimPrefix .Value "x")) "a" "o" -1 }}'}},
        {"template": {"source": "new_key", "template": "hello world!"}},
    ]
    (out,) = run(stages, entry("app=LOKI user=bob", {"trimmed": "x  banana "}))
    ex = out.extracted
    assert ex["app"] == "loki_BOB"
    assert ex["hash"] == hashlib.sha3_256(b"saltbob").hexdigest()
    assert ex["sha2"] == hashlib.sha256(b"saltbob").hexdigest()
    assert ex["line"] == "app=LOKI u=bob"
    assert ex["trimmed"] == "bonono"
    assert ex["new_key"] == "hello world!"


def test_template_that_renders_empty_removes_the_key():
    (out,) = run([{"template": {"source": "level", "template": ""}}], entry("x", {"level": "info"}))
    assert "level" not in out.extracted


def test_replace_redacts_an_email_address():
    stages = [{"replace": {"expression": r"([\w\.=-]+@[\w\.-]+\.[\w]{2,64})", "replace": "***"}}]
    (out,) = run(stages, entry("login ok for jane.doe@example.com from 10.0.0.1"))
    assert out.line == "login ok for *** from 10.0.0.1"


def test_replace_hashes_with_a_template_and_redacts_passwords():
    stages = [
        {"replace": {"expression": r"([\w\.=-]+@[\w\.-]+\.[\w]{2,64})", "replace": '*email*{{ .Value | Hash "s" }}*'}},
        {"replace": {"expression": r"password (\S+)", "replace": "****"}},
    ]
    (out,) = run(stages, entry("user a@b.io password hunter2!"))
    digest = hashlib.sha3_256(b"sa@b.io").hexdigest()
    assert out.line == f"user *email*{digest}* password ****"


def test_replace_named_groups_are_extracted_with_their_replacement():
    expression = r'^(?P<ip>\S+) (?P<identd>\S+) (\S+) \[(?P<timestamp>[\w:/]+\s[+\-]\d{4})\] "(?P<action>\S+)'
    stages = [{"replace": {"expression": expression, "replace": "{{ .Value | ToUpper }}"}}]
    (out,) = run(stages, entry('11.11.11.11 - frank [25/Jan/2000:14:00:01 -0500] "get /1986.js HTTP/1.1" 200'))
    assert out.line == '11.11.11.11 - FRANK [25/JAN/2000:14:00:01 -0500] "GET /1986.js HTTP/1.1" 200'
    assert out.extracted["action"] == "GET"
    assert out.extracted["timestamp"] == "25/JAN/2000:14:00:01 -0500"
    assert "user" not in out.extracted


def test_replace_with_source_and_empty_replace():
    stages = [
        {"json": {"expressions": {"msg": ""}}},
        {"replace": {"expression": r'"POST (\S+) ', "source": "msg", "replace": "/loki/api/v1/push"}},
        {"replace": {"expression": r"11.11.11.11 - (\S+\s)", "replace": ""}},
    ]
    line = json.dumps({"msg": '11.11.11.11 - "POST /loki/api/push/ HTTP/1.1" 200'})
    (out,) = run(stages[:2], entry(line))
    assert out.extracted["msg"] == '11.11.11.11 - "POST /loki/api/v1/push HTTP/1.1" 200'
    assert out.line == line

    (out,) = run(stages[2:], entry('11.11.11.11 - frank [25/Jan/2000:14:00:01 -0500] "GET"'))
    assert out.line == '11.11.11.11 - [25/Jan/2000:14:00:01 -0500] "GET"'


# ---- labels ---------------------------------------------------------------------------------------------------


def test_labels_static_labels_labeldrop_labelallow_output():
    stages = [
        {"regex": {"expression": r"level=(?P<lvl>\w+) msg=(?P<msg>.*)"}},
        {"labels": {"level": "lvl", "missing": ""}},
        {"static_labels": {"env": "prod", "team": None}},
        {"labeldrop": ["filename"]},
        {"output": {"source": "msg"}},
    ]
    (out,) = run(stages, entry("level=error msg=disk full", {"job": "a", "filename": "/x"}))
    assert out.labels == {"job": "a", "level": "error", "env": "prod"}
    assert out.line == "disk full"

    (out,) = run([{"labelallow": ["job", "level"]}], entry("x", {"job": "a", "level": "b", "pod": "c"}))
    assert out.labels == {"job": "a", "level": "b"}


def test_labels_reject_invalid_label_names():
    with pytest.raises(StageConfigError, match=r"stage 0 \(labels\): key 'bad-name'"):
        build_pipeline([{"labels": {"bad-name": ""}}], CollectorRegistry())


def test_tenant_from_value_source_or_label():
    assert run([{"tenant": {"value": "team-a"}}], entry("x"))[0].tenant == "team-a"
    out = run([{"regex": {"expression": "t=(?P<t>\\w+)"}}, {"tenant": {"source": "t"}}], entry("t=b"), entry("none"))
    assert [e.tenant for e in out] == ["b", None]
    assert run([{"tenant": {"label": "ns"}}], entry("x", {"ns": "c"}))[0].tenant == "c"
    with pytest.raises(StageConfigError, match="mutually exclusive"):
        build_pipeline([{"tenant": {"value": "a", "source": "b"}}], CollectorRegistry())


def test_pack_embeds_labels_and_line_as_json():
    stages = [{"pack": {"labels": ["container", "pod"]}}]
    (out,) = run(stages, entry('original "msg"', {"container": "myapp", "pod": "p-1", "job": "j"}, ts=5), now=99)
    assert json.loads(out.line) == {"container": "myapp", "pod": "p-1", "_entry": 'original "msg"'}
    assert out.line.endswith('"_entry":"original \\"msg\\""}')
    assert out.labels == {"job": "j"}
    assert out.ts_ns == 99  # ingest_timestamp defaults to true
    (kept,) = run([{"pack": {"labels": ["pod"], "ingest_timestamp": False}}], entry("x", {"pod": "p"}, ts=5))
    assert kept.ts_ns == 5


def test_decolorize_strips_ansi_codes():
    (out,) = run([{"decolorize": None}], entry("\x1b[31mERROR\x1b[0m disk \x1b[1;32mok\x1b[0m"))
    assert out.line == "ERROR disk ok"


# ---- timestamps ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("RFC3339", "2019-04-30T02:12:41+02:00", utc_ns(2019, 4, 30, 0, 12, 41)),
        ("RFC3339Nano", "2019-04-30T02:12:41.8443515Z", utc_ns(2019, 4, 30, 2, 12, 41) + 844351500),
        ("2006-01-02T15:04:05.000Z07:00", "2023-05-06T07:08:09.123-05:00", utc_ns(2023, 5, 6, 12, 8, 9) + 123 * 10**6),
        ("2006-01-02 15:04:05,000", "2023-05-06 07:08:09,250", utc_ns(2023, 5, 6, 7, 8, 9) + 250 * 10**6),
        ("ANSIC", "Mon Jan  2 15:04:05 2006", utc_ns(2006, 1, 2, 15, 4, 5)),
        ("UnixDate", "Mon Jan  2 15:04:05 UTC 2006", utc_ns(2006, 1, 2, 15, 4, 5)),
        ("RubyDate", "Mon Jan 02 15:04:05 -0700 2006", utc_ns(2006, 1, 2, 22, 4, 5)),
        ("RFC822", "02 Jan 06 15:04 UTC", utc_ns(2006, 1, 2, 15, 4, 0)),
        ("RFC822Z", "02 Jan 06 15:04 +0100", utc_ns(2006, 1, 2, 14, 4, 0)),
        ("RFC850", "Monday, 02-Jan-06 15:04:05 UTC", utc_ns(2006, 1, 2, 15, 4, 5)),
        ("RFC1123", "Mon, 02 Jan 2006 15:04:05 UTC", utc_ns(2006, 1, 2, 15, 4, 5)),
        ("RFC1123Z", "Mon, 02 Jan 2006 15:04:05 -0700", utc_ns(2006, 1, 2, 22, 4, 5)),
        ("02/Jan/2006:15:04:05 -0700", "25/Jan/2000:14:00:01 -0500", utc_ns(2000, 1, 25, 19, 0, 1)),
        ("3:04PM Jan 2 2006", "3:04PM Feb 9 2021", utc_ns(2021, 2, 9, 15, 4, 0)),
        ("Unix", "1562708916", 1562708916 * NS),
        ("Unix", "1562708916.000000123", 1562708916 * NS + 123),
        ("UnixMs", "1562708916414", 1562708916414 * 10**6),
        ("UnixUs", "1562708916414123", 1562708916414123 * 1000),
        ("UnixNs", "1562708916000000123", 1562708916000000123),
    ],
)
def test_timestamp_layouts(fmt, text, expected):
    stages = [{"timestamp": {"source": "t", "format": fmt, "action_on_failure": "skip"}}]
    (out,) = run(stages, entry("x", ts=1, extracted={"t": text}))
    assert out.ts_ns == expected


def test_timestamp_location_fallback_formats_and_year_less_layouts():
    stages = [
        {
            "timestamp": {
                "source": "t",
                "format": "2006-01-02 15:04:05",
                "fallback_formats": ["UnixMs", "Jan _2 15:04:05"],
                "location": "Europe/Berlin",
            }
        }
    ]
    summer, winter, millis, syslog = (
        entry("a", extracted={"t": "2024-07-01 12:00:00"}),
        entry("b", extracted={"t": "2024-01-15 12:00:00"}),
        entry("c", extracted={"t": "1700000000123"}),
        entry("d", extracted={"t": "Mar  3 10:00:00"}),
    )
    out = run(stages, summer, winter, millis, syslog, now=utc_ns(2024, 6, 1, 0, 0, 0))
    assert out[0].ts_ns == utc_ns(2024, 7, 1, 10, 0, 0)  # CEST, +02:00
    assert out[1].ts_ns == utc_ns(2024, 1, 15, 11, 0, 0)  # CET, +01:00
    assert out[2].ts_ns == 1700000000123 * 10**6
    assert out[3].ts_ns == utc_ns(2024, 3, 3, 9, 0, 0)  # current year, in the location

    december = entry("e", extracted={"t": "Dec 31 23:00:00"})
    (out_dec,) = run([{"timestamp": {"source": "t", "format": "Jan _2 15:04:05"}}], december, now=utc_ns(2024, 1, 1))
    assert out_dec.ts_ns == utc_ns(2023, 12, 31, 23, 0, 0)  # December lines read in January are last year's


def test_timestamp_failure_fudges_after_the_last_good_time_or_skips():
    stages = [{"timestamp": {"source": "t", "format": "RFC3339"}}]
    good = entry("a", {"s": "1"}, ts=7, extracted={"t": "2024-01-01T00:00:00Z"})
    bad1 = entry("b", {"s": "1"}, ts=7, extracted={"t": "garbage"})
    bad2 = entry("c", {"s": "1"}, ts=7)
    other = entry("d", {"s": "2"}, ts=7, extracted={"t": "garbage"})
    out = run(stages, good, bad1, bad2, other)
    base = utc_ns(2024, 1, 1)
    assert [e.ts_ns for e in out] == [base, base + 1, base + 2, 7]

    skip = [{"timestamp": {"source": "t", "format": "RFC3339", "action_on_failure": "skip"}}]
    out = run(skip, entry("a", ts=1, extracted={"t": "2024-01-01T00:00:00Z"}), entry("b", ts=9, extracted={"t": "x"}))
    assert [e.ts_ns for e in out] == [base, 9]


def test_timestamp_config_errors_name_the_key():
    with pytest.raises(StageConfigError, match=r"stage 0 \(timestamp\): key 'action_on_failure'"):
        build_pipeline(
            [{"timestamp": {"source": "t", "format": "RFC3339", "action_on_failure": "x"}}], CollectorRegistry()
        )
    with pytest.raises(StageConfigError, match=r"key 'location'"):
        build_pipeline(
            [{"timestamp": {"source": "t", "format": "RFC3339", "location": "Mars/Base"}}], CollectorRegistry()
        )
    with pytest.raises(StageConfigError, match=r"key 'format': is required"):
        build_pipeline([{"timestamp": {"source": "t"}}], CollectorRegistry())


@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)), st.integers(0, 999_999))
@settings(max_examples=100, deadline=None)
def test_rfc3339_and_custom_layouts_agree_with_python(moment, micros):
    moment = moment.replace(microsecond=micros, tzinfo=dt.UTC)
    expected = int(moment.timestamp()) * NS + micros * 1000
    assert make_time_parser("RFC3339Nano")(moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), 0) == expected
    layout = make_time_parser("02 Jan 2006 15:04:05.000000 -0700")
    shifted = moment.astimezone(dt.timezone(dt.timedelta(hours=-3, minutes=-30)))
    assert layout(shifted.strftime("%d %b %Y %H:%M:%S.%f %z"), 0) == expected


def test_durations_and_byte_sizes_read_as_go_does():
    assert parse_go_duration("1h30m") == 5400 * NS
    assert parse_go_duration("1.5s") == 1500 * 10**6
    assert parse_go_duration("300ms") == 300 * 10**6
    assert parse_byte_size("256KB") == 262144
    assert parse_byte_size(1000) == 1000
    with pytest.raises(ValueError):
        parse_go_duration("5 minutes")


# ---- filtering --------------------------------------------------------------------------------------------------


def test_match_runs_nested_stages_only_on_selected_entries_in_order():
    stages = [
        {
            "match": {
                "selector": '{app="api"} |= "error"',
                "pipeline_name": "errors",
                "stages": [{"regex": {"expression": "code=(?P<code>\\d+)"}}, {"labels": {"code": ""}}],
            }
        }
    ]
    inputs = [
        entry("error code=500", {"app": "api"}),
        entry("ok code=200", {"app": "api"}),
        entry("error code=503", {"app": "web"}),
        entry("error code=404", {"app": "api"}),
    ]
    out = run(stages, *inputs)
    assert [e.line for e in out] == [e.line for e in inputs]
    assert [e.labels.get("code") for e in out] == ["500", None, None, "404"]


def test_match_with_action_drop_counts_the_drop_reason():
    registry = CollectorRegistry()
    stages = [
        {
            "match": {
                "selector": '{app=~"api|web"} |~ "(?i)healthz" != "keep"',
                "action": "drop",
                "drop_counter_reason": "healthchecks",
            }
        }
    ]
    inputs = [
        entry("GET /HEALTHZ", {"app": "api"}),
        entry("GET /healthz keep", {"app": "api"}),
        entry("GET /users", {"app": "web"}),
        entry("GET /healthz", {"app": "db"}),
        entry("GET /healthz", {"app": "web"}),
    ]
    out = run(stages, *inputs, registry=registry)
    assert [(e.labels["app"], e.line) for e in out] == [
        ("api", "GET /healthz keep"),
        ("web", "GET /users"),
        ("db", "GET /healthz"),
    ]
    assert dropped(registry, "healthchecks") == 2.0


def test_match_config_errors_name_the_nested_stage():
    with pytest.raises(StageConfigError, match=r"stage 0 \(match\) > stage 1 \(nope\): unknown stage type"):
        build_pipeline(
            [{"match": {"selector": '{a="b"}', "stages": [{"labels": {"a": ""}}, {"nope": {}}]}}], CollectorRegistry()
        )
    with pytest.raises(StageConfigError, match=r"key 'selector'.*invalid selector"):
        build_pipeline([{"match": {"selector": "{a=b}", "action": "drop"}}], CollectorRegistry())
    with pytest.raises(StageConfigError, match=r"key 'stages'"):
        build_pipeline([{"match": {"selector": '{a="b"}'}}], CollectorRegistry())


def test_selector_parser():
    sel = parse_selector('{ job = "a", env!="dev", pod=~"api-.*" } |= "x" !~ `y\\d`')
    assert sel.matches({"job": "a", "pod": "api-1"}, "x")
    assert not sel.matches({"job": "a", "pod": "api-1"}, "x y1")
    assert not sel.matches({"job": "a", "pod": "web-api-1"}, "x")  # label regexes match the whole value
    assert not sel.matches({"job": "a", "env": "dev", "pod": "api-1"}, "x")
    for bad in ["{}", 'job="a"', '{job="a"', '{job="a"} | json']:
        with pytest.raises(SelectorError):
            parse_selector(bad)


def test_drop_conditions_are_anded_and_counted():
    registry = CollectorRegistry()
    stages = [
        {"regex": {"expression": "level=(?P<level>\\w+)( app=(?P<app>\\w+))?"}},
        {"drop": {"source": "level", "value": "debug"}},
        {"drop": {"expression": ".*healthz.*", "drop_counter_reason": "health"}},
        {"drop": {"source": ["level", "app"], "separator": "|", "expression": "^warn\\|noisy$"}},
        {"drop": {"longer_than": "25B", "source": "level"}},
    ]
    inputs = [
        entry("level=debug x"),
        entry("level=info /healthz"),
        entry("level=warn app=noisy"),
        entry("level=warn app=quiet"),
        entry("level=info app=a long line here"),
        entry("no level here, but long enough"),
    ]
    out = run(stages, *inputs, registry=registry)
    assert [e.line for e in out] == ["level=warn app=quiet", "no level here, but long enough"]
    assert dropped(registry, "drop_stage") == 3.0
    assert dropped(registry, "health") == 1.0


def test_drop_older_than_uses_the_entry_time():
    stages = [{"drop": {"older_than": "1h"}}]
    out = run(stages, entry("old", ts=NOW - 2 * 3600 * NS), entry("new", ts=NOW - 60 * NS))
    assert [e.line for e in out] == ["new"]


def test_sampling_keeps_about_rate_of_the_entries():
    registry = CollectorRegistry()
    assert len(run([{"sampling": {"rate": 1}}], *[entry("x")] * 50)) == 50
    assert run([{"sampling": {"rate": 0}}], *[entry("x")] * 50, registry=registry) == []
    assert dropped(registry, "sampling_stage") == 50.0
    stage = SamplingStage(0.25, dropped_entries_counter(CollectorRegistry()).labels("s"), random.Random(7))
    kept = stage.process([entry("x") for _ in range(4000)], 0)
    assert 850 < len(kept) < 1150
    with pytest.raises(StageConfigError, match="key 'rate'"):
        build_pipeline([{"sampling": {"rate": 1.5}}], CollectorRegistry())


def test_limit_drops_past_rate_and_burst_and_refills_with_time():
    registry = CollectorRegistry()
    pipeline = build_pipeline([{"limit": {"rate": 10, "burst": 5, "drop": True}}], registry)
    assert len(pipeline.process([entry(str(i)) for i in range(8)], NOW)) == 5
    assert len(pipeline.process([entry(str(i)) for i in range(8)], NOW + NS // 2)) == 5  # 0.5s -> 5 new tokens
    assert dropped(registry, "ratelimit_drop_stage") == 6.0


def test_limit_by_label_limits_each_value_separately():
    pipeline = build_pipeline(
        [{"limit": {"rate": 1, "burst": 2, "drop": True, "by_label_name": "ns"}}], CollectorRegistry()
    )
    batch = [entry("x", {"ns": "a"}) for _ in range(4)] + [entry("x", {"ns": "b"}) for _ in range(4)] + [entry("x")] * 3
    out = pipeline.process(batch, NOW)
    assert [e.labels.get("ns") for e in out] == ["a", "a", "b", "b", None, None, None]
    with pytest.raises(StageConfigError, match="key 'drop'"):
        build_pipeline([{"limit": {"rate": 1, "burst": 1, "by_label_name": "ns"}}], CollectorRegistry())


def test_limit_without_drop_waits_for_tokens():
    slept: list[float] = []
    counter = dropped_entries_counter(CollectorRegistry()).labels("r")
    stage = LimitStage(10, 2, False, "", 10_000, counter, None, sleep=slept.append)
    out = stage.process([entry(str(i)) for i in range(5)], NOW)
    assert len(out) == 5
    assert sum(slept) == pytest.approx(0.3)


# ---- stages that hold entries back -------------------------------------------------------------------------


def test_multiline_joins_blocks_and_flushes_after_max_wait_time():
    pipeline = build_pipeline(
        [
            {"multiline": {"firstline": r"^\[\d{4}-\d{2}-\d{2}", "max_wait_time": "3s"}},
            {"regex": {"expression": r"^\[(?P<time>[^\]]+)\] (?P<message>(?s:.*))$"}},
        ],
        CollectorRegistry(),
    )
    lines = [
        "before any block",
        "[2020-12-03 11:36:23] ERROR in app",
        "Traceback (most recent call last):",
        '  File "app.py", line 2447',
        "[2020-12-03 11:36:24] GET /hello 200",
        "  trailing detail",
    ]
    offsets = [(i * 100, i * 100 + 50) for i in range(len(lines))]
    batch = [
        entry(t, {"job": "x"}, ts=i, source="/log", start=s, end=e)
        for i, (t, (s, e)) in enumerate(zip(lines, offsets, strict=True))
    ]
    out = pipeline.process(batch, NOW)
    assert [e.line for e in out] == [
        "before any block",
        '[2020-12-03 11:36:23] ERROR in app\nTraceback (most recent call last):\n  File "app.py", line 2447',
    ]
    block = out[1]
    assert (block.start, block.end, block.ts_ns) == (100, 350, 1)
    assert block.extracted["message"].endswith("line 2447")

    (held,) = pipeline.pending()
    assert (held.source, held.start, held.end) == ("/log", 400, 550)
    assert pipeline.flush(NOW + 2 * NS) == []
    (late,) = pipeline.flush(NOW + 3 * NS)
    assert late.line == "[2020-12-03 11:36:24] GET /hello 200\n  trailing detail"
    assert late.extracted["message"] == "GET /hello 200\n  trailing detail"  # later stages ran on the flushed block
    assert pipeline.pending() == []


def test_multiline_max_lines_and_separate_streams():
    pipeline = build_pipeline([{"multiline": {"firstline": "^start", "max_lines": 2}}], CollectorRegistry())
    one, two = {"s": "1"}, {"s": "2"}
    out = pipeline.process([entry("start a", one), entry("start b", two), entry(" a1", one), entry(" a2", one)], NOW)
    assert [e.line for e in out] == ["start a\n a1"]
    assert sorted(e.line for e in pipeline.flush(NOW, force=True)) == [" a2", "start b"]


def test_multiline_inside_match_is_flushed_through_the_later_stages():
    pipeline = build_pipeline(
        [
            {
                "match": {
                    "selector": '{app="java"}',
                    "stages": [{"multiline": {"firstline": "^\\d", "max_wait_time": "1s"}}],
                }
            },
            {"static_labels": {"seen": "yes"}},
        ],
        CollectorRegistry(),
    )
    out = pipeline.process(
        [entry("1 boom", {"app": "java"}), entry("  at x", {"app": "java"}), entry("plain", {"app": "go"})], NOW
    )
    assert [(e.line, e.labels.get("seen")) for e in out] == [("plain", "yes")]
    assert [e.line for e in pipeline.pending()] == ["1 boom\n  at x"]
    (block,) = pipeline.flush(NOW + NS)
    assert (block.line, block.labels) == ("1 boom\n  at x", {"app": "java", "seen": "yes"})


def test_cri_parses_and_reassembles_partial_lines():
    pipeline = build_pipeline([{"cri": {}}], CollectorRegistry())
    batch = [
        entry("2019-04-30T02:12:41.8443515Z stdout P hello ", {"job": "k"}, source="/c.log", start=0, end=45),
        entry("2019-04-30T02:12:41.9Z stderr F other stream", {"job": "k"}, source="/c.log", start=45, end=90),
        entry("2019-04-30T02:12:42.0Z stdout P big ", {"job": "k"}, source="/c.log", start=90, end=130),
    ]
    out = pipeline.process(batch, NOW)
    assert [(e.labels["stream"], e.line) for e in out] == [("stderr", "other stream")]
    assert out[0].ts_ns == utc_ns(2019, 4, 30, 2, 12, 41) + 900_000_000
    assert [e.line for e in pipeline.pending()] == ["hello big "]

    (joined,) = pipeline.process(
        [entry("2019-04-30T02:12:42.5Z stdout F world", {"job": "k"}, source="/c.log", start=130, end=170)], NOW
    )
    assert joined.line == "hello big world"
    assert joined.labels == {"job": "k", "stream": "stdout"}
    assert joined.extracted["flags"] == "F"
    assert (joined.start, joined.end) == (0, 170)
    assert joined.ts_ns == utc_ns(2019, 4, 30, 2, 12, 42) + 500_000_000
    assert pipeline.pending() == []


def test_cri_truncates_partial_lines_and_releases_them_on_forced_flush():
    pipeline = build_pipeline(
        [{"cri": {"max_partial_line_size": 8, "max_partial_line_size_truncate": True}}], CollectorRegistry()
    )
    assert pipeline.process([entry("2019-04-30T02:12:42.0Z stdout P 0123456789")], NOW) == []
    (released,) = pipeline.flush(NOW, force=True)
    assert released.line == "01234567"


def test_docker_parses_the_json_log_format():
    line = '{"log":"log message\\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}'
    (out,) = run([{"docker": {}}], entry(line, {"job": "d"}))
    assert out.line == "log message\n"
    assert out.labels == {"job": "d", "stream": "stderr"}
    assert out.ts_ns == utc_ns(2019, 4, 30, 2, 12, 41) + 844351500


# ---- metrics -------------------------------------------------------------------------------------------------


def test_metrics_counter_gauge_and_histogram_are_visible_in_the_registry():
    registry = CollectorRegistry()
    stages = [
        {"logfmt": {"mapping": {"level": "", "duration": "", "queue": ""}}},
        {
            "metrics": {
                "log_lines_total": {
                    "type": "Counter",
                    "description": "all lines",
                    "config": {"match_all": True, "action": "inc"},
                },
                "log_bytes_total": {
                    "type": "counter",
                    "config": {"match_all": True, "count_entry_bytes": True, "action": "add"},
                },
                "errors_total": {"type": "counter", "source": "level", "config": {"value": "error", "action": "inc"}},
                "queue_length": {"type": "gauge", "source": "queue", "config": {"action": "set"}},
                "request_seconds": {
                    "type": "histogram",
                    "source": "duration",
                    "prefix": "my_",
                    "config": {"buckets": [0.1, 1, 10]},
                },
            }
        },
    ]
    inputs = [
        entry("level=error duration=0.5s queue=3", {"app": "api", "__path__": "/x"}),
        entry("level=info duration=2 queue=7", {"app": "api", "__path__": "/x"}),
        entry("level=error duration=50ms", {"app": "web"}),
    ]
    run(stages, *inputs, registry=registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("promtail_custom_log_lines_total", app="api") == 2.0
    assert value("promtail_custom_log_bytes_total", app="web") == float(len(inputs[2].line))
    assert value("promtail_custom_errors_total", app="api") == 1.0
    assert value("promtail_custom_errors_total", app="web") == 1.0
    assert value("promtail_custom_queue_length", app="api") == 7.0
    assert value("my_request_seconds_bucket", app="api", le="1.0") == 1.0
    assert value("my_request_seconds_bucket", app="web", le="0.1") == 1.0
    assert value("my_request_seconds_count", app="api") == 2.0
    assert value("my_request_seconds_sum", app="api") == pytest.approx(2.5)
    text = generate_latest(registry).decode()
    assert "# TYPE promtail_custom_log_lines_total counter" in text
    assert "__path__" not in text  # reserved labels never reach Prometheus


def test_metrics_config_errors():
    with pytest.raises(StageConfigError, match=r"metric 'x' config: key 'action'"):
        build_pipeline([{"metrics": {"x": {"type": "counter", "config": {"action": "set"}}}}], CollectorRegistry())
    with pytest.raises(StageConfigError, match=r"metric 'x': key 'type'"):
        build_pipeline([{"metrics": {"x": {"type": "summary", "config": {}}}}], CollectorRegistry())
    with pytest.raises(StageConfigError, match="count_entry_bytes"):
        build_pipeline(
            [{"metrics": {"x": {"type": "counter", "config": {"count_entry_bytes": True, "action": "add"}}}}],
            CollectorRegistry(),
        )


def test_two_pipelines_share_a_custom_metric_and_the_drop_counter():
    registry = CollectorRegistry()
    spec = [
        {"metrics": {"lines_total": {"type": "counter", "config": {"match_all": True, "action": "inc"}}}},
        {"drop": {"expression": "drop"}},
    ]
    a, b = build_pipeline(spec, registry, "a"), build_pipeline(spec, registry, "b")
    a.process([entry("x", {"job": "a"}), entry("drop", {"job": "a"})], NOW)
    b.process([entry("y", {"job": "b"})], NOW)
    assert registry.get_sample_value("promtail_custom_lines_total", {"job": "a"}) == 2.0
    assert registry.get_sample_value("promtail_custom_lines_total", {"job": "b"}) == 1.0
    assert dropped(registry, "drop_stage") == 1.0


# ---- configuration errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"nope": {}}], r"stage 0 \(nope\): unknown stage type 'nope'"),
        ([{"geoip": {}}], r"stage 0 \(geoip\): the geoip stage is not supported"),
        ([{"json": {}, "labels": {}}], r"stage 0: a pipeline stage must be a map with exactly one key"),
        ([{"json": {"expressions": {"a": ""}, "sorce": "x"}}], r"stage 0 \(json\): key 'sorce': unknown option"),
        ([{"output": {}}], r"stage 0 \(output\): key 'source': is required"),
        ([{"multiline": {"firstline": "x", "max_wait_time": "soon"}}], r"key 'max_wait_time'"),
        ([{"drop": {"value": "x", "expression": "y"}}], r"key 'value'.*must contain source"),
        ([{"limit": {"rate": 0, "burst": 1}}], r"stage 0 \(limit\): key 'rate'"),
        ([{"regex": {"expression": "a", "source": ""}}], r"key 'source': empty source"),
        ([{"template": {"source": "a", "template": "{{ nofunc .x }}"}}], r"key 'template': invalid template"),
        ([{"labeldrop": []}], r"stage 0 \(labeldrop\)"),
        ("json", r"pipeline_stages must be a list"),
    ],
)
def test_config_errors_name_the_stage_and_key(stages, message):
    with pytest.raises(StageConfigError, match=message):
        build_pipeline(stages, CollectorRegistry())


def test_an_empty_pipeline_passes_entries_through():
    pipeline = build_pipeline(None, CollectorRegistry())
    e = entry("x", {"a": "b"}, ts=3)
    assert pipeline.process([e], NOW) == [e]
    assert pipeline.flush(NOW, force=True) == [] and pipeline.pending() == []
