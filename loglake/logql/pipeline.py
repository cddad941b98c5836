"""The log pipeline over columns: a Frame holds surviving rows and their labels; each stage maps a Frame to a Frame.

Labels follow Loki's labels builder: stream labels, structured metadata and parsed labels (parsers and
`label_format`), each a column with nulls where a row lacks the label; later categories hide earlier ones.
`__error__` / `__error_details__` are two more columns. Per-row Python runs only for templates, on the rows
that are left when the template stage runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loglake.logql import ast
from loglake.logql.errors import QueryError
from loglake.logql.lexer import DurationError, go_parse_float, parse_bytes, parse_go_duration
from loglake.logql.linefilter import (
    execution_order,
    ip_label_matches,
    label_matcher_mask,
    line_filter_mask,
    parse_ip_pattern,
)
from loglake.logql.printer import humanize_bytes
from loglake.model import LabelSet

NS = 1_000_000_000
ERROR = "__error__"
ERROR_DETAILS = "__error_details__"
EXTRACTED = "_extracted"
_STR = pa.string()

Item = ast.Stage | tuple[ast.LineFilter, ...]


def _null(n: int) -> pa.Array:
    return pa.nulls(n, _STR)


def _as_str(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    return a if a.type == _STR else a.cast(_STR)


def _mask(a: pa.Array | np.ndarray) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return a.to_numpy(zero_copy_only=False).astype(bool)


def _set_where(old: pa.Array | None, new: pa.Array, where: np.ndarray | None, n: int) -> pa.Array:
    """Return `new` where `where` (and `new` is not null), else `old`."""
    if where is None:
        if old is None:
            return new
        return pc.coalesce(new, old)
    cond = pa.array(where)
    base = old if old is not None else _null(n)
    return pc.if_else(pc.and_(cond, pc.is_valid(new)), new, base)


class Frame:
    """Rows of one piece that are still in the pipeline, with their current line and labels as columns."""

    def __init__(self, rows: pa.Table, streams: dict[int, LabelSet]) -> None:
        self.streams = streams
        self.n = rows.num_rows
        self.sid = rows.column("stream_id").to_numpy()
        self.ts = rows.column("ts").to_numpy()
        self.row = np.arange(self.n)  # each row's position in the table the frame was made of
        self.line: pa.Array | None = _as_str(rows.column("line")) if "line" in rows.column_names else None
        self.base_del: dict[str, np.ndarray] = {}
        self._meta: dict[str, pa.Array] | None = None
        self._meta_raw: pa.Array | None = None
        self._meta_keys: set[str] | None = None
        self.parsed: dict[str, pa.Array] = {}
        self.err: pa.Array | None = None
        self.err_details: pa.Array | None = None
        self._base: dict[str, pa.Array] = {}
        self._sids: tuple[np.ndarray, np.ndarray] | None = None
        if "metadata" in rows.column_names:
            self._meta_raw = rows.column("metadata").combine_chunks()

    # ---- construction -----------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, pa.Array]:
        """Structured metadata as label columns (built on first use)."""
        if self._meta is None:
            self._meta = {}
            raw, self._meta_raw = self._meta_raw, None
            if raw is not None and len(raw) and raw.null_count < len(raw):
                self._init_meta(raw)
        return self._meta

    def meta_keys(self) -> set[str]:
        """The structured metadata names present in this frame."""
        if self._meta is not None:
            return {k for k, v in self._meta.items() if v.null_count < self.n}
        if self._meta_keys is None:
            raw = self._meta_raw
            empty = raw is None or not len(raw) or raw.null_count == len(raw)
            self._meta_keys = set() if empty else set(pc.unique(raw.keys).to_pylist())
        return self._meta_keys

    def only_stream_labels(self, names: Sequence[str] | None) -> bool:
        """Say whether the label set (or the `names` among it) of every row is just its stream's."""
        if self.parsed or self.err is not None or self.err_details is not None:
            return False
        if any(v.any() for v in self.base_del.values()):
            return False
        keys = self.meta_keys()
        return not keys if names is None else not keys.intersection(names)

    def _init_meta(self, meta: pa.Array) -> None:
        keys = pc.unique(meta.keys).to_pylist()
        for key in keys:
            values = _as_str(pc.map_lookup(meta, pa.scalar(key), "first"))
            clash = self.base_has(key)
            if clash.any():
                # Structured metadata named like a stream label joins as name_extracted (Loki's Add).
                hit = pa.array(clash)
                other = pc.if_else(hit, values, _null(self.n))
                values = pc.if_else(hit, _null(self.n), values)
                name = key + EXTRACTED
                self.meta[name] = pc.coalesce(self.meta[name], other) if name in self.meta else other
            if values.null_count < self.n:
                self.meta[key] = pc.coalesce(self.meta[key], values) if key in self.meta else values

    def _stream_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sids is None:
            uniq, inverse = np.unique(self.sid, return_inverse=True)
            self._sids = (uniq, inverse.reshape(-1))
        return self._sids

    def stream_column(self, name: str) -> pa.Array:
        """The value of stream label `name` per row (null where the stream lacks it), ignoring drops."""
        col = self._base.get(name)
        if col is None:
            uniq, inverse = self._stream_index()
            per = pa.array([dict(self.streams[s]).get(name) for s in uniq.tolist()], _STR)
            col = self._base[name] = per.take(pa.array(inverse)) if self.n else _null(0)
        return col

    def base_has(self, name: str) -> np.ndarray:
        """Where the row's stream has label `name` (Loki's BaseHas: drops do not count)."""
        return _mask(pc.is_valid(self.stream_column(name)))

    # ---- label access -----------------------------------------------------------------------------------

    def get(self, name: str) -> pa.Array:
        """The label's current value per row; null where the row has no such label."""
        if name == ERROR:
            return self.err if self.err is not None else _null(self.n)
        base = self.stream_column(name)
        deleted = self.base_del.get(name)
        if deleted is not None and deleted.any():
            base = pc.if_else(pa.array(deleted), _null(self.n), base)
        meta = self._meta_column(name) if self._has_meta(name) else None
        layers = [c for c in (self.parsed.get(name), meta) if c is not None]
        return pc.coalesce(*layers, base) if layers else base

    def _meta_column(self, name: str) -> pa.Array | None:
        """One structured metadata label, without building the others."""
        if self._meta is not None:
            return self._meta.get(name)
        key = name if name in self.meta_keys() else name.removesuffix(EXTRACTED)
        values = _as_str(pc.map_lookup(self._meta_raw, pa.scalar(key), "first"))
        clash = pa.array(self.base_has(key))
        if key == name:
            values = pc.if_else(clash, _null(self.n), values)
        else:
            values = pc.if_else(clash, values, _null(self.n))
        if name in self.meta_keys() and name + EXTRACTED != name and key != name:
            values = pc.coalesce(values, _as_str(pc.map_lookup(self._meta_raw, pa.scalar(name), "first")))
        return values if values.null_count < self.n else None

    def _has_meta(self, name: str) -> bool:
        if self._meta is not None:
            return name in self._meta
        keys = self.meta_keys()
        return name in keys or name.removesuffix(EXTRACTED) in keys

    def stream_names(self) -> set[str]:
        """The stream label names of the streams in this frame."""
        uniq, _ = self._stream_index()
        return {n for s in uniq.tolist() for n, _ in self.streams[s]}

    def names(self) -> list[str]:
        """Every label name some row may have (besides the error labels)."""
        names = dict.fromkeys(sorted(self.stream_names()))
        names.update(dict.fromkeys(self.meta))
        names.update(dict.fromkeys(self.parsed))
        return list(names)

    def set_parsed(self, name: str, values: pa.Array, where: np.ndarray | None = None) -> None:
        """Set a parsed label where `values` is not null (and `where`), as Loki's Set(ParsedLabel, ...)."""
        values = _as_str(values)
        if where is not None:
            values = pc.if_else(pa.array(where), values, _null(self.n))
        if values.null_count == self.n:
            return
        self.parsed[name] = pc.coalesce(values, self.parsed[name]) if name in self.parsed else values
        if name in self.meta:
            # A parsed label replaces structured metadata of the same name.
            self.meta[name] = pc.if_else(pc.is_valid(values), _null(self.n), self.meta[name])

    def delete(self, name: str, where: np.ndarray | None = None) -> None:
        """Remove label `name` (every category) from the rows `where` (all rows when None)."""
        if name == ERROR:
            self.err = None if where is None else _clear(self.err, where)
            return
        if name == ERROR_DETAILS:
            self.err_details = None if where is None else _clear(self.err_details, where)
            return
        mask = np.ones(self.n, dtype=bool) if where is None else where
        for layer in (self.parsed, self.meta):
            if name in layer:
                layer[name] = _clear(layer[name], mask)
        prev = self.base_del.get(name)
        self.base_del[name] = mask if prev is None else prev | mask

    def set_error(
        self, error: pa.Array | str, details: pa.Array | str | None, where: np.ndarray, only_if_none: bool = False
    ) -> None:
        """Set `__error__` (and details) on the rows `where`; with only_if_none, keep an earlier error."""
        if only_if_none and self.err is not None:
            where = where & ~_mask(pc.is_valid(self.err))
        if not where.any():
            return
        cond = pa.array(where)
        err = pa.array([error] * self.n, _STR) if isinstance(error, str) else _as_str(error)
        self.err = pc.if_else(cond, err, self.err if self.err is not None else _null(self.n))
        if details is not None:
            det = pa.array([details] * self.n, _STR) if isinstance(details, str) else _as_str(details)
            det = pc.if_else(pc.equal(det, ""), _null(self.n), det)
            base = self.err_details if self.err_details is not None else _null(self.n)
            self.err_details = pc.if_else(pc.and_(cond, pc.is_valid(det)), det, base)

    def has_error(self) -> np.ndarray:
        """Where a row carries `__error__` (or error details)."""
        out = np.zeros(self.n, dtype=bool)
        for col in (self.err, self.err_details):
            if col is not None:
                out |= _mask(pc.is_valid(col))
        return out

    # ---- rows -------------------------------------------------------------------------------------------

    def take(self, keep: np.ndarray) -> Frame:
        """Keep the rows where `keep` is True (or the given row indices)."""
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        if keep.dtype == bool and len(idx) == self.n:
            return self
        sel = pa.array(idx, pa.int64())
        out = Frame.__new__(Frame)
        out.streams = self.streams
        out.n = len(idx)
        out.sid = self.sid[idx]
        out.ts = self.ts[idx]
        out.row = self.row[idx]
        out.line = self.line.take(sel) if self.line is not None else None
        out.base_del = {k: v[idx] for k, v in self.base_del.items()}
        out._meta = {k: v.take(sel) for k, v in self._meta.items()} if self._meta is not None else None
        out._meta_raw = self._meta_raw.take(sel) if self._meta_raw is not None else None
        out._meta_keys = None
        out.parsed = {k: v.take(sel) for k, v in self.parsed.items()}
        out.err = self.err.take(sel) if self.err is not None else None
        out.err_details = self.err_details.take(sel) if self.err_details is not None else None
        out._base = {k: v.take(sel) for k, v in self._base.items()}
        out._sids = None
        return out

    # ---- label sets -------------------------------------------------------------------------------------

    def label_keys(self, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Group rows by their label set; return (group of each row, one representative row per group).

        With `names`, only those labels count (`by` grouping); otherwise every label does.
        """
        if self.n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        cols: dict[str, Any] = {}
        if names is None:
            cols["__sid"] = self.sid
            for k, v in self.base_del.items():
                if v.any():
                    cols[f"__del_{k}"] = v
            for prefix, layer in (("m", self.meta), ("p", self.parsed)):
                for k, v in layer.items():
                    if v.null_count < self.n:
                        cols[f"{prefix}_{k}"] = v
            for k, v in (("e", self.err), ("d", self.err_details)):
                if v is not None and v.null_count < self.n:
                    cols[k] = v
        else:
            for i, name in enumerate(names):
                cols[f"g{i}"] = self.get(name)
            err = self.err
            if err is not None and err.null_count < self.n:
                # Rows with an error keep all their labels (Loki's GroupedLabels), so they split by stream too.
                cols["e"] = err
                cols["__sid"] = np.where(_mask(pc.is_valid(err)), self.sid, 0)
        if not cols:
            return np.zeros(self.n, dtype=np.int64), np.zeros(1, dtype=np.int64)
        if len(cols) == 1 and "__sid" in cols:
            _, first, inverse = np.unique(self.sid, return_index=True, return_inverse=True)
            return inverse.reshape(-1), first
        df = pl.DataFrame({k: (pl.from_arrow(v) if isinstance(v, pa.Array) else v) for k, v in cols.items()})
        hashes = df.hash_rows(seed=7).to_numpy()
        _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        return inverse.reshape(-1), first

    def labels_of(self, row: int, names: Sequence[str] | None = None, without: bool = False) -> dict[str, str]:
        """The label set of one row: all labels, only `names` (by) or all but `names` (without)."""
        has_err = self.err is not None and self.err[row].is_valid
        if names is not None and not without and not has_err:
            out = {}
            for name in names:
                v = self.get_one(name, row)
                if v is not None:
                    out[name] = v
            return out
        deleted = {k for k, v in self.base_del.items() if v[row]}
        out = {k: v for k, v in self.streams[int(self.sid[row])] if k not in deleted}
        for layer in (self.meta, self.parsed):
            for k, col in layer.items():
                v = col[row].as_py()
                if v is not None:
                    out[k] = v
        if has_err:
            out[ERROR] = self.err[row].as_py()
        if self.err_details is not None and self.err_details[row].is_valid:
            out[ERROR_DETAILS] = self.err_details[row].as_py()
        if without and names is not None and not has_err:
            for name in names:
                out.pop(name, None)
        return out

    def categorized_labels(self) -> list[tuple[dict[str, str], dict[str, dict[str, str]]]]:
        """Every row's labels as Loki's categorize-labels encoding writes them: (stream labels, extras), the extras
        holding only the non-empty groups of `structuredMetadata` and `parsed`, names sorted."""
        meta = {k: col.to_pylist() for k, col in self.meta.items()}
        parsed = {k: col.to_pylist() for k, col in self.parsed.items()}
        if self.err is not None:
            parsed[ERROR] = self.err.to_pylist()
        if self.err_details is not None:
            parsed[ERROR_DETAILS] = self.err_details.to_pylist()
        deleted = {k: v for k, v in self.base_del.items() if v.any()}
        out = []
        for row in range(self.n):
            p = {k: vs[row] for k, vs in parsed.items() if vs[row] is not None}
            m = {k: vs[row] for k, vs in meta.items() if vs[row] is not None and k not in p}
            # As Loki's categorizing iterator: a name that is metadata or parsed on this row is not a stream label.
            stream = {
                k: v
                for k, v in self.streams[int(self.sid[row])]
                if k not in m and k not in p and not (k in deleted and deleted[k][row])
            }
            extras: dict[str, dict[str, str]] = {}
            if m:
                extras["structuredMetadata"] = dict(sorted(m.items()))
            if p:
                extras["parsed"] = dict(sorted(p.items()))
            out.append((stream, extras))
        return out

    def get_one(self, name: str, row: int) -> str | None:
        """The value of one label on one row (None when missing)."""
        layers = [self.parsed]
        if self._has_meta(name):
            layers.append(self.meta)
        for layer in layers:
            col = layer.get(name)
            if col is not None and col[row].is_valid:
                return col[row].as_py()
        deleted = self.base_del.get(name)
        if deleted is not None and deleted[row]:
            return None
        return dict(self.streams[int(self.sid[row])]).get(name)


def _clear(col: pa.Array | None, where: np.ndarray) -> pa.Array | None:
    if col is None:
        return None
    return pc.if_else(pa.array(where), _null(len(col)), col)


# ---- plans ------------------------------------------------------------------------------------------------


@dataclass
class Hints:
    """Which labels the rest of the query reads (Loki's parser hints); None means every label."""

    wanted: frozenset[str] | None = None
    no_labels: bool = False
    # A first pass that picks rows for a full one: lines the column path cannot read are parsed in full.
    prefilter: bool = False

    def skip_parsers(self) -> bool:
        """Parsers have nothing to extract: the result needs no labels and no stage reads one."""
        return self.no_labels and not self.wanted


def required_labels(items: Iterable[Item]) -> set[str]:
    """Label names the stages read (label filters, templates, renames)."""
    out: set[str] = set()
    for item in items:
        if isinstance(item, ast.LabelFilterStage):
            out |= filter_names(item.filter)
        elif isinstance(item, ast.LineFormat):
            out |= _template(item.template).fields or set()
        elif isinstance(item, ast.LabelFormat):
            for f in item.items:
                out |= {f.value} if f.rename else set(_template(f.value).fields or ())
    return out


def filter_names(f: ast.LabelFilter) -> set[str]:
    """The label names a label filter reads."""
    if isinstance(f, ast.BinaryLabelFilter):
        return filter_names(f.left) | filter_names(f.right)
    if isinstance(f, ast.StringLabelFilter):
        return {f.matcher.name}
    return {f.name}  # type: ignore[attr-defined]


def prefilter_items(items: Sequence[Item]) -> list[Item] | None:
    """The stages up to the last label filter, when a hinted first pass over them keeps exactly the rows a full
    pass keeps (line filters, `json` without parameters and label filters only); else None."""
    last = max((i for i, it in enumerate(items) if isinstance(it, ast.LabelFilterStage)), default=-1)
    prefix = list(items[: last + 1])
    if not any(isinstance(it, ast.JsonParser) for it in prefix):
        return None
    for it in prefix:
        if not (
            isinstance(it, tuple | ast.LabelFilterStage) or (isinstance(it, ast.JsonParser) and not it.extractions)
        ):
            return None
    return prefix


def prefilter_hints(prefix: Sequence[Item]) -> Hints:
    """Hints for the first pass over prefilter_items."""
    names = required_labels(prefix)
    return Hints(frozenset(names | {n.removesuffix(EXTRACTED) for n in names}), prefilter=True)


def make_hints(
    items: Sequence[Item], extra: Iterable[str], groups: Sequence[str] | None, without: bool, no_labels: bool
) -> Hints:
    """Build parser hints as Loki does: parsers learn what to extract only under `by` grouping or no labels."""
    names = required_labels(items) | set(extra) | set(groups or ())
    names |= {n.removesuffix(EXTRACTED) for n in names}
    if no_labels:
        return Hints(frozenset(names), False) if names else Hints(frozenset(), True)
    if without or not groups:
        return Hints()
    return Hints(frozenset(names))


def split_pushdown(stages: Sequence[ast.Stage]) -> tuple[list[ast.LineFilter], list[ast.LabelFilter], list[Item]]:
    """Split a pipeline into line filters and stream-label filters that can run while loading, and the rest."""
    items = execution_order(stages)
    line_filters: list[ast.LineFilter] = []
    label_filters: list[ast.LabelFilter] = []
    i = 0
    while i < len(items):
        item = items[i]
        if isinstance(item, tuple):
            line_filters.extend(item)
        elif (
            isinstance(item, ast.LabelFilterStage)
            and _string_only(item.filter)
            and ERROR not in filter_names(item.filter)
        ):
            label_filters.append(item.filter)
        else:
            break
        i += 1
    return line_filters, label_filters, list(items[i:])


def _string_only(f: ast.LabelFilter) -> bool:
    if isinstance(f, ast.BinaryLabelFilter):
        return _string_only(f.left) and _string_only(f.right)
    return isinstance(f, ast.StringLabelFilter)


def needs_line(items: Sequence[Item]) -> bool:
    """Say whether any stage reads the log line."""
    return any(not isinstance(i, ast.LabelFilterStage | ast.DropLabels | ast.KeepLabels) for i in items)


# ---- running stages ---------------------------------------------------------------------------------------


_PARSER_STAGES = (ast.JsonParser, ast.LogfmtParser, ast.UnpackParser, ast.RegexpParser, ast.PatternParser)


def validate(items: Sequence[Item]) -> None:
    """Raise a 400 where Loki refuses to build a stage (bad json/logfmt paths, patterns, regexes, templates)."""
    empty = pa.table(
        {"stream_id": pa.array([], pa.int64()), "ts": pa.array([], pa.int64()), "line": pa.array([], pa.string())}
    )
    for item in items:
        if isinstance(item, _PARSER_STAGES):
            frame = Frame(empty, {})
            try:
                _STAGES[type(item)](item, frame, Hints())
            except ValueError as exc:
                raise QueryError(400, f"parse error : stage '{item}' : {exc}") from None
        elif isinstance(item, ast.LineFormat):
            _template(item.template)
        elif isinstance(item, ast.LabelFormat):
            for f in item.items:
                if not f.rename:
                    _template(f.value)


def run(frame: Frame, items: Sequence[Item], hints: Hints) -> Frame:
    """Run pipeline stages (in execution order) over a frame; return the rows that are kept."""
    for item in items:
        if frame.n == 0:
            return frame
        if isinstance(item, tuple):
            frame = frame.take(line_filter_mask(item, frame.line if frame.line is not None else _null(frame.n)))
        elif isinstance(item, ast.LabelFilterStage):
            frame = frame.take(filter_mask(item.filter, frame, np.ones(frame.n, dtype=bool)))
        else:
            try:
                frame = _STAGES[type(item)](item, frame, hints)
            except ValueError as exc:
                raise QueryError(400, f"parse error : stage '{item}' : {exc}") from None
    return frame


def filter_mask(f: ast.LabelFilter, frame: Frame, active: np.ndarray) -> np.ndarray:
    """Which rows a label filter keeps (meaningful on `active` rows); type errors set `__error__`."""
    if isinstance(f, ast.BinaryLabelFilter):
        left = filter_mask(f.left, frame, active)
        if f.is_and:
            return left & filter_mask(f.right, frame, active)
        # `or` stops at the left side where it matches, so the right side's errors only happen elsewhere.
        return left | filter_mask(f.right, frame, active & ~left)
    if isinstance(f, ast.StringLabelFilter):
        return label_matcher_mask(f.matcher, frame.get(f.matcher.name))
    if isinstance(f, ast.IpLabelFilter):
        return _ip_mask(f, frame)
    values = frame.get(f.name)
    present = _mask(pc.is_valid(values))
    if isinstance(f, ast.NumericLabelFilter):
        parsed, ok, details = _convert(values, "float")
        target = f.value
    elif isinstance(f, ast.DurationLabelFilter):
        parsed, ok, details = _convert(values, "duration_ns")
        target = f.value
    else:
        parsed, ok, details = _convert(values, "bytes")
        # Loki's query frontend sends the query to its queriers as text, and a byte size prints rounded
        # (9KiB is "9.2kB"): the querier compares with the value read back from that text.
        target = parse_bytes(humanize_bytes(f.value).replace(" ", ""))
    bad = present & ~ok
    frame.set_error("LabelFilterErr", details, bad & active, only_if_none=True)
    with np.errstate(invalid="ignore"):
        result = _compare(parsed, f.op, target)
    return np.where(present, np.where(ok, result, True), False)


def _compare(values: np.ndarray, op: ast.CompareOp, target: float) -> np.ndarray:
    if op == ast.CompareOp.EQ:
        return values == target
    if op == ast.CompareOp.NEQ:
        return values != target
    if op == ast.CompareOp.GT:
        return values > target
    if op == ast.CompareOp.GTE:
        return values >= target
    if op == ast.CompareOp.LT:
        return values < target
    return values <= target


def _ip_mask(f: ast.IpLabelFilter, frame: Frame) -> np.ndarray:
    matcher = parse_ip_pattern(f.pattern)
    encoded = pc.dictionary_encode(frame.get(f.name))
    # One address test per distinct value; a missing label never matches, a row with an error always passes.
    hits = np.array([ip_label_matches(matcher, v) for v in encoded.dictionary.to_pylist()] + [False])
    idx = encoded.indices.fill_null(len(hits) - 1).to_numpy(zero_copy_only=False).astype(np.int64)
    present = _mask(encoded.indices.is_valid())
    out = hits[idx] if f.op != ast.CompareOp.NEQ else present & ~hits[idx]
    return out | frame.has_error()


# Plain decimals and single-unit durations, the common cases, are converted by polars; the rest by Go's rules.
_PLAIN_FLOAT = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_SIMPLE_DURATION = r"^(\d{1,12})(ns|us|µs|ms|s|m|h)$"
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS}


def _fast_convert(uniq: pl.Series, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Numbers for the distinct values polars can convert exactly as Go would, and where it could."""
    if kind == "float":
        ok = uniq.str.contains(_PLAIN_FLOAT).fill_null(False)
        nums = uniq.cast(pl.Float64, strict=False)
    elif kind in ("duration", "duration_ns"):
        parts = uniq.str.extract_groups(_SIMPLE_DURATION)
        number = parts.struct.field("1").cast(pl.Int64, strict=False)
        scale = parts.struct.field("2").replace_strict(_UNIT_NS, default=None, return_dtype=pl.Int64)
        ns = (number * scale).fill_null(0).to_numpy()
        ok = (number * scale).is_not_null()
        nums = pl.Series(ns.astype(np.float64) if kind == "duration_ns" else _go_seconds(ns))
    else:
        return np.zeros(len(uniq)), np.zeros(len(uniq), dtype=bool)
    ok_np = ok.to_numpy() & nums.is_not_null().to_numpy()
    return nums.fill_null(0.0).to_numpy(), ok_np


def _convert(values: pa.Array, kind: str) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Parse label text into numbers: (values, parsed ok, Go error text where not), nulls count as not ok."""
    n = len(values)
    encoded = pc.dictionary_encode(values)
    uniq = encoded.dictionary
    fast, fast_ok = _fast_convert(pl.from_arrow(uniq), kind) if len(uniq) else (np.zeros(0), np.zeros(0, bool))
    nums = np.append(fast, 0.0)
    oks = np.append(fast_ok, False)
    errs: list[str | None] = [None] * (len(uniq) + 1)
    slow = np.flatnonzero(~fast_ok)
    texts = uniq.take(pa.array(slow, pa.int64())).to_pylist() if len(slow) else []
    for j, text in zip(slow.tolist(), texts, strict=True):
        try:
            nums[j] = _CONVERTERS[kind](text)
            oks[j] = True
        except (ValueError, DurationError, OverflowError) as exc:
            errs[j] = str(exc)
    idx = encoded.indices.fill_null(len(uniq)).to_numpy(zero_copy_only=False) if n else np.zeros(0, dtype=np.int64)
    details = pa.array(errs, _STR).take(pa.array(idx)) if n else _null(0)
    return nums[idx], oks[idx], details


def _bytes(text: str) -> float:
    try:
        return float(parse_bytes(text))
    except ValueError as exc:
        message = str(exc)
        if message.startswith("invalid byte size"):
            raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None
        raise


def _go_seconds(ns: np.ndarray | int) -> Any:
    """Go's Duration.Seconds(): whole seconds plus the remainder, so results match Loki to the last bit."""
    arr = np.asarray(ns, dtype=np.int64)
    whole = np.sign(arr) * (np.abs(arr) // NS)  # Go divides towards zero
    out = whole.astype(np.float64) + (arr - whole * NS).astype(np.float64) / 1e9
    return out if isinstance(ns, np.ndarray) else float(out)


_CONVERTERS: dict[str, Callable[[str], float]] = {
    "float": go_parse_float,
    "duration_ns": lambda t: float(parse_go_duration(t)),
    "duration": lambda t: _go_seconds(parse_go_duration(t)),
    "bytes": _bytes,
}


# ---- parser stages -----------------------------------------------------------------------------------------


def _apply_extraction(frame: Frame, ex: Any) -> Frame:
    """Add parsed labels with Loki's `_extracted` rename where a stream label or metadata has the name."""
    for name, values in ex.labels.items():
        values = _as_str(values)
        if values.null_count == frame.n:
            continue
        clash = frame.base_has(name)
        meta = frame.meta.get(name)
        if meta is not None:
            clash = clash | _mask(pc.is_valid(meta))
        if clash.any():
            frame.set_parsed(name + EXTRACTED, values, clash)
            frame.set_parsed(name, values, ~clash)
        else:
            frame.set_parsed(name, values)
    if ex.error is not None and ex.error.null_count < frame.n:
        where = _mask(pc.is_valid(ex.error))
        frame.set_error(ex.error, ex.error_details, where)
    if ex.line is not None and frame.line is not None and ex.line.null_count < frame.n:
        frame.line = pc.coalesce(_as_str(ex.line), frame.line)
    return frame


def _wanted(hints: Hints) -> Any:
    from loglake.logql import parsers as lp

    return lp.Wanted(hints.wanted) if hints.wanted is not None else None


def _json(stage: ast.JsonParser, frame: Frame, hints: Hints) -> Frame:
    from loglake.logql import parsers as lp

    if stage.extractions:
        ex = lp.parse_json_fields(frame.line, [(e.name, e.expression) for e in stage.extractions])
    elif hints.skip_parsers():
        return frame
    else:
        ex = lp.parse_json(frame.line, _wanted(hints), full_rest=hints.prefilter)
    return _apply_extraction(frame, ex)


def _logfmt(stage: ast.LogfmtParser, frame: Frame, hints: Hints) -> Frame:
    from loglake.logql import parsers as lp

    if stage.extractions:
        fields = [(e.name, e.expression) for e in stage.extractions]
        ex = lp.parse_logfmt_fields(frame.line, fields, stage.strict, stage.keep_empty)
    elif hints.skip_parsers():
        return frame
    else:
        ex = lp.parse_logfmt(frame.line, stage.strict, stage.keep_empty, _wanted(hints))
    return _apply_extraction(frame, ex)


def _unpack(stage: ast.UnpackParser, frame: Frame, hints: Hints) -> Frame:
    from loglake.logql import parsers as lp

    if hints.skip_parsers():
        return frame
    return _apply_extraction(frame, lp.parse_unpack(frame.line, _wanted(hints)))


def _regexp(stage: ast.RegexpParser, frame: Frame, hints: Hints) -> Frame:
    from loglake.logql import parsers as lp

    return _apply_extraction(frame, lp.parse_regexp(frame.line, stage.regex))


def _pattern(stage: ast.PatternParser, frame: Frame, hints: Hints) -> Frame:
    from loglake.logql import parsers as lp

    if hints.skip_parsers():
        return frame
    return _apply_extraction(frame, lp.parse_pattern(frame.line, stage.pattern))


# ---- formatters -------------------------------------------------------------------------------------------

_ANSI = (
    "[\u001b\u009b][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[a-zA-Z\\d]*)*)?\u0007)"
    "|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PRZcf-ntqry=><~]))"
)


def _decolorize(stage: ast.Decolorize, frame: Frame, hints: Hints) -> Frame:
    series = pl.from_arrow(frame.line)
    frame.line = series.str.replace_all(_ANSI, "").to_arrow().cast(_STR)
    return frame


_SIMPLE_FIELD = re.compile(r"^\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


@lru_cache(maxsize=256)
def _template(text: str) -> Any:
    from loglake.gotemplate import Template, TemplateError

    try:
        return Template(text)
    except TemplateError as exc:
        raise QueryError(400, f"invalid template: {exc}") from None


def _row_maps(frame: Frame) -> list[dict[str, str]]:
    """The label map of every row (templates' `.`), built once per distinct label set."""
    groups, first = frame.label_keys()
    maps = [frame.labels_of(int(r)) for r in first.tolist()]
    return [maps[g] for g in groups.tolist()]


def _render_all(
    text: str, frame: Frame, maps: list[dict[str, str]] | None
) -> tuple[list[str | None], list[str | None]]:
    """Render a template on every row: (output or None on error, error details or None)."""
    from loglake.gotemplate import TemplateRuntimeError

    tmpl = _template(text)
    if maps is None:
        maps = _row_maps(frame)
    lines = frame.line.to_pylist() if frame.line is not None else [""] * frame.n
    ts = frame.ts.tolist()
    out: list[str | None] = []
    errs: list[str | None] = []
    for labels, line, t in zip(maps, lines, ts, strict=True):
        try:
            out.append(tmpl.render(labels, line or "", t))
            errs.append(None)
        except TemplateRuntimeError as exc:
            out.append(None)
            errs.append(str(exc))
    return out, errs


def _line_format(stage: ast.LineFormat, frame: Frame, hints: Hints) -> Frame:
    simple = _SIMPLE_FIELD.match(stage.template)
    if simple:
        frame.line = frame.get(simple.group(1)).fill_null("")
        return frame
    out, errs = _render_all(stage.template, frame, None)
    failed = np.array([e is not None for e in errs], dtype=bool)
    new = pa.array(out, _STR)
    frame.line = pc.coalesce(new, frame.line) if frame.line is not None else new.fill_null("")
    if failed.any():
        frame.set_error("TemplateFormatErr", pa.array(errs, _STR), failed)
    return frame


def _label_format(stage: ast.LabelFormat, frame: Frame, hints: Hints) -> Frame:
    maps: list[dict[str, str]] | None = None
    for item in stage.items:
        if item.rename:
            values = frame.get(item.value)
            present = _mask(pc.is_valid(values))
            if present.any():
                frame.set_parsed(item.name, values, present)
                frame.delete(item.value, present)
            continue
        if maps is None:
            # Loki renders every template of one stage against the labels as they were at its first template.
            maps = _row_maps(frame)
        out, errs = _render_all(item.value, frame, maps)
        failed = np.array([e is not None for e in errs], dtype=bool)
        frame.set_parsed(item.name, pa.array(out, _STR))
        if failed.any():
            frame.set_error("TemplateFormatErr", pa.array(errs, _STR), failed)
    return frame


def _matches(matcher: Any, values: pa.Array) -> np.ndarray:
    return label_matcher_mask(matcher, values)


def _drop(stage: ast.DropLabels, frame: Frame, hints: Hints) -> Frame:
    for sel in stage.labels:
        if sel.matcher is None:
            present = _mask(pc.is_valid(frame.get(sel.name))) if sel.name not in (ERROR, ERROR_DETAILS) else None
            frame.delete(sel.name, present)
            continue
        name = sel.matcher.name
        if name == ERROR_DETAILS:
            values = frame.err_details if frame.err_details is not None else _null(frame.n)
        else:
            values = frame.get(name)
        frame.delete(name, _matches(sel.matcher, values))
    return frame


def _keep(stage: ast.KeepLabels, frame: Frame, hints: Hints) -> Frame:
    if not stage.labels:
        return frame
    plain = {s.name for s in stage.labels if s.matcher is None}
    matchers = [s.matcher for s in stage.labels if s.matcher is not None]
    for name in frame.names():
        if name in plain or name in (ERROR, ERROR_DETAILS):
            continue
        values = frame.get(name)
        present = _mask(pc.is_valid(values))
        if not present.any():
            continue
        keep = np.zeros(frame.n, dtype=bool)
        for m in matchers:
            if m.name == name:
                keep |= _matches(m, values)
        frame.delete(name, present & ~keep)
    return frame


_STAGES: dict[type, Callable[[Any, Frame, Hints], Frame]] = {
    ast.JsonParser: _json,
    ast.LogfmtParser: _logfmt,
    ast.UnpackParser: _unpack,
    ast.RegexpParser: _regexp,
    ast.PatternParser: _pattern,
    ast.Decolorize: _decolorize,
    ast.LineFormat: _line_format,
    ast.LabelFormat: _label_format,
    ast.DropLabels: _drop,
    ast.KeepLabels: _keep,
}


# ---- unwrap -----------------------------------------------------------------------------------------------


def unwrap(frame: Frame, u: ast.Unwrap) -> tuple[Frame, np.ndarray]:
    """Convert the unwrapped label to numbers; rows without it are dropped, bad ones carry SampleExtractionErr."""
    values = frame.get(u.label)
    present = _mask(pc.is_valid(values)) & _mask(pc.not_equal(values.fill_null(""), ""))
    frame = frame.take(present)
    values = values.filter(pa.array(present))
    kind = {"": "float", "bytes": "bytes", "duration": "duration", "duration_seconds": "duration"}[u.conversion]
    nums, ok, details = _convert(values, kind)
    nums = np.where(ok, nums, 0.0)
    if (~ok).any():
        frame.set_error("SampleExtractionErr", details, ~ok)
    if u.post_filters:
        keep = np.ones(frame.n, dtype=bool)
        for f in u.post_filters:
            keep &= filter_mask(f, frame, keep.copy())
        frame = frame.take(keep)
        nums = nums[keep]
    return frame, nums
