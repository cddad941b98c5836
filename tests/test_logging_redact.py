"""RedactingFilter: secrets and personal data are masked in messages, fields, exceptions; nothing else changes."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loglake.logging.formatter import JSONFormatter
from loglake.logging.redact import DEFAULT_PATTERNS, DEFAULT_SENSITIVE_KEYS, RedactingFilter, RedactionRule, luhn_valid

M = "[REDACTED]"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5" * 3 + "F6g7H8"  # 36 characters after the prefix
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nq8Zx==\n-----END RSA PRIVATE KEY-----"


def record(msg: object = "hello", *args: object, **extras: object) -> logging.LogRecord:
    """A LogRecord as a logger makes it, with `extras` set the way `extra=` sets them."""
    rec = logging.LogRecord("app", logging.INFO, __file__, 10, msg, args or None, None)
    for key, value in extras.items():
        setattr(rec, key, value)
    return rec


def redacted(text: str, **kwargs: object) -> str:
    rec = record(text)
    assert RedactingFilter(**kwargs).filter(rec) is True  # type: ignore[arg-type]
    return rec.getMessage()


# (rule name, text, expected): the secret goes, the text around it stays exactly as it was.
BUILTIN_CASES = [
    (
        "authorization_header",
        "GET /orders Authorization: Bearer abc.def-ghi_123 took 3ms",
        f"GET /orders Authorization: Bearer {M} took 3ms",
    ),
    ("authorization_header", "authorization=Token 9f8e7d6c5b4a end", f"authorization=Token {M} end"),
    (
        "authorization_header",
        "hdrs {'Authorization': 'xyz987', 'Accept': '*/*'}",
        f"hdrs {{'Authorization': '{M}', 'Accept': '*/*'}}",
    ),
    ("cookie_header", "Cookie: session=abc123; theme=dark", f"Cookie: {M}"),
    ("cookie_header", '{"Set-Cookie": "sid=s3cr3t; Path=/", "a": 1}', f'{{"Set-Cookie": "{M}", "a": 1}}'),
    ("bearer_token", "calling upstream with bearer Zm9vYmFyYmF6cXV4 now", f"calling upstream with bearer {M} now"),
    ("basic_credentials", "sent Basic dXNlcjpwYXNzd29yZA== to proxy", f"sent Basic {M} to proxy"),
    ("basic_credentials", "sent Basic dXNlcjpwYXNz to proxy", f"sent Basic {M} to proxy"),
    (
        "url_password",
        "connect postgres://app:hunter2@db.internal:5432/main ok",
        f"connect postgres://app:{M}@db.internal:5432/main ok",
    ),
    ("key_value_secret", "login user=bob password=hunter2 status=ok", f"login user=bob password={M} status=ok"),
    ("key_value_secret", "GET /cb?code=1&client_secret=abc&x=2", f"GET /cb?code=1&client_secret={M}&x=2"),
    (
        "key_value_secret",
        'body {"user": "bob", "password": "hun\\"ter2", "n": 1}',
        f'body {{"user": "bob", "password": "{M}", "n": 1}}',
    ),
    ("key_value_secret", "env DB_PASSWD='p w d' PWD=/tmp", f"env DB_PASSWD='{M}' PWD={M}"),
    ("key_value_secret", "X-Api-Key: k-123456 api_key=zz apikey=yy", f"X-Api-Key: {M} api_key={M} apikey={M}"),
    ("key_value_secret", "refresh token: abc123, next", f"refresh token: {M}, next"),
    (
        "key_value_secret",
        "cfg secret=[REDACTED] AWS_SECRET_ACCESS_KEY=wJalrXUt",
        f"cfg secret={M} AWS_SECRET_ACCESS_KEY={M}",
    ),
    ("openai_key", "model call with sk-proj-abcDEF1234567890xyzXYZ0 failed", f"model call with {M} failed"),
    ("stripe_key", "charge via sk_live_4eC39HqLyjWDarjtT1zdp7dc done", f"charge via {M} done"),
    ("aws_access_key_id", "aws key AKIAIOSFODNN7EXAMPLE in use", f"aws key {M} in use"),
    ("github_token", f"clone with {GITHUB_TOKEN}.", f"clone with {M}."),
    ("github_token", "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnop here", f"pat {M} here"),
    ("slack_token", "slack xoxb-123456789012-abcdefABCDEF ok", f"slack {M} ok"),
    ("google_api_key", "maps AIzaSyA-1234567890abcdefghijklmnopqrstu ok", f"maps {M} ok"),
    ("jwt", f"session {JWT} expired", f"session {M} expired"),
    ("pem_private_key", f"key loaded:\n{PEM}\nnext line", f"key loaded:\n{M}\nnext line"),
    ("credit_card", "paid with 4111 1111 1111 1111 today", "paid with **** **** **** 1111 today"),
    ("credit_card", "card=5500-0000-0000-0004; ok", "card=****-****-****-0004; ok"),
    ("credit_card", "amex 378282246310005.", "amex ***********0005."),
    ("email", "welcome mail to bob.smith+news@example.co.uk sent", f"welcome mail to {M}@example.co.uk sent"),
]


@pytest.mark.parametrize(("rule", "text", "expected"), BUILTIN_CASES)
def test_builtin_rule_masks_its_secret_and_keeps_the_text_around_it(rule: str, text: str, expected: str) -> None:
    assert redacted(text) == expected
    only_this_rule = [r for r in DEFAULT_PATTERNS if r.name == rule]
    assert only_this_rule, f"no built-in rule named {rule}"
    assert redacted(text, patterns=only_this_rule) == expected


def test_every_builtin_rule_has_a_case() -> None:
    assert {r.name for r in DEFAULT_PATTERNS} == {rule for rule, _, _ in BUILTIN_CASES}


@pytest.mark.parametrize(
    "text",
    [
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
        "request 123e4567-e89b-12d3-a456-426614174000 done",
        "client 192.168.10.254 and [2001:db8::1]:8080 connected",
        "at 2026-11-21T09:30:00.123Z (1763717400123) ns=1763717400123456789 us=1763717400123456",
        "order 1234567890 item 4242 qty 12 total 99.95 EUR",
        "order 4111111111111112 card-like but not Luhn",
        "ratio 0.4111111111111111 and ORD-4111111111111111",
        "Basic configuration loaded; bearer of bad news; the token count is 7",
        "tokens=512 max_tokens: 100 password_hash=sha256 secret_name=db",
        "decorator @property and user@localhost and a@b",
        "GET https://example.com/a?b=c 200",
    ],
)
def test_ordinary_values_are_left_alone(text: str) -> None:
    assert redacted(text) == text


def test_luhn_check() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("1234567812345678")


def test_card_numbers_must_pass_luhn_and_keep_their_last_four_digits() -> None:
    for number in ("4012888888881881", "6011111111111117", "5555555555554444"):
        assert luhn_valid(number)
        assert redacted(f"pay {number} now") == f"pay {'*' * 12}{number[-4:]} now"
        broken = number[:-1] + str((int(number[-1]) + 1) % 10)
        assert redacted(f"pay {broken} now") == f"pay {broken} now"


def test_patterns_replace_the_builtins() -> None:
    f = RedactingFilter(patterns=[r"order-\d+"])
    rec = record("order-42 by bob@example.com password=x")
    f.filter(rec)
    assert rec.getMessage() == f"{M} by bob@example.com password=x"


def test_extra_patterns_add_to_the_builtins_and_take_pairs_with_replacements() -> None:
    f = RedactingFilter(
        extra_patterns=[re.compile(r"ssn:\d{3}-\d{2}-\d{4}"), (r"(user=)\w+", r"\1<anon>")],
    )
    rec = record("user=bob ssn:123-45-6789 password=x")
    f.filter(rec)
    assert rec.getMessage() == f"user=<anon> {M} password={M}"


def test_rule_with_hint_runs_only_where_the_hint_occurs() -> None:
    calls: list[str] = []

    def precheck(lowered: str) -> bool:
        calls.append(lowered)
        return True

    rule = RedactionRule("ticket", re.compile(r"TCK-\d+"), hints=("tck-",), precheck=precheck)
    f = RedactingFilter(patterns=[rule])
    assert f.redact_text("nothing here") == "nothing here"
    assert calls == []
    assert f.redact_text("see tck-12 and TCK-34") == f"see tck-12 and {M}"
    assert calls


def test_emails_and_cards_can_be_turned_off_and_the_mask_changed() -> None:
    text = "bob@example.com paid 4111111111111111 password=x"
    assert redacted(text, emails=False, cards=False, mask="***") == "bob@example.com paid 4111111111111111 password=***"
    assert redacted(text, mask="<hidden>") == "<hidden>@example.com paid ************1111 password=<hidden>"


def test_a_pattern_that_is_not_a_regex_is_refused_with_its_value() -> None:
    with pytest.raises(TypeError, match="42"):
        RedactingFilter(extra_patterns=[42])  # type: ignore[list-item]
    with pytest.raises(re.error):
        RedactingFilter(extra_patterns=["(unclosed"])


def test_sensitive_extra_fields_are_masked_whole() -> None:
    rec = record(
        "login",
        password="hunter2",
        Authorization="Bearer abc",
        x_api_key="k",
        accessToken="t",
        db_password=12345,
        user="bob",
        token_count=3,
        client_secret=None,
    )
    RedactingFilter().filter(rec)
    assert (rec.password, rec.Authorization, rec.x_api_key, rec.accessToken, rec.db_password) == (M, M, M, M, M)
    assert (rec.user, rec.token_count, rec.client_secret) == ("bob", 3, None)


def test_sensitive_keys_are_configurable() -> None:
    rec = record("x", pin="1234", password="p")
    RedactingFilter(sensitive_keys=["pin"]).filter(rec)
    assert (rec.pin, rec.password) == (M, "p")
    rec = record("x", pin="1234", password="p")
    RedactingFilter(extra_sensitive_keys=["PIN"]).filter(rec)
    assert (rec.pin, rec.password) == (M, M)
    assert "password" in DEFAULT_SENSITIVE_KEYS


def test_nested_values_are_masked_in_a_copy_and_the_callers_objects_stay_as_they_were() -> None:
    headers = {"Accept": "json", "Authorization": "Basic dXNlcjpwYXNz", "X-Note": "mail bob@example.com"}
    payload = {"items": [{"card": "4111111111111111"}, "plain"], "meta": {"Set-Cookie": "sid=1"}, "n": 3}
    rec = record("request", headers=headers, payload=payload, labels=("a", "token=abc"))
    RedactingFilter().filter(rec)
    assert rec.headers == {"Accept": "json", "Authorization": M, "X-Note": f"mail {M}@example.com"}
    assert rec.payload == {"items": [{"card": "************1111"}, "plain"], "meta": {"Set-Cookie": M}, "n": 3}
    assert rec.labels == ("a", f"token={M}")
    assert headers["Authorization"] == "Basic dXNlcjpwYXNz" and headers["X-Note"] == "mail bob@example.com"
    assert payload == {"items": [{"card": "4111111111111111"}, "plain"], "meta": {"Set-Cookie": "sid=1"}, "n": 3}


def test_unchanged_nested_values_keep_their_identity() -> None:
    meta = {"a": [1, 2, {"b": "c"}]}
    rec = record("x", meta=meta, note="password=x")
    RedactingFilter().filter(rec)
    assert rec.meta is meta


def test_message_with_percent_args_is_masked_after_interpolation() -> None:
    rec = record("login %s with %s=%s", "bob", "password", "hunter2")
    RedactingFilter().filter(rec)
    assert rec.getMessage() == f"login bob with password={M}"
    assert rec.args is None


def test_message_without_secrets_keeps_its_template_and_args() -> None:
    rec = record("order %s shipped to %s", 42, "Berlin")
    RedactingFilter().filter(rec)
    assert rec.msg == "order %s shipped to %s" and rec.args == (42, "Berlin")


def test_structured_message_is_masked_in_a_copy() -> None:
    msg = {"event": "login", "password": "hunter2", "email": "bob@example.com"}
    rec = record(msg)
    RedactingFilter().filter(rec)
    assert rec.msg == {"event": "login", "password": M, "email": f"{M}@example.com"}
    assert msg["password"] == "hunter2"


def raise_with_secret() -> None:
    raise ValueError("cannot connect to https://svc:s3cr3t@api.internal with password=hunter2")


def test_exception_text_and_stack_are_masked() -> None:
    try:
        raise_with_secret()
    except ValueError:
        exc_info = sys.exc_info()
    rec = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", None, exc_info)
    rec.stack_info = "Stack (most recent call last):\n  token=abc123"
    RedactingFilter().filter(rec)
    assert rec.exc_text is not None
    assert "Traceback (most recent call last)" in rec.exc_text and "raise_with_secret" in rec.exc_text
    assert "s3cr3t" not in rec.exc_text and "hunter2" not in rec.exc_text
    assert f"https://svc:{M}@api.internal with password={M}" in rec.exc_text
    assert rec.stack_info == f"Stack (most recent call last):\n  token={M}"


class Captured:
    """A real logger whose handler formats records into a string buffer."""

    def __init__(self, formatter: logging.Formatter, redactor: RedactingFilter) -> None:
        self.stream = io.StringIO()
        self.logger = logging.getLogger(f"test.redact.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        self.logger.addHandler(handler)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def captured() -> Iterator[Captured]:
    cap = Captured(logging.Formatter("%(message)s"), RedactingFilter())
    yield cap
    cap.logger.handlers.clear()


def test_end_to_end_plain_formatter(captured: Captured) -> None:
    captured.logger.info("user %s logged in with password=%s", "bob@example.com", "hunter2")
    captured.logger.info("nothing to hide: 50%% done, order %d", 1234567)
    try:
        raise_with_secret()
    except ValueError:
        captured.logger.exception("upstream failed, Authorization: Bearer abcdefgh12345")
    text = captured.stream.getvalue()
    assert "hunter2" not in text and "s3cr3t" not in text and "abcdefgh12345" not in text and "bob@" not in text
    lines = captured.lines()
    assert lines[0] == f"user {M}@example.com logged in with password={M}"
    assert lines[1] == "nothing to hide: 50% done, order 1234567"
    assert lines[2] == f"upstream failed, Authorization: Bearer {M}"
    assert lines[3] == "Traceback (most recent call last):"


def test_end_to_end_json_formatter_masks_message_fields_and_exception() -> None:
    cap = Captured(JSONFormatter(), RedactingFilter())
    headers = {"authorization": "Bearer abcdefgh12345", "accept": "json"}
    try:
        raise_with_secret()
    except ValueError:
        cap.logger.exception(
            "call to %s failed", "https://svc:s3cr3t@api.internal", extra={"headers": headers, "api_key": "k1"}
        )
    (line,) = cap.lines()
    doc = json.loads(line)
    assert doc["message"] == f"call to https://svc:{M}@api.internal failed"
    assert doc["headers"] == {"authorization": M, "accept": "json"}
    assert doc["api_key"] == M
    assert "hunter2" not in doc["exception"] and "ValueError" in doc["exception"]
    assert headers["authorization"] == "Bearer abcdefgh12345"


# Fragments that look like the secrets the rules know, mixed with arbitrary text, so that the properties below
# exercise every rule and the places where two rules meet.
SECRET_FRAGMENTS = [
    "password=hunter2",
    '"token": "abc"',
    "Authorization: Bearer abcdefgh123",
    "Basic dXNlcjpwYXNz",
    "https://u:p@h.io",
    "4111 1111 1111 1111",
    "4111111111111111",
    "bob@example.com",
    "AKIAIOSFODNN7EXAMPLE",
    JWT,
    GITHUB_TOKEN,
    "sk-abcdefghijklmnopqrstuvwxyz",
    "Cookie: a=b",
    "xoxb-1234567890-abc",
    PEM,
    M,
    "=",
    ":",
    "@",
    " ",
    "'",
    '"',
    "%s",
    "%(x)s",
]
texts = st.lists(st.one_of(st.sampled_from(SECRET_FRAGMENTS), st.text(max_size=12)), max_size=12).map("".join)


class Hostile:
    """A value whose comparisons and string forms fail, as a careless extra field might."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    __hash__ = object.__hash__

    def __str__(self) -> str:
        raise RuntimeError("no str")


