"""The background writer: a bounded queue, a batcher thread and a delivery thread.

Shaped like OpenTelemetry's BatchSpanProcessor: ``submit`` never blocks (a full queue drops and
counts), ``force_flush`` and ``shutdown`` take a deadline. Two threads so that slow storage never
stalls batching:

    submit ─► queue ─► batcher: rows → CSV batches per file ─► inbox (bounded) ─► deliverer ─► sink
                                        │ inbox full or storage failing               │ failed after
                                        ▼                                             ▼ its deadline
                                      spool (disk, bounded) ◄──────────────────────────┘
                                        └──────── replayed by the deliverer when storage is back

Without a spool, failed batches wait in the inbox and are retried with backoff; the inbox bound then
backs up into the queue, whose bound drops and counts. Memory stays bounded either way.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

from .handoff import HandoffQueue
from .memory import MemoryReleaser
from .metrics import Metrics
from .paths import Target
from .capture import Capture, RawCapture, body_bytes, plan_by_id, warn_once
from .encoder import ROW_JSON, Encoded, as_json_rows, encode_captures, encode_record
from .encoder_process import EncoderProcess
from .records import Record, csv_row_count, give_way
from .sinks.base import Sink, SinkError
from .journal import JOURNAL_INTERVAL, Generation, Journal
from .jsonl import encode_record_jsonl, encode_records_jsonl
from .spool import Batch, Spool

logger = logging.getLogger("mdc_middleware")

_live_writers: "weakref.WeakSet[Writer]" = weakref.WeakSet()
_CAPTURE_RUN = 2048  # captured requests taken from the queue (and sent to the encoder process) at once…
_CAPTURE_RUN_BYTES = 1 << 20  # …or this many bytes of them: their CSV comes back in one piece
# Captured requests encoded together between pauses: about 0.2 ms of work, whatever their size. Runs of 64
# one-row requests saved no more time and held the GIL long enough to take bench_http's p99 from 3.5 to 5-6 ms.
_ENCODE_CHUNK = 16
_ENCODE_CHUNK_BYTES = 8 << 10  # of bodies: 100-row requests go three at a time
_MAX_BACKOFF = 10.0  # between rounds of delivery while storage fails; each round retries inside the sink too
# Sets of columns (headers) one target writes in a day, each to a file of its own. Payloads without a declared
# schema name their own columns: clients that leave out empty fields, or send sparse features as keys, made a
# file per request, and opening each scanned the headers of all before it (1,000 requests: 1,000 files, 40 s).
MAX_COLUMN_SETS = 64


def _chunks(captures: List[RawCapture]) -> Iterator[List[RawCapture]]:
    """The captures in order, in runs of at most _ENCODE_CHUNK or about _ENCODE_CHUNK_BYTES of bodies."""
    chunk: List[RawCapture] = []
    size = 0
    for raw in captures:
        chunk.append(raw)
        size += body_bytes(raw)
        if len(chunk) >= _ENCODE_CHUNK or size >= _ENCODE_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class _Marker:
    """A flush or stop request travelling behind the items submitted before it."""

    def __init__(self, stop: bool = False, deadline: float = 0.0) -> None:
        self.stop = stop
        self.deadline = deadline
        self.done = threading.Event()
        self.ok = True


@dataclass
class _Partition:
    target: Target
    folder: str
    header: str
    chunks: List[bytes] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0
    journaled_chunks: int = 0  # chunks[:journaled_chunks] are in the journal
    journaled_rows: int = 0


class Writer:
    """Owns the queue and the two threads that drain it into one sink (and, optionally, a spool)."""

    def __init__(self, sink: Sink, *, batch_rows: int = 10_000, batch_bytes: int = 4 << 20,
                 flush_interval: float = 5.0, queue_size: int = 10_000, queue_max_bytes: int = 256 << 20,
                 retry_deadline: float = 60.0, neutralize_formulas: bool = True, spool: Optional[Spool] = None,
                 metrics: Optional[Metrics] = None, encoder: str = "thread",
                 max_column_sets: int = MAX_COLUMN_SETS, journal: Optional[Journal] = None) -> None:
        """:param spool: where batches storage did not take wait (and are replayed from).
        :param journal: the write-ahead journal (in the spool's directory); every row is written to it
            within ``JOURNAL_INTERVAL`` of its encoding and stays there until storage or the spool took it.
        """
        if not 0 < flush_interval < float("inf"):  # 0 or NaN: the batcher would never wait, and spin on a core
            raise ValueError(f"flush_interval: expected a finite number of seconds > 0, got {flush_interval!r}")
        self.sink = sink
        self.spool = spool
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.queue_max_bytes = queue_max_bytes
        self.inbox_max_bytes = max(2 * batch_bytes, queue_max_bytes // 4)
        self.retry_deadline = retry_deadline
        self.neutralize_formulas = neutralize_formulas
        self.max_column_sets = max_column_sets
        self.metrics = metrics or Metrics()
        self.journal = journal
        for part in (sink, spool, journal):  # one set of counters for everything this writer does
            if part is not None and hasattr(part, "metrics"):
                part.metrics = self.metrics
        # Where captured requests are parsed and encoded: on the batcher thread, or in a helper process.
        self.encoder = EncoderProcess(self.metrics) if encoder == "process" else None
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
        self._bytes_out = 0                   # the batcher only
        self._threads: List[threading.Thread] = []
        self._closed = False
        # batcher state
        self._pending: Dict[Tuple[Target, str, str], _Partition] = {}
        self._pending_rows = 0
        self._pending_bytes = 0
        self._oldest_pending: Optional[float] = None
        self._last_pause = 0.0
        self._generation: Optional[Generation] = None  # the journal segment of the rows pending now
        self._memory = MemoryReleaser()
        self._unjournaled_since: Optional[float] = None
        self._column_sets: Dict[Tuple[Target, str], set] = {}  # (target, day folder) → headers written there
        # delivery state, shared under _cond
        self._cond = threading.Condition()
        self._inbox: Deque[Any] = collections.deque()
        self._inbox_bytes = 0
        self._inbox_rows = 0
        self._healthy = True
        self._failures = 0
        self._next_try = 0.0
        self._last_error = ""
        self._spool_dirty = self.spool is not None
        self._stop_deadline: Optional[float] = None
        self._next_adoption = 0.0
        self._pid = os.getpid()

    # ---- request path -------------------------------------------------------------------------
    def submit(self, item: Any, rows: int = 0, nbytes: int = 0) -> bool:
        """Queue a Record or a captured request without blocking; False (and counted) when it was dropped.

        A forked child starts clean through the ``register_at_fork`` hook below, not a check here.
        """
        if self._closed:
            self._count_drop(rows, "writer_closed")
            return False
        with self._submit_lock:
            accepted = self._bytes_in - self._bytes_out + nbytes <= self.queue_max_bytes
            if accepted:
                try:
                    self._queue.put_nowait((item, nbytes))
                    self._bytes_in += nbytes
                except queue.Full:
                    accepted = False
        if not accepted:
            self._count_drop(rows, "queue_full")
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

    def _count_drop(self, rows: int, reason: str) -> None:
        if rows:
            self.metrics.drop(reason, rows)
        else:  # a capture: its rows are not known until it is parsed
            self.metrics.add("captures_dropped")
            self.metrics.skip(f"capture:{reason}")

    def _start(self) -> None:
        with self._submit_lock:
            if self._threads:
                return
            self._threads = [threading.Thread(target=self._run_batcher, name="mdc-batcher", daemon=True),
                             threading.Thread(target=self._run_deliverer, name="mdc-deliverer", daemon=True)]
            for thread in self._threads:
                thread.start()

    # ---- control --------------------------------------------------------------------------------
    def force_flush(self, timeout: float = 30.0) -> bool:
        """Deliver everything submitted before this call (and the spool); True when it all landed."""
        return self._send_marker(_Marker(deadline=time.monotonic() + timeout), timeout)

    def shutdown(self, timeout: float = 25.0) -> bool:
        """Flush and stop within ``timeout`` seconds. What cannot be delivered by then is spooled
        (or, without a spool, counted as dropped); later submits are dropped and counted."""
        if self._closed:
            return True
        self._stop_deadline = time.monotonic() + timeout
        ok = self._send_marker(_Marker(stop=True, deadline=self._stop_deadline), timeout + 1.0)
        self._closed = True
        for thread in self._threads:
            thread.join(max(0.0, self._stop_deadline + 2.0 - time.monotonic()))
        if self.encoder is not None:
            self.encoder.close()
        if self.spool is not None:
            self.spool.close()
            self._report_waiting()
        self.sink.close()
        return ok

    def _report_waiting(self) -> None:
        """At stop: say how much was not delivered and where it waits for the next start."""
        assert self.spool is not None
        journaled = self.journal.unresolved_rows() if self.journal is not None else 0
        spooled = self.spool.size_bytes(fresh=True)
        if journaled or spooled:
            logger.warning("mdc: stopping with rows not yet in storage: %d of this process in the journal, and "
                           "%d bytes of spooled batches (all processes) in %s; the next process that starts with "
                           "this MDC_SPOOL_DIR delivers them", journaled, spooled, self.spool.directory)

    def _send_marker(self, marker: _Marker, timeout: float) -> bool:
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
        snap["pending_rows"] = self._pending_rows + self._inbox_rows
        snap["spool_bytes"] = self.spool.size_bytes() if self.spool is not None else 0
        return snap

    def _after_fork(self) -> None:
        """In a forked child the parent's threads are gone; start clean (the parent keeps its rows)."""
        self.metrics.reset()
        if self.journal is not None:
            self.journal.after_fork()
        self._init_state()
        if self.encoder is not None:
            self.encoder.after_fork()
        for part in (self.sink, self.spool):
            reset = getattr(part, "after_fork", None)
            if reset is not None:
                reset()

    # ---- batcher thread ---------------------------------------------------------------------------
    def _run_batcher(self) -> None:
        if self.encoder is not None:
            try:
                self.encoder.available()  # start the helper now: it takes a second to import
            except Exception:  # it is tried again with the first batch; the thread encodes meanwhile
                logger.exception("mdc: could not start the encoder process")
        while True:
            try:
                if self._batch_once():
                    return
            except Exception:  # a bug here must not stop collection for the life of the process
                logger.exception("mdc: batcher error; collection goes on")
                self.metrics.add("internal_errors")

    def _batch_once(self) -> bool:
        """Take one item (or time out) and seal batches that are due; True when told to stop."""
        timeout = (self.flush_interval if self._oldest_pending is None
                   else max(0.0, self._oldest_pending + self.flush_interval - time.monotonic()))
        if self._memory.pending:  # look again once the work has settled, to give its memory back
            timeout = min(timeout, self._memory.SETTLE)
        try:
            item, nbytes = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            self._bytes_out += nbytes  # it leaves the queue's byte bound here, whatever happens to it next
        except queue.Empty:
            item = None
        if isinstance(item, _Marker):
            self._seal()
            self._hand_over(item)
            return item.stop
        if type(item) is tuple:  # a captured request: take the run of them waiting behind it too
            run = self._queue.pop_run(tuple, _CAPTURE_RUN - 1, _CAPTURE_RUN_BYTES - nbytes)
            run_bytes = nbytes + sum(nbytes for _, nbytes in run)
            self._bytes_out += run_bytes - nbytes
            self._memory.worked_through(run_bytes)
            captures = [item, *(capture for capture, _ in run)]
            if self._past_stop_deadline():
                for _ in captures:  # no time left to encode them: counted, never lost silently
                    self._count_drop(0, "shutdown_deadline")
            else:
                self._take_captures(captures)
            self._pause_now_and_then()
        elif item is not None and self._past_stop_deadline():
            self._drop_at_deadline(item)
        elif item is not None:
            self._take(item)
            self._pause_now_and_then()
        if self._unjournaled_since is not None and (
                not self._queue.qsize() or time.monotonic() - self._unjournaled_since >= JOURNAL_INTERVAL):
            self._write_journal()
        if not self._queue.qsize():
            self._memory.release_if_due()
        if self._pending_rows and (
                self._pending_rows >= self.batch_rows or self._pending_bytes >= self.batch_bytes
                or time.monotonic() - (self._oldest_pending or 0.0) >= self.flush_interval):
            self._seal()
        return False

    def _pause_now_and_then(self) -> None:
        """Give the GIL away after each millisecond of work on a backlog.

        Otherwise a waiting request thread gets it back only after the interpreter's switch interval
        (5 ms): every request that arrives while the batcher works through a burst waits that long.
        """
        now = time.perf_counter()
        if now - self._last_pause >= 0.001:
            give_way()
            self._last_pause = time.perf_counter()

    def _drop_at_deadline(self, item: Record) -> None:
        self._count_drop(item.rows, "shutdown_deadline")

    def _take(self, record: Record) -> None:
        if record.target.layout == "jsonl":
            self._append(encode_record_jsonl(record, self.metrics, counted=True))
        else:
            self._append(encode_record(record, self.metrics, self.neutralize_formulas, counted=True))

    def _take_captures(self, captures: List[RawCapture]) -> None:
        """Encode a run of captured requests: in the encoder process when it is up, else here."""
        if any(plan_by_id(raw[0]).inputs_target.layout == "jsonl" for raw in captures):
            jsonl = [raw for raw in captures if plan_by_id(raw[0]).inputs_target.layout == "jsonl"]
            for raw in jsonl:  # Azure ML's JSON Lines: encoded here, a line per record
                for item in encode_records_jsonl(Capture.from_raw(raw, plan_by_id(raw[0])).to_records(self.metrics),
                                                 self.metrics):
                    self._append(item)
            captures = [raw for raw in captures if plan_by_id(raw[0]).inputs_target.layout != "jsonl"]
            self._pause_now_and_then()
        local = captures
        if self.encoder is not None and self.encoder.available():
            encoded, local = self.encoder.encode(captures, self.neutralize_formulas, self._stop_deadline)
            for item in encoded:
                self._append(item)
        for chunk in _chunks(local):
            for item in encode_captures([Capture.from_raw(raw, plan_by_id(raw[0])) for raw in chunk],
                                        self.metrics, self.neutralize_formulas):
                self._append(item)
            self._pause_now_and_then()

    def _append(self, encoded: Optional[Encoded]) -> None:
        """Add encoded rows to the batch pending for their file."""
        if encoded is None:
            return
        encoded = self._within_column_sets(encoded)
        key = (encoded.target, encoded.folder, encoded.header)
        partition = self._pending.get(key)
        if partition is None:
            partition = self._pending[key] = _Partition(encoded.target, encoded.folder, encoded.header)
        partition.chunks.append(encoded.payload)
        partition.rows += encoded.rows
        partition.nbytes += len(encoded.payload)
        self._pending_rows += encoded.rows
        self._pending_bytes += len(encoded.payload)
        if self._oldest_pending is None:
            self._oldest_pending = time.monotonic()
        if self.journal is not None and self._unjournaled_since is None:
            self._unjournaled_since = time.monotonic()

    def _write_journal(self) -> None:
        """Write the rows encoded since the last call to the journal, one record per file they go to."""
        self._unjournaled_since = None
        if self.journal is None:
            return
        batches = []
        for partition in self._pending.values():
            if partition.journaled_chunks < len(partition.chunks):
                batches.append(Batch(partition.folder, partition.target.file_stem, partition.header,
                                     b"".join(partition.chunks[partition.journaled_chunks:]),
                                     partition.rows - partition.journaled_rows))
                partition.journaled_chunks, partition.journaled_rows = len(partition.chunks), partition.rows
        if not batches:
            return
        try:
            if self._generation is None:
                self._generation = self.journal.open_generation()
            self._generation.write(batches)
        except OSError as exc:
            self.metrics.add("journal_errors")
            warn_once(("journal", exc.errno), "mdc: could not write to the journal in %s: %s; rows wait in memory "
                      "until storage takes them, and a process killed meanwhile loses them", self.journal.directory,
                      exc.strerror or exc)

    def _within_column_sets(self, encoded: Encoded) -> Encoded:
        """The rows as they are, or, when their set of columns is past the day's limit for their target, as
        JSON objects under one header (``as_json_rows``): the number of files stays bounded, no row is lost."""
        place = (encoded.target, encoded.folder)
        seen = self._column_sets.get(place)
        if seen is None:
            if len(self._column_sets) >= 4096:  # targets × days: the oldest days are long done
                self._column_sets.clear()
            seen = self._column_sets[place] = set()
        if encoded.header in seen or len(seen) < self.max_column_sets:
            seen.add(encoded.header)
            return encoded
        warn_once(("column_sets", encoded.target.model_name, encoded.target.designation),
                  "mdc: %s of model %s came with more than %d sets of columns in a day; rows with a new set are "
                  "written as JSON in column %s. Declare the columns (Schema(inputs=[...])) to keep them apart. "
                  "(Logged once.)", encoded.target.designation, encoded.target.model_name, self.max_column_sets,
                  ROW_JSON)
        self.metrics.add("rows_as_json", encoded.rows)
        return as_json_rows(encoded)

    def _seal(self) -> None:
        """Turn every pending partition into a batch and hand it to delivery (journaled first)."""
        self._write_journal()
        pending, self._pending = self._pending, {}
        generation, self._generation = self._generation, None
        self._pending_rows = self._pending_bytes = 0
        self._oldest_pending = None
        batches = [Batch(partition.folder, partition.target.file_stem, partition.header,
                         b"".join(partition.chunks), partition.rows, generation=generation)
                   for partition in pending.values()]  # bytes already: joining megabytes is a copy
        if generation is not None:
            generation.seal(len(batches))
        for batch in batches:
            self._hand_over(batch)

    def _hand_over(self, item: Any) -> None:
        size = len(item.payload) if isinstance(item, Batch) else 0
        with self._cond:
            if isinstance(item, Batch):
                while (self._inbox_bytes + size > self.inbox_max_bytes and self._inbox_bytes
                       and self.spool is None and not self._past_stop_deadline()):
                    self._cond.wait(0.5)  # backpressure: the queue fills, and its bound counts drops
                spill = self.spool is not None and (
                    not self._healthy or self._inbox_bytes + size > self.inbox_max_bytes)
                if not spill:
                    self._inbox_bytes += size
                    self._inbox_rows += item.rows
            else:
                spill = False
            if not spill:
                self._inbox.append(item)
                self._cond.notify_all()
        if spill:
            self._to_spool(item, item)

    # ---- delivery thread -------------------------------------------------------------------------
    def _run_deliverer(self) -> None:
        while True:
            item = self._next_delivery()
            try:
                if isinstance(item, _Marker):
                    item.ok = self._finish_marker(item)
                elif isinstance(item, Batch):
                    self._deliver(item)
                elif item is _ADOPT:
                    self._adopt_orphans()
                elif self._ready() and self._spool_dirty:
                    self._replay_one(deadline=None)
            except Exception:  # a bug here must not stop delivery for the life of the process
                logger.exception("mdc: delivery error; delivery goes on")
                self.metrics.add("internal_errors")
                if isinstance(item, _Marker):
                    item.ok = False
                time.sleep(0.1)
            if isinstance(item, _Marker):
                item.done.set()
                if item.stop:
                    return

    def _next_delivery(self) -> Any:
        with self._cond:
            while True:
                if self.journal is not None and time.monotonic() >= self._next_adoption:
                    return _ADOPT
                if self._past_stop_deadline():
                    marker = next((i for i in self._inbox if isinstance(i, _Marker) and i.stop), None)
                    if marker is not None:
                        self._inbox.remove(marker)
                        return marker
                if self._inbox and (self._ready() or isinstance(self._inbox[0], _Marker)):
                    item = self._inbox.popleft()
                    if isinstance(item, Batch):
                        self._inbox_bytes -= len(item.payload)
                        self._inbox_rows -= item.rows
                        self._cond.notify_all()
                    return item
                if self._ready() and self._spool_dirty:
                    return None  # nothing new: replay the spool
                wait = max(0.05, self._next_try - time.monotonic()) if not self._ready() else 1.0
                self._cond.wait(min(wait, 1.0))

    def _adopt_orphans(self) -> None:
        """Take over the journal segments of processes that died (a sibling worker, or the last run)."""
        assert self.journal is not None
        self._next_adoption = time.monotonic() + _ADOPTION_INTERVAL
        try:
            if self.journal.adopt_orphans():
                self._spool_dirty = True
        except OSError as exc:
            logger.error("mdc: could not read the journal of a stopped process: %s", exc.strerror or exc)

    def _ready(self) -> bool:
        return self._healthy or time.monotonic() >= self._next_try

    def _past_stop_deadline(self) -> bool:
        return self._stop_deadline is not None and time.monotonic() >= self._stop_deadline

    def _deliver(self, batch: Batch, deadline: Optional[float] = None, requeue: bool = True) -> bool:
        started = time.monotonic()
        limit = started + self.retry_deadline
        if deadline is not None:
            limit = min(limit, deadline)

        def current_limit() -> float:  # a shutdown during this delivery cuts it at its deadline
            return limit if self._stop_deadline is None else min(limit, self._stop_deadline)

        try:
            if current_limit() <= started:
                raise SinkError("the shutdown deadline passed before delivery")
            self.sink.append(batch.folder, batch.stem, batch.header, batch.payload, deadline=current_limit,
                             hint=batch.hint)
        except Exception as exc:
            self._on_failure(batch, exc, requeue)
            return False
        self.metrics.observe_write(time.monotonic() - started, batch.rows, len(batch.payload))
        if batch.source is not None and self.spool is not None:
            self.spool.ack(batch)
        _resolve(batch)
        with self._cond:
            self._healthy, self._failures, self._last_error = True, 0, ""
        return True

    def _on_failure(self, batch: Batch, exc: Exception, requeue: bool = True) -> None:
        delivered = getattr(exc, "delivered", 0) if isinstance(exc, SinkError) else 0
        hint = getattr(exc, "maybe_at", None) if isinstance(exc, SinkError) else None
        remainder = Batch(batch.folder, batch.stem, batch.header, batch.payload[delivered:],
                          _remaining_rows(batch, delivered), hint)
        if delivered:
            self.metrics.observe_write(0.0, batch.rows - remainder.rows, delivered)
        with self._cond:
            self._healthy = False
            self._failures += 1
            self._next_try = time.monotonic() + min(_MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 6))
        self.metrics.add("write_errors")
        self.metrics.add("rows_retried", remainder.rows)
        permanent = isinstance(exc, SinkError) and exc.permanent
        detail = str(exc) if isinstance(exc, SinkError) else type(exc).__name__  # never a raw message
        if detail != self._last_error:  # once per distinct problem, not once per retry
            self._last_error = detail
            logger.error("mdc: writing %d rows to %s failed%s: %s; %s", remainder.rows, batch.folder,
                         " (not transient)" if permanent else "", detail,
                         "they wait in the spool" if self.spool is not None else "they are kept and retried")
        if self.spool is not None:
            if batch.source is not None:
                if delivered:  # keep only what did not land, then move past the old record
                    self._to_spool(remainder, remainder)
                    self.spool.ack(Batch(batch.folder, batch.stem, batch.header, b"", 0, source=batch.source))
                self.spool.release()
            else:
                self._to_spool(remainder, batch)
        elif requeue:
            with self._cond:  # retry it first, after the backoff
                self._inbox.appendleft(remainder)
                self._inbox_bytes += len(remainder.payload)
                self._inbox_rows += remainder.rows
        else:
            logger.error("mdc: %d rows could not be written before the shutdown deadline", remainder.rows)
            self.metrics.drop("shutdown_undelivered", remainder.rows)

    def _to_spool(self, batch: Batch, original: Batch) -> None:
        """Spool ``batch`` (all or the rest of ``original``); ``original`` is then resolved in its journal."""
        assert self.spool is not None
        try:
            if self.spool.write(batch):
                self._spool_dirty = True
        except OSError as exc:
            if original.generation is not None:  # it stays in the journal, adopted after this process ends
                logger.error("mdc: could not spool %d rows: %s; they stay in the journal at %s",
                             batch.rows, exc.strerror or exc, self.spool.directory)
                original.generation = None
                return
            logger.error("mdc: could not spool %d rows: %s", batch.rows, exc.strerror or exc)
            self.metrics.drop("spool_error", batch.rows)
        _resolve(original)

    def _replay_one(self, deadline: Optional[float]) -> bool:
        """Deliver the oldest spooled batch; False when the spool is empty or delivery failed."""
        assert self.spool is not None
        self.spool.seal()
        batch = self.spool.next_batch()
        if batch is None:
            self._spool_dirty = False
            self.spool.release()
            return False
        return self._deliver(batch, deadline)

    def _finish_marker(self, marker: _Marker) -> bool:
        """Everything before the marker has been tried; now empty the spool while there is time."""
        ok = self._healthy
        if self.spool is not None and self._spool_dirty:
            while time.monotonic() < marker.deadline:
                if not self._ready():
                    time.sleep(min(0.1, max(0.0, marker.deadline - time.monotonic())))
                    continue
                if not self._replay_one(marker.deadline) and not self._spool_dirty:
                    break
            ok = not self._spool_dirty and self._healthy
        if marker.stop:
            ok = self._drain_at_stop(marker) and ok
        return ok

    def _drain_at_stop(self, marker: _Marker) -> bool:
        """Nothing new arrives after the stop marker: deliver what is held, else spool or count it."""
        with self._cond:
            left = [item for item in self._inbox if isinstance(item, Batch)]
            self._inbox.clear()
            self._inbox_bytes = self._inbox_rows = 0
        delivered = [self._deliver(batch, marker.deadline, requeue=False) for batch in left]
        if self.spool is not None:
            self.spool.close()
        return all(delivered)


_ADOPT = object()  # the deliverer's turn to look for the journals of stopped processes
_ADOPTION_INTERVAL = 5.0


def _resolve(batch: Batch) -> None:
    """The batch is delivered, spooled, or dropped and counted: its journal segment no longer needs it."""
    generation, batch.generation = batch.generation, None
    if generation is not None:
        generation.resolve((batch.folder, batch.stem, batch.header), batch.rows)


def _remaining_rows(batch: Batch, delivered: int) -> int:
    return csv_row_count(batch.payload[delivered:]) if delivered else batch.rows


def _reset_after_fork() -> None:
    for writer in list(_live_writers):
        writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
