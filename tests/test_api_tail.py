"""Live tail over `/loki/api/v1/tail`: Loki's websocket protocol, fed by the push path, against a real server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.helpers import push_json, stream

REPO = Path(__file__).resolve().parent.parent
NS = 1_000_000_000


def open_tail(
    server: Any, query: str, tenant: str | None = None, small_buffers: bool = False, **params: Any
) -> ClientConnection:
    """Open a tail websocket on the server (the caller closes it).

    With `small_buffers`, the client buffers little (a 32 KiB socket, 4 messages, no compression), so a client
    that stops reading pushes back on the server soon, as a slow browser over a real network would.
    """
    url = server.url.replace("http://", "ws://") + "/loki/api/v1/tail?" + urlencode({"query": query, **params})
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    if not small_buffers:
        return connect(url, additional_headers=headers, proxy=None, open_timeout=10)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect(("127.0.0.1", server.port))
    return connect(url, sock=sock, additional_headers=headers, compression=None, max_queue=4, open_timeout=10)


def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """Return the next tail message, decoded."""
    return orjson.loads(ws.recv(timeout=timeout))


def entries(message: dict[str, Any]) -> list[tuple[int, str, dict[str, str]]]:
    """Return (ts, line, labels) of every entry of a message."""
    return [(int(ts), line, s["stream"]) for s in message["streams"] for ts, line in s["values"]]


def receive_lines(ws: ClientConnection, count: int, timeout: float = 5.0) -> list[str]:
    """Read messages until `count` lines came; return them in order."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {lines} arrived"
        lines += [line for _, line, _ in entries(receive(ws, left))]
    return lines


def nothing_arrives(ws: ClientConnection, seconds: float) -> bool:
    """Say whether no message comes within `seconds`."""
    try:
        ws.recv(timeout=seconds)
    except TimeoutError:
        return True
    return False


def push(server: Any, labels: dict[str, str], lines: list[str], tenant: str | None = None, ts: int = 0) -> None:
    """Push lines to one stream, stamped now (1 ns apart, in order)."""
    base = ts or time.time_ns()
    with server.client(tenant) as c:
        r = push_json(c, [stream(labels, [(base + i, line) for i, line in enumerate(lines)])])
        assert r.status_code == 204, r.text


# --- protocol ----------------------------------------------------------------------------------------------------


def test_tail_sends_history_oldest_first_then_live_entries(server):
    push(server, {"app": "shop"}, ["old 1", "old 2", "old 3"])
    with open_tail(server, '{app="shop"}', limit=2) as ws:
        first = receive(ws)
        # Loki's JSON: one stream object per entry, no dropped_entries when none were dropped.
        assert set(first) == {"streams"}
        assert [line for _, line, _ in entries(first)] == ["old 2", "old 3"]  # the newest `limit`, oldest first
        assert first["streams"][0] == {
            "stream": {"app": "shop", "service_name": "shop"},
            "values": [[first["streams"][0]["values"][0][0], "old 2"]],
        }
        push(server, {"app": "shop"}, ["new 1", "new 2"])
        assert receive_lines(ws, 2) == ["new 1", "new 2"]


def test_a_pushed_line_reaches_the_tail_within_a_second(server):
    with open_tail(server, '{app="fast"}') as ws:
        assert nothing_arrives(ws, 0.3)  # no history
        delays = []
        for i in range(10):
            t0 = time.monotonic()
            push(server, {"app": "fast"}, [f"line {i}"])
            assert receive_lines(ws, 1, timeout=1.0) == [f"line {i}"]
            delays.append(time.monotonic() - t0)
    assert max(delays) < 1.0, delays


def test_entries_from_history_and_live_are_not_sent_twice(server):
    push(server, {"app": "dup"}, ["before"])
    with open_tail(server, '{app="dup"}') as ws:
        push(server, {"app": "dup"}, ["after"])
        assert receive_lines(ws, 2) == ["before", "after"]
        assert nothing_arrives(ws, 0.5)


