"""RequestOnlyRoute: documented like any FastAPI route, called directly, errors still handled.
register_directly: a RequestOnlyRoute on the app's own router, documented as include_router would."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from service.api.routes import predict
from service.api.routing import RequestOnlyRoute, register_directly


class Echo(BaseModel):
    text: str


async def echo(request: Request) -> Response:
    if request.query_params.get("fail"):
        raise HTTPException(status_code=418, detail="asked to fail")
    return Response(content=await request.body(), media_type="application/json")


def _app() -> FastAPI:
    router = APIRouter()
    router.add_api_route(
        "/echo", echo, methods=["POST"], route_class_override=RequestOnlyRoute, response_model=Echo
    )
    app = FastAPI()
    app.include_router(router)
    return app


def test_request_only_route_calls_the_endpoint_and_keeps_its_response() -> None:
    with TestClient(_app()) as client:
        response = client.post("/echo", content=b'{"text": "as sent"}')
    assert response.status_code == 200
    # No response-model serialisation: the endpoint's bytes come back as they were.
    assert response.content == b'{"text": "as sent"}'


def test_request_only_route_errors_go_through_the_exception_handlers() -> None:
    with TestClient(_app()) as client:
        response = client.post("/echo?fail=1", content=b"{}")
    assert (response.status_code, response.json()) == (418, {"detail": "asked to fail"})


def test_request_only_route_is_documented_with_its_response_model() -> None:
    schema = _app().openapi()
    operation = schema["paths"]["/echo"]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Echo"
    }


async def _needs_a_dependency(request: Request, token: str = Depends(lambda: "x")) -> Response:
    return Response()


async def _needs_a_query(request: Request, explain: bool = False) -> Response:
    return Response()


async def _needs_no_request() -> Response:
    return Response()


@pytest.mark.parametrize("endpoint", [_needs_a_dependency, _needs_a_query, _needs_no_request])
def test_request_only_route_refuses_an_endpoint_with_other_parameters(endpoint: object) -> None:
    router = APIRouter()
    with pytest.raises(TypeError, match="takes exactly one parameter, the Request"):
        router.add_api_route("/x", endpoint, methods=["POST"], route_class_override=RequestOnlyRoute)  # type: ignore[arg-type]


def test_predict_is_a_request_only_route_and_the_batch_route_is_not() -> None:
    # The hot path skips FastAPI's per-request handler (docs/benchmarks.md); the batch route needs it.
    assert [(route.path, type(route)) for route in predict.direct_router.routes] == [  # type: ignore[attr-defined]
        ("/predict", RequestOnlyRoute)
    ]
    assert [(route.path, type(route)) for route in predict.router.routes] == [  # type: ignore[attr-defined]
        ("/predict/batch", APIRoute)
    ]


def _echo_router() -> APIRouter:
    router = APIRouter(tags=["echo"])
    router.add_api_route(
        "/echo", echo, methods=["POST"], route_class_override=RequestOnlyRoute, response_model=Echo
    )
    return router


def test_register_directly_documents_the_route_as_include_router_does() -> None:
    included, direct = FastAPI(), FastAPI()
    for router in (predict.direct_router, _echo_router()):
        included.include_router(router)
        register_directly(direct, router)
    assert direct.openapi() == included.openapi()


def test_register_directly_puts_the_route_itself_first_on_the_app_router() -> None:
    app = FastAPI()
    before = list(app.router.routes)
    router = _echo_router()
    register_directly(app, router)
    assert app.router.routes == [*router.routes, *before]
    with TestClient(app) as client:
        answered = client.post("/echo", content=b'{"text": "direct"}')
        failed = client.post("/echo?fail=1", content=b"{}")
    assert (answered.status_code, answered.content) == (200, b'{"text": "direct"}')
    assert (failed.status_code, failed.json()) == (418, {"detail": "asked to fail"})


def test_register_directly_refuses_a_route_that_include_router_must_bind() -> None:
    # A route with dependencies needs the including app's dependency_overrides: include_router only.
    with pytest.raises(TypeError, match="'/predict/batch': only RequestOnlyRoutes"):
        register_directly(FastAPI(), predict.router)
