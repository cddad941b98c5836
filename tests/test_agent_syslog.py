"""The agent's syslog source: RFC 5424/3164 parsing, RFC 6587 framing, and real TCP/UDP/TLS listeners."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglake.agent.entry import Entry
from loglake.agent.syslog import (
    SyslogMessage,
    SyslogSettings,
    SyslogTarget,
    _NewlineFramer,
    _OctetCountingFramer,
    parse_syslog,
    split_host_port,
)

PROMTAIL_MESSAGES = [
    '<165>1 2018-10-11T22:14:15.003Z host5 e - id1 [custom@32473 exkey="1"] An application event log entry...',
    '<165>1 2018-10-11T22:14:15.005Z host5 e - id2 [custom@32473 exkey="2"] An application event log entry...',
    '<165>1 2018-10-11T22:14:15.007Z host5 e - id3 [custom@32473 exkey="3"] An application event log entry...',
]


def octet(msg: str | bytes) -> bytes:
    data = msg.encode() if isinstance(msg, str) else msg
    return f"{len(data)} ".encode() + data


def newline(msg: str | bytes) -> bytes:
    return (msg.encode() if isinstance(msg, str) else msg) + b"\n"


class Sink:
    """Collects the entries a target hands over; waits for them without sleeping."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.calls = 0
        self._cond = threading.Condition()

    def __call__(self, entries: list[Entry]) -> None:
        with self._cond:
            self.entries.extend(entries)
            self.calls += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Entry]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.entries) >= n, timeout):
                raise AssertionError(f"expected {n} entries, got {len(self.entries)}: {self.entries}")
            return list(self.entries)


@pytest.fixture
def start_target() -> Iterator:
    targets: list[SyslogTarget] = []

    def start(handler=None, **kwargs: object) -> tuple[SyslogTarget, Sink]:
        sink = Sink()
        kwargs.setdefault("listen_address", "127.0.0.1:0")
        target = SyslogTarget(SyslogSettings(**kwargs), handler or sink)  # type: ignore[arg-type]
        target.start()
        targets.append(target)
        return target, sink

    yield start
    for target in targets:
        target.stop()


def send_tcp(address: tuple[str, int], data: bytes) -> None:
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(data)


