"""Log patterns as Loki's pattern ingester finds them: Drain clusters per stream and level, counted in 10 s samples.

Drain (He et al., ICWS 2017) puts each line's tokens through a fixed-depth prefix tree keyed by token count and
leading tokens; at the leaf, the most similar cluster template takes the line (differing tokens become `<_>`) or a
new cluster starts. Loki's variant, followed here: a tokenizer chosen per stream from its first line (JSON message
field, logfmt pairs, or punctuation), an LRU of 300 clusters per Drain with a throttle when too many are evicted,
and per-cluster sample chunks that a query re-buckets by its step.
"""

from __future__ import annotations

import bisect
import json
import re
import sys
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

from loglake.logql.parsers import LogfmtSyntaxError, iter_logfmt

PARAM = "<_>"
FORMAT_JSON = "json"
FORMAT_LOGFMT = "logfmt"
FORMAT_UNKNOWN = "unknown"
LEVEL_UNKNOWN = "unknown"
LEVELS = ("unknown", "debug", "info", "warn", "error", "fatal", "critical", "trace")
"""The levels Loki keeps a Drain for; any other `detected_level` counts as unknown."""

MS = 1_000_000  # ns per ms


@dataclass(frozen=True)
class DrainConfig:
    """Drain's settings, with the pattern ingester's defaults."""

    log_cluster_depth: int = 30
    sim_th: float = 0.3
    max_children: int = 15
    max_clusters: int = 300
    max_eviction_ratio: float = 0.25
    max_line_length: int = 3000
    min_tokens: int = 4
    max_tokens: int = 80
    max_chunk_age_ms: int = 3_600_000
    sample_interval_ms: int = 10_000
    json_message_fields: tuple[str, ...] = ("log", "message", "msg", "msg_", "_msg", "content")

    @property
    def max_node_depth(self) -> int:
        """How many tree levels below the token-count level lead to a leaf."""
        return self.log_cluster_depth - 2


DEFAULT_CONFIG = DrainConfig()

# ---- line formats -----------------------------------------------------------------------------------------------


def detect_format(line: str) -> str:
    """Guess a stream's format from one line, as Loki does with a stream's first line: json, logfmt or unknown."""
    if len(line) < 2:
        return FORMAT_UNKNOWN
    if line[0] == "{" and line[-1] == "}":
        return FORMAT_JSON
    if is_logfmt_line(line):
        return FORMAT_LOGFMT
    return FORMAT_UNKNOWN


_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_GO_REGEX_SPACE = frozenset("\t\n\f\r ")
# States of the matcher below: the start (A), then key, `=`, plain value, quote opened, quoted text, quote
# closed, for a pair followed by a space (1) and for a pair that may end the line (2).
_A, _K1, _E1, _V1, _Q1, _QD1, _QC1, _K2, _E2, _V2, _Q2, _QD2, _QC2 = range(13)


def is_logfmt_line(line: str) -> bool:
    """Say whether a line matches Loki's logfmt test, `^(\\w+?=([^"]\\S*?|".+?") )*?(\\w+?=([^"]\\S*?|".+?"))+$`.

    Run as a set of states over the characters, so it takes linear time like Go's regexp; a backtracking regex
    takes exponential time on some lines.
    """
    current = {_A}
    for c in line:
        word = c in _WORD
        nxt: set[int] = set()
        for s in current:
            if s == _A:
                if word:
                    nxt.add(_K1)
                    nxt.add(_K2)
            elif s in (_K1, _K2):
                if word:
                    nxt.add(s)
                elif c == "=":
                    nxt.add(s + 1)
            elif s in (_E1, _E2):
                nxt.add(s + 2 if c == '"' else s + 1)
            elif s in (_Q1, _Q2):
                if c != "\n":
                    nxt.add(s + 1)
            elif s in (_QD1, _QD2):
                if c != "\n":
                    nxt.add(s)
                if c == '"':
                    nxt.add(s + 1)
            if s in (_V1, _V2) and c not in _GO_REGEX_SPACE:
                nxt.add(s)
            if s in (_V1, _QC1) and c == " ":
                nxt.add(_A)
            if s in (_V2, _QC2) and word:
                # A pair that ends the line may be followed directly by another one.
                nxt.add(_K2)
        if not nxt:
            return False
        current = nxt
    return _V2 in current or _QC2 in current


