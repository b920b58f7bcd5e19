"""The device registry over the database: provision, list and filter, tag, enroll, export credentials.

Functions take a ``Session`` and leave committing to the caller, so an API call, its audit entry
and the change it makes land in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fleet.audit import record_audit
from fleet.auth import ENROLLMENT_TOKEN_PREFIX, generate_token, hash_token
from fleet.db.models import Device, DeviceTag, EnrollmentToken, ServerSetting
from fleet.db.types import utcnow
from fleet.devices.credentials import (
    DeviceGrant,
    MqttAccount,
    acl_text,
    generate_mqtt_password,
    hash_mqtt_password,
    password_file_text,
    verify_mqtt_password,
)
from fleet.devices.naming import DEFAULT_FLEET, check_tag, is_device_id, is_fleet_name
from fleet.errors import Conflict, Gone, Invalid, NotFound

MAX_ENROLLMENT_TTL: Final = timedelta(days=30)
SERVER_ACCOUNT_SETTING: Final = "mqtt_server_account"


@dataclass(frozen=True)
class DeviceFilter:
    """Every given condition must hold; ``tags`` must all match."""

    tags: Mapping[str, str] = field(default_factory=dict)
    profile: str | None = None
    online: bool | None = None
    fleet: str | None = None


def get_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}", hint="list devices with `edgefleet devices ls`")
    return device


def list_devices(session: Session, where: DeviceFilter | None = None) -> Sequence[Device]:
    where = where or DeviceFilter()
    query = select(Device).order_by(Device.fleet, Device.id)
    for key, value in where.tags.items():
        query = query.where(
            exists().where(DeviceTag.device_id == Device.id, DeviceTag.key == key, DeviceTag.value == value)
        )
    if where.profile is not None:
        query = query.where(Device.profile == where.profile)
    if where.online is not None:
        query = query.where(Device.online.is_(where.online))
    if where.fleet is not None:
        query = query.where(Device.fleet == where.fleet)
    return session.scalars(query).all()


def provision_device(
    session: Session,
    device_id: str,
    *,
    fleet: str = DEFAULT_FLEET,
    profile: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> tuple[Device, str]:
    """Register a device ahead of its first connection; return it and its MQTT password (shown once)."""
    _check_ids(device_id, fleet)
    if session.get(Device, device_id) is not None:
        raise Conflict(
            f"device {device_id!r} is already registered",
            hint="pick another id, or give it a new password with `edgefleet devices rotate ID`",
        )
    password = generate_mqtt_password()
    device = Device(
        id=device_id,
        fleet=fleet,
        profile=profile,
        models={},
        online=False,
        enrollment="provisioned",
        mqtt_password_hash=hash_mqtt_password(password),
    )
    device.tags = [DeviceTag(key=k, value=v) for k, v in _checked_tags(tags or {}).items()]
    session.add(device)
    _flush_new_device(session, device_id)
    return device, password


def update_tags(
    session: Session, device_id: str, *, set_tags: Mapping[str, str], remove: Sequence[str] = ()
) -> Device:
    """Set (add or overwrite) and remove tags; removing a tag that is not there is not an error."""
    device = get_device(session, device_id)
    wanted = device.tag_map
    for key in remove:
        wanted.pop(key, None)
    wanted.update(_checked_tags(set_tags))
    existing = {tag.key: tag for tag in device.tags}
    device.tags = [
        existing[key] if key in existing else DeviceTag(key=key, value=value)
        for key, value in sorted(wanted.items())
    ]
    for tag in device.tags:
        tag.value = wanted[tag.key]
    device.updated_at = utcnow()
    return device


def rotate_device_password(session: Session, device_id: str) -> tuple[Device, str]:
    device = get_device(session, device_id)
    password = generate_mqtt_password()
    device.mqtt_password_hash = hash_mqtt_password(password)
    device.updated_at = utcnow()
    return device, password


def delete_device(session: Session, device_id: str) -> None:
    session.delete(get_device(session, device_id))


def check_device_password(session: Session, device_id: str, password: str) -> bool:
    """For HTTP Basic on bundle downloads: the device's MQTT credentials, checked against the hash."""
    device = session.get(Device, device_id) if is_device_id(device_id) else None
    if device is None or device.mqtt_password_hash is None:
        return False
    return verify_mqtt_password(password, device.mqtt_password_hash)


# --- enrollment --------------------------------------------------------------------------------


def create_enrollment_token(
    session: Session,
    *,
    fleet: str = DEFAULT_FLEET,
    profile: str | None = None,
    tags: Mapping[str, str] | None = None,
    ttl: timedelta = timedelta(hours=24),
    note: str | None = None,
    created_by: str | None = None,
) -> tuple[EnrollmentToken, str]:
    """A one-time token for a device to register itself with; returned once, stored hashed."""
    if not is_fleet_name(fleet):
        raise Invalid(f"fleet {fleet!r} must be letters, digits, '.', '_' or '-'")
    if not timedelta(0) < ttl <= MAX_ENROLLMENT_TTL:
        raise Invalid(f"an enrollment token lives between 1 second and {MAX_ENROLLMENT_TTL.days} days")
    token = generate_token(ENROLLMENT_TOKEN_PREFIX)
    row = EnrollmentToken(
        token_hash=hash_token(token),
        fleet=fleet,
        profile=profile,
        tags=dict(_checked_tags(tags or {})),
        note=note,
        created_by=created_by,
        expires_at=utcnow() + ttl,
    )
    session.add(row)
    session.flush()
    return row, token


