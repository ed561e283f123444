"""What the middleware costs a request in-process, without a server or a load generator: the quiet view.

    .venv/bin/python benchmarks/bench_request_path.py [--requests 5000] [--rounds 5] [--stacks fastapi,flask] [--rows 1]

bench_http.py measures the real thing, but its figures move by ±5 % from run to run on this machine,
more than most changes to the request path are worth. Here the same apps (benchmarks/http_apps.py,
trivial endpoint) are called directly: the FastAPI app as ASGI with a stand-in server's receive and send,
the Flask app as WSGI with a fresh environ per request. Each (stack, mode) runs in a process of its own, in
turn, for several rounds; the table gives the least µs per request over the rounds (the run a busy
neighbour disturbed least) and its ratio to "off" (what requests/s would be if the server cost nothing).
Modes as in bench_http.py: off, passthrough (a middleware that only wraps the body streams), discard (our request path, captures thrown away at the queue), on-local
(collection to a local folder: the writer thread's parsing and CSV run in this process too), and the floor
(``floor_collector.py``: the least a capture into CSV can do in Python, without bounds, counters, request ids,
schemas or any of the safety), as ``floor-discard`` (its request path alone) and ``floor`` (with its writer).

Two clocks: wall time, and the CPU time of the whole process (every thread, ``time.process_time``), which a
busy neighbour on a shared machine disturbs less. For on-local the timed span ends when the writer has
written every row (``flush``), so its CPU column is the whole cost of collecting: request path, queue,
parsing, CSV and the file writes. "CPU beyond passthrough" divides each mode's extra CPU by the
passthrough's: the ratios #25 sets targets for.

``--interleaved --rounds 30 --requests 1000`` measures the request path alone (off, passthrough, floor-discard,
discard) with the four apps in one process, alternated, the quietest view of a change to it; copied into a checkout of
an older revision it compares the two in one sitting.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import table  # noqa: E402

HERE = Path(__file__).resolve().parent
BODY = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}).encode()  # --rows N: N rows
MODES = ("off", "passthrough", "floor-discard", "discard", "floor", "on-local")


def asgi_request(app):
    """A coroutine function that makes one scoring request of BODY to the ASGI ``app``, with a stand-in server's
    receive and send."""
    headers = [(b"host", b"bench"), (b"user-agent", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(BODY)).encode())]

    async def one() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/score", "raw_path": b"/score", "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": BODY, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message):
            pass

        await app(scope, receive, send)

    return one


def _asgi_runner(app):
    one = asgi_request(app)

    async def many(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await one()
        return time.perf_counter() - started

    return lambda n: asyncio.run(many(n))


def _wsgi_runner(app):
    def start_response(status, headers, exc_info=None):
        return lambda data: None

    def many(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/score", "SCRIPT_NAME": "", "QUERY_STRING": "",
                       "SERVER_NAME": "bench", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                       "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(BODY)), "HTTP_HOST": "bench",
                       "wsgi.input": io.BytesIO(BODY), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
                       "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False,
                       "wsgi.run_once": False, "wsgi.input_terminated": True}
            body = app(environ, start_response)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return time.perf_counter() - started

    return many


def _scratch_folder() -> str:
    """A folder for this process's collected rows, removed when it exits: after the writer's own flush at exit, as
    atexit runs its hooks last registered first and mdc_middleware is imported after this."""
    folder = tempfile.mkdtemp(prefix="mdc-bench-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def child(stack: str, mode: str, requests: int) -> None:
    """In a process of its own: build the app for (stack, mode), warm it up, print µs per request."""
    os.environ.update(BENCH_STACK=stack, BENCH_MODE="on" if mode == "on-local" else mode, BENCH_ENDPOINT="trivial",
                      MDC_ENABLED="true", MDC_LOCAL_DIR=_scratch_folder())
    sys.path.insert(0, str(HERE))
    import http_apps

    import mdc_middleware

    run = _asgi_runner(http_apps.fastapi) if stack == "fastapi" else _wsgi_runner(http_apps.flask.wsgi_app)
    def flush() -> None:  # the writer's share of the work is in the span (no-op without one)
        mdc_middleware.flush(30)
        if http_apps.FLOOR is not None:
            http_apps.FLOOR.flush()

    run(500)
    flush()
    walls, cpus = [], []
    for _ in range(3):
        cpu = time.process_time()
        walls.append(run(requests))
        flush()
        cpus.append(time.process_time() - cpu)
    mdc_middleware.shutdown(30)
    print(json.dumps({"us": min(walls) / requests * 1e6, "cpu_us": min(cpus) / requests * 1e6}))


def interleaved(stacks: list, rounds: int, requests: int) -> None:
    """off, passthrough, floor-discard and discard of each stack in this one process, alternated request batch by request
    batch, each mode's least over the rounds: a busy neighbour's slow spell then falls on every mode alike.
    (on-local cannot join them: discard replaces the writer's submit for the whole process.)"""
    os.environ.update(BENCH_ENDPOINT="trivial", MDC_ENABLED="true", MDC_LOCAL_DIR=_scratch_folder())
    sys.path.insert(0, str(HERE))
    import http_apps

    http_apps._discard_captures()
    rows = []
    for stack in stacks:
        runners = {}
        for mode in ("off", "passthrough", "floor-discard", "discard"):
            http_apps.MODE = mode
            runners[mode] = (_asgi_runner(http_apps.fastapi_app()) if stack == "fastapi"
                             else _wsgi_runner(http_apps.flask_app().wsgi_app))
            runners[mode](300)
        least = {mode: run(requests) for mode, run in runners.items()}
        for _ in range(rounds - 1):
            for mode, run in runners.items():
                least[mode] = min(least[mode], run(requests))
        off = least["off"] / requests * 1e6
        for mode, seconds in least.items():
            us = seconds / requests * 1e6
            rows.append([stack, mode, f"{us:.2f}", f"{us - off:+.2f}"])
    print(table(["stack", "mode", "µs/request (least of the rounds)", "µs beyond off"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stacks", default="fastapi,flask")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--interleaved", action="store_true",
                        help="off, passthrough and discard alternated in one process (the request path alone)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--child", nargs=2, metavar=("STACK", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global BODY
    BODY = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]] * args.rows}).encode()
    if args.interleaved:
        interleaved(args.stacks.split(","), args.rounds, args.requests)
        return
    if args.child:
        child(*args.child, args.requests)
        return
    stacks, modes = args.stacks.split(","), args.modes.split(",")
    results = {(stack, mode): [] for stack in stacks for mode in modes}
    cpu = {(stack, mode): [] for stack in stacks for mode in modes}
    for round_number in range(1, args.rounds + 1):
        for stack in stacks:
            for mode in modes:
                out = subprocess.run([sys.executable, __file__, "--child", stack, mode, "--requests",
                                      str(args.requests), "--rows", str(args.rows)], capture_output=True, text=True, check=True, timeout=300)
                measured = json.loads(out.stdout.strip().splitlines()[-1])
                results[(stack, mode)].append(measured["us"])
                cpu[(stack, mode)].append(measured["cpu_us"])
                print(f"{stack} {mode} round {round_number}: {measured['us']:.2f} µs/request, "
                      f"CPU {measured['cpu_us']:.2f} µs/request", flush=True)
    rows = []
    for stack in stacks:
        off = min(results[(stack, "off")]) if "off" in modes else None
        off_cpu = min(cpu[(stack, "off")]) if "off" in modes else None
        passthrough_extra = ((min(cpu[(stack, "passthrough")]) - off_cpu) if off_cpu and "passthrough" in modes
                             else None)
        for mode in modes:
            us, cpu_us = min(results[(stack, mode)]), min(cpu[(stack, mode)])
            extra = cpu_us - off_cpu if off_cpu else None
            rows.append([stack, mode, f"{us:.1f}", f"{off / us:.3f}" if off else "—",
                         f"{cpu_us:.1f}", f"{extra:+.1f}" if extra is not None else "—",
                         (f"{extra / passthrough_extra:.1f}×" if passthrough_extra and passthrough_extra > 0
                          and extra is not None else "—")])
    print()
    print(table(["stack", "mode", "wall µs/request", "vs off", "CPU µs/request", "CPU beyond off",
                 "CPU beyond off ÷ passthrough's"], rows))


if __name__ == "__main__":
    main()
