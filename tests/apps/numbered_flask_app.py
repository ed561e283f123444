"""The Flask twin of numbered_app: every input row carries a unique id, every prediction echoes it."""
import os

from flask import Flask, jsonify, request

from mdc_middleware import Schema, WSGIDataCollectionMiddleware

app = Flask(__name__)
app.wsgi_app = WSGIDataCollectionMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, routes={"/score": Schema(inputs=["id", "thread", "x"], predictions=["id"], model_name="numbered")})


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/score")
def score():
    rows = request.get_json()["data"]
    response = jsonify({"predictions": [row[0] for row in rows]})
    response.headers["x-worker-pid"] = str(os.getpid())  # which worker answered: tests/system/test_process_death.py
    return response
