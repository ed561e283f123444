import io
import json
import sys

import pytest
from flask import Flask, Response, jsonify, request, send_file, stream_with_context

import mdc_middleware
from mdc_middleware import ModelDataCollector, Schema, Settings, WSGIDataCollectionMiddleware

from tests.helpers import rows

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def make_app(**middleware_kwargs) -> Flask:
    app = Flask(__name__)

    @app.post("/score")
    def score():
        return jsonify(predictions=[sum(r) for r in request.get_json(force=True)["data"]])

    @app.post("/echo")
    def echo():
        return Response(request.get_data(), content_type=request.content_type)

    @app.post("/stream")
    def stream():
        data = request.get_json(force=True)["data"]

        def parts():
            yield b"["
            yield b",".join(json.dumps(sum(r)).encode() for r in data)
            yield b"]"

        return Response(stream_with_context(parts()), content_type="application/json")

    @app.post("/lines")
    def lines():
        return jsonify(result=[len(line) for line in request.stream])

    @app.post("/fail")
    def fail():
        return jsonify(error="bad"), 400

    @app.post("/explicit")
    def explicit():
        dc = ModelDataCollector("explicit", designation="inputs", settings=middleware_kwargs["settings"])
        return jsonify(result=[dc.collect([[1]])["$aml_request_id"]])

    if middleware_kwargs:
        app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, **middleware_kwargs)
    return app


def post(app, path, **kwargs):
    return app.test_client().post(path, buffered=True, **kwargs)


def test_routes_given_as_text_are_patterns_separated_by_commas(settings, data_dir):
    """As MDC_ROUTES reads them: routes="/score" used to be six one-letter routes, and nothing was collected."""
    app = make_app(settings=settings, routes="/score")
    for path in ("/score", "/echo"):
        post(app, path, json={"data": [[1, 2]]})
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["3"]
    assert mdc_middleware.metrics()["requests_seen"] == 1


def test_inputs_and_predictions_share_ids(settings, data_dir):
    app = make_app(settings=settings, routes={"/score": Schema(inputs=["a", "b"], predictions=["y"])})
    response = post(app, "/score", json={"data": [[1, 2], [3, 4]]}, headers={"X-Ms-Request-Id": "r-1"})
    assert response.get_json() == {"predictions": [3, 7]}
    assert response.headers["x-ms-request-id"] == "r-1"
    inputs, predictions = rows(data_dir, "inputs"), rows(data_dir, "predictions")
    assert inputs[["a", "b"]].values.tolist() == [["1", "2"], ["3", "4"]]
    assert predictions["y"].tolist() == ["3", "7"]
    assert set(inputs["$aml_dc_correlation_id"]) == set(predictions["$aml_dc_correlation_id"])
    assert set(predictions["$aml_request_id"]) == {"r-1"}


@pytest.mark.parametrize("path,kwargs", [
    ("/score", {"json": {"data": [[1, 2]]}}),
    ("/stream", {"json": {"data": [[1, 2], [3, 3]]}}),
    ("/echo", {"data": b"{not json", "content_type": "application/json"}),
    ("/echo", {"data": PNG, "content_type": "image/png"}),
    ("/fail", {"json": {}}),
    ("/lines", {"data": b"a\nbb\nccc", "content_type": "text/plain"}),
])
def test_response_is_byte_identical_with_and_without_collection(settings, path, kwargs):
    plain, collected = post(make_app(), path, **kwargs), post(make_app(settings=settings), path, **kwargs)
    assert (plain.status_code, plain.data) == (collected.status_code, collected.data)
    assert [h for h in plain.headers if h[0] != "x-ms-request-id"] == \
        [h for h in collected.headers if h[0] != "x-ms-request-id"]
    assert mdc_middleware.metrics()["internal_errors"] == 0


def test_streamed_response_collected(settings, data_dir):
    post(make_app(settings=settings), "/stream", json={"data": [[1, 2], [3, 3]]})
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["3", "6"]


def test_body_read_line_by_line_is_still_captured(settings, data_dir):
    body = json.dumps({"data": [[1, 2]]}).encode()
    response = post(make_app(settings=settings), "/lines", data=body, content_type="application/json")
    assert response.get_json() == {"result": [len(body)]}
    assert rows(data_dir, "predictions")["prediction"].tolist() == [str(len(body))]
    assert rows(data_dir, "inputs")[["feature_0", "feature_1"]].values.tolist() == [["1", "2"]]


def test_media_and_errors_are_not_collected(settings, data_dir):
    app = make_app(settings=settings)
    post(app, "/echo", data=PNG, content_type="image/png")
    post(app, "/echo", data=PNG, content_type="application/json")
    post(app, "/fail", json={"data": [[1]]})
    mdc_middleware.flush(5)
    assert not data_dir.exists()
    skipped = mdc_middleware.metrics()["skipped"]
    assert skipped["inputs:media_content_type"] == 1 and skipped["inputs:media_magic_bytes"] == 1
    assert skipped["status_400"] == 1


