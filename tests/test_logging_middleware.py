"""LoggingMiddleware on raw ASGI, Starlette and FastAPI apps, driven through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from loglake.logging import JSONFormatter, LoggingMiddleware, TraceContextFilter, get_context

TRACER = TracerProvider().get_tracer("tests")


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(TraceContextFilter())
    logger = logging.getLogger("loglake.access")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    app_logger = logging.getLogger("tests.app")
    app_logger.addHandler(handler)
    app_logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    app_logger.removeHandler(handler)


def docs(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def raw_app(scope, receive, send) -> None:
    if scope["path"] == "/boom":
        raise RuntimeError("database password=hunter2 unreachable")
    logging.getLogger("tests.app").info("handling", extra={"context_seen": get_context().get("request_id")})
    status = 404 if scope["path"] == "/missing" else 503 if scope["path"] == "/down" else 201
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def request(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("10.1.2.3", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_received_and_completed_are_logged_with_request_fields(out) -> None:
    response = request(LoggingMiddleware(raw_app), "POST", "/tasks?x=1")
    received, handling, completed = docs(out)
    assert response.status_code == 201
    assert received["message"] == "Request received" and received["level"] == "info"
    assert (received["endpoint"], received["method"], received["client"]) == ("/tasks", "POST", "10.1.2.3:5555")
    assert completed["message"] == "Request completed"
    assert completed["status_code"] == 201 and completed["endpoint"] == "/tasks" and completed["method"] == "POST"
    assert isinstance(completed["duration_ms"], float) and 0 <= completed["duration_ms"] < 5000
    rid = response.headers["x-request-id"]
    assert len(rid) == 32
    assert (
        received["request_id"] == handling["request_id"] == handling["context_seen"] == completed["request_id"] == rid
    )
    assert get_context() == {}


def test_a_clients_request_id_is_reused_unless_it_looks_forged(out) -> None:
    ok = request(LoggingMiddleware(raw_app), "GET", "/", headers={"X-Request-ID": "abc-123"})
    forged = request(LoggingMiddleware(raw_app), "GET", "/", headers={"X-Request-ID": 'x" level="debug'})
    assert ok.headers["x-request-id"] == "abc-123"
    assert forged.headers["x-request-id"] != 'x" level="debug' and len(forged.headers["x-request-id"]) == 32
    assert [d["request_id"] for d in docs(out)][:3] == ["abc-123"] * 3


def test_client_and_server_errors_are_logged_at_warning_and_error(out) -> None:
    request(LoggingMiddleware(raw_app), "GET", "/missing")
    request(LoggingMiddleware(raw_app, log_received=False), "GET", "/down")
    levels = [(d["message"], d.get("status_code"), d["level"]) for d in docs(out) if d["logger"] == "loglake.access"]
    assert levels == [
        ("Request received", None, "info"),
        ("Request completed", 404, "warning"),
        ("Request completed", 503, "error"),
    ]


def test_an_unhandled_exception_is_logged_with_traceback_and_status_500(out) -> None:
    response = request(LoggingMiddleware(raw_app), "GET", "/boom")
    assert response.status_code == 500
    received, failed = docs(out)
    assert failed["level"] == "error" and failed["status_code"] == 500
    assert failed["message"] == "Unhandled exception: RuntimeError: database password=hunter2 unreachable"
    assert failed["exception"].startswith("Traceback") and "RuntimeError" in failed["exception"]
    assert failed["request_id"] == received["request_id"] and failed["endpoint"] == "/boom"


def test_excluded_paths_and_non_http_scopes_pass_through(out) -> None:
    request(LoggingMiddleware(raw_app, exclude_paths=["/healthz"]), "GET", "/healthz")
    assert [d["message"] for d in docs(out)] == ["handling"]

    events = []

    async def lifespan_app(scope, receive, send) -> None:
        events.append(scope["type"])

    asyncio.run(LoggingMiddleware(lifespan_app)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert events == ["lifespan"]


def test_trace_ids_of_an_enclosing_span_are_on_every_line(out) -> None:
    middleware = LoggingMiddleware(raw_app)

    async def traced(scope, receive, send) -> None:
        with TRACER.start_as_current_span("http") as span:
            traced.trace_id = f"{span.get_span_context().trace_id:032x}"
            await middleware(scope, receive, send)

    request(traced, "GET", "/")
    assert {d["trace_id"] for d in docs(out)} == {traced.trace_id}


def test_starlette_and_fastapi_apps_log_the_route_template(out) -> None:
    import fastapi

    app = fastapi.FastAPI()

    @app.get("/tasks/{task_id}")
    async def get_task(task_id: int) -> dict:
        if task_id == 13:
            raise ValueError("unlucky task")
        return {"id": task_id}

    app.add_middleware(LoggingMiddleware)
    assert request(app, "GET", "/tasks/7").status_code == 200
    assert request(app, "GET", "/tasks/13").status_code == 500
    completed = [d for d in docs(out) if d["message"] != "Request received"]
    assert [(d["endpoint"], d.get("route"), d["status_code"]) for d in completed] == [
        ("/tasks/7", "/tasks/{task_id}", 200),
        ("/tasks/13", "/tasks/{task_id}", 500),
    ]
    assert "ValueError: unlucky task" in completed[1]["exception"]
