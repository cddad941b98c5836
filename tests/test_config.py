"""Configuration: Loki's names and units, defaults that work, warnings for Loki keys, errors for unknown ones."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from loglake.config import (
    Config,
    ConfigError,
    config_to_dict,
    default_config_yaml,
    expand_env_vars,
    format_duration,
    format_go_duration,
    format_size,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

REPO = Path(__file__).resolve().parent.parent
NS = 1_000_000_000
DAY = 86400 * NS


def run_loglake(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m loglake ARGS` and return what it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "loglake", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def write(tmp_path: Path, text: str, name: str = "loglake.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- defaults -------------------------------------------------------------------------------------------------


def test_defaults_work_without_a_file():
    cfg = load_config(None)
    assert cfg.auth_enabled is False
    assert (cfg.server.http_listen_address, cfg.server.http_listen_port) == ("127.0.0.1", 3100)
    assert cfg.limits_config.max_line_size == 256_000
    assert cfg.limits_config.reject_old_samples_max_age == 7 * DAY
    assert cfg.limits_config.max_query_length == 721 * 3600 * NS
    assert cfg.limits_config.max_structured_metadata_size == 64_000
    assert cfg.limits_config.discover_service_name[:3] == ["service", "app", "application"]
    assert cfg.ingester.max_chunk_age == 2 * 3600 * NS
    assert cfg.ingester.head_max_bytes == 64_000_000
    assert cfg.distributor.max_recv_msg_size == 100 << 20


def test_empty_wal_dir_becomes_wal_under_the_path_prefix(tmp_path):
    cfg = load_config(write(tmp_path, f"common:\n  path_prefix: {tmp_path / 'data'}\n"))
    assert cfg.ingester.wal.dir == str(tmp_path / "data" / "wal")


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == load_config(None)


def test_a_key_with_no_value_keeps_its_default(tmp_path):
    cfg = load_config(write(tmp_path, "limits_config:\n  max_line_size:\nserver:\n"))
    assert cfg.limits_config.max_line_size == 256_000
    assert cfg.server.http_listen_port == 3100


def test_values_are_read_from_the_file(tmp_path):
    text = """
auth_enabled: true
server: {http_listen_address: 0.0.0.0, http_listen_port: 3200, log_level: debug}
common: {path_prefix: /var/lib/loglake}
limits_config:
  max_line_size: 1MB
  reject_old_samples: false
  reject_old_samples_max_age: 168h
  ingestion_rate_mb: 8.5
  discover_service_name: [app, job]
ingester: {max_chunk_age: 1h, head_max_bytes: 64MB, wal: {enabled: false, dir: /wal}}
distributor: {max_recv_msg_size: 10485760}
"""
    cfg = load_config(write(tmp_path, text))
    assert cfg.auth_enabled is True
    assert cfg.server.http_listen_port == 3200 and cfg.server.log_level == "debug"
    assert cfg.common.path_prefix == "/var/lib/loglake"
    assert cfg.limits_config.max_line_size == 1_000_000
    assert cfg.limits_config.reject_old_samples is False
    assert cfg.limits_config.reject_old_samples_max_age == 7 * DAY
    assert cfg.limits_config.ingestion_rate_mb == 8.5
    assert cfg.limits_config.discover_service_name == ["app", "job"]
    assert cfg.ingester.max_chunk_age == 3600 * NS and cfg.ingester.head_max_bytes == 64_000_000
    assert cfg.ingester.wal.enabled is False and cfg.ingester.wal.dir == "/wal"
    assert cfg.distributor.max_recv_msg_size == 10 << 20


def test_overrides_are_laid_over_the_file(tmp_path):
    path = write(tmp_path, "server: {http_listen_port: 3200, log_level: debug}\n")
    cfg = load_config(path, overrides={"server": {"http_listen_port": 4000}})
    assert (cfg.server.http_listen_port, cfg.server.log_level) == (4000, "debug")


# --- Loki keys warned, unknown keys refused -------------------------------------------------------------------


def test_keys_loki_has_are_accepted_with_a_warning_naming_them(tmp_path, caplog):
    text = """
