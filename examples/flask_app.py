"""A Flask scoring service collected by the WSGI middleware.

    MDC_ENABLED=true gunicorn -w 2 examples.flask_app:app
"""
from __future__ import annotations

from flask import Flask, jsonify, request

from mdc_middleware import Schema, WSGIDataCollectionMiddleware

try:
    from examples.iris_model import FEATURES, class_names, load_model
except ImportError:
    from iris_model import FEATURES, class_names, load_model

app = Flask(__name__)
app.wsgi_app = WSGIDataCollectionMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,
    routes={"/score": Schema(inputs=FEATURES, predictions=["species"], model_name="iris", model_version="1")},
)


@app.get("/healthz")
def healthz():
    return jsonify(ok=True)


@app.post("/score")
def score():
    rows = request.get_json(force=True)["data"]
    names = class_names()
    return jsonify(predictions=[names[i] for i in load_model().predict(rows)])
