"""Rows, their correlation columns, and their CSV encoding (drop-in with Azure ML's files).

A ``Record`` is what one ``collect()`` call or one captured payload leaves in the queue: a snapshot of
the data plus the metadata shared by all of its rows. Turning it into CSV text happens on the writer
thread, never on the request path.
"""
from __future__ import annotations

import collections.abc
import csv
import dataclasses
import functools
import datetime as dt
import itertools
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import orjson

if TYPE_CHECKING:
    import pandas as pd

from .storage.paths import Target
from .payloads.privacy import FieldRules
from .payloads.schema import enveloped_rows

CORRELATION_ID = "$aml_dc_correlation_id"
SCORING_TIMESTAMP = "$aml_dc_scoring_timestamp"
BOUNDARY = "$aml_dc_boundary"
META_COLUMNS: Tuple[str, ...] = (
    CORRELATION_ID, SCORING_TIMESTAMP, BOUNDARY, "$aml_workspace", "$aml_service_name",
    "$aml_model_name", "$aml_model_version", "$aml_request_id",
)
# Column names the readers take as ours. A payload or collect() column named like them (a client sending
# {"$aml_dc_correlation_id": "forged"}) is written under "_" + its name: a header never holds a name twice, and
# no reader joins on a value a client chose. ($mdc_header_* columns are the middleware's, from MDC_COLLECT_HEADERS.)
RESERVED_PREFIXES = ("$aml_", "$mdc_")
OURS = "$mdc_header_"


def is_reserved(name: str) -> bool:
    return name.startswith(RESERVED_PREFIXES) and not name.startswith(OURS)


def unreserved(columns: Sequence[str]) -> Tuple[str, ...]:
    """The names as written in a header: reserved ones prefixed with "_" until they are neither reserved nor
    taken by another column."""
    if not any(is_reserved(name) for name in columns):
        return tuple(columns)
    taken = set(columns) | set(META_COLUMNS)
    out = []
    for name in columns:
        if is_reserved(name):
            renamed = "_" + name
            while renamed in taken:
                renamed = "_" + renamed
            taken.add(renamed)
            name = renamed
        out.append(name)
    return tuple(out)


LINE_END = "\n"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


_second_prefix: Tuple[int, str] = (-1, "")


