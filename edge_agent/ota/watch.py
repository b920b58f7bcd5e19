"""The watch window after a switch: is the new version at least as good as the one it replaced?

``WatchObserver`` sits on the inference engine (``engine.add_observer``) and keeps, for every
model version, its recent requests: the *baseline* of the version being replaced is what it did
just before the switch. After the switch, ``begin`` opens a fresh window for the new version,
and ``judge`` (pure) compares the window with the baseline:

- error rate: requests that failed for the model's sake (a client's malformed request, or one
  naming a version that is not loaded, is not the model's fault) against the baseline's rate,
  judged once ``min_requests`` arrived, and at once, without waiting for the window to end;
- p95 latency against the baseline's p95, judged at the end of the window, when both sides
  have ``min_latency_samples`` successful requests.

The window ends after ``window_s`` seconds, or earlier once ``window_requests`` requests were
seen (when that is set). A device without traffic therefore commits after ``window_s``: nothing
went wrong. Crashes are the other criterion: an agent that restarts while watching rolls back
(see ``states.resume_action``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

CLIENT_FAULTS = frozenset({"INVALID_ARGUMENT", "NOT_FOUND"})
"""Statuses that say the request was wrong, not the model: they do not count as errors."""


@dataclass(frozen=True)
class WatchPolicy:
    window_s: float = 60.0
    window_requests: int = 0
    """When above 0, the window may close before ``window_s`` once this many requests arrived."""
    min_requests: int = 20
    max_error_rate_increase: float = 0.05
    """The new error rate may exceed the baseline's by this much (0.05: five percentage points)."""
    max_latency_ratio: float = 2.0
    min_latency_samples: int = 20
    check_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.window_s < 0 or self.window_requests < 0 or self.min_requests < 1:
            raise ValueError("the watch window must not be negative and min_requests must be at least 1")
        if self.max_latency_ratio <= 0 or self.check_interval_s <= 0 or self.min_latency_samples < 1:
            raise ValueError("the latency ratio, check interval and latency samples must be positive")


@dataclass(frozen=True)
class WindowStats:
    requests: int = 0
    errors: int = 0
    latencies_s: tuple[float, ...] = field(default=(), repr=False)
    """Successful requests' latencies."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def p95_s(self) -> float | None:
        return p95(self.latencies_s)

    def figures(self) -> dict[str, Any]:
        p95_s = self.p95_s
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p95_ms": None if p95_s is None else round(p95_s * 1000, 3),
            "latency_samples": len(self.latencies_s),
        }


def p95(values: tuple[float, ...] | list[float]) -> float | None:
    """The 95th percentile, nearest-rank (a value that was actually observed)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


Decision = Literal["continue", "commit", "roll_back"]


@dataclass(frozen=True)
class WatchVerdict:
    decision: Decision
    reason: str
    figures: dict[str, Any]


def judge(
    window: WindowStats, baseline: WindowStats | None, policy: WatchPolicy, *, elapsed_s: float
) -> WatchVerdict:
    """Decide on a watch window so far. Pure."""
    figures: dict[str, Any] = {
        "elapsed_s": round(elapsed_s, 3),
        "window": window.figures(),
        "baseline": baseline.figures() if baseline is not None else None,
        "policy": {
            "window_s": policy.window_s,
            "window_requests": policy.window_requests,
            "max_error_rate_increase": policy.max_error_rate_increase,
            "max_latency_ratio": policy.max_latency_ratio,
        },
    }
    rate = window.error_rate
    if window.requests >= policy.min_requests and rate is not None:
        base = (
            baseline.error_rate if baseline is not None and baseline.requests >= policy.min_requests else None
        )
        allowed = (base or 0.0) + policy.max_error_rate_increase
        if rate > allowed:
            before = f"{base:.1%} before" if base is not None else "no baseline"
            return WatchVerdict(
                "roll_back",
                f"error rate {rate:.1%} over {window.requests} requests ({before}; allowed {allowed:.1%})",
                figures,
            )
    over = elapsed_s >= policy.window_s or (
        policy.window_requests > 0 and window.requests >= policy.window_requests
    )
    if not over:
        return WatchVerdict("continue", "watching", figures)
    new_p95, old_p95 = window.p95_s, baseline.p95_s if baseline is not None else None
    enough = (
        baseline is not None
        and len(window.latencies_s) >= policy.min_latency_samples
        and len(baseline.latencies_s) >= policy.min_latency_samples
    )
    if enough and new_p95 is not None and old_p95 is not None and old_p95 > 0:
        ratio = new_p95 / old_p95
        figures["p95_ratio"] = round(ratio, 3)
        if ratio > policy.max_latency_ratio:
            return WatchVerdict(
                "roll_back",
                f"p95 latency {new_p95 * 1000:.2f} ms is {ratio:.1f}x the previous version's "
                f"{old_p95 * 1000:.2f} ms (allowed {policy.max_latency_ratio:g}x)",
                figures,
            )
    return WatchVerdict(
        "commit",
        f"the watch window passed ({window.requests} requests, {window.errors} errors)",
        figures,
    )


class _Recent:
    """One version's last ``size`` requests: (failed for the model's sake, latency or None)."""

    def __init__(self, size: int) -> None:
        self.outcomes: deque[tuple[bool, float | None]] = deque(maxlen=size)

    def stats(self) -> WindowStats:
        outcomes = list(self.outcomes)
        return WindowStats(
            requests=len(outcomes),
            errors=sum(1 for failed, _ in outcomes if failed),
            latencies_s=tuple(latency for failed, latency in outcomes if latency is not None),
        )


class WatchObserver:
    """Recent requests per model version, and the open watch windows. Cheap and thread-safe."""

    def __init__(self, history: int = 1000, window_limit: int = 100_000) -> None:
        self._history = history
        self._window_limit = window_limit
        self._lock = threading.Lock()
        self._recent: dict[tuple[str, str], _Recent] = {}
        self._windows: dict[tuple[str, str], _Recent] = {}

    def on_inference(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        status: str,
        latency_s: float,
        queue_s: float,
        batch_size: int,
    ) -> None:
        if status in CLIENT_FAULTS:
            return
        outcome = (status != "OK", latency_s if status == "OK" else None)
        key = (model, version)
        with self._lock:
            recent = self._recent.get(key)
            if recent is None:
                recent = self._recent[key] = _Recent(self._history)
            recent.outcomes.append(outcome)
            window = self._windows.get(key)
            if window is not None:
                window.outcomes.append(outcome)

    def recent(self, model: str, version: str) -> WindowStats:
        """The version's last requests (the baseline of a version about to be replaced)."""
        with self._lock:
            recent = self._recent.get((model, version))
            return recent.stats() if recent is not None else WindowStats()

    def begin(self, model: str, version: str) -> None:
        """Open a fresh watch window for ``version``."""
        with self._lock:
            self._windows[(model, version)] = _Recent(self._window_limit)

    def window(self, model: str, version: str) -> WindowStats:
        with self._lock:
            window = self._windows.get((model, version))
            return window.stats() if window is not None else WindowStats()

    def end(self, model: str, version: str) -> None:
        with self._lock:
            self._windows.pop((model, version), None)
