"""A server's metrics summed over its worker processes, so that a scrape of any one of them answers for all.

gunicorn ``-w 4`` and uvicorn ``--workers 4`` hand each scrape of ``MDC_METRICS_PATH`` to one worker:
its own counters alone, another worker's at the next scrape, which Prometheus reads as counter resets (2 workers,
200 requests: ``mdc_rows_captured`` read 208, 192, 208, 192, ...). So each worker publishes its metrics as a file
in a folder that the workers of one server share, and a scrape adds its siblings' to its own:

- The folder is ``<tempdir>/mdc-metrics-<uid>-<socket inode>``: the workers of a pre-fork server all hold the
  listening socket their master opened, and nothing else holds it. A server started again opens another socket,
  so its counters start from zero, as Prometheus expects of a restart. Without ``/proc`` (not Linux), a unix
  socket, or a socket of each worker's own (``SO_REUSEPORT``, as granian's workers bind), each worker answers for
  itself, as before.
- Each worker publishes every ``INTERVAL`` seconds from a thread of its own, off the request path (as is the
  finding of the socket and the folder, on a worker's first request), replacing its
  file atomically. Siblings' figures are up to ``INTERVAL`` seconds old; the scraped worker's are fresh.
- Counters are summed over every worker of the server's run, one that exited or was killed (gunicorn's
  ``--max-requests``, an OOM kill) with the counts it last published, so a sum does not go down while the server
  runs. Gauges (queue depth, pending rows, spool bytes) are summed over the workers that published lately.
- Files of workers gone for ``RETIRE_AFTER`` seconds are folded into ``retired.json`` under a lock, so a scrape
  reads a few files however many workers came and went.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import runtime
from .metrics import merge

logger = logging.getLogger("mdc_middleware")

INTERVAL = 2.0        # seconds between a worker's publications
LIVE_FOR = 3 * INTERVAL  # a file refreshed this recently is a live worker's: its gauges count
RETIRE_AFTER = 60.0   # a file this old is a gone worker's: folded into retired.json
RETIRED = "retired.json"
_GAUGES = ("queue_depth", "pending_rows", "spool_bytes", "write_seconds_mean", "write_seconds_max", "enabled")

Snapshot = Dict[str, object]


class WorkerMetrics:
    """This process's part of a server's metrics: publishes ``source()`` to ``folder`` and sums the siblings'."""

    def __init__(self, folder: Path, source: Callable[[], Snapshot], interval: float = INTERVAL) -> None:
        self.folder = folder
        self.source = source
        self.interval = interval
        self.pid = os.getpid()
        self.path = folder / f"{self.pid}-{secrets.token_hex(4)}.json"  # a pid used again gets a file of its own
        self._publishing = threading.Lock()  # the thread's publication and a scrape's share one temporary file
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.publish()
        threading.Thread(target=self._run, name="mdc-metrics", daemon=True).start()
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        """The last counts, after this process's writers have delivered what they held."""
        if os.getpid() != self.pid:  # a forked child inherited the hook, not the file
            return
        try:
            runtime.shutdown()  # what atexit does next anyway; done first so that its rows are counted
            self.publish()
        except Exception:
            logger.debug("mdc: could not publish this worker's last metrics", exc_info=True)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            if os.getpid() != self.pid:  # a forked child: it makes its own on its first request
                return
            try:
                self.publish()
            except Exception:
                logger.debug("mdc: could not publish this worker's metrics", exc_info=True)

    def publish(self) -> Snapshot:
        """Write this worker's metrics, taken now, to its file; returns them. Taken and written under one lock, so
        the file never goes back to older figures than it held (a sibling's scrape would count fewer)."""
        temporary = self.path.with_suffix(".tmp")
        with self._publishing:
            snapshot = self.source()
            temporary.write_text(json.dumps(snapshot))
            os.replace(temporary, self.path)
            return snapshot

    def combined(self) -> Snapshot:
        """This worker's metrics, fresh, with its siblings' added (see the module's docstring)."""
        try:
            own = self.publish()
        except OSError:
            logger.debug("mdc: could not publish this worker's metrics", exc_info=True)
            return self.source()
        try:
            self._retire()
            with open(self.folder / "retired.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH)  # no file is folded while they are read: none is counted twice
                live, gone = self._siblings()
                retired = _read(self.folder / RETIRED) or {}
        except OSError:
            logger.debug("mdc: could not read the other workers' metrics", exc_info=True)
            return own
        total = merge([own, *live, *[_counters(s) for s in gone], retired])
        total["enabled"] = max(int(s.get("enabled", 0) or 0) for s in [own, *live])  # type: ignore[call-overload]
        return total

    def _siblings(self) -> "tuple[List[Snapshot], List[Snapshot]]":
        """The other workers' last published metrics: of those live, of those gone."""
        now = time.time()
        live: List[Snapshot] = []
        gone: List[Snapshot] = []
        for path in self.folder.glob("*-*.json"):
            if path == self.path:
                continue
            snapshot = _read(path)
            if snapshot is not None:
                (live if now - _modified(path, now) <= LIVE_FOR else gone).append(snapshot)
        return live, gone

    def _retire(self) -> None:
        """Fold the files of workers gone for ``RETIRE_AFTER`` seconds into ``retired.json``."""
        now = time.time()
        old = [path for path in self.folder.glob("*-*.json") if now - _modified(path, now) > RETIRE_AFTER]
        if not old:
            return
        retired_path = self.folder / RETIRED
        with open(self.folder / "retired.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            retired = _read(retired_path) or {}
            for path in old:
                snapshot = _read(path)  # again, under the lock: another worker may have folded it already
                if snapshot is None:
                    continue
                retired = merge([retired, _counters(snapshot)])
                temporary = retired_path.with_suffix(".tmp")
                temporary.write_text(json.dumps(retired))
                os.replace(temporary, retired_path)
                path.unlink()


def _counters(snapshot: Snapshot) -> Snapshot:
    return {key: value for key, value in snapshot.items() if key not in _GAUGES}


def _read(path: Path) -> Optional[Snapshot]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # gone, or being replaced
        return None


def _modified(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # folded by another worker meanwhile
        return default


def listening_socket(port: int) -> Optional[str]:
    """The inode of a listening TCP socket on ``port`` that this process holds (inherited from the server's master,
    as every worker of a pre-fork server holds it), or None: no ``/proc``, or no such socket."""
    try:
        mine = set()
        for descriptor in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{descriptor}")
            except OSError:
                continue
            if target.startswith("socket:["):
                mine.add(target[len("socket:["):-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as lines:
                    next(lines, None)
                    for line in lines:
                        fields = line.split()
                        if (len(fields) > 9 and fields[3] == "0A" and fields[9] in mine
                                and int(fields[1].rsplit(":", 1)[1], 16) == port):
                            return fields[9]
            except FileNotFoundError:  # no IPv6 table
                continue
    except (OSError, ValueError):
        return None
    return None


_lock = threading.Lock()
_by_port: Dict[object, Optional[WorkerMetrics]] = {}  # this process's, by port; None while being made, or never


def sharing(port: object, source: Callable[[], Snapshot]) -> Optional[WorkerMetrics]:
    """This process's ``WorkerMetrics`` for the server listening on ``port`` (ASGI's int, WSGI's text), or None.

    Every request with ``MDC_METRICS_PATH`` set calls this: a dictionary look-up. The first call in a process
    hands the making (``/proc`` read, folder, first file) to a thread of its own, off the request path, and gets
    None, as do calls where no shared listening socket is found; a scrape that gets None answers for its own
    worker. Never raises."""
    try:
        return _by_port[port]
    except KeyError:
        pass
    with _lock:
        if port in _by_port:
            return _by_port[port]
        _by_port[port] = None
    threading.Thread(target=_make, args=(port, source), name="mdc-metrics-setup", daemon=True).start()
    return None


def _make(port: object, source: Callable[[], Snapshot]) -> None:
    try:
        number = int(port) if isinstance(port, (int, str)) else None  # type: ignore[arg-type]
        inode = listening_socket(number) if number else None
        if inode is not None:
            _by_port[port] = WorkerMetrics(Path(tempfile.gettempdir()) / f"mdc-metrics-{os.getuid()}-{inode}", source)
    except Exception:
        logger.warning("mdc: this worker's metrics cannot be shared with its siblings; a scrape answers for the "
                       "worker it reaches", exc_info=True)


def _after_fork() -> None:
    """A forked worker makes its own (gunicorn --preload), with a lock no thread of the parent's can hold."""
    global _lock
    _lock = threading.Lock()
    _by_port.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
