"""The web request a ``collect()`` call is made in, found without the middleware.

Azure ML's own scoring server (``azmlinfsrv``, a Flask app the user cannot wrap), a plain Flask app and a
FastAPI route call ``collect()`` for inputs and again for predictions. Every call made while one request is
served gets the same ``RequestContext``: one correlation id, and the request id the server saw. It is kept in
the request's own WSGI environ or ASGI scope, so it lives exactly as long as the request.

Where the request is found, first match wins:

1. Flask's request context (``flask.has_request_context()``), as Azure's collector looked: the request id is
   ``flask.g.request_id`` (azmlinfsrv sets it from ``x-request-id`` or makes one, and returns it in the
   response's ``x-request-id``), else the environ's ``REQUEST_ID`` (Azure's older server), else the
   ``x-ms-request-id`` or ``x-request-id`` header.
2. A caller's frame holding the ASGI ``scope`` or WSGI ``environ`` (an ``async def`` route under Starlette or
   FastAPI, any WSGI app), or a Starlette/werkzeug ``request`` object (a sync FastAPI route that takes
   ``request: Request``; FastAPI runs it on a worker thread, where no server frame is on the stack).

A sync FastAPI route that does not take the request cannot be tied to it this way: each ``collect()`` there
makes its own correlation id. The middleware (``DataCollectionMiddleware``) ties those too.
"""
from __future__ import annotations

import sys
from types import FrameType
from typing import Any, Mapping, Optional

from .payloads.captured_request import REQUEST_ID_HEADERS, new_correlation_id, pick_request_id
from .runtime import RequestContext

_KEY = "mdc.request_context"
_MAX_FRAMES = 40
_WSGI_HEADERS = tuple("HTTP_" + name.upper().replace("-", "_") for name in REQUEST_ID_HEADERS)
_ASGI_HEADERS = tuple(name.encode("latin-1") for name in REQUEST_ID_HEADERS)


def served_request_context() -> Optional[RequestContext]:
    """The context of the request being served on this thread or task, made at its first ``collect()``;
    None outside any request. Never raises."""
    try:
        flask = sys.modules.get("flask")
        if flask is not None and flask.has_request_context():
            return _in_environ(flask.request.environ, _flask_request_id(flask))
        return _from_frames(sys._getframe(2))
    except Exception:  # finding the request is a nicety: collection goes on without it
        return None


def _flask_request_id(flask: Any) -> str:
    request_id = getattr(flask.g, "request_id", None)
    return request_id if isinstance(request_id, str) else ""


def _in_environ(environ: dict, request_id: str = "") -> RequestContext:
    context = environ.get(_KEY)
    if context is None:
        correlation_id = new_correlation_id()
        headers = {name: environ.get(key, "") for name, key in zip(REQUEST_ID_HEADERS, _WSGI_HEADERS)}
        request_id = request_id or environ.get("REQUEST_ID") or pick_request_id(headers) or correlation_id
        context = environ[_KEY] = RequestContext(correlation_id, str(request_id))
    return context


def _in_scope(scope: dict) -> RequestContext:
    context = scope.get(_KEY)
    if context is None:
        correlation_id = new_correlation_id()
        headers = {k.lower().decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()
                   if k.lower() in _ASGI_HEADERS}
        context = scope[_KEY] = RequestContext(correlation_id, pick_request_id(headers) or correlation_id)
    return context


def _is_scope(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "http" and "headers" in value


def _is_environ(value: Any) -> bool:
    return isinstance(value, dict) and "wsgi.version" in value


def _from_frames(frame: Optional[FrameType]) -> Optional[RequestContext]:
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        names = frame.f_code.co_varnames
        if "scope" in names or "environ" in names or "request" in names:
            found = _request_in(frame.f_locals)
            if found is not None:
                return found
        frame = frame.f_back
    return None


def _request_in(local: Mapping[str, Any]) -> Optional[RequestContext]:
    scope = local.get("scope")
    if _is_scope(scope):
        return _in_scope(scope)
    environ = local.get("environ")
    if _is_environ(environ):
        return _in_environ(environ)
    request = local.get("request")
    if request is not None:
        scope = getattr(request, "scope", None)
        if _is_scope(scope):
            return _in_scope(scope)
        environ = getattr(request, "environ", None)
        if _is_environ(environ):
            return _in_environ(environ)
    return None
