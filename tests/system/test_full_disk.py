"""A real full disk under the local folder: a tmpfs of a few MiB, filled by another file while a real uvicorn
server collects. Every row is counted by id and read back from the files.

- Room again while the server runs: every row lands once, and no file ends in half a row.
- SIGTERM while the disk is still full: with ``MDC_SPOOL_DIR`` on another disk the rows wait there and the
  next start writes them; without it they are lost, and the server's last words say how many, why, and what
  would have kept them.

Mounting a tmpfs needs root (as in CI's container); elsewhere these tests are skipped, and
``tests/storage/test_local_sink.py`` stands in for the full disk with a file-size limit.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from mdc_middleware.analysis import read_collected

from tests.helpers import PYTHON, free_port, start_server, wait_for

REQUESTS_BEFORE, REQUESTS_WHILE_FULL, REQUESTS_AFTER, ROWS = 100, 150, 50, 10


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk with one file; returns it (remove it to make room)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == 28  # ENOSPC
    try:  # the last few hundred bytes too
        while True:
            os.write(fd, b"x")
    except OSError:
        pass
    os.close(fd)
    return filler


class Service:
    def __init__(self, env: dict, log: Path) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "ab") as out:
            self.process = start_server([PYTHON, "-m", "uvicorn", "tests.apps.numbered_app:app", "--host",
                                         "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                                        env, self.port, output=out)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def send(self, first: int, count: int) -> None:
        for request in range(first, first + count):
            rows = [[request * ROWS + k, 0, 1.5] for k in range(ROWS)]
            response = self.http.post("/score", json={"data": rows})
            assert response.status_code == 200 and response.json() == {"predictions": [row[0] for row in rows]}

    def metric(self, name: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def stop(self) -> str:
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn ends a clean stop by raising SIGTERM again
        return self.log.read_text()


def collected_ids(folder: Path, designation: str) -> list:
    frame = read_collected(folder, designation, as_text=True)
    return sorted(int(value) for value in frame["id"]) if len(frame) else []


def assert_whole_rows(folder: Path) -> None:
    files = list(folder.rglob("*.csv"))
    assert files
    for path in files:
        assert path.read_bytes().endswith(b"\n"), f"{path} ends in half a row"


def env_for(data: Path, **extra: str) -> dict:
    return {"MDC_ENABLED": "true", "MDC_LOCAL_DIR": str(data), "MDC_FLUSH_INTERVAL_SECONDS": "0.2",
            "MDC_METRICS_PATH": "/metrics", **extra}


def test_rows_wait_out_a_full_disk_and_land_once_when_there_is_room(small_disk, tmp_path):
    data = small_disk / "data"
    service = Service(env_for(data), tmp_path / "server.log")
    try:
        service.send(0, REQUESTS_BEFORE)
        assert wait_for(lambda: service.metric("mdc_rows_written_total") == 2 * REQUESTS_BEFORE * ROWS, 20)
        filler = fill(small_disk)
        service.send(REQUESTS_BEFORE, REQUESTS_WHILE_FULL)
        assert wait_for(lambda: service.metric("mdc_write_errors_total") > 0, 20)
        assert service.metric("mdc_rows_dropped_total") == 0
        filler.unlink()
        service.send(REQUESTS_BEFORE + REQUESTS_WHILE_FULL, REQUESTS_AFTER)
        total = REQUESTS_BEFORE + REQUESTS_WHILE_FULL + REQUESTS_AFTER
        assert wait_for(lambda: service.metric("mdc_rows_written_total") == 2 * total * ROWS, 30)
    finally:
        log = service.stop()
    assert "No space left on device; they are kept and retried" in log
    expected = list(range(total * ROWS))
    assert collected_ids(data, "inputs") == expected  # each once: a write the disk cut short was cut off again
    assert collected_ids(data, "predictions") == expected
    assert_whole_rows(data)


def test_sigterm_while_the_disk_is_full_keeps_the_rows_in_the_spool_for_the_next_start(small_disk, tmp_path):
    data, spool = small_disk / "data", tmp_path / "spool"  # the spool on another disk, as on AKS
    env = env_for(data, MDC_SPOOL_DIR=str(spool))
    service = Service(env, tmp_path / "server.log")
    try:
        service.send(0, REQUESTS_BEFORE)
        assert wait_for(lambda: service.metric("mdc_rows_written_total") == 2 * REQUESTS_BEFORE * ROWS, 20)
        filler = fill(small_disk)
        service.send(REQUESTS_BEFORE, REQUESTS_WHILE_FULL)
        assert wait_for(lambda: service.metric("mdc_rows_spooled_total") == 2 * REQUESTS_WHILE_FULL * ROWS, 20)
    finally:
        log = service.stop()
    assert "they wait in the spool" in log and "the next process that starts with this MDC_SPOOL_DIR" in log
    assert "lost" not in log
    assert collected_ids(data, "inputs") == list(range(REQUESTS_BEFORE * ROWS))
    filler.unlink()
    service = Service(env, tmp_path / "server.log")
    try:
        total = (REQUESTS_BEFORE + REQUESTS_WHILE_FULL) * ROWS
        assert wait_for(lambda: len(collected_ids(data, "predictions")) >= total, 30)
    finally:
        service.stop()
    assert collected_ids(data, "inputs") == list(range(total))
    assert collected_ids(data, "predictions") == list(range(total))
    assert_whole_rows(data)


def test_sigterm_while_the_disk_is_full_without_a_spool_says_what_is_lost(small_disk, tmp_path):
    data = small_disk / "data"
    service = Service(env_for(data, MDC_SHUTDOWN_DEADLINE_SECONDS="2"), tmp_path / "server.log")
    try:
        service.send(0, REQUESTS_BEFORE)
        assert wait_for(lambda: service.metric("mdc_rows_written_total") == 2 * REQUESTS_BEFORE * ROWS, 20)
        fill(small_disk)
        service.send(REQUESTS_BEFORE, REQUESTS_WHILE_FULL)
        assert wait_for(lambda: service.metric("mdc_write_errors_total") > 0, 20)
    finally:
        log = service.stop()
    lost = 2 * REQUESTS_WHILE_FULL * ROWS
    assert (f"mdc: stopping: {lost} rows are lost, not written within the shutdown deadline (2 s) (storage: local "
            f"write to ") in log
    assert "No space left on device); counted under dropped_reasons" in log
    assert "Set MDC_SPOOL_DIR to keep rows" in log
    assert collected_ids(data, "inputs") == list(range(REQUESTS_BEFORE * ROWS))
    assert_whole_rows(data)
