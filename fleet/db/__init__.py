"""The fleet database: models, engines and sessions, and migrations that run on start."""

from fleet.db.migrations import MigrationState, Upgrade, head_revision, migration_state, upgrade_to_head
from fleet.db.models import (
    Alert,
    ApiToken,
    AuditEntry,
    Base,
    Bundle,
    Device,
    DeviceEvent,
    DeviceMetrics,
    DeviceTag,
    DriftWindow,
    EnrollmentToken,
    ServerSetting,
)
from fleet.db.session import Database, create_db_engine
from fleet.db.types import UTCDateTime, utcnow

__all__ = [
    "Alert",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Bundle",
    "Database",
    "Device",
    "DeviceEvent",
    "DeviceMetrics",
    "DeviceTag",
    "DriftWindow",
    "EnrollmentToken",
    "MigrationState",
    "ServerSetting",
    "UTCDateTime",
    "Upgrade",
    "create_db_engine",
    "head_revision",
    "migration_state",
    "upgrade_to_head",
    "utcnow",
]
