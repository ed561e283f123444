"""Records → CSV (UTF-8 bytes), keyed by the file it goes to: the CPU-heavy half of the writer.

The batcher thread runs this for ``collect()`` records and, by default, for captured requests. With
``MDC_ENCODER=process`` the captured requests are encoded by ``encoder_process.py`` in a helper
process instead, with this same code, so JSON parsing and CSV encoding leave the server's GIL.
"""
from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

from .capture import Capture
from .metrics import Metrics
from .paths import Target
from .records import (Record, default_prefix, encode, header_line, infer_columns, plain_number_rows,
                      row_cells_end)

logger = logging.getLogger("mdc_middleware")


class Encoded(NamedTuple):
    """CSV lines of one record (UTF-8), and where they go: a target's day folder, under a header."""

    target: Target
    folder: str
    header: str
    payload: bytes
    rows: int


def encode_record(record: Record, metrics: Metrics, neutralize_formulas: bool, counted: bool) -> Optional[Encoded]:
    """The record's rows as CSV, or None when it has none or had to be withheld (counted with a reason).

    ``counted``: the record came from ``collect()``, whose rows were counted when queued; rows found in
    a captured request are counted here, when they are first known.
    """
    columns = record.columns or infer_columns(record.data, default_prefix(record.target.designation))
    try:
        record, columns = record.with_rules_applied(columns)
    except Exception:  # a redaction function of the app's that raised: withhold, never write unredacted
        logger.exception("mdc: field rules failed for %s; its rows are not written", record.target.model_name)
        metrics.drop("field_rules_error", record.rows or 1)
        return None
    try:
        rows, text = encode(record, columns, neutralize_formulas)
    except Exception:
        logger.exception("mdc: could not encode rows for %s", record.target.model_name)
        metrics.add("internal_errors")
        metrics.drop("encode_error", record.rows or 1)
        return None
    if not counted:
        metrics.add("rows_captured", rows)
        metrics.add("rows_enqueued", rows)
    if not rows:
        return None
    return Encoded(record.target, day_folder(record.target, int(record.timestamp // 86_400)),
                   _header(columns, metrics), _utf8(text, metrics), rows)


def _header(columns: Sequence[str], metrics: Metrics) -> str:
    header = header_line(columns)
    if not header.isascii():
        header = header.encode("utf-8", "replace").decode("utf-8")  # column names from payload keys
    return header


def _utf8(text: str, metrics: Metrics) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from JSON "\ud800": not UTF-8, so replaced
        metrics.skip("invalid_unicode_replaced")
        return text.encode("utf-8", "replace")


def encode_captures(captures: Iterable[Capture], metrics: Metrics, neutralize_formulas: bool) -> List[Encoded]:
    """Captured request/response pairs → their inputs and predictions (and unparsed payloads) as CSV: one
    piece per file and header, rows in the order the requests came.

    Why not one request at a time: a one-row request makes two records, and encoding each on its own
    (its own encode call, header and Encoded, then its own place in a batch) was half of the 15 µs a
    capture cost. Records that go to one file under one header are written together; rows of plain
    numbers with one orjson call for all of them.
    """
    groups: Dict[tuple, List[Record]] = {}
    for capture in captures:
        try:
            records = capture.to_records(metrics)
        except Exception:  # a bug in extraction must not stop the thread or process that runs it
            logger.exception("mdc: could not turn a captured request into rows")
            metrics.add("internal_errors")
            continue
        for record in records:
            # A route's targets are made once (policy.RoutePlan), so their identity names the file, and the
            # route's field rules with it; the columns name the header.
            key = (id(record.target), record.columns, int(record.timestamp // 86_400))
            group = groups.get(key)
            if group is None:
                groups[key] = [record]
            else:
                group.append(record)
    encoded: List[Encoded] = []
    for (_, _, epoch_day), records in groups.items():
        try:
            together = _encode_plain_numbers(records, epoch_day, metrics, neutralize_formulas)
        except Exception:  # a bug here must not cost the rows: the general path below writes them
            logger.exception("mdc: could not encode rows together; encoding them one record at a time")
            metrics.add("internal_errors")
            together = None
        if together is not None:
            encoded.append(together)
        else:
            encoded.extend(_joined(encode_record(record, metrics, neutralize_formulas, counted=False)
                                   for record in records))
    return encoded


def _encode_plain_numbers(records: List[Record], epoch_day: int, metrics: Metrics,
                          neutralize_formulas: bool) -> Optional[Encoded]:
    """Records of one file whose rows are all plain numbers, as one piece; None when some are not.

    The same bytes as ``encode_record`` of each in turn (a test holds the two to that)."""
    first = records[0]
    columns = first.columns
    if first.rules is not None or not columns or not all(type(record.data) is list for record in records):
        return None
    rows = list(itertools.chain.from_iterable(record.data for record in records))
    text = plain_number_rows(rows, len(columns)) if rows else None
    if text is None:
        return None
    lines = text[2:-2].split("],[")
    parts = []
    start = 0
    for record in records:
        end = start + len(record.data)
        if end == start:
            continue
        row_end = row_cells_end(record, neutralize_formulas)
        parts.append(row_end.join(lines[start:end]))
        parts.append(row_end)
        start = end
    metrics.add("rows_captured", len(rows))
    metrics.add("rows_enqueued", len(rows))
    return Encoded(first.target, day_folder(first.target, epoch_day), _header(columns, metrics),
                   _utf8("".join(parts), metrics), len(rows))


def _joined(pieces: Iterable[Optional[Encoded]]) -> List[Encoded]:
    """Encoded pieces with the same file and header made one, in order."""
    merged: Dict[tuple, List[Encoded]] = {}
    for piece in pieces:
        if piece is not None:
            merged.setdefault((id(piece.target), piece.folder, piece.header), []).append(piece)
    return [same[0] if len(same) == 1 else
            same[0]._replace(payload=b"".join(p.payload for p in same), rows=sum(p.rows for p in same))
            for same in merged.values()]


@functools.lru_cache(maxsize=4096)
def day_folder(target: Target, epoch_day: int) -> str:
    """A target's folder for a UTC day (days since the epoch): formatted once per target and day."""
    return target.day_folder(dt.date(1970, 1, 1) + dt.timedelta(days=epoch_day))
