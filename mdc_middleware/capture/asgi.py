"""Pure ASGI middleware for Starlette and FastAPI (no BaseHTTPMiddleware: streaming stays streaming).

Shaped like starlette's GZipMiddleware: the middleware decides per request whether to act and hands
over to a small per-request ``_Exchange`` that wraps ``receive`` and ``send``. Messages are passed on
unchanged; the only change to a response is the request-id header, added when the app set none and
``echo_request_id`` is on. Any error of ours is counted and logged, never raised into the app.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, MutableMapping, Optional

from .. import prometheus, runtime, startup, worker_metrics
from ..payloads.captured_request import BoundedBody
from ..config import ConfigError, Settings
from .exchange import CAPTURED, Exchange, pass_nested_through
from .policy import CapturePolicy, RoutePlan
from .routes import RoutesSpec
from ..pipeline.writer import Writer

logger = logging.getLogger("mdc_middleware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# ASGI extensions with which the server sends the body from a file (Starlette's FileResponse uses the first
# where the server offers it). The body never passes through us; the request's inputs are still collected.
_FILE_SENDS = ("http.response.pathsend", "http.response.zerocopysend")


def _inside_a_running_server() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _route_path(path: str, root_path: Optional[str]) -> str:
    """The path as the app routes it. Servers (uvicorn ``--root-path``) and Starlette's ``Mount`` give the
    whole path, with the ``root_path`` the app is mounted at in front; routes are declared below it."""
    if root_path and path.startswith(root_path):
        rest = path[len(root_path):]
        if not rest or rest[0] == "/":
            return rest or "/"
    return path


class DataCollectionMiddleware:
    """ASGI middleware: collects request features (``inputs``) and response predictions (``predictions``) of
    routes, never changing the response (beyond the optional request-id header) and never raising into the app.

    :param app: the ASGI app to wrap (Starlette passes it).
    :param routes: what to capture: a list of paths or globs (``"/score"``, ``"POST /v2/*"``), a mapping of
        path → ``Schema``, or ``Route`` objects; ``None`` captures every POST (or ``MDC_ROUTES``).
    :param settings: the settings to use; by default ``Settings.from_env()`` (the ``MDC_*`` variables).
    :param writer: a writer to share (tests, several apps in one process); by default the process's writer
        for these settings, started on first use.
    :param overrides: ``Settings`` fields by name (``batch_rows=500``), over ``settings``.
    :raises ConfigError: a setting or route is invalid; the message names the variable or argument.
        Inside a running server (Starlette builds middleware on the first event) the error instead fails the
        ASGI lifespan start-up, and requests pass through untouched.
    """

    def __init__(self, app: ASGIApp, /, routes: RoutesSpec = None, *, settings: Optional[Settings] = None,
                 writer: Optional[Writer] = None, **overrides: Any) -> None:
        # ``app`` positional-only, as Starlette passes it: with ``**overrides`` beside it, type checkers
        # otherwise refuse ``app.add_middleware(DataCollectionMiddleware, ...)``.
        self.app = app
        self.config_error: Optional[ConfigError] = None
        try:
            self.settings = settings = Settings.resolve(settings, **overrides)
            self.policy = CapturePolicy(routes, settings, writer)
        except ConfigError as exc:
            if not _inside_a_running_server():
                raise  # built by the app's own code at import: start-up fails here, naming the setting
            # Starlette builds its middleware when the server sends the first event: raising here made every
            # request a 500 (and uvicorn's --lifespan auto took it for an app without lifespan support).
            self.config_error = exc
            startup.refuse(exc, "Start-up fails where the server runs the ASGI lifespan (uvicorn --lifespan auto "
                                "or on); without it, requests pass through untouched.")
            return
        startup.announce(settings, self.policy.route_names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.config_error is not None:
            if scope["type"] == "lifespan":  # the server stops before the app starts: nothing to clean up
                if (await receive())["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.failed", "message": f"mdc-middleware: {self.config_error}"})
                return
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.settings.enabled:
                send = self._flush_on_shutdown(send)
            await self.app(scope, receive, send)
            return
        if CAPTURED in scope:
            pass_nested_through()
            await self.app(scope, receive, send)
            return
        full_path = scope["path"]
        root_path = scope.get("root_path")
        path = _route_path(full_path, root_path) if root_path else full_path
        metrics_path = self.settings.metrics_path
        if metrics_path:
            server = scope.get("server")
            shared = worker_metrics.sharing(server[1] if server else None, self._metrics)
            if metrics_path in (path, full_path) and scope["method"] == "GET":
                await self._serve_metrics(send, shared.combined if shared is not None else self._metrics)
                return
        try:
            plan = self.policy.select(scope["method"], path, full_path if path is not full_path else "")
            exchange = _Exchange(self.policy, plan, scope, receive, send) if plan is not None else None
        except Exception:
            logger.exception("mdc: could not start a capture; request passes through")
            exchange = None
        if exchange is None:
            await self.app(scope, receive, send)
            return
        scope[CAPTURED] = True
        token = runtime.current_request.set(runtime.request_context((exchange.correlation_id, exchange.request_id)))
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            runtime.current_request.reset(token)
            if not exchange.done:
                exchange.writer.metrics.skip("response_incomplete")

    def _metrics(self) -> dict:
        return runtime.metrics_of(self.policy.writer)

    async def _serve_metrics(self, send: Send, source: Callable[[], dict]) -> None:
        # Off the event loop: the spool's size, and the other workers' metrics, are read from disk.
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(None, prometheus.render, source)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _flush_on_shutdown(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                # After the app's own shutdown handlers, which may still collect. One deadline for
                # everything: the atexit handler then finds this writer already stopped.
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, runtime.retire, self.policy.writer, self.settings.shutdown_deadline)
            await send(message)

        return lifespan_send


class _Exchange(Exchange):
    """The ASGI adapter of an exchange: its ``receive`` and ``send`` stand in for the server's, and fill the
    shared state as messages pass. Everything about the request that the request path does not need is worked
    out later, off it."""

    __slots__ = ("inner_receive", "inner_send")

    def __init__(self, policy: CapturePolicy, plan: RoutePlan, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = policy.wanted_header_bytes
        found = {}
        for key, value in scope["headers"]:  # ASGI gives header names in lower case
            if key in wanted:
                found[key.decode("latin-1")] = value.decode("latin-1")
        super().__init__(policy, plan, scope["method"], scope.get("query_string", b""), found)
        self.inner_receive = receive
        self.inner_send = send

    async def receive(self) -> Message:
        message = await self.inner_receive()
        try:
            if message["type"] == "http.request":
                self.request.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    self.request_complete = True
        except Exception:
            self.internal_error()
        return message

    async def send(self, message: Message) -> None:
        try:
            kind = message["type"]
            if kind == "http.response.body":
                if not self.done:
                    if self.response is not None:
                        self.response.feed(message.get("body", b""))
                    if not message.get("more_body", False):
                        self._finish()
            elif kind in _FILE_SENDS:
                if not self.done and not message.get("more_body", False):
                    if self.response is not None:
                        self.response.skip("body_sent_as_file")  # the server reads the file: we never see it
                    self._finish()
            elif kind == "http.response.start":
                headers = message.get("headers")
                if headers is not None and not isinstance(headers, (list, tuple)):
                    # A one-shot iterable (ASGI allows any iterable): read once here, passed on as a list.
                    message = {**message, "headers": list(headers)}
                message = self._on_start(message)
        except Exception:
            self.internal_error()
        await self.inner_send(message)

    def _on_start(self, message: Message) -> Message:
        status = message["status"]
        self.status = status = status if type(status) is int else int(status)
        headers = message.get("headers") or ()
        echo = self.policy.echo_header  # None when off
        for key, value in headers:
            name = key.lower()
            if name == b"content-type":
                self.response_type = value.decode("latin-1")
            elif name == b"content-encoding":
                self.response_encoding = value.decode("latin-1")
            elif name == echo:
                echo = None  # the app set its own
        if self.policy.wants_status(status):
            self.response = BoundedBody(self.plan.max_body_bytes, self.response_type)
        if echo is not None:
            message = {**message, "headers": [*headers, (echo, self.request_id.encode("latin-1"))]}
        return message

    def _finish(self) -> None:
        self.done = True
        self.hand_over()
