"""Collected rows written out as CSV or Parquet a chunk at a time (``mdc read``, ``mdc join``).

Memory is bounded by a chunk, whatever the number of rows. CSV keeps every cell as written: the columns of all
files are learned first (each file's header; JSON Lines files are read for their keys), then chunks are written
under that one header. Parquet has types: a first pass finds each column's type over all chunks (``typed``'s
rules chunk by chunk; text wherever one chunk has text, decimals where one has decimals), a second writes each
chunk converted to it, one row group per chunk.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO

import numpy as np
import pandas as pd

from ..records import LINE_END, RowsEndingInNewline
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


def column_kinds(chunks: Iterable[Chunk], notes: Callable[[str], Optional[set]]) -> Dict[str, str]:
    """Each column's kind over all chunks: "time", "boundary", "int", "float", "text" or "empty"."""
    kinds: Dict[str, str] = {}
    for chunk in chunks:
        for name, column in typed(chunk.frame, notes(chunk.folder)).items():
            kind = _kind(name, column)
            known = kinds.get(name)
            if known is None or (known in _ORDER and kind in _ORDER and _ORDER[kind] > _ORDER[known]):
                kinds[name] = kind
    return kinds


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
            out[name] = _utc_times(column.astype(str).replace("nan", ""))
        elif kind in ("int", "boundary"):  # every cell read as a number in the first pass: "" is the only NaN
            out[name] = pd.to_numeric(column, errors="coerce").astype("Int64")
        elif kind == "float":
            out[name] = pd.to_numeric(column, errors="coerce").astype("float64")
        else:
            text = pd.api.types.is_string_dtype(column) and column.dtype != object
            out[name] = column.fillna("") if text else column.map(_text)
    return pd.DataFrame(out, index=frame.index)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def write_csv(frames: Iterable[pd.DataFrame], columns: List[str], stream: TextIO) -> int:
    """The frames under one header of ``columns`` (a column a frame lacks is empty there); rows written."""
    write = RowsEndingInNewline(stream.write)
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

