"""Kubernetes pod discovery: the targets Promtail's `kubernetes_sd_configs` (role `pod`) yields, one per container.

Each target is a label dict with the same `__meta_kubernetes_*` labels Prometheus' pod role gives, so users'
relabel rules keep working. Discovery lists the pods once, then follows the API server's watch stream from the
list's resourceVersion; it lists again when the server says that version is gone (410).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import random
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import yaml

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "KubeConfigError",
    "KubeSettings",
    "PodDiscovery",
    "in_cluster_settings",
    "load_kubeconfig",
    "pod_targets",
    "settings_from_config",
]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
META = "__meta_kubernetes_"
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_LIST_PAGE_SIZE = 500  # client-go's reflector page size

# Keys of a kubernetes_sd_configs entry that we accept. The second set are Prometheus options this agent does
# not act on: accepted (so existing Promtail files load) but reported with a warning.
_SD_KEYS = {
    "role",
    "api_server",
    "kubeconfig_file",
    "namespaces",
    "selectors",
    "bearer_token",
    "bearer_token_file",
    "authorization",
    "basic_auth",
    "tls_config",
}
_SD_IGNORED_KEYS = {
    "attach_metadata",
    "follow_redirects",
    "enable_http2",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
}
_HTTP_CLIENT_KEYS = ("bearer_token", "bearer_token_file", "authorization", "basic_auth", "tls_config")


class KubeConfigError(ValueError):
    """A kubernetes_sd_configs entry, kubeconfig file or in-cluster environment that cannot be used."""


@dataclass
class KubeSettings:
    """Where the Kubernetes API server is, how to authenticate to it, and which pods to discover."""

    api_server: str | None = None
    kubeconfig_file: str | None = None
    bearer_token: str | None = None
    bearer_token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    node_name: str | None = None  # only pods with spec.nodeName == node_name; None: pods of every node
    ca_data: str | None = None  # PEM text (a kubeconfig's certificate-authority-data)
    cert_file: str | None = None  # client certificate for mutual TLS
    key_file: str | None = None
    cert_data: str | None = None  # PEM text (a kubeconfig's client-certificate-data)
    key_data: str | None = None
    username: str | None = None  # HTTP basic auth
    password: str | None = None
    field_selector: str | None = None  # from `selectors: [{role: pod, field: ...}]`
    label_selector: str | None = None  # from `selectors: [{role: pod, label: ...}]`


# ---------------------------------------------------------------------------------------------------------------
# Settings: from the SD config, a kubeconfig file, or the pod's service account


def _get(cfg: Any, key: str) -> Any:
    """One field of a config node that is either a parsed-YAML dict or a typed config object."""
    if cfg is None:
        return None
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, key, None)


def _str_or_none(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeConfigError(f"kubernetes_sd_configs: {what} must be a string, got {value!r}")
    return value


def settings_from_config(
    cfg: Mapping[str, Any] | object,
    node_name: str | None,
    *,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> KubeSettings:
    """Return the settings of one parsed `kubernetes_sd_configs` entry (role pod) for an agent on `node_name`."""
    if isinstance(cfg, Mapping):
        unknown = sorted(set(cfg) - _SD_KEYS - _SD_IGNORED_KEYS)
        if unknown:
            raise KubeConfigError(
                f"kubernetes_sd_configs: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(_SD_KEYS))}"
            )
        for key in sorted(set(cfg) & _SD_IGNORED_KEYS):
            log.warning("kubernetes_sd_configs: %r is not supported by loglake agent and is ignored", key)
    role = _get(cfg, "role")
    if not role:
        raise KubeConfigError("kubernetes_sd_configs: role missing (loglake agent supports role: pod)")
    if role != "pod":
        raise KubeConfigError(f"kubernetes_sd_configs: role {role!r} is not supported; loglake agent supports pod")
    api_server = _str_or_none(_get(cfg, "api_server"), "api_server")
    kubeconfig = _str_or_none(_get(cfg, "kubeconfig_file"), "kubeconfig_file")
    if api_server and kubeconfig:
        raise KubeConfigError("kubernetes_sd_configs: cannot use 'kubeconfig_file' and 'api_server' simultaneously")
    custom_http = [k for k in _HTTP_CLIENT_KEYS if _get(cfg, k) not in (None, "", {}, [])]
    if kubeconfig and custom_http:
        raise KubeConfigError(
            f"kubernetes_sd_configs: cannot use a custom HTTP client configuration ({custom_http[0]}) "
            "together with 'kubeconfig_file'"
        )
    if not api_server and not kubeconfig and custom_http:
        raise KubeConfigError(
            f"kubernetes_sd_configs: to use a custom HTTP client configuration ({custom_http[0]}) "
            "please provide the 'api_server' URL explicitly"
        )

    ns_cfg = _get(cfg, "namespaces")
    names = _get(ns_cfg, "names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise KubeConfigError(f"kubernetes_sd_configs: namespaces.names must be a list of strings, got {names!r}")
    own_namespace = bool(_get(ns_cfg, "own_namespace"))
    if own_namespace and (api_server or kubeconfig):
        raise KubeConfigError(
            "kubernetes_sd_configs: namespaces.own_namespace works only in-cluster "
            "(without 'api_server' and 'kubeconfig_file')"
        )

    field_selector, label_selector = _pod_selectors(_get(cfg, "selectors"))
    if kubeconfig:
        settings = KubeSettings(kubeconfig_file=kubeconfig)
    elif api_server:
        settings = _http_client_settings(cfg, api_server)
    else:
        settings = in_cluster_settings(service_account_dir=service_account_dir, environ=environ)
    namespaces = list(names)
    if own_namespace:
        namespaces.append(_own_namespace(service_account_dir))
    return replace(
        settings,
        namespaces=list(dict.fromkeys(namespaces)),
        node_name=node_name or None,
        field_selector=field_selector,
        label_selector=label_selector,
    )


def _pod_selectors(selectors: Any) -> tuple[str | None, str | None]:
    """The (field, label) selectors of the `role: pod` entry; `role: node` ones only matter for node metadata."""
    if not selectors:
        return None, None
    if not isinstance(selectors, list):
        raise KubeConfigError(f"kubernetes_sd_configs: selectors must be a list, got {selectors!r}")
    seen: set[str] = set()
    fld = lbl = None
    for sel in selectors:
        role = _get(sel, "role")
        if role in seen:
            raise KubeConfigError(f"kubernetes_sd_configs: duplicated selector role: {role}")
        seen.add(role)
        if role not in ("pod", "node"):
            raise KubeConfigError(f"kubernetes_sd_configs: pod role supports only pod, node selectors, got {role!r}")
        if role == "pod":
            fld = _str_or_none(_get(sel, "field"), "selectors.field")
            lbl = _str_or_none(_get(sel, "label"), "selectors.label")
    return fld, lbl


def _http_client_settings(cfg: Any, api_server: str) -> KubeSettings:
    """Settings for an explicit api_server with Prometheus' HTTP client options (auth and TLS)."""
    if not api_server.startswith(("http://", "https://")):
        raise KubeConfigError(f"kubernetes_sd_configs: api_server {api_server!r} must be an http:// or https:// URL")
    token = _str_or_none(_get(cfg, "bearer_token"), "bearer_token")
    token_file = _str_or_none(_get(cfg, "bearer_token_file"), "bearer_token_file")
    authz = _get(cfg, "authorization")
    if authz:
        kind = _get(authz, "type") or "Bearer"
        if kind != "Bearer":
            raise KubeConfigError(f"kubernetes_sd_configs: authorization type {kind!r} is not supported; use Bearer")
        token = token or _str_or_none(_get(authz, "credentials"), "authorization.credentials")
        token_file = token_file or _str_or_none(_get(authz, "credentials_file"), "authorization.credentials_file")
    if token and token_file:
        raise KubeConfigError("kubernetes_sd_configs: at most one of bearer_token and bearer_token_file may be set")
    basic = _get(cfg, "basic_auth")
    username = password = None
    if basic:
        username = _str_or_none(_get(basic, "username"), "basic_auth.username")
        password = _str_or_none(_get(basic, "password"), "basic_auth.password")
        password_file = _str_or_none(_get(basic, "password_file"), "basic_auth.password_file")
        if password_file:
            password = Path(password_file).read_text().strip()
        if token or token_file:
            raise KubeConfigError("kubernetes_sd_configs: at most one of basic_auth and bearer_token may be set")
    tls = _get(cfg, "tls_config")
    return KubeSettings(
        api_server=api_server.rstrip("/"),
        bearer_token=token,
        bearer_token_file=token_file,
        ca_file=_str_or_none(_get(tls, "ca_file"), "tls_config.ca_file"),
        cert_file=_str_or_none(_get(tls, "cert_file"), "tls_config.cert_file"),
        key_file=_str_or_none(_get(tls, "key_file"), "tls_config.key_file"),
        insecure_skip_verify=bool(_get(tls, "insecure_skip_verify")),
        username=username,
        password=password,
    )


