"""Rollout gates: a pure function from a telemetry snapshot to proceed, wait, pause or abort.

The controller gathers, for one wave, what the devices that took the new version (the *canary*
cohort) and the devices still on the old version in the same time window (the *control* cohort)
reported, and asks ``evaluate_gates`` what to do. Nothing here touches the database, MQTT or
the clock, so every rule is tested exhaustively on its own (tests/unit/test_rollout_gates.py).

Rules (BRIEF.md §4):
- A device counts as good only once it has *committed*. Failed, rolled-back and timed-out
  devices count against the failure rate, which needs no minimum: a failed device is evidence.
- The other gates compare canary to control: the error-rate delta, the p95 latency ratio and
  the output drift delta. They judge only once ``min_reporting_devices`` canary devices have
  reported and the canary served ``min_requests``; before that the verdict is WAIT.
- Without control devices (the last wave updates everyone), the canary is compared with the
  baseline the same devices reported on the old version, when there is one.
- Latency depends on the hardware, so the p95 ratio compares like with like: per hardware
  profile, the canary devices of that profile with the control devices of that profile (or,
  when none of those reported, with the same canary devices' old-version baseline); the worst
  ratio over the profiles that have both figures is judged. No profile with both figures: the
  gate passes and says so. A snapshot without per-profile pairs (``latency_by_profile`` empty)
  is judged on the pooled cohorts, as before; callers that know the profiles must pass them.
- A new version whose bundle carries no reference statistics cannot be judged on output drift
  (``Snapshot.drift_measured`` False): that gate passes and says so, rather than waiting forever.
  Output drift is a distance to the bundle's reference that is never zero, even for the same
  distribution, so without a control or baseline figure the drift gate passes and says so too
  (the error rate is compared with zero instead: zero errors is a real baseline).
- A failed gate yields the rollout's configured action: PAUSE or ABORT.
- Each gate says what it compared the canary with (``GateResult.against``): ``control``,
  ``baseline``, ``zero`` (the error rate with neither), or None (it waits for data, or had
  nothing to compare with), so what ``rollout status`` shows beside the figures is what the
  gates used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Verdict(StrEnum):
    PROCEED = "proceed"  # every gate passed, the bake time is over, the wave has committed
    WAIT = "wait"  # nothing failed, but the wave is still baking or lacks data
    PAUSE = "pause"
    ABORT = "abort"


class GateAction(StrEnum):
    PAUSE = "pause"
    ABORT = "abort"


class GateConfig(BaseModel):
    """Thresholds; every one can be overridden per rollout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_failure_rate: float = Field(default=0.0, ge=0, le=1, description="Failed / assigned devices.")
    max_error_rate_delta: float = Field(default=0.02, ge=0, le=1, description="Canary minus control.")
    max_p95_latency_ratio: float = Field(default=1.5, gt=0, description="Canary p95 / control p95.")
    max_output_drift_delta: float = Field(default=0.1, ge=0, description="Canary minus control, JS.")
    min_reporting_devices: int = Field(default=1, ge=1)
    min_requests: int = Field(default=20, ge=0, description="Canary requests before latency/errors judge.")
    on_failure: GateAction = GateAction.ABORT


@dataclass(frozen=True)
class CohortStats:
    """What one cohort reported in the gate's time window."""

    devices: int = 0  # devices in the cohort
    reporting: int = 0  # of those, devices that sent metrics in the window
    committed: int = 0
    failed: int = 0  # failed, rolled_back or timed_out
    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None
    output_drift: float | None = None  # Jensen-Shannon of outputs against the bundle's reference

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class ProfileLatency:
    """The canary's p95 on one hardware profile, and the same profile's reference p95."""

    profile: str
    canary_p95_ms: float | None
    reference_p95_ms: float | None
    reference: str  # "control" or "baseline": where reference_p95_ms comes from

    @property
    def ratio(self) -> float | None:
        if self.canary_p95_ms is None or not self.reference_p95_ms:
            return None
        return self.canary_p95_ms / self.reference_p95_ms


