"""The Task API: a small FastAPI service with structured, trace-correlated logs shipped to loglake.

Run it with `uvicorn --app-dir examples/task_api app:app`. Every line it logs is one JSON object on stdout with the
request's trace_id, span_id and request_id; with LOKI_URL set, the lines are also pushed to that server.
`GET /tasks/stats` fails while no task is done (a real bug, on purpose): its 500 answer carries the trace id to
look for in loglake.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, Field

from loglake.logging import LoggingMiddleware, current_trace_ids, log_context, setup_logging

SERVICE = os.environ.get("OTEL_SERVICE_NAME", "task-api")

setup_logging(loki_labels={"app": SERVICE}, static_fields={"service": SERVICE})
log = logging.getLogger("task_api")

# A tracer provider of our own, so that spans (and the ids in every log line) exist without any exporter set up;
# point an OTLP exporter at a trace backend here to see the same ids there.
provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("task_api")


class NewTask(BaseModel):
    """What a client sends to create a task."""

    title: str = Field(min_length=1, max_length=200)
    assignee: str | None = None
    estimate_minutes: int = Field(default=30, ge=1)


class Task(NewTask):
    """A stored task."""

    id: int
    done: bool = False
    created_at: float
    done_at: float | None = None


app = FastAPI(title="Task API")
app.add_middleware(LoggingMiddleware, exclude_paths=["/health"])
_tasks: dict[int, Task] = {}
_ids = itertools.count(1)


@app.middleware("http")
async def bind_user(request: Request, call_next: Any) -> Any:
    """Bind the caller's user id (from X-User-ID) to the log context of the request."""
    with log_context(user_id=request.headers.get("x-user-id", "anonymous")):
        return await call_next(request)


@app.exception_handler(Exception)
async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Answer an unexpected error with a 500 that tells the caller which trace to look for."""
    ids = current_trace_ids()
    return JSONResponse({"detail": "internal error", "trace_id": ids[0] if ids else None}, status_code=500)


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness probe (not logged)."""
    return {"status": "ok"}


@app.post("/tasks", status_code=201)
async def create_task(new: NewTask) -> Task:
    """Create a task."""
    with tracer.start_as_current_span("store_task"):
        task = Task(id=next(_ids), created_at=time.time(), **new.model_dump())
        _tasks[task.id] = task
        log.info("Task created", extra={"task_id": task.id, "assignee": task.assignee})
    return task


@app.get("/tasks")
async def list_tasks(done: bool | None = None) -> list[Task]:
    """List tasks, optionally only done or open ones."""
    tasks = [t for t in _tasks.values() if done is None or t.done == done]
    log.info("Tasks listed", extra={"count": len(tasks), "filter_done": done})
    return tasks


@app.get("/tasks/stats")
async def task_stats() -> dict[str, float]:
    """Return how long done tasks took on average compared with their estimate."""
    done = [t for t in _tasks.values() if t.done and t.done_at is not None]
    log.info("Computing task statistics", extra={"done_tasks": len(done), "all_tasks": len(_tasks)})
    took = sum((t.done_at or 0) - t.created_at for t in done) / 60
    estimated = sum(t.estimate_minutes for t in done)
    # The bug the README hunts down: with no done task yet, `done` is empty and this divides by zero.
    return {"average_minutes": took / len(done), "estimate_ratio": took / estimated}


@app.get("/tasks/{task_id}")
async def get_task(task_id: int) -> Task:
    """Return one task."""
    task = _tasks.get(task_id)
    if task is None:
        log.warning("Task not found", extra={"task_id": task_id})
        raise HTTPException(status_code=404, detail=f"task {task_id} not found")
    return task


@app.post("/tasks/{task_id}/complete")
async def complete_task(task_id: int) -> Task:
    """Mark a task done."""
    task = await get_task(task_id)
    task.done, task.done_at = True, time.time()
    log.info("Task completed", extra={"task_id": task_id})
    return task


try:  # Spans for every request, opened around the whole app, so the middleware's lines carry their ids.
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
except ImportError:  # pragma: no cover - the example's extra installs it
    log.warning("opentelemetry-instrumentation-fastapi is not installed: lines carry no trace ids")
else:
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="health")
