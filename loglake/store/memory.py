"""Giving freed memory back to the OS after flushes and compactions, which free hundreds of MB at once."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import pyarrow as pa

log = logging.getLogger(__name__)

_libc: ctypes.CDLL | None = None


def use_system_allocator() -> None:
    """Make Arrow allocate with malloc, so `release_freed_memory` can return what flushes free."""
    global _libc
    try:
        pa.set_memory_pool(pa.system_memory_pool())
        name = ctypes.util.find_library("c")
        lib = ctypes.CDLL(name) if name else None
        _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else None
    except (OSError, AttributeError):
        log.debug("malloc_trim is not available; freed memory stays with the allocator")


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc's malloc_trim); a no-op elsewhere."""
    if _libc is not None:
        _libc.malloc_trim(0)
