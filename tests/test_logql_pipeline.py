"""LogQL pipeline stages and unwrapped range functions, end to end over HTTP, with Loki's semantics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LoglakeServer
from tests.helpers import push_json, stream

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
S = 10**9
END = T0 + 300 * S


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoglakeServer]:
    server = LoglakeServer(
        tmp_path_factory.mktemp("pipeline") / "data", {"limits_config": {"reject_old_samples": False}}
    )
    server.start()
    api = [
        (
            T0 + 1 * S,
            '{"level":"info","status":200,"latency":"15ms","size":"1KB","user":{"id":7,"name":"ann"},"path":"/a"}',
        ),
        (T0 + 2 * S, '{"level":"error","status":503,"latency":"1.5s","size":"2KiB","user":{"id":8},"path":"/b"}'),
        (T0 + 3 * S, '{"level":"error","status":500,"latency":"250ms","size":"300B","app":"clash","path":"/a"}'),
        (T0 + 4 * S, "not json at all"),
        (T0 + 61 * S, '{"level":"warn","status":"oops","latency":"soon","size":"big","path":"/c"}'),
    ]
    web = [
        (T0 + 5 * S, 'level=info method=GET status=200 duration=12ms ip=10.0.0.7 msg="all good"'),
        (T0 + 6 * S, "level=error method=POST status=502 duration=3s ip=192.168.1.9 msg=failed"),
        (T0 + 7 * S, "level=info method=GET status=204 duration=40ms ip=10.1.2.3 msg="),
        (T0 + 62 * S, "level=debug method=PUT status=201 duration=1m ip=172.16.0.1", {"trace_id": "t9"}),
    ]
    syslog = [
        (T0 + 8 * S, "\x1b[31mERROR\x1b[0m disk /dev/sda1 at 91%"),
        (T0 + 9 * S, "\x1b[32mINFO\x1b[0m disk /dev/sdb1 at 12%"),
    ]
    with server.client() as c:
        body = [
            stream({"app": "api", "env": "prod"}, api),
            stream({"app": "web", "env": "prod"}, web),
            stream({"app": "sys", "env": "dev"}, syslog),
        ]
        assert push_json(c, body).status_code == 204
    yield server
    server.stop()


def _get(srv: LoglakeServer, query: str, **params: Any) -> Any:
    p = {"query": query, "start": str(T0), "end": str(END), "limit": 100, "direction": "forward", **params}
    with srv.client() as c:
        return c.get("/loki/api/v1/query_range", params=p)


def _logs(srv: LoglakeServer, query: str, limit: int = 100) -> list[tuple[dict[str, str], str]]:
    r = _get(srv, query, limit=limit)
    assert r.status_code == 200, r.text
    out = [(s["stream"], line) for s in r.json()["data"]["result"] for _, line in s["values"]]
    return sorted(out, key=lambda e: e[1])


def _lines(srv: LoglakeServer, query: str) -> list[str]:
    return sorted(line for _, line in _logs(srv, query))


def _matrix(srv: LoglakeServer, query: str, step: str = "60s") -> dict[tuple, list]:
    r = _get(srv, query, step=step)
    assert r.status_code == 200, r.text
    return {tuple(sorted(s["metric"].items())): s["values"] for s in r.json()["data"]["result"]}


# ---- parsers and the labels they add ---------------------------------------------------------------------


def test_json_flattens_nested_fields_and_renames_clashes(srv) -> None:
    got = _logs(srv, '{app="api"} | json | status = 500 | __error__=""')
    assert len(got) == 1
    labels, _ = got[0]
    assert labels["app"] == "api" and labels["app_extracted"] == "clash"
    assert labels["level"] == "error" and labels["latency"] == "250ms"
    labels, _ = _logs(srv, '{app="api"} | json | user_id = 7')[0]
    assert labels["user_name"] == "ann"


def test_json_error_labels_stay_on_log_lines(srv) -> None:
    got = _logs(srv, '{app="api"} | json | __error__ != ""')
    assert [line for _, line in got] == ["not json at all"]
    assert got[0][0]["__error__"] == "JSONParserErr"
    assert "__error_details__" in got[0][0]
    assert len(_lines(srv, '{app="api"} | json | __error__ = ""')) == 4


def test_logfmt_and_label_filters_on_numbers_durations_bytes(srv) -> None:
    assert _lines(srv, '{app="web"} | logfmt | status >= 500') == [
        "level=error method=POST status=502 duration=3s ip=192.168.1.9 msg=failed"
    ]
    assert len(_lines(srv, '{app="web"} | logfmt | duration > 20ms')) == 3
    assert len(_lines(srv, '{app="web"} | logfmt | duration <= 12ms or status == 201')) == 2
    # 2KiB passes; "1KB" is 1000 bytes; "big" is not a size, so it stays with LabelFilterErr.
    assert len(_lines(srv, '{app="api"} | json | size >= 2KB')) == 2
    assert len(_lines(srv, '{app="api"} | json | size >= 2KB | __error__=""')) == 1
    # A value that is not a number is kept, with LabelFilterErr.
    got = _logs(srv, '{app="api"} | json | status > 100 | __error__ = "LabelFilterErr"')
    assert [labels["status"] for labels, _ in got] == ["oops"]


def test_missing_label_fails_numeric_filters_but_equals_empty(srv) -> None:
    assert _lines(srv, '{app="api"} | json | user_id > 0') != []
    assert len(_lines(srv, '{app="api"} | json | user_id > 0')) == 2
    assert len(_lines(srv, '{app="api"} | json | user_id = ""')) == 3


def test_ip_label_filter(srv) -> None:
    assert len(_lines(srv, '{app="web"} | logfmt | ip = ip("10.0.0.0/8")')) == 2
    assert len(_lines(srv, '{app="web"} | logfmt | ip != ip("10.0.0.0/8")')) == 2


def test_regexp_and_pattern_parsers(srv) -> None:
    got = _logs(srv, '{app="sys"} | decolorize | regexp `disk (?P<dev>\\S+) at (?P<pct>\\d+)%` | pct > 50')
    assert [labels["dev"] for labels, _ in got] == ["/dev/sda1"]
    got = _logs(srv, '{app="sys"} | decolorize | pattern `<level> disk <_> at <pct>%` | level = "INFO"')
    assert [labels["pct"] for labels, _ in got] == ["12"]


def test_line_format_and_label_format(srv) -> None:
    lines = _lines(srv, '{app="web"} | logfmt | status < 300 | line_format "{{.method | ToLower}} {{.status}}"')
    assert lines == ["get 200", "get 204", "put 201"]
    got = _logs(srv, '{app="web"} | logfmt | status=502 | label_format code=status, who="{{.method}}-{{.level}}"')
    labels = got[0][0]
    assert labels["code"] == "502" and "status" not in labels and labels["who"] == "POST-error"


def test_drop_and_keep(srv) -> None:
    labels = _logs(srv, '{app="web"} | logfmt | status=201 | drop method, trace_id, level="debug"')[0][0]
    assert "method" not in labels and "trace_id" not in labels and "level" not in labels
    labels = _logs(srv, '{app="web"} | logfmt | status=201 | keep app, status')[0][0]
    assert labels == {"app": "web", "status": "201"}


# ---- metric queries over pipelines ------------------------------------------------------------------------


def test_metric_query_with_parser_errors_is_a_400_unless_filtered(srv) -> None:
    r = _get(srv, 'count_over_time({app="api"} | json [1m])', step="60s")
    assert r.status_code == 400 and "JSONParserErr" in r.text
    assert _matrix(srv, 'sum by (level) (count_over_time({app="api"} | json | __error__="" [1m]))') == {
        (("level", "error"),): [[T0 // S + 60, "2"]],
        (("level", "info"),): [[T0 // S + 60, "1"]],
        (("level", "warn"),): [[T0 // S + 120, "1"]],
    }
    # `sum` without grouping needs no labels, so the parser does not run and cannot fail (as in Loki).
    assert _matrix(srv, 'sum(count_over_time({app="api"} | json [5m]))') != {}


def test_unwrap_range_functions(srv) -> None:
    q = '{app="web"} | logfmt | unwrap duration(duration) [1m]'
    by_app = "by (app)"
    assert _matrix(srv, f"max_over_time({q}) {by_app}")[(("app", "web"),)] == [
        [T0 // S + 60, "3"],
        [T0 // S + 120, "60"],
    ]
    assert _matrix(srv, f"min_over_time({q}) {by_app}")[(("app", "web"),)][0] == [T0 // S + 60, "0.012"]
    assert _matrix(srv, f"sum by (app) (sum_over_time({q}))")[(("app", "web"),)][0] == [T0 // S + 60, "3.052"]
    assert _matrix(srv, f"first_over_time({q}) {by_app}")[(("app", "web"),)][0] == [T0 // S + 60, "0.012"]
    assert _matrix(srv, f"last_over_time({q}) {by_app}")[(("app", "web"),)][0] == [T0 // S + 60, "0.04"]
    median = _matrix(srv, f"quantile_over_time(0.5, {q}) {by_app}")[(("app", "web"),)][0]
    assert median == [T0 // S + 60, "0.04"]
    avg = float(_matrix(srv, f"avg_over_time({q}) {by_app}")[(("app", "web"),)][0][1])
    assert math.isclose(avg, 3.052 / 3)
    std = float(_matrix(srv, f"stddev_over_time({q}) {by_app}")[(("app", "web"),)][0][1])
    values = [0.012, 3, 0.04]
    mean = sum(values) / 3
    assert math.isclose(std, math.sqrt(sum((v - mean) ** 2 for v in values) / 3))


def test_unwrap_drops_the_unwrapped_label_and_reports_conversion_errors(srv) -> None:
    series = _matrix(srv, 'sum_over_time({app="web"} | logfmt | unwrap status | __error__="" [5m])', step="300s")
    for labels in series:
        assert "status" not in dict(labels)
    r = _get(srv, 'sum_over_time({app="api"} | json | __error__="" | unwrap status [5m])', step="300s")
    assert r.status_code == 400 and "SampleExtractionErr" in r.text
    ok = _matrix(
        srv,
        'sum by (app) (sum_over_time({app="api"} | json | __error__="" | unwrap status | __error__="" [5m]))',
        step="300s",
    )
    assert ok == {(("app", "api"),): [[T0 // S + 300, "1203"]]}


def test_unwrap_bytes_and_rate(srv) -> None:
    got = _matrix(
        srv, 'sum by (app) (sum_over_time({app="api"} | json | size != "big" | unwrap bytes(size) [5m]))', step="300s"
    )
    assert got == {(("app", "api"),): [[T0 // S + 300, str(1000 + 2048 + 300)]]}
    rate = _matrix(srv, 'sum by (app) (rate({app="web"} | logfmt | unwrap status [1m]))')
    assert rate[(("app", "web"),)][0] == [T0 // S + 60, format(906 / 60, ".15g")]


def test_rate_counter_extrapolates_like_prometheus(srv) -> None:
    # Statuses 200, 502, 204, 201 at 5 s, 6 s, 7 s and 62 s, read as a counter over (0 s, 300 s].
    q = 'rate_counter({app="web"} | logfmt | keep app, status | unwrap status [5m])'
    got = _matrix(srv, q, step="300s")
    assert list(got) == [(("app", "web"),)]
    increase = (201 - 200) + 502 + 204  # two counter resets
    # Extrapolated 5 s back to the window start, and half an average interval (19 s) past the last sample.
    expected = increase * (57 + 5 + 9.5) / 57 / 300
    assert math.isclose(float(got[(("app", "web"),)][0][1]), expected, rel_tol=1e-9)


def test_json_filter_log_query_labels_every_kept_line_in_full(srv) -> None:
    """Enough lines for the two-pass path (a hinted pass picks rows, a full one labels them): same answer as one
    full pass, which a line_format ahead of the parser forces."""
    statuses = [200, 500, 503, 404]
    lines = []
    for i in range(400):
        status = statuses[i % 4]
        kind = i % 10
        if kind == 7:
            lines.append(f'{{"status":{status},"user":{{"id":{i}}},"i":{i}}}')  # nested: not flat
        elif kind == 8:
            lines.append(f'{{"status":{status},"i":{i}, oops')  # malformed after the status
        elif kind == 9:
            lines.append(f'{{" status":"{status}","status":1,"i":{i}}}')  # the first key naming status wins
        else:
            lines.append(f'{{"level":"x","status":{status},"i":{i},"msg":"line {i}"}}')
    with srv.client() as c:
        body = [stream({"app": "bulk", "env": "load"}, [(T0 + 100 * S + i, line) for i, line in enumerate(lines)])]
        assert push_json(c, body).status_code == 204
    two_pass = _logs(srv, '{app="bulk"} | json | status >= 500', limit=1000)
    one_pass = _logs(srv, '{app="bulk"} | line_format "{{__line__}}" | json | status >= 500', limit=1000)
    assert two_pass == one_pass
    want = [line for i, line in enumerate(lines) if statuses[i % 4] >= 500]
    assert sorted(line for _, line in two_pass) == sorted(want)
    by_line = dict((line, labels) for labels, line in two_pass)
    nested = next(line for i, line in enumerate(lines) if i % 10 == 7 and statuses[i % 4] >= 500)
    assert by_line[nested]["user_id"], "kept lines get every label, not just the filtered ones"
    broken = next(line for i, line in enumerate(lines) if i % 10 == 8 and statuses[i % 4] >= 500)
    assert by_line[broken]["__error__"] == "JSONParserErr"
    flat = next(line for i, line in enumerate(lines) if i % 10 == 0 and statuses[i % 4] >= 500)
    assert by_line[flat]["msg"].startswith("line ") and by_line[flat]["level"] == "x"