target: all
server: {grpc_listen_port: 9095}
storage_config: {filesystem: {directory: /tmp/chunks}}
schema_config: {configs: [{from: 2020-10-24, store: tsdb, schema: v13}]}
limits_config: {split_queries_by_interval: 15m}
ingester: {chunk_encoding: snappy, wal: {checkpoint_duration: 5m}}
"""
    with caplog.at_level(logging.WARNING, logger="loglake.config"):
        cfg = load_config(write(tmp_path, text))
    assert cfg == load_config(None)
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for key in (
        "target",
        "server.grpc_listen_port",
        "storage_config",
        "schema_config",
        "limits_config.split_queries_by_interval",
        "ingester.chunk_encoding",
        "ingester.wal.checkpoint_duration",
    ):
        assert f"config key {key} is a Loki setting ignored by loglake" in warned
    # A whole Loki block is warned about once, not key by key.
    assert "storage_config.filesystem" not in warned


def test_loki_single_binary_example_config_loads(tmp_path, caplog):
    text = """
auth_enabled: false
server:
  http_listen_port: 3100
  grpc_listen_port: 9096
  log_level: info
  grpc_server_max_concurrent_streams: 1000
common:
  instance_addr: 127.0.0.1
  path_prefix: /tmp/loki
  storage:
    filesystem:
      chunks_directory: /tmp/loki/chunks
      rules_directory: /tmp/loki/rules
  replication_factor: 1
  ring:
    kvstore:
      store: inmemory
query_range:
  results_cache:
    cache:
      embedded_cache: {enabled: true, max_size_mb: 100}
limits_config:
  metric_aggregation_enabled: true
  enable_multi_variant_queries: true
schema_config:
  configs:
    - from: 2020-10-24
      store: tsdb
      object_store: filesystem
      schema: v13
      index: {prefix: index_, period: 24h}
pattern_ingester:
  enabled: true
ruler:
  alertmanager_url: http://localhost:9093
frontend:
  encoding: protobuf
analytics:
  reporting_enabled: false
