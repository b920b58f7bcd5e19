"""``/api/v1/devices``, ``/api/v1/enrollment-tokens`` and ``/api/v1/mqtt/credentials``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.orm import Session

from fleet.api.deps import Admin, Operator, Viewer, db_session, get_context
from fleet.api.schemas import (
    API_PREFIX,
    CredentialsExport,
    CredentialsExportRequest,
    DeviceCreate,
    DeviceCreated,
    DeviceInfo,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    ErrorBody,
    MqttCredentials,
    TagUpdate,
)
from fleet.api.views import device_view
from fleet.audit import record_audit
from fleet.auth import Principal
from fleet.config import ExternalBrokerSettings
from fleet.context import ServerContext
from fleet.db.models import Device
from fleet.devices import registry
from fleet.devices.naming import device_topic, parse_tag
from fleet.errors import Invalid

router = APIRouter(prefix=API_PREFIX, tags=["devices"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


def _credentials(device: Device, password: str) -> MqttCredentials:
    return MqttCredentials(
        username=device.id, password=password, topic_prefix=device_topic(device.fleet, device.id, "")[:-1]
    )


@router.get("/devices", response_model=list[DeviceInfo], summary="List devices, filtered")
def get_devices(
    tag: list[str] = Query(default_factory=list, description="KEY=VALUE; repeat to require several"),
    profile: str | None = None,
    online: bool | None = None,
    fleet: str | None = None,
    _: Principal = Viewer,
    session: Session = Depends(db_session),
) -> list[DeviceInfo]:
    try:
        tags = dict(parse_tag(t) for t in tag)
    except ValueError as exc:
        raise Invalid(str(exc), hint="filter with tag=KEY=VALUE") from None
    where = registry.DeviceFilter(tags=tags, profile=profile, online=online, fleet=fleet)
    return [device_view(d) for d in registry.list_devices(session, where)]


@router.post(
    "/devices",
    response_model=DeviceCreated,
    status_code=201,
    summary="Provision a device ahead; its MQTT password is in this response only",
    responses=_ERRORS,
)
def create_device(
    body: DeviceCreate, principal: Principal = Operator, session: Session = Depends(db_session)
) -> DeviceCreated:
    device, password = registry.provision_device(
        session, body.id, fleet=body.fleet, profile=body.profile, tags=body.tags
    )
    record_audit(
        session,
        principal,
        "device.add",
        device.id,
        details={"fleet": body.fleet, "profile": body.profile, "tags": body.tags},
    )
    session.commit()
    return DeviceCreated(device=device_view(device), mqtt=_credentials(device, password))


@router.get("/devices/{device_id}", response_model=DeviceInfo, responses=_ERRORS)
def get_device(device_id: str, _: Principal = Viewer, session: Session = Depends(db_session)) -> DeviceInfo:
    return device_view(registry.get_device(session, device_id))


@router.patch(
    "/devices/{device_id}/tags", response_model=DeviceInfo, summary="Set and remove tags", responses=_ERRORS
)
def patch_tags(
    device_id: str, body: TagUpdate, principal: Principal = Operator, session: Session = Depends(db_session)
) -> DeviceInfo:
    device = registry.update_tags(session, device_id, set_tags=body.set, remove=body.remove)
    record_audit(
        session, principal, "device.tag", device_id, details={"set": body.set, "remove": body.remove}
    )
    session.commit()
    return device_view(device)


@router.delete("/devices/{device_id}", status_code=204, summary="Remove a device", responses=_ERRORS)
def delete_device(
    device_id: str, principal: Principal = Operator, session: Session = Depends(db_session)
) -> Response:
    registry.delete_device(session, device_id)
    record_audit(session, principal, "device.remove", device_id)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/devices/{device_id}/credentials",
    response_model=MqttCredentials,
    summary="Give a device a new MQTT password (the old one stops working after the next credentials export)",
    responses=_ERRORS,
)
def rotate_credentials(
    device_id: str, principal: Principal = Operator, session: Session = Depends(db_session)
) -> MqttCredentials:
    device, password = registry.rotate_device_password(session, device_id)
    record_audit(session, principal, "device.credentials.rotate", device_id)
    session.commit()
    return _credentials(device, password)


@router.post(
    "/enrollment-tokens",
    response_model=EnrollmentTokenCreated,
    status_code=201,
    summary="A one-time token a device presents in its first birth message to register itself",
    responses=_ERRORS,
)
def create_enrollment_token(
    body: EnrollmentTokenCreate, principal: Principal = Operator, session: Session = Depends(db_session)
) -> EnrollmentTokenCreated:
    row, token = registry.create_enrollment_token(
        session,
        fleet=body.fleet,
        profile=body.profile,
        tags=body.tags,
        ttl=timedelta(seconds=body.ttl_seconds),
        note=body.note,
        created_by=principal.name,
    )
    record_audit(
        session,
        principal,
        "enrollment.create",
        str(row.id),
        details={"fleet": row.fleet, "profile": row.profile, "expires_at": row.expires_at.isoformat()},
    )
    session.commit()
    return EnrollmentTokenCreated(
        id=row.id,
        token=token,
        fleet=row.fleet,
        profile=row.profile,
        tags=dict(row.tags),
        expires_at=row.expires_at,
    )


@router.post(
    "/mqtt/credentials",
    response_model=CredentialsExport,
    summary="Mosquitto password file and ACL for every device, plus the server account (admin)",
    responses=_ERRORS,
)
def export_credentials(
    body: CredentialsExportRequest | None = None,
    principal: Principal = Admin,
    context: ServerContext = Depends(get_context),
    session: Session = Depends(db_session),
) -> CredentialsExport:
    config = context.config
    broker = config.broker
    url = broker.url if isinstance(broker, ExternalBrokerSettings) else None
    own_password = url.password if url and url.username == config.mqtt_server_username else None
    export = registry.export_mqtt_credentials(
        session,
        server_username=config.mqtt_server_username,
        server_password=own_password,
        rotate_server_password=bool(body and body.rotate_server_password),
    )
    record_audit(
        session,
        principal,
        "mqtt.credentials.export",
        None,
        details={"devices": export.devices, "server_password_generated": export.server_password is not None},
    )
    session.commit()
    return CredentialsExport(
        password_file=export.password_file,
        acl_file=export.acl_file,
        server_username=export.server_username,
        server_password=export.server_password,
        devices=export.devices,
        devices_without_credentials=list(export.devices_without_credentials),
    )
