"""The HTTP API: Loki's paths, parameters, status codes and JSON, over one Store and one query engine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from loglake import __version__
from loglake.api import params as qparams
from loglake.api.metrics import ServerMetrics, StateSource
from loglake.api.params import CATEGORIZE_LABELS, encoding_flags
from loglake.api.tail import TailEndpoint
from loglake.config import Config, config_to_dict
from loglake.ingest.decode import PushDecodeError, decode_push
from loglake.ingest.validate import ValidationResult, Validator
from loglake.logql.engine import QueryEngine, QueryError
from loglake.logql.windows import StepGrid
from loglake.store.store import Store

T = TypeVar("T")
INLINE_INDEX_STREAMS = 20_000  # label and series lookups over at most this many streams run on the event loop

log = logging.getLogger(__name__)

DEFAULT_TENANT = "fake"
REQUEST_BODY_TOO_LARGE = "request_body_too_large"
END_BEFORE_START = "end timestamp must not be before or equal to start time"


def _with_flags(data: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    """Echo the encoding flags in the answer's data, after resultType, as Loki does when any were asked for."""
    if not flags:
        return data
    return {"resultType": data["resultType"], "encodingFlags": flags, **data}


class ApiError(Exception):
    """An answer other than success: HTTP status and the text a person reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(data: Any, status: int = 200) -> Response:
    """Return `data` as JSON."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def success(data: Any) -> Response:
    """Return Loki's success envelope around `data`."""
    return json_response({"status": "success", "data": data})


