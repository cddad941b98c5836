"""Masking of secrets and personal data in log records before they are formatted.

`RedactingFilter` masks, in place on the record, the rendered message, string values of extra fields (also inside
dicts and lists, which are copied rather than changed), the exception text and the stack. What it masks:

- `Authorization: <scheme> <credentials>` and `Cookie:`/`Set-Cookie:` header text: the header name and the scheme
  stay, the credentials become the mask (`Authorization: Bearer [REDACTED]`);
- `Bearer <token>` and `Basic <base64>` anywhere;
- values of `password=`, `passwd=`, `pwd=`, `secret=`, `token=`, `api_key=`, `apikey=`, `access_key=`,
  `private_key=`, `client_secret=`, `cookie=` (also with a prefix such as `db_password` or `X-Api-Key`, with `:`
  instead of `=`, and the JSON/dict style `"password": "..."`): the key stays, the value becomes the mask;
- passwords in URLs (`https://user:[REDACTED]@host`);
- well-known key shapes, masked whole: OpenAI-style `sk-...`, Stripe `sk_live_...`, AWS access key ids `AKIA...`,
  GitHub `ghp_...`/`github_pat_...`, Slack `xox?-...`, Google `AIza...`, JWTs `eyJ...`, PEM private key blocks;
- credit-card-like numbers (13-19 digits starting with 2-6, single spaces or dashes allowed between digits, passing
  the Luhn check): every digit but the last four becomes `*` (`**** **** **** 1111`), as PCI DSS allows to show;
- e-mail addresses: the local part becomes the mask, the domain stays (`[REDACTED]@example.com`), since the domain
  is rarely personal and helps debugging.

Extra fields (and dict keys inside them) whose name is sensitive (`password`, `token`, `authorization`, ...; any case,
`-`, `_` or camelCase, also as a suffix such as `db_password` or `accessToken`) are replaced by the mask whole;
`None` stays `None`, so a log can still show that a value was missing.

Masking twice gives the same as masking once. A message is rewritten (rendered text in `msg`, `args` cleared) only
when something in it was masked. Put the filter on handlers: a filter on a logger does not see records that
propagate up to it from child loggers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from loglake.logging.formatter import STANDARD_ATTRS

__all__ = [
    "DEFAULT_PATTERNS",
    "DEFAULT_SENSITIVE_KEYS",
    "RedactingFilter",
    "RedactionRule",
    "luhn_valid",
]

Replacement = str | Callable[[re.Match[str], str], str] | None


@dataclass(frozen=True, slots=True)
class RedactionRule:
    """One named secret pattern and how its matches are masked.

    `replacement` is None (the whole match becomes the mask), an `re.sub` template, or a function of the match and
    the mask. `hints` are lower-case substrings and `precheck` a function of the lower-cased text: `regex` is tried
    only on text that holds one of the hints (if any are given) and passes the precheck (if given), because running
    every regex on every record would cost tens of µs. A rule with neither is tried on all text.
    """

    name: str
    regex: re.Pattern[str]
    replacement: Replacement = None
    hints: tuple[str, ...] = ()
    precheck: Callable[[str], bool] | None = None

    def may_match(self, lowered: str) -> bool:
        """Return whether `regex` can match text whose lower-cased form is `lowered` (false positives allowed)."""
        if self.hints:
            for hint in self.hints:
                if hint in lowered:
                    break
            else:
                return False
        return self.precheck is None or self.precheck(lowered)

    def apply(self, text: str, mask: str) -> str:
        """Return `text` with this rule's matches masked."""
        replacement = self.replacement
        if replacement is None:
            return self.regex.sub(lambda _m: mask, text)
        if isinstance(replacement, str):
            return self.regex.sub(replacement, text)
        return self.regex.sub(lambda m: replacement(m, mask), text)


PatternSpec = RedactionRule | re.Pattern[str] | str | tuple[re.Pattern[str] | str, str]


