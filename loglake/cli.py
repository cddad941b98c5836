"""The `loglake` command line: the server (`serve`), configuration checks, and a logcli-like client."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, tzinfo
from typing import Any

import yaml

from loglake import __version__
from loglake.client.loki import DEFAULT_ADDR, LokiClient, LokiError
from loglake.client.output import OUTPUT_MODES, LogPrinter, format_label_set
from loglake.client.push import LinePusher, push_lines
from loglake.client.query import BatchTooSmallError, fetch_pages
from loglake.client.times import TIMESTAMP_FORMATS, local_zone, now_ns, parse_time
from loglake.config import ConfigError, config_to_dict, default_config_yaml, load_config, parse_duration

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """Arguments that parse but cannot be used together; reported like argparse's own errors (exit 2)."""


# ---------------------------------------------------------------------------------------------------------------
# Argument types: each raises ArgumentTypeError, which argparse reports with the usage line (exit 2).


def _duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time_arg(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bool_arg(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes"):
        return True
    if value in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _count_arg(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of {minimum} or more, got {text!r}")
        return value

    return parse


def _zone_arg(text: str) -> tzinfo:
    if text.lower() == "utc":
        return UTC
    if text.lower() == "local":
        return local_zone()
    raise argparse.ArgumentTypeError(f"expected Local or UTC, got {text!r}")


# ---------------------------------------------------------------------------------------------------------------
# The parser.


def _client_options() -> argparse.ArgumentParser:
    """Options every client command takes: where the server is and who we are (logcli's flags and variables)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("server")
    g.add_argument(
        "--addr",
        default=os.environ.get("LOKI_ADDR") or DEFAULT_ADDR,
        help=f"server address (env LOKI_ADDR; default {DEFAULT_ADDR})",
    )
    g.add_argument(
        "--org-id", default=os.environ.get("LOKI_ORG_ID"), help="tenant, sent as X-Scope-OrgID (env LOKI_ORG_ID)"
    )
    g.add_argument("--username", default=os.environ.get("LOKI_USERNAME"), help="basic auth user (env LOKI_USERNAME)")
    g.add_argument(
        "--password", default=os.environ.get("LOKI_PASSWORD"), help="basic auth password (env LOKI_PASSWORD)"
    )
    g.add_argument(
        "--bearer-token", default=os.environ.get("LOKI_BEARER_TOKEN"), help="bearer token (env LOKI_BEARER_TOKEN)"
    )
    g.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each answer (default 300)")
    g.add_argument("-q", "--quiet", action="store_true", help="do not print request URLs and common labels")
    return p


def _range_options(what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("time range")
    g.add_argument("--since", type=_duration_arg, default=parse_duration("1h"), help="look back this long (default 1h)")
    g.add_argument("--from", dest="start", type=_time_arg, help=f"start looking for {what} at this time (inclusive)")
    g.add_argument("--to", dest="end", type=_time_arg, help=f"stop looking for {what} at this time (exclusive)")
    return p


def _output_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", choices=OUTPUT_MODES, default="default", help="output mode (default: default)")
    g.add_argument("-z", "--timezone", type=_zone_arg, default="Local", help="Local or UTC (default Local)")
    g.add_argument("--output-timestamp-format", choices=TIMESTAMP_FORMATS, default="rfc3339")
    g.add_argument("--no-labels", action="store_true", help="do not print labels")
    g.add_argument("--include-common-labels", action="store_true", help="print labels every stream shares too")
    g.add_argument("--include-label", action="append", default=[], metavar="NAME", help="print only these labels")
    g.add_argument("--exclude-label", action="append", default=[], metavar="NAME", help="do not print these labels")
    g.add_argument("--labels-length", type=_count_arg(0), default=0, help="pad labels to this width")
    return p


def _config_file_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config.expand-env",
        "-config.expand-env",
        dest="expand_env",
        type=_bool_arg,
        nargs="?",
        const=True,
        default=False,
        help="expand ${VAR} and ${VAR:-default} in the file from the environment",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the `loglake` command line."""
    parser = argparse.ArgumentParser(prog="loglake", description="Centralized logging that speaks Loki's API.")
    parser.add_argument("--version", action="version", version=f"loglake {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    client, since_logs = _client_options(), _range_options("logs")

    p = sub.add_parser("serve", help="run the server", description="Run the server: every role in one process.")
    p.add_argument("--config", "--config.file", "-config.file", dest="config", metavar="FILE", help="YAML file")
    _config_file_options(p)
    p.add_argument("--server.http-listen-address", "-server.http-listen-address", dest="listen_address")
    p.add_argument("--server.http-listen-port", "-server.http-listen-port", dest="listen_port", type=_count_arg(0))
    p.add_argument("--common.path-prefix", "-common.path-prefix", dest="path_prefix", metavar="DIR")
    p.add_argument("--log.level", "-log.level", dest="log_level", choices=("debug", "info", "warn", "error"))
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "agent",
        help="run the collector (a Promtail drop-in)",
        description="Tail files and other sources and ship them to a Loki-compatible server, as Promtail does.",
    )
    p.add_argument("--config", "--config.file", "-config.file", dest="config", metavar="FILE", required=True)
    _config_file_options(p)
    p.add_argument("--log.level", "-log.level", dest="log_level", choices=("debug", "info", "warn", "error"))
    p.set_defaults(func=_cmd_agent)

    p = sub.add_parser("config", help="print the default configuration or check a file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--defaults", action="store_true", help="print the default configuration as YAML")
    g.add_argument("--check", metavar="FILE", help="check a configuration file; exit 1 if it is invalid")
    p.add_argument("--print", dest="print_config", action="store_true", help="with --check: print the result")
    _config_file_options(p)
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser(
        "query",
        parents=[client, since_logs, _output_options()],
        help="run a LogQL query over a time range",
        description="Run a LogQL query over a time range; log queries are fetched in batches up to --limit.",
    )
    p.add_argument("query", help='LogQL, e.g. \'{app="api"} |= "error"\' or \'rate({app="api"}[5m])\'')
    p.add_argument("--limit", type=_count_arg(0), default=30, help="most entries to print; 0 for all (default 30)")
    p.add_argument("--batch", type=_count_arg(1), default=1000, help="entries per request (default 1000)")
    p.add_argument("--forward", action="store_true", help="oldest entries first")
    p.add_argument("--step", help="step of metric queries, e.g. 1m (default: chosen by the server)")
    p.add_argument("--interval", help="return log entries at this interval only (experimental in Loki)")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser(
        "instant-query", parents=[client, _output_options()], help="run a LogQL metric query at one instant"
    )
    p.add_argument("query", help="LogQL metric query, e.g. 'count_over_time({app=\"api\"}[5m])'")
    p.add_argument("--now", type=_time_arg, help="the instant (default: now)")
    p.add_argument("--limit", type=_count_arg(0), default=30, help="most series (default 30)")
    p.add_argument("--forward", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_instant_query)

    p = sub.add_parser("labels", parents=[client, _range_options("labels")], help="list label names or values")
    p.add_argument("label", nargs="?", help="list the values of this label (default: list label names)")
    p.add_argument("--query", help="only labels of streams matching this selector")
    p.set_defaults(func=_cmd_labels)

    p = sub.add_parser("series", parents=[client, _range_options("series")], help="list the streams of a selector")
    p.add_argument("matcher", nargs="?", help="stream selector, e.g. '{app=\"api\"}' (default: every stream)")
    p.set_defaults(func=_cmd_series)

    p = sub.add_parser(
        "push",
        parents=[client],
        help="push lines from standard input",
        description="Push each line of standard input to one stream, stamped with the time it was read.",
    )
    p.add_argument("--labels", required=True, help='the stream\'s labels, e.g. \'{app="api", env="dev"}\'')
    p.add_argument("--batch-size", type=_count_arg(1), default=1000, help="lines per request (default 1000)")
    p.add_argument(
        "--batch-wait", type=_duration_arg, default=parse_duration("1s"), help="longest a line waits (default 1s)"
    )
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser(
        "tail",
        parents=[client, _output_options()],
        help="follow new log lines live",
        description="Print the last lines of a log query, then every new line as it arrives (logcli query --tail).",
    )
    p.add_argument("query", help='LogQL log query, e.g. \'{app="api"} |= "error"\'')
    p.add_argument("--limit", type=_count_arg(1), default=30, help="most past lines to print first (default 30)")
    p.add_argument(
        "--since", type=_duration_arg, default=parse_duration("1h"), help="look back this long for them (default 1h)"
    )
    p.add_argument("--from", dest="start", type=_time_arg, help="look back to this time instead")
    p.add_argument(
        "--delay-for", type=_count_arg(0), default=0, help="seconds to hold lines so late ones come in order (max 5)"
    )
    p.set_defaults(func=_cmd_tail)
    _add_rules_parser(sub, client)
    return parser


def _add_rules_parser(sub: Any, client: argparse.ArgumentParser) -> None:
    """Add `loglake rules check|list|get|set|delete`."""
    p = sub.add_parser(
        "rules",
        help="check rule files, or manage a server's alerting and recording rules",
        description="Check Loki/Prometheus rule files, or list, get, set and delete rule groups through the "
        "rules API of a server (Loki's /loki/api/v1/rules).",
    )
    rules = p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    c = rules.add_parser(
        "check",
        help="check rule files: schema, LogQL and templates",
        description="Check rule files (`groups:` of alerting and recording rules); exit 1 naming every problem.",
    )
    c.add_argument("files", nargs="+", metavar="FILE", help="rule file; - reads standard input")
    c.set_defaults(func=_cmd_rules_check)
    c = rules.add_parser("list", parents=[client], help="list the rule groups of every namespace (or one)")
    c.add_argument("namespace", nargs="?", help="only this namespace")
    c.set_defaults(func=_cmd_rules_list)
    c = rules.add_parser("get", parents=[client], help="print a namespace's rule groups, or one group, as YAML")
    c.add_argument("namespace")
    c.add_argument("group", nargs="?", help="only this group")
    c.set_defaults(func=_cmd_rules_get)
    c = rules.add_parser(
        "set",
        parents=[client],
        help="create or replace rule groups from a file",
        description="Store every group of FILE (a rule file with `groups:`, or one group) in NAMESPACE, replacing "
        "groups of the same name. The file is checked first; nothing is sent if it has a problem.",
    )
    c.add_argument("namespace")
    c.add_argument("file", metavar="FILE", help="rule file; - reads standard input")
    c.set_defaults(func=_cmd_rules_set)
    c = rules.add_parser("delete", parents=[client], help="delete a rule group, or a whole namespace")
    c.add_argument("namespace")
    c.add_argument("group", nargs="?", help="only this group (default: every group of the namespace)")
    c.set_defaults(func=_cmd_rules_delete)


# ---------------------------------------------------------------------------------------------------------------
# Commands.


@contextlib.contextmanager
def _config_warnings_to_stderr() -> Iterator[None]:
    """Show the config loader's warnings on stderr even before the server sets up logging."""
    logger = logging.getLogger("loglake.config")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


def _cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, Any]] = {}
    for block, key, value in (
        ("server", "http_listen_address", args.listen_address),
        ("server", "http_listen_port", args.listen_port),
        ("server", "log_level", args.log_level),
        ("common", "path_prefix", args.path_prefix),
    ):
        if value is not None:
            overrides.setdefault(block, {})[key] = value
    with _config_warnings_to_stderr():
        config = load_config(args.config, overrides=overrides, expand_env=args.expand_env)
    from loglake.server import serve  # the server's dependencies load only when serving

    serve(config)
    return EXIT_OK


def _cmd_agent(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from loglake.agent.config import ConfigError as AgentConfigError
    from loglake.agent.config import load_config as load_agent_config
    from loglake.agent.relabel import RelabelError
    from loglake.agent.runner import Agent
    from loglake.agent.stages import StageConfigError

    level = {"warn": "WARNING"}.get(args.log_level or "info", (args.log_level or "info").upper())
    logging.basicConfig(level=level, format="level=%(levelname)s ts=%(asctime)s caller=%(name)s msg=%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per push
    try:
        config = load_agent_config(args.config, expand_env=args.expand_env)
        agent = Agent(config)
    except (AgentConfigError, RelabelError, StageConfigError, OSError, ValueError) as exc:
        print(f"loglake agent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    while not stop.wait(1.0):
        pass
    agent.stop()
    return EXIT_OK


def _cmd_config(args: argparse.Namespace) -> int:
    if args.defaults:
        sys.stdout.write(default_config_yaml())
        return EXIT_OK
    with _config_warnings_to_stderr():
        config = load_config(args.check, expand_env=args.expand_env)
    if args.print_config:
        sys.stdout.write(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    else:
        print(f"{args.check}: valid")
    return EXIT_OK


def _client(args: argparse.Namespace) -> LokiClient:
    def show_url(url: str) -> None:
        print(url, file=sys.stderr)

    return LokiClient(
        args.addr,
        org_id=args.org_id,
        username=args.username,
        password=args.password,
        bearer_token=args.bearer_token,
        timeout=args.timeout,
        on_request=None if args.quiet else show_url,
    )


def _time_range(args: argparse.Namespace) -> tuple[int, int]:
    end = args.end if args.end is not None else now_ns()
    start = args.start if args.start is not None else end - args.since
    if start > end:
        raise UsageError("--from must not be after --to")
    return start, end


def _printer(args: argparse.Namespace) -> LogPrinter:
    return LogPrinter(
        sys.stdout,
        mode=args.output,
        zone=args.timezone,
        timestamp_format=args.output_timestamp_format,
        no_labels=args.no_labels,
        include_common_labels=args.include_common_labels,
        include_labels=args.include_label,
        exclude_labels=args.exclude_label,
        fixed_labels_len=args.labels_length,
        notes=None if args.quiet else sys.stderr,
    )


def _cmd_query(args: argparse.Namespace) -> int:
    start, end = _time_range(args)
    printer = _printer(args)
    with _client(args) as client:
        pages = fetch_pages(
            client,
            args.query,
            start=start,
            end=end,
            limit=args.limit,
            batch_size=args.batch,
            forward=args.forward,
            step=args.step,
            interval=args.interval,
        )
        for page in pages:
            if page.result_type == "streams":
                printer.print_entries(page.entries)
            else:
                printer.print_metric(page.data)
    return EXIT_OK


def _cmd_instant_query(args: argparse.Namespace) -> int:
    printer = _printer(args)
    with _client(args) as client:
        data = client.query(
            args.query, time=args.now, limit=args.limit, direction="forward" if args.forward else "backward"
        )
    if data.get("resultType") == "streams":
        from loglake.client.query import stream_entries

        printer.print_entries(stream_entries(data.get("result") or [], forward=args.forward))
    else:
        printer.print_metric(data)
    return EXIT_OK


def _cmd_labels(args: argparse.Namespace) -> int:
    start, end = _time_range(args)
    with _client(args) as client:
        if args.label:
            values = client.label_values(args.label, start=start, end=end, query=args.query)
        else:
            values = client.labels(start=start, end=end, query=args.query)
    for value in values:
        print(value)
    return EXIT_OK


def _cmd_series(args: argparse.Namespace) -> int:
    start, end = _time_range(args)
    with _client(args) as client:
        series = client.series([args.matcher] if args.matcher else [], start=start, end=end)
    for labels in series:
        print(format_label_set(labels))
    return EXIT_OK


def _parse_stream_labels(text: str) -> dict[str, str]:
    from loglake.model import LABEL_NAME_RE, LabelTextError, parse_labels

    try:
        pairs = parse_labels(text)
    except LabelTextError as exc:
        raise UsageError(f"--labels {text!r} is not a label set like '{{app=\"api\"}}': {exc}") from None
    for name, _ in pairs:
        if not LABEL_NAME_RE.match(name):
            raise UsageError(f"--labels: {name!r} is not a label name (letters, digits and _, not first a digit)")
    if not pairs:
        raise UsageError("--labels needs at least one label, e.g. '{app=\"api\"}'")
    return dict(pairs)


def _cmd_push(args: argparse.Namespace) -> int:
    labels = _parse_stream_labels(args.labels)
    args.quiet = True  # push prints only what went wrong
    with _client(args) as client:
        pusher = LinePusher(client, labels, batch_size=args.batch_size)
        lines = (raw.decode("utf-8", errors="replace") for raw in sys.stdin.buffer)
        try:
            push_lines(pusher, lines, max_wait=args.batch_wait / 1e9)
        except LokiError as exc:
            raise LokiError(exc.status, f"push failed after {pusher.pushed} lines: {exc.message}", exc.url) from None
    return EXIT_OK


def _cmd_tail(args: argparse.Namespace) -> int:
    import signal

    from loglake.client.tail import auth_headers, tail

    start = args.start if args.start is not None else now_ns() - args.since
    args.include_common_labels = True  # each message stands alone: print every label, as logcli's tail does
    printer = _printer(args)
    headers = auth_headers(args.org_id, args.username, args.password, args.bearer_token)
    # SIGTERM ends the tail like Ctrl+C: the websocket is closed normally and the exit status is 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    messages = tail(
        args.addr,
        args.query,
        limit=args.limit,
        start=start,
        delay_for=args.delay_for,
        headers=headers,
        timeout=min(args.timeout, 30.0),
        on_connect=None if args.quiet else lambda url: print(url, file=sys.stderr, flush=True),
    )
    try:
        for message in messages:
            printer.print_entries(message.entries)
            sys.stdout.flush()
            if message.dropped:
                print("Server dropped following entries due to slow client", file=sys.stderr)
                for ts, labels in message.dropped:
                    print(ts, format_label_set(labels), file=sys.stderr)
    except KeyboardInterrupt:
        messages.close()
    return EXIT_OK


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _cmd_rules_check(args: argparse.Namespace) -> int:
    from loglake.ruler.rules import RuleError, parse_rule_file

    failed = False
    for path in args.files:
        name = "<stdin>" if path == "-" else path
        try:
            groups = parse_rule_file(_read_text(path), source=name)
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            failed = True
        except UnicodeDecodeError:
            print(f"{name}: not UTF-8 text", file=sys.stderr)
            failed = True
        except RuleError as exc:
            print(str(exc), file=sys.stderr)
            failed = True
        else:
            n_rules = sum(len(g.rules) for g in groups)
            print(f"{name}: {_count(len(groups), 'group')}, {_count(n_rules, 'rule')} OK")
    return EXIT_FAILED if failed else EXIT_OK


def _rules_client(args: argparse.Namespace) -> Any:
    from loglake.client.rules import RulesClient

    return RulesClient(
        args.addr,
        org_id=args.org_id,
        username=args.username,
        password=args.password,
        bearer_token=args.bearer_token,
        timeout=args.timeout,
        on_request=None if args.quiet else lambda url: print(url, file=sys.stderr),
    )


def _dump_yaml(data: Any) -> None:
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 16))


def _cmd_rules_list(args: argparse.Namespace) -> int:
    with _rules_client(args) as client:
        namespaces = client.list_rules(args.namespace)
    rows = [(ns, str(g.get("name", "")), str(len(g.get("rules") or []))) for ns, gs in namespaces.items() for g in gs]
    if not rows:
        print("no rule groups found", file=sys.stderr)
        return EXIT_OK
    header = ("NAMESPACE", "GROUP", "RULES")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
    for ns, group, count in [header, *sorted(rows)]:
        print(f"{ns.ljust(widths[0])}  {group.ljust(widths[1])}  {count}")
    return EXIT_OK


def _cmd_rules_get(args: argparse.Namespace) -> int:
    with _rules_client(args) as client:
        if args.group is not None:
            _dump_yaml(client.get_group(args.namespace, args.group))
        else:
            namespaces = client.list_rules(args.namespace)
            if not namespaces:
                raise LokiError(404, f"namespace {args.namespace!r} has no rule groups")
            _dump_yaml(namespaces)
    return EXIT_OK


def _cmd_rules_set(args: argparse.Namespace) -> int:
    from loglake.ruler.rules import RuleError, parse_rule_file, parse_rule_group

    name = "<stdin>" if args.file == "-" else args.file
    try:
        text = _read_text(args.file)
        raw = yaml.safe_load(text)
        if isinstance(raw, dict) and "groups" in raw:
            parse_rule_file(text, source=name)
            bodies = [yaml.safe_dump(g, sort_keys=False, allow_unicode=True) for g in raw["groups"] or []]
        else:
            parse_rule_group(text)
            bodies = [text]
    except OSError as exc:
        raise UsageError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except (RuleError, yaml.YAMLError) as exc:
        message = str(exc) if isinstance(exc, RuleError) else f"not valid YAML: {exc}"
        print(f"loglake rules set: {name}: {message}" if not message.startswith(name) else message, file=sys.stderr)
        return EXIT_FAILED
    with _rules_client(args) as client:
        for body in bodies:
            group = (yaml.safe_load(body) or {}).get("name", "")
            client.set_group(args.namespace, body)
            print(f"set rule group {group!r} in namespace {args.namespace!r}")
    return EXIT_OK


def _cmd_rules_delete(args: argparse.Namespace) -> int:
    with _rules_client(args) as client:
        if args.group is not None:
            client.delete_group(args.namespace, args.group)
            print(f"deleted rule group {args.group!r} from namespace {args.namespace!r}")
        else:
            client.delete_namespace(args.namespace)
            print(f"deleted namespace {args.namespace!r}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------------------
# Entry point.


def _command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "rules_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `loglake` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, LokiError, BatchTooSmallError) as exc:
        print(f"loglake {_command_name(args)}: {exc}", file=sys.stderr)
    except UsageError as exc:
        print(f"loglake {_command_name(args)}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return EXIT_FAILED


def _count(n: int, noun: str) -> str:
    """Return e.g. `1 group` or `2 groups`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
