"""Loki's parser stages (`json`, `logfmt`, `unpack`, `pattern`, `regexp`) over a column of log lines.

Each function reads every line of a batch at once and returns the labels it extracts as columns, with the
values, label names, error labels and error texts Loki 3.7 gives for the same lines (grafana/jsonparser's
lenient scanning, Loki's logfmt decoder, its parser hints). Lines that a fast path (orjson, str methods, one
Rust regex per hinted logfmt key) could read differently from Loki go through ports of those scanners.

Names are returned raw (sanitized as Loki does, without the `_extracted` rename for clashes with stream
labels or structured metadata): the caller knows each row's base labels and renames per row.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loglake.logql.linefilter import parse_pattern as _split_pattern
from loglake.logql.regex import Node, Op, capture_names, parse_regex, to_rust

__all__ = [
    "ERR_JSON",
    "ERR_LOGFMT",
    "PRESERVE_ERROR",
    "Extraction",
    "Wanted",
    "parse_json",
    "parse_json_fields",
    "parse_logfmt",
    "parse_logfmt_fields",
    "parse_pattern",
    "parse_regexp",
    "parse_unpack",
    "sanitize_label_key",
]

ERR_JSON = "JSONParserErr"
ERR_LOGFMT = "LogfmtParserErr"
ERROR_LABEL = "__error__"
PRESERVE_ERROR = "__preserve_error__"
PACKED_ENTRY_KEY = "_entry"

_STR = pa.string()


# ---- public types ---------------------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class Wanted:
    """The label names later stages read (Loki's parser hints): parsers may leave every other label out.

    An empty set is Loki's "no labels" hint: the json, logfmt and unpack stages then do nothing at all
    (no labels, no error, unpack keeps the line).
    """

    names: frozenset[str]

    def __init__(self, names: Iterable[str]) -> None:
        object.__setattr__(self, "names", frozenset(names))

    def prefix_ok(self, prefix: str) -> bool:
        """Say whether some wanted name starts with `prefix` (the JSON parser then enters that object)."""
        return any(name.startswith(prefix) for name in self.names)


@dataclass
class Extraction:
    """What a parser stage found in each line: label columns, error columns and (unpack) new lines."""

    labels: dict[str, pa.Array]
    """Label name -> pa.string() array of length n; null where that row has no such label."""
    error: pa.Array | None = None
    """`__error__` per row (pa.string(), e.g. "JSONParserErr"); null where the row had no error."""
    error_details: pa.Array | None = None
    """`__error_details__` per row (pa.string()); null where none was set."""
    line: pa.Array | None = None
    """unpack only: the new line (the `_entry` value) where the row had one, else null."""


# ---- label names ----------------------------------------------------------------------------------------

# Go's unicode.IsSpace, which strings.TrimSpace uses (Python's str.strip() also strips \x1c-\x1f).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_]")


@lru_cache(maxsize=1 << 16)
def sanitize_label_key(key: str) -> str:
    """Return the label name Loki makes of a parsed key ("" means the key is skipped)."""
    key = key.strip(_GO_SPACE)
    if not key:
        return ""
    if "0" <= key[0] <= "9":
        key = "_" + key
    return _NOT_LABEL_CHAR.sub("_", key)


@lru_cache(maxsize=1 << 16)
def _join_key(prefix: str, key: str) -> str:
    """Name of a nested JSON key: blank parts are dropped, the rest sanitized and joined with "_"."""
    trimmed = key.strip(_GO_SPACE)
    if not trimmed:
        return prefix
    part = _NOT_LABEL_CHAR.sub("_", trimmed)
    if prefix:
        return prefix + "_" + part
    return "_" + part if "0" <= trimmed[0] <= "9" else part


# ---- columns --------------------------------------------------------------------------------------------


def _texts(lines: pa.Array | pa.ChunkedArray) -> list[str]:
    """The lines as Python strings (a null line reads as an empty one)."""
    values = lines.to_pylist()
    if lines.null_count:
        return [v if v is not None else "" for v in values]
    return values


def _scatter(n: int, idx: np.ndarray, values: pa.Array) -> pa.Array:
    """Spread `values` (one per index in `idx`) over an array of length n, null elsewhere."""
    pos = np.full(n, -1, dtype=np.int64)
    pos[idx] = np.arange(len(idx), dtype=np.int64)
    return values.take(pa.array(pos, mask=pos < 0))


def _no_fffd(values: pa.Array) -> pa.Array:
    # Loki replaces U+FFFD in parsed string values with a space (Prometheus rejects it).
    if len(values) and pc.any(pc.match_substring(values, "\ufffd")).as_py():
        return pc.replace_substring(values, "\ufffd", " ")
    return values


class _Acc:
    """Collects labels and errors row by row or as column pieces, then builds the Extraction."""

    def __init__(self, n: int, wanted: Wanted | None = None) -> None:
        self.n = n
        self.pieces: dict[str, list[tuple[np.ndarray, pa.Array]]] = {}
        self.rows: dict[str, tuple[list[int], list[str]]] = {}
        self.err_rows: list[int] = []
        self.err_vals: list[str] = []
        self.det_vals: list[str | None] = []
        # Loki adds __preserve_error__ when the query's hints ask for __error__.
        self.preserve = wanted is not None and ERROR_LABEL in wanted.names

    def add(self, i: int, labels: dict[str, str]) -> None:
        """Record the labels of row i."""
        rows = self.rows
        for name, value in labels.items():
            got = rows.get(name)
            if got is None:
                rows[name] = ([i], [value])
            else:
                got[0].append(i)
                got[1].append(value)

    def piece(self, name: str, idx: np.ndarray, values: pa.Array) -> None:
        """Record label `name` for the rows `idx` (null values: the row has no such label)."""
        self.pieces.setdefault(name, []).append((idx, values))

    def error(self, i: int, err: str, details: str | None) -> None:
        """Record an error on row i."""
        self.err_rows.append(i)
        self.err_vals.append(err)
        self.det_vals.append(details)

    def build(self, line: pa.Array | None = None) -> Extraction:
        """Assemble the collected pieces into an Extraction."""
        n = self.n
        labels: dict[str, pa.Array] = {}
        for name in list(self.pieces) + [k for k in self.rows if k not in self.pieces]:
            parts = list(self.pieces.get(name, ()))
            got = self.rows.get(name)
            if got is not None:
                parts.append((np.asarray(got[0], dtype=np.int64), pa.array(got[1], _STR)))
            if len(parts) == 1:
                idx, values = parts[0]
            else:
                idx = np.concatenate([p[0] for p in parts])
                values = pa.concat_arrays([p[1] for p in parts])
            labels[name] = _scatter(n, idx, values)
        error = details = None
        if self.err_rows:
            idx = np.asarray(self.err_rows, dtype=np.int64)
            error = _scatter(n, idx, pa.array(self.err_vals, _STR))
            if any(d is not None for d in self.det_vals):
                details = _scatter(n, idx, pa.array(self.det_vals, _STR))
            if self.preserve:
                labels[PRESERVE_ERROR] = _scatter(n, idx, pa.array(["true"] * len(idx), _STR))
        return Extraction(labels, error, details, line)


# ---- grafana/jsonparser, ported (offsets into a str; structure characters are ASCII) -----------------------

MALFORMED_JSON = "Malformed JSON error"
MALFORMED_STRING = "Value is string, but can't find closing '\"' symbol"
MALFORMED_ARRAY = "Value is array, but can't find closing ']' symbol"
MALFORMED_OBJECT = "Value looks like object, but can't find closing '}' symbol"
UNKNOWN_VALUE_TYPE = "Unknown value type"
MALFORMED_STRING_ESCAPE = "Encountered an invalid escape sequence in a string"
UNEXPECTED_JSON_OBJECT = "expecting json object(6), but it is not"

# jsonparser's value types.
NOT_EXIST, STRING, NUMBER, OBJECT, ARRAY, BOOLEAN, NULL, UNKNOWN = range(8)

_NON_WS = re.compile(r"[^ \n\r\t]")
_TOKEN_END = re.compile(r"[ \n\r\t,}\]]")
_OBJECT_CHARS = re.compile(r'[{}"]')
_ARRAY_CHARS = re.compile(r'[\[\]"]')
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")


def _next_token(s: str, i: int, end: int) -> int:
    m = _NON_WS.search(s, i, end)
    return m.start() if m else -1


def _string_end(s: str, i: int, end: int) -> tuple[int, bool]:
    """Position after the quote closing a string whose content starts at i, and whether it has a backslash."""
    j = i
    while True:
        q = s.find('"', j, end)
        if q < 0:
            return -1, False
        k = q - 1
        while k >= i and s[k] == "\\":
            k -= 1
        if (q - 1 - k) % 2 == 0:
            return q + 1, s.find("\\", i, q) >= 0
        j = q + 1


def _block_end(s: str, i: int, end: int, close: str) -> int:
    """Position after the bracket matching the one at i (strings skipped), or -1."""
    pattern = _OBJECT_CHARS if close == "}" else _ARRAY_CHARS
    level = 0
    j = i
    while True:
        m = pattern.search(s, j, end)
        if m is None:
            return -1
        k = m.start()
        c = s[k]
        if c == '"':
            j, _ = _string_end(s, k + 1, end)
            if j < 0:
                return -1
        elif c == close:
            level -= 1
            if level == 0:
                return k + 1
            j = k + 1
        else:
            level += 1
            j = k + 1


def _get_type(s: str, off: int, end: int) -> tuple[int, int, int, str | None, int]:
    """jsonparser's getType at s[off]: (value start, value end, type, error, offset after the value)."""
    c = s[off]
    if c == '"':
        after, _ = _string_end(s, off + 1, end)
        if after < 0:
            return off, off, STRING, MALFORMED_STRING, off
        return off + 1, after - 1, STRING, None, after
    if c == "[":
        after = _block_end(s, off, end, "]")
        if after < 0:
            return off, off, ARRAY, MALFORMED_ARRAY, off
        return off, after, ARRAY, None, after
    if c == "{":
        after = _block_end(s, off, end, "}")
        if after < 0:
            return off, off, OBJECT, MALFORMED_OBJECT, off
        return off, after, OBJECT, None, after
    m = _TOKEN_END.search(s, off, end)
    after = m.start() if m else end
    value = s[off:after]
    if c in "tf":
        if value not in ("true", "false"):
            return off, off, UNKNOWN, UNKNOWN_VALUE_TYPE, off
        kind = BOOLEAN
    elif c in "un":
        if value != "null":
            return off, off, UNKNOWN, UNKNOWN_VALUE_TYPE, off
        kind = NULL
    elif c in "0123456789-":
        kind = NUMBER
    else:
        return off, off, UNKNOWN, UNKNOWN_VALUE_TYPE, off
    return off, after, kind, None, after


def _get(data: str) -> tuple[str | None, int, int, str | None]:
    """jsonparser.Get without keys: the first value of `data` (strings without their quotes)."""
    off = _next_token(data, 0, len(data))
    if off < 0:
        return None, NOT_EXIST, -1, MALFORMED_JSON
    start, stop, kind, err, after = _get_type(data, off, len(data))
    if err is not None:
        return None, kind, off, err
    return data[start:stop], kind, after, None


def _unicode_escape(s: str, i: int) -> tuple[str, int]:
    """Decode the \\uXXXX escape at s[i] (a surrogate pair takes two): (text, length), length -1 if invalid."""
    if len(s) - i < 6 or not _HEX4.fullmatch(s, i + 2, i + 6):
        return "", -1
    r = int(s[i + 2 : i + 6], 16)
    if r <= 0xFFFF and not 0xD800 <= r <= 0xDFFF:
        return chr(r), 6
    # jsonparser does not check that the second escape starts with \u.
    if len(s) - i < 12 or not _HEX4.fullmatch(s, i + 8, i + 12):
        return "", -1
    r2 = int(s[i + 8 : i + 12], 16)
    if r2 < 0xDC00:
        return "", -1
    code = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00)
    return (chr(code) if code <= 0x10FFFF else "\ufffd"), 12


