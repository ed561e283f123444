"""The batcher thread: queued records and captured requests → encoded rows → journaled → batches per file.

It takes what the request path queued, encodes it (``capture_encoding``: on this thread or in a helper
process), writes the rows to the write-ahead journal within ``JOURNAL_INTERVAL``, and seals them into one batch
per file when enough rows, bytes or time have gathered; sealed batches go to ``Delivery``. Sets of columns per
file and day are bounded. After large payloads, freed memory goes back to the system (``memory``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..payloads.captured_request import RawCapture, warn_once
from .capture_encoding import CaptureEncoder
from .delivery import Delivery, Marker, StopDeadline
from .encoder import ROW_JSON, Encoded, as_json_rows, encode_record
from .handoff import HandoffQueue
from .journal import JOURNAL_INTERVAL, Generation, Journal
from .jsonl import encode_record_jsonl
from .memory import MemoryReleaser
from ..metrics import Metrics
from ..storage.paths import JSONL, SCHEMA_STEM, Target
from ..records.csv_encoding import give_way
from ..records.record import Record
from .spool import Batch

logger = logging.getLogger("mdc_middleware")

CAPTURE_RUN = 2048  # captured requests taken from the queue (and sent to the encoder process) at once…
CAPTURE_RUN_BYTES = 1 << 20  # …or this many bytes of them: their CSV comes back in one piece
# Sets of columns (headers) one target writes in a day, each to a file of its own. Payloads without a declared
# schema name their own columns: clients that leave out empty fields, or send sparse features as keys, made a
# file per request, and opening each scanned the headers of all before it (1,000 requests: 1,000 files, 40 s).
MAX_COLUMN_SETS = 64


@dataclass
class _Pending:
    """Rows encoded for one file (target, folder, header) since the last seal."""

    target: Target
    folder: str
    header: str
    chunks: List[bytes] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0
    journaled_chunks: int = 0  # chunks[:journaled_chunks] were written to the journal...
    journaled_rows: int = 0
    journal_failed: bool = False  # ...unless a write of some of them failed: then the journal does not hold them


def count_drop(metrics: Metrics, rows: int, reason: str) -> None:
    """A record's rows dropped, or (``rows`` 0) a captured request whose rows are not known yet."""
    if rows:
        metrics.drop(reason, rows)
    else:
        metrics.add("captures_dropped")
        metrics.skip(f"capture:{reason}")


@functools.lru_cache(maxsize=1024)
def _schema_target(target: Target) -> Target:
    """Where the notes on a target's columns go: ``_mdc_schema.jsonl`` in the same folder (no reader of the
    data's ``data*.csv`` takes it)."""
    return dataclasses.replace(target, file_stem=SCHEMA_STEM)


class Pacer:
    """Gives the GIL away after each millisecond of continuous work.

    Otherwise a waiting request thread gets it back only after the interpreter's switch interval (5 ms):
    every request that arrives while the batcher works through a burst waits that long. The millisecond
    counts from the start of the work (``working()``, called when the batcher wakes from waiting for items)
    or from the last give-way, so a look at the queue that is done within a millisecond gives nothing away:
    each give-way costs the batcher CPU on caches the request thread has since filled (a fifth to a quarter
    more per capture while the main thread runs Python, ``benchmarks/bench_writer.py --beside-requests``).
    """

    def __init__(self) -> None:
        self._since = 0.0

    def working(self) -> None:
        """Work starts after a wait: the millisecond counts from now."""
        self._since = time.perf_counter()

    def pause(self) -> None:
        """Called between pieces of work: gives the GIL away if a millisecond of work has passed."""
        now = time.perf_counter()
        if now - self._since >= 0.001:
            give_way()
            self._since = time.perf_counter()


@dataclass
class BatchLimits:
    rows: int = 10_000
    bytes: int = 4 << 20
    interval: float = 5.0  # seconds the oldest pending row may wait


