"""Host facts and system metrics: CPU, memory and temperature where the host exposes them.

psutil gives CPU and memory everywhere. Temperature comes from the Linux thermal zones
(``/sys/class/thermal/thermal_zone*/temp``, millidegrees Celsius), which is what a Raspberry Pi
and a Jetson expose; psutil's ``sensors_temperatures`` is the fallback on desktops. A host that
exposes none reports ``None``, never a made-up figure.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from pathlib import Path
from types import ModuleType

from models.mqtt_contract import HostFacts, SystemMetrics

log = logging.getLogger("edgefleet.agent.telemetry")

THERMAL_ROOT = Path("/sys/class/thermal")
# Readings outside this range are a sensor that is absent or broken (some zones read -273 or 0xFFFF).
_PLAUSIBLE_C = (-40.0, 150.0)


def _psutil() -> ModuleType | None:
    try:
        import psutil
    except ImportError:  # the agent extra installs it; without it, report what we can
        return None
    return psutil


def read_thermal_zones(root: Path = THERMAL_ROOT) -> dict[str, float]:
    """Each readable thermal zone's temperature in °C, keyed by its type (or zone name)."""
    readings: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            raw = (zone / "temp").read_text().strip()
            celsius = int(raw) / 1000.0
        except (OSError, ValueError):
            continue
        if not _PLAUSIBLE_C[0] <= celsius <= _PLAUSIBLE_C[1]:
            continue
        try:
            name = (zone / "type").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        readings[name if name not in readings else f"{name}:{zone.name}"] = celsius
    return readings


def hottest(readings: dict[str, float]) -> float | None:
    """The hottest zone: the one that throttles first is the one worth watching."""
    return round(max(readings.values()), 1) if readings else None


def host_facts() -> HostFacts:
    psutil = _psutil()
    memory_mb = None
    if psutil is not None:
        memory_mb = int(psutil.virtual_memory().total // (1024 * 1024))
    return HostFacts(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}".strip(),
        arch=platform.machine(),
        cpu_count=os.cpu_count(),
        memory_mb=memory_mb,
        python=platform.python_version(),
    )


class SystemSampler:
    """Samples CPU (system-wide, since the previous sample), memory and temperature."""

    def __init__(self, thermal_root: Path = THERMAL_ROOT) -> None:
        self.thermal_root = thermal_root
        self._psutil = _psutil()
        self._process = None
        if self._psutil is not None:
            self._process = self._psutil.Process()
            self._psutil.cpu_percent(interval=None)  # primes the counter: the first call returns 0

    def sample(self) -> SystemMetrics:
        cpu = rss = memory_percent = None
        if self._psutil is not None and self._process is not None:
            cpu = float(self._psutil.cpu_percent(interval=None))
            rss = round(self._process.memory_info().rss / (1024 * 1024), 1)
            memory_percent = float(self._psutil.virtual_memory().percent)
        return SystemMetrics(
            cpu_percent=cpu,
            memory_rss_mb=rss,
            memory_percent=memory_percent,
            temperature_c=self.temperature(),
        )

    def temperature(self) -> float | None:
        zones = hottest(read_thermal_zones(self.thermal_root))
        if zones is not None or self._psutil is None:
            return zones
        sensors = getattr(self._psutil, "sensors_temperatures", None)
        if sensors is None:
            return None
        try:
            found = sensors()
        except (OSError, RuntimeError):
            return None
        values = {
            f"{chip}:{i}": float(entry.current)
            for chip, entries in found.items()
            for i, entry in enumerate(entries)
            if entry.current is not None and _PLAUSIBLE_C[0] <= float(entry.current) <= _PLAUSIBLE_C[1]
        }
        return hottest(values)
