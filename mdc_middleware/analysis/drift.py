"""Data drift of collected inputs against a training baseline, per feature and per day.

Numeric features get the population stability index (PSI, on the baseline's deciles), the two-sample
Kolmogorov–Smirnov test and the Wasserstein distance; categorical features get PSI over categories and
a chi-squared test. The overall drift magnitude is read like Azure ML's dataset monitors, 0 (same
distribution) to 100 (completely separable), but is computed from the features themselves rather than
from a trained classifier, so it is deterministic and explains itself: it is 100 × the mean per-feature
distance (the KS statistic for numeric features, total variation distance for categorical ones; both
are 0 for equal distributions and 1 for disjoint ones).

The verdict follows from the features it shows, as Evidently's dataset drift does: a feature has drifted when
its PSI reaches ``psi_threshold`` (0.2, the usual "significant shift") or its distance reaches
``threshold`` / 100; the data has drifted when at least ``drift_share`` of the compared features (half, by
default) have, or the magnitude reaches ``threshold``, on the whole range or on any one day. Nothing compared
(no feature in common, an empty baseline) is an error, never "no drift".
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from ..records import META_COLUMNS, SCORING_TIMESTAMP

_EPSILON = 1e-4  # floor for empty bins, so PSI stays finite


@dataclass
class FeatureDrift:
    feature: str
    kind: str                      # "numeric" or "categorical"
    rows: int
    distance: float                # 0..1, what the drift magnitude averages
    psi: float
    ks_statistic: Optional[float] = None
    ks_pvalue: Optional[float] = None
    chi2_statistic: Optional[float] = None
    chi2_pvalue: Optional[float] = None
    wasserstein: Optional[float] = None
    wasserstein_normalized: Optional[float] = None  # in baseline standard deviations
    drifted: bool = False


@dataclass
class DriftWindow:
    """Drift of one stretch of target data (the whole range, or one day)."""

    label: str
    rows: int
    magnitude: float
    features: List[FeatureDrift] = field(default_factory=list)

    @property
    def drifted_share(self) -> float:
        """The share of compared features that drifted here."""
        return sum(f.drifted for f in self.features) / len(self.features) if self.features else 0.0


@dataclass
class DriftResult:
    baseline_rows: int
    threshold: float
    psi_threshold: float
    overall: DriftWindow
    days: List[DriftWindow]
    skipped_features: Dict[str, str]
    drift_share: float = 0.5

    def window_drifted(self, window: DriftWindow) -> bool:
        return bool(window.features) and (window.drifted_share >= self.drift_share
                                          or window.magnitude >= self.threshold)

    @property
    def drifted(self) -> bool:
        """Drifted on the whole range or on any one day: a shift that started yesterday must alert even while
        older days still dilute the overall figures."""
        return any(self.window_drifted(window) for window in [self.overall, *self.days])

    @property
    def drifted_features(self) -> List[str]:
        """Features that drifted on the whole range or on any day."""
        names: Dict[str, None] = {}
        for window in [self.overall, *self.days]:
            names.update((f.feature, None) for f in window.features if f.drifted)
        return list(names)

    @property
    def compared_features(self) -> List[str]:
        return [f.feature for f in self.overall.features]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["drifted"] = self.drifted
        out["drifted_features"] = self.drifted_features
        for window, data in zip([self.overall, *self.days], [out["overall"], *out["days"]]):
            data["drifted_share"] = window.drifted_share
            data["drifted"] = self.window_drifted(window)
        return _finite(out)


class NothingCompared(ValueError):
    """No feature could be compared: no verdict can be given."""


def _finite(value):
    """JSON has no NaN or Infinity: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def compute_drift(baseline: pd.DataFrame, target: pd.DataFrame, *, features: Optional[Sequence[str]] = None,
                  threshold: float = 30.0, psi_threshold: float = 0.2, bins: int = 10,
                  drift_share: float = 0.5) -> DriftResult:
    """Drift of ``target`` (collected inputs) from ``baseline`` over the whole range and per day.

    Raises ``NothingCompared`` when no feature could be compared (none in common, or none with values)."""
    skipped: Dict[str, str] = {}
    if features is None:
        features = [c for c in baseline.columns if c in target.columns and c not in META_COLUMNS]
        skipped.update({c: "not in the collected data" for c in baseline.columns
                        if c not in target.columns and c not in META_COLUMNS})
    else:
        missing = [c for c in features if c not in baseline.columns or c not in target.columns]
        if missing:
            raise ValueError(f"features not in both baseline and collected data: {missing}")
    profiles = {}
    for name in features:
        profile = _Profile.of(baseline[name], bins)
        if profile is None:
            skipped[name] = "no values in the baseline"
        else:
            profiles[name] = profile
    def drifted(feature: FeatureDrift) -> FeatureDrift:
        feature.drifted = bool(feature.psi >= psi_threshold or 100.0 * feature.distance >= threshold)
        return feature

    overall = _window("overall", target, profiles, drifted)
    if not overall.features:
        data = [c for c in target.columns if c not in META_COLUMNS]
        base = [c for c in baseline.columns if c not in META_COLUMNS]
        if not len(baseline):
            raise NothingCompared("nothing to compare: the baseline has no rows")
        if not profiles:
            raise NothingCompared(f"nothing to compare: the baseline's columns ({_names(base)}) and the collected "
                                  f"data's ({_names(data)}) share no feature with values")
        raise NothingCompared("nothing to compare: the collected data has no values in the features it shares "
                              f"with the baseline ({_names(list(profiles))})")
    days = []
    if SCORING_TIMESTAMP in target.columns and len(target):
        stamps = pd.to_datetime(target[SCORING_TIMESTAMP], utc=True, errors="coerce")
        for day, rows in target.groupby(stamps.dt.date):
            days.append(_window(day.isoformat() if isinstance(day, dt.date) else str(day), rows, profiles, drifted))
    return DriftResult(len(baseline), threshold, psi_threshold, overall, days, skipped, drift_share)


