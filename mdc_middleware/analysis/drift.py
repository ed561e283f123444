"""Data drift of collected inputs against a training baseline, per feature and per day.

Numeric features get the population stability index (PSI, on the baseline's deciles), the two-sample
Kolmogorov–Smirnov test and the Wasserstein distance; categorical features get PSI over categories and
a chi-squared test. The overall drift magnitude is read like Azure ML's dataset monitors, 0 (same
distribution) to 100 (completely separable), but is computed from the features themselves rather than
from a trained classifier, so it is deterministic and explains itself: it is 100 × the mean per-feature
distance. A feature's distance is the larger of its values' distance (the KS statistic for numeric features,
total variation distance for categorical ones; both are 0 for equal distributions and 1 for disjoint ones) and
the change in its share of rows without a value (an empty cell; for a numeric feature, also text that is not a
number): a feature that stops arriving, on some rows or all, is a shift too, however its other values fall.

The verdict follows from the features it shows, as Evidently's dataset drift does: a feature has drifted when
its PSI reaches ``psi_threshold`` (0.2, the usual "significant shift") or its distance reaches
``threshold`` / 100; the data has drifted when at least ``drift_share`` of the compared features (half, by
default) have, or the magnitude reaches ``threshold``, on the whole range or on any one day. Nothing compared
(no feature in common, an empty baseline) is an error, never "no drift".
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from ..records.record import META_COLUMNS, SCORING_TIMESTAMP
from .distributions import NumericCounts, NumericGrid, add_categories, categorical_statistics, numeric_statistics


@dataclass
class FeatureDrift:
    feature: str
    kind: str                      # "numeric" or "categorical"
    rows: int                      # rows with a value of the feature
    distance: float                # 0..1, what the drift magnitude averages (see the module's docstring)
    psi: float                     # of the values; NaN (null in JSON) when no row has one
    ks_statistic: Optional[float] = None
    ks_pvalue: Optional[float] = None
    chi2_statistic: Optional[float] = None
    chi2_pvalue: Optional[float] = None
    wasserstein: Optional[float] = None
    wasserstein_normalized: Optional[float] = None  # in baseline standard deviations
    values_distance: Optional[float] = None         # KS or total variation of the values alone
    missing_share: float = 0.0                      # of the window's rows, those without a value
    baseline_missing_share: float = 0.0
    drifted: bool = False

    @property
    def missing_moved(self) -> float:
        """How far the share of rows without a value moved from the baseline's (0..1)."""
        return abs(self.missing_share - self.baseline_missing_share)


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
    # feature → (baseline profile, collected counts over the whole range): what the report draws; not in to_dict
    distributions: Dict[str, Tuple[Any, Any]] = field(default_factory=dict, repr=False, compare=False)

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
        out = asdict(dataclasses.replace(self, distributions={}))
        del out["distributions"]
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


def compute_drift(baseline: pd.DataFrame, target: Union[pd.DataFrame, Iterable[pd.DataFrame]], *,
                  features: Optional[Sequence[str]] = None, threshold: float = 30.0, psi_threshold: float = 0.2,
                  bins: int = 10, drift_share: float = 0.5) -> DriftResult:
    """Drift of ``target`` (collected inputs) from ``baseline`` over the whole range and per day.

    ``target`` is one DataFrame or DataFrames one after the other (chunks of a stream: memory does not grow
    with their rows). Their cells may be typed or text as written, empty text being a missing value. Chunks may
    differ in their columns (files of other headers): a chunk without a feature has no value of it. Raises
    ``NothingCompared`` when no feature could be compared (none in common, or no collected rows)."""
    counter = DriftCounter(baseline, features, bins)
    for frame in [target] if isinstance(target, pd.DataFrame) else target:
        counter.add(frame)
    return counter.result(threshold=threshold, psi_threshold=psi_threshold, drift_share=drift_share)


