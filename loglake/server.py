"""`loglake serve`: every server role in one process — HTTP API, WAL, head, flusher — on local disk."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from loglake.api.app import LoglakeApp
from loglake.config import Config
from loglake.store.compact import CompactionPolicy
from loglake.store.memory import use_system_allocator
from loglake.store.store import Store, StoreEvents, StoreSettings

log = logging.getLogger("loglake")

NS = 1_000_000_000


def build_app(config: Config) -> LoglakeApp:
    """Open the store in the configured data directory (replaying the WAL) and build the application."""
    data_dir = Path(config.common.path_prefix).resolve()
    use_system_allocator()
    settings = StoreSettings(
        head_max_bytes=config.ingester.head_max_bytes,
        max_head_age_s=config.ingester.max_chunk_age / NS,
        flush_check_period_s=config.ingester.flush_check_period / NS,
        flush_on_shutdown=config.ingester.wal.flush_on_shutdown,
        wal_enabled=config.ingester.wal.enabled,
        wal_dir=Path(config.ingester.wal.dir).resolve() if config.ingester.wal.dir else None,
        compaction=CompactionPolicy(
            window_ns=config.compactor.block_window,
            quiet_s=config.compactor.compaction_interval / NS,
            zstd_level=config.compactor.zstd_level,
        ),
    )
    events = StoreEvents()
    store = Store(data_dir, settings, events)
    app = LoglakeApp(config, store)
    m = app.metrics
    events.on_wal_sync = lambda seconds, group: (m.wal_sync.observe(seconds), m.wal_group.observe(group))
    events.on_flush = lambda seconds, rows, nbytes: (
        m.flush_duration.observe(seconds),
        m.flushed_rows.inc(rows),
        m.flushed_bytes.inc(nbytes),
    )
    events.on_compaction = lambda seconds, merged, nbytes: (
        m.compaction_duration.observe(seconds),
        m.compacted_blocks.inc(merged),
    )
    return app


def asgi_app(app: LoglakeApp) -> ASGIApp:
    """Wrap the application with a lifespan that marks it ready, runs the ruler and closes the store on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        app.ready = True
        await app.ruler.start()
        try:
            yield
        finally:
            app.ready = False
            await app.ruler.stop()
            log.info("shutting down: flushing the head to blocks")
            app.store.close()

    app.app.router.lifespan_context = lifespan
    return app.app


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM ends in a clean exit 0 after the graceful shutdown, not a re-raise."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGINT and SIGTERM to a graceful shutdown."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


def serve(config: Config) -> None:
    """Run the server until SIGINT/SIGTERM; on shutdown the head is flushed to blocks."""
    level = getattr(logging, str(config.server.log_level).upper(), logging.INFO)
    logging.basicConfig(level=level, format="level=%(levelname)s ts=%(asctime)s caller=%(name)s msg=%(message)s")
    app = build_app(config)
    log.info(
        "loglake listening on http://%s:%d, data in %s",
        config.server.http_listen_address,
        config.server.http_listen_port,
        Path(config.common.path_prefix).resolve(),
    )
    uv = uvicorn.Config(
        asgi_app(app),
        host=config.server.http_listen_address,
        port=config.server.http_listen_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, config.server.graceful_shutdown_timeout // NS),
        timeout_keep_alive=max(1, config.server.http_server_idle_timeout // NS),
    )
    _Server(uv).run()
