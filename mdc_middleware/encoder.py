"""Records → CSV (UTF-8 bytes), keyed by the file it goes to: the CPU-heavy half of the writer.

The batcher thread runs this for ``collect()`` records and, by default, for captured requests. With
``MDC_ENCODER=process`` the captured requests are encoded by ``encoder_process.py`` in a helper
process instead, with this same code, so JSON parsing and CSV encoding leave the server's GIL.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import List, NamedTuple, Optional

from .capture import Capture
from .metrics import Metrics
from .paths import Target
from .records import Record, default_prefix, encode, header_line, infer_columns

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
    header = header_line(columns)
    if not header.isascii():
        header = header.encode("utf-8", "replace").decode("utf-8")  # column names from payload keys
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from JSON "\ud800": not UTF-8, so replaced
        payload = text.encode("utf-8", "replace")
        metrics.skip("invalid_unicode_replaced")
    return Encoded(record.target, day_folder(record.target, int(record.timestamp // 86_400)), header, payload, rows)


def encode_capture(capture: Capture, metrics: Metrics, neutralize_formulas: bool) -> List[Encoded]:
    """A captured request/response pair → its inputs and predictions (and unparsed payloads) as CSV."""
    try:
        records = capture.to_records(metrics)
    except Exception:  # a bug in extraction must not stop the thread or process that runs it
        logger.exception("mdc: could not turn a captured request into rows")
        metrics.add("internal_errors")
        return []
    encoded = (encode_record(record, metrics, neutralize_formulas, counted=False) for record in records)
    return [e for e in encoded if e is not None]


@functools.lru_cache(maxsize=4096)
def day_folder(target: Target, epoch_day: int) -> str:
    """A target's folder for a UTC day (days since the epoch): formatted once per target and day."""
    return target.day_folder(dt.date(1970, 1, 1) + dt.timedelta(days=epoch_day))
