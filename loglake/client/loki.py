"""An HTTP client for any server that speaks Loki's API: queries, labels, series and push."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import cramjam
import httpx
import orjson

from loglake.ingest.pushproto import encode_push

DEFAULT_ADDR = "http://127.0.0.1:3100"


class LokiError(Exception):
    """A request that failed: `status` is the HTTP status, or 0 when the server could not be reached."""

    def __init__(self, status: int, message: str, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.url = url

    def __str__(self) -> str:
        if self.status:
            return f"{self.message} (HTTP {self.status})"
        return self.message


@dataclass
class PushStream:
    """One stream to push: its labels and its entries as (ns timestamp, line) or (ns, line, structured metadata)."""

    labels: Mapping[str, str]
    entries: Sequence[tuple[int, str] | tuple[int, str, Mapping[str, str]]] = field(default_factory=list)


def encode_push_json(streams: Sequence[PushStream]) -> bytes:
    """Return the JSON push body Loki accepts (`{"streams": [{"stream": ..., "values": [[ts, line], ...]}]}`)."""
    body = {
        "streams": [
            {
                "stream": dict(s.labels),
                "values": [[str(e[0]), e[1], dict(e[2])] if len(e) > 2 else [str(e[0]), e[1]] for e in s.entries],
            }
            for s in streams
        ]
    }
    return orjson.dumps(body)


def encode_push_protobuf(streams: Sequence[PushStream]) -> bytes:
    """Return the snappy-compressed protobuf push body Promtail and Alloy send."""
    return bytes(cramjam.snappy.compress_raw(encode_push((s.labels, s.entries) for s in streams)))


def _error_text(response: httpx.Response) -> str:
    """Return what the server said about a failed request (Loki answers with plain text, sometimes JSON)."""
    text = response.text.strip()
    if text.startswith("{"):
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(body, dict):
            for key in ("message", "error"):
                if isinstance(body.get(key), str):
                    return body[key]
    return text or response.reason_phrase


class LokiClient:
    """A client for Loki's HTTP API; times are nanoseconds since the epoch, results are the JSON `data` parts."""

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        org_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        on_request: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.addr = addr.rstrip("/")
        all_headers = {"User-Agent": "loglake-cli"}
        if org_id:
            all_headers["X-Scope-OrgID"] = org_id
        if bearer_token:
            all_headers["Authorization"] = f"Bearer {bearer_token}"
        all_headers.update(headers or {})
        auth = httpx.BasicAuth(username, password or "") if username else None
        self.on_request = on_request
        self._http = httpx.Client(
            base_url=self.addr, headers=all_headers, auth=auth, timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> LokiClient:
        """Return a client configured from LOKI_ADDR, LOKI_ORG_ID, LOKI_USERNAME, LOKI_PASSWORD, LOKI_BEARER_TOKEN."""
        env = {
            "addr": os.environ.get("LOKI_ADDR") or DEFAULT_ADDR,
            "org_id": os.environ.get("LOKI_ORG_ID"),
            "username": os.environ.get("LOKI_USERNAME"),
            "password": os.environ.get("LOKI_PASSWORD"),
            "bearer_token": os.environ.get("LOKI_BEARER_TOKEN"),
        }
        return cls(**{**env, **kwargs})

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> LokiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        """Send a request and return the 2xx answer; raise LokiError with the server's message otherwise."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._http.build_request(method, path, params=clean, **kwargs)
        url = str(request.url)
        if self.on_request:
            self.on_request(url)
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            raise LokiError(0, f"cannot reach {self.addr}: {exc}", url) from None
        if response.status_code // 100 != 2:
            raise LokiError(response.status_code, _error_text(response), url)
        return response

    def _request(self, method: str, path: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON answer (None for an empty body); raise LokiError on failure."""
        response = self._send(method, path, params, **kwargs)
        url = str(response.request.url)
        if not response.content:
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise LokiError(
                response.status_code, f"the server's answer is not JSON: {response.text[:200]!r}", url
            ) from None

    def _data(self, method: str, path: str, params: Mapping[str, Any]) -> Any:
        body = self._request(method, path, params)
        if not isinstance(body, dict) or body.get("status") != "success":
            message = body.get("error") if isinstance(body, dict) else None
            raise LokiError(200, f"unexpected answer from {path}: {message or body!r}")
        return body.get("data")

    def query_range(
        self,
        query: str,
        *,
        start: int,
        end: int,
        limit: int = 100,
        direction: str = "backward",
        step: str | None = None,
        interval: str | None = None,
    ) -> dict[str, Any]:
        """Run a LogQL query over [start, end) and return `data` (`resultType` and `result`)."""
        params = {
            "query": query,
            "start": start,
            "end": end,
            "limit": limit,
            "direction": direction,
            "step": step,
            "interval": interval,
        }
        return self._data("GET", "/loki/api/v1/query_range", params)

    def query(
        self, query: str, *, time: int | None = None, limit: int = 100, direction: str = "backward"
    ) -> dict[str, Any]:
        """Run an instant LogQL (metric) query at `time` (now by default) and return `data`."""
        return self._data(
            "GET", "/loki/api/v1/query", {"query": query, "time": time, "limit": limit, "direction": direction}
        )

    def labels(self, *, start: int | None = None, end: int | None = None, query: str | None = None) -> list[str]:
        """Return the label names seen in the range (of streams matching `query`, if given)."""
        data = self._data("GET", "/loki/api/v1/labels", {"start": start, "end": end, "query": query})
        return list(data or [])

    def label_values(
        self, name: str, *, start: int | None = None, end: int | None = None, query: str | None = None
    ) -> list[str]:
        """Return the values of label `name` seen in the range (of streams matching `query`, if given)."""
        path = f"/loki/api/v1/label/{quote(name, safe='')}/values"
        data = self._data("GET", path, {"start": start, "end": end, "query": query})
        return list(data or [])

    def series(
        self, match: str | Sequence[str], *, start: int | None = None, end: int | None = None
    ) -> list[dict[str, str]]:
        """Return the label sets of the streams matching any of the selectors in `match`."""
        selectors = [match] if isinstance(match, str) else list(match)
        data = self._data("GET", "/loki/api/v1/series", {"match[]": selectors, "start": start, "end": end})
        return list(data or [])

    def push(self, streams: Sequence[PushStream], *, encoding: str = "protobuf") -> None:
        """Push entries as snappy-compressed protobuf (as Promtail does) or `json`; raise LokiError if refused."""
        if encoding == "protobuf":
            content, content_type = encode_push_protobuf(streams), "application/x-protobuf"
        elif encoding == "json":
            content, content_type = encode_push_json(streams), "application/json"
        else:
            raise ValueError(f"unknown push encoding {encoding!r}; use protobuf or json")
        self._request("POST", "/loki/api/v1/push", content=content, headers={"Content-Type": content_type})
