"""Hostile clients against a real uvicorn server on loopback: a 100 MB body, and a client that vanishes."""
from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import time

import httpx
import pytest

from tests.helpers import PYTHON, free_port, start_server

BODY_MB = 100
CHUNK = b"0123456789abcdef" * 65536  # 1 MiB


def memory_mb(pid: int, field: str) -> float:
    """A process's memory figure from /proc: VmRSS (now) or VmHWM (its peak so far)."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields[field].split()[0]) / 1024


@pytest.fixture
def counting_server(data_dir):
    servers = []

    def start(enabled: bool):
        port = free_port()
        env = {"MDC_ENABLED": str(enabled).lower(), "MDC_LOCAL_DIR": str(data_dir), "MDC_METRICS_PATH": "/metrics",
               "MDC_MAX_BODY_BYTES": str(1 << 20)}
        process = start_server([PYTHON, "-m", "uvicorn", "tests.apps.counting_app:app", "--host", "127.0.0.1",
                                "--port", str(port), "--log-level", "warning"], env, port)
        servers.append(process)
        return process, f"http://127.0.0.1:{port}"

    yield start
    for process in servers:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def send_huge(base: str) -> dict:
    def body():
        for _ in range(BODY_MB):
            yield CHUNK

    with httpx.Client(timeout=60) as client:  # chunked: no content-length
        response = client.post(f"{base}/count", content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 200
    return response.json()


def test_a_100_mb_body_reaches_the_app_whole_and_is_not_buffered(counting_server):
    expected = hashlib.sha256(CHUNK * BODY_MB).hexdigest()
    growth = {}
    for enabled in (False, True):
        process, base = counting_server(enabled)
        before = memory_mb(process.pid, "VmRSS")
        answer = send_huge(base)
        assert answer == {"bytes": BODY_MB * len(CHUNK), "sha256": expected}
        growth[enabled] = memory_mb(process.pid, "VmHWM") - before
    print(f"peak RSS growth for a {BODY_MB} MB body: off {growth[False]:.1f} MB, on {growth[True]:.1f} MB")
    assert growth[True] < growth[False] + 16  # the capture keeps at most MDC_MAX_BODY_BYTES (1 MB)
    metrics = httpx.get(f"{base}/metrics").text
    assert 'mdc_skipped_total{reason="inputs:body_too_large"} 1' in metrics


def test_a_client_that_disconnects_mid_body_leaves_the_server_serving(counting_server):
    process, base = counting_server(True)
    port = int(base.rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b'{"data": [[1, 2' + b" " * 1000)
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    metrics = ""
    while time.monotonic() < deadline and 'reason="response_incomplete"} 5' not in metrics:
        time.sleep(0.2)
        metrics = httpx.get(f"{base}/metrics").text
    assert 'mdc_skipped_total{reason="response_incomplete"} 5' in metrics
    answer = httpx.post(f"{base}/count", content=b'{"data": [[1, 2]]}').json()
    assert answer["bytes"] == 18
    assert process.poll() is None
