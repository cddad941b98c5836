"""Exploration API: detected_fields, detected_field values, detected_labels and patterns, from head and blocks.

The first part checks field and label detection rules directly; the rest runs the real server on a small data set
of JSON, logfmt and plain lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loglake.logql.detected import (
    SampledEntry,
    detect_field_values,
    detect_fields,
    detect_labels,
    determine_type,
    humanize_bytes,
    is_id_label,
    parse_json,
    parse_line,
    parse_logfmt,
    sanitize_key,
)
from loglake.logql.parsers import iter_logfmt
from tests.conftest import LoglakeServer
from tests.helpers import push_json, stream

S = 10**9
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
RANGE = {"start": str(T0), "end": str(T0 + 600 * S)}
POD = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

# ---- detection rules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("42", "int"),
        ("-7", "int"),
        ("12.5", "float"),
        ("1e3", "float"),
        ("99999999999999999999", "float"),  # too big for int64
        ("true", "boolean"),
        ("F", "boolean"),
        ("1.5s", "duration"),
        ("2h45m", "duration"),
        ("10KB", "bytes"),
        ("1.5 MiB", "bytes"),
        ("3,000", "bytes"),
        ("5m", "duration"),  # a duration before a byte size
        ("hello", "string"),
        ("", "string"),
    ],
)
def test_types_are_detected_in_loki_order(value: str, kind: str) -> None:
    assert determine_type(value) == kind


def test_json_keys_are_flattened_and_sanitized_with_their_paths() -> None:
    labels, paths = parse_json(  # type: ignore[misc]
        '{"user":{"id":"u1","first name":"Ann"},"2xx":5,"ok":true,"n":null,"tags":["a"],"pi":3.140}', {"app"}
    )
    assert labels == {"user_id": "u1", "user_first_name": "Ann", "_2xx": "5", "ok": "true", "pi": "3.140"}
    assert paths["user_id"] == ["user", "id"]
    assert paths["_2xx"] == ["2xx"]


def test_json_keys_named_like_stream_labels_get_extracted() -> None:
    labels, paths = parse_json('{"app":"shop","meta":{"app":"x"}}', {"app", "meta_app"})  # type: ignore[misc]
    assert labels == {"app_extracted": "shop", "meta_app_extracted": "x"}
    assert paths == {"app_extracted": ["app"], "meta_app_extracted": ["meta", "app"]}


def test_lines_that_are_not_json_objects_are_read_as_logfmt() -> None:
    assert parse_line('{"a":1}').parser == "json"
    assert parse_line("[1, 2]").parser == "logfmt"
    line = parse_line('GET /x status=200 msg="all good" empty= app=web', {"app"})
    assert (line.parser, line.labels) == ("logfmt", {"status": "200", "msg": "all good", "app_extracted": "web"})


def test_logfmt_recovers_after_bad_pairs() -> None:
    # `"x"y` is the value x then a bare key y; `=oops` has no key.
    got = parse_logfmt('a=1 b="x"y c=3 =oops d="q\\"uote" e=\\u f="open')
    assert got == {"a": "1", "b": "x", "c": "3", "d": 'q"uote', "e": "\\u"}


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text(min_size=1), max_size=6))
def test_logfmt_reads_back_what_is_written_quoted(pairs: dict[str, str]) -> None:
    line = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in pairs.items())
    assert dict(iter_logfmt(line, strict=True)) == pairs


def test_key_sanitizing() -> None:
    assert sanitize_key(["a.b-c"]) == "a_b_c"
    assert sanitize_key([" 9lives "]) == "_9lives"
    assert sanitize_key(["outer", " ", "inner"]) == "outer_inner"
    assert sanitize_key(["  "]) == ""


def test_fields_over_entries_count_distinct_values_and_keep_the_first_found() -> None:
    entries = [SampledEntry((("app", "a"),), f'{{"n": {i}, "app": "x"}}', [("trace", f"t{i % 2}")]) for i in range(5)]
    fields = {f.label: f.to_json() for f in detect_fields(entries, 10)}
    assert fields == {
        "app_extracted": {
            "label": "app_extracted",
            "type": "string",
            "cardinality": 1,
            "parsers": ["json"],
            "jsonPath": ["app"],
        },
        "n": {"label": "n", "type": "int", "cardinality": 5, "parsers": ["json"], "jsonPath": ["n"]},
        "trace": {"label": "trace", "type": "string", "cardinality": 2, "parsers": None},
    }
    assert [f.label for f in detect_fields(entries, 1)] == ["trace"]
    assert detect_field_values(entries, "n", 3) == ["0", "1", "2"]


def test_query_parsed_labels_are_fields_too() -> None:
    entry = SampledEntry((("app", "a"),), "plain text line here", parsed={"status": "500", "__error__": "x"})
    [field] = detect_fields([entry], 10)
    assert field.to_json() == {"label": "status", "type": "int", "cardinality": 1, "parsers": ["logfmt"]}


def test_byte_values_come_back_in_one_form() -> None:
    assert humanize_bytes(7) == "7B"
    assert humanize_bytes(2000) == "2.0kB"
    assert humanize_bytes(83_000_000) == "83MB"
    entries = [SampledEntry((), f"size={v}") for v in ("2KB", "2kb", "2000b", "12")]
    assert detect_field_values(entries, "size", 10) == ["12", "2.0kB"]


def test_id_like_labels_are_not_worth_exploring() -> None:
    assert is_id_label(["1", "2", "3"])
    assert is_id_label([POD, "17"])
    assert not is_id_label(["0", "1"])
    assert not is_id_label(["prod", "17"])
    assert is_id_label([])
    streams = [(("cluster", "1"), ("job", "42"), ("team", "a")), (("cluster", "2"), ("job", "43"), ("team", "b"))]
    assert [(d.label, d.cardinality) for d in detect_labels(streams)] == [("cluster", 2), ("team", 2)]


# ---- the server ---------------------------------------------------------------------------------------------------


def _checkout(i: int) -> str:
    return json.dumps(
        {
            "level": "info",
            "msg": f"order {i} placed by user u{i % 5}",
            "order_id": i,
            "amount": 12.5 + i,
            "user": {"id": f"u{i % 5}", "name": "ann"},
            "latency": f"{i + 1}ms",
            "size": "2KB",
            "ok": True,
            "app": "shop",
            "tags": ["a", "b"],
            "note": None,
        }
    )


def _load(server: LoglakeServer) -> None:
    body = [
        stream(
            {"app": "checkout", "env": "prod", "cluster": "eu-1"},
            [
                (T0 + i * S, _checkout(i), {"trace_id": f"t{i % 7}", "env": "canary", "detected_level": "info"})
                for i in range(60)
            ],
        ),
        stream(
            {"app": "auth", "env": "prod", "pod": POD},
            [
                (T0 + i * S + 1, f'level=warn msg="login failed" user=bob{i % 3} attempts={i} took=1.5s')
                for i in range(40)
            ],
        ),
        stream(
            {"app": "web", "env": "dev", "build_id": "12345"},
            [(T0 + i * S + 2, f"GET /users/{i} took {i * 3} ms") for i in range(60)],
        ),
        stream(
            {"app": "batch", "run": "17", "debug": "1"}, [(T0 + i * S + 3, "batch step done fine") for i in range(5)]
        ),
    ]
    with server.client() as c:
        r = push_json(c, body)
        assert r.status_code == 204, r.text


@pytest.fixture(scope="module", params=["head", "blocks"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoglakeServer]:
    """The test data still in the head or, after `POST /flush`, only in blocks: every test runs on both."""
    server = LoglakeServer(
        tmp_path_factory.mktemp(request.param) / "data", {"limits_config": {"reject_old_samples": False}}
    )
    try:
        server.start()
        _load(server)
        if request.param == "blocks":
            with server.client() as c:
                assert c.post("/flush").status_code == 204
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(loaded: LoglakeServer) -> Iterator[httpx.Client]:
    with loaded.client() as c:
        yield c


def get(c: httpx.Client, path: str, status: int = 200, **params: Any) -> Any:
    r = c.get(path, params={**RANGE, **params})
    assert r.status_code == status, r.text
    return r.json() if status == 200 else r.text


def fields_of(c: httpx.Client, query: str, **params: Any) -> dict[str, dict[str, Any]]:
    body = get(c, "/loki/api/v1/detected_fields", query=query, **params)
    return {f["label"]: f for f in body.get("fields", [])}


def test_detected_fields_of_json_lines(client: httpx.Client) -> None:
    body = get(client, "/loki/api/v1/detected_fields", query='{app="checkout"}')
    assert body["limit"] == 1000
    fields = {f["label"]: f for f in body["fields"]}
    assert sorted(fields) == [
        "amount", "app_extracted", "detected_level", "env", "latency", "level", "msg", "ok", "order_id", "size",
        "trace_id", "user_id", "user_name",
    ]  # fmt: skip
    assert fields["order_id"] == {
        "label": "order_id", "type": "int", "cardinality": 60, "parsers": ["json"], "jsonPath": ["order_id"]
    }  # fmt: skip
    assert fields["user_id"] == {
        "label": "user_id", "type": "string", "cardinality": 5, "parsers": ["json"], "jsonPath": ["user", "id"]
    }  # fmt: skip
    types = {name: f["type"] for name, f in fields.items()}
    assert types["amount"] == "float"
    assert types["latency"] == "duration"
    assert types["size"] == "bytes"
    assert types["ok"] == "boolean"
    # Structured metadata: no parser; named as pushed even when a stream label has the name.
    assert fields["trace_id"] == {"label": "trace_id", "type": "string", "cardinality": 7, "parsers": None}
    assert fields["env"]["parsers"] is None
    assert fields["app_extracted"]["jsonPath"] == ["app"]


def test_detected_fields_of_logfmt_lines(client: httpx.Client) -> None:
    fields = fields_of(client, '{app="auth"}')
    assert {name: (f["type"], f["cardinality"], f["parsers"]) for name, f in fields.items()} == {
        "level": ("string", 1, ["logfmt"]),
        "msg": ("string", 1, ["logfmt"]),
        "user": ("string", 3, ["logfmt"]),
        "attempts": ("int", 40, ["logfmt"]),
        "took": ("duration", 1, ["logfmt"]),
    }
    assert "jsonPath" not in fields["user"]


def test_plain_lines_without_pairs_have_no_fields(client: httpx.Client) -> None:
    assert get(client, "/loki/api/v1/detected_fields", query='{app="web"}') == {}
    assert get(client, "/loki/api/v1/detected_fields", query='{app="nothing"}') == {}


def test_line_limit_takes_the_newest_lines(client: httpx.Client) -> None:
    assert fields_of(client, '{app="checkout"}', line_limit=10)["order_id"]["cardinality"] == 10
    values = get(client, "/loki/api/v1/detected_field/order_id/values", query='{app="checkout"}', line_limit=10)
    assert values == {"values": [str(i) for i in range(50, 60)], "limit": 1000}


def test_limit_caps_the_number_of_fields(client: httpx.Client) -> None:
    body = get(client, "/loki/api/v1/detected_fields", query='{app="checkout"}', limit=3)
    assert body["limit"] == 3
    assert len(body["fields"]) == 3
    # `field_limit` is the old name.
    assert len(get(client, "/loki/api/v1/detected_fields", query='{app="checkout"}', field_limit=2)["fields"]) == 2


def test_the_query_filters_the_lines_fields_are_taken_from(client: httpx.Client) -> None:
    assert fields_of(client, '{app="checkout"} |= "order 7 placed"')["order_id"]["cardinality"] == 1
    assert fields_of(client, '{app="checkout"} | trace_id="t1"')["trace_id"]["cardinality"] == 1
    # A stage that is not a filter runs the query's pipeline; metadata keeps its pushed name.
    fields = fields_of(client, '{app="checkout"} | drop cluster')
    assert fields["order_id"]["cardinality"] == 60
    assert fields["env"] == {"label": "env", "type": "string", "cardinality": 1, "parsers": None}


def test_labels_from_the_querys_parsers_are_fields(client: httpx.Client) -> None:
    fields = fields_of(client, '{app="checkout"} | json | order_id > 50')
    assert fields["order_id"] == {
        "label": "order_id", "type": "int", "cardinality": 9, "parsers": ["json"], "jsonPath": ["order_id"]
    }  # fmt: skip
    assert fields["app_extracted"]["cardinality"] == 1
    assert fields["trace_id"]["parsers"] is None
    fields = fields_of(client, '{app="web"} | pattern "GET <path> took <ms> ms"')
    assert {name: (f["type"], f["cardinality"], f["parsers"]) for name, f in fields.items()} == {
        "path": ("string", 60, ["logfmt"]),
        "ms": ("int", 60, ["logfmt"]),
    }


def test_detected_fields_over_several_streams(client: httpx.Client) -> None:
    fields = fields_of(client, '{env="prod"}')
    assert fields["level"]["parsers"] == ["json", "logfmt"] or fields["level"]["parsers"] == ["logfmt", "json"]
    assert fields["level"]["cardinality"] == 2  # info and warn


def test_detected_field_values(client: httpx.Client) -> None:
    path = "/loki/api/v1/detected_field/{}/values"
    assert get(client, path.format("trace_id"), query='{app="checkout"}')["values"] == [f"t{i}" for i in range(7)]
    assert get(client, path.format("size"), query='{app="checkout"}')["values"] == ["2.0kB"]
    assert get(client, path.format("user"), query='{app="auth"}') == {"values": ["bob0", "bob1", "bob2"], "limit": 1000}
    assert get(client, path.format("missing"), query='{app="auth"}') == {}


def test_detected_fields_accepts_a_post_form(client: httpx.Client) -> None:
    r = client.post("/loki/api/v1/detected_fields", data={**RANGE, "query": '{app="auth"}'})
    assert r.status_code == 200, r.text
    assert len(r.json()["fields"]) == 5


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": 'rate({app="auth"}[1m])'}, "only log selector is supported"),
        ({"query": '{app="auth"}', "line_limit": "6000"},
         "max entries limit per query exceeded, limit > max_entries_limit_per_query (6000 > 5000)"),
        ({"query": '{app="auth"}', "limit": "0"}, "limit must be a positive value"),
        ({"query": '{app="auth"}', "line_limit": "x"}, 'strconv.Atoi: parsing "x": invalid syntax'),
        ({"query": '{app="auth"}', "start": str(T0 + 10 * S), "end": str(T0)},
         "end timestamp must not be before or equal to start time"),
        ({"query": '{app="auth"}', "step": "0"}, "zero or negative query resolution step widths are not accepted"),
        ({"query": "{app="}, "parse error"),
    ],
)  # fmt: skip
def test_detected_fields_errors(client: httpx.Client, params: dict[str, str], message: str) -> None:
    r = client.get("/loki/api/v1/detected_fields", params={**RANGE, **params})
    assert r.status_code == 400
    assert message in r.text


def test_detected_labels_leave_out_id_like_labels(client: httpx.Client) -> None:
    body = get(client, "/loki/api/v1/detected_labels")
    labels = {d["label"]: d["cardinality"] for d in body["detectedLabels"]}
    # build_id and run are all numbers; pod is a UUID but one of the labels always kept; debug=1 is a flag.
    assert labels == {"app": 4, "cluster": 1, "debug": 1, "env": 2, "pod": 1, "service_name": 4}


def test_detected_labels_of_selected_streams(client: httpx.Client) -> None:
    body = get(client, "/loki/api/v1/detected_labels", query='{env="prod"}')
    assert body == {
        "detectedLabels": [
            {"label": "app", "cardinality": 2},
            {"label": "cluster", "cardinality": 1},
            {"label": "env", "cardinality": 1},
            {"label": "pod", "cardinality": 1},
            {"label": "service_name", "cardinality": 2},
        ]
    }
    assert get(client, "/loki/api/v1/detected_labels", query='{app="nothing"}') == {}
    assert "parse error" in get(client, "/loki/api/v1/detected_labels", 400, query="{app=")


def test_patterns_of_each_format(client: httpx.Client) -> None:
    body = get(client, "/loki/api/v1/patterns", query='{app=~".+"}', step="60s")
    assert body["status"] == "success"
    got = {(p["pattern"], p["level"]): p["samples"] for p in body["data"]}
    minute = T0 // S
    assert got == {
        ("GET <_> took <_> ms", "unknown"): [[minute, 60]],
        ("<_>order <_> placed by user <_>", "info"): [[minute, 60]],
        ('level=warn msg="login failed" user=<_> attempts=<_> took=1.5s', "unknown"): [[minute, 40]],
    }
    # Biggest first; the five batch lines are too few to be a pattern.
    assert [sum(v for _, v in p["samples"]) for p in body["data"]] == [60, 60, 40]


def test_pattern_samples_follow_the_step(client: httpx.Client) -> None:
    body = get(client, "/loki/api/v1/patterns", query='{app="web"}', step="20s")
    [series] = body["data"]
    assert series["samples"] == [[T0 // S + t, 20] for t in (0, 20, 40)]
    # Below the 10 s sample interval the interval is used.
    [series] = get(client, "/loki/api/v1/patterns", query='{app="web"}', step="1s")["data"]
    assert series["samples"] == [[T0 // S + t, 10] for t in range(0, 60, 10)]


def test_patterns_can_be_used_as_pattern_filters(client: httpx.Client) -> None:
    [series] = get(client, "/loki/api/v1/patterns", query='{app="web"}')["data"]
    r = client.get(
        "/loki/api/v1/query_range", params={**RANGE, "query": f'{{app="web"}} |> "{series["pattern"]}"', "limit": 100}
    )
    assert r.status_code == 200, r.text
    assert sum(len(s["values"]) for s in r.json()["data"]["result"]) == 60


def test_patterns_empty_and_errors(client: httpx.Client) -> None:
    assert get(client, "/loki/api/v1/patterns", query='{app="nothing"}') == {"status": "success", "data": []}
    assert "parse error" in get(client, "/loki/api/v1/patterns", 400, query="{app=")
    assert "stream selector" in get(client, "/loki/api/v1/patterns", 400, query='{app="web"} |= "GET"')
    assert "zero or negative" in get(client, "/loki/api/v1/patterns", 400, query='{app="web"}', step="0")
