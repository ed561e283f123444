import json
import multiprocessing
import threading
import time

import pytest

import mdc_middleware
from mdc_middleware import ModelDataCollector, Settings
from mdc_middleware.storage.paths import Target
from mdc_middleware.records.record import Record
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.storage.sink import SinkError
from mdc_middleware.pipeline.writer import Writer

from .conftest import rows

TARGET = Target("s", "r", "w", "svc", "m", "1", "inputs")


def record(value, ts=None):
    return Record(TARGET, [[value]], ("x",), f"cid-{value}", ts or time.time(), "rid", rows=1)


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


def written_values(data_dir):
    return rows(data_dir, "inputs")["x"].tolist()


def test_batches_by_row_count_without_a_flush(data_dir):
    writer = Writer(LocalSink(data_dir), batch_rows=5, flush_interval=60)
    for i in range(5):
        writer.submit(record(i), rows=1)
    assert wait_for(lambda: writer.metrics.snapshot()["rows_written"] == 5)
    assert writer.metrics.snapshot()["batches_written"] == 1
    writer.shutdown(5)
    assert written_values(data_dir) == ["0", "1", "2", "3", "4"]


def test_batches_by_time(data_dir):
    writer = Writer(LocalSink(data_dir), batch_rows=10_000, flush_interval=0.2)
    writer.submit(record(1), rows=1)
    assert wait_for(lambda: writer.metrics.snapshot()["rows_written"] == 1, timeout=5)
    writer.shutdown(5)


def test_batches_by_bytes(data_dir):
    writer = Writer(LocalSink(data_dir), batch_rows=10_000, batch_bytes=300, flush_interval=60)
    for i in range(3):
        writer.submit(record("v" * 120), rows=1)
    assert wait_for(lambda: writer.metrics.snapshot()["rows_written"] >= 2)
    writer.shutdown(5)
    assert writer.metrics.snapshot()["rows_written"] == 3


def test_full_queue_drops_and_counts_never_blocks(data_dir):
    gate = threading.Event()
    # tiny bounds: one batch in the inbox, three items in the queue
    writer = Writer(FlakySink(data_dir, gate=gate), batch_rows=1, batch_bytes=10, queue_max_bytes=40,
                    flush_interval=60, queue_size=3)
    accepted = 0
    started = time.monotonic()
    for i in range(50):
        accepted += writer.submit(record(i), rows=1)
    assert time.monotonic() - started < 1.0  # submit never waits on storage
    gate.set()
    assert writer.force_flush(10)
    snap = writer.metrics.snapshot()
    assert snap["rows_written"] == accepted
    assert snap["rows_dropped"] == 50 - accepted == snap["dropped_reasons"]["queue_full"]
    assert 3 <= accepted <= 8  # queue + inbox + the batch in delivery + the one being handed over
    writer.shutdown(5)


def test_the_queue_byte_bound_is_given_back_when_rows_leave_the_queue(data_dir):
    # Regression: collect()'s bytes were counted in and never out, so a long-running service stopped
    # collecting once the queue's byte bound had been reached in total, not at once.
    writer = Writer(LocalSink(data_dir), queue_max_bytes=10_000, flush_interval=60)
    for i in range(60):
        assert writer.submit(record(i), rows=1, nbytes=1_000), f"record {i} dropped"
        if i % 5 == 4:
            assert writer.force_flush(10)
    assert writer.shutdown(10)
    snapshot = writer.metrics.snapshot()
    assert (snapshot["rows_written"], snapshot["rows_dropped"]) == (60, 0)
    assert writer._bytes_in - writer._bytes_out == 0


def test_counters_from_many_threads_add_up_exactly():
    from mdc_middleware.metrics import Metrics

    metrics = Metrics()

    def count():
        for _ in range(20_000):
            metrics.add("rows_captured")
            metrics.skip("inputs:invalid_json")

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = metrics.snapshot()
    assert snapshot["rows_captured"] == 160_000 and snapshot["skipped"] == {"inputs:invalid_json": 160_000}


def test_transient_failures_are_retried_and_nothing_is_lost(data_dir):
    writer = Writer(FlakySink(data_dir, failures=2), batch_rows=1, flush_interval=0.05)
    for i in range(10):
        writer.submit(record(i), rows=1)
    assert wait_for(lambda: writer.metrics.snapshot()["rows_written"] == 10, timeout=15)
    snap = writer.metrics.snapshot()
    assert snap["write_errors"] == 2 and snap["rows_dropped"] == 0
    writer.shutdown(5)
    assert sorted(map(int, written_values(data_dir))) == list(range(10))