def _unescape(s: str) -> str | None:
    """jsonparser.Unescape: the string with its escapes decoded, or None if one is invalid."""
    i = s.find("\\")
    if i < 0:
        return s
    out = [s[:i]]
    n = len(s)
    while True:
        if i + 1 >= n:
            return None
        e = s[i + 1]
        simple = _SIMPLE_ESCAPES.get(e)
        if simple is not None:
            out.append(simple)
            i += 2
        elif e == "u":
            text, length = _unicode_escape(s, i)
            if length < 0:
                return None
            out.append(text)
            i += length
        else:
            return None
        j = s.find("\\", i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j])
        i = j


def _json_string_value(raw: str) -> str:
    """Loki's unescapeJSONString: decoded text, "" if an escape is invalid, U+FFFD made a space."""
    value = _unescape(raw)
    if value is None:
        return ""
    if "\ufffd" in value:
        value = value.replace("\ufffd", " ")
    return value


def _json_exact(s: str, wanted: Wanted | None) -> tuple[dict[str, str], str | None]:
    """Loki's `| json` on one line (ObjectEach with its callback): labels in order set, error text or None."""
    labels: dict[str, str] = {}
    end = len(s)
    off = _next_token(s, 0, end)
    if off < 0 or s[off] != "{":
        return labels, MALFORMED_OBJECT
    off = _next_token(s, off + 1, end)
    if off < 0:
        return labels, MALFORMED_JSON
    names = wanted.names if wanted is not None else None
    need = len(names) if names else 0
    found = 0
    stack: list[tuple[int, str, int]] = []  # (end, prefix, offset after the object) of enclosing objects
    prefix = ""
    expect_key = True
    while True:
        closed = False
        if expect_key:
            c = s[off] if off < end else ""
            if c == "}":
                closed = True
            elif c != '"':
                return labels, MALFORMED_OBJECT
            else:
                after, escaped = _string_end(s, off + 1, end)
                if after < 0:
                    return labels, MALFORMED_JSON
                raw_key = s[off + 1 : after - 1]
                key = _unescape(raw_key) if escaped else raw_key
                if key is None:
                    return labels, MALFORMED_STRING_ESCAPE
                off = _next_token(s, after, end)
                if off < 0 or s[off] != ":":
                    return labels, MALFORMED_JSON
                off = _next_token(s, off + 1, end)
                if off < 0:
                    return labels, MALFORMED_JSON
                start, stop, kind, err, after = _get_type(s, off, end)
                if err is not None:
                    return labels, err
                if kind == OBJECT:
                    name = _join_key(prefix, key)
                    if wanted is None or wanted.prefix_ok(name):
                        stack.append((end, prefix, after))
                        end, prefix = stop, name
                        off = _next_token(s, start + 1, end)
                        continue
                else:
                    if kind in (STRING, NUMBER, BOOLEAN):
                        name = _join_key(prefix, key) if stack else sanitize_label_key(key)
                        if (name or stack) and (names is None or name in names) and name not in labels:
                            labels[name] = _json_string_value(s[start:stop]) if kind == STRING else s[start:stop]
                            found += 1
                    if need and found == need:
                        return labels, None  # Loki stops once every hinted label is found
                off = after
                expect_key = False
                continue
        else:
            off = _next_token(s, off, end)
            if off < 0:
                return labels, MALFORMED_ARRAY
            c = s[off]
            if c == "}":
                closed = True
            elif c == ",":
                off = _next_token(s, off + 1, end)
                if off < 0:
                    return labels, MALFORMED_ARRAY
                expect_key = True
                continue
            else:
                return labels, MALFORMED_OBJECT
        if closed:
            if not stack:
                return labels, None
            end, prefix, off = stack.pop()
            expect_key = False


def _unpack_exact(s: str, wanted: Wanted | None) -> tuple[list[tuple[str, str]], str | None, str | None]:
    """Loki's unpack on a line starting with "{": (labels to set in order, new line or None, error or None)."""
    pending: list[tuple[str, str]] = []
    entry: str | None = None
    end = len(s)
    off = _next_token(s, 1, end)
    if off < 0:
        return [], None, MALFORMED_JSON
    names = wanted.names if wanted is not None else None
    expect_key = True
    while True:
        if expect_key:
            c = s[off] if off < end else ""
            if c == "}":
                break
            if c != '"':
                return [], None, MALFORMED_OBJECT
            after, escaped = _string_end(s, off + 1, end)
            if after < 0:
                return [], None, MALFORMED_JSON
            raw_key = s[off + 1 : after - 1]
            key = _unescape(raw_key) if escaped else raw_key
            if key is None:
                return [], None, MALFORMED_STRING_ESCAPE
            off = _next_token(s, after, end)
            if off < 0 or s[off] != ":":
                return [], None, MALFORMED_JSON
            off = _next_token(s, off + 1, end)
            if off < 0:
                return [], None, MALFORMED_JSON
            start, stop, kind, err, after = _get_type(s, off, end)
            if err is not None:
                return [], None, err
            if kind == STRING:
                if key == PACKED_ENTRY_KEY:
                    entry = _unescape(s[start:stop])
                    if entry is None:
                        return [], None, MALFORMED_STRING_ESCAPE
                elif names is None or key in names:
                    pending.append((sanitize_label_key(key), _json_string_value(s[start:stop])))
            off = after
            expect_key = False
        else:
            off = _next_token(s, off, end)
            if off < 0:
                return [], None, MALFORMED_ARRAY
            c = s[off]
            if c == "}":
                break
            if c != ",":
                return [], None, MALFORMED_OBJECT
            off = _next_token(s, off + 1, end)
            if off < 0:
                return [], None, MALFORMED_ARRAY
            expect_key = True
    if entry is None:
        return [], None, None  # labels are only kept when the line had a packed entry
    return pending, entry, None


