"""Live tail over Loki's websocket (`/loki/api/v1/tail`), as `logcli query --tail` does it."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from loglake.client.loki import LokiError
from loglake.client.query import LogEntry

TAIL_PATH = "/loki/api/v1/tail"
ABNORMAL_CLOSURE = 1006  # the connection broke without a close frame: logcli connects again
RECONNECT_TRIES = 5
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class TailMessage:
    """One message of a tail: new entries in time order, and entries the server dropped (ns, labels)."""

    entries: list[LogEntry]
    dropped: list[tuple[int, dict[str, str]]] = field(default_factory=list)


class TailClosedError(LokiError):
    """The server ended the tail; `code` is the websocket close code, the message its reason."""

    def __init__(self, code: int, reason: str, url: str = "") -> None:
        super().__init__(0, f"the server closed the tail (code {code}): {reason or 'no reason given'}", url)
        self.code = code
        self.reason = reason


def tail_url(addr: str, query: str, *, limit: int, start: int, delay_for: int = 0) -> str:
    """Return the websocket URL of a tail (`ws://` for `http://`, `wss://` for `https://`)."""
    params: dict[str, Any] = {"query": query}
    if delay_for:
        params["delay_for"] = delay_for
    params["limit"] = limit
    params["start"] = start
    base = addr.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return f"{base}{TAIL_PATH}?{urlencode(params)}"


def auth_headers(
    org_id: str | None = None,
    username: str | None = None,
    password: str | None = None,
    bearer_token: str | None = None,
) -> dict[str, str]:
    """Return the headers that say who we are, as the HTTP client sends them."""
    headers = {"User-Agent": "loglake-cli"}
    if org_id:
        headers["X-Scope-OrgID"] = org_id
    if bearer_token:
        headers["Authorization"] = f"Bearer {bearer_token}"
    elif username:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def parse_message(raw: str | bytes) -> TailMessage:
    """Decode one tail message (`streams` and `dropped_entries`) into entries in time order."""
    body = orjson.loads(raw)
    entries = [
        LogEntry(int(value[0]), stream.get("stream") or {}, value[1])
        for stream in body.get("streams") or []
        for value in stream.get("values") or []
    ]
    entries.sort(key=lambda e: e.ts)
    dropped = [(int(d["timestamp"]), d.get("labels") or {}) for d in body.get("dropped_entries") or []]
    return TailMessage(entries, dropped)


def _open(url: str, headers: Mapping[str, str], timeout: float) -> ClientConnection:
    try:
        return connect(
            url,
            additional_headers=dict(headers),
            user_agent_header=None,
            open_timeout=timeout,
            max_size=MAX_MESSAGE_BYTES,
            proxy=None,
        )
    except InvalidStatus as exc:
        body = bytes(exc.response.body or b"").decode(errors="replace").strip()
        raise LokiError(exc.response.status_code, body or exc.response.reason_phrase, url) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise LokiError(0, f"cannot open the tail at {url}: {exc}", url) from None


def tail(
    addr: str,
    query: str,
    *,
    limit: int = 30,
    start: int,
    delay_for: int = 0,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    on_connect: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[TailMessage]:
    """Yield tail messages until the server ends the tail normally; raise LokiError if it refuses or fails.

    If the connection breaks without a close frame, connect again (up to 5 times, as logcli) from the last entry.
    """
    headers = headers or {}
    last_ts: int | None = None
    tries = 0
    while True:
        url = tail_url(addr, query, limit=limit, start=start if last_ts is None else last_ts + 1, delay_for=delay_for)
        if on_connect:
            on_connect(url)
        try:
            ws = _open(url, headers, timeout)
        except LokiError:
            if tries == 0 or tries >= RECONNECT_TRIES:
                raise
            tries += 1
            sleep(min(2.0 ** (tries - 1), 10.0))
            continue
        with ws:
            try:
                for raw in ws:
                    tries = 0
                    message = parse_message(raw)
                    if message.entries:
                        last_ts = message.entries[-1].ts
                    yield message
                return  # closed normally
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else ABNORMAL_CLOSURE
                if code != ABNORMAL_CLOSURE or tries >= RECONNECT_TRIES:
                    raise TailClosedError(code, exc.rcvd.reason if exc.rcvd is not None else "", url) from None
        tries += 1
        sleep(min(2.0 ** (tries - 1), 10.0))
