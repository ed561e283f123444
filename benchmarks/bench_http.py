"""Requests/s and latency of a scoring service with collection off and on, side by side in one run.

    sudo apt-get install wrk            # the load generator (Debian package)
    .venv/bin/python benchmarks/bench_http.py [--seconds 5] [--rounds 3] [--modes off,on-local,...]

FastAPI under uvicorn and Flask under gunicorn (one worker each, pinned to CPU 0; wrk runs in its own
process on CPU 1), a trivial endpoint and one with a small real model (scikit-learn logistic regression
on iris), one row per request. Modes:

    off                    no middleware
    passthrough            a middleware that only wraps the body streams and keeps references
    floor-discard          the least a capture's request path can do (floor_collector.py), captures thrown away
    floor                  the same, and a thread writing each row to CSV: the least collection can cost
    discard                mdc-middleware, captures thrown away at the queue: the request path alone
    on-local, on-azurite   mdc-middleware writing to a local folder / to Azurite (MDC_ENCODER=thread)
    on-local-journal       on-local with the write-ahead journal on (MDC_SPOOL_DIR set; on-azurite has it too)
    on-local-helper-core0  MDC_ENCODER=process, the helper left on the server's core
    on-local-helper,       MDC_ENCODER=process, the helper moved to the other core (where wrk runs)
    on-azurite-helper
    basehttp               a hand-written BaseHTTPMiddleware capture, for contrast (FastAPI only)

With ``--rate N`` wrk sends one request at a time, each 1/N s after the last answer: the latency a request
sees when it does not queue behind others, and the CPU per request at a light load. Read those, not
requests/s.

Each round runs every mode once, in turn; the table gives medians over rounds, each mode's ratio to
"off", and the CPU time of the server's whole process tree (workers and helpers) per request, split
into the processes' main threads (where uvicorn and gunicorn's sync workers serve requests), their other
threads (the writer's batcher and deliverer) and the encoder helpers. After each run the server is
stopped (it flushes) and the collected rows are counted against the requests served.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from common import ROOT, azurite, free_port, median, table  # noqa: E402

from mdc_middleware.analysis import read_collected

HERE = Path(__file__).resolve().parent
ROW = [5.1, 3.5, 1.4, 0.2]


CONNECTIONS = 8


def wrk_script(rows: int, rate: int = 0) -> str:
    """A POST of ``rows`` 4-feature rows; with ``rate``, wrk waits 1/rate s before each request (on its one
    connection: several paced connections fall into step and queue behind each other, which measures
    their alignment more than the server)."""
    body = json.dumps({"data": [ROW] * rows})
    pacing = f"function delay() return {max(1, round(1000 / rate))} end\n" if rate else ""
    return f"""wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
{pacing}"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
PEERS = ("peer-aml", "peer-jsonlog")  # collection without us, for comparison (http_apps.py says how)
FLOORS = ("floor-discard", "floor")  # the least a capture can cost (floor_collector.py)


def start(stack: str, mode: str, endpoint: str, storage: dict) -> tuple:
    port = free_port()
    env = dict(os.environ, BENCH_STACK=stack,
               BENCH_MODE=mode if mode in ("off", "basehttp", "passthrough", "discard", *FLOORS, *PEERS) else "on",
               BENCH_ENDPOINT=endpoint,
               PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}", **storage)
    if mode != "off" and mode not in PEERS:
        env["MDC_ENABLED"] = "true"
    if "-helper" in mode:
        env["MDC_ENCODER"] = "process"
    if stack == "fastapi":
        command = [sys.executable, "-m", "uvicorn", "http_apps:fastapi", "--host", "127.0.0.1", "--port", str(port),
                   "--no-access-log", "--log-level", "warning"]
    else:
        command = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                   "http_apps:flask"]
    process = subprocess.Popen(["taskset", "-c", "0", *command], cwd=HERE, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{stack} {mode} did not start")


def wrk(port: int, seconds: int, script: str, connections: int = CONNECTIONS) -> dict:
    output = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script,
                             f"http://127.0.0.1:{port}/score"], capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),
              "requests": int(re.search(r"(\d+) requests in", output)[1])}
    for label in ("50", "99"):
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", output).groups()
        result[f"p{label}"] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{errors[1]} failed requests:\n{output}")
    return result


