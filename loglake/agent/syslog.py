"""Promtail's `syslog` source: a TCP or UDP listener that turns RFC 5424 and RFC 3164 messages into entries.

TCP connections are framed as RFC 6587 describes, detected per connection from the first byte as Promtail does:
a digit means octet counting (`LEN SP MSG`), `<` means newline framing. Each UDP datagram is framed the same way on
its own. Every message becomes one entry labelled with the configured labels and the `__syslog_*` target labels
(for relabel_configs; the agent's runner removes labels starting with `__` afterwards).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from loglake.agent.entry import Entry

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 120.0
DEFAULT_MAX_MESSAGE_LENGTH = 8192
SYSLOG_FORMATS = ("auto", "rfc5424", "rfc3164")
PROTOCOLS = ("tcp", "udp")

SEVERITY_LEVELS = ("emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug")
"""Label value of `__syslog_message_severity` for each severity code (as Promtail names them)."""
FACILITY_KEYWORDS = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "security", "console", "cron2", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
)  # fmt: skip
"""Label value of `__syslog_message_facility` for each facility code (RFC 5427 keywords, as Promtail names them)."""

# With newline framing a line that does not start with '<' continues the previous message (as in Promtail), so a
# message is complete only when the next one starts; this long a pause in the connection also completes it.
CONTINUATION_WAIT = 0.2

_RECV_SIZE = 65536
_UDP_READ_BUFFER = 1 << 20  # what Promtail asks the kernel for
_HOSTNAME_CACHE_SIZE = 4096
_UTF8_BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------------------------------------------- configuration


@dataclass
class SyslogSettings:
    """A `syslog` scrape config: where to listen and how to turn messages into entries (Promtail's names)."""

    listen_address: str
    listen_protocol: str = "tcp"
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    label_structured_data: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    use_incoming_timestamp: bool = False
    use_rfc5424_message: bool = False
    max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH
    syslog_format: str = "auto"  # "rfc5424" or "rfc3164" parse only that format; "auto" tells them apart
    tls_cert_file: str = ""  # Promtail's tls_config.cert_file / key_file / ca_file (TCP only)
    tls_key_file: str = ""
    tls_ca_file: str = ""


# ---------------------------------------------------------------------------------------------------- messages


@dataclass
class SyslogMessage:
    """One parsed syslog message; a field the sender left out (or sent as `-`) is None."""

    format: str  # "rfc5424" or "rfc3164"
    priority: int
    version: int | None = None
    timestamp: datetime | None = None  # timezone-aware
    hostname: str | None = None
    app_name: str | None = None  # RFC 3164: the tag
    proc_id: str | None = None  # RFC 3164: the text in brackets after the tag
    msg_id: str | None = None
    structured_data: dict[str, dict[str, str]] | None = None
    message: str | None = None  # None when empty

    @property
    def facility(self) -> int:
        """The facility code (priority divided by 8)."""
        return self.priority // 8

    @property
    def severity(self) -> int:
        """The severity code (priority modulo 8)."""
        return self.priority % 8

    @property
    def timestamp_ns(self) -> int | None:
        """The message's timestamp in nanoseconds since the epoch, or None."""
        if self.timestamp is None:
            return None
        delta = self.timestamp - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000

    def target_labels(self, structured_data: bool = False) -> dict[str, str]:
        """Return the `__syslog_message_*` labels; with `structured_data`, one label per structured data param."""
        labels = {
            "__syslog_message_severity": SEVERITY_LEVELS[self.severity],
            "__syslog_message_facility": FACILITY_KEYWORDS[self.facility],
        }
        for name, value in (
            ("hostname", self.hostname),
            ("app_name", self.app_name),
            ("proc_id", self.proc_id),
            ("msg_id", self.msg_id),
        ):
            if value is not None:
                labels["__syslog_message_" + name] = value
        if structured_data and self.structured_data:
            for sd_id, params in self.structured_data.items():
                # '@' (as in `custom@32473`) cannot be in a label name; Promtail replaces only this character.
                prefix = "__syslog_message_sd_" + sd_id.replace("@", "_") + "_"
                for name, value in params.items():
                    labels[prefix + name] = value
        return labels

    def to_rfc5424(self) -> str:
        """Return the message written out as RFC 5424 text (structured data sorted by id and name, as Promtail)."""
        stamp = "-" if self.timestamp is None else _format_timestamp(self.timestamp)
        sd = "-"
        if self.structured_data:
            parts = []
            for sd_id in sorted(self.structured_data):
                params = self.structured_data[sd_id]
                body = "".join(f' {name}="{_escape_sd_value(params[name])}"' for name in sorted(params))
                parts.append(f"[{sd_id}{body}]")
            sd = "".join(parts)
        fields = (self.hostname, self.app_name, self.proc_id, self.msg_id)
        header = " ".join("-" if value is None else value for value in fields)
        text = f"<{self.priority}>{self.version or 1} {stamp} {header} {sd}"
        return text if self.message is None else text + " " + self.message


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _format_timestamp(ts: datetime) -> str:
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    offset = ts.utcoffset() or timedelta(0)
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def _escape_sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


# ---------------------------------------------------------------------------------------------------- parsing


def parse_syslog(data: bytes, syslog_format: str = "auto", *, now: datetime | None = None) -> SyslogMessage:
    """Parse one syslog message (no framing); raise ValueError saying what is wrong if it cannot be parsed.

    `syslog_format` "auto" reads RFC 5424 when a version number follows the priority and RFC 3164 otherwise.
    `now` (default: the current time) gives the year of RFC 3164 timestamps, which have none.
    """
    if syslog_format not in SYSLOG_FORMATS:
        raise ValueError(f"unknown syslog_format {syslog_format!r}: expected one of {', '.join(SYSLOG_FORMATS)}")
    data = bytes(data)
    priority, pos = _parse_priority(data)
    if syslog_format == "auto":
        syslog_format = "rfc5424" if _VERSION.match(data, pos) else "rfc3164"
    if syslog_format == "rfc5424":
        return _parse_rfc5424(data, priority, pos)
    return _parse_rfc3164(data, priority, pos, now or datetime.now(UTC))


_PRIORITY = re.compile(rb"<(0|[1-9][0-9]{0,2})>")
_VERSION = re.compile(rb"([1-9][0-9]{0,2}) ")
# RFC 3339 with at most `%d` fraction digits: RFC 5424 allows 6, RFC 3164 senders may send up to 9.
_RFC3339 = (
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,%d}))?"
    rb"(Z|[+-][0-9]{2}:[0-9]{2})"
)
_RFC5424_TIMESTAMP = re.compile(_RFC3339 % 6)
_RFC3164_RFC3339 = re.compile(_RFC3339 % 9)
_HEADER_FIELDS = (("hostname", 255), ("app-name", 48), ("procid", 128), ("msgid", 32))
_GRAPH = re.compile(rb"[\x21-\x7e]+")
_SD_NAME = re.compile(rb"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}")  # visible ASCII except '=', ']' and '"'
_SD_VALUE_STOP = re.compile(rb'["\\\]]')


