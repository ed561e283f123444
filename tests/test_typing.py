"""The package ships py.typed: what the README shows must pass a type checker, as users will run one on it."""
import os
import subprocess
import sys

from tests.helpers import ROOT

README_USAGE = '''
import datetime as dt

import numpy as np
import pandas as pd
from fastapi import FastAPI
from flask import Flask

import mdc_middleware
from mdc_middleware import (DataCollectionMiddleware, ModelDataCollector, Schema, Settings, WSGIDataCollectionMiddleware)
from mdc_middleware.analysis import open_source, read_collected
from mdc_middleware.analysis.join import join_predictions

app = FastAPI()
app.add_middleware(
    DataCollectionMiddleware,
    routes={"/score": Schema(inputs=["sepal_length", "sepal_width", "petal_length", "petal_width"],
                             predictions=["species"], model_name="iris", model_version="1")},
)
app.add_middleware(DataCollectionMiddleware, routes=["/v2/*"], settings=Settings.from_env(), batch_rows=500)

flask_app = Flask(__name__)
flask_app.wsgi_app = WSGIDataCollectionMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, routes={"/score": Schema(model_name="iris")})

inputs_dc = ModelDataCollector("best_model", designation="inputs", feature_names=["f1", "f2"], model_version=3)
correlations = inputs_dc.collect(np.array([[1.0, 2.0]]))
labels = inputs_dc.add_correlations(pd.DataFrame({"y": [1]}), correlations)
flushed: bool = mdc_middleware.flush(10)

source = open_source()
inputs = read_collected(source, "inputs", model="iris", start=dt.date(2026, 11, 1), end="2026-11-30")
joined = join_predictions(inputs, read_collected(source, "predictions", model="iris")).frame
'''


def test_the_readmes_usage_passes_mypy_strict(tmp_path):
    """``app.add_middleware(DataCollectionMiddleware, ...)`` failed: with ``**overrides`` beside it, ``app`` has
    to be positional-only for Starlette's middleware factory type to match."""
    script = tmp_path / "usage.py"
    script.write_text(README_USAGE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--ignore-missing-imports",
         "--cache-dir", str(tmp_path / "cache"), str(script)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, MYPYPATH=str(ROOT)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
