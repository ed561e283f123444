"""The Spark engine (PySpark, local mode) against the embedded one, on the same collected files."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

import mdc_middleware
from mdc_middleware import ModelDataCollector
from mdc_middleware.analysis import read_collected
from mdc_middleware.analysis.chunks import iter_chunks
from mdc_middleware.analysis.drift import compute_drift
from mdc_middleware.analysis.join import join_predictions

from tests.analysis.test_readback import DAYS, collect_on_days

pyspark = pytest.importorskip("pyspark")  # the dev extra has it; scripts/test.sh installs a Java runtime
if shutil.which("java") is None:
    pytest.skip("no Java runtime for PySpark (scripts/test.sh installs openjdk-17-jre-headless)",
                allow_module_level=True)
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.xdist_group("spark")]  # one Spark session


@pytest.fixture(scope="module")
def spark():
    from mdc_middleware.analysis.spark import local_session

    session = local_session("local[2]")
    yield session
    session.stop()


@pytest.fixture
def collected(settings, data_dir, monkeypatch):
    collect_on_days(settings, monkeypatch, requests_per_day=60)
    # A spooled batch replayed after a crash lands again later in the file: the first two records once more.
    [inputs_file] = [p for p in data_dir.rglob("data.csv") if "/inputs/" in p.as_posix()][:1]
    lines = inputs_file.read_text().splitlines(keepends=True)
    with open(inputs_file, "a") as out:
        out.writelines(lines[1:5])
    return data_dir


def test_spark_reads_the_rows_and_types_the_embedded_reader_does(spark, collected):
    from mdc_middleware.analysis.spark import read_spark

    embedded = read_collected(collected, "inputs")
    rows = read_spark(spark, str(collected), "inputs").toPandas()
    assert len(rows) == len(embedded) > 300
    assert list(rows.columns) == list(embedded.columns)
    assert rows["a"].dtype == "float64" and rows["b"].dtype == "int64" and pd.api.types.is_string_dtype(rows["city"])
    for column in ("a", "b", "city", "$aml_dc_correlation_id"):
        assert sorted(rows[column].astype(str)) == sorted(embedded[column].astype(str)), column
    assert set(rows["city"]) == {"Oslo", "Lima, Peru", 'say "hi"'}  # quoted commas and quotes read back
    stamps = pd.to_datetime(rows["$aml_dc_scoring_timestamp"]).dt.date
    assert sorted(set(stamps)) == DAYS


def test_spark_says_what_there_is_for_a_name_nowhere_in_the_data_and_refuses_a_missing_folder(spark, collected):
    from mdc_middleware.analysis.spark import read_spark

    with pytest.warns(UserWarning, match=f"no designation 'input' in {collected}; there is: inputs, predictions"):
        assert read_spark(spark, str(collected), "input") is None
    with pytest.warns(UserWarning, match="no model 'n' in .*; there is: m. Nothing read"):
        assert read_spark(spark, str(collected), "inputs", model="n") is None
    with pytest.raises(FileNotFoundError, match="no collected data folder at"):
        read_spark(spark, str(collected / "nope"), "inputs")


def test_spark_joins_and_removes_redeliveries_as_the_embedded_join_does(spark, collected):
    from mdc_middleware.analysis.spark import join_spark

    embedded = join_predictions(read_collected(collected, "inputs", as_text=True),
                                read_collected(collected, "predictions", as_text=True))
    joined = join_spark(spark, str(collected))
    rows = joined.frame.toPandas()
    assert (len(rows), joined.duplicates_removed, joined.unmatched_inputs, joined.unmatched_predictions) == (
        len(embedded.frame), embedded.duplicates_removed, embedded.unmatched_inputs, embedded.unmatched_predictions)
    assert embedded.duplicates_removed == 4
    key = ["$aml_dc_correlation_id", "a", "score"]
    assert sorted(map(tuple, rows[key].values.tolist())) == sorted(map(tuple, embedded.frame[key].values.tolist()))


def test_spark_drift_gives_the_embedded_statistics(spark, collected, settings):
    from mdc_middleware.analysis.spark import drift_spark

    # Today, rows without "city" (a file of another header) and some with an empty "b": rows without a value.
    later = ModelDataCollector("m", designation="inputs", feature_names=["a", "b"], settings=settings.replace(
        model_version="1"))
    later.collect([[0.1 * i, "" if i % 3 else i % 9] for i in range(30)])
    mdc_middleware.flush(10)
    rng = np.random.default_rng(1)
    baseline = pd.DataFrame({"a": rng.normal(0.5, 1, 2000).round(3), "b": rng.integers(0, 9, 2000),
                             "city": rng.choice(["Oslo", "Lima, Peru"], 2000)})
    embedded = compute_drift(baseline, (c.frame for c in iter_chunks(collected, "inputs", chunk_rows=100))).to_dict()
    counted = drift_spark(spark, str(collected), baseline).to_dict()
    assert [d["label"] for d in counted["days"]][:len(DAYS)] == [d.isoformat() for d in DAYS]
    today = {f["feature"]: f for f in counted["days"][-1]["features"]}
    assert today["city"]["missing_share"] == 1.0 and today["b"]["missing_share"] == pytest.approx(2 / 3)
    assert _close(counted, embedded)


def _close(left, right, tolerance=1e-9) -> bool:
    """Equal, numbers within ``tolerance`` (sums in another order differ in the last bits)."""
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_close(left[k], right[k], tolerance) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(_close(a, b, tolerance) for a, b in zip(left, right))
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=tolerance, abs_tol=tolerance)
    return left == right


def test_mdc_drift_on_spark_says_what_the_embedded_engine_says(collected, tmp_path):
    import json
    import subprocess
    import sys

    from tests.helpers import ROOT

    rng = np.random.default_rng(2)
    baseline = tmp_path / "baseline.csv"
    pd.DataFrame({"a": rng.normal(2, 1, 1000), "b": rng.integers(0, 9, 1000)}).to_csv(baseline, index=False)
    outputs = {}
    for engine in ("embedded", "spark"):
        done = subprocess.run([sys.executable, "-m", "mdc_middleware.cli", "--data", str(collected), "drift",
                               "--baseline", str(baseline), "--engine", engine, "--json", str(tmp_path / engine)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 3, done.stderr[-2000:]  # drifted: "a" moved by two standard deviations
        outputs[engine] = (json.loads((tmp_path / engine).read_text()), done.stdout.strip().splitlines()[-1])
    assert _close(outputs["spark"][0], outputs["embedded"][0])
    assert outputs["spark"][1] == outputs["embedded"][1] and outputs["spark"][1].startswith("DRIFT: 1 of 2")


def test_the_readme_spark_snippet_runs_as_written(spark, settings, data_dir, monkeypatch, tmp_path):
    from ..test_readme import run, snippet

    collect_on_days(settings, monkeypatch, requests_per_day=10, model="iris")
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"a": np.random.default_rng(0).normal(size=200), "b": np.arange(200) % 9}).to_csv("train.csv",
                                                                                                   index=False)
    code = snippet("from mdc_middleware.analysis.spark import")
    here = "path = " + repr(str(data_dir))
    code = "\n".join(here if line.startswith("path = ") else line for line in code.splitlines())
    done = run(code, {"spark": spark, "pd": pd})
    assert done["inputs"].count() == len(read_collected(data_dir, "inputs", model="iris")) > 0
    assert done["joined"].matched == done["inputs"].count()
    assert done["result"].compared_features == ["a", "b"]


def test_a_header_read_through_hadoop_is_the_one_read_from_disk(spark, collected):
    """Files on wasbs:// or abfss:// are opened through the cluster's Hadoop file system: file:// takes that way."""
    from mdc_middleware.analysis.spark import _header, data_files

    name = data_files(spark, str(collected), "inputs")[0]
    assert _header(spark, "file://" + name) == _header(spark, name)
    assert _header(spark, name).split("\x1f")[:3] == ["a", "b", "city"]


def test_spark_reads_and_counts_neutralised_text_as_collected(spark, settings, data_dir):
    """Text written "'-" (formula neutralising) is "-" in Spark's rows and categories, as in the embedded engine."""
    import mdc_middleware
    from mdc_middleware import ModelDataCollector
    from mdc_middleware.analysis.spark import drift_spark, read_spark

    sent = ["-", "+1 sale", "store", "'=x"] * 50
    collector = ModelDataCollector("m", designation="inputs", feature_names=["channel"], settings=settings)
    collector.collect([[value] for value in sent])
    assert mdc_middleware.flush(10)
    assert read_spark(spark, str(data_dir), "inputs").toPandas()["channel"].tolist() == sent
    baseline = pd.DataFrame({"channel": sent})
    counted = drift_spark(spark, str(data_dir), baseline).to_dict()
    embedded = compute_drift(baseline, read_collected(data_dir, "inputs")).to_dict()
    assert _close(counted, embedded) and not counted["drifted"]
