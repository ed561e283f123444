"""Rows survive the death of the process that collected them: SIGKILL of a worker (an OOM kill) at random
moments, and SIGTERM after storage has been unreachable for longer than every deadline. Real servers on
loopback, Azurite, every row counted by its id and read back from storage directly."""
import collections
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from mdc_middleware.analysis import read_collected

from tests.helpers import PYTHON, ROOT, free_port, record_figures, start_server
from .process_death_driver import Clients

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
KILLS = 10
# Acknowledged rows may be lost only if acknowledged this close before the kill of the worker that answered them
# (the target). Rows are journaled within about 10 ms of their capture; the measured window is printed
# (TEST_FIGURES_DIR keeps it), and TEST_DEBUG_LOSSES_DIR keeps who answered each row and the server's log.
WINDOW = 0.05

SERVERS = {
    "uvicorn --workers 2": lambda port: [PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--host", "127.0.0.1",
                                         "--port", str(port), "--workers", "2", "--log-level", "warning"],
    "gunicorn sync": lambda port: [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                   "tests.apps.numbered_flask_app:app"],
    "gunicorn uvicorn workers": lambda port: [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "-k",
                                              "uvicorn.workers.UvicornWorker", "tests.apps.numbered_app:app"],
    "gunicorn gevent": lambda port: [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "-k", "gevent",
                                     "tests.apps.numbered_flask_app:app"],
}


def stored_ids(connection_string: str, container: str) -> dict:
    client = ContainerClient.from_connection_string(connection_string, container)
    return {designation: read_collected(client, designation)
            for designation in ("inputs", "predictions")}


