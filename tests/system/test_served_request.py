"""collect() without the middleware ties a request's inputs and predictions together: one correlation id, and
the request id the server saw. Under Azure ML's own scoring server (azmlinfsrv, gunicorn with 2 workers), a plain
Flask app and FastAPI routes."""
import json
import signal
from pathlib import Path

import httpx
import pandas as pd
import pytest

import mdc_middleware
from mdc_middleware.runtime import WriterHandle
from mdc_middleware.analysis import read_collected

from tests.helpers import ROOT, free_port, start_server

AZMLINFSRV = ROOT / ".tools" / "azmlinfsrv" / "bin" / "azmlinfsrv"


def joined(data_dir: Path, model: str) -> pd.DataFrame:
    """Inputs and predictions merged on the correlation id: one row per input row, ids must agree."""
    inputs = read_collected(data_dir, "inputs", as_text=True, model=model)
    predictions = read_collected(data_dir, "predictions", as_text=True, model=model)
    assert len(inputs) and len(inputs) == len(predictions)
    assert inputs["$aml_dc_correlation_id"].is_unique and predictions["$aml_dc_correlation_id"].is_unique
    merged = inputs.merge(predictions, on="$aml_dc_correlation_id", suffixes=("", "_prediction"))
    assert len(merged) == len(inputs), "every input row joins its prediction"
    assert (merged["id"].astype(float).astype(int) == merged["prediction"].astype(int)).all()
    assert (merged["$aml_request_id"] == merged["$aml_request_id_prediction"]).all()
    return merged


def send(client, path: str, count: int, start: int = 0) -> dict:
    """One-row requests with unique ids; every other one carries an x-request-id. Returns id → request id seen."""
    seen = {}
    for i in range(start, start + count):
        headers = {"x-request-id": f"req-{i}"} if i % 2 == 0 else {}
        response = client.post(path, json={"data": [[i, 0.5]]}, headers=headers)
        assert response.status_code == 200, response.text
        seen[i] = response.headers.get("x-request-id", headers.get("x-request-id"))
    return seen


def test_plain_flask_app_joins_inputs_and_predictions(data_dir, monkeypatch):
    monkeypatch.setenv("MDC_ENABLED", "true")
    monkeypatch.setenv("MDC_LOCAL_DIR", str(data_dir))
    from ..apps import plain_flask_score

    plain_flask_score.inputs_dc.settings = plain_flask_score.prediction_dc.settings = mdc_middleware.Settings.from_env()
    for dc in (plain_flask_score.inputs_dc, plain_flask_score.prediction_dc):  # the module's collectors, re-pointed
        dc._writer_handle = WriterHandle(dc.settings)
    send(plain_flask_score.app.test_client(), "/score", 20)
    mdc_middleware.flush(10)
    merged = joined(data_dir, "plain")
    by_id = dict(zip(merged["id"].astype(float).astype(int), merged["$aml_request_id"]))
    assert all(by_id[i] == f"req-{i}" for i in range(0, 20, 2))
    assert all(by_id[i] and not by_id[i].startswith("req-") for i in range(1, 20, 2))


@pytest.mark.parametrize("path", ["/score", "/score-sync"])
def test_fastapi_routes_join_inputs_and_predictions(data_dir, monkeypatch, path):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("MDC_ENABLED", "true")
    monkeypatch.setenv("MDC_LOCAL_DIR", str(data_dir))
    from ..apps import plain_fastapi_score

    plain_fastapi_score.inputs_dc.settings = plain_fastapi_score.prediction_dc.settings = \
        mdc_middleware.Settings.from_env()
    for dc in (plain_fastapi_score.inputs_dc, plain_fastapi_score.prediction_dc):  # the module's collectors, re-pointed
        dc._writer_handle = WriterHandle(dc.settings)
    with TestClient(plain_fastapi_score.app) as client:
        send(client, path, 20)
    mdc_middleware.flush(10)
    merged = joined(data_dir, "plain")
    assert set(merged.loc[merged["id"].astype(float).astype(int) % 2 == 0, "$aml_request_id"]) == {
        f"req-{i}" for i in range(0, 20, 2)}


