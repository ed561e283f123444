"""Records as CSV text, as Azure ML's files hold it: cells (formulas neutralised, numbers as Python writes
them, JSON for nested values), the header with the correlation columns, and the fast paths for numbers. Runs on
the writer thread, yielding the GIL between chunks (``give_way``)."""
from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import orjson

if TYPE_CHECKING:
    import pandas as pd

from ..storage.paths import Target
from .record import META_COLUMNS, Record, format_timestamp
from .snapshot import FrameSnapshot, column_names, is_frame, rows_as_lists


LINE_END = "\n"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
# Text written with one more leading quote, neutralising or not, so that readers can take exactly one off again:
# a neutralised formula ("'=1+1"), and text that starts with a quote and then one of those characters or a quote.
_QUOTED_START = tuple("'" + start for start in (*_FORMULA_START, "'"))
WRITTEN_QUOTE = r"^'(?=[=+\-@\t\r'])"  # the quote ``_cell`` added, as a regex (Python's and Java's)


def unneutralized(column: "pd.Series") -> "pd.Series":
    """Text cells as they were collected: the leading quote the writer put before a formula's first character (or
    before a quote) taken off, ``"'=1+1"`` read as ``"=1+1"``. Other cells, and other text, as they are.
    (Azure's collector added no quote: its rare text starting with a quote and one of ``=+-@'`` loses the quote.)"""
    if column.dtype.kind != "O":  # text is object or pandas' string dtype; numbers and times have no quote
        return column
    try:
        if not column.str.startswith("'", na=False).any():  # the usual column: a C-level test (Arrow strings)
            return column
        marked = column.str.match(WRITTEN_QUOTE, na=False)
    except AttributeError:  # no text in it
        return column
    return column.where(~marked, column.str.slice(1)) if marked.any() else column


def _scalar(value: np.generic) -> Any:
    """A numpy scalar as Python's. A float32 (or float16) as the shortest text of its own precision, as arrays
    of them are written: 0.1, not 0.10000000149011612, the float64 nearest to it."""
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return float(str(value))
    return value.item()


def _json_value(value: Any) -> Any:
    """What json.dumps cannot write itself, inside a list or dict cell: numpy numbers as numbers (an int64
    would be the string "3"), arrays as lists (their text cuts long ones short), the rest as text."""
    if isinstance(value, np.generic):
        return _scalar(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _cell(value: Any, neutralize: bool) -> Any:
    if isinstance(value, str):
        if neutralize and value.startswith(_FORMULA_START) and not _NUMBER.match(value):
            return "'" + value
        if value.startswith(_QUOTED_START):  # would read back as neutralised: one more quote (see ``unneutralized``)
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


class RowsEndingInNewline:
    """What a ``csv.writer`` (or pandas' ``to_csv``) writes to: rows written ending in "\r\n" are passed on
    ending in LINE_END.

    Why: csv.writer quotes a cell for the delimiter, the quote character and the characters of its line
    end only. Told to end rows with "\n", it leaves a bare "\r" unquoted, and readers (pandas, Excel,
    Spark) take that for a line break: one cell or column name holding a "\r" would break its whole file
    for them. Told "\r\n", it quotes both; it writes each row with one call, so each is fixed here.
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
    when no cell holds a "\r", which is almost always (not a Python call per row).
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


def plain_rows(rows: list, width: int, neutralize: bool) -> Optional[str]:
    """The CSV cells of ``rows``, rows joined by "],[", when every row holds exactly ``width`` plain
    cells, else None. Written by orjson in C, not cell by cell in Python.

    Plain numbers: ints and floats. Anything else (a bool, null, NaN or infinity, object, nested list)
    leaves a character numbers never have, or a bracket inside a row; integers past 64 bits, subclasses
    of int and numpy scalars make orjson refuse them. (Enum members orjson writes as their values.)
    Plain text (``_plain_text_rows``): what the csv module writes as it is, a class label say.
    """
    try:
        # Rows that are lists: a dict's len() is its number of keys and a string's its number of characters,
        # and orjson writes them as objects and strings, not as cells.
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
    """As ``plain_rows``, for rows that hold text as well as numbers: None unless every string is one
    the csv module writes unquoted and ``_cell`` leaves alone.

    orjson escapes a quote, a backslash and every control character ("\\n", "\\r", "\\t"), so text
    without a backslash has none of them and every quote in it opens or closes a string. A comma inside
    a string shows in the count of commas; a formula's first character follows an opening quote.
    """
    if b"\\" in text or b'"\'' in text or (neutralize and any(mark in text for mark in _FORMULA_TEXT)):
        return None  # a backslash, a string starting with a quote, a formula: the csv path
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
        text = plain_rows(rows, width, neutralize)
        if text is None:
            return None
        separator = _row_suffix(records[0], neutralize)
        return len(rows), text.replace("],[", separator) + separator
    rows = list(itertools.chain.from_iterable(record.data for record in records))
    text = plain_rows(rows, width, neutralize)
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
    if record.row_suffix is not None and record.row_suffix[0] is neutralize:
        return record.row_suffix[1]
    return row_suffix(record.correlation_id, record.timestamp, record.boundary, record.target, record.request_id,
                      neutralize)


def row_suffix(correlation_id: str, timestamp: float, boundary: int, target: Target, request_id: str,
               neutralize: bool) -> str:
    """The correlation cells of a row, each after a comma, and the line end."""
    return row_suffixes(((correlation_id, timestamp, request_id),), boundary, target, neutralize)[0]


def row_suffixes(ids_and_times: Iterable[Tuple[str, float, str]], boundary: int, target: Target,
                 neutralize: bool) -> List[str]:
    """``row_suffix`` of each (correlation id, timestamp, request id), the cells they share worked out once."""
    shared = f",{boundary},{_target_text(target, neutralize)},"
    suffixes = []
    for correlation_id, timestamp, request_id in ids_and_times:
        correlation = _field(_cell(correlation_id, neutralize))
        request = correlation if request_id is correlation_id else _field(_cell(request_id, neutralize))
        suffixes.append(f",{correlation},{format_timestamp(timestamp)}{shared}{request}{LINE_END}")
    return suffixes


def share_row_suffix(records: Sequence[Record], neutralize: bool) -> None:
    """Work out once the row suffix of records that share their correlation cells: the inputs and the
    predictions of one captured request (same ids and time, targets that differ only by designation)."""
    first = records[0]
    suffix = (neutralize, _row_suffix(first, neutralize))
    for record in records:
        if (record.correlation_id is first.correlation_id and record.request_id is first.request_id
                and record.timestamp == first.timestamp and record.boundary == first.boundary
                and same_row_cells(record.target, first.target, neutralize)):
            record.row_suffix = suffix


def same_row_cells(target: Target, other: Target, neutralize: bool) -> bool:
    """Whether rows of the two targets carry the same target cells (workspace, service, model, version): the
    inputs, predictions and unparsed targets of one route, which differ by designation only."""
    return target is other or _target_cells(target, neutralize) == _target_cells(other, neutralize)


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
    # "np.float64(0.1)", which is no cell.
    return repr(value) if type(value) is float else repr(float(value))


