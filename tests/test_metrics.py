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


def test_counts_of_threads_that_ended_are_kept_in_one_set_never_lost_nor_counted_twice():
    """A server that starts a thread per request left one set of counters per request behind (and each
    snapshot summed them all). Snapshots taken while threads come and go must only ever grow."""
    import threading

    from mdc_middleware.metrics import Metrics

    metrics = Metrics()
    seen = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            snap = metrics.snapshot()
            seen.append((snap["rows_written"], snap["skipped"].get("x", 0)))

    def count():
        metrics.add("rows_written", 2)
        metrics.skip("x")

    watcher = threading.Thread(target=watch)
    watcher.start()
    for _ in range(50):
        threads = [threading.Thread(target=count) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    stop.set()
    watcher.join()
    snap = metrics.snapshot()
    assert (snap["rows_written"], snap["skipped"]) == (2000, {"x": 1000})
    rows, skips = [r for r, _ in seen], [x for _, x in seen]
    assert len(seen) > 1 and rows == sorted(rows) and skips == sorted(skips)  # never a count moved twice or lost
    assert rows[-1] <= 2000 and skips[-1] <= 1000
    assert len(metrics._shards) <= 21  # the live threads' own sets; not one per thread ever started


def test_workers_metrics_add_up_and_a_gone_workers_counters_are_folded_once(tmp_path):
    """The shared folder of a server's workers (mdc_middleware.worker_metrics): a live sibling's counters and
    gauges count; a sibling gone for a minute keeps its counters, folded into retired.json once, its gauges
    not; and the sum is the same before and after the fold."""
    import json
    import os
    import time

    from mdc_middleware.worker_metrics import RETIRE_AFTER, WorkerMetrics

    folder = tmp_path / "mdc-metrics-0-1"
    mine = {"rows_captured": 5, "queue_depth": 1, "skipped": {"status_422": 1}, "enabled": 1}
    shared = WorkerMetrics(folder, lambda: dict(mine), interval=3600)
    (folder / "101-aa.json").write_text(json.dumps({"rows_captured": 7, "queue_depth": 2, "enabled": 1}))
    gone = folder / "102-bb.json"
    gone.write_text(json.dumps({"rows_captured": 11, "queue_depth": 4, "skipped": {"status_422": 2}, "enabled": 1}))
    long_ago = time.time() - RETIRE_AFTER - 5
    os.utime(gone, (long_ago, long_ago))

    first = shared.combined()
    assert (first["rows_captured"], first["queue_depth"], first["skipped"], first["enabled"]) == (
        23, 3, {"status_422": 3}, 1)
    assert not gone.exists() and json.loads((folder / "retired.json").read_text())["rows_captured"] == 11
    again = shared.combined()
    assert (again["rows_captured"], again["queue_depth"], again["skipped"]) == (23, 3, {"status_422": 3})


def test_a_workers_sharing_is_set_up_off_the_request_path(tmp_path, monkeypatch):
    """The first request only starts the set-up (reading /proc, making the folder): it gets None, answers for its
    own worker, and a later request finds the shared metrics made."""
    import socket
    import tempfile
    import time

    from mdc_middleware import worker_metrics

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert worker_metrics.sharing(port, lambda: {"rows_captured": 1}) is None
        deadline = time.monotonic() + 10
        while worker_metrics.sharing(port, lambda: {}) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        shared = worker_metrics.sharing(port, lambda: {})
        assert shared is not None and shared.combined()["rows_captured"] == 1
        assert shared.folder.parent == tmp_path
    assert worker_metrics.sharing(1, lambda: {}) is None  # no such socket held: never shared
