"""What the demo's steps share: one ``DemoRun``, filled in as the steps go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from edgefleet.demo.agents import RunningAgent
from edgefleet.demo.api import DemoApi
from edgefleet.demo.fleet_server import RunningServer
from edgefleet.demo.layout import DemoLayout
from edgefleet.demo.narration import Narrator
from edgefleet.demo.processes import ProcessBook
from edgefleet.demo.releases import ReferenceModels, Release
from edgefleet.demo.settings import DemoSettings, DeviceSpec, plan_devices
from edgefleet.demo.traffic import TrafficGenerator

if TYPE_CHECKING:
    from fleet.rollouts.schemas import RolloutDetail


@dataclass
class DemoRun:
    """Everything the steps share; filled in as the demo goes."""

    settings: DemoSettings
    layout: DemoLayout
    console: Console
    narrator: Narrator
    book: ProcessBook
    specs: list[DeviceSpec] = field(default_factory=plan_devices)
    models: ReferenceModels | None = None
    private_key: Path | None = None
    public_key: Path | None = None
    releases: dict[str, Release] = field(default_factory=dict)
    server: RunningServer | None = None
    api: DemoApi | None = None
    agents: list[RunningAgent] = field(default_factory=list)
    traffic: TrafficGenerator | None = None
    rollouts: dict[str, RolloutDetail] = field(default_factory=dict)  # version -> final detail

    def need_api(self) -> DemoApi:
        assert self.api is not None, "the server step runs first"
        return self.api
