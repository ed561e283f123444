"""Counters for everything that happens to a row, so nothing is ever lost silently.

Every skipped, dropped, retried or failed row is counted with a reason. Counters are plain integers
behind one lock: the request path increments a few of them per request, which costs well under a
microsecond.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Dict


class Metrics:
    """Thread-safe counters; ``snapshot()`` gives a consistent copy."""

    COUNTERS = (
        "requests_seen",       # requests the middleware looked at (matched route, collection on)
        "captures_enqueued",   # request/response pairs queued for extraction on the writer thread
        "captures_dropped",    # pairs dropped because the queue was full (rows unknown yet)
        "rows_captured",       # rows extracted from payloads or handed to collect()
        "rows_enqueued",       # rows accepted by the queue
        "rows_written",        # rows acknowledged by the sink
        "rows_dropped",        # rows lost by policy (queue full with no spool); see dropped_reasons
        "rows_retried",        # rows in batches that failed once and were tried again
        "rows_spooled",        # rows put in the disk spool (storage failing or slow)
        "rows_replayed",       # spooled rows delivered later
        "spool_corrupt_records",  # torn or corrupt spool records skipped on replay
        "bytes_written",
        "batches_written",
        "write_errors",        # flushes that failed after the sink's own retries
        "storage_retries",     # storage requests retried after a transient fault
        "files_created",
        "files_rolled_over",
        "internal_errors",     # bugs caught so they never reach the app; see the log
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start from zero (a forked child counts only its own rows)."""
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._skipped: Counter = Counter()
        self._dropped: Counter = Counter()
        self._write_seconds_total = 0.0
        self._write_seconds_max = 0.0

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def skip(self, reason: str, amount: int = 1) -> None:
        """A payload or row that was deliberately not collected (media, mismatch, too large…)."""
        with self._lock:
            self._skipped[reason] += amount

    def drop(self, reason: str, rows: int) -> None:
        with self._lock:
            self._dropped[reason] += rows
            self._counts["rows_dropped"] += rows

    def observe_write(self, seconds: float, rows: int, nbytes: int) -> None:
        with self._lock:
            self._counts["rows_written"] += rows
            self._counts["bytes_written"] += nbytes
            self._counts["batches_written"] += 1
            self._write_seconds_total += seconds
            self._write_seconds_max = max(self._write_seconds_max, seconds)

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            result: Dict[str, object] = {name: self._counts.get(name, 0) for name in self.COUNTERS}
            result["skipped"] = dict(self._skipped)
            result["dropped_reasons"] = dict(self._dropped)
            batches = self._counts.get("batches_written", 0)
            result["write_seconds_mean"] = self._write_seconds_total / batches if batches else 0.0
            result["write_seconds_max"] = self._write_seconds_max
            return result


def merge(snapshots: list) -> Dict[str, object]:
    """Sum several snapshots (one per writer) into one."""
    total: Dict[str, object] = {name: 0 for name in Metrics.COUNTERS}
    total.update(skipped={}, dropped_reasons={}, write_seconds_mean=0.0, write_seconds_max=0.0, queue_depth=0)
    for snap in snapshots:
        for key, value in snap.items():
            if isinstance(value, dict):
                merged = Counter(total.get(key) or {})
                merged.update(value)
                total[key] = dict(merged)
            elif key == "write_seconds_max":
                total[key] = max(total[key], value)  # type: ignore[type-var]
            elif key == "write_seconds_mean":
                total[key] = max(total[key], value)  # type: ignore[type-var]
            else:
                total[key] = total.get(key, 0) + value  # type: ignore[operator]
    return total