class Batcher:
    """The batcher thread's state and work. ``bytes_out``: queued bytes it has taken (the queue's bound)."""

    def __init__(self, items: HandoffQueue, delivery: Delivery, encoder: CaptureEncoder, metrics: Metrics,
                 stop: StopDeadline, limits: BatchLimits, pacer: "Pacer", *, neutralize_formulas: bool = True,
                 max_column_sets: int = MAX_COLUMN_SETS, journal: Optional[Journal] = None,
                 stem_suffix: str = "") -> None:
        """:param stem_suffix: added to every file's stem (``data`` → ``data-<host>-<pid>``): files of this
            process's own."""
        self.items = items
        self.delivery = delivery
        self.encoder = encoder
        self.metrics = metrics
        self.stop = stop
        self.limits = limits
        self.pacer = pacer
        self.neutralize_formulas = neutralize_formulas
        self.max_column_sets = max_column_sets
        self.journal = journal
        self.stem_suffix = stem_suffix
        self.bytes_out = 0
        self._pending: Dict[Tuple[Target, str, str], _Pending] = {}
        self.pending_rows = 0
        self._pending_bytes = 0
        self._oldest_pending: Optional[float] = None
        self._generation: Optional[Generation] = None  # the journal segment of the rows pending now
        self._unjournaled_since: Optional[float] = None
        self._memory = MemoryReleaser()
        self._column_sets: Dict[Tuple[Target, str], set] = {}  # (target, folder) → headers written there
        self._text_noted: Dict[Tuple[Target, str], frozenset] = {}  # (target, folder) → text columns noted

    def run(self) -> None:
        self.encoder.start()
        while True:
            try:
                if self._once():
                    return
            except Exception:  # a bug here must not stop collection for the life of the process
                logger.exception("mdc: batcher error; collection goes on")
                self.metrics.add("internal_errors")

    def _once(self) -> bool:
        """Take one item (or time out) and seal batches that are due; True when told to stop."""
        timeout = (self.limits.interval if self._oldest_pending is None
                   else max(0.0, self._oldest_pending + self.limits.interval - time.monotonic()))
        if self._memory.pending:  # look again once the work has settled, to give its memory back
            timeout = min(timeout, self._memory.SETTLE)
        rested = not self.items.qsize()  # nothing waiting: the get below waits, and work starts anew after it
        try:
            item, nbytes = self.items.get(timeout=timeout) if timeout > 0 else self.items.get_nowait()
            self.bytes_out += nbytes  # it leaves the queue's byte bound here, whatever happens to it next
        except queue.Empty:
            item = None
        if rested:
            self.pacer.working()
        if isinstance(item, Marker):
            self._seal()
            self.delivery.hand_over(item)
            return item.stop
        if type(item) is tuple:  # a captured request: take the run of them waiting behind it too
            run = self.items.pop_run(tuple, CAPTURE_RUN - 1, CAPTURE_RUN_BYTES - nbytes)
            run_bytes = sum(size for _, size in run)
            self.bytes_out += run_bytes
            self._memory.worked_through(nbytes + run_bytes)
            self._take_captures([item, *(capture for capture, _ in run)])
        elif item is not None:
            self._take(item)
        if self._unjournaled_since is not None and (
                not self.items.qsize() or time.monotonic() - self._unjournaled_since >= JOURNAL_INTERVAL):
            self._write_journal()
        if not self.items.qsize():
            self._memory.release_if_due()
        if self.pending_rows and (
                self.pending_rows >= self.limits.rows or self._pending_bytes >= self.limits.bytes
                or time.monotonic() - (self._oldest_pending or 0.0) >= self.limits.interval):
            self._seal()
        return False

    def _take(self, record: Record) -> None:
        if self.stop.passed():
            count_drop(self.metrics, record.rows, "shutdown_deadline")
            return
        if record.target.layout == "jsonl":
            self._append(encode_record_jsonl(record, self.metrics, counted=True))
        else:
            self._append(encode_record(record, self.metrics, self.neutralize_formulas, counted=True))
        self.pacer.pause()

    def _take_captures(self, captures: List[RawCapture]) -> None:
        if self.stop.passed():
            for _ in captures:  # no time left to encode them: counted, never lost silently
                count_drop(self.metrics, 0, "shutdown_deadline")
            return
        for encoded in self.encoder.encode(captures, self.stop.at):
            self._append(encoded)
        self.pacer.pause()

    def _append(self, encoded: Optional[Encoded]) -> None:
        """Add encoded rows to the batch pending for their file."""
        if encoded is None:
            return
        encoded = self._within_column_sets(encoded)
        if encoded.text:
            self._note_text_columns(encoded)
        key = (encoded.target, encoded.folder, encoded.header)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(encoded.target, encoded.folder, encoded.header)
        pending.chunks.append(encoded.payload)
        pending.rows += encoded.rows
        pending.nbytes += len(encoded.payload)
        self.pending_rows += encoded.rows
        self._pending_bytes += len(encoded.payload)
        if self._oldest_pending is None:
            self._oldest_pending = time.monotonic()
        if self.journal is not None and self._unjournaled_since is None:
            self._unjournaled_since = time.monotonic()

    def _note_text_columns(self, encoded: Encoded) -> None:
        """Beside the data, once per process, folder and new column: which columns held text. A CSV cell cannot
        say that "00501" or "12345" was sent as text; the readers keep such columns as text."""
        place = (encoded.target, encoded.folder)
        noted = self._text_noted.get(place, frozenset())
        if encoded.text <= noted:
            return
        if len(self._text_noted) >= 4096:
            self._text_noted.clear()
        noted = self._text_noted[place] = noted | encoded.text
        line = (json.dumps({"text_columns": sorted(noted)}, ensure_ascii=False) + "\n").encode("utf-8")
        self._append(Encoded(_schema_target(encoded.target), encoded.folder, "", line, 0))

    def _write_journal(self) -> None:
        """Write the rows encoded since the last call to the journal, one record per file they go to."""
        self._unjournaled_since = None
        if self.journal is None:
            return
        batches, written = [], []
        for pending in self._pending.values():
            if pending.journaled_chunks < len(pending.chunks):
                batches.append(Batch(pending.folder, self._stem(pending.target), pending.header,
                                     b"".join(pending.chunks[pending.journaled_chunks:]),
                                     pending.rows - pending.journaled_rows))
                written.append(pending)
                pending.journaled_chunks, pending.journaled_rows = len(pending.chunks), pending.rows
        if not batches:
            return
        try:
            if self._generation is None:
                self._generation = self.journal.open_generation()
            self._generation.write(batches)
        except OSError as exc:
            for pending in written:
                pending.journal_failed = True
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
        """Turn every pending file's rows into a batch and hand it to delivery (journaled first)."""
        self._write_journal()
        pending, self._pending = self._pending, {}
        generation, self._generation = self._generation, None
        self.pending_rows = self._pending_bytes = 0
        self._oldest_pending = None
        # A batch belongs to the journal's segment only when all its rows are in it: one whose journal write
        # failed must not be taken for kept there (if the spool then fails it too, it is dropped and counted).
        batches = [Batch(p.folder, self._stem(p.target), p.header, b"".join(p.chunks), p.rows,
                         generation=None if p.journal_failed else generation)
                   for p in pending.values()]  # bytes already: joining megabytes is a copy, not an encoding
        if generation is not None:
            generation.seal(sum(batch.generation is not None for batch in batches))
        for batch in batches:
            self.delivery.hand_over(batch)

    def _stem(self, target: Target) -> str:
        """The file stem rows of ``target`` go to: the target's, or with this process's suffix."""
        if not self.stem_suffix:
            return target.file_stem
        if target.file_stem.endswith(JSONL):
            return target.file_stem[:-len(JSONL)] + self.stem_suffix + JSONL
        return target.file_stem + self.stem_suffix
