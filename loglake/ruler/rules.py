"""Loki rule files: the rule model, strict parsing and validation, and Prometheus' alert templates.

A Loki rule file is a Prometheus rule file whose `expr` is a LogQL metric query:
`groups: [{name, interval, limit, rules: [{alert|record, expr, for, keep_firing_for, labels, annotations}]}]`.
Parsing is strict (an unknown key is an error naming it and its line) and collects every problem, each message
naming the file, line, group and rule it is about.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import ipaddress
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal

import yaml

from loglake.gonum import format_float_v
from loglake.gotemplate import Template, TemplateError, TemplateRuntimeError
from loglake.logql.errors import QueryError
from loglake.logql.lexer import DurationError, go_parse_float, parse_prometheus_duration
from loglake.logql.plan import LogQuery
from loglake.logql.plan import parse as parse_logql
from loglake.logql.printer import prometheus_duration
from loglake.logql.regex import RegexError, parse_regex

__all__ = [
    "TEMPLATE_FUNCS",
    "Rule",
    "RuleError",
    "RuleGroup",
    "expand_template",
    "format_duration",
    "format_rule_file",
    "group_to_dict",
    "parse_duration",
    "parse_rule_file",
    "parse_rule_group",
    "render_template",
]

_NO_LABELS: Mapping[str, str] = MappingProxyType({})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


class RuleError(ValueError):
    """Rules that cannot be used; `str(e)` names the file, group and rule of each problem and says what is wrong."""

    def __init__(self, errors: str | Iterable[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Rule:
    """One alerting or recording rule."""

    kind: Literal["alert", "record"]
    name: str
    expr: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)
    annotations: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)

    def __post_init__(self) -> None:
        # Read-only copies, so a rule shared between the store, the manager and the API cannot change under them.
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "annotations", MappingProxyType(dict(self.annotations)))

    def __hash__(self) -> int:
        return hash(
            (
                self.kind,
                self.name,
                self.expr,
                self.for_s,
                self.keep_firing_for_s,
                tuple(sorted(self.labels.items())),
                tuple(sorted(self.annotations.items())),
            )
        )


@dataclass(frozen=True)
class RuleGroup:
    """Rules evaluated together, in order, every `interval_s` (None: the ruler's evaluation interval)."""

    name: str
    rules: tuple[Rule, ...]
    interval_s: float | None = None
    limit: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))


# ---- durations ----------------------------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Parse a Prometheus duration (`1m`, `1h30m`, `500ms`, `0`) into seconds; ValueError with Prometheus' message."""
    return parse_prometheus_duration(text) / 1e9


def format_duration(seconds: float) -> str:
    """Format seconds as Prometheus writes a duration (`1m`, `1h30m`, `500ms`, `0s`)."""
    return prometheus_duration(round(seconds * 1e9))


# ---- parsing ------------------------------------------------------------------------------------------------------

_GROUP_KEYS = ("name", "interval", "limit", "rules")
_RULE_KEYS = ("alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations")
# Prometheus knows these group keys, but Loki neither stores nor applies them: refuse rather than ignore.
_UNSUPPORTED_GROUP_KEYS = ("query_offset", "labels")
_NULL = "tag:yaml.org,2002:null"


