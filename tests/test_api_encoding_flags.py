"""Loki's response encoding flags: `X-Loki-Response-Encoding-Flags: categorize-labels` (what Grafana sends)."""

from __future__ import annotations

import httpx

from tests.helpers import now_ns, push_json, stream

FLAGS = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}


def _push(server) -> int:
    t = now_ns() - 10_000_000_000
    with server.client() as c:
        body = [
            stream({"app": "shop", "env": "prod"}, [[str(t), '{"level":"error","msg":"paid"}', {"trace_id": "t1"}]]),
            stream({"app": "shop", "env": "prod"}, [[str(t + 1), "not json"]]),
            stream({"app": "shop", "env": "dev"}, [[str(t + 2), '{"level":"info","msg":"hi"}']]),
        ]
        assert push_json(c, body).status_code == 204
    return t


def _range(server, query: str, headers: dict[str, str] | None = None) -> dict:
    r = httpx.get(
        server.url + "/loki/api/v1/query_range",
        params={"query": query, "since": "1h", "direction": "forward"},
        headers=headers or {},
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_categorized_streams_hold_stream_labels_and_entries_carry_metadata_and_parsed(server) -> None:
    t = _push(server)
    data = _range(server, '{app="shop"} | json', FLAGS)
    assert data["encodingFlags"] == ["categorize-labels"]
    assert data["result"] == [
        {
            "stream": {"app": "shop", "env": "dev", "service_name": "shop"},
            "values": [[str(t + 2), '{"level":"info","msg":"hi"}', {"parsed": {"level": "info", "msg": "hi"}}]],
        },
        {
            "stream": {"app": "shop", "env": "prod", "service_name": "shop"},
            "values": [
                [
                    str(t),
                    '{"level":"error","msg":"paid"}',
                    {"structuredMetadata": {"trace_id": "t1"}, "parsed": {"level": "error", "msg": "paid"}},
                ],
                [
                    str(t + 1),
                    "not json",
                    {
                        "parsed": {
                            "__error__": "JSONParserErr",
                            "__error_details__": "Value looks like object, but can't find closing '}' symbol",
                        }
                    },
                ],
            ],
        },
    ]


def test_without_the_flag_every_label_is_a_stream_label(server) -> None:
    _push(server)
    data = _range(server, '{app="shop", env="prod"} |= "paid" | json')
    assert "encodingFlags" not in data
    (only,) = data["result"]
    assert only["stream"] == {
        "app": "shop",
        "env": "prod",
        "service_name": "shop",
        "trace_id": "t1",
        "level": "error",
        "msg": "paid",
    }
    assert len(only["values"][0]) == 2


def test_entries_without_metadata_or_parsed_labels_get_an_empty_object(server) -> None:
    t = _push(server)
    data = _range(server, '{env="dev"}', FLAGS)
    assert data["result"] == [
        {
            "stream": {"app": "shop", "env": "dev", "service_name": "shop"},
            "values": [[str(t + 2), '{"level":"info","msg":"hi"}', {}]],
        }
    ]


def test_dropped_and_relabelled_labels_leave_the_stream_labels(server) -> None:
    _push(server)
    data = _range(server, '{env="prod"} |= "paid" | json | drop env | label_format app="{{.msg}}"', FLAGS)
    (only,) = data["result"]
    assert only["stream"] == {"service_name": "shop"}
    assert only["values"][0][2]["parsed"] == {"app": "paid", "level": "error", "msg": "paid"}


def test_flags_are_echoed_for_metric_queries_too(server) -> None:
    _push(server)
    data = _range(
        server, 'sum(count_over_time({app="shop"}[1m]))', {"X-Loki-Response-Encoding-Flags": "categorize-labels,x"}
    )
    assert data["resultType"] == "matrix" and data["encodingFlags"] == ["categorize-labels", "x"]
