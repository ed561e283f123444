"""Which requests are captured, with which schema, and for which model.

A route is a path pattern: a path, a glob (``/v1/*/predict``), or a path with placeholders as a web
framework writes it (``/models/{model}/versions/{version}/predict``). ``{model}`` and ``{version}`` name the
model and version the request's rows are filed under, so one route serves every model of a multi-model
service; any other placeholder matches one path segment and is not used.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..config import ConfigError, parse_routes
from ..payloads.schema import Schema

MODEL_PLACEHOLDERS = ("model", "model_name")
VERSION_PLACEHOLDERS = ("version", "model_version")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Route:
    pattern: str
    schema: Schema
    methods: Tuple[str, ...] = ("POST",)

    @property
    def text(self) -> str:
        """The route as an operator writes it: ``POST /score``, ``GET|POST /predict``."""
        return f"{'|'.join(self.methods)} {self.pattern}"

    def matches(self, method: str, path: str) -> bool:
        return self.path_values(method, path) is not None

    def path_values(self, method: str, path: str) -> Optional[Dict[str, str]]:
        """The placeholders' values when the route takes this request (``{}`` without any), else None."""
        if method not in self.methods:
            return None
        if self.pattern == path:
            return {}
        if len(path) > MAX_MATCHED_PATH:
            return None
        return _matcher(self.pattern).match(path)


# Paths longer than this are matched only against literal routes: a scoring route's path is short, and a client
# controls the length of what a glob is matched against.
MAX_MATCHED_PATH = 2048


class _Matcher:
    """A glob (``*`` any text, ``?`` one character) with placeholders (``{name}``: one path segment), matched in
    time linear in the path's length. ``re`` on the whole pattern backtracks: 0.55 s for a 60 KB path against
    ``/v2/*/models/{model}/*/predict``. The pattern is cut at its stars into pieces without stars; the first
    must match at the start, each middle one at its first place after the one before (the earliest place
    leaves the most room for the rest, so a match exists only if this finds one), the last at the end."""

    def __init__(self, pattern: str) -> None:
        seen: set = set()
        pieces = pattern.split("*")
        self.first = re.compile(_piece(pieces[0], seen))
        self.middle = [re.compile(_piece(p, seen)) for p in pieces[1:-1]]
        last = pieces[-1] if len(pieces) > 1 else None
        self.last = re.compile(f"(?:{_piece(last, seen)})\\Z") if last is not None else None
        self.last_width = len(last) if last is not None and "{" not in last else None  # a fixed width

    def match(self, path: str) -> Optional[Dict[str, str]]:
        if self.last is None:
            found = self.first.fullmatch(path)
            return found.groupdict() if found is not None else None
        head = self.first.match(path)
        if head is None:
            return None
        values = head.groupdict()
        position = head.end()
        for piece in self.middle:
            found = piece.search(path, position)
            if found is None:
                return None
            values.update(found.groupdict())
            position = found.end()
        if self.last_width is not None:  # no placeholder: it can only be the path's last characters
            start = len(path) - self.last_width
            tail = self.last.match(path, start) if start >= position else None
        else:
            tail = self.last.search(path, position)
        if tail is None:
            return None
        values.update(tail.groupdict())
        return values


@functools.lru_cache(maxsize=256)
def _matcher(pattern: str) -> _Matcher:
    return _Matcher(pattern)


def _piece(text: str, seen: set) -> str:
    """A piece of a pattern without stars as a regex: ``?`` one character, a placeholder one segment (the
    first of each name captured)."""
    parts: List[str] = []
    last = 0
    for placeholder in _PLACEHOLDER.finditer(text):
        parts.append(re.escape(text[last:placeholder.start()]).replace(r"\?", "."))
        name = placeholder.group(1)
        parts.append(f"(?P<{name}>[^/]+?)" if name not in seen else "[^/]+?")
        seen.add(name)
        last = placeholder.end()
    parts.append(re.escape(text[last:]).replace(r"\?", "."))
    return "".join(parts)


RoutesSpec = Union[None, str, Sequence[str], Mapping[str, Optional[Schema]], Sequence[Route]]


