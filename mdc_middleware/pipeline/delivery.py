"""Delivery: sealed batches to storage, from a bounded inbox, on one thread.

It knows only the ``Sink`` protocol. It owns what happens after a batch is sealed: retries with back-off, the
spool (batches storage did not take wait there and are replayed in order when it answers again), the journal's
bookkeeping (a batch delivered or spooled is resolved in its journal segment), taking over the journals of
processes that died, and draining at stop. A delivery under way is cut at the shutdown deadline.

    batcher ─► hand_over(batch | marker) ─► inbox (bounded) ─► deliver ─► sink
                      │ storage failing or inbox full            │ failed after its retry deadline
                      ▼                                          ▼
                    spool (disk, bounded) ◄──────────────────────┘  replayed when storage is back

Without a spool, failed batches wait in the inbox and are retried after the back-off; the inbox bound then
backs up into the writer's queue, whose bound drops and counts.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Deque, Optional

from .backoff import Backoff
from .journal import Journal
from ..metrics import Metrics
from ..records.csv_scanning import csv_row_count
from ..storage.sink import Sink, SinkError
from .spool import Batch, Spool

logger = logging.getLogger("mdc_middleware")

MAX_BACKOFF = 10.0  # between rounds of delivery while storage fails; each round retries inside the sink too
ADOPTION_INTERVAL = 5.0  # how often the journals of stopped processes are looked for


class Marker:
    """A flush or stop request, travelling behind the items submitted before it."""

    def __init__(self, stop: bool = False, deadline: float = 0.0) -> None:
        self.stop = stop
        self.deadline = deadline
        self.done = threading.Event()
        self.ok = True


class StopDeadline:
    """When the writer must be stopped by (time.monotonic()), once ``shutdown`` has set it; shared by the
    batcher (which stops encoding past it) and delivery (which cuts a delivery under way at it)."""

    def __init__(self) -> None:
        self.at: Optional[float] = None

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def cap(self, limit: float) -> float:
        return limit if self.at is None else min(limit, self.at)


_ADOPT = object()  # the deliverer's turn to look for the journals of stopped processes
_DEADLINE_PASSED = "the shutdown deadline passed before delivery"


class Delivery:
    """The inbox and the delivery thread's work. ``hand_over`` is called by the batcher thread only."""

    def __init__(self, sink: Sink, metrics: Metrics, stop: StopDeadline, *, retry_deadline: float,
                 inbox_max_bytes: int, spool: Optional[Spool] = None, journal: Optional[Journal] = None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.stop = stop
        self.retry_deadline = retry_deadline
        self.inbox_max_bytes = inbox_max_bytes
        self.spool = spool
        self.journal = journal
        self.reset()

    def reset(self) -> None:
        """Empty state (at start, and in a forked child)."""
        self._cond = threading.Condition()
        self._inbox: Deque[Any] = collections.deque()
        self._inbox_bytes = 0
        self.inbox_rows = 0
        self._backoff = Backoff(1.0, MAX_BACKOFF)
        self._last_error = ""
        self._last_cause = ""  # the last storage error other than the shutdown deadline itself
        self._spool_dirty = self.spool is not None
        self._next_adoption = 0.0

    # ---- the batcher's side -------------------------------------------------------------------------
    def hand_over(self, item: Any) -> None:
        """A sealed batch (or a marker) for delivery. With a spool, a batch goes there instead while storage
        fails or the inbox is full; without one, the batcher waits for room (the queue's bound then drops)."""
        size = len(item.payload) if isinstance(item, Batch) else 0
        with self._cond:
            if isinstance(item, Batch):
                while (self._inbox_bytes + size > self.inbox_max_bytes and self._inbox_bytes
                       and self.spool is None and not self.stop.passed()):
                    self._cond.wait(0.5)
                spill = self.spool is not None and (
                    self._backoff.failing or self._inbox_bytes + size > self.inbox_max_bytes)
                if not spill:
                    self._inbox_bytes += size
                    self.inbox_rows += item.rows
            else:
                spill = False
            if not spill:
                self._inbox.append(item)
                self._cond.notify_all()
        if spill:
            self._to_spool(item, item)

    # ---- the delivery thread ------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            item = self._next()
            try:
                if isinstance(item, Marker):
                    item.ok = self._finish_marker(item)
                elif isinstance(item, Batch):
                    self._deliver(item)
                elif item is _ADOPT:
                    self._adopt_orphans()
                elif self._backoff.ready() and self._spool_dirty:
                    self._replay_one(deadline=None)
            except Exception:  # a bug here must not stop delivery for the life of the process
                logger.exception("mdc: delivery error; delivery goes on")
                self.metrics.add("internal_errors")
                if isinstance(item, Marker):
                    item.ok = False
                time.sleep(0.1)
            if isinstance(item, Marker):
                item.done.set()
                if item.stop:
                    return

    def _next(self) -> Any:
        with self._cond:
            while True:
                if self.journal is not None and time.monotonic() >= self._next_adoption:
                    return _ADOPT
                if self.stop.passed():
                    marker = next((i for i in self._inbox if isinstance(i, Marker) and i.stop), None)
                    if marker is not None:
                        self._inbox.remove(marker)
                        return marker
                ready = self._backoff.ready()
                if self._inbox and (ready or isinstance(self._inbox[0], Marker)):
                    item = self._inbox.popleft()
                    if isinstance(item, Batch):
                        self._inbox_bytes -= len(item.payload)
                        self.inbox_rows -= item.rows
                        self._cond.notify_all()
                    return item
                if ready and self._spool_dirty:
                    return None  # nothing new: replay the spool
                self._cond.wait(1.0 if ready else min(1.0, max(0.05, self._backoff.wait_left())))

    def _adopt_orphans(self) -> None:
        assert self.journal is not None
        self._next_adoption = time.monotonic() + ADOPTION_INTERVAL
        try:
            if self.journal.adopt_orphans() or (self.spool is not None and self.spool.segments()):
                self._spool_dirty = True  # also what a process that died left in the spool itself
        except OSError as exc:
            logger.error("mdc: could not read the journal of a stopped process: %s", exc.strerror or exc)

    def _deliver(self, batch: Batch, deadline: Optional[float] = None, requeue: bool = True) -> bool:
        started = time.monotonic()
        limit = started + self.retry_deadline if deadline is None else min(started + self.retry_deadline, deadline)

        def current_limit() -> float:  # a shutdown during this delivery cuts it at its deadline
            return self.stop.cap(limit)

        try:
            if current_limit() <= started:
                raise SinkError(_DEADLINE_PASSED)
            extra = {}
            generation, spool = batch.generation, self.spool
            if getattr(self.sink, "reports_attempts", False):  # noted, so a successor can look before resending
                if generation is not None:
                    key = (batch.folder, batch.stem, batch.header)
                    extra["on_attempt"] = lambda name, position: generation.intend(key, name, position)
                elif batch.source is not None and spool is not None:
                    extra["on_attempt"] = lambda name, position: spool.intend(batch, name, position)
            self.sink.append(batch.folder, batch.stem, batch.header, batch.payload, deadline=current_limit,
                             hint=batch.hint, **extra)
        except Exception as exc:
            self._on_failure(batch, exc, requeue)
            return False
        self.metrics.observe_write(time.monotonic() - started, batch.rows, len(batch.payload))
        if batch.source is not None and self.spool is not None:
            self.spool.ack(batch)
        _resolve(batch)
        with self._cond:
            self._backoff.succeeded()
            self._last_error = ""
        return True

    def _on_failure(self, batch: Batch, exc: Exception, requeue: bool = True) -> None:
        delivered = exc.delivered if isinstance(exc, SinkError) else 0
        hint = exc.hint if isinstance(exc, SinkError) else None
        remainder = Batch(batch.folder, batch.stem, batch.header, batch.payload[delivered:],
                          csv_row_count(batch.payload[delivered:]) if delivered else batch.rows, hint)
        if delivered:
            self.metrics.observe_write(0.0, batch.rows - remainder.rows, delivered)
        with self._cond:
            self._backoff.failed()
        self.metrics.add("write_errors")
        self.metrics.add("rows_retried", remainder.rows)
        permanent = isinstance(exc, SinkError) and exc.permanent
        detail = str(exc) if isinstance(exc, SinkError) else type(exc).__name__  # never a raw message
        if detail != _DEADLINE_PASSED:
            self._last_cause = detail
        if self.spool is None and not requeue:  # stopping, and nowhere to keep them: report_waiting says it once
            self.metrics.drop("shutdown_undelivered", remainder.rows)
            return
        # Once per distinct problem, not once per retry; a delivery the stop's deadline cut is not a problem of
        # storage's: the stop says once what is left (report_waiting), not "kept and retried".
        if detail != self._last_error and detail != _DEADLINE_PASSED:
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
        else:
            with self._cond:  # retry it first, after the back-off
                self._inbox.appendleft(remainder)
                self._inbox_bytes += len(remainder.payload)
                self.inbox_rows += remainder.rows

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
            logger.error("mdc: could not spool %d rows: %s; they are dropped (counted as spool_error)", batch.rows,
                         exc.strerror or exc)
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

    def _finish_marker(self, marker: Marker) -> bool:
        """Everything before the marker has been tried; now empty the spool while there is time."""
        ok = not self._backoff.failing
        if self.spool is not None and not self._spool_dirty and self.spool.segments():
            self._spool_dirty = True  # spooled by another process (or writer) since we last looked
        if self.spool is not None and self._spool_dirty:
            while time.monotonic() < marker.deadline:
                if not self._backoff.ready():
                    time.sleep(min(0.1, max(0.0, marker.deadline - time.monotonic())))
                    continue
                if not self._replay_one(marker.deadline) and not self._spool_dirty:
                    break
            ok = not self._spool_dirty and not self._backoff.failing
        if marker.stop:
            ok = self._drain_at_stop(marker) and ok
        return ok

    def _drain_at_stop(self, marker: Marker) -> bool:
        """Nothing new arrives after the stop marker: deliver what is held, else spool or count it."""
        with self._cond:
            left = [item for item in self._inbox if isinstance(item, Batch)]
            self._inbox.clear()
            self._inbox_bytes = self.inbox_rows = 0
        delivered = [self._deliver(batch, marker.deadline, requeue=False) for batch in left]
        if self.spool is not None:
            self.spool.close()
        return all(delivered)

    def report_waiting(self, deadline: float) -> None:
        """At stop: say how much was not delivered and where it waits for the next start; and what is lost (rows
        without a spool to keep them, captures not encoded in time), why, and what would have kept it.
        ``deadline``: the shutdown deadline, in seconds."""
        _, skipped, dropped = self.metrics.totals()
        undelivered = dropped.get("shutdown_undelivered", 0)  # without a spool to keep them
        lost_rows = undelivered + dropped.get("shutdown_deadline", 0)
        lost_captures = skipped.get("capture:shutdown_deadline", 0)
        if lost_rows or lost_captures:
            what = " and ".join(part for part in (f"{lost_rows} rows" if lost_rows else "",
                                                  f"{lost_captures} captured requests" if lost_captures else "")
                                if part)
            logger.error("mdc: stopping: %s are lost, not written within the shutdown deadline (%g s)%s; counted "
                         "under dropped_reasons and skipped_reasons.%s", what, deadline,
                         f" (storage: {self._last_cause})" if self._last_cause else "",
                         " Set MDC_SPOOL_DIR to keep rows that storage does not take on disk for the next start."
                         if self.spool is None and undelivered else "")
        if self.spool is None:
            return
        journaled = self.journal.unresolved_rows() if self.journal is not None else 0
        spooled = self.spool.size_bytes(fresh=True)
        if journaled or spooled:
            held = [f"{journaled} rows of this process in the journal" if journaled else "",
                    f"{spooled} bytes of spooled batches (of all processes)" if spooled else ""]
            logger.warning("mdc: stopping with rows not yet in storage: %s, in %s; the next process that starts "
                           "with this MDC_SPOOL_DIR delivers them", " and ".join(part for part in held if part),
                           self.spool.directory)


def _resolve(batch: Batch) -> None:
    """The batch is delivered, spooled, or dropped and counted: its journal segment no longer needs it."""
    generation, batch.generation = batch.generation, None
    if generation is not None:
        generation.resolve((batch.folder, batch.stem, batch.header), batch.rows)
