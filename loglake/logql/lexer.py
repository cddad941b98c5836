"""LogQL tokens: the lexer Loki uses, with its positions, keywords and literal rules."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import IntEnum

from loglake.quoting import QuotingError, unquote

MAX_INPUT_SIZE = 131072
"""Loki refuses queries of this many bytes or more."""


class ParseError(ValueError):
    """A query that is not valid LogQL; `str()` is Loki's message, positions included."""

    def __init__(self, message: str, line: int = 0, col: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col

    def __str__(self) -> str:
        if self.line == 0 and self.col == 0:
            return f"parse error : {self.message}"
        return f"parse error at line {self.line}, col {self.col}: {self.message}"


class Tok(IntEnum):
    """Token kinds, numbered in the order of Loki's grammar (the order of "expecting" lists)."""

    END = 1
    BYTES = 4
    IDENTIFIER = 5
    STRING = 6
    NUMBER = 7
    FUNCTION_FLAG = 8
    DURATION = 9
    RANGE = 10
    EQ = 13
    RE = 14
    NRE = 15
    NPA = 16
    OPEN_BRACE = 17
    CLOSE_BRACE = 18
    OPEN_BRACKET = 19
    CLOSE_BRACKET = 20
    COMMA = 21
    DOT = 22
    PIPE_MATCH = 23
    PIPE_EXACT = 24
    PIPE_PATTERN = 25
    OPEN_PARENTHESIS = 26
    CLOSE_PARENTHESIS = 27
    BY = 28
    WITHOUT = 29
    COUNT_OVER_TIME = 30
    RATE = 31
    RATE_COUNTER = 32
    SUM = 33
    SORT = 34
    SORT_DESC = 35
    AVG = 36
    MAX = 37
    MIN = 38
    COUNT = 39
    STDDEV = 40
    STDVAR = 41
    BOTTOMK = 42
    TOPK = 43
    APPROX_TOPK = 44
    BYTES_OVER_TIME = 45
    BYTES_RATE = 46
    BOOL = 47
    JSON = 48
    REGEXP = 49
    LOGFMT = 50
    PIPE = 51
    LINE_FMT = 52
    LABEL_FMT = 53
    UNWRAP = 54
    AVG_OVER_TIME = 55
    SUM_OVER_TIME = 56
    MIN_OVER_TIME = 57
    MAX_OVER_TIME = 58
    STDVAR_OVER_TIME = 59
    STDDEV_OVER_TIME = 60
    QUANTILE_OVER_TIME = 61
    BYTES_CONV = 62
    DURATION_CONV = 63
    DURATION_SECONDS_CONV = 64
    FIRST_OVER_TIME = 65
    LAST_OVER_TIME = 66
    ABSENT_OVER_TIME = 67
    VECTOR = 68
    LABEL_REPLACE = 69
    UNPACK = 70
    OFFSET = 71
    PATTERN = 72
    IP = 73
    ON = 74
    IGNORING = 75
    GROUP_LEFT = 76
    GROUP_RIGHT = 77
    DECOLORIZE = 78
    DROP = 79
    KEEP = 80
    VARIANTS = 81
    OF = 82
    OR = 83
    AND = 84
    UNLESS = 85
    CMP_EQ = 86
    NEQ = 87
    LT = 88
    LTE = 89
    GT = 90
    GTE = 91
    ADD = 92
    SUB = 93
    MUL = 94
    DIV = 95
    MOD = 96
    POW = 97


# Words and symbols that are always tokens (never label names), as Loki's lexer has them.
KEYWORDS: dict[str, Tok] = {
    ",": Tok.COMMA,
    ".": Tok.DOT,
    "{": Tok.OPEN_BRACE,
    "}": Tok.CLOSE_BRACE,
    "=": Tok.EQ,
    "!=": Tok.NEQ,
    "=~": Tok.RE,
    "!~": Tok.NRE,
    "!>": Tok.NPA,
    "|=": Tok.PIPE_EXACT,
    "|~": Tok.PIPE_MATCH,
    "|>": Tok.PIPE_PATTERN,
    "|": Tok.PIPE,
    "unwrap": Tok.UNWRAP,
    "(": Tok.OPEN_PARENTHESIS,
    ")": Tok.CLOSE_PARENTHESIS,
    "by": Tok.BY,
    "without": Tok.WITHOUT,
    "bool": Tok.BOOL,
    "[": Tok.OPEN_BRACKET,
    "]": Tok.CLOSE_BRACKET,
    "label_replace": Tok.LABEL_REPLACE,
    "offset": Tok.OFFSET,
    "on": Tok.ON,
    "ignoring": Tok.IGNORING,
    "group_left": Tok.GROUP_LEFT,
    "group_right": Tok.GROUP_RIGHT,
    "or": Tok.OR,
    "and": Tok.AND,
    "unless": Tok.UNLESS,
    "+": Tok.ADD,
    "-": Tok.SUB,
    "*": Tok.MUL,
    "/": Tok.DIV,
    "%": Tok.MOD,
    "^": Tok.POW,
    "==": Tok.CMP_EQ,
    ">": Tok.GT,
    ">=": Tok.GTE,
    "<": Tok.LT,
    "<=": Tok.LTE,
    "json": Tok.JSON,
    "regexp": Tok.REGEXP,
    "logfmt": Tok.LOGFMT,
    "unpack": Tok.UNPACK,
    "pattern": Tok.PATTERN,
    "label_format": Tok.LABEL_FMT,
    "line_format": Tok.LINE_FMT,
    "ip": Tok.IP,
    "decolorize": Tok.DECOLORIZE,
    "drop": Tok.DROP,
    "keep": Tok.KEEP,
    "variants": Tok.VARIANTS,
    "of": Tok.OF,
}

# Words that are tokens only when a call follows (`(`, or `by (` / `without (`); otherwise identifiers.
FUNCTIONS: dict[str, Tok] = {
    "rate": Tok.RATE,
    "rate_counter": Tok.RATE_COUNTER,
    "count_over_time": Tok.COUNT_OVER_TIME,
    "bytes_rate": Tok.BYTES_RATE,
    "bytes_over_time": Tok.BYTES_OVER_TIME,
    "avg_over_time": Tok.AVG_OVER_TIME,
    "sum_over_time": Tok.SUM_OVER_TIME,
    "min_over_time": Tok.MIN_OVER_TIME,
    "max_over_time": Tok.MAX_OVER_TIME,
    "stdvar_over_time": Tok.STDVAR_OVER_TIME,
    "stddev_over_time": Tok.STDDEV_OVER_TIME,
    "quantile_over_time": Tok.QUANTILE_OVER_TIME,
    "first_over_time": Tok.FIRST_OVER_TIME,
    "last_over_time": Tok.LAST_OVER_TIME,
    "absent_over_time": Tok.ABSENT_OVER_TIME,
    "vector": Tok.VECTOR,
    "sum": Tok.SUM,
    "avg": Tok.AVG,
    "max": Tok.MAX,
    "min": Tok.MIN,
    "count": Tok.COUNT,
    "stddev": Tok.STDDEV,
    "stdvar": Tok.STDVAR,
    "bottomk": Tok.BOTTOMK,
    "topk": Tok.TOPK,
    "sort": Tok.SORT,
    "sort_desc": Tok.SORT_DESC,
    "label_replace": Tok.LABEL_REPLACE,
    "approx_topk": Tok.APPROX_TOPK,
    "bytes": Tok.BYTES_CONV,
    "duration": Tok.DURATION_CONV,
    "duration_seconds": Tok.DURATION_SECONDS_CONV,
    "ip": Tok.IP,
}

_DISPLAY: dict[Tok, str] = {tok: text for text, tok in KEYWORDS.items()}
_DISPLAY[Tok.END] = "$end"


def token_name(tok: Tok) -> str:
    """Return the name Loki's syntax errors use for a token kind (`offset`, `IDENTIFIER`, `$end`)."""
    return _DISPLAY.get(tok, tok.name)


PARSER_FLAGS = ("--strict", "--keep-empty")

_NS = 1
_US = 1000
_MS = 1_000_000
_S = 1_000_000_000
_M = 60 * _S
_H = 60 * _M
_D = 24 * _H
_W = 7 * _D
_Y = 365 * _D
_MAX_INT64 = (1 << 63) - 1

# Prometheus duration units, biggest first (they must be written in this order).
_PROM_UNITS: dict[str, tuple[int, int]] = {
    "y": (_Y, 1),
    "w": (_W, 2),
    "d": (_D, 3),
    "h": (_H, 4),
    "m": (_M, 5),
    "s": (_S, 6),
    "ms": (_MS, 7),
}
_GO_UNITS = {"ns": _NS, "us": _US, "µs": _US, "μs": _US, "ms": _MS, "s": _S, "m": _M, "h": _H}
_GO_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]+)")