def test_shutdown_respects_its_deadline_and_counts_what_did_not_land(data_dir):
    writer = Writer(FlakySink(data_dir, failures=10**9), batch_rows=1, flush_interval=60)
    writer.submit(record(1), rows=1)
    started = time.monotonic()
    assert writer.shutdown(timeout=1.0) is False
    assert time.monotonic() - started < 3.0
    snap = writer.metrics.snapshot()
    assert snap["dropped_reasons"] == {"shutdown_undelivered": 1}
    assert writer.submit(record(2), rows=1) is False
    assert writer.metrics.snapshot()["dropped_reasons"]["writer_closed"] == 1


def test_rows_are_partitioned_by_their_utc_day(data_dir):
    writer = Writer(LocalSink(data_dir), flush_interval=60)
    writer.submit(record(1, ts=1_700_000_000.0), rows=1)  # 2023-11-14
    writer.submit(record(2, ts=1_700_100_000.0), rows=1)  # 2023-11-16
    writer.shutdown(5)
    days = sorted(p.parent.relative_to(data_dir).as_posix()[-10:] for p in data_dir.rglob("*.csv"))
    assert days == ["2023/11/14", "2023/11/16"]


def test_a_new_header_rolls_over_to_a_sibling_file(data_dir):
    writer = Writer(LocalSink(data_dir), flush_interval=60)
    writer.submit(record(1), rows=1)
    writer.force_flush(5)
    writer.submit(Record(TARGET, [[1, 2]], ("x", "y"), "c", time.time(), "r", rows=1), rows=1)
    writer.shutdown(5)
    names = sorted(p.name for p in data_dir.rglob("*.csv"))
    assert names == ["data.csv", "data_1.csv"]
    got = rows(data_dir, "inputs")
    assert got[["x", "y"]].values.tolist() == [["1", ""], ["1", "2"]]


def _child_collects(local_dir):
    settings = Settings.from_env({}, enabled=True, local_dir=local_dir, flush_interval=60)
    ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings).collect([[7]])
    # multiprocessing ends its children with os._exit, skipping atexit: flush explicitly here.
    # (The atexit path is covered by the gunicorn end-to-end test.)
    assert mdc_middleware.shutdown(10)


def test_after_fork_the_child_starts_its_own_writer(settings, data_dir):
    dc = ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings)
    dc.collect([[1]])  # the parent's writer thread is running before the fork
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_child_collects, args=(str(data_dir),))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert sorted(rows(data_dir, "inputs")["x"].tolist()) == ["1", "7"]


def test_metrics_sum_over_writers(settings, data_dir, tmp_path):
    other = settings.replace(local_dir=str(tmp_path / "other"))
    ModelDataCollector("m", designation="inputs", settings=settings).collect([[1]])
    ModelDataCollector("m", designation="inputs", settings=other).collect([[1], [2]])
    mdc_middleware.flush(5)
    assert mdc_middleware.metrics()["rows_written"] == 3


def test_the_consumer_looks_often_while_many_items_come_and_backs_off_while_few_do():
    import queue as stdlib_queue

    from mdc_middleware.pipeline.handoff import HandoffQueue

    handoff = HandoffQueue(100, poll_interval=0.01, idle_interval=0.1, few=2, many=4)
    waits = []
    wait = handoff._cond.wait
    handoff._cond.wait = lambda timeout: waits.append(timeout) or wait(timeout)
    with pytest.raises(stdlib_queue.Empty):
        handoff.get(timeout=1.0)
    assert waits[:5] == [0.01, 0.02, 0.04, 0.08, 0.1]  # idle: ten wake-ups a second, not a hundred
    assert len(waits) <= 15
    waits.clear()
    threading.Timer(0.05, handoff.put_nowait, args=("item",)).start()  # below wake_at: found by polling
    assert handoff.get(timeout=1.0) == "item"
    assert waits == [0.1]
    assert handoff._next_poll == 0.1  # one item (fewer than few): the next look comes no sooner

    arrivals: list = []

    def wait_while_items_arrive(timeout):
        waits.append(timeout)
        handoff._items.extend(arrivals)
        arrivals.clear()

    handoff._cond.wait = wait_while_items_arrive
    # more than many: look again soon; from few to many: as often as before; fewer than few: half as often
    for count, next_poll in ((5, 0.01), (3, 0.01), (2, 0.01), (1, 0.02), (1, 0.04), (9, 0.01)):
        arrivals.extend(range(count))
        assert handoff.get(timeout=1.0) == 0
        while handoff.qsize():
            handoff.get_nowait()
        assert handoff._next_poll == next_poll, (count, handoff._next_poll)


@pytest.mark.parametrize("ids", [("cid", "rid"), ('a,"b', "=1+1"), ("line\nbreak", ""), ("@x", "tab\tx"),
                                 ("car\rriage", "\r"), ("cr\r\nlf", "x\ry")])
