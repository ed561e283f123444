import asyncio
import contextvars
import gzip
import json
import os
import subprocess
import sys
import time
import weakref

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.testclient import TestClient

import mdc_middleware
from mdc_middleware import DataCollectionMiddleware, ModelDataCollector, Schema

from tests.helpers import rows

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def make_app(**middleware_kwargs) -> FastAPI:
    app = FastAPI()

    @app.post("/score")
    async def score(request: Request):
        body = await request.json()
        return {"predictions": [sum(r) for r in body["data"]]}

    @app.post("/echo")
    async def echo(request: Request):
        body = await request.body()
        return Response(body, media_type=request.headers.get("content-type", "application/octet-stream"))

    @app.post("/stream")
    async def stream(request: Request):
        body = await request.json()

        async def parts():
            yield b'{"predictions": ['
            for i, row in enumerate(body["data"]):
                yield (b"," if i else b"") + json.dumps(sum(row)).encode()
            yield b"]}"

        return StreamingResponse(parts(), media_type="application/json")

    @app.post("/fail")
    async def fail():
        return JSONResponse({"error": "bad"}, status_code=422)

    @app.post("/boom")
    async def boom():
        raise RuntimeError("app bug")

    @app.post("/explicit")
    async def explicit(request: Request):
        dc = ModelDataCollector("explicit", designation="inputs", settings=middleware_kwargs["settings"])
        correlations = dc.collect([[1, 2]])
        return {"result": [correlations["$aml_request_id"]]}

    if middleware_kwargs:
        app.add_middleware(DataCollectionMiddleware, **middleware_kwargs)
    return app


def same_response(a, b):
    assert a.status_code == b.status_code
    assert a.content == b.content
    strip = lambda r: [(k, v) for k, v in r.headers.multi_items() if k != "x-ms-request-id"]
    assert strip(a) == strip(b)


def test_routes_given_as_text_are_patterns_separated_by_commas(settings, data_dir):
    """As MDC_ROUTES reads them: routes="/score" used to be six one-letter routes, and nothing was collected."""
    app = make_app(settings=settings, routes="/score, /stream")
    with TestClient(app) as client:
        for path in ("/score", "/stream", "/echo"):
            client.post(path, json={"data": [[1, 2]]})
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["3", "3"]
    assert mdc_middleware.metrics()["requests_seen"] == 2


def test_a_schemas_model_version_may_be_a_number(settings, data_dir):
    app = make_app(settings=settings, routes={"/score": Schema(inputs=["a", "b"], model_name="m", model_version=7)})
    with TestClient(app) as client:
        client.post("/score", json={"data": [[1, 2]]})
    assert rows(data_dir, "inputs", model="m", version="7")[["a", "b"]].values.tolist() == [["1", "2"]]


def test_inputs_and_predictions_share_ids(settings, data_dir):
    app = make_app(settings=settings, routes={"/score": Schema(inputs=["a", "b"])})
    with TestClient(app) as client:
        response = client.post("/score", json={"data": [[1, 2], [3, 4]]}, headers={"x-request-id": "req-7"})
    assert response.json() == {"predictions": [3, 7]}
    assert response.headers["x-ms-request-id"] == "req-7"
    inputs, predictions = rows(data_dir, "inputs"), rows(data_dir, "predictions")
    assert inputs[["a", "b"]].values.tolist() == [["1", "2"], ["3", "4"]]
    assert predictions["prediction"].tolist() == ["3", "7"]
    assert set(inputs["$aml_request_id"]) == set(predictions["$aml_request_id"]) == {"req-7"}
    assert inputs["$aml_dc_correlation_id"].nunique() == 1
    assert set(inputs["$aml_dc_correlation_id"]) == set(predictions["$aml_dc_correlation_id"])


