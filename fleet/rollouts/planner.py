"""From targeted devices to waves: a canary, then growing cumulative waves. Pure.

The order is deterministic: the same devices and the same rollout id give the same plan. Devices
online when the rollout is created come first, so the canary is made of devices that can answer;
within each group the order is a hash of the rollout id and the device id, so successive
rollouts spread the canary's risk over the fleet instead of always updating the same devices
first.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.rollouts.spec import Canary


@dataclass(frozen=True)
class Candidate:
    """A targeted device, as the planner needs to see it."""

    device_id: str
    online: bool


@dataclass(frozen=True)
class Placement:
    device_id: str
    wave: int  # 0 is the canary
    position: int  # the device's place in the rollout's order


def wave_sizes(total: int, canary: Canary, waves: Sequence[float]) -> list[int]:
    """Cumulative device counts per wave, the canary first; waves that add nobody are dropped.

    A wave of ``p`` % covers ``ceil(p% of total)`` devices in all; the last wave covers all.
    """
    if total <= 0:
        return []
    sizes = [canary.size(total)]
    for percent in waves:
        size = min(total, max(1, math.ceil(total * percent / 100 - 1e-9)))
        if size > sizes[-1]:
            sizes.append(size)
    if sizes[-1] < total:
        sizes.append(total)
    return sizes


def order_devices(candidates: Sequence[Candidate], seed: str) -> list[Candidate]:
    """Online devices first, then a stable pseudo-random order keyed by ``seed`` (the rollout id)."""

    def key(candidate: Candidate) -> tuple[bool, str, str]:
        digest = hashlib.sha256(f"{seed}\0{candidate.device_id}".encode()).hexdigest()
        return (not candidate.online, digest, candidate.device_id)

    return sorted(candidates, key=key)


def plan_waves(
    candidates: Sequence[Candidate], canary: Canary, waves: Sequence[float], seed: str
) -> tuple[list[int], list[Placement]]:
    """The cumulative wave sizes and each device's wave and position."""
    ordered = order_devices(candidates, seed)
    sizes = wave_sizes(len(ordered), canary, waves)
    placements = []
    wave = 0
    for position, candidate in enumerate(ordered):
        while position >= sizes[wave]:
            wave += 1
        placements.append(Placement(candidate.device_id, wave, position))
    return sizes, placements


def wave_label(index: int) -> str:
    return "canary" if index == 0 else f"wave {index}"