def format_timestamp(epoch_seconds: float) -> str:
    """UTC ISO-8601 with microseconds, e.g. ``2026-11-25T08:15:02.123456Z``.

    On the request path for every collect(): the text up to the second is formatted once a second.
    """
    global _second_prefix
    micros = math.floor(epoch_seconds * 1_000_000)  # truncated: never into the next second, or day
    second, fraction = divmod(micros, 1_000_000)
    cached_second, prefix = _second_prefix
    if cached_second != second:
        prefix = dt.datetime.fromtimestamp(second, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_prefix = (second, prefix)
    return f"{prefix}{fraction:06d}Z"


@dataclass
class Record:
    """One collect() call: rows for one target that share correlation metadata."""

    target: Target
    data: Any                     # list of rows, 1-D/2-D ndarray, DataFrame or FrameSnapshot (a snapshot)
    columns: Optional[Tuple[str, ...]]
    correlation_id: str
    timestamp: float              # epoch seconds, UTC
    request_id: str
    boundary: int = 1440
    rows: int = 0                 # known row count (for metrics and batching)
    rules: Optional[FieldRules] = None  # which fields may be written; applied on the writer thread

    def with_rules_applied(self, columns: Sequence[str]) -> Tuple["Record", Tuple[str, ...]]:
        """This record without the fields its rules withhold, and the columns that remain."""
        if self.rules is None or not self.rules.active:
            return self, tuple(columns)
        kept, rows = self.rules.apply(list(columns), rows_as_lists(self.data, columns))
        return dataclasses.replace(self, data=rows, columns=kept, rules=None), kept


class _NoValue:
    """No value is an instance: what the pandas types stand for until this process imports pandas."""


_pandas_types: Optional[Tuple[type, type]] = None


def _frame_and_series() -> Tuple[type, type]:
    """pandas' DataFrame and Series, once this process has imported pandas.

    Not imported here: a value cannot be a DataFrame before pandas is imported, and a process that
    only encodes captured JSON (the ``MDC_ENCODER=process`` helper, or a server whose code never makes a
    frame) would carry pandas' 75 MB and 0.2 s of start-up for nothing."""
    global _pandas_types
    if _pandas_types is None:
        pandas = sys.modules.get("pandas")
        frame, series = getattr(pandas, "DataFrame", None), getattr(pandas, "Series", None)
        if frame is None or series is None:  # not imported, or still being imported by another thread
            return _NoValue, _NoValue
        _pandas_types = (frame, series)
    return _pandas_types


def is_frame(data: Any) -> bool:
    """Whether ``data`` is a pandas DataFrame, without importing pandas."""
    return isinstance(data, (_pandas_types or _frame_and_series())[0])


@functools.lru_cache(maxsize=None)
def _copy_on_write() -> bool:
    """pandas 2.x has the option (True, False or "warn"); from pandas 3 it is always on."""
    import pandas as pd

    return int(pd.__version__.split(".")[0]) >= 3 or getattr(pd.options.mode, "copy_on_write", False) is True


class FrameSnapshot:
    """A numeric DataFrame of one block, held by sharing that block under pandas' copy-on-write.

    While ``block`` lives, pandas copies the caller's data before any write to their frame, so these
    values never change. Holding the block costs a tenth of ``DataFrame.copy(deep=False)``, which
    builds a new frame and index around the same data (about 5 µs: half of a whole collect()).
    """

    __slots__ = ("block", "columns")

    def __init__(self, block: Any, columns: pd.Index) -> None:
        self.block = block      # a pandas Block: rows are its columns
        self.columns = columns  # immutable; a later ``frame.columns = …`` replaces it, never changes it

    @property
    def values(self) -> np.ndarray:
        """Rows × columns, a read-only view."""
        return self.block.values.T

    def frame(self) -> pd.DataFrame:
        import pandas as pd  # loaded: this snapshot was taken of a DataFrame

        return pd.DataFrame(self.values, columns=self.columns)


def _share_numeric_block(frame: pd.DataFrame) -> Optional[FrameSnapshot]:
    """The frame's data as a FrameSnapshot, or None when it is not one numeric block in column order."""
    try:
        blocks = frame._mgr.blocks
        if len(blocks) != 1:
            return None
        block = blocks[0]
        values = block.values
        if (type(values) is not np.ndarray or values.dtype.kind not in "iuf" or block.refs is None
                or not block.mgr_locs.is_slice_like or block.mgr_locs.as_slice != slice(0, values.shape[0], 1)):
            return None
        return FrameSnapshot(block.copy(deep=False), frame.columns)
    except (AttributeError, TypeError):  # a pandas whose internals differ: the public way instead
        return None


def numeric_only(frame: pd.DataFrame) -> bool:
    """Every column numeric (so none holds text such as correlation ids), from its blocks' dtypes."""
    try:
        return all(block.dtype.kind in "iufb" for block in frame._mgr.blocks)
    except AttributeError:  # a pandas whose internals differ
        return False


def snapshot(data: Any) -> Any:
    """Copy what the caller could still mutate after collect() returns; cheap for arrays.

    With pandas' copy-on-write (always on from pandas 3) sharing the frame's data is already safe: a
    later write to the caller's frame copies its data first, so ours never changes.
    """
    frame_type, series_type = _frame_and_series()
    if isinstance(data, frame_type):
        if _copy_on_write():
            return _share_numeric_block(data) or data.copy(deep=False)
        return data.copy()
    if isinstance(data, series_type):
        return _series_rows(data)
    if isinstance(data, np.ndarray):
        return data.copy()
    if isinstance(data, dict):
        return _dict_rows(data)
    if not isinstance(data, (list, tuple)):
        if hasattr(data, "__array__"):  # a tensor, a pyarrow array…: its numbers (its text was one cell)
            return np.array(data, copy=True)
        if not is_collection(data):  # a single value
            return data
        data = list(data)  # a set, a range, a deque, dict values…
    return [list(row) if isinstance(row, (list, tuple)) else row for row in data]


def is_collection(data: Any) -> bool:
    """Iterable more than once, and not text: its items are rows."""
    return (isinstance(data, collections.abc.Iterable) and not isinstance(data, collections.abc.Iterator)
            and not isinstance(data, (str, bytes, bytearray, memoryview)))


def uncollectable(data: Any) -> Optional[str]:
    """Why ``collect()`` must leave this alone: an iterator (a generator, ``map``, ``zip``…) is used up by
    reading it, and the scoring code may still need it. Its repr was written as one cell."""
    return "iterator" if isinstance(data, collections.abc.Iterator) else None


def _series_rows(series: "pd.Series") -> Any:
    """A Series labelled by names (``frame.iloc[0]``) is one row; one with a positional index
    (``frame["score"]``, ``pd.Series(predictions)``) is a column, named by the Series' name or, without
    one, as a list's column is."""
    if series.index.inferred_type == "string":
        return series.to_frame().T
    return series.to_frame() if series.name is not None else series.tolist()


def _dict_rows(data: dict) -> list:
    """A payload as score.py parses it (``{"data": [[1, 2], [3, 4]]}``) is its rows, as the middleware reads
    that body; a dict of equal-length lists is columns (``{"a": [1, 2], "b": [3, 4]}``: two rows); else it is
    one record, as the middleware's schema reads a JSON object."""
    enveloped = enveloped_rows(data)
    if enveloped is not None:
        rows, names = enveloped
        if names is not None:
            return [dict(zip(names, row)) if isinstance(row, list) else dict(row) for row in rows]
        return [list(row) if isinstance(row, list) else dict(row) for row in rows]
    values = list(data.values())
    columns = all(isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim) for v in values)
    if values and columns and len(set(map(len, values))) == 1:
        keys = list(data)
        return [dict(zip(keys, row)) for row in zip(*values)]
    return [dict(data)]


