"""Drift windows out of the database: per model version, cohort and time range, added up per reference.

A window belongs to the range when its ``window_end`` falls in ``[since, until]``. Cohorts select
devices by their registry record as it is now (``fleet.drift.cohort``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session

from fleet.db.models import Device, DeviceTag, DriftWindow
from fleet.drift.aggregate import add_windows
from fleet.drift.cohort import Cohort
from models.stats import DriftWindow as StatsWindow

log = logging.getLogger(__name__)

_YIELD_PER = 2000


@dataclass
class MergedWindows:
    """One cohort's windows of one model version, added up per reference fingerprint."""

    windows: dict[str, StatsWindow] = field(default_factory=dict)
    devices: dict[str, set[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    @property
    def references(self) -> list[str]:
        return sorted(self.windows, key=lambda ref: -self.counts[ref])


def cohort_condition(cohort: Cohort) -> ColumnElement[bool] | None:
    if cohort.kind == "tag":
        return exists().where(
            DeviceTag.device_id == DriftWindow.device_id,
            DeviceTag.key == cohort.key,
            DeviceTag.value == cohort.value,
        )
    if cohort.kind == "profile":
        return DriftWindow.device_id.in_(select(Device.id).where(Device.profile == cohort.value))
    if cohort.kind == "device":
        return DriftWindow.device_id == cohort.value
    return None


def load_windows(
    session: Session, model: str, version: str, cohort: Cohort, since: datetime, until: datetime
) -> MergedWindows:
    query = select(DriftWindow.device_id, DriftWindow.payload).where(
        DriftWindow.model_name == model,
        DriftWindow.model_version == version,
        DriftWindow.window_end >= since,
        DriftWindow.window_end <= until,
    )
    condition = cohort_condition(cohort)
    if condition is not None:
        query = query.where(condition)
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    devices: dict[str, set[str]] = defaultdict(set)
    merged = MergedWindows()
    for device_id, payload in session.execute(query.execution_options(yield_per=_YIELD_PER)):
        window = (payload or {}).get("window")
        if not isinstance(window, dict) or "reference" not in window:
            merged.skipped += 1
            continue
        grouped[str(window["reference"])].append(window)
        devices[str(window["reference"])].add(device_id)
    for reference, windows in grouped.items():
        try:
            merged.windows[reference] = add_windows(windows)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "drift: %d windows of %s %s against %s cannot be added: %s",
                len(windows),
                model,
                version,
                reference,
                exc,
            )
            merged.skipped += len(windows)
            continue
        merged.devices[reference] = devices[reference]
        merged.counts[reference] = len(windows)
    return merged


def active_versions(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    model: str | None = None,
    version: str | None = None,
) -> list[tuple[str, str]]:
    """Model versions with at least one window in the range, by name then version."""
    query = (
        select(DriftWindow.model_name, DriftWindow.model_version)
        .where(DriftWindow.window_end >= since, DriftWindow.window_end <= until)
        .distinct()
    )
    if model is not None:
        query = query.where(DriftWindow.model_name == model)
    if version is not None:
        query = query.where(DriftWindow.model_version == version)
    rows: Sequence[tuple[str, str]] = session.execute(query).tuples().all()
    return sorted({(name, ver) for name, ver in rows})


def active_profiles(
    session: Session, model: str, version: str, since: datetime, until: datetime
) -> list[str]:
    """Hardware profiles of the devices that sent windows of this model version in the range."""
    query = (
        select(Device.profile)
        .distinct()
        .join(DriftWindow, DriftWindow.device_id == Device.id)
        .where(
            DriftWindow.model_name == model,
            DriftWindow.model_version == version,
            DriftWindow.window_end >= since,
            DriftWindow.window_end <= until,
            Device.profile.is_not(None),
        )
    )
    return sorted(str(p) for p in session.scalars(query).all())
