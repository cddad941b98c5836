"""LoggingMiddleware: pure ASGI middleware that logs every HTTP request with its outcome and duration."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from loglake.logging.context import bind_context, reset_context

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A request id from a client is reused only if it looks like one; anything else could forge log fields.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1] if len(client) > 1 else None
    return f"{host}:{port}" if port is not None else str(host)


class LoggingMiddleware:
    """Logs "Request received" and "Request completed" (status, duration) for each HTTP request of an ASGI app.

    The request id (from the `X-Request-ID` header when it is a plausible id, else a new one) is bound to the log
    context for the whole request, so every line the handlers log carries it, and is echoed in the response.
    An unhandled exception is logged with its traceback and status 500, then re-raised for the server to answer.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        logger: logging.Logger | str | None = None,
        request_id_header: str = "x-request-id",
        exclude_paths: Iterable[str] = (),
        log_received: bool = True,
    ) -> None:
        self.app = app
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger or "loglake.access")
        self.request_id_header = request_id_header.lower().encode("latin-1")
        self.exclude_paths = frozenset(exclude_paths)
        self.log_received = log_received

    def _request_id(self, scope: Scope) -> str:
        for name, value in scope.get("headers") or ():
            if name.lower() == self.request_id_header:
                text = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(text):
                    return text
                break
        return uuid.uuid4().hex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app for one connection, logging HTTP requests."""
        if scope.get("type") != "http" or scope.get("path") in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        token = bind_context(request_id=request_id)
        fields: dict[str, Any] = {
            "endpoint": scope.get("path", ""),
            "method": scope.get("method", ""),
            "client": _client(scope),
        }
        status: int | None = None
        header_value = request_id.encode("latin-1")

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 200))
                headers = [h for h in message.get("headers") or () if h[0].lower() != self.request_id_header]
                message = {**message, "headers": [*headers, (self.request_id_header, header_value)]}
            await send(message)

        start = time.perf_counter()
        try:
            if self.log_received:
                self.logger.info("Request received", extra=fields)
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            fields.update(self._route(scope), status_code=500, duration_ms=_ms_since(start))
            if isinstance(exc, Exception):
                self.logger.error("Unhandled exception: %s: %s", type(exc).__name__, exc, exc_info=True, extra=fields)
            raise
        else:
            code = status if status is not None else 500
            fields.update(self._route(scope), status_code=code, duration_ms=_ms_since(start))
            level = logging.ERROR if code >= 500 else logging.WARNING if code >= 400 else logging.INFO
            self.logger.log(level, "Request completed", extra=fields)
        finally:
            reset_context(token)

    @staticmethod
    def _route(scope: Scope) -> dict[str, str]:
        # Routers that record the matched route (FastAPI, Starlette) give its template, e.g. /tasks/{task_id}.
        route = getattr(scope.get("route"), "path", None)
        return {"route": route} if isinstance(route, str) else {}


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
