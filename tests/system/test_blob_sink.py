"""The blob sink against a real Azurite: append blobs, exactly-once appends, limits, credentials."""
import datetime as dt
import logging
import multiprocessing
import time

import pytest
from azure.storage.blob import (AccountSasPermissions, BlobServiceClient, ContainerClient, ContainerSasPermissions,
                                ResourceTypes, generate_account_sas, generate_container_sas)

import mdc_middleware
from mdc_middleware import ModelDataCollector, Settings
from mdc_middleware.metrics import Metrics
from mdc_middleware.storage.paths import Target
from mdc_middleware.records.csv_encoding import header_line
from mdc_middleware.storage.sink import SinkError
from mdc_middleware.storage.blob import BlobSink, split_blocks

from tests.azurite import ACCOUNT, KEY, connection_string
from tests.helpers import blob_rows
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.azurite
TARGET = Target("s", "r", "w", "svc", "m", "1", "inputs")
HEADER = header_line(["x"])


def sink_for(conn: str, container: str, **options) -> BlobSink:
    return BlobSink(lambda: BlobServiceClient.from_connection_string(conn, retry_total=0), container, **options)


def lines(prefix: str, count: int, start: int = 0) -> bytes:
    return "".join(f"{prefix}{i}\n" for i in range(start, start + count)).encode()


def blob_texts(azurite, container: str) -> dict:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    return {b.name: client.download_blob(b.name).readall().decode() for b in client.list_blobs()}


def test_creates_container_and_writes_header_once(azurite, container_name):
    sink = sink_for(azurite.connection_string, container_name)
    sink.append("f/2026/01/01", "data", HEADER, lines("a", 3))
    sink.append("f/2026/01/01", "data", HEADER, lines("b", 2))
    sink.close()
    fresh = sink_for(azurite.connection_string, container_name)  # a restart finds the same file
    fresh.append("f/2026/01/01", "data", HEADER, lines("c", 1))
    assert blob_texts(azurite, container_name) == {
        "f/2026/01/01/data.csv": HEADER + "a0\na1\na2\nb0\nb1\nc0\n"}


def test_collector_rows_read_back_with_pandas(azurite, blob_settings, container_name):
    dc = ModelDataCollector("m", designation="inputs", feature_names=["a", "b"], settings=blob_settings)
    dc.collect([[1, "x,y"], [2.5, 'q"uote']])
    got = blob_rows(azurite, container_name, "inputs")
    assert got[["a", "b"]].values.tolist() == [["1", "x,y"], ["2.5", 'q"uote']]
    day = dt.datetime.now(dt.timezone.utc)
    texts = blob_texts(azurite, container_name)
    folder = f"modeldata/default/default/default/default/m/default/inputs/{day:%Y}/{day:%m}/{day:%d}"
    assert sorted(texts) == [f"{folder}/_mdc_schema.jsonl", f"{folder}/data.csv"]
    assert texts[f"{folder}/_mdc_schema.jsonl"] == '{"text_columns": ["b"]}\n'  # which column held text


def _replica(conn, container, index, barrier):
    barrier.wait(30)
    sink = sink_for(conn, container)
    for batch in range(5):
        sink.append("f/2026/01/01", "data", HEADER, lines(f"p{index}-{batch}-", 20))


def test_four_replicas_starting_together_write_one_header(azurite, container_name):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_replica, args=(azurite.connection_string, container_name, i, barrier))
               for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    (text,) = blob_texts(azurite, container_name).values()
    body = text.splitlines()
    assert body[0] + "\n" == HEADER and body.count(HEADER.strip()) == 1
    expected = {f"p{i}-{b}-{n}" for i in range(4) for b in range(5) for n in range(20)}
    assert len(body) - 1 == len(expected) and set(body[1:]) == expected


def test_blocks_stay_under_the_block_limit(azurite, container_name):
    sink = sink_for(azurite.connection_string, container_name, max_block_bytes=1000)
    payload = lines("row-with-some-width-", 500)
    sink.append("f/2026/01/01", "data", HEADER, payload)
    client = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    properties = client.get_blob_client("f/2026/01/01/data.csv").get_blob_properties()
    blocks = list(split_blocks(payload, 1000))
    assert len(blocks) > 10 and all(len(block) <= 1000 for block in blocks)
    assert properties.append_blob_committed_block_count == 1 + len(blocks)  # the header, then the rows
    assert blob_texts(azurite, container_name)["f/2026/01/01/data.csv"] == HEADER + payload.decode()


def test_split_blocks_never_cuts_a_row():
    payload = lines("r", 1000)
    blocks = list(split_blocks(payload, 64))
    assert b"".join(blocks) == payload and all(b.endswith(b"\n") and len(b) <= 64 for b in blocks)
    with pytest.raises(SinkError):
        list(split_blocks(b"x" * 100 + b"\n", 64))


