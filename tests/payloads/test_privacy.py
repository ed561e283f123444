"""Personal data and secrets: field rules, header allowlist, raw unparsed payloads, no credential leaks."""
from __future__ import annotations

import base64
import hashlib
import json
import signal
import time

import httpx
import pytest
from starlette.testclient import TestClient

import mdc_middleware
from mdc_middleware import ConfigError, DataCollectionMiddleware, ModelDataCollector, Schema, Settings
from mdc_middleware.analysis import read_collected

from tests.helpers import PYTHON, free_port, rows, start_server
from tests.payloads.test_hostile import fastapi_app, flask_app


def all_text(data_dir) -> str:
    mdc_middleware.flush(10)
    return "".join(p.read_text(encoding="utf-8") for p in data_dir.rglob("*.csv"))


def pseudonym(value) -> str:
    return hashlib.sha256(b"pepper:" + str(value).encode()).hexdigest()[:12]


def test_collector_excludes_and_redacts_fields_even_inside_json_cells(settings, data_dir):
    dc = ModelDataCollector("m", designation="inputs", settings=settings, exclude_features=["ssn", "*_phone"],
                            redact={"email": pseudonym})
    dc.collect([{"age": 41, "ssn": "078-05-1120", "email": "ann@example.com", "home_phone": "555-0100",
                 "profile": {"ssn": "078-05-1120", "email": "ann@example.com", "city": "Oslo"}}])
    frame = rows(data_dir, "inputs")
    assert [c for c in frame.columns if not c.startswith("$")] == ["age", "email", "profile"]
    assert frame.loc[0, "email"] == pseudonym("ann@example.com")
    assert json.loads(frame.loc[0, "profile"]) == {"email": pseudonym("ann@example.com"), "city": "Oslo"}
    text = all_text(data_dir)
    assert "078-05-1120" not in text and "ann@example.com" not in text and "555-0100" not in text


def test_environment_denylist_and_allowlist_apply_to_numpy_rows(data_dir):
    import numpy as np

    settings = Settings.from_env({"MDC_ENABLED": "true", "MDC_LOCAL_DIR": str(data_dir),
                                  "MDC_INCLUDE_FEATURES": "age,income,SSN", "MDC_EXCLUDE_FEATURES": "ssn"})
    dc = ModelDataCollector("m", designation="inputs", feature_names=["age", "income", "ssn", "zip"],
                            settings=settings)
    dc.collect(np.array([[41, 5000, 7805, 1234], [42, 6000, 9999, 4321]]))
    frame = rows(data_dir, "inputs")
    assert [c for c in frame.columns if not c.startswith("$")] == ["age", "income"]
    assert frame[["age", "income"]].values.tolist() == [["41", "5000"], ["42", "6000"]]


