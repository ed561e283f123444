"""The least a capture into CSV can cost in Python: the ``floor`` mode of bench_http.py and bench_request_path.py.

What every body-capturing collector must do, and nothing else: match the route (one dict look-up), take a
correlation id (a per-process prefix and a counter) and the time, wrap the body streams and keep the chunks,
set a context variable for the length of the request (what ``collect()`` calls inside it read), and put one
tuple on a deque. A thread then takes the tuples every 10 ms, parses both bodies with orjson and appends one
CSV line per row (orjson's text of the row, the correlation id, the time) to two files.

Left out, against mdc-middleware: bounds on body size and queue bytes, media and compressed bodies, the
client's request id and its echo header, statuses, counters, every ``try`` that keeps a fault of ours out of
the app, schemas and column names, CSV quoting and formula neutralizing, day folders, journal, retries and
shutdown. So it is a floor, not a competitor: what is measured above it is what those cost.
"""
from __future__ import annotations

import collections
import contextvars
import itertools
import os
import threading
import time

import orjson

current = contextvars.ContextVar("floor_request", default=None)
_PREFIX = os.urandom(9).hex() + "-"


class FloorWriter:
    """One thread: every 10 ms, all queued captures → CSV lines → one append to each of two files."""

    def __init__(self, directory: str) -> None:
        self.queue: collections.deque = collections.deque()
        os.makedirs(directory, exist_ok=True)
        self.inputs = open(os.path.join(directory, "floor-inputs.csv"), "ab")
        self.predictions = open(os.path.join(directory, "floor-predictions.csv"), "ab")
        self._wake = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._run, name="floor-writer", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wake.wait(0.01)
            self._wake.clear()
            self._drain()
            self._done.set()

    def _drain(self) -> None:
        queue, inputs, predictions = self.queue, [], []
        while queue:
            request, response, correlation_id, timestamp = queue.popleft()
            suffix = b",%s,%.6f\n" % (correlation_id.encode(), timestamp)
            for row in orjson.loads(request)["data"]:
                inputs.append(orjson.dumps(row)[1:-1] + suffix)
            for value in orjson.loads(response)["predictions"]:
                predictions.append(orjson.dumps(value) + suffix)
        if inputs:
            self.inputs.write(b"".join(inputs))
            self.predictions.write(b"".join(predictions))
            self.inputs.flush()
            self.predictions.flush()

    def flush(self) -> None:
        """Return once everything queued before the call is written."""
        self._done.clear()
        self._wake.set()
        self._done.wait(30)
        while self.queue:
            time.sleep(0.001)
        self._done.clear()
        self._wake.set()
        self._done.wait(30)


class AsgiFloor:
    def __init__(self, app, routes, put) -> None:
        self.app = app
        self.routes = frozenset(("POST", path) for path in routes)
        self.put = put
        self.counter = itertools.count()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in self.routes:
            await self.app(scope, receive, send)
            return
        correlation_id = f"{_PREFIX}{next(self.counter):012x}"
        timestamp = time.time()
        request, response, put = [], [], self.put

        async def wrapped_receive():
            message = await receive()
            request.append(message.get("body", b""))
            return message

        async def wrapped_send(message):
            if message["type"] == "http.response.body":
                response.append(message.get("body", b""))
                if not message.get("more_body", False):
                    put((b"".join(request), b"".join(response), correlation_id, timestamp))
            await send(message)

        token = current.set(correlation_id)
        try:
            await self.app(scope, wrapped_receive, wrapped_send)
        finally:
            current.reset(token)


class WsgiFloor:
    def __init__(self, app, routes, put) -> None:
        self.app = app
        self.routes = frozenset(("POST", path) for path in routes)
        self.put = put
        self.counter = itertools.count()

    def __call__(self, environ, start_response):
        if (environ["REQUEST_METHOD"], environ["PATH_INFO"]) not in self.routes:
            return self.app(environ, start_response)
        correlation_id = f"{_PREFIX}{next(self.counter):012x}"
        request = []
        environ["wsgi.input"] = TeeInput(environ["wsgi.input"], request)
        token = current.set(correlation_id)
        try:
            body = self.app(environ, start_response)
        finally:
            current.reset(token)
        return _TeeBody(body, request, correlation_id, time.time(), self.put)


class TeeInput:
    """A WSGI input stream that keeps what the app reads (the passthrough mode uses it too)."""

    # A class made once: one made per request cost 4 µs of the floor.
    __slots__ = ("stream", "kept")

    def __init__(self, stream, kept):
        self.stream, self.kept = stream, kept

    def read(self, *args):
        data = self.stream.read(*args)
        self.kept.append(data)
        return data

    def __getattr__(self, name):
        return getattr(self.stream, name)


class _TeeBody:
    __slots__ = ("body", "request", "correlation_id", "timestamp", "put")

    def __init__(self, body, request, correlation_id, timestamp, put):
        self.body, self.request, self.correlation_id, self.timestamp, self.put = (
            body, request, correlation_id, timestamp, put)

    def __iter__(self):
        response = []
        for chunk in self.body:
            response.append(chunk)
            yield chunk
        self.put((b"".join(self.request), b"".join(response), self.correlation_id, self.timestamp))

    def close(self):
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