def test_full_blob_rolls_over_without_losing_or_duplicating(azurite, container_name):
    metrics = Metrics()
    sink = sink_for(azurite.connection_string, container_name, max_blocks=4, max_block_bytes=200, metrics=metrics)
    for batch in range(10):
        sink.append("f/2026/01/01", "data", HEADER, lines(f"b{batch}-", 15))
    texts = blob_texts(azurite, container_name)
    assert len(texts) >= 3 and "f/2026/01/01/data_1.csv" in texts
    rows = []
    for name, text in texts.items():
        assert text.startswith(HEADER) and text.count(HEADER) == 1
        rows.extend(text.splitlines()[1:])
    assert sorted(rows) == sorted(f"b{b}-{n}" for b in range(10) for n in range(15))
    assert metrics.snapshot()["files_rolled_over"] == len(texts) - 1
    # a restarted writer continues in the newest file instead of the full ones
    fresh = sink_for(azurite.connection_string, container_name, max_blocks=4, max_block_bytes=200)
    fresh.append("f/2026/01/01", "data", HEADER, lines("late", 1))
    newest = f"f/2026/01/01/data_{len(texts) - 1}.csv"
    assert blob_texts(azurite, container_name)[newest].endswith("late0\n")


@pytest.mark.parametrize("code", ["BlockCountExceedsLimit", "MaxBlobSizeConditionNotMet"])
def test_a_blob_storage_calls_full_rolls_over_though_this_writer_counted_less(azurite, container_name, proxy, code):
    """Replicas sharing a day's file each count only their own blocks: the 50,000th block may be another's, and
    storage's refusal is then the only word of it (Azurite answers so past 50,000 blocks; 50,000 appends take
    minutes, so the proxy answers in its place, once)."""
    metrics = Metrics()
    sink = sink_for(azurite.connection_string.replace(str(azurite.port), str(proxy.port)), container_name,
                    metrics=metrics)
    sink.append("f/2026/01/01", "data", HEADER, lines("a", 3))
    proxy.fail(1, status=409, error_code=code)
    sink.append("f/2026/01/01", "data", HEADER, lines("b", 3))
    sink.append("f/2026/01/01", "data", HEADER, lines("c", 3))
    texts = blob_texts(azurite, container_name)
    assert texts == {"f/2026/01/01/data.csv": HEADER + "".join(f"a{n}\n" for n in range(3)),
                     "f/2026/01/01/data_1.csv": HEADER + "".join(f"{x}{n}\n" for x in "bc" for n in range(3))}
    assert metrics.snapshot()["files_rolled_over"] == 1 and proxy.pending_faults() == 0


@pytest.fixture
def proxy(azurite):
    server = FaultProxy(azurite.port).start()
    yield server
    server.stop()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(azurite, container_name, proxy, status):
    metrics = Metrics()
    sink = sink_for(connection_string(proxy.port), container_name, metrics=metrics)
    sink.append("f/2026/01/01", "data", HEADER, lines("a", 1))
    proxy.fail(2, status=status)
    sink.append("f/2026/01/01", "data", HEADER, lines("b", 2))
    assert proxy.pending_faults() == 0
    assert metrics.snapshot()["storage_retries"] == 2
    assert blob_texts(azurite, container_name)["f/2026/01/01/data.csv"] == HEADER + "a0\nb0\nb1\n"


def test_connection_resets_are_retried(azurite, container_name, proxy):
    sink = sink_for(connection_string(proxy.port), container_name)
    sink.append("f/2026/01/01", "data", HEADER, lines("a", 1))
    proxy.reset(3)
    sink.append("f/2026/01/01", "data", HEADER, lines("b", 1))
    assert proxy.pending_faults() == 0
    assert blob_texts(azurite, container_name)["f/2026/01/01/data.csv"] == HEADER + "a0\nb0\n"


def test_ambiguous_failure_does_not_duplicate(azurite, container_name, proxy):
    """The append lands but its response is lost: the retry must see it landed and not append again."""
    sink = sink_for(connection_string(proxy.port), container_name)
    sink.append("f/2026/01/01", "data", HEADER, lines("a", 1))
    proxy.drop_response(1)
    sink.append("f/2026/01/01", "data", HEADER, lines("b", 3))
    assert [kind for kind, _, _ in proxy.injected] == ["drop_response"]
    sink.append("f/2026/01/01", "data", HEADER, lines("c", 1))
    assert blob_texts(azurite, container_name)["f/2026/01/01/data.csv"] == HEADER + "a0\nb0\nb1\nb2\nc0\n"