class DriftCounter:
    """The baseline's profiles, and counts of the target's values per window (overall, and each day) that
    chunks are added to.

    Features are the baseline's columns that the chunks have, unless ``features`` names them; a feature first
    seen in a later chunk is counted from there on, the rows before it having no value of it.
    """

    def __init__(self, baseline: pd.DataFrame, features: Optional[Sequence[str]] = None, bins: int = 10) -> None:
        """:raises ValueError: ``features`` names a column the baseline does not have."""
        self.baseline = baseline
        self.bins = bins
        self.baseline_rows = len(baseline)
        self.baseline_columns = list(baseline.columns)
        self.chosen = list(features) if features is not None else None  # named: compared whatever they hold
        self.profiles: Dict[str, Profile] = {}
        self.not_profiled: Dict[str, str] = {}  # baseline features seen in the chunks but not compared, and why
        self.target_columns: List[str] = []     # every column the chunks had
        self.windows: Dict[str, WindowCounts] = {}
        if self.chosen is not None:
            absent = [c for c in self.chosen if c not in self.baseline_columns]
            if absent:
                raise ValueError(f"features not in both baseline and collected data: {absent}")
            for name in self.chosen:
                self._profile(name)

    def see_columns(self, columns: Iterable[str]) -> None:
        """Columns of the collected data (a chunk's, or a whole data set's): the baseline's among them are
        compared from now on."""
        known = set(self.target_columns)
        for column in columns:
            if column in known:
                continue
            known.add(column)
            self.target_columns.append(column)
            if self.chosen is None and column in self.baseline_columns and column not in META_COLUMNS:
                self._profile(column)

    def _profile(self, name: str) -> None:
        profile = Profile.of(self.baseline[name], self.bins)
        if profile is None:
            self.not_profiled[name] = "no values in the baseline"
        elif self.chosen is None and profile.names_rows():
            self.not_profiled[name] = (f"an identifier or free text, not a distribution: {len(profile.counts):,} of "
                                       f"its {int(profile.counts.sum()):,} baseline values are distinct; pass it in "
                                       "features (--features) to compare it")
        else:
            self.profiles[name] = profile
            order = self.chosen if self.chosen is not None else self.baseline_columns  # what results list them in
            self.profiles = {c: self.profiles[c] for c in order if c in self.profiles}
            for counts in self.windows.values():  # windows counted before: their rows had no value of it
                counts.features[name] = profile.empty()

    @property
    def skipped(self) -> Dict[str, str]:
        """Baseline features not compared, and why."""
        if self.chosen is not None:
            return dict(self.not_profiled)
        lowered = {str(c).lower(): c for c in self.target_columns}
        absent = {c: "not in the collected data" + (f"; {lowered[str(c).lower()]} differs only in case"
                                                    if str(c).lower() in lowered else "")
                  for c in self.baseline_columns if c not in self.target_columns and c not in META_COLUMNS}
        return {**absent, **self.not_profiled}

    def window(self, label: str) -> "WindowCounts":
        counts = self.windows.get(label)
        if counts is None:
            counts = self.windows[label] = WindowCounts(0, {name: p.empty() for name, p in self.profiles.items()})
        return counts

    def add(self, frame: pd.DataFrame) -> None:
        """Count one chunk of target rows."""
        self.see_columns(frame.columns)
        self._add("overall", frame)
        if SCORING_TIMESTAMP in frame.columns and len(frame):
            stamps = pd.to_datetime(frame[SCORING_TIMESTAMP].replace("", None), utc=True, errors="coerce",
                                    format="ISO8601")
            for day, rows in frame.groupby(stamps.dt.date):
                self._add(day.isoformat() if isinstance(day, dt.date) else str(day), rows)

    def _add(self, label: str, frame: pd.DataFrame) -> None:
        counts = self.window(label)
        counts.rows += len(frame)
        for name, profile in self.profiles.items():
            if name in frame.columns:  # else these rows have no value of it: counted as missing
                counts.features[name] = profile.add(counts.features[name], frame[name])

    def result(self, *, threshold: float = 30.0, psi_threshold: float = 0.2, drift_share: float = 0.5) -> DriftResult:
        def judged(feature: FeatureDrift) -> FeatureDrift:
            feature.drifted = bool(feature.psi >= psi_threshold or 100.0 * feature.distance >= threshold)
            return feature

        def window(label: str) -> DriftWindow:
            counts = self.window(label)
            drifts = [judged(d) for d in (p.compare(name, counts.features[name], counts.rows)
                                          for name, p in self.profiles.items()) if d is not None]
            magnitude = 100.0 * float(np.mean([d.distance for d in drifts])) if drifts else 0.0
            return DriftWindow(label, counts.rows, round(magnitude, 3), drifts)

        if self.chosen is not None:
            unseen = [c for c in self.chosen if c not in self.target_columns]
            if unseen and self.windows:
                raise ValueError(f"features not in both baseline and collected data: {unseen}")
        overall = window("overall")
        if not overall.features:
            data = [c for c in self.target_columns if c not in META_COLUMNS]
            base = [c for c in self.baseline_columns if c not in META_COLUMNS]
            if not self.baseline_rows:
                raise NothingCompared("nothing to compare: the baseline has no rows")
            if not self.profiles:
                lowered = {str(c).lower(): c for c in data}
                in_case_only = [(c, lowered[str(c).lower()]) for c in base
                                if str(c).lower() in lowered and lowered[str(c).lower()] != c]
                hint = (f"; these differ only in case: {', '.join(f'{b} and {d}' for b, d in in_case_only[:8])}"
                        if in_case_only else "")
                shared = [f"{name} ({why})" for name, why in self.skipped.items() if name in data]
                hint += f"; not compared: {', '.join(shared[:8])}" if shared else ""
                raise NothingCompared(f"nothing to compare: the baseline's columns ({_names(base)}) and the "
                                      f"collected data's ({_names(data)}) share no feature with values{hint}")
            raise NothingCompared("nothing to compare: there are no collected rows")
        days = [window(label) for label in sorted(self.windows) if label != "overall"]
        result = DriftResult(self.baseline_rows, threshold, psi_threshold, overall, days, self.skipped, drift_share)
        result.distributions = {name: (p, self.window("overall").features[name]) for name, p in self.profiles.items()}
        return result


