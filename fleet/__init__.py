"""The fleet server: REST API, registries, bundle downloads, MQTT ingest, drift, rollouts.

Layout (see docs/fleet-server.md):

- ``config``: what ``edgefleet server run`` was asked to do, parsed and checked (pure);
- ``db/``: SQLAlchemy models, engines and sessions, Alembic migrations run on start;
- ``auth``, ``tokens``, ``audit``: roles and API tokens, the first admin token, the audit log;
- ``devices/``: naming rules and topics, Mosquitto credentials (pure), the device registry;
- ``registry/``: content-addressed bundle store, the model catalog, HTTP byte ranges (pure);
- ``api/``: one router per resource, and ``schemas``, the REST contract the CLI imports too;
- ``ingest/``: the MQTT consumer, idempotent on (device, seq); ``drift/``: windows merged per
  cohort, distances against the bundle's reference, alerts;
- ``rollouts/``: waves, the pure gate decision (``gates``), the controller, desired state;
- ``broker``, ``metrics``, ``app``, ``server``: the embedded broker, Prometheus, the app, uvicorn.

The names below are imported lazily, so ``import fleet.api.schemas`` (the CLI does) does not pull
in FastAPI, SQLAlchemy or Alembic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.app import create_app
    from fleet.auth import Principal, Role
    from fleet.config import ServerConfig
    from fleet.context import ServerContext
    from fleet.db.session import Database
    from fleet.devices.registry import (
        DeviceFilter,
        Enrollment,
        EnrollmentRefused,
        create_enrollment_token,
        export_mqtt_credentials,
        list_devices,
        provision_device,
        redeem_enrollment,
    )
    from fleet.errors import ApiError, ConfigError, FleetError, PortInUse
    from fleet.server import PreparedServer, prepare_server, serve

_EXPORTS = {
    "create_app": "fleet.app",
    "Principal": "fleet.auth",
    "Role": "fleet.auth",
    "ServerConfig": "fleet.config",
    "ServerContext": "fleet.context",
    "Database": "fleet.db.session",
    "DeviceFilter": "fleet.devices.registry",
    "Enrollment": "fleet.devices.registry",
    "EnrollmentRefused": "fleet.devices.registry",
    "create_enrollment_token": "fleet.devices.registry",
    "export_mqtt_credentials": "fleet.devices.registry",
    "list_devices": "fleet.devices.registry",
    "provision_device": "fleet.devices.registry",
    "redeem_enrollment": "fleet.devices.registry",
    "ApiError": "fleet.errors",
    "ConfigError": "fleet.errors",
    "FleetError": "fleet.errors",
    "PortInUse": "fleet.errors",
    "PreparedServer": "fleet.server",
    "prepare_server": "fleet.server",
    "serve": "fleet.server",
}

__all__ = [
    "ApiError",
    "ConfigError",
    "Database",
    "DeviceFilter",
    "Enrollment",
    "EnrollmentRefused",
    "FleetError",
    "PortInUse",
    "PreparedServer",
    "Principal",
    "Role",
    "ServerConfig",
    "ServerContext",
    "create_app",
    "create_enrollment_token",
    "export_mqtt_credentials",
    "list_devices",
    "prepare_server",
    "provision_device",
    "redeem_enrollment",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
