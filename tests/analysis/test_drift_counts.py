"""Drift from counts: the statistics against those from all the values (scipy), and chunks against one frame."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mdc_middleware.analysis.distributions import NumericCounts, NumericGrid, numeric_statistics, proportions, psi_of
from mdc_middleware.analysis.drift import NothingCompared, compute_drift

SAMPLES = {
    "normal, shifted": lambda rng: (rng.normal(0, 1, 50_000), rng.normal(0.3, 1.2, 20_000)),
    "same distribution": lambda rng: (rng.normal(5, 2, 50_000), rng.normal(5, 2, 30_000)),
    "lognormal against uniform": lambda rng: (rng.lognormal(0, 1, 40_000), rng.uniform(0, 5, 10_000)),
    "whole numbers, one new value": lambda rng: (rng.integers(0, 5, 40_000).astype(float),
                                                 rng.integers(0, 6, 10_000).astype(float)),
    "between the baseline's values": lambda rng: (rng.choice([0.0, 1.0], 10_000),
                                                  rng.choice([0.5, 1.0], 10_000)),
    "far outside the baseline": lambda rng: (rng.normal(0, 1, 10_000), rng.normal(50, 1, 10_000)),
}


def counted(grid: NumericGrid, values: np.ndarray) -> NumericCounts:
    counts = NumericCounts.empty(grid)
    counts.add(grid, values)
    return counts


@pytest.mark.parametrize("case", list(SAMPLES))
def test_statistics_from_counts_agree_with_those_from_all_values(case):
    baseline, target = SAMPLES[case](np.random.default_rng(7))
    grid = NumericGrid.of(baseline)
    found = numeric_statistics(grid, counted(grid, baseline), counted(grid, target))
    exact_ks = stats.ks_2samp(baseline, target).statistic
    assert abs(found["ks_statistic"] - exact_ks) <= grid.ks_tolerance + 1e-12, (found, exact_ks, grid.ks_tolerance)
    assert grid.ks_tolerance <= 0.0011
    exact_w = stats.wasserstein_distance(baseline, target)
    assert found["wasserstein"] == pytest.approx(exact_w, rel=0.01, abs=1e-3 * np.std(baseline))
    edges = np.concatenate(([-np.inf], grid.deciles, [np.inf]))
    exact_psi = psi_of(proportions(np.histogram(baseline, edges)[0]), proportions(np.histogram(target, edges)[0]))
    assert found["psi"] == pytest.approx(exact_psi, rel=1e-9, abs=1e-12)
    assert (found["ks_pvalue"] < 0.01) == (stats.ks_2samp(baseline, target).pvalue < 0.01)


def test_repeated_values_give_the_exact_statistics():
    """Bins of one value each: nothing is spread inside a bin, so KS and Wasserstein are exact."""
    rng = np.random.default_rng(3)
    baseline, target = rng.integers(0, 10, 20_000).astype(float), rng.integers(2, 12, 5_000).astype(float)
    grid = NumericGrid.of(baseline)
    found = numeric_statistics(grid, counted(grid, baseline), counted(grid, target))
    assert grid.ks_tolerance == 0.0
    assert found["ks_statistic"] == pytest.approx(stats.ks_2samp(baseline, target).statistic, abs=1e-12)
    assert found["wasserstein"] == pytest.approx(stats.wasserstein_distance(baseline, target), rel=1e-9)


def test_chunks_give_what_one_frame_gives():
    rng = np.random.default_rng(11)
    baseline = pd.DataFrame({"x": rng.normal(0, 1, 5_000), "color": rng.choice(["red", "blue"], 5_000)})
    days = pd.to_datetime("2026-11-01", utc=True) + pd.to_timedelta(rng.integers(0, 3 * 86400, 9_000), unit="s")
    target = pd.DataFrame({"x": rng.normal(0.4, 1, 9_000), "color": rng.choice(["red", "blue", "green"], 9_000),
                           "$aml_dc_scoring_timestamp": days.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
    whole = compute_drift(baseline, target).to_dict()
    as_text = target.astype(str)
    chunked = compute_drift(baseline, (as_text.iloc[i:i + 1000] for i in range(0, len(as_text), 1000))).to_dict()
    assert chunked == whole
    assert [d["label"] for d in whole["days"]] == ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_empty_cells_are_missing_values_not_a_category():
    baseline = pd.DataFrame({"color": ["red", "blue"] * 50})
    target = pd.DataFrame({"color": ["red", "blue", ""] * 30})
    feature = compute_drift(baseline, target).overall.features[0]
    assert feature.rows == 60 and feature.values_distance == 0.0 and feature.psi == 0.0
    assert feature.missing_share == pytest.approx(1 / 3) and feature.baseline_missing_share == 0.0


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_a_feature_that_stops_arriving_has_drifted_whatever_its_other_values(kind):
    """An upstream change leaves a feature empty on half the rows, the values that still come unchanged: the
    values alone (PSI, KS, total variation) read "no drift"; the share without a value moved by 0.5."""
    rng = np.random.default_rng(2)
    draw = (lambda n: rng.normal(0, 1, n)) if kind == "numeric" else (lambda n: rng.choice(["a", "b", "c"], n))
    baseline = pd.DataFrame({"f": draw(4000), "g": draw(4000)})
    half = pd.Series(draw(2000)).astype(str).where(np.arange(2000) % 2 == 0, "")
    result = compute_drift(baseline, pd.DataFrame({"f": half, "g": pd.Series(draw(2000)).astype(str)}))
    f, g = result.overall.features
    assert f.values_distance < 0.1 and f.psi < 0.1  # the values that came are as in the baseline
    assert f.missing_share == 0.5 and f.distance == 0.5 and f.drifted
    assert g.missing_share == 0.0 and not g.drifted
    assert result.drifted and result.drifted_features == ["f"]


def test_missing_values_as_often_as_in_the_baseline_are_no_drift():
    rng = np.random.default_rng(4)
    values = rng.normal(0, 1, 4000)
    baseline = pd.DataFrame({"x": np.where(np.arange(4000) % 4 == 0, np.nan, values)})  # a quarter missing
    target = pd.DataFrame({"x": [("" if i % 4 == 0 else str(float(v))) for i, v in enumerate(rng.normal(0, 1, 2000))]})
    feature = compute_drift(baseline, target).overall.features[0]
    assert feature.baseline_missing_share == 0.25 and feature.missing_share == 0.25
    assert not feature.drifted and feature.distance == feature.values_distance


def test_a_feature_without_a_value_in_any_row_is_drift_not_nothing_compared():
    """Every row empty (a payload key renamed upstream) is the plainest drift there is; it used to be an error."""
    baseline = pd.DataFrame({"x": np.random.default_rng(1).normal(0, 1, 500), "color": ["a", "b"] * 250})
    target = pd.DataFrame({"x": [""] * 300, "color": ["a", "b", "a"] * 100,
                           "$aml_dc_scoring_timestamp": "2026-12-01T10:00:00Z"})
    result = compute_drift(baseline, target)
    x = result.overall.features[0]
    assert (x.rows, x.missing_share, x.distance, x.drifted) == (0, 1.0, 1.0, True)
    assert result.to_dict()["overall"]["features"][0]["psi"] is None  # JSON has no NaN
    assert result.drifted_features == ["x"]
    with pytest.raises(NothingCompared, match="no collected rows"):
        compute_drift(baseline, target.iloc[:0])


def test_chunks_of_files_with_other_headers_count_the_absent_feature_as_missing():
    """A day's data_1.csv lacks a column its data.csv has (the schema changed): the chunks differ. The feature is
    compared over all rows, whichever file comes first; it used to raise KeyError, or to be skipped as "not in the
    collected data" when the first file lacked it."""
    rng = np.random.default_rng(8)
    baseline = pd.DataFrame({"x": rng.normal(0, 1, 1000), "y": rng.normal(0, 1, 1000)})
    with_y = pd.DataFrame({"x": rng.normal(0, 1, 100), "y": rng.normal(0, 1, 100)}).astype(str)
    without_y = pd.DataFrame({"x": rng.normal(0, 1, 300)}).astype(str)
    for chunks in ([with_y, without_y], [without_y, with_y]):
        result = compute_drift(baseline, iter(chunks))
        x, y = result.overall.features  # in the baseline's order
        assert (x.rows, y.rows, y.missing_share) == (400, 100, 0.75) and y.drifted and not x.drifted
        assert not result.skipped_features