def test_selector_and_pipeline_are_applied_to_live_entries(server):
    query = '{app="api"} |= "order" | json | level="error" | line_format "{{.msg}} ({{.code}})"'
    with open_tail(server, query) as ws:
        push(server, {"app": "web"}, ['{"level":"error","msg":"order failed in web","code":1}'])
        push(
            server,
            {"app": "api"},
            [
                '{"level":"info","msg":"order placed","code":200}',
                '{"level":"error","msg":"order failed","code":500}',
                '{"level":"error","msg":"login failed","code":401}',
            ],
        )
        message = receive(ws)
        assert [(line, labels) for _, line, labels in entries(message)] == [
            (
                "order failed (500)",
                {"app": "api", "service_name": "api", "level": "error", "msg": "order failed", "code": "500"},
            )
        ]
        assert nothing_arrives(ws, 0.5)


def test_structured_metadata_joins_the_entry_labels(server):
    with open_tail(server, '{app="meta"} | trace_id="abc"') as ws:
        with server.client() as c:
            now = time.time_ns()
            values = [[now, "with trace", {"trace_id": "abc"}], [now + 1, "other trace", {"trace_id": "def"}]]
            assert push_json(c, [stream({"app": "meta"}, values)]).status_code == 204
        (entry,) = entries(receive(ws))
        assert entry[1:] == ("with trace", {"app": "meta", "service_name": "meta", "trace_id": "abc"})


def test_limit_caps_the_history_only(server):
    push(server, {"app": "many"}, [f"old {i}" for i in range(250)])
    with open_tail(server, '{app="many"}', limit=150) as ws:
        history = receive_lines(ws, 150)
        assert history == [f"old {i}" for i in range(100, 250)]
        assert nothing_arrives(ws, 0.3)
        push(server, {"app": "many"}, [f"new {i}" for i in range(300)])
        assert receive_lines(ws, 300) == [f"new {i}" for i in range(300)]


def test_messages_hold_at_most_100_entries(server):
    push(server, {"app": "batch"}, [f"old {i}" for i in range(250)])
    with open_tail(server, '{app="batch"}', limit=250) as ws:
        sizes = [len(entries(receive(ws))) for _ in range(3)]
        assert sizes == [100, 100, 50]


def test_start_bounds_the_history(server):
    now = time.time_ns()
    push(server, {"app": "start"}, ["ten minutes ago"], ts=now - 600 * NS)
    push(server, {"app": "start"}, ["a minute ago"], ts=now - 60 * NS)
    with open_tail(server, '{app="start"}', start=str(now - 120 * NS)) as ws:
        assert receive_lines(ws, 1) == ["a minute ago"]
        assert nothing_arrives(ws, 0.3)


def test_delay_for_holds_entries_and_sends_them_in_time_order(server):
    with open_tail(server, '{app="late"}', delay_for=2) as ws:
        now = time.time_ns()
        push(server, {"app": "late"}, ["second"], ts=now)
        push(server, {"app": "late"}, ["first"], ts=now - 500_000_000)  # late by half a second
        t0 = time.monotonic()
        assert nothing_arrives(ws, 1.0)
        assert receive_lines(ws, 2, timeout=3.0) == ["first", "second"]
        assert time.monotonic() - t0 >= 0.9


# --- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": '{app="x"'}, "parse error at line 1, col 9: syntax error"),
        ({"query": '{app="x"}', "delay_for": "6"}, "delay_for can't be greater than 5"),
        ({"query": '{app="x"}', "delay_for": "-1"}, "delay_for value -1 is out of range [0, 4294967295]"),
        ({"query": '{app="x"}', "limit": "0"}, "limit must be a positive value"),
        ({"query": '{app="x"}', "start": "yesterday"}, "could not parse 'start' parameter"),
    ],
)
def test_bad_parameters_are_refused_with_400_before_the_upgrade(server, params, message):
    url = server.url.replace("http://", "ws://") + "/loki/api/v1/tail?" + urlencode(params)
    with pytest.raises(InvalidStatus) as info:
        connect(url, proxy=None, open_timeout=10)
    assert info.value.response.status_code == 400
    assert message in bytes(info.value.response.body or b"").decode()


def test_metric_queries_are_refused_with_a_close_frame(server):
    with open_tail(server, 'rate({app="x"}[1m])') as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "only log selector is supported")


def test_plain_http_on_the_tail_path_is_a_bad_request(server):
    with server.client() as c:
        assert c.get("/loki/api/v1/tail", params={"query": '{app="x"}'}).status_code == 400
        r = c.get("/loki/api/v1/tail", params={"query": "{"})
        assert r.status_code == 400 and "parse error" in r.text


