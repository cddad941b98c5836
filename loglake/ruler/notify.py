"""Alert notifications: Alertmanager's v2 API, a generic JSON webhook and Slack incoming webhooks.

Every destination has its own bounded queue and sender task, so one slow or broken receiver never delays the
others nor the rule evaluation that produced the alerts. Failures are retried with exponential backoff, then
counted and logged; nothing here raises into the caller.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson

__all__ = [
    "AlertNotice",
    "HttpSender",
    "Notifier",
    "alertmanager_payload",
    "format_rfc3339",
    "query_link",
    "slack_payload",
    "webhook_payload",
]

log = logging.getLogger("loglake.ruler.notify")

# Statuses worth another attempt: the receiver is overloaded or failing, not refusing this request.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def format_rfc3339(ns: int | None) -> str:
    """Return a time in ns since the epoch as RFC 3339 text in UTC, as Go's RFC3339Nano prints it."""
    if not ns:
        return "0001-01-01T00:00:00Z"
    seconds, frac = divmod(ns, 1_000_000_000)
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def query_link(external_url: str, expr: str, start_ns: int, end_ns: int | None = None) -> str:
    """Return the address of loglake's web UI showing `expr` from `start_ns` to `end_ns` (to now when None)."""
    params = {
        "query": expr,
        "from": str(start_ns // 1_000_000),
        "to": str(end_ns // 1_000_000) if end_ns else "now",
    }
    return external_url.rstrip("/") + "/?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


@dataclass(frozen=True)
class AlertNotice:
    """One alert as it is sent out: labels include `alertname`; `ends_at_ns` is set for resolved alerts."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at_ns: int
    ends_at_ns: int
    resolved: bool
    value: float
    expr: str
    generator_url: str
    tenant: str = ""

    @property
    def status(self) -> str:
        """Return `firing` or `resolved`."""
        return "resolved" if self.resolved else "firing"

    @property
    def fingerprint(self) -> str:
        """Return a stable 16-hex-digit id of the label set."""
        text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(self.labels.items()))
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def with_external_labels(alert: AlertNotice, external_labels: Mapping[str, str]) -> AlertNotice:
    """Return the alert with external labels added where it has no label of that name (Prometheus' rule)."""
    missing = {k: v for k, v in external_labels.items() if k not in alert.labels}
    if not missing:
        return alert
    return replace(alert, labels={**alert.labels, **missing})


def alertmanager_payload(alerts: Sequence[AlertNotice]) -> list[dict[str, Any]]:
    """Return the body of Alertmanager's `POST /api/v2/alerts` for the alerts."""
    out = []
    for a in alerts:
        item: dict[str, Any] = {
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": format_rfc3339(a.starts_at_ns),
            "generatorURL": a.generator_url,
        }
        if a.ends_at_ns:
            item["endsAt"] = format_rfc3339(a.ends_at_ns)
        out.append(item)
    return out


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_payload(alerts: Sequence[AlertNotice], external_url: str, receiver: str = "loglake") -> dict[str, Any]:
    """Return a generic webhook document shaped like Alertmanager's webhook (version 4), plus each alert's value."""
    common_labels = _common([a.labels for a in alerts])
    group_labels = {"alertname": common_labels["alertname"]} if "alertname" in common_labels else {}
    return {
        "version": "4",
        "groupKey": "{}:" + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}",
        "truncatedAlerts": 0,
        "status": "firing" if any(not a.resolved for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": [
            {
                "status": a.status,
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": format_rfc3339(a.starts_at_ns),
                "endsAt": format_rfc3339(a.ends_at_ns),
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
                "value": a.value,
            }
            for a in alerts
        ],
    }


def _format_value(value: float) -> str:
    return f"{value:.6g}"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alerts: Sequence[AlertNotice]) -> dict[str, Any]:
    """Return a Slack incoming-webhook message: a summary line and one attachment per alert."""
    firing = [a for a in alerts if not a.resolved]
    names = sorted({a.labels.get("alertname", "") for a in alerts})
    status = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    text = f"[{status}] {', '.join(names)}"
    attachments = []
    for a in alerts:
        name = a.labels.get("alertname", "alert")
        summary = a.annotations.get("summary", "")
        description = a.annotations.get("description", "")
        body = [_slack_escape(s) for s in (summary, description) if s]
        body.append(f"*Value:* {_format_value(a.value)}")
        label_text = ", ".join(f"`{k}={_slack_escape(v)}`" for k, v in sorted(a.labels.items()) if k != "alertname")
        if label_text:
            body.append(f"*Labels:* {label_text}")
        extra = {k: v for k, v in a.annotations.items() if k not in ("summary", "description")}
        attachments.append(
            {
                "fallback": f"[{a.status.upper()}] {name}: {summary or a.expr}",
                "color": "good" if a.resolved else "danger",
                "title": f"[{a.status.upper()}] {name}",
                "title_link": a.generator_url,
                "text": "\n".join(body),
                "fields": [
                    {"title": k, "value": _slack_escape(v), "short": len(v) < 40} for k, v in sorted(extra.items())
                ]
                + [{"title": "Query", "value": f"`{a.expr}`", "short": False}],
                "footer": "loglake ruler",
                "ts": (a.ends_at_ns if a.resolved else a.starts_at_ns) // 1_000_000_000,
                "mrkdwn_in": ["text", "fields"],
            }
        )
    return {"text": text, "attachments": attachments}


@dataclass
class _Item:
    body: bytes
    count: int


@dataclass
class HttpSender:
    """Delivers request bodies to one URL in order, from a bounded queue, with retries and exponential backoff.

    Counters are in units the caller chose (alerts, samples): `sent`, `failed` (gave up after retries or a
    refusal), `dropped` (the queue was full, the oldest item was dropped, as Prometheus' notifier does).
    """

    url: str
    kind: str = "http"
    headers: Mapping[str, str] = field(default_factory=dict)
    max_queue: int = 1000
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 10.0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    attempts: int = 0

    def __post_init__(self) -> None:
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def submit(self, body: bytes, count: int = 1) -> None:
        """Queue one request body that carries `count` units; never blocks."""
        while len(self._queue) >= self.max_queue:
            old = self._queue.popleft()
            self.dropped += old.count
            log.warning("%s queue for %s is full: dropped %d", self.kind, self.url, old.count)
        self._queue.append(_Item(body, count))
        if self._wakeup is not None:
            self._wakeup.set()
        if self._idle is not None:
            self._idle.clear()

    @property
    def queued(self) -> int:
        """Return how many request bodies wait to be sent."""
        return len(self._queue)

    def stats(self) -> dict[str, Any]:
        """Return the destination's counters."""
        return {
            "kind": self.kind,
            "url": self.url,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": self.queued,
        }

    async def start(self, client: httpx.AsyncClient | None = None) -> None:
        """Start the sender task (it uses `client` when given, else its own)."""
        if self._task is not None:
            return
        self._client = client or httpx.AsyncClient(timeout=self.timeout_s)
        self._own_client = client is None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        if self._queue:
            self._wakeup.set()
        else:
            self._idle.set()
        self._task = asyncio.create_task(self._run(), name=f"loglake-{self.kind}-sender")

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued was delivered or given up; return False on timeout."""
        if self._idle is None:
            return not self._queue
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Try to deliver what is queued for up to `drain_timeout` seconds, then stop; the rest is dropped."""
        if self._task is None:
            return
        await self.drain(drain_timeout)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while self._queue:
            self.dropped += self._queue.popleft().count
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None

    async def _run(self) -> None:
        assert self._wakeup is not None and self._idle is not None
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._deliver(self._queue.popleft())

    async def _deliver(self, item: _Item) -> None:
        assert self._client is not None
        delay = self.backoff_s
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            try:
                resp = await self._client.post(self.url, content=item.body, headers=dict(self.headers))
            except httpx.HTTPError as e:
                reason = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code < 300:
                    self.sent += item.count
                    return
                reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in _RETRY_STATUS:
                    break
            if attempt < self.max_attempts:
                log.info(
                    "%s to %s failed (%s), attempt %d, retrying in %.2fs", self.kind, self.url, reason, attempt, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        self.failed += item.count
        log.warning("%s to %s failed, giving up on %d: %s", self.kind, self.url, item.count, reason)


def _json(doc: Any) -> bytes:
    return orjson.dumps(doc)


class Notifier:
    """Sends alerts to every configured Alertmanager, generic webhook and Slack incoming webhook."""

    def __init__(
        self,
        *,
        alertmanager_urls: Sequence[str] = (),
        webhook_urls: Sequence[str] = (),
        slack_webhook_urls: Sequence[str] = (),
        external_url: str = "http://127.0.0.1:3100",
        external_labels: Mapping[str, str] | None = None,
        max_queue: int = 1000,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
    ) -> None:
        json_headers = {"Content-Type": "application/json", "User-Agent": "loglake-ruler"}

        def sender(url: str, kind: str) -> HttpSender:
            return HttpSender(
                url,
                kind=kind,
                headers=json_headers,
                max_queue=max_queue,
                max_attempts=max_attempts,
                backoff_s=backoff_s,
                timeout_s=timeout_s,
            )

        self.external_url = external_url
        self.external_labels = dict(external_labels or {})
        self.alertmanagers = [sender(u.rstrip("/") + "/api/v2/alerts", "alertmanager") for u in alertmanager_urls]
        self.webhooks = [sender(u, "webhook") for u in webhook_urls]
        self.slacks = [sender(u, "slack") for u in slack_webhook_urls]
        self._client: httpx.AsyncClient | None = None

    @property
    def senders(self) -> list[HttpSender]:
        """Return every destination's sender."""
        return [*self.alertmanagers, *self.webhooks, *self.slacks]

    @property
    def has_receivers(self) -> bool:
        """Return whether any webhook or Slack receiver is configured."""
        return bool(self.webhooks or self.slacks)

    async def start(self) -> None:
        """Start the sender tasks."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=max((s.timeout_s for s in self.senders), default=10.0))
        for s in self.senders:
            await s.start(self._client)

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Deliver what is queued (for up to `drain_timeout` seconds) and stop."""
        await asyncio.gather(*(s.stop(drain_timeout) for s in self.senders))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queue is empty; return False on timeout."""
        return all(await asyncio.gather(*(s.drain(timeout) for s in self.senders)))

    def send_alertmanager(self, alerts: Sequence[AlertNotice]) -> None:
        """Queue alerts for every Alertmanager (Prometheus' resend rules are the caller's)."""
        if not alerts or not self.alertmanagers:
            return
        body = _json(alertmanager_payload([with_external_labels(a, self.external_labels) for a in alerts]))
        for s in self.alertmanagers:
            s.submit(body, len(alerts))

    def send_receivers(self, alerts: Sequence[AlertNotice]) -> None:
        """Queue one notification for the alerts to every webhook and Slack receiver."""
        if not alerts or not self.has_receivers:
            return
        alerts = [with_external_labels(a, self.external_labels) for a in alerts]
        if self.webhooks:
            body = _json(webhook_payload(alerts, self.external_url))
            for s in self.webhooks:
                s.submit(body, len(alerts))
        if self.slacks:
            body = _json(slack_payload(alerts))
            for s in self.slacks:
                s.submit(body, len(alerts))

    def stats(self) -> list[dict[str, Any]]:
        """Return each destination's counters (sent, failed, dropped, queued)."""
        return [s.stats() for s in self.senders]