def _parse_priority(data: bytes) -> tuple[int, int]:
    m = _PRIORITY.match(data)
    if not m or int(m.group(1)) > 191:
        shown = data[:8].decode("utf-8", "replace")
        raise ValueError(f"expected a priority <0> to <191> at the start of the message, got {shown!r}")
    return int(m.group(1)), m.end()


def _parse_rfc5424(data: bytes, priority: int, pos: int) -> SyslogMessage:
    m = _VERSION.match(data, pos)
    if not m:
        raise ValueError(f"expected a version number 1-999 and a space after the priority (column {pos})")
    msg = SyslogMessage("rfc5424", priority, version=int(m.group(1)))
    pos = m.end()
    token, pos = _header_token(data, pos, "timestamp")
    if token != b"-":
        msg.timestamp = _rfc3339(token, _RFC5424_TIMESTAMP)
    values = []
    for name, max_length in _HEADER_FIELDS:
        token, pos = _header_token(data, pos, name)
        if len(token) > max_length or not _GRAPH.fullmatch(token):
            raise ValueError(
                f"invalid {name} {token.decode('utf-8', 'replace')!r}: expected 1 to {max_length} visible "
                "US-ASCII characters or '-'"
            )
        values.append(None if token == b"-" else token.decode("ascii"))
    msg.hostname, msg.app_name, msg.proc_id, msg.msg_id = values
    msg.structured_data, pos = _parse_structured_data(data, pos)
    if pos < len(data):
        if data[pos] != 0x20:
            raise ValueError(f"expected a space between the structured data and the message (column {pos})")
        body = data[pos + 1 :]
        if body.startswith(_UTF8_BOM):
            body = body[3:]
        msg.message = body.decode("utf-8", "replace") or None
    return msg


