"""System metrics: thermal zones as a Pi or a Jetson exposes them, and host facts."""

from __future__ import annotations

from pathlib import Path

from edge_agent.telemetry.system import SystemSampler, host_facts, hottest, read_thermal_zones


def _zone(root: Path, index: int, kind: str | None, temp: str) -> None:
    zone = root / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    (zone / "temp").write_text(temp + "\n")
    if kind is not None:
        (zone / "type").write_text(kind + "\n")


def test_reads_millidegrees_per_zone_and_skips_broken_ones(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "cpu-thermal", "48312")  # a Raspberry Pi
    _zone(tmp_path, 1, "GPU-therm", "51500")  # a Jetson
    _zone(tmp_path, 2, "absent", "-273000")  # a sensor that is not there
    _zone(tmp_path, 3, None, "garbage")
    _zone(tmp_path, 4, None, "39000")
    readings = read_thermal_zones(tmp_path)
    assert readings == {"cpu-thermal": 48.312, "GPU-therm": 51.5, "thermal_zone4": 39.0}
    assert hottest(readings) == 51.5


def test_no_zones_means_no_reading(tmp_path: Path) -> None:
    assert read_thermal_zones(tmp_path) == {}
    assert hottest({}) is None


def test_sampler_reports_cpu_memory_and_the_hottest_zone(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "cpu-thermal", "61000")
    metrics = SystemSampler(thermal_root=tmp_path).sample()
    assert metrics.temperature_c == 61.0
    assert metrics.cpu_percent is not None and 0.0 <= metrics.cpu_percent <= 100.0 * 64
    assert metrics.memory_rss_mb is not None and metrics.memory_rss_mb > 1
    assert metrics.memory_percent is not None and 0 < metrics.memory_percent <= 100


def test_host_facts_describe_this_machine() -> None:
    facts = host_facts()
    assert facts.hostname and facts.arch and facts.python.count(".") == 2
    assert facts.cpu_count is not None and facts.cpu_count >= 1
    assert facts.memory_mb is not None and facts.memory_mb > 0