def test_rules_apply_to_a_numeric_frame_collected_without_a_copy(settings, data_dir):
    import pandas as pd

    dc = ModelDataCollector("m", designation="inputs", settings=settings, exclude_features=["ssn"],
                            redact={"zip": pseudonym})
    frame = pd.DataFrame({"age": [41.0, 42.0], "ssn": [7805.0, 9999.0], "zip": [1234.0, 4321.0]})
    dc.collect(frame)
    frame.loc[0, "zip"] = 0.0
    got = rows(data_dir, "inputs")
    assert [c for c in got.columns if not c.startswith("$")] == ["age", "zip"]
    assert got[["age", "zip"]].values.tolist() == [["41.0", pseudonym(1234.0)], ["42.0", pseudonym(4321.0)]]
    assert "7805" not in all_text(data_dir)


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_middleware_schema_rules_and_header_allowlist(kind, data_dir):
    settings = Settings.from_env({}, enabled=True, local_dir=str(data_dir), collect_headers=("user-agent", "x-tenant"),
                                 exclude_features=("password",))
    routes = {"/echo": Schema(exclude=["ssn"], redact={"name": pseudonym})}
    if kind == "asgi":
        app = fastapi_app(False, settings)
        app.add_middleware(DataCollectionMiddleware, settings=settings, routes=routes)
        post = TestClient(app).post
    else:
        from mdc_middleware import WSGIDataCollectionMiddleware

        app = flask_app(False, settings)
        app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, settings=settings, routes=routes)
        client = app.test_client()

        def post(path, content, headers):
            return client.post(path, data=content, headers=headers, buffered=True)
    body = json.dumps([{"name": "Ann", "ssn": "078-05-1120", "password": "hunter2", "x": 1}])
    post("/echo", content=body, headers={"content-type": "application/json", "user-agent": "probe/1",
                                          "x-tenant": "t-9", "authorization": "Bearer SECRET-1",
                                          "cookie": "sid=SECRET-2"})
    inputs = rows(data_dir, "inputs")
    assert [c for c in inputs.columns if not c.startswith("$aml")] == [
        "name", "x", "$mdc_header_user-agent", "$mdc_header_x-tenant"]
    assert inputs.loc[0, "name"] == pseudonym("Ann")
    assert (inputs.loc[0, "$mdc_header_user-agent"], inputs.loc[0, "$mdc_header_x-tenant"]) == ("probe/1", "t-9")
    predictions = rows(data_dir, "predictions")  # the echoed response obeys the same rules
    assert "ssn" not in predictions.columns and "password" not in predictions.columns
    text = all_text(data_dir)
    for secret in ("078-05-1120", "hunter2", "SECRET-1", "SECRET-2", "Ann,"):
        assert secret not in text


@pytest.mark.parametrize("name", ["authorization", "Cookie", "set-cookie", "proxy-authorization", "x-api-key",
                                  "ocp-apim-subscription-key", "x-auth-token"])
def test_credential_headers_cannot_be_allowlisted(name):
    with pytest.raises(ConfigError, match="never collected"):
        Settings.from_env({"MDC_COLLECT_HEADERS": f"user-agent,{name}"})


def test_unparsed_payloads_are_kept_raw_and_truncated_when_asked(data_dir):
    settings = Settings.from_env({}, enabled=True, local_dir=str(data_dir), record_unparsed=True,
                                 unparsed_max_bytes=64)
    client = TestClient(fastapi_app(True, settings))
    bad_json = b'{"data": [[1, 2], "' + "é".encode() * 100
    client.post("/echo", content=bad_json, headers={"content-type": "application/json"})
    client.post("/echo", content=b"\xff\xfe\x00binary" * 20, headers={"content-type": "application/json"})
    client.post("/echo", content=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, headers={"content-type": "application/json"})
    client.post("/echo", content=b'{"data": [[1, 2]]}', headers={"content-type": "application/json"})
    mdc_middleware.flush(10)
    raw = read_collected(data_dir, "unparsed", as_text=True)
    # The PNG is never kept; the good request's echoed response is JSON of a shape no schema reads.
    assert raw[["part", "reason"]].values.tolist() == [["inputs", "invalid_json"], ["predictions", "invalid_json"],
                                                     ["inputs", "invalid_json"], ["predictions", "invalid_json"],
                                                     ["predictions", "unknown_shape"]]
    first, binary = raw.iloc[0], raw.iloc[2]
    assert (first["bytes"], first["truncated"], first["body_encoding"]) == (str(len(bad_json)), "True", "utf-8")
    assert bad_json.decode("utf-8").startswith(first["body"]) and len(first["body"].encode()) in (63, 64)
    assert binary["body_encoding"] == "base64"
    assert base64.b64decode(binary["body"]) == (b"\xff\xfe\x00binary" * 20)[:64]
    assert raw["$aml_dc_correlation_id"].iloc[0] == raw["$aml_dc_correlation_id"].iloc[1]
    assert len(read_collected(data_dir, "inputs")) == 1  # the good request, collected as usual


