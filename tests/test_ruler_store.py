"""Local rule storage: Loki's `<dir>/<tenant>/<namespace>.yaml` layout, atomic writes, versions, bad names."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from loglake.ruler.rules import Rule, RuleError, RuleGroup, parse_rule_file
from loglake.ruler.store import RuleStore

SEED_EXPR = 'sum(count_over_time({namespace="ai-prod"} |~ "error|rate_limited" [1m])) > 5'


def group(name: str, threshold: int = 5, **kw: object) -> RuleGroup:
    rule = Rule(
        kind="alert",
        name="AIServiceErrors",
        expr=SEED_EXPR.replace("> 5", f"> {threshold}"),
        for_s=60.0,
        labels={"severity": "page"},
        annotations={"summary": "{{ $value | humanize }} errors"},
    )
    return RuleGroup(name=name, rules=(rule,), **kw)  # type: ignore[arg-type]


def test_set_get_list_delete(tmp_path: Path):
    store = RuleStore(tmp_path)
    assert store.tenants() == []
    assert store.namespaces("fake") == {}
    assert store.get_group("fake", "ai", "ai-errors") is None

    store.set_group("fake", "ai", group("ai-errors", interval_s=60.0))
    store.set_group("fake", "ai", group("second"))
    store.set_group("fake", "batch", group("jobs"))
    store.set_group("other", "ai", group("ai-errors"))

    assert store.tenants() == ["fake", "other"]
    assert store.get_group("fake", "ai", "ai-errors") == group("ai-errors", interval_s=60.0)
    assert store.namespaces("fake") == {
        "ai": [group("ai-errors", interval_s=60.0), group("second")],
        "batch": [group("jobs")],
    }

    # Replacing keeps the group's place in its file.
    store.set_group("fake", "ai", group("ai-errors", threshold=10))
    assert [g.name for g in store.namespaces("fake")["ai"]] == ["ai-errors", "second"]
    assert store.get_group("fake", "ai", "ai-errors") == group("ai-errors", threshold=10)

    assert store.delete_group("fake", "ai", "ai-errors") is True
    assert store.delete_group("fake", "ai", "ai-errors") is False
    assert store.delete_group("fake", "nosuch", "x") is False
    assert [g.name for g in store.namespaces("fake")["ai"]] == ["second"]

    # The last group gone, the namespace is gone too.
    assert store.delete_group("fake", "ai", "second") is True
    assert not (tmp_path / "fake" / "ai.yaml").exists()
    assert list(store.namespaces("fake")) == ["batch"]

    assert store.delete_namespace("fake", "batch") is True
    assert store.delete_namespace("fake", "batch") is False
    assert store.namespaces("fake") == {}
    assert store.namespaces("other") == {"ai": [group("ai-errors")]}


def test_files_are_lokis_layout_and_format(tmp_path: Path):
    store = RuleStore(tmp_path)
    store.set_group("fake", "ai", group("ai-errors", interval_s=60.0, limit=5))
    path = tmp_path / "fake" / "ai.yaml"
    data = yaml.safe_load(path.read_text())
    assert data == {
        "groups": [
            {
                "name": "ai-errors",
                "interval": "1m",
                "limit": 5,
                "rules": [
                    {
                        "alert": "AIServiceErrors",
                        "expr": SEED_EXPR,
                        "for": "1m",
                        "labels": {"severity": "page"},
                        "annotations": {"summary": "{{ $value | humanize }} errors"},
                    }
                ],
            }
        ]
    }
    assert parse_rule_file(path.read_text(), source=str(path)) == [group("ai-errors", interval_s=60.0, limit=5)]
    assert sorted(p.name for p in (tmp_path / "fake").iterdir()) == ["ai.yaml"]  # no temporary files left


def test_reads_files_put_there_by_hand(tmp_path: Path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "ai.yaml").write_text(f"groups:\n- name: a\n  rules:\n  - alert: A\n    expr: '{SEED_EXPR}'\n")
    (tmp_path / "fake" / "legacy.yml").write_text("groups:\n- name: b\n  rules: []\n")
    (tmp_path / "fake" / "plain").write_text("groups:\n- name: c\n  rules: []\n")
    (tmp_path / "fake" / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "fake" / "subdir").mkdir()
    (tmp_path / ".tmp").mkdir()
    store = RuleStore(tmp_path)
    assert store.tenants() == ["fake"]
    assert {ns: [g.name for g in gs] for ns, gs in store.namespaces("fake").items()} == {
        "ai": ["a"],
        "legacy": ["b"],
        "plain": ["c"],
    }
    # A namespace keeps the file it came from.
    store.set_group("fake", "legacy", RuleGroup(name="d", rules=()))
    assert not (tmp_path / "fake" / "legacy.yaml").exists()
    assert [g.name for g in parse_rule_file((tmp_path / "fake" / "legacy.yml").read_text())] == ["b", "d"]


def test_an_invalid_file_is_named_in_the_error(tmp_path: Path):
    (tmp_path / "fake").mkdir()
    bad = tmp_path / "fake" / "broken.yaml"
    bad.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: '{a=\"b\"}'\n")
    store = RuleStore(tmp_path)
    with pytest.raises(RuleError) as info:
        store.namespaces("fake")
    assert str(info.value) == (
        f'{bad}:5: group "g", rule "A": expr: {{a="b"}} is a log query, '
        "a rule needs a metric query (such as count_over_time(... [5m]))"
    )
    # Writing into a broken file would lose what is in it: refuse.
    with pytest.raises(RuleError, match=r"broken\.yaml:5"):
        store.set_group("fake", "broken", group("x"))
    assert "expr: '{a=\"b\"}'" in bad.read_text()


@pytest.mark.parametrize(
    ("tenant", "namespace", "message"),
    [
        ("fake", "", "namespace is empty: "),
        ("fake", "..", "namespace '..' is not allowed: "),
        ("fake", ".", "namespace '.' is not allowed: "),
        ("fake", "a/b", "namespace 'a/b' is not allowed: "),
        ("fake", "../../etc/passwd", "namespace '../../etc/passwd' is not allowed: "),
        ("fake", "a\\b", "namespace 'a\\\\b' is not allowed: "),
        ("fake", ".hidden", "namespace '.hidden' is not allowed: "),
        ("", "ai", "tenant is empty: "),
        ("../x", "ai", "tenant '../x' is not allowed: "),
    ],
)
def test_unsafe_names_are_refused(tmp_path: Path, tenant: str, namespace: str, message: str):
    store = RuleStore(tmp_path / "rules")
    for call in (
        lambda: store.set_group(tenant, namespace, group("g")),
        lambda: store.get_group(tenant, namespace, "g"),
        lambda: store.delete_group(tenant, namespace, "g"),
        lambda: store.delete_namespace(tenant, namespace),
    ):
        with pytest.raises(RuleError) as info:
            call()
        assert str(info.value).startswith(message)
        assert 'a plain name: not empty, no "/" or "\\", not "." or "..", not starting with "."' in str(info.value)
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "rules"])
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_version_grows_on_every_change(tmp_path: Path):
    store = RuleStore(tmp_path)
    v0 = store.version
    assert store.version == v0  # reading does not change it
    store.set_group("fake", "ai", group("a"))
    v1 = store.version
    assert v1 > v0
    store.set_group("fake", "ai", group("a", threshold=7))
    v2 = store.version
    assert v2 > v1
    store.delete_group("fake", "ai", "missing")
    assert store.version == v2
    store.delete_group("fake", "ai", "a")
    v3 = store.version
    assert v3 > v2
    assert store.version == v3


def test_version_sees_edits_made_outside_the_store(tmp_path: Path):
    store = RuleStore(tmp_path)
    store.set_group("fake", "ai", group("a"))
    v1 = store.version
    path = tmp_path / "fake" / "ai.yaml"
    path.write_text(path.read_text().replace("> 5", "> 50"))
    os.utime(path, ns=(1, 1))  # a different mtime even on filesystems with coarse timestamps
    v2 = store.version
    assert v2 > v1
    assert store.get_group("fake", "ai", "a") == group("a", threshold=50)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "new.yaml").write_text("groups: []\n")
    assert store.version > v2
    (tmp_path / "other" / "new.yaml").unlink()
    v3 = store.version
    assert v3 > v2
    assert store.version == v3


def test_concurrent_writes_are_atomic_and_none_is_lost(tmp_path: Path):
    store = RuleStore(tmp_path)
    path = tmp_path / "fake" / "ai.yaml"
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            for i in range(15):
                store.set_group("fake", "ai", group(f"w{n}-{i % 5}", threshold=i))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        # Another reader of the files (the manager, a person) must never see a half-written file.
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            try:
                parse_rule_file(text)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    names = [g.name for g in store.namespaces("fake")["ai"]]
    assert sorted(names) == sorted(f"w{n}-{k}" for n in range(4) for k in range(5))
    assert [p.name for p in (tmp_path / "fake").iterdir()] == ["ai.yaml"]


def test_two_stores_on_one_directory_see_each_other(tmp_path: Path):
    writer, reader = RuleStore(tmp_path), RuleStore(tmp_path)
    before = reader.version
    writer.set_group("fake", "ai", group("a"))
    assert reader.version > before
    assert reader.get_group("fake", "ai", "a") == group("a")
