"""A bad setting fails start-up, naming the variable, or lets every request through untouched: never the app's
500s. Real servers: uvicorn (--lifespan auto, on, off), gunicorn with uvicorn workers, gunicorn with Flask."""
import os
import signal
import subprocess

import httpx
import pytest

from tests.helpers import PYTHON, ROOT, free_port, start_server

BAD = [("MDC_ENABLED", "maybe"), ("MDC_BATCH_ROWS", "abc"), ("MDC_ROUTES", "score"), ("MDC_FORMAT", "xml")]


def run_until_exit(command: list, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("lifespan", ["auto", "on"])
@pytest.mark.parametrize("variable,value", BAD)
def test_uvicorn_with_lifespan_fails_start_up_naming_the_variable(variable, value, lifespan):
    port = free_port()
    result = run_until_exit([PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--port", str(port),
                             "--lifespan", lifespan], {variable: value, "MDC_ENABLED": "true", **{variable: value}})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{variable}={value!r}" in output or f"route {value!r}" in output, output[-2000:]
    assert "Application startup failed" in output and "Traceback" not in output


@pytest.mark.parametrize("variable,value", BAD)
def test_uvicorn_without_lifespan_passes_every_request_and_says_why_once(variable, value, tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = start_server([PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--port", str(port),
                               "--lifespan", "off"], {"MDC_ENABLED": "true", variable: value}, port, output=output)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                for i in range(5):
                    response = client.post("/score", json={"data": [[i, 0, 0.5]]})
                    assert response.status_code == 200 and response.json() == {"predictions": [i]}
                    assert "x-ms-request-id" not in response.headers  # untouched
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    text = log.read_text()
    assert text.count("collection is OFF because of a bad setting") == 1, text
    assert "Traceback" not in text


def test_gunicorn_with_uvicorn_workers_fails_to_boot():
    port = free_port()
    result = run_until_exit([PYTHON, "-m", "gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "-b",
                             f"127.0.0.1:{port}", "tests.apps.numbered_app:app"], {"MDC_ENABLED": "maybe"}, timeout=90)
    assert result.returncode != 0
    assert "MDC_ENABLED='maybe'" in result.stdout + result.stderr


def test_gunicorn_with_flask_fails_to_boot():
    port = free_port()
    result = run_until_exit([PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                             "tests.apps.numbered_flask_app:app"], {"MDC_ENABLED": "true", "MDC_ROUTES": "PUSH /x"},
                            timeout=90)
    assert result.returncode != 0
    assert "PUSH is not an HTTP method" in result.stdout + result.stderr


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn-flask"])
def test_a_misspelt_variable_fails_start_up_naming_it_and_the_one_meant(server):
    """MDC_SPOOL_DRI: without the check the server ran, collecting without the journal it asked for."""
    port = free_port()
    command = ([PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--port", str(port)] if server == "uvicorn"
               else [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "tests.apps.numbered_flask_app:app"])
    result = run_until_exit(command, {"MDC_ENABLED": "true", "MDC_SPOOL_DRI": "/tmp/mdc-spool"}, timeout=90)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "MDC_SPOOL_DRI is set, but mdc-middleware reads no variable of that name: did you mean MDC_SPOOL_DIR?" \
        in output, output[-2000:]


def test_a_route_no_request_meets_is_said_in_the_servers_output(tmp_path):
    """MDC_ROUTES=/scroe: requests to /score pass through untouched, and after 20 the operator is told."""
    port = free_port()
    log = tmp_path / "server.log"
    env = {"MDC_ENABLED": "true", "MDC_ROUTES": "/scroe", "MDC_LOCAL_DIR": str(tmp_path / "data")}
    with log.open("wb") as output:
        server = start_server([PYTHON, "-m", "uvicorn", "tests.apps.env_routes_app:app", "--port", str(port)], env,
                              port, output=output)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                for i in range(25):
                    response = client.post("/score", json={"data": [[i, 1]]})
                    assert response.status_code == 200 and response.json() == {"predictions": [2]}
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    text = log.read_text()
    assert text.count("mdc: 20 requests so far and none to a route collected (POST /scroe); they went to "
                      "POST /score (20)") == 1, text
    assert not (tmp_path / "data").exists()


def test_start_up_line_says_where_rows_go(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    env = {"MDC_ENABLED": "true", "MDC_LOCAL_DIR": str(tmp_path / "data"), "MDC_SPOOL_DIR": str(tmp_path / "j")}
    with log.open("wb") as output:
        server = start_server([PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--port", str(port)], env,
                              port, output=output)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    text = log.read_text()
    assert text.count("mdc: collection is ON") == 1, text
    assert f"local folder {tmp_path / 'data' / 'modeldata'}" in text and "routes POST /score" in text
    assert f"journal and spool {tmp_path / 'j'}" in text