def test_unparsed_payloads_are_withheld_from_routes_with_field_rules(data_dir):
    settings = Settings.from_env({}, enabled=True, local_dir=str(data_dir), record_unparsed=True)
    app = fastapi_app(False, settings)
    app.add_middleware(DataCollectionMiddleware, settings=settings, routes={"/echo": Schema(exclude=["ssn"])})
    TestClient(app).post("/echo", content=b'{"ssn": "078-05-1120", oops', headers={"content-type": "application/json"})
    mdc_middleware.flush(10)
    assert "078-05-1120" not in all_text(data_dir) if data_dir.exists() else True
    assert mdc_middleware.metrics()["skipped"]["unparsed:withheld_by_field_rules"] == 2


@pytest.mark.azurite
@pytest.mark.parametrize("credential", ["wrong_key", "bad_sas"])
def test_a_failing_credential_run_never_shows_the_secret(credential, azurite, tmp_path):
    from tests.azurite import ACCOUNT

    wrong_key = base64.b64encode(b"not the key, but shaped like one: " + b"k" * 30).decode()
    signature = "SIGNATURE" + "x" * 30
    if credential == "wrong_key":
        storage = {"MDC_STORAGE_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={wrong_key};"
            f"BlobEndpoint={azurite.account_url};")}
        secrets = [wrong_key, wrong_key[:20]]
    else:
        storage = {"MDC_STORAGE_ACCOUNT_URL": azurite.account_url,
                   "MDC_STORAGE_SAS_TOKEN": f"sv=2021-08-06&ss=b&srt=co&sp=rwl&se=2099-01-01&sig={signature}"}
        secrets = [signature]
    port = free_port()
    env = {"MDC_ENABLED": "true", "MDC_DEBUG": "true", "MDC_METRICS_PATH": "/metrics", "MDC_FLUSH_INTERVAL_SECONDS": "0.2",
           "MDC_RETRY_DEADLINE_SECONDS": "2", "MDC_SHUTDOWN_DEADLINE_SECONDS": "5",
           "MDC_SPOOL_DIR": str(tmp_path / "spool"), **storage}
    process = start_server([PYTHON, "-m", "uvicorn", "tests.apps.verbose_app:app", "--host", "127.0.0.1",
                            "--port", str(port), "--log-level", "debug"], env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for i in range(20):
                assert client.post("/score", json={"data": [[i, 0, 1.5]]}).status_code == 200
            time.sleep(3)  # let deliveries fail, retry and give up
            metrics = client.get("/metrics").text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    log = output.decode("utf-8", "replace")
    assert "403" in log or "AuthenticationFailed" in log or "AuthorizationFailure" in log, log[-3000:]
    assert 'mdc_write_errors_total' in metrics
    spooled = "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "spool").rglob("*") if p.is_file())
    for secret in secrets:
        for where, text in (("log", log), ("metrics", metrics), ("spool", spooled)):
            assert secret not in text, f"{credential}: secret found in the {where}"


@pytest.mark.parametrize("connection_string", ["SUPERSECRET-not-a-connection-string",
                                               "AccountName=a;AccountKey=SUPERSECRET==;garbage"])
def test_a_malformed_connection_string_fails_at_start_up_without_quoting_it(connection_string, caplog):
    settings = Settings.from_env({}, enabled=True, storage_connection_string=connection_string)
    with pytest.raises(ConfigError) as failure:
        ModelDataCollector("m", settings=settings)
    assert "MDC_STORAGE_CONNECTION_STRING" in str(failure.value)
    shown = str(failure.value) + repr(failure.value) + repr(settings) + caplog.text
    assert "SUPERSECRET" not in shown


def test_a_redaction_function_that_raises_withholds_the_rows_and_counts_them(settings, data_dir):
    def broken(value):
        raise RuntimeError("the app's redaction bug")

    dc = ModelDataCollector("m", designation="inputs", settings=settings, redact={"email": broken})
    dc.collect([{"email": "ann@example.com", "x": 1}, {"email": "bob@example.com", "x": 2}])
    dc.collect([{"x": 3}])  # no email cell: nothing to redact, written
    mdc_middleware.flush(10)
    metrics = mdc_middleware.metrics()
    assert metrics["dropped_reasons"] == {"field_rules_error": 2} and metrics["rows_written"] == 1
    assert "ann@example.com" not in all_text(data_dir)
