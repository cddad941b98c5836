"""Configuration: one typed tree with Grafana Loki's key names and units, loaded from YAML."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

NS_PER_SECOND = 1_000_000_000
KIB = 1 << 10
MIB = 1 << 20


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what is allowed there."""


# ---------------------------------------------------------------------------------------------------------------
# Units: sizes and durations as Loki writes them.

_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1, "byte": 1, "bytes": 1}
# As go-humanize (which Loki uses): KB, MB, … are powers of 1000; KiB, MiB, … powers of 1024.
for _power, (_short, _name) in enumerate(
    [("k", "kilo"), ("m", "mega"), ("g", "giga"), ("t", "tera"), ("p", "peta"), ("e", "exa")], start=1
):
    for _alias in (_short, _short + "b", _name, _name + "byte", _name + "bytes"):
        _SIZE_UNITS[_alias] = 1000**_power
    _SIZE_UNITS[_short + "i"] = _SIZE_UNITS[_short + "ib"] = 1 << (10 * _power)
_SIZE_RE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*\Z")


def parse_size(value: object) -> int:
    """Return a byte count from an integer or text like `256KB`, `1MiB`, `4GB` (KB = 1000, KiB = 1024, as Loki)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"expected a size like 256KB or a byte count of 0 or more, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            number, unit = m.groups()
            # Loki's parser reads a capital prefix with a small b ("Mb") as bits; say so rather than guess.
            if len(unit) == 2 and unit[0].isupper() and unit[1] == "b":
                raise ValueError(f"{value!r} is in bits; write bytes with a capital B, like {number}{unit[0]}B")
            mult = _SIZE_UNITS.get(unit.lower())
            if mult is not None:
                return int(number) * mult
    raise ValueError(f"expected a size like 256KB, 1MB or a byte count, got {value!r}")


def format_size(nbytes: int) -> str:
    """Return a byte count as a size: the largest exact unit, e.g. `256KB`, `100MiB`, `1000B`."""
    if nbytes == 0:
        return "0B"
    for power in range(6, 0, -1):
        prefix = "KMGTPE"[power - 1]
        if nbytes % (1000**power) == 0:
            return f"{nbytes // 1000**power}{prefix}B"
        if nbytes % (1 << (10 * power)) == 0:
            return f"{nbytes >> (10 * power)}{prefix}iB"
    return f"{nbytes}B"


_DURATION_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # Go accepts both micro signs
    "μs": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
    "d": 86400 * NS_PER_SECOND,
    "w": 7 * 86400 * NS_PER_SECOND,
    "y": 365 * 86400 * NS_PER_SECOND,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")


def parse_duration(value: object) -> int:
    """Return nanoseconds from text like `10m`, `168h`, `7d`, `1h30m` or `1.5s` (Go and Prometheus units).

    A bare `0` is allowed, as in Loki; other numbers need a unit.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0
        pos = 0
        total = Fraction(0)
        while pos < len(text):
            m = _DURATION_PART.match(text, pos)
            if not m:
                break
            total += Fraction(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        else:
            if text:
                return int(total)
    raise ValueError(f"expected a duration like 30s, 10m, 168h or 7d, got {value!r}")


def format_duration(ns: int) -> str:
    """Return a duration as Prometheus-style limits print it in Loki: `1w`, `30d1h`, `10m`, `0s`."""
    ms = ns // 1_000_000
    if ms == 0:
        return "0s"
    out = []
    for unit, size, exact in (
        ("y", 365 * 86_400_000, True),
        ("w", 7 * 86_400_000, True),
        ("d", 86_400_000, False),
        ("h", 3_600_000, False),
        ("m", 60_000, False),
        ("s", 1000, False),
        ("ms", 1, False),
    ):
        # Years and weeks only when they divide exactly: "90d" reads better than "12w6d".
        if exact and ms % size:
            continue
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


def _fraction_text(whole: int, rest: int, digits: int) -> str:
    frac = str(rest).rjust(digits, "0").rstrip("0")
    return f"{whole}.{frac}" if frac else str(whole)


def format_go_duration(ns: int) -> str:
    """Return a duration as Go prints `time.Duration` (Loki's server and ingester settings): `2h0m0s`, `30s`."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fraction_text(ns // 1_000, ns % 1_000, 3)}µs"
    if ns < NS_PER_SECOND:
        return f"{sign}{_fraction_text(ns // 1_000_000, ns % 1_000_000, 6)}ms"
    seconds_text = _fraction_text((ns // NS_PER_SECOND) % 60, ns % NS_PER_SECOND, 9) + "s"
    minutes = ns // (60 * NS_PER_SECOND)
    if minutes == 0:
        return sign + seconds_text
    hours = minutes // 60
    if hours == 0:
        return f"{sign}{minutes}m{seconds_text}"
    return f"{sign}{hours}h{minutes % 60}m{seconds_text}"


# ---------------------------------------------------------------------------------------------------------------
# Environment variables in the file (Loki's -config.expand-env).

_ENV_RE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=?])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def expand_env_vars(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}` and `${VAR:?message}` with environment values.

    Unset variables without a default become empty, as in Loki; `$$` is a literal `$`.
    """
    env = os.environ if environ is None else environ

    def replace(m: re.Match[str]) -> str:
        escaped, name, op, arg, bare = m.groups()
        if escaped:
            return "$"
        if bare:
            return env.get(bare, "")
        value = env.get(name)
        if op is None:
            return value or ""
        # With a colon, an empty value counts as unset (shell semantics).
        unset = value is None or (op.startswith(":") and value == "")
        if not unset:
            return value or ""
        if op.endswith("?"):
            raise ConfigError(f"environment variable {name} is not set: {arg or 'it is required'}")
        return expand_env_vars(arg or "", env)

    return _ENV_RE.sub(replace, text)


# ---------------------------------------------------------------------------------------------------------------
# Settings: each field carries its kind (how YAML values are read and printed) and a one-line help text.


def _setting(default: bool | int | float | str, help: str, **meta: Any) -> Any:
    """Declare a plain setting (bool, int, float or str); its kind follows the default's type."""
    kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(default)]
    return field(default=default, metadata={"kind": kind, "help": help, **meta})


