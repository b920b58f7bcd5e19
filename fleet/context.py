"""Everything a request handler needs, built once at start and shared by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleet.broker import BrokerLink
from fleet.config import ServerConfig
from fleet.db.session import Database
from fleet.db.types import utcnow
from fleet.metrics import ServerMetrics
from fleet.registry.store import BundleStore

if TYPE_CHECKING:
    from fleet.drift.monitor import DriftMonitor
    from fleet.drift.service import DriftService
    from fleet.ingest.consumer import MqttIngest
    from fleet.rollouts.controller import RolloutController
    from fleet.rollouts.desired import DesiredPublisher


@dataclass
class ServerContext:
    config: ServerConfig
    db: Database
    store: BundleStore
    trusted_keys: list[Ed25519PublicKey]
    metrics: ServerMetrics
    broker: BrokerLink | None = None
    started_at: datetime = field(default_factory=utcnow)
    drift: DriftService | None = None  # drift reports and evaluations (fleet.server builds it)
    drift_monitor: DriftMonitor | None = None
    ingest: MqttIngest | None = None  # running while the server serves, when MQTT ingest is on
    rollouts: RolloutController | None = None  # steps rollouts while the server serves
    desired: DesiredPublisher | None = None  # publishes devices' desired states (with the ingest)
