import multiprocessing
import threading
import time

import pytest

import mdc_middleware
from mdc_middleware import ModelDataCollector, Settings
from mdc_middleware.records.record import Record
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.pipeline.writer import Writer

from tests.helpers import TARGET, FlakySink, record, rows, wait_for

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


def test_shutdown_respects_its_deadline_and_counts_what_did_not_land(data_dir, caplog):
    writer = Writer(FlakySink(data_dir, failures=10**9), batch_rows=1, flush_interval=60)
    for i in range(3):
        writer.submit(record(i), rows=1)
    started = time.monotonic()
    assert writer.shutdown(timeout=1.0) is False
    assert time.monotonic() - started < 3.0
    snap = writer.metrics.snapshot()
    assert snap["dropped_reasons"] == {"shutdown_undelivered": 3}
    # Said once, as lost (not "kept and retried": the process is stopping), with storage's own error and
    # what would have kept them.
    said = [r.getMessage() for r in caplog.records if "shutdown deadline" in r.getMessage()]
    assert said == ["mdc: stopping: 3 rows are lost, not written within the shutdown deadline (1 s) (storage: "
                    "injected failure); counted under dropped_reasons and skipped_reasons. Set MDC_SPOOL_DIR to "
                    "keep rows that storage does not take on disk for the next start."]
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
    """Returns with the row still queued (a minute's flush interval): multiprocessing then ends the process with
    os._exit, which skips atexit; the flush must come from multiprocessing's own exit hooks."""
    settings = Settings.from_env({}, enabled=True, local_dir=local_dir, flush_interval=60)
    ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings).collect([[7]])


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_a_multiprocessing_child_starts_its_own_writer_and_flushes_when_it_returns(settings, data_dir, start_method):
    dc = ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings)
    dc.collect([[1]])  # the parent's writer thread is running before the fork
    context = multiprocessing.get_context(start_method)
    child = context.Process(target=_child_collects, args=(str(data_dir),))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    mdc_middleware.flush(10)
    assert sorted(rows(data_dir, "inputs")["x"].tolist()) == ["1", "7"]


def test_metrics_sum_over_writers(settings, data_dir, tmp_path):
    other = settings.replace(local_dir=str(tmp_path / "other"))
    ModelDataCollector("m", designation="inputs", settings=settings).collect([[1]])
    ModelDataCollector("m", designation="inputs", settings=other).collect([[1], [2]])
    mdc_middleware.flush(5)
    assert mdc_middleware.metrics()["rows_written"] == 3





@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf")])
def test_a_flush_interval_the_batcher_could_spin_on_is_refused(tmp_path, interval):
    """With 0 or NaN the batcher never waited: it spun on a core while the queue was empty."""
    with pytest.raises(ValueError, match="flush_interval"):
        Writer(LocalSink(tmp_path), flush_interval=interval)
