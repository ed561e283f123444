"""MDC_ENCODER=process: the helper process writes exactly what the batcher thread writes, and when it
dies, hangs or cannot load a route, the rows are encoded in the server process instead: none is lost."""
import gzip
import json
import os
import signal
import sys
import time
import types
from pathlib import Path

import pytest

from mdc_middleware import Schema, Settings
from mdc_middleware.capture.policy import CapturePolicy
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.pipeline.writer import Writer

from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the helper is started with pass_fds")

SCHEMA = Schema(inputs=["a", "b", "city"], predictions=["y"], model_name="m", model_version="1")


def plan_for(data_dir: Path, schema: Schema = SCHEMA, **settings):
    settings = Settings.from_env({}, enabled=True, local_dir=str(data_dir), **settings)
    return CapturePolicy({"/score": schema}, settings, Writer(LocalSink(data_dir))).select("POST", "/score")


def captures(plan, count: int, start: float = 1_764_000_000.0) -> list:
    """Captured requests as the middleware queues them. Varied payloads: several rows, gzip, a media body,
    invalid JSON, text with commas and quotes."""
    made = []
    for i in range(count):
        rows = [[i, i * 0.5, f'town "{i}", north'] for _ in range(1 + i % 3)]
        body = json.dumps({"data": rows}).encode()
        encoding = ""
        if i % 7 == 3:
            body, encoding = gzip.compress(body), "gzip"
        if i % 11 == 5:
            body = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
        if i % 13 == 6:
            body = b'{"data": [[1, 2'
        response = json.dumps({"predictions": [i % 3] * len(rows)}).encode()
        headers = (("content-type", "application/json"),) + ((("content-encoding", encoding),) if encoding else ())
        made.append((plan.id, body, headers, response, "application/json", "", f"cid-{i}", f"rid-{i}",
                     start + i * 37.5))  # spans two days
    return made


def submit(writer: Writer, capture: tuple) -> bool:
    return writer.submit_capture(capture)


def collected_files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


def run(writer: Writer, items: list, wait_ready: bool = False) -> dict:
    if wait_ready:
        writer.encoder.available()
        assert wait_for(writer.encoder.available, 60), "the encoder process did not start"
    for item in items:
        assert submit(writer, item)
    assert writer.force_flush(30)
    snapshot = writer.snapshot()
    writer.shutdown(10)
    return snapshot


def test_the_helper_writes_the_same_bytes_as_the_thread(tmp_path):
    plan = plan_for(tmp_path / "plan")
    items = captures(plan, 3000)
    thread = run(Writer(LocalSink(tmp_path / "thread"), flush_interval=60), items)
    writer = Writer(LocalSink(tmp_path / "process"), flush_interval=60, encoder="process")
    process = run(writer, items, wait_ready=True)
    expected = collected_files(tmp_path / "thread")
    assert len(expected) == 4  # inputs and predictions, two days
    assert collected_files(tmp_path / "process") == expected
    for name in ("rows_captured", "rows_written", "skipped", "dropped_reasons", "internal_errors"):
        assert process[name] == thread[name], name
    pngs = [i for i in range(3000) if i % 11 == 5 and i % 7 != 3 and i % 13 != 6]  # as captures() makes them
    assert process["skipped"]["inputs:media_magic_bytes"] == len(pngs)
    assert process["encoder_failures"] == 0 and process["encoder_captures"] == 3000
    assert thread["encoder_captures"] == 0


def test_the_helper_never_loads_pandas(tmp_path):
    """One helper per server worker: pandas would add 75 MB to each, for JSON it never needs."""
    plan = plan_for(tmp_path / "plan")
    writer = Writer(LocalSink(tmp_path / "out"), flush_interval=60, encoder="process")
    writer.encoder.available()
    assert wait_for(writer.encoder.available, 60), "the encoder process did not start"
    maps = Path(f"/proc/{writer.encoder.pid}/maps")
    for item in captures(plan, 100):
        assert submit(writer, item)
    assert writer.force_flush(30)
    libraries = maps.read_text()
    snapshot = writer.snapshot()
    writer.shutdown(10)
    assert snapshot["encoder_captures"] == 100 and snapshot["encoder_failures"] == 0
    assert "/numpy/" in libraries  # what it did load is seen here
    assert "/pandas/" not in libraries and "/pyarrow/" not in libraries


