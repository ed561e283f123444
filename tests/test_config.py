import dataclasses
import os
import re

import pytest

from mdc_middleware import ConfigError, ModelDataCollector, Settings, config
from mdc_middleware.storage.paths import Target, parse_path, validate_component

from tests.helpers import ROOT

CONNECTION_STRING = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                     "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")


def test_collection_is_off_unless_enabled():
    assert Settings.from_env({}).enabled is False
    assert Settings.from_env({"MDC_ENABLED": "true"}).enabled is True
    assert Settings.from_env({"AML_MODEL_DC_STORAGE_ENABLED": "True", "MDC_LOCAL_DIR": "here"}).enabled is True
    assert Settings.from_env({"MDC_ENABLED": "false", "AML_MODEL_DC_STORAGE_ENABLED": "true"}).enabled is False


def test_azures_switch_without_storage_fails_start_up_naming_the_variable():
    """Azure's collector, switched on without AML_MODEL_DC_STORAGE, collected nothing; ours wrote to ./mdc-data on the
    container's own disk. A Secret that did not reach the pod looks just like this."""
    with pytest.raises(ConfigError, match="AML_MODEL_DC_STORAGE_ENABLED is true but no storage is set: set "
                                          "AML_MODEL_DC_STORAGE"):
        Settings.from_env({"AML_MODEL_DC_STORAGE_ENABLED": "true", "AML_MODEL_DC_STORAGE": " "})
    for storage in ({"AML_MODEL_DC_STORAGE": CONNECTION_STRING}, {"MDC_LOCAL_DIR": "/var/mdc"},
                    {"MDC_STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net", "MDC_STORAGE_SAS_TOKEN": "sv=1"}):
        assert Settings.from_env({"AML_MODEL_DC_STORAGE_ENABLED": "true", **storage}).enabled
    assert Settings.from_env({"MDC_ENABLED": "true"}).local_dir == "mdc-data"  # our switch: the local default
    assert Settings.from_env({"AML_MODEL_DC_STORAGE_ENABLED": "true"}, local_dir="/data").enabled  # set in code


def test_azure_names_and_own_names():
    s = Settings.from_env({"AML_MODEL_DC_BOUNDARY": "hour", "AML_MODEL_DC_DEBUG": "1", "SERVICE_NAME": "svc",
                           "MDC_WORKSPACE": "sub/rg/ws", "MDC_MODEL_NAME": "m", "MDC_MODEL_VERSION": "3",
                           "MDC_ROUTES": "/score, /v1/*/predict", "MDC_SAMPLE_RATE": "0.25",
                           "MDC_BATCH_ROWS": "500", "MDC_FLUSH_INTERVAL_SECONDS": "2.5"})
    assert (s.boundary, s.debug, s.webservice_name) == (60, True, "svc")
    assert s.workspace == "sub/rg/ws"
    assert (s.model_name, s.model_version, s.routes) == ("m", "3", ("/score", "/v1/*/predict"))
    assert (s.sample_rate, s.batch_rows, s.flush_interval) == (0.25, 500, 2.5)


def test_keyword_arguments_override_environment():
    s = Settings.from_env({"MDC_BATCH_ROWS": "500", "MDC_ENABLED": "false"}, batch_rows=7, enabled=True)
    assert (s.batch_rows, s.enabled) == (7, True)