def test_explicit_collect_inside_a_request_shares_its_request_id(settings, data_dir):
    response = post(make_app(settings=settings, routes=["/explicit"]), "/explicit", json={},
                    headers={"x-request-id": "q-9"})
    assert response.get_json() == {"result": ["q-9"]}
    assert rows(data_dir, "inputs", model="explicit")["$aml_request_id"].tolist() == ["q-9"]


def _lazy_generator_app(environ, start_response):
    """A plain PEP 3333 generator: start_response runs only when the server asks for the first chunk."""
    data = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))["data"]
    start_response("200 OK", [("Content-Type", "application/json")])
    yield json.dumps({"predictions": [sum(r) for r in data]}).encode()


def _write_callable_app(environ, start_response):
    """The legacy style: the body goes out through the write() callable start_response returns."""
    data = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))["data"]
    write = start_response("200 OK", [("Content-Type", "application/json"), ("X-Ms-Request-Id", "app-own")])
    write(b'{"predictions": ')
    write(json.dumps([sum(r) for r in data]).encode())
    return [b"}"]


def _served(client, body: bytes):
    # Not buffered=True: werkzeug's buffered test responses leave out what went through write().
    response = client.post("/score", data=body, content_type="application/json")
    response.get_data()
    response.close()  # as a server does: the capture is queued here
    return response


@pytest.mark.parametrize("app", [_lazy_generator_app, _write_callable_app])
def test_plain_wsgi_apps_are_served_unchanged_and_collected(settings, data_dir, app):
    from wsgiref.validate import validator
    from werkzeug.test import Client

    body = json.dumps({"data": [[1, 2], [3, 4]]}).encode()
    plain = _served(Client(validator(app)), body)
    # The validator on the outside checks what the middleware hands the server; the inner one what it
    # hands the app.
    middleware = WSGIDataCollectionMiddleware(validator(app), settings=settings,
                                              routes={"/score": Schema(inputs=["a", "b"], predictions=["y"])})
    collected = _served(Client(validator(middleware)), body)
    assert (collected.status_code, collected.data) == (plain.status_code, plain.data)
    assert json.loads(collected.data) == {"predictions": [3, 7]}
    own_id = app is _write_callable_app  # the app set its own request-id header: it is left alone
    assert collected.headers.getlist("x-ms-request-id") == (["app-own"] if own_id else
                                                            [rows(data_dir, "predictions")["$aml_request_id"][0]])
    assert rows(data_dir, "inputs")[["a", "b"]].values.tolist() == [["1", "2"], ["3", "4"]]
    assert rows(data_dir, "predictions")["y"].tolist() == ["3", "7"]
    assert mdc_middleware.metrics()["internal_errors"] == 0


def test_response_headers_given_as_a_generator_reach_the_server_whole(settings, data_dir):
    """PEP 3333 asks for a list, but servers iterate whatever they are given. Looking through a generator
    for the content type used to use it up, and the server sent no headers."""
    from werkzeug.test import Client

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", (h for h in [("Content-Type", "application/json"), ("X-Model", "iris")]))
        return [b'{"predictions": [3]}']

    middleware = WSGIDataCollectionMiddleware(app, settings=settings, echo_request_id=False)
    response = _served(Client(middleware), b'{"data": [[1, 2]]}')
    assert response.headers.to_wsgi_list() == [("Content-Type", "application/json"), ("X-Model", "iris")]
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["3"]
    assert mdc_middleware.metrics()["internal_errors"] == 0


@pytest.mark.parametrize("configured", ["X-Request-Id", "x-request-id"])
def test_the_request_id_header_is_added_once_and_never_over_the_apps_own(settings, configured):
    """Header names match in any case: a name given as a keyword keeps the caller's spelling."""
    app = Flask(__name__)

    @app.post("/own")
    def own():
        return jsonify(predictions=[1]), 200, {"X-Request-Id": "app-own"}

    @app.post("/plain")
    def plain():
        return jsonify(predictions=[1])

    app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings, request_id_header=configured)
    answered_by_app = post(app, "/own", json={"data": [[1]]})
    answered_by_us = post(app, "/plain", json={"data": [[1]]}, headers={"X-Request-Id": "client-7"})
    assert answered_by_app.headers.getlist("x-request-id") == ["app-own"]
    assert answered_by_us.headers.getlist("x-request-id") == ["client-7"]


def test_a_media_response_is_handed_back_untouched_so_the_server_can_send_the_file(settings, data_dir, tmp_path):
    """A server sends a wsgi.file_wrapper with sendfile() only when it gets the wrapper itself back."""
    from werkzeug.wsgi import FileWrapper

    image = tmp_path / "mask.png"
    image.write_bytes(PNG)
    app = Flask(__name__)

    @app.post("/segment")
    def segment():
        request.get_json()
        return send_file(image, mimetype="image/png")

    middleware = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings, routes={"/segment": Schema()})
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/segment", "SERVER_NAME": "x", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": "16", "wsgi.input": io.BytesIO(b'{"data":[[1,2]]}'),
               "wsgi.errors": sys.stderr, "wsgi.file_wrapper": FileWrapper}
    started = []
    body = middleware(environ, lambda status, headers, exc_info=None: started.append(status))
    assert isinstance(body, FileWrapper) and started == ["200 OK"]
    assert b"".join(body) == PNG
    body.close()
    assert rows(data_dir, "inputs")[["feature_0", "feature_1"]].values.tolist() == [["1", "2"]]
    assert mdc_middleware.metrics()["skipped"] == {"predictions:media_content_type": 1}


