"""The write-ahead journal: encoded rows reach local disk within milliseconds, before any batching wait.

The writer batches rows for storage (by rows, bytes and time); the journal makes that wait safe. Rows are
written to the journal as soon as the batcher has encoded them (``Writer`` writes every
``JOURNAL_INTERVAL`` at the most, at once when nothing else waits), with plain ``writev`` calls: the page
cache keeps them when the process dies, SIGKILL and OOM kills included (``fsync`` adds the crash of the
machine).

Layout, in the spool directory: one segment file per *generation*, the rows the writer seals together into
one round of batches, named ``<time_ns>-<pid>.journal``. Records are spool records (``Batch.encode``); an
*ack* record names a batch (folder, stem, header) that was resolved: delivered, moved to the spool, or
dropped and counted. The owning process holds an exclusive ``flock`` on each of its segments until every
batch of the generation is resolved, then deletes it.

A segment that no process holds belongs to a process that died. ``Journal.adopt_orphans`` (run by every
writer at start and every few seconds) moves its records that were not acked into the spool, one spool
record per batch, and deletes it; the spool's replay then delivers them. A process killed in the
microseconds between that spool write and the delete, or while a block was on its way to storage, has
those rows delivered twice; ``$aml_dc_correlation_id`` tells the copies apart.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..metrics import Metrics
from .spool import _HEAD, MAGIC, Batch, Spool, _records, create_locked, write_all

logger = logging.getLogger("mdc_middleware")

SUFFIX = ".journal"
JOURNAL_INTERVAL = 0.01  # at most this long between a row's encoding and its journal write, under load
BatchKey = Tuple[str, str, str]  # folder, stem, header


def _ack_record(key: BatchKey) -> bytes:
    return _control_record({"ack": list(key)})


def _control_record(meta: dict) -> bytes:
    body = json.dumps(meta, separators=(",", ":")).encode("utf-8") + b"\0"
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


class Generation:
    """One segment: the rows of one round of batches, held (flock) by this process until all are resolved."""

    def __init__(self, path: Path, descriptor: int, fsync: bool) -> None:
        self.path = path
        self._descriptor: Optional[int] = descriptor
        self._fsync = fsync
        self._lock = threading.Lock()
        self._open_batches: Optional[int] = None  # known once sealed
        self._size = 0
        self.rows = 0          # rows written to this segment
        self.resolved_rows = 0

    def write(self, batches: List[Batch]) -> int:
        """Append the batches' rows (one ``writev``); returns the rows written. Raises OSError (disk full)."""
        if not batches:
            return 0
        parts = [part for batch in batches for part in batch.encode_parts()]
        rows = sum(batch.rows for batch in batches)
        with self._lock:
            self._write_all(parts)
            self.rows += rows
        return rows

    def seal(self, batches: int) -> None:
        """No more rows come: ``batches`` batches were made of them; at 0 unresolved the segment goes."""
        with self._lock:
            self._open_batches = batches
            self._delete_if_done()

    def resolve(self, key: BatchKey, rows: int) -> None:
        """The batch ``key`` of this generation landed, was spooled, or was dropped and counted."""
        with self._lock:
            if self._descriptor is None:
                return
            self.resolved_rows += rows
            if self._open_batches is not None:
                self._open_batches -= 1
            if not self._delete_if_done():
                try:
                    self._write_all([_ack_record(key)])
                except OSError:  # without the ack the batch may be delivered again after a crash: counted
                    pass

    def intend(self, key: BatchKey, blob: str, position: int) -> None:
        """The batch ``key`` is about to be appended to ``blob`` at ``position``: if this process dies now, its
        successor checks there before sending it again (the sink's ``hint``), instead of writing it twice."""
        with self._lock:
            if self._descriptor is None:
                return
            try:
                self._write_all([_control_record({"intent": list(key), "at": [blob, position]})])
            except OSError:
                pass  # without it a batch landed at the moment of a crash may be delivered twice

    @property
    def unresolved_rows(self) -> int:
        return max(0, self.rows - self.resolved_rows)

    def forget(self) -> None:
        """After fork, in the child: close our copy; the parent's lock stays with the parent."""
        if self._descriptor is not None:
            try:
                os.close(self._descriptor)
            except OSError:
                pass
            self._descriptor = None

    def _write_all(self, parts: List[bytes]) -> None:
        assert self._descriptor is not None
        try:
            size = write_all(self._descriptor, parts)
            if self._fsync:
                os.fsync(self._descriptor)
        except OSError:
            os.ftruncate(self._descriptor, self._size)  # a torn record would hide the ones after it
            raise
        self._size += size

    def _delete_if_done(self) -> bool:
        if self._open_batches is None or self._open_batches > 0 or self._descriptor is None:
            return False
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._descriptor)  # after the unlink: no other process can take the lock of a live file
        self._descriptor = None
        return True


