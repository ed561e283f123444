"""``MDC_ENCODER=process``: captured requests are parsed and encoded in a helper process.

Why: on the batcher thread, parsing a captured JSON body, extracting its schema and writing CSV cost
about 11 µs of the server's GIL per one-row request, and the request threads then wait their turn for
it. A helper process (one per server process, started by the writer) does that work on another core;
the batcher only pickles the raw tuples and takes the CSV back, about 4 µs per request in a busy server.
It pays off only when a core is free for the helper (README, Benchmarks), so it is not the default.

The helper is stateless: it holds no rows. The batcher sends a batch of captures and waits for their
CSV text. When the helper dies, hangs, or cannot load a route's plan (a redaction function defined in
``__main__``, say), the batcher encodes that batch itself, so nothing is lost, and starts a new helper
after a backoff. Until the first helper is ready, the batcher encodes in-process too.

The protocol, pickled frames over a socket pair (``multiprocessing.connection``) that only the server
and the helper it started hold, so unpickling trusts no one else:

    helper → server  ("ready",) once
    server → helper  (new plans {plan id: pickled RoutePlan}, [capture tuple, ...], neutralize_formulas)
    helper → server  ([(plan id, target index, folder, header, CSV bytes, rows), ...], counts, skipped,
                      dropped, plan ids it could not load)
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from ..payloads.captured_request import Capture, RawCapture, plan_by_id
from .backoff import Backoff
from .encoder import Encoded
from .plain_runs import encode_run
from ..metrics import Metrics

if TYPE_CHECKING:
    from ..capture.policy import RoutePlan

logger = logging.getLogger("mdc_middleware")

_START_TIMEOUT = 60.0    # 0.1 s here; starting Python and numpy on a busy 2-core node can take seconds
_BATCH_TIMEOUT = 10.0    # a batch of a few thousand captures takes tens of milliseconds
_MAX_BACKOFF = 300.0
_NICENESS = 10


class EncoderProcess:
    """The server side of the helper: starts it, sends it batches, and says when it cannot be used."""

    def __init__(self, metrics: Metrics, batch_timeout: float = _BATCH_TIMEOUT,
                 start_timeout: float = _START_TIMEOUT, first_backoff: float = 5.0) -> None:
        self.metrics = metrics
        self.batch_timeout = batch_timeout
        self.start_timeout = start_timeout
        self._backoff = Backoff(first_backoff, _MAX_BACKOFF)  # between helpers that failed
        self._unpicklable: Set[int] = set()      # plans encoded in-process, e.g. for a lambda in their rules
        self._reset()

    @property
    def first_backoff(self) -> float:
        """Seconds before starting a helper again after the first failure (doubling after each)."""
        return self._backoff.first

    @first_backoff.setter
    def first_backoff(self, seconds: float) -> None:
        self._backoff.first = seconds

    def _reset(self) -> None:
        self._process: Optional[subprocess.Popen] = None
        self._conn: Optional[Connection] = None
        self._ready = False
        self._started = 0.0
        self._sent: Set[int] = set()            # plans the current helper has
        self._unloadable: Set[int] = set()      # plans the current helper could not load

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def available(self) -> bool:
        """True when a helper is ready for a batch; starts one when none runs and the backoff allows."""
        if self._process is None:
            if self._backoff.ready():
                self._start()
            return False
        if self._ready:
            return True
        assert self._conn is not None
        try:
            if self._conn.poll(0):
                self._ready = pickle.loads(self._conn.recv_bytes()) == ("ready",)
                if not self._ready:
                    raise ValueError("unexpected first message")
                self._backoff.succeeded()
                logger.debug("mdc: encoder process %d ready", self._process.pid)
            elif time.monotonic() - self._started > self.start_timeout or self._process.poll() is not None:
                raise TimeoutError("the helper did not start")
        except Exception as exc:
            self._fail(exc)
        return self._ready

    def encode(self, captures: List[RawCapture], neutralize_formulas: bool, deadline: Optional[float] = None
               ) -> Tuple[List[Encoded], List[RawCapture]]:
        """(what the helper encoded, the captures left for the caller to encode itself).

        The captures go as they are: plain tuples, pickled at C speed with no per-capture Python work.
        """
        plan_ids = {capture[0] for capture in captures}
        new_plans = {}
        for plan_id in plan_ids - self._sent:
            blob = self._pickled_plan(plan_id)
            if blob is not None:
                new_plans[plan_id] = blob
        local_ids = plan_ids & (self._unpicklable | self._unloadable)
        wire, local = captures, []
        if local_ids:
            wire = [c for c in captures if c[0] not in local_ids]
            local = [c for c in captures if c[0] in local_ids]
        if not wire:
            return [], local
        timeout = self.batch_timeout if deadline is None else max(0.1, min(self.batch_timeout,
                                                                            deadline - time.monotonic()))
        assert self._conn is not None
        try:
            self._conn.send_bytes(pickle.dumps((new_plans, wire, neutralize_formulas), pickle.HIGHEST_PROTOCOL))
            self._sent.update(new_plans)
            if not self._conn.poll(timeout):
                raise TimeoutError(f"no answer in {timeout:.1f} s")
            results, counts, skipped, dropped, unloadable = pickle.loads(self._conn.recv_bytes())
        except Exception as exc:
            self._fail(exc)
            return [], captures
        self.metrics.absorb(counts, skipped, dropped)
        encoded = []
        for plan_id, target_index, folder, header, payload, rows, text in results:
            plan = plan_by_id(plan_id)
            target = (plan.inputs_target, plan.predictions_target, plan.unparsed_target)[target_index]
            encoded.append(Encoded(target, folder, header, payload, rows, text))
        done = len(wire)
        if unloadable:
            self._unloadable.update(unloadable)
            refused = [c for c in wire if c[0] in self._unloadable]
            local.extend(refused)
            done -= len(refused)
        self.metrics.add("encoder_captures", done)
        return encoded, local

    def _pickled_plan(self, plan_id: int) -> Optional[bytes]:
        if plan_id in self._unpicklable:
            return None
        plan = plan_by_id(plan_id)
        try:
            return pickle.dumps(plan, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # e.g. a lambda as a redaction function
            logger.info("mdc: route %s is encoded in the server process: its plan does not pickle (%s)",
                        plan.route.pattern, type(exc).__name__)
            self._unpicklable.add(plan_id)
            return None

    def _start(self) -> None:
        ours, theirs = Pipe(duplex=True)
        env = dict(os.environ)
        # The app's modules (where its schemas and redaction functions live) importable in the helper.
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from mdc_middleware.pipeline.encoder_process import main; main()",
                 str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        except (OSError, ValueError) as exc:  # ValueError: no pass_fds on Windows; the thread encodes there
            ours.close()
            self._fail(exc)
            return
        finally:
            theirs.close()
        self._conn = ours
        self._started = time.monotonic()

    def _fail(self, exc: BaseException) -> None:
        self.metrics.add("encoder_failures")
        backoff = self._backoff.failed()
        logger.warning("mdc: the encoder process failed (%s: %s); encoding in the server process, next try in %.0f s",
                       type(exc).__name__, exc, backoff)
        self.close()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the helper: it exits when its end of the socket closes."""
        process, conn = self._process, self._conn
        self._reset()
        if conn is not None:
            conn.close()
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def after_fork(self) -> None:
        """In a forked child: the parent's helper is not ours. Drop our copy of its socket, keep it running."""
        if self._conn is not None:
            self._conn.close()
        self._reset()
        self._backoff.succeeded()


