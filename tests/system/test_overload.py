"""10x overload: requests far faster than storage accepts. Memory stays bounded, no request fails,
and every row is in storage, in the spool, or counted as dropped."""
import signal
import threading
import time

import httpx
import pytest
from azure.storage.blob import ContainerClient
from prometheus_client.parser import text_string_to_metric_families

from mdc_middleware.analysis import read_collected
from mdc_middleware.pipeline.spool import Spool

from tests.helpers import PYTHON, free_port, record_figures, start_server
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.azurite
REQUESTS, ROWS, THREADS = 3000, 10, 4
RSS_BOUND_MB = 120  # growth over the warmed-up server; the queue and inbox bounds below are ~40 MB


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def counters(port: int) -> dict:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_overload_keeps_memory_bounded_and_accounts_for_every_row(azurite, container_name, tmp_path):
    proxy = FaultProxy(azurite.port).start()
    proxy.stall(1.0, 10**6)  # every append takes a second: storage takes ~200 rows/s
    spool_dir = tmp_path / "spool"
    port = free_port()
    env = {"MDC_ENABLED": "true", "MDC_CONTAINER": container_name, "MDC_METRICS_PATH": "/metrics",
           "MDC_STORAGE_CONNECTION_STRING": azurite.connection_string.replace(str(azurite.port), str(proxy.port)),
           "MDC_FLUSH_INTERVAL_SECONDS": "0.2", "MDC_BATCH_ROWS": "200", "MDC_BATCH_BYTES": "1000000",
           "MDC_QUEUE_MAX_BYTES": "16000000", "MDC_QUEUE_SIZE": "2000", "MDC_SPOOL_DIR": str(spool_dir),
           "MDC_SHUTDOWN_DEADLINE_SECONDS": "3"}
    server = start_server([PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--host", "127.0.0.1",
                           "--port", str(port), "--log-level", "warning"], env, port)
    failures, latencies, peak = [], [], [0.0]
    running = threading.Event()
    running.set()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as warm:
            for i in range(50):
                warm.post("/score", json={"data": [[-1, -1, 0.0]]})
        baseline = rss_mb(server.pid)

        def sample() -> None:
            while running.is_set():
                peak[0] = max(peak[0], rss_mb(server.pid))
                time.sleep(0.05)

        def client(thread: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                for request in range(thread, REQUESTS, THREADS):
                    first = request * ROWS
                    started = time.monotonic()
                    response = http.post("/score", json={"data": [[first + i, thread, 0.5] for i in range(ROWS)]})
                    latencies.append(time.monotonic() - started)
                    if response.status_code != 200:
                        failures.append(response.status_code)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        elapsed = time.monotonic() - started
        time.sleep(1.0)
        final = counters(port)
    finally:
        running.clear()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
        proxy.stop()

    container = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    stored = {d: read_collected(container, d) for d in ("inputs", "predictions")}
    spooled = {"inputs": [], "predictions": []}
    spool = Spool(str(spool_dir))
    while (batch := spool.next_batch()) is not None:
        designation = "inputs" if "/inputs/" in batch.folder else "predictions"
        spooled[designation].extend(int(line.split(b",")[0]) for line in batch.payload.splitlines())
        spool.ack(batch)
    spool.release()
    dropped_rows = int(final["mdc_captures_dropped_total"]) * ROWS  # per designation
    figures = {
        "requests": REQUESTS, "rows_sent": 2 * REQUESTS * ROWS, "seconds": round(elapsed, 1),
        "offered_rows_per_s": round(2 * REQUESTS * ROWS / elapsed), "failed_requests": len(failures),
        "rows_in_storage": sum(len(f[f["id"] >= 0]) for f in stored.values()),
        "rows_in_spool": sum(len(v) for v in spooled.values()), "rows_dropped": 2 * dropped_rows,
        "rss_baseline_mb": round(baseline, 1), "rss_peak_mb": round(peak[0], 1),
        "p50_request_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
        "p99_request_ms": round(sorted(latencies)[int(len(latencies) * 0.99)] * 1000, 1),
    }
    record_figures("overload", figures)
    assert not failures
    assert peak[0] - baseline < RSS_BOUND_MB, figures
    for designation in ("inputs", "predictions"):
        in_storage = [i for i in stored[designation]["id"] if i >= 0]
        everything = in_storage + spooled[designation]
        assert len(everything) == len(set(everything)), "a row is both stored and spooled, or twice"
        assert len(everything) + dropped_rows == REQUESTS * ROWS, figures
    assert figures["rows_in_spool"] > 0  # storage really was the bottleneck
