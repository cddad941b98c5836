"""A client for the ruler's API of Loki (or loglake): list, get, set and delete rule groups by namespace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import yaml

from loglake.client.loki import LokiClient, LokiError

RULES_PATH = "/loki/api/v1/rules"
NO_RULE_GROUPS = "no rule groups found"


def _segment(text: str) -> str:
    return quote(text, safe="")


class RulesClient(LokiClient):
    """A client for `/loki/api/v1/rules`: rule groups travel as YAML, one tenant per client."""

    def _yaml(self, path: str) -> Any:
        response = self._send("GET", path)
        try:
            return yaml.safe_load(response.text)
        except yaml.YAMLError:
            raise LokiError(response.status_code, f"the server's answer is not YAML: {response.text[:200]!r}") from None

    def list_rules(self, namespace: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Return `{namespace: [group, ...]}` of every namespace (or one); empty when there are no rule groups."""
        path = RULES_PATH if namespace is None else f"{RULES_PATH}/{_segment(namespace)}"
        try:
            data = self._yaml(path)
        except LokiError as exc:
            # Loki answers "nothing here" with a 404; to a caller that is an empty listing, not a failure.
            if exc.status == 404 and exc.message == NO_RULE_GROUPS:
                return {}
            raise
        return dict(data or {})

    def get_group(self, namespace: str, group: str) -> dict[str, Any]:
        """Return one rule group as a mapping (`name`, `interval`, `rules`, ...)."""
        return dict(self._yaml(f"{RULES_PATH}/{_segment(namespace)}/{_segment(group)}") or {})

    def set_group(self, namespace: str, group: str | Mapping[str, Any]) -> None:
        """Create or replace one rule group in `namespace`, given as YAML text or as a mapping."""
        text = group if isinstance(group, str) else yaml.safe_dump(dict(group), sort_keys=False, allow_unicode=True)
        self._send(
            "POST",
            f"{RULES_PATH}/{_segment(namespace)}",
            content=text.encode("utf-8"),
            headers={"Content-Type": "application/yaml"},
        )

    def delete_group(self, namespace: str, group: str) -> None:
        """Delete one rule group."""
        self._send("DELETE", f"{RULES_PATH}/{_segment(namespace)}/{_segment(group)}")

    def delete_namespace(self, namespace: str) -> None:
        """Delete every rule group of a namespace."""
        self._send("DELETE", f"{RULES_PATH}/{_segment(namespace)}")
