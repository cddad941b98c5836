"""The agent process: targets from the config, tailing, pipelines, clients, positions and its HTTP endpoints.

Entries flow source → relabeled target labels → the job's pipeline → every client. A file's position moves past
a line only once every client has stored it (or dropped it for good) and no pipeline stage still holds it, so a
`kill -9` loses nothing; lines read again after one keep their timestamps, so the server drops the repeats.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from loglake.agent.client import Client, ClientSettings
from loglake.agent.config import AgentConfig, read_file_sd
from loglake.agent.entry import Entry
from loglake.agent.positions import Positions
from loglake.agent.relabel import relabel
from loglake.agent.stages import Pipeline, StageConfigError, build_pipeline
from loglake.agent.tailer import FileGroup, Tailer, TailerSettings

log = logging.getLogger(__name__)

PIPELINE_TICK = 0.1  # how often held entries (multiline) are checked for their max_wait_time


@dataclass
class _Job:
    """One scrape config at run time."""

    name: str
    config: Any
    pipeline: Pipeline
    lock: threading.Lock
    static_groups: list[FileGroup]
    dynamic_groups: list[FileGroup]


def client_settings(cfg: Any) -> ClientSettings:
    """ClientSettings from a parsed `clients` entry."""
    backoff = cfg.backoff_config
    auth = None
    if cfg.basic_auth is not None and cfg.basic_auth.username:
        password = cfg.basic_auth.password or ""
        if cfg.basic_auth.password_file:
            password = Path(cfg.basic_auth.password_file).read_text().strip()
        auth = (cfg.basic_auth.username, password)
    token = cfg.bearer_token
    if cfg.bearer_token_file:
        token = Path(cfg.bearer_token_file).read_text().strip()
    verify: bool | str = True
    tls = getattr(cfg, "tls_config", None)
    if tls is not None:
        verify = tls.ca_file or not tls.insecure_skip_verify
    return ClientSettings(
        url=cfg.url,
        tenant_id=cfg.tenant_id or "",
        batch_wait=cfg.batchwait,
        batch_bytes=cfg.batchsize,
        timeout=cfg.timeout,
        min_backoff=backoff.min_period,
        max_backoff=backoff.max_period,
        max_retries=backoff.max_retries,
        external_labels=dict(cfg.external_labels or {}),
        headers=dict(cfg.headers or {}),
        basic_auth=auth,
        bearer_token=token,
        drop_rate_limited_batches=cfg.drop_rate_limited_batches,
        verify=verify,
    )


def file_groups(job: str, target_sets: list[tuple[list[str], dict[str, str]]], rules: Any) -> list[FileGroup]:
    """Relabel target label sets and make a FileGroup of each that keeps a `__path__`."""
    out = []
    for targets, labels in target_sets:
        for target in targets or [""]:
            base = {"__address__": target, **labels} if target else dict(labels)
            got = relabel(base, rules) if rules else base
            if got is None or not got.get("__path__"):
                continue
            stream = {k: v for k, v in got.items() if not k.startswith("__")}
            exclude = [got["__path_exclude__"]] if got.get("__path_exclude__") else []
            out.append(FileGroup([got["__path__"]], exclude, stream, job))
    return out


class Agent:
    """Runs everything a config describes until stop()."""

    def __init__(self, config: AgentConfig, tailer_settings: TailerSettings | None = None) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self.positions = Positions(Path(config.positions.filename), config.positions.ignore_invalid_yaml)
        self._inflight: dict[int, list[Any]] = {}  # id(entry) -> [source, start, clients still to answer]
        self._inflight_lock = threading.Lock()
        self.clients = [Client(client_settings(c), self._done, self.registry) for c in config.clients]
        settings = tailer_settings or TailerSettings()
        limits = config.limits_config
        if limits.max_line_size:
            settings.max_line_bytes = limits.max_line_size
            settings.truncate_lines = limits.max_line_size_truncate
        settings.rescan_interval = config.target_config.sync_period
        self.tailer = Tailer(self.positions, self._from_files, settings, self.registry)
        self.jobs: dict[str, _Job] = {}
        self._sources: list[Any] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: ThreadingHTTPServer | None = None
        for i, sc in enumerate(config.scrape_configs):
            try:
                pipeline = build_pipeline(sc.pipeline_stages, self.registry, sc.job_name)
            except StageConfigError as exc:
                raise StageConfigError(f"scrape_configs[{i}] (job {sc.job_name!r}).pipeline_stages: {exc}") from None
            sets = [(s.targets, dict(s.labels)) for s in sc.static_configs]
            groups = file_groups(sc.job_name, sets, sc.relabel_configs)
            job = _Job(sc.job_name, sc, pipeline, threading.Lock(), groups, [])
            self.jobs[sc.job_name] = job
        self._update_groups()

    # ---- entries ----------------------------------------------------------------------------------------------

    def _from_files(self, group: FileGroup, entries: list[Entry]) -> None:
        self._process(self.jobs[group.job], entries)

    def from_source(self, job_name: str, entries: list[Entry]) -> None:
        """Entries from a network source (syslog, push API): relabel per entry, then the job's pipeline."""
        job = self.jobs[job_name]
        rules = job.config.relabel_configs
        kept = []
        for e in entries:
            labels = relabel(e.labels, rules) if rules else e.labels
            if labels is None:
                continue
            e.labels = {k: v for k, v in labels.items() if not k.startswith("__")}
            kept.append(e)
        self._process(job, kept)

    def _process(self, job: _Job, entries: list[Entry]) -> None:
        with job.lock:
            out = job.pipeline.process(entries, time.time_ns())
        self._dispatch(out)

    def _dispatch(self, entries: list[Entry]) -> None:
        if not entries:
            return
        with self._inflight_lock:
            for e in entries:
                if e.source:
                    self._inflight[id(e)] = [e.source, e.start, len(self.clients)]
        for c in self.clients:
            c.send(entries)

    def _done(self, entries: list[Entry]) -> None:
        """A client stored (or dropped for good) these entries."""
        with self._inflight_lock:
            for e in entries:
                slot = self._inflight.get(id(e))
                if slot is not None:
                    slot[2] -= 1
                    if slot[2] <= 0:
                        del self._inflight[id(e)]

    def _tick_pipelines(self) -> None:
        while not self._stop.wait(PIPELINE_TICK):
            for job in self.jobs.values():
                with job.lock:
                    out = job.pipeline.flush(time.time_ns())
                self._dispatch(out)

    # ---- positions --------------------------------------------------------------------------------------------

    def sync_positions(self) -> None:
        """Move each file's position to the first line not yet done, and save the positions file."""
        held: dict[str, int] = {}
        with self._inflight_lock:
            for source, start, _ in self._inflight.values():
                held[source] = min(start, held.get(source, start))
        for job in self.jobs.values():
            with job.lock:
                for e in job.pipeline.pending():
                    if e.source:
                        held[e.source] = min(e.start, held.get(e.source, e.start))
        consumed = self.tailer.consumed()
        offsets: dict[str, int] = {}
        for key in list(self.positions.files):
            if key in consumed:
                offsets[key] = min(consumed[key], held.get(key, consumed[key]))
            elif key in held:
                offsets[key] = held[key]
            elif key in self.tailer.closed:
                # Read to its end, and nothing of it waits any more.
                self.positions.forget(key)
                self.tailer.closed.discard(key)
        self.positions.advance(offsets)
        self.positions.save()

    def _sync_loop(self) -> None:
        period = self.config.positions.sync_period
        while not self._stop.wait(period):
            try:
                self.sync_positions()
            except Exception:
                log.exception("saving positions failed")

    # ---- targets ----------------------------------------------------------------------------------------------

    def _update_groups(self) -> None:
        groups = [g for job in self.jobs.values() for g in (*job.static_groups, *job.dynamic_groups)]
        self.tailer.set_groups(groups)

    def set_discovered(self, job_name: str, target_sets: list[tuple[list[str], dict[str, str]]]) -> None:
        """Replace a job's discovered targets (file_sd, kubernetes)."""
        job = self.jobs[job_name]
        job.dynamic_groups = file_groups(job_name, target_sets, job.config.relabel_configs)
        self._update_groups()

    def _file_sd_loop(self, job: _Job) -> None:
        configs = job.config.file_sd_configs
        interval = min(c.refresh_interval for c in configs)
        while True:
            sets: list[tuple[list[str], dict[str, str]]] = []
            for c in configs:
                for pattern in c.files:
                    for path in sorted(glob.glob(pattern)):
                        try:
                            sets += [(s.targets, dict(s.labels)) for s in read_file_sd(Path(path))]
                        except (OSError, ValueError) as exc:
                            log.warning("cannot read file_sd file %s: %s", path, exc)
            self.set_discovered(job.name, sets)
            if self._stop.wait(interval):
                return

    def _start_sources(self) -> None:
        for job in self.jobs.values():
            sc = job.config
            if sc.file_sd_configs:
                self._thread(self._file_sd_loop, job)
            if sc.kubernetes_sd_configs:
                from loglake.agent.kubernetes import PodDiscovery, settings_from_config

                node = os.environ.get("HOSTNAME") or socket.gethostname()
                for kc in sc.kubernetes_sd_configs:
                    name = job.name

                    def update(targets: list[dict[str, str]], name: str = name) -> None:
                        self.set_discovered(name, [([], t) for t in targets])

                    d = PodDiscovery(settings_from_config(kc, os.environ.get("LOGLAKE_NODE_NAME", node)), update)
                    d.start()
                    self._sources.append(d)
            if sc.syslog is not None:
                from loglake.agent.syslog import SyslogSettings, SyslogTarget

                y = sc.syslog
                st = SyslogTarget(
                    SyslogSettings(
                        listen_address=y.listen_address,
                        listen_protocol=y.listen_protocol,
                        idle_timeout=y.idle_timeout,
                        label_structured_data=y.label_structured_data,
                        labels=dict(y.labels or {}),
                        use_incoming_timestamp=y.use_incoming_timestamp,
                        use_rfc5424_message=y.use_rfc5424_message,
                        max_message_length=y.max_message_length,
                        syslog_format=y.syslog_format,
                    ),
                    lambda entries, name=job.name: self.from_source(name, entries),
                )
                st.start()
                self._sources.append(st)
            if sc.loki_push_api is not None:
                from loglake.agent.pushapi import PushApiSettings, PushApiTarget

                p = sc.loki_push_api
                pt = PushApiTarget(
                    PushApiSettings(
                        listen_address=p.server.http_listen_address or "0.0.0.0",
                        listen_port=p.server.http_listen_port,
                        labels=dict(p.labels or {}),
                        use_incoming_timestamp=p.use_incoming_timestamp,
                        max_send_msg_size=p.max_send_msg_size,
                    ),
                    lambda entries, name=job.name: self.from_source(name, entries),
                )
                pt.start()
                self._sources.append(pt)
            if sc.journal is not None:
                log.error("job %s: the journal source is not supported by loglake agent (see docs/agent.md)", job.name)

    # ---- life -------------------------------------------------------------------------------------------------

    def _thread(self, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def start(self) -> None:
        """Start tailing, sources, the pipeline ticker, position syncing and the HTTP endpoints."""
        self._start_http()
        self._start_sources()
        self.tailer.start()
        self._thread(self._tick_pipelines)
        self._thread(self._sync_loop)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop reading, send what is held and queued (up to `timeout`), save positions."""
        self._stop.set()
        for s in self._sources:
            s.stop()
        self.tailer.stop()
        for job in self.jobs.values():
            with job.lock:
                out = job.pipeline.flush(time.time_ns(), force=True)
            self._dispatch(out)
        for c in self.clients:
            c.stop(timeout)
        self.sync_positions()
        self.positions.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def _start_http(self) -> None:
        srv = self.config.server
        if getattr(srv, "disable", False):
            return
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, generate_latest(agent.registry), CONTENT_TYPE_LATEST)
                elif path == "/ready":
                    self._send(200, b"Ready\n", "text/plain")
                elif path == "/targets":
                    body = json.dumps(agent.tailer.targets(), indent=1).encode()
                    self._send(200, body, "application/json")
                else:
                    self._send(404, b"404 page not found\n", "text/plain")

        self._http = ThreadingHTTPServer((srv.http_listen_address, srv.http_listen_port), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        log.info("agent listening on http://%s:%d", *self._http.server_address[:2])
