"""The route table: every route the gateway serves, hot or not, matched in one place.

A route is a method, a path and a handler taking an :class:`~gateway.http.call.ApiCall`;
a path's last segment may be a parameter (``/v1/models/{id}``). Exact paths are found by
one dict look-up, so the hot routes pay nothing for the table's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from starlette.responses import Response

from gateway.http.call import ApiCall

__all__ = ["Handler", "Match", "Route", "RouteTable"]

Handler = Callable[[ApiCall], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """``billed``: requests on this route are accounted (usage ledger, request metrics)."""

    method: str
    path: str
    handler: Handler
    billed: bool = False


@dataclass(frozen=True, slots=True)
class Match:
    """A matched path: its route for the method (None: the path exists, not the method),
    the methods the path allows, and its parameters."""

    route: Route | None
    allowed: tuple[str, ...]
    params: dict[str, str]


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact: dict[str, dict[str, Route]] = {}
        #: (prefix up to the last "/", parameter name, routes by method)
        self._templated: list[tuple[str, str, dict[str, Route]]] = []
        for route in routes:
            prefix, _, last = route.path.rpartition("/")
            if last.startswith("{") and last.endswith("}"):
                for known_prefix, _name, methods in self._templated:
                    if known_prefix == prefix + "/":
                        methods[route.method] = route
                        break
                else:
                    self._templated.append((prefix + "/", last[1:-1], {route.method: route}))
            else:
                self._exact.setdefault(route.path, {})[route.method] = route

    def match(self, method: str, path: str) -> Match | None:
        """The route for ``method`` and ``path``; None when no route has that path."""
        methods = self._exact.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for prefix, name, candidates in self._templated:
                value = path[len(prefix):] if path.startswith(prefix) else ""
                if value and "/" not in value:
                    methods, params = candidates, {name: value}
                    break
            else:
                return None
        route = methods.get(method)
        if route is None and method == "HEAD":
            route = methods.get("GET")
        return Match(route, tuple(methods), params)
