"""Go string literals as LogQL and Prometheus label text write them: quote and unquote."""

from __future__ import annotations

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}

_QUOTE_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\v": "\\v",
}


class QuotingError(ValueError):
    """A string literal that is not valid Go syntax."""


def quote(value: str) -> str:
    """Return `value` as a double-quoted Go string literal (as Go's strconv.Quote)."""
    if value.isprintable() and "\\" not in value and '"' not in value:
        return '"' + value + '"'
    out = ['"']
    for ch in value:
        esc = _QUOTE_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code <= 0xFFFF:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def unquote_at(text: str, pos: int) -> tuple[str, int]:
    """Read the Go string literal starting at `text[pos]`; return its value and the index after it.

    Accepts double-quoted strings with Go escapes and backtick raw strings.
    """
    if pos >= len(text):
        raise QuotingError("unexpected end of input, expected a string")
    opener = text[pos]
    if opener == "`":
        end = text.find("`", pos + 1)
        if end < 0:
            raise QuotingError("literal not terminated")
        return text[pos + 1 : end], end + 1
    if opener != '"':
        raise QuotingError(f"expected a quoted string at position {pos}")
    out: list[str] = []
    i = pos + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\n":
            break
        if ch != "\\":
            # Fast path: copy a run of plain characters at once.
            j = i
            while j < n and text[j] not in '"\\\n':
                j += 1
            out.append(text[i:j])
            i = j
            continue
        if i + 1 >= n:
            break
        esc = text[i + 1]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise QuotingError("invalid syntax in escape sequence")
            code = int(digits, 16)
            if esc == "x":
                # \x is a raw byte in Go; bytes >= 0x80 only make sense as UTF-8 sequences.
                out.append(chr(code) if code < 0x80 else bytes([code]).decode("latin-1"))
            else:
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise QuotingError("invalid syntax in escape sequence")
                out.append(chr(code))
            i += 2 + width
        elif esc in "01234567":
            digits = text[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits):
                raise QuotingError("invalid syntax in escape sequence")
            code = int(digits, 8)
            if code > 255:
                raise QuotingError("invalid syntax in escape sequence")
            out.append(chr(code))
            i += 4
        else:
            raise QuotingError(f"unknown escape sequence \\{esc}")
    raise QuotingError("literal not terminated")


def unquote(literal: str) -> str:
    """Return the value of a whole Go string literal (quotes included in `literal`)."""
    value, end = unquote_at(literal, 0)
    if end != len(literal):
        raise QuotingError("invalid syntax: text after the closing quote")
    return value
