"""Reconnect backoff: the ceiling grows and caps, and a thousand devices never retry in lockstep."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edge_agent.telemetry.backoff import Backoff, backoff_ceiling, backoff_delay

DEVICES = 1000


def test_ceiling_doubles_then_caps() -> None:
    ceilings = [backoff_ceiling(attempt, base_s=0.5, cap_s=30.0) for attempt in range(10)]
    assert ceilings[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert ceilings[6:] == [30.0] * 4
    assert backoff_ceiling(10_000, base_s=0.5, cap_s=30.0) == 30.0  # no float overflow after days


def test_delays_stay_within_zero_and_the_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = backoff_ceiling(attempt, base_s=1.0, cap_s=60.0)
        delays = [backoff_delay(attempt, base_s=1.0, cap_s=60.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)


def _fleet_delays(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> np.ndarray:
    # Each device has its own generator, as each agent process has (seeded by the OS there).
    return np.array(
        [
            backoff_delay(attempt, base_s=base_s, cap_s=cap_s, rng=random.Random(device))
            for device in range(DEVICES)
        ]
    )


@pytest.mark.parametrize("attempt", [0, 1, 3, 6, 12])
def test_a_fleet_spreads_evenly_over_the_whole_interval(attempt: int) -> None:
    delays = _fleet_delays(attempt)
    ceiling = backoff_ceiling(attempt, base_s=1.0, cap_s=60.0)
    shares = np.histogram(delays, bins=10, range=(0.0, ceiling))[0] / DEVICES
    # Uniform means 10% per tenth of the interval; 5% to 15% is more than 5 standard deviations.
    assert shares.min() >= 0.05 and shares.max() <= 0.15


@pytest.mark.parametrize("attempt", [0, 4, 8])
def test_no_crowd_reconnects_in_the_same_instant(attempt: int) -> None:
    delays = np.sort(_fleet_delays(attempt))
    ceiling = backoff_ceiling(attempt, base_s=1.0, cap_s=60.0)
    window = ceiling / 100  # 1% of the interval: about 10 devices expected on average
    # The most devices that land inside any such window (a sliding count over the sorted delays).
    crowd = int(np.max(np.searchsorted(delays, delays + window, side="right") - np.arange(DEVICES)))
    assert crowd <= 30  # lockstep would be all 1000


def test_two_devices_do_not_share_a_schedule() -> None:
    first, second = Backoff(1.0, 60.0), Backoff(1.0, 60.0)
    a = [first.next_delay() for _ in range(8)]
    b = [second.next_delay() for _ in range(8)]
    assert a != b


def test_backoff_grows_and_resets() -> None:
    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(0))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.attempt == 5
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 1.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_settings_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=base, cap_s=cap)
