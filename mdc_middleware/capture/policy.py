"""Per-app decisions shared by the ASGI and WSGI middleware: what to capture, and where it goes."""
from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any, Dict, Optional, Tuple, Union

from .. import runtime, startup
from ..payloads.captured_request import REQUEST_ID_HEADERS, register_plan
from ..config import ConfigError, Settings
from ..storage.paths import Target
from ..payloads.privacy import FieldRules
from .routes import Route, RoutesSpec, RouteTable, model_in_path
from ..pipeline.writer import Writer

logger = logging.getLogger("mdc_middleware")


class RoutePlan:
    """Everything about a captured route that is the same for each of its requests, worked out once.

    Each plan has a process-wide id: the request path queues the id, not the plan, and the encoder
    process is sent each plan once.
    """

    __slots__ = ("id", "route", "inputs_target", "predictions_target", "unparsed_target", "rules", "active_rules",
                 "boundary", "max_body_bytes", "unparsed_max_bytes", "collect_headers")

    def __init__(self, route: Route, targets: Tuple[Target, Target, Target], rules: FieldRules,
                 settings: Settings) -> None:
        self.route = route
        self.inputs_target, self.predictions_target, unparsed = targets
        self.unparsed_target = unparsed if settings.record_unparsed else None
        self.rules = rules
        self.active_rules = rules if rules.active else None  # what each record carries
        self.boundary = settings.boundary
        self.max_body_bytes = settings.max_body_bytes
        self.unparsed_max_bytes = settings.unparsed_max_bytes
        self.collect_headers = settings.collect_headers
        self.id = register_plan(self)


# Paths seen, with their plan or None: at most this many, of at most this length (so at most ~1 MiB of paths,
# whatever clients send; paths with ids in them must not grow it forever).
_MAX_CACHED_PATHS = 4096
_MAX_CACHED_PATH_LENGTH = 256
# Models (and versions) a route with {model} in its path files rows under, per process: each is a folder, a
# plan and files of its own, and the names come from clients, so they are bounded.
MAX_MODELS_PER_ROUTE = 64

# Requests of a method the routes take, none of them to a route, before the operator is told: a typo in a route
# (``/scroe``) otherwise collects nothing, and says nothing. The paths named in the warning: at most this many.
UNMATCHED_BEFORE_WARNING = 20
_UNMATCHED_PATHS_KEPT = 32

# What a path is refused for instead of a plan: counted as a skip each time it is requested.
_Refusal = str
_UNSEEN: Any = object()