class _Problems:
    """The problems found in one text, each formatted with where it is."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, node: yaml.Node | None, where: str, message: str) -> None:
        self.add_at(node.start_mark.line + 1 if node is not None else 0, where, message)

    def add_at(self, line: int, where: str, message: str) -> None:
        if self.source and line:
            prefix = f"{self.source}:{line}: "
        elif self.source:
            prefix = f"{self.source}: "
        else:
            prefix = f"line {line}: " if line else ""
        self.items.append(f"{prefix}{where}: {message}" if where else f"{prefix}{message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise RuleError(self.items)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "null" if node.tag == _NULL else "scalar"


def _compose(text: str, problems: _Problems) -> yaml.Node | None:
    try:
        # Only the first document counts, as in Prometheus.
        return next(iter(yaml.compose_all(text, Loader=yaml.SafeLoader)), None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        problems.add_at(mark.line + 1 if mark is not None else 0, "", f"invalid YAML: {problem}")
    except yaml.YAMLError as exc:
        problems.add(None, "", f"invalid YAML: {exc}")
    return None


def _fields(
    node: yaml.MappingNode, allowed: tuple[str, ...], where: str, problems: _Problems
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """The mapping's keys → (key node, value node); unknown and repeated keys are reported."""
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key is None:
            problems.add(key_node, where, f"a key must be a string, got a {_kind(key_node)}")
            continue
        if key in out:
            first = out[key][0].start_mark.line + 1
            problems.add(key_node, where, f'field "{key}" is repeated (first at line {first})')
            continue
        if key not in allowed:
            if key in _UNSUPPORTED_GROUP_KEYS and "rules" in allowed:
                problems.add(key_node, where, f'field "{key}" is not supported (Loki does not keep it either)')
            else:
                problems.add(key_node, where, f'unknown field "{key}" (allowed: {", ".join(allowed)})')
            continue
        out[key] = (key_node, value_node)
    return out


def _string(node: yaml.Node, where: str, key: str, problems: _Problems) -> str | None:
    if isinstance(node, yaml.ScalarNode):
        return "" if node.tag == _NULL else node.value
    problems.add(node, where, f"{key}: must be a string, got a {_kind(node)}")
    return None


def _duration(node: yaml.Node, where: str, key: str, problems: _Problems) -> float | None:
    text = _string(node, where, key, problems)
    if text is None or text == "":
        return 0.0 if text == "" else None
    try:
        return parse_duration(text)
    except DurationError as exc:
        problems.add(node, where, f"{key}: {exc} (a Prometheus duration such as 30s, 5m or 1h30m)")
        return None


def _key_nodes(node: yaml.Node | None) -> dict[str, yaml.Node]:
    """A mapping's key nodes by name, so a message can point at the line of one label or annotation."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k for k, _v in node.value if isinstance(k, yaml.ScalarNode)}


def _string_map(node: yaml.Node, where: str, key: str, problems: _Problems) -> dict[str, str] | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
        return {}
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, where, f"{key}: must be a mapping of names to strings, got a {_kind(node)}")
        return None
    out: dict[str, str] = {}
    ok = True
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _NULL:
            problems.add(key_node, where, f"{key}: a name must be a string, got a {_kind(key_node)}")
            ok = False
            continue
        name = key_node.value
        if name in out:
            problems.add(key_node, where, f'{key}: "{name}" is repeated')
            ok = False
            continue
        value = _string(value_node, where, f'{key} "{name}"', problems)
        if value is None:
            ok = False
            continue
        out[name] = value
    return out if ok else None


def parse_rule_file(text: str, source: str = "") -> list[RuleGroup]:
    """Parse and validate a rule file (`groups: [...]`); RuleError lists every problem with file, line, group, rule."""
    problems = _Problems(source)
    root = _compose(text, problems)
    problems.raise_if_any()
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        return []
    if not isinstance(root, yaml.MappingNode):
        problems.add(root, "", f'a rule file must be a mapping with a "groups" list, got a {_kind(root)}')
        problems.raise_if_any()
    assert isinstance(root, yaml.MappingNode)
    fields = _fields(root, ("groups",), "", problems)
    groups: list[RuleGroup] = []
    if "groups" in fields:
        node = fields["groups"][1]
        if isinstance(node, yaml.SequenceNode):
            seen: dict[str, int] = {}
            for i, group_node in enumerate(node.value, 1):
                group = _parse_group(group_node, i, problems)
                name = _group_name(group_node)
                if name and name in seen:
                    problems.add(
                        group_node,
                        f'group "{name}"',
                        f"group name is repeated in the same file (first at line {seen[name]})",
                    )
                    continue
                seen[name] = group_node.start_mark.line + 1
                if group is not None:
                    groups.append(group)
        elif not (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            problems.add(node, "", f"groups: must be a list of rule groups, got a {_kind(node)}")
    problems.raise_if_any()
    return groups


def parse_rule_group(text: str) -> RuleGroup:
    """Parse and validate one rule group (the body the rules API receives); RuleError says what is wrong."""
    problems = _Problems("")
    root = _compose(text, problems)
    problems.raise_if_any()
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        raise RuleError("the body is empty: a rule group needs a name and rules")
    if isinstance(root, yaml.MappingNode) and any(getattr(k, "value", None) == "groups" for k, _v in root.value):
        raise RuleError(
            'the body is one rule group (name, interval, limit, rules), not a rule file with "groups": '
            "send each group on its own"
        )
    group = _parse_group(root, 1, problems)
    problems.raise_if_any()
    assert group is not None
    return group


def _group_name(node: yaml.Node) -> str:
    """The group's name as written, before validation (for messages and the repeated-name check)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if getattr(key_node, "value", None) == "name" and isinstance(value_node, yaml.ScalarNode):
                return "" if value_node.tag == _NULL else value_node.value
    return ""