class DurationError(ValueError):
    """A duration string that neither Prometheus nor Go accepts."""


def parse_prometheus_duration(text: str) -> int:
    """Parse a Prometheus duration (`1h30m`, `5m`, `0`) into nanoseconds, with Prometheus' messages."""
    if text == "0":
        return 0
    if text == "":
        raise DurationError("empty duration string")
    rest = text
    total = 0
    last_pos = 0
    while rest:
        if not rest[0].isascii() or not rest[0].isdigit():
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        i = 0
        while i < len(rest) and rest[i].isascii() and rest[i].isdigit():
            i += 1
        value = int(rest[:i])
        if value >= 1 << 64:
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        rest = rest[i:]
        j = 0
        while j < len(rest) and not (rest[j].isascii() and rest[j].isdigit()):
            j += 1
        if j == 0:
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        unit_name = rest[:j]
        rest = rest[j:]
        unit = _PROM_UNITS.get(unit_name)
        if unit is None:
            raise DurationError(f"unknown unit {_go_quote(unit_name)} in duration {_go_quote(text)}")
        mult, pos = unit
        if pos <= last_pos:
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        last_pos = pos
        if value > (1 << 63) // mult:
            raise DurationError("duration out of range")
        total += value * mult
        if total > _MAX_INT64:
            raise DurationError("duration out of range")
    return total


