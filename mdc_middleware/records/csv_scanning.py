"""Where rows end in CSV bytes (a newline outside quotes): how many rows a payload holds, and where to cut it
whole rows at a time (blocks for storage, rows for ``mdc tail``)."""
from __future__ import annotations

from typing import List, Optional


def _row_end_offsets(payload: bytes, start: int = 0, end: Optional[int] = None) -> List[int]:
    """Offsets just past each row end in ``payload[start:end]`` (a newline outside quotes)."""
    end = len(payload) if end is None else end
    ends = []
    position = start
    inside = False
    while True:
        newline = payload.find(b"\n", position, end)
        if newline < 0:
            return ends
        inside ^= payload.count(b'"', position, newline) % 2 == 1
        if not inside:
            ends.append(newline + 1)
        position = newline + 1


def csv_row_count(payload: bytes) -> int:
    """Rows in CSV text, newlines inside quoted cells not counted."""
    if b'"' not in payload:
        return payload.count(b"\n")
    return len(_row_end_offsets(payload))


def nth_row_end(payload: bytes, start: int, end: int, n: int) -> int:
    """The offset just past the ``n``-th row (counting from 1) in ``payload[start:end]``, or -1 if fewer end there."""
    ends = _row_end_offsets(payload, start, end)
    return ends[n - 1] if 0 < n <= len(ends) else -1


def last_row_end(payload: bytes, start: int, end: int) -> int:
    """The offset just past the last complete row in ``payload[start:end]``, or -1 if none ends there."""
    if b'"' not in payload[start:end]:
        cut = payload.rfind(b"\n", start, end)
        return cut + 1 if cut >= 0 else -1
    ends = _row_end_offsets(payload, start, end)
    return ends[-1] if ends else -1
