"""Log record formatters: one JSON object per line, or readable text with logfmt fields."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

# The attributes every LogRecord has, read off a real record rather than listed by hand, so that anything else
# on a record (`extra=`, filters) is a field of the line whatever the Python version adds.
STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# Keys the JSON object starts with; an extra of the same name is written as `extra_<name>` instead of hiding them.
_CORE_KEYS = ("timestamp", "level", "message", "logger", "module", "function", "line", "exception", "stack")
_CORE = frozenset(_CORE_KEYS)


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """Return the attributes of a record that are not standard LogRecord attributes, in the order they were set."""
    return {k: v for k, v in record.__dict__.items() if k not in STANDARD_ATTRS}


_second_cache: tuple[int, str] = (-1, "")


def rfc3339_utc(created: float, msecs: float | None = None) -> str:
    """Return a record time as RFC 3339 in UTC with milliseconds and `Z`, e.g. 2026-11-21T09:30:00.123Z."""
    global _second_cache
    second = int(created)
    cached_second, text = _second_cache
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, text)
    ms = int(msecs) if msecs is not None else int((created - second) * 1000)
    return f"{text}.{min(ms, 999):03d}Z"


def message_of(record: logging.LogRecord) -> str:
    """Return the record's message with its arguments; a message whose arguments do not fit is shown as it is."""
    try:
        return record.getMessage()
    except Exception:
        try:
            return f"{record.msg!s} {record.args!r}"
        except Exception:
            return _unrepresentable(record.msg)


def _unrepresentable(value: object) -> str:
    return f"<unrepresentable {type(value).__name__}>"


def safe_repr(value: object) -> str:
    """Return repr(value), or a placeholder naming its type when repr itself fails."""
    try:
        return repr(value)
    except Exception:
        return _unrepresentable(value)


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=safe_repr).encode


def _json_value(value: object) -> str:
    """Return one value as JSON text; what JSON cannot hold exactly (NaN, tuple keys, cycles) becomes its repr."""
    try:
        return _encode(value)
    except Exception:
        return _encode(safe_repr(value))


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object: timestamp, level, message, logger, source, every extra field, errors.

    `static_fields` are added to every line (e.g. {"service": "task-api"}); fields a filter or `extra=` set on the
    record follow the core keys in the order they were set. Formatting never raises.
    """

    def __init__(self, *, static_fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static_fields = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        try:
            return self._format(record)
        except Exception as exc:  # formatting a log line must never take the application down
            return _encode(
                {
                    "timestamp": rfc3339_utc(time.time()),
                    "level": "error",
                    "message": f"loglake.logging could not format a record: {safe_repr(exc)}",
                    "logger": getattr(record, "name", ""),
                }
            )

    def _format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": rfc3339_utc(record.created, record.msecs),
            "level": record.levelname.lower(),
            "message": message_of(record),
            "logger": record.name,
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
        }
        for key, value in self.static_fields.items():
            doc.setdefault(key, value)
        for key, value in record_extras(record).items():
            doc[f"extra_{key}" if key in _CORE or key in doc else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        try:
            return _encode(doc)
        except Exception:
            return "{" + ",".join(f"{_encode(str(k))}:{_json_value(v)}" for k, v in doc.items()) + "}"


def _logfmt_value(value: object) -> str:
    text = value if isinstance(value, str) else _json_value(value) if not isinstance(value, bool | int) else str(value)
    if text and not any(c in text for c in ' "=\\\n\t') and text.isprintable():
        return text
    return _encode(text)


class TextFormatter(logging.Formatter):
    """Formats a record as `<time> <LEVEL> <logger>: <message>` followed by its extra fields as logfmt pairs."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one readable line (plus its traceback, if any)."""
        try:
            head = f"{rfc3339_utc(record.created, record.msecs)} {record.levelname:<8} {record.name}: "
            fields = " ".join(f"{k}={_logfmt_value(v)}" for k, v in record_extras(record).items())
            text = head + message_of(record) + (" " + fields if fields else "")
            if record.exc_info and not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            if record.exc_text:
                text += "\n" + record.exc_text
            if record.stack_info:
                text += "\n" + record.stack_info
            return text
        except Exception as exc:
            return f"loglake.logging could not format a record: {safe_repr(exc)}"
