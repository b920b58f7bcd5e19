"""``/api/v1/models``: push a bundle (verified against the trusted keys), list names and versions."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from fleet.api.deps import Operator, Viewer, db_session, get_context
from fleet.api.schemas import API_PREFIX, ErrorBody, ModelDetail, ModelSummary, ModelVersionDetail, PushResult
from fleet.api.views import bundle_detail_view, bundle_view, model_detail_view, model_summary_view
from fleet.audit import record_audit
from fleet.auth import Principal
from fleet.context import ServerContext
from fleet.errors import ApiError, ServiceError
from fleet.registry import catalog
from fleet.registry.store import Upload, UploadTooLarge
from models.bundle import BundleError, VerifiedBundle, verify_bundle

router = APIRouter(prefix=API_PREFIX, tags=["models"])
log = logging.getLogger(__name__)

_PUSH_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": PushResult, "description": "The identical bundle was already registered."},
    409: {"model": ErrorBody, "description": "Same name, version and profile, different content."},
    413: {"model": ErrorBody, "description": "Larger than --max-bundle-bytes."},
    415: {"model": ErrorBody, "description": "Not a raw .efb body."},
    422: {"model": ErrorBody, "description": "Refused by the verifier: `error` is its code."},
}


@router.post(
    "/models",
    response_model=PushResult,
    status_code=201,
    summary="Push a bundle: send the .efb file as the raw request body (application/octet-stream)",
    responses=_PUSH_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def push_model(
    request: Request,
    response: Response,
    principal: Principal = Operator,
    context: ServerContext = Depends(get_context),
) -> PushResult:
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the bundle as the raw request body, not as a multipart form",
            hint="use `edgefleet models push FILE.efb`, or curl --data-binary @FILE.efb "
            "-H 'Content-Type: application/octet-stream'",
        )
    limit = context.config.max_bundle_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(limit)
    upload = await context.store.receive(request.stream(), max_bytes=limit)
    try:
        verified = await run_in_threadpool(verify_bundle, upload.path, context.trusted_keys)
    except BundleError as exc:
        context.store.discard(upload)
        context.metrics.bundle_pushes.labels("refused").inc()
        await run_in_threadpool(_audit_refusal, context, principal, upload, exc)
        raise ApiError(
            422,
            exc.code,
            uploaded_message(exc, upload),
            hint=exc.hint,
            details={"exit_code": exc.exit_code, "sha256": upload.sha256},
        ) from None
    except BaseException:
        context.store.discard(upload)
        raise
    result = await run_in_threadpool(_register, context, principal, upload, verified)
    if not result.created:
        response.status_code = 200
    return result


UPLOAD_NAME = "the uploaded bundle"


def uploaded_message(error: BundleError, upload: Upload) -> str:
    """The verifier's message, naming the upload rather than the server's temporary file."""
    return error.message.replace(str(upload.path), UPLOAD_NAME)


def _audit_refusal(context: ServerContext, principal: Principal, upload: Upload, error: BundleError) -> None:
    log.warning("bundle push by %s refused: %s", principal.actor, uploaded_message(error, upload))
    with context.db.session() as session:
        record_audit(
            session,
            principal,
            "model.push",
            None,
            outcome="refused",
            details={
                "error": error.code,
                "message": uploaded_message(error, upload),
                "sha256": upload.sha256,
                "size": upload.size,
            },
        )


def _register(
    context: ServerContext, principal: Principal, upload: Upload, verified: VerifiedBundle
) -> PushResult:
    manifest = verified.manifest
    target = f"{manifest.name}:{manifest.version}:{manifest.profile}"
    with context.db.session() as session:
        try:
            existing = catalog.check_can_register(
                session, verified.sha256, manifest.name, manifest.version, manifest.profile
            )
        except ServiceError as exc:
            context.store.discard(upload)
            context.metrics.bundle_pushes.labels("conflict").inc()
            record_audit(
                session,
                principal,
                "model.push",
                target,
                outcome="refused",
                details={"error": exc.code, "message": exc.message},
            )
            session.commit()
            raise
        if existing is not None:
            context.store.discard(upload)
            context.metrics.bundle_pushes.labels("unchanged").inc()
            return PushResult(bundle=bundle_view(existing), created=False)
        # The file goes in first: a row never points at a missing file. If the insert then fails,
        # the content-addressed file is left for the next push of the same bytes.
        context.store.commit(upload)
        row, created = catalog.register_bundle(session, verified, uploaded_by=principal.name)
        record_audit(
            session,
            principal,
            "model.push",
            target,
            details={"sha256": verified.sha256, "size": verified.size, "key_id": verified.key_id},
        )
        session.commit()
    context.metrics.bundle_pushes.labels("created" if created else "unchanged").inc()
    return PushResult(bundle=bundle_view(row), created=created)


@router.get(
    "/models", response_model=list[ModelSummary], summary="Model names with versions, profiles, formats"
)
def list_models(_: Principal = Viewer, session: Session = Depends(db_session)) -> list[ModelSummary]:
    return [model_summary_view(group) for group in catalog.group_models(catalog.all_bundles(session))]


@router.get("/models/{name}", response_model=ModelDetail, responses={404: {"model": ErrorBody}})
def get_model(name: str, _: Principal = Viewer, session: Session = Depends(db_session)) -> ModelDetail:
    (group,) = catalog.group_models(catalog.bundles_of(session, name))
    return model_detail_view(group)


@router.get(
    "/models/{name}/{version}",
    response_model=ModelVersionDetail,
    summary="One version: a bundle per profile, with manifests and validation figures",
    responses={404: {"model": ErrorBody}},
)
def get_model_version(
    name: str, version: str, _: Principal = Viewer, session: Session = Depends(db_session)
) -> ModelVersionDetail:
    bundles = catalog.bundles_of(session, name, version)
    return ModelVersionDetail(name=name, version=version, bundles=[bundle_detail_view(b) for b in bundles])
