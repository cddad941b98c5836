"""Ruler notifications: Alertmanager, webhook and Slack payloads, retries with backoff, counted failures."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loglake.ruler.notify import (
    AlertNotice,
    HttpSender,
    Notifier,
    alertmanager_payload,
    format_rfc3339,
    query_link,
    slack_payload,
    webhook_payload,
)
from tests.conftest import free_port

T0 = 1_700_000_000 * 1_000_000_000


@dataclass
class Received:
    """One request a Receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP server recording every POST; `statuses` are answered in order, then `default_status`."""

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.got = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.got:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                    receiver.got.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until `count` requests arrived; return all of them."""
        with self.got:
            if not self.got.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def notice(resolved: bool = False, **labels: str) -> AlertNotice:
    labels = {"alertname": "AIErrors", "service": "chat", **labels}
    return AlertNotice(
        labels=labels,
        annotations={"summary": "chat is failing", "description": "7 errors in 1m", "runbook": "https://runbook"},
        starts_at_ns=T0,
        ends_at_ns=T0 + 300 * 10**9,
        resolved=resolved,
        value=7.0,
        expr='sum(count_over_time({namespace="ai-prod"} |~ "error" [1m])) > 5',
        generator_url=query_link("http://loglake:3100", 'sum(count_over_time({namespace="ai-prod"}[1m]))', T0),
        tenant="fake",
    )


def test_rfc3339_prints_as_go_does():
    assert format_rfc3339(T0) == "2023-11-14T22:13:20Z"
    assert format_rfc3339(T0 + 500_000_000) == "2023-11-14T22:13:20.5Z"
    assert format_rfc3339(None) == "0001-01-01T00:00:00Z"


