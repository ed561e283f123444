"""Rows spread over partitions by correlation id, on local disk: a join then holds one partition at a time.

Every row of a correlation id lands in the same partition (a stable hash of the id), with its place in the whole
read (``join.POSITION``), so runs of rows and redeliveries are still told apart inside a partition. With one
partition nothing goes to disk. Partition files hold the chunks' rows as written by this process (pickled
frames, read back by it alone), in a private temporary folder removed at the end.
"""
from __future__ import annotations

import contextlib
import math
import pickle
import tempfile
from pathlib import Path
from typing import ContextManager, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import pandas as pd

from ..records.record import CORRELATION_ID
from .join import POSITION, join_predictions, joined_columns

PARTITION_BYTES = 16 << 20  # of CSV per partition and side: about what a join holds in memory, times ten
MAX_PARTITIONS = 256


def partitions_for(total_bytes: int) -> int:
    return max(1, min(MAX_PARTITIONS, math.ceil(total_bytes / PARTITION_BYTES)))


class Partitioned:
    """One side's rows (all of ``columns``), spread over ``count`` partitions."""

    def __init__(self, columns: List[str], count: int, directory: Optional[str], name: str,
                 key: str = CORRELATION_ID) -> None:
        self.key = key
        self.columns = [c for c in columns if c != POSITION] + [POSITION]
        self.count = count
        self.rows = 0
        self._memory: List[pd.DataFrame] = []  # one partition: kept in memory
        self._paths = [Path(directory, f"{name}-{i}.pickle") for i in range(count)] if count > 1 and directory else []

    def add(self, frame: pd.DataFrame) -> None:
        frame = frame.reindex(columns=self.columns[:-1], fill_value="")
        frame[POSITION] = np.arange(self.rows, self.rows + len(frame))
        self.rows += len(frame)
        if not self._paths:
            self._memory.append(frame)
            return
        which = pd.util.hash_array(frame[self.key].astype(str).to_numpy(dtype=object)) % self.count
        for part, rows in frame.groupby(which, sort=False):
            with open(self._paths[int(part)], "ab") as file:  # frames one after the other, as written
                pickle.dump(rows, file, protocol=pickle.HIGHEST_PROTOCOL)

    def part(self, index: int) -> pd.DataFrame:
        """The rows of partition ``index``, in the order they were read."""
        frames = self._memory if not self._paths else list(_frames_in(self._paths[index]))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self.columns)


def _frames_in(path: Path) -> Iterator[pd.DataFrame]:
    """The frames this run wrote to a partition file (a private temporary file: no one else's pickles)."""
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        return
    with file:
        while True:
            try:
                yield pickle.load(file)
            except EOFError:
                return


def workspace(needed: bool) -> ContextManager[Optional[str]]:
    """A private temporary folder for partitions, removed on exit; None when one partition needs none."""
    return tempfile.TemporaryDirectory(prefix="mdc-join-") if needed else contextlib.nullcontext()


def spread(frames: Iterable[pd.DataFrame], columns: List[str], count: int, directory: Optional[str],
           name: str, key: str = CORRELATION_ID) -> Partitioned:
    parts = Partitioned(columns, count, directory, name, key)
    for frame in frames:
        parts.add(frame)
    return parts


def zip_parts(left: Partitioned, right: Partitioned) -> Iterator[Tuple[pd.DataFrame, pd.DataFrame]]:
    for index in range(max(left.count, right.count)):
        yield left.part(index), right.part(index)


class JoinTotals:
    """What ``join_partitioned`` counted, complete once its frames have all been taken."""

    def __init__(self) -> None:
        self.rows = self.duplicates_removed = self.unmatched_inputs = self.unmatched_predictions = self.matched = 0
        self.inputs = self.predictions = 0


def join_partitioned(inputs: Iterable[pd.DataFrame], predictions: Iterable[pd.DataFrame], input_columns: List[str],
                     prediction_columns: List[str], how: str, total_bytes: int,
                     totals: JoinTotals) -> Iterator[pd.DataFrame]:
    """``join_predictions`` of everything, a partition at a time: the joined frames (all of ``joined_columns``),
    in input order within a partition; ``totals`` adds up as they come."""
    count = partitions_for(total_bytes)
    columns = joined_columns(input_columns, prediction_columns)
    with workspace(count > 1) as folder:
        left = spread(inputs, input_columns, count, folder, "inputs")
        right = spread(predictions, prediction_columns, count, folder, "predictions")
        totals.inputs, totals.predictions = left.rows, right.rows
        for ins, outs in zip_parts(left, right):
            result = join_predictions(ins, outs, how=how)
            totals.duplicates_removed += result.duplicates_removed
            totals.unmatched_inputs += result.unmatched_inputs
            totals.unmatched_predictions += result.unmatched_predictions
            totals.matched += result.matched
            totals.rows += len(result.frame)
            yield result.frame.reindex(columns=columns)
