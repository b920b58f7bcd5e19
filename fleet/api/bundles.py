"""``/api/v1/bundles/{sha256}``: downloads with HTTP Range, so an interrupted download resumes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from fleet.api.deps import bundle_reader, db_session, get_context
from fleet.api.schemas import API_PREFIX, ErrorBody
from fleet.auth import Principal
from fleet.context import ServerContext
from fleet.errors import ApiError, NotFound
from fleet.registry import catalog
from fleet.registry.ranges import RangeNotSatisfiable, etag_for, etag_matches, if_range_allows, parse_range
from fleet.registry.store import is_sha256

router = APIRouter(prefix=API_PREFIX, tags=["bundles"])

MEDIA_TYPE = "application/octet-stream"


@router.api_route(
    "/bundles/{sha256}",
    methods=["GET", "HEAD"],
    summary="Download a bundle (Range, If-Range and If-None-Match supported; ETag is the sha256)",
    response_class=Response,
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "The whole bundle."},
        206: {"content": {MEDIA_TYPE: {}}, "description": "The requested byte range."},
        304: {"description": "If-None-Match matched."},
        404: {"model": ErrorBody},
        416: {"model": ErrorBody, "description": "The range starts past the end."},
    },
)
def download_bundle(
    sha256: str,
    request: Request,
    _: Principal = Depends(bundle_reader),
    context: ServerContext = Depends(get_context),
    session: Session = Depends(db_session),
) -> Response:
    if not is_sha256(sha256):
        raise NotFound(f"{sha256!r} is not a bundle address (64 lowercase hex digits)")
    row = catalog.get_bundle(session, sha256)
    path = context.store.path_for(sha256)
    if not path.is_file():
        raise ApiError(
            500,
            "bundle_missing",
            f"bundle {sha256} is registered but its file is gone from {path.parent}",
            hint="restore the server's data directory from a backup, or push the bundle again",
        )
    size = path.stat().st_size
    etag = etag_for(sha256)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        # The address is the content: it never changes, so caches may keep it forever.
        "Cache-Control": "private, max-age=31536000, immutable",
        "Content-Disposition": f'attachment; filename="{row.name}-{row.version}-{row.profile}.efb"',
    }
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    try:
        wanted = (
            parse_range(request.headers.get("range"), size)
            if if_range_allows(request.headers.get("if-range"), etag)
            else None
        )
    except RangeNotSatisfiable as exc:
        raise ApiError(
            416, "range_not_satisfiable", str(exc), headers={**headers, "Content-Range": exc.content_range}
        ) from None
    status, first, length = (200, 0, size) if wanted is None else (206, wanted.first, wanted.length)
    headers["Content-Length"] = str(length)
    if wanted is not None:
        headers["Content-Range"] = wanted.content_range
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=MEDIA_TYPE)
    return StreamingResponse(
        context.store.read(sha256, first, length), status_code=status, headers=headers, media_type=MEDIA_TYPE
    )
