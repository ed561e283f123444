"""The local sink under what happens to disks: they fill up, and files are moved away while collecting."""
import shutil
import subprocess
import textwrap

import mdc_middleware
from mdc_middleware import ModelDataCollector
from mdc_middleware.analysis import read_collected

from tests.helpers import PYTHON

# RLIMIT_FSIZE stands in for a full disk without root: a write that crosses it lands in part, then the next
# fails (EFBIG), as a write to a filling disk does (ENOSPC). Only the child process is limited.
FULL_DISK = textwrap.dedent("""
    import os, resource, signal, sys
    import mdc_middleware
    from mdc_middleware import ModelDataCollector, Settings

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
    settings = Settings.from_env({}, enabled=True, local_dir=sys.argv[1], flush_interval=0.1)
    collector = ModelDataCollector("m", designation="inputs", feature_names=["i", "text"], settings=settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
    for i in range(1000):
        collector.collect([[i, "x" * 100]])
    print("flushed while full:", mdc_middleware.flush(1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    print("flushed with room:", mdc_middleware.flush(20))
    metrics = mdc_middleware.metrics()
    print("written", metrics["rows_written"], "errors", metrics["write_errors"], "dropped", metrics["rows_dropped"])
""")


def test_a_full_disk_leaves_no_half_row_and_every_row_lands_once_when_there_is_room(data_dir, tmp_path):
    """A write the disk cut short left half a row in the file, and each retry appended more of the batch
    until the disk was full again: rows twice, lines pandas could not read, and nothing delivered."""
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    result = subprocess.run([PYTHON, str(script), str(data_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "flushed while full: False" in result.stdout and "flushed with room: True" in result.stdout, result.stdout
    assert "written 1000 errors" in result.stdout and "dropped 0" in result.stdout, result.stdout
    assert "failed: File too large; they are kept and retried" in result.stderr
    rows = read_collected(data_dir, "inputs", as_text=True)
    assert rows["i"].tolist() == [str(i) for i in range(1000)]
    assert set(rows["text"]) == {"x" * 100}
    assert not list(data_dir.rglob("*.tmp"))


def test_a_file_moved_away_while_collecting_is_begun_again(data_dir, settings):
    """A job that ships the files away (azcopy, rclone move) or a clean-up took the day's file: every later
    write failed with "No such file or directory" until the rows were dropped at shutdown."""
    collector = ModelDataCollector("m", designation="inputs", feature_names=["a"], settings=settings)
    collector.collect([[1]])
    assert mdc_middleware.flush(5)
    shipped = data_dir.parent / "shipped"
    shutil.move(str(data_dir), str(shipped))
    collector.collect([[2]])
    assert mdc_middleware.flush(5)
    assert read_collected(shipped, "inputs", as_text=True)["a"].tolist() == ["1"]
    assert read_collected(data_dir, "inputs", as_text=True)["a"].tolist() == ["2"]
    assert mdc_middleware.metrics()["write_errors"] == 0
