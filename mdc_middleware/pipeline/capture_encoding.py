"""Where captured requests are parsed and encoded: one interface, two places.

``InThreadEncoder`` works on the batcher thread, a few captures at a time with pauses between (the GIL goes back
to request threads). ``HelperProcessEncoder`` (``MDC_ENCODER=process``) sends them to a helper process, off the
server's GIL, and encodes in-thread what the helper cannot take (it is starting, it failed, a plan it cannot
load). Captures of JSON Lines targets (``MDC_FORMAT=jsonl``) are always encoded in-thread.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, List, Optional, Protocol

from ..payloads.captured_request import Capture, RawCapture, body_bytes, plan_by_id
from .encoder import Encoded
from .plain_runs import encode_run
from .encoder_process import EncoderProcess
from .jsonl import encode_records_jsonl
from ..metrics import Metrics

logger = logging.getLogger("mdc_middleware")

# Captured requests encoded together between pauses: about 0.2 ms of work, whatever their size. Longer runs
# save no more time and hold the GIL long enough to raise the server's p99 (benchmarks/bench_http.py).
ENCODE_CHUNK = 16
ENCODE_CHUNK_BYTES = 8 << 10  # of bodies: 100-row requests go three at a time


class CaptureEncoder(Protocol):
    def encode(self, captures: List[RawCapture], deadline: Optional[float]) -> Iterator[Encoded]:
        """The captures' rows, encoded, in order; ``deadline`` bounds any wait for a helper."""

    def start(self) -> None:
        """Get ready ahead of the first captures (a helper takes a second to import)."""

    def close(self) -> None:
        ...

    def after_fork(self) -> None:
        ...


class InThreadEncoder:
    """Encodes on the calling thread, ``pause()`` between chunks."""

    def __init__(self, metrics: Metrics, neutralize_formulas: bool, pause: Callable[[], None]) -> None:
        self.metrics = metrics
        self.neutralize_formulas = neutralize_formulas
        self.pause = pause

    def encode(self, captures: List[RawCapture], deadline: Optional[float] = None) -> Iterator[Encoded]:
        for chunk in _chunks(captures):
            pairs = [(raw, plan_by_id(raw[0])) for raw in chunk]
            if any(plan.inputs_target.layout == "jsonl" for _, plan in pairs):
                for raw, plan in pairs:
                    if plan.inputs_target.layout == "jsonl":
                        records = Capture.from_raw(raw, plan).to_records(self.metrics)
                        yield from encode_records_jsonl(records, self.metrics)
                pairs = [(raw, plan) for raw, plan in pairs if plan.inputs_target.layout != "jsonl"]
            yield from encode_run([Capture.from_raw(raw, plan) for raw, plan in pairs], self.metrics,
                                  self.neutralize_formulas)
            self.pause()

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


class HelperProcessEncoder:
    """Encodes in a helper process when it is up; what it cannot take, in-thread."""

    def __init__(self, helper: EncoderProcess, fallback: InThreadEncoder) -> None:
        self.helper = helper
        self.fallback = fallback

    def encode(self, captures: List[RawCapture], deadline: Optional[float] = None) -> Iterator[Encoded]:
        local = captures
        if self.helper.available():
            csv, jsonl = [], []
            for raw in captures:
                (jsonl if plan_by_id(raw[0]).inputs_target.layout == "jsonl" else csv).append(raw)
            if csv:
                encoded, left = self.helper.encode(csv, self.fallback.neutralize_formulas, deadline)
                yield from encoded
                local = left + jsonl
        yield from self.fallback.encode(local, deadline)

    def start(self) -> None:
        try:
            self.helper.available()  # start the helper now
        except Exception:  # it is tried again with the first captures; the thread encodes meanwhile
            logger.exception("mdc: could not start the encoder process")

    def close(self) -> None:
        self.helper.close()

    def after_fork(self) -> None:
        self.helper.after_fork()


def _chunks(captures: List[RawCapture]) -> Iterator[List[RawCapture]]:
    """The captures in order, in runs of at most ENCODE_CHUNK or about ENCODE_CHUNK_BYTES of bodies."""
    chunk: List[RawCapture] = []
    size = 0
    for raw in captures:
        chunk.append(raw)
        size += body_bytes(raw)
        if len(chunk) >= ENCODE_CHUNK or size >= ENCODE_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