def test_ambiguous_header_append_does_not_duplicate_the_header(azurite, container_name, proxy):
    sink = sink_for(connection_string(proxy.port), container_name)
    proxy.drop_response(1)  # the very first append is the header
    sink.append("f/2026/01/01", "data", HEADER, lines("a", 1))
    assert blob_texts(azurite, container_name)["f/2026/01/01/data.csv"] == HEADER + "a0\n"


def test_retry_deadline_bounds_an_outage(azurite, container_name, proxy):
    sink = sink_for(connection_string(proxy.port), container_name)
    sink.append("f/2026/01/01", "data", HEADER, lines("a", 1))
    proxy.fail(10**6, status=503)
    started = time.monotonic()
    with pytest.raises(SinkError) as info:
        sink.append("f/2026/01/01", "data", HEADER, lines("b", 1), deadline=time.monotonic() + 2)
    assert time.monotonic() - started < 8
    assert not info.value.permanent and "503" in str(info.value)


@pytest.mark.parametrize("spool", [True, False])
def test_permanent_failure_is_reported_once_and_rows_are_kept(azurite, container_name, caplog, spool, spool_dir):
    bad_key = "QmFkS2V5Rm9yVGVzdHNPbmx5QmFkS2V5Rm9yVGVzdHNPbmx5QmFkS2V5Rm9yVGVzdHM="
    conn = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={bad_key};"
            f"BlobEndpoint={azurite.account_url};")
    settings = Settings.from_env({}, enabled=True, storage_connection_string=conn, container=container_name,
                                 flush_interval=0.05, retry_deadline=2, spool_dir=str(spool_dir) if spool else "off")
    caplog.set_level(logging.DEBUG, logger="mdc_middleware")
    dc = ModelDataCollector("m", designation="inputs", settings=settings)
    for i in range(5):
        dc.collect([[i]])
    writer = dc.writer
    assert not writer.force_flush(timeout=5)
    time.sleep(1.5)  # several more rounds of retries
    snap = writer.snapshot()
    assert snap["write_errors"] >= 2 and snap["rows_written"] == 0 and snap["rows_dropped"] == 0
    if spool:  # kept on disk, retried from there
        assert snap["rows_spooled"] == 5 and snap["spool_bytes"] > 0 and snap["pending_rows"] == 0
    else:  # kept in memory, retried from there
        assert snap["pending_rows"] == 5 and snap["rows_spooled"] == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "403" in errors[0].getMessage()
    assert bad_key not in caplog.text and bad_key[:20] not in caplog.text
    assert bad_key not in repr(settings) and bad_key not in str(snap)
    writer.shutdown(1)


def test_bad_container_name_is_permanent(azurite):
    sink = sink_for(azurite.connection_string, "Bad_Container_Name")
    with pytest.raises(SinkError) as info:
        sink.append("f/2026/01/01", "data", HEADER, lines("a", 1), deadline=time.monotonic() + 5)
    assert info.value.permanent and "400" in str(info.value)


def test_account_url_with_sas(azurite, container_name):
    sas = generate_account_sas(ACCOUNT, KEY, ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions(read=True, write=True, add=True, create=True, list=True),
                               expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    settings = Settings.from_env({}, enabled=True, storage_account_url=azurite.account_url, storage_sas_token=sas,
                                 container=container_name)
    ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings).collect([[1]])
    assert blob_rows(azurite, container_name, "inputs")["x"].tolist() == ["1"]
    assert sas.split("sig=")[1][:10] not in repr(settings)


def container_sas_settings(azurite, container: str, permission: str, spool_dir) -> Settings:
    sas = generate_container_sas(ACCOUNT, container, account_key=KEY,
                                 permission=ContainerSasPermissions.from_string(permission),
                                 expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    return Settings.from_env({}, enabled=True, storage_account_url=azurite.account_url, storage_sas_token=sas,
                             container=container, flush_interval=60.0, retry_deadline=2.0, spool_dir=str(spool_dir))


def test_a_sas_for_the_container_alone_writes_to_it(azurite, container_name, spool_dir):
    """The least a collector needs is a SAS for its container, and such a SAS may not create containers:
    every write failed with 403 (AuthorizationPermissionMismatch) and the rows waited in the spool for good."""
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container_name)
    settings = container_sas_settings(azurite, container_name, "racwl", spool_dir)
    ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings).collect([[1], [2]])
    assert blob_rows(azurite, container_name, "inputs")["x"].tolist() == ["1", "2"]
    assert mdc_middleware.metrics()["write_errors"] == 0