def test_rows_of_numbers_and_other_rows_end_with_the_same_correlation_cells(ids):
    """The numbers fast path writes the correlation cells itself; they must match the csv path's, byte for byte."""
    from mdc_middleware.records.csv_encoding import encode

    numbers = Record(TARGET, [[1.5]], ("x",), ids[0], 1_764_000_000.25, ids[1], rows=1)
    text = Record(TARGET, [["1.5"]], ("x",), ids[0], 1_764_000_000.25, ids[1], rows=1)
    assert encode(numbers, ("x",))[1] == encode(text, ("x",))[1]


def test_a_run_of_captures_stops_at_another_kind_at_the_count_and_at_the_bytes():
    from mdc_middleware.pipeline.handoff import HandoffQueue

    queue = HandoffQueue(100)
    for i in range(5):
        queue.put_nowait(((i,), 10))
    queue.put_nowait((record(1), 10))
    queue.put_nowait(((9,), 10))
    assert [item for item, _ in queue.pop_run(tuple, 3, 1000)] == [(0,), (1,), (2,)]
    assert [item for item, _ in queue.pop_run(tuple, 3, 15)] == [(3,), (4,)]  # the bytes cap: 10 + 10 ≥ 15
    assert queue.pop_run(tuple, 3, 1000) == []  # a record comes next
    assert isinstance(queue.get_nowait()[0], Record)
    assert [item for item, _ in queue.pop_run(tuple, 3, 1000)] == [(9,)]


def test_captures_are_encoded_in_runs_bounded_by_count_and_by_body_bytes():
    """Between two pauses the batcher encodes at most 16 captures or about 8 KiB of their bodies, in order;
    a reason (a str) in place of a body counts for nothing."""
    from mdc_middleware.pipeline.capture_encoding import ENCODE_CHUNK as _ENCODE_CHUNK
    from mdc_middleware.pipeline.capture_encoding import ENCODE_CHUNK_BYTES as _ENCODE_CHUNK_BYTES
    from mdc_middleware.pipeline.capture_encoding import _chunks

    small = [(0, b"x" * 10, (), b"y" * 10, "", "", f"id-{i}", "", 0.0) for i in range(40)]
    large = [(0, b"x" * 3000, (), "body_too_large", "", "", f"big-{i}", "", 0.0) for i in range(7)]
    captures = small[:20] + large + small[20:]
    chunks = list(_chunks(captures))
    assert [raw for chunk in chunks for raw in chunk] == captures
    assert all(len(chunk) <= _ENCODE_CHUNK for chunk in chunks)
    # 16 small; 4 small and 3 large (the third passes 8 KiB); 3 large; the last large and 15 small; 5 small
    assert [len(chunk) for chunk in chunks] == [16, 7, 3, 16, 5]
    assert all(sum(len(raw[1]) for raw in chunk[:-1]) < _ENCODE_CHUNK_BYTES for chunk in chunks)


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf")])
def test_a_flush_interval_the_batcher_could_spin_on_is_refused(tmp_path, interval):
    """With 0 or NaN the batcher never waited: it spun on a core while the queue was empty."""
    with pytest.raises(ValueError, match="flush_interval"):
        Writer(LocalSink(tmp_path), flush_interval=interval)


def test_rows_as_json_keep_every_cell_as_written_and_the_correlation_cells(tmp_path):
    import io

    import pandas as pd

    from mdc_middleware.pipeline.encoder import ROW_JSON, as_json_rows, encode_record
    from mdc_middleware.metrics import Metrics

    target = Target("s", "r", "w", "svc", "m", "1", "inputs")
    cells = [["comma, quote \"x\"", "line\nbreak", "cr\rhere", "=formula", "東京", None, 1.5, "\\back"],
             ["", "tab\tin", "[1, 2]", "{\"k\": 1}", "-3", True, 10 ** 20, "é"]]
    record = Record(target=target, data=cells, columns=tuple(f"c{i}" for i in range(8)), correlation_id="id,1",
                    timestamp=1e9, request_id='r"1', rows=2)
    encoded = encode_record(record, Metrics(), True, counted=True)
    as_json = as_json_rows(encoded)
    read = lambda e: pd.read_csv(io.BytesIO(e.header.encode() + e.payload), dtype=str, keep_default_na=False)
    original, rows_json = read(encoded), read(as_json)
    assert as_json.rows == encoded.rows == 2 and list(rows_json.columns)[0] == ROW_JSON
    assert [json.loads(cell) for cell in rows_json[ROW_JSON]] == original[list(record.columns)].to_dict("records")
    pd.testing.assert_frame_equal(rows_json.iloc[:, 1:], original.iloc[:, 8:])
