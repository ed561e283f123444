"""Real servers on loopback: uvicorn (FastAPI) and gunicorn (Flask), stopped with SIGTERM."""
import json
import signal
import time

import httpx
import pytest

from mdc_middleware.analysis import read_collected

from .conftest import PYTHON, free_port, start_server

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def send_traffic(port: int, requests: int) -> list:
    """Each request carries 1-3 rows; returns the rows sent, in order."""
    sent = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for i in range(requests):
            batch = ROWS[: 1 + i % 3]
            if i % 5 == 0:  # chunked transfer encoding: no content-length
                body = json.dumps({"data": batch}).encode()
                response = client.post("/score", content=iter([body[:7], body[7:]]),
                                       headers={"content-type": "application/json"})
            else:
                response = client.post("/score", json={"data": batch}, headers={"x-request-id": f"req-{i}"})
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(batch)
            sent.extend(batch)
    return sent


def stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output.decode()


def check_collected(data_dir, sent: list, requests: int) -> None:
    inputs = read_collected(data_dir, "inputs", as_text=True)
    predictions = read_collected(data_dir, "predictions", as_text=True)
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert len(inputs) == len(predictions) == len(sent)
    assert sorted(map(tuple, inputs[features].values.tolist())) == sorted(
        tuple(repr(v) for v in row) for row in sent)
    assert inputs["$aml_dc_correlation_id"].nunique() == requests
    merged = inputs.groupby("$aml_dc_correlation_id").size().sort_index()
    assert merged.equals(predictions.groupby("$aml_dc_correlation_id").size().sort_index())
    assert set(predictions["species"]) <= {"setosa", "versicolor", "virginica"}
    assert set(inputs["$aml_model_name"]) == {"iris"} and set(inputs["$aml_model_version"]) == {"1"}


@pytest.fixture
def server_env(data_dir):
    # A long flush interval: only the shutdown path can write the rows.
    return {"MDC_ENABLED": "true", "MDC_LOCAL_DIR": str(data_dir), "MDC_FLUSH_INTERVAL_SECONDS": "600"}


def use_encoder(server_env: dict, encoder: str) -> None:
    server_env["MDC_ENCODER"] = encoder
    if encoder == "process":
        server_env["MDC_DEBUG"] = "true"  # the helper's start is logged at DEBUG


def warm_up(port: int, encoder: str, workers: int) -> list:
    """With the encoder process: start each worker's helper and wait until it is up, so that the traffic
    after this goes through it. Returns the rows sent."""
    if encoder != "process":
        return []
    sent = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(workers * 4):  # connections are spread over the workers by the kernel
            client.post("/score", json={"data": ROWS[:1]}, headers={"connection": "close"})
            sent.extend(ROWS[:1])
    time.sleep(4)  # each helper starts (0.1 s idle; seconds on a busy CI machine)
    return sent


def check_helper_used(output: str, encoder: str, helpers: int) -> None:
    if encoder == "process":
        assert output.count("encoder process") >= helpers, output
        assert "encoder process failed" not in output, output


@pytest.mark.parametrize("encoder", ["thread", "process"])
def test_uvicorn_fastapi_sigterm_flushes_everything(data_dir, server_env, encoder):
    port = free_port()
    use_encoder(server_env, encoder)
    process = start_server([PYTHON, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
                            "--port", str(port)], server_env, port)
    try:
        sent = warm_up(port, encoder, 1)
        sent += send_traffic(port, 60)
    finally:
        output = stop(process)
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises SIGTERM after a clean stop
    assert "Application shutdown complete" in output
    check_helper_used(output, encoder, 1)
    check_collected(data_dir, sent, 60 + (4 if encoder == "process" else 0))


@pytest.mark.parametrize("preload,encoder", [(False, "thread"), (True, "thread"), (True, "process")])
def test_gunicorn_flask_workers_flush_at_exit(data_dir, server_env, preload, encoder):
    port = free_port()
    use_encoder(server_env, encoder)
    command = [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20",
               "examples.flask_app:app"]
    if preload:
        command.insert(3, "--preload")
    process = start_server(command, server_env, port)
    try:
        sent = warm_up(port, encoder, 2)
        sent += send_traffic(port, 40)
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    check_helper_used(output, encoder, 2)
    check_collected(data_dir, sent, 40 + (8 if encoder == "process" else 0))


def test_collect_without_the_middleware_is_flushed_when_uvicorn_stops(data_dir, server_env):
    # uvicorn ends a clean stop by raising SIGTERM again, so atexit never runs; the handler installed
    # at import is what flushes these rows (with MDC_SIGTERM_FLUSH=false this test fails).
    port = free_port()
    process = start_server([PYTHON, "-m", "uvicorn", "tests.apps.collector_app:app", "--host", "127.0.0.1",
                            "--port", str(port)], server_env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for i in range(25):
                assert client.post("/score", json={"data": [[i]]}).status_code == 200
    finally:
        output = stop(process)
    assert process.returncode in (0, -signal.SIGTERM), output
    inputs = read_collected(data_dir, "inputs", as_text=True)
    assert sorted(inputs["x"].astype(int)) == list(range(25))
