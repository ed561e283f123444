"""The scoring apps the throughput benchmark serves, chosen by environment variables.

BENCH_MODE:      off (no middleware) | on (mdc-middleware; MDC_* say where to) | basehttp (a typical
                 hand-written capture in starlette's BaseHTTPMiddleware, for contrast; FastAPI only) |
                 passthrough (a middleware that only wraps the body streams and keeps references: the
                 least any body capture in Python costs, for reference) | discard (mdc-middleware whose
                 captures are thrown away at the queue: what the request path alone costs) |
                 peer-aml (no middleware: azureml-ai-monitoring's Collector.collect() on a DataFrame of the
                 request and one of the response, in the handler, as its docs show; its worker posts to the
                 loopback sidecar stand-in at AZUREML_MDC_PORT) | peer-jsonlog (no middleware: inputs and
                 outputs as one JSON line through the logging module to a file, as BentoML logs them)
BENCH_ENDPOINT:  trivial (echo a count) | model (scikit-learn logistic regression on iris)
"""

import collections
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floor_collector import TeeInput  # noqa: E402  (this folder is on the path: the servers load this file from it)

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


def _peer_logger():
    """What a team collecting without us writes: a peer's collection of a request's inputs and outputs."""
    if MODE == "peer-aml":
        import pandas as pd
        from azureml.ai.monitoring import Collector

        logging.getLogger("mdc").setLevel(logging.CRITICAL)  # its worker logs every send
        inputs = Collector(name="model_inputs", on_error=lambda exc: None)
        outputs = Collector(name="model_outputs", on_error=lambda exc: None)

        def collect(rows, predictions):
            context = inputs.collect(pd.DataFrame(rows, columns=FEATURES))
            outputs.collect(pd.DataFrame({"species": predictions}), context)

        return collect
    if MODE == "peer-jsonlog":
        logger = logging.getLogger("bench.inference")
        handler = logging.FileHandler(os.environ.get("BENCH_LOG_FILE", os.devnull))
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        return lambda rows, predictions: logger.info(json.dumps({"inputs": rows, "outputs": predictions}))
    return None


FLOOR = None  # the floor mode's writer (floor_collector.py)


def _floor_put():
    """Where the floor middleware puts a capture: its writer's queue; for ``floor-discard`` (the request path
    alone) a bounded deque nobody reads, as the passthrough keeps its references."""
    global FLOOR
    from floor_collector import FloorWriter

    if MODE == "floor-discard":
        return collections.deque(maxlen=1000).append
    if FLOOR is None:
        FLOOR = FloorWriter(os.environ.get("MDC_LOCAL_DIR") or tempfile.mkdtemp(prefix="mdc-floor-"))
    return FLOOR.queue.append


def _discard_captures():
    from mdc_middleware.pipeline.writer import Writer

    Writer.submit = lambda self, item, rows=0, nbytes=0: True


def fastapi_app():
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    scorer = predict()
    peer = _peer_logger()
    app = FastAPI()

    @app.post("/score")
    async def score(request: Request):
        rows = json.loads(await request.body())["data"]
        predictions = scorer(rows)
        if peer is not None:
            peer(rows, predictions)
        return Response(json.dumps({"predictions": predictions}), media_type="application/json")

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    if MODE in ("on", "discard"):
        from mdc_middleware import DataCollectionMiddleware

        app.add_middleware(DataCollectionMiddleware, routes=_schema())
    elif MODE == "basehttp":
        app.add_middleware(_base_http_capture())
    elif MODE == "passthrough":
        app.add_middleware(_AsgiPassthrough)
    elif MODE in ("floor", "floor-discard"):
        from floor_collector import AsgiFloor

        app.add_middleware(AsgiFloor, routes=["/score"], put=_floor_put())
    return app


class _AsgiPassthrough:
    """Wraps receive and send, keeps references to the body chunks, and does nothing else."""

    def __init__(self, app):
        self.app = app
        self.kept = collections.deque(maxlen=1000)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request, response = [], []

        async def wrapped_receive():
            message = await receive()
            request.append(message.get("body", b""))
            return message

        async def wrapped_send(message):
            if message["type"] == "http.response.body":
                response.append(message.get("body", b""))
            await send(message)

        await self.app(scope, wrapped_receive, wrapped_send)
        self.kept.append((request, response))


class _WsgiPassthrough:
    """The WSGI counterpart: wraps wsgi.input and the response iterable, keeps references."""

    def __init__(self, app):
        self.app = app
        self.kept = collections.deque(maxlen=1000)

    def __call__(self, environ, start_response):
        request = []
        environ["wsgi.input"] = TeeInput(environ["wsgi.input"], request)
        return _TeeBody(self.app(environ, start_response), request, self.kept)


class _TeeBody:
    __slots__ = ("body", "request", "kept")

    def __init__(self, body, request, kept):
        self.body, self.request, self.kept = body, request, kept

    def __iter__(self):
        response = []
        for chunk in self.body:
            response.append(chunk)
            yield chunk
        self.kept.append((self.request, response))

    def close(self):
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def _base_http_capture():
    """What many teams write by hand: BaseHTTPMiddleware, buffer both bodies, collect() inline."""
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import Response

    from mdc_middleware import ModelDataCollector

    inputs = ModelDataCollector("iris", designation="inputs", feature_names=FEATURES, model_version="1")
    outputs = ModelDataCollector("iris", designation="predictions", feature_names=["species"], model_version="1")

    class Capture(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            if request.url.path != "/score":
                return await call_next(request)
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
    peer = _peer_logger()
    app = Flask(__name__)

    @app.post("/score")
    def score():
        rows = json.loads(request.get_data())["data"]
        predictions = scorer(rows)
        if peer is not None:
            peer(rows, predictions)
        return json.dumps({"predictions": predictions}), 200, {"content-type": "application/json"}

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    if MODE in ("on", "discard"):
        from mdc_middleware import WSGIDataCollectionMiddleware

        app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, routes=_schema())
    elif MODE == "passthrough":
        app.wsgi_app = _WsgiPassthrough(app.wsgi_app)
    elif MODE in ("floor", "floor-discard"):
        from floor_collector import WsgiFloor

        app.wsgi_app = WsgiFloor(app.wsgi_app, ["/score"], _floor_put())
    return app


if MODE == "discard":
    _discard_captures()
fastapi = fastapi_app() if os.environ.get("BENCH_STACK", "fastapi") == "fastapi" else None
flask = flask_app() if os.environ.get("BENCH_STACK") == "flask" else None
