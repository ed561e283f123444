"""The Flask twin of echo_app: every request answered with its own body."""
from flask import Flask, Response, request

from mdc_middleware import WSGIDataCollectionMiddleware

app = Flask(__name__)
app.wsgi_app = WSGIDataCollectionMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, routes=["/echo", "/v2/*/models/{model}/*/predict", "GET /query"])


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT"])
@app.route("/<path:path>", methods=["GET", "POST", "PUT"])
def echo(path):
    return Response(request.get_data(), content_type=request.headers.get("content-type", "application/octet-stream"))
