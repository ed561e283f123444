"""Read collected rows back into pandas, from a local directory (the local sink's layout).

Every CSV file of a day is read (``data.csv`` and its rollover siblings ``data_1.csv``…), padded and
unpadded month/day folders alike.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import List, Optional, Union

import pandas as pd

from ..paths import ParsedPath, parse_path


def list_data_files(root: Union[str, Path], *, designation: Optional[str] = None, model: Optional[str] = None,
                    version: Optional[str] = None, start: Optional[dt.date] = None,
                    end: Optional[dt.date] = None) -> List[tuple]:
    """(path, ParsedPath) of every data file under ``root`` that passes the filters, oldest first."""
    found = []
    for path in Path(root).rglob("*.csv"):
        parsed = parse_path(path.as_posix())
        if parsed is None or not _wanted(parsed, designation, model, version, start, end):
            continue
        found.append((path, parsed))
    found.sort(key=lambda item: (item[1].date, item[0].as_posix()))
    return found


def _wanted(parsed: ParsedPath, designation: Optional[str], model: Optional[str], version: Optional[str],
            start: Optional[dt.date], end: Optional[dt.date]) -> bool:
    return ((designation is None or parsed.designation == designation)
            and (model is None or parsed.model_name == model)
            and (version is None or parsed.model_version == str(version))
            and (start is None or parsed.date >= start)
            and (end is None or parsed.date <= end))


def read_collected(root: Union[str, Path], designation: Optional[str] = None, *, model: Optional[str] = None,
                   version: Optional[str] = None, start: Optional[dt.date] = None, end: Optional[dt.date] = None,
                   as_text: bool = False) -> pd.DataFrame:
    """All rows of the matching files in one DataFrame (columns united across files).

    ``as_text`` keeps every cell exactly as written (strings, empty cells as ""), for byte-exact checks.
    """
    frames = []
    for path, _ in list_data_files(root, designation=designation, model=model, version=version,
                                   start=start, end=end):
        if as_text:
            frames.append(pd.read_csv(path, dtype=str, keep_default_na=False))
        else:
            frames.append(pd.read_csv(path))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame.fillna("") if as_text else frame
