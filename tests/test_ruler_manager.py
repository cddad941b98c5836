"""Rule evaluation: the alert state machine, restarts, health, limits, scheduling and recorded series.

Time is a fake clock the tests move: nothing here sleeps to wait for the ruler.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import cramjam
import pytest

from loglake.gonum import format_float_e
from loglake.logql.errors import QueryError
from loglake.ruler.manager import RuleManager, RulerSettings
from loglake.ruler.notify import AlertNotice
from loglake.ruler.remote_write import STALE_NAN, encode_write_request
from loglake.ruler.rules import RuleGroup, parse_rule_group
from loglake.ruler.store import RuleStore
from tests.test_ruler_notify import Receiver

T0 = 1_700_000_040.0  # a whole minute
NS = 1_000_000_000
T = TypeVar("T")


class FakeClock:
    """A clock the test moves; `sleep` waits until the test advances time past the wake-up time."""

    def __init__(self, now: float) -> None:
        self.t = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), next(self._seq), fut))
        await fut

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def settle(self, sleepers: int, timeout: float = 10.0) -> None:
        """Wait (in real time, for worker threads) until `sleepers` tasks wait on this clock again."""
        deadline = time.monotonic() + timeout
        while self.sleeping < sleepers:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.sleeping} of {sleepers} tasks went back to sleep")
            await asyncio.sleep(0.001)

    def _wake_due(self) -> bool:
        woke = False
        while self._sleepers and self._sleepers[0][0] <= self.t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
                woke = True
        return woke

    async def advance(self, seconds: float, sleepers: int) -> None:
        """Move time forward, waking each sleeper at its time and letting it run until all sleep again."""
        target = self.t + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            self.t = max(self.t, self._sleepers[0][0])
            if self._wake_due():
                await self.settle(sleepers)
        self.t = target

    async def jump(self, seconds: float, sleepers: int) -> None:
        """Move time forward at once, as a suspended process sees it, then wake whoever is due."""
        self.t += seconds
        if self._wake_due():
            await self.settle(sleepers)


class FakeQuery:
    """A QueryFn whose result the test sets; records every call."""

    def __init__(self) -> None:
        self.result: list[tuple[dict[str, str], float]] | Exception = []
        self.by_expr: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, tenant: str, expr: str, at_ns: int) -> list[tuple[dict[str, str], float]]:
        with self.lock:
            self.calls.append((tenant, expr, at_ns))
        if isinstance(self.result, Exception):
            raise self.result
        return list(self.by_expr.get(expr, self.result))


ALERT_GROUP = """
name: ai
interval: 1m
rules:
  - alert: AIErrors
    expr: sum by (service) (count_over_time({namespace="ai-prod"} |~ "error|rate_limited" [1m])) > 5
    for: 2m
    labels:
      severity: page
      team: "{{ $labels.service }}-team"
    annotations:
      summary: "{{ $labels.service }} answers errors"
      description: "{{ $value }} errors in the last minute"
