"""The typed state that the passes read and write.

``ConversionContext`` holds what every profile shares (the source, the data, the fp32 reference,
the signing key, cached base exports); ``TargetState`` holds one profile's run (its plan, the
attempt in flight, the records of every attempt). The passes fill them in, in order; reading a
field before the pass that fills it has run is a programming error and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.artifacts import Artifact
from converter.benchmark import BenchmarkResult
from converter.data import Dataset, samples_first
from converter.metrics import ValidationMetrics, Verdict
from converter.planning import Attempt, TargetPlan
from converter.progress import NullProgress, Progress
from converter.report import AttemptRecord, BundleRecord
from converter.sources import SourceModel
from hw_profiles.schema import HardwareProfile


@dataclass
class AttemptState:
    """One attempt in flight: what was built, how it measured, what was decided."""

    attempt: Attempt
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    artifact: Artifact | None = None
    metrics: ValidationMetrics | None = None
    verdict: Verdict | None = None
    outputs: dict[str, np.ndarray] | None = None  # the artifact's outputs on the evaluation set
    provider: str | None = None
    runtime_notes: list[str] = field(default_factory=list)
    benchmark: BenchmarkResult | None = None
    error: dict[str, Any] | None = None
    record: AttemptRecord | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed

    @property
    def seconds(self) -> float:
        """How long building and validating took (until now, while it runs)."""
        return (self.finished or time.perf_counter()) - self.started


@dataclass
class TargetState:
    profile: HardwareProfile
    plan: TargetPlan | None = None
    attempts: list[AttemptState] = field(default_factory=list)
    chosen: AttemptState | None = None
    degraded: bool = False
    bundle: BundleRecord | None = None

    @property
    def current(self) -> AttemptState:
        if not self.attempts:
            raise RuntimeError("no attempt has started for this target")
        return self.attempts[-1]

    def require_plan(self) -> TargetPlan:
        if self.plan is None:
            raise RuntimeError(f"profile {self.profile.name} has not been planned (run PlanPass first)")
        return self.plan


@dataclass
class ConversionContext:
    out_dir: Path
    work_dir: Path
    progress: Progress = field(default_factory=NullProgress)
    source: SourceModel | None = None
    calibration: Dataset | None = None
    evaluation: Dataset | None = None
    reference: dict[str, np.ndarray] | None = None  # fp32 outputs on the evaluation set
    targets: list[TargetState] = field(default_factory=list)
    target: TargetState | None = None  # the one the per-target passes work on
    base_exports: dict[tuple[str, int | None], Path] = field(default_factory=dict)

    def require_source(self) -> SourceModel:
        if self.source is None:
            raise RuntimeError("the source is not loaded (run LoadPass first)")
        return self.source

    def require_data(self) -> tuple[Dataset, Dataset, dict[str, np.ndarray]]:
        if self.calibration is None or self.evaluation is None or self.reference is None:
            raise RuntimeError("the data is not loaded (run LoadPass first)")
        return self.calibration, self.evaluation, self.reference

    def reference_samples_first(self) -> dict[str, np.ndarray]:
        """The fp32 outputs with every output's samples on axis 0, as the metrics read them."""
        _, _, reference = self.require_data()
        return samples_first(reference, self.require_source().outputs)

    def require_target(self) -> TargetState:
        if self.target is None:
            raise RuntimeError("no target is selected: per-target passes run inside the workflow loop")
        return self.target
