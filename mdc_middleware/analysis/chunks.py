"""Collected rows in bounded pieces: the streaming reader behind ``mdc read``, ``join``, ``drift`` and ``quality``.

Each data file is read in chunks of at most ``chunk_rows`` rows, cells as the text written (empty cells as
""). Blobs are streamed (``StorageStreamDownloader.read``, a few MiB at a time), never held whole. Peak
memory is one chunk and the download buffer, whatever the number of rows.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

import pandas as pd

from ..paths import JSONL
from .read import Day, Source, list_data_files, read_jsonl_lines
from .source import is_container

CHUNK_ROWS = 100_000


@dataclass
class Chunk:
    """Rows of one file, in file order: ``index`` is the chunk's place in the whole read (0, 1, …)."""

    file: str
    folder: str
    frame: pd.DataFrame
    index: int


def iter_chunks(source: Source, designation: Optional[str] = None, *, model: Optional[str] = None,
                version: Optional[str] = None, start: Optional[Day] = None, end: Optional[Day] = None,
                columns: Optional[Sequence[str]] = None, chunk_rows: int = CHUNK_ROWS,
                progress: Optional[Callable[[Iterable[Any]], Iterable[Any]]] = None) -> Iterator[Chunk]:
    """The matching files' rows, file by file (in ``list_data_files`` order) and chunk by chunk, as text.

    ``columns``: read only these (those a file has); the others are never parsed.
    """
    files = list_data_files(source, designation=designation, model=model, version=version, start=start, end=end)
    wanted = set(columns) if columns is not None else None
    index = 0
    for name, _ in (progress(files) if progress else files):
        label = name if isinstance(name, str) else Path(name).as_posix()
        folder = label.rsplit("/", 1)[0]
        with _open(source, name) as handle:
            if label.endswith(JSONL):
                frames: Iterator[pd.DataFrame] = _jsonl_chunks(handle, chunk_rows, model, version)
            else:
                frames = pd.read_csv(handle, dtype=str, keep_default_na=False, chunksize=chunk_rows,
                                     usecols=(lambda c: c in wanted) if wanted is not None else None)
            for frame in frames:
                if wanted is not None:
                    frame = frame[[c for c in frame.columns if c in wanted]]
                yield Chunk(label, folder, frame, index)
                index += 1


def _jsonl_chunks(handle: Any, chunk_rows: int, model: Optional[str], version: Optional[str]) -> Iterator[pd.DataFrame]:
    lines: List[bytes] = []
    for line in handle:
        lines.append(line)
        if len(lines) >= chunk_rows:
            yield read_jsonl_lines(lines, True, model, version)
            lines = []
    if lines:
        yield read_jsonl_lines(lines, True, model, version)


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


def _open(source: Source, name: Any) -> io.BufferedReader:
    if is_container(source):
        return io.BufferedReader(_BlobStream(source.download_blob(name)), buffer_size=1 << 20)
    return open(name, "rb")
