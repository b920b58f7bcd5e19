"""Count, mean, variance, min and max of a stream, mergeable in any order (Chan et al.)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Moments of the finite values seen so far. ``m2`` is the sum of squared deviations from the mean."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """Moments of ``values`` (expected finite; two passes, so the variance is numerically stable)."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size == 0:
            return cls()
        mean = float(flat.mean())
        return cls(
            count=int(flat.size),
            mean=mean,
            m2=float(np.square(flat - mean).sum()),
            minimum=float(flat.min()),
            maximum=float(flat.max()),
        )

    @property
    def variance(self) -> float:
        """Population variance, ``m2 / count`` (0 when empty)."""
        return self.m2 / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def merge(self, other: Moments) -> Moments:
        """Chan's parallel update: ``delta = mean_b - mean_a``, ``n = n_a + n_b``,
        ``mean = mean_a + delta * n_b / n``, ``m2 = m2_a + m2_b + delta² * n_a * n_b / n``."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count=n,
            mean=self.mean + delta * other.count / n,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``min``/``max`` are ``None`` while nothing was seen (JSON has no infinity)."""
        empty = self.count == 0
        return {
            "count": self.count,
            "mean": self.mean,
            "variance": self.variance,
            "min": None if empty else self.minimum,
            "max": None if empty else self.maximum,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        count = int(data["count"])
        if count < 0:
            raise ValueError(f"moments: count must be >= 0, got {count}")
        if count == 0:
            return cls()
        variance = float(data["variance"])
        if variance < 0:
            raise ValueError(f"moments: variance must be >= 0, got {variance}")
        return cls(
            count=count,
            mean=float(data["mean"]),
            m2=variance * count,
            minimum=float(data["min"]),
            maximum=float(data["max"]),
        )