def _serve(conn: Connection) -> None:
    parent = os.getppid()
    plans: Dict[int, "RoutePlan"] = {}
    target_ids: Dict[int, Tuple[int, int]] = {}  # id of a plan's target → (plan id, which of its targets)
    unloadable: Set[int] = set()
    conn.send_bytes(pickle.dumps(("ready",)))
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent:  # the server is gone without closing: nobody to serve
                return
            continue
        message = conn.recv_bytes()
        new_plans, wire, neutralize_formulas = pickle.loads(message)
        for plan_id, blob in new_plans.items():
            try:
                plan = plans[plan_id] = pickle.loads(blob)
                for index, target in enumerate((plan.inputs_target, plan.predictions_target, plan.unparsed_target)):
                    if target is not None:
                        target_ids[id(target)] = (plan_id, index)
            except Exception:
                logger.exception("mdc: the encoder process cannot load plan %d; the server encodes it", plan_id)
                unloadable.add(plan_id)
        metrics = Metrics()
        not_loaded = set()
        captures = []
        for item in wire:
            plan = plans.get(item[0])
            if plan is None:
                not_loaded.add(item[0])
            else:
                captures.append(Capture.from_raw(item, plan))
        grouped: Dict[tuple, list] = {}
        for encoded in encode_run(captures, metrics, neutralize_formulas):
            plan_id, target_index = target_ids[id(encoded.target)]
            key = (plan_id, target_index, encoded.folder, encoded.header)
            group = grouped.get(key)
            if group is None:
                group = grouped[key] = [[], 0, frozenset()]
            group[0].append(encoded.payload)
            group[1] += encoded.rows
            group[2] = group[2] | encoded.text
        results = [(*key, b"".join(payloads), rows, text) for key, (payloads, rows, text) in grouped.items()]
        counts, skipped, dropped = metrics.totals()
        conn.send_bytes(pickle.dumps((results, counts, skipped, dropped, sorted(not_loaded | unloadable)),
                                     pickle.HIGHEST_PROTOCOL))


def main() -> None:
    # The server decides when this process ends (by closing the socket): a Ctrl-C or a SIGTERM sent to
    # the whole process group must not end it while the server still flushes through it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Background work: when the CPU is contended, the server's threads go first. The queue in the
    # server absorbs the delay, and the batcher encodes in-process if the helper stops answering.
    if hasattr(os, "nice"):
        try:
            os.nice(_NICENESS)
        except OSError:
            pass
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s mdc-encoder: %(message)s")
    try:
        _serve(Connection(int(sys.argv[1])))
    except (EOFError, OSError):  # the server went away (closed its end, or exited): nothing left to do
        pass


