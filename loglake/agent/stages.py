"""Promtail's pipeline stages (`pipeline_stages`): parse, label, rewrite, filter and count log entries.

A pipeline is built once from the YAML list of stages (`build_pipeline`) and then runs over batches of entries
(`Pipeline.process`). Each stage works on a whole batch, so a stage with nothing to do costs one loop. Stages
have Promtail's names, keys, defaults and semantics; entries are updated in place. `multiline` (and `cri`'s
partial lines) may hold entries back; `Pipeline.flush` releases them and `Pipeline.pending` shows them.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from loglake.agent.entry import Entry
from loglake.agent.re2 import CompiledRE2, PatternError, compile_re2
from loglake.agent.stages_metrics import (
    DEFAULT_BUCKETS,
    StreamMetric,
    dropped_entries_by_label_counter,
    dropped_entries_counter,
    stream_metric,
)
from loglake.agent.stages_selector import Selector, SelectorError, parse_selector
from loglake.agent.stages_template import PipelineTemplate, TemplateError
from loglake.agent.stages_time import (
    TimeParser,
    load_location,
    make_time_parser,
    parse_byte_size,
    parse_go_duration,
)
from loglake.gonum import format_float_f

__all__ = ["STAGE_TYPES", "Pipeline", "Stage", "StageConfigError", "build_pipeline"]

NS = 1_000_000_000
_MISSING = object()


class StageConfigError(ValueError):
    """A pipeline stage's configuration is invalid; the message names the stage (index and type) and the key."""


# ---- Promtail's value conversions ------------------------------------------------------------------------------


def go_string(value: Any) -> str | None:
    """Promtail's getString: the text of a string, number or bool from the extracted map (None for others)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is float:
        return format_float_f(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    return None


_GO_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def _go_float(value: Any) -> float | None:
    """Promtail's getFloat: numbers, bools (0/1), numeric strings and Go durations (in seconds); None otherwise."""
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    if kind is bool:
        return 1.0 if value else 0.0
    if kind is str:
        if _GO_FLOAT.fullmatch(value):
            return float(value)
        if value.startswith(("0x", "0X", "-0x", "+0x")):
            try:
                return float.fromhex(value)
            except ValueError:
                return None
        try:
            return parse_go_duration(value) / NS
        except ValueError:
            return None
    return None


def _go_json(value: Any) -> str:
    """Go's json.Marshal for a decoded JSON value: compact, map keys sorted, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        text = (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )
    return text


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _labels_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    # A stream's labels are built by the same source and stages in the same order, so their item order is a
    # stable (and much cheaper) key than a frozenset.
    return tuple(labels.items())


_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# ---- reading a stage's options ---------------------------------------------------------------------------------


class _Options:
    """One stage's YAML options; every error names the stage and the key at fault."""

    def __init__(self, where: str, raw: Any, keys: Iterable[str] | None) -> None:
        self.where = where
        if raw is None:
            raw = {}
        if keys is not None:
            if not isinstance(raw, dict):
                raise self.error(None, f"options must be a map, not {_describe(raw)}")
            allowed = set(keys)
            unknown = sorted(str(k) for k in raw if k not in allowed)
            if unknown:
                raise self.error(unknown[0], f"unknown option; allowed: {', '.join(sorted(allowed)) or 'none'}")
        self.raw = raw

    def error(self, key: str | None, message: str) -> StageConfigError:
        """A StageConfigError naming this stage and `key`."""
        return StageConfigError(f"{self.where}: {message}" if key is None else f"{self.where}: key {key!r}: {message}")

    def has(self, key: str) -> bool:
        """Whether the key is present (even with an empty value)."""
        return key in self.raw

    def str(self, key: str, default: str | None = None, *, required: bool = False, nonempty: bool = False) -> Any:
        """A string option (numbers and bools are accepted as their text)."""
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return default
        if isinstance(value, dict | list):
            raise self.error(key, f"must be a string, not {_describe(value)}")
        text = go_string(value)
        if text is None:
            raise self.error(key, f"must be a string, not {_describe(value)}")
        if nonempty and text == "":
            raise self.error(key, "must not be empty")
        return text

    def bool(self, key: str, default: bool) -> bool:
        """A boolean option ("true"/"false" strings accepted, as Promtail's weak decoding does)."""
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int):
            return value != 0
        raise self.error(key, f"must be true or false, not {value!r}")

    def number(self, key: str, default: float) -> float:
        """A numeric option."""
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(key, f"must be a number, not {value!r}")
        try:
            return float(value)
        except ValueError:
            raise self.error(key, f"must be a number, not {value!r}") from None

    def int(self, key: str, default: int) -> int:
        """An integer option."""
        value = self.number(key, float(default))
        if not value.is_integer():
            raise self.error(key, f"must be a whole number, not {self.raw.get(key)!r}")
        return int(value)

    def duration(self, key: str, default_ns: int) -> int:
        """A Go duration option ("3s", "1m30s"), in nanoseconds."""
        value = self.raw.get(key)
        if value is None:
            return default_ns
        try:
            return parse_go_duration(str(value))
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def regex(self, key: str, pattern: Any) -> CompiledRE2:
        """Compile an RE2 pattern given for `key` (searched unanchored, as Promtail's stages do)."""
        try:
            return compile_re2(str(pattern), anchored=False)
        except PatternError as exc:
            raise self.error(key, str(exc)) from None

    def string_list(self, key: str) -> list[str]:
        """A list of strings (a single string counts as a one-element list)."""
        value = self.raw.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"must be a list of strings, not {_describe(value)}")
        return list(value)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return repr(value)


@dataclass
class _Context:
    registry: CollectorRegistry
    job: str


# ---- the stage interface and the pipeline ----------------------------------------------------------------------


class Stage:
    """One pipeline stage: takes a batch of entries, returns those that go on (in order)."""

    kind = ""
    holds_entries = False  # True for stages that may keep entries back (multiline, cri, match around them)

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        """Run the stage over a batch; return the entries that continue."""
        raise NotImplementedError

    def flush(self, now_ns: int, force: bool) -> list[Entry]:
        """Entries held back that are due (all of them when force)."""
        return []

    def pending(self) -> list[Entry]:
        """Entries held back right now."""
        return []


class Pipeline:
    """A built list of stages; see the module docstring."""

    def __init__(self, stages: list[Stage], name: str = "", nested: bool = False) -> None:
        self.stages = stages
        self.name = name
        self._nested = nested
        self._holding = [i for i, s in enumerate(stages) if s.holds_entries]

    @property
    def holds_entries(self) -> bool:
        """Whether any stage may hold entries back."""
        return bool(self._holding)

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        """Run the stages over entries (in order); return those to send. Dropped entries are left out;
        multiline may hold entries back (returned by a later process/flush call)."""
        if self._nested:
            for e in entries:
                e.extracted.update(e.labels)
        else:
            # Promtail starts every entry's extracted map with its labels; copy the labels, which a source may
            # share between entries, before stages change them.
            for e in entries:
                labels = e.labels = dict(e.labels)
                e.extracted = {**e.extracted, **labels} if e.extracted else dict(labels)
        for stage in self.stages:
            if not entries:
                break
            entries = stage.process(entries, now_ns)
        return entries

    def flush(self, now_ns: int, force: bool = False) -> list[Entry]:
        """Entries held back (multiline) whose max_wait_time has passed, or all of them when force."""
        if not self._holding:
            return []
        carry: list[Entry] = []
        for stage in self.stages[self._holding[0] :]:
            if carry:
                carry = stage.process(carry, now_ns)
            if stage.holds_entries:
                released = stage.flush(now_ns, force)
                if released:
                    carry = carry + released
        return carry

    def pending(self) -> list[Entry]:
        """Entries held back right now (the agent uses their source/start to hold file positions)."""
        out: list[Entry] = []
        for i in self._holding:
            out.extend(self.stages[i].pending())
        return out