def test_an_identifier_column_is_not_compared_unless_named():
    """A customer id in the training data and in the inputs: every collected id is new, so compared as categories
    it would read as drift every day. Chosen automatically it is left out, and said; named, it is compared."""
    rng = np.random.default_rng(5)
    baseline = pd.DataFrame({"customer": [f"B{i}" for i in range(2000)], "amount": rng.normal(100, 10, 2000),
                             "channel": rng.choice([f"c{i}" for i in range(60)], 2000)})
    collected = pd.DataFrame({"customer": [f"C{i}" for i in range(3000)], "amount": rng.normal(100, 10, 3000),
                              "channel": rng.choice([f"c{i}" for i in range(60)], 3000),
                              "$aml_dc_scoring_timestamp": "2026-11-02T00:00:00Z"})
    result = compute_drift(baseline, collected)
    assert not result.drifted
    assert [f.feature for f in result.overall.features] == ["amount", "channel"]  # 60 categories: compared
    assert result.skipped_features["customer"].startswith(
        "an identifier or free text, not a distribution: 2,000 of its 2,000 baseline values are distinct")
    named = compute_drift(baseline, collected, features=["customer", "amount"])
    assert named.drifted and named.drifted_features == ["customer"] and not named.skipped_features
    with pytest.raises(NothingCompared) as nothing:
        compute_drift(baseline[["customer"]], collected)
    assert "not compared: customer (an identifier" in str(nothing.value)
    assert "differ only in case" not in str(nothing.value)


def test_nothing_compared_names_the_shared_column_without_values_and_no_false_case_hint():
    baseline = pd.DataFrame({"a": [np.nan] * 10})
    collected = pd.DataFrame({"a": [1.0, 2.0], "$aml_dc_scoring_timestamp": "2026-11-02T00:00:00Z"})
    with pytest.raises(NothingCompared) as nothing:
        compute_drift(baseline, collected)
    assert str(nothing.value).endswith("share no feature with values; not compared: a (no values in the baseline)")
