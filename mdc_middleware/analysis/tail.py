"""Follow collected files as they grow, like ``tail -f`` over a whole day folder tree.

Files are only ever appended to (local O_APPEND or append blobs), so each file is read from the offset
where the last read stopped, and only up to the end of its last complete row: a row being written as
we look is picked up by the next poll, whole.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from ..records.csv_scanning import csv_row_count, last_row_end, nth_row_end
from .read import file_sizes, list_data_files
from .source import is_container


class Follower:
    """New complete rows of the matching files since the last poll, as CSV text."""

    def __init__(self, source: Any, *, from_start: bool = False, **filters: Any) -> None:
        self.source = source
        self.filters = filters
        self.offsets: Dict[str, int] = {}
        self.headers: Dict[str, bytes] = {}
        self.header = b""
        if not from_start:
            sizes = file_sizes(source)
            for name, _ in self._files():
                self.offsets[name] = sizes.get(name, 0)

    def _files(self) -> Iterator[Tuple[str, Any]]:
        for name, _ in list_data_files(self.source, **self.filters):
            yield (Path(name).as_posix() if not isinstance(name, str) else name), name

    def _read(self, name: Any, offset: int, size: int) -> bytes:
        if is_container(self.source):
            return self.source.download_blob(name, offset=offset, length=size - offset).readall()
        with open(name, "rb") as handle:
            handle.seek(offset)
            return handle.read(size - offset)

    @staticmethod
    def _header_end(chunk: bytes) -> int:
        newline = chunk.find(b"\n")
        return last_row_end(chunk, 0, newline + 1) if newline >= 0 else -1

    def poll(self, limit: Optional[int] = None) -> Tuple[bytes, int]:
        """CSV bytes of the rows that appeared since the last poll (a header first when the columns
        change), at most ``limit`` of them, and how many rows they hold. Rows past the limit are left for
        the next poll."""
        sizes = file_sizes(self.source)
        out = []
        rows = 0
        for key, name in self._files():
            if limit is not None and rows >= limit:
                break
            offset, size = self.offsets.get(key, 0), sizes.get(key, 0)
            if size <= offset:
                continue
            chunk = self._read(name, offset, size)
            start = 0
            if offset == 0:  # a new file: its first line is its header
                start = self._header_end(chunk)
                if start < 0:
                    continue
                self.headers[key] = chunk[:start]
            elif key not in self.headers:
                head = self._read(name, 0, min(size, 1 << 16))
                self.headers[key] = head[:max(self._header_end(head), 0)]
            if self.headers[key] != self.header:
                self.header = self.headers[key]
                out.append(self.header)
            end = last_row_end(chunk, start, len(chunk))
            if end < 0:
                self.offsets[key] = offset + start
                continue
            count = csv_row_count(chunk[start:end])
            if limit is not None and rows + count > limit:
                end, count = nth_row_end(chunk, start, end, limit - rows), limit - rows
            out.append(chunk[start:end])
            rows += count
            self.offsets[key] = offset + end
        return b"".join(out), rows

    def follow(self, write: Callable[[bytes], Any], *, interval: float = 2.0, duration: Optional[float] = None,
               max_rows: Optional[int] = None) -> int:
        """Poll until ``duration`` seconds passed or ``max_rows`` rows were written; rows written."""
        deadline = None if duration is None else time.monotonic() + duration
        rows = 0
        while True:
            chunk, count = self.poll(None if max_rows is None else max_rows - rows)
            if chunk:
                write(chunk)
                rows += count
            if max_rows is not None and rows >= max_rows:
                return rows
            if deadline is not None and time.monotonic() >= deadline:
                return rows
            remaining = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(0.0, remaining))
