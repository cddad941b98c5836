"""Go text/template, as `line_format` and `label_format` use it, with Loki's template functions.

A template is parsed once into a tree of nodes; `render` walks it for one row with `.` bound to the row's
labels (a missing label is the empty string, Loki's `missingkey=zero`), `__line__` to the line and
`__timestamp__` to the entry's time.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loglake.gonum import format_float_v, humanize_bytes

__all__ = ["Template", "TemplateError", "TemplateRuntimeError"]


class TemplateError(ValueError):
    """The template text does not parse, or names a function that does not exist."""


class TemplateRuntimeError(TemplateError):
    """Executing the template failed for one row (Loki sets `__error__=TemplateFormatErr`)."""


# ---- lexing ---------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[|(),])
    )""",
    re.VERBOSE,
)
_CHAIN = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _go_unquote(text: str) -> str:
    body = text[1:-1]
    try:
        return body.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return body.encode("utf-8").decode("unicode_escape")


@dataclass
class _Tok:
    kind: str
    text: str
    chain: tuple[str, ...] = ()


def _lex(action: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    action = action.rstrip()
    while pos < len(action):
        m = _TOKEN.match(action, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"unexpected {action[pos:].strip()[:10]!r} in command")
        kind = m.lastgroup or ""
        text = m.group(kind)
        tok = _Tok(kind, text)
        pos = m.end()
        if (kind in ("var", "punct") and text == ")") or kind == "var":
            chain = _CHAIN.match(action, pos)
            if chain:
                tok.chain = tuple(chain.group(0)[1:].split("."))
                pos = chain.end()
        out.append(tok)
    return out


# ---- syntax tree ---------------------------------------------------------------------------------------------


@dataclass
class _Arg:
    kind: str  # "lit", "field", "var", "func", "pipe"
    value: Any = None
    chain: tuple[str, ...] = ()


@dataclass
class _Pipe:
    decl: list[str] = field(default_factory=list)
    assign: bool = False
    cmds: list[list[_Arg]] = field(default_factory=list)


@dataclass
class _Node:
    kind: str  # "text", "action", "if", "range", "with", "template"
    text: str = ""
    pipe: _Pipe | None = None
    body: list[_Node] = field(default_factory=list)
    other: list[_Node] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str, funcs: Mapping[str, Callable[..., Any]]) -> None:
        self.funcs = funcs
        self.items = self._split(text)
        self.pos = 0
        self.defines: dict[str, list[_Node]] = {}

    @staticmethod
    def _split(text: str) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        pos = 0
        while True:
            start = text.find("{{", pos)
            if start < 0:
                items.append(("text", text[pos:]))
                return items
            end = text.find("}}", start + 2)
            if end < 0:
                raise TemplateError("unclosed action")
            inner = text[start + 2 : end]
            chunk = text[pos:start]
            if inner.startswith("- ") or inner == "-" or inner.startswith("-\t") or inner.startswith("-\n"):
                chunk = chunk.rstrip()
                inner = inner[1:]
            items.append(("text", chunk))
            trim_right = inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-")
            if trim_right:
                inner = inner[:-1]
            items.append(("action", inner.strip()))
            pos = end + 2
            if trim_right:
                while pos < len(text) and text[pos] in " \t\r\n":
                    pos += 1

    def parse(self) -> list[_Node]:
        nodes, stop = self._list(())
        if stop is not None:
            raise TemplateError(f"unexpected {{{{{stop}}}}}")
        return nodes

    def _list(self, stops: tuple[str, ...]) -> tuple[list[_Node], str | None]:
        nodes: list[_Node] = []
        while self.pos < len(self.items):
            kind, text = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                if text:
                    nodes.append(_Node("text", text))
                continue
            if text.startswith("/*"):
                if not text.endswith("*/"):
                    raise TemplateError("unclosed comment")
                continue
            word = text.split(None, 1)[0] if text else ""
            if word in ("end", "else"):
                if word not in stops and not (word == "else" and "else" in stops):
                    raise TemplateError(f"unexpected {{{{{word}}}}}")
                return nodes, text
            if word in ("if", "range", "with"):
                nodes.append(self._block(word, text[len(word) :]))
            elif word in ("define", "block"):
                name = _go_unquote(text.split(None, 2)[1]) if len(text.split()) > 1 else ""
                body, stop = self._list(("end",))
                if stop != "end":
                    raise TemplateError(f"unexpected EOF in {word}")
                self.defines[name] = body
                if word == "block":
                    rest = text.split(None, 2)[2] if len(text.split(None, 2)) > 2 else "."
                    nodes.append(_Node("template", name, self._pipe(rest)))
            elif word == "template":
                parts = text.split(None, 2)
                name = _go_unquote(parts[1])
                nodes.append(_Node("template", name, self._pipe(parts[2]) if len(parts) > 2 else None))
            else:
                nodes.append(_Node("action", pipe=self._pipe(text)))
        if stops:
            raise TemplateError("unexpected EOF")
        return nodes, None

    def _block(self, word: str, rest: str) -> _Node:
        node = _Node(word, pipe=self._pipe(rest))
        node.body, stop = self._list(("end", "else"))
        if stop is None:
            raise TemplateError("unexpected EOF")
        if stop.startswith("else"):
            tail = stop[4:].strip()
            if tail.startswith("if") and word == "if":
                node.other = [self._block("if", tail[2:])]
                return node
            if tail.startswith("with") and word == "with":
                node.other = [self._block("with", tail[4:])]
                return node
            node.other, stop = self._list(("end",))
            if stop != "end":
                raise TemplateError("unexpected EOF")
        return node

    def _pipe(self, text: str) -> _Pipe:
        toks = _lex(text)
        pipe = _Pipe()
        # Variable declarations: `$x :=`, `$i, $v :=`, `$x =`.
        i = 0
        names: list[str] = []
        while i < len(toks) and toks[i].kind == "var" and not toks[i].chain:
            names.append(toks[i].text)
            if i + 1 < len(toks) and toks[i + 1].kind == "punct" and toks[i + 1].text == ",":
                i += 2
                continue
            if i + 1 < len(toks) and toks[i + 1].kind in ("decl", "assign"):
                pipe.decl = names
                pipe.assign = toks[i + 1].kind == "assign"
                i += 2
            break
        if not pipe.decl:
            i = 0
        pipe.cmds, _end = self._cmds(toks, i, closing=False)
        if not pipe.cmds:
            raise TemplateError("missing value for command")
        return pipe

    def _cmds(self, toks: list[_Tok], i: int, closing: bool) -> tuple[list[list[_Arg]], int]:
        cmds: list[list[_Arg]] = [[]]
        while i < len(toks):
            t = toks[i]
            if t.kind == "punct" and t.text == "|":
                if not cmds[-1]:
                    raise TemplateError("missing command")
                cmds.append([])
                i += 1
                continue
            if t.kind == "punct" and t.text == ")":
                if not closing:
                    raise TemplateError("unexpected right paren")
                return [c for c in cmds if c], i
            if t.kind == "punct" and t.text == "(":
                inner, j = self._cmds(toks, i + 1, closing=True)
                if j >= len(toks):
                    raise TemplateError("unclosed left paren")
                cmds[-1].append(_Arg("pipe", _Pipe(cmds=inner), toks[j].chain))
                i = j + 1
                continue
            cmds[-1].append(self._arg(t))
            i += 1
        if closing:
            return [c for c in cmds if c], i
        if cmds and not cmds[-1] and len(cmds) > 1:
            raise TemplateError("missing command")
        return [c for c in cmds if c], i

    def _arg(self, t: _Tok) -> _Arg:
        if t.kind == "str":
            return _Arg("lit", _go_unquote(t.text))
        if t.kind == "raw":
            return _Arg("lit", t.text[1:-1])
        if t.kind == "char":
            return _Arg("lit", ord(_go_unquote('"' + t.text[1:-1] + '"')))
        if t.kind == "num":
            text = t.text.replace("_", "")
            if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", text):
                return _Arg("lit", int(text, 0))
            return _Arg("lit", float(text))
        if t.kind == "field":
            return _Arg("field", None, tuple(t.text[1:].split(".")) if t.text != "." else ())
        if t.kind == "var":
            return _Arg("var", t.text, t.chain)
        if t.kind == "ident":
            if t.text in ("true", "false"):
                return _Arg("lit", t.text == "true")
            if t.text == "nil":
                return _Arg("lit", None)
            if t.text not in self.funcs:
                raise TemplateError(f'function "{t.text}" not defined')
            return _Arg("func", t.text)
        raise TemplateError(f"unexpected {t.text!r} in operand")


