"""Prometheus relabeling (`relabel_configs`) of target label sets, as Promtail applies it to discovered targets.

Rules are parsed and validated once (`parse_relabel_configs`, Prometheus' checks with UTF-8 label names as
Promtail uses them); `relabel` applies them in order to one label set. Regexes are Go RE2 syntax, fully
anchored as Prometheus' `^(?s:...)$` wrapper makes them (translation in re2.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from loglake.agent.re2 import CompiledRE2, PatternError, compile_re2, expand_template

__all__ = [
    "ACTIONS",
    "CompiledRE2",
    "PatternError",
    "RelabelError",
    "RelabelRule",
    "compile_re2",
    "expand_template",
    "parse_relabel_configs",
    "relabel",
]

ACTIONS = frozenset(
    {
        "replace",
        "keep",
        "drop",
        "keepequal",
        "dropequal",
        "hashmod",
        "labelmap",
        "labeldrop",
        "labelkeep",
        "lowercase",
        "uppercase",
    }
)
_KEYS = ("source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action")
_DEFAULT_SEPARATOR = ";"
_DEFAULT_REGEX = "(.*)"
_DEFAULT_REPLACEMENT = "$1"
_MAX_UINT64 = (1 << 64) - 1


class RelabelError(ValueError):
    """A relabel rule Prometheus would reject; the message names the rule's index and key."""

    def __init__(self, where: str, index: int | None, key: str | None, problem: str) -> None:
        self.where = where
        self.index = index
        self.key = key
        self.problem = problem
        path = where + (f"[{index}]" if index is not None else "") + (f".{key}" if key else "")
        super().__init__(f"{path}: {problem}")


# ---- rules ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelabelRule:
    """One validated `relabel_configs` entry; `regex` is the user's text, compiled fully anchored."""

    action: str = "replace"
    source_labels: tuple[str, ...] = ()
    separator: str = _DEFAULT_SEPARATOR
    regex: str = _DEFAULT_REGEX
    target_label: str = ""
    replacement: str = _DEFAULT_REPLACEMENT
    modulus: int = 0
    compiled: CompiledRE2 = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.compiled is None:
            object.__setattr__(self, "compiled", compile_re2(self.regex))


def _as_text(value: Any, where: str, index: int, key: str) -> str:
    if value is None:
        return ""  # YAML null leaves Go's zero value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise RelabelError(where, index, key, f"expected a string, got {type(value).__name__}")


def _parse_rule(raw: Any, where: str, index: int) -> RelabelRule:
    if not isinstance(raw, Mapping):
        raise RelabelError(where, index, None, f"expected a mapping of relabel settings, got {type(raw).__name__}")
    for key in raw:
        if key not in _KEYS:
            raise RelabelError(where, index, None, f"unknown key {key!r} (allowed: {', '.join(_KEYS)})")

    # A null value keeps the default, as Go's YAML leaves the field alone.
    values = {key: value for key, value in raw.items() if value is not None}
    action = _as_text(values.get("action", "replace"), where, index, "action")
    if not action:
        raise RelabelError(where, index, "action", "relabel action cannot be empty")
    if action.lower() not in ACTIONS:
        raise RelabelError(
            where, index, "action", f"unknown relabel action {action!r} (allowed: {', '.join(sorted(ACTIONS))})"
        )
    action = action.lower()

    sources_raw = values.get("source_labels")
    sources_given = "source_labels" in values
    if sources_raw is None:
        sources: tuple[str, ...] = ()
    elif isinstance(sources_raw, list | tuple):
        sources = tuple(_as_text(s, where, index, "source_labels") for s in sources_raw)
        if any(not s for s in sources):
            raise RelabelError(where, index, "source_labels", "label names must not be empty")
    else:
        raise RelabelError(where, index, "source_labels", f"expected a list of label names, got {sources_raw!r}")

    separator = _as_text(values.get("separator", _DEFAULT_SEPARATOR), where, index, "separator")
    regex_given = "regex" in values
    regex = _as_text(values.get("regex", _DEFAULT_REGEX), where, index, "regex")
    target = _as_text(values.get("target_label", ""), where, index, "target_label")
    replacement = _as_text(values.get("replacement", _DEFAULT_REPLACEMENT), where, index, "replacement")

    modulus_raw = values.get("modulus", 0)
    if isinstance(modulus_raw, str) and modulus_raw.strip().isdigit():
        modulus_raw = int(modulus_raw)
    if isinstance(modulus_raw, bool) or not isinstance(modulus_raw, int) or not 0 <= modulus_raw <= _MAX_UINT64:
        raise RelabelError(where, index, "modulus", f"expected an unsigned 64-bit integer, got {modulus_raw!r}")
    modulus = modulus_raw

    try:
        compiled = compile_re2(regex)
    except PatternError as exc:
        raise RelabelError(where, index, "regex", str(exc)) from None

    def fail(key: str, problem: str) -> RelabelError:
        return RelabelError(where, index, key, problem)

    # Prometheus' Config.Validate, with the UTF-8 name rules Promtail validates against.
    if action == "hashmod" and modulus == 0:
        raise fail("modulus", "relabel configuration for hashmod requires non-zero modulus")
    if action in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and not target:
        raise fail("target_label", f"relabel configuration for {action} action requires 'target_label' value")
    if action in ("lowercase", "uppercase", "keepequal", "dropequal") and replacement != _DEFAULT_REPLACEMENT:
        raise fail("replacement", f"'replacement' can not be set for {action} action")
    if action == "labelmap" and not replacement:
        raise fail("replacement", f"{replacement!r} is invalid 'replacement' for {action} action")
    if action in ("keepequal", "dropequal"):
        for key, changed in (
            ("regex", regex_given),
            ("modulus", modulus != 0),
            ("separator", separator != _DEFAULT_SEPARATOR),
        ):
            if changed:
                raise fail(
                    key, f"{action} action requires only 'source_labels' and `target_label`, and no other fields"
                )
    if action in ("labeldrop", "labelkeep"):
        for key, changed in (
            ("source_labels", sources_given),
            ("target_label", target != ""),
            ("modulus", modulus != 0),
            ("separator", separator != _DEFAULT_SEPARATOR),
            ("replacement", replacement != _DEFAULT_REPLACEMENT),
        ):
            if changed:
                raise fail(key, f"{action} action requires only 'regex', and no other fields")

    return RelabelRule(
        action=action,
        source_labels=sources,
        separator=separator,
        regex=regex,
        target_label=target,
        replacement=replacement,
        modulus=modulus,
        compiled=compiled,
    )


