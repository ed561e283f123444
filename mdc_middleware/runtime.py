"""Process-wide plumbing: one writer per destination, the current request, exit handling, and our log.

Every collector and middleware in a process that writes to the same place shares one queue and one
writer thread. At interpreter exit every writer is flushed within its deadline; after ``fork`` the
child starts its own thread lazily (gunicorn ``--preload`` works).
"""
from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from . import startup
from .config import Settings, check_writable_directory
from .metrics import Metrics, merge
from .storage.create import create_sink
from .pipeline.journal import Journal
from .pipeline.spool import Spool
from .pipeline.writer import Writer, _live_writers


class RequestContext(NamedTuple):
    """Set by the middleware for the length of a request, so explicit collect() calls inside it share
    its ids.

    Deliberately small: the server's timers and tasks copy the context and can keep it for seconds (a
    cancelled keep-alive timer stays in the event loop's heap), so it must not hold the request.
    """

    correlation_id: str
    request_id: str


current_request: "contextvars.ContextVar[Optional[RequestContext]]" = contextvars.ContextVar(
    "mdc_current_request", default=None)

# ``RequestContext((correlation_id, request_id))`` without the Python-level ``__new__`` a NamedTuple has: the
# middleware makes one for every captured request.
request_context: Callable[[Tuple[str, str]], RequestContext] = functools.partial(tuple.__new__, RequestContext)

class WriterRegistry:
    """The writers of this process, one per destination (``Settings.sink_key``), and those retired (an ASGI
    lifespan ended) whose counters still count. Thread-safe."""

    def __init__(self) -> None:
        self._writers: Dict[tuple, Writer] = {}
        self._deadlines: Dict[tuple, float] = {}
        self._retired: List[Writer] = []
        self._lock = threading.Lock()

    def writer_for(self, settings: Settings) -> Writer:
        """The shared writer for this destination, created on first use. Raises ConfigError (start-up) when its
        spool folder cannot be written or its storage settings are wrong."""
        key = settings.sink_key()
        writer = self._writers.get(key)
        if writer is not None:
            return writer
        with self._lock:
            writer = self._writers.get(key)
            if writer is None:
                writer = self._writers[key] = _new_writer(settings)
                self._deadlines[key] = settings.shutdown_deadline
            return writer

    def retire(self, writer: Writer, timeout: float) -> bool:
        """Shut one writer down so that the next use of its settings gets a new one; True when all landed."""
        with self._lock:
            for key, known in list(self._writers.items()):
                if known is writer:
                    del self._writers[key]
                    self._retired.append(writer)
        return writer.shutdown(timeout)

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Flush and stop every writer, each within its configured deadline unless ``timeout`` is given."""
        with self._lock:
            items = list(self._writers.items())
            self._writers.clear()
            self._retired.clear()
        return all([w.shutdown(timeout if timeout is not None else self._deadlines.get(k, 25.0)) for k, w in items])

    def all(self) -> List[Writer]:
        """Live and retired writers: those whose counters make the process's metrics."""
        return list(self._writers.values()) + self._retired


def _new_writer(settings: Settings) -> Writer:
    if settings.debug:
        enable_debug_logging()
    metrics = Metrics()
    spool_dir = settings.resolved_spool_dir
    if spool_dir:
        check_writable_directory(spool_dir, "MDC_SPOOL_DIR")
    spool = Spool(spool_dir, settings.spool_max_bytes, settings.spool_drop, metrics=metrics,
                  fsync=settings.spool_fsync) if spool_dir else None
    journal = Journal(spool, metrics, fsync=settings.spool_fsync) if spool is not None else None
    return Writer(create_sink(settings, metrics), spool=spool, metrics=metrics, batch_rows=settings.batch_rows,
                  batch_bytes=settings.batch_bytes, flush_interval=settings.flush_interval,
                  queue_size=settings.queue_size, queue_max_bytes=settings.queue_max_bytes,
                  retry_deadline=settings.retry_deadline, neutralize_formulas=settings.neutralize_formulas,
                  encoder=settings.encoder, journal=journal, file_per_writer=settings.file_per_writer)


registry = WriterRegistry()
writer_for = registry.writer_for
retire = registry.retire


class WriterHandle:
    """How a collector or a route policy reaches its writer: the one it was given, or the shared writer of its
    settings, fetched again once that was retired (an ASGI app's lifespan ended; a collector made at import
    outlives it when the app starts again)."""

    def __init__(self, settings: Settings, writer: Optional[Writer] = None) -> None:
        """:param writer: a writer of the caller's own (tests, benchmarks); else the shared one, created now
            when collection is on, so that bad storage settings fail at start-up."""
        self.settings = settings
        self._writer = writer
        self._shared = writer is None
        if settings.enabled and writer is None:
            self._writer = registry.writer_for(settings)

    @property
    def writer(self) -> Writer:
        if self._writer is None or (self._shared and self._writer.closed):
            self._writer = registry.writer_for(self.settings)
        return self._writer


