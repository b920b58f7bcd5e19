"""What the demo does, as data: the devices, the releases, the rollouts and every timing. Pure.

Two modes share one story. The full mode (``make demo``) rolls v2 out in three waves and lets
each bake; ``--fast`` (the test suite runs it) has fewer waves, shorter bakes and watch windows,
and fewer requests. Timings are short on purpose: the devices are processes on one machine,
and the point is to watch the mechanisms work, not to wait for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODEL = "digits-cnn"
FLEET = "demo"
PROFILES = ("raspberry-pi-5", "jetson-orin-nano", "intel-x86-openvino")
SITES = ("a", "b")
SHIFTED_SITE = "b"
V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"

# Short names for device ids: pi5-a, orin-b, ...
_PROFILE_SHORT = {"raspberry-pi-5": "pi5", "jetson-orin-nano": "orin", "intel-x86-openvino": "x86"}


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device: an agent process with a hardware profile, at a site."""

    id: str
    profile: str
    site: str

    @property
    def tags(self) -> dict[str, str]:
        return {"site": self.site}


def plan_devices(profiles: tuple[str, ...] = PROFILES, sites: tuple[str, ...] = SITES) -> list[DeviceSpec]:
    """One device per (profile, site): 3 profiles x 2 sites = 6 devices, ids like ``pi5-a``."""
    return [
        DeviceSpec(f"{_PROFILE_SHORT.get(profile, profile)}-{site}", profile, site)
        for profile in profiles
        for site in sites
    ]


@dataclass(frozen=True)
class RolloutPlan:
    """A rollout as the demo creates it (the fields of ``POST /api/v1/rollouts``)."""

    version: str
    canary: str
    waves: tuple[str, ...]
    bake_s: float
    gates: dict[str, float] = field(default_factory=dict)
    device_timeout_s: float = 90.0


@dataclass(frozen=True)
class DemoSettings:
    fast: bool
    benchmark_iterations: int
    # --- agents --------------------------------------------------------------------------------
    watch_s: float  # the OTA watch window after a switch, before the device commits
    watch_min_requests: int
    watch_max_latency_ratio: float
    metrics_interval_s: float
    drift_window: int  # samples per drift window
    drift_window_s: float
    # --- traffic -------------------------------------------------------------------------------
    request_pause_s: float  # between two requests to one device
    traffic_show_s: float  # how long step 6 watches the traffic before it moves on
    brightness: float  # the input shift on the shifted site
    # --- rollouts ------------------------------------------------------------------------------
    v1: RolloutPlan
    v2: RolloutPlan
    v3: RolloutPlan
    rollout_timeout_s: float
    # --- drift on the server -------------------------------------------------------------------
    drift_interval_s: float
    drift_lookback_s: float
    drift_min_samples: int
    drift_timeout_s: float

    @classmethod
    def for_mode(cls, *, fast: bool) -> DemoSettings:
        # Three limits are widened for a fleet simulated on one machine; the narration shows
        # them with every rollout. Failures and error rates keep their defaults.
        # - p95 latency: the devices share the host's cores, so a sub-millisecond p95 jumps by a
        #   scheduler time slice whenever a neighbour loads a model, and a canary may run another
        #   runtime than its control devices. The server's gate allows 5x (default 1.5x), the
        #   device's own watch window 10x (default 2x).
        # - output drift delta 0.3 (default 0.1): a wave is judged from a few hundred samples,
        #   where the Jensen-Shannon distance between two draws of the same data is already
        #   0.1 to 0.15 (docs/drift.md); a real fleet judges thousands.
        gates = {
            "max_p95_latency_ratio": 5.0,
            "max_output_drift_delta": 0.3,
            "min_requests": 10.0 if fast else 20.0,
        }
        return cls(
            fast=fast,
            benchmark_iterations=20 if fast else 100,
            watch_s=3.0 if fast else 5.0,
            watch_min_requests=10 if fast else 20,
            watch_max_latency_ratio=10.0,
            metrics_interval_s=1.0,
            drift_window=50,
            drift_window_s=2.0,
            request_pause_s=0.04 if fast else 0.025,
            traffic_show_s=2.0 if fast else 4.0,
            brightness=1.5,
            # v1 goes to devices that run nothing yet: a canary, then everyone.
            v1=RolloutPlan(V1, canary="1", waves=("100%",), bake_s=1.0, gates=gates),
            v2=RolloutPlan(
                V2,
                canary="1",
                waves=("100%",) if fast else ("50%", "100%"),
                bake_s=2.0 if fast else 5.0,
                gates=gates,
            ),
            v3=RolloutPlan(
                V3,
                canary="1",
                waves=("100%",) if fast else ("50%", "100%"),
                bake_s=2.0 if fast else 5.0,
                gates=gates,
            ),
            rollout_timeout_s=120.0,
            drift_interval_s=2.0,
            drift_lookback_s=20.0 if fast else 30.0,
            drift_min_samples=200 if fast else 300,
            drift_timeout_s=60.0 if fast else 90.0,
        )
