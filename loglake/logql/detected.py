"""Fields and labels worth exploring, as Loki's detected_fields and detected_labels find them.

A field is structured metadata or a label the line yields to Loki's JSON parser (or, when the line is not a JSON
object, its logfmt parser), typed by the first of Go's parsers that accepts a value: int, float, boolean,
duration, bytes, else string. A stream label is worth exploring unless every value looks like an id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loglake.gonum import humanize_bytes
from loglake.logql.lexer import DurationError, go_parse_float, parse_bytes, parse_go_duration
from loglake.logql.parsers import iter_logfmt
from loglake.model import LabelSet

EXTRACTED = "_extracted"
PARSER_JSON = "json"
PARSER_LOGFMT = "logfmt"
ERROR_LABELS = frozenset({"__error__", "__error_details__", "__preserve_error__"})
STATIC_LABELS = frozenset({"cluster", "namespace", "instance", "pod"})
"""Labels detected_labels keeps even when every value looks like an id."""

# ---- Go's text rules ----------------------------------------------------------------------------------------

# unicode.IsSpace: the ASCII spaces, NEL, NBSP and the Unicode space separators.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_key(parts: Sequence[str]) -> str:
    """Return the label name Loki's parsers make of a key path: parts joined by `_`, other characters `_`.

    Blank parts are skipped and a name starting with a digit gets a leading `_`.
    """
    out = ""
    for part in parts:
        trimmed = part.strip(_GO_SPACE)
        if not trimmed:
            continue
        if out:
            out += "_"
        elif trimmed[0].isascii() and trimmed[0].isdigit():
            out = "_"
        out += _NOT_LABEL_CHAR.sub("_", trimmed)
    return out


# ---- logfmt -------------------------------------------------------------------------------------------------


def parse_logfmt(line: str, stream_names: frozenset[str] | set[str] = frozenset()) -> dict[str, str]:
    """Return the labels Loki's (non-strict) logfmt parser takes from a line; empty values are left out."""
    out: dict[str, str] = {}
    for key, value in iter_logfmt(line):
        name = sanitize_key([key])
        if not name or not value:
            continue
        if name in stream_names:
            name += EXTRACTED
        out[name] = value.replace("\ufffd", " ")
    return out


# ---- JSON ---------------------------------------------------------------------------------------------------


class _Object(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs in order, duplicates kept."""


class _Number(str):
    """A JSON number as written."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


_JSON = json.JSONDecoder(
    object_pairs_hook=_Object, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant, strict=False
)
_LEADING_WS = re.compile(r"[ \t\n\r]*")


def parse_json(
    line: str, stream_names: frozenset[str] | set[str] = frozenset()
) -> tuple[dict[str, str], dict[str, list[str]]] | None:
    """Return the labels Loki's JSON parser takes from a line and each one's JSON path; None if not an object.

    Nested keys are joined with `_`; arrays and nulls are skipped; a name taken by a stream label gets `_extracted`.
    """
    start = _LEADING_WS.match(line).end()  # type: ignore[union-attr]
    if start >= len(line) or line[start] != "{":
        return None
    try:
        obj, _ = _JSON.raw_decode(line, start)
    except (ValueError, RecursionError):
        return None
    labels: dict[str, str] = {}
    paths: dict[str, list[str]] = {}
    _walk_json(obj, [], labels, paths, stream_names)
    return labels, paths


def _walk_json(
    obj: _Object,
    prefix: list[str],
    labels: dict[str, str],
    paths: dict[str, list[str]],
    stream_names: frozenset[str] | set[str],
) -> None:
    for key, value in obj:
        if isinstance(value, _Object):
            _walk_json(value, [*prefix, key], labels, paths, stream_names)
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = _valid_text(value)
        else:
            continue  # arrays and nulls
        parts = [*prefix, key]
        name = sanitize_key(parts)
        if not name:
            continue
        if name in stream_names:
            # Loki suffixes the sanitized name of a top-level key, but the raw last key of a nested one.
            if prefix:
                parts[-1] = key + EXTRACTED
                name = sanitize_key(parts)
            else:
                name += EXTRACTED
        labels[name] = text
        paths[name] = [key] if not prefix else [p.removesuffix(EXTRACTED) for p in parts]


def _valid_text(value: str) -> str:
    """Replace invalid characters (U+FFFD, lone surrogates from `\\ud800` escapes) with a space, as Loki does."""
    try:
        value.encode()
    except UnicodeEncodeError:
        value = "".join(" " if 0xD800 <= ord(c) < 0xE000 else c for c in value)
    return str(value).replace("\ufffd", " ")


@dataclass
class LineFields:
    """What one line yields: the parser that read it and its labels (with JSON paths for JSON)."""

    parser: str
    labels: dict[str, str]
    paths: dict[str, list[str]] = field(default_factory=dict)


def parse_line(line: str, stream_names: frozenset[str] | set[str] = frozenset()) -> LineFields:
    """Parse a line as detected_fields does: as JSON when it is a JSON object, else as logfmt."""
    parsed = parse_json(line, stream_names)
    if parsed is not None:
        return LineFields(PARSER_JSON, parsed[0], parsed[1])
    return LineFields(PARSER_LOGFMT, parse_logfmt(line, stream_names))


# ---- types ----------------------------------------------------------------------------------------------------

_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})