def _descendants(pid: int) -> list:
    """pid and every process below it (gunicorn's workers, the encoder helpers)."""
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_split(pid: int) -> dict:
    """CPU seconds so far of the server's process tree: its processes' main threads (where uvicorn's
    event loop and gunicorn's sync workers serve requests), their other threads (our batcher and
    deliverer), and the encoder helpers."""
    split = {"main": 0.0, "threads": 0.0, "helper": 0.0}
    for each in _descendants(pid):
        try:
            helper = b"encoder_process" in Path(f"/proc/{each}/cmdline").read_bytes()
            for task in Path(f"/proc/{each}/task").iterdir():
                kind = "helper" if helper else "main" if task.name == str(each) else "threads"
                split[kind] += _cpu_seconds(task / "stat")
        except OSError:  # a process or thread that ended meanwhile
            continue
    return split


def free_helpers(pid: int) -> int:
    """Move the encoder helpers to the other core, the one wrk runs on (the server stays on CPU 0)."""
    moved = 0
    for each in _descendants(pid):
        try:
            if b"encoder_process" in Path(f"/proc/{each}/cmdline").read_bytes():
                os.sched_setaffinity(each, {1})
                moved += 1
        except OSError:
            continue
    return moved


def writes_rows(mode: str) -> bool:
    """Whether a mode's rows are counted in storage after its run (peer-aml's go to a stand-in that keeps none)."""
    return mode.startswith("on") or mode in ("basehttp", "floor", "peer-jsonlog")


