"""The join a partition at a time gives what the join of everything in memory gives."""
import numpy as np
import pandas as pd

from mdc_middleware.analysis import partitions
from mdc_middleware.analysis.join import join_predictions
from mdc_middleware.analysis.partitions import JoinTotals, join_partitioned
from mdc_middleware.records.record import CORRELATION_ID


def collected(rng, requests: int):
    """Inputs of 1–3 rows a request and their predictions; some requests redelivered later in the file."""
    ins, outs = [], []
    for r in range(requests):
        rows = int(rng.integers(1, 4))
        xs = [str(v) for v in rng.integers(0, 3, rows)]  # equal rows inside one request are data
        ins += [(f"id{r}", x) for x in xs]
        outs += [(f"id{r}", str(int(x) * 2)) for x in xs]
    inputs = pd.DataFrame(ins, columns=[CORRELATION_ID, "x"])
    predictions = pd.DataFrame(outs, columns=[CORRELATION_ID, "y"])
    again = inputs[inputs[CORRELATION_ID].isin({f"id{r}" for r in range(0, requests, 7)})]
    return pd.concat([inputs, again], ignore_index=True), predictions  # redelivered after other ids


def test_partitions_give_the_rows_and_counts_of_one_join(monkeypatch):
    inputs, predictions = collected(np.random.default_rng(5), 3_000)
    whole = join_predictions(inputs, predictions, how="left")
    monkeypatch.setattr(partitions, "PARTITION_BYTES", 2_000)
    chunks = lambda frame: (frame.iloc[i:i + 500] for i in range(0, len(frame), 500))  # noqa: E731
    totals = JoinTotals()
    frames = list(join_partitioned(chunks(inputs), chunks(predictions), list(inputs.columns),
                                   list(predictions.columns), "left", 100_000, totals))
    assert len(frames) == partitions.partitions_for(100_000) > 10
    parted = pd.concat(frames, ignore_index=True)
    assert totals.duplicates_removed == whole.duplicates_removed > 0
    assert (totals.unmatched_inputs, totals.unmatched_predictions, totals.matched, totals.rows) == (
        whole.unmatched_inputs, whole.unmatched_predictions, whole.matched, len(whole.frame))
    key = [CORRELATION_ID, "x", "y"]
    assert (parted[key].sort_values(key).values.tolist() == whole.frame[key].sort_values(key).values.tolist())
