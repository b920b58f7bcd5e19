"""Liveness (``/healthz``), readiness (``/readyz``) and Prometheus (``/metrics``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from edgefleet import __version__
from fleet.api.deps import get_context
from fleet.api.schemas import Health, Readiness, ReadinessCheck
from fleet.context import ServerContext
from fleet.db.migrations import migration_state

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 5.0


@router.get("/healthz", response_model=Health, summary="The process is up")
def healthz() -> Health:
    return Health(version=__version__)


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Database reachable, migrations at head, broker reachable",
    responses={503: {"model": Readiness, "description": "Not ready; the failing checks say why."}},
)
async def readyz(response: Response, context: ServerContext = Depends(get_context)) -> Readiness:
    checks = list(await asyncio.gather(_database(context), _migrations(context), _broker(context)))
    ready = all(check.ok for check in checks)
    response.status_code = 200 if ready else 503
    return Readiness(ready=ready, checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(context: ServerContext = Depends(get_context)) -> Response:
    # The registry-size collector queries the database: keep it off the event loop.
    body = await run_in_threadpool(generate_latest, context.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


async def _database(context: ServerContext) -> ReadinessCheck:
    try:
        await asyncio.wait_for(run_in_threadpool(context.db.ping), CHECK_TIMEOUT_S)
    except Exception as exc:
        return ReadinessCheck(name="database", ok=False, detail=f"{context.db.display_url}: {exc}")
    return ReadinessCheck(name="database", ok=True, detail=f"{context.db.dialect} reachable")


async def _migrations(context: ServerContext) -> ReadinessCheck:
    try:
        state = await asyncio.wait_for(run_in_threadpool(migration_state, context.db.engine), CHECK_TIMEOUT_S)
    except Exception as exc:
        return ReadinessCheck(name="migrations", ok=False, detail=f"cannot read the schema revision: {exc}")
    detail = (
        f"at {state.current}" if state.at_head else f"at {state.current or 'nothing'}, head is {state.head}"
    )
    return ReadinessCheck(name="migrations", ok=state.at_head, detail=detail)


async def _broker(context: ServerContext) -> ReadinessCheck:
    if context.broker is None:
        return ReadinessCheck(name="broker", ok=False, detail="no MQTT broker configured")
    problem = await context.broker.check()
    return ReadinessCheck(name="broker", ok=problem is None, detail=problem or context.broker.description)
