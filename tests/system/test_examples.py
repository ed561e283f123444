"""The runnable examples, run as a user would (score.py, the apps and the AKS files have their own tests)."""
from __future__ import annotations

import json
import subprocess

import pandas as pd

from mdc_middleware.analysis import read_collected

from tests.helpers import PYTHON, ROOT


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_demo_serves_traffic_collects_it_and_reads_it_back(tmp_path):
    data, reports = tmp_path / "data", tmp_path / "reports"
    done = run("examples/demo.py", "--requests", "20", "--dir", str(data), "--report-dir", str(reports))
    assert done.returncode == 0, done.stdout + done.stderr
    sent = int(done.stdout.split("sent 20 requests with ")[1].split()[0])
    inputs = read_collected(data, "inputs")
    joined = pd.read_csv(reports / "joined.csv")
    assert len(inputs) == len(joined) == sent
    assert joined["species"].isin(["setosa", "versicolor", "virginica"]).all()
    summary = json.loads((reports / "drift.json").read_text())
    assert summary["overall"]["rows"] == sent
    assert (reports / "drift-report.html").read_text().count("data:image/png;base64,") == 3


def test_drift_week_alerts_on_the_days_that_drifted(tmp_path):
    done = run("examples/drift_week.py", "--dir", str(tmp_path))
    assert done.returncode == 3, done.stdout + done.stderr  # the CLI's drift exit code
    days = json.loads((tmp_path / "drift.json").read_text())["days"]
    assert [d["label"] for d in days] == [f"2026-11-{d}" for d in range(16, 23)]
    assert all(d["magnitude"] < 10 for d in days[:4]) and days[-1]["magnitude"] > 30
    assert (tmp_path / "report.html").exists()