def count_rows(data: Any, columns: Optional[Sequence[str]] = None) -> int:
    if type(data) is FrameSnapshot:
        return data.block.values.shape[1]
    if is_frame(data):
        return len(data)
    if isinstance(data, np.ndarray):
        if data.ndim == 0:
            return 1
        if data.ndim == 1 and columns is not None and len(columns) == len(data) > 1:
            return 1
        return len(data)
    if isinstance(data, (list, tuple)):
        if data and columns is not None and len(columns) == len(data) > 1 and not _is_row(data[0]):
            return 1
        return len(data)
    return 1


def _is_row(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict, np.ndarray))


def column_names(index: pd.Index) -> Tuple[str, ...]:
    """A frame's column labels as the CSV header writes them."""
    return tuple(map(str, index.tolist()))


def infer_columns(data: Any, prefix: str) -> Tuple[str, ...]:
    """Column names for undeclared data: DataFrame columns, record keys, else ``<prefix>_<i>``."""
    if type(data) is FrameSnapshot or is_frame(data):
        return column_names(data.columns)
    width = 1
    if isinstance(data, np.ndarray):
        width = 1 if data.ndim < 2 else int(np.prod(data.shape[1:]))
    elif isinstance(data, (list, tuple)) and data:
        first = data[0]
        if isinstance(first, dict):
            keys: dict = {}
            for row in data:
                if isinstance(row, dict):
                    keys.update(dict.fromkeys(row))
            return tuple(str(k) for k in keys)
        if isinstance(first, (list, tuple, np.ndarray)):
            width = len(first)
    if width == 1:
        return (prefix,)
    return tuple(f"{prefix}_{i}" for i in range(width))


def default_prefix(designation: str) -> str:
    """Name stem for undeclared columns: ``prediction_<i>`` for predictions, else ``feature_<i>``."""
    return "prediction" if designation == "predictions" else "feature"


