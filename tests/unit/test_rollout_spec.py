"""Rollout options as operators write them: targets, canaries, waves, durations, gate overrides."""

from __future__ import annotations

import pytest

from fleet.rollouts.gates import GateAction
from fleet.rollouts.spec import (
    Canary,
    SpecError,
    TargetSelector,
    gate_config,
    parse_canary,
    parse_duration,
    parse_gate_overrides,
    parse_target,
    parse_waves,
)


def test_a_target_combines_profile_fleet_tags_and_devices() -> None:
    selector = parse_target(
        "profile=raspberry-pi-5, tag=site:a, fleet=lab, tag=camera, zone=north, device=cam-1"
    )
    assert selector == TargetSelector(
        profile="raspberry-pi-5",
        fleet="lab",
        tags=(("camera", None), ("site", "a"), ("zone", "north")),
        devices=("cam-1",),
    )
    assert parse_target(str(selector)) == selector  # the normal form parses back to itself


@pytest.mark.parametrize("text", ["all", "*", "all,"])
def test_all_selects_everything(text: str) -> None:
    selector = parse_target(text)
    assert str(selector) == "all"
    assert selector.matches(profile=None, fleet="x", tags={}, device_id="d")


def test_a_target_matches_as_written() -> None:
    selector = parse_target("profile=p1,tag=site:a,tag=camera")
    record = {"profile": "p1", "fleet": "f", "device_id": "d"}
    assert selector.matches(tags={"site": "a", "camera": "yes"}, **record)
    assert not selector.matches(tags={"site": "b", "camera": "yes"}, **record)
    assert not selector.matches(tags={"site": "a"}, **record)  # the camera tag must be set
    assert not selector.matches(tags={"site": "a", "camera": ""}, profile="p2", fleet="f", device_id="d")
    assert parse_target("device=a,device=b").matches(profile=None, fleet="f", tags={}, device_id="b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("profile", "is not KEY=VALUE"),
        ("profile=Raspberry Pi", "profile 'Raspberry Pi' in the target must match"),
        ("profile=a,profile=b", "names two profiles"),
        ("device=no/slash", "is not a device id"),
        ("tag=:x", "tag key '' in the target must match"),
    ],
)
def test_a_bad_target_says_how_to_write_one(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_target(text)


@pytest.mark.parametrize(
    ("text", "total", "size"),
    [
        ("1", 10, 1),
        ("3", 2, 2),
        ("10%", 10, 1),
        ("10%", 25, 3),
        ("1%", 5, 1),
        ("100%", 7, 7),
        ("33.3%", 3, 1),
    ],
)
def test_the_canary_is_a_count_or_a_share_and_never_empty(text: str, total: int, size: int) -> None:
    assert parse_canary(text).size(total) == size
    assert parse_canary(text).size(0) == 0


@pytest.mark.parametrize("text", ["0", "-1", "0%", "101%", "a", "1.5", "nan%"])
def test_a_bad_canary_is_refused(text: str) -> None:
    with pytest.raises(SpecError):
        parse_canary(text)


def test_canary_round_trips_through_text() -> None:
    assert str(parse_canary("10%")) == "10%"
    assert str(Canary(devices=2)) == "2"


def test_waves_are_increasing_percentages_ending_at_all() -> None:
    assert parse_waves("10%,50%,100%") == (10.0, 50.0, 100.0)
    assert parse_waves(["25", "50%"]) == (25.0, 50.0, 100.0)  # 100% is appended
    assert parse_waves("") == (100.0,)
    with pytest.raises(SpecError, match="waves must increase"):
        parse_waves("50%,10%")
    with pytest.raises(SpecError, match="not a percentage"):
        parse_waves("150%")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("500ms", 0.5), ("45", 45.0), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", "1 week", "s"])
def test_a_bad_duration_names_its_option(text: str) -> None:
    with pytest.raises(SpecError, match="--bake"):
        parse_duration(text, option="--bake")


def test_gate_overrides_land_on_the_defaults() -> None:
    overrides = parse_gate_overrides(
        ["max_failure_rate=0.1,min_reporting_devices=2", "max_p95_latency_ratio=2"]
    )
    config = gate_config(overrides, "pause")
    assert (config.max_failure_rate, config.min_reporting_devices, config.max_p95_latency_ratio) == (
        0.1,
        2,
        2.0,
    )
    assert config.on_failure is GateAction.PAUSE
    assert config.max_output_drift_delta == gate_config({}, "abort").max_output_drift_delta


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["latency=2"], "unknown or not NAME=VALUE"),
        (["max_failure_rate"], "unknown or not NAME=VALUE"),
        (["on_failure=1"], "unknown"),
        (["max_failure_rate=x"], "is not a number"),
    ],
)
def test_bad_gate_overrides_list_the_names(items: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_gate_overrides(items)
    assert "max_p95_latency_ratio" in str(info.value) or "number" in str(info.value)


def test_gate_values_out_of_range_are_refused() -> None:
    with pytest.raises(SpecError, match="max_failure_rate"):
        gate_config({"max_failure_rate": 2.0}, "abort")
    with pytest.raises(SpecError, match="pause or abort"):
        gate_config({}, "retry")
