"""Writer throughput: rows/s from the queue to Azurite and to the local sink, by batch size and width.

    .venv/bin/python benchmarks/bench_writer.py [--rows 200000] [--repeat 3]

Each run submits records of 100 rows (numpy float arrays, like a batch scoring request) and times
until force_flush() returns, i.e. until storage acknowledged every row. Medians of --repeat runs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np
from azure.storage.blob import BlobServiceClient

from common import azurite, median, table  # noqa: E402  (also puts the project on sys.path)

from mdc_middleware.paths import Target
from mdc_middleware.records import Record
from mdc_middleware.sinks import LocalSink
from mdc_middleware.sinks.blob import BlobSink
from mdc_middleware.writer import Writer

ROWS_PER_RECORD = 100


def run(sink, features: int, total_rows: int, batch_rows: int) -> float:
    writer = Writer(sink, batch_rows=batch_rows, batch_bytes=64 << 20, flush_interval=60,
                    queue_size=10**6, queue_max_bytes=4 << 30)
    target = Target("s", "r", "w", "svc", "bench", "1", "inputs")
    columns = tuple(f"f{i}" for i in range(features))
    data = np.random.default_rng(1).random((ROWS_PER_RECORD, features))
    started = time.perf_counter()
    for _ in range(total_rows // ROWS_PER_RECORD):
        writer.submit(Record(target, data, columns, str(uuid.uuid4()), time.time(), "rid",
                             rows=ROWS_PER_RECORD), rows=ROWS_PER_RECORD)
    assert writer.force_flush(600)
    elapsed = time.perf_counter() - started
    assert writer.metrics.snapshot()["rows_written"] == total_rows
    writer.shutdown(10)
    return total_rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    with azurite() as server:
        for features in (10, 100):
            rows = args.rows if features == 10 else args.rows // 4
            for batch_rows in (100, 1_000, 10_000):
                blob_rates, local_rates = [], []
                for _ in range(args.repeat):
                    container = f"bench{uuid.uuid4().hex[:12]}"
                    sink = BlobSink(lambda: BlobServiceClient.from_connection_string(
                        server.connection_string, retry_total=0), container)
                    blob_rates.append(run(sink, features, rows, batch_rows))
                    with tempfile.TemporaryDirectory() as directory:
                        local_rates.append(run(LocalSink(directory), features, rows, batch_rows))
                blob, local = median(blob_rates), median(local_rates)
                results.append([features, batch_rows, rows, f"{blob:,.0f}", f"{local:,.0f}", f"{local / blob:.2f}"])
                print(f"features={features} batch_rows={batch_rows}: azurite {blob:,.0f} rows/s, "
                      f"local {local:,.0f} rows/s", flush=True)
    print()
    print(table(["features", "batch rows", "rows", "Azurite rows/s", "local rows/s", "local/Azurite"], results))


if __name__ == "__main__":
    main()