def parse_go_duration(text: str) -> int:
    """Parse a Go duration (`1.5h`, `-5m`, `300us`) into nanoseconds, as Go's time.ParseDuration."""
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise DurationError(f"time: invalid duration {_go_quote(text)}")
    total = 0
    pos = 0
    while pos < len(s):
        m = _GO_DURATION_PART.match(s, pos)
        if m is None or (m.group(1) == "" and not m.group(2)):
            raise DurationError(f"time: invalid duration {_go_quote(text)}")
        whole, frac, unit_name = m.group(1), m.group(2) or "", m.group(3)
        unit = _GO_UNITS.get(unit_name)
        if unit is None:
            raise DurationError(f"time: unknown unit {_go_quote(unit_name)} in duration {_go_quote(text)}")
        value = int(whole or "0") * unit
        if frac:
            value += int(frac) * unit // 10 ** len(frac)
        total += value
        if total > 1 << 63:
            raise DurationError(f"time: invalid duration {_go_quote(text)}")
        pos = m.end()
    if total > _MAX_INT64 and not (neg and total == 1 << 63):
        raise DurationError(f"time: invalid duration {_go_quote(text)}")
    return -total if neg else total


def parse_duration(text: str) -> int:
    """Parse a duration as LogQL does: Prometheus syntax first, then Go's; return nanoseconds."""
    try:
        return parse_prometheus_duration(text)
    except DurationError:
        return parse_go_duration(text)