def _names(columns: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(str(c) for c in list(columns)[:most])
    return (shown + f", … {len(columns) - most} more" if len(columns) > most else shown) or "none"


def _window(label: str, frame: pd.DataFrame, profiles: Dict[str, "_Profile"], judge) -> DriftWindow:
    drifts = [profile.compare(name, frame[name]) for name, profile in profiles.items()]
    drifts = [judge(d) for d in drifts if d is not None]
    magnitude = 100.0 * float(np.mean([d.distance for d in drifts])) if drifts else 0.0
    return DriftWindow(label, len(frame), round(magnitude, 3), drifts)


class _Profile:
    """What is kept of one baseline feature to compare target windows against it."""

    def __init__(self, kind: str, values: np.ndarray, edges: Optional[np.ndarray] = None,
                 categories: Optional[pd.Index] = None) -> None:
        self.kind, self.values, self.edges, self.categories = kind, values, edges, categories
        if kind == "numeric":
            self.proportions = _proportions(np.histogram(values, edges)[0])
            self.std = float(np.std(values)) if len(values) > 1 else 0.0
        else:
            self.counts = pd.Series(values).value_counts()

    @classmethod
    def of(cls, column: pd.Series, bins: int) -> Optional["_Profile"]:
        column = column.dropna()
        if column.empty:
            return None
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.to_numpy(dtype=float)
            inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
            edges = np.concatenate(([-np.inf], inner, [np.inf]))
            return cls("numeric", values, edges=edges)
        return cls("categorical", column.astype(str).to_numpy())

    def compare(self, name: str, column: pd.Series) -> Optional[FeatureDrift]:
        from scipy import stats

        if self.kind == "numeric":
            values = pd.to_numeric(column, errors="coerce").dropna().to_numpy(dtype=float)
            if not len(values):
                return None
            target = _proportions(np.histogram(values, self.edges)[0])
            ks = stats.ks_2samp(self.values, values)
            distance = float(stats.wasserstein_distance(self.values, values))
            return FeatureDrift(name, "numeric", len(values), float(ks.statistic), _psi(self.proportions, target),
                                ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue),
                                wasserstein=distance,
                                wasserstein_normalized=distance / self.std if self.std else None)
        values = column.dropna().astype(str)
        if values.empty:
            return None
        counts = values.value_counts()
        table = pd.concat([self.counts, counts], axis=1, keys=["baseline", "target"]).fillna(0)
        base, target = table["baseline"].to_numpy(float), table["target"].to_numpy(float)
        chi2 = pvalue = None
        if len(table) > 1:
            result = stats.chi2_contingency(np.vstack([base, target]))
            chi2, pvalue = float(result[0]), float(result[1])
        base_p, target_p = base / base.sum(), target / target.sum()
        return FeatureDrift(name, "categorical", len(values), float(0.5 * np.abs(base_p - target_p).sum()),
                            _psi(_proportions(base), _proportions(target)), chi2_statistic=chi2,
                            chi2_pvalue=pvalue)


def _proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    return np.maximum(counts / total if total else counts, _EPSILON)


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sum((actual - expected) * np.log(actual / expected)))