def determine_type(value: str) -> str:
    """Return a value's detected type: int, float, boolean, duration, bytes or string (Go's parsers in order)."""
    if _GO_INT.fullmatch(value) and -(2**63) <= int(value) < 2**63:
        return "int"
    try:
        go_parse_float(value)
        return "float"
    except ValueError:
        pass
    if value in _GO_BOOLS:
        return "boolean"
    try:
        parse_go_duration(value)
        return "duration"
    except DurationError:
        pass
    try:
        parse_bytes(value)
        return "bytes"
    except ValueError:
        pass
    return "string"


_BYTE_SUFFIXES = ("b", "kib", "kb", "mib", "mb", "gib", "gb", "tib", "tb", "pib", "pb", "eib", "eb")
_BYTE_SUFFIXES += ("ki", "k", "mi", "m", "gi", "g", "ti", "t", "pi", "p", "ei", "e")


def _value_for_query(value: str) -> str:
    """Byte sizes written with a unit come back in one canonical form, usable in a query as is."""
    if value.lower().endswith(_BYTE_SUFFIXES):
        try:
            return humanize_bytes(parse_bytes(value))
        except ValueError:
            pass
    return value


# ---- detection over entries -------------------------------------------------------------------------------------


@dataclass
class SampledEntry:
    """One selected log entry with its labels by category: stream, structured metadata, query-parsed."""

    stream: LabelSet
    line: str
    metadata: Sequence[tuple[str, str]] = ()
    parsed: Mapping[str, str] = field(default_factory=dict)


@dataclass
class DetectedField:
    """A field found in the entries: its name, detected type, distinct values, parsers and JSON path."""

    label: str
    type: str = "string"
    values: set[str] = field(default_factory=set)
    parsers: list[str] = field(default_factory=list)
    json_path: list[str] | None = None

    @property
    def cardinality(self) -> int:
        """The number of distinct values seen."""
        return len(self.values)

    def to_json(self) -> dict[str, Any]:
        """Return Loki's JSON for one field (`parsers` is null for structured metadata)."""
        out: dict[str, Any] = {"label": self.label, "type": self.type}
        if self.values:
            out["cardinality"] = len(self.values)
        out["parsers"] = list(self.parsers) or None
        if self.json_path:
            out["jsonPath"] = list(self.json_path)
        return out


def _metadata_values(entry: SampledEntry) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in entry.metadata:
        vals = out.setdefault(name, [])
        if value not in vals:
            vals.append(value)
    return out