_BYTE_UNITS = {
    "b": 1,
    "": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "p": 1000**5,
    "pb": 1000**5,
    "pi": 1024**5,
    "pib": 1024**5,
    "e": 1000**6,
    "eb": 1000**6,
    "ei": 1024**6,
    "eib": 1024**6,
}


def parse_bytes(text: str) -> int:
    """Parse a byte size (`20MB`, `9KiB`, `1.5GB`) into bytes, as go-humanize's ParseBytes."""
    i = 0
    while i < len(text) and (text[i].isdigit() or text[i] in ".,"):
        i += 1
    number = text[:i].replace(",", "")
    try:
        value = go_parse_float(number)
    except ValueError:
        raise ValueError(f"invalid byte size {text!r}") from None
    factor = _BYTE_UNITS.get(text[i:].strip().lower())
    if factor is None:
        raise ValueError(f"unhandled size name: {text[i:].strip().lower()}")
    result = value * factor
    if result >= 2.0**64:
        raise ValueError(f"too large: {text}")
    return int(result)


_GO_FLOAT = re.compile(
    r"[+-]?(?:"
    r"(?:inf|infinity|nan)"
    r"|0[xX](?:_?[0-9a-fA-F])*(?:\.(?:[0-9a-fA-F](?:_?[0-9a-fA-F])*)?)?[pP][+-]?[0-9](?:_?[0-9])*"
    r"|(?:[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?|\.[0-9](?:_?[0-9])*)(?:[eE][+-]?[0-9](?:_?[0-9])*)?"
    r")",
    re.IGNORECASE,
)


def go_parse_float(text: str) -> float:
    """Parse a number as Go's strconv.ParseFloat; raise ValueError with Go's message otherwise."""
    if not _GO_FLOAT.fullmatch(text) or text.startswith("_"):
        raise ValueError(f"strconv.ParseFloat: parsing {_go_quote(text)}: invalid syntax")
    s = text.replace("_", "")
    lower = s.lower().lstrip("+-")
    if "_" in text and not lower.startswith("0x"):
        # Go allows digit separators in a float only after a base prefix.
        raise ValueError(f"strconv.ParseFloat: parsing {_go_quote(text)}: invalid syntax")
    if lower.startswith("0x"):
        value = float.fromhex(s)
    else:
        value = float(s)
    if value in (float("inf"), float("-inf")) and lower not in ("inf", "infinity"):
        raise ValueError(f"strconv.ParseFloat: parsing {_go_quote(text)}: value out of range")
    return value


def _go_quote(text: str) -> str:
    from loglake.quoting import quote

    return quote(text)


@dataclass(frozen=True)
class Token:
    """One token: its kind, text, decoded value, and where it starts (line 0 = as Loki reports it)."""

    kind: Tok
    text: str
    line: int
    col: int
    value: int = 0
    """Nanoseconds of a DURATION or RANGE, bytes of a BYTES token."""


def _is_letter(ch: str) -> bool:
    return ch == "_" or ch.isalpha()


