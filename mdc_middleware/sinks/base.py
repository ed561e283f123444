"""The contract between the writer thread and a storage backend."""
from __future__ import annotations

from typing import Optional, Protocol


class SinkError(Exception):
    """A write failed. ``permanent`` says retrying cannot help (bad credentials, bad container)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Sink(Protocol):
    def append(self, folder: str, stem: str, header: str, payload: bytes,
               deadline: Optional[float] = None) -> None:
        """Append complete CSV lines to the newest file of ``folder`` whose header is ``header``.

        The file is created with the header first when needed; a file with another header, or one
        that is full, is never appended to: the next sibling (``data_1.csv``…) is used instead.
        ``deadline`` (time.monotonic()) bounds retries. Raises SinkError when the rows did not land.
        """

    def after_fork(self) -> None:
        """Drop locks and connections inherited from the parent process."""

    def close(self) -> None:
        """Release connections."""
