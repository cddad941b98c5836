"""Query API: Loki's defaults, time handling, JSON shapes and errors, the same from the head and from blocks."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import LoglakeServer
from tests.helpers import now_ns, push_json, stream

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
S = 10**9
RANGE = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:10:00Z"}
QUERY_RANGE = "/loki/api/v1/query_range"

API_LINES = [f"GET /users/{i} status={500 if i % 4 == 0 else 200}" for i in range(120)]
WEB_LINES = [f"render page={i}" for i in range(60)]
APIARY_LINES = [f"bees {i}" for i in range(3)]
HOSTILE_LINE = "a" * 5000 + "!"

SUMMARY_FIELDS = {
    "bytesProcessedPerSecond",
    "linesProcessedPerSecond",
    "totalBytesProcessed",
    "totalLinesProcessed",
    "execTime",
    "queueTime",
    "subqueries",
    "totalEntriesReturned",
    "splits",
    "shards",
    "totalPostFilterLines",
    "totalStructuredMetadataBytesProcessed",
}


@dataclass
class Loaded:
    """A server holding the test data, and the wall-clock time the recent entries were pushed around."""

    server: LoglakeServer
    now: int


def _load(server: LoglakeServer) -> int:
    """Push the test data; return the `now` the two recent entries are relative to."""
    now = now_ns()
    body = [
        stream({"app": "api", "env": "prod"}, [(T0 + i * S, line) for i, line in enumerate(API_LINES)]),
        stream(
            {"app": "web", "env": "dev"},
            [(T0 + i * S + 5, line, {"trace_id": f"t{i % 3}"}) for i, line in enumerate(WEB_LINES)],
        ),
        stream({"app": "apiary", "env": "prod"}, [(T0 + i * S + 7, line) for i, line in enumerate(APIARY_LINES)]),
        stream({"app": "redos"}, [(T0 + 3600 * S + i, HOSTILE_LINE) for i in range(50)]),
        stream({"app": "recent"}, [(now - 2 * 3600 * S, "stale"), (now - 1800 * S, "fresh")]),
    ]
    with server.client() as c:
        r = push_json(c, body)
        assert r.status_code == 204, r.text
    return now


@pytest.fixture(scope="module", params=["head", "blocks"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """The test data, either still in the head or, after `POST /flush`, only in blocks: every test runs on both."""
    server = LoglakeServer(
        tmp_path_factory.mktemp(request.param) / "data", {"limits_config": {"reject_old_samples": False}}
    )
    try:
        server.start()
        now = _load(server)
        if request.param == "blocks":
            with server.client() as c:
                assert c.post("/flush").status_code == 204
                assert "loglake_head_bytes 0.0" in c.get("/metrics").text, "the flush left data in the head"
        yield Loaded(server, now)
    finally:
        server.stop()


@pytest.fixture
def client(loaded: Loaded) -> Iterator[httpx.Client]:
    """An HTTP client for the loaded server."""
    with loaded.server.client() as c:
        yield c


def query(c: httpx.Client, q: str, **params: Any) -> dict[str, Any]:
    """Run a range query (over RANGE unless times are given) and return its `data`."""
    if not {"start", "end", "since"} & set(params):
        params = {**RANGE, **params}
    r = c.get(QUERY_RANGE, params={"query": q, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    return body["data"]


def entries(data: dict[str, Any]) -> list[tuple[int, str]]:
    """Return (ns, line) of every entry of a streams result, stream by stream, in answer order."""
    return [(int(ts), line) for s in data["result"] for ts, line in s["values"]]


def lines(c: httpx.Client, q: str) -> list[str]:
    """Return the sorted lines a log query selects over RANGE."""
    return sorted(line for _, line in entries(query(c, q, limit=1000)))


# ---------------------------------------------------------------------------------------------- defaults and time


def test_default_limit_is_100_and_default_direction_is_backward(client: httpx.Client) -> None:
    got = entries(query(client, '{app="api"}'))
    assert [ts for ts, _ in got] == [T0 + i * S for i in range(119, 19, -1)], "the newest 100, newest first"
    got = entries(query(client, '{app="api"}', direction="forward", limit=3))
    assert got == [(T0 + i * S, API_LINES[i]) for i in range(3)]


def test_limit_applies_across_streams_in_time_order(client: httpx.Client) -> None:
    got = sorted(entries(query(client, '{app=~"api|web"}', direction="forward", limit=10)))
    expected = sorted(
        [(T0 + i * S, API_LINES[i]) for i in range(5)] + [(T0 + i * S + 5, WEB_LINES[i]) for i in range(5)]
    )
    assert got == expected
    got = entries(query(client, '{app=~"api|web"}', limit=10))
    assert sorted(got) == [(T0 + i * S, API_LINES[i]) for i in range(110, 120)]


def test_start_is_inclusive_and_end_exclusive_to_the_nanosecond(client: httpx.Client) -> None:
    def times(start: int, end: int) -> list[int]:
        return [ts for ts, _ in entries(query(client, '{app="api"}', start=str(start), end=str(end)))]

    assert times(T0 + S, T0 + 3 * S) == [T0 + 2 * S, T0 + S]
    assert times(T0 + S + 1, T0 + 3 * S + 1) == [T0 + 3 * S, T0 + 2 * S]
    assert times(T0 + S, T0 + S) == [], "an empty range is allowed and selects nothing"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("1704067201", "1704067203", [1, 2]),  # up to 10 digits: seconds
        ("1704067201000000000", "1704067203000000001", [1, 2, 3]),  # more: nanoseconds
        ("1704067201.0", "1704067203.5", [1, 2, 3]),  # float seconds
        ("1704067200.9999", "1704067202.0001", [1]),  # rounded to the millisecond, as Loki does
        ("2024-01-01T00:00:01Z", "2024-01-01T00:00:02.000000001Z", [1, 2]),  # RFC 3339 with nanoseconds
        ("2024-01-01T01:00:01+01:00", "2024-01-01T01:00:03+01:00", [1, 2]),  # RFC 3339 with an offset
    ],
)
def test_times_may_be_seconds_nanoseconds_float_seconds_or_rfc3339(
    client: httpx.Client, start: str, end: str, expected: list[int]
) -> None:
    got = entries(query(client, '{app="api"}', start=start, end=end, direction="forward"))
    assert [ts for ts, _ in got] == [T0 + i * S for i in expected]


def test_the_default_range_is_the_last_hour_and_since_widens_it(client: httpx.Client, loaded: Loaded) -> None:
    def recent(**params: Any) -> list[str]:
        r = client.get(QUERY_RANGE, params={"query": '{app="recent"}', **params})
        assert r.status_code == 200, r.text
        return [line for _, line in entries(r.json()["data"])]

    assert recent() == ["fresh"]
    assert recent(since="3h") == ["fresh", "stale"]
    assert recent(since="10m") == []
    # Without start, the range is `since` (default 1h) back from end.
    assert recent(end=str(loaded.now - 90 * 60 * S)) == ["stale"]
    # An end in the future does not push the default start past now.
    assert recent(end=str(loaded.now + 24 * 3600 * S)) == ["fresh"]


def test_post_form_gives_the_same_answer_as_get(client: httpx.Client) -> None:
    params = {"query": '{app=~"api|web"} |= "7"', "limit": "15", "direction": "forward", **RANGE}
    by_get = client.get(QUERY_RANGE, params=params).json()["data"]["result"]
    r = client.post(QUERY_RANGE, data=params)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] == by_get
    assert len(entries({"result": by_get})) == 15


# ---------------------------------------------------------------------------------------------- shapes


def test_log_query_answer_has_loki_shape_and_stats_summary(client: httpx.Client) -> None:
    r = client.get(QUERY_RANGE, params={"query": '{app="api"} |= "status=500"', "limit": 7, **RANGE})
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"status", "data"} and body["status"] == "success"
    data = body["data"]
    assert set(data) == {"resultType", "result", "stats"} and data["resultType"] == "streams"
    (s,) = data["result"]
    assert set(s) == {"stream", "values"}
    assert s["stream"] == {"app": "api", "env": "prod", "service_name": "api"}
    assert all(isinstance(ts, str) and isinstance(line, str) for ts, line in s["values"])
    summary = data["stats"]["summary"]
    assert set(summary) == SUMMARY_FIELDS
    assert summary["totalEntriesReturned"] == 7
    assert summary["totalPostFilterLines"] >= 7
    assert summary["totalLinesProcessed"] >= summary["totalPostFilterLines"]
    assert summary["totalBytesProcessed"] >= sum(len(v[1]) for v in s["values"])


def test_metric_query_answers_a_matrix_and_instant_query_a_vector(client: httpx.Client) -> None:
    data = query(client, 'sum by (app) (count_over_time({app=~"api|web"}[10m]))', step="300")
    assert data["resultType"] == "matrix"
    assert set(data["stats"]["summary"]) == SUMMARY_FIELDS
    by_app = {s["metric"]["app"]: s["values"] for s in data["result"]}
    assert set(by_app) == {"api", "web"}
    for values in by_app.values():
        assert all(isinstance(t, int | float) and isinstance(v, str) for t, v in values)
    # A range covers (t - range, t]: the entry at exactly T0 is outside the window ending at T0 + 10m.
    assert by_app["api"][-1] == [T0 // S + 600, "119"]
    r = client.get(
        "/loki/api/v1/query",
        params={"query": 'count_over_time({app="web"} | trace_id="t1" [10m])', "time": "2024-01-01T00:10:00Z"},
    )
    data = r.json()["data"]
    assert data["resultType"] == "vector"
    assert data["result"] == [
        {
            "metric": {"app": "web", "env": "dev", "service_name": "web", "trace_id": "t1"},
            "value": [T0 // S + 600, "20"],
        }
    ]


def test_structured_metadata_is_a_result_label_but_not_an_indexed_one(client: httpx.Client) -> None:
    data = query(client, '{app="web"} |= "page=7"', direction="forward")
    assert [(s["stream"], s["values"]) for s in data["result"]] == [
        (
            {"app": "web", "env": "dev", "service_name": "web", "trace_id": "t1"},
            [[str(T0 + 7 * S + 5), "render page=7"]],
        )
    ]
    assert "trace_id" not in client.get("/loki/api/v1/labels", params=RANGE).json()["data"]
    series = client.get("/loki/api/v1/series", params={"match[]": '{app="web"}', **RANGE}).json()["data"]
    assert series == [{"app": "web", "env": "dev", "service_name": "web"}]


# ---------------------------------------------------------------------------------------------- selectors and filters


@pytest.mark.parametrize(
    ("selector", "apps"),
    [
        ('{app=~"api"}', {"api"}),
        ('{app=~"pi"}', set()),
        ('{app=~"api.*"}', {"api", "apiary"}),
        ('{app=~"api|web"}', {"api", "web"}),
        ('{env="prod", app!~"api"}', {"apiary"}),
        ('{env="prod", app!~"ap"}', {"api", "apiary"}),
        ('{app=~"(?i)API"}', {"api"}),
    ],
)
def test_selector_regexes_are_anchored(client: httpx.Client, selector: str, apps: set[str]) -> None:
    data = query(client, selector, limit=1000)
    assert {s["stream"]["app"] for s in data["result"]} == apps
    series = client.get("/loki/api/v1/series", params={"match[]": selector, **RANGE}).json()["data"] or []
    assert {s["app"] for s in series} == apps


def _expected(pattern: str) -> list[str]:
    """Evaluate a chain of `op value` line filters (`or` only within one op) in Python, over api and web lines."""
    selected = []
    for line in API_LINES + WEB_LINES:
        keep = True
        for op, values in re.findall(r'(\|=|!=|\|~|!~) ((?:"[^"]*"(?: or )?)+)', pattern):
            vals = re.findall(r'"([^"]*)"', values)
            if op == "|=":
                keep &= any(v in line for v in vals)
            elif op == "!=":
                keep &= not any(v in line for v in vals)
            elif op == "|~":
                keep &= any(re.search(v, line) for v in vals)
            else:
                keep &= not any(re.search(v, line) for v in vals)
        if keep:
            selected.append(line)
    return sorted(selected)


@pytest.mark.parametrize(
    "filters",
    [
        '|= "status=500"',
        '!= "status=500"',
        '|~ "users/1[0-9] "',
        '!~ "status=(200|500)"',
        '|= "status=500" |~ "users/1"',
        '|= "users/" != "status=200" !~ "users/[0-9] "',
        '|= "users/7 " or "users/8 " or "page=9"',
        '|~ "users/1[01] " or "page=5[0-9]$"',
        '!= "status" or "page=1"',
        '|= "status=500" or "page=2" |= "2"',
        '|~ "(?i)GET /USERS/5 "',
        '|= ""',
    ],
)
def test_line_filters_chain_and_combine_with_or(client: httpx.Client, filters: str) -> None:
    assert lines(client, f'{{app=~"api|web"}} {filters}') == _expected(filters)


def test_a_hostile_regex_answers_quickly(client: httpx.Client) -> None:
    # A backtracking engine needs exponential time to fail these on a 5,000-character line; RE2 is linear.
    window = {"start": str(T0 + 3600 * S), "end": str(T0 + 3601 * S)}
    for q in ['{app="redos"} |~ "(a+)+$"', '{app="redos"} |~ "(a|aa)+b"', '{app="redos"} !~ "(a*)*!"']:
        t0 = time.monotonic()
        r = client.get(QUERY_RANGE, params={"query": q, **window}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["result"] == []
        assert time.monotonic() - t0 < 5, q
    assert len(entries(query(client, '{app="redos"} |~ "^(a+)+!$"', **window))) == 50


# ---------------------------------------------------------------------------------------------- labels, series, stats


def test_label_names_and_values_with_and_without_query(client: httpx.Client) -> None:
    get = client.get
    assert get("/loki/api/v1/labels", params=RANGE).json() == {
        "status": "success",
        "data": ["app", "env", "service_name"],
    }
    assert get("/loki/api/v1/labels", params={"query": '{app="api"}', **RANGE}).json()["data"] == [
        "app",
        "env",
        "service_name",
    ]
    assert get("/loki/api/v1/label/app/values", params=RANGE).json()["data"] == ["api", "apiary", "web"]
    assert get("/loki/api/v1/label/app/values", params={"query": '{env="prod"}', **RANGE}).json()["data"] == [
        "api",
        "apiary",
    ]
    assert get("/loki/api/v1/label/env/values", params={"query": '{app=~"web|nope"}', **RANGE}).json()["data"] == [
        "dev"
    ]
    assert get("/loki/api/v1/label/nope/values", params=RANGE).json()["data"] in (None, [])
    r = get("/loki/api/v1/label/app/values", params={"query": '{app="api"', **RANGE})
    assert r.status_code == 400 and "parse error" in r.text


def test_series_with_several_matchers_and_without(client: httpx.Client) -> None:
    def series(**params: Any) -> list[dict[str, str]]:
        r = client.get("/loki/api/v1/series", params={**params, **RANGE})
        assert r.status_code == 200, r.text
        return sorted(r.json()["data"] or [], key=lambda s: sorted(s.items()))

    api = {"app": "api", "env": "prod", "service_name": "api"}
    apiary = {"app": "apiary", "env": "prod", "service_name": "apiary"}
    web = {"app": "web", "env": "dev", "service_name": "web"}
    assert series(**{"match[]": ['{app="api"}', '{env="dev"}']}) == [api, web]
    assert series(**{"match[]": ['{app="api"}', '{env="prod"}']}) == [api, apiary], "a stream matched twice once"
    assert series() == [api, apiary, web], "without match[], every stream in the range"
    r = client.post("/loki/api/v1/series", data={"match[]": ['{app="apiary"}', '{app="web"}'], **RANGE})
    assert sorted(r.json()["data"], key=lambda s: s["app"]) == [apiary, web]
    assert client.get("/loki/api/v1/series", params={"match[]": "{app=", **RANGE}).status_code == 400


def test_index_stats_counts_streams_entries_and_bytes(client: httpx.Client) -> None:
    r = client.get("/loki/api/v1/index/stats", params={"query": '{app=~"api|web"}', **RANGE})
    stats = r.json()
    assert set(stats) == {"streams", "chunks", "entries", "bytes"}, "index/stats has no envelope"
    assert (stats["streams"], stats["entries"]) == (2, 180)
    assert stats["bytes"] == sum(map(len, API_LINES + WEB_LINES))
    r = client.get("/loki/api/v1/index/stats", params={"query": '{app="none"}', **RANGE})
    assert r.json() == {"streams": 0, "chunks": 0, "entries": 0, "bytes": 0}
    assert client.get("/loki/api/v1/index/stats", params={"query": "{}", **RANGE}).status_code == 400


# ---------------------------------------------------------------------------------------------- errors

EMPTY_MATCHER = (
    "queries require at least one regexp or equality matcher that does not have an empty-compatible value. "
    'For instance, app=~".*" does not meet this requirement, but app=~".+" will'
)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": "{}"}, EMPTY_MATCHER),
        ({"query": '{app=~".*"}'}, EMPTY_MATCHER),
        ({"query": ""}, "syntax error: unexpected $end"),
        ({"query": '{app="api"'}, "parse error at line 1, col 11: syntax error: unexpected $end"),
        ({"query": '{app="api"} |~ "(unclosed"'}, "error parsing regexp: missing closing ): `(unclosed`"),
        ({"query": 'rate({app="api"})'}, "parse error"),
        ({"limit": "6000"}, "max entries limit per query exceeded, limit > max_entries_limit (6000 > 5000)"),
        ({"limit": "abc"}, 'strconv.Atoi: parsing "abc": invalid syntax'),
        ({"limit": "0"}, "limit must be a positive value"),
        ({"limit": "-3"}, "limit must be a positive value"),
        (
            {"start": "2024-01-01T00:10:00Z", "end": "2024-01-01T00:00:00Z"},
            "end timestamp must not be before or equal to start time",
        ),
        ({"start": "yesterday"}, "could not parse 'start' parameter: strconv.ParseInt: parsing \"yesterday\""),
        ({"end": "2024-13-01T00:00:00Z"}, "could not parse 'end' parameter"),
        ({"since": "forever"}, "could not parse 'since' parameter: not a valid duration string: \"forever\""),
        ({"direction": "sideways"}, "invalid direction 'sideways'"),
        ({"step": "0"}, "zero or negative query resolution step widths are not accepted"),
        ({"step": "0.01"}, "exceeded maximum resolution of 11,000 points per time series"),
        ({"step": "often"}, 'cannot parse "often" to a valid duration'),
        ({"interval": "-1"}, "interval must be >= 0"),
        ({"interval": "-1s"}, 'cannot parse "-1s" to a valid duration'),
    ],
)
def test_bad_query_range_requests_are_400_with_loki_message(
    client: httpx.Client, params: dict[str, str], message: str
) -> None:
    r = client.get(QUERY_RANGE, params={"query": '{app="api"}', **RANGE, **params})
    assert r.status_code == 400, r.text
    assert message in r.text


def test_a_log_query_is_not_an_instant_query(client: httpx.Client) -> None:
    r = client.get("/loki/api/v1/query", params={"query": '{app="api"}', "time": "2024-01-01T00:05:00Z"})
    assert r.status_code == 400
    assert "log queries are not supported as an instant query type" in r.text


# ---------------------------------------------------------------------------------------------- head vs blocks


def _answers(c: httpx.Client) -> dict[str, Any]:
    """Every read endpoint's answer to a fixed set of requests, stats removed."""
    out: dict[str, Any] = {}
    queries = [
        '{app=~"api.*"}',
        '{app=~"api|web"} |= "500" or "page=3"',
        '{env!="prod", app=~".+"} != "page=1" |~ "page=[0-9]$"',
        '{app="web"} | trace_id="t2"',
        'sum by (app) (count_over_time({app=~".+"}[1m]))',
        'count_over_time({app="web"}[30s])',
    ]
    for q in queries:
        for direction in ("forward", "backward"):
            data = query(c, q, limit=25, direction=direction, step="60")
            out[f"{q} {direction}"] = sorted(data["result"], key=lambda s: sorted(s.get("stream", s.get("metric"))))
    out["labels"] = c.get("/loki/api/v1/labels", params=RANGE).json()
    out["values"] = c.get("/loki/api/v1/label/app/values", params={**RANGE, "query": '{env="prod"}'}).json()
    out["series"] = c.get("/loki/api/v1/series", params={"match[]": ['{app="api"}', '{env="dev"}'], **RANGE}).json()
    out["stats"] = c.get("/loki/api/v1/index/stats", params={"query": '{app=~".+"}', **RANGE}).json()
    out["instant"] = c.get(
        "/loki/api/v1/query", params={"query": 'sum(count_over_time({app=~".+"}[1h]))', "time": RANGE["end"]}
    ).json()["data"]["result"]
    return out


def test_head_and_blocks_answer_the_same(make_server: Any) -> None:
    server = make_server({"limits_config": {"reject_old_samples": False}})
    _load(server)
    with server.client() as c:
        from_head = _answers(c)
        assert c.post("/flush").status_code == 204
        assert "loglake_head_bytes 0.0" in c.get("/metrics").text
        assert _answers(c) == from_head