# ---- parsing stages ------------------------------------------------------------------------------------------


def _source_text(e: Entry, source: str | None) -> str | None:
    if source is None:
        return e.line
    value = e.extracted.get(source, _MISSING)
    if value is _MISSING:
        return None
    return go_string(value)


_JMES_STEP = re.compile(r'\s*(?:([A-Za-z_][A-Za-z0-9_]*)|("(?:[^"\\]|\\.)*"))\s*')
_JMES_INDEX = re.compile(r"\s*\[\s*(-?\d+)\s*\]\s*")


def _compile_jmespath(expr: str) -> tuple[str | int, ...]:
    """The subset of JMESPath Promtail users write: `a`, `a.b`, `"a.b"`, `a[0]`, `a[-1].b`."""
    steps: list[str | int] = []
    pos = 0
    expect_key = True
    while pos < len(expr):
        if expect_key:
            m = _JMES_STEP.match(expr, pos)
            if m is not None:
                steps.append(m.group(1) if m.group(1) is not None else json.loads(m.group(2)))
                pos = m.end()
                expect_key = False
                continue
            if not steps:
                m = _JMES_INDEX.match(expr, pos)
                if m is not None:
                    steps.append(int(m.group(1)))
                    pos = m.end()
                    expect_key = False
                    continue
            break
        m = _JMES_INDEX.match(expr, pos)
        if m is not None:
            steps.append(int(m.group(1)))
            pos = m.end()
            continue
        if expr.startswith(".", pos):
            pos += 1
            expect_key = True
            continue
        break
    if pos != len(expr) or expect_key or not steps:
        raise ValueError(
            f"could not compile JMES expression {expr!r}: supported are keys (a), paths (a.b), "
            'quoted keys ("a.b") and array indexes (a[0])'
        )
    return tuple(steps)


def _jmes_search(data: Any, steps: tuple[str | int, ...]) -> Any:
    for step in steps:
        if type(step) is str:
            if type(data) is not dict:
                return None
            data = data.get(step)
        else:
            if type(data) is not list:
                return None
            index = step if step >= 0 else len(data) + step  # type: ignore[operator]
            if not 0 <= index < len(data):
                return None
            data = data[index]
    return data


def _json_value(value: Any) -> Any:
    """A JSON value as Promtail stores it: numbers as floats, objects and arrays as JSON text."""
    kind = type(value)
    if kind is str or kind is bool or value is None or kind is float:
        return value
    if kind is int:
        return float(value)
    return _go_json(value)


class JSONStage(Stage):
    """`json`: JMESPath expressions over the line (or an extracted value) into the extracted map."""

    kind = "json"

    def __init__(self, expressions: dict[str, tuple[str | int, ...]], source: str | None, drop_malformed: bool):
        self.source = source
        self.drop_malformed = drop_malformed
        # Most expressions are one top-level key: a dict lookup, no path walk.
        plain = {name: steps for name, steps in expressions.items() if len(steps) == 1 and type(steps[0]) is str}
        self.simple = [(name, str(steps[0])) for name, steps in plain.items()]
        self.paths = [(name, steps) for name, steps in expressions.items() if name not in plain]

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        out: list[Entry] = []
        source, simple, paths, convert, loads = self.source, self.simple, self.paths, _json_value, orjson.loads
        for e in entries:
            text = _source_text(e, source)
            if text is None:
                out.append(e)
                continue
            try:
                data = loads(text)
            except orjson.JSONDecodeError:
                data = _MISSING
            if data is None:
                data = {}  # Go decodes `null` into an empty map without error
            if type(data) is not dict:
                if not self.drop_malformed:
                    out.append(e)
                continue
            ex = e.extracted
            for name, key in simple:
                ex[name] = convert(data.get(key))
            for name, steps in paths:
                ex[name] = convert(_jmes_search(data, steps))
            out.append(e)
        return out


# One logfmt pair after optional whitespace: key, then `="quoted"`, `=value` or nothing. A key or value followed
# by `=` or `"` is go-logfmt's syntax error; then the last group catches the offending character.
_LOGFMT_PAIR = re.compile(
    r'[\x00-\x20]*+(?:([^\x00-\x20="]++)(?:=(?:"((?:[^"\\\n]|\\[^\n])*+)"|([^\x00-\x20="]*+)(?![="]))|(?![="]))|(.))',
    re.S,
)


def _logfmt_into(record: str, wanted: dict[str, str], out: dict[str, Any]) -> bool:
    """Decode one logfmt record as go-logfmt does, storing wanted keys; False at a syntax error (stop there)."""
    for m in _LOGFMT_PAIR.finditer(record):
        key = m.group(1)
        if key is None:
            return False
        quoted = m.group(2)
        if quoted is not None and "\\" in quoted:
            try:
                quoted = json.loads('"' + quoted + '"')
            except ValueError:
                return False
        name = wanted.get(key)
        if name is not None:
            out[name] = quoted if quoted is not None else m.group(3) or ""
    return True


class LogfmtStage(Stage):
    """`logfmt`: mapped keys of a logfmt line (or extracted value) into the extracted map."""

    kind = "logfmt"

    def __init__(self, wanted: dict[str, str], source: str | None) -> None:
        self.wanted = wanted  # logfmt key -> extracted name
        self.source = source
        self.keys = tuple(wanted)

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        source, wanted, keys = self.source, self.wanted, self.keys
        for e in entries:
            text = _source_text(e, source)
            # Only mapped keys are stored, so a line that mentions none of them needs no decoding.
            if text is None or not any(k in text for k in keys):
                continue
            if "\n" in text:
                for record in text.split("\n"):
                    if not _logfmt_into(record.removesuffix("\r"), wanted, e.extracted):
                        break
            else:
                _logfmt_into(text, wanted, e.extracted)
        return entries


class RegexStage(Stage):
    """`regex`: named groups of an RE2 expression, searched in the line (or an extracted value)."""

    kind = "regex"

    def __init__(self, regex: CompiledRE2, source: str | None) -> None:
        self.regex = regex
        self.source = source
        # Go sets each named group in order, so of groups sharing a name the last one wins.
        self.groups = [(name, indexes[-1]) for name, indexes in regex.names.items()]

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        groups = self.groups
        if not groups:
            return entries
        search, source = self.regex.pattern.search, self.source
        for e in entries:
            text = e.line if source is None else _source_text(e, source)
            if text is None:
                continue
            m = search(text)
            if m is not None:
                ex = e.extracted
                for name, index in groups:
                    ex[name] = m.group(index) or ""  # Go reports an unmatched group as ""
        return entries


