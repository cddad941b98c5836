"""Go RE2 regular expressions, as Promtail's configuration writes them, compiled with Python's `re`.

RE2 and Python agree on most syntax; this module rewrites the parts that differ (flags in the middle of a
pattern, `\\z`, `$`, ASCII-only `\\d \\w \\s \\b`, POSIX classes, `\\x{...}`, `\\Q...\\E`, `(?<name>...)`) and
rejects what RE2 does not have (look-around, back-references, atomic groups, possessive repetition), so a
pattern behaves here as it does in Promtail and cannot backtrack in ways RE2 would refuse to express.
"""

from __future__ import annotations

import functools
import re

__all__ = ["RE2Error", "compile_re2", "translate_re2"]


class RE2Error(ValueError):
    """The pattern is not valid RE2, or uses RE2 syntax that has no Python equivalent here."""


_WORD = "0-9A-Za-z_"
_OUTSIDE_CLASS = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "s": "[\\t\\n\\f\\r ]",
    "S": "[^\\t\\n\\f\\r ]",
    "w": f"[{_WORD}]",
    "W": f"[^{_WORD}]",
    "b": f"(?:(?<=[{_WORD}])(?![{_WORD}])|(?<![{_WORD}])(?=[{_WORD}]))",
    "B": f"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))",
    "z": "\\Z",
}
_INSIDE_CLASS = {"d": "0-9", "s": "\\t\\n\\f\\r ", "w": _WORD}
_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": _WORD,
    "xdigit": "0-9A-Fa-f",
}
# Unicode classes Python's `re` cannot name; the common ones have close equivalents.
_UNICODE_OUT = {"L": "[^\\W\\d_]", "N": "\\d", "Nd": "\\d", "Lu": "[A-Z]", "Ll": "[a-z]"}
_UNICODE_IN = {"L": None, "N": "\\d", "Nd": "\\d", "Lu": "A-Z", "Ll": "a-z"}
_REPEAT = re.compile(r"\{\d+(?:,\d*)?\}")
_CLASS_SPECIAL = "[&~|"  # escaped inside classes so Python sees no nested-set syntax


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        # One frame per open group: the scoped-flag groups opened inside it, and whether `(?m)` is on.
        self.frames: list[tuple[list[str], bool]] = [([], False)]

    def fail(self, why: str) -> RE2Error:
        return RE2Error(f"invalid RE2 regular expression {self.p!r}: {why}")

    def run(self) -> str:
        p = self.p
        n = len(p)
        while self.i < n:
            c = p[self.i]
            if c == "\\":
                self.escape(in_class=False)
            elif c == "[":
                self.char_class()
            elif c == "(":
                self.group()
            elif c == ")":
                if len(self.frames) == 1:
                    raise self.fail("unexpected )")
                opened, _m = self.frames.pop()
                self.out.append(")" * len(opened) + ")")
                self.i += 1
            elif c == "|":
                opened, _m = self.frames[-1]
                # A flag set by `(?i)` lasts to the end of the group, across alternatives: reopen it after `|`.
                self.out.append(")" * len(opened) + "|" + "".join(opened))
                self.i += 1
            elif c == "$":
                self.out.append("$" if self.frames[-1][1] else "\\Z")
                self.i += 1
            elif c == "{" and (rep := _REPEAT.match(p, self.i)) is not None:
                self.out.append(rep.group(0))
                self.i = rep.end()
                if self.i < n and p[self.i] == "+":
                    raise self.fail(f"invalid nested repetition operator: {rep.group(0)}+")
            elif c in "*+?":
                self.out.append(c)
                self.i += 1
                if self.i < n and p[self.i] == "+":
                    raise self.fail(f"bad repetition operator: {c}+")
            else:
                self.out.append(c)
                self.i += 1
        if len(self.frames) != 1:
            raise self.fail("missing )")
        self.out.append(")" * len(self.frames[0][0]))
        return "".join(self.out)

    def escape(self, in_class: bool) -> None:
        p = self.p
        if self.i + 1 >= len(p):
            raise self.fail("trailing backslash at end of expression")
        c = p[self.i + 1]
        self.i += 2
        if c.isdigit():
            # `\0` and `\1`..`\7` followed by an octal digit are octal codes; a lone `\1` would be a back-reference.
            j = self.i
            if c in "89" or (c != "0" and not (j < len(p) and p[j] in "01234567")):
                raise self.fail(f"invalid escape sequence: \\{c} (RE2 has no back-references)")
            digits = c
            while len(digits) < 3 and j < len(p) and p[j] in "01234567":
                digits += p[j]
                j += 1
            self.i = j
            self.out.append(f"\\U{int(digits, 8):08x}")
            return
        if c in "ZCXRKGgkNo":
            raise self.fail(f"invalid escape sequence: \\{c}")
        if c == "Q":
            end = p.find("\\E", self.i)
            literal = p[self.i :] if end < 0 else p[self.i : end]
            self.i = len(p) if end < 0 else end + 2
            self.out.append(re.escape(literal) if not in_class else "".join("\\" + ch for ch in literal))
            return
        if c == "x" and self.i < len(p) and p[self.i] == "{":
            end = p.find("}", self.i)
            if end < 0:
                raise self.fail("invalid escape sequence: \\x{")
            try:
                code = int(p[self.i + 1 : end], 16)
            except ValueError:
                raise self.fail("invalid escape sequence: \\x{...}") from None
            self.i = end + 1
            self.out.append(f"\\U{code:08x}")
            return
        if c in "pP":
            if self.i < len(p) and p[self.i] == "{":
                end = p.find("}", self.i)
                name = p[self.i + 1 : end] if end > 0 else ""
                self.i = end + 1 if end > 0 else len(p)
            else:
                name = p[self.i : self.i + 1]
                self.i += 1
            negate = c == "P" or name.startswith("^")
            name = name.lstrip("^")
            table = _UNICODE_IN if in_class else _UNICODE_OUT
            rep = table.get(name)
            if rep is None or (negate and in_class):
                raise self.fail(f"Unicode class \\{c}{{{name}}} is not supported here")
            if negate:
                rep = "[^" + rep[1:] if rep.startswith("[") and not rep.startswith("[^") else f"(?:(?!{rep}).)"
            self.out.append(rep)
            return
        if in_class:
            self.out.append(_INSIDE_CLASS.get(c, "\\" + c))
        else:
            self.out.append(_OUTSIDE_CLASS.get(c, "\\" + c))

    def char_class(self) -> None:
        p = self.p
        self.out.append("[")
        self.i += 1
        if self.i < len(p) and p[self.i] == "^":
            self.out.append("^")
            self.i += 1
        first = True
        while True:
            if self.i >= len(p):
                raise self.fail("missing closing ]")
            c = p[self.i]
            if c == "]" and not first:
                self.out.append("]")
                self.i += 1
                return
            first = False
            if c == "\\":
                self.escape(in_class=True)
            elif c == "[" and p.startswith("[:", self.i):
                end = p.find(":]", self.i + 2)
                name = p[self.i + 2 : end] if end > 0 else ""
                if name.startswith("^") or name not in _POSIX:
                    raise self.fail(f"invalid character class range: [:{name}:]")
                self.out.append(_POSIX[name])
                self.i = end + 2
            elif c in _CLASS_SPECIAL or c == "]":
                self.out.append("\\" + c)
                self.i += 1
            else:
                self.out.append(c)
                self.i += 1

    def group(self) -> None:
        p = self.p
        multiline = self.frames[-1][1]
        if not p.startswith("(?", self.i):
            self.out.append("(")
            self.frames.append(([], multiline))
            self.i += 1
            return
        rest = p[self.i + 2 :]
        if rest.startswith("P<") or (rest.startswith("<") and not rest.startswith(("<=", "<!"))):
            start = self.i + (4 if rest.startswith("P<") else 3)
            end = p.find(">", start)
            name = p[start:end] if end > 0 else ""
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise self.fail(f"invalid named capture: {name!r}")
            self.out.append(f"(?P<{name}>")
            self.frames.append(([], multiline))
            self.i = end + 1
            return
        if rest.startswith(("=", "!", "<=", "<!")):
            raise self.fail("look-ahead and look-behind assertions are not supported by RE2")
        if rest.startswith((">", "P=", "P>", "(", "#", "|")):
            raise self.fail(f"invalid or unsupported Perl syntax: (?{rest[:2]}")
        m = re.match(r"([imsU]*)(?:-([imsU]*))?([:)])", rest)
        if m is None:
            raise self.fail(f"invalid or unsupported Perl syntax: (?{rest[:3]}")
        on, off, kind = m.group(1), m.group(2) or "", m.group(3)
        if "U" in on + off:
            raise self.fail("the ungreedy flag (?U) is not supported")
        if kind == ":" and not on and not off:
            self.out.append("(?:")
            self.frames.append(([], multiline))
        else:
            if "m" in on:
                multiline = True
            if "m" in off:
                multiline = False
            opener = f"(?{on}{'-' + off if off else ''}:"
            if kind == ":":
                self.out.append(opener)
                self.frames.append(([], multiline))
            else:
                # `(?s)` applies until the end of the enclosing group: open a scoped group closed there.
                self.out.append(opener)
                opened, _m = self.frames[-1]
                opened.append(opener)
                self.frames[-1] = (opened, multiline)
        self.i += 2 + m.end()


def translate_re2(pattern: str) -> str:
    """Rewrite an RE2 pattern into Python `re` syntax with the same meaning (RE2Error when not possible)."""
    return _Translator(pattern).run()


@functools.lru_cache(maxsize=512)
def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern (RE2Error, naming the problem, when it is invalid or unsupported)."""
    if not isinstance(pattern, str):
        raise RE2Error(f"a regular expression must be a string, not {pattern!r}")
    translated = translate_re2(pattern)
    try:
        return re.compile(translated)
    except re.error as exc:
        raise RE2Error(f"invalid RE2 regular expression {pattern!r}: {exc}") from None
    except RecursionError:
        raise RE2Error(f"regular expression {pattern!r} is nested too deeply") from None