# -- EachKey, for `| json label="path"` --------------------------------------------------------------------


def _atoi(text: str) -> int | None:
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    return None


def _array_each(data: str) -> tuple[list[tuple[str, int, int]], int]:
    """jsonparser.ArrayEach without keys over `data` (at "["): the elements it visits and its end offset."""
    seen: list[tuple[str, int, int]] = []
    if not data:
        return seen, -1
    nt = _next_token(data, 0, len(data))
    if nt < 0:
        return seen, -1
    offset = nt + 1
    no = _next_token(data, offset, len(data))
    if no < 0:
        return seen, offset
    offset = no
    if data[offset] == "]":
        return seen, offset
    while True:
        value, kind, o, err = _get(data[offset:])
        if err is not None:
            return seen, offset
        if o == 0:
            break
        if kind != NOT_EXIST:
            seen.append((value or "", kind, offset + o - len(value or "")))
        offset += o
        skip = _next_token(data, offset, len(data))
        if skip < 0:
            return seen, offset
        offset = skip
        if data[offset] == "]":
            break
        if data[offset] != ",":
            return seen, offset
        offset += 1
    return seen, offset


def _search_keys(data: str, keys: Sequence[str]) -> int:
    """jsonparser.searchKeys: offset just after the key path's ':' in `data`, or -1."""
    key_level = level = i = 0
    ln = len(data)
    lk = len(keys)
    last_matched = True
    if lk == 0:
        return 0
    while i < ln:
        c = data[i]
        if c == '"':
            i += 1
            key_begin = i
            after, escaped = _string_end(data, i, ln)
            if after < 0:
                return -1
            i = after
            key_end = i - 1
            vo = _next_token(data, i, ln)
            if vo < 0:
                return -1
            i = vo
            if data[i] == ":":
                if level < 1:
                    return -1
                raw_key = data[key_begin:key_end]
                key = _unescape(raw_key) if escaped else raw_key
                if key is None:
                    return -1
                if level <= lk:
                    if key == keys[level - 1]:
                        last_matched = True
                        if key_level == level - 1:
                            key_level += 1
                            if key_level == lk:
                                return i + 1
                    else:
                        last_matched = False
                else:
                    return -1
            else:
                i -= 1
        elif c == "{":
            if not last_matched:
                skip = _block_end(data, i, ln, "}")
                if skip < 0:
                    return -1
                i = skip - 1
            else:
                level += 1
        elif c == "}":
            level -= 1
            if level == key_level:
                key_level -= 1
        elif c == "[":
            if key_level == level and keys[level][:1] == "[":
                want = keys[level]
                if len(want) < 3 or want[-1] != "]":
                    return -1
                index = _atoi(want[1:-1])
                if index is None:
                    return -1
                elements, _ = _array_each(data[i:])
                if not 0 <= index < len(elements):
                    return -1
                found, kind, found_off = elements[index]
                if kind == STRING:
                    found_off -= 2
                    found = data[i + found_off : i + found_off + len(found) + 2]
                sub = _search_keys(found, keys[level + 1 :])
                if sub < 0:
                    return -1
                return i + found_off + sub
            skip = _block_end(data, i, ln, "]")
            if skip < 0:
                return -1
            i = skip - 1
        elif c == ":":
            return -1
        i += 1
    return -1


def _same_tree(p1: Sequence[str], p2: Sequence[str]) -> bool:
    m = min(len(p1), len(p2))
    return list(p1[:m]) == list(p2[:m])


def _each_key(data: str, paths: list[list[str]], cb: Any) -> None:
    """jsonparser.EachKey: call cb(path index, value, type, error) for the first match of each path."""
    level = matched = i = 0
    ln = len(data)
    flags = [False] * len(paths)
    max_path = max((len(p) for p in paths), default=0)
    buf = [""] * max(max_path, 128)
    while i < ln:
        c = data[i]
        if c == '"':
            i += 1
            key_begin = i
            after, escaped = _string_end(data, i, ln)
            if after < 0:
                return
            i = after
            key_end = i - 1
            vo = _next_token(data, i, ln)
            if vo < 0:
                return
            i = vo
            if data[i] == ":":
                match = -1
                raw_key = data[key_begin:key_end]
                key = _unescape(raw_key) if escaped else raw_key
                if key is None:
                    return
                if max_path >= level:
                    if level < 1:
                        cb(-1, None, UNKNOWN, MALFORMED_JSON)
                        return
                    buf[level - 1] = key
                    for pi, p in enumerate(paths):
                        if len(p) != level or flags[pi] or key != p[level - 1] or not _same_tree(p, buf[:level]):
                            continue
                        match = pi
                        matched += 1
                        flags[pi] = True
                        v, kind, _, err = _get(data[i + 1 :])
                        cb(pi, v, kind, err)
                        if matched == len(paths):
                            break
                    if matched == len(paths):
                        return
                if match == -1:
                    # jsonparser means to skip an unmatched object value here, but lands one character before
                    # the value, so in practice the scan goes on into it.
                    value_at = _next_token(data, i + 1, ln)
                    i += value_at - (i + 1) if value_at >= 0 else -1
                    if data[i] == "{":
                        block = _block_end(data, i, ln, "}")
                        i += (block - i if block >= 0 else -1) + 1
                if i < ln and data[i] in '{}["':
                    i -= 1
            else:
                i -= 1
        elif c == "{":
            level += 1
        elif c == "}":
            level -= 1
        elif c == "[":
            if level < 0:
                cb(-1, None, UNKNOWN, MALFORMED_JSON)
                return
            indexes: set[int] = set()
            wants = [False] * len(paths)
            for pi, p in enumerate(paths):
                if (
                    len(p) < level + 1
                    or flags[pi]
                    or p[level] == ""
                    or p[level][0] != "["
                    or not _same_tree(p, buf[:level])
                ):
                    continue
                if len(p[level]) > 2:
                    indexes.add(_atoi(p[level][1:-1]) or 0)
                    wants[pi] = True
            if indexes:
                level += 1
                elements, arr_off = _array_each(data[i:])
                for cur, (value, kind, _) in enumerate(elements):
                    if cur not in indexes:
                        continue
                    for pi, p in enumerate(paths):
                        if not wants[pi] or cur != (_atoi(p[level - 1][1:-1]) or 0):
                            continue
                        of = _search_keys(value, p[level:])
                        matched += 1
                        flags[pi] = True
                        if of == -1:
                            continue
                        if kind == STRING:
                            cb(pi, value[of:], kind, None)
                        else:
                            v, k2, _, e2 = _get(value[of:])
                            cb(pi, v, k2, e2)
                if matched == len(paths):
                    return
                i += arr_off - 1
            else:
                skip = _block_end(data, i, ln, "]")
                if skip < 0:
                    return
                i = skip - 1
        elif c == "]":
            level -= 1
        i += 1


def _json_fields_exact(s: str, ids: list[str], paths: list[list[str]]) -> tuple[dict[str, str], bool, str | None]:
    """Loki's `| json id="path", ...` on a non-empty line: (labels, error?, error details)."""
    labels: dict[str, str] = {}
    if s[0] not in '"{[':
        return labels, True, None
    failure: list[str] = []

    def cb(idx: int, value: str | None, kind: int, err: str | None) -> None:
        if err is not None:
            failure.append(err)
            return
        key = ids[idx]
        if kind == NULL:
            labels[key] = ""
        elif kind == OBJECT:
            labels[key] = value or ""
        else:
            labels[key] = _json_string_value(value or "")

    _each_key(s, paths, cb)
    for key in ids:
        labels.setdefault(key, "")
    return labels, bool(failure), failure[-1] if failure else None


# ---- `| json` -------------------------------------------------------------------------------------------

_MINUS_ZERO = re.compile(r"[:,\[][ \t\n\r]*-0(?![0-9.eE])")
_NUMBER_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|(-?[0-9][0-9.eE+\-]*)', re.S)
_SPACED_KEY = re.compile(r'"[ \t\n\r]+:')