"""
    with caplog.at_level(logging.WARNING, logger="loglake.config"):
        cfg = load_config(write(tmp_path, text))
    assert cfg.common.path_prefix == "/tmp/loki"
    assert any("common.ring" in r.getMessage() for r in caplog.records)


def test_unknown_key_is_an_error_naming_its_path_and_the_keys_allowed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "limits_config:\n  max_line_sise: 10\n"))
    text = str(err.value)
    assert "unknown key limits_config.max_line_sise" in text
    assert "did you mean max_line_size?" in text
    assert "max_entries_limit_per_query" in text  # the keys loglake uses there are listed


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("foo: 1\n", "unknown key foo"),
        ("server:\n  http_port: 1\n", "unknown key server.http_port"),
        ("ingester:\n  wal:\n    directory: /x\n", "unknown key ingester.wal.directory"),
        ("common:\n  data_dir: /x\n", "unknown key common.data_dir"),
    ],
)
def test_unknown_keys_anywhere_are_errors(tmp_path, text, path):
    with pytest.raises(ConfigError, match=path):
        load_config(write(tmp_path, text))


def test_every_problem_in_a_file_is_reported_at_once(tmp_path):
    text = "server: {http_listen_port: abc}\nlimits_config: {max_line_size: huge}\nbogus: 1\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    text = str(err.value)
    assert "server.http_listen_port" in text and "limits_config.max_line_size" in text and "bogus" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: {http_listen_port: abc}", "server.http_listen_port: expected a whole number, got 'abc'"),
        ("server: {http_listen_port: 70000}", "server.http_listen_port: expected a number from 0 to 65535"),
        ("server: {log_level: loud}", "server.log_level: expected one of debug, info, warn, error, got 'loud'"),
        ("limits_config: {max_line_size: abc}", "limits_config.max_line_size: expected a size like 256KB"),
        ("limits_config: {max_line_size: -5}", "limits_config.max_line_size: expected a size like 256KB"),
        ("limits_config: {reject_old_samples: maybe}", "limits_config.reject_old_samples: expected true or false"),
        ("limits_config: {reject_old_samples_max_age: 10}", "reject_old_samples_max_age: expected a duration"),
        ("limits_config: {query_timeout: 5 minutes}", "limits_config.query_timeout: expected a duration"),
        ("limits_config: {ingestion_rate_mb: fast}", "limits_config.ingestion_rate_mb: expected a number"),
        ("limits_config: {discover_service_name: {a: b}}", "discover_service_name: expected a list of strings"),
        ("limits_config: [1, 2]", "limits_config: expected a mapping of keys, got a list"),
        ("ingester: {wal: {enabled: 1}}", "ingester.wal.enabled: expected true or false, got 1"),
    ],
)
def test_wrong_values_are_errors_naming_the_key_and_what_is_allowed(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text + "\n"))
    assert message in str(err.value)


def test_a_key_written_twice_is_an_error_with_its_lines(tmp_path):
    with pytest.raises(ConfigError, match=r"line 3: key 'http_listen_port' is written twice.*first on line 2"):
        load_config(write(tmp_path, "server:\n  http_listen_port: 1\n  http_listen_port: 2\n"))


def test_invalid_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "server: [unclosed\n"))


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


# --- sizes and durations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1000, 1000),
        ("1000", 1000),
        ("256KB", 256_000),
        ("256kb", 256_000),
        ("64 KB", 64_000),
        ("1MB", 1_000_000),
        ("1MiB", 1 << 20),
        ("64KiB", 65536),
        ("3MiB", 3 << 20),
        ("1GB", 10**9),
        ("2T", 2 * 10**12),
        ("0B", 0),
    ],
)
def test_sizes_read_decimal_and_binary_units_as_loki_does(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["abc", "1.5MB", "-1", -1, True, "10XB", "", None, [1]])
def test_sizes_that_are_not_sizes_are_refused(value):
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(value)


def test_a_size_in_bits_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="in bits"):
        parse_size("1Mb")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7d", 7 * DAY),
        ("1w", 7 * DAY),
        ("168h", 7 * DAY),
        ("10m", 600 * NS),
        ("1h30m", 5400 * NS),
        ("30d1h", 721 * 3600 * NS),
        ("1.5s", 1_500_000_000),
        ("500ms", 500_000_000),
        ("250us", 250_000),
        ("250µs", 250_000),
        ("3ns", 3),
        ("1y", 365 * DAY),
        ("0", 0),
        (0, 0),
        ("2h0m0s", 7200 * NS),
    ],
)
def test_durations_read_go_and_prometheus_units(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["10", 10, "1 hour", "h", "", "-1h", "1h foo", True, None])
def test_durations_without_a_unit_are_refused(value):
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("ns", "go", "prometheus"),
    [
        (0, "0s", "0s"),
        (2 * 3600 * NS, "2h0m0s", "2h"),
        (30 * 60 * NS, "30m0s", "30m"),
        (30 * NS, "30s", "30s"),
        (90 * NS, "1m30s", "1m30s"),
        (1_500_000_000, "1.5s", "1s500ms"),
        (1_500_000, "1.5ms", "1ms"),
        (1_500, "1.5µs", "0s"),
        (7, "7ns", "0s"),
        (7 * DAY, "168h0m0s", "1w"),
        (90 * DAY, "2160h0m0s", "90d"),
        (721 * 3600 * NS, "721h0m0s", "30d1h"),
        (365 * DAY, "8760h0m0s", "1y"),
    ],
)
def test_durations_print_as_loki_prints_them(ns, go, prometheus):
    assert format_go_duration(ns) == go
    assert format_duration(ns) == prometheus


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(0, "0B"), (100, "100B"), (256_000, "256KB"), (262144, "256KiB"), (1 << 20, "1MiB"), (1_500_000, "1500KB")],
)
def test_sizes_print_as_loki_prints_them(nbytes, text):
    assert format_size(nbytes) == text


@given(st.integers(min_value=0, max_value=2**62))
def test_sizes_round_trip_through_their_text(nbytes):
    assert parse_size(format_size(nbytes)) == nbytes


@given(st.integers(min_value=0, max_value=2**62))
def test_go_durations_round_trip_through_their_text(ns):
    assert parse_duration(format_go_duration(ns)) == ns


@given(st.integers(min_value=0, max_value=2**52))
def test_prometheus_durations_round_trip_at_millisecond_precision(ms):
    assert parse_duration(format_duration(ms * 1_000_000)) == ms * 1_000_000


# --- printing the configuration -------------------------------------------------------------------------------


def test_config_to_dict_prints_sizes_and_durations_as_loki_does():
    d = config_to_dict(Config())
    assert d["limits_config"]["max_line_size"] == "256KB"
    assert d["limits_config"]["max_structured_metadata_size"] == "64KB"
    assert d["limits_config"]["reject_old_samples_max_age"] == "1w"
    assert d["limits_config"]["max_query_length"] == "30d1h"
    assert d["limits_config"]["ingestion_rate_mb"] == 4
    assert d["ingester"]["max_chunk_age"] == "2h0m0s"
    assert d["ingester"]["wal"] == {"enabled": True, "dir": "", "flush_on_shutdown": True}
    assert d["distributor"]["max_recv_msg_size"] == 104857600
    assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_printed_config_loads_back_to_the_same_config():
    cfg = parse_config("limits_config: {max_line_size: 1000, query_timeout: 90s}\ningester: {max_chunk_age: 90m}\n")
    assert parse_config(yaml.safe_dump(config_to_dict(cfg))) == cfg


def test_default_yaml_loads_back_to_the_defaults_without_warnings(caplog):
    with caplog.at_level(logging.WARNING, logger="loglake.config"):
        assert parse_config(default_config_yaml()) == load_config(None)
    assert caplog.records == []


def test_every_setting_has_a_comment_in_the_default_yaml():
    lines = default_config_yaml().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#") and i > 0:
            assert lines[i - 1].lstrip().startswith("#"), f"no comment above {line!r}"


# --- environment variables ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOME_DIR}/x", "/home/me/x"),
        ("$HOME_DIR/x", "/home/me/x"),
        ("${UNSET}", ""),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${HOME_DIR:-fallback}", "/home/me"),
        ("${UNSET:-${HOME_DIR}}", "/home/me"),
        ("cost: $$5", "cost: $5"),
        ("regex: ^a$", "regex: ^a$"),
    ],
)
def test_env_references_expand_as_in_loki(text, expected):
    assert expand_env_vars(text, {"HOME_DIR": "/home/me", "EMPTY": ""}) == expected


def test_a_required_env_variable_that_is_unset_is_an_error():
    with pytest.raises(ConfigError, match="PORT is not set: give a port"):
        expand_env_vars("${PORT:?give a port}", {})


def test_env_expansion_applies_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGLAKE_TEST_PORT", "3300")
    path = write(tmp_path, "server:\n  http_listen_port: ${LOGLAKE_TEST_PORT:-3100}\n")
    assert load_config(path, expand_env=True).server.http_listen_port == 3300
    with pytest.raises(ConfigError, match="http_listen_port: expected a whole number"):
        load_config(path)


# --- the `loglake config` and `loglake serve` commands --------------------------------------------------------


def test_config_defaults_command_prints_yaml_that_reloads_to_the_defaults(tmp_path):
    result = run_loglake("config", "--defaults")
    assert result.returncode == 0, result.stderr
    assert load_config(write(tmp_path, result.stdout)) == load_config(None)


def test_config_check_accepts_a_valid_file_and_shows_warnings(tmp_path):
    path = write(tmp_path, "server: {grpc_listen_port: 9095}\n")
    result = run_loglake("config", "--check", str(path))
    assert result.returncode == 0
    assert "valid" in result.stdout
    assert "server.grpc_listen_port is a Loki setting ignored by loglake" in result.stderr


def test_config_check_refuses_an_invalid_file_without_a_traceback(tmp_path):
    path = write(tmp_path, "limits_config: {max_line_size: abc}\n")
    result = run_loglake("config", "--check", str(path))
    assert result.returncode == 1
    assert "limits_config.max_line_size: expected a size like 256KB" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_an_invalid_config_exits_1_with_the_message(tmp_path):
    path = write(tmp_path, "server: {http_listen_port: 3100}\nlimits_config: {nope: 1}\n")
    result = run_loglake("serve", "--config", str(path))
    assert result.returncode == 1
    assert "unknown key limits_config.nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_accepts_lokis_single_dash_flags(tmp_path):
    path = write(tmp_path, "server: {http_listen_port: ${NOT_A_NUMBER:-abc}}\n")
    result = run_loglake("serve", f"-config.file={path}", "-config.expand-env=true")
    assert result.returncode == 1
    assert "server.http_listen_port: expected a whole number, got 'abc'" in result.stderr


def test_the_configuration_doc_lists_every_setting():
    doc = (REPO / "docs" / "configuration.md").read_text()

    def paths(block: object, prefix: str) -> list[str]:
        out = []
        for f in dataclasses.fields(block):
            if f.metadata["kind"] == "block":
                out += paths(getattr(block, f.name), f"{prefix}{f.name}.")
            else:
                out.append(prefix + f.name)
        return out

    missing = [p for p in paths(Config(), "") if f"`{p}`" not in doc]
    assert missing == []


@given(st.text().filter(lambda t: "$" not in t))
def test_text_without_dollar_signs_is_left_as_it_is(text):
    assert expand_env_vars(text, {"A": "x"}) == text


@given(st.text(alphabet=st.characters(blacklist_characters="${}"), max_size=20))
def test_a_set_variable_expands_to_its_value_whatever_it_holds(value):
    assert expand_env_vars("a=${A:-d} b=$A", {"A": value}) == (f"a={value or 'd'} b={value}")
