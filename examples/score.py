"""An Azure ML score.py, unchanged except for the import line.

Before: from azureml.monitoring import ModelDataCollector
"""
import json

import numpy

from mdc_middleware import ModelDataCollector

try:
    from examples.iris_model import FEATURES, load_model
except ImportError:
    from iris_model import FEATURES, load_model


def init():
    global model, inputs_dc, prediction_dc
    model = load_model()
    inputs_dc = ModelDataCollector("iris", designation="inputs", feature_names=FEATURES)
    prediction_dc = ModelDataCollector("iris", designation="predictions", feature_names=["prediction"])


def run(raw_data):
    try:
        data = json.loads(raw_data)["data"]
        data = numpy.array(data)
        result = model.predict(data)
        inputs_dc.collect(data)  # this call is saving our input data into Azure Blob
        prediction_dc.collect(result)  # this call is saving our prediction data into Azure Blob
        return result.tolist()
    except Exception as e:
        error = str(e)
        return error
