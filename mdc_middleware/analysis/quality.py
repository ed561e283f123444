"""Model quality over time: predictions against the labels collected later, per day.

Labels are collected with designation ``labels``: either with the correlation values of the request they belong
to (``add_correlations(labels, inputs.collect(...))``, as Azure's collector intended), or with a key of the
caller's own (the seed's ``LoanNumber``, a ``CustomerId``) that the inputs carry too. Classification gets
accuracy, precision, recall and F1 (macro averages over the classes seen); regression gets MAE, RMSE and the
mean error (bias). Which one is chosen from the labels: text, booleans, or whole numbers with few values are
classes; other numbers are a regression. As SageMaker's model-quality monitor and Azure ML's model performance
signal compute them, per day of the prediction.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd

from ..records.record import CORRELATION_ID, META_COLUMNS, SCORING_TIMESTAMP
from .partitions import JoinTotals, join_partitioned, partitions_for, spread, workspace, zip_parts

_MAX_CLASSES = 20


@dataclass
class QualityWindow:
    label: str
    rows: int
    metrics: Dict[str, Optional[float]] = field(default_factory=dict)


@dataclass
class QualityResult:
    task: str                # "classification" or "regression"
    prediction_column: str
    label_column: str
    joined_rows: int
    predictions_without_label: int
    overall: QualityWindow
    days: List[QualityWindow]

    def to_dict(self) -> dict:
        return asdict(self)


NO_LABELS = ("no labels collected (designation 'labels'): once the truth is known, collect it with "
             "ModelDataCollector(<model>, designation='labels'), beside the request's correlation values or a key "
             "its inputs carry (README: Model quality)")


def data_columns(frame: pd.DataFrame) -> List[str]:
    return [c for c in frame.columns if c not in META_COLUMNS]


def model_quality(inputs: pd.DataFrame, predictions: pd.DataFrame, labels: pd.DataFrame, *,
                  key: Optional[str] = None, prediction: Optional[str] = None,
                  label: Optional[str] = None) -> QualityResult:
    """Join predictions with labels (by correlation id, or by ``key`` through the inputs) and score them.

    Raises ValueError (saying what is missing) when nothing joins or a named column is absent."""
    if labels.empty:
        raise ValueError(NO_LABELS)
    if predictions.empty:
        raise ValueError("no predictions collected")
    return model_quality_streamed([inputs], [predictions], [labels], list(inputs.columns), list(predictions.columns),
                                  list(labels.columns), key=key, prediction=prediction, label=label)


def model_quality_streamed(inputs: Iterable[pd.DataFrame], predictions: Iterable[pd.DataFrame],
                           labels: Iterable[pd.DataFrame], input_columns: List[str], prediction_columns: List[str],
                           label_columns: List[str], *, key: Optional[str] = None, prediction: Optional[str] = None,
                           label: Optional[str] = None, total_bytes: int = 0) -> QualityResult:
    """``model_quality`` of rows that come a chunk at a time (cells typed or as text): joined a partition at a
    time (``partitions``) and scored into counts, so memory does not grow with rows."""
    if not label_columns:
        raise ValueError(NO_LABELS)
    if not prediction_columns:
        raise ValueError("no predictions collected")
    prediction = prediction or _only(_data(prediction_columns), "prediction", "predictions")
    label = label or _only([c for c in _data(label_columns) if c != key], "label", "labels")
    for name, columns, what in ((prediction, prediction_columns, "predictions"), (label, label_columns, "labels")):
        if name not in columns:
            raise ValueError(f"no column {name!r} in the {what}; there are: {', '.join(_data(columns))}")
    counter = QualityCounter()
    totals = JoinTotals()
    if key is None:
        guesses = (_select(f, [prediction, CORRELATION_ID, SCORING_TIMESTAMP]) for f in predictions)
        truths = (_select(f, [label, CORRELATION_ID]).rename(columns={label: LABEL}) for f in labels)
        for scored in join_partitioned(guesses, truths, [prediction, CORRELATION_ID, SCORING_TIMESTAMP],
                                       [LABEL, CORRELATION_ID], "inner", total_bytes, totals):
            counter.add(scored[LABEL], scored[prediction], scored[SCORING_TIMESTAMP])
        without = totals.inputs - totals.rows
    else:
        for columns, what in ((input_columns, "inputs"), (label_columns, "labels")):
            if key not in columns:
                raise ValueError(f"no key column {key!r} in the {what}")
        pair_columns = [key, CORRELATION_ID, SCORING_TIMESTAMP]
        pairs = join_partitioned((_select(f, pair_columns) for f in inputs),
                                 (_select(f, [prediction, CORRELATION_ID]) for f in predictions),
                                 pair_columns, [prediction, CORRELATION_ID], "inner", total_bytes, totals)
        count = partitions_for(total_bytes)
        with workspace(count > 1) as folder:
            by_key = spread(pairs, pair_columns + [prediction], count, folder, "pairs", key)
            truths = spread((_select(f, [key, label]).rename(columns={label: LABEL}) for f in labels), [key, LABEL], count,
                            folder, "labels", key)
            for scored_pairs, known in zip_parts(by_key, truths):
                latest = known.drop_duplicates(subset=[key], keep="last")[[key, LABEL]]
                scored = scored_pairs.merge(latest, on=key, how="inner")
                counter.add(scored[LABEL], scored[prediction], scored[SCORING_TIMESTAMP])
        without = totals.predictions - counter.rows
    if not counter.rows:
        raise ValueError("no prediction joined a label: collect labels with add_correlations() of their request, "
                         "or give --key naming a column the inputs and the labels share")
    return counter.result(prediction, label, without)


LABEL = "$mdc_label"


def _select(frame: pd.DataFrame, columns: List[str]) -> pd.DataFrame:
    """These columns of a chunk; one its file lacks is empty."""
    return frame.reindex(columns=columns, fill_value="")


def _data(columns: Iterable[str]) -> List[str]:
    return [c for c in columns if c not in META_COLUMNS]


def _only(columns: List[str], what: str, where: str) -> str:
    if len(columns) != 1:
        raise ValueError(f"the {where} have {len(columns)} data columns ({', '.join(columns) or 'none'}): "
                         f"name the {what} column ({what}=… in Python, --{what} with mdc quality)")
    return columns[0]


class QualityCounter:
    """Scored pairs added up per day: counts of (label, prediction) for classes, error sums for a regression,
    and what decides between them (are all labels numbers, whole, and how many different)."""

    def __init__(self) -> None:
        self.rows = 0
        self.pairs: Dict[Tuple[str, str, str], int] = {}  # (day, label, prediction) as text → rows
        self.errors: Dict[str, np.ndarray] = {}  # day → [rows, Σ|e|, Σe², Σe]
        self.labels_numeric = True
        self.labels_whole = True
        self.label_values: set = set()

    def add(self, truth: pd.Series, guess: pd.Series, stamps: pd.Series) -> None:
        if not len(truth):
            return
        self.rows += len(truth)
        days = pd.to_datetime(stamps.replace("", None), utc=True, errors="coerce").dt.date.astype(str)
        present = truth[truth.notna() & (truth.astype(str) != "")]
        numbers = pd.to_numeric(present, errors="coerce")
        if pd.api.types.is_bool_dtype(present) or numbers.isna().any():
            self.labels_numeric = False
        elif len(numbers):
            self.labels_whole = self.labels_whole and bool(np.all(numbers == np.round(numbers)))
        if len(self.label_values) <= _MAX_CLASSES:
            self.label_values.update(present.astype(str).unique()[:_MAX_CLASSES + 1])
        if len(self.label_values) <= _MAX_CLASSES or not self.labels_numeric:
            table = pd.DataFrame({"day": days, "truth": _texts(truth), "guess": _texts(guess)})
            for (day, t, g), n in table.groupby(["day", "truth", "guess"], sort=False).size().items():
                self.pairs[(day, t, g)] = self.pairs.get((day, t, g), 0) + int(n)
        if self.labels_numeric:
            error = _floats(guess) - _floats(truth)
            keep = ~np.isnan(error)
            frame = pd.DataFrame({"day": days.to_numpy()[keep], "e": error[keep]})
            for day, values in frame.groupby("day", sort=False)["e"]:
                e = values.to_numpy()
                sums = np.array([len(e), np.abs(e).sum(), (e ** 2).sum(), e.sum()])
                self.errors[day] = self.errors.get(day, np.zeros(4)) + sums

    @property
    def task(self) -> str:
        classes = not self.labels_numeric or (self.labels_whole and len(self.label_values) <= _MAX_CLASSES)
        return "classification" if classes else "regression"

    def result(self, prediction: str, label: str, without: int) -> QualityResult:
        task = self.task
        if task == "regression":
            windows = {day: _regression(sums) for day, sums in self.errors.items()}
            overall = _regression(sum(self.errors.values(), np.zeros(4)))
            rows = {day: int(sums[0]) for day, sums in self.errors.items()}
        else:
            by_day: Dict[str, Dict[Tuple[str, str], int]] = {}
            for (day, t, g), n in self.pairs.items():
                by_day.setdefault(day, {})
                by_day[day][(t, g)] = by_day[day].get((t, g), 0) + n
            windows = {day: _classification(pairs) for day, pairs in by_day.items()}
            merged: Dict[Tuple[str, str], int] = {}
            for pairs in by_day.values():
                for pair, n in pairs.items():
                    merged[pair] = merged.get(pair, 0) + n
            overall = _classification(merged)
            rows = {day: sum(pairs.values()) for day, pairs in by_day.items()}
        days = [QualityWindow(day, rows[day], windows[day]) for day in sorted(windows) if day not in ("NaT", "None")]
        return QualityResult(task, prediction, label, self.rows, without, QualityWindow("overall", self.rows, overall),
                             days)


def _texts(column: pd.Series) -> pd.Series:
    return column.map(lambda v: "nan" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def _floats(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column.replace("", None) if column.dtype == object else column,
                         errors="coerce").astype("float64").to_numpy()


def _regression(sums: np.ndarray) -> Dict[str, Optional[float]]:
    rows = sums[0]
    if not rows:
        return {"mae": None, "rmse": None, "bias": None}
    return {"mae": float(sums[1] / rows), "rmse": float(np.sqrt(sums[2] / rows)), "bias": float(sums[3] / rows)}


def _classification(pairs: Dict[Tuple[str, str], int]) -> Dict[str, Optional[float]]:
    total = sum(pairs.values())
    classes = sorted({t for t, _ in pairs} | {g for _, g in pairs})
    precisions, recalls, f1s = [], [], []
    for name in classes:
        true_positive = float(pairs.get((name, name), 0))
        predicted = float(sum(n for (_, g), n in pairs.items() if g == name))
        actual = float(sum(n for (t, _), n in pairs.items() if t == name))
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    right = sum(n for (t, g), n in pairs.items() if t == g)
    return {"accuracy": right / total if total else None, "precision": float(np.mean(precisions)),
            "recall": float(np.mean(recalls)), "f1": float(np.mean(f1s))}
