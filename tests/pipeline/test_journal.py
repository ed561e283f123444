"""The write-ahead journal: rows survive the death of the process that collected them."""
import fcntl
import os
import signal
import subprocess
import textwrap
import threading
import time

import pytest

from mdc_middleware.pipeline.journal import Journal
from mdc_middleware.metrics import Metrics
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.pipeline.spool import Batch, Spool
from mdc_middleware.pipeline.writer import Writer

from tests.helpers import PYTHON, ROOT, rows
from tests.helpers import FlakySink, record, replayed, wait_for

KILLED_WRITER = """
import os, signal, sys, time
from mdc_middleware.pipeline.journal import Journal
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.pipeline.spool import Spool
from mdc_middleware.pipeline.writer import Writer
from tests.helpers import record

spool = Spool(sys.argv[2])
writer = Writer(LocalSink(sys.argv[1]), spool=spool, journal=Journal(spool), flush_interval=60, batch_rows=10**6)
for i in range(int(sys.argv[3])):
    writer.submit(record(i), rows=1)
time.sleep(float(sys.argv[4]))
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_and_kill(data_dir, spool_dir, count: int, wait: float) -> None:
    result = subprocess.run([PYTHON, "-c", KILLED_WRITER, str(data_dir), str(spool_dir), str(count), str(wait)],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == -signal.SIGKILL


def next_start(data_dir, spool_dir) -> Writer:
    spool = Spool(spool_dir)
    return Writer(LocalSink(data_dir), spool=spool, journal=Journal(spool), flush_interval=0.2)


def test_rows_of_a_killed_process_are_delivered_by_the_next_one(data_dir, tmp_path):
    """SIGKILL 100 ms after the rows were submitted, long before the 60 s batch would have been written."""
    run_and_kill(data_dir, tmp_path / "spool", 500, 0.1)
    assert not data_dir.exists() or rows(data_dir, "inputs").empty  # nothing reached storage before the kill
    assert list((tmp_path / "spool").glob("*.journal"))
    writer = next_start(data_dir, tmp_path / "spool")
    assert writer.force_flush(10)
    assert writer.metrics.snapshot()["rows_recovered"] == 500
    writer.shutdown(5)
    assert sorted(int(v) for v in rows(data_dir, "inputs")["x"]) == list(range(500))
    assert not list((tmp_path / "spool").glob("*.journal"))


def test_delivered_batches_leave_no_journal_behind(data_dir, tmp_path):
    spool = Spool(tmp_path / "spool")
    writer = Writer(LocalSink(data_dir), spool=spool, journal=Journal(spool), batch_rows=10, flush_interval=60)
    for i in range(35):
        writer.submit(record(i), rows=1)
    assert writer.force_flush(10)
    assert not list((tmp_path / "spool").glob("*.journal"))
    writer.shutdown(5)
    assert len(rows(data_dir, "inputs")) == 35


def test_a_live_process_journal_is_not_adopted_by_a_sibling(tmp_path):
    spool = Spool(tmp_path)
    journal = Journal(spool)
    generation = journal.open_generation()
    generation.write([Batch("f", "data", "x\n", b"1\n", 1)])
    child = subprocess.run([PYTHON, "-c", textwrap.dedent(f"""
        from mdc_middleware.pipeline.journal import Journal
        from mdc_middleware.pipeline.spool import Spool
        print(Journal(Spool({str(tmp_path)!r})).adopt_orphans())
    """)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "0", child.stderr
    assert generation.path.exists() and not spool.segments()


@pytest.fixture
def look_in_every_gap(monkeypatch):
    """Runs ``look()`` just before each lock a new segment is made with: where a thread switch or another
    process's glob can fall, and where a segment must not yet be visible as unlocked."""
    real, lookers = fcntl.flock, []

    def flock(descriptor, operation):
        if lookers and not getattr(flock, "inside", False):
            flock.inside = True
            try:
                for look in lookers:
                    look()
            finally:
                flock.inside = False
        return real(descriptor, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    return lookers


def test_a_new_generation_cannot_be_taken_for_a_dead_one_before_it_is_locked(tmp_path, look_in_every_gap):
    """A writer's delivery thread adopts orphans at start, as its batcher opens the first generation: the new,
    still empty segment was taken, found empty and deleted, and every row journaled after was lost."""
    journal = Journal(Spool(tmp_path))
    look_in_every_gap.append(Journal(Spool(tmp_path)).adopt_orphans)
    generation = journal.open_generation()
    generation.write([Batch("f", "data", "x\n", b"1\n", 1)])
    look_in_every_gap.clear()
    assert generation.path.exists()
    generation.forget()  # the process dies: the rows are found
    assert Journal(Spool(tmp_path)).adopt_orphans() == 1


def test_a_new_spool_segment_cannot_be_replayed_away_before_it_is_locked(tmp_path, look_in_every_gap):
    replayer = Spool(tmp_path)
    look_in_every_gap.append(replayer.next_batch)
    spool = Spool(tmp_path)
    spool.write(Batch("f", "data", "x\n", b"1\n", 1))
    spool.seal()
    look_in_every_gap.clear()
    replayer.release()
    batch = Spool(tmp_path).next_batch()
    assert batch is not None and batch.payload == b"1\n"


def test_a_segment_its_process_died_making_is_removed_once_old(tmp_path):
    old, young = tmp_path / ".1-2.journal.new", tmp_path / ".3-4.spool.new"
    old.touch(), young.touch()
    os.utime(old, (0, 0))
    Journal(Spool(tmp_path)).adopt_orphans()
    assert not old.exists() and young.exists()


JOURNAL_ON_A_FULL_DISK = """
import resource, signal, sys
from mdc_middleware.pipeline.journal import Journal
from mdc_middleware.pipeline.spool import Batch, Spool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
generation = Journal(Spool(sys.argv[1])).open_generation()
batch = lambda i, rows: Batch("folder", "data", "x\\n", "".join(f"{i}-{r}\\n" for r in range(rows)).encode(), rows)
generation.write([batch(0, 2)])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (500, hard))  # the disk fills inside the next record
try:
    generation.write([batch(1, 200)])
except OSError as exc:
    print("refused:", exc.strerror)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
generation.write([batch(2, 2)])
"""


def test_a_journal_record_the_disk_cut_short_is_cut_off_and_the_rows_after_it_survive(tmp_path):
    """The process exits with its generation unresolved: the next one takes over the rows around the torn write."""
    result = subprocess.run([PYTHON, "-c", JOURNAL_ON_A_FULL_DISK, str(tmp_path / "spool")], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0 and "refused: File too large" in result.stdout, result.stdout + result.stderr
    metrics = Metrics()
    adopter = Journal(Spool(tmp_path / "spool", metrics=metrics), metrics)
    assert adopter.adopt_orphans() == 4  # rows: batches 0 and 2, not the torn one's 200
    assert replayed(adopter.spool) == ["0-0\n0-1\n2-0\n2-1\n"]  # one file's rows: one batch
    assert metrics.snapshot()["spool_corrupt_records"] == 0


def test_only_unresolved_batches_of_a_generation_are_adopted(tmp_path):
    """A process that delivered one of a generation's two batches and died: only the other is taken over."""
    spool = Spool(tmp_path)
    generation = Journal(spool).open_generation()
    generation.write([Batch("f", "data", "x\n", b"1\n", 1), Batch("g", "data", "x\n", b"2\n", 1)])
    generation.write([Batch("f", "data", "x\n", b"3\n", 1)])
    generation.seal(2)
    generation.resolve(("f", "data", "x\n"), 2)
    generation.forget()  # as if the process died: its lock goes
    adopter = Journal(Spool(tmp_path), Metrics())
    assert adopter.adopt_orphans() == 1
    (segment,) = adopter.spool.segments()
    batch = adopter.spool.next_batch()
    assert (batch.folder, batch.payload, batch.rows) == ("g", b"2\n", 1)
    assert not generation.path.exists()


def test_a_generation_is_deleted_when_its_last_batch_is_resolved(tmp_path):
    generation = Journal(Spool(tmp_path)).open_generation()
    generation.write([Batch("f", "data", "x\n", b"1\n", 1), Batch("g", "data", "x\n", b"2\n", 1)])
    generation.seal(2)
    generation.resolve(("f", "data", "x\n"), 1)
    assert generation.path.exists() and generation.unresolved_rows == 1
    generation.resolve(("g", "data", "x\n"), 1)
    assert not generation.path.exists()


def test_shutdown_while_storage_fails_keeps_every_row_for_the_next_start(data_dir, tmp_path, caplog):
    """Storage hangs on every append past the shutdown deadline: the rows are on disk, and said to be."""
    gate = threading.Event()
    spool = Spool(tmp_path / "spool")
    writer = Writer(FlakySink(data_dir, failures=10**6, gate=gate), spool=spool, journal=Journal(spool),
                    flush_interval=0.1, retry_deadline=60)
    for i in range(200):
        writer.submit(record(i), rows=1)
    assert wait_for(lambda: writer.sink.calls >= 1)
    threading.Timer(3.0, gate.set).start()  # the delivery under way comes back only after the deadline
    writer.shutdown(1.0)
    assert "rows not yet in storage" in caplog.text
    for thread in writer._threads:  # the next start comes after this process is gone
        thread.join(10)
    again = next_start(data_dir, tmp_path / "spool")
    assert again.force_flush(10)
    again.shutdown(5)
    assert sorted(int(v) for v in rows(data_dir, "inputs")["x"]) == list(range(200))


@pytest.mark.azurite
def test_a_batch_that_landed_as_its_process_died_is_not_delivered_twice(azurite, container_name, tmp_path):
    """Killed between the append reaching storage and its acknowledgement: the journal's intent (blob, position)
    lets the process that takes over check there, and skip the block."""
    from azure.storage.blob import BlobServiceClient, ContainerClient

    from mdc_middleware.storage.blob import BlobSink

    def sink() -> BlobSink:
        return BlobSink(lambda: BlobServiceClient.from_connection_string(azurite.connection_string, retry_total=0),
                        container_name)

    payload, key = b"".join(b"%d\n" % i for i in range(100)), ("f/2026/01/01", "data", "x\n")
    generation = Journal(Spool(tmp_path)).open_generation()
    generation.write([Batch(*key, payload, 100)])
    generation.seal(1)
    sink().append(*key, payload, on_attempt=lambda name, position: generation.intend(key, name, position))
    generation.forget()  # the process dies before resolving the batch
    spool = Spool(tmp_path)
    writer = Writer(sink(), spool=spool, journal=Journal(spool), flush_interval=0.2)
    assert writer.force_flush(30)
    writer.shutdown(5)
    text = ContainerClient.from_connection_string(azurite.connection_string, container_name).download_blob(
        "f/2026/01/01/data.csv").readall().decode()
    assert text.splitlines() == ["x"] + [str(i) for i in range(100)]
    assert writer.metrics.snapshot()["rows_recovered"] == 100


IDLE_THEN_ONE = """
import os, signal, sys, time
from mdc_middleware.pipeline.journal import Journal
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.pipeline.spool import Spool
from mdc_middleware.pipeline.writer import Writer
from tests.helpers import record

spool = Spool(sys.argv[2])
writer = Writer(LocalSink(sys.argv[1]), spool=spool, journal=Journal(spool), flush_interval=60, batch_rows=10**6)
writer.submit(record(0), rows=1)
assert writer.force_flush(10)
time.sleep(1.5)  # idle past the queue's quiet spell: the batcher sleeps until a put rings
writer.submit(record(1), rows=1)
time.sleep(0.1)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_row_collected_after_an_idle_spell_is_journaled_before_a_kill(data_dir, tmp_path):
    """An idle batcher sleeps until the next capture comes instead of looking every 10 ms; that capture still
    reaches the journal within the window (here killed 100 ms after it, the batch not due for 60 s)."""
    spool_dir = tmp_path / "spool"
    result = subprocess.run([PYTHON, "-c", IDLE_THEN_ONE, str(data_dir), str(spool_dir)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == -signal.SIGKILL
    assert sorted(int(v) for v in rows(data_dir, "inputs")["x"]) == [0]  # the flushed one only, before the kill
    writer = next_start(data_dir, spool_dir)
    assert writer.force_flush(10)
    assert writer.metrics.snapshot()["rows_recovered"] == 1
    writer.shutdown(5)
    assert sorted(int(v) for v in rows(data_dir, "inputs")["x"]) == [0, 1]


def test_an_idle_writer_with_a_journal_does_not_wake_every_10_ms(tmp_path):
    spool = Spool(tmp_path / "spool")
    writer = Writer(LocalSink(tmp_path / "data"), spool=spool, journal=Journal(spool), flush_interval=60)
    try:
        writer.submit(record(0), rows=1)
        assert writer.force_flush(10)
        waits = []
        wait = writer._queue._cond.wait
        writer._queue._cond.wait = lambda timeout=None: waits.append(timeout) or wait(timeout)
        time.sleep(2.0)
        assert len(waits) <= 60  # polls for the quiet spell (0.5 s at 10 ms), then one sleep; not 200
    finally:
        writer.shutdown(5)


def test_rows_the_journal_could_not_take_are_not_said_to_be_in_it_when_the_spool_fails_too(
        data_dir, tmp_path, caplog, monkeypatch):
    """The spool's disk is full: journal writes fail, then storage fails and the spool cannot take the batch.
    The rows are nowhere on disk: dropped and counted (``spool_error``), never said to "stay in the journal"."""
    from mdc_middleware.pipeline import journal as journal_module

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.Generation, "write", disk_full)
    spool = Spool(tmp_path / "spool")
    monkeypatch.setattr(spool, "write", disk_full)
    writer = Writer(FlakySink(data_dir, failures=10**6), spool=spool, journal=Journal(spool), flush_interval=0.1,
                    retry_deadline=0.5)
    for i in range(50):
        writer.submit(record(i), rows=1)
    assert wait_for(lambda: writer.metrics.snapshot()["dropped_reasons"].get("spool_error") == 50)
    writer.shutdown(1.0)
    snap = writer.metrics.snapshot()
    assert snap["journal_errors"] >= 1 and snap["dropped_reasons"] == {"spool_error": 50}
    assert "could not spool 50 rows: No space left on device; they are dropped" in caplog.text
    assert "stay in the journal" not in caplog.text
    assert not list((tmp_path / "spool").glob("*.journal"))  # nothing left that a next start would look for
