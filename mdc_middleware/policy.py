"""Per-app decisions shared by the ASGI and WSGI middleware: what to capture, and where it goes."""
from __future__ import annotations

import logging
import random
from typing import Dict, Optional, Tuple

from . import runtime
from .capture import (REQUEST_ID_HEADERS, Route, RoutesSpec, RouteTable, new_correlation_id, pick_request_id,
                      register_plan)
from .config import ConfigError, Settings
from .paths import Target
from .privacy import FieldRules
from .writer import Writer

logger = logging.getLogger("mdc_middleware")


class RoutePlan:
    """Everything about a captured route that is the same for each of its requests, worked out once.

    Each plan has a process-wide id: the request path queues the id, not the plan, and the encoder
    process is sent each plan once.
    """

    __slots__ = ("id", "route", "inputs_target", "predictions_target", "unparsed_target", "rules", "boundary",
                 "max_body_bytes", "unparsed_max_bytes", "collect_headers")

    def __init__(self, route: Route, targets: Tuple[Target, Target, Target], rules: FieldRules,
                 settings: Settings) -> None:
        self.route = route
        self.inputs_target, self.predictions_target, unparsed = targets
        self.unparsed_target = unparsed if settings.record_unparsed else None
        self.rules = rules
        self.boundary = settings.boundary
        self.max_body_bytes = settings.max_body_bytes
        self.unparsed_max_bytes = settings.unparsed_max_bytes
        self.collect_headers = settings.collect_headers
        self.id = register_plan(self)


_MAX_CACHED_PATHS = 4096  # paths seen, with their plan or None; paths with ids in them must not grow it forever


class CapturePolicy:
    def __init__(self, routes: RoutesSpec, settings: Settings, writer: Optional[Writer]) -> None:
        self.settings = settings
        self.routes = RouteTable(routes, settings.routes)
        self._writer = writer
        self._owns_writer = writer is None
        self._plans: Dict[Route, RoutePlan] = {}
        self._by_path: Dict[Tuple[str, str], Optional[RoutePlan]] = {}
        for route in self.routes.routes:  # validate every route's names at start-up, not per request
            self.plan(route)
        # The only request headers a capture reads: the rest are never decoded. ASGI servers give
        # names in lower case; the WSGI middleware looks up only their environ keys.
        self.wanted_headers = frozenset(("content-type", "content-encoding", *REQUEST_ID_HEADERS,
                                         *settings.collect_headers))
        self.wanted_header_bytes = frozenset(name.encode("latin-1") for name in self.wanted_headers)
        # The response header that carries the request id back, or None when it is not sent. In lower case:
        # both middlewares compare it with the app's own header names, lowered.
        header = settings.request_id_header.lower()
        self.echo_header_name = header if settings.echo_request_id and header else None  # WSGI
        self.echo_header = self.echo_header_name.encode("latin-1") if self.echo_header_name else None  # ASGI
        self._sample_rate = settings.sample_rate
        self.collect_all_statuses = settings.collect_status == "all"
        if settings.enabled and writer is None:
            self._writer = runtime.writer_for(settings)  # storage settings fail here, at start-up

    @property
    def writer(self) -> Writer:
        if self._writer is None or (self._owns_writer and self._writer.closed):
            self._writer = runtime.writer_for(self.settings)
        return self._writer

    def select(self, method: str, path: str, full_path: str = "") -> Optional[RoutePlan]:
        """The plan to capture this request with, or None to pass it straight through.

        ``path`` is the path as the app routes it, below where it is mounted (ASGI ``root_path``, WSGI
        ``SCRIPT_NAME``); ``full_path``, when the app is mounted, the path with that prefix, so routes
        declared either way match."""
        if not self.settings.enabled:
            return None
        plan = self._plan_for(method, path)
        if plan is None and full_path:
            plan = self._plan_for(method, full_path)
        if plan is None:
            return None
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            self.writer.metrics.skip("sampled_out")
            return None
        self.writer.metrics.add("requests_seen")
        return plan

    def _plan_for(self, method: str, path: str) -> Optional[RoutePlan]:
        key = (method, path)
        try:
            return self._by_path[key]
        except KeyError:
            route = self.routes.match(method, path)
            plan = self.plan(route) if route is not None else None
            if len(self._by_path) >= _MAX_CACHED_PATHS:
                self._by_path.clear()
            self._by_path[key] = plan
            return plan

    def plan(self, route: Route) -> RoutePlan:
        """A route's plan, made on first use (every configured route's at start-up, so bad names fail then)."""
        found = self._plans.get(route)
        if found is None:
            found = self._plans[route] = RoutePlan(route, self._targets(route),
                                                   self.settings.field_rules.merged(route.schema.rules), self.settings)
        return found

    def _targets(self, route: Route) -> Tuple[Target, Target, Target]:
        """Where a route's inputs, predictions and unparsed payloads go."""
        s = self.settings
        common = dict(subscription_id=s.subscription_id, resource_group=s.resource_group,
                      workspace_name=s.workspace_name, webservice_name=s.webservice_name,
                      model_name=route.schema.model_name or s.model_name,
                      model_version=route.schema.model_version or s.model_version)
        try:
            return tuple(Target(designation=d, **common) for d in ("inputs", "predictions", "unparsed"))
        except ValueError as exc:
            raise ConfigError(f"route {route.pattern!r}: {exc}") from None

    def request_ids(self, found: Dict[str, str]) -> Tuple[str, str]:
        """(correlation id, request id) of a request, from its wanted headers (lower-case name → value)."""
        correlation_id = new_correlation_id()
        return correlation_id, pick_request_id(found) or correlation_id

    def wants_status(self, status: int) -> bool:
        return self.collect_all_statuses or 200 <= status < 300