def _header_token(data: bytes, pos: int, name: str) -> tuple[bytes, int]:
    """Return the header field at `pos` and the position after the space that ends it."""
    end = data.find(b" ", pos)
    if end < 0:
        raise ValueError(f"the message ends in the {name} field (column {pos}): RFC 5424 needs all header fields")
    if end == pos:
        raise ValueError(f"empty {name} field (column {pos}): use '-' for a missing value")
    return data[pos:end], end + 1


def _rfc3339(token: bytes, pattern: re.Pattern[bytes]) -> datetime:
    m = pattern.fullmatch(token)
    text = token.decode("utf-8", "replace")
    if not m:
        raise ValueError(f"invalid timestamp {text!r}: expected RFC 3339 such as 2024-05-01T12:00:00.123Z, or '-'")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int(m.group(7)[:6].ljust(6, b"0")) if m.group(7) else 0
    zone = m.group(8)
    try:
        tz: timezone = UTC
        if zone != b"Z":
            sign = -1 if zone[:1] == b"-" else 1
            zh, zm = int(zone[1:3]), int(zone[4:6])
            if zh > 23 or zm > 59:
                raise ValueError("offset out of range")
            tz = timezone(sign * timedelta(hours=zh, minutes=zm))
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"invalid timestamp {text!r}: {exc}") from None


def _parse_structured_data(data: bytes, pos: int) -> tuple[dict[str, dict[str, str]] | None, int]:
    if data[pos : pos + 1] == b"-":
        return None, pos + 1
    if data[pos : pos + 1] != b"[":
        raise ValueError(f"expected structured data ('[id name=\"value\" ...]') or '-' (column {pos})")
    elements: dict[str, dict[str, str]] = {}
    while data[pos : pos + 1] == b"[":
        sd_id, pos = _sd_name(data, pos + 1, "structured data element id")
        if sd_id in elements:
            raise ValueError(f"duplicate structured data element id {sd_id!r}")
        params: dict[str, str] = {}
        while True:
            ch = data[pos : pos + 1]
            if ch == b"]":
                pos += 1
                break
            if ch != b" ":
                raise ValueError(
                    f"expected ' name=\"value\"' or ']' in structured data element {sd_id!r} (column {pos})"
                )
            name, pos = _sd_name(data, pos + 1, f"parameter name in structured data element {sd_id!r}")
            if data[pos : pos + 2] != b'="':
                raise ValueError(f'expected =" after structured data parameter {name!r} (column {pos})')
            params[name], pos = _sd_value(data, pos + 2, name)
        elements[sd_id] = params
    return elements, pos


def _sd_name(data: bytes, pos: int, what: str) -> tuple[str, int]:
    m = _SD_NAME.match(data, pos)
    if not m:
        raise ValueError(
            f"expected a {what}: 1 to 32 visible US-ASCII characters except '=', ']' and '\"' (column {pos})"
        )
    return m.group().decode("ascii"), m.end()


def _sd_value(data: bytes, pos: int, name: str) -> tuple[str, int]:
    out = bytearray()
    while True:
        m = _SD_VALUE_STOP.search(data, pos)
        if not m:
            raise ValueError(f"structured data parameter {name!r}: the value has no closing quote")
        i = m.start()
        out += data[pos:i]
        ch = data[i]
        if ch == 0x22:  # '"'
            return out.decode("utf-8", "replace"), i + 1
        if ch == 0x5D:  # ']'
            raise ValueError(f"structured data parameter {name!r}: ']' in a value must be escaped as '\\]'")
        escaped = data[i + 1 : i + 2]
        if escaped in (b'"', b"\\", b"]"):
            out += escaped
            pos = i + 2
        else:  # a backslash before any other character is kept as it is
            out += b"\\"
            pos = i + 1