"""


class Harness:
    """A RuleManager over a real RuleStore in tmp, a FakeQuery and captured notifications."""

    def __init__(self, tmp: Path, group_yaml: str = ALERT_GROUP, clock: FakeClock | None = None, **settings: Any):
        self.tmp = tmp
        self.store = RuleStore(tmp / "rules")
        self.group = parse_rule_group(group_yaml)
        self.store.set_group("fake", "ns", self.group)
        self.query = FakeQuery()
        settings.setdefault("state_path", tmp / "ruler-state.json")
        self.settings = RulerSettings(**settings)
        self.clock = clock
        self.am: list[list[AlertNotice]] = []
        self.receivers: list[list[AlertNotice]] = []
        self.manager = self.new_manager()

    def new_manager(self) -> RuleManager:
        m = RuleManager(self.store, self.query, self.settings, self.clock)
        m.notifier.send_alertmanager = lambda alerts: self.am.append(list(alerts)) if alerts else None  # type: ignore[method-assign]
        m.notifier.send_receivers = lambda alerts: self.receivers.append(list(alerts)) if alerts else None  # type: ignore[method-assign]
        self.manager = m
        return m

    def eval_at(self, t: float, group: RuleGroup | None = None) -> None:
        asyncio.run(self.manager.evaluate_group_once("fake", "ns", group or self.group, t))

    def alerts(self) -> list[dict[str, Any]]:
        return self.manager.alerts_status("fake")["alerts"]

    def rule(self, index: int = 0) -> dict[str, Any]:
        [group] = self.manager.rules_status("fake")["groups"]
        return group["rules"][index]


def errors(value: float, service: str = "chat") -> list[tuple[dict[str, str], float]]:
    return [({"service": service}, value)]


def test_alert_is_pending_then_fires_after_for(tmp_path: Path):
    h = Harness(tmp_path)
    assert h.rule()["state"] == "inactive" and h.rule()["health"] == "unknown"
    h.query.result = errors(7)
    h.eval_at(T0)
    [alert] = h.alerts()
    assert alert["state"] == "pending"
    assert alert["activeAt"] == "2023-11-14T22:14:00Z"
    assert alert["labels"] == {"alertname": "AIErrors", "service": "chat", "severity": "page", "team": "chat-team"}
    assert h.am == []
    h.eval_at(T0 + 60)
    assert h.alerts()[0]["state"] == "pending"
    h.eval_at(T0 + 120)
    [alert] = h.alerts()
    assert alert["state"] == "firing" and alert["activeAt"] == "2023-11-14T22:14:00Z"
    assert h.rule()["state"] == "firing" and h.rule()["health"] == "ok"
    [[sent]] = h.am
    assert sent.starts_at_ns == (T0 + 120) * NS and not sent.resolved
    # Valid for four times the larger of interval and resend delay, as Prometheus sends it.
    assert sent.ends_at_ns == (T0 + 120 + 4 * 60) * NS
    assert [[a.status for a in batch] for batch in h.receivers] == [["firing"]]


def test_condition_that_stops_while_pending_starts_over(tmp_path: Path):
    h = Harness(tmp_path)
    h.query.result = errors(7)
    h.eval_at(T0)
    h.eval_at(T0 + 60)
    h.query.result = []
    h.eval_at(T0 + 120)
    assert h.alerts() == []
    assert h.rule()["state"] == "inactive"
    h.query.result = errors(8)
    h.eval_at(T0 + 180)
    [alert] = h.alerts()
    assert alert["state"] == "pending" and alert["activeAt"] == "2023-11-14T22:17:00Z"
    h.eval_at(T0 + 240)
    assert h.alerts()[0]["state"] == "pending"
    h.eval_at(T0 + 300)
    assert h.alerts()[0]["state"] == "firing"
    assert h.receivers and h.am


def test_keep_firing_for_holds_the_alert_then_resolves(tmp_path: Path):
    group = """
name: ai
rules:
  - alert: AIErrors
    expr: sum(count_over_time({namespace="ai-prod"}[1m])) > 5
    keep_firing_for: 2m
"""
    h = Harness(tmp_path, group)
    h.query.result = [({}, 9.0)]
    h.eval_at(T0)
    assert h.alerts()[0]["state"] == "firing"
    h.query.result = []
    h.eval_at(T0 + 60)
    [alert] = h.alerts()
    assert alert["state"] == "firing" and alert["keepFiringSince"] == "2023-11-14T22:15:00Z"
    # The condition returns: keepFiringSince is cleared, and counts again from the next gap.
    h.query.result = [({}, 9.0)]
    h.eval_at(T0 + 120)
    assert "keepFiringSince" not in h.alerts()[0]
    h.query.result = []
    h.eval_at(T0 + 180)
    h.eval_at(T0 + 240)
    assert h.alerts()[0]["state"] == "firing"
    h.eval_at(T0 + 300)
    assert h.alerts() == []
    resolved = [a for batch in h.am for a in batch if a.resolved]
    assert [a.ends_at_ns for a in resolved] == [(T0 + 300) * NS]
    assert [[a.status for a in batch] for batch in h.receivers] == [["firing"], ["resolved"]]


def test_resolved_alert_is_resent_then_forgotten_after_15_minutes(tmp_path: Path):
    group = """