def test_routes_match_below_where_the_app_is_mounted_and_with_the_mount(settings, data_dir):
    """PATH_INFO is below SCRIPT_NAME: routes match as the app routes them, or with the mount in front."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.test import Client

    scoring = make_app(settings=settings.replace(metrics_path="/metrics"),
                       routes={"/score": Schema(inputs=["a", "b"], model_name="below"),
                               "/v1/echo": Schema(model_name="whole")})
    client = Client(DispatcherMiddleware(Flask("root"), {"/v1": scoring}))
    assert client.post("/v1/score", buffered=True, json={"data": [[1, 2]]}).get_json() == {"predictions": [3]}
    assert client.post("/v1/echo", buffered=True, json={"data": [[5, 6]]}).status_code == 200
    assert client.post("/score", buffered=True, json={"data": [[7, 8]]}).status_code == 404  # the root app's, not ours
    metrics = client.get("/v1/metrics").get_data(as_text=True)
    assert rows(data_dir, "inputs", model="below")[["a", "b"]].values.tolist() == [["1", "2"]]
    assert rows(data_dir, "inputs", model="whole")[["feature_0", "feature_1"]].values.tolist() == [["5", "6"]]
    assert "mdc_requests_seen_total 2" in metrics


def test_a_label_returned_as_a_string_is_collected(settings, data_dir):
    """Flask sends a returned str as text/html: "0.87" was collected, "setosa" skipped as invalid_json."""
    app = Flask(__name__)

    @app.post("/score")
    def score():
        return "setosa" if request.get_json(force=True)["data"][0][0] < 5 else "0.87"

    app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings, routes={"/score": Schema()})
    for first in (4, 6):
        assert post(app, "/score", json={"data": [[first, 1]]}).status_code == 200
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["setosa", "0.87"]


def test_a_route_with_the_model_in_its_path_kserve_style(settings, data_dir):
    """KServe v1's /v1/models/<name>:predict, and a name outside ASCII (PATH_INFO carries its UTF-8 bytes)."""
    app = Flask(__name__)

    @app.post("/v1/models/<name>:predict")
    def predict(name):
        return jsonify(predictions=[len(name) for _ in request.get_json()["instances"]])

    app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings,
                                                routes={"/v1/models/{model}:predict": Schema(model_version="3")})
    for name in ("iris", "modèle"):
        assert post(app, f"/v1/models/{name}:predict", json={"instances": [[1, 2]]}).status_code == 200
    assert post(app, "/v1/models/iris/extra:predict", json={"instances": [[1, 2]]}).status_code == 404
    assert rows(data_dir, "inputs", model="iris", version="3")["feature_0"].tolist() == ["1"]
    assert rows(data_dir, "predictions", model="modèle", version="3")["prediction"].tolist() == ["6"]
    assert mdc_middleware.metrics()["requests_seen"] == 2


def test_a_get_route_collects_its_query_parameters(settings, data_dir, monkeypatch):
    monkeypatch.setenv("MDC_ROUTES", "GET /predict")
    app = Flask(__name__)

    @app.get("/predict")
    def predict():
        return jsonify(prediction=float(request.args["x"]) + 1)

    app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings.replace(
        routes=Settings.from_env().routes))
    assert app.test_client().get("/predict?x=1.5&name=caf%C3%A9", buffered=True).get_json() == {"prediction": 2.5}
    assert rows(data_dir, "inputs")[["x", "name"]].values.tolist() == [["1.5", "café"]]
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["2.5"]


def test_the_middleware_added_twice_collects_each_request_once(settings, data_dir):
    """Every row was written twice, under two correlation ids; the inner middleware passes the request through."""
    declared = Schema(inputs=["a", "b"], predictions=["y"])
    app = make_app(settings=settings, routes={"/score": declared})
    app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings,  # the outer one
                                                routes={"/score": declared, "/stream": declared})
    for i in range(3):
        assert post(app, "/score", json={"data": [[i, 1]]}).get_json() == {"predictions": [i + 1]}
    post(app, "/stream", json={"data": [[5, 5]]})  # the outer one's alone: collected once, by it
    inputs = rows(data_dir, "inputs")
    assert sorted(inputs["a"].tolist()) == ["0", "1", "2", "5"] and inputs["$aml_dc_correlation_id"].nunique() == 4
    assert sorted(rows(data_dir, "predictions")["y"].tolist()) == ["1", "10", "2", "3"]
