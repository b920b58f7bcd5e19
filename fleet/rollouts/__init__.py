"""Staged OTA rollouts: waves, gates on live telemetry, automatic rollback.

``gates`` is the pure decision logic; the controller, API and storage build on it.
"""

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

__all__ = [
    "CohortStats",
    "Decision",
    "GateAction",
    "GateConfig",
    "GateResult",
    "Snapshot",
    "Verdict",
    "evaluate_gates",
]
