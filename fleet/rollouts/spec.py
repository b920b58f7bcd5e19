"""What an operator asks for when creating a rollout, parsed and checked. Pure and light.

The CLI and the server parse the same text with the same functions, so ``edgefleet rollout
create`` and ``POST /api/v1/rollouts`` accept exactly the same things:

- a target: ``profile=raspberry-pi-5,tag=site:a`` (see ``parse_target``);
- a strategy: a canary of ``N`` devices or ``N%``, then cumulative waves such as ``10%,50%,100%``;
- durations: ``30s``, ``2m``, ``1h``, ``500ms`` or plain seconds;
- gate overrides: ``max_failure_rate=0,min_reporting_devices=2`` onto ``GateConfig``'s defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fleet.devices.naming import FLEET_PATTERN, PROFILE_PATTERN, TAG_KEY_PATTERN, is_device_id
from fleet.rollouts.gates import GateAction, GateConfig


class SpecError(ValueError):
    """A rollout option that does not parse; the message says how to write it."""


# --- targets -------------------------------------------------------------------------------------

TARGET_HINT = (
    "write a target as comma-separated terms: all, profile=P, fleet=F, device=ID (repeatable), "
    "tag=KEY:VALUE or tag=KEY (the tag is set, any value), or KEY=VALUE for a tag"
)


@dataclass(frozen=True)
class TargetSelector:
    """Which devices a rollout targets: every given condition must hold (``devices``: any of them)."""

    profile: str | None = None
    fleet: str | None = None
    tags: tuple[tuple[str, str | None], ...] = ()  # (key, value); value None: any value
    devices: tuple[str, ...] = ()

    def __str__(self) -> str:
        terms: list[str] = []
        if self.profile is not None:
            terms.append(f"profile={self.profile}")
        if self.fleet is not None:
            terms.append(f"fleet={self.fleet}")
        terms += [f"tag={key}" if value is None else f"tag={key}:{value}" for key, value in self.tags]
        terms += [f"device={device}" for device in self.devices]
        return ",".join(terms) or "all"

    def matches(self, *, profile: str | None, fleet: str, tags: Mapping[str, str], device_id: str) -> bool:
        """The selector as a predicate over one device's registry record (pure; the server uses SQL
        for the indexed parts and this for the rest)."""
        if self.profile is not None and profile != self.profile:
            return False
        if self.fleet is not None and fleet != self.fleet:
            return False
        for key, value in self.tags:
            if key not in tags or (value is not None and tags[key] != value):
                return False
        return not self.devices or device_id in self.devices


def parse_target(text: str) -> TargetSelector:
    terms = [term.strip() for term in text.split(",") if term.strip()]
    if not terms:
        raise SpecError(f"the target {text!r} is empty; {TARGET_HINT}")
    profile: str | None = None
    fleet: str | None = None
    tags: dict[str, str | None] = {}
    devices: list[str] = []
    for term in terms:
        if term in ("all", "*"):
            continue
        key, sep, value = term.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise SpecError(f"target term {term!r} is not KEY=VALUE; {TARGET_HINT}")
        if key == "profile":
            _check(value, PROFILE_PATTERN, f"profile {value!r} in the target")
            profile = _once(profile, value, "profile")
        elif key == "fleet":
            _check(value, FLEET_PATTERN, f"fleet {value!r} in the target")
            fleet = _once(fleet, value, "fleet")
        elif key == "device":
            if not is_device_id(value):
                raise SpecError(f"device {value!r} in the target is not a device id")
            devices.append(value)
        elif key == "tag":
            tag_key, colon, tag_value = value.partition(":")
            _check(tag_key, TAG_KEY_PATTERN, f"tag key {tag_key!r} in the target")
            tags[tag_key] = tag_value if colon else None
        else:  # KEY=VALUE: a tag
            _check(key, TAG_KEY_PATTERN, f"tag key {key!r} in the target")
            tags[key] = value
    return TargetSelector(
        profile=profile, fleet=fleet, tags=tuple(sorted(tags.items())), devices=tuple(dict.fromkeys(devices))
    )


def _check(value: str, pattern: str, what: str) -> None:
    if re.fullmatch(pattern, value) is None:
        raise SpecError(f"{what} must match {pattern}")


def _once(current: str | None, value: str, key: str) -> str:
    if current is not None and current != value:
        raise SpecError(f"the target names two {key}s ({current} and {value}); a device has one")
    return value


# --- strategy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canary:
    """``devices`` devices, or ``percent`` % of the targeted devices (at least one)."""

    devices: int | None = None
    percent: float | None = None

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.devices)

    def size(self, total: int) -> int:
        if total <= 0:
            return 0
        if self.percent is not None:
            return min(total, max(1, math.ceil(total * self.percent / 100 - 1e-9)))
        return min(total, self.devices or 1)


def parse_canary(text: str | int) -> Canary:
    value = str(text).strip()
    hint = "write the canary as a number of devices (--canary 1) or a percentage (--canary 10%)"
    if value.endswith("%"):
        percent = _number(value[:-1], hint)
        if not 0 < percent <= 100:
            raise SpecError(f"canary {value!r}: a percentage is above 0 and at most 100; {hint}")
        return Canary(percent=percent)
    if not value.isdigit() or int(value) < 1:
        raise SpecError(f"canary {value!r} is not a positive number of devices or a percentage; {hint}")
    return Canary(devices=int(value))


DEFAULT_WAVES: tuple[float, ...] = (10.0, 50.0, 100.0)


def parse_waves(values: str | Iterable[str | float]) -> tuple[float, ...]:
    """Cumulative percentages of the targeted devices, increasing; 100 is appended if missing."""
    items = values.split(",") if isinstance(values, str) else list(values)
    hint = "write waves as increasing percentages, e.g. --waves 10%,50%,100%"
    waves: list[float] = []
    for item in items:
        text = str(item).strip().removesuffix("%").strip()
        if not text:
            continue
        percent = _number(text, hint)
        if not 0 < percent <= 100:
            raise SpecError(f"wave {item!r} is not a percentage above 0 and at most 100; {hint}")
        if waves and percent <= waves[-1]:
            raise SpecError(f"waves must increase: {percent:g}% comes after {waves[-1]:g}%; {hint}")
        waves.append(percent)
    if not waves or waves[-1] != 100:
        waves.append(100.0)
    return tuple(waves)


def _number(text: str, hint: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{text!r} is not a number; {hint}") from None
    if not math.isfinite(value):
        raise SpecError(f"{text!r} is not a finite number; {hint}")
    return value


# --- durations -----------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float, *, option: str = "duration") -> float:
    """Seconds from ``500ms``, ``30s``, ``2m``, ``1h``, ``1d`` or a plain number of seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if match is None:
            raise SpecError(f"{option} {text!r} is not a duration; write it like 30s, 2m, 1h or 500ms")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(f"{option} must be a non-negative duration, not {text!r}")
    return seconds


