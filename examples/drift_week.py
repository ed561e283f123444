"""A week of collected inputs that drift from the training data, and the drift report for it.

    python examples/drift_week.py [--dir drift-week] [--report drift-week/report.html]

Days 1-4 look like training; from day 5 incomes rise and the app channel grows. Collection goes through
the real ModelDataCollector and local sink; only the clock is set to each day's noon. The README's
drift pictures come from this script.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mdc_middleware  # noqa: E402
from mdc_middleware import ModelDataCollector, Settings, collector  # noqa: E402
from mdc_middleware.cli import main as mdc  # noqa: E402

FIRST_DAY = dt.date(2026, 11, 16)


def customers(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({
        "income": rng.lognormal(10 + 2 * shift, 0.5, n).round(2),
        "age": rng.normal(40 - 8 * shift, 12, n).round(),
        "channel": rng.choice(["web", "app", "branch"], n, p=[0.5 - shift, 0.3 + shift, 0.2]),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="drift-week", help="where the week is collected")
    parser.add_argument("--report", help="HTML report path (default: <dir>/report.html)")
    args = parser.parse_args()
    data = Path(args.dir)
    rng = np.random.default_rng(3)
    shutil.rmtree(data / "collected", ignore_errors=True)  # a fresh week on every run
    data.mkdir(parents=True, exist_ok=True)
    customers(rng, 3000).to_csv(data / "train.csv", index=False)

    settings = Settings.from_env({}, enabled=True, local_dir=str(data / "collected"), flush_interval=60.0)
    inputs = ModelDataCollector("credit", designation="inputs", feature_names=["income", "age", "channel"],
                                settings=settings)
    real_clock = collector.time
    try:
        for i in range(7):
            day = FIRST_DAY + dt.timedelta(days=i)
            noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc).timestamp()
            collector.time = types.SimpleNamespace(time=lambda noon=noon: noon)
            inputs.collect(customers(rng, 800, shift=max(0, i - 3) * 0.15))
    finally:
        collector.time = real_clock
    mdc_middleware.shutdown(10)

    report = args.report or str(data / "report.html")
    mdc(["--data", str(data / "collected"), "drift", "--baseline", str(data / "train.csv"),
         "--html", report, "--json", str(data / "drift.json")])


if __name__ == "__main__":
    main()
