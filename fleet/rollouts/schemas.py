"""The REST contract of ``/api/v1/rollouts``: requests and responses. Only pydantic: the CLI imports it.

Targets, strategies, durations and gate overrides travel as the operator writes them (``"1"``,
``"10%"``, ``"profile=raspberry-pi-5,tag=site:a"``); the server parses them with
``fleet.rollouts.spec``, the same functions the CLI uses to check them first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RolloutStateName = Literal["running", "paused", "completed", "aborted"]
Verdict = Literal["proceed", "wait", "pause", "abort"]
WaveEndHow = Literal["passed", "promoted", "aborted"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class RolloutCreate(_Body):
    model: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    target: str = Field(
        default="all", max_length=1024, description="profile=P,fleet=F,tag=KEY:VALUE,device=ID; or all"
    )
    canary: str = Field(default="1", max_length=16, description="Devices (1) or a percentage (10%).")
    waves: list[str] = Field(
        default_factory=lambda: ["10%", "50%", "100%"], description="Cumulative percentages."
    )
    bake_s: float = Field(
        default=60.0, ge=0, description="How long each wave runs committed before it is judged."
    )
    device_timeout_s: float = Field(default=600.0, gt=0, description="No progress for this long: timed out.")
    gates: dict[str, float] = Field(default_factory=dict, description="Overrides of the gate thresholds.")
    on_failure: Literal["pause", "abort"] = "abort"
    rollback: bool = Field(default=False, description="Allow a version older than the devices run.")


class RolloutAction(_Body):
    reason: str | None = Field(default=None, max_length=512)


class GateInfo(_Out):
    name: str
    passed: bool | None
    value: float | None
    threshold: float
    detail: str
    against: str | None = Field(
        default=None,
        description="What the canary was compared with: control (devices still on the old version), "
        "baseline (the same devices on their old version, before their wave), zero (the error rate, "
        "with neither), 'baseline and control' (the latency gate, per hardware profile); null when "
        "the gate compared nothing (it waits for data, or had nothing to compare with).",
    )


class DecisionInfo(_Out):
    """The last gate evaluation, with the figures behind it."""

    at: datetime
    wave: int
    verdict: Verdict
    reason: str
    gates: list[GateInfo] = Field(default_factory=list)
    figures: dict[str, Any] = Field(default_factory=dict)


class WaveEnd(_Out):
    """How a wave ended: it passed its gates, an operator promoted it past them, or the rollout
    aborted during it."""

    how: WaveEndHow
    at: datetime
    by: str = Field(description="Who: the operator's token name, or rollout-controller.")
    reason: str | None = Field(
        default=None, description="The operator's --reason; for the controller, its decision's reason."
    )
    decision: DecisionInfo | None = Field(
        default=None,
        description="The gate evaluation that stood then: for passed, the one that let the wave "
        "proceed; for promoted, the one the operator overrode (it may still have been waiting).",
    )


class Promotion(_Out):
    """A wave an operator promoted: it did not pass its gates."""

    wave: int
    label: str
    by: str
    reason: str | None = None
    at: datetime


class WaveInfo(_Out):
    index: int
    label: str
    size: int = Field(description="Devices in this wave.")
    cumulative: int = Field(description="Devices in this wave and the ones before.")
    states: dict[str, int] = Field(description="Devices of this wave per state.")
    status: Literal["pending", "current", "done"]
    ended: WaveEnd | None = Field(default=None, description="How the wave ended; null while it runs.")


class RolloutDeviceInfo(_Out):
    device_id: str
    wave: int
    state: str
    reason: str | None
    online: bool
    running: str | None = Field(description="The version the device last reported running.")
    previous_version: str | None
    assigned_at: datetime | None
    state_at: datetime | None


class RolloutInfo(_Out):
    id: str
    model: str
    version: str
    target: str
    state: RolloutStateName
    settled: bool
    wave: int = Field(description="The current wave (0 is the canary); -1 before the canary starts.")
    waves: int
    devices: int
    states: dict[str, int] = Field(description="Devices per state.")
    reason: str | None
    promotions: list[Promotion] = Field(
        default_factory=list,
        description="Waves an operator promoted past their gates (who, why, when); empty when every "
        "finished wave passed its gates.",
    )
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    finished_at: datetime | None


class RolloutDetail(RolloutInfo):
    canary: str
    wave_percents: list[float]
    bake_s: float
    device_timeout_s: float
    gates: dict[str, Any]
    allow_rollback: bool
    wave_started_at: datetime | None
    window_started_at: datetime | None
    wave_committed_at: datetime | None
    wave_list: list[WaveInfo]
    device_list: list[RolloutDeviceInfo]
    decision: DecisionInfo | None


class DesiredStateInfo(_Out):
    device_id: str
    revision: int
    models: dict[str, Any]
    updated_at: datetime
    published_revision: int | None
    published_at: datetime | None
