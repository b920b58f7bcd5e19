"""Drift analysis as the server runs it: reports on request, evaluations that raise alerts.

``DriftService.reports`` answers ``GET /api/v1/drift`` (and ``edgefleet drift show``) and writes
nothing. ``DriftService.evaluate`` is what the monitor runs periodically (and ``POST
/api/v1/drift/evaluate`` on demand): for every model version with windows in the lookback, the
watched cohorts against the bundle's reference; it opens and resolves alerts (the database and the
audit log, in one transaction), counts them and posts them to the webhook, and replaces the
``edgefleet_drift_score`` gauges.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from fleet.config import DriftSettings
from fleet.db.session import Database
from fleet.db.types import utcnow
from fleet.drift.alerts import AlertChanges, alert_event, sync_alerts
from fleet.drift.analysis import DriftReport, compare
from fleet.drift.cohort import ALL, Baseline, Cohort, parse_cohort
from fleet.drift.query import MergedWindows, active_profiles, active_versions, load_windows
from fleet.drift.references import ReferenceCatalog
from fleet.drift.webhook import WebhookNotifier
from fleet.metrics import DriftMetrics
from models.stats import DriftWindow

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What one evaluation did."""

    at: datetime
    reports: list[DriftReport] = field(default_factory=list)
    changes: AlertChanges = field(default_factory=AlertChanges)


class DriftService:
    def __init__(
        self,
        database: Database,
        references: ReferenceCatalog,
        settings: DriftSettings,
        metrics: DriftMetrics,
        *,
        webhook: WebhookNotifier | None = None,
    ) -> None:
        self.database = database
        self.references = references
        self.settings = settings
        self.metrics = metrics
        self.webhook = webhook
        self.watched = [parse_cohort(text) for text in settings.cohorts]
        self._evaluating = threading.Lock()

    # --- reports (read-only) ------------------------------------------------------------------------

    def reports(
        self,
        session: Session,
        *,
        since: datetime,
        until: datetime,
        model: str | None = None,
        version: str | None = None,
        cohort: Cohort = ALL,
        baseline: Baseline | None = None,
    ) -> list[DriftReport]:
        baseline = baseline or Baseline()
        reports: list[DriftReport] = []
        for name, ver in active_versions(session, since, until, model=model, version=version):
            reports += self._version_reports(session, name, ver, cohort, baseline, since, until)
        return reports

    def _version_reports(
        self,
        session: Session,
        model: str,
        version: str,
        cohort: Cohort,
        baseline: Baseline,
        since: datetime,
        until: datetime,
        *,
        skip_unjudgeable: bool = False,
    ) -> list[DriftReport]:
        references = self.references.for_version(session, model, version)
        if not references and skip_unjudgeable:
            return []  # nothing to judge against: do not read the windows at all
        current = load_windows(session, model, version, cohort, since, until)
        if not current.windows:
            return []
        other = (
            load_windows(session, model, version, baseline.cohort, since, until)
            if baseline.cohort is not None
            else None
        )
        thresholds = self.settings.thresholds
        reports = []
        for fingerprint in current.references:
            window = current.windows[fingerprint]
            common: dict[str, Any] = {
                "model": model,
                "version": version,
                "cohort": str(cohort),
                "against": str(baseline),
                "reference": fingerprint,
                "since": since,
                "until": until,
                "devices": len(current.devices[fingerprint]),
                "windows": current.counts[fingerprint],
                "samples": window.samples,
                "thresholds": thresholds.describe(),
            }
            bundle = references.get(fingerprint)
            if bundle is None:
                reports.append(
                    DriftReport(
                        **common,
                        baseline_devices=None,
                        baseline_windows=None,
                        baseline_samples=0,
                        note=(
                            f"no bundle of {model} {version} in the registry carries the bins these windows "
                            f"were counted into (reference {fingerprint}): push the bundle the devices run "
                            "with `edgefleet models push`"
                        ),
                    )
                )
                continue
            reference = bundle.stats
            extra: dict[str, Any]
            if other is None:
                features = compare(window, reference, thresholds)
                extra = {
                    "baseline_devices": None,
                    "baseline_windows": None,
                    "baseline_samples": reference.samples,
                }
                note = None
            else:
                base_window = other.windows.get(fingerprint) or DriftWindow(reference=fingerprint)
                features = compare(window, reference, thresholds, baseline=base_window)
                extra = _baseline_sizes(other, fingerprint, base_window)
                note = (
                    None
                    if fingerprint in other.windows
                    else f"cohort {baseline.cohort} sent no windows of {model} {version} in this range"
                )
            reports.append(DriftReport(**common, **extra, features=tuple(features), note=note))
        return reports

    # --- evaluation (writes alerts) -----------------------------------------------------------------

    def evaluate(self, now: datetime | None = None) -> Evaluation:
        """Evaluate the watched cohorts of every active model version; open and resolve alerts."""
        with self._evaluating:
            now = now or utcnow()
            since = now - timedelta(seconds=self.settings.lookback_s)
            result = Evaluation(at=now)
            with self.database.session() as session:
                for model, version in active_versions(session, since, now):
                    cohorts = [ALL]
                    if self.settings.per_profile:
                        cohorts += [
                            Cohort("profile", None, p)
                            for p in active_profiles(session, model, version, since, now)
                        ]
                    cohorts += self.watched
                    for cohort in cohorts:
                        for report in self._version_reports(
                            session, model, version, cohort, Baseline(), since, now, skip_unjudgeable=True
                        ):
                            result.reports.append(report)
                            result.changes.extend(sync_alerts(session, report, now))
                events = [alert_event(a, "drift.alert.opened") for a in result.changes.opened]
                events += [alert_event(a, "drift.alert.resolved") for a in result.changes.resolved]
            # Committed: now tell the world.
            self.metrics.evaluations.inc()
            self.metrics.alerts.labels("opened").inc(len(result.changes.opened))
            self.metrics.alerts.labels("resolved").inc(len(result.changes.resolved))
            self._publish_scores(result.reports)
            for alert in result.changes.opened:
                log.warning("drift alert %s: %s", alert.id, alert.message)
            if self.webhook is not None:
                for event in events:
                    self.webhook.notify(event)
            return result

    def _publish_scores(self, reports: list[DriftReport]) -> None:
        scores = []
        levels = []
        for report in reports:
            for feature in report.features:
                labels = (report.model, report.version, report.cohort, feature.feature)
                levels.append((labels, float(feature.level.rank)))
                for metric, value in feature.scores().items():
                    scores.append(((*labels, metric), value))
        self.metrics.scores.replace(scores, levels)


def _baseline_sizes(other: MergedWindows, fingerprint: str, window: DriftWindow) -> dict[str, Any]:
    return {
        "baseline_devices": len(other.devices.get(fingerprint, ())),
        "baseline_windows": other.counts.get(fingerprint, 0),
        "baseline_samples": window.samples,
    }