def _size(default: str, help: str, *, print_int: bool = False) -> Any:
    """Declare a size in bytes, written like `256KB`; `print_int` prints it as a plain number, as Loki does."""
    return field(default=parse_size(default), metadata={"kind": "size", "help": help, "print_int": print_int})


def _duration(default: str, help: str, *, go: bool = False) -> Any:
    """Declare a duration in ns, written like `10m`; `go` marks Loki settings printed as Go durations (`2h0m0s`)."""
    kind = "go_duration" if go else "duration"
    return field(default=parse_duration(default), metadata={"kind": kind, "help": help})


def _block_meta(cls: type, help: str) -> dict[str, Any]:
    """Return the metadata of a nested block of settings (the field itself is `field(default_factory=cls, ...)`)."""
    return {"kind": "block", "help": help, "cls": cls}


# ---------------------------------------------------------------------------------------------------------------
# The tree. Names and units are Loki 3.7's; defaults are Loki's unless loglake needs another (noted in the help).


@dataclass
class ServerConfig:
    """The HTTP server: where it listens and how it logs."""

    http_listen_address: str = _setting(
        "127.0.0.1", "Address to listen on (Loki listens on all interfaces by default)."
    )
    http_listen_port: int = _setting(3100, "HTTP port.", maximum=65535)
    log_level: str = _setting("info", "Log level.", choices=("debug", "info", "warn", "error"))
    graceful_shutdown_timeout: int = _duration("30s", "How long shutdown waits for requests in flight.", go=True)
    http_server_idle_timeout: int = _duration("2m", "How long an idle keep-alive connection is kept open.", go=True)


@dataclass
class CommonConfig:
    """Settings shared by every role of the server."""

    path_prefix: str = _setting("./loglake-data", "Directory for the WAL, blocks and index.")


_DEFAULT_SERVICE_NAME_LABELS = [
    "service",
    "app",
    "application",
    "app_name",
    "name",
    "app_kubernetes_io_name",
    "container",
    "container_name",
    "k8s_container_name",
    "component",
    "workload",
    "job",
    "k8s_job_name",
]


