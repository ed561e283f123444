"""Read collected rows back into pandas, from a local directory or a blob container.

Both hold the same layout. Every CSV file of a day is read (``data.csv`` and its rollover siblings
``data_1.csv``…), padded and unpadded month/day folders alike.
"""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import pandas as pd

from ..paths import ROOT, ParsedPath, parse_path

Source = Union[str, Path, Any]  # a directory, or an azure.storage.blob.ContainerClient


def _is_container(source: Source) -> bool:
    return hasattr(source, "list_blobs") and hasattr(source, "download_blob")


def list_data_files(source: Source, *, designation: Optional[str] = None, model: Optional[str] = None,
                    version: Optional[str] = None, start: Optional[dt.date] = None,
                    end: Optional[dt.date] = None) -> List[Tuple[Any, ParsedPath]]:
    """(path or blob name, ParsedPath) of every data file that passes the filters, by date then name.

    A directory may be the local sink's root (``mdc-data``) or the container folder inside it.
    """
    if _is_container(source):
        names = [blob.name for blob in source.list_blobs(name_starts_with=ROOT + "/")]
    else:
        names = [path for path in Path(source).rglob("*.csv")]
    found = []
    for name in names:
        parsed = parse_path(Path(name).as_posix() if not isinstance(name, str) else name)
        if parsed is not None and _wanted(parsed, designation, model, version, start, end):
            found.append((name, parsed))
    found.sort(key=lambda item: (item[1].date, _part_order(item[1].file_name), str(item[0])))
    return found


def _part_order(name: str) -> int:
    stem = name[:-4]
    tail = stem.rsplit("_", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


def _wanted(parsed: ParsedPath, designation: Optional[str], model: Optional[str], version: Optional[str],
            start: Optional[dt.date], end: Optional[dt.date]) -> bool:
    return ((designation is None or parsed.designation == designation)
            and (model is None or parsed.model_name == model)
            and (version is None or parsed.model_version == str(version))
            and (start is None or parsed.date >= start)
            and (end is None or parsed.date <= end))


def read_collected(source: Source, designation: Optional[str] = None, *, model: Optional[str] = None,
                   version: Optional[str] = None, start: Optional[dt.date] = None, end: Optional[dt.date] = None,
                   as_text: bool = False) -> pd.DataFrame:
    """All rows of the matching files in one DataFrame (columns united across files).

    ``as_text`` keeps every cell exactly as written (strings, empty cells as ""), for byte-exact checks.
    """
    options = dict(dtype=str, keep_default_na=False) if as_text else {}
    frames = []
    for name, _ in list_data_files(source, designation=designation, model=model, version=version,
                                   start=start, end=end):
        if _is_container(source):
            handle: Any = io.BytesIO(source.download_blob(name).readall())
        else:
            handle = name
        frames.append(pd.read_csv(handle, **options))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame.fillna("") if as_text else frame