class RouteTable:
    """Which requests to capture, and with which schema. No routes configured: every POST.

    Routes given as text are patterns separated by commas, as in ``MDC_ROUTES``: ``routes="/score"`` is one
    route, not six one-letter ones."""

    def __init__(self, routes: RoutesSpec = None, env_routes: Sequence[str] = ()) -> None:
        built: List[Route] = []
        from_env = [_route(p, Schema()) for p in env_routes]  # checked even where ``routes`` wins over them
        if isinstance(routes, str):
            routes = parse_routes(routes)
        if isinstance(routes, Mapping):
            built = [_route(p, s or Schema()) for p, s in routes.items()]
        elif routes:
            built = [r if isinstance(r, Route) else _route(str(r), Schema()) for r in routes]
        elif from_env:
            built = from_env
        self.routes = tuple(built)
        self._catch_all = Route("*", Schema()) if not built else None
        # MDC_ROUTES set to other routes than the app gives in code: the app's win, and the operator is told.
        self.ignored_env_routes: Tuple[Route, ...] = ()
        if from_env and built is not from_env and ({(r.methods, r.pattern) for r in from_env}
                                                   != {(r.methods, r.pattern) for r in built}):
            self.ignored_env_routes = tuple(from_env)

    def match(self, method: str, path: str) -> Optional[Tuple[Route, Dict[str, str]]]:
        """The first route that takes the request, with its placeholders' values. A trailing slash does not
        matter: ``/score`` takes ``/score/`` and ``/score/`` takes ``/score`` (the app redirects or refuses the
        one it does not serve, and neither answer is a 2xx that would be collected)."""
        found = self._first(method, path)
        if found is None and len(path) > 1:
            found = self._first(method, path[:-1] if path.endswith("/") else path + "/")
        return found

    def _first(self, method: str, path: str) -> Optional[Tuple[Route, Dict[str, str]]]:
        for route in (*self.routes, *((self._catch_all,) if self._catch_all is not None else ())):
            values = route.path_values(method, path)
            if values is not None:
                return route, values
        return None


_METHOD_PREFIX = re.compile(r"([A-Za-z]+(?:\|[A-Za-z]+)*)\s+(\S.*)")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/]*(/.*)?")


HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _route(text: str, schema: Schema) -> Route:
    """A route from text: a pattern, or methods before it (``GET /predict``, ``GET|POST /score``; POST alone
    when none are given). A route that could never match is refused (ConfigError): a path that does not start
    with ``/`` (``score``), a method HTTP does not have (``PUSH /predict``)."""
    given = _METHOD_PREFIX.fullmatch(text.strip())
    pattern, methods = ((text, ("POST",)) if given is None
                        else (given.group(2), tuple(m.upper() for m in given.group(1).split("|"))))
    unknown = [m for m in methods if m not in HTTP_METHODS]
    if unknown:
        raise ConfigError(f"route {text!r} (MDC_ROUTES or routes=): {', '.join(unknown)} is not an HTTP method; "
                          f"expected {', '.join(HTTP_METHODS)}")
    url = _URL.fullmatch(pattern)
    if url is not None:
        raise ConfigError(f"route {text!r} (MDC_ROUTES or routes=): a route is the request's path, without scheme "
                          f"and host; did you mean {url.group(1) or '/'!r}?")
    if not pattern.startswith(("/", "*")):
        raise ConfigError(f"route {text!r} (MDC_ROUTES or routes=): request paths start with '/', so it would "
                          f"never match; did you mean '/{pattern}'?")
    parts = pattern.split(";")
    if len(parts) > 1 and all(part.strip().startswith("/") for part in parts):
        raise ConfigError(f"route {text!r} (MDC_ROUTES or routes=): routes are separated by commas; did you mean "
                          f"{','.join(part.strip() for part in parts)!r}?")
    return Route(pattern, schema, methods)


def model_in_path(values: Dict[str, str]) -> Tuple[Optional[str], Optional[str]]:
    """(model, version) named by a matched path, each None when the path does not name it."""
    model = next((values[n] for n in MODEL_PLACEHOLDERS if n in values), None)
    version = next((values[n] for n in VERSION_PLACEHOLDERS if n in values), None)
    return model, version