@dataclass
class LimitsConfig:
    """Per-tenant limits on what is pushed and what a query may cost (the same for every tenant for now)."""

    ingestion_rate_mb: float = _setting(4.0, "Push rate limit per tenant, in MB per second.")
    ingestion_burst_size_mb: float = _setting(6.0, "Push burst allowed per tenant, in MB.")
    max_label_name_length: int = _setting(1024, "Longest label name accepted.")
    max_label_value_length: int = _setting(2048, "Longest label value accepted.")
    max_label_names_per_series: int = _setting(15, "Most labels a stream may have.")
    max_line_size: int = _size("256KB", "Longest log line accepted (0: no limit).")
    max_line_size_truncate: bool = _setting(False, "Truncate lines longer than max_line_size instead of refusing them.")
    reject_old_samples: bool = _setting(True, "Refuse entries older than reject_old_samples_max_age.")
    reject_old_samples_max_age: int = _duration("1w", "Age beyond which entries are refused.")
    creation_grace_period: int = _duration("10m", "How far in the future an entry's timestamp may be.")
    max_streams_per_user: int = _setting(0, "Most active streams per tenant in this process (0: no limit).")
    max_global_streams_per_user: int = _setting(5000, "Most active streams per tenant (0: no limit).")
    max_structured_metadata_size: int = _size("64KB", "Largest structured metadata per entry.")
    max_structured_metadata_entries_count: int = _setting(128, "Most structured metadata pairs per entry.")
    allow_structured_metadata: bool = _setting(True, "Accept structured metadata in pushes.")
    discover_service_name: list[str] = field(
        default_factory=lambda: list(_DEFAULT_SERVICE_NAME_LABELS),
        metadata={"kind": "str_list", "help": "Labels whose value becomes service_name when a stream has none."},
    )
    discover_log_levels: bool = _setting(True, "Add detected_level to entries from their content.")
    max_entries_limit_per_query: int = _setting(5000, "Largest limit a log query may ask for.")
    max_query_series: int = _setting(500, "Most series a metric query may return.")
    max_query_length: int = _duration("30d1h", "Longest time range a query may cover (0: no limit).")
    query_timeout: int = _duration("1m", "How long a query may run.")
    max_concurrent_tail_requests: int = _setting(10, "Most live tail connections per tenant.")


@dataclass
class WalConfig:
    """The write-ahead log: every push is written here before it is acknowledged."""

    enabled: bool = _setting(True, "Write pushes to the WAL (without it a crash loses the head).")
    dir: str = _setting("", "WAL directory (empty: <path_prefix>/wal).")
    flush_on_shutdown: bool = _setting(True, "Flush the head to blocks on shutdown (Loki's default is false).")


@dataclass
class IngesterConfig:
    """The head: recent entries held in memory, and when they are flushed to blocks."""

    max_chunk_age: int = _duration("2h", "Flush a head once its oldest entry arrived this long ago.", go=True)
    chunk_idle_period: int = _duration("30m", "Flush a head that has received nothing for this long.", go=True)
    flush_check_period: int = _duration("30s", "How often heads are checked for flushing.", go=True)
    head_max_bytes: int = _size("64MB", "loglake's own: flush the head once its lines reach this many bytes.")
    wal: WalConfig = field(default_factory=WalConfig, metadata=_block_meta(WalConfig, "The write-ahead log."))


@dataclass
class DistributorConfig:
    """The push path."""

    max_recv_msg_size: int = _size("100MiB", "Largest push body accepted, after decompression.", print_int=True)


@dataclass
class CompactorConfig:
    """Compaction: a time window's small blocks are merged into one, compressed harder, once the window is quiet."""

    compaction_interval: int = _duration(
        "5s", "Merge a window's blocks once no new block has joined it for this long.", go=True
    )
    block_window: int = _duration("1h", "loglake's own: the time window whose blocks are merged together.")
    zstd_level: int = _setting(12, "loglake's own: zstd level of merged blocks (new blocks use 1, for cheap flushes).")


@dataclass
class RulerLocalStorageConfig:
    """Rules kept on local disk, one file per namespace: `<directory>/<tenant>/<namespace>.yaml`."""

    directory: str = _setting("", "Directory of rule files (empty: <path_prefix>/rules).")


@dataclass
class RulerStorageConfig:
    """Where the ruler keeps rule groups."""

    type: str = _setting("local", "Rule storage backend; loglake keeps rules on local disk only.", choices=("local",))
    local: RulerLocalStorageConfig = field(
        default_factory=RulerLocalStorageConfig,
        metadata=_block_meta(RulerLocalStorageConfig, "Rules in a local directory."),
    )