# ---- tokenizers -------------------------------------------------------------------------------------------------

Tokens = list[str]


class Tokenizer(Protocol):
    """Splits a line into tokens (with state needed to join them back) and joins a template into a pattern."""

    def tokenize(self, line: str) -> tuple[Tokens, Any] | None:
        """Return (tokens, state), or None when the line is not used."""
        ...  # pragma: no cover

    def join(self, tokens: Tokens, state: Any) -> str:
        """Return the pattern text of a cluster's tokens."""
        ...  # pragma: no cover


def _byte_length_over(line: str, limit: int) -> bool:
    if len(line) > limit:
        return True
    return len(line) * 4 > limit and len(line.encode()) > limit


@cache
def _boundary() -> re.Pattern[str]:
    """Characters that end a token: space, `=`, and Unicode punctuation except `_-.:/`."""
    punct = [
        chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i))[0] == "P" and chr(i) not in "_-.:/"
    ]
    ranges: list[str] = []
    i = 0
    while i < len(punct):
        j = i
        while j + 1 < len(punct) and ord(punct[j + 1]) == ord(punct[j]) + 1:
            j += 1
        lo, hi = re.escape(punct[i]), re.escape(punct[j])
        ranges.append(lo if i == j else f"{lo}-{hi}")
        i = j + 1
    return re.compile("([ =" + "".join(ranges) + "])")


class PunctuationTokenizer:
    """Tokens end at spaces, `=` and punctuation; punctuation and `=` are tokens too, spaces are remembered."""

    def __init__(self, max_line_length: int = DEFAULT_CONFIG.max_line_length, max_tokens: int = 80) -> None:
        self.max_line_length = max_line_length
        self.max_tokens = max_tokens

    def tokenize(self, line: str) -> tuple[Tokens, Any] | None:
        """Return (tokens, indexes of the tokens a space follows), or None for an over-long line."""
        if _byte_length_over(line, self.max_line_length):
            return None
        parts = _boundary().split(line)  # text, boundary, text, …, text
        tokens: Tokens = []
        spaces: list[int] = []
        for j in range(1, len(parts), 2):
            if parts[j - 1]:
                tokens.append(parts[j - 1])
            if parts[j] == " ":
                spaces.append(len(tokens) - 1)
            else:
                tokens.append(parts[j])
            if len(tokens) > self.max_tokens:
                # Drain drops lines with this many tokens; stop early.
                return tokens, spaces
        if parts[-1]:
            tokens.append(parts[-1])
        return tokens, spaces

    def join(self, tokens: Tokens, state: Any) -> str:
        """Return the tokens with the remembered spaces put back."""
        spaces: list[int] = state
        out: list[str] = []
        k = 0
        for i, token in enumerate(tokens):
            out.append(token)
            # As Loki: one space per recorded index, in order (a line that began with a space records -1,
            # which stops the spaces from being restored).
            while k < len(spaces) and spaces[k] == i:
                out.append(" ")
                k += 1
        return "".join(out)


_VARIABLE_KEYS_FOLDED = ("ts", "traceid", "time", "timestamp")


def _is_variable_key(key: str) -> bool:
    """Keys whose values always vary (times, trace ids): their values become `<_>` at once."""
    return key == "t" or key.lower() in _VARIABLE_KEYS_FOLDED


