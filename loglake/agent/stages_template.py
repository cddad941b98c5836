"""Go templates for the `template` and `replace` stages, with the functions Promtail adds to text/template."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

__all__ = ["PipelineTemplate", "TemplateError"]


def _load_engine() -> ModuleType:
    """A private instance of loglake.gotemplate with Promtail's extra functions registered in it.

    gotemplate keeps its function table module-wide and has no way to pass more functions to one template;
    registering Promtail's functions there would leak them into LogQL's line_format, so the pipeline stages use
    their own instance of the module.
    """
    origin = importlib.util.find_spec("loglake.gotemplate")
    name = "loglake.agent._pipeline_gotemplate"
    spec = importlib.util.spec_from_file_location(name, origin.origin if origin else None)
    if spec is None or spec.loader is None:
        raise ImportError("loglake.gotemplate is missing")
    engine = importlib.util.module_from_spec(spec)
    sys.modules[name] = engine  # dataclasses look their module up while the module runs
    spec.loader.exec_module(engine)
    to_str = engine._to_str
    extra = {
        # Promtail's own: hex digests of salt + input (SHA3-256 and SHA-256).
        "Hash": lambda salt, value: hashlib.sha3_256((to_str(salt) + to_str(value)).encode()).hexdigest(),
        "Sha2Hash": lambda salt, value: hashlib.sha256((to_str(salt) + to_str(value)).encode()).hexdigest(),
        # A few sprig functions Promtail inherits that gotemplate's LogQL set does not have.
        "sha256sum": lambda value: hashlib.sha256(to_str(value).encode()).hexdigest(),
        "sha1sum": lambda value: hashlib.sha1(to_str(value).encode()).hexdigest(),
        "regexMatch": lambda rx, value: engine._regex(to_str(rx)).search(to_str(value)) is not None,
        "regexFind": lambda rx, value: _first(engine._regex(to_str(rx)), to_str(value)),
        "quote": lambda *values: " ".join(engine.json.dumps(to_str(v)) for v in values if v is not None),
        "squote": lambda *values: " ".join(f"'{to_str(v)}'" for v in values if v is not None),
    }
    engine._FUNCS.update(extra)
    return engine


def _first(rx: re.Pattern[str], value: str) -> str:
    m = rx.search(value)
    return m.group(0) if m else ""


_ENGINE = _load_engine()
TemplateError: type[Exception] = _ENGINE.TemplateError


class PipelineTemplate:
    """A Go template parsed once and executed over a map of strings (`.name`, `.Value`, `.Entry`)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._template = _ENGINE.Template(text)
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
