"""Exponential back-off between tries of something that keeps failing (storage, the encoder helper)."""
from __future__ import annotations

import time


class Backoff:
    """After the n-th failure in a row, wait ``first * 2 ** (n - 1)`` seconds (at most ``cap``) before the next
    try; a success starts over. Not thread-safe: one owner."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        self.next_try = 0.0

    def failed(self) -> float:
        """Count a failure; returns the wait before the next try."""
        self.failures += 1
        delay = min(self.cap, self.first * 2 ** min(self.failures - 1, 16))
        self.next_try = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_try = 0.0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def ready(self) -> bool:
        """No failure, or its wait is over."""
        return self.failures == 0 or time.monotonic() >= self.next_try

    def wait_left(self) -> float:
        return max(0.0, self.next_try - time.monotonic())