def _maybe_spaced_key(line: str) -> bool:
    """Whether some key has whitespace before its colon (then counting keys by '":' does not work)."""
    if '" ' in line or "\t" in line or "\n" in line or "\r" in line:
        return _SPACED_KEY.search(line) is not None
    return False


def _tree_stats(value: Any) -> tuple[int, bool, bool]:
    """(number of object keys, has a float, has an integer zero) anywhere in a decoded JSON value."""
    keys = 0
    has_float = has_zero = False
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict:
            keys += len(v)
            stack.extend(v.values())
        elif t is list:
            stack.extend(v)
        elif t is float:
            has_float = True
        elif t is int and v == 0:
            has_zero = True
    return keys, has_float, has_zero


def _skip_numbers(value: Any, raw: Iterator[str]) -> None:
    """Consume the raw number texts of every number inside `value` (document order)."""
    t = type(value)
    if t is dict:
        for v in value.values():
            _skip_numbers(v, raw)
    elif t is list:
        for v in value:
            _skip_numbers(v, raw)
    elif t is int or t is float:
        next(raw)


def _flatten(
    obj: dict[str, Any], prefix: str, top: bool, out: dict[str, str], wanted: Wanted | None, raw: Iterator[str] | None
) -> None:
    """Loki's flattening of a decoded (duplicate-free) JSON object into labels, first name wins."""
    names = wanted.names if wanted is not None else None
    for key, v in obj.items():
        t = type(v)
        if t is str:
            text = v.replace("\ufffd", " ") if "\ufffd" in v else v
        elif t is dict:
            name = _join_key(prefix, key)
            if wanted is None or wanted.prefix_ok(name):
                _flatten(v, name, False, out, wanted, raw)
            elif raw is not None:
                _skip_numbers(v, raw)
            continue
        elif t is bool:
            text = "true" if v else "false"
        elif t is int or t is float:
            text = next(raw) if raw is not None else str(v)
        else:
            if t is list and raw is not None:
                _skip_numbers(v, raw)
            continue
        name = sanitize_label_key(key) if top else _join_key(prefix, key)
        if (top and not name) or (names is not None and name not in names) or name in out:
            continue
        out[name] = text


def _json_tree(line: str, obj: dict[str, Any], wanted: Wanted | None) -> dict[str, str] | None:
    """Labels of a line orjson decoded, or None when only the exact scanner can tell (duplicate keys)."""
    keys, has_float, has_zero = _tree_stats(obj)
    if line.count('":') != keys or _maybe_spaced_key(line):
        return None
    raw = None
    if has_float or (has_zero and _MINUS_ZERO.search(line)):
        raw = iter([t for t in _NUMBER_TOKENS.findall(line) if t])
    out: dict[str, str] = {}
    _flatten(obj, "", True, out, wanted, raw)
    return out


def _scalar_text(v: Any) -> str | None:
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    return None


def _column_text(col: list[Any], kinds: set[type]) -> pa.Array:
    """One shape column as label values (null where the value is null, an array or an empty object)."""
    if kinds == {str}:
        return _no_fffd(pa.array(col, _STR))
    if kinds <= {int, type(None)}:
        try:
            return pa.array(col, pa.int64()).cast(_STR)
        except (OverflowError, pa.ArrowInvalid):
            pass
    elif kinds <= {bool, type(None)}:
        return pa.array(col, pa.bool_()).cast(_STR)
    values = pa.array([_scalar_text(v) for v in col], _STR)
    return _no_fffd(values) if str in kinds else values


def _shape_plan(keys: tuple[str, ...], wanted: Wanted | None) -> list[tuple[str, list[int]]]:
    """For a key sequence: each label name with the positions that give it, in order."""
    plan: dict[str, list[int]] = {}
    for pos, key in enumerate(keys):
        name = sanitize_label_key(key)
        if not name or (wanted is not None and name not in wanted.names):
            continue
        plan.setdefault(name, []).append(pos)
    return list(plan.items())


def _emit_json_shapes(
    shapes: dict[tuple[str, ...], tuple[list[int], list[dict[str, Any]]]],
    texts: list[str],
    acc: _Acc,
    wanted: Wanted | None,
    general: list[tuple[int, Any]],
) -> None:
    """Turn flat objects grouped by key sequence into label columns."""
    for keys, (rows, objs) in shapes.items():
        plan = _shape_plan(keys, wanted)
        if not plan:
            continue
        cols: dict[int, tuple[list[Any], set[type]]] = {}
        moved: set[int] = set()
        for _, positions in plan:
            for pos in positions:
                col = list(map(itemgetter(keys[pos]), objs))
                kinds = set(map(type, col))
                cols[pos] = (col, kinds)
                if float in kinds:
                    moved.update(j for j, v in enumerate(col) if type(v) is float)
                if int in kinds and 0 in col:
                    moved.update(
                        j for j, v in enumerate(col) if type(v) is int and v == 0 and _MINUS_ZERO.search(texts[rows[j]])
                    )
        if moved:
            # Rows whose numbers need their raw text go through the per-row path.
            general.extend((rows[j], objs[j]) for j in sorted(moved))
            keep = [j for j in range(len(rows)) if j not in moved]
            if not keep:
                continue
            rows = [rows[j] for j in keep]
            cols = {pos: ([col[j] for j in keep], kinds) for pos, (col, kinds) in cols.items()}
        idx = np.asarray(rows, dtype=np.int64)
        for name, positions in plan:
            values = _column_text(*cols[positions[0]])
            for pos in positions[1:]:
                values = pc.coalesce(values, _column_text(*cols[pos]))
            if values.null_count < len(values):
                acc.piece(name, idx, values)


# A flat JSON object (no nesting, no \u escapes), as strict JSON: jsonparser reads such a line the same way.
_J_WS = r"[ \t\n\r]*"
_J_STR = r'"(?:[^"\\]|\\["\\/bfnrt])*"'
_J_VALUE = r"(?:" + _J_STR + r"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)"
_J_MEMBER = _J_STR + _J_WS + ":" + _J_WS + _J_VALUE
_J_FLAT = f"^{_J_WS}\\{{{_J_WS}(?:{_J_MEMBER}{_J_WS}(?:,{_J_WS}{_J_MEMBER}{_J_WS})*)?\\}}{_J_WS}$"
# What sanitize_label_key strips from a key: Go's spaces, raw or as JSON escapes.
_J_GO_SPACE = r"\t\n\x0B\x0C\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
_J_SPACE = f"(?:[{_J_GO_SPACE}]|\\\\[tnrf])*"
# A character sanitize_label_key turns into "_": inside a key, and at its ends (where spaces were stripped).
_J_ODD_INNER = r'(?:[^A-Za-z0-9"\\]|\\.)'
_J_ODD_EDGE = f'(?:[^A-Za-z0-9"\\\\{_J_GO_SPACE}]|\\\\[^tnrf])'
_LABEL_NAME = re.compile(r"[A-Za-z0-9_]+\Z")
FLAT_JSON_MIN_ROWS = 64  # below this the per-row path is as quick


@lru_cache(maxsize=256)
def _key_value_pattern(name: str) -> str | None:
    """A regex whose first match in a flat object is the first member whose key sanitizes to `name` (group 1:
    the raw value); None when no key can give `name` (or only one starting with a digit could)."""
    if not _LABEL_NAME.match(name) or (name[0] == "_" and len(name) > 1 and name[1].isdigit()):
        return None
    last = len(name) - 1
    parts = [
        (_J_ODD_EDGE if i in (0, last) else _J_ODD_INNER) if c == "_" else re.escape(c) for i, c in enumerate(name)
    ]
    return f'[{{,]{_J_WS}"{_J_SPACE}{"".join(parts)}{_J_SPACE}"{_J_WS}:{_J_WS}({_J_VALUE})'