def test_tenants_are_isolated_when_auth_is_enabled(make_server):
    server = make_server({"auth_enabled": True})
    with pytest.raises(InvalidStatus) as info:
        open_tail(server, '{app="x"}')
    assert info.value.response.status_code == 401
    with (
        open_tail(server, '{app="x"}', tenant="team-a") as ws_a,
        open_tail(server, '{app="x"}', tenant="team-b") as ws_b,
    ):
        push(server, {"app": "x"}, ["for b only"], tenant="team-b")
        assert receive_lines(ws_b, 1) == ["for b only"]
        assert nothing_arrives(ws_a, 0.5)
        push(server, {"app": "x"}, ["for a only"], tenant="team-a")
        assert receive_lines(ws_a, 1) == ["for a only"]
        assert nothing_arrives(ws_b, 0.3)


def test_concurrent_tails_per_tenant_are_limited(make_server):
    server = make_server({"auth_enabled": True, "limits_config": {"max_concurrent_tail_requests": 2}})
    with open_tail(server, '{app="x"}', tenant="t") as one, open_tail(server, '{app="x"}', tenant="t"):
        with open_tail(server, '{app="x"}', tenant="t") as three, pytest.raises(ConnectionClosed) as info:
            three.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        assert info.value.rcvd.reason == (
            "rpc error: code = Code(400) desc = max concurrent tail requests limit exceeded, count > limit (3 > 2)"
        )
        with open_tail(server, '{app="x"}', tenant="other") as other:  # another tenant has its own limit
            assert nothing_arrives(other, 0.2)
        with server.client() as c:
            assert "loki_querier_tail_active 2.0" in c.get("/metrics").text
        one.close()
        # A closed tail frees its place (once the server has seen the close).
        deadline = time.monotonic() + 5
        while True:
            with open_tail(server, '{app="x"}', tenant="t") as again:
                try:
                    assert nothing_arrives(again, 0.3)
                    break
                except ConnectionClosed:
                    assert time.monotonic() < deadline, "the closed tail kept its place"


# --- load and lifecycle --------------------------------------------------------------------------------------------