def test_a_killed_helper_loses_nothing_and_is_replaced(tmp_path):
    plan = plan_for(tmp_path / "plan")
    items = captures(plan, 4000)
    expected_dir = tmp_path / "thread"
    run(Writer(LocalSink(expected_dir), flush_interval=60), items)

    writer = Writer(LocalSink(tmp_path / "process"), flush_interval=60, encoder="process")
    writer.encoder.first_backoff = 0.2
    writer.encoder.available()
    assert wait_for(writer.encoder.available, 60)
    first = writer.encoder.pid
    for item in items[:2000]:
        submit(writer, item)
    assert writer.force_flush(30)
    os.kill(first, signal.SIGKILL)
    for item in items[2000:3000]:  # the batcher finds the helper gone: these are encoded in-process
        submit(writer, item)
    assert writer.force_flush(30)
    assert wait_for(lambda: writer.encoder.available() and writer.encoder.pid != first, 60)
    for item in items[3000:]:
        submit(writer, item)
    assert writer.force_flush(30)
    snapshot = writer.snapshot()
    writer.shutdown(10)
    assert snapshot["encoder_failures"] >= 1
    assert 3000 <= snapshot["encoder_captures"] < 4000  # the first and last thousands by helpers, not all
    assert collected_files(tmp_path / "process") == collected_files(expected_dir)


def test_a_hung_helper_is_given_up_within_its_timeout(tmp_path):
    plan = plan_for(tmp_path / "plan")
    items = captures(plan, 500)
    writer = Writer(LocalSink(tmp_path / "process"), flush_interval=60, encoder="process")
    writer.encoder.batch_timeout = 1.0
    writer.encoder.first_backoff = 60.0
    writer.encoder.available()
    assert wait_for(writer.encoder.available, 60)
    hung = writer.encoder.pid
    os.kill(hung, signal.SIGSTOP)
    try:
        started = time.monotonic()
        snapshot = run(writer, items)
        took = time.monotonic() - started
    finally:
        try:
            os.kill(hung, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert snapshot["encoder_failures"] == 1
    assert snapshot["rows_written"] == snapshot["rows_captured"] > 0
    assert took < 10, took
    assert wait_for(lambda: not Path(f"/proc/{hung}").exists() or _zombie(hung), 10), "the hung helper was not killed"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _shout(value):
    return str(value).upper()


def test_routes_the_helper_cannot_load_are_encoded_in_process(tmp_path):
    # A redaction function the helper cannot import (it lives only in this process's sys.modules),
    # and one that does not pickle at all (a lambda): both routes' rows are written, redacted.
    ephemeral = types.ModuleType("mdc_ephemeral_rules")
    ephemeral.shout = lambda value: str(value).upper()
    ephemeral.shout.__module__, ephemeral.shout.__qualname__ = "mdc_ephemeral_rules", "shout"
    sys.modules["mdc_ephemeral_rules"] = ephemeral
    try:
        for name, redactor in (("module", ephemeral.shout), ("lambda", lambda v: str(v).upper()),
                               ("importable", _shout)):
            schema = Schema(inputs=["a", "b", "city"], predictions=["y"], model_name="m", model_version="1",
                            redact={"city": redactor})
            plan = plan_for(tmp_path / name / "plan", schema)
            writer = Writer(LocalSink(tmp_path / name / "out"), flush_interval=60, encoder="process")
            snapshot = run(writer, captures(plan, 50), wait_ready=True)
            assert snapshot["encoder_failures"] == 0
            assert snapshot["encoder_captures"] == (50 if name == "importable" else 0), name
            text = b"".join(collected_files(tmp_path / name / "out").values()).decode()
            assert "TOWN" in text and "town" not in text, name
            assert snapshot["rows_written"] == snapshot["rows_captured"] > 0
    finally:
        del sys.modules["mdc_ephemeral_rules"]


def test_shutdown_stops_the_helper(tmp_path):
    plan = plan_for(tmp_path / "plan")
    writer = Writer(LocalSink(tmp_path / "out"), flush_interval=60, encoder="process")
    run(writer, captures(plan, 10), wait_ready=True)
    assert writer.encoder.pid is None
    assert not [p for p in Path("/proc").glob("[0-9]*") if _is_helper_of(p, os.getpid())]


def _is_helper_of(proc: Path, parent: int) -> bool:
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return b"encoder_process" in cmdline and int(stat.split(")")[-1].split()[1]) == parent and not _zombie(
        int(proc.name))


def test_unknown_encoder_setting_is_refused():
    from mdc_middleware.config import ConfigError

    with pytest.raises(ConfigError, match="MDC_ENCODER=.gpu.: expected .thread. or .process."):
        Settings.from_env({"MDC_ENCODER": "gpu"})