class ReplaceStage(Stage):
    """`replace`: rewrite every captured group of an RE2 expression with a template; named groups are extracted."""

    kind = "replace"

    def __init__(self, regex: CompiledRE2, template: PipelineTemplate, source: str | None) -> None:
        self.regex = regex.pattern
        self.template = template
        self.source = source
        self.groups = [(name, indexes[-1]) for name, indexes in regex.names.items()]

    def _matches(self, text: str) -> list[re.Match[str]]:
        # Go skips an empty match that abuts the previous match; Python's finditer does not.
        found: list[re.Match[str]] = []
        last_end = -1
        for m in self.regex.finditer(text):
            if m.start() == m.end() == last_end:
                continue
            found.append(m)
            last_end = m.end()
        return found

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        source, template, ngroups = self.source, self.template, self.regex.groups
        constant = template.constant
        fields = template.fields
        for e in entries:
            text = _source_text(e, source)
            if text is None:
                continue
            matches = self._matches(text)
            if not matches:
                continue
            data: dict[str, str] | None = None
            if constant is None:
                data = _template_data(e.extracted, fields)
            parts: list[str] = []
            prev = 0
            captured: dict[str, str] = {}
            failed = False
            for m in matches:
                for gi in range(1, ngroups + 1):
                    start = m.start(gi)
                    if start < 0:
                        continue
                    end = m.end(gi)
                    value = text[start:end]
                    if constant is not None:
                        rendered: str | None = constant
                    else:
                        data["Value"] = value  # type: ignore[index]
                        rendered = template.render(data)  # type: ignore[arg-type]
                    if rendered is None:
                        failed = True
                        break
                    if prev == 0 or prev <= start:
                        parts.append(text[prev:start])
                        parts.append(rendered)
                        prev = end
                    captured[value] = rendered
                if failed:
                    break
            if failed:
                continue
            parts.append(text[prev:])
            result = "".join(parts)
            if source is not None:
                e.extracted[source] = result
            else:
                e.line = result
            first = matches[0]
            for name, gi in self.groups:
                key = first.group(gi) or ""
                if key in captured:
                    e.extracted[name] = captured[key]
        return entries


def _template_data(extracted: dict[str, Any], fields: frozenset[str] | None) -> dict[str, str]:
    """Extracted values as strings, only those the template reads when that is known."""
    data: dict[str, str] = {}
    if fields is None:
        items: Iterable[tuple[str, Any]] = extracted.items()
    else:
        items = ((k, extracted[k]) for k in fields if k in extracted)
    for k, v in items:
        s = go_string(v)
        if s is not None:
            data[k] = s
    return data


class TemplateStage(Stage):
    """`template`: set an extracted value from a Go template over the extracted map, `.Value` and `.Entry`."""

    kind = "template"

    def __init__(self, source: str, template: PipelineTemplate) -> None:
        self.source = source
        self.template = template

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        source, template = self.source, self.template
        fields = template.fields
        wants_value = fields is None or "Value" in fields
        for e in entries:
            ex = e.extracted
            data = _template_data(ex, fields)
            if wants_value and source in ex:
                value = go_string(ex[source])
                if value is not None:
                    data["Value"] = value
            data["Entry"] = e.line
            rendered = template.render(data)
            if rendered is None:
                continue
            if rendered == "":
                ex.pop(source, None)
            else:
                ex[source] = rendered
        return entries


# ---- label and metadata stages -------------------------------------------------------------------------------


class LabelsStage(Stage):
    """`labels`: set stream labels from extracted values."""

    kind = "labels"

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = list(mapping.items())  # label name -> extracted key

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        mapping = self.mapping
        for e in entries:
            ex = e.extracted
            labels = e.labels
            for name, src in mapping:
                value = ex.get(src, _MISSING)
                if value is _MISSING:
                    continue
                text = go_string(value)
                if text is not None:
                    labels[name] = text
        return entries


class StructuredMetadataStage(Stage):
    """`structured_metadata`: attach extracted values (or labels) as structured metadata; moved labels go."""

    kind = "structured_metadata"

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = list(mapping.items())

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        for e in entries:
            ex = e.extracted
            labels = e.labels
            added: dict[str, str] = {}
            by_source: dict[str, str] = {}
            for name, src in self.mapping:
                value = ex.get(src, _MISSING)
                if value is _MISSING:
                    continue
                text = go_string(value)
                if text is not None:
                    added[name] = text
                    by_source[src] = text
            for name, src in self.mapping:
                if src not in by_source and src in labels:
                    added[name] = labels[src]
                    by_source[src] = labels[src]
            if not added:
                continue
            e.metadata = {**e.metadata, **added}
            for src, text in by_source.items():
                if labels.get(src) == text:
                    del labels[src]
        return entries


class StaticLabelsStage(Stage):
    """`static_labels`: add fixed labels."""

    kind = "static_labels"

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        static = self.labels
        for e in entries:
            e.labels.update(static)
        return entries


class LabelDropStage(Stage):
    """`labeldrop`: remove the named labels."""

    kind = "labeldrop"

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        names = self.names
        for e in entries:
            labels = e.labels
            for name in names:
                labels.pop(name, None)
        return entries


class LabelAllowStage(Stage):
    """`labelallow`: keep only the named labels."""

    kind = "labelallow"

    def __init__(self, names: list[str]) -> None:
        self.names = frozenset(names)

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        names = self.names
        for e in entries:
            if not names.issuperset(e.labels):
                e.labels = {k: v for k, v in e.labels.items() if k in names}
        return entries


class TenantStage(Stage):
    """`tenant`: send the entry to another tenant, from an extracted value, a label or a fixed value."""

    kind = "tenant"

    def __init__(self, source: str, label: str, value: str) -> None:
        self.source = source
        self.label = label
        self.value = value

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        for e in entries:
            if self.source:
                tenant = go_string(e.extracted.get(self.source)) or ""
            elif self.label:
                tenant = e.labels.get(self.label, "")
            else:
                tenant = self.value
            if tenant:
                e.tenant = tenant
        return entries


# ---- line and time stages ------------------------------------------------------------------------------------


class OutputStage(Stage):
    """`output`: replace the line with an extracted value."""

    kind = "output"

    def __init__(self, source: str) -> None:
        self.source = source

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        source = self.source
        for e in entries:
            value = e.extracted.get(source, _MISSING)
            if value is not _MISSING:
                text = go_string(value)
                if text is not None:
                    e.line = text
        return entries