extra_values = st.recursive(
    st.one_of(st.none(), st.integers(), st.floats(), texts, st.just(Hostile())),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(["password", "Authorization", "note", "x-api-key"]), st.text(max_size=8)),
            children,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
extra_names = st.one_of(
    st.sampled_from(["password", "headers", "note", "accessToken", "user_email"]),
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
).filter(lambda name: name not in logging.LogRecord("", 0, "", 0, "", None, None).__dict__ and name != "message")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msg=st.one_of(texts, st.just(Hostile()), st.dictionaries(st.text(max_size=8), texts, max_size=3)),
    args=st.one_of(st.none(), st.tuples(texts), st.tuples(texts, texts)),
    extras=st.dictionaries(extra_names, extra_values, max_size=4),
)
def test_filter_never_raises_and_always_keeps_the_record(msg: object, args: object, extras: dict[str, object]) -> None:
    rec = logging.LogRecord("app", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    for key, value in extras.items():
        setattr(rec, key, value)
    assert RedactingFilter().filter(rec) is True
    # The filter did its work rather than giving up on the record: sensitive fields are masked whatever else is in it.
    for key in ("password", "accessToken"):
        if extras.get(key) is not None:
            assert getattr(rec, key) == M


@settings(max_examples=300, deadline=None)
@given(text=texts, note=texts)
def test_masking_twice_gives_the_same_as_once(text: str, note: str) -> None:
    f = RedactingFilter()
    rec = record(text.replace("%", "%%"), note=note, headers={"authorization": note, "body": note})
    f.filter(rec)
    once = (rec.getMessage(), rec.note, rec.headers)
    f.filter(rec)
    assert (rec.getMessage(), rec.note, rec.headers) == once
    assert f.redact_text(f.redact_text(text)) == f.redact_text(text)


# Without these characters no built-in rule can match: the key words, token prefixes and card digits need them.
NO_SECRET_SHAPES = st.characters(codec="utf-8", exclude_categories=["Nd", "Cs"], exclude_characters="@:=-_bBkKyYzZ")


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=NO_SECRET_SHAPES, max_size=200))
def test_text_without_secret_shapes_is_unchanged(text: str) -> None:
    assert RedactingFilter().redact_text(text) == text


def test_arguments_that_do_not_fit_the_message_are_masked_one_by_one() -> None:
    rec = record("login for bob@example.com with password=hunter2", "4711", {"token": "abc"})
    RedactingFilter().filter(rec)
    assert rec.msg == f"login for {M}@example.com with password={M}"
    assert rec.args == ("4711", {"token": M})
    shown = JSONFormatter().format(rec)
    assert "hunter2" not in shown and "bob@" not in shown and "abc" not in shown


@pytest.mark.parametrize(
    "text",
    [
        "bob@example.combob@example.com",
        "password=[REDACTED]] token=",
        "Authorization: Bearer Bearer abcdefgh123",
        "https://u:p@bob@example.com",
        "4111 1111 1111 1111 1111 4111111111111111@example.com",
    ],
)
def test_masking_places_where_rules_meet_twice_gives_the_same_as_once(text: str) -> None:
    f = RedactingFilter()
    once = f.redact_text(text)
    assert f.redact_text(once) == once
