"""Log query API: Loki's defaults and shapes, and identical answers from the head and from blocks."""

from __future__ import annotations

from tests.helpers import push_json, stream

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
RANGE = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:10:00Z"}


def _load(server) -> None:
    with server.client() as c:
        body = [
            stream(
                {"app": "api", "env": "prod"},
                [(T0 + i * 10**9, f"GET /users/{i} status={200 if i % 4 else 500}") for i in range(120)],
            ),
            stream(
                {"app": "web", "env": "dev"},
                [(T0 + i * 10**9 + 5, f"render page={i}", {"trace_id": f"t{i % 3}"}) for i in range(60)],
            ),
        ]
        assert push_json(c, body).status_code == 204


def _answers(c) -> dict:
    """Every read endpoint's answer for a fixed set of requests (stats removed)."""
    out = {}
    queries = [
        '{app="api"}',
        '{app=~"api|web"} |= "500"',
        '{env!="prod", app=~".+"} != "page=1" |~ "page=[0-9]$"',
        '{app="web"} |= "page" or "status"',
    ]
    for q in queries:
        for direction in ("forward", "backward"):
            r = c.get("/loki/api/v1/query_range", params={"query": q, "limit": 25, "direction": direction, **RANGE})
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert set(data) == {"resultType", "result", "stats"}
            assert data["stats"]["summary"]["totalLinesProcessed"] >= 0
            out[(q, direction)] = data["result"]
    out["labels"] = c.get("/loki/api/v1/labels", params=RANGE).json()
    out["values"] = c.get("/loki/api/v1/label/app/values", params={**RANGE, "query": '{env="dev"}'}).json()
    out["series"] = c.get("/loki/api/v1/series", params={"match[]": ['{app="api"}', '{env="dev"}'], **RANGE}).json()
    out["stats"] = c.get("/loki/api/v1/index/stats", params={"query": '{app=~".+"}', **RANGE}).json()
    return out


def test_head_and_blocks_answer_the_same(server) -> None:
    _load(server)
    with server.client() as c:
        from_head = _answers(c)
        assert c.post("/flush").status_code == 204
        assert _answers(c) == from_head


def test_defaults_limit_direction_and_boundaries(server) -> None:
    _load(server)
    with server.client() as c:
        r = c.get("/loki/api/v1/query_range", params={"query": '{app="api"}', **RANGE})
        values = r.json()["data"]["result"][0]["values"]
        assert len(values) == 100, "the default limit is 100"
        assert values[0][0] == str(T0 + 119 * 10**9), "the default direction is backward: newest first"
        # start is inclusive, end exclusive, to the nanosecond
        r = c.get(
            "/loki/api/v1/query_range",
            params={"query": '{app="api"}', "start": str(T0 + 10**9), "end": str(T0 + 3 * 10**9)},
        )
        assert [v[0] for v in r.json()["data"]["result"][0]["values"]] == [str(T0 + 2 * 10**9), str(T0 + 10**9)]
        # float seconds and RFC 3339 with fractions are times too
        r = c.get(
            "/loki/api/v1/query_range",
            params={"query": '{app="api"}', "start": "1704067201.0", "end": "2024-01-01T00:00:02.5Z"},
        )
        assert len(r.json()["data"]["result"][0]["values"]) == 2
        r = c.post("/loki/api/v1/query_range", data={"query": '{app="web"} |= "page=7"', **RANGE})
        (s,) = r.json()["data"]["result"]
        assert s["stream"] == {"app": "web", "env": "dev", "service_name": "web", "trace_id": "t1"}
        assert s["values"] == [[str(T0 + 7 * 10**9 + 5), "render page=7"]]


