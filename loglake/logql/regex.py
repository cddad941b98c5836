"""Regular expressions as LogQL has them: Go's RE2 syntax, its errors, Loki's literal shortcuts.

`parse_regex` reads a pattern the way Go's regexp/syntax does (same accepted syntax, same error
messages, same tree after its literal merging and alternation factoring), so Loki's shortcuts that
depend on the tree's shape can be reproduced; `to_rust` writes the tree back in the Rust syntax
polars runs, with Go's semantics spelled out (ASCII `\\d`, `\\w`, `\\s`, `\\b`; `$` as end of text).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

MAX_RUNE = 0x10FFFF

# Flags, as Go numbers them.
FOLD_CASE = 1
LITERAL = 2
CLASS_NL = 4
DOT_NL = 8
ONE_LINE = 16
NON_GREEDY = 32
PERL_X = 64
UNICODE_GROUPS = 128
WAS_DOLLAR = 256
PERL = CLASS_NL | ONE_LINE | PERL_X | UNICODE_GROUPS


class Op(IntEnum):
    """Node kinds of a parsed regular expression (Go's order, which factoring relies on)."""

    NO_MATCH = 1
    EMPTY_MATCH = 2
    LITERAL = 3
    CHAR_CLASS = 4
    ANY_CHAR_NOT_NL = 5
    ANY_CHAR = 6
    BEGIN_LINE = 7
    END_LINE = 8
    BEGIN_TEXT = 9
    END_TEXT = 10
    WORD_BOUNDARY = 11
    NO_WORD_BOUNDARY = 12
    CAPTURE = 13
    STAR = 14
    PLUS = 15
    QUEST = 16
    REPEAT = 17
    CONCAT = 18
    ALTERNATE = 19
    LEFT_PAREN = 128
    VERTICAL_BAR = 129


class RegexError(ValueError):
    """A pattern Go's regexp package rejects; `str()` is Go's message."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")
        self.code = code
        self.expr = expr


ERR_INVALID_CHAR_CLASS = "invalid character class"
ERR_INVALID_CHAR_RANGE = "invalid character class range"
ERR_INVALID_ESCAPE = "invalid escape sequence"
ERR_INVALID_NAMED_CAPTURE = "invalid named capture"
ERR_INVALID_PERL_OP = "invalid or unsupported Perl syntax"
ERR_INVALID_REPEAT_OP = "invalid nested repetition operator"
ERR_INVALID_REPEAT_SIZE = "invalid repeat count"
ERR_MISSING_BRACKET = "missing closing ]"
ERR_MISSING_PAREN = "missing closing )"
ERR_MISSING_REPEAT_ARGUMENT = "missing argument to repetition operator"
ERR_TRAILING_BACKSLASH = "trailing backslash at end of expression"
ERR_UNEXPECTED_PAREN = "unexpected )"
ERR_NESTING_DEPTH = "expression nests too deeply"

_MAX_REPEAT = 1000
_MAX_HEIGHT = 1000


@dataclass(eq=False)
class Node:
    """One node of a parsed regular expression."""

    op: Op
    flags: int = 0
    runes: list[int] = field(default_factory=list)
    """Code points of a LITERAL; flat [lo, hi, lo, hi, ...] ranges of a CHAR_CLASS."""
    subs: list[Node] = field(default_factory=list)
    min: int = 0
    max: int = 0
    cap: int = 0
    name: str = ""
    unicode_classes: list[str] = field(default_factory=list)
    """Unicode classes of a CHAR_CLASS kept by name (`\\p{Greek}`), ORed with `runes`."""
    negated_unicode: bool = False
    """Whether a CHAR_CLASS with unicode classes is the complement of its ranges and classes."""

    def equal(self, other: Node | None) -> bool:
        """Say whether two trees are the same expression (Go's Regexp.Equal)."""
        if other is None or self.op != other.op:
            return False
        if self.op == Op.END_TEXT:
            return self.flags & WAS_DOLLAR == other.flags & WAS_DOLLAR
        if self.op in (Op.LITERAL, Op.CHAR_CLASS):
            if self.op == Op.LITERAL and self.flags & FOLD_CASE != other.flags & FOLD_CASE:
                return False
            return (
                self.runes == other.runes
                and self.unicode_classes == other.unicode_classes
                and self.negated_unicode == other.negated_unicode
            )
        if self.op in (Op.ALTERNATE, Op.CONCAT):
            return len(self.subs) == len(other.subs) and all(
                a.equal(b) for a, b in zip(self.subs, other.subs, strict=True)
            )
        if self.op in (Op.STAR, Op.PLUS, Op.QUEST):
            return self.flags & NON_GREEDY == other.flags & NON_GREEDY and self.subs[0].equal(other.subs[0])
        if self.op == Op.REPEAT:
            return (
                self.flags & NON_GREEDY == other.flags & NON_GREEDY
                and self.min == other.min
                and self.max == other.max
                and self.subs[0].equal(other.subs[0])
            )
        if self.op == Op.CAPTURE:
            return self.cap == other.cap and self.name == other.name and self.subs[0].equal(other.subs[0])
        return True

    def literal_text(self) -> str:
        """Return a LITERAL's text."""
        return "".join(chr(r) for r in self.runes)


# -- character classes --------------------------------------------------------------------------


def _clean_class(runes: list[int]) -> list[int]:
    """Sort and merge the ranges of a class."""
    pairs = sorted((runes[i], runes[i + 1]) for i in range(0, len(runes), 2))
    out: list[int] = []
    for lo, hi in pairs:
        if out and lo <= out[-1] + 1:
            if hi > out[-1]:
                out[-1] = hi
            continue
        out.extend((lo, hi))
    return out


def _negate_class(runes: list[int]) -> list[int]:
    out: list[int] = []
    next_lo = 0
    for i in range(0, len(runes), 2):
        lo, hi = runes[i], runes[i + 1]
        if next_lo <= lo - 1:
            out.extend((next_lo, lo - 1))
        next_lo = hi + 1
    if next_lo <= MAX_RUNE:
        out.extend((next_lo, MAX_RUNE))
    return out


_EXTRA_FOLD_RANGES = (
    (0x10400, 0x10450),
    (0x104B0, 0x10500),
    (0x10570, 0x105C0),
    (0x10C80, 0x10D00),
    (0x118A0, 0x11900),
    (0x16E40, 0x16EA0),
    (0x1E900, 0x1E960),
)


@lru_cache(maxsize=1)
def _fold_table() -> dict[int, frozenset[int]]:
    """Map each code point that has case variants to its simple case-folding orbit (as Go's SimpleFold).

    Two characters share an orbit when they fold to the same character (Unicode simple folding).
    """
    groups: dict[str, list[int]] = {}

    def add(cp: int) -> None:
        ch = chr(cp)
        key = ch.casefold()
        if len(key) != 1:
            key = ch.lower()
            if len(key) != 1:
                return
        groups.setdefault(key, []).append(cp)

    for cp in range(0x10000):
        if not 0xD800 <= cp <= 0xDFFF:
            add(cp)
    for lo, hi in _EXTRA_FOLD_RANGES:
        for cp in range(lo, hi):
            add(cp)
    table: dict[int, frozenset[int]] = {}
    for members in groups.values():
        if len(members) > 1:
            orbit = frozenset(members)
            for cp in members:
                table[cp] = orbit
    return table


def _fold_orbit(cp: int) -> frozenset[int]:
    return _fold_table().get(cp, frozenset((cp,)))


def _min_fold(cp: int) -> int:
    return min(_fold_orbit(cp))


def _append_range(runes: list[int], lo: int, hi: int) -> list[int]:
    runes.extend((lo, hi))
    return runes


def _append_folded_range(runes: list[int], lo: int, hi: int) -> list[int]:
    runes.extend((lo, hi))
    if hi - lo > 20000:
        return runes  # such a range already holds nearly every case variant
    for cp in range(lo, hi + 1):
        for other in _fold_orbit(cp):
            if other < lo or other > hi:
                runes.extend((other, other))
    return runes


def _append_literal(runes: list[int], cp: int, flags: int) -> list[int]:
    if flags & FOLD_CASE:
        return _append_folded_range(runes, cp, cp)
    return _append_range(runes, cp, cp)


def _match_rune(node: Node, cp: int) -> bool:
    if node.op == Op.LITERAL:
        if node.flags & FOLD_CASE:
            return cp in _fold_orbit(node.runes[0])
        return node.runes[0] == cp
    if node.op == Op.CHAR_CLASS:
        return any(node.runes[i] <= cp <= node.runes[i + 1] for i in range(0, len(node.runes), 2))
    if node.op == Op.ANY_CHAR_NOT_NL:
        return cp != 0x0A
    return node.op == Op.ANY_CHAR


def _is_char_class(node: Node) -> bool:
    return (
        (node.op == Op.LITERAL and len(node.runes) == 1)
        or (node.op == Op.CHAR_CLASS and not node.unicode_classes)
        or node.op in (Op.ANY_CHAR_NOT_NL, Op.ANY_CHAR)
    )


def _merge_char_class(dst: Node, src: Node) -> None:
    if dst.op == Op.ANY_CHAR:
        return
    if dst.op == Op.ANY_CHAR_NOT_NL:
        if _match_rune(src, 0x0A):
            dst.op = Op.ANY_CHAR
        return
    if dst.op == Op.CHAR_CLASS:
        if src.op == Op.LITERAL:
            _append_literal(dst.runes, src.runes[0], src.flags)
        else:
            dst.runes.extend(src.runes)
        return
    if dst.op == Op.LITERAL:
        if src.runes[0] == dst.runes[0] and src.flags == dst.flags:
            return
        first, first_flags = dst.runes[0], dst.flags
        dst.op = Op.CHAR_CLASS
        dst.runes = []
        _append_literal(dst.runes, first, first_flags)
        _append_literal(dst.runes, src.runes[0], src.flags)


def _clean_alt(node: Node) -> None:
    if node.op != Op.CHAR_CLASS or node.unicode_classes:
        return
    node.runes = _clean_class(node.runes)
    if node.runes == [0, MAX_RUNE]:
        node.op, node.runes = Op.ANY_CHAR, []
    elif node.runes == [0, 0x09, 0x0B, MAX_RUNE]:
        node.op, node.runes = Op.ANY_CHAR_NOT_NL, []


_PERL_CLASSES = {
    "d": [0x30, 0x39],
    "s": [0x09, 0x0A, 0x0C, 0x0D, 0x20, 0x20],
    "w": [0x30, 0x39, 0x41, 0x5A, 0x5F, 0x5F, 0x61, 0x7A],
}

_POSIX_CLASSES = {
    "alnum": [0x30, 0x39, 0x41, 0x5A, 0x61, 0x7A],
    "alpha": [0x41, 0x5A, 0x61, 0x7A],
    "ascii": [0x00, 0x7F],
    "blank": [0x09, 0x09, 0x20, 0x20],
    "cntrl": [0x00, 0x1F, 0x7F, 0x7F],
    "digit": [0x30, 0x39],
    "graph": [0x21, 0x7E],
    "lower": [0x61, 0x7A],
    "print": [0x20, 0x7E],
    "punct": [0x21, 0x2F, 0x3A, 0x40, 0x5B, 0x60, 0x7B, 0x7E],
    "space": [0x09, 0x0D, 0x20, 0x20],
    "upper": [0x41, 0x5A],
    "word": [0x30, 0x39, 0x41, 0x5A, 0x5F, 0x5F, 0x61, 0x7A],
    "xdigit": [0x30, 0x39, 0x41, 0x46, 0x61, 0x66],
}

_CATEGORIES = frozenset(
    "C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs".split()
)


@lru_cache(maxsize=256)
def _is_unicode_class_name(name: str) -> bool:
    if name == "Any" or name in _CATEGORIES:
        return True
    if not name or not all(c.isalnum() or c == "_" for c in name) or not name[0].isupper():
        return False
    # Scripts: accept the names RE2 knows (Go and RE2 share the Unicode script list).
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        pc.match_substring_regex(pa.array([""], pa.string()), "\\p{" + name + "}")
    except Exception:
        return False
    return True


# -- the parser ---------------------------------------------------------------------------------


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


class _Parser:
    def __init__(self, whole: str, flags: int) -> None:
        self.whole = whole
        self.flags = flags
        self.stack: list[Node] = []
        self.num_cap = 0

    def new(self, op: Op) -> Node:
        return Node(op=op, flags=self.flags)

    # stack helpers

    def maybe_concat(self, r: int, flags: int) -> bool:
        if len(self.stack) < 2:
            return False
        re1, re2 = self.stack[-1], self.stack[-2]
        if re1.op != Op.LITERAL or re2.op != Op.LITERAL or re1.flags & FOLD_CASE != re2.flags & FOLD_CASE:
            return False
        re2.runes.extend(re1.runes)
        if r >= 0:
            re1.runes = [r]
            re1.flags = flags
            return True
        self.stack.pop()
        return False

    def push(self, node: Node) -> Node | None:
        runes = node.runes
        if node.op == Op.CHAR_CLASS and not node.unicode_classes and len(runes) == 2 and runes[0] == runes[1]:
            if self.maybe_concat(runes[0], self.flags & ~FOLD_CASE):
                return None
            node.op = Op.LITERAL
            node.runes = runes[:1]
            node.flags = self.flags & ~FOLD_CASE
        elif (
            node.op == Op.CHAR_CLASS
            and not node.unicode_classes
            and (
                (
                    len(runes) == 4
                    and runes[0] == runes[1]
                    and runes[2] == runes[3]
                    and _fold_orbit(runes[0]) == frozenset((runes[0], runes[2]))
                )
                or (
                    len(runes) == 2
                    and runes[0] + 1 == runes[1]
                    and _fold_orbit(runes[0]) == frozenset((runes[0], runes[1]))
                )
            )
        ):
            if self.maybe_concat(runes[0], self.flags | FOLD_CASE):
                return None
            node.op = Op.LITERAL
            node.runes = runes[:1]
            node.flags = self.flags | FOLD_CASE
        else:
            self.maybe_concat(-1, 0)
        self.stack.append(node)
        return node

    def op(self, op: Op) -> Node:
        node = self.new(op)
        self.push(node)
        return node

    def literal(self, r: int) -> None:
        node = self.new(Op.LITERAL)
        if self.flags & FOLD_CASE:
            r = _min_fold(r)
        node.runes = [r]
        self.push(node)

    def concat(self) -> None:
        self.maybe_concat(-1, 0)
        i = len(self.stack)
        while i > 0 and self.stack[i - 1].op < Op.LEFT_PAREN:
            i -= 1
        subs = self.stack[i:]
        del self.stack[i:]
        if not subs:
            self.push(self.new(Op.EMPTY_MATCH))
            return
        self.push(self.collapse(subs, Op.CONCAT))

    def alternate(self) -> None:
        i = len(self.stack)
        while i > 0 and self.stack[i - 1].op < Op.LEFT_PAREN:
            i -= 1
        subs = self.stack[i:]
        del self.stack[i:]
        if subs:
            _clean_alt(subs[-1])
        if not subs:
            self.push(self.new(Op.NO_MATCH))
            return
        self.push(self.collapse(subs, Op.ALTERNATE))

    def collapse(self, subs: list[Node], op: Op) -> Node:
        if len(subs) == 1:
            return subs[0]
        node = self.new(op)
        for sub in subs:
            if sub.op == op:
                node.subs.extend(sub.subs)
            else:
                node.subs.append(sub)
        if op == Op.ALTERNATE:
            node.subs = self.factor(node.subs)
            if len(node.subs) == 1:
                return node.subs[0]
        return node

    def factor(self, sub: list[Node]) -> list[Node]:
        if len(sub) < 2:
            return sub
        sub = self._factor_prefix_strings(sub)
        sub = self._factor_prefix_regexps(sub)
        sub = self._merge_char_classes(sub)
        out: list[Node] = []
        for i, node in enumerate(sub):
            if i + 1 < len(sub) and node.op == Op.EMPTY_MATCH and sub[i + 1].op == Op.EMPTY_MATCH:
                continue
            out.append(node)
        return out

    def _factor_prefix_strings(self, sub: list[Node]) -> list[Node]:
        out: list[Node] = []
        start = 0
        prefix: list[int] = []
        prefix_flags = 0
        for i in range(len(sub) + 1):
            istr: list[int] = []
            iflags = 0
            if i < len(sub):
                istr, iflags = _leading_string(sub[i])
                if iflags == prefix_flags:
                    same = 0
                    while same < len(prefix) and same < len(istr) and prefix[same] == istr[same]:
                        same += 1
                    if same > 0:
                        prefix = prefix[:same]
                        continue
            if i == start + 1:
                out.append(sub[start])
            elif i > start + 1:
                head = self.new(Op.LITERAL)
                head.flags = prefix_flags
                head.runes = list(prefix)
                for j in range(start, i):
                    sub[j] = self._remove_leading_string(sub[j], len(prefix))
                suffix = self.collapse(sub[start:i], Op.ALTERNATE)
                out.append(Node(op=Op.CONCAT, flags=self.flags, subs=[head, suffix]))
            start = i
            prefix = istr
            prefix_flags = iflags
        return out

    def _remove_leading_string(self, node: Node, n: int) -> Node:
        if node.op == Op.CONCAT and node.subs:
            first = node.subs[0]
            first = self._remove_leading_string(first, n)
            node.subs[0] = first
            if first.op == Op.EMPTY_MATCH:
                node.subs.pop(0)
                if not node.subs:
                    return self.new(Op.EMPTY_MATCH)
                if len(node.subs) == 1:
                    return node.subs[0]
            return node
        if node.op == Op.LITERAL:
            node.runes = node.runes[n:]
            if not node.runes:
                # Go turns the literal itself into the empty match, keeping its flags.
                return Node(op=Op.EMPTY_MATCH, flags=node.flags)
        return node

    def _factor_prefix_regexps(self, sub: list[Node]) -> list[Node]:
        out: list[Node] = []
        start = 0
        first: Node | None = None
        for i in range(len(sub) + 1):
            ifirst: Node | None = None
            if i < len(sub):
                ifirst = _leading_regexp(sub[i])
                if (
                    first is not None
                    and first.equal(ifirst)
                    and (
                        _is_char_class(first)
                        or (first.op == Op.REPEAT and first.min == first.max and _is_char_class(first.subs[0]))
                    )
                ):
                    continue
            if i == start + 1:
                out.append(sub[start])
            elif i > start + 1 and first is not None:
                head = first
                for j in range(start, i):
                    sub[j] = self._remove_leading_regexp(sub[j])
                suffix = self.collapse(sub[start:i], Op.ALTERNATE)
                out.append(Node(op=Op.CONCAT, flags=self.flags, subs=[head, suffix]))
            start = i
            first = ifirst
        return out

    def _remove_leading_regexp(self, node: Node) -> Node:
        if node.op == Op.CONCAT and node.subs:
            node.subs = node.subs[1:]
            if not node.subs:
                return self.new(Op.EMPTY_MATCH)
            if len(node.subs) == 1:
                return node.subs[0]
            return node
        return self.new(Op.EMPTY_MATCH)

    def _merge_char_classes(self, sub: list[Node]) -> list[Node]:
        out: list[Node] = []
        start = 0
        for i in range(len(sub) + 1):
            if i < len(sub) and _is_char_class(sub[i]):
                continue
            if i == start + 1:
                out.append(sub[start])
            elif i > start + 1:
                biggest = start
                for j in range(start + 1, i):
                    a, b = sub[biggest], sub[j]
                    if a.op < b.op or (a.op == b.op and len(a.runes) < len(b.runes)):
                        biggest = j
                sub[start], sub[biggest] = sub[biggest], sub[start]
                for j in range(start + 1, i):
                    _merge_char_class(sub[start], sub[j])
                _clean_alt(sub[start])
                out.append(sub[start])
            if i < len(sub):
                out.append(sub[i])
            start = i + 1
        return out

    def swap_vertical_bar(self) -> bool:
        stack = self.stack
        n = len(stack)
        if (
            n >= 3
            and stack[n - 2].op == Op.VERTICAL_BAR
            and _is_char_class(stack[n - 1])
            and _is_char_class(stack[n - 3])
        ):
            re1, re3 = stack[n - 1], stack[n - 3]
            if re1.op > re3.op:
                re1, re3 = re3, re1
                stack[n - 3] = re3
            _merge_char_class(re3, re1)
            stack.pop()
            return True
        if n >= 2:
            re1, re2 = stack[n - 1], stack[n - 2]
            if re2.op == Op.VERTICAL_BAR:
                if n >= 3:
                    _clean_alt(stack[n - 3])
                stack[n - 2], stack[n - 1] = re1, re2
                return True
        return False

    def parse_vertical_bar(self) -> None:
        self.concat()
        if not self.swap_vertical_bar():
            self.op(Op.VERTICAL_BAR)

    def parse_right_paren(self) -> None:
        self.concat()
        if self.swap_vertical_bar():
            self.stack.pop()
        self.alternate()
        if len(self.stack) < 2:
            raise RegexError(ERR_UNEXPECTED_PAREN, self.whole)
        re1 = self.stack.pop()
        re2 = self.stack.pop()
        if re2.op != Op.LEFT_PAREN:
            raise RegexError(ERR_UNEXPECTED_PAREN, self.whole)
        self.flags = re2.flags
        if re2.cap == 0:
            self.push(re1)
        else:
            re2.op = Op.CAPTURE
            re2.subs = [re1]
            self.push(re2)

    def repeat(self, op: Op, lo: int, hi: int, before: str, after: str, last_repeat: str) -> str:
        flags = self.flags
        if self.flags & PERL_X:
            if after.startswith("?"):
                after = after[1:]
                flags ^= NON_GREEDY
            if last_repeat:
                raise RegexError(ERR_INVALID_REPEAT_OP, last_repeat[: len(last_repeat) - len(after)])
        if not self.stack or self.stack[-1].op >= Op.LEFT_PAREN:
            raise RegexError(ERR_MISSING_REPEAT_ARGUMENT, before[: len(before) - len(after)])
        sub = self.stack[-1]
        node = Node(op=op, flags=flags, min=lo, max=hi, subs=[sub])
        self.stack[-1] = node
        if op == Op.REPEAT and (lo >= 2 or hi >= 2) and not _repeat_is_valid(node, _MAX_REPEAT):
            raise RegexError(ERR_INVALID_REPEAT_SIZE, before[: len(before) - len(after)])
        return after

    def parse_perl_flags(self, s: str) -> str:
        t = s
        if (len(t) > 4 and t[2] == "P" and t[3] == "<") or (len(t) > 3 and t[2] == "<"):
            begin = 4 if t[2] == "P" else 3
            end = t.find(">")
            if end < 0:
                raise RegexError(ERR_INVALID_NAMED_CAPTURE, s)
            capture = t[: end + 1]
            name = t[begin:end]
            if not name or not all(_is_word_char(c) for c in name):
                raise RegexError(ERR_INVALID_NAMED_CAPTURE, capture)
            self.num_cap += 1
            node = self.op(Op.LEFT_PAREN)
            node.cap = self.num_cap
            node.name = name
            return t[end + 1 :]
        t = t[2:]
        flags = self.flags
        sign = 1
        saw_flag = False
        while t:
            c = t[0]
            t = t[1:]
            if c == "i":
                flags |= FOLD_CASE
                saw_flag = True
            elif c == "m":
                flags &= ~ONE_LINE
                saw_flag = True
            elif c == "s":
                flags |= DOT_NL
                saw_flag = True
            elif c == "U":
                flags |= NON_GREEDY
                saw_flag = True
            elif c == "-":
                if sign < 0:
                    break
                sign = -1
                flags = ~flags
                saw_flag = False
            elif c in ":)":
                if sign < 0:
                    if not saw_flag:
                        break
                    flags = ~flags
                if c == ":":
                    self.op(Op.LEFT_PAREN)
                self.flags = flags
                return t
            else:
                break
        raise RegexError(ERR_INVALID_PERL_OP, s[: len(s) - len(t)])

    def parse_class(self, s: str) -> str:
        t = s[1:]
        node = self.new(Op.CHAR_CLASS)
        runes: list[int] = []
        sign = 1
        if t.startswith("^"):
            sign = -1
            t = t[1:]
            if not self.flags & CLASS_NL:
                runes.extend((0x0A, 0x0A))
        first = True
        while not t or t[0] != "]" or first:
            if t and t[0] == "-" and not self.flags & PERL_X and not first and (len(t) == 1 or t[1] != "]"):
                raise RegexError(ERR_INVALID_CHAR_RANGE, t[:2])
            first = False
            if len(t) > 2 and t[0] == "[" and t[1] == ":":
                rest = self._parse_named_class(t, runes)
                if rest is not None:
                    t = rest
                    continue
            rest = self._parse_unicode_class(t, node, runes)
            if rest is not None:
                t = rest
                continue
            rest = self._parse_perl_class_escape(t, runes)
            if rest is not None:
                t = rest
                continue
            rng = t
            lo, t = self._parse_class_char(t, s)
            hi = lo
            if len(t) >= 2 and t[0] == "-" and t[1] != "]":
                t = t[1:]
                hi, t = self._parse_class_char(t, s)
                if hi < lo:
                    raise RegexError(ERR_INVALID_CHAR_RANGE, rng[: len(rng) - len(t)])
            if self.flags & FOLD_CASE:
                _append_folded_range(runes, lo, hi)
            else:
                _append_range(runes, lo, hi)
        t = t[1:]
        runes = _clean_class(runes)
        if sign < 0:
            if node.unicode_classes:
                node.negated_unicode = True
            else:
                runes = _negate_class(runes)
        node.runes = runes
        self.push(node)
        return t

    def _parse_class_char(self, s: str, whole_class: str) -> tuple[int, str]:
        if not s:
            raise RegexError(ERR_MISSING_BRACKET, whole_class)
        if s[0] == "\\":
            return _parse_escape(s)
        return ord(s[0]), s[1:]

    def _parse_named_class(self, s: str, runes: list[int]) -> str | None:
        end = s.find(":]", 2)
        if end < 0:
            return None
        name, rest = s[: end + 2], s[end + 2 :]
        inner = name[2:-2]
        negate = inner.startswith("^")
        table = _POSIX_CLASSES.get(inner[1:] if negate else inner)
        if table is None:
            raise RegexError(ERR_INVALID_CHAR_RANGE, name)
        self._append_table(runes, table, negate)
        return rest

    def _append_table(self, runes: list[int], table: list[int], negate: bool) -> None:
        ranges = list(table)
        if self.flags & FOLD_CASE:
            folded: list[int] = []
            for i in range(0, len(ranges), 2):
                _append_folded_range(folded, ranges[i], ranges[i + 1])
            ranges = _clean_class(folded)
        if negate:
            ranges = _negate_class(_clean_class(ranges))
        runes.extend(ranges)

    def _parse_perl_class_escape(self, s: str, runes: list[int]) -> str | None:
        if not self.flags & PERL_X or len(s) < 2 or s[0] != "\\":
            return None
        c = s[1]
        if c not in "dDsSwW":
            return None
        self._append_table(runes, _PERL_CLASSES[c.lower()], c.isupper())
        return s[2:]

    def _parse_unicode_class(self, s: str, node: Node, runes: list[int]) -> str | None:
        if not self.flags & UNICODE_GROUPS or len(s) < 2 or s[0] != "\\" or s[1] not in "pP":
            return None
        sign = -1 if s[1] == "P" else 1
        t = s[2:]
        if not t:
            raise RegexError(ERR_INVALID_CHAR_RANGE, s[:2])
        if t[0] != "{":
            seq = s[:3]
            name = t[0]
            rest = t[1:]
        else:
            end = s.find("}")
            if end < 0:
                raise RegexError(ERR_INVALID_CHAR_RANGE, s)
            seq, rest = s[: end + 1], s[end + 1 :]
            name = s[3:end]
        if name.startswith("^"):
            sign = -sign
            name = name[1:]
        if not _is_unicode_class_name(name):
            raise RegexError(ERR_INVALID_CHAR_RANGE, seq)
        if name == "Any":
            if sign > 0:
                runes.extend((0, MAX_RUNE))
            return rest
        fold = "(?i)" if self.flags & FOLD_CASE else ""
        node.unicode_classes.append(fold + ("\\p{" if sign > 0 else "\\P{") + name + "}")
        return rest

    def parse_unicode_class_atom(self, s: str) -> str | None:
        node = self.new(Op.CHAR_CLASS)
        runes: list[int] = []
        rest = self._parse_unicode_class(s, node, runes)
        if rest is None:
            return None
        node.runes = _clean_class(runes)
        self.push(node)
        return rest

    def parse_perl_class_atom(self, s: str) -> str | None:
        runes: list[int] = []
        rest = self._parse_perl_class_escape(s, runes)
        if rest is None:
            return None
        node = self.new(Op.CHAR_CLASS)
        node.runes = _clean_class(runes)
        self.push(node)
        return rest


def _repeat_is_valid(node: Node, n: int) -> bool:
    if node.op == Op.REPEAT:
        m = node.max
        if m == 0:
            return True
        if m < 0:
            m = node.min
        if m > n:
            return False
        if m > 0:
            n //= m
    return all(_repeat_is_valid(sub, n) for sub in node.subs)


def _leading_string(node: Node) -> tuple[list[int], int]:
    if node.op == Op.CONCAT and node.subs:
        node = node.subs[0]
    if node.op == Op.LITERAL:
        return node.runes, node.flags & FOLD_CASE
    return [], 0


def _leading_regexp(node: Node) -> Node | None:
    if node.op == Op.EMPTY_MATCH:
        return None
    if node.op == Op.CONCAT and node.subs:
        sub = node.subs[0]
        if sub.op == Op.EMPTY_MATCH:
            return None
        return sub
    return node


def _parse_escape(s: str) -> tuple[int, str]:
    """Read one escaped character from `s` (which starts with a backslash); return it and the rest."""
    t = s[1:]
    if not t:
        raise RegexError(ERR_TRAILING_BACKSLASH, "")
    c, t = t[0], t[1:]
    if c.isascii() and not c.isalnum():
        return ord(c), t
    if c in "1234567":
        if not t or not ("0" <= t[0] <= "7"):
            raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
    if c in "01234567":
        value = ord(c) - 0x30
        for _ in range(2):
            if not t or not ("0" <= t[0] <= "7"):
                break
            value = value * 8 + ord(t[0]) - 0x30
            t = t[1:]
        return value, t
    if c == "x":
        if not t:
            raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
        c2, t = t[0], t[1:]
        if c2 == "{":
            digits = 0
            value = 0
            while True:
                if not t:
                    raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
                c3, t = t[0], t[1:]
                if c3 == "}":
                    break
                if c3 not in "0123456789abcdefABCDEF":
                    raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
                value = value * 16 + int(c3, 16)
                if value > MAX_RUNE:
                    raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
                digits += 1
            if digits == 0:
                raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
            return value, t
        if not t:
            raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
        c3, t = t[0], t[1:]
        if c2 not in "0123456789abcdefABCDEF" or c3 not in "0123456789abcdefABCDEF":
            raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])
        return int(c2 + c3, 16), t
    simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
    if c in simple:
        return simple[c], t
    raise RegexError(ERR_INVALID_ESCAPE, s[: len(s) - len(t)])


