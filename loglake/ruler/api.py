"""Loki's ruler API: rule groups by namespace as YAML, Prometheus' rules and alerts as JSON, one tenant a request.

Also builds the ruler from the configuration (`Ruler.from_config`) so the server wires one object: its rule store,
its manager and the query function that runs rule expressions on the server's own LogQL engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loglake.api.app import ApiError
from loglake.config import NS_PER_SECOND, Config
from loglake.ruler.manager import QueryFn, RuleManager, RulerSettings
from loglake.ruler.rules import RuleError, RuleGroup, format_yaml, group_to_dict, parse_rule_group
from loglake.ruler.store import RuleStore, check_name

if TYPE_CHECKING:
    from loglake.api.app import LoglakeApp
    from loglake.logql.engine import QueryEngine

log = logging.getLogger(__name__)
T = TypeVar("T")

RULES_PREFIXES = ("/loki/api/v1/rules", "/api/prom/rules")
"""Where Loki serves the rule-group API (the second is its legacy path)."""

QUERY_LIMIT = 100
STOP_TIMEOUT_S = 10.0

# Loki's texts, so tools that match on them (lokitool, Grafana) behave the same.
NO_RULE_GROUPS = "no rule groups found"
GROUP_NOT_FOUND = "group does not exist"
NAMESPACE_NOT_FOUND = "group namespace does not exist"


# ---------------------------------------------------------------------------------------------------------------
# From the configuration to a running ruler.


def rules_directory(config: Config) -> Path:
    """Return the directory of rule files: `ruler.storage.local.directory`, else `ruler_storage`'s, else
    `<common.path_prefix>/rules`."""
    directory = config.ruler.storage.local.directory or config.ruler_storage.local.directory
    if directory:
        return Path(directory).resolve()
    return (Path(config.common.path_prefix) / "rules").resolve()


def remote_write_url(config: Config) -> str | None:
    """Return the remote-write URL recording rules send to, or None when remote write is off."""
    rw = config.ruler.remote_write
    if not rw.enabled:
        return None
    if rw.clients:
        first = sorted(rw.clients)[0]
        if len(rw.clients) > 1:
            log.warning("ruler.remote_write.clients: loglake sends to one client only, %r", first)
        return str(rw.clients[first]["url"])
    return rw.client.url or None


def ruler_settings(config: Config) -> RulerSettings:
    """Return the ruler's settings from the `ruler` block of the configuration."""
    r = config.ruler
    external_url = r.external_url
    if not external_url:
        host = config.server.http_listen_address
        if host in ("", "0.0.0.0", "::"):  # a wildcard listen address is not a place a link can point to
            host = "127.0.0.1"
        external_url = f"http://{host}:{config.server.http_listen_port}"
    return RulerSettings(
        evaluation_interval_s=r.evaluation_interval / NS_PER_SECOND,
        alertmanager_urls=list(r.alertmanager_url),
        webhook_urls=list(r.webhook_url),
        slack_webhook_urls=list(r.slack_webhook_url),
        external_labels=dict(r.external_labels),
        external_url=external_url.rstrip("/"),
        remote_write_url=remote_write_url(config),
        state_path=(Path(config.common.path_prefix) / "ruler" / "state.json").resolve(),
        resend_delay_s=r.resend_delay / NS_PER_SECOND,
    )


def engine_query_fn(engine: QueryEngine) -> QueryFn:
    """Return a query function that runs a rule's expression as an instant query on `engine`."""

    def query(tenant: str, expr: str, at_ns: int) -> list[tuple[dict[str, str], float]]:
        data = engine.query_instant(tenant, expr, at_ns, QUERY_LIMIT, "backward")
        return samples_of(data)

    return query


def samples_of(data: Mapping[str, Any]) -> list[tuple[dict[str, str], float]]:
    """Return the (labels, value) samples of an instant query's `data` (a vector, or a scalar with no labels)."""
    kind = data.get("resultType")
    result = data.get("result") or []
    if kind == "scalar":
        return [({}, float(result[1]))] if result else []
    if kind == "vector":
        return [(dict(s["metric"]), float(s["value"][1])) for s in result]
    raise ValueError(f"a rule's expression must give a vector or a scalar, it gave {kind}")