class CapturePolicy:
    def __init__(self, routes: RoutesSpec, settings: Settings, writer: Optional[Writer]) -> None:
        self.settings = settings
        self.routes = RouteTable(routes, settings.routes)
        self._plans: Dict[Tuple[Route, Optional[str], Optional[str]], RoutePlan] = {}
        self._models_per_route: Dict[Route, int] = {}
        self._by_path: Dict[Tuple[str, str], Union[RoutePlan, _Refusal, None]] = {}
        # Until a request meets a route (then None; None from the start when every POST is captured): the
        # requests that could carry inputs (of a method the routes take, or POST, PUT, PATCH: a route given the
        # wrong method is a typo too), by method and path, for the warning of a route that never matches. Health
        # probes' GETs are not counted unless a route takes GET.
        self._unmatched: Optional[Counter] = Counter() if self.routes.routes else None
        self._counted_methods = frozenset((*(method for route in self.routes.routes for method in route.methods),
                                           "POST", "PUT", "PATCH"))
        for route in self.routes.routes:  # validate every route's names at start-up, not per request
            self.plan(route)
        if self.routes.ignored_env_routes and settings.enabled:
            startup.warn(f"mdc: MDC_ROUTES ({', '.join(r.text for r in self.routes.ignored_env_routes)}) is not "
                         f"used: the app gives its routes in code ({', '.join(self.route_names)}), and those are "
                         f"collected")
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
        self._writer_handle = runtime.WriterHandle(settings, writer)  # storage settings fail here, at start-up

    @property
    def route_names(self) -> Tuple[str, ...]:
        """The routes as an operator wrote them (``POST /score``); empty: every POST."""
        return tuple(route.text for route in self.routes.routes)

    @property
    def writer(self) -> Writer:
        return self._writer_handle.writer

    def select(self, method: str, path: str, full_path: str = "") -> Optional[RoutePlan]:
        """The plan to capture this request with, or None to pass it straight through. (The exchange made
        for a plan counts the request as seen.)

        ``path`` is the path as the app routes it, below where it is mounted (ASGI ``root_path``, WSGI
        ``SCRIPT_NAME``); ``full_path``, when the app is mounted, the path with that prefix, so routes
        declared either way match."""
        if not self.settings.enabled:
            return None
        plan = self._by_path.get((method, path), _UNSEEN)
        if plan is _UNSEEN:
            plan = self._plan_for(method, path)
        if plan is None and full_path:
            plan = self._plan_for(method, full_path)
        if plan is None:
            if self._unmatched is not None and method in self._counted_methods:
                self._note_unmatched(method, path)
            return None
        if isinstance(plan, str):
            self.writer.metrics.skip(plan)
            return None
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            self.writer.metrics.skip("sampled_out")
            return None
        return plan

    def _plan_for(self, method: str, path: str) -> Union[RoutePlan, _Refusal, None]:
        key = (method, path)
        try:
            return self._by_path[key]
        except KeyError:
            found = self.routes.match(method, path)
            plan = self._plan_of_match(*found) if found is not None else None
            if found is not None:
                self._unmatched = None  # the routes meet requests: nothing to warn of
            if len(path) <= _MAX_CACHED_PATH_LENGTH:  # longer ones are matched again: linear, and rare
                if len(self._by_path) >= _MAX_CACHED_PATHS:
                    self._by_path.clear()
                self._by_path[key] = plan
            return plan

    def _note_unmatched(self, method: str, path: str) -> None:
        """Count a request no route took; at ``UNMATCHED_BEFORE_WARNING`` of them, before any request met a
        route, warn once, naming the routes and the paths requested instead."""
        counts = self._unmatched
        if counts is None:  # another thread warned, or met a route, meanwhile
            return
        key = f"{method} {path[:100] if path.isprintable() else ascii(path[:100])}"
        if key in counts or len(counts) < _UNMATCHED_PATHS_KEPT:
            counts[key] += 1
        else:
            counts["(other paths)"] += 1
        seen = sum(counts.values())
        if seen < UNMATCHED_BEFORE_WARNING:
            return
        self._unmatched = None
        most = ", ".join(f"{key} ({count})" for key, count in counts.most_common(3))
        startup.warn(f"mdc: {seen} requests so far and none to a route collected ({', '.join(self.route_names)}); "
                     f"they went to {most}. Nothing is collected from them: check MDC_ROUTES or routes= for a typo "
                     f"(in the path or the method)")

    def _plan_of_match(self, route: Route, values: Dict[str, str]) -> Union[RoutePlan, _Refusal]:
        model, version = model_in_path(values)
        if model is None and version is None:
            return self.plan(route)
        if (route, model, version) not in self._plans:
            try:
                self._targets(route, model, version)
            except ConfigError:
                return "bad_model_in_path"  # "..", control characters, too long: never a folder
            seen = self._models_per_route.get(route, 0)
            if seen >= MAX_MODELS_PER_ROUTE:
                if seen == MAX_MODELS_PER_ROUTE:
                    self._models_per_route[route] = seen + 1
                    logger.warning("mdc: route %r has named %d models or versions in its paths; requests naming "
                                   "others are not collected (counted as too_many_models_in_path)",
                                   route.pattern, MAX_MODELS_PER_ROUTE)
                return "too_many_models_in_path"
            self._models_per_route[route] = seen + 1
        return self.plan(route, model, version)

    def plan(self, route: Route, model: Optional[str] = None, version: Optional[str] = None) -> RoutePlan:
        """A route's plan, made on first use (every configured route's at start-up, so bad names fail then).
        ``model`` and ``version``, when the request's path names them, win over the route's schema."""
        found = self._plans.get((route, model, version))
        if found is None:
            found = self._plans[(route, model, version)] = RoutePlan(
                route, self._targets(route, model, version), self.settings.field_rules.merged(route.schema.rules),
                self.settings)
        return found

    def _targets(self, route: Route, model: Optional[str] = None,
                 version: Optional[str] = None) -> Tuple[Target, Target, Target]:
        """Where a route's inputs, predictions and unparsed payloads go."""
        s = self.settings
        common = dict(subscription_id=s.subscription_id, resource_group=s.resource_group,
                      workspace_name=s.workspace_name, webservice_name=s.webservice_name,
                      model_name=model or route.schema.model_name or s.model_name,
                      model_version=version or route.schema.model_version or s.model_version,
                      layout=s.format, deployment=s.deployment_name)
        try:
            return tuple(Target(designation=d, **common) for d in ("inputs", "predictions", "unparsed"))
        except ValueError as exc:
            raise ConfigError(f"route {route.pattern!r}: {exc}") from None

    def wants_status(self, status: int) -> bool:
        return self.collect_all_statuses or 200 <= status < 300