def test_a_client_that_does_not_read_slows_no_push_and_learns_what_was_dropped(make_server):
    server = make_server({"limits_config": {"ingestion_rate_mb": 1000, "ingestion_burst_size_mb": 1000}})
    lines = [f"line {i:05d} " + os.urandom(150).hex() for i in range(1000)]
    with server.client() as c:
        t0 = time.perf_counter()
        for _ in range(5):
            push_json(c, [stream({"app": "warmup"}, [(time.time_ns(), line) for line in lines[:1]])])
        baseline = []
        for _ in range(10):
            base = time.time_ns()
            t0 = time.perf_counter()
            push_json(c, [stream({"app": "base"}, [(base + i, line) for i, line in enumerate(lines)])])
            baseline.append(time.perf_counter() - t0)
    with open_tail(server, '{app="flood"}', small_buffers=True) as ws:
        timings = []
        with server.client() as c:
            for _ in range(50):  # 50,000 lines while the client reads nothing
                base = time.time_ns()
                t0 = time.perf_counter()
                r = push_json(c, [stream({"app": "flood"}, [(base + i, line) for i, line in enumerate(lines)])])
                timings.append(time.perf_counter() - t0)
                assert r.status_code == 204
        median = sorted(timings)[len(timings) // 2]
        base_median = sorted(baseline)[len(baseline) // 2]
        assert median < max(5 * base_median, 0.25), (median, base_median)
        assert max(timings) < 2.0, timings
        # Now read: the server kept a bounded buffer and reports (some of) what it dropped.
        received = 0
        dropped = []
        while received + len(dropped) < 50_000:
            try:
                message = receive(ws, timeout=3.0)
            except TimeoutError:
                break
            received += len(entries(message))
            dropped += message.get("dropped_entries", [])
        assert 0 < received < 50_000
        assert dropped, "dropped entries were not reported"
        assert len(dropped) <= 1000  # as Loki, at most 1,000 are remembered
        assert set(dropped[0]) == {"timestamp", "labels"}
        assert dropped[0]["labels"] == {"app": "flood", "service_name": "flood"}
        assert int(dropped[0]["timestamp"]) > 0


def test_the_server_stops_promptly_with_tails_open(make_server):
    server = make_server()
    with open_tail(server, '{app="x"}') as reading, open_tail(server, '{app="x"}', small_buffers=True):
        push(server, {"app": "x"}, [f"line {i}" for i in range(5000)])  # the second client reads none of it
        assert len(receive_lines(reading, 5000)) == 5000
        t0 = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - t0 < 10
        with pytest.raises(ConnectionClosed) as info:
            reading.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012  # "service restart", sent by uvicorn
    assert "Traceback" not in server.log()


def test_the_legacy_path_answers_in_the_legacy_shape(server):
    second = time.time_ns() // NS - 60
    push(server, {"app": "legacy"}, ["hello"], ts=second * NS + 123_400_000)
    url = server.url.replace("http://", "ws://") + "/api/prom/tail?" + urlencode({"query": '{app="legacy"}'})
    with connect(url, proxy=None) as ws:
        message = receive(ws)
    stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".1234Z"
    assert message == {
        "streams": [{"labels": '{app="legacy", service_name="legacy"}', "entries": [{"ts": stamp, "line": "hello"}]}],
        "dropped_entries": None,
    }


def test_a_history_longer_than_max_query_length_is_refused_with_a_close_frame(server):
    with open_tail(server, '{app="x"}', start="1") as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert info.value.rcvd.reason.startswith(
        "rpc error: code = Code(400) desc = the query time range exceeds the limit (query length: "
    )


# --- the command line ----------------------------------------------------------------------------------------------


def test_loglake_tail_prints_pushed_lines_and_exits_cleanly_on_ctrl_c(server):
    push(server, {"app": "cli"}, ["from before"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOKI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["LOKI_ADDR"] = server.url
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglake", "tail", '{app="cli"}', "--since", "5m", "-z", "UTC"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert re.fullmatch(r'\S+Z \{app="cli", service_name="cli"\} from before\n', first), first
        push(server, {"app": "cli"}, ["pushed while tailing"])
        t0 = time.monotonic()
        assert proc.stdout.readline().endswith(" pushed while tailing\n")
        assert time.monotonic() - t0 < 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        assert "/loki/api/v1/tail?query=" in stderr  # the URL, as logcli prints it
        assert "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_loglake_tail_reports_a_refused_query(server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOKI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    for query, expected in (
        ('{app="cli"', "parse error at line 1"),
        ('count_over_time({app="cli"}[1m])', "only log selector is supported"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "loglake", "tail", "-q", "--addr", server.url, query],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 1, result
        assert result.stderr.startswith("loglake tail: ") and expected in result.stderr, result.stderr


def test_tail_metrics_are_exported(server):
    with open_tail(server, '{app="m"}'):
        deadline = time.monotonic() + 5
        while "loki_querier_tail_active 1.0" not in httpx.get(server.url + "/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_categorize_labels_flag_splits_stream_labels_from_metadata_and_parsed_labels(server):
    """`X-Loki-Response-Encoding-Flags: categorize-labels` (Grafana's proxy sends it) works on tail as on queries."""
    t = time.time_ns()
    with server.client() as c:
        old = [str(t), 'level=warn msg="slow"', {"trace_id": "old"}]
        assert push_json(c, [stream({"app": "pay"}, [old])]).status_code == 204
    url = server.url.replace("http://", "ws://") + "/loki/api/v1/tail?" + urlencode({"query": '{app="pay"} | logfmt'})
    flags = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}
    with connect(url, additional_headers=flags, proxy=None, open_timeout=10) as ws:
        history = receive(ws)
        with server.client() as c:
            new = [str(t + 1), 'level=error msg="failed"', {"trace_id": "new"}]
            assert push_json(c, [stream({"app": "pay"}, [new])]).status_code == 204
        live = receive(ws)
    stream_labels = {"app": "pay", "service_name": "pay"}
    assert history == {
        "streams": [
            {
                "stream": stream_labels,
                "values": [
                    [
                        str(t),
                        'level=warn msg="slow"',
                        {
                            "structuredMetadata": {"trace_id": "old"},
                            "parsed": {"level": "warn", "msg": "slow"},
                        },
                    ]
                ],
            }
        ],
        "encodingFlags": ["categorize-labels"],
    }
    assert live["streams"][0]["stream"] == stream_labels
    assert live["streams"][0]["values"][0][2] == {
        "structuredMetadata": {"trace_id": "new"},
        "parsed": {"level": "error", "msg": "failed"},
    }