class Ruler:
    """The ruler as the server runs it: the rule store, the manager evaluating it, and their lifecycle."""

    def __init__(self, store: RuleStore, manager: RuleManager) -> None:
        self.store = store
        self.manager = manager

    @classmethod
    def from_config(cls, config: Config, engine: QueryEngine) -> Ruler:
        """Return the ruler the configuration describes, evaluating rules on `engine`."""
        directory = rules_directory(config)
        directory.mkdir(parents=True, exist_ok=True)
        settings = ruler_settings(config)
        if settings.state_path is not None:
            settings.state_path.parent.mkdir(parents=True, exist_ok=True)
        store = RuleStore(directory)
        return cls(store, RuleManager(store, engine_query_fn(engine), settings))

    async def start(self) -> None:
        """Start evaluating rules in the background."""
        await self.manager.start()

    async def stop(self) -> None:
        """Stop evaluating rules; alert state is saved, queued notifications get a brief chance to go out."""
        try:
            await asyncio.wait_for(self.manager.stop(), STOP_TIMEOUT_S)
        except Exception:  # shutdown goes on: the store must still be flushed
            log.exception("ruler: stopping failed")


# ---------------------------------------------------------------------------------------------------------------
# Answers.


def _yaml(data: Any) -> Response:
    return Response(format_yaml(data), media_type="application/yaml")