# --- gates ---------------------------------------------------------------------------------------

GATE_NAMES: tuple[str, ...] = tuple(name for name in GateConfig.model_fields if name != "on_failure")


def parse_gate_overrides(items: Iterable[str]) -> dict[str, float]:
    """``NAME=VALUE`` terms (comma-separated or repeated) for the gates' thresholds."""
    overrides: dict[str, float] = {}
    hint = f"write gates as NAME=VALUE with NAME one of {', '.join(GATE_NAMES)}"
    for item in items:
        for term in (t.strip() for t in item.split(",")):
            if not term:
                continue
            name, sep, value = term.partition("=")
            name = name.strip()
            if not sep or name not in GATE_NAMES:
                raise SpecError(f"gate {term!r} is unknown or not NAME=VALUE; {hint}")
            overrides[name] = _number(value.strip(), hint)
    return overrides


def gate_config(overrides: Mapping[str, Any] | None, on_failure: str | GateAction) -> GateConfig:
    """``GateConfig``'s defaults with ``overrides`` and the action on a failed gate."""
    try:
        action = GateAction(on_failure)
    except ValueError:
        raise SpecError(f"on failure {on_failure!r} must be pause or abort") from None
    try:
        return GateConfig.model_validate({**dict(overrides or {}), "on_failure": action})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()[:3]
        )
        raise SpecError(f"gate thresholds refused: {problems}") from None