class Journal:
    """The segments of this process, and the adoption of those of dead ones into the spool."""

    def __init__(self, spool: Spool, metrics: Optional[Metrics] = None, fsync: bool = False) -> None:
        self.spool = spool
        self.directory = spool.directory
        self.fsync = fsync
        self.metrics = metrics or Metrics()
        self._live: List[Generation] = []
        self._lock = threading.Lock()

    def open_generation(self) -> Generation:
        path, descriptor = create_locked(self.directory, SUFFIX)
        generation = Generation(path, descriptor, self.fsync)
        with self._lock:
            self._live = [g for g in self._live if g._descriptor is not None]
            self._live.append(generation)
        return generation

    def unresolved_rows(self) -> int:
        """Rows of this process's segments not yet resolved (they survive in the segments if it dies)."""
        with self._lock:
            return sum(g.unresolved_rows for g in self._live if g._descriptor is not None)

    def orphans(self) -> List[Path]:
        return sorted(self.directory.glob("*" + SUFFIX))

    def adopt_orphans(self) -> int:
        """Move the unacked records of segments no live process holds into the spool; returns their rows."""
        adopted = 0
        self._remove_stillborn()
        own = {g.path for g in self._live}
        for path in self.orphans():
            if path in own:
                continue
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process is alive (or another one is adopting it)
                try:
                    if os.stat(path).st_ino != os.fstat(descriptor).st_ino:
                        continue  # deleted and its name reused meanwhile
                except FileNotFoundError:
                    continue  # resolved and deleted by its owner just before we took the lock
                adopted += self._adopt(path, descriptor)
            finally:
                os.close(descriptor)
        return adopted

    def _remove_stillborn(self) -> None:
        """Segments a process died making (``create_locked`` before its rename) are empty: removed once old."""
        for path in self.directory.glob(".*.new"):
            try:
                if path.stat().st_mtime < time.time() - 60.0:
                    path.unlink()
            except OSError:
                pass

    def _adopt(self, path: Path, descriptor: int) -> int:
        with open(descriptor, "rb", closefd=False) as handle:
            data = handle.read()
        acked = set()
        intents: Dict[BatchKey, Tuple[str, int]] = {}
        pending: Dict[BatchKey, List[Batch]] = {}
        for _, _, body in _records(data, 0, self.metrics):
            meta, _, payload = body.partition(b"\0")
            try:
                info = json.loads(meta)
                if "ack" in info:
                    acked.add(tuple(info["ack"]))
                    continue
                if "intent" in info:
                    intents[tuple(info["intent"])] = (str(info["at"][0]), int(info["at"][1]))
                    continue
                batch = Batch.decode(body)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.metrics.add("spool_corrupt_records")
                continue
            pending.setdefault((batch.folder, batch.stem, batch.header), []).append(batch)
        rows = 0
        for key, parts in pending.items():
            if key in acked:
                continue
            whole = Batch(key[0], key[1], key[2], b"".join(p.payload for p in parts), sum(p.rows for p in parts),
                          hint=intents.get(key))
            try:
                if self.spool.write(whole):
                    rows += whole.rows
            except OSError as exc:
                logger.error("mdc: could not move %d journaled rows to the spool: %s; they stay in %s",
                             whole.rows, exc.strerror or exc, path)
                return rows  # the segment stays: adopted again later, when there is room
        self.spool.seal()
        path.unlink()
        if rows:
            self.metrics.add("rows_recovered", rows)
            logger.warning("mdc: %d rows journaled by a process that stopped before delivering them (%s) "
                           "will be delivered now", rows, path.name)
        return rows

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        for generation in self._live:
            generation.forget()
        self._live = []
