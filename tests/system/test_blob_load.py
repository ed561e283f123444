"""100,000 rows from 8 client threads through the ASGI middleware on a real uvicorn, into Azurite."""
import signal
import threading

import httpx
import pytest
from azure.storage.blob import ContainerClient

from mdc_middleware.analysis import read_collected

from tests.helpers import PYTHON, free_port, start_server

pytestmark = pytest.mark.azurite
THREADS, REQUESTS, ROWS = 8, 125, 100


def test_100k_rows_land_exactly_once(azurite, container_name):
    port = free_port()
    env = {"MDC_ENABLED": "true", "MDC_STORAGE_CONNECTION_STRING": azurite.connection_string,
           "MDC_CONTAINER": container_name, "MDC_FLUSH_INTERVAL_SECONDS": "1"}
    server = start_server([PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--host", "127.0.0.1",
                           "--port", str(port), "--log-level", "warning"], env, port)
    failures = []

    def client(thread: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for request in range(REQUESTS):
                first = (thread * REQUESTS + request) * ROWS
                data = [[first + i, thread, (first + i) * 0.5] for i in range(ROWS)]
                response = http.post("/score", json={"data": data})
                if response.status_code != 200 or response.json()["predictions"] != [r[0] for r in data]:
                    failures.append(response.status_code)

    try:
        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert not failures
    container = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    inputs = read_collected(container, "inputs")
    predictions = read_collected(container, "predictions")
    total = THREADS * REQUESTS * ROWS
    assert len(inputs) == len(predictions) == total
    assert sorted(inputs["id"]) == list(range(total)) == sorted(predictions["id"])
    assert (inputs["x"] == inputs["id"] * 0.5).all()
    joined = inputs.merge(predictions, on=["$aml_dc_correlation_id", "id"])
    assert len(joined) == total