def _flat_json(lines: pa.Array, wanted: Wanted) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, pa.Array]]]:
    """Read the hinted labels of the lines that are flat JSON objects with one whole-column regex per name:
    (rows read, and each name's rows and values). Rows whose first such key holds null are left to the caller."""
    s = pl.from_arrow(lines)
    ok = (s.str.contains(_J_FLAT) & ~s.str.contains("\\u", literal=True)).fill_null(False)
    out: dict[str, tuple[np.ndarray, pa.Array]] = {}
    flat = s.filter(ok)
    rows = np.flatnonzero(ok.to_numpy())
    undecided = np.zeros(len(rows), dtype=bool)
    for name in sorted(wanted.names):
        pattern = _key_value_pattern(name)
        if pattern is None:
            continue
        raw = flat.str.extract(pattern, 1)
        got = pl.DataFrame({"v": raw}).select(
            pl.col("v").is_not_null().alias("has"),
            (pl.col("v") == "null").fill_null(False).alias("null"),
            pl.when(pl.col("v").str.starts_with('"'))
            .then(pl.col("v").str.slice(1, pl.col("v").str.len_chars() - 2))
            .otherwise(pl.col("v"))
            .alias("t"),
            pl.col("v").str.contains("\\", literal=True).fill_null(False).alias("e"),
        )
        undecided |= got["null"].to_numpy()
        has = (got["has"] & ~got["null"]).to_numpy()
        if not has.any():
            continue
        text = got["t"].filter(has).to_arrow().cast(_STR)
        escaped = got["e"].to_numpy()[has]
        if escaped.any():
            fixed = text.to_pylist()
            for j in np.flatnonzero(escaped):
                fixed[j] = _json_string_value(fixed[j])
            text = pa.array(fixed, _STR)
        out[name] = (rows[has], _no_fffd(text))
    done = ok.to_numpy().copy()
    if undecided.any():
        done[rows[undecided]] = False
        keep = ~undecided
        out = {
            k: (idx[keep[np.searchsorted(rows, idx)]], v.filter(pa.array(keep[np.searchsorted(rows, idx)])))
            for k, (idx, v) in out.items()
        }
    return done, out


def parse_json(lines: pa.Array, wanted: Wanted | None = None, full_rest: bool = False) -> Extraction:
    """`| json`: every string, number and boolean of the line's object, nested keys joined with "_".

    With `full_rest`, only flat objects are read with the hints; every other line is parsed in full.
    """
    n = len(lines)
    if wanted is not None and not wanted.names and not full_rest:
        return _Acc(n, wanted).build()
    if (
        wanted is None
        or n < FLAT_JSON_MIN_ROWS
        or any(_LABEL_NAME.match(name) and _key_value_pattern(name) is None for name in wanted.names)
    ):
        return _parse_json_rows(lines, None if full_rest else wanted)
    done, flat = _flat_json(lines, wanted)
    rest = np.flatnonzero(~done)
    if not len(rest):
        acc = _Acc(n, wanted)
        for name, (idx, values) in flat.items():
            acc.piece(name, idx, values)
        return acc.build()
    other = _parse_json_rows(lines.take(pa.array(rest)), None if full_rest else wanted)
    labels: dict[str, pa.Array] = {}
    for name in dict.fromkeys([*flat, *other.labels]):
        parts = [flat[name]] if name in flat else []
        if name in other.labels:
            parts.append((rest, other.labels[name]))
        idx = np.concatenate([p[0] for p in parts])
        labels[name] = _scatter(n, idx, pa.concat_arrays([p[1] for p in parts]))
    spread = partial(_scatter, n, rest)
    return Extraction(
        labels,
        spread(other.error) if other.error is not None else None,
        spread(other.error_details) if other.error_details is not None else None,
    )


def _parse_json_rows(lines: pa.Array, wanted: Wanted | None) -> Extraction:
    """`| json` line by line: orjson where its reading equals jsonparser's, the jsonparser port elsewhere."""
    n = len(lines)
    acc = _Acc(n, wanted)
    texts = _texts(lines)
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    shapes: dict[tuple[str, ...], tuple[list[int], list[dict[str, Any]]]] = {}
    general: list[tuple[int, Any]] = []
    exact: list[int] = []
    for i, line in enumerate(texts):
        try:
            obj = loads(line)
        except decode_error:
            exact.append(i)
            continue
        if type(obj) is not dict:
            acc.error(i, ERR_JSON, MALFORMED_OBJECT)
            continue
        # As many '":' as keys and no spaced key: flat, no duplicate keys, no '":' inside strings.
        if line.count('":') != len(obj) or (
            ('" ' in line or "\t" in line or "\n" in line or "\r" in line) and _SPACED_KEY.search(line)
        ):
            general.append((i, obj))
            continue
        keys = tuple(obj)
        batch = shapes.get(keys)
        if batch is None:
            shapes[keys] = ([i], [obj])
        else:
            batch[0].append(i)
            batch[1].append(obj)
    _emit_json_shapes(shapes, texts, acc, wanted, general)
    for i, obj in general:
        labels = _json_tree(texts[i], obj, wanted)
        if labels is None:
            exact.append(i)
        elif labels:
            acc.add(i, labels)
    for i in exact:
        labels, err = _json_exact(texts[i], wanted)
        if labels:
            acc.add(i, labels)
        if err is not None:
            acc.error(i, ERR_JSON, err)
    return acc.build()


# ---- `| json label="path"` ------------------------------------------------------------------------------


