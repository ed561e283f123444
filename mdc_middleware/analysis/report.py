"""A self-contained HTML drift report: tables and matplotlib figures embedded as PNG.

One file, no external assets, so it can be attached to a CI run or mailed as it is.
"""
from __future__ import annotations

import base64
import html
import io
from typing import List, Optional

import numpy as np
import pandas as pd

from .drift import DriftResult, FeatureDrift

_MAX_HISTOGRAMS = 12


def render_html(result: DriftResult, baseline: pd.DataFrame, target: pd.DataFrame, *,
                title: str = "Data drift report") -> str:
    figures = [("Drift magnitude per day", _magnitude_figure(result)),
               ("PSI per feature and day", _psi_figure(result)),
               ("Distributions: baseline vs collected", _histograms(result, baseline, target))]
    verdict = "DRIFT" if result.drifted else "no drift"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}.drift{background:#fdd}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p><b>Overall drift magnitude: {result.overall.magnitude:.1f}</b> / 100 "
        f"(threshold {result.threshold:g}, on the whole range or any day): <b>{verdict}</b>. "
        f"Baseline {result.baseline_rows} rows, collected {result.overall.rows} rows over "
        f"{len(result.days)} day(s).</p>",
        "<h2>Features over the whole range</h2>",
        _feature_table(result.overall.features, result.psi_threshold),
    ]
    if result.skipped_features:
        skipped = ", ".join(f"{html.escape(k)} ({html.escape(v)})" for k, v in result.skipped_features.items())
        parts.append(f"<p>Not compared: {skipped}</p>")
    parts.append("<h2>Per day</h2><table><tr><th>day</th><th>rows</th><th>magnitude</th></tr>")
    for day in result.days:
        css = " class='drift'" if day.magnitude >= result.threshold else ""
        parts.append(f"<tr{css}><td>{day.label}</td><td>{day.rows}</td><td>{day.magnitude:.1f}</td></tr>")
    parts.append("</table>")
    for caption, png in figures:
        if png:
            parts.append(f"<h2>{caption}</h2><img alt='{caption}' src='data:image/png;base64,{png}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _feature_table(features: List[FeatureDrift], psi_threshold: float) -> str:
    def number(value: Optional[float]) -> str:
        return "" if value is None else f"{value:.4g}"

    rows = ["<table><tr><th>feature</th><th>kind</th><th>rows</th><th>PSI</th><th>KS</th><th>KS p</th>"
            "<th>chi²</th><th>chi² p</th><th>Wasserstein</th><th>distance</th></tr>"]
    for f in sorted(features, key=lambda f: -f.distance):
        css = " class='drift'" if f.psi >= psi_threshold else ""
        rows.append(f"<tr{css}><td>{html.escape(f.feature)}</td><td>{f.kind}</td><td>{f.rows}</td>"
                    f"<td>{number(f.psi)}</td><td>{number(f.ks_statistic)}</td><td>{number(f.ks_pvalue)}</td>"
                    f"<td>{number(f.chi2_statistic)}</td><td>{number(f.chi2_pvalue)}</td>"
                    f"<td>{number(f.wasserstein)}</td><td>{number(f.distance)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


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
    colors = ["#d62728" if v >= result.threshold else "#1f77b4" for v in values]
    axis.bar(labels, values, color=colors)
    axis.axhline(result.threshold, color="#d62728", linestyle="--", label=f"threshold {result.threshold:g}")
    axis.set_ylim(0, 100)
    axis.set_ylabel("drift magnitude")
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
    axis.axhline(result.psi_threshold, color="#d62728", linestyle="--", linewidth=1)
    axis.set_ylabel("PSI")
    axis.tick_params(axis="x", rotation=45)
    if len(names) <= 12:
        axis.legend(fontsize="small", ncol=2)
    return _png(figure)


def _histograms(result: DriftResult, baseline: pd.DataFrame, target: pd.DataFrame) -> str:
    features = sorted(result.overall.features, key=lambda f: -f.distance)[:_MAX_HISTOGRAMS]
    if not features:
        return ""
    plt = _pyplot()
    columns = min(3, len(features))
    rows = -(-len(features) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, feature in zip(axes.flat, features):
        if feature.kind == "numeric":
            base = pd.to_numeric(baseline[feature.feature], errors="coerce").dropna()
            seen = pd.to_numeric(target[feature.feature], errors="coerce").dropna()
            edges = np.histogram_bin_edges(np.concatenate([base, seen]), bins=30)
            axis.hist(base, bins=edges, density=True, alpha=0.5, label="baseline")
            axis.hist(seen, bins=edges, density=True, alpha=0.5, label="collected")
        else:
            base = baseline[feature.feature].dropna().astype(str).value_counts(normalize=True)
            seen = target[feature.feature].dropna().astype(str).value_counts(normalize=True)
            table = pd.concat([base, seen], axis=1, keys=["baseline", "collected"]).fillna(0).head(15)
            table.plot.bar(ax=axis, alpha=0.7)
        axis.set_title(f"{feature.feature} (PSI {feature.psi:.2f})", fontsize="small")
        axis.legend(fontsize="x-small")
    for axis in list(axes.flat)[len(features):]:
        axis.set_visible(False)
    return _png(figure)