def _parse_repeat(s: str) -> tuple[int, int, str] | None:
    """Parse `{n}`, `{n,}` or `{n,m}` at the start of `s`; None when it is not a repeat (a literal `{`)."""
    if not s or s[0] != "{":
        return None
    t = s[1:]
    parsed = _parse_int(t)
    if parsed is None:
        return None
    lo, t = parsed
    if not t:
        return None
    if t[0] == ",":
        t = t[1:]
        if not t:
            return None
        if t[0] == "}":
            hi = -1
        else:
            parsed = _parse_int(t)
            if parsed is None:
                return None
            hi, t = parsed
            if hi < 0:
                lo = -1
    else:
        hi = lo
    if not t or t[0] != "}":
        return None
    return lo, hi, t[1:]


def _parse_int(s: str) -> tuple[int, str] | None:
    if not s or not ("0" <= s[0] <= "9"):
        return None
    if len(s) >= 2 and s[0] == "0" and "0" <= s[1] <= "9":
        return None
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        i += 1
    digits = s[:i]
    value = -1 if len(digits) > 8 else int(digits)
    return value, s[i:]


def parse_regex(pattern: str, flags: int = PERL) -> Node:
    """Parse `pattern` as Go's regexp/syntax.Parse does; raise RegexError with Go's message."""
    p = _Parser(pattern, flags)
    t = pattern
    last_repeat = ""
    depth_guard = sys.getrecursionlimit()
    while t:
        repeat = ""
        c = t[0]
        if c == "(":
            if p.flags & PERL_X and len(t) >= 2 and t[1] == "?":
                t = p.parse_perl_flags(t)
            else:
                p.num_cap += 1
                p.op(Op.LEFT_PAREN).cap = p.num_cap
                t = t[1:]
            if sum(1 for n in p.stack if n.op == Op.LEFT_PAREN) > min(_MAX_HEIGHT, depth_guard // 4):
                raise RegexError(ERR_NESTING_DEPTH, pattern)
        elif c == "|":
            p.parse_vertical_bar()
            t = t[1:]
        elif c == ")":
            p.parse_right_paren()
            t = t[1:]
        elif c == "^":
            p.op(Op.BEGIN_TEXT if p.flags & ONE_LINE else Op.BEGIN_LINE)
            t = t[1:]
        elif c == "$":
            if p.flags & ONE_LINE:
                p.op(Op.END_TEXT).flags |= WAS_DOLLAR
            else:
                p.op(Op.END_LINE)
            t = t[1:]
        elif c == ".":
            p.op(Op.ANY_CHAR if p.flags & DOT_NL else Op.ANY_CHAR_NOT_NL)
            t = t[1:]
        elif c == "[":
            t = p.parse_class(t)
        elif c in "*+?":
            before = t
            op = {"*": Op.STAR, "+": Op.PLUS, "?": Op.QUEST}[c]
            t = p.repeat(op, 0, 0, before, t[1:], last_repeat)
            repeat = before
        elif c == "{":
            parsed = _parse_repeat(t)
            if parsed is None:
                p.literal(ord("{"))
                t = t[1:]
            else:
                lo, hi, after = parsed
                before = t
                if lo < 0 or lo > _MAX_REPEAT or hi > _MAX_REPEAT or (hi >= 0 and lo > hi):
                    raise RegexError(ERR_INVALID_REPEAT_SIZE, before[: len(before) - len(after)])
                t = p.repeat(Op.REPEAT, lo, hi, before, after, last_repeat)
                repeat = before
        elif c == "\\":
            if p.flags & PERL_X and len(t) >= 2:
                c1 = t[1]
                if c1 == "A":
                    p.op(Op.BEGIN_TEXT)
                    t = t[2:]
                    last_repeat = repeat
                    continue
                if c1 == "b":
                    p.op(Op.WORD_BOUNDARY)
                    t = t[2:]
                    last_repeat = repeat
                    continue
                if c1 == "B":
                    p.op(Op.NO_WORD_BOUNDARY)
                    t = t[2:]
                    last_repeat = repeat
                    continue
                if c1 == "C":
                    raise RegexError(ERR_INVALID_ESCAPE, t[:2])
                if c1 == "Q":
                    lit = t[2:]
                    end = lit.find("\\E")
                    if end >= 0:
                        lit, t = lit[:end], lit[end + 2 :]
                    else:
                        t = ""
                    for ch in lit:
                        p.literal(ord(ch))
                    last_repeat = repeat
                    continue
                if c1 == "z":
                    p.op(Op.END_TEXT)
                    t = t[2:]
                    last_repeat = repeat
                    continue
            rest = p.parse_unicode_class_atom(t)
            if rest is not None:
                t = rest
            else:
                rest = p.parse_perl_class_atom(t)
                if rest is not None:
                    t = rest
                else:
                    r, t = _parse_escape(t)
                    p.literal(r)
        else:
            p.literal(ord(c))
            t = t[1:]
        last_repeat = repeat

    p.concat()
    if p.swap_vertical_bar():
        p.stack.pop()
    p.alternate()
    if len(p.stack) != 1:
        raise RegexError(ERR_MISSING_PAREN, pattern)
    return p.stack[0]


def capture_names(node: Node) -> list[str]:
    """Return the names of the capture groups of a tree, in order ("" for an unnamed group)."""
    out: list[tuple[int, str]] = []

    def walk(n: Node) -> None:
        if n.op == Op.CAPTURE:
            out.append((n.cap, n.name))
        for sub in n.subs:
            walk(sub)

    walk(node)
    return [name for _, name in sorted(out)]


# -- Go's Simplify ------------------------------------------------------------------------------


def simplify(node: Node) -> Node:
    """Rewrite counted repetitions into simpler operators (Go's Regexp.Simplify)."""
    if node.op in (Op.CAPTURE, Op.CONCAT, Op.ALTERNATE):
        subs = [simplify(s) for s in node.subs]
        if all(a is b for a, b in zip(subs, node.subs, strict=True)):
            return node
        return Node(op=node.op, flags=node.flags, subs=subs, cap=node.cap, name=node.name)
    if node.op in (Op.STAR, Op.PLUS, Op.QUEST):
        sub = simplify(node.subs[0])
        return _simplify1(node.op, node.flags, sub, node)
    if node.op == Op.REPEAT:
        if node.min == 0 and node.max == 0:
            return Node(op=Op.EMPTY_MATCH)
        sub = simplify(node.subs[0])
        if node.max == -1:
            if node.min == 0:
                return _simplify1(Op.STAR, node.flags, sub, None)
            if node.min == 1:
                return _simplify1(Op.PLUS, node.flags, sub, None)
            parts = [sub] * (node.min - 1) + [_simplify1(Op.PLUS, node.flags, sub, None)]
            return Node(op=Op.CONCAT, subs=parts)
        if node.min == 1 and node.max == 1:
            return sub
        prefix: list[Node] = [sub] * node.min
        if node.max > node.min:
            suffix = _simplify1(Op.QUEST, node.flags, sub, None)
            for _ in range(node.min + 1, node.max):
                nested = Node(op=Op.CONCAT, subs=[sub, suffix])
                suffix = _simplify1(Op.QUEST, node.flags, nested, None)
            prefix.append(suffix)
        if not prefix:
            return Node(op=Op.NO_MATCH)
        if len(prefix) == 1:
            return prefix[0]
        return Node(op=Op.CONCAT, subs=prefix)
    return node


def _simplify1(op: Op, flags: int, sub: Node, original: Node | None) -> Node:
    if sub.op == Op.EMPTY_MATCH:
        return sub
    if op == sub.op and flags & NON_GREEDY == sub.flags & NON_GREEDY:
        return sub
    if (
        original is not None
        and original.op == op
        and original.flags & NON_GREEDY == flags & NON_GREEDY
        and original.subs
        and sub is original.subs[0]
    ):
        return original
    return Node(op=op, flags=flags, subs=[sub])


# -- Loki's literal shortcuts -------------------------------------------------------------------


@dataclass(frozen=True)
class TextMatch:
    """What a simplified regex filter tests: one of `kind` over `text`, or an `or` of `alternatives`.

    kind is "true" (everything), "exists" (non-empty text), "contains", "equal" or "or".
    """

    kind: str
    text: str = ""
    case_insensitive: bool = False
    alternatives: tuple[TextMatch, ...] = ()


TRUE_MATCH = TextMatch("true")
EXISTS_MATCH = TextMatch("exists")


def _or(left: TextMatch | None, right: TextMatch) -> TextMatch:
    if left is None or left.kind == "true":
        return right
    if right.kind == "true":
        return left
    lefts = left.alternatives if left.kind == "or" else (left,)
    rights = right.alternatives if right.kind == "or" else (right,)
    return TextMatch("or", alternatives=lefts + rights)


def _clear_capture(node: Node) -> Node:
    while node.op == Op.CAPTURE:
        node = node.subs[0]
    return node


def _lower(runes: list[int], fold: bool) -> str:
    text = "".join(chr(r) for r in runes)
    return text.lower() if fold else text


def _simplify_loki(node: Node, is_label: bool) -> TextMatch | None:
    node = _clear_capture(node)
    if node.op == Op.ALTERNATE:
        result: TextMatch | None = None
        for sub in node.subs:
            part = _simplify_loki(_clear_capture(sub), is_label)
            if part is None:
                return None
            result = part if result is None else _or(result, part)
        return result
    if node.op == Op.CONCAT:
        return _simplify_concat(node, None, False)
    if node.op == Op.LITERAL:
        fold = bool(node.flags & FOLD_CASE)
        return TextMatch("equal" if is_label else "contains", _lower(node.runes, fold), fold)
    if node.op == Op.STAR and node.subs[0].op == Op.ANY_CHAR_NOT_NL:
        return TRUE_MATCH
    if node.op == Op.PLUS and node.subs[0].op == Op.ANY_CHAR_NOT_NL:
        return EXISTS_MATCH
    if node.op == Op.EMPTY_MATCH:
        return TRUE_MATCH
    return None


def _contains(runes: list[int], fold: bool) -> TextMatch:
    if not runes:
        return TRUE_MATCH
    return TextMatch("contains", _lower(runes, fold), fold)


def _simplify_concat(node: Node, base: list[int] | None, base_fold: bool) -> TextMatch | None:
    subs = [s for s in (_clear_capture(s) for s in node.subs) if s.op != Op.EMPTY_MATCH]
    if len(subs) > 3:
        return None
    current: TextMatch | None = None
    literals = 0
    for sub in subs:
        if sub.op == Op.LITERAL:
            if literals:
                return None
            literals += 1
            base = (base or []) + sub.runes
            base_fold = bool(sub.flags & FOLD_CASE)
            continue
        if sub.op == Op.ALTERNATE and base is not None:
            current = _simplify_concat_alternate(sub, base, current, base_fold)
            if current is None:
                return None
            continue
        if sub.op == Op.STAR and sub.subs[0].op == Op.ANY_CHAR_NOT_NL:
            continue
        return None
    if current is not None:
        return current
    if base is not None:
        return _contains(base, base_fold)
    return None


def _simplify_concat_alternate(
    node: Node, literal: list[int], current: TextMatch | None, base_fold: bool
) -> TextMatch | None:
    for alt in node.subs:
        alt_fold = bool(alt.flags & FOLD_CASE)
        if not base_fold and alt_fold:
            return None
        if alt.op == Op.EMPTY_MATCH:
            current = _or(current, _contains(literal, base_fold))
        elif alt.op == Op.LITERAL:
            current = _or(current, _contains(literal + alt.runes, base_fold))
        elif alt.op == Op.CONCAT:
            part = _simplify_concat(alt, list(literal), base_fold)
            if part is None:
                return None
            current = _or(current, part)
        elif alt.op == Op.STAR:
            if alt.subs[0].op != Op.ANY_CHAR_NOT_NL:
                return None
            current = _or(current, _contains(literal, base_fold))
        else:
            return None
    return current


def loki_text_match(pattern: str, is_label: bool) -> TextMatch | None:
    """Return the literal test Loki replaces regex `pattern` with, or None when it runs the regex.

    For line filters a literal means "contains"; for label filters a bare literal means "equals",
    but a literal with `.*` around it still means "contains" (Loki does not anchor those).
    """
    tree = simplify(parse_regex(pattern))
    return _simplify_loki(tree, is_label)


# -- writing a tree in Rust's syntax --------------------------------------------------------------

_RUST_META = set("\\.+*?()|[]{}^$#&-~")


def _rust_char(cp: int, in_class: bool = False) -> str:
    ch = chr(cp)
    if ch in _RUST_META or (in_class and ch in "[]^-&~"):
        return "\\" + ch
    if cp < 0x20 or cp == 0x7F or not ch.isprintable() or ch.isspace():
        return f"\\x{{{cp:X}}}"
    return ch


def _rust_class(node: Node) -> str:
    parts = []
    runes = node.runes
    for i in range(0, len(runes), 2):
        lo, hi = runes[i], runes[i + 1]
        if lo == hi:
            parts.append(_rust_char(lo, True))
        else:
            parts.append(_rust_char(lo, True) + "-" + _rust_char(hi, True))
    items = "".join(parts)
    for cls in node.unicode_classes:
        items += f"[{cls[4:]}]" if cls.startswith("(?i)") else cls
    if node.unicode_classes:
        body = ("[^" if node.negated_unicode else "[") + items + "]"
        if any(c.startswith("(?i)") for c in node.unicode_classes):
            return "(?i:" + body + ")"
        return body
    if not items:
        return r"[^\x{0}-\x{10FFFF}]"
    return "[" + items + "]"


def to_rust(node: Node, captures: bool = False) -> str:
    """Write a parsed tree as a Rust-regex pattern (polars) with the same matches as in Go.

    With `captures`, groups stay capturing (named ones keep their names) for extraction.
    """
    op = node.op
    if op == Op.NO_MATCH:
        return r"[^\x{0}-\x{10FFFF}]"
    if op == Op.EMPTY_MATCH:
        return "(?:)"
    if op == Op.LITERAL:
        text = "".join(_rust_char(r) for r in node.runes)
        if node.flags & FOLD_CASE:
            return "(?i:" + text + ")"
        return text if len(node.runes) == 1 else "(?:" + text + ")"
    if op == Op.CHAR_CLASS:
        return _rust_class(node)
    if op == Op.ANY_CHAR_NOT_NL:
        return "."
    if op == Op.ANY_CHAR:
        return "(?s:.)"
    if op == Op.BEGIN_LINE:
        return "(?m:^)"
    if op == Op.END_LINE:
        return "(?m:$)"
    if op == Op.BEGIN_TEXT:
        return r"\A"
    if op == Op.END_TEXT:
        return r"\z"
    if op == Op.WORD_BOUNDARY:
        return _ASCII_WORD_BOUNDARY
    if op == Op.NO_WORD_BOUNDARY:
        return _ASCII_NOT_WORD_BOUNDARY
    if op == Op.CAPTURE:
        inner = to_rust(node.subs[0], captures)
        if not captures:
            return "(?:" + inner + ")"
        return (f"(?P<{node.name}>" if node.name else "(") + inner + ")"
    if op in (Op.STAR, Op.PLUS, Op.QUEST, Op.REPEAT):
        sub = "(?:" + to_rust(node.subs[0], captures) + ")"
        lazy = "?" if node.flags & NON_GREEDY else ""
        if op == Op.STAR:
            return sub + "*" + lazy
        if op == Op.PLUS:
            return sub + "+" + lazy
        if op == Op.QUEST:
            return sub + "?" + lazy
        if node.max == -1:
            return f"{sub}{{{node.min},}}{lazy}"
        if node.max == node.min:
            return f"{sub}{{{node.min}}}{lazy}"
        return f"{sub}{{{node.min},{node.max}}}{lazy}"
    if op == Op.CONCAT:
        return "(?:" + "".join(to_rust(s, captures) for s in node.subs) + ")"
    if op == Op.ALTERNATE:
        return "(?:" + "|".join(to_rust(s, captures) for s in node.subs) + ")"
    raise ValueError(f"cannot write regexp node {op.name}")


# Go's \b is ASCII-only; Rust can say so with a Unicode-free group.
_ASCII_WORD_BOUNDARY = r"(?-u:\b)"
_ASCII_NOT_WORD_BOUNDARY = r"(?-u:\B)"
