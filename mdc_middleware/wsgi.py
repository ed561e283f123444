"""WSGI middleware for Flask and any PEP 3333 app, in the manner of werkzeug's middleware.

``wsgi.input`` is wrapped so the body the app reads is also kept (bounded); ``start_response`` and the
response iterable are wrapped so the prediction body is kept as it streams out. The capture is queued
when the server closes the response. Bytes, status and headers reach the client unchanged, except the
request-id header added when the app set none.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

from . import prometheus, runtime
from .capture import BoundedBody, RoutesSpec
from .config import Settings
from .policy import CapturePolicy, RoutePlan
from .writer import Writer

logger = logging.getLogger("mdc_middleware")

StartResponse = Callable[..., Callable[[bytes], Any]]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


class WSGIDataCollectionMiddleware:
    """``app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, routes=...)`` for Flask."""

    def __init__(self, app: WSGIApp, routes: RoutesSpec = None, *, settings: Optional[Settings] = None,
                 writer: Optional[Writer] = None, **overrides: Any) -> None:
        self.app = app
        self.settings = settings = Settings.resolve(settings, **overrides)
        self.policy = CapturePolicy(routes, settings, writer)
        self._wanted = tuple((environ_key(name), name) for name in sorted(self.policy.wanted_headers))

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if (self.settings.metrics_path and environ.get("PATH_INFO") == self.settings.metrics_path
                and environ.get("REQUEST_METHOD") == "GET"):
            body, content_type = prometheus.render(lambda: runtime.metrics_of(self.policy.writer))
            start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return [body]
        try:
            plan = self.policy.select(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))
            exchange = _Exchange(self.policy, plan, environ, self._wanted) if plan is not None else None
            if exchange is not None:
                environ["wsgi.input"] = _TeeInput(environ.get("wsgi.input"), exchange)
        except Exception:
            logger.exception("mdc: could not start a capture; request passes through")
            exchange = None
        if exchange is None:
            return self.app(environ, start_response)
        token = runtime.current_request.set(runtime.RequestContext(exchange.correlation_id, exchange.request_id))
        try:
            body = self.app(environ, exchange.wrap_start_response(start_response))
        finally:
            runtime.current_request.reset(token)
        if exchange.started and exchange.response is None:
            exchange.finish()  # nothing to read from the body: hand the app's iterable back untouched
            return body
        return _TeeIterable(body, exchange)


def environ_key(header: str) -> str:
    """Where WSGI keeps a request header: HTTP_<NAME>, except the two CGI keeps without the prefix."""
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class _Exchange:
    """One request/response pair: bounded body buffers, ids, and the hand-off to the queue."""

    def __init__(self, policy: CapturePolicy, plan: RoutePlan, environ: dict, wanted: Tuple[Tuple[str, str], ...]
                 ) -> None:
        self.policy = policy
        self.plan = plan
        self.writer = policy.writer
        found = {}
        for key, name in wanted:
            value = environ.get(key)
            if value and isinstance(value, str):
                found[name] = value
        self.headers = found
        self.correlation_id, self.request_id = policy.request_ids(found)
        self.timestamp = time.time()
        try:
            self.expected_length: Optional[int] = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            self.expected_length = None
        self.request = BoundedBody(plan.max_body_bytes, found.get("content-type"))
        self.request_read = 0
        self.request_complete = self.expected_length == 0
        self.response: Optional[BoundedBody] = None
        self.response_type = ""
        self.response_encoding = ""
        self.status = 0
        self.started = False
        self.done = False

    def on_request_bytes(self, data: bytes, asked: Optional[int]) -> None:
        try:
            self.request.feed(data)
            self.request_read += len(data)
            read_all = asked is None or asked < 0
            if read_all or (not data and asked != 0) or (self.expected_length is not None
                                                         and self.request_read >= self.expected_length):
                self.request_complete = True
        except Exception:
            self.internal_error()

    def wrap_start_response(self, start_response: StartResponse) -> StartResponse:
        def wrapped(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            try:
                headers = self._on_start(status, headers)
            except Exception:
                self.internal_error()
            write = start_response(status, headers, exc_info) if exc_info is not None \
                else start_response(status, headers)

            def tee_write(data: bytes) -> Any:
                self.on_response_bytes(data)
                return write(data)

            return tee_write

        return wrapped

    def _on_start(self, status: str, headers: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
        self.status = int(status.split(" ", 1)[0])
        names = set()
        for key, value in headers:
            name = key.lower()
            names.add(name)
            if name == "content-type":
                self.response_type = value
            elif name == "content-encoding":
                self.response_encoding = value
        self.started = True
        self.response = (BoundedBody(self.plan.max_body_bytes, self.response_type)
                         if self.policy.wants_status(self.status) else None)
        header = self.policy.settings.request_id_header
        if self.policy.settings.echo_request_id and header and header not in names:
            headers = list(headers) + [(header, self.request_id)]
        return headers

    def on_response_bytes(self, data: bytes) -> None:
        try:
            if self.response is not None:
                self.response.feed(data)
        except Exception:
            self.internal_error()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            if not self.started:
                self.writer.metrics.skip("response_incomplete")
            elif self.response is None:
                self.writer.metrics.skip(f"status_{self.status}")
            else:
                request_body = self.request.take() if self.request_complete else "body_not_read"
                response_body = self.response.take()
                self.writer.submit_capture(
                    (self.plan.id, request_body, tuple(self.headers.items()), response_body, self.response_type,
                     self.response_encoding, self.correlation_id, self.request_id, self.timestamp))
        except Exception:
            self.internal_error()

    def internal_error(self) -> None:
        logger.exception("mdc: capture failed; the request is unaffected")
        try:
            self.policy.writer.metrics.add("internal_errors")
        except Exception:
            pass


class _TeeInput:
    """``wsgi.input`` that also hands what the app reads to the exchange."""

    def __init__(self, stream: Any, exchange: _Exchange) -> None:
        self._stream = stream
        self._exchange = exchange

    def read(self, size: Optional[int] = -1) -> bytes:
        data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        self._exchange.on_request_bytes(data, size)
        return data

    def readinto(self, buffer: Any) -> Optional[int]:
        if not hasattr(self._stream, "readinto"):
            data = self._stream.read(len(buffer))
            buffer[:len(data)] = data
            count: Optional[int] = len(data)
        else:
            count = self._stream.readinto(buffer)
        if count is not None:
            self._exchange.on_request_bytes(bytes(memoryview(buffer)[:count]), len(buffer))
        return count

    def readline(self, size: Optional[int] = -1) -> bytes:
        data = self._stream.readline() if size is None or size < 0 else self._stream.readline(size)
        self._exchange.on_request_bytes(data, size)
        return data

    def readlines(self, hint: Optional[int] = -1) -> List[bytes]:
        lines = self._stream.readlines() if hint is None or hint < 0 else self._stream.readlines(hint)
        for line in lines:
            self._exchange.on_request_bytes(line, 0)
        self._exchange.on_request_bytes(b"", -1 if hint is None or hint < 0 else 0)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _TeeIterable:
    """The app's response iterable, teed; ``close()`` (called by every server) queues the capture."""

    def __init__(self, body: Iterable[bytes], exchange: _Exchange) -> None:
        self._body = body
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._exchange.on_response_bytes(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._exchange.finish()