@pytest.mark.parametrize("path,kwargs", [
    ("/score", {"json": {"data": [[1, 2]]}}),
    ("/stream", {"json": {"data": [[1, 2], [5, 5]]}}),
    ("/echo", {"content": b"not json {", "headers": {"content-type": "application/json"}}),
    ("/echo", {"content": PNG, "headers": {"content-type": "image/png"}}),
    ("/echo", {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "application/json"}}),
    ("/fail", {"json": {}}),
    ("/score", {"content": b"", "headers": {"content-type": "application/json"}}),
])
def test_response_is_byte_identical_with_and_without_collection(settings, path, kwargs):
    with TestClient(make_app(), raise_server_exceptions=False) as plain, \
            TestClient(make_app(settings=settings), raise_server_exceptions=False) as collected:
        same_response(plain.post(path, **kwargs), collected.post(path, **kwargs))
    assert mdc_middleware.metrics()["internal_errors"] == 0


def test_streamed_response_is_collected(settings, data_dir):
    with TestClient(make_app(settings=settings)) as client:
        client.post("/stream", json={"data": [[1, 2], [5, 5]]})
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["3", "10"]


def test_app_exceptions_propagate_unchanged(settings):
    with TestClient(make_app(settings=settings)) as client:
        with pytest.raises(RuntimeError, match="app bug"):
            client.post("/boom", json={})


def test_failed_requests_are_counted_not_collected(settings, data_dir):
    with TestClient(make_app(settings=settings)) as client:
        client.post("/fail", json={"data": [[1]]})
    mdc_middleware.flush(5)
    assert not data_dir.exists()
    assert mdc_middleware.metrics()["skipped"] == {"status_422": 1}


def test_media_is_never_collected(settings, data_dir):
    with TestClient(make_app(settings=settings)) as client:
        client.post("/echo", content=PNG, headers={"content-type": "image/png"})
        client.post("/echo", content=PNG, headers={"content-type": "application/json"})  # PNG in disguise
        client.post("/echo", content=b"RIFF\x00\x00\x00\x00WAVEfmt ", headers={"content-type": "audio/wav"})
    mdc_middleware.flush(5)
    assert not data_dir.exists()
    skipped = mdc_middleware.metrics()["skipped"]
    assert skipped["inputs:media_content_type"] == 2 and skipped["predictions:media_content_type"] == 2
    assert skipped["inputs:media_magic_bytes"] == 1 and skipped["predictions:media_magic_bytes"] == 1


def test_multipart_media_parts_are_skipped_json_part_collected(settings, data_dir):
    with TestClient(make_app(settings=settings, routes=["/echo"])) as client:
        client.post("/echo", files={
            "photo": ("cat.png", PNG, "image/png"),
            "payload": ("payload.json", json.dumps({"data": [[1, 2]]}), "application/json"),
        })
    assert rows(data_dir, "inputs")[["feature_0", "feature_1"]].values.tolist() == [["1", "2"]]
    assert mdc_middleware.metrics()["skipped"]["inputs:media_multipart_part"] == 1


def test_base64_media_inside_json_is_blanked(settings, data_dir):
    image = "iVBORw0KGgo" + "A" * 100
    with TestClient(make_app(settings=settings, routes=["/echo"])) as client:
        client.post("/echo", json=[{"age": 3, "photo": image}])
    got = rows(data_dir, "inputs")
    assert got[["age", "photo"]].values.tolist() == [["3", ""]]
    assert image not in "".join(p.read_text() for p in data_dir.rglob("*.csv"))


