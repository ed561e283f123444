"""A plain Flask app calling a score.py's collectors, without the middleware."""
from flask import Flask, jsonify, request

from mdc_middleware import ModelDataCollector

app = Flask(__name__)
inputs_dc = ModelDataCollector("plain", designation="inputs", feature_names=["id", "x"])
prediction_dc = ModelDataCollector("plain", designation="predictions", feature_names=["prediction"])


@app.post("/score")
def score():
    rows = request.get_json()["data"]
    inputs_dc.collect(rows)
    prediction_dc.collect([row[0] for row in rows])
    return jsonify([row[0] for row in rows])
