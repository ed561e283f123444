"""Per-app decisions shared by the ASGI and WSGI middleware: what to capture, and where it goes."""
from __future__ import annotations

import logging
import time
from typing import Dict, Iterable, Optional, Tuple

from . import runtime
from .capture import (REQUEST_ID_HEADERS, Capture, Route, RoutesSpec, RouteTable, new_correlation_id,
                      pick_request_id, sampled)
from .config import ConfigError, Settings
from .paths import Target
from .privacy import MAX_HEADER_VALUE, FieldRules
from .writer import Writer

logger = logging.getLogger("mdc_middleware")


class CapturePolicy:
    def __init__(self, routes: RoutesSpec, settings: Settings, writer: Optional[Writer]) -> None:
        self.settings = settings
        self.routes = RouteTable(routes, settings.routes)
        self._writer = writer
        self._owns_writer = writer is None
        self._targets: Dict[Route, Tuple[Target, Target, Target]] = {}
        self._rules: Dict[Route, FieldRules] = {}
        for route in self.routes.routes:  # validate every route's names at start-up, not per request
            self.targets(route)
        self.header_name = settings.request_id_header.encode("latin-1")
        # The only request headers a capture reads: the rest are never decoded.
        self.wanted_headers = frozenset(("content-type", "content-encoding", *REQUEST_ID_HEADERS,
                                         *settings.collect_headers))
        if settings.enabled and writer is None:
            self._writer = runtime.writer_for(settings)  # storage settings fail here, at start-up

    @property
    def writer(self) -> Writer:
        if self._writer is None or (self._owns_writer and self._writer.closed):
            self._writer = runtime.writer_for(self.settings)
        return self._writer

    def select(self, method: str, path: str) -> Optional[Route]:
        """The route to capture for this request, or None to pass it straight through."""
        if not self.settings.enabled:
            return None
        route = self.routes.match(method, path)
        if route is None:
            return None
        if not sampled(self.settings.sample_rate):
            self.writer.metrics.skip("sampled_out")
            return None
        self.writer.metrics.add("requests_seen")
        return route

    def rules(self, route: Route) -> FieldRules:
        found = self._rules.get(route)
        if found is None:
            found = self._rules[route] = self.settings.field_rules.merged(route.schema.rules)
        return found

    def targets(self, route: Route) -> Tuple[Target, Target, Target]:
        """Where a route's inputs, predictions and unparsed payloads go."""
        found = self._targets.get(route)
        if found is None:
            s = self.settings
            common = dict(subscription_id=s.subscription_id, resource_group=s.resource_group,
                          workspace_name=s.workspace_name, webservice_name=s.webservice_name,
                          model_name=route.schema.model_name or s.model_name,
                          model_version=route.schema.model_version or s.model_version)
            try:
                found = tuple(Target(designation=d, **common) for d in ("inputs", "predictions", "unparsed"))
            except ValueError as exc:
                raise ConfigError(f"route {route.pattern!r}: {exc}") from None
            self._targets[route] = found
        return found

    def start(self, headers: Iterable[Tuple[str, str]]) -> runtime.RequestContext:
        headers = list(headers)
        request_id = pick_request_id(headers) or new_correlation_id()
        wanted = self.settings.collect_headers
        kept = tuple((name, value[:MAX_HEADER_VALUE]) for name, value in headers if name in wanted) if wanted else ()
        return runtime.RequestContext(new_correlation_id(), request_id, time.time(), kept)

    def wants_status(self, status: int) -> bool:
        return self.settings.collect_status == "all" or 200 <= status < 300

    def submit(self, route: Route, context: runtime.RequestContext, request_body, request_type: str,
               request_encoding: str, response_body, response_type: str, response_encoding: str) -> None:
        inputs, predictions, unparsed = self.targets(route)
        s = self.settings
        capture = Capture(route=route, inputs_target=inputs, predictions_target=predictions,
                          request_body=request_body, request_type=request_type, request_encoding=request_encoding,
                          response_body=response_body, response_type=response_type,
                          response_encoding=response_encoding, correlation_id=context.correlation_id,
                          request_id=context.request_id, timestamp=context.timestamp,
                          boundary=s.boundary, max_body_bytes=s.max_body_bytes, rules=self.rules(route),
                          headers=context.headers,
                          unparsed_target=unparsed if s.record_unparsed else None,
                          unparsed_max_bytes=s.unparsed_max_bytes)
        self.writer.submit(capture, nbytes=capture.approx_bytes)
