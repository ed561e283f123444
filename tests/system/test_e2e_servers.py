"""Real servers on loopback: uvicorn (FastAPI) and gunicorn (Flask), stopped with SIGTERM."""
import json
import re
import signal
import time

import httpx
import pytest

from mdc_middleware.analysis import read_collected

from tests.helpers import PYTHON, free_port, start_server

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def send_traffic(port: int, requests: int, chunked: bool = True) -> list:
    """Each request carries 1-3 rows, every fifth without a content-length (chunked) unless ``chunked`` is
    False; returns the rows sent, in order."""
    sent = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for i in range(requests):
            batch = ROWS[: 1 + i % 3]
            if chunked and i % 5 == 0:  # chunked transfer encoding: no content-length
                body = json.dumps({"data": batch}).encode()
                response = client.post("/score", content=iter([body[:7], body[7:]]),
                                       headers={"content-type": "application/json"})
            else:
                response = client.post("/score", json={"data": batch}, headers={"x-request-id": f"req-{i}"})
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(batch)
            sent.extend(batch)
    return sent


def stop(process, log=None) -> str:
    """SIGTERM, and the server's output once it has exited (from its pipe, or from ``log``)."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return log.read_text() if log is not None else output.decode()


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
def server_log(tmp_path):
    """Where the server writes its output: a file, readable while it runs."""
    path = tmp_path / "server.log"
    with path.open("wb") as file:
        yield path, file


@pytest.fixture
def server_env(data_dir):
    # A long flush interval: only the shutdown path can write the rows.
    return {"MDC_ENABLED": "true", "MDC_LOCAL_DIR": str(data_dir), "MDC_FLUSH_INTERVAL_SECONDS": "600"}


def use_encoder(server_env: dict, encoder: str) -> None:
    server_env["MDC_ENCODER"] = encoder
    if encoder == "process":
        server_env["MDC_DEBUG"] = "true"  # the helper's start is logged at DEBUG


HELPER_READY = re.compile(r"encoder process (\d+) ready")


def warm_up(port: int, encoder: str, workers: int, log) -> list:
    """With the encoder process: send requests until every worker has logged its helper ready, so that the
    traffic after this goes through them (0.1 s when the machine is idle, seconds on a busy CI machine; a
    worker notices its helper when it has rows to encode). Returns the rows sent."""
    if encoder != "process":
        return []
    sent = []
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while len(set(HELPER_READY.findall(log.read_text()))) < workers:
            assert time.monotonic() < deadline, log.read_text()
            # A new connection each time: the kernel spreads them over the workers.
            assert client.post("/score", json={"data": ROWS[:1]}, headers={"connection": "close"}).status_code == 200
            sent.extend(ROWS[:1])
            time.sleep(0.05)
    return sent


def check_helper_used(output: str, encoder: str, helpers: int) -> None:
    if encoder == "process":
        assert output.count("encoder process") >= helpers, output
        assert "encoder process failed" not in output, output


@pytest.mark.parametrize("encoder", ["thread", "process"])
def test_uvicorn_fastapi_sigterm_flushes_everything(data_dir, server_env, server_log, encoder):
    port = free_port()
    use_encoder(server_env, encoder)
    log, log_file = server_log
    process = start_server([PYTHON, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
                            "--port", str(port)], server_env, port, output=log_file)
    try:
        warm = warm_up(port, encoder, 1, log)
        sent = warm + send_traffic(port, 60)
    finally:
        output = stop(process, log)
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises SIGTERM after a clean stop
    assert "Application shutdown complete" in output
    check_helper_used(output, encoder, 1)
    check_collected(data_dir, sent, 60 + len(warm))


@pytest.mark.parametrize("preload,encoder", [(False, "thread"), (True, "thread"), (True, "process")])
def test_gunicorn_flask_workers_flush_at_exit(data_dir, server_env, server_log, preload, encoder):
    port = free_port()
    use_encoder(server_env, encoder)
    command = [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20",
               "examples.flask_app:app"]
    if preload:
        command.insert(3, "--preload")
    log, log_file = server_log
    process = start_server(command, server_env, port, output=log_file)
    try:
        warm = warm_up(port, encoder, 2, log)
        sent = warm + send_traffic(port, 40)
    finally:
        output = stop(process, log)
    assert process.returncode == 0, output
    check_helper_used(output, encoder, 2)
    check_collected(data_dir, sent, 40 + len(warm))


@pytest.mark.parametrize("workers", [1, 2])
def test_collect_without_the_middleware_is_flushed_when_uvicorn_stops(data_dir, server_env, workers):
    """uvicorn ends a clean stop by raising SIGTERM again, so atexit never runs. With one process, the handler
    installed at import is what flushes these rows (with MDC_SIGTERM_FLUSH=false this test fails). Worker
    processes (--workers 2; older uvicorn in one process too) load the app after uvicorn took SIGTERM, and
    every row was lost: there the flush runs in the server's own shutdown."""
    port = free_port()
    process = start_server([PYTHON, "-m", "uvicorn", "tests.apps.collector_app:app", "--host", "127.0.0.1",
                            "--port", str(port), "--workers", str(workers)], server_env, port)
    try:
        for i in range(25):  # a connection each: the kernel spreads them over the workers
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                assert client.post("/score", json={"data": [[i]]}).status_code == 200
    finally:
        output = stop(process)
    assert process.returncode in (0, -signal.SIGTERM), output
    assert output.count("Application shutdown complete") == workers, output
    inputs = read_collected(data_dir, "inputs", as_text=True)
    assert sorted(inputs["x"].astype(int)) == list(range(25))