def test_labels_values_series_and_stats(server) -> None:
    _load(server)
    with server.client() as c:
        assert c.get("/loki/api/v1/labels", params=RANGE).json()["data"] == ["app", "env", "service_name"]
        assert c.get("/loki/api/v1/label/app/values", params=RANGE).json()["data"] == ["api", "web"]
        assert c.get("/loki/api/v1/label/nope/values", params=RANGE).json()["data"] is None
        series = c.get("/loki/api/v1/series", params={"match[]": '{app="web"}', **RANGE}).json()["data"]
        assert series == [{"app": "web", "env": "dev", "service_name": "web"}], "metadata is not a series label"
        stats = c.get("/loki/api/v1/index/stats", params={"query": '{app="api"}', **RANGE}).json()
        assert stats["streams"] == 1 and stats["entries"] == 120
        assert stats["bytes"] == sum(len(f"GET /users/{i} status={200 if i % 4 else 500}") for i in range(120))
        r = c.get("/loki/api/v1/query", params={"query": '{app="api"}', "time": "2024-01-01T00:05:00Z"})
        assert r.status_code == 400 and "instant query" in r.text


def test_series_and_labels_accept_post_forms(server) -> None:
    _load(server)
    with server.client() as c:
        r = c.post("/loki/api/v1/series", data={"match[]": ['{app="api"}', '{app="web"}'], **RANGE})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 2
        r = c.post("/loki/api/v1/labels", data={"query": '{app="web"}', **RANGE})
        assert r.json()["data"] == ["app", "env", "service_name"]


def test_index_volume_by_series_labels_and_over_steps(server) -> None:
    _load(server)
    api_bytes = sum(len(f"GET /users/{i} status={200 if i % 4 else 500}") for i in range(120))
    web_bytes = sum(len(f"render page={i}") for i in range(60))
    with server.client() as c:
        r = c.get("/loki/api/v1/index/volume", params={"query": '{app=~".+"}', **RANGE})
        result = r.json()["data"]["result"]
        assert [(s["metric"], s["value"][1]) for s in result] == [
            ({"app": "api"}, str(api_bytes)),
            ({"app": "web"}, str(web_bytes)),
        ], "series mode groups by the selector's labels, largest first"
        r = c.get(
            "/loki/api/v1/index/volume",
            params={"query": '{app=~".+"}', "aggregateBy": "labels", "targetLabels": "env,app", **RANGE},
        )
        assert [s["metric"] for s in r.json()["data"]["result"]] == [{"app": ""}, {"env": ""}]
        r = c.get("/loki/api/v1/index/volume_range", params={"query": '{app="web"}', "step": "60", **RANGE})
        (series,) = r.json()["data"]["result"]
        assert series["metric"] == {"app": "web"}
        assert sum(int(v) for _, v in series["values"]) == web_bytes
        assert c.get("/loki/api/v1/index/volume", params={"query": "{}", **RANGE}).status_code == 400


def test_label_filters_on_stream_labels_and_structured_metadata(server) -> None:
    _load(server)
    with server.client() as c:

        def lines(q: str) -> list[str]:
            r = c.get("/loki/api/v1/query_range", params={"query": q, "limit": 1000, **RANGE})
            assert r.status_code == 200, r.text
            return sorted(v[1] for s in r.json()["data"]["result"] for v in s["values"])

        assert len(lines('{app=~".+"} | trace_id="t1"')) == 20
        # t1 is every third page from 1; of those, the lines containing "page=1"
        expected = ["render page=1", "render page=10", "render page=13", "render page=16", "render page=19"]
        assert lines('{app=~".+"} | trace_id="t1" | env="dev" |= "page=1"') == expected
        assert len(lines('{app=~".+"} | trace_id!=""')) == 60, "only web entries carry metadata"
        assert len(lines('{app=~".+"} | trace_id=~"t[12]" or app="api"')) == 40 + 120
        assert len(lines('{app="api"} | nothing=""')) == 120, "a missing label compares as empty"
        r = c.get(
            "/loki/api/v1/query_range",
            params={"query": 'sum by (trace_id) (count_over_time({app="web"} | trace_id!="t0" [10m]))', **RANGE},
        )
        assert {s["metric"]["trace_id"] for s in r.json()["data"]["result"]} == {"t1", "t2"}
        r = c.get("/loki/api/v1/query_range", params={"query": '{app="api"} | status > 5', **RANGE})
        assert r.status_code == 400 and "not supported" in r.text