def _parse_group(node: yaml.Node, index: int, problems: _Problems) -> RuleGroup | None:
    if not isinstance(node, yaml.MappingNode):
        problems.add(
            node, f"group {index}", f"must be a mapping with name, interval, limit and rules, got a {_kind(node)}"
        )
        return None
    before = len(problems.items)
    name = _group_name(node)
    where = f'group "{name}"' if name else f"group {index}"
    fields = _fields(node, _GROUP_KEYS, where, problems)
    if "name" in fields:
        _string(fields["name"][1], where, "name", problems)
    if not name:
        problems.add(fields["name"][1] if "name" in fields else node, where, 'field "name" must be set')
    interval: float | None = None
    if "interval" in fields:
        interval = _duration(fields["interval"][1], where, "interval", problems)
    limit = 0
    if "limit" in fields:
        limit_node = fields["limit"][1]
        value = limit_node.value if isinstance(limit_node, yaml.ScalarNode) else None
        if limit_node.tag == _NULL:
            limit = 0
        elif (
            isinstance(limit_node, yaml.ScalarNode)
            and limit_node.tag == "tag:yaml.org,2002:int"
            and re.fullmatch(r"[+-]?[0-9]+", value or "")
            and int(value or "0") >= 0
        ):
            limit = int(value or "0")
        else:
            shown = value if value is not None else f"a {_kind(limit_node)}"
            problems.add(limit_node, where, f"limit: must be a whole number >= 0 (0: no limit), got {shown}")
    rules: list[Rule] = []
    if "rules" in fields:
        rules_node = fields["rules"][1]
        if isinstance(rules_node, yaml.SequenceNode):
            for j, rule_node in enumerate(rules_node.value, 1):
                rule = _parse_rule(rule_node, j, where, problems)
                if rule is not None:
                    rules.append(rule)
        elif not (isinstance(rules_node, yaml.ScalarNode) and rules_node.tag == _NULL):
            problems.add(rules_node, where, f"rules: must be a list of rules, got a {_kind(rules_node)}")
    if len(problems.items) > before:
        return None
    return RuleGroup(name=name, rules=tuple(rules), interval_s=interval or None, limit=limit)


