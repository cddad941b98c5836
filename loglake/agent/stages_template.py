"""Go templates for the `template` and `replace` stages, with the functions Promtail adds to text/template."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from loglake import gotemplate

__all__ = ["PipelineTemplate", "TemplateError"]


def _to_str(value: Any) -> str:
    return gotemplate._to_str(value)


def _regex(rx: Any) -> re.Pattern[str]:
    return gotemplate._regex(_to_str(rx))


# Promtail's functions on top of text/template's and Loki's; given to each pipeline template only, so LogQL's
# line_format does not gain them.
PROMTAIL_FUNCS: dict[str, Any] = {
    # Promtail's own: hex digests of salt + input (SHA3-256 and SHA-256).
    "Hash": lambda salt, value: hashlib.sha3_256((_to_str(salt) + _to_str(value)).encode()).hexdigest(),
    "Sha2Hash": lambda salt, value: hashlib.sha256((_to_str(salt) + _to_str(value)).encode()).hexdigest(),
    # A few sprig functions Promtail inherits that the LogQL set does not have.
    "sha256sum": lambda value: hashlib.sha256(_to_str(value).encode()).hexdigest(),
    "sha1sum": lambda value: hashlib.sha1(_to_str(value).encode()).hexdigest(),
    "regexMatch": lambda rx, value: _regex(rx).search(_to_str(value)) is not None,
    "regexFind": lambda rx, value: _first(_regex(rx), _to_str(value)),
    "quote": lambda *values: " ".join(json.dumps(_to_str(v)) for v in values if v is not None),
    "squote": lambda *values: " ".join(f"'{_to_str(v)}'" for v in values if v is not None),
}


def _first(rx: re.Pattern[str], value: str) -> str:
    m = rx.search(value)
    return m.group(0) if m else ""


TemplateError = gotemplate.TemplateError


class PipelineTemplate:
    """A Go template parsed once and executed over a map of strings (`.name`, `.Value`, `.Entry`)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._template = gotemplate.Template(text, PROMTAIL_FUNCS)
        fields = self._template.fields
        # The names the template reads, so a stage builds only those (None: it may read any).
        self.fields: frozenset[str] | None = fields
        self.constant: str | None = text if "{{" not in text else None

    def render(self, data: Mapping[str, Any]) -> str | None:
        """Execute the template with `.` bound to `data`; None when execution fails (Promtail then skips)."""
        if self.constant is not None:
            return self.constant
        try:
            return self._template.render(data, "", 0)
        except TemplateError:
            return None