def luhn_valid(digits: str) -> bool:
    """Return whether a string of ASCII digits passes the Luhn checksum that payment card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _keep_prefix(m: re.Match[str], mask: str) -> str:
    """Keep group `keep` (a header name, key and separator), mask the rest of the match."""
    return m.group("keep") + mask


def _keep_prefix_and_quotes(m: re.Match[str], mask: str) -> str:
    """Keep group `keep`, mask the value but keep its quotes so that JSON and dict reprs stay well-formed."""
    value = m.group("value")
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return m.group("keep") + value[0] + mask + value[0]
    return m.group("keep") + mask


def _mask_card(m: re.Match[str], mask: str) -> str:
    text = m.group(0)
    digits = "".join(ch for ch in text if ch in "0123456789")
    if not luhn_valid(digits):
        return text
    # Separators stay, so the masked number reads like the original; the mask text is not used here.
    keep_from = len(text)
    seen = 0
    while seen < 4:
        keep_from -= 1
        if text[keep_from] in "0123456789":
            seen += 1
    return "".join("*" if ch in "0123456789" else ch for ch in text[:keep_from]) + text[keep_from:]


def _mask_email(m: re.Match[str], mask: str) -> str:
    return mask + "@" + m.group("domain")


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _may_hold_card_number(lowered: str) -> bool:
    """Whether 13 digits follow each other once spaces and dashes are dropped: bytes.translate is ~20x a regex."""
    squeezed = lowered.encode("utf-8", "surrogatepass").translate(_DIGITS_TO_ZERO, b" -")
    return b"0000000000000" in squeezed


def _may_hold_url_password(lowered: str) -> bool:
    return "://" in lowered and "@" in lowered


_SECRET_KEY_WORDS = (
    r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret|cookie"
)
# Case-insensitive alternations are ~8x slower in `re` than plain ones, so the plain one runs on lower-cased text
# first and the exact rule only where it found something.
_KEY_VALUE_FINDER = re.compile(rf"(?:{_SECRET_KEY_WORDS})[\"']?\s*[=:]")


def _may_hold_key_value_secret(lowered: str) -> bool:
    return _KEY_VALUE_FINDER.search(lowered) is not None


DEFAULT_PATTERNS: tuple[RedactionRule, ...] = (
    RedactionRule(
        "pem_private_key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL),
        hints=("private key-----",),
    ),
    RedactionRule(
        "authorization_header",
        re.compile(
            r"(?i)(?<![\w-])(?P<keep>(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:[a-z][\w.-]*\s+(?=[^\s\"',;]))?)"
            r"[^\s\"',;]+"
        ),
        _keep_prefix,
        hints=("authorization",),
    ),
    RedactionRule(
        "cookie_header",
        re.compile(r"(?i)(?<![\w-])(?P<keep>(?:set-)?cookie[\"']?\s*:\s*[\"']?)[^\r\n\"']+"),
        _keep_prefix,
        hints=("cookie",),
    ),
    RedactionRule(
        "bearer_token",
        re.compile(r"(?i)\b(?P<keep>bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*"),
        _keep_prefix,
        hints=("bearer",),
    ),
    RedactionRule(
        "basic_credentials",
        # The lookahead wants a digit, capital, '+', '/' or '=' after the first character: base64 nearly always has
        # one, prose after the word "Basic" ("Basic configuration") does not.
        re.compile(r"\b(?P<keep>Basic\s+)(?=[A-Za-z0-9+/][a-z]*[0-9A-Z+/=])[A-Za-z0-9+/]{6,}={0,2}"),
        _keep_prefix,
        hints=("basic",),
    ),
    RedactionRule(
        "url_password",
        re.compile(r"(?i)\b(?P<keep>[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s/@]+(?=@)"),
        _keep_prefix,
        precheck=_may_hold_url_password,
    ),
    RedactionRule(
        "key_value_secret",
        # Whatever precedes the key word (`db_`, `X-Api-`, a quote) is left as it is, so it need not be matched;
        # the lookahead on the first letters makes `re` skip most positions quickly (2x faster).
        re.compile(
            rf"(?i)(?=[pstac])(?P<keep>(?:{_SECRET_KEY_WORDS})[\"']?\s*[=:]\s*)"
            r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\[[^\s\[\]]*\]|[^\s&,;\"'(){}\[\]]+)"
        ),
        _keep_prefix_and_quotes,
        hints=("passw", "pwd", "secret", "token", "key", "cookie"),
        precheck=_may_hold_key_value_secret,
    ),
    RedactionRule(
        "openai_key",
        re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"),
        hints=("sk-",),
    ),
    RedactionRule(
        "stripe_key",
        re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}"),
        hints=("k_live_", "k_test_"),
    ),
    RedactionRule(
        "aws_access_key_id",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        hints=("akia", "asia", "abia", "acca"),
    ),
    RedactionRule(
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        hints=("gh",),
    ),
    RedactionRule("slack_token", re.compile(r"\bxox[abeoprs]-[A-Za-z0-9-]{10,}"), hints=("xox",)),
    RedactionRule("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), hints=("aiza",)),
    RedactionRule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        hints=("eyj",),
    ),
    RedactionRule(
        "credit_card",
        # Card numbers start with 2-6 (Mastercard 2/5, Amex 3, Visa 4, Discover/UnionPay 6); leaving out 1 keeps
        # Unix timestamps in ms/us/ns (13/16/19 digits starting with 1) out. Neighbours that make a number part of a
        # larger token (word characters, '-', a decimal point) rule it out: ids, UUIDs, floats.
        re.compile(r"(?<![\w.-])[2-6](?:[ -]?[0-9]){12,18}(?![\w-]|\.[0-9])"),
        _mask_card,
        precheck=_may_hold_card_number,
    ),
    RedactionRule(
        "email",
        re.compile(
            r"(?<![\w.%+@-])[A-Za-z0-9._%+-]{1,64}@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
            r"[A-Za-z]{2,24})\b"
        ),
        _mask_email,
        hints=("@",),
    ),
)
"""The built-in rules, in the order they run; pick from them by `rule.name` to build your own list."""

DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set_cookie",
    "private_key",
    "access_key",
    "client_secret",
)
"""Names of fields whose whole value is masked (also as a suffix: `db_password`, `x_api_key`, `accessToken`)."""

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_MAX_DEPTH = 4
_KEY_CACHE_LIMIT = 4096


_EXCEPTION_FORMATTER = logging.Formatter()


def _changed(new: object, old: object) -> bool:
    """Return whether a redacted value differs from the original (compared as text only, never as arbitrary objects)."""
    return new is not old and not (type(new) is str and type(old) is str and new == old)


def _normalize_key(key: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", key).lower().replace("-", "_").replace(" ", "_")


def _as_rule(spec: Any, index: int) -> RedactionRule:
    """Turn a user's pattern (rule, compiled regex, regex text or (regex, replacement) pair) into a rule."""
    if isinstance(spec, RedactionRule):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], str):
        regex = re.compile(spec[0]) if isinstance(spec[0], str) else spec[0]
        if not isinstance(regex, re.Pattern):
            raise TypeError(f"redaction pattern #{index}: {spec[0]!r} is not a regex (str or re.Pattern)")
        return RedactionRule(f"custom_{index}", regex, spec[1])
    if isinstance(spec, str):
        return RedactionRule(f"custom_{index}", re.compile(spec))
    if isinstance(spec, re.Pattern):
        return RedactionRule(f"custom_{index}", spec)
    raise TypeError(
        f"redaction pattern #{index}: {spec!r} is not a RedactionRule, a regex (str or re.Pattern) "
        "or a (regex, replacement) pair"
    )


