"""Go RE2 regular expressions (as Prometheus, Promtail and its stages write them) translated to Python `re`.

Go's meaning is kept: ASCII `\\d`/`\\w`/`\\s`/`\\b`, flags in the middle of a pattern, `$` as end of text, POSIX and
Unicode classes, repeated group names; what RE2 lacks (back-references, look-around) is refused. Relabeling
anchors patterns as Prometheus does; the pipeline stages search them unanchored.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["CompiledRE2", "PatternError", "compile_re2", "expand_template"]


class PatternError(ValueError):
    """A regular expression Go's RE2 syntax rejects, or one loglake cannot translate."""


_WORD = "0-9A-Za-z_"
_POSIX: dict[str, list[tuple[int, int]]] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
_PERL_RANGES: dict[str, list[tuple[int, int]]] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_WORD_BOUNDARY = rf"(?:(?<=[{_WORD}])(?![{_WORD}])|(?<![{_WORD}])(?=[{_WORD}]))"
_NOT_WORD_BOUNDARY = rf"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))"
_MAX_REPEAT = 1000
_SIMPLE_ESCAPES = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}


def _char(cp: int) -> str:
    """One code point as Python pattern text, safe inside and outside a class."""
    if cp < 0x80 and (chr(cp).isalnum() or cp == 0x5F):
        return chr(cp)
    return f"\\U{cp:08x}"


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    return "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in ranges)


def _class_text(ranges: list[tuple[int, int]], negated: bool = False) -> str:
    """A Python character class for the ranges; an empty class matches nothing, as in Go."""
    if not ranges:
        return "[\\s\\S]" if negated else "(?!)"
    return ("[^" if negated else "[") + _ranges_text(sorted(ranges)) + "]"


def _class_atom(
    ranges: list[tuple[int, int]], complements: list[list[tuple[int, int]]], negated: bool, fold: bool
) -> str:
    """A character class as Python pattern text.

    `complements` are sets whose complement belongs to the class. Under case folding Go folds such a set
    before complementing it, which Python's `(?i:[^...])` does not do for a complement written out as
    ranges (the Kelvin sign would match `(?i)\\W`); a negative lookahead gives Go's meaning.
    """
    if not complements:
        text = _class_text(ranges, negated)
        return f"(?i:{text})" if fold else text
    alternatives = [f"(?i:{_class_text(ranges)})"] if ranges else []
    alternatives += [f"(?!(?i:{_class_text(c)}))(?s:.)" for c in complements]
    body = "(?:" + "|".join(alternatives) + ")"
    return f"(?!{body})(?s:.)" if negated else body


