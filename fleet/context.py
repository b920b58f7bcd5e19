"""Everything a request handler needs, built once at start and shared by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleet.broker import BrokerLink
from fleet.config import ServerConfig
from fleet.db.session import Database
from fleet.db.types import utcnow
from fleet.metrics import ServerMetrics
from fleet.registry.store import BundleStore


@dataclass
class ServerContext:
    config: ServerConfig
    db: Database
    store: BundleStore
    trusted_keys: list[Ed25519PublicKey]
    metrics: ServerMetrics
    broker: BrokerLink | None = None
    started_at: datetime = field(default_factory=utcnow)