def _scalar(value: np.generic) -> Any:
    """A numpy scalar as Python's. A float32 (or float16) as the shortest text of its own precision, as arrays
    of them are written: 0.1, not 0.10000000149011612, the float64 nearest to it."""
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return float(str(value))
    return value.item()


def _json_value(value: Any) -> Any:
    """What json.dumps cannot write itself, inside a list or dict cell: numpy numbers as numbers (an int64
    was written as the string "3"), arrays as lists (their text cuts long ones short), the rest as text."""
    if isinstance(value, np.generic):
        return _scalar(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _cell(value: Any, neutralize: bool) -> Any:
    if isinstance(value, str):
        if neutralize and value.startswith(_FORMULA_START) and not _NUMBER.match(value):
            return "'" + value
        return value
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, separators=(",", ":"), default=_json_value)
        return _cell(text, neutralize)
    if isinstance(value, bytes):
        return _cell(value.decode("utf-8", "replace"), neutralize)
    if isinstance(value, np.generic):
        return _cell(_scalar(value), neutralize)
    if isinstance(value, np.ndarray):  # as JSON, like a list: numpy's own text cuts long arrays to "[0 1 ... 1999]"
        return _cell(value.tolist(), neutralize)
    if value is None or isinstance(value, int):  # the usual cells: no look-up below
        return value
    if type(value).__name__ in _PANDAS_MISSING:  # empty, as in a frame's cells (never "<NA>", "NaT")
        return None
    return value


_PANDAS_MISSING = ("NAType", "NaTType")  # pd.NA and pd.NaT, named: this module does not import pandas


def text_columns(data: Any, columns: Sequence[str]) -> frozenset:
    """The columns whose value in the first row is text (a str), as the collector was given it: what a CSV
    cell cannot say ("00501" and 501 are both written 00501, and "12345" as 12345)."""
    if type(data) is FrameSnapshot:
        return frozenset()  # numbers only
    if isinstance(data, np.ndarray) and data.dtype.kind not in "USO":
        return frozenset()
    try:
        first = data.head(1) if is_frame(data) else data[:1] if isinstance(data, (list, tuple, np.ndarray)) else data
        row = next(iter(rows_as_lists(first, columns)), [])
    except Exception:  # a shape rows_as_lists reads differently: no claim
        return frozenset()
    return frozenset(name for name, value in zip(columns, row) if isinstance(value, str))


def rows_as_lists(data: Any, columns: Sequence[str]) -> Iterable[List[Any]]:
    """Rows in ``columns`` order; dict rows are aligned by name, missing cells left empty."""
    if type(data) is FrameSnapshot:
        data = data.frame()
    if is_frame(data):
        frame = data.reindex(columns=list(columns)) if column_names(data.columns) != tuple(columns) else data
        return frame.astype(object).where(frame.notna(), None).values.tolist()
    if isinstance(data, np.ndarray):
        if data.ndim == 0:
            return [[data.item()]]
        if data.ndim == 1:
            return [data.tolist()] if len(columns) == len(data) > 1 else [[v] for v in data.tolist()]
        return data.reshape(len(data), -1).tolist()
    if isinstance(data, (list, tuple)):
        if data and len(columns) == len(data) > 1 and not _is_row(data[0]):
            return [list(data)]
        out = []
        for row in data:
            if isinstance(row, dict):
                out.append([row.get(c) for c in columns])
            elif isinstance(row, np.ndarray):
                out.append(row.reshape(-1).tolist())
            elif isinstance(row, (list, tuple)):
                out.append(list(row))
            else:
                out.append([row])
        return out
    return [[data]]


