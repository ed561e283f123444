"""What ``collect()`` is given, read as rows: lists, dicts, numpy arrays, pandas frames and series (frames
snapshotted without copying where pandas allows), their columns and row counts."""
from __future__ import annotations

import collections.abc
import functools
import sys
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ..payloads.schema import enveloped_rows


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
    reading it, and the scoring code may still need it."""
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


_last_names: Tuple[Any, Tuple[str, ...]] = (None, ())  # (an Index, its names): one record asks several times


def column_names(index: pd.Index) -> Tuple[str, ...]:
    """A frame's column labels as the CSV header writes them. (An Index is immutable, and reading its labels costs
    several µs, so the last one's names are kept.)"""
    global _last_names
    last, names = _last_names
    if last is index:
        return names
    names = tuple(map(str, index.tolist()))
    _last_names = (index, names)
    return names


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


