"""The contract between the writer thread and a storage backend."""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Tuple, Union

# When retrying must stop (time.monotonic()): a time, or a function giving it, read again before each try
# (a shutdown may bring it forward while a delivery is under way).
Deadline = Union[float, Callable[[], float], None]


class SinkError(Exception):
    """A write failed. ``permanent``: retrying cannot help (bad credentials, bad container).

    ``delivered``: bytes at the start of the payload that did land (whole rows). ``hint``: where
    the next block may have landed although the call failed (blob name, offset), to pass back as
    ``hint`` so a later try does not write it twice.
    """

    def __init__(self, message: str, permanent: bool = False, delivered: int = 0,
                 hint: Optional[Tuple[str, int]] = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.delivered = delivered
        self.hint = hint


class Sink(Protocol):
    def append(self, folder: str, stem: str, header: str, payload: bytes,
               deadline: Deadline = None, hint: Optional[Tuple[str, int]] = None) -> None:
        """Append complete CSV lines to the newest file of ``folder`` whose header is ``header``.

        The file is created with the header first when needed; a file with another header, or one
        that is full, is never appended to: the next sibling (``data_1.csv``…) is used instead.
        ``deadline`` bounds retries; ``hint`` comes from an earlier SinkError.
        Raises SinkError when the rows did not all land.
        """

    def after_fork(self) -> None:
        """Drop locks and connections inherited from the parent process."""

    def close(self) -> None:
        """Release connections."""
