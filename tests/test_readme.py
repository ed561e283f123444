"""Every Python and shell snippet of the README runs as written: a snippet that fails fails the suite.

The snippets run in order, in a fresh folder, with collection on (``MDC_ENABLED``) into ``./mdc-data``. What a
snippet cannot run here is said per snippet: the two commands at the top (the demo and this very suite) run in
CI as they are, Spark's reading line is compiled only, and the Spark engine's snippet runs in tests/system/test_spark.py
(with its session).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mdc_middleware

from tests.helpers import ROOT

BLOCKS = re.findall(r"```(\w*)\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang == "bash"]


def snippet(start: str) -> str:
    (found,) = [code for code in PYTHON if code.lstrip().startswith(start)]
    return found


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MDC_ENABLED", "true")
    monkeypatch.setenv("MDC_LOCAL_DIR", str(tmp_path / "mdc-data"))
    return tmp_path


def run(code: str, namespace: dict = None) -> dict:
    namespace = {"__name__": "__main__"} if namespace is None else namespace  # as when run as a script
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_every_python_snippet_is_covered_below():
    starts = ["from fastapi import FastAPI", "from flask import Flask", "app.add_middleware(", "import json",
              "import datetime as dt", "spark.read", "from mdc_middleware.analysis.spark import"]
    assert len(PYTHON) == len(starts) and all(any(c.lstrip().startswith(s) for c in PYTHON) for s in starts)


def test_quickstarts_collect_what_they_serve(folder):
    from fastapi.testclient import TestClient

    fastapi_app = run(snippet("from fastapi import FastAPI"))["app"]
    with TestClient(fastapi_app) as client:
        assert client.post("/score", json={"data": [[5.1, 3.5, 1.4, 0.2]]}).json() == {"predictions": ["setosa"]}
    flask_app = run(snippet("from flask import Flask"))["app"]
    response = flask_app.test_client().post("/score", json={"data": [[6.0, 3.0, 4.5, 1.5]]})
    assert response.status_code == 200
    response.close()  # what a WSGI server does when the response is sent; the capture ends there
    placeholders = run(snippet("from fastapi import FastAPI"))
    run(snippet("app.add_middleware("), placeholders)
    with TestClient(placeholders["app"]) as client:
        client.post("/score", json={"data": [[1, 2, 3, 4]]})
    mdc_middleware.flush(10)
    rows = mdc_middleware.analysis.read_collected(folder / "mdc-data", "inputs", model="iris")
    assert len(rows) == 3


def test_score_py_runs_under_its_init_and_run(folder, monkeypatch):
    import joblib
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]]), [0, 1, 0, 1])
    joblib.dump(model, folder / "model.pkl")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(folder))
    score = run(snippet("import json"))
    score["init"]()
    assert score["run"]('{"data": [[0, 0, 0], [1, 1, 1]]}') == [0, 1]
    mdc_middleware.flush(10)
    assert len(mdc_middleware.analysis.read_collected(folder / "mdc-data", "predictions", model="best_model")) == 2


def collect_iris(folder: Path) -> None:
    collector = mdc_middleware.ModelDataCollector("iris", designation="inputs", model_version="1",
                                                  feature_names=["sepal_length", "sepal_width"])
    predictions = mdc_middleware.ModelDataCollector("iris", designation="predictions", model_version="1")
    labels = mdc_middleware.ModelDataCollector("iris", designation="labels", model_version="1")
    for i in range(30):
        ids = collector.collect([[5.0 + i / 10, 3.0]])
        predictions.collect(predictions.add_correlations(["setosa"], ids))
        labels.collect(labels.add_correlations(["setosa" if i % 3 else "versicolor"], ids))
    mdc_middleware.flush(10)
    pd.DataFrame({"sepal_length": np.linspace(4, 8, 50), "sepal_width": np.linspace(2, 4, 50)}).to_csv(
        folder / "train.csv", index=False)


def test_readback_and_dask_snippets_read_what_was_collected(folder):
    collect_iris(folder)
    readback = run(snippet("import datetime as dt"))
    assert len(readback["inputs"]) == 30 and len(readback["joined"]) == 30
    spark_and_dask = snippet("spark.read")
    compile(spark_and_dask, "README.md", "exec")  # Spark's line: no session here
    import dask.dataframe  # noqa: F401

    dask_line = next(line for line in spark_and_dask.splitlines() if line.startswith("dask."))
    frame = eval(dask_line, {"dask": sys.modules["dask"]}).compute()
    assert len(frame) == 30


def test_mdc_commands_run_as_written(folder):
    collect_iris(folder)
    (commands,) = [code for code in SHELL if code.lstrip().startswith("mdc ")]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for line in commands.splitlines():
        command = line.split("  #")[0].strip()
        try:  # "exec": the shell becomes the command, so the timeout stops mdc tail itself, not its shell
            result = subprocess.run("exec " + command, shell=True, cwd=folder, env=env, capture_output=True,
                                    text=True, timeout=5 if command.startswith("mdc tail") else 120)
        except subprocess.TimeoutExpired:
            assert command.startswith("mdc tail")  # follows until stopped, as the comment says
            continue
        expected = (0, 3) if command.startswith("mdc drift") else (0,)
        assert result.returncode in expected, (command, result.stderr)
    assert (folder / "joined.csv").exists() and (folder / "report.html").exists()
