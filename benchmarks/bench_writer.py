"""Writer throughput: rows/s from the queue to Azurite and to the local sink, by batch size and width.

    .venv/bin/python benchmarks/bench_writer.py [--rows 200000] [--repeat 3]

Each run submits records of 100 rows (numpy float arrays, like a batch scoring request) and times
until force_flush() returns, i.e. until storage acknowledged every row. Medians of --repeat runs.
Azurite twice: the test command's (3.37.0, which spends about 14 ms of this machine's CPU per appended
MiB on a CRC-64 in JavaScript) and 3.36.0 (the same append-blob API without it).
Then event-loop lag: an asyncio loop in the main thread sleeps 1 ms at a time and records how late
it wakes, once idle and once while the writer's threads turn a backlog of rows into CSV.
Then the encoding of captured JSON requests (what the middleware queues), µs per request: record by record,
a run of 16 the general way (encode_captures), and a run of 16 as the batcher encodes it (plain_runs.encode_run:
alike requests together, which these are).

``--beside-requests``: one-row captures encoded on a thread of their own, as the batcher does, as a backlog
(runs of 128) and as looks (70 every 10 ms), the encoder's pauses on or off, while the main thread sleeps and
while it runs Python: the thread's own CPU per capture. What a running server's writer pays beyond the
encoding itself (GIL hand-overs, caches the other thread filled).

``--idle``: what a writer costs while no request comes: its batcher's CPU (the scheduler's own count, from
``/proc/self/task/<tid>/schedstat``) and wake-ups a second over 10 s, with and without the journal, as shipped
and looking every poll interval throughout (the queue's quiet spell set to never).

``--paced [--rate 300]``: what a light load sees. The FastAPI app of bench_http.py (model endpoint) called
in-process, one request every 1/rate s for 20 s, the whole process on one CPU as a server's is, in a process
of its own per run: without collection (off), collecting without the journal, and with it. Medians over
--repeat alternated runs of p50, p99, the tail (p99 − p50: what a look of the batcher in the way of a request
adds) and the writer threads' CPU per request (schedstat).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import uuid

import numpy as np
from azure.storage.blob import BlobServiceClient

from common import (AZURITE_BEFORE_CRC64, azurite, azurite_binary, azurite_version,  # noqa: E402
                    median, table)  # (common also puts the project on sys.path)

from mdc_middleware.storage.paths import Target
from mdc_middleware.records.record import Record
from mdc_middleware.storage.local import LocalSink
from mdc_middleware.storage.blob import BlobSink
from mdc_middleware.pipeline.writer import Writer

ROWS_PER_RECORD = 100
PACED_MODES = ("off", "no journal", "journal")
PACED_SECONDS = 20  # a paced run's length: 6,000 requests at the default 300 a second


def run(sink, features: int, total_rows: int, batch_rows: int) -> float:
    writer = Writer(sink, batch_rows=batch_rows, batch_bytes=64 << 20, flush_interval=60,
                    queue_size=10**6, queue_max_bytes=4 << 30)
    target = Target("s", "r", "w", "svc", "bench", "1", "inputs")
    columns = tuple(f"f{i}" for i in range(features))
    data = np.random.default_rng(1).random((ROWS_PER_RECORD, features))
    os.sync()  # what earlier runs left in the disk cache is not written out during this one
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
    parser.add_argument("--lag-only", action="store_true", help="only the event-loop lag measurement")
    parser.add_argument("--encode-only", action="store_true", help="only the encoding of captured requests")
    parser.add_argument("--beside-requests", action="store_true",
                        help="only the encoding thread's CPU with the main thread idle and busy")
    parser.add_argument("--paced", action="store_true", help="only the latency at a light, paced load")
    parser.add_argument("--idle", action="store_true", help="only the batcher's CPU and wake-ups while idle")
    parser.add_argument("--rate", type=int, default=300, help="--paced: requests a second")
    parser.add_argument("--paced-child", choices=PACED_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paced_child:
        paced_child(args.paced_child, args.rate)
        return
    if args.paced:
        paced_latency(args.repeat, args.rate)
        return
    if args.idle:
        idle_writer()
        return
    if args.beside_requests:
        encoding_beside_a_busy_thread(args.repeat)
        return
    if args.encode_only:
        capture_encoding(args.repeat)
        return
    if not args.lag_only:
        throughput(args)
    lag_rows = 5 * args.rows
    lag = loop_lag(lag_rows)
    print()
    print(table(["event loop", "wake-ups", "lag p50 ms", "lag p99 ms", "lag max ms"],
                [[name, s["samples"], f"{s['p50']:.3f}", f"{s['p99']:.3f}", f"{s['max']:.3f}"]
                 for name, s in (("idle", lag["idle"]), (f"writer draining {lag_rows:,} rows", lag["busy"]))]))
    if not args.lag_only:
        capture_encoding(args.repeat)


def throughput(args) -> None:
    binaries = [azurite_binary(), azurite_binary(AZURITE_BEFORE_CRC64)]
    names = [f"Azurite {azurite_version(binary)}" for binary in binaries]
    results = []
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(azurite(binary)) for binary in binaries]
        for features in (10, 100):
            rows = args.rows if features == 10 else args.rows // 4
            for batch_rows in (100, 1_000, 10_000):
                rates = [[] for _ in range(len(servers) + 1)]
                for _ in range(args.repeat):
                    for server, server_rates in zip(servers, rates):
                        container = f"bench{uuid.uuid4().hex[:12]}"
                        sink = BlobSink(lambda: BlobServiceClient.from_connection_string(
                            server.connection_string, retry_total=0), container)
                        server_rates.append(run(sink, features, rows, batch_rows))
                    with tempfile.TemporaryDirectory() as directory:
                        rates[-1].append(run(LocalSink(directory), features, rows, batch_rows))
                medians = [median(r) for r in rates]
                results.append([features, batch_rows, rows] + [f"{m:,.0f}" for m in medians])
                print(f"features={features} batch_rows={batch_rows}: " + ", ".join(
                    f"{name} {m:,.0f} rows/s" for name, m in zip(names + ["local"], medians)), flush=True)
    print()
    print(table(["features", "batch rows", "rows"] + [f"{name} rows/s" for name in names] + ["local rows/s"],
                results))


def loop_lag(rows: int) -> dict:
    """Lateness (ms) of asyncio.sleep(0.001) wake-ups, idle and while the writer drains ``rows`` rows."""
    import asyncio

    async def measure(until) -> list:
        lags = []
        while not until():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - started) * 1000 - 1.0)
        return lags

    idle_end = time.monotonic() + 2
    idle = asyncio.run(measure(lambda: time.monotonic() > idle_end))
    with tempfile.TemporaryDirectory() as directory:
        writer = Writer(LocalSink(directory), batch_rows=10_000, flush_interval=60, queue_size=10**6,
                        queue_max_bytes=4 << 30)
        target = Target("s", "r", "w", "svc", "bench", "1", "inputs")
        columns = tuple(f"f{i}" for i in range(10))
        data = np.random.default_rng(1).random((ROWS_PER_RECORD, 10))
        for _ in range(rows // ROWS_PER_RECORD):
            writer.submit(Record(target, data, columns, str(uuid.uuid4()), time.time(), "rid", rows=ROWS_PER_RECORD),
                          rows=ROWS_PER_RECORD)
        busy = asyncio.run(measure(lambda: writer.metrics.snapshot()["rows_written"] >= rows))
        writer.shutdown(30)

    def summary(lags: list) -> dict:
        lags = sorted(lags)
        return {"samples": len(lags), "p50": lags[len(lags) // 2], "p99": lags[int(len(lags) * 0.99)], "max": lags[-1]}

    return {"idle": summary(idle), "busy": summary(busy)}


def _score_plan(directory: str):
    """The route plan of a four-feature ``/score`` route answered with one prediction."""
    from mdc_middleware import Schema, Settings
    from mdc_middleware.capture.policy import CapturePolicy

    settings = Settings.from_env({}, enabled=True, local_dir=directory)
    return CapturePolicy({"/score": Schema(inputs=["a", "b", "c", "d"], predictions=["species"])}, settings,
                         Writer(LocalSink(directory))).select("POST", "/score")


def encoding_beside_a_busy_thread(repeat: int, backlog: int = 20_000, run: int = 128, look: int = 70) -> None:
    """CPU of the encoding thread per one-row capture, with the main thread idle or running Python, and the
    encoder's pauses (the GIL given away after each millisecond of work) on or off; alternated, medians.

    Two ways the work comes: a backlog (runs of ``run`` back to back) and looks (``look`` captures, then
    10 ms of waiting, as the batcher finds them at about 7,000 requests a second)."""
    import json
    import threading

    from mdc_middleware.metrics import Metrics
    from mdc_middleware.pipeline.batching import Pacer
    from mdc_middleware.pipeline.capture_encoding import InThreadEncoder

    with tempfile.TemporaryDirectory() as directory:
        plan = _score_plan(directory)
    body = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    answer = json.dumps({"predictions": [0]}).encode()
    captures = [(plan.id, body, {"content-type": "application/json"}, answer, "application/json", "",
                 f"id-{i}", f"request-{i}", time.time()) for i in range(backlog)]
    metrics = Metrics()

    def encode(pattern: str, pacer: Pacer, pauses: bool, cpu: list) -> None:
        encoder = InThreadEncoder(metrics, True, pacer.pause if pauses else (lambda: None))
        size, count = (run, backlog) if pattern == "backlog" else (look, backlog // 3)  # looks: 10 ms apart
        started = time.thread_time()
        for start in range(0, count, size):
            if pattern == "looks":
                time.sleep(0.01)
                pacer.working()
            for _ in encoder.encode(captures[start:start + size]):
                pass
        cpu.append((time.thread_time() - started) / count * 1e6)

    def spin(thread: threading.Thread) -> None:
        while thread.is_alive():
            total = 0
            for i in range(1000):
                total += i

    timings: dict = {}
    for _ in range(max(repeat, 5)):
        for pattern in ("backlog", "looks"):
            for pauses in (True, False):
                for main in ("sleeps", "runs Python"):
                    cpu: list = []
                    thread = threading.Thread(target=encode, args=(pattern, Pacer(), pauses, cpu))
                    thread.start()
                    if main == "runs Python":
                        spin(thread)
                    thread.join()
                    timings.setdefault((pattern, pauses, main), []).append(cpu[0])
    rows = []
    for (pattern, pauses, main), values in timings.items():
        asleep = median(timings[(pattern, pauses, "sleeps")])
        rows.append([pattern, "on" if pauses else "off", main, f"{median(values):.2f}", f"{median(values) / asleep:.2f}"])
    print()
    print(table(["work comes as", "encoder's pauses", "main thread", "encoding thread's CPU µs per capture",
                 "vs main thread asleep"], rows))


def capture_encoding(repeat: int, run: int = 16) -> None:
    """µs of CPU per captured request to turn it into CSV: a run at a time, and record by record."""
    import json
    import timeit

    from mdc_middleware.payloads.captured_request import Capture
    from mdc_middleware.pipeline.encoder import encode_captures, encode_record
    from mdc_middleware.pipeline.plain_runs import encode_run
    from mdc_middleware.metrics import Metrics

    with tempfile.TemporaryDirectory() as directory:
        plan = _score_plan(directory)
    metrics = Metrics()
    results = []
    for rows, prediction in ((1, 0), (10, 0), (100, 0), (1, "setosa"), (10, "setosa")):
        body = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]] * rows}).encode()
        answer = json.dumps({"predictions": [prediction] * rows}).encode()
        captures = [Capture.from_raw((plan.id, body, (("content-type", "application/json"),), answer,
                                      "application/json", "", f"id-{i}", f"request-{i}", time.time()), plan)
                    for i in range(run)]

        def together() -> None:
            encode_captures(captures, metrics, True)

        def as_a_run() -> None:
            encode_run(captures, metrics, True)

        def one_by_one() -> None:
            for capture in captures:
                for record in capture.to_records(metrics):
                    encode_record(record, metrics, True, counted=False)

        number = max(1, 2000 // rows)
        timings = {name: [] for name in ("one_by_one", "together", "as_a_run")}
        for _ in range(max(repeat, 5)):  # alternated, so drifts of the machine hit all alike
            for name, function in (("one_by_one", one_by_one), ("together", together), ("as_a_run", as_a_run)):
                timings[name].append(timeit.timeit(function, number=number) / number / run * 1e6)
        by_record, by_run, plain = (median(timings[name]) for name in ("one_by_one", "together", "as_a_run"))
        results.append([rows, "numbers" if prediction == 0 else "labels", f"{by_record:.1f}", f"{by_run:.1f}",
                        f"{plain:.1f}", f"{by_record / plain:.2f}"])
    print()
    print(table(["rows per request", "predictions", "record by record µs", f"runs of {run}, general way µs",
                 f"runs of {run}, as the batcher does µs", "speed-up over record by record"], results))


def paced_child(mode: str, rate: int) -> None:
    """One paced run in this process (on CPU 0): prints a JSON line of latencies (ms) and thread CPU (µs/request)."""
    import asyncio
    import json

    os.sched_setaffinity(0, {0})
    os.environ.update(BENCH_STACK="fastapi", BENCH_ENDPOINT="model", BENCH_MODE="off" if mode == "off" else "on",
                      MDC_ENABLED="true", MDC_LOCAL_DIR=tempfile.mkdtemp())
    os.environ.pop("MDC_SPOOL_DIR", None)  # no spool directory, no journal (local sink)
    if mode == "journal":
        os.environ["MDC_SPOOL_DIR"] = tempfile.mkdtemp()
    import http_apps
    from bench_request_path import asgi_request

    one = asgi_request(http_apps.fastapi)

    def threads_cpu() -> float:
        """Seconds on a CPU of every thread but the main one (the batcher and the deliverer), as the scheduler
        counts them: the clock-tick counts of /proc/.../stat charge a whole tick to a thread woken by a timer."""
        return sum(int(open(f"/proc/self/task/{task}/schedstat").read().split()[0]) / 1e9
                   for task in os.listdir("/proc/self/task") if task != str(os.getpid()))

    async def run() -> dict:
        for _ in range(300):
            await one()
        await asyncio.sleep(0.5)
        requests = rate * PACED_SECONDS
        latencies, period = [], 1.0 / rate
        cpu = threads_cpu()
        due = time.perf_counter()
        for _ in range(requests):
            due += period
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        cpu = threads_cpu() - cpu
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3
        return {"p50": p50, "p99": p99, "tail": p99 - p50, "threads_us": cpu / requests * 1e6}

    result = asyncio.run(run())
    import mdc_middleware

    mdc_middleware.shutdown(10)
    print(json.dumps(result), flush=True)


def paced_latency(repeat: int, rate: int) -> None:
    import json
    import subprocess
    import sys

    runs = {mode: [] for mode in PACED_MODES}
    for round_number in range(1, repeat + 1):
        for mode in PACED_MODES:
            out = subprocess.run([sys.executable, __file__, "--paced-child", mode, "--rate", str(rate)],
                                 capture_output=True, text=True, check=True, timeout=300).stdout
            result = json.loads(out.strip().splitlines()[-1])
            runs[mode].append(result)
            print(f"{mode} round {round_number}: p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                  f"tail {result['tail']:.2f} ms, writer threads {result['threads_us']:.0f} µs/request", flush=True)
    off_tail = median([r["tail"] for r in runs["off"]])
    rows = []
    for mode in PACED_MODES:
        values = {key: median([r[key] for r in runs[mode]]) for key in ("p50", "p99", "tail", "threads_us")}
        rows.append([mode, f"{values['p50']:.2f}", f"{values['p99']:.2f}", f"{values['tail']:.2f}",
                     f"{values['tail'] / off_tail:.2f}", f"{values['threads_us']:.0f}" if mode != "off" else "—"])
    print()
    print(f"FastAPI model endpoint in-process, {rate} requests/s, {rate * PACED_SECONDS:,} a run, one CPU; "
          f"medians of {repeat} runs")
    print(table(["mode", "p50 ms", "p99 ms", "tail (p99 − p50) ms", "tail vs off", "writer threads µs/request"], rows))


def idle_writer(seconds: float = 10.0) -> None:
    import threading

    from mdc_middleware.pipeline.journal import Journal
    from mdc_middleware.pipeline.spool import Spool

    rows = []
    for journal in (False, True):
        for shipped in (True, False):
            with tempfile.TemporaryDirectory() as directory:
                spool = Spool(os.path.join(directory, "spool")) if journal else None
                writer = Writer(LocalSink(os.path.join(directory, "data")), spool=spool,
                                journal=Journal(spool) if spool is not None else None)
                quiet = f"{writer._queue.quiet_after * 1000:g} ms, as shipped" if shipped else "never"
                if not shipped:
                    writer._queue.quiet_after = float("inf")
                writer.submit(Record(Target("s", "r", "w", "svc", "bench", "1", "inputs"), np.zeros((1, 4)),
                                     ("a", "b", "c", "d"), "id", time.time(), "rid", rows=1), rows=1)
                assert writer.force_flush(10)
                time.sleep(1.0)  # past the quiet spell
                wakes = []
                wait = writer._queue._cond.wait
                writer._queue._cond.wait = lambda timeout=None: wakes.append(timeout) or wait(timeout)
                batcher = next(t for t in threading.enumerate() if t.name == "mdc-batcher")
                schedstat = f"/proc/self/task/{batcher.native_id}/schedstat"
                before = int(open(schedstat).read().split()[0])
                time.sleep(seconds)
                cpu = (int(open(schedstat).read().split()[0]) - before) / 1e9
                writer.shutdown(5)
            rows.append(["on" if journal else "off", quiet, f"{cpu / seconds * 100:.3f}", f"{len(wakes) / seconds:.1f}"])
            print(f"journal {rows[-1][0]}, quiet spell {quiet}: batcher {rows[-1][2]} % of a core, "
                  f"{rows[-1][3]} wake-ups/s", flush=True)
    print()
    print(table(["journal", "sleeps until a put after a quiet spell of", "batcher CPU, % of a core",
                 "wake-ups a second"], rows))


if __name__ == "__main__":
    main()