def wait_until_journal_and_spool_are_empty(spool: Path, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list(spool.glob("*.journal")) and not list(spool.glob("*.spool")):
            return True
        time.sleep(0.5)
    return False


def deliver_what_was_left(command: list, env: dict, port: int, output, spool: Path) -> None:
    """Start the server again (storage reachable) and wait until its journals and spool are delivered; stop it."""
    again = start_server(command, env, port, output=output)
    try:
        assert wait_until_journal_and_spool_are_empty(spool), sorted(p.name for p in spool.iterdir())
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(90)


def check_every_acknowledged_row(stored: dict, acked: dict, answered_by: dict, killed_at: dict) -> dict:
    """A lost row must have been acknowledged within WINDOW before the kill of the worker that answered it;
    copies share their correlation id. ``answered_by``: row id → worker pid; ``killed_at``: pid → kill time."""
    figures = {"acknowledged": len(acked)}
    for designation, frame in stored.items():
        ids = frame["id"].astype(int)
        unique = frame.drop_duplicates(["$aml_dc_correlation_id", "id"])
        assert unique["id"].is_unique, f"{designation}: one id under two correlation ids"
        lost = set(acked) - set(ids)
        # A response the client saw a little after the kill left the worker before it: it counts as 0 ms.
        windows = {i: max(0.0, killed_at.get(answered_by.get(i), float("inf")) - acked[i]) for i in lost}
        figures[f"{designation}_lost"] = len(lost)
        figures[f"{designation}_lost_window_ms"] = round(min(max(windows.values(), default=0.0), 10**6) * 1000, 1)
        figures[f"{designation}_duplicates"] = int(ids.duplicated().sum())
        late = collections.Counter(answered_by.get(i) for i, w in windows.items() if w > WINDOW)
        assert not late, (designation, figures, f"rows lost too long before a kill, by worker: {dict(late)}")
    return figures


@pytest.mark.parametrize("server", list(SERVERS))
def test_sigkill_of_workers_at_random_moments_loses_no_acknowledged_row(azurite, container_name, tmp_path, server):
    port, spool = free_port(), tmp_path / "spool"
    env = {"MDC_ENABLED": "true", "MDC_CONTAINER": container_name, "MDC_SPOOL_DIR": str(spool),
           "MDC_STORAGE_CONNECTION_STRING": azurite.connection_string}
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        master = start_server(SERVERS[server](port), env, port, output=output)
        seen = tmp_path / "driver.json"
        try:
            subprocess.run([PYTHON, "-m", "tests.system.process_death_driver", str(port), str(master.pid), str(KILLS), "1",
                            str(seen)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, timeout=300)
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(90)
        driver = json.loads(seen.read_text())
        acked, kills = {int(k): v for k, v in driver["acked"].items()}, driver["kills"]
        answered_by = {int(k): v for k, v in driver["pids"].items()}
        killed_at: dict = {}
        for pid, at in zip(driver["killed"], kills):
            killed_at.setdefault(pid, at)
        assert len(kills) == KILLS
        # The next start delivers what the killed workers had journaled (the survivors may have already).
        deliver_what_was_left(SERVERS[server](port), env, port, output, spool)
    stored = stored_ids(azurite.connection_string, container_name)
    keep = os.environ.get("TEST_DEBUG_LOSSES_DIR")
    if keep:  # what a person needs to look into a loss: who answered each row, who was killed when, the logs
        name = server.replace(" ", "_")
        Path(keep, f"{name}.json").write_text(json.dumps(dict(
            driver, stored={d: frame["id"].astype(int).tolist() for d, frame in stored.items()})))
        Path(keep, f"{name}.log").write_bytes(log.read_bytes())
    figures = check_every_acknowledged_row(stored, acked, answered_by, killed_at)
    figures.update(server=server, kills=len(kills), failed_requests=driver["errors"])
    record_figures("sigkill", figures)
    assert figures["acknowledged"] > 200


@pytest.mark.parametrize("storage", ["up", "unreachable"])
def test_sigkill_of_the_whole_server_loses_no_acknowledged_row(azurite, container_name, tmp_path, storage):
    """Master and workers killed at once at a random moment, as a container killed for memory (Kubernetes sets
    the cgroup's memory.oom.group) or a node's crash: the next start delivers every row the journals hold."""
    port, spool = free_port(), tmp_path / "spool"
    reachable = azurite.connection_string
    env = {"MDC_ENABLED": "true", "MDC_CONTAINER": container_name, "MDC_SPOOL_DIR": str(spool),
           "MDC_STORAGE_CONNECTION_STRING": reachable if storage == "up" else reachable.replace(
               str(azurite.port), str(free_port()))}
    command = SERVERS["uvicorn --workers 2"](port)
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = start_server(command, env, port, output=output, own_group=True)
        try:
            with Clients(port, threads=2) as clients:
                time.sleep(random.uniform(2.0, 5.0))
                killed = time.monotonic()
                os.killpg(server.pid, signal.SIGKILL)
                time.sleep(0.5)  # requests after the kill fail; none is acknowledged
        finally:
            server.wait(30)
        env["MDC_STORAGE_CONNECTION_STRING"] = reachable
        deliver_what_was_left(command, env, port, output, spool)
    stored = stored_ids(azurite.connection_string, container_name)
    killed_at = {pid: killed for pid in set(clients.pids.values())}
    figures = check_every_acknowledged_row(stored, clients.acked, clients.pids, killed_at)
    figures.update(storage=storage, failed_requests=clients.errors)
    record_figures("sigkill_whole_server", figures)
    assert figures["inputs_duplicates"] == figures["predictions_duplicates"] == 0
    assert figures["acknowledged"] > 200


@pytest.mark.parametrize("outage", [10, 90])
def test_sigterm_after_storage_was_unreachable_loses_nothing(azurite, container_name, tmp_path, outage):
    """Default deadlines (flush 5 s, retry 60 s, shutdown 25 s). Storage is a closed port from the start; after
    ``outage`` seconds of traffic and waiting the server gets SIGTERM. The next start, with storage back,
    delivers every acknowledged row."""
    port, spool = free_port(), tmp_path / "spool"
    closed = azurite.connection_string.replace(str(azurite.port), str(free_port()))
    env = {"MDC_ENABLED": "true", "MDC_CONTAINER": container_name, "MDC_SPOOL_DIR": str(spool),
           "MDC_STORAGE_CONNECTION_STRING": closed}
    command = SERVERS["uvicorn --workers 2"](port)
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = start_server(command, env, port, output=output)
        started = time.monotonic()
        try:
            with Clients(port, threads=2) as clients:
                time.sleep(min(outage, 10))
        finally:
            time.sleep(max(0.0, outage - (time.monotonic() - started)))
            server.send_signal(signal.SIGTERM)
            server.wait(90)
        stopped = time.monotonic()
        env["MDC_STORAGE_CONNECTION_STRING"] = azurite.connection_string
        deliver_what_was_left(command, env, port, output, spool)
    text = log.read_text()
    assert "rows not yet in storage" in text, text[-3000:]
    stored = stored_ids(azurite.connection_string, container_name)
    figures = check_every_acknowledged_row(stored, clients.acked, clients.pids, killed_at={})
    figures.update(outage_s=outage, stop_s=round(stopped - started - outage, 1))
    record_figures("sigterm_outage", figures)
    assert figures["inputs_lost"] == figures["predictions_lost"] == 0
    assert figures["inputs_duplicates"] == figures["predictions_duplicates"] == 0
    assert figures["acknowledged"] > 200