class RepeatedTracebacks(logging.Filter):
    """A fault of ours that repeats on every request must not write a traceback per request into the app's
    log (thousands a second under load). The first of each kind (message and exception type) is logged
    whole, then at most one every ``interval`` seconds, saying how many were held back. Every one is still
    counted (``internal_errors``, ``dropped_reasons``)."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: Dict[tuple, List[float]] = {}  # kind → [when last logged, how many held back since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        kind = (record.msg, record.exc_info[0])
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is None:
                if len(self._last) >= 1000:
                    self._last.clear()
                self._last[kind] = [now, 0]
                return True
            if now - last[0] < self.interval:
                last[1] += 1
                return False
            held, since = int(last[1]), now - last[0]
            last[0], last[1] = now, 0
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {since:.0f} s were not logged)"
        return True


repeated_tracebacks = RepeatedTracebacks()
logging.getLogger("mdc_middleware").addFilter(repeated_tracebacks)


def enable_debug_logging() -> None:
    """MDC_DEBUG / AML_MODEL_DC_DEBUG: our log at DEBUG on stderr, as Azure's collector did.

    Only our own logger: the storage SDK's request logs are left to the app's logging setup.
    """
    logger = logging.getLogger("mdc_middleware")
    logger.setLevel(logging.DEBUG)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def flush(timeout: float = 30.0) -> bool:
    """Write everything collected so far by every writer of this process."""
    return all([w.force_flush(timeout) for w in list(_live_writers)])


def shutdown(timeout: Optional[float] = None) -> bool:
    """Flush and stop every shared writer; each gets its configured deadline unless ``timeout`` is given."""
    return registry.shutdown(timeout)


def metrics() -> Dict[str, object]:
    """Counters summed over the shared writers of this process (see Metrics.COUNTERS), with ``enabled`` (1 when
    something in this process collects) and ``config_errors`` (bad settings refused, collection off)."""
    return {**merge([w.snapshot() for w in registry.all()]), **startup.state}


def metrics_of(writer: Writer) -> Dict[str, object]:
    """The process-wide counters plus one explicitly given writer's, once each."""
    writers = registry.all()
    if writer not in writers:
        writers.append(writer)
    return {**merge([w.snapshot() for w in writers]), **startup.state}


atexit.register(shutdown)


def _flush_when_a_multiprocessing_child_ends(_registry: object = None) -> None:
    """In a worker process that ``multiprocessing`` forked (granian's workers), flush when its target returns.

    With the ``fork`` and ``forkserver`` start methods (Python 3.14's default on Linux) such a process ends with
    ``os._exit`` once its target returns, so atexit never runs there: granian's WSGI workers take SIGTERM with a
    handler of their own, return, and every row still queued was lost. The process's own exit hooks
    (``multiprocessing.util.Finalize``) do run. Called at import (the app is loaded in the worker) and by
    ``multiprocessing`` in each worker it starts, after it has cleared the hooks the worker inherited (imported
    before: in its parent, or while its target was unpickled). A ``spawn`` worker ends with ``sys.exit``, where
    atexit runs as well and finds nothing left to flush.
    """
    if multiprocessing.parent_process() is not None:
        multiprocessing.util.Finalize(None, shutdown, exitpriority=100)


_flush_when_a_multiprocessing_child_ends()
multiprocessing.util.register_after_fork(registry, _flush_when_a_multiprocessing_child_ends)


def _flush_on_sigterm() -> None:
    """Flush before a SIGTERM ends the process, where nothing else in the process handles SIGTERM.

    atexit does not run when a process dies of a signal, and servers do die of one: uvicorn stops
    cleanly, restores the SIGTERM handler it found at start-up and raises SIGTERM again. Installed at
    import, before any server starts, this handler is the one found and restored, so rows collected
    outside the middleware (``ModelDataCollector`` in score.py or a route) still reach storage. It
    flushes within each writer's deadline, then lets SIGTERM end the process as it would have.
    Off with ``MDC_SIGTERM_FLUSH=false``; never installed over another handler or off the main thread.
    """
    if os.environ.get("MDC_SIGTERM_FLUSH", "true").strip().lower() in ("0", "false", "no", "off"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is not signal.SIG_DFL:
        _flush_when_uvicorn_stops(current)
        return

    def on_sigterm(signum: int, frame: object) -> None:
        try:
            shutdown()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _flush_when_uvicorn_stops(handler: object) -> None:
    """Imported while a uvicorn server already holds SIGTERM: its ``--workers`` processes and
    ``Server(config).run()`` load the app after taking the signal. At the end uvicorn gives SIGTERM back to
    the default and raises it again, so neither atexit nor a handler of ours would run, and the rows still
    queued were lost. Flush in the server's own shutdown instead: after its lifespan shutdown, before that."""
    server = getattr(handler, "__self__", None)
    original = getattr(server, "shutdown", None)
    if (server is None or not type(server).__module__.startswith("uvicorn.")
            or not asyncio.iscoroutinefunction(original) or getattr(server, "_mdc_flushes", False)):
        return

    async def shutdown_then_flush(*args: object, **kwargs: object) -> None:
        try:
            await original(*args, **kwargs)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, shutdown)

    server.shutdown = shutdown_then_flush
    server._mdc_flushes = True


_flush_on_sigterm()
