import fcntl
import os
import subprocess
import zlib

import pytest

from mdc_middleware.metrics import Metrics
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.pipeline import spool as spool_module
from mdc_middleware.pipeline.spool import Batch, Spool, write_all
from mdc_middleware.pipeline.writer import Writer

from tests.helpers import PYTHON, rows
from tests.helpers import FlakySink, record, replayed, wait_for


def batch(i: int, rows: int = 2) -> Batch:
    return Batch("folder", "data", "x\n", "".join(f"{i}-{r}\n" for r in range(rows)).encode(), rows)


def record_of(one: Batch) -> bytes:
    """The spool record of a batch, as the spool writes it."""
    return b"".join(one.encode_parts())


def test_round_trip_in_order_and_segments_deleted_when_done(tmp_path):
    spool = Spool(tmp_path, segment_bytes=100)
    for i in range(5):
        spool.write(batch(i))
    spool.seal()
    assert replayed(spool) == [f"{i}-0\n{i}-1\n" for i in range(5)]
    assert spool.segments() == [] and spool.size_bytes(fresh=True) == 0
    assert spool.metrics.snapshot()["rows_replayed"] == 10


def test_acknowledged_batches_are_not_replayed_again(tmp_path):
    spool = Spool(tmp_path)
    for i in range(3):
        spool.write(batch(i))
    spool.seal()
    first = spool.next_batch()
    spool.ack(first)
    spool.release()
    again = Spool(tmp_path)  # e.g. the next start of the process
    assert replayed(again) == [f"{i}-0\n{i}-1\n" for i in (1, 2)]


def spooled_three(tmp_path):
    """A sealed segment of batches 0, 1, 2, and its bytes to damage."""
    spool = Spool(tmp_path)
    for i in range(3):
        spool.write(batch(i))
    spool.seal()
    (segment,) = spool.segments()
    return segment, bytearray(segment.read_bytes())


def test_torn_and_corrupt_records_are_skipped_and_counted(tmp_path):
    segment, data = spooled_three(tmp_path)
    data[30] ^= 0xFF  # corrupt the first record's body
    data += record_of(batch(9))[:20]  # a torn write at the end
    segment.write_bytes(bytes(data))
    metrics = Metrics()
    assert replayed(Spool(tmp_path, metrics=metrics)) == ["1-0\n1-1\n", "2-0\n2-1\n"]
    assert metrics.snapshot()["spool_corrupt_records"] == 2


def test_a_record_whose_length_is_corrupt_does_not_swallow_the_next(tmp_path):
    segment, data = spooled_three(tmp_path)
    data[4] += 10  # the first record's length now reaches into the second
    segment.write_bytes(bytes(data))
    metrics = Metrics()
    assert replayed(Spool(tmp_path, metrics=metrics)) == ["1-0\n1-1\n", "2-0\n2-1\n"]
    assert metrics.snapshot()["spool_corrupt_records"] == 1


def test_garbage_between_records_resynchronises(tmp_path):
    spool = Spool(tmp_path)
    spool.write(batch(0))
    spool.seal()
    (segment,) = spool.segments()
    segment.write_bytes(b"garbage!" + segment.read_bytes() + b"more garbage" + record_of(batch(1)))
    assert replayed(Spool(tmp_path)) == ["0-0\n0-1\n", "1-0\n1-1\n"]


def test_a_record_written_in_parts_is_one_whole_spool_record(tmp_path):
    one = Batch("f/2026/12/07", "data", "a,b\n", b"1,2\n" * 1000, 1000, hint=("blob", 7))
    whole = record_of(one)
    head = spool_module._HEAD
    magic, length, crc = head.unpack_from(whole)
    body = whole[head.size:]
    assert (magic, length, crc) == (spool_module.MAGIC, len(body), zlib.crc32(body))  # one CRC of the whole body
    back = Batch.decode(body)
    assert (back.folder, back.stem, back.header, back.payload, back.rows, back.hint) == (
        one.folder, one.stem, one.header, one.payload, one.rows, one.hint)
    path = tmp_path / "parts"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert write_all(descriptor, one.encode_parts() + [b""] + batch(2).encode_parts()) == path.stat().st_size
    finally:
        os.close(descriptor)
    assert path.read_bytes() == whole + record_of(batch(2))


def test_more_parts_than_one_writev_takes_are_written_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "_IOV_MAX", 3)
    parts = [f"{i}:".encode() * (i + 1) for i in range(10)]
    path = tmp_path / "many"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert write_all(descriptor, parts) == sum(map(len, parts))
    finally:
        os.close(descriptor)
    assert path.read_bytes() == b"".join(parts)


SPOOL_ON_A_FULL_DISK = """
import resource, signal, sys
from mdc_middleware.pipeline.spool import Batch, Spool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
spool = Spool(sys.argv[1])
batch = lambda i, rows: Batch("folder", "data", "x\\n", "".join(f"{i}-{r}\\n" for r in range(rows)).encode(), rows)
spool.write(batch(0, 2))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (500, hard))  # the disk fills inside the next record
try:
    spool.write(batch(1, 200))
except OSError as exc:
    print("refused:", exc.strerror)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
spool.write(batch(2, 2))
spool.seal()
"""


