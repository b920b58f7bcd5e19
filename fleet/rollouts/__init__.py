"""Staged OTA rollouts: waves, gates on live telemetry, automatic rollback (docs/rollouts.md).

Inside out:

- pure: ``gates`` (a telemetry snapshot to proceed, wait, pause or abort), ``spec`` (targets,
  strategies, durations and gate overrides as operators write them), ``planner`` (devices to
  waves, in a deterministic order), ``tracking`` (each device's progress from its OTA reports),
  ``figures`` (requests, errors, p95 and output drift of a cohort), ``running`` (the version a
  device runs, from its last status);
- storage: ``models`` (the tables, migrations 0003 and 0004), ``desired`` (each device's desired state, and
  the MQTT publisher that sends it retained and answers births), ``snapshot`` (the cohorts'
  telemetry out of the database), ``locking`` (one writer per rollout);
- behaviour: ``transitions`` (start a wave, pause, resume, complete, abort), ``controller`` (the
  loop), ``service`` (creating rollouts, an operator's actions), ``views`` and ``schemas`` (the
  REST contract, light enough for the CLI), ``runtime`` (start and stop with the server).

The gate names are imported eagerly (pydantic only); the rest lazily, so ``fleet.rollouts.schemas``
and ``fleet.rollouts.spec`` stay light for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fleet.rollouts.gates import (
    CohortStats,
    Decision,
    GateAction,
    GateConfig,
    GateResult,
    Snapshot,
    Verdict,
    evaluate_gates,
)

if TYPE_CHECKING:
    from fleet.rollouts.controller import ControllerSettings, RolloutController, StepOutcome
    from fleet.rollouts.desired import DesiredPublisher, set_desired_models
    from fleet.rollouts.planner import Candidate, Placement, order_devices, plan_waves, wave_sizes
    from fleet.rollouts.service import RolloutRefused, act, create_rollout
    from fleet.rollouts.snapshot import SnapshotSettings
    from fleet.rollouts.spec import (
        Canary,
        SpecError,
        TargetSelector,
        parse_canary,
        parse_duration,
        parse_gate_overrides,
        parse_target,
        parse_waves,
    )
    from fleet.rollouts.tracking import DeviceState, OtaReport, Track

_EXPORTS = {
    "ControllerSettings": "fleet.rollouts.controller",
    "RolloutController": "fleet.rollouts.controller",
    "StepOutcome": "fleet.rollouts.controller",
    "DesiredPublisher": "fleet.rollouts.desired",
    "set_desired_models": "fleet.rollouts.desired",
    "Candidate": "fleet.rollouts.planner",
    "Placement": "fleet.rollouts.planner",
    "order_devices": "fleet.rollouts.planner",
    "plan_waves": "fleet.rollouts.planner",
    "wave_sizes": "fleet.rollouts.planner",
    "RolloutRefused": "fleet.rollouts.service",
    "act": "fleet.rollouts.service",
    "create_rollout": "fleet.rollouts.service",
    "SnapshotSettings": "fleet.rollouts.snapshot",
    "Canary": "fleet.rollouts.spec",
    "SpecError": "fleet.rollouts.spec",
    "TargetSelector": "fleet.rollouts.spec",
    "parse_canary": "fleet.rollouts.spec",
    "parse_duration": "fleet.rollouts.spec",
    "parse_gate_overrides": "fleet.rollouts.spec",
    "parse_target": "fleet.rollouts.spec",
    "parse_waves": "fleet.rollouts.spec",
    "DeviceState": "fleet.rollouts.tracking",
    "OtaReport": "fleet.rollouts.tracking",
    "Track": "fleet.rollouts.tracking",
}

__all__ = [
    "Canary",
    "Candidate",
    "CohortStats",
    "ControllerSettings",
    "Decision",
    "DesiredPublisher",
    "DeviceState",
    "GateAction",
    "GateConfig",
    "GateResult",
    "OtaReport",
    "Placement",
    "RolloutController",
    "RolloutRefused",
    "Snapshot",
    "SnapshotSettings",
    "SpecError",
    "StepOutcome",
    "TargetSelector",
    "Track",
    "Verdict",
    "act",
    "create_rollout",
    "evaluate_gates",
    "order_devices",
    "parse_canary",
    "parse_duration",
    "parse_gate_overrides",
    "parse_target",
    "parse_waves",
    "plan_waves",
    "set_desired_models",
    "wave_sizes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet.rollouts' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
