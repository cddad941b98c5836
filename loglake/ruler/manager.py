"""Rule evaluation: every tenant's rule groups on aligned schedules, alert states, notifications, recorded series.

The alert state machine follows Prometheus' alerting rules (inactive → pending → firing, keep_firing_for,
resolved alerts kept and re-sent for 15 minutes); pending and firing alerts are kept in a JSON file so that a
restart neither forgets a firing alert nor restarts its `for` period.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from loglake.gonum import format_float_e
from loglake.ruler.notify import AlertNotice, Notifier, format_rfc3339, query_link
from loglake.ruler.remote_write import STALE_NAN, RemoteWriter, Series
from loglake.ruler.rules import Rule, RuleGroup, render_template
from loglake.store.files import write_atomic

if TYPE_CHECKING:
    from loglake.ruler.store import RuleStore

__all__ = [
    "Alert",
    "Clock",
    "QueryFn",
    "RuleManager",
    "RulerSettings",
    "SystemClock",
]

log = logging.getLogger("loglake.ruler")

NS = 1_000_000_000
RESOLVED_RETENTION_NS = 15 * 60 * NS
"""How long a resolved alert is kept (and re-sent as resolved), as Prometheus does."""
RECEIVER_REPEAT_NS = 4 * 3600 * NS
"""How often a still-firing alert is repeated to webhook and Slack receivers (Alertmanager's default)."""
STORE_POLL_S = 1.0
"""How often the manager looks for changed rules in the store."""
STATE_VERSION = 1

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"
_STATE_ORDER = {INACTIVE: 0, PENDING: 1, FIRING: 2}


class Clock(Protocol):
    """Where the manager reads the time and waits; tests pass one they control."""

    def now(self) -> float:
        """Return the time in unix seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Return the time in unix seconds."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        await asyncio.sleep(seconds)


QueryFn = Callable[[str, str, int], list[tuple[dict[str, str], float]]]
"""(tenant, LogQL metric query, evaluation time in ns) → the instant vector as (labels, value) samples."""


@dataclass
class RulerSettings:
    """What the ruler needs besides its rules (loglake's config maps Loki's `ruler` block onto it)."""

    evaluation_interval_s: float = 60.0
    alertmanager_urls: list[str] = field(default_factory=list)
    webhook_urls: list[str] = field(default_factory=list)
    slack_webhook_urls: list[str] = field(default_factory=list)
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = "http://127.0.0.1:3100"
    remote_write_url: str | None = None
    state_path: Path | None = None
    resend_delay_s: float = 60.0


LabelKey = tuple[tuple[str, str], ...]


def _key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


@dataclass
class Alert:
    """One alert instance of an alerting rule; times are ns since the epoch, None when not set."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    value: float
    active_at: int
    fired_at: int | None = None
    resolved_at: int | None = None
    last_sent_at: int | None = None
    valid_until: int | None = None
    keep_firing_since: int | None = None
    # The last state webhook and Slack receivers were told ("firing"/"resolved"), and when.
    notified: str = ""
    notified_at: int | None = None

    def needs_sending(self, ts: int, resend_delay_ns: int) -> bool:
        """Return whether Alertmanager must be (re)told about this alert at `ts` (Prometheus' rule)."""
        if self.state == PENDING:
            return False
        if self.resolved_at is not None and (self.last_sent_at is None or self.resolved_at > self.last_sent_at):
            return True
        return self.last_sent_at is None or self.last_sent_at + resend_delay_ns < ts

    def to_api(self) -> dict[str, Any]:
        """Return the alert as Prometheus' rules and alerts APIs show it."""
        out: dict[str, Any] = {
            "labels": dict(sorted(self.labels.items())),
            "annotations": dict(sorted(self.annotations.items())),
            "state": self.state,
            "activeAt": format_rfc3339(self.active_at),
            "value": format_float_e(self.value),
        }
        if self.keep_firing_since is not None:
            out["keepFiringSince"] = format_rfc3339(self.keep_firing_since)
        return out


class RuleEvalError(RuntimeError):
    """A rule's result cannot be used (duplicate label sets, over the group's limit)."""


@dataclass
class _RuleState:
    """A rule and what its evaluations left: health, last error, timing, and for alerting rules the alerts."""

    rule: Rule
    health: str = "unknown"
    last_error: str = ""
    last_evaluation_ns: int | None = None
    evaluation_s: float = 0.0
    active: dict[LabelKey, Alert] = field(default_factory=dict)
    # Recording rules: the series written last time, to mark those that vanish as stale.
    last_series: set[LabelKey] = field(default_factory=set)

    @property
    def for_ns(self) -> int:
        return round(self.rule.for_s * NS)

    @property
    def keep_firing_for_ns(self) -> int:
        return round(self.rule.keep_firing_for_s * NS)

    def state(self) -> str:
        """Return the highest state among the rule's alerts."""
        best = INACTIVE
        for a in self.active.values():
            if _STATE_ORDER[a.state] > _STATE_ORDER[best]:
                best = a.state
        return best

    def active_alerts(self) -> list[Alert]:
        """Return alerts that are pending or firing (not resolved), in label order."""
        return [a for k, a in sorted(self.active.items()) if a.resolved_at is None]

    def apply_alert_samples(
        self,
        samples: Sequence[tuple[Mapping[str, str], float]],
        ts: int,
        limit: int,
        external_labels: Mapping[str, str],
        external_url: str = "",
    ) -> None:
        """Advance the alert states with the query result at `ts` (Prometheus' alerting-rule semantics)."""
        rule = self.rule
        current: dict[LabelKey, Alert] = {}
        for sample_labels, value in samples:
            tmpl_labels = {k: v for k, v in sample_labels.items()}

            def expand(text: str, tmpl_labels: Mapping[str, str] = tmpl_labels, value: float = value) -> str:
                try:
                    return render_template(
                        text,
                        tmpl_labels,
                        value,
                        external_labels=external_labels,
                        expr=rule.expr,
                        name=rule.name,
                        external_url=external_url,
                        at=ts / NS,
                    )
                except Exception as e:  # A broken template shows in the alert rather than stopping it.
                    return f"<error expanding template: {e}>"

            labels = {k: v for k, v in sample_labels.items() if k != "__name__"}
            for name, text in rule.labels.items():
                labels[name] = expand(text)
            labels["alertname"] = rule.name
            annotations = {name: expand(text) for name, text in rule.annotations.items()}
            key = _key(labels)
            if key in current:
                raise RuleEvalError("vector contains metrics with the same labelset after applying alert labels")
            current[key] = Alert(labels=labels, annotations=annotations, state=PENDING, value=value, active_at=ts)

        for key, new in current.items():
            old = self.active.get(key)
            if old is not None and old.state != INACTIVE:
                old.value = new.value
                old.annotations = new.annotations
                continue
            if old is not None:
                # A resolved alert that comes back starts over, but receivers knew it as resolved.
                new.notified, new.notified_at = old.notified, old.notified_at
            self.active[key] = new

        active_pending = 0
        for key, a in list(self.active.items()):
            if key not in current:
                keep_firing = False
                if a.state == FIRING and self.keep_firing_for_ns > 0:
                    if a.keep_firing_since is None:
                        a.keep_firing_since = ts
                    keep_firing = ts - a.keep_firing_since < self.keep_firing_for_ns
                if a.state == PENDING or (a.resolved_at is not None and ts - a.resolved_at > RESOLVED_RETENTION_NS):
                    del self.active[key]
                if a.state != INACTIVE and not keep_firing:
                    a.state = INACTIVE
                    a.resolved_at = ts
                if not keep_firing:
                    continue
            else:
                a.keep_firing_since = None
            active_pending += 1
            if a.state == PENDING and ts - a.active_at >= self.for_ns:
                a.state = FIRING
                a.fired_at = ts
            if a.state == FIRING and ts - a.active_at < self.for_ns:
                # `for` grew (the rule changed): the alert has not yet held long enough to fire.
                a.state = PENDING
                a.fired_at = a.last_sent_at = a.keep_firing_since = None
        if 0 < limit < active_pending:
            self.active = {}
            raise RuleEvalError(f"exceeded limit of {limit} with {active_pending} alerts")

    def record_samples(self, samples: Sequence[tuple[Mapping[str, str], float]], limit: int) -> list[dict[str, str]]:
        """Return the recorded series' label sets for the query result (values are the samples')."""
        out: list[dict[str, str]] = []
        seen: set[LabelKey] = set()
        for sample_labels, _ in samples:
            labels = dict(sample_labels)
            labels["__name__"] = self.rule.name
            labels.update(self.rule.labels)
            key = _key(labels)
            if key in seen:
                raise RuleEvalError("vector contains metrics with the same labelset after applying rule labels")
            seen.add(key)
            out.append(labels)
        if 0 < limit < len(out):
            raise RuleEvalError(f"exceeded limit of {limit} with {len(out)} series")
        return out

    def to_api(self) -> dict[str, Any]:
        """Return the rule as Prometheus' rules API shows it."""
        rule = self.rule
        common = {
            "health": self.health,
            "lastError": self.last_error,
            "lastEvaluation": format_rfc3339(self.last_evaluation_ns),
            "evaluationTime": self.evaluation_s,
        }
        if rule.kind == "record":
            return {
                "name": rule.name,
                "query": rule.expr,
                "labels": dict(sorted(rule.labels.items())),
                **common,
                "type": "recording",
            }
        return {
            "state": self.state(),
            "name": rule.name,
            "query": rule.expr,
            "duration": rule.for_s,
            "keepFiringFor": rule.keep_firing_for_s,
            "labels": dict(sorted(rule.labels.items())),
            "annotations": dict(sorted(rule.annotations.items())),
            "alerts": [a.to_api() for a in self.active_alerts()],
            **common,
            "type": "alerting",
        }


GroupKey = tuple[str, str, str]  # tenant, namespace, group name


@dataclass
class _GroupState:
    """A group as the manager runs it: its rules' states, timing, schedule counters and its task."""

    tenant: str
    namespace: str
    group: RuleGroup
    interval_ns: int
    rules: list[_RuleState]
    order: int = 0
    last_evaluation_ns: int | None = None
    evaluation_s: float = 0.0
    iterations: int = 0
    missed_iterations: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def offset_ns(self) -> int:
        """Return the group's fixed offset within its interval, so groups do not all run at once."""
        text = f"{self.tenant}\xff{self.namespace}\xff{self.group.name}".encode()
        return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") % self.interval_ns

    def eval_timestamp(self, now_ns: int) -> int:
        """Return the latest evaluation slot at or before `now_ns`."""
        offset = self.offset_ns
        adjusted = now_ns - offset
        return adjusted - adjusted % self.interval_ns + offset


def _rule_id(rule: Rule) -> tuple[str, str]:
    return rule.kind, rule.name


class RuleManager:
    """Runs every tenant's rule groups from a RuleStore and reports their state as Prometheus' API does."""

    def __init__(
        self,
        store: RuleStore,
        query: QueryFn,
        settings: RulerSettings,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.query = query
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.notifier = Notifier(
            alertmanager_urls=settings.alertmanager_urls,
            webhook_urls=settings.webhook_urls,
            slack_webhook_urls=settings.slack_webhook_urls,
            external_url=settings.external_url,
            external_labels=settings.external_labels,
        )
        self.remote_writer = (
            RemoteWriter(settings.remote_write_url, external_labels=settings.external_labels)
            if settings.remote_write_url
            else None
        )
        self._groups: dict[GroupKey, _GroupState] = {}
        self._loaded_version: int | None = None
        self._running = False
        self._watch_task: asyncio.Task[None] | None = None
        self._restored = self._load_state()
        self._saved_state: bytes | None = None
        self._save_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start evaluating every group, and keep following changes in the store until stop()."""
        if self._running:
            return
        self._running = True
        self._loop = asyncio.get_running_loop()
        await self.notifier.start()
        if self.remote_writer is not None:
            await self.remote_writer.start()
        self.reload()
        for g in self._groups.values():
            self._start_group(g)
        self._watch_task = asyncio.create_task(self._watch_store(), name="loglake-ruler-watch")

    async def stop(self) -> None:
        """Stop evaluating, save alert state and flush queued notifications (briefly)."""
        if not self._running:
            return
        self._running = False
        tasks = [t for t in [self._watch_task, *(g.task for g in self._groups.values())] if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._watch_task = None
        for g in self._groups.values():
            g.task = None
        await self._save_state()
        await self.notifier.stop()
        if self.remote_writer is not None:
            await self.remote_writer.stop()

    def reload(self) -> None:
        """Bring the running groups in line with the store now (it is also polled every second)."""
        try:
            version = self.store.version
            if version == self._loaded_version:
                return
            tenants = self.store.tenants()
        except Exception as e:  # A broken store must not stop the groups that already run.
            log.error("ruler: cannot read rules from the store: %s", e)
            return
        wanted: dict[GroupKey, RuleGroup] = {}
        for tenant in tenants:
            try:
                namespaces = self.store.namespaces(tenant)
            except Exception as e:
                # One bad file must not stop the tenant's rules that already run: keep them as they are.
                log.error("ruler: cannot read rules of tenant %r: %s", tenant, e)
                wanted.update({k: g.group for k, g in self._groups.items() if k[0] == tenant})
                continue
            for namespace, groups in namespaces.items():
                for group in groups:
                    wanted[(tenant, namespace, group.name)] = group
        for key in list(self._groups):
            if key not in wanted:
                self._stop_group(self._groups.pop(key))
        for order, (key, group) in enumerate(wanted.items()):
            existing = self._groups.get(key)
            if existing is None:
                state = self._new_group_state(key, group)
                state.order = order
                self._groups[key] = state
                if self._running:
                    self._start_group(state)
            else:
                existing.order = order
                if existing.group != group:
                    self._stop_group(existing)
                    state = self._new_group_state(key, group, previous=existing)
                    state.order = order
                    self._groups[key] = state
                    if self._running:
                        self._start_group(state)
        self._loaded_version = version

    def _new_group_state(self, key: GroupKey, group: RuleGroup, previous: _GroupState | None = None) -> _GroupState:
        tenant, namespace, _ = key
        interval_s = group.interval_s or self.settings.evaluation_interval_s
        old_rules: dict[tuple[str, str], list[_RuleState]] = {}
        for rs in previous.rules if previous else []:
            old_rules.setdefault(_rule_id(rs.rule), []).append(rs)
        rules: list[_RuleState] = []
        for rule in group.rules:
            state = _RuleState(rule)
            same = old_rules.get(_rule_id(rule))
            if same:
                # As Prometheus does on reload: a rule of the same name keeps its alerts and health.
                old = same.pop(0)
                state.active, state.last_series = old.active, old.last_series
                state.health, state.last_error = old.health, old.last_error
                state.last_evaluation_ns, state.evaluation_s = old.last_evaluation_ns, old.evaluation_s
            elif rule.kind == "alert":
                for alert in self._restored.pop((*key, rule.name), []):
                    state.active[_key(alert.labels)] = alert
            rules.append(state)
        g = _GroupState(tenant, namespace, group, max(1, round(interval_s * NS)), rules)
        if previous is not None:
            g.last_evaluation_ns, g.evaluation_s = previous.last_evaluation_ns, previous.evaluation_s
            g.iterations, g.missed_iterations = previous.iterations, previous.missed_iterations
        return g

    def _start_group(self, g: _GroupState) -> None:
        if g.task is None:
            g.task = asyncio.create_task(self._run_group(g), name=f"loglake-ruler-{g.namespace}-{g.group.name}")

    def _stop_group(self, g: _GroupState) -> None:
        if g.task is not None:
            g.task.cancel()
            g.task = None

    async def _watch_store(self) -> None:
        while True:
            await self.clock.sleep(STORE_POLL_S)
            self.reload()

    # ---- scheduling ----------------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return round(self.clock.now() * NS)

    async def _sleep_until(self, ts_ns: int) -> None:
        await self.clock.sleep(max(0.0, (ts_ns - self._now_ns()) / NS))

    async def _run_group(self, g: _GroupState) -> None:
        next_ns = g.eval_timestamp(self._now_ns()) + g.interval_ns
        while True:
            await self._sleep_until(next_ns)
            behind = (self._now_ns() - next_ns) // g.interval_ns
            if behind > 0:
                # After a pause, evaluate only the latest slot: replaying missed ones would be a burst of stale work.
                g.missed_iterations += behind
                log.warning("ruler: group %s/%s/%s missed %d evaluations", g.tenant, g.namespace, g.group.name, behind)
                next_ns += behind * g.interval_ns
            try:
                await self._evaluate(g, next_ns)
            except asyncio.CancelledError:
                raise
            except Exception:  # The loop must survive anything one evaluation does.
                log.exception("ruler: evaluating group %s/%s/%s failed", g.tenant, g.namespace, g.group.name)
            next_ns += g.interval_ns

    # ---- evaluation ----------------------------------------------------------------------------------------

    async def evaluate_group_once(self, tenant: str, namespace: str, group: RuleGroup, at: float) -> None:
        """Evaluate one group at unix time `at` as its scheduled run would (state, notifications, remote write)."""
        key = (tenant, namespace, group.name)
        g = self._groups.get(key)
        if g is None:
            g = self._new_group_state(key, group)
            g.order = len(self._groups)
            self._groups[key] = g
        elif g.group != group:
            self._stop_group(g)
            g = self._new_group_state(key, group, previous=g)
            self._groups[key] = g
        await self._evaluate(g, round(at * NS))

    async def _evaluate(self, g: _GroupState, ts: int) -> None:
        started = time.perf_counter()
        recorded: list[Series] = []
        ts_ms = ts // 1_000_000
        for rs in g.rules:
            rule_started = time.perf_counter()
            try:
                samples = await asyncio.to_thread(self.query, g.tenant, rs.rule.expr, ts)
                if rs.rule.kind == "alert":
                    rs.apply_alert_samples(
                        samples, ts, g.group.limit, self.settings.external_labels, self.settings.external_url
                    )
                else:
                    label_sets = rs.record_samples(samples, g.group.limit)
                    current = {_key(labels) for labels in label_sets}
                    recorded.extend(
                        (labels, [(ts_ms, value)]) for labels, (_, value) in zip(label_sets, samples, strict=True)
                    )
                    # Series that vanished get Prometheus' staleness marker, so queries stop showing them at once.
                    recorded.extend((dict(k), [(ts_ms, STALE_NAN)]) for k in sorted(rs.last_series - current))
                    rs.last_series = current
                rs.health, rs.last_error = "ok", ""
            except asyncio.CancelledError:
                raise
            except Exception as e:
                rs.health, rs.last_error = "err", str(getattr(e, "message", None) or e)
                log.warning(
                    "ruler: rule %r in group %s/%s/%s failed: %s",
                    rs.rule.name,
                    g.tenant,
                    g.namespace,
                    g.group.name,
                    rs.last_error,
                )
            else:
                if rs.rule.kind == "alert":
                    self._send_alerts(g, rs, ts)
                    if self.remote_writer is not None:
                        recorded.extend(self._alert_series(rs, ts_ms))
            rs.last_evaluation_ns = ts
            rs.evaluation_s = time.perf_counter() - rule_started
        g.iterations += 1
        g.last_evaluation_ns = ts
        g.evaluation_s = time.perf_counter() - started
        if recorded and self.remote_writer is not None:
            self.remote_writer.write(recorded)
        await self._save_state()

    def _alert_series(self, rs: _RuleState, ts_ms: int) -> list[Series]:
        # Prometheus' ALERTS series: 1 for each pending or firing alert, labelled with its state.
        return [
            ({**a.labels, "__name__": "ALERTS", "alertstate": a.state}, [(ts_ms, 1.0)])
            for a in rs.active.values()
            if a.state in (PENDING, FIRING)
        ]

    def _notice(self, g: _GroupState, rs: _RuleState, a: Alert, ts: int) -> AlertNotice:
        resolved = a.resolved_at is not None
        return AlertNotice(
            labels=dict(a.labels),
            annotations=dict(a.annotations),
            starts_at_ns=a.fired_at or a.active_at,
            ends_at_ns=(a.resolved_at if resolved else a.valid_until) or 0,
            resolved=resolved,
            value=a.value,
            expr=rs.rule.expr,
            generator_url=query_link(self.settings.external_url, rs.rule.expr, a.active_at, a.resolved_at),
            tenant=g.tenant,
        )

    def _send_alerts(self, g: _GroupState, rs: _RuleState, ts: int) -> None:
        resend_ns = round(self.settings.resend_delay_s * NS)
        to_alertmanager: list[AlertNotice] = []
        to_receivers: list[AlertNotice] = []
        for _, a in sorted(rs.active.items()):
            if a.needs_sending(ts, resend_ns):
                a.last_sent_at = ts
                # Valid long enough to survive two failed evaluations or sends.
                a.valid_until = ts + 4 * max(g.interval_ns, resend_ns)
                to_alertmanager.append(self._notice(g, rs, a, ts))
            # Webhook and Slack receivers have no Alertmanager to deduplicate: tell them of changes only.
            if a.state == FIRING and (
                a.notified != FIRING or (a.notified_at is not None and ts - a.notified_at >= RECEIVER_REPEAT_NS)
            ):
                if a.valid_until is None:
                    a.valid_until = ts + 4 * max(g.interval_ns, resend_ns)
                a.notified, a.notified_at = FIRING, ts
                to_receivers.append(self._notice(g, rs, a, ts))
            elif a.resolved_at is not None and a.notified == FIRING:
                a.notified, a.notified_at = "resolved", ts
                to_receivers.append(self._notice(g, rs, a, ts))
        self.notifier.send_alertmanager(to_alertmanager)
        self.notifier.send_receivers(to_receivers)

    # ---- state across restarts -----------------------------------------------------------------------------

    def _state_document(self) -> bytes:
        rules = []
        for (tenant, namespace, group), g in sorted(self._groups.items()):
            for rs in g.rules:
                if rs.rule.kind != "alert":
                    continue
                alerts = [
                    {
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "state": a.state,
                        "value": a.value if math.isfinite(a.value) else str(a.value),
                        "activeAt": a.active_at,
                        "firedAt": a.fired_at,
                        "keepFiringSince": a.keep_firing_since,
                        "notified": a.notified,
                        "notifiedAt": a.notified_at,
                    }
                    for _, a in sorted(rs.active.items())
                    if a.state in (PENDING, FIRING)
                ]
                if alerts:
                    rules.append(
                        {
                            "tenant": tenant,
                            "namespace": namespace,
                            "group": group,
                            "rule": rs.rule.name,
                            "alerts": alerts,
                        }
                    )
        return orjson.dumps({"version": STATE_VERSION, "rules": rules}, option=orjson.OPT_INDENT_2)

    async def _save_state(self) -> None:
        """Write pending and firing alerts to the state file if they changed (atomic; off the event loop)."""
        path = self.settings.state_path
        if path is None:
            return
        async with self._save_lock:
            doc = self._state_document()
            if doc == self._saved_state:
                return
            try:
                await asyncio.to_thread(write_atomic, path, doc)
            except OSError as e:
                log.error("ruler: cannot save alert state to %s: %s", path, e)
                return
            self._saved_state = doc

    def _load_state(self) -> dict[tuple[str, str, str, str], list[Alert]]:
        path = self.settings.state_path
        if path is None or not path.exists():
            return {}
        try:
            doc = orjson.loads(path.read_bytes())
            out: dict[tuple[str, str, str, str], list[Alert]] = {}
            for r in doc.get("rules", []):
                alerts = [
                    Alert(
                        labels=dict(a["labels"]),
                        annotations=dict(a.get("annotations") or {}),
                        state=a["state"] if a["state"] in (PENDING, FIRING) else PENDING,
                        value=float(a.get("value", 0.0)),
                        active_at=int(a["activeAt"]),
                        fired_at=a.get("firedAt"),
                        keep_firing_since=a.get("keepFiringSince"),
                        notified=a.get("notified") or "",
                        notified_at=a.get("notifiedAt"),
                    )
                    for a in r["alerts"]
                ]
                out[(r["tenant"], r["namespace"], r["group"], r["rule"])] = alerts
            return out
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("ruler: cannot restore alert state from %s (starting without it): %s", path, e)
            return {}

    # ---- status --------------------------------------------------------------------------------------------

    def _tenant_groups(self, tenant: str) -> list[_GroupState]:
        if self._on_manager_loop():
            # Show changes made through the rules API at once rather than at the next store poll.
            self.reload()
        groups = [g for g in list(self._groups.values()) if g.tenant == tenant]
        return sorted(groups, key=lambda g: (g.namespace, g.order, g.group.name))

    def _on_manager_loop(self) -> bool:
        if not self._running:
            return True
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def rules_status(
        self,
        tenant: str,
        *,
        kind: str | None = None,
        rule_names: Sequence[str] = (),
        group_names: Sequence[str] = (),
        files: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Return the `data` of Prometheus' `GET /api/v1/rules` for a tenant; filters as its query parameters."""
        groups = []
        for g in self._tenant_groups(tenant):
            if (group_names and g.group.name not in group_names) or (files and g.namespace not in files):
                continue
            rules = [
                rs.to_api()
                for rs in g.rules
                if (kind is None or rs.rule.kind == kind) and (not rule_names or rs.rule.name in rule_names)
            ]
            if (kind or rule_names) and not rules:
                continue
            groups.append(
                {
                    "name": g.group.name,
                    "file": g.namespace,
                    "rules": rules,
                    "interval": g.interval_ns / NS,
                    "limit": g.group.limit,
                    "lastEvaluation": format_rfc3339(g.last_evaluation_ns),
                    "evaluationTime": g.evaluation_s,
                }
            )
        return {"groups": groups}

    def alerts_status(self, tenant: str) -> dict[str, Any]:
        """Return the `data` of Prometheus' `GET /api/v1/alerts` for a tenant: every pending and firing alert."""
        alerts = []
        for g in self._tenant_groups(tenant):
            for rs in g.rules:
                if rs.rule.kind == "alert":
                    alerts.extend(a.to_api() for a in rs.active_alerts())
        return {"alerts": alerts}

    def stats(self) -> dict[str, Any]:
        """Return counters: groups, evaluations, missed evaluations, notification and remote-write deliveries."""
        return {
            "groups": len(self._groups),
            "iterations": sum(g.iterations for g in self._groups.values()),
            "missed_iterations": sum(g.missed_iterations for g in self._groups.values()),
            "notifications": self.notifier.stats(),
            "remote_write": self.remote_writer.stats() if self.remote_writer else None,
        }
