"""Distributions as counts, and the drift statistics computed from them, the same for every engine.

An engine (pandas chunks in ``drift.py``, Spark in ``spark.py``) only counts. For a numeric feature: how many of
a window's values fall in each bin of the baseline's grid, and the window's smallest and largest value; for a
categorical feature: how many of each category. Counts add up chunk by chunk or partition by partition, so the
memory they take does not grow with rows, and two engines that count the same data get the same statistics.

The grid (``NumericGrid``) is made from the baseline: its quantiles at every 1/1000 (ties merged) and its deciles,
each point also closing a bin of its own (``[e, next float after e)``), so a value the baseline holds many times
never shares a bin with others. Bins are closed on the left. From the counts:

- PSI on the baseline's deciles, exactly as from the values.
- Kolmogorov–Smirnov: the largest gap between the two CDFs at the grid's points. Between two points the
  baseline holds at most the mass of one open bin (about 1/1000 of its rows, none when its values repeat), so
  the statistic is within that of the one from all values (``NumericGrid.ks_tolerance`` says how much); the
  p-value is the asymptotic one (Kolmogorov's distribution), as scipy uses for large samples.
- Wasserstein-1: the area between the two CDFs, each taken as linear inside a bin: exact where the values
  repeat (bins of one value), and within a fraction of a bin's width elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import pandas as pd

GRID_QUANTILES = 1000
PSI_BINS = 10
EPSILON = 1e-4  # floor for empty bins, so PSI stays finite
MAX_CATEGORIES = 10_000  # categories a window keeps apart; beyond, those the baseline never had are counted as one


@dataclass
class NumericGrid:
    """Bin edges made from a baseline; bin ``i`` is ``[edges[i-1], edges[i])``, with open ends at both sides."""

    edges: np.ndarray
    deciles: np.ndarray
    ks_tolerance: float = 0.0  # the largest share of the baseline inside one open bin

    @classmethod
    def of(cls, values: np.ndarray, fine: int = GRID_QUANTILES, psi_bins: int = PSI_BINS) -> "NumericGrid":
        deciles = np.unique(np.quantile(values, np.linspace(0, 1, psi_bins + 1)[1:-1]))
        points = np.unique(np.concatenate([np.quantile(values, np.linspace(0, 1, fine + 1)), deciles]))
        edges = np.unique(np.concatenate([points, np.nextafter(points, np.inf)]))
        grid = cls(edges, deciles)
        counts = grid.count(values)
        inner = counts[2:-1:2] if len(counts) > 3 else counts[:0]  # the open bins between two points' own bins
        grid.ks_tolerance = float(inner.max() / len(values)) if len(inner) and len(values) else 0.0
        return grid

    def count(self, values: np.ndarray) -> np.ndarray:
        """How many ``values`` fall in each of the ``len(edges) + 1`` bins."""
        return np.bincount(np.searchsorted(self.edges, values, side="right"), minlength=len(self.edges) + 1)

    def decile_counts(self, counts: np.ndarray) -> np.ndarray:
        """Fine counts summed into the deciles' bins (the deciles are among the edges)."""
        starts = np.concatenate(([-np.inf], self.edges))  # each fine bin's lower edge
        which = np.searchsorted(self.deciles, starts, side="right")
        return np.bincount(which, weights=counts, minlength=len(self.deciles) + 1)


@dataclass
class NumericCounts:
    """A window's values of one numeric feature: how many fall in each bin of a grid and their sum there (what
    the area between two CDFs needs), and the smallest and largest."""

    counts: np.ndarray
    sums: np.ndarray
    low: float = np.inf
    high: float = -np.inf

    @classmethod
    def empty(cls, grid: NumericGrid) -> "NumericCounts":
        return cls(np.zeros(len(grid.edges) + 1, dtype=np.int64), np.zeros(len(grid.edges) + 1))

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def add(self, grid: NumericGrid, values: np.ndarray) -> None:
        if len(values):
            where = np.searchsorted(grid.edges, values, side="right")
            size = len(grid.edges) + 1
            self.merge(np.bincount(where, minlength=size), np.bincount(where, weights=values, minlength=size),
                       float(values.min()), float(values.max()))

    def merge(self, counts: np.ndarray, sums: np.ndarray, low: float, high: float) -> None:
        """Counts made elsewhere (another chunk, a Spark aggregation) added to these."""
        self.counts = self.counts + counts
        self.sums = self.sums + sums
        self.low, self.high = min(self.low, low), max(self.high, high)


def numeric_statistics(grid: NumericGrid, baseline: NumericCounts, target: NumericCounts) -> Dict[str, float]:
    """PSI, KS statistic and p-value, and Wasserstein distance of ``target`` against ``baseline``."""
    from scipy import stats

    n, m = baseline.rows, target.rows
    psi = psi_of(proportions(grid.decile_counts(baseline.counts)), proportions(grid.decile_counts(target.counts)))
    below_b = np.concatenate(([0.0], np.cumsum(baseline.counts)[:-1] / n))  # share below each bin's lower edge
    below_t = np.concatenate(([0.0], np.cumsum(target.counts)[:-1] / m))
    gap = float(np.max(np.abs(below_b - below_t)))
    pvalue = float(stats.kstwobign.sf(gap * np.sqrt(n * m / (n + m))))
    # Each bin [a, b): ∫ F = (b - a)·F(a) + Σ (b - v) / rows over its values v; the open ends run from the
    # smallest value seen to the largest. Where the two CDFs cross inside one bin, |∫(F_b - F_t)| is a little
    # under ∫|F_b - F_t|.
    low, high = min(baseline.low, target.low), max(baseline.high, target.high)
    lower = np.concatenate(([low], grid.edges))
    upper = np.concatenate((grid.edges, [high]))
    width = np.maximum(upper - lower, 0.0)
    upper = lower + width
    inside_b = baseline.counts * upper - baseline.sums
    inside_t = target.counts * upper - target.sums
    difference = width * (below_b - below_t) + inside_b / n - inside_t / m
    return {"psi": psi, "ks_statistic": gap, "ks_pvalue": min(1.0, pvalue),
            "wasserstein": float(np.sum(np.abs(difference)))}


def categorical_statistics(baseline: pd.Series, target: pd.Series) -> Dict[str, Optional[float]]:
    """Total variation distance, PSI and the chi-squared test over categories, from counts per category."""
    from scipy import stats

    table = pd.concat([baseline, target], axis=1, keys=["baseline", "target"]).fillna(0)
    base, seen = table["baseline"].to_numpy(float), table["target"].to_numpy(float)
    chi2 = pvalue = None
    if len(table) > 1:
        result = stats.chi2_contingency(np.vstack([base, seen]))
        chi2, pvalue = float(result[0]), float(result[1])
    return {"distance": float(0.5 * np.abs(base / base.sum() - seen / seen.sum()).sum()),
            "psi": psi_of(proportions(base), proportions(seen)), "chi2_statistic": chi2, "chi2_pvalue": pvalue}


def add_categories(counts: pd.Series, more: pd.Series, known: pd.Index) -> pd.Series:
    """Category counts added up; past MAX_CATEGORIES, categories not in ``known`` (the baseline's) become one."""
    total = counts.add(more, fill_value=0) if len(counts) else more.astype(float)
    if len(total) > MAX_CATEGORIES:
        unknown = ~total.index.isin(known)
        total = pd.concat([total[~unknown], pd.Series({OTHER: total[unknown].sum()})])
    return total


OTHER = "(categories not in the baseline)"


def proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    return np.maximum(counts / total if total else counts, EPSILON)


def psi_of(expected: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sum((actual - expected) * np.log(actual / expected)))
