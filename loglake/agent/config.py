"""The agent's configuration: Promtail's YAML file read into typed dataclasses with Promtail's defaults.

Promtail reads its file strictly, so an unknown key is an error that names the key and where it is. Keys
Promtail knows but this agent does not act on (other target kinds, tracing, WAL, `encoding`) are accepted,
kept where useful, and listed in `AgentConfig.notes` so the command line can warn about them. Scalars are
read with YAML 1.2 rules as Promtail's Go YAML does: `yes`/`on` stay strings, `0755` is not a date.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from loglake.agent.relabel import RelabelError, RelabelRule, parse_relabel_configs

__all__ = [
    "AgentConfig",
    "Authorization",
    "BackoffConfig",
    "BasicAuth",
    "ClientConfig",
    "ConfigError",
    "FileSDConfig",
    "FileWatchConfig",
    "GlobalConfig",
    "JournalConfig",
    "KubernetesAttachMetadata",
    "KubernetesNamespaces",
    "KubernetesSDConfig",
    "KubernetesSelector",
    "LimitsConfig",
    "PositionsConfig",
    "PushAPIConfig",
    "ScrapeConfig",
    "ServerConfig",
    "StaticConfig",
    "SyslogConfig",
    "TLSConfig",
    "TargetConfig",
    "expand_env",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "read_file_sd",
]


class ConfigError(ValueError):
    """A configuration Promtail would reject; the message names the key path and the problem."""

    def __init__(self, path: str, problem: str, line: int | None = None, where: str = "") -> None:
        self.path = path
        self.problem = problem
        self.line = line
        self.where = where
        text = f"{path}: {problem}" if path else problem
        if line is not None:
            text += f" (line {line})"
        super().__init__(f"{where}: {text}" if where else text)


# ---- scalars --------------------------------------------------------------------------------------------------

_DURATION_UNITS: dict[str, Decimal] = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),  # micro sign, as Go accepts
    "\u03bcs": Decimal("1e-6"),  # Greek mu
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
    "w": Decimal(7 * 86400),
    "y": Decimal(365 * 86400),
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h|d|w|y)")


def parse_duration(value: str | int | float, key: str) -> float:
    """Seconds in a Go or Prometheus duration ("1s", "500ms", "1m30s", "1.5h", "1d"); `key` names it in errors."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration such as '10s', got {value!r}")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        # Go's YAML rejects bare numbers for durations; guessing a unit would hide the mistake.
        raise ConfigError(
            key, f"duration {value!r} needs a unit, e.g. '{value}s' (units: ns, us, ms, s, m, h, d, w, y)"
        )
    body = value.strip()
    sign = Decimal(1)
    if body.startswith(("+", "-")):
        sign = Decimal(-1) if body[0] == "-" else Decimal(1)
        body = body[1:]
    if body == "0":
        return 0.0
    total = Decimal(0)
    pos = 0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if m is None:
            break
        total += Decimal(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ConfigError(key, f"invalid duration {value!r} (expected e.g. '10s', '500ms', '1m30s', '1h', '1d')")
    return float(sign * total)


_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1, "byte": 1}
for _power, _names in enumerate(
    (
        ("k", "kb", "kib", "kilo", "kilobyte", "kilobytes"),
        ("m", "mb", "mib", "mega", "megabyte", "megabytes"),
        ("g", "gb", "gib", "giga", "gigabyte", "gigabytes"),
        ("t", "tb", "tib", "tera", "terabyte", "terabytes"),
        ("p", "pb", "pib", "peta", "petabyte", "petabytes"),
        ("e", "eb", "eib"),
    ),
    start=1,
):
    for _name in _names:
        _SIZE_UNITS[_name] = 1024**_power