# ---- values -----------------------------------------------------------------------------------------------------


def _truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str | list | dict | tuple):
        return len(v) > 0
    return True


def _print(v: Any) -> str:
    """Go's fmt %v for the values templates handle."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format_float_v(v)
    if isinstance(v, dt.datetime):
        return _go_time_string(v)
    if isinstance(v, dt.timedelta):
        from loglake.config import format_go_duration as go_duration

        return go_duration(int(v / dt.timedelta(microseconds=1)) * 1000)
    if isinstance(v, list | tuple):
        return "[" + " ".join(_print(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_print(x)}" for k, x in sorted(v.items())) + "]"
    return str(v)


def _go_time_string(t: dt.datetime) -> str:
    off = t.utcoffset() or dt.timedelta(0)
    base = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        base += ("." + f"{t.microsecond:06d}").rstrip("0")
    sign = "+" if off >= dt.timedelta(0) else "-"
    mins = abs(int(off.total_seconds())) // 60
    zone = "UTC" if off == dt.timedelta(0) else ""
    return f"{base} {sign}{mins // 60:02d}{mins % 60:02d} {zone}".rstrip()


def _to_int(v: Any) -> int:
    """spf13/cast ToInt64: numbers truncate, numeric strings parse, anything else is 0."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) else 0
    if isinstance(v, str):
        s = v.strip()
        if re.fullmatch(r"[+-]?\d+\.0*", s):
            s = s.split(".")[0]
        try:
            return int(s, 0) if re.fullmatch(r"[+-]?(0[xXoObB]?)?[0-9a-fA-F_]+", s) else 0
        except ValueError:
            try:
                return int(s, 10)
            except ValueError:
                return 0
    return 0


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return 0.0
    return 0.0


