"""Reconnect delays: exponential backoff with full jitter.

When a broker restarts, every device of a fleet loses its connection at the same instant. With
fixed or merely exponential delays they would all come back in the same few milliseconds, again
and again (a thundering herd that can knock the broker over once more). Full jitter draws each
delay uniformly from ``[0, min(cap, base * 2**attempt)]``, which spreads a thousand devices evenly
over the whole interval from the first retry on (see the AWS Architecture Blog, "Exponential
Backoff And Jitter").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def backoff_ceiling(attempt: int, *, base_s: float, cap_s: float) -> float:
    """The largest delay of retry number ``attempt`` (0 for the first retry)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base_s <= 0 or cap_s < base_s:
        raise ValueError(f"need 0 < base_s <= cap_s, got base_s={base_s} cap_s={cap_s}")
    # min() before the power would overflow float for a device that retried for days.
    return min(cap_s, base_s * 2.0 ** min(attempt, 64))


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in ``[0, backoff_ceiling(attempt)]``."""
    return rng.uniform(0.0, backoff_ceiling(attempt, base_s=base_s, cap_s=cap_s))


@dataclass
class Backoff:
    """A device's retry schedule: ``next_delay`` grows the attempt count, ``reset`` after a success.

    Each device seeds its own generator from the OS, so no two devices share a schedule.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        backoff_ceiling(0, base_s=self.base_s, cap_s=self.cap_s)  # validates the settings

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, base_s=self.base_s, cap_s=self.cap_s, rng=self.rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
