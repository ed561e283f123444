from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Iterator, Optional

import httpx
import pandas as pd
import pytest

import mdc_middleware
from mdc_middleware import Settings
from mdc_middleware.analysis import read_collected

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never inherit collection settings from the shell, and never leave writers running."""
    for name in list(os.environ):
        if name.startswith(("MDC_", "AML_MODEL_DC_")) or name == "SERVICE_NAME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MDC_MODEL_CONFIG_MAP", "/nonexistent/model_config_map.json")
    yield
    mdc_middleware.shutdown(10)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "collected"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings.from_env({}, enabled=True, local_dir=str(data_dir), flush_interval=60.0)


def rows(data_dir: Path, designation: str, **filters) -> pd.DataFrame:
    """Every collected row of a designation, cells exactly as written."""
    mdc_middleware.flush(10)
    return read_collected(data_dir, designation, as_text=True, **filters)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command: list, env: dict, port: int, timeout: float = 60.0, output: Optional[IO] = None,
                 health: str = "/healthz", cwd: Path = ROOT) -> subprocess.Popen:
    """Start a real server on loopback and wait until ``health`` answers. Its output goes to a pipe, read
    when it stops, or to ``output`` (a file: readable while the server runs)."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=output or subprocess.PIPE,
                               stderr=subprocess.STDOUT)
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


PYTHON = sys.executable


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """One real Azurite for the session, on a free loopback port; stopped at the end."""
    from .azurite import Azurite

    server = Azurite(tmp_path_factory.mktemp("azurite"), free_port()).start()
    yield server
    server.stop()


_containers = iter(range(10**6))


@pytest.fixture
def container_name() -> str:
    return f"test{os.getpid()}x{next(_containers)}"


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def blob_settings(azurite, container_name, spool_dir) -> Settings:
    return Settings.from_env({}, enabled=True, storage_connection_string=azurite.connection_string,
                             container=container_name, flush_interval=60.0, retry_deadline=20.0,
                             spool_dir=str(spool_dir))


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


def pytest_collection_modifyitems(items) -> None:
    """Tests under tests/system/ (real servers, PySpark, the examples) and every test that uses Azurite are marked
    ``system``: a quick run of the others, which needs nothing but Python, is ``pytest -m "not system"``."""
    system = Path(__file__).parent / "system"
    for item in items:
        if system in Path(str(item.fspath)).parents or "azurite" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.system)
