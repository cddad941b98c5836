"""Metric queries the core server answers: counts, bytes and rates, summed by stream labels or metadata."""

from __future__ import annotations

from tests.helpers import push_json, stream

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z


def _matrix(c, query: str, step: str = "60s") -> dict[tuple, list]:
    r = c.get(
        "/loki/api/v1/query_range",
        params={"query": query, "start": str(T0), "end": str(T0 + 120 * 10**9), "step": step},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["resultType"] == "matrix"
    return {tuple(sorted(s["metric"].items())): s["values"] for s in r.json()["data"]["result"]}


def _push_sample(server) -> None:
    with server.client() as c:
        body = [
            stream({"app": "a"}, [(T0 + 1, "x"), (T0 + 2, "yy", {"trace_id": "t1"}), (T0 + 61 * 10**9, "zzz")]),
            stream({"app": "b"}, [(T0 + 3, "four", {"trace_id": "t1"}), (T0 + 4, "", {"trace_id": "t2"})]),
        ]
        assert push_json(c, body).status_code == 204


def test_sum_by_stream_label_and_by_structured_metadata(server) -> None:
    _push_sample(server)
    with server.client() as c:
        by_app = _matrix(c, 'sum by (app) (count_over_time({app=~"a|b"}[1m]))')
        assert by_app == {
            (("app", "a"),): [[T0 // 10**9 + 60, "2"], [T0 // 10**9 + 120, "1"]],
            (("app", "b"),): [[T0 // 10**9 + 60, "2"]],
        }
        by_trace = _matrix(c, 'sum by (trace_id) (count_over_time({app=~"a|b"}[1m]))')
        assert by_trace == {
            (): [[T0 // 10**9 + 60, "1"], [T0 // 10**9 + 120, "1"]],
            (("trace_id", "t1"),): [[T0 // 10**9 + 60, "2"]],
            (("trace_id", "t2"),): [[T0 // 10**9 + 60, "1"]],
        }
        total = _matrix(c, 'sum(bytes_over_time({app=~"a|b"}[1m]))')
        assert total == {(): [[T0 // 10**9 + 60, "7"], [T0 // 10**9 + 120, "3"]]}


def test_series_split_by_metadata_without_aggregation_and_rate(server) -> None:
    _push_sample(server)
    with server.client() as c:
        series = _matrix(c, 'count_over_time({app="a"}[1m])')
        # Loki 3 adds service_name (from `app` here) to streams that lack it.
        assert set(series) == {
            (("app", "a"), ("service_name", "a")),
            (("app", "a"), ("service_name", "a"), ("trace_id", "t1")),
        }
        rate = _matrix(c, 'rate({app="b"}[1m])')
        key = (("app", "b"), ("service_name", "b"), ("trace_id", "t1"))
        assert rate[key] == [[T0 // 10**9 + 60, "0.016666666666666666"]]
        r = c.get("/loki/api/v1/query", params={"query": 'count_over_time({app="a"}[1m])', "time": str(T0 + 10**9)})
        assert r.status_code == 200
        assert r.json()["data"]["resultType"] == "vector"


def test_series_and_length_limits_answer_400(make_server) -> None:
    server = make_server(
        {"limits_config": {"reject_old_samples": False, "max_query_series": 1, "max_query_length": "1h"}}
    )
    _push_sample(server)
    with server.client() as c:
        params = {"start": str(T0), "end": str(T0 + 120 * 10**9), "step": "60s"}
        r = c.get(
            "/loki/api/v1/query_range", params={"query": 'sum by (app) (count_over_time({app=~"a|b"}[1m]))', **params}
        )
        assert r.status_code == 400
        assert r.text.strip() == "maximum of series (1) reached for a single query"
        r = c.get("/loki/api/v1/query_range", params={"query": 'sum(count_over_time({app=~"a|b"}[1m]))', **params})
        assert r.status_code == 200
        r = c.get(
            "/loki/api/v1/query_range",
            params={"query": '{app="a"}', "start": str(T0), "end": str(T0 + 2 * 3600 * 10**9)},
        )
        assert r.status_code == 400
        assert "the query time range exceeds the limit (query length: 2h0m0s, limit: 1h0m0s)" in r.text


def test_a_query_over_its_time_gets_504_and_the_server_keeps_serving(make_server) -> None:
    server = make_server({"limits_config": {"reject_old_samples": False, "query_timeout": "1ns"}})
    _push_sample(server)
    with server.client() as c:
        for query in ('{app="a"}', 'sum(count_over_time({app=~"a|b"}[1m]))'):
            r = c.get("/loki/api/v1/query_range", params={"query": query, "start": str(T0), "end": str(T0 + 10**11)})
            assert r.status_code == 504, r.text
            assert r.text.startswith("request timed out")
        assert c.get("/ready").status_code == 200
        assert c.get("/loki/api/v1/labels", params={"start": str(T0), "end": str(T0 + 10**11)}).status_code == 200


def test_nested_aggregations_topk_sort_and_stddev(server) -> None:
    _push_sample(server)
    with server.client() as c:

        def instant(q: str) -> list:
            r = c.get("/loki/api/v1/query", params={"query": q, "time": str(T0 + 60 * 10**9)})
            assert r.status_code == 200, r.text
            return [(s["metric"], s["value"][1]) for s in r.json()["data"]["result"]]

        per_app = 'sum by (app) (count_over_time({app=~"a|b"}[1m]))'
        assert instant(f"max({per_app})") == [({}, "2")]
        # A tie goes to the series whose labels sort first, whatever order the data is stored in.
        assert instant(f"topk(1, {per_app})") == [({"app": "a"}, "2")]
        assert instant(f"bottomk(1, {per_app})") == [({"app": "a"}, "2")]
        assert instant('sort_desc(sum by (app) (bytes_over_time({app=~"a|b"}[1m])))') == [
            ({"app": "b"}, "4"),
            ({"app": "a"}, "3"),
        ]
        assert instant('stddev(sum by (app) (bytes_over_time({app=~"a|b"}[1m])))') == [({}, "0.5")]
        assert instant(f"bottomk(5, {per_app})")[0][1] == "2"


def test_binary_operators_scalars_vector_and_label_replace(server) -> None:
    _push_sample(server)
    with server.client() as c:

        def instant(q: str) -> dict:
            r = c.get("/loki/api/v1/query", params={"query": q, "time": str(T0 + 60 * 10**9)})
            assert r.status_code == 200, r.text
            return r.json()["data"]

        per_app = 'sum by (app) (bytes_over_time({app=~"a|b"}[1m]))'
        assert instant("1 + 2 * 3") == {"resultType": "scalar", "result": [T0 // 10**9 + 60, "7"], "stats": ANY}
        assert _vector(instant(f"{per_app} * 2")) == {(("app", "a"),): "6", (("app", "b"),): "8"}
        assert _vector(instant(f"{per_app} > 3")) == {(("app", "b"),): "4"}
        assert _vector(instant(f"{per_app} > bool 3")) == {(("app", "a"),): "0", (("app", "b"),): "1"}
        assert _vector(instant(f"{per_app} / 0")) == {(("app", "a"),): "NaN", (("app", "b"),): "NaN"}
        ratio = f'{per_app} / on (app) sum by (app) (count_over_time({{app=~"a|b"}}[1m]))'
        assert _vector(instant(ratio)) == {(("app", "a"),): "1.5", (("app", "b"),): "2"}
        assert _vector(instant('sum(count_over_time({app="none"}[1m])) or vector(0)')) == {(): "0"}
        replaced = f'label_replace({per_app}, "short", "$1", "app", "(.)")'
        assert set(_vector(instant(replaced))) == {(("app", "a"), ("short", "a")), (("app", "b"), ("short", "b"))}


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY = _Any()


def _vector(data: dict) -> dict:
    assert data["resultType"] == "vector"
    return {tuple(sorted(s["metric"].items())): s["value"][1] for s in data["result"]}


def test_absent_over_time_marks_steps_without_data(server) -> None:
    _push_sample(server)
    with server.client() as c:
        r = c.get(
            "/loki/api/v1/query_range",
            params={
                "query": 'absent_over_time({app="a", x=~".*"}[1m])',
                "start": str(T0),
                "end": str(T0 + 180 * 10**9),
                "step": "60s",
            },
        )
        (series,) = r.json()["data"]["result"]
        assert series["metric"] == {"app": "a"}, "labelled by the selector's equality matchers"
        # data at T0+1ns, T0+2ns and T0+61s: windows ending at T0+60s and T0+120s hold some
        assert series["values"] == [[T0 // 10**9, "1"], [T0 // 10**9 + 180, "1"]]