def _parse_rule(node: yaml.Node, index: int, group_where: str, problems: _Problems) -> Rule | None:
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, f"{group_where}, rule {index}", f"must be a mapping, got a {_kind(node)}")
        return None
    before = len(problems.items)
    names: dict[str, str] = {}
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value in ("alert", "record") and isinstance(v, yaml.ScalarNode):
            names.setdefault(k.value, "" if v.tag == _NULL else v.value)
    shown = names.get("alert") or names.get("record") or ""
    where = f'{group_where}, rule "{shown}"' if shown else f"{group_where}, rule {index}"
    fields = _fields(node, _RULE_KEYS, where, problems)
    values: dict[str, Any] = {}
    for key in ("alert", "record", "expr"):
        if key in fields:
            values[key] = _string(fields[key][1], where, key, problems)
    for key in ("for", "keep_firing_for"):
        if key in fields:
            values[key] = _duration(fields[key][1], where, key, problems)
    for key in ("labels", "annotations"):
        if key in fields:
            values[key] = _string_map(fields[key][1], where, key, problems)
    alert, record = values.get("alert") or "", values.get("record") or ""
    if alert and record:
        problems.add(fields["record"][0], where, 'only one of "alert" and "record" may be set')
    elif not alert and not record:
        problems.add(node, where, 'one of "alert" or "record" must be set')
    expr = values.get("expr") or ""
    if not expr.strip():
        if "expr" not in fields or values.get("expr") is not None:
            problems.add(fields["expr"][1] if "expr" in fields else node, where, 'field "expr" must be set')
    else:
        message = _check_expr(expr)
        if message:
            problems.add(fields["expr"][1], where, f"expr: {message}")
    labels: dict[str, str] = values.get("labels") or {}
    annotations: dict[str, str] = values.get("annotations") or {}
    if record:
        record_node = fields["record"][1]
        for key in ("for", "keep_firing_for", "annotations"):
            if key in fields and (values.get(key) or (key == "annotations" and values.get(key) is None)):
                problems.add(fields[key][0], where, f'"{key}" is not allowed in a recording rule')
        if "{" in record or "}" in record:
            problems.add(
                record_node, where, f'record: "{record}" has braces: a label matcher belongs in expr, not the name'
            )
        elif not _METRIC_NAME.match(record):
            problems.add(
                record_node,
                where,
                f'record: "{record}" is not a valid metric name '
                '(letters, digits, "_" and ":", not starting with a digit)',
            )
    label_nodes = _key_nodes(fields["labels"][1] if "labels" in fields else None)
    for name in labels:
        if name == "__name__":
            problems.add(label_nodes.get(name), where, 'labels: "__name__" cannot be set by a rule')
        elif not _LABEL_NAME.match(name):
            problems.add(
                label_nodes.get(name),
                where,
                f'labels: "{name}" is not a valid label name (letters, digits and "_", not starting with a digit)',
            )
    annotation_nodes = _key_nodes(fields["annotations"][1] if "annotations" in fields else None)
    for name in annotations:
        if not _LABEL_NAME.match(name):
            problems.add(
                annotation_nodes.get(name),
                where,
                f'annotations: "{name}" is not a valid annotation name '
                '(letters, digits and "_", not starting with a digit)',
            )
    if alert and not record:
        # Only alerting rules expand templates; a recording rule's labels are taken as they are.
        for kind, mapping, nodes in (("label", labels, label_nodes), ("annotation", annotations, annotation_nodes)):
            for name, text in mapping.items():
                message = _check_template(text)
                if message:
                    problems.add(nodes.get(name), where, f'{kind} "{name}": {message}')
    if len(problems.items) > before:
        return None
    return Rule(
        kind="alert" if alert else "record",
        name=alert or record,
        expr=expr,
        for_s=values.get("for") or 0.0,
        keep_firing_for_s=values.get("keep_firing_for") or 0.0,
        labels=labels,
        annotations=annotations,
    )


def _check_expr(expr: str) -> str | None:
    try:
        query = parse_logql(expr)
    except QueryError as exc:
        return exc.message
    if isinstance(query, LogQuery):
        return f"{expr.strip()} is a log query, a rule needs a metric query (such as count_over_time(... [5m]))"
    return None


# ---- writing ------------------------------------------------------------------------------------------------------


