"""The background writer: a bounded queue, one thread, batches by rows, bytes and time.

Shaped like OpenTelemetry's BatchSpanProcessor: ``submit`` never blocks (a full queue drops and
counts), the thread encodes CSV and appends per file, ``force_flush`` and ``shutdown`` take a
deadline. When the sink fails, batches are kept and retried with backoff; while they wait the thread
stops draining the queue, so memory stays bounded by the queue limits.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .metrics import Metrics
from .paths import Target
from .records import Record, default_prefix, encode, header_line, infer_columns
from .sinks.base import Sink, SinkError

logger = logging.getLogger("mdc_middleware")

_live_writers: "weakref.WeakSet[Writer]" = weakref.WeakSet()


class _Marker:
    """A flush or stop request travelling through the queue behind the items before it."""

    def __init__(self, stop: bool = False) -> None:
        self.stop = stop
        self.done = threading.Event()
        self.ok = False


@dataclass
class _Partition:
    target: Target
    folder: str
    header: str
    chunks: List[str] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0


class Writer:
    """Owns the queue and the thread that drains it into one sink."""

    def __init__(self, sink: Sink, *, batch_rows: int = 10_000, batch_bytes: int = 4 << 20,
                 flush_interval: float = 5.0, queue_size: int = 10_000, queue_max_bytes: int = 256 << 20,
                 retry_deadline: float = 60.0, neutralize_formulas: bool = True,
                 metrics: Optional[Metrics] = None) -> None:
        self.sink = sink
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.queue_max_bytes = queue_max_bytes
        self.retry_deadline = retry_deadline
        self.neutralize_formulas = neutralize_formulas
        self.metrics = metrics or Metrics()
        self._init_state()
        _live_writers.add(self)

    def _init_state(self) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(self.queue_size)
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._pending: Dict[Tuple[Target, str, str], _Partition] = {}
        self._pending_rows = 0
        self._pending_bytes = 0
        self._oldest_pending: Optional[float] = None
        self._failures = 0
        self._next_retry = 0.0
        self._last_error = ""
        self._stop_deadline: Optional[float] = None
        self._pid = os.getpid()

    # ---- request path -------------------------------------------------------------------------
    def submit(self, item: Any, rows: int = 0, nbytes: int = 0) -> bool:
        """Queue a Record or a Capture without blocking; False (and counted) when it was dropped."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._closed:
            self._count_drop(item, rows, "writer_closed")
            return False
        with self._lock:
            if self._queued_bytes + nbytes > self.queue_max_bytes:
                accepted = False
            else:
                try:
                    self._queue.put_nowait(item)
                    self._queued_bytes += nbytes
                    accepted = True
                except queue.Full:
                    accepted = False
        if not accepted:
            self._count_drop(item, rows, "queue_full")
            return False
        if rows:
            self.metrics.add("rows_enqueued", rows)
        else:
            self.metrics.add("captures_enqueued")
        if self._thread is None:
            self._start()
        return True

    def _count_drop(self, item: Any, rows: int, reason: str) -> None:
        if rows:
            self.metrics.drop(reason, rows)
        else:
            self.metrics.add("captures_dropped")
            self.metrics.skip(f"capture:{reason}")

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="mdc-writer", daemon=True)
            self._thread.start()

    # ---- control --------------------------------------------------------------------------------
    def force_flush(self, timeout: float = 30.0) -> bool:
        """Write everything submitted before this call; True when it all landed in time."""
        return self._send_marker(_Marker(), timeout)

    def shutdown(self, timeout: float = 25.0) -> bool:
        """Flush and stop the thread within ``timeout`` seconds; later submits are dropped and counted."""
        if self._closed:
            return True
        self._stop_deadline = time.monotonic() + timeout
        ok = self._send_marker(_Marker(stop=True), timeout)
        self._closed = True
        if self._thread is not None:
            self._thread.join(max(0.0, self._stop_deadline - time.monotonic()))
        self.sink.close()
        return ok

    def _send_marker(self, marker: _Marker, timeout: float) -> bool:
        if self._pid != os.getpid():
            self._after_fork()
        if self._closed:
            return True
        if self._thread is None:
            self._start()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout) and marker.ok

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def snapshot(self) -> Dict[str, Any]:
        snap = self.metrics.snapshot()
        snap["queue_depth"] = self._queue.qsize()
        snap["pending_rows"] = self._pending_rows
        return snap

    def _after_fork(self) -> None:
        """In a forked child the parent's thread is gone; start clean (the parent keeps its rows)."""
        self.metrics.reset()
        self._init_state()
        reset = getattr(self.sink, "after_fork", None)
        if reset is not None:
            reset()

    # ---- writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            timeout = self._time_to_flush()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = None
            if isinstance(item, _Marker):
                item.ok = self._flush(final=item.stop)
                if item.stop and self._pending_rows:
                    logger.error("mdc: %d rows could not be written before the shutdown deadline",
                                 self._pending_rows)
                    self.metrics.drop("shutdown_undelivered", self._pending_rows)
                item.done.set()
                if item.stop:
                    return
                continue
            if item is not None:
                self._take(item)
            if self._due():
                self._flush()
                if self._pending_rows and self._pending_bytes >= self.queue_max_bytes:
                    self._wait_backoff()  # storage is failing: stop draining, let the queue bound memory

    def _time_to_flush(self) -> float:
        if self._oldest_pending is None:
            return self.flush_interval
        if self._failures:
            return max(0.0, self._next_retry - time.monotonic())
        return max(0.0, self._oldest_pending + self.flush_interval - time.monotonic())

    def _due(self) -> bool:
        if not self._pending_rows:
            return False
        if self._failures:
            return time.monotonic() >= self._next_retry
        return (self._pending_rows >= self.batch_rows or self._pending_bytes >= self.batch_bytes
                or time.monotonic() - (self._oldest_pending or 0.0) >= self.flush_interval)

    def _wait_backoff(self) -> None:
        time.sleep(max(0.0, min(self._next_retry - time.monotonic(), 30.0)))

    def _take(self, item: Any) -> None:
        nbytes = getattr(item, "approx_bytes", 0)
        if nbytes:
            with self._lock:
                self._queued_bytes -= nbytes
        try:
            records = item.to_records(self.metrics) if not isinstance(item, Record) else [item]
        except Exception:  # a bug in extraction must not kill the thread
            logger.exception("mdc: could not turn a captured request into rows")
            self.metrics.add("internal_errors")
            return
        for record in records:
            self._add(record, counted=isinstance(item, Record))

    def _add(self, record: Record, counted: bool) -> None:
        columns = record.columns or infer_columns(record.data, default_prefix(record.target.designation))
        try:
            rows, text = encode(record, columns, self.neutralize_formulas)
        except Exception:
            logger.exception("mdc: could not encode rows for %s", record.target.model_name)
            self.metrics.add("internal_errors")
            self.metrics.drop("encode_error", record.rows or 1)
            return
        if not counted:
            self.metrics.add("rows_captured", rows)
            self.metrics.add("rows_enqueued", rows)
        if not rows:
            return
        day = dt.datetime.fromtimestamp(record.timestamp, tz=dt.timezone.utc).date()
        header = header_line(columns)
        folder = record.target.day_folder(day)
        key = (record.target, folder, header)
        partition = self._pending.get(key)
        if partition is None:
            partition = self._pending[key] = _Partition(record.target, folder, header)
        size = len(text)
        partition.chunks.append(text)
        partition.rows += rows
        partition.nbytes += size
        self._pending_rows += rows
        self._pending_bytes += size
        if self._oldest_pending is None:
            self._oldest_pending = time.monotonic()

    def _flush(self, final: bool = False) -> bool:
        """Append every pending partition; keep the ones that failed for a later try."""
        for key in list(self._pending):
            partition = self._pending[key]
            payload = "".join(partition.chunks).encode("utf-8")
            started = time.monotonic()
            deadline = started + self.retry_deadline
            if self._stop_deadline is not None:
                deadline = min(deadline, self._stop_deadline)
            try:
                self.sink.append(partition.folder, partition.target.file_stem, partition.header, payload,
                                 deadline=deadline)
            except Exception as exc:
                self._on_failure(exc, partition)
                if final and (self._stop_deadline is None or time.monotonic() < self._stop_deadline):
                    continue
                return False
            self.metrics.observe_write(time.monotonic() - started, partition.rows, len(payload))
            del self._pending[key]
            self._pending_rows -= partition.rows
            self._pending_bytes -= partition.nbytes
        if not self._pending:
            self._oldest_pending = None
            self._failures = 0
            self._last_error = ""
            self._pending_rows = self._pending_bytes = 0
            return True
        return False

    def _on_failure(self, exc: Exception, partition: _Partition) -> None:
        self._failures += 1
        self.metrics.add("write_errors")
        self.metrics.add("rows_retried", partition.rows)
        self._next_retry = time.monotonic() + min(30.0, 0.5 * 2 ** min(self._failures, 6))
        permanent = isinstance(exc, SinkError) and exc.permanent
        # SinkError messages are written to carry no secret; other exceptions are named only.
        detail = str(exc) if isinstance(exc, SinkError) else type(exc).__name__
        if detail != self._last_error:  # once per distinct problem, not once per retry
            self._last_error = detail
            logger.error("mdc: writing %d rows to %s failed%s: %s; rows are kept and retried",
                         partition.rows, partition.folder, " (not transient)" if permanent else "", detail)


def _reset_after_fork() -> None:
    for writer in list(_live_writers):
        writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
