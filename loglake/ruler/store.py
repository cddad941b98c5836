"""Local rule storage as Loki lays it out: `<directory>/<tenant>/<namespace>.yaml`, each file a rule file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from loglake.ruler.rules import RuleError, RuleGroup, format_rule_file, parse_rule_file
from loglake.store.files import fsync_path, write_atomic

__all__ = ["RuleStore", "check_name"]

_SUFFIXES = (".yaml", ".yml")
_Fingerprint = frozenset[tuple[str, int, int]]


def check_name(kind: str, name: str) -> None:
    """Refuse a tenant or namespace that is not one plain path component (RuleError naming it)."""
    allowed = f'a {kind} must be a plain name: not empty, no "/" or "\\", not "." or "..", not starting with "."'
    if not name:
        raise RuleError(f"{kind} is empty: {allowed}")
    if "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise RuleError(f"{kind} {name!r} is not allowed: {allowed}")


class RuleStore:
    """Rule groups per tenant and namespace in a directory; writes are atomic, changes bump `version`."""

    def __init__(self, directory: Path) -> None:
        """Use `directory` (created on the first write)."""
        self.directory = Path(directory)
        self._lock = threading.RLock()
        self._version = 0
        self._fingerprint: _Fingerprint | None = None
        # path -> (mtime_ns, size, groups): a file is parsed again only when it changes.
        self._cache: dict[Path, tuple[int, int, list[RuleGroup]]] = {}

    # ---- reading ------------------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """A number that grows whenever the rules change, through this store or by edits to the files."""
        with self._lock:
            fingerprint = self._scan()
            if fingerprint != self._fingerprint:
                if self._fingerprint is not None:
                    self._version += 1
                self._fingerprint = fingerprint
            return self._version

    def tenants(self) -> list[str]:
        """The tenants that have a rules directory, sorted."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())

    def namespaces(self, tenant: str) -> dict[str, list[RuleGroup]]:
        """The tenant's namespaces (sorted) and each one's groups in file order; RuleError names a bad file."""
        check_name("tenant", tenant)
        with self._lock:
            return {ns: self._load(path) for ns, path in sorted(self._namespace_files(tenant).items())}

    def get_group(self, tenant: str, namespace: str, group: str) -> RuleGroup | None:
        """The named group of a namespace, or None."""
        check_name("tenant", tenant)
        check_name("namespace", namespace)
        with self._lock:
            path = self._path(tenant, namespace)
            return next((g for g in self._load(path) if g.name == group), None)

    # ---- writing ------------------------------------------------------------------------------------------------

    def set_group(self, tenant: str, namespace: str, group: RuleGroup) -> None:
        """Store a group in a namespace, replacing the group of the same name in place or adding it at the end."""
        check_name("tenant", tenant)
        check_name("namespace", namespace)
        if not group.name:
            raise RuleError("a rule group needs a name")
        with self._lock:
            path = self._path(tenant, namespace)
            groups = self._load(path)
            for i, existing in enumerate(groups):
                if existing.name == group.name:
                    groups[i] = group
                    break
            else:
                groups.append(group)
            self._write(path, groups)

    def delete_group(self, tenant: str, namespace: str, group: str) -> bool:
        """Delete a group; False if there was none. A namespace left without groups is removed."""
        check_name("tenant", tenant)
        check_name("namespace", namespace)
        with self._lock:
            path = self._path(tenant, namespace)
            groups = self._load(path)
            kept = [g for g in groups if g.name != group]
            if len(kept) == len(groups):
                return False
            if kept:
                self._write(path, kept)
            else:
                self._remove(path)
            return True

    def delete_namespace(self, tenant: str, namespace: str) -> bool:
        """Delete a namespace and all its groups; False if there was none."""
        check_name("tenant", tenant)
        check_name("namespace", namespace)
        with self._lock:
            path = self._path(tenant, namespace)
            if not path.exists():
                return False
            self._remove(path)
            return True

    # ---- files --------------------------------------------------------------------------------------------------

    def _namespace_files(self, tenant: str) -> dict[str, Path]:
        """Namespace -> file. Loki names a namespace after its file; `.yaml`/`.yml` is left out of the name."""
        try:
            entries = list(os.scandir(self.directory / tenant))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, Path] = {}
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            name = entry.name
            for suffix in _SUFFIXES:
                if name.endswith(suffix) and len(name) > len(suffix):
                    name = name[: -len(suffix)]
                    break
            out.setdefault(name, Path(entry.path))
        return out

    def _path(self, tenant: str, namespace: str) -> Path:
        """The namespace's file: the existing one if there is one, else `<namespace>.yaml`."""
        existing = self._namespace_files(tenant).get(namespace)
        return existing or self.directory / tenant / f"{namespace}.yaml"

    def _load(self, path: Path) -> list[RuleGroup]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        cached = self._cache.get(path)
        if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return list(cached[2])
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise RuleError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except FileNotFoundError:
            return []
        groups = parse_rule_file(text, source=str(path))
        self._cache[path] = (stat.st_mtime_ns, stat.st_size, groups)
        return list(groups)

    def _write(self, path: Path, groups: list[RuleGroup]) -> None:
        write_atomic(path, format_rule_file(groups).encode("utf-8"))
        self._cache.pop(path, None)
        self._changed()

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_path(path.parent)
        self._cache.pop(path, None)
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._fingerprint = self._scan()

    def _scan(self) -> _Fingerprint:
        """Every rule file's (path, mtime, size): cheap to take, and it changes when a file is edited."""
        out: set[tuple[str, int, int]] = set()
        for tenant in self.tenants():
            for path in self._namespace_files(tenant).values():
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                out.add((str(path), stat.st_mtime_ns, stat.st_size))
        return frozenset(out)
