"""Collected rows written out as CSV or Parquet a chunk at a time (``mdc read``, ``mdc join``).

Memory is bounded by a chunk, whatever the number of rows. CSV keeps every cell as written: the columns of all
files are learned first (each file's header; JSON Lines files are read for their keys), then chunks are written
under that one header. Parquet has types, one per column for the whole file: each chunk is typed by
``typed``'s rules and written while its types agree with the chunks before (one pass); a chunk that widens a
column (text after numbers, decimals after whole numbers) starts the file again with the types found over every
chunk (``typed_frames``). One row group per chunk.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, TextIO

import numpy as np
import pandas as pd

from ..records.csv_encoding import LINE_END, RowsEndingInNewline
from .chunks import Chunk
from .read import _utc_times, typed

# What a column holds, from least to most general: a chunk's kind and the others' give the column's.
_ORDER = {"empty": 0, "int": 1, "float": 2, "text": 3}


def union_columns(frames: Iterable[pd.DataFrame]) -> List[str]:
    """Every column of the frames, in the order they first appear."""
    seen: Dict[str, None] = {}
    for frame in frames:
        seen.update((column, None) for column in frame.columns)
    return list(seen)


def column_kinds(chunks: Iterable[Chunk], notes: Callable[[str], Optional[set]],
                 kinds: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Each column's kind over all chunks (added to ``kinds``): "time", "boundary", "int", "float", "text" or
    "empty"."""
    kinds = dict(kinds or {})
    for chunk in chunks:
        kinds = _merged(kinds, chunk_kinds(typed(chunk.values(), notes(chunk.folder))))
    return kinds


def chunk_kinds(frame: pd.DataFrame) -> Dict[str, str]:
    """The kind of each column of a typed chunk."""
    return {name: _kind(name, column) for name, column in frame.items()}


def _merged(kinds: Dict[str, str], more: Dict[str, str]) -> Dict[str, str]:
    out = dict(kinds)
    for name, kind in more.items():
        known = out.get(name)
        if known is None or (known in _ORDER and kind in _ORDER and _ORDER[kind] > _ORDER[known]):
            out[name] = kind
    return out


def typed_frames(chunks: Callable[[], Iterable[Chunk]], notes: Callable[[str], Optional[set]]) -> Iterator[pd.DataFrame]:
    """The chunks typed alike, for one Parquet schema, in one pass while their kinds hold.

    Each chunk is typed by itself (``typed``) and passed on while its kinds are those of the chunks before it. The
    first chunk that widens a column (decimals after whole numbers, text after numbers) or brings a new one ends
    that: the kinds are then found over every chunk, and all rows are given again, converted to them (the
    frames before are to be discarded: ``Restart`` is yielded first)."""
    kinds: Dict[str, str] = {}
    passed = 0
    for chunk in chunks():
        frame = typed(chunk.values(), notes(chunk.folder))
        found = _merged(kinds, chunk_kinds(frame))
        if passed and found != kinds:
            break
        kinds = found
        yield as_kinds(frame, kinds)
        passed += 1
    else:
        return
    yield RESTART
    kinds = column_kinds(chunks(), notes)
    for chunk in chunks():
        yield as_kinds(chunk.values(), kinds)


RESTART = pd.DataFrame()  # yielded by typed_frames: start the output again


def _kind(name: str, column: pd.Series) -> str:
    if name == "$aml_dc_scoring_timestamp":
        return "time"
    if name == "$aml_dc_boundary":
        return "boundary"
    if column.dtype.kind in "iu" or str(column.dtype) == "Int64":
        return "int"
    if column.dtype.kind == "f":
        return "float"
    if column.dtype.kind == "b":
        return "text"
    return "empty" if (column.astype(str) == "").all() else "text"


def as_kinds(frame: pd.DataFrame, kinds: Dict[str, str]) -> pd.DataFrame:
    """The chunk's columns (all of ``kinds``, missing ones empty) converted to the kinds found for them."""
    out = {}
    for name, kind in kinds.items():
        column = frame[name] if name in frame.columns else pd.Series([""] * len(frame), index=frame.index)
        if kind == "time":
            out[name] = column if column.dtype.kind == "M" else _utc_times(column.astype(str).replace("nan", ""))
        elif kind in ("int", "boundary"):  # every cell read as a number in the first pass: "" is the only NaN
            out[name] = (column if column.dtype.kind in "iuf" or str(column.dtype) == "Int64"
                         else pd.to_numeric(column, errors="coerce")).astype("Int64")
        elif kind == "float":
            out[name] = (column if column.dtype.kind in "iuf" or str(column.dtype) == "Int64"
                         else pd.to_numeric(column, errors="coerce")).astype("float64")
        else:
            text = pd.api.types.is_string_dtype(column) and column.dtype != object
            out[name] = column.fillna("") if text else column.map(_text)
    return pd.DataFrame(out, index=frame.index)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def write_csv(frames: Iterable[pd.DataFrame], columns: List[str], stream: TextIO) -> int:
    """The frames under one header of ``columns`` (a column a frame lacks is empty there); rows written. No
    columns (no file in the days asked for) write nothing, not an empty line."""
    write = RowsEndingInNewline(stream.write)
    if columns:
        pd.DataFrame(columns=columns).to_csv(write, index=False, lineterminator="\r\n")
    rows = 0
    for frame in frames:
        frame = frame.reindex(columns=columns, fill_value="")
        text = frame.to_csv(index=False, header=False, lineterminator="\r\n")
        if text.count("\r") == len(frame):  # each "\r" ends a row (no cell holds one): one C-speed replace
            stream.write(text.replace("\r\n", LINE_END))
        else:
            frame.to_csv(write, index=False, header=False, lineterminator="\r\n")
        rows += len(frame)
    return rows


def write_parquet(frames: Iterable[pd.DataFrame], path: str) -> int:
    """The frames (already of one set of columns and types) as one Parquet file, a row group each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    schema = None
    rows = 0
    try:
        for frame in frames:
            if frame is RESTART:  # typed_frames found wider kinds: the file starts again
                if writer is not None:
                    writer.close()
                writer, schema, rows = None, None, 0
                continue
            table = pa.Table.from_pandas(frame, preserve_index=False, schema=schema)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table)
            rows += len(frame)
        if writer is None:
            pd.DataFrame().to_parquet(path, index=False)
    finally:
        if writer is not None:
            writer.close()
    return rows

