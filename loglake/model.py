"""The domain's shared types: label sets, stream ids, label matchers and entry batches."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglake.quoting import QuotingError, quote, unquote_at

LabelSet = tuple[tuple[str, str], ...]
"""A stream's labels: (name, value) pairs sorted by name, names unique."""

LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

METADATA_TYPE = pa.map_(pa.string(), pa.string())
"""Arrow type of the structured-metadata column: name → value, null when an entry has none."""

ENTRY_SCHEMA = pa.schema(
    [
        pa.field("stream_id", pa.int64(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("line", pa.large_string(), nullable=False),
        pa.field("metadata", METADATA_TYPE),
    ]
)
"""Columns of stored entries, in the head, the WAL and the Parquet blocks."""


def format_labels(labels: LabelSet | dict[str, str]) -> str:
    """Return Prometheus label-set text, names sorted: `{a="b", c="d"}`."""
    items = sorted(labels.items()) if isinstance(labels, dict) else labels
    return "{" + ", ".join(f"{k}={quote(v)}" for k, v in items) + "}"


def stream_id(labels: LabelSet) -> int:
    """Return the 63-bit id of a stream (fits a signed 64-bit column in Arrow and SQLite)."""
    digest = hashlib.blake2b(format_labels(labels).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class LabelTextError(ValueError):
    """Label-set text that cannot be parsed."""


def parse_labels(text: str) -> list[tuple[str, str]]:
    """Parse Prometheus label-set text `{a="b", c="d"}` into pairs in written order.

    Names are not validated here (the caller applies Loki's rules and reports them).
    """
    s = text.strip()
    if not s.startswith("{"):
        raise LabelTextError("expected '{' at the start of the label set")
    pairs: list[tuple[str, str]] = []
    i = 1
    n = len(s)

    def skip_ws(j: int) -> int:
        while j < n and s[j] in " \t\r\n":
            j += 1
        return j

    i = skip_ws(i)
    if i < n and s[i] == "}":
        if skip_ws(i + 1) != n:
            raise LabelTextError("unexpected text after '}'")
        return pairs
    while True:
        i = skip_ws(i)
        start = i
        while i < n and s[i] not in '=!~ \t\r\n,}"':
            i += 1
        name = s[start:i]
        if not name:
            raise LabelTextError(f"expected a label name at position {start}")
        i = skip_ws(i)
        if i >= n or s[i] != "=":
            raise LabelTextError(f"expected '=' after label name {name!r}")
        i = skip_ws(i + 1)
        try:
            value, i = unquote_at(s, i)
        except QuotingError as exc:
            raise LabelTextError(f"invalid value for label {name!r}: {exc}") from None
        pairs.append((name, value))
        i = skip_ws(i)
        if i < n and s[i] == ",":
            i = skip_ws(i + 1)
            if i < n and s[i] == "}":
                i += 1
                break
            continue
        if i < n and s[i] == "}":
            i += 1
            break
        raise LabelTextError(f"expected ',' or '}}' after the value of label {name!r}")
    if skip_ws(i) != n:
        raise LabelTextError("unexpected text after '}'")
    return pairs


class MatchOp(StrEnum):
    """A label matcher's operator."""

    EQ = "="
    NEQ = "!="
    RE = "=~"
    NRE = "!~"


@lru_cache(maxsize=4096)
def _anchored(pattern: str) -> str:
    # As Prometheus anchors selector regexes: the whole value, and `.` also matches a newline.
    return f"^(?s:{pattern})$"


@dataclass(frozen=True)
class LabelMatcher:
    """One `name op "value"` matcher of a stream selector; regexes are anchored (RE2 syntax)."""

    name: str
    op: MatchOp
    value: str

    def matches_values(self, values: pa.Array) -> np.ndarray:
        """Return a boolean mask: which of `values` (strings; a missing label is "") this matcher keeps."""
        if self.op in (MatchOp.EQ, MatchOp.NEQ):
            mask = pc.equal(values, self.value)
        else:
            mask = pc.match_substring_regex(values, _anchored(self.value))
        result = mask.to_numpy(zero_copy_only=False).astype(bool)
        return ~result if self.op in (MatchOp.NEQ, MatchOp.NRE) else result

    def matches(self, value: str) -> bool:
        """Say whether this matcher keeps one label value ("" for a missing label)."""
        return bool(self.matches_values(pa.array([value], pa.string()))[0])

    def matches_empty(self) -> bool:
        """Say whether the empty string (a missing label) satisfies this matcher."""
        return _matches_empty(self)

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{quote(self.value)}"


@lru_cache(maxsize=4096)
def _matches_empty(matcher: LabelMatcher) -> bool:
    return matcher.matches("")


@dataclass
class EntryBatch:
    """Validated entries of one tenant, ready for the WAL and the head.

    `stream_index[i]` is the position in `streams` of entry i's stream. Entries keep the order
    in which they arrived; nothing is sorted yet.
    """

    tenant: str
    streams: list[LabelSet]
    stream_ids: np.ndarray  # int64, one per element of `streams`
    stream_index: np.ndarray  # int32, one per entry
    ts: np.ndarray  # int64 nanoseconds, one per entry
    line: pa.Array  # large_string, one per entry
    metadata: pa.Array | None  # METADATA_TYPE, one per entry; None when no entry has any

    def __len__(self) -> int:
        return len(self.ts)

    def to_record_batch(self) -> pa.RecordBatch:
        """Return the entries as a record batch of ENTRY_SCHEMA."""
        n = len(self.ts)
        metadata = self.metadata if self.metadata is not None else pa.nulls(n, METADATA_TYPE)
        line = self.line if self.line.type == pa.large_string() else self.line.cast(pa.large_string())
        return pa.RecordBatch.from_arrays(
            [pa.array(self.stream_ids[self.stream_index], pa.int64()), pa.array(self.ts, pa.int64()), line, metadata],
            schema=ENTRY_SCHEMA,
        )
