"""Analysis time and peak memory against rows: mdc's streaming commands, the same commands as they were before
(``--before``, a revision that read whole files into memory; run from a git worktree), and DuckDB and Polars
reading the same files, side by side in one run.

    .venv/bin/python benchmarks/bench_analysis.py [--rows 500000,2000000] [--engines mdc,before,duckdb,polars]
        [--spark]   # also mdc's Spark engine (local[2]); needs pyspark and a Java runtime

Each size is generated once into a temporary folder in the local sink's layout (a week of days, inputs of 1–3
rows a request, their predictions, a label for half of them), then each task runs in a fresh process whose peak
RSS is GNU time's (`/usr/bin/time`). DuckDB and Polars need ``pip install 'mdc-middleware[bench]'``; the tasks they do
here are the read to Parquet and the join (they have no drift or quality of their own).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import ROOT, table  # noqa: E402  (also puts the project on sys.path)

META = ["$aml_dc_correlation_id", "$aml_dc_scoring_timestamp", "$aml_dc_boundary", "$aml_workspace",
        "$aml_service_name", "$aml_model_name", "$aml_model_version", "$aml_request_id"]
FOLDER = "modeldata/modeldata/sub/rg/ws/svc/m/1/{designation}/2026/11/{day:02d}"
DAYS = 7


def generate(root: Path, rows: int, seed: int = 1) -> Path:
    """``rows`` input rows over DAYS days, with predictions and labels; returns the baseline's path."""
    rng = np.random.default_rng(seed)
    per_day = rows // DAYS
    made = 0
    for day in range(1, DAYS + 1):
        count = per_day if day < DAYS else rows - made
        made += count
        for start in range(0, count, 500_000):
            n = min(500_000, count - start)
            sizes = rng.integers(1, 4, n)  # rows per request
            request = np.repeat(np.arange(n), sizes)[:n] + (day * 10**8 + start)
            ids = pd.Series(request).map("{:012x}-0000-4000-8000-000000000000".format)
            stamps = pd.Series(pd.Timestamp(f"2026-11-{day:02d}", tz="UTC")
                               + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000, n)), unit="ms"))
            meta = pd.DataFrame({"$aml_dc_correlation_id": ids,
                                 "$aml_dc_scoring_timestamp": stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                 "$aml_dc_boundary": 1440, "$aml_workspace": "sub/rg/ws", "$aml_service_name": "svc",
                                 "$aml_model_name": "m", "$aml_model_version": "1", "$aml_request_id": ""})
            shift = 0.1 * day
            inputs = pd.DataFrame({"age": rng.integers(18, 90, n), "income": rng.lognormal(10 + shift, 0.5, n).round(2),
                                   "score": rng.normal(shift, 1, n).round(6),
                                   "state": rng.choice(["CA", "NY", "TX", "WA", "FL"], n)})
            score = (inputs["score"] > 0).astype(int)
            for designation, frame in (("inputs", inputs), ("predictions", pd.DataFrame({"approved": score})),
                                       ("labels", pd.DataFrame({"outcome": np.where(rng.random(n) < 0.8, score,
                                                                                    1 - score)}))):
                keep = slice(None) if designation != "labels" else (rng.random(n) < 0.5)
                folder = root / FOLDER.format(designation=designation, day=day)
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / "data.csv"
                pd.concat([frame, meta], axis=1)[keep].to_csv(path, mode="a", header=not path.exists(), index=False)
    rng2 = np.random.default_rng(seed + 1)
    baseline = root / "baseline.csv"
    pd.DataFrame({"age": rng2.integers(18, 90, 50_000), "income": rng2.lognormal(10, 0.5, 50_000).round(2),
                  "score": rng2.normal(0, 1, 50_000).round(6),
                  "state": rng2.choice(["CA", "NY", "TX", "WA", "FL"], 50_000)}).to_csv(baseline, index=False)
    return baseline


DUCKDB = """
import sys, duckdb
data, task, out = sys.argv[1:4]
con = duckdb.connect()
con.execute("SET memory_limit='400MB'")
con.execute("SET preserve_insertion_order=false")  # DuckDB's advice for large exports under a memory limit
con.execute(f"SET temp_directory='{out}.tmp'")
def files(designation):
    return f"'{data}/*/*/*/*/*/*/*/*/{designation}/*/*/*/data*.csv'"
if task == "read":
    con.execute(f"COPY (SELECT * FROM read_csv({files('inputs')}, union_by_name=true)) TO '{out}' (FORMAT parquet)")
elif task == "join":
    con.execute(f'''COPY (
      WITH i AS (SELECT *, row_number() OVER (PARTITION BY "$aml_dc_correlation_id") AS n
                 FROM read_csv({files('inputs')}, union_by_name=true, all_varchar=true)),
           p AS (SELECT approved, "$aml_dc_correlation_id" AS cid, row_number() OVER (PARTITION BY "$aml_dc_correlation_id") AS n
                 FROM read_csv({files('predictions')}, union_by_name=true, all_varchar=true))
      SELECT i.*, p.approved FROM i JOIN p ON i."$aml_dc_correlation_id" = p.cid AND i.n = p.n
    ) TO '{out}' (FORMAT csv)''')
"""