class LogfmtTokenizer:
    """Tokens are the keys and values of logfmt pairs; a pattern is written back as logfmt."""

    def __init__(self, max_line_length: int = DEFAULT_CONFIG.max_line_length) -> None:
        self.max_line_length = max_line_length

    def tokenize(self, line: str) -> tuple[Tokens, Any] | None:
        """Return [key, value, key, value, …], or None for an over-long line or a logfmt syntax error."""
        if _byte_length_over(line, self.max_line_length):
            return None
        tokens: Tokens = []
        try:
            for key, value in iter_logfmt(line, strict=True):
                tokens.append(key)
                tokens.append(PARAM if _is_variable_key(key) else value)
        except LogfmtSyntaxError:
            return None
        return tokens, None

    def join(self, tokens: Tokens, state: Any) -> str:
        """Return the pairs as logfmt text (go-logfmt's quoting); "" if a key cannot be written."""
        if not tokens:
            return ""
        pairs = list(tokens) + ([""] if len(tokens) % 2 else [])
        out: list[str] = []
        for i in range(0, len(pairs), 2):
            key, value = pairs[i], pairs[i + 1]
            if not key or _LOGFMT_NEEDS_QUOTE.search(key):
                return ""
            out.append(f"{key}={_logfmt_quote(value) if _LOGFMT_NEEDS_QUOTE.search(value) else value}")
        return " ".join(out)


_LOGFMT_NEEDS_QUOTE = re.compile('[\x00-\x20="\ufffd]')
_LOGFMT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LOGFMT_ESCAPED = re.compile('["\\\\\x00-\x1f\ufffd]')


def _logfmt_quote(value: str) -> str:
    def esc(m: re.Match[str]) -> str:
        c = m.group()
        if c == "\ufffd":
            return "\\ufffd"
        return _LOGFMT_ESCAPES.get(c) or f"\\u00{ord(c):02x}"

    return '"' + _LOGFMT_ESCAPED.sub(esc, value) + '"'


class JsonTokenizer:
    """Tokenizes the line's message field (`msg`, `message`, …) by punctuation; a pattern is `<_>msg<_>`."""

    def __init__(self, config: DrainConfig = DEFAULT_CONFIG) -> None:
        self.fields = config.json_message_fields
        self.max_line_length = config.max_line_length
        self.inner = PunctuationTokenizer(config.max_line_length, config.max_tokens)

    def tokenize(self, line: str) -> tuple[Tokens, Any] | None:
        """Tokenize the first message field present (its raw JSON text), or None when there is none."""
        strings = top_level_json_strings(line, self.fields)
        found = next((strings[k] for k in self.fields if strings.get(k) is not None), None)
        if found is None or _byte_length_over(found, self.max_line_length):
            return None
        return self.inner.tokenize(found)

    def join(self, tokens: Tokens, state: Any) -> str:
        """Return the message pattern between two `<_>`."""
        return PARAM + self.inner.join(tokens, state) + PARAM


_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_JSON_SCALAR = re.compile(r"[^,}\]\s]+")


def top_level_json_strings(line: str, keys: Sequence[str]) -> dict[str, str | None]:
    """Return the raw (still escaped) text of each key's value in a JSON object line, None where not a string.

    Like the lenient scan Loki uses: a key's first occurrence among the object's own members counts, keys not
    reached (absent, or after text that is not JSON) are left out, and the rest of the line is not validated.
    """
    found: dict[str, str | None] = {}
    pos = _JSON_WS.match(line, 0).end()  # type: ignore[union-attr]
    if pos >= len(line) or line[pos] != "{":
        return found
    pos += 1
    while len(found) < len(keys):
        pos = _JSON_WS.match(line, pos).end()  # type: ignore[union-attr]
        m = _JSON_STRING.match(line, pos)
        if m is None:
            return found
        name = m.group(1)
        if "\\" in name:
            try:
                name = json.loads(m.group())
            except ValueError:
                return found
        pos = _JSON_WS.match(line, m.end()).end()  # type: ignore[union-attr]
        if pos >= len(line) or line[pos] != ":":
            return found
        pos = _JSON_WS.match(line, pos + 1).end()  # type: ignore[union-attr]
        if pos >= len(line):
            return found
        wanted = name in keys and name not in found
        if line[pos] == '"':
            v = _JSON_STRING.match(line, pos)
            if v is None:
                return found
            if wanted:
                found[name] = v.group(1)
            pos = v.end()
        else:
            end = _skip_json_value(line, pos)
            if end < 0:
                return found
            if wanted:
                found[name] = None
            pos = end
        pos = _JSON_WS.match(line, pos).end()  # type: ignore[union-attr]
        if pos >= len(line) or line[pos] != ",":
            return found
        pos += 1
    return found


