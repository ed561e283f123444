"""Replicas of one model writing at once: the day's shared file against a file per writer, side by side.

    .venv/bin/python benchmarks/bench_replicas.py [--replicas 1,4,16,32] [--rows 5000]

N processes (as N pods would) each collect ``--rows`` rows of one model, version and designation into one
Azurite container, in records of 10 rows, flushing every 0.2 s; they start together. Printed per N: delivered
rows/s (all rows / time until the last replica's force_flush returned), the slowest batch, append-position
conflicts, and every row counted by id in storage (lost, duplicated). ``shared``: everyone appends to the day's
``data.csv``; ``per writer``: ``MDC_FILE_PER_WRITER=true``, each to its ``data-<host>-<pid>.csv``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid

from azure.storage.blob import ContainerClient

from common import azurite, table  # noqa: E402  (also puts the project on sys.path)


def replica(connection: str, container: str, per_writer: bool, index: int, rows: int, barrier, results) -> None:
    import mdc_middleware
    from mdc_middleware import ModelDataCollector, Settings

    settings = Settings.from_env({}, enabled=True, storage_connection_string=connection, container=container,
                                 flush_interval=0.2, spool_dir="off", file_per_writer=per_writer)
    collector = ModelDataCollector("m", designation="inputs", feature_names=["id", "x"], settings=settings)
    barrier.wait(120)
    started = time.time()
    for first in range(0, rows, 10):
        collector.collect([[index * 10**7 + first + i, 0.5] for i in range(10)])
    assert collector.writer.force_flush(600)
    metrics = mdc_middleware.metrics()
    results.put((started, time.time(), metrics["write_seconds_max"], metrics["storage_conflicts"]))
    mdc_middleware.shutdown(30)


def run(connection: str, replicas: int, rows: int, per_writer: bool) -> dict:
    context = multiprocessing.get_context("spawn")
    container = f"bench{uuid.uuid4().hex[:12]}"
    barrier, results = context.Barrier(replicas), context.Queue()
    workers = [context.Process(target=replica, args=(connection, container, per_writer, i, rows, barrier, results))
               for i in range(replicas)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=900) for _ in workers]
    for worker in workers:
        worker.join(120)
    from mdc_middleware.analysis import read_collected

    stored = read_collected(ContainerClient.from_connection_string(connection, container), "inputs")
    ids = stored["id"].astype("int64")
    expected = {i * 10**7 + n for i in range(replicas) for n in range(rows)}
    elapsed = max(o[1] for o in outcomes) - min(o[0] for o in outcomes)
    return {"rate": replicas * rows / elapsed, "slowest_batch": max(o[2] for o in outcomes),
            "conflicts": sum(o[3] for o in outcomes), "lost": len(expected - set(ids)),
            "duplicated": int(ids.duplicated().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--replicas", default="1,4,16,32")
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    lines = []
    with azurite() as server:
        for count in [int(n) for n in args.replicas.split(",")]:
            shared = run(server.connection_string, count, args.rows, per_writer=False)
            own = run(server.connection_string, count, args.rows, per_writer=True)
            lines.append([count, f"{shared['rate']:,.0f}", f"{own['rate']:,.0f}", f"{own['rate'] / shared['rate']:.2f}",
                          f"{shared['slowest_batch']:.2f} / {own['slowest_batch']:.2f}",
                          f"{shared['conflicts']} / {own['conflicts']}",
                          f"{shared['lost'] + own['lost']} / {shared['duplicated'] + own['duplicated']}"])
            print(lines[-1], flush=True)
    print(table(["replicas", "shared rows/s", "per writer rows/s", "per writer / shared",
                 "slowest batch s (shared / per writer)", "conflicts (shared / per writer)", "lost / duplicated"],
                lines))


if __name__ == "__main__":
    main()