def parse_relabel_configs(raw: list[dict[str, Any]] | None, where: str) -> list[RelabelRule]:
    """Validate a `relabel_configs` list (as YAML gives it) into rules; `where` prefixes error messages."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise RelabelError(where, None, None, f"expected a list of relabel rules, got {type(raw).__name__}")
    return [_parse_rule(item, where, i) for i, item in enumerate(raw)]


# ---- applying rules -------------------------------------------------------------------------------------------


class _LabelBuilder:
    """Prometheus' labels.Builder: a sorted base set plus ordered additions and deletions.

    Kept because the order in which labelmap visits labels (base labels sorted, then additions in the
    order they were made) decides which value wins when two labels map to the same name.
    """

    def __init__(self, base: Mapping[str, str]) -> None:
        self.base = dict(sorted(base.items()))
        self.add: dict[str, str] = {}
        self.deleted: set[str] = set()

    def get(self, name: str) -> str:
        if name in self.add:
            return self.add[name]
        if name in self.deleted:
            return ""
        return self.base.get(name, "")

    def set(self, name: str, value: str) -> None:
        if value == "":
            self.delete(name)  # an empty value is the same as no label
        else:
            self.add[name] = value

    def delete(self, name: str) -> None:
        self.add.pop(name, None)
        self.deleted.add(name)

    def snapshot(self) -> Iterator[tuple[str, str]]:
        for name, value in self.base.items():
            if name not in self.deleted and name not in self.add:
                yield name, value
        yield from self.add.items()

    def labels(self) -> dict[str, str]:
        return dict(sorted((n, v) for n, v in self.snapshot() if n and v))


def _lower(value: str) -> str:
    # Go maps each rune on its own (no final-sigma rule, no expansions such as 'ß' → 'SS').
    return "".join(_SIMPLE_LOWER.get(ch) or (low if len(low := ch.lower()) == 1 else ch) for ch in value)


def _upper(value: str) -> str:
    return "".join(_upper_char(ch) for ch in value)


def _upper_char(ch: str) -> str:
    upper = ch.upper()
    if len(upper) == 1:
        return upper
    # Where full upper case expands (Greek with iota subscript), Go's simple mapping is the title case.
    title = ch.title()
    return title if len(title) == 1 else ch


_SIMPLE_LOWER = {"\u0130": "i"}  # the one character whose full lower case differs from its simple mapping


def _apply(rule: RelabelRule, lb: _LabelBuilder) -> bool:
    value = rule.separator.join(lb.get(name) for name in rule.source_labels)
    regex = rule.compiled.pattern
    action = rule.action
    if action == "drop":
        return regex.search(value) is None
    if action == "keep":
        return regex.search(value) is not None
    if action == "dropequal":
        return lb.get(rule.target_label) != value
    if action == "keepequal":
        return lb.get(rule.target_label) == value
    if action == "replace":
        match = regex.search(value)
        if match is None:
            return True
        target = expand_template(rule.target_label, match, rule.compiled.names)
        if not target:
            return True  # an invalid (empty) target name: Prometheus skips the write
        lb.set(target, expand_template(rule.replacement, match, rule.compiled.names))
    elif action == "lowercase":
        lb.set(rule.target_label, _lower(value))
    elif action == "uppercase":
        lb.set(rule.target_label, _upper(value))
    elif action == "hashmod":
        digest = hashlib.md5(value.encode("utf-8")).digest()  # Prometheus shards with md5; not a security use
        lb.set(rule.target_label, str(int.from_bytes(digest[8:], "big") % rule.modulus))
    elif action == "labelmap":
        for name, label_value in list(lb.snapshot()):
            if regex.search(name) is not None:
                lb.set(rule.compiled.replace_all(name, rule.replacement), label_value)
    elif action == "labeldrop":
        for name, _ in list(lb.snapshot()):
            if regex.search(name) is not None:
                lb.delete(name)
    elif action == "labelkeep":
        for name, _ in list(lb.snapshot()):
            if regex.search(name) is None:
                lb.delete(name)
    return True


def relabel(labels: dict[str, str], rules: list[RelabelRule]) -> dict[str, str] | None:
    """Apply rules in order to a target's labels; None when a rule drops the target.

    Labels with empty values are removed from the result; `__`-prefixed labels are kept for the caller.
    """
    lb = _LabelBuilder(labels)
    for rule in rules:
        if not _apply(rule, lb):
            return None
    return lb.labels()
