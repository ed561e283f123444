"""Memory held per 1,000 queued rows, while storage is stalled and everything waits in the queue.

    .venv/bin/python benchmarks/bench_memory.py [--rows 200000]

Each case runs in a fresh process: RSS is read before and after queueing --rows rows into a writer
whose sink blocks, so nothing leaves the queue. Cases: collect() of 100-row numpy records (10 and 100
float features), collect() of 1-row lists, and middleware captures of 1-row JSON requests.
Then what a process carries before any row: ``import mdc_middleware`` in a fresh interpreter, and the
``MDC_ENCODER=process`` helper once it has encoded 1,000 captured requests (peak RSS of each).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from common import ROOT, median, table  # noqa: E402  (also puts the project on sys.path)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def peak_rss_kib(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def helper_peak_kib() -> int:
    """Peak RSS of an encoder helper process after it encoded 1,000 captured JSON requests."""
    from mdc_middleware import Schema, Settings
    from mdc_middleware.capture.policy import CapturePolicy
    from mdc_middleware.storage.local import LocalSink
    from mdc_middleware.pipeline.writer import Writer

    writer = Writer(LocalSink(tempfile.mkdtemp()), flush_interval=60, encoder="process")
    plan = CapturePolicy({"/score": Schema(inputs=[f"f{i}" for i in range(4)], predictions=["y"])},
                         Settings.from_env({}, enabled=True), writer).select("POST", "/score")
    deadline = time.monotonic() + 60
    while not writer.encoder.available():
        assert time.monotonic() < deadline, "the encoder process did not start"
        time.sleep(0.05)
    headers = (("content-type", "application/json"),)
    for i in range(1000):
        body, response = json.dumps({"data": [[i, 3.5, 1.4, 0.2]]}).encode(), b'{"predictions": [1]}'
        writer.submit_capture((plan.id, body, headers, response, "application/json", "", "c", "r", time.time()))
    assert writer.force_flush(30) and writer.snapshot()["encoder_captures"] == 1000
    peak = peak_rss_kib(str(writer.encoder.pid))
    writer.shutdown(10)
    return peak


def child(case: str, rows: int) -> None:
    if case == "helper":
        print(json.dumps({"kib": helper_peak_kib()}))
        return
    import numpy as np

    from mdc_middleware import Schema, Settings
    from mdc_middleware.capture.policy import CapturePolicy
    from mdc_middleware.storage.paths import Target
    from mdc_middleware.records.record import Record
    from mdc_middleware.storage.local import LocalSink
    from mdc_middleware.pipeline.writer import Writer

    class StalledSink(LocalSink):
        def append(self, *args, **kwargs):
            threading.Event().wait()

    writer = Writer(StalledSink(tempfile.mkdtemp()), batch_rows=10**9, batch_bytes=1 << 40, flush_interval=3600,
                    queue_size=10**7, queue_max_bytes=1 << 40)
    target = Target("s", "r", "w", "svc", "m", "1", "inputs")
    plan = CapturePolicy({"/score": Schema(inputs=[f"f{i}" for i in range(4)], predictions=["y"])},
                         Settings.from_env({}, enabled=True), writer).select("POST", "/score")
    rng = np.random.default_rng(1)
    writer.submit(Record(target, rng.random((1, 10)), None, "warm", time.time(), "r", rows=1), rows=1)
    time.sleep(0.5)
    before = rss_kib()
    if case.startswith("numpy"):
        width = int(case.split("x")[1])
        for _ in range(rows // 100):
            data = rng.random((100, width))
            writer.submit(Record(target, data, None, str(uuid.uuid4()), time.time(), "r", rows=100),
                          rows=100, nbytes=data.nbytes)
    elif case == "lists":
        for i in range(rows):
            writer.submit(Record(target, [[i, 0.5, "a", None]], ("a", "b", "c", "d"), str(uuid.uuid4()), time.time(),
                                 "r", rows=1), rows=1, nbytes=256)
    else:
        headers = (("content-type", "application/json"),)
        for i in range(rows):  # as the middleware queues them: each request's own bodies and ids
            body = json.dumps({"data": [[i, 3.5, 1.4, 0.2]]}).encode()
            response = json.dumps({"predictions": [i % 3]}).encode()
            request_id = str(uuid.uuid4())
            writer.submit_capture((plan.id, body, headers, response, "application/json", "", request_id, request_id,
                                   time.time()))
    time.sleep(2)  # the batcher turns what it can into pending CSV; that is held too
    after = rss_kib()
    print(json.dumps({"per_1000_kib": (after - before) / (rows / 1000)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rows)
        return
    results = []
    for case in ("numpy x10", "numpy x100", "lists", "captures"):
        values = []
        for _ in range(args.repeat):
            output = subprocess.run([sys.executable, __file__, "--child", case.replace(" ", ""), "--rows",
                                     str(args.rows)], capture_output=True, text=True, check=True).stdout
            values.append(json.loads(output.strip().splitlines()[-1])["per_1000_kib"])
        results.append([case, args.rows, f"{median(values):,.0f}"])
        print(f"{case}: {median(values):,.0f} KiB per 1,000 queued rows", flush=True)
    print()
    print(table(["rows queued as", "rows", "RSS KiB per 1,000 rows (median)"], results))
    fixed = []
    bare_import = ("import json, mdc_middleware; from pathlib import Path; "
                   "print(json.dumps({'kib': next(int(line.split()[1]) for line in "
                   "Path('/proc/self/status').read_text().splitlines() if line.startswith('VmHWM:'))}))")
    for command, name in (([sys.executable, "-c", bare_import], "a process after `import mdc_middleware`"),
                          ([sys.executable, __file__, "--child", "helper"],
                           "the MDC_ENCODER=process helper, after 1,000 requests")):
        values = []
        for _ in range(args.repeat):  # (the first: not this script, whose helpers import the tests' pandas)
            output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
            values.append(json.loads(output.strip().splitlines()[-1])["kib"])
        fixed.append([name, f"{median(values) / 1024:.0f}"])
    print()
    print(table(["before any row is queued", "peak RSS MiB (median)"], fixed))


if __name__ == "__main__":
    main()