def _join_host_port(host: str, port: str) -> str:
    """host:port, with an IPv6 address in brackets as URLs need."""
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def in_cluster_settings(
    *, service_account_dir: str = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> KubeSettings:
    """Return the settings of a pod talking to its own cluster: the API service's env vars and the service account."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError(
            "unable to load in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be "
            "defined (or set api_server or kubeconfig_file in kubernetes_sd_configs)"
        )
    token_file = os.path.join(service_account_dir, "token")
    if not os.access(token_file, os.R_OK):
        raise KubeConfigError(
            f"unable to load in-cluster configuration: cannot read the service account token {token_file}"
        )
    ca_file = os.path.join(service_account_dir, "ca.crt")
    return KubeSettings(
        api_server=f"https://{_join_host_port(host, port)}",
        bearer_token_file=token_file,
        # As client-go: a missing CA bundle is not fatal, the system's roots are used instead.
        ca_file=ca_file if os.path.isfile(ca_file) else None,
    )


def _own_namespace(service_account_dir: str) -> str:
    path = os.path.join(service_account_dir, "namespace")
    try:
        name = Path(path).read_text().strip()
    except OSError as e:
        raise KubeConfigError(f"could not determine the pod's namespace from {path}: {e}") from e
    if not name:
        raise KubeConfigError(f"could not read own namespace name from {path} (empty file)")
    return name


def _named(items: Any, name: str, kind: str, path: str) -> dict[str, Any]:
    """The body of the entry called `name` in a kubeconfig list (clusters, users, contexts)."""
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get(kind) or {}
    raise KubeConfigError(f"kubeconfig {path}: no {kind} named {name!r}")


def _b64_text(value: str, what: str, path: str) -> str:
    try:
        return base64.b64decode(value, validate=False).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise KubeConfigError(f"kubeconfig {path}: {what} is not valid base64 PEM: {e}") from e


def load_kubeconfig(path: str, context: str | None = None) -> KubeSettings:
    """Return the API server and credentials of a kubeconfig file's current (or given) context."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {e}") from e
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path}: expected a mapping at the top level")
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise KubeConfigError(f"kubeconfig {path}: no current-context is set")
    ctx = _named(doc.get("contexts"), ctx_name, "context", path)
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster", path)
    user = _named(doc.get("users"), ctx["user"], "user", path) if ctx.get("user") else {}
    base = os.path.dirname(os.path.abspath(path))

    def rel(p: str | None) -> str | None:
        # Paths in a kubeconfig are relative to the file itself, as kubectl resolves them.
        return os.path.join(base, p) if p else None

    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise KubeConfigError(
                f"kubeconfig {path}: user {ctx.get('user')!r} uses an {plugin} credential plugin, which loglake agent "
                "does not support; use token, tokenFile or client certificates"
            )
    if cluster.get("tls-server-name"):
        log.warning("kubeconfig %s: tls-server-name is not supported and is ignored", path)
    return KubeSettings(
        api_server=str(server).rstrip("/"),
        bearer_token=user.get("token") or None,
        bearer_token_file=rel(user.get("tokenFile")),
        ca_file=rel(cluster.get("certificate-authority")),
        ca_data=_b64_text(cluster["certificate-authority-data"], "certificate-authority-data", path)
        if cluster.get("certificate-authority-data")
        else None,
        insecure_skip_verify=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=rel(user.get("client-certificate")),
        key_file=rel(user.get("client-key")),
        cert_data=_b64_text(user["client-certificate-data"], "client-certificate-data", path)
        if user.get("client-certificate-data")
        else None,
        key_data=_b64_text(user["client-key-data"], "client-key-data", path) if user.get("client-key-data") else None,
        username=user.get("username") or None,
        password=user.get("password") or None,
    )