def send_udp(address: tuple[str, int], *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for d in datagrams:
            sock.sendto(d, address)


def expected_hostname(ip: str) -> str:
    try:
        name, aliases, _ = socket.gethostbyaddr(ip)
    except OSError:
        return ""
    return ",".join(n if n.endswith(".") else n + "." for n in dict.fromkeys([name, *aliases]))


# ---------------------------------------------------------------------------------------------------- RFC 5424


def test_rfc5424_message_fields_and_target_labels() -> None:
    msg = parse_syslog(PROMTAIL_MESSAGES[0].encode())
    assert msg.format == "rfc5424"
    assert (msg.priority, msg.facility, msg.severity, msg.version) == (165, 20, 5, 1)
    assert msg.timestamp == datetime(2018, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    assert msg.timestamp_ns == 1539296055_003_000_000
    assert (msg.hostname, msg.app_name, msg.proc_id, msg.msg_id) == ("host5", "e", None, "id1")
    assert msg.structured_data == {"custom@32473": {"exkey": "1"}}
    assert msg.message == "An application event log entry..."
    assert msg.target_labels(structured_data=True) == {
        "__syslog_message_severity": "notice",
        "__syslog_message_facility": "local4",
        "__syslog_message_hostname": "host5",
        "__syslog_message_app_name": "e",
        "__syslog_message_msg_id": "id1",
        "__syslog_message_sd_custom_32473_exkey": "1",
    }
    assert "__syslog_message_sd_custom_32473_exkey" not in msg.target_labels(structured_data=False)


def test_rfc5424_nil_values_and_no_message() -> None:
    msg = parse_syslog(b"<0>1 - - - - - -")
    assert (msg.timestamp, msg.hostname, msg.app_name, msg.proc_id, msg.msg_id) == (None, None, None, None, None)
    assert msg.structured_data is None and msg.message is None
    assert msg.target_labels() == {"__syslog_message_severity": "emergency", "__syslog_message_facility": "kern"}


def test_rfc5424_structured_data_escapes_and_several_elements() -> None:
    msg = parse_syslog(b'<13>1 - h a p m [a@1 k="q\\"x\\]y\\\\z" other="\\n"][b] hi')
    assert msg.structured_data == {"a@1": {"k": 'q"x]y\\z', "other": "\\n"}, "b": {}}
    assert msg.message == "hi"


def test_rfc5424_timestamp_with_offset_and_microseconds() -> None:
    msg = parse_syslog(b"<13>1 2003-08-24T05:14:15.000003-07:00 h a p m - x")
    assert msg.timestamp == datetime(2003, 8, 24, 5, 14, 15, 3, tzinfo=timezone(timedelta(hours=-7)))
    assert msg.timestamp_ns == int(datetime(2003, 8, 24, 12, 14, 15, tzinfo=UTC).timestamp()) * 10**9 + 3000


def test_rfc5424_bom_is_dropped_and_invalid_utf8_replaced() -> None:
    assert parse_syslog(b"<13>1 - - - - - - \xef\xbb\xbfhello").message == "hello"
    assert (
        parse_syslog(b"<165>1 - - - - - - Some non utf8 \xf8\xf7 chars").message == "Some non utf8 \ufffd\ufffd chars"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"xxx",
        b"<192>1 - - - - - - too high a priority",
        b"<01>1 - - - - - - leading zero",
        b"<165>1    -   An application event log entry...",  # Promtail's malformed examples
        b"<165>1 2018-10-11T22:14:15.007Z host5 e -   An application event log entry...",
        b"<13>1 2018-02-30T00:00:00Z h a p m - no such day",
        b"<13>1 2018-10-11T22:14:15.1234567Z h a p m - seven fraction digits",
        b"<13>1 2018-10-11 h a p m - not RFC 3339",
        b"<13>1 - h a p m [a k=1] unquoted value",
        b'<13>1 - h a p m [a k="v"][a j="w"] duplicate element',
        b'<13>1 - h a p m [a k="v]"] unescaped bracket',
        b'<13>1 - h a p m [a k="v"]x no space before the message',
        b"<13>1 - h a p m",
        b"<13>1 - h " + b"a" * 49 + b" p m - app-name too long",
    ],
)
def test_rfc5424_invalid_messages_raise(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_syslog(data, "rfc5424")


def test_rfc5424_written_back_as_promtail_writes_it() -> None:
    text = '<13>1 2003-08-24T05:14:15.120-07:00 h a 42 m [z b="2" a="1"][y k="q\\"\\]"] the message'
    assert parse_syslog(text.encode()).to_rfc5424() == (
        '<13>1 2003-08-24T05:14:15.12-07:00 h a 42 m [y k="q\\"\\]"][z a="1" b="2"] the message'
    )
    for original in PROMTAIL_MESSAGES:
        assert parse_syslog(original.encode()).to_rfc5424() == original


_graph = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20).filter(
    lambda s: s != "-"
)
_sd_name = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters='=]"'), min_size=1, max_size=32
)
_messages = st.builds(
    SyslogMessage,
    format=st.just("rfc5424"),
    priority=st.integers(0, 191),
    version=st.integers(1, 999),
    timestamp=st.none()
    | st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
    ),
    hostname=st.none() | _graph,
    app_name=st.none() | _graph,
    proc_id=st.none() | _graph,
    msg_id=st.none() | _graph,
    structured_data=st.none()
    | st.dictionaries(_sd_name, st.dictionaries(_sd_name, st.text(max_size=20), max_size=3), min_size=1, max_size=3),
    message=st.none() | st.text(min_size=1).filter(lambda s: not s.startswith("\ufeff")),
)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_rfc5424_text_parses_back_to_the_same_message(msg: SyslogMessage) -> None:
    assert parse_syslog(msg.to_rfc5424().encode()) == msg


# ---------------------------------------------------------------------------------------------------- RFC 3164

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)


