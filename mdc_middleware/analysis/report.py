"""A self-contained HTML drift report: tables and matplotlib figures embedded as PNG.

One file, no external assets, so it can be attached to a CI run or mailed as it is.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from .drift import DriftResult, FeatureDrift

_MAX_HISTOGRAMS = 12
_MAX_CATEGORIES = 15  # bars per categorical feature


def render_html(result: DriftResult, *, title: str = "Data drift report",
                about: Optional[Dict[str, str]] = None) -> str:
    """The report: the verdict and the drifted features first, what the numbers mean and what to do, then
    per-feature and per-day tables and figures. ``about``: what was compared (model, version, source, …),
    shown under the title with the time the report was made."""
    figures = [("Drift magnitude per day", _magnitude_figure(result)),
               ("PSI per feature and day", _psi_figure(result)),
               ("Distributions: baseline vs collected", _histograms(result))]
    drifted = result.drifted_features
    compared = result.compared_features
    facts = dict(about or {})
    if result.days:
        facts.setdefault("days", f"{result.days[0].label} to {result.days[-1].label} (UTC)")
    facts["rows"] = f"{result.overall.rows:,} collected, {result.baseline_rows:,} in the baseline"
    facts["generated"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if result.drifted:
        verdict = (f"<p class='verdict bad'>DRIFT: {len(drifted)} of {len(compared)} features drifted "
                   f"({_share(result)}), on the whole range or on a day.</p>"
                   f"<p>Drifted: <b>{html.escape(', '.join(drifted))}</b>. What to do: look at their distributions "
                   "below; if the change is real (new customers, a new season, an upstream change) rather than a "
                   "broken feed, retrain on recent collected data, or check the pipeline that feeds the model.</p>")
    else:
        verdict = (f"<p class='verdict good'>No drift: {len(drifted)} of {len(compared)} features drifted "
                   f"({_share(result)}).</p>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.drift{background:#fdd}"
        ".verdict{font-size:1.3em;font-weight:bold;padding:.4em .6em;border-radius:4px}"
        ".bad{background:#fdd;color:#900}.good{background:#dfd;color:#060}"
        "dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{color:#666}dd{margin:0}"
        "img{max-width:100%}.note{color:#555;font-size:.9em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items())
        + "</dl>",
        verdict,
        "<p class='note'>How to read it. <b>PSI</b> (population stability index) compares how the values fall "
        f"into the baseline's deciles: under 0.1 little change, 0.1–0.2 some, {result.psi_threshold:g} and more "
        "a significant shift. <b>KS</b> is the largest gap between the two cumulative distributions (0 to 1); "
        "its p-value is tiny for any difference once there are thousands of rows, so read the statistic. "
        "<b>Wasserstein</b> is how far values moved, in the feature's own units (normalised: in baseline "
        "standard deviations). <b>Distance</b> is KS for numbers and total variation for categories, 0 to 1, "
        "or the change in the share of rows <b>without a value</b> (baseline &rarr; collected) where that is larger: "
        "a feature that stops arriving has shifted too. The <b>magnitude</b> is 100 × their mean. A feature has "
        f"drifted when its PSI reaches "
        f"{result.psi_threshold:g} or its distance reaches {result.threshold / 100:g}; the data has drifted when "
        f"at least {result.drift_share:.0%} of the features have, or the magnitude reaches {result.threshold:g}, "
        "on the whole range or on any day.</p>",
        f"<h2>Features over the whole range (magnitude {result.overall.magnitude:.1f} / 100)</h2>",
        _feature_table(result.overall.features, result),
    ]
    if result.skipped_features:
        skipped = ", ".join(f"{html.escape(k)} ({html.escape(v)})" for k, v in result.skipped_features.items())
        parts.append(f"<p>Not compared: {skipped}</p>")
    parts.append("<h2>Per day</h2><table><tr><th>day</th><th>rows</th><th>features drifted</th>"
                 "<th>magnitude</th></tr>")
    for day in result.days:
        css = " class='drift'" if result.window_drifted(day) else ""
        parts.append(f"<tr{css}><td>{day.label}</td><td>{day.rows:,}</td>"
                     f"<td>{sum(f.drifted for f in day.features)} of {len(day.features)}</td>"
                     f"<td>{day.magnitude:.1f}</td></tr>")
    parts.append("</table>")
    for caption, png in figures:
        if png:
            parts.append(f"<h2>{caption}</h2><img alt='{caption}' src='data:image/png;base64,{png}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _share(result: DriftResult) -> str:
    return f"threshold: {result.drift_share:.0%} of the features, or magnitude {result.threshold:g}"


def _number(value: Optional[float]) -> str:
    """Readable: 0.4312, 1.02e-05 as 0.00001, p-values under 0.0001 as < 0.0001, large counts with separators."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 1e-4:
        return "&lt; 0.0001" if value > 0 else "&gt; -0.0001"
    return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.2f}"


def _because(feature: FeatureDrift, result: DriftResult) -> str:
    """Which test decided, as Evidently names its stat test per column."""
    reasons = []
    if feature.psi >= result.psi_threshold:
        reasons.append(f"PSI {_number(feature.psi)} &ge; {result.psi_threshold:g}")
    if 100 * feature.missing_moved >= result.threshold:
        what = "a number" if feature.kind == "numeric" else "a value"  # text where a number belongs counts too
        reasons.append(f"rows without {what} {_percent(feature.baseline_missing_share)} &rarr; "
                       f"{_percent(feature.missing_share)}")
    elif 100 * feature.distance >= result.threshold:
        reasons.append(f"distance {_number(feature.distance)} &ge; {result.threshold / 100:g}")
    return ", ".join(reasons) or f"PSI under {result.psi_threshold:g}"


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%" if value == 0 or value >= 0.01 else "&lt; 1%"


