"""A client for Loki's HTTP API (any Loki-compatible server), used by the `loglake` query and push commands."""

from loglake.client.loki import (
    DEFAULT_ADDR,
    LokiClient,
    LokiError,
    PushStream,
    encode_push_json,
    encode_push_protobuf,
)
from loglake.client.output import LogPrinter, format_label_set
from loglake.client.query import BatchTooSmallError, LogEntry, Page, fetch_pages

__all__ = [
    "DEFAULT_ADDR",
    "BatchTooSmallError",
    "LogEntry",
    "LogPrinter",
    "LokiClient",
    "LokiError",
    "Page",
    "PushStream",
    "encode_push_json",
    "encode_push_protobuf",
    "fetch_pages",
    "format_label_set",
]