@pytest.mark.parametrize("variable,value", [
    ("MDC_ENABLED", "maybe"), ("MDC_BATCH_ROWS", "-1"), ("MDC_BATCH_ROWS", "ten"),
    ("MDC_SAMPLE_RATE", "1.5"), ("AML_MODEL_DC_BOUNDARY", "week"), ("MDC_FLUSH_INTERVAL_SECONDS", "0"),
    ("MDC_WORKSPACE", "only/two"), ("MDC_FLUSH_INTERVAL_SECONDS", "nan"), ("MDC_SHUTDOWN_DEADLINE_SECONDS", "inf"),
    ("MDC_SAMPLE_RATE", "nan"),
])
def test_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize("name,value", [
    ("flush_interval", 0), ("flush_interval", float("nan")), ("shutdown_deadline", float("inf")),
    ("retry_deadline", -1.0), ("batch_rows", -5), ("batch_rows", 2.5), ("max_body_bytes", "lots"),
    ("queue_size", True), ("enabled", "maybe"), ("echo_request_id", 1), ("sample_rate", float("nan")),
    ("sample_rate", "half"), ("routes", 5), ("exclude_features", None), ("boundary", "week"),
])
def test_keywords_get_the_checks_environment_variables_get(name, value):
    """flush_interval=0 or NaN made the batcher spin on a core; a text max_body_bytes failed every request."""
    if value is not None:  # to from_env, None means "not given"
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({}, **{name: value})
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({}).replace(**{name: value})


def test_keywords_given_as_text_are_read_as_their_environment_variables():
    s = Settings.from_env({}, enabled="false", max_body_bytes="1000", flush_interval="2.5", boundary="hour",
                          routes="/score, /v1/*/predict", exclude_features="SSN,email", collect_headers="X-Tenant")
    assert (s.enabled, s.max_body_bytes, s.flush_interval, s.boundary) == (False, 1000, 2.5, 60)
    assert s.routes == ("/score", "/v1/*/predict")
    assert (s.exclude_features, s.collect_headers) == (("ssn", "email"), ("x-tenant",))
    assert Settings(routes=["/a"], include_features=["b"]).routes == ("/a",)  # lists kept as tuples: hashable
    assert hash(Settings(routes=["/a"], include_features=["b"]))


@pytest.mark.parametrize("container", ["c1", "ModelData", "model--data", "-data", "data-", "model_data", "d" * 64])
def test_a_container_name_azure_refuses_fails_start_up_not_the_first_write(container):
    """Azure answered the first append with HTTP 400 (OutOfRangeInput, InvalidResourceName) and the rows went to
    the spool for good; now start-up names the variable, the rule and, where it is only the case, the name meant."""
    blob = {"MDC_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true", "MDC_CONTAINER": container}
    with pytest.raises(ConfigError, match="MDC_CONTAINER=.*3 to 63 characters, lower-case letters") as raised:
        Settings.from_env(blob)
    assert ("did you mean 'modeldata'?" in str(raised.value)) == (container == "ModelData")
    assert Settings.from_env({"MDC_CONTAINER": container}).container == container  # a local folder takes it


@pytest.mark.parametrize("container", ["abc", "model-data-2", "d" * 63, "$root"])
def test_container_names_azure_takes_are_taken(container):
    blob = {"MDC_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true", "MDC_CONTAINER": container}
    assert Settings.from_env(blob).container == container


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "x\x00y", "tab\tbed", "", "n" * 129, " lead"])
def test_path_components_that_could_escape_are_rejected(name):
    with pytest.raises(ValueError):
        validate_component(name)
    with pytest.raises(ConfigError, match="model_name"):
        Settings.from_env({}, model_name=name)
    with pytest.raises(ConfigError):
        ModelDataCollector(name, designation="inputs")