def _skip_json_value(line: str, pos: int) -> int:
    """Return the index after a non-string JSON value starting at `pos`, or -1."""
    c = line[pos]
    if c not in "{[":
        m = _JSON_SCALAR.match(line, pos)
        return m.end() if m else -1
    depth = 0
    while pos < len(line):
        c = line[pos]
        if c == '"':
            m = _JSON_STRING.match(line, pos)
            if m is None:
                return -1
            pos = m.end()
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return -1


_PLACEHOLDER_RUN = re.compile(r"(?:<_>){2,}")


def _dedup_placeholders(pattern: str) -> str:
    return _PLACEHOLDER_RUN.sub(PARAM, pattern)


def tokenizer_for(fmt: str, config: DrainConfig = DEFAULT_CONFIG) -> Tokenizer:
    """Return the tokenizer Loki uses for a stream of this format."""
    if fmt == FORMAT_JSON:
        return JsonTokenizer(config)
    if fmt == FORMAT_LOGFMT:
        return LogfmtTokenizer(config.max_line_length)
    return PunctuationTokenizer(config.max_line_length, config.max_tokens)


# ---- clusters and their samples ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    """A template (tokens, `<_>` where lines differed) and when its lines came, in sample chunks."""

    id: int
    tokens: Tokens
    state: Any
    tokenizer: Tokenizer
    size: int = 0
    volume: int = 0
    chunks: list[list[list[int]]] = field(default_factory=list)
    """Chunks of [ms, count] samples, each spanning less than the chunk age."""

    def pattern(self) -> str:
        """Return the pattern text, runs of `<_>` collapsed into one."""
        return _dedup_placeholders(self.tokenizer.join(self.tokens, self.state))

    def add_sample(self, ts_ms: int, config: DrainConfig) -> None:
        """Count one line at `ts_ms` in its sample-interval bucket."""
        self.size += 1
        t = ts_ms - ts_ms % config.sample_interval_ms
        if not self.chunks:
            self.chunks.append([[t, 1]])
            return
        last = self.chunks[-1]
        if last[-1][0] == t:
            last[-1][1] += 1
        elif t - last[0][0] >= config.max_chunk_age_ms:
            self.chunks.append([[t, 1]])
        elif ts_ms >= last[-1][0]:
            last.append([t, 1])
        # An older line than the chunk's newest sample is not counted (Loki trains in arrival order).

    def samples(self, from_ms: int, through_ms: int, step_ms: int, config: DrainConfig) -> list[tuple[int, int]]:
        """Return (ms, count) samples in [from, through), re-bucketed by `step_ms` within each chunk.

        As Loki: buckets between a chunk's first and last sample are present even when zero.
        """
        out: list[tuple[int, int]] = []
        for chunk in self.chunks:
            out.extend(_chunk_range(chunk, from_ms, through_ms, step_ms, config.sample_interval_ms))
        return out


def _chunk_range(chunk: list[list[int]], start: int, end: int, step: int, interval: int) -> list[tuple[int, int]]:
    first, last = chunk[0][0], chunk[-1][0]
    if start >= end or first >= end or last < start:
        return []
    times = [s[0] for s in chunk]
    lo = bisect.bisect_left(times, start) if start > first else 0
    # Loki keeps a sample stamped exactly at `end` when it is the chunk's last one.
    hi = bisect.bisect_left(times, end) if end < last else len(chunk)
    if lo >= hi:
        return []
    if step == interval:
        return [(t, v) for t, v in chunk[lo:hi]]
    current = times[lo] - times[lo] % step
    out = [[current, 0]]
    for t, v in chunk[lo:hi]:
        if t >= current + step:
            bucket = t - t % step
            out.extend([i, 0] for i in range(current + step, bucket + 1, step))
            current = bucket
        out[-1][1] += v
    return [(t, v) for t, v in out]


# ---- the prefix tree --------------------------------------------------------------------------------------------


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    cluster_ids: list[int] = field(default_factory=list)


