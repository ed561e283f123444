"""MDC_FORMAT=jsonl: Azure ML's current data collector layout and record, written and read back."""
import json

import pytest
from azure.storage.blob import ContainerClient

import mdc_middleware
from mdc_middleware import ConfigError, DataCollectionMiddleware, ModelDataCollector, Schema, Settings
from mdc_middleware.analysis import read_collected
from mdc_middleware.cli import main

from tests.analysis.test_readback import runner

AZURE_FIELDS = {"specversion", "id", "source", "type", "datacontenttype", "time", "data", "correlationid",
                "xrequestid", "contentrange", "modelversion", "collectdatatype", "agent"}


@pytest.fixture
def jsonl_settings(data_dir):
    return Settings.from_env({"MDC_FORMAT": "jsonl", "MDC_DEPLOYMENT_NAME": "blue"}, enabled=True,
                             local_dir=str(data_dir), webservice_name="my-endpoint", model_version="3")


def test_records_land_in_azure_ml_layout_with_azure_ml_fields(jsonl_settings, data_dir):
    inputs = ModelDataCollector("m", designation="inputs", feature_names=["zip", "x"], settings=jsonl_settings)
    correlations = inputs.collect([["00501", 1.5], ["02134", float("nan")]])
    mdc_middleware.flush(10)
    (path,) = list(data_dir.rglob("*.jsonl"))
    parts = path.relative_to(data_dir).parts
    assert parts[1:5] == ("modelDataCollector", "my-endpoint", "blue", "model_inputs")
    assert [len(p) for p in parts[5:9]] == [4, 2, 2, 2] and parts[9] == "data.jsonl"  # yyyy/MM/dd/HH
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert AZURE_FIELDS <= set(record)
    assert record["type"] == "azureml.inference.model_inputs" and record["specversion"] == "1.0"
    assert record["data"] == [{"zip": "00501", "x": 1.5}, {"zip": "02134", "x": None}]
    assert record["correlationid"] == correlations["$aml_dc_correlation_id"] and record["modelversion"] == "3"
    data_bytes = len(json.dumps(record["data"], separators=(",", ":")))
    assert record["contentrange"] == f"bytes 0-{data_bytes - 1}/{data_bytes}"
    frame = read_collected(data_dir, "inputs")
    assert frame["zip"].tolist() == ["00501", "02134"]  # text stays text
    assert frame["$aml_dc_correlation_id"].nunique() == 1


def test_middleware_captures_join_in_jsonl(data_dir):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.post("/score")
    async def score(body: dict):
        return {"predictions": [row[0] * 2 for row in body["data"]]}

    settings = Settings.from_env({"MDC_FORMAT": "jsonl"}, enabled=True, local_dir=str(data_dir))
    app.add_middleware(DataCollectionMiddleware, settings=settings,
                       routes={"/score": Schema(inputs=["a", "b"], predictions=["doubled"], model_name="m")})
    with TestClient(app) as client:
        for i in range(10):
            assert client.post("/score", json={"data": [[i, "x"], [i + 0.5, "y"]]}).status_code == 200
    result = runner().invoke(main, ["--data", str(data_dir), "join", "-o", "-"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 21  # header and 20 rows, each input beside its prediction
    assert {p.relative_to(data_dir).parts[4] for p in data_dir.rglob("*.jsonl")} == {"model_inputs",
                                                                                    "model_outputs"}


@pytest.mark.azurite
def test_jsonl_in_blob_storage_has_no_header_and_reads_back(azurite, container_name, tmp_path):
    settings = Settings.from_env({"MDC_FORMAT": "jsonl"}, enabled=True, container=container_name,
                                 storage_connection_string=azurite.connection_string, spool_dir=str(tmp_path / "s"))
    collector = ModelDataCollector("m", designation="predictions", settings=settings)
    for i in range(50):
        collector.collect([[i]])
    assert mdc_middleware.flush(30)
    client = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    (name,) = [b.name for b in client.list_blobs()]
    assert name.startswith("modelDataCollector/default/m/model_outputs/") and name.endswith("/data.jsonl")
    lines = client.download_blob(name).readall().decode().splitlines()
    assert len(lines) == 50 and all(json.loads(line)["type"] == "azureml.inference.model_outputs" for line in lines)
    frame = read_collected(client, "predictions")
    (value_column,) = [c for c in frame.columns if not c.startswith("$")]
    assert sorted(frame[value_column]) == list(range(50))


def test_a_format_that_does_not_exist_fails_start_up_naming_the_variable():
    with pytest.raises(ConfigError, match="MDC_FORMAT"):
        Settings.from_env({"MDC_FORMAT": "xml"})


def test_json_lines_keep_their_own_types_when_read(jsonl_settings, data_dir):
    """A zip code sent as text stays text though it looks like a number; numbers stay numbers."""
    collector = ModelDataCollector("m", designation="inputs", feature_names=["zip", "n"], settings=jsonl_settings)
    collector.collect([["12345", 3], ["00501", 4]])
    mdc_middleware.flush(10)
    frame = read_collected(data_dir, "inputs")
    assert frame["zip"].tolist() == ["12345", "00501"] and frame["n"].tolist() == [3, 4]
    assert read_collected(data_dir, "inputs", as_text=True)["n"].tolist() == ["3", "4"]