name: ai
rules:
  - alert: AIErrors
    expr: sum(count_over_time({namespace="ai-prod"}[1m])) > 5
"""
    h = Harness(tmp_path, group)
    h.query.result = [({}, 9.0)]
    h.eval_at(T0)
    h.query.result = []
    h.eval_at(T0 + 60)
    assert h.alerts() == []
    assert h.rule()["state"] == "inactive"
    for minute in range(2, 17):
        h.eval_at(T0 + 60 * minute)
    sent = [(a.resolved, a.ends_at_ns) for batch in h.am for a in batch]
    resolved_at = (T0 + 60) * NS
    assert sent[0] == (False, (T0 + 240) * NS)
    # Sent at resolution, then again every time the resend delay (60s, strictly) has passed.
    assert sent[1:] == [(True, resolved_at)] * 8
    rule_state = h.manager._groups[("fake", "ns", "ai")].rules[0]
    assert [a.state for a in rule_state.active.values()] == ["inactive"]  # 15 minutes after resolution: kept
    h.eval_at(T0 + 60 * 17)
    assert rule_state.active == {}
    assert len(h.am) == 9
    # Receivers hear of the resolution once.
    assert [[a.status for a in batch] for batch in h.receivers] == [["firing"], ["resolved"]]


def test_firing_alert_is_resent_to_alertmanager_every_resend_delay(tmp_path: Path):
    group = """
name: ai
rules:
  - alert: AIErrors
    expr: sum(count_over_time({namespace="ai-prod"}[1m])) > 5