@dataclass
class RulerRemoteWriteClientConfig:
    """One Prometheus remote-write endpoint (Loki 2's single `client` form)."""

    url: str = _setting("", "URL of the remote-write endpoint, e.g. http://prometheus:9090/api/v1/write.")


@dataclass
class RulerRemoteWriteConfig:
    """Where recording rules send their samples: Prometheus remote-write (protobuf + snappy)."""

    enabled: bool = _setting(False, "Send recording rules' samples to remote write.")
    client: RulerRemoteWriteClientConfig = field(
        default_factory=RulerRemoteWriteClientConfig,
        metadata=_block_meta(RulerRemoteWriteClientConfig, "One endpoint (Loki 2's form; Loki 3 uses clients)."),
    )
    clients: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "kind": "remote_write_clients",
            "help": "Endpoints by id, each a Prometheus remote_write block with at least url (Loki 3's form).",
        },
    )


@dataclass
class RulerConfig:
    """The ruler: LogQL alerting and recording rules, evaluated on an interval, notifying Alertmanager."""

    external_url: str = _setting("", "Base URL of loglake's UI in notification links (empty: the listen address).")
    external_labels: dict[str, str] = field(
        default_factory=dict, metadata={"kind": "str_map", "help": "Labels added to every alert and recorded sample."}
    )
    evaluation_interval: int = _duration(
        "1m", "How often rule groups without their own interval are evaluated.", go=True
    )
    storage: RulerStorageConfig = field(
        default_factory=RulerStorageConfig, metadata=_block_meta(RulerStorageConfig, "Where rule groups are kept.")
    )
    alertmanager_url: list[str] = field(
        default_factory=list,
        metadata={"kind": "str_list", "help": "Alertmanager base URLs (a list, or comma-separated as in Loki)."},
    )
    resend_delay: int = _duration("1m", "Least time between two sends of a firing alert to Alertmanager.", go=True)
    enable_api: bool = _setting(True, "Serve the rules API (/loki/api/v1/rules, /prometheus/api/v1/rules, ...).")
    remote_write: RulerRemoteWriteConfig = field(
        default_factory=RulerRemoteWriteConfig,
        metadata=_block_meta(RulerRemoteWriteConfig, "Remote write for recording rules."),
    )
    webhook_url: list[str] = field(
        default_factory=list,
        metadata={"kind": "str_list", "help": "loglake's own: URLs that receive each alert as generic JSON."},
    )
    slack_webhook_url: list[str] = field(
        default_factory=list,
        metadata={"kind": "str_list", "help": "loglake's own: Slack incoming-webhook URLs that receive each alert."},
    )


@dataclass
class RulerStorageBackendConfig:
    """Loki's newer top-level rule storage block; used when `ruler.storage.local.directory` is empty."""

    backend: str = _setting(
        "local", "Rule storage backend; loglake keeps rules on local disk only.", choices=("local",)
    )
    local: RulerLocalStorageConfig = field(
        default_factory=RulerLocalStorageConfig,
        metadata=_block_meta(RulerLocalStorageConfig, "Rules in a local directory."),
    )


@dataclass
class Config:
    """The whole configuration of a loglake server."""

    auth_enabled: bool = _setting(False, "Require X-Scope-OrgID on every request; when off the tenant is 'fake'.")
    server: ServerConfig = field(default_factory=ServerConfig, metadata=_block_meta(ServerConfig, "The HTTP server."))
    common: CommonConfig = field(
        default_factory=CommonConfig, metadata=_block_meta(CommonConfig, "Settings shared by every role.")
    )
    limits_config: LimitsConfig = field(
        default_factory=LimitsConfig, metadata=_block_meta(LimitsConfig, "Per-tenant limits.")
    )
    ingester: IngesterConfig = field(
        default_factory=IngesterConfig, metadata=_block_meta(IngesterConfig, "The head and its flushing.")
    )
    distributor: DistributorConfig = field(
        default_factory=DistributorConfig, metadata=_block_meta(DistributorConfig, "The push path.")
    )
    compactor: CompactorConfig = field(
        default_factory=CompactorConfig, metadata=_block_meta(CompactorConfig, "Merging small blocks.")
    )
    ruler: RulerConfig = field(
        default_factory=RulerConfig, metadata=_block_meta(RulerConfig, "Alerting and recording rules.")
    )
    ruler_storage: RulerStorageBackendConfig = field(
        default_factory=RulerStorageBackendConfig,
        metadata=_block_meta(RulerStorageBackendConfig, "Rule storage, Loki's newer form of ruler.storage."),
    )