class TimestampStage(Stage):
    """`timestamp`: set the entry's time from an extracted value; on failure keep it or fudge it (last + 1ns)."""

    kind = "timestamp"
    _MAX_STREAMS = 10_000  # Promtail's bound on remembered streams for `fudge`

    def __init__(self, source: str, parsers: list[TimeParser], fudge: bool) -> None:
        self.source = source
        self.parsers = parsers
        self.fudge = fudge
        self._last: dict[tuple[tuple[str, str], ...], int] = {}

    def _parse(self, text: str, now_ns: int) -> int | None:
        for parse in self.parsers:
            try:
                return parse(text, now_ns)
            except (ValueError, OverflowError):
                continue
        return None

    def _remember(self, key: tuple[tuple[str, str], ...], ts: int) -> None:
        last = self._last
        if key not in last and len(last) >= self._MAX_STREAMS:
            del last[next(iter(last))]
        last[key] = ts

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        source, fudge = self.source, self.fudge
        for e in entries:
            value = e.extracted.get(source, _MISSING)
            ts = None
            if value is not _MISSING:
                text = go_string(value)
                if text is not None:
                    ts = self._parse(text, now_ns)
            if ts is not None:
                e.ts_ns = ts
                if fudge:
                    self._remember(_labels_key(e.labels), ts)
            elif fudge:
                key = _labels_key(e.labels)
                previous = self._last.get(key)
                if previous is not None:
                    e.ts_ns = previous + 1
                    self._remember(key, previous + 1)
        return entries


# ANSI escape sequences (colours, cursor movement), the pattern Loki's decolorize uses.
_ANSI = re.compile(
    "[\u001b\u009b][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[a-zA-Z\\d]*)*)?\u0007)"
    "|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PRZcf-ntqry=><~]))"
)


class DecolorizeStage(Stage):
    """`decolorize`: strip ANSI colour codes from the line."""

    kind = "decolorize"

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        sub = _ANSI.sub
        for e in entries:
            line = e.line
            if "\x1b" in line or "\x9b" in line:
                e.line = sub("", line)
        return entries


class PackStage(Stage):
    """`pack`: wrap the line and chosen labels/extracted values into a JSON object (`_entry` holds the line)."""

    kind = "pack"

    def __init__(self, names: list[str], ingest_timestamp: bool) -> None:
        self.names = names
        self.ingest_timestamp = ingest_timestamp

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        for e in entries:
            ex = e.extracted
            packed: dict[str, str] = {}
            for name in self.names:
                if name in ex:
                    text = go_string(ex[name])
                    if text is not None:
                        packed[name] = text
            parts = [f"{_go_json(k)}:{_go_json(packed[k])}" for k in sorted(packed)]
            parts.append(f'"_entry":{_go_json(e.line)}')
            e.line = "{" + ",".join(parts) + "}"
            for name in self.names:
                if name in ex:
                    e.labels.pop(name, None)
            if self.ingest_timestamp:
                e.ts_ns = now_ns
        return entries


# ---- filtering stages -----------------------------------------------------------------------------------------


class MatchStage(Stage):
    """`match`: run nested stages on (or drop) the entries a LogQL selector selects."""

    kind = "match"

    def __init__(self, selector: Selector, pipeline: Pipeline | None, drop_counter: Any) -> None:
        self.selector = selector
        self.pipeline = pipeline
        self.drop_counter = drop_counter
        self.holds_entries = pipeline is not None and pipeline.holds_entries

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        matches = self.selector.matches
        if self.pipeline is None:
            kept = [e for e in entries if not matches(e.labels, e.line)]
            if len(kept) != len(entries):
                self.drop_counter.inc(len(entries) - len(kept))
            return kept
        chosen = [e for e in entries if matches(e.labels, e.line)]
        if not chosen:
            return entries
        result = self.pipeline.process(chosen, now_ns)
        if len(chosen) == len(entries):
            return result
        # Keep the batch's order: unselected entries stay where they were, selected ones that came out of the
        # nested stages take their own places; entries the nested stages made (multiline blocks) go last.
        survivors = {id(e) for e in result}
        chosen_ids = {id(e) for e in chosen}
        merged = [e for e in entries if id(e) not in chosen_ids or id(e) in survivors]
        merged.extend(e for e in result if id(e) not in chosen_ids)
        return merged

    def flush(self, now_ns: int, force: bool) -> list[Entry]:
        return self.pipeline.flush(now_ns, force) if self.pipeline is not None else []

    def pending(self) -> list[Entry]:
        return self.pipeline.pending() if self.pipeline is not None else []


class DropStage(Stage):
    """`drop`: drop entries meeting all configured conditions (source/value/expression, older_than, longer_than)."""

    kind = "drop"

    def __init__(
        self,
        sources: list[str] | None,
        separator: str,
        regex: re.Pattern[str] | None,
        value: str | None,
        older_than_ns: int | None,
        longer_than: int | None,
        drop_counter: Any,
    ) -> None:
        self.sources = sources
        self.separator = separator
        self.regex = regex
        self.value = value
        self.older_than_ns = older_than_ns
        self.longer_than = longer_than
        self.drop_counter = drop_counter

    def _should_drop(self, e: Entry, now_ns: int) -> bool:
        if self.longer_than is not None:
            limit = self.longer_than
            line = e.line
            if len(line) <= limit and (len(line) * 4 <= limit or _utf8_len(line) <= limit):
                return False
        if self.older_than_ns is not None and not e.ts_ns < now_ns - self.older_than_ns:
            return False
        sources = self.sources
        matcher = self.regex
        if sources is not None and matcher is None and self.value is None:
            ex = e.extracted
            return all(src in ex for src in sources)
        if sources is None:
            return matcher is None or matcher.search(e.line) is not None
        values: list[str] = []
        ex = e.extracted
        for src in sources:
            if src in ex:
                text = go_string(ex[src])
                if text is None:
                    return False
                values.append(text)
        joined = self.separator.join(values)
        if self.value is not None:
            return joined == self.value
        return matcher is not None and matcher.search(joined) is not None

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        should_drop = self._should_drop
        kept = [e for e in entries if not should_drop(e, now_ns)]
        if len(kept) != len(entries):
            self.drop_counter.inc(len(entries) - len(kept))
        return kept


class SamplingStage(Stage):
    """`sampling`: keep each entry with probability `rate`."""

    kind = "sampling"

    def __init__(self, rate: float, drop_counter: Any, rng: random.Random | None = None) -> None:
        self.rate = rate
        self.drop_counter = drop_counter
        self.rng = rng or random.Random()

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        draw, rate = self.rng.random, self.rate
        kept = [e for e in entries if draw() < rate]
        if len(kept) != len(entries):
            self.drop_counter.inc(len(entries) - len(kept))
        return kept


