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
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from ..records import CORRELATION_ID, META_COLUMNS, SCORING_TIMESTAMP
from .join import join_predictions

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


def data_columns(frame: pd.DataFrame) -> List[str]:
    return [c for c in frame.columns if c not in META_COLUMNS]


def model_quality(inputs: pd.DataFrame, predictions: pd.DataFrame, labels: pd.DataFrame, *,
                  key: Optional[str] = None, prediction: Optional[str] = None,
                  label: Optional[str] = None) -> QualityResult:
    """Join predictions with labels (by correlation id, or by ``key`` through the inputs) and score them.

    Raises ValueError (saying what is missing) when nothing joins or a named column is absent."""
    if labels.empty:
        raise ValueError("no labels collected (designation 'labels')")
    if predictions.empty:
        raise ValueError("no predictions collected")
    prediction = prediction or _only(data_columns(predictions), "prediction", "predictions")
    label = label or _only([c for c in data_columns(labels) if c != key], "label", "labels")
    for name, frame, what in ((prediction, predictions, "predictions"), (label, labels, "labels")):
        if name not in frame.columns:
            raise ValueError(f"no column {name!r} in the {what}; there are: {', '.join(data_columns(frame))}")
    if key is None:
        scored = join_predictions(predictions[[prediction, CORRELATION_ID, SCORING_TIMESTAMP]],
                                  labels[[label, CORRELATION_ID]].rename(columns={label: "$mdc_label"})).frame
    else:
        for frame, what in ((inputs, "inputs"), (labels, "labels")):
            if key not in frame.columns:
                raise ValueError(f"no key column {key!r} in the {what}")
        pairs = join_predictions(inputs[[key, CORRELATION_ID, SCORING_TIMESTAMP]],
                                 predictions[[prediction, CORRELATION_ID]]).frame
        latest = labels.drop_duplicates(subset=[key], keep="last")[[key, label]]
        scored = pairs.merge(latest.rename(columns={label: "$mdc_label"}), on=key, how="inner")
    if scored.empty:
        raise ValueError("no prediction joined a label: collect labels with add_correlations() of their request, "
                         "or give --key naming a column the inputs and the labels share")
    truth, guess = scored["$mdc_label"], scored[prediction]
    task = "classification" if _is_classes(truth) else "regression"
    stamps = pd.to_datetime(scored[SCORING_TIMESTAMP], utc=True, errors="coerce")
    days = [QualityWindow(str(day), len(rows), _metrics(task, truth[rows.index], guess[rows.index]))
            for day, rows in scored.groupby(stamps.dt.date)]
    return QualityResult(task, prediction, label, len(scored), len(predictions) - len(scored),
                         QualityWindow("overall", len(scored), _metrics(task, truth, guess)), days)


def _only(columns: List[str], what: str, where: str) -> str:
    if len(columns) != 1:
        raise ValueError(f"the {where} have {len(columns)} data columns ({', '.join(columns) or 'none'}): "
                         f"name the {what} column")
    return columns[0]


def _is_classes(truth: pd.Series) -> bool:
    values = truth.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    numbers = _floats(values)
    return bool(np.all(numbers == np.round(numbers))) and values.nunique() <= _MAX_CLASSES


def _floats(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()


def _metrics(task: str, truth: pd.Series, guess: pd.Series) -> Dict[str, Optional[float]]:
    if task == "regression":
        error = _floats(guess) - _floats(truth)
        error = error[~np.isnan(error)]
        if not len(error):
            return {"mae": None, "rmse": None, "bias": None}
        return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
                "bias": float(np.mean(error))}
    truth_text, guess_text = truth.astype(str).to_numpy(), guess.astype(str).to_numpy()
    classes = sorted(set(truth_text) | set(guess_text))
    precisions, recalls, f1s = [], [], []
    for name in classes:
        true_positive = float(np.sum((guess_text == name) & (truth_text == name)))
        predicted, actual = float(np.sum(guess_text == name)), float(np.sum(truth_text == name))
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {"accuracy": float(np.mean(truth_text == guess_text)), "precision": float(np.mean(precisions)),
            "recall": float(np.mean(recalls)), "f1": float(np.mean(f1s))}