class LoglakeApp:
    """The server's application object: holds the store, the validator and the engine; builds the routes."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.metrics = ServerMetrics()
        self.metrics.add_state_collector(_StoreState(store))
        self.validator = Validator(config.limits_config)
        self.engine = QueryEngine(store, config.limits_config)
        self.ready = False
        self.max_body = config.distributor.max_recv_msg_size
        self.tail = TailEndpoint(self)
        # Live tail sees each batch once it is durable and deduplicated, on the ingest thread.
        store.events.on_appended = self.tail.hub.publish
        from loglake.ruler.api import Ruler  # the ruler's modules import this one
        from loglake.ruler.metrics import RulerCollector

        self.ruler = Ruler.from_config(config, self.engine)
        self.metrics.registry.register(RulerCollector(self.ruler.manager))
        self.app = Starlette(routes=self._routes())

    # ---- plumbing ---------------------------------------------------------------------------------------------

    def _routes(self) -> list[BaseRoute]:
        from loglake.api.explore import explore_routes
        from loglake.ruler.api import ruler_routes
        from loglake.ui import ui_routes

        h = self.handler
        return [
            *explore_routes(self),
            Route("/loki/api/v1/push", h(self.push, "push"), methods=["POST"]),
            Route("/api/prom/push", h(self.push, "push"), methods=["POST"]),
            Route("/loki/api/v1/query_range", h(self.query_range, "query_range"), methods=["GET", "POST"]),
            Route("/loki/api/v1/query", h(self.query, "query"), methods=["GET", "POST"]),
            Route("/loki/api/v1/labels", h(self.labels, "labels"), methods=["GET", "POST"]),
            Route("/loki/api/v1/label", h(self.labels, "labels"), methods=["GET", "POST"]),
            Route("/loki/api/v1/label/{name}/values", h(self.label_values, "label_values"), methods=["GET", "POST"]),
            Route("/loki/api/v1/series", h(self.series, "series"), methods=["GET", "POST"]),
            Route("/loki/api/v1/index/stats", h(self.index_stats, "index_stats"), methods=["GET", "POST"]),
            Route("/loki/api/v1/index/volume", h(self.index_volume, "index_volume"), methods=["GET", "POST"]),
            Route(
                "/loki/api/v1/index/volume_range", h(self.index_volume, "index_volume_range"), methods=["GET", "POST"]
            ),
            Route("/loki/api/v1/format_query", h(self.format_query, "format_query"), methods=["GET", "POST"]),
            Route("/loki/api/v1/status/buildinfo", h(self.buildinfo, "buildinfo"), methods=["GET"]),
            Route("/ready", h(self.readiness, "ready"), methods=["GET"]),
            Route("/metrics", h(self.prometheus_metrics, "metrics"), methods=["GET"]),
            Route("/config", h(self.show_config, "config"), methods=["GET"]),
            Route("/flush", h(self.flush, "flush"), methods=["POST", "GET"]),
            Route("/ingester/flush", h(self.flush, "flush"), methods=["POST", "GET"]),
            *self.tail.routes(),
            *ruler_routes(self),
            *ui_routes(),
        ]

    def handler(
        self, fn: Callable[[Request], Awaitable[Response]], route: str
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a route's function with the API's error answers and request metrics."""

        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await fn(request)
            except ApiError as exc:
                response = PlainTextResponse(exc.message + "\n", status_code=exc.status)
            except QueryError as exc:
                response = PlainTextResponse(exc.message + "\n", status_code=exc.status)
            except qparams.ParamError as exc:
                response = PlainTextResponse(str(exc) + "\n", status_code=400)
            except Exception:
                log.exception("internal error on %s", request.url.path)
                response = PlainTextResponse("internal server error\n", status_code=500)
            self.metrics.request_duration.labels(request.method, route, str(response.status_code)).observe(
                time.perf_counter() - t0
            )
            return response

        return endpoint

    def tenant(self, request: HTTPConnection) -> str:
        """Return the request's tenant: `X-Scope-OrgID` when auth is on, else Loki's `fake`."""
        if not self.config.auth_enabled:
            return DEFAULT_TENANT
        org = request.headers.get("x-scope-orgid", "").strip()
        if not org:
            raise ApiError(401, "no org id")
        if "|" in org:
            raise ApiError(400, "multi-tenant queries are not supported: one tenant per request")
        if len(org) > 150 or org in (".", "..") or any(c in org for c in "/\\"):
            raise ApiError(400, f"tenant ID '{org}' is not valid: at most 150 characters, no '/' or '\\'")
        return org

    async def _form_pairs(self, request: Request) -> list[tuple[str, str]]:
        """Return the pairs of a url-encoded POST body (as Loki reads query parameters from POST forms)."""
        if request.method != "POST":
            return []
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return []
        cached = getattr(request.state, "form_pairs", None)
        if cached is None:
            body = await self.read_body(request)
            try:
                cached = request.state.form_pairs = parse_qsl(body.decode(), keep_blank_values=True)
            except (UnicodeDecodeError, ValueError) as exc:
                raise ApiError(400, f"invalid form body: {exc}") from None
        return cached

    async def index_call(self, tenant: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a label-index lookup: inline for a small index (a thread hop costs more than the lookup),
        on a worker thread for a large one, so the event loop is never held for long."""
        if self.engine.store.stream_count(tenant) <= INLINE_INDEX_STREAMS:
            return fn(*args)
        return await run_in_threadpool(fn, *args)

    async def form(self, request: Request) -> dict[str, str]:
        """Return query-string and form parameters, the last value of each winning."""
        out = dict(request.query_params)
        out.update(dict(await self._form_pairs(request)))
        return out

    async def form_multi(self, request: Request, key: str) -> list[str]:
        """Return every value of a repeated parameter (`match[]`), from the query string and a POST form."""
        values = request.query_params.getlist(key)
        return values + [v for k, v in await self._form_pairs(request) if k == key]

    # ---- push -------------------------------------------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        """Read the request body, refusing more than the configured size."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise ApiError(413, f"request body too large: {declared} bytes, the limit is {self.max_body} bytes")
        chunks = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > self.max_body:
                raise ApiError(413, f"request body too large: over the limit of {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def push(self, request: Request) -> Response:
        """Accept a push in Loki's protobuf or JSON format; answer only once the entries are durable."""
        tenant = self.tenant(request)
        try:
            body = await self.read_body(request)
        except ApiError as exc:
            declared = request.headers.get("content-length", "")
            # As Loki, a body refused for its size counts its declared (compressed) bytes as discarded.
            if exc.status == 413 and declared.isdigit():
                self.metrics.discarded_bytes.labels(REQUEST_BODY_TOO_LARGE, tenant).inc(int(declared))
            raise
        ctype = request.headers.get("content-type")
        cenc = request.headers.get("content-encoding")
        result = await run_in_threadpool(self._decode_and_validate, body, ctype, cenc, tenant)
        for reason, (lines, nbytes) in result.discarded.items():
            self.metrics.discarded_samples.labels(reason, tenant).inc(lines)
            self.metrics.discarded_bytes.labels(reason, tenant).inc(nbytes)
        # Store what passed even when the answer is an error: as Loki, a 400 or a stream-limit 429 for some
        # streams does not drop the valid streams pushed with them.
        if result.batch is not None and len(result.batch):
            batch = result.batch
            stored = await asyncio.wrap_future(self.store.append(batch))
            self.metrics.lines_received.labels(tenant).inc(len(batch))
            self.metrics.bytes_received.labels(tenant).inc(_line_bytes(batch))
            if stored < len(batch):
                self.metrics.duplicates.labels(tenant).inc(len(batch) - stored)
        if result.status != 204:
            raise ApiError(result.status, result.message or "\n".join(result.errors))
        return Response(status_code=204)

    def _decode_and_validate(self, body: bytes, ctype: str | None, cenc: str | None, tenant: str) -> ValidationResult:
        try:
            pushed = decode_push(body, ctype, cenc, self.max_body)
        except PushDecodeError as exc:
            raise ApiError(400, str(exc)) from None
        return self.validator.validate(
            pushed,
            tenant,
            time.time_ns(),
            lambda sid: self.store.stream_exists(tenant, sid),
            self.store.active_streams(tenant),
        )

    # ---- queries ----------------------------------------------------------------------------------------------

    async def query_range(self, request: Request) -> Response:
        """Run a log or metric query over a time range."""
        tenant = self.tenant(request)
        p = await self.form(request)
        r = _range_query(p)
        flags = encoding_flags(request.headers)
        data = await run_in_threadpool(
            self.engine.query_range,
            tenant,
            r.query,
            r.start,
            r.end,
            r.step,
            r.interval,
            r.limit,
            r.direction,
            CATEGORIZE_LABELS in flags,
        )
        return success(_with_flags(data, flags))

    async def query(self, request: Request) -> Response:
        """Run an instant (metric) query."""
        tenant = self.tenant(request)
        p = await self.form(request)
        at = qparams.parse_time(p.get("time"), qparams.now_ns())
        limit = qparams.parse_limit(p.get("limit"))
        direction = qparams.parse_direction(p.get("direction"))
        data = await run_in_threadpool(self.engine.query_instant, tenant, p.get("query", ""), at, limit, direction)
        return success(_with_flags(data, encoding_flags(request.headers)))

    async def labels(self, request: Request) -> Response:
        """List label names (of streams matching `query`, if given) in the time range."""
        tenant = self.tenant(request)
        p = await self.form(request)
        start, end = qparams.time_range(p, 6 * 3600 * qparams.NS)
        names = await self.index_call(tenant, self.engine.label_names, tenant, p.get("query") or None, start, end)
        return success(names or None)

    async def label_values(self, request: Request) -> Response:
        """List the values of one label (of streams matching `query`, if given) in the time range."""
        tenant = self.tenant(request)
        p = await self.form(request)
        start, end = qparams.time_range(p, 6 * 3600 * qparams.NS)
        name = request.path_params["name"]
        values = await self.index_call(
            tenant, self.engine.label_values, tenant, name, p.get("query") or None, start, end
        )
        return success(values or None)

    async def series(self, request: Request) -> Response:
        """List the label sets of streams matching any `match[]` selector (all streams when none is given)."""
        tenant = self.tenant(request)
        p = await self.form(request)
        start, end = qparams.time_range(p, 6 * 3600 * qparams.NS)
        selectors = await self.form_multi(request, "match[]") or await self.form_multi(request, "match")
        result = await self.index_call(tenant, self.engine.series, tenant, selectors, start, end)
        return success(result)

    async def index_stats(self, request: Request) -> Response:
        """Return streams, chunks, entries and bytes of the streams a selector matches (no envelope, as Loki)."""
        tenant = self.tenant(request)
        p = await self.form(request)
        r = _range_query(p)
        stats = await run_in_threadpool(self.engine.index_stats, tenant, r.query, r.start, r.end)
        return json_response(stats)

    async def index_volume(self, request: Request) -> Response:
        """Return log volume (line bytes) per label group: a vector, or a matrix over steps for volume_range."""
        tenant = self.tenant(request)
        p = await self.form(request)
        start, end = qparams.time_range(p, 6 * 3600 * qparams.NS)
        if end < start:
            raise ApiError(400, END_BEFORE_START)
        limit = qparams.parse_limit(p.get("limit"), 100)
        targets = [t for t in p.get("targetLabels", "").split(",") if t]
        grid = None
        if request.url.path.endswith("volume_range"):
            step = qparams.parse_step_ns(p.get("step"), start, end)
            qparams.check_step(step, start, end)
            grid = StepGrid((start // step) * step, -((-end) // step) * step, step)
        data = await run_in_threadpool(
            self.engine.volume,
            tenant,
            p.get("query", ""),
            start,
            end,
            limit,
            p.get("aggregateBy") or "series",
            targets,
            grid,
        )
        return success(data)

    async def format_query(self, request: Request) -> Response:
        """Return the query in LogQL's canonical form."""
        p = await self.form(request)
        return success(self.engine.format_query(p.get("query", "")))

    # ---- status -----------------------------------------------------------------------------------------------

    async def readiness(self, request: Request) -> Response:
        """Answer 200 `ready` once the WAL is replayed and the server accepts requests."""
        if not self.ready:
            return PlainTextResponse("not ready: starting up\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def prometheus_metrics(self, request: Request) -> Response:
        """Return the Prometheus text exposition of the server's metrics."""
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def show_config(self, request: Request) -> Response:
        """Return the running configuration as YAML, as Loki does."""
        import yaml

        text = yaml.safe_dump(config_to_dict(self.config), sort_keys=False)
        return PlainTextResponse(text, media_type="text/plain; charset=utf-8")

    async def buildinfo(self, request: Request) -> Response:
        """Return version information in Loki's buildinfo shape."""
        return json_response(
            {
                "version": __version__,
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": "",
                "application": "loglake",
            }
        )

    async def flush(self, request: Request) -> Response:
        """Write the heads to blocks now (Loki's `/flush`), answering once done."""
        await run_in_threadpool(self.store.flush)
        return Response(status_code=204)


@dataclass(frozen=True)
class RangeQueryParams:
    """A range query's parameters, checked as Loki's ParseRangeQuery checks them."""

    query: str
    start: int
    end: int
    limit: int
    direction: str
    step: int
    interval: int


def _range_query(p: dict[str, str]) -> RangeQueryParams:
    """Parse and check range-query parameters in Loki's order, so the first error is the one Loki reports."""
    start, end = qparams.time_range(p)
    if end < start:
        raise ApiError(400, END_BEFORE_START)
    limit = qparams.parse_limit(p.get("limit"))
    direction = qparams.parse_direction(p.get("direction"))
    step = qparams.parse_step_ns(p.get("step"), start, end)
    qparams.check_step(step, start, end)
    interval = qparams.parse_interval_ns(p.get("interval"))
    return RangeQueryParams(p.get("query", ""), start, end, limit, direction, step, interval)


def _line_bytes(batch: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.binary_length(batch.line)).as_py() or 0)


class _StoreState(StateSource):
    def __init__(self, store: Store) -> None:
        self.store = store

    def streams_per_tenant(self) -> dict[str, int]:
        return {t: len(s.labels) for t, s in list(self.store.index.tenants.items())}

    def head_bytes(self) -> int:
        return self.store.head_bytes()