class _TokenBucket:
    """golang.org/x/time/rate's limiter: `rate` tokens a second, at most `burst` saved; starts full."""

    __slots__ = ("burst", "last_ns", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last_ns: int | None = None

    def _advance(self, now_ns: int) -> None:
        if self.last_ns is not None and now_ns > self.last_ns:
            self.tokens = min(self.burst, self.tokens + (now_ns - self.last_ns) * self.rate / NS)
        if self.last_ns is None or now_ns > self.last_ns:
            self.last_ns = now_ns

    def allow(self, now_ns: int) -> bool:
        self._advance(now_ns)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def reserve(self, now_ns: int) -> int:
        """Take a token now or in the future; return how long (ns) to wait for it."""
        self._advance(now_ns)
        self.tokens -= 1.0
        return 0 if self.tokens >= 0 else int(-self.tokens / self.rate * NS)


class LimitStage(Stage):
    """`limit`: rate-limit entries (waiting, or dropping with `drop: true`), optionally per label value."""

    kind = "limit"

    def __init__(
        self,
        rate: float,
        burst: int,
        drop: bool,
        by_label: str,
        max_distinct: int,
        drop_counter: Any,
        by_label_counter: Any,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.drop = drop
        self.by_label = by_label
        self.max_distinct = max_distinct
        self.drop_counter = drop_counter
        self.by_label_counter = by_label_counter
        self.sleep = sleep
        self.bucket = _TokenBucket(rate, burst)
        # Promtail's generational map: when the current generation is full it becomes the old one.
        self._current: dict[str, _TokenBucket] = {}
        self._old: dict[str, _TokenBucket] = {}

    def _bucket_for(self, value: str) -> _TokenBucket:
        bucket = self._current.get(value)
        if bucket is None:
            bucket = self._old.pop(value, None) or _TokenBucket(self.rate, self.burst)
            if len(self._current) >= self.max_distinct:
                self._old = self._current
                self._current = {}
                self.by_label_counter.clear()
            self._current[value] = bucket
        return bucket

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        if self.by_label:
            kept = []
            for e in entries:
                value = e.labels.get(self.by_label)
                if value is None or self._bucket_for(value).allow(now_ns):
                    kept.append(e)
                    continue
                self.drop_counter.inc()
                self.by_label_counter.labels(self.by_label, value).inc()
            return kept
        if self.drop:
            allow = self.bucket.allow
            kept = [e for e in entries if allow(now_ns)]
            if len(kept) != len(entries):
                self.drop_counter.inc(len(entries) - len(kept))
            return kept
        waited = 0
        for _e in entries:
            wait = self.bucket.reserve(now_ns + waited)
            if wait > 0:
                self.sleep(wait / NS)
                waited += wait
        return entries


# ---- stages that hold entries back ---------------------------------------------------------------------------


class _Block:
    __slots__ = ("arrival_ns", "first", "last", "lines")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.first: Entry | None = None
        self.last: Entry | None = None
        self.arrival_ns = 0


class MultilineStage(Stage):
    """`multiline`: join a stream's lines into blocks that start with a line matching `firstline`."""

    kind = "multiline"
    holds_entries = True
    _FORGET_AFTER_NS = 3600 * NS  # an idle stream's (empty) state is dropped after this long

    def __init__(self, firstline: re.Pattern[str], max_wait_ns: int, max_lines: int) -> None:
        self.firstline = firstline
        self.max_wait_ns = max_wait_ns
        self.max_lines = max_lines
        self._streams: dict[tuple[tuple[str, str], ...], _Block] = {}

    @staticmethod
    def _collapse(block: _Block) -> Entry:
        first, last = block.first, block.last
        assert first is not None and last is not None
        if len(block.lines) == 1:
            entry = first
        else:
            entry = Entry(
                labels=dict(first.labels),
                line="\n".join(block.lines),
                ts_ns=first.ts_ns,
                extracted=dict(first.extracted),
                metadata=dict(first.metadata),
                tenant=first.tenant,
                source=first.source,
                start=first.start,
                end=last.end,
            )
        block.lines = []
        block.first = block.last = None
        return entry

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        out: list[Entry] = []
        search = self.firstline.search
        streams = self._streams
        for e in entries:
            key = _labels_key(e.labels)
            block = streams.get(key)
            starts = search(e.line) is not None
            if block is None:
                if not starts:
                    out.append(e)  # lines before a stream's first block pass through
                    continue
                block = streams[key] = _Block()
            if starts and block.lines:
                out.append(self._collapse(block))
            if not block.lines:
                block.first = e
            block.lines.append(e.line)
            block.last = e
            block.arrival_ns = now_ns
            if len(block.lines) >= self.max_lines:
                out.append(self._collapse(block))
        return out

    def flush(self, now_ns: int, force: bool) -> list[Entry]:
        out: list[Entry] = []
        for key, block in list(self._streams.items()):
            if block.lines:
                if force or now_ns - block.arrival_ns >= self.max_wait_ns:
                    out.append(self._collapse(block))
            elif now_ns - block.arrival_ns >= self._FORGET_AFTER_NS:
                del self._streams[key]
        return out

    def pending(self) -> list[Entry]:
        out: list[Entry] = []
        for block in self._streams.values():
            if block.lines and block.first is not None and block.last is not None:
                first = block.first
                out.append(
                    Entry(
                        labels=dict(first.labels),
                        line="\n".join(block.lines),
                        ts_ns=first.ts_ns,
                        extracted=dict(first.extracted),
                        metadata=dict(first.metadata),
                        tenant=first.tenant,
                        source=first.source,
                        start=first.start,
                        end=block.last.end,
                    )
                )
        return out


_CRI_LINE = compile_re2(
    r"^(?s)(?P<time>\S+?) (?P<stream>stdout|stderr) (?P<flags>\S+?) (?P<content>.*)$", anchored=False
)


class CRIStage(Stage):
    """`cri`: parse the CRI log format (`time stream flags content`), joining partial (`P`) lines per stream."""

    kind = "cri"
    holds_entries = True

    def __init__(self, max_partial_lines: int, max_partial_line_size: int, truncate: bool) -> None:
        self.base: list[Stage] = [
            RegexStage(_CRI_LINE, None),
            LabelsStage({"stream": "stream"}),
            TimestampStage("time", [make_time_parser("RFC3339Nano")], fudge=True),
            OutputStage("content"),
            OutputStage("tags"),
        ]
        self.max_partial_lines = max_partial_lines
        self.max_size = max_partial_line_size
        self.truncate = truncate
        self._partial: dict[tuple[tuple[str, str], ...], Entry] = {}

    def _cut(self, e: Entry) -> None:
        if self.truncate and _utf8_len(e.line) > self.max_size:
            e.line = e.line.encode()[: self.max_size].decode("utf-8", "ignore")

    @staticmethod
    def _join(prev: Entry, e: Entry) -> None:
        e.line = prev.line + e.line
        e.start = prev.start

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        for stage in self.base:
            entries = stage.process(entries, now_ns)
        out: list[Entry] = []
        partial = self._partial
        for e in entries:
            key = _labels_key(e.labels)
            if e.extracted.get("flags") == "P":
                if len(partial) >= self.max_partial_lines:
                    # Promtail's bound counts streams with partial lines: past it, all are sent as they are.
                    out.extend(partial.values())
                    partial.clear()
                    self._cut(e)
                    partial[key] = e
                    continue
                prev = partial.get(key)
                if prev is not None:
                    self._join(prev, e)
                self._cut(e)
                partial[key] = e
                continue
            prev = partial.pop(key, None)
            if prev is not None:
                self._join(prev, e)
                self._cut(e)
            out.append(e)
        return out

    def flush(self, now_ns: int, force: bool) -> list[Entry]:
        if not force or not self._partial:
            return []
        out = list(self._partial.values())
        self._partial.clear()
        return out

    def pending(self) -> list[Entry]:
        return list(self._partial.values())


class CompositeStage(Stage):
    """A fixed list of stages behind one name (`docker`)."""

    def __init__(self, kind: str, stages: list[Stage]) -> None:
        self.kind = kind
        self.stages = stages

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        for stage in self.stages:
            entries = stage.process(entries, now_ns)
        return entries


# ---- metrics ----------------------------------------------------------------------------------------------------


@dataclass
class _MetricRule:
    name: str
    metric: StreamMetric
    source: str
    max_idle_s: float
    action: str
    value: str | None
    match_all: bool
    count_bytes: bool


class MetricsStage(Stage):
    """`metrics`: counters, gauges and histograms from extracted values, one series per stream label set."""

    kind = "metrics"

    def __init__(self, rules: list[_MetricRule]) -> None:
        self.rules = rules

    def process(self, entries: list[Entry], now_ns: int) -> list[Entry]:
        for rule in self.rules:
            metric, source, idle, action, wanted = rule.metric, rule.source, rule.max_idle_s, rule.action, rule.value
            kind = metric.kind
            for e in entries:
                if rule.match_all:
                    metric.add(e.labels, float(_utf8_len(e.line)) if rule.count_bytes else 1.0, idle)
                    continue
                value = e.extracted.get(source, _MISSING)
                if value is _MISSING:
                    continue
                if wanted is not None and go_string(value) != wanted:
                    continue
                if kind == "histogram":
                    number = _go_float(value)
                    if number is not None:
                        metric.observe(e.labels, number, idle)
                elif action == "inc":
                    metric.add(e.labels, 1.0, idle)
                elif action == "dec":
                    metric.add(e.labels, -1.0, idle)
                else:
                    number = _go_float(value)
                    if number is None:
                        continue
                    if action == "set":
                        metric.set(e.labels, number, idle)
                    elif action == "sub":
                        metric.add(e.labels, -number, idle)
                    elif kind == "gauge" or number >= 0:  # a counter cannot go down
                        metric.add(e.labels, number, idle)
        return entries


# ---- building stages from configuration ----------------------------------------------------------------------


def _source_option(opts: _Options) -> str | None:
    if not opts.has("source"):
        return None
    source = opts.str("source")
    if source is None or source == "":
        raise opts.error("source", "empty source")
    return source


def _build_json(opts: _Options, ctx: _Context) -> Stage:
    raw = opts.raw.get("expressions")
    if not isinstance(raw, dict) or not raw:
        raise opts.error("expressions", "JMES expression is required (a map of extracted name to expression)")
    compiled: dict[str, tuple[str | int, ...]] = {}
    for name, expr in raw.items():
        text = go_string(expr) if expr is not None else ""
        if text is None:
            raise opts.error("expressions", f"expression for {name!r} must be a string")
        try:
            compiled[str(name)] = _compile_jmespath(text or str(name))
        except ValueError as exc:
            raise opts.error("expressions", str(exc)) from None
    return JSONStage(compiled, _source_option(opts), opts.bool("drop_malformed", False))


def _build_logfmt(opts: _Options, ctx: _Context) -> Stage:
    raw = opts.raw.get("mapping")
    if not isinstance(raw, dict) or not raw:
        raise opts.error("mapping", "logfmt mapping is required (a map of extracted name to logfmt key)")
    wanted: dict[str, str] = {}
    for name, key in raw.items():
        text = go_string(key) if key is not None else ""
        if text is None:
            raise opts.error("mapping", f"key for {name!r} must be a string")
        wanted[text or str(name)] = str(name)
    return LogfmtStage(wanted, _source_option(opts))


def _build_regex(opts: _Options, ctx: _Context) -> Stage:
    expression = opts.str("expression", required=True, nonempty=True)
    source = _source_option(opts)
    return RegexStage(opts.regex("expression", expression), source)


def _template(opts: _Options, key: str, text: str) -> PipelineTemplate:
    try:
        return PipelineTemplate(text)
    except TemplateError as exc:
        raise opts.error(key, f"invalid template: {exc}") from None


def _build_replace(opts: _Options, ctx: _Context) -> Stage:
    expression = opts.str("expression", required=True, nonempty=True)
    source = _source_option(opts)
    regex = opts.regex("expression", expression)
    return ReplaceStage(regex, _template(opts, "replace", opts.str("replace", "")), source)


def _build_template(opts: _Options, ctx: _Context) -> Stage:
    source = opts.str("source", required=True, nonempty=True)
    return TemplateStage(source, _template(opts, "template", opts.str("template", "")))


def _label_mapping(opts: _Options, what: str) -> dict[str, str]:
    raw = opts.raw
    if not isinstance(raw, dict) or not raw:
        raise opts.error(None, f"{what} config cannot be empty (a map of label name to extracted key)")
    mapping: dict[str, str] = {}
    for name, src in raw.items():
        if not isinstance(name, str) or not _LEGACY_LABEL.fullmatch(name):
            raise opts.error(str(name), f"invalid label name: {name}")
        text = go_string(src) if src is not None else ""
        if text is None:
            raise opts.error(name, f"source must be a string, not {_describe(src)}")
        mapping[name] = text or name
    return mapping


def _build_labels(opts: _Options, ctx: _Context) -> Stage:
    return LabelsStage(_label_mapping(opts, "label stage"))


def _build_structured_metadata(opts: _Options, ctx: _Context) -> Stage:
    return StructuredMetadataStage(_label_mapping(opts, "structured_metadata stage"))


def _build_static_labels(opts: _Options, ctx: _Context) -> Stage:
    raw = opts.raw
    if not isinstance(raw, dict) or not raw:
        raise opts.error(None, "static_labels stage config cannot be empty (a map of label name to value)")
    labels: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name:
            raise opts.error(str(name), f"invalid label name: {name}")
        if value is None:
            continue
        text = go_string(value)
        if text is None:
            raise opts.error(name, f"value must be a string, not {_describe(value)}")
        if text:
            labels[name] = text
    return StaticLabelsStage(labels)


def _name_list(opts: _Options, what: str) -> list[str]:
    raw = opts.raw
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str) for n in raw):
        raise opts.error(None, f"{what} stage config must be a non-empty list of label names")
    return list(raw)