def test_gzip_encoded_bodies_are_decoded(settings, data_dir):
    body = gzip.compress(json.dumps({"data": [[1, 2]]}).encode())
    with TestClient(make_app(settings=settings, routes=["/echo"])) as client:
        client.post("/echo", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert rows(data_dir, "inputs")[["feature_0", "feature_1"]].values.tolist() == [["1", "2"]]


def test_body_over_the_limit_is_passed_whole_but_not_kept(settings, data_dir):
    big = json.dumps({"data": [[i, i] for i in range(20_000)]}).encode()
    with TestClient(make_app(settings=settings.replace(max_body_bytes=10_000), routes=["/echo"])) as client:
        response = client.post("/echo", content=big, headers={"content-type": "application/json"})
    assert response.content == big
    mdc_middleware.flush(5)
    assert mdc_middleware.metrics()["skipped"]["inputs:body_too_large"] == 1


def test_unmatched_routes_and_disabled_collection_pass_through_untouched(settings, data_dir):
    with TestClient(make_app(settings=settings, routes=["/score"])) as client:
        response = client.post("/echo", content=b"{}", headers={"content-type": "application/json"})
    assert "x-ms-request-id" not in response.headers
    with TestClient(make_app(settings=settings.replace(enabled=False))) as client:
        response = client.post("/score", json={"data": [[1, 2]]})
    assert "x-ms-request-id" not in response.headers
    mdc_middleware.flush(5)
    assert not data_dir.exists()


def test_explicit_collect_inside_a_request_shares_its_request_id(settings, data_dir):
    with TestClient(make_app(settings=settings, routes=["/nothing"])) as client:
        client.post("/explicit", json={}, headers={"x-ms-request-id": "abc"})  # not captured: found in the scope
    with TestClient(make_app(settings=settings, routes=["/explicit"])) as client:
        response = client.post("/explicit", json={}, headers={"x-ms-request-id": "abc"})
    assert response.json() == {"result": ["abc"]}
    got = rows(data_dir, "inputs", model="explicit")
    assert got["$aml_request_id"].tolist() == ["abc", "abc"]


def test_chunked_request_body_across_many_messages(settings, data_dir):
    sent = []
    body = json.dumps({"data": [[1, 2], [3, 4]]}).encode()
    chunks = [body[i:i + 5] for i in range(0, len(body), 5)]

    async def app(scope, receive, send):
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"[1,", "more_body": True})
        await send({"type": "http.response.body", "body": b"2]"})

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    middleware = DataCollectionMiddleware(app, settings=settings)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(middleware(scope, receive, send))
    assert b"".join(m.get("body", b"") for m in sent) == b"[1,2]"
    assert rows(data_dir, "inputs")[["feature_0", "feature_1"]].values.tolist() == [["1", "2"], ["3", "4"]]
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["1", "2"]


def test_lifespan_shutdown_flushes(settings, data_dir):
    app = make_app(settings=settings.replace(flush_interval=600), routes=["/score"])
    with TestClient(app) as client:
        client.post("/score", json={"data": [[1, 2]]})
    # no explicit flush: leaving the client ran the lifespan shutdown
    assert len(list(data_dir.rglob("data.csv"))) == 2


def test_a_context_kept_after_the_request_does_not_keep_the_request(settings):
    # Servers copy the context into timers that outlive the request (uvicorn's keep-alive timer stays
    # in the event loop's heap after it is cancelled). A context holding the request kept every
    # request's objects alive for seconds, and the garbage collector's full passes stalled the server
    # for 50 ms at a time (p99 latency 30 ms in benchmarks/bench_http.py).
    kept_contexts, scope_markers = [], []

    class Marker:
        pass

    inner = make_app(settings=settings, routes=["/keep"])

    @inner.post("/keep")
    async def keep(request: Request):
        kept_contexts.append(contextvars.copy_context())  # what loop.call_later() does
        return {"ok": True}

    async def outer(scope, receive, send):
        if scope["type"] == "http":
            marker = Marker()
            scope_markers.append(weakref.ref(marker))
            scope = dict(scope, marker=marker)
        await inner(scope, receive, send)

    with TestClient(outer) as client:
        assert client.post("/keep", json={}).status_code == 200
    assert len(kept_contexts) == 1
    assert scope_markers[0]() is None, "the copied context keeps the request's scope alive"