def test_a_container_sas_for_a_missing_container_says_so_and_keeps_the_rows(azurite, container_name, spool_dir,
                                                                            caplog):
    settings = container_sas_settings(azurite, container_name, "racwl", spool_dir)
    collector = ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings)
    collector.collect([[1], [2]])
    assert not mdc_middleware.flush(2)
    assert f"container '{container_name}' does not exist, and the credential may not create it" in caplog.text
    assert mdc_middleware.metrics()["rows_spooled"] == 2
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container_name)
    collector.collect([[3]])
    assert sorted(blob_rows(azurite, container_name, "inputs")["x"]) == ["1", "2", "3"]


def test_a_sas_without_read_or_list_is_named_as_the_fault(azurite, container_name, spool_dir, caplog):
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container_name)
    settings = container_sas_settings(azurite, container_name, "acw", spool_dir)
    ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings).collect([[1]])
    assert not mdc_middleware.flush(2)
    assert "the credential needs read, add, create, write and list (SAS permissions 'racwl')" in caplog.text
    assert mdc_middleware.metrics()["rows_spooled"] == 1
    mdc_middleware.shutdown(1)  # the row stays in the spool


def test_managed_identity_builds_a_default_credential():
    """Only construction is tested: a token request would go to the cloud's identity endpoint."""
    from mdc_middleware.storage.blob import client_factory

    settings = Settings.from_env({}, storage_account_url="https://account.blob.core.windows.net",
                                 storage_managed_identity=True)
    client = client_factory(settings)()
    assert type(client.credential).__name__ == "DefaultAzureCredential"
    assert client.account_name == "account"
    with pytest.raises(mdc_middleware.ConfigError, match="https"):
        client_factory(settings.replace(storage_account_url="http://127.0.0.1:1/devstoreaccount1"))


def test_account_url_without_credential_fails_at_start_up(azurite):
    with pytest.raises(mdc_middleware.ConfigError, match="MDC_STORAGE_SAS_TOKEN"):
        from mdc_middleware.storage.blob import client_factory

        client_factory(Settings.from_env({}, storage_account_url=azurite.account_url))


def test_appends_that_meet_another_writers_rows_are_counted_as_conflicts(azurite, container_name):
    first, second = sink_for(azurite.connection_string, container_name), sink_for(azurite.connection_string,
                                                                                   container_name)
    for batch in range(3):  # each learns the file's end, then the other appends past it
        first.append("f/2026/01/01", "data", HEADER, lines(f"a{batch}-", 2))
        second.append("f/2026/01/01", "data", HEADER, lines(f"b{batch}-", 2))
    assert first.metrics.snapshot()["storage_conflicts"] == second.metrics.snapshot()["storage_conflicts"] == 2
    assert first.metrics.snapshot()["storage_retries"] == 0


def test_the_first_storage_failure_is_logged_at_once_with_host_and_cause(caplog):
    from tests.helpers import free_port

    port = free_port()  # nothing listens there
    conn = connection_string(port)
    sink = sink_for(conn, "c")
    sink.description = f"http://127.0.0.1:{port}/{ACCOUNT}"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mdc_middleware"), pytest.raises(SinkError) as failure:
        sink.append("f/2026/01/01", "data", HEADER, lines("x", 1), deadline=time.monotonic() + 3)
    warnings = [r.getMessage() for r in caplog.records if "retrying until the retry deadline" in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # once, not once per retry
    assert f"127.0.0.1:{port}" in warnings[0] and "connection refused" in warnings[0]
    assert caplog.records[0].created - (time.time() - (time.monotonic() - started)) < 2.0
    assert "connection refused" in str(failure.value) and "_Moved" not in caplog.text


def _per_writer_replica(conn, container, index, barrier):
    from mdc_middleware import Settings as _Settings

    settings = _Settings.from_env({"MDC_FILE_PER_WRITER": "true"}, enabled=True, storage_connection_string=conn,
                                  container=container, spool_dir="off", flush_interval=0.1)
    collector = ModelDataCollector("m", designation="inputs", feature_names=["id"], settings=settings)
    barrier.wait(60)
    for n in range(200):
        collector.collect([[index * 1000 + n]])
    assert collector.writer.force_flush(60)
    mdc_middleware.shutdown(10)


def test_replicas_with_files_of_their_own_never_contend_and_read_back_whole(azurite, container_name):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [context.Process(target=_per_writer_replica, args=(azurite.connection_string, container_name, i,
                                                                   barrier)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    client = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    names = [b.name.rsplit("/", 1)[1] for b in client.list_blobs()]
    assert len(names) == 3 and all(n.startswith("data-") and n.endswith(".csv") for n in names)
    import fnmatch

    assert all(fnmatch.fnmatch(n, "data*.csv") for n in names)  # the glob Spark and Power BI users give
    from mdc_middleware.analysis import read_collected

    ids = sorted(read_collected(client, "inputs")["id"])
    assert ids == sorted(i * 1000 + n for i in range(3) for n in range(200))
