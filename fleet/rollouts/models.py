"""The rollout tables, on the fleet database's declarative ``Base`` (migrations 0003 and 0004).

Everything the controller knows lives here, so a server that restarts (or another replica)
picks a rollout up where it was: the rollout and its current wave, each device's progress, and
each device's desired state with the revision last published on MQTT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet.db.models import DEVICE_ID_LENGTH, NAME_LENGTH, Base
from fleet.db.types import JSONType, utcnow

ROLLOUT_ID_LENGTH = 32


class Rollout(Base):
    """One model version going out to the devices a target selects, wave after wave."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_state_settled", "state", "settled"),)

    id: Mapped[str] = mapped_column(String(ROLLOUT_ID_LENGTH), primary_key=True)
    model: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    version: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(1024))  # the selector, normalised (spec.TargetSelector)
    canary: Mapped[str] = mapped_column(String(16))  # "1" or "10%"
    wave_percents: Mapped[dict[str, Any]] = mapped_column()  # {"waves": [10.0, 50.0, 100.0]}
    wave_sizes: Mapped[dict[str, Any]] = mapped_column()  # {"sizes": [1, 3, 8]}: cumulative devices
    bake_s: Mapped[float] = mapped_column(Float)
    device_timeout_s: Mapped[float] = mapped_column(Float)
    gates: Mapped[dict[str, Any]] = mapped_column()  # GateConfig, on_failure included
    allow_rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16))  # running, paused, completed, aborted
    settled: Mapped[bool] = mapped_column(Boolean, default=False)  # finished, every device final
    wave: Mapped[int] = mapped_column(Integer, default=-1)  # the current wave; -1 before the canary
    wave_started_at: Mapped[datetime | None]
    window_started_at: Mapped[datetime | None]  # gates judge telemetry from here (wave start, resume)
    wave_committed_at: Mapped[datetime | None]  # when every device of the waves so far committed
    reason: Mapped[str | None] = mapped_column(Text)  # why it paused, aborted or completed
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # the last gate evaluation
    # How each finished wave ended: {"waves": [{"wave", "how", "at", "by", "actor", "reason",
    # "decision"}]}, how being passed, promoted or aborted (transitions.end_wave); migration 0004.
    wave_ends: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

    @property
    def sizes(self) -> list[int]:
        return [int(n) for n in (self.wave_sizes or {}).get("sizes", [])]

    @property
    def percents(self) -> list[float]:
        return [float(p) for p in (self.wave_percents or {}).get("waves", [])]

    @property
    def ends(self) -> list[dict[str, Any]]:
        """How the finished waves ended, in order (``wave_ends``); empty before migration 0004."""
        return [dict(end) for end in (self.wave_ends or {}).get("waves", []) if isinstance(end, dict)]


class RolloutDevice(Base):
    """One targeted device: its wave, the bundle it gets, what it ran before, and its progress."""

    __tablename__ = "rollout_devices"
    __table_args__ = (
        Index("ix_rollout_devices_rollout_id_state", "rollout_id", "state"),
        Index("ix_rollout_devices_device_id_state", "device_id", "state"),
    )

    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    profile: Mapped[str | None] = mapped_column(String(64))
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    bundle_size: Mapped[int] = mapped_column(BigInteger)
    previous_version: Mapped[str | None] = mapped_column(String(64))
    previous_sha256: Mapped[str | None] = mapped_column(String(64))
    previous_size: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # fleet.rollouts.tracking.DeviceState
    reason: Mapped[str | None] = mapped_column(Text)
    report_seq: Mapped[int | None] = mapped_column(BigInteger)  # the last OTA report applied
    assigned_at: Mapped[datetime | None]
    state_at: Mapped[datetime | None]
    progress_at: Mapped[datetime | None]  # the per-device timeout's clock


class DesiredStateRecord(Base):
    """What a device should run (``models.mqtt_contract.DesiredState``), and what was published.

    ``revision`` only grows; ``published_revision`` is the one the broker acknowledged, so a
    restart publishes what is pending and nothing else.
    """

    __tablename__ = "desired_states"

    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_LENGTH), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(BigInteger)
    models: Mapped[dict[str, Any]] = mapped_column()  # name -> DesiredModel as JSON
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_revision: Mapped[int | None] = mapped_column(BigInteger)
    published_at: Mapped[datetime | None]
