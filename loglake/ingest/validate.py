"""Loki 3.7's push validation: label rules, per-entry limits, service_name discovery, rate and stream limits.

Follows grafana/loki `pkg/loghttp/push` (label parsing, service_name discovery), `pkg/distributor` (label and
entry checks, structured-metadata name normalisation, the ingestion rate limit) and the ingester's stream
limit. Messages and discard reasons use Loki's wording, so clients and dashboards see what Loki would show.
Entry checks run on whole columns; only streams are handled one Python object at a time.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglake.ingest.decode import DecodedPush
from loglake.ingest.ratelimit import RateLimiter
from loglake.model import (
    LABEL_NAME_RE,
    METADATA_TYPE,
    EntryBatch,
    LabelSet,
    LabelTextError,
    format_labels,
    parse_labels,
    stream_id,
)

# Discard reasons (the `reason` label of loki_discarded_samples_total / loki_discarded_bytes_total).
INVALID_LABELS = "invalid_labels"
MISSING_LABELS = "missing_labels"
MISSING_ENFORCED_LABELS = "missing_enforced_labels"
MAX_LABEL_NAMES_PER_SERIES = "max_label_names_per_series"
LABEL_NAME_TOO_LONG = "label_name_too_long"
LABEL_VALUE_TOO_LONG = "label_value_too_long"
DUPLICATE_LABEL_NAMES = "duplicate_label_names"
GREATER_THAN_MAX_SAMPLE_AGE = "greater_than_max_sample_age"
TOO_FAR_IN_FUTURE = "too_far_in_future"
LINE_TOO_LONG = "line_too_long"
DISALLOWED_STRUCTURED_METADATA = "disallowed_structured_metadata"
STRUCTURED_METADATA_TOO_LARGE = "structured_metadata_too_large"
STRUCTURED_METADATA_TOO_MANY = "structured_metadata_too_many"
RATE_LIMITED = "rate_limited"
STREAM_LIMIT = "stream_limit"

MISSING_STREAMS_MSG = "error at least one valid stream is required for ingestion"
MISSING_LABELS_MSG = "error at least one label pair is required per stream"

SERVICE_NAME = "service_name"
UNKNOWN_SERVICE = "unknown_service"
# Streams Loki writes for itself (aggregated metrics, patterns) skip label validation and service_name discovery.
INTERNAL_STREAM_LABELS = ("__aggregated_metric__", "__pattern__")
# Loki leaves this structured-metadata name out of entry sizes (it adds it itself when discovering levels).
SIZE_EXCLUDED_METADATA = "detected_level"

_LABEL_CACHE_SIZE = 10_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# Per-entry rejection codes, in the order Loki checks them; index = code.
_ENTRY_REASONS = (
    "",
    GREATER_THAN_MAX_SAMPLE_AGE,
    TOO_FAR_IN_FUTURE,
    LINE_TOO_LONG,
    DISALLOWED_STRUCTURED_METADATA,
    STRUCTURED_METADATA_TOO_LARGE,
    STRUCTURED_METADATA_TOO_MANY,
)


@dataclass
class ValidationResult:
    """What validation made of one push."""

    batch: EntryBatch | None
    """Accepted entries (None if none)."""
    errors: list[str]
    """Loki-style messages for rejected streams and entries, each once, in the order first seen."""
    discarded: dict[str, tuple[int, int]]
    """Loki reason name -> (lines, bytes) discarded, counted as Loki counts them."""
    status: int
    """204 nothing rejected; 400 some or all invalid; 422 no streams; 429 rate or stream limit."""
    message: str = ""
    """The response body Loki sends with `status` (empty for 204)."""


class PushRejected(Exception):
    """A push rejected as a whole before any entry is accepted."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class StreamLabels:
    """A stream's labels as Loki stores them: empty values dropped, service_name discovered, sorted."""

    labels: LabelSet
    id: int
    text: str
    internal: bool


@dataclass
class _CacheEntry:
    stream: StreamLabels
    # (limits the labels were checked against, the outcome); replaced as one value so readers never see a mix.
    checked: tuple[tuple[Any, ...], tuple[str, str] | None] | None = None