POLARS = """
import sys, polars as pl
data, task, out = sys.argv[1:4]
def scan(designation):
    return pl.scan_csv(f"{data}/modeldata/**/{designation}/**/data*.csv", infer_schema=False)
if task == "read":
    scan("inputs").sink_parquet(out)
elif task == "join":
    key = "$aml_dc_correlation_id"
    i = scan("inputs").with_columns(pl.int_range(pl.len()).over(key).alias("n"))
    p = scan("predictions").select(["approved", key]).with_columns(pl.int_range(pl.len()).over(key).alias("n"))
    i.join(p, on=[key, "n"]).sink_csv(out)
"""


def mdc(task: str, data: Path, baseline: Path, out: Path) -> list:
    base = [sys.executable, "-m", "mdc_middleware.cli", "--data", str(data)]
    return {"read": base + ["read", "inputs", "-o", str(out) + ".parquet"],
            "join": base + ["join", "-o", str(out) + ".csv"],
            "drift": base + ["drift", "--baseline", str(baseline), "--json", str(out) + ".json"],
            "quality": base + ["quality", "--json", str(out) + ".json"]}[task]


SPARK = """
import sys
from mdc_middleware.analysis.spark import drift_spark, join_spark, local_session, read_spark
data, task, out, baseline = sys.argv[1:5]
spark = local_session()
if task == "read":
    read_spark(spark, data, "inputs").write.mode("overwrite").parquet(out)
elif task == "join":
    join_spark(spark, data).frame.write.mode("overwrite").csv(out, header=True)
elif task == "drift":
    import pandas as pd
    drift_spark(spark, data, pd.read_csv(baseline))
spark.stop()
"""


def measure(command: list, root: Path = ROOT) -> tuple:
    """(seconds, peak RSS in MB) of one command run with ``root``'s package, or (None, None) when it failed.

    The peak is GNU time's ``%M`` of the command itself: a child's ru_maxrss read by this process would start
    from this process's own size at the fork."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as peak:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-o", peak.name, "-f", "%M", *command], cwd=root,
                              env=dict(os.environ, PYTHONPATH=str(root)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        seconds = time.perf_counter() - started
        if done.returncode not in (0, 3):  # 3: mdc drift found drift
            print(f"  failed: {' '.join(command[:6])}…: {done.stderr.decode()[-400:]}", file=sys.stderr)
            return None, None
        return seconds, int(peak.read().split()[-1]) / 1024


BEFORE = "98e2da9"  # the last revision that read whole files into memory for mdc read, join, drift and quality


def _worktree(revision: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="mdc-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), revision], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def main() -> None:
    if sys.argv[1:2] == ["--generate"]:  # in a process of its own: this one stays small
        generate(Path(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="500000,2000000")
    parser.add_argument("--engines", default="mdc,before,duckdb,polars")
    parser.add_argument("--before", default=BEFORE, help="the revision whose mdc runs as 'before' (from a git worktree)")
    parser.add_argument("--spark", action="store_true")
    args = parser.parse_args()
    engines = args.engines.split(",") + (["spark"] if args.spark else [])
    before = _worktree(args.before) if "before" in engines else None
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        work = Path(tempfile.mkdtemp(prefix="mdc-bench-analysis-"))
        try:
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--generate", str(work / "data"), str(rows)], check=True)
            baseline = work / "data" / "baseline.csv"
            size = sum(p.stat().st_size for p in (work / "data").rglob("data.csv")) / 1e6
            print(f"{rows:,} input rows: {size:,.0f} MB of CSV, made in {time.perf_counter() - started:.0f} s",
                  flush=True)
            for engine in engines:
                for task in ("read", "join", "drift", "quality"):
                    out = work / f"out-{engine}-{task}"
                    root = ROOT
                    if engine in ("mdc", "before"):
                        command = mdc(task, work / "data", baseline, out)
                        root = before if engine == "before" else ROOT
                    elif engine == "spark" and task != "quality":
                        command = [sys.executable, "-c", SPARK, str(work / "data"), task, str(out), str(baseline)]
                    elif engine in ("duckdb", "polars") and task in ("read", "join"):
                        script = {"duckdb": DUCKDB, "polars": POLARS}[engine]
                        command = [sys.executable, "-c", script, str(work / "data"), task, str(out)]
                    else:
                        continue
                    seconds, peak = measure(command, root)
                    results.append({"rows": f"{rows:,}", "engine": engine, "task": task,
                                    "seconds": "failed" if seconds is None else f"{seconds:.1f}",
                                    "peak RSS MB": "" if peak is None else f"{peak:.0f}"})
                    print(f"  {engine:10s} {task:8s} {results[-1]['seconds']:>7s} s {results[-1]['peak RSS MB']:>6s} MB",
                          flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if before is not None:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    print()
    columns = ["rows", "engine", "task", "seconds", "peak RSS MB"]
    print(table(columns, [[r[c] for c in columns] for r in results]))


if __name__ == "__main__":
    main()
