from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

import mdc_middleware
from mdc_middleware import Settings

from tests.helpers import free_port

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

@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """One real Azurite for the session, on a free loopback port; stopped at the end."""
    from tests.azurite import Azurite

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

def pytest_collection_modifyitems(items) -> None:
    """Tests under tests/system/ (real servers, PySpark, the examples) and every test that uses Azurite are marked
    ``system``: a quick run of the others, which needs nothing but Python, is ``pytest -m "not system"``."""
    system = Path(__file__).parent / "system"
    for item in items:
        if system in Path(str(item.fspath)).parents or "azurite" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.system)
