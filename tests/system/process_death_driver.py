"""Clients and a killer for tests/system/test_process_death.py, in a process of their own.

Acknowledgement times are taken by client threads: in the test runner's own process, threads left by earlier
tests competed for the GIL and stretched them, so the driver runs fresh, and writes what it saw as JSON:

    python -m tests.system.process_death_driver PORT MASTER_PID KILLS SEED OUT.json
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import httpx


def workers(master: int) -> list:
    """The server's live worker processes (children of the master, without multiprocessing's helpers)."""
    found = []
    for task in Path(f"/proc/{master}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if b"resource_tracker" not in command and state not in ("Z", "X"):  # not dead, waiting to be reaped
                found.append(int(child))
    return found


class Clients:
    """Threads sending one-row requests with unique ids; each acknowledged id is kept with when it was."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.acked: dict = {}
        self.pids: dict = {}  # row id → the worker that answered
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, thread: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as http:
            for n in range(10**6):
                if self._stop.is_set():
                    return
                row_id = thread * 10**6 + n
                try:
                    response = http.post("/score", json={"data": [[row_id, thread, 0.5]]})
                except httpx.HTTPError:
                    self.errors += 1
                    continue
                if response.status_code == 200:
                    self.acked[row_id] = time.monotonic()
                    self.pids[row_id] = int(response.headers.get("x-worker-pid", 0))
                time.sleep(0.002)

    def __enter__(self) -> "Clients":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def kill_at_random(port: int, master: int, kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    done: list = []
    killed: list = []
    with Clients(port) as clients:
        time.sleep(1.0)
        deadline = time.monotonic() + 120
        while len(done) < kills and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 1.0))
            alive = [pid for pid in workers(master) if pid not in killed]
            if len(alive) < 2:
                continue  # wait for the supervisor to replace the last one
            victim = rng.choice(alive)
            done.append(time.monotonic())
            killed.append(victim)
            os.kill(victim, signal.SIGKILL)
        time.sleep(1.0)
    return {"acked": clients.acked, "pids": clients.pids, "kills": done, "killed": killed, "errors": clients.errors}


if __name__ == "__main__":
    port, master, kills, seed, out = sys.argv[1:6]
    result = kill_at_random(int(port), int(master), int(kills), int(seed))
    Path(out).write_text(json.dumps(result))
