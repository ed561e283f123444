"""The embedded default: the blob layout, under a local directory.

Several processes (gunicorn workers) may share one directory: a file is created with its header in
one atomic step (write a temporary file, then hard-link it into place, which fails if the name is
taken), and each batch is a single O_APPEND write, which Linux applies whole.
"""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from ..metrics import Metrics
from .paths import file_name
from .sink import Deadline, SinkError


class LocalSink:
    def __init__(self, root: Union[str, os.PathLike], container: str = "modeldata", fsync: bool = False,
                 metrics: Optional[Metrics] = None) -> None:
        self.base = Path(root) / container
        self.fsync = fsync
        self.metrics = metrics or Metrics()
        self._current: Dict[Tuple[str, str, str], Path] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalSink({str(self.base)!r})"

    def append(self, folder: str, stem: str, header: str, payload: bytes,
               deadline: Deadline = None, hint: Optional[Tuple[str, int]] = None) -> None:
        key = (folder, stem, header)
        try:
            with self._lock:
                path = self._current.get(key) or self._open_file(folder, stem, header)
                self._current[key] = path
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                # Moved or deleted under us (a job that ships the files away, a clean-up): begin it again.
                with self._lock:
                    path = self._current[key] = self._open_file(folder, stem, header)
                descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                _append_whole(descriptor, payload)
                if self.fsync:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            raise SinkError(f"local write to {folder} failed: {exc.strerror or exc}") from exc

    def _open_file(self, folder: str, stem: str, header: str) -> Path:
        directory = self.base / folder
        directory.mkdir(parents=True, exist_ok=True)
        header_bytes = header.encode("utf-8")
        part = 0
        while True:
            path = directory / file_name(stem, part)
            if self._create_with_header(path, header_bytes):
                self.metrics.add("files_created")
                if part:
                    self.metrics.add("files_rolled_over")
                return path
            with open(path, "rb") as existing:
                if existing.read(len(header_bytes)) == header_bytes:
                    return path
            part += 1  # another header lives there: use the next sibling

    @staticmethod
    def _create_with_header(path: Path, header: bytes) -> bool:
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_bytes(header)  # on a full disk too: the temporary file is removed
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's writer thread may have held it at fork time

    def close(self) -> None:
        self._current.clear()


def _append_whole(descriptor: int, payload: bytes) -> None:
    """Append all of ``payload`` or none of it. A full disk (or quota) takes part of a write: those bytes
    are cut off again, so the file never ends in half a row that the retry's rows would follow, and the
    rows that did land are not written twice. Only when another process has appended after them since
    are they left (they end the file's rows there; counted by the caller's error)."""
    view = memoryview(payload)
    start: Optional[int] = None
    end = 0
    ours_alone = True
    try:
        while view:
            written = os.write(descriptor, view)
            position = os.lseek(descriptor, 0, os.SEEK_CUR)  # O_APPEND: just after these bytes
            if start is None:
                start = position - written
            elif position - written != end:  # another process's bytes came between ours
                ours_alone = False
            end = position
            view = view[written:]
    except OSError:
        if start is not None and ours_alone and os.fstat(descriptor).st_size == end:
            os.ftruncate(descriptor, start)
        raise