@pytest.mark.parametrize("variable,meant", [
    ("MDC_ROUTS", "MDC_ROUTES"), ("MDC_SPOOL_DRI", "MDC_SPOOL_DIR"), ("MDC_FLUSH_INTERVAL", "MDC_FLUSH_INTERVAL_SECONDS"),
    ("mdc_enabled", "MDC_ENABLED"), ("MDC_STORAGE_CONNECTION_STRNG", "MDC_STORAGE_CONNECTION_STRING"),
])
def test_a_misspelt_variable_fails_naming_it_and_the_one_meant_never_its_value(variable, meant):
    """MDC_SPOOL_DRI=/data ran without the journal it asked for, and nothing said so."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"MDC_ENABLED": "true", variable: "AccountKey=c2VjcmV0S2V5"})
    message = str(raised.value)
    assert message.startswith(f"{variable} is set") and f"did you mean {meant}?" in message
    assert "c2VjcmV0S2V5" not in message


def test_names_like_ours_that_nothing_reads_are_warned_of_once(monkeypatch, caplog):
    from mdc_middleware import startup

    environ = {"MDC_ENABLED": "true", "MDC_FOO": "1", "AML_MODEL_DC_STORAGE_ENABLE": "true", "MDCX": "1",
               # Kubernetes's links to a Service named "mdc" in the namespace: not ours, said nothing of
               "MDC_SERVICE_HOST": "10.0.0.1", "MDC_SERVICE_PORT_HTTP": "80", "MDC_PORT": "tcp://10.0.0.1:80",
               "MDC_PORT_80_TCP_ADDR": "10.0.0.1", "MDC_PORT_80_TCP_PROTO": "tcp"}
    settings = Settings.from_env(environ)  # neither is refused: close to none of ours, and Azure's own names
    assert settings.enabled
    monkeypatch.setattr(startup, "_announced", set())
    monkeypatch.setattr(os, "environ", environ)
    with caplog.at_level("INFO", logger="mdc_middleware"):
        startup.announce(settings)
        startup.announce(settings.replace(container="other"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["mdc: AML_MODEL_DC_STORAGE_ENABLE (did you mean AML_MODEL_DC_STORAGE_ENABLED?), MDC_FOO: "
                        "set, but mdc-middleware reads no variable of that name; ignored"]


def test_every_variable_the_package_examples_and_readme_name_is_one_it_reads():
    """Else a variable read somewhere but missing from ``KNOWN_VARIABLES`` would fail start-up as misspelt."""
    named = set()
    for path in [*(ROOT / "mdc_middleware").rglob("*.py"), *(ROOT / "examples").rglob("*"),
                 *(ROOT / "scripts").rglob("*"), ROOT / "README.md"]:
        if path.is_file():
            named.update(re.findall(r"\b(?:MDC|AML_MODEL_DC)_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))
    assert named - config.KNOWN_VARIABLES == {"MDC_ROUTS", "MDC_SPOOL_DRI"}  # the misspellings shown as such
    assert len(named) > 40


def test_secrets_never_in_repr():
    secret = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0S2V5;"
    s = Settings.from_env({"MDC_STORAGE_CONNECTION_STRING": secret, "MDC_STORAGE_SAS_TOKEN": "sig=abc123secret"})
    assert "c2VjcmV0S2V5" not in repr(s) and "abc123secret" not in repr(s)
    assert s.uses_blob_storage


def test_model_config_map_is_read(tmp_path):
    path = tmp_path / "model_config_map.json"
    path.write_text('{"accountContext": {"subscriptionId": "s1", "resourceGroupName": "rg1", '
                    '"accountName": "ws1"}, "serviceName": "svc1"}')
    s = Settings.from_env({"MDC_MODEL_CONFIG_MAP": str(path), "SERVICE_NAME": "from-env"})
    assert s.workspace == "s1/rg1/ws1"
    assert s.webservice_name == "from-env"  # environment beats the file


def test_layout_round_trip_and_unpadded_folders():
    import datetime as dt

    target = Target("sub", "rg", "ws", "svc", "model", "2", "inputs")
    folder = target.day_folder(dt.date(2026, 1, 5))
    assert folder == "modeldata/sub/rg/ws/svc/model/2/inputs/2026/01/05"
    parsed = parse_path(folder + "/data_3.csv")
    assert (parsed.model_name, parsed.model_version, parsed.designation, parsed.date, parsed.file_name) == (
        "model", "2", "inputs", dt.date(2026, 1, 5), "data_3.csv")
    assert parse_path("modeldata/sub/rg/ws/svc/model/2/inputs/2026/1/5/data.csv").date == dt.date(2026, 1, 5)
    assert parse_path("modeldata/sub/rg/ws/svc/model/2/inputs/2026/13/5/data.csv") is None


def test_storage_misconfiguration_fails_when_the_app_starts():
    from fastapi import FastAPI

    from mdc_middleware import DataCollectionMiddleware

    with pytest.raises(ConfigError, match="MDC_STORAGE_SAS_TOKEN"):
        DataCollectionMiddleware(FastAPI(), enabled=True, storage_account_url="https://a.blob.core.windows.net")
    with pytest.raises(ConfigError, match="MDC_STORAGE_SAS_TOKEN"):
        ModelDataCollector("m", settings=Settings.from_env(
            {}, enabled=True, storage_account_url="https://a.blob.core.windows.net"))


@pytest.mark.parametrize("value", ["", " ", ","])
def test_an_empty_feature_allowlist_variable_means_every_feature(value):
    """Set to nothing (an empty Helm value), it used to allow no feature at all: rows kept only their ids."""
    settings = Settings.from_env({"MDC_INCLUDE_FEATURES": value})
    assert settings.include_features is None and settings.field_rules.allows("age")
    assert Settings.from_env({"MDC_INCLUDE_FEATURES": "Age, b*"}).include_features == ("age", "b*")


def test_a_variable_set_to_nothing_is_not_set():
    """An empty Helm value: MDC_CSV_NEUTRALIZE_FORMULAS="" turned formula neutralising off, MDC_BATCH_ROWS=""
    failed start-up. An empty MDC_REQUEST_ID_HEADER still means: send no request-id header."""
    empty = {name: "" for name in ("MDC_CSV_NEUTRALIZE_FORMULAS", "MDC_ECHO_REQUEST_ID", "MDC_BATCH_ROWS",
                                   "MDC_SAMPLE_RATE", "MDC_BOUNDARY", "MDC_ROUTES", "MDC_MODEL_NAME")}
    settings = Settings.from_env({**empty, "MDC_REQUEST_ID_HEADER": "", "AML_MODEL_DC_STORAGE_ENABLED": "true",
                                  "MDC_ENABLED": " ", "MDC_LOCAL_DIR": "mdc-data"})
    default = Settings()
    assert (settings.neutralize_formulas, settings.echo_request_id, settings.batch_rows, settings.sample_rate,
            settings.boundary, settings.routes, settings.model_name) == (
        default.neutralize_formulas, default.echo_request_id, default.batch_rows, default.sample_rate,
        default.boundary, default.routes, default.model_name)
    assert settings.enabled is True  # MDC_ENABLED empty: the Azure name decides
    assert settings.request_id_header == ""


@pytest.mark.parametrize("variable", ["MDC_LOCAL_DIR", "MDC_SPOOL_DIR"])
def test_a_folder_nothing_could_be_written_to_fails_at_start_up_naming_the_variable(tmp_path, variable):
    """It failed at the first flush, on the writer thread (the local folder), or with a bare OSError (the spool)."""
    from fastapi import FastAPI

    from mdc_middleware import DataCollectionMiddleware

    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    environ = {"MDC_ENABLED": "true", variable: str(in_the_way / "data")}
    if variable == "MDC_SPOOL_DIR":  # the spool is for blob storage; nothing is contacted at start-up
        environ["MDC_STORAGE_CONNECTION_STRING"] = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    else:  # a folder still to be made is fine, and is not made before rows come
        DataCollectionMiddleware(FastAPI(), settings=Settings.from_env({**environ, variable: str(tmp_path / "not-yet")}))
    with pytest.raises(ConfigError, match=f"{variable}=.*is not a directory"):
        DataCollectionMiddleware(FastAPI(), settings=Settings.from_env(environ))
    assert not (tmp_path / "not-yet").exists()


def test_azure_names_of_the_config_map_are_lower_cased_as_azure_did(tmp_path):
    """azureml-monitoring lower-cases the account's names in the path; blob names are case-sensitive."""
    path = tmp_path / "model_config_map.json"
    path.write_text('{"accountContext": {"subscriptionId": "SUB-A", "resourceGroupName": "My-RG", '
                    '"accountName": "My-WS"}, "serviceName": "Svc-1"}')
    s = Settings.from_env({"MDC_MODEL_CONFIG_MAP": str(path)})
    assert s.workspace == "sub-a/my-rg/my-ws" and s.webservice_name == "Svc-1"


