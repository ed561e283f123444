"""A score.py as Azure ML's docs write it, only the import line changed: two collectors, inputs and predictions.

Each row's first value is a unique id; the "model" returns it, so every prediction names its input.
"""
import json

import numpy

from mdc_middleware import ModelDataCollector  # was: from azureml.monitoring import ModelDataCollector


def init():
    global inputs_dc, prediction_dc
    inputs_dc = ModelDataCollector("best_model", designation="inputs", feature_names=["id", "x"])
    prediction_dc = ModelDataCollector("best_model", designation="predictions", feature_names=["prediction"])


def run(raw_data):
    data = numpy.array(json.loads(raw_data)["data"])
    result = data[:, 0].astype(int)
    inputs_dc.collect(data)
    prediction_dc.collect(result)
    return result.tolist()
