"""Collected rows in bounded pieces: the streaming reader behind ``mdc read``, ``join``, ``drift`` and ``quality``.

Each data file is read in chunks of at most ``chunk_rows`` rows, cells as the text written (empty cells as
""). Blobs are streamed (``StorageStreamDownloader.read``: the SDK's first range of up to 32 MiB, then 4 MiB at a
time), never held whole. Peak memory is one chunk and the download buffer, whatever the number of rows.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import pandas as pd

from ..storage.paths import JSONL
from .read import Day, Source, _data_files, as_collected, list_data_files, read_jsonl_lines
from .source import is_container

CHUNK_ROWS = 100_000


@dataclass
class Chunk:
    """Rows of one file, in file order: ``index`` is the chunk's place in the whole read (0, 1, …)."""

    file: str
    folder: str
    frame: pd.DataFrame  # the cells as written
    index: int

    def values(self) -> pd.DataFrame:
        """The cells as collected: in a CSV file's text, the quote the writer put before a formula's first
        character taken off (``unneutralized``); a JSON Lines file's cells as they are."""
        return self.frame if self.file.endswith(JSONL) else as_collected(self.frame)


def iter_chunks(source: Source, designation: Optional[str] = None, *, model: Optional[str] = None,
                version: Optional[str] = None, start: Optional[Day] = None, end: Optional[Day] = None,
                columns: Optional[Sequence[str]] = None, chunk_rows: int = CHUNK_ROWS, jsonl_as_text: bool = True,
                progress: Optional[Callable[[Iterable[Any]], Iterable[Any]]] = None) -> Iterator[Chunk]:
    """The matching files' rows, file by file (in ``list_data_files`` order) and chunk by chunk, as text.

    ``columns``: read only these (those a file has); the others are never parsed. ``jsonl_as_text`` False:
    JSON Lines cells keep their JSON types.
    """
    files = list_data_files(source, designation=designation, model=model, version=version, start=start, end=end)
    wanted = set(columns) if columns is not None else None
    index = 0
    for name, _ in (progress(files) if progress else files):
        label = name if isinstance(name, str) else Path(name).as_posix()
        for frame in _frames_of(source, name, chunk_rows, model, version, wanted, jsonl_as_text):
            yield Chunk(label, label.rsplit("/", 1)[0], frame, index)
            index += 1


def _frames_of(source: Source, name: Any, chunk_rows: int, model: Optional[str], version: Optional[str],
               wanted: Optional[set], jsonl_as_text: bool) -> Iterator[pd.DataFrame]:
    """One file's rows, a chunk at a time."""
    try:
        handle = _open(source, name)
    except _NothingThere:
        return
    with handle:
        if str(name).endswith(JSONL):
            frames: Iterator[pd.DataFrame] = _jsonl_chunks(handle, chunk_rows, model, version, jsonl_as_text)
        else:
            try:
                frames = pd.read_csv(handle, dtype=str, keep_default_na=False, chunksize=chunk_rows,
                                     usecols=(lambda c: c in wanted) if wanted is not None else None)
            except pd.errors.EmptyDataError:
                return  # an empty file: a blob created a moment ago, its header not yet appended
        for frame in frames:
            yield frame[[c for c in frame.columns if c in wanted]] if wanted is not None else frame


def _jsonl_chunks(handle: Any, chunk_rows: int, model: Optional[str], version: Optional[str],
                  as_text: bool) -> Iterator[pd.DataFrame]:
    lines: List[bytes] = []
    for line in handle:
        lines.append(line)
        if len(lines) >= chunk_rows:
            yield read_jsonl_lines(lines, as_text, model, version)
            lines = []
    if lines:
        yield read_jsonl_lines(lines, as_text, model, version)


def header_columns(source: Source, designation: Optional[str] = None, **filters: Any) -> List[str]:
    """Every column of the matching files, in the order they first appear, from the CSV files' headers (JSON
    Lines files, which have none, are read)."""
    seen: Dict[str, None] = {}
    for name, _ in list_data_files(source, designation=designation, **filters):
        if str(name).endswith(JSONL):
            for frame in _frames_of(source, name, CHUNK_ROWS, filters.get("model"), filters.get("version"), None,
                                    True):
                seen.update((c, None) for c in frame.columns)
            continue
        try:
            with _open(source, name, head=True) as handle:
                seen.update((c, None) for c in pd.read_csv(handle, dtype=str, nrows=0).columns)
        except (pd.errors.EmptyDataError, _NothingThere):
            continue  # a blob created a moment ago, its header not yet appended
    return list(seen)


class _BlobStream(io.RawIOBase):
    """A blob as a readable stream: downloaded a chunk at a time as the reader asks for bytes."""

    def __init__(self, downloader: Any) -> None:
        self._downloader = downloader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._downloader.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _NothingThere(Exception):
    """An empty blob: no range of it can be downloaded."""


def _open(source: Source, name: Any, head: bool = False) -> io.BufferedReader:
    """The file or blob to read; ``head``: only its first MiB is needed (a blob is downloaded that far)."""
    if is_container(source):
        from azure.core.exceptions import HttpResponseError

        try:
            downloader = (source.download_blob(name, offset=0, length=HEAD_BYTES) if head
                          else source.download_blob(name))
        except HttpResponseError as exc:
            if exc.status_code == 416:  # a range of an empty blob
                raise _NothingThere(name) from None
            raise
        return io.BufferedReader(_BlobStream(downloader), buffer_size=1 << 20)
    return open(name, "rb")


HEAD_BYTES = 1 << 20


def data_bytes(source: Source, designation: Optional[str] = None, **filters: Any) -> int:
    """Bytes of the matching files (what a join sizes its partitions by)."""
    names = {str(name) for name, _ in list_data_files(source, designation=designation, **filters)}
    return sum(size for name, size in _data_files(source) if str(name) in names)