@dataclass(frozen=True)
class Snapshot:
    canary: CohortStats
    control: CohortStats | None = None
    baseline: CohortStats | None = None  # the canary devices on the old version, before the update
    bake_elapsed: bool = False
    drift_measured: bool = True  # False: the new version's bundle has no reference statistics
    # Per hardware profile of the canary; empty: the latency gate compares the pooled cohorts.
    latency_by_profile: tuple[ProfileLatency, ...] = ()


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool | None  # None: not enough data to judge yet
    value: float | None
    threshold: float
    detail: str
    # "control", "baseline", "zero", None (compared with nothing); per hardware profile, the latency
    # gate may use both: "baseline and control".
    against: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
            "against": self.against,
        }


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    gates: tuple[GateResult, ...] = field(default_factory=tuple)

    @property
    def failed_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if g.passed is False)

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "gates": [g.as_dict() for g in self.gates],
        }


def evaluate_gates(snapshot: Snapshot, config: GateConfig) -> Decision:
    """Judge one wave. Pure: the same snapshot and config always give the same decision."""
    gates = (
        _failure_rate(snapshot.canary, config),
        _error_rate_delta(snapshot, config),
        _latency_ratio(snapshot, config),
        _drift_delta(snapshot, config),
    )
    failed = [g for g in gates if g.passed is False]
    if failed:
        verdict = Verdict.ABORT if config.on_failure == GateAction.ABORT else Verdict.PAUSE
        return Decision(verdict, "; ".join(f"{g.name}: {g.detail}" for g in failed), gates)
    waiting = _why_wait(snapshot, gates)
    if waiting:
        return Decision(Verdict.WAIT, waiting, gates)
    return Decision(Verdict.PROCEED, "every gate passed and the wave committed", gates)


def _why_wait(snapshot: Snapshot, gates: tuple[GateResult, ...]) -> str:
    canary = snapshot.canary
    undecided = [g.name for g in gates if g.passed is None]
    if undecided:
        return f"not enough data yet for {', '.join(undecided)}"
    if canary.committed < canary.devices:
        return f"{canary.committed}/{canary.devices} devices committed"
    if not snapshot.bake_elapsed:
        return "baking"
    return ""


def _has_enough(canary: CohortStats, config: GateConfig) -> bool:
    return canary.reporting >= config.min_reporting_devices and canary.requests >= config.min_requests


def _reference(snapshot: Snapshot) -> tuple[CohortStats | None, str]:
    """Control devices when there are any that reported, else the canary's own old-version baseline."""
    if snapshot.control is not None and snapshot.control.reporting > 0:
        return snapshot.control, "control"
    if snapshot.baseline is not None and snapshot.baseline.reporting > 0:
        return snapshot.baseline, "baseline"
    return None, ""


def _failure_rate(canary: CohortStats, config: GateConfig) -> GateResult:
    name, limit = "failure_rate", config.max_failure_rate
    if canary.devices == 0:
        return GateResult(name, None, None, limit, "no devices assigned yet")
    rate = canary.failed / canary.devices
    passed = rate <= limit
    detail = f"{canary.failed}/{canary.devices} devices failed ({rate:.0%}, limit {limit:.0%})"
    return GateResult(name, passed, rate, limit, detail)


def _error_rate_delta(snapshot: Snapshot, config: GateConfig) -> GateResult:
    name, limit, canary = "error_rate_delta", config.max_error_rate_delta, snapshot.canary
    if not _has_enough(canary, config) or canary.error_rate is None:
        return GateResult(name, None, None, limit, _not_enough(canary, config))
    reference, label = _reference(snapshot)
    reference_rate = reference.error_rate if reference is not None else None
    base = reference_rate if reference_rate is not None else 0.0
    delta = canary.error_rate - base
    against = (
        f"{label} {base:.2%}"
        if reference_rate is not None
        else "zero (no control or baseline requests to compare with)"
    )
    detail = f"canary {canary.error_rate:.2%} against {against}: delta {delta:+.2%} (limit {limit:.2%})"
    used = label if reference_rate is not None else "zero"
    return GateResult(name, delta <= limit, delta, limit, detail, used)


