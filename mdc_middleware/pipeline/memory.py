"""Giving memory back to the operating system after large payloads were parsed.

glibc's malloc keeps what a process freed for its next allocations, and after large blocks were freed it raises
its threshold for using mmap (up to 32 MiB), so megabyte bodies then come from heaps it never returns: a burst
of thirty 960 KB NDJSON requests left a uvicorn worker at 137 MB, twice its size, long after the rows were
written. ``malloc_trim(0)`` returns the free pages of every heap. It is called by the writer after it parsed
many megabytes, at most once a second, and once more when that work has stopped, off the request path; elsewhere (musl, macOS) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Any, Optional

TRIM_AFTER_BYTES = 8 << 20
_MIN_INTERVAL = 1.0


def _load_trim() -> Optional[Any]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_trim()


class MemoryReleaser:
    """Counts the payload bytes a thread worked through; returns freed memory after many of them, and once more
    when the work has stopped for ``SETTLE`` seconds (by then what the last payloads held is freed too, the
    batches they became included)."""

    SETTLE = 0.5

    def __init__(self) -> None:
        self._bytes = 0
        self._last_trim = 0.0
        self._last_work = 0.0

    @property
    def pending(self) -> bool:
        """Payloads were worked through since the last trim."""
        return bool(self._bytes) and _malloc_trim is not None

    def worked_through(self, nbytes: int) -> None:
        self._bytes += nbytes
        self._last_work = time.monotonic()

    def release_if_due(self) -> bool:
        if _malloc_trim is None or not self._bytes:
            return False
        now = time.monotonic()
        settled = now - self._last_work >= self.SETTLE
        if not settled and (self._bytes < TRIM_AFTER_BYTES or now - self._last_trim < _MIN_INTERVAL):
            return False
        self._bytes, self._last_trim = 0, now
        _malloc_trim(0)
        return True
