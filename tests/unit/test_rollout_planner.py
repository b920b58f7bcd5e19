"""Devices to waves: sizes, a deterministic order, the online devices first."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from fleet.rollouts.planner import Candidate, order_devices, plan_waves, wave_label, wave_sizes
from fleet.rollouts.spec import Canary


def test_a_canary_then_cumulative_waves() -> None:
    assert wave_sizes(100, Canary(devices=1), (10.0, 50.0, 100.0)) == [1, 10, 50, 100]
    assert wave_sizes(7, Canary(devices=1), (50.0, 100.0)) == [1, 4, 7]
    assert wave_sizes(10, Canary(percent=10), (10.0, 100.0)) == [1, 10]  # a wave adding nobody is dropped
    assert wave_sizes(3, Canary(devices=5), (50.0, 100.0)) == [3]  # the canary is everyone
    assert wave_sizes(0, Canary(devices=1), (100.0,)) == []


def test_the_order_is_deterministic_and_depends_on_the_rollout() -> None:
    candidates = [Candidate(f"d{i}", online=True) for i in range(50)]
    first = [c.device_id for c in order_devices(candidates, "r-1")]
    assert first == [c.device_id for c in order_devices(list(reversed(candidates)), "r-1")]
    assert first != [c.device_id for c in order_devices(candidates, "r-2")]  # canaries rotate


def test_online_devices_come_first() -> None:
    candidates = [Candidate("a", online=False), Candidate("b", online=True), Candidate("c", online=False)]
    sizes, placements = plan_waves(candidates, Canary(devices=1), (100.0,), "r-x")
    assert sizes == [1, 3]
    assert placements[0].device_id == "b" and placements[0].wave == 0
    assert {p.device_id for p in placements if p.wave == 1} == {"a", "c"}


def test_wave_labels() -> None:
    assert [wave_label(i) for i in range(3)] == ["canary", "wave 1", "wave 2"]


@given(
    total=st.integers(1, 300),
    canary=st.one_of(
        st.builds(Canary, devices=st.integers(1, 400)),
        st.builds(Canary, percent=st.floats(0.1, 100)),
    ),
    waves=st.lists(st.floats(0.5, 100), min_size=0, max_size=5, unique=True).map(
        lambda ws: (*sorted(ws), 100.0) if not ws or max(ws) < 100 else tuple(sorted(ws))
    ),
    online=st.lists(st.booleans(), min_size=300, max_size=300),
)
def test_plans_cover_every_device_once_in_growing_waves(
    total: int, canary: Canary, waves: tuple[float, ...], online: list[bool]
) -> None:
    candidates = [Candidate(f"dev-{i}", online[i]) for i in range(total)]
    sizes, placements = plan_waves(candidates, canary, waves, "seed")
    assert sizes[0] >= 1 and sizes[-1] == total
    assert all(a < b for a, b in itertools.pairwise(sizes))
    assert sorted(p.device_id for p in placements) == sorted(c.device_id for c in candidates)
    assert [p.position for p in placements] == list(range(total))
    for index, cumulative in enumerate(sizes):
        assert sum(p.wave <= index for p in placements) == cumulative
    # No offline device is placed before an online one.
    flags = [online[int(p.device_id.split("-")[1])] for p in placements]
    assert flags == sorted(flags, reverse=True)
