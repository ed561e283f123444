"""Memory of a real server after hostile traffic, with the middleware and without it, side by side.

    .venv/bin/python benchmarks/bench_hostile_memory.py [--stacks h11,httptools,sync,gthread] [--paths 1000]

Each stack runs twice on loopback, the same app (``tests/apps/echo_app.py`` or ``echo_flask_app.py``, answering
every request with its body) with ``MDC_ENABLED=false`` and ``true``: the hostile corpus of ``tests/`` (each case
once), GETs to ``--paths`` distinct 60 KB paths, one 900 KB multipart body of 100,000 empty parts, a 54 KB path
against the glob route ``/v2/*/models/{model}/*/predict``, and 30 identical 960 KB NDJSON requests. Printed: the
worker's RSS once it is idle after the run (no CPU used for 2 s) and its peak (VmHWM), and the target: RSS with collection <= 1.5 x without + 20 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ROOT, table  # noqa: E402  (also puts the project on sys.path)

sys.path.insert(0, str(ROOT))
from tests.hostile_corpus import body_of, corpus  # noqa: E402

STACKS = {
    "h11": ["-m", "uvicorn", "tests.apps.echo_app:app", "--http", "h11", "--log-level", "warning"],
    "httptools": ["-m", "uvicorn", "tests.apps.echo_app:app", "--http", "httptools", "--log-level", "warning"],
    "sync": ["-m", "gunicorn", "-w", "1", "tests.apps.echo_flask_app:app"],
    "gthread": ["-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "4", "tests.apps.echo_flask_app:app"],
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb(pid: int) -> tuple:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, timeout: float = 120.0) -> None:
    """Until the process has used no CPU for 2 s (its writer has worked through what it was given)."""
    deadline = time.monotonic() + timeout
    last, still_since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now - last > 0.02:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= 2.0:
            return


def worker_pid(master: subprocess.Popen, stack: str) -> int:
    if stack in ("h11", "httptools"):
        return master.pid
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    return int(children[0])


def start(stack: str, enabled: bool, folder: str) -> tuple:
    port = free_port()
    command = [sys.executable, *STACKS[stack]]
    command += ["--port", str(port)] if stack in ("h11", "httptools") else ["-b", f"127.0.0.1:{port}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MDC_ENABLED=str(enabled).lower(), MDC_LOCAL_DIR=folder,
               MDC_SPOOL_DIR=os.path.join(folder, "spool"), MDC_MAX_BODY_BYTES=str(1 << 20))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{stack} did not start")


def hostile_traffic(base: str, paths: int) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        for case in corpus():
            headers = {**case.headers, **({"content-type": case.content_type} if case.content_type else {})}
            client.post(case.path if case.path != "/score" else "/echo", content=body_of(case), headers=headers)
        for i in range(paths):
            client.get(f"/query/{i}/" + "p" * 60_000)
        client.post("/echo", content=b"--b\r\n\r\n\r\n" * 100_000 + b"--b--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=b"})
        client.post("/v2/" + "models/x/" * 6000 + "q", content=b'{"data": [[1]]}',
                    headers={"content-type": "application/json"})
        ndjson = "".join(json.dumps({"id": i, "x": i * 0.5, "label": "abc"}) + "\n" for i in range(24_000)).encode()
        for _ in range(30):
            client.post("/echo", content=ndjson[:960_000].rsplit(b"\n", 1)[0] + b"\n",
                        headers={"content-type": "application/x-ndjson"})


def measure(stack: str, enabled: bool, paths: int) -> tuple:
    with tempfile.TemporaryDirectory() as folder:
        process, base = start(stack, enabled, folder)
        try:
            pid = worker_pid(process, stack)
            before = memory_mb(pid)[0]
            hostile_traffic(base, paths)
            wait_until_idle(pid)  # the writer done with the backlog: what is kept after the run
            after, peak = memory_mb(pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    return before, after, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--paths", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    for stack in args.stacks.split(","):
        off = measure(stack, False, args.paths)
        on = measure(stack, True, args.paths)
        bound = 1.5 * off[1] + 20
        rows.append([stack, f"{off[0]:.0f}", f"{off[1]:.0f}", f"{off[2]:.0f}", f"{on[0]:.0f}", f"{on[1]:.0f}",
                     f"{on[2]:.0f}", f"{bound:.0f}", "yes" if on[1] <= bound else "NO"])
    print(table(["stack", "off: start MB", "off: after", "off: peak", "on: start", "on: after", "on: peak",
                 "bound (1.5x off after + 20)", "within"], rows))


if __name__ == "__main__":
    main()
