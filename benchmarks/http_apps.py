"""The scoring apps the throughput benchmark serves, chosen by environment variables.

BENCH_MODE:      off (no middleware) | on (mdc-middleware; MDC_* say where to) | basehttp (a typical
                 hand-written capture in starlette's BaseHTTPMiddleware, for contrast; FastAPI only)
BENCH_ENDPOINT:  trivial (echo a count) | model (scikit-learn logistic regression on iris)
"""

import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODE = os.environ.get("BENCH_MODE", "off")
ENDPOINT = os.environ.get("BENCH_ENDPOINT", "trivial")
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def predict():
    if ENDPOINT == "trivial":
        return lambda rows: [len(row) for row in rows]
    from examples.iris_model import load_model

    model = load_model()
    return lambda rows: model.predict(rows).tolist()


def _schema():
    from mdc_middleware import Schema

    return {"/score": Schema(inputs=FEATURES, predictions=["species"], model_name="iris", model_version="1")}


def fastapi_app():
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    scorer = predict()
    app = FastAPI()

    @app.post("/score")
    async def score(request: Request):
        rows = json.loads(await request.body())["data"]
        return Response(json.dumps({"predictions": scorer(rows)}), media_type="application/json")

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    if MODE == "on":
        from mdc_middleware import DataCollectionMiddleware

        app.add_middleware(DataCollectionMiddleware, routes=_schema())
    elif MODE == "basehttp":
        app.add_middleware(_base_http_capture())
    return app


def _base_http_capture():
    """What many teams write by hand: BaseHTTPMiddleware, buffer both bodies, collect() inline."""
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import Response

    from mdc_middleware import ModelDataCollector

    inputs = ModelDataCollector("iris", designation="inputs", feature_names=FEATURES, model_version="1")
    outputs = ModelDataCollector("iris", designation="predictions", feature_names=["species"], model_version="1")

    class Capture(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            body = await request.body()
            response = await call_next(request)
            chunks = [chunk async for chunk in response.body_iterator]
            content = b"".join(chunks)
            try:  # as in an Azure ML score.py: two collect() calls, parsing on the request path
                inputs.collect(json.loads(body)["data"])
                outputs.collect(json.loads(content)["predictions"])
            except Exception:
                logging.getLogger("bench").exception("hand-written capture failed")
            return Response(content, status_code=response.status_code, headers=dict(response.headers),
                            media_type=response.media_type)

    return Capture


def flask_app():
    from flask import Flask, request

    scorer = predict()
    app = Flask(__name__)

    @app.post("/score")
    def score():
        rows = json.loads(request.get_data())["data"]
        return json.dumps({"predictions": scorer(rows)}), 200, {"content-type": "application/json"}

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    if MODE == "on":
        from mdc_middleware import WSGIDataCollectionMiddleware

        app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, routes=_schema())
    return app


fastapi = fastapi_app() if os.environ.get("BENCH_STACK", "fastapi") == "fastapi" else None
flask = flask_app() if os.environ.get("BENCH_STACK") == "flask" else None