def _latency_ratio(snapshot: Snapshot, config: GateConfig) -> GateResult:
    """The canary's p95 over its reference's, per hardware profile when the snapshot has the
    pairs (a Raspberry Pi is slower than a Jetson whatever it runs), else over the pooled cohorts."""
    name, limit, canary = "p95_latency_ratio", config.max_p95_latency_ratio, snapshot.canary
    if not _has_enough(canary, config) or canary.p95_ms is None:
        return GateResult(name, None, None, limit, _not_enough(canary, config))
    if snapshot.latency_by_profile:
        return _latency_by_profile(snapshot.latency_by_profile, limit)
    reference, label = _reference(snapshot)
    if reference is None or not reference.p95_ms:
        return GateResult(name, True, None, limit, "no control or baseline latency to compare with")
    ratio = canary.p95_ms / reference.p95_ms
    detail = f"canary p95 {canary.p95_ms:.2f} ms / {label} {reference.p95_ms:.2f} ms = {ratio:.2f}x"
    return GateResult(name, ratio <= limit, ratio, limit, f"{detail} (limit {limit:.2f}x)", label)


def _latency_by_profile(pairs: tuple[ProfileLatency, ...], limit: float) -> GateResult:
    """The worst canary/reference ratio over the profiles that have both figures."""
    name = "p95_latency_ratio"
    ordered = sorted(pairs, key=lambda p: p.profile)
    judged = [(ratio, p) for p in ordered if (ratio := p.ratio) is not None]
    if not judged:
        canary_on = ", ".join(p.profile for p in ordered)
        detail = f"no latency on the same hardware profile to compare with (canary on {canary_on})"
        return GateResult(name, True, None, limit, detail)
    ratio, worst = max(judged, key=lambda item: item[0])
    detail = (
        f"canary p95 {worst.canary_p95_ms:.2f} ms / {worst.reference} {worst.reference_p95_ms:.2f} ms "
        f"= {ratio:.2f}x on {worst.profile} (limit {limit:.2f}x)"
    )
    others = [f"{p.profile} {r:.2f}x" for r, p in judged if p is not worst]
    others += [f"{p.profile} not compared" for p in ordered if p.ratio is None]
    if others:
        detail += f"; also {', '.join(others)}"
    used = sorted({p.reference for _, p in judged})
    return GateResult(name, ratio <= limit, ratio, limit, detail, " and ".join(used))


def _drift_delta(snapshot: Snapshot, config: GateConfig) -> GateResult:
    name, limit, canary = "output_drift_delta", config.max_output_drift_delta, snapshot.canary
    if not snapshot.drift_measured:
        detail = "not measured: the new version's bundle carries no reference statistics"
        return GateResult(name, True, None, limit, detail)
    if canary.reporting < config.min_reporting_devices or canary.output_drift is None:
        return GateResult(name, None, None, limit, _not_enough(canary, config))
    reference, label = _drift_reference(snapshot)
    if reference is None:
        # Live traffic never matches the calibration data exactly (a few hundred reference samples
        # put even identical distributions at JS 0.1 or so), so zero is no baseline for drift.
        detail = f"canary JS {canary.output_drift:.3f}; no control or baseline drift to compare with"
        return GateResult(name, True, None, limit, detail)
    delta = canary.output_drift - reference
    detail = f"canary JS {canary.output_drift:.3f} against {label} {reference:.3f}: delta {delta:+.3f}"
    return GateResult(name, delta <= limit, delta, limit, f"{detail} (limit {limit:.3f})", label)


def _drift_reference(snapshot: Snapshot) -> tuple[float | None, str]:
    """The control's output drift when it has a figure, else the canary's old-version baseline's."""
    for cohort, label in ((snapshot.control, "control"), (snapshot.baseline, "baseline")):
        if cohort is not None and cohort.output_drift is not None:
            return cohort.output_drift, label
    return None, ""


def _not_enough(canary: CohortStats, config: GateConfig) -> str:
    return (
        f"{canary.reporting}/{config.min_reporting_devices} reporting devices, "
        f"{canary.requests}/{config.min_requests} requests"
    )