@dataclass
class WindowCounts:
    rows: int
    features: Dict[str, Any]  # NumericCounts, or a Series of counts per category


def _names(columns: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(str(c) for c in list(columns)[:most])
    return (shown + f", … {len(columns) - most} more" if len(columns) > most else shown) or "none"


# A text feature of the baseline is taken for an identifier when at least this share of its values (and at least
# this many) are distinct: chosen automatically, it is not compared (said in ``skipped_features``).
_IDENTIFIER_SHARE = 0.95
_IDENTIFIER_MIN_VALUES = 50


class Profile:
    """What is kept of one baseline feature: its kind, its grid (numeric), its counts and its share of rows without
    a value."""

    def __init__(self, kind: str, grid: Optional[NumericGrid], counts: Any, std: float = 0.0,
                 missing_share: float = 0.0) -> None:
        self.kind, self.grid, self.counts, self.std = kind, grid, counts, std
        self.missing_share = missing_share

    @classmethod
    def of(cls, column: pd.Series, bins: int = 10) -> Optional["Profile"]:
        rows = len(column)
        column = column.dropna()
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.to_numpy(dtype=float)
            if not len(values):
                return None
            grid = NumericGrid.of(values, psi_bins=bins)
            counts = NumericCounts.empty(grid)
            counts.add(grid, values)
            return cls("numeric", grid, counts, float(np.std(values)) if len(values) > 1 else 0.0,
                       1.0 - len(values) / rows)
        text = column.astype(str)
        text = text[text != ""]  # as an empty collected cell: no value
        if text.empty:
            return None
        return cls("categorical", None, text.value_counts().astype(float), missing_share=1.0 - len(text) / rows)

    def names_rows(self) -> bool:
        """Text whose every value, or nearly, is distinct (an id, a free text): no distribution to compare, and
        collected values, all new, would always read as drift."""
        if self.grid is not None:
            return False
        values = float(self.counts.sum())
        return values >= _IDENTIFIER_MIN_VALUES and len(self.counts) >= _IDENTIFIER_SHARE * values

    def empty(self) -> Any:
        if self.grid is not None:
            return NumericCounts.empty(self.grid)
        return pd.Series(dtype=float)

    def add(self, counts: Any, column: pd.Series) -> Any:
        """``counts`` with a chunk's cells of this feature added (cells as text or typed; empty and missing
        cells are not values)."""
        if self.grid is not None:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            counts.add(self.grid, values[~np.isnan(values)])
            return counts
        text = column.dropna().astype(str)
        text = text[text != ""]
        return add_categories(counts, text.value_counts().astype(float), self.counts.index) if len(text) else counts

    def compare(self, name: str, counts: Any, rows: int) -> Optional[FeatureDrift]:
        """This feature's drift in a window of ``rows`` rows whose values are ``counts``; None when the window
        has no rows."""
        if not rows:
            return None
        valued = counts.rows if self.grid is not None else int(counts.sum())
        missing = max(0.0, 1.0 - valued / rows)
        moved = abs(missing - self.missing_share)
        shares = dict(missing_share=missing, baseline_missing_share=self.missing_share)
        if not valued:  # every row without a value: nothing else to compare
            return FeatureDrift(name, self.kind, 0, moved, math.nan, **shares)
        if self.grid is not None:
            found = numeric_statistics(self.grid, self.counts, counts)
            return FeatureDrift(name, "numeric", valued, max(found["ks_statistic"], moved), found["psi"],
                                ks_statistic=found["ks_statistic"], ks_pvalue=found["ks_pvalue"],
                                wasserstein=found["wasserstein"],
                                wasserstein_normalized=found["wasserstein"] / self.std if self.std else None,
                                values_distance=found["ks_statistic"], **shares)
        found = categorical_statistics(self.counts, counts)
        return FeatureDrift(name, "categorical", valued, max(found["distance"], moved), found["psi"],
                            chi2_statistic=found["chi2_statistic"], chi2_pvalue=found["chi2_pvalue"],
                            values_distance=found["distance"], **shares)