@dataclass
class _Outcome:
    """Errors and discards collected while validating one push."""

    found: list[tuple[int, str, int]] = field(default_factory=list)  # (entry position, message, occurrences)
    discarded: dict[str, list[int]] = field(default_factory=dict)

    def discard(self, reason: str, lines: int, nbytes: int) -> None:
        slot = self.discarded.setdefault(reason, [0, 0])
        slot[0] += lines
        slot[1] += nbytes

    def error(self, position: int, message: str, count: int = 1) -> None:
        self.found.append((position, message, count))

    def grouped(self) -> tuple[list[str], str]:
        """Return the unique messages in order and the body text, grouped as Loki's GroupedErrors."""
        counts: dict[str, int] = {}
        for _, message, n in sorted(self.found, key=lambda f: f[0]):
            counts[message] = counts.get(message, 0) + n
        parts = [f"{n} errors like: {m}" if len(counts) > 1 or n > 1 else m for m, n in counts.items()]
        return list(counts), "; ".join(parts)

    def discarded_totals(self) -> dict[str, tuple[int, int]]:
        return {reason: (lines, nbytes) for reason, (lines, nbytes) in self.discarded.items()}


class Validator:
    """Applies Loki's validation rules and limits to decoded pushes (one instance per server, thread-safe)."""

    def __init__(self, limits: Any) -> None:
        self.limits = limits
        self.rate_limiter = RateLimiter(limits)
        self._cache: OrderedDict[Any, _CacheEntry] = OrderedDict()  # label text -> stream, bounded
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ streams

    def stream_labels(self, raw: str | list[tuple[str, str]]) -> StreamLabels:
        """Resolve label text (or JSON pairs) to the stream Loki would store; raise PushRejected if unparseable."""
        return self._stream_entry(raw, self._discover()).stream

    def _discover(self) -> tuple[str, ...]:
        return tuple(getattr(self.limits, "discover_service_name", None) or ())

    def _stream_entry(self, raw: str | list[tuple[str, str]], discover: tuple[str, ...]) -> _CacheEntry:
        key = (raw if isinstance(raw, str) else tuple(raw), discover)
        entry = self._cache.get(key)  # a dict read is atomic; only writers take the lock
        if entry is not None:
            return entry
        entry = _CacheEntry(_resolve_labels(raw, discover))
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > _LABEL_CACHE_SIZE:
                self._cache.popitem(last=False)  # oldest first: agents resend the same few label sets
        return entry

    def _label_error(self, entry: _CacheEntry, tenant: str) -> tuple[str, str] | None:
        """Return (reason, message) if the stream's labels break a limit, as the distributor's ValidateLabels."""
        lim = self.limits
        enforced = tuple(getattr(lim, "enforced_labels", None) or ())
        key = (lim.max_label_names_per_series, lim.max_label_name_length, lim.max_label_value_length, enforced, tenant)
        checked = entry.checked
        if checked is not None and checked[0] == key:
            return checked[1]
        error = _check_labels(entry.stream, lim, enforced, tenant)
        entry.checked = (key, error)
        return error

    # ------------------------------------------------------------------------------------------ push

    def validate(
        self,
        push: DecodedPush,
        tenant: str,
        now_ns: int,
        stream_exists: Callable[[int], bool],
        active_streams: int,
    ) -> ValidationResult:
        """Validate a decoded push for `tenant` at time `now_ns`; return the accepted entries and what was not."""
        try:
            return self._validate(push, tenant, now_ns, stream_exists, active_streams)
        except PushRejected as exc:
            return ValidationResult(None, [exc.message], {}, exc.status, exc.message)

    def _validate(
        self,
        push: DecodedPush,
        tenant: str,
        now_ns: int,
        stream_exists: Callable[[int], bool],
        active_streams: int,
    ) -> ValidationResult:
        lim = self.limits
        n_streams = len(push.stream_labels)
        if n_streams == 0:
            raise PushRejected(422, MISSING_STREAMS_MSG)
        # Label text that cannot be parsed fails the whole push, before anything else (Loki's push parser).
        discover = self._discover()
        entries = [self._stream_entry(raw, discover) for raw in push.stream_labels]
        streams = [e.stream for e in entries]

        counts = np.asarray(push.counts, np.int64)
        n = int(counts.sum())
        if n != len(push.ts) or n != len(push.line):
            raise ValueError(
                f"decoded push is inconsistent: counts add up to {n}, but there are {len(push.ts)} entries"
            )
        starts = np.zeros(n_streams + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        stream_of = np.repeat(np.arange(n_streams, dtype=np.int64), counts)
        ts = np.asarray(push.ts, np.int64)

        line = push.line
        max_line = int(lim.max_line_size or 0)
        if max_line and getattr(lim, "max_line_size_truncate", False):
            line = _truncate_lines(line, max_line, str(getattr(lim, "max_line_size_truncate_identifier", "") or ""))
        line_len = _lengths(line)
        sm_count, sm_size = _metadata_sizes(push.metadata, n)
        entry_bytes = line_len + sm_size

        out = _Outcome()
        keep = np.ones(n, bool)
        bad_labels = np.zeros(n_streams, bool)

        # Streams: label limits (a stream without entries is skipped, as Loki does).
        bounds = starts.tolist()
        for si, entry in enumerate(entries):
            lo, hi = bounds[si], bounds[si + 1]
            if lo == hi:
                continue
            error = self._label_error(entry, tenant)
            if error is None:
                continue
            reason, message = error
            bad_labels[si] = True
            keep[lo:hi] = False
            nbytes = int(entry_bytes[lo:hi].sum())
            out.error(lo, message)
            if reason == MISSING_ENFORCED_LABELS:
                out.discard(reason, hi - lo, nbytes)
                continue
            # Loki counts a label error twice: once under its own reason, once as invalid_labels.
            if reason == MISSING_LABELS:
                out.discard(reason, 1, 0)
            else:
                out.discard(reason, hi - lo, nbytes)
            out.discard(INVALID_LABELS, hi - lo, nbytes)

        # Entries: one reason each, the first that applies in Loki's order.
        code = _entry_codes(lim, ts, now_ns, line_len, sm_count, sm_size)
        code[~keep] = 0
        bad = np.nonzero(code)[0]
        if len(bad):
            keep[bad] = False
            _entry_errors(out, lim, now_ns, streams, stream_of, code, bad, ts, line_len, sm_count, sm_size, entry_bytes)

        metadata = push.metadata
        if metadata is not None and keep.any():
            metadata, entry_bytes = _normalize_metadata(metadata, keep, line_len, entry_bytes)

        errors, message = out.grouped()
        status = 400 if errors else 204
        if not keep.any():
            return ValidationResult(None, errors, out.discarded_totals(), status, message)

        # The ingestion rate limit applies to the accepted bytes of the whole push.
        total_lines = int(keep.sum())
        total_bytes = int(entry_bytes[keep].sum())
        if not self.rate_limiter.allow(tenant, total_bytes, now_ns / 1e9):
            # As Loki, count every entry of the streams whose labels were valid, even entries rejected above.
            limited = ~bad_labels[stream_of]
            out.discard(RATE_LIMITED, int(limited.sum()), int(entry_bytes[limited].sum()))
            text = (
                f"ingestion rate limit exceeded for user {tenant} (limit: {int(self.rate_limiter.rate(tenant))} "
                f"bytes/sec) while attempting to ingest '{total_lines}' lines totaling '{total_bytes}' bytes, "
                "reduce log volume or contact your Loki administrator to see if the limit can be increased"
            )
            return ValidationResult(None, [*errors, text], out.discarded_totals(), 429, text)

        # The stream limit (the ingester's): new streams beyond it are rejected, the others kept.
        limit_message = self._apply_stream_limit(
            out, keep, streams, starts, stream_of, entry_bytes, tenant, stream_exists, active_streams
        )
        errors, message = out.grouped()
        if limit_message:
            status, message = 429, limit_message
        batch = _build_batch(tenant, streams, stream_of, keep, ts, line, metadata) if keep.any() else None
        return ValidationResult(batch, errors, out.discarded_totals(), status, message)

    def _apply_stream_limit(
        self,
        out: _Outcome,
        keep: np.ndarray,
        streams: list[StreamLabels],
        starts: np.ndarray,
        stream_of: np.ndarray,
        entry_bytes: np.ndarray,
        tenant: str,
        stream_exists: Callable[[int], bool],
        active_streams: int,
    ) -> str:
        """Reject the kept entries of new streams beyond the tenant's limit; return the message for the first."""
        lim = self.limits
        limit = _min_non_zero(int(lim.max_streams_per_user or 0), int(lim.max_global_streams_per_user or 0))
        if limit == 0:
            return ""
        kept_per_stream = np.bincount(stream_of[keep], minlength=len(streams))
        bounds = starts.tolist()
        known: set[int] = set()
        created = 0
        first_message = ""
        for si, kept_count in enumerate(kept_per_stream.tolist()):
            stream = streams[si]
            lo, hi = bounds[si], bounds[si + 1]
            if lo == hi or not kept_count or stream.id in known:
                continue
            if stream_exists(stream.id):
                known.add(stream.id)
                continue
            if active_streams + created < limit:
                created += 1
                known.add(stream.id)
                continue
            kept = keep[lo:hi]
            out.discard(STREAM_LIMIT, int(kept_count), int(entry_bytes[lo:hi][kept].sum()))
            keep[lo:hi] = False
            message = (
                f"maximum active stream limit exceeded when trying to create stream {stream.text}, reduce the number "
                "of active streams (reduce labels or reduce label values), or contact your Loki administrator to see "
                f"if the limit can be increased, user: '{tenant}'"
            )
            out.error(lo, message)
            first_message = first_message or message
        return first_message


# ---------------------------------------------------------------------------------------------- labels


def _resolve_labels(raw: str | list[tuple[str, str]], discover: tuple[str, ...]) -> StreamLabels:
    if isinstance(raw, str):
        if not raw.strip():
            pairs: list[tuple[str, str]] = []  # Loki's parser reads empty text as an empty label set
        else:
            try:
                pairs = parse_labels(raw)
            except LabelTextError as exc:
                raise PushRejected(400, f"couldn't parse labels: {exc}: {raw}") from None
    else:
        pairs = list(raw)
    for name, _ in pairs:
        if not LABEL_NAME_RE.match(name):
            shown = raw if isinstance(raw, str) else "{" + ", ".join(f'{k}="{v}"' for k, v in raw) + "}"
            raise PushRejected(
                400,
                f"couldn't parse labels: invalid label name {name!r} in {shown}: "
                "a label name must match [a-zA-Z_][a-zA-Z0-9_]*",
            )
    # Empty values mean an absent label; Loki drops them before hashing.
    pairs = sorted((p for p in pairs if p[1] != ""), key=lambda p: p[0])
    names = {name for name, _ in pairs}
    internal = any(name in names for name in INTERNAL_STREAM_LABELS)
    if discover and not internal and SERVICE_NAME not in names:
        found = dict(reversed(pairs))  # first value wins where a name repeats
        value = next((found[name] for name in discover if found.get(name)), UNKNOWN_SERVICE)
        pairs = sorted([*pairs, (SERVICE_NAME, value)], key=lambda p: p[0])
    labels: LabelSet = tuple(pairs)
    return StreamLabels(labels, stream_id(labels), format_labels(labels), internal)


def _check_labels(stream: StreamLabels, lim: Any, enforced: tuple[str, ...], tenant: str) -> tuple[str, str] | None:
    labels, text = stream.labels, stream.text
    if not labels:
        return MISSING_LABELS, MISSING_LABELS_MSG
    if stream.internal:
        return None
    names = [name for name, _ in labels]
    # service_name is often added by Loki itself, so it does not count towards the limit.
    count = len(labels) - (1 if SERVICE_NAME in names else 0)
    max_names = int(lim.max_label_names_per_series)
    if count > max_names:
        return MAX_LABEL_NAMES_PER_SERIES, f"entry for stream '{text}' has {count} label names; limit {max_names}"
    max_name, max_value = int(lim.max_label_name_length), int(lim.max_label_value_length)
    last = ""
    for name, value in labels:
        if len(name) > max_name:
            return LABEL_NAME_TOO_LONG, f"stream '{text}' has label name too long: '{name}'"
        if len(value) > max_value or (len(value) * 4 > max_value and len(value.encode()) > max_value):
            return LABEL_VALUE_TOO_LONG, f"stream '{text}' has label value too long: '{value}'"
        if name == last:
            return DUPLICATE_LABEL_NAMES, f"stream '{text}' has duplicate label name: '{name}'"
        last = name
    if enforced and not stream.internal:
        missing = [name for name in dict.fromkeys(enforced) if name not in names]
        if missing:
            return (
                MISSING_ENFORCED_LABELS,
                f"missing required labels '{','.join(missing)}' for user '{tenant}' for stream '{text}' (policy: '')",
            )
    return None


# ---------------------------------------------------------------------------------------------- entries


def _lengths(strings: pa.Array) -> np.ndarray:
    return np.asarray(pc.binary_length(strings).to_numpy(zero_copy_only=False), np.int64)


def _metadata_sizes(metadata: pa.Array | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return per-entry structured-metadata pair counts and sizes (name + value bytes, as Loki counts them)."""
    if metadata is None or n == 0:
        return np.zeros(n, np.int64), np.zeros(n, np.int64)
    offsets = np.asarray(metadata.offsets, np.int64)
    valid = np.asarray(metadata.is_valid().to_numpy(zero_copy_only=False), bool)
    keys, values = metadata.keys, metadata.items
    pair_size = _lengths(keys) + _lengths(values)
    excluded = np.asarray(pc.equal(keys, SIZE_EXCLUDED_METADATA).to_numpy(zero_copy_only=False), bool)
    pair_size[excluded] = 0
    cum = np.zeros(len(pair_size) + 1, np.int64)
    np.cumsum(pair_size, out=cum[1:])
    count = (offsets[1:] - offsets[:-1]) * valid
    size = (cum[offsets[1:]] - cum[offsets[:-1]]) * valid
    return count, size


def _entry_codes(
    lim: Any, ts: np.ndarray, now_ns: int, line_len: np.ndarray, sm_count: np.ndarray, sm_size: np.ndarray
) -> np.ndarray:
    """Return, per entry, the index in _ENTRY_REASONS of the first check it fails (0 = valid)."""
    code = np.zeros(len(ts), np.int8)
    has_sm = sm_count > 0
    max_sm_count = int(lim.max_structured_metadata_entries_count or 0)
    max_sm_size = int(lim.max_structured_metadata_size or 0)
    max_line = int(lim.max_line_size or 0)
    # Assign from the last check to the first, so the first failing check wins.
    if max_sm_count:
        code[has_sm & (sm_count > max_sm_count)] = 6
    if max_sm_size:
        code[has_sm & (sm_size > max_sm_size)] = 5
    if not lim.allow_structured_metadata:
        code[has_sm] = 4
    if max_line:
        code[line_len > max_line] = 3
    # Bounds are clamped to int64 so that huge configured durations compare as "no limit".
    code[ts > min(now_ns + int(lim.creation_grace_period), _INT64_MAX)] = 2
    if lim.reject_old_samples:
        code[ts < max(now_ns - int(lim.reject_old_samples_max_age), _INT64_MIN)] = 1
    return code


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry_errors(
    out: _Outcome,
    lim: Any,
    now_ns: int,
    streams: list[StreamLabels],
    stream_of: np.ndarray,
    code: np.ndarray,
    bad: np.ndarray,
    ts: np.ndarray,
    line_len: np.ndarray,
    sm_count: np.ndarray,
    sm_size: np.ndarray,
    entry_bytes: np.ndarray,
) -> None:
    """Record the message and discard of every rejected entry, formatting each distinct message once."""
    codes = code[bad]
    detail = np.zeros(len(bad), np.int64)
    by_time = codes <= 2
    detail[by_time] = ts[bad][by_time] // 1_000_000_000
    detail[codes == 3] = line_len[bad][codes == 3]
    detail[codes == 5] = sm_size[bad][codes == 5]
    detail[codes == 6] = sm_count[bad][codes == 6]
    keys = np.stack([stream_of[bad], codes.astype(np.int64), detail], axis=1)
    unique, first, occurrences = np.unique(keys, axis=0, return_index=True, return_counts=True)
    cutoff = _rfc3339(max(now_ns - int(lim.reject_old_samples_max_age), _INT64_MIN) // 1_000_000_000)
    for (si, c, d), i, count in zip(unique.tolist(), first.tolist(), occurrences.tolist(), strict=True):
        text = streams[si].text
        if c == 1:
            message = (
                f"entry for stream '{text}' has timestamp too old: {_rfc3339(d)}, "
                f"oldest acceptable timestamp is: {cutoff}"
            )
        elif c == 2:
            message = f"entry for stream '{text}' has timestamp too new: {_rfc3339(d)}"
        elif c == 3:
            message = (
                f"max entry size '{int(lim.max_line_size)}' bytes exceeded for stream '{text}' while adding an entry "
                f"with length '{d}' bytes"
            )
        elif c == 4:
            message = (
                f"stream '{text}' includes structured metadata, but this feature is disallowed. Please see "
                "`limits_config.allow_structured_metadata` or contact your Loki administrator to enable it"
            )
        elif c == 5:
            message = (
                f"stream '{text}' has structured metadata too large: '{d}' bytes, limit: "
                f"'{int(lim.max_structured_metadata_size)}' bytes. Please see "
                "`limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it"
            )
        else:
            message = (
                f"stream '{text}' has too many structured metadata labels: '{d}', limit: "
                f"'{int(lim.max_structured_metadata_entries_count)}'. Please see "
                "`limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to "
                "increase it"
            )
        out.error(int(bad[i]), message, count)
    reason_lines = np.bincount(codes, minlength=len(_ENTRY_REASONS))
    reason_bytes = np.bincount(codes, weights=entry_bytes[bad], minlength=len(_ENTRY_REASONS))
    for c in np.nonzero(reason_lines)[0].tolist():
        out.discard(_ENTRY_REASONS[c], int(reason_lines[c]), int(reason_bytes[c]))


def _truncate_lines(line: pa.Array, max_size: int, suffix: str) -> pa.Array:
    """Cut lines longer than `max_size` bytes to fit, ending with `suffix` (Loki's max_line_size_truncate)."""
    keep_bytes = max_size - len(suffix.encode())
    if keep_bytes <= 0:
        return line  # Loki leaves such lines alone, and rejects them as too long
    lengths = _lengths(line)
    over = lengths > max_size
    if not over.any():
        return line
    idx = np.nonzero(over)[0]
    # A cut inside a multi-byte character drops that character, so the line stays valid UTF-8.
    cut = [line[int(i)].as_py().encode()[:keep_bytes].decode("utf-8", "ignore") + suffix for i in idx]
    return pc.replace_with_mask(line, pa.array(over), pa.array(cut, line.type))


# ---------------------------------------------------------------------------------------------- structured metadata

# Names the normaliser surely leaves as they are: a letter first, no runs of underscores (the common case).
_PLAIN_NAME_RE = re.compile(r"[a-zA-Z](?:[a-zA-Z0-9]|_[a-zA-Z0-9])*_?\Z")
_NON_ALNUM_RUN = re.compile(r"[^a-zA-Z0-9]+")


def normalize_metadata_name(name: str) -> str:
    """Return a structured-metadata name as Loki stores it (Prometheus' OTLP label namer, UTF-8 off).

    Runs of characters other than ASCII letters and digits become one underscore; `__x__` names keep their
    double underscores; a name starting with a digit gets a `key_` prefix. Raise ValueError for names that
    cannot be normalised (empty, or only underscores).
    """
    if not name:
        raise ValueError("structured metadata name is empty")
    reserved = len(name) >= 4 and name.startswith("__") and name.endswith("__")
    core = _NON_ALNUM_RUN.sub("_", name[2:-2] if reserved else name)
    normalized = f"__{core}__" if reserved else core
    if normalized[0].isdigit():
        normalized = "key_" + normalized
    if not normalized.strip("_"):
        raise ValueError(f"structured metadata name {name!r} normalizes to {normalized!r}, which is not a valid name")
    return normalized


def _changes_name(name: str) -> bool:
    try:
        return normalize_metadata_name(name) != name
    except ValueError:
        return True


def _may_contain_replacement(strings: pa.Array) -> bool:
    """Say whether the bytes behind a string array contain U+FFFD anywhere (a fast, conservative test)."""
    data = strings.buffers()[2]
    if data is None or data.size < 3:
        return False
    raw = np.frombuffer(data, np.uint8)
    lead = np.flatnonzero(raw[:-2] == 0xEF)
    return bool(((raw[lead + 1] == 0xBF) & (raw[lead + 2] == 0xBD)).any())


def _normalize_entry(pairs: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """Apply the distributor's name normalisation and U+FFFD replacement to one entry's pairs (Builder semantics)."""
    deleted: set[str] = set()
    added: dict[str, str] = {}

    def put(name: str, value: str) -> None:
        if value == "":
            added.pop(name, None)
            deleted.add(name)
        else:
            added[name] = value

    for name, value in pairs:
        try:
            normalized = normalize_metadata_name(name)
        except ValueError as exc:
            raise PushRejected(400, f"{exc}; structured metadata names must contain a letter or digit") from None
        if normalized != name:
            added.pop(name, None)
            deleted.add(name)
            put(normalized, value)
        if "\ufffd" in value:
            put(normalized, value.replace("\ufffd", " "))
    if not deleted and not added:
        return pairs
    result = [p for p in pairs if p[0] not in deleted and p[0] not in added]
    result.extend(added.items())
    result.sort(key=lambda p: p[0])
    return result or None


def _normalize_metadata(
    metadata: pa.Array, keep: np.ndarray, line_len: np.ndarray, entry_bytes: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """Normalise names and values of the accepted entries' metadata; return it and updated entry sizes."""
    keys, values = metadata.keys, metadata.items
    # Few distinct names per push: check those in Python; values are first scanned as raw bytes for U+FFFD.
    odd_names = [k for k in pc.unique(keys).to_pylist() if not _PLAIN_NAME_RE.match(k) and _changes_name(k)]
    replaced_values = _may_contain_replacement(values)
    if not odd_names and not replaced_values:
        return metadata, entry_bytes
    suspect_pair = np.zeros(len(keys), bool)
    if odd_names:
        suspect_pair |= np.asarray(pc.is_in(keys, pa.array(odd_names, keys.type)).to_numpy(zero_copy_only=False), bool)
    if replaced_values:
        suspect_pair |= np.asarray(pc.match_substring(values, "\ufffd").to_numpy(zero_copy_only=False), bool)
    offsets = np.asarray(metadata.offsets, np.int64)
    cum = np.zeros(len(suspect_pair) + 1, np.int64)
    np.cumsum(suspect_pair, out=cum[1:])
    suspect = ((cum[offsets[1:]] - cum[offsets[:-1]]) > 0) & keep
    suspect &= np.asarray(metadata.is_valid().to_numpy(zero_copy_only=False), bool)
    idx = np.nonzero(suspect)[0]
    if not len(idx):
        return metadata, entry_bytes
    changed: list[int] = []
    replacements: list[list[tuple[str, str]] | None] = []
    for i in idx.tolist():
        pairs = metadata[i].as_py() or []
        normalized = _normalize_entry(pairs)
        if normalized is not pairs:
            changed.append(i)
            replacements.append(normalized)
    if not changed:
        return metadata, entry_bytes
    patch = pa.array(replacements, METADATA_TYPE)
    positions = np.arange(len(metadata), dtype=np.int64)
    positions[changed] = len(metadata) + np.arange(len(changed))
    metadata = pa.concat_arrays([metadata, patch]).take(pa.array(positions))
    _, new_size = _metadata_sizes(patch, len(patch))
    entry_bytes = entry_bytes.copy()
    entry_bytes[changed] = line_len[changed] + new_size
    return metadata, entry_bytes


# ---------------------------------------------------------------------------------------------- batch


def _build_batch(
    tenant: str,
    streams: list[StreamLabels],
    stream_of: np.ndarray,
    keep: np.ndarray,
    ts: np.ndarray,
    line: pa.Array,
    metadata: pa.Array | None,
) -> EntryBatch:
    """Gather the kept entries; streams sent more than once in the push become one."""
    kept_streams = np.flatnonzero(np.bincount(stream_of[keep], minlength=len(streams)))
    ids = np.array([streams[si].id for si in kept_streams.tolist()], np.int64)
    unique_ids, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)  # batch streams in the order the push first sent them
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    batch_ids = unique_ids[order]
    batch_streams: list[LabelSet] = [streams[si].labels for si in kept_streams[first[order]].tolist()]
    remap = np.full(len(streams), -1, np.int32)
    remap[kept_streams] = rank[inverse]
    everything = bool(keep.all())
    mask = None if everything else pa.array(keep)
    if not everything:
        ts = ts[keep]
        line = line.filter(mask)
    if line.type != pa.large_string():
        line = line.cast(pa.large_string())
    if metadata is not None:
        if not everything:
            metadata = metadata.filter(mask)
        if metadata.null_count == len(metadata):
            metadata = None
    return EntryBatch(
        tenant=tenant,
        streams=batch_streams,
        stream_ids=batch_ids,
        stream_index=remap[stream_of[keep]],
        ts=np.ascontiguousarray(ts, np.int64),
        line=line,
        metadata=metadata,
    )


def _min_non_zero(a: int, b: int) -> int:
    if a == 0 or (b != 0 and a > b):
        return b
    return a