@dataclass(frozen=True)
class Enrollment:
    """A redeemed token: the new device, and its MQTT password for the ingest to hand over once."""

    device: Device
    mqtt_password: str
    token_id: int


class EnrollmentRefused(Gone):
    """The token is unknown, used, expired or revoked, or the device cannot take it."""

    code = "enrollment_refused"


def redeem_enrollment(
    session: Session,
    token: str,
    device_id: str,
    *,
    profile: str | None = None,
    agent_version: str | None = None,
    now: datetime | None = None,
) -> Enrollment:
    """Register ``device_id`` with a one-time enrollment token, as its first birth message asks.

    The token is consumed with a conditional UPDATE (``used_at IS NULL``), so two devices racing
    for the same token cannot both win, on SQLite or PostgreSQL. A device id that already exists
    is refused: a token must never let a newcomer take over a registered identity.
    """
    now = now or utcnow()
    if not is_device_id(device_id):
        raise EnrollmentRefused(f"device id {device_id!r} must be letters, digits, '.', '_' or '-'")
    row = session.scalar(select(EnrollmentToken).where(EnrollmentToken.token_hash == hash_token(token)))
    if row is None:
        raise EnrollmentRefused(
            "unknown enrollment token", hint="create one with `edgefleet devices enroll-token`"
        )
    if row.revoked_at is not None:
        raise EnrollmentRefused("the enrollment token was revoked")
    if row.used_at is not None:
        raise EnrollmentRefused(
            f"the enrollment token was already used by device {row.used_by_device!r}",
            hint="enrollment tokens are one-time: create a new one",
        )
    if row.expires_at <= now:
        raise EnrollmentRefused(f"the enrollment token expired at {row.expires_at.isoformat()}")
    if row.profile is not None and profile is not None and profile != row.profile:
        raise EnrollmentRefused(
            f"the token is for profile {row.profile!r}, but the device reports {profile!r}"
        )
    if session.get(Device, device_id) is not None:
        raise EnrollmentRefused(
            f"device {device_id!r} is already registered; its identity cannot be re-enrolled"
        )
    claimed = session.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.id == row.id, EnrollmentToken.used_at.is_(None))
        .values(used_at=now, used_by_device=device_id)
        .execution_options(synchronize_session=False)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        raise EnrollmentRefused("the enrollment token was used by another device at the same moment")
    password = generate_mqtt_password()
    device = Device(
        id=device_id,
        fleet=row.fleet,
        profile=row.profile or profile,
        agent_version=agent_version,
        models={},
        online=False,
        enrollment="enrolled",
        enrollment_token_id=row.id,
        mqtt_password_hash=hash_mqtt_password(password),
    )
    device.tags = [DeviceTag(key=k, value=str(v)) for k, v in sorted(row.tags.items())]
    session.add(device)
    _flush_new_device(session, device_id)
    session.refresh(row)
    record_audit(
        session,
        f"device:{device_id}",
        "device.enroll",
        device_id,
        details={"enrollment_token": row.id, "fleet": row.fleet, "profile": device.profile},
    )
    return Enrollment(device=device, mqtt_password=password, token_id=row.id)


# --- Mosquitto files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialsExport:
    password_file: str
    acl_file: str
    server_username: str
    server_password: str | None  # set only when this export generated it
    devices: int
    devices_without_credentials: tuple[str, ...]


def export_mqtt_credentials(
    session: Session,
    *,
    server_username: str,
    server_password: str | None = None,
    rotate_server_password: bool = False,
) -> CredentialsExport:
    """The password file and ACL for every device with credentials, plus the server's own account.

    The server account's password is the one in ``--mqtt`` when the server was given one; else a
    random one made on the first export (returned that once, its hash kept for later exports).
    """
    generated: str | None = None
    if server_password is not None:
        server_hash = hash_mqtt_password(server_password)
    else:
        setting = session.get(ServerSetting, SERVER_ACCOUNT_SETTING)
        stored = setting.value if setting is not None else {}
        if rotate_server_password or stored.get("username") != server_username or not stored.get("hash"):
            generated = generate_mqtt_password()
            server_hash = hash_mqtt_password(generated)
            value = {"username": server_username, "hash": server_hash}
            if setting is None:
                session.add(ServerSetting(key=SERVER_ACCOUNT_SETTING, value=value))
            else:
                setting.value = value
                setting.updated_at = utcnow()
        else:
            server_hash = str(stored["hash"])
    devices = list_devices(session)
    with_credentials = [d for d in devices if d.mqtt_password_hash]
    if any(d.id == server_username for d in devices):
        raise Conflict(f"a device is named {server_username!r}, the server's MQTT account")
    accounts = [MqttAccount(server_username, server_hash)]
    accounts += [MqttAccount(d.id, str(d.mqtt_password_hash)) for d in with_credentials]
    return CredentialsExport(
        password_file=password_file_text(accounts),
        acl_file=acl_text([DeviceGrant(d.id, d.fleet) for d in with_credentials], server_username),
        server_username=server_username,
        server_password=generated,
        devices=len(with_credentials),
        devices_without_credentials=tuple(d.id for d in devices if not d.mqtt_password_hash),
    )


# --- helpers -----------------------------------------------------------------------------------


def _check_ids(device_id: str, fleet: str) -> None:
    if not is_device_id(device_id):
        raise Invalid(
            f"device id {device_id!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not is_fleet_name(fleet):
        raise Invalid(f"fleet {fleet!r} must be 1-64 letters, digits, '.', '_' or '-'")


def _checked_tags(tags: Mapping[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        try:
            check_tag(key, value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return dict(tags)


def _flush_new_device(session: Session, device_id: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"device {device_id!r} is already registered") from None
