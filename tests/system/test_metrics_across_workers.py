"""A scrape of MDC_METRICS_PATH on a server of several worker processes answers for the server: real gunicorn and
uvicorn servers on loopback, every request counted, one worker SIGKILLed on the way."""
import os
import re
import signal
import time

import httpx
import pytest

from tests.helpers import PYTHON, free_port, start_server

pytest.importorskip("prometheus_client")

SERVERS = {
    "gunicorn sync -w 2": lambda port: [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                        "examples.flask_app:app"],
    "uvicorn --workers 2": lambda port: [PYTHON, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
                                         "--port", str(port), "--workers", "2", "--log-level", "warning"],
}


def scrape(port: int) -> dict:
    """The scraped counters, on a new connection each time: the kernel hands it to either worker."""
    with httpx.Client(timeout=10) as client:
        text = client.get(f"http://127.0.0.1:{port}/metrics", headers={"connection": "close"}).text
    return {name: float(value) for name, value in re.findall(r"^(mdc_\w+) (\S+)$", text, re.M)}


def score(port: int, requests: int) -> None:
    for _ in range(requests):
        with httpx.Client(timeout=10) as client:  # a connection each: both workers answer some
            assert client.post(f"http://127.0.0.1:{port}/score", json={"data": [[5.1, 3.5, 1.4, 0.2]]},
                               headers={"connection": "close"}).status_code == 200


def eventually(port: int, rows: float, within: float = 30.0) -> bool:
    """Whether a scrape reads ``rows`` captured within ``within`` seconds (siblings publish every 2 s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if scrape(port)["mdc_rows_captured_total"] == rows:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("server", list(SERVERS))
def test_every_scrape_counts_every_worker_and_never_goes_down(data_dir, tmp_path, server):
    """Before, each scrape gave one worker's counters (208, 192, 208, ... for 400 rows), which Prometheus reads
    as counter resets. A worker killed (an OOM kill) keeps what it last published."""
    port = free_port()
    env = {"MDC_ENABLED": "true", "MDC_LOCAL_DIR": str(data_dir), "MDC_METRICS_PATH": "/metrics",
           "TMPDIR": str(tmp_path)}  # the workers' shared folder, apart from other tests' servers
    process = start_server(SERVERS[server](port), env, port)
    try:
        score(port, 60)
        assert eventually(port, 120.0)
        time.sleep(2.5)  # every worker has published since its last request
        seen = [scrape(port) for _ in range(10)]
        assert {s["mdc_rows_captured_total"] for s in seen} == {120.0}, seen  # inputs and predictions of 60
        assert {s["mdc_enabled"] for s in seen} == {1.0}

        workers = {int(p) for p in re.findall(r"/(\d+)-[0-9a-f]+\.json",
                                              " ".join(str(p) for p in tmp_path.glob("mdc-metrics-*/*.json")))}
        assert len(workers) == 2, workers
        os.kill(min(workers), signal.SIGKILL)  # the server starts another in its place
        time.sleep(1.0)
        score(port, 30)
        later = [scrape(port)["mdc_rows_captured_total"] for _ in range(10)]
        assert all(b >= a for a, b in zip(later, later[1:])), later  # never down, scrape after scrape
        assert min(later) >= 120.0
        assert eventually(port, 180.0)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