def group_to_dict(group: RuleGroup) -> dict[str, Any]:
    """The group as Loki writes it in YAML: its keys, in its order, durations as `1m`, empty fields left out."""
    out: dict[str, Any] = {"name": group.name}
    if group.interval_s:
        out["interval"] = format_duration(group.interval_s)
    if group.limit:
        out["limit"] = group.limit
    out["rules"] = [_rule_to_dict(rule) for rule in group.rules]
    return out


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {rule.kind: rule.name, "expr": rule.expr}
    if rule.for_s:
        out["for"] = format_duration(rule.for_s)
    if rule.keep_firing_for_s:
        out["keep_firing_for"] = format_duration(rule.keep_firing_for_s)
    if rule.labels:
        out["labels"] = dict(rule.labels)
    if rule.annotations:
        out["annotations"] = dict(rule.annotations)
    return out


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so queries and annotations stay readable in the files."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def format_rule_file(groups: Iterable[RuleGroup]) -> str:
    """A rule file's YAML text (`groups: [...]`) for the groups."""
    return format_yaml({"groups": [group_to_dict(g) for g in groups]})


def format_yaml(data: Any) -> str:
    """YAML text as the rule files and the rules API write it (keys in order, block strings)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)


# ---- templates ----------------------------------------------------------------------------------------------------

# Prometheus prepends these so users can write $labels.x instead of .Labels.x.
_DEFS = (
    "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
)


@dataclass(frozen=True)
class _RenderContext:
    at: float
    external_url: str


_CONTEXT: contextvars.ContextVar[_RenderContext | None] = contextvars.ContextVar("loglake_ruler_template", default=None)


def _render_context() -> _RenderContext:
    return _CONTEXT.get() or _RenderContext(time.time(), "")


def _g4(v: float) -> str:
    """Go's %.4g."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.4g}"


def _to_float(v: Any) -> float:
    """Prometheus' ConvertToFloat: numbers, numeric strings and durations."""
    if isinstance(v, bool):
        raise ValueError("can't convert bool to float")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        return go_parse_float(v)
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    raise ValueError(f"can't convert {type(v).__name__} to float")


def _humanize(v: Any) -> str:
    x = _to_float(v)
    if x == 0 or math.isnan(x) or math.isinf(x):
        return _g4(x)
    prefix = ""
    if abs(x) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(x) < 1000:
                break
            prefix, x = p, x / 1000
        return _g4(x) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(x) >= 1:
            break
        prefix, x = p, x * 1000
    return _g4(x) + prefix


def _humanize1024(v: Any) -> str:
    x = _to_float(v)
    if abs(x) <= 1 or math.isnan(x) or math.isinf(x):
        return _g4(x)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(x) < 1024:
            break
        prefix, x = p, x / 1024
    return _g4(x) + prefix


def _humanize_duration(v: Any) -> str:
    x = _to_float(v)
    if math.isnan(x) or math.isinf(x):
        return _g4(x)
    if x == 0:
        return _g4(x) + "s"
    if abs(x) >= 1:
        sign = "-" if x < 0 else ""
        x = abs(x)
        whole = int(x)
        seconds, minutes, hours, days = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(x)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(x) >= 1:
            break
        prefix, x = p, x * 1000
    return f"{_g4(x)}{prefix}s"


def _float_to_time(x: float) -> dt.datetime:
    if math.isnan(x) or math.isinf(x):
        raise ValueError("value is NaN or Inf")
    ns = x * 1e9
    if ns > 2.0**63 or ns < -(2.0**63):
        raise ValueError(
            f"{format_float_v(x)} cannot be represented as a nanoseconds timestamp since it overflows int64"
        )
    whole_ns = int(ns)
    # Prometheus keeps milliseconds, truncating toward zero as Go's integer division does.
    ms = whole_ns // 1_000_000 if whole_ns >= 0 else -(-whole_ns // 1_000_000)
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def _go_time(t: dt.datetime) -> str:
    """Go's time.Time String for a UTC time with millisecond precision."""
    text = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        text += ("." + f"{t.microsecond:06d}").rstrip("0")
    return text + " +0000 UTC"


