"""The background writer: admission to a bounded queue, and two threads that drain it.

Shaped like OpenTelemetry's BatchSpanProcessor: ``submit`` never blocks (a full queue drops and counts),
``force_flush`` and ``shutdown`` take a deadline, and the writer knows storage only through the ``Sink``
protocol. Two threads, so that slow storage never stalls batching:

    submit ─► queue ─► Batcher (batching.py): encode, journal, seal per file ─► Delivery (delivery.py) ─► sink
                                                  │                                 │ spool, replay, back-off
                                                  └──► journal (journal.py) ◄───────┘ resolved once delivered

After ``fork`` the child starts clean (its own threads, on first use): gunicorn ``--preload`` works.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import socket
import threading
import time
import weakref
from typing import Any, Dict, List, Optional

from .batching import MAX_COLUMN_SETS, Batcher, BatchLimits, Pacer, count_drop
from ..payloads.captured_request import RawCapture, body_bytes
from .capture_encoding import CaptureEncoder, HelperProcessEncoder, InThreadEncoder
from .delivery import Delivery, Marker, StopDeadline
from .encoder_process import EncoderProcess
from .handoff import HandoffQueue
from .journal import JOURNAL_INTERVAL, Journal
from ..metrics import Metrics
from ..storage.sink import Sink
from .spool import Spool

logger = logging.getLogger("mdc_middleware")

_live_writers: "weakref.WeakSet[Writer]" = weakref.WeakSet()


def writer_suffix() -> str:
    """What names this process's own files: ``-<host>-<pid>`` (a pod's host name is unique among replicas;
    a forked worker gets its own). Characters a blob or file name could not hold become ``-``."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname())[-40:].strip("-.") or "host"
    return f"-{host}-{os.getpid()}"