def _has_number(token: str) -> bool:
    if token.isascii():
        return any(c.isdigit() for c in token)
    return any(unicodedata.category(c)[0] == "N" for c in token)


class Drain:
    """One Drain: the clusters of one stream's lines at one level."""

    def __init__(self, fmt: str = FORMAT_UNKNOWN, config: DrainConfig = DEFAULT_CONFIG) -> None:
        if config.log_cluster_depth < 3:
            raise ValueError("log_cluster_depth must be at least 3")
        self.config = config
        self.format = fmt
        self.tokenizer = tokenizer_for(fmt, config)
        self.root = _Node()
        self._clusters: OrderedDict[int, Cluster] = OrderedDict()  # least recently used first
        self._counter = 0
        self._added = 0
        self._evicted = 0
        self._blocked = False

    def clusters(self) -> list[Cluster]:
        """Return the live clusters, least recently used first."""
        return list(self._clusters.values())

    def train(self, line: str, ts_ns: int) -> Cluster | None:
        """Add a line seen at `ts_ns`; return its cluster, or None when the line is not used."""
        if not self._allow():
            return None
        tokenized = self.tokenizer.tokenize(line)
        if tokenized is None:
            return None
        tokens, state = tokenized
        if not self.config.min_tokens <= len(tokens) <= self.config.max_tokens:
            return None
        ts_ms = ts_ns // MS
        match = self._tree_search(tokens)
        if match is None:
            self._counter += 1
            match = Cluster(self._counter, list(tokens), _copy_state(state), self.tokenizer, size=1)
            match.volume = len(line)
            match.add_sample(ts_ms, self.config)
            self._put(match)
            self._add_to_tree(match)
        else:
            for i, (new, old) in enumerate(zip(tokens, match.tokens, strict=True)):
                if new != old:
                    match.tokens[i] = PARAM
            match.add_sample(ts_ms, self.config)
            match.volume += len(line)
            self._get(match.id)
        return match

    # ---- throttle and LRU ----

    def _allow(self) -> bool:
        """Loki's limiter: once evictions exceed the ratio of lines added, the Drain stops taking lines."""
        if self._blocked:
            return False
        if self._added == 0:
            self._added = 1
            return True
        if self._evicted / self._added > self.config.max_eviction_ratio:
            # Loki blocks for ten minutes; a query's batch of lines is over well within that.
            self._blocked = True
            return False
        self._added += 1
        return True

    def _get(self, cluster_id: int) -> Cluster | None:
        cluster = self._clusters.get(cluster_id)
        if cluster is not None:
            self._clusters.move_to_end(cluster_id)
        return cluster

    def _put(self, cluster: Cluster) -> None:
        self._clusters[cluster.id] = cluster
        if self.config.max_clusters and len(self._clusters) > self.config.max_clusters:
            self._clusters.popitem(last=False)
            self._evicted += 1

    # ---- tree ----

    def _tree_search(self, tokens: Tokens) -> Cluster | None:
        node = self.root.children.get(str(len(tokens)))
        if node is None:
            return None
        depth = 1
        for token in tokens:
            if depth >= self.config.max_node_depth or depth == len(tokens):
                break
            nxt = node.children.get(token)
            if nxt is None:
                nxt = node.children.get(PARAM)
            if nxt is None:
                return None
            node = nxt
            depth += 1
        return self._fast_match(node.cluster_ids, tokens)

    def _fast_match(self, cluster_ids: Sequence[int], tokens: Tokens) -> Cluster | None:
        best: Cluster | None = None
        best_sim = -1.0
        best_params = -1
        for cid in cluster_ids:
            cluster = self._get(cid)
            if cluster is None:
                continue
            same = params = 0
            for a, b in zip(cluster.tokens, tokens, strict=True):
                if a == PARAM:
                    params += 1
                elif a == b:
                    same += 1
            sim = same / len(cluster.tokens)
            if sim > best_sim or (sim == best_sim and params > best_params):
                best, best_sim, best_params = cluster, sim, params
        return best if best_sim >= self.config.sim_th else None

    def _add_to_tree(self, cluster: Cluster) -> None:
        n = len(cluster.tokens)
        node = self.root.children.setdefault(str(n), _Node())
        depth = 1
        max_children = self.config.max_children
        for token in cluster.tokens:
            if depth >= self.config.max_node_depth or depth >= n:
                # Drop ids of evicted clusters while adding the new one.
                node.cluster_ids = [c for c in node.cluster_ids if self._get(c) is not None] + [cluster.id]
                return
            nxt = node.children.get(token)
            if nxt is None:
                children = node.children
                if _has_number(token):
                    # Tokens with digits are likely variables: they share the wildcard branch.
                    nxt = children.setdefault(PARAM, _Node())
                elif PARAM in children:
                    if len(children) < max_children:
                        nxt = children[token] = _Node()
                    else:
                        nxt = children[PARAM]
                elif len(children) + 1 < max_children:
                    nxt = children[token] = _Node()
                elif len(children) + 1 == max_children:
                    nxt = children[PARAM] = _Node()
                else:
                    nxt = children[PARAM]
            node = nxt
            depth += 1