def _to_str(v: Any) -> str:
    return v if isinstance(v, str) else _print(v)


# ---- printf ---------------------------------------------------------------------------------------------------

_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def _printf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    pos = 0
    ai = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if width == "*":
            width = str(_to_int(args[ai])) if ai < len(args) else ""
            ai += 1
        if prec == "*":
            prec = str(_to_int(args[ai])) if ai < len(args) else ""
            ai += 1
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[ai]
        ai += 1
        out.append(_format_one(flags, width, prec, verb, arg))
    out.append(fmt[pos:])
    if ai < len(args):
        extra = ", ".join(f"{type(a).__name__ if not isinstance(a, str) else 'string'}={_print(a)}" for a in args[ai:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _go_type(v: Any) -> str:
    return {str: "string", int: "int", float: "float64", bool: "bool"}.get(type(v), type(v).__name__)


def _format_one(flags: str, width: str | None, prec: str | None, verb: str, arg: Any) -> str:
    spec = flags.replace("#", "") + (width or "") + (f".{prec}" if prec is not None else "")
    if verb in "sv":
        text = _print(arg)
        if prec is not None and verb == "s":
            text = text[: int(prec or 0)]
        return _pad(text, flags, width)
    if verb == "q":
        return _pad(json.dumps(_to_str(arg), ensure_ascii=False), flags, width)
    if verb == "t":
        return _pad(_print(arg), flags, width) if isinstance(arg, bool) else f"%!t({_go_type(arg)}={_print(arg)})"
    if verb in "dxXobc":
        if not isinstance(arg, int) or isinstance(arg, bool):
            if verb in "xX" and isinstance(arg, str):
                text = arg.encode().hex()
                return _pad(text.upper() if verb == "X" else text, flags, width)
            return f"%!{verb}({_go_type(arg)}={_print(arg)})"
        if verb == "c":
            return _pad(chr(arg), flags, width)
        return (
            ("%" + spec + verb).replace("%" + spec + "b", "%" + spec + "b") % arg
            if verb != "b"
            else format(arg, spec + "b")
        )
    if verb in "feEgG":
        if not isinstance(arg, int | float) or isinstance(arg, bool):
            return f"%!{verb}({_go_type(arg)}={_print(arg)})"
        if verb in "gG" and prec is None:
            return _pad(format_float_v(float(arg)), flags, width)
        return ("%" + spec + verb) % float(arg)
    return f"%!{verb}({_go_type(arg)}={_print(arg)})"


def _pad(text: str, flags: str, width: str | None) -> str:
    if not width:
        return text
    w = int(width)
    return text.ljust(w) if "-" in flags else text.rjust(w)


# ---- Loki's functions ---------------------------------------------------------------------------------------

_GO_LAYOUT = [
    ("2006", "%Y"),
    ("January", "%B"),
    ("Jan", "%b"),
    ("Monday", "%A"),
    ("Mon", "%a"),
    ("MST", "%Z"),
    ("-07:00", "%:z"),
    ("-0700", "%z"),
    ("Z07:00", "%:Z"),
    ("Z0700", "%Z0700"),
    ("01", "%m"),
    ("02", "%d"),
    ("_2", "%e"),
    ("06", "%y"),
    ("15", "%H"),
    ("03", "%I"),
    ("04", "%M"),
    ("05", "%S"),
    ("PM", "%p"),
    ("1", "%-m"),
    ("2", "%-d"),
    ("3", "%-I"),
    ("4", "%-M"),
    ("5", "%-S"),
]
_FRACTION = re.compile(r"[.,](0+|9+)")


def _go_format_time(t: dt.datetime, layout: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(layout):
        frac = _FRACTION.match(layout, i)
        if frac and i > 0 and layout[i - 1] in "0123456789":
            digits = len(frac.group(1))
            value = f"{t.microsecond:06d}000"[:digits]
            if frac.group(1)[0] == "9":
                value = value.rstrip("0")
                out.append("." + value if value else "")
            else:
                out.append(layout[i] + value)
            i = frac.end()
            continue
        for token, code in _GO_LAYOUT:
            if layout.startswith(token, i):
                out.append(_strftime(t, code))
                i += len(token)
                break
        else:
            out.append(layout[i])
            i += 1
    return "".join(out)


def _strftime(t: dt.datetime, code: str) -> str:
    off = t.utcoffset() or dt.timedelta(0)
    mins = int(off.total_seconds()) // 60
    sign = "+" if mins >= 0 else "-"
    hh, mm = divmod(abs(mins), 60)
    if code == "%:z":
        return f"{sign}{hh:02d}:{mm:02d}"
    if code == "%z":
        return f"{sign}{hh:02d}{mm:02d}"
    if code == "%:Z":
        return "Z" if mins == 0 else f"{sign}{hh:02d}:{mm:02d}"
    if code == "%Z0700":
        return "Z" if mins == 0 else f"{sign}{hh:02d}{mm:02d}"
    if code == "%Z":
        return t.tzname() or "UTC"
    if code == "%e":
        return f"{t.day:2d}"
    if code.startswith("%-"):
        return str(int(t.strftime("%" + code[2:])))
    return t.strftime(code)


def _go_parse_time(layout: str, value: str, tz: dt.tzinfo = dt.UTC) -> dt.datetime:
    pattern = ""
    i = 0
    groups = {
        "%Y": r"(?P<Y>\d{4})",
        "%m": r"(?P<m>\d{2})",
        "%d": r"(?P<d>\d{2})",
        "%H": r"(?P<H>\d{2})",
        "%M": r"(?P<M>\d{2})",
        "%S": r"(?P<S>\d{2})",
        "%y": r"(?P<y>\d{2})",
        "%b": r"(?P<b>[A-Za-z]{3})",
        "%-m": r"(?P<m>\d{1,2})",
        "%-d": r"(?P<d>\d{1,2})",
        "%:z": r"(?P<z>[+-]\d{2}:\d{2})",
        "%z": r"(?P<z>[+-]\d{4})",
        "%:Z": r"(?P<z>Z|[+-]\d{2}:\d{2})",
        "%Z0700": r"(?P<z>Z|[+-]\d{4})",
        "%I": r"(?P<I>\d{2})",
        "%p": r"(?P<p>AM|PM)",
        "%Z": r"(?P<Zn>[A-Z]{3,4})",
    }
    while i < len(layout):
        frac = _FRACTION.match(layout, i)
        if frac and i > 0 and layout[i - 1] in "0123456789":
            pattern += r"(?:[.,](?P<f>\d+))?"
            i = frac.end()
            continue
        for token, code in _GO_LAYOUT:
            if layout.startswith(token, i) and code in groups:
                pattern += groups[code]
                i += len(token)
                break
        else:
            pattern += re.escape(layout[i])
            i += 1
    m = re.fullmatch(pattern, value)
    if not m:
        raise TemplateRuntimeError(f'parsing time "{value}" as "{layout}": cannot parse')
    g = m.groupdict()
    year = int(g["Y"]) if g.get("Y") else (2000 + int(g["y"]) if g.get("y") else 0)
    month = int(g["m"]) if g.get("m") else (dt.datetime.strptime(g["b"], "%b").month if g.get("b") else 1)
    hour = int(g.get("H") or 0)
    if g.get("I"):
        hour = int(g["I"]) % 12 + (12 if g.get("p") == "PM" else 0)
    micro = int((g.get("f") or "0")[:6].ljust(6, "0"))
    zone: dt.tzinfo = tz
    if g.get("z"):
        z = g["z"]
        if z == "Z":
            zone = dt.UTC
        else:
            z = z.replace(":", "")
            delta = dt.timedelta(hours=int(z[1:3]), minutes=int(z[3:5]))
            zone = dt.timezone(delta if z[0] == "+" else -delta)
    return dt.datetime(
        max(year, 1), month, int(g.get("d") or 1), hour, int(g.get("M") or 0), int(g.get("S") or 0), micro, zone
    )


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise TemplateRuntimeError(f"error parsing regexp: {exc}") from None


def _expand(repl: str) -> str:
    """Go's `$1` / `${1}` / `${name}` replacement syntax in Python's."""
    out = re.sub(r"\$\{(\w+)\}", r"\\g<\1>", repl.replace("\\", "\\\\"))
    return re.sub(r"\$(\d+)", r"\\g<\1>", out)


def _trunc(c: Any, s: Any) -> str:
    c, s = _to_int(c), _to_str(s)
    if c < 0 and len(s) + c > 0:
        return s[len(s) + c :]
    if c >= 0 and len(s) > c:
        return s[:c]
    return s


def _substr(start: Any, end: Any, s: Any) -> str:
    start, end, s = _to_int(start), _to_int(end), _to_str(s)
    if start < 0:
        return s[:end]
    if end < 0 or end > len(s):
        return s[start:]
    return s[start:end]


def _default(d: Any, *given: Any) -> Any:
    if not given or not _truth(given[0]):
        return d
    return given[0]


def _div(a: Any, b: Any) -> int:
    x, y = _to_int(a), _to_int(b)
    if y == 0:
        raise TemplateRuntimeError("runtime error: integer divide by zero")
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _mod(a: Any, b: Any) -> int:
    x, y = _to_int(a), _to_int(b)
    if y == 0:
        raise TemplateRuntimeError("runtime error: integer divide by zero")
    return x - _div(x, y) * y


def _to_time(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v
    raise TemplateRuntimeError(f"wrong type for value; expected time.Time; got {_go_type(v)}")


class _EntryTime(dt.datetime):
    """An entry's time: a datetime that also keeps the nanoseconds datetime cannot hold."""

    ns: int = 0


def _entry_time(ts_ns: int) -> dt.datetime:
    seconds, rest = divmod(ts_ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC)
    t = _EntryTime(base.year, base.month, base.day, base.hour, base.minute, base.second, rest // 1000, dt.UTC)
    t.ns = ts_ns
    return t


def _unix_nanos(t: dt.datetime) -> int:
    if isinstance(t, _EntryTime):
        return t.ns
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _unix_to_time(v: Any) -> dt.datetime:
    text = _to_str(v)
    try:
        n = int(text)
    except ValueError:
        raise TemplateRuntimeError(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None
    digits = len(text.lstrip("-"))
    if digits <= 10:
        return dt.datetime.fromtimestamp(n, dt.UTC)
    if digits <= 13:
        return dt.datetime.fromtimestamp(n / 1000, dt.UTC)
    if digits <= 16:
        return dt.datetime.fromtimestamp(n / 1_000_000, dt.UTC)
    return dt.datetime.fromtimestamp(n / 1e9, dt.UTC)


def _bytes_text(v: Any) -> str:
    return humanize_bytes(_to_int(v))


def _duration_text(v: Any) -> str:
    from loglake.config import format_go_duration as go_duration

    return go_duration(int(_to_float(v) * 1e9))


def _cmp_args(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, bool) != isinstance(b, bool) or isinstance(a, str) != isinstance(b, str):
        raise TemplateRuntimeError("incompatible types for comparison")
    return a, b


def _eq(a: Any, *bs: Any) -> bool:
    for b in bs:
        x, y = _cmp_args(a, b)
        if x == y:
            return True
    return False


def _from_json(v: Any) -> Any:
    try:
        return json.loads(_to_str(v))
    except ValueError as exc:
        raise TemplateRuntimeError(str(exc)) from None


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, "")
        elif isinstance(v, list | str) and isinstance(k, int):
            if not 0 <= k < len(v):
                raise TemplateRuntimeError(f"index out of range: {k}")
            v = v[k]
        else:
            raise TemplateRuntimeError(f"can't index item of type {_go_type(v)}")
    return v


_FUNCS: dict[str, Callable[..., Any]] = {
    # Go's builtins
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a) if a is not None else 0,
    "index": _index,
    "print": lambda *a: "".join(_print(x) for x in a),
    "println": lambda *a: " ".join(_print(x) for x in a) + "\n",
    "printf": lambda f, *a: _printf(_to_str(f), *a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": lambda a, b: _cmp_args(a, b)[0] < b,
    "le": lambda a, b: _cmp_args(a, b)[0] <= b,
    "gt": lambda a, b: _cmp_args(a, b)[0] > b,
    "ge": lambda a, b: _cmp_args(a, b)[0] >= b,
    "urlquery": lambda *a: urllib.parse.quote_plus("".join(_print(x) for x in a)),
    "html": lambda *a: "".join(_print(x) for x in a).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
    "js": lambda *a: json.dumps("".join(_print(x) for x in a))[1:-1],
    "slice": lambda v, *i: v[_to_int(i[0]) : _to_int(i[1])] if len(i) > 1 else v[_to_int(i[0]) :] if i else v,
    # Loki's strings
    "ToLower": lambda s: _to_str(s).lower(),
    "ToUpper": lambda s: _to_str(s).upper(),
    "Replace": lambda s, old, new, n: _to_str(s).replace(_to_str(old), _to_str(new), _to_int(n)),
    "Trim": lambda s, cut: _to_str(s).strip(_to_str(cut)),
    "TrimLeft": lambda s, cut: _to_str(s).lstrip(_to_str(cut)),
    "TrimRight": lambda s, cut: _to_str(s).rstrip(_to_str(cut)),
    "TrimPrefix": lambda s, p: _to_str(s).removeprefix(_to_str(p)),
    "TrimSuffix": lambda s, p: _to_str(s).removesuffix(_to_str(p)),
    "TrimSpace": lambda s: _to_str(s).strip(),
    "lower": lambda s: _to_str(s).lower(),
    "upper": lambda s: _to_str(s).upper(),
    "title": lambda s: re.sub(r"\b\w", lambda m: m.group(0).upper(), _to_str(s)),
    "trunc": _trunc,
    "substr": _substr,
    "contains": lambda sub, s: _to_str(sub) in _to_str(s),
    "hasPrefix": lambda p, s: _to_str(s).startswith(_to_str(p)),
    "hasSuffix": lambda p, s: _to_str(s).endswith(_to_str(p)),
    "indent": lambda n, s: "\n".join(" " * _to_int(n) + ln for ln in _to_str(s).split("\n")),
    "nindent": lambda n, s: "\n" + "\n".join(" " * _to_int(n) + ln for ln in _to_str(s).split("\n")),
    "replace": lambda old, new, s: _to_str(s).replace(_to_str(old), _to_str(new)),
    "repeat": lambda n, s: _to_str(s) * max(_to_int(n), 0),
    "trim": lambda s: _to_str(s).strip(),
    "trimAll": lambda cut, s: _to_str(s).strip(_to_str(cut)),
    "trimPrefix": lambda p, s: _to_str(s).removeprefix(_to_str(p)),
    "trimSuffix": lambda p, s: _to_str(s).removesuffix(_to_str(p)),
    "regexReplaceAll": lambda r, s, repl: _regex(_to_str(r)).sub(_expand(_to_str(repl)), _to_str(s)),
    "regexReplaceAllLiteral": lambda r, s, repl: _regex(_to_str(r)).sub(lambda m: _to_str(repl), _to_str(s)),
    "count": lambda sub, s: _to_str(s).count(_to_str(sub)) if sub else len(_to_str(s)) + 1,
    "urlencode": lambda s: urllib.parse.quote_plus(_to_str(s)),
    "urldecode": lambda s: urllib.parse.unquote_plus(_to_str(s)),
    "b64enc": lambda s: base64.b64encode(_to_str(s).encode()).decode(),
    "b64dec": lambda s: base64.b64decode(_to_str(s).encode()).decode("utf-8", "replace"),
    "alignLeft": lambda n, s: _to_str(s)[: _to_int(n)].ljust(_to_int(n)),
    "alignRight": lambda n, s: _to_str(s)[-_to_int(n) :].rjust(_to_int(n)) if _to_int(n) else "",
    "default": _default,
    "fromJson": _from_json,
    # time
    "unixEpoch": lambda t: str(_unix_nanos(_to_time(t)) // 1_000_000_000),
    "unixEpochMillis": lambda t: str(_unix_nanos(_to_time(t)) // 1_000_000),
    "unixEpochNanos": lambda t: str(_unix_nanos(_to_time(t))),
    "unixToTime": _unix_to_time,
    "toDate": lambda layout, v: _go_parse_time(_to_str(layout), _to_str(v), dt.UTC),
    "toDateInZone": lambda layout, v, zone: _go_parse_time(_to_str(layout), _to_str(v), _zone(zone)),
    "now": lambda: dt.datetime.now(dt.UTC),
    "date": lambda layout, t: _go_format_time(_to_time(t), _to_str(layout)),
    "duration": _duration_text,
    "duration_seconds": _duration_text,
    "bytes": _bytes_text,
    # math (sprig, with spf13/cast conversions)
    "add": lambda *a: sum(_to_int(x) for x in a),
    "add1": lambda a: _to_int(a) + 1,
    "sub": lambda a, b: _to_int(a) - _to_int(b),
    "mul": lambda *a: math.prod(_to_int(x) for x in a),
    "div": _div,
    "mod": _mod,
    "addf": lambda *a: sum(_to_float(x) for x in a),
    "subf": lambda a, *b: _to_float(a) - sum(_to_float(x) for x in b),
    "mulf": lambda *a: math.prod(_to_float(x) for x in a),
    "divf": lambda a, *b: _divf(_to_float(a), [_to_float(x) for x in b]),
    "max": lambda *a: max(_to_int(x) for x in a),
    "min": lambda *a: min(_to_int(x) for x in a),
    "maxf": lambda *a: max(_to_float(x) for x in a),
    "minf": lambda *a: min(_to_float(x) for x in a),
    "ceil": lambda a: float(math.ceil(_to_float(a))),
    "floor": lambda a: float(math.floor(_to_float(a))),
    "round": lambda a, p=0, half=0.5: _round(_to_float(a), _to_int(p), _to_float(half)),
    "int": _to_int,
    "int64": _to_int,
    "float64": _to_float,
    "toString": _to_str,
}


def _divf(a: float, rest: list[float]) -> float:
    for b in rest:
        a = a / b if b else (math.copysign(math.inf, a) if a else math.nan)
    return a


def _round(a: float, places: int, half: float) -> float:
    scale = 10**places
    value = a * scale
    whole = math.floor(value)
    return (whole + (1 if value - whole >= half else 0)) / scale


def _zone(name: Any) -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(_to_str(name))
    except Exception:
        return dt.UTC


# ---- execution ------------------------------------------------------------------------------------------------


class _Scope:
    def __init__(self, root: Any) -> None:
        self.vars: list[tuple[str, Any]] = [("$", root)]

    def get(self, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise TemplateRuntimeError(f"undefined variable: {name}")

    def set(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise TemplateRuntimeError(f"undefined variable: {name}")


def _field(v: Any, chain: tuple[str, ...]) -> Any:
    for name in chain:
        if isinstance(v, Mapping):
            v = v.get(name, "")
        elif v is None:
            raise TemplateRuntimeError(f"nil pointer evaluating interface {{}}.{name}")
        else:
            raise TemplateRuntimeError(f"can't evaluate field {name} in type {_go_type(v)}")
    return v


class Template:
    """A parsed `line_format` / `label_format` template."""

    def __init__(self, text: str, funcs: Mapping[str, Callable[..., Any]] | None = None) -> None:
        """Parse `text`; `funcs` adds functions (or replaces Loki's) for this template only."""
        self.text = text
        self._funcs = {**_FUNCS, **funcs} if funcs else _FUNCS
        parser = _Parser(text, {**self._funcs, "__line__": lambda: "", "__timestamp__": lambda: None})
        try:
            self._nodes = parser.parse()
        except TemplateError:
            raise
        except (ValueError, IndexError) as exc:
            raise TemplateError(str(exc)) from None
        self._defines = parser.defines
        self._fields = self._collect_fields()

    @property
    def fields(self) -> frozenset[str] | None:
        """The label names the template reads as `.name` (None when it may read any)."""
        return self._fields

    def _collect_fields(self) -> frozenset[str] | None:
        names: set[str] = set()
        whole = False

        def pipe(p: _Pipe | None) -> None:
            nonlocal whole
            if p is None:
                return
            for cmd in p.cmds:
                for a in cmd:
                    if a.kind == "field":
                        if a.chain:
                            names.add(a.chain[0])
                        else:
                            whole = True
                    elif a.kind == "pipe":
                        pipe(a.value)

        def walk(nodes: list[_Node]) -> None:
            for n in nodes:
                pipe(n.pipe)
                walk(n.body)
                walk(n.other)

        walk(self._nodes)
        for body in self._defines.values():
            walk(body)
        return None if whole else frozenset(names)

    def render(self, labels: Mapping[str, str], line: str, ts_ns: int) -> str:
        """Execute the template for one entry."""
        ts = _entry_time(ts_ns)
        ctx = _Ctx(line, ts, self._defines, self._funcs)
        out: list[str] = []
        try:
            ctx.run(self._nodes, labels, _Scope(labels), out)
        except TemplateRuntimeError:
            raise
        except RecursionError:
            raise TemplateRuntimeError("exceeded maximum template depth") from None
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, KeyError, IndexError) as exc:
            raise TemplateRuntimeError(f"template: error calling function: {exc}") from None
        return "".join(out)


class _Ctx:
    def __init__(
        self, line: str, ts: dt.datetime, defines: dict[str, list[_Node]], funcs: Mapping[str, Callable[..., Any]]
    ) -> None:
        self.line = line
        self.ts = ts
        self.defines = defines
        self.funcs = funcs
        self.steps = 0

    def run(self, nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
        for n in nodes:
            self.steps += 1
            if self.steps > 100_000:
                raise TemplateRuntimeError("template is too expensive")
            if n.kind == "text":
                out.append(n.text)
            elif n.kind == "action":
                value = self.pipe(n.pipe, dot, scope)
                if not (n.pipe and n.pipe.decl):
                    out.append(_print(value))
            elif n.kind in ("if", "with"):
                mark = len(scope.vars)
                value = self.pipe(n.pipe, dot, scope)
                if _truth(value):
                    self.run(n.body, value if n.kind == "with" else dot, scope, out)
                else:
                    self.run(n.other, dot, scope, out)
                del scope.vars[mark:]
            elif n.kind == "range":
                self._range(n, dot, scope, out)
            elif n.kind == "template":
                body = self.defines.get(n.text)
                if body is None:
                    raise TemplateRuntimeError(f'no such template "{n.text}"')
                arg = self.pipe(n.pipe, dot, scope) if n.pipe else None
                self.run(body, arg, _Scope(arg), out)

    def _range(self, n: _Node, dot: Any, scope: _Scope, out: list[str]) -> None:
        mark = len(scope.vars)
        pipe = n.pipe
        assert pipe is not None
        decl = pipe.decl
        value = self.pipe(_Pipe(cmds=pipe.cmds), dot, scope)
        if isinstance(value, dict):
            items = sorted(value.items())
        elif isinstance(value, list | tuple | str):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif value is None:
            items = []
        else:
            raise TemplateRuntimeError(f"range can't iterate over {_print(value)}")
        if not items:
            self.run(n.other, dot, scope, out)
            return
        for k, v in items:
            if len(decl) == 1:
                scope.vars.append((decl[0], v))
            elif len(decl) == 2:
                scope.vars.append((decl[0], k))
                scope.vars.append((decl[1], v))
            self.run(n.body, v, scope, out)
            del scope.vars[mark:]

    def pipe(self, p: _Pipe | None, dot: Any, scope: _Scope) -> Any:
        if p is None:
            return dot
        value: Any = None
        first = True
        for cmd in p.cmds:
            value = self.command(cmd, dot, scope, None if first else (value,))
            first = False
        if p.decl:
            if p.assign:
                scope.set(p.decl[0], value)
            else:
                scope.vars.append((p.decl[-1], value))
        return value

    def command(self, cmd: list[_Arg], dot: Any, scope: _Scope, piped: tuple[Any, ...] | None) -> Any:
        head = cmd[0]
        if head.kind == "func":
            args = [self.arg(a, dot, scope) for a in cmd[1:]]
            if piped is not None:
                args.append(piped[0])
            return self.call(head.value, args)
        if len(cmd) > 1 or piped is not None:
            if head.kind == "field" and head.chain:
                raise TemplateRuntimeError(f"{head.chain[-1]} is not a method but has arguments")
            raise TemplateRuntimeError("can't give argument to non-function")
        return self.arg(head, dot, scope)

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "__line__":
            return self.line
        if name == "__timestamp__":
            return self.ts
        fn = self.funcs[name]
        try:
            return fn(*args)
        except TemplateRuntimeError:
            raise
        except TypeError:
            raise TemplateRuntimeError(f"wrong number of args for {name}: got {len(args)}") from None
        except Exception as exc:
            raise TemplateRuntimeError(f"error calling {name}: {exc}") from None

    def arg(self, a: _Arg, dot: Any, scope: _Scope) -> Any:
        if a.kind == "lit":
            return a.value
        if a.kind == "field":
            return _field(dot, a.chain)
        if a.kind == "var":
            return _field(scope.get(a.value), a.chain)
        if a.kind == "func":
            return self.call(a.value, [])
        value = self.pipe(a.value, dot, scope)
        return _field(value, a.chain) if a.chain else value