class _ExprLexer:
    """Go's bufio rune reader as Loki's expression scanners use it (EOF reads as rune 0)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.last = 0
        self.err: str | None = None

    def read(self) -> str:
        if self.i >= len(self.text):
            self.last = 0
            return ""
        self.last = 1
        self.i += 1
        return self.text[self.i - 1]

    def unread(self) -> None:
        self.i -= self.last
        self.last = 0

    def field(self) -> str:
        out = []
        while True:
            r = self.read()
            if r == "" or r == "\0" or not (r.isascii() and (r.isalnum() or r == "_")):
                self.unread()
                return "".join(out)
            out.append(r)

    def string(self) -> str:
        self.read()  # the opening quote
        out = []
        while True:
            r = self.read()
            if r in ("", "\0", '"', "]"):
                return "".join(out)
            out.append(r)


def _start_ident(r: str) -> bool:
    return r.isascii() and (r.isalpha() or r == "_")


def _jsonexpr_token(lex: _ExprLexer) -> tuple[str, Any]:
    while True:
        r = lex.read()
        if r in ("", "\0"):
            return "$end", None
        if r in " \t\n":
            continue
        if "0" <= r <= "9":
            lex.unread()
            digits = []
            while True:
                d = lex.read()
                if d == "." and digits:
                    lex.err = "cannot use float as array index"
                    return "$end", None
                if d in (" ", "\t", "\n", ".", "]"):
                    lex.unread()
                    break
                if not ("0" <= d <= "9"):
                    lex.err = f"non-integer value: {d or chr(0)}"
                    return "$end", None
                digits.append(d)
            return "INDEX", int("".join(digits))
        if r == "[":
            return "LSB", None
        if r == "]":
            return "RSB", None
        if r == ".":
            return "DOT", None
        if _start_ident(r):
            lex.unread()
            return "FIELD", lex.field()
        if r == '"':
            lex.unread()
            return "STRING", lex.string()
        lex.err = f"unexpected char {r}"
        return "$end", None


def _parse_json_path(expr: str) -> list[str | int]:
    """Parse a `| json` parameter path (Loki's jsonexpr grammar); raise ValueError with Loki's message."""
    lex = _ExprLexer(expr)
    path: list[str | int] = []

    def fail(msg: str) -> ValueError:
        return ValueError(f"cannot parse expression [{expr}]: syntax error: {msg}")

    tok, val = _jsonexpr_token(lex)
    if tok not in ("FIELD", "LSB"):
        raise fail(f"unexpected {tok}, expecting LSB or FIELD")
    while True:
        if tok == "FIELD":
            path.append(val)
        else:  # LSB
            tok, val = _jsonexpr_token(lex)
            if tok not in ("STRING", "INDEX"):
                raise fail(f"unexpected {tok}, expecting STRING or INDEX")
            path.append(val)
            tok, _ = _jsonexpr_token(lex)
            if tok != "RSB":
                raise fail(f"unexpected {tok}, expecting RSB")
        tok, val = _jsonexpr_token(lex)
        if tok == "DOT":
            tok, val = _jsonexpr_token(lex)
            if tok != "FIELD":
                raise fail(f"unexpected {tok}, expecting FIELD")
            continue
        if tok == "LSB":
            continue
        if tok == "$end":
            break
        raise fail(f"unexpected {tok}")
    if lex.err is not None:
        raise ValueError(f"cannot parse expression [{expr}]: {lex.err}")
    return path


_MISSING = object()
_CANONICAL_INDEX = re.compile(r"\[(0|[1-9][0-9]*)\]")


def _walk(obj: Any, path: list[tuple[str, int | None]]) -> Any:
    node = obj
    for key, index in path:
        t = type(node)
        if t is dict:
            node = node.get(key, _MISSING)
            if node is _MISSING:
                return node
        elif t is list and index is not None and index < len(node):
            node = node[index]
        else:
            return _MISSING
    return node


def parse_json_fields(lines: pa.Array, fields: list[tuple[str, str]]) -> Extraction:
    """`| json a="b.c[0]", ...`: each label from its path ("" where the path is missing)."""
    ids = [name for name, _ in fields]
    paths = [[f"[{p}]" if isinstance(p, int) else p for p in _parse_json_path(expr)] for _, expr in fields]
    n = len(lines)
    acc = _Acc(n)
    texts = _texts(lines)
    # String keys that look like array indexes (or are empty) follow jsonparser's quirks: scan every line.
    walkable = len(set(ids)) == len(ids) and all(
        p and not (p[0] == "[" and not _CANONICAL_INDEX.fullmatch(p)) for path in paths for p in path
    )
    walk_paths = [[(p, int(p[1:-1]) if _CANONICAL_INDEX.fullmatch(p) else None) for p in path] for path in paths]
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    for i, line in enumerate(texts):
        if not line:
            continue
        if line[0] not in '"{[':
            acc.error(i, ERR_JSON, None)
            continue
        labels: dict[str, str] | None = None
        if walkable:
            try:
                obj = loads(line)
            except decode_error:
                obj = _MISSING
            if obj is not _MISSING:
                labels = _fields_from_tree(line, obj, ids, walk_paths)
        if labels is None:
            labels, failed, details = _json_fields_exact(line, ids, paths)
            if failed:
                acc.error(i, ERR_JSON, details)
        acc.add(i, labels)
    return acc.build()


def _fields_from_tree(
    line: str, obj: Any, ids: list[str], paths: list[list[tuple[str, int | None]]]
) -> dict[str, str] | None:
    """Field values from a decoded line, or None where only the scanner knows (raw text, duplicates)."""
    if line.count('":') != _tree_stats(obj)[0] or _maybe_spaced_key(line):
        return None  # maybe duplicate keys: jsonparser takes the first, orjson the last
    labels: dict[str, str] = {}
    for key, path in zip(ids, paths, strict=True):
        v = _walk(obj, path)
        t = type(v)
        if v is _MISSING or v is None:
            labels[key] = ""
        elif t is str:
            labels[key] = v.replace("\ufffd", " ") if "\ufffd" in v else v
        elif t is bool:
            labels[key] = "true" if v else "false"
        elif t is int and (v != 0 or not _MINUS_ZERO.search(line)):
            labels[key] = str(v)
        else:
            return None  # floats, objects and arrays keep their raw text
    return labels


# ---- `| unpack` -----------------------------------------------------------------------------------------


def parse_unpack(lines: pa.Array, wanted: Wanted | None = None) -> Extraction:
    """`| unpack`: string values of a packed object become labels and its `_entry` the new line."""
    n = len(lines)
    acc = _Acc(n, wanted)
    if wanted is not None and not wanted.names:
        return acc.build()
    names = wanted.names if wanted is not None else None
    texts = _texts(lines)
    new_rows: list[int] = []
    new_lines: list[str] = []
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    for i, line in enumerate(texts):
        if not line:
            continue
        if line[0] != "{":
            acc.error(i, ERR_JSON, UNEXPECTED_JSON_OBJECT)
            continue
        pending: list[tuple[str, str]] | None = None
        entry: str | None = None
        try:
            obj = loads(line)
        except decode_error:
            obj = None
        if obj is not None and line.count('":') == _tree_stats(obj)[0] and not _maybe_spaced_key(line):
            got = obj.get(PACKED_ENTRY_KEY)
            if type(got) is str:
                entry = got
                pending = [
                    (sanitize_label_key(k), v.replace("\ufffd", " ") if "\ufffd" in v else v)
                    for k, v in obj.items()
                    if type(v) is str and k != PACKED_ENTRY_KEY and (names is None or k in names)
                ]
            else:
                pending = []
        else:
            pending, entry, err = _unpack_exact(line, wanted)
            if err is not None:
                acc.error(i, ERR_JSON, err)
                continue
        if entry is None:
            continue
        new_rows.append(i)
        new_lines.append(entry)
        if pending:
            acc.add(i, dict(pending))  # later keys overwrite earlier ones, as Loki sets them in order
    line_col = _scatter(n, np.asarray(new_rows, dtype=np.int64), pa.array(new_lines, _STR)) if new_rows else None
    return acc.build(line_col)


# ---- logfmt decoder, ported -----------------------------------------------------------------------------

_LF_NON_SPACE = re.compile(r"[^\x00-\x20]")
_LF_SPACE = re.compile(r"[\x00-\x20]")
_LF_KEY_END = re.compile(r'[\x00-\x20="]')
_LF_QUOTED = re.compile(r'(?:[^"\\]|\\.)*"', re.S)
_LF_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "'": "'", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _logfmt_unquote(s: str) -> str | None:
    """Loki's logfmt unquoting of a quoted value's content (Go's JSON string rules plus \\'), or None."""
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        j = s.find("\\", i)
        if j < 0:
            out.append(s[i:])
            break
        out.append(s[i:j])
        if j + 1 >= n:
            return None
        e = s[j + 1]
        simple = _LF_ESCAPES.get(e)
        if simple is not None:
            out.append(simple)
            i = j + 2
            continue
        if e != "u" or not _HEX4.fullmatch(s, j + 2, j + 6) or j + 6 > n:
            return None
        r = int(s[j + 2 : j + 6], 16)
        i = j + 6
        if 0xD800 <= r < 0xE000:
            r2 = int(s[i + 2 : i + 6], 16) if s.startswith("\\u", i) and _HEX4.fullmatch(s, i + 2, i + 6) else -1
            if 0xD800 <= r < 0xDC00 and 0xDC00 <= r2 < 0xE000:
                out.append(chr(0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00)))
                i += 6
                continue
            r = 0xFFFD
        out.append(chr(r))
    return "".join(out)


def _byte_pos(line: str, pos: int) -> int:
    return len(line[:pos].encode("utf-8", "surrogatepass"))


def _scan_keyval(line: str, pos: int) -> tuple[bool, str, str, int, tuple[str, int] | None]:
    """One ScanKeyval of Loki's logfmt decoder from `pos`: (ok, key, value, new pos, (error, pos) or None)."""
    n = len(line)
    m = _LF_NON_SPACE.search(line, pos)
    if m is None:
        return False, "", "", n, None
    start = m.start()
    m = _LF_KEY_END.search(line, start)
    if m is None:
        key = line[start:]
        if "\ufffd" in key:
            return False, "", "", n, ("invalid key", n)
        return True, key, "", n, None
    p = m.start()
    c = line[p]
    if c == "=":
        if p == start:
            err = ("unexpected '='", p)
        elif "\ufffd" in line[start:p]:
            err = ("invalid key", p)
        else:
            return _scan_value(line, line[start:p], p + 1)
    elif c == '"':
        err = ("unexpected '\"'", p)
    else:
        key = line[start:p]
        if "\ufffd" in key:
            return False, "", "", p, ("invalid key", p)
        return True, key, "", p, None
    skip = _LF_SPACE.search(line, p)
    return False, "", "", skip.start() if skip else n, err


def _scan_value(line: str, key: str, pos: int) -> tuple[bool, str, str, int, tuple[str, int] | None]:
    n = len(line)
    if pos >= n or line[pos] <= " ":
        return True, key, "", pos, None
    if line[pos] == '"':
        m = _LF_QUOTED.match(line, pos + 1)
        if m is None:
            return False, "", "", n, ("unterminated quoted value", n)
        after = m.end()
        content = line[pos + 1 : after - 1]
        if "\\" in content:
            value = _logfmt_unquote(content)
            if value is None:
                return False, "", "", after, ("invalid quoted value", after)
            return True, key, value, after, None
        return True, key, content, after, None
    m = _LF_KEY_END.search(line, pos)
    if m is None:
        return True, key, line[pos:], n, None
    q = m.start()
    c = line[q]
    if c in '="':
        skip = _LF_SPACE.search(line, q)
        return False, "", "", skip.start() if skip else n, (f"unexpected '{c}'", q)
    return True, key, line[pos:q], q, None


class LogfmtSyntaxError(ValueError):
    """Strict mode's stop at the first syntax error; the message is Loki's."""


def iter_logfmt(line: str, strict: bool = False) -> Iterator[tuple[str, str]]:
    """Every key/value Loki's logfmt decoder reads from a line, in order (unsanitized keys, unescaped values).

    Without `strict` a malformed pair is skipped, as `| logfmt` does; with it the first one raises
    LogfmtSyntaxError with Loki's message."""
    pos = 0
    n = len(line)
    while pos < n:
        ok, key, value, pos, err = _scan_keyval(line, pos)
        if ok:
            yield key, value
        elif strict:
            if err is not None:
                raise LogfmtSyntaxError(f"logfmt syntax error at pos {_byte_pos(line, err[1]) + 1} : {err[0]}")
            return


def _logfmt_pairs(line: str, strict: bool) -> tuple[list[tuple[str, str]], str | None]:
    """Every key/value Loki's decoder reads from a line, and its strict-mode error text (or None)."""
    pairs: list[tuple[str, str]] = []
    try:
        pairs.extend(iter_logfmt(line, strict))
    except LogfmtSyntaxError as exc:
        return pairs, str(exc)
    return pairs, None


def _logfmt_exact(
    line: str, strict: bool, keep_empty: bool, wanted: Wanted | None
) -> tuple[dict[str, str], str | None]:
    """Loki's `| logfmt` on one line: labels and the strict-mode error text (or None)."""
    labels: dict[str, str] = {}
    names = wanted.names if wanted is not None else None
    need = len(names) if names else 0
    try:
        for key, value in iter_logfmt(line, strict):
            name = sanitize_label_key(key)
            if not name or (names is not None and name not in names) or name in labels:
                continue
            if "\ufffd" in value:
                value = value.replace("\ufffd", " ")
            if not keep_empty and not value:
                continue
            labels[name] = value
            if need and len(labels) == need:
                break  # Loki stops once every hinted label is found
    except LogfmtSyntaxError as exc:
        return labels, str(exc)
    return labels, None


_g0 = itemgetter(0)
_g1 = itemgetter(1)
_g2 = itemgetter(2)


def _logfmt_plain(line: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Keys and values of a well-formed line of printable ASCII without escapes, else None."""
    if not (line.isascii() and line.isprintable()):
        return None
    if '"' not in line:
        parts = [t.partition("=") for t in line.split()]
        keys = tuple(map(_g0, parts))
        # Every token has at most one '=' and a key: otherwise the decoder reports an error.
        if "" in keys or line.count("=") != len(parts) - list(map(_g1, parts)).count(""):
            return None
        return keys, tuple(map(_g2, parts))
    if "\\" in line:
        return None
    segs = line.split('"')
    if not len(segs) & 1:
        return None
    key_list: list[str] = []
    val_list: list[str] = []
    for j in range(0, len(segs), 2):
        if j:
            # segs[j-1] was quoted: the token before it must be `key=`.
            if not segs[j - 2].endswith("="):
                return None
            val_list[-1] = segs[j - 1]
        seg = segs[j]
        if seg:
            parts = [t.partition("=") for t in seg.split()]
            if seg.count("=") != len(parts) - list(map(_g1, parts)).count(""):
                return None
            key_list.extend(map(_g0, parts))
            val_list.extend(map(_g2, parts))
    if "" in key_list:
        return None
    return tuple(key_list), tuple(val_list)


# One step of the non-strict decoder as a regular expression (Rust syntax), from a non-space character to
# where the decoder goes on: a bare key, key=, key="quoted" (next token may follow at once), an unterminated
# quote, key=value, and the errors that skip to the next space. Tokens that stop at a space consume it.
_RX_WS = r"[\x00-\x20]"
_RX_NW = r"[^\x00-\x20]"
_RX_KC = r'[^\x00-\x20="]'
_RX_QC = r'(?:[^"\\]|\\(?s:.))'
_RX_END = rf"(?:{_RX_WS}|$)"
_RX_TOKEN = (
    rf'(?:{_RX_KC}+{_RX_END}|{_RX_KC}*"{_RX_NW}*{_RX_END}|={_RX_NW}*{_RX_END}|{_RX_KC}+={_RX_END}'
    rf'|{_RX_KC}+="{_RX_QC}*"|{_RX_KC}+="{_RX_QC}*\\?$|{_RX_KC}+={_RX_KC}+{_RX_END}'
    rf"|{_RX_KC}+=(?:{_RX_KC}+[=\"]|=){_RX_NW}*{_RX_END})"
)
# Quoted content the decoder accepts (every escape valid); it always unquotes to something non-empty.
_RX_QGOOD = r'(?:[^"\\]|\\["\\/\'bfnrt]|\\u[0-9A-Fa-f]{4})'
# Key characters Loki turns into "_" (spaces Go trims are allowed around the key).
_RX_UNDERSCORE = r'[^\x00-\x20="A-Za-z0-9\x{FFFD}]'
_RX_TRIM = "[\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}]*"


def _key_regex(name: str) -> str | None:
    """A Rust regex for the raw logfmt keys Loki names `name`, or None if no key gets that name."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name) or "0" <= name[0] <= "9":
        return None
    core = "".join(_RX_UNDERSCORE if c == "_" else c for c in name)
    if len(name) > 1 and name[0] == "_" and "0" <= name[1] <= "9":
        core = f"(?:{_RX_UNDERSCORE})?" + core[len(_RX_UNDERSCORE) :]
    return _RX_TRIM + core + _RX_TRIM


def _first_token_regex(name: str, keep_empty: bool) -> str | None:
    """Anchored regex matching a line up to the end of its first pair that sets `name` (non-strict)."""
    key = _key_regex(name)
    if key is None:
        return None
    if keep_empty:
        target = rf'{key}(?:=(?:"{_RX_QGOOD}*"|{_RX_KC}*{_RX_END})|{_RX_END})'
    else:
        target = rf'{key}=(?:"{_RX_QGOOD}+"|{_RX_KC}+{_RX_END})'
    return rf"^(?:{_RX_WS}*{_RX_TOKEN})*?{_RX_WS}*{target}"


_KC_RUN = re.compile(r'[^\x00-\x20="]*')


def _value_at_end(matched: str) -> str:
    """The value of the pair a `_first_token_regex` match ends with."""
    if matched and matched[-1] <= " ":
        matched = matched[:-1]
    if matched.endswith('"'):
        content = matched[matched.rfind('="', 0, len(matched) - 1) + 2 : -1]
        if "\\" in content:
            content = _logfmt_unquote(content) or ""
    else:
        # An unquoted value (or a bare key) is the run of key characters the match ends with.
        tail = _KC_RUN.match(matched[::-1])
        run = tail.end() if tail else 0
        before = len(matched) - run - 1
        content = matched[before + 1 :] if before >= 0 and matched[before] == "=" else ""
    return content.replace("\ufffd", " ") if "\ufffd" in content else content


def _values_at_end(matched: pl.Series) -> pa.Array:
    """_value_at_end of each match, as whole-column regexes (escaped quoted values are unquoted one by one)."""
    m = pl.col("m").str.replace(r"[\x00-\x20]$", "")
    got = pl.DataFrame({"m": matched}).select(
        pl.when(m.str.ends_with('"'))
        .then(m.str.extract(r'="((?:[^"\\]|\\(?s:.))*)"$', 1))
        .otherwise(m.str.extract(r'=([^\x00-\x20="]*)$', 1).fill_null(""))
        .alias("v"),
        m.str.ends_with('"').alias("q"),
    )
    values = got["v"]
    escaped = (got["q"] & values.str.contains("\\", literal=True)).to_numpy()
    out = values.to_arrow().cast(_STR)
    if escaped.any():
        fixed = out.to_pylist()
        for j in np.flatnonzero(escaped):
            fixed[j] = _logfmt_unquote(fixed[j]) or ""
        out = pa.array(fixed, _STR)
    return _no_fffd(out)


def _logfmt_wanted_columns(lines: pa.Array, names: frozenset[str], keep_empty: bool, acc: _Acc) -> bool:
    """Non-strict `| logfmt` with hints, by one regex per name; False if a name needs the per-line path."""
    patterns = {}
    for name in names:
        pattern = _first_token_regex(name, keep_empty)
        if pattern is not None:
            patterns[name] = pattern
    text = pl.Series(lines).fill_null("")
    # Keys holding U+FFFD are errors the token regex does not model: those lines take the decoder.
    odd = np.flatnonzero(text.str.contains("\ufffd", literal=True).to_numpy())
    found: list[tuple[str, np.ndarray, pa.Array]] = []
    for name, pattern in patterns.items():
        try:
            matched = text.str.extract_all(pattern).list.first()
        except pl.exceptions.PolarsError:
            return False
        idx = np.flatnonzero(matched.is_not_null().to_numpy())
        if len(odd):
            idx = np.setdiff1d(idx, odd)
        if len(idx):
            found.append((name, idx.astype(np.int64), _values_at_end(matched.gather(idx))))
    for name, idx, values in found:
        acc.piece(name, idx, values)
    texts = _texts(lines) if len(odd) else []
    for i in odd.tolist():
        labels, _ = _logfmt_exact(texts[i], False, keep_empty, Wanted(names))
        if labels:
            acc.add(i, labels)
    return True


def parse_logfmt(lines: pa.Array, strict: bool, keep_empty: bool, wanted: Wanted | None = None) -> Extraction:
    """`| logfmt`: every key=value pair of the line (first one wins; empty values only with keep_empty)."""
    n = len(lines)
    acc = _Acc(n, wanted)
    if wanted is not None and not wanted.names:
        return acc.build()
    if wanted is not None and not strict and _logfmt_wanted_columns(lines, wanted.names, keep_empty, acc):
        return acc.build()
    texts = _texts(lines)
    shapes: dict[tuple[str, ...], tuple[list[int], list[tuple[str, ...]]]] = {}
    exact: list[int] = []
    for i in range(n):
        got = _logfmt_plain(texts[i])
        if got is None:
            exact.append(i)
            continue
        keys, vals = got
        batch = shapes.get(keys)
        if batch is None:
            shapes[keys] = ([i], [vals])
        else:
            batch[0].append(i)
            batch[1].append(vals)
    for keys, (batch_rows, vals) in shapes.items():
        plan = _shape_plan(keys, wanted)
        if not plan:
            continue
        cols = list(zip(*vals, strict=True))
        idx = np.asarray(batch_rows, dtype=np.int64)
        for name, positions in plan:
            values = _logfmt_column(cols[positions[0]], keep_empty)
            for pos in positions[1:]:
                values = pc.coalesce(values, _logfmt_column(cols[pos], keep_empty))
            if values.null_count < len(values):
                acc.piece(name, idx, values)
    for i in exact:
        labels, err = _logfmt_exact(texts[i], strict, keep_empty, wanted)
        if labels:
            acc.add(i, labels)
        if err is not None:
            acc.error(i, ERR_LOGFMT, err)
    return acc.build()


def _logfmt_column(col: tuple[str, ...], keep_empty: bool) -> pa.Array:
    values = pa.array(col, _STR)
    if not keep_empty and "" in col:
        values = pc.if_else(pc.equal(values, ""), pa.scalar(None, _STR), values)
    return values


# -- `| logfmt label="key"` ---------------------------------------------------------------------------------


def _logfmt_expr_token(lex: _ExprLexer) -> tuple[str, str | None]:
    while True:
        r = lex.read()
        if r in ("", "\0"):
            return "$end", None
        if r in " \t\n":
            continue
        if _start_ident(r):
            lex.unread()
            return "KEY", lex.field()
        if r == '"':
            lex.unread()
            return "STRING", lex.string()
        lex.err = f"unexpected char {r}"
        return "$end", None


def _parse_logfmt_key(expr: str) -> str:
    """Parse a `| logfmt` parameter (Loki's logfmt expression grammar) into the key it matches."""
    lex = _ExprLexer(expr)
    parts: list[str] = []
    tok, val = _logfmt_expr_token(lex)
    if tok not in ("KEY", "STRING"):
        raise ValueError(f"cannot parse expression [{expr}]: syntax error: unexpected {tok}, expecting STRING or KEY")
    parts.append(val or "")
    while True:
        tok, val = _logfmt_expr_token(lex)
        if tok == "$end":
            break
        if tok != "STRING":
            raise ValueError(f"cannot parse expression [{expr}]: syntax error: unexpected {tok}")
        parts.append(val or "")
    if lex.err is not None:
        raise ValueError(f"cannot parse expression [{expr}]: {lex.err}")
    # Loki compares keys with fmt.Sprintf("%v", parts...): extra parts are printed as Go's EXTRA marker.
    if len(parts) == 1:
        return parts[0]
    return parts[0] + "%!(EXTRA " + ", ".join(f"string={p}" for p in parts[1:]) + ")"


def parse_logfmt_fields(lines: pa.Array, fields: list[tuple[str, str]], strict: bool, keep_empty: bool) -> Extraction:
    """`| logfmt a="b", c`: each label from its key; every label exists ("" until found), the last pair wins."""
    ids = list(dict.fromkeys(name for name, _ in fields))
    key_of = {name: _parse_logfmt_key(expr) for name, expr in fields}
    # Loki maps a key to the label whose expression names it (Go map order when several do; we take the first).
    origin: dict[str, str] = {}
    for name, key in key_of.items():
        origin.setdefault(key, name)
    id_set = set(ids)
    n = len(lines)
    acc = _Acc(n)
    texts = _texts(lines)
    for i, line in enumerate(texts):
        labels = dict.fromkeys(ids, "")
        got = _logfmt_plain(line)
        if got is not None:
            pairs: Iterable[tuple[str, str]] = zip(*got, strict=True)
            err = None
        else:
            pairs, err = _logfmt_pairs(line, strict)
        for key, value in pairs:
            name = sanitize_label_key(key)
            if not name:
                continue
            name = origin.get(name, name)
            if name in id_set:
                labels[name] = "" if "\ufffd" in value else value
        acc.add(i, labels)
        if err is not None:
            acc.error(i, ERR_LOGFMT, err)
    return acc.build()


# ---- `| pattern` ----------------------------------------------------------------------------------------


def _pattern_nodes(pattern: str) -> list[tuple[str, bool]]:
    """Loki's pattern expression as (text, is capture) nodes; raise ValueError with Loki's message."""
    nodes = [(node.text, node.is_capture) for node in _split_pattern(pattern)]
    names = [text for text, is_capture in nodes if is_capture and text != "_"]
    if not names:
        raise ValueError("at least one capture is required")
    for (a, a_cap), (b, b_cap) in itertools.pairwise(nodes):
        if a_cap and b_cap:
            raise ValueError(f"found consecutive capture '<{a}><{b}>': invalid expression")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate capture name ({name}): invalid expression")
        seen.add(name)
    return nodes


def _to_str_array(series: pl.Series) -> pa.Array:
    values = series.to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(_STR)


def parse_pattern(lines: pa.Array, pattern: str) -> Extraction:
    """`| pattern "<a> - <b>"`: each literal at its first occurrence; captures take the text between."""
    nodes = _pattern_nodes(pattern)
    text = pl.Series(lines).fill_null("")
    alive = text.str.len_bytes() > 0
    rest = text
    i = 0
    if not nodes[0][1]:
        literal = nodes[0][0]
        alive = alive & text.str.starts_with(literal)
        rest = text.str.splitn(literal, 2).struct.field("field_1").fill_null("")
        i = 1
    out: dict[str, pl.Series] = {}
    nulls = pl.Series([None] * len(text), dtype=pl.String)
    while i < len(nodes):
        name, _ = nodes[i]
        if i + 1 == len(nodes):
            if name != "_":
                out[name] = rest.zip_with(alive, nulls)
            break
        split = rest.str.splitn(nodes[i + 1][0], 2)
        before = split.struct.field("field_0")
        after = split.struct.field("field_1")
        found = after.is_not_null()
        if name != "_":
            # A literal that is not found leaves the rest of the line to the capture before it.
            out[name] = before.zip_with(found, rest).zip_with(alive, nulls)
        alive = alive & found
        rest = after.fill_null("")
        i += 2
    labels = {name: _to_str_array(values) for name, values in out.items()}
    return Extraction({k: v for k, v in labels.items() if v.null_count < len(v)})


# ---- `| regexp` -----------------------------------------------------------------------------------------

_MISSING_CAPTURE = "at least one named capture must be supplied"


def _captures_in_order(node: Node, out: list[Node]) -> None:
    if node.op == Op.CAPTURE:
        out.append(node)
    for sub in node.subs:
        _captures_in_order(sub, out)


def parse_regexp(lines: pa.Array, regex: str) -> Extraction:
    """`| regexp "(?P<a>...)"`: named groups of the first match (a group that took no part gives "")."""
    tree = parse_regex(regex)
    names = capture_names(tree)
    if not names:
        raise ValueError(_MISSING_CAPTURE)
    seen: set[str] = set()
    for name in names:
        if not name:
            continue
        if name in seen:
            raise ValueError(f"duplicate extracted label name '{name}'")
        seen.add(name)
    if not seen:
        raise ValueError(_MISSING_CAPTURE)
    groups: list[Node] = []
    _captures_in_order(tree, groups)
    # Rust names groups more strictly than Go: extract them by position, the whole match as group 1.
    for node in groups:
        node.name = ""
    body = to_rust(tree, captures=True)
    text = pl.Series(lines).fill_null("")
    extracted = text.str.extract_groups(f"({body})")
    matched = extracted.struct.field("1").is_not_null()
    labels: dict[str, pa.Array] = {}
    taken: set[str] = set()
    for position, node in enumerate(groups, start=2):
        name = sanitize_label_key(names[node.cap - 1]) if names[node.cap - 1] else ""
        if not name or name in taken:
            continue
        taken.add(name)
        values = extracted.struct.field(str(position))
        values = values.fill_null("").zip_with(matched, pl.Series([None] * len(text), dtype=pl.String))
        array = _to_str_array(values)
        if array.null_count < len(array):
            labels[name] = array
    return Extraction(labels)
