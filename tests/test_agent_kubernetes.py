"""Kubernetes pod discovery (Promtail's kubernetes_sd_configs, role pod) against a fake API server.

A real Kubernetes API server cannot run in this test environment, so `FakeKube` stands in for one: a
ThreadingHTTPServer on 127.0.0.1 that serves `GET /api/v1/pods` and `/api/v1/namespaces/{ns}/pods` as PodList JSON
in the real API's shape (with pagination), honours `fieldSelector` on spec.nodeName, and streams watch events as
chunked newline-delimited JSON from a resourceVersion, answering 410 Gone when that version has been compacted.
Tests mutate its pods and assert what the discovery reports after each change.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from loglake.agent.kubernetes import (
    KubeConfigError,
    KubeSettings,
    PodDiscovery,
    in_cluster_settings,
    load_kubeconfig,
    pod_targets,
    settings_from_config,
)

M = "__meta_kubernetes_"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"


# ---------------------------------------------------------------------------------------------------------------
# Pods in the API's JSON shape


def make_pod(
    name: str,
    ns: str = "default",
    node: str | None = "node-a",
    ip: str = "10.1.0.5",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    ready: str | None = "True",
    phase: str = "Running",
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    containers = containers if containers is not None else [{"name": "app", "image": "example/app:1"}]
    init_containers = init_containers or []
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}"}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owner:
        meta["ownerReferences"] = [owner]
    spec: dict[str, Any] = {"containers": containers}
    if init_containers:
        spec["initContainers"] = init_containers
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": "192.168.0.10",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "containerStatuses": [
            {"name": c["name"], "containerID": f"containerd://{name}-{c['name']}", "ready": True} for c in containers
        ],
    }
    if init_containers:
        status["initContainerStatuses"] = [
            {"name": c["name"], "containerID": f"containerd://{name}-{c['name']}", "ready": False}
            for c in init_containers
        ]
    if ready is not None:
        status["conditions"].append({"type": "Ready", "status": ready})
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "spec": spec, "status": status}


# ---------------------------------------------------------------------------------------------------------------
# The fake API server


def _selector_terms(selector: str) -> list[tuple[str, str, str]]:
    terms = []
    for term in filter(None, selector.split(",")):
        for op in ("!=", "==", "="):
            if op in term:
                key, value = term.split(op, 1)
                terms.append((key, "!=" if op == "!=" else "=", value))
                break
    return terms


_POD_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "spec.nodeName": lambda p: p["spec"].get("nodeName", ""),
    "status.phase": lambda p: p["status"].get("phase", ""),
    "metadata.name": lambda p: p["metadata"]["name"],
    "metadata.namespace": lambda p: p["metadata"]["namespace"],
}


class FakeKube:
    """The pods part of a Kubernetes API server: list with pagination, watch from a resourceVersion, 410 Gone."""

    def __init__(self, token: str | None = None, page_size: int = 1000) -> None:
        self.token = token
        self.page_size = page_size
        self.pods: dict[str, dict[str, Any]] = {}
        self.rv = 1000
        self.oldest_rv = 0  # watches from an older resourceVersion get 410 Gone
        self.gone_as_event = False  # send 410 as an ERROR event in a 200 stream instead of an HTTP 410
        self.events: list[tuple[int, str, dict[str, Any] | None, dict[str, Any] | None]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.cond = threading.Condition()
        self.generation = 0  # bumping it ends every open watch stream
        self.open_watches = 0
        self.sent_rv = 0  # the newest event any watch stream has written (or skipped as filtered)
        self.peer_certs: list[dict[str, Any]] = []  # client certificates seen over TLS
        self.closed = False
        self.url = ""

    # -- what tests do to the cluster ----------------------------------------------------------------------------

    def _record(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        self.events.append((self.rv, kind, old, new))
        self.cond.notify_all()

    def put(self, pod: dict[str, Any]) -> None:
        """Create or replace a pod (ADDED or MODIFIED)."""
        with self.cond:
            self.rv += 1
            pod = json.loads(json.dumps(pod))
            pod["metadata"]["resourceVersion"] = str(self.rv)
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            old = self.pods.get(key)
            self.pods[key] = pod
            self._record("MODIFIED" if old else "ADDED", old, pod)

    def forget(self, ns: str, name: str) -> None:
        """Remove a pod with no watch event, as if its DELETED event had been compacted away."""
        with self.cond:
            self.rv += 1
            del self.pods[f"{ns}/{name}"]

    def delete(self, ns: str, name: str) -> None:
        with self.cond:
            self.rv += 1
            old = self.pods.pop(f"{ns}/{name}")
            old = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.rv)}}
            self._record("DELETED", old, None)

    def bookmark(self) -> int:
        with self.cond:
            self.rv += 1
            self._record("BOOKMARK", None, None)
            return self.rv

    def end_watches(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: watches from any earlier version now get 410."""
        with self.cond:
            self.rv += 1
            self.oldest_rv = self.rv
            self.events.clear()
            self.generation += 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def watch_requests(self) -> list[dict[str, str]]:
        with self.cond:
            return [q for _, q in self.requests if q.get("watch") == "1"]

    def wait_open_watches(self, n: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.open_watches >= n, timeout), "the client did not open its watch"

    def wait_sent(self, rv: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.sent_rv >= rv, timeout), f"event {rv} was never streamed"

    def wait_requests(self, pred: Callable[[list[tuple[str, dict[str, str]]]], bool], timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.requests), timeout), f"requests so far: {self.requests}"

    def list_count(self) -> int:
        with self.cond:
            return sum(1 for _, q in self.requests if "watch" not in q)

    # -- serving -------------------------------------------------------------------------------------------------

    @staticmethod
    def _matches(pod: dict[str, Any] | None, ns: str | None, terms: list[tuple[str, str, str]]) -> bool:
        if pod is None or (ns is not None and pod["metadata"]["namespace"] != ns):
            return False
        for key, op, value in terms:
            got = _POD_FIELDS[key](pod)
            if (got == value) != (op == "="):
                return False
        return True

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self.cond:
            self.requests.append((url.path, query))
            if isinstance(h.connection, ssl.SSLSocket):
                self.peer_certs.append(h.connection.getpeercert() or {})
            self.cond.notify_all()
        parts = url.path.strip("/").split("/")
        if parts == ["api", "v1", "pods"]:
            ns = None
        elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            ns = parts[3]
        else:
            return self._status(h, 404, "NotFound", f"the server could not find {url.path}")
        if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._status(h, 401, "Unauthorized", "Unauthorized")
        terms = _selector_terms(query.get("fieldSelector", ""))
        for key, _, _ in terms:
            if key not in _POD_FIELDS:
                return self._status(h, 400, "BadRequest", f'field label not supported: "{key}"')
        if query.get("watch") in ("1", "true"):
            return self._watch(h, ns, terms, int(query.get("resourceVersion") or 0), float(query["timeoutSeconds"]))
        with self.cond:
            items = [p for k, p in sorted(self.pods.items()) if self._matches(p, ns, terms)]
            rv = self.rv
        offset = int(query.get("continue") or 0)
        limit = min(int(query.get("limit") or 10**9), self.page_size)
        page = items[offset : offset + limit]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if offset + limit < len(items):
            meta["continue"] = str(offset + limit)
        self._json(h, 200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})

    def _json(self, h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _status(self, h: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
        self._json(h, code, {**body, "code": code})

    def _watch(
        self, h: BaseHTTPRequestHandler, ns: str | None, terms: list[tuple[str, str, str]], rv: int, timeout: float
    ) -> None:
        gone = rv < self.oldest_rv
        if gone and not self.gone_as_event:
            return self._status(h, 410, "Expired", f"too old resource version: {rv} ({self.oldest_rv})")
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def chunk(obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode() + b"\n"
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        if gone:
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410}
            chunk({"type": "ERROR", "object": {**status, "message": f"too old resource version: {rv}"}})
        else:
            deadline = time.monotonic() + timeout
            with self.cond:
                generation = self.generation
                self.open_watches += 1
                self.cond.notify_all()
            try:
                while True:
                    with self.cond:
                        self.cond.wait_for(
                            lambda since=rv: (
                                self.closed
                                or self.generation != generation
                                or time.monotonic() > deadline
                                or any(e[0] > since for e in self.events)
                            ),
                            timeout=max(0.0, deadline - time.monotonic()),
                        )
                        if self.closed or self.generation != generation or time.monotonic() > deadline:
                            break
                        pending = [e for e in self.events if e[0] > rv]
                    for erv, kind, old, new in pending:
                        rv = erv
                        out = self._filtered(kind, old, new, ns, terms, erv)
                        if out is not None:
                            chunk(out)
                        with self.cond:
                            self.sent_rv = max(self.sent_rv, erv)
                            self.cond.notify_all()
            finally:
                with self.cond:
                    self.open_watches -= 1
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def _filtered(
        self,
        kind: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        ns: str | None,
        terms: list[tuple[str, str, str]],
        rv: int,
    ) -> dict[str, Any] | None:
        """The event a watch with these selectors sees: objects entering or leaving the selection are ADDED/DELETED."""
        if kind == "BOOKMARK":
            return {
                "type": "BOOKMARK",
                "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}},
            }
        was, now = self._matches(old, ns, terms), self._matches(new, ns, terms)
        if kind == "DELETED":
            return {"type": "DELETED", "object": old} if was else None
        if now:
            return {"type": "MODIFIED" if was else "ADDED", "object": new}
        if was:
            return {"type": "DELETED", "object": new}
        return None


def _serve(fake: FakeKube, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            fake.handle(self)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # clients hanging up on a watch stream are normal here

    server = Server(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    fake.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    kube = FakeKube()
    server = _serve(kube)
    yield kube
    kube.close()
    server.shutdown()
    server.server_close()


class Recorder:
    """The on_targets callback: remembers every target list and lets a test wait for one it expects."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.cond = threading.Condition()

    def __call__(self, targets: list[dict[str, str]]) -> None:
        with self.cond:
            self.calls.append(targets)
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[list[dict[str, str]]], bool], timeout: float = 10.0) -> list[dict[str, str]]:
        with self.cond:
            ok = self.cond.wait_for(lambda: bool(self.calls) and pred(self.calls[-1]), timeout)
            assert ok, f"targets never matched; last: {self.calls[-1] if self.calls else None}"
            return self.calls[-1]


def pods_of(targets: list[dict[str, str]]) -> set[str]:
    return {f"{t[M + 'namespace']}/{t[M + 'pod_name']}" for t in targets}


@pytest.fixture
def discover(fake: FakeKube) -> Iterator[Callable[..., tuple[PodDiscovery, Recorder]]]:
    started: list[PodDiscovery] = []

    def start(settings: KubeSettings | None = None, **kwargs: Any) -> tuple[PodDiscovery, Recorder]:
        rec = Recorder()
        settings = settings or KubeSettings(api_server=fake.url, node_name="node-a")
        d = PodDiscovery(settings, rec, min_backoff_s=0.05, max_backoff_s=0.2, **kwargs)
        started.append(d)
        d.start()
        return d, rec

    yield start
    for d in started:
        d.stop()


# ---------------------------------------------------------------------------------------------------------------
# Labels


def test_pod_targets_have_the_labels_of_prometheus_pod_role() -> None:
    pod = make_pod(
        "web-7d9f-abcde",
        ns="shop",
        labels={"app.kubernetes.io/name": "web", "tier": "front"},
        annotations={"logging/enabled": "true", "prometheus.io-port": "9100"},
        containers=[
            {
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}, {"containerPort": 9113}],
            },
            {"name": "sidecar", "image": "busybox"},
        ],
        init_containers=[{"name": "migrate", "image": "example/migrate"}],
        owner={"kind": "ReplicaSet", "name": "web-7d9f", "controller": True, "apiVersion": "apps/v1", "uid": "x"},
    )
    targets = pod_targets(pod)
    common = {
        M + "namespace": "shop",
        M + "pod_name": "web-7d9f-abcde",
        M + "pod_ip": "10.1.0.5",
        M + "pod_ready": "true",
        M + "pod_phase": "Running",
        M + "pod_node_name": "node-a",
        M + "pod_host_ip": "192.168.0.10",
        M + "pod_uid": "uid-shop-web-7d9f-abcde",
        M + "pod_label_app_kubernetes_io_name": "web",
        M + "pod_labelpresent_app_kubernetes_io_name": "true",
        M + "pod_label_tier": "front",
        M + "pod_labelpresent_tier": "true",
        M + "pod_annotation_logging_enabled": "true",
        M + "pod_annotationpresent_logging_enabled": "true",
        M + "pod_annotation_prometheus_io_port": "9100",
        M + "pod_annotationpresent_prometheus_io_port": "true",
        M + "pod_controller_kind": "ReplicaSet",
        M + "pod_controller_name": "web-7d9f",
    }

    def container(name: str, image: str, init: str) -> dict[str, str]:
        return {
            M + "pod_container_name": name,
            M + "pod_container_id": f"containerd://web-7d9f-abcde-{name}",
            M + "pod_container_image": image,
            M + "pod_container_init": init,
        }

    assert targets == [
        {
            **common,
            **container("web", "nginx:1.27", "false"),
            "__address__": "10.1.0.5:80",
            M + "pod_container_port_name": "http",
            M + "pod_container_port_number": "80",
            M + "pod_container_port_protocol": "TCP",
        },
        {
            **common,
            **container("web", "nginx:1.27", "false"),
            "__address__": "10.1.0.5:9113",
            M + "pod_container_port_name": "",
            M + "pod_container_port_number": "9113",
            M + "pod_container_port_protocol": "",
        },
        {**common, **container("sidecar", "busybox", "false"), "__address__": "10.1.0.5"},
        {**common, **container("migrate", "example/migrate", "true"), "__address__": "10.1.0.5"},
    ]


def test_pod_without_an_ip_has_no_targets() -> None:
    assert pod_targets(make_pod("pending", ip="", node=None)) == []


def test_readiness_is_unknown_without_a_ready_condition_and_owner_without_controller_flag_is_no_controller() -> None:
    pod = make_pod("p", ready=None, owner={"kind": "Node", "name": "node-a"})
    (target,) = pod_targets(pod)
    assert target[M + "pod_ready"] == "unknown"
    assert M + "pod_controller_kind" not in target
    assert pod_targets(make_pod("p", ready="False"))[0][M + "pod_ready"] == "false"


def test_container_without_status_yet_has_an_empty_container_id() -> None:
    pod = make_pod("p")
    pod["status"]["containerStatuses"] = []
    assert pod_targets(pod)[0][M + "pod_container_id"] == ""


def test_ipv6_pod_address_is_bracketed_when_a_port_is_joined() -> None:
    pod = make_pod("p", ip="fd00::5", containers=[{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}])
    assert pod_targets(pod)[0]["__address__"] == "[fd00::5]:8080"
    assert pod_targets(make_pod("q", ip="fd00::6"))[0]["__address__"] == "fd00::6"


@given(st.dictionaries(st.text(min_size=1, max_size=30), st.text(max_size=20), max_size=8))
def test_every_annotation_becomes_a_valid_label_name_keeping_its_value(annotations: dict[str, str]) -> None:
    (target,) = pod_targets(make_pod("p", annotations=annotations))

    assert all(re.fullmatch(LABEL_NAME, name) for name in target)
    for key, value in annotations.items():
        sanitized = re.sub(r"[^a-zA-Z0-9_]", "_", key)
        assert target[M + "pod_annotationpresent_" + sanitized] == "true"
        # Keys that sanitize to the same name collide; the value then comes from one of them.
        colliding = [v for k, v in annotations.items() if re.sub(r"[^a-zA-Z0-9_]", "_", k) == sanitized]
        assert target[M + "pod_annotation_" + sanitized] in colliding
        if len(colliding) == 1:
            assert target[M + "pod_annotation_" + sanitized] == value


# ---------------------------------------------------------------------------------------------------------------
# List and watch


def test_discovery_lists_then_follows_added_modified_and_deleted_pods_of_its_node(fake: FakeKube, discover) -> None:
    fake.put(make_pod("a1"))
    fake.put(make_pod("b1", node="node-b"))
    d, rec = discover()
    assert d.wait_synced(10)
    assert pods_of(rec.wait_for(lambda t: True)) == {"default/a1"}
    fake.wait_open_watches(1)

    # The list and the watch both ask the server for this node's pods only, and the watch starts at the list's version.
    lists = [q for p, q in fake.requests if q.get("watch") is None]
    assert lists[0]["fieldSelector"] == "spec.nodeName=node-a"
    watch = fake.watch_requests()[0]
    assert watch["fieldSelector"] == "spec.nodeName=node-a"
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["resourceVersion"] == "1002"

    fake.put(make_pod("b2", node="node-b"))  # another node: never a target
    fake.put(make_pod("a2", ns="kube-system"))
    rec.wait_for(lambda t: pods_of(t) == {"default/a1", "kube-system/a2"})

    fake.put(make_pod("a1", annotations={"logging/enabled": "true"}))
    targets = rec.wait_for(lambda t: any(M + "pod_annotation_logging_enabled" in x for x in t))
    (a1,) = [t for t in targets if t[M + "pod_name"] == "a1"]
    assert a1[M + "pod_annotation_logging_enabled"] == "true"
    assert a1[M + "pod_annotationpresent_logging_enabled"] == "true"

    # A pod created before scheduling has no node: it appears once bound to this node and gets its IP.
    fake.put(make_pod("late", node=None, ip=""))
    fake.put(make_pod("late", node="node-a", ip=""))
    fake.put(make_pod("late", node="node-a", ip="10.1.0.9"))
    targets = rec.wait_for(lambda t: "default/late" in pods_of(t))
    assert [t["__address__"] for t in targets if t[M + "pod_name"] == "late"] == ["10.1.0.9"]

    fake.delete("default", "a1")
    fake.delete("default", "b1")
    rec.wait_for(lambda t: pods_of(t) == {"kube-system/a2", "default/late"})
    assert pods_of(d.targets()) == {"kube-system/a2", "default/late"}
    assert all("node-b" not in t[M + "pod_node_name"] for call in rec.calls for t in call)


def test_unchanged_targets_do_not_call_back(fake: FakeKube, discover) -> None:
    fake.put(make_pod("a1"))
    _d, rec = discover()
    rec.wait_for(lambda t: pods_of(t) == {"default/a1"})
    fake.wait_open_watches(1)
    before = len(rec.calls)
    fake.put(make_pod("a1"))  # only the resourceVersion changes, as a status heartbeat would
    fake.put(make_pod("a2"))
    rec.wait_for(lambda t: pods_of(t) == {"default/a1", "default/a2"})
    assert len(rec.calls) == before + 1


def test_watch_410_gone_response_forces_a_relist(fake: FakeKube, discover) -> None:
    fake.put(make_pod("a1"))
    fake.put(make_pod("a2"))
    _d, rec = discover()
    rec.wait_for(lambda t: pods_of(t) == {"default/a1", "default/a2"})
    fake.wait_open_watches(1)
    lists_before = fake.list_count()
    # a1's deletion is compacted away: no watch can show it, only a new list does.
    fake.forget("default", "a1")
    fake.compact()
    rec.wait_for(lambda t: pods_of(t) == {"default/a2"})
    assert fake.list_count() == lists_before + 1
    gone = [q for q in fake.watch_requests() if int(q["resourceVersion"]) < fake.oldest_rv]
    assert gone, "the client never asked for the expired version"
    # After the re-list the client watches again from the new list's version.
    fake.wait_open_watches(1)
    fake.put(make_pod("a3"))
    rec.wait_for(lambda t: pods_of(t) == {"default/a2", "default/a3"})


def test_watch_error_event_with_code_410_forces_a_relist(fake: FakeKube, discover) -> None:
    fake.gone_as_event = True
    fake.put(make_pod("a1"))
    fake.put(make_pod("a2"))
    _d, rec = discover()
    rec.wait_for(lambda t: pods_of(t) == {"default/a1", "default/a2"})
    fake.wait_open_watches(1)
    fake.forget("default", "a1")
    fake.compact()
    rec.wait_for(lambda t: pods_of(t) == {"default/a2"})
    fake.wait_open_watches(1)
    fake.put(make_pod("a3"))
    rec.wait_for(lambda t: pods_of(t) == {"default/a2", "default/a3"})


def test_an_ended_watch_resumes_from_the_last_bookmark_without_relisting(fake: FakeKube, discover) -> None:
    fake.put(make_pod("a1"))
    _d, rec = discover()
    rec.wait_for(lambda t: pods_of(t) == {"default/a1"})
    fake.wait_open_watches(1)
    fake.put(make_pod("elsewhere", node="node-b"))  # filtered out: this watch never sees it
    rv = fake.bookmark()
    fake.wait_sent(rv)
    fake.end_watches()
    fake.wait_requests(lambda reqs: sum(1 for _, q in reqs if q.get("watch") == "1") >= 2)
    first, second = fake.watch_requests()[:2]
    assert int(first["resourceVersion"]) < rv
    assert second["resourceVersion"] == str(rv)
    assert fake.list_count() == 1
    fake.wait_open_watches(1)
    fake.put(make_pod("a2"))
    rec.wait_for(lambda t: pods_of(t) == {"default/a1", "default/a2"})


def test_namespaces_are_listed_and_watched_one_by_one(fake: FakeKube, discover) -> None:
    fake.put(make_pod("a", ns="shop"))
    fake.put(make_pod("b", ns="billing"))
    fake.put(make_pod("c", ns="other"))
    settings = KubeSettings(api_server=fake.url, namespaces=["shop", "billing"], node_name="node-a")
    _d, rec = discover(settings)
    rec.wait_for(lambda t: pods_of(t) == {"shop/a", "billing/b"})
    fake.wait_open_watches(2)
    assert {p for p, _ in fake.requests} == {"/api/v1/namespaces/shop/pods", "/api/v1/namespaces/billing/pods"}
    fake.put(make_pod("d", ns="other"))
    fake.put(make_pod("e", ns="billing"))
    rec.wait_for(lambda t: pods_of(t) == {"shop/a", "billing/b", "billing/e"})


def test_list_follows_pagination(fake: FakeKube, discover) -> None:
    fake.page_size = 2
    for i in range(5):
        fake.put(make_pod(f"p{i}"))
    _d, rec = discover()
    rec.wait_for(lambda t: pods_of(t) == {f"default/p{i}" for i in range(5)})
    assert [q.get("continue") for p, q in fake.requests if "watch" not in q] == [None, "2", "4"]
    assert rec.calls[0] and len(rec.calls[0]) == 5  # the first call already had every page


def test_all_nodes_when_node_name_is_none_and_user_selectors_are_sent(fake: FakeKube, discover) -> None:
    fake.put(make_pod("a", node="node-a"))
    fake.put(make_pod("b", node="node-b"))
    fake.put(make_pod("c", node="node-b", phase="Succeeded"))
    settings = KubeSettings(api_server=fake.url, field_selector="status.phase=Running", label_selector="app=web")
    _d, rec = discover(settings)
    rec.wait_for(lambda t: pods_of(t) == {"default/a", "default/b"})
    query = fake.requests[0][1]
    assert query["fieldSelector"] == "status.phase=Running"
    assert query["labelSelector"] == "app=web"


def test_node_selector_is_appended_to_the_users_field_selector(fake: FakeKube, discover) -> None:
    cfg = {"role": "pod", "api_server": fake.url, "selectors": [{"role": "pod", "field": "status.phase=Running"}]}
    d, _rec = discover(settings_from_config(cfg, "node-a"))
    assert d.wait_synced(10)
    assert fake.requests[0][1]["fieldSelector"] == "status.phase=Running,spec.nodeName=node-a"


def test_discovery_retries_after_server_errors(fake: FakeKube, discover) -> None:
    fake.token = "secret"  # the server refuses the agent (401) until the token requirement is lifted
    fake.put(make_pod("a1"))
    d, rec = discover()
    assert not d.wait_synced(0.5)
    fake.token = None
    rec.wait_for(lambda t: pods_of(t) == {"default/a1"})
    assert fake.list_count() >= 2


def test_stop_returns_promptly_while_a_watch_is_open(fake: FakeKube) -> None:
    rec = Recorder()
    d = PodDiscovery(KubeSettings(api_server=fake.url), rec)
    d.start()
    fake.wait_open_watches(1)
    started = time.monotonic()
    d.stop()
    assert time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("kube-pods")]


# ---------------------------------------------------------------------------------------------------------------
# Kubeconfig


def _kubeconfig(path: Path, server: str, user: dict[str, Any], cluster_extra: dict[str, Any] | None = None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "contexts": [
            {"name": "other", "context": {"cluster": "nowhere", "user": "nobody"}},
            {"name": "dev", "context": {"cluster": "fake", "user": "me", "namespace": "shop"}},
        ],
        "clusters": [
            {"name": "nowhere", "cluster": {"server": "https://10.255.255.1:6443"}},
            {"name": "fake", "cluster": {"server": server, **(cluster_extra or {})}},
        ],
        "users": [{"name": "nobody", "user": {"token": "wrong"}}, {"name": "me", "user": user}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_token_authenticates_to_the_api_server(fake: FakeKube, discover, tmp_path: Path) -> None:
    fake.token = "s3cret"
    fake.put(make_pod("a1"))
    kubeconfig = _kubeconfig(tmp_path / "config", fake.url, {"token": "s3cret"})
    settings = settings_from_config({"role": "pod", "kubeconfig_file": str(kubeconfig)}, "node-a")
    assert settings.kubeconfig_file == str(kubeconfig) and settings.node_name == "node-a"
    _d, rec = discover(settings)
    rec.wait_for(lambda t: pods_of(t) == {"default/a1"})
    fake.wait_open_watches(1)
    fake.put(make_pod("a2"))
    rec.wait_for(lambda t: pods_of(t) == {"default/a1", "default/a2"})


def test_kubeconfig_token_file_is_relative_to_the_kubeconfig(fake: FakeKube, discover, tmp_path: Path) -> None:
    fake.token = "from-file"
    fake.put(make_pod("a1"))
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "token").write_text("from-file\n")
    kubeconfig = _kubeconfig(tmp_path / "config", fake.url, {"tokenFile": "creds/token"})
    _d, rec = discover(KubeSettings(kubeconfig_file=str(kubeconfig), node_name="node-a"))
    rec.wait_for(lambda t: pods_of(t) == {"default/a1"})


def test_kubeconfig_wrong_token_finds_nothing(fake: FakeKube, discover, tmp_path: Path) -> None:
    fake.token = "right"
    fake.put(make_pod("a1"))
    kubeconfig = _kubeconfig(tmp_path / "config", fake.url, {"token": "wrong"})
    d, rec = discover(KubeSettings(kubeconfig_file=str(kubeconfig)))
    assert not d.wait_synced(0.5)
    assert d.targets() == [] and rec.calls == []
    assert all(p == "/api/v1/pods" for p, _ in fake.requests) and len(fake.requests) >= 1


def test_kubeconfig_parses_inline_and_file_credentials(tmp_path: Path) -> None:
    ca, cert, key = "-----BEGIN CERTIFICATE-----\nCA\n", "-----BEGIN CERTIFICATE-----\nC\n", "-----BEGIN KEY-----\nK\n"
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    path = _kubeconfig(
        tmp_path / "kc",
        "https://k8s.example:6443/",
        {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
        {"certificate-authority-data": b64(ca)},
    )
    s = load_kubeconfig(str(path))
    assert (s.api_server, s.ca_data, s.cert_data, s.key_data) == ("https://k8s.example:6443", ca, cert, key)
    assert s.bearer_token is None and not s.insecure_skip_verify

    path = _kubeconfig(
        tmp_path / "kc2",
        "https://k8s.example:6443",
        {"client-certificate": "certs/me.crt", "client-key": "/abs/me.key", "username": "u", "password": "p"},
        {"certificate-authority": "ca.crt", "insecure-skip-tls-verify": True},
    )
    s = load_kubeconfig(str(path))
    assert s.ca_file == str(tmp_path / "ca.crt")
    assert s.cert_file == str(tmp_path / "certs" / "me.crt")
    assert s.key_file == "/abs/me.key"
    assert (s.username, s.password, s.insecure_skip_verify) == ("u", "p", True)
    assert load_kubeconfig(str(path), context="other").bearer_token == "wrong"


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"exec": {"command": "aws"}}, "exec credential plugin"),
        ({"auth-provider": {"name": "gcp"}}, "auth-provider credential plugin"),
    ],
)
def test_kubeconfig_credential_plugins_are_rejected_by_name(tmp_path: Path, user: dict, message: str) -> None:
    path = _kubeconfig(tmp_path / "kc", "https://k8s.example", user)
    with pytest.raises(KubeConfigError, match=message):
        load_kubeconfig(str(path))


def test_kubeconfig_without_current_context_or_missing_cluster_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump({"clusters": [], "contexts": [], "users": []}))
    with pytest.raises(KubeConfigError, match="no current-context"):
        load_kubeconfig(str(path))
    path.write_text(yaml.safe_dump({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c"}}]}))
    with pytest.raises(KubeConfigError, match="no cluster named 'c'"):
        load_kubeconfig(str(path))
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        PodDiscovery(KubeSettings(kubeconfig_file=str(tmp_path / "missing")), Recorder())
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(KubeConfigError, match=r"cannot load the TLS files for https://k8s\.example"):
        PodDiscovery(KubeSettings(api_server="https://k8s.example", ca_file=str(tmp_path / "bad.pem")), Recorder())


# ---------------------------------------------------------------------------------------------------------------
# TLS (self-signed certificates made with the openssl command)


def _self_signed(directory: Path, name: str, san: str) -> tuple[Path, Path]:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(crt)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return crt, key


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture
def tls_fake(tmp_path: Path) -> Iterator[tuple[FakeKube, Path, Path, Path]]:
    """A fake API server over TLS that also requires a client certificate signed by `client.crt` (self-signed)."""
    server_crt, server_key = _self_signed(tmp_path, "server", "IP:127.0.0.1")
    client_crt, client_key = _self_signed(tmp_path, "client", "DNS:client")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_crt, server_key)
    ctx.load_verify_locations(client_crt)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # the in-cluster test authenticates with a token only
    kube = FakeKube()
    server = _serve(kube, ctx)
    yield kube, server_crt, client_crt, client_key
    kube.close()
    server.shutdown()
    server.server_close()


@needs_openssl
def test_kubeconfig_with_inline_ca_and_client_certificate_over_tls(tls_fake, tmp_path: Path) -> None:
    fake, server_crt, client_crt, client_key = tls_fake
    fake.put(make_pod("a1"))
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    kubeconfig = _kubeconfig(
        tmp_path / "kc",
        fake.url,
        {"client-certificate-data": b64(client_crt), "client-key-data": b64(client_key)},
        {"certificate-authority-data": b64(server_crt)},
    )
    rec = Recorder()
    d = PodDiscovery(KubeSettings(kubeconfig_file=str(kubeconfig)), rec, min_backoff_s=0.05)
    d.start()
    try:
        rec.wait_for(lambda t: pods_of(t) == {"default/a1"})
    finally:
        d.stop()
    assert fake.peer_certs and all(
        ("commonName", "client") in [rdn[0] for rdn in cert["subject"]] for cert in fake.peer_certs
    )


@needs_openssl
def test_tls_server_with_an_unknown_ca_is_refused(tls_fake) -> None:
    fake, _, client_crt, _ = tls_fake
    fake.put(make_pod("a1"))
    rec = Recorder()
    d = PodDiscovery(KubeSettings(api_server=fake.url, ca_file=str(client_crt)), rec, min_backoff_s=0.05)
    d.start()
    try:
        assert not d.wait_synced(0.5)
    finally:
        d.stop()
    rec2 = Recorder()
    d = PodDiscovery(KubeSettings(api_server=fake.url, insecure_skip_verify=True), rec2, min_backoff_s=0.05)
    d.start()
    try:
        rec2.wait_for(lambda t: pods_of(t) == {"default/a1"})
    finally:
        d.stop()


# ---------------------------------------------------------------------------------------------------------------
# In-cluster settings and the SD config


def _service_account(directory: Path, token: str = "sa-token", namespace: str | None = "logging") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    if namespace is not None:
        (directory / "namespace").write_text(namespace)
    return directory


def test_in_cluster_settings_come_from_env_and_the_service_account(tmp_path: Path) -> None:
    sa = _service_account(tmp_path / "sa")
    (sa / "ca.crt").write_text("pem")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    s = settings_from_config({"role": "pod"}, "node-a", service_account_dir=str(sa), environ=env)
    assert s.api_server == "https://10.96.0.1:443"
    assert s.bearer_token_file == str(sa / "token") and s.bearer_token is None
    assert s.ca_file == str(sa / "ca.crt")
    assert (s.namespaces, s.node_name, s.kubeconfig_file) == ([], "node-a", None)

    env6 = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    (sa / "ca.crt").unlink()
    s6 = in_cluster_settings(service_account_dir=str(sa), environ=env6)
    assert s6.api_server == "https://[fd00::1]:6443" and s6.ca_file is None

    cfg = {"role": "pod", "namespaces": {"names": ["shop", "logging"], "own_namespace": True}}
    s = settings_from_config(cfg, None, service_account_dir=str(sa), environ=env)
    assert s.namespaces == ["shop", "logging"] and s.node_name is None


def test_in_cluster_without_env_or_token_is_an_error(tmp_path: Path) -> None:
    sa = _service_account(tmp_path / "sa")
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"):
        settings_from_config({"role": "pod"}, None, service_account_dir=str(sa), environ={})
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeConfigError, match="service account token"):
        in_cluster_settings(service_account_dir=str(tmp_path / "nothing"), environ=env)
    os.remove(sa / "namespace")
    with pytest.raises(KubeConfigError, match="pod's namespace"):
        settings_from_config(
            {"role": "pod", "namespaces": {"own_namespace": True}}, None, service_account_dir=str(sa), environ=env
        )


@needs_openssl
def test_in_cluster_discovery_uses_the_service_account_token_and_ca(tls_fake, tmp_path: Path) -> None:
    fake, server_crt, _, _ = tls_fake
    fake.token = "sa-token"
    fake.put(make_pod("a1"))
    fake.put(make_pod("b1", node="node-b"))
    sa = _service_account(tmp_path / "sa")
    shutil.copy(server_crt, sa / "ca.crt")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": fake.url.rsplit(":", 1)[1]}
    settings = settings_from_config({"role": "pod"}, "node-a", service_account_dir=str(sa), environ=env)
    rec = Recorder()
    d = PodDiscovery(settings, rec, min_backoff_s=0.05, max_backoff_s=0.2)
    d.start()
    try:
        rec.wait_for(lambda t: pods_of(t) == {"default/a1"})
        fake.wait_open_watches(1)
        # The kubelet rotates the projected token on disk: the next request must send the new one.
        (sa / "token").write_text("rotated")
        fake.token = "rotated"
        fake.compact()
        fake.put(make_pod("a2"))
        rec.wait_for(lambda t: pods_of(t) == {"default/a1", "default/a2"})
    finally:
        d.stop()


def test_api_server_with_http_client_options() -> None:
    cfg = {
        "role": "pod",
        "api_server": "https://k8s.example:6443/",
        "bearer_token_file": "/run/token",
        "tls_config": {"ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem", "insecure_skip_verify": True},
        "namespaces": {"names": ["a", "a", "b"]},
        "attach_metadata": {"node": False},
    }
    s = settings_from_config(cfg, "node-x")
    assert (s.api_server, s.bearer_token_file, s.ca_file, s.cert_file, s.key_file) == (
        "https://k8s.example:6443",
        "/run/token",
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    assert s.insecure_skip_verify and s.namespaces == ["a", "b"] and s.node_name == "node-x"
    s = settings_from_config({"role": "pod", "api_server": "http://h", "authorization": {"credentials": "t"}}, None)
    assert s.bearer_token == "t"
    # A typed config object works like the parsed YAML.
    obj = SimpleNamespace(
        role="pod", api_server="http://h:8080", bearer_token="tok", namespaces=SimpleNamespace(names=["x"])
    )
    s = settings_from_config(obj, "n")
    assert (s.api_server, s.bearer_token, s.namespaces) == ("http://h:8080", "tok", ["x"])


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({}, "role missing"),
        ({"role": "service"}, "role 'service' is not supported"),
        ({"role": "pod", "api_server": "https://a", "kubeconfig_file": "/k"}, "simultaneously"),
        ({"role": "pod", "kubeconfig_file": "/k", "bearer_token": "t"}, "together with 'kubeconfig_file'"),
        ({"role": "pod", "bearer_token": "t"}, "provide the 'api_server' URL explicitly"),
        ({"role": "pod", "api_server": "k8s:6443"}, "must be an http:// or https:// URL"),
        ({"role": "pod", "api_server": "https://a", "bearer_token": "t", "bearer_token_file": "f"}, "at most one"),
        ({"role": "pod", "api_server": "https://a", "namespaces": {"own_namespace": True}}, "only in-cluster"),
        ({"role": "pod", "api_server": "https://a", "namespaces": {"names": "shop"}}, "list of strings"),
        ({"role": "pod", "api_server": "https://a", "selectors": [{"role": "service"}]}, "pod, node selectors"),
        ({"role": "pod", "api_server": "https://a", "selectors": [{"role": "pod"}, {"role": "pod"}]}, "duplicated"),
        ({"role": "pod", "api_server": "https://a", "api_sever": "x"}, "unknown field 'api_sever'"),
    ],
)
def test_invalid_sd_config_is_rejected_with_a_message_naming_the_problem(cfg: dict, message: str) -> None:
    with pytest.raises(KubeConfigError, match=message):
        settings_from_config(cfg, None, environ={})