def _copy_state(state: Any) -> Any:
    return list(state) if isinstance(state, list) else state


# ---- patterns over many streams ---------------------------------------------------------------------------------


@dataclass
class PatternSeries:
    """One pattern at one level, with (ms, count) samples in time order."""

    pattern: str
    level: str
    samples: list[tuple[int, int]]

    @property
    def total(self) -> int:
        """The number of lines the samples count."""
        return sum(v for _, v in self.samples)

    def to_json(self) -> dict[str, Any]:
        """Return Loki's JSON for one pattern: sample times in seconds."""
        return {
            "pattern": self.pattern,
            "level": self.level,
            "samples": [[t // 1000, v] for t, v in self.samples],
        }


@dataclass(frozen=True)
class PatternLimits:
    """What the querier keeps: patterns counting at least `min_total` lines, the `max_patterns` biggest."""

    min_total: int = 30
    max_patterns: int = 300


def normalize_level(level: str | None) -> str:
    """Return the Drain level a `detected_level` value goes to (lower case; unknown when absent or unusual)."""
    if not level:
        return LEVEL_UNKNOWN
    lowered = level.lower()
    return lowered if lowered in LEVELS else LEVEL_UNKNOWN


def find_patterns(
    entries: Iterable[tuple[int, int, str, str | None]],
    from_ms: int,
    through_ms: int,
    step_ms: int,
    config: DrainConfig = DEFAULT_CONFIG,
    limits: PatternLimits = PatternLimits(),
) -> list[PatternSeries]:
    """Return the patterns of (stream id, ns, line, detected_level) entries, oldest first within each stream.

    Each stream gets a Drain per level, its format guessed from its first line; samples in [from, through) are
    summed per (level, pattern) over all streams at the step (at least the sample interval); patterns under
    `min_total` lines are dropped and the biggest `max_patterns` are kept, biggest first.
    """
    step_ms = max(step_ms, config.sample_interval_ms)
    streams: dict[int, tuple[str, dict[str, Drain]]] = {}
    for sid, ts, line, level in entries:
        entry = streams.get(sid)
        if entry is None:
            entry = streams[sid] = (detect_format(line), {})
        fmt, drains = entry
        lvl = normalize_level(level)
        drain = drains.get(lvl)
        if drain is None:
            drain = drains[lvl] = Drain(fmt, config)
        drain.train(line, ts)
    sums: dict[tuple[str, str], dict[int, int]] = {}
    for _, drains in streams.values():
        for lvl, drain in drains.items():
            for cluster in drain.clusters():
                pattern = cluster.pattern()
                if not pattern:
                    continue
                samples = cluster.samples(from_ms, through_ms, step_ms, config)
                if not samples:
                    continue
                acc = sums.setdefault((lvl, pattern), {})
                for t, v in samples:
                    acc[t] = acc.get(t, 0) + v
    series = [PatternSeries(p, lvl, sorted(acc.items())) for (lvl, p), acc in sums.items()]
    kept = [s for s in series if s.total >= limits.min_total]
    kept.sort(key=lambda s: (-s.total, s.level, s.pattern))
    return kept[: limits.max_patterns]
