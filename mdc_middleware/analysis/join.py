"""Inputs beside their predictions, and at-least-once redeliveries taken back out.

Delivery is at least once: a block whose acknowledgement was lost, or a spooled batch replayed after a
crash, can land twice. A redelivery repeats whole records later in the file, so it shows as a second
run of the same correlation id with the same rows; that repetition, and only that, is removed. Two
equal rows sent in one request are kept: they are data, not a duplicate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from ..records.record import CORRELATION_ID, META_COLUMNS

_POSITION = "$mdc_row"
POSITION = "$mdc_read_position"  # a row's place in the whole read, where rows were spread over partitions


def drop_redelivered(frame: pd.DataFrame) -> Tuple[pd.DataFrame, int]:
    """The frame (rows in file order) without repeated deliveries, and how many rows were removed.

    A record's rows are written together, so they form one run of equal correlation ids in the file;
    a later run with the same id and exactly the same rows is a redelivery and is dropped. Rows are
    never compared with others of their own run: two equal rows sent in one request are data.
    (A redelivery appended directly after its original, with nothing between, would merge into one
    run and stay; the blob sink's conditional appends are there to keep that from happening.)
    """
    if frame.empty or CORRELATION_ID not in frame.columns:
        return frame, 0
    ids = frame[CORRELATION_ID].to_numpy()
    breaks = ids[1:] != ids[:-1]
    if POSITION in frame.columns:  # rows taken out of a longer read: a run also ends where the read skipped
        position = frame[POSITION].astype(np.int64).to_numpy()
        breaks |= position[1:] != position[:-1] + 1
    runs = np.concatenate(([0], np.cumsum(breaks)))
    runs_per_id = pd.Series(runs).groupby(ids).nunique()
    repeated_ids = set(runs_per_id.index[runs_per_id.to_numpy() > 1])
    if not repeated_ids:
        return frame, 0
    hashes = pd.util.hash_pandas_object(frame.drop(columns=[POSITION], errors="ignore"), index=False).to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    seen: Dict[Tuple[object, bytes], None] = {}
    boundaries = np.flatnonzero(np.diff(runs, prepend=-1, append=runs[-1] + 1))
    for begin, stop in zip(boundaries[:-1], boundaries[1:]):
        if ids[begin] not in repeated_ids:
            continue
        key = (ids[begin], hashes[begin:stop].tobytes())
        if key in seen:
            keep[begin:stop] = False
        else:
            seen[key] = None
    removed = int((~keep).sum())
    return frame[keep].reset_index(drop=True), removed


@dataclass
class JoinResult:
    frame: pd.DataFrame
    duplicates_removed: int
    unmatched_inputs: int
    unmatched_predictions: int
    matched: int = 0  # input rows that found their prediction


def join_predictions(inputs: pd.DataFrame, predictions: pd.DataFrame, how: str = "inner") -> JoinResult:
    """One row per scored example: its input columns, then its prediction columns.

    Rows pair up by correlation id and by position inside it (a 3-row input and its 3 predictions
    share one id), which is how ``collect()`` calls and captured requests are correlated.
    A prediction column named like an input column gets the suffix ``_prediction``.
    """
    inputs, removed_in = drop_redelivered(inputs)
    predictions, removed_out = drop_redelivered(predictions)
    removed = removed_in + removed_out
    if inputs.empty or predictions.empty:
        empty = inputs if not inputs.empty else predictions
        unmatched = (len(inputs), len(predictions))
        return JoinResult(empty.iloc[0:0] if how == "inner" else empty, removed, *unmatched)
    for name, frame in (("inputs", inputs), ("predictions", predictions)):
        if CORRELATION_ID not in frame.columns:
            raise ValueError(f"{name} have no {CORRELATION_ID} column: not collected data")
    left = inputs.assign(**{_POSITION: inputs.groupby(CORRELATION_ID).cumcount()})
    meta = [c for c in META_COLUMNS if c != CORRELATION_ID and c in predictions.columns]
    right = predictions.drop(columns=meta)
    right = right.assign(**{_POSITION: right.groupby(CORRELATION_ID).cumcount()})
    left_keys = pd.MultiIndex.from_frame(left[[CORRELATION_ID, _POSITION]])
    right_keys = pd.MultiIndex.from_frame(right[[CORRELATION_ID, _POSITION]])
    unmatched_inputs = int((~left_keys.isin(right_keys)).sum())
    unmatched_predictions = int((~right_keys.isin(left_keys)).sum())
    merged = left.merge(right, on=[CORRELATION_ID, _POSITION], how=how, suffixes=("", "_prediction"))
    extra = [_POSITION, POSITION, POSITION + "_prediction"]
    return JoinResult(merged.drop(columns=[c for c in extra if c in merged.columns]), removed, unmatched_inputs,
                      unmatched_predictions, matched=len(left) - unmatched_inputs)


def joined_columns(inputs: Sequence[str], predictions: Sequence[str]) -> List[str]:
    """The columns ``join_predictions`` gives for inputs and predictions with these columns."""
    right = [c for c in predictions if c not in META_COLUMNS and c != POSITION]
    left = [c for c in inputs if c != POSITION]
    return left + [c + "_prediction" if c in left else c for c in right]