_MONTHS = {m.encode(): i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
# "Mmm dd hh:mm:ss": the day is space-padded (" 5") by the RFC; "05" and "5" are accepted too.
_STAMP = re.compile(
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(0?[1-9]|[12][0-9]|3[01]) "
    rb"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(?:\.([0-9]{1,6}))?"
)
_RFC3164_HOSTNAME = re.compile(rb"([\x21-\x39\x3b-\x7e]{1,255}) +")  # visible ASCII except ':'
# tag (visible ASCII except ':' and '['), an optional [content] (usually the PID), then ": " and the message.
_RFC3164_TAG = re.compile(rb"([\x21-\x39\x3b-\x5a\x5c-\x7e]{1,48})(?:\[([\x21-\x5a\x5c\x5e-\x7e]*)\])?: ")


def _parse_rfc3164(data: bytes, priority: int, pos: int, now: datetime) -> SyslogMessage:
    msg = SyslogMessage("rfc3164", priority)
    while data[pos : pos + 1] == b" ":
        pos += 1
    m = _STAMP.match(data, pos)
    if m:
        msg.timestamp = _stamp_datetime(m, now)
        pos = m.end()
    else:
        end = data.find(b" ", pos)
        token = data[pos:] if end < 0 else data[pos:end]
        if not _RFC3164_RFC3339.fullmatch(token):
            shown = token[:32].decode("utf-8", "replace")
            raise ValueError(f"expected a timestamp such as 'Oct 11 22:14:15' after the priority, got {shown!r}")
        msg.timestamp = _rfc3339(token, _RFC3164_RFC3339)
        pos += len(token)
    if data[pos : pos + 1] != b" ":
        raise ValueError(f"expected a space and the message after the timestamp (column {pos})")
    while data[pos : pos + 1] == b" ":
        pos += 1
    m = _RFC3164_HOSTNAME.match(data, pos)
    if m and m.end() < len(data):
        msg.hostname = m.group(1).decode("ascii")
        pos = m.end()
    m = _RFC3164_TAG.match(data, pos)
    if m and m.end() < len(data):
        msg.app_name = m.group(1).decode("ascii")
        msg.proc_id = m.group(2).decode("ascii") if m.group(2) else None
        pos = m.end()
    msg.message = data[pos:].decode("utf-8", "replace") or None
    if msg.message is None:
        raise ValueError("the message ends after the timestamp: RFC 3164 needs a message")
    return msg


def _stamp_datetime(m: re.Match[bytes], now: datetime) -> datetime:
    """The time of an RFC 3164 stamp, in UTC, in the year that puts it closest before `now`."""
    month, day = _MONTHS[m.group(1)], int(m.group(2))
    hour, minute, second = int(m.group(3)), int(m.group(4)), int(m.group(5))
    micro = int(m.group(6).ljust(6, b"0")) if m.group(6) else 0
    # A stamp of Dec 31 read on Jan 1 belongs to last year; allow a week of clock skew the other way.
    for year in (now.year, now.year - 1):
        with contextlib.suppress(ValueError):  # Feb 29 outside a leap year
            ts = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
            if ts - now <= timedelta(days=7):
                return ts
    raise ValueError(f"invalid date {m.group().decode()!r}: no such day in {now.year} or {now.year - 1}")


# ---------------------------------------------------------------------------------------------------- framing


class FramingError(ValueError):
    """A byte stream that does not follow RFC 6587 framing (the connection is closed, as Promtail does)."""


class _NewlineFramer:
    """Newline (non-transparent) framing: a message starts at a line beginning with '<'.

    A line that does not begin with '<' continues the message before it, joined with a newline, as in Promtail.
    Messages longer than the maximum length are cut there (Promtail has no limit here; we keep memory bounded).
    """

    def __init__(self, max_length: int) -> None:
        self._max = max_length
        self._line = bytearray()  # the line being received
        self._message: bytearray | None = None  # the last complete message, open to continuation lines
        self.error: str | None = None

    @property
    def pending(self) -> bool:
        """Whether a message waits for continuation lines."""
        return self._message is not None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages known to be complete."""
        out: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                room = self._max - len(self._line)
                if room > 0:
                    self._line += data[start : start + room]
                if self._line[:1] == b"<":  # a new message has begun, so the one before is complete
                    out.extend(self.flush())
                return out
            room = self._max - len(self._line)
            self._line += data[start : start + max(0, min(room, nl - start))]
            self._end_line(out)
            start = nl + 1

    def flush(self) -> list[bytes]:
        """Return the waiting message as complete (the sender paused)."""
        if self._message is None:
            return []
        message, self._message = bytes(self._message), None
        return [message]

    def finish(self) -> list[bytes]:
        """Return every remaining message (the stream ended; a last line needs no newline)."""
        out: list[bytes] = []
        self._end_line(out)
        return out + self.flush()

    def _end_line(self, out: list[bytes]) -> None:
        line, self._line = self._line, bytearray()
        if line.endswith(b"\r"):
            del line[-1]
        if not line:
            return
        if line[0] == 0x3C or self._message is None:  # '<'
            out.extend(self.flush())
            self._message = line
        else:
            room = self._max - len(self._message) - 1
            if room > 0:
                self._message += b"\n" + line[:room]


class _OctetCountingFramer:
    """Octet-counting (transparent) framing: `LEN SP MSG`, repeated; a newline between frames is skipped."""

    def __init__(self, max_length: int) -> None:
        self._max = max_length
        self._buf = bytearray()
        self.error: str | None = None
        self.pending = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages. On a framing error set `error` and stop."""
        out: list[bytes] = []
        if self.error:
            return out
        buf = self._buf
        buf += data
        pos = 0
        while True:
            while pos < len(buf) and buf[pos] in b"\r\n":
                pos += 1
            if pos >= len(buf):
                break
            space = buf.find(b" ", pos, pos + 12)
            digits = bytes(buf[pos:space] if space >= 0 else buf[pos : pos + 12])
            if not digits[:1].isdigit() or digits[0] == 0x30 or not digits.isdigit():
                self.error = f"invalid octet-counting frame: expected a message length, got {_shown(digits)}"
                break
            if space < 0:
                if len(buf) - pos > 11:
                    self.error = f"invalid octet-counting frame: message length {_shown(digits)} is too long"
                break
            length = int(digits)
            if length > self._max:
                self.error = f"message length ({length}) exceeds max_message_length ({self._max})"
                break
            start = space + 1
            if start < len(buf) and buf[start] != 0x3C:  # '<'
                got = _shown(buf[start : start + 8])
                self.error = f"invalid octet-counting frame: the message must start with '<', got {got}"
                break
            if len(buf) < start + length:
                break
            out.append(bytes(buf[start : start + length]))
            pos = start + length
        del buf[:pos]
        return out

    def flush(self) -> list[bytes]:
        """Return nothing: octet-counted messages are complete as soon as they arrive."""
        return []

    def finish(self) -> list[bytes]:
        """Return nothing: a frame cut short by the end of the stream is dropped, as in Promtail."""
        if self._buf.strip(b"\r\n") and not self.error:
            self.error = "the stream ended inside an octet-counting frame"
        return []


def _shown(data: bytes | bytearray) -> str:
    return repr(bytes(data[:16]).decode("utf-8", "replace"))


def _framer(first_byte: int, max_length: int) -> _NewlineFramer | _OctetCountingFramer:
    if first_byte == 0x3C:  # '<'
        return _NewlineFramer(max_length)
    if 0x30 <= first_byte <= 0x39:
        return _OctetCountingFramer(max_length)
    raise FramingError(
        f"invalid or unsupported framing: first byte {chr(first_byte)!r}; expected '<' (newline framing) "
        "or a digit (octet counting)"
    )


# ---------------------------------------------------------------------------------------------------- the target


class SyslogTarget:
    """Listens for syslog messages over TCP or UDP and hands them to `handler` as entries.

    `handler` is called from the listener's threads (one per TCP connection), so it must be thread-safe; while it
    blocks, that connection is not read, which pushes back on the sender.
    """

    def __init__(self, settings: SyslogSettings, handler: Callable[[list[Entry]], None]) -> None:
        protocol = (settings.listen_protocol or "tcp").lower()
        if protocol not in PROTOCOLS:
            raise ValueError(f"invalid syslog listen_protocol {settings.listen_protocol!r}: expected 'tcp' or 'udp'")
        if (settings.syslog_format or "auto") not in SYSLOG_FORMATS:
            raise ValueError(
                f"invalid syslog_format {settings.syslog_format!r}: expected one of {', '.join(SYSLOG_FORMATS)}"
            )
        self._host, self._port = split_host_port(settings.listen_address)
        self._settings = settings
        self._handler = handler
        self._protocol = protocol
        self._format = settings.syslog_format or "auto"
        # Zero (or unset) means the default, as in Promtail.
        self._idle_timeout = float(settings.idle_timeout or 0) or DEFAULT_IDLE_TIMEOUT
        self._max_length = max(0, int(settings.max_message_length or 0)) or DEFAULT_MAX_MESSAGE_LENGTH
        self._ssl = _server_ssl_context(settings) if protocol == "tcp" else None
        self._sock: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()
        self._hostnames: dict[str, str] = {}
        self.entries_total = 0
        self.parse_errors_total = 0
        self.empty_messages_total = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); call after start()."""
        if self._sock is None:
            raise RuntimeError("the syslog target is not started")
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def ready(self) -> bool:
        """Whether the target listens."""
        return self._sock is not None and not self._stopping.is_set()

    def start(self) -> None:
        """Bind the socket and start serving in background threads."""
        if self._sock is not None:
            raise RuntimeError("the syslog target is already started")
        kind = socket.SOCK_STREAM if self._protocol == "tcp" else socket.SOCK_DGRAM
        try:
            self._sock = _bind(self._host, self._port, kind)
        except OSError as exc:
            raise OSError(f"syslog: cannot listen on {self._protocol} {self._settings.listen_address}: {exc}") from exc
        self._wake_r, self._wake_w = socket.socketpair()
        loop = self._accept_loop if self._protocol == "tcp" else self._datagram_loop
        self._spawn(loop, f"syslog-{self._protocol}-{self._port}")
        log.info("syslog listening on %s %s:%s", self._protocol, *self.address)

    def stop(self) -> None:
        """Stop listening, close open connections (delivering what they sent), and wait for the threads."""
        if self._sock is None or self._stopping.is_set():
            return
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):  # wakes the reading thread, which then flushes and closes
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10.0)
        for sock in (self._sock, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    # ------------------------------------------------------------------------------------------------ TCP

    def _serve_until_stopped(self, on_readable: Callable[[], None]) -> None:
        """Call `on_readable` each time the listening socket is readable, until stop() wakes the loop."""
        assert self._sock is not None and self._wake_r is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    on_readable()

    def _accept_loop(self) -> None:
        self._serve_until_stopped(self._accept_one)

    def _accept_one(self) -> None:
        assert self._sock is not None
        try:
            conn, peer = self._sock.accept()
        except OSError as exc:
            if not self._stopping.is_set():
                log.warning("syslog: failed to accept a connection: %s", exc)
                time.sleep(0.05)  # e.g. out of file descriptors: do not spin
            return
        with self._lock:
            if self._stopping.is_set():
                conn.close()
                return
            self._connections.add(conn)
        self._spawn(lambda c=conn, p=peer: self._serve_connection(c, p), f"syslog-conn-{peer[1]}")

    def _serve_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        sock = conn
        try:
            conn.settimeout(self._idle_timeout)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                with self._lock:
                    self._connections.discard(conn)
                    self._connections.add(sock)
                    if self._stopping.is_set():  # stop() may have missed the new socket
                        return
                sock.do_handshake()
            labels = self._connection_labels(peer[0])
            self._read_stream(sock, labels)
        except OSError as exc:  # includes ssl.SSLError and timeouts during the TLS handshake
            if not self._stopping.is_set():
                log.debug("syslog connection from %s ended: %s", peer[0], exc)
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._connections.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _read_stream(self, conn: socket.socket, labels: dict[str, str]) -> None:
        framer: _NewlineFramer | _OctetCountingFramer | None = None
        last_data = time.monotonic()
        while True:
            idle_left = self._idle_timeout - (time.monotonic() - last_data)
            waiting = framer is not None and framer.pending
            conn.settimeout(max(0.001, min(idle_left, CONTINUATION_WAIT) if waiting else idle_left))
            try:
                data = conn.recv(_RECV_SIZE)
            except TimeoutError:
                if waiting and framer is not None:
                    self._deliver(framer.flush(), labels)
                    last_data = time.monotonic()  # time spent in the handler is not idle time
                    continue
                log.debug("syslog connection idle for %ss: closing it", self._idle_timeout)
                break
            if not data:
                break
            if framer is None:
                try:
                    framer = _framer(data[0], self._max_length)
                except FramingError as exc:
                    self._count_error(exc)
                    return
            self._deliver(framer.feed(data), labels)
            last_data = time.monotonic()
            if framer.error:
                break
        if framer is not None:
            self._deliver(framer.finish(), labels)
            if framer.error:
                self._count_error(framer.error)

    # ------------------------------------------------------------------------------------------------ UDP

    def _datagram_loop(self) -> None:
        self._serve_until_stopped(self._read_datagram)

    def _read_datagram(self) -> None:
        assert self._sock is not None
        try:
            # A datagram longer than max_message_length is cut there, as in Promtail.
            data, peer = self._sock.recvfrom(self._max_length)
        except OSError as exc:
            log.warning("syslog: failed to read a datagram: %s", exc)
            return
        if data:
            self._handle_datagram(data, peer[0])

    def _handle_datagram(self, data: bytes, ip: str) -> None:
        try:
            framer = _framer(data[0], self._max_length)
        except FramingError as exc:
            self._count_error(exc)
            return
        messages = framer.feed(data) + framer.finish()
        self._deliver(messages, self._connection_labels(ip))
        if framer.error:
            self._count_error(framer.error)

    # ------------------------------------------------------------------------------------------------ entries

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _connection_labels(self, ip: str) -> dict[str, str]:
        ip = _go_ip_text(ip)
        labels = dict(self._settings.labels)
        labels["__syslog_connection_ip_address"] = ip
        labels["__syslog_connection_hostname"] = self._reverse_lookup(ip)
        return labels

    def _reverse_lookup(self, ip: str) -> str:
        cached = self._hostnames.get(ip)
        if cached is not None:
            return cached
        try:
            name, aliases, _ = socket.gethostbyaddr(ip)
            # Go's resolver, which Promtail uses, returns fully qualified names ending with a dot.
            names = [n if n.endswith(".") else n + "." for n in dict.fromkeys([name, *aliases]) if n]
            hostname = ",".join(names)
        except OSError:
            hostname = ""
        if len(self._hostnames) >= _HOSTNAME_CACHE_SIZE:
            self._hostnames.clear()
        self._hostnames[ip] = hostname
        return hostname

    def _deliver(self, messages: list[bytes], connection_labels: dict[str, str]) -> None:
        entries = []
        for raw in messages:
            try:
                msg = parse_syslog(raw, self._format)
            except ValueError as exc:
                self._count_error(exc)
                continue
            if msg.message is None:
                with self._lock:
                    self.empty_messages_total += 1
                continue
            labels = dict(connection_labels)
            labels.update(msg.target_labels(self._settings.label_structured_data))
            ts = msg.timestamp_ns if self._settings.use_incoming_timestamp else None
            line = msg.message
            if self._settings.use_rfc5424_message and msg.format == "rfc5424":
                line = msg.to_rfc5424()
            entries.append(Entry(labels=labels, line=line, ts_ns=time.time_ns() if ts is None else ts))
        if not entries:
            return
        with self._lock:
            self.entries_total += len(entries)
        try:
            self._handler(entries)
        except Exception:
            log.exception("syslog: the entry handler failed; %d entries lost", len(entries))

    def _count_error(self, error: object) -> None:
        with self._lock:
            self.parse_errors_total += 1
        log.warning("syslog: error parsing syslog stream: %s", error)


# ---------------------------------------------------------------------------------------------------- sockets


def split_host_port(address: str) -> tuple[str, int]:
    """Split a Go-style listen address (`host:port`, `[::1]:port` or `:port`) into host and port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid listen_address {address!r}: expected host:port, such as 0.0.0.0:1514")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _bind(host: str, port: int, kind: int) -> socket.socket:
    if host in ("", "::") and socket.has_dualstack_ipv6():
        family, sockaddr = socket.AF_INET6, ("::", port)  # Go's ":port" listens on IPv4 and IPv6
    else:
        infos = socket.getaddrinfo(host or None, port, type=kind, flags=socket.AI_PASSIVE)
        family, sockaddr = infos[0][0], infos[0][4]
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6 and host in ("", "::"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_READ_BUFFER)
        sock.bind(sockaddr)
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _go_ip_text(ip: str) -> str:
    """Write an IP address as Go does: IPv4-mapped IPv6 as plain IPv4, without a zone."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _server_ssl_context(settings: SyslogSettings) -> ssl.SSLContext | None:
    if not (settings.tls_cert_file or settings.tls_key_file or settings.tls_ca_file):
        return None
    if not settings.tls_cert_file or not settings.tls_key_file:
        raise ValueError("syslog tls_config: certificate and key files are required (cert_file and key_file)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_ca_file:
        context.load_verify_locations(settings.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED  # clients must present a certificate signed by this CA
    return context