class RedactingFilter(logging.Filter):
    """Masks secrets and personal data in a record (message, extra fields, exception, stack) before it is formatted.

    `patterns` replaces `DEFAULT_PATTERNS`, `extra_patterns` adds to them; a pattern is a `RedactionRule`, a regex
    (str or `re.Pattern`: the whole match is masked) or a `(regex, replacement)` pair (an `re.sub` template).
    `sensitive_keys` replaces `DEFAULT_SENSITIVE_KEYS`, `extra_sensitive_keys` adds to them. `emails=False` and
    `cards=False` leave e-mail addresses and card numbers alone. The filter never drops a record and never raises.
    """

    def __init__(
        self,
        patterns: Iterable[PatternSpec] | None = None,
        *,
        extra_patterns: Iterable[PatternSpec] = (),
        sensitive_keys: Iterable[str] | None = None,
        extra_sensitive_keys: Iterable[str] = (),
        mask: str = "[REDACTED]",
        emails: bool = True,
        cards: bool = True,
    ) -> None:
        super().__init__()
        base = DEFAULT_PATTERNS if patterns is None else patterns
        specs = [*base, *extra_patterns]
        rules = [_as_rule(spec, i) for i, spec in enumerate(specs)]
        if not emails:
            rules = [r for r in rules if r.name != "email"]
        if not cards:
            rules = [r for r in rules if r.name != "credit_card"]
        self.rules: tuple[RedactionRule, ...] = tuple(rules)
        self.mask = mask
        keys = DEFAULT_SENSITIVE_KEYS if sensitive_keys is None else tuple(sensitive_keys)
        self.sensitive_keys: frozenset[str] = frozenset(_normalize_key(k) for k in (*keys, *extra_sensitive_keys))
        self._suffixes = tuple("_" + k for k in self.sensitive_keys)
        self._key_cache: dict[str, bool] = {}
        # The gate most records stop at: every rule's hints tried once on all of a record's text, and the
        # prechecks of the rules that have no hints.
        self._gate_hints = tuple(dict.fromkeys(h for r in self.rules for h in r.hints))
        self._hintless = tuple(r for r in self.rules if not r.hints)
        self._rules_by_hint = {h: tuple(r for r in self.rules if h in r.hints) for h in self._gate_hints}

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record's secrets in place; always keep the record."""
        try:
            self._redact(record)
        except Exception:  # a failure to redact must not break the application's logging
            pass
        return True

    def is_sensitive_key(self, key: str) -> bool:
        """Return whether a field or dict key of this name has its whole value masked."""
        cached = self._key_cache.get(key)
        if cached is None:
            name = _normalize_key(key)
            cached = name in self.sensitive_keys or name.endswith(self._suffixes)
            if len(self._key_cache) >= _KEY_CACHE_LIMIT:
                self._key_cache.clear()
            self._key_cache[key] = cached
        return cached

    def redact_text(self, text: str) -> str:
        """Return `text` with every rule's matches masked."""
        return self._apply(text, self._active_rules(text.lower()))

    def _active_rules(self, lowered: str) -> list[RedactionRule]:
        """Return the rules that may match somewhere in text whose lower-cased form is `lowered`."""
        hit = [hint for hint in self._gate_hints if hint in lowered]
        if hit:
            hinted = {id(r) for hint in hit for r in self._rules_by_hint[hint]}
            candidates: Iterable[RedactionRule] = (r for r in self.rules if not r.hints or id(r) in hinted)
        else:
            candidates = self._hintless
        return [r for r in candidates if r.precheck is None or r.precheck(lowered)]

    def _apply(self, text: str, rules: list[RedactionRule]) -> str:
        if not rules:
            return text
        mask = self.mask
        lowered = text.lower()
        for rule in rules:
            if rule.may_match(lowered):
                text = rule.apply(text, mask)
        return text

    def _redact(self, record: logging.LogRecord) -> None:
        texts: list[str] = []
        message: str | None = None
        sensitive_found = False
        msg = record.msg
        structured_msg = isinstance(msg, dict | list) and not record.args
        bad_args = False
        if not structured_msg:
            try:
                message = record.getMessage()
                texts.append(message)
            except Exception:
                # Arguments that do not fit the template: formatters then show the template and the arguments as
                # they are, so those get masked one by one.
                bad_args = True
                if isinstance(msg, str):
                    texts.append(msg)
                if isinstance(record.args, dict | tuple):
                    sensitive_found |= self._collect(record.args, texts, 1)
        fields = record.__dict__
        # A set difference runs in C; the order of the extras does not matter here.
        extras = fields.keys() - STANDARD_ATTRS
        key_cache = self._key_cache
        for key in extras:
            value = fields[key]
            if value is None:
                continue
            sensitive = key_cache.get(key)
            if sensitive is None:
                sensitive = self.is_sensitive_key(key)
            if sensitive:
                sensitive_found |= not self._is_mask(value)
            elif type(value) is str or isinstance(value, str):
                texts.append(value)
            elif isinstance(value, dict | list | tuple):
                sensitive_found |= self._collect(value, texts, 1)
        if structured_msg:
            sensitive_found |= self._collect(msg, texts, 1)
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            texts.append(record.exc_text)
        if record.stack_info:
            texts.append(record.stack_info)

        rules = self._active_rules("\n".join(texts).lower())
        if not rules and not sensitive_found:
            return

        if message is not None:
            masked = self._apply(message, rules)
            if masked != message:
                # The rendered text replaces the template; args go so the formatter does not interpolate again.
                record.msg = masked
                record.args = None
        elif structured_msg:
            record.msg = self._redact_value(msg, rules, 1)
        elif bad_args:
            if isinstance(msg, str):
                record.msg = self._apply(msg, rules)
            if isinstance(record.args, dict | tuple):
                record.args = self._redact_value(record.args, rules, 1)
        for key in extras:
            value = record.__dict__[key]
            if value is None:
                continue
            if self.is_sensitive_key(key):
                new: object = value if self._is_mask(value) else self.mask
            elif isinstance(value, str):
                new = self._apply(value, rules)
            elif isinstance(value, dict | list | tuple):
                new = self._redact_value(value, rules, 1)
            else:
                continue
            if _changed(new, value):
                record.__dict__[key] = new
        if record.exc_text:
            record.exc_text = self._apply(record.exc_text, rules)
        if record.stack_info:
            record.stack_info = self._apply(record.stack_info, rules)

    def _is_mask(self, value: object) -> bool:
        return type(value) is str and value == self.mask

    def _collect(self, value: object, texts: list[str], depth: int) -> bool:
        """Add the strings inside a dict/list/tuple to `texts`; return whether it holds a sensitive key."""
        if depth > _MAX_DEPTH:
            return False
        found = False
        if isinstance(value, dict):
            for k, v in value.items():
                if v is None:
                    continue
                if isinstance(k, str) and self.is_sensitive_key(k):
                    found |= not self._is_mask(v)
                elif isinstance(v, str):
                    texts.append(v)
                elif isinstance(v, dict | list | tuple):
                    found |= self._collect(v, texts, depth + 1)
        else:
            for v in value:  # type: ignore[attr-defined]
                if isinstance(v, str):
                    texts.append(v)
                elif isinstance(v, dict | list | tuple):
                    found |= self._collect(v, texts, depth + 1)
        return found

    def _redact_value(self, value: Any, rules: list[RedactionRule], depth: int) -> Any:
        """Return `value` with secrets masked: the same object if nothing changed, else a copy (never mutated)."""
        if isinstance(value, str):
            return self._apply(value, rules)
        if depth > _MAX_DEPTH or not isinstance(value, dict | list | tuple):
            return value
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            changed = False
            for k, v in value.items():
                if v is not None and isinstance(k, str) and self.is_sensitive_key(k):
                    new = v if self._is_mask(v) else self.mask
                else:
                    new = self._redact_value(v, rules, depth + 1)
                changed |= _changed(new, v)
                out[k] = new
            return out if changed else value
        items = [self._redact_value(v, rules, depth + 1) for v in value]
        if not any(_changed(new, old) for new, old in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
