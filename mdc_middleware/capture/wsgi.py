"""WSGI middleware for Flask and any PEP 3333 app, in the manner of werkzeug's middleware.

``wsgi.input`` is wrapped so the body the app reads is also kept (bounded); ``start_response`` and the
response iterable are wrapped so the prediction body is kept as it streams out. The capture is queued
when the server closes the response. Bytes, status and headers reach the client unchanged, except the
request-id header added when the app set none.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

from .. import prometheus, runtime, startup, worker_metrics
from ..payloads.captured_request import BoundedBody
from ..config import Settings
from .exchange import CAPTURED, Exchange, pass_nested_through
from .policy import CapturePolicy, RoutePlan
from .routes import RoutesSpec
from ..pipeline.writer import Writer

logger = logging.getLogger("mdc_middleware")

StartResponse = Callable[..., Callable[[bytes], Any]]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


class WSGIDataCollectionMiddleware:
    """WSGI middleware, for Flask: ``app.wsgi_app = WSGIDataCollectionMiddleware(app.wsgi_app, routes=...)``.
    The same contract as the ASGI ``DataCollectionMiddleware``.

    :param app: the WSGI app to wrap.
    :param routes, settings, writer, overrides: as for ``DataCollectionMiddleware``.
    :raises ConfigError: a setting or route is invalid, when the middleware is made (the app's import); the
        message names the variable or argument.
    """

    def __init__(self, app: WSGIApp, routes: RoutesSpec = None, *, settings: Optional[Settings] = None,
                 writer: Optional[Writer] = None, **overrides: Any) -> None:
        self.app = app
        self.settings = settings = Settings.resolve(settings, **overrides)
        self.policy = CapturePolicy(routes, settings, writer)
        startup.announce(settings, self.policy.route_names)
        self._wanted = tuple((environ_key(name), name) for name in sorted(self.policy.wanted_headers))

    def _metrics(self) -> dict:
        return runtime.metrics_of(self.policy.writer)

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if CAPTURED in environ:
            pass_nested_through()
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        if not path.isascii():  # PEP 3333 gives the path's UTF-8 bytes as latin-1 text
            path = path.encode("latin-1", "replace").decode("utf-8", "replace")
        mount = environ.get("SCRIPT_NAME", "")  # where the app is mounted; PATH_INFO is below it
        full_path = mount + path if mount else ""
        metrics_path = self.settings.metrics_path
        if metrics_path:
            shared = worker_metrics.sharing(environ.get("SERVER_PORT"), self._metrics)
            if metrics_path in (path, full_path) and environ.get("REQUEST_METHOD") == "GET":
                body, content_type = prometheus.render(shared.combined if shared is not None else self._metrics)
                start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
                return [body]
        try:
            plan = self.policy.select(environ.get("REQUEST_METHOD", ""), path, full_path)
            exchange = (_Exchange(self.policy, plan, environ, self._wanted, start_response)
                        if plan is not None else None)
            if exchange is not None:
                environ["wsgi.input"] = _TeeInput(environ.get("wsgi.input"), exchange)
        except Exception:
            logger.exception("mdc: could not start a capture; request passes through")
            exchange = None
        if exchange is None:
            return self.app(environ, start_response)
        environ[CAPTURED] = True
        token = runtime.current_request.set(runtime.request_context((exchange.correlation_id, exchange.request_id)))
        try:
            exchange.body = self.app(environ, exchange.start_response)
        finally:
            runtime.current_request.reset(token)
        if exchange.started and (exchange.response is None or exchange.response.skip_reason is not None):
            # Nothing to read from the body (a status not collected, or media): hand the app's iterable back
            # untouched, so a server still sees its wsgi.file_wrapper and sends the file with sendfile().
            exchange.finish()
            return exchange.body
        return exchange


def environ_key(header: str) -> str:
    """Where WSGI keeps a request header: HTTP_<NAME>, except the two CGI keeps without the prefix."""
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class _Exchange(Exchange):
    """The WSGI adapter of an exchange. It is also the ``start_response``, the ``write`` and the response
    iterable the server sees: one object a request instead of two closures and a wrapper (about 1 µs a request
    in-process)."""

    __slots__ = ("expected_length", "request_read", "started", "server_start_response", "server_write", "body")

    def __init__(self, policy: CapturePolicy, plan: RoutePlan, environ: dict, wanted: Tuple[Tuple[str, str], ...],
                 start_response: StartResponse) -> None:
        found = {}
        for key, name in wanted:
            value = environ.get(key)
            if value and isinstance(value, str):
                found[name] = value
        super().__init__(policy, plan, environ.get("REQUEST_METHOD", ""), environ.get("QUERY_STRING", ""), found)
        length = environ.get("CONTENT_LENGTH")
        try:
            self.expected_length: Optional[int] = int(length) if length else None
        except ValueError:
            self.expected_length = None
        self.request_read = 0
        self.request_complete = self.expected_length == 0
        self.started = False
        self.server_start_response = start_response
        self.server_write: Optional[Callable[[bytes], Any]] = None
        self.body: Iterable[bytes] = ()

    def on_request_bytes(self, data: bytes, asked: Optional[int]) -> None:
        try:
            self.request.feed(data)
            self.request_read += len(data)
            if (asked is None or asked < 0 or (not data and asked != 0)
                    or (self.expected_length is not None and self.request_read >= self.expected_length)):
                self.request_complete = True
        except Exception:
            self.internal_error()

    def start_response(self, status: str, headers: List[Tuple[str, str]], exc_info: Any = None
                       ) -> Callable[[bytes], Any]:
        """Stands in for the server's: notes status and type, may add the request-id header."""
        try:
            if not isinstance(headers, (list, tuple)):  # PEP 3333 says a list; a generator is read once, here
                headers = list(headers)
            headers = self._on_start(status, headers)
        except Exception:
            self.internal_error()
        self.server_write = self.server_start_response(status, headers, exc_info) if exc_info is not None \
            else self.server_start_response(status, headers)
        return self.write

    def write(self, data: bytes) -> Any:
        """The legacy ``write()`` callable a server gives ``start_response``'s caller, teed."""
        self.on_response_bytes(data)
        return self.server_write(data)  # type: ignore[misc]

    def _on_start(self, status: str, headers: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
        self.status = code = int(status.split(" ", 1)[0])
        echo = self.policy.echo_header_name  # None when off
        for key, value in headers:
            name = key.lower()
            if name == "content-type":
                self.response_type = value
            elif name == "content-encoding":
                self.response_encoding = value
            elif name == echo:
                echo = None  # the app set its own
        self.started = True
        self.response = (BoundedBody(self.plan.max_body_bytes, self.response_type)
                         if self.policy.wants_status(code) else None)
        if echo is not None:
            headers = [*headers, (echo, self.request_id)]
        return headers

    def on_response_bytes(self, data: bytes) -> None:
        try:
            if self.response is not None:
                self.response.feed(data)
        except Exception:
            self.internal_error()

    def __iter__(self) -> Iterator[bytes]:
        """The app's response body, teed as the server iterates it."""
        for chunk in self.body:
            self.on_response_bytes(chunk)  # a generator app calls start_response on its first chunk
            yield chunk

    def close(self) -> None:
        """Called by every server when the response is done: closes the app's iterable, queues the capture."""
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            if not self.started:
                self.writer.metrics.skip("response_incomplete")
            else:
                self.hand_over()
        except Exception:
            self.internal_error()


class _TeeInput:
    """``wsgi.input`` that also hands what the app reads to the exchange."""

    __slots__ = ("_stream", "_exchange")

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
