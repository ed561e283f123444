"""The write-ahead journal's cost: CPU per collected row and disk written, with and without it, side by side.

    .venv/bin/python benchmarks/bench_journal.py [--rows 100000] [--rate 2000] [--rounds 3]

One-row records (what a one-row request becomes) go through the writer into the local sink, once with the
journal (MDC_SPOOL_DIR set: every row is on disk within about 10 ms) and once without. Two loads: paced at
``--rate`` rows/s (the batcher journals a few rows at a time, the costly case) and unpaced (a backlog).
CPU is the process's (all threads: submitting, batching, journaling, delivering) per row; the ratio is
with / without. Disk is what the journal wrote per second of the paced run. Medians of ``--rounds``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from common import median, table  # noqa: E402  (common also puts the project on sys.path)

from mdc_middleware.pipeline.journal import Journal
from mdc_middleware.storage.paths import Target
from mdc_middleware.records.record import Record
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.pipeline.spool import Spool
from mdc_middleware.pipeline.writer import Writer

TARGET = Target("s", "r", "w", "svc", "bench", "1", "inputs")
COLUMNS = ("id", "f1", "f2", "f3")


class CountingJournal(Journal):
    """The journal, counting the bytes its segments received."""

    written = 0

    def open_generation(self):
        generation = super().open_generation()
        write = generation._write_all

        def counted(parts: list) -> None:
            CountingJournal.written += sum(map(len, parts))
            write(parts)

        generation._write_all = counted  # type: ignore[method-assign]
        return generation


def run(rows: int, rate: float, journal: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        spool = Spool(Path(folder) / "spool") if journal else None
        writer = Writer(LocalSink(Path(folder) / "data"), spool=spool,
                        journal=CountingJournal(spool) if spool is not None else None,
                        flush_interval=1.0, queue_size=10**6, queue_max_bytes=4 << 30)
        CountingJournal.written = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(rows):
            if rate:
                due = wall + i / rate
                while time.perf_counter() < due:
                    time.sleep(max(0.0, due - time.perf_counter()))
            writer.submit(Record(TARGET, [[i, 0.5, 1.25, "a"]], COLUMNS, str(uuid.uuid4()), time.time(), "rid",
                                 rows=1), rows=1)
        assert writer.force_flush(120)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert writer.metrics.snapshot()["rows_written"] == rows
        writer.shutdown(10)
        if spool is not None:
            assert not list(spool.directory.glob("*.journal")), "every delivered generation is deleted"
    return {"cpu_us": cpu / rows * 1e6, "journal_mb_s": CountingJournal.written / wall / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="rows/s of the paced load")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()} rows={args.rows} paced at {args.rate:.0f}/s; medians of {args.rounds} rounds")
    lines = []
    for label, rate, rows in (("paced", args.rate, min(args.rows, int(args.rate * 10))), ("backlog", 0.0, args.rows)):
        results = {True: [], False: []}
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            for journal in (False, True):
                results[journal].append(run(rows, rate, journal))
        without = median([r["cpu_us"] for r in results[False]])
        with_journal = median([r["cpu_us"] for r in results[True]])
        lines.append([label, rows, f"{without:.1f}", f"{with_journal:.1f}", f"{with_journal - without:+.1f}",
                      f"{with_journal / without:.2f}x", f"{median([r['journal_mb_s'] for r in results[True]]):.2f}"])
    print(table(["load", "rows", "CPU µs/row without", "with journal", "difference", "ratio", "journal MB/s"],
                lines))


if __name__ == "__main__":
    main()
