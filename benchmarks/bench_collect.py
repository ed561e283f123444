"""collect() beside azureml-ai-monitoring's Collector.collect: cost per call, then rows/s end to end.

    .venv/bin/pip install azureml-ai-monitoring   # only for this benchmark
    .venv/bin/python benchmarks/bench_collect.py [--calls 2000] [--repeat 3] [--e2e-only]

Per call: the time collect() takes on the caller's thread, for DataFrames of 1, 100 and 10,000 rows x 10
float columns, the same frame every call and a new frame each call (as a score.py builds one), both
libraries with their background workers running (ours writes to a local folder; theirs posts to a
loopback stand-in sidecar, benchmarks/sidecar.py). End to end: rows/s from the first collect()
to the last row acknowledged (ours: by Azurite, theirs: by the sidecar), 100-row calls, in one run, and
the CPU time the collecting process spent per delivered row (Azurite's and the sidecar's own CPU not
counted: they stand in for services that run elsewhere). Ours runs against two Azurites: the test
command's (3.37.0, which computes a CRC-64 of every appended byte in a JavaScript loop on this machine's
cores) and 3.36.0 (the same append-blob API without it; installed from npm on first use).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from common import (AZURITE_BEFORE_CRC64, azurite, azurite_binary, azurite_version, free_port,  # noqa: E402
                    median, table)

import mdc_middleware
from mdc_middleware import ModelDataCollector, Settings

COLUMNS = [f"f{i}" for i in range(10)]


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(seed).random((rows, len(COLUMNS))), columns=COLUMNS)


def start_sidecar() -> tuple:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sidecar.py")), str(port)],
                               stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    return process, port


def sidecar_rows(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as response:
        return json.loads(response.read())["rows"]


def their_collector(port: int):
    os.environ.update(AZUREML_MDC_ENABLED="true", AZUREML_MDC_HOST="127.0.0.1", AZUREML_MDC_PORT=str(port))
    import logging

    from azureml.ai.monitoring import Collector

    collector = Collector(name="model_inputs", on_error=lambda exc: None)
    logging.getLogger("mdc").setLevel(logging.CRITICAL)  # its worker logs every send
    return collector


def per_call(collect, frames: list) -> tuple:
    """p50 and p99 µs of collect() over ``frames``, one call each."""
    times = []
    for data in frames:
        started = time.perf_counter_ns()
        collect(data)
        times.append(time.perf_counter_ns() - started)
    times.sort()
    return times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000


def frames_for(rows: int, calls: int, fresh: bool) -> list:
    """The same frame every call, or a new one each call as a score.py builds it (made before timing)."""
    if not fresh:
        return [frame(rows)] * calls
    values = frame(rows).to_numpy()
    return [pd.DataFrame(values, columns=COLUMNS) for _ in range(calls)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--e2e-rows", type=int, default=200_000)
    parser.add_argument("--e2e-only", action="store_true", help="skip the per-call measurements")
    args = parser.parse_args()
    sidecar, port = start_sidecar()
    theirs = their_collector(port)
    directory = tempfile.mkdtemp()
    ours = ModelDataCollector("bench", designation="inputs", settings=Settings.from_env(
        {}, enabled=True, local_dir=directory, queue_size=100_000))
    try:
        rows_table = []
        for fresh in (() if args.e2e_only else (False, True)):
            for rows in (1, 100, 10_000):
                calls = args.calls if rows < 10_000 else max(50, args.calls // 20)
                ours_runs, theirs_runs = [], []
                for _ in range(args.repeat):  # side by side, alternating
                    ours_runs.append(per_call(ours.collect, frames_for(rows, calls, fresh)))
                    mdc_middleware.flush(120)
                    theirs_runs.append(per_call(theirs.collect, frames_for(rows, calls, fresh)))
                    time.sleep(0.5)
                o50, o99 = median([r[0] for r in ours_runs]), median([r[1] for r in ours_runs])
                t50, t99 = median([r[0] for r in theirs_runs]), median([r[1] for r in theirs_runs])
                kind = "new each call" if fresh else "same frame"
                rows_table.append([rows, kind, calls, f"{o50:.1f}", f"{o99:.1f}", f"{t50:.1f}", f"{t99:.1f}",
                                   f"{o50 / t50:.2f}"])
                print(f"{rows} rows, {kind}: ours p50 {o50:.1f} us, theirs p50 {t50:.1f} us", flush=True)
        if rows_table:
            print()
            print(table(["rows/call", "frame", "calls", "ours p50 µs", "ours p99 µs", "theirs p50 µs",
                         "theirs p99 µs", "ours/theirs p50"], rows_table))
        mdc_middleware.shutdown(60)
        print()
        print(end_to_end(args, theirs, port))
    finally:
        sidecar.kill()


def settle(port: int) -> int:
    """Wait until the SDK's worker has sent all it had queued; the sidecar's row count then."""
    last = -1
    while True:
        count = sidecar_rows(port)
        if count == last:
            return count
        last = count
        time.sleep(1.0)


def settle_storage(server, timeout: float = 20.0) -> None:
    """Write the disk cache out, then wait until Azurite is idle (under 4 % of a core for 0.25 s), so what
    the last run left (the kernel writes dirty pages out 30 s later; Azurite's garbage collection) does not
    compete with the next."""
    os.sync()
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    deadline = time.monotonic() + timeout
    last = cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu_seconds()
        if now - last < 0.01:
            return
        last = now


def azurite_bytes_per_second(server, blocks: int = 20) -> float:
    """Azurite's own ceiling on this machine, appending bytes made beforehand (its CPU is the limit)."""
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(server.connection_string, f"ceiling{time.time_ns()}")
    container.create_container()
    blob = container.get_blob_client("b")
    blob.create_append_blob()
    payload = os.urandom(3 << 20)
    started = time.perf_counter()
    for _ in range(blocks):
        blob.append_block(payload)
    return blocks * len(payload) / (time.perf_counter() - started)


def ours_once(args, server, data) -> tuple:
    """Rows/s from the first collect() to the last row Azurite acknowledged; rows written; CPU µs/row."""
    settings = Settings.from_env({}, enabled=True, storage_connection_string=server.connection_string,
                                 container=f"e2e{time.time_ns()}", spool_dir="off", queue_size=100_000)
    ours = ModelDataCollector("bench", designation="inputs", settings=settings)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.e2e_rows // len(data)):
        ours.collect(data)
    assert mdc_middleware.flush(300)
    rate = args.e2e_rows / (time.perf_counter() - started)
    counts = mdc_middleware.metrics()
    written = counts["rows_written"]
    cpu_per_row = (time.process_time() - cpu) / written * 1e6
    mdc_middleware.shutdown(30)
    return rate, written, cpu_per_row, counts["bytes_written"] / written


def theirs_once(args, theirs, port: int, data) -> tuple:
    """Rows/s from the first collect() to the last row the sidecar received; rows delivered; CPU µs/row."""
    before = settle(port)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.e2e_rows // len(data)):
        theirs.collect(data)
    deadline = time.monotonic() + 300
    delivered = 0
    while time.monotonic() < deadline:
        delivered = sidecar_rows(port) - before
        if delivered >= args.e2e_rows:
            break
        previous = delivered
        time.sleep(0.5)
        if sidecar_rows(port) - before == previous:  # nothing more is coming: the rest were dropped
            break
    rate = delivered / (time.perf_counter() - started)
    cpu_per_row = (time.process_time() - cpu) / max(delivered, 1) * 1e6
    settle(port)
    return rate, delivered, cpu_per_row


def end_to_end(args, theirs, port: int) -> str:
    """Ours into two Azurites (the test command's, and the last one before its CRC-64 loop) and theirs into
    the sidecar, alternating, in one run."""
    data = frame(100)
    binaries = [azurite_binary(), azurite_binary(AZURITE_BEFORE_CRC64)]
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(azurite(binary)) for binary in binaries]
        ours_runs = [[] for _ in servers]   # per server, one (rate, written, CPU/row, bytes/row) per repeat
        ceilings = [[] for _ in servers]
        theirs_runs = []
        for _ in range(args.repeat):
            for index, (server, binary) in enumerate(zip(servers, binaries)):
                settle(port)  # their worker idle: what it still had queued must not compete with ours
                ceilings[index].append(azurite_bytes_per_second(server))
                settle_storage(server)
                run = ours_once(args, server, data)
                ours_runs[index].append(run)
                print(f"end to end: ours into Azurite {azurite_version(binary)} {run[0]:,.0f} rows/s "
                      f"({run[1]} acknowledged, {run[2]:.2f} CPU µs/row)", flush=True)
            run = theirs_once(args, theirs, port, data)
            theirs_runs.append(run)
            print(f"end to end: theirs {run[0]:,.0f} rows/s ({run[1]} delivered, {run[2]:.2f} CPU µs/row)",
                  flush=True)
    theirs_rate, theirs_cpu = median([r[0] for r in theirs_runs]), median([r[2] for r in theirs_runs])
    rows = []
    for binary, runs, server_ceilings in zip(binaries, ours_runs, ceilings):
        rate, cpu, row_bytes = median([r[0] for r in runs]), median([r[2] for r in runs]), runs[-1][3]
        ceiling = median(server_ceilings) / row_bytes
        rows.append([f"mdc-middleware → Azurite {azurite_version(binary)}", args.e2e_rows, runs[-1][1],
                     f"{rate:,.0f}", f"{rate / theirs_rate:.1f}x", f"{cpu:.2f}",
                     f"{ceiling:,.0f} ({ceiling * row_bytes / 2**20:.0f} MiB/s of {row_bytes:.0f}-byte rows)"])
    rows.append(["azureml-ai-monitoring → loopback sidecar", args.e2e_rows, theirs_runs[-1][1],
                 f"{theirs_rate:,.0f}", "1.0x", f"{theirs_cpu:.2f}", ""])
    return table(["", "rows offered", "rows delivered (last run)", "delivered rows/s (median)", "vs theirs",
                  "CPU µs per delivered row in the collecting process (median)",
                  "storage alone: rows/s it takes appending 3 MiB blocks made beforehand"], rows)


if __name__ == "__main__":
    sys.exit(main())