def parse_size(value: str | int, key: str) -> int:
    """Bytes in a size as Promtail's flagext.ByteSize reads it ("256kb", "1MB", "102400"; units are 1024-based)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(key, f"expected a size such as '1MB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(key, f"size must not be negative, got {value}")
        return value
    m = re.fullmatch(r"(\d+)\s*([A-Za-z]*)\s*", value)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise ConfigError(key, f"invalid size {value!r} (expected e.g. '102400', '256KB', '1MB', '1MiB', '2GB')")
    size = int(m.group(1)) * _SIZE_UNITS[unit]
    if size >= 1 << 64:
        raise ConfigError(key, f"size {value!r} is too large")
    return size


# ---- environment expansion ------------------------------------------------------------------------------------


def _is_name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal() or ch == "_"


class _EnvExpander:
    """`${VAR}` and `${VAR:-default}` substitution as Promtail's -config.expand-env (drone/envsubst) does it."""

    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.text = text
        self.env = env
        self.pos = 0

    def error(self, problem: str) -> ConfigError:
        line = self.text.count("\n", 0, self.pos) + 1
        return ConfigError("", f"environment expansion: {problem}", line)

    def expand(self) -> str:
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "$" and text.startswith("$$", self.pos):
                out.append("$")  # `$$` is an escaped dollar
                self.pos += 2
            elif ch == "$" and text.startswith("${", self.pos):
                self.pos += 2
                out.append(self.substitution())
            else:
                out.append(ch)
                self.pos += 1
        return "".join(out)

    def substitution(self) -> str:
        """One `${...}` body (after the `${`), up to and including its `}`."""
        text = self.text
        start = self.pos
        while self.pos < len(text) and _is_name_char(text[self.pos]):
            self.pos += 1
        name = text[start : self.pos]
        if not name:
            raise self.error(f"unable to parse variable name in {text[start - 2 : start + 10]!r}")
        value = self.env.get(name, "")
        rest = text[self.pos : self.pos + 2]
        if rest[:1] == "}":
            self.pos += 1
            return value
        if rest[:1] in (",", "^"):
            op = text[self.pos : self.pos + 2] if rest in (",,", "^^") else rest[:1]
            self.pos += len(op)
            self.expect_close(name)
            if op == ",,":
                return value.lower()
            if op == "^^":
                return value.upper()
            return (value[:1].lower() if op == "," else value[:1].upper()) + value[1:]
        if rest in (":-", ":=", ":?", ":+") or rest[:1] == "=":
            self.pos += 1 if rest[:1] == "=" else 2
            default = self.default_text(name)
            # envsubst treats every one of these forms as "use the default when empty".
            return value if value else default
        raise self.error(f"unsupported substitution in '${{{name}{rest}...' (use ${{{name}}} or ${{{name}:-default}})")

    def expect_close(self, name: str) -> None:
        if not self.text.startswith("}", self.pos):
            raise self.error(f"missing closing brace after '${{{name}'")
        self.pos += 1

    def default_text(self, name: str) -> str:
        """The default after `:-` up to the closing brace; it may hold `${...}` and the escapes `$$`, `\\\\`, `\\/`."""
        text = self.text
        out: list[str] = []
        while True:
            if self.pos >= len(text):
                raise self.error(f"missing closing brace after '${{{name}'")
            ch = text[self.pos]
            if ch == "}":
                self.pos += 1
                return "".join(out)
            if text.startswith("${", self.pos):
                self.pos += 2
                out.append(self.substitution())
            elif (
                text.startswith("$$", self.pos) or text.startswith("\\\\", self.pos) or text.startswith("\\/", self.pos)
            ):
                out.append(text[self.pos + 1])
                self.pos += 2
            else:
                out.append(ch)
                self.pos += 1


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}` in text from the environment (undefined is ""); `$$` is a `$`."""
    return _EnvExpander(text, os.environ if env is None else env).expand()


# ---- YAML with Go's (1.2 core schema) scalar rules ------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema resolution, as Go's yaml.v3 reads Promtail's file."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|0b[01]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _construct_int(loader: yaml.SafeLoader, node: ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits[:2] in ("0x", "0o", "0b"):
        return sign * int(digits, 0)
    if len(digits) > 1 and digits.startswith("0") and all(c in "01234567" for c in digits):
        return sign * int(digits, 8)  # Go reads a leading zero as octal
    return sign * int(digits)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)

_NULL = "tag:yaml.org,2002:null"
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_KIND_NAMES = {MappingNode: "a mapping", SequenceNode: "a list", ScalarNode: "a scalar"}


def _is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL)


def _line(node: Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _describe(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return repr(node.value)
    return _KIND_NAMES.get(type(node), "a value")


class _Reader:
    """Typed reading of YAML nodes with key paths for error messages; one per document."""

    def __init__(self, loader: _Loader, where: str) -> None:
        self.loader = loader
        self.where = where
        self.notes: list[str] = []

    def error(self, path: str, problem: str, node: Node | None = None) -> ConfigError:
        return ConfigError(path, problem, _line(node), self.where)

    def mapping(self, node: Node | None, path: str) -> _Mapping:
        return _Mapping(self, node, path)

    def items(self, node: Node | None, path: str) -> list[tuple[Node, str]]:
        """The elements of a list node with their paths; null is an empty list."""
        if _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.error(path, f"expected a list, got {_describe(node)}", node)
        return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]

    def string(self, node: Node, path: str) -> str:
        if _is_null(node):
            return ""
        if not isinstance(node, ScalarNode):
            raise self.error(path, f"expected a string, got {_describe(node)}", node)
        return str(node.value)  # Go's YAML gives a string field the scalar's text, whatever it resolves to

    def integer(self, node: Node, path: str) -> int:
        if isinstance(node, ScalarNode) and node.tag == _INT:
            return int(self.loader.construct_object(node))
        if isinstance(node, ScalarNode) and node.tag == _FLOAT:
            value = float(self.loader.construct_object(node))
            if value.is_integer():
                return int(value)
        raise self.error(path, f"expected an integer, got {_describe(node)}", node)

    def number(self, node: Node, path: str) -> float:
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
            return float(self.loader.construct_object(node))
        raise self.error(path, f"expected a number, got {_describe(node)}", node)

    def boolean(self, node: Node, path: str) -> bool:
        if isinstance(node, ScalarNode):
            if node.tag == _BOOL:
                return bool(self.loader.construct_object(node))
            # Go's yaml.v3 still reads YAML 1.1 words into a bool field.
            if node.value in ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"):
                return True
            if node.value in ("n", "N", "no", "No", "NO", "off", "Off", "OFF"):
                return False
        raise self.error(path, f"expected true or false, got {_describe(node)}", node)

    def duration(self, node: Node, path: str) -> float:
        if not isinstance(node, ScalarNode) or node.tag == _BOOL:
            raise self.error(path, f"expected a duration such as '10s', got {_describe(node)}", node)
        value: str | int | float = node.value
        if node.tag in (_INT, _FLOAT):
            value = self.loader.construct_object(node)
        try:
            return parse_duration(value, path)
        except ConfigError as exc:
            raise self.error(path, exc.problem, node) from None

    def size(self, node: Node, path: str) -> int:
        if not isinstance(node, ScalarNode) or node.tag in (_BOOL, _FLOAT):
            raise self.error(path, f"expected a size such as '1MB', got {_describe(node)}", node)
        value: str | int = self.integer(node, path) if node.tag == _INT else node.value
        try:
            return parse_size(value, path)
        except ConfigError as exc:
            raise self.error(path, exc.problem, node) from None

    def strings(self, node: Node, path: str) -> list[str]:
        return [self.string(item, item_path) for item, item_path in self.items(node, path)]

    def string_map(self, node: Node, path: str) -> dict[str, str]:
        block = self.mapping(node, path)
        return {key: self.string(value, f"{path}.{key}") for key, value in block.take_all()}

    def labels(self, node: Node, path: str) -> dict[str, str]:
        """A label set: names must not be empty (Promtail checks UTF-8 label names), values are strings."""
        labels = self.string_map(node, path)
        for name in labels:
            if not name:
                raise self.error(path, "label names must not be empty", node)
        return labels

    def plain(self, node: Node | None, path: str) -> Any:
        """The node as plain Python values (mappings, lists, strings, numbers, booleans, None)."""
        if node is None:
            return None
        self.check_duplicates(node, path)
        return self.loader.construct_object(node, deep=True)

    def texts(self, node: Node | None, path: str) -> Any:
        """The node as Python values with every scalar as its text (None for null), for string-typed settings."""
        if _is_null(node):
            return None
        if isinstance(node, MappingNode):
            self.check_duplicates(node, path)
            return {str(k.value): self.texts(v, f"{path}.{k.value}") for k, v in node.value}
        if isinstance(node, SequenceNode):
            return [self.texts(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return str(node.value) if isinstance(node, ScalarNode) else None

    def check_duplicates(self, node: Node, path: str) -> None:
        """Reject a key given twice anywhere below node, as Go's YAML does (PyYAML would keep the last)."""
        if isinstance(node, MappingNode):
            self.loader.flatten_mapping(node)
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else id(key_node)
                sub = f"{path}.{key}" if path else str(key)
                if key in seen:
                    raise self.error(sub, "key is given twice", key_node)
                seen.add(key)
                self.check_duplicates(value_node, sub)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                self.check_duplicates(item, f"{path}[{i}]")


class _Mapping:
    """A YAML mapping read key by key; `finish` rejects the keys nobody asked for, as Go's strict YAML does."""

    def __init__(self, reader: _Reader, node: Node | None, path: str) -> None:
        self.reader = reader
        self.path = path
        self.node = node
        self.values: dict[str, Node] = {}
        self.key_nodes: dict[str, Node] = {}
        self.used: set[str] = set()
        if _is_null(node):
            return
        if not isinstance(node, MappingNode):
            raise reader.error(path, f"expected a mapping, got {_describe(node)}", node)
        reader.loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or _is_null(key_node):
                raise reader.error(path, f"keys must be strings, got {_describe(key_node)}", key_node)
            key = str(key_node.value)
            if key in self.values:
                raise reader.error(self.sub(key), "key is given twice", key_node)
            self.values[key] = value_node
            self.key_nodes[key] = key_node

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def __contains__(self, key: str) -> bool:
        return key in self.values and not _is_null(self.values[key])

    def take(self, key: str) -> Node | None:
        """The value node of key, or None when it is absent or null (Go then keeps the default)."""
        self.used.add(key)
        node = self.values.get(key)
        return None if _is_null(node) else node

    def take_all(self) -> list[tuple[str, Node]]:
        self.used.update(self.values)
        return list(self.values.items())

    def get(self, key: str, default: Any, read: Callable[[Node, str], Any]) -> Any:
        node = self.take(key)
        return default if node is None else read(node, self.sub(key))

    def str(self, key: str, default: str = "") -> str:
        return self.get(key, default, self.reader.string)

    def int(self, key: str, default: int = 0) -> int:
        return self.get(key, default, self.reader.integer)

    def float(self, key: str, default: float = 0.0) -> float:
        return self.get(key, default, self.reader.number)

    def bool(self, key: str, default: bool = False) -> bool:
        return self.get(key, default, self.reader.boolean)

    def duration(self, key: str, default: float) -> float:
        return self.get(key, default, self.reader.duration)

    def size(self, key: str, default: int) -> int:
        return self.get(key, default, self.reader.size)

    def strings(self, key: str) -> list[str]:
        return self.get(key, [], self.reader.strings)

    def string_map(self, key: str) -> dict[str, str]:
        return self.get(key, {}, self.reader.string_map)

    def labels(self, key: str) -> dict[str, str]:
        return self.get(key, {}, self.reader.labels)

    def block(self, key: str) -> _Mapping:
        return self.reader.mapping(self.take(key), self.sub(key))

    def items(self, key: str) -> list[tuple[Node, str]]:
        return self.reader.items(self.take(key), self.sub(key))

    def one_of(self, key: str, default: str, allowed: Collection[str]) -> str:
        value = self.str(key, default)
        if value not in allowed:
            raise self.reader.error(
                self.sub(key), f"unknown value {value!r} (allowed: {', '.join(allowed)})", self.values.get(key)
            )
        return value

    def ignore(self, keys: Collection[str], note: str | None = None) -> None:
        """Accept keys Promtail knows but this agent does not use; a note says so when one is given."""
        for key in keys:
            if key in self.values:
                self.used.add(key)
                if note:
                    self.reader.notes.append(f"{self.sub(key)}: {note}")

    def finish(self) -> None:
        for key, key_node in self.key_nodes.items():
            if key not in self.used:
                close = difflib.get_close_matches(key, self.used, n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else "known here: " + (", ".join(sorted(self.used)) or "none")
                )
                raise self.reader.error(self.path, f"unknown key {key!r} ({hint})", key_node)


# ---- the configuration tree -----------------------------------------------------------------------------------


@dataclass
class TLSConfig:
    """Prometheus' tls_config for connecting to a server (or, for syslog, serving TLS)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False
    min_version: str = ""
    max_version: str = ""


@dataclass
class BasicAuth:
    """HTTP basic authentication; the password may come from a file."""

    username: str = ""
    username_file: str = ""
    password: str = ""
    password_file: str = ""


@dataclass
class Authorization:
    """An Authorization header: type (default Bearer) and credentials, inline or from a file."""

    type: str = "Bearer"
    credentials: str = ""
    credentials_file: str = ""


@dataclass
class BackoffConfig:
    """Retry schedule for failed pushes: doubling from min_period to max_period, max_retries times (0: forever)."""

    min_period: float = 0.5
    max_period: float = 300.0
    max_retries: int = 10


@dataclass
class ClientConfig:
    """One Loki (or loglake) server the agent pushes to; durations are in seconds, batchsize in bytes."""

    url: str = ""
    name: str = ""
    tenant_id: str = ""
    batchwait: float = 1.0
    batchsize: int = 1024 * 1024
    timeout: float = 10.0
    backoff_config: BackoffConfig = field(default_factory=BackoffConfig)
    external_labels: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    drop_rate_limited_batches: bool = False
    basic_auth: BasicAuth | None = None
    bearer_token: str = ""
    bearer_token_file: str = ""
    authorization: Authorization | None = None
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    proxy_url: str = ""
    follow_redirects: bool = True
    enable_http2: bool = True


@dataclass
class ServerConfig:
    """The agent's own HTTP server (/metrics, /ready, targets); gRPC settings are read but not used."""

    http_listen_address: str = "0.0.0.0"
    http_listen_port: int = 9080
    grpc_listen_address: str = ""
    grpc_listen_port: int = 9095
    http_path_prefix: str = ""
    log_level: str = "info"
    log_format: str = "logfmt"
    register_instrumentation: bool = True
    graceful_shutdown_timeout: float = 30.0
    http_server_read_timeout: float = 30.0
    http_server_write_timeout: float = 30.0
    http_server_idle_timeout: float = 120.0
    disable: bool = False
    profiling_enabled: bool = False
    enable_runtime_reload: bool = False
    health_check_target: bool = True
    external_url: str = ""


@dataclass
class PositionsConfig:
    """Where read offsets are saved, and how often."""

    filename: str = "/var/log/positions.yaml"
    sync_period: float = 10.0
    ignore_invalid_yaml: bool = False


@dataclass
class LimitsConfig:
    """Global limits: line rate (lines/s, burst), active streams, line size in bytes (0: no limit)."""

    readline_rate: float = 10000.0
    readline_burst: int = 10000
    readline_rate_enabled: bool = False
    readline_rate_drop: bool = True
    max_streams: int = 0
    max_line_size: int = 0
    max_line_size_truncate: bool = False


@dataclass
class TargetConfig:
    """How often file targets re-scan their globs; stdin reads lines from standard input instead."""

    sync_period: float = 10.0
    stdin: bool = False


@dataclass
class FileWatchConfig:
    """How often tailed files are polled for changes (seconds)."""

    min_poll_frequency: float = 0.25
    max_poll_frequency: float = 0.25


@dataclass
class GlobalConfig:
    """Settings for all targets."""

    file_watch_config: FileWatchConfig = field(default_factory=FileWatchConfig)


@dataclass
class StaticConfig:
    """A target group: targets (hosts; Promtail uses "localhost" when empty) and labels, `__path__` among them."""

    targets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class FileSDConfig:
    """Files (globs ending in .json, .yml or .yaml) holding target groups, re-read every refresh_interval."""

    files: list[str] = field(default_factory=list)
    refresh_interval: float = 300.0


@dataclass
class KubernetesNamespaces:
    """Namespaces to discover in (all when empty)."""

    names: list[str] = field(default_factory=list)
    own_namespace: bool = False


@dataclass
class KubernetesSelector:
    """A label or field selector for one role's API objects."""

    role: str = ""
    label: str = ""
    field: str = ""


@dataclass
class KubernetesAttachMetadata:
    """Extra metadata to attach to discovered targets."""

    node: bool = False
    namespace: bool = False
    deployment: bool = False
    job: bool = False
    cronjob: bool = False


@dataclass
class KubernetesSDConfig:
    """Kubernetes service discovery; without api_server and kubeconfig_file the in-cluster account is used."""

    role: str = ""
    api_server: str = ""
    kubeconfig_file: str = ""
    namespaces: KubernetesNamespaces = field(default_factory=KubernetesNamespaces)
    selectors: list[KubernetesSelector] = field(default_factory=list)
    attach_metadata: KubernetesAttachMetadata = field(default_factory=KubernetesAttachMetadata)
    basic_auth: BasicAuth | None = None
    bearer_token: str = ""
    bearer_token_file: str = ""
    authorization: Authorization | None = None
    tls_config: TLSConfig | None = None  # None when not given (any TLS setting counts as custom HTTP settings)
    proxy_url: str = ""
    follow_redirects: bool = True
    enable_http2: bool = True


@dataclass
class SyslogConfig:
    """A syslog listener (RFC 5424 or 3164, octet counting or newline framing)."""

    listen_address: str = ""
    listen_protocol: str = "tcp"
    idle_timeout: float = 120.0
    label_structured_data: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    use_incoming_timestamp: bool = False
    use_rfc5424_message: bool = False
    syslog_format: str = "rfc5424"
    max_message_length: int = 8192
    tls_config: TLSConfig | None = None


@dataclass
class PushAPIConfig:
    """A Loki push API receiver; its server listens on a random port when http_listen_port is 0."""

    server: ServerConfig = field(default_factory=lambda: ServerConfig(http_listen_address="", http_listen_port=0))
    labels: dict[str, str] = field(default_factory=dict)
    use_incoming_timestamp: bool = False
    max_send_msg_size: int = 100 << 20


@dataclass
class JournalConfig:
    """The systemd journal as a source (max_age in seconds)."""

    max_age: float = 7 * 3600.0
    json: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    path: str = ""
    matches: str = ""


@dataclass
class ScrapeConfig:
    """One job: where entries come from (`kind`), how targets are relabeled, and its raw pipeline stages.

    `kind` is the source Promtail would run for this job, in Promtail's order of precedence: "file" (static,
    file or Kubernetes discovery), "journal", "syslog", "loki_push_api", or the name of a source this agent
    does not support (its settings are in `unsupported`).
    """

    job_name: str
    kind: str = "file"
    pipeline_stages: list[Any] = field(default_factory=list)
    static_configs: list[StaticConfig] = field(default_factory=list)
    file_sd_configs: list[FileSDConfig] = field(default_factory=list)
    kubernetes_sd_configs: list[KubernetesSDConfig] = field(default_factory=list)
    relabel_configs: list[RelabelRule] = field(default_factory=list)
    syslog: SyslogConfig | None = None
    loki_push_api: PushAPIConfig | None = None
    journal: JournalConfig | None = None
    encoding: str = ""
    unsupported: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentConfig:
    """The whole agent configuration; `notes` lists settings that were accepted but have no effect here."""

    server: ServerConfig = field(default_factory=ServerConfig)
    positions: PositionsConfig = field(default_factory=PositionsConfig)
    clients: list[ClientConfig] = field(default_factory=list)
    scrape_configs: list[ScrapeConfig] = field(default_factory=list)
    limits_config: LimitsConfig = field(default_factory=LimitsConfig)
    target_config: TargetConfig = field(default_factory=TargetConfig)
    global_config: GlobalConfig = field(default_factory=GlobalConfig)
    notes: list[str] = field(default_factory=list)


# ---- reading each block ---------------------------------------------------------------------------------------

_DSKIT_SERVER_IGNORED = (
    "http_listen_network",
    "http_listen_conn_limit",
    "grpc_listen_network",
    "grpc_listen_conn_limit",
    "grpc_collect_max_streams_by_conn",
    "proxy_protocol_enabled",
    "tls_cipher_suites",
    "tls_min_version",
    "http_tls_config",
    "grpc_tls_config",
    "report_grpc_codes_in_instrumentation_label_enabled",
    "http_server_read_header_timeout",
    "http_log_closed_connections_without_response_enabled",
    "grpc_server_max_recv_msg_size",
    "grpc_server_max_send_msg_size",
    "grpc_server_max_concurrent_streams",
    "grpc_server_max_connection_idle",
    "grpc_server_max_connection_age",
    "grpc_server_max_connection_age_grace",
    "grpc_server_keepalive_time",
    "grpc_server_keepalive_timeout",
    "grpc_server_min_time_between_pings",
    "grpc_server_ping_without_stream_allowed",
    "grpc_server_num_workers",
    "grpc_server_stats_tracking_enabled",
    "grpc_server_recv_buffer_pools_enabled",
    "grpc_server_read_buffer_size",
    "grpc_server_write_buffer_size",
    "log_source_ips_enabled",
    "log_source_ips_full",
    "log_source_ips_header",
    "log_source_ips_regex",
    "log_request_headers",
    "log_request_at_info_level_enabled",
    "log_request_exclude_headers_list",
    "trace_request_headers",
    "trace_request_exclude_headers_list",
    "cluster_validation",
    "create_new_traces",
)
_LOG_LEVELS = ("debug", "info", "warn", "error")

# Scrape-config keys Promtail knows for sources this agent does not run.
_UNSUPPORTED_SOURCES = (
    "gcplog",
    "windows_events",
    "kafka",
    "azure_event_hubs",
    "gelf",
    "cloudflare",
    "docker_sd_configs",
    "heroku_drain",
)
_UNSUPPORTED_DISCOVERY = (
    "dns_sd_configs",
    "consul_sd_configs",
    "consulagent_sd_configs",
    "digitalocean_sd_configs",
    "dockerswarm_sd_configs",
    "serverset_sd_configs",
    "nerve_sd_configs",
    "marathon_sd_configs",
    "gce_sd_configs",
    "ec2_sd_configs",
    "openstack_sd_configs",
    "azure_sd_configs",
    "triton_sd_configs",
)
_KUBERNETES_ROLES = ("pod", "service", "endpoints", "endpointslice", "node", "ingress")
_SELECTOR_ROLES = {
    "pod": ("pod", "node"),
    "service": ("service",),
    "endpointslice": ("pod", "service", "endpointslice"),
    "endpoints": ("pod", "service", "endpoints"),
    "node": ("node",),
    "ingress": ("ingress",),
}
_FILE_SD_NAME = re.compile(r"^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$")


def _read_server(block: _Mapping, defaults: ServerConfig, promtail_keys: bool) -> ServerConfig:
    cfg = ServerConfig(
        http_listen_address=block.str("http_listen_address", defaults.http_listen_address),
        http_listen_port=block.int("http_listen_port", defaults.http_listen_port),
        grpc_listen_address=block.str("grpc_listen_address", defaults.grpc_listen_address),
        grpc_listen_port=block.int("grpc_listen_port", defaults.grpc_listen_port),
        http_path_prefix=block.str("http_path_prefix", defaults.http_path_prefix),
        log_level=block.one_of("log_level", defaults.log_level, _LOG_LEVELS),
        log_format=block.one_of("log_format", defaults.log_format, ("logfmt", "json")),
        register_instrumentation=block.bool("register_instrumentation", defaults.register_instrumentation),
        graceful_shutdown_timeout=block.duration("graceful_shutdown_timeout", defaults.graceful_shutdown_timeout),
        http_server_read_timeout=block.duration("http_server_read_timeout", defaults.http_server_read_timeout),
        http_server_write_timeout=block.duration("http_server_write_timeout", defaults.http_server_write_timeout),
        http_server_idle_timeout=block.duration("http_server_idle_timeout", defaults.http_server_idle_timeout),
    )
    for port_key in ("http_listen_port", "grpc_listen_port"):
        port = getattr(cfg, port_key)
        if not 0 <= port <= 65535:
            raise block.reader.error(block.sub(port_key), f"port must be 0..65535, got {port}", block.values[port_key])
    if promtail_keys:
        cfg.disable = block.bool("disable")
        cfg.profiling_enabled = block.bool("profiling_enabled")
        cfg.enable_runtime_reload = block.bool("enable_runtime_reload")
        cfg.health_check_target = block.bool("health_check_target", True)
        cfg.external_url = block.str("external_url")
    block.ignore(_DSKIT_SERVER_IGNORED)
    block.finish()
    return cfg


def _read_tls(block: _Mapping) -> TLSConfig:
    cfg = TLSConfig(
        ca_file=block.str("ca_file"),
        cert_file=block.str("cert_file"),
        key_file=block.str("key_file"),
        ca=block.str("ca"),
        cert=block.str("cert"),
        key=block.str("key"),
        server_name=block.str("server_name"),
        insecure_skip_verify=block.bool("insecure_skip_verify"),
        min_version=block.one_of("min_version", "", ("", "TLS10", "TLS11", "TLS12", "TLS13")),
        max_version=block.one_of("max_version", "", ("", "TLS10", "TLS11", "TLS12", "TLS13")),
    )
    block.ignore(("ca_ref", "cert_ref", "key_ref"), "secret-manager references are not supported")
    block.finish()
    # Prometheus' TLSConfig.Validate.
    for a, b in (("ca", "ca_file"), ("cert", "cert_file"), ("key", "key_file")):
        if getattr(cfg, a) and getattr(cfg, b):
            raise block.reader.error(block.path, f"at most one of {a} & {b} must be configured", block.node)
    has_cert, has_key = bool(cfg.cert or cfg.cert_file), bool(cfg.key or cfg.key_file)
    if has_cert and not has_key:
        raise block.reader.error(
            block.path,
            "exactly one of key or key_file must be configured when a client certificate is configured",
            block.node,
        )
    if has_key and not has_cert:
        raise block.reader.error(
            block.path,
            "exactly one of cert or cert_file must be configured when a client key is configured",
            block.node,
        )
    return cfg


_HTTP_CLIENT_KEYS = (
    "basic_auth",
    "authorization",
    "oauth2",
    "bearer_token",
    "bearer_token_file",
    "tls_config",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "follow_redirects",
    "enable_http2",
    "http_headers",
)


def _read_http_client(block: _Mapping) -> dict[str, Any]:
    """Prometheus' HTTPClientConfig, inlined in a client or discovery block: the settings as keyword arguments."""
    reader = block.reader
    out: dict[str, Any] = {}
    basic_node = block.take("basic_auth")
    if basic_node is not None:
        auth = reader.mapping(basic_node, block.sub("basic_auth"))
        out["basic_auth"] = BasicAuth(
            username=auth.str("username"),
            username_file=auth.str("username_file"),
            password=auth.str("password"),
            password_file=auth.str("password_file"),
        )
        auth.ignore(("username_ref", "password_ref"), "secret-manager references are not supported")
        auth.finish()
        if out["basic_auth"].username and out["basic_auth"].username_file:
            raise reader.error(auth.path, "at most one of basic_auth username & username_file must be configured")
        if out["basic_auth"].password and out["basic_auth"].password_file:
            raise reader.error(auth.path, "at most one of basic_auth password & password_file must be configured")
    authz_node = block.take("authorization")
    if authz_node is not None:
        authz = reader.mapping(authz_node, block.sub("authorization"))
        out["authorization"] = Authorization(
            type=authz.str("type").strip() or "Bearer",
            credentials=authz.str("credentials"),
            credentials_file=authz.str("credentials_file"),
        )
        authz.ignore(("credentials_ref",), "secret-manager references are not supported")
        authz.finish()
        if out["authorization"].type.lower() == "basic":
            raise reader.error(authz.path, 'authorization type cannot be set to "basic", use "basic_auth" instead')
        if out["authorization"].credentials and out["authorization"].credentials_file:
            raise reader.error(
                authz.path, "at most one of authorization credentials & credentials_file must be configured"
            )
    out["bearer_token"] = block.str("bearer_token")
    out["bearer_token_file"] = block.str("bearer_token_file")
    tls = _read_tls(block.block("tls_config"))
    out["tls_config"] = None if tls == TLSConfig() else tls
    out["proxy_url"] = block.str("proxy_url")
    out["follow_redirects"] = block.bool("follow_redirects", True)
    out["enable_http2"] = block.bool("enable_http2", True)
    oauth2 = "oauth2" in block
    block.ignore(("oauth2",), "OAuth 2.0 is not supported; requests are sent without it")
    block.ignore(("no_proxy", "proxy_from_environment", "proxy_connect_header", "http_headers"), "not supported")

    # Prometheus' HTTPClientConfig.Validate.
    path = block.path
    if out["bearer_token"] and out["bearer_token_file"]:
        raise reader.error(path, "at most one of bearer_token & bearer_token_file must be configured", block.node)
    bearer = bool(out["bearer_token"] or out["bearer_token_file"])
    if ("basic_auth" in out or oauth2) and bearer:
        raise reader.error(
            path, "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured", block.node
        )
    if "authorization" in out and bearer:
        raise reader.error(path, "authorization is not compatible with bearer_token & bearer_token_file", block.node)
    if "authorization" in out and ("basic_auth" in out or oauth2):
        raise reader.error(path, "at most one of basic_auth, oauth2 & authorization must be configured", block.node)
    return out


def _read_client(reader: _Reader, node: Node, path: str, require_url: bool = True) -> ClientConfig:
    block = reader.mapping(node, path)
    backoff = block.block("backoff_config")
    cfg = ClientConfig(
        url=block.str("url"),
        name=block.str("name"),
        tenant_id=block.str("tenant_id"),
        batchwait=block.duration("batchwait", 1.0),
        batchsize=block.size("batchsize", 1024 * 1024),
        timeout=block.duration("timeout", 10.0),
        backoff_config=BackoffConfig(
            min_period=backoff.duration("min_period", 0.5),
            max_period=backoff.duration("max_period", 300.0),
            max_retries=backoff.int("max_retries", 10),
        ),
        external_labels=block.labels("external_labels"),
        headers=block.string_map("headers"),
        drop_rate_limited_batches=block.bool("drop_rate_limited_batches"),
        **_read_http_client(block),
    )
    if cfg.tls_config is None:
        cfg.tls_config = TLSConfig()
    backoff.finish()
    block.finish()
    if not cfg.url and not require_url:
        return cfg
    if not cfg.url:
        raise reader.error(block.sub("url"), "required: the push URL, e.g. http://loki:3100/loki/api/v1/push", node)
    parts = urlsplit(cfg.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise reader.error(block.sub("url"), f"expected an http:// or https:// URL, got {cfg.url!r}", node)
    return cfg


def _read_static(reader: _Reader, node: Node, path: str) -> StaticConfig:
    block = reader.mapping(node, path)
    cfg = StaticConfig(targets=block.strings("targets"), labels=block.labels("labels"))
    block.finish()
    return cfg


def _read_file_sd(reader: _Reader, node: Node, path: str) -> FileSDConfig:
    block = reader.mapping(node, path)
    cfg = FileSDConfig(files=block.strings("files"), refresh_interval=block.duration("refresh_interval", 300.0))
    block.finish()
    if not cfg.files:
        raise reader.error(
            block.sub("files"), "file service discovery config must contain at least one path name", node
        )
    for name in cfg.files:
        if not _FILE_SD_NAME.match(name):
            raise reader.error(
                block.sub("files"),
                f"path name {name!r} is not valid for file discovery (it must end in .json, .yml or .yaml, "
                "and only its last part may hold a '*')",
                node,
            )
    return cfg


def _read_kubernetes(reader: _Reader, node: Node, path: str) -> KubernetesSDConfig:
    block = reader.mapping(node, path)
    role = block.str("role")
    namespaces = block.block("namespaces")
    ns = KubernetesNamespaces(names=namespaces.strings("names"), own_namespace=namespaces.bool("own_namespace"))
    namespaces.finish()
    selectors: list[KubernetesSelector] = []
    for sel_node, sel_path in block.items("selectors"):
        sel = reader.mapping(sel_node, sel_path)
        selectors.append(KubernetesSelector(role=sel.str("role"), label=sel.str("label"), field=sel.str("field")))
        sel.finish()
    attach = block.block("attach_metadata")
    metadata = KubernetesAttachMetadata(
        node=attach.bool("node"),
        namespace=attach.bool("namespace"),
        deployment=attach.bool("deployment"),
        job=attach.bool("job"),
        cronjob=attach.bool("cronjob"),
    )
    attach.finish()
    http = _read_http_client(block)
    cfg = KubernetesSDConfig(
        role=role,
        api_server=block.str("api_server"),
        kubeconfig_file=block.str("kubeconfig_file"),
        namespaces=ns,
        selectors=selectors,
        attach_metadata=metadata,
        **http,
    )
    block.finish()

    # Prometheus' kubernetes.SDConfig checks.
    def fail(problem: str, key: str | None = None) -> ConfigError:
        return reader.error(block.sub(key) if key else path, problem, block.values.get(key or "", node))

    if not role:
        raise fail("role missing (one of: pod, service, endpoints, endpointslice, node, ingress)", "role")
    if role not in _KUBERNETES_ROLES:
        raise fail(f"unknown Kubernetes SD role {role!r} (one of: {', '.join(_KUBERNETES_ROLES)})", "role")
    custom_http = (
        cfg.basic_auth is not None
        or cfg.authorization is not None
        or cfg.bearer_token
        or cfg.bearer_token_file
        or cfg.tls_config is not None
        or cfg.proxy_url
        or not cfg.follow_redirects
        or not cfg.enable_http2
        or "oauth2" in block
    )
    if cfg.api_server and cfg.kubeconfig_file:
        raise fail("cannot use 'kubeconfig_file' and 'api_server' simultaneously")
    if cfg.kubeconfig_file and custom_http:
        raise fail("cannot use a custom HTTP client configuration together with 'kubeconfig_file'")
    if not cfg.api_server and custom_http:
        raise fail("to use custom HTTP client configuration please provide the 'api_server' URL explicitly")
    if cfg.api_server and ns.own_namespace:
        raise fail("cannot use 'api_server' and 'namespaces.own_namespace' simultaneously")
    if cfg.kubeconfig_file and ns.own_namespace:
        raise fail("cannot use 'kubeconfig_file' and 'namespaces.own_namespace' simultaneously")
    seen: set[str] = set()
    for i, sel in enumerate(selectors):
        if sel.role in seen:
            raise fail(f"duplicated selector role: {sel.role}", f"selectors[{i}]")
        seen.add(sel.role)
        if sel.role not in _SELECTOR_ROLES[role]:
            raise fail(f"{role} role supports only {', '.join(_SELECTOR_ROLES[role])} selectors", f"selectors[{i}]")
    return cfg


def _read_syslog(reader: _Reader, node: Node, path: str) -> SyslogConfig:
    block = reader.mapping(node, path)
    tls_node = block.take("tls_config")
    cfg = SyslogConfig(
        listen_address=block.str("listen_address"),
        listen_protocol=block.one_of("listen_protocol", "tcp", ("tcp", "udp")),
        idle_timeout=block.duration("idle_timeout", 120.0),
        label_structured_data=block.bool("label_structured_data"),
        labels=block.labels("labels"),
        use_incoming_timestamp=block.bool("use_incoming_timestamp"),
        use_rfc5424_message=block.bool("use_rfc5424_message"),
        syslog_format=block.one_of("syslog_format", "rfc5424", ("rfc5424", "rfc3164")),
        max_message_length=block.int("max_message_length", 8192),
        tls_config=None if tls_node is None else _read_tls(reader.mapping(tls_node, block.sub("tls_config"))),
    )
    block.finish()
    # Promtail substitutes its defaults for zero values when the target starts.
    if cfg.idle_timeout == 0:
        cfg.idle_timeout = 120.0
    if cfg.max_message_length == 0:
        cfg.max_message_length = 8192
    return cfg


def _read_push(reader: _Reader, node: Node, path: str) -> PushAPIConfig:
    block = reader.mapping(node, path)
    cfg = PushAPIConfig(
        server=_read_server(block.block("server"), ServerConfig(http_listen_address="", http_listen_port=0), False),
        labels=block.labels("labels"),
        use_incoming_timestamp=block.bool("use_incoming_timestamp"),
        max_send_msg_size=block.int("max_send_msg_size", 0) or 100 << 20,
    )
    block.finish()
    return cfg


def _read_journal(reader: _Reader, node: Node, path: str) -> JournalConfig:
    block = reader.mapping(node, path)
    cfg = JournalConfig(
        max_age=block.duration("max_age", 7 * 3600.0),
        json=block.bool("json"),
        labels=block.labels("labels"),
        path=block.str("path"),
        matches=block.str("matches"),
    )
    block.finish()
    return cfg


def _read_scrape(reader: _Reader, node: Node, path: str) -> ScrapeConfig:
    block = reader.mapping(node, path)
    job_name = block.str("job_name")
    if not job_name:
        raise reader.error(block.sub("job_name"), "job_name is empty", node)
    stages_node = block.take("pipeline_stages")
    if stages_node is not None and not isinstance(stages_node, SequenceNode):
        raise reader.error(block.sub("pipeline_stages"), f"expected a list, got {_describe(stages_node)}", stages_node)
    cfg = ScrapeConfig(
        job_name=job_name,
        pipeline_stages=reader.plain(stages_node, block.sub("pipeline_stages")) or [],
        static_configs=[_read_static(reader, n, p) for n, p in block.items("static_configs")],
        file_sd_configs=[_read_file_sd(reader, n, p) for n, p in block.items("file_sd_configs")],
        kubernetes_sd_configs=[_read_kubernetes(reader, n, p) for n, p in block.items("kubernetes_sd_configs")],
    )
    relabel_node = block.take("relabel_configs")
    relabel_path = block.sub("relabel_configs")
    try:
        cfg.relabel_configs = parse_relabel_configs(reader.texts(relabel_node, relabel_path), relabel_path)
    except RelabelError as exc:
        rule_node = relabel_node
        if isinstance(relabel_node, SequenceNode) and exc.index is not None and exc.index < len(relabel_node.value):
            rule_node = relabel_node.value[exc.index]
        err_path = (
            relabel_path + (f"[{exc.index}]" if exc.index is not None else "") + (f".{exc.key}" if exc.key else "")
        )
        raise reader.error(err_path, exc.problem, rule_node) from None
    for key, read in (("syslog", _read_syslog), ("loki_push_api", _read_push), ("journal", _read_journal)):
        source_node = block.take(key)
        if source_node is not None:
            setattr(cfg, key, read(reader, source_node, block.sub(key)))
    cfg.encoding = block.str("encoding")
    if cfg.encoding:
        reader.notes.append(f"{block.sub('encoding')}: ignored; files are read as UTF-8")
    for key in (*_UNSUPPORTED_SOURCES, *_UNSUPPORTED_DISCOVERY, "decompression"):
        value = block.take(key)
        if value is not None:
            cfg.unsupported[key] = reader.plain(value, block.sub(key))
            reader.notes.append(f"{block.sub(key)}: not supported by the loglake agent; ignored")
    block.finish()

    # The source Promtail's target manager would pick, in its order.
    discovery_given = any(k in block for k in ("static_configs", "file_sd_configs", "kubernetes_sd_configs"))
    if discovery_given or any(k in cfg.unsupported for k in _UNSUPPORTED_DISCOVERY):
        cfg.kind = "file"
    elif cfg.journal is not None:
        cfg.kind = "journal"
    elif cfg.syslog is not None:
        cfg.kind = "syslog"
    elif cfg.loki_push_api is not None and "gcplog" not in cfg.unsupported:
        cfg.kind = "loki_push_api"
    else:
        kinds = [k for k in _UNSUPPORTED_SOURCES if k in cfg.unsupported]
        if not kinds:
            raise reader.error(
                path,
                f"no valid target scrape config defined for {job_name!r} (give static_configs, file_sd_configs, "
                "kubernetes_sd_configs, journal, syslog or loki_push_api)",
                node,
            )
        cfg.kind = kinds[0]
    return cfg


def _read_limits(block: _Mapping) -> LimitsConfig:
    cfg = LimitsConfig(
        readline_rate=block.float("readline_rate", 10000.0),
        readline_burst=block.int("readline_burst", 10000),
        readline_rate_enabled=block.bool("readline_rate_enabled"),
        readline_rate_drop=block.bool("readline_rate_drop", True),
        max_streams=block.int("max_streams"),
        max_line_size=block.size("max_line_size", 0),
        max_line_size_truncate=block.bool("max_line_size_truncate"),
    )
    # Unknown limits are noted, not fatal: limits from newer Promtail versions must not stop the agent.
    block.ignore([k for k in block.values if k not in block.used], "unknown limit; ignored")
    return cfg


def _read_agent(reader: _Reader, root: Node | None) -> AgentConfig:
    top = reader.mapping(root, "")
    cfg = AgentConfig()

    cfg.server = _read_server(top.block("server"), ServerConfig(), True)
    positions = top.block("positions")
    cfg.positions = PositionsConfig(
        filename=positions.str("filename", "/var/log/positions.yaml"),
        sync_period=positions.duration("sync_period", 10.0),
        ignore_invalid_yaml=positions.bool("ignore_invalid_yaml"),
    )
    positions.finish()

    cfg.clients = [_read_client(reader, n, p) for n, p in top.items("clients")]
    legacy = top.take("client")
    if legacy is not None:
        # Promtail's deprecated single `client` block joins the list when it has a URL.
        client = _read_client(reader, legacy, "client", require_url=False)
        if client.url:
            cfg.clients.append(client)
        reader.notes.append("client: deprecated; use the clients list")

    cfg.scrape_configs = [_read_scrape(reader, n, p) for n, p in top.items("scrape_configs")]
    seen: dict[str, int] = {}
    for i, scrape in enumerate(cfg.scrape_configs):
        if scrape.job_name in seen:
            raise reader.error(
                f"scrape_configs[{i}].job_name", f"found multiple scrape configs with job name {scrape.job_name!r}"
            )
        seen[scrape.job_name] = i

    cfg.limits_config = _read_limits(top.block("limits_config"))
    target = top.block("target_config")
    cfg.target_config = TargetConfig(sync_period=target.duration("sync_period", 10.0), stdin=target.bool("stdin"))
    target.finish()

    global_block = top.block("global")
    watch = global_block.block("file_watch_config")
    cfg.global_config = GlobalConfig(
        FileWatchConfig(
            min_poll_frequency=watch.duration("min_poll_frequency", 0.25),
            max_poll_frequency=watch.duration("max_poll_frequency", 0.25),
        )
    )
    watch.finish()
    global_block.finish()

    top.block("options").finish()  # Promtail's options block has no settings left
    tracing = top.block("tracing")
    if tracing.bool("enabled"):
        reader.notes.append("tracing.enabled: tracing is not supported; ignored")
    tracing.finish()
    wal = top.block("wal")
    if wal.bool("enabled"):
        reader.notes.append("wal.enabled: the write-ahead log is not supported; ignored")
    wal.ignore(("dir", "cleanSegmentsOlderThan", "watchConfig"))
    wal.finish()
    top.finish()
    cfg.notes = reader.notes
    return cfg


def parse_config(text: str, expand_env: bool = False, where: str = "config") -> AgentConfig:
    """Read a Promtail YAML configuration from text; `where` (e.g. the file name) prefixes error messages."""
    if expand_env:
        try:
            text = _EnvExpander(text, os.environ).expand()
        except ConfigError as exc:
            raise ConfigError(exc.path, exc.problem, exc.line, where) from None
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError("", f"invalid YAML: {problem}", line, where) from None
        reader = _Reader(loader, where)
        try:
            return _read_agent(reader, root)
        except yaml.YAMLError as exc:  # a bad scalar met while constructing raw values
            raise ConfigError("", f"invalid YAML: {exc}", None, where) from None
    finally:
        loader.dispose()


def load_config(path: str | Path, expand_env: bool = False) -> AgentConfig:
    """Read a Promtail YAML configuration file (as `-config.file`, with `-config.expand-env` when asked)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read the configuration file: {exc.strerror or exc}", None, str(path)) from None
    return parse_config(text, expand_env=expand_env, where=str(path))


def read_file_sd(path: Path) -> list[StaticConfig]:
    """Target groups from a file_sd file (JSON, or YAML by extension), each labelled `__meta_filepath`."""
    path = Path(path)
    where = str(path)
    text = path.read_text(encoding="utf-8")
    groups: list[StaticConfig] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("", f"invalid JSON: {exc.msg}", exc.lineno, where) from None
        if data is None:
            data = []
        if not isinstance(data, list):
            raise ConfigError("", "expected a list of target groups", None, where)
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise ConfigError(f"[{i}]", "nil or non-object target group item found", None, where)
            targets = item.get("targets") or []
            labels = item.get("labels") or {}
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise ConfigError(f"[{i}].targets", "expected a list of strings", None, where)
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise ConfigError(f"[{i}].labels", "expected a mapping of label names to strings", None, where)
            if any(not k for k in labels):
                raise ConfigError(f"[{i}].labels", "label names must not be empty", None, where)
            unknown = sorted(set(item) - {"targets", "labels"})
            if unknown:
                raise ConfigError(f"[{i}]", f"unknown key {unknown[0]!r} (known here: labels, targets)", None, where)
            groups.append(StaticConfig(targets=list(targets), labels=dict(labels)))
    else:
        loader = _Loader(text)
        try:
            try:
                root = loader.get_single_node()
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                raise ConfigError(
                    "", f"invalid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None, where
                ) from None
            reader = _Reader(loader, where)
            for node, item_path in reader.items(root, ""):
                if _is_null(node):
                    raise reader.error(item_path, "nil target group item found", node)
                groups.append(_read_static(reader, node, item_path))
        finally:
            loader.dispose()
    for group in groups:
        group.labels["__meta_filepath"] = where
    return groups