class RowsEndingInNewline:
    """What a ``csv.writer`` (or pandas' ``to_csv``) writes to: rows written ending in "\r\n" are passed on
    ending in LINE_END.

    Why: csv.writer quotes a cell for the delimiter, the quote character and the characters of its line
    end only. Told to end rows with "\n", it leaves a bare "\r" unquoted, and readers (pandas, Excel,
    Spark) take that for a line break: one cell or column name holding a "\r" broke its whole file for
    them. Told "\r\n", it quotes both; it writes each row with one call, so each is fixed here.
    """

    __slots__ = ("_write",)

    def __init__(self, write: Callable[[str], Any]) -> None:
        self._write = write

    def write(self, row: str) -> Any:
        if row.endswith("\r\n"):
            row = row[:-2] + LINE_END
        return self._write(row)


class CsvLines(list):
    """Rows written by ``writer()``, which quotes every cell holding a "\r" or a "\n" (see
    RowsEndingInNewline), and read back by ``text()`` ending in LINE_END.

    Each row is kept as written, ending in "\r\n", and fixed once for all of them: a C-speed replace
    when no cell holds a "\r", which is almost always (a Python call per row cost 14 % of the csv path).
    """

    write = list.append  # what csv.writer calls, once per row

    def writer(self) -> Any:
        return csv.writer(self, lineterminator="\r\n")

    def text(self) -> str:
        text = "".join(self)
        if text.count("\r") == len(self):  # each "\r" ends a row: no cell holds one
            return text.replace("\r\n", LINE_END)
        return "".join([line[:-2] + LINE_END for line in self])


def header_line(columns: Sequence[str]) -> str:
    return _header_line(tuple(columns))


@functools.lru_cache(maxsize=1024)  # once per distinct set of columns, not once per record
def _header_line(columns: Tuple[str, ...]) -> str:
    lines = CsvLines()
    try:
        lines.writer().writerow(list(columns) + list(META_COLUMNS))
    except csv.Error:  # a NUL in a name, on Python 3.10 (see encode)
        lines = CsvLines()
        lines.writer().writerow([_without_nul(name) for name in columns] + list(META_COLUMNS))
    return lines.text()


def _meta(record: Record, neutralize: bool) -> List[Any]:
    """The correlation cells shared by every row of a record, in META_COLUMNS order, ready for CSV.

    The four cells a target fixes are prepared once per target."""
    fixed = _target_cells(record.target, neutralize)
    return [_cell(record.correlation_id, neutralize), format_timestamp(record.timestamp), record.boundary,
            *fixed, _cell(record.request_id, neutralize)]


@functools.lru_cache(maxsize=1024)
def _target_cells(target: Target, neutralize: bool) -> Tuple[Any, ...]:
    return tuple(_cell(v, neutralize) for v in (target.workspace, target.webservice_name, target.model_name,
                                                   target.model_version))


def encode(record: Record, columns: Sequence[str], neutralize: bool = True, without_nul: bool = False
           ) -> Tuple[int, str]:
    """CSV text of the record's rows (no header) and how many rows it holds.

    Rows wider than ``columns`` are cut and narrower ones padded, so every line of a file matches
    its header; the caller counts such mismatches before it gets here. ``without_nul``: text cells with a
    NUL in it as U+FFFD, for Python 3.10, whose csv writer refuses a NUL (csv.Error, "need to escape").
    """
    width = len(columns)
    data = record.data
    if isinstance(data, list):
        if data and width:
            # What a JSON request usually holds: rows of plain numbers (or labels), written by orjson.
            written = plain_lines([record], width, neutralize)
            if written is not None:
                return written
    elif type(data) is FrameSnapshot and column_names(data.columns) == tuple(columns):
        data = data.values
    if (is_frame(data) and data.shape[1] == width and width
            and column_names(data.columns) == tuple(columns)):
        kinds = _column_kinds(data)
        if len(kinds) == 1 and kinds <= {"i", "u", "f"}:  # one numeric kind: the array keeps each cell's text
            data = data.to_numpy()
    if (isinstance(data, np.ndarray) and data.dtype.kind in "iuf" and data.ndim == 2
            and data.shape[1] == width and width):
        if not len(data):
            return 0, ""
        separator = _row_suffix(record, neutralize)
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            lines = [",".join(_float_text(v) for v in row) for row in data.tolist()]
            return len(lines), separator.join(lines) + separator
        return len(data), _numeric_rows(data, separator)
    if without_nul:
        return _csv_rows(data, columns, [_without_nul(c) for c in _meta(record, neutralize)], neutralize,
                         lambda value, neutralize: _without_nul(_cell(value, neutralize)))
    return _csv_rows(data, columns, _meta(record, neutralize), neutralize, _cell)


