"""What many tests share and is not a fixture: real servers on loopback, rows read back from storage, a
record and a failing sink for the writer's tests, figures printed for the README."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Optional

import httpx
import pandas as pd

import mdc_middleware
from mdc_middleware.analysis import read_collected
from mdc_middleware.records.record import Record
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.storage.paths import Target
from mdc_middleware.storage.sink import SinkError

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TARGET = Target("s", "r", "w", "svc", "m", "1", "inputs")


def rows(data_dir: Path, designation: str, **filters) -> pd.DataFrame:
    """Every collected row of a designation, cells exactly as written."""
    mdc_middleware.flush(10)
    return read_collected(data_dir, designation, as_text=True, **filters)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command: list, env: dict, port: int, timeout: float = 60.0, output: Optional[IO] = None,
                 health: str = "/healthz", cwd: Path = ROOT, own_group: bool = False) -> subprocess.Popen:
    """Start a real server on loopback and wait until ``health`` answers. Its output goes to a pipe, read
    when it stops, or to ``output`` (a file: readable while the server runs). ``own_group``: in a process group
    of its own, which ``os.killpg(server.pid, ...)`` ends at once, workers and all (as a container's end)."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=output or subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=own_group)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = process.stdout.read().decode() if process.stdout else "(in the output file)"
            raise RuntimeError(f"server exited with {process.returncode}:\n{text}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=1.0).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become ready")


def blob_rows(azurite, container: str, designation: str, **filters) -> pd.DataFrame:
    from azure.storage.blob import ContainerClient

    mdc_middleware.flush(30)
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    return read_collected(client, designation, as_text=True, **filters)


def record_figures(kind: str, figures: dict) -> None:
    """Print a scenario's figures; with TEST_FIGURES_DIR=dir also append them to dir/<kind>.jsonl."""
    import json

    print(figures)
    directory = os.environ.get("TEST_FIGURES_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with open(Path(directory) / f"{kind}.jsonl", "a") as out:
            out.write(json.dumps(figures) + "\n")


def record(value, ts=None):
    return Record(TARGET, [[value]], ("x",), f"cid-{value}", ts or time.time(), "rid", rows=1)


def replayed(spool) -> list:
    """Every spooled batch's rows (a ``Spool``), acknowledged as delivery acknowledges them."""
    out = []
    while (found := spool.next_batch()) is not None:
        out.append(found.payload.decode())
        spool.ack(found)
    spool.release()
    return out


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class FlakySink(LocalSink):
    """The local sink, failing its first ``failures`` appends (or blocking until released)."""

    def __init__(self, root, failures=0, gate=None):
        super().__init__(root)
        self.failures = failures
        self.gate = gate
        self.calls = 0

    def append(self, folder, stem, header, payload, deadline=None, hint=None):
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise SinkError("injected failure")
        super().append(folder, stem, header, payload, deadline)