def _is_ident_rune(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or (ch.isdecimal() and unicodedata.category(ch) == "Nd")


def _is_go_space(ch: str) -> bool:
    return ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"


def _is_number_rune(ch: str) -> bool:
    return unicodedata.category(ch) in ("Nd", "Nl", "No")


_DURATION_RUNES = set("numµshdwy")
_BYTES_RUNES = set("BikKMGTP")
_SCANNER_WHITESPACE = " \t\n\r"


class Lexer:
    """Turns a query into tokens on demand, exactly as Loki's lexer splits and names them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)

    def position(self, index: int) -> tuple[int, int]:
        """Return Loki's (line, column) of the character at `index` (the end of input included)."""
        if not self.text:
            return 0, 0
        lo, hi = 0, len(self._line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._line_starts[mid] <= index:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, index - self._line_starts[lo] + 1

    def _error(self, message: str, index: int, line_valid: bool = True) -> ParseError:
        line, col = self.position(index)
        return ParseError(message, line if line_valid else 0, col)

    def _peek(self, index: int) -> str:
        return self.text[index] if index < len(self.text) else ""

    # -- the Go text/scanner part -------------------------------------------------------------

    def _skip_space_and_comments(self) -> None:
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos] in _SCANNER_WHITESPACE:
                self.pos += 1
            if self.pos + 1 < len(text) and text[self.pos] == "/" and text[self.pos + 1] in "/*":
                start = self.pos
                if text[self.pos + 1] == "/":
                    end = text.find("\n", self.pos)
                    self.pos = len(text) if end < 0 else end
                else:
                    end = text.find("*/", self.pos + 2)
                    if end < 0:
                        raise self._error("comment not terminated", start)
                    self.pos = end + 2
                continue
            return

    def _scan_digits(self, i: int, base: int) -> tuple[int, int, str]:
        """Scan digits (and `_`) of `base`; return the new index, digit/separator flags, first bad digit."""
        text = self.text
        flags = 0
        invalid = ""
        while i < len(text):
            ch = text[i]
            if ch == "_":
                flags |= 2
            elif base <= 10 and "0" <= ch <= "9":
                flags |= 1
                if ord(ch) >= ord("0") + base and not invalid:
                    invalid = ch
            elif base == 16 and ch in "0123456789abcdefABCDEF":
                flags |= 1
            else:
                break
            i += 1
        return i, flags, invalid

    def _scan_number(self, start: int, seen_dot: bool) -> tuple[int, bool]:
        """Scan a Go number literal from `start`; return its end and whether it is a float."""
        text = self.text
        i = start
        base = 10
        prefix = ""
        digsep = 0
        invalid = ""
        is_float = False
        if not seen_dot:
            if text[i] == "0":
                i += 1
                nxt = self._peek(i).lower()
                if nxt == "x":
                    i += 1
                    base, prefix = 16, "x"
                elif nxt == "o":
                    i += 1
                    base, prefix = 8, "o"
                elif nxt == "b":
                    i += 1
                    base, prefix = 2, "b"
                else:
                    base, prefix = 8, "0"
                    digsep = 1
            i, flags, invalid = self._scan_digits(i, base)
            digsep |= flags
            if self._peek(i) == ".":
                i += 1
                seen_dot = True
        else:
            i += 1  # the dot
        if seen_dot:
            is_float = True
            if prefix in ("o", "b"):
                raise self._error(f"invalid radix point in {_literal_name(prefix)}", start)
            i, flags, _ = self._scan_digits(i, base)
            digsep |= flags
        if digsep & 1 == 0:
            raise self._error(f"{_literal_name(prefix)} has no digits", start)
        e = self._peek(i).lower()
        if e in ("e", "p"):
            ch = self._peek(i)
            if e == "e" and prefix not in ("", "0"):
                raise self._error(f"'{ch}' exponent requires decimal mantissa", start)
            if e == "p" and prefix != "x":
                raise self._error(f"'{ch}' exponent requires hexadecimal mantissa", start)
            i += 1
            is_float = True
            if self._peek(i) in ("+", "-") and self._peek(i):
                i += 1
            i, flags, _ = self._scan_digits(i, 10)
            digsep |= flags
            if flags & 1 == 0:
                raise self._error("exponent has no digits", start)
        elif prefix == "x" and is_float:
            raise self._error("hexadecimal mantissa requires a 'p' exponent", start)
        if not is_float and invalid:
            raise self._error(f"invalid digit '{invalid}' in {_literal_name(prefix)}", start)
        if digsep & 2 and _invalid_separator(text[start:i]):
            raise self._error("'_' must separate successive digits", start)
        return i, is_float

    def _scan_quoted(self, start: int, quote: str) -> tuple[int, int]:
        """Scan a `"` or `'` literal; return its end index and the number of characters in it."""
        text = self.text
        i = start + 1
        count = 0
        error = ""
        while True:
            if i >= len(text) or text[i] == "\n":
                raise self._error("literal not terminated", start)
            ch = text[i]
            if ch == quote:
                i += 1
                break
            if ch == "\\":
                i += 1
                esc = self._peek(i)
                if esc and esc in "abfnrtv\\" + quote:
                    i += 1
                elif esc and esc in "01234567":
                    i = self._escape_digits(i, 8, 3, start)
                elif esc == "x":
                    i = self._escape_digits(i + 1, 16, 2, start)
                elif esc == "u":
                    i = self._escape_digits(i + 1, 16, 4, start)
                elif esc == "U":
                    i = self._escape_digits(i + 1, 16, 8, start)
                else:
                    error = error or "invalid char escape"
            else:
                i += 1
            count += 1
        if error:
            raise self._error(error, start)
        return i, count

    def _escape_digits(self, i: int, base: int, n: int, start: int) -> int:
        digits = "01234567" if base == 8 else "0123456789abcdefABCDEF"
        while n > 0 and self._peek(i) and self._peek(i) in digits:
            i += 1
            n -= 1
        if n > 0:
            raise self._error("invalid char escape", start)
        return i

    # -- the Loki part ------------------------------------------------------------------------

    def _is_function_call(self, i: int) -> bool:
        """Say whether a call follows index `i`: `(`, or `by (` / `without (` (Loki's isFunction)."""
        text = self.text
        while i < len(text) and _is_go_space(text[i]):
            i += 1
        if i >= len(text):
            return False
        if text[i] == "(":
            return True
        for word in ("by", "without"):
            if text[i : i + len(word)].lower() == word:
                j = i + len(word)
                while j < len(text) and _is_go_space(text[j]):
                    j += 1
                return j < len(text) and text[j] == "("
        return False

    def _scan_suffix(self, i: int, accept: set[str]) -> int:
        """Return the end of the run after `i` of digits, `.` and `accept` characters (no spaces)."""
        text = self.text
        j = i
        while j < len(text):
            ch = text[j]
            if _is_go_space(ch) or not (_is_number_rune(ch) or ch in accept or ch == "."):
                break
            j += 1
        return j

    def _try_duration(self, number: str, end: int) -> tuple[int, int] | None:
        stop = self._scan_suffix(end, _DURATION_RUNES)
        if stop == end:
            return None
        try:
            return parse_duration(number + self.text[end:stop]), stop
        except DurationError:
            return None

    def _try_bytes(self, number: str, end: int) -> tuple[int, int] | None:
        stop = self._scan_suffix(end, _BYTES_RUNES)
        if stop == end:
            return None
        try:
            return parse_bytes(number + self.text[end:stop]), stop
        except ValueError:
            return None

    def next_token(self) -> Token:
        """Scan and return the next token; raise ParseError where Loki's lexer reports an error."""
        text = self.text
        while True:
            self._skip_space_and_comments()
            start = self.pos
            if start >= len(text):
                line, col = self.position(start)
                return Token(Tok.END, "", line, col)
            line, col = self.position(start)
            ch = text[start]
            if ch == "#":
                end = text.find("\n", start)
                self.pos = len(text) if end < 0 else end + 1
                continue
            break

        if ch == "\ufeff" and start == 0:
            self.pos += 1
            return self.next_token()

        if _is_letter(ch):
            i = start + 1
            while i < len(text) and _is_ident_rune(text[i]):
                i += 1
            self.pos = i
            return self._word(text[start:i], line, col)

        if "0" <= ch <= "9" or (ch == "." and "0" <= self._peek(start + 1) <= "9" and self._peek(start + 1)):
            end, _ = self._scan_number(start, ch == ".")
            number = text[start:end]
            self.pos = end
            found = self._try_duration(number, end)
            if found is not None:
                self.pos = found[1]
                return Token(Tok.DURATION, text[start : found[1]], 0, col, found[0])
            found = self._try_bytes(number, end)
            if found is not None:
                self.pos = found[1]
                return Token(Tok.BYTES, text[start : found[1]], 0, col, found[0])
            return Token(Tok.NUMBER, number, line, col)

        if ch == '"' or ch == "`":
            if ch == '"':
                end, _ = self._scan_quoted(start, '"')
            else:
                end = text.find("`", start + 1)
                if end < 0:
                    raise self._error("literal not terminated", start)
                end += 1
            self.pos = end
            try:
                value = unquote(text[start:end])
            except QuotingError:
                raise ParseError("invalid syntax", line, col) from None
            return Token(Tok.STRING, value, line, col)

        if ch == "'":
            end, count = self._scan_quoted(start, "'")
            if count != 1:
                raise self._error("invalid char literal", start)
            self.pos = end
            return Token(Tok.IDENTIFIER, text[start:end], line, col)

        if ch == "-":
            if self._peek(start + 1) == "-":
                j = start + 2
                while j < len(text) and (text[j].isalpha() or text[j] == "-"):
                    j += 1
                if "-" + text[start + 1 : j] in PARSER_FLAGS:
                    self.pos = j
                    return Token(Tok.FUNCTION_FLAG, text[start:j], 0, col)
            found = self._try_duration("-", start + 1)
            if found is not None:
                self.pos = found[1]
                return Token(Tok.DURATION, text[start : found[1]], 0, col, found[0])

        if ch == "[":
            close = text.find("]", start + 1)
            if close < 0:
                raise ParseError("missing closing ']' in duration", 0, col)
            try:
                value = parse_prometheus_duration(text[start + 1 : close])
            except DurationError as exc:
                raise ParseError(str(exc), 0, col) from None
            self.pos = close + 1
            return Token(Tok.RANGE, text[start : close + 1], 0, col, value)

        self.pos = start + 1
        pair = (ch + self._peek(start + 1)).lower()
        tok = KEYWORDS.get(pair)
        if tok is not None and len(pair) == 2:
            self.pos = start + 2
            return Token(tok, text[start : start + 2], 0, col)
        tok = KEYWORDS.get(ch)
        if tok is not None:
            return Token(tok, ch, line, col)
        return Token(Tok.IDENTIFIER, ch, line, col)

    def _word(self, word: str, line: int, col: int) -> Token:
        lower = word.lower()
        tok = FUNCTIONS.get(lower)
        if tok is not None:
            if self._is_function_call(self.pos):
                return Token(tok, word, line, col)
            return Token(Tok.IDENTIFIER, word, line, col)
        tok = KEYWORDS.get(lower)
        if tok is not None:
            return Token(tok, word, line, col)
        return Token(Tok.IDENTIFIER, word, line, col)


def _literal_name(prefix: str) -> str:
    return {"x": "hexadecimal literal", "o": "octal literal", "0": "octal literal", "b": "binary literal"}.get(
        prefix, "decimal literal"
    )


def _invalid_separator(text: str) -> bool:
    """Say whether `_` in a Go number literal is misplaced (not between digits)."""
    x1 = " "
    d = "."
    i = 0
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "xbo":
        x1 = text[1].lower()
        d = "0"
        i = 2
    while i < len(text):
        p = d
        d = text[i]
        if d == "_":
            if p != "0":
                return True
        elif d.isdigit() or (x1 == "x" and d.lower() in "abcdef"):
            d = "0"
        else:
            if p == "_":
                return True
            d = "."
        i += 1
    return d == "_"


def tokenize(text: str) -> list[Token]:
    """Return all tokens of `text` up to and including END (for tests and tools)."""
    lexer = Lexer(text)
    out = []
    while True:
        tok = lexer.next_token()
        out.append(tok)
        if tok.kind == Tok.END:
            return out