"""
    h = Harness(tmp_path, group, resend_delay_s=120)
    h.query.result = [({}, 9.0)]
    for minute in range(7):
        h.eval_at(T0 + 60 * minute)
    assert [batch[0].starts_at_ns for batch in h.am] == [T0 * NS] * 3
    assert [batch[0].ends_at_ns for batch in h.am] == [(T0 + d) * NS for d in (480, 660, 840)]
    assert len(h.receivers) == 1


def test_restart_keeps_firing_alert_firing_with_its_active_at(tmp_path: Path):
    h = Harness(tmp_path)
    h.query.result = errors(7) + errors(9, "search")
    h.eval_at(T0)
    h.query.result = errors(7)
    h.eval_at(T0 + 120)
    assert {a["labels"]["service"]: a["state"] for a in h.alerts()} == {"chat": "firing"}
    saved = json.loads((tmp_path / "ruler-state.json").read_text())
    assert [a["state"] for r in saved["rules"] for a in r["alerts"]] == ["firing"]

    h.am.clear()
    h.receivers.clear()
    h.new_manager()
    [alert] = h.alerts()
    assert alert["state"] == "firing" and alert["activeAt"] == "2023-11-14T22:14:00Z"
    h.eval_at(T0 + 180)
    [alert] = h.alerts()
    assert alert["state"] == "firing" and alert["activeAt"] == "2023-11-14T22:14:00Z"
    # Alertmanager hears it again (it deduplicates); Slack and webhooks were told before the restart.
    assert [a.starts_at_ns for batch in h.am for a in batch] == [(T0 + 120) * NS]
    assert h.receivers == []


def test_restart_keeps_counting_for_from_the_original_active_at(tmp_path: Path):
    h = Harness(tmp_path)
    h.query.result = errors(7)
    h.eval_at(T0)
    h.new_manager()
    h.eval_at(T0 + 60)
    assert h.alerts()[0]["state"] == "pending"
    h.eval_at(T0 + 120)
    [alert] = h.alerts()
    assert alert["state"] == "firing" and alert["activeAt"] == "2023-11-14T22:14:00Z"


def test_restored_alert_that_no_longer_holds_resolves(tmp_path: Path):
    h = Harness(tmp_path)
    h.query.result = errors(7)
    for minute in range(3):
        h.eval_at(T0 + 60 * minute)
    h.receivers.clear()
    h.new_manager()
    h.query.result = []
    h.eval_at(T0 + 240)
    assert h.alerts() == []
    assert [a.status for batch in h.receivers for a in batch] == ["resolved"]
    assert json.loads((tmp_path / "ruler-state.json").read_text())["rules"] == []


def test_annotations_are_rendered_with_labels_and_value(tmp_path: Path):
    h = Harness(tmp_path)
    h.query.result = errors(7.5)
    h.eval_at(T0)
    [alert] = h.alerts()
    assert alert["annotations"] == {
        "summary": "chat answers errors",
        "description": "7.5 errors in the last minute",
    }
    assert alert["value"] == "7.5e+00"
    # The rules API shows the templates themselves.
    assert h.rule()["annotations"]["summary"] == "{{ $labels.service }} answers errors"
    # A new value updates annotations of an existing alert.
    h.query.result = errors(12)
    h.eval_at(T0 + 60)
    assert h.alerts()[0]["annotations"]["description"] == "12 errors in the last minute"


def test_failing_query_sets_health_and_last_error(tmp_path: Path):
    h = Harness(tmp_path)
    h.query.result = QueryError(400, "max_query_series exceeded: 600 series, the limit is 500")
    h.eval_at(T0)
    rule = h.rule()
    assert rule["health"] == "err"
    assert "max_query_series" in rule["lastError"]
    assert rule["lastEvaluation"] == "2023-11-14T22:14:00Z"
    h.query.result = errors(7)
    h.eval_at(T0 + 60)
    assert (h.rule()["health"], h.rule()["lastError"]) == ("ok", "")


def test_group_limit_caps_alerts(tmp_path: Path):
    group = ALERT_GROUP.replace("interval: 1m", "interval: 1m\nlimit: 1")
    h = Harness(tmp_path, group)
    h.query.result = errors(7, "chat") + errors(9, "search")
    h.eval_at(T0)
    assert h.rule()["health"] == "err"
    assert h.rule()["lastError"] == "exceeded limit of 1 with 2 alerts"
    assert h.alerts() == []
    h.query.result = errors(7, "chat")
    h.eval_at(T0 + 60)
    assert h.rule()["health"] == "ok" and len(h.alerts()) == 1


def test_duplicate_label_sets_after_alert_labels_are_an_error(tmp_path: Path):
    group = """
name: ai
rules:
  - alert: AIErrors
    expr: sum by (service) (count_over_time({namespace="ai-prod"}[1m])) > 5
    labels:
      service: all
"""
    h = Harness(tmp_path, group)
    h.query.result = errors(7, "chat") + errors(9, "search")
    h.eval_at(T0)
    assert h.rule()["lastError"] == "vector contains metrics with the same labelset after applying alert labels"


RECORD_GROUP = """
name: rec
interval: 1m
limit: 2
rules:
  - record: service:ai_errors:count1m
    expr: sum by (service) (count_over_time({namespace="ai-prod"} |= "error" [1m]))
    labels:
      source: loglake
