"""The local disk spool: batches that storage did not take wait here, and are replayed in order.

Append-only segment files named ``<time_ns>-<pid>.spool`` (so names sort by age). Each record is
``MDC1 | length | crc32 | body`` written with one ``writev`` call (fsync'd when ``fsync`` is on: the
page cache already survives the death of the process, fsync adds the crash of the machine); a torn or corrupt record
fails its checksum and is skipped (counted), never crashing replay. A segment is replayed by one
process at a time (``flock``), from a cursor kept in ``<segment>.cursor`` so delivered records are not
sent again; a fully delivered segment is deleted. The spool's size is bounded: past the bound the
oldest segments or the newest batches are dropped (``drop`` policy), and counted.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from ..metrics import Metrics

logger = logging.getLogger("mdc_middleware")

MAGIC = b"MDC1"
_HEAD = struct.Struct("<4sII")  # magic, body length, crc32 of body
SUFFIX = ".spool"


try:
    _IOV_MAX = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):
    _IOV_MAX = -1
if _IOV_MAX <= 0:  # unknown, or no limit stated: POSIX guarantees 16
    _IOV_MAX = 16


def write_all(descriptor: int, parts: List[bytes]) -> int:
    """Write the buffers in order at the descriptor's position with ``writev`` (no joined copy of them), going
    on after a partial write; returns the bytes written. Raises OSError (a full disk) with part written: the
    caller cuts it off."""
    views = [memoryview(part) for part in parts if part]
    total = sum(view.nbytes for view in views)
    first = 0
    while first < len(views):
        written = os.writev(descriptor, views[first:first + _IOV_MAX])
        while written:
            size = views[first].nbytes
            if written >= size:
                written -= size
                first += 1
            else:
                views[first] = views[first][written:]
                written = 0
    return total


@dataclass
class Batch:
    """CSV lines for one file, as handed to a sink. ``hint``: where an earlier try may have landed."""

    folder: str
    stem: str
    header: str
    payload: bytes
    rows: int
    hint: Optional[Tuple[str, int]] = None
    source: Optional["SpoolRecord"] = field(default=None, repr=False)
    generation: Optional[Any] = field(default=None, repr=False)  # its journal segment (journal.Generation)

    def encode_parts(self) -> List[bytes]:
        """The batch as one spool record, in buffers to write one after the other (``write_all``): the head,
        the metadata and the payload, which is never copied (the CRC of the body is taken piece by piece)."""
        meta = json.dumps({"f": self.folder, "s": self.stem, "h": self.header, "r": self.rows,
                           "hint": list(self.hint) if self.hint else None}, separators=(",", ":")).encode("utf-8")
        meta += b"\0"
        crc = zlib.crc32(self.payload, zlib.crc32(meta))
        return [_HEAD.pack(MAGIC, len(meta) + len(self.payload), crc), meta, self.payload]

    @classmethod
    def decode(cls, body: bytes) -> "Batch":
        meta, _, payload = body.partition(b"\0")
        info = json.loads(meta)
        hint = tuple(info["hint"]) if info.get("hint") else None
        return cls(info["f"], info["s"], info["h"], payload, int(info["r"]), hint)  # type: ignore[arg-type]


@dataclass
class SpoolRecord:
    segment: Path
    end_offset: int


class Spool:
    def __init__(self, directory: str, max_bytes: int = 1 << 30, drop: str = "oldest",
                 segment_bytes: int = 16 << 20, metrics: Optional[Metrics] = None, fsync: bool = False) -> None:
        if drop not in ("oldest", "newest"):
            raise ValueError(f"drop must be 'oldest' or 'newest', got {drop!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.drop = drop
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.metrics = metrics or Metrics()
        self._size: Optional[int] = None  # bytes not yet delivered; rescanned now and then
        self._size_checked = 0.0
        self._lock = threading.Lock()
        self._active: Optional[Tuple[Path, int]] = None  # (path, fd) of the segment being written
        self._active_size = 0
        self._replaying: Optional[Tuple[Path, int]] = None  # (path, fd) locked for replay
        self.directory.mkdir(parents=True, exist_ok=True)

    # ---- writing ----------------------------------------------------------------------------------
    def write(self, batch: Batch) -> bool:
        """Persist a batch; False (and counted as dropped) when the size bound refuses it."""
        record = batch.encode_parts()
        size = sum(map(len, record))
        with self._lock:
            if self.size_bytes() + size > self.max_bytes:
                if self.drop == "newest" or not self._drop_oldest(size):
                    self.metrics.drop("spool_full", batch.rows)
                    return False
            if self._active is None or self._active_size >= self.segment_bytes:
                self._rotate()
            path, descriptor = self._active  # type: ignore[misc]
            try:
                write_all(descriptor, record)
                if self.fsync:
                    os.fsync(descriptor)
            except OSError:
                # A full disk took part of the record: cut it off (the segment is ours alone), or its
                # stated length would swallow the records written after it when they are replayed.
                os.ftruncate(descriptor, self._active_size)
                raise
            self._active_size += size
            self._grow(size)
        self.metrics.add("rows_spooled", batch.rows)
        return True

    def _rotate(self) -> None:
        self._close_active()
        self._active = create_locked(self.directory, SUFFIX)
        self._active_size = 0

    def _close_active(self) -> None:
        if self._active is not None:
            os.close(self._active[1])  # closing releases the lock: the segment becomes replayable
            self._active = None
            self._active_size = 0

    def seal(self) -> None:
        """Make what this process spooled so far replayable."""
        with self._lock:
            self._close_active()

    # ---- replaying --------------------------------------------------------------------------------
    def segments(self) -> List[Path]:
        return sorted(self.directory.glob("*" + SUFFIX))

    def size_bytes(self, fresh: bool = False) -> int:
        """Bytes waiting, all processes included (rescanned every few seconds, tracked in between; now when
        ``fresh``)."""
        if fresh or self._size is None or time.monotonic() - self._size_checked > 5.0:
            self._size = self._scan_size()
            self._size_checked = time.monotonic()
        return self._size

    def _grow(self, delta: int) -> None:
        if self._size is not None:
            self._size = max(0, self._size + delta)

    def _scan_size(self) -> int:
        total = 0
        for segment in self.segments():
            try:
                total += segment.stat().st_size - _read_cursor(segment)
            except OSError:
                pass
        return total

    def next_batch(self) -> Optional[Batch]:
        """The oldest undelivered batch of a segment no other process holds, or None."""
        with self._lock:
            for segment in self.segments():
                if self._active is not None and segment == self._active[0]:
                    continue
                if not self._hold(segment):
                    continue
                batch = self._read_next(segment)
                if batch is not None:
                    return batch
                self._finish_segment(segment)
            return None

    def ack(self, batch: Batch) -> None:
        """The batch landed: move the cursor past it (delete the segment when it is all delivered)."""
        record = batch.source
        if record is None:
            return
        with self._lock:
            self._grow(_read_cursor(record.segment) - record.end_offset)
            _write_cursor(record.segment, record.end_offset)
        self.metrics.add("rows_replayed", batch.rows)

    def after_fork(self) -> None:
        """Forget the parent's open segments (closing our copies leaves the parent's locks alone)."""
        self._lock = threading.Lock()
        for held in (self._active, self._replaying):
            if held is not None:
                try:
                    os.close(held[1])
                except OSError:
                    pass
        self._active = self._replaying = None
        self._active_size = 0

    def release(self) -> None:
        with self._lock:
            self._release()

    def close(self) -> None:
        with self._lock:
            self._close_active()
            self._release()

    def _hold(self, segment: Path) -> bool:
        if self._replaying is not None and self._replaying[0] == segment:
            return True
        self._release()
        try:
            descriptor = os.open(segment, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(segment).st_ino != os.fstat(descriptor).st_ino:
                raise FileNotFoundError(segment)  # finished and deleted by another process before we locked it
        except OSError:
            os.close(descriptor)
            return False  # being written or replayed by another process, or gone
        self._replaying = (segment, descriptor)
        return True

    def _release(self) -> None:
        if self._replaying is not None:
            os.close(self._replaying[1])
            self._replaying = None

    def _read_next(self, segment: Path) -> Optional[Batch]:
        offset, intent = _read_cursor_and_intent(segment)
        with open(segment, "rb") as handle:
            data = handle.read()
        for start, end, body in _records(data, offset, self.metrics):
            try:
                batch = Batch.decode(body)
            except (ValueError, KeyError, UnicodeDecodeError):
                self.metrics.add("spool_corrupt_records")
                _write_cursor(segment, end)
                continue
            batch.source = SpoolRecord(segment, end)
            if intent is not None and start == offset and batch.hint is None:
                batch.hint = intent  # its last try may have landed: the sink looks there first
            return batch
        return None

    def intend(self, batch: Batch, blob: str, position: int) -> None:
        """The replayed ``batch`` is about to be appended to ``blob`` at ``position``: noted in its segment's
        cursor, so that a process taking the segment over after a kill checks there before sending it again."""
        record = batch.source
        if record is None:
            return
        try:
            _write_cursor(record.segment, _read_cursor(record.segment), (blob, position))
        except OSError:
            pass  # without the note a batch landed at the moment of a crash may be delivered twice

    def _finish_segment(self, segment: Path) -> None:
        """Delete a segment we hold (then its cursor), and only then let go of its lock: a process that opened
        it meanwhile finds it gone (``_hold``), never a segment without its cursor, replayed from the start."""
        try:
            self._grow(-(segment.stat().st_size - _read_cursor(segment)))
        except OSError:
            pass
        for path in (segment, _cursor_path(segment)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self._release()

    def _drop_oldest(self, needed: int) -> bool:
        """Delete the oldest replayable segments until ``needed`` bytes fit; count their rows."""
        for segment in self.segments():
            if self.size_bytes() + needed <= self.max_bytes:
                return True
            if self._active is not None and segment == self._active[0]:
                continue
            if not self._hold(segment):
                continue
            with open(segment, "rb") as handle:
                data = handle.read()
            rows = 0
            for _, _, body in _records(data, _read_cursor(segment), self.metrics):
                try:
                    rows += Batch.decode(body).rows
                except (ValueError, KeyError, UnicodeDecodeError):
                    pass
            logger.error("mdc: spool over its %d-byte bound: dropping %d oldest rows", self.max_bytes, rows)
            self.metrics.drop("spool_full", rows)
            self._finish_segment(segment)
        return self.size_bytes() + needed <= self.max_bytes


def create_locked(directory: Path, suffix: str) -> Tuple[Path, int]:
    """A new segment ``<time_ns>-<pid><suffix>``, open for appending and already locked (``flock``) when it
    appears under that name: it is made and locked under a name no reader looks for, then renamed. Created
    under its own name, another process (or our own adopting thread) could lock it between the create and
    the lock, take it for a dead process's empty segment and delete it, and every row written to it after
    would be lost."""
    name = f"{time.time_ns():020d}-{os.getpid()}{suffix}"
    making = directory / f".{name}.new"
    descriptor = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, directory / name)
    except OSError:
        os.close(descriptor)
        try:
            making.unlink()
        except OSError:
            pass
        raise
    return directory / name, descriptor


def _records(data: bytes, offset: int, metrics: Metrics) -> Iterator[Tuple[int, int, bytes]]:
    """(start, end, body) of each intact record from ``offset``; torn or corrupt ones are skipped."""
    position = offset
    while position + _HEAD.size <= len(data):
        magic, length, checksum = _HEAD.unpack_from(data, position)
        end = position + _HEAD.size + length
        if magic == MAGIC and end <= len(data):
            body = data[position + _HEAD.size:end]
            if zlib.crc32(body) == checksum:
                yield position, end, body
                position = end
                continue
        # Garbage, a torn tail, or a record whose checksum fails: its stated length cannot be trusted
        # (it may reach over the records after it), so resynchronise on the next record's magic.
        metrics.add("spool_corrupt_records")
        following = data.find(MAGIC, position + 1)
        if following < 0:
            return
        position = following


def _cursor_path(segment: Path) -> Path:
    return segment.with_name(segment.name + ".cursor")


def _read_cursor(segment: Path) -> int:
    return _read_cursor_and_intent(segment)[0]


def _read_cursor_and_intent(segment: Path) -> Tuple[int, Optional[Tuple[str, int]]]:
    """Where replay goes on from, and where the record there was last being appended (blob, position), if
    its process was killed in the middle: ``offset`` or ``offset<TAB>blob<TAB>position``."""
    try:
        fields = _cursor_path(segment).read_text().split("\t")
        offset = int(fields[0] or 0)
    except (OSError, ValueError):
        return 0, None
    try:
        return offset, ((fields[1], int(fields[2])) if len(fields) == 3 else None)
    except ValueError:
        return offset, None


def _write_cursor(segment: Path, offset: int, intent: Optional[Tuple[str, int]] = None) -> None:
    path = _cursor_path(segment)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(str(offset) if intent is None else f"{offset}\t{intent[0]}\t{intent[1]}")
    os.replace(temporary, path)