def _build_labeldrop(opts: _Options, ctx: _Context) -> Stage:
    return LabelDropStage(_name_list(opts, "labeldrop"))


def _build_labelallow(opts: _Options, ctx: _Context) -> Stage:
    return LabelAllowStage(_name_list(opts, "labelallow"))


def _time_parser(opts: _Options, key: str, fmt: str, location: Any) -> TimeParser:
    try:
        return make_time_parser(fmt, location)
    except (ValueError, re.error) as exc:
        raise opts.error(key, f"invalid time format {fmt!r}: {exc}") from None


def _build_timestamp(opts: _Options, ctx: _Context) -> Stage:
    source = opts.str("source", required=True, nonempty=True)
    fmt = opts.str("format", required=True, nonempty=True)
    location = None
    if opts.has("location"):
        try:
            location = load_location(opts.str("location", ""))
        except ValueError as exc:
            raise opts.error("location", f"invalid location specified: {exc}") from None
    action = opts.str("action_on_failure", "fudge")
    if action not in ("fudge", "skip"):
        raise opts.error("action_on_failure", f"invalid action {action!r} (supported values are skip, fudge)")
    parsers = [_time_parser(opts, "format", fmt, location)]
    for fallback in opts.string_list("fallback_formats"):
        parsers.append(_time_parser(opts, "fallback_formats", fallback, location))
    return TimestampStage(source, parsers, fudge=action == "fudge")