def test_gunicorn_threaded_workers_collect_concurrent_requests_whole(data_dir, server_env, server_log):
    """gthread workers (``--threads``): requests of one process run at once on several threads, each with
    its own exchange, context and counters, sharing one writer."""
    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    log, log_file = server_log
    process = start_server([PYTHON, "-m", "gunicorn", "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
                            "--graceful-timeout", "20", "examples.flask_app:app"], server_env, port, output=log_file)
    try:
        with ThreadPoolExecutor(8) as pool:
            sent = [row for rows in pool.map(send_traffic, [port] * 8, [25] * 8) for row in rows]
    finally:
        output = stop(process, log)
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    check_collected(data_dir, sent, 8 * 25)


def test_uvicorn_with_worker_processes_flushes_every_worker_at_sigterm(data_dir, server_env, server_log):
    """``uvicorn --workers 2`` starts its workers with multiprocessing's spawn; SIGTERM to the supervisor must
    still reach every worker's lifespan shutdown and flush."""
    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    log, log_file = server_log
    process = start_server([PYTHON, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port",
                            str(port), "--workers", "2"], server_env, port, output=log_file)
    try:
        with ThreadPoolExecutor(4) as pool:
            sent = [row for rows in pool.map(send_traffic, [port] * 4, [30] * 4) for row in rows]
    finally:
        output = stop(process, log)
    assert output.count("Application shutdown complete") == 2, output
    check_collected(data_dir, sent, 4 * 30)


def test_uvicorn_behind_a_proxy_with_a_root_path_collects_the_apps_routes(data_dir, server_env):
    """Behind an ingress that strips a path prefix, uvicorn --root-path puts the prefix in front of every
    path the app sees; the example's route "/score" collected nothing there."""
    port = free_port()
    process = start_server([PYTHON, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
                            "--port", str(port), "--root-path", "/iris"], server_env, port)
    try:
        sent = send_traffic(port, 20)  # as the proxy forwards them: without the prefix
    finally:
        output = stop(process)
    assert "Application shutdown complete" in output
    check_collected(data_dir, sent, 20)


OTHER_SERVERS = {
    # Each with two worker processes (waitress: one process, eight threads), stopped with SIGTERM.
    "granian-wsgi": ["-m", "granian", "--interface", "wsgi", "--workers", "2", "--blocking-threads", "4",
                     "examples.flask_app:app"],
    "granian-asgi": ["-m", "granian", "--interface", "asgi", "--workers", "2", "examples.fastapi_app:app"],
    "hypercorn-wsgi": ["-m", "hypercorn", "-w", "2", "examples.flask_app:app"],
    "hypercorn-asgi": ["-m", "hypercorn", "-w", "2", "examples.fastapi_app:app"],
    "gunicorn-gevent": ["-m", "gunicorn", "-k", "gevent", "-w", "2", "examples.flask_app:app"],
    "waitress": ["-m", "waitress", "--threads", "8", "examples.flask_app:app"],
}
# hypercorn's WSGI adapter gives the app no body of a chunked request (Flask answers 400), middleware or not.
UNCHUNKED = {"hypercorn-wsgi"}


def _bind(server: str, port: int) -> list:
    if server.startswith("granian") or server == "waitress":
        return ["--host", "127.0.0.1", "--port", str(port)]
    return ["-b", f"127.0.0.1:{port}"]


@pytest.mark.parametrize("server", sorted(OTHER_SERVERS))
def test_other_servers_keep_every_row_through_sigterm(data_dir, server_env, server_log, server):
    """Servers beside uvicorn and gunicorn's sync workers, each stopped as Kubernetes stops a pod. granian's
    workers are forked ``multiprocessing`` processes that end with ``os._exit`` once they return: atexit never runs
    there, and its WSGI workers (no lifespan) lost every row before the flush at ``multiprocessing``'s exit."""
    from concurrent.futures import ThreadPoolExecutor

    command = OTHER_SERVERS[server]
    port = free_port()
    log, log_file = server_log
    process = start_server([PYTHON, *command[:-1], *_bind(server, port), command[-1]], server_env, port,
                           output=log_file)
    try:
        with ThreadPoolExecutor(4) as pool:
            sent = [row for rows in pool.map(send_traffic, [port] * 4, [30] * 4, [server not in UNCHUNKED] * 4)
                    for row in rows]
    finally:
        output = stop(process, log)
    assert process.returncode in (0, -signal.SIGTERM), output  # waitress dies of SIGTERM after our flush
    assert "Traceback" not in output, output
    check_collected(data_dir, sent, 4 * 30)
