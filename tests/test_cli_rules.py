"""`loglake rules`: checking rule files, and managing a real server's rule groups from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "alerts" / "ai-errors.yaml"

GOOD = """
groups:
  - name: api
    interval: 30s
    rules:
      - alert: ApiErrors
        expr: sum by (app) (rate({app="api"} |= "error" [5m])) > 1
        for: 2m
        annotations:
          summary: "{{ $labels.app }} logs {{ $value | humanize }} errors a second"
      - record: api:error_lines:rate5m
        expr: sum(rate({app="api"} |= "error" [5m]))
  - name: web
    rules:
      - alert: WebDown
        expr: absent_over_time({app="web"}[5m])
"""

BAD = """
groups:
  - name: broken
    rules:
      - alert: NotAMetric
        expr: '{app="api"} |= "error"'
      - alert: BadTemplate
        expr: sum(count_over_time({app="api"}[1m])) > 1
        annotations:
          summary: "{{ $value | nosuchfunc }}"
      - record: bad name
        expr: sum(count_over_time({app="api"}[1m]))
"""


def run_loglake(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Run `python -m loglake ARGS` and return the finished process (text output)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    for name in ("LOKI_ADDR", "LOKI_ORG_ID"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "loglake", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- rules check ------------------------------------------------------------------------------------------------


def test_check_accepts_the_shipped_example():
    result = run_loglake("rules", "check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{EXAMPLE}: 1 group, 1 rule OK\n"


def test_the_shipped_example_is_the_seeds_alert():
    [group] = yaml.safe_load(EXAMPLE.read_text())["groups"]
    [rule] = group["rules"]
    assert rule["alert"] == "AIServiceErrors"
    assert rule["expr"] == 'sum(count_over_time({namespace="ai-prod"} |~ "error|rate_limited" [1m])) > 5'
    assert "{{ $value" in rule["annotations"]["summary"]


def test_check_counts_groups_and_rules_of_each_good_file(tmp_path):
    good = write(tmp_path, "good.yaml", GOOD)
    result = run_loglake("rules", "check", good, str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{good}: 2 groups, 3 rules OK", f"{EXAMPLE}: 1 group, 1 rule OK"]


def test_check_names_every_problem_with_file_line_group_and_rule_and_exits_1(tmp_path):
    good, bad = write(tmp_path, "good.yaml", GOOD), write(tmp_path, "bad.yaml", BAD)
    result = run_loglake("rules", "check", good, bad)
    assert result.returncode == 1
    assert f"{good}: 2 groups, 3 rules OK" in result.stdout
    errors = result.stderr.splitlines()
    assert len(errors) == 3, result.stderr
    assert errors[0].startswith(f"{bad}:6: ") and 'group "broken", rule "NotAMetric"' in errors[0]
    assert "is a log query, a rule needs a metric query" in errors[0]
    assert 'rule "BadTemplate"' in errors[1] and 'function "nosuchfunc" not defined' in errors[1]
    assert 'rule "bad name"' in errors[2] and "not a valid metric name" in errors[2]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("groups: [unclosed\n", "invalid YAML"),
        ("groups:\n  - name: g\n    rules: []\n    colour: red\n", "colour"),
        ("groups:\n  - name: g\n    interval: often\n    rules: []\n", "interval"),
    ],
)
def test_check_refuses_files_that_are_not_rule_files(tmp_path, text, message):
    path = write(tmp_path, "x.yaml", text)
    result = run_loglake("rules", "check", path)
    assert result.returncode == 1
    assert path in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_a_missing_file_and_reads_standard_input(tmp_path):
    result = run_loglake("rules", "check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in result.stderr
    result = run_loglake("rules", "check", "-", stdin=GOOD)
    assert (result.returncode, result.stdout) == (0, "<stdin>: 2 groups, 3 rules OK\n")


# --- list, get, set, delete against a server -------------------------------------------------------------------


@pytest.fixture
def addr(make_server: Any) -> str:
    return make_server({"auth_enabled": True}).url


def test_set_list_get_and_delete_rule_groups_on_a_server(addr, tmp_path):
    client = ["--addr", addr, "--org-id", "team-a", "-q"]
    good = write(tmp_path, "good.yaml", GOOD)

    result = run_loglake("rules", "list", *client)
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert "no rule groups found" in result.stderr

    result = run_loglake("rules", "set", "api", good, *client)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "set rule group 'api' in namespace 'api'",
        "set rule group 'web' in namespace 'api'",
    ]
    # One group without `groups:` (the API's own body) works too.
    one = write(tmp_path, "one.yaml", 'name: solo\nrules:\n  - record: x:y\n    expr: sum(rate({app="a"}[1m]))\n')
    assert run_loglake("rules", "set", "misc", one, *client).returncode == 0

    result = run_loglake("rules", "list", *client)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "NAMESPACE  GROUP  RULES",
        "api        api    2",
        "api        web    1",
        "misc       solo   1",
    ]
    result = run_loglake("rules", "list", "misc", *client)
    assert result.stdout.splitlines()[1:] == ["misc       solo   1"]

    result = run_loglake("rules", "get", "api", "api", *client)
    assert result.returncode == 0, result.stderr
    group = yaml.safe_load(result.stdout)
    assert group == yaml.safe_load(GOOD)["groups"][0]

    result = run_loglake("rules", "get", "api", *client)
    assert [g["name"] for g in yaml.safe_load(result.stdout)["api"]] == ["api", "web"]

    # Another tenant sees none of it, and the address and tenant can come from the environment.
    result = run_loglake("rules", "list", "-q", env={"LOKI_ADDR": addr, "LOKI_ORG_ID": "team-b"})
    assert (result.returncode, result.stdout) == (0, "")

    result = run_loglake("rules", "delete", "api", "web", *client)
    assert (result.returncode, result.stdout) == (0, "deleted rule group 'web' from namespace 'api'\n")
    result = run_loglake("rules", "get", "api", "web", *client)
    assert result.returncode == 1
    assert "loglake rules get: group does not exist (HTTP 404)" in result.stderr

    result = run_loglake("rules", "delete", "misc", *client)
    assert (result.returncode, result.stdout) == (0, "deleted namespace 'misc'\n")
    result = run_loglake("rules", "delete", "misc", *client)
    assert result.returncode == 1 and "group namespace does not exist (HTTP 404)" in result.stderr
    assert run_loglake("rules", "list", *client).stdout.splitlines()[1:] == ["api        api    2"]


def test_set_checks_the_file_first_and_sends_nothing_when_it_is_invalid(addr, tmp_path):
    client = ["--addr", addr, "--org-id", "t", "-q"]
    bad = write(tmp_path, "bad.yaml", BAD)
    result = run_loglake("rules", "set", "ns", bad, *client)
    assert result.returncode == 1
    assert 'rule "NotAMetric"' in result.stderr and "Traceback" not in result.stderr
    assert run_loglake("rules", "list", *client).stdout == ""


def test_the_server_refusal_reaches_the_user(addr, tmp_path):
    # A namespace the server refuses: the message comes from the server, with its status.
    good = write(tmp_path, "good.yaml", GOOD)
    result = run_loglake("rules", "set", ".hidden", good, "--addr", addr, "--org-id", "t", "-q")
    assert result.returncode == 1
    assert "namespace '.hidden' is not allowed" in result.stderr and "(HTTP 400)" in result.stderr


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    from tests.conftest import free_port

    result = run_loglake("rules", "list", "--addr", f"http://127.0.0.1:{free_port()}", "-q")
    assert result.returncode == 1
    assert result.stderr.startswith("loglake rules list: cannot reach http://127.0.0.1:")
