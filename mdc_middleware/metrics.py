"""Counters for everything that happens to a row, so nothing is ever lost silently.

Every skipped, dropped, retried or failed row is counted with a reason. Counters are plain integers
behind one lock: the request path increments a few of them per request, which costs well under a
microsecond.
"""
from __future__ import annotations

import threading
import weakref
from collections import Counter
from typing import Dict, List, Mapping, Tuple


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
        "rows_recovered",      # rows journaled by a process that died before delivering them, taken over
        "journal_errors",      # journal writes that failed (disk full): those rows were in memory only
        "bytes_written",
        "batches_written",
        "write_errors",        # flushes that failed after the sink's own retries
        "storage_retries",     # storage requests retried after a transient fault
        "storage_conflicts",   # appends that found another writer had appended first (shared files)
        "files_created",
        "files_rolled_over",
        "rows_as_json",        # rows written as one JSON cell: their set of columns came past the day's limit
        "internal_errors",     # bugs caught so they never reach the app; see the log
        "encoder_captures",    # MDC_ENCODER=process: captures parsed and encoded by the helper process
        "encoder_failures",    # MDC_ENCODER=process: helper failures; their batches were encoded in-process
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start from zero (a forked child counts only its own rows)."""
        self._registry_lock = threading.Lock()
        self._local = threading.local()
        self._shards: List[Tuple["weakref.ref[threading.Thread]", _Shard]] = []  # (owner thread, its counters)
        self._ended = _Shard()  # what threads that have ended counted

    def _shard(self) -> "_Shard":
        """This thread's own counters: counting takes no lock that another thread could be holding."""
        try:
            return self._local.shard
        except AttributeError:
            shard = self._local.shard = _Shard()
            owner = weakref.ref(threading.current_thread())
            with self._registry_lock:
                self._fold_ended_threads()
                self._shards.append((owner, shard))
            return shard

    def _fold_ended_threads(self) -> None:
        """Add the counters of threads that have ended into one set (under the registry lock).

        A server that starts a thread per request (werkzeug's threaded dev server, ThreadingMixIn)
        would otherwise leave one set per request behind, and every snapshot would sum them all. An ended thread counts nothing more, so moving its counts is safe.
        """
        live = []
        for owner, shard in self._shards:
            thread = owner()
            if thread is None or not thread.is_alive():
                self._ended.add(shard)
            else:
                live.append((owner, shard))
        self._shards = live

    def add(self, name: str, amount: int = 1) -> None:
        try:  # this thread's shard, without a call (on the request path twice a request)
            counts = self._local.shard.counts
        except AttributeError:
            counts = self._shard().counts
        counts[name] += amount

    def skip(self, reason: str, amount: int = 1) -> None:
        """A payload or row that was deliberately not collected (media, mismatch, too large…)."""
        self._shard().skipped[reason] += amount

    def drop(self, reason: str, rows: int) -> None:
        shard = self._shard()
        shard.dropped[reason] += rows
        shard.counts["rows_dropped"] += rows

    def totals(self) -> Tuple[Dict[str, int], Dict[str, int], Dict[str, int]]:
        """(counts, skipped, dropped) as plain dicts: what a helper process reports back."""
        counts, skipped, dropped, _, _ = self._summed()
        return dict(counts), dict(skipped), dict(dropped)

    def _summed(self) -> Tuple[Counter, Counter, Counter, float, float]:
        """Every thread's counters added up: counts, skipped, dropped, write seconds total and max."""
        counts: Counter = Counter()
        skipped: Counter = Counter()
        dropped: Counter = Counter()
        seconds_total = seconds_max = 0.0
        with self._registry_lock:  # held throughout: a fold must not move counts between two reads of them
            for shard in [self._ended, *(shard for _, shard in self._shards)]:
                # dict() copies a live thread's counters in one step of the interpreter: never half-updated
                counts.update(dict(shard.counts))
                skipped.update(dict(shard.skipped))
                dropped.update(dict(shard.dropped))
                seconds_total += shard.write_seconds_total
                seconds_max = max(seconds_max, shard.write_seconds_max)
        return counts, skipped, dropped, seconds_total, seconds_max

    def absorb(self, counts: Mapping[str, int], skipped: Mapping[str, int], dropped: Mapping[str, int]) -> None:
        """Add what a helper process counted (see ``deltas``)."""
        shard = self._shard()
        shard.counts.update(counts)
        shard.skipped.update(skipped)
        shard.dropped.update(dropped)

    def observe_write(self, seconds: float, rows: int, nbytes: int) -> None:
        shard = self._shard()
        shard.counts["rows_written"] += rows
        shard.counts["bytes_written"] += nbytes
        shard.counts["batches_written"] += 1
        shard.write_seconds_total += seconds
        shard.write_seconds_max = max(shard.write_seconds_max, seconds)

    def snapshot(self) -> Dict[str, object]:
        counts, skipped, dropped, seconds_total, seconds_max = self._summed()
        result: Dict[str, object] = {name: counts.get(name, 0) for name in self.COUNTERS}
        result["skipped"] = dict(skipped)
        result["dropped_reasons"] = dict(dropped)
        batches = counts.get("batches_written", 0)
        result["write_seconds_mean"] = seconds_total / batches if batches else 0.0
        result["write_seconds_max"] = seconds_max
        return result


class _Shard:
    __slots__ = ("counts", "skipped", "dropped", "write_seconds_total", "write_seconds_max")

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.skipped: Counter = Counter()
        self.dropped: Counter = Counter()
        self.write_seconds_total = 0.0
        self.write_seconds_max = 0.0

    def add(self, other: "_Shard") -> None:
        self.counts.update(other.counts)
        self.skipped.update(other.skipped)
        self.dropped.update(other.dropped)
        self.write_seconds_total += other.write_seconds_total
        self.write_seconds_max = max(self.write_seconds_max, other.write_seconds_max)


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
