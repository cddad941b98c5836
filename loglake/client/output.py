"""Printing query results as logcli does: log lines (default, raw, jsonl) and metric results."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, tzinfo
from typing import Any, TextIO

import orjson

from loglake.client.query import LogEntry
from loglake.client.times import NS, format_time
from loglake.quoting import quote

OUTPUT_MODES = ("default", "raw", "jsonl")
"""Output modes of `loglake query` (logcli's `--output`)."""


def format_label_set(labels: Mapping[str, str]) -> str:
    """Return labels as Prometheus text, names sorted: `{app="api", env="prod"}`."""
    return "{" + ", ".join(f"{k}={quote(v)}" for k, v in sorted(labels.items())) + "}"


def common_labels(label_sets: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Return the name/value pairs every label set has."""
    if not label_sets:
        return {}
    common = dict(label_sets[0])
    for labels in label_sets[1:]:
        common = {k: v for k, v in common.items() if labels.get(k) == v}
    return common


class LogPrinter:
    """Writes query results in logcli's output modes.

    For log lines, `default` is `<time> <labels> <line>` without the labels every stream shares (as logcli), `raw`
    is the line only, `jsonl` one JSON object per entry with `labels` (all of them), `line` and `timestamp`.
    """

    def __init__(
        self,
        out: TextIO,
        *,
        mode: str = "default",
        zone: tzinfo = UTC,
        timestamp_format: str = "rfc3339",
        no_labels: bool = False,
        include_common_labels: bool = False,
        include_labels: Sequence[str] = (),
        exclude_labels: Sequence[str] = (),
        fixed_labels_len: int = 0,
        notes: TextIO | None = None,
    ) -> None:
        if mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output mode {mode!r}; use one of {', '.join(OUTPUT_MODES)}")
        self.out = out
        self.mode = mode
        self.zone = zone
        self.timestamp_format = timestamp_format
        self.no_labels = no_labels
        self.include_common_labels = include_common_labels
        self.include_labels = set(include_labels)
        self.exclude_labels = set(exclude_labels)
        self.fixed_labels_len = fixed_labels_len
        self.notes = notes
        self._last_common: dict[str, str] | None = None
        self._second: int | None = None
        self._second_text = ""

    def _shown_labels(self, labels: Mapping[str, str], common: Mapping[str, str]) -> dict[str, str]:
        shown = {k: v for k, v in labels.items() if self.include_common_labels or common.get(k) != v}
        if self.include_labels:
            shown = {k: v for k, v in shown.items() if k in self.include_labels}
        return {k: v for k, v in shown.items() if k not in self.exclude_labels}

    def print_entries(self, entries: Sequence[LogEntry]) -> None:
        """Write one page of entries, in the order given."""
        write = self.out.write
        if self.mode == "raw":
            for e in entries:
                write(e.line.removesuffix("\n") + "\n")
            return
        if self.mode == "jsonl":
            for e in entries:
                obj: dict[str, Any] = {"line": e.line, "timestamp": self._time(e.ts, "rfc3339nano")}
                if not self.no_labels:
                    obj = {"labels": e.labels, **obj}
                write(orjson.dumps(obj).decode() + "\n")
            return
        # Entries of one stream share one labels dict: work per stream, not per line.
        distinct = list({id(e.labels): e.labels for e in entries}.values())
        common = {} if self.include_common_labels else common_labels(distinct)
        if self.include_labels:
            common = {k: v for k, v in common.items() if k not in self.include_labels}
        if common and self.notes is not None and common != self._last_common:
            self.notes.write(f"Common labels: {format_label_set(common)}\n")
        self._last_common = common
        texts = {id(labels): format_label_set(self._shown_labels(labels, common)) for labels in distinct}
        width = max([self.fixed_labels_len, *(len(t) for t in texts.values())])
        padded = {key: text.ljust(width) for key, text in texts.items()}
        for e in entries:
            stamp = self._time(e.ts, self.timestamp_format)
            line = e.line.strip()
            if self.no_labels:
                write(f"{stamp} {line}\n")
            else:
                write(f"{stamp} {padded[id(e.labels)]} {line}\n")

    def _time(self, ns: int, fmt: str) -> str:
        if fmt != "rfc3339":
            return format_time(ns, self.zone, fmt)
        # Lines come in time order, so most share the previous line's second: format each second once.
        second = ns // NS
        if second != self._second:
            self._second, self._second_text = second, format_time(ns, self.zone, fmt)
        return self._second_text

    def print_metric(self, data: Mapping[str, Any]) -> None:
        """Write a matrix, vector or scalar result: readable lines, logcli's indented JSON (`raw`), or `jsonl`."""
        result_type = data.get("resultType")
        result = data.get("result")
        if self.mode == "raw":
            self.out.write(json.dumps(result, indent=2) + "\n")
            return
        if self.mode == "jsonl":
            items = result if result_type in ("matrix", "vector") else [result]
            for item in items or []:
                self.out.write(orjson.dumps(item).decode() + "\n")
            return
        if result_type == "scalar":
            ts, value = result
            self.out.write(f"{self._seconds(ts)} {value}\n")
            return
        series = result or []
        texts = [format_label_set(s.get("metric") or {}) for s in series]
        width = max([0, *(len(t) for t in texts)])
        for text, s in zip(texts, series, strict=True):
            points = s.get("values") if result_type == "matrix" else [s.get("value")]
            for ts, value in points or []:
                self.out.write(f"{self._seconds(ts)} {text.ljust(width)} {value}\n")

    def _seconds(self, ts: float | str) -> str:
        return format_time(round(float(ts) * NS), self.zone, "rfc3339nano")
