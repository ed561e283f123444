"""The bounded hand-off between request threads and the writer's batcher.

``queue.Queue`` wakes the consumer on every put: the request thread then pays for a thread switch and
a GIL hand-off (about 10 µs here, and up to a switch interval of waiting under load) for every row it
collects. Like OpenTelemetry's BatchSpanProcessor, this queue wakes the batcher only when enough items
wait or a control item (flush, shutdown) arrives; otherwise the batcher looks every ``poll_interval``.
A put is a deque append: atomic under the GIL, no lock taken.

The batcher looks often while many items come (every 10 ms: a few hundred microseconds of work each time;
looking less often makes bursts of several milliseconds that request threads wait behind, which shows in
the p99 of benchmarks/bench_http.py). While few come it backs off, doubling up to ``idle_interval``, until a look
finds at least ``few`` of them: each look costs about 100 µs beyond its items (it starts on cold caches),
which at a few hundred requests a second would make the batcher's CPU per request several times what it
is under full load.

Once the queue has stayed empty for ``quiet_after`` seconds, the batcher stops looking and sleeps until an item
comes: the first put after that quiet spell wakes it (the doorbell), and it looks ``poll_interval`` later, as a
poll would have (by then the request that rang has been answered). An idle process then costs nothing, where
looking every 10 ms (the journal's interval) took about 1 % of a core here, each look a timer wake-up of the
thread; under load the doorbell is never rung, as the queue never stays empty that long.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any, Deque, List, Optional


class HandoffQueue:
    def __init__(self, maxsize: int, *, wake_at: int = 256, poll_interval: float = 0.01,
                 idle_interval: float = 0.2, few: int = 16, many: int = 64, quiet_after: float = 0.5) -> None:
        self.maxsize = maxsize
        self.wake_at = wake_at
        self.few = few    # a look that finds fewer items waits twice as long next time…
        self.many = many  # …one that finds more than this many looks again after poll_interval
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self._next_poll = poll_interval
        self.quiet_after = quiet_after  # …and one that has found nothing for this long sleeps until a put
        self._items: Deque[Any] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._doorbell = False  # the consumer sleeps until the next put, which wakes it
        self._empty_since: Optional[float] = None  # when the consumer found the queue empty, if it has been since

    def put_nowait(self, item: Any, urgent: bool = False) -> None:
        """Add an item or raise ``queue.Full``; wakes the consumer only when ``urgent``, when enough wait, or
        when it sleeps after a quiet spell."""
        if len(self._items) >= self.maxsize:
            raise queue.Full
        self._items.append(item)
        if self._waiting and (urgent or self._doorbell or len(self._items) >= self.wake_at):
            with self._cond:
                self._cond.notify()

    def put(self, item: Any, timeout: float) -> None:
        """An urgent item (a flush or stop marker): waits up to ``timeout`` for room."""
        deadline = time.monotonic() + timeout
        while len(self._items) >= self.maxsize:
            if time.monotonic() >= deadline:
                raise queue.Full
            time.sleep(0.01)
        self._items.append(item)
        with self._cond:
            self._cond.notify()

    def get(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._items.popleft()
                self._empty_since = None
                return item
            except IndexError:
                pass
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                raise queue.Empty
            if self._empty_since is None:
                self._empty_since = now
            quiet = now - self._empty_since >= self.quiet_after
            with self._cond:
                self._waiting = True
                self._doorbell = quiet
                if not self._items:  # checked after announcing the wait: a put now will notify
                    if quiet:
                        self._cond.wait(remaining)
                        if self._items:  # rung by a put: look a poll interval later, as a poll would have found
                            self._doorbell = False  # it, by when the request that rang has been answered
                            self._cond.wait(max(0.0, min(self.poll_interval, deadline - time.monotonic())))
                    else:
                        self._cond.wait(min(remaining, self._next_poll))
                    found = len(self._items)
                    if found > self.many:
                        self._next_poll = self.poll_interval
                    elif found < self.few:
                        self._next_poll = min(self._next_poll * 2, self.idle_interval)
                self._waiting = self._doorbell = False

    def pop_run(self, kind: type, limit: int, max_bytes: int) -> List[Any]:
        """Items from the front while their first element is exactly of type ``kind``, up to ``limit``
        items or ``max_bytes`` (their second element): a run of like items, taken in one go (one
        consumer only)."""
        run: List[Any] = []
        items = self._items
        size = 0
        while len(run) < limit and size < max_bytes and items and type(items[0][0]) is kind:
            entry = items.popleft()
            size += entry[1]
            run.append(entry)
        return run

    def get_nowait(self) -> Any:
        try:
            item = self._items.popleft()
        except IndexError:
            raise queue.Empty from None
        self._empty_since = None
        return item

    def qsize(self) -> int:
        return len(self._items)