def test_a_record_the_disk_cut_short_is_cut_off_and_the_next_replays(tmp_path):
    """Left in the segment, half a record's stated length swallowed the record written after it."""
    script = tmp_path / "spool_full.py"
    script.write_text(SPOOL_ON_A_FULL_DISK)
    result = subprocess.run([PYTHON, str(script), str(tmp_path / "spool")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "refused: File too large" in result.stdout, result.stdout + result.stderr
    metrics = Metrics()
    assert replayed(Spool(tmp_path / "spool", metrics=metrics)) == ["0-0\n0-1\n", "2-0\n2-1\n"]
    assert metrics.snapshot()["spool_corrupt_records"] == 0


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_size_bound_drops_by_policy_and_counts(tmp_path, policy):
    metrics = Metrics()
    one = len(record_of(batch(0)))
    spool = Spool(tmp_path, max_bytes=3 * one + 10, drop=policy, segment_bytes=one, metrics=metrics)
    results = [spool.write(batch(i)) for i in range(6)]
    spool.seal()
    left = replayed(spool)
    snap = metrics.snapshot()
    assert snap["dropped_reasons"]["spool_full"] == 6  # three batches of two rows
    assert snap["rows_spooled"] == (6 if policy == "newest" else 12)
    if policy == "newest":
        assert results == [True, True, True, False, False, False]
        assert left == [f"{i}-0\n{i}-1\n" for i in range(3)]
    else:
        assert all(results)
        assert left == [f"{i}-0\n{i}-1\n" for i in range(3, 6)]


def test_a_segment_held_by_another_process_is_left_alone(tmp_path):
    spool = Spool(tmp_path)
    spool.write(batch(0))
    spool.seal()
    (segment,) = spool.segments()
    holder = os.open(segment, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another open file description: acts as another process
    try:
        assert Spool(tmp_path).next_batch() is None
    finally:
        os.close(holder)
    assert replayed(Spool(tmp_path)) == ["0-0\n0-1\n"]


def test_writer_spools_while_storage_fails_and_replays_when_back(tmp_path):
    data_dir = tmp_path / "data"
    sink = FlakySink(data_dir, failures=3)
    writer = Writer(sink, batch_rows=1, flush_interval=0.05, spool=Spool(tmp_path / "spool"))
    for i in range(20):
        writer.submit(record(i), rows=1)

    def replayed_all() -> bool:  # a replayed batch counts as written just before its spool record is acked
        counts = writer.metrics.snapshot()
        return counts["rows_written"] == 20 and counts["rows_replayed"] == counts["rows_spooled"]

    assert wait_for(replayed_all, timeout=30)
    snap = writer.snapshot()
    assert snap["rows_spooled"] >= 1 and snap["rows_written"] == 20
    assert snap["rows_dropped"] == 0 and snap["spool_bytes"] == 0
    writer.shutdown(5)
    assert sorted(map(int, rows(data_dir, "inputs")["x"])) == list(range(20))


def test_what_shutdown_cannot_deliver_waits_in_the_spool_for_the_next_start(tmp_path):
    data_dir = tmp_path / "data"
    writer = Writer(FlakySink(data_dir, failures=10**9), batch_rows=1000, flush_interval=60,
                    spool=Spool(tmp_path / "spool"))
    for i in range(7):
        writer.submit(record(i), rows=1)
    assert writer.shutdown(timeout=1.5) is False
    snap = writer.snapshot()
    assert snap["rows_spooled"] == 7 and snap["rows_dropped"] == 0
    # the next start replays it with no traffic at all
    restarted = Writer(LocalSink(data_dir), flush_interval=60, spool=Spool(tmp_path / "spool"))
    assert wait_for(lambda: restarted.metrics.snapshot()["rows_replayed"] == 7, timeout=20)
    restarted.shutdown(5)
    assert sorted(map(int, rows(data_dir, "inputs")["x"])) == list(range(7))


@pytest.mark.azurite
def test_a_replayed_batch_that_landed_as_its_process_died_is_not_delivered_twice(azurite, container_name, tmp_path):
    """Killed between a replayed append reaching storage and moving the cursor past it: the next process looks
    where the cursor says the append went, and skips the block."""
    from azure.storage.blob import BlobServiceClient, ContainerClient

    from mdc_middleware.storage.blob import BlobSink

    def sink() -> BlobSink:
        return BlobSink(lambda: BlobServiceClient.from_connection_string(azurite.connection_string, retry_total=0),
                        container_name)

    payload = b"".join(b"%d\n" % i for i in range(50))
    spool = Spool(tmp_path)
    spool.write(Batch("f/2026/01/01", "data", "x\n", payload, 50))
    spool.seal()
    batch = spool.next_batch()
    sink().append(batch.folder, batch.stem, batch.header, batch.payload,
                  on_attempt=lambda name, position: spool.intend(batch, name, position))
    spool.release()  # killed here: the cursor was not moved past the record
    again = Spool(tmp_path)
    writer = Writer(sink(), spool=again, flush_interval=0.2)
    assert writer.force_flush(30)
    writer.shutdown(5)
    text = ContainerClient.from_connection_string(azurite.connection_string, container_name).download_blob(
        "f/2026/01/01/data.csv").readall().decode()
    assert text.splitlines() == ["x"] + [str(i) for i in range(50)]
