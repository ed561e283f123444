"""What the ASGI and the WSGI exchange share: the state of one request/response pair and its hand-off.

Each server interface has its own thin adapter (``asgi._Exchange``: ``receive``/``send``; ``wsgi._Exchange``:
``start_response``, ``write`` and the response iterable) that fills this state as the bytes pass. Once the
response has ended, ``hand_over`` puts the capture on the writer's queue, or counts why not; a fault of ours is
logged and counted by ``internal_error`` and never reaches the app.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional, Union

from ..payloads.captured_request import (BODY_NOT_READ, BoundedBody, inputs_in_query, new_correlation_id,
                                         pick_request_id)
from .. import startup
from .policy import CapturePolicy, RoutePlan

logger = logging.getLogger("mdc_middleware")

# Set in the ASGI scope or WSGI environ of a request an exchange captures: a second middleware of ours inside the
# first (added twice, or on a mounted app as well) passes the request through instead of collecting every row
# twice under two correlation ids.
CAPTURED = "mdc_middleware.captured"


def pass_nested_through() -> None:
    """Say once that a request already being collected reached another middleware of ours."""
    startup.warn_once("nested middleware",
                      "mdc: a request collected by one mdc-middleware middleware also reached another one inside it "
                      "(added twice, or to a mounted app as well); the inner one passes such requests through, so "
                      "each is collected once")


class Exchange:
    """One request/response pair: ids, bounded body buffers, and the response's type and status."""

    __slots__ = ("policy", "plan", "writer", "method", "query", "headers", "correlation_id", "request_id",
                 "timestamp", "request", "request_complete", "response", "response_type", "response_encoding",
                 "status", "done")

    def __init__(self, policy: CapturePolicy, plan: RoutePlan, method: str, query: Union[bytes, str],
                 headers: Dict[str, str]) -> None:
        """:param headers: the request headers the policy wants (``policy.wanted_headers``), names in lower case."""
        self.policy = policy
        self.plan = plan
        self.writer = writer = policy.writer
        writer.metrics.add("requests_seen")
        self.method = method
        self.query = query
        self.headers = headers
        self.correlation_id = correlation_id = new_correlation_id()
        self.request_id = pick_request_id(headers) or correlation_id
        self.timestamp = time.time()
        self.request = BoundedBody(plan.max_body_bytes, headers.get("content-type"))
        self.request_complete = False
        self.response: Optional[BoundedBody] = None
        self.response_type = ""
        self.response_encoding = ""
        self.status = 0
        self.done = False

    def hand_over(self) -> None:
        """The finished exchange to the writer's queue; a response not kept (its status) is counted instead."""
        if self.response is None:
            self.writer.metrics.skip(f"status_{self.status}")
            return
        request_body = self.request.take() if self.request_complete else BODY_NOT_READ
        headers = self.headers
        if self.query:  # a GET's inputs
            request_body, headers = inputs_in_query(request_body, self.method, self.query, headers)
        self.writer.submit_capture(
            (self.plan.id, request_body, headers, self.response.take(), self.response_type,
             self.response_encoding, self.correlation_id, self.request_id, self.timestamp))

    def internal_error(self) -> None:
        """A fault of ours: logged (repeats held back, see ``runtime.RepeatedTracebacks``) and counted."""
        logger.exception("mdc: capture failed; the request is unaffected")
        try:
            self.policy.writer.metrics.add("internal_errors")
        except Exception:
            pass