def test_a_json_scoring_service_never_loads_pandas(tmp_path):
    """pandas costs every server process 75 MB and 0.2 s of start-up; capturing JSON has no use for it.
    (Read back in this process, where the tests already have it.)"""
    script = """
import sys
import time
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from mdc_middleware import DataCollectionMiddleware, Schema, ModelDataCollector

async def score(request):
    body = await request.json()
    ModelDataCollector("m", designation="signals", feature_names=["n"]).collect([[len(body["data"])]])
    return JSONResponse({"predictions": [sum(row) for row in body["data"]]})

app = Starlette(routes=[Route("/score", score, methods=["POST"])])
app.add_middleware(DataCollectionMiddleware, routes={"/score": Schema(inputs=["a", "b"], model_name="m")},
                   enabled=True, local_dir=sys.argv[1])
with TestClient(app) as client:  # its shutdown flushes
    assert client.post("/score", json={"data": [[1, 2.5], [3, 4]]}).json() == {"predictions": [3.5, 7]}
print(sorted(name for name in sys.modules if name.split(".")[0] in ("pandas", "pyarrow")))
"""
    env = dict(os.environ, MDC_ENABLED="true", MDC_LOCAL_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    inputs = rows(tmp_path, "inputs")
    assert inputs[["a", "b"]].values.tolist() == [["1", "2.5"], ["3", "4"]]
    assert rows(tmp_path, "predictions")["prediction"].tolist() == ["3.5", "7"]
    assert rows(tmp_path, "signals")["n"].tolist() == ["2"]


@pytest.mark.parametrize("configured", ["X-Request-Id", "x-request-id"])
def test_the_request_id_header_is_added_once_and_never_over_the_apps_own(settings, configured):
    """Header names match in any case: a name given as a keyword keeps the caller's spelling."""
    app = FastAPI()

    @app.post("/own")
    async def own():
        return JSONResponse({"predictions": [1]}, headers={"X-Request-Id": "app-own"})

    @app.post("/plain")
    async def plain():
        return {"predictions": [1]}

    app.add_middleware(DataCollectionMiddleware, settings=settings, request_id_header=configured)
    with TestClient(app) as client:
        answered_by_app = client.post("/own", json={"data": [[1]]})
        answered_by_us = client.post("/plain", json={"data": [[1]]}, headers={"x-request-id": "client-7"})
    assert answered_by_app.headers.get_list("x-request-id") == ["app-own"]
    assert answered_by_us.headers.get_list("x-request-id") == ["client-7"]


@pytest.mark.parametrize("own_id", [False, True], ids=["echoed", "apps-own-id"])
def test_response_headers_given_as_a_one_shot_iterable_reach_the_server_whole(settings, data_dir, own_id):
    """ASGI allows any iterable of headers. Looking through a generator for the content type used to use
    it up: the server then sent the response with no headers at all."""
    app_headers = [(b"content-type", b"application/json"), (b"x-model", b"iris")]
    if own_id:
        app_headers.append((b"x-ms-request-id", b"app-own"))

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": (h for h in app_headers)})
        await send({"type": "http.response.body", "body": b'{"predictions": [3]}'})

    async def receive():
        return {"type": "http.request", "body": b'{"data": [[1, 2]]}', "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    middleware = DataCollectionMiddleware(app, settings=settings)
    scope = {"type": "http", "method": "POST", "path": "/score", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(middleware(scope, receive, send))
    predictions = rows(data_dir, "predictions")
    assert predictions["prediction"].tolist() == ["3"]
    echoed = [] if own_id else [(b"x-ms-request-id", predictions["$aml_request_id"][0].encode())]
    assert [tuple(h) for h in sent[0]["headers"]] == app_headers + echoed
    assert mdc_middleware.metrics()["internal_errors"] == 0


def test_past_a_days_limit_of_column_sets_rows_are_written_as_json_in_one_more_file(settings, data_dir):
    """Without declared columns each payload names its own: a client that leaves out empty fields (or sends
    sparse features as keys) made a file per request, each opened by reading the headers of all before it."""
    from mdc_middleware.pipeline.writer import MAX_COLUMN_SETS

    app = make_app(settings=settings, routes=["/echo"])
    sent = [{"a": n, f"k{n}": f"v,{n}"} for n in range(MAX_COLUMN_SETS + 6)]
    with TestClient(app) as client:
        ids = [client.post("/echo", json={"data": [record]}).headers["x-ms-request-id"] for record in sent]
    inputs = rows(data_dir, "inputs")
    assert len(list((data_dir).rglob("inputs/**/*.csv"))) == MAX_COLUMN_SETS + 1
    by_id = inputs.set_index("$aml_request_id")
    for request_id, record in zip(ids, sent):
        row = by_id.loc[request_id]
        if row["$mdc_row_json"]:
            assert json.loads(row["$mdc_row_json"]) == {name: str(value) for name, value in record.items()}
        else:
            assert {name: row[name] for name in record} == {name: str(value) for name, value in record.items()}
    assert (inputs["$mdc_row_json"] != "").sum() == 6 == mdc_middleware.metrics()["rows_as_json"]


@pytest.mark.parametrize("media_type,skipped", [("text/csv", "predictions:body_sent_as_file"),
                                                 ("image/png", "predictions:media_content_type")])
def test_a_file_the_server_sends_itself_still_has_its_inputs_collected(settings, data_dir, tmp_path, media_type,
                                                                        skipped):
    """Starlette's FileResponse hands the server a path (ASGI's pathsend extension) where it is offered: the
    capture never saw its body end, counted the request as incomplete and lost its inputs."""
    from fastapi.responses import FileResponse

    served = tmp_path / "result"
    served.write_bytes(b"a,b\n1,2\n")
    app = FastAPI()

    @app.post("/score")
    async def score(request: Request):
        await request.json()
        return FileResponse(served, media_type=media_type)

    app.add_middleware(DataCollectionMiddleware, settings=settings, routes={"/score": Schema(inputs=["x", "y"])})
    sent = []

    async def receive():
        return {"type": "http.request", "body": b'{"data": [[1, 2]]}', "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/score", "raw_path": b"/score", "query_string": b"", "root_path": "", "server": ("x", 80),
             "headers": [(b"content-type", b"application/json")], "extensions": {"http.response.pathsend": {}}}
    asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    assert sent[1]["path"] == str(served)
    assert rows(data_dir, "inputs")[["x", "y"]].values.tolist() == [["1", "2"]]
    assert mdc_middleware.metrics()["skipped"] == {skipped: 1}


def test_a_collector_made_at_import_keeps_collecting_when_the_app_starts_again(settings, data_dir):
    """Each lifespan end retires the shared writer; a ModelDataCollector made once, at import, held on to the
    retired one, and in the app's next life (a second TestClient) its rows were dropped as writer_closed."""
    explicit = ModelDataCollector("explicit", designation="inputs", settings=settings)
    app = FastAPI()

    @app.post("/score")
    async def score():
        explicit.collect([[1]])
        return {"predictions": [1]}

    app.add_middleware(DataCollectionMiddleware, settings=settings, routes=["/score"])
    for _ in range(2):
        with TestClient(app) as client:
            client.post("/score", json={"data": [[1]]})
    assert len(rows(data_dir, "inputs", model="explicit")) == 2
    assert len(rows(data_dir, "predictions")) == 2
    assert mdc_middleware.metrics()["dropped_reasons"] == {}


def test_a_fault_of_ours_on_every_request_logs_one_traceback_not_one_per_request(settings, caplog, monkeypatch):
    """Counted every time, logged whole once, then at most once a minute with how many were held back."""
    from mdc_middleware.payloads import captured_request as capture
    from mdc_middleware import runtime

    def broken(self, chunk):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(capture.BoundedBody, "feed", broken)
    monkeypatch.setattr(runtime.repeated_tracebacks, "interval", 0.5)
    monkeypatch.setattr(runtime.repeated_tracebacks, "_last", {})  # whatever other tests logged before
    app = make_app(settings=settings, routes=["/score"])
    with TestClient(app) as client, caplog.at_level("ERROR", logger="mdc_middleware"):
        for _ in range(30):
            assert client.post("/score", json={"data": [[1, 2]]}).json() == {"predictions": [3]}
        time.sleep(0.6)
        client.post("/score", json={"data": [[1, 2]]})
    logged = [r for r in caplog.records if r.exc_info]  # two faults a request: the request body, the response
    assert [r.exc_info[0] for r in logged] == [RuntimeError, RuntimeError]
    assert "59 more like this" in logged[1].getMessage()
    assert mdc_middleware.metrics()["internal_errors"] == 62


def test_routes_match_below_where_the_app_is_mounted(settings, data_dir):
    """Starlette's Mount and uvicorn's --root-path give the whole path, with root_path in front: routes are
    declared as the app routes them. "/score" on an app mounted at /v1 collected nothing."""
    scoring = make_app(settings=settings.replace(metrics_path="/metrics"),
                       routes={"/score": Schema(inputs=["a", "b"], model_name="below"),
                               "/v2/echo": Schema(model_name="whole")})  # the whole path also matches
    app = FastAPI()
    app.mount("/v1", scoring)
    v2 = FastAPI()
    v2.mount("/v2", scoring)
    with TestClient(app) as client, TestClient(v2) as client2:
        assert client.post("/v1/score", json={"data": [[1, 2]]}).json() == {"predictions": [3]}
        assert client.post("/v1/echo", json={"data": [[7, 8]]}).status_code == 200  # no route declared
        assert client2.post("/v2/echo", json={"data": [[5, 6]]}).status_code == 200
        metrics = client.get("/v1/metrics")
    assert rows(data_dir, "inputs", model="below")[["a", "b"]].values.tolist() == [["1", "2"]]
    assert rows(data_dir, "inputs", model="whole")[["feature_0", "feature_1"]].values.tolist() == [["5", "6"]]
    assert metrics.status_code == 200 and "mdc_requests_seen_total 2" in metrics.text


def test_json_sent_with_curls_form_content_type_is_read_as_json(settings, data_dir):
    """curl -d sends application/x-www-form-urlencoded; apps that read the body as JSON serve it. It was
    written as one column named by the whole JSON text, with an empty cell."""
    app = make_app(settings=settings, routes={"/score": Schema(model_name="json"), "/echo": Schema(model_name="form")})
    form = {"content-type": "application/x-www-form-urlencoded"}
    with TestClient(app) as client:
        assert client.post("/score", content=b'{"data": [[1, 2]]}', headers=form).json() == {"predictions": [3]}
        assert client.post("/echo", content=b"a=3&b=4", headers=form).status_code == 200
    assert rows(data_dir, "inputs", model="json")[["feature_0", "feature_1"]].values.tolist() == [["1", "2"]]
    assert rows(data_dir, "inputs", model="form")[["a", "b"]].values.tolist() == [["3", "4"]]


def test_azure_ml_automl_and_designer_envelopes_are_collected(settings, data_dir):
    """Their endpoints take {"Inputs": ..., "GlobalParameters": ...} and answer {"Results": ...}: the
    capital letters made both "unknown_shape", and nothing was collected."""
    app = FastAPI()

    @app.post("/automl")
    async def automl(request: Request):
        rows_in = (await request.json())["Inputs"]["data"]
        return {"Results": [r["a"] * 2 for r in rows_in]}

    @app.post("/designer")
    async def designer(request: Request):
        rows_in = (await request.json())["Inputs"]["WebServiceInput0"]
        return {"Results": {"WebServiceOutput0": [{**r, "Scored Labels": r["a"] > 1} for r in rows_in]}}

    app.add_middleware(DataCollectionMiddleware, settings=settings,
                       routes={"/automl": Schema(model_name="automl"), "/designer": Schema(model_name="designer")})
    with TestClient(app) as client:
        client.post("/automl", json={"Inputs": {"data": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]},
                                     "GlobalParameters": {"method": "predict"}})
        client.post("/designer", json={"Inputs": {"WebServiceInput0": [{"a": 3}]}, "GlobalParameters": {}})
    assert rows(data_dir, "inputs", model="automl")[["a", "b"]].values.tolist() == [["1", "x"], ["2", "y"]]
    assert rows(data_dir, "predictions", model="automl")["prediction"].tolist() == ["2", "4"]
    assert rows(data_dir, "inputs", model="designer")["a"].tolist() == ["3"]
    assert rows(data_dir, "predictions", model="designer")[["a", "Scored Labels"]].values.tolist() == [["3", "True"]]
    assert mdc_middleware.metrics()["skipped"] == {}


def test_json_encoded_twice_is_read_for_what_it_holds(settings, data_dir):
    """A score.py ported into a route returns json.dumps(...), which FastAPI encodes again; clients post
    requests' json=json.dumps(...). Each side was one text cell holding the JSON."""
    app = FastAPI()

    @app.post("/score")
    async def score(request: Request):
        payload = json.loads(await request.body())
        payload = json.loads(payload) if isinstance(payload, str) else payload
        return json.dumps({"result": [sum(r) for r in payload["data"]]})

    app.add_middleware(DataCollectionMiddleware, settings=settings, routes={"/score": Schema(inputs=["a", "b"])})
    with TestClient(app) as client:
        assert client.post("/score", json=json.dumps({"data": [[1, 2]]})).json() == '{"result": [3]}'
        client.post("/score", json={"data": [[3, 4]]})
    assert rows(data_dir, "inputs")[["a", "b"]].values.tolist() == [["1", "2"], ["3", "4"]]
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["3", "7"]


def test_plain_text_that_is_not_json_is_one_value(settings, data_dir):
    """A text model takes raw text, and routes return a label as text: both were skipped as invalid_json."""
    from fastapi.responses import HTMLResponse, PlainTextResponse

    app = FastAPI()

    @app.post("/sentiment")
    async def sentiment(request: Request):
        text = (await request.body()).decode("utf-8", "replace")
        return PlainTextResponse("positive" if "love" in text else "negative")

    @app.post("/page")
    async def page():
        return HTMLResponse("<html><body>not a prediction</body></html>")

    app.add_middleware(DataCollectionMiddleware, settings=settings,
                       routes={"/sentiment": Schema(inputs=["text"], model_name="text"), "/page": Schema()})
    with TestClient(app) as client:
        client.post("/sentiment", content="I love it,\n\"really\"".encode(), headers={"content-type": "text/plain"})
        client.post("/sentiment", content="naïve".encode("latin-1"),
                    headers={"content-type": "text/plain; charset=latin-1"})
        client.post("/sentiment", content=b"\xff\xfe bad", headers={"content-type": "text/plain"})
        client.post("/page", content=b"x", headers={"content-type": "text/plain"})
    assert rows(data_dir, "inputs", model="text")["text"].tolist() == ["I love it,\n\"really\"", "naïve"]
    assert rows(data_dir, "predictions", model="text")["prediction"].tolist() == ["positive", "negative", "negative"]
    skipped = mdc_middleware.metrics()["skipped"]
    assert skipped["inputs:invalid_text"] == 1 and skipped["predictions:invalid_json"] == 1  # the markup


def test_json_lines_are_a_row_a_line(settings, data_dir):
    """Batch clients send, and streaming routes answer, one JSON value a line: it was invalid_json."""
    app = FastAPI()

    @app.post("/batch")
    async def batch(request: Request):
        records = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]

        async def lines():
            for record in records:
                yield json.dumps({"label": record["a"] > 1}).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    app.add_middleware(DataCollectionMiddleware, settings=settings, routes={"/batch": Schema()})
    with TestClient(app) as client:
        client.post("/batch", content=b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n\n',
                    headers={"content-type": "application/x-ndjson"})
    assert rows(data_dir, "inputs")[["a", "b"]].values.tolist() == [["1", "x"], ["2", "y"]]
    assert rows(data_dir, "predictions")["label"].tolist() == ["False", "True"]
    assert mdc_middleware.metrics()["skipped"] == {}


def test_a_route_with_the_model_in_its_path_files_each_models_rows_under_it(settings, data_dir, caplog,
                                                                            monkeypatch):
    """One route of a multi-model service: every model's rows went to one folder, columns mixed."""
    from mdc_middleware.capture import policy

    monkeypatch.setattr(policy, "MAX_MODELS_PER_ROUTE", 3)
    app = FastAPI()

    @app.post("/models/{model}/versions/{version}/predict")
    async def predict(model: str, version: str, request: Request):
        return {"predictions": [len(model) for _ in (await request.json())["data"]]}

    app.add_middleware(DataCollectionMiddleware, settings=settings,
                       routes={"/models/{model}/versions/{version}/predict": Schema()})
    with TestClient(app) as client:
        for model, version, row in [("iris", 1, [1, 2]), ("iris", 2, [3, 4]), ("wine", 1, [5, 6, 7]),
                                    ("iris", 1, [8, 9]), ("a%0Ab", 1, [0]), ("beer", 1, [0]), ("beer", 2, [0])]:
            response = client.post(f"/models/{model}/versions/{version}/predict", json={"data": [row]})
            assert response.status_code == 200
    assert rows(data_dir, "inputs", model="iris", version="1")[["feature_0", "feature_1"]].values.tolist() == [
        ["1", "2"], ["8", "9"]]
    assert rows(data_dir, "inputs", model="iris", version="2")["feature_0"].tolist() == ["3"]
    assert rows(data_dir, "predictions", model="wine", version="1")["prediction"].tolist() == ["4"]
    skipped = mdc_middleware.metrics()["skipped"]
    assert skipped == {"bad_model_in_path": 1, "too_many_models_in_path": 2}
    assert caplog.text.count("has named 3 models or versions in its paths") == 1


def test_a_get_route_collects_its_query_parameters(settings, data_dir):
    """GET /predict?x=1 is how many tutorials serve a model: the inputs were empty (body_not_read)."""
    app = FastAPI()

    @app.get("/predict")
    async def predict(sepal_length: float, species: str = ""):
        return {"prediction": sepal_length * 2}

    @app.post("/predict")
    async def predict_post(request: Request, version: int = 1):
        return {"prediction": (await request.json())["a"]}

    app.add_middleware(DataCollectionMiddleware, settings=settings, routes="GET|POST /predict")
    with TestClient(app) as client:
        assert client.get("/predict?sepal_length=5.1&species=a%20b").json() == {"prediction": 10.2}
        assert client.post("/predict?version=2", json={"a": 7}).json() == {"prediction": 7}  # the body is the inputs
    inputs = rows(data_dir, "inputs")
    assert inputs[["sepal_length", "species", "a"]].fillna("").values.tolist() == [["5.1", "a b", ""], ["", "", "7"]]
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["10.2", "7"]


def test_a_stream_of_server_sent_events_is_skipped_under_its_own_reason(settings, data_dir):
    """A model streaming tokens as server-sent events was counted as invalid_json, which reads as a fault."""
    app = FastAPI()

    @app.post("/generate")
    async def generate(request: Request):
        await request.body()

        async def events():
            for token in ("Hel", "lo"):
                yield f"data: {json.dumps({'token': token})}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    app.add_middleware(DataCollectionMiddleware, settings=settings, routes={"/generate": Schema()})
    with TestClient(app) as client:
        assert client.post("/generate", json={"data": [["prompt"]]}).text.count("data:") == 2
    assert rows(data_dir, "inputs")["feature"].tolist() == ["prompt"]
    assert mdc_middleware.metrics()["skipped"] == {"predictions:event_stream": 1}


def test_the_middleware_added_twice_collects_each_request_once(settings, data_dir, caplog, monkeypatch):
    """Every row was written twice, under two correlation ids; the inner middleware now passes the request
    through, says why once, and a request the outer one does not capture is still the inner one's."""
    from mdc_middleware import startup

    monkeypatch.setattr(startup, "_announced", set())  # said once per process: this test's process anew
    declared = Schema(inputs=["a", "b"])
    app = make_app(settings=settings, routes={"/score": declared, "/stream": declared})
    app.add_middleware(DataCollectionMiddleware, settings=settings, routes={"/score": declared})  # the outer one
    with TestClient(app) as client:
        for i in range(3):
            assert client.post("/score", json={"data": [[i, 1]]}).json() == {"predictions": [i + 1]}
        client.post("/stream", json={"data": [[5, 5]]})  # not the outer one's route: the inner one collects it
    inputs = rows(data_dir, "inputs")
    assert sorted(inputs["a"].tolist()) == ["0", "1", "2", "5"] and inputs["$aml_dc_correlation_id"].nunique() == 4
    assert sorted(rows(data_dir, "predictions")["prediction"].tolist()) == ["1", "10", "2", "3"]
    assert caplog.text.count("the inner one passes such requests through, so each is collected once") == 1