def _build_output(opts: _Options, ctx: _Context) -> Stage:
    return OutputStage(opts.str("source", required=True, nonempty=True))


def _build_tenant(opts: _Options, ctx: _Context) -> Stage:
    source, label, value = opts.str("source", ""), opts.str("label", ""), opts.str("value", "")
    given = [k for k, v in (("source", source), ("label", label), ("value", value)) if v]
    if not given:
        raise opts.error(None, "one of label, source or value is required")
    if len(given) > 1:
        raise opts.error(given[1], "label, source and value are mutually exclusive: set only one")
    return TenantStage(source, label, value)


def _build_match(opts: _Options, ctx: _Context) -> Stage:
    if opts.has("pipeline_name") and not opts.str("pipeline_name", ""):
        raise opts.error("pipeline_name", "match stage pipeline name can be omitted but cannot be an empty string")
    selector_text = opts.str("selector", required=True, nonempty=True)
    try:
        selector = parse_selector(selector_text)
    except SelectorError as exc:
        raise opts.error("selector", f"invalid selector syntax for match stage: {exc}") from None
    action = opts.str("action", "keep") or "keep"
    if action not in ("keep", "drop"):
        raise opts.error("action", f"match stage action should be 'keep' or 'drop', not {action!r}")
    stages = opts.raw.get("stages")
    if action == "keep" and not stages:
        raise opts.error("stages", "match stage requires at least one additional stage to be defined in '- stages'")
    if action == "drop" and stages:
        raise opts.error("stages", "match stage configured to drop entries cannot contain stages")
    reason = opts.str("drop_counter_reason", "") or "match_stage"
    pipeline = None
    if action == "keep":
        name = opts.str("pipeline_name", "")
        pipeline_name = f"{ctx.job}_{name}" if name and ctx.job else name
        inner = _build_stages(stages, ctx, prefix=f"{opts.where} > ")
        pipeline = Pipeline(inner, name=pipeline_name, nested=True)
    return MatchStage(selector, pipeline, dropped_entries_counter(ctx.registry).labels(reason))


def _build_drop(opts: _Options, ctx: _Context) -> Stage:
    if not any(opts.has(k) for k in ("source", "expression", "older_than", "longer_than")):
        raise opts.error(
            None, "drop stage config must contain at least one of source, expression, older_than or longer_than"
        )
    sources: list[str] | None = None
    if opts.has("source"):
        raw = opts.raw.get("source")
        if isinstance(raw, str):
            sources = [raw]
        elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            sources = list(raw)
        else:
            raise opts.error("source", "drop stage source should be a string or a list of strings")
    value = opts.str("value") if opts.has("value") else None
    expression = opts.str("expression") if opts.has("expression") else None
    if value is not None and sources is None:
        raise opts.error("value", "drop stage config must contain source if value is specified")
    if value is not None and expression is not None:
        raise opts.error("value", "value and expression cannot both be defined")
    regex = opts.regex("expression", expression).pattern if expression is not None else None
    older = opts.duration("older_than", 0) if opts.has("older_than") else None
    longer = None
    if opts.has("longer_than"):
        try:
            longer = parse_byte_size(opts.raw.get("longer_than"))
        except ValueError as exc:
            raise opts.error("longer_than", f"drop stage failed to parse longer_than to bytes: {exc}") from None
    separator = opts.str("separator", ";")
    reason = opts.str("drop_counter_reason", "") or "drop_stage"
    counter = dropped_entries_counter(ctx.registry).labels(reason)
    return DropStage(sources, separator, regex, value, older, longer, counter)


def _build_multiline(opts: _Options, ctx: _Context) -> Stage:
    firstline = opts.str("firstline", required=True)
    regex = opts.regex("firstline", firstline).pattern
    max_wait = opts.duration("max_wait_time", 3 * NS)
    max_lines = opts.int("max_lines", 128)
    if max_lines < 0:
        raise opts.error("max_lines", "must not be negative")
    # Promtail never reaches an explicit `max_lines: 0`, so it means no limit.
    return MultilineStage(regex, max_wait, max_lines or 2**63)


def _build_limit(opts: _Options, ctx: _Context) -> Stage:
    rate = opts.number("rate", 0)
    burst = opts.int("burst", 0)
    if rate <= 0:
        raise opts.error("rate", "limit stage needs a rate above 0 (lines per second)")
    if burst <= 0:
        raise opts.error("burst", "limit stage needs a burst above 0 (lines)")
    drop = opts.bool("drop", False)
    by_label = opts.str("by_label_name", "")
    if by_label and not drop:
        raise opts.error("drop", "when rate limiting by label (by_label_name), drop must be true")
    # Promtail raises max_distinct_labels to at least 10000 (a limiter costs ~80 bytes).
    max_distinct = max(opts.int("max_distinct_labels", 10_000), 10_000)
    counter = dropped_entries_counter(ctx.registry).labels("ratelimit_drop_stage")
    by_label_counter = dropped_entries_by_label_counter(ctx.registry) if by_label else None
    return LimitStage(rate, burst, drop, by_label, max_distinct, counter, by_label_counter)


def _build_pack(opts: _Options, ctx: _Context) -> Stage:
    return PackStage(opts.string_list("labels"), opts.bool("ingest_timestamp", True))


def _build_decolorize(opts: _Options, ctx: _Context) -> Stage:
    return DecolorizeStage()


def _build_sampling(opts: _Options, ctx: _Context) -> Stage:
    rate = opts.number("rate", 0.0)
    if not 0.0 <= rate <= 1.0:
        raise opts.error("rate", f"sampling rate must be between 0.0 and 1.0, received {rate}")
    reason = opts.str("drop_counter_reason", "") or "sampling_stage"
    return SamplingStage(rate, dropped_entries_counter(ctx.registry).labels(reason))


def _build_cri(opts: _Options, ctx: _Context) -> Stage:
    max_lines = opts.int("max_partial_lines", 0) or 100
    try:
        max_size = parse_byte_size(opts.raw.get("max_partial_line_size") or 0)
    except ValueError as exc:
        raise opts.error("max_partial_line_size", str(exc)) from None
    return CRIStage(max_lines, max_size, opts.bool("max_partial_line_size_truncate", False))


