"""Showing drift the way the server judges it: per site, per bundle, the brightness feature first.

The server compares each cohort's drift windows with the reference statistics frozen in the
bundle the devices run; a cohort whose devices run bundles of several profiles gets one report
per bundle (each has its own bins). ``reference_profiles`` names those bundles by profile, from
the release's own files; ``drift_table`` (pure) lays the reports out side by side.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.table import Table

from edgefleet.demo.releases import Release

if TYPE_CHECKING:
    from fleet.api.schemas import DriftFeature, DriftReportInfo

BRIGHTNESS_FEATURE = "input/channel_mean[0]"


def reference_profiles(release: Release) -> dict[str, str]:
    """The fingerprint of each bundle's frozen drift bins -> the bundle's profile."""
    from models.bundle import REFERENCE_STATS_NAME
    from models.stats import ReferenceStats

    found: dict[str, str] = {}
    for profile, path in release.bundles.items():
        with tarfile.open(path) as bundle:
            member = bundle.extractfile(REFERENCE_STATS_NAME)
            if member is None:
                continue
            stats = ReferenceStats.from_dict(json.loads(member.read()))
        found[stats.fingerprint()] = profile
    return found


def drift_table(
    reports: Mapping[str, Sequence[DriftReportInfo]], profiles: Mapping[str, str], *, title: str
) -> Table:
    """One row per (cohort, bundle): the brightness feature's mean against the reference's, its
    PSI, and the worst level of any feature. Pure."""
    table = Table(title=title, title_justify="left")
    for column in ("cohort", "bundle", "samples", "mean brightness", "reference", "PSI", "level"):
        table.add_column(column)
    for cohort, cohort_reports in reports.items():
        for report in sorted(cohort_reports, key=lambda r: profiles.get(r.reference, r.reference)):
            feature = _feature(report.features, BRIGHTNESS_FEATURE)
            table.add_row(
                cohort,
                profiles.get(report.reference, report.reference[:12]),
                str(report.samples),
                _number(None if feature is None else feature.mean),
                _number(None if feature is None else feature.baseline_mean),
                _number(None if feature is None else feature.psi),
                _level(report.level),
            )
    return table


def _feature(features: Sequence[DriftFeature], name: str) -> DriftFeature | None:
    return next((f for f in features if f.feature == name), None)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _level(level: str) -> str:
    return {"alert": "[bold red]alert[/]", "warn": "[yellow]warn[/]", "ok": "[green]ok[/]"}.get(level, level)