def _envelope(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _accepted() -> Response:
    """Loki's answer to a stored change: 202, the change is stored and the ruler picks it up."""
    return _envelope(202, {"status": "success", "data": None, "errorType": "", "error": ""})


def _bad_data(message: str) -> Response:
    return _envelope(400, {"status": "error", "data": None, "errorType": "bad_data", "error": message})


def check_namespace(namespace: str) -> str:
    """Return `namespace` if it can name a rule file, else raise a 400 ApiError saying why."""
    try:
        check_name("namespace", namespace)
    except RuleError as exc:
        raise ApiError(400, str(exc)) from None
    return namespace


async def _in_store(fn: Callable[..., T], *args: Any) -> T:
    """Run a rule-store call off the event loop (it reads and writes files); a bad rule file is a 400, as Loki."""
    try:
        return await run_in_threadpool(fn, *args)
    except RuleError as exc:
        raise ApiError(400, str(exc)) from None


def _label_filter(text: str) -> list[tuple[str, str]]:
    """Return Loki's `labels=name:value,...` filter of the list endpoint."""
    pairs = []
    for part in text.split(","):
        if not part:
            continue
        name, sep, value = part.partition(":")
        if not sep:
            raise ApiError(400, f"labels: expected name:value pairs separated by commas, got {part!r}")
        pairs.append((name, value))
    return pairs


def _matching(groups: Iterable[RuleGroup], wanted: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Return the groups as dicts, keeping only rules that carry any wanted label (groups left empty go)."""
    out = []
    for group in groups:
        data = group_to_dict(group)
        if wanted:
            data["rules"] = [r for r in data["rules"] if any((r.get("labels") or {}).get(k) == v for k, v in wanted)]
            if not data["rules"]:
                continue
        out.append(data)
    return out


def _param_values(request: Request, name: str) -> list[str]:
    """Return every value of a repeated parameter, written `name` (Loki) or `name[]` (Prometheus)."""
    return request.query_params.getlist(name) + request.query_params.getlist(name + "[]")


def without_alerts(status: Mapping[str, Any]) -> dict[str, Any]:
    """Return Prometheus' rules `data` without each rule's `alerts` (its `exclude_alerts=true`)."""
    groups = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "alerts"} for r in g.get("rules") or []]}
        for g in status.get("groups") or []
    ]
    return {**status, "groups": groups}


# ---------------------------------------------------------------------------------------------------------------
# Routes.


def ruler_routes(app: LoglakeApp) -> list[Route]:
    """Return the ruler API's routes (none when `ruler.enable_api` is false or there is no ruler)."""
    ruler: Ruler | None = getattr(app, "ruler", None)
    if ruler is None or not app.config.ruler.enable_api:
        return []
    return RulerApi(app, ruler).routes()


class RulerApi:
    """The rules API's handlers over one rule store and the manager evaluating it."""

    def __init__(self, app: LoglakeApp, ruler: Ruler) -> None:
        self.app = app
        self.ruler = ruler

    def routes(self) -> list[Route]:
        """Return the routes, under both of Loki's prefixes, and the Prometheus-compatible ones."""
        h = self.app.handler
        out = []
        for prefix in RULES_PREFIXES:
            out += [
                Route(prefix, h(self.list_rules, "rules"), methods=["GET"]),
                Route(prefix + "/{namespace}", h(self.list_rules, "rules_namespace"), methods=["GET"]),
                Route(prefix + "/{namespace}", h(self.set_group, "rules_set"), methods=["POST"]),
                Route(prefix + "/{namespace}", h(self.delete_namespace, "rules_delete_namespace"), methods=["DELETE"]),
                Route(prefix + "/{namespace}/{group}", h(self.get_group, "rules_group"), methods=["GET"]),
                Route(prefix + "/{namespace}/{group}", h(self.delete_group, "rules_delete_group"), methods=["DELETE"]),
            ]
        out += [
            Route("/prometheus/api/v1/rules", h(self.prometheus_rules, "prometheus_rules"), methods=["GET"]),
            Route("/prometheus/api/v1/alerts", h(self.prometheus_alerts, "prometheus_alerts"), methods=["GET"]),
        ]
        return out

    @property
    def store(self) -> RuleStore:
        return self.ruler.store

    # ---- rule groups (YAML) -----------------------------------------------------------------------------------

    async def list_rules(self, request: Request) -> Response:
        """Return `{namespace: [groups]}` of the tenant (of one namespace when the path names it), as YAML."""
        tenant = self.app.tenant(request)
        namespace = request.path_params.get("namespace")
        if namespace is not None:
            check_namespace(namespace)
        wanted = _label_filter(request.query_params.get("labels", ""))
        namespaces = await _in_store(self.store.namespaces, tenant)
        if namespace is not None:
            namespaces = {namespace: namespaces[namespace]} if namespace in namespaces else {}
        out = {ns: groups for ns, groups in ((ns, _matching(gs, wanted)) for ns, gs in namespaces.items()) if groups}
        if not out:
            raise ApiError(404, NO_RULE_GROUPS)
        return _yaml(out)

    async def get_group(self, request: Request) -> Response:
        """Return one rule group as YAML."""
        tenant = self.app.tenant(request)
        namespace = check_namespace(request.path_params["namespace"])
        name = request.path_params["group"]
        group = await _in_store(self.store.get_group, tenant, namespace, name)
        if group is None:
            raise ApiError(404, GROUP_NOT_FOUND)
        return _yaml(group_to_dict(group))

    async def set_group(self, request: Request) -> Response:
        """Create or replace one rule group (the YAML body) in a namespace; refuse invalid rules with a 400."""
        tenant = self.app.tenant(request)
        namespace = check_namespace(request.path_params["namespace"])
        body = await self.app.read_body(request)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the rule group is not UTF-8 text") from None
        try:
            group = parse_rule_group(text)
        except RuleError as exc:
            raise ApiError(400, str(exc)) from None
        await _in_store(self.store.set_group, tenant, namespace, group)
        log.info("ruler: stored rule group %r in namespace %r of tenant %r", group.name, namespace, tenant)
        return _accepted()

    async def delete_group(self, request: Request) -> Response:
        """Delete one rule group."""
        tenant = self.app.tenant(request)
        namespace = check_namespace(request.path_params["namespace"])
        if not await _in_store(self.store.delete_group, tenant, namespace, request.path_params["group"]):
            raise ApiError(404, GROUP_NOT_FOUND)
        return _accepted()

    async def delete_namespace(self, request: Request) -> Response:
        """Delete every rule group of a namespace."""
        tenant = self.app.tenant(request)
        namespace = check_namespace(request.path_params["namespace"])
        if not await _in_store(self.store.delete_namespace, tenant, namespace):
            raise ApiError(404, NAMESPACE_NOT_FOUND)
        return _accepted()

    # ---- Prometheus-compatible state (JSON) -------------------------------------------------------------------

    async def prometheus_rules(self, request: Request) -> Response:
        """Return the loaded rules with their health and alerts, in Prometheus' `/api/v1/rules` shape."""
        tenant = self.app.tenant(request)
        type_param = request.query_params.get("type", "").lower()
        kind = {"": None, "alert": "alert", "record": "record"}.get(type_param, "?")
        if kind == "?":
            return _bad_data(f'not supported value "{type_param}"')
        data = self.ruler.manager.rules_status(
            tenant,
            kind=kind,
            rule_names=_param_values(request, "rule_name"),
            group_names=_param_values(request, "rule_group"),
            files=_param_values(request, "file"),
        )
        data["groups"].sort(key=lambda g: str(g.get("file", "")))  # stable: the manager's order within a file
        if request.query_params.get("exclude_alerts", "").lower() == "true":
            data = without_alerts(data)
        return _envelope(200, {"status": "success", "data": data})

    async def prometheus_alerts(self, request: Request) -> Response:
        """Return the pending and firing alerts, in Prometheus' `/api/v1/alerts` shape."""
        tenant = self.app.tenant(request)
        return _envelope(200, {"status": "success", "data": self.ruler.manager.alerts_status(tenant)})