class Writer:
    """Owns the queue, the batcher and delivery of one sink (and, optionally, a spool and a journal)."""

    def __init__(self, sink: Sink, *, batch_rows: int = 10_000, batch_bytes: int = 4 << 20,
                 flush_interval: float = 5.0, queue_size: int = 10_000, queue_max_bytes: int = 256 << 20,
                 retry_deadline: float = 60.0, neutralize_formulas: bool = True, spool: Optional[Spool] = None,
                 metrics: Optional[Metrics] = None, encoder: str = "thread",
                 max_column_sets: int = MAX_COLUMN_SETS, journal: Optional[Journal] = None,
                 file_per_writer: bool = False) -> None:
        """:param sink: where batches are appended (``sinks.LocalSink``, ``sinks.blob.BlobSink``).
        :param queue_size: queued items (``collect()`` calls, captured requests) at the most; more are dropped
            and counted. ``queue_max_bytes`` bounds their bytes the same way.
        :param spool: where batches storage did not take wait (and are replayed from).
        :param journal: the write-ahead journal (in the spool's directory); every row is written to it
            within ``JOURNAL_INTERVAL`` of its encoding and stays there until storage or the spool took it.
        :param encoder: where captured requests are parsed and encoded: ``thread`` or ``process``.
        :param file_per_writer: append to files of this process's own (``data-<host>-<pid>.csv`` beside the
            day's others) instead of the day's shared ``data.csv``: replicas never contend for one blob.
        """
        if not 0 < flush_interval < float("inf"):  # 0 or NaN: the batcher would never wait, and spin on a core
            raise ValueError(f"flush_interval: expected a finite number of seconds > 0, got {flush_interval!r}")
        self.sink = sink
        self.spool = spool
        self.journal = journal
        self.limits = BatchLimits(batch_rows, batch_bytes, flush_interval)
        self.queue_size = queue_size
        self.queue_max_bytes = queue_max_bytes
        self.retry_deadline = retry_deadline
        self.neutralize_formulas = neutralize_formulas
        self.max_column_sets = max_column_sets
        self.file_per_writer = file_per_writer
        self.metrics = metrics or Metrics()
        for part in (sink, spool, journal):  # one set of counters for everything this writer does
            if part is not None and hasattr(part, "metrics"):
                part.metrics = self.metrics
        # The helper process, with MDC_ENCODER=process (None: captured requests are encoded on the batcher).
        self.encoder: Optional[EncoderProcess] = EncoderProcess(self.metrics) if encoder == "process" else None
        self._init_state()
        _live_writers.add(self)
        if spool is not None and (spool.segments() or (journal is not None and journal.orphans())):
            self._start()  # replay what an earlier run left behind, even before traffic arrives

    def _init_state(self) -> None:
        # With a journal, the batcher looks at the queue often enough that rows reach it within tens of ms.
        self._queue = HandoffQueue(self.queue_size, idle_interval=0.2 if self.journal is None else JOURNAL_INTERVAL)
        # Producers (request threads) and the batcher never share a lock: a thread preempted while
        # holding one would stall the other and every thread queued behind it.
        self._submit_lock = threading.Lock()  # producers only
        self._bytes_in = 0                    # producers, under _submit_lock
        self._threads: List[threading.Thread] = []
        self._closed = False
        self._stop = StopDeadline()
        self._delivery = Delivery(self.sink, self.metrics, self._stop, retry_deadline=self.retry_deadline,
                                  inbox_max_bytes=max(2 * self.limits.bytes, self.queue_max_bytes // 4),
                                  spool=self.spool, journal=self.journal)
        pacer = Pacer()
        in_thread = InThreadEncoder(self.metrics, self.neutralize_formulas, pacer.pause)
        encoder: CaptureEncoder = (HelperProcessEncoder(self.encoder, in_thread) if self.encoder is not None
                                   else in_thread)
        self._batcher = Batcher(self._queue, self._delivery, encoder, self.metrics, self._stop, self.limits, pacer,
                                neutralize_formulas=self.neutralize_formulas, max_column_sets=self.max_column_sets,
                                journal=self.journal, stem_suffix=writer_suffix() if self.file_per_writer else "")
        self._pid = os.getpid()

    @property
    def _bytes_out(self) -> int:
        return self._batcher.bytes_out

    # ---- request path -------------------------------------------------------------------------
    def submit(self, item: Any, rows: int = 0, nbytes: int = 0) -> bool:
        """Queue a Record or a captured request without blocking; False (and counted) when it was dropped.

        A forked child starts clean through the ``register_at_fork`` hook below, not a check here.
        """
        if self._closed:
            count_drop(self.metrics, rows, "writer_closed")
            return False
        with self._submit_lock:
            accepted = self._bytes_in - self._batcher.bytes_out + nbytes <= self.queue_max_bytes
            if accepted:
                try:
                    self._queue.put_nowait((item, nbytes))
                    self._bytes_in += nbytes
                except queue.Full:
                    accepted = False
        if not accepted:
            count_drop(self.metrics, rows, "queue_full")
            return False
        if rows:
            self.metrics.add("rows_enqueued", rows)
        else:
            self.metrics.add("captures_enqueued")
        if not self._threads:
            self._start()
        return True

    def submit_capture(self, capture: RawCapture) -> bool:
        """Queue a captured request (the middleware's hand-off); its bodies count against the byte bound."""
        return self.submit(capture, nbytes=512 + body_bytes(capture))

    def _start(self) -> None:
        with self._submit_lock:
            if self._threads:
                return
            self._threads = [threading.Thread(target=self._batcher.run, name="mdc-batcher", daemon=True),
                             threading.Thread(target=self._delivery.run, name="mdc-deliverer", daemon=True)]
            for thread in self._threads:
                thread.start()

    # ---- control --------------------------------------------------------------------------------
    def force_flush(self, timeout: float = 30.0) -> bool:
        """Deliver everything submitted before this call (and the spool); True when it all landed."""
        return self._send_marker(Marker(deadline=time.monotonic() + timeout), timeout)

    def shutdown(self, timeout: float = 25.0) -> bool:
        """Flush and stop within ``timeout`` seconds. What cannot be delivered by then stays in the spool and
        the journal (without a spool, it is counted as dropped and the log says how many rows, and why); later
        submits are dropped and counted."""
        if self._closed:
            return True
        deadline = self._stop.at = time.monotonic() + timeout
        ok = self._send_marker(Marker(stop=True, deadline=deadline), timeout + 1.0)
        self._closed = True
        for thread in self._threads:
            thread.join(max(0.0, deadline + 2.0 - time.monotonic()))
        if self.encoder is not None:
            self.encoder.close()
        if self.spool is not None:
            self.spool.close()
        self._delivery.report_waiting(timeout)
        self.sink.close()
        return ok

    def _send_marker(self, marker: Marker, timeout: float) -> bool:
        if self._pid != os.getpid():
            self._after_fork()
        if self._closed:
            return True
        self._start()
        try:
            self._queue.put((marker, 0), timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout) and marker.ok

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> Dict[str, Any]:
        snap = self.metrics.snapshot()
        snap["queue_depth"] = self._queue.qsize()
        snap["pending_rows"] = self._batcher.pending_rows + self._delivery.inbox_rows
        snap["spool_bytes"] = self.spool.size_bytes() if self.spool is not None else 0
        return snap

    def _after_fork(self) -> None:
        """In a forked child the parent's threads are gone; start clean (the parent keeps its rows)."""
        self.metrics.reset()
        if self.journal is not None:
            self.journal.after_fork()
        if self.encoder is not None:
            self.encoder.after_fork()
        self._init_state()
        for part in (self.sink, self.spool):
            reset = getattr(part, "after_fork", None)
            if reset is not None:
                reset()


def _reset_after_fork() -> None:
    for writer in list(_live_writers):
        writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