def test_collect_outside_any_request_makes_an_id_per_call(settings):
    collector = mdc_middleware.ModelDataCollector("m", designation="inputs", settings=settings)
    first, second = collector.collect([[1]]), collector.collect([[2]])
    assert first["$aml_dc_correlation_id"] != second["$aml_dc_correlation_id"]


def download(azurite, container: str, folder: Path) -> None:
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    for blob in client.list_blobs():
        path = folder / blob.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.download_blob(blob.name).readall())


def start_azmlinfsrv(tmp_path: Path, env: dict) -> tuple:
    port, health = free_port(), free_port()
    command = [str(AZMLINFSRV), "--entry_script", str(ROOT / "tests" / "apps" / "azureml" / "score.py"),
               "--port", str(port), "--health_port", str(health), "--worker_count", "2"]
    with (tmp_path / "azmlinfsrv.log").open("wb") as log:  # the server keeps its own copy of the descriptor
        return start_server(command, env, port, timeout=90, output=log, health="/", cwd=tmp_path), port


@pytest.mark.skipif(not AZMLINFSRV.exists(), reason="scripts/test.sh installs azureml-inference-server-http")
@pytest.mark.parametrize("storage", ["local folder", pytest.param("Azurite", marks=pytest.mark.azurite)])
def test_seed_score_py_under_azure_ml_scoring_server_joins_row_by_row(tmp_path, data_dir, storage, request,
                                                                     container_name):
    """Microsoft's azmlinfsrv (Flask in gunicorn, 2 workers) serving a seed-style score.py, 400 requests, with
    Azure's own variables only."""
    config_map = tmp_path / "model_config_map.json"
    config_map.write_text(json.dumps({
        "accountContext": {"subscriptionId": "SUB-1", "resourceGroupName": "My-RG", "accountName": "My-WS"},
        "modelsInfo": {"best_model": {"2": {}, "10": {}}}}))
    env = {"AML_MODEL_DC_STORAGE_ENABLED": "true", "SERVICE_NAME": "svc", "MDC_MODEL_CONFIG_MAP": str(config_map)}
    if storage == "Azurite":
        azurite = request.getfixturevalue("azurite")
        env.update(AML_MODEL_DC_STORAGE=azurite.connection_string, MDC_CONTAINER=container_name)
    else:
        env.update(MDC_LOCAL_DIR=str(data_dir))
    process, port = start_azmlinfsrv(tmp_path, env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            seen = send(client, "/score", 400)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    if storage == "Azurite":  # the same files, downloaded: the checks below read a folder
        download(azurite, container_name, data_dir / "modeldata")
    merged = joined(data_dir, "best_model")
    assert len(merged) == 400 and set(merged["id"].astype(float).astype(int)) == set(range(400))
    by_id = dict(zip(merged["id"].astype(float).astype(int), merged["$aml_request_id"]))
    assert all(by_id[i] == seen[i] for i in range(400)), "the request id azmlinfsrv returned"
    # Azure's names: the config map's account, lower-cased, and the model's highest version.
    folders = {p.relative_to(data_dir).parts[1:9] for p in data_dir.rglob("*.csv")}  # below the container
    assert folders == {("modeldata", "sub-1", "my-rg", "my-ws", "svc", "best_model", "10", d)
                       for d in ("inputs", "predictions")}


def test_a_request_id_no_log_could_hold_is_not_taken(data_dir, monkeypatch):
    """As the middleware does (capture.pick_request_id): too long, or with a comma, the correlation id stands in."""
    monkeypatch.setenv("MDC_ENABLED", "true")
    monkeypatch.setenv("MDC_LOCAL_DIR", str(data_dir))
    from ..apps import plain_flask_score

    plain_flask_score.inputs_dc.settings = plain_flask_score.prediction_dc.settings = mdc_middleware.Settings.from_env()
    for dc in (plain_flask_score.inputs_dc, plain_flask_score.prediction_dc):  # the module's collectors, re-pointed
        dc._writer_handle = WriterHandle(dc.settings)
    client = plain_flask_score.app.test_client()
    for i, request_id in enumerate(["r" * 5000, "a,b"]):
        assert client.post("/score", json={"data": [[i, 0.5]]}, headers={"x-request-id": request_id}).status_code == 200
    mdc_middleware.flush(10)
    merged = joined(data_dir, "plain")
    assert (merged["$aml_request_id"] == merged["$aml_dc_correlation_id"]).all()