def _table_order(feature: FeatureDrift) -> tuple:
    """Drifted features first, then by PSI, highest first (a feature without a value in any row first of all):
    the table's order, and the plots'."""
    return (not feature.drifted, -feature.psi if np.isfinite(feature.psi) else -np.inf)


def _feature_table(features: List[FeatureDrift], result: DriftResult) -> str:
    numeric = any(f.kind == "numeric" for f in features)
    categorical = any(f.kind == "categorical" for f in features)
    head = ["feature", "kind", "rows", "drifted", "because", "PSI", "distance", "without a value"]
    if numeric:
        head += ["KS", "KS p", "Wasserstein", "Wasserstein (std)"]
    if categorical:
        head += ["chi²", "chi² p"]
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for f in sorted(features, key=_table_order):
        cells = [html.escape(f.feature), f.kind, f"{f.rows:,}", "yes" if f.drifted else "no", _because(f, result),
                 _number(f.psi), _number(f.distance),
                 f"{_percent(f.baseline_missing_share)} &rarr; {_percent(f.missing_share)}"]
        if numeric:
            cells += [_number(f.ks_statistic), _number(f.ks_pvalue), _number(f.wasserstein),
                      _number(f.wasserstein_normalized)]
        if categorical:
            cells += [_number(f.chi2_statistic), _number(f.chi2_pvalue)]
        css = " class='drift'" if f.drifted else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def _density(counts, edges: np.ndarray) -> np.ndarray:
    """Counts on the drift grid put into the plot's equal bins, each grid bin at the mean of its values."""
    filled = counts.counts > 0
    means = counts.sums[filled] / counts.counts[filled]
    which = np.clip(np.searchsorted(edges, means, side="right") - 1, 0, len(edges) - 2)
    totals = np.bincount(which, weights=counts.counts[filled], minlength=len(edges) - 1)
    return totals / max(totals.sum(), 1) / np.diff(edges)


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def _magnitude_figure(result: DriftResult) -> str:
    if not result.days:
        return ""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 3))
    labels = [d.label for d in result.days]
    values = [d.magnitude for d in result.days]
    colors = ["#d62728" if result.window_drifted(day) else "#1f77b4" for day in result.days]  # red: drifted
    axis.bar(labels, values, color=colors)
    axis.axhline(result.threshold, color="#d62728", linestyle="--", label=f"threshold {result.threshold:g}")
    axis.set_ylim(0, 100)
    axis.set_ylabel("drift magnitude (0-100)")
    axis.set_xlabel("day (UTC)")
    axis.legend(loc="upper left")
    axis.tick_params(axis="x", rotation=45)
    return _png(figure)


def _psi_figure(result: DriftResult) -> str:
    if not result.days:
        return ""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 3))
    names = [f.feature for f in result.overall.features]
    for name in names:
        series = [next((f.psi for f in day.features if f.feature == name), np.nan) for day in result.days]
        axis.plot([d.label for d in result.days], series, marker="o", label=name)
    axis.axhline(result.psi_threshold, color="#d62728", linestyle="--", linewidth=1,
                 label=f"drift at PSI {result.psi_threshold:g}")
    axis.set_ylabel("PSI")
    axis.set_xlabel("day (UTC)")
    axis.tick_params(axis="x", rotation=45)
    if len(names) <= 12:
        axis.legend(fontsize="small", ncol=2)
    return _png(figure)


def _histograms(result: DriftResult) -> str:
    """Each feature's distributions, drawn from the counts drift was computed from (``result.distributions``), in the
    order of the features' table."""
    features = sorted(result.overall.features, key=_table_order)[:_MAX_HISTOGRAMS]
    features = [f for f in features if f.feature in result.distributions and f.rows]  # values to draw
    if not features:
        return ""
    plt = _pyplot()
    columns = min(3, len(features))
    rows = -(-len(features) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for axis, feature in zip(axes.flat, features):
        profile, seen = result.distributions[feature.feature]
        if feature.kind == "numeric":
            low, high = min(profile.counts.low, seen.low), max(profile.counts.high, seen.high)
            edges = np.linspace(low, high, 31) if high > low else np.array([low - 0.5, high + 0.5])
            for counts, label in ((profile.counts, "baseline"), (seen, "collected")):
                axis.stairs(_density(counts, edges), edges, fill=True, alpha=0.5, label=label)
            x_label = feature.feature
        else:
            base = profile.counts / profile.counts.sum()
            table = pd.concat([base, seen / seen.sum()], axis=1, keys=["baseline", "collected"]).fillna(0)
            x_label = "category"
            if len(table) > _MAX_CATEGORIES:  # those that explain the drift, whichever side has them
                moved = (table["collected"] - table["baseline"]).abs()
                table = table.loc[moved.nlargest(_MAX_CATEGORIES).index]
                x_label = f"the {_MAX_CATEGORIES} of {len(moved)} categories whose share moved most"
            table.plot.bar(ax=axis, alpha=0.7)
        axis.set_title(f"{feature.feature}\nPSI {feature.psi:.2f}{' - drifted' if feature.drifted else ''}",
                       fontsize="small", color="#900" if feature.drifted else "#222")
        axis.set_xlabel(x_label, fontsize="x-small")
        axis.set_ylabel("density" if feature.kind == "numeric" else "share", fontsize="x-small")
        axis.legend(fontsize="x-small")
    for axis in list(axes.flat)[len(features):]:
        axis.set_visible(False)
    figure.tight_layout()
    return _png(figure)