def collected_requests(mode: str, storage: dict, server, rows_per_request: int) -> int:
    """Requests whose rows are in storage."""
    if mode.startswith("on-local"):
        return len(read_collected(storage["MDC_LOCAL_DIR"], "inputs")) // rows_per_request
    if mode.startswith("on-azurite"):
        from azure.storage.blob import ContainerClient

        client = ContainerClient.from_connection_string(server.connection_string, storage["MDC_CONTAINER"])
        return len(read_collected(client, "inputs")) // rows_per_request
    if mode == "basehttp":
        return len(read_collected(storage["MDC_LOCAL_DIR"], "inputs")) // rows_per_request
    if mode == "floor":
        with open(Path(storage["MDC_LOCAL_DIR"]) / "floor-inputs.csv", "rb") as lines:
            return sum(1 for _ in lines) // rows_per_request
    if mode == "peer-jsonlog":
        with open(storage["BENCH_LOG_FILE"], "rb") as lines:
            return sum(1 for _ in lines)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--rate", type=int, default=0,
                        help="one connection, a request every 1/RATE s (less the answer's time), instead of "
                             "as many as the server answers: the latency collection adds to one request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stacks", default="fastapi,flask")
    parser.add_argument("--endpoints", default="trivial,model")
    parser.add_argument("--modes", default="off,passthrough,on-local,on-azurite,on-local-helper-core0,"
                                           "on-local-helper,on-azurite-helper,basehttp")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("needs wrk and taskset: sudo apt-get install wrk util-linux")
    scratch = Path(tempfile.mkdtemp())
    script = scratch / "post.lua"
    script.write_text(wrk_script(args.rows, args.rate))
    connections = 1 if args.rate else CONNECTIONS
    sidecar_port = 0
    if "peer-aml" in args.modes:
        from bench_collect import start_sidecar

        try:
            import azureml.ai.monitoring  # noqa: F401
        except ImportError:
            raise SystemExit("peer-aml needs azureml-ai-monitoring: pip install 'mdc-middleware[bench]'")
        sidecar, sidecar_port = start_sidecar()
        atexit.register(sidecar.terminate)
    rows = []
    with azurite() as server:
        for stack in args.stacks.split(","):
            modes = [m for m in args.modes.split(",") if m != "basehttp" or stack == "fastapi"]
            for endpoint in args.endpoints.split(","):
                runs = {mode: [] for mode in modes}
                for round_ in range(args.rounds):
                    for mode in modes:
                        storage = {"MDC_LOCAL_DIR": str(scratch / uuid.uuid4().hex)}
                        if mode == "peer-aml":
                            storage = {"AZUREML_MDC_ENABLED": "true", "AZUREML_MDC_HOST": "127.0.0.1",
                                       "AZUREML_MDC_PORT": str(sidecar_port)}
                        elif mode == "peer-jsonlog":
                            storage = {"BENCH_LOG_FILE": str(scratch / f"{uuid.uuid4().hex}.jsonl")}
                        if mode == "on-local-journal":
                            storage["MDC_SPOOL_DIR"] = str(scratch / uuid.uuid4().hex)
                        if mode.startswith("on-azurite"):
                            storage = {"MDC_STORAGE_CONNECTION_STRING": server.connection_string,
                                       "MDC_CONTAINER": f"bench{uuid.uuid4().hex[:12]}",
                                       "MDC_SPOOL_DIR": str(scratch / uuid.uuid4().hex)}
                        process, port = start(stack, mode, endpoint, storage)
                        try:
                            warm = wrk(port, 3, str(script), connections)  # the helper, if any, is up after this
                            if mode.endswith("-helper") and not free_helpers(process.pid):
                                raise SystemExit(f"{stack} {mode}: no encoder helper found")
                            before = cpu_split(process.pid)
                            result = wrk(port, args.seconds, str(script), connections)
                            after = cpu_split(process.pid)
                            for kind in after:
                                result[f"{kind}_us"] = (after[kind] - before[kind]) / result["requests"] * 1e6
                            result["cpu_us"] = sum(result[f"{kind}_us"] for kind in after)
                        finally:
                            process.send_signal(signal.SIGTERM)
                            process.wait(timeout=60)
                        served = warm["requests"] + result["requests"]
                        result["collected"] = collected_requests(mode, storage, server, args.rows)
                        result["served"] = served
                        runs[mode].append(result)
                        print(f"{stack} {endpoint} {mode} round {round_ + 1}: {result['rps']:,.0f} req/s, "
                              f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                              f"server CPU {result['cpu_us']:.0f} µs/request (main threads "
                              f"{result['main_us']:.0f}, other threads {result['threads_us']:.0f}, "
                              f"helper {result['helper_us']:.0f}), "
                              f"collected {result['collected']}/{served if writes_rows(mode) else 0}", flush=True)
                base = median([r["rps"] for r in runs["off"]])
                for mode in modes:
                    rps = median([r["rps"] for r in runs[mode]])
                    # wrk does not count responses still in flight when it stops: up to 8 per run, 2 runs
                    complete = all(r["served"] <= r["collected"] <= r["served"] + 16 for r in runs[mode])
                    rows.append([stack, endpoint, mode, f"{rps:,.0f}", f"{rps / base:.3f}",
                                 f"{median([r['p50'] for r in runs[mode]]):.2f}",
                                 f"{median([r['p99'] for r in runs[mode]]):.2f}",
                                 f"{median([r['cpu_us'] for r in runs[mode]]):.0f}",
                                 " / ".join(f"{median([r[f'{kind}_us'] for r in runs[mode]]):.0f}"
                                            for kind in ("main", "threads", "helper")),
                                 ("all" if complete else "MISSING") if writes_rows(mode) else "—"])
    print()
    print(table(["stack", "endpoint", "mode", "req/s", "vs off", "p50 ms", "p99 ms", "CPU µs/req",
                 "of which main / other threads / helper", "rows collected"],
                rows))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
