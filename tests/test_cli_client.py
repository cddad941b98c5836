"""The logcli-like client: `loglake push|query|labels|series` against a real server, and paging in batches."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.client import BatchTooSmallError, LogEntry, LogPrinter, LokiClient, LokiError, PushStream, fetch_pages
from loglake.client.times import format_time, parse_time
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
NS = 1_000_000_000
RFC3339_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def run_cli(*args: str, stdin: str | None = None, addr: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m loglake ARGS` (against `addr`, if given) and return what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOKI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if addr:
        env["LOKI_ADDR"] = addr
    return subprocess.run(
        [sys.executable, "-m", "loglake", *args], input=stdin, capture_output=True, text=True, timeout=120, env=env
    )


def push_lines(addr: str, labels: str, lines: list[str], *extra: str) -> None:
    result = run_cli("push", "--labels", labels, *extra, stdin="".join(f"{line}\n" for line in lines), addr=addr)
    assert result.returncode == 0, result.stderr


# --- against the real server ----------------------------------------------------------------------------------


def test_pushed_lines_come_back_newest_first_with_time_and_labels(server):
    push_lines(server.url, '{app="cli", env="dev"}', ["first", "second", "third"])
    push_lines(server.url, '{app="cli", env="prod"}', ["fourth"])
    result = run_cli("query", '{app="cli"}', "--since", "5m", "--timezone", "UTC", addr=server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["fourth", "third", "second", "first"]
    # The label every stream shares is left out of each line and named once on stderr, as logcli does.
    assert re.fullmatch(RFC3339_UTC + r' \{env="prod"\} fourth', lines[0])
    assert re.fullmatch(RFC3339_UTC + r' \{env="dev"\}  first', lines[3])
    assert 'Common labels: {app="cli", service_name="cli"}' in result.stderr  # service_name: discovered from app
    assert "/loki/api/v1/query_range" in result.stderr  # the request, unless --quiet


def test_quiet_query_prints_nothing_on_stderr(server):
    push_lines(server.url, '{app="cli"}', ["one"])
    result = run_cli("query", '{app="cli"}', "--quiet", addr=server.url)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.endswith(" {} one\n")


def test_raw_output_prints_only_lines_and_forward_is_oldest_first(server):
    push_lines(server.url, '{app="cli"}', ["a", "b", "c"])
    result = run_cli("query", '{app="cli"}', "-q", "--output", "raw", "--forward", addr=server.url)
    assert result.stdout == "a\nb\nc\n"


def test_jsonl_output_has_timestamp_labels_and_line(server):
    before = time.time_ns()
    push_lines(server.url, '{app="cli", env="dev"}', ["hello world"])
    result = run_cli("query", '{app="cli"}', "-q", "-o", "jsonl", "-z", "UTC", addr=server.url)
    [obj] = [json.loads(line) for line in result.stdout.splitlines()]
    assert obj["labels"] == {"app": "cli", "env": "dev", "service_name": "cli"}
    assert obj["line"] == "hello world"
    assert before <= parse_time(obj["timestamp"]) <= time.time_ns()


def test_limit_caps_the_lines_printed(server):
    push_lines(server.url, '{app="cli"}', [f"line {i}" for i in range(50)])
    result = run_cli("query", '{app="cli"}', "-q", "-o", "raw", addr=server.url)
    assert result.stdout.splitlines() == [f"line {i}" for i in range(49, 19, -1)]  # logcli's default limit: 30


def test_log_queries_page_through_batches_up_to_the_limit(server):
    lines = [f"line {i:05d}" for i in range(2600)]
    push_lines(server.url, '{app="pages"}', lines, "--batch-size", "700")
    result = run_cli("query", '{app="pages"}', "-q", "-o", "raw", "--limit", "0", "--batch", "1000", addr=server.url)
    assert result.stdout.splitlines() == lines[::-1]
    result = run_cli("query", '{app="pages"}', "-q", "-o", "raw", "--limit", "1500", "--forward", addr=server.url)
    assert result.stdout.splitlines() == lines[:1500]


def test_metric_queries_print_series(server):
    push_lines(server.url, '{app="cli", env="dev"}', ["a", "b"])
    push_lines(server.url, '{app="cli", env="prod"}', ["c"])
    query = 'sum by (env) (count_over_time({app="cli"}[10m]))'
    result = run_cli("instant-query", query, "-q", "-o", "jsonl", addr=server.url)
    assert result.returncode == 0, result.stderr
    series = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda s: s["metric"]["env"])
    assert [(s["metric"], s["value"][1]) for s in series] == [({"env": "dev"}, "2"), ({"env": "prod"}, "1")]
    result = run_cli("query", query, "-q", "--since", "5m", "--step", "1m", "-z", "UTC", addr=server.url)
    assert result.returncode == 0, result.stderr
    assert re.search(RFC3339_UTC + r' \{env="dev"\}  2\n', result.stdout)


def test_labels_lists_names_and_values(server):
    push_lines(server.url, '{app="cli", env="dev"}', ["a"])
    push_lines(server.url, '{app="other", team="x"}', ["b"])
    names = run_cli("labels", "-q", addr=server.url).stdout.splitlines()
    assert {"app", "env", "team"} <= set(names)
    assert run_cli("labels", "app", "-q", addr=server.url).stdout.splitlines() == ["cli", "other"]
    names = run_cli("labels", "-q", "--query", '{app="cli"}', addr=server.url).stdout.splitlines()
    assert "team" not in names and "env" in names


def test_series_lists_label_sets(server):
    push_lines(server.url, '{app="cli", env="dev"}', ["a"])
    push_lines(server.url, '{app="cli", env="prod"}', ["b"])
    push_lines(server.url, '{app="other"}', ["c"])
    result = run_cli("series", '{app="cli"}', "-q", addr=server.url)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        '{app="cli", env="dev", service_name="cli"}',
        '{app="cli", env="prod", service_name="cli"}',
    ]


def test_a_query_the_server_refuses_exits_1_with_its_message(server):
    result = run_cli("query", '{app="cli"', "-q", addr=server.url)
    assert result.returncode == 1
    assert "parse error" in result.stderr and "HTTP 400" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refused_push_exits_1_with_the_servers_message(make_server):
    srv = make_server({"limits_config": {"max_line_size": "100B"}})
    result = run_cli("push", "--labels", '{app="cli"}', stdin="x" * 200 + "\n", addr=srv.url)
    assert result.returncode == 1
    assert "HTTP 400" in result.stderr and "push failed after 0 lines" in result.stderr
    assert "Traceback" not in result.stderr


def test_org_id_picks_the_tenant(make_server):
    srv = make_server({"auth_enabled": True})
    push_lines(srv.url, '{app="cli"}', ["for a"], "--org-id", "tenant-a")
    mine = run_cli("query", '{app="cli"}', "-q", "-o", "raw", "--org-id", "tenant-a", addr=srv.url)
    theirs = run_cli("query", '{app="cli"}', "-q", "-o", "raw", "--org-id", "tenant-b", addr=srv.url)
    assert (mine.stdout, theirs.stdout) == ("for a\n", "")
    assert run_cli("query", '{app="cli"}', "-q", addr=srv.url).returncode == 1  # no tenant: 401


def test_an_unreachable_server_exits_1():
    result = run_cli("labels", "-q", addr=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_push_refuses_labels_that_are_not_a_label_set():
    result = run_cli("push", "--labels", "app=cli", stdin="x\n", addr="http://127.0.0.1:1")
    assert result.returncode == 2
    assert "--labels 'app=cli' is not a label set" in result.stderr


def test_bad_time_flags_are_usage_errors():
    result = run_cli("query", '{app="x"}', "--from", "yesterday")
    assert result.returncode == 2
    assert "expected a time like 2024-01-01T00:00:00Z" in result.stderr


# --- paging, against an in-memory Loki ------------------------------------------------------------------------


class FakeLoki:
    """Answers query_range as Loki does for one stream: [start, end), newest or oldest first, at most `limit`."""

    def __init__(self, entries: list[tuple[int, str]]) -> None:
        self.entries = entries
        self.requests: list[dict[str, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.requests.append(params)
        start, end, limit = int(params["start"]), int(params["end"]), int(params["limit"])
        forward = params["direction"] == "forward"
        selected = sorted((e for e in self.entries if start <= e[0] < end), key=lambda e: e[0], reverse=not forward)
        values = [[str(ts), line] for ts, line in selected[:limit]]
        body: dict[str, Any] = {"resultType": "streams", "result": [{"stream": {"app": "x"}, "values": values}]}
        return httpx.Response(200, json={"status": "success", "data": body})

    def client(self) -> LokiClient:
        return LokiClient("http://fake", transport=httpx.MockTransport(self.handle))


def collect(fake: FakeLoki, **kwargs: Any) -> list[LogEntry]:
    with fake.client() as client:
        return [e for page in fetch_pages(client, '{app="x"}', start=0, end=10**6, **kwargs) for e in page.entries]


def test_paging_resumes_inside_a_run_of_equal_timestamps():
    # Five entries share ts 20; a batch of 3 ends in the middle of them.
    entries = [(10, "a"), (20, "b1"), (20, "b2"), (20, "b3"), (30, "c"), (40, "d")]
    fake = FakeLoki(entries)
    got = collect(fake, limit=0, batch_size=4, forward=True)
    assert sorted((e.ts, e.line) for e in got) == entries
    assert len(got) == len(entries)


def test_paging_stops_at_the_limit_without_extra_requests():
    fake = FakeLoki([(ts, f"l{ts}") for ts in range(100)])
    got = collect(fake, limit=25, batch_size=10)
    assert [e.ts for e in got] == list(range(99, 74, -1))
    assert len(fake.requests) == 3


def test_more_equal_timestamps_than_a_batch_is_an_error_naming_the_fix():
    fake = FakeLoki([(5, f"l{i}") for i in range(10)] + [(1, "old")])
    with pytest.raises(BatchTooSmallError, match="at least 11"):
        collect(fake, limit=0, batch_size=10)


@settings(max_examples=60, deadline=None)
@given(
    timestamps=st.lists(st.integers(min_value=0, max_value=40), max_size=60),
    limit=st.integers(min_value=0, max_value=70),
    batch_size=st.integers(min_value=8, max_value=20),
    forward=st.booleans(),
)
def test_paging_returns_each_entry_once_in_order_up_to_the_limit(timestamps, limit, batch_size, forward):
    entries = [(ts, f"line{i}") for i, ts in enumerate(timestamps)]
    # Paging needs fewer equal timestamps than a batch holds; the error for the opposite case is tested above.
    if any(timestamps.count(ts) >= batch_size for ts in timestamps):
        return
    got = collect(FakeLoki(entries), limit=limit, batch_size=batch_size, forward=forward)
    keys = [(e.ts, e.line) for e in got]
    assert len(set(keys)) == len(keys)
    assert set(keys) <= set(entries)
    assert len(got) == (len(entries) if limit == 0 else min(limit, len(entries)))
    tss = [e.ts for e in got]
    assert tss == sorted(tss, reverse=not forward)
    # Every entry strictly before the last printed timestamp (in query order) was printed.
    if got:
        edge = got[-1].ts
        missed = [e for e in entries if (e[0] < edge if forward else e[0] > edge) and e not in keys]
        assert missed == []


def test_client_errors_carry_the_status_and_the_servers_text():
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="parse error at line 1, col 5: syntax error\n")

    with LokiClient("http://fake", transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(LokiError) as err:
            client.labels()
    assert err.value.status == 400
    assert str(err.value) == "parse error at line 1, col 5: syntax error (HTTP 400)"


def test_client_sends_tenant_and_credentials():
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "data": ["app"]})

    transport = httpx.MockTransport(handle)
    with LokiClient("http://fake", org_id="t1", bearer_token="tok", transport=transport) as client:
        assert client.labels(start=1, end=2) == ["app"]
    assert seen[0].headers["X-Scope-OrgID"] == "t1"
    assert seen[0].headers["Authorization"] == "Bearer tok"
    assert dict(seen[0].url.params) == {"start": "1", "end": "2"}


# --- output formats -------------------------------------------------------------------------------------------


def test_times_print_as_go_prints_rfc3339():
    ts = parse_time("2024-01-01T00:00:00.123456789Z")
    assert ts == 1704067200_123456789
    assert format_time(ts) == "2024-01-01T00:00:00Z"
    assert format_time(ts, fmt="rfc3339nano") == "2024-01-01T00:00:00.123456789Z"
    assert format_time(1704067200_500000000, fmt="rfc3339nano") == "2024-01-01T00:00:00.5Z"
    assert parse_time("1704067200") == 1704067200 * NS
    assert parse_time("2024-01-01T01:00:00+01:00") == 1704067200 * NS


def test_default_output_pads_labels_and_trims_lines(capsys):
    printer = LogPrinter(sys.stdout)
    printer.print_entries(
        [
            LogEntry(1704067200 * NS, {"app": "a", "env": "prod"}, "  spaced  \n"),
            LogEntry(1704067199 * NS, {"app": "a", "env": "qa"}, "x"),
        ]
    )
    assert capsys.readouterr().out == (
        '2024-01-01T00:00:00Z {env="prod"} spaced\n2023-12-31T23:59:59Z {env="qa"}   x\n'
    )


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_push_bodies_decode_as_the_server_reads_them(encoding):
    from loglake.ingest.decode import decode_push

    bodies: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(request)
        return httpx.Response(204)

    streams = [
        PushStream({"app": "a", "env": "dev"}, [(1704067200_000000001, "one"), (1704067200_000000002, "")]),
        PushStream({"app": "b"}, [(1704067201_000000000, "two", {"trace_id": "t1"})]),
    ]
    with LokiClient("http://fake", transport=httpx.MockTransport(handle)) as client:
        client.push(streams, encoding=encoding)
    request = bodies[0]
    decoded = decode_push(request.content, request.headers["Content-Type"], None, 1 << 20)
    assert decoded.counts.tolist() == [2, 1]
    assert decoded.ts.tolist() == [1704067200_000000001, 1704067200_000000002, 1704067201_000000000]
    assert decoded.line.to_pylist() == ["one", "", "two"]
    assert decoded.metadata is not None and decoded.metadata.to_pylist()[2] == [("trace_id", "t1")]


@given(st.integers(min_value=0, max_value=253402300799 * NS))
def test_rfc3339nano_times_read_back_to_the_same_nanosecond(ns):
    assert parse_time(format_time(ns, fmt="rfc3339nano")) == ns
