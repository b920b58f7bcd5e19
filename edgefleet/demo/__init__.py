"""`edgefleet demo`: the whole toolkit end to end on one machine, narrated step by step.

One module per concern:

- ``settings`` (what the demo does, as data: devices, rollouts, timings; ``--fast``), ``layout``
  (the output folder);
- ``releases`` (reference models, data, key, conversions) and ``release_cache`` (reusing an
  identical conversion on a re-run), ``damage`` and ``broken`` (the broken v3);
- ``processes`` (children in their own process groups, always stopped), ``server_main`` and
  ``fleet_server`` (the fleet server process), ``agents`` (the simulated devices);
- ``api`` (the REST calls), ``traffic`` (tritonclient load), ``rollouts`` (following a rollout and
  its gates), ``drift_view`` (drift per site and bundle), ``summary`` (the closing tables and
  ``summary.json``), ``claims`` (what the demo promises, checked);
- ``narration`` and ``interrupts`` (the terminal and the signals);
- ``state`` (what the steps share), ``steps_setup`` (1-4), ``steps_rollouts`` (5-8),
  ``steps_drift`` (9), and ``flow`` (the steps in order, the summary, the shutdown).

Importing this package is light (names load on first use); torch, the converter and tritonclient
load inside the steps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefleet.demo.claims import check_claims
    from edgefleet.demo.flow import DemoResult, run_demo
    from edgefleet.demo.layout import DemoLayout
    from edgefleet.demo.settings import DemoSettings, DeviceSpec, RolloutPlan, plan_devices
    from edgefleet.demo.summary import DemoSummary, build_summary, render_summary

_EXPORTS = {
    "DemoResult": "edgefleet.demo.flow",
    "check_claims": "edgefleet.demo.claims",
    "run_demo": "edgefleet.demo.flow",
    "DemoLayout": "edgefleet.demo.layout",
    "DemoSettings": "edgefleet.demo.settings",
    "DeviceSpec": "edgefleet.demo.settings",
    "RolloutPlan": "edgefleet.demo.settings",
    "plan_devices": "edgefleet.demo.settings",
    "DemoSummary": "edgefleet.demo.summary",
    "build_summary": "edgefleet.demo.summary",
    "render_summary": "edgefleet.demo.summary",
}

__all__ = [
    "DemoLayout",
    "DemoResult",
    "DemoSettings",
    "DemoSummary",
    "DeviceSpec",
    "RolloutPlan",
    "build_summary",
    "check_claims",
    "plan_devices",
    "render_summary",
    "run_demo",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgefleet.demo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