# ---------------------------------------------------------------------------------------------------------------
# Loki 3.7's key names, for the blocks loglake reads. A key Loki has but loglake does not use is accepted with a
# warning, so Loki config files mostly work; a key neither knows is an error. Only top-level blocks loglake models
# are checked key by key; other Loki blocks (storage_config, schema_config, ...) are ignored whole.


def _keys(text: str) -> frozenset[str]:
    return frozenset(text.split())


LOKI_KEYS: dict[str, frozenset[str]] = {
    "": _keys(
        "target auth_enabled ballast_bytes server ui distributor querier query_engine query_scheduler frontend "
        "query_range ruler ruler_storage ingester_client ingester pattern_ingester index_gateway bloom_build "
        "bloom_gateway storage_config chunk_store_config schema_config compactor compactor_grpc_client limits_config "
        "frontend_worker table_manager memberlist kafka_config dataobj ingest_limits ingest_limits_frontend "
        "ingest_limits_frontend_client runtime_config operational_config tracing analytics profiling "
        "tenant_limits_allow_publish common shutdown_delay metrics_namespace "
    ),
    "server": _keys(
        "http_listen_network http_listen_address http_listen_port http_listen_conn_limit grpc_listen_network "
        "grpc_listen_address grpc_listen_port grpc_listen_conn_limit grpc_collect_max_streams_by_conn "
        "proxy_protocol_enabled tls_cipher_suites tls_min_version http_tls_config grpc_tls_config "
        "register_instrumentation report_grpc_codes_in_instrumentation_label_enabled graceful_shutdown_timeout "
        "http_server_read_timeout http_server_read_header_timeout http_server_write_timeout http_server_idle_timeout "
        "http_log_closed_connections_without_response_enabled grpc_server_max_recv_msg_size "
        "grpc_server_max_send_msg_size grpc_server_max_concurrent_streams grpc_server_max_connection_idle "
        "grpc_server_max_connection_age grpc_server_max_connection_age_grace grpc_server_keepalive_time "
        "grpc_server_keepalive_timeout grpc_server_min_time_between_pings grpc_server_ping_without_stream_allowed "
        "grpc_server_num_workers grpc_server_stats_tracking_enabled grpc_server_recv_buffer_pools_enabled log_format "
        "log_level log_source_ips_enabled log_source_ips_full log_source_ips_header log_source_ips_regex "
        "log_request_headers log_request_at_info_level_enabled log_request_exclude_headers_list trace_request_headers "
        "trace_request_exclude_headers_list http_path_prefix cluster_validation create_new_traces "
    ),
    "common": _keys(
        "path_prefix storage persist_tokens replication_factor ring instance_interface_names instance_addr "
        "compactor_address compactor_grpc_address scratch_path "
    ),
    "limits_config": _keys(
        "ingestion_rate_strategy ingestion_rate_mb ingestion_burst_size_mb max_label_name_length "
        "max_label_value_length max_label_names_per_series reject_old_samples reject_old_samples_max_age "
        "creation_grace_period max_line_size max_line_size_truncate max_line_size_truncate_identifier "
        "increment_duplicate_timestamp simulated_push_latency enable_multi_variant_queries discover_generic_fields "
        "discover_service_name discover_log_levels log_level_fields log_level_from_json_max_depth "
        "use_owned_stream_count max_streams_per_user max_global_streams_per_user unordered_writes "
        "per_stream_rate_limit per_stream_rate_limit_burst max_chunks_per_query max_query_series max_query_lookback "
        "max_query_length max_query_range max_query_parallelism tsdb_max_query_parallelism tsdb_max_bytes_per_shard "
        "tsdb_sharding_strategy tsdb_precompute_chunks cardinality_limit max_streams_matchers_per_query "
        "max_concurrent_tail_requests max_entries_limit_per_query max_cache_freshness_per_query "
        "max_metadata_cache_freshness max_stats_cache_freshness max_queriers_per_tenant max_query_capacity "
        "query_ready_index_num_days query_timeout split_queries_by_interval split_metadata_queries_by_interval "
        "split_recent_metadata_queries_by_interval recent_metadata_query_window "
        "split_instant_metric_queries_by_interval engine_results_cache_time_bucket_interval "
        "split_ingester_queries_by_interval min_sharding_lookback max_query_bytes_read max_querier_bytes_read "
        "volume_enabled volume_max_series ruler_max_rules_per_rule_group ruler_max_rule_groups_per_tenant "
        "ruler_tenant_shard_size ruler_enable_wal_replay ruler_remote_write_disabled ruler_remote_write_url "
        "ruler_remote_write_timeout ruler_remote_write_headers ruler_remote_write_relabel_configs "
        "ruler_remote_write_queue_capacity ruler_remote_write_queue_min_shards ruler_remote_write_queue_max_shards "
        "ruler_remote_write_queue_max_samples_per_send ruler_remote_write_queue_batch_send_deadline "
        "ruler_remote_write_queue_min_backoff ruler_remote_write_queue_max_backoff "
        "ruler_remote_write_queue_retry_on_ratelimit ruler_remote_write_sigv4_config ruler_remote_write_config "
        "ruler_remote_evaluation_timeout ruler_remote_evaluation_max_response_size deletion_mode retention_period "
        "retention_stream per_tenant_override_config per_tenant_override_period allow_deletes shard_streams "
        "blocked_queries required_labels minimum_labels_number index_gateway_shard_size index_gateway_max_capacity "
        "bloom_gateway_enable_filtering bloom_build_max_builders bloom_build_task_max_retries "
        "bloom_build_builder_response_timeout bloom_creation_enabled bloom_planning_strategy "
        "bloom_split_series_keyspace_by bloom_task_target_series_chunk_size bloom_block_encoding "
        "bloom_prefetch_blocks bloom_max_block_size bloom_max_bloom_size allow_structured_metadata "
        "max_structured_metadata_size max_structured_metadata_entries_count otlp_config block_ingestion_policy_until "
        "block_ingestion_until block_ingestion_status_code enforced_labels policy_enforced_labels "
        "policy_stream_mapping ingestion_partitions_tenant_shard_size shard_aggregations "
        "pattern_ingester_tokenizable_json_fields_default pattern_ingester_tokenizable_json_fields_append "
        "pattern_ingester_tokenizable_json_fields_delete metric_aggregation_enabled pattern_persistence_enabled "
        "pattern_persistence_granularity pattern_rate_threshold s3_sse_type s3_sse_kms_key_id "
        "s3_sse_kms_encryption_context max_scan_task_parallelism debug_engine_tasks debug_engine_streams "
    ),
    "ingester": _keys(
        "lifecycler concurrent_flushes flush_check_period flush_op_backoff flush_op_timeout chunk_retain_period "
        "chunk_idle_period chunk_block_size chunk_target_size chunk_encoding max_chunk_age autoforget_unhealthy "
        "sync_period sync_min_utilization max_returned_stream_errors query_store_max_look_back_period wal "
        "index_shards max_dropped_streams shutdown_marker_path owned_streams_check_interval "
        "delegate_stream_limits_enabled kafka_ingestion "
    ),
    "ingester.wal": _keys(
        "enabled dir checkpoint_duration flush_on_shutdown replay_memory_ceiling disk_full_threshold "
    ),
    "distributor": _keys(
        "ring push_worker_count max_recv_msg_size max_decompressed_size rate_store write_failures_logging otlp_config "
        "default_policy_stream_mappings kafka_writes_enabled ingester_writes_enabled ingest_limits_enabled "
        "ingest_limits_dry_run_enabled dataobj_tee "
    ),
    "ruler": _keys(
        "external_url datasource_uid external_labels ruler_client evaluation_interval poll_interval storage "
        "rule_path alertmanager_url enable_alertmanager_discovery alertmanager_refresh_interval "
        "enable_alertmanager_v2 alert_relabel_configs notification_queue_capacity notification_timeout "
        "alertmanager_client for_outage_tolerance for_grace_period resend_delay enable_sharding sharding_strategy "
        "sharding_algo search_pending_for ring flush_period enable_api enabled_tenants disabled_tenants "
        "query_stats_enabled disable_rule_group_label wal wal_cleaner remote_write evaluation "
    ),
    "ruler.storage": _keys("type azure alibabacloud gcs s3 bos swift cos local "),
    "ruler.storage.local": _keys("directory "),
    "ruler.remote_write": _keys("clients enabled config_refresh_period add_org_id_header "),
    "ruler_storage": _keys("backend local s3 gcs azure swift filesystem alibabacloud bos cos storage_prefix "),
    "ruler_storage.local": _keys("directory "),
    "compactor": _keys(
        "working_directory compaction_interval apply_retention_interval retention_enabled retention_delete_delay "
        "retention_delete_worker_count retention_table_timeout retention_backoff_config delete_request_store "
        "delete_request_store_key_prefix delete_request_store_db_type backup_delete_request_store_db_type "
        "delete_batch_size delete_request_cancel_period delete_max_interval max_compaction_parallelism "
        "upload_parallelism compactor_ring run_once_for_tables tables_to_compact skip_latest_n_tables "
        "horizontal_scaling_mode worker_config jobs_config "
    ),
}
"""Keys Loki 3.7 accepts, by block path ("" is the top level)."""