def test_rfc3164_hostname_tag_and_pid() -> None:
    msg = parse_syslog(b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed on /dev/pts/8", now=NOW)
    assert msg.format == "rfc3164"
    assert (msg.facility, msg.severity) == (4, 2)
    assert msg.timestamp == datetime(2023, 10, 11, 22, 14, 15, tzinfo=UTC)  # October is still to come in June
    assert (msg.hostname, msg.app_name, msg.proc_id) == ("mymachine", "su", "230")
    assert msg.message == "'su root' failed on /dev/pts/8"
    assert msg.target_labels() == {
        "__syslog_message_severity": "critical",
        "__syslog_message_facility": "auth",
        "__syslog_message_hostname": "mymachine",
        "__syslog_message_app_name": "su",
        "__syslog_message_proc_id": "230",
    }


@pytest.mark.parametrize(
    ("data", "hostname", "app_name", "message"),
    [
        (b"<13>Jun  5 08:00:00 sshd: accepted", None, "sshd", "accepted"),
        (b"<13>Jun  5 08:00:00 host plain text", "host", None, "plain text"),
        (b"<13>Jun  5 08:00:00 word", None, None, "word"),
        (b"<13>Jun 05 08:00:00   10.0.0.1  cron[]: x y", "10.0.0.1", "cron", "x y"),
        (b"<13>2024-06-05T08:00:00.5+02:00 host app: rfc3339 stamp", "host", "app", "rfc3339 stamp"),
    ],
)
def test_rfc3164_optional_parts(data: bytes, hostname: str | None, app_name: str | None, message: str) -> None:
    msg = parse_syslog(data, now=NOW)
    assert (msg.hostname, msg.app_name, msg.message) == (hostname, app_name, message)
    assert msg.timestamp is not None and msg.timestamp.month == 6 and msg.timestamp.day == 5


def test_rfc3164_year_is_the_latest_not_in_the_future() -> None:
    new_year = datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert parse_syslog(b"<13>Dec 31 23:59:59 h a: m", now=new_year).timestamp == datetime(
        2024, 12, 31, 23, 59, 59, tzinfo=UTC
    )
    assert parse_syslog(b"<13>Jan  1 00:00:01 h a: m", now=new_year).timestamp == datetime(
        2025, 1, 1, 0, 0, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "data", [b"<13>Foo 11 22:14:15 h a: m", b"<13>Oct 11 25:14:15 h a: m", b"<13>Oct 11 22:14:15", b"<13>hello"]
)
def test_rfc3164_invalid_messages_raise(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_syslog(data, now=NOW)


def test_forced_formats() -> None:
    with pytest.raises(ValueError):
        parse_syslog(b"<13>Oct 11 22:14:15 h a: m", "rfc5424")
    with pytest.raises(ValueError, match="timestamp"):
        parse_syslog(b"<13>1 - - - - - - m", "rfc3164", now=NOW)
    with pytest.raises(ValueError, match="syslog_format"):
        parse_syslog(b"<13>1 - - - - - - m", "rfc9999")


# ---------------------------------------------------------------------------------------------------- framing


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b"<1>" + b), min_size=1, max_size=8),
    st.lists(st.integers(1, 30), min_size=1, max_size=40),
    st.booleans(),
)
def test_octet_counting_framer_ignores_chunk_boundaries(messages: list[bytes], cuts: list[int], lf: bool) -> None:
    stream = b"".join(octet(m) + (b"\n" if lf else b"") for m in messages)
    framer = _OctetCountingFramer(1000)
    out: list[bytes] = []
    pos = 0
    for cut in cuts * (len(stream) // len(cuts) + 1):
        out += framer.feed(stream[pos : pos + cut])
        pos += cut
        if pos >= len(stream):
            break
    assert out + framer.finish() == messages
    assert framer.error is None


def test_octet_counting_framer_errors() -> None:
    framer = _OctetCountingFramer(10)
    assert framer.feed(b"3 <1>11 <234567890") == [b"<1>"]
    assert framer.error is not None and "exceeds max_message_length (10)" in framer.error
    framer = _OctetCountingFramer(100)
    assert framer.feed(b"3 abc") == [] and framer.error is not None
    framer = _OctetCountingFramer(100)
    assert framer.feed(b"07 <1>abcd") == [] and framer.error is not None


def test_newline_framer_joins_continuation_lines() -> None:
    framer = _NewlineFramer(1000)
    assert framer.feed(b"<1>first\r\n  at line 2\n\n<2>second\n") == [b"<1>first\n  at line 2"]
    assert framer.pending
    assert framer.feed(b"<3>thi") == [b"<2>second"]
    assert framer.finish() == [b"<3>thi"]


def test_newline_framer_cuts_long_messages() -> None:
    framer = _NewlineFramer(10)
    assert framer.feed(b"<1>" + b"x" * 30 + b"\nmore\n<2>y\n") == [b"<1>xxxxxxx"]
    assert framer.flush() == [b"<2>y"]


def test_split_host_port() -> None:
    assert split_host_port("0.0.0.0:1514") == ("0.0.0.0", 1514)
    assert split_host_port(":514") == ("", 514)
    assert split_host_port("[::1]:6514") == ("::1", 6514)
    with pytest.raises(ValueError, match="host:port"):
        split_host_port("localhost")


# ---------------------------------------------------------------------------------------------------- listeners


@pytest.mark.parametrize("frame", [octet, newline], ids=["octet-counting", "newline"])
def test_tcp_delivers_messages_with_labels(start_target, frame) -> None:
    target, sink = start_target(labels={"job": "syslog"}, label_structured_data=True)
    before = time.time_ns()
    send_tcp(target.address, b"".join(frame(m) for m in PROMTAIL_MESSAGES))
    entries = sink.wait_for(3)
    assert [e.labels["__syslog_message_msg_id"] for e in entries] == ["id1", "id2", "id3"]
    assert entries[0].labels == {
        "job": "syslog",
        "__syslog_connection_ip_address": "127.0.0.1",
        "__syslog_connection_hostname": expected_hostname("127.0.0.1"),
        "__syslog_message_severity": "notice",
        "__syslog_message_facility": "local4",
        "__syslog_message_hostname": "host5",
        "__syslog_message_app_name": "e",
        "__syslog_message_msg_id": "id1",
        "__syslog_message_sd_custom_32473_exkey": "1",
    }
    assert all(e.line == "An application event log entry..." for e in entries)
    assert all(before <= e.ts_ns <= time.time_ns() for e in entries)  # not the 2018 timestamps
    assert target.entries_total == 3 and target.parse_errors_total == 0


def test_tcp_rfc3164_and_rfc5424_on_one_connection(start_target) -> None:
    target, sink = start_target()
    send_tcp(
        target.address, newline("<34>Oct 11 22:14:15 mymachine su: 'su root' failed") + newline("<13>1 - - - - - - x")
    )
    first, second = sink.wait_for(2)
    assert first.line == "'su root' failed"
    assert first.labels["__syslog_message_app_name"] == "su"
    assert second.line == "x"


def test_newline_message_is_delivered_while_the_connection_stays_open(start_target) -> None:
    target, sink = start_target()
    with socket.create_connection(target.address, timeout=5) as conn:
        conn.sendall(newline(PROMTAIL_MESSAGES[0]))
        assert sink.wait_for(1)[0].labels["__syslog_message_msg_id"] == "id1"
        conn.sendall(newline(PROMTAIL_MESSAGES[1]) + b"  continued\n")
        assert sink.wait_for(2)[1].line == "An application event log entry...\n  continued"


def test_use_incoming_timestamp_and_rfc5424_message(start_target) -> None:
    target, sink = start_target(use_incoming_timestamp=True, use_rfc5424_message=True)
    send_tcp(target.address, b"".join(octet(m) for m in PROMTAIL_MESSAGES))
    entries = sink.wait_for(3)
    assert [e.line for e in entries] == PROMTAIL_MESSAGES
    assert [e.ts_ns for e in entries] == [1539296055_003_000_000, 1539296055_005_000_000, 1539296055_007_000_000]


def test_rfc3164_line_is_the_message_even_with_use_rfc5424_message(start_target) -> None:
    target, sink = start_target(use_rfc5424_message=True)
    send_tcp(target.address, newline("<13>Oct 11 22:14:15 host app: plain"))
    assert sink.wait_for(1)[0].line == "plain"


def test_empty_and_unparsable_messages_are_dropped(start_target) -> None:
    target, sink = start_target()
    send_tcp(target.address, newline("<13>1 - - - - - -") + newline("<13>garbage") + newline("<13>1 - - - - - - ok"))
    assert [e.line for e in sink.wait_for(1)] == ["ok"]
    target.stop()
    assert (target.empty_messages_total, target.parse_errors_total, len(sink.entries)) == (1, 1, 1)


def test_octet_frame_over_max_length_closes_the_connection(start_target) -> None:
    target, sink = start_target(max_message_length=150)
    big = "<13>1 - - - - - - " + "x" * 200
    with socket.create_connection(target.address, timeout=5) as conn:
        conn.sendall(octet(PROMTAIL_MESSAGES[0]) + octet(big) + octet(PROMTAIL_MESSAGES[1]))
        assert conn.recv(1) == b""  # closed by the server
    target.stop()
    assert [e.labels["__syslog_message_msg_id"] for e in sink.entries] == ["id1"]
    assert target.parse_errors_total == 1


def test_newline_message_over_max_length_is_cut(start_target) -> None:
    target, sink = start_target(max_message_length=64)
    send_tcp(target.address, newline("<13>1 - - - - - - " + "x" * 200) + newline("<13>1 - - - - - - next"))
    first, second = sink.wait_for(2)
    assert first.line == "x" * (64 - len("<13>1 - - - - - - "))
    assert second.line == "next"


def test_invalid_framing_closes_the_connection(start_target) -> None:
    target, sink = start_target()
    with socket.create_connection(target.address, timeout=5) as conn:
        conn.sendall(b"xxx")
        assert conn.recv(1) == b""
    assert target.parse_errors_total == 1 and sink.entries == []


def test_idle_connection_is_closed(start_target) -> None:
    target, _ = start_target(idle_timeout=0.2)
    with socket.create_connection(target.address, timeout=5) as conn:
        started = time.monotonic()
        assert conn.recv(1) == b""
        assert 0.15 < time.monotonic() - started < 4


def test_time_blocked_in_the_handler_is_not_idle_time(start_target) -> None:
    sink = Sink()
    returned = threading.Event()

    def slow(entries: list[Entry]) -> None:
        if not sink.entries:
            time.sleep(0.5)  # a downstream slower than the idle timeout pushes back on the sender
        sink(entries)
        returned.set()

    target, _ = start_target(handler=slow, idle_timeout=0.3)
    with socket.create_connection(target.address, timeout=5) as conn:
        conn.sendall(octet(PROMTAIL_MESSAGES[0]))
        assert returned.wait(5)
        time.sleep(0.1)  # the sender pauses, for less than the idle timeout
        conn.sendall(octet(PROMTAIL_MESSAGES[1]))
        assert [e.labels["__syslog_message_msg_id"] for e in sink.wait_for(2)] == ["id1", "id2"]


def test_stop_delivers_what_open_connections_sent(start_target) -> None:
    target, sink = start_target()
    with socket.create_connection(target.address, timeout=5) as conn:
        conn.sendall(newline("<13>1 - - - - - - first"))
        sink.wait_for(1)  # the connection is being read
        conn.sendall(b"<13>1 - - - - - - no newline yet")
        target.stop()
    assert [e.line for e in sink.entries] == ["first", "no newline yet"]


@pytest.mark.parametrize("frame", [octet, newline, lambda m: m.encode()], ids=["octet", "newline", "bare"])
def test_udp_datagrams(start_target, frame) -> None:
    target, sink = start_target(listen_protocol="udp", label_structured_data=True, labels={"job": "u"})
    send_udp(target.address, *(frame(m) for m in PROMTAIL_MESSAGES))
    entries = sink.wait_for(3)
    assert sorted(e.labels["__syslog_message_msg_id"] for e in entries) == ["id1", "id2", "id3"]
    assert entries[0].labels["job"] == "u"
    assert entries[0].labels["__syslog_connection_ip_address"] == "127.0.0.1"
    assert entries[0].labels["__syslog_message_sd_custom_32473_exkey"] in {"1", "2", "3"}


def test_udp_datagram_with_several_messages_and_rfc3164(start_target) -> None:
    target, sink = start_target(listen_protocol="udp")
    send_udp(target.address, newline("<13>Jan  2 03:04:05 h a: one") + newline("<13>Jan  2 03:04:05 h a: two"))
    assert [e.line for e in sink.wait_for(2)] == ["one", "two"]


def test_udp_datagram_over_max_length_is_cut(start_target) -> None:
    target, sink = start_target(listen_protocol="udp", max_message_length=40)
    send_udp(target.address, ("<13>1 - - - - - - " + "y" * 100).encode())
    assert sink.wait_for(1)[0].line == "y" * (40 - len("<13>1 - - - - - - "))


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="listen_protocol"):
        SyslogTarget(SyslogSettings(listen_address="127.0.0.1:0", listen_protocol="sctp"), Sink())
    with pytest.raises(ValueError, match="certificate and key"):
        SyslogTarget(SyslogSettings(listen_address="127.0.0.1:0", tls_key_file="k.pem"), Sink())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls(start_target, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    target, sink = start_target(tls_cert_file=str(cert), tls_key_file=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    with (
        socket.create_connection(target.address, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(b"".join(octet(m) for m in PROMTAIL_MESSAGES))
    entries = sink.wait_for(3)
    assert [e.labels["__syslog_message_msg_id"] for e in entries] == ["id1", "id2", "id3"]
