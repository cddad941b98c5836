"""The agent's push client against a real loglake server: batching, tenants, retries while it is down, 4xx."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from loglake.agent.client import Client, ClientSettings
from loglake.agent.entry import Entry
from tests.helpers import now_ns, read_all


class Done:
    """Collects what the client reports as done."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.lock = threading.Lock()

    def __call__(self, entries: list[Entry]) -> None:
        with self.lock:
            self.entries.extend(entries)

    def wait(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.entries) < n:
            assert time.monotonic() < deadline, f"only {len(self.entries)} of {n} done"
            time.sleep(0.02)


def _entries(n: int, base: int, **labels: str) -> list[Entry]:
    return [Entry({"job": "c", **labels}, f"line {i}", base + i, metadata={"i": str(i)}) for i in range(n)]


def test_batches_reach_the_server_per_tenant_with_external_labels(make_server) -> None:
    server = make_server({"auth_enabled": True})
    done = Done()
    settings = ClientSettings(
        url=server.url + "/loki/api/v1/push",
        tenant_id="team-a",
        batch_wait=0.1,
        batch_bytes=2000,
        external_labels={"cluster": "c1"},
    )
    client = Client(settings, done)
    base = now_ns() - 10**9
    client.send(_entries(300, base))
    other = _entries(5, base + 10**6, job="other")
    for e in other:
        e.tenant = "team-b"
    client.send(other)
    done.wait(305)
    client.stop()
    with server.client("team-a") as c:
        got = read_all(c, '{job="c"}', base, base + 10**9)
    assert [line for _, line, _ in got] == [f"line {i}" for i in range(300)]
    assert got[0][2]["cluster"] == "c1"
    with server.client("team-b") as c:
        assert len(read_all(c, '{job="other"}', base, base + 10**9)) == 5


def test_retries_while_the_server_is_down_and_delivers_once_it_is_back(make_server) -> None:
    server = make_server()
    done = Done()
    registry = CollectorRegistry()
    settings = ClientSettings(
        url=server.url + "/loki/api/v1/push", batch_wait=0.05, min_backoff=0.1, max_backoff=0.5, max_retries=1000
    )
    client = Client(settings, done, registry)
    server.stop()
    base = now_ns() - 10**9
    client.send(_entries(50, base))
    time.sleep(1.5)
    assert done.entries == []
    assert (registry.get_sample_value("promtail_batch_retries_total", {"host": f"127.0.0.1:{server.port}"}) or 0) > 0
    server.start()
    done.wait(50)
    client.stop()
    with server.client() as c:
        assert len(read_all(c, '{job="c"}', base, base + 10**9)) == 50


def test_a_refused_batch_is_dropped_with_a_counter_not_retried(make_server) -> None:
    server = make_server()  # rejects entries older than a week by default
    done = Done()
    registry = CollectorRegistry()
    client = Client(ClientSettings(url=server.url + "/loki/api/v1/push", batch_wait=0.05), done, registry)
    client.send(_entries(3, 1_000_000_000))  # 1970: too old
    done.wait(3, timeout=10)
    client.stop()
    host = f"127.0.0.1:{server.port}"
    assert registry.get_sample_value("promtail_dropped_entries_total", {"host": host, "reason": "ingester_error"}) == 3
    assert (registry.get_sample_value("promtail_batch_retries_total", {"host": host}) or 0) == 0


def test_send_blocks_when_too_much_waits(make_server) -> None:
    server = make_server()
    server.stop()
    client = Client(
        ClientSettings(url=server.url + "/loki/api/v1/push", batch_bytes=100, max_pending_bytes=500, min_backoff=5),
        Done(),
    )
    finished = threading.Event()

    def producer() -> None:
        client.send(_entries(10, now_ns()))  # ~60 bytes: fits
        client.send(_entries(100, now_ns()))  # over the limit: the next send waits
        client.send(_entries(1, now_ns()))
        finished.set()

    threading.Thread(target=producer, daemon=True).start()
    time.sleep(1.0)
    assert not finished.is_set(), "the producer must wait while the server is down"
    client.stop(timeout=0)
    assert finished.wait(5)
