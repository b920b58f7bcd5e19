"""``/api/v1/tokens`` (admin) and ``/api/v1/whoami``."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from fleet.api.deps import Admin, current_principal, db_session
from fleet.api.schemas import API_PREFIX, ErrorBody, TokenCreate, TokenCreated, TokenInfo, WhoAmI
from fleet.audit import record_audit
from fleet.auth import Principal, Role
from fleet.tokens import create_api_token, list_tokens, revoke_token

router = APIRouter(prefix=API_PREFIX, tags=["tokens"])


@router.get("/whoami", response_model=WhoAmI, summary="The token's name and role")
def whoami(principal: Principal = Depends(current_principal)) -> WhoAmI:
    return WhoAmI.model_validate({"name": principal.name, "role": str(principal.role)})


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    summary="Create an API token (admin); the token is in this response only",
    responses={409: {"model": ErrorBody}},
)
def create_token(
    body: TokenCreate, principal: Principal = Admin, session: Session = Depends(db_session)
) -> TokenCreated:
    row, token = create_api_token(session, name=body.name, role=Role(body.role), created_by=principal.name)
    record_audit(session, principal, "token.create", body.name, details={"role": body.role, "id": row.id})
    session.commit()
    return TokenCreated(**TokenInfo.model_validate(row).model_dump(), token=token)


@router.get(
    "/tokens", response_model=list[TokenInfo], summary="List API tokens (admin); never the tokens themselves"
)
def get_tokens(
    include_revoked: bool = False, _: Principal = Admin, session: Session = Depends(db_session)
) -> list[TokenInfo]:
    return [TokenInfo.model_validate(row) for row in list_tokens(session, include_revoked=include_revoked)]


@router.delete(
    "/tokens/{name_or_id}",
    response_model=TokenInfo,
    summary="Revoke an API token (admin)",
    responses={404: {"model": ErrorBody}},
)
def delete_token(
    name_or_id: str, principal: Principal = Admin, session: Session = Depends(db_session)
) -> TokenInfo:
    row = revoke_token(session, name_or_id)
    record_audit(session, principal, "token.revoke", row.name, details={"id": row.id})
    session.commit()
    return TokenInfo.model_validate(row)