"""


def test_rules_status_has_prometheus_shape(tmp_path: Path):
    h = Harness(tmp_path)
    h.store.set_group("fake", "ns", parse_rule_group(RECORD_GROUP))
    h.query.result = errors(7)
    h.eval_at(T0)
    data = h.manager.rules_status("fake")
    assert [(g["name"], g["file"], g["interval"], g["limit"]) for g in data["groups"]] == [
        ("ai", "ns", 60.0, 0),
        ("rec", "ns", 60.0, 2),
    ]
    ai, rec = data["groups"]
    assert ai["lastEvaluation"] == "2023-11-14T22:14:00Z" and ai["evaluationTime"] >= 0
    assert rec["lastEvaluation"] == "0001-01-01T00:00:00Z"
    [alerting] = ai["rules"]
    assert set(alerting) == {
        "state", "name", "query", "duration", "keepFiringFor", "labels", "annotations", "alerts",
        "health", "lastError", "type", "lastEvaluation", "evaluationTime",
    }  # fmt: skip
    assert (alerting["type"], alerting["duration"], alerting["name"]) == ("alerting", 120.0, "AIErrors")
    [recording] = rec["rules"]
    assert recording["type"] == "recording" and recording["health"] == "unknown"
    assert recording["labels"] == {"source": "loglake"}
    assert h.manager.rules_status("fake", kind="record")["groups"][0]["name"] == "rec"
    assert h.manager.rules_status("fake", rule_names=["AIErrors"])["groups"][0]["name"] == "ai"
    assert h.manager.rules_status("other") == {"groups": []}
    assert h.manager.alerts_status("other") == {"alerts": []}


def test_store_changes_are_followed_and_keep_alert_state(tmp_path: Path):
    h = Harness(tmp_path)
    h.query.result = errors(7)
    h.eval_at(T0)
    changed = parse_rule_group(ALERT_GROUP.replace("for: 2m", "for: 1m"))
    h.store.set_group("fake", "ns", changed)
    assert h.rule()["duration"] == 60.0
    assert h.alerts()[0]["activeAt"] == "2023-11-14T22:14:00Z"
    h.eval_at(T0 + 60, changed)
    assert h.alerts()[0]["state"] == "firing"
    h.store.delete_group("fake", "ns", "ai")
    assert h.manager.rules_status("fake") == {"groups": []}


def test_format_float_e_matches_go():
    assert [format_float_e(v) for v in (0.0, 6.0, 7.5, 1234.5, 0.001, -2.0, 1e21, math.inf, math.nan)] == [
        "0e+00",
        "6e+00",
        "7.5e+00",
        "1.2345e+03",
        "1e-03",
        "-2e+00",
        "1e+21",
        "+Inf",
        "NaN",
    ]


# ---- scheduling ---------------------------------------------------------------------------------------------


def run_with_clock(h: Harness, body: Callable[[RuleManager, FakeClock], Awaitable[T]]) -> T:
    async def main() -> T:
        assert h.clock is not None
        await h.manager.start()
        try:
            return await body(h.manager, h.clock)
        finally:
            await h.manager.stop()

    return asyncio.run(main())


def eval_times(h: Harness, expr_part: str = "") -> list[int]:
    return [at for _, expr, at in h.query.calls if expr_part in expr]


def test_groups_run_at_aligned_times_with_a_fixed_per_group_offset(tmp_path: Path):
    start = T0 + 17.3
    h = Harness(tmp_path, clock=FakeClock(start))
    h.store.set_group("fake", "ns", parse_rule_group(RECORD_GROUP))

    async def body(m: RuleManager, clock: FakeClock) -> None:
        await clock.settle(3)  # two groups and the store watcher
        await clock.advance(300, 3)

    run_with_clock(h, body)
    interval = 60 * NS
    for part in ("error|rate_limited", '|= "error"'):
        times = eval_times(h, part)
        assert len(times) == 5
        assert all(b - a == interval for a, b in itertools.pairwise(times))
        assert start * NS < times[0] <= (start + 60) * NS
    phases = {part: eval_times(h, part)[0] % interval for part in ("error|rate_limited", '|= "error"')}
    # The phase depends on the group, not on when the ruler started.
    h2 = Harness(tmp_path / "again", clock=FakeClock(T0 + 1000.9))
    h2.store.set_group("fake", "ns", parse_rule_group(RECORD_GROUP))
    run_with_clock(h2, lambda m, clock: _advance(clock, 120, 3))
    assert {part: eval_times(h2, part)[0] % interval for part in phases} == phases
    assert len(set(phases.values())) == 2


async def _advance(clock: FakeClock, seconds: float, sleepers: int) -> None:
    await clock.settle(sleepers)
    await clock.advance(seconds, sleepers)


def test_missed_evaluations_after_a_pause_are_skipped_not_replayed(tmp_path: Path):
    h = Harness(tmp_path, clock=FakeClock(T0 + 30))
    resumed: list[float] = []

    async def body(m: RuleManager, clock: FakeClock) -> dict[str, Any]:
        await _advance(clock, 150, 2)
        assert len(h.query.calls) == 2
        await clock.jump(600, 2)
        assert len(h.query.calls) == 3
        resumed.append(clock.t)
        await clock.advance(60, 2)
        return m.stats()

    stats = run_with_clock(h, body)
    times = eval_times(h)
    assert len(times) == 4
    assert times[2] - times[1] == 600 * NS  # one evaluation, at the latest slot
    assert times[2] <= resumed[0] * NS < times[2] + 60 * NS
    assert times[3] - times[2] == 60 * NS
    assert stats["missed_iterations"] == 9 and stats["iterations"] == 4


def test_evaluation_does_not_block_the_event_loop(tmp_path: Path):
    h = Harness(tmp_path)
    started = threading.Event()

    def slow_query(tenant: str, expr: str, at_ns: int) -> list[tuple[dict[str, str], float]]:
        started.set()
        time.sleep(0.5)  # stands for a long LogQL query
        return errors(7)

    h.manager.query = slow_query

    async def main() -> int:
        task = asyncio.create_task(h.manager.evaluate_group_once("fake", "ns", h.group, T0))
        ticks = 0
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += started.is_set()
        await task
        return ticks

    assert asyncio.run(main()) >= 20
    assert h.alerts()[0]["state"] == "pending"


# ---- recording rules and remote write -----------------------------------------------------------------------


def write_request_class() -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="test_remote.proto", package="prometheus", syntax="proto3")
    schema = {
        "WriteRequest": [("timeseries", 1, f.TYPE_MESSAGE, ".prometheus.TimeSeries")],
        "TimeSeries": [
            ("labels", 1, f.TYPE_MESSAGE, ".prometheus.Label"),
            ("samples", 2, f.TYPE_MESSAGE, ".prometheus.Sample"),
        ],
        "Label": [("name", 1, f.TYPE_STRING, ""), ("value", 2, f.TYPE_STRING, "")],
        "Sample": [("value", 1, f.TYPE_DOUBLE, ""), ("timestamp", 2, f.TYPE_INT64, "")],
    }
    for name, fields in schema.items():
        msg = fd.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            label = f.LABEL_REPEATED if ftype == f.TYPE_MESSAGE else f.LABEL_OPTIONAL
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


def decode(body: bytes) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    req = write_request_class()()
    req.ParseFromString(body)
    return [
        ({lb.name: lb.value for lb in ts.labels}, [(s.timestamp, s.value) for s in ts.samples]) for ts in req.timeseries
    ]


def test_write_request_encoding_decodes_with_the_protobuf_runtime():
    series = [
        ({"__name__": "up", "job": "a", "é": "ü"}, [(1_700_000_000_000, 1.5), (-5, -0.0)]),
        ({"__name__": "x"}, []),
    ]
    decoded = decode(encode_write_request(series))
    assert decoded == [
        ({"__name__": "up", "job": "a", "é": "ü"}, [(1_700_000_000_000, 1.5), (-5, -0.0)]),
        ({"__name__": "x"}, []),
    ]
    req = write_request_class()()
    req.ParseFromString(encode_write_request(series))
    assert [lb.name for lb in req.timeseries[0].labels] == ["__name__", "job", "é"]


def test_recording_rule_writes_series_to_remote_write(tmp_path: Path):
    receiver = Receiver().start()
    try:
        h = Harness(
            tmp_path,
            RECORD_GROUP,
            clock=FakeClock(T0),
            remote_write_url=receiver.url + "/api/v1/write",
            external_labels={"cluster": "prod"},
        )
        h.query.result = errors(3, "chat") + errors(4, "search")

        async def body(m: RuleManager, clock: FakeClock) -> None:
            await m.evaluate_group_once("fake", "ns", h.group, T0)
            h.query.result = errors(5, "chat")
            await m.evaluate_group_once("fake", "ns", h.group, T0 + 60)
            assert m.remote_writer is not None
            assert await m.remote_writer.drain(10)

        run_with_clock(h, body)
        first, second = receiver.wait_for(2)
    finally:
        receiver.stop()
    assert first.path == "/api/v1/write"
    assert first.headers["Content-Encoding"] == "snappy"
    assert first.headers["Content-Type"] == "application/x-protobuf"
    assert first.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    labels = {"__name__": "service:ai_errors:count1m", "source": "loglake", "cluster": "prod"}
    assert decode(bytes(cramjam.snappy.decompress_raw(first.body))) == [
        ({**labels, "service": "chat"}, [(int(T0 * 1000), 3.0)]),
        ({**labels, "service": "search"}, [(int(T0 * 1000), 4.0)]),
    ]
    got = decode(bytes(cramjam.snappy.decompress_raw(second.body)))
    assert got[0] == ({**labels, "service": "chat"}, [(int(T0 * 1000) + 60_000, 5.0)])
    # The series that vanished is marked stale.
    assert got[1][0] == {**labels, "service": "search"}
    assert struct.pack("<d", got[1][1][0][1]) == struct.pack("<d", STALE_NAN)
    assert h.rule()["health"] == "ok" and h.rule()["type"] == "recording"


def test_recording_rule_limit(tmp_path: Path):
    h = Harness(tmp_path, RECORD_GROUP)
    h.query.result = errors(1, "a") + errors(2, "b") + errors(3, "c")
    h.eval_at(T0)
    assert h.rule()["health"] == "err" and h.rule()["lastError"] == "exceeded limit of 2 with 3 series"


def test_alert_notifications_reach_real_http_receivers(tmp_path: Path):
    receiver = Receiver().start()
    try:
        h = Harness(
            tmp_path,
            ALERT_GROUP.replace("for: 2m", "for: 0s"),
            clock=FakeClock(T0),
            alertmanager_urls=[receiver.url],
            webhook_urls=[receiver.url + "/hook"],
            slack_webhook_urls=[receiver.url + "/slack"],
            external_url="http://loglake.example:3100",
        )
        h.manager = RuleManager(h.store, h.query, h.settings, h.clock)
        h.query.result = errors(7)

        async def body(m: RuleManager, clock: FakeClock) -> list[dict[str, Any]]:
            await m.evaluate_group_once("fake", "ns", h.group, T0)
            assert await m.notifier.drain(10)
            return m.notifier.stats()

        stats = run_with_clock(h, body)
        got = {r.path: r.json() for r in receiver.wait_for(3)}
    finally:
        receiver.stop()
    [am] = got["/api/v2/alerts"]
    assert am["labels"]["alertname"] == "AIErrors" and am["annotations"]["summary"] == "chat answers errors"
    assert am["generatorURL"].startswith("http://loglake.example:3100/?query=sum%20by%20%28service%29")
    assert got["/hook"]["alerts"][0]["value"] == 7.0
    slack = got["/slack"]
    assert slack["text"] == "[FIRING:1] AIErrors"
    assert "7 errors in the last minute" in slack["attachments"][0]["text"]
    assert [s["sent"] for s in stats] == [1, 1, 1]


@pytest.mark.parametrize("bad", ["not json", '{"rules": [{"tenant": 1}]}'])
def test_unreadable_state_file_is_ignored_with_a_log(tmp_path: Path, bad: str, caplog):
    (tmp_path / "ruler-state.json").write_text(bad)
    h = Harness(tmp_path)
    assert h.alerts() == []
    assert "cannot restore alert state" in caplog.text
