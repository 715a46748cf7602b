"""A route class for the hot path: documented by FastAPI like any route, called without its machinery."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute


class RequestOnlyRoute(APIRoute):
    """A route whose endpoint takes only the ``Request`` and returns a ``Response`` itself.

    FastAPI still builds its OpenAPI operation (``response_model``, ``responses``, ``openapi_extra``)
    and its error handlers still answer what the endpoint raises, but a request skips FastAPI's
    per-request handler: dependency solving, body handling and response-model serialisation for an
    endpoint that declares none of them. On ``POST /predict`` that handler cost about 30 us of CPU a
    request in-process, a quarter of the app's own time (docs/benchmarks.md, "What each serving fix
    gave").
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        declared = (
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
            dependant.body_params,
            dependant.dependencies,
        )
        if any(declared) or dependant.request_param_name is None:
            raise TypeError(
                f"{self.name}: a RequestOnlyRoute endpoint takes exactly one parameter, the Request, and "
                "reads everything else from it; declared parameters and dependencies would be ignored"
            )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


def register_directly(app: FastAPI, router: APIRouter) -> None:
    """Put ``router``'s routes first on the app's own router, instead of including the router.

    A request is matched against the app's routes in order, and FastAPI puts its own pages
    (``/openapi.json``, ``/docs``, ``/docs/oauth2-redirect``, ``/redoc``) first; the routes given
    here go in front of them. And since FastAPI 0.137, ``include_router`` keeps the included router
    as a node of its own, through which each request is resolved twice: once to find that the
    router matches, once to pick its route. On ``POST /predict`` the two cost about 12 us of CPU a
    request in-process, a seventh of the app's own time (docs/benchmarks.md, "What each serving fix
    gave").

    Only RequestOnlyRoutes may be registered so. They declare no dependencies, so there is nothing
    an app's ``dependency_overrides`` could change, and one route object can serve every app built
    from the module (the tests build many). A route with dependencies needs ``include_router``,
    which binds it to the including app's overrides.
    """
    routes = list(router.routes)
    for route in routes:
        if not isinstance(route, RequestOnlyRoute):
            raise TypeError(
                f"{getattr(route, 'path', route)!r}: only RequestOnlyRoutes can be registered directly; "
                "include any other route with include_router, which applies the app's dependency overrides"
            )
    app.router.routes[:0] = routes