def _csv_rows(data: Any, columns: Sequence[str], meta: List[Any], neutralize: bool,
              cell: Callable[[Any, bool], Any]) -> Tuple[int, str]:
    width = len(columns)
    lines = CsvLines()
    writer = lines.writer()
    for row in rows_as_lists(data, columns):
        if len(row) != width:
            row = (row + [None] * width)[:width]
        writer.writerow([cell(v, neutralize) for v in row] + meta)
    return len(lines), lines.text()


def _without_nul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


_NUMBER_TEXT = b"0123456789.eE+-,[]"
_PLAIN_CELL_TYPES = {int, float, str}
_FORMULA_TEXT = tuple(b'"' + start.encode() for start in _FORMULA_START if start.isprintable())


def _plain_rows(rows: list, width: int, neutralize: bool) -> Optional[str]:
    """The CSV cells of ``rows``, rows joined by "],[", when every row holds exactly ``width`` plain
    cells, else None. Written by orjson in C, not cell by cell in Python.

    Plain numbers: ints and floats. Anything else (a bool, null, NaN or infinity, object, nested list)
    leaves a character numbers never have, or a bracket inside a row; integers past 64 bits, subclasses
    of int and numpy scalars make orjson refuse them. (Enum members orjson writes as their values.)
    Plain text (``_plain_text_rows``): what the csv module writes as it is, a class label say.
    """
    try:
        # Rows that are lists: a dict's len() is its number of keys and a string's its number of characters,
        # and orjson writes them as objects and strings (collect([{"a": 1}]) wrote "a:1", ["a", "b"] ",").
        if set(map(type, rows)) != {list} or set(map(len, rows)) != {width}:
            return None
        text = orjson.dumps(rows, option=orjson.OPT_PASSTHROUGH_SUBCLASS)  # subclasses of int are refused
    except TypeError:  # a row without a length, or a value orjson does not write (JSONEncodeError)
        return None
    if text.translate(None, _NUMBER_TEXT):
        return _plain_text_rows(rows, text, width, neutralize)
    # Inside the outer brackets, only the "],[" between rows: a nested list brings one more "[".
    if text.count(b"[", 2, len(text) - 2) != len(rows) - 1:
        return None
    return text.decode("ascii")[2:-2]


def _plain_text_rows(rows: list, text: bytes, width: int, neutralize: bool) -> Optional[str]:
    """As ``_plain_rows``, for rows that hold text as well as numbers: None unless every string is one
    the csv module writes unquoted and ``_cell`` leaves alone.

    orjson escapes a quote, a backslash and every control character ("\\n", "\\r", "\\t"), so text
    without a backslash has none of them and every quote in it opens or closes a string. A comma inside
    a string shows in the count of commas; a formula's first character follows an opening quote.
    """
    if b"\\" in text or (neutralize and any(mark in text for mark in _FORMULA_TEXT)):
        return None
    if not set(map(type, itertools.chain.from_iterable(rows))) <= _PLAIN_CELL_TYPES:
        return None  # bools and None, lists and dicts, subclasses of str
    if b"null" in text:  # a NaN or an infinity (or, rarely, text holding "null": the csv path then)
        return None
    if text.count(b",") != len(rows) * width - 1:  # a comma inside a string (brackets there are harmless:
        return None                                   # without a comma they never make the "],[" between rows)
    return text.replace(b'"', b"").decode("utf-8")[2:-2]


