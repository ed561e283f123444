from fastapi import FastAPI, Request
from flask import Flask, jsonify
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from mdc_middleware import DataCollectionMiddleware, WSGIDataCollectionMiddleware


def parse(text: str) -> dict:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + ("" if not sample.labels else str(sorted(sample.labels.items())))
            values[key] = sample.value
    return values


def test_asgi_serves_prometheus_metrics_on_the_apps_port(settings):
    app = FastAPI()

    @app.post("/score")
    async def score(request: Request):
        try:
            rows = (await request.json())["data"]
        except ValueError:
            rows = []
        return {"predictions": [1 for _ in rows]}

    app.add_middleware(DataCollectionMiddleware, settings=settings.replace(metrics_path="/metrics"))
    with TestClient(app) as client:
        client.post("/score", json={"data": [[1], [2]]})
        client.post("/score", content=b"{bad", headers={"content-type": "application/json"})
        client.post("/score", json={"data": [[1]]})
        import mdc_middleware

        mdc_middleware.flush(5)
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    values = parse(response.text)
    assert values["mdc_rows_written_total"] == 6  # 3 input and 3 prediction rows of the two good requests
    assert values["mdc_requests_seen_total"] == 3
    assert values["mdc_skipped_total[('reason', 'inputs:invalid_json')]"] == 1
    assert values["mdc_skipped_total[('reason', 'predictions:empty')]"] == 1
    assert values["mdc_queue_depth"] == 0


def test_wsgi_serves_prometheus_metrics(settings):
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings.replace(metrics_path="/metrics"))
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert "mdc_rows_written_total" in parse(response.get_data(as_text=True))