def _build_docker(opts: _Options, ctx: _Context) -> Stage:
    return CompositeStage(
        "docker",
        [
            JSONStage({"output": ("log",), "stream": ("stream",), "timestamp": ("time",)}, None, False),
            LabelsStage({"stream": "stream"}),
            TimestampStage("timestamp", [make_time_parser("RFC3339Nano")], fudge=True),
            OutputStage("output"),
        ],
    )


_COUNTER_ACTIONS = ("inc", "add")
_GAUGE_ACTIONS = ("set", "inc", "dec", "add", "sub")
_METRIC_KEYS = ("type", "description", "source", "prefix", "max_idle_duration", "config")


def _build_metrics(opts: _Options, ctx: _Context) -> Stage:
    raw = opts.raw
    if not isinstance(raw, dict) or not raw:
        raise opts.error(None, "empty metric stage configuration (a map of metric name to its definition)")
    rules: list[_MetricRule] = []
    for name, spec in raw.items():
        mopts = _Options(f"{opts.where} metric {name!r}", spec, _METRIC_KEYS)
        kind = (mopts.str("type", "") or "").lower()
        if kind not in ("counter", "gauge", "histogram"):
            raise mopts.error("type", f"invalid metric type {kind!r}, must be one of counter, gauge or histogram")
        source = mopts.str("source", str(name)) if mopts.has("source") else str(name)
        prefix = mopts.str("prefix", "") or "promtail_custom_"
        idle_ns = mopts.duration("max_idle_duration", 300 * NS)
        if idle_ns < NS:
            raise mopts.error("max_idle_duration", "max_idle_duration less than 1s not allowed")
        keys = {"counter": ("value", "action", "match_all", "count_entry_bytes")}.get(
            kind, ("value", "action") if kind == "gauge" else ("value", "buckets")
        )
        copts = _Options(f"{mopts.where} config", mopts.raw.get("config"), keys)
        value = copts.str("value") if copts.has("value") else None
        action = (copts.str("action", "") or "").lower()
        match_all = copts.bool("match_all", False)
        count_bytes = copts.bool("count_entry_bytes", False)
        buckets: list[float] | None = None
        if kind == "counter":
            if action not in _COUNTER_ACTIONS:
                raise copts.error("action", f"counter action must be inc or add, not {action!r}")
            if match_all and value is not None:
                raise copts.error("match_all", "match_all: true cannot be combined with value")
            if count_bytes and not match_all:
                raise copts.error("count_entry_bytes", "count_entry_bytes: true can only be set with match_all: true")
            if count_bytes and action != "add":
                raise copts.error("count_entry_bytes", "count_entry_bytes: true can only be used with action: add")
        elif kind == "gauge":
            if action not in _GAUGE_ACTIONS:
                raise copts.error("action", f"gauge action must be set, inc, dec, add or sub, not {action!r}")
        else:
            raw_buckets = copts.raw.get("buckets")
            if raw_buckets is not None:
                if not isinstance(raw_buckets, list) or not all(
                    isinstance(b, int | float) and not isinstance(b, bool) for b in raw_buckets
                ):
                    raise copts.error("buckets", "buckets must be a list of numbers")
                buckets = [float(b) for b in raw_buckets]
        full_name = prefix + str(name)
        try:
            metric = stream_metric(
                ctx.registry, full_name, kind, mopts.str("description", ""), buckets or list(DEFAULT_BUCKETS)
            )
        except ValueError as exc:
            raise mopts.error(None, f"cannot register metric {full_name}: {exc}") from None
        rules.append(_MetricRule(str(name), metric, source, idle_ns / NS, action, value, match_all, count_bytes))
    return MetricsStage(rules)


_BUILDERS: dict[str, tuple[Callable[[_Options, _Context], Stage], tuple[str, ...] | None]] = {
    "cri": (_build_cri, ("max_partial_lines", "max_partial_line_size", "max_partial_line_size_truncate")),
    "docker": (_build_docker, ()),
    "json": (_build_json, ("expressions", "source", "drop_malformed")),
    "logfmt": (_build_logfmt, ("mapping", "source")),
    "regex": (_build_regex, ("expression", "source")),
    "replace": (_build_replace, ("expression", "source", "replace")),
    "template": (_build_template, ("source", "template")),
    "labels": (_build_labels, None),
    "structured_metadata": (_build_structured_metadata, None),
    "non_indexed_labels": (_build_structured_metadata, None),
    "static_labels": (_build_static_labels, None),
    "labeldrop": (_build_labeldrop, None),
    "labelallow": (_build_labelallow, None),
    "timestamp": (_build_timestamp, ("source", "format", "fallback_formats", "location", "action_on_failure")),
    "output": (_build_output, ("source",)),
    "match": (_build_match, ("selector", "stages", "action", "drop_counter_reason", "pipeline_name")),
    "drop": (
        _build_drop,
        ("source", "separator", "value", "expression", "older_than", "longer_than", "drop_counter_reason"),
    ),
    "multiline": (_build_multiline, ("firstline", "max_wait_time", "max_lines")),
    "limit": (_build_limit, ("rate", "burst", "drop", "by_label_name", "max_distinct_labels")),
    "tenant": (_build_tenant, ("source", "label", "value")),
    "pack": (_build_pack, ("labels", "ingest_timestamp")),
    "decolorize": (_build_decolorize, ()),
    "metrics": (_build_metrics, None),
    "sampling": (_build_sampling, ("rate", "drop_counter_reason")),
}

STAGE_TYPES: frozenset[str] = frozenset(_BUILDERS)
_UNSUPPORTED = {
    "geoip": "the geoip stage is not supported by the loglake agent",
    "eventlogmessage": "the eventlogmessage stage (Windows events) is not supported by the loglake agent",
}


def _build_stages(raw: Any, ctx: _Context, prefix: str = "") -> list[Stage]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise StageConfigError(f"{prefix}pipeline_stages must be a list of stages, not {_describe(raw)}")
    stages: list[Stage] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or len(item) != 1:
            raise StageConfigError(
                f"{prefix}stage {index}: a pipeline stage must be a map with exactly one key, the stage type"
                f" (got {_describe(item)})"
            )
        ((kind, config),) = item.items()
        where = f"{prefix}stage {index} ({kind})"
        if kind in _UNSUPPORTED:
            raise StageConfigError(f"{where}: {_UNSUPPORTED[kind]}")
        if kind not in _BUILDERS:
            known = ", ".join(sorted(_BUILDERS))
            raise StageConfigError(f"{where}: unknown stage type {kind!r}; known types: {known}")
        builder, keys = _BUILDERS[kind]
        if keys is None and config is not None and not isinstance(config, dict | list):
            raise StageConfigError(f"{where}: options must be a map, not {_describe(config)}")
        stages.append(builder(_Options(where, config, keys), ctx))
    return stages


def build_pipeline(stages: list[dict] | None, registry: CollectorRegistry, job: str = "") -> Pipeline:
    """Build the pipeline for a scrape config's `pipeline_stages` (StageConfigError when a stage is invalid)."""
    ctx = _Context(registry, job)
    return Pipeline(_build_stages(stages, ctx), name=job)