# ---------------------------------------------------------------------------------------------------------------
# Labels: a pod object (API JSON) to its targets


def _sanitize(name: str) -> str:
    return _INVALID_LABEL_CHARS.sub("_", name)


def _pod_ready(status: Mapping[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status", "")).lower()
    return "unknown"


def _controller(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") is True:
            return ref
    return None


def pod_targets(pod: Mapping[str, Any]) -> list[dict[str, str]]:
    """Return one target per container port (or per container without ports) of a pod, as Prometheus' pod role."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    pod_ip = status.get("podIP") or ""
    # A pod without an IP (pending or evicted) has no targets yet: Prometheus waits for the IP too.
    if not pod_ip:
        return []
    common: dict[str, str] = {
        META + "pod_ip": pod_ip,
        META + "pod_ready": _pod_ready(status),
        META + "pod_phase": status.get("phase") or "",
        META + "pod_node_name": spec.get("nodeName") or "",
        META + "pod_host_ip": status.get("hostIP") or "",
        META + "pod_uid": meta.get("uid") or "",
        META + "pod_name": meta.get("name") or "",
    }
    for key, value in (meta.get("labels") or {}).items():
        common[META + "pod_label_" + _sanitize(key)] = str(value)
        common[META + "pod_labelpresent_" + _sanitize(key)] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        common[META + "pod_annotation_" + _sanitize(key)] = str(value)
        common[META + "pod_annotationpresent_" + _sanitize(key)] = "true"
    owner = _controller(meta)
    if owner is not None:
        if owner.get("kind"):
            common[META + "pod_controller_kind"] = owner["kind"]
        if owner.get("name"):
            common[META + "pod_controller_name"] = owner["name"]
    common[META + "namespace"] = meta.get("namespace") or ""

    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    out: list[dict[str, str]] = []
    for containers, statuses, is_init in (
        (spec.get("containers"), status.get("containerStatuses"), "false"),
        (spec.get("initContainers"), status.get("initContainerStatuses"), "true"),
    ):
        ids = {s.get("name"): s.get("containerID") or "" for s in statuses or []}
        for c in containers or []:
            base = {
                META + "pod_container_name": c.get("name") or "",
                META + "pod_container_id": ids.get(c.get("name"), ""),
                META + "pod_container_image": c.get("image") or "",
                META + "pod_container_init": is_init,
            }
            ports = c.get("ports") or []
            if not ports:
                out.append({**common, "__address__": pod_ip, **base})
                continue
            for port in ports:
                number = str(port.get("containerPort", 0))
                out.append(
                    {
                        **common,
                        "__address__": f"{host}:{number}",
                        **base,
                        META + "pod_container_port_name": port.get("name") or "",
                        META + "pod_container_port_number": number,
                        # The API server defaults an omitted protocol to TCP, so a real pod always has one.
                        META + "pod_container_port_protocol": port.get("protocol") or "",
                    }
                )
    return out


# ---------------------------------------------------------------------------------------------------------------
# The API client: list and watch pods


class _Gone(Exception):
    """The server no longer has the requested resourceVersion (410): list again."""


class _ApiError(Exception):
    """The server answered a list or watch with an error status."""


def _ssl_context(s: KubeSettings) -> ssl.SSLContext:
    if s.insecure_skip_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif s.ca_file or s.ca_data:
        ctx = ssl.create_default_context(cafile=s.ca_file, cadata=s.ca_data)
    else:
        ctx = ssl.create_default_context()
    if s.cert_file or s.cert_data:
        if s.cert_data or s.key_data:
            # ssl loads key material only from files: write the inline PEM to a private temp dir, then drop it.
            with tempfile.TemporaryDirectory(prefix="loglake-kube-") as tmp:
                cert = s.cert_file or _write_private(tmp, "cert.pem", s.cert_data or "")
                key = s.key_file or (_write_private(tmp, "key.pem", s.key_data) if s.key_data else None)
                ctx.load_cert_chain(cert, key)
        else:
            ctx.load_cert_chain(s.cert_file, s.key_file)
    return ctx


def _write_private(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _status_message(resp: httpx.Response) -> str:
    """The message of a Kubernetes Status body, or the raw text."""
    try:
        body = orjson.loads(resp.read())
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (orjson.JSONDecodeError, httpx.HTTPError):
        pass
    return resp.text[:200]


class _PodsApi:
    """Lists and watches pods in one scope (a namespace, or all) with the settings' auth and selectors."""

    def __init__(self, settings: KubeSettings, client: httpx.Client, namespace: str | None) -> None:
        self._settings = settings
        self._client = client
        self.path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods" if namespace else "/api/v1/pods"
        selectors = [settings.field_selector] if settings.field_selector else []
        if settings.node_name:
            node = f"spec.nodeName={settings.node_name}"
            # Promtail narrows the user's pod selector to its own node the same way.
            if not any(node in s for s in selectors):
                selectors.append(node)
        self._field_selector = ",".join(selectors)

    def _headers(self) -> dict[str, str]:
        s = self._settings
        token = s.bearer_token
        if s.bearer_token_file:
            # Read on every request: service-account tokens are rotated on disk.
            token = Path(s.bearer_token_file).read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self._field_selector:
            params["fieldSelector"] = self._field_selector
        if self._settings.label_selector:
            params["labelSelector"] = self._settings.label_selector
        return params

    def list(self) -> tuple[list[dict[str, Any]], str]:
        """Return every pod in scope and the list's resourceVersion, following pagination."""
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            params = {**self._params(), "limit": str(_LIST_PAGE_SIZE)}
            if cont:
                params["continue"] = cont
            resp = self._client.get(self.path, params=params, headers=self._headers())
            if resp.status_code == 410:
                raise _Gone(_status_message(resp))  # the continue token expired: start over
            if resp.status_code != 200:
                raise _ApiError(f"GET {self.path}: HTTP {resp.status_code}: {_status_message(resp)}")
            body = orjson.loads(resp.content)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def watch(self, resource_version: str, timeout_s: int, on_open: Callable[[httpx.Response], None]) -> Iterator[dict]:
        """Yield the watch events after `resource_version` until the server ends the stream."""
        params = {
            **self._params(),
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        timeout = httpx.Timeout(30.0, read=timeout_s + 30.0)
        with self._client.stream("GET", self.path, params=params, headers=self._headers(), timeout=timeout) as resp:
            if resp.status_code == 410:
                raise _Gone(_status_message(resp))
            if resp.status_code != 200:
                raise _ApiError(f"watch {self.path}: HTTP {resp.status_code}: {_status_message(resp)}")
            on_open(resp)
            for line in resp.iter_lines():
                if line.strip():
                    yield orjson.loads(line)


def _socket_of(resp: httpx.Response) -> socket.socket | None:
    stream = resp.extensions.get("network_stream")
    return stream.get_extra_info("socket") if stream is not None else None


# ---------------------------------------------------------------------------------------------------------------
# Discovery


class PodDiscovery:
    """Keeps the targets of the pods in scope current by listing and watching the Kubernetes API in the background."""

    def __init__(
        self,
        settings: KubeSettings,
        on_targets: Callable[[list[dict[str, str]]], None],
        *,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        watch_timeout_s: tuple[int, int] = (300, 600),
    ) -> None:
        if settings.kubeconfig_file:
            loaded = load_kubeconfig(settings.kubeconfig_file)
            settings = replace(
                loaded,
                namespaces=settings.namespaces,
                node_name=settings.node_name,
                field_selector=settings.field_selector,
                label_selector=settings.label_selector,
            )
        if not settings.api_server:
            raise KubeConfigError(
                "kubernetes discovery: no api_server (set api_server or kubeconfig_file, or run in-cluster)"
            )
        self.settings = settings
        self._on_targets = on_targets
        self._min_backoff = min_backoff_s
        self._max_backoff = max_backoff_s
        # Random watch lengths (as client-go) so that many agents do not reconnect in lockstep.
        self._watch_timeout = watch_timeout_s
        auth = (settings.username, settings.password or "") if settings.username else None
        verify: ssl.SSLContext | bool = True
        if settings.api_server.startswith("https"):
            try:
                verify = _ssl_context(settings)
            except OSError as e:  # ssl.SSLError is an OSError too
                raise KubeConfigError(
                    f"kubernetes discovery: cannot load the TLS files for {settings.api_server}: {e}"
                ) from e
        self._client = httpx.Client(base_url=settings.api_server, verify=verify, auth=auth, timeout=60.0)
        scopes: list[str | None] = list(dict.fromkeys(settings.namespaces)) or [None]
        self._apis = [_PodsApi(settings, self._client, ns) for ns in scopes]
        self._lock = threading.Lock()
        self._notify_lock = threading.Lock()  # keeps on_targets calls in the order of the changes
        self._stores: list[dict[str, list[dict[str, str]]]] = [{} for _ in scopes]  # per scope: "ns/name" -> targets
        self._synced = [threading.Event() for _ in scopes]
        self._delivered: list[dict[str, str]] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[httpx.Response] = set()

    # -- public ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listing and watching pods in background threads (one per namespace)."""
        if self._threads:
            return
        for i, api in enumerate(self._apis):
            t = threading.Thread(target=self._run, args=(i, api), name=f"kube-pods{api.path}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        """Stop the background threads, cutting open watch streams, and close the HTTP client."""
        self._stop.set()
        with self._lock:
            responses = list(self._open)
        for resp in responses:
            # Closing a response from another thread does not wake a blocked read; shutting the socket does.
            sock = _socket_of(resp)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self._threads:
            t.join(timeout=10.0)
        self._client.close()

    def targets(self) -> list[dict[str, str]]:
        """Return the current targets: one label dict per container port, or per container without ports."""
        with self._lock:
            return self._snapshot()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until every namespace has been listed once; return whether that happened within `timeout`."""
        for ev in self._synced:
            if not ev.wait(timeout):
                return False
        return True

    # -- internals ------------------------------------------------------------------------------------------------

    def _snapshot(self) -> list[dict[str, str]]:
        merged: dict[str, list[dict[str, str]]] = {}
        for store in self._stores:
            merged.update(store)
        return [dict(t) for key in sorted(merged) for t in merged[key]]

    def _notify(self) -> None:
        with self._notify_lock:
            with self._lock:
                snap = self._snapshot()
            if snap == self._delivered:
                return
            self._delivered = snap
            try:
                self._on_targets([dict(t) for t in snap])
            except Exception:
                log.exception("kubernetes discovery: the targets callback failed")

    def _wanted(self, pod: Mapping[str, Any]) -> bool:
        # The field selector already filters by node; this guards against servers that ignore it.
        node = self.settings.node_name
        return node is None or (pod.get("spec") or {}).get("nodeName") == node

    @staticmethod
    def _key(pod: Mapping[str, Any]) -> str:
        meta = pod.get("metadata") or {}
        return f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    def _replace_all(self, scope: int, pods: list[dict[str, Any]]) -> None:
        store = {self._key(p): pod_targets(p) for p in pods if self._wanted(p)}
        with self._lock:
            self._stores[scope] = store
        self._synced[scope].set()
        self._notify()

    def _apply(self, scope: int, kind: str, pod: Mapping[str, Any]) -> None:
        key = self._key(pod)
        with self._lock:
            store = self._stores[scope]
            if kind == "DELETED" or not self._wanted(pod):
                if store.pop(key, None) is None:
                    return
            else:
                targets = pod_targets(pod)
                if store.get(key) == targets:
                    return  # e.g. a status heartbeat: nothing a target shows changed
                store[key] = targets
        self._notify()

    def _backoff(self, attempt: int) -> float:
        delay = min(self._max_backoff, self._min_backoff * (2**attempt))
        return delay * random.uniform(0.8, 1.2)

    def _run(self, scope: int, api: _PodsApi) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                pods, rv = api.list()
            except Exception as e:
                if self._stop.is_set():
                    return
                # 410 here means the pagination token expired: list again, but with backoff like any failure.
                log.log(
                    logging.INFO if isinstance(e, _Gone) else logging.WARNING,
                    "kubernetes discovery: listing %s failed: %s",
                    api.path,
                    e,
                )
                self._stop.wait(self._backoff(failures))
                failures += 1
                continue
            failures = 0
            self._replace_all(scope, pods)
            self._watch_loop(scope, api, rv)

    def _watch_loop(self, scope: int, api: _PodsApi, rv: str) -> None:
        """Follow the watch stream from `rv` until stopped or the server says `rv` is gone (then list again)."""
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                rv = self._watch_once(scope, api, rv)
                failures = 0
                if time.monotonic() - started < 1.0:
                    # A server that ends every watch at once must not make us spin.
                    self._stop.wait(self._min_backoff)
            except _Gone as e:
                log.info("kubernetes discovery: watch of %s expired (%s), listing again", api.path, e)
                return
            except (httpx.TransportError, OSError) as e:
                # A dropped connection: watch again from where we were; the server says 410 if that is too old.
                if self._stop.is_set():
                    return
                log.warning("kubernetes discovery: watch of %s interrupted: %s", api.path, e)
                self._stop.wait(self._backoff(failures))
                failures += 1
            except Exception as e:
                if self._stop.is_set():
                    return
                log.warning("kubernetes discovery: watch of %s failed, listing again: %s", api.path, e)
                self._stop.wait(self._backoff(0))
                return

    def _watch_once(self, scope: int, api: _PodsApi, rv: str) -> str:
        """Run one watch request; return the last resourceVersion seen."""
        opened: list[httpx.Response] = []

        def on_open(resp: httpx.Response) -> None:
            opened.append(resp)
            with self._lock:
                self._open.add(resp)
            if self._stop.is_set():  # stop() ran before this stream was registered
                sock = _socket_of(resp)
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)

        try:
            for event in api.watch(rv, random.randint(*self._watch_timeout), on_open):
                if self._stop.is_set():
                    break
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise _Gone(obj.get("message") or "resource version expired")
                    raise _ApiError(f"watch error {code}: {obj.get('message') or obj}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(scope, kind, obj)
                elif kind != "BOOKMARK":
                    log.debug("kubernetes discovery: ignoring watch event type %r", kind)
        finally:
            with self._lock:
                for resp in opened:
                    self._open.discard(resp)
        return rv