def _negate(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= sys.maxunicode:
        out.append((nxt, sys.maxunicode))
    return out


@lru_cache(maxsize=1)
def _category_ranges() -> dict[str, list[tuple[int, int]]]:
    """Code point ranges of every Unicode general category (and major class), computed once on first use."""
    table: dict[str, list[tuple[int, int]]] = {}
    start = 0
    current = unicodedata.category(chr(0))
    for cp in range(1, sys.maxunicode + 2):
        cat = unicodedata.category(chr(cp)) if cp <= sys.maxunicode else ""
        if cat != current:
            table.setdefault(current, []).append((start, cp - 1))
            start, current = cp, cat
    for name in list(table):
        table.setdefault(name[0], []).extend(table[name])
    for name, ranges in table.items():
        table[name] = sorted(ranges)
    # Go has no table of unassigned code points (Cn), so its C is Cc, Cf, Co and Cs only.
    table["C"] = sorted(r for cat in ("Cc", "Cf", "Co", "Cs") for r in table.get(cat, []))
    table.pop("Cn", None)
    return table


def _unicode_class(name: str, negated: bool, seq: str) -> tuple[list[tuple[int, int]], bool]:
    """The ranges of a `\\p` class, and whether the class is their complement."""
    if name.startswith("^"):
        name, negated = name[1:], not negated
    if name == "Any":
        ranges = [(0, sys.maxunicode)]
    else:
        table = _category_ranges()
        if name not in table:
            raise PatternError(
                f"error parsing regexp: invalid character class range: `{seq}` "
                "(loglake supports Unicode general categories such as \\pL, not scripts)"
            )
        ranges = table[name]
    return ranges, negated


def _parse_octal_or_hex(pattern: str, pos: int) -> tuple[int, int] | None:
    """A `\\x..` or octal escape starting after the backslash at pos: (code point, next position)."""
    c = pattern[pos]
    if c == "x":
        if pos + 1 < len(pattern) and pattern[pos + 1] == "{":
            end = pattern.find("}", pos + 2)
            digits = pattern[pos + 2 : end] if end >= 0 else ""
            if end < 0 or not digits or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise PatternError(
                    f"error parsing regexp: invalid escape sequence: `\\{pattern[pos : end + 1 if end >= 0 else None]}`"
                )
            cp = int(digits, 16)
            if cp > sys.maxunicode:
                raise PatternError(f"error parsing regexp: invalid escape sequence: `\\{pattern[pos : end + 1]}`")
            return cp, end + 1
        digits = pattern[pos + 1 : pos + 3]
        if len(digits) < 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise PatternError(f"error parsing regexp: invalid escape sequence: `\\{pattern[pos : pos + 3]}`")
        return int(digits, 16), pos + 3
    if c in "1234567" and (pos + 1 >= len(pattern) or pattern[pos + 1] not in "01234567"):
        return None  # a lone digit would be a backreference, which RE2 does not have
    if c in "01234567":
        end = pos + 1
        while end < len(pattern) and end < pos + 3 and pattern[end] in "01234567":
            end += 1
        return int(pattern[pos:end], 8), end
    return None


class _Translator:
    """Walks an RE2 pattern once and writes the equivalent Python pattern."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.pos = 0
        self.out: list[str] = []
        self.fold = False
        self.multiline = False
        self.dot_nl = False
        self.ungreedy = False
        self.groups = 0
        self.names: dict[str, list[int]] = {}
        # Per open group: the flags to restore at its `)`, and where the group starts in `out`.
        self.stack: list[tuple[tuple[bool, bool, bool, bool], int]] = []
        # What the last item was: "atom" may take a repeat, "repeat" may not, "none" has nothing to repeat,
        # and "repeated" is a repeat followed by a flag group, which Go lets repeat again.
        self.last = "none"
        self.atom_start = 0
        self.repeat_start = 0

    def error(self, problem: str, text: str) -> PatternError:
        return PatternError(f"error parsing regexp: {problem}: `{text}`")

    def atom(self, text: str, foldable: bool = True) -> None:
        self.atom_start = len(self.out)
        self.out.append(f"(?i:{text})" if self.fold and foldable else text)
        self.last = "atom"

    def translate(self) -> str:
        p = self.p
        while self.pos < len(p):
            c = p[self.pos]
            if c == "(":
                self.open_group()
            elif c == ")":
                if not self.stack:
                    raise self.error("unexpected )", p)
                flags, self.atom_start = self.stack.pop()
                self.fold, self.multiline, self.dot_nl, self.ungreedy = flags
                self.out.append(")")
                self.pos += 1
                self.last = "atom"
            elif c == "|":
                self.out.append("|")
                self.pos += 1
                self.last = "none"
            elif c in "*+?{":
                self.repeat()
            elif c == "[":
                self.char_class()
            elif c == ".":
                self.atom("(?s:.)" if self.dot_nl else "[^\\n]", foldable=False)
                self.pos += 1
            elif c == "^":
                self.atom("(?m:^)" if self.multiline else "(?:\\A)", foldable=False)
                self.pos += 1
            elif c == "$":
                self.atom("(?m:$)" if self.multiline else "(?:\\Z)", foldable=False)
                self.pos += 1
            elif c == "\\":
                self.escape()
            else:
                self.atom(_char(ord(c)))
                self.pos += 1
        if self.stack:
            raise self.error("missing closing )", p)
        return "".join(self.out)

    def open_group(self) -> None:
        p, start = self.p, self.pos
        saved = (self.fold, self.multiline, self.dot_nl, self.ungreedy)
        named = p.startswith("(?P<", start) or p.startswith("(?<", start)
        if named or not p.startswith("(?", start):
            end = start
            if named:
                begin = start + (4 if p[start + 2] == "P" else 3)
                end = p.find(">", begin)
                name = p[begin:end] if end >= 0 else ""
                if end < 0 or not name or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name):
                    raise self.error("invalid named capture", p[start : end + 1 if end >= 0 else None])
                self.names.setdefault(name, []).append(self.groups + 1)
            self.groups += 1
            self.stack.append((saved, len(self.out)))
            self.out.append("(")
            self.pos = end + 1
            self.last = "none"
            return
        # (?flags) sets flags up to the end of the enclosing group; (?flags:re) only inside re.
        fold, multiline, dot_nl, ungreedy = saved
        value, saw_flag = True, False
        i = start + 2
        while i < len(p):
            ch = p[i]
            i += 1
            if ch in "imsU":
                if ch == "i":
                    fold = value
                elif ch == "m":
                    multiline = value
                elif ch == "s":
                    dot_nl = value
                else:
                    ungreedy = value
                saw_flag = True
            elif ch == "-" and value:
                value, saw_flag = False, False
            elif ch in ":)" and (value or saw_flag):
                if ch == ":":
                    self.stack.append((saved, len(self.out)))
                    self.out.append("(?:")
                    self.last = "none"
                elif self.last == "repeat":
                    self.last = "repeated"
                self.fold, self.multiline, self.dot_nl, self.ungreedy = fold, multiline, dot_nl, ungreedy
                self.pos = i
                return
            else:
                break
        raise self.error("invalid or unsupported Perl syntax", p[start:i])

    def repeat(self) -> None:
        p, start = self.p, self.pos
        c = p[start]
        end = start + 1
        if c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", p[start:])
            if m is None:
                # Not a repeat: Go reads `{` as a literal brace.
                self.atom(_char(ord("{")))
                self.pos += 1
                return
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
            if lo > _MAX_REPEAT or hi > _MAX_REPEAT or (hi >= 0 and hi < lo):
                raise self.error("invalid repeat count", m.group(0))
            end = start + m.end()
        lazy = end < len(p) and p[end] == "?"
        if lazy:
            end += 1
        op = p[start:end]
        if self.last == "repeat":
            raise self.error("invalid nested repetition operator", p[self.repeat_start : end])
        if self.last == "none":
            raise self.error("missing argument to repetition operator", op)
        if self.last == "repeated":
            self.out[self.atom_start :] = ["(?:", *self.out[self.atom_start :], ")"]
        base = op[:-1] if lazy else op
        self.out.append(base + ("?" if lazy != self.ungreedy else ""))
        self.pos = end
        self.last = "repeat"
        self.repeat_start = start

    def escape(self) -> None:
        p, pos = self.p, self.pos + 1
        if pos >= len(p):
            raise self.error("trailing backslash at end of expression", "")
        c = p[pos]
        if c == "Q":
            end = p.find("\\E", pos + 1)
            literal = p[pos + 1 :] if end < 0 else p[pos + 1 : end]
            for ch in literal:
                self.atom(_char(ord(ch)))
            self.pos = len(p) if end < 0 else end + 2
            return
        self.pos = pos + 1
        if c == "A":
            self.atom("(?:\\A)", foldable=False)
        elif c == "z":
            self.atom("(?:\\Z)", foldable=False)
        elif c == "b":
            self.atom(_WORD_BOUNDARY, foldable=False)
        elif c == "B":
            self.atom(_NOT_WORD_BOUNDARY, foldable=False)
        elif c in "dswDSW" or c in "pP":
            if c in "pP":
                ranges, negated, self.pos = self.unicode_escape(pos)
            else:
                ranges, negated = _PERL_RANGES[c.lower()], c.isupper()
            if negated and self.fold:
                self.atom(_class_atom([], [ranges], False, True), foldable=False)
            else:
                self.atom(_class_text(_negate(ranges) if negated else ranges))
        else:
            cp, self.pos = self.single_escape(pos)
            self.atom(_char(cp))

    def unicode_escape(self, pos: int) -> tuple[list[tuple[int, int]], bool, int]:
        """`\\pN`, `\\p{Name}`, `\\PN`, `\\P{^Name}` starting at the `p`: (ranges, negated, next position)."""
        p = self.p
        if pos + 1 >= len(p):
            raise self.error("invalid character class range", p[pos - 1 :])
        if p[pos + 1] == "{":
            end = p.find("}", pos + 2)
            if end < 0:
                raise self.error("invalid character class range", p[pos - 1 :])
            name, nxt = p[pos + 2 : end], end + 1
        else:
            name, nxt = p[pos + 1], pos + 2
        ranges, negated = _unicode_class(name, p[pos] == "P", p[pos - 1 : nxt])
        return ranges, negated, nxt

    def single_escape(self, pos: int) -> tuple[int, int]:
        """An escape that stands for one character, starting after the backslash: (code point, next position)."""
        p = self.p
        c = p[pos]
        number = _parse_octal_or_hex(p, pos)
        if number is not None:
            return number
        if c in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[c], pos + 1
        if c.isascii() and not c.isalnum():
            return ord(c), pos + 1
        raise self.error("invalid escape sequence", "\\" + c)

    def char_class(self) -> None:
        p, start = self.p, self.pos
        pos = start + 1
        negated = pos < len(p) and p[pos] == "^"
        if negated:
            pos += 1
        ranges: list[tuple[int, int]] = []
        complements: list[list[tuple[int, int]]] = []

        def add(cls: list[tuple[int, int]], complement: bool) -> None:
            if complement and self.fold:
                complements.append(cls)
            else:
                ranges.extend(_negate(cls) if complement else cls)

        first = True
        while True:
            if pos >= len(p):
                raise self.error("missing closing ]", p[start:])
            c = p[pos]
            if c == "]" and not first:
                pos += 1
                break
            first = False
            if p.startswith("[:", pos):
                end = p.find(":]", pos + 2)
                if end >= 0:
                    name = p[pos + 2 : end]
                    neg = name.startswith("^")
                    cls = _POSIX.get(name[1:] if neg else name)
                    if cls is None:
                        raise self.error("invalid character class range", p[pos : end + 2])
                    add(cls, neg)
                    pos = end + 2
                    continue
            if c == "\\" and pos + 1 < len(p) and p[pos + 1] in "dswDSW":
                add(_PERL_RANGES[p[pos + 1].lower()], p[pos + 1].isupper())
                pos += 2
                continue
            if c == "\\" and pos + 1 < len(p) and p[pos + 1] in "pP":
                cls, neg, pos = self.unicode_escape(pos + 1)
                add(cls, neg)
                continue
            lo, pos = self.class_char(pos, start)
            hi = lo
            if pos + 1 < len(p) and p[pos] == "-" and p[pos + 1] != "]":
                range_start = pos - 1
                hi, pos = self.class_char(pos + 1, start)
                if hi < lo:
                    raise self.error("invalid character class range", p[range_start:pos])
            ranges.append((lo, hi))
        self.atom(_class_atom(ranges, complements, negated, self.fold), foldable=False)
        self.pos = pos

    def class_char(self, pos: int, start: int) -> tuple[int, int]:
        p = self.p
        if p[pos] != "\\":
            return ord(p[pos]), pos + 1
        if pos + 1 >= len(p):
            raise self.error("missing closing ]", p[start:])
        return self.single_escape(pos + 1)


@dataclass(frozen=True)
class CompiledRE2:
    """An RE2 pattern compiled to Python: the pattern, and Go's capture-group names (which may repeat).

    Use `pattern.search` (Go's leftmost-first search): anchoring, when wanted, is part of the pattern.
    """

    source: str
    pattern: re.Pattern[str]
    names: Mapping[str, tuple[int, ...]]

    def replace_all(self, text: str, template: str) -> str:
        """Go's Regexp.ReplaceAllString: every match replaced by the expanded template."""
        out: list[str] = []
        last_end = search_pos = 0
        while search_pos <= len(text):
            match = self.pattern.search(text, search_pos)
            if match is None:
                break
            start, end = match.span()
            out.append(text[last_end:start])
            # Go skips an empty match right after the previous match (Python's re.sub would not).
            if end > last_end or start == 0:
                out.append(expand_template(template, match, self.names))
            last_end = end
            width = 1 if search_pos < len(text) else 0
            if search_pos + width > end:
                search_pos += width
            elif search_pos + 1 > end:
                search_pos += 1
            else:
                search_pos = end
        out.append(text[last_end:])
        return "".join(out)


@lru_cache(maxsize=512)
def compile_re2(pattern: str, anchored: bool = True) -> CompiledRE2:
    """Compile Go RE2 syntax to a Python regex; `anchored` wraps it as Prometheus does: `^(?s:` pattern `)$`."""
    # Translating the wrapped text (not wrapping the translation) keeps Prometheus' quirks: a `)` in the
    # user's pattern closes the wrapper exactly as it does in Go.
    translator = _Translator("^(?s:" + pattern + ")$" if anchored else pattern)
    body = translator.translate()
    try:
        compiled = re.compile(body)
    except re.error as exc:  # a construct the translation missed; report it as the user's pattern
        raise PatternError(f"cannot translate regexp `{pattern}`: {exc}") from None
    names = {name: tuple(groups) for name, groups in translator.names.items()}
    return CompiledRE2(pattern, compiled, names)


def _template_name(template: str, pos: int) -> tuple[str, int] | None:
    """The group name of a `$name` or `${name}` reference after the `$` at pos-1, as Go's Regexp.Expand reads it."""
    brace = pos < len(template) and template[pos] == "{"
    i = pos + 1 if brace else pos
    start = i
    while i < len(template) and (template[i].isalpha() or template[i].isdecimal() or template[i] == "_"):
        i += 1
    if i == start:
        return None
    name = template[start:i]
    if brace:
        if i >= len(template) or template[i] != "}":
            return None
        i += 1
    return name, i


def expand_template(template: str, match: re.Match[str], names: Mapping[str, tuple[int, ...]]) -> str:
    """Expand `$1`, `${1}`, `$name`, `${name}` and `$$` as Go's Regexp.Expand does; unknown groups give ""."""
    if "$" not in template:
        return template
    out: list[str] = []
    pos = 0
    while True:
        dollar = template.find("$", pos)
        if dollar < 0:
            out.append(template[pos:])
            break
        out.append(template[pos:dollar])
        pos = dollar + 1
        if pos < len(template) and template[pos] == "$":
            out.append("$")
            pos += 1
            continue
        ref = _template_name(template, pos)
        if ref is None:
            out.append("$")  # malformed reference: Go keeps the `$` as text
            continue
        name, pos = ref
        out.append(_group_text(name, match, names))
    return "".join(out)


def _group_text(name: str, match: re.Match[str], names: Mapping[str, tuple[int, ...]]) -> str:
    number = -1
    if name.isascii() and name.isdigit() and len(name) <= 8 and not (name[0] == "0" and len(name) > 1):
        number = int(name)
    if number >= 0:
        if number <= (match.re.groups or 0):
            return match.group(number) or ""
        return ""
    for group in names.get(name, ()):
        value = match.group(group)
        if value is not None:
            return value
    return ""