def plain_lines(records: Sequence[Record], width: int, neutralize: bool) -> Optional[Tuple[int, str]]:
    """(rows, CSV text) of records (lists of rows) whose rows all hold ``width`` plain cells (numbers,
    text that needs no quoting), written by one orjson call for all of them; None when some row does not.

    Many records at once is what the writer does with a run of small captured requests (encoder.py).
    A test holds this to the bytes the csv path writes."""
    if len(records) == 1:
        rows = records[0].data
        text = _plain_rows(rows, width, neutralize)
        if text is None:
            return None
        separator = _row_suffix(records[0], neutralize)
        return len(rows), text.replace("],[", separator) + separator
    rows = list(itertools.chain.from_iterable(record.data for record in records))
    text = _plain_rows(rows, width, neutralize)
    if text is None:
        return None
    lines = text.split("],[")  # one per row: plain cells hold no comma, so no "],["
    parts = []
    start = 0
    for record in records:
        end = start + len(record.data)
        separator = _row_suffix(record, neutralize)
        parts.append(separator.join(lines[start:end]))
        parts.append(separator)
        start = end
    return len(rows), "".join(parts)


def _row_suffix(record: Record, neutralize: bool) -> str:
    """What follows the data cells of every row of a record: its correlation cells and the line end.

    The fast paths write numbers, which never need quoting; of these cells only the two ids might,
    and the four a target fixes are written once per target. The same cells as ``_meta`` (what the
    csv path writes), without a csv writer per record: a test holds the two to the same bytes."""
    return (f",{_field(_cell(record.correlation_id, neutralize))},{format_timestamp(record.timestamp)},"
            f"{record.boundary},{_target_text(record.target, neutralize)},"
            f"{_field(_cell(record.request_id, neutralize))}{LINE_END}")


def _field(value: Any) -> str:
    """One CSV field as the csv module writes it (quoted only when it must be)."""
    text = "" if value is None else str(value)
    if not ('"' in text or "," in text or "\n" in text or "\r" in text):  # a third of a regex search
        return text
    lines = CsvLines()
    lines.writer().writerow([text])  # as the rows of the csv path are written
    return lines.text()[:-len(LINE_END)]


@functools.lru_cache(maxsize=1024)
def _target_text(target: Target, neutralize: bool) -> str:
    return ",".join(_field(cell) for cell in _target_cells(target, neutralize))


def _column_kinds(frame: pd.DataFrame) -> set:
    """The dtype kinds of a frame's columns; its block manager answers ten times faster than .dtypes."""
    try:
        dtypes = frame._mgr.get_dtypes()
    except AttributeError:  # a pandas without that internal
        dtypes = frame.dtypes
    return {dtype.kind for dtype in dtypes}


_CHUNK_ROWS = 1024


def give_way() -> None:
    """Let a request thread waiting for the GIL run; a real sleep, as sleep(0) often takes it straight back."""
    time.sleep(0.00005)


def _numeric_rows(data: np.ndarray, separator: str) -> str:
    """CSV lines of a finite numeric matrix, each ending with ``separator`` (the correlation cells).

    orjson writes the shortest round-trip text of every number in C, about seven times faster than
    repr() per cell. Chunks of rows, with a pause between them, keep this thread from holding the
    GIL for long while request threads wait for it.
    """
    parts = []
    for start in range(0, len(data), _CHUNK_ROWS):
        chunk = np.ascontiguousarray(data[start:start + _CHUNK_ROWS])
        try:
            text = orjson.dumps(chunk, option=orjson.OPT_SERIALIZE_NUMPY).decode("ascii")
        except orjson.JSONEncodeError:  # a dtype orjson does not take (float16, …)
            text = "[" + ",".join("[" + ",".join(map(repr, row)) + "]" for row in chunk.tolist()) + "]"
        parts.append(text[2:-2].replace("],[", separator) + separator)
        if start:
            give_way()
    return "".join(parts)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return ""
    # A float subclass is written as the float it is: numpy 2 gives np.float64 (a subclass of float) the repr
    # "np.float64(0.1)", and that was the cell, for every np.float64 in a list row or an object column.
    return repr(value) if type(value) is float else repr(float(value))


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
