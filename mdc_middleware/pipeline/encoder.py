"""Records → CSV (UTF-8 bytes), keyed by the file it goes to: the CPU-heavy half of the writer.

The batcher thread runs this for ``collect()`` records and, by default, for captured requests. With
``MDC_ENCODER=process`` the captured requests are encoded by ``encoder_process.py`` in a helper
process instead, with this same code, so JSON parsing and CSV encoding leave the server's GIL.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import io
import json
import logging
import math
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..payloads.captured_request import Capture, warn_once
from ..payloads.schema import names_like
from ..metrics import Metrics
from ..storage.paths import Target
from ..records.csv_encoding import CsvLines, encode, header_line, plain_lines, share_row_suffix
from ..records.record import META_COLUMNS, Record, is_reserved, unreserved
from ..records.snapshot import (FrameSnapshot, column_names, default_prefix, infer_columns, is_frame, rows_as_lists,
                                text_columns)

logger = logging.getLogger("mdc_middleware")


class Encoded(NamedTuple):
    """CSV lines (UTF-8) of one record or of several, and where they go: a target's day folder, under a header."""

    target: Target
    folder: str
    header: str
    payload: bytes
    rows: int
    text: frozenset = frozenset()  # data columns that held text (sampled: see ``_text_of``)


def encode_record(record: Record, metrics: Metrics, neutralize_formulas: bool, counted: bool) -> Optional[Encoded]:
    """The record's rows as CSV, or None when it has none or had to be withheld (counted with a reason).

    ``counted``: the record came from ``collect()``, whose rows were counted when queued; rows found in
    a captured request are counted here, when they are first known.
    """
    written = _rows_text(record, metrics, neutralize_formulas)
    if written is None:
        return None
    columns, rows, text = written
    if not counted:
        metrics.add("rows_captured", rows)
        metrics.add("rows_enqueued", rows)
    if not rows:
        return None
    return Encoded(record.target, day_folder(record.target, int(record.timestamp // 86_400)),
                   file_header(columns), as_utf8([text], metrics), rows, _text_of(record, columns))


def encode_captures(captures: Iterable[Capture], metrics: Metrics, neutralize_formulas: bool) -> List[Encoded]:
    """Captured request/response pairs → their inputs and predictions (and unparsed payloads) as CSV: one
    piece per file and header, rows in the order the requests came.

    Why not one request at a time: a one-row request makes two records, and each would have its own
    header, UTF-8 encoding, Encoded and place in a batch, and its own orjson call. Here
    the records that go to one file under one header share all that; small records of plain numbers and
    labels (what a scoring client usually sends, and a classifier answers) are written by one orjson call
    for many requests, the rest as ``encode_record`` writes them. (A test holds the two ways to the same
    bytes.)
    """
    files: Dict[tuple, _FileRows] = {}
    pieces: List[Encoded] = []
    captured = 0
    for capture in captures:
        try:
            records = capture.to_records(metrics)
        except Exception:  # a bug in extraction must not stop the thread or process that runs it
            logger.exception("mdc: could not turn a captured request into rows")
            metrics.add("internal_errors")
            continue
        if len(records) > 1:
            share_row_suffix(records, neutralize_formulas)
        for record in records:
            small = (record.rules is None and type(record.data) is list and 0 < len(record.data) <= _SMALL_ROWS
                     and bool(record.columns))
            if small:
                columns = tuple(record.columns)  # what _rows_text gives, with no rules to apply
                _count_reserved(columns, len(record.data), metrics)
            else:
                written = _rows_text(record, metrics, neutralize_formulas)
                if written is None:
                    continue
                columns, rows, text = written
                captured += rows
                if not rows:
                    continue
            # A route's targets are made once (policy.RoutePlan): their identity names the file.
            key = (id(record.target), columns, int(record.timestamp // 86_400))
            file = files.get(key)
            if file is None:
                file = files[key] = _FileRows(record.target, columns, key[2])
            sampled = _text_of(record, columns)
            if sampled - file.text:
                file.text = file.text | sampled
            if small:
                file.small.append(record)
                if len(file.small) < _SMALL_RUN:
                    continue
            captured += file.write_small(metrics, neutralize_formulas)  # first: rows stay in order
            if not small:
                file.add(rows, text)
            if file.chars >= _PIECE_CHARS:
                pieces.append(file.piece(metrics))
                del files[key]
    for file in files.values():
        captured += file.write_small(metrics, neutralize_formulas)
        if file.rows:
            pieces.append(file.piece(metrics))
    if captured:
        metrics.add("rows_captured", captured)
        metrics.add("rows_enqueued", captured)
    return pieces


_SMALL_ROWS = 16    # a record of at most this many rows is written with others…
_SMALL_RUN = 256    # …up to this many records in one orjson call
# Text joined into one piece up to about this much. Past it a piece gains nothing and the join costs (runs
# of 100-row requests encode more slowly with 64 KiB pieces than with 16 KiB: benchmarks/bench_writer.py).
_PIECE_CHARS = 16 * 1024


class _FileRows:
    """The rows of a run of captures that go to one file under one header, in the order they came."""

    __slots__ = ("target", "columns", "epoch_day", "rows", "texts", "chars", "small", "text")

    def __init__(self, target: Target, columns: Tuple[str, ...], epoch_day: int) -> None:
        self.target = target
        self.columns = columns
        self.epoch_day = epoch_day
        self.rows = 0
        self.texts: List[str] = []
        self.chars = 0
        self.small: List[Record] = []  # small records not written yet
        self.text: frozenset = frozenset()  # columns seen holding text

    def add(self, rows: int, text: str) -> None:
        self.rows += rows
        self.texts.append(text)
        self.chars += len(text)

    def write_small(self, metrics: Metrics, neutralize_formulas: bool) -> int:
        """Write the small records held back: all in one orjson call when all their rows are plain
        (records.plain_lines), else each on its own. Returns the rows written."""
        records, self.small = self.small, []
        if not records:
            return 0
        try:
            together = plain_lines(records, len(self.columns), neutralize_formulas)
        except Exception:  # a bug here must not cost the rows: each record is written on its own below
            logger.exception("mdc: could not write records together; writing them one at a time")
            metrics.add("internal_errors")
            together = None
        if together is not None:
            self.add(*together)
            return together[0]
        before = self.rows
        for record in records:
            written = _rows_text(record, metrics, neutralize_formulas)
            if written is not None and written[1]:
                self.add(written[1], written[2])
        return self.rows - before

    def piece(self, metrics: Metrics) -> Encoded:
        return Encoded(self.target, day_folder(self.target, self.epoch_day), file_header(self.columns),
                       as_utf8(self.texts, metrics), self.rows, self.text)


def with_rules(record: Record, metrics: Metrics) -> Optional[Tuple[Record, Tuple[str, ...]]]:
    """The record's columns (declared, or found in its data) and the record without what its field rules
    withhold; None when a rule of the app's raised (never written unredacted; counted)."""
    if record.columns:
        record = _declared_against_data(record, metrics)
    columns = record.columns or infer_columns(record.data, default_prefix(record.target.designation))
    _count_reserved(columns, record.rows, metrics)
    try:
        return record.with_rules_applied(columns)
    except Exception:
        logger.exception("mdc: field rules failed for %s; its rows are not written", record.target.model_name)
        metrics.drop("field_rules_error", record.rows or 1)
        return None


def _declared_against_data(record: Record, metrics: Metrics) -> Record:
    """The record, its data matched to its declared columns (``feature_names``, a schema's names).

    By name, for data that names its columns (a DataFrame's columns, the keys of dict rows): a declared name the
    data lacks is an empty cell (sparse records leave out empty fields), said once per model and designation when
    the data has a name like it (``sepal_lenght`` declared, ``sepal_length`` given). A frame that has none of the
    names is taken by position instead, as Azure's collector wrote a frame's values (``pd.DataFrame(array)``,
    whose columns are 0, 1, …). By position, for arrays and rows: values past the names are not written and
    missing ones are empty cells, counted (``collect:width_mismatch``) and said once."""
    data, declared = record.data, record.columns
    assert declared is not None
    target = record.target
    if type(data) is FrameSnapshot or is_frame(data):
        given = column_names(data.columns)
        if given == declared:
            return record
        if any(name in given for name in declared):
            _say_missing(_where(target), declared, given)
            return record
        warn_once(("declared by position", _where(target)),
                  "mdc: %s was given a DataFrame whose columns (%s) are none of its feature_names (%s): its values "
                  "are written by position under feature_names, as Azure's collector wrote them", _where(target),
                  _shown(given), _shown(declared))
        if len(given) == len(declared):  # renamed, and written as such a frame is
            if type(data) is FrameSnapshot:
                import pandas as pd  # loaded: the snapshot was taken of a DataFrame

                return dataclasses.replace(record, data=FrameSnapshot(data.block, pd.Index(declared)))
            return dataclasses.replace(record, data=data.set_axis(list(declared), axis=1))
        data = rows_as_lists(data, given)
        record = dataclasses.replace(record, data=data)
    elif type(data) is list and data and type(data[0]) is dict:
        _say_missing(_where(target), declared, tuple(str(key) for key in data[0]))
        return record
    width = _width(data, len(declared))
    if width is not None and width != len(declared):
        metrics.skip("collect:width_mismatch")
        where = _where(target)
        warn_once(("width", where), "mdc: %s was given rows of %d values for %d feature_names (%s): values past the "
                  "names are not written and missing ones are empty cells (counted as collect:width_mismatch)",
                  where, width, len(declared), _shown(declared))
    return record


def _where(target: Target) -> str:
    return f"collect() for model {target.model_name!r} ({target.designation})"


# (where, the data's names) already judged by _say_missing: once each, and at most this many (sparse records bring
# many sets of keys).
_judged: set = set()
_MAX_JUDGED = 4096


def _say_missing(where: str, declared: Tuple[str, ...], given: Tuple[str, ...]) -> None:
    if (where, given) in _judged or len(_judged) >= _MAX_JUDGED:
        return
    _judged.add((where, given))
    missing = [name for name in declared if name not in given]
    undeclared = [name for name in given if name not in declared]
    alike = names_like(missing, undeclared)
    if alike or len(missing) == len(declared):  # else sparse records: clients leave out empty fields
        warn_once(("declared missing", where),
                  "mdc: %s was given data without its feature_names %s: their cells are written empty%s", where,
                  _shown(missing), "; the data has " + ", ".join(f"{b!r} (for {a!r}?)" for a, b in alike)
                  + ", which feature_names does not name: a typo?" if alike else "")


def _width(data: Any, names: int) -> Optional[int]:
    """How many values the rows of positional data hold (a ragged one's first odd width); None for other data."""
    if isinstance(data, np.ndarray):
        if data.ndim == 0:
            return 1
        if data.ndim == 1:
            return names if names == len(data) > 1 else 1
        return math.prod(data.shape[1:])
    if type(data) is list and data:
        if isinstance(data[0], (list, tuple)):
            widths = set(map(len, data))
            return names if widths == {names} else next(w for w in sorted(widths) if w != names)
        if not isinstance(data[0], (dict, np.ndarray)):
            return names if names == len(data) > 1 else 1
    return None


def _shown(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(str(name) for name in list(names)[:most])
    return shown + (f", … {len(names) - most} more" if len(names) > most else "")


def _rows_text(record: Record, metrics: Metrics, neutralize_formulas: bool
               ) -> Optional[Tuple[Tuple[str, ...], int, str]]:
    """(columns, rows, CSV text) of a record, or None when it had to be withheld (counted with a reason)."""
    ruled = with_rules(record, metrics)
    if ruled is None:
        return None
    record, columns = ruled
    try:
        try:
            rows, text = encode(record, columns, neutralize_formulas)
        except csv.Error:  # Python 3.10 and a NUL in a cell (3.11 on: replaced and counted in _utf8)
            rows, text = encode(record, columns, neutralize_formulas, without_nul=True)
            metrics.skip("nul_replaced")  # once for the record: its NULs are no longer told apart
    except Exception:
        logger.exception("mdc: could not encode rows for %s", record.target.model_name)
        metrics.add("internal_errors")
        metrics.drop("encode_error", record.rows or 1)
        return None
    return columns, rows, text


# Records sampled for text columns per (target, columns): their types are what the first records show, and
# sampling every record would cost each one a look at its first row.
_SAMPLED_RECORDS = 8
_sampled: Dict[Tuple[int, Tuple[str, ...]], int] = {}


def _text_of(record: Record, columns: Sequence[str]) -> frozenset:
    return sampled_text_columns(record.target, columns, record.data)


def text_samples_left(target: Target, columns: Sequence[str]) -> int:
    """How many more records of ``target`` and ``columns`` ``sampled_text_columns`` would look at; after them it
    returns an empty set without looking."""
    return max(0, _SAMPLED_RECORDS - _sampled.get((id(target), tuple(columns)), 0))


def sampled_text_columns(target: Target, columns: Sequence[str], data: Any) -> frozenset:
    """The columns of ``data`` that hold text in its first row, for the first records of each target and set
    of columns; an empty set for the rest."""
    key = (id(target), tuple(columns))
    seen = _sampled.get(key, 0)
    if seen >= _SAMPLED_RECORDS:
        return frozenset()
    if len(_sampled) >= 4096:
        _sampled.clear()
    _sampled[key] = seen + 1
    return text_columns(data, columns)


def _count_reserved(columns: Sequence[str], rows: int, metrics: Metrics) -> None:
    renamed = reserved_names(tuple(columns))
    if renamed:
        metrics.skip("reserved_name_renamed", renamed)
        warn_once(("reserved", tuple(columns)), "mdc: a payload or collect() column is named like the correlation "
                  "columns ($aml_*, $mdc_*); it is written as _<name> (counted as reserved_name_renamed; logged once "
                  "per set of columns)")


@functools.lru_cache(maxsize=1024)  # once per set of columns
def reserved_names(columns: Tuple[str, ...]) -> int:
    return sum(1 for name in columns if is_reserved(name))


# NUL ends a cell without a word in readers written in C: pandas before 3.0 reads "a\0b" as "a". It is written
# as U+FFFD, the replacement character, and counted (nul_replaced); as one lone surrogate is (a JSON escape).
_NUL, _REPLACEMENT = "\x00", "\ufffd"


def file_header(columns: Sequence[str]) -> str:
    header = header_line(unreserved(columns))
    if not header.isascii():
        header = header.encode("utf-8", "replace").decode("utf-8")  # column names from payload keys
    return header.replace(_NUL, _REPLACEMENT) if _NUL in header else header


def as_utf8(texts: List[str], metrics: Metrics) -> bytes:
    """The texts as UTF-8, one after the other. Lone surrogates (a JSON escape of half a pair) are not
    UTF-8: replaced, and counted once per text that held one. NUL characters: replaced, each counted."""
    text = "".join(texts)
    if _NUL in text:
        metrics.skip("nul_replaced", text.count(_NUL))
        texts = [part.replace(_NUL, _REPLACEMENT) for part in texts]
        text = "".join(texts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    encoded = []
    for text in texts:
        try:
            encoded.append(text.encode("utf-8"))
        except UnicodeEncodeError:
            metrics.skip("invalid_unicode_replaced")
            encoded.append(text.encode("utf-8", "replace"))
    return b"".join(encoded)


ROW_JSON = "$mdc_row_json"


def as_json_rows(encoded: Encoded) -> Encoded:
    """The same rows under one fixed header: the data cells of each row as one JSON object (column name →
    the cell as written), then its correlation cells as before. What the writer does with rows whose set of
    columns comes after a day's limit: one more file, where each such set would have been a file of its own."""
    names = next(csv.reader(io.StringIO(encoded.header, newline="")))[:-len(META_COLUMNS)]
    lines = CsvLines()
    writer = lines.writer()
    for row in csv.reader(io.StringIO(encoded.payload.decode("utf-8"), newline="")):
        cells = dict(zip(names, row[:len(names)]))
        writer.writerow([json.dumps(cells, ensure_ascii=False, separators=(",", ":")), *row[len(names):]])
    # Our own column: its name is not renamed as a client's $mdc_ key would be.
    return Encoded(encoded.target, encoded.folder, header_line((ROW_JSON,)), lines.text().encode("utf-8"), len(lines))


@functools.lru_cache(maxsize=4096)
def day_folder(target: Target, epoch_day: int) -> str:
    """A target's folder for a UTC day (days since the epoch): formatted once per target and day."""
    return target.day_folder(dt.date(1970, 1, 1) + dt.timedelta(days=epoch_day))