def test_azure_storage_variable_is_the_connection_string():
    s = Settings.from_env({"AML_MODEL_DC_STORAGE_ENABLED": "true", "AML_MODEL_DC_STORAGE": CONNECTION_STRING})
    assert s.uses_blob_storage and s.storage_connection_string == CONNECTION_STRING


def test_collector_without_version_takes_the_highest_in_models_info(tmp_path, monkeypatch, data_dir):
    path = tmp_path / "model_config_map.json"
    path.write_text('{"modelsInfo": {"m": {"2": {}, "10": {"dataCollectorStoragePath": "x"}, "9": {}}}}')
    monkeypatch.setenv("MDC_MODEL_CONFIG_MAP", str(path))
    settings = Settings.from_env({}, enabled=True, local_dir=str(data_dir))
    assert ModelDataCollector("m", designation="inputs", settings=settings).target.model_version == "10"
    assert ModelDataCollector("m", model_version="3", settings=settings).target.model_version == "3"
    assert ModelDataCollector("other", settings=settings).target.model_version == "default"


def test_collector_without_designation_writes_general_as_azure_did(settings):
    assert ModelDataCollector("m", settings=settings).target.designation == "general"


def test_the_readme_table_of_variables_is_the_one_the_settings_describe():
    """Each setting is described once, on its field: the README's table must be what those descriptions make
    (``config.settings_table()``; paste it in when a setting changes)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config.settings_table() in readme
    documented = {v for line in config.settings_table().splitlines()[2:] for v in re.findall(r"`(MDC_\w+|AML_\w+|"
                                                                                           r"SERVICE_NAME)`", line)}
    read = {v for variables, _ in config.ENVIRONMENT.values() for v in variables}
    assert read <= documented


def test_every_setting_is_described_and_sink_settings_make_the_sink_key():
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("env") and f.metadata.get("doc"), f.name
    base = Settings()
    for f in dataclasses.fields(Settings):
        if f.metadata.get("sink") and f.metadata.get("kind") == "flag":
            assert base.replace(**{f.name: not getattr(base, f.name)}).sink_key() != base.sink_key(), f.name


KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's, public


@pytest.mark.parametrize("connection_string,problem", [
    (f"AccountName=acct;AccountKey={KEY[:-2]}", "has an AccountKey that is not base64"),  # copied short
    ("AccountName=acct;AccountKey=my-secret-key!", "has an AccountKey that is not base64"),
    ("DefaultEndpointsProtocol=https;AccountName=acct;EndpointSuffix=core.windows.net",
     "has neither an AccountKey nor a SharedAccessSignature"),
])
def test_a_connection_string_that_could_never_write_fails_start_up_without_showing_it(connection_string, problem):
    """The SDK finds a key that is not base64 only when it signs the first request (AzureSigningError, every
    write failed and was retried for good); a string without a credential sent anonymous writes."""
    with pytest.raises(ConfigError, match=f"MDC_STORAGE_CONNECTION_STRING {problem}") as raised:
        ModelDataCollector("m", designation="inputs", settings=Settings.from_env(
            {"MDC_ENABLED": "true", "MDC_STORAGE_CONNECTION_STRING": connection_string, "MDC_SPOOL_DIR": "off"}))
    assert "secret-key" not in str(raised.value) and KEY[:20] not in str(raised.value)


@pytest.mark.parametrize("connection_string,endpoint", [
    (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net",
     "https://acct.blob.core.windows.net"),
    ("BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sig=abc",
     "https://acct.blob.core.windows.net/"),
    ("UseDevelopmentStorage=true", "http://127.0.0.1:10000/devstoreaccount1"),  # the SDK's own short form
])
def test_connection_strings_that_can_write_are_taken_and_their_endpoint_shown(connection_string, endpoint):
    from mdc_middleware.storage.blob import client_factory

    settings = Settings.from_env({"MDC_STORAGE_CONNECTION_STRING": connection_string})
    assert client_factory(settings)().primary_endpoint.startswith(endpoint)
    assert settings.storage_endpoint == endpoint


def test_a_connection_string_set_under_azures_name_is_named_so(monkeypatch):
    monkeypatch.setenv("AML_MODEL_DC_STORAGE", "AccountName=acct;AccountKey=short")
    monkeypatch.delenv("MDC_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError, match="^AML_MODEL_DC_STORAGE has an AccountKey that is not base64"):
        ModelDataCollector("m", designation="inputs", settings=Settings.from_env().replace(enabled=True,
                                                                                          spool_dir="off"))


@pytest.mark.parametrize("variable,value,field,expected", [
    ("MDC_MAX_BODY_BYTES", "10MiB", "max_body_bytes", 10 << 20), ("MDC_MAX_BODY_BYTES", "10 MB", "max_body_bytes",
                                                                   10_000_000),
    ("MDC_SPOOL_MAX_BYTES", "1Gi", "spool_max_bytes", 1 << 30), ("MDC_SPOOL_MAX_BYTES", "1gb", "spool_max_bytes", 10**9),
    ("MDC_QUEUE_MAX_BYTES", "512Ki", "queue_max_bytes", 512 << 10), ("MDC_BATCH_BYTES", "4194304", "batch_bytes", 4 << 20),
    ("MDC_FLUSH_INTERVAL_SECONDS", "500ms", "flush_interval", 0.5), ("MDC_RETRY_DEADLINE_SECONDS", "2m",
                                                                     "retry_deadline", 120.0),
    ("MDC_SHUTDOWN_DEADLINE_SECONDS", "25s", "shutdown_deadline", 25.0), ("MDC_SAMPLE_RATE", "10%", "sample_rate", 0.1),
    ("MDC_BATCH_ROWS", "1e4", "batch_rows", 10_000), ("MDC_QUEUE_SIZE", "10_000", "queue_size", 10_000),
])
def test_sizes_durations_and_rates_are_read_as_operators_write_them(variable, value, field, expected):
    assert getattr(Settings.from_env({variable: value}), field) == expected


@pytest.mark.parametrize("variable,value,said", [
    ("MDC_SPOOL_MAX_BYTES", "lots", "expected a size in bytes (1048576, 1MiB, 512Ki, 1GB), got 'lots'"),
    ("MDC_SPOOL_MAX_BYTES", "1 parsec", "expected a size in bytes"),
    ("MDC_FLUSH_INTERVAL_SECONDS", "5 fortnights", "expected a number of seconds (5, 0.5, 500ms, 2m)"),
    ("MDC_BATCH_ROWS", "2.5", "expected a whole number > 0 (10000), got '2.5'"),
    ("MDC_BATCH_ROWS", "0", "must be a finite number more than 0"),
    ("MDC_SAMPLE_RATE", "half", "expected a fraction from 0 to 1 (0.1, or 10%, for a tenth), got 'half'"),
    ("MDC_SAMPLE_RATE", "150%", "must be between 0 and 1"),
])
def test_a_value_that_cannot_be_read_says_what_was_expected(variable, value, said):
    """Not Python's own words ("invalid literal for int() with base 10")."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value).startswith(f"{variable}={value!r}: ") and said in str(raised.value)
    assert "literal" not in str(raised.value) and "convert" not in str(raised.value)