def test_query_link_opens_the_query_in_loglakes_ui():
    link = query_link("http://loglake:3100/", '{app="x"} |= "a b"', T0)
    parsed = urllib.parse.urlsplit(link)
    assert f"{parsed.scheme}://{parsed.netloc}{parsed.path}" == "http://loglake:3100/"
    params = urllib.parse.parse_qs(parsed.query)
    assert params == {"query": ['{app="x"} |= "a b"'], "from": [str(T0 // 10**6)], "to": ["now"]}
    assert " " not in link


def test_alertmanager_payload_is_the_v2_postable_alerts_list():
    [item] = alertmanager_payload([notice()])
    assert item == {
        "labels": {"alertname": "AIErrors", "service": "chat"},
        "annotations": {"summary": "chat is failing", "description": "7 errors in 1m", "runbook": "https://runbook"},
        "startsAt": "2023-11-14T22:13:20Z",
        "endsAt": "2023-11-14T22:18:20Z",
        "generatorURL": notice().generator_url,
    }


def test_webhook_payload_is_shaped_like_alertmanagers():
    doc = webhook_payload([notice(service="chat"), notice(service="search", resolved=True)], "http://loglake:3100")
    assert doc["version"] == "4"
    assert doc["status"] == "firing"
    assert doc["groupLabels"] == {"alertname": "AIErrors"}
    assert doc["commonLabels"] == {"alertname": "AIErrors"}
    assert doc["commonAnnotations"]["summary"] == "chat is failing"
    assert doc["externalURL"] == "http://loglake:3100"
    assert [a["status"] for a in doc["alerts"]] == ["firing", "resolved"]
    assert doc["alerts"][0]["value"] == 7.0
    assert doc["alerts"][0]["fingerprint"] != doc["alerts"][1]["fingerprint"]
    assert webhook_payload([notice(resolved=True)], "")["status"] == "resolved"


def test_slack_payload_carries_name_state_labels_annotations_value_and_link():
    msg = slack_payload([notice()])
    assert msg["text"] == "[FIRING:1] AIErrors"
    [att] = msg["attachments"]
    assert att["title"] == "[FIRING] AIErrors"
    assert att["color"] == "danger"
    assert att["title_link"].startswith("http://loglake:3100/?query=sum%28count_over_time")
    assert "chat is failing" in att["text"] and "7 errors in 1m" in att["text"]
    assert "*Value:* 7" in att["text"]
    assert "`service=chat`" in att["text"]
    assert {"title": "runbook", "value": "https://runbook", "short": True} in att["fields"]
    resolved = slack_payload([notice(resolved=True)])
    assert resolved["text"] == "[RESOLVED] AIErrors"
    assert resolved["attachments"][0]["color"] == "good"


def test_slack_text_is_escaped():
    n = notice()
    n = AlertNotice(**{**n.__dict__, "annotations": {"summary": "a <b> & c"}})
    assert "a &lt;b&gt; &amp; c" in slack_payload([n])["attachments"][0]["text"]


def test_notifier_posts_to_alertmanager_webhook_and_slack(receiver: Receiver):
    async def main() -> Notifier:
        n = Notifier(
            alertmanager_urls=[receiver.url + "/am"],
            webhook_urls=[receiver.url + "/hook"],
            slack_webhook_urls=[receiver.url + "/slack"],
            external_url="http://loglake:3100",
            external_labels={"cluster": "prod", "service": "ignored-because-set"},
        )
        await n.start()
        n.send_alertmanager([notice()])
        n.send_receivers([notice()])
        assert await n.drain(10)
        await n.stop()
        return n

    n = asyncio.run(main())
    by_path = {r.path: r for r in receiver.wait_for(3)}
    am = by_path["/am/api/v2/alerts"]
    assert am.headers["Content-Type"] == "application/json"
    assert am.json()[0]["labels"] == {"alertname": "AIErrors", "service": "chat", "cluster": "prod"}
    assert by_path["/hook"].json()["commonLabels"]["cluster"] == "prod"
    assert by_path["/slack"].json()["text"] == "[FIRING:1] AIErrors"
    assert [(s["kind"], s["sent"], s["failed"], s["dropped"]) for s in n.stats()] == [
        ("alertmanager", 1, 0, 0),
        ("webhook", 1, 0, 0),
        ("slack", 1, 0, 0),
    ]


def run_sender(sender: HttpSender, bodies: list[bytes]) -> HttpSender:
    async def main() -> None:
        await sender.start()
        for b in bodies:
            sender.submit(b, 2)
        assert await sender.drain(10)
        await sender.stop()

    asyncio.run(main())
    return sender


def test_sender_retries_5xx_and_429_then_succeeds(receiver: Receiver):
    receiver.statuses = [500, 429, 503]
    s = run_sender(HttpSender(receiver.url, backoff_s=0.01), [b"one"])
    assert [r.body for r in receiver.requests] == [b"one"] * 4
    assert (s.sent, s.failed, s.dropped, s.attempts) == (2, 0, 0, 4)


def test_sender_gives_up_after_max_attempts_and_counts_the_failure(receiver: Receiver, caplog):
    receiver.default_status = 500
    s = run_sender(HttpSender(receiver.url, backoff_s=0.01, max_attempts=3), [b"one", b"two"])
    assert len(receiver.requests) == 6
    assert (s.sent, s.failed) == (0, 4)
    assert "giving up" in caplog.text and "HTTP 500" in caplog.text


def test_sender_does_not_retry_a_refusal(receiver: Receiver):
    receiver.statuses = [400]
    s = run_sender(HttpSender(receiver.url, backoff_s=0.01), [b"bad", b"good"])
    assert [r.body for r in receiver.requests] == [b"bad", b"good"]
    assert (s.sent, s.failed) == (2, 2)


def test_sender_counts_unreachable_receivers_as_failed():
    s = run_sender(HttpSender(f"http://127.0.0.1:{free_port()}", backoff_s=0.01, max_attempts=2), [b"x"])
    assert (s.sent, s.failed, s.attempts) == (0, 2, 2)


def test_backoff_doubles_between_attempts(receiver: Receiver):
    receiver.statuses = [500, 500, 500]
    times: list[float] = []
    real_post = None

    async def main() -> None:
        nonlocal real_post
        s = HttpSender(receiver.url, backoff_s=0.05, max_backoff_s=0.1)
        await s.start()
        assert s._client is not None
        real_post = s._client.post

        async def post(*args: Any, **kwargs: Any) -> Any:
            times.append(asyncio.get_running_loop().time())
            return await real_post(*args, **kwargs)

        s._client.post = post  # type: ignore[method-assign]
        s.submit(b"x")
        assert await s.drain(10)
        await s.stop()

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    assert 0.045 <= gaps[0] < 0.09 and 0.095 <= gaps[1] and 0.095 <= gaps[2] < 0.19


def test_queue_is_bounded_and_drops_the_oldest(receiver: Receiver):
    async def main() -> HttpSender:
        s = HttpSender(receiver.url, max_queue=2)
        for b in [b"1", b"2", b"3", b"4", b"5"]:
            s.submit(b, 1)
        await s.start()
        assert await s.drain(10)
        await s.stop()
        return s

    s = asyncio.run(main())
    assert [r.body for r in receiver.requests] == [b"4", b"5"]
    assert (s.sent, s.dropped) == (2, 3)