def _entry_fields(entry: SampledEntry) -> tuple[dict[str, list[str]], str, dict[str, list[str]]]:
    """Return the entry's parsed fields (query-parsed values, then the line's), the line's parser and JSON paths."""
    stream_names = {n for n, _ in entry.stream} - set(entry.parsed)
    line = parse_line(entry.line, stream_names)
    fields: dict[str, list[str]] = {}
    for name, value in entry.parsed.items():
        if name not in ERROR_LABELS:
            fields[name] = [value]
    for name, value in line.labels.items():
        if name in ERROR_LABELS:
            continue
        vals = fields.setdefault(name, [])
        if value not in vals:
            vals.append(value)
    return fields, line.parser, line.paths


def detect_fields(entries: Iterable[SampledEntry], limit: int) -> list[DetectedField]:
    """Return the fields of the entries, at most `limit` (the first found), sorted by name.

    Entries come in Loki's order (streams by label text, each newest first): a field's type is the one of its
    value in the last entry that has it.
    """
    found: dict[str, DetectedField] = {}

    def get(name: str) -> DetectedField | None:
        f = found.get(name)
        if f is None and len(found) < limit:
            f = found[name] = DetectedField(name)
        return f

    for entry in entries:
        for name, vals in _metadata_values(entry).items():
            f = get(name)
            if f is not None:
                f.type = determine_type(vals[0])
                f.values.update(vals)
        fields, parser, paths = _entry_fields(entry)
        for name, vals in fields.items():
            f = get(name)
            if f is None:
                continue
            if parser not in f.parsers:
                f.parsers.append(parser)
            if parser == PARSER_JSON:
                f.json_path = paths.get(name)
            f.type = determine_type(vals[0])
            f.values.update(vals)
    return sorted(found.values(), key=lambda f: f.label)


def detect_field_values(entries: Iterable[SampledEntry], name: str, limit: int) -> list[str]:
    """Return the distinct values of one field in the entries (stopping once `limit` are found), sorted."""
    values: dict[str, None] = {}
    for entry in entries:
        if len(values) >= limit:
            break
        for n, v in entry.metadata:
            if n == name:
                values[v] = None
        fields, _, _ = _entry_fields(entry)
        for v in fields.get(name, ()):
            values[_value_for_query(v)] = None
    return sorted(values)


@dataclass(frozen=True)
class DetectedLabel:
    """A stream label worth exploring and its number of distinct values."""

    label: str
    cardinality: int

    def to_json(self) -> dict[str, Any]:
        """Return Loki's JSON for one label."""
        return {"label": self.label, "cardinality": self.cardinality}


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_HEX = re.compile(r"[0-9a-fA-F]{32}")


def is_uuid(value: str) -> bool:
    """Say whether Go's uuid.Parse accepts the value (plain, 32 hex digits, `urn:uuid:` or braces)."""
    if not value.isascii():
        return False
    n = len(value)
    if n == 32:
        return bool(_UUID_HEX.fullmatch(value))
    if n == 45:
        if value[:9].lower() != "urn:uuid:":
            return False
        value = value[9:]
    elif n == 38:
        value = value[1:37]
    elif n != 36:
        return False
    return bool(_UUID.fullmatch(value))


def _is_id(value: str) -> bool:
    try:
        go_parse_float(value)
        return True
    except ValueError:
        return is_uuid(value)


def is_id_label(values: Sequence[str] | set[str]) -> bool:
    """Say whether a label's values make it uninteresting: none at all, or all numbers or UUIDs.

    One or two values that are only `0` and `1` look like a flag, not an id.
    """
    if not values:
        return True
    if len(values) <= 2 and all(v in ("0", "1") for v in values):
        return False
    return all(_is_id(v) for v in values)


def detect_labels(streams: Iterable[LabelSet]) -> list[DetectedLabel]:
    """Return the stream labels worth exploring with their distinct value counts, sorted by name."""
    values: dict[str, set[str]] = {}
    for labels in streams:
        for name, value in labels:
            values.setdefault(name, set()).add(value)
    return [
        DetectedLabel(name, len(vals))
        for name, vals in sorted(values.items())
        if (name in STATIC_LABELS and vals) or not is_id_label(vals)
    ]
