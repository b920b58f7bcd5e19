"""The figures a cohort's telemetry adds up to: requests, errors, p95 latency, output drift. Pure.

- Traffic: devices send one ``MetricsPayload`` per interval with, per (model, version), the
  requests, the errors by gRPC code and a fixed-bucket latency histogram. Counts add up, and the
  histograms add bucket by bucket, so the cohort's p95 comes from the sum (a mean of per-device
  p95s would mean nothing). A client's malformed request (``INVALID_ARGUMENT``) or one naming an
  unloaded version (``NOT_FOUND``) is the client's fault: it counts neither as a request nor as an
  error, as in the device's own watch window.
- Output drift: drift windows counted into the bundle's frozen bins add up per reference; each
  output feature's Jensen-Shannon distance to the reference counts is taken, the worst output
  feature stands for the window, and references (bundles of different profiles) are averaged by
  their sample counts. Too few samples give no figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.stats import DriftWindow, ReferenceStats, jensen_shannon

CLIENT_ERRORS = frozenset({"INVALID_ARGUMENT", "NOT_FOUND"})


@dataclass
class Traffic:
    """Metrics of one cohort for one model, added up over a time window."""

    devices: set[str] = field(default_factory=set)
    requests: int = 0
    errors: int = 0
    bounds_ms: tuple[float, ...] | None = None
    counts: list[int] | None = None
    skipped_histograms: int = 0  # histograms with other bucket bounds (an older agent)

    def add(self, device_id: str, entry: Mapping[str, Any]) -> None:
        """One ``ModelMetrics`` entry (as JSON) of one device."""
        self.devices.add(device_id)
        errors = entry.get("errors") or {}
        client = sum(int(n) for code, n in errors.items() if code in CLIENT_ERRORS)
        self.requests += max(0, int(entry.get("requests") or 0) - client)
        self.errors += sum(int(n) for code, n in errors.items() if code not in CLIENT_ERRORS)
        latency = entry.get("latency") or {}
        bounds = tuple(float(b) for b in latency.get("bucket_bounds_ms") or ())
        counts = [int(c) for c in latency.get("bucket_counts") or ()]
        if not bounds or len(counts) != len(bounds) + 1:
            return
        if self.bounds_ms is None or self.counts is None:
            self.bounds_ms, self.counts = bounds, counts
        elif bounds == self.bounds_ms:
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        else:
            self.skipped_histograms += 1

    @property
    def p95_ms(self) -> float | None:
        if self.bounds_ms is None or self.counts is None:
            return None
        return quantile(self.bounds_ms, self.counts, 0.95)


def quantile(bounds_ms: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram whose bucket ``i`` spans ``(bounds[i-1], bounds[i]]``,
    interpolated linearly inside its bucket (the agent's rule); the overflow bucket is read as its
    lower bound. None for an empty histogram."""
    if len(counts) != len(bounds_ms) + 1:
        raise ValueError(f"{len(bounds_ms)} bounds need {len(bounds_ms) + 1} counts, got {len(counts)}")
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for index, count in enumerate(counts):
        if count == 0 or cumulative + count < rank:
            cumulative += count
            continue
        lower = 0.0 if index == 0 else float(bounds_ms[index - 1])
        if index >= len(bounds_ms):
            return lower
        upper = float(bounds_ms[index])
        return lower + (upper - lower) * max(0.0, rank - cumulative) / count
    return float(bounds_ms[-1])  # pragma: no cover - rank <= total always lands in a bucket


@dataclass(frozen=True)
class OutputDrift:
    value: float | None  # None: too few samples, or no reference to compare with
    samples: int
    features: dict[str, float]  # per output feature, of the largest reference


def output_drift(
    windows: Mapping[str, DriftWindow], references: Mapping[str, ReferenceStats], *, min_samples: int
) -> OutputDrift:
    """Jensen-Shannon distance of the windows' output features to their references' counts."""
    weighted = 0.0
    weight = 0
    shown: dict[str, float] = {}
    shown_samples = -1
    for fingerprint, window in windows.items():
        reference = references.get(fingerprint)
        if reference is None or window.samples <= 0:
            continue
        distances = {
            name: jensen_shannon(feature.counts, window.features[name].counts)
            for name, feature in reference.features.items()
            if feature.kind == "output" and _comparable(feature.counts, window, name)
        }
        if not distances:
            continue
        weighted += max(distances.values()) * window.samples
        weight += window.samples
        if window.samples > shown_samples:
            shown, shown_samples = distances, window.samples
    if weight == 0 or weight < min_samples:
        return OutputDrift(None, weight, shown)
    return OutputDrift(weighted / weight, weight, shown)


def _comparable(reference_counts: Any, window: DriftWindow, name: str) -> bool:
    counts = window.features.get(name)
    return counts is not None and counts.total > 0 and counts.counts.shape == reference_counts.shape