def _humanize_timestamp(v: Any) -> str:
    x = _to_float(v)
    if math.isnan(x) or math.isinf(x):
        return _g4(x)
    return _go_time(_float_to_time(x))


def _split_host_port(text: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort; None where it fails."""
    i = text.rfind(":")
    if i < 0:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or end + 1 != i:
            return None
        host = text[1:end]
        if "[" in text[1:] or "]" in text[end + 1 :]:
            return None
    else:
        host = text[:i]
        if ":" in host or "[" in text or "]" in text:
            return None
    return host, text[i + 1 :]


def _strip_port(text: str) -> str:
    parts = _split_host_port(text)
    return parts[0] if parts else text


def _strip_domain(text: str) -> str:
    parts = _split_host_port(text)
    host, port = parts if parts else (text, "")
    try:
        ipaddress.ip_address(host)
        return text
    except ValueError:
        pass
    host = host.split(".")[0]
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        parse_regex(pattern)
    except RegexError as exc:
        raise ValueError(str(exc)) from None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"error parsing regexp: {exc}") from None


_GO_REPLACEMENT = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def _go_expand(repl: str, m: re.Match[str]) -> str:
    """Go's Regexp.Expand: `$1`, `${1}`, `$name`, `${name}`, `$$`; an unknown group is empty."""

    def one(r: re.Match[str]) -> str:
        name = r.group(1) or r.group(2)
        if name is None:
            return "$"
        if name.isdigit():
            index = int(name)
            return (m.group(index) or "") if index <= m.re.groups else ""
        return (m.group(name) or "") if name in m.re.groupindex else ""

    return _GO_REPLACEMENT.sub(one, repl)


def _re_replace_all(pattern: Any, repl: Any, text: Any) -> str:
    return _regex(str(pattern)).sub(lambda m: _go_expand(str(repl), m), str(text))


def _title(text: Any) -> str:
    # Upper-cases each word's first letter and leaves the rest alone (x/text cases.Title with NoLower).
    return re.sub(r"(?<!\w)(?<!\w')\w", lambda m: m.group(0).upper(), str(text))


def _link(expr: Any) -> str:
    """A link to the query in loglake's web UI (Prometheus' graphLink/tableLink point at its own UI)."""
    return "/?query=" + urllib.parse.quote_plus(str(expr), safe="")


def _query(_text: Any) -> Any:
    raise ValueError("the query function is not available in loglake's alert templates")


def _first(v: Any) -> Any:
    if isinstance(v, list | tuple) and v:
        return v[0]
    raise ValueError("first() called on vector with no elements")


def _sample_field(sample: Any, key: str) -> Any:
    if not isinstance(sample, Mapping):
        raise ValueError("a query result sample is needed")
    return sample.get(key)


def _parse_duration_signed(text: Any) -> float:
    s = str(text)
    negative = s.startswith("-")
    try:
        seconds = parse_duration(s[1:] if negative else s)
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    return -seconds if negative else seconds


def _to_duration(v: Any) -> dt.timedelta:
    return dt.timedelta(seconds=_to_float(v))


TEMPLATE_FUNCS: Mapping[str, Callable[..., Any]] = {
    # Prometheus' alert template functions (on top of Go's builtins), for gotemplate.Template(funcs=...).
    "query": _query,
    "first": _first,
    "label": lambda name, sample: (_sample_field(sample, "Labels") or {}).get(str(name), ""),
    "value": lambda sample: _sample_field(sample, "Value"),
    "strvalue": lambda sample: (_sample_field(sample, "Labels") or {}).get("__value__", ""),
    "sortByLabel": lambda name, v: sorted(v, key=lambda s: (s.get("Labels") or {}).get(str(name), "")),
    "args": lambda *a: {f"arg{i}": x for i, x in enumerate(a)},
    "reReplaceAll": _re_replace_all,
    "safeHtml": lambda text: str(text),
    "match": lambda pattern, text: _regex(str(pattern)).search(str(text)) is not None,
    "title": _title,
    "toUpper": lambda text: str(text).upper(),
    "toLower": lambda text: str(text).lower(),
    "graphLink": _link,
    "tableLink": _link,
    "stripPort": lambda text: _strip_port(str(text)),
    "stripDomain": lambda text: _strip_domain(str(text)),
    "humanize": _humanize,
    "humanize1024": _humanize1024,
    "humanizeDuration": _humanize_duration,
    "humanizePercentage": lambda v: _g4(_to_float(v) * 100) + "%",
    "humanizeTimestamp": _humanize_timestamp,
    "toTime": lambda v: _float_to_time(_to_float(v)),
    "toDuration": _to_duration,
    "now": lambda: _render_context().at,
    "pathPrefix": lambda: urllib.parse.urlsplit(_render_context().external_url).path,
    "externalURL": lambda: _render_context().external_url,
    "parseDuration": _parse_duration_signed,
    "urlQueryEscape": lambda text: urllib.parse.quote_plus(str(text), safe=""),
}


@lru_cache(maxsize=1024)
def _compile(text: str) -> Template:
    return Template(_DEFS + text, funcs=TEMPLATE_FUNCS)


def expand_template(
    text: str,
    labels: Mapping[str, str],
    value: float,
    *,
    external_labels: Mapping[str, str] = _NO_LABELS,
    external_url: str = "",
    at: float | None = None,
) -> str:
    """Expand an alert template with Prometheus' data and functions; TemplateError if it does not parse or run."""
    data = {
        "Labels": labels if isinstance(labels, dict) else dict(labels),
        "ExternalLabels": external_labels if isinstance(external_labels, dict) else dict(external_labels),
        "ExternalURL": external_url,
        "Value": float(value),
    }
    token = _CONTEXT.set(_RenderContext(time.time() if at is None else at, external_url))
    try:
        return _compile(text).render(data, "", 0)
    finally:
        _CONTEXT.reset(token)


def render_template(
    text: str,
    labels: Mapping[str, str],
    value: float,
    *,
    external_labels: Mapping[str, str] = _NO_LABELS,
    expr: str = "",
    name: str = "",
    external_url: str = "",
    at: float | None = None,
) -> str:
    """An alert's label or annotation text, as Prometheus expands it (`<error expanding template: ...>` on failure).

    `expr` is the rule's query and `name` the alert's name; `at` is the evaluation time (`now` in templates).
    """
    del expr  # Kept for callers that pass it; Prometheus' template data has no query text.
    if "{{" not in text:
        return text
    try:
        return expand_template(text, labels, value, external_labels=external_labels, external_url=external_url, at=at)
    except TemplateRuntimeError as exc:
        return f"<error expanding template: error executing template __alert_{name}: {exc}>"
    except TemplateError as exc:
        return f"<error expanding template: error parsing template __alert_{name}: {exc}>"


class _SampleLabels(dict[str, str]):
    """Labels for checking a template: every name is present, with one value."""

    def __init__(self, fill: str) -> None:
        super().__init__()
        self.fill = fill

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self.fill


def _check_template(text: str) -> str | None:
    """Why the template is unusable, or None: it must parse, and render for some label values."""
    try:
        _compile(text)
    except TemplateError as exc:
        return f"template does not parse: {exc}"
    failure: TemplateError | None = None
    # The labels are only known at evaluation, so try empty values and numeric ones: `humanize $labels.x` is fine.
    for fill in ("", "1"):
        try:
            expand_template(text, _SampleLabels(fill), 1.0, external_labels=_SampleLabels(fill), at=0.0)
            return None
        except TemplateError as exc:
            failure = failure or exc
    return f"template does not render: {failure}"
