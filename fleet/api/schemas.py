"""The REST contract: every request and response body of ``/api/v1``, in one module.

The server's routers and the operator CLI (``edgefleet/cli/_client.py``) both import these
models, so the two can never disagree on a field. Only pydantic is imported here: the CLI stays
light.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet.devices.naming import DEFAULT_FLEET, DEVICE_ID_PATTERN, FLEET_PATTERN, PROFILE_PATTERN

API_PREFIX = "/api/v1"
RoleName = Literal["admin", "operator", "viewer"]


class _Body(BaseModel):
    """Requests refuse unknown fields: a typo is an error, not a silently ignored option."""

    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    """Responses read from ORM rows; new server fields do not break an older CLI."""

    model_config = ConfigDict(from_attributes=True, extra="ignore")


class ErrorBody(_Out):
    """Every error response: a stable code, a message, and what to do next."""

    error: str
    message: str
    hint: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


# --- health -------------------------------------------------------------------------------------


class Health(_Out):
    status: Literal["ok"] = "ok"
    version: str


class ReadinessCheck(_Out):
    name: str
    ok: bool
    detail: str


class Readiness(_Out):
    ready: bool
    checks: list[ReadinessCheck]


# --- tokens and audit ---------------------------------------------------------------------------


class TokenCreate(_Body):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
    role: RoleName


class TokenInfo(_Out):
    id: int
    name: str
    role: RoleName
    prefix: str
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenInfo):
    token: str = Field(description="The token itself. Shown once: the server keeps only its hash.")


class WhoAmI(_Out):
    name: str
    role: RoleName


class AuditRecord(_Out):
    id: int
    at: datetime
    actor: str
    actor_role: str | None
    action: str
    target: str | None
    outcome: str
    details: dict[str, Any]


# --- devices ------------------------------------------------------------------------------------


class DeviceCreate(_Body):
    id: str = Field(pattern=DEVICE_ID_PATTERN)
    fleet: str = Field(default=DEFAULT_FLEET, pattern=FLEET_PATTERN)
    profile: str | None = Field(default=None, pattern=PROFILE_PATTERN)
    tags: dict[str, str] = Field(default_factory=dict)


class DeviceInfo(_Out):
    id: str
    fleet: str
    profile: str | None
    agent_version: str | None
    models: dict[str, Any]
    online: bool
    last_seen: datetime | None
    tags: dict[str, str]
    enrollment: str
    has_credentials: bool
    latest_metrics: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class MqttCredentials(_Out):
    username: str
    password: str = Field(description="Shown once: the server keeps only its PBKDF2 hash.")
    topic_prefix: str


class DeviceCreated(_Out):
    device: DeviceInfo
    mqtt: MqttCredentials


class TagUpdate(_Body):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class EnrollmentTokenCreate(_Body):
    fleet: str = Field(default=DEFAULT_FLEET, pattern=FLEET_PATTERN)
    profile: str | None = Field(default=None, pattern=PROFILE_PATTERN)
    tags: dict[str, str] = Field(default_factory=dict)
    ttl_seconds: int = Field(default=24 * 3600, ge=1, le=30 * 24 * 3600)
    note: str | None = Field(default=None, max_length=256)


class EnrollmentTokenCreated(_Out):
    id: int
    token: str = Field(description="One-time; shown once.")
    fleet: str
    profile: str | None
    tags: dict[str, str]
    expires_at: datetime


class CredentialsExportRequest(_Body):
    rotate_server_password: bool = False


class CredentialsExport(_Out):
    """A Mosquitto password file and ACL for every device with credentials, plus the server account."""

    password_file: str
    acl_file: str
    server_username: str
    server_password: str | None = Field(
        description="Set only when this export generated the server account's password (shown once)."
    )
    devices: int
    devices_without_credentials: list[str]


# --- models and bundles -------------------------------------------------------------------------


class BundleInfo(_Out):
    sha256: str
    name: str
    version: str
    profile: str
    format: str
    precision: str
    size: int
    key_id: str
    created: datetime
    uploaded_at: datetime
    uploaded_by: str | None
    validation: dict[str, Any]
    benchmark: dict[str, Any]
    download_url: str


class BundleDetail(BundleInfo):
    manifest: dict[str, Any]


class PushResult(_Out):
    bundle: BundleInfo
    created: bool = Field(description="False when the identical bundle was already registered.")


class ModelSummary(_Out):
    name: str
    latest_version: str
    versions: list[str]
    profiles: list[str]
    formats: list[str]
    precisions: list[str]
    bundles: int


class ModelVersionSummary(_Out):
    version: str
    bundles: list[BundleInfo]


class ModelDetail(_Out):
    name: str
    latest_version: str
    versions: list[ModelVersionSummary]


class ModelVersionDetail(_Out):
    name: str
    version: str
    bundles: list[BundleDetail]


# --- drift and alerts ---------------------------------------------------------------------------

DriftLevel = Literal["insufficient", "ok", "warn", "alert"]


class DriftBreach(_Out):
    metric: str
    value: float
    threshold: float
    level: DriftLevel


class DriftFeature(_Out):
    """One feature of a cohort against its baseline; distances are None when too few samples."""

    feature: str
    tensor: str
    kind: str = Field(description="input or output")
    samples: int
    baseline_samples: int
    psi: float | None
    js: float | None = Field(description="Jensen-Shannon distance, base 2, in [0, 1]")
    wasserstein: float | None = Field(description="W1 over bin centres, in reference standard deviations")
    level: DriftLevel
    breaches: list[DriftBreach] = Field(default_factory=list)
    nonfinite: int = 0
    mean: float | None = None
    std: float | None = None
    baseline_mean: float | None = None
    baseline_std: float | None = None


class DriftReportInfo(_Out):
    """A model version's cohort over a time range, against the reference or another cohort."""

    model: str
    version: str
    cohort: str
    against: str
    reference: str = Field(description="Fingerprint of the frozen bins the windows were counted into.")
    since: datetime
    until: datetime
    devices: int
    windows: int
    samples: int
    baseline_devices: int | None
    baseline_windows: int | None
    baseline_samples: int
    level: DriftLevel
    note: str | None = None
    thresholds: dict[str, Any] = Field(default_factory=dict)
    features: list[DriftFeature] = Field(default_factory=list)


class AlertInfo(_Out):
    id: int
    created_at: datetime
    kind: str
    severity: str
    model: str | None
    version: str | None
    cohort: str | None
    against: str | None
    feature: str | None
    metric: str | None
    value: float | None
    threshold: float | None
    message: str | None
    resolved_at: datetime | None
    details: dict[str, Any] = Field(default_factory=dict)


class AlertResolve(_Body):
    note: str | None = Field(default=None, max_length=512)


class DriftEvaluation(_Out):
    evaluated_at: datetime
    reports: int
    opened: list[AlertInfo]
    resolved: list[AlertInfo]