# ---------------------------------------------------------------------------------------------------------------
# Reading values.


def _type_name(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _read_value(f: dataclasses.Field[Any], value: object) -> Any:
    """Return a YAML value converted to the field's kind, or raise ValueError saying what was expected."""
    kind = f.metadata["kind"]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_type_name(value)}")
        return value
    if kind == "size":
        return parse_size(value)
    if kind in ("duration", "go_duration"):
        return parse_duration(value)
    if kind == "str_list":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {_type_name(value)}")
        return list(value)
    if kind == "str_map":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            raise ValueError(f"expected a mapping of names to text values, got {_type_name(value)}")
        return {k: str(v) for k, v in value.items()}
    if kind == "remote_write_clients":
        return _read_remote_write_clients(value)
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a string, got {_type_name(value)}")
        text = str(value)
        choices = f.metadata.get("choices")
        if choices and text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {_type_name(value)}")
        number: float = value
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {_type_name(value)}")
        number = float(value)
    maximum = f.metadata.get("maximum")
    if number < 0 or (maximum is not None and number > maximum):
        allowed = f"0 to {maximum}" if maximum is not None else "0 or more"
        raise ValueError(f"expected a number from {allowed}, got {value!r}")
    return number


def _read_remote_write_clients(value: object) -> dict[str, dict[str, Any]]:
    """Return Loki 3's `remote_write.clients`: id -> a Prometheus remote_write block, each with a `url`."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of client ids to remote_write blocks, got {_type_name(value)}")
    out: dict[str, dict[str, Any]] = {}
    for client_id, block in value.items():
        if not isinstance(block, dict):
            raise ValueError(f"client {client_id!r}: expected a mapping with url, got {_type_name(block)}")
        url = block.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError(f"client {client_id!r}: url is required, e.g. http://prometheus:9090/api/v1/write")
        out[str(client_id)] = dict(block)
    return out


class _Problems:
    """Errors and warnings found while reading a file, reported together."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []


def _unknown_key_message(key: object, path: str, known: list[str], loki: frozenset[str]) -> str:
    where = f"in {path}" if path else "at the top level"
    key_path = f"{path}.{key}" if path else str(key)
    text = f"unknown key {key_path}: neither loglake nor Loki 3.7 has it"
    close = difflib.get_close_matches(str(key), sorted(set(known) | loki), n=1)
    if close:
        text += f" (did you mean {close[0]}?)"
    text += f"; keys loglake uses {where}: {', '.join(known)}"
    if loki:
        text += f", and any other Loki 3.7 key {where} (accepted and ignored)"
    return text


def _read_block(cls: type, raw: object, path: str, problems: _Problems) -> Any:
    """Build one dataclass block from its YAML mapping, collecting problems instead of stopping at the first."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        problems.errors.append(f"{path or 'the configuration'}: expected a mapping of keys, got {_type_name(raw)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    loki = LOKI_KEYS.get(path, frozenset())
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else str(key)
        f = fields.get(key) if isinstance(key, str) else None
        if f is None:
            if key in loki:
                problems.warnings.append(f"config key {key_path} is a Loki setting ignored by loglake")
            else:
                problems.errors.append(_unknown_key_message(key, path, list(fields), loki))
            continue
        if f.metadata["kind"] == "block":
            values[key] = _read_block(f.metadata["cls"], value, key_path, problems)
        elif value is not None:  # `key:` with nothing after it keeps the default, as in Loki
            try:
                values[key] = _read_value(f, value)
            except ValueError as exc:
                problems.errors.append(f"{key_path}: {exc}")
    return cls(**values)


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key written twice in one mapping (Loki refuses it too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            raise ConfigError(f"line {line}: key {key!r} is written twice in one block (first on line {first})")
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `extra` laid over it, mapping by mapping."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_config(
    text: str, *, source: str = "<config>", overrides: Mapping[str, Any] | None = None, expand_env: bool = False
) -> Config:
    """Return the configuration written in YAML `text` (Loki's names), over the defaults.

    Keys Loki has but loglake ignores are logged as warnings; anything else wrong raises ConfigError naming every
    offending key. `overrides` is a nested mapping laid over the file, `expand_env` expands `${VAR}` first.
    """
    if expand_env:
        text = expand_env_vars(text)
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of keys at the top, got {_type_name(raw)}")
        raw = _merge(raw, overrides)
    problems = _Problems()
    config = _read_block(Config, raw, "", problems)
    for warning in problems.warnings:
        log.warning("%s: %s", source, warning)
    if problems.errors:
        lines = "\n".join(f"  {e}" for e in problems.errors)
        raise ConfigError(f"{source}: invalid configuration:\n{lines}")
    if not config.ingester.wal.dir:
        config.ingester.wal.dir = str(Path(config.common.path_prefix) / "wal")
    rw = config.ruler.remote_write
    if rw.enabled and not rw.clients and not rw.client.url:
        raise ConfigError(
            f"{source}: invalid configuration:\n  ruler.remote_write: enabled but no clients are configured; "
            "set ruler.remote_write.clients.<id>.url (or client.url)"
        )
    return config


def load_config(
    path: str | os.PathLike[str] | None, *, overrides: Mapping[str, Any] | None = None, expand_env: bool = False
) -> Config:
    """Return the configuration in the YAML file at `path` (the defaults when `path` is None).

    See `parse_config` for `overrides` and `expand_env`. An empty `ingester.wal.dir` becomes `<path_prefix>/wal`.
    """
    if path is None:
        return parse_config("", source="defaults", overrides=overrides)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {os.fspath(path)}: {exc.strerror}") from None
    return parse_config(text, source=os.fspath(path), overrides=overrides, expand_env=expand_env)


# ---------------------------------------------------------------------------------------------------------------
# Printing.

_PRINTERS: dict[str, Callable[[dataclasses.Field[Any], Any], Any]] = {
    "size": lambda f, v: v if f.metadata["print_int"] else format_size(v),
    "duration": lambda f, v: format_duration(v),
    "go_duration": lambda f, v: format_go_duration(v),
    # Go prints a whole float64 without a fraction ("4", not "4.0").
    "float": lambda f, v: int(v) if float(v).is_integer() else v,
    "str_list": lambda f, v: list(v),
    "str_map": lambda f, v: dict(v),
    "remote_write_clients": lambda f, v: {k: dict(c) for k, c in v.items()},
}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return a block (the whole Config by default) as plain data with Loki's names, sizes and durations as text."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = f.metadata["kind"]
        if kind == "block":
            out[f.name] = config_to_dict(value)
        else:
            printer = _PRINTERS.get(kind)
            out[f.name] = printer(f, value) if printer else value
    return out


def _yaml_line(key: str, value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True)
    return f"{key}: " + text.removesuffix("...\n").strip()


def _emit(cfg: Any, indent: str, lines: list[str]) -> None:
    plain = config_to_dict(cfg)
    for f in dataclasses.fields(cfg):
        lines.append(f"{indent}# {f.metadata['help']}")
        if f.metadata["kind"] == "block":
            lines.append(f"{indent}{f.name}:")
            _emit(getattr(cfg, f.name), indent + "  ", lines)
        else:
            lines.append(indent + _yaml_line(f.name, plain[f.name]))


def default_config_yaml() -> str:
    """Return the full default configuration as commented YAML with Loki's names; it loads back to the defaults."""
    lines = [
        "# loglake configuration. Keys are Grafana Loki 3.7's; other Loki keys are accepted and ignored.",
        "# Sizes: 256KB, 1MB (powers of 1024). Durations: 30s, 10m, 2h, 7d, 1w. Every value below is the default.",
        "",
    ]
    _emit(Config(), "", lines)
    return "\n".join(lines) + "\n"
