"""The FastAPI application: routers per resource, one error shape, metrics on every request."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgefleet import __version__
from fleet.api import alerts, audit, bundles, devices, drift, health, models, rollouts, tokens
from fleet.context import ServerContext
from fleet.errors import ApiError, ServiceError
from fleet.metrics import MetricsMiddleware

log = logging.getLogger(__name__)

DESCRIPTION = """
The edgefleet fleet server: device and model registries, bundle downloads with Range resume,
device telemetry from the MQTT ingest, drift reports and alerts.

Authenticate with `Authorization: Bearer TOKEN`. Roles: **viewer** reads; **operator** also pushes
models and manages devices; **admin** also manages tokens and MQTT credentials. Errors are
`{"error": code, "message": ..., "hint": ...}`.
"""


def create_app(context: ServerContext) -> FastAPI:
    app = FastAPI(
        title="edgefleet fleet server",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.fleet = context
    app.include_router(health.router)
    for resource in (devices, models, bundles, rollouts, drift, alerts, tokens, audit):
        app.include_router(resource.router)
    app.add_middleware(MetricsMiddleware, metrics=context.metrics)
    _install_error_handlers(app)
    return app


def _json_error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json_error(exc.status_code, exc.body(), exc.headers)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.code, "message": exc.message}
        if exc.hint:
            body["hint"] = exc.hint
        if exc.details:
            body["details"] = exc.details
        return _json_error(exc.status_code, body)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in errors[:3]
        )
        return _json_error(
            422,
            {
                "error": "invalid_request",
                "message": f"the request does not match the API: {shown}",
                "hint": "see the OpenAPI document at /docs",
                "details": {"errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors]},
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _json_error(
            exc.status_code, {"error": code, "message": str(exc.detail)}, dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json_error(
            500,
            {
                "error": "internal",
                "message": f"the server failed on this request: {type(exc).__name__}",
                "hint": "the server log has the details",
            },
        )
