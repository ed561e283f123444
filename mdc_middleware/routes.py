"""Which requests are captured, with which schema, and for which model.

A route is a path pattern: a path, a glob (``/v1/*/predict``), or a path with placeholders as a web
framework writes it (``/models/{model}/versions/{version}/predict``). ``{model}`` and ``{version}`` name the
model and version the request's rows are filed under, so one route serves every model of a multi-model
service; any other placeholder matches one path segment and is not used.
"""
from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Pattern, Sequence, Tuple, Union

from .config import parse_routes
from .schema import Schema

MODEL_PLACEHOLDERS = ("model", "model_name")
VERSION_PLACEHOLDERS = ("version", "model_version")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Route:
    pattern: str
    schema: Schema
    methods: Tuple[str, ...] = ("POST",)

    def matches(self, method: str, path: str) -> bool:
        return self.path_values(method, path) is not None

    def path_values(self, method: str, path: str) -> Optional[Dict[str, str]]:
        """The placeholders' values when the route takes this request (``{}`` without any), else None."""
        if method not in self.methods:
            return None
        regex = _placeholder_regex(self.pattern)
        if regex is None:
            return {} if self.pattern == path or fnmatch.fnmatchcase(path, self.pattern) else None
        found = regex.fullmatch(path)
        return found.groupdict() if found is not None else None


@functools.lru_cache(maxsize=None)
def _placeholder_regex(pattern: str) -> Optional[Pattern[str]]:
    if "{" not in pattern:
        return None
    parts: List[str] = []
    seen: set = set()
    last = 0
    for placeholder in _PLACEHOLDER.finditer(pattern):
        parts.append(_glob(pattern[last:placeholder.start()]))
        name = placeholder.group(1)
        parts.append(f"(?P<{name}>[^/]+)" if name not in seen else "[^/]+")
        seen.add(name)
        last = placeholder.end()
    parts.append(_glob(pattern[last:]))
    return re.compile("".join(parts))


def _glob(text: str) -> str:
    return re.escape(text).replace(r"\*", ".*").replace(r"\?", ".")


RoutesSpec = Union[None, str, Sequence[str], Mapping[str, Optional[Schema]], Sequence[Route]]


class RouteTable:
    """Which requests to capture, and with which schema. No routes configured: every POST.

    Routes given as text are patterns separated by commas, as in ``MDC_ROUTES``: ``routes="/score"`` is one
    route (it was six one-letter ones that matched nothing)."""

    def __init__(self, routes: RoutesSpec = None, env_routes: Sequence[str] = ()) -> None:
        built: List[Route] = []
        if isinstance(routes, str):
            routes = parse_routes(routes)
        if isinstance(routes, Mapping):
            built = [_route(p, s or Schema()) for p, s in routes.items()]
        elif routes:
            built = [r if isinstance(r, Route) else _route(str(r), Schema()) for r in routes]
        elif env_routes:
            built = [_route(p, Schema()) for p in env_routes]
        self.routes = tuple(built)
        self._catch_all = Route("*", Schema()) if not built else None

    def match(self, method: str, path: str) -> Optional[Tuple[Route, Dict[str, str]]]:
        """The first route that takes the request, with its placeholders' values."""
        for route in (*self.routes, *((self._catch_all,) if self._catch_all is not None else ())):
            values = route.path_values(method, path)
            if values is not None:
                return route, values
        return None


_METHOD_PREFIX = re.compile(r"([A-Z]+(?:\|[A-Z]+)*)\s+(\S.*)")


def _route(text: str, schema: Schema) -> Route:
    """A route from text: a pattern, or methods before it (``GET /predict``, ``GET|POST /score``; POST alone
    when none are given)."""
    given = _METHOD_PREFIX.fullmatch(text.strip())
    if given is None:
        return Route(text, schema)
    return Route(given.group(2), schema, tuple(given.group(1).split("|")))


def model_in_path(values: Dict[str, str]) -> Tuple[Optional[str], Optional[str]]:
    """(model, version) named by a matched path, each None when the path does not name it."""
    model = next((values[n] for n in MODEL_PLACEHOLDERS if n in values), None)
    version = next((values[n] for n in VERSION_PLACEHOLDERS if n in values), None)
    return model, version
