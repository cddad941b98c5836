"""Reading Promtail's YAML configuration: structure, defaults, strictness, environment expansion, file_sd files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loglake.agent.config import (
    AgentConfig,
    BackoffConfig,
    BasicAuth,
    ClientConfig,
    ConfigError,
    FileSDConfig,
    JournalConfig,
    KubernetesNamespaces,
    KubernetesSDConfig,
    KubernetesSelector,
    LimitsConfig,
    PositionsConfig,
    PushAPIConfig,
    ServerConfig,
    StaticConfig,
    SyslogConfig,
    TargetConfig,
    TLSConfig,
    expand_env,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    read_file_sd,
)
from loglake.agent.relabel import RelabelRule, relabel

KUBERNETES_SEEDS = """
scrape_configs:
  - job_name: kubernetes-pods
    kubernetes_sd_configs: [{role: pod}]
    pipeline_stages:
      - cri: {}
      - json: {expressions: {level: level, trace_id: trace_id}}
      - labels: {level: ""}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_logging_enabled]
        action: keep
        regex: "true"
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_container_name]
        target_label: container
      - source_labels: [__meta_kubernetes_pod_uid, __meta_kubernetes_pod_container_name]
        separator: /
        target_label: __path__
        replacement: /var/log/pods/*$1/*.log
"""

FULL = """
server:
  http_listen_address: 127.0.0.1
  http_listen_port: 9081
  grpc_listen_port: 0
  log_level: debug

positions:
  filename: /tmp/positions.yaml
  sync_period: 5s

clients:
  - url: https://loki.example.com/loki/api/v1/push
    tenant_id: team-a
    batchwait: 2s
    batchsize: 524288
    timeout: 30s
    backoff_config:
      min_period: 1s
      max_period: 1m
      max_retries: 20
    external_labels:
      cluster: prod-eu
    headers:
      X-Team: a
    basic_auth:
      username: promtail
      password_file: /etc/promtail/password
    tls_config:
      ca_file: /etc/ssl/ca.pem
      insecure_skip_verify: false
    drop_rate_limited_batches: true
  - url: http://localhost:3100/loki/api/v1/push
    bearer_token_file: /var/run/token

limits_config:
  readline_rate_enabled: true
  readline_rate: 500
  readline_burst: 1000
  max_line_size: 256kb
  max_line_size_truncate: true

target_config:
  sync_period: 30s

scrape_configs:
  - job_name: system
    pipeline_stages:
    static_configs:
      - targets: [localhost]
        labels:
          job: varlogs
          host: web-1
          __path__: /var/log/*.log
          __path_exclude__: /var/log/*.gz
  - job_name: file-sd
    file_sd_configs:
      - files: [/etc/promtail/targets/*.json]
        refresh_interval: 1m
  - job_name: syslog
    syslog:
      listen_address: 0.0.0.0:1514
      listen_protocol: udp
      idle_timeout: 60s
      label_structured_data: yes
      labels:
        job: syslog
    relabel_configs:
      - source_labels: [__syslog_message_hostname]
        target_label: host
  - job_name: push1
    loki_push_api:
      server:
        http_listen_port: 3500
        grpc_listen_port: 3600
      labels:
        pushserver: push1
      use_incoming_timestamp: true
  - job_name: journal
    journal:
      max_age: 12h
      labels:
        job: systemd-journal
""" + KUBERNETES_SEEDS.replace("scrape_configs:\n", "")


JOB_A = "scrape_configs:\n  - job_name: a\n"


def error_of(text: str, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, **kwargs)
    return info.value


# ---- a whole file ---------------------------------------------------------------------------------------------


def test_a_realistic_promtail_file_parses_to_the_expected_tree():
    cfg = parse_config(FULL)

    assert cfg.server == ServerConfig(
        http_listen_address="127.0.0.1", http_listen_port=9081, grpc_listen_port=0, log_level="debug"
    )
    assert cfg.positions == PositionsConfig(filename="/tmp/positions.yaml", sync_period=5.0)
    assert cfg.clients == [
        ClientConfig(
            url="https://loki.example.com/loki/api/v1/push",
            tenant_id="team-a",
            batchwait=2.0,
            batchsize=524288,
            timeout=30.0,
            backoff_config=BackoffConfig(min_period=1.0, max_period=60.0, max_retries=20),
            external_labels={"cluster": "prod-eu"},
            headers={"X-Team": "a"},
            basic_auth=BasicAuth(username="promtail", password_file="/etc/promtail/password"),
            tls_config=TLSConfig(ca_file="/etc/ssl/ca.pem"),
            drop_rate_limited_batches=True,
        ),
        ClientConfig(url="http://localhost:3100/loki/api/v1/push", bearer_token_file="/var/run/token"),
    ]
    assert cfg.limits_config == LimitsConfig(
        readline_rate_enabled=True,
        readline_rate=500.0,
        readline_burst=1000,
        max_line_size=256 * 1024,
        max_line_size_truncate=True,
    )
    assert cfg.target_config == TargetConfig(sync_period=30.0)

    jobs = {sc.job_name: sc for sc in cfg.scrape_configs}
    assert list(jobs) == ["system", "file-sd", "syslog", "push1", "journal", "kubernetes-pods"]
    assert {name: sc.kind for name, sc in jobs.items()} == {
        "system": "file",
        "file-sd": "file",
        "syslog": "syslog",
        "push1": "loki_push_api",
        "journal": "journal",
        "kubernetes-pods": "file",
    }
    assert jobs["system"].pipeline_stages == []
    assert jobs["system"].static_configs == [
        StaticConfig(
            targets=["localhost"],
            labels={
                "job": "varlogs",
                "host": "web-1",
                "__path__": "/var/log/*.log",
                "__path_exclude__": "/var/log/*.gz",
            },
        )
    ]
    assert jobs["file-sd"].file_sd_configs == [
        FileSDConfig(files=["/etc/promtail/targets/*.json"], refresh_interval=60.0)
    ]
    assert jobs["syslog"].syslog == SyslogConfig(
        listen_address="0.0.0.0:1514",
        listen_protocol="udp",
        idle_timeout=60.0,
        label_structured_data=True,
        labels={"job": "syslog"},
    )
    assert jobs["syslog"].relabel_configs == [
        RelabelRule(source_labels=("__syslog_message_hostname",), target_label="host")
    ]
    push = jobs["push1"].loki_push_api
    assert push == PushAPIConfig(
        server=ServerConfig(http_listen_address="", http_listen_port=3500, grpc_listen_port=3600),
        labels={"pushserver": "push1"},
        use_incoming_timestamp=True,
    )
    assert jobs["journal"].journal == JournalConfig(max_age=12 * 3600.0, labels={"job": "systemd-journal"})
    assert cfg.notes == []


def test_the_kubernetes_seeds_example_parses_and_relabels_as_written():
    (sc,) = parse_config(KUBERNETES_SEEDS).scrape_configs
    assert sc.job_name == "kubernetes-pods"
    assert sc.kind == "file"
    assert sc.kubernetes_sd_configs == [KubernetesSDConfig(role="pod")]
    assert sc.pipeline_stages == [
        {"cri": {}},
        {"json": {"expressions": {"level": "level", "trace_id": "trace_id"}}},
        {"labels": {"level": ""}},
    ]
    assert [r.action for r in sc.relabel_configs] == ["keep", "labelmap", "replace", "replace", "replace", "replace"]

    # What Kubernetes discovery gives for a container of a pod annotated logging/enabled=true.
    discovered = {
        "__meta_kubernetes_namespace": "shop",
        "__meta_kubernetes_pod_name": "cart-7d9f",
        "__meta_kubernetes_pod_uid": "0b7c-11ee",
        "__meta_kubernetes_pod_container_name": "cart",
        "__meta_kubernetes_pod_label_app": "cart",
        "__meta_kubernetes_pod_label_tier": "backend",
        "__meta_kubernetes_pod_annotation_logging_enabled": "true",
        "__meta_kubernetes_pod_annotationpresent_logging_enabled": "true",
    }
    out = relabel(discovered, sc.relabel_configs)
    assert out is not None
    visible = {k: v for k, v in out.items() if not k.startswith("__")}
    assert visible == {"app": "cart", "tier": "backend", "namespace": "shop", "pod": "cart-7d9f", "container": "cart"}
    assert out["__path__"] == "/var/log/pods/*0b7c-11ee/cart/*.log"

    not_enabled = {**discovered, "__meta_kubernetes_pod_annotation_logging_enabled": "false"}
    assert relabel(not_enabled, sc.relabel_configs) is None
    without_annotation = {k: v for k, v in discovered.items() if "annotation_" not in k}
    assert relabel(without_annotation, sc.relabel_configs) is None


def test_load_config_reads_a_file_and_names_it_in_errors(tmp_path: Path):
    path = tmp_path / "promtail.yaml"
    path.write_text(KUBERNETES_SEEDS)
    assert load_config(path).scrape_configs[0].job_name == "kubernetes-pods"
    path.write_text("server:\n  http_listen_prot: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}: server: unknown key 'http_listen_prot'")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


# ---- defaults -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "server:\npositions:\nclients:\nscrape_configs:\n"])
def test_an_empty_file_gives_promtail_defaults(text):
    assert parse_config(text) == AgentConfig()


def test_defaults_are_promtails():
    cfg = AgentConfig()
    assert (cfg.server.http_listen_address, cfg.server.http_listen_port) == ("0.0.0.0", 9080)
    assert cfg.positions == PositionsConfig("/var/log/positions.yaml", 10.0, False)
    assert cfg.limits_config == LimitsConfig(10000.0, 10000, False, True, 0, 0, False)
    assert cfg.target_config.sync_period == 10.0
    client = parse_config("clients: [{url: 'http://loki:3100/loki/api/v1/push'}]").clients[0]
    assert (client.batchwait, client.batchsize, client.timeout) == (1.0, 1048576, 10.0)
    assert client.backoff_config == BackoffConfig(0.5, 300.0, 10)
    assert client.tls_config == TLSConfig()
    sd = parse_config("scrape_configs: [{job_name: a, file_sd_configs: [{files: [a.json]}]}]").scrape_configs[0]
    assert sd.file_sd_configs[0].refresh_interval == 300.0
    syslog = parse_config("scrape_configs: [{job_name: s, syslog: {listen_address: ':1514'}}]").scrape_configs[0]
    assert syslog.syslog == SyslogConfig(listen_address=":1514", listen_protocol="tcp", idle_timeout=120.0)
    assert syslog.syslog.max_message_length == 8192
    push = parse_config("scrape_configs: [{job_name: p, loki_push_api: {}}]").scrape_configs[0].loki_push_api
    assert push is not None
    assert (push.server.http_listen_port, push.max_send_msg_size) == (0, 100 << 20)
    journal = parse_config("scrape_configs: [{job_name: j, journal: {}}]").scrape_configs[0].journal
    assert journal == JournalConfig(max_age=7 * 3600.0)


def test_the_server_keeps_the_address_the_file_gives():
    assert parse_config("server: {http_listen_address: ''}").server.http_listen_address == ""
    assert parse_config("server: {http_listen_address: '::'}").server.http_listen_address == "::"


# ---- YAML like Go reads it ------------------------------------------------------------------------------------


def test_scalars_follow_yaml_1_2_rules_like_go():
    cfg = parse_config(
        """
clients:
  - url: http://x/loki/api/v1/push
    tenant_id: 0755
    external_labels: {env: on, n: 10, date: 2024-01-01, v: 1.10}
    tls_config: {insecure_skip_verify: yes}
scrape_configs:
  - job_name: yes
    static_configs: [{labels: {__path__: /x, flag: no}}]
    pipeline_stages: [{static_labels: {a: on, b: 1.0, c: 0x1F}}]
"""
    )
    client = cfg.clients[0]
    assert client.tenant_id == "0755"  # a string field gets the text as written
    assert client.external_labels == {"env": "on", "n": "10", "date": "2024-01-01", "v": "1.10"}
    assert client.tls_config.insecure_skip_verify is True  # Go still reads yes/no into booleans
    assert cfg.scrape_configs[0].job_name == "yes"
    assert cfg.scrape_configs[0].static_configs[0].labels["flag"] == "no"
    assert cfg.scrape_configs[0].pipeline_stages == [{"static_labels": {"a": "on", "b": 1.0, "c": 31}}]


def test_anchors_and_merge_keys_work():
    cfg = parse_config(
        """
clients:
  - url: http://a/loki/api/v1/push
    <<: &defaults
      batchwait: 3s
      tenant_id: shared
  - url: http://b/loki/api/v1/push
    <<: *defaults
"""
    )
    assert [(c.url, c.batchwait, c.tenant_id) for c in cfg.clients] == [
        ("http://a/loki/api/v1/push", 3.0, "shared"),
        ("http://b/loki/api/v1/push", 3.0, "shared"),
    ]


# ---- errors name their key ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "problem"),
    [
        (
            "scrape_configs:\n  - job_name: a\n    static_configs:\n      - lables: {}\n",
            "scrape_configs[0].static_configs[0]",
            "unknown key 'lables'",
        ),
        ("serverr: {}\n", "", "unknown key 'serverr' (did you mean 'server'?)"),
        ("clients:\n  - url: http://x/push\n    batchwait: soon\n", "clients[0].batchwait", "invalid duration 'soon'"),
        ("clients:\n  - url: http://x/push\n    batchwait: 5\n", "clients[0].batchwait", "needs a unit"),
        ("clients:\n  - url: http://x/push\n    batchsize: lots\n", "clients[0].batchsize", "invalid size 'lots'"),
        (
            "clients:\n  - url: http://x/push\n    backoff_config: {max_retries: many}\n",
            "clients[0].backoff_config.max_retries",
            "expected an integer",
        ),
        ("clients:\n  - tenant_id: a\n", "clients[0].url", "required"),
        ("clients:\n  - url: loki:3100\n", "clients[0].url", "expected an http:// or https:// URL"),
        (
            "clients:\n  - url: http://x/push\n    bearer_token: a\n    bearer_token_file: b\n",
            "clients[0]",
            "at most one of bearer_token & bearer_token_file",
        ),
        (
            "clients:\n  - url: http://x/push\n    tls_config: {cert_file: c.pem}\n",
            "clients[0].tls_config",
            "exactly one of key or key_file",
        ),
        (
            "clients:\n  - url: http://x/push\n    external_labels: [a]\n",
            "clients[0].external_labels",
            "expected a mapping, got a list",
        ),
        ("server:\n  http_listen_port: abc\n", "server.http_listen_port", "expected an integer, got 'abc'"),
        ("server:\n  http_listen_port: 70000\n", "server.http_listen_port", "port must be 0..65535"),
        ("server:\n  log_level: verbose\n", "server.log_level", "unknown value 'verbose'"),
        ("server:\n  disable: maybe\n", "server.disable", "expected true or false"),
        ("positions: [a]\n", "positions", "expected a mapping, got a list"),
        ("scrape_configs:\n  - static_configs: []\n", "scrape_configs[0].job_name", "job_name is empty"),
        ("scrape_configs:\n  - job_name: a\n", "scrape_configs[0]", "no valid target scrape config defined for 'a'"),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs: []\n  - job_name: a\n    static_configs: []\n",
            "scrape_configs[1].job_name",
            "found multiple scrape configs with job name 'a'",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: [{}]\n",
            "scrape_configs[0].kubernetes_sd_configs[0].role",
            "role missing",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: [{role: pods}]\n",
            "scrape_configs[0].kubernetes_sd_configs[0].role",
            "unknown Kubernetes SD role 'pods'",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: [{role: pod, bearer_token: t}]\n",
            "scrape_configs[0].kubernetes_sd_configs[0]",
            "provide the 'api_server' URL explicitly",
        ),
        (
            JOB_A + "    kubernetes_sd_configs: [{role: pod, selectors: [{role: service}]}]\n",
            "scrape_configs[0].kubernetes_sd_configs[0].selectors[0]",
            "pod role supports only pod, node selectors",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs: [{files: [targets.txt]}]\n",
            "scrape_configs[0].file_sd_configs[0].files",
            "not valid for file discovery",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs: [{}]\n",
            "scrape_configs[0].file_sd_configs[0].files",
            "at least one path name",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    syslog: {listen_protocol: sctp}\n",
            "scrape_configs[0].syslog.listen_protocol",
            "unknown value 'sctp'",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs: [{labels: {'': x}}]\n",
            "scrape_configs[0].static_configs[0].labels",
            "label names must not be empty",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs: []\n    pipeline_stages: {cri: {}}\n",
            "scrape_configs[0].pipeline_stages",
            "expected a list",
        ),
        (
            JOB_A + "    static_configs: []\n    relabel_configs:\n      - action: keep\n        regex: '(a'\n",
            "scrape_configs[0].relabel_configs[0].regex",
            "missing closing )",
        ),
        (
            JOB_A + "    static_configs: []\n    relabel_configs:\n      - source_labels: [a]\n",
            "scrape_configs[0].relabel_configs[0].target_label",
            "requires 'target_label'",
        ),
        ("positions:\n  filename: a\n  filename: b\n", "positions.filename", "key is given twice"),
        (
            JOB_A + "    static_configs: []\n    pipeline_stages:\n      - regex: {expression: a, expression: b}\n",
            "scrape_configs[0].pipeline_stages[0].regex.expression",
            "key is given twice",
        ),
    ],
)
def test_errors_name_the_key_path_and_the_problem(text, path, problem):
    err = error_of(text)
    assert err.path == path
    assert problem in err.problem
    assert str(err).startswith(f"config: {path}: " if path else "config: ")


def test_errors_give_the_line():
    err = error_of("clients:\n  - url: http://x/push\n    batchwait: soon\n")
    assert err.line == 3
    assert str(err).endswith("(line 3)")


def test_invalid_yaml_is_reported_with_its_line():
    err = error_of("server:\n  http_listen_port: [1\n")
    assert "invalid YAML" in str(err)
    assert err.line is not None


# ---- things accepted but not acted on -------------------------------------------------------------------------


def test_promtail_keys_without_effect_here_are_accepted_with_a_note():
    cfg = parse_config(
        """
server:
  http_server_read_header_timeout: 5s
clients:
  - url: http://x/loki/api/v1/push
    oauth2: {client_id: a, token_url: http://t}
tracing: {enabled: true}
wal: {enabled: false, dir: /wal}
options: {}
scrape_configs:
  - job_name: files
    encoding: UTF-16
    static_configs: [{labels: {__path__: /a}}]
  - job_name: kafka
    kafka: {brokers: [k:9092], topics: [logs]}
limits_config:
  readline_rate_drop: false
  some_future_limit: 3
"""
    )
    assert cfg.limits_config.readline_rate_drop is False
    jobs = {sc.job_name: sc for sc in cfg.scrape_configs}
    assert jobs["files"].encoding == "UTF-16"
    assert jobs["kafka"].kind == "kafka"
    assert jobs["kafka"].unsupported == {"kafka": {"brokers": ["k:9092"], "topics": ["logs"]}}
    notes = "\n".join(cfg.notes)
    for key in (
        "clients[0].oauth2",
        "tracing.enabled",
        "scrape_configs[0].encoding",
        "scrape_configs[1].kafka",
        "limits_config.some_future_limit",
    ):
        assert key in notes
    assert "wal" not in notes  # disabled: nothing to warn about


def test_the_deprecated_client_block_joins_the_clients():
    cfg = parse_config("client: {url: 'http://old/loki/api/v1/push'}\nclients: [{url: 'http://new/loki/api/v1/push'}]")
    assert [c.url for c in cfg.clients] == ["http://new/loki/api/v1/push", "http://old/loki/api/v1/push"]


def test_kubernetes_settings_are_parsed():
    cfg = parse_config(
        """
scrape_configs:
  - job_name: k
    kubernetes_sd_configs:
      - role: pod
        api_server: https://k8s:6443
        bearer_token_file: /var/run/token
        tls_config: {ca_file: /ca.pem}
        namespaces: {names: [a, b]}
        selectors: [{role: pod, field: spec.nodeName=n1, label: app=web}]
"""
    )
    assert cfg.scrape_configs[0].kubernetes_sd_configs == [
        KubernetesSDConfig(
            role="pod",
            api_server="https://k8s:6443",
            bearer_token_file="/var/run/token",
            tls_config=TLSConfig(ca_file="/ca.pem"),
            namespaces=KubernetesNamespaces(names=["a", "b"]),
            selectors=[KubernetesSelector(role="pod", label="app=web", field="spec.nodeName=n1")],
        )
    ]


# ---- environment expansion ------------------------------------------------------------------------------------


def test_environment_variables_expand_when_asked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOKI_HOST", "loki.internal")
    monkeypatch.setenv("TENANT", "acme")
    monkeypatch.delenv("UNSET_PORT", raising=False)
    text = """
clients:
  - url: http://${LOKI_HOST}:${UNSET_PORT:-3100}/loki/api/v1/push
    tenant_id: ${TENANT}
    external_labels: {price: $$5, raw: $HOME, missing: "${NOT_SET_AT_ALL}x"}
"""
    client = parse_config(text, expand_env=True).clients[0]
    assert client.url == "http://loki.internal:3100/loki/api/v1/push"
    assert client.tenant_id == "acme"
    assert client.external_labels == {"price": "$5", "raw": "$HOME", "missing": "x"}
    # Without expand_env the text is taken literally.
    assert (
        parse_config(text.replace("http://${LOKI_HOST}:${UNSET_PORT:-3100}", "http://h")).clients[0].tenant_id
        == "${TENANT}"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "alpha"),
        ("${A:-d}", "alpha"),
        ("${EMPTY:-d}", "d"),
        ("${NONE:-d}", "d"),
        ("${NONE:=d}", "d"),
        ("${NONE}", ""),
        ("${NONE:-${A}!}", "alpha!"),
        ("${NONE:-a\\\\b}", "a\\b"),
        ("$${A}", "${A}"),
        ("$A ${A}", "$A alpha"),
        ("${A,,} ${A^^} ${A^}", "alpha ALPHA Alpha"),
        ("cost: $5", "cost: $5"),
    ],
)
def test_expansion_follows_envsubst(text, expected):
    assert expand_env(text, {"A": "alpha", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${A", "${}", "${A B}", "${A/x/y}"])
def test_malformed_substitutions_are_errors(text):
    with pytest.raises(ConfigError, match="environment expansion"):
        expand_env(text, {"A": "alpha"})


# ---- durations and sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("2w", 14 * 86400.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("0", 0.0),
        ("-1s", -1.0),
        (0, 0.0),
    ],
)
def test_durations_parse_as_go_and_prometheus(text, seconds):
    assert parse_duration(text, "k") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1 s", "1sec", "1.2.3s", "ten", 5, 1.5, True])
def test_bad_durations_name_their_key(text):
    with pytest.raises(ConfigError, match=r"^a\.b: "):
        parse_duration(text, "a.b")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("102400", 102400),
        (102400, 102400),
        ("256kb", 256 * 1024),
        ("256KB", 256 * 1024),
        ("1MB", 1048576),
        ("1MiB", 1048576),
        ("2M", 2 * 1048576),
        ("1 GB", 1 << 30),
        ("0", 0),
    ],
)
def test_sizes_parse_as_promtails_bytesize(text, size):
    assert parse_size(text, "k") == size


@pytest.mark.parametrize("text", ["", "1.5MB", "-1", -1, "1XB", " 1MB", "MB"])
def test_bad_sizes_name_their_key(text):
    with pytest.raises(ConfigError, match=r"^limits_config\.max_line_size: "):
        parse_size(text, "limits_config.max_line_size")


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_compound_durations_add_up(hours, minutes, seconds, millis):
    text = f"{hours}h{minutes}m{seconds}s{millis}ms"
    assert parse_duration(text, "k") == pytest.approx(hours * 3600 + minutes * 60 + seconds + millis / 1000)


@given(st.integers(0, 10**6), st.sampled_from([("", 0), ("k", 1), ("MB", 2), ("gib", 3), ("T", 4)]))
def test_size_units_are_powers_of_1024(number, unit):
    suffix, power = unit
    assert parse_size(f"{number}{suffix}", "k") == number * 1024**power


# ---- file_sd files --------------------------------------------------------------------------------------------


def test_file_sd_json_and_yaml_files_give_target_groups(tmp_path: Path):
    json_file = tmp_path / "targets.json"
    json_file.write_text(
        json.dumps([{"targets": ["localhost"], "labels": {"__path__": "/var/log/a.log", "job": "a"}}, {}])
    )
    yaml_file = tmp_path / "targets.yml"
    yaml_file.write_text("- targets: [localhost]\n  labels:\n    __path__: /var/log/b.log\n    port: 8080\n")
    assert read_file_sd(json_file) == [
        StaticConfig(["localhost"], {"__path__": "/var/log/a.log", "job": "a", "__meta_filepath": str(json_file)}),
        StaticConfig([], {"__meta_filepath": str(json_file)}),
    ]
    assert read_file_sd(yaml_file) == [
        StaticConfig(["localhost"], {"__path__": "/var/log/b.log", "port": "8080", "__meta_filepath": str(yaml_file)})
    ]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad.json", "[{", "invalid JSON"),
        ("bad.json", '{"targets": []}', "expected a list of target groups"),
        ("bad.json", '[{"targets": ["a"], "lables": {}}]', "unknown key 'lables'"),
        ("bad.json", '[{"labels": {"a": 1}}]', "expected a mapping of label names to strings"),
        ("bad.yaml", "- targets: [a]\n  lables: {}\n", "unknown key 'lables'"),
        ("bad.yaml", "- null\n", "nil target group"),
    ],
)
def test_bad_file_sd_files_are_errors(tmp_path: Path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        read_file_sd(path)
